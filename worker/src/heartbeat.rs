//! The heartbeat task of one running trial: renews the lease every
//! `heartbeat_interval_ms` on its own task (training never delays it), and
//! flips the trial's [`Control`] when the coordinator answers STOP (the
//! study was stopped) or says the lease is gone.

use std::sync::Arc;
use std::time::Duration;

use mnist_proto::v1 as pb;

use crate::client::{cancelled, request, CallError, Client};
use crate::control::{Control, StopReason};

/// Renews the lease of `trial_id` until the trial stops.
pub async fn run(client: Client, trial_id: i64, token: u64, worker_id: String, interval: Duration, control: Arc<Control>) {
    let mut cancel = control.subscribe();
    let interval = interval.max(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = cancelled(Some(&mut cancel)) => return,
        }
        let req = pb::HeartbeatRequest { trial_id, lease_token: token, worker_id: worker_id.clone() };
        let r = client
            .retry("Heartbeat", Some(&mut cancel), None, |c| {
                let req = req.clone();
                async move { c.worker().heartbeat(request(req, Duration::from_secs(10))).await }
            })
            .await;
        match r {
            Ok(resp) if resp.action == pb::HeartbeatAction::Stop as i32 => {
                tracing::info!(trial_id, message = %resp.message, "the study was stopped; stopping the trial");
                control.stop(StopReason::StudyStopped(resp.message));
                return;
            }
            Ok(_) => {}
            Err(CallError::Lost(s)) => {
                tracing::warn!(trial_id, "the lease is gone ({}); dropping the trial", s.message());
                control.stop(StopReason::LeaseLost(s.message().to_string()));
                return;
            }
            Err(CallError::Cancelled) => return,
            Err(e) => tracing::warn!(trial_id, "heartbeat refused: {e}"),
        }
    }
}
