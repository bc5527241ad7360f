//! The "above" estimator of the multivariate group, kept across suggestions.
//!
//! From one suggestion to the next, the "above" group of a large study changes
//! by a trial or two (the newest one, a trial that left "below"), yet building
//! its estimator afresh costs a pass over every observation in every
//! dimension. This module keeps the estimator's scoring layout ([`Kernels`],
//! observation kernels in increasing mu of the lead continuous dimension) and
//! updates it in place: a kernel inserted or removed moves the arrays behind it
//! (one `memmove` each), and only its neighbours in each dimension's order (an
//! ordered set per dimension) get new bandwidths. What depends on the number of
//! observations (the weights' sum, the categorical kernel) is recomputed on
//! every suggestion; each kernel's weight and base only when the scorer
//! reaches it. The multivariate group's "below" estimator is kept as well,
//! while its rows stay the same.
//!
//! The layout is the one [`ParzenEstimator::layout`](super::parzen) builds
//! from the same rows, term for term, so scores have the same bits; a unit test
//! checks it kernel by kernel against fresh builds on changing histories.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use super::history::TpeHistory;
use super::parzen::{
    categorical_prior_ln, categorical_probs, cont_log_norm, disc_log_norm,
    raw_weights_into, sort_key, MassMemo, NumBounds, ParzenEstimator, ParzenParams, SigmaRule,
};
use super::score::{
    CatKernels, ContKernels, DiscKernels, Kernels, LazyBase, ScoreScratch, WINDOW_MIN_KERNELS,
};
use super::truncnorm::LN_SQRT_2PI;
use crate::space::Distribution;

/// Fewer observations than this are left to fresh builds (the magic clip
/// depends on the count below 98, and small estimators are cheap to build).
pub(crate) const KEPT_MIN: usize = WINDOW_MIN_KERNELS;

/// The kept estimator, empty until a suggestion can use it. Kept in the
/// study's sampler cache next to its [`TpeHistory`].
#[derive(Debug, Clone, Default)]
pub struct KeptAbove {
    state: Option<State>,
    below: Option<Below>,
    /// The scorers' buffers for "below" and for "above", kept between asks.
    scratch: [ScoreScratch; 2],
    /// The candidates' vectors, refilled by each suggestion.
    candidates: Vec<Vec<f64>>,
}

/// The "below" estimator of the last suggestion and what it was built from.
#[derive(Debug, Clone)]
struct Below {
    epoch: u64,
    synced: u64,
    group: Vec<usize>,
    pp: ParzenParams,
    rows: Vec<usize>,
    est: ParzenEstimator,
    layout: Kernels,
}

#[derive(Debug, Clone)]
struct State {
    /// The history rebuild and sync this state follows.
    epoch: u64,
    synced: u64,
    group: Vec<usize>,
    pp: ParzenParams,
    /// The "above" rows of the last update (observations or not), increasing;
    /// `None` where the update followed the kept split's report of the
    /// change instead (then `gen` is that split's update count).
    rows: Option<Vec<u32>>,
    gen: Option<u64>,
    /// Rows holding every parameter of the group, increasing: a kernel's
    /// summation position is its row's index here.
    members: Vec<u32>,
    /// Per history row: whether it is in `members`.
    is_member: Vec<bool>,
    dims: Vec<KDim>,
    /// Index in `dims` of the lead dimension (the first continuous one).
    lead: usize,
    /// The layout; its bases are left to the scorer (`kern.lazy`: the count
    /// and sum the weights follow from, and per continuous dimension each
    /// kernel's normaliser `ln(sqrt(2 pi)) + ln(sigma) + log mass` in layout
    /// order).
    kern: Kernels,
    /// The row of each observation kernel, in layout order.
    lead_row: Vec<u32>,
    /// Per history row: the member's terms other than its weight and the
    /// point's (`-` its continuous and discrete normalisers), and their
    /// largest value over the members (`None` when it must be found again).
    stat: Vec<f64>,
    stat_max: Option<f64>,
    /// The largest lead bandwidth over the members (`None`: to be found again).
    sigma_max: Option<f64>,
    /// The raw weights of the last suggestion (a buffer for their total).
    raw_weights: Vec<f64>,
}

#[derive(Debug, Clone)]
enum KDim {
    Cat {
        col: usize,
        /// Index in `kern.cats`.
        at: usize,
        n_choices: usize,
    },
    Num(Box<NumDim>),
}

#[derive(Debug, Clone)]
struct NumDim {
    col: usize,
    log: bool,
    /// Index in `kern.cont` (continuous) or `kern.discs` (discrete).
    at: usize,
    discrete: bool,
    /// Transformed bounds (widened by half a step for discrete dims).
    lo: f64,
    hi: f64,
    rule: SigmaRule,
    /// `(sort_key of the transformed value, row)` of every member (an ordered
    /// set: a member's neighbours are found and changed without moving the
    /// others).
    set: BTreeSet<(u64, u32)>,
    /// Per history row: the key it was inserted with and its bandwidth.
    key: Vec<u64>,
    sigma: Vec<f64>,
    /// Discrete dims: the pair id of each `(mu, sigma)` bit pattern in use, how
    /// many kernels use each id, and ids free for reuse.
    pair_id: HashMap<(u64, u64), u32>,
    pair_key: Vec<(u64, u64)>,
    pair_refs: Vec<u32>,
    pair_free: Vec<u32>,
}

/// An entry of a dimension's order: (sort key of the value, row).
type Entry = (u64, u32);

/// A placeholder pair id (a kernel whose bandwidth is not set yet).
const NO_PAIR: u32 = u32::MAX;

impl KeptAbove {
    /// The candidates' vectors of the last suggestion, to be refilled (and
    /// handed back with [`KeptAbove::keep_candidates`]).
    pub(crate) fn take_candidates(&mut self) -> Vec<Vec<f64>> {
        std::mem::take(&mut self.candidates)
    }

    /// Keeps the candidates' vectors for the next suggestion.
    pub(crate) fn keep_candidates(&mut self, candidates: Vec<Vec<f64>>) {
        self.candidates = candidates;
    }

    /// The "below" estimator for `group` over the rows `below` and its
    /// scoring layout: the last ones where they were built from the same rows,
    /// unchanged since (an estimator is a function of its observations in
    /// trial order), else `build()`'s, kept.
    pub(crate) fn below(
        &mut self,
        hist: &TpeHistory,
        group: &[usize],
        below: &[usize],
        pp: &ParzenParams,
        build: impl FnOnce() -> ParzenEstimator,
    ) -> (&ParzenEstimator, &Kernels, &mut ScoreScratch) {
        let same = self.below.as_ref().is_some_and(|b| {
            b.epoch == hist.epoch
                && hist.sorted
                && b.group == group
                && b.pp == *pp
                && b.rows == below
                && below
                    .iter()
                    .all(|r| hist.changed.get(*r).is_some_and(|c| *c <= b.synced))
        });
        if !same {
            self.below = None;
        }
        let b = self.below.get_or_insert_with(|| {
            let est = build();
            Below {
                epoch: hist.epoch,
                synced: hist.syncs,
                group: group.to_vec(),
                pp: *pp,
                rows: below.to_vec(),
                layout: est.layout(),
                est,
            }
        });
        (&b.est, &b.layout, &mut self.scratch[0])
    }

    /// The "above" layout for `group` over the rows `above` (in trial-number
    /// order) of `hist`, updated from the last call or built afresh; `None`
    /// where it does not apply (then the caller builds the estimator itself):
    /// rows out of trial-number order, no continuous parameter in the group,
    /// or fewer than [`KEPT_MIN`] observations. `change`, where the rows come
    /// from the kept split: its update count and the rows that left and
    /// joined "above" in that update (used when the last call followed the
    /// update before; else the rows are compared with the last call's).
    pub(crate) fn layout(
        &mut self,
        hist: &TpeHistory,
        group: &[usize],
        above: &[usize],
        change: Option<AboveChange<'_>>,
        pp: &ParzenParams,
        memo: &mut MassMemo,
    ) -> Option<(&Kernels, &mut ScoreScratch)> {
        if !hist.sorted || above.len() < KEPT_MIN {
            self.state = None;
            return None;
        }
        let reuse = self.state.as_ref().is_some_and(|s| {
            s.epoch == hist.epoch && s.group == group && s.pp == *pp && s.members.len() >= KEPT_MIN
        });
        let updated = reuse
            && self
                .state
                .as_mut()
                .is_some_and(|s| s.update(hist, above, change, memo));
        if !updated {
            self.state = State::build(hist, group, above, pp, memo);
        }
        if let Some(st) = self.state.as_mut() {
            st.gen = change.map(|c| c.gen);
        }
        if self
            .state
            .as_ref()
            .is_none_or(|s| s.members.len() < KEPT_MIN)
        {
            self.state = None;
            return None;
        }
        let st = self.state.as_mut()?;
        st.finish();
        Some((&st.kern, &mut self.scratch[1]))
    }
}

/// Whether row `r` holds every parameter of `group`.
fn holds_all(hist: &TpeHistory, group: &[usize], r: usize) -> bool {
    group
        .iter()
        .all(|g| hist.cols[*g].get(r).is_some_and(|v| !v.is_nan()))
}

/// The internal value of row `r` in column `col` as the estimator sees it.
fn transformed(hist: &TpeHistory, col: usize, log: bool, r: u32) -> f64 {
    let v = hist.cols[col][r as usize];
    if log {
        v.ln()
    } else {
        v
    }
}

impl State {
    /// A fresh state for `group` over `above`; `None` without a continuous
    /// parameter.
    fn build(
        hist: &TpeHistory,
        group: &[usize],
        above: &[usize],
        pp: &ParzenParams,
        memo: &mut MassMemo,
    ) -> Option<State> {
        let params = hist.params();
        let rows_n = hist.rows.len();
        let members: Vec<u32> = above
            .iter()
            .filter(|r| holds_all(hist, group, **r))
            .map(|r| *r as u32)
            .collect();
        let n = members.len();
        let mut is_member = vec![false; rows_n];
        for r in &members {
            is_member[*r as usize] = true;
        }
        let (mut cats, mut cont, mut discs) = (Vec::new(), Vec::new(), Vec::new());
        let mut dims = Vec::with_capacity(group.len());
        let mut lead = None;
        for (i, g) in group.iter().enumerate() {
            let dist = &params.get(*g)?.1;
            if let Distribution::Categorical { choices } = dist {
                let n_choices = choices.len().max(1);
                dims.push(KDim::Cat {
                    col: *g,
                    at: cats.len(),
                    n_choices,
                });
                cats.push(CatKernels {
                    d: i,
                    n_choices,
                    chosen: Vec::new(),
                    l_hit: 0.0,
                    l_miss: 0.0,
                    l_prior: categorical_prior_ln(n_choices),
                });
                continue;
            }
            let NumBounds {
                log, step, lo, hi, ..
            } = NumBounds::of(dist);
            let discrete = step.is_some();
            let at = if discrete {
                discs.push(DiscKernels {
                    d: i,
                    log,
                    step: step.unwrap_or(0.0),
                    lo_t: lo,
                    hi_t: hi,
                    pairs: Vec::new(),
                    pair_log_norm: Vec::new(),
                    pair_of: Vec::new(),
                });
                discs.len() - 1
            } else {
                if lead.is_none() {
                    lead = Some(dims.len());
                }
                cont.push(ContKernels {
                    d: i,
                    log,
                    lo_t: lo,
                    hi_t: hi,
                    mus: Vec::new(),
                    inv: Vec::new(),
                });
                cont.len() - 1
            };
            // The members' values in increasing order, ties by row (the
            // history's kept order where it has one).
            let sorted: Vec<(u64, u32)> = if hist.order_len(*g) > 0 {
                hist.order_of(*g)
                    .filter(|(_, r)| is_member[*r as usize])
                    .collect()
            } else {
                let mut v: Vec<(u64, u32)> = members
                    .iter()
                    .map(|r| (sort_key(transformed(hist, *g, log, *r)), *r))
                    .collect();
                v.sort_unstable();
                v
            };
            if sorted.len() != n {
                return None;
            }
            let mut key = vec![0u64; rows_n];
            for (k, r) in &sorted {
                key[*r as usize] = *k;
            }
            dims.push(KDim::Num(Box::new(NumDim {
                col: *g,
                log,
                at,
                discrete,
                lo,
                hi,
                rule: SigmaRule::new(lo, hi, n, pp),
                set: sorted.into_iter().collect(),
                key,
                sigma: vec![0.0; rows_n],
                pair_id: HashMap::new(),
                pair_key: Vec::new(),
                pair_refs: Vec::new(),
                pair_free: Vec::new(),
            })));
        }
        let lead = lead?;
        let mut st = State {
            epoch: hist.epoch,
            synced: hist.syncs,
            group: group.to_vec(),
            pp: *pp,
            rows: Some(above.iter().map(|r| *r as u32).collect()),
            gen: None,
            members,
            is_member,
            dims,
            lead,
            kern: Kernels {
                base: Vec::new(),
                lazy: Some(LazyBase::default()),
                key: Vec::new(),
                cats,
                cont,
                discs,
                lead: true,
                window: None,
            },
            lead_row: Vec::new(),
            stat: Vec::new(),
            stat_max: None,
            sigma_max: None,
            raw_weights: Vec::new(),
        };
        st.lay_out(hist, memo);
        Some(st)
    }

    /// Fills the layout from the sorted lists (every kernel computed).
    fn lay_out(&mut self, hist: &TpeHistory, memo: &mut MassMemo) {
        let n = self.members.len();
        let lead_rows: Vec<u32> = match &self.dims[self.lead] {
            KDim::Num(d) => d.set.iter().map(|e| e.1).collect(),
            KDim::Cat { .. } => Vec::new(),
        };
        let mut rank = vec![0u32; self.is_member.len()];
        for (i, r) in self.members.iter().enumerate() {
            rank[*r as usize] = i as u32;
        }
        let kern = &mut self.kern;
        kern.key = lead_rows
            .iter()
            .map(|r| rank[*r as usize])
            .chain([n as u32])
            .collect();
        for c in &mut kern.cont {
            c.mus = vec![0.0; n + 1];
            c.inv = vec![0.0; n + 1];
        }
        for c in &mut kern.discs {
            c.pair_of = vec![NO_PAIR; n + 1];
            c.pairs.clear();
            c.pair_log_norm.clear();
        }
        let n_cont = kern.cont.len();
        kern.lazy.get_or_insert_with(LazyBase::default).cnorm = vec![vec![0.0; n + 1]; n_cont];
        for dim in &mut self.dims {
            match dim {
                KDim::Cat { col, at, n_choices } => {
                    kern.cats[*at].chosen = lead_rows
                        .iter()
                        .map(|r| chosen_of(hist, *col, *n_choices, *r))
                        .collect();
                }
                KDim::Num(d) => {
                    d.pair_id.clear();
                    d.pair_key.clear();
                    d.pair_refs.clear();
                    d.pair_free.clear();
                    if !d.discrete {
                        for (j, r) in lead_rows.iter().enumerate() {
                            kern.cont[d.at].mus[j] = transformed(hist, d.col, d.log, *r);
                        }
                    }
                }
            }
        }
        // Bandwidths in each dimension's order, written at the layout positions.
        let mut pos = vec![0u32; self.is_member.len()];
        for (j, r) in lead_rows.iter().enumerate() {
            pos[*r as usize] = j as u32;
        }
        for dim in &mut self.dims {
            if let KDim::Num(d) = dim {
                let sorted: Vec<(u64, u32)> = d.set.iter().copied().collect();
                let mut prev = d.lo;
                for (q, (k, r)) in sorted.iter().enumerate() {
                    let cur = from_key(*k);
                    let next = sorted.get(q + 1).map_or(d.hi, |e| from_key(e.0));
                    let s = d.rule.sigma(prev, cur, next, q == 0, q + 1 == sorted.len());
                    prev = cur;
                    d.sigma[*r as usize] = s;
                    d.set_kernel(kern, pos[*r as usize] as usize, cur, s, memo);
                }
                d.set_prior(kern, n, memo);
            }
        }
        let sums: Vec<f64> = (0..n).map(|j| self.norm_sum_at(j)).collect();
        self.stat = vec![f64::NAN; self.is_member.len()];
        for (j, (r, sum)) in lead_rows.iter().zip(&sums).enumerate() {
            self.stat[*r as usize] = self.stat_from(*sum, j);
        }
        if let Some(lz) = self.kern.lazy.as_mut() {
            lz.norm_sum = sums;
        }
        self.lead_row = lead_rows;
        self.stat_max = None;
        self.sigma_max = None;
    }

    /// The terms of the kernel at layout position `j` other than its weight
    /// and the point's: `-` its continuous and discrete normalisers (from
    /// scratch; the state keeps them, see [`State::stat_from`]).
    #[cfg(test)]
    fn stat_at(&self, j: usize) -> f64 {
        self.stat_from(self.norm_sum_at(j), j)
    }

    /// The terms of the kernel at layout position `j` other than its weight
    /// and the point's, from its continuous normaliser sum: `-` its discrete
    /// normalisers added.
    fn stat_from(&self, norm_sum: f64, j: usize) -> f64 {
        let mut b = norm_sum;
        for t in &self.kern.discs {
            b -= t
                .pair_log_norm
                .get(t.pair_of[j] as usize)
                .copied()
                .unwrap_or(f64::NAN);
        }
        b
    }

    /// `-` the continuous normalisers of the kernel at layout position `j`.
    fn norm_sum_at(&self, j: usize) -> f64 {
        let mut b = 0.0;
        for c in self.kern.lazy.as_ref().map_or(&[][..], |lz| &lz.cnorm[..]) {
            b -= c[j];
        }
        b
    }

    /// Recomputes member `r`'s `stat` and normaliser sum (`new`: it has none
    /// yet).
    fn restat(&mut self, r: u32, new: bool) {
        let Some(j) = self.position(r) else {
            return;
        };
        let sum = self.norm_sum_at(j);
        if let Some(slot) = self
            .kern
            .lazy
            .as_mut()
            .and_then(|lz| lz.norm_sum.get_mut(j))
        {
            *slot = sum;
        }
        let v = self.stat_from(sum, j);
        let old = if new {
            f64::NEG_INFINITY
        } else {
            self.stat[r as usize]
        };
        self.stat[r as usize] = v;
        track_max(&mut self.stat_max, old, v);
    }

    /// Brings the state in step with the rows `above`; false where a rebuild
    /// is the better way (many changes) or the state cannot follow.
    fn update(
        &mut self,
        hist: &TpeHistory,
        above: &[usize],
        change: Option<AboveChange<'_>>,
        memo: &mut MassMemo,
    ) -> bool {
        if self.is_member.len() > hist.rows.len() {
            return false;
        }
        let rows_n = hist.rows.len();
        self.is_member.resize(rows_n, false);
        self.stat.resize(rows_n, f64::NAN);
        for d in &mut self.dims {
            if let KDim::Num(d) = d {
                d.key.resize(rows_n, 0);
                d.sigma.resize(rows_n, 0.0);
            }
        }
        let reported = match (change, self.gen) {
            (Some(AboveChange { gen, diff: Some(d) }), Some(last))
                if last.checked_add(1) == Some(gen) =>
            {
                Some(d)
            }
            _ => None,
        };
        // The reported change is read in place; only a comparison of the
        // row lists needs lists of its own.
        let compared;
        let (out, into): (&[u32], &[u32]) = match reported {
            Some(d) => {
                self.rows = None;
                #[cfg(test)]
                REPORTED.with(|c| c.set(c.get() + 1));
                d
            }
            None => {
                let Some(old) = self.rows.as_ref() else {
                    return false;
                };
                compared = diff_rows(hist, self.synced, old, above);
                self.rows = Some(above.iter().map(|r| *r as u32).collect());
                (&compared.0, &compared.1)
            }
        };
        if 32 * (out.len() + into.len()) > self.members.len() {
            return false;
        }
        for &r in out {
            if self.is_member[r as usize] {
                self.remove(r, memo);
            }
        }
        for &r in into {
            if !self.is_member[r as usize] && holds_all(hist, &self.group, r as usize) {
                self.insert(hist, r, memo);
            }
        }
        self.synced = hist.syncs;
        true
    }

    /// The lead dimension's sort key of member `r` (it orders the layout with
    /// the row).
    fn lead_key(&self, r: u32) -> u64 {
        match &self.dims[self.lead] {
            KDim::Num(d) => d.key[r as usize],
            KDim::Cat { .. } => 0,
        }
    }

    /// The layout position of `(lead key, row)`, or where it would go.
    fn slot(&self, e: (u64, u32)) -> usize {
        let mus = self
            .kern
            .cont
            .first()
            .map_or(&[][..], |c| &c.mus[..self.lead_row.len()]);
        let (mut lo, mut hi) = (0, self.lead_row.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if (sort_key(mus[mid]), self.lead_row[mid]) < e {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The layout position of member `r`.
    fn position(&self, r: u32) -> Option<usize> {
        let j = self.slot((self.lead_key(r), r));
        (self.lead_row.get(j) == Some(&r)).then_some(j)
    }

    /// Adds member `r` (values read from the history).
    fn insert(&mut self, hist: &TpeHistory, r: u32, memo: &mut MassMemo) {
        let rank = self.members.partition_point(|m| *m < r);
        self.members.insert(rank, r);
        self.is_member[r as usize] = true;
        let rank = rank as u32;
        for k in &mut self.kern.key {
            *k += (*k >= rank) as u32;
        }
        // Ordered sets first, then the layout (its place by the lead key).
        for dim in &mut self.dims {
            if let KDim::Num(d) = dim {
                let k = sort_key(transformed(hist, d.col, d.log, r));
                d.key[r as usize] = k;
                d.set.insert((k, r));
            }
        }
        let j = self.slot((self.lead_key(r), r));
        self.lead_row.insert(j, r);
        let kern = &mut self.kern;
        kern.key.insert(j, rank);
        for c in &mut kern.cont {
            c.mus.insert(j, 0.0);
            c.inv.insert(j, 0.0);
        }
        for c in cnorm_of(kern) {
            c.insert(j, 0.0);
        }
        if let Some(lz) = kern.lazy.as_mut() {
            lz.norm_sum.insert(j, 0.0);
        }
        for c in &mut kern.discs {
            c.pair_of.insert(j, NO_PAIR);
        }
        for dim in &self.dims {
            match dim {
                KDim::Cat { col, at, n_choices } => kern.cats[*at]
                    .chosen
                    .insert(j, chosen_of(hist, *col, *n_choices, r)),
                KDim::Num(d) if !d.discrete => kern.cont[d.at].mus[j] = from_key(d.key[r as usize]),
                KDim::Num(_) => {}
            }
        }
        let mut touched = Vec::with_capacity(2 * self.dims.len());
        for i in 0..self.dims.len() {
            // The new kernel and its two neighbours.
            let KDim::Num(d) = &self.dims[i] else {
                continue;
            };
            let (prev, next) = d.neighbours(r);
            self.refresh(i, r, true, memo);
            for e in [prev, next].into_iter().flatten() {
                if self.refresh(i, e.1, false, memo) {
                    touched.push(e.1);
                }
            }
        }
        self.restat(r, true);
        for row in touched {
            self.restat(row, false);
        }
    }

    /// Removes member `r` (with the keys it was inserted with).
    fn remove(&mut self, r: u32, memo: &mut MassMemo) {
        let Ok(rank) = self.members.binary_search(&r) else {
            return;
        };
        let Some(j) = self.position(r) else {
            return;
        };
        self.members.remove(rank);
        self.is_member[r as usize] = false;
        let rank = rank as u32;
        self.lead_row.remove(j);
        drop_max(&mut self.stat_max, self.stat[r as usize]);
        if let KDim::Num(d) = &self.dims[self.lead] {
            drop_max(&mut self.sigma_max, d.sigma[r as usize]);
        }
        let kern = &mut self.kern;
        kern.key.remove(j);
        for k in &mut kern.key {
            *k -= (*k > rank) as u32;
        }
        for c in &mut kern.cats {
            c.chosen.remove(j);
        }
        for c in &mut kern.cont {
            c.mus.remove(j);
            c.inv.remove(j);
        }
        for c in cnorm_of(kern) {
            c.remove(j);
        }
        if let Some(lz) = kern.lazy.as_mut() {
            lz.norm_sum.remove(j);
        }
        let mut around = Vec::with_capacity(self.dims.len());
        for (i, dim) in self.dims.iter_mut().enumerate() {
            if let KDim::Num(d) = dim {
                if d.discrete {
                    let pi = kern.discs[d.at].pair_of.remove(j);
                    d.release(pi);
                }
                let (prev, next) = d.neighbours(r);
                d.set.remove(&(d.key[r as usize], r));
                around.extend([prev, next].into_iter().flatten().map(|e| (i, e.1)));
            }
        }
        // The kernels that were its neighbours.
        for (i, row) in around {
            if self.refresh(i, row, false, memo) {
                self.restat(row, false);
            }
        }
    }

    /// Recomputes the bandwidth of member `r` in dimension `i` from its
    /// neighbours (nothing if unchanged, unless `new`); whether it changed.
    fn refresh(&mut self, i: usize, r: u32, new: bool, memo: &mut MassMemo) -> bool {
        let Some(j) = self.position(r) else {
            return false;
        };
        let lead = self.lead;
        let State {
            dims,
            kern,
            sigma_max,
            ..
        } = self;
        let KDim::Num(d) = &mut dims[i] else {
            return false;
        };
        let s = d.sigma_of(r);
        let old = if new {
            f64::NEG_INFINITY
        } else {
            d.sigma[r as usize]
        };
        if !new && s.to_bits() == old.to_bits() {
            return false;
        }
        d.sigma[r as usize] = s;
        if i == lead {
            track_max(sigma_max, old, s);
        }
        if d.discrete && !new {
            let old = kern.discs[d.at].pair_of[j];
            kern.discs[d.at].pair_of[j] = NO_PAIR;
            d.release(old);
        }
        d.set_kernel(kern, j, from_key(d.key[r as usize]), s, memo);
        true
    }

    /// Per suggestion: the weights and the categorical kernel (both depend on
    /// the number of observations) and the window's bounds.
    fn finish(&mut self) {
        let n = self.members.len();
        let kern = &mut self.kern;
        for c in &mut kern.cats {
            let (p_hit, p_miss) = categorical_probs(n, c.n_choices, &self.pp);
            c.l_hit = p_hit.ln();
            c.l_miss = p_miss.ln();
        }
        let Some(lz) = kern.lazy.as_mut() else {
            return;
        };
        lz.n = n;
        lz.prior_weight = self.pp.prior_weight;
        lz.total = raw_weights_into(n, self.pp.prior_weight, &mut self.raw_weights);
        // A bound of every observation kernel's terms but the lead's: the
        // largest weight (1, the newest observations') with the largest of
        // the other terms, and a margin far above rounding.
        let (members, stat, dims, lead) = (&self.members, &self.stat, &self.dims, self.lead);
        let stat_max = cached_max(&mut self.stat_max, || {
            members
                .iter()
                .map(|r| stat[*r as usize])
                .fold(f64::NEG_INFINITY, |m, v| {
                    if v.is_nan() || m.is_nan() {
                        f64::NAN
                    } else {
                        m.max(v)
                    }
                })
        });
        let sigma_max = cached_max(&mut self.sigma_max, || match &dims[lead] {
            KDim::Num(d) => members
                .iter()
                .map(|r| d.sigma[*r as usize])
                .fold(0.0, f64::max),
            KDim::Cat { .. } => f64::NAN,
        });
        let cat_max: f64 = kern.cats.iter().map(|c| c.l_hit.max(c.l_miss)).sum();
        let b = (1.0 / lz.total).ln() + cat_max + stat_max;
        let bmax = (!b.is_nan()).then(|| b + 1e-9 * (1.0 + b.abs()));
        kern.window = kern.window_bounds_of(sigma_max, bmax);
    }
}

/// The rows that left `old` and joined `above` (both increasing), rows in
/// both whose values changed since sync `synced` counted as both.
fn diff_rows(hist: &TpeHistory, synced: u64, old: &[u32], above: &[usize]) -> (Vec<u32>, Vec<u32>) {
    let changed = |r: u32| hist.changed.get(r as usize).is_some_and(|c| *c > synced);
    let (mut out, mut into) = (Vec::new(), Vec::new());
    let (mut a, mut b) = (0, 0);
    while a < old.len() || b < above.len() {
        let (x, y) = (old.get(a).copied(), above.get(b).map(|r| *r as u32));
        match (x, y) {
            (Some(x), Some(y)) if x == y => {
                if changed(x) {
                    out.push(x);
                    into.push(x);
                }
                a += 1;
                b += 1;
            }
            (Some(x), Some(y)) if x < y => {
                out.push(x);
                a += 1;
            }
            (Some(x), None) => {
                out.push(x);
                a += 1;
            }
            (_, Some(y)) => {
                into.push(y);
                b += 1;
            }
            (None, None) => break,
        }
    }
    (out, into)
}

/// How the kept split's "above" changed in its last update (see
/// [`KeptAbove::layout`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AboveChange<'a> {
    pub gen: u64,
    pub diff: Option<(&'a [u32], &'a [u32])>,
}

/// Keeps `max` the largest of a set of values as one of them goes from `old`
/// to `new` (`old` -inf for a value added): `None` when it must be found
/// again (the largest went down, or a value is NaN).
fn track_max(max: &mut Option<f64>, old: f64, new: f64) {
    if let Some(m) = *max {
        if new.is_nan() || old.is_nan() {
            *max = None;
        } else if new >= m {
            *max = Some(new);
        } else if old >= m {
            *max = None;
        }
    }
}

/// The largest value kept in `slot`, or found by `find` (and kept unless NaN).
fn cached_max(slot: &mut Option<f64>, find: impl FnOnce() -> f64) -> f64 {
    match *slot {
        Some(m) => m,
        None => {
            let m = find();
            if !m.is_nan() {
                *slot = Some(m);
            }
            m
        }
    }
}

/// As [`track_max`] for a value removed from the set.
fn drop_max(max: &mut Option<f64>, old: f64) {
    if max.is_some_and(|m| old >= m || old.is_nan()) {
        *max = None;
    }
}

/// The continuous normalisers of a kept layout.
fn cnorm_of(kern: &mut Kernels) -> &mut [Vec<f64>] {
    match kern.lazy.as_mut() {
        Some(lz) => &mut lz.cnorm,
        None => &mut [],
    }
}

/// The float of a sort key (see `parzen::from_sort_key`).
fn from_key(k: u64) -> f64 {
    super::parzen::from_sort_key(k)
}

/// Row `r`'s choice index in column `col`, clamped as the estimator clamps it.
fn chosen_of(hist: &TpeHistory, col: usize, n_choices: usize, r: u32) -> u32 {
    (hist.cols[col][r as usize] as usize).min(n_choices - 1) as u32
}

impl NumDim {
    /// Member `r`'s neighbours in this dimension's order.
    fn neighbours(&self, r: u32) -> (Option<Entry>, Option<Entry>) {
        let e = (self.key[r as usize], r);
        let prev = self.set.range(..e).next_back().copied();
        let next = self
            .set
            .range((Bound::Excluded(e), Bound::Unbounded))
            .next()
            .copied();
        (prev, next)
    }

    /// Member `r`'s bandwidth (the range ends standing in for missing
    /// neighbours).
    fn sigma_of(&self, r: u32) -> f64 {
        let (prev, next) = self.neighbours(r);
        let p = prev.map_or(self.lo, |e| from_key(e.0));
        let q = next.map_or(self.hi, |e| from_key(e.0));
        self.rule.sigma(
            p,
            from_key(self.key[r as usize]),
            q,
            prev.is_none(),
            next.is_none(),
        )
    }

    /// Writes the terms of the kernel at layout position `j` with mean `m`
    /// and bandwidth `s`.
    fn set_kernel(&mut self, kern: &mut Kernels, j: usize, m: f64, s: f64, memo: &mut MassMemo) {
        if self.discrete {
            let pi = self.acquire(&mut kern.discs[self.at], m, s, memo);
            kern.discs[self.at].pair_of[j] = pi;
        } else {
            kern.cont[self.at].inv[j] = 1.0 / s;
            cnorm_of(kern)[self.at][j] =
                LN_SQRT_2PI + s.ln() + cont_log_norm(m, s, self.lo, self.hi, memo);
        }
    }

    /// Writes the prior kernel's terms at position `n`.
    fn set_prior(&mut self, kern: &mut Kernels, n: usize, memo: &mut MassMemo) {
        let (m, s) = self.rule.prior();
        if !self.discrete {
            kern.cont[self.at].mus[n] = m;
        }
        self.set_kernel(kern, n, m, s, memo);
    }

    /// The pair id of `(m, s)`, added to the table if new.
    fn acquire(&mut self, t: &mut DiscKernels, m: f64, s: f64, memo: &mut MassMemo) -> u32 {
        let key = (m.to_bits(), s.to_bits());
        let id = match self.pair_id.get(&key) {
            Some(id) => *id,
            None => {
                let ln = disc_log_norm(m, s, self.lo, self.hi, memo);
                let id = match self.pair_free.pop() {
                    Some(id) => {
                        t.pairs[id as usize] = (m, s);
                        t.pair_log_norm[id as usize] = ln;
                        self.pair_key[id as usize] = key;
                        id
                    }
                    None => {
                        t.pairs.push((m, s));
                        t.pair_log_norm.push(ln);
                        self.pair_key.push(key);
                        self.pair_refs.push(0);
                        (t.pairs.len() - 1) as u32
                    }
                };
                self.pair_id.insert(key, id);
                id
            }
        };
        self.pair_refs[id as usize] += 1;
        id
    }

    /// Drops one use of pair `id` (freed at the last).
    fn release(&mut self, id: u32) {
        let Some(refs) = self.pair_refs.get_mut(id as usize) else {
            return;
        };
        *refs = refs.saturating_sub(1);
        if *refs == 0 {
            self.pair_free.push(id);
            self.pair_id.remove(&self.pair_key[id as usize]);
        }
    }
}

// Updates that followed the kept split's reported change, on this thread
// (tests check that the path is exercised).
#[cfg(test)]
thread_local! {
    pub(crate) static REPORTED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use super::super::parzen::{
        mixed_test_dists, mixed_test_space, random_trial, value_at, ParzenEstimator,
    };
    use super::*;
    use crate::rng::{trial_rng, uniform01};
    use crate::trial::{Direction, FrozenTrial, TrialState};

    /// Kernel by kernel, the same layout in bits (`a` kept, with lazy bases;
    /// discrete pairs compared by their values, as ids differ), and a window
    /// bound at least the exact one.
    fn assert_same(a: &Kernels, b: &Kernels, what: &str) {
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(a.key, b.key, "{what}: key");
        let lz = a.lazy.as_ref().expect("a kept layout has lazy bases");
        let bases: Vec<f64> = a
            .key
            .iter()
            .enumerate()
            .map(|(j, k)| lz.base(j, *k))
            .collect();
        assert_eq!(bits(&bases), bits(&b.base), "{what}: base");
        assert_eq!(a.lead, b.lead, "{what}: lead");
        assert_eq!(a.cats.len(), b.cats.len());
        for (x, y) in a.cats.iter().zip(&b.cats) {
            assert_eq!(
                (x.d, x.n_choices, &x.chosen),
                (y.d, y.n_choices, &y.chosen),
                "{what}: chosen"
            );
            assert_eq!(
                bits(&[x.l_hit, x.l_miss, x.l_prior]),
                bits(&[y.l_hit, y.l_miss, y.l_prior]),
                "{what}"
            );
        }
        assert_eq!(a.cont.len(), b.cont.len());
        for (x, y) in a.cont.iter().zip(&b.cont) {
            assert_eq!((x.d, x.log), (y.d, y.log));
            assert_eq!(
                bits(&[x.lo_t, x.hi_t]),
                bits(&[y.lo_t, y.hi_t]),
                "{what}: bounds"
            );
            assert_eq!(bits(&x.mus), bits(&y.mus), "{what}: mus of {}", x.d);
            assert_eq!(bits(&x.inv), bits(&y.inv), "{what}: inv of {}", x.d);
        }
        assert_eq!(a.discs.len(), b.discs.len());
        for (x, y) in a.discs.iter().zip(&b.discs) {
            assert_eq!((x.d, x.log), (y.d, y.log));
            assert_eq!(
                bits(&[x.step, x.lo_t, x.hi_t]),
                bits(&[y.step, y.lo_t, y.hi_t])
            );
            let of = |t: &DiscKernels| -> Vec<(u64, u64, u64)> {
                t.pair_of
                    .iter()
                    .map(|p| {
                        let (m, s) = t.pairs[*p as usize];
                        (
                            m.to_bits(),
                            s.to_bits(),
                            t.pair_log_norm[*p as usize].to_bits(),
                        )
                    })
                    .collect()
            };
            assert_eq!(of(x), of(y), "{what}: pairs of {}", x.d);
        }
        assert_eq!(a.window.is_some(), b.window.is_some(), "{what}: window");
        if let (Some(x), Some(y)) = (a.window, b.window) {
            assert!(
                x.sigma_max >= y.sigma_max && x.sigma_max <= y.sigma_max * (1.0 + 1e-9),
                "{what}: sigma_max"
            );
            assert!(x.bmax >= y.bmax, "{what}: bmax {} below {}", x.bmax, y.bmax);
        }
    }

    #[test]
    fn the_kept_layout_is_a_fresh_build_of_the_same_rows() {
        let space = mixed_test_space();
        let dists = mixed_test_dists();
        let pp = ParzenParams {
            prior_weight: 1.0,
            consider_magic_clip: true,
            consider_endpoints: false,
        };
        let mut rng = trial_rng(9, 0, 0);
        let mut trials: Vec<FrozenTrial> = Vec::new();
        let mut hist = TpeHistory::new();
        let mut kept = KeptAbove::default();
        let mut memo = MassMemo::default();
        // Categorical first, last and in the middle; discrete before the lead.
        let groups: [&[usize]; 3] = [&[5, 0, 1, 2, 3, 4], &[4, 1, 5], &[2, 0, 5, 3]];
        let (mut used, mut steps) = (0, 0);
        let mut below: Vec<usize> = Vec::new();
        for step in 0..160 {
            // Mostly one new trial a step; now and then a burst (a rebuild).
            let adds = if step % 37 == 5 {
                60
            } else if step == 0 {
                300
            } else {
                1 + (step % 3 == 0) as usize
            };
            for _ in 0..adds {
                // Clustered values (many ties for the discrete ones).
                let t = random_trial(trials.len() as u64, &dists, &mut rng, (0.02, 2, 0.15));
                trials.push(t);
            }
            // Running trials: some cleared (requeued), some given new values.
            for t in trials.iter_mut().filter(|t| t.state == TrialState::Running) {
                let u = uniform01(&mut rng);
                if u < 0.1 {
                    t.params.clear();
                } else if u < 0.2 {
                    for (name, d) in &dists {
                        t.params
                            .insert(name.clone(), value_at(d, uniform01(&mut rng)));
                    }
                } else if u < 0.3 {
                    t.state = TrialState::Complete;
                    t.value = Some(uniform01(&mut rng));
                } else if u < 0.35 {
                    t.state = TrialState::Fail;
                }
            }
            hist.sync(&space, Direction::Minimize, &trials);
            // "Below": 25 rows, a few replaced each step (rows move both ways).
            while below.len() < 25 {
                below.push((uniform01(&mut rng) * trials.len() as f64) as usize);
            }
            if step % 2 == 1 {
                below.remove((uniform01(&mut rng) * 25.0) as usize % 25);
            }
            let above: Vec<usize> = (0..trials.len())
                .filter(|r| !below.contains(r) && trials[*r].state != TrialState::Fail)
                .collect();
            let group = groups[(step / 50) % 3];
            let ds: Vec<&Distribution> = group.iter().map(|g| &hist.params()[*g].1).collect();
            let rows: Vec<usize> = above
                .iter()
                .copied()
                .filter(|r| group.iter().all(|g| !hist.cols[*g][*r].is_nan()))
                .collect();
            let cols: Vec<Vec<f64>> = group
                .iter()
                .map(|g| rows.iter().map(|r| hist.cols[*g][*r]).collect())
                .collect();
            let fresh = ParzenEstimator::new(&cols, &ds, &pp).layout();
            steps += 1;
            if let Some((k, _)) = kept.layout(&hist, group, &above, None, &pp, &mut memo) {
                used += 1;
                assert_same(k, &fresh, &format!("step {step}"));
                let st = kept.state.as_ref().expect("a kept state");
                // The maxima kept across updates are those of the members now.
                let lead_sigma = match &st.dims[st.lead] {
                    KDim::Num(d) => st
                        .members
                        .iter()
                        .map(|r| d.sigma[*r as usize])
                        .fold(0.0, f64::max),
                    KDim::Cat { .. } => f64::NAN,
                };
                assert_eq!(st.sigma_max, Some(lead_sigma), "step {step}");
                let stats: Vec<f64> = (0..st.lead_row.len()).map(|j| st.stat_at(j)).collect();
                let by_row: Vec<f64> = st.lead_row.iter().map(|r| st.stat[*r as usize]).collect();
                assert_eq!(stats, by_row, "step {step}");
                let sums: Vec<f64> = (0..st.lead_row.len()).map(|j| st.norm_sum_at(j)).collect();
                assert_eq!(
                    st.kern.lazy.as_ref().map(|lz| lz.norm_sum.clone()),
                    Some(sums),
                    "step {step}"
                );
                assert_eq!(
                    st.stat_max,
                    Some(stats.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
                    "step {step}"
                );
            }
        }
        assert!(
            used > steps / 2,
            "the kept layout served {used} of {steps} steps"
        );
    }
}
