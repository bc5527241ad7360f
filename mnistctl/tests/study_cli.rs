//! `mnistctl study|trial|workers` against a real coordinator on loopback:
//! the commands work, `-o json` is parseable, errors are clear, and Python
//! Optuna 5.0.0 reading the database agrees with `mnistctl study best -o json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use mnist_coordinator::{server, ServerConfig};
use mnist_proto::v1 as pb;
use mnist_proto::v1::ask_tell_service_client::AskTellServiceClient;
use serde_json::Value;

fn mnistctl(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mnistctl"))
        .arg("--coordinator")
        .arg(url)
        .args(args)
        .env("MNIST_NO_PROGRESS", "1")
        .output()
        .expect("run mnistctl")
}

fn ok(url: &str, args: &[&str]) -> String {
    let out = mnistctl(url, args);
    assert!(out.status.success(), "mnistctl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(url: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let text = ok(url, &a);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("mnistctl {args:?} printed no JSON ({e}): {text}"))
}

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("MNIST_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    p.exists().then_some(p)
}

/// Runs `n` ask/tell cycles of a known objective through the generic API.
async fn run_trials(url: &str, study: &str, n: usize) {
    let mut c = AskTellServiceClient::connect(url.to_string()).await.expect("connect");
    for i in 0..n {
        let a = c
            .ask(pb::AskRequest { study_name: study.into(), client_id: "cli-test".into(), slot: 0, wait_ms: 0 })
            .await
            .expect("ask")
            .into_inner();
        let Some(t) = a.trial else { break };
        let x = match t.params["x"].kind {
            Some(pb::param_value::Kind::FloatValue(x)) => x,
            _ => panic!("x is a float"),
        };
        let state = if i == 2 { pb::TrialState::Fail } else { pb::TrialState::Complete };
        c.tell(pb::TellRequest {
            trial_id: t.trial_id,
            lease_token: t.lease.unwrap().token,
            state: state as i32,
            value: Some((x - 1.0).powi(2)),
            fail_reason: "boom".into(),
            metrics: [("aux".to_string(), x)].into(),
        })
        .await
        .expect("tell");
    }
}

#[test]
fn study_commands_and_optuna_agree() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cli.db");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let running = rt
        .block_on(server::start(ServerConfig::new("127.0.0.1:0".parse().unwrap(), &db)))
        .expect("start the coordinator");
    let url = running.url();

    let space = dir.path().join("space.toml");
    std::fs::write(&space, "[x]\ntype = \"float\"\nlow = -3.0\nhigh = 3.0\n\n[opt]\ntype = \"categorical\"\nchoices = [\"sgd\", \"adam\"]\n").unwrap();
    let created = json(
        &url,
        &["study", "create", "cli", "--space", space.to_str().unwrap(), "--direction", "minimize", "--metric", "loss",
          "--n-trials", "8", "--sampler", "random", "--seed", "5", "--pruner", "none"],
    );
    assert_eq!(created["created"], true);
    assert_eq!(created["direction"], "minimize");
    // Enqueue the optimum: it runs first.
    let enq = json(&url, &["trial", "enqueue", "cli", "--param", "x=1.0", "--param", "opt=adam"]);
    assert_eq!(enq["state"], "WAITING");

    rt.block_on(run_trials(&url, "cli", 8));

    let best = json(&url, &["study", "best", "cli"]);
    assert_eq!(best["number"], 0);
    assert_eq!(best["value"], 0.0);
    assert_eq!(best["params"]["x"], 1.0);
    assert_eq!(best["params"]["opt"], "adam");
    let shown = json(&url, &["study", "show", "cli"]);
    assert_eq!(shown["state"], "COMPLETE");
    assert_eq!(shown["counts"]["complete"], 7);
    assert_eq!(shown["counts"]["fail"], 1);
    let trials = json(&url, &["study", "trials", "cli"]);
    assert_eq!(trials.as_array().unwrap().len(), 8);
    assert_eq!(trials[2]["state"], "FAIL");
    assert_eq!(trials[2]["fail_reason"], "boom");
    let failed = json(&url, &["trial", "list", "cli", "--state", "fail"]);
    assert_eq!(failed.as_array().unwrap().len(), 1);
    let one = json(&url, &["trial", "get", "cli", "3"]);
    assert_eq!(one["number"], 3);
    let listed = json(&url, &["study", "list"]);
    assert_eq!(listed[0]["name"], "cli");

    // Tables for people.
    let table = ok(&url, &["study", "list"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("cli") && table.contains("8/8"), "{table}");
    let text = ok(&url, &["study", "show", "cli"]);
    assert!(text.contains("best trial #0"), "{text}");
    assert!(ok(&url, &["study", "trials", "cli"]).contains("COMPLETE"));
    assert!(ok(&url, &["workers"]).contains("no workers"));
    // Watching a finished study prints its outcome and returns.
    assert!(ok(&url, &["study", "watch", "cli"]).contains("COMPLETE"));
    // ... and with -o json, as JSON: one line, the study.
    let watched = json(&url, &["study", "watch", "cli"]);
    assert_eq!(watched["state"], "COMPLETE", "{watched}");
    assert_eq!(watched["counts"]["complete"], 7, "{watched}");
    assert_eq!(watched["best_trial"]["number"], 0, "{watched}");

    // Export.
    let csv_path = dir.path().join("t.csv");
    ok(&url, &["study", "export", "cli", "--format", "csv", "--file", csv_path.to_str().unwrap()]);
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    assert_eq!(csv.lines().count(), 9, "{csv}");
    assert!(csv.lines().next().unwrap().contains("params_x"), "{csv}");
    let exported: Value = serde_json::from_str(&ok(&url, &["study", "export", "cli", "--format", "json"])).unwrap();
    assert_eq!(exported["trials"].as_array().unwrap().len(), 8);

    // Python Optuna reads the same database and agrees with `study best -o json`.
    if let Some(py) = python() {
        let script = "import json,sys,optuna\noptuna.logging.set_verbosity(optuna.logging.WARNING)\n\
                      s=optuna.load_study(study_name='cli',storage='sqlite:///'+sys.argv[1])\n\
                      print(json.dumps({'number':s.best_trial.number,'value':s.best_value,'params':s.best_params,\
                      'states':[t.state.name for t in s.trials],'aux':s.best_trial.user_attrs.get('aux')}))";
        let out = Command::new(py).arg("-c").arg(script).arg(&db).output().expect("python");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let o: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(o["number"], best["number"]);
        assert_eq!(o["value"], best["value"]);
        assert_eq!(o["params"], best["params"]);
        assert_eq!(o["aux"], best["metrics"]["aux"]);
        let states: Vec<Value> = trials.as_array().unwrap().iter().map(|t| t["state"].clone()).collect();
        assert_eq!(o["states"], Value::Array(states));
    } else {
        eprintln!("skipping the Optuna comparison: no Python venv (set MNIST_PYTHON)");
    }

    // Errors people can act on.
    let out = mnistctl(&url, &["study", "show", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no study named \"nope\"") && err.contains("not found"), "{err}");
    let out = mnistctl(&url, &["study", "create", "bad", "--space", csv_path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad search space"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = mnistctl(&url, &["study", "delete", "cli"]);
    assert!(out.status.success(), "a complete study deletes without --force");

    rt.block_on(running.shutdown()).unwrap();
    let out = mnistctl(&url, &["study", "list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach coordinator at") && err.contains("mnist-coordinator --listen"), "{err}");
    std::thread::sleep(Duration::from_millis(10));
}
