//! The data set as tensors on the training device.
//!
//! Pixels are scaled to [0, 1] and normalised with the training mean and
//! standard deviation (0.1307, 0.3081) once, on the device, so batches are
//! plain `index_select`s with no per-batch host work. The validation split is
//! drawn with a seeded ChaCha permutation of the training indices, so it is
//! the same on every device and every run with the same seed.

use mnist_common::config::TrainConfig;
use mnist_common::mnist::{Mnist, Split, MEAN, PIXELS, ROWS, COLS, STD};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};

/// Images (N×1×28×28 float, normalised) and labels (N, int64) on a device.
#[derive(Debug)]
pub struct Examples {
    /// Normalised images.
    pub x: Tensor,
    /// Labels 0..=9.
    pub y: Tensor,
}

impl Examples {
    /// Number of examples.
    pub fn len(&self) -> i64 {
        self.y.size()[0]
    }
    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Train, validation and test examples for one run.
#[derive(Debug)]
pub struct DataTensors {
    /// The training part of the training set.
    pub train: Examples,
    /// The held-out validation part of the training set.
    pub val: Examples,
    /// The test set.
    pub test: Examples,
}

/// Normalise raw pixels (n×784 bytes) into an n×1×28×28 float tensor.
pub fn normalise(pixels: &[u8], device: Device) -> Tensor {
    let n = (pixels.len() / PIXELS) as i64;
    Tensor::from_slice(pixels)
        .to_device(device)
        .to_kind(Kind::Float)
        .view([n, 1, ROWS as i64, COLS as i64])
        .divide_scalar(255.0)
        .subtract_scalar(MEAN)
        .divide_scalar(STD)
}

fn examples(images: &[u8], labels: &[u8], device: Device) -> Examples {
    let y = Tensor::from_slice(labels).to_kind(Kind::Int64).to_device(device);
    Examples { x: normalise(images, device), y }
}

/// The seeded validation split: (train indices, validation indices).
pub fn split_indices(n: usize, val_size: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_5B17);
    idx.shuffle(&mut rng);
    let val = idx[..val_size.min(n)].to_vec();
    let mut train = idx[val_size.min(n)..].to_vec();
    train.sort_unstable();
    (train, val)
}

fn gather(split: &Split, idx: &[usize]) -> (Vec<u8>, Vec<u8>) {
    let mut images = Vec::with_capacity(idx.len() * PIXELS);
    let mut labels = Vec::with_capacity(idx.len());
    for &i in idx {
        images.extend_from_slice(split.image(i));
        labels.push(split.labels[i]);
    }
    (images, labels)
}

/// Build the tensors for `cfg` (limits, split) on `device`.
pub fn prepare(data: &Mnist, cfg: &TrainConfig, device: Device) -> DataTensors {
    let n_train = cfg.train_limit.unwrap_or(usize::MAX).min(data.train.len());
    let (train_idx, val_idx) = split_indices(n_train, cfg.val_size, cfg.seed);
    let (ti, tl) = gather(&data.train, &train_idx);
    let (vi, vl) = gather(&data.train, &val_idx);
    let n_test = cfg.test_limit.unwrap_or(usize::MAX).min(data.test.len());
    DataTensors {
        train: examples(&ti, &tl, device),
        val: examples(&vi, &vl, device),
        test: examples(&data.test.images[..n_test * PIXELS], &data.test.labels[..n_test], device),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_seeded_disjoint_and_complete() {
        let (a, b) = split_indices(1000, 100, 7);
        let (a2, b2) = split_indices(1000, 100, 7);
        assert_eq!((&a, &b), (&a2, &b2));
        assert_eq!((a.len(), b.len()), (900, 100));
        let mut all: Vec<usize> = a.iter().chain(b.iter()).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        let (_, b3) = split_indices(1000, 100, 8);
        assert_ne!(b, b3);
    }

    #[test]
    fn normalise_matches_formula() {
        let px = [0u8, 255, 128, 64].repeat(PIXELS / 4);
        let t = normalise(&px, Device::Cpu);
        assert_eq!(t.size(), vec![1, 1, 28, 28]);
        let v: Vec<f32> = t.flatten(0, -1).narrow(0, 0, 4).try_into().unwrap();
        let want = [0.0, 1.0, 128.0 / 255.0, 64.0 / 255.0].map(|p: f64| ((p - MEAN) / STD) as f32);
        for (a, b) in v.iter().zip(want.iter()) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}
