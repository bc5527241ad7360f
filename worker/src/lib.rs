//! The training worker: one process per machine that registers its devices
//! with a coordinator and runs one trial per device slot with the training
//! core (`mnist-trainer`), reporting every epoch and uploading the trained
//! model and plots.
//!
//! - [`config`]: the settings and the `--devices` syntax.
//! - [`devices`]: the slots (GPU names and memory, or the CPU).
//! - [`worker`]: the whole worker ([`run`]): register, data set, slots, shutdown.
//! - [`slot`]: one device's acquire-run loop.
//! - [`trial`]: one trial's session: heartbeat, training, the call that ends it.
//! - [`training`]: the training run on a blocking thread (no gRPC).
//! - [`reporter`], [`heartbeat`]: the per-epoch report (the trainer's hook)
//!   and the lease renewal task.
//! - [`control`]: a trial's stop switch (pruned, study stopped, lease lost,
//!   shutdown).
//! - [`objective`]: the study's metric from the trainer's numbers.
//! - [`artifacts`]: uploading a run's files.
//! - [`dataset`]: fetching MNIST from the coordinator when it is missing.
//! - [`client`], [`backoff`]: the gRPC connection and its retry rule.
//!
//! Embedding (what `mnistctl tune` does):
//!
//! ```no_run
//! # async fn demo() -> Result<(), mnist_worker::WorkerError> {
//! let mut cfg = mnist_worker::WorkerConfig::new("http://127.0.0.1:50051");
//! cfg.exit_when_idle = true;
//! let (stop, stop_rx) = tokio::sync::watch::channel(false);
//! let summary = mnist_worker::run(cfg, stop_rx).await?; // stop.send(true) shuts it down
//! println!("{} trials complete", summary.trials.complete);
//! # drop(stop); Ok(()) }
//! ```

pub mod artifacts;
pub mod backoff;
pub mod client;
pub mod config;
pub mod control;
pub mod dataset;
pub mod devices;
pub mod error;
pub mod heartbeat;
pub mod objective;
pub mod reporter;
pub mod slot;
pub mod training;
pub mod trial;
pub mod worker;

pub use config::{DeviceSelection, WorkerConfig};
pub use error::WorkerError;
pub use worker::{run, Summary};
