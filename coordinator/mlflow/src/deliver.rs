//! Delivery: sends the outbox to MLflow in the order it was written, one
//! operation at a time, so every run sees its operations in order.
//!
//! - An error a retry can fix (server down, 5xx, 429, refused credentials)
//!   keeps the operation at the head of the line and backs off (0.5 s
//!   doubling to 30 s); nothing behind it is skipped or lost.
//! - An error no retry can fix (the request itself is wrong) marks that one
//!   operation `DEAD` with the reason and moves on. `Log` operations first
//!   fall back to one value per request, so a single bad value does not sink
//!   its neighbours: they land, and the operation is still kept as `DEAD`
//!   naming the refused values (`--retry-refused` resends it, less the tags,
//!   status and files that later operations replaced, see
//!   `Op::without_superseded`; the rest is safe to send twice, see below).
//! - A model is registered only when its files were uploaded: a `Register`
//!   whose run has a refused upload under the model's folder is refused.
//! - Every operation is safe to send twice: a run is looked up by our
//!   `mnist.run_key` tag before it is created, metric points carry fixed
//!   timestamps (MLflow keeps one copy of an identical point), params and
//!   tags are set to the same values, artifacts overwrite, and a model
//!   version is looked up by run before one is created. So a crash between
//!   "sent" and "marked done" never doubles anything.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use crate::client::MlflowClient;
use crate::config::MlflowConfig;
use crate::error::MlflowError;
use crate::limits;
use crate::op::{AliasRule, MetricPoint, Op};
use crate::outbox::{Entry, Outbox, RunRecord};

/// The tag that names our run key on every run we create.
pub const RUN_KEY_TAG: &str = "mnist.run_key";

/// The outbox state naming the tracking server its runs live on.
const SERVER_STATE: &str = "mlflow.server";

const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long the loop sleeps when the outbox is empty, unless woken.
const IDLE_POLL: Duration = Duration::from_secs(2);

/// What a drain achieved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryReport {
    pub delivered: u64,
    pub dead: u64,
    pub pending: u64,
    /// Why delivery stopped with operations still pending.
    pub blocked_by: Option<String>,
}

/// Sends one outbox to one tracking server.
#[derive(Debug, Clone)]
pub struct Deliverer {
    outbox: Outbox,
    client: Option<MlflowClient>,
    wake: Arc<Notify>,
    /// Set once the tracking server was checked to be the one this outbox's
    /// run ids belong to (see [`Deliverer::check_server`]).
    server_checked: Arc<std::sync::atomic::AtomicBool>,
}

enum Step {
    /// The outbox is empty.
    Idle,
    /// Some operations were delivered or refused.
    Progress { delivered: u64, dead: u64 },
    /// The head operation failed with an error a retry may fix.
    Blocked(MlflowError),
}

impl Deliverer {
    /// A deliverer for `outbox`; with no tracking server configured it keeps
    /// everything in the outbox.
    pub fn new(outbox: Outbox, config: &MlflowConfig) -> Result<Deliverer, MlflowError> {
        let client = match &config.tracking_uri {
            Some(_) => Some(MlflowClient::new(config)?),
            None => None,
        };
        Ok(Deliverer { outbox, client, wake: Arc::new(Notify::new()), server_checked: Arc::default() })
    }

    /// The outbox this deliverer reads.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Wakes the loop when new operations were written.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Delivers until `shutdown` turns true. Never returns an error: every
    /// failure is retried or recorded in the outbox.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // Without a tracking server there is nothing to send; the caller
        // says so once (operations stay in the outbox for `mnistctl mlflow sync`).
        let Some(client) = self.client.clone() else { return };
        let mut backoff = BACKOFF_START;
        let mut failing_since: Option<std::time::Instant> = None;
        let mut failures = 0u64;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let pause = match self.step(&client, 64).await {
                Ok(Step::Idle) => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                Ok(Step::Progress { .. }) => {
                    if let Some(t) = failing_since.take() {
                        info!(seconds = format!("{:.0}", t.elapsed().as_secs_f64()), "MLflow delivery resumed");
                    }
                    backoff = BACKOFF_START;
                    failures = 0;
                    continue;
                }
                Ok(Step::Blocked(e)) | Err(e) => {
                    failures += 1;
                    if failing_since.is_none() {
                        failing_since = Some(std::time::Instant::now());
                    }
                    // Say it once, then every 20th attempt, not on every retry.
                    if failures == 1 || failures.is_multiple_of(20) {
                        let backlog = self.outbox.backlog().await.map(|b| b.pending).unwrap_or(0);
                        warn!(error = %e, backlog, "MLflow delivery waits; nothing is lost, retrying with backoff");
                    } else {
                        debug!(error = %e, "MLflow delivery retry");
                    }
                    let b = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    b
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Delivers until the outbox is empty, or until an error a retry may fix
    /// has persisted for `patience`. For `mnistctl mlflow sync` and the
    /// single training command.
    pub async fn drain(&self, patience: Duration) -> Result<DeliveryReport, MlflowError> {
        let client = self
            .client
            .clone()
            .ok_or_else(|| MlflowError::Config("no tracking server is configured; set MLFLOW_TRACKING_URI or pass --mlflow-tracking-uri".into()))?;
        let mut report = DeliveryReport::default();
        let mut backoff = BACKOFF_START;
        let mut failing_since: Option<std::time::Instant> = None;
        loop {
            match self.step(&client, 256).await {
                Ok(Step::Idle) => break,
                Ok(Step::Progress { delivered, dead }) => {
                    report.delivered += delivered;
                    report.dead += dead;
                    failing_since = None;
                    backoff = BACKOFF_START;
                }
                Ok(Step::Blocked(e)) | Err(e) => {
                    let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                    let waited = since.elapsed();
                    if waited >= patience || matches!(e, MlflowError::Auth { .. } | MlflowError::Config(_)) {
                        report.blocked_by = Some(e.to_string());
                        break;
                    }
                    // Never sleep past the patience: the caller promised the
                    // user "up to N seconds".
                    tokio::time::sleep(backoff.min(patience - waited)).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        report.pending = self.outbox.backlog().await?.pending;
        Ok(report)
    }

    /// Delivers up to `limit` pending operations in order.
    async fn step(&self, client: &MlflowClient, limit: u32) -> Result<Step, MlflowError> {
        let entries = self.outbox.pending(limit).await?;
        if entries.is_empty() {
            return Ok(Step::Idle);
        }
        if let Err(e) = self.check_server(client).await {
            // Shown by `mlflow status` and `study show` as why delivery waits.
            if let Some(head) = entries.first() {
                self.outbox.record_failure(head.id, &e.to_string()).await?;
            }
            return Err(e);
        }
        let (mut delivered, mut dead) = (0, 0);
        // Whether a probe in this step showed the account may use the server.
        let mut may_use_server = false;
        for Entry { id, op, .. } in entries {
            let outcome = match self.deliver(client, &op).await {
                // A 403 refuses this one operation only if the account may
                // use the server at all; a gateway that answers 403 to
                // everything (an expired token) must not turn the whole
                // backlog into refusals: that waits, like refused credentials.
                Err(e @ MlflowError::Forbidden { .. }) if !may_use_server => match client.check_access().await {
                    // The probe failed too (refused, or the server went away):
                    // keep the operation at the head.
                    Err(p) if p.is_retryable() || matches!(p, MlflowError::Forbidden { .. }) => Err(e.forbidden_as_auth()),
                    _ => {
                        may_use_server = true;
                        Err(e)
                    }
                },
                other => other,
            };
            match outcome {
                Ok(()) => {
                    self.outbox.mark_done(id).await?;
                    delivered += 1;
                }
                Err(e) if e.is_retryable() => {
                    self.outbox.record_failure(id, &e.to_string()).await?;
                    if delivered + dead == 0 {
                        return Ok(Step::Blocked(e));
                    }
                    break;
                }
                Err(e) => {
                    warn!(op = op.kind(), run = op.run_key(), error = %e, "MLflow refused an operation for good; it is kept as DEAD in the outbox");
                    self.outbox.mark_dead(id, &e.to_string()).await?;
                    dead += 1;
                }
            }
        }
        Ok(Step::Progress { delivered, dead })
    }

    /// The outbox remembers MLflow's ids of its runs and experiments; they
    /// mean something only on the server that made them. The first delivery
    /// records the server's address (state `mlflow.server`); a later one to
    /// another address goes on only if that server knows one of the
    /// remembered runs (the same server under another name), and otherwise
    /// stops with an error naming both, instead of refusing every
    /// operation of the runs it does not know.
    async fn check_server(&self, client: &MlflowClient) -> Result<(), MlflowError> {
        use std::sync::atomic::Ordering;
        if self.server_checked.load(Ordering::Acquire) {
            return Ok(());
        }
        let uri = client.uri().to_string();
        let known = self.outbox.state(SERVER_STATE).await?;
        if let Some(k) = known.as_deref().filter(|k| *k != uri) {
            // The same server under another name knows our runs; a few are
            // tried, in case one was deleted there since.
            let runs = self.outbox.latest_runs(3).await?;
            let mut knows = runs.is_empty();
            for run in &runs {
                match client.run_tag(&run.run_id, RUN_KEY_TAG).await {
                    Ok(_) => {
                        knows = true;
                        break;
                    }
                    Err(e) if e.error_code() == Some("RESOURCE_DOES_NOT_EXIST") => {}
                    Err(e) => return Err(e),
                }
            }
            if let Some(run) = runs.first().filter(|_| !knows) {
                return Err(MlflowError::Config(format!(
                    "this outbox delivered to MLflow at {k} before, and its runs live there: {uri} does not know \
                     run {} ({}) nor the others tried. Deliver with --mlflow-tracking-uri {k}, or, to log to {uri}, \
                     start from a new study database (or --output-dir)",
                    run.run_id, run.run_key
                )));
            }
        }
        if known.as_deref() != Some(uri.as_str()) {
            self.outbox.enqueue_with_state(&[], &[(SERVER_STATE, Some(uri))]).await?;
        }
        self.server_checked.store(true, Ordering::Release);
        Ok(())
    }

    async fn require_run(&self, run_key: &str) -> Result<RunRecord, MlflowError> {
        self.outbox.run(run_key).await?.ok_or_else(|| {
            MlflowError::Permanent(format!("MLflow run {run_key:?} was never created (its start was refused; see the earlier error)"))
        })
    }

    /// The id of experiment `name`, from the outbox's memory, else from
    /// MLflow (created when missing).
    async fn experiment_id(&self, client: &MlflowClient, name: &str) -> Result<String, MlflowError> {
        if let Some(id) = self.outbox.experiment(name).await? {
            return Ok(id);
        }
        let id = client.ensure_experiment(name).await?;
        self.outbox.save_experiment(name, &id).await?;
        Ok(id)
    }

    /// Finds (by our run-key tag) or creates the run of a `StartRun` in
    /// `experiment_id`.
    #[allow(clippy::too_many_arguments)]
    async fn find_or_create_run(
        &self,
        client: &MlflowClient,
        experiment_id: &str,
        run_key: &str,
        run_name: &str,
        parent_key: Option<&str>,
        start_ms: i64,
        tags: &[(String, String)],
    ) -> Result<crate::client::RunInfo, MlflowError> {
        if let Some(found) = client.find_run_by_tag(experiment_id, RUN_KEY_TAG, run_key).await? {
            return Ok(found);
        }
        let mut all = tags.to_vec();
        all.push((RUN_KEY_TAG.into(), run_key.to_string()));
        all.push(("mlflow.runName".into(), run_name.to_string()));
        if let Some(parent) = parent_key {
            let p = self.require_run(parent).await?;
            all.push(("mlflow.parentRunId".into(), p.run_id));
        }
        let cleaned = limits::clean(&[], &[], &all);
        warn_all(&cleaned.warnings, run_key);
        client.create_run(experiment_id, run_name, start_ms, &cleaned.tags).await
    }

    /// Sends one operation.
    async fn deliver(&self, client: &MlflowClient, op: &Op) -> Result<(), MlflowError> {
        match op {
            Op::StartRun { run_key, experiment, run_name, parent_key, start_ms, tags, params } => {
                if let Some(run) = self.outbox.run(run_key).await? {
                    // Created earlier: by an attempt that failed while logging
                    // the params, or the trial runs again after a requeue.
                    return self.log(client, &run, &[], params, tags).await;
                }
                let experiment_id = self.experiment_id(client, experiment).await?;
                let parent = parent_key.as_deref();
                let rec = match self.find_or_create_run(client, &experiment_id, run_key, run_name, parent, *start_ms, tags).await {
                    Ok(rec) => rec,
                    // The remembered experiment id may be stale (the
                    // experiment was deleted, or the server was reset): ask
                    // MLflow again once, which names a deleted experiment.
                    Err(e) if stale_experiment(&e) => {
                        self.outbox.forget_experiment(experiment).await?;
                        let fresh = self.experiment_id(client, experiment).await?;
                        if fresh == experiment_id {
                            return Err(e);
                        }
                        info!(experiment = %experiment, old = %experiment_id, new = %fresh, "MLflow: the experiment's id changed; using the new one");
                        self.find_or_create_run(client, &fresh, run_key, run_name, parent, *start_ms, tags).await?
                    }
                    Err(e) => return Err(e),
                };
                let run = RunRecord {
                    run_key: run_key.clone(),
                    experiment_id: rec.experiment_id,
                    run_id: rec.run_id,
                    artifact_uri: rec.artifact_uri,
                };
                self.outbox.save_run(&run).await?;
                self.log(client, &run, &[], params, &[]).await
            }
            Op::Log { run_key, metrics, params, tags } => {
                let run = self.require_run(run_key).await?;
                self.log(client, &run, metrics, params, tags).await
            }
            Op::SetStatus { run_key, status, end_ms, metrics, tags } => {
                let run = self.require_run(run_key).await?;
                // A refused value (a tag too long for this server, say) must
                // not leave the run RUNNING: the status is set regardless,
                // and the refusal is reported after.
                let logged = self.log(client, &run, metrics, &[], tags).await;
                if matches!(&logged, Err(e) if e.is_retryable()) {
                    return logged;
                }
                match (client.update_run(&run.run_id, status.as_str(), *end_ms).await, logged) {
                    (Err(e), Err(refused)) if !e.is_retryable() => Err(MlflowError::Permanent(format!("{e}; and {refused}"))),
                    (Err(e), _) => Err(e),
                    (Ok(()), logged) => logged,
                }
            }
            Op::Artifact { run_key, path, file } => {
                let run = self.require_run(run_key).await?;
                let bytes = tokio::fs::read(file).await.map_err(|e| MlflowError::File {
                    path: file.clone(),
                    message: format!("cannot read the artifact to upload ({e}); it was removed before MLflow received it"),
                })?;
                client.upload_artifact(&run.artifact_uri, path, bytes).await
            }
            Op::LogModel { run_key, artifact_path, time_ms, flavors } => {
                let run = self.require_run(run_key).await?;
                let created = chrono::DateTime::from_timestamp_millis(*time_ms)
                    .unwrap_or_default()
                    .format("%Y-%m-%d %H:%M:%S%.6f")
                    .to_string();
                // A stable model id per run and path keeps a resent call the same.
                let model_uuid = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{}/{artifact_path}", run.run_id).as_bytes())
                    .simple()
                    .to_string();
                // `runs/log-model` appends to the run's model history, so a
                // resent call would list the model twice: look first.
                if let Some(history) = client.run_tag(&run.run_id, "mlflow.log-model.history").await? {
                    if history.contains(&model_uuid) {
                        return Ok(());
                    }
                }
                let model = json!({
                    "run_id": run.run_id,
                    "artifact_path": artifact_path,
                    "utc_time_created": created,
                    "flavors": flavors,
                    "model_uuid": model_uuid,
                });
                client.log_model(&run.run_id, &model).await
            }
            Op::Register { run_key, model_name, artifact_path, alias, tags, rule } => {
                let run = self.require_run(run_key).await?;
                let refused = self.outbox.refused_uploads(run_key, artifact_path).await?;
                if let Some((path, reason)) = refused.first() {
                    return Err(MlflowError::Permanent(format!(
                        "the model is not registered: {} of its files did not reach MLflow (first: {path}: {reason}); \
                         fix that, then `mnistctl mlflow sync --retry-refused` uploads them and registers the model",
                        refused.len()
                    )));
                }
                self.register(client, &run, model_name, artifact_path, alias, tags, rule.as_ref()).await
            }
        }
    }

    async fn log(
        &self,
        client: &MlflowClient,
        run: &RunRecord,
        metrics: &[MetricPoint],
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<(), MlflowError> {
        let cleaned = limits::clean(metrics, params, tags);
        warn_all(&cleaned.warnings, &run.run_key);
        let mut refused = Vec::new();
        for batch in limits::batches(&cleaned) {
            match client.log_batch(&run.run_id, &batch.metrics, &batch.params, &batch.tags).await {
                Ok(()) => {}
                Err(e) if e.is_retryable() => return Err(e),
                // Not allowed at all: no value would pass alone either.
                Err(e @ MlflowError::Forbidden { .. }) => return Err(e),
                Err(e) => {
                    // One value spoilt the batch: send them one by one so the
                    // others land, and name the ones MLflow refuses.
                    debug!(error = %e, "log-batch refused; retrying value by value");
                    for m in &batch.metrics {
                        single(client.log_batch(&run.run_id, std::slice::from_ref(m), &[], &[]).await, "metric", &m.key, &mut refused)?;
                    }
                    for p in &batch.params {
                        single(client.log_batch(&run.run_id, &[], std::slice::from_ref(p), &[]).await, "param", &p.0, &mut refused)?;
                    }
                    for t in &batch.tags {
                        single(client.log_batch(&run.run_id, &[], &[], std::slice::from_ref(t)).await, "tag", &t.0, &mut refused)?;
                    }
                }
            }
        }
        match refused.len() {
            0 => Ok(()),
            n => {
                let more = if n > REFUSED_NAMED { format!("; and {} more", n - REFUSED_NAMED) } else { String::new() };
                Err(MlflowError::Permanent(format!(
                    "MLflow refused {n} value(s) of this operation (the others were logged): {}{more}",
                    refused[..n.min(REFUSED_NAMED)].join("; ")
                )))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn register(
        &self,
        client: &MlflowClient,
        run: &RunRecord,
        model_name: &str,
        artifact_path: &str,
        alias: &str,
        tags: &[(String, String)],
        rule: Option<&AliasRule>,
    ) -> Result<(), MlflowError> {
        client.ensure_registered_model(model_name).await?;
        let cleaned = limits::clean(&[], &[], tags);
        let version = match client.find_model_version(model_name, &run.run_id).await? {
            Some(v) => {
                for (k, val) in &cleaned.tags {
                    client.set_model_version_tag(model_name, &v.version, k, val).await?;
                }
                v
            }
            None => {
                let source = format!("{}/{}", run.artifact_uri.trim_end_matches('/'), artifact_path);
                client.create_model_version(model_name, &source, &run.run_id, &cleaned.tags).await?
            }
        };
        let current = client.version_by_alias(model_name, alias).await?;
        let take = match (&current, rule) {
            (None, _) | (_, None) => true,
            (Some(cur), _) if cur.version == version.version => false,
            (Some(cur), Some(rule)) => {
                let theirs = cur.tags.iter().find(|(k, _)| *k == rule.metric).and_then(|(_, v)| v.parse::<f64>().ok());
                match theirs {
                    // The champion was chosen by another metric: not comparable, keep it.
                    None => {
                        info!(model = model_name, alias, champion = %cur.version, metric = %rule.metric,
                            "MLflow: the alias stays; its version has no {} to compare with", rule.metric);
                        false
                    }
                    Some(t) if t.is_nan() => true,
                    Some(t) => {
                        if rule.maximize {
                            rule.value > t
                        } else {
                            rule.value < t
                        }
                    }
                }
            }
        };
        if take {
            client.set_alias(model_name, alias, &version.version).await?;
            info!(model = model_name, version = %version.version, alias, run = %run.run_id, "MLflow: alias moved to the new best model");
        }
        Ok(())
    }
}

fn warn_all(warnings: &[String], run_key: &str) {
    for w in warnings {
        warn!(run = run_key, "MLflow: {w}");
    }
}

/// Whether a refused `StartRun` may be due to a remembered experiment id that
/// no longer holds (the experiment deleted, or the server reset).
fn stale_experiment(e: &MlflowError) -> bool {
    matches!(e.error_code(), Some("RESOURCE_DOES_NOT_EXIST" | "INVALID_STATE")) || e.to_string().contains("'active' state")
}

/// At most this many refused values are named in an operation's reason.
const REFUSED_NAMED: usize = 5;

/// The outcome of sending one value alone: a refusal is noted in `refused`
/// (the operation is kept as refused once its other values are sent), an
/// outage is passed up.
fn single(r: Result<(), MlflowError>, what: &str, key: &str, refused: &mut Vec<String>) -> Result<(), MlflowError> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.is_retryable() => Err(e),
        Err(e) => {
            refused.push(format!("{what} {key:?}: {e}"));
            Ok(())
        }
    }
}
