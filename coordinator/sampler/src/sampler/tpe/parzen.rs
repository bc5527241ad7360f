//! The Parzen estimator of Optuna's TPE: a mixture of product kernels, one per
//! observation plus a prior kernel. Numerical parameters get truncated normals
//! (in log space for `log=true`, widened by half a step for steps and integers)
//! with Optuna's bandwidth rule and magic clip; categorical parameters get
//! Optuna's categorical kernel (each observation's choice boosted by 1 on top of a
//! prior of `prior_weight / n_kernels`).

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
    if n < 25 {
        return vec![1.0; n];
    }
    let m = n - 25;
    let start = 1.0 / n as f64;
    let mut w = Vec::with_capacity(n);
    for i in 0..m {
        let v = if m == 1 {
            start
        } else {
            start + (1.0 - start) * i as f64 / (m - 1) as f64
        };
        w.push(v);
    }
    w.extend(std::iter::repeat_n(1.0, 25));
    w
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
    },
}

/// A mixture of product distributions over a group of parameters.
#[derive(Debug, Clone)]
pub struct ParzenEstimator {
    weights: Vec<f64>,
    log_weights: Vec<f64>,
    dims: Vec<Dim>,
}

/// Stable argsort of floats (total order): sorting packed integer keys
/// (order-preserving bits, then the index) is much faster than sorting with a
/// comparison closure.
fn argsort_stable(xs: &[f64]) -> Vec<u32> {
    let key = |x: f64| -> u64 {
        let b = x.to_bits();
        if b >> 63 == 1 {
            !b
        } else {
            b | (1 << 63)
        }
    };
    let mut packed: Vec<u128> = xs
        .iter()
        .enumerate()
        .map(|(i, x)| ((key(*x) as u128) << 32) | i as u128)
        .collect();
    packed.sort_unstable();
    packed
        .into_iter()
        .map(|p| (p & 0xFFFF_FFFF) as u32)
        .collect()
}

fn numerical_dim(obs: &[f64], dist: &Distribution, p: &ParzenParams) -> Dim {
    let (low, high, log, step) = match dist {
        Distribution::Float {
            low,
            high,
            log,
            step,
        } => (*low, *high, *log, *step),
        Distribution::Int {
            low,
            high,
            log,
            step,
        } => (*low as f64, *high as f64, *log, Some(*step as f64)),
        Distribution::Categorical { .. } => (0.0, 1.0, false, None),
    };
    let (mut lo, mut hi) = (low, high);
    if let Some(s) = step {
        lo -= s / 2.0;
        hi += s / 2.0;
    }
    let mut mus: Vec<f64> = obs.to_vec();
    if log {
        lo = lo.ln();
        hi = hi.ln();
        for m in &mut mus {
            *m = m.ln();
        }
    }
    let n = mus.len();
    let mut sigmas = vec![0.0; n];
    // Observation indices sorted by value; ties keep trial order (a stable argsort).
    let idx: Vec<(f64, u32)> = argsort_stable(&mus)
        .into_iter()
        .map(|i| (mus[i as usize], i))
        .collect();
    if n > 0 {
        let with_ends = |i: usize| -> f64 {
            // index into [lo, sorted..., hi]
            if i == 0 {
                lo
            } else if i == n + 1 {
                hi
            } else {
                idx[i - 1].0
            }
        };
        let maxsigma = hi - lo;
        let minsigma = if p.consider_magic_clip {
            (hi - lo) / 100f64.min(1.0 + (n + 1) as f64)
        } else {
            1e-12
        };
        for k in 0..n {
            let i = k + 1;
            let mut s = (with_ends(i) - with_ends(i - 1)).max(with_ends(i + 1) - with_ends(i));
            if !p.consider_endpoints && n >= 2 {
                if k == 0 {
                    s = with_ends(2) - with_ends(1);
                } else if k == n - 1 {
                    s = with_ends(n) - with_ends(n - 1);
                }
            }
            sigmas[idx[k].1 as usize] = s.max(minsigma).min(maxsigma);
        }
    }
    mus.push(0.5 * (lo + hi));
    sigmas.push(hi - lo);
    let mass = |m: f64, s: f64| truncnorm::log_gauss_mass((lo - m) / s, (hi - m) / s);
    let (mut pairs, mut pair_log_norm, mut pair_of, mut log_norm) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    if step.is_some() {
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
        log_norm = mus.iter().zip(&sigmas).map(|(m, s)| mass(*m, *s)).collect();
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
    }
}

fn categorical_dim(obs: &[f64], n_choices: usize, p: &ParzenParams) -> Dim {
    let n_kernels = (obs.len() + 1) as f64;
    // Row = prior_weight / n_kernels everywhere, +1 at the observed choice, normalised.
    let base = p.prior_weight / n_kernels;
    let sum = 1.0 + base * n_choices as f64;
    let chosen = obs
        .iter()
        .map(|o| (*o as usize).min(n_choices - 1) as u32)
        .collect();
    Dim::Categorical {
        n_choices,
        chosen,
        p_hit: (base + 1.0) / sum,
        p_miss: base / sum,
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
        let n = columns.first().map_or(0, Vec::len);
        let mut weights = if n == 0 {
            vec![1.0]
        } else {
            let mut w = default_weights(n);
            w.push(p.prior_weight);
            w
        };
        let total: f64 = weights.iter().sum();
        let total = if total > 0.0 { total } else { 1.0 };
        weights.iter_mut().for_each(|w| *w /= total);
        let log_weights = weights.iter().map(|w| w.ln()).collect();
        let dims = columns
            .iter()
            .zip(dists)
            .map(|(obs, d)| match d {
                Distribution::Categorical { choices } => {
                    categorical_dim(obs, choices.len().max(1), p)
                }
                _ => numerical_dim(obs, d, p),
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
        let mut cum = Vec::with_capacity(self.weights.len());
        let mut acc = 0.0;
        for w in &self.weights {
            acc += w;
            cum.push(acc);
        }
        let mut out = Vec::with_capacity(size);
        for _ in 0..size {
            let u = uniform01(rng) * acc;
            let k = cum.partition_point(|c| *c <= u).min(self.weights.len() - 1);
            let mut point = Vec::with_capacity(self.dims.len());
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
                        let z = truncnorm::ppf(uniform01(rng), (lo_t - m) / s, (hi_t - m) / s);
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
            out.push(point);
        }
        out
    }

    /// Log density (log probability for discrete parameters) of each point.
    ///
    /// Exact except that a kernel whose contribution to a point is provably below
    /// `e^-50` of the prior kernel's may get an upper bound instead of its exact
    /// (tiny) value in a discrete dimension; such terms are dropped from the sum
    /// either way, so the result is the same at double precision.
    pub fn log_pdf(&self, points: &[Vec<f64>]) -> Vec<f64> {
        let k_n = self.weights.len();
        let s_n = points.len();
        let prior = k_n - 1;
        // Per-kernel constant: log weight and the normalisers of continuous dims.
        let mut base = self.log_weights.clone();
        // Upper bound of each kernel's log density at any point (for pruning).
        let mut bound = self.log_weights.clone();
        let mut dead = vec![false; s_n];
        let mut cont: Vec<(usize, Vec<f64>)> = Vec::new(); // (dim, 1/sigma)
        let mut discrete = Vec::new();
        for (d, dim) in self.dims.iter().enumerate() {
            match dim {
                Dim::Categorical { n_choices, .. } => {
                    for (s, p) in points.iter().enumerate() {
                        if !(p[d] >= 0.0 && (p[d] as usize) < *n_choices) {
                            dead[s] = true;
                        }
                    }
                }
                Dim::Numerical {
                    log,
                    step: None,
                    lo_t,
                    hi_t,
                    sigmas,
                    log_norm,
                    ..
                } => {
                    for k in 0..k_n {
                        let c = LN_SQRT_2PI + sigmas[k].ln() + log_norm[k];
                        base[k] -= c;
                        bound[k] -= c.min(0.0);
                    }
                    for (s, p) in points.iter().enumerate() {
                        let x = if *log { p[d].ln() } else { p[d] };
                        if !(x >= *lo_t && x <= *hi_t) {
                            dead[s] = true;
                        }
                    }
                    cont.push((d, sigmas.iter().map(|s| 1.0 / s).collect()));
                }
                Dim::Numerical {
                    pair_log_norm,
                    pair_of,
                    ..
                } => {
                    for k in 0..k_n {
                        bound[k] -= pair_log_norm[pair_of[k] as usize].min(0.0);
                    }
                    discrete.push(d);
                }
            }
        }
        let bound_max = bound.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let edges = |d: usize, v: f64| -> (f64, f64) {
            match &self.dims[d] {
                Dim::Numerical {
                    log,
                    step: Some(st),
                    lo_t,
                    hi_t,
                    ..
                } => {
                    let (l, r) = (v - st / 2.0, v + st / 2.0);
                    let (l, r) = if *log { (l.ln(), r.ln()) } else { (l, r) };
                    (l.max(*lo_t), r.min(*hi_t))
                }
                _ => (v, v),
            }
        };
        let exact = |l: f64, r: f64, m: f64, sg: f64, ln: f64| -> f64 {
            if l.partial_cmp(&r) != Some(std::cmp::Ordering::Less) {
                f64::NEG_INFINITY
            } else {
                truncnorm::log_gauss_mass((l - m) / sg, (r - m) / sg) - ln
            }
        };
        // Value of one kernel at one point, exactly (used for the prior kernel).
        let kernel_value = |k: usize, p: &[f64]| -> f64 {
            let mut v = base[k];
            for (d, dim) in self.dims.iter().enumerate() {
                v += match dim {
                    Dim::Categorical {
                        n_choices,
                        chosen,
                        p_hit,
                        p_miss,
                    } => Dim::cat_prob(chosen, *n_choices, *p_hit, *p_miss, k, p[d] as usize).ln(),
                    Dim::Numerical {
                        log,
                        step: None,
                        mus,
                        sigmas,
                        ..
                    } => {
                        let x = if *log { p[d].ln() } else { p[d] };
                        let z = (x - mus[k]) / sigmas[k];
                        -0.5 * z * z
                    }
                    Dim::Numerical {
                        pairs,
                        pair_log_norm,
                        pair_of,
                        ..
                    } => {
                        let pi = pair_of[k] as usize;
                        let (l, r) = edges(d, p[d]);
                        exact(l, r, pairs[pi].0, pairs[pi].1, pair_log_norm[pi])
                    }
                };
            }
            v
        };
        // Every kernel far below the prior kernel (by more than 50 in log) can get an
        // upper bound instead of its exact discrete masses.
        let prior_val: Vec<f64> = points
            .iter()
            .zip(&dead)
            .map(|(p, dd)| {
                if *dd {
                    f64::INFINITY
                } else {
                    kernel_value(prior, p)
                }
            })
            .collect();
        // Discrete dims: each distinct value against each distinct (mu, sigma) once.
        let mut disc_tables: Vec<(usize, Vec<usize>, Vec<Vec<f64>>)> = Vec::new(); // (dim, value index per point, masses)
        for &d in &discrete {
            let Dim::Numerical {
                pairs,
                pair_log_norm,
                ..
            } = &self.dims[d]
            else {
                continue;
            };
            let mut uniq: Vec<f64> = Vec::new();
            let mut which = Vec::with_capacity(s_n);
            for p in points {
                let v = p[d];
                let i = uniq.iter().position(|u| *u == v).unwrap_or_else(|| {
                    uniq.push(v);
                    uniq.len() - 1
                });
                which.push(i);
            }
            let tables = uniq
                .iter()
                .enumerate()
                .map(|(u, v)| {
                    let floor = which
                        .iter()
                        .zip(&prior_val)
                        .filter(|(w, _)| **w == u)
                        .map(|(_, pv)| *pv)
                        .fold(f64::INFINITY, f64::min);
                    let (l, r) = edges(d, *v);
                    pairs
                        .iter()
                        .zip(pair_log_norm)
                        .map(|((m, sg), ln)| {
                            let (a, b) = ((l - m) / sg, (r - m) / sg);
                            if a > 0.0 || b < 0.0 {
                                // Mass <= width * pdf(nearest edge): a cheap upper bound.
                                let near = a.abs().min(b.abs());
                                let ub = (b - a).ln() - 0.5 * near * near - LN_SQRT_2PI - ln;
                                if ub + bound_max < floor - 50.0 {
                                    return ub;
                                }
                            }
                            exact(l, r, *m, *sg, *ln)
                        })
                        .collect()
                })
                .collect();
            disc_tables.push((d, which, tables));
        }
        let mut row = vec![0.0f64; k_n];
        (0..s_n)
            .map(|s| {
                if dead[s] {
                    return f64::NEG_INFINITY;
                }
                let p = &points[s];
                row.copy_from_slice(&base);
                for (d, dim) in self.dims.iter().enumerate() {
                    if let Dim::Categorical {
                        n_choices,
                        chosen,
                        p_hit,
                        p_miss,
                    } = dim
                    {
                        let c = p[d] as u32;
                        let (l_hit, l_miss) = (p_hit.ln(), p_miss.ln());
                        for (a, o) in row.iter_mut().zip(chosen) {
                            *a += if *o == c { l_hit } else { l_miss };
                        }
                        row[prior] += (1.0 / *n_choices as f64).ln();
                    }
                }
                for (d, inv) in &cont {
                    if let Dim::Numerical { log, mus, .. } = &self.dims[*d] {
                        let x = if *log { p[*d].ln() } else { p[*d] };
                        for ((a, m), iv) in row.iter_mut().zip(mus).zip(inv) {
                            let z = (x - m) * iv;
                            *a -= 0.5 * z * z;
                        }
                    }
                }
                for (d, which, tables) in &disc_tables {
                    if let Dim::Numerical { pair_of, .. } = &self.dims[*d] {
                        let masses = &tables[which[s]];
                        for (a, pi) in row.iter_mut().zip(pair_of) {
                            *a += masses[*pi as usize];
                        }
                    }
                }
                let mx = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if !mx.is_finite() {
                    return mx;
                }
                // Terms below e^-50 of the largest cannot change the sum at double
                // precision (even 10^4 of them add < 2e-18); skipping them saves exp().
                let sum: f64 = row
                    .iter()
                    .map(|a| a - mx)
                    .filter(|d| *d > -50.0)
                    .map(f64::exp)
                    .sum();
                mx + sum.ln()
            })
            .collect()
    }
}
