//! MLflow end to end against a real `mlflow server` (3.17.2) on loopback:
//! `mnistctl tune` logs a small study (parent run, nested trial runs, metric
//! histories by step, artifacts, the registered champion that Python loads),
//! and an MLflow outage mid-study loses and doubles nothing.
//!
//! Data: `MNIST_TEST_DATA`, else `<repo>/../shared/data/mnist`.

#[path = "../../coordinator/mlflow/tests/support/mlflow_server.rs"]
mod mlflow_server;
mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mlflow_server::MlflowServer;
use support::{data_dir, read, repo, tiny_tune, wait};
use mnist_mlflow::{MlflowClient, MlflowConfig};
use serde_json::Value;

/// The two tests each run a server and a study; one at a time on 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `mnistctl tune` with a tiny CNN on the CPU, logging to `uri`.
fn tune(dir: &Path, study: &str, uri: &str, n_trials: u32, epochs: u32, train_limit: u32) -> Command {
    let mut c = tiny_tune(dir);
    c.args(["--n-trials", &n_trials.to_string(), "--epochs", &epochs.to_string(), "--train-limit", &train_limit.to_string()])
        .args(["--seed", "5", "--study", study, "--pruner", "none"])
        .args(["--mlflow-tracking-uri", uri])
        .env_remove("MLFLOW_TRACKING_USERNAME")
        .env_remove("MLFLOW_TRACKING_PASSWORD")
        .env_remove("MLFLOW_TRACKING_TOKEN")
        .env_remove("MLFLOW_EXPERIMENT_NAME");
    c.stdout(std::fs::File::create(dir.join(format!("{study}.out"))).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("{study}.err"))).unwrap());
    c
}

/// One number from the study database, by SQL (Python's sqlite3, read-only).
fn sql_count(db: &Path, sql: &str) -> i64 {
    // Before the database exists (or has the table), the count is 0.
    let script = "import sqlite3,sys\ntry:\n  con=sqlite3.connect('file:'+sys.argv[1]+'?mode=ro',uri=True,timeout=30)\n  print(con.execute(sys.argv[2]).fetchone()[0])\nexcept sqlite3.OperationalError:\n  print(0)";
    let out = Command::new(MlflowServer::python()).arg("-c").arg(script).arg(db).arg(sql).stderr(Stdio::inherit()).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

fn tags(run: &Value) -> BTreeMap<String, String> {
    run["data"]["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| (t["key"].as_str().unwrap_or("").to_string(), t["value"].as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default()
}

fn params(run: &Value) -> BTreeMap<String, String> {
    run["data"]["params"]
        .as_array()
        .map(|a| a.iter().map(|t| (t["key"].as_str().unwrap_or("").to_string(), t["value"].as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default()
}

fn run_id(run: &Value) -> String {
    run["info"]["run_id"].as_str().unwrap_or("").to_string()
}

/// The study's runs: (parent, trial runs by number).
async fn study_runs(client: &MlflowClient, experiment: &str) -> (Value, BTreeMap<u64, Value>) {
    let exp = client.experiment_id(experiment).await.unwrap().expect("the study's experiment exists");
    let runs = client.search_runs(&exp).await.unwrap();
    let parents: Vec<&Value> = runs.iter().filter(|r| tags(r).get("mnist.kind").map(String::as_str) == Some("study")).collect();
    assert_eq!(parents.len(), 1, "exactly one parent run: {runs:#?}");
    let parent = parents[0].clone();
    let mut trials = BTreeMap::new();
    for r in &runs {
        let t = tags(r);
        if t.get("mnist.kind").map(String::as_str) == Some("study") {
            continue;
        }
        assert_eq!(t.get("mlflow.parentRunId"), Some(&run_id(&parent)), "every trial run is nested under the parent");
        let n: u64 = t.get("mnist.trial_number").and_then(|s| s.parse().ok()).expect("trial number tag");
        assert!(trials.insert(n, r.clone()).is_none(), "trial {n} has two runs");
    }
    (parent, trials)
}

/// Checks each trial run's per-epoch histories: one point per epoch, steps
/// 1..=epochs, nothing doubled. Returns the number of points checked.
async fn check_histories(client: &MlflowClient, trials: &BTreeMap<u64, Value>, epochs: usize) -> usize {
    let mut points = 0;
    for (n, run) in trials {
        assert_eq!(run["info"]["status"].as_str(), Some("FINISHED"), "trial {n}: {run:#?}");
        for key in ["train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds", "learning_rate"] {
            let h = client.metric_history(&run_id(run), key).await.unwrap();
            let steps: Vec<i64> = h.iter().map(|(s, _)| *s).collect();
            assert_eq!(steps, (1..=epochs as i64).collect::<Vec<_>>(), "trial {n} {key}: {h:?}");
            points += h.len();
        }
        for key in ["test_accuracy", "macro_f1", "f1_class_0", "f1_class_9"] {
            assert_eq!(client.metric_history(&run_id(run), key).await.unwrap().len(), 1, "trial {n} {key}");
        }
    }
    points
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_study_is_logged_registered_and_loadable() {
    let _serial = SERIAL.lock().await;
    let server = MlflowServer::start();
    let dir = tempfile::tempdir().unwrap();
    let uri = server.uri();
    let status = tune(dir.path(), "small", &uri, 3, 2, 1500).status().unwrap();
    let out = read(&dir.path().join("small.out"));
    assert!(status.success(), "tune failed\nstdout:\n{out}\nstderr:\n{}", read(&dir.path().join("small.err")));
    assert!(out.contains("MLflow: everything delivered"), "{out}");
    assert!(out.contains("MLflow parent run:"), "{out}");

    let client = MlflowClient::new(&MlflowConfig { tracking_uri: Some(uri.clone()), ..MlflowConfig::default() }).unwrap();
    let (parent, trials) = study_runs(&client, "small").await;
    assert_eq!(trials.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
    let p = params(&parent);
    for k in ["search_space", "sampler", "pruner", "n_trials", "direction", "metric", "space.learning_rate"] {
        assert!(p.contains_key(k), "parent param {k} missing: {p:?}");
    }
    assert_eq!(p["n_trials"], "3");
    assert_eq!(parent["info"]["status"].as_str(), Some("FINISHED"));
    let best: Vec<i64> = client.metric_history(&run_id(&parent), "best_value").await.unwrap().iter().map(|(s, _)| *s).collect();
    assert_eq!(best, vec![1, 2, 3], "best value after each finished trial");
    let parent_plots = client.list_artifacts(&run_id(&parent), "plots").await.unwrap();
    assert!(parent_plots.iter().any(|(p, _)| p == "plots/optimization_history.png"), "{parent_plots:?}");
    assert!(tags(&parent).keys().any(|k| k.starts_with("best.")), "best params tagged at the end");
    assert_eq!(tags(&parent).get("mnist.n_trials").map(String::as_str), Some("3"));

    check_histories(&client, &trials, 2).await;
    for (n, run) in &trials {
        let t = tags(run);
        assert_eq!(t.get("mnist.state").map(String::as_str), Some("COMPLETE"), "trial {n}");
        assert!(t.get("mnist.worker_host").is_some_and(|h| !h.is_empty()), "trial {n} worker host: {t:?}");
        assert_eq!(t.get("mnist.device").map(String::as_str), Some("cpu"), "trial {n}");
        assert_eq!(t.get("mnist.study").map(String::as_str), Some("small"));
        assert!(params(run).contains_key("learning_rate"), "trial {n} params");
        let id = run_id(run);
        let plots: HashSet<String> = client.list_artifacts(&id, "plots").await.unwrap().into_iter().map(|(p, _)| p).collect();
        for f in ["plots/accuracy.png", "plots/loss.png", "plots/confusion_matrix.png", "plots/predictions.png"] {
            assert!(plots.contains(f), "trial {n}: {f} missing from {plots:?}");
        }
        let model: HashSet<String> = client.list_artifacts(&id, "model").await.unwrap().into_iter().map(|(p, _)| p).collect();
        assert!(model.contains("model/MLmodel") && model.contains("model/data"), "trial {n}: {model:?}");
        let weights = client.list_artifacts(&id, "weights").await.unwrap();
        assert_eq!(weights, vec![("weights/model.safetensors".to_string(), false)]);
        assert!(client.run_tag(&id, "mlflow.log-model.history").await.unwrap().is_some(), "trial {n}: runs/log-model was called");
    }

    // The champion is the best trial's model, and Python loads it.
    let best_trial: u64 = tags(&parent)["mnist.best_trial"].parse().unwrap();
    let champion = client.version_by_alias("mnist-cnn", "champion").await.unwrap().expect("mnist-cnn@champion exists");
    assert_eq!(champion.run_id, run_id(&trials[&best_trial]), "the alias points at the best trial's run");
    let vt: BTreeMap<_, _> = champion.tags.iter().cloned().collect();
    assert_eq!(vt.get("study").map(String::as_str), Some("small"));
    assert_eq!(vt.get("trial_number"), Some(&best_trial.to_string()));
    assert!(vt.contains_key("val_accuracy"), "the metric is a version tag: {vt:?}");
    let check = repo().join("coordinator/mlflow/tests/support/check_champion.py");
    let py = Command::new(MlflowServer::python()).arg(&check).arg(&uri).arg("mnist-cnn").output().unwrap();
    assert!(py.status.success(), "Python could not load the champion:\n{}\n{}", String::from_utf8_lossy(&py.stdout), String::from_utf8_lossy(&py.stderr));
    let line = String::from_utf8_lossy(&py.stdout);
    let v: Value = serde_json::from_str(line.trim().lines().last().unwrap_or("")).unwrap();
    assert_eq!(v["pytorch_shape"], serde_json::json!([4, 10]));
    assert_eq!(v["pyfunc_shape"], serde_json::json!([4, 10]));

    let st = Command::new(env!("CARGO_BIN_EXE_mnistctl")).args(["mlflow", "status", "--db"]).arg(dir.path().join("t.db")).output().unwrap();
    let st_out = String::from_utf8_lossy(&st.stdout);
    assert!(st.status.success() && st_out.contains("pending:   0") && st_out.contains("refused:   0"), "{st_out}");
    let delivered: u64 = st_out.lines().find_map(|l| l.strip_prefix("delivered: ")).and_then(|n| n.trim().parse().ok()).unwrap_or(0);
    assert!(delivered > 0, "{st_out}");
    // Delivered operations can go; what was delivered in the last day stays
    // with --older-than-days 1, and everything goes without it.
    let prune = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mnistctl")).args(["mlflow", "prune", "--db"]).arg(dir.path().join("t.db")).args(extra).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let kept = prune(&["--older-than-days", "1"]);
    assert!(kept.contains(&format!("deleted 0 delivered operations; kept {delivered} delivered, 0 pending, 0 refused")), "{kept}");
    let all = prune(&[]);
    assert!(all.contains(&format!("deleted {delivered} delivered operations; kept 0 delivered")), "{all}");
    let bad = Command::new(env!("CARGO_BIN_EXE_mnistctl")).args(["mlflow", "prune", "--older-than-days=-1", "--db"]).arg(dir.path().join("t.db")).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--older-than-days"));

    // The single training command without a tracking server keeps its run in
    // an outbox; `mnistctl mlflow sync` delivers and registers it later, from
    // any directory (the outbox names the files by absolute path, even for a
    // relative --output-dir).
    let models = dir.path().join("models");
    let train_cmd = |tracking: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mnistctl"));
        c.args(["train", "--epochs", "1", "--train-limit", "1000", "--val-size", "200", "--test-limit", "300", "--device", "cpu", "--no-download"])
            .arg("--data-dir")
            .arg(data_dir())
            .args(["--output-dir", "models"])
            .current_dir(dir.path())
            .env_remove("MLFLOW_TRACKING_URI")
            .env("MNIST_NO_PROGRESS", "1");
        if let Some(uri) = tracking {
            c.args(["--mlflow-tracking-uri", uri]);
        }
        c.output().unwrap()
    };
    let train = train_cmd(None);
    let train_out = String::from_utf8_lossy(&train.stdout);
    assert!(train.status.success(), "{train_out}
{}", String::from_utf8_lossy(&train.stderr));
    assert!(train_out.contains("no tracking server configured") && train_out.contains("mnistctl mlflow sync --db"), "{train_out}");
    let elsewhere = tempfile::tempdir().unwrap();
    let sync = Command::new(env!("CARGO_BIN_EXE_mnistctl"))
        .args(["mlflow", "sync", "--db"])
        .arg(models.join("mlflow-outbox.db"))
        .args(["--mlflow-tracking-uri", &uri])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    let sync_out = String::from_utf8_lossy(&sync.stdout);
    assert!(sync.status.success(), "{sync_out}
{}", String::from_utf8_lossy(&sync.stderr));
    assert!(sync_out.contains("still pending 0"), "{sync_out}");
    assert!(!models.join("mlflow-pending").exists(), "a delivered run's pending copies are removed");
    let exp = client.experiment_id("mnist-train").await.unwrap().expect("train logs into experiment `mnist-train`");
    let runs = client.search_runs(&exp).await.unwrap();
    assert_eq!(runs.len(), 1);
    let train_run = run_id(&runs[0]);
    assert_eq!(client.metric_history(&train_run, "val_accuracy").await.unwrap().len(), 1);
    let version = client.find_model_version("mnist-cnn", &train_run).await.unwrap().expect("the trained model is registered");
    assert!(version.tags.iter().any(|(k, v)| k == "source" && v == "mnistctl train"), "{version:?}");
    let uploaded: HashSet<String> = client.list_artifacts(&train_run, "").await.unwrap().into_iter().map(|(p, _)| p).collect();
    assert!(uploaded.contains("metrics.json") && uploaded.contains("weights"), "{uploaded:?}");
    // Delivered, the directory takes the next run (delivered at once).
    let again = train_cmd(Some(&uri));
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stdout).contains("MLflow: run "), "{}", String::from_utf8_lossy(&again.stdout));
    assert_eq!(client.search_runs(&exp).await.unwrap().len(), 2);
    assert!(!models.join("mlflow-pending").exists(), "delivered at once, nothing kept");
    let still = client.version_by_alias("mnist-cnn", "champion").await.unwrap().unwrap();
    assert_eq!(still.version, champion.version, "a model chosen by another metric keeps the alias");

    // `mnistctl study show` against a running coordinator: each run's MLflow id
    // and UI link, and the outbox backlog.
    let mut cfg = mnist_coordinator::ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("show.db"));
    cfg.coordinator.mlflow = MlflowConfig { tracking_uri: Some(uri.clone()), ..MlflowConfig::default() };
    let running = mnist_coordinator::server::start(cfg).await.expect("start the coordinator");
    let url = running.url();
    let space = dir.path().join("space.toml");
    std::fs::write(&space, "[x]\ntype = \"float\"\nlow = -3.0\nhigh = 3.0\n").unwrap();
    let ctl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mnistctl")).args(args).args(["--coordinator", &url]).output().unwrap();
        assert!(out.status.success(), "mnistctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ctl(&["study", "create", "show", "--space", space.to_str().unwrap(), "--n-trials", "3", "--sampler", "random", "--pruner", "none", "--metric", "loss", "--direction", "minimize"]);
    let mut at = mnist_proto::v1::ask_tell_service_client::AskTellServiceClient::connect(url.clone()).await.unwrap();
    let mut wk = mnist_proto::v1::worker_service_client::WorkerServiceClient::connect(url.clone()).await.unwrap();
    let report = |t: &mnist_proto::v1::TrialAssignment, step: u64, acc: f64| mnist_proto::v1::ReportIntermediateRequest {
        trial_id: t.trial_id,
        lease_token: t.lease.as_ref().map(|l| l.token).unwrap_or(0),
        step,
        value: acc,
        metrics: [("val_accuracy".to_string(), acc)].into_iter().collect(),
    };
    for i in 0..3 {
        let ask = mnist_proto::v1::AskRequest { study_name: "show".into(), client_id: "t".into(), slot: 0, wait_ms: 0 };
        let mut t = at.ask(ask.clone()).await.unwrap().into_inner().trial.expect("a trial");
        if i == 0 {
            // Trial 0 runs twice: one epoch, given back (requeued), then again
            // from the start. Each attempt is a run of its own in MLflow.
            wk.report_intermediate(report(&t, 0, 0.5)).await.unwrap();
            let token = t.lease.as_ref().map(|l| l.token).unwrap_or(0);
            wk.release_trial(mnist_proto::v1::ReleaseTrialRequest { trial_id: t.trial_id, lease_token: token, reason: "test".into() })
                .await
                .unwrap();
            t = at.ask(ask).await.unwrap().into_inner().trial.expect("trial 0 again");
            assert_eq!(t.number, 0);
            wk.report_intermediate(report(&t, 0, 0.6)).await.unwrap();
            wk.report_intermediate(report(&t, 1, 0.7)).await.unwrap();
        }
        at.tell(mnist_proto::v1::TellRequest {
            trial_id: t.trial_id,
            lease_token: t.lease.unwrap().token,
            state: mnist_proto::v1::TrialState::Complete as i32,
            value: Some(1.0 + t.number as f64),
            fail_reason: String::new(),
            metrics: Default::default(),
        })
        .await
        .unwrap();
    }
    // Delivery runs in the background; wait for the backlog to empty.
    let end = Instant::now() + Duration::from_secs(60);
    let shown = loop {
        let v: Value = serde_json::from_str(&ctl(&["study", "show", "show", "-o", "json"])).unwrap();
        if v["mlflow"]["pending"] == 0 && v["mlflow_trial_runs"].as_object().is_some_and(|m| m.len() == 3) {
            break v;
        }
        assert!(Instant::now() < end, "MLflow delivery did not finish: {v:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(shown["mlflow"]["tracking_uri"], uri.as_str());
    assert_eq!(shown["mlflow"]["refused"], 0);
    let parent_url = shown["mlflow_run"]["url"].as_str().unwrap_or("");
    let parent_id = shown["mlflow_run"]["run_id"].as_str().unwrap_or("");
    assert!(!parent_id.is_empty() && parent_url.starts_with(&uri) && parent_url.ends_with(parent_id), "{shown:#}");
    for n in ["0", "1", "2"] {
        let r = &shown["mlflow_trial_runs"][n];
        let id = r["run_id"].as_str().unwrap_or("");
        assert!(!id.is_empty() && r["url"].as_str().unwrap_or("").ends_with(id), "trial {n}: {r}");
        assert_eq!(client.run_tag(id, "mlflow.parentRunId").await.unwrap().as_deref(), Some(parent_id));
    }
    let show_exp = client.experiment_id("show").await.unwrap().expect("the study's experiment");
    let mut attempts: Vec<(String, String, String)> = Vec::new();
    for r in client.search_runs(&show_exp).await.unwrap() {
        let id = run_id(&r);
        if client.run_tag(&id, "mnist.trial_number").await.unwrap().as_deref() == Some("0") {
            let name = r["info"]["run_name"].as_str().unwrap_or("").to_string();
            attempts.push((name, r["info"]["status"].as_str().unwrap_or("").to_string(), id));
        }
    }
    attempts.sort();
    let [(first_name, first_status, first_id), (second_name, second_status, second_id)] = &attempts[..] else {
        panic!("trial 0 has one run per attempt: {attempts:?}");
    };
    assert_eq!((first_name.as_str(), first_status.as_str()), ("trial-0", "KILLED"), "{attempts:?}");
    assert_eq!(client.run_tag(first_id, "mnist.state").await.unwrap().as_deref(), Some("REQUEUED"));
    assert_eq!((second_name.as_str(), second_status.as_str()), ("trial-0 (attempt 2)", "FINISHED"), "{attempts:?}");
    let history = |id: String| {
        let client = &client;
        async move {
            let mut h = client.metric_history(&id, "val_accuracy").await.unwrap();
            h.sort_by_key(|a| a.0);
            h
        }
    };
    assert_eq!(history(first_id.clone()).await, vec![(1, 0.5)], "the first attempt keeps its own epoch");
    assert_eq!(history(second_id.clone()).await, vec![(1, 0.6), (2, 0.7)], "one point per step, no mix of attempts");
    assert_eq!(shown["mlflow_trial_runs"]["0"]["run_id"].as_str(), Some(second_id.as_str()), "study show names the latest attempt");
    let table = ctl(&["study", "show", "show"]);
    assert!(table.contains("MLflow") && table.contains("0 pending") && table.contains(parent_url), "{table}");

    // A trial that fails before it ever starts still gets its MLflow run,
    // FAILED with the reason: an enqueued trial whose values must come from
    // a grid that is used up (one point, taken by the trial before it).
    let one_point = dir.path().join("one_point.toml");
    std::fs::write(&one_point, "[x]\ntype = \"categorical\"\nchoices = [\"a\"]\n").unwrap();
    ctl(&["study", "create", "grid-left", "--space", one_point.to_str().unwrap(), "--n-trials", "3", "--sampler", "grid", "--pruner", "none", "--metric", "loss", "--direction", "minimize"]);
    ctl(&["trial", "enqueue", "grid-left"]);
    ctl(&["trial", "enqueue", "grid-left"]);
    let ask = mnist_proto::v1::AskRequest { study_name: "grid-left".into(), client_id: "t".into(), slot: 0, wait_ms: 0 };
    let t = at.ask(ask.clone()).await.unwrap().into_inner().trial.expect("trial 0 takes the grid's point");
    at.tell(mnist_proto::v1::TellRequest {
        trial_id: t.trial_id,
        lease_token: t.lease.unwrap().token,
        state: mnist_proto::v1::TrialState::Complete as i32,
        value: Some(0.5),
        fail_reason: String::new(),
        metrics: Default::default(),
    })
    .await
    .unwrap();
    assert!(at.ask(ask).await.unwrap().into_inner().trial.is_none(), "trial 1 fails before it starts, and the grid is done");
    let failed: Value = serde_json::from_str(&ctl(&["trial", "get", "grid-left", "1", "-o", "json"])).unwrap();
    assert_eq!(failed["state"], "FAIL", "{failed:#}");
    let end = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let shown: Value = serde_json::from_str(&ctl(&["study", "show", "grid-left", "-o", "json"])).unwrap();
        if shown["mlflow"]["pending"] == 0 {
            if let Some(id) = shown["mlflow_trial_runs"]["1"]["run_id"].as_str() {
                let exp = client.experiment_id("grid-left").await.unwrap().expect("the study's experiment");
                let runs = client.search_runs(&exp).await.unwrap();
                break runs.into_iter().find(|r| run_id(r) == id).expect("trial 1's run in the study's experiment");
            }
        }
        assert!(Instant::now() < end, "trial 1's MLflow run did not arrive: {shown:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(run["info"]["status"], "FAILED", "{run:#}");
    let reason = tags(&run).get("mnist.fail_reason").cloned().unwrap_or_default();
    assert!(reason.contains("cannot sample") && reason.contains("grid"), "{reason:?} {run:#}");

    // Deleting a study marks its parent run; one deleted while RUNNING (with
    // --force) is also ended (it stayed RUNNING for good), a finished one
    // keeps FINISHED.
    ctl(&["study", "create", "doomed", "--space", one_point.to_str().unwrap(), "--n-trials", "3", "--metric", "loss", "--direction", "minimize"]);
    let doomed = at.ask(mnist_proto::v1::AskRequest { study_name: "doomed".into(), client_id: "t".into(), slot: 0, wait_ms: 0 }).await.unwrap().into_inner();
    assert!(doomed.trial.is_some(), "a trial in flight");
    for (study, force) in [("grid-left", false), ("doomed", true)] {
        let end = Instant::now() + Duration::from_secs(60);
        let parent = loop {
            let shown: Value = serde_json::from_str(&ctl(&["study", "show", study, "-o", "json"])).unwrap();
            if let Some(id) = shown["mlflow_run"]["run_id"].as_str() {
                break id.to_string();
            }
            assert!(Instant::now() < end, "{study}: no parent run yet: {shown:#}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let mut args = vec!["study", "delete", study];
        if force {
            args.push("--force");
        }
        ctl(&args);
        let exp = client.experiment_id(study).await.unwrap().expect("the study's experiment");
        let want = if force { "KILLED" } else { "FINISHED" };
        loop {
            let runs = client.search_runs(&exp).await.unwrap();
            let p = runs.iter().find(|r| run_id(r) == parent).expect("the parent run");
            if tags(p).get("mnist.state").map(String::as_str) == Some("DELETED") && p["info"]["status"] == want {
                break;
            }
            assert!(Instant::now() < end, "{study}: the deleted study's parent run: {p:#}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mlflow_outage_mid_study_loses_and_doubles_nothing() {
    let _serial = SERIAL.lock().await;
    let mut server = MlflowServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let uri = server.uri();
    let (n_trials, epochs) = (8u32, 3usize);
    let mut child = tune(dir.path(), "outage", &uri, n_trials, epochs as u32, 3000).args(["--mlflow-wait-seconds", "400"]).spawn().unwrap();

    // Kill MLflow once it received something and a trial finished.
    let finished = "SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED', 'FAIL')";
    let delivered = "SELECT COUNT(*) FROM mnist_mlflow_outbox WHERE state = 'DONE'";
    let end = Instant::now() + Duration::from_secs(300);
    while sql_count(&db, finished) < 1 || sql_count(&db, delivered) < 1 {
        assert!(child.try_wait().unwrap().is_none(), "tune ended before the outage:\n{}", read(&dir.path().join("outage.err")));
        assert!(Instant::now() < end, "no trial finished in time:\n{}", read(&dir.path().join("outage.err")));
        std::thread::sleep(Duration::from_millis(100));
    }
    server.kill();
    let at_kill = sql_count(&db, finished);
    assert!(at_kill < n_trials as i64, "the outage starts mid-study ({at_kill} of {n_trials} finished)");
    // The study goes on without MLflow: more trials finish while it is down.
    let end = Instant::now() + Duration::from_secs(300);
    while sql_count(&db, finished) < at_kill + 2 {
        assert!(Instant::now() < end, "training stalled while MLflow was down:\n{}", read(&dir.path().join("outage.err")));
        std::thread::sleep(Duration::from_millis(200));
    }
    let pending_while_down = sql_count(&db, "SELECT COUNT(*) FROM mnist_mlflow_outbox WHERE state = 'PENDING'");
    assert!(pending_while_down > 0, "operations wait in the outbox during the outage");
    server.restart();

    let status = wait(&mut child, Duration::from_secs(600), &[&dir.path().join("outage.out"), &dir.path().join("outage.err")]);
    let out = read(&dir.path().join("outage.out"));
    assert!(status.success(), "tune failed\nstdout:\n{out}\nstderr:\n{}", read(&dir.path().join("outage.err")));
    assert!(out.contains("MLflow: everything delivered"), "{out}");
    assert_eq!(sql_count(&db, "SELECT COUNT(*) FROM mnist_mlflow_outbox WHERE state != 'DONE'"), 0, "nothing pending or refused");

    // Exact counts: one parent, one run per trial, one point per epoch.
    let client = MlflowClient::new(&MlflowConfig { tracking_uri: Some(uri.clone()), ..MlflowConfig::default() }).unwrap();
    let (parent, trials) = study_runs(&client, "outage").await;
    assert_eq!(trials.len(), n_trials as usize, "one run per trial, none lost, none doubled");
    let exp = client.experiment_id("outage").await.unwrap().unwrap();
    assert_eq!(client.search_runs(&exp).await.unwrap().len(), n_trials as usize + 1);
    let points = check_histories(&client, &trials, epochs).await;
    assert_eq!(points, n_trials as usize * epochs * 6, "every per-epoch point exactly once");
    let best: Vec<i64> = client.metric_history(&run_id(&parent), "best_value").await.unwrap().iter().map(|(s, _)| *s).collect();
    assert_eq!(best, (1..=n_trials as i64).collect::<Vec<_>>(), "best value after each trial, once each");
    for (n, run) in &trials {
        let weights = client.list_artifacts(&run_id(run), "weights").await.unwrap();
        assert_eq!(weights.len(), 1, "trial {n}'s weights arrived");
    }
    assert!(client.version_by_alias("mnist-cnn", "champion").await.unwrap().is_some(), "the champion was registered after the outage");
}

/// `mnistctl mlflow <args> --db <db>`, without a tracking server in the environment.
fn mlflow_cmd(args: &[&str], db: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mnistctl"))
        .arg("mlflow")
        .args(args)
        .arg("--db")
        .arg(db)
        .env_remove("MLFLOW_TRACKING_URI")
        .output()
        .unwrap()
}

/// Every file in `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

#[test]
fn status_sync_and_prune_leave_a_file_that_is_not_an_outbox_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    // MLflow's own database, made by MLflow.
    let mlflow_db = dir.path().join("mlflow.db");
    let py = Command::new(MlflowServer::python())
        .arg("-c")
        .arg("import sys,mlflow\nmlflow.set_tracking_uri('sqlite:///'+sys.argv[1])\nmlflow.search_experiments()")
        .arg(&mlflow_db)
        .output()
        .unwrap();
    assert!(py.status.success() && mlflow_db.is_file(), "MLflow made no database: {}", String::from_utf8_lossy(&py.stderr));
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a database at all, but long enough to have a header's worth of bytes in it......").unwrap();
    let before = snapshot(dir.path());

    let unreachable = ["--mlflow-tracking-uri", "http://127.0.0.1:9", "--patience", "1"];
    let sync: Vec<&str> = ["sync"].into_iter().chain(unreachable).collect();
    for (file, why) in [(&mlflow_db, "it has no mnist_mlflow_outbox table"), (&text, "it is not an SQLite database")] {
        for args in [&["status"][..], &sync[..], &["prune"][..]] {
            let o = mlflow_cmd(args, file);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{args:?} on {}: {err}", file.display());
            assert!(err.contains(&format!("{} is not an MLflow outbox ({why})", file.display())), "{args:?}: {err}");
            assert!(err.contains("the file was left unchanged"), "{args:?}: {err}");
        }
    }
    // Not a byte changed (no tables added, no switch to WAL), nothing created
    // next to them (no -wal, -shm or .lock files).
    assert!(snapshot(dir.path()) == before, "the directory changed: {:?}", snapshot(dir.path()).keys().collect::<Vec<_>>());

    // A missing file is named, and not created.
    let missing = dir.path().join("nope.db");
    let o = mlflow_cmd(&["status"], &missing);
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not an MLflow outbox (there is no such file)"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!missing.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_refuses_an_outbox_that_a_running_coordinator_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let running = mnist_coordinator::server::start(mnist_coordinator::ServerConfig::new("127.0.0.1:0".parse().unwrap(), &db))
        .await
        .expect("start the coordinator");
    let sync = {
        let db = db.clone();
        move || mlflow_cmd(&["sync", "--mlflow-tracking-uri", "http://127.0.0.1:9", "--patience", "1"], &db)
    };
    let o = tokio::task::spawn_blocking(sync.clone()).await.unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{} is in use by another process (pid {}", db.display(), std::process::id())), "{err}");
    assert!(err.contains("a second sender would race it"), "{err}");
    // Looking is fine while it runs.
    let status = {
        let db = db.clone();
        move || mlflow_cmd(&["status"], &db)
    };
    let o = tokio::task::spawn_blocking(status).await.unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("pending:"), "{}", String::from_utf8_lossy(&o.stderr));

    // Once the coordinator stopped, sync may deliver.
    running.shutdown().await.unwrap();
    let o = tokio::task::spawn_blocking(sync).await.unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("still pending 0"), "{}", String::from_utf8_lossy(&o.stdout));
}
