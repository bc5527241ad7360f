//! `mnistctl train`: one training run on this machine (the seed's `main.py`).
//!
//! Loads (or downloads) and verifies MNIST, trains the CNN with the given
//! configuration, prints per-epoch and test metrics, and writes the model
//! (safetensors, TorchScript, MLflow model directory), `metrics.json` and the
//! plots into `--output-dir`. The files MLflow is to receive are copied under
//! `<output-dir>/mlflow-pending/<run>/` until it has them, so a later run into
//! the same directory never changes what an earlier run uploads.

use anyhow::Context;
use mnist_common::config::{ConfigError, LrSchedule, Optimizer, TrainConfig};
use mnist_common::mnist;
use mnist_trainer::{run, DeviceSpec, HookAction, TrainOptions};
use std::path::PathBuf;

/// Flags shared by commands that load the data set.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Directory with the four MNIST files (`.gz` or raw). Missing files are
    /// downloaded from the public mirrors (set MNIST_MIRRORS to override) and
    /// verified by SHA-256.
    #[arg(long, env = mnist::DATA_DIR_ENV, default_value = mnist::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Never download: fail if a file is missing.
    #[arg(long)]
    pub no_download: bool,
}

impl DataArgs {
    /// Load and verify the data set, downloading missing files unless told not to.
    pub fn load(&self) -> anyhow::Result<mnist::Mnist> {
        let t = std::time::Instant::now();
        let data = if self.no_download { mnist::load(&self.data_dir) } else { mnist::load_or_download(&self.data_dir) };
        let data = data.with_context(|| format!("loading MNIST from {}", self.data_dir.display()))?;
        tracing::info!(dir = %self.data_dir.display(), seconds = format!("{:.1}", t.elapsed().as_secs_f64()), "MNIST loaded and verified");
        Ok(data)
    }

    /// The test set alone (its two files), downloading missing files unless
    /// told not to.
    pub fn load_test(&self) -> anyhow::Result<mnist::Split> {
        let missing = |f| mnist::locate(&self.data_dir, f).is_none();
        if !self.no_download && (missing(&mnist::TEST_IMAGES) || missing(&mnist::TEST_LABELS)) {
            mnist::ensure_downloaded(&self.data_dir, &mnist::mirrors_from_env())
                .with_context(|| format!("getting MNIST into {}", self.data_dir.display()))?;
        }
        mnist::load_test(&self.data_dir).with_context(|| format!("loading the MNIST test set from {}", self.data_dir.display()))
    }
}

/// The training configuration as flags (defaults: the seed's, except the
/// learning-rate schedule, which is cosine here and constant in the seed).
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// Training mini-batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: i64,
    /// Number of epochs.
    #[arg(long, default_value_t = 5)]
    pub epochs: i64,
    /// Learning rate (> 0).
    #[arg(long, visible_alias = "lr", default_value_t = 0.01, allow_negative_numbers = true)]
    pub learning_rate: f64,
    /// SGD momentum in [0, 1).
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    pub momentum: f64,
    /// L2 weight decay (≥ 0).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub weight_decay: f64,
    /// Optimiser: sgd or adam.
    #[arg(long, default_value = "sgd", value_parser = parse_optimizer)]
    pub optimizer: Optimizer,
    /// Learning-rate schedule: cosine (the default: annealed towards 0 over
    /// the epochs, one step per epoch) or constant (the seed's recipe).
    #[arg(long, default_value = "cosine", value_parser = parse_schedule)]
    pub lr_schedule: LrSchedule,
    /// Output channels of the first conv layer.
    #[arg(long, default_value_t = 32, allow_negative_numbers = true)]
    pub conv1_channels: i64,
    /// Output channels of the second conv layer.
    #[arg(long, default_value_t = 64, allow_negative_numbers = true)]
    pub conv2_channels: i64,
    /// Width of the hidden fully connected layer.
    #[arg(long, default_value_t = 128, allow_negative_numbers = true)]
    pub fc_width: i64,
    /// Dropout rate after the conv block, in [0, 1).
    #[arg(long, default_value_t = 0.25, allow_negative_numbers = true)]
    pub dropout_conv: f64,
    /// Dropout rate after the hidden fully connected layer, in [0, 1).
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub dropout_fc: f64,
    /// Random seed (initialisation, validation split, shuffling, dropout).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Training images held out for validation. Default: 5000, or a tenth of
    /// --train-limit when that is smaller.
    #[arg(long)]
    pub val_size: Option<usize>,
    /// Use only the first N training images (quick runs).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use only the first N test images (quick runs).
    #[arg(long)]
    pub test_limit: Option<usize>,
}

fn parse_optimizer(s: &str) -> Result<Optimizer, String> {
    s.parse().map_err(|e: ConfigError| e.message)
}

fn parse_schedule(s: &str) -> Result<LrSchedule, String> {
    s.parse().map_err(|e: ConfigError| e.message)
}

impl ConfigArgs {
    /// The validated configuration; errors name the flag.
    pub fn to_config(&self) -> anyhow::Result<TrainConfig> {
        let c = TrainConfig {
            conv1_channels: self.conv1_channels,
            conv2_channels: self.conv2_channels,
            fc_width: self.fc_width,
            dropout_conv: self.dropout_conv,
            dropout_fc: self.dropout_fc,
            learning_rate: self.learning_rate,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            optimizer: self.optimizer,
            lr_schedule: self.lr_schedule,
            batch_size: self.batch_size,
            epochs: self.epochs,
            seed: self.seed,
            val_size: self.val_size.unwrap_or_else(|| mnist_common::config::default_val_size(self.train_limit)),
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            ..TrainConfig::default()
        };
        c.validate().map_err(|e| anyhow::anyhow!("invalid value for --{}: {}", e.field.replace('_', "-"), e.message))?;
        Ok(c)
    }
}

/// Train the CNN once.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  mnistctl train                          # 5 epochs, SGD, lr 0.01 annealed by a cosine schedule\n  mnistctl train --lr-schedule constant   # the seed's recipe: the same with a constant lr\n  mnistctl train --epochs 1 --train-limit 5000 --device cpu\n  mnistctl train --optimizer adam --learning-rate 0.001 --output-dir runs/adam")]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Device: auto (CUDA if available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Where the model, metrics and plots are written. Copies of the files
    /// MLflow has not received yet wait in its `mlflow-pending/` folder, so
    /// the directory can take run after run.
    #[arg(long, default_value = "models")]
    pub output_dir: PathBuf,
    /// MLflow: the run is logged (params, curves, plots, model) and its model
    /// registered; without a tracking server it waits in `<output-dir>/mlflow-outbox.db`.
    #[command(flatten)]
    pub mlflow: mnist_mlflow::MlflowArgs,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let config = args.config.to_config()?;
    // Check the MLflow settings before spending minutes on training.
    args.mlflow.config()?;
    let spec: DeviceSpec = args.device.parse()?;
    let device = spec.resolve()?;
    // The output directory can be written, before minutes of training.
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("--output-dir {}: cannot create the directory", args.output_dir.display()))?;
    let data = args.data.load()?;
    let tensors = mnist_trainer::prepare(&data, &config, device);
    tracing::info!(
        device = mnist_trainer::device::device_name(device),
        train = tensors.train.len(),
        val = tensors.val.len(),
        test = tensors.test.len(),
        "training"
    );
    let options = TrainOptions { progress: mnist_common::progress::bars_enabled() };
    let outcome = mnist_trainer::train(&config, &tensors, device, options, &mut |_| HookAction::Continue)?;
    let n_test = config.test_limit.unwrap_or(usize::MAX).min(data.test.len());
    let raw_test = data.test.clone().truncated(n_test);
    let artifacts = run::write_artifacts(&outcome, &tensors, &raw_test, &args.output_dir)?;

    println!("{:>5}  {:>10}  {:>9}  {:>8}  {:>7}  {:>7}", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds");
    for e in &outcome.epochs {
        println!(
            "{:>5}  {:>10.4}  {:>8.2}%  {:>8.4}  {:>6.2}%  {:>7.1}",
            e.epoch, e.train_loss, e.train_accuracy, e.val_loss, e.val_accuracy, e.epoch_seconds
        );
    }
    println!();
    println!("test accuracy: {:.2}%   test loss: {:.4}   macro F1: {:.4}", outcome.test.accuracy, outcome.test.loss, outcome.test.macro_f1);
    println!("{:>5}  {:>9}  {:>6}  {:>6}  {:>7}", "class", "precision", "recall", "f1", "support");
    for c in &outcome.test.per_class {
        println!("{:>5}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}", c.class, c.precision, c.recall, c.f1, c.support);
    }
    println!();
    println!("wrote {}", artifacts.dir.display());
    for p in [
        &artifacts.safetensors,
        &artifacts.torchscript,
        &artifacts.mlflow_model,
        &artifacts.metrics,
        &artifacts.accuracy_plot,
        &artifacts.loss_plot,
        &artifacts.confusion_plot,
        &artifacts.predictions_plot,
    ] {
        println!("  {}", p.display());
    }
    crate::mlflow::log_training_run(&args.mlflow, &config, &outcome, &artifacts, &mnist_trainer::device::device_name(device))?;
    Ok(())
}
