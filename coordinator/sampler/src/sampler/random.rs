//! Uniform random sampling, with Optuna's handling of log scale, steps and
//! integers (sample in the transformed range widened by half a step, then round).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Sampler;
use crate::error::SampleError;
use crate::rng::{trial_rng, uniform, uniform01, Rng};
use crate::space::{Distribution, SearchSpace};
use crate::trial::{Direction, FrozenTrial};

/// Independent uniform sampling of every parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RandomSampler {
    pub seed: u64,
}

impl RandomSampler {
    pub fn new(seed: u64) -> Self {
        RandomSampler { seed }
    }
}

/// The largest float strictly below `x` (for finite, non-zero-crossing use).
fn next_below(x: f64) -> f64 {
    if x.is_nan() || x == f64::NEG_INFINITY {
        return x;
    }
    if x == 0.0 {
        return -f64::from_bits(1);
    }
    let bits = x.to_bits();
    if x > 0.0 {
        f64::from_bits(bits - 1)
    } else {
        f64::from_bits(bits + 1)
    }
}

/// Draws one internal value of `dist` uniformly, as Optuna's `RandomSampler` does.
pub fn sample_random_param(dist: &Distribution, rng: &mut Rng) -> f64 {
    if dist.is_single() {
        return dist.single_value();
    }
    match dist {
        Distribution::Float {
            low,
            high,
            log,
            step,
        } => {
            if *log {
                let x = uniform(rng, low.ln(), high.ln()).exp();
                x.clamp(*low, next_below(*high))
            } else if let Some(s) = step {
                let x = uniform(rng, low - s / 2.0, high + s / 2.0);
                (((x - low) / s).round_ties_even() * s + low).clamp(*low, *high)
            } else {
                uniform(rng, *low, *high).clamp(*low, next_below(*high))
            }
        }
        Distribution::Int {
            low,
            high,
            log,
            step,
        } => {
            let (lo, hi, st) = (*low as f64, *high as f64, *step as f64);
            if *log {
                let x = uniform(rng, (lo - 0.5).ln(), (hi + 0.5).ln()).exp();
                x.round_ties_even().clamp(lo, hi)
            } else {
                let x = uniform(rng, lo - st / 2.0, hi + st / 2.0);
                ((((x - lo) / st) + 0.5).floor() * st + lo).clamp(lo, hi)
            }
        }
        Distribution::Categorical { choices } => {
            let n = choices.len();
            ((uniform01(rng) * n as f64) as usize).min(n - 1) as f64
        }
    }
}

impl Sampler for RandomSampler {
    fn sample(
        &self,
        space: &SearchSpace,
        _trials: &[FrozenTrial],
        _direction: Direction,
        trial_number: u64,
    ) -> Result<BTreeMap<String, f64>, SampleError> {
        super::check_space(space)?;
        let mut rng = trial_rng(self.seed, trial_number, 1);
        Ok(space
            .params()
            .map(|(name, d)| (name.to_string(), sample_random_param(d, &mut rng)))
            .collect())
    }
}
