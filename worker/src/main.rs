//! `mnist-worker`: the training worker as a program. Parses the flags, sets
//! up logging and the signal handlers (SIGTERM or Ctrl-C: release the held
//! trials, then exit 0; a second signal exits at once), and runs
//! [`mnist_worker::run`].

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use mnist_worker::{DeviceSelection, WorkerConfig};

/// The training worker: runs the trials a coordinator hands out, one per device.
///
/// It registers this machine's devices with the coordinator, trains each
/// assigned trial with the training core, reports the study's metric after
/// every epoch (stopping when the pruner says so), completes the trial with
/// its test metrics, and uploads the plots, the MLflow model directory and
/// the weights. When MNIST is not in --data-dir it is fetched from the
/// coordinator and verified, so a cluster node needs only --coordinator.
///
/// Examples:
///
///   mnist-worker --coordinator http://10.0.0.5:50051                 (every GPU, else the CPU)
///
///   mnist-worker --coordinator http://10.0.0.5:50051 --devices cuda:0,cuda:1 --worker-id gpu-node-7
///
///   mnist-worker --devices cpu --study mnist-cnn --exit-when-idle    (finish one study, then exit)
///
/// SIGTERM or Ctrl-C gives the running trials back to the coordinator at
/// once (they are re-queued), then the worker exits with status 0.
#[derive(Debug, Parser)]
// Negative numbers are values (`--poll-seconds -1` is then refused by name).
#[command(name = "mnist-worker", version, about, long_about, allow_negative_numbers = true)]
struct Args {
    /// The coordinator's address.
    #[arg(long, env = "MNIST_COORDINATOR", default_value = "http://127.0.0.1:50051")]
    coordinator: String,

    /// Devices to train on, one trial at a time each: `all` (every GPU, or
    /// the CPU when there is none), `cpu`, or a list such as `cuda:0,cuda:1`.
    #[arg(long, default_value = "all")]
    devices: DeviceSelection,

    /// Local MNIST directory. Files missing there are fetched from the
    /// coordinator and verified by SHA-256.
    #[arg(long, env = "MNIST_DATA_DIR", default_value = mnist_common::mnist::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,

    /// A persistent worker id (1-128 of A-Z a-z 0-9 . _ : -). With the same id
    /// a restarted worker gets back the trials it held. Default: the
    /// coordinator assigns one.
    #[arg(long, env = "MNIST_WORKER_ID")]
    worker_id: Option<String>,

    /// Take trials from this study only. Default: the oldest running study.
    #[arg(long)]
    study: Option<String>,

    /// Where each trial's model, metrics and plots are written before they
    /// are uploaded (`<work-dir>/<study>-<hash>/trial-<n>/`: the study's name
    /// made safe and shortened, and a hash of the full name).
    #[arg(long, default_value = "runs/worker")]
    work_dir: PathBuf,

    /// Keep the local copy of the artifacts after they were uploaded.
    #[arg(long)]
    keep_artifacts: bool,

    /// Exit after this many trials (over all devices).
    #[arg(long)]
    max_trials: Option<usize>,

    /// Exit once no study is running (or --study is no longer running)
    /// instead of waiting for new work.
    #[arg(long)]
    exit_when_idle: bool,

    /// How long each request for work waits on the coordinator when there
    /// is none (long poll), in seconds.
    #[arg(long, default_value_t = 2.0)]
    poll_seconds: f64,

    /// Longest pause between attempts to reach an unreachable coordinator,
    /// in seconds (the pause doubles from 0.2 s up to this).
    #[arg(long, default_value_t = 10.0)]
    max_backoff_seconds: f64,

    /// libtorch CPU threads per process. Default: libtorch's choice (the core count).
    #[arg(long)]
    torch_threads: Option<i32>,

    /// The host name to register. Default: this machine's.
    #[arg(long)]
    hostname: Option<String>,

    /// A label shown by `mnistctl workers`, as KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,

    /// More logging (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    Ok(mnist_common::flags::seconds(name, v, false)?)
}

fn config(a: &Args) -> anyhow::Result<WorkerConfig> {
    let mut c = WorkerConfig::new(a.coordinator.trim());
    c.devices = a.devices.clone();
    c.data_dir = a.data_dir.clone();
    c.worker_id = a.worker_id.clone().filter(|s| !s.is_empty());
    c.study = a.study.clone().filter(|s| !s.is_empty());
    c.work_dir = a.work_dir.clone();
    c.keep_artifacts = a.keep_artifacts;
    c.max_trials = a.max_trials;
    c.exit_when_idle = a.exit_when_idle;
    c.poll_wait = seconds("poll-seconds", a.poll_seconds)?;
    c.max_backoff = seconds("max-backoff-seconds", a.max_backoff_seconds)?;
    c.torch_threads = a.torch_threads;
    c.labels = a.labels.clone();
    c.hostname = a.hostname.clone();
    Ok(c)
}

/// Resolves on SIGTERM or Ctrl-C.
async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn main_async(args: Args) -> anyhow::Result<()> {
    let cfg = config(&args)?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        signal().await;
        tracing::info!("shutting down: releasing the running trials");
        stop.send_replace(true);
        signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    match mnist_worker::run(cfg, stop_rx).await {
        Ok(summary) => tracing::info!(worker = %summary.worker_id, "exiting"),
        // A signal before the worker got going is a clean stop too.
        Err(mnist_worker::WorkerError::Shutdown) => tracing::info!("stopped before the worker started"),
        Err(e) => return Err(anyhow::Error::new(e).context("the worker stopped")),
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    mnist_common::logging::init_stderr(mnist_common::logging::default_filter(args.verbose));
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match rt.block_on(main_async(args)) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {}", mnist_common::logging::error_chain(e.as_ref()));
            1
        }
    };
    // A training thread may still be inside an epoch (its trial was already
    // released); do not wait for it.
    rt.shutdown_timeout(Duration::from_millis(500));
    std::process::exit(code);
}
