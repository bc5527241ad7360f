//! The training loop.
//!
//! All data lives on the training device; each epoch draws a permutation
//! there and slices batches with `index_select`. Running sums of loss and
//! correct predictions stay on the device too, and are read once per epoch, so
//! the host never waits on the device inside an epoch.
//!
//! After every epoch the caller's hook sees the epoch's metrics and may stop
//! the run (the distributed worker uses this to report intermediate values and
//! to obey a prune decision). The loop knows nothing about gRPC.

use crate::data::{DataTensors, Examples};
use crate::device::{device_name, DeviceError};
use crate::metrics::{self, TestMetrics};
use crate::model::Net;
use mnist_common::config::{ConfigError, Optimizer, TrainConfig};
use serde::{Deserialize, Serialize};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Metrics of one finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: u32,
    /// Mean training loss over the epoch (with dropout active).
    pub train_loss: f64,
    /// Training accuracy in percent over the epoch.
    pub train_accuracy: f64,
    /// Validation loss.
    pub val_loss: f64,
    /// Validation accuracy in percent.
    pub val_accuracy: f64,
    /// Learning rate used in this epoch.
    pub learning_rate: f64,
    /// Wall time of the epoch (training and validation) in seconds.
    pub epoch_seconds: f64,
}

/// What the hook asks the loop to do after an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookAction {
    /// Go on with the next epoch.
    Continue,
    /// Stop now (for example: the trial was pruned).
    Stop,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The device cannot be used.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The loss became NaN or infinite.
    #[error("training diverged at epoch {epoch}: the training loss is {loss} (try a smaller learning rate)")]
    Diverged { epoch: u32, loss: f64 },
    /// libtorch reported an error (for example: out of memory).
    #[error("libtorch error: {0}")]
    Torch(String),
    /// Saving an artifact failed.
    #[error("{path}: {message}")]
    Artifact { path: String, message: String },
}

impl From<tch::TchError> for TrainError {
    fn from(e: tch::TchError) -> Self {
        TrainError::Torch(e.to_string())
    }
}

/// A trained network with its weights.
#[derive(Debug)]
pub struct TrainedModel {
    /// The variables (weights).
    pub vs: nn::VarStore,
    /// The network.
    pub net: Net,
    /// The configuration it was built and trained with.
    pub config: TrainConfig,
}

impl TrainedModel {
    /// A fresh, untrained model on `device`, initialised from `config.seed`.
    pub fn new(config: &TrainConfig, device: Device) -> TrainedModel {
        tch::manual_seed(config.seed as i64);
        let vs = nn::VarStore::new(device);
        let net = Net::new(&vs.root(), config);
        TrainedModel { vs, net, config: config.clone() }
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }
}

/// The result of a run.
#[derive(Debug)]
pub struct TrainOutcome {
    /// The trained model.
    pub model: TrainedModel,
    /// One entry per finished epoch.
    pub epochs: Vec<EpochMetrics>,
    /// True when the hook stopped the run before the last epoch.
    pub stopped_early: bool,
    /// Test-set metrics of the final weights.
    pub test: TestMetrics,
    /// The device name (`cpu`, `cuda:0`).
    pub device: String,
    /// Total wall time in seconds, evaluation included.
    pub total_seconds: f64,
}

/// Options that do not change the result.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrainOptions {
    /// Draw a progress bar over each epoch's batches (on a terminal only).
    pub progress: bool,
}

/// Sums over a pass, kept on the device.
struct Pass {
    loss_sum: f64,
    correct: i64,
    n: i64,
}

impl Pass {
    fn loss(&self) -> f64 {
        self.loss_sum / self.n.max(1) as f64
    }
    fn accuracy(&self) -> f64 {
        100.0 * self.correct as f64 / self.n.max(1) as f64
    }
}

/// Evaluate `net` on `ex` in batches; returns the sums and the predictions.
fn evaluate(net: &Net, ex: &Examples, batch: i64) -> (Pass, Tensor) {
    let _guard = tch::no_grad_guard();
    let n = ex.len();
    let device = ex.x.device();
    let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
    let mut preds = Vec::new();
    let mut start = 0;
    while start < n {
        let len = batch.min(n - start);
        let x = ex.x.narrow(0, start, len);
        let y = ex.y.narrow(0, start, len);
        let out = net.forward_t(&x, false);
        loss_sum += out.nll_loss(&y) * (len as f64);
        preds.push(out.argmax(-1, false));
        start += len;
    }
    let preds = if preds.is_empty() { Tensor::zeros([0], (Kind::Int64, device)) } else { Tensor::cat(&preds, 0) };
    let correct = preds.eq_tensor(&ex.y).sum(Kind::Int64);
    let pass = Pass { loss_sum: f64::try_from(&loss_sum).unwrap_or(f64::NAN), correct: i64::try_from(&correct).unwrap_or(0), n };
    (pass, preds)
}

fn build_optimizer(vs: &nn::VarStore, cfg: &TrainConfig) -> Result<nn::Optimizer, TrainError> {
    Ok(match cfg.optimizer {
        Optimizer::Sgd => nn::Sgd { momentum: cfg.momentum, dampening: 0.0, wd: cfg.weight_decay, nesterov: false }
            .build(vs, cfg.learning_rate)?,
        Optimizer::Adam => nn::Adam { wd: cfg.weight_decay, ..Default::default() }.build(vs, cfg.learning_rate)?,
    })
}

/// Train a fresh model on `data` (already on `device`), calling `hook` after
/// each epoch, then evaluate it on the test set.
pub fn train(
    cfg: &TrainConfig,
    data: &DataTensors,
    device: Device,
    options: TrainOptions,
    hook: &mut dyn FnMut(&EpochMetrics) -> HookAction,
) -> Result<TrainOutcome, TrainError> {
    cfg.validate()?;
    // tch reports libtorch errors in its infallible API by panicking; turn
    // them into errors here so a CUDA out-of-memory never kills the process.
    match catch_unwind(AssertUnwindSafe(|| train_inner(cfg, data, device, options, hook))) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown error".to_string());
            Err(TrainError::Torch(msg))
        }
    }
}

fn train_inner(
    cfg: &TrainConfig,
    data: &DataTensors,
    device: Device,
    options: TrainOptions,
    hook: &mut dyn FnMut(&EpochMetrics) -> HookAction,
) -> Result<TrainOutcome, TrainError> {
    let started = Instant::now();
    let model = TrainedModel::new(cfg, device);
    let mut opt = build_optimizer(&model.vs, cfg)?;
    let n = data.train.len();
    let bs = cfg.batch_size.min(n.max(1));
    let batches = ((n + bs - 1) / bs) as u64;
    let mut epochs = Vec::new();
    let mut stopped_early = false;
    for epoch in 1..=cfg.epochs as u32 {
        let t0 = Instant::now();
        let bar = if options.progress {
            mnist_common::progress::bar(batches, "epoch {msg} [{bar:30}] {pos}/{len} batches {elapsed_precise} eta {eta}")
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_message(format!("{epoch}/{}", cfg.epochs));
        let lr = cfg.lr_schedule.rate(cfg.learning_rate, epoch as i64, cfg.epochs);
        opt.set_lr(lr);
        let perm = Tensor::randperm(n, (Kind::Int64, device));
        let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
        let mut correct = Tensor::zeros([], (Kind::Int64, device));
        let mut start = 0;
        while start < n {
            let len = bs.min(n - start);
            let idx = perm.narrow(0, start, len);
            let x = data.train.x.index_select(0, &idx);
            let y = data.train.y.index_select(0, &idx);
            let out = model.net.forward_t(&x, true);
            let loss = out.nll_loss(&y);
            opt.backward_step(&loss);
            tch::no_grad(|| {
                loss_sum += loss.detach() * (len as f64);
                correct += out.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64);
            });
            start += len;
            bar.inc(1);
        }
        let train_pass = Pass {
            loss_sum: f64::try_from(&loss_sum).unwrap_or(f64::NAN),
            correct: i64::try_from(&correct).unwrap_or(0),
            n,
        };
        bar.finish_and_clear();
        if !train_pass.loss().is_finite() {
            return Err(TrainError::Diverged { epoch, loss: train_pass.loss() });
        }
        let (val_pass, _) = evaluate(&model.net, &data.val, cfg.eval_batch_size);
        let m = EpochMetrics {
            epoch,
            train_loss: train_pass.loss(),
            train_accuracy: train_pass.accuracy(),
            val_loss: val_pass.loss(),
            val_accuracy: val_pass.accuracy(),
            learning_rate: lr,
            epoch_seconds: t0.elapsed().as_secs_f64(),
        };
        tracing::info!(
            epoch,
            train_loss = format!("{:.4}", m.train_loss),
            train_acc = format!("{:.2}%", m.train_accuracy),
            val_loss = format!("{:.4}", m.val_loss),
            val_acc = format!("{:.2}%", m.val_accuracy),
            seconds = format!("{:.1}", m.epoch_seconds),
            "epoch {epoch}/{}",
            cfg.epochs
        );
        let action = hook(&m);
        epochs.push(m);
        if action == HookAction::Stop && (epoch as i64) < cfg.epochs {
            stopped_early = true;
            break;
        }
    }
    let test = test_metrics(&model.net, &data.test, cfg.eval_batch_size);
    Ok(TrainOutcome {
        model,
        epochs,
        stopped_early,
        test,
        device: device_name(device),
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Accuracy, loss, confusion matrix and per-class metrics on `ex`.
pub fn test_metrics(net: &Net, ex: &Examples, batch: i64) -> TestMetrics {
    let (pass, preds) = evaluate(net, ex, batch);
    let _guard = tch::no_grad_guard();
    let counts = (&ex.y * 10 + &preds).bincount::<Tensor>(None, 100).to_device(Device::Cpu);
    let counts: Vec<i64> = Vec::<i64>::try_from(&counts).unwrap_or_default();
    metrics::test_metrics(metrics::confusion_from_counts(&counts), pass.loss())
}

/// Class probabilities (N×10) for normalised images, in eval mode.
pub fn predict_proba(net: &Net, x: &Tensor) -> Tensor {
    let _guard = tch::no_grad_guard();
    net.forward_t(x, false).exp()
}
