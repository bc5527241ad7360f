//! The training core: the seed's CNN on libtorch (tch), trained on MNIST.
//!
//! - [`device`]: `--device` parsing and what the machine has (CUDA, GPUs).
//! - [`data`]: the data set as normalised tensors on the device, and the
//!   seeded validation split.
//! - [`model`]: the network.
//! - [`train`]: the training loop with its per-epoch hook, and evaluation.
//! - [`metrics`]: accuracy, per-class precision/recall/F1, confusion matrix.
//! - [`export`]: safetensors, TorchScript and the MLflow model directory.
//! - [`run`]: one run's artifacts (models, plots, `metrics.json`).
//! - [`predict`]: inference from a TorchScript file, test indices or PNGs.
//!
//! Nothing here knows about gRPC: the worker wires this crate to the
//! coordinator through [`train::train`]'s hook.

pub mod data;
pub mod device;
pub mod export;
pub mod metrics;
pub mod model;
pub mod predict;
pub mod run;
pub mod train;

pub use data::{prepare, DataTensors};
pub use device::DeviceSpec;
pub use train::{train, EpochMetrics, HookAction, TrainError, TrainOptions, TrainOutcome};
