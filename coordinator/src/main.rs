//! `mnist-coordinator`: the tuning coordinator as a program.
//!
//! It serves the `mnist.tuning.v1` gRPC API on `--listen`, keeps the studies
//! in the Optuna-compatible SQLite database `--db`, streams the MNIST files of
//! `--data-dir` to workers that have none, and stops cleanly on Ctrl-C or
//! SIGTERM (in-flight calls finish, the database is flushed).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mnist_coordinator::{server, ServerConfig};

/// The tuning coordinator: owns the studies and hands trials to workers over gRPC.
///
/// Examples:
///
///   mnist-coordinator --listen 0.0.0.0:50051 --db studies/mnist.db --data-dir data/mnist
///
///   mnist-coordinator --listen 127.0.0.1:0 --db /tmp/t.db --lease-seconds 10   (any free port)
///
/// Point workers at it with `mnist-worker --coordinator http://HOST:50051`, and
/// `mnistctl` with `--coordinator` or MNISTCTL_COORDINATOR. The database is an
/// Optuna RDB storage: `optuna.load_study(study_name=..., storage="sqlite:///studies/mnist.db")`
/// and optuna-dashboard read live studies from it.
#[derive(Debug, Parser)]
// Negative numbers are values (`--lease-seconds -1` is then refused by name).
#[command(name = "mnist-coordinator", version, about, long_about, allow_negative_numbers = true)]
struct Args {
    /// Address to serve gRPC on. Port 0 picks a free port (printed at start).
    #[arg(long, env = "MNIST_COORDINATOR_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,

    /// The SQLite study database (created when missing; Optuna schema v12).
    #[arg(long, env = "MNIST_COORDINATOR_DB", default_value = "study.db")]
    db: PathBuf,

    /// The MNIST directory served to workers by FetchDataset (the four idx
    /// files, .gz or raw). Default: MNIST_DATA_DIR when set, else none.
    #[arg(long, env = "MNIST_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Where uploaded artifacts are stored. Default: `<db>.artifacts/` next to the database.
    #[arg(long)]
    artifact_dir: Option<PathBuf>,

    /// Seconds a trial's lease lasts without a heartbeat; after that the trial
    /// is re-queued (or failed, once its retries are used up).
    #[arg(long, default_value_t = 60.0)]
    lease_seconds: f64,

    /// Seconds between heartbeats asked of workers. Default: a quarter of the lease.
    #[arg(long)]
    heartbeat_seconds: Option<f64>,

    /// Seconds between reaper sweeps (expired leases, study timeouts).
    #[arg(long, default_value_t = 1.0)]
    reaper_seconds: f64,

    /// After a restart, leases found in the database are extended to at least
    /// now + this many seconds, so their workers can reconnect. Default: the lease length.
    #[arg(long)]
    restart_grace_seconds: Option<f64>,

    /// A worker not heard from for this many seconds is shown offline (one
    /// that stops cleanly says so and is shown offline at once).
    #[arg(long, default_value_t = 90.0)]
    worker_timeout_seconds: f64,

    /// Largest artifact file accepted, in MiB.
    #[arg(long, default_value_t = 4096)]
    max_artifact_mib: u64,

    /// At most this many database operations share one commit (group commit).
    #[arg(long, default_value_t = 4096)]
    max_write_batch: usize,

    /// Seconds a graceful shutdown waits for in-flight calls.
    #[arg(long, default_value_t = 5.0)]
    shutdown_grace_seconds: f64,

    /// MLflow tracking: every study and trial is logged there through the
    /// outbox in the study database.
    #[command(flatten)]
    mlflow: mnist_mlflow::MlflowArgs,

    /// More logging (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    Ok(mnist_common::flags::seconds(name, v, false)?)
}

fn config(args: &Args) -> anyhow::Result<ServerConfig> {
    let mut cfg = ServerConfig::new(args.listen, args.db.clone());
    let c = &mut cfg.coordinator;
    c.data_dir = args.data_dir.clone().filter(|d| !d.as_os_str().is_empty());
    c.artifact_dir = args.artifact_dir.clone();
    c.lease_duration = seconds("lease-seconds", args.lease_seconds)?;
    c.heartbeat_interval = args.heartbeat_seconds.map(|s| seconds("heartbeat-seconds", s)).transpose()?;
    c.reaper_interval = seconds("reaper-seconds", args.reaper_seconds)?;
    c.restart_grace = match args.restart_grace_seconds {
        Some(s) => seconds("restart-grace-seconds", s)?,
        None => c.lease_duration,
    };
    c.worker_timeout = seconds("worker-timeout-seconds", args.worker_timeout_seconds)?;
    if let Some(h) = c.heartbeat_interval {
        anyhow::ensure!(
            h < c.lease_duration,
            "--heartbeat-seconds ({}) must be shorter than --lease-seconds ({}), or every lease expires between two heartbeats",
            h.as_secs_f64(),
            c.lease_duration.as_secs_f64()
        );
    }
    anyhow::ensure!(args.max_artifact_mib >= 1, "--max-artifact-mib must be at least 1 (every upload would be refused)");
    c.max_artifact_bytes = args.max_artifact_mib.saturating_mul(1 << 20);
    anyhow::ensure!(args.max_write_batch > 0, "--max-write-batch must be at least 1");
    c.storage.max_batch_ops = args.max_write_batch;
    c.mlflow = args.mlflow.config()?;
    cfg.shutdown_grace = seconds("shutdown-grace-seconds", args.shutdown_grace_seconds)?;
    Ok(cfg)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
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
    // One line naming the problem and its causes (as mnistctl and
    // mnist-worker print them), exit status 1.
    if let Err(e) = rt.block_on(main_async(args)) {
        let _ = writeln!(std::io::stderr(), "error: {}", mnist_common::logging::error_chain(e.as_ref()));
        std::process::exit(1);
    }
}

async fn main_async(args: Args) -> anyhow::Result<()> {
    let cfg = config(&args)?;
    if let Some(d) = &cfg.coordinator.data_dir {
        if !d.is_dir() {
            tracing::warn!(dir = %d.display(), "the data directory does not exist; FetchDataset will fail until it does");
        }
    }
    let running = server::start(cfg).await.context("starting the coordinator")?;
    // One machine-readable line on stdout (tests and scripts read the port).
    // A closed stdout (the reader took the line and left) is not an error.
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "mnist-coordinator listening on {}", running.url()).and_then(|_| out.flush());
    }
    tracing::info!(url = %running.url(), db = %args.db.display(), "serving");
    let stop = running.stop_handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        // Stop first: nothing that follows may keep the server from stopping.
        stop.send_replace(true);
        tracing::info!("shutting down");
    });
    running.wait().await.context("the coordinator stopped")?;
    Ok(())
}
