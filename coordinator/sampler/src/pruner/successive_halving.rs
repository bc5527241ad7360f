//! Asynchronous successive halving (Optuna's `SuccessiveHalvingPruner`, ASHA).
//!
//! Rung `r` is reached at step `min_resource * reduction_factor^(min_early_stopping_rate + r)`.
//! A trial reaching a rung competes with every trial that reached it before; it is
//! promoted when its value is within the best `1/reduction_factor` of them (for the
//! first `reduction_factor - 1` competitors: when it is the best so far).

use serde::{Deserialize, Serialize};

use super::Pruner;
use crate::trial::{Direction, FrozenTrial, TrialState};

/// Asynchronous successive halving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SuccessiveHalvingPruner {
    /// Steps before the first rung; `None` = Optuna's "auto": the largest last step
    /// of the complete trials divided by 100 (at least 1), no pruning before one completes.
    pub min_resource: Option<u64>,
    pub reduction_factor: u64,
    pub min_early_stopping_rate: u32,
    /// Prune unless at least this many other trials reached the rung.
    pub bootstrap_count: u64,
}

impl Default for SuccessiveHalvingPruner {
    fn default() -> Self {
        SuccessiveHalvingPruner {
            min_resource: None,
            reduction_factor: 4,
            min_early_stopping_rate: 0,
            bootstrap_count: 0,
        }
    }
}

/// Step at which rung `rung` is reached (saturating).
fn rung_step(min_resource: u64, eta: u64, rate: u32, rung: u32) -> u64 {
    let mut s = min_resource;
    for _ in 0..(rate.saturating_add(rung)) {
        s = s.saturating_mul(eta.max(2));
        if s == u64::MAX {
            break;
        }
    }
    s
}

/// The value a trial recorded at a rung: its value at the first reported step at
/// or after `threshold`, provided that step is `<= up_to`.
fn rung_value(t: &FrozenTrial, threshold: u64, up_to: u64) -> Option<f64> {
    t.intermediate_values
        .range(threshold..=up_to)
        .next()
        .map(|(_, v)| *v)
}

/// Optuna's auto `min_resource` estimate.
pub(crate) fn estimate_min_resource<'a>(
    trials: impl Iterator<Item = &'a FrozenTrial>,
) -> Option<u64> {
    trials
        .filter(|t| t.state == TrialState::Complete)
        .filter_map(FrozenTrial::last_step)
        .max()
        .map(|s| (s / 100).max(1))
}

impl SuccessiveHalvingPruner {
    /// The decision given the competing trials (already filtered, e.g. to one
    /// Hyperband bracket) and the min resource to use.
    pub(crate) fn decide(
        &self,
        trial: &FrozenTrial,
        others: &[&FrozenTrial],
        min_resource: u64,
        direction: Direction,
    ) -> bool {
        let Some(step) = trial.last_step() else {
            return false;
        };
        let value = trial
            .intermediate_values
            .get(&step)
            .copied()
            .unwrap_or(f64::NAN);
        let eta = self.reduction_factor.max(2);
        let rate = self.min_early_stopping_rate;
        // Rungs this trial passed at an earlier report.
        let prev = trial
            .intermediate_values
            .keys()
            .copied()
            .filter(|s| *s < step)
            .max();
        let mut rung: u32 = 0;
        if let Some(prev) = prev {
            while rung < 64 && rung_step(min_resource, eta, rate, rung) <= prev {
                rung += 1;
            }
        }
        loop {
            let threshold = rung_step(min_resource, eta, rate, rung);
            if step < threshold {
                return false;
            }
            if value.is_nan() {
                return true;
            }
            let mut competing: Vec<f64> = others
                .iter()
                .filter(|t| t.number != trial.number)
                .filter_map(|t| rung_value(t, threshold, u64::MAX))
                .filter(|v| !v.is_nan()) // Optuna never records a NaN rung value
                .collect();
            competing.push(value);
            if (competing.len() as u64) <= self.bootstrap_count {
                return true;
            }
            let idx = (competing.len() / eta as usize).max(1) - 1;
            competing.sort_by(f64::total_cmp);
            let promotable = match direction {
                Direction::Maximize => value >= competing[competing.len() - 1 - idx],
                Direction::Minimize => value <= competing[idx],
            };
            if !promotable {
                return true;
            }
            rung += 1;
            if rung >= 64 {
                return false;
            }
        }
    }
}

impl Pruner for SuccessiveHalvingPruner {
    fn should_prune(&self, trial: &FrozenTrial, all: &[FrozenTrial], direction: Direction) -> bool {
        let min_resource = match self.min_resource {
            Some(m) => m.max(1),
            None => match estimate_min_resource(all.iter()) {
                Some(m) => m,
                None => return false,
            },
        };
        let others: Vec<&FrozenTrial> = all.iter().filter(|t| t.number != trial.number).collect();
        self.decide(trial, &others, min_resource, direction)
    }
}
