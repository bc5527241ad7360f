//! A `--db` that is another program's SQLite database (MLflow's `mlflow.db`,
//! say) or not a database at all is refused at start-up, with the reason,
//! and left byte for byte unchanged: no Optuna or `mnist_` tables, no WAL
//! switch, no lock file.

use std::path::Path;
use std::process::Command;

use sqlx::{Connection, SqliteConnection};

fn start(db: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mnist-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run mnist-coordinator");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn siblings(db: &Path) -> Vec<String> {
    let name = db.file_name().unwrap().to_string_lossy().into_owned();
    let mut v: Vec<String> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with(&name))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_programs_database_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    // Tables as MLflow's tracking store has them.
    let db = dir.path().join("mlflow.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    for ddl in [
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)",
        "CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name VARCHAR(256) NOT NULL)",
        "CREATE TABLE runs (run_uuid VARCHAR(32) PRIMARY KEY, name VARCHAR(250))",
    ] {
        sqlx::query(ddl).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
    let before = std::fs::read(&db).unwrap();
    let (ok, err) = start(&db);
    assert!(!ok, "the coordinator must refuse it: {err}");
    assert!(err.contains("not an Optuna study database") && err.contains("`experiments`"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "not one byte changed");
    assert_eq!(siblings(&db), vec!["mlflow.db".to_string()], "no -wal, -shm or .lock file");

    // Not a database at all.
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "just some notes, not SQLite\n".repeat(20)).unwrap();
    let (ok, err) = start(&text);
    assert!(!ok && err.contains("notes.txt"), "{err}");
    assert_eq!(std::fs::read_to_string(&text).unwrap(), "just some notes, not SQLite\n".repeat(20));

    // An empty file is a new database, as before.
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mnist-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(&empty)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert!(line.starts_with("mnist-coordinator listening on"), "{line}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_directory_given_as_the_database_is_refused_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = start(dir.path());
    assert!(!ok, "{err}");
    assert!(err.contains("it is a directory; give the path of a database file in it"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was created in it");
}
