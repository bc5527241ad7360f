//! The [`Sampler`] trait and its implementations: random, grid and TPE, plus the
//! helper that serves enqueued (fixed) parameters before any sampling.
//!
//! A sampler is a pure function of `(configuration, space, trials, direction,
//! trial_number)`: it keeps no state between calls, so the coordinator may restart
//! at any time and get the same suggestions.

mod fixed;
mod grid;
mod random;
pub mod tpe;

use std::collections::BTreeMap;

pub use fixed::{first_waiting_trial, suggest};
pub use grid::GridSampler;
pub use random::{sample_random_param, RandomSampler};
pub use tpe::{TpeConfig, TpeSampler};

use crate::error::SampleError;
use crate::space::SearchSpace;
use crate::trial::{Direction, FrozenTrial};

/// What a sampler may keep between the suggestions of one study so that it need
/// not redo the same work each time (TPE's dense [`tpe::TpeHistory`], a memo
/// of Gaussian masses and log-CDFs, and the multivariate group's "above" and
/// "below" estimators, [`tpe::KeptAbove`]).
/// It is a memo only: a suggestion made with a cache is the one made without.
/// Keep one per study and always pass that study's trials with it.
#[derive(Debug, Clone, Default)]
pub struct SamplerCache {
    tpe: Option<TpeCache>,
    /// The grid sampler's enumerated grid.
    pub(crate) grid: Option<grid::GridCache>,
}

/// What TPE keeps per study.
#[derive(Debug, Clone)]
pub(crate) struct TpeCache {
    pub hist: tpe::TpeHistory,
    pub memo: tpe::parzen::MassMemo,
    pub kept: tpe::KeptAbove,
    pub split: tpe::KeptSplit,
}

/// The most slots the Gaussian-mass memo of a study grows to (16,384 × 32
/// bytes; it starts at 1,024 and doubles only as it fills).
const MASS_MEMO_SLOTS: usize = 16_384;

impl SamplerCache {
    /// What TPE keeps, created empty on first use.
    pub(crate) fn tpe_parts(&mut self) -> &mut TpeCache {
        self.tpe.get_or_insert_with(|| TpeCache {
            hist: tpe::TpeHistory::new(),
            memo: tpe::parzen::MassMemo::with_slots(MASS_MEMO_SLOTS),
            kept: tpe::KeptAbove::default(),
            split: tpe::KeptSplit::default(),
        })
    }
}

/// Checks every distribution of a space the way Optuna accepts it (single-valued
/// ranges allowed), so that no sampler works on NaN or inverted bounds.
pub fn check_space(space: &SearchSpace) -> Result<(), SampleError> {
    for (name, d) in space.params() {
        d.check(name, true)?;
    }
    Ok(())
}

/// Suggests parameters for a new trial.
pub trait Sampler: Send + Sync {
    /// Parameters (internal repr) for a new trial `trial_number`, given all trials so
    /// far in the study (any state; the trial being sampled may be among them and is
    /// ignored). Returns a value for every parameter of `space`.
    fn sample(
        &self,
        space: &SearchSpace,
        trials: &[FrozenTrial],
        direction: Direction,
        trial_number: u64,
    ) -> Result<BTreeMap<String, f64>, SampleError>;

    /// [`Sampler::sample`] with a per-study memo; the result is the same. Samplers
    /// that keep nothing between calls need not override it.
    fn sample_with(
        &self,
        _cache: &mut SamplerCache,
        space: &SearchSpace,
        trials: &[FrozenTrial],
        direction: Direction,
        trial_number: u64,
    ) -> Result<BTreeMap<String, f64>, SampleError> {
        self.sample(space, trials, direction, trial_number)
    }

    /// True when the sampler has nothing left to suggest and the study should stop
    /// (the grid sampler once every grid point has finished; never for the others).
    fn is_exhausted(&self, _space: &SearchSpace, _trials: &[FrozenTrial]) -> bool {
        false
    }
}
