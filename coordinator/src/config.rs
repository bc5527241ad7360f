//! The coordinator's settings: where the database, the data set and the
//! artifacts are, and the lease, reaper and limit timings. No global state:
//! a [`CoordinatorConfig`] is passed to `Coordinator::open` (or inside a
//! [`ServerConfig`] to `server::start`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::storage::StorageOptions;

/// Settings of the domain and storage layers.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// The SQLite database (created when missing).
    pub db_path: PathBuf,
    /// The MNIST directory served by `FetchDataset`; `None`: no data set.
    pub data_dir: Option<PathBuf>,
    /// Where uploaded artifacts are stored; `None`: `<db file>.artifacts/`
    /// next to the database.
    pub artifact_dir: Option<PathBuf>,
    /// How long a lease lasts without a heartbeat.
    pub lease_duration: Duration,
    /// How often holders should heartbeat; `None`: a quarter of the lease.
    pub heartbeat_interval: Option<Duration>,
    /// How often the reaper looks for expired leases and timed-out studies.
    pub reaper_interval: Duration,
    /// After a restart, every lease found in the database is extended to at
    /// least now + this, so that workers have time to reconnect.
    pub restart_grace: Duration,
    /// A worker not heard from for this long is shown offline.
    pub worker_timeout: Duration,
    /// The longest long-poll of `AcquireTrial` / `Ask`.
    pub max_wait: Duration,
    /// The largest artifact file accepted.
    pub max_artifact_bytes: u64,
    /// Storage tuning.
    pub storage: StorageOptions,
    /// MLflow tracking (no tracking URI: operations wait in the outbox).
    pub mlflow: mnist_mlflow::MlflowConfig,
    /// On shutdown, how long to keep delivering to MLflow before leaving the
    /// rest in the outbox (delivered at the next start or by `mnistctl mlflow sync`).
    pub mlflow_drain: Duration,
}

impl CoordinatorConfig {
    /// Defaults with the given database path.
    pub fn new(db_path: impl Into<PathBuf>) -> Self {
        CoordinatorConfig {
            db_path: db_path.into(),
            data_dir: None,
            artifact_dir: None,
            lease_duration: Duration::from_secs(60),
            heartbeat_interval: None,
            reaper_interval: Duration::from_secs(1),
            restart_grace: Duration::from_secs(60),
            worker_timeout: Duration::from_secs(90),
            max_wait: Duration::from_secs(30),
            max_artifact_bytes: 4 << 30,
            storage: StorageOptions::default(),
            mlflow: mnist_mlflow::MlflowConfig::default(),
            mlflow_drain: Duration::from_secs(15),
        }
    }

    /// The heartbeat interval in effect.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat_interval.unwrap_or(self.lease_duration / 4).max(Duration::from_millis(10))
    }

    /// The artifact directory in effect, as an absolute path: the MLflow
    /// outbox stores the files' paths, and a delivery from another working
    /// directory (`mnistctl mlflow sync`, a restarted coordinator) must find
    /// them.
    pub fn artifacts_root(&self) -> PathBuf {
        let p = match &self.artifact_dir {
            Some(d) => d.clone(),
            None => {
                let mut p = self.db_path.clone().into_os_string();
                p.push(".artifacts");
                PathBuf::from(p)
            }
        };
        std::path::absolute(&p).unwrap_or(p)
    }
}

/// Settings of the gRPC server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address to listen on; port 0 picks a free port (see
    /// `RunningServer::local_addr`).
    pub listen: SocketAddr,
    /// The coordinator behind it.
    pub coordinator: CoordinatorConfig,
    /// How long a graceful shutdown waits for in-flight calls.
    pub shutdown_grace: Duration,
}

impl ServerConfig {
    /// A server on `listen` for the database at `db_path`, other settings default.
    pub fn new(listen: SocketAddr, db_path: impl Into<PathBuf>) -> Self {
        ServerConfig { listen, coordinator: CoordinatorConfig::new(db_path), shutdown_grace: Duration::from_secs(5) }
    }
}
