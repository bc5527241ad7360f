//! MLflow from the command line: the single training run's logging (through
//! an outbox next to its output), and `mnistctl mlflow sync|status`, which
//! deliver or inspect any outbox: a training run's, or a coordinator's study
//! database.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use mnist_common::mlflow_model::{PYTHON_VERSION, PYTORCH_VERSION};
use mnist_mlflow::op::{torch_flavors, AliasRule};
use mnist_coordinator::storage::{DatabaseLock, StorageError};
use mnist_mlflow::{Access, Deliverer, MetricPoint, MlflowArgs, MlflowConfig, MlflowError, Op, Outbox, RunStatus};
use mnist_trainer::run::RunArtifacts;
use mnist_trainer::TrainOutcome;

/// The outbox file of a training run, inside its output directory.
pub const TRAIN_OUTBOX: &str = "mlflow-outbox.db";
/// The experiment of `mnistctl train` runs when none is given (apart from
/// any study's, which is named after the study).
const TRAIN_EXPERIMENT: &str = "mnist-train";
/// How long `train` keeps trying to deliver before it leaves the rest to `sync`.
const TRAIN_PATIENCE: Duration = Duration::from_secs(20);

/// Deliver or inspect an MLflow outbox.
#[derive(Debug, clap::Subcommand)]
pub enum MlflowCmd {
    /// Deliver everything waiting in an outbox (a study database, or a training
    /// run's `mlflow-outbox.db`) to the tracking server, in order and exactly once.
    #[command(after_help = "Examples:\n  mnistctl mlflow sync --db tune.db --mlflow-tracking-uri http://127.0.0.1:5000\n  MLFLOW_TRACKING_URI=http://mlflow:5000 mnistctl mlflow sync --db models/mlflow-outbox.db")]
    Sync(SyncArgs),
    /// Show what waits in an outbox and what MLflow refused.
    Status(StatusArgs),
    /// Delete delivered operations from an outbox (pending ones stay, and
    /// refused ones unless --refused), so that a long-lived study database
    /// does not keep growing.
    #[command(after_help = "Examples:\n  mnistctl mlflow prune --db tune.db\n  mnistctl mlflow prune --db tune.db --older-than-days 7")]
    Prune(PruneArgs),
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// The SQLite file holding the outbox.
    #[arg(long)]
    pub db: PathBuf,
    /// Keep what was delivered in the last this many days. Default: delete
    /// everything delivered.
    #[arg(long, default_value_t = 0.0)]
    pub older_than_days: f64,
    /// Also delete the refused operations (read them first with `mnistctl
    /// mlflow status`): what MLflow will never take, such as a param whose
    /// value changed, otherwise stays refused for good.
    #[arg(long)]
    pub refused: bool,
}

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// The SQLite file holding the outbox.
    #[arg(long)]
    pub db: PathBuf,
    /// Give up after the server stayed unreachable this many seconds.
    #[arg(long, default_value_t = 60.0)]
    pub patience: f64,
    /// Try again the operations MLflow refused before (after fixing the cause).
    /// A refused tag, run status or file that a later operation replaced is
    /// not sent again, so a retry never sets a run back to older values.
    #[arg(long)]
    pub retry_refused: bool,
    /// The MLflow tracking server, e.g. http://127.0.0.1:5000 [env: MLFLOW_TRACKING_URI].
    /// Credentials come from MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (basic auth)
    /// or MLFLOW_TRACKING_TOKEN (bearer). The experiment and registered-model names are
    /// those stored with each operation when it was written.
    #[arg(long = "mlflow-tracking-uri", value_name = "URI")]
    pub mlflow_tracking_uri: Option<String>,
    /// Not read by sync (the stored operations carry their experiment); hidden,
    /// and refused when given.
    #[arg(long = "mlflow-experiment-name", alias = "mlflow_experiment_name", value_name = "NAME", hide = true)]
    pub mlflow_experiment_name: Option<String>,
    /// Not read by sync (the stored operations carry their model name); hidden,
    /// and refused when given.
    #[arg(long = "mlflow-model-name", value_name = "NAME", hide = true)]
    pub mlflow_model_name: Option<String>,
}

impl SyncArgs {
    /// The message for a naming flag given to sync, which does not read it.
    fn unused_flag(&self) -> Option<String> {
        let flag = if self.mlflow_experiment_name.is_some() {
            "--mlflow-experiment-name"
        } else if self.mlflow_model_name.is_some() {
            "--mlflow-model-name"
        } else {
            return None;
        };
        Some(format!(
            "{flag} does not apply to `mnistctl mlflow sync`: each stored operation carries the experiment and \
             registered-model names it was written with (give them to `mnistctl train`, `mnistctl tune` or the \
             coordinator); leave it out"
        ))
    }
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The SQLite file holding the outbox.
    #[arg(long)]
    pub db: PathBuf,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

/// Opens the outbox of an existing file: read-only for a command that only
/// looks. A file that is not a coordinator's study database or a training
/// run's outbox (MLflow's own `mlflow.db`, say) is refused and left unchanged.
async fn open_existing(db: &Path, access: Access) -> anyhow::Result<Outbox> {
    match Outbox::open_existing(db, access).await {
        Ok(outbox) => Ok(outbox),
        Err(e @ MlflowError::NotAnOutbox { .. }) => Err(e.into()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("opening the MLflow outbox in {}", db.display()))),
    }
}

/// Takes the locks a running coordinator holds on its study database, so that
/// an outbox has one sender: a coordinator delivers its own outbox, and a
/// second sender would race it (the same operation sent twice at once).
/// The file is first checked to be an outbox (read-only), so that nothing,
/// not even the lock file, is created next to a file that is not one.
async fn lock_outbox(db: &Path) -> anyhow::Result<DatabaseLock> {
    open_existing(db, Access::ReadOnly).await?.close().await;
    match mnist_coordinator::storage::lock_database_for(db, "mnistctl mlflow sync") {
        Ok(lock) => Ok(lock),
        Err(StorageError::Locked { holder, .. }) => anyhow::bail!(
            "{} is in use by another process ({holder}): a running coordinator delivers its own outbox (so does another \
             `mnistctl mlflow sync`), and a second sender would race it; let it deliver, or stop it and run this again",
            db.display()
        ),
        Err(e) => Err(anyhow::Error::new(e).context(format!("locking {}", db.display()))),
    }
}

pub fn run(cmd: MlflowCmd) -> anyhow::Result<()> {
    if let MlflowCmd::Sync(a) = &cmd {
        if let Some(msg) = a.unused_flag() {
            use clap::CommandFactory;
            crate::cli::Cli::command().error(clap::error::ErrorKind::ArgumentConflict, msg).exit();
        }
    }
    runtime()?.block_on(async move {
        match cmd {
            MlflowCmd::Sync(a) => sync(a).await,
            MlflowCmd::Status(a) => status(&a.db).await,
            MlflowCmd::Prune(a) => prune(a).await,
        }
    })
}

async fn sync(a: SyncArgs) -> anyhow::Result<()> {
    let patience = mnist_common::flags::seconds("patience", a.patience, true)?;
    let config = MlflowConfig::from_env_and(a.mlflow_tracking_uri.clone(), None, None)?;
    anyhow::ensure!(
        config.tracking_uri.is_some(),
        "no tracking server: set MLFLOW_TRACKING_URI or pass --mlflow-tracking-uri http://HOST:5000"
    );
    // Check that the file is an outbox before anything is created next to it
    // (the lock file), then take the coordinator's lock before SQLite opens
    // the file for writing.
    let lock = lock_outbox(&a.db).await?;
    let outbox = open_existing(&a.db, Access::ReadWrite).await?;
    if a.retry_refused {
        let r = outbox.retry_dead().await?;
        println!("{} refused operations put back in line", r.resent);
        if r.replaced > 0 {
            println!("{} refused operations not resent: later ones set the same tags, status or files", r.replaced);
        }
    }
    let before = outbox.backlog().await?;
    println!("{} operations to deliver to {}", before.pending, config.tracking_uri.as_deref().unwrap_or(""));
    let report = Deliverer::new(outbox.clone(), &config)?.drain(patience).await?;
    println!("delivered {}, refused {}, still pending {}", report.delivered, report.dead, report.pending);
    remove_delivered_stages(&outbox, &a.db, &Default::default()).await;
    outbox.close().await;
    // Only after SQLite closed the file: closing the lock's handle on it would
    // drop SQLite's own locks (POSIX record locks belong to the process).
    drop(lock);
    if let Some(why) = report.blocked_by {
        anyhow::bail!("delivery stopped with {} operations pending: {why}", report.pending);
    }
    if report.dead > 0 {
        anyhow::bail!("MLflow refused {} operations; see `mnistctl mlflow status --db {}`", report.dead, a.db.display());
    }
    Ok(())
}

async fn prune(a: PruneArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.older_than_days.is_finite() && a.older_than_days >= 0.0,
        "--older-than-days must be a number of days ≥ 0, got {}",
        a.older_than_days
    );
    // Deleting refused operations changes what a running sender (a
    // coordinator, `tune`, `sync`) counts: only with the outbox to ourselves.
    let lock = if a.refused {
        Some(lock_outbox(&a.db).await?)
    } else {
        None
    };
    let outbox = open_existing(&a.db, Access::ReadWrite).await?;
    let cutoff = chrono::Utc::now().timestamp_millis() - (a.older_than_days * 86_400_000.0) as i64;
    let n = outbox.prune_delivered(cutoff).await?;
    let mut given_up = std::collections::HashSet::new();
    if a.refused {
        given_up = outbox.undelivered_runs().await?.into_iter().filter(|r| r.refused > 0).map(|r| r.run_key).collect();
        let d = outbox.delete_dead().await?;
        println!("deleted {d} refused operations");
    }
    remove_delivered_stages(&outbox, &a.db, &given_up).await;
    let b = outbox.backlog().await?;
    outbox.close().await;
    drop(lock);
    println!("deleted {n} delivered operations; kept {} delivered, {} pending, {} refused", b.delivered, b.pending, b.dead);
    Ok(())
}

async fn status(db: &Path) -> anyhow::Result<()> {
    let outbox = open_existing(db, Access::ReadOnly).await?;
    let b = outbox.backlog().await?;
    println!("pending:   {}", b.pending);
    println!("delivered: {}", b.delivered);
    println!("refused:   {}", b.dead);
    if let Some(ms) = b.oldest_pending_ms {
        let when = chrono::DateTime::from_timestamp_millis(ms).map(|d| d.to_rfc3339()).unwrap_or_default();
        println!("oldest pending since {when}");
    }
    if let Some(e) = &b.last_error {
        println!("waiting because: {e}");
    }
    for (id, kind, run, why) in outbox.dead(20).await? {
        println!("refused #{id} {kind} ({run}): {why}");
    }
    outbox.close().await;
    Ok(())
}

/// Where a training run's files wait for MLflow, next to its outbox:
/// `<output-dir>/mlflow-pending/<run id>/`. The upload operations name these
/// copies, not the files in the output directory, so a later run into the
/// same directory cannot change what an earlier, not yet delivered run
/// uploads. A run's copies go once all its operations were delivered.
const PENDING_DIR: &str = "mlflow-pending";

/// Copies the run's files under its pending folder; returns the copies.
fn stage_files(dir: &Path, run_key: &str, files: &[(String, PathBuf)]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let id = run_key.rsplit('/').next().unwrap_or(run_key);
    let stage = dir.join(PENDING_DIR).join(id);
    files
        .iter()
        .map(|(name, path)| {
            let dest = stage.join(name);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::copy(path, &dest).with_context(|| format!("copying {} to {} for MLflow", path.display(), dest.display()))?;
            Ok((name.clone(), dest))
        })
        .collect()
}

/// Removes the pending copies of the training runs in the outbox at `db`
/// that are done with: MLflow received all of the run (the outbox knows its
/// MLflow run and nothing of it waits or was refused), or its refused
/// operations were just deleted (`given_up`). Anything else stays: a run
/// whose copies are made but whose operations are not written yet (another
/// `train` into the same directory), and any folder that is not a run's
/// (named other than a run id). Only for a training run's outbox; a failure
/// is a warning, never an error.
async fn remove_delivered_stages(outbox: &Outbox, db: &Path, given_up: &std::collections::HashSet<String>) {
    if db.file_name().and_then(|n| n.to_str()) != Some(TRAIN_OUTBOX) {
        return;
    }
    let Some(pending) = db.parent().map(|d| d.join(PENDING_DIR)).filter(|p| p.is_dir()) else { return };
    let waiting: std::collections::HashSet<String> = match outbox.undelivered_runs().await {
        Ok(runs) => runs.into_iter().map(|r| r.run_key).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot tell which runs MLflow received; their pending copies stay");
            return;
        }
    };
    let Ok(entries) = std::fs::read_dir(&pending) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_run_id = name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_run_id || !entry.path().is_dir() {
            continue;
        }
        let key = format!("train/{name}");
        let done = !waiting.contains(&key) && (given_up.contains(&key) || matches!(outbox.run(&key).await, Ok(Some(_))));
        if done {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove a delivered run's pending copies");
            }
        }
    }
    let _ = std::fs::remove_dir(&pending); // only when empty
}

/// The operations that log one training run: its params, per-epoch metric
/// histories, test metrics, plots, model directory and weights, the logged
/// model, and the registration (the alias moves when its test accuracy beats
/// the current champion's).
fn train_ops(
    cfg: &MlflowConfig,
    run_key: String,
    config: &mnist_common::config::TrainConfig,
    outcome: &TrainOutcome,
    files: &[(String, PathBuf)],
    device: &str,
) -> Vec<Op> {
    let now = chrono::Utc::now().timestamp_millis();
    let start = now - (outcome.epochs.iter().map(|e| e.epoch_seconds).sum::<f64>() * 1000.0) as i64;
    let host = hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    let tags = vec![("mnist.kind".to_string(), "train".to_string()), ("mnist.host".into(), host), ("mnist.device".into(), device.to_string())];
    let mut ops = vec![Op::StartRun {
        run_key: run_key.clone(),
        experiment: cfg.experiment_name.clone().unwrap_or_else(|| TRAIN_EXPERIMENT.into()),
        run_name: format!("train-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S")),
        parent_key: None,
        start_ms: start,
        tags,
        params: vec![],
    }];
    let params = serde_json::to_value(config)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .map(|m| {
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let mut metrics = Vec::new();
    let mut t = start;
    for e in &outcome.epochs {
        t += (e.epoch_seconds * 1000.0) as i64;
        let step = e.epoch as i64;
        // The same per-epoch metrics, by the same names, as a tuning trial reports.
        let mut epoch: Vec<(String, f64)> = mnist_worker::objective::epoch_metrics(e).into_iter().collect();
        epoch.sort_by(|a, b| a.0.cmp(&b.0));
        metrics.extend(epoch.into_iter().map(|(key, value)| MetricPoint { key, value, timestamp_ms: t, step }));
    }
    let last = outcome.epochs.len() as i64;
    let test = &outcome.test;
    for (k, v) in [("test_accuracy", test.accuracy), ("test_loss", test.loss), ("macro_f1", test.macro_f1)] {
        metrics.push(MetricPoint { key: k.into(), value: v, timestamp_ms: now, step: last });
    }
    for c in &test.per_class {
        metrics.push(MetricPoint { key: format!("f1_class_{}", c.class), value: c.f1, timestamp_ms: now, step: last });
    }
    ops.push(Op::Log { run_key: run_key.clone(), metrics, params, tags: vec![] });
    for (name, path) in files {
        ops.push(Op::Artifact { run_key: run_key.clone(), path: name.clone(), file: path.display().to_string() });
    }
    ops.push(Op::LogModel { run_key: run_key.clone(), artifact_path: "model".into(), time_ms: now, flavors: torch_flavors(PYTORCH_VERSION, PYTHON_VERSION) });
    ops.push(Op::Register {
        run_key: run_key.clone(),
        model_name: cfg.model_name.clone(),
        artifact_path: "model".into(),
        alias: cfg.alias.clone(),
        tags: vec![("source".into(), "mnistctl train".into()), ("metric".into(), "test_accuracy".into()), ("test_accuracy".into(), test.accuracy.to_string())],
        rule: Some(AliasRule { metric: "test_accuracy".into(), value: test.accuracy, maximize: true }),
    });
    ops.push(Op::SetStatus { run_key, status: RunStatus::Finished, end_ms: Some(now), metrics: vec![], tags: vec![] });
    ops
}

/// Logs a finished training run: writes it to the outbox in the output
/// directory, then delivers it when a tracking server is configured. MLflow
/// trouble never fails the training command; it says what to run later.
pub fn log_training_run(
    args: &MlflowArgs,
    config: &mnist_common::config::TrainConfig,
    outcome: &TrainOutcome,
    artifacts: &RunArtifacts,
    device: &str,
) -> anyhow::Result<()> {
    let cfg = args.config()?;
    // Absolute paths, in the operations and in the advice printed: `mnistctl
    // mlflow sync` may run from any directory.
    let dir = std::path::absolute(&artifacts.dir).with_context(|| format!("finding the absolute path of {}", artifacts.dir.display()))?;
    let db = dir.join(TRAIN_OUTBOX);
    let files: Vec<(String, PathBuf)> = mnist_worker::artifacts::files(artifacts)
        .into_iter()
        .map(|(name, path)| std::path::absolute(&path).map(|p| (name, p)))
        .collect::<std::io::Result<_>>()
        .context("finding the absolute paths of the run's files")?;
    let run_key = format!("train/{}", uuid::Uuid::new_v4().simple());
    let files = stage_files(&dir, &run_key, &files)?;
    let ops = train_ops(&cfg, run_key, config, outcome, &files, device);
    runtime()?.block_on(async {
        // An existing file is only written when it is an outbox.
        let outbox = if db.exists() {
            open_existing(&db, Access::ReadWrite).await?
        } else {
            Outbox::open(&db).await.with_context(|| format!("creating the MLflow outbox {}", db.display()))?
        };
        outbox.enqueue(&ops).await?;
        if cfg.tracking_uri.is_none() {
            println!(
                "MLflow: no tracking server configured (MLFLOW_TRACKING_URI); the run waits in {} — deliver it with `mnistctl mlflow sync --db {}`",
                db.display(),
                db.display()
            );
            outbox.close().await;
            return Ok(());
        }
        let report = Deliverer::new(outbox.clone(), &cfg)?.drain(TRAIN_PATIENCE).await?;
        let (run, complete) = match ops.first() {
            Some(op) => {
                let waiting = outbox.undelivered_runs().await?.iter().any(|r| r.run_key == op.run_key());
                (outbox.run(op.run_key()).await?, !waiting)
            }
            None => (None, false),
        };
        remove_delivered_stages(&outbox, &db, &Default::default()).await;
        outbox.close().await;
        match (report.pending, run) {
            (0, Some(r)) if complete => println!(
                "MLflow: run {} logged{}; model registered as {}",
                r.run_id,
                cfg.run_url(&r.experiment_id, &r.run_id).map(|u| format!(" ({u})")).unwrap_or_default(),
                cfg.model_name
            ),
            (0, Some(r)) => println!(
                "MLflow: run {} logged{}, but not all of it (see below)",
                r.run_id,
                cfg.run_url(&r.experiment_id, &r.run_id).map(|u| format!(" ({u})")).unwrap_or_default(),
            ),
            (n, _) => println!(
                "MLflow: {n} operations wait in {} ({}); deliver them with `mnistctl mlflow sync --db {}`",
                db.display(),
                report.blocked_by.as_deref().unwrap_or("not delivered"),
                db.display()
            ),
        }
        if report.dead > 0 {
            println!("MLflow refused {} operations; see `mnistctl mlflow status --db {}`", report.dead, db.display());
        }
        Ok(())
    })
}
