//! One async call per MLflow REST endpoint we use. Every call maps the
//! answer into [`MlflowError`], so callers can tell "try again later" from
//! "this request is wrong".

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::{Auth, MlflowConfig};
use crate::error::MlflowError;
use crate::op::MetricPoint;

/// Per-request limit; an artifact upload gets more (see [`MlflowClient::upload_artifact`]).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// A run as MLflow describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    pub run_id: String,
    pub experiment_id: String,
    pub artifact_uri: String,
}

/// A registered model version.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersion {
    pub version: String,
    pub run_id: String,
    pub tags: Vec<(String, String)>,
}

/// A client of one tracking server.
#[derive(Debug, Clone)]
pub struct MlflowClient {
    http: reqwest::Client,
    uri: String,
    auth: Auth,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    error_code: String,
    #[serde(default)]
    message: String,
}

#[derive(Serialize)]
struct Kv<'a> {
    key: &'a str,
    value: &'a str,
}

fn kvs(pairs: &[(String, String)]) -> Vec<Kv<'_>> {
    pairs.iter().map(|(k, v)| Kv { key: k, value: v }).collect()
}

/// MLflow's JSON for a metric value: protobuf JSON writes non-finite doubles
/// as the strings "NaN", "Infinity" and "-Infinity".
fn metric_value(v: f64) -> Value {
    match crate::op::non_finite_name(v) {
        Some(name) => json!(name),
        None => json!(v),
    }
}

fn run_info(endpoint: &str, v: &Value) -> Result<RunInfo, MlflowError> {
    let info = &v["info"];
    let s = |k: &str| info[k].as_str().map(str::to_string);
    match (s("run_id").or_else(|| s("run_uuid")), s("experiment_id"), s("artifact_uri")) {
        (Some(run_id), Some(experiment_id), Some(artifact_uri)) => Ok(RunInfo { run_id, experiment_id, artifact_uri }),
        _ => Err(MlflowError::Protocol { endpoint: endpoint.into(), message: format!("run without id or artifact URI: {v}") }),
    }
}

fn model_version(endpoint: &str, v: &Value) -> Result<ModelVersion, MlflowError> {
    let version = match &v["version"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(MlflowError::Protocol { endpoint: endpoint.into(), message: format!("model version without a number: {v}") }),
    };
    let tags = v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| Some((t["key"].as_str()?.to_string(), t["value"].as_str().unwrap_or("").to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(ModelVersion { version, run_id: v["run_id"].as_str().unwrap_or("").to_string(), tags })
}

/// Quotes a value for MLflow's search filter syntax.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl MlflowClient {
    /// A client for `config.tracking_uri`.
    pub fn new(config: &MlflowConfig) -> Result<MlflowClient, MlflowError> {
        let uri = config
            .tracking_uri
            .clone()
            .ok_or_else(|| MlflowError::Config("no tracking server is configured (set MLFLOW_TRACKING_URI)".into()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("mnist-tune/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| MlflowError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(MlflowClient { http, uri, auth: config.auth.clone() })
    }

    /// The tracking server's address.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn authed(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::None => rb,
            Auth::Basic { username, password } => rb.basic_auth(username, Some(password)),
            Auth::Bearer(t) => rb.bearer_auth(t),
        }
    }

    async fn send(&self, endpoint: &str, rb: reqwest::RequestBuilder) -> Result<Value, MlflowError> {
        let resp = self.authed(rb).send().await.map_err(|e| MlflowError::Unreachable {
            uri: self.uri.clone(),
            message: format!("{endpoint}: {}", error_chain(&e)),
        })?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| MlflowError::Unreachable {
            uri: self.uri.clone(),
            message: format!("{endpoint}: reading the answer: {}", error_chain(&e)),
        })?;
        if (200..300).contains(&status) {
            if body.trim().is_empty() {
                return Ok(Value::Object(Default::default()));
            }
            return serde_json::from_str(&body).map_err(|e| MlflowError::Protocol {
                endpoint: endpoint.into(),
                message: format!("not JSON ({e}): {}", clip(&body)),
            });
        }
        if status == 401 {
            return Err(MlflowError::Auth { uri: self.uri.clone(), status, message: clip(&body) });
        }
        if status == 403 {
            return Err(MlflowError::Forbidden { uri: self.uri.clone(), endpoint: endpoint.into(), message: clip(&body) });
        }
        let (error_code, message) = match serde_json::from_str::<ApiError>(&body) {
            Ok(e) if !e.error_code.is_empty() || !e.message.is_empty() => (e.error_code, e.message),
            _ => (String::new(), clip(&body)),
        };
        Err(MlflowError::Api { endpoint: endpoint.into(), status, error_code, message })
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, MlflowError> {
        let url = format!("{}/api/2.0/mlflow/{path}", self.uri);
        self.send(path, self.http.post(url).json(&body)).await
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, MlflowError> {
        let url = format!("{}/api/2.0/mlflow/{path}", self.uri);
        self.send(path, self.http.get(url).query(query)).await
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<(), MlflowError> {
        let url = format!("{}/health", self.uri);
        let resp = self.http.get(url).send().await.map_err(|e| MlflowError::Unreachable {
            uri: self.uri.clone(),
            message: format!("health: {}", error_chain(&e)),
        })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(MlflowError::Api { endpoint: "health".into(), status: resp.status().as_u16(), error_code: String::new(), message: "not healthy".into() })
        }
    }

    /// Checks that the server answers and accepts our credentials (an
    /// authenticated read of the experiment list).
    pub async fn check_access(&self) -> Result<(), MlflowError> {
        self.post("experiments/search", json!({ "max_results": 1 })).await.map(|_| ())
    }

    /// The id of experiment `name`, if it exists (and is not deleted).
    pub async fn experiment_id(&self, name: &str) -> Result<Option<String>, MlflowError> {
        match self.get("experiments/get-by-name", &[("experiment_name", name)]).await {
            Ok(v) => {
                let exp = &v["experiment"];
                if exp["lifecycle_stage"].as_str() == Some("deleted") {
                    return Err(MlflowError::Permanent(format!(
                        "MLflow experiment {name:?} is deleted; restore it (`mlflow experiments restore`) or choose another name"
                    )));
                }
                Ok(exp["experiment_id"].as_str().map(str::to_string))
            }
            Err(e) if e.error_code() == Some("RESOURCE_DOES_NOT_EXIST") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The id of experiment `name`, created when missing.
    pub async fn ensure_experiment(&self, name: &str) -> Result<String, MlflowError> {
        if let Some(id) = self.experiment_id(name).await? {
            return Ok(id);
        }
        // Tagged as classic model training, so MLflow 3's UI opens it on its
        // runs table and charts rather than the GenAI (tracing) overview.
        let tags = json!([{ "key": "mlflow.experimentKind", "value": "custom_model_development" }]);
        match self.post("experiments/create", json!({ "name": name, "tags": tags })).await {
            Ok(v) => v["experiment_id"].as_str().map(str::to_string).ok_or_else(|| MlflowError::Protocol {
                endpoint: "experiments/create".into(),
                message: format!("no experiment_id in {v}"),
            }),
            // Someone created it between our two calls.
            Err(e) if e.error_code() == Some("RESOURCE_ALREADY_EXISTS") => self
                .experiment_id(name)
                .await?
                .ok_or_else(|| MlflowError::Permanent(format!("MLflow experiment {name:?} exists but cannot be read"))),
            Err(e) => Err(e),
        }
    }

    /// The active run in `experiment_id` carrying tag `key = value`, if any
    /// (a run deleted in MLflow is not taken over).
    pub async fn find_run_by_tag(&self, experiment_id: &str, key: &str, value: &str) -> Result<Option<RunInfo>, MlflowError> {
        let filter = format!("tags.`{key}` = {}", quote(value));
        let v = self
            .post(
                "runs/search",
                json!({ "experiment_ids": [experiment_id], "filter": filter, "max_results": 1, "run_view_type": "ACTIVE_ONLY" }),
            )
            .await?;
        match v["runs"].as_array().and_then(|r| r.first()) {
            Some(run) => run_info("runs/search", run).map(Some),
            None => Ok(None),
        }
    }

    /// Creates a run.
    pub async fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_ms: i64,
        tags: &[(String, String)],
    ) -> Result<RunInfo, MlflowError> {
        let v = self
            .post(
                "runs/create",
                json!({ "experiment_id": experiment_id, "run_name": run_name, "start_time": start_ms, "tags": kvs(tags) }),
            )
            .await?;
        run_info("runs/create", &v["run"])
    }

    /// One `log-batch` call; the caller keeps it within MLflow's limits
    /// (see [`crate::limits`]).
    pub async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[MetricPoint],
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<(), MlflowError> {
        let metrics: Vec<Value> = metrics
            .iter()
            .map(|m| json!({ "key": m.key, "value": metric_value(m.value), "timestamp": m.timestamp_ms, "step": m.step }))
            .collect();
        self.post("runs/log-batch", json!({ "run_id": run_id, "metrics": metrics, "params": kvs(params), "tags": kvs(tags) }))
            .await
            .map(|_| ())
    }

    /// Sets a run's status (and end time when it ended).
    pub async fn update_run(&self, run_id: &str, status: &str, end_ms: Option<i64>) -> Result<(), MlflowError> {
        let mut body = json!({ "run_id": run_id, "status": status });
        if let Some(t) = end_ms {
            body["end_time"] = json!(t);
        }
        self.post("runs/update", body).await.map(|_| ())
    }

    /// The value of tag `key` on a run, if set.
    pub async fn run_tag(&self, run_id: &str, key: &str) -> Result<Option<String>, MlflowError> {
        let v = self.get("runs/get", &[("run_id", run_id)]).await?;
        Ok(v["run"]["data"]["tags"]
            .as_array()
            .and_then(|tags| tags.iter().find(|t| t["key"].as_str() == Some(key)))
            .and_then(|t| t["value"].as_str().map(str::to_string)))
    }

    /// Records a logged model on the run (`runs/log-model`), which is what
    /// makes the UI offer "Register model".
    pub async fn log_model(&self, run_id: &str, model_json: &Value) -> Result<(), MlflowError> {
        self.post("runs/log-model", json!({ "run_id": run_id, "model_json": model_json.to_string() })).await.map(|_| ())
    }

    /// Uploads one file through the server's artifact proxy
    /// (`PUT /api/2.0/mlflow-artifacts/artifacts/...`) into the run whose
    /// artifact root is `artifact_uri`, at `path` inside it.
    pub async fn upload_artifact(&self, artifact_uri: &str, path: &str, bytes: Vec<u8>) -> Result<(), MlflowError> {
        let rest = proxied_path(artifact_uri)?;
        let url = format!("{}/api/2.0/mlflow-artifacts/artifacts/{}/{}", self.uri, rest, encode_path(path));
        let rb = self.http.put(url).timeout(UPLOAD_TIMEOUT).header("content-type", "application/octet-stream").body(bytes);
        self.send("mlflow-artifacts/artifacts (PUT)", rb).await.map(|_| ())
    }

    /// The files directly under `path` of a run's artifacts.
    pub async fn list_artifacts(&self, run_id: &str, path: &str) -> Result<Vec<(String, bool)>, MlflowError> {
        let v = self.get("artifacts/list", &[("run_id", run_id), ("path", path)]).await?;
        Ok(v["files"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| Some((f["path"].as_str()?.to_string(), f["is_dir"].as_bool().unwrap_or(false))))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Creates registered model `name`; an existing one is fine.
    pub async fn ensure_registered_model(&self, name: &str) -> Result<(), MlflowError> {
        match self.post("registered-models/create", json!({ "name": name })).await {
            Ok(_) => Ok(()),
            Err(e) if e.error_code() == Some("RESOURCE_ALREADY_EXISTS") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The version of model `name` made from run `run_id`, if any.
    pub async fn find_model_version(&self, name: &str, run_id: &str) -> Result<Option<ModelVersion>, MlflowError> {
        let filter = format!("name={} and run_id={}", quote(name), quote(run_id));
        let v = self.get("model-versions/search", &[("filter", &filter), ("max_results", "10")]).await?;
        match v["model_versions"].as_array().and_then(|a| a.first()) {
            Some(mv) => model_version("model-versions/search", mv).map(Some),
            None => Ok(None),
        }
    }

    /// Creates a version of model `name` from `source` (an artifact URI).
    pub async fn create_model_version(
        &self,
        name: &str,
        source: &str,
        run_id: &str,
        tags: &[(String, String)],
    ) -> Result<ModelVersion, MlflowError> {
        let v = self
            .post("model-versions/create", json!({ "name": name, "source": source, "run_id": run_id, "tags": kvs(tags) }))
            .await?;
        model_version("model-versions/create", &v["model_version"])
    }

    /// Sets a tag on a model version.
    pub async fn set_model_version_tag(&self, name: &str, version: &str, key: &str, value: &str) -> Result<(), MlflowError> {
        self.post("model-versions/set-tag", json!({ "name": name, "version": version, "key": key, "value": value }))
            .await
            .map(|_| ())
    }

    /// The version `alias` points at, if the alias exists.
    pub async fn version_by_alias(&self, name: &str, alias: &str) -> Result<Option<ModelVersion>, MlflowError> {
        match self.get("registered-models/alias", &[("name", name), ("alias", alias)]).await {
            Ok(v) => model_version("registered-models/alias", &v["model_version"]).map(Some),
            Err(e) if e.error_code() == Some("RESOURCE_DOES_NOT_EXIST") || e.error_code() == Some("INVALID_PARAMETER_VALUE") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Points `alias` of model `name` at `version`.
    pub async fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<(), MlflowError> {
        self.post("registered-models/alias", json!({ "name": name, "alias": alias, "version": version })).await.map(|_| ())
    }

    /// Runs of an experiment (for tests and `mnistctl`), at most 1000.
    pub async fn search_runs(&self, experiment_id: &str) -> Result<Vec<Value>, MlflowError> {
        let v = self
            .post("runs/search", json!({ "experiment_ids": [experiment_id], "max_results": 1000, "run_view_type": "ALL" }))
            .await?;
        Ok(v["runs"].as_array().cloned().unwrap_or_default())
    }

    /// A metric's full history (for tests and `mnistctl`).
    pub async fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<(i64, f64)>, MlflowError> {
        let v = self.get("metrics/get-history", &[("run_id", run_id), ("metric_key", key), ("max_results", "25000")]).await?;
        Ok(v["metrics"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| {
                        let value = match &m["value"] {
                            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                            Value::String(s) => s.parse().unwrap_or(f64::NAN),
                            _ => f64::NAN,
                        };
                        (m["step"].as_i64().or_else(|| m["step"].as_str().and_then(|s| s.parse().ok())).unwrap_or(0), value)
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// The part of a proxied artifact URI after the scheme:
/// `mlflow-artifacts:/1/<run>/artifacts` (or `mlflow-artifacts://host/1/...`)
/// → `1/<run>/artifacts`.
pub fn proxied_path(artifact_uri: &str) -> Result<String, MlflowError> {
    let rest = artifact_uri.strip_prefix("mlflow-artifacts:").ok_or_else(|| {
        MlflowError::Permanent(format!(
            "the run's artifact root is {artifact_uri:?}, not proxied by the tracking server; start `mlflow server` with \
             --artifacts-destination (artifact serving is on by default) so artifacts can be uploaded over HTTP"
        ))
    })?;
    let rest = match rest.strip_prefix("//") {
        // mlflow-artifacts://host:port/path
        Some(with_host) => with_host.split_once('/').map(|(_, p)| p).unwrap_or(""),
        None => rest.trim_start_matches('/'),
    };
    Ok(rest.trim_end_matches('/').to_string())
}

/// Percent-encodes each segment of a relative artifact path.
fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn clip(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s.to_string()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxied_paths() {
        assert_eq!(proxied_path("mlflow-artifacts:/1/abc/artifacts").unwrap(), "1/abc/artifacts");
        assert_eq!(proxied_path("mlflow-artifacts://h:5000/1/abc/artifacts/").unwrap(), "1/abc/artifacts");
        let e = proxied_path("/tmp/mlruns/1/abc/artifacts").unwrap_err().to_string();
        assert!(e.contains("--artifacts-destination"), "{e}");
    }

    #[test]
    fn paths_and_filters_are_escaped() {
        assert_eq!(encode_path("model/data/model.pth"), "model/data/model.pth");
        assert_eq!(encode_path("plots/a b#.png"), "plots/a%20b%23.png");
        assert_eq!(quote("it's"), "'it\\'s'");
        assert_eq!(metric_value(f64::NAN), json!("NaN"));
        assert_eq!(metric_value(f64::NEG_INFINITY), json!("-Infinity"));
        assert_eq!(metric_value(0.5), json!(0.5));
    }
}
