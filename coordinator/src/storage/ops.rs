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
    /// Remove a study and everything that hangs off it. The counters' high
    /// water marks are kept in `mnist_meta`, so that event sequence numbers
    /// and lease tokens never repeat even when the newest study is deleted.
    DeleteStudy { study_id: i64, event_seq_floor: i64, lease_token_floor: i64 },
    /// A new trial row (`trials` + `mnist_trials`), optionally with Optuna's
    /// `fixed_params` system attribute (enqueued trials).
    InsertTrial {
        trial_id: i64,
        study_id: i64,
        number: i64,
        state: &'static str,
        datetime_start: Option<String>,
        enqueued: bool,
        fixed_params_json: Option<String>,
    },
    /// `trials.state` and its datetimes.
    SetTrialState {
        trial_id: i64,
        state: &'static str,
        datetime_start: Option<String>,
        datetime_complete: Option<String>,
    },
    /// Insert or replace parameter rows.
    SetParams { trial_id: i64, params: Vec<ParamRow> },
    /// Remove every parameter row of a trial (re-queue with fresh parameters).
    ClearParams { trial_id: i64 },
    /// Insert or replace one intermediate value.
    SetIntermediate { trial_id: i64, step: i64, value: f64 },
    /// Remove every intermediate value of a trial (a re-queued attempt starts over).
    ClearIntermediate { trial_id: i64 },
    /// Insert or replace the objective value (objective 0).
    SetValue { trial_id: i64, value: f64 },
    /// Insert or replace user attributes (`value_json` text).
    SetUserAttrs { trial_id: i64, attrs: Vec<(String, String)> },
    /// Insert or replace one system attribute (`value_json` text).
    SetSystemAttr { trial_id: i64, key: String, value_json: String },
    /// A new lease on a trial.
    SetLease {
        trial_id: i64,
        token: i64,
        holder: String,
        slot: i64,
        expires_ms: i64,
        hostname: Option<String>,
        device: Option<String>,
    },
    /// The lease ended (finished, re-queued); the token is kept so that the
    /// last holder can still upload artifacts.
    EndLease { trial_id: i64 },
    /// Retry count and the last failure / re-queue reason.
    SetTrialMeta { trial_id: i64, retries: i64, reason: Option<String> },
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
            Op::DeleteStudy { study_id, event_seq_floor, lease_token_floor } => {
                for (key, value) in [("event_seq_floor", event_seq_floor), ("lease_token_floor", lease_token_floor)] {
                    sqlx::query(
                        "INSERT INTO mnist_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    )
                    .bind(key)
                    .bind(value.to_string())
                    .execute(&mut *conn)
                    .await?;
                }
                for table in TRIAL_CHILD_TABLES {
                    let sql = format!("DELETE FROM {table} WHERE trial_id IN (SELECT trial_id FROM trials WHERE study_id = ?)");
                    sqlx::query(&sql).bind(study_id).execute(&mut *conn).await?;
                }
                for table in [
                    "mnist_trials",
                    "mnist_artifacts",
                    "mnist_events",
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
            Op::InsertTrial { trial_id, study_id, number, state, datetime_start, enqueued, fixed_params_json } => {
                sqlx::query(
                    "INSERT INTO trials (trial_id, number, study_id, state, datetime_start, datetime_complete) \
                     VALUES (?, ?, ?, ?, ?, NULL)",
                )
                .bind(trial_id)
                .bind(number)
                .bind(study_id)
                .bind(state)
                .bind(datetime_start)
                .execute(&mut *conn)
                .await?;
                sqlx::query("INSERT INTO mnist_trials (trial_id, study_id, enqueued) VALUES (?, ?, ?)")
                    .bind(trial_id)
                    .bind(study_id)
                    .bind(*enqueued as i64)
                    .execute(&mut *conn)
                    .await?;
                if let Some(json) = fixed_params_json {
                    upsert_attr(conn, "trial_system_attributes", *trial_id, "fixed_params", json).await?;
                }
            }
            Op::SetTrialState { trial_id, state, datetime_start, datetime_complete } => {
                sqlx::query("UPDATE trials SET state = ?, datetime_start = ?, datetime_complete = ? WHERE trial_id = ?")
                    .bind(state)
                    .bind(datetime_start)
                    .bind(datetime_complete)
                    .bind(trial_id)
                    .execute(&mut *conn)
                    .await?;
            }
            Op::SetParams { trial_id, params } => {
                // One multi-row statement per trial; SQLite allows 32766 bound
                // variables, far above 4 x any realistic parameter count, but
                // chunk anyway.
                for chunk in params.chunks(200) {
                    let mut sql = String::from(
                        "INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) VALUES ",
                    );
                    for i in 0..chunk.len() {
                        sql.push_str(if i == 0 { "(?, ?, ?, ?)" } else { ", (?, ?, ?, ?)" });
                    }
                    sql.push_str(
                        " ON CONFLICT (trial_id, param_name) DO UPDATE SET param_value = excluded.param_value, \
                         distribution_json = excluded.distribution_json",
                    );
                    let mut q = sqlx::query(&sql);
                    for p in chunk {
                        q = q.bind(trial_id).bind(&p.name).bind(p.value).bind(&p.distribution_json);
                    }
                    q.execute(&mut *conn).await?;
                }
            }
            Op::ClearParams { trial_id } => {
                sqlx::query("DELETE FROM trial_params WHERE trial_id = ?").bind(trial_id).execute(&mut *conn).await?;
            }
            Op::SetIntermediate { trial_id, step, value } => {
                let (v, ty) = intermediate_repr(*value);
                sqlx::query(
                    "INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type) \
                     VALUES (?, ?, ?, ?) ON CONFLICT (trial_id, step) DO UPDATE SET \
                     intermediate_value = excluded.intermediate_value, intermediate_value_type = excluded.intermediate_value_type",
                )
                .bind(trial_id)
                .bind(step)
                .bind(v)
                .bind(ty)
                .execute(&mut *conn)
                .await?;
            }
            Op::ClearIntermediate { trial_id } => {
                sqlx::query("DELETE FROM trial_intermediate_values WHERE trial_id = ?")
                    .bind(trial_id)
                    .execute(&mut *conn)
                    .await?;
            }
            Op::SetValue { trial_id, value } => {
                let (v, ty) = value_repr(*value);
                sqlx::query(
                    "INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES (?, 0, ?, ?) \
                     ON CONFLICT (trial_id, objective) DO UPDATE SET value = excluded.value, value_type = excluded.value_type",
                )
                .bind(trial_id)
                .bind(v)
                .bind(ty)
                .execute(&mut *conn)
                .await?;
            }
            Op::SetUserAttrs { trial_id, attrs } => {
                for (k, v) in attrs {
                    upsert_attr(conn, "trial_user_attributes", *trial_id, k, v).await?;
                }
            }
            Op::SetSystemAttr { trial_id, key, value_json } => {
                upsert_attr(conn, "trial_system_attributes", *trial_id, key, value_json).await?;
            }
            Op::SetLease { trial_id, token, holder, slot, expires_ms, hostname, device } => {
                sqlx::query(
                    "UPDATE mnist_trials SET lease_token = ?, lease_holder = ?, lease_slot = ?, lease_expires_ms = ?, \
                     hostname = ?, device = ? WHERE trial_id = ?",
                )
                .bind(token)
                .bind(holder)
                .bind(slot)
                .bind(expires_ms)
                .bind(hostname)
                .bind(device)
                .bind(trial_id)
                .execute(&mut *conn)
                .await?;
            }
            Op::EndLease { trial_id } => {
                sqlx::query(
                    "UPDATE mnist_trials SET lease_holder = NULL, lease_slot = NULL, lease_expires_ms = NULL WHERE trial_id = ?",
                )
                .bind(trial_id)
                .execute(&mut *conn)
                .await?;
            }
            Op::SetTrialMeta { trial_id, retries, reason } => {
                sqlx::query("UPDATE mnist_trials SET retries = ?, reason = ? WHERE trial_id = ?")
                    .bind(retries)
                    .bind(reason)
                    .bind(trial_id)
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
                sqlx::query(
                    "INSERT INTO mnist_events (seq, study_id, trial_id, kind, payload_json, created_at_ms) VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(seq)
                .bind(study_id)
                .bind(trial_id)
                .bind(kind)
                .bind(payload_json)
                .bind(created_at_ms)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }
}

async fn upsert_attr(
    conn: &mut SqliteConnection,
    table: &'static str,
    trial_id: i64,
    key: &str,
    value_json: &str,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO {table} (trial_id, \"key\", value_json) VALUES (?, ?, ?) \
         ON CONFLICT (trial_id, \"key\") DO UPDATE SET value_json = excluded.value_json"
    );
    sqlx::query(&sql).bind(trial_id).bind(key).bind(value_json).execute(&mut *conn).await?;
    Ok(())
}
