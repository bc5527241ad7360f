//! The training configuration: every field that tuning may vary, with the
//! seed project's defaults and the rules that reject bad values.
//!
//! The same struct travels from `mnistctl train` flags, from a tuning trial's
//! parameters (by name, see [`TrainConfig::set_param`]) and over gRPC as JSON.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// SGD with momentum (the default, as in the seed).
    #[default]
    Sgd,
    /// Adam.
    Adam,
}

impl FromStr for Optimizer {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(Optimizer::Sgd),
            "adam" => Ok(Optimizer::Adam),
            other => Err(ConfigError::new("optimizer", format!("unknown optimizer {other:?}; use sgd or adam"))),
        }
    }
}

impl fmt::Display for Optimizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Optimizer::Sgd => "sgd",
            Optimizer::Adam => "adam",
        })
    }
}

/// How the learning rate changes over the epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// Cosine annealing from the learning rate towards 0, one step per epoch
    /// (PyTorch's `CosineAnnealingLR(T_max=epochs)`): epoch `e` (from 0)
    /// trains at `lr · (1 + cos(π·e/epochs)) / 2`. The default: the seed's
    /// recipe plus this reaches 99% test accuracy in 5 epochs.
    #[default]
    Cosine,
    /// The same learning rate every epoch (the seed's `main.py`).
    Constant,
}

impl LrSchedule {
    /// The learning rate of epoch `epoch` (1-based) out of `epochs`.
    pub fn rate(self, base: f64, epoch: i64, epochs: i64) -> f64 {
        match self {
            LrSchedule::Constant => base,
            LrSchedule::Cosine => {
                let e = (epoch - 1).max(0) as f64;
                base * 0.5 * (1.0 + (std::f64::consts::PI * e / epochs.max(1) as f64).cos())
            }
        }
    }
}

impl FromStr for LrSchedule {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cosine" => Ok(LrSchedule::Cosine),
            "constant" => Ok(LrSchedule::Constant),
            other => Err(ConfigError::new("lr_schedule", format!("unknown schedule {other:?}; use cosine or constant"))),
        }
    }
}

impl fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LrSchedule::Cosine => "cosine",
            LrSchedule::Constant => "constant",
        })
    }
}

/// A rejected configuration value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct ConfigError {
    /// The field (flag or parameter name).
    pub field: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl ConfigError {
    /// A new error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Everything one training run needs besides the data and the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Output channels of the first conv layer.
    pub conv1_channels: i64,
    /// Output channels of the second conv layer.
    pub conv2_channels: i64,
    /// Width of the hidden fully connected layer.
    pub fc_width: i64,
    /// Dropout after the conv block.
    pub dropout_conv: f64,
    /// Dropout after the hidden fully connected layer.
    pub dropout_fc: f64,
    /// Learning rate.
    pub learning_rate: f64,
    /// SGD momentum (ignored by Adam).
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// The optimiser.
    pub optimizer: Optimizer,
    /// How the learning rate changes over the epochs.
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Training mini-batch size.
    pub batch_size: i64,
    /// Number of epochs.
    pub epochs: i64,
    /// Seed for initialisation, the validation split, shuffling and dropout.
    pub seed: u64,
    /// Images held out of the training set for validation.
    pub val_size: usize,
    /// Use only the first N training images (before the split); for quick runs.
    pub train_limit: Option<usize>,
    /// Use only the first N test images; for quick runs.
    pub test_limit: Option<usize>,
    /// Batch size for evaluation passes.
    pub eval_batch_size: i64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            conv1_channels: 32,
            conv2_channels: 64,
            fc_width: 128,
            dropout_conv: 0.25,
            dropout_fc: 0.5,
            learning_rate: 0.01,
            momentum: 0.9,
            weight_decay: 0.0,
            optimizer: Optimizer::Sgd,
            lr_schedule: LrSchedule::Cosine,
            batch_size: 64,
            epochs: 5,
            seed: 42,
            val_size: 5000,
            train_limit: None,
            test_limit: None,
            eval_batch_size: 1000,
        }
    }
}

fn finite_in(field: &str, v: f64, lo: f64, hi: f64, lo_open: bool, hi_open: bool) -> Result<(), ConfigError> {
    let ok = v.is_finite()
        && (if lo_open { v > lo } else { v >= lo })
        && (if hi_open { v < hi } else { v <= hi });
    if ok {
        Ok(())
    } else {
        let l = if lo_open { "(" } else { "[" };
        let h = if hi_open { ")" } else { "]" };
        Err(ConfigError::new(field, format!("{v} is outside {l}{lo}, {hi}{h}")))
    }
}

fn int_in(field: &str, v: i64, lo: i64, hi: i64) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(ConfigError::new(field, format!("{v} is outside [{lo}, {hi}]")))
    }
}

impl TrainConfig {
    /// Check every field; the first problem is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        int_in("conv1_channels", self.conv1_channels, 1, 1024)?;
        int_in("conv2_channels", self.conv2_channels, 1, 1024)?;
        int_in("fc_width", self.fc_width, 1, 16384)?;
        finite_in("dropout_conv", self.dropout_conv, 0.0, 1.0, false, true)?;
        finite_in("dropout_fc", self.dropout_fc, 0.0, 1.0, false, true)?;
        finite_in("learning_rate", self.learning_rate, 0.0, 10.0, true, false)?;
        finite_in("momentum", self.momentum, 0.0, 1.0, false, true)?;
        finite_in("weight_decay", self.weight_decay, 0.0, 1.0, false, false)?;
        int_in("batch_size", self.batch_size, 1, 65536)?;
        int_in("epochs", self.epochs, 1, 10_000)?;
        int_in("eval_batch_size", self.eval_batch_size, 1, 65536)?;
        if self.train_limit == Some(0) {
            return Err(ConfigError::new("train_limit", "must be at least 1"));
        }
        if self.test_limit == Some(0) {
            return Err(ConfigError::new("test_limit", "must be at least 1"));
        }
        if self.val_size == 0 {
            return Err(ConfigError::new(
                "val_size",
                "must be at least 1: val_loss and val_accuracy (what tuning and pruning usually read) are measured on these held-out images; use e.g. 5000, or a tenth of train_limit",
            ));
        }
        let train_n = self.train_limit.unwrap_or(60_000).min(60_000);
        if self.val_size >= train_n {
            return Err(ConfigError::new(
                "val_size",
                if train_n >= 2 {
                    format!(
                        "{} leaves no training images out of {train_n}; hold out fewer for validation (val_size, e.g. {}) or train on more (train_limit)",
                        self.val_size,
                        default_val_size(Some(train_n))
                    )
                } else {
                    format!("{} leaves no training images out of {train_n}; train on at least 2 images (train_limit)", self.val_size)
                },
            ));
        }
        Ok(())
    }

    /// Set one field by its name from a tuning parameter value.
    ///
    /// Integer fields accept whole numbers only; `optimizer` takes a string.
    pub fn set_param(&mut self, name: &str, value: &ParamValue) -> Result<(), ConfigError> {
        let as_f = || value.as_f64().ok_or_else(|| ConfigError::new(name, format!("expected a number, got {value}")));
        let as_i = || -> Result<i64, ConfigError> {
            let f = as_f()?;
            if f.fract() != 0.0 || !f.is_finite() {
                return Err(ConfigError::new(name, format!("expected a whole number, got {f}")));
            }
            // `as` saturates: 1e30 would silently become i64::MAX.
            if f.abs() >= i64::MAX as f64 {
                return Err(ConfigError::new(name, format!("{f} is too large for a whole number")));
            }
            Ok(f as i64)
        };
        match name {
            "conv1_channels" => self.conv1_channels = as_i()?,
            "conv2_channels" => self.conv2_channels = as_i()?,
            "fc_width" => self.fc_width = as_i()?,
            "dropout_conv" => self.dropout_conv = as_f()?,
            "dropout_fc" => self.dropout_fc = as_f()?,
            "learning_rate" | "lr" => self.learning_rate = as_f()?,
            "momentum" => self.momentum = as_f()?,
            "weight_decay" => self.weight_decay = as_f()?,
            "batch_size" => self.batch_size = as_i()?,
            "epochs" => self.epochs = as_i()?,
            "seed" => {
                let seed = as_i()?;
                self.seed = u64::try_from(seed)
                    .map_err(|_| ConfigError::new(name, format!("expected a whole number of at least 0, got {seed}; use a search range with low >= 0")))?;
            }
            "lr_schedule" => match value {
                ParamValue::Str(s) => self.lr_schedule = s.parse()?,
                other => return Err(ConfigError::new(name, format!("expected \"cosine\" or \"constant\", got {other}"))),
            },
            "optimizer" => match value {
                ParamValue::Str(s) => self.optimizer = s.parse()?,
                other => return Err(ConfigError::new(name, format!("expected \"sgd\" or \"adam\", got {other}"))),
            },
            other => {
                return Err(ConfigError::new(
                    other,
                    format!("not a training parameter; known: {}", Self::PARAM_NAMES.join(", ")),
                ))
            }
        }
        Ok(())
    }

    /// Fields of the configuration that are the same for every trial of a
    /// study (the data it sees), so not tunable.
    pub const SETTING_NAMES: &'static [&'static str] = &["val_size", "train_limit", "test_limit", "eval_batch_size"];

    /// Why `name`, a search-space parameter that is not one of
    /// [`TrainConfig::PARAM_NAMES`], looks like a mistake: a setting that is
    /// not tunable, or a tunable name mistyped (other case, `-` for `_`, or
    /// one letter off in a name of 6 letters or more). `None` for a name
    /// unlike any (a generic objective's own parameter).
    pub fn suspicious_param_name(name: &str) -> Option<String> {
        if Self::PARAM_NAMES.contains(&name) {
            return None;
        }
        let norm = name.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        if Self::SETTING_NAMES.contains(&norm.as_str()) {
            return Some(format!("`{name}` is a setting of the whole study, not tuned per trial: set it once, in the study's base configuration"));
        }
        let close = Self::PARAM_NAMES.iter().find(|p| **p == norm).or_else(|| {
            (norm.chars().count() >= 6).then(|| Self::PARAM_NAMES.iter().filter(|p| p.len() >= 6).find(|p| edit_distance(&norm, p) <= 1)).flatten()
        })?;
        Some(format!(
            "`{name}` is not a training parameter; did you mean `{close}`? (a parameter of your own needs a name further from the training ones: {})",
            Self::PARAM_NAMES.join(", ")
        ))
    }

    /// Names accepted by [`TrainConfig::set_param`].
    pub const PARAM_NAMES: &'static [&'static str] = &[
        "conv1_channels",
        "conv2_channels",
        "fc_width",
        "dropout_conv",
        "dropout_fc",
        "learning_rate",
        "momentum",
        "weight_decay",
        "batch_size",
        "epochs",
        "seed",
        "optimizer",
        "lr_schedule",
        "lr",
    ];
}

/// The validation hold-out when none is given: 5,000 images (the seed's),
/// or a tenth of `train_limit` when that is smaller, so a quick run on a
/// few thousand images keeps most of them for training.
pub fn default_val_size(train_limit: Option<usize>) -> usize {
    let full = TrainConfig::default().val_size;
    train_limit.map_or(full, |n| (n / 10).clamp(1, full))
}

/// Adds [`default_val_size`] to a base configuration given as JSON fields
/// that sets `train_limit` but not `val_size`.
pub fn fill_default_val_size(fields: &mut serde_json::Map<String, serde_json::Value>) {
    if fields.contains_key("val_size") {
        return;
    }
    if let Some(n) = fields.get("train_limit").and_then(serde_json::Value::as_u64) {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        fields.insert("val_size".into(), serde_json::json!(default_val_size(Some(n))));
    }
}

/// Levenshtein distance (insertions, deletions, substitutions) by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = (up + 1).min(row[j] + 1).min(diag + usize::from(ca != *cb));
            diag = up;
        }
    }
    row[b.len()]
}

/// A parameter value as tuning produces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// A number (float or int).
    Num(f64),
    /// A boolean choice.
    Bool(bool),
    /// A string choice.
    Str(String),
}

impl ParamValue {
    /// The numeric value, if any.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Num(v) => Some(*v),
            _ => None,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Num(v) => write!(f, "{v}"),
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Str(s) => write!(f, "{s:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        TrainConfig::default().validate().unwrap();
    }

    #[test]
    fn rejects_bad_values_with_field_names() {
        let mut c = TrainConfig { learning_rate: -0.1, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().field, "learning_rate");
        c = TrainConfig { batch_size: 0, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().field, "batch_size");
        c = TrainConfig { dropout_fc: 1.0, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().field, "dropout_fc");
        c = TrainConfig { learning_rate: f64::NAN, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().field, "learning_rate");
        c = TrainConfig { train_limit: Some(100), val_size: 100, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().field, "val_size");
    }

    #[test]
    fn val_size_zero_is_refused() {
        let e = TrainConfig { val_size: 0, ..Default::default() }.validate().unwrap_err();
        assert_eq!(e.field, "val_size");
        assert!(e.to_string().contains("at least 1"), "{e}");
        TrainConfig { train_limit: Some(2), val_size: 1, ..Default::default() }.validate().unwrap();
    }

    #[test]
    fn set_param_by_name() {
        let mut c = TrainConfig::default();
        c.set_param("learning_rate", &ParamValue::Num(0.5)).unwrap();
        c.set_param("fc_width", &ParamValue::Num(256.0)).unwrap();
        c.set_param("optimizer", &ParamValue::Str("adam".into())).unwrap();
        assert_eq!((c.learning_rate, c.fc_width, c.optimizer), (0.5, 256, Optimizer::Adam));
        assert!(c.set_param("fc_width", &ParamValue::Num(2.5)).is_err());
        assert!(c.set_param("nonsense", &ParamValue::Num(1.0)).is_err());
        assert!(c.set_param("optimizer", &ParamValue::Str("rmsprop".into())).is_err());
    }

    #[test]
    fn mistyped_and_untunable_parameter_names_are_caught() {
        for (name, hint) in [
            ("learnin_rate", "did you mean `learning_rate`"),
            ("Learning_Rate", "did you mean `learning_rate`"),
            ("batch-size", "did you mean `batch_size`"),
            ("momentun", "did you mean `momentum`"),
            ("SEED", "did you mean `seed`"),
            ("train_limit", "set it once, in the study's base configuration"),
            ("VAL_SIZE", "set it once"),
        ] {
            let why = TrainConfig::suspicious_param_name(name).unwrap_or_else(|| panic!("{name} passed"));
            assert!(why.contains(hint), "{name}: {why}");
        }
        // Names of a generic objective, some close to training names.
        for name in ["learning_rate", "lr", "x", "units", "layer_count", "dropout", "my_param", "step", "spec", "speed", "moment", "dropout_1"] {
            assert_eq!(TrainConfig::suspicious_param_name(name), None, "{name}");
        }
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("épée", "epee"), 2);
    }

    #[test]
    fn negative_or_huge_seed_is_refused() {
        let mut c = TrainConfig::default();
        let e = c.set_param("seed", &ParamValue::Num(-3.0)).unwrap_err();
        assert_eq!(e.field, "seed");
        assert!(e.message.contains("at least 0") && e.message.contains("-3"), "{e}");
        assert_eq!(c.seed, 42, "a refused value leaves the seed alone");
        assert!(c.set_param("seed", &ParamValue::Num(1e30)).is_err());
        c.set_param("seed", &ParamValue::Num(0.0)).unwrap();
        c.set_param("seed", &ParamValue::Num(123.0)).unwrap();
        assert_eq!(c.seed, 123);
    }

    #[test]
    fn cosine_schedule_matches_pytorch() {
        // torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5), stepped per epoch.
        let want = [0.01, 0.009045084971874737, 0.006545084971874737, 0.003454915028125263, 0.0009549150281252633];
        for (i, w) in want.iter().enumerate() {
            assert!((LrSchedule::Cosine.rate(0.01, i as i64 + 1, 5) - w).abs() < 1e-15, "epoch {}", i + 1);
        }
        assert_eq!(LrSchedule::Constant.rate(0.01, 4, 5), 0.01);
        assert_eq!("constant".parse::<LrSchedule>().unwrap(), LrSchedule::Constant);
        assert!("step".parse::<LrSchedule>().is_err());
        let mut c = TrainConfig::default();
        c.set_param("lr_schedule", &ParamValue::Str("constant".into())).unwrap();
        assert_eq!(c.lr_schedule, LrSchedule::Constant);
        let old: TrainConfig = serde_json::from_str(&serde_json::to_string(&TrainConfig::default()).unwrap().replace(",\"lr_schedule\":\"cosine\"", "")).unwrap();
        assert_eq!(old.lr_schedule, LrSchedule::Cosine, "configs stored before the field existed still load");
    }
}
