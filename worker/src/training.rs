//! One trial's training, run on a blocking thread: the data as tensors on
//! the slot's device, the training core's loop with the caller's per-epoch
//! hook, and the run's artifacts on local disk. Nothing here knows about
//! gRPC; the session (`trial`) passes in a hook that talks to the coordinator.

use std::path::PathBuf;
use std::sync::Arc;

use mnist_common::config::TrainConfig;
use mnist_common::mnist::Mnist;
use mnist_trainer::metrics::TestMetrics;
use mnist_trainer::run::{write_artifacts, RunArtifacts};
use mnist_trainer::{EpochMetrics, HookAction, TrainError, TrainOptions};
use tch::Device;

/// What to train.
#[derive(Debug, Clone)]
pub struct Job {
    /// The trial's full configuration.
    pub config: TrainConfig,
    /// The slot's device.
    pub device: Device,
    /// The data set, loaded once per worker.
    pub data: Arc<Mnist>,
    /// Where the artifacts go.
    pub artifact_dir: PathBuf,
}

/// What a finished run produced (the model itself stays on this thread).
#[derive(Debug)]
pub struct Finished {
    /// One entry per epoch run.
    pub epochs: Vec<EpochMetrics>,
    /// Test-set metrics of the final weights.
    pub test: TestMetrics,
    /// Wall time of training and evaluation.
    pub total_seconds: f64,
    /// The artifacts, when they were asked for; an error writing them does
    /// not fail the trial.
    pub artifacts: Option<Result<RunArtifacts, TrainError>>,
}

/// Trains `job`, calling `hook` after every epoch; writes the artifacts
/// when `want_artifacts()` says so after training (not for a stopped trial).
pub fn run(
    job: &Job,
    hook: &mut dyn FnMut(&EpochMetrics) -> HookAction,
    want_artifacts: &dyn Fn() -> bool,
) -> Result<Finished, TrainError> {
    job.config.validate()?;
    let tensors = mnist_trainer::prepare(&job.data, &job.config, job.device);
    let outcome = mnist_trainer::train(&job.config, &tensors, job.device, TrainOptions { progress: false }, hook)?;
    let artifacts = want_artifacts().then(|| {
        let n_test = job.config.test_limit.unwrap_or(usize::MAX).min(job.data.test.len());
        let raw_test = job.data.test.clone().truncated(n_test);
        write_artifacts(&outcome, &tensors, &raw_test, &job.artifact_dir)
    });
    Ok(Finished { epochs: outcome.epochs, test: outcome.test, total_seconds: outcome.total_seconds, artifacts })
}

/// Whether a training error may go away on another attempt (out of memory,
/// a device problem) or is deterministic (a bad configuration, divergence).
pub fn retryable(e: &TrainError) -> bool {
    match e {
        TrainError::Config(_) | TrainError::Diverged { .. } => false,
        TrainError::Torch(_) | TrainError::Device(_) | TrainError::Artifact { .. } => true,
    }
}
