//! Inputs the training core refuses by name instead of producing silently
//! wrong numbers or panicking. Synthetic data and tiny models: no MNIST copy
//! needed.

use mnist_common::config::TrainConfig;
use mnist_common::mnist::{Mnist, Split, PIXELS};
use mnist_trainer::{prepare, train, HookAction, TrainError, TrainOptions};
use tch::Device;

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
