//! Where the tracking server is and how we authenticate, by MLflow's own
//! conventions: `MLFLOW_TRACKING_URI`, `MLFLOW_TRACKING_USERNAME` and
//! `MLFLOW_TRACKING_PASSWORD` (basic auth), `MLFLOW_TRACKING_TOKEN` (bearer),
//! `MLFLOW_EXPERIMENT_NAME`. Command-line flags override the environment.

use crate::error::MlflowError;

/// The registered model name used unless configured otherwise.
pub const DEFAULT_MODEL_NAME: &str = "mnist-cnn";
/// The alias moved to the best model version.
pub const DEFAULT_ALIAS: &str = "champion";

/// How requests authenticate.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    #[default]
    None,
    Basic { username: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        match self {
            Auth::None => write!(f, "None"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Auth::Bearer(_) => write!(f, "Bearer(***)"),
        }
    }
}

/// The MLflow settings of one process.
#[derive(Debug, Clone, PartialEq)]
pub struct MlflowConfig {
    /// `http(s)://host:port` of the tracking server, without a trailing `/`;
    /// `None` when no server is configured (operations wait in the outbox).
    pub tracking_uri: Option<String>,
    pub auth: Auth,
    /// One experiment for everything, instead of one per study.
    pub experiment_name: Option<String>,
    /// The registered model's name (`mnist-cnn`).
    pub model_name: String,
    /// The alias that follows the best version (`champion`).
    pub alias: String,
}

impl Default for MlflowConfig {
    fn default() -> Self {
        MlflowConfig {
            tracking_uri: None,
            auth: Auth::None,
            experiment_name: None,
            model_name: DEFAULT_MODEL_NAME.to_string(),
            alias: DEFAULT_ALIAS.to_string(),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

impl MlflowConfig {
    /// Reads the `MLFLOW_*` environment variables, then applies the
    /// overrides given on the command line (`Some` wins).
    pub fn from_env_and(
        tracking_uri: Option<String>,
        experiment_name: Option<String>,
        model_name: Option<String>,
    ) -> Result<MlflowConfig, MlflowError> {
        let auth = match (env("MLFLOW_TRACKING_TOKEN"), env("MLFLOW_TRACKING_USERNAME"), env("MLFLOW_TRACKING_PASSWORD")) {
            (Some(token), None, None) => Auth::Bearer(token),
            (None, Some(username), Some(password)) => Auth::Basic { username, password },
            (None, None, None) => Auth::None,
            (Some(_), _, _) => {
                return Err(MlflowError::Config(
                    "set either MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD, not both".into(),
                ))
            }
            (None, Some(_), None) => return Err(MlflowError::Config("MLFLOW_TRACKING_USERNAME is set but MLFLOW_TRACKING_PASSWORD is not".into())),
            (None, None, Some(_)) => return Err(MlflowError::Config("MLFLOW_TRACKING_PASSWORD is set but MLFLOW_TRACKING_USERNAME is not".into())),
        };
        let uri = tracking_uri.filter(|u| !u.trim().is_empty()).or_else(|| env("MLFLOW_TRACKING_URI"));
        let cfg = MlflowConfig {
            tracking_uri: uri.map(|u| normalize_uri(&u)).transpose()?,
            auth,
            experiment_name: experiment_name.filter(|e| !e.trim().is_empty()).or_else(|| env("MLFLOW_EXPERIMENT_NAME")),
            model_name: model_name.filter(|m| !m.trim().is_empty()).unwrap_or_else(|| DEFAULT_MODEL_NAME.to_string()),
            alias: DEFAULT_ALIAS.to_string(),
        };
        Ok(cfg)
    }

    /// The MLflow UI page of a run.
    pub fn run_url(&self, experiment_id: &str, run_id: &str) -> Option<String> {
        self.tracking_uri.as_ref().map(|u| format!("{u}/#/experiments/{experiment_id}/runs/{run_id}"))
    }
}

/// Checks and normalises a tracking URI: only an HTTP(S) tracking server can
/// be reached over REST.
pub fn normalize_uri(uri: &str) -> Result<String, MlflowError> {
    let u = uri.trim().trim_end_matches('/');
    let rest = u.strip_prefix("http://").or_else(|| u.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(u.to_string()),
        _ => Err(MlflowError::Config(format!(
            "tracking URI {uri:?} is not an http(s) address; start a tracking server (`mlflow server --host 0.0.0.0 --port 5000`) \
             and set MLFLOW_TRACKING_URI=http://<host>:5000"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_checked() {
        assert_eq!(normalize_uri("http://127.0.0.1:5000/").unwrap(), "http://127.0.0.1:5000");
        assert_eq!(normalize_uri(" https://mlflow.example.com ").unwrap(), "https://mlflow.example.com");
        for bad in ["file:///tmp/mlruns", "sqlite:///x.db", "databricks", "http://", "./mlruns"] {
            let e = normalize_uri(bad).unwrap_err().to_string();
            assert!(e.contains("not an http(s) address"), "{bad}: {e}");
        }
    }

    #[test]
    fn secrets_are_not_printed() {
        let a = Auth::Basic { username: "alice".into(), password: "hunter2".into() };
        assert_eq!(format!("{a:?}"), "Basic(alice, ***)");
        assert!(!format!("{:?}", Auth::Bearer("tok".into())).contains("tok"));
    }
}

/// The MLflow flags every command shares (`--mlflow-tracking-uri`, ...).
/// Each falls back to MLflow's own environment variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MlflowArgs {
    /// The MLflow tracking server, e.g. http://127.0.0.1:5000 [env: MLFLOW_TRACKING_URI].
    /// Credentials come from MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (basic auth)
    /// or MLFLOW_TRACKING_TOKEN (bearer). Without a server, everything is kept in the
    /// outbox and `mnistctl mlflow sync` delivers it later.
    #[arg(long = "mlflow-tracking-uri", value_name = "URI", global = true)]
    pub mlflow_tracking_uri: Option<String>,
    /// The MLflow experiment to log into [env: MLFLOW_EXPERIMENT_NAME] (default: one experiment
    /// per study, named after the study; `mnist-train` for `train`).
    #[arg(long = "mlflow-experiment-name", alias = "mlflow_experiment_name", value_name = "NAME", global = true)]
    pub mlflow_experiment_name: Option<String>,
    /// The registered model that receives the best model, with the alias `champion`.
    #[arg(long = "mlflow-model-name", value_name = "NAME", default_value = DEFAULT_MODEL_NAME, global = true)]
    pub mlflow_model_name: String,
}

impl MlflowArgs {
    /// The configuration: these flags over the environment.
    pub fn config(&self) -> Result<MlflowConfig, MlflowError> {
        MlflowConfig::from_env_and(
            self.mlflow_tracking_uri.clone(),
            self.mlflow_experiment_name.clone(),
            Some(self.mlflow_model_name.clone()),
        )
    }
}
