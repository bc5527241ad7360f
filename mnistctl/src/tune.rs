//! `mnistctl tune`: a whole study on this machine in one command (the
//! seed's `python tune.py --n_trials 20`).
//!
//! It starts an embedded coordinator on loopback with the study database
//! (`--storage`, Optuna's schema), creates the study (or resumes the one of
//! that name in the database), runs an in-process worker with one slot per
//! device, shows the progress with the best value so far, and prints the best
//! trial with the place of its artifacts; a study that ends without a
//! complete trial fails the command (exit 1), naming the first failure's
//! reason. Ctrl-C gives the running trials back and stops cleanly; running
//! the same command again resumes. Ctrl-C during the final wait for MLflow
//! ends the wait at once (exit 130); what was not delivered stays in the
//! study database's outbox for `mnistctl mlflow sync`.

mod progress;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use mnist_common::config::TrainConfig;
use mnist_common::mnist;
use mnist_coordinator::{server, ServerConfig};
use mnist_proto::v1 as pb;
use mnist_proto::v1::study_service_client::StudyServiceClient;
use mnist_worker::{DeviceSelection, WorkerConfig};
use serde_json::{json, Value};
use tonic::transport::Channel;

use crate::output::{fmt_num, opt_num, param_text};

pub use progress::init_logging;

/// Run a tuning study on this machine (coordinator and workers in one process).
#[derive(Debug, clap::Args)]
// Negative numbers are values (`--timeout -5` is then refused by name).
#[command(allow_negative_numbers = true, after_help = "Examples:
  # 20 trials, TPE + median pruning, on every GPU (else the CPU):
  mnistctl tune
  # a quick run:
  mnistctl tune --n-trials 8 --epochs 1 --train-limit 6000 --devices cpu
  mnistctl tune --space space.toml --sampler random --pruner none --storage lr.db --study lr-sweep
  # other machines may join with `mnist-worker --coordinator http://HOST:50051`:
  mnistctl tune --listen 0.0.0.0:50051

Rerun the same command to resume an interrupted study. The database is an Optuna
RDB storage: optuna.load_study(study_name=\"mnist-cnn\", storage=\"sqlite:///tune.db\").")]
pub struct TuneArgs {
    /// Number of trials; the study ends when this many have finished.
    #[arg(long, default_value_t = 20)]
    pub n_trials: u32,
    /// The study name. A study of this name in --storage is resumed.
    #[arg(long, default_value = "mnist-cnn")]
    pub study: String,
    /// The SQLite study database (created when missing). Uploaded artifacts
    /// go next to it, in `<storage>.artifacts/`.
    #[arg(long, default_value = "tune.db")]
    pub storage: PathBuf,
    /// Search space file, TOML (`.toml`) or JSON (`.json`). Default: the
    /// built-in CNN space (learning_rate, momentum, batch_size, dropout_conv,
    /// dropout_fc, fc_width, conv1_channels, conv2_channels). Other names
    /// training reads: weight_decay, epochs, seed, optimizer, lr_schedule;
    /// any other name is refused.
    #[arg(long)]
    pub space: Option<PathBuf>,
    /// Sampler: tpe, random or grid.
    #[arg(long, default_value = "tpe")]
    pub sampler: String,
    /// Sampler seed. Default: drawn once and recorded with the study.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Pruner: median, percentile, successive_halving, hyperband or none.
    #[arg(long, default_value = "median")]
    pub pruner: String,
    #[arg(long, default_value = "val_accuracy", help = crate::study::METRIC_HELP)]
    pub metric: String,
    /// maximize or minimize the metric [default: minimize a metric whose name
    /// contains "loss", maximize any other].
    #[arg(long, value_enum)]
    pub direction: Option<crate::study::DirectionArg>,
    /// Epochs per trial.
    #[arg(long, default_value_t = 3)]
    pub epochs: i64,
    /// Use only the first N training images per trial (quick runs).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use only the first N test images per trial (quick runs).
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Training images held out for validation. Default: 5000, or a tenth of
    /// --train-limit when that is smaller.
    #[arg(long)]
    pub val_size: Option<usize>,
    /// Any other training setting for every trial, as KEY=VALUE (repeatable),
    /// e.g. --base optimizer=adam --base weight_decay=1e-4.
    #[arg(long = "base")]
    pub base: Vec<String>,
    /// Stop starting new trials after this many seconds of this run (a
    /// rerun that resumes the study gets its own --timeout; none: no limit).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Devices: all (every GPU, else the CPU), cpu, or a list such as cuda:0,cuda:1.
    #[arg(long, default_value = "all")]
    pub devices: DeviceSelection,
    /// MNIST directory; missing files are downloaded and verified.
    #[arg(long, env = mnist::DATA_DIR_ENV, default_value = mnist::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Where each trial's files are written before they are stored.
    #[arg(long, default_value = "runs/tune")]
    pub work_dir: PathBuf,
    /// libtorch CPU threads. Default: libtorch's choice.
    #[arg(long)]
    pub torch_threads: Option<i32>,
    /// Where the embedded coordinator listens. Default: a free loopback port.
    /// Use e.g. 0.0.0.0:50051 to let workers on other machines join.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// MLflow: the study becomes a parent run with one nested run per trial,
    /// and the best model is registered (alias `champion`).
    #[command(flatten)]
    pub mlflow: mnist_mlflow::MlflowArgs,
    /// At the end, wait up to this many seconds for MLflow to receive
    /// everything; what is left stays in the study database's outbox for the
    /// next run or `mnistctl mlflow sync --db <storage>`.
    #[arg(long, default_value_t = 120.0)]
    pub mlflow_wait_seconds: f64,
}

/// The id of the in-process worker: fixed, so a rerun after a crash gets
/// back the trials the previous run held.
const WORKER_ID: &str = "tune-local";

/// The base training configuration of every trial, as JSON, validated.
fn base_config(a: &TuneArgs) -> anyhow::Result<String> {
    let mut obj = serde_json::Map::new();
    obj.insert("epochs".into(), json!(a.epochs));
    if let Some(n) = a.train_limit {
        obj.insert("train_limit".into(), json!(n));
    }
    if let Some(n) = a.test_limit {
        obj.insert("test_limit".into(), json!(n));
    }
    if let Some(v) = a.val_size {
        obj.insert("val_size".into(), json!(v));
    }
    for kv in &a.base {
        let (k, v) = crate::study::key_value(kv)?;
        if let Some(flag) = ["epochs", "train_limit", "test_limit", "val_size"].into_iter().find(|f| *f == k) {
            bail!("--base {kv}: set {flag} with --{}", flag.replace('_', "-"));
        }
        obj.insert(k, v);
    }
    mnist_common::config::fill_default_val_size(&mut obj);
    let text = Value::Object(obj).to_string();
    let cfg: TrainConfig = serde_json::from_str(&text).with_context(|| format!("the training settings {text} are not valid"))?;
    cfg.validate().map_err(|e| anyhow::anyhow!("invalid training setting {}: {}", e.field, e.message))?;
    Ok(text)
}

fn spec(a: &TuneArgs) -> anyhow::Result<pb::StudySpec> {
    anyhow::ensure!(a.n_trials >= 1, "--n-trials must be at least 1");
    if let Some(t) = a.timeout {
        anyhow::ensure!(t.is_finite() && t > 0.0, "--timeout must be a positive number of seconds, got {t}");
    }
    Ok(pb::StudySpec {
        name: a.study.clone(),
        direction: crate::study::direction_for(a.direction, &a.metric) as i32,
        metric: a.metric.clone(),
        search_space: crate::study::space_source(&a.space)?,
        sampler: Some(pb::SamplerSpec { kind: a.sampler.clone(), seed: a.seed, options_json: String::new() }),
        pruner: Some(pb::PrunerSpec { kind: a.pruner.clone(), options_json: String::new() }),
        n_trials: a.n_trials,
        timeout_seconds: a.timeout.unwrap_or(0.0),
        base_config_json: base_config(a)?,
        ..Default::default()
    })
}

fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message())
}

/// Runs the study.
pub fn run(args: TuneArgs) -> anyhow::Result<()> {
    let spec = spec(&args)?;
    // The coordinator's checks, before the data set is fetched: a typo in
    // --sampler or a bad --space file fails at once; so do the settings of
    // this command's own coordinator and worker.
    mnist_coordinator::rpc::convert::check_study_spec(&spec).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Only the CNN's training reads the parameters here: another name would
    // be sampled and stored, and change nothing.
    let untrained = crate::study::untrained_params(&spec.search_space);
    crate::study::check_param_names(&untrained)?;
    anyhow::ensure!(
        untrained.is_empty(),
        "bad search space: training reads no parameter named {} (tuning it would change nothing); the parameters it reads: {}",
        untrained.join(", "),
        TrainConfig::PARAM_NAMES.join(", ")
    );
    crate::study::check_metric(&args.metric)?;
    let drain = mnist_common::flags::seconds("mlflow-wait-seconds", args.mlflow_wait_seconds, true)?;
    let worker = local_worker(&args);
    worker.check()?;
    // The devices exist, before a study is stored with this command's
    // settings (a rerun with other settings would find them fixed).
    mnist_worker::devices::resolve(&worker.devices)?;
    let mlflow = args.mlflow.config()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let result = rt.block_on(tune(args, spec, mlflow, drain, worker));
    // A training thread of a released trial may still be inside an epoch.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// The in-process worker's settings (its coordinator's address is set once
/// the coordinator runs).
fn local_worker(args: &TuneArgs) -> WorkerConfig {
    let mut wcfg = WorkerConfig::new(String::new());
    wcfg.devices = args.devices.clone();
    wcfg.data_dir = args.data_dir.clone();
    wcfg.worker_id = Some(WORKER_ID.into());
    wcfg.study = Some(args.study.clone());
    wcfg.work_dir = args.work_dir.clone();
    wcfg.exit_when_idle = true;
    wcfg.poll_wait = Duration::from_secs(1);
    wcfg.torch_threads = args.torch_threads;
    wcfg.labels = vec![("role".into(), "mnistctl tune".into())];
    wcfg
}

/// `drain`: how long stopping waits for MLflow (`--mlflow-wait-seconds`).
async fn tune(
    args: TuneArgs,
    spec: pb::StudySpec,
    mlflow: mnist_mlflow::MlflowConfig,
    drain: Duration,
    worker: WorkerConfig,
) -> anyhow::Result<()> {
    let dir = args.data_dir.clone();
    tokio::task::spawn_blocking(move || mnist::ensure_downloaded(&dir, &mnist::mirrors_from_env()))
        .await
        .context("downloading MNIST")?
        .with_context(|| format!("getting MNIST into {}", args.data_dir.display()))?;
    // Readable and intact, for the same reason (the worker reads it again).
    let dir = args.data_dir.clone();
    tokio::task::spawn_blocking(move || mnist::load(&dir))
        .await
        .context("reading MNIST")?
        .with_context(|| format!("reading MNIST in {}", args.data_dir.display()))?;

    if let Some(parent) = args.storage.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut cfg = ServerConfig::new(args.listen, args.storage.clone());
    cfg.coordinator.data_dir = Some(args.data_dir.clone());
    let tracking_uri = mlflow.tracking_uri.clone();
    cfg.coordinator.mlflow = mlflow;
    cfg.coordinator.mlflow_drain = drain;
    let artifacts_root = cfg.coordinator.artifacts_root();
    // Refusals from earlier runs on this file are not this run's news.
    let refused_before = storage_backlog(&args.storage).await.map_or(0, |b| b.dead);
    let running = server::start(cfg).await.with_context(|| format!("starting the coordinator on {}", args.storage.display()))?;
    let url = running.url();
    tracing::info!(url = %url, db = %args.storage.display(), "coordinator started");

    let outcome = drive(&args, spec, worker, &url, &artifacts_root).await;
    // Stopping the coordinator waits up to --mlflow-wait-seconds for MLflow to
    // receive what is left. Ctrl-C ends that wait at once: what was not
    // delivered stays in the outbox (the coordinator's tasks end with the
    // runtime; every state change was committed before its call answered).
    let stopped = tokio::select! {
        r = running.shutdown() => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    match stopped {
        Some(r) => r.context("stopping the coordinator")?,
        None => {
            match &outcome {
                Err(e) if e.downcast_ref::<Interrupted>().is_some() => eprintln!("interrupted: {e}"),
                Err(e) => eprintln!("error: {}", mnist_common::logging::error_chain(e.as_ref())),
                Ok(()) => {}
            }
            return Err(Interrupted(mlflow_left_behind(&args).await).into());
        }
    }
    mlflow_summary(&args, tracking_uri, refused_before).await;
    outcome
}

/// Ctrl-C ended the command early (while trials ran, or during the final
/// MLflow wait); `main` prints the message and exits with 130, as a shell
/// reports a process that SIGINT ended.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

/// What Ctrl-C during the final MLflow wait left in the outbox, and how it
/// gets delivered.
async fn mlflow_left_behind(args: &TuneArgs) -> String {
    let db = args.storage.display();
    let pending = storage_backlog(&args.storage).await.map(|b| b.pending);
    let what = match pending {
        Some(n) => format!("{n} MLflow operations stay"),
        None => "the MLflow operations not delivered yet stay".to_string(),
    };
    format!(
        "stopped waiting for MLflow; {what} in {db}'s outbox: deliver them with `mnistctl mlflow sync --db {db}`, \
         or they are sent on the next `mnistctl tune --storage {db}`"
    )
}

/// Creates or resumes the study, runs the worker with the progress display,
/// and prints the result.
async fn drive(args: &TuneArgs, spec: pb::StudySpec, mut wcfg: WorkerConfig, url: &str, artifacts_root: &Path) -> anyhow::Result<()> {
    let mut client = StudyServiceClient::connect(url.to_string()).await.context("connecting to the embedded coordinator")?;
    let study = open_study(&mut client, spec, args.n_trials, args.timeout).await?;
    if study.state != pb::StudyState::Running as i32 {
        report(&mut client, &args.study, artifacts_root, false).await?;
        return Ok(());
    }

    let mut events = client
        .watch_study(pb::WatchStudyRequest { name: args.study.clone(), after_seq: None, include_reports: true })
        .await
        .map_err(status)?
        .into_inner();
    let study = client.get_study(pb::GetStudyRequest { name: args.study.clone() }).await.map_err(status)?.into_inner();
    let mut display = progress::Progress::new(&study);

    wcfg.coordinator = url.to_string();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut worker = tokio::spawn(mnist_worker::run(wcfg, stop_rx));

    let mut interrupted = false;
    let mut quit_at_once: Option<tokio::task::JoinHandle<()>> = None;
    let mut stream_open = true;
    let worker_result = loop {
        tokio::select! {
            r = &mut worker => break r,
            ev = events.message(), if stream_open => match ev {
                Ok(Some(ev)) => {
                    if display.event(&ev) {
                        stream_open = false;
                    }
                }
                _ => stream_open = false,
            },
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                display.finish();
                eprintln!("interrupted: giving the running trials back (Ctrl-C again to quit at once)");
                stop.send_replace(true);
                quit_at_once = Some(tokio::spawn(async {
                    let _ = tokio::signal::ctrl_c().await;
                    std::process::exit(130);
                }));
            }
        }
    };
    // From here on, Ctrl-C ends the final MLflow wait (see `tune`).
    if let Some(task) = quit_at_once {
        task.abort();
    }
    display.finish();
    match worker_result {
        Ok(Ok(summary)) => tracing::debug!(?summary, "the local worker finished"),
        Ok(Err(e)) => return Err(anyhow::Error::new(e).context("the local worker stopped")),
        Err(e) => bail!("the local worker failed: {e}"),
    }
    if interrupted {
        let s = client.get_study(pb::GetStudyRequest { name: args.study.clone() }).await.map_err(status)?.into_inner();
        let c = s.counts.unwrap_or_default();
        // Not a success: a script's `tune && deploy` must not go on.
        return Err(Interrupted(format!(
            "stopped: {} of {} trials finished; run the same command again to resume",
            c.complete + c.pruned + c.fail,
            s.spec.map(|x| x.n_trials).unwrap_or(0)
        ))
        .into());
    }
    report(&mut client, &args.study, artifacts_root, true).await
}

/// The settings of `requested` that the stored study does not share, as
/// "what (stored X, this command Y)". `n_trials` is left out (a larger one
/// resumes the study with more trials); an unset sampler seed matches any
/// stored seed.
fn spec_differences(requested: &pb::StudySpec, stored: &pb::StudySpec) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(s), Some(r)) = (crate::study::space_map(&stored.search_space), crate::study::space_map(&requested.search_space)) {
        let names: std::collections::BTreeSet<&String> = s.keys().chain(r.keys()).collect();
        let changed: Vec<&str> = names.into_iter().filter(|n| s.get(*n) != r.get(*n)).map(|n| n.as_str()).collect();
        if !changed.is_empty() {
            out.push(format!("search space (parameters that differ: {})", changed.join(", ")));
        }
    }
    let mut differ = |what: &str, stored: String, given: String| {
        if stored != given {
            out.push(format!("{what} (stored {stored}, this command {given})"));
        }
    };
    let dir = |d: i32| match pb::Direction::try_from(d) {
        Ok(pb::Direction::Minimize) => "minimize".to_string(),
        Ok(pb::Direction::Maximize) => "maximize".to_string(),
        _ => "unset".to_string(),
    };
    differ("direction", dir(stored.direction), dir(requested.direction));
    // Names compare as the coordinator stores them (case, aliases, defaults).
    use mnist_coordinator::study::{metric_name, pruner_kind, sampler_kind};
    differ("metric", metric_name(&stored.metric), metric_name(&requested.metric));
    let (rs, ss) = (requested.sampler.clone().unwrap_or_default(), stored.sampler.clone().unwrap_or_default());
    if sampler_kind(&ss.kind) != sampler_kind(&rs.kind) {
        differ("sampler", ss.kind.clone(), rs.kind.clone());
    }
    if let Some(seed) = rs.seed {
        differ("sampler seed", ss.seed.map_or_else(|| "none".into(), |s| s.to_string()), seed.to_string());
    }
    let (rp, sp) = (requested.pruner.clone().unwrap_or_default(), stored.pruner.clone().unwrap_or_default());
    if pruner_kind(&sp.kind) != pruner_kind(&rp.kind) {
        differ("pruner", sp.kind, rp.kind);
    }
    // Training settings field by field, both sides with every default filled in.
    let full = |json: &str| -> Option<serde_json::Map<String, Value>> {
        let cfg: TrainConfig = if json.trim().is_empty() { TrainConfig::default() } else { serde_json::from_str(json).ok()? };
        match serde_json::to_value(cfg).ok()? {
            Value::Object(m) => Some(m),
            _ => None,
        }
    };
    if let (Some(s), Some(r)) = (full(&stored.base_config_json), full(&requested.base_config_json)) {
        for (k, rv) in &r {
            let sv = s.get(k).cloned().unwrap_or(Value::Null);
            differ(k, sv.to_string(), rv.to_string());
        }
    }
    out
}

/// Creates the study, or resumes the one stored under its name; `timeout`
/// is this run's `--timeout`.
async fn open_study(
    client: &mut StudyServiceClient<Channel>,
    spec: pb::StudySpec,
    n_trials: u32,
    timeout: Option<f64>,
) -> anyhow::Result<pb::Study> {
    let name = spec.name.clone();
    let requested = spec.clone();
    let r = client
        .create_study(pb::CreateStudyRequest { spec: Some(spec), load_if_exists: true })
        .await
        .map_err(status)
        .with_context(|| format!("creating the study {name:?}"))?
        .into_inner();
    let study = r.study.context("the coordinator returned no study")?;
    if r.created {
        tracing::info!(study = %name, n_trials, "study created");
        return Ok(study);
    }
    let stored = study.spec.clone().unwrap_or_default();
    let changed = spec_differences(&requested, &stored);
    if !changed.is_empty() {
        tracing::warn!(
            study = %name,
            "the study exists already and keeps its stored settings, which differ from this command's: {}; \
             to tune with the new settings, give another --study name (or --storage)",
            changed.join(", ")
        );
    }
    let c = study.counts.unwrap_or_default();
    let finished = c.complete + c.pruned + c.fail;
    tracing::info!(
        study = %name,
        finished,
        n_trials = stored.n_trials,
        "resuming the study found in the database (its stored search space, sampler and training settings are kept)"
    );
    let more = n_trials > stored.n_trials;
    if n_trials < stored.n_trials {
        tracing::warn!(study = %name, "the study keeps its n_trials of {} (--n-trials {n_trials} is smaller)", stored.n_trials);
    }
    // Every run of this command gets its own --timeout from now, as each
    // `study.optimize(timeout=...)` call does in Optuna (none: no limit), so
    // a study that ended on its timeout goes on when the command is rerun.
    // A COMPLETE study with no trials left (n_trials reached, grid used up)
    // stays complete unless --n-trials grows.
    let req = pb::ResumeStudyRequest { name: name.clone(), n_trials: more.then_some(n_trials), timeout_seconds: Some(timeout.unwrap_or(0.0)) };
    match client.resume_study(req).await {
        Ok(r) => Ok(r.into_inner()),
        Err(e) if e.code() == tonic::Code::FailedPrecondition && study.state == pb::StudyState::Complete as i32 && !more => Ok(study),
        Err(e) => Err(status(e)).with_context(|| format!("resuming the study {name:?}")),
    }
}

/// Prints the outcome and the best trial; a study without a complete trial
/// (every trial failed or was pruned) is an error.
async fn report(client: &mut StudyServiceClient<Channel>, name: &str, artifacts_root: &Path, ran: bool) -> anyhow::Result<()> {
    let s = client.get_study(pb::GetStudyRequest { name: name.into() }).await.map_err(status)?.into_inner();
    let c = s.counts.unwrap_or_default();
    let metric = s.spec.as_ref().map(|x| x.metric.clone()).unwrap_or_default();
    let state = crate::output::study_state(s.state);
    if !ran {
        println!("study {name:?} is already {state} ({})", s.end_reason);
    }
    println!(
        "study {name:?}: {} complete, {} pruned, {} failed{}",
        c.complete,
        c.pruned,
        c.fail,
        if s.end_reason.is_empty() { String::new() } else { format!(" | {}", s.end_reason) }
    );
    let Some(t) = s.best_trial else {
        return Err(no_best_trial(client, name, &c, &s.end_reason).await);
    };
    println!();
    println!("best trial: #{}  {metric} = {}", t.number, opt_num(t.value));
    let mut params: Vec<_> = t.params.iter().collect();
    params.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in params {
        println!("  {k:<16} {}", param_text(v));
    }
    for k in ["test_accuracy", "test_loss", "macro_f1"] {
        if let Some(v) = t.metrics.get(k) {
            println!("  [{k}] {}", fmt_num(*v));
        }
    }
    if let Some(r) = &s.mlflow_run {
        println!("MLflow parent run: {}{}", r.run_id, if r.url.is_empty() { String::new() } else { format!("  {}", r.url) });
    }
    let dir = mnist_coordinator::artifacts::trial_dir(artifacts_root, s.study_id, t.number);
    if dir.is_dir() {
        println!();
        println!("artifacts: {}", dir.display());
        for (what, rel) in [("MLflow model", "model"), ("weights", "weights/model.safetensors"), ("plots", "plots"), ("metrics", "metrics.json")] {
            if dir.join(rel).exists() {
                println!("  {what:<13} {}", dir.join(rel).display());
            }
        }
    }
    Ok(())
}

/// The error of a study that ended without a complete trial, so without a
/// best trial: how many trials failed or were pruned, the first failure's
/// reason, and what to do.
async fn no_best_trial(client: &mut StudyServiceClient<Channel>, name: &str, c: &pb::TrialCounts, end_reason: &str) -> anyhow::Error {
    let first_failure = if c.fail > 0 {
        let req = pb::ListTrialsRequest { study_name: name.into(), states: vec![pb::TrialState::Fail as i32], from_number: 0, limit: 1 };
        client.list_trials(req).await.ok().and_then(|r| r.into_inner().trials.into_iter().next())
    } else {
        None
    };
    let finished = c.complete + c.pruned + c.fail;
    let mut msg = if finished == 0 {
        let why = if end_reason.is_empty() { String::new() } else { format!(" ({end_reason})") };
        format!("no trial of study {name:?} finished{why}, so there is no best trial")
    } else {
        format!("no trial of study {name:?} completed ({} failed, {} pruned), so there is no best trial", c.fail, c.pruned)
    };
    if let Some(t) = first_failure {
        let reason = if t.fail_reason.is_empty() { "no reason was given" } else { t.fail_reason.as_str() };
        msg.push_str(&format!("; the first failure, trial #{}: {reason}", t.number));
    }
    msg.push_str(if c.fail > 0 {
        "; fix the cause, then tune again under another --study name (a larger --n-trials adds trials to this one)"
    } else if c.pruned > 0 {
        "; the pruner stopped every trial: try --pruner none or more --epochs, under another --study name"
    } else {
        "; give the trials more time (--timeout) under another --study name"
    });
    anyhow::anyhow!(msg)
}

/// The backlog of the outbox in `db`, read-only; `None` when the file or its
/// outbox does not exist (yet) or cannot be read.
async fn storage_backlog(db: &std::path::Path) -> Option<mnist_mlflow::Backlog> {
    let outbox = mnist_mlflow::Outbox::open_existing(db, mnist_mlflow::Access::ReadOnly).await.ok()?;
    let b = outbox.backlog().await.ok();
    outbox.close().await;
    b
}

/// After the coordinator stopped (and delivered what it could): what MLflow
/// received, or what still waits in the outbox and how to send it; the
/// refusals of this run (`refused_before` were there already).
async fn mlflow_summary(args: &TuneArgs, uri: Option<String>, refused_before: u64) {
    let Some(b) = storage_backlog(&args.storage).await else { return };
    match (&uri, b.pending) {
        (Some(u), 0) => println!("MLflow: everything delivered to {u} ({} operations)", b.delivered),
        (Some(_), n) => println!(
            "MLflow: {n} operations wait in {} ({}); they are sent on the next run, or now with `mnistctl mlflow sync --db {}`",
            args.storage.display(),
            b.last_error.as_deref().unwrap_or("not delivered yet"),
            args.storage.display()
        ),
        (None, n) => println!(
            "MLflow: no tracking server configured; {n} operations are kept in {} for `mnistctl mlflow sync --db {}`",
            args.storage.display(),
            args.storage.display()
        ),
    }
    let new = b.dead.saturating_sub(refused_before);
    if new > 0 {
        println!("MLflow refused {new} operations in this run; see `mnistctl mlflow status --db {}`", args.storage.display());
    }
}
