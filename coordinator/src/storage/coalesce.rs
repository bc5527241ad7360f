//! Turning a group of ops into few statements.
//!
//! The ops of the hot path (trial rows, parameters, values, intermediate
//! values, attributes, events) are upserts or appends into tables that no
//! other buffered kind touches, so they are collected per kind and written
//! as multi-row statements: a group of a hundred ask/tell cycles costs a
//! handful of statements instead of hundreds. Within a kind the rows keep
//! their order (a later row for the same key wins). Any other op (deletes,
//! study and worker rows) first flushes everything collected so far, so
//! every table still sees its changes in the order the domain made them.
//! Foreign keys are checked at commit (`defer_foreign_keys`), as the order
//! between tables may change.

use sqlx::SqliteConnection;

use super::ops::{self, EventRow, Op, ParamRow, TrialPut};

/// Rows collected per kind.
#[derive(Debug, Default)]
pub struct Coalescer {
    trials: Vec<TrialPut>,
    params: Vec<(i64, ParamRow)>,
    values: Vec<(i64, f64)>,
    intermediate: Vec<(i64, i64, f64)>,
    user_attrs: Vec<(i64, String, String)>,
    system_attrs: Vec<(i64, String, String)>,
    events: Vec<EventRow>,
}

impl Coalescer {
    /// Adds one op: collected when it is of a buffered kind, else executed
    /// after a flush.
    pub async fn push(&mut self, conn: &mut SqliteConnection, op: &Op) -> Result<(), sqlx::Error> {
        match op {
            Op::PutTrial(t) => self.trials.push(t.clone()),
            Op::SetParams { trial_id, params } => self.params.extend(params.iter().map(|p| (*trial_id, p.clone()))),
            Op::SetValue { trial_id, value } => self.values.push((*trial_id, *value)),
            Op::SetIntermediate { trial_id, step, value } => self.intermediate.push((*trial_id, *step, *value)),
            Op::SetUserAttrs { trial_id, attrs } => {
                self.user_attrs.extend(attrs.iter().map(|(k, v)| (*trial_id, k.clone(), v.clone())))
            }
            Op::SetSystemAttr { trial_id, key, value_json } => self.system_attrs.push((*trial_id, key.clone(), value_json.clone())),
            Op::Event { seq, study_id, trial_id, kind, payload_json, created_at_ms } => self.events.push(EventRow {
                seq: *seq,
                study_id: *study_id,
                trial_id: *trial_id,
                kind,
                payload_json: payload_json.clone(),
                created_at_ms: *created_at_ms,
            }),
            other => {
                self.flush(conn).await?;
                other.apply(conn).await?;
            }
        }
        Ok(())
    }

    /// Writes everything collected.
    pub async fn flush(&mut self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        if !self.trials.is_empty() {
            ops::put_trials(conn, &self.trials).await?;
            self.trials.clear();
        }
        if !self.params.is_empty() {
            ops::put_params(conn, &self.params).await?;
            self.params.clear();
        }
        if !self.values.is_empty() {
            ops::put_values(conn, &self.values).await?;
            self.values.clear();
        }
        if !self.intermediate.is_empty() {
            ops::put_intermediate(conn, &self.intermediate).await?;
            self.intermediate.clear();
        }
        if !self.user_attrs.is_empty() {
            ops::put_attrs(conn, "trial_user_attributes", &self.user_attrs).await?;
            self.user_attrs.clear();
        }
        if !self.system_attrs.is_empty() {
            ops::put_attrs(conn, "trial_system_attributes", &self.system_attrs).await?;
            self.system_attrs.clear();
        }
        if !self.events.is_empty() {
            ops::put_events(conn, &self.events).await?;
            self.events.clear();
        }
        Ok(())
    }
}
