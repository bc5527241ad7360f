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

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::history::{usable, Class, Row, TpeHistory};
use super::kept::{AboveChange, KeptAbove};
use super::split::{KeptSplit, SplitView};
use super::parzen::{from_sort_key, MassMemo, ParzenEstimator, ParzenParams};
use super::score;
use crate::error::SampleError;
use crate::rng::{trial_rng, Rng};
use crate::sampler::{sample_random_param, Sampler, SamplerCache, TpeCache};
use crate::space::{Distribution, SearchSpace};
use crate::trial::{Direction, FrozenTrial};

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

/// Indices (into `rows`) of the "below" and "above" groups among the considered
/// rows `cons` (in trial-number order), each group in that order, as Optuna's
/// `_split_trials` splits them for one objective without constraints: the
/// `n_below` best complete trials, then the best pruned trials by (last step,
/// last value) to fill up; everything else (running trials included) is above.
/// Ties keep trial order.
pub(crate) fn split_rows(rows: &[Row], cons: &[usize], n_below: usize) -> (Vec<usize>, Vec<usize>) {
    // Keys are never NaN (see `Row::of`), so (key, position) is a total order
    // (-0 and +0 equal, as Optuna's sort sees them) and the `n_below` smallest are
    // one set whatever the method: kept here in two short sorted lists (complete,
    // pruned) in one pass, most rows rejected by one comparison with the list's
    // last entry.
    let less = |a: &(f64, f64, usize), b: &(f64, f64, usize)| {
        a.0 < b.0 || (a.0 == b.0 && (a.1 < b.1 || (a.1 == b.1 && a.2 < b.2)))
    };
    // Per class, the kept list and (once it is full) its last entry, which
    // most rows are rejected against.
    let mut complete: Vec<(f64, f64, usize)> = Vec::with_capacity(n_below + 1);
    let mut pruned: Vec<(f64, f64, usize)> = Vec::new();
    let none = (f64::NAN, f64::NAN, usize::MAX);
    let (mut c_last, mut p_last) = (none, none);
    for (j, r) in cons.iter().enumerate() {
        let row = &rows[*r];
        let (v, last) = match row.class {
            Class::Complete => (&mut complete, &mut c_last),
            Class::Pruned => (&mut pruned, &mut p_last),
            _ => continue,
        };
        let e = (row.key.0, row.key.1, j);
        if v.len() == n_below {
            // Full (or nothing to keep): only a better row gets in.
            if n_below == 0 || !less(&e, last) {
                continue;
            }
            v.pop();
        }
        let at = v.partition_point(|x| less(x, &e));
        v.insert(at, e);
        if v.len() == n_below {
            *last = v[n_below - 1];
        }
    }
    // The best complete trials, then the best pruned ones to fill up.
    let fill = n_below - complete.len().min(n_below);
    let mut picked: Vec<usize> = complete
        .iter()
        .chain(pruned.iter().take(fill))
        .map(|e| e.2)
        .collect();
    picked.sort_unstable();
    let mut below = Vec::with_capacity(picked.len());
    let mut above = Vec::with_capacity(cons.len() - picked.len());
    let mut from = 0;
    for j in picked {
        above.extend_from_slice(&cons[from..j]);
        below.push(cons[j]);
        from = j + 1;
    }
    above.extend_from_slice(&cons[from..]);
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
    let rows: Vec<Row> = sorted.iter().map(|t| Row::of(t, direction)).collect();
    let cons: Vec<usize> = (0..rows.len()).collect();
    let (b, a) = split_rows(&rows, &cons, n_below);
    (
        b.iter().map(|i| sorted[*i]).collect(),
        a.iter().map(|i| sorted[*i]).collect(),
    )
}

/// Observation columns for `group` (space positions) from the rows `rows`,
/// keeping only trials that have every parameter of the group, and the rows kept
/// (observation `k` is row `kept[k]`).
fn observations(hist: &TpeHistory, group: &[usize], rows: &[usize]) -> (Vec<Vec<f64>>, Vec<usize>) {
    let src: Vec<&[f64]> = group.iter().map(|g| hist.cols[*g].as_slice()).collect();
    let kept: Vec<usize> = rows
        .iter()
        .copied()
        .filter(|r| src.iter().all(|c| c.get(*r).is_some_and(|v| !v.is_nan())))
        .collect();
    let cols = src
        .iter()
        .map(|c| kept.iter().map(|r| c[*r]).collect())
        .collect();
    (cols, kept)
}

/// The split computed from every row: the finished observations counted,
/// the rows of the trial being sampled that are finished (left out), and the
/// "below" and "above" rows (empty during the startup trials).
pub(crate) struct FullSplit {
    pub n_finished: usize,
    pub excluded_finished: Vec<usize>,
    pub below: Vec<usize>,
    pub above: Vec<usize>,
}

/// Complete, pruned and (constant liar) running trials other than the one
/// being sampled, in trial-number order, split as Optuna splits them.
pub(crate) fn full_split(hist: &TpeHistory, trial_number: u64, cfg: &TpeConfig) -> FullSplit {
    let rows = &hist.rows;
    let mut cons: Vec<usize> = Vec::with_capacity(rows.len());
    let mut excluded_finished: Vec<usize> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        if !r.class.is_observed(cfg.constant_liar) {
            continue;
        }
        if r.number == trial_number {
            if r.class != Class::Running {
                excluded_finished.push(i);
            }
            continue;
        }
        cons.push(i);
    }
    if !hist.sorted {
        cons.sort_by_key(|i| rows[*i].number);
    }
    let n_finished = cons
        .iter()
        .filter(|i| rows[**i].class != Class::Running)
        .count();
    let (below, above) = if n_finished >= cfg.n_startup_trials {
        split_rows(rows, &cons, gamma(n_finished))
    } else {
        (Vec::new(), Vec::new())
    };
    FullSplit {
        n_finished,
        excluded_finished,
        below,
        above,
    }
}

/// The split a suggestion reads: the finished observations counted, the
/// rows of the trial being sampled that are finished (left out), "below" and
/// "above", and for the kept "above" estimator how "above" changed (`None`
/// without a kept split).
struct SplitParts<'a> {
    n_finished: usize,
    excluded_finished: &'a [usize],
    below: &'a [usize],
    above: &'a [usize],
    change: Option<AboveChange<'a>>,
}

impl<'a> SplitParts<'a> {
    /// A full split's parts; where it was handed to a kept split (`view`), a
    /// follower of "above" starts again from these rows.
    fn of_full(full: &'a FullSplit, view: Option<&SplitView<'_>>) -> Self {
        SplitParts {
            n_finished: full.n_finished,
            excluded_finished: &full.excluded_finished,
            below: &full.below,
            above: &full.above,
            change: view.map(|v| AboveChange { gen: v.gen, diff: None }),
        }
    }
}

/// Fewer observations than this are simply sorted by the estimator.
const PRESORT_MIN: usize = 64;

/// For each parameter of `group`, the stable argsort of the observations of rows
/// `kept` (as [`observations`] gives them) read from the history's kept order
/// instead of sorted afresh: the same `(value, index)` list, since the history's
/// order breaks ties by row and rows are in observation order when the history is
/// sorted by trial number. `None` where the estimator sorts itself.
fn presorted(hist: &TpeHistory, group: &[usize], kept: &[usize]) -> Vec<Option<Vec<(f64, u32)>>> {
    if !hist.sorted || kept.len() < PRESORT_MIN {
        return Vec::new();
    }
    let mut index_of = vec![u32::MAX; hist.rows.len()];
    for (k, r) in kept.iter().enumerate() {
        if let Some(slot) = index_of.get_mut(*r) {
            *slot = k as u32;
        }
    }
    group
        .iter()
        .map(|g| {
            if hist.order_len(*g) == 0 {
                return None;
            }
            let mut out = Vec::with_capacity(kept.len());
            for (key, row) in hist.order_of(*g) {
                let k = index_of.get(row as usize).copied().unwrap_or(u32::MAX);
                if k != u32::MAX {
                    out.push((from_sort_key(key), k));
                }
            }
            Some(out)
        })
        .collect()
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

    /// One TPE draw for a group of parameters (positions in the space); the
    /// "above" estimator kept in `kept` where given and where it applies.
    #[allow(clippy::too_many_arguments)]
    fn sample_group(
        &self,
        hist: &TpeHistory,
        group: &[usize],
        below: &[usize],
        above: &[usize],
        change: Option<AboveChange<'_>>,
        rng: &mut Rng,
        memo: &mut MassMemo,
        mut kept: Option<&mut KeptAbove>,
    ) -> Vec<f64> {
        let params = hist.params();
        let dists: Vec<&Distribution> = group.iter().map(|g| &params[*g].1).collect();
        let pp = self.parzen_params();
        let estimator = |rows: &[usize], memo: &mut MassMemo| {
            let (cols, observed) = observations(hist, group, rows);
            let sorted = presorted(hist, group, &observed);
            ParzenEstimator::new_sorted(&cols, &dists, &pp, memo, sorted)
        };
        // "Below" is kept too where "above" is (its rows are finished trials,
        // so it changes only when they do).
        let n_cand = self.config.n_ei_candidates.max(1);
        let mut candidates = kept.as_deref_mut().map(KeptAbove::take_candidates).unwrap_or_default();
        let lb = match kept.as_deref_mut() {
            Some(k) => {
                let (est, layout, scratch) = k.below(hist, group, below, &pp, || estimator(below, memo));
                est.sample_into(rng, n_cand, memo, &mut candidates);
                score::log_pdf(Cow::Borrowed(layout), &candidates, true, memo, scratch)
            }
            None => {
                let est = estimator(below, memo);
                est.sample_into(rng, n_cand, memo, &mut candidates);
                est.log_pdf_with(&candidates, memo)
            }
        };
        // The candidate maximising log l(x) - log g(x) (the first on ties);
        // "above" is scored in full only for candidates that can still win.
        let kept_layout = kept.as_deref_mut().and_then(|k| k.layout(hist, group, above, change, &pp, memo));
        let best = match kept_layout {
            Some((kern, scratch)) => score::best_acquisition(Cow::Borrowed(kern), &candidates, &lb, memo, scratch),
            None => estimator(above, memo).best_acquisition(&candidates, &lb, memo),
        };
        let point = candidates.get(best).cloned().unwrap_or_default();
        if let Some(k) = kept {
            k.keep_candidates(candidates);
        }
        point
    }

    /// Checks the space, syncs the cache's history with `trials` and samples
    /// from it; with the kept "above" estimator where `keep` (a cache kept
    /// across suggestions).
    fn sample_synced(
        &self,
        c: &mut TpeCache,
        keep: bool,
        space: &SearchSpace,
        trials: &[FrozenTrial],
        direction: Direction,
        trial_number: u64,
    ) -> Result<BTreeMap<String, f64>, SampleError> {
        crate::sampler::check_space(space)?;
        c.hist.sync(space, direction, trials);
        let kept = if keep {
            Some((&mut c.kept, &mut c.split))
        } else {
            None
        };
        Ok(self.sample_from(&c.hist, trials, trial_number, &mut c.memo, kept))
    }

    /// The suggestion from a history synced with `trials` (see [`TpeHistory`]).
    fn sample_from(
        &self,
        hist: &TpeHistory,
        trials: &[FrozenTrial],
        trial_number: u64,
        memo: &mut MassMemo,
        kept: Option<(&mut KeptAbove, &mut KeptSplit)>,
    ) -> BTreeMap<String, f64> {
        let cfg = &self.config;
        let mut rng = trial_rng(cfg.seed, trial_number, 3);
        let Some((kept, ks)) = kept else {
            let full = full_split(hist, trial_number, cfg);
            return self.sample_split(hist, trials, memo, None, SplitParts::of_full(&full, None), &mut rng);
        };
        // The split followed from the last suggestion where it can be (the
        // same groups as the full split), else the full split, kept for the
        // next suggestion.
        let n = hist.n_finished;
        let followed = hist.sorted
            && n > 0
            && n >= cfg.n_startup_trials
            && ks.update(hist, trial_number, cfg.constant_liar, gamma(n));
        if let Some(v) = ks.view().filter(|_| followed) {
            let parts = SplitParts {
                n_finished: n,
                excluded_finished: &[],
                below: v.below,
                above: v.above,
                change: Some(AboveChange { gen: v.gen, diff: v.diff }),
            };
            return self.sample_split(hist, trials, memo, Some(kept), parts, &mut rng);
        }
        let full = full_split(hist, trial_number, cfg);
        if full.n_finished >= cfg.n_startup_trials {
            ks.reset(hist, trial_number, cfg.constant_liar, gamma(full.n_finished), &full.below, &full.above);
        } else {
            ks.clear();
        }
        let parts = SplitParts::of_full(&full, ks.view().as_ref());
        self.sample_split(hist, trials, memo, Some(kept), parts, &mut rng)
    }

    /// The suggestion from a split.
    fn sample_split(
        &self,
        hist: &TpeHistory,
        trials: &[FrozenTrial],
        memo: &mut MassMemo,
        kept: Option<&mut KeptAbove>,
        parts: SplitParts<'_>,
        rng: &mut Rng,
    ) -> BTreeMap<String, f64> {
        let cfg = &self.config;
        let params = hist.params();
        let SplitParts {
            n_finished,
            excluded_finished,
            below,
            above,
            change,
        } = parts;
        let startup = n_finished < cfg.n_startup_trials;
        let mut out: BTreeMap<String, f64> = BTreeMap::new();

        if !startup {
            // Optuna's intersection search space: parameters with the same
            // distribution in every finished trial (counted as the history grew).
            let mut mismatch = hist.mismatch.clone();
            for i in excluded_finished {
                if let Some(t) = trials.get(*i) {
                    for (m, x) in mismatch.iter_mut().zip(hist.mismatches_of(t)) {
                        *m -= x.min(*m);
                    }
                }
            }
            let keep: Vec<bool> = params
                .iter()
                .zip(&mismatch)
                .map(|((_, d), m)| cfg.multivariate && !d.is_single() && *m == 0)
                .collect();
            let group: Vec<usize> = (0..params.len()).filter(|i| keep[*i]).collect();
            if !group.is_empty() {
                let values = self.sample_group(hist, &group, below, above, change, rng, memo, kept);
                for (g, v) in group.iter().zip(values) {
                    out.insert(params[*g].0.clone(), v);
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
                    self.sample_group(hist, &[i], below, above, None, rng, memo, None)
                        .first()
                        .copied()
                        .unwrap_or(f64::NAN)
                };
                out.insert(name.clone(), v);
            }
        } else {
            for (name, d) in params {
                out.insert(name.clone(), sample_random_param(d, rng));
            }
        }
        // Never hand out NaN or a value outside the space, whatever the history.
        for (name, d) in params {
            let bad = out
                .get(name)
                .is_none_or(|v| !v.is_finite() || !usable(d, *v));
            if bad {
                out.insert(name.clone(), sample_random_param(d, rng));
            }
        }
        out
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
        // One call: a fresh history and a small memo (what `sample_with` keeps).
        let mut c = TpeCache {
            hist: TpeHistory::new(),
            memo: MassMemo::default(),
            kept: KeptAbove::default(),
            split: KeptSplit::default(),
        };
        self.sample_synced(&mut c, false, space, trials, direction, trial_number)
    }

    fn sample_with(
        &self,
        cache: &mut SamplerCache,
        space: &SearchSpace,
        trials: &[FrozenTrial],
        direction: Direction,
        trial_number: u64,
    ) -> Result<BTreeMap<String, f64>, SampleError> {
        self.sample_synced(cache.tpe_parts(), true, space, trials, direction, trial_number)
    }
}

#[cfg(test)]
mod tests {
    use super::super::parzen::{mixed_test_dists, mixed_test_space, random_trial};
    use super::*;
    use crate::rng::{trial_rng, uniform01};
    use crate::sampler::SamplerCache;
    use crate::trial::TrialState;

    /// Bits of every numerical dimension's kernels (mus, sigmas).
    fn kernel_bits(e: &ParzenEstimator, n_dims: usize) -> Vec<Vec<(u64, u64)>> {
        (0..n_dims)
            .filter_map(|d| e.kernels(d))
            .map(|(m, s)| m.iter().zip(s).map(|(a, b)| (a.to_bits(), b.to_bits())).collect())
            .collect()
    }

    /// `split_rows` by the definition: every complete row sorted by (key, position)
    /// with `partial_cmp` (so -0 and +0 tie), the first `n_below`, then the pruned
    /// rows sorted the same way to fill up; below and above in position order.
    fn split_by_sorting(rows: &[Row], cons: &[usize], n_below: usize) -> (Vec<usize>, Vec<usize>) {
        let sorted = |class: Class| {
            let mut v: Vec<(f64, f64, usize)> = cons
                .iter()
                .enumerate()
                .filter(|(_, r)| rows[**r].class == class)
                .map(|(j, r)| (rows[*r].key.0, rows[*r].key.1, j))
                .collect();
            v.sort_by(|a, b| {
                a.0.partial_cmp(&b.0)
                    .expect("no NaN key")
                    .then(a.1.partial_cmp(&b.1).expect("no NaN key"))
                    .then(a.2.cmp(&b.2))
            });
            v
        };
        let complete = sorted(Class::Complete);
        let fill = n_below.saturating_sub(complete.len());
        let picked: Vec<usize> = complete
            .iter()
            .take(n_below)
            .chain(sorted(Class::Pruned).iter().take(fill))
            .map(|e| e.2)
            .collect();
        let below = cons.iter().enumerate().filter(|(j, _)| picked.contains(j)).map(|(_, r)| *r).collect();
        let above = cons.iter().enumerate().filter(|(j, _)| !picked.contains(j)).map(|(_, r)| *r).collect();
        (below, above)
    }

    #[test]
    fn split_rows_takes_the_best_as_a_full_sort_would() {
        // Few distinct keys (many ties, -0 and +0, infinities), all classes, the
        // considered rows a subset of the history, n_below from 0 past the count.
        let keys = [-f64::INFINITY, -3.0, -0.0, 0.0, 1.5, 2.0, f64::INFINITY];
        let mut rng = trial_rng(11, 0, 0);
        let mut pick = |n: usize| ((uniform01(&mut rng) * n as f64) as usize).min(n - 1);
        for case in 0..400 {
            let n = 1 + pick(120);
            let rows: Vec<Row> = (0..n)
                .map(|i| {
                    let class = [Class::Complete, Class::Complete, Class::Pruned, Class::Running, Class::Ignored][pick(5)];
                    let key = match class {
                        Class::Complete => (keys[pick(keys.len())], 0.0),
                        Class::Pruned => (-(pick(4) as f64), keys[pick(keys.len())]),
                        _ => (0.0, 0.0),
                    };
                    Row { number: i as u64, class, key }
                })
                .collect();
            let cons: Vec<usize> = (0..n).filter(|_| pick(4) > 0).collect();
            let n_below = pick(40);
            assert_eq!(
                split_rows(&rows, &cons, n_below),
                split_by_sorting(&rows, &cons, n_below),
                "case {case}: n = {n}, n_below = {n_below}"
            );
        }
    }

    #[test]
    fn suggestions_with_the_study_cache_are_those_without() {
        // A study long enough for the kept "above" estimator, trials told in a
        // shuffled order (8 running), some failed: every suggestion made with
        // the cache must be the one made from the trials alone.
        let space = SearchSpace::from_json_str(
            r#"{"x": {"type": "float", "low": -5.0, "high": 5.0},
                "lr": {"type": "float", "low": 1e-5, "high": 0.1, "log": true},
                "n": {"type": "int", "low": 0, "high": 100},
                "opt": {"type": "categorical", "choices": ["adam", "sgd", "rmsprop"]},
                "d": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.1},
                "w": {"type": "int", "low": 1, "high": 1024, "log": true}}"#,
        )
        .expect("space");
        let dists: BTreeMap<String, Distribution> =
            space.params().map(|(n, d)| (n.to_string(), d.clone())).collect();
        for (conc, n_trials) in [(1usize, 420usize), (8, 420)] {
            let reported = super::super::kept::REPORTED.with(|c| c.get());
            let sampler = TpeSampler::with_seed(conc as u64);
            let mut cache = SamplerCache::default();
            let mut trials: Vec<FrozenTrial> = Vec::new();
            let mut rng = trial_rng(77, conc as u64, 0);
            let mut running: Vec<usize> = Vec::new();
            for number in 0..n_trials as u64 {
                let a = sampler
                    .sample_with(&mut cache, &space, &trials, Direction::Minimize, number)
                    .expect("sample");
                if number % 7 == 0 || number > 380 {
                    let b = sampler.sample(&space, &trials, Direction::Minimize, number).expect("sample");
                    let bits = |m: &BTreeMap<String, f64>| m.values().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&a), bits(&b), "concurrency {conc}, trial {number}");
                }
                let mut t = FrozenTrial::new(number, TrialState::Running);
                t.params = a;
                t.distributions = dists.clone();
                trials.push(t);
                running.push(trials.len() - 1);
                while running.len() >= conc {
                    let i = running.remove(((uniform01(&mut rng) * running.len() as f64) as usize).min(running.len() - 1));
                    let t = &mut trials[i];
                    if uniform01(&mut rng) < 0.1 {
                        t.state = TrialState::Fail;
                    } else {
                        t.state = TrialState::Complete;
                        t.value = Some(t.params.values().map(|v| (0.37 * v).sin()).sum());
                    }
                }
            }
            // The kept "above" estimator followed the kept split's reports.
            let reported = super::super::kept::REPORTED.with(|c| c.get()) - reported;
            assert!(reported > 50, "concurrency {conc}: {reported} updates from reports");
        }
    }

    #[test]
    fn degenerate_histories_give_the_same_suggestions_with_the_cache() {
        // Long enough for the kept estimators: every trial at the same point,
        // values only at the range ends (-0.0 and 0.0 among them), and one
        // parameter constant while the others vary; pruned trials mixed in.
        let space = SearchSpace::from_json_str(
            r#"{"x": {"type": "float", "low": -1.0, "high": 1.0},
                "lr": {"type": "float", "low": 1e-5, "high": 0.1, "log": true},
                "n": {"type": "int", "low": 0, "high": 3},
                "c": {"type": "categorical", "choices": ["a", "b"]},
                "d": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.5}}"#,
        )
        .expect("space");
        let dists: BTreeMap<String, Distribution> =
            space.params().map(|(n, d)| (n.to_string(), d.clone())).collect();
        for case in 0..3u64 {
            let sampler = TpeSampler::with_seed(case);
            let mut cache = SamplerCache::default();
            let mut trials: Vec<FrozenTrial> = Vec::new();
            let mut rng = trial_rng(5, case, 0);
            for number in 0..330u64 {
                let a = sampler
                    .sample_with(&mut cache, &space, &trials, Direction::Minimize, number)
                    .expect("sample");
                if number >= 256 && number % 9 == 0 {
                    let b = sampler.sample(&space, &trials, Direction::Minimize, number).expect("sample");
                    let bits = |m: &BTreeMap<String, f64>| m.values().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&a), bits(&b), "case {case}, trial {number}");
                }
                let mut params = a;
                for (name, v) in params.iter_mut() {
                    let end = uniform01(&mut rng) < 0.5;
                    *v = match (case, name.as_str()) {
                        (0, "x") => 0.25,
                        (0, "lr") => 1e-3,
                        (0, "n") => 2.0,
                        (0, "c") => 1.0,
                        (0, _) => 0.5,
                        (1, "x") => [-0.0, 0.0, -1.0, 1.0][(uniform01(&mut rng) * 4.0) as usize % 4],
                        (1, "lr") => if end { 1e-5 } else { 0.1 },
                        (1, "n") => if end { 0.0 } else { 3.0 },
                        (1, "d") => if end { 0.0 } else { 1.0 },
                        (2, "lr") => 0.01,
                        _ => *v,
                    };
                }
                let mut t = FrozenTrial::new(number, TrialState::Complete);
                if uniform01(&mut rng) < 0.2 {
                    t.state = TrialState::Pruned;
                    t.intermediate_values.insert(1 + (uniform01(&mut rng) * 3.0) as u64, uniform01(&mut rng));
                } else {
                    t.value = Some(uniform01(&mut rng));
                }
                t.params = params;
                t.distributions = dists.clone();
                trials.push(t);
            }
        }
    }

    #[test]
    fn the_kept_order_gives_the_estimator_of_a_fresh_sort() {
        // Ties (integers, steps), log dims, missing parameters, trials re-read with
        // cleared and restored parameters: the history's kept order must give the
        // same kernels (and densities) as sorting the observations afresh.
        let space = mixed_test_space();
        let dists = mixed_test_dists();
        let mut rng = trial_rng(5, 0, 0);
        let mut trials: Vec<FrozenTrial> = Vec::new();
        let mut hist = TpeHistory::new();
        let pp = ParzenParams {
            prior_weight: 1.0,
            consider_magic_clip: true,
            consider_endpoints: false,
        };
        let mut checked = 0;
        for round in 0..12 {
            for _ in 0..40 {
                let t = random_trial(trials.len() as u64, &dists, &mut rng, (0.05, 1, 0.2));
                trials.push(t);
            }
            // Running trials: some cleared (requeued), some restored, some finished.
            for t in trials.iter_mut().filter(|t| t.state == TrialState::Running) {
                let u = uniform01(&mut rng);
                if u < 0.3 {
                    t.params.clear();
                } else if u < 0.6 {
                    t.state = TrialState::Complete;
                    t.value = Some(uniform01(&mut rng));
                    if t.params.is_empty() {
                        for (name, d) in &dists {
                            let low = match d {
                                Distribution::Float { low, .. } => *low,
                                Distribution::Int { low, .. } => *low as f64,
                                Distribution::Categorical { .. } => 0.0,
                            };
                            t.params.insert(name.clone(), low);
                        }
                    }
                }
            }
            hist.sync(&space, Direction::Minimize, &trials);
            let mut fresh = TpeHistory::new();
            fresh.sync(&space, Direction::Minimize, &trials);
            for g in 0..dists.len() {
                let a: Vec<(u64, u32)> = hist.order_of(g).collect();
                let b: Vec<(u64, u32)> = fresh.order_of(g).collect();
                assert_eq!(a, b, "round {round}");
            }
            let all: Vec<usize> = (0..trials.len())
                .filter(|i| matches!(hist.rows[*i].class, Class::Complete | Class::Running))
                .collect();
            let half: Vec<usize> = all.iter().copied().filter(|i| i % 2 == round % 2).collect();
            let groups: [&[usize]; 3] = [&[0, 1, 2, 3, 4, 5], &[1, 3], &[4, 0, 5]];
            for rows in [&all, &half] {
                for group in groups {
                    let params = hist.params();
                    let ds: Vec<&Distribution> = group.iter().map(|g| &params[*g].1).collect();
                    let (cols, kept) = observations(&hist, group, rows);
                    let sorted = presorted(&hist, group, &kept);
                    if kept.len() >= PRESORT_MIN {
                        assert!(sorted.iter().any(Option::is_some));
                        checked += 1;
                    }
                    let mut memo = MassMemo::default();
                    let a = ParzenEstimator::new_sorted(&cols, &ds, &pp, &mut memo, sorted);
                    let b = ParzenEstimator::new(&cols, &ds, &pp);
                    assert_eq!(kernel_bits(&a, ds.len()), kernel_bits(&b, ds.len()), "round {round}");
                    let pts = b.sample(&mut rng, 8);
                    let (la, lb) = (a.log_pdf(&pts), b.log_pdf(&pts));
                    let bits = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect::<Vec<_>>();
                    assert_eq!(bits(la), bits(lb), "round {round}");
                }
            }
        }
        assert!(checked > 20, "the kept order was used only {checked} times");
    }
}
