//! The coordinator side of the trainer's per-epoch hook: reports the
//! study's metric (`ReportIntermediate`, step = 0-based epoch, the other
//! epoch metrics alongside) and turns the answer into the hook's decision.
//! It runs on the training thread through `Handle::block_on`; while the
//! coordinator is unreachable it retries with backoff, so training waits at
//! the epoch boundary instead of running ahead of the pruner.

use std::sync::Arc;
use std::time::Duration;

use mnist_proto::v1 as pb;
use mnist_trainer::{EpochMetrics, HookAction};

use crate::client::{request, CallError, Client};
use crate::control::{Control, StopReason};
use crate::objective::{epoch_metrics, Objective};

/// Reports one trial's epochs.
#[derive(Debug)]
pub struct Reporter {
    /// The connection.
    pub client: Client,
    /// The trial.
    pub trial_id: i64,
    /// Its trial number (for logs).
    pub number: u64,
    /// Its lease token.
    pub token: u64,
    /// Which number to report.
    pub objective: Objective,
    /// The trial's stop switch.
    pub control: Arc<Control>,
}

impl Reporter {
    /// Reports epoch `m` and says whether to go on.
    pub async fn report(&mut self, m: &EpochMetrics) -> HookAction {
        if self.control.is_stopped() {
            return HookAction::Stop;
        }
        let value = self.objective.epoch_value(m);
        let req = pb::ReportIntermediateRequest {
            trial_id: self.trial_id,
            lease_token: self.token,
            step: u64::from(m.epoch.saturating_sub(1)),
            value,
            metrics: epoch_metrics(m),
        };
        let mut cancel = self.control.subscribe();
        let r = self
            .client
            .retry("ReportIntermediate", Some(&mut cancel), None, |c| {
                let req = req.clone();
                async move { c.worker().report_intermediate(request(req, Duration::from_secs(30))).await }
            })
            .await;
        match r {
            Ok(resp) if resp.action == pb::HeartbeatAction::Stop as i32 => {
                tracing::info!(trial = self.number, "the study was stopped; stopping the trial");
                self.control.stop(StopReason::StudyStopped("the study was stopped".into()));
            }
            Ok(resp) if resp.prune => {
                tracing::info!(trial = self.number, epoch = m.epoch, value, "pruned");
                self.control.stop(StopReason::Pruned { value });
            }
            Ok(_) => tracing::info!(trial = self.number, epoch = m.epoch, value, "reported"),
            Err(CallError::Lost(s)) => {
                tracing::warn!(trial = self.number, "the report was refused ({}); dropping the trial", s.message());
                self.control.stop(StopReason::LeaseLost(s.message().to_string()));
            }
            Err(CallError::Cancelled) => {}
            Err(e) => tracing::warn!(trial = self.number, "the report was refused ({e}); training goes on"),
        }
        if self.control.is_stopped() {
            HookAction::Stop
        } else {
            HookAction::Continue
        }
    }
}
