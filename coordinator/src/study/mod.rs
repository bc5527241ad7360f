//! The domain: studies, trials, leases and workers, held in memory and written
//! through to SQLite.
//!
//! [`Coordinator`] is the one object the RPC layer (and an embedding program
//! such as `mnistctl tune`) talks to. Each operation takes the state lock,
//! checks and applies the change in memory, queues the matching database ops
//! (in order, still under the lock), releases the lock, and waits for the
//! commit before answering. Samplers and pruners see the in-memory trials, so
//! no SQL runs on the hot path except the writes.
//!
//! # Invariants
//!
//! 1. **A trial is completed at most once.** Only a RUNNING trial can finish,
//!    and only through its live lease; a finished trial never changes state.
//! 2. **A lease is renewed and used only by its holder.** Every call about a
//!    trial carries the lease's fencing token; a token that is not the
//!    trial's live, unexpired lease is refused with FAILED_PRECONDITION.
//!    A call that names its holder (a heartbeat's worker id) must be the
//!    lease's holder. Tokens grow strictly and are never reused (even across
//!    restarts and deletions): each coordinator process reserves a range of
//!    tokens in the database before it hands out the first of them (and the
//!    next range before it runs out), and the next process starts above every
//!    reserved range, so a token handed out by a previous process, written or
//!    not, can never match a lease of this one.
//! 3. **Nothing acknowledged is lost.** An RPC answers only after its change
//!    is committed; a commit survives `kill -9` of the coordinator.
//! 4. **Running trials are reconciled through leases after a restart.** Each
//!    stored lease is extended to at least now + `restart_grace`, so its
//!    holder can carry on; a holder that does not come back loses the lease
//!    to the reaper as usual.
//! 5. **Ask is idempotent per (holder, slot).** While a holder's slot has a
//!    live lease, asking again returns that same trial and token.
//! 6. **Trial numbers are dense.** Trial `n` of a study is the `n`-th row;
//!    re-queued trials keep their number, so a study with `n_trials = N` ends
//!    with exactly N trials.

mod model;
mod studies;
mod trials;
mod view;
mod workers;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use mnist_sampler::pruner::parse_rung_key;
use mnist_sampler::pyjson::parse_py_float;
use mnist_sampler::{Distribution, FrozenTrial, TrialState};
use tokio::sync::{broadcast, Notify};

pub use model::{
    direction_str, parse_trial_state, trial_state_str, Counts, HolderView, Lease, RetryPolicy, StudyConfig, StudyMem,
    StudyState, TrialExtra,
};
pub use studies::{check_new_study, default_direction, metric_name, pruner_kind, sampler_kind, NewStudy};
pub use view::{
    ArtifactTarget, AskOutcome, Assignment, DeviceInfo, FinishOutcome, HeartbeatOutcome, LeaseView, ReportOutcome,
    SlotView, StudyView, TrialView, WorkerRegistration, WorkerView,
};
pub use trials::AskRequest;

use crate::clock::{parse_optuna_datetime, Clock};
use crate::config::CoordinatorConfig;
use crate::error::{CoordError, Result};
use crate::events::{Event, EventHub, EventKind};
use crate::storage::load::{StudyRow, TrialRow};
use crate::storage::{Batch, Floor, LazyReservation, Op, Reservation, Storage, StorageHealth};

/// How many lease tokens a coordinator reserves in the database at a time
/// (see [`Counters::token`]).
const TOKEN_RANGE: u64 = 1 << 16;

/// Monotonic counters of ids, tokens and event numbers.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub next_study_id: i64,
    pub next_trial_id: i64,
    pub next_token: u64,
    /// Tokens below this are reserved in the database (`lease_token_floor`
    /// is at least this minus one, or its raise is queued ahead of any batch
    /// that carries a token at or above the old end of the reservation).
    pub token_limit: u64,
    pub next_seq: u64,
}

impl Counters {
    /// A new lease token, for a change whose ops go to `batch`. Once half of
    /// the reserved range is used, the next range is reserved in `batch`:
    /// the batches are written in order and nothing is written after a
    /// failed one, so a batch that carries a token beyond the old range
    /// commits only after the new range did; a token that reaches a holder
    /// (only ever after its batch committed) is therefore below the floor
    /// the next process starts above.
    fn token(&mut self, batch: &mut Batch) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        if self.next_token.saturating_add(TOKEN_RANGE / 2) > self.token_limit {
            self.token_limit = self.token_limit.saturating_add(TOKEN_RANGE).min(i64::MAX as u64);
            batch.push(Op::RaiseFloor { floor: Floor::LeaseToken, value: (self.token_limit - 1) as i64 });
        }
        t
    }
    fn seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }
}

/// A registered worker in memory.
#[derive(Debug, Clone)]
pub(crate) struct WorkerMem {
    pub id: String,
    pub hostname: String,
    pub devices: Vec<DeviceInfo>,
    pub labels: BTreeMap<String, String>,
    pub registered_ms: i64,
    pub last_seen_ms: i64,
    /// It said it stopped (DeregisterWorker) and has not registered since:
    /// offline at once. Not stored: after a restart the worker timeout
    /// decides, as for any worker.
    pub left: bool,
}

/// Everything behind the state lock.
#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub studies: BTreeMap<i64, StudyMem>,
    pub names: HashMap<String, i64>,
    /// Names of studies in the file that are not loaded (Optuna's own, or
    /// ones that failed to load), with why: taken, so a new study cannot
    /// collide with them in the database.
    pub unloaded: HashMap<String, String>,
    /// trial id -> (study id, number)
    pub trial_index: HashMap<i64, (i64, u64)>,
    /// (holder, slot) -> trial id of its live lease
    pub holders: HashMap<(String, u32), i64>,
    pub workers: BTreeMap<String, WorkerMem>,
    pub ids: Counters,
}

/// The coordinator: owns the studies and their database.
#[derive(Debug)]
pub struct Coordinator {
    config: CoordinatorConfig,
    inner: Mutex<Inner>,
    storage: Storage,
    hub: EventHub,
    /// Signalled when new work may be available (long polls wait on it).
    work: Notify,
    /// Turns true when the server shuts down (ends long polls and watches).
    shutdown: tokio::sync::watch::Sender<bool>,
    /// MLflow tracking, once the server started it.
    tracking: std::sync::OnceLock<Arc<crate::tracking::Tracking>>,
    /// Lease expiries, timeouts and timestamps (immune to system clock steps).
    clock: Clock,
}

impl Coordinator {
    /// Opens the database (creating it when missing), loads every study into
    /// memory, and reconciles running trials through their leases.
    pub async fn open(config: CoordinatorConfig) -> Result<Arc<Coordinator>> {
        let hub = EventHub::new();
        let (storage, snap) = Storage::open(&config.db_path, &config.storage, hub.clone()).await?;
        // The events stored so far count as published: a live-only watch
        // opened before this process commits its first event starts after
        // them (and catches up from there should it lag).
        hub.mark_published(snap.max_event_seq.max(0) as u64);
        let clock = Clock::start();
        let now = clock.now_ms();
        let grace_until = now + config.restart_grace.as_millis() as i64;
        // The next ids after the largest in the file; a file whose ids are
        // at the end of their range is refused, not wrapped around.
        let next = |max: i64, what: &str| -> Result<i64> {
            max.max(0).checked_add(1).ok_or_else(|| {
                CoordError::Internal(format!("{}: the largest {what} is {max}, so no new one fits; the database is corrupt", config.db_path.display()))
            })
        };
        // This process's lease tokens: a fresh range above every token a
        // previous process handed out or reserved, itself reserved in the
        // database before the first of them is handed out (below).
        let next_token = next(snap.max_lease_token, "lease token")?;
        let token_limit = next_token.checked_add(TOKEN_RANGE as i64).ok_or_else(|| {
            CoordError::Internal(format!("{}: the lease tokens are at the end of their range; the database is corrupt", config.db_path.display()))
        })?;
        let mut inner = Inner {
            ids: Counters {
                next_study_id: next(snap.max_study_id, "study id")?,
                next_trial_id: next(snap.max_trial_id, "trial id")?,
                next_token: next_token as u64,
                token_limit: token_limit as u64,
                next_seq: next(snap.max_event_seq, "event sequence number")? as u64,
            },
            ..Default::default()
        };
        for name in &snap.foreign_studies {
            tracing::warn!(study = %name, "the database holds a study this coordinator does not manage (no mnist_studies row); ignoring it");
            inner.unloaded.insert(name.clone(), "is not managed by this coordinator (an Optuna study without mnist_studies row)".into());
        }
        let mut trials_by_study: HashMap<i64, Vec<TrialRow>> = HashMap::new();
        for t in snap.trials {
            trials_by_study.entry(t.study_id).or_default().push(t);
        }
        let mut orphans = Vec::new();
        for row in &snap.studies {
            let rows = trials_by_study.remove(&row.study_id).unwrap_or_default();
            match build_study(row, rows, grace_until) {
                Ok((study, unleased)) => {
                    for (number, extra) in study.extra.iter().enumerate() {
                        inner.trial_index.insert(extra.trial_id, (study.id, number as u64));
                        if let Some(l) = &extra.lease {
                            inner.holders.insert((l.holder.clone(), l.slot), extra.trial_id);
                        }
                    }
                    orphans.extend(unleased.into_iter().map(|n| (study.id, n)));
                    inner.names.insert(study.name.clone(), study.id);
                    inner.studies.insert(study.id, study);
                }
                Err(e) => {
                    tracing::error!(study = %row.name, error = %e, "cannot load the study; it is left untouched in the database");
                    inner.unloaded.insert(row.name.clone(), format!("could not be loaded ({e})"));
                }
            }
        }
        for w in snap.workers {
            inner.workers.insert(
                w.worker_id.clone(),
                WorkerMem {
                    id: w.worker_id,
                    hostname: w.hostname,
                    devices: serde_json::from_str(&w.devices_json).unwrap_or_default(),
                    labels: serde_json::from_str(&w.labels_json).unwrap_or_default(),
                    registered_ms: w.registered_at_ms,
                    last_seen_ms: w.last_seen_ms,
                    left: false,
                },
            );
        }
        let coord = Arc::new(Coordinator {
            config,
            inner: Mutex::new(inner),
            storage,
            hub,
            work: Notify::new(),
            shutdown: tokio::sync::watch::channel(false).0,
            tracking: std::sync::OnceLock::new(),
            clock,
        });
        // Before anything is served: reserve this process's lease tokens, and
        // put the RUNNING trials without a stored lease, which nobody can
        // reach, back in the queue (not counted as a retry).
        let pending = {
            let slot = coord.reserve()?;
            let mut g = coord.lock();
            let mut batch = Batch::new();
            batch.push(Op::RaiseFloor { floor: Floor::LeaseToken, value: token_limit - 1 });
            for (sid, number) in orphans {
                trials::requeue_or_fail(&mut g, &mut batch, sid, number, "coordinator restarted and found no lease for the running trial", false, now);
            }
            slot.submit(batch)
        };
        pending.wait().await?;
        let n_studies = coord.lock().studies.len();
        tracing::info!(db = %coord.config.db_path.display(), studies = n_studies, "coordinator state loaded");
        Ok(coord)
    }

    /// MLflow tracking, when running.
    pub fn tracking(&self) -> Option<&Arc<crate::tracking::Tracking>> {
        self.tracking.get()
    }

    /// Attaches MLflow tracking (once).
    pub fn set_tracking(&self, t: Arc<crate::tracking::Tracking>) {
        let _ = self.tracking.set(t);
    }

    /// The settings.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// The database.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// A receiver that turns `Some(message)` once a database write failed for
    /// good; from then on every change is refused until a restart.
    pub fn storage_health(&self) -> StorageHealth {
        self.storage.health()
    }

    /// Every committed event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.hub.subscribe()
    }

    /// Every committed event from now on, and the `seq` of the last event
    /// committed before: where a watch that wants live events only starts
    /// (and catches up from, should it lag).
    pub fn subscribe_at(&self) -> (broadcast::Receiver<Arc<Event>>, u64) {
        self.hub.subscribe_at()
    }

    /// The study id of a name.
    pub fn study_id(&self, name: &str) -> Result<i64> {
        let g = self.lock();
        g.names.get(name).copied().ok_or_else(|| not_found_study(name))
    }

    /// Stored events of a study after `after` (see `WatchStudy`).
    pub async fn events_after(&self, study_id: i64, after: u64, limit: u32) -> Result<Vec<Event>> {
        Ok(self.storage.events_after(study_id, after, limit).await?)
    }

    /// Stored events of all studies after `after`, oldest first: the durable
    /// feed for an outbox such as MLflow delivery (keep the last `seq`
    /// delivered in your own table; `subscribe` wakes you for new ones).
    pub async fn events_since(&self, after: u64, limit: u32) -> Result<Vec<Event>> {
        Ok(self.storage.events_since(after, limit).await?)
    }

    /// Starts shutting down: long polls answer at once and watch streams end.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
        self.work.notify_waiters();
    }

    /// True once [`Coordinator::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// A receiver that turns true on shutdown.
    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Flushes pending writes and closes the database.
    pub async fn close(&self) {
        self.begin_shutdown();
        self.storage.close().await;
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough state for
        // reads; writes are validated afresh, so recover the guard.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place in the write queue for one change. Call it before
    /// changing anything in memory: when the queue is full or the storage
    /// failed, the change is refused while nothing has changed yet. Then queue
    /// the change's batch with [`Reservation::submit`] (under the lock).
    pub(crate) fn reserve(&self) -> Result<Reservation<'_>> {
        Ok(self.storage.writer().reserve()?)
    }

    /// A place in the write queue that is taken only once the call turns
    /// out to change something ([`LazyReservation::take`], before the first
    /// change): for calls that often change nothing (a heartbeat, an idle
    /// ask), so that a full queue does not refuse them.
    pub(crate) fn reserve_lazily(&self) -> LazyReservation<'_> {
        self.storage.writer().reserve_lazily()
    }

    pub(crate) fn wake_workers(&self) {
        self.work.notify_waiters();
    }

    pub(crate) fn work_notify(&self) -> &Notify {
        &self.work
    }
}

/// NOT_FOUND for a study name.
pub(crate) fn not_found_study(name: &str) -> CoordError {
    CoordError::NotFound(format!("no study named {name:?}; `mnistctl study list` shows the studies"))
}

/// Builds an event about `study` (and trial `number`), numbered from `ids`.
pub(crate) fn make_event(
    ids: &mut Counters,
    study: &StudyMem,
    kind: EventKind,
    number: Option<u64>,
    now: i64,
) -> Event {
    let trial = number.and_then(|n| study.trials.get(n as usize));
    let extra = number.and_then(|n| study.extra.get(n as usize));
    Event {
        seq: ids.seq(),
        kind,
        study_id: study.id,
        study_name: study.name.clone(),
        time_ms: now,
        trial_id: extra.map(|e| e.trial_id),
        trial_number: number,
        trial_state: trial.map(|t| t.state),
        value: trial.and_then(|t| t.value),
        step: None,
        metrics: BTreeMap::new(),
        message: String::new(),
        counts: study.counts,
        best_value: study.best_value(),
        best_trial_number: study.best,
        study_state: study.state,
        n_trials: study.config.n_trials,
        params: Vec::new(),
        holder: None,
        before_start: false,
    }
}

/// Rebuilds a study from its rows. Returns the study and the numbers of
/// RUNNING trials that have no lease.
fn build_study(row: &StudyRow, rows: Vec<TrialRow>, grace_until: i64) -> std::result::Result<(StudyMem, Vec<u64>), String> {
    let config: StudyConfig = serde_json::from_str(&row.config_json).map_err(|e| format!("bad config_json: {e}"))?;
    let space = config.search_space.clone();
    space.validate().map_err(|e| e.to_string())?;
    let sampler = config.sampler.build().map_err(|e| e.to_string())?;
    let pruner = config.pruner.build().map_err(|e| e.to_string())?;
    let pruner_state = match &row.pruner_state_json {
        Some(j) => serde_json::from_str(j).map_err(|e| format!("bad pruner state {j:?}: {e}"))?,
        None => Default::default(),
    };
    let state = StudyState::parse(&row.state).ok_or_else(|| format!("unknown study state {:?}", row.state))?;
    let mut study = StudyMem {
        id: row.study_id,
        name: row.name.clone(),
        config,
        space,
        sampler,
        sampler_cache: Default::default(),
        pruner_state,
        pruner,
        state,
        end_reason: row.end_reason.clone(),
        created_ms: row.created_at_ms,
        started_ms: row.started_at_ms,
        ended_ms: row.ended_at_ms,
        trials: Vec::with_capacity(rows.len()),
        extra: Vec::with_capacity(rows.len()),
        waiting: Default::default(),
        running: Default::default(),
        counts: Counts::default(),
        best: None,
        exhausted: false,
    };
    let mut unleased = Vec::new();
    for (i, t) in rows.into_iter().enumerate() {
        if t.number != i as i64 {
            return Err(format!("trial numbers are not dense: row {i} has number {}", t.number));
        }
        let state = parse_trial_state(&t.state).ok_or_else(|| format!("trial {} has unknown state {:?}", t.trial_id, t.state))?;
        let mut ft = FrozenTrial::new(i as u64, state);
        for (name, value, dist_json) in &t.params {
            let dist = Distribution::from_optuna_json(dist_json).map_err(|e| format!("trial {}: {e}", t.trial_id))?;
            ft.params.insert(name.clone(), *value);
            ft.distributions.insert(name.clone(), dist);
        }
        if matches!(state, TrialState::Complete | TrialState::Pruned) {
            ft.value = t.value;
        }
        for (step, v) in &t.intermediate {
            ft.intermediate_values.insert((*step).max(0) as u64, *v);
        }
        let mut extra = TrialExtra {
            trial_id: t.trial_id,
            retries: t.mnist.retries.max(0) as u32,
            enqueued: t.mnist.enqueued,
            last_token: t.mnist.lease_token.map(|x| x as u64),
            hostname: t.mnist.hostname.clone().unwrap_or_default(),
            device: t.mnist.device.clone().unwrap_or_default(),
            reason: t.mnist.reason.clone(),
            start_ms: t.datetime_start.as_deref().and_then(parse_optuna_datetime),
            complete_ms: t.datetime_complete.as_deref().and_then(parse_optuna_datetime),
            params_stored: !t.params.is_empty(),
            ..Default::default()
        };
        for (k, v) in &t.user_attrs {
            if let Ok(x) = serde_json::from_str::<f64>(v) {
                extra.metrics.insert(k.clone(), x);
            }
        }
        for (k, v) in &t.system_attrs {
            if let Some(rung) = parse_rung_key(k) {
                let x = parse_py_float(v).ok_or_else(|| format!("trial {}: system attribute {k:?} is not a number: {v:?}", t.trial_id))?;
                ft.rungs.insert(rung, x);
                continue;
            }
            match k.as_str() {
                "fail_reason" if extra.reason.is_none() => {
                    extra.reason = serde_json::from_str::<String>(v).ok();
                }
                "fixed_params" => {
                    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(v) {
                        for (name, val) in map {
                            let Some(dist) = study.space.get(&name) else { continue };
                            let choice: mnist_sampler::Choice = serde_json::from_value(val).unwrap_or(mnist_sampler::Choice::None);
                            if let Ok(internal) = dist.to_internal(&choice) {
                                extra.fixed.insert(name, internal);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if state == TrialState::Running {
            match (t.mnist.lease_token, &t.mnist.lease_holder) {
                (Some(token), Some(holder)) => {
                    extra.lease = Some(Lease {
                        token: token as u64,
                        holder: holder.clone(),
                        slot: t.mnist.lease_slot.unwrap_or(0).max(0) as u32,
                        expires_ms: t.mnist.lease_expires_ms.unwrap_or(0).max(grace_until),
                    });
                }
                _ => unleased.push(i as u64),
            }
        }
        study.push_trial(ft, extra);
    }
    study.recompute_best();
    Ok((study, unleased))
}

/// The whole stored state of trial `n` (its `trials` and `mnist_trials`
/// rows), from memory.
pub(crate) fn put_trial(study: &StudyMem, n: u64) -> Op {
    let t = &study.trials[n as usize];
    let x = &study.extra[n as usize];
    let opt = |s: &String| (!s.is_empty()).then(|| s.clone());
    Op::PutTrial(crate::storage::TrialPut {
        trial_id: x.trial_id,
        study_id: study.id,
        number: n as i64,
        state: trial_state_str(t.state),
        datetime_start: x.start_ms.map(crate::clock::optuna_datetime),
        datetime_complete: if t.state.is_finished() { x.complete_ms.map(crate::clock::optuna_datetime) } else { None },
        mnist: crate::storage::MnistTrialRow {
            retries: x.retries as i64,
            enqueued: x.enqueued,
            lease_token: x.last_token.map(|t| t as i64),
            lease_holder: x.lease.as_ref().map(|l| l.holder.clone()),
            lease_slot: x.lease.as_ref().map(|l| l.slot as i64),
            lease_expires_ms: x.lease.as_ref().map(|l| l.expires_ms),
            hostname: opt(&x.hostname),
            device: opt(&x.device),
            reason: x.reason.clone(),
        },
    })
}

/// Writes the study's mutable columns (state, limits, clock).
pub(crate) fn update_study_op(study: &StudyMem) -> Op {
    Op::UpdateStudy {
        study_id: study.id,
        state: study.state.as_str(),
        end_reason: study.end_reason.clone(),
        config_json: serde_json::to_string(&study.config).unwrap_or_default(),
        started_at_ms: study.started_ms,
        ended_at_ms: study.ended_ms,
    }
}
