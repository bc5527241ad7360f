//! The worker's settings ([`WorkerConfig`]) and the `--devices` syntax
//! ([`DeviceSelection`]): `all`, `cpu`, or a comma-separated list such as
//! `cuda:0,cuda:1`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use mnist_trainer::DeviceSpec;

use crate::error::WorkerError;

/// Which devices get a slot (one trial each).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DeviceSelection {
    /// Every GPU the CUDA driver and libtorch see; the CPU when there is none.
    #[default]
    All,
    /// These devices, in order (`cpu`, `cuda:N`).
    List(Vec<DeviceSpec>),
}

impl FromStr for DeviceSelection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("all") || t.is_empty() {
            return Ok(DeviceSelection::All);
        }
        let mut out = Vec::new();
        for part in t.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let spec: DeviceSpec = part.parse().map_err(|e| format!("{e} (in --devices {s:?}; use all, cpu, or e.g. cuda:0,cuda:1)"))?;
            let spec = if spec == DeviceSpec::Auto {
                return Err(format!("--devices takes all, cpu or cuda:N, not {part:?}"));
            } else {
                spec
            };
            if out.contains(&spec) {
                return Err(format!("device {spec} is listed twice in --devices {s:?}"));
            }
            out.push(spec);
        }
        if out.is_empty() {
            return Err("--devices is empty; use all, cpu, or e.g. cuda:0,cuda:1".into());
        }
        Ok(DeviceSelection::List(out))
    }
}

impl fmt::Display for DeviceSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSelection::All => f.write_str("all"),
            DeviceSelection::List(l) => {
                let names: Vec<String> = l.iter().map(|d| d.to_string()).collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

/// Everything a worker needs; see the `mnist-worker` flags for the meaning
/// of each field.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The coordinator's URL, e.g. `http://10.0.0.5:50051`.
    pub coordinator: String,
    /// The devices to train on, one slot each.
    pub devices: DeviceSelection,
    /// The local MNIST directory (fetched from the coordinator when missing).
    pub data_dir: PathBuf,
    /// A persistent worker id; `None`: the coordinator assigns one.
    pub worker_id: Option<String>,
    /// Take trials from this study only.
    pub study: Option<String>,
    /// Where each trial's artifacts are written before they are uploaded.
    pub work_dir: PathBuf,
    /// Keep the local copy of the artifacts after a successful upload.
    pub keep_artifacts: bool,
    /// Exit after this many trials (over all slots).
    pub max_trials: Option<usize>,
    /// Exit once there is no RUNNING study (or `study` is no longer RUNNING).
    pub exit_when_idle: bool,
    /// First delay before retrying an unreachable coordinator.
    pub initial_backoff: Duration,
    /// Longest delay between retries.
    pub max_backoff: Duration,
    /// How long `AcquireTrial` long-polls for work.
    pub poll_wait: Duration,
    /// libtorch intra-op threads; `None`: libtorch's default.
    pub torch_threads: Option<i32>,
    /// Labels shown by `mnistctl workers` (version and pid are added).
    pub labels: Vec<(String, String)>,
    /// The host name to register; `None`: this machine's.
    pub hostname: Option<String>,
}

impl WorkerConfig {
    /// Defaults for a worker of `coordinator`.
    pub fn new(coordinator: impl Into<String>) -> Self {
        WorkerConfig {
            coordinator: coordinator.into(),
            devices: DeviceSelection::All,
            data_dir: PathBuf::from(mnist_common::mnist::DEFAULT_DATA_DIR),
            worker_id: None,
            study: None,
            work_dir: PathBuf::from("runs/worker"),
            keep_artifacts: false,
            max_trials: None,
            exit_when_idle: false,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            poll_wait: Duration::from_secs(2),
            torch_threads: None,
            labels: Vec::new(),
            hostname: None,
        }
    }

    /// Checks the settings that need nothing but themselves (the devices and
    /// the coordinator are checked when the worker starts), so that an
    /// embedding program can report them before other work.
    pub fn check(&self) -> Result<(), WorkerError> {
        if let Some(id) = &self.worker_id {
            if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c)) {
                return Err(WorkerError::Config(format!("--worker-id {id:?} is not valid: use 1 to 128 characters of A-Z a-z 0-9 . _ : -")));
            }
        }
        if self.max_trials == Some(0) {
            return Err(WorkerError::Config("--max-trials must be at least 1".into()));
        }
        if let Some(n) = self.torch_threads.filter(|n| *n < 1) {
            return Err(WorkerError::Config(format!("--torch-threads must be at least 1, got {n}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_lists() {
        assert_eq!("all".parse::<DeviceSelection>(), Ok(DeviceSelection::All));
        assert_eq!("cpu".parse::<DeviceSelection>(), Ok(DeviceSelection::List(vec![DeviceSpec::Cpu])));
        assert_eq!(
            "cuda:0, cuda:1".parse::<DeviceSelection>(),
            Ok(DeviceSelection::List(vec![DeviceSpec::Cuda(0), DeviceSpec::Cuda(1)]))
        );
        assert!("cuda:0,cuda:0".parse::<DeviceSelection>().unwrap_err().contains("twice"));
        assert!("tpu".parse::<DeviceSelection>().unwrap_err().contains("tpu"));
        assert!("auto".parse::<DeviceSelection>().is_err());
        assert_eq!(DeviceSelection::List(vec![DeviceSpec::Cpu, DeviceSpec::Cuda(2)]).to_string(), "cpu,cuda:2");
    }
}
