//! The worker library's error type: what stops a worker as a whole (a bad
//! flag, no usable device, no data set, a coordinator that refuses it). A
//! problem with one trial never becomes a `WorkerError`: the trial is failed,
//! released or dropped and the worker goes on.

use std::path::PathBuf;

/// Why the worker cannot run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A setting is invalid (the message names the flag).
    #[error("{0}")]
    Config(String),
    /// A requested device cannot be used.
    /// (The message carries the cause, so it is not also a `source`:
    /// error chains would print it twice.)
    #[error("a device of --devices cannot be used: {0}")]
    Device(mnist_trainer::device::DeviceError),
    /// The coordinator address is not a valid URL.
    #[error("{message}")]
    Address { url: String, message: String },
    /// The coordinator answered with an error that retrying will not fix.
    #[error("the coordinator refused {call}: {status}")]
    Refused { call: &'static str, status: String },
    /// The data set is missing locally and could not be fetched, or fails
    /// verification.
    #[error(transparent)]
    Data(#[from] mnist_common::mnist::DataError),
    /// Fetching the data set from the coordinator failed.
    #[error("fetching MNIST from the coordinator into {dir}: {message}")]
    Fetch { dir: PathBuf, message: String },
    /// A local file could not be written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The worker was shut down before it could start.
    #[error("shut down before the worker started")]
    Shutdown,
}

impl WorkerError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> WorkerError {
        let path = path.into();
        move |source| WorkerError::Io { path, source }
    }
}

impl From<mnist_trainer::device::DeviceError> for WorkerError {
    fn from(e: mnist_trainer::device::DeviceError) -> Self {
        WorkerError::Device(e)
    }
}
