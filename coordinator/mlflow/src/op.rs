//! The operations the rest of the system asks MLflow for. Each names its run
//! by a stable *run key* of ours; the MLflow run id it maps to is learned at
//! delivery and stored in the outbox, so an operation written before MLflow
//! was reachable still lands in the right run.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One point of a metric's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    pub key: String,
    #[serde(with = "lenient_f64")]
    pub value: f64,
    /// Fixed when the operation is written, so a resent point is the same
    /// point (MLflow keeps one copy of an identical key/value/time/step).
    pub timestamp_ms: i64,
    pub step: i64,
}

/// A run's status in MLflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    Running,
    Finished,
    Failed,
    Killed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

/// What decides whether a new version takes the alias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasRule {
    /// The metric compared, stored as a version tag of that name.
    pub metric: String,
    #[serde(with = "lenient_f64")]
    pub value: f64,
    pub maximize: bool,
}

/// One MLflow operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Creates the run (in `experiment`, created if missing), nested under
    /// `parent_key`'s run when given, then logs `params`. Delivered at most
    /// once: a run already carrying our `mnist.run_key` tag is adopted.
    StartRun {
        run_key: String,
        experiment: String,
        run_name: String,
        parent_key: Option<String>,
        start_ms: i64,
        tags: Vec<(String, String)>,
        #[serde(default)]
        params: Vec<(String, String)>,
    },
    /// Metrics, params and tags, split into as many `log-batch` calls as
    /// MLflow's limits need.
    Log {
        run_key: String,
        #[serde(default)]
        metrics: Vec<MetricPoint>,
        #[serde(default)]
        params: Vec<(String, String)>,
        #[serde(default)]
        tags: Vec<(String, String)>,
    },
    /// Logs the last `metrics` and `tags`, then sets the run's status
    /// (`end_ms` for a finished run).
    SetStatus {
        run_key: String,
        status: RunStatus,
        end_ms: Option<i64>,
        #[serde(default)]
        metrics: Vec<MetricPoint>,
        #[serde(default)]
        tags: Vec<(String, String)>,
    },
    /// Uploads a local file into the run's artifacts at `path`.
    Artifact { run_key: String, path: String, file: String },
    /// Records the model directory at `artifact_path` as a logged model
    /// (`runs/log-model`); `flavors` is the `MLmodel` flavours as JSON.
    LogModel { run_key: String, artifact_path: String, time_ms: i64, flavors: Value },
    /// Registers the run's model directory as a version of `model_name`,
    /// with `tags`, and moves `alias` to it when there is no alias yet, or
    /// when `rule` says it is better than the aliased version by the same
    /// metric (a version tag of that name). A champion without that tag was
    /// chosen by another metric and keeps the alias.
    Register {
        run_key: String,
        model_name: String,
        artifact_path: String,
        alias: String,
        tags: Vec<(String, String)>,
        rule: Option<AliasRule>,
    },
}

impl Op {
    /// The run this operation belongs to.
    pub fn run_key(&self) -> &str {
        match self {
            Op::StartRun { run_key, .. }
            | Op::Log { run_key, .. }
            | Op::SetStatus { run_key, .. }
            | Op::Artifact { run_key, .. }
            | Op::LogModel { run_key, .. }
            | Op::Register { run_key, .. } => run_key,
        }
    }

    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::StartRun { .. } => "start_run",
            Op::Log { .. } => "log",
            Op::SetStatus { .. } => "set_status",
            Op::Artifact { .. } => "artifact",
            Op::LogModel { .. } => "log_model",
            Op::Register { .. } => "register",
        }
    }
}

impl Op {
    /// What is left of a refused operation worth sending again when `later`
    /// operations (of any run; others are ignored) were written after it.
    /// A run's tags and status keep the last value written and an artifact
    /// path the last file uploaded there, so an old value resent after a
    /// newer one would set it back: those parts go. Metric points, params
    /// and models are history or set once, and stay. `None` when nothing is
    /// left.
    pub fn without_superseded<'a>(&self, later: impl IntoIterator<Item = &'a Op>) -> Option<Op> {
        let key = self.run_key();
        let mut later_tags: HashSet<&str> = HashSet::new();
        let mut later_status = false;
        let mut later_paths: HashSet<&str> = HashSet::new();
        for op in later.into_iter().filter(|op| op.run_key() == key) {
            match op {
                Op::StartRun { tags, .. } | Op::Log { tags, .. } => later_tags.extend(tags.iter().map(|(k, _)| k.as_str())),
                Op::SetStatus { tags, .. } => {
                    later_tags.extend(tags.iter().map(|(k, _)| k.as_str()));
                    later_status = true;
                }
                Op::Artifact { path, .. } => {
                    later_paths.insert(path);
                }
                Op::LogModel { .. } | Op::Register { .. } => {}
            }
        }
        let keep_tags = |tags: &[(String, String)]| -> Vec<(String, String)> {
            tags.iter().filter(|(k, _)| !later_tags.contains(k.as_str())).cloned().collect()
        };
        match self {
            Op::Log { run_key, metrics, params, tags } => {
                let tags = keep_tags(tags);
                (!(metrics.is_empty() && params.is_empty() && tags.is_empty()))
                    .then(|| Op::Log { run_key: run_key.clone(), metrics: metrics.clone(), params: params.clone(), tags })
            }
            Op::SetStatus { run_key, status, end_ms, metrics, tags } => {
                let tags = keep_tags(tags);
                if !later_status {
                    Some(Op::SetStatus { run_key: run_key.clone(), status: *status, end_ms: *end_ms, metrics: metrics.clone(), tags })
                } else if metrics.is_empty() && tags.is_empty() {
                    None
                } else {
                    Some(Op::Log { run_key: run_key.clone(), metrics: metrics.clone(), params: vec![], tags })
                }
            }
            Op::StartRun { run_key, experiment, run_name, parent_key, start_ms, tags, params } => Some(Op::StartRun {
                run_key: run_key.clone(),
                experiment: experiment.clone(),
                run_name: run_name.clone(),
                parent_key: parent_key.clone(),
                start_ms: *start_ms,
                tags: keep_tags(tags),
                params: params.clone(),
            }),
            Op::Artifact { path, .. } => (!later_paths.contains(path.as_str())).then(|| self.clone()),
            Op::LogModel { .. } | Op::Register { .. } => Some(self.clone()),
        }
    }
}

/// The `MLmodel` flavours of the training core's model directory (TorchScript
/// saved for `mlflow.pytorch`, served by `python_function`), as
/// `runs/log-model` wants them.
pub fn torch_flavors(pytorch_version: &str, python_version: &str) -> Value {
    serde_json::json!({
        "pytorch": {
            "model_data": "data",
            "pytorch_version": pytorch_version,
            "code": null
        },
        "python_function": {
            "loader_module": "mlflow.pytorch",
            "pickle_module_name": "mlflow.pytorch.pickle_module",
            "data": "data",
            "env": { "conda": "conda.yaml", "virtualenv": "python_env.yaml" },
            "python_version": python_version
        }
    })
}

/// JSON has no NaN or infinity: they travel as the strings MLflow's protobuf
/// JSON uses. `None` for a finite number.
pub(crate) fn non_finite_name(v: f64) -> Option<&'static str> {
    if v.is_nan() {
        Some("NaN")
    } else if v == f64::INFINITY {
        Some("Infinity")
    } else if v == f64::NEG_INFINITY {
        Some("-Infinity")
    } else {
        None
    }
}

/// Serde for an `f64` that may be NaN or infinite (see [`non_finite_name`]).
mod lenient_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        match super::non_finite_name(*v) {
            Some(name) => s.serialize_str(name),
            None => s.serialize_f64(*v),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        F(f64),
        S(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Num::deserialize(d)? {
            Num::F(f) => Ok(f),
            Num::S(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                other => Err(serde::de::Error::custom(format!("{other:?} is not a number"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    fn point(key: &str, step: i64) -> MetricPoint {
        MetricPoint { key: key.into(), value: 0.5, timestamp_ms: 1, step }
    }

    #[test]
    fn a_refused_operation_resent_later_drops_what_newer_operations_replaced() {
        let old = Op::Log {
            run_key: "r".into(),
            metrics: vec![point("loss", 1)],
            params: vec![tag("lr", "0.1")],
            tags: vec![tag("best.lr", "0.1"), tag("note", "a")],
        };
        let newer = Op::Log { run_key: "r".into(), metrics: vec![], params: vec![], tags: vec![tag("best.lr", "0.2")] };
        let other_run = Op::Log { run_key: "s".into(), metrics: vec![], params: vec![], tags: vec![tag("note", "b")] };
        let want = Op::Log {
            run_key: "r".into(),
            metrics: vec![point("loss", 1)],
            params: vec![tag("lr", "0.1")],
            tags: vec![tag("note", "a")],
        };
        assert_eq!(old.without_superseded([&newer, &other_run]), Some(want), "best.lr was set again later; note only on another run");
        assert_eq!(old.without_superseded([]), Some(old.clone()), "nothing later: resent whole");

        let only_tags = Op::Log { run_key: "r".into(), metrics: vec![], params: vec![], tags: vec![tag("best.lr", "0.1")] };
        assert_eq!(only_tags.without_superseded([&newer]), None, "all replaced: nothing to send");
    }

    #[test]
    fn an_old_status_is_not_resent_after_a_newer_one_but_its_metrics_are() {
        let running = Op::SetStatus {
            run_key: "r".into(),
            status: RunStatus::Running,
            end_ms: None,
            metrics: vec![point("acc", 2)],
            tags: vec![tag("state", "running")],
        };
        let finished = Op::SetStatus {
            run_key: "r".into(),
            status: RunStatus::Finished,
            end_ms: Some(9),
            metrics: vec![],
            tags: vec![tag("state", "done")],
        };
        let want = Op::Log { run_key: "r".into(), metrics: vec![point("acc", 2)], params: vec![], tags: vec![] };
        assert_eq!(running.without_superseded([&finished]), Some(want));
        assert_eq!(finished.without_superseded([&running]), None, "a later status and the same tag: nothing left");
    }

    #[test]
    fn an_upload_is_not_resent_over_a_newer_file_at_the_same_path() {
        let up = |path: &str, file: &str| Op::Artifact { run_key: "r".into(), path: path.into(), file: file.into() };
        assert_eq!(up("plots/a.png", "/1").without_superseded([&up("plots/a.png", "/2")]), None);
        assert_eq!(up("plots/a.png", "/1").without_superseded([&up("plots/b.png", "/2")]), Some(up("plots/a.png", "/1")));
        let register = Op::Register {
            run_key: "r".into(),
            model_name: "m".into(),
            artifact_path: "model".into(),
            alias: "champion".into(),
            tags: vec![],
            rule: None,
        };
        assert_eq!(register.without_superseded([&register.clone()]), Some(register.clone()), "registering is kept");
    }

    #[test]
    fn ops_round_trip_through_json_with_non_finite_values() {
        let op = Op::Log {
            run_key: "r".into(),
            metrics: vec![
                MetricPoint { key: "a".into(), value: f64::NAN, timestamp_ms: 1, step: 0 },
                MetricPoint { key: "b".into(), value: f64::NEG_INFINITY, timestamp_ms: 1, step: 1 },
                MetricPoint { key: "c".into(), value: 0.25, timestamp_ms: 1, step: 2 },
            ],
            params: vec![("p".into(), "1".into())],
            tags: vec![],
        };
        let s = serde_json::to_string(&op).unwrap();
        let back: Op = serde_json::from_str(&s).unwrap();
        let Op::Log { metrics, .. } = back else { panic!("wrong op {s}") };
        assert!(metrics[0].value.is_nan());
        assert_eq!(metrics[1].value, f64::NEG_INFINITY);
        assert_eq!(metrics[2].value, 0.25);
    }
}
