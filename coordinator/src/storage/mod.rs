//! Storage: the SQLite database behind one module. Every SQL statement of the
//! coordinator lives under here.
//!
//! - [`schema`]: Optuna's RDB schema v12 and the `mnist_` tables.
//! - [`ops`]: the write operations and their SQL.
//! - [`writer`]: the single writer task with group commit.
//! - [`coalesce`]: a group's ops as few multi-row statements.
//! - [`load`]: reading everything back at start-up.
//!
//! The database runs in WAL mode with `synchronous = NORMAL`: readers (Optuna,
//! optuna-dashboard, `WatchStudy` replays) never block the writer, and a
//! committed transaction survives a crash of the coordinator process.

pub mod coalesce;
pub mod load;
pub mod ops;
pub mod schema;
pub mod writer;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection, SqlitePool};

pub use load::Snapshot;
pub use ops::{Floor, MnistTrialRow, Op, ParamRow, TrialPut};
pub use writer::{Batch, LazyReservation, Pending, Reservation, StorageHealth, WriterHandle};

use crate::events::{Event, EventHub};

/// What can go wrong with the database.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The database could not be opened or created.
    #[error("cannot open the study database {path}: {message}")]
    Open { path: PathBuf, message: String },
    /// Another coordinator has the database open.
    #[error(
        "another coordinator is using the study database {path} ({holder}); stop it first, or give this one another database file (mnist-coordinator --db, mnistctl tune --storage)"
    )]
    Locked { path: PathBuf, holder: String },
    /// The file holds an Optuna schema other than version 12.
    #[error("the study database {path} has an incompatible schema: {message}")]
    Schema { path: PathBuf, message: String },
    /// A query failed.
    #[error("database error: {0}")]
    Query(String),
    /// A write could not be committed (after retries): the state in memory
    /// is now ahead of the database.
    #[error("writing to the study database {path} failed: {message}; the coordinator must restart to reload its state")]
    WriteFailed { path: PathBuf, message: String },
    /// A change refused because an earlier write failed for good: the state
    /// in memory is ahead of the database, so nothing more is written until a
    /// restart reloads the database.
    #[error(
        "the coordinator refuses changes since a write to the study database {path} failed ({message}); restart it to reload its state"
    )]
    Failed { path: PathBuf, message: String },
    /// Too many writes are queued.
    #[error("the coordinator is overloaded (the write queue is full); retry shortly")]
    Overloaded,
    /// The writer has stopped (shutdown).
    #[error("the coordinator is shutting down")]
    Closed,
}

impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        StorageError::Query(e.to_string())
    }
}

/// Tuning knobs of the storage layer.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// How long SQLite waits on a lock held by another process.
    pub busy_timeout: Duration,
    /// At most this many ops share one commit.
    pub max_batch_ops: usize,
    /// At most this many changes wait for the writer.
    pub queue_capacity: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions { busy_timeout: Duration::from_secs(10), max_batch_ops: 4096, queue_capacity: 65_536 }
    }
}

/// The open database: the writer and a small pool of read connections.
#[derive(Debug)]
pub struct Storage {
    path: PathBuf,
    writer: WriterHandle,
    health: StorageHealth,
    readers: SqlitePool,
    writer_task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The exclusive locks on `<db>.lock` and on the database file itself,
    /// held until `close` (the kernel also drops them when the process dies,
    /// `kill -9` included).
    lock: std::sync::Mutex<Option<DatabaseLock>>,
}

/// The exclusive locks a coordinator holds on its study database while it
/// runs: `<db>.lock` and the database file itself. Released on drop (the
/// kernel also drops them when the process dies, `kill -9` included).
#[derive(Debug)]
pub struct DatabaseLock {
    _lock_file: std::fs::File,
    _db_file: std::fs::File,
}

/// Takes the locks a coordinator takes on the study database at `path`, for a
/// program that must not work on the database while a coordinator does, nor
/// let one start meanwhile: `mnistctl mlflow sync` would be a second sender of
/// the outbox that a running coordinator delivers itself. `holder` says who
/// holds them (written into `<path>.lock` with the process id), e.g.
/// `mnistctl mlflow sync`. Fails with [`StorageError::Locked`] naming the
/// holder when another process has them. The database must exist; only
/// `<path>.lock` is created.
pub fn lock_database_for(path: &Path, holder: &str) -> Result<DatabaseLock, StorageError> {
    if !path.is_file() {
        return Err(StorageError::Open { path: path.to_path_buf(), message: "there is no such file".into() });
    }
    take_locks(path, Some(holder))
}

/// `<path>.lock` (naming `holder`, else this coordinator) and the database
/// file itself, in that order.
fn take_locks(path: &Path, holder: Option<&str>) -> Result<DatabaseLock, StorageError> {
    let lock_file = lock_database(path, holder)?;
    let db_file = lock_database_file(path)?;
    Ok(DatabaseLock { _lock_file: lock_file, _db_file: db_file })
}

/// Takes the exclusive lock of the coordinator that owns `path`: `<path>.lock`,
/// which then names this process (and `role`, when it is not a coordinator).
/// Two coordinators writing one study database would hand out the same trials
/// twice.
fn lock_database(path: &Path, role: Option<&str>) -> Result<std::fs::File, StorageError> {
    use std::io::{Read, Seek, Write};
    // The real path, so that two names of one file (symlinks) share one lock.
    let real = std::fs::canonicalize(path).ok().or_else(|| {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Some(std::fs::canonicalize(dir).ok()?.join(path.file_name()?))
    });
    let path_for_lock = real.as_deref().unwrap_or(path);
    let mut name = path_for_lock.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let err = |message: String| StorageError::Open { path: path.to_path_buf(), message };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| err(format!("opening the lock file {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => format!("it holds {}", lock_path.display()),
                h => format!("{h}, holding {}", lock_path.display()),
            };
            return Err(StorageError::Locked { path: path.to_path_buf(), holder });
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(err(format!("locking {}: {e}", lock_path.display())));
        }
    }
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let mut me = if host.is_empty() {
        format!("pid {}", std::process::id())
    } else {
        format!("pid {} on {host}", std::process::id())
    };
    if let Some(role) = role {
        me = format!("{role}, {me}");
    }
    // Best effort: the lock itself is what keeps others out.
    let _ = file.set_len(0).and_then(|_| file.rewind()).and_then(|_| file.write_all(me.as_bytes()));
    Ok(file)
}

/// Locks the database file itself (its inode: `flock`, which SQLite's own
/// `fcntl` locks do not see), before SQLite opens it, so that a second name of
/// the same file (a hard link, which `canonicalize` cannot see through) is
/// refused too. Creates the file when missing (an empty file is an empty
/// database to SQLite).
fn lock_database_file(path: &Path) -> Result<std::fs::File, StorageError> {
    let err = |message: String| StorageError::Open { path: path.to_path_buf(), message };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| err(format!("opening it: {e}")))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::Locked {
            path: path.to_path_buf(),
            holder: "it has this very file open under another name, e.g. a hard link".into(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(err(format!("locking it: {e}"))),
    }
}

fn connect_options(path: &Path, busy_timeout: Duration) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(busy_timeout)
        .foreign_keys(true)
}

impl Storage {
    /// Opens (creating and migrating when needed) the database at `path`,
    /// reads the snapshot, and starts the writer.
    pub async fn open(path: &Path, opts: &StorageOptions, hub: EventHub) -> Result<(Storage, Snapshot), StorageError> {
        let open_err = |e: sqlx::Error| StorageError::Open { path: path.to_path_buf(), message: e.to_string() };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StorageError::Open { path: path.to_path_buf(), message: format!("creating {}: {e}", dir.display()) })?;
        }
        if path.is_dir() {
            return Err(StorageError::Open {
                path: path.to_path_buf(),
                message: "it is a directory; give the path of a database file in it, e.g. study.db".into(),
            });
        }
        refuse_foreign(path, opts.busy_timeout).await?;
        let lock = take_locks(path, None)?;
        let mut conn = SqliteConnection::connect_with(&connect_options(path, opts.busy_timeout)).await.map_err(open_err)?;
        migrate(&mut conn, path).await?;
        let snapshot = {
            let mut tx = conn.begin().await?;
            let snap = load::load(&mut tx).await?;
            tx.commit().await?;
            snap
        };
        let readers = SqlitePoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .connect_with(connect_options(path, opts.busy_timeout).read_only(true).create_if_missing(false))
            .await
            .map_err(open_err)?;
        let (writer, health, task) = writer::spawn(conn, path, hub, opts.max_batch_ops, opts.queue_capacity);
        Ok((
            Storage {
                path: path.to_path_buf(),
                writer,
                health,
                readers,
                writer_task: tokio::sync::Mutex::new(Some(task)),
                lock: std::sync::Mutex::new(Some(lock)),
            },
            snapshot,
        ))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The writer.
    pub fn writer(&self) -> &WriterHandle {
        &self.writer
    }

    /// A receiver that turns `Some(message)` when a write failed for good
    /// (or a change made in memory could not be queued): from then on every
    /// change is refused until a restart.
    pub fn health(&self) -> StorageHealth {
        self.health.clone()
    }

    /// Stored events of a study with `seq > after`, oldest first, at most `limit`.
    pub async fn events_after(&self, study_id: i64, after: u64, limit: u32) -> Result<Vec<Event>, StorageError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT payload_json FROM mnist_events WHERE study_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(study_id)
        .bind(after.min(i64::MAX as u64) as i64)
        .bind(limit as i64)
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().filter_map(|(json,)| serde_json::from_str(&json).ok()).collect())
    }

    /// Stored events of every study with `seq > after`, oldest first, at most
    /// `limit`: the durable feed an outbox (e.g. MLflow delivery) tails with
    /// its own cursor.
    pub async fn events_since(&self, after: u64, limit: u32) -> Result<Vec<Event>, StorageError> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT payload_json FROM mnist_events WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after.min(i64::MAX as u64) as i64)
            .bind(limit as i64)
            .fetch_all(&self.readers)
            .await?;
        Ok(rows.into_iter().filter_map(|(json,)| serde_json::from_str(&json).ok()).collect())
    }

    /// Flushes queued writes, stops the writer and closes the connections.
    pub async fn close(&self) {
        self.writer.close().await;
        if let Some(task) = self.writer_task.lock().await.take() {
            let _ = task.await;
        }
        self.readers.close().await;
        // Another coordinator may take the database from here on.
        if let Ok(mut lock) = self.lock.lock() {
            lock.take();
        }
    }
}

/// Whether the database has Optuna's `version_info` table.
async fn has_version_info(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'version_info'")
        .fetch_optional(&mut *conn)
        .await?;
    Ok(name.is_some())
}

/// The tables that are not ours (`mnist_*`) nor SQLite's. In a database
/// without Optuna's `version_info`, any of them means another program's
/// database (MLflow's `mlflow.db`, say), which must not get our tables.
async fn foreign_tables(conn: &mut SqliteConnection) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'mnist\\_%' ESCAPE '\\' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name LIMIT 4",
    )
    .fetch_all(&mut *conn)
    .await
}

fn foreign_message(tables: &[String]) -> String {
    let names = tables.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ");
    format!(
        "it holds other tables ({names}) but no Optuna `version_info`; it is not an Optuna study database and was \
         left unchanged. Use a new --db path (or an Optuna study database)"
    )
}

/// Refuses an existing file that is another program's database before
/// anything (the lock file, WAL mode, our tables) touches it; read-only.
async fn refuse_foreign(path: &Path, busy_timeout: Duration) -> Result<(), StorageError> {
    if std::fs::metadata(path).map(|m| m.len() == 0).unwrap_or(true) {
        return Ok(());
    }
    let opts = SqliteConnectOptions::new().filename(path).read_only(true).create_if_missing(false).busy_timeout(busy_timeout);
    let open_err = |e: sqlx::Error| StorageError::Open { path: path.to_path_buf(), message: e.to_string() };
    let mut conn = SqliteConnection::connect_with(&opts).await.map_err(open_err)?;
    let foreign = match has_version_info(&mut conn).await.map_err(open_err)? {
        true => Vec::new(),
        false => foreign_tables(&mut conn).await.map_err(open_err)?,
    };
    let _ = conn.close().await;
    match foreign.is_empty() {
        true => Ok(()),
        false => Err(StorageError::Schema { path: path.to_path_buf(), message: foreign_message(&foreign) }),
    }
}

/// Creates Optuna's tables (when the file has none) and the `mnist_` tables,
/// and checks that an existing file has Optuna schema v12.
async fn migrate(conn: &mut SqliteConnection, path: &Path) -> Result<(), StorageError> {
    let schema_err = |message: String| StorageError::Schema { path: path.to_path_buf(), message };
    let mut tx = conn.begin().await?;
    if !has_version_info(&mut tx).await? {
        let foreign = foreign_tables(&mut tx).await?;
        if !foreign.is_empty() {
            return Err(schema_err(foreign_message(&foreign)));
        }
        for ddl in schema::OPTUNA_TABLES {
            sqlx::query(ddl).execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO version_info (version_info_id, schema_version, library_version) VALUES (1, ?, ?)")
            .bind(schema::OPTUNA_SCHEMA_VERSION)
            .bind(schema::OPTUNA_LIBRARY_VERSION)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO alembic_version (version_num) VALUES (?)")
            .bind(schema::OPTUNA_ALEMBIC_HEAD)
            .execute(&mut *tx)
            .await?;
    } else {
        let version: Option<i64> = sqlx::query_scalar("SELECT schema_version FROM version_info WHERE version_info_id = 1")
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
        if version != Some(schema::OPTUNA_SCHEMA_VERSION) {
            return Err(schema_err(format!(
                "version_info.schema_version is {version:?}, expected {}",
                schema::OPTUNA_SCHEMA_VERSION
            )));
        }
        let alembic: Option<String> = sqlx::query_scalar("SELECT version_num FROM alembic_version LIMIT 1")
            .fetch_optional(&mut *tx)
            .await
            .unwrap_or(None);
        if alembic.as_deref() != Some(schema::OPTUNA_ALEMBIC_HEAD) {
            return Err(schema_err(format!(
                "alembic_version is {alembic:?}, expected {:?} (Optuna 3.2 to 5.0); run `optuna storage upgrade` or use a new --db path",
                schema::OPTUNA_ALEMBIC_HEAD
            )));
        }
    }
    for ddl in schema::MNIST_TABLES {
        sqlx::query(ddl).execute(&mut *tx).await?;
    }
    let mnist_version: Option<String> = sqlx::query_scalar("SELECT value FROM mnist_meta WHERE key = 'schema_version'")
        .fetch_optional(&mut *tx)
        .await?;
    match mnist_version.as_deref().map(i64::from_str) {
        None => {
            sqlx::query("INSERT INTO mnist_meta (key, value) VALUES ('schema_version', ?)")
                .bind(schema::MNIST_SCHEMA_VERSION.to_string())
                .execute(&mut *tx)
                .await?;
        }
        Some(Ok(v)) if v == schema::MNIST_SCHEMA_VERSION => {}
        Some(other) => {
            return Err(schema_err(format!(
                "mnist_meta.schema_version is {other:?}, this coordinator understands {}",
                schema::MNIST_SCHEMA_VERSION
            )))
        }
    }
    tx.commit().await?;
    Ok(())
}
