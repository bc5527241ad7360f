//! The [`Pruner`] trait and Optuna's pruners: none, median / percentile,
//! successive halving (ASHA) and Hyperband.
//!
//! Every decision is a function of the trial's own intermediate values, the
//! whole study at the time of the call, and the little a pruner keeps from one
//! decision to the next, made explicit here instead of hidden in the pruner:
//!
//! - the rung values successive halving records on a trial when the trial
//!   completes a rung ([`FrozenTrial::rungs`], Optuna's `completed_rung_{r}`
//!   trial system attributes), which the caller stores from each
//!   [`Decision`]; a trial competes at a rung only if it recorded it, so a
//!   trial pruned at a low rung does not count at the higher rungs its report
//!   also passed;
//! - the "auto" resource estimates ([`PrunerState`]), fixed at the first
//!   decision that can make them, as Optuna's pruner objects keep them.
//!
//! Reports are keyed by step, so they may arrive in any order: a trial's
//! position is its largest reported step, as Optuna's `last_step`.

mod hyperband;
mod nop;
mod percentile;
mod successive_halving;

pub use hyperband::HyperbandPruner;
pub use nop::NopPruner;
pub use percentile::{MedianPruner, PercentilePruner};
pub use successive_halving::SuccessiveHalvingPruner;

use crate::trial::{Direction, FrozenTrial};

/// The prefix of Optuna's rung keys (`completed_rung_{rung}`).
pub const RUNG_KEY_PREFIX: &str = "completed_rung_";

/// Optuna's name for the trial system attribute holding the value a trial
/// recorded at `rung`.
pub fn rung_key(rung: u32) -> String {
    format!("{RUNG_KEY_PREFIX}{rung}")
}

/// The rung of an Optuna `completed_rung_{rung}` system attribute key; `None`
/// for other keys.
pub fn parse_rung_key(key: &str) -> Option<u32> {
    let digits = key.strip_prefix(RUNG_KEY_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A pruner's decision on one report, and what the caller must store before
/// the next decision of the study.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Whether the trial should stop now.
    pub prune: bool,
    /// Rung values the trial recorded in this decision, to add to its
    /// [`FrozenTrial::rungs`] (and to store as Optuna's `completed_rung_{rung}`
    /// trial system attributes). Empty for pruners other than successive
    /// halving and Hyperband.
    pub rungs: Vec<(u32, f64)>,
}

impl Decision {
    /// Keep the trial, recording nothing.
    pub fn keep() -> Self {
        Decision::default()
    }

    /// `prune`, recording nothing.
    pub fn of(prune: bool) -> Self {
        Decision {
            prune,
            rungs: Vec::new(),
        }
    }
}

/// What a study's pruner keeps between decisions: the "auto" resource
/// estimates, made at the first decision that can make them and then fixed
/// (later, longer trials do not move the rungs or regroup the brackets), as
/// Optuna's pruner object keeps them for the life of its process. A caller
/// that outlives processes (the coordinator) stores it with the study.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrunerState {
    /// Successive halving's estimated `min_resource`.
    pub min_resource: Option<u64>,
    /// Hyperband's estimated `max_resource`.
    pub max_resource: Option<u64>,
}

/// Decides whether a running trial should stop now.
pub trait Pruner: Send + Sync {
    /// The decision on `trial`, the running trial after its latest report.
    /// `all_trials` is the whole study (it may include `trial` itself, which
    /// is then ignored); `state` is this study's [`PrunerState`], updated in
    /// place. The caller stores [`Decision::rungs`] on the trial.
    fn decide(
        &self,
        trial: &FrozenTrial,
        all_trials: &[FrozenTrial],
        direction: Direction,
        state: &mut PrunerState,
    ) -> Decision;

    /// [`Pruner::decide`] with a fresh [`PrunerState`], dropping what the
    /// decision records: exact for the pruners that keep nothing (none,
    /// median, percentile); a study run with successive halving or Hyperband
    /// needs `decide` and the stored rung values.
    fn should_prune(
        &self,
        trial: &FrozenTrial,
        all_trials: &[FrozenTrial],
        direction: Direction,
    ) -> bool {
        self.decide(trial, all_trials, direction, &mut PrunerState::default())
            .prune
    }
}
