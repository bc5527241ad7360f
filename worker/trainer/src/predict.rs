//! Inference with an exported TorchScript model: from raw 28×28 pixels, from
//! test-set indices or from PNG files.
//!
//! PNG files are converted to 8-bit grey, resized to 28×28 when needed, and
//! inverted when they are dark digits on a light background (MNIST digits are
//! white on black).

use crate::data::normalise;
use crate::train::TrainError;
use image::imageops::FilterType;
use mnist_common::mnist::{CLASSES, COLS, PIXELS, ROWS};
use serde::Serialize;
use std::path::{Path, PathBuf};
use tch::{CModule, Device, Kind, Tensor};

/// One prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The most likely digit.
    pub digit: u8,
    /// Its probability.
    pub probability: f64,
    /// All ten probabilities.
    pub probabilities: [f64; CLASSES],
}

/// A loaded TorchScript model.
#[derive(Debug)]
pub struct Predictor {
    module: CModule,
    device: Device,
    path: PathBuf,
}

impl Predictor {
    /// Load `path` (a TorchScript file written by `mnistctl train`) onto `device`.
    pub fn load(path: &Path, device: Device) -> Result<Predictor, TrainError> {
        if !path.is_file() {
            return Err(TrainError::Artifact {
                path: path.display().to_string(),
                message: "model file not found; train one with `mnistctl train` or pass --model".into(),
            });
        }
        let module = CModule::load_on_device(path, device).map_err(|e| TrainError::Artifact {
            path: path.display().to_string(),
            message: format!("not a TorchScript model this program can load: {e}"),
        })?;
        Ok(Predictor { module, device, path: path.to_path_buf() })
    }

    /// Predict raw images (`n × 784` bytes, 0 = black).
    pub fn predict(&self, pixels: &[u8]) -> Result<Vec<Prediction>, TrainError> {
        if pixels.is_empty() || !pixels.len().is_multiple_of(PIXELS) {
            return Err(TrainError::Torch(format!("expected a multiple of {PIXELS} pixels, got {}", pixels.len())));
        }
        let x = normalise(pixels, self.device);
        let _guard = tch::no_grad_guard();
        let out = self.module.forward_ts(&[x])?;
        // One row of ten log-probabilities per image; anything else is not
        // a digit classifier (copying its rows into ten probabilities would
        // panic or pair the wrong numbers with the wrong images).
        let n = (pixels.len() / PIXELS) as i64;
        let shape = out.size();
        if shape != [n, CLASSES as i64] {
            return Err(TrainError::Artifact {
                path: self.path.display().to_string(),
                message: format!(
                    "the model returned an output of shape {shape:?} for {n} image(s), expected [{n}, {CLASSES}] \
                     (ten log-probabilities per image); use a model written by `mnistctl train` or by a tuning trial"
                ),
            });
        }
        let probs = out.exp().to_kind(Kind::Double).to_device(Device::Cpu);
        let flat: Vec<f64> = Vec::<f64>::try_from(&probs.flatten(0, -1))?;
        Ok(flat
            .chunks(CLASSES)
            .map(|p| {
                let mut probabilities = [0.0; CLASSES];
                probabilities.copy_from_slice(p);
                let (digit, probability) = p
                    .iter()
                    .enumerate()
                    .fold((0usize, f64::MIN), |best, (i, &v)| if v > best.1 { (i, v) } else { best });
                Prediction { digit: digit as u8, probability, probabilities }
            })
            .collect())
    }

    /// Run the module on an already normalised batch; returns log-probabilities.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TrainError> {
        let _guard = tch::no_grad_guard();
        Ok(self.module.forward_ts(&[x.to_device(self.device)])?)
    }
}

/// Load a PNG as 784 grey pixels in MNIST's convention (white digit on black).
pub fn load_png(path: &Path) -> Result<Vec<u8>, TrainError> {
    let err = |m: String| TrainError::Artifact { path: path.display().to_string(), message: m };
    let img = image::open(path).map_err(|e| err(format!("cannot read the image: {e}")))?;
    let grey = if img.color().has_alpha() { flatten_alpha(&img.to_luma_alpha8()) } else { img.to_luma8() };
    let grey = if grey.dimensions() == (COLS as u32, ROWS as u32) {
        grey
    } else {
        image::imageops::resize(&grey, COLS as u32, ROWS as u32, FilterType::Triangle)
    };
    let mut px = grey.into_raw();
    let mean = px.iter().map(|&p| p as f64).sum::<f64>() / px.len().max(1) as f64;
    if mean > 127.0 {
        px.iter_mut().for_each(|p| *p = 255 - *p);
    }
    Ok(px)
}

/// Grey pixels of an image with transparency, as it looks on a background
/// that sets its strokes off: a drawing canvas exports dark ink on a
/// transparent background (whose pixels are often black too, so dropping
/// the alpha gave a black square), or light ink; dark ink goes on white,
/// light ink on black. When most pixels are opaque they are the paper, not
/// the ink, and transparent margins take the paper's shade.
fn flatten_alpha(img: &image::GrayAlphaImage) -> image::GrayImage {
    let mut histogram = [0usize; 256];
    for p in img.pixels() {
        if p.0[1] >= 128 {
            histogram[p.0[0] as usize] += 1;
        }
    }
    let n: usize = histogram.iter().sum();
    // The middle shade of the opaque pixels: the paper's when they are
    // mostly paper, the ink's when they are strokes.
    let mut seen = 0;
    let median = histogram.iter().position(|c| {
        seen += c;
        2 * seen > n
    });
    let total = (img.width() as usize * img.height() as usize).max(1);
    let background = match median {
        Some(m) if 2 * n > total => m as f64,
        Some(m) if m < 128 => 255.0,
        _ => 0.0,
    };
    image::GrayImage::from_fn(img.width(), img.height(), |x, y| {
        let [l, a] = img.get_pixel(x, y).0;
        let a = a as f64 / 255.0;
        image::Luma([(a * l as f64 + (1.0 - a) * background).round().clamp(0.0, 255.0) as u8])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 28x28 stroke (columns 12..16, rows 4..24) drawn by `ink`.
    fn stroke(x: u32, y: u32) -> bool {
        (12..16).contains(&x) && (4..24).contains(&y)
    }

    #[test]
    fn transparent_backgrounds_read_like_opaque_ones() {
        let dir = tempfile::tempdir().unwrap();
        // What a drawing canvas exports: black ink, fully transparent (and
        // black) elsewhere.
        let canvas = image::RgbaImage::from_fn(28, 28, |x, y| image::Rgba(if stroke(x, y) { [0, 0, 0, 255] } else { [0, 0, 0, 0] }));
        // White ink on transparent.
        let light = image::RgbaImage::from_fn(28, 28, |x, y| image::Rgba(if stroke(x, y) { [255, 255, 255, 255] } else { [0, 0, 0, 0] }));
        // White paper with transparent (white) margins, black ink.
        let margins = image::RgbaImage::from_fn(28, 28, |x, y| {
            let margin = !(2..26).contains(&x);
            image::Rgba(if stroke(x, y) { [0, 0, 0, 255] } else if margin { [255, 255, 255, 0] } else { [255, 255, 255, 255] })
        });
        // The same digit, opaque: black on white.
        let paper = image::RgbImage::from_fn(28, 28, |x, y| image::Rgb(if stroke(x, y) { [0, 0, 0] } else { [255, 255, 255] }));
        let want: Vec<u8> = (0..28u32).flat_map(|y| (0..28u32).map(move |x| if stroke(x, y) { 255 } else { 0 })).collect();
        for (name, save) in [
            ("canvas.png", Box::new(|p: &Path| canvas.save(p)) as Box<dyn Fn(&Path) -> image::ImageResult<()>>),
            ("light.png", Box::new(|p: &Path| light.save(p))),
            ("margins.png", Box::new(|p: &Path| margins.save(p))),
            ("paper.png", Box::new(|p: &Path| paper.save(p))),
        ] {
            let p = dir.path().join(name);
            save(&p).unwrap();
            assert_eq!(load_png(&p).unwrap(), want, "{name}: a white stroke on black, as in MNIST");
        }
    }
}
