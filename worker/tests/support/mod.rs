//! The harness of the end-to-end tests: real `mnist-coordinator` and
//! `mnist-worker` processes on loopback, each logging to a file in the
//! test's temporary directory (printed when a check fails), and a small
//! gRPC client to create studies and read trials.
//!
//! Data: `MNIST_TEST_DATA`, else `<repo>/../shared/data/mnist`.
//! Python: `MNIST_TEST_PYTHON`, else `<repo>/.venv/bin/python`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mnist_proto::v1 as pb;
use mnist_proto::v1::study_service_client::StudyServiceClient;

/// The tests start several processes each; on a small machine they run one
/// at a time.
pub static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the serial lock (a failed test does not poison the next ones).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("worker/ has a parent").to_path_buf()
}

/// The MNIST directory the tests read.
pub fn data_dir() -> PathBuf {
    let d = std::env::var_os("MNIST_TEST_DATA").map(PathBuf::from).unwrap_or_else(|| repo().join("../shared/data/mnist"));
    assert!(d.is_dir(), "no MNIST test data at {}; set MNIST_TEST_DATA", d.display());
    d
}

/// The Python with optuna.
pub fn python() -> PathBuf {
    std::env::var_os("MNIST_TEST_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo().join(".venv/bin/python"))
}

/// The target directory's profile folder (target/debug), from this test
/// binary's path (target/debug/deps/e2e-…).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps").to_path_buf()
}

/// A binary of another package of the workspace, built on demand when the
/// test command did not build it (`cargo build --workspace --all-targets`).
pub fn workspace_bin(name: &str, package: &str) -> PathBuf {
    let p = profile_dir().join(name);
    if !p.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", package, "--bin", name])
            .current_dir(repo())
            .status()
            .expect("running cargo build");
        assert!(st.success(), "building {name} failed");
    }
    assert!(p.is_file(), "{} is missing; run `cargo build --workspace --all-targets` first", p.display());
    p
}

/// The coordinator binary.
pub fn coordinator_bin() -> PathBuf {
    workspace_bin("mnist-coordinator", "mnist-coordinator")
}

/// The worker binary (this package).
pub fn worker_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mnist-worker"))
}

/// A child process that is killed when dropped, with its log file.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (no wait).
    pub fn sigterm(&self) {
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill -TERM {}", self.child.id());
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the log.
    pub fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!("----- {} ({}) -----\n{}", self.name, self.log.display(), all[from..].join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// A running coordinator.
pub struct Coordinator {
    pub proc: Proc,
    pub url: String,
    pub port: u16,
    pub db: PathBuf,
}

/// Coordinator settings for the tests: short leases and a fast reaper.
pub struct CoordOpts {
    pub lease_seconds: f64,
    pub heartbeat_seconds: f64,
    pub restart_grace_seconds: f64,
    pub data_dir: Option<PathBuf>,
    /// More `mnist-coordinator` flags.
    pub extra_args: Vec<String>,
}

impl Default for CoordOpts {
    fn default() -> Self {
        CoordOpts { lease_seconds: 3.0, heartbeat_seconds: 0.5, restart_grace_seconds: 15.0, data_dir: Some(data_dir()), extra_args: Vec::new() }
    }
}

/// Starts `mnist-coordinator` on `port` (0: any) with the database `db`,
/// and waits for its "listening on" line.
pub fn start_coordinator(dir: &Path, db: &Path, port: u16, opts: &CoordOpts, tag: &str) -> Coordinator {
    let log = dir.join(format!("coordinator-{tag}.log"));
    let mut cmd = Command::new(coordinator_bin());
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--db")
        .arg(db)
        .arg("--lease-seconds")
        .arg(opts.lease_seconds.to_string())
        .arg("--heartbeat-seconds")
        .arg(opts.heartbeat_seconds.to_string())
        .arg("--reaper-seconds")
        .arg("0.2")
        .arg("--restart-grace-seconds")
        .arg(opts.restart_grace_seconds.to_string())
        .env_remove("MNIST_DATA_DIR")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("coordinator log"));
    if let Some(d) = &opts.data_dir {
        cmd.arg("--data-dir").arg(d);
    }
    cmd.args(&opts.extra_args);
    let mut child = cmd.spawn().expect("starting mnist-coordinator");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.split("listening on ").nth(1) {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let proc = Proc { name: format!("coordinator {tag}"), child, log };
    let url = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(u) => u,
        Err(_) => panic!("the coordinator did not start\n{}", proc.tail(40)),
    };
    let port = url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port in the URL");
    Coordinator { proc, url, port, db: db.to_path_buf() }
}

/// Starts an `mnist-worker` (CPU, one libtorch thread) with extra flags.
pub fn start_worker(dir: &Path, url: &str, tag: &str, data: &Path, extra: &[&str]) -> Proc {
    let log = dir.join(format!("worker-{tag}.log"));
    let child = Command::new(worker_bin())
        .arg("--coordinator")
        .arg(url)
        .args(["--devices", "cpu", "--torch-threads", "1", "--poll-seconds", "0.5", "--max-backoff-seconds", "1"])
        .arg("--data-dir")
        .arg(data)
        .arg("--work-dir")
        .arg(dir.join(format!("work-{tag}")))
        .arg("--hostname")
        .arg(format!("test-{tag}"))
        .args(extra)
        .env("RUST_LOG", "info")
        .env("MNIST_NO_PROGRESS", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("worker log"))
        .spawn()
        .expect("starting mnist-worker");
    Proc { name: format!("worker {tag}"), child, log }
}

/// The search space of the tests (JSON user format).
pub const SPACE: &str = r#"{
  "learning_rate": {"type": "float", "low": 0.001, "high": 0.3, "log": true},
  "momentum": {"type": "float", "low": 0.5, "high": 0.95},
  "dropout_fc": {"type": "float", "low": 0.0, "high": 0.5}
}"#;

/// A tiny CNN on a slice of the data.
pub fn base_config(epochs: u32, train_limit: usize) -> String {
    serde_json::json!({
        "epochs": epochs,
        "train_limit": train_limit,
        "val_size": 300,
        "test_limit": 500,
        "conv1_channels": 4,
        "conv2_channels": 8,
        "fc_width": 16,
        "batch_size": 50,
        "eval_batch_size": 500
    })
    .to_string()
}

/// A study spec: TPE (seeded) and the given pruner ("median" or "none").
pub fn spec(name: &str, n_trials: u32, base_config_json: String, pruner: &str) -> pb::StudySpec {
    pb::StudySpec {
        name: name.to_string(),
        direction: pb::Direction::Maximize as i32,
        metric: "val_accuracy".into(),
        search_space: Some(pb::SearchSpaceSource { source: Some(pb::search_space_source::Source::Json(SPACE.into())) }),
        sampler: Some(pb::SamplerSpec { kind: "tpe".into(), seed: Some(7), options_json: r#"{"n_startup_trials": 4}"#.into() }),
        pruner: Some(pb::PrunerSpec {
            kind: pruner.into(),
            options_json: if pruner == "median" { r#"{"n_startup_trials": 2, "n_warmup_steps": 0}"#.into() } else { String::new() },
        }),
        n_trials,
        base_config_json,
        ..Default::default()
    }
}

/// A single-threaded runtime for the test's gRPC calls.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

async fn client(url: &str) -> StudyServiceClient<tonic::transport::Channel> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        match StudyServiceClient::connect(url.to_string()).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > end => panic!("cannot connect to {url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Creates a study.
pub fn create_study(rt: &tokio::runtime::Runtime, url: &str, spec: pb::StudySpec) -> pb::Study {
    rt.block_on(async {
        let mut c = client(url).await;
        let r = c.create_study(pb::CreateStudyRequest { spec: Some(spec), load_if_exists: false }).await;
        r.expect("CreateStudy").into_inner().study.expect("a study")
    })
}

/// Enqueues a trial with fixed float parameters.
pub fn enqueue(rt: &tokio::runtime::Runtime, url: &str, study: &str, params: &[(&str, f64)]) {
    rt.block_on(async {
        let mut c = client(url).await;
        let params = params
            .iter()
            .map(|(k, v)| (k.to_string(), pb::ParamValue { kind: Some(pb::param_value::Kind::FloatValue(*v)) }))
            .collect();
        c.enqueue_trial(pb::EnqueueTrialRequest { study_name: study.into(), params }).await.expect("EnqueueTrial");
    })
}

/// The study, or `None` while the coordinator is unreachable.
pub fn get_study(rt: &tokio::runtime::Runtime, url: &str, name: &str) -> Option<pb::Study> {
    rt.block_on(async {
        let mut c = StudyServiceClient::connect(url.to_string()).await.ok()?;
        c.get_study(pb::GetStudyRequest { name: name.into() }).await.ok().map(|r| r.into_inner())
    })
}

/// Every trial of the study, or `None` while the coordinator is unreachable.
pub fn trials(rt: &tokio::runtime::Runtime, url: &str, name: &str) -> Option<Vec<pb::Trial>> {
    rt.block_on(async {
        let mut c = StudyServiceClient::connect(url.to_string()).await.ok()?;
        let r = c.list_trials(pb::ListTrialsRequest { study_name: name.into(), ..Default::default() }).await.ok()?;
        Some(r.into_inner().trials)
    })
}

/// Polls `check` every 100 ms until it gives `Some`, or panics after `timeout`
/// with `what` and the logs of `procs`.
pub fn wait_for<T>(what: &str, timeout: Duration, procs: &[&Proc], mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > end {
            let logs: Vec<String> = procs.iter().map(|p| p.tail(30)).collect();
            panic!("timed out after {timeout:?} waiting for {what}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for workers to exit on their own; panics with logs when one does not.
pub fn wait_workers(workers: &mut [Proc], timeout: Duration, others: &[&Proc]) {
    let end = Instant::now() + timeout;
    for i in 0..workers.len() {
        let left = end.saturating_duration_since(Instant::now());
        if workers[i].wait_exit(left).is_none() {
            let mut logs: Vec<String> = workers.iter().map(|p| p.tail(30)).collect();
            logs.extend(others.iter().map(|p| p.tail(30)));
            panic!("{} did not exit within {timeout:?}\n{}", workers[i].name, logs.join("\n"));
        }
    }
}

/// Asserts that a finished study has exactly `n` trials numbered 0..n, each
/// in one of `allowed` states. Returns the trials.
pub fn assert_exact(trials: &[pb::Trial], n: u64, allowed: &[pb::TrialState], context: &str) {
    let mut numbers: Vec<u64> = trials.iter().map(|t| t.number).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..n).collect::<Vec<_>>(), "trial numbers are not exactly 0..{n}\n{context}");
    for t in trials {
        let st = pb::TrialState::try_from(t.state).unwrap_or(pb::TrialState::Unspecified);
        assert!(allowed.contains(&st), "trial {} is {st:?}, expected one of {allowed:?} ({})\n{context}", t.number, t.fail_reason);
    }
}

/// The state of a trial as the enum.
pub fn state(t: &pb::Trial) -> pb::TrialState {
    pb::TrialState::try_from(t.state).unwrap_or(pb::TrialState::Unspecified)
}

/// All logs of `procs`, for assertion messages.
pub fn logs(procs: &[&Proc]) -> String {
    procs.iter().map(|p| p.tail(40)).collect::<Vec<_>>().join("\n")
}
