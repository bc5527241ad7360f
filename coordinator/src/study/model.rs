//! The in-memory model of a study: its configuration, its trials (the
//! sampler's `FrozenTrial`s plus the coordinator's bookkeeping), counts, and
//! the best trial. Pure data and bookkeeping; no I/O, no locking.

use std::collections::{BTreeMap, BTreeSet};

use mnist_common::config::TrainConfig;
use mnist_sampler::sampler::SamplerCache;
use mnist_sampler::{Direction, FrozenTrial, Pruner, PrunerConfig, PrunerState, Sampler, SamplerConfig, SearchSpace, TrialState};
use serde::{Deserialize, Serialize};

/// A study's life-cycle state (see `StudyState` in the proto).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StudyState {
    /// Trials are handed out.
    Running,
    /// Stopped by hand; can be resumed.
    Stopped,
    /// Ended on its own (n_trials, timeout, exhausted grid).
    Complete,
}

impl StudyState {
    /// The text stored in `mnist_studies.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            StudyState::Running => "RUNNING",
            StudyState::Stopped => "STOPPED",
            StudyState::Complete => "COMPLETE",
        }
    }
    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "RUNNING" => Some(StudyState::Running),
            "STOPPED" => Some(StudyState::Stopped),
            "COMPLETE" => Some(StudyState::Complete),
            _ => None,
        }
    }
}

/// Optuna's `trials.state` text.
pub fn trial_state_str(s: TrialState) -> &'static str {
    match s {
        TrialState::Running => "RUNNING",
        TrialState::Waiting => "WAITING",
        TrialState::Complete => "COMPLETE",
        TrialState::Pruned => "PRUNED",
        TrialState::Fail => "FAIL",
    }
}

/// Parses Optuna's `trials.state` text.
pub fn parse_trial_state(s: &str) -> Option<TrialState> {
    match s {
        "RUNNING" => Some(TrialState::Running),
        "WAITING" => Some(TrialState::Waiting),
        "COMPLETE" => Some(TrialState::Complete),
        "PRUNED" => Some(TrialState::Pruned),
        "FAIL" => Some(TrialState::Fail),
        _ => None,
    }
}

/// Optuna's `study_directions.direction` text.
pub fn direction_str(d: Direction) -> &'static str {
    match d {
        Direction::Minimize => "MINIMIZE",
        Direction::Maximize => "MAXIMIZE",
    }
}

/// Retry policy for lost leases and retryable failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Re-queues before the trial is failed.
    pub max_retries: u32,
    /// Sample new parameters for the retry instead of keeping them.
    pub fresh_params: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_retries: 2, fresh_params: false }
    }
}

/// Everything about a study that does not change as it runs; stored as JSON
/// in `mnist_studies.config_json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudyConfig {
    pub direction: Direction,
    pub metric: String,
    /// The search space (serialised as an ordered list of parameters).
    pub search_space: SearchSpace,
    pub sampler: SamplerConfig,
    pub pruner: PrunerConfig,
    /// 0: unlimited.
    pub n_trials: u32,
    /// 0: none.
    pub timeout_seconds: f64,
    /// 0: unlimited.
    pub max_concurrency: u32,
    pub base_config: TrainConfig,
    pub retry: RetryPolicy,
}

/// Trials per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub waiting: u32,
    pub running: u32,
    pub complete: u32,
    pub pruned: u32,
    pub fail: u32,
}

impl Counts {
    fn slot(&mut self, s: TrialState) -> &mut u32 {
        match s {
            TrialState::Waiting => &mut self.waiting,
            TrialState::Running => &mut self.running,
            TrialState::Complete => &mut self.complete,
            TrialState::Pruned => &mut self.pruned,
            TrialState::Fail => &mut self.fail,
        }
    }
    /// Records a trial entering `s`.
    pub fn add(&mut self, s: TrialState) {
        *self.slot(s) += 1;
    }
    /// Records a trial leaving `s`.
    pub fn remove(&mut self, s: TrialState) {
        let c = self.slot(s);
        *c = c.saturating_sub(1);
    }
    /// COMPLETE + PRUNED + FAIL.
    pub fn finished(&self) -> u32 {
        self.complete + self.pruned + self.fail
    }
    /// All trials.
    pub fn total(&self) -> u32 {
        self.finished() + self.waiting + self.running
    }
}

/// Who holds a running trial, for display.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HolderView {
    pub holder_id: String,
    pub slot: u32,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub device: String,
    pub expires_ms: i64,
}

/// A live lease on a RUNNING trial.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// The fencing token.
    pub token: u64,
    /// The worker id or ask/tell client id.
    pub holder: String,
    /// The holder's slot.
    pub slot: u32,
    /// Wall-clock expiry, ms.
    pub expires_ms: i64,
}

/// The coordinator's bookkeeping of one trial, beside its `FrozenTrial`.
#[derive(Debug, Clone, Default)]
pub struct TrialExtra {
    pub trial_id: i64,
    pub retries: u32,
    /// Enqueued with fixed parameters (`EnqueueTrial`).
    pub enqueued: bool,
    /// The enqueued fixed parameters (internal repr), kept across re-queues.
    pub fixed: BTreeMap<String, f64>,
    /// The live lease (RUNNING only).
    pub lease: Option<Lease>,
    /// The token of the latest lease, live or not (authorises artifact uploads).
    pub last_token: Option<u64>,
    /// The host and device of the latest holder.
    pub hostname: String,
    pub device: String,
    /// Why it failed, or why it was last re-queued.
    pub reason: Option<String>,
    /// Final metrics (user attributes).
    pub metrics: BTreeMap<String, f64>,
    pub start_ms: Option<i64>,
    pub complete_ms: Option<i64>,
    /// Whether `trial_params` rows exist for every parameter (else they are
    /// written when the trial starts).
    pub params_stored: bool,
}

/// One study in memory.
pub struct StudyMem {
    pub id: i64,
    pub name: String,
    pub config: StudyConfig,
    pub space: SearchSpace,
    pub sampler: Box<dyn Sampler>,
    /// The sampler's memo of this study's trials (TPE's dense history), kept in
    /// step with `trials` on every ask; suggestions are the same without it.
    pub sampler_cache: SamplerCache,
    pub pruner: Box<dyn Pruner>,
    /// What the pruner keeps between decisions ("auto" resource estimates),
    /// stored with the study whenever it changes, so a restart keeps it.
    pub pruner_state: PrunerState,
    pub state: StudyState,
    pub end_reason: String,
    pub created_ms: i64,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    /// The trials as the sampler sees them; index = trial number.
    pub trials: Vec<FrozenTrial>,
    /// Bookkeeping per trial; same index.
    pub extra: Vec<TrialExtra>,
    /// Numbers of WAITING trials (served lowest first).
    pub waiting: BTreeSet<u64>,
    /// Numbers of RUNNING trials.
    pub running: BTreeSet<u64>,
    pub counts: Counts,
    /// Number of the best COMPLETE trial.
    pub best: Option<u64>,
    /// The sampler reported that it has nothing left (an exhausted grid).
    pub exhausted: bool,
}

impl std::fmt::Debug for StudyMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StudyMem").field("id", &self.id).field("name", &self.name).field("state", &self.state).finish()
    }
}

impl StudyMem {
    /// True when `a` is better than `b` in this study's direction.
    pub fn better(&self, a: f64, b: f64) -> bool {
        match self.config.direction {
            Direction::Minimize => a < b,
            Direction::Maximize => a > b,
        }
    }

    /// The best value so far.
    pub fn best_value(&self) -> Option<f64> {
        self.best.and_then(|n| self.trials.get(n as usize)).and_then(|t| t.value)
    }

    /// Re-evaluates whether trial `number` (just finished) is the new best;
    /// returns true when it is.
    pub fn consider_best(&mut self, number: u64) -> bool {
        let Some(t) = self.trials.get(number as usize) else { return false };
        if !t.is_complete_with_value() {
            return false;
        }
        let Some(v) = t.value else { return false };
        let better = match self.best_value() {
            None => true,
            Some(b) => self.better(v, b),
        };
        if better {
            self.best = Some(number);
        }
        better
    }

    /// Recomputes the best trial from scratch (after loading).
    pub fn recompute_best(&mut self) {
        self.best = None;
        for n in 0..self.trials.len() as u64 {
            self.consider_best(n);
        }
    }

    /// Moves trial `number` from its current state to `to`, keeping the
    /// counts and the waiting/running sets in step. The state machine is
    /// enforced by the callers (see `lifecycle`); this only does the books.
    pub fn set_state(&mut self, number: u64, to: TrialState) {
        let Some(t) = self.trials.get_mut(number as usize) else { return };
        let from = t.state;
        t.state = to;
        self.counts.remove(from);
        self.counts.add(to);
        match from {
            TrialState::Waiting => {
                self.waiting.remove(&number);
            }
            TrialState::Running => {
                self.running.remove(&number);
            }
            _ => {}
        }
        match to {
            TrialState::Waiting => {
                self.waiting.insert(number);
            }
            TrialState::Running => {
                self.running.insert(number);
            }
            _ => {}
        }
    }

    /// Adds a new trial at the end (number = current length).
    pub fn push_trial(&mut self, trial: FrozenTrial, extra: TrialExtra) -> u64 {
        let number = self.trials.len() as u64;
        let state = trial.state;
        self.trials.push(trial);
        self.extra.push(extra);
        self.counts.add(state);
        match state {
            TrialState::Waiting => {
                self.waiting.insert(number);
            }
            TrialState::Running => {
                self.running.insert(number);
            }
            _ => {}
        }
        number
    }

    /// The deadline of the study's timeout, if any (ms).
    pub fn deadline_ms(&self) -> Option<i64> {
        // Saturating: a timeout read from an old or edited database may be huge.
        (self.config.timeout_seconds > 0.0).then(|| self.started_ms.saturating_add((self.config.timeout_seconds * 1000.0) as i64))
    }

    /// Whether new trials may still be created (not counting WAITING ones).
    pub fn can_create(&self) -> bool {
        !self.exhausted && (self.config.n_trials == 0 || (self.trials.len() as u64) < self.config.n_trials as u64)
    }
}
