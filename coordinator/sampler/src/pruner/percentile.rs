//! Percentile and median pruning (Optuna's `PercentilePruner` / `MedianPruner`):
//! prune when the trial's best intermediate value so far is worse than the given
//! percentile of the completed trials' values at the trial's current step.

use serde::{Deserialize, Serialize};

use super::{Decision, Pruner, PrunerState};
use crate::trial::{Direction, FrozenTrial, TrialState};

/// Keeps the top `percentile` percent of trials at each step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PercentilePruner {
    /// In `[0, 100]`; 25 keeps the best quarter.
    pub percentile: f64,
    /// No pruning until this many trials are complete.
    pub n_startup_trials: u64,
    /// No pruning before this step.
    pub n_warmup_steps: u64,
    /// Check once per this many steps (offset by the warm-up).
    pub interval_steps: u64,
    /// Minimum number of completed trials with a value at the step.
    pub n_min_trials: u64,
}

impl Default for PercentilePruner {
    fn default() -> Self {
        PercentilePruner {
            percentile: 25.0,
            n_startup_trials: 5,
            n_warmup_steps: 0,
            interval_steps: 1,
            n_min_trials: 1,
        }
    }
}

/// Optuna's `MedianPruner`: the 50th percentile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MedianPruner {
    pub n_startup_trials: u64,
    pub n_warmup_steps: u64,
    pub interval_steps: u64,
    pub n_min_trials: u64,
}

impl Default for MedianPruner {
    fn default() -> Self {
        MedianPruner {
            n_startup_trials: 5,
            n_warmup_steps: 0,
            interval_steps: 1,
            n_min_trials: 1,
        }
    }
}

impl MedianPruner {
    fn as_percentile(&self) -> PercentilePruner {
        PercentilePruner {
            percentile: 50.0,
            n_startup_trials: self.n_startup_trials,
            n_warmup_steps: self.n_warmup_steps,
            interval_steps: self.interval_steps,
            n_min_trials: self.n_min_trials,
        }
    }
}

impl Pruner for MedianPruner {
    fn decide(
        &self,
        trial: &FrozenTrial,
        all: &[FrozenTrial],
        direction: Direction,
        _state: &mut PrunerState,
    ) -> Decision {
        Decision::of(self.as_percentile().prunes(trial, all, direction))
    }
}

/// numpy's `nanpercentile` with linear interpolation; NaN when no value is left.
pub(crate) fn nan_percentile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = (q / 100.0).clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    let t = rank - lo as f64;
    let (a, b) = (v[lo], v[hi]);
    if a == b || t == 0.0 {
        return a;
    }
    if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    }
}

/// Optuna's `_is_first_in_interval_step`.
fn is_first_in_interval_step(step: u64, trial: &FrozenTrial, warmup: u64, interval: u64) -> bool {
    let interval = interval.max(1);
    let nearest_lower = (step - warmup) / interval * interval + warmup;
    let second_last = trial
        .intermediate_values
        .keys()
        .copied()
        .filter(|s| *s != step)
        .max();
    match second_last {
        None => true,
        Some(s) => s < nearest_lower,
    }
}

impl Pruner for PercentilePruner {
    fn decide(
        &self,
        trial: &FrozenTrial,
        all: &[FrozenTrial],
        direction: Direction,
        _state: &mut PrunerState,
    ) -> Decision {
        Decision::of(self.prunes(trial, all, direction))
    }
}

impl PercentilePruner {
    /// The rule itself (it keeps nothing between decisions).
    fn prunes(&self, trial: &FrozenTrial, all: &[FrozenTrial], direction: Direction) -> bool {
        let completed: Vec<&FrozenTrial> = all
            .iter()
            .filter(|t| t.state == TrialState::Complete && t.number != trial.number)
            .collect();
        if completed.is_empty() || (completed.len() as u64) < self.n_startup_trials {
            return false;
        }
        let Some(step) = trial.last_step() else {
            return false;
        };
        if step < self.n_warmup_steps {
            return false;
        }
        if !is_first_in_interval_step(step, trial, self.n_warmup_steps, self.interval_steps) {
            return false;
        }
        let own: Vec<f64> = trial
            .intermediate_values
            .values()
            .copied()
            .filter(|v| !v.is_nan())
            .collect();
        if own.is_empty() {
            return true; // every reported value is NaN
        }
        let best = match direction {
            Direction::Minimize => own.iter().copied().fold(f64::INFINITY, f64::min),
            Direction::Maximize => own.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        };
        let at_step: Vec<f64> = completed
            .iter()
            .filter_map(|t| t.intermediate_values.get(&step).copied())
            .collect();
        if (at_step.len() as u64) < self.n_min_trials.max(1) {
            return false;
        }
        let q = match direction {
            Direction::Minimize => self.percentile,
            Direction::Maximize => 100.0 - self.percentile,
        };
        let p = nan_percentile(&at_step, q);
        if p.is_nan() {
            return false;
        }
        match direction {
            Direction::Minimize => best > p,
            Direction::Maximize => best < p,
        }
    }
}
