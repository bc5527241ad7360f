//! One device slot's loop: acquire a trial (long poll), run it, repeat, until
//! the worker shuts down, `--max-trials` is reached, or (with
//! `--exit-when-idle`) no study is left to work on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mnist_common::mnist::Mnist;
use mnist_proto::v1 as pb;
use tonic::Code;

use crate::client::{cancelled, request, Cancel, CallError, Client};
use crate::config::WorkerConfig;
use crate::devices::Slot;
use crate::trial::{self, TrialEnd};

/// What every slot of a worker shares.
#[derive(Debug)]
pub struct Shared {
    /// The connection.
    pub client: Client,
    /// The worker's settings.
    pub config: WorkerConfig,
    /// The id the coordinator knows this worker by.
    pub worker_id: String,
    /// The registration, repeated when the coordinator forgot the worker.
    pub registration: pb::RegisterWorkerRequest,
    /// Turns true on shutdown.
    pub shutdown: Cancel,
    /// Trials started by all slots (for `--max-trials`).
    pub started: AtomicUsize,
    /// Training threads still running (shutdown waits for them a little).
    pub live_trainings: Arc<AtomicUsize>,
}

/// What one slot works with.
#[derive(Debug)]
pub struct SlotContext {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The device.
    pub slot: Slot,
    /// The data set.
    pub data: Arc<Mnist>,
}

/// How many trials of each ending a slot saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// COMPLETE.
    pub complete: usize,
    /// PRUNED.
    pub pruned: usize,
    /// Failed.
    pub failed: usize,
    /// Released.
    pub released: usize,
    /// Dropped (lease lost).
    pub dropped: usize,
}

impl Tally {
    fn add(&mut self, e: TrialEnd) {
        match e {
            TrialEnd::Complete => self.complete += 1,
            TrialEnd::Pruned => self.pruned += 1,
            TrialEnd::Failed => self.failed += 1,
            TrialEnd::Released => self.released += 1,
            TrialEnd::Dropped => self.dropped += 1,
        }
    }

    /// The sum of two tallies.
    pub fn merge(self, o: Tally) -> Tally {
        Tally {
            complete: self.complete + o.complete,
            pruned: self.pruned + o.pruned,
            failed: self.failed + o.failed,
            released: self.released + o.released,
            dropped: self.dropped + o.dropped,
        }
    }
}

/// Parameters as `name=value` text for logs.
pub fn params_text(p: &HashMap<String, pb::ParamValue>) -> String {
    use pb::param_value::Kind;
    let mut v: Vec<String> = p
        .iter()
        .map(|(k, v)| {
            let s = match &v.kind {
                Some(Kind::FloatValue(f)) => format!("{f:.4e}"),
                Some(Kind::IntValue(i)) => i.to_string(),
                Some(Kind::StringValue(s)) => s.clone(),
                Some(Kind::BoolValue(b)) => b.to_string(),
                Some(Kind::NullValue(_)) | None => "null".into(),
            };
            format!("{k}={s}")
        })
        .collect();
    v.sort();
    v.join(" ")
}

/// What an acquire attempt gave.
enum Acquired {
    Trial(Box<pb::TrialAssignment>),
    Idle { reason: String, retry_after: Duration },
    /// The slot should stop (study gone with --exit-when-idle, shutdown, a refusal).
    Stop,
}

/// Runs the slot until it has nothing left to do.
pub async fn run(ctx: SlotContext) -> Tally {
    let shared = ctx.shared.clone();
    let mut tally = Tally::default();
    let mut shutdown = shared.shutdown.clone();
    let mut last_idle = String::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        if let Some(max) = shared.config.max_trials {
            if shared.started.fetch_add(1, Ordering::SeqCst) >= max {
                tracing::info!(slot = ctx.slot.index, max, "--max-trials reached");
                break;
            }
        }
        let got = acquire(&ctx).await;
        let unreserve = || {
            if shared.config.max_trials.is_some() {
                shared.started.fetch_sub(1, Ordering::SeqCst);
            }
        };
        match got {
            Acquired::Trial(a) => {
                last_idle.clear();
                if *shutdown.borrow() {
                    release_unstarted(&shared, &a).await;
                    break;
                }
                let end = trial::run(&ctx, *a).await;
                tally.add(end);
            }
            Acquired::Idle { reason, retry_after } => {
                unreserve();
                if reason != last_idle {
                    tracing::info!(slot = ctx.slot.index, "no trial to run: {reason}");
                    last_idle = reason;
                }
                if shared.config.exit_when_idle && !study_running(&shared).await {
                    tracing::info!(slot = ctx.slot.index, "no running study left; the slot exits (--exit-when-idle)");
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(retry_after) => {}
                    _ = cancelled(Some(&mut shutdown)) => break,
                }
            }
            Acquired::Stop => {
                unreserve();
                break;
            }
        }
    }
    tally
}

/// One `AcquireTrial`. The call itself is not cancelled on shutdown (a trial
/// handed out in its answer would be lost until its lease expires); it is
/// short (the long poll is `--poll-seconds`), and a trial that arrives after
/// shutdown is released at once.
async fn acquire(ctx: &SlotContext) -> Acquired {
    let shared = &ctx.shared;
    let mut shutdown = shared.shutdown.clone();
    let mut backoff = shared.client.backoff();
    let wait = shared.config.poll_wait.min(Duration::from_secs(30));
    loop {
        let req = pb::AcquireTrialRequest {
            worker_id: shared.worker_id.clone(),
            slot: ctx.slot.index,
            study_name: shared.config.study.clone().unwrap_or_default(),
            wait_ms: if *shutdown.borrow() { 0 } else { wait.as_millis() as u32 },
        };
        let status = match shared.client.worker().acquire_trial(request(req, wait + Duration::from_secs(15))).await {
            Ok(resp) => {
                let r = resp.into_inner();
                if backoff.attempts() > 0 {
                    tracing::info!("the coordinator is reachable again");
                }
                return match r.trial {
                    Some(t) => Acquired::Trial(Box::new(t)),
                    None => Acquired::Idle {
                        reason: r.idle_reason,
                        retry_after: Duration::from_millis(u64::from(r.retry_after_ms.clamp(50, 5000))),
                    },
                };
            }
            Err(s) => s,
        };
        match status.code() {
            Code::NotFound => {
                // The coordinator forgot this worker (a new database), or the
                // study does not exist (yet).
                if !reregister(shared).await {
                    return Acquired::Stop;
                }
                if let Some(study) = &shared.config.study {
                    if !study_exists(shared, study).await {
                        if shared.config.exit_when_idle {
                            tracing::info!(%study, "the study does not exist; the slot exits (--exit-when-idle)");
                            return Acquired::Stop;
                        }
                        return Acquired::Idle {
                            reason: format!("no study named {study:?} yet"),
                            retry_after: Duration::from_secs(2),
                        };
                    }
                }
            }
            Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated | Code::Unimplemented => {
                tracing::error!(slot = ctx.slot.index, "the coordinator refused AcquireTrial: {}; this slot stops", status.message());
                return Acquired::Stop;
            }
            _ => {
                if *shutdown.borrow() {
                    return Acquired::Stop;
                }
                let d = backoff.next_delay();
                let n = backoff.attempts();
                if n == 1 || n.is_power_of_two() {
                    tracing::warn!(
                        coordinator = %shared.client.url(),
                        retry_in_ms = d.as_millis() as u64,
                        "the coordinator is unreachable ({:?}: {}); retrying",
                        status.code(),
                        status.message()
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = cancelled(Some(&mut shutdown)) => return Acquired::Stop,
                }
            }
        }
    }
}

/// Registers again under the same id; false when the coordinator refuses.
pub async fn reregister(shared: &Shared) -> bool {
    let mut cancel = shared.shutdown.clone();
    let req = shared.registration.clone();
    let r = shared
        .client
        .retry("RegisterWorker", Some(&mut cancel), None, |c| {
            let req = req.clone();
            async move { c.worker().register_worker(request(req, Duration::from_secs(30))).await }
        })
        .await;
    match r {
        Ok(_) => true,
        Err(CallError::Cancelled) => false,
        Err(e) => {
            tracing::error!("registering again failed: {e}");
            false
        }
    }
}

async fn study_exists(shared: &Shared, name: &str) -> bool {
    let mut cancel = shared.shutdown.clone();
    let r = shared
        .client
        .retry("GetStudy", Some(&mut cancel), None, |c| {
            let req = pb::GetStudyRequest { name: name.to_string() };
            async move { c.study().get_study(request(req, Duration::from_secs(30))).await }
        })
        .await;
    r.is_ok()
}

/// Whether there is work to wait for: the `--study` is RUNNING, or (without
/// `--study`) any study is RUNNING.
async fn study_running(shared: &Shared) -> bool {
    let mut cancel = shared.shutdown.clone();
    let running = pb::StudyState::Running as i32;
    match &shared.config.study {
        Some(name) => {
            let r = shared
                .client
                .retry("GetStudy", Some(&mut cancel), None, |c| {
                    let req = pb::GetStudyRequest { name: name.clone() };
                    async move { c.study().get_study(request(req, Duration::from_secs(30))).await }
                })
                .await;
            matches!(r, Ok(s) if s.state == running)
        }
        None => {
            let r = shared
                .client
                .retry("ListStudies", Some(&mut cancel), None, |c| async move {
                    c.study().list_studies(request(pb::ListStudiesRequest {}, Duration::from_secs(30))).await
                })
                .await;
            matches!(r, Ok(l) if l.studies.iter().any(|s| s.state == running))
        }
    }
}

/// Gives back a trial that arrived after shutdown began.
async fn release_unstarted(shared: &Shared, a: &pb::TrialAssignment) {
    let token = a.lease.as_ref().map(|l| l.token).unwrap_or(0);
    let req = pb::ReleaseTrialRequest { trial_id: a.trial_id, lease_token: token, reason: "worker shutting down".into() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let r = shared
        .client
        .retry("ReleaseTrial", None, Some(deadline), |c| {
            let req = req.clone();
            async move { c.worker().release_trial(request(req, Duration::from_secs(5))).await }
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(trial = a.number, "releasing the trial failed: {e}");
    }
}
