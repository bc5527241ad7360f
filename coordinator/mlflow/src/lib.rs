//! MLflow tracking over its REST API, with nothing but HTTP in the path.
//!
//! - [`config`]: where the tracking server is and how to authenticate, by
//!   MLflow's own environment variables (`MLFLOW_TRACKING_URI`, ...).
//! - [`client`]: one async call per REST endpoint we use, errors classified
//!   into "retry later" and "this request is wrong".
//! - [`limits`]: MLflow's key rules and value and batch limits, applied before
//!   anything is sent, so one bad value never sinks a batch.
//! - [`op`]: the operations the rest of the system asks for (start a run, log
//!   metrics, upload an artifact, register a model, ...).
//! - [`outbox`]: those operations stored in SQLite before they are sent, plus
//!   the MLflow ids they produced.
//! - [`deliver`]: the loop that sends the outbox in order, with retries and
//!   backoff, idempotently across restarts.

pub mod client;
pub mod config;
pub mod deliver;
pub mod error;
pub mod limits;
pub mod op;
pub mod outbox;

pub use client::MlflowClient;
pub use config::{Auth, MlflowArgs, MlflowConfig};
pub use deliver::{Deliverer, DeliveryReport};
pub use error::MlflowError;
pub use op::{MetricPoint, Op, RunStatus};
pub use outbox::{Access, Backlog, Outbox, Retried, RunRecord, UndeliveredRun};
