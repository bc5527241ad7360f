//! Python Optuna 5.0.0 reads the coordinator's live database
//! (`optuna.load_study(storage="sqlite:///…")`) and agrees with the gRPC API
//! on the trials, their states, values, parameters and intermediate values,
//! and on the best trial.

mod common;

use std::time::Duration;

use common::*;
use mnist_proto::v1 as pb;

const PY: &str = r#"
import json, sys, math
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
s = optuna.load_study(study_name=sys.argv[2], storage="sqlite:///" + sys.argv[1])
def f(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v
out = {
    "direction": s.direction.name,
    "best_value": s.best_value,
    "best_number": s.best_trial.number,
    "best_params": s.best_params,
    "trials": [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "intermediate": {str(k): f(v) for k, v in t.intermediate_values.items()},
            "user_attrs": t.user_attrs,
            "fail_reason": t.system_attrs.get("fail_reason"),
            "has_start": t.datetime_start is not None,
            "has_complete": t.datetime_complete is not None,
            "distributions": {k: type(d).__name__ for k, d in t.distributions.items()},
        }
        for t in s.get_trials(deepcopy=False)
    ],
}
print(json.dumps(out))
"#;

fn pv_json(p: &pb::ParamValue) -> serde_json::Value {
    use pb::param_value::Kind;
    match &p.kind {
        Some(Kind::FloatValue(x)) => serde_json::json!(x),
        Some(Kind::IntValue(i)) => serde_json::json!(i),
        Some(Kind::StringValue(s)) => serde_json::json!(s),
        Some(Kind::BoolValue(b)) => serde_json::json!(b),
        _ => serde_json::Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optuna_reads_the_live_study() {
    let Some(python) = python() else {
        eprintln!("skipping: no Python venv with Optuna (set MNIST_PYTHON)");
        return;
    };
    let dir = tempdir();
    let db = dir.path().join("optuna.db");
    let (server, mut c) = start_in_process(fast_config(&db, Duration::from_secs(30))).await;
    // The default CNN space, TPE, 12 trials: 9 complete, 1 pruned, 1 failed, 1 running.
    let mut spec = pb::StudySpec { name: "compat".into(), n_trials: 12, ..Default::default() };
    spec.sampler = Some(pb::SamplerSpec { kind: "tpe".into(), seed: Some(3), options_json: r#"{"n_startup_trials": 4}"#.into() });
    create(&mut c, spec).await;
    c.study
        .enqueue_trial(pb::EnqueueTrialRequest {
            study_name: "compat".into(),
            params: [
                ("learning_rate".to_string(), pb::ParamValue { kind: Some(pb::param_value::Kind::FloatValue(0.01)) }),
                ("batch_size".to_string(), pb::ParamValue { kind: Some(pb::param_value::Kind::IntValue(64)) }),
            ]
            .into(),
        })
        .await
        .unwrap();
    let w = register(&mut c, "py-compat", 1).await;
    for i in 0..12u32 {
        let t = acquire(&mut c, &w, 0).await.expect("a trial");
        let tok = t.lease.as_ref().unwrap().token;
        let lr = num(&t.params["learning_rate"]);
        let acc = 0.99 - (lr.log10() + 2.0).powi(2) * 0.01 - num(&t.params["dropout_fc"]) * 0.001;
        for step in 0..2u64 {
            c.worker
                .report_intermediate(pb::ReportIntermediateRequest {
                    trial_id: t.trial_id,
                    lease_token: tok,
                    step,
                    value: acc - 0.01 * (2 - step) as f64,
                    metrics: [("val_loss".to_string(), 0.1)].into(),
                })
                .await
                .unwrap();
        }
        match i {
            5 => {
                c.worker
                    .complete_trial(pb::CompleteTrialRequest {
                        trial_id: t.trial_id,
                        lease_token: tok,
                        state: pb::TrialState::Pruned as i32,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            7 => {
                c.worker
                    .fail_trial(pb::FailTrialRequest { trial_id: t.trial_id, lease_token: tok, reason: "diverged".into(), retryable: false })
                    .await
                    .unwrap();
            }
            11 => {} // left RUNNING
            _ => {
                c.worker
                    .complete_trial(pb::CompleteTrialRequest {
                        trial_id: t.trial_id,
                        lease_token: tok,
                        value: Some(acc),
                        metrics: [("test_accuracy".to_string(), acc - 0.001)].into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        }
    }

    // While the coordinator runs (a live study), Optuna reads the file.
    let out = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(PY)
        .arg(&db)
        .arg("compat")
        .output()
        .await
        .expect("run python");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    let py: serde_json::Value = serde_json::from_slice(&out.stdout).expect("python printed JSON");

    let study = c.study.get_study(pb::GetStudyRequest { name: "compat".into() }).await.unwrap().into_inner();
    let best = study.best_trial.clone().unwrap();
    assert_eq!(py["direction"], "MAXIMIZE");
    assert_eq!(py["best_value"].as_f64(), best.value);
    assert_eq!(py["best_number"].as_u64(), Some(best.number));
    for (k, v) in &best.params {
        assert_eq!(py["best_params"][k], pv_json(v), "best param {k}");
    }
    let trials = c
        .study
        .list_trials(pb::ListTrialsRequest { study_name: "compat".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .trials;
    let pyt = py["trials"].as_array().unwrap();
    assert_eq!(pyt.len(), trials.len());
    assert_eq!(pyt.len(), 12);
    for (t, p) in trials.iter().zip(pyt) {
        let state = pb::TrialState::try_from(t.state).unwrap().as_str_name().trim_start_matches("TRIAL_STATE_").to_string();
        assert_eq!(p["number"].as_u64(), Some(t.number));
        assert_eq!(p["state"].as_str(), Some(state.as_str()), "trial {}", t.number);
        assert_eq!(p["value"].as_f64(), t.value, "trial {}", t.number);
        for (k, v) in &t.params {
            assert_eq!(p["params"][k], pv_json(v), "trial {} param {k}", t.number);
        }
        assert_eq!(p["params"].as_object().unwrap().len(), t.params.len());
        for (step, v) in &t.intermediate_values {
            assert_eq!(p["intermediate"][step.to_string()].as_f64(), Some(*v));
        }
        assert_eq!(p["has_start"].as_bool(), Some(true));
        assert_eq!(p["has_complete"].as_bool(), Some(t.state != pb::TrialState::Running as i32));
        for (k, v) in &t.metrics {
            assert_eq!(p["user_attrs"][k].as_f64(), Some(*v));
        }
    }
    assert_eq!(pyt[0]["params"]["learning_rate"], serde_json::json!(0.01), "the enqueued trial ran first");
    assert_eq!(pyt[0]["params"]["batch_size"], serde_json::json!(64));
    assert_eq!(pyt[0]["distributions"]["batch_size"], "CategoricalDistribution");
    assert_eq!(pyt[0]["distributions"]["learning_rate"], "FloatDistribution");
    assert_eq!(pyt[0]["distributions"]["fc_width"], "IntDistribution");
    assert_eq!(pyt[5]["state"], "PRUNED");
    assert_eq!(pyt[7]["fail_reason"], "diverged");
    assert_eq!(pyt[11]["state"], "RUNNING");
    server.shutdown().await.unwrap();
}

/// Reports `value` at `step` for an acquired trial; returns "prune".
async fn report_value(c: &mut Clients, t: &pb::TrialAssignment, step: u64, value: f64) -> bool {
    let lease_token = t.lease.as_ref().expect("a lease").token;
    c.worker
        .report_intermediate(pb::ReportIntermediateRequest { trial_id: t.trial_id, lease_token, step, value, metrics: Default::default() })
        .await
        .expect("report")
        .into_inner()
        .prune
}

/// Finishes an acquired trial in `state` (COMPLETE or PRUNED) with `value`.
async fn finish(c: &mut Clients, t: &pb::TrialAssignment, state: pb::TrialState, value: f64) {
    let lease_token = t.lease.as_ref().expect("a lease").token;
    c.worker
        .complete_trial(pb::CompleteTrialRequest { trial_id: t.trial_id, lease_token, state: state as i32, value: Some(value), ..Default::default() })
        .await
        .expect("complete");
}

/// A minimising study with random sampling and successive halving at
/// min_resource 1, eta 2 (rungs at steps 1, 2, 4, ...).
async fn create_asha_study(c: &mut Clients, name: &str, n_trials: u32) {
    let mut spec = pb::StudySpec { name: name.into(), n_trials, direction: pb::Direction::Minimize as i32, ..Default::default() };
    spec.sampler = Some(pb::SamplerSpec { kind: "random".into(), seed: Some(1), options_json: String::new() });
    spec.pruner = Some(pb::PrunerSpec { kind: "successive_halving".into(), options_json: r#"{"min_resource": 1, "reduction_factor": 2}"#.into() });
    create(c, spec).await;
}

/// Optuna replays the same reports with its own `SuccessiveHalvingPruner`
/// (in memory) and prints each decision and the rung values it stored; then it
/// reads the rung values our coordinator stored in its database.
const PY_SH: &str = r#"
import json, sys
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
reports = json.loads(sys.argv[3])
ref = optuna.create_study(direction="minimize",
                          pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2))
trials, decisions = {}, []
for n, step, value, finish in reports:
    if n not in trials:
        trials[n] = ref.ask()
    t = trials[n]
    t.report(value, step)
    p = t.should_prune()
    decisions.append(p)
    if p:
        ref.tell(t, state=optuna.trial.TrialState.PRUNED)
    elif finish:
        ref.tell(t, value)
def rungs(ts):
    return [{k: v for k, v in t.system_attrs.items() if k.startswith("completed_rung_")} for t in ts]
ours = optuna.load_study(study_name=sys.argv[2], storage="sqlite:///" + sys.argv[1])
print(json.dumps({"decisions": decisions, "reference": rungs(ref.get_trials()),
                  "ours": rungs(ours.get_trials())}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successive_halving_stores_rungs_as_optuna_does() {
    let Some(python) = python() else {
        eprintln!("skipping: no Python venv with Optuna (set MNIST_PYTHON)");
        return;
    };
    let dir = tempdir();
    let db = dir.path().join("optuna.db");
    let cfg = fast_config(&db, Duration::from_secs(30));
    let (server, mut c) = start_in_process(cfg.clone()).await;
    create_asha_study(&mut c, "asha", 8).await;
    let w = register(&mut c, "sh", 1).await;
    // Rungs at steps 1, 2, 4. Trials 1 and 2 jump straight to step 4 and are
    // pruned at rung 0, so at rung 1 trial 3 meets trial 0 only (and is pruned).
    let reports: [(u64, u64, f64, bool); 7] =
        [(0, 1, 1.0, false), (0, 2, 1.0, false), (0, 4, 1.0, true), (1, 4, 10.0, false), (2, 4, 11.0, false), (3, 1, 0.5, false), (3, 2, 5.0, false)];
    let mut decisions = Vec::new();
    let mut current: Option<pb::TrialAssignment> = None;
    for (n, step, value, finish_now) in reports {
        if current.as_ref().map(|t| t.number) != Some(n) {
            current = Some(acquire(&mut c, &w, 0).await.expect("a trial"));
        }
        let t = current.clone().unwrap();
        assert_eq!(t.number, n);
        let prune = report_value(&mut c, &t, step, value).await;
        decisions.push(prune);
        if prune || finish_now {
            finish(&mut c, &t, if prune { pb::TrialState::Pruned } else { pb::TrialState::Complete }, value).await;
        }
    }
    assert_eq!(decisions, [false, false, false, true, true, false, true]);
    let out = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(PY_SH)
        .arg(&db)
        .arg("asha")
        .arg(serde_json::to_string(&reports).unwrap())
        .output()
        .await
        .expect("run python");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    let py: serde_json::Value = serde_json::from_slice(&out.stdout).expect("python printed JSON");
    assert_eq!(py["decisions"], serde_json::json!(decisions), "Optuna decides the same");
    assert_eq!(py["ours"], py["reference"], "the same rung values, under Optuna's keys");
    assert_eq!(py["ours"][3], serde_json::json!({"completed_rung_0": 0.5, "completed_rung_1": 5.0}));

    // After a restart the stored rungs are read back: a new trial reaching
    // rung 1 with 3.0 meets trial 0's 1.0 and trial 3's 5.0 there, and is pruned
    // (with no rungs loaded it would be alone at each rung, and kept).
    server.shutdown().await.unwrap();
    let (server, mut c) = start_in_process(cfg).await;
    let w = register(&mut c, "sh2", 1).await;
    let t = acquire(&mut c, &w, 0).await.expect("a trial");
    let mut pruned = Vec::new();
    for (step, value) in [(1u64, 0.2), (2, 3.0)] {
        pruned.push(report_value(&mut c, &t, step, value).await);
    }
    assert_eq!(pruned, [false, true]);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeued_trial_starts_again_at_rung_zero() {
    let dir = tempdir();
    let db = dir.path().join("optuna.db");
    let cfg = fast_config(&db, Duration::from_secs(30));
    let (server, mut c) = start_in_process(cfg.clone()).await;
    create_asha_study(&mut c, "retry", 4).await;
    let w = register(&mut c, "retry", 1).await;
    // Trial 0 records 0.1 at rung 0 (step 1) and completes.
    let t0 = acquire(&mut c, &w, 0).await.expect("trial 0");
    assert!(!report_value(&mut c, &t0, 1, 0.1).await);
    finish(&mut c, &t0, pb::TrialState::Complete, 0.1).await;
    // Trial 1 records 0.05 there (the best), then fails retryably: re-queued.
    let t1 = acquire(&mut c, &w, 0).await.expect("trial 1");
    assert!(!report_value(&mut c, &t1, 1, 0.05).await);
    c.worker
        .fail_trial(pb::FailTrialRequest { trial_id: t1.trial_id, lease_token: t1.lease.as_ref().unwrap().token, reason: "worker lost its GPU".into(), retryable: true })
        .await
        .unwrap();
    // Across a restart (so what counts is what the database kept), the new
    // attempt of trial 1 reaches rung 0 again and, with 0.6 against trial 0's
    // 0.1, is pruned there. Had its old rung value survived, it would start at
    // rung 1 (step 2) and not be judged at step 1 at all.
    server.shutdown().await.unwrap();
    let (server, mut c) = start_in_process(cfg).await;
    let w = register(&mut c, "retry2", 1).await;
    let again = acquire(&mut c, &w, 0).await.expect("trial 1 again");
    assert_eq!(again.number, 1);
    assert!(report_value(&mut c, &again, 1, 0.6).await);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_resource_estimates_survive_a_restart() {
    let dir = tempdir();
    let db = dir.path().join("optuna.db");
    let cfg = fast_config(&db, Duration::from_secs(30));
    let (server, mut c) = start_in_process(cfg.clone()).await;
    // Successive halving with Optuna's defaults: "auto" min_resource, eta 4.
    let mut spec = pb::StudySpec { name: "auto".into(), n_trials: 4, direction: pb::Direction::Minimize as i32, ..Default::default() };
    spec.sampler = Some(pb::SamplerSpec { kind: "random".into(), seed: Some(1), options_json: String::new() });
    spec.pruner = Some(pb::PrunerSpec { kind: "successive_halving".into(), options_json: "{}".into() });
    create(&mut c, spec).await;
    let w = register(&mut c, "auto", 1).await;
    // Trial 0 completes after 250 steps; trial 1's report (step 450) is the
    // first decision with a completed trial: min_resource = 250 / 100 = 2, so
    // rungs at steps 2, 8, 32, 128, and trial 1 records all four.
    for (step, finish_value) in [(250u64, 1.0), (450, 1.0)] {
        let t = acquire(&mut c, &w, 0).await.expect("a trial");
        assert!(!report_value(&mut c, &t, step, finish_value).await);
        finish(&mut c, &t, pb::TrialState::Complete, finish_value).await;
    }
    // After a restart the estimate is still 2 (re-estimating would give
    // 450 / 100 = 4, and step 2 would be before the first rung): trial 2 meets
    // trial 1's 1.0 at rung 0 with 5.0, and is pruned.
    server.shutdown().await.unwrap();
    let (server, mut c) = start_in_process(cfg).await;
    let w = register(&mut c, "auto2", 1).await;
    let t = acquire(&mut c, &w, 0).await.expect("trial 2");
    assert!(report_value(&mut c, &t, 2, 5.0).await, "the first estimate (rungs from step 2) was kept across the restart");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_study_cannot_take_the_name_of_an_optuna_study_in_the_file() {
    let Some(python) = python() else {
        eprintln!("skipping: no Python venv with Optuna (set MNIST_PYTHON)");
        return;
    };
    let dir = tempdir();
    let db = dir.path().join("optuna.db");
    // Optuna's own study in the file first (the coordinator does not manage it).
    let out = tokio::process::Command::new(&python)
        .arg("-c")
        .arg("import sys, optuna; optuna.create_study(study_name='shared', storage='sqlite:///' + sys.argv[1])")
        .arg(&db)
        .output()
        .await
        .expect("run python");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    let (server, mut c) = start_in_process(fast_config(&db, Duration::from_secs(30))).await;
    let err = c
        .study
        .create_study(pb::CreateStudyRequest { spec: Some(pb::StudySpec { name: "shared".into(), n_trials: 2, ..Default::default() }), ..Default::default() })
        .await
        .expect_err("the name is taken");
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("not managed"), "{}", err.message());
    // The coordinator is still up and takes other names.
    create(&mut c, pb::StudySpec { name: "ours".into(), n_trials: 2, ..Default::default() }).await;
    server.shutdown().await.unwrap();
}

/// Optuna 5.0 keeps `datetime_start`/`datetime_complete` as naive UTC in the
/// file and shows them in the host's zone (`models.TrialModel` converts both
/// ways); so do we, so Optuna (and its dashboard) shows the right times on a
/// host outside UTC, and we read them back the same after a restart. Both
/// processes run with `TZ=Asia/Tokyo` (UTC+9): a local time in the file
/// would read nine hours off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optuna_reads_our_times_in_the_hosts_time_zone() {
    let Some(python) = python() else {
        eprintln!("skipping: no Python venv with Optuna (set MNIST_PYTHON)");
        return;
    };
    const TZ: (&str, &str) = ("TZ", "Asia/Tokyo");
    let dir = tempdir();
    let db = dir.path().join("tz.db");
    let mut coord = CoordProcess::spawn_with_env(&db, &[], &[TZ]);
    let mut c = connect(&coord.url).await;
    create(&mut c, small_spec("tz", 2)).await;
    let w = register(&mut c, "tz-worker", 1).await;
    let t = acquire(&mut c, &w, 0).await.expect("a trial");
    finish(&mut c, &t, pb::TrialState::Complete, 1.0).await;
    let script = "import sys, time, optuna\n\
                  optuna.logging.set_verbosity(optuna.logging.WARNING)\n\
                  t = optuna.load_study(study_name='tz', storage='sqlite:///' + sys.argv[1]).trials[0]\n\
                  print(max(abs(t.datetime_start.timestamp() - time.time()), abs(t.datetime_complete.timestamp() - time.time())))";
    let out = tokio::process::Command::new(&python).arg("-c").arg(script).arg(&db).env(TZ.0, TZ.1).output().await.expect("run python");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    let off: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("seconds");
    let raw = std::process::Command::new(&python)
        .arg("-c")
        .arg("import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT datetime_start, datetime_complete FROM trials').fetchall())")
        .arg(&db)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(off < 600.0, "Optuna reads our times {off} s away from now (stored: {raw})");

    // Read back after a restart in the same zone.
    coord.terminate();
    let coord = CoordProcess::spawn_with_env(&db, &[], &[TZ]);
    let mut c = connect(&coord.url).await;
    let got = c.study
        .get_trial(pb::GetTrialRequest { key: Some(pb::get_trial_request::Key::Ref(pb::TrialRef { study_name: "tz".into(), number: 0 })) }).await.unwrap().into_inner();
    let start = got.datetime_start.expect("a start time").seconds;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - start).abs() < 600, "start read back {} s away from now", now - start);
}
