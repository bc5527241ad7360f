//! Leases, fencing and the worker protocol, over real gRPC on loopback with a
//! real SQLite file.

mod common;

use std::time::Duration;

use common::*;
use mnist_proto::v1 as pb;
use sqlx::{Connection, SqliteConnection};
use tonic::Code;

async fn trial(c: &mut Clients, id: i64) -> pb::Trial {
    c.study
        .get_trial(pb::GetTrialRequest { key: Some(pb::get_trial_request::Key::TrialId(id)) })
        .await
        .expect("get trial")
        .into_inner()
}

/// Invariants 1 and 2: a lease that expires is reaped by the timer (nobody
/// asks in between), the trial is re-queued, every late call with the old
/// token is refused with FAILED_PRECONDITION, and the trial completes exactly
/// once under its new lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lease_is_requeued_and_late_calls_are_fenced() {
    let dir = tempdir();
    let (server, mut c) = start_in_process(fast_config(&dir.path().join("s.db"), Duration::from_millis(600))).await;
    create(&mut c, small_spec("fence", 1)).await;
    let a = register(&mut c, "worker-a", 1).await;
    let b = register(&mut c, "worker-b", 1).await;

    let t1 = acquire(&mut c, &a, 0).await.expect("a trial");
    let tok1 = t1.lease.as_ref().unwrap().token;
    assert_eq!(t1.number, 0);
    assert!(!t1.resumed);
    // Worker A goes silent: the reaper (not an ask) re-queues the trial.
    let requeued = eventually(15, || {
        let mut c = c.clone();
        async move {
            let t = trial(&mut c, t1.trial_id).await;
            (t.state == pb::TrialState::Waiting as i32).then_some(t)
        }
    })
    .await;
    assert_eq!(requeued.retries, 1);
    assert!(requeued.fail_reason.contains("lease expired"), "{}", requeued.fail_reason);

    // Late calls on the expired lease are refused.
    let e = c
        .worker
        .report_intermediate(pb::ReportIntermediateRequest { trial_id: t1.trial_id, lease_token: tok1, step: 0, value: 1.0, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = c
        .worker
        .complete_trial(pb::CompleteTrialRequest { trial_id: t1.trial_id, lease_token: tok1, value: Some(1.0), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = c
        .worker
        .heartbeat(pb::HeartbeatRequest { trial_id: t1.trial_id, lease_token: tok1, worker_id: a.clone() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // Failing or releasing it on the expired lease while it waits changes nothing.
    let e = c
        .worker
        .fail_trial(pb::FailTrialRequest { trial_id: t1.trial_id, lease_token: tok1, reason: "late".into(), retryable: false })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = c
        .worker
        .release_trial(pb::ReleaseTrialRequest { trial_id: t1.trial_id, lease_token: tok1, reason: "late".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let still = trial(&mut c, t1.trial_id).await;
    assert_eq!((still.state, still.retries), (pb::TrialState::Waiting as i32, 1), "{}", still.fail_reason);

    // Worker B gets the same trial under a newer lease and completes it.
    let t2 = acquire(&mut c, &b, 0).await.expect("the re-queued trial");
    let tok2 = t2.lease.as_ref().unwrap().token;
    assert_eq!((t2.trial_id, t2.number, t2.retries), (t1.trial_id, 0, 1));
    assert!(tok2 > tok1, "tokens grow: {tok2} > {tok1}");
    assert_eq!(t2.params.get("x"), t1.params.get("x"), "same parameters on retry by default");
    // The old token is still refused while B holds the trial.
    let e = c
        .worker
        .complete_trial(pb::CompleteTrialRequest { trial_id: t1.trial_id, lease_token: tok1, value: Some(1.0), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("not the current lease"), "{}", e.message());
    let done = c
        .worker
        .complete_trial(pb::CompleteTrialRequest {
            trial_id: t2.trial_id,
            lease_token: tok2,
            value: Some(0.5),
            metrics: [("test_accuracy".to_string(), 0.9)].into(),
            ..Default::default()
        })
        .await
        .expect("complete")
        .into_inner();
    assert!(done.is_best);
    // Completed at most once: a second completion is refused.
    let e = c
        .worker
        .complete_trial(pb::CompleteTrialRequest { trial_id: t2.trial_id, lease_token: tok2, value: Some(0.1), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("already COMPLETE"), "{}", e.message());

    let s = c.study.get_study(pb::GetStudyRequest { name: "fence".into() }).await.unwrap().into_inner();
    let counts = s.counts.unwrap();
    assert_eq!((counts.complete, counts.running, counts.waiting), (1, 0, 0));
    assert_eq!(s.state, pb::StudyState::Complete as i32);
    let best = s.best_trial.unwrap();
    assert_eq!((best.value, best.metrics.get("test_accuracy").copied()), (Some(0.5), Some(0.9)));
    server.shutdown().await.unwrap();
}

/// An upload that outlives its lease: authorised when it began, but the
/// trial was re-queued and taken by another worker while the bytes streamed
/// in. When the stale stream ends it is refused with FAILED_PRECONDITION, and
/// the newer attempt's file and its record stay as they are. An upload
/// cancelled by its client leaves no temporary file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_outlives_its_lease_does_not_overwrite_the_next_attempt() {
    let dir = tempdir();
    let db = dir.path().join("s.db");
    let (server, mut c) = start_in_process(fast_config(&db, Duration::from_millis(600))).await;
    create(&mut c, small_spec("stale-upload", 1)).await;
    let a = register(&mut c, "worker-a", 1).await;
    let b = register(&mut c, "worker-b", 1).await;
    let name = "plots/accuracy.png";
    let trial_dir = dir.path().join("s.db.artifacts/study-1/trial-0/plots");
    let temp_appears = || {
        eventually(10, || {
            let d = trial_dir.clone();
            async move { (!upload_temps(&d).is_empty()).then_some(()) }
        })
    };

    let t1 = acquire(&mut c, &a, 0).await.expect("a trial");
    let tok1 = t1.lease.as_ref().unwrap().token;
    // Worker A starts uploading and stalls with the stream open; the
    // coordinator accepted the header (its temporary file exists)...
    let (tx, stale) = open_upload(&c);
    tx.send(artifact_header(t1.trial_id, tok1, name, Some(11), "")).await.unwrap();
    tx.send(artifact_chunk(b"stale")).await.unwrap();
    temp_appears().await;
    // ... then the lease expires, the trial is re-queued and B takes it.
    let t2 = eventually(15, || {
        let (mut c, b) = (c.clone(), b.clone());
        async move { acquire(&mut c, &b, 0).await }
    })
    .await;
    let tok2 = t2.lease.as_ref().unwrap().token;
    assert_eq!(t2.trial_id, t1.trial_id);
    assert!(tok2 > tok1);
    let fresh = b"fresh bytes from the newer attempt".to_vec();
    let msgs = vec![artifact_header(t2.trial_id, tok2, name, Some(fresh.len() as u64), ""), artifact_chunk(&fresh)];
    c.worker.upload_artifact(tokio_stream::iter(msgs)).await.expect("the newer attempt uploads");

    // A's stream finally ends: refused, nothing overwritten, no stray file.
    tx.send(artifact_chunk(b" bytes")).await.unwrap();
    drop(tx);
    let e = stale.await.unwrap().expect_err("the stale upload must be refused");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("not the latest lease"), "{}", e.message());
    assert_eq!(std::fs::read(trial_dir.join("accuracy.png")).unwrap(), fresh);
    assert_eq!(upload_temps(&trial_dir), Vec::<String>::new(), "the refused upload's temporary file is removed");
    // An upload cancelled mid-stream (the client goes away) leaves nothing behind either.
    let (tx, cancelled) = open_upload(&c);
    tx.send(artifact_header(t2.trial_id, tok2, name, None, "")).await.unwrap();
    tx.send(artifact_chunk(b"never finished")).await.unwrap();
    temp_appears().await;
    cancelled.abort();
    eventually(10, || {
        let d = trial_dir.clone();
        async move { upload_temps(&d).is_empty().then_some(()) }
    })
    .await;
    drop(tx);
    assert_eq!(std::fs::read(trial_dir.join("accuracy.png")).unwrap(), fresh);
    server.shutdown().await.unwrap();

    // The record is the newer attempt's.
    use sqlx::{sqlite::SqliteConnectOptions, ConnectOptions};
    let mut conn = SqliteConnectOptions::new().filename(&db).read_only(true).connect().await.unwrap();
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT size_bytes, sha256 FROM mnist_artifacts WHERE name = 'plots/accuracy.png'")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    use sha2::Digest;
    assert_eq!(rows, vec![(fresh.len() as i64, hex::encode(sha2::Sha256::digest(&fresh)))]);
}

/// Heartbeats keep a lease alive well past its length; running out of
/// retries fails the trial with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_renew_and_retries_run_out() {
    let dir = tempdir();
    let (server, mut c) = start_in_process(fast_config(&dir.path().join("s.db"), Duration::from_millis(500))).await;
    let mut spec = small_spec("hb", 2);
    spec.retry = Some(pb::RetryPolicy { max_retries: 0, fresh_params: false });
    create(&mut c, spec).await;
    let w = register(&mut c, "w", 2).await;
    let t = acquire(&mut c, &w, 0).await.unwrap();
    let tok = t.lease.unwrap().token;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let hb = c
            .worker
            .heartbeat(pb::HeartbeatRequest { trial_id: t.trial_id, lease_token: tok, worker_id: w.clone() })
            .await
            .expect("heartbeat")
            .into_inner();
        assert_eq!(hb.action, pb::HeartbeatAction::Continue as i32);
    }
    assert_eq!(trial(&mut c, t.trial_id).await.state, pb::TrialState::Running as i32);
    // Slot 1 takes a trial and goes silent: no retries allowed, so it fails.
    let t2 = acquire(&mut c, &w, 1).await.unwrap();
    let failed = eventually(15, || {
        let mut c = c.clone();
        async move {
            let t = trial(&mut c, t2.trial_id).await;
            (t.state == pb::TrialState::Fail as i32).then_some(t)
        }
    })
    .await;
    assert!(failed.fail_reason.contains("no retries left"), "{}", failed.fail_reason);
    server.shutdown().await.unwrap();
}

/// Invariant 5: asking again from the same (worker, slot) returns the same
/// trial and token, also after re-registering and after a coordinator restart
/// on the same database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_is_idempotent_per_worker_slot() {
    let dir = tempdir();
    let db = dir.path().join("s.db");
    let (server, mut c) = start_in_process(fast_config(&db, Duration::from_secs(30))).await;
    create(&mut c, small_spec("idem", 10)).await;
    let w = register(&mut c, "gpu-box-1", 2).await;
    let a = acquire(&mut c, &w, 0).await.unwrap();
    let again = acquire(&mut c, &w, 0).await.unwrap();
    assert_eq!((again.trial_id, again.lease.as_ref().unwrap().token), (a.trial_id, a.lease.as_ref().unwrap().token));
    assert!(again.resumed);
    let other = acquire(&mut c, &w, 1).await.unwrap();
    assert_ne!(other.trial_id, a.trial_id);
    // Generic ask/tell clients get the same guarantee.
    let ask = |c: &mut Clients| {
        let mut c = c.clone();
        async move {
            c.ask_tell
                .ask(pb::AskRequest { study_name: "idem".into(), client_id: "py-client".into(), slot: 3, wait_ms: 0 })
                .await
                .unwrap()
                .into_inner()
                .trial
                .unwrap()
        }
    };
    let x = ask(&mut c).await;
    let y = ask(&mut c).await;
    assert_eq!(x.trial_id, y.trial_id);
    // ... but only for the study they ask about: another study while the slot
    // holds this one's trial is refused, an unknown study is NOT_FOUND.
    create(&mut c, small_spec("idem-2", 10)).await;
    for (study, code) in [("idem-2", tonic::Code::FailedPrecondition), ("no-such-study", tonic::Code::NotFound)] {
        let e = c
            .ask_tell
            .ask(pb::AskRequest { study_name: study.into(), client_id: "py-client".into(), slot: 3, wait_ms: 0 })
            .await
            .expect_err("not this slot's study");
        assert_eq!(e.code(), code, "{study}: {e:?}");
    }

    // A restarted worker re-registers under its id and sees its trials.
    let reg = c
        .worker
        .register_worker(pb::RegisterWorkerRequest {
            worker_id: w.clone(),
            hostname: "test-host".into(),
            devices: vec![pb::Device { name: "cpu:0".into(), ..Default::default() }, pb::Device { name: "cpu:1".into(), ..Default::default() }],
            labels: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut held: Vec<i64> = reg.running.iter().map(|s| s.trial_id).collect();
    held.sort();
    let mut expect = vec![a.trial_id, other.trial_id];
    expect.sort();
    assert_eq!(held, expect);

    // A coordinator restart keeps the leases (reconciled through them).
    server.shutdown().await.unwrap();
    let (server, mut c) = start_in_process(fast_config(&db, Duration::from_secs(30))).await;
    let back = acquire(&mut c, &w, 0).await.unwrap();
    assert_eq!((back.trial_id, back.lease.as_ref().unwrap().token), (a.trial_id, a.lease.as_ref().unwrap().token));
    assert!(back.resumed);
    let done = c
        .worker
        .complete_trial(pb::CompleteTrialRequest {
            trial_id: back.trial_id,
            lease_token: back.lease.unwrap().token,
            value: Some(1.0),
            ..Default::default()
        })
        .await;
    assert!(done.is_ok(), "{done:?}");
    server.shutdown().await.unwrap();
}

/// Release re-queues at once without a retry; a retryable failure counts a
/// retry; a non-retryable one fails the trial; stop answers STOP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_fail_and_stop() {
    let dir = tempdir();
    let (server, mut c) = start_in_process(fast_config(&dir.path().join("s.db"), Duration::from_secs(30))).await;
    let mut spec = small_spec("rfs", 5);
    spec.max_concurrency = 1;
    create(&mut c, spec).await;
    let w = register(&mut c, "w", 2).await;
    let t = acquire(&mut c, &w, 0).await.unwrap();
    // max_concurrency = 1: the second slot gets nothing, with a reason.
    let idle = c
        .worker
        .acquire_trial(pb::AcquireTrialRequest { worker_id: w.clone(), slot: 1, study_name: String::new(), wait_ms: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(idle.trial.is_none());
    assert!(idle.idle_reason.contains("max_concurrency"), "{}", idle.idle_reason);

    let tok = t.lease.unwrap().token;
    let r = c
        .worker
        .release_trial(pb::ReleaseTrialRequest { trial_id: t.trial_id, lease_token: tok, reason: "SIGTERM".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state, pb::TrialState::Waiting as i32);
    let t = acquire(&mut c, &w, 1).await.unwrap();
    assert_eq!(t.retries, 0, "a release is not a retry");
    let f = c
        .worker
        .fail_trial(pb::FailTrialRequest { trial_id: t.trial_id, lease_token: t.lease.unwrap().token, reason: "CUDA OOM".into(), retryable: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((f.state, f.retries_left), (pb::TrialState::Waiting as i32, 1));
    let t = acquire(&mut c, &w, 0).await.unwrap();
    assert_eq!(t.retries, 1);
    let f = c
        .worker
        .fail_trial(pb::FailTrialRequest { trial_id: t.trial_id, lease_token: t.lease.unwrap().token, reason: "bad config".into(), retryable: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(f.state, pb::TrialState::Fail as i32);

    let t = acquire(&mut c, &w, 0).await.unwrap();
    let s = c.study.stop_study(pb::StopStudyRequest { name: "rfs".into(), reason: "enough".into() }).await.unwrap().into_inner();
    assert_eq!(s.state, pb::StudyState::Stopped as i32);
    let hb = c
        .worker
        .heartbeat(pb::HeartbeatRequest { trial_id: t.trial_id, lease_token: t.lease.as_ref().unwrap().token, worker_id: w.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hb.action, pb::HeartbeatAction::Stop as i32);
    assert!(acquire(&mut c, &w, 1).await.is_none());
    c.worker
        .release_trial(pb::ReleaseTrialRequest { trial_id: t.trial_id, lease_token: t.lease.unwrap().token, reason: "stopped".into() })
        .await
        .unwrap();
    let s = c.study.resume_study(pb::ResumeStudyRequest { name: "rfs".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(s.state, pb::StudyState::Running as i32);
    let again = acquire(&mut c, &w, 1).await.unwrap();
    assert_eq!(again.trial_id, t.trial_id, "the released trial runs again after resume");
    server.shutdown().await.unwrap();
}

/// Reports are stored, the pruner answers, PRUNED takes the last value, and
/// the event stream shows it all in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_prune_and_watch() {
    let dir = tempdir();
    let (server, mut c) = start_in_process(fast_config(&dir.path().join("s.db"), Duration::from_secs(30))).await;
    let mut spec = small_spec("prune", 3);
    spec.pruner = Some(pb::PrunerSpec {
        kind: "median".into(),
        options_json: r#"{"n_startup_trials": 1, "n_warmup_steps": 0}"#.into(),
    });
    create(&mut c, spec).await;
    let mut events = c
        .study
        .watch_study(pb::WatchStudyRequest { name: "prune".into(), after_seq: Some(0), include_reports: true })
        .await
        .unwrap()
        .into_inner();
    let w = register(&mut c, "w", 1).await;
    // Trial 0 reports small losses and completes.
    let t0 = acquire(&mut c, &w, 0).await.unwrap();
    let tok0 = t0.lease.unwrap().token;
    for (step, v) in [(0u64, 1.0), (1, 0.5), (2, 0.25)] {
        let r = c
            .worker
            .report_intermediate(pb::ReportIntermediateRequest { trial_id: t0.trial_id, lease_token: tok0, step, value: v, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert!(!r.prune);
    }
    c.worker
        .complete_trial(pb::CompleteTrialRequest { trial_id: t0.trial_id, lease_token: tok0, value: Some(0.25), ..Default::default() })
        .await
        .unwrap();
    // Trial 1 is much worse at step 1: the median pruner says prune.
    let t1 = acquire(&mut c, &w, 0).await.unwrap();
    let tok1 = t1.lease.unwrap().token;
    let mut pruned = false;
    for (step, v) in [(0u64, 10.0), (1, 9.0)] {
        pruned = c
            .worker
            .report_intermediate(pb::ReportIntermediateRequest { trial_id: t1.trial_id, lease_token: tok1, step, value: v, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .prune;
    }
    assert!(pruned, "the median pruner prunes a trial far worse than the median");
    let done = c
        .worker
        .complete_trial(pb::CompleteTrialRequest {
            trial_id: t1.trial_id,
            lease_token: tok1,
            state: pb::TrialState::Pruned as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let tr = done.trial.unwrap();
    assert_eq!((tr.state, tr.value), (pb::TrialState::Pruned as i32, Some(9.0)));

    let mut kinds = Vec::new();
    let mut last_seq = 0;
    while kinds.len() < 10 {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.message()).await.unwrap().unwrap().unwrap();
        assert!(ev.seq > last_seq, "events are in order");
        last_seq = ev.seq;
        kinds.push(pb::EventKind::try_from(ev.kind).unwrap());
    }
    use pb::EventKind::*;
    assert_eq!(
        kinds,
        vec![
            StudyCreated, TrialStarted, TrialReported, TrialReported, TrialReported, TrialCompleted, TrialStarted, TrialReported,
            TrialReported, TrialPruned
        ]
    );
    // The same events, durable, for an outbox that tails all studies.
    let stored = server.coordinator().events_since(0, 1000).await.unwrap();
    assert_eq!(stored.len(), 10);
    assert!(stored.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(stored[2].step, Some(0));
    server.shutdown().await.unwrap();
}

/// Invariant 2 across restarts: a token handed out by a previous coordinator
/// process is never valid in a new one, even when the write that recorded it
/// never reached the database (simulated here by removing the trial's rows
/// while the coordinator is down). Each process reserves its range of tokens
/// in the database before handing out the first, and the next process starts
/// above it; before, the new process took the largest stored token + 1,
/// handed the same trial id and token to another worker, and the stale holder
/// completed that worker's trial with its own value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_a_previous_process_is_never_valid_after_a_restart() {
    let dir = tempdir();
    let db = dir.path().join("s.db");
    let (server, mut c) = start_in_process(fast_config(&db, Duration::from_secs(30))).await;
    create(&mut c, small_spec("epoch", 5)).await;
    let w1 = register(&mut c, "worker-1", 1).await;
    let old = acquire(&mut c, &w1, 0).await.expect("a trial");
    let old_token = old.lease.as_ref().unwrap().token;
    server.shutdown().await.unwrap();

    let floor = {
        let mut conn = SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
        let floor: String = sqlx::query_scalar("SELECT value FROM mnist_meta WHERE key = 'lease_token_floor'")
            .fetch_one(&mut conn)
            .await
            .expect("the reserved tokens are recorded");
        for table in ["trial_params", "trial_system_attributes", "mnist_trials", "mnist_events", "trials"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE trial_id = ?")).bind(old.trial_id).execute(&mut conn).await.unwrap();
        }
        floor.parse::<u64>().unwrap()
    };
    assert!(floor >= old_token, "the reservation {floor} covers the token handed out, {old_token}");

    let (server, mut c) = start_in_process(fast_config(&db, Duration::from_secs(30))).await;
    let w2 = register(&mut c, "worker-2", 1).await;
    let new = acquire(&mut c, &w2, 0).await.expect("a trial");
    let new_token = new.lease.as_ref().unwrap().token;
    assert!(new_token > floor, "token {new_token} is above the previous process's reservation {floor}");
    // The stale worker's calls (a heartbeat naming no holder, a completion)
    // with its old trial id and token are refused.
    let e = c
        .worker
        .heartbeat(pb::HeartbeatRequest { trial_id: old.trial_id, lease_token: old_token, worker_id: String::new() })
        .await
        .expect_err("the old token renews nothing");
    assert!(matches!(e.code(), Code::FailedPrecondition | Code::NotFound), "{e:?}");
    let e = c
        .worker
        .complete_trial(pb::CompleteTrialRequest { trial_id: old.trial_id, lease_token: old_token, value: Some(-1.0), ..Default::default() })
        .await
        .expect_err("the old token completes nothing");
    assert!(matches!(e.code(), Code::FailedPrecondition | Code::NotFound), "{e:?}");
    let t = trial(&mut c, new.trial_id).await;
    assert_eq!(t.state, pb::TrialState::Running as i32, "worker-2's trial is untouched");
    let done = c
        .worker
        .complete_trial(pb::CompleteTrialRequest { trial_id: new.trial_id, lease_token: new_token, value: Some(0.5), ..Default::default() })
        .await;
    assert!(done.is_ok(), "{done:?}");
    server.shutdown().await.unwrap();
}

/// Invariant 2: a lease is renewed only by its holder. A heartbeat that
/// names another worker is refused, whatever the token, and leaves the lease
/// as it was; the holder's own heartbeats go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_naming_another_worker_is_refused() {
    let dir = tempdir();
    let (server, mut c) = start_in_process(fast_config(&dir.path().join("s.db"), Duration::from_secs(30))).await;
    create(&mut c, small_spec("holder", 5)).await;
    let a = register(&mut c, "worker-a", 1).await;
    let b = register(&mut c, "worker-b", 1).await;
    let t = acquire(&mut c, &a, 0).await.expect("a trial");
    let token = t.lease.as_ref().unwrap().token;
    let e = c
        .worker
        .heartbeat(pb::HeartbeatRequest { trial_id: t.trial_id, lease_token: token, worker_id: b.clone() })
        .await
        .expect_err("worker-b does not hold the lease");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("worker-a") && e.message().contains("worker-b"), "names both: {e:?}");
    let ok = c.worker.heartbeat(pb::HeartbeatRequest { trial_id: t.trial_id, lease_token: token, worker_id: a.clone() }).await;
    assert!(ok.is_ok(), "{ok:?}");
    server.shutdown().await.unwrap();
}

/// Invariant 5 when a slot's old trial is re-queued after the slot moved on:
/// the slot's lease on trial A expires, the worker asks again and gets B
/// (A is not reaped yet), then A is re-queued (here by its late heartbeat;
/// the reaper does the same). That must not make the coordinator forget that
/// the slot holds B: asking again returns B, and the slot never holds two
/// RUNNING trials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeuing_a_slots_old_trial_keeps_its_new_one() {
    let dir = tempdir();
    // Long enough for B's lease to outlive the few calls before it is
    // renewed below, however loaded the machine.
    let lease = Duration::from_secs(5);
    let mut cfg = fast_config(&dir.path().join("s.db"), lease);
    // Nothing is reaped behind the test's back.
    cfg.coordinator.reaper_interval = Duration::from_secs(3600);
    let (server, mut c) = start_in_process(cfg).await;
    create(&mut c, small_spec("slot", 10)).await;
    let w = register(&mut c, "worker-s", 1).await;
    let a = acquire(&mut c, &w, 0).await.expect("trial A");
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    let b = acquire(&mut c, &w, 0).await.expect("trial B");
    assert_ne!(b.trial_id, a.trial_id, "A's lease expired, so the slot gets a new trial");
    let e = c
        .worker
        .heartbeat(pb::HeartbeatRequest { trial_id: a.trial_id, lease_token: a.lease.as_ref().unwrap().token, worker_id: w.clone() })
        .await
        .expect_err("A's lease expired");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(trial(&mut c, a.trial_id).await.state, pb::TrialState::Waiting as i32, "A was re-queued");
    // The slot's worker keeps B alive, as it would.
    c.worker
        .heartbeat(pb::HeartbeatRequest { trial_id: b.trial_id, lease_token: b.lease.as_ref().unwrap().token, worker_id: w.clone() })
        .await
        .expect("B's lease is live");
    let again = acquire(&mut c, &w, 0).await.expect("the slot's trial");
    assert_eq!(again.trial_id, b.trial_id, "asking again returns the slot's trial B, not the re-queued A");
    assert!(again.resumed);
    let running = c
        .study
        .list_trials(pb::ListTrialsRequest { study_name: "slot".into(), states: vec![pb::TrialState::Running as i32], ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .trials;
    assert_eq!(running.iter().map(|t| t.trial_id).collect::<Vec<_>>(), vec![b.trial_id]);
    server.shutdown().await.unwrap();
}

async fn resume(c: &mut Clients, name: &str, n_trials: Option<u32>, timeout_seconds: Option<f64>) -> Result<pb::Study, tonic::Status> {
    c.study.resume_study(pb::ResumeStudyRequest { name: name.into(), n_trials, timeout_seconds }).await.map(|r| r.into_inner())
}

/// ResumeStudy as the proto documents it: raising n_trials of a RUNNING
/// study keeps its timeout clock (it restarted the clock, so a study past its
/// timeout handed out new trials); a new timeout, or resuming a STOPPED
/// study, restarts it. n_trials may equal the trials the study has, not go
/// below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_a_running_study_keeps_its_timeout_clock() {
    let dir = tempdir();
    let (server, mut c) = start_in_process(fast_config(&dir.path().join("s.db"), Duration::from_secs(30))).await;
    // No timeout yet: the first trial starts whenever the test gets to it.
    let created = create(&mut c, small_spec("clock", 4)).await;
    let w = register(&mut c, "worker-c", 2).await;
    let t = acquire(&mut c, &w, 0).await.expect("a trial");
    // A new timeout on a RUNNING study starts its clock.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let timed = resume(&mut c, "clock", None, Some(1.0)).await.expect("set a timeout");
    assert_eq!(timed.state, pb::StudyState::Running as i32);
    assert_ne!(timed.started_at, created.started_at, "a new timeout starts the clock");
    // The running trial keeps the study RUNNING past its timeout.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let s = resume(&mut c, "clock", Some(10), None).await.expect("raise n_trials");
    assert_eq!((s.state, s.spec.as_ref().unwrap().n_trials), (pb::StudyState::Running as i32, 10));
    assert_eq!(s.started_at, timed.started_at, "the clock keeps running");
    let idle = c
        .worker
        .acquire_trial(pb::AcquireTrialRequest { worker_id: w.clone(), slot: 1, study_name: String::new(), wait_ms: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(idle.trial.is_none(), "a trial started after the timeout: {idle:?}");
    assert!(idle.idle_reason.contains("timeout"), "{}", idle.idle_reason);

    // n_trials: at least the trials the study has (1 here).
    assert!(resume(&mut c, "clock", Some(1), None).await.is_ok(), "n_trials may equal the trials the study has");
    let unlimited = resume(&mut c, "clock", Some(0), Some(3600.0)).await.expect("0 is no limit, with a new timeout");
    assert_eq!(unlimited.spec.unwrap().n_trials, 0);
    assert_ne!(unlimited.started_at, timed.started_at, "a new timeout restarts the clock");
    c.worker
        .complete_trial(pb::CompleteTrialRequest { trial_id: t.trial_id, lease_token: t.lease.unwrap().token, value: Some(0.1), ..Default::default() })
        .await
        .unwrap();
    let more = acquire(&mut c, &w, 1).await.expect("trials start again under the new timeout");
    assert_eq!(more.number, 1);
    let e = resume(&mut c, "clock", Some(1), None).await.expect_err("below the 2 trials the study has");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // A new timeout, or resuming a stopped study, restarts the clock.
    let before = c.study.get_study(pb::GetStudyRequest { name: "clock".into() }).await.unwrap().into_inner().started_at.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.study.stop_study(pb::StopStudyRequest { name: "clock".into(), reason: "pause".into() }).await.unwrap();
    let s = resume(&mut c, "clock", None, None).await.expect("resume the stopped study");
    let after = s.started_at.unwrap();
    assert!((after.seconds, after.nanos) > (before.seconds, before.nanos), "{before:?} -> {after:?}");
    server.shutdown().await.unwrap();
}

/// A study that ended because its grid was used up stays COMPLETE when
/// resumed after a restart (the used-up grid is not stored, so the sampler
/// is asked again), instead of running again only to end at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grid_study_that_used_up_its_grid_stays_complete_after_a_restart() {
    let dir = tempdir();
    let db = dir.path().join("s.db");
    let (server, mut c) = start_in_process(fast_config(&db, Duration::from_secs(30))).await;
    let mut spec = small_spec("grid", 5);
    spec.search_space = Some(pb::SearchSpaceSource {
        source: Some(pb::search_space_source::Source::Toml("[x]\ntype = \"categorical\"\nchoices = [\"a\", \"b\"]\n".into())),
    });
    spec.sampler = Some(pb::SamplerSpec { kind: "grid".into(), seed: Some(1), options_json: String::new() });
    create(&mut c, spec).await;
    let w = register(&mut c, "worker-g", 1).await;
    for _ in 0..2 {
        let t = acquire(&mut c, &w, 0).await.expect("a grid point");
        c.worker
            .complete_trial(pb::CompleteTrialRequest { trial_id: t.trial_id, lease_token: t.lease.unwrap().token, value: Some(0.1), ..Default::default() })
            .await
            .unwrap();
    }
    assert!(acquire(&mut c, &w, 0).await.is_none(), "the grid is used up");
    let s = c.study.get_study(pb::GetStudyRequest { name: "grid".into() }).await.unwrap().into_inner();
    assert_eq!(s.state, pb::StudyState::Complete as i32, "{s:?}");
    server.shutdown().await.unwrap();

    let (server, mut c) = start_in_process(fast_config(&db, Duration::from_secs(30))).await;
    let e = resume(&mut c, "grid", None, Some(0.0)).await.expect_err("nothing left to run");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("every grid point was tried"), "{}", e.message());
    let s = c.study.get_study(pb::GetStudyRequest { name: "grid".into() }).await.unwrap().into_inner();
    assert_eq!(s.state, pb::StudyState::Complete as i32, "{s:?}");
    server.shutdown().await.unwrap();
}

/// A live-only watch (no `after_seq`) that lags behind the live channel
/// before its first event catches up from where it started, not from the
/// study's first event. The runtime has one thread, so the watch cannot run
/// while the writer publishes the events of one large commit: more than the
/// live channel holds (4096), which makes it lag deterministically.
#[tokio::test(flavor = "current_thread")]
async fn a_live_watch_that_lags_does_not_replay_the_history() {
    live_watch_lags(false).await;
}

/// The same after a restart, with the watch opened before the new process
/// commits an event: it starts after the last event stored (the process
/// knew only the events it published itself, none yet, so a lagging watch
/// replayed the study's whole history).
#[tokio::test(flavor = "current_thread")]
async fn a_live_watch_that_lags_after_a_restart_does_not_replay_the_history() {
    live_watch_lags(true).await;
}

async fn live_watch_lags(restart: bool) {
    const BURST: usize = 5000;
    let dir = tempdir();
    let db = dir.path().join("s.db");
    let config = || {
        let mut cfg = fast_config(&db, Duration::from_secs(30));
        cfg.coordinator.storage.max_batch_ops = 1 << 20;
        cfg.coordinator.storage.busy_timeout = Duration::from_secs(60);
        cfg
    };
    let (mut server, mut c) = start_in_process(config()).await;
    create(&mut c, small_spec("watched", 0)).await;
    create(&mut c, small_spec("busy", 0)).await;
    if restart {
        server.shutdown().await.unwrap();
        (server, c) = start_in_process(config()).await;
    }
    let mut events = c
        .study
        .watch_study(pb::WatchStudyRequest { name: "watched".into(), after_seq: None, include_reports: false })
        .await
        .unwrap()
        .into_inner();
    // Queue BURST changes of another study behind a lock, so that they are
    // committed (and published) together once it is released.
    let mut lock = SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut lock).await.unwrap();
    let coord = server.coordinator().clone();
    let tasks: Vec<_> = (0..BURST)
        .map(|_| {
            let coord = coord.clone();
            tokio::spawn(async move { coord.enqueue_trial("busy", Vec::new()).await })
        })
        .collect();
    eventually(60, || {
        let coord = coord.clone();
        async move { (coord.get_study("busy").unwrap().counts.waiting as usize == BURST).then_some(()) }
    })
    .await;
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    for t in tasks {
        t.await.unwrap().expect("enqueued");
    }
    coord.enqueue_trial("watched", Vec::new()).await.expect("enqueue in the watched study");
    let ev = tokio::time::timeout(Duration::from_secs(30), events.message()).await.expect("an event").unwrap().expect("not closed");
    assert_eq!(
        (pb::EventKind::try_from(ev.kind).unwrap(), ev.trial_number),
        (pb::EventKind::TrialEnqueued, Some(0)),
        "the first event is the one after the watch started: {ev:?}"
    );
    server.shutdown().await.unwrap();
}
