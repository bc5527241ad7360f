//! Helpers shared by the `mnistctl` integration tests: where the repository
//! and the MNIST copy are, a quick `mnistctl tune`, reading a log, and waiting
//! for a child process.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// MNIST for tests: `MNIST_TEST_DATA`, else `<repo>/../shared/data/mnist`.
pub fn data_dir() -> PathBuf {
    std::env::var_os("MNIST_TEST_DATA").map(PathBuf::from).unwrap_or_else(|| repo().join("../shared/data/mnist"))
}

/// `mnistctl tune` with a tiny CNN on a slice of the data, on one CPU thread,
/// with its database (`t.db`) and work directory under `dir`; tests add the
/// study, trials, epochs and the rest.
pub fn tiny_tune(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mnistctl"));
    c.arg("tune")
        .args(["--val-size", "300", "--test-limit", "500", "--devices", "cpu", "--torch-threads", "1"])
        .args(["--base", "conv1_channels=4", "--base", "conv2_channels=8", "--base", "fc_width=16", "--base", "batch_size=50"])
        .arg("--storage")
        .arg(dir.join("t.db"))
        .arg("--work-dir")
        .arg(dir.join("work"))
        .arg("--data-dir")
        .arg(data_dir())
        .env("MNIST_NO_PROGRESS", "1")
        .env("RUST_LOG", "info");
    c
}

/// A file's text, or "" when it cannot be read.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Waits for `child` to exit; past `timeout` it is killed and the test fails
/// with the contents of `logs`.
pub fn wait(child: &mut Child, timeout: Duration, logs: &[&Path]) -> ExitStatus {
    let end = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let text: Vec<String> = logs.iter().map(|p| format!("{}:\n{}", p.display(), read(p))).collect();
            panic!("the process did not finish within {timeout:?}\n{}", text.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
