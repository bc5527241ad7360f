//! The heartbeat task of one running trial: renews the lease every
//! `heartbeat_interval_ms` on its own task (training never delays it), and
//! flips the trial's [`Control`] when the coordinator answers STOP (the
//! study was stopped) or says the lease is gone. It runs until the trial's
//! final call: a pruned trial still evaluates the test set and writes its
//! artifacts before it is completed as PRUNED, and its lease must not expire
//! meanwhile (the trial would be re-queued and trained again).

use std::sync::Arc;
use std::time::Duration;

use mnist_proto::v1 as pb;

use crate::client::{cancelled, request, CallError, Client};
use crate::control::{Control, StopReason};

/// Renews the lease of `trial_id` until the trial stops for a reason other
/// than a prune (or the task is aborted after the trial's final call).
pub async fn run(client: Client, trial_id: i64, token: u64, worker_id: String, interval: Duration, control: Arc<Control>) {
    let mut cancel = control.subscribe_lease_end();
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
                if control.stop(StopReason::StudyStopped(resp.message.clone())) {
                    tracing::info!(trial_id, message = %resp.message, "the study was stopped; stopping the trial");
                    return;
                }
                // Already pruned: it is being completed as PRUNED; keep its
                // lease until then.
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
