//! The study's metric, read from the trainer's numbers: which epoch number
//! is reported as the intermediate value, which final number is the trial's
//! value, and the further metrics that go with each (all finite).

use std::collections::HashMap;

use mnist_common::metrics::EPOCH_METRICS;
use mnist_trainer::metrics::TestMetrics;
use mnist_trainer::EpochMetrics;

/// Metric names a study may use.
pub const METRICS: &[&str] =
    &["val_accuracy", "val_loss", "train_accuracy", "train_loss", "test_accuracy", "test_loss", "macro_f1"];

/// Where a study's metric comes from.
#[derive(Debug, Clone, Copy)]
pub struct Objective {
    final_metric: Final,
    epoch: fn(&EpochMetrics) -> f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Final {
    LastEpoch,
    TestAccuracy,
    TestLoss,
    MacroF1,
}

impl Objective {
    /// The objective for a metric name (case-insensitive). Test-set metrics
    /// report their validation counterpart after each epoch.
    pub fn parse(metric: &str) -> Result<Objective, String> {
        let (final_metric, epoch): (Final, fn(&EpochMetrics) -> f64) = match metric.trim().to_ascii_lowercase().as_str() {
            "" | "val_accuracy" | "accuracy" => (Final::LastEpoch, |m| m.val_accuracy),
            "val_loss" | "loss" => (Final::LastEpoch, |m| m.val_loss),
            "train_accuracy" => (Final::LastEpoch, |m| m.train_accuracy),
            "train_loss" => (Final::LastEpoch, |m| m.train_loss),
            "test_accuracy" => (Final::TestAccuracy, |m| m.val_accuracy),
            "test_loss" => (Final::TestLoss, |m| m.val_loss),
            "macro_f1" => (Final::MacroF1, |m| m.val_accuracy),
            other => return Err(format!("this worker cannot report the metric {other:?}; it knows {}", METRICS.join(", "))),
        };
        Ok(Objective { final_metric, epoch })
    }

    /// The intermediate value after an epoch.
    pub fn epoch_value(&self, m: &EpochMetrics) -> f64 {
        (self.epoch)(m)
    }

    /// The trial's final value: the last epoch's number or a test metric.
    pub fn final_value(&self, epochs: &[EpochMetrics], test: &TestMetrics) -> Option<f64> {
        match self.final_metric {
            Final::LastEpoch => epochs.last().map(|m| self.epoch_value(m)),
            Final::TestAccuracy => Some(test.accuracy),
            Final::TestLoss => Some(test.loss),
            Final::MacroF1 => Some(test.macro_f1),
        }
    }
}

fn finite(map: &mut HashMap<String, f64>, k: impl Into<String>, v: f64) {
    if v.is_finite() {
        map.insert(k.into(), v);
    }
}

/// The per-epoch metrics sent with a report.
pub fn epoch_metrics(m: &EpochMetrics) -> HashMap<String, f64> {
    let values = [m.train_loss, m.train_accuracy, m.val_loss, m.val_accuracy, m.learning_rate, m.epoch_seconds];
    let mut out = HashMap::new();
    for (name, v) in EPOCH_METRICS.iter().zip(values) {
        finite(&mut out, *name, v);
    }
    out
}

/// The final metrics sent with the completion: test accuracy, loss, macro
/// F1, per-class precision, recall and F1, and the last epoch's numbers.
pub fn final_metrics(epochs: &[EpochMetrics], test: &TestMetrics, total_seconds: f64) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    finite(&mut out, "test_accuracy", test.accuracy);
    finite(&mut out, "test_loss", test.loss);
    finite(&mut out, "macro_f1", test.macro_f1);
    for c in &test.per_class {
        finite(&mut out, format!("f1_class_{}", c.class), c.f1);
        finite(&mut out, format!("precision_class_{}", c.class), c.precision);
        finite(&mut out, format!("recall_class_{}", c.class), c.recall);
    }
    if let Some(last) = epochs.last() {
        for (k, v) in epoch_metrics(last) {
            if k != "epoch_seconds" && k != "learning_rate" {
                out.insert(k, v);
            }
        }
    }
    finite(&mut out, "epochs_run", epochs.len() as f64);
    finite(&mut out, "train_seconds", total_seconds);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(val: f64) -> EpochMetrics {
        EpochMetrics {
            epoch: 1,
            train_loss: 0.5,
            train_accuracy: 80.0,
            val_loss: f64::NAN,
            val_accuracy: val,
            learning_rate: 0.01,
            epoch_seconds: 1.0,
        }
    }

    fn test_metrics() -> TestMetrics {
        mnist_trainer::metrics::test_metrics([[1; 10]; 10], 0.3)
    }

    #[test]
    fn metric_names() {
        let o = Objective::parse("val_accuracy").unwrap();
        assert_eq!(o.epoch_value(&epoch(91.0)), 91.0);
        assert_eq!(o.final_value(&[epoch(90.0), epoch(92.0)], &test_metrics()), Some(92.0));
        let t = Objective::parse("test_loss").unwrap();
        assert_eq!(t.final_value(&[], &test_metrics()), Some(0.3));
        assert!(Objective::parse("bleu").unwrap_err().contains("val_accuracy"));
    }

    #[test]
    fn non_finite_metrics_are_left_out() {
        let m = epoch_metrics(&epoch(90.0));
        assert!(!m.contains_key("val_loss"));
        let f = final_metrics(&[epoch(90.0)], &test_metrics(), 2.0);
        for k in ["test_accuracy", "test_loss", "macro_f1", "f1_class_0", "f1_class_9", "val_accuracy", "epochs_run"] {
            assert!(f.contains_key(k), "{k} missing from {f:?}");
        }
    }
}
