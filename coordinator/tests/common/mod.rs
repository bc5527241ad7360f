//! Test harness: a coordinator in-process or as a real process on a free
//! loopback port, and tonic clients that play the worker and the user.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mnist_coordinator::{server, RunningServer, ServerConfig};
use mnist_proto::v1 as pb;
use mnist_proto::v1::ask_tell_service_client::AskTellServiceClient;
use mnist_proto::v1::study_service_client::StudyServiceClient;
use mnist_proto::v1::worker_service_client::WorkerServiceClient;
use tonic::transport::Channel;

/// The three clients on one connection.
#[derive(Clone)]
pub struct Clients {
    pub study: StudyServiceClient<Channel>,
    pub worker: WorkerServiceClient<Channel>,
    pub ask_tell: AskTellServiceClient<Channel>,
}

/// Connects to `url`, retrying for a few seconds.
pub async fn connect(url: &str) -> Clients {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match tonic::transport::Endpoint::from_shared(url.to_string()).unwrap().connect().await {
            Ok(ch) => {
                return Clients {
                    study: StudyServiceClient::new(ch.clone()),
                    worker: WorkerServiceClient::new(ch.clone()),
                    ask_tell: AskTellServiceClient::new(ch),
                }
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot connect to {url}: {e}"),
        }
    }
}

/// Settings for fast tests: short leases and a fast reaper.
pub fn fast_config(db: &Path, lease: Duration) -> ServerConfig {
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), db);
    cfg.coordinator.lease_duration = lease;
    cfg.coordinator.reaper_interval = Duration::from_millis(100);
    cfg.coordinator.restart_grace = lease;
    cfg.shutdown_grace = Duration::from_secs(2);
    cfg
}

/// An in-process server.
pub async fn start_in_process(cfg: ServerConfig) -> (RunningServer, Clients) {
    let running = server::start(cfg).await.expect("start the coordinator");
    let clients = connect(&running.url()).await;
    (running, clients)
}

/// A coordinator running as a child process.
pub struct CoordProcess {
    pub child: Child,
    pub url: String,
}

impl CoordProcess {
    /// Starts `mnist-coordinator` on a free port with `db`.
    pub fn spawn(db: &Path, extra: &[&str]) -> CoordProcess {
        Self::spawn_with_env(db, extra, &[])
    }

    /// Starts `mnist-coordinator` on a free port with `db` and extra
    /// environment variables.
    pub fn spawn_with_env(db: &Path, extra: &[&str], env: &[(&str, &str)]) -> CoordProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mnist-coordinator"))
            .args(["--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mnist-coordinator");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(url) = line.strip_prefix("mnist-coordinator listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = rx.recv_timeout(Duration::from_secs(60)).expect("the coordinator printed its address");
        CoordProcess { child, url }
    }

    /// SIGKILL (`kill -9`), then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        self.child.wait().expect("wait")
    }
}

impl Drop for CoordProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A study spec with a small generic space.
pub fn small_spec(name: &str, n_trials: u32) -> pb::StudySpec {
    pb::StudySpec {
        name: name.into(),
        direction: pb::Direction::Minimize as i32,
        metric: "loss".into(),
        search_space: Some(pb::SearchSpaceSource {
            source: Some(pb::search_space_source::Source::Toml(
                "[x]\ntype = \"float\"\nlow = -5.0\nhigh = 5.0\n\n[k]\ntype = \"int\"\nlow = 1\nhigh = 9\n".into(),
            )),
        }),
        sampler: Some(pb::SamplerSpec { kind: "random".into(), seed: Some(7), options_json: String::new() }),
        n_trials,
        ..Default::default()
    }
}

/// Creates a study from `spec`.
pub async fn create(c: &mut Clients, spec: pb::StudySpec) -> pb::Study {
    c.study
        .create_study(pb::CreateStudyRequest { spec: Some(spec), load_if_exists: false })
        .await
        .expect("create study")
        .into_inner()
        .study
        .expect("study")
}

/// Registers a worker with `n` CPU slots.
pub async fn register(c: &mut Clients, id: &str, n: usize) -> String {
    let devices = (0..n).map(|i| pb::Device { name: format!("cpu:{i}"), kind: "cpu".into(), ..Default::default() }).collect();
    c.worker
        .register_worker(pb::RegisterWorkerRequest {
            worker_id: id.into(),
            hostname: "test-host".into(),
            devices,
            labels: Default::default(),
        })
        .await
        .expect("register")
        .into_inner()
        .worker_id
}

/// Acquires a trial for (worker, slot), without waiting.
pub async fn acquire(c: &mut Clients, worker: &str, slot: u32) -> Option<pb::TrialAssignment> {
    c.worker
        .acquire_trial(pb::AcquireTrialRequest { worker_id: worker.into(), slot, study_name: String::new(), wait_ms: 0 })
        .await
        .expect("acquire")
        .into_inner()
        .trial
}

/// A number parameter.
pub fn num(p: &pb::ParamValue) -> f64 {
    match p.kind {
        Some(pb::param_value::Kind::FloatValue(x)) => x,
        Some(pb::param_value::Kind::IntValue(i)) => i as f64,
        _ => panic!("not a number: {p:?}"),
    }
}

/// A scratch directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// The project's Python with Optuna, when present.
pub fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("MNIST_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    p.exists().then_some(p)
}

/// Polls `f` until it returns `Some`, for up to `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not met within {secs}s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first message of an `UploadArtifact` stream.
pub fn artifact_header(trial_id: i64, token: u64, name: &str, size: Option<u64>, sha256: &str) -> pb::UploadArtifactRequest {
    pb::UploadArtifactRequest {
        part: Some(pb::upload_artifact_request::Part::Header(pb::ArtifactHeader {
            trial_id,
            lease_token: token,
            name: name.into(),
            size_bytes: size,
            sha256: sha256.into(),
            content_type: "application/octet-stream".into(),
        })),
    }
}

/// A later message of an `UploadArtifact` stream: the next bytes.
pub fn artifact_chunk(data: &[u8]) -> pb::UploadArtifactRequest {
    pb::UploadArtifactRequest { part: Some(pb::upload_artifact_request::Part::Chunk(data.to_vec())) }
}

/// Starts an upload whose stream stays open: messages go through the returned
/// sender, and the call's result comes from the task once the sender is dropped.
pub fn open_upload(
    c: &Clients,
) -> (tokio::sync::mpsc::Sender<pb::UploadArtifactRequest>, tokio::task::JoinHandle<Result<tonic::Response<pb::UploadArtifactResponse>, tonic::Status>>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut c = c.clone();
    let call = tokio::spawn(async move { c.worker.upload_artifact(tokio_stream::wrappers::ReceiverStream::new(rx)).await });
    (tx, call)
}

/// The names of the unfinished uploads' temporary files in `dir`.
pub fn upload_temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(".upload-")).collect())
        .unwrap_or_default()
}
