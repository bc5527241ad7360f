//! Model artifacts: the weights as safetensors, a TorchScript file traced on
//! the CPU with a dynamic batch dimension, and an MLflow model directory that
//! `mlflow.pytorch.load_model` and `mlflow.pyfunc.load_model` open.
//!
//! The exported model takes a float32 N×1×28×28 batch normalised like the
//! training data (pixels / 255, then (x − 0.1307) / 0.3081) and returns N×10
//! log-probabilities.

use crate::model::Net;
use crate::train::{TrainError, TrainedModel};
use std::fs;
use std::path::{Path, PathBuf};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

pub use mnist_common::mlflow_model::{MLFLOW_VERSION, PYTHON_VERSION, PYTORCH_VERSION};

fn artifact_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Artifact { path: path.display().to_string(), message: e.to_string() }
}

/// Save the weights as safetensors.
pub fn save_safetensors(model: &TrainedModel, path: &Path) -> Result<(), TrainError> {
    model.vs.save(path).map_err(|e| artifact_err(path, e))
}

/// A copy of the model on the CPU (tracing and export happen there).
fn cpu_copy(model: &TrainedModel) -> Result<(nn::VarStore, Net), TrainError> {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = Net::new(&vs.root(), &model.config);
    vs.copy(&model.vs)?;
    // Tracing records the weights as constants, which must not require grad.
    vs.freeze();
    Ok((vs, net))
}

/// Trace the model on the CPU in eval mode and save it as TorchScript.
///
/// The trace uses a batch of 2; the graph has no fixed batch size because
/// the forward pass flattens with `flatten(1, -1)`.
pub fn save_torchscript(model: &TrainedModel, path: &Path) -> Result<(), TrainError> {
    let (_vs, net) = cpu_copy(model)?;
    let _guard = tch::no_grad_guard();
    let example = Tensor::zeros([2, 1, 28, 28], (Kind::Float, Device::Cpu));
    let module = tch::CModule::create_by_tracing("MnistCnn", "forward", &[example], &mut |inputs| {
        vec![net.forward_t(&inputs[0], false)]
    })?;
    module.save(path).map_err(|e| artifact_err(path, e))
}

/// Write an MLflow model directory at `dir` around the TorchScript file
/// `torchscript` (copied to `data/model.pth`).
pub fn write_mlflow_model(dir: &Path, torchscript: &Path) -> Result<PathBuf, TrainError> {
    let data = dir.join("data");
    fs::create_dir_all(&data).map_err(|e| artifact_err(&data, e))?;
    let model_pth = data.join("model.pth");
    fs::copy(torchscript, &model_pth).map_err(|e| artifact_err(&model_pth, e))?;
    let write = |name: &str, text: &str| -> Result<(), TrainError> {
        let p = dir.join(name);
        fs::write(&p, text).map_err(|e| artifact_err(&p, e))
    };
    // Exactly the module name, no trailing newline: mlflow imports it verbatim.
    write("data/pickle_module_info.txt", "mlflow.pytorch.pickle_module")?;
    let size = fs::metadata(&model_pth).map(|m| m.len()).unwrap_or(0);
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    let created = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.6f");
    let python = PYTHON_VERSION;
    let mlmodel = format!(
        r#"flavors:
  python_function:
    data: data
    env:
      conda: conda.yaml
      virtualenv: python_env.yaml
    loader_module: mlflow.pytorch
    pickle_module_name: mlflow.pytorch.pickle_module
    python_version: '{python}'
  pytorch:
    code: null
    model_data: data
    pytorch_version: {PYTORCH_VERSION}
metadata:
  input: float32 Nx1x28x28, pixels scaled to [0, 1] then normalised with mean 0.1307 and std 0.3081
  output: float32 Nx10 log-probabilities of the digits 0-9
  producer: mnist-tune
mlflow_version: {MLFLOW_VERSION}
model_size_bytes: {size}
model_uuid: {uuid}
signature:
  inputs: '[{{"type": "tensor", "tensor-spec": {{"dtype": "float32", "shape": [-1, 1, 28, 28]}}}}]'
  outputs: '[{{"type": "tensor", "tensor-spec": {{"dtype": "float32", "shape": [-1, 10]}}}}]'
  params: null
utc_time_created: '{created}'
"#
    );
    write(mnist_common::mlflow_model::MLMODEL_FILE, &mlmodel)?;
    let requirements = format!("mlflow=={MLFLOW_VERSION}\ntorch=={PYTORCH_VERSION}\nnumpy\ncloudpickle\n");
    write("requirements.txt", &requirements)?;
    write(
        "python_env.yaml",
        &format!("python: '{python}'\nbuild_dependencies:\n- pip\n- setuptools\n- wheel\ndependencies:\n- -r requirements.txt\n"),
    )?;
    write(
        "conda.yaml",
        &format!(
            "channels:\n- conda-forge\ndependencies:\n- python={python}\n- pip\n- pip:\n  - mlflow=={MLFLOW_VERSION}\n  - torch=={PYTORCH_VERSION}\n  - numpy\n  - cloudpickle\nname: mlflow-env\n"
        ),
    )?;
    Ok(dir.to_path_buf())
}
