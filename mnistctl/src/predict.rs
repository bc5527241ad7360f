//! `mnistctl predict`: classify test-set images (by index) or PNG files with
//! a trained TorchScript model, print each digit with its probability, and
//! write a grid visualisation.

use crate::train::DataArgs;
use anyhow::Context;
use mnist_common::plots::{self, GridItem};
use mnist_trainer::predict::{load_png, Predictor};
use mnist_trainer::DeviceSpec;
use std::path::PathBuf;

/// Predict digits with a trained model.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  mnistctl predict 0 1 2 3            # test-set images 0..3\n  mnistctl predict my_digit.png       # a PNG (any size; dark-on-light is inverted)\n  mnistctl predict --model runs/a/model.pt 7 42 --grid grid.png")]
pub struct PredictArgs {
    /// Test-set indices (0..9999) and/or PNG file paths.
    #[arg(required = true, value_name = "INDEX|PNG")]
    pub inputs: Vec<String>,
    /// The TorchScript model written by `mnistctl train`.
    #[arg(long, default_value = "models/model.pt")]
    pub model: PathBuf,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Where to write the visualisation (a grid of the inputs with their predictions).
    #[arg(long, default_value = "predictions.png")]
    pub grid: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
}

enum Input {
    Index(usize),
    Png(PathBuf),
}

pub fn run(args: PredictArgs) -> anyhow::Result<()> {
    let device = args.device.parse::<DeviceSpec>()?.resolve()?;
    let inputs: Vec<Input> = args
        .inputs
        .iter()
        .map(|s| match s.parse::<usize>() {
            Ok(i) => Input::Index(i),
            Err(_) => Input::Png(PathBuf::from(s)),
        })
        .collect();
    let predictor = Predictor::load(&args.model, device)?;
    let test = if inputs.iter().any(|i| matches!(i, Input::Index(_))) { Some(args.data.load_test()?) } else { None };
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut names = Vec::new();
    for input in &inputs {
        match (input, &test) {
            (Input::Index(i), Some(t)) => {
                if *i >= t.len() {
                    anyhow::bail!("test index {i} is out of range: the test set has {} images (0..{})", t.len(), t.len() - 1);
                }
                pixels.push(t.image(*i).to_vec());
                labels.push(Some(t.labels[*i]));
                names.push(format!("test[{i}]"));
            }
            (Input::Png(p), _) => {
                if p.extension().is_none_or(|e| !e.eq_ignore_ascii_case("png")) && !p.exists() {
                    anyhow::bail!("{:?} is neither a test-set index nor an existing PNG file", p.display().to_string());
                }
                pixels.push(load_png(p)?);
                labels.push(None);
                names.push(p.display().to_string());
            }
            (Input::Index(_), None) => unreachable!("test set is loaded when an index is given"),
        }
    }
    let flat: Vec<u8> = pixels.concat();
    let preds = predictor.predict(&flat)?;
    println!("{:<30} {:>5} {:>11} {:>5}", "input", "digit", "probability", "true");
    for ((name, p), label) in names.iter().zip(&preds).zip(&labels) {
        let t = label.map(|l| l.to_string()).unwrap_or_else(|| "-".into());
        println!("{:<30} {:>5} {:>10.2}% {:>5}", name, p.digit, 100.0 * p.probability, t);
    }
    let items: Vec<GridItem> = pixels
        .iter()
        .zip(&preds)
        .zip(&labels)
        .take(100)
        .map(|((px, p), l)| GridItem { pixels: px, label: *l, predicted: p.digit, probability: p.probability })
        .collect();
    plots::prediction_grid(&args.grid, &items).with_context(|| format!("writing {}", args.grid.display()))?;
    println!("wrote {}", args.grid.display());
    Ok(())
}
