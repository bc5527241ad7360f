//! MLflow tracking of every study and trial, through a durable outbox.
//!
//! The study event log (`mnist_events`, written in the same transaction as
//! each state change) is the source. A *projector* task reads the events
//! after its cursor, turns them into MLflow operations and writes those
//! operations and the new cursor into the outbox in one transaction, so every
//! event becomes its operations exactly once, across crashes. A *deliverer*
//! task (`mnist_mlflow::Deliverer`) sends the outbox in order. Neither task
//! is on any RPC's path: training never waits for MLflow.
//!
//! What each event becomes:
//! - `STUDY_CREATED`: the parent run (in an experiment named after the
//!   study, or the configured one) with the search space, sampler, pruner,
//!   n_trials, direction and metric as params.
//! - `TRIAL_STARTED`: a nested run (`mlflow.parentRunId`) with the trial's
//!   params and tags (number, study, worker host, device).
//! - `TRIAL_REPORTED`: the epoch's metrics at `step = epoch` (1-based).
//! - `TRIAL_COMPLETED`/`PRUNED`/`FAILED`: final test metrics and per-class
//!   F1, the state tags, the run status (FINISHED, KILLED + `pruned`,
//!   FAILED; a trial that failed before it ever ran gets its run here, with
//!   the parameters that failed); on the parent, `best_value` at step =
//!   finished trials. A trial
//!   that became the study's best is remembered as the champion candidate.
//! - `ARTIFACT_STORED`: the file uploaded to the trial's run; `model/MLmodel`
//!   also logs the model (`runs/log-model`); the last file
//!   (`weights/model.safetensors`) of the champion candidate registers its
//!   model and moves the alias.
//! - `STUDY_COMPLETED`: the optimisation-history plot, the best params (as
//!   `best.<name>` tags) and value, and FINISHED; `STUDY_STOPPED` → KILLED, `STUDY_RESUMED` → RUNNING.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mnist_common::metrics::EPOCH_METRICS;
use mnist_common::mlflow_model::{MLMODEL_FILE, MODEL_ARTIFACT_DIR, PYTHON_VERSION, PYTORCH_VERSION};
use mnist_mlflow::op::{torch_flavors, AliasRule};
use mnist_mlflow::{Backlog, Deliverer, MetricPoint, MlflowConfig, Op, Outbox, RunRecord, RunStatus};
use mnist_sampler::{Choice, Direction, TrialState};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::error::CoordError;
use crate::events::{Event, EventKind};
use crate::study::{Coordinator, StudyState};

/// The state name of the projector's cursor (the last event turned into
/// operations).
const CURSOR: &str = "events.seq";
/// The least time between two projection passes.
const PROJECT_EVERY: Duration = Duration::from_millis(500);
/// The artifact that ends a trial's upload (the worker sends it last).
const LAST_ARTIFACT: &str = "weights/model.safetensors";

/// What the projector remembers about a study (`study.<id>` in the outbox state).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StudyKey {
    run_key: String,
    name: String,
    metric: String,
    maximize: bool,
}

/// MLflow tracking of one coordinator.
#[derive(Debug)]
pub struct Tracking {
    outbox: Outbox,
    config: MlflowConfig,
    deliverer: Deliverer,
    artifacts_root: PathBuf,
    /// This database's own id (see [`Outbox::uid`]), part of every study's
    /// run key so that two databases logging to one MLflow server never
    /// take over each other's runs.
    uid: String,
}

fn err(e: mnist_mlflow::MlflowError) -> CoordError {
    CoordError::Internal(e.to_string())
}

fn choice_str(c: &Choice) -> String {
    match c {
        Choice::Str(s) => s.clone(),
        other => other.to_py_json(),
    }
}

/// The run key of attempt `attempt` (0 first) of trial `number`: a trial that
/// is requeued and runs again gets a new nested run, so that no run mixes the
/// epochs or parameters of two attempts.
fn trial_key(study: &StudyKey, number: u64, attempt: u32) -> String {
    match attempt {
        0 => format!("{}/trial/{number}", study.run_key),
        a => format!("{}/trial/{number}/attempt/{a}", study.run_key),
    }
}

/// The trial number and attempt named by a trial run key's tail (after
/// `<study run key>/trial/`).
fn parse_trial_key(tail: &str) -> Option<(u64, u32)> {
    match tail.split_once("/attempt/") {
        Some((n, a)) => Some((n.parse().ok()?, a.parse().ok()?)),
        None => Some((tail.parse().ok()?, 0)),
    }
}

/// Where a requeued trial stands in MLflow: its latest run is attempt
/// `attempt`, and `ended` says that run was closed by a requeue, so the
/// trial's next start opens attempt + 1 (until then its events go to the
/// latest run). Stored as `attempt.<study run key>.<n>` = "k" or "k+"; absent:
/// attempt 0, not ended. Keyed by the study's run key, which is unique even
/// where a study id is reused after a delete.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Attempt {
    attempt: u32,
    ended: bool,
}

impl Attempt {
    fn parse(s: &str) -> Option<Attempt> {
        let (n, ended) = match s.strip_suffix('+') {
            Some(n) => (n, true),
            None => (s, false),
        };
        Some(Attempt { attempt: n.parse().ok()?, ended })
    }

    fn text(self) -> String {
        format!("{}{}", self.attempt, if self.ended { "+" } else { "" })
    }
}

/// Per study run key, the requeued trials' attempts, as the projector's batch
/// sees them.
type Attempts = HashMap<String, HashMap<u64, Attempt>>;

fn attempt_state(study: &StudyKey, n: u64) -> String {
    format!("attempt.{}.{n}", study.run_key)
}

fn state_name(s: TrialState) -> &'static str {
    crate::study::trial_state_str(s)
}

impl Tracking {
    /// Opens the outbox in the coordinator's database and starts the
    /// projector and the deliverer; both stop when `stop` turns true, after
    /// a last projection and up to `config.mlflow_drain` of delivery.
    pub async fn start(coord: Arc<Coordinator>, stop: watch::Receiver<bool>) -> Result<(Arc<Tracking>, JoinHandle<()>), CoordError> {
        let config = coord.config().mlflow.clone();
        let outbox = Outbox::open(&coord.config().db_path).await.map_err(err)?;
        let deliverer = Deliverer::new(outbox.clone(), &config).map_err(err)?;
        match &config.tracking_uri {
            Some(uri) => info!(tracking_uri = %uri, "MLflow tracking on"),
            None => info!("MLflow: no tracking server configured (MLFLOW_TRACKING_URI); studies are recorded in the outbox for a later `mnistctl mlflow sync`"),
        }
        let uid = outbox.uid().await.map_err(err)?;
        let t = Arc::new(Tracking { outbox, config, deliverer, artifacts_root: coord.config().artifacts_root(), uid });
        let task = tokio::spawn(run(t.clone(), coord, stop));
        Ok((t, task))
    }

    /// The MLflow settings.
    pub fn config(&self) -> &MlflowConfig {
        &self.config
    }

    /// What waits to be delivered.
    pub async fn backlog(&self) -> Result<Backlog, CoordError> {
        self.outbox.backlog().await.map_err(err)
    }

    async fn study_key(&self, study_id: i64) -> Result<Option<StudyKey>, CoordError> {
        Ok(self.outbox.state(&format!("study.{study_id}")).await.map_err(err)?.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// The study's parent run in MLflow, once created.
    pub async fn study_run(&self, study_id: i64) -> Result<Option<RunRecord>, CoordError> {
        match self.study_key(study_id).await? {
            Some(k) => self.outbox.run(&k.run_key).await.map_err(err),
            None => Ok(None),
        }
    }

    /// The trials' runs in MLflow, by trial number (the latest attempt's).
    pub async fn trial_runs(&self, study_id: i64) -> Result<HashMap<u64, RunRecord>, CoordError> {
        let Some(k) = self.study_key(study_id).await? else { return Ok(HashMap::new()) };
        let prefix = format!("{}/trial/", k.run_key);
        let runs = self.outbox.runs(&prefix).await.map_err(err)?;
        let mut latest: HashMap<u64, (u32, RunRecord)> = HashMap::new();
        for r in runs {
            let Some((n, a)) = r.run_key.strip_prefix(&prefix).and_then(parse_trial_key) else { continue };
            if latest.get(&n).is_none_or(|(b, _)| a >= *b) {
                latest.insert(n, (a, r));
            }
        }
        Ok(latest.into_iter().map(|(n, (_, r))| (n, r)).collect())
    }

    /// Where trial `n` of the study stands (see [`Attempt`]).
    async fn attempt(&self, attempts: &mut Attempts, study: &StudyKey, n: u64) -> Result<Attempt, CoordError> {
        if !attempts.contains_key(&study.run_key) {
            let prefix = format!("attempt.{}.", study.run_key);
            let stored = self.outbox.states(&prefix).await.map_err(err)?;
            let map = stored
                .into_iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.parse().ok()?, Attempt::parse(&v)?)))
                .collect();
            attempts.insert(study.run_key.clone(), map);
        }
        Ok(attempts.get(&study.run_key).and_then(|m| m.get(&n)).copied().unwrap_or_default())
    }

    /// Records where trial `n` stands, in this batch and in its state changes.
    fn set_attempt(
        attempts: &mut Attempts,
        state: &mut Vec<(String, Option<String>)>,
        study: &StudyKey,
        n: u64,
        a: Attempt,
    ) {
        state.push((attempt_state(study, n), Some(a.text())));
        attempts.entry(study.run_key.clone()).or_default().insert(n, a);
    }

    /// The MLflow UI page of a run.
    pub fn run_url(&self, run: &RunRecord) -> Option<String> {
        self.config.run_url(&run.experiment_id, &run.run_id)
    }

    /// Turns every event after the cursor into operations. Returns how many
    /// events it read.
    async fn project(&self, coord: &Coordinator) -> Result<usize, CoordError> {
        let mut total = 0;
        loop {
            let after: u64 = self.outbox.state(CURSOR).await.map_err(err)?.and_then(|s| s.parse().ok()).unwrap_or(0);
            let events = coord.events_since(after, 1024).await?;
            let Some(last) = events.last().map(|e| e.seq) else { return Ok(total) };
            let mut ops = Vec::new();
            let mut state: Vec<(String, Option<String>)> = Vec::new();
            let mut cache: HashMap<i64, Option<StudyKey>> = HashMap::new();
            let mut attempts = Attempts::new();
            for ev in &events {
                self.translate(coord, ev, &mut ops, &mut state, &mut cache, &mut attempts).await?;
            }
            // The state changes in event order (a champion set, cleared and set
            // again in one batch ends set), with the cursor, in one transaction.
            let mut changes: Vec<(&str, Option<String>)> = state.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            changes.push((CURSOR, Some(last.to_string())));
            self.outbox.enqueue_with_state(&ops, &changes).await.map_err(err)?;
            if !ops.is_empty() {
                self.deliverer.wake();
            }
            total += events.len();
        }
    }

    /// The state a translation sees: what this batch set, else the outbox.
    async fn lookup(&self, state: &[(String, Option<String>)], name: &str) -> Result<Option<String>, CoordError> {
        if let Some((_, v)) = state.iter().rev().find(|(k, _)| k == name) {
            return Ok(v.clone());
        }
        self.outbox.state(name).await.map_err(err)
    }

    async fn translate(
        &self,
        coord: &Coordinator,
        ev: &Event,
        ops: &mut Vec<Op>,
        state: &mut Vec<(String, Option<String>)>,
        cache: &mut HashMap<i64, Option<StudyKey>>,
        attempts: &mut Attempts,
    ) -> Result<(), CoordError> {
        let study_state = format!("study.{}", ev.study_id);
        if ev.kind == EventKind::StudyCreated {
            let view = coord.get_study(&ev.study_name).ok().filter(|v| v.id == ev.study_id);
            let (metric, maximize) = match &view {
                Some(v) => (v.config.metric.clone(), v.config.direction == Direction::Maximize),
                None => (String::new(), true),
            };
            // Study ids and event numbers start again in every new database;
            // the database's id keeps the key unique on a shared server.
            let run_key = format!("study/{}/{}/{}", self.uid, ev.study_id, ev.seq);
            let key = StudyKey { run_key, name: ev.study_name.clone(), metric, maximize };
            let experiment = self.experiment(&key);
            let mut params = Vec::new();
            if let Some(v) = view {
                let c = &v.config;
                params = vec![
                    ("search_space".to_string(), v.space.to_json_string()),
                    ("sampler".to_string(), serde_json::to_string(&c.sampler).unwrap_or_default()),
                    ("pruner".to_string(), serde_json::to_string(&c.pruner).unwrap_or_default()),
                    ("n_trials".to_string(), c.n_trials.to_string()),
                    ("direction".to_string(), format!("{:?}", c.direction).to_lowercase()),
                    ("metric".to_string(), c.metric.clone()),
                    ("epochs".to_string(), c.base_config.epochs.to_string()),
                    ("max_concurrency".to_string(), c.max_concurrency.to_string()),
                    ("timeout_seconds".to_string(), c.timeout_seconds.to_string()),
                ];
                for (name, dist) in v.space.params() {
                    params.push((format!("space.{name}"), dist.to_optuna_json()));
                }
            }
            ops.push(Op::StartRun {
                run_key: key.run_key.clone(),
                experiment,
                run_name: ev.study_name.clone(),
                parent_key: None,
                start_ms: ev.time_ms,
                tags: vec![("mnist.study".into(), ev.study_name.clone()), ("mnist.kind".into(), "study".into())],
                params,
            });
            let json = serde_json::to_string(&key).map_err(|e| CoordError::Internal(e.to_string()))?;
            state.push((study_state, Some(json)));
            cache.insert(ev.study_id, Some(key));
            return Ok(());
        }
        let key = match cache.get(&ev.study_id) {
            Some(k) => k.clone(),
            None => {
                let k = self.lookup(state, &study_state).await?.and_then(|s| serde_json::from_str::<StudyKey>(&s).ok());
                cache.insert(ev.study_id, k.clone());
                k
            }
        };
        // A study created before tracking existed has no parent run.
        let Some(key) = key else { return Ok(()) };
        let champion_state = format!("champion.{}", ev.study_id);
        match ev.kind {
            EventKind::StudyCreated => {}
            EventKind::TrialStarted => {
                let Some(n) = ev.trial_number else { return Ok(()) };
                let mut tags = vec![("mnist.state".to_string(), "RUNNING".to_string())];
                if let Some(h) = &ev.holder {
                    tags.push(("mnist.worker_host".into(), h.hostname.clone()));
                    tags.push(("mnist.worker_id".into(), h.holder_id.clone()));
                    tags.push(("mnist.device".into(), h.device.clone()));
                }
                let mut at = self.attempt(attempts, &key, n).await?;
                if at.ended {
                    // The first start after a requeue opens the next attempt's run.
                    at = Attempt { attempt: at.attempt + 1, ended: false };
                    Self::set_attempt(attempts, state, &key, n, at);
                }
                ops.push(self.trial_start_run(&key, n, at.attempt, ev, tags));
            }
            EventKind::TrialReported => {
                let (Some(n), Some(step)) = (ev.trial_number, ev.step) else { return Ok(()) };
                // The reported step is 0-based (Optuna's intermediate step);
                // MLflow's step is the epoch number, as `mnistctl train` logs it.
                let epoch = step.saturating_add(1).min(i64::MAX as u64) as i64;
                let metrics = ev
                    .metrics
                    .iter()
                    .map(|(k, v)| MetricPoint { key: k.clone(), value: *v, timestamp_ms: ev.time_ms, step: epoch })
                    .collect();
                let attempt = self.attempt(attempts, &key, n).await?.attempt;
                ops.push(Op::Log { run_key: trial_key(&key, n, attempt), metrics, params: vec![], tags: vec![] });
            }
            EventKind::TrialCompleted | EventKind::TrialPruned | EventKind::TrialFailed => {
                let Some(n) = ev.trial_number else { return Ok(()) };
                let step = ev.metrics.get("epochs_run").copied().unwrap_or(0.0).max(0.0) as i64;
                // Per-epoch metrics are histories by step already; the final
                // report does not repeat them.
                let mut metrics: Vec<MetricPoint> = ev
                    .metrics
                    .iter()
                    .filter(|(k, _)| !EPOCH_METRICS.contains(&k.as_str()))
                    .map(|(k, v)| MetricPoint { key: k.clone(), value: *v, timestamp_ms: ev.time_ms, step })
                    .collect();
                if let Some(v) = ev.value {
                    metrics.push(MetricPoint { key: "objective".into(), value: v, timestamp_ms: ev.time_ms, step });
                }
                let state_s = ev.trial_state.map(state_name).unwrap_or("FAIL");
                let mut tags = vec![("mnist.state".to_string(), state_s.to_string())];
                let status = match ev.kind {
                    EventKind::TrialCompleted => RunStatus::Finished,
                    EventKind::TrialPruned => {
                        tags.push(("pruned".into(), "true".into()));
                        RunStatus::Killed
                    }
                    _ => {
                        if !ev.message.is_empty() {
                            tags.push(("mnist.fail_reason".into(), ev.message.clone()));
                        }
                        RunStatus::Failed
                    }
                };
                // A trial that fails while waiting after a requeue ends its
                // latest run, the one the requeue closed; one that fails
                // before it ever started gets its run here, with the
                // parameters that failed.
                let at = self.attempt(attempts, &key, n).await?;
                let run_key = trial_key(&key, n, at.attempt);
                if ev.before_start && !at.ended {
                    ops.push(self.trial_start_run(&key, n, at.attempt, ev, Vec::new()));
                }
                ops.push(Op::SetStatus { run_key, status, end_ms: Some(ev.time_ms), metrics, tags });
                if let Some(best) = ev.best_value {
                    let finished = (ev.counts.complete + ev.counts.pruned + ev.counts.fail) as i64;
                    ops.push(Op::Log {
                        run_key: key.run_key.clone(),
                        metrics: vec![MetricPoint { key: "best_value".into(), value: best, timestamp_ms: ev.time_ms, step: finished }],
                        params: vec![],
                        tags: vec![("mnist.best_trial".into(), ev.best_trial_number.map(|b| b.to_string()).unwrap_or_default())],
                    });
                }
                if ev.kind == EventKind::TrialCompleted && ev.best_trial_number == Some(n) {
                    let value = ev.value.unwrap_or(f64::NAN);
                    state.push((champion_state, Some(serde_json::json!({ "number": n, "value": value.to_string() }).to_string())));
                }
            }
            EventKind::ArtifactStored => {
                let Some(n) = ev.trial_number else { return Ok(()) };
                let name = ev.message.clone();
                let file = crate::artifacts::trial_dir(&self.artifacts_root, ev.study_id, n).join(&name);
                let run_key = trial_key(&key, n, self.attempt(attempts, &key, n).await?.attempt);
                ops.push(Op::Artifact { run_key: run_key.clone(), path: name.clone(), file: file.display().to_string() });
                if name.split_once('/') == Some((MODEL_ARTIFACT_DIR, MLMODEL_FILE)) {
                    ops.push(Op::LogModel {
                        run_key: run_key.clone(),
                        artifact_path: MODEL_ARTIFACT_DIR.into(),
                        time_ms: ev.time_ms,
                        flavors: torch_flavors(PYTORCH_VERSION, PYTHON_VERSION),
                    });
                }
                if name == LAST_ARTIFACT {
                    let pending = self.lookup(state, &champion_state).await?.and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
                    let is_champion = pending.as_ref().and_then(|p| p["number"].as_u64()) == Some(n);
                    if is_champion && model_uploaded(&self.artifacts_root, ev.study_id, n) {
                        let value: f64 = pending.as_ref().and_then(|p| p["value"].as_str()).and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
                        let metric = if key.metric.is_empty() { "objective".to_string() } else { key.metric.clone() };
                        ops.push(Op::Register {
                            run_key,
                            model_name: self.config.model_name.clone(),
                            artifact_path: MODEL_ARTIFACT_DIR.into(),
                            alias: self.config.alias.clone(),
                            tags: vec![
                                ("study".into(), key.name.clone()),
                                ("trial_number".into(), n.to_string()),
                                ("metric".into(), metric.clone()),
                                (metric.clone(), value.to_string()),
                            ],
                            rule: Some(AliasRule { metric, value, maximize: key.maximize }),
                        });
                        state.push((champion_state, None));
                    }
                }
            }
            EventKind::StudyCompleted => {
                // The best parameters are tags, not params: MLflow's params
                // cannot change, and a resumed study may end with another best.
                let mut tags = vec![("mnist.state".to_string(), "COMPLETE".to_string()), ("mnist.n_trials".to_string(), ev.n_trials.to_string())];
                let mut metrics = Vec::new();
                if let Ok(view) = coord.get_study(&ev.study_name) {
                    if view.id == ev.study_id {
                        if let Some(best) = &view.best {
                            for (k, v) in &best.params {
                                tags.push((format!("best.{k}"), choice_str(v)));
                            }
                            tags.push(("mnist.best_trial".into(), best.number.to_string()));
                            if let Some(v) = best.value {
                                metrics.push(MetricPoint { key: "best_value_final".into(), value: v, timestamp_ms: ev.time_ms, step: 0 });
                            }
                        }
                        if let Some(file) = self.history_plot(coord, &view) {
                            ops.push(Op::Artifact {
                                run_key: key.run_key.clone(),
                                path: "plots/optimization_history.png".into(),
                                file: file.display().to_string(),
                            });
                        }
                    }
                }
                ops.push(Op::SetStatus { run_key: key.run_key.clone(), status: RunStatus::Finished, end_ms: Some(ev.time_ms), metrics, tags });
            }
            EventKind::StudyStopped => {
                ops.push(Op::SetStatus { run_key: key.run_key.clone(), status: RunStatus::Killed, end_ms: Some(ev.time_ms), metrics: vec![], tags: vec![] });
            }
            EventKind::StudyResumed => {
                ops.push(Op::SetStatus { run_key: key.run_key.clone(), status: RunStatus::Running, end_ms: None, metrics: vec![], tags: vec![] });
            }
            EventKind::StudyDeleted => {
                // Its runs stay in MLflow, marked; a parent still RUNNING
                // (deleted with --force) is ended, or it would look alive.
                let tags = vec![("mnist.state".to_string(), "DELETED".to_string())];
                if ev.study_state == StudyState::Running {
                    ops.push(Op::SetStatus { run_key: key.run_key.clone(), status: RunStatus::Killed, end_ms: Some(ev.time_ms), metrics: vec![], tags });
                } else {
                    ops.push(Op::Log { run_key: key.run_key.clone(), metrics: vec![], params: vec![], tags });
                }
                state.push((study_state, None));
                state.push((champion_state, None));
                cache.insert(ev.study_id, None);
            }
            EventKind::TrialRequeued => {
                // The attempt's run ends here; the next start opens a new one.
                let Some(n) = ev.trial_number else { return Ok(()) };
                let at = self.attempt(attempts, &key, n).await?;
                let mut tags = vec![("mnist.state".to_string(), "REQUEUED".to_string())];
                if !ev.message.is_empty() {
                    tags.push(("mnist.requeue_reason".into(), ev.message.clone()));
                }
                ops.push(Op::SetStatus {
                    run_key: trial_key(&key, n, at.attempt),
                    status: RunStatus::Killed,
                    end_ms: Some(ev.time_ms),
                    metrics: vec![],
                    tags,
                });
                Self::set_attempt(attempts, state, &key, n, Attempt { attempt: at.attempt, ended: true });
            }
            EventKind::TrialEnqueued => {}
        }
        Ok(())
    }

    /// The experiment a study's runs go to: the configured one, else one
    /// named after the study.
    fn experiment(&self, key: &StudyKey) -> String {
        self.config.experiment_name.clone().unwrap_or_else(|| key.name.clone())
    }

    /// The nested run of attempt `attempt` of trial `n`, started at `ev` with
    /// its parameters; `tags` come after the study, number and attempt tags.
    fn trial_start_run(&self, key: &StudyKey, n: u64, attempt: u32, ev: &Event, tags: Vec<(String, String)>) -> Op {
        let mut all = vec![
            ("mnist.study".to_string(), key.name.clone()),
            ("mnist.trial_number".to_string(), n.to_string()),
            ("mnist.attempt".to_string(), (attempt + 1).to_string()),
        ];
        all.extend(tags);
        Op::StartRun {
            run_key: trial_key(key, n, attempt),
            experiment: self.experiment(key),
            run_name: if attempt == 0 { format!("trial-{n}") } else { format!("trial-{n} (attempt {})", attempt + 1) },
            parent_key: Some(key.run_key.clone()),
            start_ms: ev.time_ms,
            tags: all,
            params: ev.params.iter().map(|(k, v)| (k.clone(), choice_str(v))).collect(),
        }
    }

    /// Draws the study's optimisation history next to its artifacts.
    fn history_plot(&self, coord: &Coordinator, view: &crate::study::StudyView) -> Option<PathBuf> {
        let trials = coord.list_trials(&view.name, &[TrialState::Complete], 0, 0).ok()?;
        let points: Vec<(u64, f64)> = trials.iter().filter_map(|t| t.value.map(|v| (t.number, v))).collect();
        let dir = crate::artifacts::study_dir(&self.artifacts_root, view.id);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            warn!(dir = %dir.display(), error = %e, "cannot create the study's artifact directory; no optimisation-history plot");
            return None;
        }
        let path = dir.join("optimization_history.png");
        let maximize = view.config.direction == Direction::Maximize;
        match mnist_common::plots::optimization_history(&path, &points, maximize, &view.config.metric) {
            Ok(()) => Some(path),
            Err(e) => {
                warn!(error = %e, "cannot draw the optimisation history");
                None
            }
        }
    }
}

/// Whether the trial's model directory is in the artifact store.
fn model_uploaded(root: &Path, study_id: i64, number: u64) -> bool {
    crate::artifacts::trial_dir(root, study_id, number).join(MODEL_ARTIFACT_DIR).join(MLMODEL_FILE).is_file()
}

async fn run(t: Arc<Tracking>, coord: Arc<Coordinator>, mut stop: watch::Receiver<bool>) {
    let (dstop_tx, dstop_rx) = watch::channel(false);
    let deliver = tokio::spawn(t.deliverer.clone().run(dstop_rx));
    let mut events = coord.subscribe();
    loop {
        if let Err(e) = t.project(&coord).await {
            warn!(error = %e, "MLflow: turning study events into outbox operations failed; retrying");
        }
        if *stop.borrow() {
            break;
        }
        // Wait for an event (or a second), then let more gather: one
        // transaction per PROJECT_EVERY takes SQLite's write lock far less
        // often than one per event would, so the coordinator's own writes
        // rarely wait behind ours.
        tokio::select! {
            r = events.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                    tokio::time::sleep(PROJECT_EVERY).await;
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
        if !*stop.borrow() {
            tokio::select! {
                _ = tokio::time::sleep(PROJECT_EVERY) => {}
                _ = stop.changed() => {}
            }
        }
        events = events.resubscribe();
    }
    let _ = dstop_tx.send(true);
    let _ = deliver.await;
    if t.config.tracking_uri.is_some() {
        if let Ok(b) = t.outbox.backlog().await {
            if b.pending > 0 {
                info!(
                    pending = b.pending,
                    "MLflow: delivering what is left (up to {:.0} s) before exiting",
                    coord.config().mlflow_drain.as_secs_f64()
                );
            }
        }
        match t.deliverer.drain(coord.config().mlflow_drain).await {
            Ok(r) if r.pending == 0 => {}
            Ok(r) => warn!(
                pending = r.pending,
                reason = r.blocked_by.as_deref().unwrap_or(""),
                db = %coord.config().db_path.display(),
                "MLflow operations still wait in the outbox; they are delivered when the coordinator runs again, or by `mnistctl mlflow sync --db <db>`"
            ),
            Err(e) => warn!(error = %e, "MLflow: the final delivery failed"),
        }
    }
    t.outbox.close().await;
}
