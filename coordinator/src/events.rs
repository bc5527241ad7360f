//! Study events: what happened, numbered by a coordinator-wide sequence.
//!
//! The domain creates an [`Event`] for every change it makes, in the same
//! write batch as the change; the storage writer appends it to `mnist_events`
//! in that transaction and, once committed, publishes it on the [`EventHub`]
//! (a broadcast channel). `WatchStudy` replays stored events and then follows
//! the hub, so a watcher sees every committed event exactly once, in order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mnist_sampler::{Choice, TrialState};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::study::{Counts, HolderView, StudyState};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    StudyCreated,
    StudyStopped,
    StudyResumed,
    StudyCompleted,
    StudyDeleted,
    TrialEnqueued,
    TrialStarted,
    TrialReported,
    TrialCompleted,
    TrialPruned,
    TrialFailed,
    TrialRequeued,
    ArtifactStored,
}

impl EventKind {
    /// The text stored in `mnist_events.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::StudyCreated => "STUDY_CREATED",
            EventKind::StudyStopped => "STUDY_STOPPED",
            EventKind::StudyResumed => "STUDY_RESUMED",
            EventKind::StudyCompleted => "STUDY_COMPLETED",
            EventKind::StudyDeleted => "STUDY_DELETED",
            EventKind::TrialEnqueued => "TRIAL_ENQUEUED",
            EventKind::TrialStarted => "TRIAL_STARTED",
            EventKind::TrialReported => "TRIAL_REPORTED",
            EventKind::TrialCompleted => "TRIAL_COMPLETED",
            EventKind::TrialPruned => "TRIAL_PRUNED",
            EventKind::TrialFailed => "TRIAL_FAILED",
            EventKind::TrialRequeued => "TRIAL_REQUEUED",
            EventKind::ArtifactStored => "ARTIFACT_STORED",
        }
    }
}

/// One event, as stored (`mnist_events.payload_json`) and streamed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub kind: EventKind,
    pub study_id: i64,
    pub study_name: String,
    pub time_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_number: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_state: Option<TrialState>,
    /// NaN and infinities are stored as the strings "NaN", "Infinity" and
    /// "-Infinity" (JSON has no such numbers), so a replay equals the live event.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "lenient_f64")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub counts: Counts,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "lenient_f64")]
    pub best_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_trial_number: Option<u64>,
    pub study_state: StudyState,
    pub n_trials: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<(String, Choice)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<HolderView>,
    /// `TRIAL_FAILED` only: the trial failed while WAITING, before this
    /// attempt ran (its parameters could not be sampled or give an invalid
    /// training configuration); `params` then holds what it had.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub before_start: bool,
}

/// Serde for an `Option<f64>` that may be NaN or infinite: those travel as
/// strings; `null` (what events stored before this encoding hold) reads as
/// `None`.
mod lenient_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    use mnist_sampler::pyjson::{non_finite_from_name, non_finite_name};

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(x) => match non_finite_name(*x) {
                Some(name) => s.serialize_str(name),
                None => s.serialize_f64(*x),
            },
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        F(f64),
        S(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        match Option::<Num>::deserialize(d)? {
            None => Ok(None),
            Some(Num::F(f)) => Ok(Some(f)),
            Some(Num::S(s)) => non_finite_from_name(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a number"))),
        }
    }
}

/// Capacity of the live event channel; a watcher that falls further behind
/// catches up from the database.
pub const HUB_CAPACITY: usize = 4096;

/// The live side of the event log: committed events, in order.
#[derive(Debug, Clone)]
pub struct EventHub {
    tx: broadcast::Sender<Arc<Event>>,
    /// The `seq` of the last event published (0: none yet), or committed
    /// before this process started ([`EventHub::mark_published`]).
    published: Arc<AtomicU64>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    /// A hub with [`HUB_CAPACITY`] buffered events.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(HUB_CAPACITY);
        EventHub { tx, published: Arc::new(AtomicU64::new(0)) }
    }

    /// Publishes a committed event (no receivers is fine). Events are
    /// published in `seq` order (the one writer publishes them in the order
    /// the domain numbered them).
    pub fn publish(&self, ev: Arc<Event>) {
        self.published.fetch_max(ev.seq, Ordering::SeqCst);
        let _ = self.tx.send(ev);
    }

    /// Records that every event up to `seq` was published before this hub
    /// existed (the events a previous process committed): a live-only watch
    /// then starts after them, not at 0, and does not replay them should it
    /// lag. Call it before anything subscribes.
    pub fn mark_published(&self, seq: u64) {
        self.published.fetch_max(seq, Ordering::SeqCst);
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// A receiver of every event published from now on, and the `seq` it
    /// starts after: every event up to it was published before the
    /// subscription (the receiver may still get some of them), every later
    /// one reaches the receiver (or makes it lag).
    pub fn subscribe_at(&self) -> (broadcast::Receiver<Arc<Event>>, u64) {
        let rx = self.tx.subscribe();
        (rx, self.published.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct W {
        #[serde(default, skip_serializing_if = "Option::is_none", with = "super::lenient_f64")]
        v: Option<f64>,
    }

    #[test]
    fn non_finite_values_survive_the_stored_json() {
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.5, 1e300] {
            let json = serde_json::to_string(&W { v: Some(x) }).unwrap();
            let back: W = serde_json::from_str(&json).unwrap();
            let y = back.v.expect("a value");
            assert!(y == x || (x.is_nan() && y.is_nan()), "{x} -> {json} -> {y}");
        }
        assert_eq!(serde_json::to_string(&W { v: Some(f64::NEG_INFINITY) }).unwrap(), r#"{"v":"-Infinity"}"#);
        // Events stored before: null, or no field at all.
        assert!(serde_json::from_str::<W>(r#"{"v":null}"#).unwrap().v.is_none());
        assert!(serde_json::from_str::<W>("{}").unwrap().v.is_none());
        assert!(serde_json::from_str::<W>(r#"{"v":"x"}"#).is_err());
    }
}
