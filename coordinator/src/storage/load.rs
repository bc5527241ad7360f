//! Reading the whole database at start-up into plain rows, which the domain
//! turns into its in-memory view (`study::Coordinator::open`).
//!
//! Only studies that have a `mnist_studies` row are the coordinator's; other
//! studies in the file (created by Optuna itself) are listed by name and left
//! alone.

use std::collections::HashMap;

use sqlx::SqliteConnection;

/// A managed study.
#[derive(Debug, Clone)]
pub struct StudyRow {
    pub study_id: i64,
    pub name: String,
    pub direction: String,
    pub state: String,
    pub end_reason: String,
    pub config_json: String,
    pub created_at_ms: i64,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    /// The pruner's kept state (study system attribute [`PRUNER_STATE_KEY`]).
    pub pruner_state_json: Option<String>,
}

/// The study system attribute holding the pruner's state between decisions
/// (`mnist_sampler::PrunerState` as JSON); Optuna ignores it.
pub const PRUNER_STATE_KEY: &str = "mnist:pruner_state";

pub use super::ops::MnistTrialRow;

/// A trial of a managed study with everything hanging off it.
#[derive(Debug, Clone, Default)]
pub struct TrialRow {
    pub trial_id: i64,
    pub study_id: i64,
    pub number: i64,
    pub state: String,
    pub datetime_start: Option<String>,
    pub datetime_complete: Option<String>,
    /// (name, internal value, distribution_json)
    pub params: Vec<(String, f64, String)>,
    pub value: Option<f64>,
    /// (step, value); NaN for Optuna's NAN type.
    pub intermediate: Vec<(i64, f64)>,
    /// (key, value_json)
    pub user_attrs: Vec<(String, String)>,
    /// (key, value_json)
    pub system_attrs: Vec<(String, String)>,
    pub mnist: MnistTrialRow,
}

/// A registered worker.
#[derive(Debug, Clone)]
pub struct WorkerRow {
    pub worker_id: String,
    pub hostname: String,
    pub devices_json: String,
    pub labels_json: String,
    pub registered_at_ms: i64,
    pub last_seen_ms: i64,
}

/// Everything the coordinator needs to rebuild its state.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub studies: Vec<StudyRow>,
    /// Trials of managed studies, ordered by (study_id, number).
    pub trials: Vec<TrialRow>,
    pub workers: Vec<WorkerRow>,
    /// Names of studies in the file that the coordinator does not manage.
    pub foreign_studies: Vec<String>,
    /// The largest study id stored, or the floor a deleted study left.
    pub max_study_id: i64,
    /// The largest trial id stored, or the floor a deleted study left.
    pub max_trial_id: i64,
    /// The largest lease token stored, or the floor of the tokens a
    /// previous coordinator reserved, whichever is larger.
    pub max_lease_token: i64,
    pub max_event_seq: i64,
}

fn stored_value(v: Option<f64>, ty: &str) -> f64 {
    match ty {
        "INF_POS" => f64::INFINITY,
        "INF_NEG" => f64::NEG_INFINITY,
        "NAN" => f64::NAN,
        _ => v.unwrap_or(f64::NAN),
    }
}

/// Reads the snapshot (call inside a read transaction for consistency).
#[allow(clippy::type_complexity)]
pub async fn load(conn: &mut SqliteConnection) -> Result<Snapshot, sqlx::Error> {
    let mut snap = Snapshot::default();
    type Row = (i64, String, Option<String>, Option<String>, Option<String>, Option<String>, Option<i64>, Option<i64>, Option<i64>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT s.study_id, s.study_name, d.direction, m.state, m.end_reason, m.config_json, \
         m.created_at_ms, m.started_at_ms, m.ended_at_ms, a.value_json \
         FROM studies s LEFT JOIN study_directions d ON d.study_id = s.study_id AND d.objective = 0 \
         LEFT JOIN mnist_studies m ON m.study_id = s.study_id \
         LEFT JOIN study_system_attributes a ON a.study_id = s.study_id AND a.\"key\" = ? ORDER BY s.study_id",
    )
    .bind(PRUNER_STATE_KEY)
    .fetch_all(&mut *conn)
    .await?;
    for (study_id, name, direction, state, end_reason, config_json, created, started, ended, pruner_state_json) in rows {
        snap.max_study_id = snap.max_study_id.max(study_id);
        match (state, config_json) {
            (Some(state), Some(config_json)) => snap.studies.push(StudyRow {
                study_id,
                name,
                direction: direction.unwrap_or_else(|| "MAXIMIZE".into()),
                state,
                end_reason: end_reason.unwrap_or_default(),
                config_json,
                created_at_ms: created.unwrap_or(0),
                started_at_ms: started.unwrap_or(0),
                ended_at_ms: ended,
                pruner_state_json,
            }),
            _ => snap.foreign_studies.push(name),
        }
    }

    let trial_rows: Vec<(i64, i64, Option<i64>, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT t.trial_id, t.study_id, t.number, t.state, t.datetime_start, t.datetime_complete FROM trials t \
         JOIN mnist_studies m ON m.study_id = t.study_id ORDER BY t.study_id, t.number, t.trial_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut index: HashMap<i64, usize> = HashMap::with_capacity(trial_rows.len());
    for (trial_id, study_id, number, state, start, complete) in trial_rows {
        index.insert(trial_id, snap.trials.len());
        snap.trials.push(TrialRow {
            trial_id,
            study_id,
            number: number.unwrap_or(-1),
            state,
            datetime_start: start,
            datetime_complete: complete,
            ..Default::default()
        });
    }
    let max_trial: Option<i64> = sqlx::query_scalar("SELECT MAX(trial_id) FROM trials").fetch_one(&mut *conn).await?;
    snap.max_trial_id = max_trial.unwrap_or(0);

    let params: Vec<(i64, Option<String>, Option<f64>, Option<String>)> =
        sqlx::query_as("SELECT trial_id, param_name, param_value, distribution_json FROM trial_params ORDER BY param_id")
            .fetch_all(&mut *conn)
            .await?;
    for (tid, name, value, dist) in params {
        if let (Some(&i), Some(name), Some(value), Some(dist)) = (index.get(&tid), name, value, dist) {
            snap.trials[i].params.push((name, value, dist));
        }
    }
    let values: Vec<(i64, Option<f64>, String)> =
        sqlx::query_as("SELECT trial_id, value, value_type FROM trial_values WHERE objective = 0")
            .fetch_all(&mut *conn)
            .await?;
    for (tid, v, ty) in values {
        if let Some(&i) = index.get(&tid) {
            snap.trials[i].value = Some(stored_value(v, &ty));
        }
    }
    let inter: Vec<(i64, i64, Option<f64>, String)> = sqlx::query_as(
        "SELECT trial_id, step, intermediate_value, intermediate_value_type FROM trial_intermediate_values ORDER BY trial_id, step",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (tid, step, v, ty) in inter {
        if let Some(&i) = index.get(&tid) {
            snap.trials[i].intermediate.push((step, stored_value(v, &ty)));
        }
    }
    for (table, system) in [("trial_user_attributes", false), ("trial_system_attributes", true)] {
        let sql = format!("SELECT trial_id, \"key\", value_json FROM {table}");
        let attrs: Vec<(i64, Option<String>, Option<String>)> = sqlx::query_as(&sql).fetch_all(&mut *conn).await?;
        for (tid, k, v) in attrs {
            if let (Some(&i), Some(k), Some(v)) = (index.get(&tid), k, v) {
                if system {
                    snap.trials[i].system_attrs.push((k, v));
                } else {
                    snap.trials[i].user_attrs.push((k, v));
                }
            }
        }
    }
    let mrows: Vec<(i64, i64, i64, Option<i64>, Option<String>, Option<i64>, Option<i64>, Option<String>, Option<String>, Option<String>)> =
        sqlx::query_as(
            "SELECT trial_id, retries, enqueued, lease_token, lease_holder, lease_slot, lease_expires_ms, hostname, device, reason \
             FROM mnist_trials",
        )
        .fetch_all(&mut *conn)
        .await?;
    for (tid, retries, enqueued, token, holder, slot, expires, hostname, device, reason) in mrows {
        snap.max_lease_token = snap.max_lease_token.max(token.unwrap_or(0));
        if let Some(&i) = index.get(&tid) {
            snap.trials[i].mnist = MnistTrialRow {
                retries,
                enqueued: enqueued != 0,
                lease_token: token,
                lease_holder: holder,
                lease_slot: slot,
                lease_expires_ms: expires,
                hostname,
                device,
                reason,
            };
        }
    }
    let workers: Vec<(String, String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT worker_id, hostname, devices_json, labels_json, registered_at_ms, last_seen_ms FROM mnist_workers ORDER BY worker_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    snap.workers = workers
        .into_iter()
        .map(|(worker_id, hostname, devices_json, labels_json, registered_at_ms, last_seen_ms)| WorkerRow {
            worker_id,
            hostname,
            devices_json,
            labels_json,
            registered_at_ms,
            last_seen_ms,
        })
        .collect();
    let max_seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM mnist_events").fetch_one(&mut *conn).await?;
    snap.max_event_seq = max_seq.unwrap_or(0);
    let meta: Vec<(String, String)> = sqlx::query_as("SELECT key, value FROM mnist_meta").fetch_all(&mut *conn).await?;
    for (k, v) in meta {
        let n = v.parse::<i64>().unwrap_or(0);
        use super::ops::Floor;
        match Floor::from_key(&k) {
            Some(Floor::StudyId) => snap.max_study_id = snap.max_study_id.max(n),
            Some(Floor::TrialId) => snap.max_trial_id = snap.max_trial_id.max(n),
            Some(Floor::EventSeq) => snap.max_event_seq = snap.max_event_seq.max(n),
            Some(Floor::LeaseToken) => snap.max_lease_token = snap.max_lease_token.max(n),
            None => {}
        }
    }
    Ok(snap)
}
