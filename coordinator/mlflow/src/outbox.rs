//! The durable outbox: every MLflow operation is stored in SQLite before it
//! is sent, with the MLflow ids that delivery learns (experiments, runs).
//! All of this crate's SQL lives here.
//!
//! Tables (all prefixed `mnist_mlflow_`, next to Optuna's, which ignore them):
//! - `outbox`: operations in the order they were written; `state` is
//!   `PENDING`, `DONE` or `DEAD` (refused for good, with the reason);
//! - `runs`: our run key → MLflow experiment id, run id, artifact root;
//! - `experiments`: experiment name → id;
//! - `state`: small named values of the writer that feeds the outbox (for
//!   the coordinator, the last study event it turned into operations), kept
//!   in the same transaction as the operations they produced.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::error::MlflowError;
use crate::op::Op;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS mnist_mlflow_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_key TEXT NOT NULL,
        kind TEXT NOT NULL,
        op_json TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'PENDING' CHECK (state IN ('PENDING', 'DONE', 'DEAD')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        done_ms INTEGER)",
    "CREATE INDEX IF NOT EXISTS mnist_mlflow_outbox_pending ON mnist_mlflow_outbox (state, id)",
    "CREATE TABLE IF NOT EXISTS mnist_mlflow_runs (
        run_key TEXT PRIMARY KEY,
        experiment_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        artifact_uri TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS mnist_mlflow_experiments (name TEXT PRIMARY KEY, experiment_id TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS mnist_mlflow_state (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
];

/// The state name of the database's own id (see [`Outbox::uid`]).
const UID_STATE: &str = "outbox.uid";

/// A run that exists in MLflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub run_key: String,
    pub experiment_id: String,
    pub run_id: String,
    pub artifact_uri: String,
}

/// What [`Outbox::retry_dead`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retried {
    /// Refused operations put back in line (some less what was replaced).
    pub resent: u64,
    /// Refused operations that later ones replaced whole: marked delivered.
    pub replaced: u64,
}

/// What is still to deliver.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Backlog {
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
    /// When the oldest pending operation was written.
    pub oldest_pending_ms: Option<i64>,
    /// The last delivery error of a pending operation (why it waits).
    pub last_error: Option<String>,
}

/// A run with operations not delivered yet (pending or refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndeliveredRun {
    pub run_key: String,
    /// Its operations not delivered yet.
    pub operations: u64,
    /// How many of those MLflow refused (`DEAD`); the rest are pending.
    pub refused: u64,
    /// How many of those upload a local file (`Op::Artifact`).
    pub uploads: u64,
}

/// How [`Outbox::open_existing`] opens a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// To look only: the file is opened read-only.
    ReadOnly,
    /// To deliver or prune: rows change; the journal mode is left as it is.
    ReadWrite,
}

/// A stored operation.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: i64,
    pub attempts: u32,
    pub op: Op,
}

/// The outbox in one SQLite database.
#[derive(Debug, Clone)]
pub struct Outbox {
    pool: SqlitePool,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Outbox {
    /// Opens (and creates when missing) the outbox in the database at `path`,
    /// which may be the coordinator's study database.
    pub async fn open(path: &Path) -> Result<Outbox, MlflowError> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new().max_connections(2).connect_with(opts).await?;
        let ob = Outbox { pool };
        ob.migrate().await?;
        Ok(ob)
    }

    /// Opens the outbox of an existing database without creating the file,
    /// switching its journal mode, or adding tables to a file that is not
    /// an outbox: a file without our `mnist_mlflow_outbox` table (MLflow's
    /// own `mlflow.db`, say) is refused with [`MlflowError::NotAnOutbox`]
    /// and left unchanged. With [`Access::ReadWrite`], tables of a newer
    /// outbox schema missing from an older outbox are added.
    pub async fn open_existing(path: &Path, access: Access) -> Result<Outbox, MlflowError> {
        let not = |why: String| MlflowError::NotAnOutbox { path: path.display().to_string(), why };
        if !path.exists() {
            return Err(not("there is no such file".into()));
        }
        if !path.is_file() {
            return Err(not("it is not a file".into()));
        }
        let mut opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .read_only(access == Access::ReadOnly)
            .busy_timeout(Duration::from_secs(30));
        if access == Access::ReadWrite {
            opts = opts.synchronous(SqliteSynchronous::Normal);
        }
        // SQLite reads the header only at the first statement: "file is not a
        // database" may come from the connection's set-up or from the query.
        let not_sqlite = |e: sqlx::Error| {
            let notadb = e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "26")
                || e.to_string().contains("file is not a database");
            if notadb {
                not("it is not an SQLite database".into())
            } else {
                MlflowError::Db(e)
            }
        };
        let pool = SqlitePoolOptions::new().max_connections(2).connect_with(opts).await.map_err(not_sqlite)?;
        let found: Option<String> =
            match sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'mnist_mlflow_outbox'")
                .fetch_optional(&pool)
                .await
            {
                Ok(found) => found,
                Err(e) => {
                    pool.close().await;
                    return Err(not_sqlite(e));
                }
            };
        if found.is_none() {
            pool.close().await;
            return Err(not("it has no mnist_mlflow_outbox table".into()));
        }
        let ob = Outbox { pool };
        if access == Access::ReadWrite {
            ob.migrate().await?;
        }
        Ok(ob)
    }

    async fn migrate(&self) -> Result<(), MlflowError> {
        let mut tx = self.pool.begin().await?;
        for stmt in SCHEMA {
            sqlx::query(stmt).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Appends operations, in order, in one transaction.
    pub async fn enqueue(&self, ops: &[Op]) -> Result<(), MlflowError> {
        self.enqueue_with_state(ops, &[]).await
    }

    /// Appends operations and sets (`Some`) or removes (`None`) named state
    /// values in one transaction, so a writer that records "done up to here"
    /// never loses or repeats work. State entries apply in order.
    pub async fn enqueue_with_state(&self, ops: &[Op], state: &[(&str, Option<String>)]) -> Result<(), MlflowError> {
        let now = now_ms();
        let rows = ops
            .iter()
            .map(|op| serde_json::to_string(op).map(|json| (op, json)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| MlflowError::Corrupt { id: 0, message: e.to_string() })?;
        let mut tx = self.pool.begin().await?;
        // Multi-row inserts in a few fixed sizes (so the statements stay
        // cached): a busy coordinator writes thousands of operations a second.
        let mut rest = &rows[..];
        while !rest.is_empty() {
            let n = [64usize, 16, 4, 1].into_iter().find(|&n| n <= rest.len()).unwrap_or(1);
            let (chunk, tail) = rest.split_at(n);
            let sql = format!(
                "INSERT INTO mnist_mlflow_outbox (run_key, kind, op_json, created_ms) VALUES {}",
                vec!["(?, ?, ?, ?)"; n].join(", ")
            );
            let mut q = sqlx::query(&sql);
            for (op, json) in chunk {
                q = q.bind(op.run_key()).bind(op.kind()).bind(json.as_str()).bind(now);
            }
            q.execute(&mut *tx).await?;
            rest = tail;
        }
        for (name, value) in state {
            match value {
                Some(value) => {
                    sqlx::query(
                        "INSERT INTO mnist_mlflow_state (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    )
                    .bind(*name)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM mnist_mlflow_state WHERE name = ?").bind(*name).execute(&mut *tx).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// A named state value.
    pub async fn state(&self, name: &str) -> Result<Option<String>, MlflowError> {
        let row = sqlx::query("SELECT value FROM mnist_mlflow_state WHERE name = ?").bind(name).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Named state values whose name starts with `prefix`.
    pub async fn states(&self, prefix: &str) -> Result<Vec<(String, String)>, MlflowError> {
        let rows = sqlx::query("SELECT name, value FROM mnist_mlflow_state WHERE substr(name, 1, length(?)) = ? ORDER BY name")
            .bind(prefix)
            .bind(prefix)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| (r.get::<String, _>(0), r.get::<String, _>(1))).collect())
    }

    /// This database's own id: random, made the first time it is asked for
    /// and kept (state `outbox.uid`). Run keys carry it, so two databases that
    /// send to one MLflow server never share a run.
    pub async fn uid(&self) -> Result<String, MlflowError> {
        let fresh = uuid::Uuid::new_v4().simple().to_string();
        sqlx::query("INSERT OR IGNORE INTO mnist_mlflow_state (name, value) VALUES (?, ?)")
            .bind(UID_STATE)
            .bind(&fresh)
            .execute(&self.pool)
            .await?;
        self.state(UID_STATE)
            .await?
            .ok_or_else(|| MlflowError::Corrupt { id: 0, message: format!("state {UID_STATE:?} vanished after it was written") })
    }

    /// The refused (`DEAD`) uploads of `run_key` under artifact folder `dir`,
    /// as (artifact path, reason).
    pub async fn refused_uploads(&self, run_key: &str, dir: &str) -> Result<Vec<(String, String)>, MlflowError> {
        let rows = sqlx::query(
            "SELECT op_json, COALESCE(last_error, '') FROM mnist_mlflow_outbox WHERE run_key = ? AND kind = 'artifact' AND state = 'DEAD' ORDER BY id",
        )
        .bind(run_key)
        .fetch_all(&self.pool)
        .await?;
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        Ok(rows
            .into_iter()
            .filter_map(|r| match serde_json::from_str::<Op>(&r.get::<String, _>(0)) {
                Ok(Op::Artifact { path, .. }) if path.starts_with(&prefix) => Some((path, r.get::<String, _>(1))),
                _ => None,
            })
            .collect())
    }

    /// The oldest pending operations, at most `limit`.
    pub async fn pending(&self, limit: u32) -> Result<Vec<Entry>, MlflowError> {
        let rows = sqlx::query("SELECT id, attempts, op_json FROM mnist_mlflow_outbox WHERE state = 'PENDING' ORDER BY id LIMIT ?")
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| {
                let id: i64 = r.get(0);
                let attempts: i64 = r.get(1);
                let json: String = r.get(2);
                let op = serde_json::from_str(&json).map_err(|e| MlflowError::Corrupt { id, message: e.to_string() })?;
                Ok(Entry { id, attempts: attempts.max(0) as u32, op })
            })
            .collect()
    }

    /// Marks an operation delivered.
    pub async fn mark_done(&self, id: i64) -> Result<(), MlflowError> {
        sqlx::query("UPDATE mnist_mlflow_outbox SET state = 'DONE', done_ms = ?, attempts = attempts + 1 WHERE id = ?")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a failed attempt that will be retried.
    pub async fn record_failure(&self, id: i64, error: &str) -> Result<(), MlflowError> {
        sqlx::query("UPDATE mnist_mlflow_outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?")
            .bind(error)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks an operation refused for good, with the reason.
    pub async fn mark_dead(&self, id: i64, error: &str) -> Result<(), MlflowError> {
        sqlx::query("UPDATE mnist_mlflow_outbox SET state = 'DEAD', attempts = attempts + 1, last_error = ?, done_ms = ? WHERE id = ?")
            .bind(error)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes every refused operation (what MLflow will never take, once
    /// the user has read why). Returns how many went.
    pub async fn delete_dead(&self) -> Result<u64, MlflowError> {
        let r = sqlx::query("DELETE FROM mnist_mlflow_outbox WHERE state = 'DEAD'").execute(&self.pool).await?;
        Ok(r.rows_affected())
    }

    /// Puts every refused operation back in line (after the cause was fixed),
    /// in its old place, less what operations written after it replaced (see
    /// [`Op::without_superseded`]): a refused tag or status sent after a
    /// newer one would set the run back. One with nothing left is marked
    /// delivered, with the reason.
    pub async fn retry_dead(&self) -> Result<Retried, MlflowError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT id, state, op_json FROM mnist_mlflow_outbox
             WHERE run_key IN (SELECT run_key FROM mnist_mlflow_outbox WHERE state = 'DEAD') ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut ops = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.get(0);
            let state: String = r.get(1);
            let json: String = r.get(2);
            let op: Op = serde_json::from_str(&json).map_err(|e| MlflowError::Corrupt { id, message: e.to_string() })?;
            ops.push((id, state == "DEAD", op));
        }
        let mut retried = Retried::default();
        for (i, (id, dead, op)) in ops.iter().enumerate() {
            if !dead {
                continue;
            }
            match op.without_superseded(ops[i + 1..].iter().map(|(_, _, later)| later)) {
                Some(left) => {
                    let json = serde_json::to_string(&left).map_err(|e| MlflowError::Corrupt { id: *id, message: e.to_string() })?;
                    sqlx::query("UPDATE mnist_mlflow_outbox SET state = 'PENDING', done_ms = NULL, op_json = ?, kind = ? WHERE id = ?")
                        .bind(json)
                        .bind(left.kind())
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    retried.resent += 1;
                }
                None => {
                    sqlx::query("UPDATE mnist_mlflow_outbox SET state = 'DONE', done_ms = ?, last_error = ? WHERE id = ?")
                        .bind(now_ms())
                        .bind("not resent: later operations replaced all of it")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    retried.replaced += 1;
                }
            }
        }
        tx.commit().await?;
        Ok(retried)
    }

    /// Up to `limit` of the runs this outbox created, the latest first.
    pub async fn latest_runs(&self, limit: u32) -> Result<Vec<RunRecord>, MlflowError> {
        let rows = sqlx::query("SELECT run_key, experiment_id, run_id, artifact_uri FROM mnist_mlflow_runs ORDER BY rowid DESC LIMIT ?")
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| RunRecord { run_key: r.get(0), experiment_id: r.get(1), run_id: r.get(2), artifact_uri: r.get(3) }).collect())
    }

    /// The MLflow run of `run_key`, once created.
    pub async fn run(&self, run_key: &str) -> Result<Option<RunRecord>, MlflowError> {
        let row = sqlx::query("SELECT run_key, experiment_id, run_id, artifact_uri FROM mnist_mlflow_runs WHERE run_key = ?")
            .bind(run_key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| RunRecord { run_key: r.get(0), experiment_id: r.get(1), run_id: r.get(2), artifact_uri: r.get(3) }))
    }

    /// Every MLflow run whose key starts with `prefix`.
    pub async fn runs(&self, prefix: &str) -> Result<Vec<RunRecord>, MlflowError> {
        let rows = sqlx::query(
            "SELECT run_key, experiment_id, run_id, artifact_uri FROM mnist_mlflow_runs WHERE substr(run_key, 1, length(?)) = ? ORDER BY run_key",
        )
        .bind(prefix)
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| RunRecord { run_key: r.get(0), experiment_id: r.get(1), run_id: r.get(2), artifact_uri: r.get(3) }).collect())
    }

    /// Remembers the MLflow run of `run_key`.
    pub async fn save_run(&self, rec: &RunRecord) -> Result<(), MlflowError> {
        sqlx::query("INSERT OR REPLACE INTO mnist_mlflow_runs (run_key, experiment_id, run_id, artifact_uri) VALUES (?, ?, ?, ?)")
            .bind(&rec.run_key)
            .bind(&rec.experiment_id)
            .bind(&rec.run_id)
            .bind(&rec.artifact_uri)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The id of experiment `name`, once known.
    pub async fn experiment(&self, name: &str) -> Result<Option<String>, MlflowError> {
        let row = sqlx::query("SELECT experiment_id FROM mnist_mlflow_experiments WHERE name = ?").bind(name).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Remembers the id of experiment `name`.
    pub async fn save_experiment(&self, name: &str, id: &str) -> Result<(), MlflowError> {
        sqlx::query("INSERT OR REPLACE INTO mnist_mlflow_experiments (name, experiment_id) VALUES (?, ?)")
            .bind(name)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets a cached experiment id (the experiment was deleted in MLflow).
    pub async fn forget_experiment(&self, name: &str) -> Result<(), MlflowError> {
        sqlx::query("DELETE FROM mnist_mlflow_experiments WHERE name = ?").bind(name).execute(&self.pool).await?;
        Ok(())
    }

    /// Deletes delivered (`DONE`) operations finished before `before_ms`;
    /// pending and refused ones are kept, and so are the run and experiment
    /// ids (delivery stays idempotent without the delivered rows). Returns how
    /// many rows went.
    pub async fn prune_delivered(&self, before_ms: i64) -> Result<u64, MlflowError> {
        let r = sqlx::query("DELETE FROM mnist_mlflow_outbox WHERE state = 'DONE' AND done_ms < ?")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// The runs with operations not delivered yet (pending or refused), in
    /// the order their first such operation was written.
    pub async fn undelivered_runs(&self) -> Result<Vec<UndeliveredRun>, MlflowError> {
        let rows = sqlx::query(
            "SELECT run_key, COUNT(*), COALESCE(SUM(state = 'DEAD'), 0), COALESCE(SUM(kind = 'artifact'), 0)
             FROM mnist_mlflow_outbox WHERE state != 'DONE' GROUP BY run_key ORDER BY MIN(id)",
        )
        .fetch_all(&self.pool)
        .await?;
        let n = |r: &sqlx::sqlite::SqliteRow, i: usize| r_i64(r, i).max(0) as u64;
        Ok(rows
            .into_iter()
            .map(|r| UndeliveredRun { run_key: r.get(0), operations: n(&r, 1), refused: n(&r, 2), uploads: n(&r, 3) })
            .collect())
    }

    /// Counts of pending, delivered and refused operations.
    pub async fn backlog(&self) -> Result<Backlog, MlflowError> {
        let row = sqlx::query(
            "SELECT
                COALESCE(SUM(state = 'PENDING'), 0),
                COALESCE(SUM(state = 'DONE'), 0),
                COALESCE(SUM(state = 'DEAD'), 0),
                MIN(CASE WHEN state = 'PENDING' THEN created_ms END),
                (SELECT last_error FROM mnist_mlflow_outbox WHERE state = 'PENDING' AND last_error IS NOT NULL ORDER BY id LIMIT 1)
             FROM mnist_mlflow_outbox",
        )
        .fetch_one(&self.pool)
        .await?;
        let n = |i: usize| r_i64(&row, i).max(0) as u64;
        Ok(Backlog { pending: n(0), delivered: n(1), dead: n(2), oldest_pending_ms: row.get(3), last_error: row.get(4) })
    }

    /// The operations refused for good, newest last: (id, kind, run key, reason).
    pub async fn dead(&self, limit: u32) -> Result<Vec<(i64, String, String, String)>, MlflowError> {
        let rows = sqlx::query(
            "SELECT id, kind, run_key, COALESCE(last_error, '') FROM mnist_mlflow_outbox WHERE state = 'DEAD' ORDER BY id DESC LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<_> = rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
        out.reverse();
        Ok(out)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn r_i64(row: &sqlx::sqlite::SqliteRow, i: usize) -> i64 {
    row.try_get::<i64, _>(i).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::RunStatus;

    fn op(key: &str) -> Op {
        Op::SetStatus { run_key: key.into(), status: RunStatus::Finished, end_ms: None, metrics: vec![], tags: vec![] }
    }

    #[tokio::test]
    async fn operations_keep_their_order_and_state_changes_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&dir.path().join("o.db")).await.unwrap();
        let ops: Vec<Op> = (0..150).map(|i| op(&format!("r{i}"))).collect();
        ob.enqueue_with_state(&ops, &[("a", Some("1".into())), ("a", None), ("a", Some("2".into())), ("b", Some("x".into())), ("b", None)])
            .await
            .unwrap();
        assert_eq!(ob.state("a").await.unwrap().as_deref(), Some("2"), "set, cleared, set again: set");
        assert_eq!(ob.state("b").await.unwrap(), None, "set then cleared: gone");
        let pending = ob.pending(1000).await.unwrap();
        let keys: Vec<&str> = pending.iter().map(|e| e.op.run_key()).collect();
        assert_eq!(keys, (0..150).map(|i| format!("r{i}")).collect::<Vec<_>>().iter().map(String::as_str).collect::<Vec<_>>());
        ob.mark_done(pending[0].id).await.unwrap();
        ob.record_failure(pending[1].id, "down").await.unwrap();
        ob.mark_dead(pending[2].id, "refused").await.unwrap();
        let b = ob.backlog().await.unwrap();
        assert_eq!((b.pending, b.delivered, b.dead), (148, 1, 1));
        assert_eq!(b.last_error.as_deref(), Some("down"));
        assert_eq!(ob.retry_dead().await.unwrap(), Retried { resent: 1, replaced: 0 });
        assert_eq!(ob.backlog().await.unwrap().pending, 149);
    }

    #[tokio::test]
    async fn a_retry_resends_refused_operations_in_place_less_what_later_ones_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&dir.path().join("o.db")).await.unwrap();
        let tags = |key: &str, v: &str| Op::Log { run_key: key.into(), metrics: vec![], params: vec![], tags: vec![("best".into(), v.into())] };
        let param = |key: &str| Op::Log { run_key: key.into(), metrics: vec![], params: vec![("lr".into(), "1".into())], tags: vec![("best".into(), "0".into())] };
        ob.enqueue(&[param("a"), tags("a", "1"), tags("a", "2"), tags("b", "1"), op("a")]).await.unwrap();
        let p = ob.pending(10).await.unwrap();
        ob.mark_dead(p[0].id, "param lr refused").await.unwrap();
        ob.mark_done(p[1].id).await.unwrap();
        ob.mark_dead(p[2].id, "refused").await.unwrap();
        ob.mark_dead(p[3].id, "refused").await.unwrap();
        ob.mark_done(p[4].id).await.unwrap();

        assert_eq!(ob.retry_dead().await.unwrap(), Retried { resent: 3, replaced: 0 });
        let again = ob.pending(10).await.unwrap();
        let ids: Vec<i64> = again.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![p[0].id, p[2].id, p[3].id], "back in their old places");
        let want = Op::Log { run_key: "a".into(), metrics: vec![], params: vec![("lr".into(), "1".into())], tags: vec![] };
        assert_eq!(again[0].op, want, "a's old tag was set again later: only the param goes again");
        assert_eq!(again[1].op, tags("a", "2"), "the newest value of a's tag goes again");
        assert_eq!(again[2].op, tags("b", "1"), "another run's tag is not replaced by a's");

        // Everything in it replaced: not sent, marked delivered.
        for e in &again {
            ob.mark_dead(e.id, "refused").await.unwrap();
        }
        ob.enqueue(&[tags("b", "3")]).await.unwrap();
        assert_eq!(ob.retry_dead().await.unwrap(), Retried { resent: 2, replaced: 1 });
        let b = ob.backlog().await.unwrap();
        assert_eq!((b.pending, b.dead), (3, 0), "a's two and b's newest; b's old one done");
    }

    #[tokio::test]
    async fn undelivered_runs_count_their_uploads_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&dir.path().join("o.db")).await.unwrap();
        let upload = |key: &str, n: u32| Op::Artifact { run_key: key.into(), path: format!("f{n}"), file: format!("/tmp/f{n}") };
        ob.enqueue(&[op("a"), upload("a", 1), upload("a", 2), op("b"), upload("c", 3)]).await.unwrap();
        let pending = ob.pending(10).await.unwrap();
        ob.mark_done(pending[0].id).await.unwrap();
        ob.mark_dead(pending[1].id, "refused").await.unwrap();
        ob.mark_done(pending[3].id).await.unwrap();
        let runs = ob.undelivered_runs().await.unwrap();
        let want = vec![
            UndeliveredRun { run_key: "a".into(), operations: 2, refused: 1, uploads: 2 },
            UndeliveredRun { run_key: "c".into(), operations: 1, refused: 0, uploads: 1 },
        ];
        assert_eq!(runs, want, "b was delivered; a and c wait, in the order they were written");
    }
}
