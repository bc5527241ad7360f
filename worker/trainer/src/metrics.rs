//! Classification metrics computed on the host from a confusion matrix:
//! accuracy, per-class precision, recall and F1, and their macro averages.

use mnist_common::mnist::CLASSES;
use serde::{Deserialize, Serialize};

/// A 10×10 confusion matrix: `m[true][predicted]`.
pub type Confusion = [[u64; CLASSES]; CLASSES];

/// Precision, recall and F1 for one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// The digit.
    pub class: u8,
    /// TP / (TP + FP); 0 when nothing was predicted as this class.
    pub precision: f64,
    /// TP / (TP + FN); 0 when the class has no examples.
    pub recall: f64,
    /// Harmonic mean of precision and recall; 0 when both are 0.
    pub f1: f64,
    /// Number of true examples of this class.
    pub support: u64,
}

/// Test-set results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestMetrics {
    /// Accuracy in percent.
    pub accuracy: f64,
    /// Mean negative log-likelihood.
    pub loss: f64,
    /// Per-class metrics, digits 0..=9.
    pub per_class: Vec<ClassMetrics>,
    /// Unweighted mean of the per-class F1.
    pub macro_f1: f64,
    /// `confusion[true][predicted]`.
    pub confusion: Confusion,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Per-class metrics from a confusion matrix.
pub fn per_class(m: &Confusion) -> Vec<ClassMetrics> {
    (0..CLASSES)
        .map(|c| {
            let tp = m[c][c];
            let support: u64 = m[c].iter().sum();
            let predicted: u64 = (0..CLASSES).map(|r| m[r][c]).sum();
            let precision = ratio(tp, predicted);
            let recall = ratio(tp, support);
            let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
            ClassMetrics { class: c as u8, precision, recall, f1, support }
        })
        .collect()
}

/// Accuracy in percent from a confusion matrix.
pub fn accuracy(m: &Confusion) -> f64 {
    let total: u64 = m.iter().flatten().sum();
    let correct: u64 = (0..CLASSES).map(|c| m[c][c]).sum();
    100.0 * ratio(correct, total)
}

/// Build a confusion matrix from flat `true * 10 + predicted` counts.
pub fn confusion_from_counts(counts: &[i64]) -> Confusion {
    let mut m = [[0u64; CLASSES]; CLASSES];
    for (i, &c) in counts.iter().enumerate().take(CLASSES * CLASSES) {
        m[i / CLASSES][i % CLASSES] = c.max(0) as u64;
    }
    m
}

/// Assemble [`TestMetrics`].
pub fn test_metrics(confusion: Confusion, loss: f64) -> TestMetrics {
    let per_class = per_class(&confusion);
    let macro_f1 = per_class.iter().map(|c| c.f1).sum::<f64>() / CLASSES as f64;
    TestMetrics { accuracy: accuracy(&confusion), loss, per_class, macro_f1, confusion }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_from_a_known_matrix() {
        let mut m = [[0u64; 10]; 10];
        m[0][0] = 8;
        m[0][1] = 2;
        m[1][1] = 5;
        m[1][0] = 0;
        m[2][1] = 5;
        let pc = per_class(&m);
        assert_eq!(pc[0].support, 10);
        assert!((pc[0].precision - 1.0).abs() < 1e-12);
        assert!((pc[0].recall - 0.8).abs() < 1e-12);
        assert!((pc[1].precision - 5.0 / 12.0).abs() < 1e-12);
        assert!((pc[1].recall - 1.0).abs() < 1e-12);
        assert_eq!(pc[2].f1, 0.0);
        assert_eq!(pc[3], ClassMetrics { class: 3, precision: 0.0, recall: 0.0, f1: 0.0, support: 0 });
        assert!((accuracy(&m) - 100.0 * 13.0 / 20.0).abs() < 1e-12);
    }
}
