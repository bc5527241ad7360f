//! The stop switch of one running trial, shared by the training thread's
//! hook, the heartbeat task and the slot: the first reason to stop wins, and
//! everyone waiting on it wakes up.

use std::sync::Mutex;

use tokio::sync::watch;

use crate::client::Cancel;

/// Why a trial stops before the trainer finishes on its own.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// The pruner said so: finish the trial as PRUNED, with `value` (the
    /// value reported with the epoch it was pruned at).
    Pruned { value: f64 },
    /// The study was stopped (heartbeat or report answered STOP): release it.
    StudyStopped(String),
    /// The lease is gone (FAILED_PRECONDITION / NOT_FOUND): drop the trial.
    LeaseLost(String),
    /// The worker is shutting down: release the trial.
    Shutdown,
}

/// The switch.
#[derive(Debug)]
pub struct Control {
    reason: Mutex<Option<StopReason>>,
    tx: watch::Sender<bool>,
    /// True once the trial stopped for a reason that ends its lease here
    /// (every reason but a prune).
    lease_end: watch::Sender<bool>,
}

impl Default for Control {
    fn default() -> Self {
        Control { reason: Mutex::new(None), tx: watch::channel(false).0, lease_end: watch::channel(false).0 }
    }
}

impl Control {
    /// Asks the trial to stop; returns false when it was already stopping
    /// (the first reason is kept).
    pub fn stop(&self, why: StopReason) -> bool {
        let mut g = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_some() {
            return false;
        }
        let ends_lease = !matches!(why, StopReason::Pruned { .. });
        *g = Some(why);
        drop(g);
        self.tx.send_replace(true);
        if ends_lease {
            self.lease_end.send_replace(true);
        }
        true
    }

    /// Why the trial is stopping, if it is.
    pub fn reason(&self) -> Option<StopReason> {
        self.reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// True once a reason was set.
    pub fn is_stopped(&self) -> bool {
        *self.tx.borrow()
    }

    /// A receiver that turns true when the trial stops (cancels waiting calls).
    pub fn subscribe(&self) -> Cancel {
        self.tx.subscribe()
    }

    /// A receiver that turns true when the trial stops for any reason but a
    /// prune: a pruned trial still holds its lease (and must renew it) while
    /// it evaluates the test set and writes its artifacts, until it is
    /// completed as PRUNED.
    pub fn subscribe_lease_end(&self) -> Cancel {
        self.lease_end.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins() {
        let c = Control::default();
        let rx = c.subscribe();
        assert!(!c.is_stopped());
        assert!(c.stop(StopReason::Pruned { value: 0.5 }));
        assert!(!c.stop(StopReason::Shutdown));
        assert_eq!(c.reason(), Some(StopReason::Pruned { value: 0.5 }));
        assert!(*rx.borrow());
    }

    #[test]
    fn a_prune_does_not_end_the_lease() {
        let c = Control::default();
        let lease = c.subscribe_lease_end();
        c.stop(StopReason::Pruned { value: 0.5 });
        assert!(c.is_stopped());
        assert!(!*lease.borrow(), "a pruned trial keeps renewing its lease until it is completed");
        c.stop(StopReason::Shutdown);
        assert!(!*lease.borrow(), "the first reason wins: still pruned");
        let c = Control::default();
        let lease = c.subscribe_lease_end();
        c.stop(StopReason::LeaseLost("gone".into()));
        assert!(*lease.borrow());
    }
}
