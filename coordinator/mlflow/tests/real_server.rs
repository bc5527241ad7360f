//! The client, the limits and the outbox against a real `mlflow server`
//! (3.17.2) started with `--app-name basic-auth`: credentials, MLflow's
//! batch and value limits, and exactly-once delivery when every operation is
//! sent twice (as after a crash between "sent" and "marked done").
//!
//! One server for the whole file, so the cases run in one test, in order.

#[path = "support/mlflow_server.rs"]
mod mlflow_server;

use std::time::Duration;

use mlflow_server::MlflowServer;
use mnist_mlflow::op::{torch_flavors, AliasRule};
use mnist_mlflow::{Auth, Deliverer, MetricPoint, MlflowClient, MlflowConfig, MlflowError, Op, Outbox, RunStatus};

fn config(uri: &str, auth: Auth) -> MlflowConfig {
    MlflowConfig { tracking_uri: Some(uri.to_string()), auth, ..MlflowConfig::default() }
}

fn point(key: &str, value: f64, step: i64) -> MetricPoint {
    MetricPoint { key: key.into(), value, timestamp_ms: 1_700_000_000_000 + step, step }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_mlflow_server_with_basic_auth() {
    let server = MlflowServer::start_basic_auth();
    let (user, password) = server.admin_credentials().expect("basic-auth server has admin credentials");
    let uri = server.uri();
    let good = config(&uri, Auth::Basic { username: user.clone(), password: password.clone() });

    // --- credentials: ours are accepted, wrong or missing ones refused clearly.
    MlflowClient::new(&good).unwrap().check_access().await.expect("the admin credentials are accepted");
    for (what, auth) in [
        ("wrong password", Auth::Basic { username: user.clone(), password: "not-the-password".into() }),
        ("no credentials", Auth::None),
        ("a bearer token", Auth::Bearer("nope".into())),
    ] {
        let e = MlflowClient::new(&config(&uri, auth)).unwrap().ensure_experiment("refused").await.unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, MlflowError::Auth { status: 401, .. }), "{what}: {msg}");
        assert!(msg.contains("refused our credentials") && msg.contains("MLFLOW_TRACKING_USERNAME"), "{what}: {msg}");
    }
    // The deliverer keeps the operations and says why it stopped.
    let dir = tempfile::tempdir().unwrap();
    let wrong_db = dir.path().join("wrong.db");
    let outbox = Outbox::open(&wrong_db).await.unwrap();
    outbox
        .enqueue(&[Op::StartRun { run_key: "x".into(), experiment: "refused".into(), run_name: "x".into(), parent_key: None, start_ms: 1, tags: vec![], params: vec![] }])
        .await
        .unwrap();
    let wrong = config(&uri, Auth::Basic { username: user.clone(), password: "bad".into() });
    let report = Deliverer::new(outbox.clone(), &wrong).unwrap().drain(Duration::from_secs(5)).await.unwrap();
    assert_eq!(report.pending, 1, "nothing is dropped on an auth error");
    assert!(report.blocked_by.as_deref().unwrap_or("").contains("refused our credentials"), "{report:?}");

    // --- limits and bad values: everything that can land, lands.
    let db = dir.path().join("outbox.db");
    let outbox = Outbox::open(&db).await.unwrap();
    let many: Vec<MetricPoint> = (0..2345).map(|i| point("many", i as f64, i)).collect();
    let params: Vec<(String, String)> = (0..250).map(|i| (format!("p{i:03}"), i.to_string())).collect();
    let model_dir = dir.path().join("model");
    std::fs::create_dir_all(&model_dir).unwrap();
    std::fs::write(model_dir.join("note.txt"), "artifact through the proxy").unwrap();
    let ops = vec![
        Op::StartRun { run_key: "parent".into(), experiment: "limits".into(), run_name: "parent".into(), parent_key: None, start_ms: 1_700_000_000_000, tags: vec![], params: vec![] },
        Op::StartRun {
            run_key: "child".into(),
            experiment: "limits".into(),
            run_name: "child".into(),
            parent_key: Some("parent".into()),
            start_ms: 1_700_000_000_000,
            tags: vec![("bad key@x".into(), "v".into())],
            params: vec![("started_with".into(), "params".into())],
        },
        Op::Log { run_key: "child".into(), metrics: many.clone(), params: params.clone(), tags: vec![] },
        Op::Log {
            run_key: "child".into(),
            metrics: vec![point("nan_metric", f64::NAN, 0), point("a@b", 1.0, 0), point("fine", 2.0, 0)],
            params: vec![("long".into(), "x".repeat(7000)), ("p000".into(), "a different value".into()), ("ok".into(), "1".into())],
            tags: vec![("t".into(), "1".into()), ("t".into(), "2".into())],
        },
        Op::Artifact { run_key: "child".into(), path: "notes/note.txt".into(), file: model_dir.join("note.txt").display().to_string() },
        Op::Artifact { run_key: "child".into(), path: "gone.txt".into(), file: dir.path().join("missing").display().to_string() },
        Op::LogModel { run_key: "child".into(), artifact_path: "model".into(), time_ms: 1_700_000_000_000, flavors: torch_flavors("2.11.0", "3.11.7") },
        Op::Register {
            run_key: "child".into(),
            model_name: "limits-model".into(),
            artifact_path: "model".into(),
            alias: "champion".into(),
            tags: vec![("acc".into(), "0.5".into())],
            rule: Some(AliasRule { metric: "acc".into(), value: 0.5, maximize: true }),
        },
        Op::SetStatus {
            run_key: "child".into(),
            status: RunStatus::Killed,
            end_ms: Some(1_700_000_100_000),
            metrics: vec![point("final", 3.0, 9)],
            tags: vec![("pruned".into(), "true".into())],
        },
    ];
    outbox.enqueue(&ops).await.unwrap();
    let deliverer = Deliverer::new(outbox.clone(), &good).unwrap();
    let report = deliverer.drain(Duration::from_secs(30)).await.unwrap();
    assert_eq!(report.pending, 0, "{report:?}");
    // Refused: the param whose value changed (MLflow params cannot change),
    // kept as refused although its neighbours landed, and the missing file.
    let dead = outbox.dead(10).await.unwrap();
    assert_eq!(report.dead, 2, "{report:?} {dead:?}");
    assert!(dead[0].3.contains("refused 1 value") && dead[0].3.contains("p000"), "{dead:?}");
    assert!(dead[1].3.contains("missing"), "{dead:?}");

    let client = MlflowClient::new(&good).unwrap();
    let child = outbox.run("child").await.unwrap().unwrap();
    let parent = outbox.run("parent").await.unwrap().unwrap();
    let history = client.metric_history(&child.run_id, "many").await.unwrap();
    assert_eq!(history.len(), 2345, "every metric point across three batches");
    let nan = client.metric_history(&child.run_id, "nan_metric").await.unwrap();
    assert!(nan.len() == 1 && nan[0].1.is_nan(), "{nan:?}");
    assert_eq!(client.metric_history(&child.run_id, "a_b").await.unwrap().len(), 1, "the bad key was mended");
    assert_eq!(client.metric_history(&child.run_id, "fine").await.unwrap().len(), 1, "neighbours of bad values land");
    let run = client.run_tag(&child.run_id, "mlflow.parentRunId").await.unwrap();
    assert_eq!(run.as_deref(), Some(parent.run_id.as_str()), "nested under the parent");
    assert_eq!(client.run_tag(&child.run_id, "t").await.unwrap().as_deref(), Some("2"), "a repeated tag keeps the last value");
    assert_eq!(client.run_tag(&child.run_id, "bad key_x").await.unwrap().as_deref(), Some("v"), "a bad tag key was mended");
    assert_eq!(client.metric_history(&child.run_id, "final").await.unwrap(), vec![(9, 3.0)], "the end's metrics");
    assert_eq!(client.run_tag(&child.run_id, "pruned").await.unwrap().as_deref(), Some("true"));
    let files = client.list_artifacts(&child.run_id, "notes").await.unwrap();
    assert_eq!(files, vec![("notes/note.txt".to_string(), false)]);
    let champion = client.version_by_alias("limits-model", "champion").await.unwrap().expect("alias set");
    assert_eq!(champion.run_id, child.run_id);

    // --- a retry of the refused operations (`mlflow sync --retry-refused`)
    // does not set back what later operations changed: the refused Log also
    // carried tag `t`, which a later operation set to 3.
    outbox.enqueue(&[Op::Log { run_key: "child".into(), metrics: vec![], params: vec![], tags: vec![("t".into(), "3".into())] }]).await.unwrap();
    deliverer.drain(Duration::from_secs(30)).await.unwrap();
    assert_eq!(outbox.retry_dead().await.unwrap().resent, 2);
    let report = deliverer.drain(Duration::from_secs(30)).await.unwrap();
    assert_eq!((report.pending, report.dead), (0, 2), "refused again, for the same reasons: {report:?}");
    assert_eq!(client.run_tag(&child.run_id, "t").await.unwrap().as_deref(), Some("3"), "the newer tag value stays");

    // --- exactly once: send everything a second time, as after a crash
    // between "sent" and "marked done". Nothing doubles.
    let before_versions = champion.version.clone();
    let history_before = client.run_tag(&child.run_id, "mlflow.log-model.history").await.unwrap().unwrap_or_default();
    // Forget what delivery learnt, except the run ids a crash would also lose
    // (the run-id rows are written after the run is created).
    let again = Outbox::open(&dir.path().join("again.db")).await.unwrap();
    again.enqueue(&ops[..5]).await.unwrap();
    again.enqueue(&ops[6..]).await.unwrap();
    let report = Deliverer::new(again.clone(), &good).unwrap().drain(Duration::from_secs(30)).await.unwrap();
    assert_eq!((report.pending, report.dead), (0, 1), "only the changed param again: {report:?}");
    assert_eq!(again.run("child").await.unwrap().unwrap().run_id, child.run_id, "the run was found by its key, not created again");
    let exp = client.experiment_id("limits").await.unwrap().unwrap();
    assert_eq!(client.search_runs(&exp).await.unwrap().len(), 2, "still two runs");
    assert_eq!(client.metric_history(&child.run_id, "many").await.unwrap().len(), 2345, "no doubled metric points");
    assert_eq!(client.metric_history(&child.run_id, "nan_metric").await.unwrap().len(), 1);
    let after = client.version_by_alias("limits-model", "champion").await.unwrap().unwrap();
    assert_eq!(after.version, before_versions, "no second model version");
    let history_after = client.run_tag(&child.run_id, "mlflow.log-model.history").await.unwrap().unwrap_or_default();
    assert_eq!(history_after, history_before, "the logged model is recorded once");

    // --- a worse model does not take the alias; a better one does.
    again
        .enqueue(&[
            Op::StartRun { run_key: "worse".into(), experiment: "limits".into(), run_name: "worse".into(), parent_key: None, start_ms: 1_700_000_000_000, tags: vec![], params: vec![] },
            Op::Register {
                run_key: "worse".into(),
                model_name: "limits-model".into(),
                artifact_path: "model".into(),
                alias: "champion".into(),
                tags: vec![("acc".into(), "0.4".into())],
                rule: Some(AliasRule { metric: "acc".into(), value: 0.4, maximize: true }),
            },
            Op::StartRun { run_key: "better".into(), experiment: "limits".into(), run_name: "better".into(), parent_key: None, start_ms: 1_700_000_000_000, tags: vec![], params: vec![] },
            Op::Register {
                run_key: "better".into(),
                model_name: "limits-model".into(),
                artifact_path: "model".into(),
                alias: "champion".into(),
                tags: vec![("acc".into(), "0.9".into())],
                rule: Some(AliasRule { metric: "acc".into(), value: 0.9, maximize: true }),
            },
        ])
        .await
        .unwrap();
    Deliverer::new(again.clone(), &good).unwrap().drain(Duration::from_secs(30)).await.unwrap();
    let better = again.run("better").await.unwrap().unwrap();
    let champion = client.version_by_alias("limits-model", "champion").await.unwrap().unwrap();
    assert_eq!(champion.run_id, better.run_id, "the better model holds the alias");
    assert_eq!(champion.version, "3", "versions: first, worse, better");

    // --- a model whose files did not reach MLflow is not registered (its
    // version would point at an empty folder), and the refusal says why.
    let broken = Outbox::open(&dir.path().join("broken.db")).await.unwrap();
    broken
        .enqueue(&[
            Op::StartRun { run_key: "broken".into(), experiment: "limits".into(), run_name: "broken".into(), parent_key: None, start_ms: 1_700_000_000_000, tags: vec![], params: vec![] },
            Op::Artifact { run_key: "broken".into(), path: "model/MLmodel".into(), file: dir.path().join("no-such-model").display().to_string() },
            Op::Register {
                run_key: "broken".into(),
                model_name: "limits-model".into(),
                artifact_path: "model".into(),
                alias: "champion".into(),
                tags: vec![("acc".into(), "0.99".into())],
                rule: Some(AliasRule { metric: "acc".into(), value: 0.99, maximize: true }),
            },
        ])
        .await
        .unwrap();
    let report = Deliverer::new(broken.clone(), &good).unwrap().drain(Duration::from_secs(30)).await.unwrap();
    let dead = broken.dead(10).await.unwrap();
    assert_eq!((report.pending, report.dead), (0, 2), "{report:?} {dead:?}");
    assert!(dead[1].3.contains("model is not registered") && dead[1].3.contains("model/MLmodel"), "{dead:?}");
    let broken_run = broken.run("broken").await.unwrap().unwrap();
    assert!(client.find_model_version("limits-model", &broken_run.run_id).await.unwrap().is_none(), "no version for the broken model");
    let champion = client.version_by_alias("limits-model", "champion").await.unwrap().unwrap();
    assert_eq!(champion.run_id, better.run_id, "the alias stays on a loadable model");

    // --- HTTP 403 (an account that may read but not write here) refuses
    // that operation only, with advice on permissions; the outbox is not
    // blocked behind it and nothing else is lost.
    let created = reqwest::Client::new()
        .post(format!("{uri}/api/2.0/mlflow/users/create"))
        .basic_auth(&user, Some(&password))
        .json(&serde_json::json!({ "username": "reader", "password": "reader-password-1" }))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{:?}", created.text().await);
    let reader = config(&uri, Auth::Basic { username: "reader".into(), password: "reader-password-1".into() });
    let ro = Outbox::open(&dir.path().join("reader.db")).await.unwrap();
    ro.enqueue(&[
        Op::StartRun { run_key: "ro".into(), experiment: "limits".into(), run_name: "ro".into(), parent_key: None, start_ms: 1_700_000_000_000, tags: vec![], params: vec![] },
        Op::Log { run_key: "ro".into(), metrics: vec![point("x", 1.0, 0)], params: vec![], tags: vec![] },
    ])
    .await
    .unwrap();
    let report = Deliverer::new(ro.clone(), &reader).unwrap().drain(Duration::from_secs(30)).await.unwrap();
    let dead = ro.dead(10).await.unwrap();
    assert_eq!((report.pending, report.dead, report.blocked_by.as_deref()), (0, 2, None), "{report:?} {dead:?}");
    assert!(dead[0].3.contains("HTTP 403") && dead[0].3.contains("permission"), "{dead:?}");
    // Read and accepted as lost: `mnistctl mlflow prune --refused`.
    assert_eq!(ro.delete_dead().await.unwrap(), 2);
    assert!(ro.dead(10).await.unwrap().is_empty());

    // --- the outbox's run ids belong to this server: the same server under
    // another name is fine; another server is refused up front, with both
    // addresses named, and nothing is lost.
    let log = |v: f64| Op::Log { run_key: "better".into(), metrics: vec![point("moved", v, 0)], params: vec![], tags: vec![] };
    again.enqueue(&[log(1.0)]).await.unwrap();
    let other_name = uri.replace("127.0.0.1", "localhost");
    assert_ne!(other_name, uri);
    let renamed = config(&other_name, Auth::Basic { username: user.clone(), password: password.clone() });
    let report = Deliverer::new(again.clone(), &renamed).unwrap().drain(Duration::from_secs(30)).await.unwrap();
    assert_eq!((report.pending, report.dead), (0, 0), "{report:?}");
    let other = MlflowServer::start();
    again.enqueue(&[log(2.0)]).await.unwrap();
    let report = Deliverer::new(again.clone(), &config(&other.uri(), Auth::None)).unwrap().drain(Duration::from_secs(30)).await.unwrap();
    assert_eq!(report.pending, 1, "kept for the right server: {report:?}");
    let why = report.blocked_by.unwrap_or_default();
    assert!(why.contains(&other_name) && why.contains(&other.uri()) && why.contains("does not know run"), "{why}");
    let report = Deliverer::new(again.clone(), &good).unwrap().drain(Duration::from_secs(30)).await.unwrap();
    assert_eq!(report.pending, 0, "{report:?}");
    assert_eq!(client.metric_history(&better.run_id, "moved").await.unwrap().len(), 2);
}
