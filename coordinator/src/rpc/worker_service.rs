//! `WorkerService`: the training worker's protocol.

use std::sync::Arc;
use std::time::Duration;

use mnist_proto::v1 as pb;
use mnist_proto::v1::worker_service_server::WorkerService;
use mnist_sampler::TrialState;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::convert::*;
use crate::artifacts::Upload;
use crate::clock::timestamp;
use crate::dataset::Dataset;
use crate::error::{check_holder_id, CoordError};
use crate::study::{AskOutcome, AskRequest, Coordinator, WorkerRegistration};

/// The largest artifact chunk accepted.
pub const MAX_CHUNK_BYTES: usize = 4 << 20;

/// The `WorkerService` handler.
#[derive(Debug, Clone)]
pub struct WorkerApi {
    coord: Arc<Coordinator>,
    dataset: Arc<Dataset>,
}

impl WorkerApi {
    /// A handler for `coord`, serving `dataset`.
    pub fn new(coord: Arc<Coordinator>, dataset: Arc<Dataset>) -> Self {
        WorkerApi { coord, dataset }
    }
}

fn action(stop: bool) -> i32 {
    if stop {
        pb::HeartbeatAction::Stop as i32
    } else {
        pb::HeartbeatAction::Continue as i32
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    async fn register_worker(&self, req: Request<pb::RegisterWorkerRequest>) -> Result<Response<pb::RegisterWorkerResponse>, Status> {
        let req = req.into_inner();
        let reg = WorkerRegistration {
            worker_id: req.worker_id,
            hostname: req.hostname,
            devices: req.devices.into_iter().map(device_from_pb).collect(),
            labels: req.labels.into_iter().collect(),
        };
        let (worker_id, slots) = self.coord.register_worker(reg).await?;
        let cfg = self.coord.config();
        Ok(Response::new(pb::RegisterWorkerResponse {
            worker_id,
            lease_duration_ms: cfg.lease_duration.as_millis() as u32,
            heartbeat_interval_ms: cfg.heartbeat().as_millis() as u32,
            running: slots.iter().map(slot_to_pb).collect(),
        }))
    }

    async fn deregister_worker(
        &self,
        req: Request<pb::DeregisterWorkerRequest>,
    ) -> Result<Response<pb::DeregisterWorkerResponse>, Status> {
        self.coord.deregister_worker(&req.into_inner().worker_id)?;
        Ok(Response::new(pb::DeregisterWorkerResponse {}))
    }

    async fn acquire_trial(&self, req: Request<pb::AcquireTrialRequest>) -> Result<Response<pb::AcquireTrialResponse>, Status> {
        let req = req.into_inner();
        check_holder_id("the worker id", &req.worker_id)?;
        self.coord.check_worker_slot(&req.worker_id, req.slot)?;
        let outcome = self
            .coord
            .ask(AskRequest {
                holder: req.worker_id,
                slot: req.slot,
                study: (!req.study_name.is_empty()).then_some(req.study_name),
                wait: Duration::from_millis(req.wait_ms as u64),
            })
            .await?;
        Ok(Response::new(match outcome {
            AskOutcome::Assigned(a) => pb::AcquireTrialResponse { trial: Some(assignment_to_pb(&a)), ..Default::default() },
            AskOutcome::Idle { reason, retry_after_ms, .. } => {
                pb::AcquireTrialResponse { trial: None, idle_reason: reason, retry_after_ms: retry_after_ms.max(100) }
            }
        }))
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let req = req.into_inner();
        let out = self.coord.heartbeat(req.trial_id, req.lease_token, &req.worker_id).await?;
        Ok(Response::new(pb::HeartbeatResponse {
            action: action(out.stop),
            lease_expires_at: Some(timestamp(out.expires_ms)),
            message: out.message,
        }))
    }

    async fn report_intermediate(
        &self,
        req: Request<pb::ReportIntermediateRequest>,
    ) -> Result<Response<pb::ReportIntermediateResponse>, Status> {
        let req = req.into_inner();
        let out = self.coord.report(req.trial_id, req.lease_token, req.step, req.value, metrics_from_pb(req.metrics)).await?;
        Ok(Response::new(pb::ReportIntermediateResponse { prune: out.prune, action: action(out.stop) }))
    }

    async fn complete_trial(&self, req: Request<pb::CompleteTrialRequest>) -> Result<Response<pb::CompleteTrialResponse>, Status> {
        let req = req.into_inner();
        let state = match trial_state_from_pb(req.state)? {
            None | Some(TrialState::Complete) => TrialState::Complete,
            Some(TrialState::Pruned) => TrialState::Pruned,
            Some(other) => {
                return Err(Status::invalid_argument(format!(
                    "CompleteTrial takes state COMPLETE or PRUNED, not {other:?}; use FailTrial or ReleaseTrial"
                )))
            }
        };
        let out = self.coord.complete(req.trial_id, req.lease_token, state, req.value, metrics_from_pb(req.metrics)).await?;
        Ok(Response::new(pb::CompleteTrialResponse { trial: Some(trial_to_pb(&out.trial)), is_best: out.is_best }))
    }

    async fn fail_trial(&self, req: Request<pb::FailTrialRequest>) -> Result<Response<pb::FailTrialResponse>, Status> {
        let req = req.into_inner();
        let (state, left) = self.coord.fail(req.trial_id, req.lease_token, &req.reason, req.retryable).await?;
        Ok(Response::new(pb::FailTrialResponse { state: trial_state_to_pb(state) as i32, retries_left: left }))
    }

    async fn release_trial(&self, req: Request<pb::ReleaseTrialRequest>) -> Result<Response<pb::ReleaseTrialResponse>, Status> {
        let req = req.into_inner();
        let state = self.coord.release(req.trial_id, req.lease_token, &req.reason).await?;
        Ok(Response::new(pb::ReleaseTrialResponse { state: trial_state_to_pb(state) as i32 }))
    }

    async fn upload_artifact(
        &self,
        req: Request<Streaming<pb::UploadArtifactRequest>>,
    ) -> Result<Response<pb::UploadArtifactResponse>, Status> {
        use pb::upload_artifact_request::Part;
        let mut stream = req.into_inner();
        let header = match stream.next().await {
            Some(Ok(pb::UploadArtifactRequest { part: Some(Part::Header(h)) })) => h,
            Some(Ok(_)) => return Err(Status::invalid_argument("the first message of an upload must be the ArtifactHeader")),
            Some(Err(s)) => return Err(s),
            None => return Err(Status::invalid_argument("empty upload: send an ArtifactHeader, then the bytes")),
        };
        let target = self.coord.authorize_artifact(header.trial_id, header.lease_token)?;
        let limit = self.coord.config().max_artifact_bytes;
        if let Some(size) = header.size_bytes.filter(|s| *s > limit) {
            return Err(crate::artifacts::too_large(&header.name, Some(size), limit).into());
        }
        let mut upload = Upload::begin(&target.dir, &header.name, limit).await?;
        while let Some(msg) = stream.next().await {
            let res = match msg {
                Ok(pb::UploadArtifactRequest { part: Some(Part::Chunk(data)) }) => {
                    if data.len() > MAX_CHUNK_BYTES {
                        Err(CoordError::InvalidArgument(format!("chunks must be at most {MAX_CHUNK_BYTES} bytes")).into())
                    } else {
                        upload.write(&data).await.map_err(Status::from)
                    }
                }
                Ok(_) => Err(Status::invalid_argument("only one ArtifactHeader per upload, then chunks")),
                Err(s) => Err(s),
            };
            if let Err(s) = res {
                upload.abort().await;
                return Err(s);
            }
        }
        let staged = upload.verify(header.size_bytes, &header.sha256).await?;
        let (size, sha) = (staged.size, staged.sha256.clone());
        self.coord.record_artifact(&target, &header.name, staged, &header.content_type).await?;
        Ok(Response::new(pb::UploadArtifactResponse { name: header.name, size_bytes: size, sha256: sha }))
    }

    type FetchDatasetStream = ReceiverStream<Result<pb::DatasetChunk, Status>>;

    async fn fetch_dataset(&self, req: Request<pb::FetchDatasetRequest>) -> Result<Response<Self::FetchDatasetStream>, Status> {
        let files = Dataset::select(&req.into_inner().files)?;
        let mut chunks = self.dataset.stream(files).await?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(c) = chunks.recv().await {
                let msg = c
                    .map(|c| pb::DatasetChunk {
                        file_name: c.file_name,
                        canonical_name: c.canonical_name.to_string(),
                        sha256: c.sha256.to_string(),
                        gzip: c.gzip,
                        file_size: c.file_size,
                        offset: c.offset,
                        data: c.data,
                        last: c.last,
                    })
                    .map_err(Status::from);
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
