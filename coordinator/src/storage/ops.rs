//! The write operations the domain asks of the database, and the SQL that
//! applies each of them. Every statement the coordinator writes is here.
//!
//! An [`Op`] is a plain value: the domain decides what changes (under its
//! lock), hands the ops to the writer in order, and the writer applies a whole
//! group of them in one transaction (see [`super::writer`]).

use sqlx::SqliteConnection;

/// One row of `trial_params`: name, internal value, Optuna `distribution_json`.
#[derive(Debug, Clone)]
pub struct ParamRow {
    pub name: String,
    pub value: f64,
    pub distribution_json: String,
}

/// The whole stored state of one trial (see [`Op::PutTrial`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TrialPut {
    pub trial_id: i64,
    pub study_id: i64,
    pub number: i64,
    /// Optuna's state name.
    pub state: &'static str,
    /// Optuna's naive-UTC datetime text.
    pub datetime_start: Option<String>,
    pub datetime_complete: Option<String>,
    /// The `mnist_trials` columns.
    pub mnist: MnistTrialRow,
}

/// The coordinator's columns of a trial (`mnist_trials`), as written and as
/// loaded back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MnistTrialRow {
    pub retries: i64,
    pub enqueued: bool,
    /// The latest lease's token (kept after the lease ends).
    pub lease_token: Option<i64>,
    /// The live lease's holder, slot and expiry; `None` without a live lease.
    pub lease_holder: Option<String>,
    pub lease_slot: Option<i64>,
    pub lease_expires_ms: Option<i64>,
    pub hostname: Option<String>,
    pub device: Option<String>,
    /// The last failure or re-queue reason.
    pub reason: Option<String>,
}

/// One database change.
#[derive(Debug, Clone)]
pub enum Op {
    /// A new study: `studies`, `study_directions` and `mnist_studies` rows.
    InsertStudy {
        study_id: i64,
        name: String,
        direction: &'static str,
        state: &'static str,
        config_json: String,
        created_at_ms: i64,
        started_at_ms: i64,
    },
    /// The coordinator's view of a study changed (state, limits, clock).
    UpdateStudy {
        study_id: i64,
        state: &'static str,
        end_reason: String,
        config_json: String,
        started_at_ms: i64,
        ended_at_ms: Option<i64>,
    },
    /// Remove a study and everything that hangs off it. The caller raises
    /// the id and event [`Floor`]s in the same batch, so that study and
    /// trial ids and event sequence numbers never repeat even when the newest
    /// study is deleted: a new study must not take over the deleted one's id,
    /// and with it a leftover `study-<id>/` artifact directory. (Lease tokens
    /// need nothing here: their floor is reserved ahead of use.)
    DeleteStudy { study_id: i64 },
    /// Raise a high water mark of `mnist_meta` to `value`: every number up
    /// to it may have been handed out, so the next coordinator on this
    /// database starts above it. A mark never goes down.
    RaiseFloor { floor: Floor, value: i64 },
    /// The current state of a trial: its `trials` row and its
    /// `mnist_trials` row, inserted or replaced as a whole. Every change of
    /// state, lease, retries or reason is written this way, so the rows of
    /// many trials can share one multi-row statement.
    PutTrial(TrialPut),
    /// Insert or replace parameter rows.
    SetParams { trial_id: i64, params: Vec<ParamRow> },
    /// Remove every parameter row of a trial (re-queue with fresh parameters).
    ClearParams { trial_id: i64 },
    /// Insert or replace one intermediate value.
    SetIntermediate { trial_id: i64, step: i64, value: f64 },
    /// Remove every intermediate value of a trial and the rung values
    /// (`completed_rung_*` system attributes) recorded from them: a re-queued
    /// attempt starts over.
    ClearIntermediate { trial_id: i64 },
    /// Insert or replace the objective value (objective 0).
    SetValue { trial_id: i64, value: f64 },
    /// Insert or replace user attributes (`value_json` text).
    SetUserAttrs { trial_id: i64, attrs: Vec<(String, String)> },
    /// Insert or replace one system attribute (`value_json` text).
    SetSystemAttr { trial_id: i64, key: String, value_json: String },
    /// Insert or replace one study system attribute (`value_json` text).
    SetStudySystemAttr { study_id: i64, key: String, value_json: String },
    /// Register or update a worker.
    UpsertWorker {
        worker_id: String,
        hostname: String,
        devices_json: String,
        labels_json: String,
        registered_at_ms: i64,
        last_seen_ms: i64,
    },
    /// Record a stored artifact file.
    InsertArtifact {
        study_id: i64,
        trial_id: i64,
        name: String,
        path: String,
        size_bytes: i64,
        sha256: String,
        content_type: String,
        created_at_ms: i64,
    },
    /// Append one event to the durable event log.
    Event {
        seq: i64,
        study_id: i64,
        trial_id: Option<i64>,
        kind: &'static str,
        payload_json: String,
        created_at_ms: i64,
    },
}

/// Optuna's value type for a trial value (`trial_values.value_type`).
fn value_repr(v: f64) -> (Option<f64>, &'static str) {
    if v == f64::INFINITY {
        (None, "INF_POS")
    } else if v == f64::NEG_INFINITY {
        (None, "INF_NEG")
    } else {
        (Some(v), "FINITE")
    }
}

/// Optuna's intermediate value type (`trial_intermediate_values.intermediate_value_type`).
fn intermediate_repr(v: f64) -> (Option<f64>, &'static str) {
    if v.is_nan() {
        (None, "NAN")
    } else {
        value_repr(v)
    }
}

/// A counter's high water mark in `mnist_meta`: every number up to it may
/// have been used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    StudyId,
    TrialId,
    EventSeq,
    LeaseToken,
}

impl Floor {
    /// Every mark.
    pub const ALL: [Floor; 4] = [Floor::StudyId, Floor::TrialId, Floor::EventSeq, Floor::LeaseToken];

    /// Its `mnist_meta` key.
    pub fn key(self) -> &'static str {
        match self {
            Floor::StudyId => "study_id_floor",
            Floor::TrialId => "trial_id_floor",
            Floor::EventSeq => "event_seq_floor",
            Floor::LeaseToken => "lease_token_floor",
        }
    }

    /// The mark stored under `key`, if it is one.
    pub fn from_key(key: &str) -> Option<Floor> {
        Floor::ALL.into_iter().find(|f| f.key() == key)
    }
}

/// Raises the high water mark `key` to `value` (never lowers it).
async fn raise_floor(conn: &mut SqliteConnection, key: &str, value: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO mnist_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = \
         CASE WHEN CAST(value AS INTEGER) >= CAST(excluded.value AS INTEGER) THEN value ELSE excluded.value END",
    )
    .bind(key)
    .bind(value.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

const TRIAL_CHILD_TABLES: &[&str] = &[
    "trial_params",
    "trial_values",
    "trial_intermediate_values",
    "trial_user_attributes",
    "trial_system_attributes",
    "trial_heartbeats",
];

impl Op {
    /// Executes the op on `conn` (inside the writer's transaction).
    pub async fn apply(&self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        match self {
            Op::InsertStudy { study_id, name, direction, state, config_json, created_at_ms, started_at_ms } => {
                sqlx::query("INSERT INTO studies (study_id, study_name) VALUES (?, ?)")
                    .bind(study_id)
                    .bind(name)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("INSERT INTO study_directions (direction, study_id, objective) VALUES (?, ?, 0)")
                    .bind(direction)
                    .bind(study_id)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(
                    "INSERT INTO mnist_studies (study_id, state, end_reason, config_json, created_at_ms, started_at_ms, ended_at_ms) \
                     VALUES (?, ?, '', ?, ?, ?, NULL)",
                )
                .bind(study_id)
                .bind(state)
                .bind(config_json)
                .bind(created_at_ms)
                .bind(started_at_ms)
                .execute(&mut *conn)
                .await?;
            }
            Op::UpdateStudy { study_id, state, end_reason, config_json, started_at_ms, ended_at_ms } => {
                sqlx::query(
                    "UPDATE mnist_studies SET state = ?, end_reason = ?, config_json = ?, started_at_ms = ?, ended_at_ms = ? \
                     WHERE study_id = ?",
                )
                .bind(state)
                .bind(end_reason)
                .bind(config_json)
                .bind(started_at_ms)
                .bind(ended_at_ms)
                .bind(study_id)
                .execute(&mut *conn)
                .await?;
            }
            Op::DeleteStudy { study_id } => {
                for table in TRIAL_CHILD_TABLES {
                    let sql = format!("DELETE FROM {table} WHERE trial_id IN (SELECT trial_id FROM trials WHERE study_id = ?)");
                    sqlx::query(&sql).bind(study_id).execute(&mut *conn).await?;
                }
                // The study's events stay: the MLflow projection reads them
                // after this commit (it ends the study's runs on
                // STUDY_DELETED, and catches up on what came before).
                for table in [
                    "mnist_trials",
                    "mnist_artifacts",
                    "mnist_studies",
                    "trials",
                    "study_directions",
                    "study_user_attributes",
                    "study_system_attributes",
                    "studies",
                ] {
                    let sql = format!("DELETE FROM {table} WHERE study_id = ?");
                    sqlx::query(&sql).bind(study_id).execute(&mut *conn).await?;
                }
            }
            Op::RaiseFloor { floor, value } => raise_floor(conn, floor.key(), *value).await?,
            Op::PutTrial(t) => put_trials(conn, std::slice::from_ref(t)).await?,
            Op::SetParams { trial_id, params } => {
                let rows: Vec<(i64, ParamRow)> = params.iter().map(|p| (*trial_id, p.clone())).collect();
                put_params(conn, &rows).await?;
            }
            Op::ClearParams { trial_id } => {
                sqlx::query("DELETE FROM trial_params WHERE trial_id = ?").bind(trial_id).execute(&mut *conn).await?;
            }
            Op::SetIntermediate { trial_id, step, value } => put_intermediate(conn, &[(*trial_id, *step, *value)]).await?,
            Op::ClearIntermediate { trial_id } => {
                sqlx::query("DELETE FROM trial_intermediate_values WHERE trial_id = ?")
                    .bind(trial_id)
                    .execute(&mut *conn)
                    .await?;
                // The rung values successive halving recorded from them.
                let rung_keys = format!("{}%", mnist_sampler::pruner::RUNG_KEY_PREFIX.replace('_', "\\_"));
                sqlx::query("DELETE FROM trial_system_attributes WHERE trial_id = ? AND \"key\" LIKE ? ESCAPE '\\'")
                    .bind(trial_id)
                    .bind(rung_keys)
                    .execute(&mut *conn)
                    .await?;
            }
            Op::SetValue { trial_id, value } => put_values(conn, &[(*trial_id, *value)]).await?,
            Op::SetUserAttrs { trial_id, attrs } => {
                let rows: Vec<(i64, String, String)> = attrs.iter().map(|(k, v)| (*trial_id, k.clone(), v.clone())).collect();
                put_attrs(conn, "trial_user_attributes", &rows).await?;
            }
            Op::SetSystemAttr { trial_id, key, value_json } => {
                put_attrs(conn, "trial_system_attributes", &[(*trial_id, key.clone(), value_json.clone())]).await?;
            }
            Op::SetStudySystemAttr { study_id, key, value_json } => {
                sqlx::query(
                    "INSERT INTO study_system_attributes (study_id, \"key\", value_json) VALUES (?, ?, ?) \
                     ON CONFLICT (study_id, \"key\") DO UPDATE SET value_json = excluded.value_json",
                )
                .bind(study_id)
                .bind(key)
                .bind(value_json)
                .execute(&mut *conn)
                .await?;
            }
            Op::UpsertWorker { worker_id, hostname, devices_json, labels_json, registered_at_ms, last_seen_ms } => {
                sqlx::query(
                    "INSERT INTO mnist_workers (worker_id, hostname, devices_json, labels_json, registered_at_ms, last_seen_ms) \
                     VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (worker_id) DO UPDATE SET hostname = excluded.hostname, \
                     devices_json = excluded.devices_json, labels_json = excluded.labels_json, last_seen_ms = excluded.last_seen_ms",
                )
                .bind(worker_id)
                .bind(hostname)
                .bind(devices_json)
                .bind(labels_json)
                .bind(registered_at_ms)
                .bind(last_seen_ms)
                .execute(&mut *conn)
                .await?;
            }
            Op::InsertArtifact { study_id, trial_id, name, path, size_bytes, sha256, content_type, created_at_ms } => {
                sqlx::query(
                    "INSERT INTO mnist_artifacts (study_id, trial_id, name, path, size_bytes, sha256, content_type, created_at_ms) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (trial_id, name) DO UPDATE SET path = excluded.path, \
                     size_bytes = excluded.size_bytes, sha256 = excluded.sha256, content_type = excluded.content_type, \
                     created_at_ms = excluded.created_at_ms",
                )
                .bind(study_id)
                .bind(trial_id)
                .bind(name)
                .bind(path)
                .bind(size_bytes)
                .bind(sha256)
                .bind(content_type)
                .bind(created_at_ms)
                .execute(&mut *conn)
                .await?;
            }
            Op::Event { seq, study_id, trial_id, kind, payload_json, created_at_ms } => {
                let row = EventRow {
                    seq: *seq,
                    study_id: *study_id,
                    trial_id: *trial_id,
                    kind,
                    payload_json: payload_json.clone(),
                    created_at_ms: *created_at_ms,
                };
                put_events(conn, std::slice::from_ref(&row)).await?;
            }
        }
        Ok(())
    }
}


/// Columns of `trials` written by [`Op::PutTrial`].
const TRIAL_COLS: usize = 6;
/// Columns of `mnist_trials` written by [`Op::PutTrial`].
const MNIST_TRIAL_COLS: usize = 11;
/// Rows per multi-row statement, largest first. Only these sizes are used,
/// so the same few SQL texts recur and stay in the prepared-statement cache
/// (re-parsing SQL was the writer's largest cost). 256 rows x 11 columns stays
/// far below SQLite's 32766 bound variables.
const CHUNK_SIZES: [usize; 5] = [256, 64, 16, 4, 1];

/// Splits `rows` into slices whose lengths are all in [`CHUNK_SIZES`].
fn fixed_chunks<T>(rows: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut rest = rows;
    for size in CHUNK_SIZES {
        while rest.len() >= size {
            let (a, b) = rest.split_at(size);
            out.push(a);
            rest = b;
        }
    }
    out
}

fn values_clause(rows: usize, cols: usize) -> String {
    let one = format!("({})", vec!["?"; cols].join(", "));
    vec![one; rows].join(", ")
}

/// Inserts or replaces the `trials` and `mnist_trials` rows of many trials,
/// in order (a later row for the same trial wins).
pub async fn put_trials(conn: &mut SqliteConnection, rows: &[TrialPut]) -> Result<(), sqlx::Error> {
    for chunk in fixed_chunks(rows) {
        let sql = format!(
            "INSERT INTO trials (trial_id, number, study_id, state, datetime_start, datetime_complete) VALUES {} \
             ON CONFLICT (trial_id) DO UPDATE SET number = excluded.number, study_id = excluded.study_id, state = excluded.state, \
             datetime_start = excluded.datetime_start, datetime_complete = excluded.datetime_complete",
            values_clause(chunk.len(), TRIAL_COLS)
        );
        let mut q = sqlx::query(&sql);
        for t in chunk {
            q = q.bind(t.trial_id).bind(t.number).bind(t.study_id).bind(t.state).bind(&t.datetime_start).bind(&t.datetime_complete);
        }
        q.execute(&mut *conn).await?;
        let sql = format!(
            "INSERT INTO mnist_trials (trial_id, study_id, retries, enqueued, lease_token, lease_holder, lease_slot, \
             lease_expires_ms, hostname, device, reason) VALUES {} ON CONFLICT (trial_id) DO UPDATE SET \
             study_id = excluded.study_id, retries = excluded.retries, enqueued = excluded.enqueued, lease_token = excluded.lease_token, \
             lease_holder = excluded.lease_holder, lease_slot = excluded.lease_slot, lease_expires_ms = excluded.lease_expires_ms, \
             hostname = excluded.hostname, device = excluded.device, reason = excluded.reason",
            values_clause(chunk.len(), MNIST_TRIAL_COLS)
        );
        let mut q = sqlx::query(&sql);
        for t in chunk {
            let m = &t.mnist;
            q = q
                .bind(t.trial_id)
                .bind(t.study_id)
                .bind(m.retries)
                .bind(m.enqueued as i64)
                .bind(m.lease_token)
                .bind(&m.lease_holder)
                .bind(m.lease_slot)
                .bind(m.lease_expires_ms)
                .bind(&m.hostname)
                .bind(&m.device)
                .bind(&m.reason);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Inserts or replaces parameter rows of many trials.
pub async fn put_params(conn: &mut SqliteConnection, rows: &[(i64, ParamRow)]) -> Result<(), sqlx::Error> {
    for chunk in fixed_chunks(rows) {
        let sql = format!(
            "INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) VALUES {} \
             ON CONFLICT (trial_id, param_name) DO UPDATE SET param_value = excluded.param_value, \
             distribution_json = excluded.distribution_json",
            values_clause(chunk.len(), 4)
        );
        let mut q = sqlx::query(&sql);
        for (tid, p) in chunk {
            q = q.bind(tid).bind(&p.name).bind(p.value).bind(&p.distribution_json);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Inserts or replaces objective values of many trials.
pub async fn put_values(conn: &mut SqliteConnection, rows: &[(i64, f64)]) -> Result<(), sqlx::Error> {
    for chunk in fixed_chunks(rows) {
        let sql = format!(
            "INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES {} \
             ON CONFLICT (trial_id, objective) DO UPDATE SET value = excluded.value, value_type = excluded.value_type",
            values_clause(chunk.len(), 4)
        );
        let mut q = sqlx::query(&sql);
        for (tid, v) in chunk {
            let (v, ty) = value_repr(*v);
            q = q.bind(tid).bind(0i64).bind(v).bind(ty);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Inserts or replaces intermediate values of many trials.
pub async fn put_intermediate(conn: &mut SqliteConnection, rows: &[(i64, i64, f64)]) -> Result<(), sqlx::Error> {
    for chunk in fixed_chunks(rows) {
        let sql = format!(
            "INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type) VALUES {} \
             ON CONFLICT (trial_id, step) DO UPDATE SET intermediate_value = excluded.intermediate_value, \
             intermediate_value_type = excluded.intermediate_value_type",
            values_clause(chunk.len(), 4)
        );
        let mut q = sqlx::query(&sql);
        for (tid, step, v) in chunk {
            let (v, ty) = intermediate_repr(*v);
            q = q.bind(tid).bind(step).bind(v).bind(ty);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Inserts or replaces attributes (`trial_user_attributes` or
/// `trial_system_attributes`) of many trials.
pub async fn put_attrs(conn: &mut SqliteConnection, table: &'static str, rows: &[(i64, String, String)]) -> Result<(), sqlx::Error> {
    for chunk in fixed_chunks(rows) {
        let sql = format!(
            "INSERT INTO {table} (trial_id, \"key\", value_json) VALUES {} \
             ON CONFLICT (trial_id, \"key\") DO UPDATE SET value_json = excluded.value_json",
            values_clause(chunk.len(), 3)
        );
        let mut q = sqlx::query(&sql);
        for (tid, k, v) in chunk {
            q = q.bind(tid).bind(k).bind(v);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// One row of `mnist_events`.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub seq: i64,
    pub study_id: i64,
    pub trial_id: Option<i64>,
    pub kind: &'static str,
    pub payload_json: String,
    pub created_at_ms: i64,
}

/// Appends events.
pub async fn put_events(conn: &mut SqliteConnection, rows: &[EventRow]) -> Result<(), sqlx::Error> {
    for chunk in fixed_chunks(rows) {
        let sql = format!(
            "INSERT INTO mnist_events (seq, study_id, trial_id, kind, payload_json, created_at_ms) VALUES {}",
            values_clause(chunk.len(), 6)
        );
        let mut q = sqlx::query(&sql);
        for e in chunk {
            q = q.bind(e.seq).bind(e.study_id).bind(e.trial_id).bind(e.kind).bind(&e.payload_json).bind(e.created_at_ms);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_use_fixed_sizes() {
        let v: Vec<u32> = (0..400).collect();
        let sizes: Vec<usize> = fixed_chunks(&v).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![256, 64, 64, 16]);
        let flat: Vec<u32> = fixed_chunks(&v).concat();
        assert_eq!(flat, v);
        assert!(fixed_chunks::<u8>(&[]).is_empty());
        assert_eq!(fixed_chunks(&[1, 2, 3]).len(), 3);
    }
}
