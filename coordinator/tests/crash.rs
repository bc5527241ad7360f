//! Invariants 3 and 4 with real processes: `kill -9` of the coordinator in
//! the middle of a study, a restart on the same database, and the study
//! finishes with exactly `n_trials` trials, no duplicates, and every
//! acknowledged completion intact. Also a database write that fails for
//! good: the coordinator then refuses every change until a restart, so the
//! database it reloads is consistent.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use mnist_coordinator::study::{AskOutcome, AskRequest, Assignment};
use mnist_coordinator::storage::StorageError;
use mnist_coordinator::{CoordError, Coordinator, CoordinatorConfig, NewStudy};
use mnist_proto::v1 as pb;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use tokio::sync::watch;
use tonic::Code;

const N_TRIALS: u32 = 40;
const CLIENTS: usize = 4;

/// One ask/tell client that survives coordinator restarts: it follows the
/// URL on `url`, asks with a stable (client id, slot) so that it gets its
/// trial back after a restart, and records every completion the coordinator
/// acknowledged.
async fn client(id: usize, mut url: watch::Receiver<String>, acked: Arc<Mutex<BTreeMap<i64, f64>>>) {
    let first = url.borrow_and_update().clone();
    let mut c = connect(&first).await;
    let client_id = format!("crash-client-{id}");
    let mut held: Option<pb::TrialAssignment> = None;
    loop {
        if url.has_changed().unwrap_or(false) {
            let next = url.borrow_and_update().clone();
            c = connect(&next).await;
        }
        let t = match held.clone() {
            Some(t) => t,
            None => {
                match c
                    .ask_tell
                    .ask(pb::AskRequest { study_name: "crash".into(), client_id: client_id.clone(), slot: 0, wait_ms: 200 })
                    .await
                {
                    Ok(r) => {
                        let r = r.into_inner();
                        match r.trial {
                            Some(t) => t,
                            None if r.study_over => return,
                            None => continue,
                        }
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
        };
        held = Some(t.clone());
        // The objective: a little work, then a value from the parameters.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let value = num(&t.params["x"]).abs() + num(&t.params["k"]);
        let tell = c
            .ask_tell
            .tell(pb::TellRequest {
                trial_id: t.trial_id,
                lease_token: t.lease.as_ref().map(|l| l.token).unwrap_or(0),
                value: Some(value),
                ..Default::default()
            })
            .await;
        match tell {
            Ok(_) => {
                acked.lock().unwrap().insert(t.trial_id, value);
                held = None;
            }
            // Completed before the crash but the answer was lost, or lost
            // to another holder: either way this trial is not ours to finish.
            Err(e) if e.code() == Code::FailedPrecondition => held = None,
            // The coordinator is down: keep the trial and try again later.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_study_then_restart_finishes_exactly() {
    let dir = tempdir();
    let db = dir.path().join("crash.db");
    let args = ["--lease-seconds", "5", "--reaper-seconds", "0.2", "--restart-grace-seconds", "5"];
    let mut coord = CoordProcess::spawn(&db, &args);
    let mut admin = connect(&coord.url).await;
    create(&mut admin, small_spec("crash", N_TRIALS)).await;

    let (url_tx, url_rx) = watch::channel(coord.url.clone());
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let tasks: Vec<_> = (0..CLIENTS).map(|i| tokio::spawn(client(i, url_rx.clone(), acked.clone()))).collect();

    // Let some trials complete, then kill -9 the coordinator mid-study.
    eventually(60, || {
        let acked = acked.clone();
        async move { (acked.lock().unwrap().len() >= 10).then_some(()) }
    })
    .await;
    coord.kill9();
    let before: BTreeMap<i64, f64> = acked.lock().unwrap().clone();
    assert!(before.len() < N_TRIALS as usize, "the study was still running when killed");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Restart on the same database (a new port) and let the clients finish.
    let coord2 = CoordProcess::spawn(&db, &args);
    url_tx.send_replace(coord2.url.clone());
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t).await.expect("clients finish").expect("client task");
    }
    let mut admin = connect(&coord2.url).await;
    let s = admin.study.get_study(pb::GetStudyRequest { name: "crash".into() }).await.unwrap().into_inner();
    assert_eq!(s.state, pb::StudyState::Complete as i32, "{}", s.end_reason);
    let counts = s.counts.unwrap();
    assert_eq!(counts.complete, N_TRIALS, "{counts:?}");

    // On disk: exactly N trials, numbers 0..N-1 once each, all COMPLETE.
    let mut conn = SqliteConnectOptions::new().filename(&db).read_only(true).connect().await.unwrap();
    let (rows, distinct, min_n, max_n): (i64, i64, i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT number), MIN(number), MAX(number) FROM trials").fetch_one(&mut conn).await.unwrap();
    assert_eq!((rows, distinct, min_n, max_n), (N_TRIALS as i64, N_TRIALS as i64, 0, N_TRIALS as i64 - 1));
    let complete: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetch_one(&mut conn).await.unwrap();
    assert_eq!(complete, N_TRIALS as i64);
    let values: Vec<(i64, f64)> = sqlx::query_as("SELECT trial_id, value FROM trial_values").fetch_all(&mut conn).await.unwrap();
    assert_eq!(values.len(), N_TRIALS as usize, "one value per trial, none twice");
    let on_disk: BTreeMap<i64, f64> = values.into_iter().collect();
    // Nothing acknowledged before the crash was lost, and nothing changed.
    for (id, v) in &before {
        assert_eq!(on_disk.get(id), Some(v), "acknowledged completion of trial {id} survived kill -9");
    }
    for (id, v) in acked.lock().unwrap().iter() {
        assert_eq!(on_disk.get(id), Some(v));
    }
    conn.close().await.unwrap();
    drop(coord2);
}

/// SIGTERM stops the coordinator cleanly (exit code 0), and a restart serves
/// the same study.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_a_clean_shutdown() {
    let dir = tempdir();
    let db = dir.path().join("term.db");
    let mut coord = CoordProcess::spawn(&db, &[]);
    let mut c = connect(&coord.url).await;
    create(&mut c, small_spec("term", 3)).await;
    let status = coord.terminate();
    assert!(status.success(), "exit status {status:?}");
    let coord = CoordProcess::spawn(&db, &[]);
    let mut c = connect(&coord.url).await;
    let s = c.study.get_study(pb::GetStudyRequest { name: "term".into() }).await.unwrap().into_inner();
    assert_eq!(s.spec.unwrap().n_trials, 3);
}

/// Two coordinators on one database would hand out the same trials twice: the
/// second is refused with a message naming the first (also through a hard
/// link of the file), and once the first is
/// killed (`kill -9`, so nothing cleans up) the database can be opened again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_coordinator_on_one_database_is_refused() {
    let dir = tempdir();
    let db = dir.path().join("one.db");
    let mut first = CoordProcess::spawn(&db, &[]);
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_mnist-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run a second mnist-coordinator");
    assert!(!second.status.success(), "the second coordinator must not start");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another coordinator is using the study database"), "{err}");
    assert!(err.contains(&format!("pid {}", first.child.id())), "names the holder: {err}");
    // Nor under a second name of the same file (a hard link: its own path, its own `.lock`).
    let linked = dir.path().join("other-name.db");
    std::fs::hard_link(&db, &linked).expect("hard link");
    let mut third = std::process::Command::new(env!("CARGO_BIN_EXE_mnist-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(&linked)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run a third mnist-coordinator");
    // A coordinator that did start would serve until killed: give it 30 s to exit.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        match third.try_wait().expect("wait") {
            Some(status) => break Some(status),
            None if std::time::Instant::now() > deadline => break None,
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let Some(status) = status else {
        let _ = third.kill();
        let _ = third.wait();
        panic!("a coordinator on a hard link of the database started while the first held it");
    };
    assert!(!status.success(), "a coordinator on a hard link of the database must not start");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut third.stderr.take().expect("stderr"), &mut err).expect("read stderr");
    assert!(err.contains("another coordinator is using the study database"), "{err}");
    assert!(err.contains("hard link"), "{err}");
    // The first one still serves.
    let mut c = connect(&first.url).await;
    create(&mut c, small_spec("owner", 2)).await;
    first.kill9();
    let again = CoordProcess::spawn(&db, &[]);
    let mut c = connect(&again.url).await;
    let s = c.study.get_study(pb::GetStudyRequest { name: "owner".into() }).await.unwrap().into_inner();
    assert_eq!(s.spec.unwrap().n_trials, 2);
}

/// An upload still streaming when the coordinator is told to stop (SIGTERM):
/// after the shutdown grace the process exits, and the upload's temporary
/// file goes with it; nothing half-written stays in the trial's directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_by_shutdown_leaves_no_temporary_file() {
    let dir = tempdir();
    let db = dir.path().join("up.db");
    let mut coord = CoordProcess::spawn(&db, &["--shutdown-grace-seconds", "1"]);
    let mut c = connect(&coord.url).await;
    create(&mut c, small_spec("cut", 1)).await;
    let w = register(&mut c, "worker-a", 1).await;
    let t = acquire(&mut c, &w, 0).await.expect("a trial");
    let (tx, upload) = open_upload(&c);
    tx.send(artifact_header(t.trial_id, t.lease.as_ref().unwrap().token, "model/model.pt", Some(1 << 20), "")).await.unwrap();
    tx.send(artifact_chunk(&[7u8; 4096])).await.unwrap();
    let model_dir = dir.path().join("up.db.artifacts/study-1/trial-0/model");
    eventually(10, || {
        let d = model_dir.clone();
        async move { (!upload_temps(&d).is_empty()).then_some(()) }
    })
    .await;
    let status = tokio::task::spawn_blocking(move || coord.terminate()).await.unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(upload_temps(&model_dir), Vec::<String>::new(), "the cut upload's temporary file is removed");
    assert!(!model_dir.join("model.pt").exists());
    drop(tx);
    assert!(upload.await.unwrap().is_err(), "the cut upload is not acknowledged");
}

/// A file that is not a SQLite database is refused at start with one line
/// naming the file and the problem (no backtrace, even with RUST_BACKTRACE
/// set), exit status 1; the file is left as it was.
#[test]
fn a_file_that_is_not_a_database_is_refused_with_one_clear_line() {
    let dir = tempdir();
    let db = dir.path().join("notes.db");
    std::fs::write(&db, "these are my notes, not a study\n".repeat(200)).unwrap();
    let before = std::fs::read(&db).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mnist-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run mnist-coordinator");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line in:\n{err}"));
    assert!(line.contains(&db.display().to_string()) && line.contains("not a database"), "{err}");
    assert!(!err.contains("backtrace") && !err.contains("Caused by") && !err.contains("panicked"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "the file was changed");
}

/// Bad flags are refused by name (negative numbers are read as values, so
/// the check can name them), with a non-zero exit and nothing served.
#[test]
fn bad_coordinator_flags_are_named() {
    let dir = tempdir();
    let db = dir.path().join("flags.db");
    let cases: [(&[&str], &str); 6] = [
        (&["--lease-seconds", "-1"], "--lease-seconds must be a number of seconds above 0 up to 2592000 (30 days), got -1"),
        (&["--shutdown-grace-seconds", "-3"], "--shutdown-grace-seconds must be a number of seconds above 0"),
        // Too large to be a duration (this panicked), or too large for a lease.
        (&["--lease-seconds", "1e20"], "--lease-seconds must be a number of seconds above 0 up to 2592000"),
        (&["--lease-seconds", "5", "--heartbeat-seconds", "60"], "--heartbeat-seconds (60) must be shorter than --lease-seconds (5)"),
        (&["--max-write-batch", "0"], "--max-write-batch must be at least 1"),
        (&["--listen", "nope"], "invalid value 'nope' for '--listen"),
    ];
    for (flags, needle) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mnist-coordinator"))
            .arg("--db")
            .arg(&db)
            .args(flags)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run mnist-coordinator");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(matches!(out.status.code(), Some(1 | 2)), "{flags:?}: {out:?}");
        assert!(err.contains(needle), "{flags:?}: expected {needle:?} in:\n{err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"), "{flags:?} served");
    }
}

/// Settings for the write-failure tests: SQLite gives up on a lock after
/// `busy`, so a test that holds the write lock makes the coordinator's writes
/// fail (or wait).
fn write_config(db: &std::path::Path, busy: Duration) -> CoordinatorConfig {
    let mut c = CoordinatorConfig::new(db);
    c.lease_duration = Duration::from_secs(60);
    c.restart_grace = Duration::from_secs(60);
    c.storage.busy_timeout = busy;
    c
}

async fn random_study(c: &Coordinator, name: &str) {
    let spec = NewStudy { name: name.into(), sampler_kind: "random".into(), sampler_seed: Some(1), ..Default::default() };
    c.create_study(spec, false).await.expect("create the study");
}

fn ask_req(holder: &str, study: &str) -> AskRequest {
    AskRequest { holder: holder.into(), slot: 0, study: Some(study.into()), wait: Duration::ZERO }
}

fn assigned(o: AskOutcome) -> Box<Assignment> {
    match o {
        AskOutcome::Assigned(a) => a,
        other => panic!("expected a trial, got {other:?}"),
    }
}

/// Another connection that holds the database's write lock until rolled back.
async fn write_lock(db: &std::path::Path) -> SqliteConnection {
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.expect("connect");
    sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.expect("take the write lock");
    conn
}

async fn unlock(mut conn: SqliteConnection) {
    sqlx::query("ROLLBACK").execute(&mut conn).await.expect("release the write lock");
}

/// A write that fails for good leaves the memory ahead of the database; a
/// later change may depend on the lost one (here: trial 1 after a trial 0
/// that is not in the file, which made the study unloadable). So every later
/// change is refused, naming the database problem, the storage reports
/// unhealthy, and after a restart the study loads with dense trial numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_write_every_later_change_is_refused_until_a_restart() {
    let dir = tempdir();
    let db = dir.path().join("fail.db");
    let c = Coordinator::open(write_config(&db, Duration::from_millis(50))).await.expect("open");
    random_study(&c, "s").await;
    let lock = write_lock(&db).await;
    let e = c.ask(ask_req("w1", "s")).await.expect_err("the write fails while the database is locked");
    assert!(matches!(e, CoordError::Storage(StorageError::WriteFailed { .. })), "{e:?}");
    assert!(e.to_string().contains("database is locked") && e.to_string().contains("fail.db"), "{e}");
    let health = c.storage_health().borrow().clone();
    assert!(health.is_some_and(|h| h.contains("database is locked")), "the storage reports the failure");
    unlock(lock).await;
    // The database is writable again, but the coordinator's memory is not
    // what it holds: nothing more is written.
    let e = c.ask(ask_req("w2", "s")).await.expect_err("a later change is refused");
    assert!(matches!(e, CoordError::Storage(StorageError::Failed { .. })), "{e:?}");
    assert!(e.to_string().contains("restart") && e.to_string().contains("database is locked"), "{e}");
    let e = c.enqueue_trial("s", Vec::new()).await.expect_err("every change is refused");
    assert!(matches!(e, CoordError::Storage(StorageError::Failed { .. })), "{e:?}");
    c.close().await;
    drop(c);

    let c = Coordinator::open(write_config(&db, Duration::from_millis(50))).await.expect("reopen");
    let s = c.get_study("s").expect("the study loads after the restart");
    assert_eq!(s.counts.running + s.counts.waiting, 0, "nothing of the refused changes was written: {:?}", s.counts);
    let a = assigned(c.ask(ask_req("w2", "s")).await.expect("ask after the restart"));
    assert_eq!(a.number, 0);
    c.close().await;
}

/// A full write queue refuses the change before it touches the state in
/// memory: the refused ask leaves no trial behind (it used to leave a RUNNING
/// trial in memory that was never written, so the next trial's number
/// skipped one and the study could not be loaded after a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_refuses_a_change_without_making_it() {
    let dir = tempdir();
    let db = dir.path().join("full.db");
    let mut cfg = write_config(&db, Duration::from_secs(60));
    cfg.storage.queue_capacity = 1;
    let c = Coordinator::open(cfg.clone()).await.expect("open");
    random_study(&c, "s").await;
    // The writer waits on the lock with the first batch; one more fits in
    // the queue; then the queue is full.
    let lock = write_lock(&db).await;
    let mut queued = Vec::new();
    let mut refused = None;
    for i in 0..8 {
        let (c2, holder) = (c.clone(), format!("w{i}"));
        let task = tokio::spawn(async move { c2.ask(ask_req(&holder, "s")).await });
        let before = queued.len();
        let finished = eventually(20, || {
            let c = c.clone();
            let done = task.is_finished();
            async move {
                let made = c.list_trials("s", &[], 0, 0).expect("list").len();
                (done || made > before).then_some(done)
            }
        })
        .await;
        if finished {
            refused = Some(task.await.expect("join").expect_err("only a refused ask answers while the database is locked"));
            break;
        }
        queued.push(task);
    }
    let e = refused.expect("the write queue filled up");
    assert!(matches!(e, CoordError::Storage(StorageError::Overloaded)), "{e:?}");
    assert_eq!(c.list_trials("s", &[], 0, 0).unwrap().len(), queued.len(), "the refused ask made no trial");
    assert!(c.storage_health().borrow().is_none(), "a full queue is not a storage failure");
    unlock(lock).await;
    for t in queued {
        assigned(t.await.expect("join").expect("a queued ask is answered once its write commits"));
    }
    let next = assigned(c.ask(ask_req("late", "s")).await.expect("ask after the queue drained"));
    let n = c.list_trials("s", &[], 0, 0).unwrap().len();
    assert_eq!(next.number as usize, n - 1, "trial numbers stay dense");
    c.close().await;
    drop(c);
    let c = Coordinator::open(cfg).await.expect("reopen");
    let s = c.get_study("s").expect("the study loads after the restart");
    assert_eq!(s.counts.running as usize, n, "{:?}", s.counts);
    c.close().await;
}

/// Calls that change nothing take no place in the write queue: with the
/// queue full, a heartbeat on a live lease, an idle ask, loading an existing
/// study (`load_if_exists`), stopping a stopped study and a reaper sweep
/// with nothing to reap are answered (they were refused as overloaded),
/// while a change is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_still_answers_calls_that_change_nothing() {
    let dir = tempdir();
    let db = dir.path().join("full.db");
    let mut cfg = write_config(&db, Duration::from_secs(60));
    cfg.storage.queue_capacity = 1;
    let c = Coordinator::open(cfg).await.expect("open");
    // One trial, handed out: asking this study again changes nothing.
    let spec = NewStudy { name: "s".into(), sampler_kind: "random".into(), sampler_seed: Some(1), n_trials: 1, ..Default::default() };
    c.create_study(spec.clone(), false).await.expect("create the study");
    random_study(&c, "other").await;
    random_study(&c, "stopped").await;
    c.stop_study("stopped", "").await.expect("stop");
    let a = assigned(c.ask(ask_req("w1", "s")).await.expect("the study's trial"));
    // Enqueues into the other study wait for the database lock until the
    // queue is full.
    let lock = write_lock(&db).await;
    let mut queued = Vec::new();
    let mut refused = None;
    for _ in 0..8 {
        let c2 = c.clone();
        let task = tokio::spawn(async move { c2.enqueue_trial("other", Vec::new()).await });
        let before = queued.len();
        let finished = eventually(20, || {
            let c = c.clone();
            let done = task.is_finished();
            async move {
                let made = c.list_trials("other", &[], 0, 0).expect("list").len();
                (done || made > before).then_some(done)
            }
        })
        .await;
        if finished {
            refused = Some(task.await.expect("join").expect_err("only a refused enqueue answers while the database is locked"));
            break;
        }
        queued.push(task);
    }
    let e = refused.expect("the write queue filled up");
    assert!(matches!(e, CoordError::Storage(StorageError::Overloaded)), "{e:?}");

    let hb = c.heartbeat(a.trial_id, a.lease.token, "w1").await.expect("a heartbeat on a live lease writes nothing");
    assert!(!hb.stop);
    match c.ask(ask_req("w2", "s")).await.expect("an idle ask writes nothing") {
        AskOutcome::Idle { reason, .. } => assert!(reason.contains("handed out"), "{reason}"),
        other => panic!("expected no trial, got {other:?}"),
    }
    let (view, created) = c.create_study(spec, true).await.expect("loading an existing study writes nothing");
    assert!(!created && view.name == "s", "{view:?}");
    c.stop_study("stopped", "again").await.expect("stopping a stopped study writes nothing");
    assert_eq!(c.reap().await.expect("a sweep with nothing to reap writes nothing"), 0);
    let e = c.enqueue_trial("other", Vec::new()).await.expect_err("a change is still refused");
    assert!(matches!(e, CoordError::Storage(StorageError::Overloaded)), "{e:?}");
    assert!(c.storage_health().borrow().is_none(), "a full queue is not a storage failure");
    unlock(lock).await;
    for t in queued {
        t.await.expect("join").expect("a queued enqueue commits once the lock is released");
    }
    c.close().await;
}

/// An ask repeated for the same (holder, slot) while the first one's write is
/// still pending gets its answer only after that write: here the write fails,
/// and so does the repeated ask, instead of handing out (from memory) a trial
/// and token that were never written. After a restart the trial is handed out
/// afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_ask_does_not_hand_out_a_trial_whose_start_was_not_written() {
    let dir = tempdir();
    let db = dir.path().join("again.db");
    let c = Coordinator::open(write_config(&db, Duration::from_millis(300))).await.expect("open");
    random_study(&c, "s").await;
    let lock = write_lock(&db).await;
    let first = {
        let c = c.clone();
        tokio::spawn(async move { c.ask(ask_req("w1", "s")).await })
    };
    eventually(20, || {
        let c = c.clone();
        async move { (c.list_trials("s", &[], 0, 0).expect("list").len() == 1).then_some(()) }
    })
    .await;
    let again = c.ask(ask_req("w1", "s")).await;
    assert!(again.is_err(), "a trial whose start was not written was handed out: {again:?}");
    assert!(first.await.expect("join").is_err(), "the first ask's write failed");
    unlock(lock).await;
    c.close().await;
    drop(c);
    let c = Coordinator::open(write_config(&db, Duration::from_millis(300))).await.expect("reopen");
    let a = assigned(c.ask(ask_req("w1", "s")).await.expect("ask after the restart"));
    assert!(!a.resumed && a.number == 0, "{a:?}");
    c.close().await;
}

/// Deleting the newest study and restarting does not hand its study id (and
/// with it a `study-<id>/` artifact directory that may have been left
/// behind) or its trial ids to a new study: the ids' high water marks are
/// kept like those of event numbers and lease tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_of_a_deleted_study_are_not_reused_after_a_restart() {
    let dir = tempdir();
    let db = dir.path().join("ids.db");
    let (server, mut c) = start_in_process(fast_config(&db, Duration::from_secs(30))).await;
    create(&mut c, small_spec("kept", 3)).await;
    let doomed = create(&mut c, small_spec("doomed", 3)).await;
    let w = register(&mut c, "worker-d", 1).await;
    let t = c
        .worker
        .acquire_trial(pb::AcquireTrialRequest { worker_id: w.clone(), slot: 0, study_name: "doomed".into(), wait_ms: 0 })
        .await
        .unwrap()
        .into_inner()
        .trial
        .expect("a trial");
    c.study.delete_study(pb::DeleteStudyRequest { name: "doomed".into(), force: true }).await.expect("delete");
    server.shutdown().await.unwrap();

    let (server, mut c) = start_in_process(fast_config(&db, Duration::from_secs(30))).await;
    let fresh = create(&mut c, small_spec("fresh", 3)).await;
    assert!(fresh.study_id > doomed.study_id, "study id {} was reused", fresh.study_id);
    let t2 = c
        .worker
        .acquire_trial(pb::AcquireTrialRequest { worker_id: w.clone(), slot: 0, study_name: "fresh".into(), wait_ms: 0 })
        .await
        .unwrap()
        .into_inner()
        .trial
        .expect("a trial");
    assert!(t2.trial_id > t.trial_id, "trial id {} was reused", t2.trial_id);
    server.shutdown().await.unwrap();
}
