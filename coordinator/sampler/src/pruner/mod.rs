//! The [`Pruner`] trait and Optuna's pruners: none, median / percentile,
//! successive halving (ASHA) and Hyperband.
//!
//! Every decision is a pure function of the trial's own intermediate values and
//! the intermediate values of all trials at the time of the call. Reports are
//! keyed by step, so they may arrive in any order: a trial's position is its
//! largest reported step, as Optuna's `last_step`. The rung values that Optuna's
//! successive halving stores as trial attributes are recomputed from the reports
//! (the value at the first reported step at or past each rung), which is what
//! Optuna records when `should_prune` is called after each report.

mod hyperband;
mod nop;
mod percentile;
mod successive_halving;

pub use hyperband::HyperbandPruner;
pub use nop::NopPruner;
pub use percentile::{MedianPruner, PercentilePruner};
pub use successive_halving::SuccessiveHalvingPruner;

use crate::trial::{Direction, FrozenTrial};

/// Decides whether a running trial should stop now.
pub trait Pruner: Send + Sync {
    /// `trial` is the running trial after its latest report; `all_trials` is the
    /// whole study (it may include `trial` itself, which is then ignored).
    fn should_prune(
        &self,
        trial: &FrozenTrial,
        all_trials: &[FrozenTrial],
        direction: Direction,
    ) -> bool;
}
