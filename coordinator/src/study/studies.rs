//! Study management: create, read, stop, resume, delete, enqueue, and the
//! trial queries.

use std::collections::BTreeMap;

use mnist_common::config::TrainConfig;
use mnist_sampler::{Choice, Direction, FrozenTrial, PrunerConfig, SamplerConfig, SampleError, TrialState};
use serde_json::{Map, Value};

use super::model::{Counts, RetryPolicy, StudyConfig, StudyMem, StudyState, TrialExtra};
use super::trials::maybe_finish;
use super::view::{study_view, trial_view, StudyView, TrialView};
use super::{make_event, not_found_study, put_trial, update_study_op, Coordinator, Inner};
use crate::error::{check_study_name, CoordError, Result};
use crate::events::EventKind;
use crate::space::{check_space_against_config, parse_space, SpaceSource};
use crate::storage::{Batch, Floor, Op};

/// Everything needed to create a study; empty/zero fields take the defaults
/// documented on `StudySpec` in the proto.
#[derive(Debug, Clone, Default)]
pub struct NewStudy {
    pub name: String,
    /// `None`: maximize.
    pub direction: Option<Direction>,
    /// Empty: `val_accuracy`.
    pub metric: String,
    pub space: SpaceSource,
    /// Empty: `tpe`.
    pub sampler_kind: String,
    /// `None`: a random seed, recorded.
    pub sampler_seed: Option<u64>,
    /// A JSON object of sampler options, or empty.
    pub sampler_options: String,
    /// Empty: `none`.
    pub pruner_kind: String,
    /// A JSON object of pruner options, or empty.
    pub pruner_options: String,
    pub n_trials: u32,
    pub timeout_seconds: f64,
    pub max_concurrency: u32,
    /// `TrainConfig` JSON (any subset of fields), or empty.
    pub base_config_json: String,
    /// `None`: 2 retries, same parameters.
    pub retry: Option<RetryPolicy>,
}

fn options_object(what: &str, text: &str) -> Result<Map<String, Value>> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(CoordError::InvalidArgument(format!("{what} options must be a JSON object, got {other}"))),
        Err(e) => Err(CoordError::InvalidArgument(format!("{what} options are not valid JSON: {e}"))),
    }
}

/// The stored name of a sampler kind as a user may write it (any case, empty
/// for TPE), or `None` for an unknown one.
pub fn sampler_kind(kind: &str) -> Option<&'static str> {
    match kind.trim().to_ascii_lowercase().as_str() {
        "" | "tpe" => Some("tpe"),
        "random" => Some("random"),
        "grid" => Some("grid"),
        _ => None,
    }
}

/// The stored name of a pruner kind as a user may write it (any case,
/// aliases, empty or `none` for none), or `None` for an unknown one.
pub fn pruner_kind(kind: &str) -> Option<&'static str> {
    match kind.trim().to_ascii_lowercase().as_str() {
        "" | "none" | "nop" => Some("nop"),
        "median" => Some("median"),
        "percentile" => Some("percentile"),
        "successive_halving" | "successive-halving" | "asha" => Some("successive_halving"),
        "hyperband" => Some("hyperband"),
        _ => None,
    }
}

/// The direction a study takes when none is given: minimise a metric whose
/// name says it is a loss (`val_loss`, `test_loss`, `loss`), maximise any
/// other (accuracy, F1).
pub fn default_direction(metric: &str) -> Direction {
    if metric_name(metric).to_ascii_lowercase().contains("loss") {
        Direction::Minimize
    } else {
        Direction::Maximize
    }
}

/// The stored metric name: trimmed, `val_accuracy` when empty.
pub fn metric_name(metric: &str) -> String {
    if metric.trim().is_empty() { "val_accuracy".to_string() } else { metric.trim().to_string() }
}

/// The longest study timeout accepted: 100 years (a deadline past that is
/// no deadline; use 0 for none).
pub(crate) const MAX_TIMEOUT_SECONDS: f64 = 100.0 * 365.25 * 86_400.0;

/// Checks a study timeout in seconds (0: none).
fn check_timeout(t: f64) -> Result<()> {
    if t.is_finite() && (0.0..=MAX_TIMEOUT_SECONDS).contains(&t) {
        return Ok(());
    }
    Err(CoordError::InvalidArgument(format!(
        "timeout_seconds is {t:?}; give a number of seconds from 0 (no timeout) to {MAX_TIMEOUT_SECONDS} (100 years)"
    )))
}

/// Builds the sampler configuration from a kind, a seed and options.
pub(crate) fn sampler_config(kind: &str, seed: Option<u64>, options: &str) -> Result<SamplerConfig> {
    let mut obj = options_object("sampler", options)?;
    let Some(kind) = sampler_kind(kind) else {
        let other = kind.trim().to_ascii_lowercase();
        return Err(CoordError::InvalidArgument(format!("unknown sampler {other:?}; use tpe, random or grid")));
    };
    obj.insert("name".into(), Value::from(kind));
    let from_options = match obj.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            CoordError::InvalidArgument(format!("bad {kind} sampler options: seed must be a whole number >= 0, got {v}"))
        })?),
    };
    let seed = seed.or(from_options).unwrap_or_else(|| rand::random::<u32>() as u64);
    obj.insert("seed".into(), Value::from(seed));
    let cfg = SamplerConfig::from_json(&Value::Object(obj).to_string())
        .map_err(|e| CoordError::InvalidArgument(format!("bad {kind} sampler options: {e}")))?;
    cfg.build().map_err(|e| CoordError::InvalidArgument(format!("bad {kind} sampler options: {e}")))?;
    Ok(cfg)
}

/// Builds the pruner configuration from a kind and options.
pub(crate) fn pruner_config(kind: &str, options: &str, study_name: &str) -> Result<PrunerConfig> {
    let mut obj = options_object("pruner", options)?;
    let Some(kind) = pruner_kind(kind) else {
        let other = kind.trim().to_ascii_lowercase();
        return Err(CoordError::InvalidArgument(format!(
            "unknown pruner {other:?}; use none, median, percentile, successive_halving or hyperband"
        )));
    };
    if kind == "nop" && !obj.is_empty() {
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        return Err(CoordError::InvalidArgument(format!(
            "the none pruner takes no options (got {}); leave the pruner options out, or choose a pruner that reads them",
            keys.join(", ")
        )));
    }
    obj.insert("name".into(), Value::from(kind));
    if kind == "hyperband" && !obj.contains_key("study_name") {
        obj.insert("study_name".into(), Value::from(study_name));
    }
    let cfg = PrunerConfig::from_json(&Value::Object(obj).to_string())
        .map_err(|e| CoordError::InvalidArgument(format!("bad {kind} pruner options: {e}")))?;
    cfg.build().map_err(|e| CoordError::InvalidArgument(format!("bad {kind} pruner options: {e}")))?;
    Ok(cfg)
}

/// Checks a new study the way [`Coordinator::create_study`] does, without a
/// coordinator: a client can report a bad setting (an unknown sampler, a
/// search space that does not parse, a bad option) before any other work.
pub fn check_new_study(spec: &NewStudy) -> Result<()> {
    study_config(spec).map(drop)
}

/// Validates a new study and builds its configuration.
fn study_config(spec: &NewStudy) -> Result<StudyConfig> {
    check_study_name(&spec.name)?;
    let space = parse_space(&spec.space).map_err(CoordError::InvalidArgument)?;
    let base_config: TrainConfig = if spec.base_config_json.trim().is_empty() {
        TrainConfig::default()
    } else {
        serde_json::from_str(&spec.base_config_json)
            .map_err(|e| CoordError::InvalidArgument(format!("bad base training configuration JSON: {e}")))?
    };
    check_space_against_config(&space, &base_config).map_err(CoordError::InvalidArgument)?;
    check_timeout(spec.timeout_seconds)?;
    let metric = metric_name(&spec.metric);
    if metric.len() > 512 || metric.chars().any(char::is_control) {
        return Err(CoordError::InvalidArgument("the metric name must be at most 512 characters without control characters".into()));
    }
    let direction = spec.direction.unwrap_or_else(|| default_direction(&metric));
    let sampler = sampler_config(&spec.sampler_kind, spec.sampler_seed, &spec.sampler_options)?;
    let pruner = pruner_config(&spec.pruner_kind, &spec.pruner_options, &spec.name)?;
    // A first suggestion proves the sampler can handle the space (e.g. a grid
    // over a continuous float needs explicit values).
    if let Ok(s) = sampler.build() {
        match s.sample(&space, &[], direction, 0) {
            Ok(_) | Err(SampleError::GridExhausted { .. }) => {}
            Err(e) => return Err(CoordError::InvalidArgument(format!("the sampler cannot sample this space: {e}"))),
        }
    }
    Ok(StudyConfig {
        direction,
        metric,
        search_space: space,
        sampler,
        pruner,
        n_trials: spec.n_trials,
        timeout_seconds: spec.timeout_seconds,
        max_concurrency: spec.max_concurrency,
        base_config,
        retry: spec.retry.unwrap_or_default(),
    })
}

impl Coordinator {
    /// Creates a study. With `load_if_exists`, an existing study of that name
    /// is returned instead of ALREADY_EXISTS. Returns the study and whether
    /// it was created.
    pub async fn create_study(&self, spec: NewStudy, load_if_exists: bool) -> Result<(StudyView, bool)> {
        let config = study_config(&spec)?;
        let space = config.search_space.clone();
        let sampler = config.sampler.build().map_err(|e| CoordError::InvalidArgument(e.to_string()))?;
        let pruner = config.pruner.build().map_err(|e| CoordError::InvalidArgument(e.to_string()))?;
        let (view, pending) = {
            let now = self.clock.now_ms();
            let mut g = self.lock();
            let inner = &mut *g;
            if let Some(id) = inner.names.get(&spec.name) {
                if load_if_exists {
                    return Ok((study_view(&inner.studies[id]), false));
                }
                return Err(CoordError::AlreadyExists(format!(
                    "a study named {:?} already exists; pick another name, or delete it first (`mnistctl study delete {}`)",
                    spec.name, spec.name
                )));
            }
            if let Some(why) = inner.unloaded.get(&spec.name) {
                return Err(CoordError::AlreadyExists(format!(
                    "the database already holds a study named {:?}, which {why}; pick another name",
                    spec.name
                )));
            }
            // Loading an existing study writes nothing, so only a new one
            // takes a place in the write queue (under the lock: it does not
            // wait), before the first change.
            let slot = self.reserve()?;
            let id = inner.ids.next_study_id;
            inner.ids.next_study_id += 1;
            let study = StudyMem {
                id,
                name: spec.name.clone(),
                config,
                space,
                sampler,
                sampler_cache: Default::default(),
                pruner_state: Default::default(),
                pruner,
                state: StudyState::Running,
                end_reason: String::new(),
                created_ms: now,
                started_ms: now,
                ended_ms: None,
                trials: Vec::new(),
                extra: Vec::new(),
                waiting: Default::default(),
                running: Default::default(),
                counts: Counts::default(),
                best: None,
                exhausted: false,
            };
            let mut batch = Batch::new();
            batch.push(Op::InsertStudy {
                study_id: id,
                name: study.name.clone(),
                direction: super::direction_str(study.config.direction),
                state: study.state.as_str(),
                config_json: serde_json::to_string(&study.config).map_err(|e| CoordError::Internal(e.to_string()))?,
                created_at_ms: now,
                started_at_ms: now,
            });
            let ev = make_event(&mut inner.ids, &study, EventKind::StudyCreated, None, now);
            batch.push_event(ev);
            let view = study_view(&study);
            inner.names.insert(study.name.clone(), id);
            inner.studies.insert(id, study);
            (view, slot.submit(batch))
        };
        pending.wait().await?;
        self.wake_workers();
        tracing::info!(study = %view.name, id = view.id, "study created");
        Ok((view, true))
    }

    /// One study.
    pub fn get_study(&self, name: &str) -> Result<StudyView> {
        check_study_name(name)?;
        let g = self.lock();
        let id = g.names.get(name).ok_or_else(|| not_found_study(name))?;
        Ok(study_view(&g.studies[id]))
    }

    /// Every study, by id.
    pub fn list_studies(&self) -> Vec<StudyView> {
        let g = self.lock();
        g.studies.values().map(study_view).collect()
    }

    /// Stops a RUNNING study (a no-op otherwise).
    pub async fn stop_study(&self, name: &str, reason: &str) -> Result<StudyView> {
        check_study_name(name)?;
        let (view, pending) = {
            let now = self.clock.now_ms();
            // Taken only when the study is RUNNING: the no-op writes nothing.
            let mut slot = self.reserve_lazily();
            let mut g = self.lock();
            let Inner { studies, names, ids, .. } = &mut *g;
            let id = names.get(name).ok_or_else(|| not_found_study(name))?;
            let study = studies.get_mut(id).ok_or_else(|| not_found_study(name))?;
            let mut batch = Batch::new();
            if study.state == StudyState::Running {
                slot.take()?;
                study.state = StudyState::Stopped;
                study.end_reason = if reason.trim().is_empty() { "stopped by request".into() } else { format!("stopped: {}", reason.trim()) };
                study.ended_ms = Some(now);
                batch.push(update_study_op(study));
                let mut ev = make_event(ids, study, EventKind::StudyStopped, None, now);
                ev.message = study.end_reason.clone();
                batch.push_event(ev);
            }
            (study_view(study), slot.submit(batch))
        };
        pending.wait().await?;
        Ok(view)
    }

    /// Resumes a STOPPED study, or a COMPLETE one whose limit the request
    /// raises, or changes the limits of a RUNNING one: optionally a new
    /// n_trials (0: no limit, else at least the trials the study has; equal:
    /// no new trials are sampled) and a new timeout (counted from now). The
    /// timeout clock restarts when the study was not RUNNING or a new timeout
    /// is given; a RUNNING study resumed without one keeps its clock.
    pub async fn resume_study(&self, name: &str, n_trials: Option<u32>, timeout_seconds: Option<f64>) -> Result<StudyView> {
        check_study_name(name)?;
        if let Some(t) = timeout_seconds {
            check_timeout(t)?;
        }
        let (view, pending) = {
            let now = self.clock.now_ms();
            let slot = self.reserve()?;
            let mut g = self.lock();
            let Inner { studies, names, ids, .. } = &mut *g;
            let id = names.get(name).ok_or_else(|| not_found_study(name))?;
            let study = studies.get_mut(id).ok_or_else(|| not_found_study(name))?;
            if let Some(n) = n_trials {
                if n != 0 && (n as usize) < study.trials.len() {
                    return Err(CoordError::FailedPrecondition(format!(
                        "n_trials = {n} is below the {len} trials study {name:?} already has; give at least {len}, or 0 for no limit",
                        len = study.trials.len()
                    )));
                }
            }
            let old = (study.config.n_trials, study.config.timeout_seconds);
            if let Some(n) = n_trials {
                study.config.n_trials = n;
            }
            if let Some(t) = timeout_seconds {
                study.config.timeout_seconds = t;
            }
            // A used-up grid is not stored: after a restart, ask the grid
            // again before a COMPLETE study runs for nothing (the other
            // samplers never run out).
            if study.state == StudyState::Complete && !study.exhausted && matches!(study.config.sampler, SamplerConfig::Grid(_)) {
                let next = study.trials.len() as u64;
                if let Err(SampleError::GridExhausted { .. }) = study.sampler.sample(&study.space, &study.trials, study.config.direction, next) {
                    study.exhausted = true;
                }
            }
            let limit_left = (study.config.n_trials == 0 || study.counts.finished() < study.config.n_trials) && !study.exhausted;
            if study.state == StudyState::Complete && !limit_left {
                (study.config.n_trials, study.config.timeout_seconds) = old;
                let how = if study.exhausted {
                    "its sampler has nothing left to suggest (every grid point was tried)"
                } else {
                    "pass a larger n_trials to continue it"
                };
                return Err(CoordError::FailedPrecondition(format!("study {name:?} is COMPLETE ({}); {how}", study.end_reason)));
            }
            let mut batch = Batch::new();
            if study.state != StudyState::Running || timeout_seconds.is_some() {
                study.started_ms = now;
            }
            if study.state != StudyState::Running {
                study.state = StudyState::Running;
                study.end_reason.clear();
                study.ended_ms = None;
            }
            batch.push(update_study_op(study));
            let ev = make_event(ids, study, EventKind::StudyResumed, None, now);
            batch.push_event(ev);
            maybe_finish(study, ids, &mut batch, now);
            (study_view(study), slot.submit(batch))
        };
        pending.wait().await?;
        self.wake_workers();
        Ok(view)
    }

    /// Deletes a study with its trials. A RUNNING study with trials in flight
    /// needs `force`. Returns the number of trials deleted.
    pub async fn delete_study(&self, name: &str, force: bool) -> Result<u32> {
        check_study_name(name)?;
        let (n, pending, dir) = {
            let now = self.clock.now_ms();
            let slot = self.reserve()?;
            let mut g = self.lock();
            let inner = &mut *g;
            let id = *inner.names.get(name).ok_or_else(|| not_found_study(name))?;
            {
                let study = &inner.studies[&id];
                if study.state == StudyState::Running && study.counts.running > 0 && !force {
                    return Err(CoordError::FailedPrecondition(format!(
                        "study {name:?} is RUNNING with {} trials in flight; stop it first (`mnistctl study stop {name}`) or delete with --force",
                        study.counts.running
                    )));
                }
            }
            let Some(study) = inner.studies.remove(&id) else { return Err(not_found_study(name)) };
            inner.names.remove(name);
            for x in &study.extra {
                inner.trial_index.remove(&x.trial_id);
                if let Some(l) = &x.lease {
                    super::trials::forget_holder(&mut inner.holders, l, x.trial_id);
                }
            }
            let mut batch = Batch::new();
            let ev = make_event(&mut inner.ids, &study, EventKind::StudyDeleted, None, now);
            batch.push_event(ev);
            let ids = &inner.ids;
            for (floor, value) in [
                (Floor::StudyId, ids.next_study_id - 1),
                (Floor::TrialId, ids.next_trial_id - 1),
                (Floor::EventSeq, ids.next_seq as i64),
            ] {
                batch.push(Op::RaiseFloor { floor, value });
            }
            batch.push(Op::DeleteStudy { study_id: id });
            let dir = crate::artifacts::study_dir(&self.config().artifacts_root(), id);
            (study.trials.len() as u32, slot.submit(batch), dir)
        };
        pending.wait().await?;
        if dir.exists() {
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        }
        tracing::info!(study = %name, trials = n, "study deleted");
        Ok(n)
    }

    /// Adds a WAITING trial with fixed parameters (Optuna's `enqueue_trial`).
    pub async fn enqueue_trial(&self, name: &str, params: Vec<(String, Choice)>) -> Result<TrialView> {
        check_study_name(name)?;
        let (view, pending) = {
            let now = self.clock.now_ms();
            let slot = self.reserve()?;
            let mut g = self.lock();
            let Inner { studies, names, ids, trial_index, .. } = &mut *g;
            let sid = *names.get(name).ok_or_else(|| not_found_study(name))?;
            let study = studies.get_mut(&sid).ok_or_else(|| not_found_study(name))?;
            if study.state == StudyState::Complete {
                return Err(CoordError::FailedPrecondition(format!(
                    "study {name:?} is COMPLETE ({}); resume it with a larger n_trials first",
                    study.end_reason
                )));
            }
            if !study.can_create() {
                return Err(CoordError::FailedPrecondition(format!(
                    "study {name:?} already has all its n_trials = {} trials; resume it with a larger n_trials to add more",
                    study.config.n_trials
                )));
            }
            let mut fixed = BTreeMap::new();
            let mut external = serde_json::Map::new();
            for (pname, value) in &params {
                let dist = study.space.get(pname).ok_or_else(|| {
                    let known: Vec<&str> = study.space.params().map(|(n, _)| n).collect();
                    CoordError::InvalidArgument(format!(
                        "parameter {pname:?} is not in the search space of study {name:?} (its parameters: {})",
                        known.join(", ")
                    ))
                })?;
                let internal = dist
                    .to_internal(value)
                    .map_err(|e| CoordError::InvalidArgument(format!("parameter {pname:?}: {e}")))?;
                if !dist.contains(internal) {
                    return Err(CoordError::InvalidArgument(format!(
                        "parameter {pname:?}: {value} {} (its distribution: {})",
                        not_a_value(dist, internal),
                        dist.to_optuna_json()
                    )));
                }
                fixed.insert(pname.clone(), internal);
                external.insert(pname.clone(), serde_json::to_value(value).unwrap_or(Value::Null));
            }
            let trial_id = ids.next_trial_id;
            ids.next_trial_id += 1;
            let extra = TrialExtra { trial_id, enqueued: true, fixed, ..Default::default() };
            let number = study.trials.len() as u64;
            study.push_trial(FrozenTrial::new(number, TrialState::Waiting), extra);
            trial_index.insert(trial_id, (sid, number));
            let mut batch = Batch::new();
            batch.push(put_trial(study, number));
            // Optuna's own record of enqueued values (`enqueue_trial`).
            batch.push(Op::SetSystemAttr { trial_id, key: "fixed_params".into(), value_json: Value::Object(external).to_string() });
            let ev = make_event(ids, study, EventKind::TrialEnqueued, Some(number), now);
            batch.push_event(ev);
            let view = trial_view(study, number).ok_or_else(|| CoordError::Internal("trial vanished".into()))?;
            (view, slot.submit(batch))
        };
        pending.wait().await?;
        self.wake_workers();
        Ok(view)
    }

    /// Trials of a study by number, filtered by state, from a number, at most `limit` (0: all).
    pub fn list_trials(&self, name: &str, states: &[TrialState], from_number: u64, limit: u32) -> Result<Vec<TrialView>> {
        check_study_name(name)?;
        let g = self.lock();
        let id = g.names.get(name).ok_or_else(|| not_found_study(name))?;
        let study = &g.studies[id];
        let limit = if limit == 0 { usize::MAX } else { limit as usize };
        Ok((from_number..study.trials.len() as u64)
            .filter(|&n| states.is_empty() || states.contains(&study.trials[n as usize].state))
            .take(limit)
            .filter_map(|n| trial_view(study, n))
            .collect())
    }

    /// One trial by study name and number.
    pub fn get_trial(&self, name: &str, number: u64) -> Result<TrialView> {
        check_study_name(name)?;
        let g = self.lock();
        let id = g.names.get(name).ok_or_else(|| not_found_study(name))?;
        let study = &g.studies[id];
        trial_view(study, number).ok_or_else(|| {
            CoordError::NotFound(format!("study {name:?} has no trial number {number} (it has {} trials)", study.trials.len()))
        })
    }

    /// One trial by id.
    pub fn get_trial_by_id(&self, trial_id: i64) -> Result<TrialView> {
        let g = self.lock();
        let (sid, n) = super::trials::locate(&g, trial_id)?;
        trial_view(&g.studies[&sid], n).ok_or_else(|| CoordError::NotFound(format!("no trial with id {trial_id}")))
    }
}

/// Why `x` (internal form) is not a value of `dist`: outside its range, or
/// between two steps (naming the nearest values).
fn not_a_value(dist: &mnist_sampler::Distribution, x: f64) -> String {
    use mnist_sampler::Distribution as D;
    let (low, high, step) = match dist {
        D::Float { low, high, step, .. } => (*low, *high, *step),
        D::Int { low, high, step, .. } => (*low as f64, *high as f64, Some(*step as f64)),
        D::Categorical { .. } => return "is not one of its choices".into(),
    };
    if !x.is_finite() || x < low || x > high {
        return format!("is outside its range [{low}, {high}]");
    }
    // Grid values printed without binary noise (0.30000000000000004).
    let show = |v: f64| format!("{}", (v * 1e12).round() / 1e12);
    match step.filter(|s| *s > 0.0) {
        Some(s) => {
            let below = low + ((x - low) / s).floor() * s;
            let above = (below + s).min(high);
            format!("is between the steps of its grid (from {low} in steps of {s}): take {} or {}", show(below), show(above))
        }
        None => "is not a value of it".into(),
    }
}
