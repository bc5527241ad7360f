//! Asynchronous successive halving (Optuna's `SuccessiveHalvingPruner`, ASHA).
//!
//! Rung `r` is reached at step `min_resource * reduction_factor^(min_early_stopping_rate + r)`.
//! When a report reaches the trial's next rung, the trial records its value
//! there ([`FrozenTrial::rungs`]) and competes with every trial that recorded
//! that rung before; it is promoted when its value is within the best
//! `1/reduction_factor` of them (for the first `reduction_factor - 1`
//! competitors: when it is the best so far), and then tries the next rung with
//! the same value. The first rung it is not promoted at prunes it, so the rungs
//! above are not recorded (even where the report's step passed them).

use serde::{Deserialize, Serialize};

use super::{Decision, Pruner, PrunerState};
use crate::trial::{Direction, FrozenTrial, TrialState};

/// Asynchronous successive halving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SuccessiveHalvingPruner {
    /// Steps before the first rung; `None` = Optuna's "auto": the largest last step
    /// of the complete trials divided by 100 (at least 1), no pruning before one completes;
    /// estimated once, then kept in the study's [`PrunerState`].
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

/// The trial's next rung: the number of rungs it recorded, counted from 0
/// without gaps (Optuna's `_get_current_rung`).
fn current_rung(t: &FrozenTrial) -> u32 {
    let mut rung = 0;
    while t.rungs.contains_key(&rung) {
        rung += 1;
    }
    rung
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
    pub(crate) fn decide_among(
        &self,
        trial: &FrozenTrial,
        others: &[&FrozenTrial],
        min_resource: u64,
        direction: Direction,
    ) -> Decision {
        let Some(step) = trial.last_step() else {
            return Decision::keep();
        };
        let value = trial
            .intermediate_values
            .get(&step)
            .copied()
            .unwrap_or(f64::NAN);
        let eta = self.reduction_factor.max(2);
        let rate = self.min_early_stopping_rate;
        let mut rung = current_rung(trial);
        let mut out = Decision::keep();
        // Steps saturate at u64::MAX, so past 64 rungs nothing is reachable.
        while rung < 64 {
            if step < rung_step(min_resource, eta, rate, rung) {
                return out;
            }
            if value.is_nan() {
                out.prune = true;
                return out;
            }
            out.rungs.push((rung, value));
            let mut competing: Vec<f64> = others
                .iter()
                .filter(|t| t.number != trial.number)
                .filter_map(|t| t.rungs.get(&rung).copied())
                .filter(|v| !v.is_nan()) // Optuna never records a NaN rung value
                .collect();
            competing.push(value);
            if (competing.len() as u64) <= self.bootstrap_count {
                out.prune = true;
                return out;
            }
            let idx = (competing.len() / eta as usize).max(1) - 1;
            competing.sort_by(f64::total_cmp);
            let promotable = match direction {
                Direction::Maximize => value >= competing[competing.len() - 1 - idx],
                Direction::Minimize => value <= competing[idx],
            };
            if !promotable {
                out.prune = true;
                return out;
            }
            rung += 1;
        }
        out
    }
}

impl Pruner for SuccessiveHalvingPruner {
    fn decide(
        &self,
        trial: &FrozenTrial,
        all: &[FrozenTrial],
        direction: Direction,
        state: &mut PrunerState,
    ) -> Decision {
        let min_resource = match (self.min_resource, state.min_resource) {
            (Some(m), _) => m.max(1),
            (None, Some(m)) => m,
            (None, None) => match estimate_min_resource(all.iter()) {
                Some(m) => {
                    state.min_resource = Some(m);
                    m
                }
                None => return Decision::keep(),
            },
        };
        let others: Vec<&FrozenTrial> = all.iter().filter(|t| t.number != trial.number).collect();
        self.decide_among(trial, &others, min_resource, direction)
    }
}
