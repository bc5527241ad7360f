//! The data set a coordinator serves to workers that have none: the four
//! MNIST files of its `--data-dir`, each verified once (decompressed length,
//! idx header and the published SHA-256, via `mnist_common::mnist`) before
//! the first byte is sent, then streamed in chunks as stored (gzip or raw).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mnist_common::mnist::{self, MnistFile, FILES};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Mutex};

use crate::error::CoordError;

/// Bytes per streamed chunk.
pub const CHUNK_BYTES: usize = 1 << 20;

/// One chunk of one file.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub file_name: String,
    pub canonical_name: &'static str,
    pub sha256: &'static str,
    pub gzip: bool,
    pub file_size: u64,
    pub offset: u64,
    pub data: Vec<u8>,
    pub last: bool,
}

/// The served data set.
#[derive(Debug)]
pub struct Dataset {
    dir: Option<PathBuf>,
    /// Verified paths by canonical name (verification is done once).
    verified: Mutex<HashMap<&'static str, PathBuf>>,
}

impl Dataset {
    /// Serves `dir` (or nothing).
    pub fn new(dir: Option<PathBuf>) -> Self {
        Dataset { dir, verified: Mutex::new(HashMap::new()) }
    }

    /// The files asked for (canonical names, with or without `.gz`; empty: all).
    pub fn select(names: &[String]) -> Result<Vec<MnistFile>, CoordError> {
        if names.is_empty() {
            return Ok(FILES.to_vec());
        }
        names
            .iter()
            .map(|n| {
                let n = n.trim().trim_end_matches(".gz");
                FILES.iter().find(|f| f.name == n).copied().ok_or_else(|| {
                    let known: Vec<&str> = FILES.iter().map(|f| f.name).collect();
                    CoordError::InvalidArgument(format!("unknown data set file {n:?}; the files are {}", known.join(", ")))
                })
            })
            .collect()
    }

    async fn verified_path(&self, file: &MnistFile) -> Result<PathBuf, CoordError> {
        let dir = self.dir.as_ref().ok_or_else(|| {
            CoordError::FailedPrecondition(
                "this coordinator serves no data set; start it with --data-dir pointing at the MNIST files, or give the worker its own --data-dir".into(),
            )
        })?;
        let mut cache = self.verified.lock().await;
        if let Some(p) = cache.get(file.name) {
            return Ok(p.clone());
        }
        let path = mnist::locate(dir, file).ok_or_else(|| {
            CoordError::NotFound(format!("the coordinator's data directory {} has no {} (or .gz)", dir.display(), file.name))
        })?;
        let (p, f) = (path.clone(), *file);
        tokio::task::spawn_blocking(move || mnist::read_verified(&p, &f))
            .await
            .map_err(|e| CoordError::Internal(e.to_string()))?
            .map_err(|e| CoordError::FailedPrecondition(format!("the coordinator's copy is not usable: {e}")))?;
        cache.insert(file.name, path.clone());
        Ok(path)
    }

    /// Verifies the files, then streams them in chunks on a channel (bounded,
    /// so a slow reader slows the disk reads).
    pub async fn stream(&self, files: Vec<MnistFile>) -> Result<mpsc::Receiver<Result<Chunk, CoordError>>, CoordError> {
        let mut paths = Vec::with_capacity(files.len());
        for f in &files {
            paths.push((self.verified_path(f).await?, *f));
        }
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for (path, file) in paths {
                if let Err(e) = send_file(&path, &file, &tx).await {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        });
        Ok(rx)
    }
}

async fn send_file(path: &Path, file: &MnistFile, tx: &mpsc::Sender<Result<Chunk, CoordError>>) -> Result<(), CoordError> {
    let io = |e: std::io::Error| CoordError::Internal(format!("reading {}: {e}", path.display()));
    let mut f = tokio::fs::File::open(path).await.map_err(io)?;
    let size = f.metadata().await.map_err(io)?.len();
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| file.name.to_string());
    let gzip = file_name.ends_with(".gz");
    let mut offset = 0u64;
    loop {
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut filled = 0;
        while filled < buf.len() {
            let n = f.read(&mut buf[filled..]).await.map_err(io)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        buf.truncate(filled);
        let last = offset + filled as u64 >= size || filled == 0;
        let chunk = Chunk {
            file_name: file_name.clone(),
            canonical_name: file.name,
            sha256: file.sha256,
            gzip,
            file_size: size,
            offset,
            data: buf,
            last,
        };
        offset += filled as u64;
        if tx.send(Ok(chunk)).await.is_err() {
            return Ok(()); // the client went away
        }
        if last {
            return Ok(());
        }
    }
}
