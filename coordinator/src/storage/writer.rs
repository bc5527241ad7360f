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
//! When a group fails, it is retried, then its batches are applied one by one
//! in order, so the batches before the failing one still commit. A batch that
//! still fails marks the storage as failed ([`StorageHealth`]): the in-memory
//! state is then ahead of the database, and later batches may depend on the
//! lost one (a trial number after a trial that is not there, the lease of a
//! trial that was never written), so from then on the writer refuses every
//! batch ([`StorageError::Failed`]) instead of committing it, and the server
//! shuts down so that a restart reloads the truth (crash-only recovery).
//!
//! A change reserves its place in the queue ([`WriterHandle::reserve`])
//! before it touches the state in memory, so a full queue or a failed
//! storage refuses the change while nothing has changed yet.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot, watch};

use super::coalesce::Coalescer;
use super::ops::Op;
use super::StorageError;
use crate::events::{Event, EventHub};

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

    /// Already failed with `e`.
    fn failed(e: StorageError) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Err(e));
        Pending(Some(rx))
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

/// The storage's health, shared by the writer task and its handles: `None`
/// while healthy; once a write failed for good (or a change was lost), why.
/// It never turns back to healthy: only a restart does.
#[derive(Debug)]
struct Health {
    tx: watch::Sender<Option<String>>,
    /// The database file, for the messages.
    path: PathBuf,
}

impl Health {
    /// The failure, when there was one.
    fn failure(&self) -> Option<String> {
        self.tx.borrow().clone()
    }

    /// Records the first failure (later ones only follow from it) and logs it.
    fn fail(&self, why: String) {
        let first = self.tx.send_if_modified(|h| {
            if h.is_some() {
                return false;
            }
            *h = Some(why.clone());
            true
        });
        if first {
            tracing::error!(
                db = %self.path.display(),
                error = %why,
                "a write to the study database failed for good; the coordinator refuses every change from now on and must be restarted to reload its state"
            );
        }
    }

    /// The error for a change refused because of an earlier failure.
    fn refused(&self, why: String) -> StorageError {
        StorageError::Failed { path: self.path.clone(), message: why }
    }
}

/// The sending side of the writer.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Msg>,
    health: Arc<Health>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Batch(b, _) => write!(f, "Batch({} ops)", b.ops.len()),
            Msg::Close(_) => f.write_str("Close"),
        }
    }
}

/// A place in the writer's queue, taken before a change touches the state in
/// memory (see [`WriterHandle::reserve`]). Dropping it unused gives the place
/// back.
#[derive(Debug)]
pub struct Reservation<'a> {
    permit: mpsc::Permit<'a, Msg>,
}

impl Reservation<'_> {
    /// Queues the change's batch in the reserved place (an empty batch is not
    /// sent: there is nothing to wait for).
    pub fn submit(self, batch: Batch) -> Pending {
        if batch.is_empty() && batch.events.is_empty() {
            return Pending::done();
        }
        self.send(batch)
    }

    /// Queues an empty batch that is acknowledged once every batch queued
    /// before it is committed, and fails when one of them failed: for an
    /// answer that reads state which earlier, still uncommitted batches wrote.
    pub fn barrier(self) -> Pending {
        self.send(Batch::new())
    }

    fn send(self, batch: Batch) -> Pending {
        let (ack, rx) = oneshot::channel();
        self.permit.send(Msg::Batch(batch, ack));
        Pending(Some(rx))
    }
}

/// A place in the writer's queue taken only once a change turns out to be
/// needed, for a call that often changes nothing (a heartbeat, an idle ask):
/// a full queue then refuses it only when it would change something. Call
/// [`LazyReservation::take`] before the first change in memory.
#[derive(Debug)]
pub struct LazyReservation<'a> {
    writer: &'a WriterHandle,
    slot: Option<Reservation<'a>>,
}

impl<'a> LazyReservation<'a> {
    /// Takes the place unless it is taken already (see
    /// [`WriterHandle::reserve`]): call it before changing anything; when it
    /// fails, nothing must change.
    pub fn take(&mut self) -> Result<(), StorageError> {
        if self.slot.is_none() {
            self.slot = Some(self.writer.reserve()?);
        }
        Ok(())
    }

    /// Queues the change's batch in the place taken; without one, there is
    /// nothing to wait for (nothing was changed, so the batch is empty).
    pub fn submit(self, batch: Batch) -> Pending {
        let empty = batch.is_empty() && batch.events.is_empty();
        debug_assert!(self.slot.is_some() || empty, "a change was made without a place in the write queue");
        match self.slot {
            Some(r) => r.submit(batch),
            None if empty => Pending::done(),
            None => {
                // A change made without taking the place first (a bug): it is
                // in memory already, so one that cannot be queued is lost and
                // the storage must be marked failed.
                match self.writer.reserve() {
                    Ok(r) => r.submit(batch),
                    Err(e) => {
                        if matches!(e, StorageError::Overloaded) {
                            self.writer.health.fail(format!("a change made in memory could not be queued for writing: {e}"));
                        }
                        Pending::failed(e)
                    }
                }
            }
        }
    }

    /// Takes the place if needed and queues a barrier in it (see
    /// [`Reservation::barrier`]).
    pub fn barrier(self) -> Result<Pending, StorageError> {
        let slot = match self.slot {
            Some(r) => r,
            None => self.writer.reserve()?,
        };
        Ok(slot.barrier())
    }
}

impl WriterHandle {
    /// A place in the queue, taken only when a change turns out to be
    /// needed (see [`LazyReservation`]); takes nothing yet.
    pub fn reserve_lazily(&self) -> LazyReservation<'_> {
        LazyReservation { writer: self, slot: None }
    }

    /// Takes a place in the queue for one change, without waiting (callable
    /// under a lock). Take it before changing the state in memory: it fails
    /// when the queue is full (`queue_capacity` batches; retry), when a write
    /// failed for good earlier (the coordinator must restart), or when the
    /// writer is gone, and then nothing must change.
    pub fn reserve(&self) -> Result<Reservation<'_>, StorageError> {
        if let Some(why) = self.health.failure() {
            return Err(self.health.refused(why));
        }
        match self.tx.try_reserve() {
            Ok(permit) => Ok(Reservation { permit }),
            Err(mpsc::error::TrySendError::Full(())) => Err(StorageError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(())) => Err(StorageError::Closed),
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

/// Starts the writer task on `conn`, the connection to the database at `path`.
pub fn spawn(
    conn: SqliteConnection,
    path: &Path,
    hub: EventHub,
    max_batch_ops: usize,
    queue_capacity: usize,
) -> (WriterHandle, StorageHealth, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(queue_capacity.max(1));
    let (health_tx, health_rx) = watch::channel(None);
    let health = Arc::new(Health { tx: health_tx, path: path.to_path_buf() });
    let task = tokio::spawn(run(conn, rx, hub, max_batch_ops.max(1), health.clone()));
    (WriterHandle { tx, health }, health_rx, task)
}

type Ack = oneshot::Sender<Result<(), StorageError>>;

async fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Msg>, hub: EventHub, max_batch_ops: usize, health: Arc<Health>) {
    let mut close_ack: Option<oneshot::Sender<()>> = None;
    while close_ack.is_none() {
        let Some(first) = rx.recv().await else { break };
        let mut group: Vec<(Batch, Ack)> = Vec::new();
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
        write_group(&mut conn, group, &hub, &health).await;
    }
    // Drain what was queued before the close, so nothing acknowledged is lost.
    rx.close();
    while let Some(m) = rx.recv().await {
        if let Msg::Batch(b, ack) = m {
            write_group(&mut conn, vec![(b, ack)], &hub, &health).await;
        }
    }
    let _ = conn.close().await;
    if let Some(ack) = close_ack {
        let _ = ack.send(());
    }
}

/// Commits a group (unless the storage failed before), then acknowledges each
/// batch and publishes the events of the committed ones. The first batch that
/// fails for good marks the storage as failed, and every batch after it is
/// refused.
async fn write_group(conn: &mut SqliteConnection, group: Vec<(Batch, Ack)>, hub: &EventHub, health: &Health) {
    if group.is_empty() {
        return;
    }
    let results = match health.failure() {
        Some(why) => group.iter().map(|_| Err(health.refused(why.clone()))).collect(),
        None => {
            let batches: Vec<&Batch> = group.iter().map(|(b, _)| b).collect();
            commit_group(conn, &batches, health).await
        }
    };
    for ((batch, ack), result) in group.into_iter().zip(results) {
        if result.is_ok() {
            for (ev, _) in batch.events {
                hub.publish(ev);
            }
        }
        let _ = ack.send(result);
    }
}

/// Applies a group in one transaction (retried twice); on failure, each batch
/// alone, in order, up to the first that fails: that one fails the storage,
/// and the ones after it are refused (they may depend on it). Returns one
/// result per batch.
async fn commit_group(conn: &mut SqliteConnection, all: &[&Batch], health: &Health) -> Vec<Result<(), StorageError>> {
    let mut last_err = String::new();
    for attempt in 0..3u64 {
        match apply(conn, all).await {
            Ok(()) => return all.iter().map(|_| Ok(())).collect(),
            Err(e) => {
                tracing::warn!(error = %e, attempt, "database write failed, retrying");
                last_err = e.to_string();
                tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
            }
        }
    }
    let mut out = Vec::with_capacity(all.len());
    for b in all {
        if let Some(why) = health.failure() {
            out.push(Err(health.refused(why)));
            continue;
        }
        let res = if all.len() == 1 { Err(std::mem::take(&mut last_err)) } else { apply(conn, &[*b]).await.map_err(|e| e.to_string()) };
        out.push(res.map_err(|why| {
            health.fail(why.clone());
            StorageError::WriteFailed { path: health.path.clone(), message: why }
        }));
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
        for (ev, json) in &b.events {
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
