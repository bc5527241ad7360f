//! Malformed requests get the right status code and a message that says what
//! to change; artifacts and the data-set stream work end to end.

mod common;

use std::time::Duration;

use common::*;
use mnist_proto::v1 as pb;
use tonic::Code;

fn spec_with_space(name: &str, src: pb::search_space_source::Source) -> pb::StudySpec {
    pb::StudySpec { name: name.into(), search_space: Some(pb::SearchSpaceSource { source: Some(src) }), ..Default::default() }
}

async fn create_err(c: &mut Clients, spec: pb::StudySpec) -> tonic::Status {
    c.study.create_study(pb::CreateStudyRequest { spec: Some(spec), load_if_exists: false }).await.unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_study_requests() {
    use pb::search_space_source::Source;
    let dir = tempdir();
    let (server, mut c) = start_in_process(fast_config(&dir.path().join("s.db"), Duration::from_secs(30))).await;

    let e = c.study.create_study(pb::CreateStudyRequest { spec: None, load_if_exists: false }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = create_err(&mut c, pb::StudySpec::default()).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("study name is empty"), "{}", e.message());
    let e = create_err(&mut c, spec_with_space("bad-toml", Source::Toml("[x]\ntype = \"float\"\nlow = 1.0\n".into()))).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("bad search space"), "{}", e.message());
    let e = create_err(&mut c, spec_with_space("bad-json", Source::Json("{\"x\": {\"type\": \"float\", \"low\": 2, \"high\": 1}}".into()))).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("`x`"), "{}", e.message());
    let e = create_err(&mut c, spec_with_space("not-json", Source::Json("{oops".into()))).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    // Things that used to pass and then crash or misbehave later.
    let mut s = spec_with_space("huge-ei", Source::Toml("[x]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\n".into()));
    s.sampler = Some(pb::SamplerSpec { kind: "tpe".into(), seed: Some(1), options_json: r#"{"n_ei_candidates": 100000000000}"#.into() });
    let e = create_err(&mut c, s).await;
    assert!(e.code() == Code::InvalidArgument && e.message().contains("n_ei_candidates"), "{e:?}");
    let mut s = spec_with_space("huge-timeout", Source::Toml("[x]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\n".into()));
    s.timeout_seconds = 1e300;
    let e = create_err(&mut c, s).await;
    assert!(e.code() == Code::InvalidArgument && e.message().contains("timeout_seconds"), "{e:?}");
    let mut s = spec_with_space("bad-seed", Source::Toml("[x]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\n".into()));
    s.sampler = Some(pb::SamplerSpec { kind: "random".into(), seed: None, options_json: r#"{"seed": -5}"#.into() });
    let e = create_err(&mut c, s).await;
    assert!(e.code() == Code::InvalidArgument && e.message().contains("seed"), "{e:?}");
    let mut s = spec_with_space("typo-grid", Source::Toml("[x]\ntype = \"int\"\nlow = 0\nhigh = 3\n".into()));
    s.sampler = Some(pb::SamplerSpec { kind: "grid".into(), seed: Some(1), options_json: r#"{"grids": {"x": [1, 2]}}"#.into() });
    let e = create_err(&mut c, s).await;
    assert!(e.code() == Code::InvalidArgument && e.message().contains("grids"), "{e:?}");
    let e = create_err(&mut c, spec_with_space("float-batch", Source::Json(r#"{"batch_size": {"type": "float", "low": 32, "high": 256}}"#.into()))).await;
    assert!(e.code() == Code::InvalidArgument && e.message().contains("batch_size"), "{e:?}");
    // No direction: a loss is minimised, anything else maximised.
    for (metric, want) in [("val_loss", pb::Direction::Minimize), ("val_accuracy", pb::Direction::Maximize)] {
        let mut s = spec_with_space(&format!("dir-{metric}"), Source::Toml("[x]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\n".into()));
        s.metric = metric.into();
        s.direction = pb::Direction::Unspecified as i32;
        let made = create(&mut c, s).await;
        assert_eq!(made.spec.unwrap().direction, want as i32, "{metric}");
    }
    let e = create_err(&mut c, spec_with_space("typo", Source::Toml("[x]\ntype = \"float\"\nlow = 0.0\nhihg = 1.0\n".into()))).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    // A space that the training configuration rejects (dropout must stay below 1).
    let e = create_err(
        &mut c,
        spec_with_space("bad-dropout", Source::Toml("[dropout_fc]\ntype = \"float\"\nlow = 0.0\nhigh = 1.5\n".into())),
    )
    .await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("dropout_fc"), "{}", e.message());
    let mut spec = small_spec("bad-sampler", 3);
    spec.sampler = Some(pb::SamplerSpec { kind: "annealing".into(), ..Default::default() });
    let e = create_err(&mut c, spec).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("unknown sampler"), "{}", e.message());
    let mut spec = small_spec("bad-pruner-opts", 3);
    spec.pruner = Some(pb::PrunerSpec { kind: "median".into(), options_json: "[1, 2]".into() });
    assert_eq!(create_err(&mut c, spec).await.code(), Code::InvalidArgument);
    let mut spec = small_spec("nan-timeout", 3);
    spec.timeout_seconds = f64::NAN;
    assert_eq!(create_err(&mut c, spec).await.code(), Code::InvalidArgument);
    let e = create_err(&mut c, pb::StudySpec { name: "bad\nname".into(), ..Default::default() }).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut spec = small_spec("bad-base", 3);
    spec.base_config_json = r#"{"epochs": 0}"#.into();
    assert_eq!(create_err(&mut c, spec).await.code(), Code::InvalidArgument);

    // The default space works; a second create is ALREADY_EXISTS unless load_if_exists.
    let s = create(&mut c, pb::StudySpec { name: "default".into(), ..Default::default() }).await;
    assert_eq!(s.search_space.unwrap().params.len(), 8);
    assert_eq!(s.spec.as_ref().unwrap().direction, pb::Direction::Maximize as i32);
    assert_eq!(s.spec.as_ref().unwrap().metric, "val_accuracy");
    assert!(s.spec.as_ref().unwrap().sampler.as_ref().unwrap().seed.is_some(), "a drawn seed is recorded");
    let e = create_err(&mut c, pb::StudySpec { name: "default".into(), ..Default::default() }).await;
    assert_eq!(e.code(), Code::AlreadyExists);
    let again = c
        .study
        .create_study(pb::CreateStudyRequest { spec: Some(pb::StudySpec { name: "default".into(), ..Default::default() }), load_if_exists: true })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);

    let e = c.study.get_study(pb::GetStudyRequest { name: "nope".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("mnistctl study list"), "{}", e.message());
    let e = c.study.get_study(pb::GetStudyRequest { name: String::new() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .study
        .get_trial(pb::GetTrialRequest { key: Some(pb::get_trial_request::Key::Ref(pb::TrialRef { study_name: "default".into(), number: 99 })) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Enqueue: names and values are checked against the space.
    create(&mut c, small_spec("enq", 2)).await;
    let enqueue = |c: &mut Clients, params: Vec<(&str, pb::param_value::Kind)>| {
        let mut c = c.clone();
        let params = params.into_iter().map(|(k, v)| (k.to_string(), pb::ParamValue { kind: Some(v) })).collect();
        async move { c.study.enqueue_trial(pb::EnqueueTrialRequest { study_name: "enq".into(), params }).await }
    };
    use pb::param_value::Kind;
    let e = enqueue(&mut c, vec![("nope", Kind::FloatValue(1.0))]).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("not in the search space"), "{}", e.message());
    let e = enqueue(&mut c, vec![("x", Kind::FloatValue(50.0))]).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = enqueue(&mut c, vec![("x", Kind::StringValue("big".into()))]).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let t = enqueue(&mut c, vec![("x", Kind::FloatValue(1.5)), ("k", Kind::IntValue(3))]).await.unwrap().into_inner();
    assert_eq!(t.state, pb::TrialState::Waiting as i32);
    enqueue(&mut c, vec![("x", Kind::FloatValue(-2.0))]).await.unwrap();
    let e = enqueue(&mut c, vec![("x", Kind::FloatValue(0.0))]).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "n_trials = 2 are all enqueued");
    let a = c
        .ask_tell
        .ask(pb::AskRequest { study_name: "enq".into(), client_id: "c1".into(), slot: 0, wait_ms: 0 })
        .await
        .unwrap()
        .into_inner()
        .trial
        .unwrap();
    assert_eq!((num(&a.params["x"]), num(&a.params["k"])), (1.5, 3.0), "enqueued values come first");
    let b = c
        .ask_tell
        .ask(pb::AskRequest { study_name: "enq".into(), client_id: "c2".into(), slot: 0, wait_ms: 0 })
        .await
        .unwrap()
        .into_inner()
        .trial
        .unwrap();
    assert_eq!(num(&b.params["x"]), -2.0);
    assert!(b.params.contains_key("k"), "missing enqueued parameters are sampled");

    // Tell: NaN and missing values are refused.
    let tok = a.lease.as_ref().unwrap().token;
    let e = c
        .ask_tell
        .tell(pb::TellRequest { trial_id: a.trial_id, lease_token: tok, value: Some(f64::NAN), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("NaN"), "{}", e.message());
    let e = c.ask_tell.tell(pb::TellRequest { trial_id: a.trial_id, lease_token: tok, ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .ask_tell
        .tell(pb::TellRequest { trial_id: a.trial_id, lease_token: tok + 1000, value: Some(1.0), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = c
        .ask_tell
        .tell(pb::TellRequest { trial_id: 123_456, lease_token: tok, value: Some(1.0), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .ask_tell
        .tell(pb::TellRequest {
            trial_id: a.trial_id,
            lease_token: tok,
            value: Some(1.0),
            metrics: [("acc".to_string(), f64::INFINITY)].into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    c.ask_tell.tell(pb::TellRequest { trial_id: a.trial_id, lease_token: tok, value: Some(1.0), ..Default::default() }).await.unwrap();

    // Ask: unknown study, empty name, bad client id.
    let e = c.ask_tell.ask(pb::AskRequest { study_name: "nope".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c.ask_tell.ask(pb::AskRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .ask_tell
        .ask(pb::AskRequest { study_name: "enq".into(), client_id: "bad id!".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Delete: a running study with trials in flight needs force.
    let e = c.study.delete_study(pb::DeleteStudyRequest { name: "enq".into(), force: false }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("--force"), "{}", e.message());
    let d = c.study.delete_study(pb::DeleteStudyRequest { name: "enq".into(), force: true }).await.unwrap().into_inner();
    assert_eq!(d.trials_deleted, 2);
    let e = c
        .worker
        .heartbeat(pb::HeartbeatRequest { trial_id: b.trial_id, lease_token: b.lease.unwrap().token, worker_id: String::new() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_worker_requests() {
    let dir = tempdir();
    let (server, mut c) = start_in_process(fast_config(&dir.path().join("s.db"), Duration::from_secs(30))).await;
    create(&mut c, small_spec("w", 3)).await;
    let e = c
        .worker
        .register_worker(pb::RegisterWorkerRequest { hostname: "h".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("device"), "{}", e.message());
    let e = c
        .worker
        .acquire_trial(pb::AcquireTrialRequest { worker_id: "ghost".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("RegisterWorker"), "{}", e.message());
    let w = register(&mut c, "w1", 1).await;
    let e = c
        .worker
        .acquire_trial(pb::AcquireTrialRequest { worker_id: w.clone(), slot: 5, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let t = acquire(&mut c, &w, 0).await.unwrap();
    let tok = t.lease.as_ref().unwrap().token;
    let e = c
        .worker
        .fail_trial(pb::FailTrialRequest { trial_id: t.trial_id, lease_token: tok, reason: "  ".into(), retryable: true })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .worker
        .complete_trial(pb::CompleteTrialRequest {
            trial_id: t.trial_id,
            lease_token: tok,
            value: Some(1.0),
            state: pb::TrialState::Running as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // A heartbeat's worker id, when given, is checked like AcquireTrial's
    // (it was echoed unchecked in the FAILED_PRECONDITION message).
    let e = c
        .worker
        .heartbeat(pb::HeartbeatRequest { trial_id: t.trial_id, lease_token: tok, worker_id: "w1\n<b>".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("worker id"), "{}", e.message());
    let e = c
        .worker
        .heartbeat(pb::HeartbeatRequest { trial_id: t.trial_id, lease_token: tok, worker_id: "x".repeat(129) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let workers = c.study.list_workers(pb::ListWorkersRequest { include_offline: true }).await.unwrap().into_inner().workers;
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].running.len(), 1);
    assert_eq!(workers[0].running[0].trial_id, t.trial_id);

    // Artifacts: bad names are refused; a good upload is stored and checked.
    let upload = |c: &mut Clients, name: &str, token: u64, data: Vec<u8>, sha: String| {
        let mut c = c.clone();
        let msgs = vec![artifact_header(t.trial_id, token, name, Some(data.len() as u64), &sha), artifact_chunk(&data)];
        async move { c.worker.upload_artifact(tokio_stream::iter(msgs)).await }
    };
    let e = upload(&mut c, "../escape.txt", tok, b"x".to_vec(), String::new()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = upload(&mut c, "a.txt", tok + 1, b"x".to_vec(), String::new()).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // Other bytes than announced: DATA_LOSS (sending again may work), nothing stored.
    let e = upload(&mut c, "a.txt", tok, b"hello".to_vec(), "00".repeat(32)).await.unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(!dir.path().join("s.db.artifacts/study-1/trial-0/a.txt").exists());
    let ok = upload(&mut c, "plots/a.txt", tok, b"hello".to_vec(), String::new()).await.unwrap().into_inner();
    assert_eq!(ok.sha256, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    let stored = dir.path().join("s.db.artifacts/study-1/trial-0/plots/a.txt");
    assert_eq!(std::fs::read(&stored).unwrap(), b"hello");
    // Uploads are still allowed after the trial completed, with its last token.
    c.worker
        .complete_trial(pb::CompleteTrialRequest { trial_id: t.trial_id, lease_token: tok, value: Some(2.0), ..Default::default() })
        .await
        .unwrap();
    upload(&mut c, "model/MLmodel", tok, b"flavors: {}".to_vec(), String::new()).await.unwrap();

    // No data set configured: FAILED_PRECONDITION that says what to do.
    let mut s = c.worker.fetch_dataset(pb::FetchDatasetRequest::default()).await;
    let e = match &mut s {
        Err(e) => e.clone(),
        Ok(stream) => stream.get_mut().message().await.unwrap_err(),
    };
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("--data-dir"), "{}", e.message());
    server.shutdown().await.unwrap();
}

/// An artifact name that is both a file and a directory of the same trial
/// (`model`, then `model/MLmodel`, or the other way round) is refused with
/// FAILED_PRECONDITION naming the clash (it was INTERNAL), and what was
/// stored stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_name_that_is_both_a_file_and_a_directory_is_refused() {
    let dir = tempdir();
    let (server, mut c) = start_in_process(fast_config(&dir.path().join("s.db"), Duration::from_secs(30))).await;
    create(&mut c, small_spec("clash", 3)).await;
    let w = register(&mut c, "w1", 1).await;
    let t = acquire(&mut c, &w, 0).await.unwrap();
    let tok = t.lease.as_ref().unwrap().token;
    let upload = |c: &mut Clients, name: &str, data: &[u8]| {
        let mut c = c.clone();
        let msgs = vec![artifact_header(t.trial_id, tok, name, Some(data.len() as u64), ""), artifact_chunk(data)];
        async move { c.worker.upload_artifact(tokio_stream::iter(msgs)).await }
    };
    let trial_dir = dir.path().join("s.db.artifacts/study-1/trial-0");
    upload(&mut c, "model", b"a file").await.expect("store `model`");
    for name in ["model/MLmodel", "model/data/model.pth"] {
        let e = upload(&mut c, name, b"x").await.expect_err("`model` is a file");
        assert_eq!(e.code(), Code::FailedPrecondition, "{name}: {e:?}");
        assert!(e.message().contains(name) && e.message().contains("file named \"model\""), "{name}: {}", e.message());
    }
    upload(&mut c, "plots/a.png", b"png").await.expect("store `plots/a.png`");
    let e = upload(&mut c, "plots", b"x").await.expect_err("`plots` is a directory");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("\"plots\"") && e.message().contains("directory"), "{}", e.message());
    assert_eq!(std::fs::read(trial_dir.join("model")).unwrap(), b"a file");
    assert_eq!(std::fs::read(trial_dir.join("plots/a.png")).unwrap(), b"png");
    assert_eq!(upload_temps(&trial_dir), Vec::<String>::new());
    // Storing a file again under its own name still replaces it.
    upload(&mut c, "model", b"new").await.expect("replace `model`");
    assert_eq!(std::fs::read(trial_dir.join("model")).unwrap(), b"new");
    server.shutdown().await.unwrap();
}

/// An enqueued value that is not a value of its distribution is refused
/// saying which way: outside the range, or between two steps (with the
/// nearest values).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueued_value_off_its_grid_or_range_is_refused_saying_which() {
    let dir = tempdir();
    let (server, mut c) = start_in_process(fast_config(&dir.path().join("s.db"), Duration::from_secs(30))).await;
    let mut spec = small_spec("grid", 3);
    spec.search_space = Some(pb::SearchSpaceSource {
        source: Some(pb::search_space_source::Source::Toml("[fc]\ntype = \"int\"\nlow = 32\nhigh = 256\nstep = 32\n".into())),
    });
    create(&mut c, spec).await;
    let enqueue = |c: &mut Clients, v: i64| {
        let mut c = c.clone();
        let value = pb::ParamValue { kind: Some(pb::param_value::Kind::IntValue(v)) };
        async move {
            c.study.enqueue_trial(pb::EnqueueTrialRequest { study_name: "grid".into(), params: [("fc".to_string(), value)].into() }).await
        }
    };
    let e = enqueue(&mut c, 40).await.expect_err("off the grid");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("40 is between the steps of its grid (from 32 in steps of 32): take 32 or 64"), "{}", e.message());
    let e = enqueue(&mut c, 300).await.expect_err("out of range");
    assert!(e.message().contains("300 is outside its range [32, 256]"), "{}", e.message());
    enqueue(&mut c, 64).await.expect("on the grid");
    server.shutdown().await.unwrap();
}

/// A file over `max_artifact_bytes` is refused with INVALID_ARGUMENT (the
/// request is the problem; a retry cannot help), at the header when its size
/// is announced and while streaming when it is not, and nothing is left
/// behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_over_the_size_limit_is_refused_as_invalid() {
    let dir = tempdir();
    let mut cfg = fast_config(&dir.path().join("s.db"), Duration::from_secs(30));
    cfg.coordinator.max_artifact_bytes = 10;
    let (server, mut c) = start_in_process(cfg).await;
    create(&mut c, small_spec("limit", 3)).await;
    let w = register(&mut c, "w1", 1).await;
    let t = acquire(&mut c, &w, 0).await.unwrap();
    let tok = t.lease.as_ref().unwrap().token;
    let data = b"eleven byte";
    for size in [Some(data.len() as u64), None] {
        let msgs = vec![artifact_header(t.trial_id, tok, "big.bin", size, ""), artifact_chunk(data)];
        let e = c.worker.upload_artifact(tokio_stream::iter(msgs)).await.expect_err("over the limit");
        assert_eq!(e.code(), Code::InvalidArgument, "{size:?}: {e:?}");
        assert!(e.message().contains("\"big.bin\"") && e.message().contains("the limit is 10 bytes") && e.message().contains("--max-artifact-mib"), "{}", e.message());
    }
    let trial_dir = dir.path().join("s.db.artifacts/study-1/trial-0");
    assert!(!trial_dir.join("big.bin").exists());
    assert_eq!(upload_temps(&trial_dir), Vec::<String>::new());
    let msgs = vec![artifact_header(t.trial_id, tok, "small.bin", Some(10), ""), artifact_chunk(b"ten bytes!")];
    c.worker.upload_artifact(tokio_stream::iter(msgs)).await.expect("at the limit: stored");
    server.shutdown().await.unwrap();
}

/// The data-set stream: the worker's side writes the chunks and verifies
/// them with the training core's own checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataset_stream_verifies() {
    let data = std::path::Path::new("/work/shared/data/mnist");
    let src = std::env::var_os("MNIST_DATA_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| data.to_path_buf());
    if mnist_common::mnist::locate(&src, &mnist_common::mnist::TEST_LABELS).is_none() {
        eprintln!("skipping: no MNIST files in {}", src.display());
        return;
    }
    let dir = tempdir();
    let mut cfg = fast_config(&dir.path().join("s.db"), Duration::from_secs(30));
    cfg.coordinator.data_dir = Some(src);
    let (server, mut c) = start_in_process(cfg).await;
    let e = c.worker.fetch_dataset(pb::FetchDatasetRequest { files: vec!["nope".into()] }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut stream = c
        .worker
        .fetch_dataset(pb::FetchDatasetRequest { files: vec!["t10k-labels-idx1-ubyte".into(), "t10k-images-idx3-ubyte".into()] })
        .await
        .unwrap()
        .into_inner();
    let out = dir.path().join("fetched");
    std::fs::create_dir_all(&out).unwrap();
    let mut files = std::collections::BTreeMap::<String, Vec<u8>>::new();
    let mut done = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        let buf = files.entry(chunk.file_name.clone()).or_default();
        assert_eq!(chunk.offset as usize, buf.len(), "chunks arrive in order");
        buf.extend_from_slice(&chunk.data);
        if chunk.last {
            assert_eq!(buf.len() as u64, chunk.file_size);
            std::fs::write(out.join(&chunk.file_name), &*buf).unwrap();
            done.push(chunk.canonical_name.clone());
        }
    }
    assert_eq!(done, vec!["t10k-labels-idx1-ubyte", "t10k-images-idx3-ubyte"]);
    for f in [mnist_common::mnist::TEST_LABELS, mnist_common::mnist::TEST_IMAGES] {
        let p = mnist_common::mnist::locate(&out, &f).unwrap();
        mnist_common::mnist::read_verified(&p, &f).expect("the fetched file verifies");
    }
    server.shutdown().await.unwrap();
}
