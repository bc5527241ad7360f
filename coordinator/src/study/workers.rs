//! Workers (registration, listing) and the bookkeeping side of artifacts
//! (who may upload for a trial, and recording what was stored).

use super::view::{holder_slots, ArtifactTarget, SlotView, WorkerRegistration, WorkerView};
use super::{make_event, Coordinator, StudyMem, WorkerMem};
use crate::artifacts::Staged;
use crate::error::{check_holder_id, CoordError, Result};
use crate::events::EventKind;
use crate::storage::{Batch, Op};

impl Coordinator {
    /// Registers a worker (or updates it when `worker_id` is known). Returns
    /// its id and the trials it holds (after a worker restart).
    pub async fn register_worker(&self, reg: WorkerRegistration) -> Result<(String, Vec<SlotView>)> {
        let hostname = reg.hostname.trim().to_string();
        if hostname.is_empty() || hostname.len() > 255 {
            return Err(CoordError::InvalidArgument("the worker's hostname is empty or longer than 255 characters".into()));
        }
        if reg.devices.is_empty() {
            return Err(CoordError::InvalidArgument("a worker needs at least one device (\"cpu\" or \"cuda:N\")".into()));
        }
        if reg.devices.len() > 1024 {
            return Err(CoordError::InvalidArgument("a worker may register at most 1024 devices".into()));
        }
        for (i, d) in reg.devices.iter().enumerate() {
            if d.name.trim().is_empty() {
                return Err(CoordError::InvalidArgument(format!("device {i} has no name; use \"cpu\" or \"cuda:N\"")));
            }
        }
        let id = if reg.worker_id.is_empty() { format!("w-{}", uuid::Uuid::new_v4().simple()) } else { reg.worker_id.clone() };
        check_holder_id("the worker id", &id)?;
        let (slots, pending) = {
            let now = self.clock.now_ms();
            let slot = self.reserve()?;
            let mut g = self.lock();
            let registered_ms = g.workers.get(&id).map(|w| w.registered_ms).unwrap_or(now);
            let w = WorkerMem {
                id: id.clone(),
                hostname,
                devices: reg.devices,
                labels: reg.labels,
                registered_ms,
                last_seen_ms: now,
                left: false,
            };
            let mut batch = Batch::new();
            batch.push(Op::UpsertWorker {
                worker_id: id.clone(),
                hostname: w.hostname.clone(),
                devices_json: serde_json::to_string(&w.devices).unwrap_or_else(|_| "[]".into()),
                labels_json: serde_json::to_string(&w.labels).unwrap_or_else(|_| "{}".into()),
                registered_at_ms: registered_ms,
                last_seen_ms: now,
            });
            g.workers.insert(id.clone(), w);
            (holder_slots(&g, &id), slot.submit(batch))
        };
        pending.wait().await?;
        tracing::info!(worker = %id, "worker registered");
        Ok((id, slots))
    }

    /// A worker stopped cleanly: it is listed offline from now on (unless it
    /// still holds trials, whose leases then run out), until it registers
    /// again.
    pub fn deregister_worker(&self, worker_id: &str) -> Result<()> {
        check_holder_id("the worker id", worker_id)?;
        let mut g = self.lock();
        let w = g.workers.get_mut(worker_id).ok_or_else(|| CoordError::NotFound(format!("worker {worker_id:?} is not registered")))?;
        w.left = true;
        tracing::info!(worker = %worker_id, "worker stopped");
        Ok(())
    }

    /// Checks that a worker is registered and has device `slot`.
    pub fn check_worker_slot(&self, worker_id: &str, slot: u32) -> Result<()> {
        let g = self.lock();
        match g.workers.get(worker_id) {
            None => Err(CoordError::NotFound(format!(
                "worker {worker_id:?} is not registered; call RegisterWorker first (the coordinator's database may have been replaced)"
            ))),
            Some(w) if slot as usize >= w.devices.len() => Err(CoordError::InvalidArgument(format!(
                "slot {slot} is out of range: worker {worker_id:?} registered {} device(s)",
                w.devices.len()
            ))),
            Some(_) => Ok(()),
        }
    }

    /// The workers (online ones only unless `include_offline`).
    pub fn list_workers(&self, include_offline: bool) -> Vec<WorkerView> {
        let now = self.clock.now_ms();
        let timeout = self.config().worker_timeout.as_millis() as i64;
        let g = self.lock();
        g.workers
            .values()
            .map(|w| {
                let running = holder_slots(&g, &w.id);
                WorkerView {
                    id: w.id.clone(),
                    hostname: w.hostname.clone(),
                    devices: w.devices.clone(),
                    labels: w.labels.clone(),
                    registered_ms: w.registered_ms,
                    last_seen_ms: w.last_seen_ms,
                    online: (!w.left && now.saturating_sub(w.last_seen_ms) <= timeout) || !running.is_empty(),
                    running,
                }
            })
            .filter(|w| include_offline || w.online)
            .collect()
    }

    /// Checks that `token` is the latest lease of the trial (live, or ended
    /// by completion) and says where its artifacts go.
    pub fn authorize_artifact(&self, trial_id: i64, token: u64) -> Result<ArtifactTarget> {
        let g = self.lock();
        let (sid, n) = super::trials::locate(&g, trial_id)?;
        let study = &g.studies[&sid];
        check_artifact_lease(study, n, token)?;
        Ok(ArtifactTarget {
            study_id: sid,
            study_name: study.name.clone(),
            trial_id,
            number: n,
            token,
            dir: crate::artifacts::trial_dir(&self.config().artifacts_root(), sid, n),
        })
    }

    /// Stores a verified upload and records it. The lease is checked again,
    /// under the lock, right before the file is moved into place: an upload
    /// that outlived its lease (the trial was re-queued, perhaps taken by
    /// another worker, while the bytes streamed in) is refused and its file
    /// discarded, so it never overwrites the newer attempt's artifact.
    pub async fn record_artifact(&self, target: &ArtifactTarget, name: &str, mut staged: Staged, content_type: &str) -> Result<()> {
        let pending = {
            let now = self.clock.now_ms();
            // Before the file is moved into place: a refused change leaves
            // nothing behind.
            let slot = match self.reserve() {
                Ok(slot) => slot,
                Err(e) => {
                    staged.discard();
                    return Err(e);
                }
            };
            let mut g = self.lock();
            let inner = &mut *g;
            let checked = inner
                .studies
                .get(&target.study_id)
                .ok_or_else(|| CoordError::NotFound(format!("study {:?} was deleted during the upload", target.study_name)))
                .and_then(|study| check_artifact_lease(study, target.number, target.token).map(|()| study));
            let study = match checked {
                Ok(study) => study,
                Err(e) => {
                    staged.discard();
                    return Err(e);
                }
            };
            staged.commit()?;
            let mut batch = Batch::new();
            batch.push(Op::InsertArtifact {
                study_id: target.study_id,
                trial_id: target.trial_id,
                name: name.to_string(),
                path: staged.target.display().to_string(),
                size_bytes: staged.size.min(i64::MAX as u64) as i64,
                sha256: staged.sha256.clone(),
                content_type: content_type.to_string(),
                created_at_ms: now,
            });
            let mut ev = make_event(&mut inner.ids, study, EventKind::ArtifactStored, Some(target.number), now);
            ev.message = name.to_string();
            batch.push_event(ev);
            slot.submit(batch)
        };
        pending.wait().await?;
        Ok(())
    }
}

/// Artifacts may be uploaded with the trial's latest lease token, while it
/// runs or after it finished, but not once the trial was re-queued.
fn check_artifact_lease(study: &StudyMem, n: u64, token: u64) -> Result<()> {
    let (Some(x), Some(t)) = (study.extra.get(n as usize), study.trials.get(n as usize)) else {
        return Err(CoordError::NotFound(format!("trial {n} of study {:?} does not exist", study.name)));
    };
    if x.last_token != Some(token) {
        return Err(CoordError::FailedPrecondition(format!(
            "lease token {token} is not the latest lease of trial {n} of study {:?}; only its latest holder may upload artifacts",
            study.name
        )));
    }
    if t.state == mnist_sampler::TrialState::Waiting {
        return Err(CoordError::FailedPrecondition(format!(
            "trial {n} of study {:?} was re-queued (its lease was lost); its artifacts will come from the next attempt",
            study.name
        )));
    }
    Ok(())
}
