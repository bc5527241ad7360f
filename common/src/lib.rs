//! Shared building blocks that need neither libtorch nor gRPC.
//!
//! - [`mnist`]: the four MNIST idx files: find, decompress, verify (SHA-256 of
//!   the decompressed content) and download them from the public mirrors.
//! - [`config`]: the training configuration that tuning varies, with its
//!   validation rules.
//! - [`plots`]: PNG charts (learning curves, confusion matrix, prediction grid,
//!   optimisation history) drawn with plotters and an embedded font.
//! - [`progress`]: progress bars that only show on a terminal.
//! - [`mlflow_model`]: the versions recorded in the MLflow model directory,
//!   and the names of its descriptor and of its artifact folder.
//! - [`logging`]: the binaries' `tracing` set-up.
//! - [`metrics`]: the names of the per-epoch metrics.
//! - [`flags`]: range checks shared by the binaries' flags.

pub mod config;
pub mod flags;
pub mod logging;
pub mod metrics;
pub mod mlflow_model;
pub mod mnist;
pub mod plots;
pub mod progress;
