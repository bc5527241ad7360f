//! The training core on a small slice of the real MNIST data, on the CPU:
//! learning, reproducibility, early stopping through the hook, artifacts, the
//! TorchScript export, and the MLflow model loaded by the real mlflow package.

use mnist_common::config::TrainConfig;
use mnist_common::mnist::{self, Mnist};
use mnist_trainer::predict::Predictor;
use mnist_trainer::{prepare, run, train, HookAction, TrainOptions};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::Device;

fn data() -> &'static Mnist {
    static DATA: OnceLock<Mnist> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = std::env::var_os("MNIST_TEST_DATA")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/mnist"));
        mnist::load(&dir).expect("the shared MNIST copy")
    })
}

/// libtorch's default generator is global to the process: runs that must be
/// reproducible cannot overlap, so the tests that train take this lock.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn small() -> TrainConfig {
    TrainConfig {
        epochs: 2,
        train_limit: Some(3000),
        val_size: 500,
        test_limit: Some(1000),
        batch_size: 32,
        conv1_channels: 8,
        conv2_channels: 16,
        fc_width: 32,
        seed: 7,
        ..TrainConfig::default()
    }
}

fn python() -> PathBuf {
    std::env::var_os("MNIST_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"))
}

#[test]
fn learns_and_reports_consistent_metrics() {
    let _serial = serial();
    let cfg = small();
    let t = prepare(data(), &cfg, Device::Cpu);
    assert_eq!((t.train.len(), t.val.len(), t.test.len()), (2500, 500, 1000));
    let mut seen = Vec::new();
    let out = train(&cfg, &t, Device::Cpu, TrainOptions::default(), &mut |m| {
        seen.push(m.clone());
        HookAction::Continue
    })
    .unwrap();
    assert_eq!(out.epochs.len(), 2);
    assert_eq!(seen, out.epochs, "the hook sees exactly the recorded epochs");
    assert!(!out.stopped_early);
    let last = &out.epochs[1];
    assert!(last.val_accuracy > 85.0, "validation accuracy {}", last.val_accuracy);
    assert!(out.epochs[1].train_loss < out.epochs[0].train_loss);
    assert!(out.test.accuracy > 85.0, "test accuracy {}", out.test.accuracy);
    let total: u64 = out.test.confusion.iter().flatten().sum();
    assert_eq!(total, 1000);
    let support: u64 = out.test.per_class.iter().map(|c| c.support).sum();
    assert_eq!(support, 1000);
    for e in &out.epochs {
        assert_eq!(e.learning_rate, cfg.lr_schedule.rate(cfg.learning_rate, e.epoch as i64, cfg.epochs), "the epoch's scheduled rate");
        assert!(e.epoch_seconds > 0.0);
    }
}

#[test]
fn same_seed_same_run_different_seed_different_run() {
    let _serial = serial();
    let mut cfg = small();
    cfg.epochs = 1;
    cfg.train_limit = Some(1500);
    let t = prepare(data(), &cfg, Device::Cpu);
    let run_once = |cfg: &TrainConfig| {
        let out = train(cfg, &t, Device::Cpu, TrainOptions::default(), &mut |_| HookAction::Continue).unwrap();
        let named = out.model.vs.variables();
        let mut names: Vec<_> = named.keys().cloned().collect();
        names.sort();
        let weights: Vec<Vec<f32>> =
            names.iter().map(|n| Vec::<f32>::try_from(&named[n].flatten(0, -1)).unwrap()).collect();
        (out.epochs[0].train_loss, out.epochs[0].val_accuracy, out.test.accuracy, weights)
    };
    let a = run_once(&cfg);
    let b = run_once(&cfg);
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
    assert_eq!(a.2, b.2);
    assert!(a.3 == b.3, "weights differ between two runs with the same seed");
    cfg.seed += 1;
    let c = run_once(&cfg);
    assert!(a.3 != c.3, "a different seed gave identical weights");
}

#[test]
fn the_hook_stops_training() {
    let _serial = serial();
    let mut cfg = small();
    cfg.epochs = 5;
    cfg.train_limit = Some(1200);
    let t = prepare(data(), &cfg, Device::Cpu);
    let mut calls = 0;
    let out = train(&cfg, &t, Device::Cpu, TrainOptions::default(), &mut |m| {
        calls += 1;
        if m.epoch == 2 {
            HookAction::Stop
        } else {
            HookAction::Continue
        }
    })
    .unwrap();
    assert_eq!(calls, 2);
    assert_eq!(out.epochs.len(), 2);
    assert!(out.stopped_early);
}

#[test]
fn rejects_invalid_config() {
    let _serial = serial();
    let cfg = TrainConfig { learning_rate: -1.0, ..small() };
    let t = prepare(data(), &small(), Device::Cpu);
    let err = train(&cfg, &t, Device::Cpu, TrainOptions::default(), &mut |_| HookAction::Continue).unwrap_err();
    assert!(err.to_string().contains("learning_rate"), "{err}");
}

#[test]
fn diverging_training_is_an_error_not_a_nan_result() {
    let _serial = serial();
    let cfg = TrainConfig { learning_rate: 10.0, momentum: 0.99, epochs: 2, train_limit: Some(1200), ..small() };
    let t = prepare(data(), &cfg, Device::Cpu);
    match train(&cfg, &t, Device::Cpu, TrainOptions::default(), &mut |_| HookAction::Continue) {
        Err(e) => assert!(e.to_string().contains("diverged"), "{e}"),
        // Batch norm can keep even this run finite; then every number must be.
        Ok(out) => assert!(out.epochs.iter().all(|e| e.train_loss.is_finite() && e.val_loss.is_finite())),
    }
}

#[test]
fn artifacts_torchscript_and_mlflow_model() {
    let _serial = serial();
    let cfg = small();
    let t = prepare(data(), &cfg, Device::Cpu);
    let out = train(&cfg, &t, Device::Cpu, TrainOptions::default(), &mut |_| HookAction::Continue).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let raw_test = data().test.clone().truncated(1000);
    let a = run::write_artifacts(&out, &t, &raw_test, dir.path()).unwrap();
    for p in [&a.safetensors, &a.torchscript, &a.metrics, &a.accuracy_plot, &a.loss_plot, &a.confusion_plot, &a.predictions_plot] {
        assert!(std::fs::metadata(p).map(|m| m.len() > 100).unwrap_or(false), "{} missing or empty", p.display());
    }
    for p in ["MLmodel", "data/model.pth", "requirements.txt", "python_env.yaml"] {
        assert!(a.mlflow_model.join(p).is_file(), "{p}");
    }
    assert_eq!(
        std::fs::read(a.mlflow_model.join("data/pickle_module_info.txt")).unwrap(),
        b"mlflow.pytorch.pickle_module"
    );
    let mlmodel = std::fs::read_to_string(a.mlflow_model.join("MLmodel")).unwrap();
    assert!(mlmodel.contains("loader_module: mlflow.pytorch") && mlmodel.contains("pytorch_version: 2.11.0"));

    // metrics.json holds the numbers of the run.
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&a.metrics).unwrap()).unwrap();
    assert_eq!(m["test"]["accuracy"].as_f64().unwrap(), out.test.accuracy);
    assert_eq!(m["epochs"][1]["val_accuracy"].as_f64().unwrap(), out.epochs[1].val_accuracy);

    // Safetensors reload into a fresh model gives the same test metrics.
    let mut fresh = mnist_trainer::train::TrainedModel::new(&cfg, Device::Cpu);
    fresh.vs.load(&a.safetensors).unwrap();
    let again = mnist_trainer::train::test_metrics(&fresh.net, &t.test, 1000);
    assert_eq!(again.confusion, out.test.confusion);

    // TorchScript: dynamic batch size, same predictions as the trained net.
    let p = Predictor::load(&a.torchscript, Device::Cpu).unwrap();
    for n in [1i64, 7, 1000] {
        let x = t.test.x.narrow(0, 0, n);
        let ts = p.forward(&x).unwrap().argmax(-1, false);
        let native = mnist_trainer::train::predict_proba(&out.model.net, &x).argmax(-1, false);
        assert_eq!(ts.size(), vec![n]);
        assert!(ts.equal(&native), "TorchScript and native predictions differ at batch {n}");
    }
    let preds = p.predict(&raw_test.images[..784 * 1000]).unwrap();
    let correct = preds.iter().zip(&raw_test.labels).filter(|(p, &l)| p.digit == l).count();
    assert!((correct as f64 / 10.0 - out.test.accuracy).abs() < 1e-9);

    // The real mlflow package loads the directory with both flavours and scores
    // the same test images within 0.1 points of our own evaluation.
    let script = r#"
import sys, gzip, json, numpy as np, mlflow.pytorch, mlflow.pyfunc, torch
model_dir, data_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def idx(name, off):
    return np.frombuffer(gzip.open(f"{data_dir}/{name}.gz").read(), dtype=np.uint8, offset=off)
x = idx("t10k-images-idx3-ubyte", 16).reshape(-1, 1, 28, 28)[:n].astype(np.float32)
y = idx("t10k-labels-idx1-ubyte", 8)[:n]
x = ((x / 255.0) - 0.1307) / 0.3081
x = x.astype(np.float32)
m = mlflow.pytorch.load_model(model_dir)
with torch.no_grad():
    acc_pt = float((m(torch.from_numpy(x)).argmax(1).numpy() == y).mean() * 100)
py = mlflow.pyfunc.load_model(model_dir)
out = np.asarray(py.predict(x))
acc_py = float((out.argmax(1) == y).mean() * 100)
print(json.dumps({"pytorch": acc_pt, "pyfunc": acc_py, "shape": list(out.shape)}))
"#;
    let data_dir = std::env::var_os("MNIST_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/mnist"));
    let res = std::process::Command::new(python())
        .args(["-c", script])
        .arg(&a.mlflow_model)
        .arg(&data_dir)
        .arg("1000")
        .output()
        .expect("run the venv python (scripts/setup.sh creates it)");
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(res.status.success(), "mlflow load failed: {}\n{}", stdout, String::from_utf8_lossy(&res.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["shape"], serde_json::json!([1000, 10]));
    for flavour in ["pytorch", "pyfunc"] {
        let acc = v[flavour].as_f64().unwrap();
        assert!((acc - out.test.accuracy).abs() <= 0.1, "{flavour}: {acc} vs ours {}", out.test.accuracy);
    }
}
