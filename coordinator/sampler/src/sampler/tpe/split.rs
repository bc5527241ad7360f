//! The "below"/"above" split of a study kept across suggestions.
//!
//! From one suggestion to the next, a large study gains a trial or two; the
//! split Optuna computes afresh (every observation ranked, every row sorted
//! into a group) then changes by those rows and by the trial they push out of
//! "below". This module keeps the split and moves only the rows the history
//! logged as appended or changed since the last suggestion ([`TpeHistory`]'s
//! `log`), and reports how "above" changed so that the kept "above" estimator
//! ([`super::kept`]) follows without comparing the whole list.
//!
//! It keeps only splits whose "below" is made of complete trials (enough of
//! them for gamma) in a history in trial-number order; anything else (gamma
//! changing, pruned trials filling "below", a finished trial being sampled,
//! many changes at once) is left to the full split, which the caller then
//! hands back with [`KeptSplit::reset`]. Either way the groups are those of
//! `split_rows`, row for row; a unit test follows changing histories against it.

use super::history::{Class, TpeHistory};

/// The kept split, empty until a full split is handed to it.
#[derive(Debug, Clone, Default)]
pub struct KeptSplit {
    state: Option<State>,
    /// Counts updates (full or not), so that a follower of "above" knows
    /// whether the reported change starts where it stopped.
    gen: u64,
}

#[derive(Debug, Clone)]
struct State {
    /// The history rebuild and length of its log this split follows.
    epoch: u64,
    log_at: usize,
    synced: u64,
    liar: bool,
    /// The running row left out as the trial being sampled, if any.
    excluded: Option<usize>,
    n_below: usize,
    /// Rows of each group, increasing; every "below" row is complete.
    below: Vec<usize>,
    above: Vec<usize>,
    /// "Below" as `(key, row)`, best first (the last is the one to beat).
    ranked: Vec<(f64, f64, usize)>,
    /// Rows that left and joined "above" in the last update (`None` after a
    /// full split); a row in both was removed and added again.
    diff: Option<(Vec<u32>, Vec<u32>)>,
}

/// What a suggestion reads from the kept split.
pub(crate) struct SplitView<'a> {
    pub below: &'a [usize],
    pub above: &'a [usize],
    /// The update count and, where this update followed the previous one,
    /// the rows that left and joined "above".
    pub gen: u64,
    pub diff: Option<(&'a [u32], &'a [u32])>,
}

/// Largest number of logged rows followed one by one (more: a full split).
const LOG_MAX: usize = 64;

/// `a` ranks before `b` (split_rows' order: key, then position, which follows
/// the row in a history in trial-number order).
fn less(a: &(f64, f64, usize), b: &(f64, f64, usize)) -> bool {
    a.0 < b.0 || (a.0 == b.0 && (a.1 < b.1 || (a.1 == b.1 && a.2 < b.2)))
}

/// The row of the trial numbered `number` in a history in trial-number order.
fn row_of_number(hist: &TpeHistory, number: u64) -> Option<usize> {
    let at = hist.rows.partition_point(|r| r.number < number);
    hist.rows
        .get(at)
        .is_some_and(|r| r.number == number)
        .then_some(at)
}

/// Inserts `v` into the increasing list `list` (no-op if there).
fn insert_sorted(list: &mut Vec<usize>, v: usize) {
    if let Err(at) = list.binary_search(&v) {
        list.insert(at, v);
    }
}

impl KeptSplit {
    /// Follows the split to a suggestion of trial `trial_number` with
    /// `n_below` (gamma of the finished trials); false where only a full
    /// split will do (then hand it to [`KeptSplit::reset`]).
    pub(crate) fn update(
        &mut self,
        hist: &TpeHistory,
        trial_number: u64,
        liar: bool,
        n_below: usize,
    ) -> bool {
        let ok = self
            .state
            .as_mut()
            .is_some_and(|st| st.follow(hist, trial_number, liar, n_below));
        if !ok {
            self.state = None;
            return false;
        }
        self.gen += 1;
        true
    }

    /// Forgets the split.
    pub(crate) fn clear(&mut self) {
        self.state = None;
    }

    /// Keeps the full split `(below, above)` of the considered rows (what
    /// `split_rows` gave for `n_below`), where it can be followed.
    pub(crate) fn reset(
        &mut self,
        hist: &TpeHistory,
        trial_number: u64,
        liar: bool,
        n_below: usize,
        below: &[usize],
        above: &[usize],
    ) {
        self.gen += 1;
        let excluded = row_of_number(hist, trial_number);
        let followable = hist.sorted
            && below.len() == n_below
            && n_below > 0
            && below.iter().all(|r| hist.rows[*r].class == Class::Complete)
            && excluded.is_none_or(|r| !hist.rows[r].class.is_finished());
        if !followable {
            self.state = None;
            return;
        }
        let mut ranked: Vec<(f64, f64, usize)> = below
            .iter()
            .map(|r| (hist.rows[*r].key.0, hist.rows[*r].key.1, *r))
            .collect();
        ranked.sort_by(|a, b| {
            if less(a, b) {
                std::cmp::Ordering::Less
            } else if less(b, a) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        self.state = Some(State {
            epoch: hist.epoch,
            log_at: hist.log.len(),
            synced: hist.syncs,
            liar,
            excluded: excluded.filter(|r| hist.rows[*r].class == Class::Running),
            n_below,
            below: below.to_vec(),
            above: above.to_vec(),
            ranked,
            diff: None,
        });
    }

    /// The current split, if kept.
    pub(crate) fn view(&self) -> Option<SplitView<'_>> {
        let st = self.state.as_ref()?;
        Some(SplitView {
            below: &st.below,
            above: &st.above,
            gen: self.gen,
            diff: st.diff.as_ref().map(|(o, i)| (&o[..], &i[..])),
        })
    }
}

impl State {
    /// Moves the rows logged since the last update (and the rows of the
    /// trial sampled now and last time) to their groups; false where a full
    /// split is needed (the state is then dropped by the caller).
    fn follow(&mut self, hist: &TpeHistory, trial_number: u64, liar: bool, n_below: usize) -> bool {
        if self.epoch != hist.epoch
            || !hist.sorted
            || self.liar != liar
            || self.n_below != n_below
            || hist.n_complete < n_below
            || hist.log.len() < self.log_at
            || hist.log.len() - self.log_at > LOG_MAX
        {
            return false;
        }
        let excluded = row_of_number(hist, trial_number);
        if excluded.is_some_and(|r| hist.rows[r].class.is_finished()) {
            return false;
        }
        let mut look: Vec<usize> = hist.log[self.log_at..]
            .iter()
            .map(|r| *r as usize)
            .collect();
        look.extend(self.excluded);
        look.extend(excluded);
        look.sort_unstable();
        look.dedup();
        // A "below" row that changed (or is now sampled) needs the full split.
        if look.iter().any(|r| self.below.binary_search(r).is_ok()) {
            return false;
        }
        let (mut out, mut into) = (Vec::new(), Vec::new());
        for r in look {
            let was_above = match self.above.binary_search(&r) {
                Ok(at) => {
                    self.above.remove(at);
                    true
                }
                Err(_) => false,
            };
            let row = hist.rows[r];
            let considered = Some(r) != excluded && row.class.is_observed(liar);
            if !considered {
                if was_above {
                    out.push(r as u32);
                }
                continue;
            }
            let e = (row.key.0, row.key.1, r);
            let enters = row.class == Class::Complete
                && self.ranked.last().is_some_and(|worst| less(&e, worst));
            if enters {
                // It takes the place of the worst "below" row, which joins "above".
                let at = self.ranked.partition_point(|x| less(x, &e));
                self.ranked.insert(at, e);
                let Some(worst) = self.ranked.pop() else {
                    return false;
                };
                if let Ok(at) = self.below.binary_search(&worst.2) {
                    self.below.remove(at);
                }
                insert_sorted(&mut self.below, r);
                insert_sorted(&mut self.above, worst.2);
                into.push(worst.2 as u32);
                if was_above {
                    out.push(r as u32);
                }
                continue;
            }
            insert_sorted(&mut self.above, r);
            let values_changed = hist.changed.get(r).is_some_and(|c| *c > self.synced);
            if !was_above || values_changed {
                if was_above {
                    out.push(r as u32);
                }
                into.push(r as u32);
            }
        }
        self.excluded = excluded.filter(|r| hist.rows[*r].class == Class::Running);
        self.log_at = hist.log.len();
        self.synced = hist.syncs;
        self.diff = Some((out, into));
        true
    }
}

#[cfg(test)]
mod tests {

    use super::super::parzen::{mixed_test_dists, mixed_test_space, random_trial};
    use super::super::sampler::{full_split, gamma, TpeConfig};
    use super::*;
    use crate::rng::{trial_rng, uniform01};
    use crate::trial::{Direction, FrozenTrial, TrialState};

    #[test]
    fn the_followed_split_is_the_full_split() {
        // A study growing by a trial or a few (now and then a burst), running
        // trials completing, pruned, failing or given new values, the trial
        // being sampled sometimes a running one and rarely a finished one; at
        // every step the followed split must be the full one and its reported
        // change must turn the last "above" into this one.
        let space = mixed_test_space();
        let dists = mixed_test_dists();
        let cfg = TpeConfig::default();
        for liar in [true, false] {
            let mut rng = trial_rng(21, liar as u64, 0);
            let mut trials: Vec<FrozenTrial> = Vec::new();
            let mut hist = TpeHistory::new();
            let mut ks = KeptSplit::default();
            let mut last: Option<(u64, Vec<usize>)> = None;
            let (mut followed, mut diffs) = (0, 0);
            for step in 0..600 {
                let adds = if step % 97 == 50 {
                    80
                } else {
                    1 + (step % 4 == 0) as usize
                };
                for _ in 0..adds {
                    let t = random_trial(trials.len() as u64, &dists, &mut rng, (0.0, 2, 0.2));
                    trials.push(t);
                }
                for t in trials.iter_mut().filter(|t| t.state == TrialState::Running) {
                    let u = uniform01(&mut rng);
                    if u < 0.15 {
                        t.state = TrialState::Complete;
                        // Ties with earlier values now and then.
                        t.value = Some((uniform01(&mut rng) * 40.0).floor() / 40.0);
                    } else if u < 0.2 {
                        t.state = TrialState::Pruned;
                        t.intermediate_values.insert(1, uniform01(&mut rng));
                    } else if u < 0.25 {
                        t.state = TrialState::Fail;
                    } else if u < 0.3 {
                        if let Some(v) = t.params.values_mut().next() {
                            *v = uniform01(&mut rng);
                        }
                    }
                }
                hist.sync(&space, Direction::Minimize, &trials);
                let u = uniform01(&mut rng);
                let running: Vec<u64> = trials
                    .iter()
                    .filter(|t| t.state == TrialState::Running)
                    .map(|t| t.number)
                    .collect();
                let number = if u < 0.5 && !running.is_empty() {
                    running[(uniform01(&mut rng) * running.len() as f64) as usize % running.len()]
                } else if u < 0.52 {
                    (uniform01(&mut rng) * trials.len() as f64) as u64
                } else {
                    trials.len() as u64
                };
                let cfg = TpeConfig {
                    constant_liar: liar,
                    ..cfg
                };
                let full = full_split(&hist, number, &cfg);
                let n = hist.n_finished;
                let ok = hist.sorted
                    && n > 0
                    && n >= cfg.n_startup_trials
                    && ks.update(&hist, number, liar, gamma(n));
                if ok {
                    followed += 1;
                    let v = ks.view().expect("a followed split has a view");
                    assert_eq!(
                        (v.below, v.above),
                        (&full.below[..], &full.above[..]),
                        "step {step}"
                    );
                    assert_eq!(n, full.n_finished, "step {step}");
                    assert!(full.excluded_finished.is_empty(), "step {step}");
                    let (out, into) = v.diff.expect("a followed split reports its change");
                    let (g, prev) = last.clone().expect("followed from a kept split");
                    assert_eq!(g + 1, v.gen, "step {step}");
                    let mut now: Vec<usize> = prev;
                    for r in out {
                        let at = now
                            .binary_search(&(*r as usize))
                            .expect("a row that left was there");
                        now.remove(at);
                    }
                    for r in into {
                        let at = now
                            .binary_search(&(*r as usize))
                            .expect_err("a row that joined was not there");
                        now.insert(at, *r as usize);
                    }
                    assert_eq!(now, full.above, "step {step}");
                    diffs += (!out.is_empty() || !into.is_empty()) as usize;
                } else if full.n_finished >= cfg.n_startup_trials {
                    ks.reset(
                        &hist,
                        number,
                        liar,
                        gamma(full.n_finished),
                        &full.below,
                        &full.above,
                    );
                } else {
                    ks.clear();
                }
                last = ks.view().map(|v| (v.gen, v.above.to_vec()));
            }
            assert!(
                followed > 350 && diffs > 300,
                "followed {followed}, with changes {diffs}"
            );
        }
    }
}
