//! Scoring points against a Parzen estimator: log densities and the best
//! acquisition value, computed exactly (every result has the bits of the plain
//! sum over all kernels) but touching only the kernels that can matter.
//!
//! The scorer reads a [`Kernels`] layout: the observation kernels in increasing
//! mu of the first continuous dimension (the "lead"), the prior kernel last, and
//! per kernel its summation position (its index in trial-number order), so that
//! the terms that survive are always added in the estimator's own order. A
//! layout is built per call from a [`ParzenEstimator`](super::parzen) or kept
//! across suggestions and updated in place (see `kept.rs`).

use std::borrow::Cow;

use super::fastexp::{exp_nonpos, exp_terms};
use super::parzen::{default_weight, MassMemo};
use super::truncnorm::LN_SQRT_2PI;

/// A categorical dimension: each observation kernel's choice, and the log
/// probabilities of its choice (`l_hit`), of any other (`l_miss`), and of any
/// choice under the prior (`l_prior`).
#[derive(Debug, Clone)]
pub(crate) struct CatKernels {
    pub d: usize,
    pub n_choices: usize,
    /// One per observation kernel (none for the prior).
    pub chosen: Vec<u32>,
    pub l_hit: f64,
    pub l_miss: f64,
    pub l_prior: f64,
}

/// A continuous dimension (transformed space): kernel means and inverse
/// bandwidths, the prior's included.
#[derive(Debug, Clone)]
pub(crate) struct ContKernels {
    pub d: usize,
    pub log: bool,
    pub lo_t: f64,
    pub hi_t: f64,
    pub mus: Vec<f64>,
    pub inv: Vec<f64>,
}

/// A discrete dimension (integers, stepped floats): the distinct `(mu, sigma)`
/// pairs with their log normalisers, and each kernel's pair, the prior's
/// included. Unused pairs may stay in the table (nothing refers to them).
#[derive(Debug, Clone)]
pub(crate) struct DiscKernels {
    pub d: usize,
    pub log: bool,
    pub step: f64,
    pub lo_t: f64,
    pub hi_t: f64,
    pub pairs: Vec<(f64, f64)>,
    pub pair_log_norm: Vec<f64>,
    pub pair_of: Vec<u32>,
}

/// What the window needs to bound kernels by their distance in the lead
/// dimension (see [`Window`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowBounds {
    /// The largest lead bandwidth of an observation kernel.
    pub sigma_max: f64,
    /// A bound of every observation kernel's terms other than the lead's
    /// `-z^2/2`: base, best categorical term, `-ln` of each discrete normaliser
    /// (continuous terms are <= 0).
    pub bmax: f64,
}

/// An estimator's kernels as the scorer reads them: `n` observation kernels,
/// then the prior at index `n`. Where `lead` holds, the observation kernels are
/// in increasing mu of `cont[0]`; `key[j]` is kernel `j`'s position in the
/// estimator's order (a permutation of `0..=n` with `key[n] = n`), the order in
/// which every density sums its kernels.
#[derive(Debug, Clone)]
pub(crate) struct Kernels {
    /// Each kernel's log weight minus the continuous normalisers
    /// (`ln(sqrt(2 pi) sigma) + log mass`), subtracted in dimension order.
    /// Empty where `lazy` gives it kernel by kernel instead.
    pub base: Vec<f64>,
    pub lazy: Option<LazyBase>,
    pub key: Vec<u32>,
    pub cats: Vec<CatKernels>,
    pub cont: Vec<ContKernels>,
    pub discs: Vec<DiscKernels>,
    pub lead: bool,
    /// Where the window applies (enough kernels, finite bounds).
    pub window: Option<WindowBounds>,
}

/// What `base` is computed from where the scorer computes it only for the
/// kernels it reaches (a weight, a division and a logarithm each): the number
/// of observations and the prior's weight (each weight follows from its
/// summation position), what the weights are divided by, and each continuous
/// dimension's normalisers in layout order.
#[derive(Debug, Clone, Default)]
pub(crate) struct LazyBase {
    pub n: usize,
    pub prior_weight: f64,
    pub total: f64,
    pub cnorm: Vec<Vec<f64>>,
    /// Each observation kernel's `-` continuous normalisers summed: with the
    /// largest log weight, a bound of its base without a logarithm (what the
    /// window filters kernels by before it computes the bases of those left).
    pub norm_sum: Vec<f64>,
}

impl LazyBase {
    /// The weight of the kernel at summation position `key`, before normalising.
    #[inline]
    pub(crate) fn raw(&self, key: u32) -> f64 {
        let i = key as usize;
        if self.n == 0 {
            1.0
        } else if i == self.n {
            self.prior_weight
        } else {
            default_weight(self.n, i)
        }
    }

    /// The base of kernel `j` (summation position `key`), as `base` holds it.
    #[inline]
    pub(crate) fn base(&self, j: usize, key: u32) -> f64 {
        let mut v = (self.raw(key) / self.total).ln();
        for c in &self.cnorm {
            v -= c[j];
        }
        v
    }
}

/// Buffers a scorer may take over from the last one (kept in the study's
/// sampler cache), so that its large tables are neither allocated nor zeroed
/// again on every suggestion: only their validity flags are reset.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScoreScratch {
    bases: Bases,
    tables: Vec<TableBufs>,
    window: WindowBufs,
    /// The scorer's per-point vectors (see [`Scorer`]).
    xs: Vec<f64>,
    first: Vec<Option<(f64, f64)>>,
    dead: Vec<bool>,
}

/// A window's buffers (see [`Window`]): each window kernel's bound without
/// and with its discrete bounds (then its value), the window positions of the
/// kernels that may reach the threshold, and the terms of the sum.
#[derive(Debug, Clone, Default)]
struct WindowBufs {
    row: Vec<f64>,
    upper: Vec<f64>,
    live: Vec<u32>,
    terms: Vec<(u32, f64)>,
}

/// A discrete table's buffers (see [`DiscTable`]): `n_values × n_pairs`
/// upper bounds (valid in the rows that are ready) and exact values (valid
/// where `known`).
#[derive(Debug, Clone, Default)]
struct TableBufs {
    upper: Vec<f64>,
    exact: Vec<f64>,
    known: Vec<bool>,
    /// The [`DiscTable`]'s own vectors, cleared and refilled by the next one.
    uniq: Vec<f64>,
    which: Vec<usize>,
    edges: Vec<(f64, f64)>,
    ready: Vec<bool>,
}

/// A scorer's bases of a lazy layout, filled as kernels are reached.
#[derive(Debug, Clone, Default)]
struct Bases {
    own: Vec<f64>,
    ready: Vec<bool>,
}

impl Bases {
    /// Bases for `kern` in the buffers of `last` (`own` is valid only where
    /// `ready`, so it is not cleared).
    fn new(kern: &Kernels, last: Bases) -> Self {
        let Bases { mut own, mut ready } = last;
        let n = if kern.lazy.is_some() { kern.len() } else { 0 };
        own.resize(n, 0.0);
        ready.clear();
        ready.resize(n, false);
        Bases { own, ready }
    }

    /// The base of kernel `k`.
    #[inline]
    fn get(&mut self, kern: &Kernels, k: usize) -> f64 {
        match &kern.lazy {
            None => kern.base[k],
            Some(lz) => {
                if !self.ready[k] {
                    self.own[k] = lz.base(k, kern.key[k]);
                    self.ready[k] = true;
                }
                self.own[k]
            }
        }
    }

    /// The bases of kernels `lo..hi`.
    #[inline]
    fn slice<'b>(&'b mut self, kern: &'b Kernels, lo: usize, hi: usize) -> &'b [f64] {
        match &kern.lazy {
            None => &kern.base[lo..hi],
            Some(_) => {
                for j in lo..hi {
                    self.get(kern, j);
                }
                &self.own[lo..hi]
            }
        }
    }
}

/// Estimators with at least this many kernels try the window.
pub(crate) const WINDOW_MIN_KERNELS: usize = 256;

/// Estimators with at most this many kernels get every discrete mass
/// computed in the full loop, without bounds first.
const DIRECT_MAX: usize = 64;

/// Kernels per block in the full loop.
const BLOCK: usize = 256;

impl Kernels {
    /// Number of kernels (observations and the prior).
    pub(crate) fn len(&self) -> usize {
        self.key.len()
    }

    /// `bmax` of [`WindowBounds`] computed exactly from `base`; `None` if NaN.
    pub(crate) fn exact_bmax(&self) -> Option<f64> {
        let n = self.len().checked_sub(1)?;
        let cat_max: f64 = self.cats.iter().map(|c| c.l_hit.max(c.l_miss)).sum();
        let mut bmax = f64::NEG_INFINITY;
        for (k, b0) in self.base[..n].iter().enumerate() {
            let mut b = b0 + cat_max;
            for t in &self.discs {
                b -= t.pair_log_norm[t.pair_of[k] as usize];
            }
            if b.is_nan() {
                return None;
            }
            bmax = bmax.max(b);
        }
        Some(bmax)
    }

    /// The window's bounds for lead bandwidths `lead_sigmas` (observation
    /// kernels, any order) and bound `bmax`, where the window applies.
    pub(crate) fn window_bounds(
        &self,
        lead_sigmas: &[f64],
        bmax: Option<f64>,
    ) -> Option<WindowBounds> {
        let n = self.len().checked_sub(1)?;
        let mut sigma_max: f64 = 0.0;
        for sg in lead_sigmas {
            if !(sg.is_finite() && *sg > 0.0) {
                return None;
            }
            sigma_max = sigma_max.max(*sg);
        }
        if self.cont.first()?.mus[..n].iter().any(|m| !m.is_finite()) {
            return None;
        }
        self.window_bounds_of(sigma_max, bmax)
    }

    /// The window's bounds given the largest lead bandwidth (the caller knows
    /// the lead means finite), where the window applies.
    pub(crate) fn window_bounds_of(
        &self,
        sigma_max: f64,
        bmax: Option<f64>,
    ) -> Option<WindowBounds> {
        let n = self.len().checked_sub(1)?;
        if !self.lead
            || self.len() < WINDOW_MIN_KERNELS
            || n == 0
            || !(sigma_max.is_finite() && sigma_max > 0.0)
        {
            return None;
        }
        Some(WindowBounds {
            sigma_max,
            bmax: bmax?,
        })
    }
}

/// One discrete dimension's masses for a set of points: per distinct point value
/// and distinct kernel `(mu, sigma)`, an upper bound (no special functions; a
/// value's row computed when a point with that value is first scored) and the
/// exact log mass (computed on first use).
struct DiscTable {
    /// Each point's distinct-value index.
    which: Vec<usize>,
    /// Bin edges (transformed space, clipped to the range) per distinct value.
    edges: Vec<(f64, f64)>,
    n_pairs: usize,
    /// Per distinct value: whether its row of `bufs.upper` is computed.
    ready: Vec<bool>,
    bufs: TableBufs,
}

/// `ln(w)` rounded up to a multiple of `ln 2` (an upper bound without a logarithm):
/// `w < 2^e` gives `ln(w) < e ln 2`. `+inf` where that does not apply.
fn ln_upper(w: f64) -> f64 {
    if !(w.is_finite() && w >= f64::MIN_POSITIVE) {
        return f64::INFINITY;
    }
    let e = ((w.to_bits() >> 52) & 0x7ff) as i64 - 1022;
    e as f64 * std::f64::consts::LN_2
}

impl DiscTable {
    /// The table of `k` for `points`, in the buffers `bufs` (`upper` and
    /// `exact` are valid only where flagged, so only the flags are reset).
    fn new(k: &DiscKernels, points: &[Vec<f64>], bufs: TableBufs) -> Self {
        let mut bufs = bufs;
        let mut uniq = std::mem::take(&mut bufs.uniq);
        let mut which = std::mem::take(&mut bufs.which);
        let mut edges = std::mem::take(&mut bufs.edges);
        let mut ready = std::mem::take(&mut bufs.ready);
        uniq.clear();
        which.clear();
        for p in points {
            let v = p[k.d];
            let i = uniq.iter().position(|u| *u == v).unwrap_or_else(|| {
                uniq.push(v);
                uniq.len() - 1
            });
            which.push(i);
        }
        edges.clear();
        edges.extend(uniq.iter().map(|v| {
            let (l, r) = (v - k.step / 2.0, v + k.step / 2.0);
            let (l, r) = if k.log { (l.ln(), r.ln()) } else { (l, r) };
            (l.max(k.lo_t), r.min(k.hi_t))
        }));
        ready.clear();
        ready.resize(edges.len(), false);
        bufs.uniq = uniq;
        let n_pairs = k.pairs.len();
        let n = edges.len() * n_pairs;
        bufs.upper.resize(n, 0.0);
        bufs.exact.resize(n, 0.0);
        bufs.known.clear();
        bufs.known.resize(n, false);
        DiscTable {
            which,
            ready,
            edges,
            n_pairs,
            bufs,
        }
    }

    /// The table's buffers, for the next table.
    fn into_bufs(self) -> TableBufs {
        let mut bufs = self.bufs;
        bufs.which = self.which;
        bufs.edges = self.edges;
        bufs.ready = self.ready;
        bufs
    }

    /// Computes point `s`'s row of upper bounds if not yet done (only the points
    /// that get scored need one).
    fn prepare(&mut self, k: &DiscKernels, s: usize) {
        let u = self.which[s];
        if self.ready[u] {
            return;
        }
        self.ready[u] = true;
        let n_p = self.n_pairs;
        let (l, r) = self.edges[u];
        let row = &mut self.bufs.upper[u * n_p..(u + 1) * n_p];
        for ((out, (m, sg)), ln) in row.iter_mut().zip(&k.pairs).zip(&k.pair_log_norm) {
            // The mass is at most 1, and outside the bin at most
            // width * pdf(nearest edge).
            let mut v = -ln;
            let (a, b) = ((l - m) / sg, (r - m) / sg);
            if a > 0.0 || b < 0.0 {
                let near = a.abs().min(b.abs());
                let w = ln_upper(b - a) - 0.5 * near * near - LN_SQRT_2PI - ln;
                if w < v {
                    v = w;
                }
            }
            if l.partial_cmp(&r) != Some(std::cmp::Ordering::Less) {
                v = f64::NEG_INFINITY;
            }
            *out = v;
        }
    }

    /// Upper bounds of point `s` against every distinct kernel (after
    /// [`DiscTable::prepare`] for `s`).
    fn upper_row(&self, s: usize) -> &[f64] {
        let u = self.which[s];
        debug_assert!(self.ready[u], "upper_row before prepare");
        &self.bufs.upper[u * self.n_pairs..(u + 1) * self.n_pairs]
    }

    /// Exact log mass (minus the kernel's normaliser) of point `s`'s bin under
    /// distinct kernel `pi`.
    #[inline]
    fn exact(&mut self, k: &DiscKernels, s: usize, pi: usize, memo: &mut MassMemo) -> f64 {
        let u = self.which[s];
        let i = u * self.n_pairs + pi;
        match (self.bufs.known.get(i), self.bufs.exact.get(i)) {
            (Some(true), Some(v)) => *v,
            _ => self.compute(k, u, i, pi, memo),
        }
    }

    /// [`DiscTable::exact`] of entry `i` (distinct value `u`, pair `pi`) the
    /// first time, kept.
    #[cold]
    #[inline(never)]
    fn compute(
        &mut self,
        k: &DiscKernels,
        u: usize,
        i: usize,
        pi: usize,
        memo: &mut MassMemo,
    ) -> f64 {
        let (l, r) = self.edges[u];
        let (m, sg) = k.pairs[pi];
        let ln = k.pair_log_norm[pi];
        let v = if l.partial_cmp(&r) != Some(std::cmp::Ordering::Less) {
            f64::NEG_INFINITY
        } else {
            memo.log_gauss_mass((l - m) / sg, (r - m) / sg) - ln
        };
        self.bufs.exact[i] = v;
        self.bufs.known[i] = true;
        v
    }
}

/// Where a score may stop early: the point's `log l` and the best value
/// `log l - log g` found so far (see [`Scorer::score_with`]).
#[derive(Debug, Clone, Copy)]
struct Stop {
    lb: f64,
    best: f64,
}

impl Stop {
    /// Whether a kernel of value `v` (so a density of at least `v`) leaves
    /// the point's value below the best.
    fn gives_up(&self, v: f64) -> bool {
        let up = self.lb - v < self.best;
        #[cfg(test)]
        if up {
            GAVE_UP.with(|c| c.set(c.get() + 1));
        }
        up
    }
}

/// Scores a set of points against one layout: the discrete dims' mass tables
/// for the points, which points lie outside the space, the window and scratch
/// rows.
pub(crate) struct Scorer<'a> {
    points: &'a [Vec<f64>],
    /// Each point's continuous coordinates (transformed), point by point.
    xs: Vec<f64>,
    /// Each point's [`first_kernels`] once computed.
    first: Vec<Option<(f64, f64)>>,
    kern: Cow<'a, Kernels>,
    bases: Bases,
    tables: Vec<DiscTable>,
    dead: Vec<bool>,
    window: Option<Window>,
    row: Vec<f64>,
    upper: Vec<f64>,
    /// The row in summation order (full loop of a lead layout).
    spread: Vec<f64>,
}

impl<'a> Scorer<'a> {
    pub(crate) fn new(
        kern: Cow<'a, Kernels>,
        points: &'a [Vec<f64>],
        use_window: bool,
        scratch: &mut ScoreScratch,
    ) -> Scorer<'a> {
        let k_n = kern.len();
        let mut dead = std::mem::take(&mut scratch.dead);
        dead.clear();
        dead.resize(points.len(), false);
        let mut xs = std::mem::take(&mut scratch.xs);
        xs.clear();
        let mut first = std::mem::take(&mut scratch.first);
        first.clear();
        first.resize(points.len(), None);
        for (s, p) in points.iter().enumerate() {
            for c in &kern.cats {
                if !(p[c.d] >= 0.0 && (p[c.d] as usize) < c.n_choices) {
                    dead[s] = true;
                }
            }
            for c in &kern.cont {
                let x = if c.log { p[c.d].ln() } else { p[c.d] };
                if !(x >= c.lo_t && x <= c.hi_t) {
                    dead[s] = true;
                }
                xs.push(x);
            }
        }
        let mut bufs = std::mem::take(&mut scratch.tables).into_iter();
        let tables = kern
            .discs
            .iter()
            .map(|k| DiscTable::new(k, points, bufs.next().unwrap_or_default()))
            .collect();
        let window = match kern.window {
            Some(b) if use_window => {
                Some(Window::new(b, k_n - 1, std::mem::take(&mut scratch.window)))
            }
            _ => None,
        };
        Scorer {
            points,
            xs,
            first,
            bases: Bases::new(&kern, std::mem::take(&mut scratch.bases)),
            // Sized when the full loop first runs (the window has its own).
            row: Vec::new(),
            upper: Vec::new(),
            spread: Vec::new(),
            kern,
            tables,
            dead,
            window,
        }
    }

    /// Hands the scorer's large buffers back for the next one.
    fn into_scratch(self, scratch: &mut ScoreScratch) {
        scratch.bases = self.bases;
        scratch.xs = self.xs;
        scratch.first = self.first;
        scratch.dead = self.dead;
        if let Some(w) = self.window {
            scratch.window = w.bufs;
        }
        scratch.tables.clear();
        scratch.tables.extend(self.tables.into_iter().map(DiscTable::into_bufs));
    }

    /// A lower bound of point `s`'s log density: the largest value among the
    /// prior and the two kernels nearest in the leading continuous dimension
    /// ([`first_kernels`], the operations of [`Scorer::score`], so it is never
    /// above the density it computes); `None` where there is none.
    pub(crate) fn lower_bound(&mut self, s: usize, memo: &mut MassMemo) -> Option<f64> {
        if self.dead[s] {
            return None;
        }
        let (_, low) = self.first_kernels(s, memo)?;
        low.is_finite().then_some(low)
    }

    /// [`first_kernels`] of point `s`, computed once.
    fn first_kernels(&mut self, s: usize, memo: &mut MassMemo) -> Option<(f64, f64)> {
        if let Some(f) = self.first[s] {
            return Some(f);
        }
        let d = self.kern.cont.len();
        let xs = &self.xs[s * d..(s + 1) * d];
        let f = first_kernels(
            s,
            &self.points[s],
            xs,
            &self.kern,
            &mut self.bases,
            &mut self.tables,
            memo,
        )?;
        self.first[s] = Some(f);
        Some(f)
    }

    /// The log density of point `s`.
    pub(crate) fn score(&mut self, s: usize, memo: &mut MassMemo) -> f64 {
        self.score_with(s, memo, None)
    }

    /// The log density of point `s`, or `+inf` once a kernel shows that the
    /// point's value `stop.lb - log density` is below `stop.best` (then its
    /// density is at least that kernel's value, so the value is too low to
    /// win or tie; see [`best_acquisition`]).
    fn score_with(&mut self, s: usize, memo: &mut MassMemo, stop: Option<Stop>) -> f64 {
        if self.dead[s] {
            return f64::NEG_INFINITY;
        }
        let k_n = self.kern.len();
        let prior = k_n - 1;
        // Few kernels: every discrete mass computed (bounding them first
        // would cost more than it saves; the result is the same, as the
        // kernels the bounds leave out are more than 50 below the largest).
        let bound = !self.kern.discs.is_empty() && k_n > DIRECT_MAX;
        if bound {
            for (t, k) in self.tables.iter_mut().zip(&self.kern.discs) {
                t.prepare(k, s);
            }
        }
        if self.window.is_some() {
            if let Some((prior_row, low)) = self.first_kernels(s, memo) {
                let d = self.kern.cont.len();
                let Scorer {
                    points,
                    xs,
                    kern,
                    bases,
                    tables,
                    window,
                    ..
                } = self;
                if let Some(w) = window.as_mut() {
                    let xs = &xs[s * d..(s + 1) * d];
                    if let Some(v) = w.log_pdf_point(
                        s, &points[s], xs, prior_row, low, kern, bases, tables, memo, stop,
                    ) {
                        return v;
                    }
                }
            }
        }
        let Scorer {
            points,
            kern,
            bases,
            tables,
            row,
            upper,
            spread,
            ..
        } = self;
        let kern: &Kernels = kern;
        let p = &points[s];
        if row.len() != k_n {
            row.resize(k_n, 0.0);
            upper.resize(if bound { k_n } else { 0 }, 0.0);
            spread.resize(if kern.lead { k_n } else { 0 }, 0.0);
        }
        // Blocks of kernels, so that each block's terms stay in L1 cache
        // across the dimensions (the order of the terms is unchanged).
        let (mut best, mut best_val) = (0, f64::NEG_INFINITY);
        for b0 in (0..k_n).step_by(BLOCK) {
            let b1 = (b0 + BLOCK).min(k_n);
            let r = &mut row[b0..b1];
            r.copy_from_slice(bases.slice(kern, b0, b1));
            for c in &kern.cats {
                let ch = p[c.d] as u32;
                let t = [c.l_miss, c.l_hit];
                let chosen = &c.chosen[b0.min(c.chosen.len())..b1.min(c.chosen.len())];
                for (a, o) in r.iter_mut().zip(chosen) {
                    *a += t[(*o == ch) as usize];
                }
                if prior < b1 {
                    r[prior - b0] += c.l_prior;
                }
            }
            for c in &kern.cont {
                let x = if c.log { p[c.d].ln() } else { p[c.d] };
                for ((a, m), iv) in r.iter_mut().zip(&c.mus[b0..b1]).zip(&c.inv[b0..b1]) {
                    let z = (x - m) * iv;
                    *a -= 0.5 * z * z;
                }
            }
            if bound {
                // Upper bounds of every kernel; the best bound's exact value
                // is then a lower bound of the maximum.
                let u = &mut upper[b0..b1];
                u.copy_from_slice(r);
                for (t, k) in tables.iter().zip(&kern.discs) {
                    let ub = t.upper_row(s);
                    for (a, pi) in u.iter_mut().zip(&k.pair_of[b0..b1]) {
                        *a += ub[*pi as usize];
                    }
                }
                for (k, v) in u.iter().enumerate() {
                    if *v > best_val {
                        best_val = *v;
                        best = b0 + k;
                    }
                }
            }
        }
        let mut mx = f64::NEG_INFINITY;
        if !bound {
            // Dimension by dimension (each kernel's terms still added in
            // dimension order).
            for (t, k) in tables.iter_mut().zip(&kern.discs) {
                for (a, pi) in row.iter_mut().zip(&k.pair_of) {
                    *a += t.exact(k, s, *pi as usize, memo);
                }
            }
            mx = row.iter().copied().fold(mx, f64::max);
        } else {
            let mut low = row[best];
            for (t, k) in tables.iter_mut().zip(&kern.discs) {
                low += t.exact(k, s, k.pair_of[best] as usize, memo);
            }
            let gives_up = |v: f64| stop.is_some_and(|st| st.gives_up(v));
            if gives_up(low) {
                return f64::INFINITY;
            }
            // A margin far above rounding (values are sums of a few terms).
            let thr = low - 50.0 - 1e-6 * (1.0 + low.abs());
            for (j, (a, u)) in row.iter_mut().zip(upper.iter()).enumerate() {
                if *u < thr {
                    *a = f64::NEG_INFINITY;
                } else {
                    for (t, k) in tables.iter_mut().zip(&kern.discs) {
                        *a += t.exact(k, s, k.pair_of[j] as usize, memo);
                    }
                    if gives_up(*a) {
                        return f64::INFINITY;
                    }
                    mx = mx.max(*a);
                }
            }
        }
        if !mx.is_finite() {
            return mx;
        }
        // Sum in the estimator's order (the layout's order where it is not).
        let ordered: &mut [f64] = if kern.lead {
            for (a, k) in row.iter().zip(&kern.key) {
                spread[*k as usize] = *a;
            }
            spread
        } else {
            row
        };
        for a in ordered.iter_mut() {
            *a -= mx;
        }
        // Terms more than 50 below the largest are left out (0 here).
        exp_terms(ordered, -50.0);
        let mut sum = 0.0;
        for e in ordered.iter() {
            sum += e;
        }
        mx + sum.ln()
    }
}

/// The log density of each point (through the window where `use_window`;
/// the results are the same).
pub(crate) fn log_pdf(
    kern: Cow<'_, Kernels>,
    points: &[Vec<f64>],
    use_window: bool,
    memo: &mut MassMemo,
    scratch: &mut ScoreScratch,
) -> Vec<f64> {
    let mut scorer = Scorer::new(kern, points, use_window, scratch);
    let out = (0..points.len()).map(|s| scorer.score(s, memo)).collect();
    scorer.into_scratch(scratch);
    out
}

/// The index of the point with the largest `lb[i] - log_pdf(points)[i]` (the
/// first such index; 0 when none is above -inf): the same as computing every
/// density and comparing, but a point whose upper bound `lb[i] - low` (`low`,
/// a lower bound of its density from a few kernels, computed with the same
/// operations) is already below the best value found is skipped. Points are
/// scored in decreasing order of that bound, so only those that could still
/// win are scored in full.
pub(crate) fn best_acquisition(
    kern: Cow<'_, Kernels>,
    points: &[Vec<f64>],
    lb: &[f64],
    memo: &mut MassMemo,
    scratch: &mut ScoreScratch,
) -> usize {
    let mut scorer = Scorer::new(kern, points, true, scratch);
    let n = points.len().min(lb.len());
    // Upper bounds of each point's value; NaN (no bound) sorts first.
    let ub: Vec<f64> = (0..n)
        .map(|s| {
            scorer
                .lower_bound(s, memo)
                .map_or(f64::INFINITY, |low| lb[s] - low)
        })
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| {
        let key = |i: usize| if ub[i].is_nan() { f64::INFINITY } else { ub[i] };
        key(*b).total_cmp(&key(*a)).then(a.cmp(b))
    });
    let (mut best, mut best_val) = (0, f64::NEG_INFINITY);
    for i in order {
        if ub[i] < best_val {
            #[cfg(test)]
            SKIPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue; // its value is at most ub[i]: it can neither win nor tie
        }
        let stop = Stop {
            lb: lb[i],
            best: best_val,
        };
        let acq = lb[i] - scorer.score_with(i, memo, Some(stop));
        if acq > best_val || (acq == best_val && i < best) {
            best = i;
            best_val = acq;
        }
    }
    scorer.into_scratch(scratch);
    best
}

/// The observation kernels of a lead layout bounded by their distance in the
/// lead dimension.
///
/// For a point with a lower bound `low` of the largest kernel value, a kernel whose
/// mu lies further than `r = sigma_max * sqrt(2 (bmax - thr))` from the point in
/// that dimension has a value below `thr = low - 50 - margin`, so it is left out
/// of the sum in any case: only the kernels inside the window are evaluated, with
/// the same terms in the same order as the full loop, and the included terms are
/// summed in the estimator's order, so the result is identical.
struct Window {
    bounds: WindowBounds,
    n: usize,
    bufs: WindowBufs,
}

impl Window {
    fn new(bounds: WindowBounds, n: usize, bufs: WindowBufs) -> Window {
        Window { bounds, n, bufs }
    }

    /// The log density of point `s` through the window, or `None` where the window
    /// would not save work (or a bound is not finite): then the caller's full loop
    /// runs.
    #[allow(clippy::too_many_arguments)]
    fn log_pdf_point(
        &mut self,
        s: usize,
        p: &[f64],
        xs: &[f64],
        prior_row: f64,
        low: f64,
        kern: &Kernels,
        bases: &mut Bases,
        tables: &mut [DiscTable],
        memo: &mut MassMemo,
        stop: Option<Stop>,
    ) -> Option<f64> {
        let n = self.n;
        let WindowBufs {
            row,
            upper,
            live,
            terms,
        } = &mut self.bufs;
        let x = *xs.first()?;
        let thr = low - 50.0 - 1e-6 * (1.0 + low.abs());
        if !thr.is_finite() {
            return None;
        }
        let gap = self.bounds.bmax - thr;
        let r = if gap > 0.0 {
            (2.0 * gap).sqrt() * self.bounds.sigma_max
        } else {
            0.0
        };
        let r = r * (1.0 + 1e-9) + 1e-9 * (x.abs() + r);
        if !r.is_finite() {
            return None;
        }
        let smu = &kern.cont.first()?.mus[..n];
        let lo = smu.partition_point(|m| *m < x - r);
        let hi = smu.partition_point(|m| *m <= x + r).max(lo);
        let wn = hi - lo;
        if 2 * wn > n {
            return None;
        }
        // First each kernel's value bounded from above (without its discrete
        // terms; its base bounded where the layout leaves bases to the scorer,
        // exact otherwise).
        row.clear();
        match &kern.lazy {
            None => row.extend_from_slice(&kern.base[lo..hi]),
            Some(lz) => {
                // Every weight is at most 1 / total (the newest observations').
                let up = (1.0 / lz.total).ln();
                row.extend(lz.norm_sum[lo..hi].iter().map(|s| up + s));
            }
        }
        for c in &kern.cats {
            let ch = p[c.d] as u32;
            let t = [c.l_miss, c.l_hit];
            for (a, o) in row.iter_mut().zip(&c.chosen[lo..hi]) {
                *a += t[(*o == ch) as usize];
            }
        }
        for (xc, c) in xs.iter().zip(&kern.cont) {
            for ((a, m), iv) in row.iter_mut().zip(&c.mus[lo..hi]).zip(&c.inv[lo..hi]) {
                let z = (xc - m) * iv;
                *a -= 0.5 * z * z;
            }
        }
        // Kernels that may reach `thr`, in window order: those whose bound
        // with their discrete bounds reaches it (the others' values are below
        // `thr` too, so they are left out of the sum in any case; branch-free).
        // The bounds dimension by dimension (each kernel's terms in
        // dimension order), then the kernels that reach `thr`.
        upper.clear();
        upper.extend_from_slice(row);
        for (t, k) in tables.iter().zip(&kern.discs) {
            let up = t.upper_row(s);
            for (u, pi) in upper.iter_mut().zip(&k.pair_of[lo..hi]) {
                *u += up[*pi as usize];
            }
        }
        live.clear();
        live.resize(wn, 0);
        let mut cnt = 0;
        for (j, u) in upper.iter().enumerate() {
            live[cnt] = j as u32;
            // Kept unless below (a NaN is kept, as the full loop keeps it).
            cnt += ((*u >= thr) | u.is_nan()) as usize;
        }
        live.truncate(cnt);
        // The exact values of the kernels left, the one with the largest bound
        // first (where the score may stop early, the likeliest to stop it).
        let at = At { s, p, xs };
        let mut first = 0;
        for (i, j) in live.iter().enumerate() {
            if upper[*j as usize] > upper[live[first] as usize] {
                first = i;
            }
        }
        for i in (first..first + 1)
            .chain(0..first)
            .chain(first + 1..live.len())
        {
            let Some(j) = live.get(i).map(|j| *j as usize) else {
                break;
            };
            let v = kernel_value(&at, lo + j, kern, bases, tables, memo);
            row[j] = v;
            if stop.is_some_and(|st| st.gives_up(v)) {
                return Some(f64::INFINITY);
            }
        }
        let mx = live
            .iter()
            .map(|j| row[*j as usize])
            .fold(prior_row, f64::max);
        if !mx.is_finite() {
            return None;
        }
        terms.clear();
        for j in live.iter() {
            let d = row[*j as usize] - mx;
            if d > -50.0 {
                terms.push((kern.key[lo + *j as usize], d));
            }
        }
        #[cfg(test)]
        WINDOW_USED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        terms.sort_unstable_by_key(|t| t.0);
        let mut sum = 0.0;
        for (_, d) in terms.iter() {
            sum += exp_nonpos(*d);
        }
        let d = prior_row - mx;
        if d > -50.0 {
            sum += exp_nonpos(d);
        }
        Some(mx + sum.ln())
    }
}

/// For point `s` (continuous coordinates `xs`, transformed): the prior
/// kernel's value and `low`, the largest value among the prior and the two
/// observation kernels nearest to the point in the leading continuous
/// dimension (a lower bound of the largest kernel value, so of the density;
/// a kernel whose cheap bound is already below it is not computed).
/// Each kernel's value is computed term by term in the order of the full
/// loop, so it has the same bits there. `None` unless the layout is in lead
/// order.
fn first_kernels(
    s: usize,
    p: &[f64],
    xs: &[f64],
    kern: &Kernels,
    bases: &mut Bases,
    tables: &mut [DiscTable],
    memo: &mut MassMemo,
) -> Option<(f64, f64)> {
    if !kern.lead {
        return None;
    }
    let n = kern.len().checked_sub(1)?;
    let prior = n;
    let lead_mus = &kern.cont.first()?.mus[..n];
    let x = *xs.first()?;
    let at = At { s, p, xs };
    let prior_row = kernel_value(&at, prior, kern, bases, tables, memo);
    let mut low = prior_row;
    let j0 = lead_mus.partition_point(|m| *m < x);
    for j in [j0.wrapping_sub(1), j0] {
        // A kernel whose bound is below `low` cannot raise it (the margin
        // covers the rounding of the bound's terms; a NaN anywhere: computed).
        if j >= n {
            continue;
        }
        let thr = low - 1e-9 * (1.0 + low.abs());
        if kernel_bound(&at, j, kern).partial_cmp(&thr) != Some(std::cmp::Ordering::Less) {
            low = low.max(kernel_value(&at, j, kern, bases, tables, memo));
        }
    }
    Some((prior_row, low))
}

/// An upper bound of observation kernel `k`'s value at a point without
/// special functions: its base bounded by the largest weight where bases
/// are lazy, each discrete mass by 1; the other terms exact. Up to rounding
/// (the terms are not added in [`kernel_value`]'s order). NaN where a term is.
fn kernel_bound(at: &At<'_>, k: usize, kern: &Kernels) -> f64 {
    let base = match &kern.lazy {
        None => kern.base[k],
        Some(lz) => (1.0 / lz.total).ln() + lz.norm_sum.get(k).copied().unwrap_or(f64::NAN),
    };
    let mut a = point_terms(at, k, kern, base);
    for d in &kern.discs {
        a -= d.pair_log_norm[d.pair_of[k] as usize];
    }
    a
}

/// `a` plus kernel `k`'s categorical and continuous terms at a point, in
/// dimension order (as the full loop adds them).
#[inline]
fn point_terms(at: &At<'_>, k: usize, kern: &Kernels, mut a: f64) -> f64 {
    for c in &kern.cats {
        a += match c.chosen.get(k) {
            Some(o) => [c.l_miss, c.l_hit][(*o == at.p[c.d] as u32) as usize],
            None => c.l_prior,
        };
    }
    for (c, xc) in kern.cont.iter().zip(at.xs) {
        let z = (xc - c.mus[k]) * c.inv[k];
        a -= 0.5 * z * z;
    }
    a
}

/// A point as a kernel's value needs it: its index `s`, its values `p` and its
/// continuous coordinates `xs` (transformed).
struct At<'p> {
    s: usize,
    p: &'p [f64],
    xs: &'p [f64],
}

/// The value of kernel `k` at a point, term by term in the order of the full
/// loop (base, categorical, continuous, discrete dims), so it has the bits
/// the full loop gives it.
fn kernel_value(
    at: &At<'_>,
    k: usize,
    kern: &Kernels,
    bases: &mut Bases,
    tables: &mut [DiscTable],
    memo: &mut MassMemo,
) -> f64 {
    let mut a = point_terms(at, k, kern, bases.get(kern, k));
    for (t, d) in tables.iter_mut().zip(&kern.discs) {
        a += t.exact(d, at.s, d.pair_of[k] as usize, memo);
    }
    a
}

// Scores that stopped early, on this thread (tests check that it happens).
#[cfg(test)]
thread_local! {
    pub(crate) static GAVE_UP: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Points scored through the window (tests check that it is exercised).
#[cfg(test)]
pub(crate) static WINDOW_USED: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);
/// Points `best_acquisition` did not score (tests check that it skips some).
#[cfg(test)]
pub(crate) static SKIPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_upper_bounds_ln() {
        for w in [1e-300, 1e-5, 0.3, 0.5, 1.0, 1.5, 2.0, 9.0, 1e10] {
            assert!(ln_upper(w) >= w.ln(), "{w}");
            assert!(
                ln_upper(w) <= w.ln() + std::f64::consts::LN_2 + 1e-12,
                "{w}"
            );
        }
        assert_eq!(ln_upper(0.0), f64::INFINITY);
        assert_eq!(ln_upper(f64::NAN), f64::INFINITY);
    }
}
