//! `StudyService`: studies, trials, the event stream and the worker list.

use std::sync::Arc;

use mnist_proto::v1 as pb;
use mnist_proto::v1::study_service_server::StudyService;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert::*;
use crate::error::CoordError;
use crate::events::{Event, EventKind};
use crate::study::Coordinator;

/// Events read from the database per page when replaying.
const REPLAY_PAGE: u32 = 1000;

/// The `StudyService` handler.
#[derive(Debug, Clone)]
pub struct StudyApi {
    coord: Arc<Coordinator>,
}

impl StudyApi {
    /// A handler for `coord`.
    pub fn new(coord: Arc<Coordinator>) -> Self {
        StudyApi { coord }
    }

    /// Fills each trial's MLflow run, when tracking runs.
    async fn attach_runs(&self, study_name: &str, trials: &mut [pb::Trial]) -> Result<(), CoordError> {
        let Some(t) = self.coord.tracking() else { return Ok(()) };
        if trials.is_empty() {
            return Ok(());
        }
        let runs = t.trial_runs(self.coord.study_id(study_name)?).await?;
        for trial in trials {
            trial.mlflow_run = runs.get(&trial.number).map(|r| mlflow_run_to_pb(t, r));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl StudyService for StudyApi {
    async fn create_study(&self, req: Request<pb::CreateStudyRequest>) -> Result<Response<pb::CreateStudyResponse>, Status> {
        let req = req.into_inner();
        let spec = req.spec.ok_or_else(|| CoordError::InvalidArgument("`spec` is required".into()))?;
        let new = new_study_from_pb(spec)?;
        let (view, created) = self.coord.create_study(new, req.load_if_exists).await?;
        Ok(Response::new(pb::CreateStudyResponse { study: Some(study_to_pb(&view)), created }))
    }

    async fn get_study(&self, req: Request<pb::GetStudyRequest>) -> Result<Response<pb::Study>, Status> {
        let view = self.coord.get_study(&req.into_inner().name)?;
        let mut study = study_to_pb(&view);
        if let Some(t) = self.coord.tracking() {
            study.mlflow_run = t.study_run(view.id).await?.map(|r| mlflow_run_to_pb(t, &r));
            study.mlflow = Some(mlflow_status_to_pb(t, &t.backlog().await?));
        }
        Ok(Response::new(study))
    }

    async fn list_studies(&self, _req: Request<pb::ListStudiesRequest>) -> Result<Response<pb::ListStudiesResponse>, Status> {
        let studies = self.coord.list_studies().iter().map(study_to_pb).collect();
        Ok(Response::new(pb::ListStudiesResponse { studies }))
    }

    async fn stop_study(&self, req: Request<pb::StopStudyRequest>) -> Result<Response<pb::Study>, Status> {
        let req = req.into_inner();
        let view = self.coord.stop_study(&req.name, &req.reason).await?;
        Ok(Response::new(study_to_pb(&view)))
    }

    async fn resume_study(&self, req: Request<pb::ResumeStudyRequest>) -> Result<Response<pb::Study>, Status> {
        let req = req.into_inner();
        let view = self.coord.resume_study(&req.name, req.n_trials, req.timeout_seconds).await?;
        Ok(Response::new(study_to_pb(&view)))
    }

    async fn delete_study(&self, req: Request<pb::DeleteStudyRequest>) -> Result<Response<pb::DeleteStudyResponse>, Status> {
        let req = req.into_inner();
        let n = self.coord.delete_study(&req.name, req.force).await?;
        Ok(Response::new(pb::DeleteStudyResponse { trials_deleted: n }))
    }

    type WatchStudyStream = ReceiverStream<Result<pb::StudyEvent, Status>>;

    async fn watch_study(&self, req: Request<pb::WatchStudyRequest>) -> Result<Response<Self::WatchStudyStream>, Status> {
        let req = req.into_inner();
        crate::error::check_study_name(&req.name)?;
        let study_id = self.coord.study_id(&req.name)?;
        // Subscribe before replaying, so nothing falls between the two.
        let (live, start) = self.coord.subscribe_at();
        let after = req.after_seq.unwrap_or(start);
        let (tx, rx) = mpsc::channel(256);
        let coord = self.coord.clone();
        tokio::spawn(async move {
            if let Err(status) = watch(coord, study_id, after, req.after_seq.is_some(), req.include_reports, live, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn enqueue_trial(&self, req: Request<pb::EnqueueTrialRequest>) -> Result<Response<pb::Trial>, Status> {
        let req = req.into_inner();
        let mut params = Vec::with_capacity(req.params.len());
        for (k, v) in &req.params {
            params.push((k.clone(), choice_from_pb(v, k)?));
        }
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let view = self.coord.enqueue_trial(&req.study_name, params).await?;
        Ok(Response::new(trial_to_pb(&view)))
    }

    async fn list_trials(&self, req: Request<pb::ListTrialsRequest>) -> Result<Response<pb::ListTrialsResponse>, Status> {
        let req = req.into_inner();
        let mut states = Vec::new();
        for s in &req.states {
            if let Some(st) = trial_state_from_pb(*s)? {
                states.push(st);
            }
        }
        let trials = self.coord.list_trials(&req.study_name, &states, req.from_number, req.limit)?;
        let mut trials: Vec<pb::Trial> = trials.iter().map(trial_to_pb).collect();
        self.attach_runs(&req.study_name, &mut trials).await?;
        Ok(Response::new(pb::ListTrialsResponse { trials }))
    }

    async fn get_trial(&self, req: Request<pb::GetTrialRequest>) -> Result<Response<pb::Trial>, Status> {
        let view = match req.into_inner().key {
            Some(pb::get_trial_request::Key::TrialId(id)) => self.coord.get_trial_by_id(id)?,
            Some(pb::get_trial_request::Key::Ref(r)) => self.coord.get_trial(&r.study_name, r.number)?,
            None => return Err(Status::invalid_argument("give a trial id or a study name and trial number")),
        };
        let mut trials = vec![trial_to_pb(&view)];
        self.attach_runs(&view.study_name, &mut trials).await?;
        Ok(Response::new(trials.remove(0)))
    }

    async fn list_workers(&self, req: Request<pb::ListWorkersRequest>) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let workers = self.coord.list_workers(req.into_inner().include_offline);
        Ok(Response::new(pb::ListWorkersResponse { workers: workers.iter().map(worker_to_pb).collect() }))
    }
}

/// Streams a study's events after `after`: first the stored ones (when
/// `replay_first`, i.e. the client gave `after_seq`), then live ones (a
/// live-only watch starts after the last event committed when it began).
/// Each event is sent once, in `seq` order; a watcher that lags behind the
/// live channel catches up from the database, from where it was, never from
/// before `after`.
async fn watch(
    coord: Arc<Coordinator>,
    study_id: i64,
    after: u64,
    replay_first: bool,
    include_reports: bool,
    mut live: broadcast::Receiver<Arc<Event>>,
    tx: &mpsc::Sender<Result<pb::StudyEvent, Status>>,
) -> Result<(), Status> {
    let mut last = after;
    let mut shutdown = coord.shutdown_signal();
    let wanted = |e: &Event| include_reports || e.kind != EventKind::TrialReported;
    if replay_first && !replay(&coord, study_id, &mut last, &wanted, tx).await? {
        return Ok(());
    }
    loop {
        let ev = tokio::select! {
            ev = live.recv() => ev,
            _ = shutdown.changed() => return Err(Status::unavailable("the coordinator is shutting down; watch again after it restarts")),
            _ = tx.closed() => return Ok(()),
        };
        match ev {
            Ok(ev) => {
                if ev.study_id != study_id || ev.seq <= last {
                    continue;
                }
                last = ev.seq;
                if wanted(&ev) && tx.send(Ok(event_to_pb(&ev))).await.is_err() {
                    return Ok(());
                }
                if ev.kind == EventKind::StudyDeleted {
                    return Ok(());
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                if !replay(&coord, study_id, &mut last, &wanted, tx).await? {
                    return Ok(());
                }
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

/// Sends stored events after `*last`; false when the client went away.
async fn replay(
    coord: &Coordinator,
    study_id: i64,
    last: &mut u64,
    wanted: &impl Fn(&Event) -> bool,
    tx: &mpsc::Sender<Result<pb::StudyEvent, Status>>,
) -> Result<bool, Status> {
    loop {
        let page = coord.events_after(study_id, *last, REPLAY_PAGE).await?;
        let n = page.len();
        for ev in page {
            *last = ev.seq;
            if wanted(&ev) && tx.send(Ok(event_to_pb(&ev))).await.is_err() {
                return Ok(false);
            }
        }
        if n < REPLAY_PAGE as usize {
            return Ok(true);
        }
    }
}
