//! Hyperband (Optuna's `HyperbandPruner`): trials are spread over brackets by a
//! CRC-32 hash of `"{study_name}_{trial_number}"`, and each bracket runs
//! successive halving with its own early-stopping rate among its own trials.
//! An "auto" `max_resource` is estimated at the first decision after a trial
//! completes and then kept (in the study's [`PrunerState`]), so the brackets do
//! not change under running trials.
//!
//! Samplers see the whole study, not the trial's bracket: Optuna 5.0's
//! `_BracketStudy` filters `get_trials` only, and its samplers read
//! `_get_trials`, which it does not override.

use serde::{Deserialize, Serialize};

use super::successive_halving::SuccessiveHalvingPruner;
use super::{Decision, Pruner, PrunerState};
use crate::trial::{Direction, FrozenTrial, TrialState};

/// Hyperband over successive-halving brackets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HyperbandPruner {
    pub min_resource: u64,
    /// `None` = "auto": the largest last step of the complete trials + 1 (no
    /// pruning until a trial completes), estimated once.
    pub max_resource: Option<u64>,
    pub reduction_factor: u64,
    pub bootstrap_count: u64,
    /// Study name: part of the bracket hash, as in Optuna.
    pub study_name: String,
}

impl Default for HyperbandPruner {
    fn default() -> Self {
        HyperbandPruner {
            min_resource: 1,
            max_resource: None,
            reduction_factor: 3,
            bootstrap_count: 0,
            study_name: String::new(),
        }
    }
}

/// CRC-32 (IEEE, as Python's `binascii.crc32`).
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for b in data {
        crc ^= *b as u32;
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

impl HyperbandPruner {
    /// The max resource: the configured one, or the study's estimate (made
    /// now if there is none yet and a trial has completed).
    fn max_resource(&self, all: &[FrozenTrial], state: &mut PrunerState) -> Option<u64> {
        if let Some(m) = self.max_resource.or(state.max_resource) {
            return Some(m);
        }
        let m = all
            .iter()
            .filter(|t| t.state == TrialState::Complete)
            .filter_map(FrozenTrial::last_step)
            .max()?
            .saturating_add(1);
        state.max_resource = Some(m);
        Some(m)
    }

    /// Trial-allocation budget of each bracket for a max resource.
    pub fn budgets(&self, max_resource: u64) -> Vec<u64> {
        let eta = self.reduction_factor.max(2) as f64;
        let ratio = max_resource as f64 / self.min_resource.max(1) as f64;
        let n = (ratio.ln() / eta.ln()).floor() + 1.0;
        if n.is_nan() || n < 1.0 {
            return Vec::new();
        }
        let n = n.min(64.0) as u32;
        (0..n)
            .map(|b| {
                let s = (n - 1 - b) as i32;
                (n as f64 * eta.powi(s) / (s + 1) as f64).ceil() as u64
            })
            .collect()
    }

    /// The bracket of a trial number (0 when Hyperband is not initialised yet).
    pub fn bracket_of(&self, budgets: &[u64], trial_number: u64) -> usize {
        let total: u64 = budgets.iter().fold(0u64, |a, b| a.saturating_add(*b));
        if total == 0 {
            return 0;
        }
        let h = crc32(format!("{}_{}", self.study_name, trial_number).as_bytes()) as u64;
        let mut n = h % total;
        for (b, budget) in budgets.iter().enumerate() {
            if n < *budget {
                return b;
            }
            n -= *budget;
        }
        budgets.len().saturating_sub(1)
    }
}

impl Pruner for HyperbandPruner {
    fn decide(
        &self,
        trial: &FrozenTrial,
        all: &[FrozenTrial],
        direction: Direction,
        state: &mut PrunerState,
    ) -> Decision {
        let Some(max_resource) = self.max_resource(all, state) else {
            return Decision::keep();
        };
        let budgets = self.budgets(max_resource);
        if budgets.is_empty() {
            return Decision::keep();
        }
        let bracket = self.bracket_of(&budgets, trial.number);
        let sh = SuccessiveHalvingPruner {
            min_resource: Some(self.min_resource.max(1)),
            reduction_factor: self.reduction_factor,
            min_early_stopping_rate: bracket as u32,
            bootstrap_count: self.bootstrap_count,
        };
        let same_bracket: Vec<&FrozenTrial> = all
            .iter()
            .filter(|t| t.number != trial.number && self.bracket_of(&budgets, t.number) == bracket)
            .collect();
        sh.decide_among(trial, &same_bracket, self.min_resource.max(1), direction)
    }
}
