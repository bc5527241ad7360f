//! Helpers shared by the `mnistctl` integration tests: where the repository
//! and the MNIST copy are, reading a log, and waiting for a child process.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// MNIST for tests: `MNIST_TEST_DATA`, else `<repo>/../shared/data/mnist`.
pub fn data_dir() -> PathBuf {
    std::env::var_os("MNIST_TEST_DATA").map(PathBuf::from).unwrap_or_else(|| repo().join("../shared/data/mnist"))
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
