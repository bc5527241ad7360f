//! The trial state machine and leases: ask, heartbeat, report, complete,
//! fail, release, and the reaper's sweep.
//!
//! ```text
//!   WAITING --ask--> RUNNING --complete--> COMPLETE
//!                       |    --prune-----> PRUNED
//!                       |    --fail------> FAIL
//!                       +--lease expired / release / retryable fail--> WAITING
//! ```
//!
//! Every transition out of RUNNING goes through [`check_lease`] (fencing)
//! or the reaper, and clears the lease, so a trial leaves RUNNING once per
//! lease and a finished trial never changes again.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use mnist_sampler::sampler::suggest;
use mnist_sampler::pruner::rung_key;
use mnist_sampler::pyjson::py_float;
use mnist_sampler::{FrozenTrial, SampleError, TrialState};
use tokio::time::Instant;

use super::model::{trial_state_str, Lease, StudyMem, StudyState, TrialExtra};
use super::view::{external_params, trial_view, AskOutcome, Assignment, FinishOutcome, HeartbeatOutcome, LeaseView, ReportOutcome};
use super::{make_event, put_trial, update_study_op, Coordinator, Counters, HolderView, Inner};
use crate::clock::rfc3339;
use crate::error::{check_holder_id, check_study_name, CoordError, Result};
use crate::events::EventKind;
use crate::space::apply_params;
use crate::storage::load::PRUNER_STATE_KEY;
use crate::storage::{Batch, LazyReservation, Op, ParamRow, Pending};

/// A request for a trial.
#[derive(Debug, Clone)]
pub struct AskRequest {
    /// The worker id or client id.
    pub holder: String,
    /// The holder's slot.
    pub slot: u32,
    /// Only this study; `None`: the oldest RUNNING study with work.
    pub study: Option<String>,
    /// Long-poll up to this long when there is no work.
    pub wait: Duration,
}

/// Why a lease check failed.
enum LeaseProblem {
    /// Refuse with this error.
    Refused(CoordError),
    /// The lease ran out; the trial must be expired now.
    Expired { holder: String, expires_ms: i64 },
}

const ASK_ATTEMPTS: usize = 8;


impl Coordinator {
    /// Hands out a trial (see `AcquireTrial` and `Ask`): the one this holder's
    /// slot already holds, else the lowest WAITING trial, else a newly
    /// sampled one, from the named study or the oldest RUNNING study with
    /// room. Waits up to `req.wait` (capped by `max_wait`) for work.
    pub async fn ask(&self, req: AskRequest) -> Result<AskOutcome> {
        check_holder_id("the holder id", &req.holder)?;
        if let Some(s) = &req.study {
            check_study_name(s)?;
        }
        let deadline = Instant::now() + req.wait.min(self.config().max_wait);
        loop {
            let notified = self.work_notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (outcome, pending) = self.try_ask(&req)?;
            pending.wait().await?;
            match outcome {
                AskOutcome::Idle { over: false, .. } if Instant::now() < deadline && !self.is_shutting_down() => {
                    let _ = tokio::time::timeout_at(deadline, notified).await;
                }
                other => return Ok(other),
            }
        }
    }

    fn try_ask(&self, req: &AskRequest) -> Result<(AskOutcome, Pending)> {
        let now = self.clock.now_ms();
        let lease_ms = self.config().lease_duration.as_millis() as i64;
        let heartbeat_ms = self.config().heartbeat().as_millis() as u32;
        // Taken only once the ask changes something: an idle ask writes
        // nothing, so a full write queue does not refuse it.
        let mut slot = self.reserve_lazily();
        let mut g = self.lock();
        let inner = &mut *g;
        touch_worker(inner, &req.holder, now);
        // An unknown study is NOT_FOUND, whatever the slot holds.
        let wanted = match &req.study {
            Some(name) => Some(*inner.names.get(name).ok_or_else(|| super::not_found_study(name))?),
            None => None,
        };
        let key = (req.holder.clone(), req.slot);
        // Invariant 5: the same holder and slot get their live trial back.
        if let Some(&tid) = inner.holders.get(&key) {
            if let Some(&(sid, n)) = inner.trial_index.get(&tid) {
                if let Some(study) = inner.studies.get_mut(&sid) {
                    let x = &mut study.extra[n as usize];
                    if let Some(l) = x.lease.as_mut().filter(|l| l.holder == req.holder && l.slot == req.slot && l.expires_ms > now) {
                        if wanted.is_some_and(|w| w != sid) {
                            return Err(CoordError::FailedPrecondition(format!(
                                "slot {} of {:?} still holds trial {n} of study {:?}; complete, fail or release it before asking for another study",
                                req.slot, req.holder, study.name
                            )));
                        }
                        // The answer waits for a barrier in the write queue.
                        slot.take()?;
                        l.expires_ms = now + lease_ms;
                        let lease = LeaseView { token: l.token, expires_ms: l.expires_ms, duration_ms: lease_ms as u32, heartbeat_ms };
                        let retries = x.retries;
                        let params = external_params(study, n);
                        let cfg = apply_params(&study.config.base_config, params.iter().map(|(k, v)| (k.as_str(), v)))
                            .and_then(|c| serde_json::to_string(&c).map_err(|e| e.to_string()))
                            .unwrap_or_default();
                        let a = Assignment {
                            study_name: study.name.clone(),
                            trial_id: tid,
                            number: n,
                            params,
                            train_config_json: cfg,
                            lease,
                            direction: study.config.direction,
                            metric: study.config.metric.clone(),
                            retries,
                            resumed: true,
                        };
                        // The trial may have been started by a batch that is
                        // still queued (the holder's first ask is waiting for
                        // it) or that failed: answer only once everything
                        // queued before is committed, so a trial whose start
                        // was never written is not handed out.
                        return Ok((AskOutcome::Assigned(Box::new(a)), slot.barrier()?));
                    }
                }
            }
            inner.holders.remove(&key);
        }

        let candidates: Vec<i64> = match wanted {
            Some(id) => vec![id],
            None => inner.studies.iter().filter(|(_, s)| s.state == StudyState::Running).map(|(id, _)| *id).collect(),
        };
        let mut batch = Batch::new();
        let mut reasons = Vec::new();
        let mut over = req.study.is_some();
        for sid in candidates {
            match start_in_study(inner, &mut batch, &mut slot, sid, &req.holder, req.slot, now, lease_ms, heartbeat_ms)? {
                Ok(assignment) => {
                    return Ok((AskOutcome::Assigned(Box::new(assignment)), slot.submit(batch)));
                }
                Err((reason, study_over)) => {
                    reasons.push(reason);
                    over &= study_over;
                }
            }
        }
        let pending = slot.submit(batch);
        let reason = if reasons.is_empty() {
            "no RUNNING study; create one with `mnistctl study create`".to_string()
        } else {
            reasons.join("; ")
        };
        let retry_after_ms = if over { 0 } else { heartbeat_ms.clamp(100, 5000) };
        Ok((AskOutcome::Idle { reason, retry_after_ms, over }, pending))
    }

    /// Renews a lease (see `Heartbeat`): `holder`, when not empty, must be a
    /// valid holder id and the lease's holder. Heartbeats are not written to
    /// the database (after a restart every lease gets `restart_grace`
    /// anyway), so one on a live lease needs no place in the write queue.
    pub async fn heartbeat(&self, trial_id: i64, token: u64, holder: &str) -> Result<HeartbeatOutcome> {
        if !holder.is_empty() {
            check_holder_id("the worker id", holder)?;
        }
        let lease_ms = self.config().lease_duration.as_millis() as i64;
        self.with_lease(trial_id, token, holder, false, |inner, _batch, sid, n, now| {
            let study = inner.studies.get_mut(&sid).ok_or_else(|| CoordError::Internal("study vanished".into()))?;
            let stop = study.state == StudyState::Stopped;
            let l = study.extra[n as usize].lease.as_mut().ok_or_else(|| CoordError::Internal("lease vanished".into()))?;
            l.expires_ms = now + lease_ms;
            Ok(HeartbeatOutcome {
                stop,
                message: if stop { format!("study {:?} was stopped: {}", study.name, study.end_reason) } else { String::new() },
                expires_ms: l.expires_ms,
            })
        })
        .await
    }

    /// Records an intermediate value and asks the pruner (see `ReportIntermediate`).
    pub async fn report(&self, trial_id: i64, token: u64, step: u64, value: f64, metrics: BTreeMap<String, f64>) -> Result<ReportOutcome> {
        if step > i64::MAX as u64 {
            return Err(CoordError::InvalidArgument(format!("step {step} is too large (at most {})", i64::MAX)));
        }
        check_metrics(&metrics)?;
        let lease_ms = self.config().lease_duration.as_millis() as i64;
        self.with_lease(trial_id, token, "", true, |inner, batch, sid, n, now| {
            let Inner { studies, ids, .. } = inner;
            let study = studies.get_mut(&sid).ok_or_else(|| CoordError::Internal("study vanished".into()))?;
            let ni = n as usize;
            study.trials[ni].intermediate_values.insert(step, value);
            if let Some(l) = study.extra[ni].lease.as_mut() {
                l.expires_ms = now + lease_ms;
            }
            batch.push(Op::SetIntermediate { trial_id, step: step as i64, value });
            let kept = study.pruner_state;
            let decision = study.pruner.decide(&study.trials[ni], &study.trials, study.config.direction, &mut study.pruner_state);
            if study.pruner_state != kept {
                let value_json = serde_json::to_string(&study.pruner_state).map_err(|e| CoordError::Internal(format!("pruner state: {e}")))?;
                batch.push(Op::SetStudySystemAttr { study_id: study.id, key: PRUNER_STATE_KEY.into(), value_json });
            }
            // Rung values (successive halving, Hyperband), stored as Optuna stores them.
            for (rung, v) in decision.rungs {
                study.trials[ni].rungs.insert(rung, v);
                batch.push(Op::SetSystemAttr { trial_id, key: rung_key(rung), value_json: py_float(v) });
            }
            let prune = decision.prune;
            let mut ev = make_event(ids, study, EventKind::TrialReported, Some(n), now);
            ev.step = Some(step);
            ev.value = Some(value);
            ev.metrics = metrics;
            if prune {
                ev.message = "the pruner says prune".into();
            }
            batch.push_event(ev);
            Ok(ReportOutcome { prune, stop: study.state == StudyState::Stopped })
        })
        .await
    }

    /// Finishes a trial COMPLETE or PRUNED (see `CompleteTrial` / `Tell`).
    /// Invariant 1: this succeeds at most once per trial.
    pub async fn complete(
        &self,
        trial_id: i64,
        token: u64,
        state: TrialState,
        value: Option<f64>,
        metrics: BTreeMap<String, f64>,
    ) -> Result<FinishOutcome> {
        if !matches!(state, TrialState::Complete | TrialState::Pruned) {
            return Err(CoordError::InvalidArgument(format!(
                "a trial can be completed as COMPLETE or PRUNED, not {}; use FailTrial for failures",
                trial_state_str(state)
            )));
        }
        match value {
            Some(v) if v.is_nan() => {
                return Err(CoordError::InvalidArgument(
                    "the value is NaN; report the trial as failed (FailTrial, or Tell with state FAIL) instead".into(),
                ))
            }
            None if state == TrialState::Complete => {
                return Err(CoordError::InvalidArgument("a COMPLETE trial needs a value".into()))
            }
            _ => {}
        }
        check_metrics(&metrics)?;
        self.with_lease(trial_id, token, "", true, |inner, batch, sid, n, now| {
            let value = match (state, value) {
                (TrialState::Pruned, None) => {
                    inner.studies[&sid].trials[n as usize].intermediate_values.values().next_back().copied().filter(|v| !v.is_nan())
                }
                (_, v) => v,
            };
            let is_best = finish_trial(inner, batch, sid, n, state, value, metrics, None, now);
            self.wake_workers();
            let trial = trial_view(&inner.studies[&sid], n).ok_or_else(|| CoordError::Internal("trial vanished".into()))?;
            Ok(FinishOutcome { trial, is_best })
        })
        .await
    }

    /// Fails a trial (see `FailTrial`). A retryable failure re-queues it
    /// while the study's retry policy allows. Returns the trial's new state
    /// and the retries left.
    pub async fn fail(&self, trial_id: i64, token: u64, reason: &str, retryable: bool) -> Result<(TrialState, u32)> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(CoordError::InvalidArgument("a failure needs a reason (what went wrong)".into()));
        }
        let reason = truncate(reason, 4096);
        self.with_lease(trial_id, token, "", true, |inner, batch, sid, n, now| {
            let state = if retryable {
                requeue_or_fail(inner, batch, sid, n, &reason, true, now)
            } else {
                finish_trial(inner, batch, sid, n, TrialState::Fail, None, BTreeMap::new(), Some(reason.clone()), now);
                TrialState::Fail
            };
            self.wake_workers();
            let study = &inner.studies[&sid];
            let left = study.config.retry.max_retries.saturating_sub(study.extra[n as usize].retries);
            Ok((state, if state == TrialState::Waiting { left } else { 0 }))
        })
        .await
    }

    /// Gives a trial back at once, without counting a retry (see `ReleaseTrial`).
    pub async fn release(&self, trial_id: i64, token: u64, reason: &str) -> Result<TrialState> {
        let reason = if reason.trim().is_empty() { "released by its holder".to_string() } else { truncate(reason.trim(), 4096) };
        self.with_lease(trial_id, token, "", true, |inner, batch, sid, n, now| {
            let s = requeue_or_fail(inner, batch, sid, n, &format!("released: {reason}"), false, now);
            self.wake_workers();
            Ok(s)
        })
        .await
    }

    /// The reaper's sweep: re-queues (or fails) every trial whose lease has
    /// expired, and ends studies whose limits are reached. Returns how many
    /// leases expired.
    pub async fn reap(&self) -> Result<usize> {
        let (expired, pending) = {
            let now = self.clock.now_ms();
            let lease_s = self.config().lease_duration.as_secs_f64();
            // Taken only when a lease expired or a study ends: a sweep that
            // finds nothing to do writes nothing.
            let mut slot = self.reserve_lazily();
            let mut g = self.lock();
            let inner = &mut *g;
            let mut batch = Batch::new();
            let mut expired = 0;
            let ids: Vec<i64> = inner.studies.keys().copied().collect();
            for sid in ids {
                let lost: Vec<(u64, String, u32)> = {
                    let study = &inner.studies[&sid];
                    study
                        .running
                        .iter()
                        .filter_map(|&n| match &study.extra[n as usize].lease {
                            Some(l) if l.expires_ms > now => None,
                            Some(l) => Some((n, l.holder.clone(), l.slot)),
                            None => Some((n, String::new(), 0)),
                        })
                        .collect()
                };
                for (n, holder, holder_slot) in lost {
                    slot.take()?;
                    let reason = format!("lease expired: no heartbeat from {holder:?} (slot {holder_slot}) within {lease_s:.0}s");
                    requeue_or_fail(inner, &mut batch, sid, n, &reason, true, now);
                    expired += 1;
                }
                let Inner { studies, ids, .. } = inner;
                if let Some(study) = studies.get_mut(&sid) {
                    finish_if_due(study, ids, &mut batch, &mut slot, now)?;
                }
            }
            (expired, slot.submit(batch))
        };
        pending.wait().await?;
        if expired > 0 {
            tracing::info!(expired, "re-queued trials whose lease expired");
            self.wake_workers();
        }
        Ok(expired)
    }

    /// The frame of every call made under a lease: under the lock, finds the
    /// trial and checks that `token` is its live lease (invariant 2) and, when
    /// `holder` is not empty, that `holder` holds it (a worker that calls with
    /// another's token is refused, whatever the token); then runs
    /// `f(inner, batch, study id, trial number, now)`, or records what a lapsed
    /// lease means; commits the batch either way (whatever changed in memory is
    /// written), and waits for the commit. `holder`, when not empty, is also
    /// the worker seen alive. `writes`: whether `f` writes anything; a place in
    /// the write queue is taken only for a call that writes (a refused call
    /// and a heartbeat on a live lease write nothing, so a full queue does not
    /// refuse them).
    async fn with_lease<T>(
        &self,
        trial_id: i64,
        token: u64,
        holder: &str,
        writes: bool,
        f: impl FnOnce(&mut Inner, &mut Batch, i64, u64, i64) -> Result<T>,
    ) -> Result<T> {
        let (res, pending) = {
            let now = self.clock.now_ms();
            let mut slot = self.reserve_lazily();
            let mut g = self.lock();
            let inner = &mut *g;
            if !holder.is_empty() {
                touch_worker(inner, holder, now);
            }
            let (sid, n) = locate(inner, trial_id)?;
            let mut batch = Batch::new();
            let res = match check_lease(&inner.studies[&sid], n, token, holder, now) {
                Ok(()) => {
                    if writes {
                        slot.take()?;
                    }
                    f(inner, &mut batch, sid, n, now)
                }
                Err(p @ LeaseProblem::Expired { .. }) => {
                    slot.take()?;
                    Err(self.lease_problem(inner, &mut batch, sid, n, p, now))
                }
                Err(p) => Err(self.lease_problem(inner, &mut batch, sid, n, p, now)),
            };
            (res, slot.submit(batch))
        };
        pending.wait().await?;
        res
    }

    /// Turns a lease problem into the error to return, expiring the trial
    /// first when its lease has run out.
    fn lease_problem(&self, inner: &mut Inner, batch: &mut Batch, sid: i64, n: u64, p: LeaseProblem, now: i64) -> CoordError {
        match p {
            LeaseProblem::Refused(e) => e,
            LeaseProblem::Expired { holder, expires_ms } => {
                let study = &inner.studies[&sid];
                let name = study.name.clone();
                let reason = format!("lease expired at {} (holder {holder:?})", rfc3339(expires_ms));
                let state = requeue_or_fail(inner, batch, sid, n, &reason, true, now);
                self.wake_workers();
                CoordError::FailedPrecondition(format!(
                    "the lease on trial {n} of study {name:?} expired at {} (no heartbeat in time); the trial is now {} and this call is refused; drop the trial",
                    rfc3339(expires_ms),
                    trial_state_str(state)
                ))
            }
        }
    }
}

/// Finds a trial by id.
pub(crate) fn locate(inner: &Inner, trial_id: i64) -> Result<(i64, u64)> {
    inner.trial_index.get(&trial_id).copied().ok_or_else(|| {
        CoordError::NotFound(format!("no trial with id {trial_id} (its study may have been deleted); drop it"))
    })
}

/// Fencing (invariant 2): `token` must be the live, unexpired lease of a
/// RUNNING trial, and `holder`, when the call names one, its holder.
fn check_lease(study: &StudyMem, n: u64, token: u64, holder: &str, now: i64) -> std::result::Result<(), LeaseProblem> {
    let t = &study.trials[n as usize];
    let x = &study.extra[n as usize];
    let refuse = |m: String| Err(LeaseProblem::Refused(CoordError::FailedPrecondition(m)));
    if t.state.is_finished() {
        return refuse(format!(
            "trial {n} of study {:?} is already {}; a trial is finished only once, so this call is refused",
            study.name,
            trial_state_str(t.state)
        ));
    }
    match &x.lease {
        Some(l) if l.token == token && !holder.is_empty() && l.holder != holder => refuse(format!(
            "lease token {token} of trial {n} of study {:?} is held by {:?}, not by {holder:?}; only a lease's holder may renew or use it, so drop the trial",
            study.name, l.holder
        )),
        Some(l) if l.token == token => {
            if l.expires_ms <= now {
                Err(LeaseProblem::Expired { holder: l.holder.clone(), expires_ms: l.expires_ms })
            } else {
                Ok(())
            }
        }
        Some(l) => refuse(format!(
            "lease token {token} is not the current lease of trial {n} of study {:?} (it was re-queued and is now held by {:?} under a newer lease); drop the trial",
            study.name, l.holder
        )),
        None => refuse(format!(
            "trial {n} of study {:?} is {} and has no lease: lease {token} was lost (expired or released) and the trial was re-queued; drop it",
            study.name,
            trial_state_str(t.state)
        )),
    }
}

fn check_metrics(metrics: &BTreeMap<String, f64>) -> Result<()> {
    for (k, v) in metrics {
        if k.is_empty() || k.len() > 512 || k.chars().any(char::is_control) {
            return Err(CoordError::InvalidArgument(format!("metric name {k:?} must be 1 to 512 characters without control characters")));
        }
        if !v.is_finite() {
            return Err(CoordError::InvalidArgument(format!("metric {k:?} is {v}; metrics must be finite numbers")));
        }
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

pub(crate) fn touch_worker(inner: &mut Inner, holder: &str, now: i64) {
    if let Some(w) = inner.workers.get_mut(holder) {
        w.last_seen_ms = now;
    }
}

/// Tries to start a trial of study `sid` for a holder, taking the place in
/// the write queue (`reservation`) before its first change. When no trial
/// starts, returns `Ok(Err(..))` with why, and whether the study will never
/// hand out a trial again; `Err` when the write queue refuses a change.
#[allow(clippy::too_many_arguments)]
fn start_in_study(
    inner: &mut Inner,
    batch: &mut Batch,
    reservation: &mut LazyReservation<'_>,
    sid: i64,
    holder: &str,
    slot: u32,
    now: i64,
    lease_ms: i64,
    heartbeat_ms: u32,
) -> Result<std::result::Result<Assignment, (String, bool)>> {
    let Inner { studies, trial_index, holders, workers, ids, .. } = inner;
    let Some(study) = studies.get_mut(&sid) else { return Ok(Err(("the study was deleted".into(), true))) };
    if study.state != StudyState::Running {
        let why = if study.end_reason.is_empty() { String::new() } else { format!(" ({})", study.end_reason) };
        return Ok(Err((format!("study {:?} is {}{why}", study.name, study.state.as_str()), true)));
    }
    if let Some(d) = study.deadline_ms() {
        if now >= d {
            finish_if_due(study, ids, batch, reservation, now)?;
            return Ok(Err((
                format!("study {:?} reached its timeout; no new trials (waiting for {} running)", study.name, study.counts.running),
                study.state != StudyState::Running,
            )));
        }
    }
    let max = study.config.max_concurrency;
    if max > 0 && study.counts.running >= max {
        return Ok(Err((format!("study {:?} runs {max} trials, its max_concurrency", study.name), false)));
    }
    let (hostname, device) = match workers.get(holder) {
        Some(w) => (w.hostname.clone(), w.devices.get(slot as usize).map(|d| d.name.clone()).unwrap_or_default()),
        None => (String::new(), String::new()),
    };
    for _ in 0..ASK_ATTEMPTS {
        let waiting = study.waiting.iter().next().copied();
        let number = match waiting {
            Some(n) => n,
            None if study.can_create() => study.trials.len() as u64,
            None => {
                finish_if_due(study, ids, batch, reservation, now)?;
                let over = study.state != StudyState::Running;
                let why = if study.exhausted {
                    format!("study {:?}: the sampler has nothing left to suggest", study.name)
                } else {
                    format!(
                        "study {:?}: all {} trials are handed out ({} still running)",
                        study.name, study.config.n_trials, study.counts.running
                    )
                };
                return Ok(Err((why, over)));
            }
        };
        // The parameters: for a waiting trial, its stored parameters and
        // enqueued fixed values are kept; the rest is sampled.
        let fixed: BTreeMap<String, f64> = match waiting {
            Some(n) => {
                let x = &study.extra[n as usize];
                let mut f = x.fixed.clone();
                f.extend(study.trials[n as usize].params.iter().map(|(k, v)| (k.clone(), *v)));
                f
            }
            None => BTreeMap::new(),
        };
        let sampled = suggest(
            study.sampler.as_ref(),
            &mut study.sampler_cache,
            &study.space,
            &study.trials,
            study.config.direction,
            number,
            if fixed.is_empty() { None } else { Some(&fixed) },
        );
        // (The sampler's memo and `exhausted` are not written: no change.)
        let params = match sampled {
            Ok(p) => p,
            Err(SampleError::GridExhausted { .. }) if waiting.is_none() => {
                study.exhausted = true;
                continue;
            }
            Err(e) => {
                let reason = format!("cannot sample parameters: {e}");
                match waiting {
                    Some(n) => {
                        reservation.take()?;
                        fail_waiting(study, ids, batch, n, &reason, now);
                        continue;
                    }
                    None => return Ok(Err((format!("study {:?}: {reason}", study.name), false))),
                }
            }
        };
        // From here on the trial changes (it starts, or fails).
        reservation.take()?;
        let trial_id = match waiting {
            Some(n) => study.extra[n as usize].trial_id,
            None => {
                let id = ids.next_trial_id;
                ids.next_trial_id += 1;
                id
            }
        };
        // Record the parameters on the trial (in memory; the ops follow below
        // in foreign-key order).
        if waiting.is_none() {
            let extra = TrialExtra { trial_id, ..Default::default() };
            study.push_trial(FrozenTrial::new(number, TrialState::Waiting), extra);
            trial_index.insert(trial_id, (sid, number));
        }
        let ni = number as usize;
        let prev_count = study.trials[ni].params.len();
        let mut rows = Vec::with_capacity(params.len());
        {
            let t = &mut study.trials[ni];
            for (name, v) in &params {
                let dist = t.distributions.get(name).cloned().or_else(|| study.space.get(name).cloned());
                if let Some(d) = dist {
                    rows.push(ParamRow { name: name.clone(), value: *v, distribution_json: d.to_optuna_json() });
                    t.distributions.insert(name.clone(), d);
                    t.params.insert(name.clone(), *v);
                }
            }
        }
        let need_params = waiting.is_none() || !study.extra[ni].params_stored || rows.len() != prev_count;
        let ext = external_params(study, number);
        let cfg = match apply_params(&study.config.base_config, ext.iter().map(|(k, v)| (k.as_str(), v)))
            .and_then(|c| serde_json::to_string(&c).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => {
                if need_params {
                    batch.push(Op::SetParams { trial_id, params: rows });
                    study.extra[ni].params_stored = true;
                }
                fail_waiting(study, ids, batch, number, &format!("the parameters give an invalid training configuration: {e}"), now);
                continue;
            }
        };
        // WAITING -> RUNNING under a new lease.
        let token = ids.token(batch);
        let expires_ms = now + lease_ms;
        study.set_state(number, TrialState::Running);
        {
            let x = &mut study.extra[ni];
            x.lease = Some(Lease { token, holder: holder.to_string(), slot, expires_ms });
            x.last_token = Some(token);
            x.start_ms = Some(now);
            x.hostname = hostname.clone();
            x.device = device.clone();
            if need_params {
                x.params_stored = true;
            }
        }
        holders.insert((holder.to_string(), slot), trial_id);
        batch.push(put_trial(study, number));
        if need_params {
            batch.push(Op::SetParams { trial_id, params: rows });
        }
        let mut ev = make_event(ids, study, EventKind::TrialStarted, Some(number), now);
        ev.params = ext.clone();
        ev.holder = Some(HolderView { holder_id: holder.to_string(), slot, hostname, device, expires_ms });
        batch.push_event(ev);
        return Ok(Ok(Assignment {
            study_name: study.name.clone(),
            trial_id,
            number,
            params: ext,
            train_config_json: cfg,
            lease: LeaseView { token, expires_ms, duration_ms: lease_ms as u32, heartbeat_ms },
            direction: study.config.direction,
            metric: study.config.metric.clone(),
            retries: study.extra[ni].retries,
            resumed: false,
        }));
    }
    finish_if_due(study, ids, batch, reservation, now)?;
    Ok(Err((format!("study {:?}: no trial could be started (see the failed trials)", study.name), study.state != StudyState::Running)))
}

/// Fails a trial that never started (bad enqueued values, bad configuration).
fn fail_waiting(study: &mut StudyMem, ids: &mut Counters, batch: &mut Batch, n: u64, reason: &str, now: i64) {
    let trial_id = study.extra[n as usize].trial_id;
    study.set_state(n, TrialState::Fail);
    let x = &mut study.extra[n as usize];
    x.reason = Some(reason.to_string());
    x.complete_ms = Some(now);
    batch.push(put_trial(study, n));
    batch.push(Op::SetSystemAttr {
        trial_id,
        key: "fail_reason".into(),
        value_json: serde_json::to_string(reason).unwrap_or_default(),
    });
    let mut ev = make_event(ids, study, EventKind::TrialFailed, Some(n), now);
    ev.message = reason.to_string();
    ev.params = external_params(study, n);
    ev.before_start = true;
    batch.push_event(ev);
    tracing::warn!(study = %study.name, trial = n, %reason, "trial failed before it started");
}

/// Ends a RUNNING trial: COMPLETE, PRUNED or FAIL. Returns whether it is the
/// new best trial.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish_trial(
    inner: &mut Inner,
    batch: &mut Batch,
    sid: i64,
    n: u64,
    state: TrialState,
    value: Option<f64>,
    metrics: BTreeMap<String, f64>,
    reason: Option<String>,
    now: i64,
) -> bool {
    let Inner { studies, holders, ids, .. } = inner;
    let Some(study) = studies.get_mut(&sid) else { return false };
    let ni = n as usize;
    study.trials[ni].value = value;
    study.set_state(n, state);
    let x = &mut study.extra[ni];
    if let Some(l) = x.lease.take() {
        forget_holder(holders, &l, x.trial_id);
    }
    x.complete_ms = Some(now);
    let trial_id = x.trial_id;
    if let Some(v) = value {
        batch.push(Op::SetValue { trial_id, value: v });
    }
    if !metrics.is_empty() {
        batch.push(Op::SetUserAttrs {
            trial_id,
            attrs: metrics.iter().map(|(k, v)| (k.clone(), serde_json::to_string(v).unwrap_or_else(|_| "null".into()))).collect(),
        });
        x.metrics.extend(metrics.iter().map(|(k, v)| (k.clone(), *v)));
    }
    if let Some(r) = &reason {
        x.reason = Some(r.clone());
        batch.push(Op::SetSystemAttr { trial_id, key: "fail_reason".into(), value_json: serde_json::to_string(r).unwrap_or_default() });
    }
    batch.push(put_trial(study, n));
    let is_best = study.consider_best(n);
    let kind = match state {
        TrialState::Complete => EventKind::TrialCompleted,
        TrialState::Pruned => EventKind::TrialPruned,
        _ => EventKind::TrialFailed,
    };
    let mut ev = make_event(ids, study, kind, Some(n), now);
    ev.metrics = metrics;
    ev.message = reason.unwrap_or_default();
    batch.push_event(ev);
    maybe_finish(study, ids, batch, now);
    is_best
}

/// Forgets that `lease`'s (holder, slot) holds trial `trial_id`, the lease
/// having ended. The slot may hold a newer trial by now (its lease on this
/// one expired and it asked again before the reaper came by): that entry is
/// kept, or asking again would no longer return the slot's trial.
pub(crate) fn forget_holder(holders: &mut HashMap<(String, u32), i64>, lease: &Lease, trial_id: i64) {
    let key = (lease.holder.clone(), lease.slot);
    if holders.get(&key) == Some(&trial_id) {
        holders.remove(&key);
    }
}

/// Takes a RUNNING trial's lease away and puts it back in the queue, or fails
/// it when `count_retry` and its retries are used up. Returns the new state.
pub(crate) fn requeue_or_fail(
    inner: &mut Inner,
    batch: &mut Batch,
    sid: i64,
    n: u64,
    reason: &str,
    count_retry: bool,
    now: i64,
) -> TrialState {
    let (max_retries, fresh, retries) = match inner.studies.get(&sid) {
        Some(s) => (s.config.retry.max_retries, s.config.retry.fresh_params, s.extra[n as usize].retries),
        None => return TrialState::Fail,
    };
    if count_retry && retries >= max_retries {
        let why = format!("{reason}; no retries left (max_retries = {max_retries})");
        finish_trial(inner, batch, sid, n, TrialState::Fail, None, BTreeMap::new(), Some(why), now);
        return TrialState::Fail;
    }
    let Inner { studies, holders, ids, .. } = inner;
    let Some(study) = studies.get_mut(&sid) else { return TrialState::Fail };
    let ni = n as usize;
    let trial_id = study.extra[ni].trial_id;
    study.set_state(n, TrialState::Waiting);
    study.trials[ni].intermediate_values.clear();
    // A new attempt starts again at rung 0 (its old rung values are cleared
    // with the reports they came from, in the database too).
    study.trials[ni].rungs.clear();
    study.trials[ni].value = None;
    if count_retry && fresh {
        study.trials[ni].params.clear();
        study.trials[ni].distributions.clear();
        study.extra[ni].params_stored = false;
        batch.push(Op::ClearParams { trial_id });
    }
    let x = &mut study.extra[ni];
    if let Some(l) = x.lease.take() {
        forget_holder(holders, &l, trial_id);
    }
    if count_retry {
        x.retries += 1;
    }
    x.reason = Some(reason.to_string());
    x.start_ms = None;
    batch.push(Op::ClearIntermediate { trial_id });
    batch.push(put_trial(study, n));
    let mut ev = make_event(ids, study, EventKind::TrialRequeued, Some(n), now);
    ev.message = reason.to_string();
    batch.push_event(ev);
    tracing::info!(study = %study.name, trial = n, %reason, "trial re-queued");
    TrialState::Waiting
}

/// [`maybe_finish`] for a call that has not taken its place in the write
/// queue yet: takes it first when the study ends.
fn finish_if_due(study: &mut StudyMem, ids: &mut Counters, batch: &mut Batch, reservation: &mut LazyReservation<'_>, now: i64) -> Result<()> {
    if let Some(r) = finish_reason(study, now) {
        reservation.take()?;
        finish(study, ids, batch, r, now);
    }
    Ok(())
}

/// Why a RUNNING study ends now, if its limit is reached: n_trials
/// finished, the timeout passed with nothing running, or an exhausted
/// sampler with nothing running or waiting.
fn finish_reason(study: &StudyMem, now: i64) -> Option<String> {
    if study.state != StudyState::Running {
        return None;
    }
    let c = study.counts;
    let n_trials = study.config.n_trials;
    if n_trials > 0 && c.finished() >= n_trials {
        Some(format!("n_trials reached ({} finished: {} complete, {} pruned, {} failed)", c.finished(), c.complete, c.pruned, c.fail))
    } else if study.deadline_ms().is_some_and(|d| now >= d) && c.running == 0 {
        Some(format!("timeout of {}s reached", study.config.timeout_seconds))
    } else if study.exhausted && c.running == 0 && c.waiting == 0 {
        Some("the sampler has nothing left to suggest (grid exhausted)".to_string())
    } else {
        None
    }
}

/// Ends a RUNNING study whose limit is reached (see [`finish_reason`]).
pub(crate) fn maybe_finish(study: &mut StudyMem, ids: &mut Counters, batch: &mut Batch, now: i64) {
    if let Some(r) = finish_reason(study, now) {
        finish(study, ids, batch, r, now);
    }
}

/// Ends a RUNNING study for `reason` (from [`finish_reason`]).
fn finish(study: &mut StudyMem, ids: &mut Counters, batch: &mut Batch, reason: String, now: i64) {
    study.state = StudyState::Complete;
    study.end_reason = reason.clone();
    study.ended_ms = Some(now);
    batch.push(update_study_op(study));
    let mut ev = make_event(ids, study, EventKind::StudyCompleted, None, now);
    ev.message = reason;
    batch.push_event(ev);
    tracing::info!(study = %study.name, reason = %study.end_reason, "study complete");
}
