//! The artifact store: files that workers upload for their trials (plots, the
//! model directory), kept on disk under
//! `<artifact root>/study-<id>/trial-<number>/<name>`.
//!
//! A file is written to a temporary name next to its target, hashed while it
//! arrives, checked against the announced size and SHA-256, and renamed into
//! place only when complete, so a broken upload never leaves a partial file
//! under the real name.

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

/// An upload in progress.
#[derive(Debug)]
pub struct Upload {
    tmp: PathBuf,
    target: PathBuf,
    file: tokio::fs::File,
    hasher: Sha256,
    size: u64,
    limit: u64,
}

impl Upload {
    /// Starts writing `name` under `dir`.
    pub async fn begin(dir: &Path, name: &str, limit: u64) -> Result<Upload, CoordError> {
        let rel = check_name(name)?;
        let target = dir.join(&rel);
        let parent = target.parent().unwrap_or(dir).to_path_buf();
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(|e| CoordError::Internal(format!("cannot create {}: {e}", parent.display())))?;
        let tmp = parent.join(format!(".upload-{}", uuid::Uuid::new_v4().simple()));
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| CoordError::Internal(format!("cannot create {}: {e}", tmp.display())))?;
        Ok(Upload { tmp, target, file, hasher: Sha256::new(), size: 0, limit })
    }

    /// Appends bytes.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), CoordError> {
        self.size += data.len() as u64;
        if self.size > self.limit {
            return Err(CoordError::ResourceExhausted(format!(
                "the artifact is larger than the coordinator's limit of {} bytes",
                self.limit
            )));
        }
        self.hasher.update(data);
        self.file
            .write_all(data)
            .await
            .map_err(|e| CoordError::Internal(format!("writing {}: {e}", self.tmp.display())))
    }

    /// Verifies and moves the file into place; returns (path, size, sha256).
    pub async fn finish(mut self, expect_size: Option<u64>, expect_sha: &str) -> Result<(PathBuf, u64, String), CoordError> {
        let sha = hex::encode(self.hasher.clone().finalize());
        if let Some(n) = expect_size {
            if n != self.size {
                self.abort().await;
                return Err(CoordError::InvalidArgument(format!(
                    "the artifact was announced as {n} bytes but {} arrived; upload it again",
                    self.size
                )));
            }
        }
        if !expect_sha.is_empty() && !expect_sha.eq_ignore_ascii_case(&sha) {
            self.abort().await;
            return Err(CoordError::InvalidArgument(format!(
                "the artifact's SHA-256 is {sha}, not the announced {expect_sha}; upload it again"
            )));
        }
        let io = |e: std::io::Error| CoordError::Internal(format!("storing {}: {e}", self.target.display()));
        self.file.flush().await.map_err(io)?;
        self.file.sync_all().await.map_err(io)?;
        tokio::fs::rename(&self.tmp, &self.target).await.map_err(io)?;
        Ok((self.target.clone(), self.size, sha))
    }

    /// Removes the temporary file.
    pub async fn abort(&mut self) {
        let _ = tokio::fs::remove_file(&self.tmp).await;
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
