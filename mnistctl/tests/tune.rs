//! `mnistctl tune` end to end on the CPU with a tiny CNN: Ctrl-C gives the
//! running trial back and exits 130, the same command resumes and finishes
//! with the exact trial count and prints the best trial with its artifacts,
//! Optuna reads the database, and a third run finds the study complete; a
//! study in which every trial fails ends the command with exit 1 and the
//! first failure's reason; Ctrl-C during the final MLflow wait ends it (exit
//! 130) and leaves the operations in the outbox.
//!
//! Data: `MNIST_TEST_DATA`, else `<repo>/../shared/data/mnist`.
//! Python: `MNIST_TEST_PYTHON`, else `<repo>/.venv/bin/python`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{read, repo, tiny_tune, wait};

const SPACE: &str = r#"{
  "learning_rate": {"type": "float", "low": 0.005, "high": 0.2, "log": true},
  "momentum": {"type": "float", "low": 0.5, "high": 0.95}
}"#;

fn tune(dir: &Path, tag: &str) -> (Command, PathBuf, PathBuf) {
    let space = dir.join("space.json");
    std::fs::write(&space, SPACE).unwrap();
    let mut c = tiny_tune(dir);
    c.args(["--n-trials", "3", "--epochs", "3", "--train-limit", "1500", "--seed", "3", "--study", "quick"]).arg("--space").arg(&space);
    let out = dir.join(format!("{tag}.out"));
    let err = dir.join(format!("{tag}.err"));
    c.stdout(std::fs::File::create(&out).unwrap()).stderr(std::fs::File::create(&err).unwrap());
    (c, out, err)
}

#[test]
fn tune_stops_on_ctrl_c_resumes_and_reports_the_best_trial() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // 1. Interrupt while the first trial trains.
    let (mut c, out, err) = tune(dir, "first");
    let mut child = c.spawn().unwrap();
    let end = Instant::now() + Duration::from_secs(120);
    while !read(&err).contains("reported trial=") {
        assert!(Instant::now() < end, "no trial reported an epoch\n{}", read(&err));
        assert!(child.try_wait().unwrap().is_none(), "tune exited early\n{}", read(&err));
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own, not yet reaped, child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let st = wait(&mut child, Duration::from_secs(60), &[&err]);
    assert_eq!(st.code(), Some(130), "Ctrl-C stops cleanly, and says so in the exit code\n{}", read(&err));
    let e = read(&err);
    assert!(e.contains("interrupted: stopped: ") && e.contains("of 3 trials finished; run the same command again to resume"), "{}\n{e}", read(&out));
    assert!(read(&err).contains("trial released"), "the running trial was not given back\n{}", read(&err));

    // 2. The same command resumes and finishes.
    let (mut c, out, err) = tune(dir, "second");
    let mut child = c.spawn().unwrap();
    let st = wait(&mut child, Duration::from_secs(180), &[&err]);
    let text = read(&out);
    assert!(st.success(), "{st}\n{text}\n{}", read(&err));
    assert!(read(&err).contains("resuming the study"), "{}", read(&err));
    assert!(!read(&err).contains("differ from this command"), "same command, same settings\n{}", read(&err));
    assert!(text.contains("best trial: #"), "{text}");
    assert!(text.contains("learning_rate") && text.contains("momentum"), "{text}");
    let artifacts = text.lines().find_map(|l| l.strip_prefix("artifacts: ")).unwrap_or_else(|| panic!("no artifacts line\n{text}"));
    for f in ["model/MLmodel", "weights/model.safetensors", "plots/accuracy.png", "metrics.json"] {
        assert!(Path::new(artifacts.trim()).join(f).is_file(), "{f} missing under {artifacts}\n{text}");
    }

    // 3. Optuna reads exactly three finished trials.
    let python = std::env::var_os("MNIST_TEST_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo().join(".venv/bin/python"));
    let script = "import optuna,sys\noptuna.logging.set_verbosity(optuna.logging.WARNING)\n\
                  s=optuna.load_study(study_name='quick',storage='sqlite:///'+sys.argv[1])\n\
                  print(sorted(t.number for t in s.trials), sorted({t.state.name for t in s.trials}))";
    let py = Command::new(python).arg("-c").arg(script).arg(dir.join("t.db")).stderr(Stdio::inherit()).output().unwrap();
    let py_out = String::from_utf8_lossy(&py.stdout);
    assert!(py.status.success(), "python failed");
    assert!(py_out.starts_with("[0, 1, 2]"), "optuna sees {py_out}");
    assert!(!py_out.contains("FAIL") && !py_out.contains("RUNNING") && !py_out.contains("WAITING"), "optuna sees {py_out}");

    // 4. Once more: nothing left to do (names written differently are the
    //    same settings).
    let (mut c, out, err) = tune(dir, "third");
    c.args(["--pruner", "MEDIAN", "--sampler", "TPE", "--metric", " val_accuracy "]);
    let mut child = c.spawn().unwrap();
    let st = wait(&mut child, Duration::from_secs(60), &[&err]);
    assert!(st.success(), "{st}\n{}", read(&err));
    assert!(read(&out).contains("already COMPLETE"), "{}", read(&out));
    assert!(!read(&err).contains("differ from this command"), "{}", read(&err));

    // 5. Other training settings under the same study name: the stored ones are
    //    kept, and the command says which of its settings are not used.
    let (mut c, out, err) = tune(dir, "fifth");
    c.args(["--base", "optimizer=adam", "--metric", "val_loss", "--direction", "minimize"]);
    std::fs::write(dir.join("space.json"), SPACE.replace("\"high\": 0.95", "\"high\": 0.99")).unwrap();
    let mut child = c.spawn().unwrap();
    let st = wait(&mut child, Duration::from_secs(60), &[&err]);
    assert!(st.success(), "{st}\n{}", read(&err));
    let e = read(&err);
    assert!(e.contains("differ from this command"), "{e}");
    for what in [
        "optimizer (stored \"sgd\", this command \"adam\")",
        "metric (stored val_accuracy, this command val_loss)",
        "direction (stored maximize, this command minimize)",
        "search space (parameters that differ: momentum)",
    ] {
        assert!(e.contains(what), "{what} missing in\n{e}");
    }
    assert!(!e.contains("epochs ("), "unchanged settings are not listed\n{e}");
    assert!(read(&out).contains("already COMPLETE"), "{}", read(&out));
}

#[test]
fn tune_fails_when_no_trial_completes_and_names_the_first_failure() {
    // lr 10 with weight decay 1 multiplies the weights by -9 each step: every
    // trial diverges within its first epoch.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let space = dir.join("space.json");
    std::fs::write(&space, r#"{"momentum": {"type": "float", "low": 0.5, "high": 0.9}}"#).unwrap();
    let diverging = || {
        let mut c = tiny_tune(dir);
        c.args(["--n-trials", "2", "--epochs", "1", "--train-limit", "1000", "--study", "diverge", "--pruner", "none"])
            .args(["--base", "learning_rate=10", "--base", "weight_decay=1", "--base", "batch_size=10"])
            .arg("--space")
            .arg(&space);
        c
    };
    let mut c = diverging();
    let (out, err) = (dir.join("fail.out"), dir.join("fail.err"));
    c.stdout(std::fs::File::create(&out).unwrap()).stderr(std::fs::File::create(&err).unwrap());
    let mut child = c.spawn().unwrap();
    let st = wait(&mut child, Duration::from_secs(180), &[&out, &err]);
    let (text, log) = (read(&out), read(&err));
    assert_eq!(st.code(), Some(1), "a study without a complete trial is a failure\n{text}\n{log}");
    assert!(text.contains("0 complete, 0 pruned, 2 failed"), "{text}");
    assert!(!text.contains("best trial:"), "{text}");
    let want = "error: no trial of study \"diverge\" completed (2 failed, 0 pruned), so there is no best trial; \
                the first failure, trial #0: training diverged at epoch 1";
    assert!(log.contains(want), "{want:?} missing in\n{log}");
    assert!(log.contains("fix the cause"), "{log}");

    // Run again: the study is already complete, and still has no best trial.
    let o = diverging().output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("already COMPLETE"), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(String::from_utf8_lossy(&o.stderr).contains(want), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn ctrl_c_during_the_final_mlflow_wait_ends_it_and_keeps_the_operations() {
    // MLflow is unreachable (a closed port) and the final wait is long: the
    // trial finishes, the report is printed, then the command waits for MLflow
    // until Ctrl-C.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut c = tiny_tune(dir);
    c.args(["--n-trials", "1", "--epochs", "1", "--train-limit", "1000", "--study", "wait", "--pruner", "none"])
        .args(["--mlflow-tracking-uri", "http://127.0.0.1:9", "--mlflow-wait-seconds", "600"])
        .env_remove("MLFLOW_TRACKING_USERNAME")
        .env_remove("MLFLOW_TRACKING_PASSWORD")
        .env_remove("MLFLOW_TRACKING_TOKEN");
    let (out, err) = (dir.join("wait.out"), dir.join("wait.err"));
    c.stdout(std::fs::File::create(&out).unwrap()).stderr(std::fs::File::create(&err).unwrap());
    let mut child = c.spawn().unwrap();
    let end = Instant::now() + Duration::from_secs(180);
    while !read(&err).contains("delivering what is left") {
        assert!(Instant::now() < end, "the final MLflow wait did not start\n{}\n{}", read(&out), read(&err));
        assert!(child.try_wait().unwrap().is_none(), "tune exited before the final wait\n{}\n{}", read(&out), read(&err));
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own, not yet reaped, child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    // Well within the 600 s the wait would otherwise take.
    let st = wait(&mut child, Duration::from_secs(120), &[&out, &err]);
    let (text, log) = (read(&out), read(&err));
    assert_eq!(st.code(), Some(130), "Ctrl-C ends the command with 130\n{text}\n{log}");
    assert!(text.contains("best trial: #0"), "the result was printed before the wait\n{text}");
    let db = dir.join("t.db");
    let want = "interrupted: stopped waiting for MLflow; ";
    assert!(log.contains(want), "{want:?} missing in\n{log}");
    assert!(log.contains(&format!("deliver them with `mnistctl mlflow sync --db {}`", db.display())), "{log}");

    // The operations stayed in the outbox.
    let st = Command::new(env!("CARGO_BIN_EXE_mnistctl")).args(["mlflow", "status", "--db"]).arg(&db).output().unwrap();
    let status = String::from_utf8_lossy(&st.stdout);
    let pending: u64 = status.lines().find_map(|l| l.strip_prefix("pending:")).and_then(|n| n.trim().parse().ok()).unwrap_or(0);
    assert!(st.status.success() && pending > 0, "{status}");
    assert!(log.contains(&format!("{pending} MLflow operations stay")), "{log}");
}

#[test]
fn a_study_that_ended_on_its_timeout_goes_on_when_the_command_is_rerun() {
    // Each run gets its own --timeout (none: no limit), as each
    // `study.optimize(timeout=...)` call does in Optuna.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = |timeout: Option<&str>| {
        let mut c = tiny_tune(dir);
        c.args(["--n-trials", "2", "--epochs", "1", "--train-limit", "600", "--study", "timed", "--pruner", "none"]);
        if let Some(t) = timeout {
            c.args(["--timeout", t]);
        }
        c.output().unwrap()
    };
    // A microsecond: over before the first trial can start.
    let first = run(Some("0.000001"));
    let text = String::from_utf8_lossy(&first.stdout);
    assert!(text.contains("timeout"), "{text}\n{}", String::from_utf8_lossy(&first.stderr));
    let second = run(None);
    let (text, log) = (String::from_utf8_lossy(&second.stdout), String::from_utf8_lossy(&second.stderr));
    assert!(second.status.success(), "{text}\n{log}");
    assert!(!text.contains("already COMPLETE"), "{text}");
    assert!(text.contains("study \"timed\": 2 complete, 0 pruned, 0 failed"), "{text}\n{log}");
}
