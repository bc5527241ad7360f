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
use crate::space::{Choice, Distribution, SearchSpace};
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

/// Indices (into `trials`, which must be in trial-number order) of the "below"
/// and "above" groups, each in trial-number order, as Optuna's `_split_trials`
/// splits them for one objective without constraints: the `n_below` best complete
/// trials, then the best pruned trials by (last step, last value) to fill up;
/// everything else (running trials included) is above. Ties keep trial order.
fn split_indices(
    trials: &[&FrozenTrial],
    n_below: usize,
    direction: Direction,
) -> (Vec<usize>, Vec<usize>) {
    let sign = if direction == Direction::Maximize {
        -1.0
    } else {
        1.0
    };
    let cmp = |a: &(f64, f64, usize), b: &(f64, f64, usize)| {
        a.0.partial_cmp(&b.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal))
            .then(a.2.cmp(&b.2))
    };
    let mut complete: Vec<(f64, f64, usize)> = Vec::with_capacity(trials.len());
    let mut pruned: Vec<(f64, f64, usize)> = Vec::new();
    for (i, t) in trials.iter().enumerate() {
        if t.is_complete_with_value() {
            complete.push((sign * t.value.unwrap_or(0.0), 0.0, i));
        } else if t.state == TrialState::Pruned {
            let (a, b) = pruned_score(t, direction);
            pruned.push((a, b, i));
        }
    }
    let mut is_below = vec![false; trials.len()];
    let mut take = |v: &mut Vec<(f64, f64, usize)>, k: usize| -> usize {
        let k = k.min(v.len());
        if k > 0 {
            // Only the k smallest are needed: a selection, not a full sort.
            if k < v.len() {
                v.select_nth_unstable_by(k - 1, cmp);
            }
            for e in &v[..k] {
                is_below[e.2] = true;
            }
        }
        k
    };
    let nc = take(&mut complete, n_below);
    take(&mut pruned, n_below - nc);
    let mut below = Vec::with_capacity(n_below.min(trials.len()));
    let mut above = Vec::with_capacity(trials.len());
    for (i, b) in is_below.iter().enumerate() {
        if *b {
            below.push(i);
        } else {
            above.push(i);
        }
    }
    (below, above)
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
    let (b, a) = split_indices(&sorted, n_below, direction);
    (
        b.iter().map(|i| sorted[*i]).collect(),
        a.iter().map(|i| sorted[*i]).collect(),
    )
}

/// Distribution equality, as `==` but cheaper on the common, equal case.
fn same_distribution(a: &Distribution, b: &Distribution) -> bool {
    match (a, b) {
        (Distribution::Categorical { choices: x }, Distribution::Categorical { choices: y }) => {
            x.len() == y.len()
                && x.iter().zip(y).all(|(p, q)| match (p, q) {
                    (Choice::Str(p), Choice::Str(q)) => {
                        cmp_bytes(p.as_bytes(), q.as_bytes()).is_eq()
                    }
                    _ => p.same(q),
                })
        }
        _ => a == b,
    }
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

/// Byte-wise string order, inlined: parameter names are short, and a libc
/// `memcmp` call per comparison costs more than the comparison itself.
/// Eight bytes at a time (big-endian words compare like the bytes they hold).
#[inline]
fn cmp_bytes(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let n = a.len().min(b.len());
    let (mut ca, mut cb) = (a[..n].chunks_exact(8), b[..n].chunks_exact(8));
    for (x, y) in (&mut ca).zip(&mut cb) {
        let (x, y) = (
            u64::from_be_bytes(x.try_into().unwrap_or([0; 8])),
            u64::from_be_bytes(y.try_into().unwrap_or([0; 8])),
        );
        if x != y {
            return x.cmp(&y);
        }
    }
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// Walks a map and the ascending `(position, name)` list together (one string
/// comparison per step), calling `found(position, value)` for each name present.
fn walk<V>(map: &BTreeMap<String, V>, sorted: &[(usize, &str)], mut found: impl FnMut(usize, &V)) {
    let mut it = map.iter();
    let mut cur = it.next();
    for (pos, name) in sorted {
        while let Some((k, v)) = cur {
            match cmp_bytes(k.as_bytes(), name.as_bytes()) {
                std::cmp::Ordering::Less => cur = it.next(),
                std::cmp::Ordering::Equal => {
                    found(*pos, v);
                    cur = it.next();
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
    }
}

/// The history read once: per considered trial (in trial-number order) the
/// internal value of every space parameter (NaN when missing or unusable).
struct Table<'a> {
    trials: Vec<&'a FrozenTrial>,
    /// Row-major `trials.len() × space.len()`, columns in space order.
    values: Vec<f64>,
    width: usize,
}

impl<'a> Table<'a> {
    fn new(
        trials: Vec<&'a FrozenTrial>,
        space: &[(&str, &Distribution)],
        sorted: &[(usize, &str)],
    ) -> Self {
        let width = space.len();
        let mut values = vec![f64::NAN; trials.len() * width];
        for (row, t) in values.chunks_mut(width.max(1)).zip(&trials) {
            // One merged walk over the trial's sorted parameter names.
            walk(&t.params, sorted, |pos, v| {
                if usable(space[pos].1, *v) {
                    row[pos] = *v;
                }
            });
        }
        Table {
            trials,
            values,
            width,
        }
    }

    /// Observation columns for `group` (space positions) from the rows `rows`,
    /// keeping only trials that have every parameter of the group.
    fn observations(&self, group: &[usize], rows: &[usize]) -> Vec<Vec<f64>> {
        let mut cols = vec![Vec::with_capacity(rows.len()); group.len()];
        for r in rows {
            let row = &self.values[r * self.width..(r + 1) * self.width];
            if group.iter().all(|g| !row[*g].is_nan()) {
                for (c, g) in cols.iter_mut().zip(group) {
                    c.push(row[*g]);
                }
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
        TpeSampler {
            config: TpeConfig {
                seed,
                ..TpeConfig::default()
            },
        }
    }

    fn parzen_params(&self) -> ParzenParams {
        ParzenParams {
            prior_weight: self.config.prior_weight.max(0.0),
            consider_magic_clip: self.config.consider_magic_clip,
            consider_endpoints: self.config.consider_endpoints,
        }
    }

    /// One TPE draw for a group of parameters (positions in `space`).
    fn sample_group(
        &self,
        space: &[(&str, &Distribution)],
        group: &[usize],
        table: &Table<'_>,
        split: &(Vec<usize>, Vec<usize>),
        rng: &mut Rng,
    ) -> Vec<f64> {
        let dists: Vec<&Distribution> = group.iter().map(|g| space[*g].1).collect();
        let pp = self.parzen_params();
        let mpe_below = ParzenEstimator::new(&table.observations(group, &split.0), &dists, &pp);
        let mpe_above = ParzenEstimator::new(&table.observations(group, &split.1), &dists, &pp);
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
        crate::sampler::check_space(space)?;
        let cfg = &self.config;
        let mut rng = trial_rng(cfg.seed, trial_number, 3);
        let params: Vec<(&str, &Distribution)> = space.params().collect();
        let mut sorted: Vec<(usize, &str)> = params
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (i, *n))
            .collect();
        sorted.sort_by(|a, b| a.1.cmp(b.1));

        // Complete, pruned and (constant liar) running trials, in trial-number order.
        let mut considered: Vec<&FrozenTrial> = Vec::with_capacity(trials.len());
        considered.extend(trials.iter().filter(|t| t.number != trial_number).filter(|t| {
            t.is_complete_with_value()
                || t.state == TrialState::Pruned
                || (cfg.constant_liar && t.state == TrialState::Running)
        }));
        if !considered.windows(2).all(|w| w[0].number <= w[1].number) {
            considered.sort_by_key(|t| t.number);
        }
        let n_finished = considered
            .iter()
            .filter(|t| t.state != TrialState::Running)
            .count();
        let startup = n_finished < cfg.n_startup_trials;
        let mut out: BTreeMap<String, f64> = BTreeMap::new();

        if !startup {
            // Optuna's intersection search space: parameters with the same
            // distribution in every finished trial (one merged walk per trial).
            let mut keep: Vec<bool> = params
                .iter()
                .map(|(_, d)| cfg.multivariate && !d.is_single())
                .collect();
            if cfg.multivariate {
                let mut seen = vec![false; params.len()];
                for t in considered.iter().filter(|t| t.state != TrialState::Running) {
                    seen.iter_mut().for_each(|x| *x = false);
                    walk(&t.distributions, &sorted, |pos, d| {
                        seen[pos] = true;
                        if keep[pos] && !same_distribution(d, params[pos].1) {
                            keep[pos] = false;
                        }
                    });
                    for (k, s) in keep.iter_mut().zip(&seen) {
                        *k &= *s;
                    }
                }
            }
            let table = Table::new(considered, &params, &sorted);
            let split = split_indices(&table.trials, gamma(n_finished), direction);
            let group: Vec<usize> = (0..params.len()).filter(|i| keep[*i]).collect();
            if !group.is_empty() {
                let values = self.sample_group(&params, &group, &table, &split, &mut rng);
                for (g, v) in group.iter().zip(values) {
                    out.insert(params[*g].0.to_string(), v);
                }
            }
            // The rest one at a time (univariate TPE), as Optuna's sample_independent.
            for (i, (name, d)) in params.iter().enumerate() {
                if keep[i] {
                    continue;
                }
                let v = if d.is_single() {
                    d.single_value()
                } else {
                    self.sample_group(&params, &[i], &table, &split, &mut rng)
                        .first()
                        .copied()
                        .unwrap_or(f64::NAN)
                };
                out.insert(name.to_string(), v);
            }
        } else {
            for (name, d) in &params {
                out.insert(name.to_string(), sample_random_param(d, &mut rng));
            }
        }
        // Never hand out NaN or a value outside the space, whatever the history.
        for (name, d) in &params {
            let bad = out
                .get(*name)
                .is_none_or(|v| !v.is_finite() || !usable(d, *v));
            if bad {
                out.insert(name.to_string(), sample_random_param(d, &mut rng));
            }
        }
        Ok(out)
    }
}
