//! End-to-end tests of the distributed system: a real `mnist-coordinator`
//! and real `mnist-worker` processes on loopback, training a tiny CNN on a
//! slice of MNIST on the CPU. No timing assertions: every wait polls with a
//! generous deadline. The tests run one at a time (see `support::serial`).

mod support;

use std::time::Duration;

use mnist_proto::v1 as pb;
use support::*;

const FINISHED: &[pb::TrialState] = &[pb::TrialState::Complete, pb::TrialState::Pruned];

/// A coordinator and 3 workers run a 12-trial study with TPE and median
/// pruning: every trial ends COMPLETE or PRUNED, exactly 12, numbered 0..11,
/// and the complete trials' artifacts are in the coordinator's store.
#[test]
fn three_workers_finish_a_twelve_trial_study() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = rt();
    let coord = start_coordinator(dir, &dir.join("study.db"), 0, &CoordOpts::default(), "a");
    let study = create_study(&rt, &coord.url, spec("twelve", 12, base_config(2, 1500), "median"));
    let data = data_dir();
    let mut workers: Vec<Proc> =
        (0..3).map(|i| start_worker(dir, &coord.url, &format!("w{i}"), &data, &["--exit-when-idle"])).collect();
    wait_workers(&mut workers, Duration::from_secs(240), &[&coord.proc]);
    for w in &mut workers {
        let st = w.wait_exit(Duration::ZERO).unwrap();
        assert!(st.success(), "{} exited with {st}\n{}", w.name, w.tail(40));
    }
    let all: Vec<&Proc> = workers.iter().chain([&coord.proc]).collect();
    let s = get_study(&rt, &coord.url, "twelve").expect("the study");
    assert_eq!(pb::StudyState::try_from(s.state), Ok(pb::StudyState::Complete), "{}", logs(&all));
    let ts = trials(&rt, &coord.url, "twelve").unwrap();
    assert_exact(&ts, 12, FINISHED, &logs(&all));
    let complete: Vec<&pb::Trial> = ts.iter().filter(|t| state(t) == pb::TrialState::Complete).collect();
    assert!(!complete.is_empty(), "no trial completed");
    // Every trial ran on one of the three workers, and they shared the work.
    for t in &ts {
        assert!(!t.intermediate_values.is_empty(), "trial {} has no reports", t.number);
    }
    // The artifacts of a complete trial, under the coordinator's store.
    let root = dir.join("study.db.artifacts").join(format!("study-{}", study.study_id));
    for t in &complete {
        let d = root.join(format!("trial-{}", t.number));
        for f in ["metrics.json", "plots/accuracy.png", "plots/loss.png", "plots/confusion_matrix.png", "plots/predictions.png", "model/MLmodel", "model/data/model.pth", "weights/model.safetensors"] {
            assert!(d.join(f).is_file(), "{} is missing\n{}", d.join(f).display(), logs(&all));
        }
        for k in ["test_accuracy", "test_loss", "macro_f1", "f1_class_0", "f1_class_9"] {
            assert!(t.metrics.contains_key(k), "trial {} lacks metric {k}: {:?}", t.number, t.metrics);
        }
    }
}

/// `kill -9` of a worker in the middle of a trial: after the lease expires the
/// trial is re-queued and another worker completes it; the count is exact.
#[test]
fn killed_worker_trial_is_requeued_and_completed_elsewhere() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = rt();
    let opts = CoordOpts { lease_seconds: 2.0, heartbeat_seconds: 0.4, ..Default::default() };
    let coord = start_coordinator(dir, &dir.join("study.db"), 0, &opts, "a");
    create_study(&rt, &coord.url, spec("killw", 3, base_config(6, 3000), "none"));
    let data = data_dir();
    let mut victim = start_worker(dir, &coord.url, "victim", &data, &[]);
    // Its trial is RUNNING and has reported an epoch.
    let running = wait_for("a trial that reported an epoch", Duration::from_secs(90), &[&victim, &coord.proc], || {
        trials(&rt, &coord.url, "killw")?
            .into_iter()
            .find(|t| state(t) == pb::TrialState::Running && !t.intermediate_values.is_empty())
    });
    victim.kill9();
    let mut rescuer = start_worker(dir, &coord.url, "rescuer", &data, &["--exit-when-idle"]);
    wait_workers(std::slice::from_mut(&mut rescuer), Duration::from_secs(180), &[&coord.proc, &victim]);
    let all = [&victim, &rescuer, &coord.proc];
    let ts = trials(&rt, &coord.url, "killw").unwrap();
    assert_exact(&ts, 3, &[pb::TrialState::Complete], &logs(&all));
    let t = ts.iter().find(|t| t.trial_id == running.trial_id).unwrap();
    assert!(t.retries >= 1, "trial {} was not re-queued: {t:?}\n{}", t.number, logs(&all));
    assert!(t.fail_reason.contains("lease expired"), "unexpected re-queue reason {:?}", t.fail_reason);
    let text = std::fs::read_to_string(&rescuer.log).unwrap_or_default();
    let tag = format!("trial={} ", t.number);
    assert!(
        text.lines().any(|l| l.contains("trial complete") && l.contains(&tag)),
        "the rescuer did not run trial {}\n{}",
        t.number,
        logs(&all)
    );
}

/// `kill -9` of the coordinator mid-study and a restart on the same database
/// and port: the workers reconnect and the study finishes with the exact
/// count and no duplicates.
#[test]
fn killed_coordinator_restarts_and_the_study_finishes() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = rt();
    let db = dir.join("study.db");
    let opts = CoordOpts { lease_seconds: 3.0, ..Default::default() };
    let mut coord = start_coordinator(dir, &db, 0, &opts, "first");
    create_study(&rt, &coord.url, spec("crash", 8, base_config(3, 2000), "median"));
    let data = data_dir();
    let mut workers: Vec<Proc> =
        (0..2).map(|i| start_worker(dir, &coord.url, &format!("w{i}"), &data, &["--exit-when-idle"])).collect();
    let url = coord.url.clone();
    wait_for("two finished trials and one running", Duration::from_secs(120), &[&coord.proc], || {
        let ts = trials(&rt, &url, "crash")?;
        let done = ts.iter().filter(|t| FINISHED.contains(&state(t))).count();
        let running = ts.iter().any(|t| state(t) == pb::TrialState::Running);
        (done >= 2 && running).then_some(())
    });
    coord.proc.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    let second = start_coordinator(dir, &db, coord.port, &opts, "second");
    assert_eq!(second.url, url, "the coordinator came back on another address");
    wait_workers(&mut workers, Duration::from_secs(180), &[&second.proc, &coord.proc]);
    let statuses: Vec<_> = workers.iter_mut().map(|w| w.wait_exit(Duration::ZERO).unwrap()).collect();
    let all: Vec<&Proc> = workers.iter().chain([&coord.proc, &second.proc]).collect();
    for (w, st) in workers.iter().zip(&statuses) {
        assert!(st.success(), "{} exited with {st}\n{}", w.name, logs(&all));
    }
    let s = get_study(&rt, &url, "crash").unwrap();
    assert_eq!(pb::StudyState::try_from(s.state), Ok(pb::StudyState::Complete), "{}", logs(&all));
    let ts = trials(&rt, &url, "crash").unwrap();
    assert_exact(&ts, 8, FINISHED, &logs(&all));
    let c = s.counts.unwrap_or_default();
    assert_eq!((c.complete + c.pruned, c.fail, c.running, c.waiting), (8, 0, 0, 0), "{c:?}");
    // The workers did see the coordinator go away, and came back.
    let saw_outage = workers.iter().any(|w| std::fs::read_to_string(&w.log).unwrap_or_default().contains("unreachable"));
    assert!(saw_outage, "no worker noticed the outage\n{}", logs(&all));
}

/// Python Optuna reads the database and agrees with the coordinator and with
/// `mnistctl study best -o json` on the best trial.
#[test]
fn optuna_agrees_with_the_coordinator_on_the_best_trial() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = rt();
    let db = dir.join("study.db");
    let mut coord = start_coordinator(dir, &db, 0, &CoordOpts::default(), "a");
    create_study(&rt, &coord.url, spec("agree", 5, base_config(2, 1500), "median"));
    let mut w = start_worker(dir, &coord.url, "w", &data_dir(), &["--exit-when-idle"]);
    wait_workers(std::slice::from_mut(&mut w), Duration::from_secs(120), &[&coord.proc]);
    let s = get_study(&rt, &coord.url, "agree").unwrap();
    let best = s.best_trial.clone().expect("a best trial");
    let from_ctl = mnistctl_best(&coord.url, "agree");
    // Stop the coordinator cleanly so the database is complete and closed.
    coord.proc.sigterm();
    assert!(coord.proc.wait_exit(Duration::from_secs(30)).is_some_and(|s| s.success()), "{}", coord.proc.tail(30));

    let script = r#"
import json, sys, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
s = optuna.load_study(study_name=sys.argv[1], storage="sqlite:///" + sys.argv[2])
b = s.best_trial
print(json.dumps({"number": b.number, "value": b.value, "params": b.params,
                  "n": len(s.trials), "states": sorted({t.state.name for t in s.trials})}))
"#;
    let out = std::process::Command::new(python()).arg("-c").arg(script).arg("agree").arg(&db).output().expect("running python");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    let py: serde_json::Value = serde_json::from_slice(&out.stdout).expect("python's JSON");
    assert_eq!(py["n"], 5, "{py}");
    assert_eq!(py["number"].as_u64(), Some(best.number), "optuna {py} vs coordinator {best:?}");
    let value = best.value.unwrap();
    assert!((py["value"].as_f64().unwrap() - value).abs() < 1e-9, "optuna {py} vs coordinator {value}");
    for (name, v) in &best.params {
        let want = match &v.kind {
            Some(pb::param_value::Kind::FloatValue(f)) => *f,
            Some(pb::param_value::Kind::IntValue(i)) => *i as f64,
            other => panic!("unexpected parameter kind {other:?}"),
        };
        let got = py["params"][name].as_f64().unwrap_or(f64::NAN);
        assert!((got - want).abs() <= 1e-12 * want.abs().max(1.0), "{name}: optuna {got} vs coordinator {want}");
    }
    let ctl = from_ctl;
    assert_eq!(ctl["number"].as_u64(), py["number"].as_u64(), "mnistctl {ctl} vs optuna {py}");
    assert!((ctl["value"].as_f64().unwrap_or(f64::NAN) - py["value"].as_f64().unwrap()).abs() < 1e-9, "mnistctl {ctl} vs optuna {py}");
    for (name, v) in py["params"].as_object().expect("optuna's params") {
        let got = ctl["params"][name].as_f64().unwrap_or(f64::NAN);
        let want = v.as_f64().unwrap_or(f64::NAN);
        assert!((got - want).abs() <= 1e-12 * want.abs().max(1.0), "{name}: mnistctl {got} vs optuna {want}");
    }
}

/// `mnistctl study best NAME -o json`.
fn mnistctl_best(url: &str, study: &str) -> serde_json::Value {
    let bin = workspace_bin("mnistctl", "mnistctl");
    let out = std::process::Command::new(&bin)
        .args(["--coordinator", url, "-o", "json", "study", "best", study])
        .output()
        .expect("running mnistctl");
    assert!(out.status.success(), "`mnistctl study best` failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("`mnistctl study best -o json` prints JSON")
}

/// A worker with an empty data directory fetches MNIST from the coordinator,
/// verifies it and trains.
#[test]
fn worker_fetches_mnist_from_the_coordinator() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = rt();
    let coord = start_coordinator(dir, &dir.join("study.db"), 0, &CoordOpts::default(), "a");
    create_study(&rt, &coord.url, spec("fetch", 1, base_config(1, 1500), "none"));
    let empty = dir.join("empty-data");
    let mut w = start_worker(dir, &coord.url, "w", &empty, &["--exit-when-idle"]);
    wait_workers(std::slice::from_mut(&mut w), Duration::from_secs(120), &[&coord.proc]);
    assert!(w.wait_exit(Duration::ZERO).unwrap().success(), "{}", w.tail(40));
    for st in mnist_common::mnist::check_dir(&empty) {
        assert!(st.result.is_ok(), "{}: {:?}\n{}", st.file.name, st.result, w.tail(40));
    }
    let leftovers: Vec<_> = std::fs::read_dir(&empty).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with('.')).collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
    let ts = trials(&rt, &coord.url, "fetch").unwrap();
    assert_exact(&ts, 1, &[pb::TrialState::Complete], &w.tail(40));
}

/// SIGTERM of a worker mid-trial releases its trial at once (long before its
/// 60 s lease would expire); the worker exits 0 and another one finishes it.
#[test]
fn sigterm_releases_the_trial_at_once() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = rt();
    let opts = CoordOpts { lease_seconds: 60.0, heartbeat_seconds: 1.0, ..Default::default() };
    let coord = start_coordinator(dir, &dir.join("study.db"), 0, &opts, "a");
    create_study(&rt, &coord.url, spec("term", 2, base_config(8, 3000), "none"));
    let data = data_dir();
    let mut w = start_worker(dir, &coord.url, "term", &data, &[]);
    let running = wait_for("a trial that reported an epoch", Duration::from_secs(90), &[&w, &coord.proc], || {
        trials(&rt, &coord.url, "term")?
            .into_iter()
            .find(|t| state(t) == pb::TrialState::Running && !t.intermediate_values.is_empty())
    });
    w.sigterm();
    // Released: WAITING again (no one else is asking) well within the lease.
    let t = wait_for("the trial to be released", Duration::from_secs(20), &[&w, &coord.proc], || {
        trials(&rt, &coord.url, "term")?.into_iter().find(|t| t.trial_id == running.trial_id && state(t) == pb::TrialState::Waiting)
    });
    assert!(t.fail_reason.contains("released"), "re-queued for another reason: {:?}", t.fail_reason);
    assert_eq!(t.retries, 0, "a release must not count as a retry");
    let st = w.wait_exit(Duration::from_secs(60)).unwrap_or_else(|| panic!("the worker did not exit after SIGTERM\n{}", w.tail(40)));
    assert!(st.success(), "the worker exited with {st} after SIGTERM\n{}", w.tail(40));
    let mut other = start_worker(dir, &coord.url, "other", &data, &["--exit-when-idle"]);
    wait_workers(std::slice::from_mut(&mut other), Duration::from_secs(180), &[&coord.proc]);
    let ts = trials(&rt, &coord.url, "term").unwrap();
    assert_exact(&ts, 2, &[pb::TrialState::Complete], &logs(&[&w, &other, &coord.proc]));
}

/// A pruned trial keeps its curves, metrics and model: a good trial runs
/// first, then a hopeless one (learning rate 1e-3, heavy dropout) that the
/// median pruner stops after its first epoch; both trials' artifacts are in
/// the coordinator's store.
#[test]
fn a_pruned_trial_uploads_its_artifacts() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = rt();
    let coord = start_coordinator(dir, &dir.join("study.db"), 0, &CoordOpts::default(), "a");
    let mut s = spec("pruned", 2, base_config(3, 1500), "median");
    s.pruner = Some(pb::PrunerSpec { kind: "median".into(), options_json: r#"{"n_startup_trials": 1, "n_warmup_steps": 0}"#.into() });
    let study = create_study(&rt, &coord.url, s);
    enqueue(&rt, &coord.url, "pruned", &[("learning_rate", 0.1), ("momentum", 0.9), ("dropout_fc", 0.0)]);
    enqueue(&rt, &coord.url, "pruned", &[("learning_rate", 0.001), ("momentum", 0.5), ("dropout_fc", 0.5)]);
    let mut workers = vec![start_worker(dir, &coord.url, "w0", &data_dir(), &["--exit-when-idle"])];
    wait_workers(&mut workers, Duration::from_secs(240), &[&coord.proc]);
    let all: Vec<&Proc> = workers.iter().chain([&coord.proc]).collect();
    let ts = trials(&rt, &coord.url, "pruned").unwrap();
    let states: Vec<pb::TrialState> = ts.iter().map(state).collect();
    assert_eq!(states, vec![pb::TrialState::Complete, pb::TrialState::Pruned], "{}", logs(&all));
    assert_eq!(ts[1].intermediate_values.len(), 1, "pruned after its first epoch\n{}", logs(&all));
    let root = dir.join("study.db.artifacts").join(format!("study-{}", study.study_id));
    for t in &ts {
        let d = root.join(format!("trial-{}", t.number));
        for f in ["metrics.json", "plots/accuracy.png", "plots/loss.png", "plots/confusion_matrix.png", "model/MLmodel", "weights/model.safetensors"] {
            assert!(d.join(f).is_file(), "{} is missing\n{}", d.join(f).display(), logs(&all));
        }
    }
}

/// Bad flags are refused by name with exit status 1 or 2, negative numbers
/// included (read as values, so the check can name them), before the worker
/// tries to reach its coordinator.
#[test]
fn bad_worker_flags_are_named() {
    let cases: [(&[&str], &str); 6] = [
        (&["--poll-seconds", "-1"], "--poll-seconds must be a number of seconds above 0 up to 2592000 (30 days), got -1"),
        (&["--max-backoff-seconds", "0"], "--max-backoff-seconds must be a number of seconds above 0"),
        (&["--poll-seconds", "1e20"], "--poll-seconds must be a number of seconds above 0 up to 2592000"),
        (&["--torch-threads", "-1"], "--torch-threads must be at least 1, got -1"),
        (&["--devices", "bogus"], "unknown device \"bogus\""),
        (&["--label", "novalue"], "\"novalue\" is not KEY=VALUE"),
    ];
    for (flags, needle) in cases {
        let out = std::process::Command::new(worker_bin())
            .args(["--coordinator", "http://127.0.0.1:9"])
            .args(flags)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run mnist-worker");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(matches!(out.status.code(), Some(1 | 2)), "{flags:?}: {out:?}");
        assert!(err.contains(needle), "{flags:?}: expected {needle:?} in:\n{err}");
        assert!(!err.contains("unreachable") && !err.contains("panicked"), "{flags:?}:\n{err}");
    }
}

/// A coordinator whose copy of a file grew after it was verified (here a
/// 64 MiB sparse file under the name of the 10 KB test labels): the worker
/// refuses it at the first chunk, by name, instead of writing every byte
/// it is sent to disk, and leaves no partial file behind.
#[test]
fn an_oversized_file_from_the_coordinator_is_refused() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = rt();
    let (coord_data, worker_data) = (dir.join("coord-data"), dir.join("worker-data"));
    for d in [&coord_data, &worker_data] {
        std::fs::create_dir_all(d).unwrap();
    }
    for f in mnist_common::mnist::FILES {
        let src = mnist_common::mnist::locate(&data_dir(), &f).expect("the shared MNIST copy");
        let name = src.file_name().unwrap();
        std::fs::copy(&src, coord_data.join(name)).unwrap();
        if f.name != mnist_common::mnist::TEST_LABELS.name {
            std::fs::copy(&src, worker_data.join(name)).unwrap();
        }
    }
    let opts = CoordOpts { data_dir: Some(coord_data.clone()), ..CoordOpts::default() };
    let coord = start_coordinator(dir, &dir.join("study.db"), 0, &opts, "a");
    // The coordinator verifies the labels once, on the first fetch ...
    rt.block_on(async {
        use tokio_stream::StreamExt;
        let mut c = mnist_proto::v1::worker_service_client::WorkerServiceClient::connect(coord.url.clone()).await.unwrap();
        let req = pb::FetchDatasetRequest { files: vec!["t10k-labels-idx1-ubyte".into()] };
        let mut s = c.fetch_dataset(req).await.expect("FetchDataset").into_inner();
        while let Some(chunk) = s.next().await {
            chunk.expect("a chunk");
        }
    });
    // ... then its copy is replaced.
    let labels = coord_data.join("t10k-labels-idx1-ubyte.gz");
    std::fs::File::create(&labels).unwrap().set_len(64 << 20).unwrap();
    let mut w = start_worker(dir, &coord.url, "w", &worker_data, &["--exit-when-idle"]);
    let st = w.wait_exit(Duration::from_secs(60)).unwrap_or_else(|| panic!("the worker did not exit\n{}", logs(&[&w, &coord.proc])));
    assert_eq!(st.code(), Some(1), "{}", logs(&[&w, &coord.proc]));
    let text = std::fs::read_to_string(&w.log).unwrap_or_default();
    assert!(
        text.contains("t10k-labels-idx1-ubyte.gz (67108864 bytes or more), larger than any copy of t10k-labels-idx1-ubyte can be"),
        "{}",
        logs(&[&w, &coord.proc])
    );
    let left: Vec<_> = std::fs::read_dir(&worker_data).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 3, "no partial or refused file is kept: {left:?}");
}

/// Studies whose names made the same local directory ("a b" and "a_b"), and
/// one whose name is longer than a file name may be (300 characters; the
/// coordinator accepts 512): each trial writes its own local artifacts and
/// uploads them.
#[test]
fn every_study_name_gets_its_own_local_artifact_directory() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = rt();
    let coord = start_coordinator(dir, &dir.join("study.db"), 0, &CoordOpts::default(), "a");
    let long = "l".repeat(300);
    let names = ["a b", "a_b", long.as_str()];
    let studies: Vec<pb::Study> = names.iter().map(|n| create_study(&rt, &coord.url, spec(n, 1, base_config(1, 1000), "none"))).collect();
    let mut w = start_worker(dir, &coord.url, "w", &data_dir(), &["--exit-when-idle", "--keep-artifacts"]);
    wait_workers(std::slice::from_mut(&mut w), Duration::from_secs(120), &[&coord.proc]);
    let all = [&w, &coord.proc];
    let root = dir.join("study.db.artifacts");
    for s in &studies {
        let ts = trials(&rt, &coord.url, &s.name).unwrap();
        assert_exact(&ts, 1, &[pb::TrialState::Complete], &logs(&all));
        let f = root.join(format!("study-{}", s.study_id)).join("trial-0/weights/model.safetensors");
        assert!(f.is_file(), "{} is missing (study {:.20}...)\n{}", f.display(), s.name, logs(&all));
    }
    // The kept local copies: one directory per study, none overwritten.
    let local: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join("work-w")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(local.len(), 3, "{local:?}");
    for d in &local {
        assert!(d.join("trial-0/metrics.json").is_file(), "{} has no artifacts\n{}", d.display(), logs(&all));
    }
}

/// A coordinator that takes files up to 1 MiB: the model's weights (about
/// 5 MB for the default net) are refused as too large at once, not retried
/// as if the coordinator were down, and the other files still arrive; the
/// model directory's `MLmodel` is held back, so no incomplete model is
/// stored (or logged to MLflow).
#[test]
fn files_over_the_coordinators_size_limit_are_skipped_and_the_rest_arrive() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = rt();
    let opts = CoordOpts { extra_args: vec!["--max-artifact-mib".into(), "1".into()], ..CoordOpts::default() };
    let coord = start_coordinator(dir, &dir.join("study.db"), 0, &opts, "a");
    let base = serde_json::json!({"epochs": 1, "train_limit": 500, "val_size": 100, "test_limit": 200}).to_string();
    let s = create_study(&rt, &coord.url, spec("limit", 1, base, "none"));
    let mut w = start_worker(dir, &coord.url, "w", &data_dir(), &["--exit-when-idle"]);
    wait_workers(std::slice::from_mut(&mut w), Duration::from_secs(120), &[&coord.proc]);
    let all = [&w, &coord.proc];
    let ts = trials(&rt, &coord.url, "limit").unwrap();
    assert_exact(&ts, 1, &[pb::TrialState::Complete], &logs(&all));
    let stored = dir.join("study.db.artifacts").join(format!("study-{}", s.study_id)).join("trial-0");
    for f in ["metrics.json", "plots/accuracy.png", "model/conda.yaml"] {
        assert!(stored.join(f).is_file(), "{f} is missing\n{}", logs(&all));
    }
    for f in ["weights/model.safetensors", "model/data/model.pth", "model/MLmodel"] {
        assert!(!stored.join(f).exists(), "{f} was stored\n{}", logs(&all));
    }
    let log = std::fs::read_to_string(&w.log).unwrap_or_default();
    assert!(log.contains("the coordinator refused this artifact") && log.contains("--max-artifact-mib"), "{}", logs(&all));
    assert!(!log.contains("unreachable"), "a refusal was retried as an outage\n{}", logs(&all));

    // The worker stopped cleanly and said so: listed offline at once, not
    // after the worker timeout (90 s).
    let listed = |include_offline: bool| {
        rt.block_on(async {
            let mut c = mnist_proto::v1::study_service_client::StudyServiceClient::connect(coord.url.clone()).await.unwrap();
            c.list_workers(pb::ListWorkersRequest { include_offline }).await.unwrap().into_inner().workers
        })
    };
    assert!(listed(false).is_empty(), "{:?}", listed(false));
    let all_workers = listed(true);
    assert!(all_workers.len() == 1 && !all_workers[0].online, "{all_workers:?}");
}

/// A study whose second trial is pruned after its first epoch and then has
/// seconds of work left before it is completed as PRUNED: the full 10,000
/// test images through a 32/64-channel net, the plots and the model export.
/// The first trial (2 epochs) completes.
fn slow_prune_study(rt: &tokio::runtime::Runtime, url: &str, name: &str) {
    let base = serde_json::json!({"epochs": 2, "train_limit": 1500, "val_size": 300, "conv1_channels": 32, "conv2_channels": 64,
        "fc_width": 128, "batch_size": 50, "eval_batch_size": 1000})
    .to_string();
    let mut s = spec(name, 2, base, "median");
    s.pruner = Some(pb::PrunerSpec { kind: "median".into(), options_json: r#"{"n_startup_trials": 1, "n_warmup_steps": 0}"#.into() });
    create_study(rt, url, s);
    enqueue(rt, url, name, &[("learning_rate", 0.001), ("momentum", 0.5), ("dropout_fc", 0.5)]);
    enqueue(rt, url, name, &[("learning_rate", 0.3), ("momentum", 0.9), ("dropout_fc", 0.0)]);
}

/// A pruned trial renews its lease while it evaluates the test set and
/// writes its artifacts (longer than the 2 s lease here): it stays PRUNED,
/// is not re-queued, and is not trained again.
#[test]
fn a_pruned_trial_keeps_its_lease_through_its_post_prune_work() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = rt();
    let opts = CoordOpts { lease_seconds: 2.0, heartbeat_seconds: 0.4, ..CoordOpts::default() };
    let coord = start_coordinator(dir, &dir.join("study.db"), 0, &opts, "a");
    slow_prune_study(&rt, &coord.url, "pruned");
    let mut w = start_worker(dir, &coord.url, "w0", &data_dir(), &["--exit-when-idle", "--max-trials", "2"]);
    wait_workers(std::slice::from_mut(&mut w), Duration::from_secs(300), &[&coord.proc]);
    let all = [&w, &coord.proc];
    let ts = trials(&rt, &coord.url, "pruned").unwrap();
    let states: Vec<pb::TrialState> = ts.iter().map(state).collect();
    assert_eq!(states, vec![pb::TrialState::Complete, pb::TrialState::Pruned], "{}", logs(&all));
    let t = &ts[1];
    assert_eq!(t.retries, 0, "the pruned trial was re-queued: {:?}\n{}", t.fail_reason, logs(&all));
    assert!(t.metrics.contains_key("test_accuracy"), "{:?}", t.metrics);
}

/// SIGTERM while the worker is still trying to complete a fully trained
/// trial (its coordinator is restarting): the completion is not abandoned
/// at once, leaving the trial RUNNING until its lease expires and training
/// it again, but gets a few seconds, and the restarted coordinator records
/// the trial COMPLETE.
#[test]
fn sigterm_during_the_completion_call_lets_it_finish() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = rt();
    let db = dir.join("study.db");
    let opts = CoordOpts { lease_seconds: 60.0, heartbeat_seconds: 1.0, ..Default::default() };
    let mut coord = start_coordinator(dir, &db, 0, &opts, "first");
    // Seconds of work after the last report (the full test set through a
    // 32/64-channel net), so the coordinator is surely gone before the end.
    let base = serde_json::json!({"epochs": 2, "train_limit": 1000, "val_size": 200, "conv1_channels": 32, "conv2_channels": 64,
        "fc_width": 128, "batch_size": 50, "eval_batch_size": 1000})
    .to_string();
    create_study(&rt, &coord.url, spec("finalcall", 1, base, "none"));
    let mut w = start_worker(dir, &coord.url, "w", &data_dir(), &[]);
    let log = w.log.clone();
    let has = |needle: &str| std::fs::read_to_string(&log).unwrap_or_default().contains(needle);
    wait_for("the last epoch's report", Duration::from_secs(120), &[&w, &coord.proc], || has("reported trial=0 epoch=2 ").then_some(()));
    coord.proc.kill9();
    // The trained trial's CompleteTrial now waits for the coordinator.
    wait_for("CompleteTrial to be retried", Duration::from_secs(120), &[&w, &coord.proc], || has("call=\"CompleteTrial\"").then_some(()));
    w.sigterm();
    let second = start_coordinator(dir, &db, coord.port, &opts, "second");
    let st = w.wait_exit(Duration::from_secs(60)).unwrap_or_else(|| panic!("the worker did not exit after SIGTERM\n{}", w.tail(40)));
    let all = [&w, &coord.proc, &second.proc];
    assert!(st.success(), "the worker exited with {st}\n{}", logs(&all));
    let ts = trials(&rt, &second.url, "finalcall").unwrap();
    assert_exact(&ts, 1, &[pb::TrialState::Complete], &logs(&all));
    assert_eq!(ts[0].retries, 0, "{}", logs(&all));
}

/// SIGTERM while a pruned trial does its post-prune work: the trial is
/// completed as PRUNED (with its report), not released, re-queued and
/// trained again; the worker exits 0.
#[test]
fn sigterm_after_a_prune_completes_the_trial_as_pruned() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = rt();
    let coord = start_coordinator(dir, &dir.join("study.db"), 0, &CoordOpts::default(), "a");
    slow_prune_study(&rt, &coord.url, "prune-term");
    let mut w = start_worker(dir, &coord.url, "w", &data_dir(), &[]);
    // The pruner stopped trial 1; its post-prune work takes seconds.
    wait_for("trial 1 to be pruned", Duration::from_secs(300), &[&w, &coord.proc], || {
        let text = std::fs::read_to_string(&w.log).unwrap_or_default();
        text.contains(" pruned trial=1 epoch=1 ").then_some(())
    });
    w.sigterm();
    let st = w.wait_exit(Duration::from_secs(60)).unwrap_or_else(|| panic!("the worker did not exit after SIGTERM\n{}", w.tail(40)));
    let all = [&w, &coord.proc];
    assert!(st.success(), "the worker exited with {st}\n{}", logs(&all));
    let ts = trials(&rt, &coord.url, "prune-term").unwrap();
    let states: Vec<pb::TrialState> = ts.iter().map(state).collect();
    assert_eq!(states, vec![pb::TrialState::Complete, pb::TrialState::Pruned], "{}", logs(&all));
    assert_eq!((ts[1].retries, ts[1].intermediate_values.len()), (0, 1), "{:?}\n{}", ts[1], logs(&all));
}

/// SIGTERM while the worker fetches MNIST from a coordinator that stopped
/// answering (SIGSTOP): the fetch is abandoned at once, no partial file is
/// left, and the worker exits 0 as a clean stop.
#[test]
fn sigterm_during_the_data_set_fetch_stops_the_worker() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut coord = start_coordinator(dir, &dir.join("study.db"), 0, &CoordOpts::default(), "a");
    let empty = dir.join("empty-data");
    let mut w = start_worker(dir, &coord.url, "w", &empty, &[]);
    // The fetch has started: the coordinator is now verifying its copy
    // (hundreds of milliseconds); it freezes in the middle of it.
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&w.log).unwrap_or_default().contains("fetching it from the coordinator") {
        assert!(std::time::Instant::now() < end, "the worker did not start fetching\n{}", logs(&[&w, &coord.proc]));
        std::thread::sleep(Duration::from_millis(2));
    }
    let signal = |p: &Proc, sig| {
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        assert_eq!(unsafe { libc::kill(p.pid() as libc::pid_t, sig) }, 0);
    };
    signal(&coord.proc, libc::SIGSTOP);
    w.sigterm();
    let st = w.wait_exit(Duration::from_secs(60));
    signal(&coord.proc, libc::SIGCONT);
    let st = st.unwrap_or_else(|| panic!("the worker did not exit after SIGTERM\n{}", logs(&[&w, &coord.proc])));
    let text = std::fs::read_to_string(&w.log).unwrap_or_default();
    assert!(st.success(), "the worker exited with {st}\n{}", logs(&[&w, &coord.proc]));
    assert!(text.contains("stopped before the worker started"), "{}", logs(&[&w, &coord.proc]));
    assert!(!text.contains("MNIST fetched and verified"), "the fetch ended before the coordinator froze; nothing was tested");
    let left: Vec<_> = std::fs::read_dir(&empty).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.iter().all(|n| !n.to_string_lossy().starts_with(".fetch-")), "partial files left: {left:?}");
    coord.proc.kill9();
}
