//! The study history as TPE reads it, kept dense and columnar: one row per trial
//! (its class, its ranking key) and one column of internal values per parameter of
//! the search space, plus the counts behind Optuna's intersection search space.
//!
//! Built from a slice of [`FrozenTrial`]s and then kept in step with it
//! incrementally ([`TpeHistory::sync`]): rows of finished trials are read once
//! (a finished trial never changes: it is completed, pruned or failed at most
//! once), rows of waiting and running trials are read again on every sync, and
//! new trials are appended. A caller that keeps one history per study (the
//! coordinator does) pays for each trial once instead of on every suggestion,
//! as Optuna's `IntersectionSearchSpace` caches across asks. Sampling from a
//! synced history gives exactly what sampling from the slice gives.

use std::collections::BTreeMap;

use super::parzen::sort_key;
use crate::space::{Choice, Distribution, SearchSpace};
use crate::trial::{Direction, FrozenTrial, TrialState};

/// How TPE counts a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// COMPLETE with a usable (non-NaN) value.
    Complete,
    Pruned,
    /// RUNNING (an "above" observation under constant liar).
    Running,
    /// WAITING, FAIL, or COMPLETE without a usable value: not an observation.
    Ignored,
}

impl Class {
    /// A finished observation (complete or pruned).
    pub(crate) fn is_finished(self) -> bool {
        matches!(self, Class::Complete | Class::Pruned)
    }

    /// An observation of the split: finished, or running under constant liar.
    pub(crate) fn is_observed(self, constant_liar: bool) -> bool {
        match self {
            Class::Complete | Class::Pruned => true,
            Class::Running => constant_liar,
            Class::Ignored => false,
        }
    }
}

/// One trial's row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    pub number: u64,
    pub class: Class,
    /// Ranking key, smaller is better: `(signed value, 0)` for complete trials,
    /// `(-last step, signed last value)` for pruned ones (Optuna's order).
    pub key: (f64, f64),
}

impl Row {
    /// How TPE sees trial `t` in a study with `direction`.
    pub(crate) fn of(t: &FrozenTrial, direction: Direction) -> Row {
        let class = if t.is_complete_with_value() {
            Class::Complete
        } else if t.state == TrialState::Pruned {
            Class::Pruned
        } else if t.state == TrialState::Running {
            Class::Running
        } else {
            Class::Ignored
        };
        let key = match class {
            Class::Complete => (sign(direction) * t.value.unwrap_or(0.0), 0.0),
            Class::Pruned => pruned_score(t, direction),
            _ => (0.0, 0.0),
        };
        Row {
            number: t.number,
            class,
            key,
        }
    }
}

/// A dense copy of the history for one search space and direction.
#[derive(Debug, Clone, Default)]
pub struct TpeHistory {
    /// The space and direction this history was built for; a sync with others
    /// starts over.
    space: Vec<(String, Distribution)>,
    direction: Direction,
    /// Parameter positions in name order (for merged walks over trial maps).
    by_name: Vec<usize>,
    /// One per trial of the synced slice, same index.
    pub(crate) rows: Vec<Row>,
    /// `cols[p][i]`: internal value of parameter `p` in row `i`; NaN when the
    /// trial lacks it or the value is not usable for the space's distribution.
    pub(crate) cols: Vec<Vec<f64>>,
    /// Per parameter: finished observation rows (complete or pruned) whose
    /// distribution of it is missing or differs from the space's.
    pub(crate) mismatch: Vec<u32>,
    /// Rows whose trial was not finished at the last sync (read again each sync).
    unsettled: Vec<usize>,
    /// Whether row numbers never decrease (the slice is in trial-number order).
    pub(crate) sorted: bool,
    /// Per numerical parameter: `(key, row)` of every row holding it, in increasing
    /// order, where `key` is [`sort_key`] of the value as the Parzen estimator sees
    /// it (its log for `log=true`); ties in row order. Kept as rows change, so an
    /// estimator over many rows needs no sort (empty for categorical parameters).
    /// Split in two sorted lists: the bulk, and the entries read recently
    /// (`pending`, merged into the bulk once there are [`PENDING_MAX`] of them,
    /// so that a new trial does not move the bulk on every sync); read both
    /// through [`TpeHistory::order_of`].
    order: Vec<Vec<(u64, u32)>>,
    pending: Vec<Vec<(u64, u32)>>,
    /// Entries read during the current sync, unsorted (into `pending` at its end).
    staged: Vec<Vec<(u64, u32)>>,
    /// Counts rebuilds from scratch, so that state derived from the rows (the
    /// kept "above" estimator) knows when its rows are gone.
    pub(crate) epoch: u64,
    /// Counts syncs; `changed[i]` is the sync in which row `i`'s values last
    /// changed (set when it is appended, too).
    pub(crate) syncs: u64,
    pub(crate) changed: Vec<u64>,
    /// Rows appended or changed in any way (class, ranking key, values), one
    /// entry each time, in sync order (cleared by a rebuild): what a split
    /// kept across suggestions reads to follow the history.
    pub(crate) log: Vec<u32>,
    /// Rows that are complete, and complete or pruned (observations that
    /// count as finished).
    pub(crate) n_complete: usize,
    pub(crate) n_finished: usize,
}

impl TpeHistory {
    /// An empty history (fill it with [`TpeHistory::sync`]).
    pub fn new() -> Self {
        TpeHistory::default()
    }

    /// Brings the history in step with `trials`, which must be the slice given
    /// to the previous sync with trials appended and unfinished trials possibly
    /// changed (a finished trial must not change). A different space or
    /// direction, or a shorter slice, rebuilds it from scratch.
    pub fn sync(&mut self, space: &SearchSpace, direction: Direction, trials: &[FrozenTrial]) {
        if !self.same_key(space, direction)
            || trials.len() < self.rows.len()
            || !self.ends_match(trials)
        {
            self.reset(space, direction);
        }
        self.syncs += 1;
        let mut numbers_changed = false;
        let mut still = Vec::with_capacity(self.unsettled.len());
        let unsettled = std::mem::take(&mut self.unsettled);
        for i in unsettled {
            let before = self.rows[i].number;
            if self.read(i, &trials[i]) {
                still.push(i);
            }
            numbers_changed |= self.rows[i].number != before;
        }
        self.unsettled = still;
        for t in &trials[self.rows.len()..] {
            let i = self.rows.len();
            if let Some(prev) = self.rows.last() {
                self.sorted &= prev.number <= t.number;
            }
            self.rows.push(Row {
                number: t.number,
                class: Class::Ignored,
                key: (0.0, 0.0),
            });
            for c in &mut self.cols {
                c.push(f64::NAN);
            }
            self.changed.push(self.syncs);
            if self.read(i, t) {
                self.unsettled.push(i);
            }
        }
        if numbers_changed {
            self.sorted = self.rows.windows(2).all(|w| w[0].number <= w[1].number);
        }
        self.merge_pending();
    }

    /// Sorts the entries read during the sync into the recent ones, and
    /// merges those into the bulk once there are more than [`PENDING_MAX`].
    fn merge_pending(&mut self) {
        for ((order, pending), staged) in self
            .order
            .iter_mut()
            .zip(&mut self.pending)
            .zip(&mut self.staged)
        {
            if staged.len() == 1 {
                // The usual case, a new trial: in place.
                let e = staged[0];
                let at = pending.partition_point(|x| *x < e);
                pending.insert(at, e);
                staged.clear();
            } else if !staged.is_empty() {
                staged.sort_unstable();
                *pending = merge_sorted(pending, staged);
                staged.clear();
            }
            if pending.len() > PENDING_MAX {
                *order = merge_sorted(order, pending);
                pending.clear();
            }
        }
    }

    /// Parameter `g`'s entries in increasing order (see `order`): the bulk and
    /// the recent entries merged.
    pub(crate) fn order_of(&self, g: usize) -> impl Iterator<Item = (u64, u32)> + '_ {
        match (self.order.get(g), self.pending.get(g)) {
            (Some(a), Some(b)) => merged(a, b),
            _ => merged(&[], &[]),
        }
    }

    /// Number of entries of parameter `g` (see [`TpeHistory::order_of`]).
    pub(crate) fn order_len(&self, g: usize) -> usize {
        self.order.get(g).map_or(0, Vec::len) + self.pending.get(g).map_or(0, Vec::len)
    }

    /// The space's parameters, in the space's order.
    pub(crate) fn params(&self) -> &[(String, Distribution)] {
        &self.space
    }

    /// The intersection-space mismatch counts that `trial`, a finished observation
    /// row, contributed (used to leave out the trial being sampled).
    pub(crate) fn mismatches_of(&self, trial: &FrozenTrial) -> Vec<u32> {
        let mut m = vec![0u32; self.space.len()];
        self.add_mismatches(trial, &mut m);
        m
    }

    fn same_key(&self, space: &SearchSpace, direction: Direction) -> bool {
        self.direction == direction
            && self.space.len() == space.len()
            && self
                .space
                .iter()
                .zip(space.params())
                .all(|((n, d), (m, e))| n == m && same_distribution(d, e))
    }

    /// A cheap guard against a slice that is not the one synced before: the
    /// first and the last settled rows still name the same trials.
    fn ends_match(&self, trials: &[FrozenTrial]) -> bool {
        let check = |i: usize| {
            trials
                .get(i)
                .is_some_and(|t| t.number == self.rows[i].number)
        };
        match self.rows.len() {
            0 => true,
            n => check(0) && check(n - 1),
        }
    }

    fn reset(&mut self, space: &SearchSpace, direction: Direction) {
        self.space = space
            .params()
            .map(|(n, d)| (n.to_string(), d.clone()))
            .collect();
        self.direction = direction;
        let mut by_name: Vec<usize> = (0..self.space.len()).collect();
        by_name.sort_by(|a, b| self.space[*a].0.cmp(&self.space[*b].0));
        self.by_name = by_name;
        self.rows.clear();
        self.epoch += 1;
        self.changed.clear();
        self.log.clear();
        self.n_complete = 0;
        self.n_finished = 0;
        self.cols = vec![Vec::new(); self.space.len()];
        self.mismatch = vec![0; self.space.len()];
        self.unsettled.clear();
        self.sorted = true;
        self.order = vec![Vec::new(); self.space.len()];
        self.pending = vec![Vec::new(); self.space.len()];
        self.staged = vec![Vec::new(); self.space.len()];
    }

    /// (Re)reads row `i` from `t`; returns true while the trial is unfinished.
    fn read(&mut self, i: usize, t: &FrozenTrial) -> bool {
        let row = Row::of(t, self.direction);
        let class = row.class;
        let was = self.rows[i];
        self.rows[i] = row;
        self.n_complete -= (was.class == Class::Complete) as usize;
        self.n_finished -= was.class.is_finished() as usize;
        self.n_complete += (class == Class::Complete) as usize;
        self.n_finished += class.is_finished() as usize;
        let row_changed = was.number != row.number
            || was.class != class
            || was.key.0.to_bits() != row.key.0.to_bits()
            || was.key.1.to_bits() != row.key.1.to_bits();
        let mut values_changed = false;
        let old: Vec<f64> = self.cols.iter().map(|c| c[i]).collect();
        for c in &mut self.cols {
            c[i] = f64::NAN;
        }
        let (space, cols) = (&self.space, &mut self.cols);
        walk(&t.params, &self.by_name, space, |pos, v| {
            if usable(&space[pos].1, *v) {
                cols[pos][i] = *v;
            }
        });
        // The kept value orders change only where a value did (a running trial
        // re-read with the same parameters costs nothing here).
        for (((c, (_, d)), (order, staged)), (pending, was)) in self
            .cols
            .iter()
            .zip(&self.space)
            .zip(self.order.iter_mut().zip(&mut self.staged))
            .zip(self.pending.iter_mut().zip(&old))
        {
            if c[i].to_bits() == was.to_bits() {
                continue;
            }
            self.changed[i] = self.syncs;
            values_changed = true;
            if let Some(key) = order_key(d, *was) {
                let e = (key, i as u32);
                if let Ok(at) = pending.binary_search(&e) {
                    pending.remove(at);
                } else if let Ok(at) = order.binary_search(&e) {
                    order.remove(at);
                }
            }
            if let Some(key) = order_key(d, c[i]) {
                staged.push((key, i as u32));
            }
        }
        if row_changed || values_changed {
            self.log.push(i as u32);
        }
        let unfinished = matches!(t.state, TrialState::Running | TrialState::Waiting);
        if class.is_finished() {
            let mut m = std::mem::take(&mut self.mismatch);
            self.add_mismatches(t, &mut m);
            self.mismatch = m;
        }
        unfinished
    }

    fn add_mismatches(&self, t: &FrozenTrial, m: &mut [u32]) {
        let mut seen = vec![false; self.space.len()];
        walk(&t.distributions, &self.by_name, &self.space, |pos, d| {
            seen[pos] = true;
            if !same_distribution(d, &self.space[pos].1) {
                m[pos] += 1;
            }
        });
        for (x, s) in m.iter_mut().zip(&seen) {
            if !s {
                *x += 1;
            }
        }
    }
}

/// Recent entries of a parameter's order kept apart before they are merged
/// into the bulk.
const PENDING_MAX: usize = 64;

/// The merge of two increasing lists, in one pass (`a`'s entry first on ties).
fn merged<'a>(a: &'a [(u64, u32)], b: &'a [(u64, u32)]) -> impl Iterator<Item = (u64, u32)> + 'a {
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || {
        let next = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x <= y => {
                i += 1;
                *x
            }
            (_, Some(y)) => {
                j += 1;
                *y
            }
            (Some(x), None) => {
                i += 1;
                *x
            }
            (None, None) => return None,
        };
        Some(next)
    })
}

/// [`merged`] collected.
fn merge_sorted(a: &[(u64, u32)], b: &[(u64, u32)]) -> Vec<(u64, u32)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    out.extend(merged(a, b));
    out
}

/// The `order` key of a stored value of `d`: the value as the Parzen estimator
/// sees it (its log for `log=true`), as an order-preserving integer. `None` for
/// categorical parameters and missing (NaN) values.
fn order_key(d: &Distribution, v: f64) -> Option<u64> {
    if v.is_nan() {
        return None;
    }
    match d {
        Distribution::Categorical { .. } => None,
        Distribution::Float { log, .. } | Distribution::Int { log, .. } => {
            Some(sort_key(if *log { v.ln() } else { v }))
        }
    }
}

fn sign(direction: Direction) -> f64 {
    if direction == Direction::Maximize {
        -1.0
    } else {
        1.0
    }
}

/// Optuna's ranking of a pruned trial: later last step first, then better last
/// value (NaN last); a pruned trial without reports ranks after all others.
fn pruned_score(t: &FrozenTrial, direction: Direction) -> (f64, f64) {
    match t.intermediate_values.iter().next_back() {
        Some((step, v)) => {
            let v = if v.is_nan() {
                f64::INFINITY
            } else {
                sign(direction) * v
            };
            (-(*step as f64), v)
        }
        None => (1.0, 0.0),
    }
}

/// Distribution equality, as `==` but cheaper on the common, equal case.
pub(crate) fn same_distribution(a: &Distribution, b: &Distribution) -> bool {
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
pub(crate) fn usable(d: &Distribution, v: f64) -> bool {
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

/// Walks a map and the space's positions in name order together (one string
/// comparison per step), calling `found(position, value)` for each name present.
fn walk<V>(
    map: &BTreeMap<String, V>,
    by_name: &[usize],
    space: &[(String, Distribution)],
    mut found: impl FnMut(usize, &V),
) {
    let mut it = map.iter();
    let mut cur = it.next();
    for pos in by_name {
        let name = space[*pos].0.as_bytes();
        while let Some((k, v)) = cur {
            match cmp_bytes(k.as_bytes(), name) {
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
