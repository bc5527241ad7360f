//! `AskTellService`: generic ask/tell for objectives in any language.

use std::sync::Arc;
use std::time::Duration;

use mnist_proto::v1 as pb;
use mnist_proto::v1::ask_tell_service_server::AskTellService;
use mnist_sampler::TrialState;
use tonic::{Request, Response, Status};

use super::convert::*;
use crate::error::CoordError;
use crate::study::{AskOutcome, AskRequest, Coordinator};

/// The `AskTellService` handler.
#[derive(Debug, Clone)]
pub struct AskTellApi {
    coord: Arc<Coordinator>,
}

impl AskTellApi {
    /// A handler for `coord`.
    pub fn new(coord: Arc<Coordinator>) -> Self {
        AskTellApi { coord }
    }
}

#[tonic::async_trait]
impl AskTellService for AskTellApi {
    async fn ask(&self, req: Request<pb::AskRequest>) -> Result<Response<pb::AskResponse>, Status> {
        let req = req.into_inner();
        if req.study_name.is_empty() {
            return Err(CoordError::InvalidArgument("`study_name` is required".into()).into());
        }
        let holder = if req.client_id.is_empty() { format!("anon-{}", uuid::Uuid::new_v4().simple()) } else { req.client_id };
        let outcome = self
            .coord
            .ask(AskRequest {
                holder,
                slot: req.slot,
                study: Some(req.study_name),
                wait: Duration::from_millis(req.wait_ms as u64),
            })
            .await?;
        Ok(Response::new(match outcome {
            AskOutcome::Assigned(a) => pb::AskResponse { trial: Some(assignment_to_pb(&a)), ..Default::default() },
            AskOutcome::Idle { reason, retry_after_ms, over } => {
                pb::AskResponse { trial: None, idle_reason: reason, retry_after_ms, study_over: over }
            }
        }))
    }

    async fn tell(&self, req: Request<pb::TellRequest>) -> Result<Response<pb::TellResponse>, Status> {
        let req = req.into_inner();
        let state = trial_state_from_pb(req.state)?.unwrap_or(TrialState::Complete);
        let out = match state {
            TrialState::Complete | TrialState::Pruned => {
                let out = self.coord.complete(req.trial_id, req.lease_token, state, req.value, metrics_from_pb(req.metrics)).await?;
                pb::TellResponse { trial: Some(trial_to_pb(&out.trial)), is_best: out.is_best }
            }
            TrialState::Fail => {
                let reason = if req.fail_reason.trim().is_empty() { "failed (no reason given)" } else { req.fail_reason.as_str() };
                self.coord.fail(req.trial_id, req.lease_token, reason, false).await?;
                let trial = self.coord.get_trial_by_id(req.trial_id)?;
                pb::TellResponse { trial: Some(trial_to_pb(&trial)), is_best: false }
            }
            other => {
                return Err(Status::invalid_argument(format!("Tell takes COMPLETE, PRUNED or FAIL, not {other:?}")));
            }
        };
        Ok(Response::new(out))
    }
}
