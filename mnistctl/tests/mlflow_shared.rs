//! Two study databases logging to one real `mlflow server` (3.17.2), as when
//! a user deletes `tune.db` and runs again, or two machines share a server:
//! each database keeps its own runs (study ids and event numbers start at 1
//! in every database, and the runs were once keyed by those alone, so the
//! second database took over the first one's runs). Also: a resumed study
//! that ends with a new best updates its `best.*` tags, and nothing is
//! refused by MLflow.

#[path = "../../coordinator/mlflow/tests/support/mlflow_server.rs"]
mod mlflow_server;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mlflow_server::MlflowServer;
use mnist_mlflow::{MlflowClient, MlflowConfig};
use mnist_proto::v1 as pb;
use serde_json::Value;

fn kv(run: &Value, what: &str) -> BTreeMap<String, String> {
    run["data"][what]
        .as_array()
        .map(|a| a.iter().map(|t| (t["key"].as_str().unwrap_or("").to_string(), t["value"].as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default()
}

fn run_id(run: &Value) -> String {
    run["info"]["run_id"].as_str().unwrap_or("").to_string()
}

/// `mnistctl` against `url`; asserts success and returns stdout.
fn ctl(url: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mnistctl")).args(args).args(["--coordinator", url]).output().unwrap();
    assert!(out.status.success(), "mnistctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A coordinator on `db` that logs to `uri`.
async fn coordinator(db: &Path, uri: &str) -> mnist_coordinator::server::RunningServer {
    let mut cfg = mnist_coordinator::ServerConfig::new("127.0.0.1:0".parse().unwrap(), db.to_path_buf());
    cfg.coordinator.mlflow = MlflowConfig { tracking_uri: Some(uri.to_string()), ..MlflowConfig::default() };
    mnist_coordinator::server::start(cfg).await.expect("start the coordinator")
}

/// Asks for trials of `study` and tells each COMPLETE with `value(number)`,
/// until the study hands out no more. Returns the numbers told.
async fn run_trials(url: &str, study: &str, value: impl Fn(u64) -> f64) -> Vec<u64> {
    let mut at = pb::ask_tell_service_client::AskTellServiceClient::connect(url.to_string()).await.unwrap();
    let mut told = Vec::new();
    loop {
        let ask = pb::AskRequest { study_name: study.into(), client_id: "t".into(), slot: 0, wait_ms: 0 };
        let Some(t) = at.ask(ask).await.unwrap().into_inner().trial else { return told };
        at.tell(pb::TellRequest {
            trial_id: t.trial_id,
            lease_token: t.lease.map(|l| l.token).unwrap_or(0),
            state: pb::TrialState::Complete as i32,
            value: Some(value(t.number)),
            fail_reason: String::new(),
            metrics: Default::default(),
        })
        .await
        .unwrap();
        told.push(t.number);
    }
}

/// `study show -o json` once `n` trials have their MLflow runs and the
/// backlog is empty.
async fn delivered(url: &str, study: &str, n: usize) -> Value {
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        let v: Value = serde_json::from_str(&ctl(url, &["study", "show", study, "-o", "json"])).unwrap();
        if v["mlflow"]["pending"] == 0 && v["mlflow_trial_runs"].as_object().is_some_and(|m| m.len() == n) {
            return v;
        }
        assert!(Instant::now() < end, "MLflow delivery did not finish: {v:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_databases_on_one_server_keep_their_own_runs() {
    let server = MlflowServer::start();
    let uri = server.uri();
    let client = MlflowClient::new(&MlflowConfig { tracking_uri: Some(uri.clone()), ..MlflowConfig::default() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let space = dir.path().join("space.toml");
    std::fs::write(&space, "[x]\ntype = \"float\"\nlow = -3.0\nhigh = 3.0\n").unwrap();
    let enqueue = |url: &str, x: &str| ctl(url, &["trial", "enqueue", "shared", "--param", &format!("x={x}")]);

    // --- database A: two trials.
    let a = coordinator(&dir.path().join("a.db"), &uri).await;
    let url_a = a.url();
    ctl(&url_a, &["study", "create", "shared", "--space", space.to_str().unwrap(), "--n-trials", "2", "--sampler", "random", "--seed", "3", "--pruner", "none", "--metric", "loss", "--direction", "minimize"]);
    enqueue(&url_a, "0.5");
    assert_eq!(run_trials(&url_a, "shared", |n| 10.0 + n as f64).await, vec![0, 1]);
    let shown_a = delivered(&url_a, "shared", 2).await;
    assert_eq!(shown_a["mlflow"]["refused"], 0, "nothing refused: {shown_a:#}");
    let parent_a = shown_a["mlflow_run"]["run_id"].as_str().unwrap_or("").to_string();
    let trial0_a = shown_a["mlflow_trial_runs"]["0"]["run_id"].as_str().unwrap_or("").to_string();
    assert!(!parent_a.is_empty() && !trial0_a.is_empty(), "{shown_a:#}");
    assert_eq!(shown_a["state"], "COMPLETE", "{shown_a:#}");

    // --- database B, fresh, same study name, same server.
    let b = coordinator(&dir.path().join("b.db"), &uri).await;
    let url_b = b.url();
    ctl(&url_b, &["study", "create", "shared", "--space", space.to_str().unwrap(), "--n-trials", "1", "--sampler", "random", "--seed", "4", "--pruner", "none", "--metric", "loss", "--direction", "minimize"]);
    enqueue(&url_b, "1.0");
    assert_eq!(run_trials(&url_b, "shared", |_| 99.0).await, vec![0]);
    let shown_b = delivered(&url_b, "shared", 1).await;
    assert_eq!(shown_b["mlflow"]["refused"], 0, "{shown_b:#}");
    let parent_b = shown_b["mlflow_run"]["run_id"].as_str().unwrap_or("").to_string();
    let trial0_b = shown_b["mlflow_trial_runs"]["0"]["run_id"].as_str().unwrap_or("").to_string();
    assert_ne!(parent_a, parent_b, "each database has its own parent run");
    assert_ne!(trial0_a, trial0_b, "each database has its own trial-0 run");

    let exp = client.experiment_id("shared").await.unwrap().expect("experiment `shared`");
    let runs = client.search_runs(&exp).await.unwrap();
    let by_id: BTreeMap<String, &Value> = runs.iter().map(|r| (run_id(r), r)).collect();
    let parents = runs.iter().filter(|r| kv(r, "tags").get("mnist.kind").map(String::as_str) == Some("study")).count();
    assert_eq!(parents, 2, "two parent runs");
    assert_eq!(runs.len(), 2 + 2 + 1, "one run per trial of each database");
    // Each trial 0 sits under its own parent with its own params and value.
    assert_eq!(kv(by_id[&trial0_a], "tags").get("mlflow.parentRunId"), Some(&parent_a));
    assert_eq!(kv(by_id[&trial0_b], "tags").get("mlflow.parentRunId"), Some(&parent_b));
    assert_eq!(kv(by_id[&trial0_a], "params").get("x").map(String::as_str), Some("0.5"));
    assert_eq!(kv(by_id[&trial0_b], "params").get("x").map(String::as_str), Some("1.0"));
    assert_eq!(client.metric_history(&trial0_a, "objective").await.unwrap(), vec![(0, 10.0)]);
    assert_eq!(client.metric_history(&trial0_b, "objective").await.unwrap(), vec![(0, 99.0)]);

    // --- A resumed: a better trial changes the best; the parent's best.*
    // tags follow (MLflow params could not), and nothing is refused.
    let best_before = kv(by_id[&parent_a], "tags");
    assert!(best_before.contains_key("best.x"), "best params are tags: {best_before:?}");
    assert!(!kv(by_id[&parent_a], "params").keys().any(|k| k.starts_with("best.")), "no best.* params");
    ctl(&url_a, &["study", "resume", "shared", "--n-trials", "3"]);
    enqueue(&url_a, "-2.5");
    let told = run_trials(&url_a, "shared", |_| 1.0).await;
    assert_eq!(told.len(), 1, "{told:?}");
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        let shown = delivered(&url_a, "shared", 3).await;
        assert_eq!(shown["mlflow"]["refused"], 0, "{shown:#}");
        let tags: BTreeMap<String, String> = client
            .search_runs(&exp)
            .await
            .unwrap()
            .iter()
            .find(|r| run_id(r) == parent_a)
            .map(|r| kv(r, "tags"))
            .unwrap_or_default();
        if tags.get("best.x").map(String::as_str) == Some("-2.5") {
            assert_eq!(tags.get("mnist.n_trials").map(String::as_str), Some("3"), "{tags:?}");
            break;
        }
        assert!(Instant::now() < end, "the parent's best.x tag did not follow the new best: {tags:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
