//! One complete training run and the files it leaves behind: the trained
//! weights (safetensors), the TorchScript model, the MLflow model directory,
//! the learning-curve, confusion-matrix and prediction-grid plots, and a
//! `metrics.json` holding the same numbers that were printed and plotted.

use crate::data::DataTensors;
use crate::export;
use crate::train::{predict_proba, EpochMetrics, TrainError, TrainOutcome};
use mnist_common::mnist::Split;
use mnist_common::plots::{self, GridItem};
use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

/// The files written by [`write_artifacts`].
#[derive(Debug, Clone, Serialize)]
pub struct RunArtifacts {
    /// The output directory.
    pub dir: PathBuf,
    /// `model.safetensors`.
    pub safetensors: PathBuf,
    /// `model.pt` (TorchScript).
    pub torchscript: PathBuf,
    /// `mlflow_model/`.
    pub mlflow_model: PathBuf,
    /// `metrics.json`.
    pub metrics: PathBuf,
    /// `accuracy.png`.
    pub accuracy_plot: PathBuf,
    /// `loss.png`.
    pub loss_plot: PathBuf,
    /// `confusion_matrix.png`.
    pub confusion_plot: PathBuf,
    /// `predictions.png`.
    pub predictions_plot: PathBuf,
}

/// What `metrics.json` holds.
#[derive(Debug, Serialize)]
struct MetricsFile<'a> {
    config: &'a mnist_common::config::TrainConfig,
    device: &'a str,
    torch_version: String,
    epochs: &'a [EpochMetrics],
    stopped_early: bool,
    test: &'a crate::metrics::TestMetrics,
    total_seconds: f64,
}

/// Number of test images shown in the prediction grid.
pub const GRID_IMAGES: usize = 32;

fn plot_err(e: plots::PlotError) -> TrainError {
    TrainError::Artifact { path: String::new(), message: e.to_string() }
}

/// Write every artifact of `outcome` into `dir` (created if needed).
/// `raw_test` is the test split the run was evaluated on (for the grid).
pub fn write_artifacts(
    outcome: &TrainOutcome,
    data: &DataTensors,
    raw_test: &Split,
    dir: &Path,
) -> Result<RunArtifacts, TrainError> {
    fs::create_dir_all(dir).map_err(|e| TrainError::Artifact { path: dir.display().to_string(), message: e.to_string() })?;
    let a = RunArtifacts {
        dir: dir.to_path_buf(),
        safetensors: dir.join("model.safetensors"),
        torchscript: dir.join("model.pt"),
        mlflow_model: dir.join("mlflow_model"),
        metrics: dir.join("metrics.json"),
        accuracy_plot: dir.join("accuracy.png"),
        loss_plot: dir.join("loss.png"),
        confusion_plot: dir.join("confusion_matrix.png"),
        predictions_plot: dir.join("predictions.png"),
    };
    export::save_safetensors(&outcome.model, &a.safetensors)?;
    export::save_torchscript(&outcome.model, &a.torchscript)?;
    if a.mlflow_model.exists() {
        fs::remove_dir_all(&a.mlflow_model)
            .map_err(|e| TrainError::Artifact { path: a.mlflow_model.display().to_string(), message: e.to_string() })?;
    }
    export::write_mlflow_model(&a.mlflow_model, &a.torchscript)?;

    let col = |f: fn(&EpochMetrics) -> f64| outcome.epochs.iter().map(f).collect::<Vec<_>>();
    plots::accuracy_curves(&a.accuracy_plot, &col(|e| e.train_accuracy), &col(|e| e.val_accuracy)).map_err(plot_err)?;
    plots::loss_curves(&a.loss_plot, &col(|e| e.train_loss), &col(|e| e.val_loss)).map_err(plot_err)?;
    plots::confusion_matrix(&a.confusion_plot, &outcome.test.confusion).map_err(plot_err)?;

    let n = (GRID_IMAGES as i64).min(data.test.len());
    if n > 0 {
        let probs = predict_proba(&outcome.model.net, &data.test.x.narrow(0, 0, n))
            .to_kind(Kind::Double)
            .to_device(Device::Cpu);
        let flat: Vec<f64> = Vec::<f64>::try_from(&probs.flatten(0, -1))?;
        let items: Vec<GridItem> = flat
            .chunks(10)
            .enumerate()
            .map(|(i, p)| {
                let (digit, prob) =
                    p.iter().enumerate().fold((0usize, f64::MIN), |b, (d, &v)| if v > b.1 { (d, v) } else { b });
                GridItem { pixels: raw_test.image(i), label: Some(raw_test.labels[i]), predicted: digit as u8, probability: prob }
            })
            .collect();
        plots::prediction_grid(&a.predictions_plot, &items).map_err(plot_err)?;
    }

    let file = MetricsFile {
        config: &outcome.model.config,
        device: &outcome.device,
        torch_version: crate::device::torch_version(),
        epochs: &outcome.epochs,
        stopped_early: outcome.stopped_early,
        test: &outcome.test,
        total_seconds: outcome.total_seconds,
    };
    let json = serde_json::to_string_pretty(&file).map_err(|e| TrainError::Artifact { path: a.metrics.display().to_string(), message: e.to_string() })?;
    fs::write(&a.metrics, json).map_err(|e| TrainError::Artifact { path: a.metrics.display().to_string(), message: e.to_string() })?;
    Ok(a)
}
