//! Conversions between the protobuf messages and the domain types.

use std::collections::{BTreeMap, HashMap};

use mnist_proto::v1 as pb;
use mnist_sampler::{Choice, Direction, Distribution, PrunerConfig, SamplerConfig, SearchSpace, TrialState};
use serde_json::Value;

use crate::clock::timestamp;
use crate::error::CoordError;
use crate::events::{Event, EventKind};
use crate::space::SpaceSource;
use crate::study::{
    check_new_study, Assignment, Counts, DeviceInfo, HolderView, NewStudy, RetryPolicy, SlotView, StudyState, StudyView, TrialView, WorkerView,
};

/// A parameter value to the wire.
pub fn choice_to_pb(c: &Choice) -> pb::ParamValue {
    use pb::param_value::Kind;
    let kind = match c {
        Choice::None => Kind::NullValue(true),
        Choice::Bool(b) => Kind::BoolValue(*b),
        Choice::Int(i) => Kind::IntValue(*i),
        Choice::Num(x) => Kind::FloatValue(*x),
        Choice::Str(s) => Kind::StringValue(s.clone()),
    };
    pb::ParamValue { kind: Some(kind) }
}

/// A parameter value from the wire.
pub fn choice_from_pb(v: &pb::ParamValue, what: &str) -> Result<Choice, CoordError> {
    use pb::param_value::Kind;
    Ok(match &v.kind {
        Some(Kind::NullValue(_)) => Choice::None,
        Some(Kind::BoolValue(b)) => Choice::Bool(*b),
        Some(Kind::IntValue(i)) => Choice::Int(*i),
        Some(Kind::FloatValue(x)) => Choice::Num(*x),
        Some(Kind::StringValue(s)) => Choice::Str(s.clone()),
        None => return Err(CoordError::InvalidArgument(format!("{what}: the value is empty (set one of its fields)"))),
    })
}

/// Parameters to the wire map.
pub fn params_to_pb(params: &[(String, Choice)]) -> HashMap<String, pb::ParamValue> {
    params.iter().map(|(k, v)| (k.clone(), choice_to_pb(v))).collect()
}

/// A distribution to the wire.
pub fn distribution_to_pb(d: &Distribution) -> pb::Distribution {
    use pb::distribution::Kind;
    let kind = match d {
        Distribution::Float { low, high, log, step } => {
            Kind::FloatDist(pb::FloatDistribution { low: *low, high: *high, log: *log, step: *step })
        }
        Distribution::Int { low, high, log, step } => {
            Kind::IntDist(pb::IntDistribution { low: *low, high: *high, log: *log, step: *step })
        }
        Distribution::Categorical { choices } => {
            Kind::Categorical(pb::CategoricalDistribution { choices: choices.iter().map(choice_to_pb).collect() })
        }
    };
    pb::Distribution { kind: Some(kind) }
}

/// A search space to the wire.
pub fn space_to_pb(s: &SearchSpace) -> pb::SearchSpace {
    pb::SearchSpace {
        params: s
            .params()
            .map(|(n, d)| pb::SearchSpaceParam { name: n.to_string(), distribution: Some(distribution_to_pb(d)) })
            .collect(),
    }
}

/// A structured search space from the wire (validated later).
pub fn space_from_pb(s: &pb::SearchSpace) -> Result<SearchSpace, CoordError> {
    use pb::distribution::Kind;
    let mut out = SearchSpace::new();
    for p in &s.params {
        let bad = |m: &str| CoordError::InvalidArgument(format!("bad search space: parameter {:?}: {m}", p.name));
        let d = p.distribution.as_ref().and_then(|d| d.kind.as_ref()).ok_or_else(|| bad("no distribution"))?;
        let dist = match d {
            Kind::FloatDist(f) => Distribution::Float { low: f.low, high: f.high, log: f.log, step: f.step },
            Kind::IntDist(i) => Distribution::Int { low: i.low, high: i.high, log: i.log, step: if i.step == 0 { 1 } else { i.step } },
            Kind::Categorical(c) => Distribution::Categorical {
                choices: c.choices.iter().map(|v| choice_from_pb(v, &p.name)).collect::<Result<_, _>>()?,
            },
        };
        out.push(p.name.clone(), dist);
    }
    Ok(out)
}

/// Direction to the wire.
pub fn direction_to_pb(d: Direction) -> pb::Direction {
    match d {
        Direction::Minimize => pb::Direction::Minimize,
        Direction::Maximize => pb::Direction::Maximize,
    }
}

/// Trial state to the wire.
pub fn trial_state_to_pb(s: TrialState) -> pb::TrialState {
    match s {
        TrialState::Waiting => pb::TrialState::Waiting,
        TrialState::Running => pb::TrialState::Running,
        TrialState::Complete => pb::TrialState::Complete,
        TrialState::Pruned => pb::TrialState::Pruned,
        TrialState::Fail => pb::TrialState::Fail,
    }
}

/// Trial state from the wire; `None` for UNSPECIFIED.
pub fn trial_state_from_pb(v: i32) -> Result<Option<TrialState>, CoordError> {
    match pb::TrialState::try_from(v) {
        Ok(pb::TrialState::Unspecified) => Ok(None),
        Ok(pb::TrialState::Waiting) => Ok(Some(TrialState::Waiting)),
        Ok(pb::TrialState::Running) => Ok(Some(TrialState::Running)),
        Ok(pb::TrialState::Complete) => Ok(Some(TrialState::Complete)),
        Ok(pb::TrialState::Pruned) => Ok(Some(TrialState::Pruned)),
        Ok(pb::TrialState::Fail) => Ok(Some(TrialState::Fail)),
        Err(_) => Err(CoordError::InvalidArgument(format!("unknown trial state {v}"))),
    }
}

/// Study state to the wire.
pub fn study_state_to_pb(s: StudyState) -> pb::StudyState {
    match s {
        StudyState::Running => pb::StudyState::Running,
        StudyState::Stopped => pb::StudyState::Stopped,
        StudyState::Complete => pb::StudyState::Complete,
    }
}

/// Counts to the wire.
pub fn counts_to_pb(c: &Counts) -> pb::TrialCounts {
    pb::TrialCounts { waiting: c.waiting, running: c.running, complete: c.complete, pruned: c.pruned, fail: c.fail }
}

fn holder_to_pb(h: &HolderView) -> pb::LeaseHolder {
    pb::LeaseHolder {
        holder_id: h.holder_id.clone(),
        slot: h.slot,
        hostname: h.hostname.clone(),
        device: h.device.clone(),
        expires_at: Some(timestamp(h.expires_ms)),
    }
}

/// A trial to the wire.
pub fn trial_to_pb(t: &TrialView) -> pb::Trial {
    pb::Trial {
        trial_id: t.trial_id,
        number: t.number,
        study_name: t.study_name.clone(),
        state: trial_state_to_pb(t.state) as i32,
        value: t.value,
        params: params_to_pb(&t.params),
        intermediate_values: t.intermediate.iter().map(|(k, v)| (*k, *v)).collect(),
        metrics: t.metrics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        datetime_start: t.start_ms.map(timestamp),
        datetime_complete: t.complete_ms.map(timestamp),
        retries: t.retries,
        fail_reason: t.reason.clone().unwrap_or_default(),
        holder: t.holder.as_ref().map(holder_to_pb),
        enqueued: t.enqueued,
        mlflow_run: None,
    }
}

/// Splits a serde-tagged config (`{"name": ..., "seed": ..., ...}`) into
/// kind, seed and the remaining options as JSON.
fn split_config(v: Value) -> (String, Option<u64>, String) {
    match v {
        Value::Object(mut m) => {
            let kind = m.remove("name").and_then(|n| n.as_str().map(str::to_string)).unwrap_or_default();
            let seed = m.remove("seed").and_then(|s| s.as_u64());
            let opts = if m.is_empty() { String::new() } else { Value::Object(m).to_string() };
            (kind, seed, opts)
        }
        _ => (String::new(), None, String::new()),
    }
}

/// The sampler spec of a stored configuration.
pub fn sampler_to_pb(c: &SamplerConfig) -> pb::SamplerSpec {
    let (kind, seed, options_json) = split_config(serde_json::to_value(c).unwrap_or(Value::Null));
    pb::SamplerSpec { kind, seed, options_json }
}

/// The pruner spec of a stored configuration.
pub fn pruner_to_pb(c: &PrunerConfig) -> pb::PrunerSpec {
    let (kind, _, options_json) = split_config(serde_json::to_value(c).unwrap_or(Value::Null));
    pb::PrunerSpec { kind: if kind == "nop" { "none".into() } else { kind }, options_json }
}

/// A study to the wire.
pub fn study_to_pb(s: &StudyView) -> pb::Study {
    let spec = pb::StudySpec {
        name: s.name.clone(),
        direction: direction_to_pb(s.config.direction) as i32,
        metric: s.config.metric.clone(),
        search_space: Some(pb::SearchSpaceSource { source: Some(pb::search_space_source::Source::Space(space_to_pb(&s.space))) }),
        sampler: Some(sampler_to_pb(&s.config.sampler)),
        pruner: Some(pruner_to_pb(&s.config.pruner)),
        n_trials: s.config.n_trials,
        timeout_seconds: s.config.timeout_seconds,
        max_concurrency: s.config.max_concurrency,
        base_config_json: serde_json::to_string(&s.config.base_config).unwrap_or_default(),
        retry: Some(pb::RetryPolicy { max_retries: s.config.retry.max_retries, fresh_params: s.config.retry.fresh_params }),
    };
    pb::Study {
        study_id: s.id,
        name: s.name.clone(),
        state: study_state_to_pb(s.state) as i32,
        end_reason: s.end_reason.clone(),
        spec: Some(spec),
        search_space: Some(space_to_pb(&s.space)),
        counts: Some(counts_to_pb(&s.counts)),
        best_trial: s.best.as_ref().map(trial_to_pb),
        created_at: Some(timestamp(s.created_ms)),
        started_at: Some(timestamp(s.started_ms)),
        ended_at: s.ended_ms.map(timestamp),
        mlflow_run: None,
        mlflow: None,
    }
}

/// Checks a study spec as `CreateStudy` does (see [`check_new_study`]), so a
/// client can report a bad setting before it connects or starts other work.
pub fn check_study_spec(spec: &pb::StudySpec) -> Result<(), CoordError> {
    check_new_study(&new_study_from_pb(spec.clone())?)
}

/// A study spec from the wire.
pub fn new_study_from_pb(spec: pb::StudySpec) -> Result<NewStudy, CoordError> {
    let direction = match pb::Direction::try_from(spec.direction) {
        Ok(pb::Direction::Unspecified) => None,
        Ok(pb::Direction::Minimize) => Some(Direction::Minimize),
        Ok(pb::Direction::Maximize) => Some(Direction::Maximize),
        Err(_) => return Err(CoordError::InvalidArgument(format!("unknown direction {}", spec.direction))),
    };
    let space = match spec.search_space.and_then(|s| s.source) {
        None => SpaceSource::Default,
        Some(pb::search_space_source::Source::Toml(t)) => SpaceSource::Toml(t),
        Some(pb::search_space_source::Source::Json(j)) => SpaceSource::Json(j),
        Some(pb::search_space_source::Source::Space(s)) => SpaceSource::Space(space_from_pb(&s)?),
    };
    let sampler = spec.sampler.unwrap_or_default();
    let pruner = spec.pruner.unwrap_or_default();
    Ok(NewStudy {
        name: spec.name,
        direction,
        metric: spec.metric,
        space,
        sampler_kind: sampler.kind,
        sampler_seed: sampler.seed,
        sampler_options: sampler.options_json,
        pruner_kind: pruner.kind,
        pruner_options: pruner.options_json,
        n_trials: spec.n_trials,
        timeout_seconds: spec.timeout_seconds,
        max_concurrency: spec.max_concurrency,
        base_config_json: spec.base_config_json,
        retry: spec.retry.map(|r| RetryPolicy { max_retries: r.max_retries, fresh_params: r.fresh_params }),
    })
}

/// An assignment to the wire.
pub fn assignment_to_pb(a: &Assignment) -> pb::TrialAssignment {
    pb::TrialAssignment {
        study_name: a.study_name.clone(),
        trial_id: a.trial_id,
        number: a.number,
        params: params_to_pb(&a.params),
        train_config_json: a.train_config_json.clone(),
        lease: Some(pb::Lease {
            token: a.lease.token,
            expires_at: Some(timestamp(a.lease.expires_ms)),
            duration_ms: a.lease.duration_ms,
            heartbeat_interval_ms: a.lease.heartbeat_ms,
        }),
        direction: direction_to_pb(a.direction) as i32,
        metric: a.metric.clone(),
        retries: a.retries,
        resumed: a.resumed,
    }
}

/// An event to the wire.
pub fn event_to_pb(e: &Event) -> pb::StudyEvent {
    let kind = match e.kind {
        EventKind::StudyCreated => pb::EventKind::StudyCreated,
        EventKind::StudyStopped => pb::EventKind::StudyStopped,
        EventKind::StudyResumed => pb::EventKind::StudyResumed,
        EventKind::StudyCompleted => pb::EventKind::StudyCompleted,
        EventKind::StudyDeleted => pb::EventKind::StudyDeleted,
        EventKind::TrialEnqueued => pb::EventKind::TrialEnqueued,
        EventKind::TrialStarted => pb::EventKind::TrialStarted,
        EventKind::TrialReported => pb::EventKind::TrialReported,
        EventKind::TrialCompleted => pb::EventKind::TrialCompleted,
        EventKind::TrialPruned => pb::EventKind::TrialPruned,
        EventKind::TrialFailed => pb::EventKind::TrialFailed,
        EventKind::TrialRequeued => pb::EventKind::TrialRequeued,
        EventKind::ArtifactStored => pb::EventKind::ArtifactStored,
    };
    pb::StudyEvent {
        seq: e.seq,
        kind: kind as i32,
        study_name: e.study_name.clone(),
        time: Some(timestamp(e.time_ms)),
        trial_id: e.trial_id,
        trial_number: e.trial_number,
        trial_state: e.trial_state.map(|s| trial_state_to_pb(s) as i32).unwrap_or(0),
        value: e.value,
        step: e.step,
        metrics: e.metrics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        message: e.message.clone(),
        counts: Some(counts_to_pb(&e.counts)),
        best_value: e.best_value,
        best_trial_number: e.best_trial_number,
        study_state: study_state_to_pb(e.study_state) as i32,
        n_trials: e.n_trials,
        params: params_to_pb(&e.params),
        holder: e.holder.as_ref().map(holder_to_pb),
    }
}

/// A device from the wire.
pub fn device_from_pb(d: pb::Device) -> DeviceInfo {
    DeviceInfo { name: d.name, kind: d.kind, model: d.model, memory_bytes: d.memory_bytes }
}

fn device_to_pb(d: &DeviceInfo) -> pb::Device {
    pb::Device { name: d.name.clone(), kind: d.kind.clone(), model: d.model.clone(), memory_bytes: d.memory_bytes }
}

/// A slot to the wire.
pub fn slot_to_pb(s: &SlotView) -> pb::WorkerSlot {
    pb::WorkerSlot { slot: s.slot, study_name: s.study_name.clone(), trial_id: s.trial_id, number: s.number }
}

/// A worker to the wire.
pub fn worker_to_pb(w: &WorkerView) -> pb::Worker {
    pb::Worker {
        worker_id: w.id.clone(),
        hostname: w.hostname.clone(),
        devices: w.devices.iter().map(device_to_pb).collect(),
        labels: w.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        registered_at: Some(timestamp(w.registered_ms)),
        last_seen: Some(timestamp(w.last_seen_ms)),
        online: w.online,
        running: w.running.iter().map(slot_to_pb).collect(),
    }
}

/// Metrics from the wire (sorted).
pub fn metrics_from_pb(m: HashMap<String, f64>) -> BTreeMap<String, f64> {
    m.into_iter().collect()
}

/// Where a run lives in MLflow, with its UI link.
pub fn mlflow_run_to_pb(t: &crate::tracking::Tracking, r: &mnist_mlflow::RunRecord) -> pb::MlflowRun {
    pb::MlflowRun { experiment_id: r.experiment_id.clone(), run_id: r.run_id.clone(), url: t.run_url(r).unwrap_or_default() }
}

/// The MLflow outbox's backlog.
pub fn mlflow_status_to_pb(t: &crate::tracking::Tracking, b: &mnist_mlflow::Backlog) -> pb::MlflowStatus {
    pb::MlflowStatus {
        tracking_uri: t.config().tracking_uri.clone().unwrap_or_default(),
        pending: b.pending,
        delivered: b.delivered,
        dead: b.dead,
        last_error: b.last_error.clone().unwrap_or_default(),
        oldest_pending_at: b.oldest_pending_ms.map(timestamp),
    }
}
