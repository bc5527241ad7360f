//! One trial from assignment to its end (the session): start the heartbeat
//! task, train on a blocking thread with the reporting hook, then finish the
//! trial the way its ending demands:
//!
//! | ending                         | call                                  |
//! |--------------------------------|---------------------------------------|
//! | trained all epochs             | `CompleteTrial(COMPLETE)`, then upload |
//! | the pruner said stop           | `CompleteTrial(PRUNED)`               |
//! | diverged / bad configuration   | `FailTrial(retryable = false)`        |
//! | libtorch error (out of memory) | `FailTrial(retryable = true)`         |
//! | the study was stopped          | `ReleaseTrial`                        |
//! | worker shutting down           | `ReleaseTrial` at once (a pruned trial is still completed as PRUNED) |
//! | lease lost                     | nothing: drop it                      |
//!
//! Shutdown never cancels a final call at once: it gets a few seconds more,
//! then a completion or failure that is still unacknowledged gives the trial
//! back instead of leaving it RUNNING until its lease expires.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mnist_common::config::TrainConfig;
use mnist_proto::v1 as pb;
use mnist_trainer::run::RunArtifacts;
use mnist_trainer::TrainError;
use tokio::time::Instant;

use crate::client::{cancelled, request, CallError, Client};
use crate::control::{Control, StopReason};
use crate::objective::{final_metrics, Objective};
use crate::reporter::Reporter;
use crate::slot::SlotContext;
use crate::training::{self, Finished, Job};

/// How a trial ended, from this worker's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialEnd {
    /// Completed with a value.
    Complete,
    /// Completed as PRUNED.
    Pruned,
    /// Failed (re-queued or not, as the coordinator decided).
    Failed,
    /// Given back (study stopped, or worker shutting down).
    Released,
    /// Dropped: the lease was lost, or the final call was refused.
    Dropped,
}

/// At most this many bytes of the study name are kept readable in its
/// directory name (the rest is told apart by the hash).
const READABLE_PREFIX: usize = 48;

/// A directory name for a study: a readable prefix of the name (`[A-Za-z0-9._-]`
/// kept, the rest `_`, at most [`READABLE_PREFIX`] bytes), then 16 hex digits
/// of the SHA-256 of the full name. Distinct names never share a directory
/// ("a b" and "a_b", or two non-ASCII names of the same length, did), and
/// every name the coordinator accepts (up to 512 characters) fits a file
/// name (longer than 255 bytes failed, and the trial had no artifacts).
fn study_dir_name(s: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut prefix: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
        .take(READABLE_PREFIX)
        .collect();
    if prefix.is_empty() || prefix.starts_with('.') {
        prefix.insert_str(0, "study_");
    }
    let hash = Sha256::digest(s.as_bytes());
    format!("{prefix}-{}", hex::encode(&hash[..8]))
}

/// Where a trial's artifacts are written locally.
pub fn artifact_dir(work_dir: &std::path::Path, study: &str, number: u64) -> PathBuf {
    work_dir.join(study_dir_name(study)).join(format!("trial-{number}"))
}

/// How long a trial's final call (`CompleteTrial`, `FailTrial`,
/// `ReleaseTrial`) may still take once the worker is shutting down.
const SHUTDOWN_CALL_GRACE: Duration = Duration::from_secs(5);

/// How long a pruned trial may still take to evaluate the test set once the
/// worker is shutting down; after that it is completed as PRUNED without its
/// test metrics. Short, so that a shutdown with the final call's grace
/// stays within common kill windows (`docker stop` waits 10 s).
const SHUTDOWN_PRUNED_GRACE: Duration = Duration::from_secs(2);

/// Decrements the live-training counter when the training thread ends.
struct LiveGuard(Arc<std::sync::atomic::AtomicUsize>);
impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs one assigned trial to its end.
pub async fn run(ctx: &SlotContext, a: pb::TrialAssignment) -> TrialEnd {
    let lease = a.lease.unwrap_or_default();
    let (trial_id, number, token) = (a.trial_id, a.number, lease.token);
    tracing::info!(
        study = %a.study_name,
        trial = number,
        device = %ctx.slot.info.name,
        retries = a.retries,
        resumed = a.resumed,
        params = %crate::slot::params_text(&a.params),
        "trial started"
    );
    let session = Session { ctx, trial_id, number, token };
    let config: TrainConfig = match serde_json::from_str(&a.train_config_json) {
        Ok(c) => c,
        Err(e) => return session.fail(&format!("the trial's training configuration is not valid: {e}"), false).await,
    };
    if let Err(e) = config.validate() {
        return session.fail(&format!("the trial's training configuration is not valid: {e}"), false).await;
    }
    let objective = match Objective::parse(&a.metric) {
        Ok(o) => o,
        Err(e) => return session.fail(&e, false).await,
    };
    let control = Arc::new(Control::default());
    let heartbeat = tokio::spawn(crate::heartbeat::run(
        ctx.shared.client.clone(),
        trial_id,
        token,
        ctx.shared.worker_id.clone(),
        Duration::from_millis(u64::from(lease.heartbeat_interval_ms.max(50))),
        control.clone(),
    ));
    let _abort_heartbeat = AbortOnDrop(heartbeat);

    let job = Job {
        config,
        device: ctx.slot.device,
        data: ctx.data.clone(),
        artifact_dir: artifact_dir(&ctx.shared.config.work_dir, &a.study_name, number),
    };
    let reporter = Reporter {
        client: ctx.shared.client.clone(),
        trial_id,
        number,
        token,
        objective,
        control: control.clone(),
    };
    let handle = tokio::runtime::Handle::current();
    let c2 = control.clone();
    let shutdown2 = ctx.shared.shutdown.clone();
    ctx.shared.live_trainings.fetch_add(1, Ordering::SeqCst);
    let guard = LiveGuard(ctx.shared.live_trainings.clone());
    let mut join = tokio::task::spawn_blocking(move || {
        let _guard = guard;
        let mut reporter = reporter;
        let result = {
            let mut hook = |m: &mnist_trainer::EpochMetrics| handle.block_on(reporter.report(m));
            // A pruned trial keeps its curves and model too (for a look at why
            // it was pruned); a released or lost one writes nothing, nor does
            // a pruned one once the worker is shutting down.
            let want = || matches!(c2.reason(), None | Some(StopReason::Pruned { .. })) && !*shutdown2.borrow();
            training::run(&job, &mut hook, &want)
        };
        (result, job.artifact_dir)
    });

    // Wait for training, releasing at once on shutdown or a stopped study.
    let mut shutdown = ctx.shared.shutdown.clone();
    let mut stopped = control.subscribe();
    let mut released = false;
    // Set when the worker shuts down while a pruned trial finishes.
    let mut pruned_deadline: Option<Instant> = None;
    let joined = loop {
        tokio::select! {
            r = &mut join => break Some(r),
            _ = cancelled(Some(&mut shutdown)), if pruned_deadline.is_none() => {
                control.stop(StopReason::Shutdown);
                match control.reason() {
                    _ if released => return TrialEnd::Released,
                    Some(StopReason::LeaseLost(_)) => return TrialEnd::Dropped,
                    Some(StopReason::Pruned { .. }) => {
                        // The pruner has decided: the trial is completed as
                        // PRUNED, not given back (a release would re-queue
                        // it, clear its reports and train it again). Its
                        // test metrics are awaited briefly; no artifacts.
                        tracing::info!(trial = number, "shutting down: completing the pruned trial first");
                        pruned_deadline = Some(Instant::now() + SHUTDOWN_PRUNED_GRACE);
                    }
                    // The training thread stops at its next epoch boundary;
                    // the trial goes back to the queue now.
                    _ => return session.release("worker shutting down (SIGTERM or Ctrl-C)").await,
                }
            }
            _ = sleep_until(pruned_deadline) => break None,
            _ = cancelled(Some(&mut stopped)), if !released => {
                if let Some(StopReason::StudyStopped(why)) = control.reason() {
                    session.release(&format!("the study was stopped: {why}")).await;
                    released = true;
                } else {
                    // Pruned or lease lost: the thread stops at this epoch's end.
                    stopped = tokio::sync::watch::channel(false).1;
                }
            }
        }
    };
    let Some(joined) = joined else {
        // Shutting down, and the pruned trial's test-set evaluation is still
        // running: complete it as PRUNED with its last reported value.
        drop(_abort_heartbeat);
        tracing::warn!(
            trial = number,
            "the pruned trial did not finish its test-set evaluation within {} s of shutdown; completing it without test metrics",
            SHUTDOWN_PRUNED_GRACE.as_secs()
        );
        let value = match control.reason() {
            Some(StopReason::Pruned { value }) => Some(value),
            _ => None,
        };
        return session.complete(pb::TrialState::Pruned, value, HashMap::new()).await;
    };
    drop(_abort_heartbeat);
    let (result, dir) = match joined {
        Ok(r) => r,
        Err(e) => {
            if released {
                return TrialEnd::Released;
            }
            return session.fail(&format!("the training thread panicked: {e}"), true).await;
        }
    };
    match (control.reason(), result) {
        (Some(StopReason::LeaseLost(_)), _) => TrialEnd::Dropped,
        (Some(StopReason::StudyStopped(_)), _) | (Some(StopReason::Shutdown), _) => TrialEnd::Released,
        (_, Err(e)) => session.fail(&e.to_string(), training::retryable(&e)).await,
        (Some(StopReason::Pruned { value }), Ok(fin)) => {
            let metrics = final_metrics(&fin.epochs, &fin.test, fin.total_seconds);
            let end = session.complete(pb::TrialState::Pruned, Some(value), metrics).await;
            if end == TrialEnd::Pruned {
                session.upload(fin.artifacts, &dir).await;
            }
            end
        }
        (None, Ok(fin)) => session.finish(objective, fin, dir).await,
    }
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Aborts the heartbeat task when the trial ends, whichever way.
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The calls that end a trial.
struct Session<'a> {
    ctx: &'a SlotContext,
    trial_id: i64,
    number: u64,
    token: u64,
}

impl Session<'_> {
    /// COMPLETE with the final metric, then upload the artifacts.
    async fn finish(&self, objective: Objective, fin: Finished, dir: PathBuf) -> TrialEnd {
        let value = match objective.final_value(&fin.epochs, &fin.test) {
            Some(v) if !v.is_nan() => v,
            other => return self.fail(&format!("the final value of the metric is {other:?}, not a number"), false).await,
        };
        let metrics = final_metrics(&fin.epochs, &fin.test, fin.total_seconds);
        let end = self.complete(pb::TrialState::Complete, Some(value), metrics).await;
        if end == TrialEnd::Complete {
            self.upload(fin.artifacts, &dir).await;
        }
        end
    }

    /// Uploads a finished trial's artifacts (the coordinator takes them from
    /// the latest lease holder after completion) and removes the local copy
    /// unless `keep_artifacts`.
    async fn upload(&self, artifacts: Option<Result<RunArtifacts, TrainError>>, dir: &Path) {
        match artifacts {
            Some(Ok(run)) => {
                match crate::artifacts::upload_run(&self.ctx.shared.client, self.trial_id, self.token, &run).await {
                    Ok(up) => {
                        tracing::info!(trial = self.number, files = up.files, bytes = up.bytes, "artifacts uploaded");
                        for (name, why) in &up.refused {
                            tracing::error!(trial = self.number, artifact = %name, "the coordinator refused this artifact: {why}");
                        }
                        if !up.refused.is_empty() {
                            tracing::warn!(trial = self.number, local = %dir.display(), "the local copy of the artifacts is kept");
                        } else if !self.ctx.shared.config.keep_artifacts {
                            if let Err(e) = std::fs::remove_dir_all(dir) {
                                tracing::debug!(dir = %dir.display(), "could not remove the local artifacts: {e}");
                            }
                            // The study's folder too, once it is empty.
                            if let Some(parent) = dir.parent() {
                                let _ = std::fs::remove_dir(parent);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(trial = self.number, local = %dir.display(), "uploading the artifacts failed: {e}; the local copy is kept"),
                }
            }
            Some(Err(e)) => tracing::warn!(trial = self.number, "writing the artifacts failed: {e}"),
            None => {}
        }
    }

    async fn complete(&self, state: pb::TrialState, value: Option<f64>, metrics: HashMap<String, f64>) -> TrialEnd {
        let req = pb::CompleteTrialRequest {
            trial_id: self.trial_id,
            lease_token: self.token,
            value: value.filter(|v| !v.is_nan()),
            state: state as i32,
            metrics,
        };
        let r = self
            .final_call("CompleteTrial", |c| {
                let req = req.clone();
                async move { c.worker().complete_trial(request(req, Duration::from_secs(30))).await }
            })
            .await;
        match r {
            Ok(resp) => {
                let pruned = state == pb::TrialState::Pruned;
                tracing::info!(
                    trial = self.number,
                    value = ?value,
                    best = resp.is_best,
                    "trial {}",
                    if pruned { "pruned" } else { "complete" }
                );
                if pruned {
                    TrialEnd::Pruned
                } else {
                    TrialEnd::Complete
                }
            }
            Err(CallError::Cancelled) => self.give_back_unacknowledged("trial's completion").await,
            Err(e) => {
                tracing::warn!(trial = self.number, "completing the trial failed: {e}; dropping it");
                TrialEnd::Dropped
            }
        }
    }

    async fn fail(&self, reason: &str, retryable: bool) -> TrialEnd {
        tracing::warn!(trial = self.number, retryable, "trial failed: {reason}");
        let req = pb::FailTrialRequest { trial_id: self.trial_id, lease_token: self.token, reason: reason.to_string(), retryable };
        let r = self
            .final_call("FailTrial", |c| {
                let req = req.clone();
                async move { c.worker().fail_trial(request(req, Duration::from_secs(30))).await }
            })
            .await;
        match r {
            Ok(_) => {}
            Err(CallError::Cancelled) => return self.give_back_unacknowledged("trial's failure").await,
            Err(e) => tracing::warn!(trial = self.number, "reporting the failure failed: {e}"),
        }
        TrialEnd::Failed
    }

    /// After shutdown, the coordinator did not acknowledge the trial's `what`
    /// (its completion or failure) within the grace: the trial is given back.
    async fn give_back_unacknowledged(&self, what: &str) -> TrialEnd {
        tracing::warn!(
            trial = self.number,
            "the coordinator did not acknowledge the {what} within {} s of shutdown; giving the trial back",
            SHUTDOWN_CALL_GRACE.as_secs()
        );
        self.release(&format!("worker shutting down before the coordinator acknowledged the {what}")).await
    }

    /// Runs a trial's final call, retried while the coordinator is
    /// unreachable. Shutdown does not cancel it at once (that dropped a
    /// finished trial, left RUNNING until its lease expired and then trained
    /// again): from then on it gets [`SHUTDOWN_CALL_GRACE`] more, then ends
    /// with [`CallError::Cancelled`].
    async fn final_call<T, F, Fut>(&self, what: &'static str, call: F) -> Result<T, CallError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut shutdown = self.ctx.shared.shutdown.clone();
        let grace = async move {
            cancelled(Some(&mut shutdown)).await;
            tokio::time::sleep(SHUTDOWN_CALL_GRACE).await;
        };
        tokio::select! {
            r = self.ctx.shared.client.retry(what, None, None, call) => r,
            _ = grace => Err(CallError::Cancelled),
        }
    }

    /// Gives the trial back: retried while the coordinator is unreachable,
    /// and, once the worker shuts down, for [`SHUTDOWN_CALL_GRACE`] more at
    /// most (a release after a STOP answer used to retry forever, and the
    /// worker ignored SIGTERM while the coordinator was down).
    async fn release(&self, reason: &str) -> TrialEnd {
        let req = pb::ReleaseTrialRequest { trial_id: self.trial_id, lease_token: self.token, reason: reason.to_string() };
        let r = self
            .final_call("ReleaseTrial", |c| {
                let req = req.clone();
                async move { c.worker().release_trial(request(req, Duration::from_secs(5))).await }
            })
            .await;
        match r {
            Ok(_) => tracing::info!(trial = self.number, %reason, "trial released"),
            Err(CallError::Lost(s)) => tracing::info!(trial = self.number, "nothing to release: {}", s.message()),
            Err(CallError::Cancelled) => tracing::warn!(
                trial = self.number,
                "the coordinator did not answer ReleaseTrial within {} s of shutdown; the trial is re-queued when its lease expires",
                SHUTDOWN_CALL_GRACE.as_secs()
            ),
            Err(e) => tracing::warn!(trial = self.number, "releasing the trial failed: {e}; it is re-queued when its lease expires"),
        }
        TrialEnd::Released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot of a worker whose coordinator is down (nothing listens on
    /// the port), with its shutdown switch.
    fn unreachable_slot() -> (SlotContext, tokio::sync::watch::Sender<bool>) {
        use mnist_common::mnist::{Mnist, Split};
        use std::sync::atomic::AtomicUsize;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        let client = Client::new(&url, Duration::from_millis(10), Duration::from_millis(50)).unwrap();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let shared = crate::slot::Shared {
            client,
            config: crate::WorkerConfig::new(url),
            worker_id: "w-test".into(),
            registration: pb::RegisterWorkerRequest::default(),
            shutdown: rx,
            started: AtomicUsize::new(0),
            live_trainings: Arc::new(AtomicUsize::new(0)),
        };
        let empty = || Split { images: Vec::new(), labels: Vec::new() };
        let ctx = SlotContext {
            shared: Arc::new(shared),
            slot: crate::devices::Slot { index: 0, device: tch::Device::Cpu, info: pb::Device::default() },
            data: Arc::new(Mnist { train: empty(), test: empty() }),
        };
        (ctx, tx)
    }

    /// The release after a STOP answer (not shutting down yet) retries
    /// while the coordinator is down, and still ends once the worker is
    /// told to shut down.
    #[tokio::test]
    async fn a_release_to_an_unreachable_coordinator_ends_on_shutdown() {
        let (ctx, shutdown) = unreachable_slot();
        let session = Session { ctx: &ctx, trial_id: 1, number: 0, token: 1 };
        let release = session.release("the study was stopped");
        tokio::pin!(release);
        // It keeps trying while the worker runs ...
        tokio::select! {
            _ = &mut release => panic!("the release gave up while the worker was running"),
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        // ... and ends after shutdown (the grace is 5 s; the limit here
        // only keeps a regression from hanging the test run).
        shutdown.send_replace(true);
        let end = tokio::time::timeout(Duration::from_secs(120), release).await;
        assert_eq!(end.ok(), Some(TrialEnd::Released), "the release ignored the shutdown");
    }

    #[test]
    fn study_names_become_distinct_safe_directories() {
        let name = study_dir_name("mnist-cnn");
        assert!(name.starts_with("mnist-cnn-") && name.len() == "mnist-cnn-".len() + 16, "{name}");
        assert!(study_dir_name("a/b c").starts_with("a_b_c-"));
        assert!(study_dir_name("..").starts_with("study_..-"));
        assert!(study_dir_name("").starts_with("study_-"));
        // Names that map to the same readable prefix stay apart.
        assert_ne!(study_dir_name("a b"), study_dir_name("a_b"));
        assert_ne!(study_dir_name("äöü"), study_dir_name("ßßß"));
        let long_a = format!("{}a", "x".repeat(511));
        let long_b = format!("{}b", "x".repeat(511));
        assert_ne!(study_dir_name(&long_a), study_dir_name(&long_b));
        // 512 characters of up to 4 bytes each still make a valid file name.
        let wide = "😀".repeat(512);
        assert!(study_dir_name(&wide).len() <= 255);
        assert!(study_dir_name(&long_a).len() <= 255);
        assert_eq!(study_dir_name("s 1"), study_dir_name("s 1"), "stable across calls");
        let d = artifact_dir(std::path::Path::new("runs"), "s 1", 3);
        assert_eq!(d, PathBuf::from(format!("runs/{}/trial-3", study_dir_name("s 1"))));
    }
}
