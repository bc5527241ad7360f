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
        let v = if m == 1 { start } else { start + (1.0 - start) * i as f64 / (m - 1) as f64 };
        w.push(v);
    }
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

#[derive(Debug, Clone)]
enum Dim {
    Categorical {
        n_choices: usize,
        /// `n_kernels × n_choices`, row-major, rows sum to 1.
        probs: Vec<f64>,
        log_probs: Vec<f64>,
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

fn numerical_dim(obs: &[f64], dist: &Distribution, p: &ParzenParams) -> Dim {
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
    if n > 0 {
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by(|a, b| mus[*a].total_cmp(&mus[*b]));
        let sorted: Vec<f64> = idx.iter().map(|i| mus[*i]).collect();
        let with_ends = |i: usize| -> f64 {
            // index into [lo, sorted..., hi]
            if i == 0 {
                lo
            } else if i == n + 1 {
                hi
            } else {
                sorted[i - 1]
            }
        };
        let mut ss: Vec<f64> = (1..=n)
            .map(|i| (with_ends(i) - with_ends(i - 1)).max(with_ends(i + 1) - with_ends(i)))
            .collect();
        if !p.consider_endpoints && n >= 2 {
            ss[0] = with_ends(2) - with_ends(1);
            ss[n - 1] = with_ends(n) - with_ends(n - 1);
        }
        let maxsigma = hi - lo;
        let minsigma = if p.consider_magic_clip {
            (hi - lo) / 100f64.min(1.0 + (n + 1) as f64)
        } else {
            1e-12
        };
        for (k, i) in idx.iter().enumerate() {
            sigmas[*i] = ss[k].max(minsigma).min(maxsigma);
        }
    }
    mus.push(0.5 * (lo + hi));
    sigmas.push(hi - lo);
    let log_norm: Vec<f64> = mus
        .iter()
        .zip(&sigmas)
        .map(|(m, s)| truncnorm::log_gauss_mass((lo - m) / s, (hi - m) / s))
        .collect();
    let (mut pairs, mut pair_log_norm, mut pair_of) = (Vec::new(), Vec::new(), Vec::new());
    if step.is_some() {
        let mut order: Vec<usize> = (0..mus.len()).collect();
        order.sort_by(|a, b| mus[*a].total_cmp(&mus[*b]).then(sigmas[*a].total_cmp(&sigmas[*b])));
        pair_of = vec![0u32; mus.len()];
        for i in order {
            let key = (mus[i], sigmas[i]);
            if pairs.last() != Some(&key) {
                pairs.push(key);
                pair_log_norm.push(log_norm[i]);
            }
            pair_of[i] = (pairs.len() - 1) as u32;
        }
    }
    Dim::Numerical { log, step, low, high, lo_t: lo, hi_t: hi, mus, sigmas, log_norm, pairs, pair_log_norm, pair_of }
}

fn categorical_dim(obs: &[f64], n_choices: usize, p: &ParzenParams) -> Dim {
    let n_kernels = obs.len() + 1;
    let mut probs = if obs.is_empty() {
        vec![1.0 / n_choices as f64; n_choices]
    } else {
        vec![p.prior_weight / n_kernels as f64; n_kernels * n_choices]
    };
    if !obs.is_empty() {
        for (k, o) in obs.iter().enumerate() {
            let c = (*o as usize).min(n_choices - 1);
            probs[k * n_choices + c] += 1.0;
        }
        for row in probs.chunks_mut(n_choices) {
            let s: f64 = row.iter().sum();
            let s = if s == 0.0 { 1.0 } else { s };
            row.iter_mut().for_each(|x| *x /= s);
        }
    }
    let log_probs = probs.iter().map(|x| x.ln()).collect();
    Dim::Categorical { n_choices, probs, log_probs }
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
                Distribution::Categorical { choices } => categorical_dim(obs, choices.len().max(1), p),
                _ => numerical_dim(obs, d, p),
            })
            .collect();
        ParzenEstimator { weights, log_weights, dims }
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
    pub fn categorical_probs(&self, dim: usize) -> Option<&[f64]> {
        match self.dims.get(dim)? {
            Dim::Categorical { probs, .. } => Some(probs),
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
                    Dim::Categorical { n_choices, probs, .. } => {
                        let row = if probs.len() == *n_choices { &probs[..] } else { &probs[k * n_choices..(k + 1) * n_choices] };
                        let q = uniform01(rng);
                        let mut c = 0.0;
                        let mut chosen = n_choices - 1;
                        for (i, pr) in row.iter().enumerate() {
                            c += pr;
                            if q < c {
                                chosen = i;
                                break;
                            }
                        }
                        chosen as f64
                    }
                    Dim::Numerical { log, step, low, high, lo_t, hi_t, mus, sigmas, .. } => {
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
                            Some(st) => (low + ((x - low) / st).round_ties_even() * st).clamp(*low, *high),
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
    pub fn log_pdf(&self, points: &[Vec<f64>]) -> Vec<f64> {
        let k_n = self.weights.len();
        let s_n = points.len();
        // Per-kernel constant and the running sum of -z²/2 for continuous dims.
        let mut base = self.log_weights.clone();
        let mut acc = vec![0.0f64; s_n * k_n];
        let mut dead = vec![false; s_n];
        for (d, dim) in self.dims.iter().enumerate() {
            match dim {
                Dim::Categorical { n_choices, log_probs, .. } => {
                    let single_row = log_probs.len() == *n_choices;
                    for (s, p) in points.iter().enumerate() {
                        let c = p[d];
                        if !(c >= 0.0 && (c as usize) < *n_choices) {
                            dead[s] = true;
                            continue;
                        }
                        let c = c as usize;
                        let row = &mut acc[s * k_n..(s + 1) * k_n];
                        for (k, a) in row.iter_mut().enumerate() {
                            let idx = if single_row { c } else { k * n_choices + c };
                            *a += log_probs[idx];
                        }
                    }
                }
                Dim::Numerical { log, step: None, lo_t, hi_t, mus, sigmas, log_norm, .. } => {
                    for k in 0..k_n {
                        base[k] -= LN_SQRT_2PI + sigmas[k].ln() + log_norm[k];
                    }
                    let inv: Vec<f64> = sigmas.iter().map(|s| 1.0 / s).collect();
                    for (s, p) in points.iter().enumerate() {
                        let x = if *log { p[d].ln() } else { p[d] };
                        if !(x >= *lo_t && x <= *hi_t) {
                            dead[s] = true;
                            continue;
                        }
                        let row = &mut acc[s * k_n..(s + 1) * k_n];
                        for ((a, m), iv) in row.iter_mut().zip(mus).zip(&inv) {
                            let z = (x - m) * iv;
                            *a -= 0.5 * z * z;
                        }
                    }
                }
                Dim::Numerical { log, step: Some(st), lo_t, hi_t, pairs, pair_log_norm, pair_of, .. } => {
                    // Points often share values and kernels often share (mu, sigma):
                    // evaluate each distinct value against each distinct pair once.
                    let mut uniq: Vec<(f64, Vec<f64>)> = Vec::new();
                    for (s, p) in points.iter().enumerate() {
                        let v = p[d];
                        let pos = match uniq.iter().position(|(u, _)| *u == v) {
                            Some(i) => i,
                            None => {
                                let (l, r) = (v - st / 2.0, v + st / 2.0);
                                let (l, r) = if *log { (l.ln(), r.ln()) } else { (l, r) };
                                let (l, r) = (l.max(*lo_t), r.min(*hi_t));
                                let masses = pairs
                                    .iter()
                                    .zip(pair_log_norm)
                                    .map(|((m, sg), ln)| {
                                        if l.partial_cmp(&r) != Some(std::cmp::Ordering::Less) {
                                            f64::NEG_INFINITY
                                        } else {
                                            truncnorm::log_gauss_mass((l - m) / sg, (r - m) / sg) - ln
                                        }
                                    })
                                    .collect();
                                uniq.push((v, masses));
                                uniq.len() - 1
                            }
                        };
                        let masses = &uniq[pos].1;
                        let row = &mut acc[s * k_n..(s + 1) * k_n];
                        for (a, pi) in row.iter_mut().zip(pair_of) {
                            *a += masses[*pi as usize];
                        }
                    }
                }
            }
        }
        (0..s_n)
            .map(|s| {
                if dead[s] {
                    return f64::NEG_INFINITY;
                }
                let row = &mut acc[s * k_n..(s + 1) * k_n];
                let mut mx = f64::NEG_INFINITY;
                for (a, b) in row.iter_mut().zip(&base) {
                    *a += b;
                    if *a > mx {
                        mx = *a;
                    }
                }
                if !mx.is_finite() {
                    return mx;
                }
                // Terms below e^-50 of the largest cannot change the sum at double
                // precision (even 10^4 of them add < 2e-18); skipping them saves exp().
                let sum: f64 = row.iter().map(|a| a - mx).filter(|d| *d > -50.0).map(f64::exp).sum();
                mx + sum.ln()
            })
            .collect()
    }
}
