//! The library's error type. Each variant corresponds to one gRPC status
//! code (see `rpc::status`), and every message says what to change.

use crate::storage::StorageError;

/// What a coordinator operation can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CoordError {
    /// The request is malformed (INVALID_ARGUMENT).
    #[error("{0}")]
    InvalidArgument(String),
    /// The study, trial or worker does not exist (NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// The name is taken (ALREADY_EXISTS).
    #[error("{0}")]
    AlreadyExists(String),
    /// The state forbids it: a lost lease (fencing), a finished trial, a
    /// stopped study (FAILED_PRECONDITION).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The bytes that arrived are not the bytes announced: an upload's size
    /// or SHA-256 differs (DATA_LOSS). Sending the file again may work.
    #[error("{0}")]
    DataLoss(String),
    /// The database failed or is closing (UNAVAILABLE).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A bug or an I/O failure on the coordinator (INTERNAL).
    #[error("{0}")]
    Internal(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = CoordError> = std::result::Result<T, E>;

/// Checks a study name: 1 to 512 characters, no control characters.
pub fn check_study_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(CoordError::InvalidArgument("the study name is empty; give a name such as `mnist-cnn`".into()));
    }
    if name.chars().count() > 512 {
        return Err(CoordError::InvalidArgument(format!(
            "the study name is {} characters long; the limit is 512",
            name.chars().count()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(CoordError::InvalidArgument(format!("the study name {name:?} contains control characters")));
    }
    Ok(())
}

/// Checks a worker or client id: 1 to 128 characters of `[A-Za-z0-9._:-]`.
pub fn check_holder_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c)) {
        return Err(CoordError::InvalidArgument(format!(
            "{what} {id:?} is not valid: use 1 to 128 characters of A-Z a-z 0-9 . _ : -"
        )));
    }
    Ok(())
}
