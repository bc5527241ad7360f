//! Inputs the training core refuses by name instead of producing silently
//! wrong numbers or panicking. Synthetic data and tiny models: no MNIST copy
//! needed.

use mnist_common::config::TrainConfig;
use mnist_common::mnist::{Mnist, Split, PIXELS};
use mnist_trainer::predict::Predictor;
use mnist_trainer::{prepare, train, HookAction, TrainError, TrainOptions};
use tch::{Device, Kind, Tensor};

fn synth(n: usize) -> Split {
    let mut images = vec![0u8; n * PIXELS];
    for (i, p) in images.iter_mut().enumerate() {
        *p = (i * 7 % 251) as u8;
    }
    Split { images, labels: (0..n).map(|i| (i % 10) as u8).collect() }
}

fn tiny() -> TrainConfig {
    TrainConfig {
        epochs: 1,
        train_limit: Some(200),
        val_size: 20,
        batch_size: 50,
        conv1_channels: 2,
        conv2_channels: 2,
        fc_width: 4,
        ..TrainConfig::default()
    }
}

/// With no validation images val_loss and val_accuracy used to read 0.0 (and
/// tuning on val_accuracy ranked every trial equal); the run is refused.
#[test]
fn no_validation_images_is_refused() {
    let data = Mnist { train: synth(200), test: synth(50) };
    let cfg = TrainConfig { val_size: 0, ..tiny() };
    let t = prepare(&data, &cfg, Device::Cpu);
    let mut epochs = 0;
    let err = train(&cfg, &t, Device::Cpu, TrainOptions::default(), &mut |_| {
        epochs += 1;
        HookAction::Continue
    })
    .unwrap_err();
    assert!(matches!(&err, TrainError::Config(c) if c.field == "val_size"), "{err:?}");
    assert!(err.to_string().contains("val_size") && err.to_string().contains("at least 1"), "{err}");
    assert_eq!(epochs, 0, "no epoch may run");
}

/// A TorchScript model of 784 inputs to `classes` log-probabilities, saved
/// to `path` (a real traced module, as `torch.jit.trace` would write it).
fn save_linear_model(path: &std::path::Path, classes: i64) {
    let mut vs = tch::nn::VarStore::new(Device::Cpu);
    let lin = tch::nn::linear(vs.root() / "l", PIXELS as i64, classes, Default::default());
    vs.freeze();
    let _g = tch::no_grad_guard();
    let example = Tensor::zeros([2, 1, 28, 28], (Kind::Float, Device::Cpu));
    let m = tch::CModule::create_by_tracing("M", "forward", &[example], &mut |i| {
        vec![i[0].flatten(1, -1).apply(&lin).log_softmax(-1, Kind::Float)]
    })
    .unwrap();
    m.save(path).unwrap();
}

/// A model whose output is not ten classes per image: two classes used to
/// panic in `copy_from_slice`; twenty gave two "predictions" per image.
#[test]
fn predicting_with_a_model_that_is_not_ten_classes_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for classes in [2, 20] {
        let path = dir.path().join(format!("m{classes}.pt"));
        save_linear_model(&path, classes);
        let p = Predictor::load(&path, Device::Cpu).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.predict(&vec![0u8; 3 * PIXELS])));
        let err = match r {
            Ok(Err(e)) => e,
            Ok(Ok(v)) => panic!("{classes} classes: {} predictions for 3 images instead of an error", v.len()),
            Err(_) => panic!("{classes} classes: predict panicked"),
        };
        let msg = err.to_string();
        assert!(msg.contains(&format!("[3, {classes}]")) && msg.contains("expected [3, 10]"), "{msg}");
        assert!(msg.contains(&format!("m{classes}.pt")), "the error names the model file: {msg}");
    }
    // A ten-class model of the same kind works.
    let path = dir.path().join("m10.pt");
    save_linear_model(&path, 10);
    let preds = Predictor::load(&path, Device::Cpu).unwrap().predict(&vec![0u8; 3 * PIXELS]).unwrap();
    assert_eq!(preds.len(), 3);
    assert!(preds.iter().all(|p| (p.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-5));
}
