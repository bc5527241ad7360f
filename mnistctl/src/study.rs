//! `mnistctl study`: create, inspect, stop, resume, delete, export and watch
//! studies on a running coordinator.

use std::path::PathBuf;

use anyhow::{bail, Context};
use mnist_common::config::TrainConfig;
use mnist_proto::v1 as pb;
use serde_json::{json, Value};

use crate::cli::{Global, OutputFormat};
use crate::client::{block_on, connect, rpc_error, Coordinator};
use crate::output::*;

/// Study commands.
#[derive(Debug, clap::Subcommand)]
pub enum StudyCmd {
    /// Create a study (the search space defaults to the built-in CNN space)
    ///
    /// Examples:
    ///   mnistctl study create mnist --n-trials 20 --epochs 3
    ///   mnistctl study create lr-sweep --space space.toml --sampler random --pruner none
    ///   mnistctl study create quick --n-trials 12 --base train_limit=5000 --base test_limit=1000
    #[command(verbatim_doc_comment)]
    Create(Box<CreateArgs>),
    /// List the studies with their state, progress and best value.
    List,
    /// Show a study: configuration, search space, counts and the best trial.
    Show {
        /// The study name.
        name: String,
    },
    /// List a study's trials (number, state, value, parameters, duration).
    Trials(TrialsArgs),
    /// Print the best trial so far (use `-o json` for programs).
    Best {
        /// The study name.
        name: String,
    },
    /// Stop a study: no new trials; running trials are told to stop and are re-queued.
    Stop {
        /// The study name.
        name: String,
        /// Why (recorded as the study's end reason).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume a stopped study, or continue a finished one with a larger --n-trials.
    Resume {
        /// The study name.
        name: String,
        /// A new total number of trials (must not be below the trials it has).
        #[arg(long)]
        n_trials: Option<u32>,
        /// A new timeout in seconds, counted from now (0: none).
        #[arg(long, allow_negative_numbers = true)]
        timeout: Option<f64>,
    },
    /// Delete a study, its trials and its stored artifacts.
    Delete {
        /// The study name.
        name: String,
        /// Delete even while trials are running.
        #[arg(long)]
        force: bool,
    },
    /// Export a study's trials as CSV or JSON
    ///
    /// Example: mnistctl study export mnist --format csv --file trials.csv
    #[command(verbatim_doc_comment)]
    Export {
        /// The study name.
        name: String,
        /// csv (one row per trial: number, state, value, datetime_start,
        /// datetime_complete, duration_seconds, params_*, metrics_*, retries,
        /// fail_reason; like Optuna's trials_dataframe, with our metrics in
        /// place of user_attrs and the duration in seconds) or json.
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
        /// Write here instead of standard output.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Follow a study live: a progress bar with the best value so far; ends with the study.
    /// With -o json: one JSON object per line, each a study event; a study that
    /// is not running gives one line, the study as `study show -o json` prints it.
    Watch {
        /// The study name.
        name: String,
    },
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    Json,
}

/// `mnistctl study create`.
#[derive(Debug, clap::Args)]
// Negative numbers are values (`--timeout -5` is then refused by name).
#[command(allow_negative_numbers = true)]
pub struct CreateArgs {
    /// The study name (unique on the coordinator).
    pub name: String,
    /// Search space file: TOML (`.toml`) or JSON (`.json`), one entry per
    /// parameter, e.g. `[learning_rate]` / `type = "float"` / `low = 1e-4` /
    /// `high = 0.1` / `log = true`. Default: the built-in CNN space
    /// (learning_rate, momentum, batch_size, dropout_conv, dropout_fc,
    /// fc_width, conv1_channels, conv2_channels). Names training reads:
    /// those, weight_decay, epochs, seed, optimizer, lr_schedule. Any other
    /// name is sampled for ask/tell clients only (workers ignore it); one
    /// that looks like a mistyped training name is refused.
    #[arg(long)]
    pub space: Option<PathBuf>,
    /// maximize or minimize the metric [default: minimize a metric whose name
    /// contains "loss", maximize any other].
    #[arg(long, value_enum)]
    pub direction: Option<DirectionArg>,
    #[arg(long, default_value = "val_accuracy", help = crate::study::METRIC_HELP)]
    pub metric: String,
    /// Number of trials; the study ends when they have all finished (0: no limit).
    #[arg(long, default_value_t = 20)]
    pub n_trials: u32,
    /// Sampler: tpe, random or grid.
    #[arg(long, default_value = "tpe")]
    pub sampler: String,
    /// Sampler seed (default: drawn and recorded, so restarts suggest the same values).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Extra sampler options as JSON, e.g. '{"n_startup_trials": 5}'.
    #[arg(long, default_value = "")]
    pub sampler_options: String,
    /// Pruner: median (Optuna's default), none, percentile, successive_halving or hyperband.
    #[arg(long, default_value = "median")]
    pub pruner: String,
    /// Extra pruner options as JSON, e.g. '{"n_startup_trials": 5, "n_warmup_steps": 1}'.
    #[arg(long, default_value = "")]
    pub pruner_options: String,
    /// Epochs per trial (sets the base training configuration's `epochs`).
    #[arg(long)]
    pub epochs: Option<i64>,
    /// At most this many trials at once (0: as many as there are worker slots).
    #[arg(long, default_value_t = 0)]
    pub max_concurrency: u32,
    /// Stop starting trials after this many seconds (0: no timeout).
    #[arg(long, default_value_t = 0.0)]
    pub timeout: f64,
    /// Base training configuration file (JSON of TrainConfig fields).
    #[arg(long)]
    pub base_config: Option<PathBuf>,
    /// Set one base training configuration field, KEY=VALUE (repeatable),
    /// e.g. --base train_limit=5000 --base optimizer=adam. A train_limit
    /// without a val_size holds out a tenth of it (at most 5000) for
    /// validation.
    #[arg(long = "base", value_name = "KEY=VALUE")]
    pub base: Vec<String>,
    /// Re-queue a lost or retryably failed trial this many times before failing it.
    #[arg(long, default_value_t = 2)]
    pub max_retries: u32,
    /// Sample new parameters for a retried trial instead of keeping them.
    #[arg(long)]
    pub fresh_params: bool,
    /// Succeed without changes when the study already exists.
    #[arg(long)]
    pub if_not_exists: bool,
}

/// `--metric` of `study create` and `tune`.
pub const METRIC_HELP: &str = "The metric to optimise: val_accuracy (percent), val_loss, train_accuracy, \
train_loss (the last epoch's), or test_accuracy (percent), test_loss, macro_f1 (0 to 1), measured once on \
the test set after training. Pruning compares each epoch's value of the metric; for a test-set metric, of \
its validation counterpart: val_loss for test_loss, val_accuracy (percent) for test_accuracy and macro_f1.";

/// The direction of the objective metric (`study create`, `tune`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DirectionArg {
    Maximize,
    Minimize,
}

/// The direction to ask for: the one given, else the usual one for `metric`
/// (a loss is minimised, anything else maximised).
pub fn direction_for(given: Option<DirectionArg>, metric: &str) -> pb::Direction {
    match given {
        Some(DirectionArg::Maximize) => pb::Direction::Maximize,
        Some(DirectionArg::Minimize) => pb::Direction::Minimize,
        None => mnist_coordinator::rpc::convert::direction_to_pb(mnist_coordinator::study::default_direction(metric)),
    }
}

/// `mnistctl study trials` / `mnistctl trial list`.
#[derive(Debug, clap::Args)]
pub struct TrialsArgs {
    /// The study name.
    pub study: String,
    /// Only these states (repeatable): waiting, running, complete, pruned, fail.
    #[arg(long, value_enum)]
    pub state: Vec<StateArg>,
    /// At most this many trials (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
}

/// Trial states for filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateArg {
    Waiting,
    Running,
    Complete,
    Pruned,
    Fail,
}

impl StateArg {
    fn pb(self) -> i32 {
        (match self {
            StateArg::Waiting => pb::TrialState::Waiting,
            StateArg::Running => pb::TrialState::Running,
            StateArg::Complete => pb::TrialState::Complete,
            StateArg::Pruned => pb::TrialState::Pruned,
            StateArg::Fail => pb::TrialState::Fail,
        }) as i32
    }
}

/// Parses `KEY=VALUE` (the value as JSON when it parses, else a string).
pub fn key_value(s: &str) -> anyhow::Result<(String, Value)> {
    let (k, v) = s.split_once('=').with_context(|| format!("{s:?} is not KEY=VALUE"))?;
    let k = k.trim();
    anyhow::ensure!(!k.is_empty(), "{s:?} has an empty key");
    let v = v.trim();
    let value = serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.to_string()));
    Ok((k.to_string(), value))
}

fn base_config_json(args: &CreateArgs) -> anyhow::Result<String> {
    let mut obj = match &args.base_config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            match serde_json::from_str::<Value>(&text).with_context(|| format!("{} is not valid JSON", p.display()))? {
                Value::Object(m) => m,
                _ => bail!("{} must hold a JSON object of training configuration fields", p.display()),
            }
        }
        None => serde_json::Map::new(),
    };
    for kv in &args.base {
        let (k, v) = key_value(kv)?;
        if k == "epochs" {
            bail!("--base {kv}: set epochs with --epochs");
        }
        obj.insert(k, v);
    }
    if let Some(e) = args.epochs {
        obj.insert("epochs".into(), json!(e));
    }
    mnist_common::config::fill_default_val_size(&mut obj);
    Ok(if obj.is_empty() { String::new() } else { Value::Object(obj).to_string() })
}

pub fn space_source(path: &Option<PathBuf>) -> anyhow::Result<Option<pb::SearchSpaceSource>> {
    use pb::search_space_source::Source;
    let Some(p) = path else { return Ok(None) };
    let text = std::fs::read_to_string(p).with_context(|| format!("reading the search space file {}", p.display()))?;
    let src = match p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("toml") => Source::Toml(text),
        Some("json") => Source::Json(text),
        _ if text.trim_start().starts_with('{') => Source::Json(text),
        _ => Source::Toml(text),
    };
    Ok(Some(pb::SearchSpaceSource { source: Some(src) }))
}

/// A spec's search space as parameter name → Optuna `distribution_json`
/// (order-free); `None` when it does not parse.
pub fn space_map(src: &Option<pb::SearchSpaceSource>) -> Option<std::collections::BTreeMap<String, String>> {
    use mnist_coordinator::space::{parse_space, SpaceSource};
    use pb::search_space_source::Source;
    let source = match src.as_ref().and_then(|s| s.source.as_ref()) {
        None => SpaceSource::Default,
        Some(Source::Toml(t)) => SpaceSource::Toml(t.clone()),
        Some(Source::Json(j)) => SpaceSource::Json(j.clone()),
        Some(Source::Space(s)) => SpaceSource::Space(mnist_coordinator::rpc::convert::space_from_pb(s).ok()?),
    };
    let space = parse_space(&source).ok()?;
    Some(space.params().map(|(n, d)| (n.to_string(), d.to_optuna_json())).collect())
}

/// The search space's parameters that no training field reads (a generic
/// ask/tell objective's own; workers ignore them).
pub fn untrained_params(src: &Option<pb::SearchSpaceSource>) -> Vec<String> {
    space_map(src)
        .map(|m| m.into_keys().filter(|n| !TrainConfig::PARAM_NAMES.contains(&n.as_str())).collect())
        .unwrap_or_default()
}

/// Refuses parameter names (from [`untrained_params`]) that look like a
/// mistyped training parameter or a study-wide setting: workers would train
/// without them, silently. (The coordinator takes any name: ask/tell clients
/// evaluate their own objective.)
pub fn check_param_names(untrained: &[String]) -> anyhow::Result<()> {
    for name in untrained {
        if let Some(why) = TrainConfig::suspicious_param_name(name) {
            bail!("bad search space: {why}");
        }
    }
    Ok(())
}

/// Runs a study command.
pub fn run(cmd: StudyCmd, global: &Global) -> anyhow::Result<()> {
    // A new study's settings are checked before connecting (the
    // coordinator's own checks), so a bad flag or file is reported even
    // without a coordinator.
    let new_spec = match &cmd {
        StudyCmd::Create(args) => Some(create_spec(args)?),
        _ => None,
    };
    block_on(async move {
        let mut c = connect(global).await?;
        let json_out = global.output == OutputFormat::Json;
        match cmd {
            StudyCmd::Create(args) => {
                let spec = match new_spec {
                    Some(s) => s,
                    None => create_spec(&args)?,
                };
                create(&mut c, *args, spec, json_out).await
            }
            StudyCmd::List => list(&mut c, json_out).await,
            StudyCmd::Show { name } => show(&mut c, &name, json_out).await,
            StudyCmd::Trials(args) => trials(&mut c, &args, json_out).await,
            StudyCmd::Best { name } => best(&mut c, &name, json_out).await,
            StudyCmd::Stop { name, reason } => {
                let s = c.study.stop_study(pb::StopStudyRequest { name, reason }).await.map_err(|e| rpc_error(&c.url, e))?.into_inner();
                print_study_line(&s, json_out, "stopped");
                Ok(())
            }
            StudyCmd::Resume { name, n_trials, timeout } => {
                let s = c
                    .study
                    .resume_study(pb::ResumeStudyRequest { name, n_trials, timeout_seconds: timeout })
                    .await
                    .map_err(|e| rpc_error(&c.url, e))?
                    .into_inner();
                print_study_line(&s, json_out, "resumed");
                Ok(())
            }
            StudyCmd::Delete { name, force } => {
                let r = c
                    .study
                    .delete_study(pb::DeleteStudyRequest { name: name.clone(), force })
                    .await
                    .map_err(|e| rpc_error(&c.url, e))?
                    .into_inner();
                if json_out {
                    print_json(&json!({"deleted": name, "trials_deleted": r.trials_deleted}));
                } else {
                    println!("deleted study {name:?} and its {} trials", r.trials_deleted);
                }
                Ok(())
            }
            StudyCmd::Export { name, format, file } => export(&mut c, &name, format, file).await,
            StudyCmd::Watch { name } => watch(&mut c, &name, json_out).await,
        }
    })
}

fn print_study_line(s: &pb::Study, json_out: bool, what: &str) {
    if json_out {
        print_json(&study_json(s));
    } else {
        let why = if s.end_reason.is_empty() { String::new() } else { format!(" ({})", s.end_reason) };
        println!("study {:?} {what}: now {}{why}", s.name, study_state(s.state));
    }
}

/// The spec of `study create`, checked as the coordinator will check it.
fn create_spec(args: &CreateArgs) -> anyhow::Result<pb::StudySpec> {
    let spec = pb::StudySpec {
        name: args.name.clone(),
        direction: direction_for(args.direction, &args.metric) as i32,
        metric: args.metric.clone(),
        search_space: space_source(&args.space)?,
        sampler: Some(pb::SamplerSpec { kind: args.sampler.clone(), seed: args.seed, options_json: args.sampler_options.clone() }),
        pruner: Some(pb::PrunerSpec { kind: args.pruner.clone(), options_json: args.pruner_options.clone() }),
        n_trials: args.n_trials,
        timeout_seconds: args.timeout,
        max_concurrency: args.max_concurrency,
        base_config_json: base_config_json(args)?,
        retry: Some(pb::RetryPolicy { max_retries: args.max_retries, fresh_params: args.fresh_params }),
    };
    mnist_coordinator::rpc::convert::check_study_spec(&spec).map_err(|e| anyhow::anyhow!("{e}"))?;
    check_metric(&args.metric)?;
    check_param_names(&untrained_params(&spec.search_space))?;
    Ok(spec)
}

/// The metric must be one the MNIST worker reports, or every trial would
/// fail on the worker. (A study for another ask/tell client may name any
/// metric through the API.)
pub fn check_metric(metric: &str) -> anyhow::Result<()> {
    mnist_worker::objective::Objective::parse(metric).map_err(|e| anyhow::anyhow!("--metric {metric:?}: {e}"))?;
    Ok(())
}

async fn create(c: &mut Coordinator, args: CreateArgs, spec: pb::StudySpec, json_out: bool) -> anyhow::Result<()> {
    let r = c
        .study
        .create_study(pb::CreateStudyRequest { spec: Some(spec), load_if_exists: args.if_not_exists })
        .await
        .map_err(|e| rpc_error(&c.url, e))?
        .into_inner();
    let s = r.study.unwrap_or_default();
    let untrained = untrained_params(&s.spec.as_ref().and_then(|sp| sp.search_space.clone()));
    if !untrained.is_empty() && r.created {
        eprintln!(
            "note: workers do not read {} (not training parameters); they are sampled for ask/tell clients that evaluate the objective themselves",
            untrained.join(", ")
        );
    }
    if json_out {
        let mut v = study_json(&s);
        v["created"] = json!(r.created);
        print_json(&v);
    } else if r.created {
        println!(
            "created study {:?}: {}, {} sampler, {} pruner, {} {}",
            s.name,
            if args.n_trials == 0 { "no trial limit".to_string() } else { format!("{} trials", args.n_trials) },
            args.sampler,
            args.pruner,
            direction(s.spec.as_ref().map(|x| x.direction).unwrap_or(0)),
            args.metric
        );
        println!("start workers with `mnist-worker --coordinator {}`; follow it with `mnistctl study watch {}`", c.url, s.name);
    } else {
        println!("study {:?} already exists (unchanged)", s.name);
    }
    Ok(())
}

async fn get(c: &mut Coordinator, name: &str) -> anyhow::Result<pb::Study> {
    Ok(c.study.get_study(pb::GetStudyRequest { name: name.into() }).await.map_err(|e| rpc_error(&c.url, e))?.into_inner())
}

async fn list(c: &mut Coordinator, json_out: bool) -> anyhow::Result<()> {
    let studies = c.study.list_studies(pb::ListStudiesRequest {}).await.map_err(|e| rpc_error(&c.url, e))?.into_inner().studies;
    if json_out {
        print_json(&Value::Array(studies.iter().map(study_json).collect()));
        return Ok(());
    }
    if studies.is_empty() {
        println!("no studies; create one with `mnistctl study create NAME`");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = studies
        .iter()
        .map(|s| {
            let spec = s.spec.clone().unwrap_or_default();
            let k = s.counts.unwrap_or_default();
            let finished = k.complete + k.pruned + k.fail;
            let progress = if spec.n_trials > 0 { format!("{finished}/{}", spec.n_trials) } else { finished.to_string() };
            vec![
                s.name.clone(),
                study_state(s.state).to_string(),
                progress,
                k.running.to_string(),
                format!("{} {}", direction(spec.direction), spec.metric),
                opt_num(s.best_trial.as_ref().and_then(|t| t.value)),
                s.best_trial.as_ref().map(|t| t.number.to_string()).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_table(&["NAME", "STATE", "FINISHED", "RUNNING", "OBJECTIVE", "BEST", "BEST #"], &rows);
    Ok(())
}

async fn show(c: &mut Coordinator, name: &str, json_out: bool) -> anyhow::Result<()> {
    let s = get(c, name).await?;
    let trials = c
        .study
        .list_trials(pb::ListTrialsRequest { study_name: name.to_string(), states: vec![], from_number: 0, limit: 0 })
        .await
        .map_err(|e| rpc_error(&c.url, e))?
        .into_inner()
        .trials;
    if json_out {
        let mut v = study_json(&s);
        v["mlflow_trial_runs"] = trials
            .iter()
            .filter_map(|t| t.mlflow_run.as_ref().map(|r| (t.number.to_string(), crate::output::mlflow_run_json(r))))
            .collect::<serde_json::Map<_, _>>()
            .into();
        print_json(&v);
        return Ok(());
    }
    let spec = s.spec.clone().unwrap_or_default();
    let k = s.counts.unwrap_or_default();
    let why = if s.end_reason.is_empty() { String::new() } else { format!(" ({})", s.end_reason) };
    println!("study      {} (id {})", s.name, s.study_id);
    println!("state      {}{why}", study_state(s.state));
    println!("objective  {} {}", direction(spec.direction), spec.metric);
    let limit = if spec.n_trials > 0 { spec.n_trials.to_string() } else { "unlimited".into() };
    println!(
        "trials     {limit} planned: {} complete, {} pruned, {} failed, {} running, {} waiting",
        k.complete, k.pruned, k.fail, k.running, k.waiting
    );
    if let Some(x) = &spec.sampler {
        let seed = x.seed.map(|s| format!(", seed {s}")).unwrap_or_default();
        let opts = if x.options_json.is_empty() { String::new() } else { format!(" {}", x.options_json) };
        println!("sampler    {}{seed}{opts}", x.kind);
    }
    if let Some(x) = &spec.pruner {
        let opts = if x.options_json.is_empty() { String::new() } else { format!(" {}", x.options_json) };
        println!("pruner     {}{opts}", x.kind);
    }
    if spec.max_concurrency > 0 {
        println!("concurrency at most {}", spec.max_concurrency);
    }
    if spec.timeout_seconds > 0.0 {
        println!("timeout    {}s", spec.timeout_seconds);
    }
    if let Some(r) = &spec.retry {
        println!("retries    {} ({} parameters)", r.max_retries, if r.fresh_params { "fresh" } else { "same" });
    }
    println!("created    {}", ts(&s.created_at).unwrap_or_default());
    println!("base config {}", spec.base_config_json);
    println!("search space:");
    if let Some(sp) = &s.search_space {
        let rows: Vec<Vec<String>> = sp.params.iter().map(|p| vec![format!("  {}", p.name), distribution_text(p.distribution.as_ref())]).collect();
        print_table(&["  PARAMETER", "DISTRIBUTION"], &rows);
    }
    match &s.best_trial {
        Some(t) => {
            println!("best trial #{}: {} = {}", t.number, spec.metric, opt_num(t.value));
            let mut params: Vec<_> = t.params.iter().collect();
            params.sort_by(|a, b| a.0.cmp(b.0));
            for (k, v) in params {
                println!("  {k} = {}", param_text(v));
            }
        }
        None => println!("best trial: none yet"),
    }
    print_mlflow(&s, &trials);
    Ok(())
}

/// The MLflow part of `study show`: the outbox backlog, then each run's id and UI link.
fn print_mlflow(s: &pb::Study, trials: &[pb::Trial]) {
    let Some(m) = &s.mlflow else { return };
    let server = if m.tracking_uri.is_empty() { "no tracking server configured".to_string() } else { m.tracking_uri.clone() };
    println!("MLflow     {server}");
    println!("  outbox   {} pending, {} delivered, {} refused", m.pending, m.delivered, m.dead);
    if !m.last_error.is_empty() && m.pending > 0 {
        println!("  waiting  {}", m.last_error);
    }
    let mut rows = Vec::new();
    if let Some(r) = &s.mlflow_run {
        rows.push(vec!["  study".to_string(), r.run_id.clone(), r.url.clone()]);
    }
    for t in trials {
        if let Some(r) = &t.mlflow_run {
            rows.push(vec![format!("  trial {}", t.number), r.run_id.clone(), r.url.clone()]);
        }
    }
    if rows.is_empty() {
        println!("  no MLflow run created yet");
    } else {
        print_table(&["  RUN", "MLFLOW RUN ID", "UI"], &rows);
    }
}

pub(crate) async fn list_trials(c: &mut Coordinator, args: &TrialsArgs) -> anyhow::Result<Vec<pb::Trial>> {
    Ok(c
        .study
        .list_trials(pb::ListTrialsRequest {
            study_name: args.study.clone(),
            states: args.state.iter().map(|s| s.pb()).collect(),
            from_number: 0,
            limit: args.limit,
        })
        .await
        .map_err(|e| rpc_error(&c.url, e))?
        .into_inner()
        .trials)
}

pub(crate) async fn trials(c: &mut Coordinator, args: &TrialsArgs, json_out: bool) -> anyhow::Result<()> {
    let trials = list_trials(c, args).await?;
    if json_out {
        print_json(&Value::Array(trials.iter().map(trial_json).collect()));
    } else if trials.is_empty() {
        println!("no trials");
    } else {
        let (headers, rows) = trial_rows(&trials);
        let h: Vec<&str> = headers.iter().map(String::as_str).collect();
        print_table(&h, &rows);
    }
    Ok(())
}

async fn best(c: &mut Coordinator, name: &str, json_out: bool) -> anyhow::Result<()> {
    let s = get(c, name).await?;
    let Some(t) = s.best_trial else {
        bail!("study {name:?} has no COMPLETE trial yet; `mnistctl study trials {name}` shows its trials");
    };
    if json_out {
        print_json(&trial_json(&t));
    } else {
        let metric = s.spec.map(|x| x.metric).unwrap_or_default();
        println!("best trial #{} of {name:?}: {metric} = {}", t.number, opt_num(t.value));
        let mut params: Vec<_> = t.params.iter().collect();
        params.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in params {
            println!("  {k} = {}", param_text(v));
        }
        let mut metrics: Vec<_> = t.metrics.iter().collect();
        metrics.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in metrics {
            println!("  [{k}] {}", fmt_num(*v));
        }
    }
    Ok(())
}

async fn export(c: &mut Coordinator, name: &str, format: ExportFormat, file: Option<PathBuf>) -> anyhow::Result<()> {
    let args = TrialsArgs { study: name.to_string(), state: Vec::new(), limit: 0 };
    let trials = list_trials(c, &args).await?;
    let text = match format {
        ExportFormat::Csv => trials_csv(&trials),
        ExportFormat::Json => {
            let s = get(c, name).await?;
            let mut v = study_json(&s);
            v["trials"] = Value::Array(trials.iter().map(trial_json).collect());
            serde_json::to_string_pretty(&v)? + "\n"
        }
    };
    match file {
        Some(p) => {
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote {} trials to {}", trials.len(), p.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

async fn watch(c: &mut Coordinator, name: &str, json_out: bool) -> anyhow::Result<()> {
    let mut stream = c
        .study
        .watch_study(pb::WatchStudyRequest { name: name.into(), after_seq: None, include_reports: false })
        .await
        .map_err(|e| rpc_error(&c.url, e))?
        .into_inner();
    let s = get(c, name).await?;
    let spec = s.spec.clone().unwrap_or_default();
    let k = s.counts.unwrap_or_default();
    let finished = (k.complete + k.pruned + k.fail) as u64;
    let bar = mnist_common::progress::bar(
        spec.n_trials as u64,
        "{prefix} [{bar:30}] {pos}/{len} trials {elapsed_precise} | {msg}",
    );
    bar.set_prefix(name.to_string());
    bar.set_position(finished);
    let best = |v: Option<f64>, n: Option<u64>| match (v, n) {
        (Some(v), Some(n)) => format!("best {} = {} (#{n})", spec.metric, fmt_num(v)),
        _ => "no complete trial yet".to_string(),
    };
    bar.set_message(format!("{} | {} running", best(s.best_trial.as_ref().and_then(|t| t.value), s.best_trial.as_ref().map(|t| t.number)), k.running));
    if s.state != pb::StudyState::Running as i32 {
        bar.finish_and_clear();
        if json_out {
            // One line, like each event line of a running study: the study as
            // `study show -o json` prints it (its state, counts, best trial).
            println!("{}", study_json(&s));
        } else {
            println!("study {name:?} is {} ({}); {}", study_state(s.state), s.end_reason, best(s.best_trial.as_ref().and_then(|t| t.value), s.best_trial.as_ref().map(|t| t.number)));
        }
        return Ok(());
    }
    let quiet_bar = !mnist_common::progress::bars_enabled();
    while let Some(ev) = stream.message().await.map_err(|e| rpc_error(&c.url, e))? {
        let kind = pb::EventKind::try_from(ev.kind).unwrap_or(pb::EventKind::Unspecified);
        if json_out {
            println!("{}", event_json(&ev));
            if crate::stdout_gone() {
                // The reader left (`| head -3`): nothing more to follow for.
                bar.finish_and_clear();
                return Ok(());
            }
        }
        let counts = ev.counts.unwrap_or_default();
        bar.set_position((counts.complete + counts.pruned + counts.fail) as u64);
        bar.set_message(format!("{} | {} running", best(ev.best_value, ev.best_trial_number), counts.running));
        use pb::EventKind::*;
        if quiet_bar && !json_out && matches!(kind, TrialCompleted | TrialPruned | TrialFailed | TrialRequeued) {
            eprintln!(
                "trial #{} {} {} | {}/{} finished | {}",
                ev.trial_number.unwrap_or(0),
                trial_state(ev.trial_state),
                opt_num(ev.value),
                counts.complete + counts.pruned + counts.fail,
                ev.n_trials,
                best(ev.best_value, ev.best_trial_number)
            );
        }
        if matches!(kind, StudyCompleted | StudyStopped | StudyDeleted) {
            bar.finish_and_clear();
            if !json_out {
                println!(
                    "study {name:?} {}: {} | {} complete, {} pruned, {} failed",
                    match kind {
                        StudyCompleted => "complete",
                        StudyStopped => "stopped",
                        _ => "deleted",
                    },
                    ev.message,
                    counts.complete,
                    counts.pruned,
                    counts.fail
                );
                println!("{}", best(ev.best_value, ev.best_trial_number));
            }
            return Ok(());
        }
    }
    bar.finish_and_clear();
    Ok(())
}

fn event_json(ev: &pb::StudyEvent) -> Value {
    let kind = pb::EventKind::try_from(ev.kind).map(|k| k.as_str_name().trim_start_matches("EVENT_KIND_")).unwrap_or("UNKNOWN");
    json!({
        "seq": ev.seq,
        "kind": kind,
        "study": ev.study_name,
        "time": ts(&ev.time),
        "trial_number": ev.trial_number,
        "trial_state": if ev.trial_number.is_some() { json!(trial_state(ev.trial_state)) } else { Value::Null },
        "value": opt_num_json(ev.value),
        "message": ev.message,
        "best_value": opt_num_json(ev.best_value),
        "best_trial_number": ev.best_trial_number,
    })
}
