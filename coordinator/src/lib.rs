//! The tuning coordinator: one process that owns the studies and hands their
//! trials to workers over gRPC.
//!
//! - [`study`]: the domain: studies, the trial state machine, leases with
//!   fencing tokens, workers; an in-memory view written through to SQLite.
//! - [`storage`]: the SQLite database (Optuna's RDB schema v12 plus `mnist_`
//!   tables), with one group-commit writer. All SQL lives there.
//! - [`rpc`]: the tonic services of `mnist.tuning.v1`, thin over the domain.
//! - [`server`]: binding, serving, graceful shutdown; [`server::start`] runs a
//!   coordinator in-process (tests, `mnistctl tune`).
//! - [`reaper`]: the timer that expires lost leases and ends timed-out studies.
//! - [`space`]: the default search space of the CNN and training configs.
//! - [`dataset`], [`artifacts`]: the data set stream and the artifact store.
//! - [`events`]: the durable, numbered study events (`WatchStudy`, and the
//!   place for an outbox such as MLflow delivery to tail).
//! - [`config`], [`clock`], [`error`]: settings, time formats, errors.
//!
//! Embedding:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use mnist_coordinator::{server, ServerConfig, default_search_space};
//! let mut cfg = ServerConfig::new("127.0.0.1:0".parse()?, "/tmp/study.db");
//! cfg.coordinator.data_dir = Some("data/mnist".into());
//! let running = server::start(cfg).await?;
//! let url = running.url(); // give this to workers and clients
//! let _space = default_search_space();
//! running.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod artifacts;
pub mod clock;
pub mod config;
pub mod dataset;
pub mod error;
pub mod events;
pub mod reaper;
pub mod rpc;
pub mod server;
pub mod space;
pub mod storage;
pub mod study;
pub mod tracking;

pub use config::{CoordinatorConfig, ServerConfig};
pub use error::CoordError;
pub use server::{RunningServer, ServeError};
pub use space::{default_search_space, SpaceSource};
pub use study::{Coordinator, NewStudy};
