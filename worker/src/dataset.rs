//! The worker's copy of MNIST. Files missing from `--data-dir` are fetched
//! from the coordinator (`FetchDataset`, a server stream of chunks), written
//! to a temporary name, verified against the published SHA-256
//! (`mnist_common::mnist::read_verified`) and only then renamed into place,
//! so a cluster node needs nothing but the coordinator's address.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mnist_common::mnist::{self, MnistFile, FILES};
use mnist_proto::v1 as pb;
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

use crate::client::{cancelled, CallError, Cancel, Client};
use crate::error::WorkerError;

/// Attempts at the whole fetch while the coordinator is unreachable.
const ATTEMPTS: u32 = 8;

/// The files of `FILES` that `dir` lacks (neither raw nor `.gz`).
pub fn missing(dir: &Path) -> Vec<MnistFile> {
    FILES.iter().filter(|f| mnist::locate(dir, f).is_none()).copied().collect()
}

/// Makes sure `dir` holds all four files, fetching the missing ones from the
/// coordinator. Returns the names fetched. `shutdown` stops the fetch at
/// once ([`WorkerError::Shutdown`]; partial files are removed).
pub async fn ensure(client: &Client, dir: &Path, mut shutdown: Cancel) -> Result<Vec<String>, WorkerError> {
    let want = missing(dir);
    if want.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = want.iter().map(|f| f.name.to_string()).collect();
    tracing::info!(dir = %dir.display(), files = %names.join(", "), coordinator = %client.url(), "MNIST is missing locally; fetching it from the coordinator");
    tokio::fs::create_dir_all(dir).await.map_err(WorkerError::io(dir))?;
    let fail = |message: String| WorkerError::Fetch { dir: dir.to_path_buf(), message };
    let mut backoff = client.backoff();
    loop {
        match fetch_once(client, dir, &names, &mut shutdown).await {
            Ok(()) => break,
            Err(Fetch::Retry(msg)) if backoff.attempts() < ATTEMPTS => {
                let d = backoff.next_delay();
                tracing::warn!(retry_in_ms = d.as_millis() as u64, "fetching MNIST failed ({msg}); retrying");
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = cancelled(Some(&mut shutdown)) => return Err(WorkerError::Shutdown),
                }
            }
            Err(Fetch::Retry(msg)) | Err(Fetch::Fatal(msg)) => return Err(fail(msg)),
            Err(Fetch::Data(e)) => return Err(WorkerError::Data(e)),
            Err(Fetch::Shutdown) => return Err(WorkerError::Shutdown),
        }
    }
    let still = missing(dir);
    if !still.is_empty() {
        let n: Vec<&str> = still.iter().map(|f| f.name).collect();
        return Err(fail(format!("the coordinator did not send {}", n.join(", "))));
    }
    tracing::info!(dir = %dir.display(), "MNIST fetched and verified");
    Ok(names)
}

enum Fetch {
    Retry(String),
    Fatal(String),
    Data(mnist::DataError),
    Shutdown,
}

/// A file being received.
struct Partial {
    file: MnistFile,
    tmp: PathBuf,
    target: PathBuf,
    out: tokio::fs::File,
    written: u64,
}

async fn fetch_once(client: &Client, dir: &Path, names: &[String], shutdown: &mut Cancel) -> Result<(), Fetch> {
    let stream = client
        .retry("FetchDataset", Some(&mut *shutdown), Some(tokio::time::Instant::now() + client.backoff_span(ATTEMPTS)), |c| {
            let req = pb::FetchDatasetRequest { files: names.to_vec() };
            async move { c.worker().fetch_dataset(req).await }
        })
        .await;
    let mut stream = match stream {
        Ok(s) => s,
        Err(CallError::Cancelled) => return Err(Fetch::Shutdown),
        Err(CallError::GaveUp(s)) => return Err(Fetch::Fatal(format!("the coordinator is unreachable: {}", s.message()))),
        Err(e) => return Err(Fetch::Fatal(e.to_string())),
    };
    let mut open: HashMap<String, Partial> = HashMap::new();
    let result = async {
        loop {
            let msg = tokio::select! {
                m = stream.next() => m,
                _ = cancelled(Some(&mut *shutdown)) => return Err(Fetch::Shutdown),
            };
            let Some(msg) = msg else { break };
            let chunk = msg.map_err(|s| match s.code() {
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Cancelled => {
                    Fetch::Retry(s.message().to_string())
                }
                _ => Fetch::Fatal(format!("the coordinator refused: {}", s.message())),
            })?;
            receive(dir, &mut open, chunk).await?;
        }
        if let Some(name) = open.keys().next() {
            return Err(Fetch::Retry(format!("the stream ended in the middle of {name}")));
        }
        Ok(())
    }
    .await;
    for p in open.into_values() {
        let _ = tokio::fs::remove_file(&p.tmp).await;
    }
    result
}

async fn receive(dir: &Path, open: &mut HashMap<String, Partial>, c: pb::DatasetChunk) -> Result<(), Fetch> {
    let file = FILES
        .iter()
        .find(|f| f.name == c.canonical_name)
        .copied()
        .ok_or_else(|| Fetch::Fatal(format!("the coordinator sent an unknown file {:?}", c.canonical_name)))?;
    if c.file_name != file.name && c.file_name != format!("{}.gz", file.name) {
        return Err(Fetch::Fatal(format!("the coordinator sent {:?} under the unexpected name {:?}", file.name, c.file_name)));
    }
    if !c.sha256.is_empty() && c.sha256 != file.sha256 {
        return Err(Fetch::Fatal(format!(
            "the coordinator announces SHA-256 {} for {}, but the published value is {}",
            c.sha256, file.name, file.sha256
        )));
    }
    // No copy of the file can be larger than this; a coordinator that sends
    // more (or announces more) is refused before the bytes fill the disk.
    let cap = file.max_stored_len(c.file_name.ends_with(".gz"));
    let oversized = |n: u64| {
        Fetch::Fatal(format!(
            "the coordinator sent {} ({n} bytes or more), larger than any copy of {} can be ({cap} bytes); its copy is not the canonical MNIST file: check the coordinator's --data-dir, or give the worker its own --data-dir",
            c.file_name, file.name
        ))
    };
    if c.file_size > cap {
        return Err(oversized(c.file_size));
    }
    if !open.contains_key(file.name) {
        if c.offset != 0 {
            return Err(Fetch::Retry(format!("{} started at offset {}", file.name, c.offset)));
        }
        let tmp = dir.join(format!(".fetch-{}-{}", std::process::id(), c.file_name));
        let out = tokio::fs::File::create(&tmp).await.map_err(|e| Fetch::Fatal(format!("{}: {e}", tmp.display())))?;
        open.insert(file.name.to_string(), Partial { file, tmp, target: dir.join(&c.file_name), out, written: 0 });
    }
    let p = open.get_mut(file.name).ok_or_else(|| Fetch::Fatal("internal: lost a partial file".into()))?;
    if c.offset != p.written {
        return Err(Fetch::Retry(format!("{}: chunk at offset {} after {} bytes", file.name, c.offset, p.written)));
    }
    let io = |e: std::io::Error, path: &Path| Fetch::Fatal(format!("{}: {e}", path.display()));
    let total = p.written + c.data.len() as u64;
    if total > cap {
        return Err(oversized(total));
    }
    p.out.write_all(&c.data).await.map_err(|e| io(e, &p.tmp))?;
    p.written += c.data.len() as u64;
    if !c.last {
        return Ok(());
    }
    let mut p = open.remove(file.name).ok_or_else(|| Fetch::Fatal("internal: lost a partial file".into()))?;
    p.out.flush().await.map_err(|e| io(e, &p.tmp))?;
    p.out.sync_all().await.map_err(|e| io(e, &p.tmp))?;
    drop(p.out);
    if c.file_size != 0 && p.written != c.file_size {
        let _ = tokio::fs::remove_file(&p.tmp).await;
        return Err(Fetch::Retry(format!("{}: received {} of {} bytes", file.name, p.written, c.file_size)));
    }
    // The temporary name keeps the `.gz` suffix, so it is read the same way.
    let (tmp, f) = (p.tmp.clone(), p.file);
    let verified = tokio::task::spawn_blocking(move || mnist::read_verified(&tmp, &f))
        .await
        .map_err(|e| Fetch::Fatal(format!("verifying {}: {e}", file.name)))?;
    if let Err(e) = verified {
        let _ = tokio::fs::remove_file(&p.tmp).await;
        return Err(Fetch::Data(e));
    }
    tokio::fs::rename(&p.tmp, &p.target).await.map_err(|e| io(e, &p.target))?;
    tracing::info!(file = %p.target.display(), bytes = p.written, "fetched and verified");
    Ok(())
}
