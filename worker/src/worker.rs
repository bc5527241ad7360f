//! The worker as a whole ([`run`]): resolve the devices, register with the
//! coordinator, make sure the data set is here (fetching it when not), load
//! it once, run one [`slot`](crate::slot) task per device, and on shutdown
//! wait briefly for the training threads to reach an epoch boundary.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mnist_proto::v1 as pb;

use crate::client::{request, Cancel, CallError, Client};
use crate::config::WorkerConfig;
use crate::error::WorkerError;
use crate::slot::{self, Shared, SlotContext, Tally};

/// What a worker did before it exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The id it ran under.
    pub worker_id: String,
    /// Its device slots ("cpu", "cuda:0", ...).
    pub devices: Vec<String>,
    /// Trials by ending.
    pub trials: Tally,
}

/// The host name to register.
fn hostname(cfg: &WorkerConfig) -> String {
    cfg.hostname
        .clone()
        .or_else(|| hostname::get().ok().map(|h| h.to_string_lossy().into_owned()))
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Runs a worker until `shutdown` turns true, `--max-trials` is reached, or
/// (with `exit_when_idle`) no study is running.
pub async fn run(config: WorkerConfig, shutdown: Cancel) -> Result<Summary, WorkerError> {
    config.check()?;
    if let Some(n) = config.torch_threads {
        tch::set_num_threads(n);
    }
    let slots = crate::devices::resolve(&config.devices)?;
    let client = Client::new(&config.coordinator, config.initial_backoff, config.max_backoff)?;

    let mut labels: HashMap<String, String> = config.labels.iter().cloned().collect();
    labels.entry("version".into()).or_insert_with(|| env!("CARGO_PKG_VERSION").to_string());
    labels.entry("pid".into()).or_insert_with(|| std::process::id().to_string());
    labels.entry("torch".into()).or_insert_with(mnist_trainer::device::torch_version);
    let mut registration = pb::RegisterWorkerRequest {
        worker_id: config.worker_id.clone().unwrap_or_default(),
        hostname: hostname(&config),
        devices: slots.iter().map(|s| s.info.clone()).collect(),
        labels,
    };
    let worker_id = register(&client, &registration, shutdown.clone()).await?;
    registration.worker_id = worker_id.clone();
    let devices: Vec<String> = slots.iter().map(|s| s.info.name.clone()).collect();
    tracing::info!(worker = %worker_id, coordinator = %client.url(), devices = %devices.join(","), "registered");

    crate::dataset::ensure(&client, &config.data_dir, shutdown.clone()).await?;
    let dir = config.data_dir.clone();
    let data = tokio::task::spawn_blocking(move || mnist_common::mnist::load(&dir))
        .await
        .map_err(|e| WorkerError::Config(format!("loading MNIST panicked: {e}")))??;
    let data = Arc::new(data);

    let shared = Arc::new(Shared {
        client,
        config,
        worker_id: worker_id.clone(),
        registration,
        shutdown: shutdown.clone(),
        started: AtomicUsize::new(0),
        live_trainings: Arc::new(AtomicUsize::new(0)),
    });
    let tasks: Vec<_> = slots
        .into_iter()
        .map(|s| tokio::spawn(slot::run(SlotContext { shared: shared.clone(), slot: s, data: data.clone() })))
        .collect();
    let mut tally = Tally::default();
    for t in tasks {
        match t.await {
            Ok(t) => tally = tally.merge(t),
            Err(e) => tracing::error!("a slot task failed: {e}"),
        }
    }
    wait_for_training(&shared, Duration::from_secs(10)).await;
    // Listed offline at once (a courtesy: the worker timeout does it anyway).
    let bye = pb::DeregisterWorkerRequest { worker_id: worker_id.clone() };
    if let Err(e) = shared.client.worker().deregister_worker(request(bye, Duration::from_secs(2))).await {
        tracing::debug!("could not tell the coordinator this worker stopped: {}", e.message());
    }
    tracing::info!(
        worker = %worker_id,
        complete = tally.complete,
        pruned = tally.pruned,
        failed = tally.failed,
        released = tally.released,
        dropped = tally.dropped,
        "worker done"
    );
    Ok(Summary { worker_id, devices, trials: tally })
}

/// Waits up to `grace` for training threads to stop at an epoch boundary.
async fn wait_for_training(shared: &Shared, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    let live = || shared.live_trainings.load(Ordering::SeqCst);
    if live() > 0 {
        tracing::info!(threads = live(), "waiting for training to stop at the end of its epoch");
    }
    while live() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `RegisterWorker`, retried until the coordinator answers.
async fn register(client: &Client, req: &pb::RegisterWorkerRequest, mut shutdown: Cancel) -> Result<String, WorkerError> {
    let r = client
        .retry("RegisterWorker", Some(&mut shutdown), None, |c| {
            let req = req.clone();
            async move { c.worker().register_worker(request(req, Duration::from_secs(30))).await }
        })
        .await;
    match r {
        Ok(resp) => {
            for s in &resp.running {
                tracing::info!(slot = s.slot, study = %s.study_name, trial = s.number, "this worker still holds a trial; it is resumed");
            }
            Ok(resp.worker_id)
        }
        Err(CallError::Cancelled) => Err(WorkerError::Shutdown),
        Err(CallError::Lost(s)) | Err(CallError::Refused(s)) | Err(CallError::GaveUp(s)) => {
            Err(WorkerError::Refused { call: "RegisterWorker", status: s.message().to_string() })
        }
    }
}
