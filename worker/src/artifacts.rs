//! Uploading a finished trial's files to the coordinator (`UploadArtifact`,
//! a client stream: the header, then the bytes in chunks), under the names
//! the coordinator's artifact store and `mnistctl` expect:
//!
//! | name                       | file                                  |
//! |----------------------------|---------------------------------------|
//! | `metrics.json`             | every printed and plotted number       |
//! | `plots/accuracy.png` ...   | the four plots                         |
//! | `model/MLmodel`, `model/data/model.pth`, ... | the MLflow model directory |
//! | `weights/model.safetensors`| the weights                            |

use std::path::{Path, PathBuf};

use mnist_common::mlflow_model::{MLMODEL_FILE, MODEL_ARTIFACT_DIR};
use mnist_proto::v1 as pb;
use mnist_trainer::run::RunArtifacts;
use sha2::{Digest, Sha256};

use crate::client::{CallError, Client};

/// Bytes per upload message (the coordinator accepts up to 4 MiB).
const CHUNK_BYTES: usize = 1 << 20;

/// Attempts per file while the coordinator is unreachable.
const ATTEMPTS: u32 = 6;


/// The files of a run, as (artifact name, local path), in upload order.
pub fn files(a: &RunArtifacts) -> Vec<(String, PathBuf)> {
    let mut out = vec![("metrics.json".to_string(), a.metrics.clone())];
    for p in [&a.accuracy_plot, &a.loss_plot, &a.confusion_plot, &a.predictions_plot] {
        if p.is_file() {
            if let Some(n) = p.file_name() {
                out.push((format!("plots/{}", n.to_string_lossy()), p.clone()));
            }
        }
    }
    let mut model = Vec::new();
    walk(&a.mlflow_model, &a.mlflow_model, &mut model);
    // `MLmodel` last: it marks the directory complete (the coordinator logs
    // the model to MLflow when it arrives), so it never lands without the
    // files it describes.
    model.sort_by(|a, b| (a.0 == MLMODEL_FILE, &a.0).cmp(&(b.0 == MLMODEL_FILE, &b.0)));
    out.extend(model.into_iter().map(|(rel, p)| (format!("{MODEL_ARTIFACT_DIR}/{rel}"), p)));
    out.push(("weights/model.safetensors".to_string(), a.safetensors.clone()));
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            let rel: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            out.push((rel.join("/"), p));
        }
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("yaml") | Some("yml") => "application/yaml",
        Some("txt") => "text/plain",
        _ if name.ends_with("MLmodel") => "application/yaml",
        _ => "application/octet-stream",
    }
}

/// Why an upload stopped.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Reading the local file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The coordinator refused or stayed unreachable.
    #[error("{name}: {source}")]
    Call {
        name: String,
        #[source]
        source: CallError,
    },
}

/// Upload messages for `bytes`: the header, then the chunks.
fn messages(bytes: &[u8], header: pb::ArtifactHeader) -> Vec<pb::UploadArtifactRequest> {
    use pb::upload_artifact_request::Part;
    let mut out = vec![pb::UploadArtifactRequest { part: Some(Part::Header(header)) }];
    out.extend(bytes.chunks(CHUNK_BYTES).map(|c| pb::UploadArtifactRequest { part: Some(Part::Chunk(c.to_vec())) }));
    out
}

/// Uploads one file, retrying while the coordinator is unreachable. Bytes
/// the coordinator received otherwise than announced (DATA_LOSS: corrupted
/// on the way) are read and sent once more.
pub async fn upload_file(client: &Client, trial_id: i64, token: u64, name: &str, path: &Path) -> Result<u64, UploadError> {
    let io = |source| UploadError::Io { path: path.to_path_buf(), source };
    let mut resent = false;
    loop {
        // One read: the announced size and digest are those of the bytes sent.
        let bytes = tokio::fs::read(path).await.map_err(io)?;
        let header = pb::ArtifactHeader {
            trial_id,
            lease_token: token,
            name: name.to_string(),
            size_bytes: Some(bytes.len() as u64),
            sha256: hex::encode(Sha256::digest(&bytes)),
            content_type: content_type(name).to_string(),
        };
        let msgs = messages(&bytes, header);
        let deadline = tokio::time::Instant::now() + client.backoff_span(ATTEMPTS);
        let r = client
            .retry("UploadArtifact", None, Some(deadline), |c| {
                let msgs = msgs.clone();
                async move { c.worker().upload_artifact(tokio_stream::iter(msgs)).await }
            })
            .await;
        match r {
            Err(CallError::Refused(s)) if s.code() == tonic::Code::DataLoss && !resent => {
                tracing::warn!(artifact = %name, "the coordinator received other bytes than sent ({}); sending the file again", s.message());
                resent = true;
            }
            r => return r.map(|r| r.size_bytes).map_err(|source| UploadError::Call { name: name.to_string(), source }),
        }
    }
}

/// What [`upload_run`] stored.
#[derive(Debug, Default)]
pub struct Uploaded {
    pub files: usize,
    pub bytes: u64,
    /// Files the coordinator refused on their own (over its size limit),
    /// with the reason; the others were still sent. A refused file of the
    /// model directory also holds back its `MLmodel`, listed here too.
    pub refused: Vec<(String, String)>,
}

/// Uploads every file of a run. A file refused as invalid (over the
/// coordinator's size limit) is skipped, and the rest still go; any other
/// refusal (the lease was lost) or a coordinator that stays unreachable
/// stops the upload.
pub async fn upload_run(client: &Client, trial_id: i64, token: u64, run: &RunArtifacts) -> Result<Uploaded, UploadError> {
    let mut done = Uploaded::default();
    let mut model_incomplete = false;
    for (name, path) in &files(run) {
        // The path inside the model directory, for one of its files.
        let model_file = name.split_once('/').filter(|(dir, _)| *dir == MODEL_ARTIFACT_DIR).map(|(_, rest)| rest);
        if model_incomplete && model_file == Some(MLMODEL_FILE) {
            done.refused.push((name.clone(), "not sent: a file of the model directory was refused".into()));
            continue;
        }
        match upload_file(client, trial_id, token, name, path).await {
            Ok(n) => {
                done.files += 1;
                done.bytes += n;
            }
            Err(UploadError::Call { name, source: CallError::Refused(s) }) if s.code() == tonic::Code::InvalidArgument => {
                model_incomplete |= model_file.is_some();
                done.refused.push((name, s.message().to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let touch = |p: &Path| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        };
        let a = RunArtifacts {
            dir: d.to_path_buf(),
            safetensors: d.join("model.safetensors"),
            torchscript: d.join("model.pt"),
            mlflow_model: d.join("mlflow_model"),
            metrics: d.join("metrics.json"),
            accuracy_plot: d.join("accuracy.png"),
            loss_plot: d.join("loss.png"),
            confusion_plot: d.join("confusion_matrix.png"),
            predictions_plot: d.join("predictions.png"),
        };
        for p in [&a.safetensors, &a.metrics, &a.accuracy_plot, &a.loss_plot, &a.confusion_plot, &a.predictions_plot] {
            touch(p);
        }
        touch(&a.mlflow_model.join("MLmodel"));
        touch(&a.mlflow_model.join("data/model.pth"));
        touch(&a.mlflow_model.join("conda.yaml"));
        let names: Vec<String> = files(&a).into_iter().map(|(n, _)| n).collect();
        let model: Vec<&str> = names.iter().filter(|n| n.starts_with("model/")).map(String::as_str).collect();
        assert_eq!(model, ["model/conda.yaml", "model/data/model.pth", "model/MLmodel"], "MLmodel last");
        for want in [
            "metrics.json",
            "plots/accuracy.png",
            "plots/loss.png",
            "plots/confusion_matrix.png",
            "plots/predictions.png",
            "model/MLmodel",
            "model/data/model.pth",
            "weights/model.safetensors",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
        }
        assert_eq!(content_type("model/MLmodel"), "application/yaml");
    }
}
