//! Enqueued trials: Optuna's `enqueue_trial` creates a WAITING trial whose fixed
//! parameters are served before any sampling.
//!
//! The coordinator's `ask` should (1) take [`first_waiting_trial`]; if there is
//! one, turn that trial RUNNING and (2) call [`suggest`] with its parameters as
//! `fixed`: fixed values are kept, any parameter they leave out is sampled.

use std::collections::BTreeMap;

use super::{Sampler, SamplerCache};
use crate::error::{SampleError, SpaceError};
use crate::space::SearchSpace;
use crate::trial::{Direction, FrozenTrial, TrialState};

/// The WAITING trial with the lowest number (the next one to serve), if any.
pub fn first_waiting_trial(trials: &[FrozenTrial]) -> Option<&FrozenTrial> {
    trials
        .iter()
        .filter(|t| t.state == TrialState::Waiting)
        .min_by_key(|t| t.number)
}

/// Samples a trial, keeping the `fixed` internal values (Optuna's `fixed_params`).
/// A fixed value that is not valid for the distribution (NaN, or non-positive on a
/// log scale) is an error that names the parameter; one outside the range is kept,
/// as Optuna keeps it (with a warning there). `cache` is the study's
/// [`SamplerCache`] (see [`Sampler::sample_with`]).
pub fn suggest(
    sampler: &dyn Sampler,
    cache: &mut SamplerCache,
    space: &SearchSpace,
    trials: &[FrozenTrial],
    direction: Direction,
    trial_number: u64,
    fixed: Option<&BTreeMap<String, f64>>,
) -> Result<BTreeMap<String, f64>, SampleError> {
    let fixed = match fixed {
        Some(f) if !f.is_empty() => f,
        _ => return sampler.sample_with(cache, space, trials, direction, trial_number),
    };
    for (name, v) in fixed {
        if let Some(d) = space.get(name) {
            let bad_log = matches!(
                d,
                crate::space::Distribution::Float { log: true, .. }
                    | crate::space::Distribution::Int { log: true, .. }
            ) && *v <= 0.0;
            let bad_cat =
                matches!(d, crate::space::Distribution::Categorical { .. }) && !d.contains(*v);
            if !v.is_finite() || bad_log || bad_cat {
                return Err(SpaceError::InvalidValue {
                    value: v.to_string(),
                    distribution: d.to_optuna_json(),
                    reason: format!("the enqueued value for parameter `{name}` is not valid"),
                }
                .into());
            }
        }
    }
    let all_fixed = space.params().all(|(n, _)| fixed.contains_key(n));
    let mut out = if all_fixed {
        BTreeMap::new()
    } else {
        sampler.sample_with(cache, space, trials, direction, trial_number)?
    };
    for (name, _) in space.params() {
        if let Some(v) = fixed.get(name) {
            out.insert(name.to_string(), *v);
        }
    }
    Ok(out)
}
