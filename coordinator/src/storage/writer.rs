//! The single database writer: group commit.
//!
//! All writes go through one task that owns one SQLite connection. Callers
//! submit a [`Batch`] (the ops of one domain change, in order) without
//! waiting, then await its [`Pending`] acknowledgement. The task takes every
//! batch that is queued (up to `max_batch` ops), applies them in submission
//! order inside one transaction, commits, and only then acknowledges each
//! batch and publishes its events. So:
//!
//! - an RPC answers only after its change is committed (WAL, `synchronous =
//!   NORMAL`: a committed transaction survives `kill -9` of the process);
//! - under load, many changes share one commit (the throughput lever);
//! - the order of changes on disk is the order the domain made them.
//!
//! When a group fails, it is retried, then each batch is retried on its own so
//! only the failing change reports an error. A batch that still fails marks
//! the storage as failed ([`StorageHealth`]): the in-memory state is then
//! ahead of the database, and the server shuts down so that a restart reloads
//! the truth (crash-only recovery).

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot, watch};

use super::coalesce::Coalescer;
use super::ops::Op;
use super::StorageError;
use crate::events::{Event, EventHub, EventKind};

/// The ops of one domain change and the events they produce.
#[derive(Debug, Default)]
pub struct Batch {
    pub ops: Vec<Op>,
    /// Events with their stored JSON (serialised by the caller, off the
    /// writer's critical path).
    pub events: Vec<(Arc<Event>, String)>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends an op.
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }
    /// Appends an event (stored in the same transaction, published after it).
    pub fn push_event(&mut self, ev: Event) {
        let json = serde_json::to_string(&ev).unwrap_or_else(|_| "{}".into());
        self.events.push((Arc::new(ev), json));
    }
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

enum Msg {
    Batch(Batch, oneshot::Sender<Result<(), StorageError>>),
    Close(oneshot::Sender<()>),
}

/// Waits for a submitted batch to be committed.
#[derive(Debug)]
pub struct Pending(Option<oneshot::Receiver<Result<(), StorageError>>>);

impl Pending {
    /// Nothing to wait for (an empty batch).
    pub fn done() -> Self {
        Pending(None)
    }

    /// Resolves once the batch is committed (or failed).
    pub async fn wait(self) -> Result<(), StorageError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx.await.unwrap_or(Err(StorageError::Closed)),
        }
    }
}

/// Whether the storage is healthy; `Some(message)` once a write failed for good.
pub type StorageHealth = watch::Receiver<Option<String>>;

/// The sending side of the writer.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Batch(b, _) => write!(f, "Batch({} ops)", b.ops.len()),
            Msg::Close(_) => f.write_str("Close"),
        }
    }
}

impl WriterHandle {
    /// Queues a batch without waiting (callable under a lock). Fails when the
    /// queue is full (`queue_capacity` batches) or the writer is gone.
    pub fn submit(&self, batch: Batch) -> Result<Pending, StorageError> {
        if batch.is_empty() && batch.events.is_empty() {
            return Ok(Pending::done());
        }
        let (ack, rx) = oneshot::channel();
        match self.tx.try_send(Msg::Batch(batch, ack)) {
            Ok(()) => Ok(Pending(Some(rx))),
            Err(mpsc::error::TrySendError::Full(_)) => Err(StorageError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(StorageError::Closed),
        }
    }

    /// Flushes everything queued so far and stops the writer.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the writer task on `conn`.
pub fn spawn(
    conn: SqliteConnection,
    hub: EventHub,
    max_batch_ops: usize,
    queue_capacity: usize,
) -> (WriterHandle, StorageHealth, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(queue_capacity.max(1));
    let (health_tx, health_rx) = watch::channel(None);
    let task = tokio::spawn(run(conn, rx, hub, max_batch_ops.max(1), health_tx));
    (WriterHandle { tx }, health_rx, task)
}

async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Msg>,
    hub: EventHub,
    max_batch_ops: usize,
    health: watch::Sender<Option<String>>,
) {
    let mut close_ack: Option<oneshot::Sender<()>> = None;
    while close_ack.is_none() {
        let Some(first) = rx.recv().await else { break };
        let mut group: Vec<(Batch, oneshot::Sender<Result<(), StorageError>>)> = Vec::new();
        let mut n_ops = 0;
        let take = |m: Msg, group: &mut Vec<_>, n_ops: &mut usize| match m {
            Msg::Batch(b, ack) => {
                *n_ops += b.ops.len();
                group.push((b, ack));
                None
            }
            Msg::Close(ack) => Some(ack),
        };
        close_ack = take(first, &mut group, &mut n_ops);
        while close_ack.is_none() && n_ops < max_batch_ops {
            match rx.try_recv() {
                Ok(m) => close_ack = take(m, &mut group, &mut n_ops),
                Err(_) => break,
            }
        }
        if group.is_empty() {
            continue;
        }
        let batches: Vec<&Batch> = group.iter().map(|(b, _)| b).collect();
        let results = commit_group(&mut conn, &batches).await;
        for ((batch, ack), result) in group.into_iter().zip(results) {
            match result {
                Ok(()) => {
                    for (ev, _) in batch.events {
                        hub.publish(ev);
                    }
                    let _ = ack.send(Ok(()));
                }
                Err(e) => {
                    let msg = e.to_string();
                    tracing::error!(error = %msg, "a database write failed; the coordinator must restart to reload its state");
                    let _ = health.send(Some(msg.clone()));
                    let _ = ack.send(Err(StorageError::WriteFailed(msg)));
                }
            }
        }
    }
    // Drain what was queued before the close, so nothing acknowledged is lost.
    rx.close();
    while let Some(m) = rx.recv().await {
        if let Msg::Batch(b, ack) = m {
            let res = commit_group(&mut conn, &[&b]).await;
            let res = res.into_iter().next().unwrap_or(Err(StorageError::Closed));
            if res.is_ok() {
                for (ev, _) in b.events {
                    hub.publish(ev);
                }
            }
            let _ = ack.send(res);
        }
    }
    let _ = conn.close().await;
    if let Some(ack) = close_ack {
        let _ = ack.send(());
    }
}

/// Applies a group in one transaction (retried twice); on failure, each batch
/// alone. Returns one result per batch.
async fn commit_group(conn: &mut SqliteConnection, all: &[&Batch]) -> Vec<Result<(), StorageError>> {
    let mut last_err = None;
    for attempt in 0..3u64 {
        match apply(conn, all).await {
            Ok(()) => return all.iter().map(|_| Ok(())).collect(),
            Err(e) => {
                tracing::warn!(error = %e, attempt, "database write failed, retrying");
                last_err = Some(e);
                tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
            }
        }
    }
    if all.len() == 1 {
        let e = last_err.map(|e| e.to_string()).unwrap_or_default();
        return vec![Err(StorageError::WriteFailed(e))];
    }
    let mut out = Vec::with_capacity(all.len());
    for b in all {
        out.push(apply(conn, &[*b]).await.map_err(|e| StorageError::WriteFailed(e.to_string())));
    }
    out
}

async fn apply(conn: &mut SqliteConnection, batches: &[&Batch]) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query("PRAGMA defer_foreign_keys = ON").execute(&mut *tx).await?;
    let mut co = Coalescer::default();
    for b in batches {
        for op in &b.ops {
            co.push(&mut tx, op).await?;
        }
        for (ev, json) in b.events.iter().filter(|(e, _)| e.kind != EventKind::StudyDeleted) {
            let op = Op::Event {
                seq: ev.seq as i64,
                study_id: ev.study_id,
                trial_id: ev.trial_id,
                kind: ev.kind.as_str(),
                payload_json: json.clone(),
                created_at_ms: ev.time_ms,
            };
            co.push(&mut tx, &op).await?;
        }
    }
    co.flush(&mut tx).await?;
    tx.commit().await
}
