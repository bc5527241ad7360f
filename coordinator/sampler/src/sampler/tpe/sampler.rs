//! The TPE sampler itself: split the history into "below" (good) and "above"
//! (bad) groups the way Optuna does (complete trials by value, then pruned trials
//! by (last step, last value), running trials always above under constant liar),
//! fit a Parzen estimator to each, draw `n_ei_candidates` points from "below" and
//! keep the one maximising `log l(x) - log g(x)`.
//!
//! Parameters whose distribution is the same in every finished trial form the
//! multivariate group (Optuna's intersection search space); the others (e.g. a
//! parameter that appears halfway through a study) are sampled one at a time
//! with univariate TPE, as Optuna's `sample_independent` does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::parzen::{ParzenEstimator, ParzenParams};
use crate::error::SampleError;
use crate::rng::{trial_rng, Rng};
use crate::sampler::{sample_random_param, Sampler};
use crate::space::{Distribution, SearchSpace};
use crate::trial::{Direction, FrozenTrial, TrialState};

/// TPE options; `Default` gives Optuna 5.0's defaults (with seed 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TpeConfig {
    /// Seed; suggestions are a pure function of (seed, trials, trial number, space).
    pub seed: u64,
    /// Random sampling until this many trials are complete or pruned.
    pub n_startup_trials: usize,
    /// Candidates drawn from l(x) to maximise l(x)/g(x).
    pub n_ei_candidates: usize,
    /// Sample jointly the parameters shared by all finished trials.
    pub multivariate: bool,
    /// Count running trials as bad ("above") observations.
    pub constant_liar: bool,
    /// Weight of the prior kernel.
    pub prior_weight: f64,
    /// Lower-bound kernel bandwidths by range / min(100, n_kernels + 1).
    pub consider_magic_clip: bool,
    /// Use the distance to the range ends for the outermost kernels' bandwidths.
    pub consider_endpoints: bool,
}

impl Default for TpeConfig {
    fn default() -> Self {
        TpeConfig {
            seed: 0,
            n_startup_trials: 10,
            n_ei_candidates: 24,
            multivariate: true,
            constant_liar: true,
            prior_weight: 1.0,
            consider_magic_clip: true,
            consider_endpoints: false,
        }
    }
}

/// The TPE sampler.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct TpeSampler {
    pub config: TpeConfig,
}

/// Optuna's `default_gamma`: the size of the "below" group for `n` finished trials.
pub fn gamma(n: usize) -> usize {
    n.div_ceil(10).min(25)
}

fn pruned_score(t: &FrozenTrial, direction: Direction) -> (f64, f64) {
    match t.intermediate_values.iter().next_back() {
        Some((step, v)) => {
            let v = if v.is_nan() {
                f64::INFINITY
            } else if direction == Direction::Maximize {
                -v
            } else {
                *v
            };
            (-(*step as f64), v)
        }
        None => (1.0, 0.0),
    }
}

/// Splits trials into (below, above), each sorted by trial number, as Optuna's
/// `_split_trials` does for one objective without constraints. `trials` should
/// hold the complete, pruned and (with constant liar) running trials.
pub fn split_trials<'a>(
    trials: &[&'a FrozenTrial],
    n_below: usize,
    direction: Direction,
) -> (Vec<&'a FrozenTrial>, Vec<&'a FrozenTrial>) {
    let mut sorted: Vec<&FrozenTrial> = trials.to_vec();
    sorted.sort_by_key(|t| t.number);
    let mut complete: Vec<&FrozenTrial> = sorted.iter().copied().filter(|t| t.is_complete_with_value()).collect();
    let mut pruned: Vec<&FrozenTrial> = sorted.iter().copied().filter(|t| t.state == TrialState::Pruned).collect();
    let running = sorted.iter().copied().filter(|t| t.state == TrialState::Running);
    let key = |t: &FrozenTrial| t.value.unwrap_or(f64::NAN);
    match direction {
        Direction::Minimize => complete.sort_by(|a, b| key(a).total_cmp(&key(b))),
        Direction::Maximize => complete.sort_by(|a, b| key(b).total_cmp(&key(a))),
    }
    pruned.sort_by(|a, b| {
        let (sa, sb) = (pruned_score(a, direction), pruned_score(b, direction));
        sa.0.total_cmp(&sb.0).then(sa.1.total_cmp(&sb.1))
    });
    let nc = n_below.min(complete.len());
    let np = (n_below - nc).min(pruned.len());
    let mut below: Vec<&FrozenTrial> = complete[..nc].iter().chain(&pruned[..np]).copied().collect();
    let mut above: Vec<&FrozenTrial> =
        complete[nc..].iter().chain(&pruned[np..]).copied().chain(running).collect();
    below.sort_by_key(|t| t.number);
    above.sort_by_key(|t| t.number);
    (below, above)
}

/// A stored value usable as an observation of `d` (finite, inside the range).
fn usable(d: &Distribution, v: f64) -> bool {
    if !v.is_finite() {
        return false;
    }
    match d {
        Distribution::Float { low, high, .. } => v >= *low && v <= *high,
        Distribution::Int { low, high, .. } => v >= *low as f64 && v <= *high as f64,
        Distribution::Categorical { choices } => v >= 0.0 && (v as usize) < choices.len(),
    }
}

/// Looks up `sorted_names` (ascending) in a map with one merged walk over its
/// keys (cheaper than one tree search per name); `None` if any name is missing.
fn merge_lookup<'a, V>(map: &'a BTreeMap<String, V>, sorted_names: &[&str]) -> Option<Vec<&'a V>> {
    let mut it = map.iter();
    let mut out = Vec::with_capacity(sorted_names.len());
    'names: for name in sorted_names {
        for (k, v) in it.by_ref() {
            match k.as_str().cmp(name) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => {
                    out.push(v);
                    continue 'names;
                }
                std::cmp::Ordering::Greater => return None,
            }
        }
        return None;
    }
    Some(out)
}

/// A group of parameters, with its names sorted for [`merge_lookup`].
struct Group<'s> {
    params: Vec<(&'s str, &'s Distribution)>,
    /// Names in ascending order, and for each sorted position the index in `params`.
    sorted: Vec<&'s str>,
    position: Vec<usize>,
}

impl<'s> Group<'s> {
    fn new(params: Vec<(&'s str, &'s Distribution)>) -> Self {
        let mut idx: Vec<usize> = (0..params.len()).collect();
        idx.sort_by(|a, b| params[*a].0.cmp(params[*b].0));
        Group { sorted: idx.iter().map(|i| params[*i].0).collect(), position: idx, params }
    }

    /// Observation columns of the trials that have every parameter of the group.
    fn observations(&self, trials: &[&FrozenTrial]) -> Vec<Vec<f64>> {
        let mut cols = vec![Vec::with_capacity(trials.len()); self.params.len()];
        let mut row = vec![0.0; self.params.len()];
        'trials: for t in trials {
            let Some(vals) = merge_lookup(&t.params, &self.sorted) else { continue };
            for (v, pos) in vals.into_iter().zip(&self.position) {
                if !usable(self.params[*pos].1, *v) {
                    continue 'trials;
                }
                row[*pos] = *v;
            }
            for (c, v) in cols.iter_mut().zip(&row) {
                c.push(*v);
            }
        }
        cols
    }
}

impl TpeSampler {
    pub fn new(config: TpeConfig) -> Self {
        TpeSampler { config }
    }

    /// Default configuration with a seed.
    pub fn with_seed(seed: u64) -> Self {
        TpeSampler { config: TpeConfig { seed, ..TpeConfig::default() } }
    }

    fn parzen_params(&self) -> ParzenParams {
        ParzenParams {
            prior_weight: self.config.prior_weight.max(0.0),
            consider_magic_clip: self.config.consider_magic_clip,
            consider_endpoints: self.config.consider_endpoints,
        }
    }

    /// One TPE draw for a group of parameters.
    fn sample_group(
        &self,
        group: &Group<'_>,
        trials: &[&FrozenTrial],
        n_finished: usize,
        direction: Direction,
        rng: &mut Rng,
    ) -> Vec<f64> {
        let (below, above) = split_trials(trials, gamma(n_finished), direction);
        let dists: Vec<&Distribution> = group.params.iter().map(|(_, d)| *d).collect();
        let pp = self.parzen_params();
        let mpe_below = ParzenEstimator::new(&group.observations(&below), &dists, &pp);
        let mpe_above = ParzenEstimator::new(&group.observations(&above), &dists, &pp);
        let candidates = mpe_below.sample(rng, self.config.n_ei_candidates.max(1));
        let lb = mpe_below.log_pdf(&candidates);
        let la = mpe_above.log_pdf(&candidates);
        let mut best = 0;
        let mut best_val = f64::NEG_INFINITY;
        for (i, (b, a)) in lb.iter().zip(&la).enumerate() {
            let acq = b - a;
            if acq > best_val {
                best_val = acq;
                best = i;
            }
        }
        candidates.into_iter().nth(best).unwrap_or_default()
    }
}

impl Sampler for TpeSampler {
    fn sample(
        &self,
        space: &SearchSpace,
        trials: &[FrozenTrial],
        direction: Direction,
        trial_number: u64,
    ) -> Result<BTreeMap<String, f64>, SampleError> {
        let cfg = &self.config;
        let mut rng = trial_rng(cfg.seed, trial_number, 3);
        let others: Vec<&FrozenTrial> = trials.iter().filter(|t| t.number != trial_number).collect();
        let finished: Vec<&FrozenTrial> = others
            .iter()
            .copied()
            .filter(|t| t.is_complete_with_value() || t.state == TrialState::Pruned)
            .collect();
        let considered: Vec<&FrozenTrial> = others
            .iter()
            .copied()
            .filter(|t| {
                t.is_complete_with_value()
                    || t.state == TrialState::Pruned
                    || (cfg.constant_liar && t.state == TrialState::Running)
            })
            .collect();
        let n_finished = finished.len();
        let startup = n_finished < cfg.n_startup_trials;
        let mut out: BTreeMap<String, f64> = BTreeMap::new();

        if cfg.multivariate && !startup && !finished.is_empty() {
            // Optuna's intersection search space: parameters with the same distribution
            // in every finished trial (checked with one merged walk per trial).
            let mut keep: Vec<bool> = space.params().map(|(_, d)| !d.is_single()).collect();
            let all = Group::new(space.params().collect());
            for t in &finished {
                let mut it = t.distributions.iter().peekable();
                for (name, pos) in all.sorted.iter().zip(&all.position) {
                    while it.next_if(|(k, _)| k.as_str() < *name).is_some() {}
                    let same = match it.peek() {
                        // (a trial without the value itself is skipped when observations are gathered)
                        Some((k, d)) if k.as_str() == *name => **d == *all.params[*pos].1,
                        _ => false,
                    };
                    if !same {
                        keep[*pos] = false;
                    }
                }
            }
            let group = Group::new(space.params().zip(&keep).filter(|(_, k)| **k).map(|(p, _)| p).collect());
            if !group.params.is_empty() {
                let values = self.sample_group(&group, &considered, n_finished, direction, &mut rng);
                for ((n, _), v) in group.params.iter().zip(values) {
                    out.insert(n.to_string(), v);
                }
            }
        }
        for (name, d) in space.params() {
            if out.contains_key(name) {
                continue;
            }
            let v = if d.is_single() {
                d.single_value()
            } else if startup {
                sample_random_param(d, &mut rng)
            } else {
                self.sample_group(&Group::new(vec![(name, d)]), &considered, n_finished, direction, &mut rng)
                    .first()
                    .copied()
                    .unwrap_or(f64::NAN)
            };
            out.insert(name.to_string(), v);
        }
        // Never hand out NaN or a value outside the space, whatever the history.
        for (name, d) in space.params() {
            let bad = out.get(name).is_none_or(|v| !v.is_finite() || !usable(d, *v));
            if bad {
                out.insert(name.to_string(), sample_random_param(d, &mut rng));
            }
        }
        Ok(out)
    }
}
