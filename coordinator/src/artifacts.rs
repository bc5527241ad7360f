//! The artifact store: files that workers upload for their trials (plots, the
//! model directory), kept on disk under
//! `<artifact root>/study-<id>/trial-<number>/<name>`.
//!
//! A file is written to a temporary name next to its target, hashed while it
//! arrives, checked against the announced size and SHA-256, and renamed into
//! place only when complete (and, by the coordinator, only after the lease is
//! checked again), so a broken upload never leaves a partial file under the
//! real name; the temporary file is removed when the upload fails, is refused,
//! or is dropped (its RPC cancelled, the process shutting down).

use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::CoordError;

/// The directory of a study's artifacts.
pub fn study_dir(root: &Path, study_id: i64) -> PathBuf {
    root.join(format!("study-{study_id}"))
}

/// The directory of a trial's artifacts.
pub fn trial_dir(root: &Path, study_id: i64, number: u64) -> PathBuf {
    study_dir(root, study_id).join(format!("trial-{number}"))
}

/// Checks an artifact name: a relative path with `/` separators, no `..`, no
/// empty or hidden-temp components, at most 255 characters.
pub fn check_name(name: &str) -> Result<PathBuf, CoordError> {
    let bad = |why: &str| CoordError::InvalidArgument(format!("artifact name {name:?} is not valid: {why}"));
    if name.is_empty() || name.len() > 255 {
        return Err(bad("it must be 1 to 255 characters"));
    }
    if name.starts_with('/') || name.contains('\\') || name.chars().any(char::is_control) {
        return Err(bad("use a relative path with / separators and no control characters"));
    }
    let mut out = PathBuf::new();
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.starts_with(".upload-") {
            return Err(bad("no empty, `.` or `..` components"));
        }
        out.push(part);
    }
    if out.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(bad("no special components"));
    }
    Ok(out)
}

/// FAILED_PRECONDITION: artifact `name` would need `taken` (a path of the
/// trial's artifacts, relative, with `/`) to be a directory while it is a
/// file, or the other way round.
fn clash(name: &str, taken: &str, taken_is_file: bool) -> CoordError {
    let what = if taken_is_file {
        format!("the trial already has a file named {taken:?}, so {name:?} cannot be stored under it")
    } else {
        format!("the trial already has artifacts under {taken:?}/, so {name:?} cannot be a file")
    };
    CoordError::FailedPrecondition(format!(
        "artifact name {name:?} clashes with a stored artifact: {what}; a name is either a file or a directory, so upload it under another name"
    ))
}

/// Checks that artifact `name` (checked by [`check_name`]) can be stored
/// under the trial's directory `dir`: none of its parents is a stored file,
/// and it is not a directory of stored artifacts.
async fn check_no_clash(dir: &Path, name: &str) -> Result<(), CoordError> {
    let ends = name.match_indices('/').map(|(i, _)| i).chain([name.len()]);
    for end in ends {
        let taken = &name[..end];
        let Ok(meta) = tokio::fs::symlink_metadata(dir.join(taken)).await else { return Ok(()) };
        let is_last = end == name.len();
        if !is_last && !meta.is_dir() {
            return Err(clash(name, taken, true));
        }
        if is_last && meta.is_dir() {
            return Err(clash(name, taken, false));
        }
    }
    Ok(())
}

/// A temporary file, removed when dropped unless it was renamed into place
/// (so a cancelled upload, its RPC dropped mid-stream, leaves nothing behind).
#[derive(Debug)]
struct TempPath(Option<PathBuf>);

impl TempPath {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    /// Renames the file to `target`; on failure it is removed.
    fn persist(&mut self, target: &Path) -> std::io::Result<()> {
        let Some(tmp) = self.0.take() else {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "the temporary file is gone"));
        };
        std::fs::rename(&tmp, target).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    fn remove(&mut self) {
        if let Some(tmp) = self.0.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        self.remove();
    }
}

/// An upload in progress.
#[derive(Debug)]
pub struct Upload {
    tmp: TempPath,
    /// The artifact name, for messages.
    name: String,
    target: PathBuf,
    file: tokio::fs::File,
    hasher: Sha256,
    size: u64,
    limit: u64,
}

/// The refusal of a file over the coordinator's size limit: the request
/// itself is the problem (INVALID_ARGUMENT), not a passing shortage, so a
/// client does not send it again.
pub fn too_large(name: &str, size: Option<u64>, limit: u64) -> CoordError {
    let size = size.map_or_else(String::new, |s| format!(" ({s} bytes)"));
    CoordError::InvalidArgument(format!(
        "artifact {name:?}{size} is larger than this coordinator accepts: the limit is {limit} bytes (mnist-coordinator --max-artifact-mib)"
    ))
}

impl Upload {
    /// Starts writing `name` under `dir`.
    pub async fn begin(dir: &Path, name: &str, limit: u64) -> Result<Upload, CoordError> {
        let rel = check_name(name)?;
        check_no_clash(dir, name).await?;
        let target = dir.join(&rel);
        let parent = target.parent().unwrap_or(dir).to_path_buf();
        if let Err(e) = tokio::fs::create_dir_all(&parent).await {
            // A file may have been stored under a parent's name meanwhile.
            check_no_clash(dir, name).await?;
            return Err(CoordError::Internal(format!("cannot create {}: {e}", parent.display())));
        }
        let tmp = parent.join(format!(".upload-{}", uuid::Uuid::new_v4().simple()));
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| CoordError::Internal(format!("cannot create {}: {e}", tmp.display())))?;
        Ok(Upload { tmp: TempPath(Some(tmp)), name: name.to_string(), target, file, hasher: Sha256::new(), size: 0, limit })
    }

    /// Appends bytes.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), CoordError> {
        self.size += data.len() as u64;
        if self.size > self.limit {
            return Err(too_large(&self.name, None, self.limit));
        }
        self.hasher.update(data);
        self.file
            .write_all(data)
            .await
            .map_err(|e| CoordError::Internal(format!("writing {}: {e}", self.tmp.path().display())))
    }

    /// Verifies the bytes against the announced size and SHA-256 and flushes
    /// them to disk; the file stays in its temporary name until
    /// [`Staged::commit`] (so that the lease can be checked again first).
    pub async fn verify(mut self, expect_size: Option<u64>, expect_sha: &str) -> Result<Staged, CoordError> {
        let sha = hex::encode(self.hasher.clone().finalize());
        if let Some(n) = expect_size {
            if n != self.size {
                self.abort().await;
                return Err(CoordError::DataLoss(format!(
                    "the artifact was announced as {n} bytes but {} arrived; upload it again",
                    self.size
                )));
            }
        }
        if !expect_sha.is_empty() && !expect_sha.eq_ignore_ascii_case(&sha) {
            self.abort().await;
            return Err(CoordError::DataLoss(format!(
                "the artifact's SHA-256 is {sha}, not the announced {expect_sha}; upload it again"
            )));
        }
        let synced = match self.file.flush().await {
            Ok(()) => self.file.sync_all().await,
            Err(e) => Err(e),
        };
        if let Err(e) = synced {
            self.abort().await;
            return Err(CoordError::Internal(format!("storing {}: {e}", self.target.display())));
        }
        Ok(Staged { tmp: self.tmp, name: self.name, target: self.target, size: self.size, sha256: sha })
    }

    /// Removes the temporary file.
    pub async fn abort(&mut self) {
        self.tmp.remove();
    }
}

/// A verified upload, still under its temporary name (removed if dropped
/// uncommitted).
#[derive(Debug)]
pub struct Staged {
    tmp: TempPath,
    name: String,
    /// Where [`Staged::commit`] puts it.
    pub target: PathBuf,
    pub size: u64,
    pub sha256: String,
}

impl Staged {
    /// Moves the file into place: a rename within one directory, atomic and
    /// quick, so the coordinator does it under its lock right after checking
    /// the lease. On failure the temporary file is removed.
    pub fn commit(&mut self) -> Result<(), CoordError> {
        self.tmp.persist(&self.target).map_err(|e| {
            // Another upload may have stored artifacts under this name
            // since the check in `Upload::begin`.
            if self.target.is_dir() {
                clash(&self.name, &self.name, false)
            } else {
                CoordError::Internal(format!("storing {}: {e}", self.target.display()))
            }
        })
    }

    /// Removes the temporary file (the upload is refused).
    pub fn discard(&mut self) {
        self.tmp.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("plots/accuracy.png").is_ok());
        assert!(check_name("model/data/model.pth").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a\\b", "./a", ".upload-x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
