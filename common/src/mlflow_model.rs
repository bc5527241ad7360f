//! The versions recorded in the MLflow model directory (`MLmodel`,
//! `requirements.txt`, `python_env.yaml`). The training core writes the
//! directory and the MLflow integration describes the same model to
//! `runs/log-model`; both read these, so the two never disagree. Also the
//! names the worker and the coordinator agree on for the directory.

/// The MLflow version the model directory is written for.
pub const MLFLOW_VERSION: &str = "3.17.2";
/// The torch version recorded in `MLmodel`.
pub const PYTORCH_VERSION: &str = "2.11.0";
/// The Python version recorded in `MLmodel` and `python_env.yaml`.
pub const PYTHON_VERSION: &str = "3.11.7";

/// The model directory's descriptor, MLflow's `MLmodel` file. The training
/// core writes it; the worker uploads it last of the directory; the
/// coordinator logs the model to MLflow when it arrives.
pub const MLMODEL_FILE: &str = "MLmodel";
/// The folder of a trial's artifacts that holds the model directory.
pub const MODEL_ARTIFACT_DIR: &str = "model";
