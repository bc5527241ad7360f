//! `mnistctl train`, `predict` and `doctor` as a user runs them: the real
//! binary, real data, real files; and every kind of bad input.

use std::process::{Command, Output};

mod support;
use support::data_dir;

fn mnistctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mnistctl"))
        .args(args)
        .env("MNIST_NO_PROGRESS", "1")
        .env_remove("MNIST_DATA_DIR")
        .env("MNIST_MIRRORS", "http://127.0.0.1:9/")
        .output()
        .expect("run mnistctl")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn assert_fails_with(args: &[&str], needle: &str) {
    let o = mnistctl(args);
    assert!(!o.status.success(), "{args:?} should fail");
    let err = stderr(&o);
    assert!(err.contains(needle), "{args:?}: expected {needle:?} in:\n{err}");
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
}

#[test]
fn bad_training_flags_are_refused_with_the_flag_named() {
    let d = data_dir();
    let d = d.to_str().unwrap();
    assert_fails_with(&["train", "--data-dir", d, "--learning-rate", "-0.1"], "--learning-rate");
    assert_fails_with(&["train", "--data-dir", d, "--batch-size", "0"], "--batch-size");
    assert_fails_with(&["train", "--data-dir", d, "--epochs", "0"], "--epochs");
    assert_fails_with(&["train", "--data-dir", d, "--dropout-fc", "1.5"], "--dropout-fc");
    assert_fails_with(&["train", "--data-dir", d, "--momentum", "nan"], "--momentum");
    assert_fails_with(&["train", "--data-dir", d, "--batch-size", "abc"], "invalid value 'abc'");
    assert_fails_with(&["train", "--data-dir", d, "--optimizer", "rmsprop"], "unknown optimizer");
    assert_fails_with(&["train", "--data-dir", d, "--device", "tpu"], "unknown device \"tpu\"");
    assert_fails_with(&["train", "--data-dir", d, "--device", "cuda:7"], "cuda:7 requested");
    assert_fails_with(&["train", "--data-dir", d, "--train-limit", "100", "--val-size", "100"], "--val-size: 100 leaves no training images out of 100; hold out fewer");
    // Checked before training, not after.
    let file = tempfile::NamedTempFile::new().unwrap();
    assert_fails_with(&["train", "--data-dir", d, "--device", "cpu", "--output-dir", file.path().to_str().unwrap()], "--output-dir");
}

#[test]
fn missing_data_and_failed_download_are_clear_errors() {
    let empty = tempfile::tempdir().unwrap();
    let e = empty.path().to_str().unwrap();
    assert_fails_with(&["train", "--data-dir", e, "--no-download"], "not found in");
    // MNIST_MIRRORS points at a closed port: the download fails and says so.
    assert_fails_with(&["train", "--data-dir", e], "could not download train-images-idx3-ubyte");
    let o = mnistctl(&["doctor", "--data-dir", e]);
    assert!(!o.status.success());
    assert!(stdout(&o).contains("PROBLEM"), "{}", stdout(&o));
}

#[test]
fn missing_or_bad_model_file_for_predict() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pt");
    assert_fails_with(&["predict", "--model", missing.to_str().unwrap(), "0"], "model file not found");
    let junk = dir.path().join("junk.pt");
    std::fs::write(&junk, b"not a model").unwrap();
    assert_fails_with(&["predict", "--model", junk.to_str().unwrap(), "0"], "not a TorchScript model");
}

#[test]
fn doctor_reports_torch_and_the_data_set() {
    let d = data_dir();
    let o = mnistctl(&["doctor", "--data-dir", d.to_str().unwrap(), "-o", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["torch_version"].as_str().unwrap().starts_with("2.11.0"), "{v}");
    assert_eq!(v["data_ok"], true);
    assert_eq!(v["data"].as_array().unwrap().len(), 4);
    assert!(v["cuda_available"].is_boolean());
}

#[test]
fn train_then_predict_end_to_end() {
    let d = data_dir();
    let out = tempfile::tempdir().unwrap();
    let o = mnistctl(&[
        "train",
        "--data-dir",
        d.to_str().unwrap(),
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--train-limit",
        "2000",
        "--val-size",
        "500",
        "--test-limit",
        "500",
        "--output-dir",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path().join("metrics.json")).unwrap()).unwrap();
    let acc = m["test"]["accuracy"].as_f64().unwrap();
    // The printed number is the saved number.
    assert!(text.contains(&format!("test accuracy: {acc:.2}%")), "{text}");
    for f in ["model.pt", "model.safetensors", "accuracy.png", "loss.png", "confusion_matrix.png", "predictions.png", "mlflow_model/MLmodel"] {
        assert!(out.path().join(f).exists(), "{f}");
    }

    // Predict test images by index and a PNG made from test image 0, inverted
    // (dark digit on white) to exercise the inversion.
    let model = out.path().join("model.pt");
    let grid = out.path().join("grid.png");
    let data = mnist_common::mnist::load(&d).unwrap();
    let png = out.path().join("digit.png");
    let inverted: Vec<u8> = data.test.image(0).iter().map(|p| 255 - p).collect();
    image::GrayImage::from_raw(28, 28, inverted).unwrap().save(&png).unwrap();
    let o = mnistctl(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--data-dir",
        d.to_str().unwrap(),
        "--grid",
        grid.to_str().unwrap(),
        "0",
        "1",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].starts_with("test[0]") && lines[2].starts_with("test[1]"), "{text}");
    let digit_of = |line: &str| line.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(digit_of(lines[1]), digit_of(lines[3]), "the inverted PNG of test[0] predicts the same digit:\n{text}");
    assert!(grid.is_file());

    assert_fails_with(&["predict", "--model", model.to_str().unwrap(), "--data-dir", d.to_str().unwrap(), "10000"], "out of range");
    assert_fails_with(&["predict", "--model", model.to_str().unwrap(), "missing.png"], "missing.png");

    // Test images by index need the test set only: a data directory with
    // just its two files (no training files) serves them without a download.
    let test_only = out.path().join("test-only");
    std::fs::create_dir_all(&test_only).unwrap();
    for f in [mnist_common::mnist::TEST_IMAGES, mnist_common::mnist::TEST_LABELS] {
        let src = mnist_common::mnist::locate(&d, &f).expect("the shared MNIST copy");
        std::fs::copy(&src, test_only.join(src.file_name().unwrap())).unwrap();
    }
    // (mnistctl() points downloads at a closed port.)
    let grid2 = out.path().join("grid2.png");
    let o = mnistctl(&["predict", "--model", model.to_str().unwrap(), "--data-dir", test_only.to_str().unwrap(), "--grid", grid2.to_str().unwrap(), "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(digit_of(stdout(&o).lines().nth(1).unwrap_or("")), digit_of(lines[1]), "{}", stdout(&o));

    // A reader that leaves at once (`| head -0`): the rest of the output is
    // dropped, the work is still done (the grid is written after the
    // table), and the exit code is the command's own.
    let grid3 = out.path().join("grid3.png");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mnistctl"))
        .args(["predict", "--model", model.to_str().unwrap(), "--data-dir", d.to_str().unwrap(), "--grid", grid3.to_str().unwrap(), "0", "1"])
        .env("MNIST_NO_PROGRESS", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{:?} {}", o.status, stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert!(grid3.is_file(), "the grid was not written after the reader left");
}

#[test]
fn global_flags_a_command_does_not_read_are_refused() {
    // `--coordinator` and `-o` are global flags; a command that ignores them
    // must say so rather than run as if they were honoured.
    assert_fails_with(
        &[
            "tune",
            "--coordinator",
            "http://10.0.0.1:50051",
            "--n-trials",
            "1",
        ],
        "--coordinator is not used by `mnistctl tune`",
    );
    assert_fails_with(
        &[
            "--coordinator",
            "http://10.0.0.1:50051",
            "train",
            "--epochs",
            "1",
        ],
        "--coordinator is not used by `mnistctl train`",
    );
    assert_fails_with(
        &["train", "-o", "json"],
        "--output/-o is not used by `mnistctl train`",
    );
    assert_fails_with(&["-o", "json", "study", "export", "s"], "choose its format with --format csv|json");
    let o = mnistctl(&["tune", "--coordinator", "http://10.0.0.1:50051"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "bad usage exits 2: {}",
        stderr(&o)
    );
    // From the environment it is not an error (a shell may export it for every command),
    // and the commands that read the flags accept them.
    let o = Command::new(env!("CARGO_BIN_EXE_mnistctl"))
        .args(["train", "--epochs", "0"])
        .env("MNISTCTL_COORDINATOR", "http://10.0.0.1:50051")
        .output()
        .expect("run mnistctl");
    assert!(stderr(&o).contains("--epochs"), "{}", stderr(&o));
    let o = mnistctl(&[
        "study",
        "list",
        "-o",
        "json",
        "--coordinator",
        "http://127.0.0.1:9",
    ]);
    assert!(
        stderr(&o).contains("cannot reach coordinator at http://127.0.0.1:9"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_bad_study_setting_fails_before_any_other_work() {
    // `tune`: before the data set is fetched (the data directory stays
    // missing, no database is created); `study create`: before connecting
    // (the coordinator address is unreachable, yet the setting is named).
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mnist");
    let db = dir.path().join("t.db");
    let bad_space = dir.path().join("space.toml");
    std::fs::write(&bad_space, "[lr\n").unwrap();
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[learnin_rate]\ntype = \"float\"\nlow = 0.001\nhigh = 0.1\n").unwrap();
    let setting = dir.path().join("setting.json");
    std::fs::write(&setting, r#"{"train_limit": {"type": "int", "low": 100, "high": 1000}}"#).unwrap();
    let own = dir.path().join("own.toml");
    std::fs::write(&own, "[units]\ntype = \"int\"\nlow = 1\nhigh = 9\n").unwrap();
    let (d, s, sp) = (
        data.to_str().unwrap(),
        db.to_str().unwrap(),
        bad_space.to_str().unwrap(),
    );
    let (typo, setting, own) = (typo.to_str().unwrap(), setting.to_str().unwrap(), own.to_str().unwrap());
    let tune = |extra: &[&str], needle: &str| {
        let mut args = vec!["tune", "--data-dir", d, "--storage", s];
        args.extend_from_slice(extra);
        assert_fails_with(&args, needle);
        assert!(!data.exists(), "{extra:?}: the data set was fetched first");
        assert!(!db.exists(), "{extra:?}: a database was created first");
    };
    tune(&["--sampler", "bogus"], "unknown sampler \"bogus\"");
    tune(&["--pruner", "nope"], "unknown pruner \"nope\"");
    tune(&["--space", sp], "bad search space");
    tune(&["--sampler", "grid"], "give its grid values explicitly");
    tune(&["--timeout", "-5"], "--timeout must be a positive number of seconds, got -5");
    tune(&["--mlflow-wait-seconds", "-1"], "--mlflow-wait-seconds");
    tune(&["--mlflow-wait-seconds", "1e20"], "--mlflow-wait-seconds must be a number of seconds from 0 up to");
    tune(&["--metric", "val_acc"], "--metric \"val_acc\": this worker cannot report the metric");
    tune(&["--torch-threads", "0"], "--torch-threads must be at least 1");
    tune(&["--mlflow-tracking-uri", "notauri"], "not an http(s) address");
    // Parameter names training would not read: mistyped, a study-wide
    // setting, or (for tune, which only trains) any other name.
    tune(&["--space", typo], "did you mean `learning_rate`?");
    tune(&["--space", setting], "`train_limit` is a setting of the whole study, not tuned per trial");
    tune(&["--space", own], "training reads no parameter named units");
    tune(&["--devices", "cuda:99"], "a device of --devices cannot be used: cuda:99 requested");
    tune(&["--base", "epochs=2"], "--base epochs=2: set epochs with --epochs");
    tune(&["--base", "train_limit=900"], "set train_limit with --train-limit");
    // A data set that is there but corrupt: refused before a study is
    // stored with this command's settings; the cause is named once.
    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    for f in mnist_common::mnist::FILES {
        let src = mnist_common::mnist::locate(&data_dir(), &f).expect("the shared MNIST copy");
        std::fs::copy(&src, corrupt.join(src.file_name().unwrap())).unwrap();
    }
    let images = corrupt.join("train-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&images).unwrap();
    std::fs::write(&images, &bytes[..bytes.len() / 2]).unwrap();
    let o = mnistctl(&["tune", "--devices", "cpu", "--data-dir", corrupt.to_str().unwrap(), "--storage", s]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("the gzip data is corrupt or truncated") && e.trim_end().ends_with("can be downloaded again"), "{e}");
    assert!(!db.exists(), "a study was stored before the data set was read");
    let create = |extra: &[&str], needle: &str| {
        let mut args = vec!["study", "create", "s", "--coordinator", "http://127.0.0.1:9"];
        args.extend_from_slice(extra);
        assert_fails_with(&args, needle);
        assert!(!stderr(&mnistctl(&args)).contains("cannot reach"));
    };
    create(&["--sampler", "bogus"], "unknown sampler \"bogus\"");
    create(&["--space", sp], "bad search space");
    create(&["--sampler-options", "[1]"], "sampler");
    create(&["--timeout", "-1"], "timeout_seconds is -1");
    create(&["--timeout", "1e300"], "timeout_seconds is 1e300");
    create(&["--metric", "val_acc"], "this worker cannot report the metric \"val_acc\"");
    create(&["--space", typo], "did you mean `learning_rate`?");
    create(&["--space", setting], "`train_limit` is a setting of the whole study, not tuned per trial");
    create(&["--base", "epochs=3"], "--base epochs=3: set epochs with --epochs");
    create(&["--pruner", "none", "--pruner-options", r#"{"n_startup_trials": 3}"#], "the none pruner takes no options (got n_startup_trials)");
    // A small train_limit holds out a tenth for validation (the default 5000
    // would leave nothing to train on): the settings pass, on to connecting.
    assert_fails_with(
        &["study", "create", "s", "--base", "train_limit=1000", "--coordinator", "http://127.0.0.1:9"],
        "cannot reach coordinator at http://127.0.0.1:9",
    );
    assert_fails_with(
        &["trial", "enqueue", "s", "--param", "lr=0.1", "--params-json", r#"{"lr": 0.2}"#, "--coordinator", "http://127.0.0.1:9"],
        "parameter lr is given twice",
    );
    // No TLS yet: an https address is refused, not sent in plain text.
    assert_fails_with(&["study", "list", "--coordinator", "https://127.0.0.1:9"], "TLS is not supported yet");
    // A good setting still goes on to the coordinator.
    assert_fails_with(
        &["study", "create", "s", "--coordinator", "http://127.0.0.1:9"],
        "cannot reach coordinator at http://127.0.0.1:9",
    );
}

#[test]
fn help_tells_the_defaults_truthfully_and_sync_shows_only_what_it_reads() {
    // The default schedule is cosine; the seed's recipe is a constant lr.
    let o = mnistctl(&["train", "--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let help = stdout(&o);
    assert!(!help.contains("the seed's defaults"), "{help}");
    assert!(help.contains("mnistctl train --lr-schedule constant") && help.contains("the seed's recipe"), "{help}");
    assert!(help.contains("[default: cosine]"), "{help}");

    // sync takes the names from the stored operations: the naming flags are
    // neither shown nor silently accepted.
    let o = mnistctl(&["mlflow", "sync", "--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let help = stdout(&o);
    assert!(help.contains("--mlflow-tracking-uri"), "{help}");
    for flag in ["--mlflow-experiment-name", "--mlflow-model-name"] {
        assert!(!help.contains(flag), "{flag} is shown:\n{help}");
        let o = mnistctl(&["mlflow", "sync", "--db", "nowhere.db", flag, "x"]);
        assert_eq!(o.status.code(), Some(2), "bad usage exits 2: {}", stderr(&o));
        assert!(stderr(&o).contains(&format!("{flag} does not apply to `mnistctl mlflow sync`")), "{}", stderr(&o));
    }
}

#[test]
fn two_runs_into_one_output_dir_keep_their_own_files_for_mlflow() {
    // Without a tracking server a run's uploads wait in the outbox. They name
    // copies under mlflow-pending/<run>/, so a second run into the same
    // directory (which overwrites its files) leaves the first run's uploads
    // as they were.
    let dir = tempfile::tempdir().unwrap();
    let d = data_dir();
    let train = |lr: &str| {
        Command::new(env!("CARGO_BIN_EXE_mnistctl"))
            .args(["train", "--epochs", "1", "--train-limit", "1000", "--val-size", "200", "--test-limit", "300", "--device", "cpu"])
            .args(["--no-download", "--output-dir", "models", "--learning-rate", lr, "--data-dir"])
            .arg(&d)
            .current_dir(dir.path())
            .env("MNIST_NO_PROGRESS", "1")
            .env_remove("MLFLOW_TRACKING_URI")
            .output()
            .expect("run mnistctl")
    };
    let first = train("0.01");
    assert!(first.status.success(), "{}", stderr(&first));
    let models = dir.path().join("models");
    let outbox = models.join("mlflow-outbox.db");
    // The advice names the outbox by its absolute path: sync may run anywhere.
    assert!(stdout(&first).contains(&format!("mnistctl mlflow sync --db {}", outbox.display())), "{}", stdout(&first));
    let second = train("0.05");
    assert!(second.status.success(), "{}", stderr(&second));
    let lr_of = |metrics: &std::path::Path| -> f64 {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(metrics).unwrap()).unwrap();
        v["config"]["learning_rate"].as_f64().unwrap()
    };
    assert_eq!(lr_of(&models.join("metrics.json")), 0.05, "the directory holds the latest run");
    let mut staged: Vec<f64> = std::fs::read_dir(models.join("mlflow-pending"))
        .unwrap()
        .map(|e| {
            let run = e.unwrap().path();
            assert!(run.join("weights/model.safetensors").is_file() && run.join("model/MLmodel").is_file(), "{}", run.display());
            lr_of(&run.join("metrics.json"))
        })
        .collect();
    staged.sort_by(f64::total_cmp);
    assert_eq!(staged, vec![0.01, 0.05], "each run's uploads keep its own files");

    // Pruning keeps copies MLflow has not received, and anything not ours.
    std::fs::create_dir_all(models.join("mlflow-pending/notes")).unwrap();
    for extra in [&[][..], &["--refused"][..]] {
        let prune = Command::new(env!("CARGO_BIN_EXE_mnistctl"))
            .args(["mlflow", "prune", "--db"])
            .arg(&outbox)
            .args(extra)
            .output()
            .expect("run mnistctl");
        assert!(prune.status.success(), "{}", stderr(&prune));
        assert_eq!(std::fs::read_dir(models.join("mlflow-pending")).unwrap().count(), 3, "{}", stdout(&prune));
    }
}
