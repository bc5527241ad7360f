//! Errors of the MLflow client and outbox, each saying whether a retry can
//! help.

use thiserror::Error;

/// What went wrong talking to MLflow or to the outbox.
#[derive(Debug, Error)]
pub enum MlflowError {
    /// No answer: connection refused, reset, DNS, timeout. Retry later.
    #[error("MLflow at {uri} is unreachable: {message}")]
    Unreachable { uri: String, message: String },
    /// The server refused our credentials (HTTP 401).
    #[error(
        "MLflow at {uri} refused our credentials (HTTP {status}: {message}); set MLFLOW_TRACKING_USERNAME and \
         MLFLOW_TRACKING_PASSWORD (basic auth) or MLFLOW_TRACKING_TOKEN (bearer) to an account that may write here"
    )]
    Auth { uri: String, status: u16, message: String },
    /// The server knows who we are but does not let us do this (HTTP 403):
    /// with MLflow's basic-auth app, a permission on one experiment or
    /// registered model. Only this request is refused; others may pass.
    #[error(
        "MLflow at {uri} does not let this account do that (HTTP 403 on {endpoint}: {message}); give it EDIT (or \
         MANAGE) permission on the experiment or registered model, then `mnistctl mlflow sync --retry-refused`"
    )]
    Forbidden { uri: String, endpoint: String, message: String },
    /// The server answered with an error. `error_code` is MLflow's
    /// (`RESOURCE_DOES_NOT_EXIST`, `INVALID_PARAMETER_VALUE`, ...).
    #[error("MLflow {endpoint} failed with HTTP {status} {error_code}: {message}")]
    Api { endpoint: String, status: u16, error_code: String, message: String },
    /// The answer was not what MLflow's API documents.
    #[error("MLflow {endpoint} gave an unexpected answer: {message}")]
    Protocol { endpoint: String, message: String },
    /// A local file the operation needs.
    #[error("{path}: {message}")]
    File { path: String, message: String },
    /// The configuration is wrong (bad URI, ...).
    #[error("MLflow configuration: {0}")]
    Config(String),
    /// The operation cannot be delivered and retrying will not help.
    #[error("{0}")]
    Permanent(String),
    /// The outbox database.
    #[error("MLflow outbox database: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored operation could not be read back.
    #[error("MLflow outbox entry {id} is not valid: {message}")]
    Corrupt { id: i64, message: String },
    /// The file given as an outbox is not one: missing, not SQLite, or
    /// without the outbox tables. Nothing was written to it.
    #[error(
        "{path} is not an MLflow outbox ({why}); give a coordinator's study database or a training run's \
         mlflow-outbox.db (the file was left unchanged)"
    )]
    NotAnOutbox { path: String, why: String },
}

impl MlflowError {
    /// Whether the same request may succeed later unchanged: the server is
    /// down, overloaded (429, 5xx), or refused credentials that a restart
    /// with the right ones will fix.
    pub fn is_retryable(&self) -> bool {
        match self {
            MlflowError::Unreachable { .. } | MlflowError::Auth { .. } | MlflowError::Db(_) => true,
            MlflowError::Api { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// A 403 seen as refused credentials (the account cannot use the server
    /// at all, so every operation would be refused): it then waits at the
    /// head of the outbox like a 401. Any other error is returned unchanged.
    pub fn forbidden_as_auth(self) -> MlflowError {
        match self {
            MlflowError::Forbidden { uri, message, .. } => MlflowError::Auth { uri, status: 403, message },
            other => other,
        }
    }

    /// MLflow's error code, when the server gave one.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            MlflowError::Api { error_code, .. } => Some(error_code),
            _ => None,
        }
    }
}
