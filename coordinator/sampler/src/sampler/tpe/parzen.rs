//! The Parzen estimator of Optuna's TPE: a mixture of product kernels, one per
//! observation plus a prior kernel. Numerical parameters get truncated normals
//! (in log space for `log=true`, widened by half a step for steps and integers)
//! with Optuna's bandwidth rule and magic clip; categorical parameters get
//! Optuna's categorical kernel (each observation's choice boosted by 1 on top of a
//! prior of `prior_weight / n_kernels`).

use std::borrow::Cow;

use super::score::{self, CatKernels, ContKernels, DiscKernels, Kernels, ScoreScratch, WINDOW_MIN_KERNELS};
use super::truncnorm::{self, LN_SQRT_2PI};
use crate::rng::{uniform01, Rng};
use crate::space::Distribution;

/// Estimator options (Optuna's `_ParzenEstimatorParameters`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParzenParams {
    pub prior_weight: f64,
    pub consider_magic_clip: bool,
    pub consider_endpoints: bool,
}

/// Optuna's `default_weights`: flat for the newest 25 observations, a linear
/// ramp from `1/n` up to 1 for older ones (observations in trial-number order).
pub fn default_weights(n: usize) -> Vec<f64> {
    let mut w = Vec::with_capacity(n);
    push_default_weights(n, &mut w);
    w
}

/// Appends [`default_weights`]`(n)` to `w`: [`default_weight`] of each entry,
/// the ramp in one branch-free pass.
fn push_default_weights(n: usize, w: &mut Vec<f64>) {
    if n >= 25 {
        let m = n - 25;
        if m == 1 {
            w.push(default_weight(n, 0));
        } else if m > 1 {
            let start = 1.0 / n as f64;
            let step = (1.0 - start) / (m - 1) as f64;
            w.extend((0..m - 1).map(|i| i as f64 * step + start));
            w.push(1.0);
        }
    }
    w.resize(w.len() + n.min(25), 1.0);
}

/// Entry `i` of [`default_weights`]`(n)`: the ramp is numpy's
/// `linspace(1 / n, 1, n - 25)` to the bit (`i * step + start`, the last entry
/// exactly 1).
#[inline]
pub(crate) fn default_weight(n: usize, i: usize) -> f64 {
    if n < 25 || i >= n - 25 {
        return 1.0;
    }
    let m = n - 25;
    let start = 1.0 / n as f64;
    if m == 1 {
        start
    } else if i == m - 1 {
        1.0
    } else {
        i as f64 * ((1.0 - start) / (m - 1) as f64) + start
    }
}

#[derive(Debug, Clone)]
enum Dim {
    /// Optuna's categorical kernel. Every observation row has the same two values
    /// (its own choice, boosted, and the others), so a row is stored as its chosen
    /// index; the last kernel (the prior) is uniform.
    Categorical {
        n_choices: usize,
        /// Observed choice of each observation kernel (`n_kernels - 1` entries; empty
        /// when there are no observations).
        chosen: Vec<u32>,
        /// Probability of the chosen / any other choice in an observation row.
        p_hit: f64,
        p_miss: f64,
    },
    Numerical {
        log: bool,
        /// Step for stepped floats and integers.
        step: Option<f64>,
        /// Original bounds (for rounding discrete samples).
        low: f64,
        high: f64,
        /// Bounds of the kernels in the transformed space (log, half-step widened).
        lo_t: f64,
        hi_t: f64,
        mus: Vec<f64>,
        sigmas: Vec<f64>,
        /// `log_gauss_mass` of each kernel on `[lo_t, hi_t]`.
        log_norm: Vec<f64>,
        /// Discrete dims: the distinct `(mu, sigma)` pairs (many kernels share one,
        /// as observations of an integer repeat), their `log_norm`, and each
        /// kernel's pair index.
        pairs: Vec<(f64, f64)>,
        pair_log_norm: Vec<f64>,
        pair_of: Vec<u32>,
        /// Continuous dims: the observation kernels (not the prior) by increasing mu.
        order: Vec<u32>,
    },
}

/// A mixture of product distributions over a group of parameters.
#[derive(Debug, Clone)]
pub struct ParzenEstimator {
    weights: Vec<f64>,
    log_weights: Vec<f64>,
    dims: Vec<Dim>,
}

/// Order-preserving integer key of a float (total order, as `f64::total_cmp`).
#[inline]
pub(crate) fn sort_key(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

/// The float whose `sort_key` is `k` (the inverse, bit for bit).
#[inline]
pub(crate) fn from_sort_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// Stable argsort by packed integer keys (order-preserving bits, then the index);
/// `(value, index)` in sorted order.
fn argsort_packed(xs: &[f64]) -> Vec<(f64, u32)> {
    let mut packed: Vec<u128> = xs
        .iter()
        .enumerate()
        .map(|(i, x)| ((sort_key(*x) as u128) << 32) | i as u128)
        .collect();
    packed.sort_unstable();
    packed
        .into_iter()
        .map(|p| (from_sort_key((p >> 32) as u64), (p & 0xFFFF_FFFF) as u32))
        .collect()
}

/// Stable argsort of floats (total order): `(value, index)` in sorted order, ties
/// in index order.
///
/// Large finite inputs go through a bucket sort: the bucket `(x - min) * scale`
/// never decreases as `x` grows (every step is a correctly rounded monotone
/// operation), so distributing the indices in order into buckets and then
/// insertion-sorting each bucket by the total-order key (moving only past strictly
/// larger keys) gives exactly the stable order. If the buckets turn out crowded
/// (too many moves) it falls back to sorting packed keys; both give the same
/// permutation.
fn argsort_stable(xs: &[f64]) -> Vec<(f64, u32)> {
    let n = xs.len();
    if n < 64 {
        return argsort_packed(xs);
    }
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut nan = false;
    for x in xs {
        lo = lo.min(*x);
        hi = hi.max(*x);
        nan |= x.is_nan();
    }
    if nan || !(lo.is_finite() && hi.is_finite()) {
        return argsort_packed(xs);
    }
    let nb = n;
    let scale = if hi > lo {
        nb as f64 / (hi - lo)
    } else {
        0.0
    };
    if !scale.is_finite() {
        return argsort_packed(xs);
    }
    let top = (nb - 1) as u32;
    let buckets: Vec<u32> = xs
        .iter()
        .map(|x| (((x - lo) * scale) as u32).min(top))
        .collect();
    let mut start = vec![0u32; nb + 1];
    for b in &buckets {
        start[*b as usize + 1] += 1;
    }
    for i in 0..nb {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut out = vec![(0u64, 0u32); n];
    for (i, (x, b)) in xs.iter().zip(&buckets).enumerate() {
        let f = &mut fill[*b as usize];
        out[*f as usize] = (sort_key(*x), i as u32);
        *f += 1;
    }
    // Insertion sort inside each bucket, stable: shift only strictly larger keys.
    let mut moves = 0usize;
    let budget = 16 * n;
    for w in start.windows(2) {
        let (b0, b1) = (w[0] as usize, w[1] as usize);
        if b1 - b0 < 2 {
            continue;
        }
        for i in b0 + 1..b1 {
            let e = out[i];
            let mut j = i;
            while j > b0 && out[j - 1].0 > e.0 {
                out[j] = out[j - 1];
                j -= 1;
            }
            out[j] = e;
            moves += i - j;
        }
        if moves > budget {
            return argsort_packed(xs);
        }
    }
    out.into_iter().map(|(k, i)| (from_sort_key(k), i)).collect()
}

/// Optuna's bandwidth rule for `n` observations of a numerical dimension with
/// (transformed) bounds `lo`, `hi`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SigmaRule {
    lo: f64,
    hi: f64,
    minsigma: f64,
    maxsigma: f64,
    /// The outermost kernels use their inner gap only.
    inner_only: bool,
}

impl SigmaRule {
    pub(crate) fn new(lo: f64, hi: f64, n: usize, p: &ParzenParams) -> Self {
        let minsigma = if p.consider_magic_clip {
            (hi - lo) / 100f64.min(1.0 + (n + 1) as f64)
        } else {
            1e-12
        };
        SigmaRule {
            lo,
            hi,
            minsigma,
            maxsigma: hi - lo,
            inner_only: !p.consider_endpoints && n >= 2,
        }
    }

    /// The bandwidth of the kernel at `cur` between its sorted neighbours
    /// `prev` and `next` (the range ends standing in for missing ones): the
    /// larger distance, clipped; `first` / `last` where it is the outermost.
    #[inline]
    pub(crate) fn sigma(&self, prev: f64, cur: f64, next: f64, first: bool, last: bool) -> f64 {
        let s = if self.inner_only && first {
            next - cur
        } else if self.inner_only && last {
            cur - prev
        } else {
            (cur - prev).max(next - cur)
        };
        s.max(self.minsigma).min(self.maxsigma)
    }

    /// The prior kernel's `(mu, sigma)`.
    pub(crate) fn prior(&self) -> (f64, f64) {
        (0.5 * (self.lo + self.hi), self.hi - self.lo)
    }
}

/// A continuous kernel's log mass on `[lo, hi]`. A kernel 9.5 sigmas or more
/// inside both ends has both standardised ends beyond 9 whatever the
/// rounding, where `log_gauss_mass` returns -0.0 without a division or a
/// special function: skip straight to that value.
#[inline]
pub(crate) fn cont_log_norm(m: f64, s: f64, lo: f64, hi: f64, memo: &mut MassMemo) -> f64 {
    let far = 9.5 * s;
    if m - lo >= far && hi - m >= far {
        -0.0
    } else {
        memo.log_gauss_mass((lo - m) / s, (hi - m) / s)
    }
}

/// A discrete kernel's log mass on the widened range `[lo, hi]`.
#[inline]
pub(crate) fn disc_log_norm(m: f64, s: f64, lo: f64, hi: f64, memo: &mut MassMemo) -> f64 {
    memo.log_gauss_mass((lo - m) / s, (hi - m) / s)
}

/// The mixture weights of `n` observations and the prior, normalised (Optuna's
/// ramp, then division by the sum).
pub(crate) fn normalised_weights(n: usize, prior_weight: f64) -> Vec<f64> {
    let mut weights = Vec::with_capacity(n + 1);
    let total = raw_weights_into(n, prior_weight, &mut weights);
    weights.iter_mut().for_each(|w| *w /= total);
    weights
}

/// The weights of `n` observations and the prior before normalising, into
/// `out`, and what [`normalised_weights`] divides them by.
pub(crate) fn raw_weights_into(n: usize, prior_weight: f64, out: &mut Vec<f64>) -> f64 {
    out.clear();
    if n == 0 {
        out.push(1.0);
    } else {
        push_default_weights(n, out);
        out.push(prior_weight);
    }
    weights_total(out)
}

/// What [`normalised_weights`] divides the weights by: their sum as numpy's
/// `weights.sum()` computes it in Optuna ([`numpy_sum`]), or 1 where that is
/// not positive.
pub(crate) fn weights_total(w: &[f64]) -> f64 {
    let total = numpy_sum(w);
    if total > 0.0 {
        total
    } else {
        1.0
    }
}

/// The sum of `a` to the bit as numpy's `add.reduce` computes it for a
/// contiguous float64 array: pairwise, in blocks of at most 128 summed with
/// eight accumulators, halves split at a multiple of 8.
pub(crate) fn numpy_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for x in a {
            res += x;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let whole = n - n % 8;
        for block in a[8..whole].chunks_exact(8) {
            for (acc, x) in r.iter_mut().zip(block) {
                *acc += x;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for x in &a[whole..] {
            res += x;
        }
        res
    } else {
        let half = n / 2;
        let half = half - half % 8;
        numpy_sum(&a[..half]) + numpy_sum(&a[half..])
    }
}

/// Probabilities of the chosen and of any other choice in an observation row
/// of Optuna's categorical kernel, for `n_obs` observations.
pub(crate) fn categorical_probs(n_obs: usize, n_choices: usize, p: &ParzenParams) -> (f64, f64) {
    let n_kernels = (n_obs + 1) as f64;
    // Row = prior_weight / n_kernels everywhere, +1 at the observed choice, normalised.
    let base = p.prior_weight / n_kernels;
    let sum = 1.0 + base * n_choices as f64;
    ((base + 1.0) / sum, base / sum)
}

/// The prior kernel's column of a categorical dimension: `ln(1 / n_choices)`.
pub(crate) fn categorical_prior_ln(n_choices: usize) -> f64 {
    (1.0 / n_choices as f64).ln()
}

/// A numerical parameter's range as the estimator sees it: the original
/// bounds, log and step (integers step 1), and `lo`, `hi`, the kernels' bounds
/// in the transformed space (widened by half a step, then logs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NumBounds {
    pub low: f64,
    pub high: f64,
    pub log: bool,
    pub step: Option<f64>,
    pub lo: f64,
    pub hi: f64,
}

impl NumBounds {
    /// The bounds of `dist` (a categorical gets `[0, 1]`, never used).
    pub(crate) fn of(dist: &Distribution) -> NumBounds {
        let (low, high, log, step) = match dist {
            Distribution::Float { low, high, log, step } => (*low, *high, *log, *step),
            Distribution::Int { low, high, log, step } => (*low as f64, *high as f64, *log, Some(*step as f64)),
            Distribution::Categorical { .. } => (0.0, 1.0, false, None),
        };
        let (mut lo, mut hi) = (low, high);
        if let Some(s) = step {
            lo -= s / 2.0;
            hi += s / 2.0;
        }
        if log {
            lo = lo.ln();
            hi = hi.ln();
        }
        NumBounds { low, high, log, step, lo, hi }
    }
}

/// One numerical dimension's kernels. `sorted`, when given, must be what
/// `argsort_stable` gives for the transformed observations (the caller keeps it).
fn numerical_dim(
    obs: &[f64],
    dist: &Distribution,
    p: &ParzenParams,
    memo: &mut MassMemo,
    sorted: Option<Vec<(f64, u32)>>,
) -> Dim {
    let NumBounds { low, high, log, step, lo, hi } = NumBounds::of(dist);
    // Observation indices sorted by value; ties keep trial order (a stable argsort).
    let (mut mus, idx) = match sorted {
        Some(idx) if idx.len() == obs.len() => {
            let mut mus = vec![0.0; idx.len()];
            for (v, i) in &idx {
                mus[*i as usize] = *v;
            }
            (mus, idx)
        }
        _ => {
            let mut mus: Vec<f64> = obs.to_vec();
            if log {
                for m in &mut mus {
                    *m = m.ln();
                }
            }
            let idx = argsort_stable(&mus);
            (mus, idx)
        }
    };
    let n = mus.len();
    let mut sigmas = vec![0.0; n];
    let rule = SigmaRule::new(lo, hi, n, p);
    if n > 0 {
        // One pass with the neighbours in hand (the same subtractions as by index).
        let mut prev = lo;
        for (k, (cur, i)) in idx.iter().enumerate() {
            let next = idx.get(k + 1).map_or(hi, |e| e.0);
            if let Some(slot) = sigmas.get_mut(*i as usize) {
                *slot = rule.sigma(prev, *cur, next, k == 0, k == n - 1);
            }
            prev = *cur;
        }
    }
    let (prior_mu, prior_sigma) = rule.prior();
    mus.push(prior_mu);
    sigmas.push(prior_sigma);
    let mut mass = |m: f64, s: f64| disc_log_norm(m, s, lo, hi, memo);
    let (mut pairs, mut pair_log_norm, mut pair_of, mut log_norm, mut order) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    if step.is_some() {
        pairs.reserve(n + 1);
        pair_log_norm.reserve(n + 1);
        // Discrete: kernels at repeated values share (mu, sigma); walk them in value
        // order and merge neighbours, so the masses are computed once per pair.
        pair_of = vec![0u32; mus.len()];
        for (_, i) in &idx {
            let i = *i as usize;
            let key = (mus[i], sigmas[i]);
            if pairs.last() != Some(&key) {
                pairs.push(key);
                pair_log_norm.push(mass(key.0, key.1));
            }
            pair_of[i] = (pairs.len() - 1) as u32;
        }
        pairs.push((mus[n], sigmas[n]));
        pair_log_norm.push(mass(mus[n], sigmas[n]));
        pair_of[n] = (pairs.len() - 1) as u32;
    } else {
        log_norm = mus
            .iter()
            .zip(&sigmas)
            .map(|(m, s)| cont_log_norm(*m, *s, lo, hi, memo))
            .collect();
        order = idx.iter().map(|(_, i)| *i).collect();
    }
    Dim::Numerical {
        log,
        step,
        low,
        high,
        lo_t: lo,
        hi_t: hi,
        mus,
        sigmas,
        log_norm,
        pairs,
        pair_log_norm,
        pair_of,
        order,
    }
}

fn categorical_dim(obs: &[f64], n_choices: usize, p: &ParzenParams) -> Dim {
    let (p_hit, p_miss) = categorical_probs(obs.len(), n_choices, p);
    let chosen = obs
        .iter()
        .map(|o| (*o as usize).min(n_choices - 1) as u32)
        .collect();
    Dim::Categorical {
        n_choices,
        chosen,
        p_hit,
        p_miss,
    }
}

impl Dim {
    /// Probability of choice `c` under kernel `k` of a categorical dimension.
    fn cat_prob(
        chosen: &[u32],
        n_choices: usize,
        p_hit: f64,
        p_miss: f64,
        k: usize,
        c: usize,
    ) -> f64 {
        match chosen.get(k) {
            Some(o) if *o as usize == c => p_hit,
            Some(_) => p_miss,
            None => 1.0 / n_choices as f64, // the prior kernel
        }
    }
}

impl ParzenEstimator {
    /// Builds the estimator. `columns[d][i]` is observation `i` of parameter `d`
    /// (internal repr, observations in trial-number order).
    pub fn new(columns: &[Vec<f64>], dists: &[&Distribution], p: &ParzenParams) -> Self {
        Self::new_with(columns, dists, p, &mut MassMemo::default())
    }

    /// [`ParzenEstimator::new`] with a memo of Gaussian masses that may be kept
    /// across calls (the result is the same).
    pub fn new_with(
        columns: &[Vec<f64>],
        dists: &[&Distribution],
        p: &ParzenParams,
        memo: &mut MassMemo,
    ) -> Self {
        Self::new_sorted(columns, dists, p, memo, Vec::new())
    }

    /// [`ParzenEstimator::new_with`] given, for some numerical dimensions, the
    /// stable argsort of their transformed observations (`sorted[d]`: `(value,
    /// observation index)` by increasing value, ties in index order), which the
    /// caller may keep across calls; the result is the same.
    pub(crate) fn new_sorted(
        columns: &[Vec<f64>],
        dists: &[&Distribution],
        p: &ParzenParams,
        memo: &mut MassMemo,
        mut sorted: Vec<Option<Vec<(f64, u32)>>>,
    ) -> Self {
        sorted.resize(columns.len(), None);
        let n = columns.first().map_or(0, Vec::len);
        let weights = normalised_weights(n, p.prior_weight);
        let log_weights = weights.iter().map(|w| w.ln()).collect();
        let dims = columns
            .iter()
            .zip(dists)
            .zip(sorted)
            .map(|((obs, d), sorted)| match d {
                Distribution::Categorical { choices } => {
                    categorical_dim(obs, choices.len().max(1), p)
                }
                _ => numerical_dim(obs, d, p, memo, sorted),
            })
            .collect();
        ParzenEstimator {
            weights,
            log_weights,
            dims,
        }
    }

    /// Number of mixture components (observations + prior).
    pub fn n_kernels(&self) -> usize {
        self.weights.len()
    }

    /// Mixture weights (normalised).
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// `(mus, sigmas)` of a numerical dimension in the transformed space.
    pub fn kernels(&self, dim: usize) -> Option<(&[f64], &[f64])> {
        match self.dims.get(dim)? {
            Dim::Numerical { mus, sigmas, .. } => Some((mus, sigmas)),
            Dim::Categorical { .. } => None,
        }
    }

    /// The `n_kernels × n_choices` probabilities (row-major) of a categorical dimension.
    pub fn categorical_probs(&self, dim: usize) -> Option<Vec<f64>> {
        match self.dims.get(dim)? {
            Dim::Categorical {
                n_choices,
                chosen,
                p_hit,
                p_miss,
            } => Some(
                (0..self.weights.len())
                    .flat_map(|k| {
                        (0..*n_choices)
                            .map(move |c| Dim::cat_prob(chosen, *n_choices, *p_hit, *p_miss, k, c))
                    })
                    .collect(),
            ),
            Dim::Numerical { .. } => None,
        }
    }

    /// Draws `size` points; `out[s][d]` is the internal value of parameter `d`.
    pub fn sample(&self, rng: &mut Rng, size: usize) -> Vec<Vec<f64>> {
        self.sample_with(rng, size, &mut MassMemo::default())
    }

    /// [`ParzenEstimator::sample`] with a memo of the truncation terms that may
    /// be kept across calls (the result is the same).
    pub fn sample_with(&self, rng: &mut Rng, size: usize, memo: &mut MassMemo) -> Vec<Vec<f64>> {
        let mut out = Vec::with_capacity(size);
        self.sample_into(rng, size, memo, &mut out);
        out
    }

    /// [`ParzenEstimator::sample_with`] into `out` (replacing its points,
    /// reusing their vectors: a caller that samples again and again keeps one).
    pub(crate) fn sample_into(&self, rng: &mut Rng, size: usize, memo: &mut MassMemo, out: &mut Vec<Vec<f64>>) {
        let mut cum = Vec::with_capacity(self.weights.len());
        let mut acc = 0.0;
        for w in &self.weights {
            acc += w;
            cum.push(acc);
        }
        out.resize_with(size, Vec::new);
        for point in out.iter_mut() {
            let u = uniform01(rng) * acc;
            let k = cum.partition_point(|c| *c <= u).min(self.weights.len() - 1);
            point.clear();
            for dim in &self.dims {
                let v = match dim {
                    Dim::Categorical {
                        n_choices,
                        chosen,
                        p_hit,
                        p_miss,
                    } => {
                        let q = uniform01(rng);
                        let mut c = 0.0;
                        let mut pick = n_choices - 1;
                        for i in 0..*n_choices {
                            c += Dim::cat_prob(chosen, *n_choices, *p_hit, *p_miss, k, i);
                            if q < c {
                                pick = i;
                                break;
                            }
                        }
                        pick as f64
                    }
                    Dim::Numerical {
                        log,
                        step,
                        low,
                        high,
                        lo_t,
                        hi_t,
                        mus,
                        sigmas,
                        ..
                    } => {
                        let (m, s) = (mus[k], sigmas[k]);
                        let (a, b) = ((lo_t - m) / s, (hi_t - m) / s);
                        let q = uniform01(rng);
                        let z = if a < b {
                            let end = if a < 0.0 { memo.log_ndtr(a) } else { memo.log_ndtr(-b) };
                            truncnorm::ppf_given(q, a, b, memo.log_gauss_mass(a, b), end)
                        } else {
                            a
                        };
                        let mut x = z * s + m;
                        if !x.is_finite() {
                            x = m;
                        }
                        x = x.clamp(*lo_t, *hi_t);
                        if *log {
                            x = x.exp();
                        }
                        match step {
                            Some(st) => {
                                (low + ((x - low) / st).round_ties_even() * st).clamp(*low, *high)
                            }
                            None => x.clamp(*low, *high),
                        }
                    }
                };
                point.push(v);
            }
        }
    }

    /// Log density (log probability for discrete parameters) of each point.
    ///
    /// Each point's value is `max + ln(sum(exp(row_k - max)))` over the kernels `k`
    /// whose log value `row_k` lies within 50 of the largest: kernels further below
    /// cannot change the sum at double precision (even 10^4 of them add < 2e-18).
    /// Every kernel's terms are added in one fixed order (its base, categorical
    /// dims, continuous dims, discrete dims, each group in dimension order).
    ///
    /// Discrete dimensions need a Gaussian mass (two `erfc`) per kernel, so they are
    /// computed only for kernels that can matter: a cheap upper bound of each
    /// kernel's value is compared with the exact value of the most promising one, and
    /// kernels provably more than 50 below it are left out (they would be left out of
    /// the sum anyway). Masses are cached per (distinct value, distinct kernel).
    pub fn log_pdf(&self, points: &[Vec<f64>]) -> Vec<f64> {
        self.log_pdf_impl(points, true, &mut MassMemo::default())
    }

    /// [`ParzenEstimator::log_pdf`] with a memo of Gaussian masses that may be
    /// kept across calls (the result is the same).
    pub fn log_pdf_with(&self, points: &[Vec<f64>], memo: &mut MassMemo) -> Vec<f64> {
        self.log_pdf_impl(points, true, memo)
    }

    /// `log_pdf`, with or without the window (the results are identical).
    fn log_pdf_impl(&self, points: &[Vec<f64>], use_window: bool, memo: &mut MassMemo) -> Vec<f64> {
        score::log_pdf(Cow::Owned(self.layout()), points, use_window, memo, &mut ScoreScratch::default())
    }

    /// The index of the point with the largest `lb[i] - log_pdf(points)[i]`
    /// (the first such index; 0 when none is above -inf), scoring only the
    /// points that can still win (see [`score::best_acquisition`]).
    pub fn best_acquisition(&self, points: &[Vec<f64>], lb: &[f64], memo: &mut MassMemo) -> usize {
        score::best_acquisition(Cow::Owned(self.layout()), points, lb, memo, &mut ScoreScratch::default())
    }

    /// The kernels as the scorer reads them: in increasing mu of the first
    /// continuous dimension where there is one (each kernel keeping its index
    /// as its summation position), else in their own order.
    pub(crate) fn layout(&self) -> Kernels {
        let k_n = self.weights.len();
        let n = k_n - 1;
        // Per-kernel constant: log weight and the normalisers of continuous dims.
        let mut base = self.log_weights.clone();
        let mut lead: Option<(&[f64], &[u32])> = None;
        let mut invs: Vec<Vec<f64>> = Vec::new();
        for dim in &self.dims {
            if let Dim::Numerical { step: None, sigmas, log_norm, order, .. } = dim {
                // Most kernels of a large estimator share the clipped bandwidth:
                // reuse ln(sigma) and 1/sigma while it repeats.
                let mut inv = Vec::with_capacity(k_n);
                let (mut last, mut last_ln, mut last_inv) = (f64::NAN.to_bits(), 0.0, 0.0);
                for k in 0..k_n {
                    let sg = sigmas[k];
                    if sg.to_bits() != last {
                        last = sg.to_bits();
                        last_ln = sg.ln();
                        last_inv = 1.0 / sg;
                    }
                    base[k] -= LN_SQRT_2PI + last_ln + log_norm[k];
                    inv.push(last_inv);
                }
                invs.push(inv);
                if lead.is_none() {
                    lead = Some((sigmas, order));
                }
            }
        }
        // The lead order, where it is a permutation of the observation kernels.
        let lead = lead.filter(|(_, order)| {
            let mut seen = vec![false; n];
            order.len() == n
                && order.iter().all(|k| {
                    let fresh = seen.get(*k as usize) == Some(&false);
                    if fresh {
                        seen[*k as usize] = true;
                    }
                    fresh
                })
        });
        let key: Vec<u32> = match lead {
            Some((_, order)) => order.iter().copied().chain([n as u32]).collect(),
            None => (0..k_n as u32).collect(),
        };
        let perm_f = |v: &[f64]| -> Vec<f64> { key.iter().map(|k| v[*k as usize]).collect() };
        let perm_u = |v: &[u32]| -> Vec<u32> { key.iter().map(|k| v[*k as usize]).collect() };
        let (mut cats, mut cont, mut discs) = (Vec::new(), Vec::new(), Vec::new());
        let mut invs = invs.into_iter();
        for (d, dim) in self.dims.iter().enumerate() {
            match dim {
                Dim::Categorical { n_choices, chosen, p_hit, p_miss } => cats.push(CatKernels {
                    d,
                    n_choices: *n_choices,
                    chosen: key[..chosen.len().min(n)].iter().map(|k| chosen[*k as usize]).collect(),
                    l_hit: p_hit.ln(),
                    l_miss: p_miss.ln(),
                    l_prior: categorical_prior_ln(*n_choices),
                }),
                Dim::Numerical { log, step: None, lo_t, hi_t, mus, .. } => cont.push(ContKernels {
                    d,
                    log: *log,
                    lo_t: *lo_t,
                    hi_t: *hi_t,
                    mus: perm_f(mus),
                    inv: perm_f(&invs.next().unwrap_or_default()),
                }),
                Dim::Numerical { log, step: Some(st), lo_t, hi_t, pairs, pair_log_norm, pair_of, .. } => {
                    discs.push(DiscKernels {
                        d,
                        log: *log,
                        step: *st,
                        lo_t: *lo_t,
                        hi_t: *hi_t,
                        pairs: pairs.clone(),
                        pair_log_norm: pair_log_norm.clone(),
                        pair_of: perm_u(pair_of),
                    })
                }
            }
        }
        let mut kern = Kernels {
            base: perm_f(&base),
            lazy: None,
            key,
            cats,
            cont,
            discs,
            lead: lead.is_some(),
            window: None,
        };
        if let Some((sigmas, _)) = lead {
            if k_n >= WINDOW_MIN_KERNELS {
                kern.window = kern.window_bounds(&sigmas[..n], kern.exact_bmax());
            }
        }
        kern
    }
}

/// An open-addressing memo of `truncnorm::log_gauss_mass` keyed by the exact
/// bits of its arguments (a pure function, so a hit returns the same value).
/// One kept across suggestions (in the study's `SamplerCache`) serves the
/// truncation masses and discrete bin masses that recur from ask to ask: the
/// same integer offsets, steps and bandwidths. The table starts small and
/// doubles as it fills, up to its limit; when full at the limit, it starts over.
#[derive(Debug, Clone)]
pub struct MassMemo {
    /// Key and value side by side, so a probe reads one cache line: a memo
    /// kept across suggestions is cold when a suggestion starts.
    slots: Vec<Slot>,
    used: usize,
    limit: usize,
}

/// One entry of a [`MassMemo`]: the argument bits and the mass (32 bytes, two
/// to a cache line).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
struct Slot {
    key: (u64, u64),
    val: f64,
}

impl Default for MassMemo {
    /// A memo for one call (1,024 slots).
    fn default() -> Self {
        MassMemo::with_slots(1024)
    }
}

/// The first table of a memo (a small study never needs more).
const MEMO_FIRST_SLOTS: usize = 1024;
/// The key of a free slot (no `(a, b)` argument pair has these bits in both).
const FREE: (u64, u64) = (u64::MAX, u64::MAX);
const FREE_SLOT: Slot = Slot { key: FREE, val: 0.0 };

impl MassMemo {
    /// A memo of at most `slots` entries (rounded up to a power of two), half
    /// of which are used before it starts over.
    pub fn with_slots(slots: usize) -> Self {
        MassMemo {
            slots: Vec::new(),
            used: 0,
            limit: slots.max(16).next_power_of_two(),
        }
    }

    fn slot_of(key: (u64, u64), mask: usize) -> usize {
        let h = (key.0 ^ key.1.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> 40) as usize & mask
    }

    /// The slot holding `key`, or the free slot where it would go.
    fn probe(&self, key: (u64, u64)) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = Self::slot_of(key, mask);
        while self.slots[i].key != key && self.slots[i].key != FREE {
            i = (i + 1) & mask;
        }
        i
    }

    /// An empty table of `len` slots, with the entries of the old one when
    /// `keep` (a larger table), else without (starting over).
    fn rebuild(&mut self, len: usize, keep: bool) {
        if !keep && self.slots.len() == len {
            // Starting over at the limit: in place.
            self.slots.fill(FREE_SLOT);
            self.used = 0;
            return;
        }
        let old = std::mem::replace(&mut self.slots, vec![FREE_SLOT; len]);
        self.used = 0;
        if keep {
            for e in old.into_iter().filter(|e| e.key != FREE) {
                let i = self.probe(e.key);
                self.slots[i] = e;
                self.used += 1;
            }
        }
    }

    pub(crate) fn log_gauss_mass(&mut self, a: f64, b: f64) -> f64 {
        self.lookup((a.to_bits(), b.to_bits()), || truncnorm::log_gauss_mass(a, b))
    }

    /// `truncnorm::log_ndtr(a)`, kept in the same table (under a second
    /// argument no mass is asked for: a signalling NaN's bits).
    pub(crate) fn log_ndtr(&mut self, a: f64) -> f64 {
        self.lookup((a.to_bits(), LOG_NDTR_TAG), || truncnorm::log_ndtr(a))
    }

    /// The value kept under `key`, or `f()` kept there.
    fn lookup(&mut self, key: (u64, u64), f: impl FnOnce() -> f64) -> f64 {
        if key == FREE {
            return f();
        }
        if self.slots.is_empty() {
            self.rebuild(MEMO_FIRST_SLOTS.min(self.limit), false);
        }
        let i = self.probe(key);
        if self.slots[i].key == key {
            return self.slots[i].val;
        }
        let val = f();
        let i = if 2 * (self.used + 1) > self.slots.len() {
            // Half full: double the table, or start over at the limit.
            let len = self.slots.len();
            self.rebuild(if len < self.limit { 2 * len } else { len }, len < self.limit);
            self.probe(key)
        } else {
            i
        };
        self.slots[i] = Slot { key, val };
        self.used += 1;
        val
    }
}

/// The second key word of a memoised `log_ndtr`.
const LOG_NDTR_TAG: u64 = 0x7FF0_0000_0000_0ABC;

/// [`mixed_test_space`]'s distributions by name (as trials carry them).
#[cfg(test)]
pub(crate) fn mixed_test_dists() -> std::collections::BTreeMap<String, Distribution> {
    mixed_test_space()
        .params()
        .map(|(n, d)| (n.to_string(), d.clone()))
        .collect()
}

/// The space the history tests share: a float, a log float, an int, a log
/// int, a stepped float and a categorical.
#[cfg(test)]
pub(crate) fn mixed_test_space() -> crate::space::SearchSpace {
    crate::space::SearchSpace::from_json_str(
        r#"{"f": {"type": "float", "low": -5.0, "high": 5.0},
            "lf": {"type": "float", "low": 1e-4, "high": 1.0, "log": true},
            "i": {"type": "int", "low": 0, "high": 20},
            "li": {"type": "int", "low": 1, "high": 1000, "log": true},
            "s": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.1},
            "c": {"type": "categorical", "choices": ["a", "b", "c"]}}"#,
    )
    .expect("a valid space")
}

/// A trial of `dists` as tests build histories: COMPLETE with a uniform value,
/// each parameter missing with probability `missing`, else at `value_at(d,
/// u^skew)`; then RUNNING (no value) with probability `running`.
#[cfg(test)]
pub(crate) fn random_trial(
    number: u64,
    dists: &std::collections::BTreeMap<String, Distribution>,
    rng: &mut Rng,
    (missing, skew, running): (f64, i32, f64),
) -> crate::trial::FrozenTrial {
    use crate::trial::{FrozenTrial, TrialState};
    let mut t = FrozenTrial::new(number, TrialState::Complete);
    t.value = Some(uniform01(rng));
    for (name, d) in dists {
        if uniform01(rng) < missing {
            continue; // a missing parameter
        }
        let u = uniform01(rng).powi(skew);
        t.params.insert(name.clone(), value_at(d, u));
        t.distributions.insert(name.clone(), d.clone());
    }
    if uniform01(rng) < running {
        t.state = TrialState::Running;
        t.value = None;
    }
    t
}

/// A value of `d` at the quantile-like position `u` in [0, 1) (tests build
/// histories with it): log-uniform for log ranges, ten steps for stepped floats,
/// rounded for integers, one of three choices for categoricals.
#[cfg(test)]
pub(crate) fn value_at(d: &Distribution, u: f64) -> f64 {
    match d {
        Distribution::Float { low, high, log: true, .. } => (low.ln() + u * (high.ln() - low.ln())).exp(),
        Distribution::Float { low, step: Some(st), .. } => low + (u * 10.0).round() * st,
        Distribution::Float { low, high, .. } => low + u * (high - low),
        Distribution::Int { low, high, log: true, .. } => ((*low as f64).ln() + u * ((*high as f64).ln()))
            .exp()
            .round()
            .clamp(*low as f64, *high as f64),
        Distribution::Int { low, high, .. } => (*low as f64 + u * (high - low) as f64).round(),
        Distribution::Categorical { .. } => (u * 3.0).floor().min(2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::trial_rng;

    fn bits(v: Vec<(f64, u32)>) -> Vec<(u64, u32)> {
        v.into_iter().map(|(x, i)| (x.to_bits(), i)).collect()
    }

    #[test]
    fn the_weights_are_summed_as_numpy_sums_them() {
        // numpy 2.4: np.append(optuna's default_weights(n), [1.0]).sum(), at n
        // where the sum in order rounds differently (and two where it does not).
        for (n, want) in [
            (7, 8.0),
            (31, 29.096774193548384),
            (56, 41.77678571428572),
            (200, 113.9375),
            (3001, 1514.4958347217594),
            (8200, 4113.998475609756),
            (10_000, 5013.99875),
        ] {
            let mut w = Vec::new();
            let total = raw_weights_into(n, 1.0, &mut w);
            assert_eq!(total.to_bits(), f64::to_bits(want), "n={n}: {total} vs numpy's {want}");
        }
        assert_eq!(numpy_sum(&[]), 0.0);
        assert_eq!(numpy_sum(&[1.5; 9]), 13.5);
    }

    #[test]
    fn the_weight_ramp_is_numpys_linspace_to_the_bit() {
        // numpy 2.4: np.linspace(1 / n, 1, n - 25)[i], at entries where
        // `start + (1 - start) * i / (m - 1)` rounds differently.
        for (n, i, want) in [
            (100, 17, 0.23743243243243245),
            (100, 19, 0.2641891891891892),
            (100, 21, 0.29094594594594597),
            (1000, 6, 0.007154004106776181),
            (1000, 12, 0.013308008213552363),
            (1000, 15, 0.016385010266940454),
        ] {
            assert_eq!(default_weight(n, i).to_bits(), f64::to_bits(want), "n={n} i={i}");
        }
        for n in [27, 100, 1000, 10_000] {
            let w = default_weights(n);
            assert_eq!(w[0], 1.0 / n as f64);
            assert!(w[n - 26..].iter().all(|x| *x == 1.0), "n={n}: the ramp ends at exactly 1");
        }
        // A ramp of one entry is its start (linspace(start, 1, 1)).
        assert_eq!(default_weights(26)[0], 1.0 / 26.0);
        assert_eq!(default_weights(24), vec![1.0; 24]);
        for n in (0..60).chain([99, 100, 1000, 4097]) {
            let w = default_weights(n);
            assert_eq!(w.len(), n);
            for (i, x) in w.iter().enumerate() {
                assert_eq!(x.to_bits(), default_weight(n, i).to_bits(), "n={n} i={i}");
            }
        }
    }

    #[test]
    fn the_memo_grows_to_its_limit_and_always_returns_the_function() {
        let mut memo = MassMemo::with_slots(8192);
        let args: Vec<(f64, f64)> = (0..10_000).map(|i| (-(i as f64) / 997.0, 0.5 + (i % 13) as f64 / 7.0)).collect();
        let mut lens = Vec::new();
        for round in 0..3 {
            for (a, b) in &args {
                let want = truncnorm::log_gauss_mass(*a, *b);
                assert_eq!(memo.log_gauss_mass(*a, *b).to_bits(), want.to_bits(), "round {round}");
                assert!(2 * memo.used <= memo.slots.len() && memo.slots.len() <= 8192);
                if lens.last() != Some(&memo.slots.len()) {
                    lens.push(memo.slots.len());
                }
            }
        }
        // 1,024 slots at first, doubled as it filled, then starting over at 8,192.
        assert_eq!(lens, vec![1024, 2048, 4096, 8192]);
        // Entries survive a doubling: a repeated small set hits after growth.
        let mut memo = MassMemo::with_slots(4096);
        for (a, b) in args.iter().take(600) {
            memo.log_gauss_mass(*a, *b);
        }
        assert_eq!((memo.slots.len(), memo.used), (2048, 600));
        for (a, b) in args.iter().take(600) {
            assert_eq!(memo.slots[memo.probe((a.to_bits(), b.to_bits()))].val.to_bits(), truncnorm::log_gauss_mass(*a, *b).to_bits());
        }
    }

    #[test]
    fn bucket_argsort_matches_packed_sort() {
        let mut rng = trial_rng(7, 0, 0);
        for case in 0..60 {
            let n = 64 + case * 37;
            let xs: Vec<f64> = (0..n)
                .map(|i| {
                    let u = uniform01(&mut rng);
                    match case % 6 {
                        0 => u * 10.0 - 5.0,                   // continuous
                        1 => (u * 101.0).floor(),              // integers, many ties
                        2 => (u * 11.0).floor() * 0.1,         // stepped
                        3 => u.powi(40) * 1e-3,                // crowded near 0
                        4 => [0.0, -0.0, 1.0, -1.0][i % 4],    // signed zeros
                        _ => (u * 1e6).ln() + 1e-300 * u,      // log-transformed
                    }
                })
                .collect();
            assert_eq!(bits(argsort_stable(&xs)), bits(argsort_packed(&xs)), "case {case}");
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.sort_by(|a, b| xs[*a as usize].total_cmp(&xs[*b as usize]));
            let got: Vec<u32> = argsort_stable(&xs).iter().map(|p| p.1).collect();
            assert_eq!(got, order, "case {case}");
        }
        let odd = [f64::NAN, 1.0, f64::INFINITY, -2.0, 1.0, f64::NEG_INFINITY];
        let xs: Vec<f64> = (0..200).map(|i| odd[i % odd.len()]).collect();
        assert_eq!(bits(argsort_stable(&xs)), bits(argsort_packed(&xs)));
        let wide: Vec<f64> = (0..100).map(|i| if i % 2 == 0 { -1e308 } else { 1e308 }).collect();
        assert_eq!(bits(argsort_stable(&wide)), bits(argsort_packed(&wide)));
    }

    /// Parameters of every kind, for the window's tests.
    fn mixed_dists() -> [Distribution; 6] {
        use crate::space::Choice;
        [
            Distribution::Float { low: -5.0, high: 5.0, log: false, step: None },
            Distribution::Float { low: 1e-4, high: 1.0, log: true, step: None },
            Distribution::Int { low: 0, high: 100, log: false, step: 1 },
            Distribution::Categorical {
                choices: ["a", "b", "c"].iter().map(|c| Choice::Str(c.to_string())).collect(),
            },
            Distribution::Float { low: 0.0, high: 1.0, log: false, step: Some(0.1) },
            Distribution::Int { low: 1, high: 1000, log: true, step: 1 },
        ]
    }

    /// Test case `case`: a subset of `dists` (a continuous one first), `n`
    /// clustered observations of it, as a study's history is, and options.
    fn clustered_case<'d>(
        dists: &'d [Distribution],
        case: u32,
        n: usize,
        rng: &mut Rng,
    ) -> (Vec<&'d Distribution>, Vec<Vec<f64>>, ParzenParams) {
        let pick: Vec<&Distribution> = match case % 4 {
            0 => dists.iter().collect(),
            1 => vec![&dists[1], &dists[0]],
            2 => vec![&dists[0], &dists[2], &dists[4]],
            _ => vec![&dists[1], &dists[3], &dists[5]],
        };
        let cols: Vec<Vec<f64>> = pick
            .iter()
            .map(|d| {
                (0..n)
                    .map(|_| {
                        let u = uniform01(rng).powi(1 + (case % 3) as i32);
                        value_at(d, u)
                    })
                    .collect()
            })
            .collect();
        let p = ParzenParams {
            prior_weight: 1.0,
            consider_magic_clip: case % 5 != 4,
            consider_endpoints: case % 7 == 3,
        };
        (pick, cols, p)
    }

    #[test]
    fn window_gives_the_full_loop_result() {
        let dists = mixed_dists();
        let mut rng = trial_rng(11, 0, 0);
        for case in 0..24u32 {
            let n = [300usize, 700, 1500][case as usize % 3];
            let (pick, cols, p) = clustered_case(&dists, case, n, &mut rng);
            let est = ParzenEstimator::new(&cols, &pick, &p);
            let mut points = est.sample(&mut rng, 24);
            let empty = vec![Vec::new(); pick.len()];
            points.extend(ParzenEstimator::new(&empty, &pick, &p).sample(&mut rng, 8));
            let a = est.log_pdf_impl(&points, true, &mut MassMemo::default());
            let b = est.log_pdf_impl(&points, false, &mut MassMemo::with_slots(16));
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.to_bits(), y.to_bits(), "case {case}: {x} vs {y}");
            }
        }
        let used = score::WINDOW_USED.load(std::sync::atomic::Ordering::Relaxed);
        assert!(used > 100, "the window scored only {used} points");
    }

    /// The argmax of `lb - log g` as the sampler took it before scoring was
    /// cut short: every point scored, the first largest value kept.
    fn argmax_of_all(est: &ParzenEstimator, points: &[Vec<f64>], lb: &[f64]) -> usize {
        let la = est.log_pdf(points);
        let (mut best, mut best_val) = (0, f64::NEG_INFINITY);
        for (i, (b, a)) in lb.iter().zip(&la).enumerate() {
            if b - a > best_val {
                best_val = b - a;
                best = i;
            }
        }
        best
    }

    #[test]
    fn best_acquisition_picks_what_scoring_every_point_picks() {
        let dists = mixed_dists();
        let mut rng = trial_rng(12, 0, 0);
        let skipped_before = score::SKIPPED.load(std::sync::atomic::Ordering::Relaxed);
        let gave_up_before = score::GAVE_UP.with(|c| c.get());
        for case in 0..160u32 {
            let n = [40usize, 300, 700, 1500][case as usize % 4];
            let (pick, cols, p) = clustered_case(&dists, case, n, &mut rng);
            let above = ParzenEstimator::new(&cols, &pick, &p);
            // "Below": the first 25 observations; candidates drawn from it.
            let few: Vec<Vec<f64>> = cols.iter().map(|c| c[..25].to_vec()).collect();
            let below = ParzenEstimator::new(&few, &pick, &p);
            let mut points = below.sample(&mut rng, 24);
            // Exact ties: repeated candidates (the first must win).
            points[7] = points[3].clone();
            points[20] = points[3].clone();
            let lb = below.log_pdf(&points);
            let mut variants = vec![lb.clone(), vec![0.0; lb.len()]];
            let mut odd = lb.clone();
            odd[0] = f64::NAN;
            odd[5] = f64::NEG_INFINITY;
            odd[9] = f64::INFINITY;
            variants.push(odd);
            variants.push(vec![f64::NEG_INFINITY; lb.len()]);
            for (v, lbv) in variants.iter().enumerate() {
                let want = argmax_of_all(&above, &points, lbv);
                let got = above.best_acquisition(&points, lbv, &mut MassMemo::default());
                assert_eq!(got, want, "case {case}, variant {v}");
            }
        }
        let skipped = score::SKIPPED.load(std::sync::atomic::Ordering::Relaxed) - skipped_before;
        assert!(skipped > 200, "only {skipped} candidates were skipped");
        let gave_up = score::GAVE_UP.with(|c| c.get()) - gave_up_before;
        assert!(gave_up > 50, "only {gave_up} scores stopped early");
    }
}
