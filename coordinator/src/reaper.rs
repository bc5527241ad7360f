//! The reaper: a timer task that expires lost leases and ends studies whose
//! timeout has passed, independently of any worker asking for work.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::study::Coordinator;

/// Runs [`Coordinator::reap`] every `interval` until `stop` turns true.
pub fn spawn(coord: Arc<Coordinator>, interval: Duration, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = coord.reap().await {
                        tracing::warn!(error = %e, "the reaper's sweep failed");
                    }
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
    })
}
