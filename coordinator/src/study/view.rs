//! Read-only snapshots the domain hands out (studies, trials, assignments,
//! workers), built under the lock and owned by the caller afterwards.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mnist_sampler::{Choice, Direction, SearchSpace, TrialState};
use serde::{Deserialize, Serialize};

use super::model::{Counts, HolderView, StudyConfig, StudyMem, StudyState};
use super::Inner;

/// A study.
#[derive(Debug, Clone)]
pub struct StudyView {
    pub id: i64,
    pub name: String,
    pub state: StudyState,
    pub end_reason: String,
    pub config: StudyConfig,
    pub space: SearchSpace,
    pub counts: Counts,
    pub best: Option<TrialView>,
    pub created_ms: i64,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
}

/// A trial.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialView {
    pub trial_id: i64,
    pub number: u64,
    pub study_name: String,
    pub state: TrialState,
    pub value: Option<f64>,
    /// External values, in search-space order.
    pub params: Vec<(String, Choice)>,
    pub intermediate: BTreeMap<u64, f64>,
    pub metrics: BTreeMap<String, f64>,
    pub start_ms: Option<i64>,
    pub complete_ms: Option<i64>,
    pub retries: u32,
    pub reason: Option<String>,
    pub holder: Option<HolderView>,
    pub enqueued: bool,
}

/// A lease as handed to its holder.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseView {
    pub token: u64,
    pub expires_ms: i64,
    pub duration_ms: u32,
    pub heartbeat_ms: u32,
}

/// A trial handed out by `ask`.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub study_name: String,
    pub trial_id: i64,
    pub number: u64,
    pub params: Vec<(String, Choice)>,
    /// The full `TrainConfig` as JSON.
    pub train_config_json: String,
    pub lease: LeaseView,
    pub direction: Direction,
    pub metric: String,
    pub retries: u32,
    /// The holder already held this trial (idempotent ask).
    pub resumed: bool,
}

/// The answer to `ask`.
#[derive(Debug, Clone)]
pub enum AskOutcome {
    /// A trial to run.
    Assigned(Box<Assignment>),
    /// Nothing now.
    Idle {
        reason: String,
        retry_after_ms: u32,
        /// The (named) study will hand out nothing more.
        over: bool,
    },
}

/// The answer to `heartbeat`.
#[derive(Debug, Clone)]
pub struct HeartbeatOutcome {
    /// The study was stopped: release the trial.
    pub stop: bool,
    pub message: String,
    pub expires_ms: i64,
}

/// The answer to `report`.
#[derive(Debug, Clone)]
pub struct ReportOutcome {
    pub prune: bool,
    pub stop: bool,
}

/// The answer to `complete`/`tell`.
#[derive(Debug, Clone)]
pub struct FinishOutcome {
    pub trial: TrialView,
    pub is_best: bool,
}

/// A device of a worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub name: String,
    pub kind: String,
    pub model: String,
    pub memory_bytes: u64,
}

/// What a worker says when it registers.
#[derive(Debug, Clone, Default)]
pub struct WorkerRegistration {
    /// A previous id to keep; empty: a new one.
    pub worker_id: String,
    pub hostname: String,
    pub devices: Vec<DeviceInfo>,
    pub labels: BTreeMap<String, String>,
}

/// A trial a holder has in one slot.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotView {
    pub slot: u32,
    pub study_name: String,
    pub trial_id: i64,
    pub number: u64,
}

/// A registered worker.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub id: String,
    pub hostname: String,
    pub devices: Vec<DeviceInfo>,
    pub labels: BTreeMap<String, String>,
    pub registered_ms: i64,
    pub last_seen_ms: i64,
    pub online: bool,
    pub running: Vec<SlotView>,
}

/// Where an authorised artifact upload goes.
#[derive(Debug, Clone)]
pub struct ArtifactTarget {
    pub study_id: i64,
    pub study_name: String,
    pub trial_id: i64,
    pub number: u64,
    /// The lease token the upload was authorised with (checked again before
    /// the file is stored).
    pub token: u64,
    /// The directory of the trial's artifacts.
    pub dir: PathBuf,
}

/// External parameter values of trial `number`, in space order; enqueued
/// fixed values are included while the trial waits.
pub(crate) fn external_params(study: &StudyMem, number: u64) -> Vec<(String, Choice)> {
    let (Some(t), Some(x)) = (study.trials.get(number as usize), study.extra.get(number as usize)) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(study.space.len());
    for (name, space_dist) in study.space.params() {
        if let Some(v) = t.params.get(name) {
            let dist = t.distributions.get(name).unwrap_or(space_dist);
            out.push((name.to_string(), dist.to_external(*v)));
        } else if let Some(v) = x.fixed.get(name) {
            out.push((name.to_string(), space_dist.to_external(*v)));
        }
    }
    // Parameters stored for the trial but no longer in the space.
    for (name, v) in &t.params {
        if study.space.get(name).is_none() {
            if let Some(d) = t.distributions.get(name) {
                out.push((name.clone(), d.to_external(*v)));
            }
        }
    }
    out
}

/// A snapshot of trial `number`.
pub(crate) fn trial_view(study: &StudyMem, number: u64) -> Option<TrialView> {
    let t = study.trials.get(number as usize)?;
    let x = study.extra.get(number as usize)?;
    Some(TrialView {
        trial_id: x.trial_id,
        number,
        study_name: study.name.clone(),
        state: t.state,
        value: t.value,
        params: external_params(study, number),
        intermediate: t.intermediate_values.clone(),
        metrics: x.metrics.clone(),
        start_ms: x.start_ms,
        complete_ms: x.complete_ms,
        retries: x.retries,
        reason: x.reason.clone(),
        holder: x.lease.as_ref().map(|l| HolderView {
            holder_id: l.holder.clone(),
            slot: l.slot,
            hostname: x.hostname.clone(),
            device: x.device.clone(),
            expires_ms: l.expires_ms,
        }),
        enqueued: x.enqueued,
    })
}

/// A snapshot of a study.
pub(crate) fn study_view(study: &StudyMem) -> StudyView {
    StudyView {
        id: study.id,
        name: study.name.clone(),
        state: study.state,
        end_reason: study.end_reason.clone(),
        config: study.config.clone(),
        space: study.space.clone(),
        counts: study.counts,
        best: study.best.and_then(|n| trial_view(study, n)),
        created_ms: study.created_ms,
        started_ms: study.started_ms,
        ended_ms: study.ended_ms,
    }
}

/// The slots a holder currently has trials in.
pub(crate) fn holder_slots(inner: &Inner, holder: &str) -> Vec<SlotView> {
    let mut out: Vec<SlotView> = inner
        .holders
        .iter()
        .filter(|((h, _), _)| h == holder)
        .filter_map(|((_, slot), tid)| {
            let (sid, number) = inner.trial_index.get(tid)?;
            let study = inner.studies.get(sid)?;
            Some(SlotView { slot: *slot, study_name: study.name.clone(), trial_id: *tid, number: *number })
        })
        .collect();
    out.sort_by_key(|s| s.slot);
    out
}
