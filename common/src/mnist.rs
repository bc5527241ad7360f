//! The MNIST data set: locate, decompress, verify and parse the four idx files,
//! and download missing ones from the public mirrors.
//!
//! Every file is checked twice before any byte reaches a tensor: its
//! decompressed length and idx header must match the canonical layout, and the
//! SHA-256 of the decompressed content must equal the published digest. A
//! truncated, corrupt or foreign file therefore yields a [`DataError`] that
//! names the file and what is wrong, never silently wrong data.
//!
//! Downloads go to a temporary file next to the target, are verified, and are
//! then renamed into place, so an interrupted download never leaves a file that
//! looks complete.

use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Image side length in pixels.
pub const ROWS: usize = 28;
/// Image width in pixels.
pub const COLS: usize = 28;
/// Pixels per image.
pub const PIXELS: usize = ROWS * COLS;
/// Number of classes.
pub const CLASSES: usize = 10;
/// Mean of the training pixels after scaling to [0, 1].
pub const MEAN: f64 = 0.1307;
/// Standard deviation of the training pixels after scaling to [0, 1].
pub const STD: f64 = 0.3081;

/// The default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "data/mnist";
/// The environment variable that overrides the data directory.
pub const DATA_DIR_ENV: &str = "MNIST_DATA_DIR";
/// The public mirrors, tried in order. Each serves `<name>.gz`.
pub const DEFAULT_MIRRORS: [&str; 2] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
];

/// Whether an idx file holds images or labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// idx3: magic 2051, count × 28 × 28 bytes.
    Images,
    /// idx1: magic 2049, count bytes.
    Labels,
}

/// One of the four canonical files.
#[derive(Debug, Clone, Copy)]
pub struct MnistFile {
    /// File name without `.gz`, e.g. `train-images-idx3-ubyte`.
    pub name: &'static str,
    /// SHA-256 of the decompressed content (the published value).
    pub sha256: &'static str,
    /// Images or labels.
    pub kind: FileKind,
    /// Number of records.
    pub count: usize,
}

impl MnistFile {
    /// The idx magic number of this file.
    pub fn magic(&self) -> u32 {
        match self.kind {
            FileKind::Images => 2051,
            FileKind::Labels => 2049,
        }
    }
    /// Length of the idx header in bytes.
    pub fn header_len(&self) -> usize {
        match self.kind {
            FileKind::Images => 16,
            FileKind::Labels => 8,
        }
    }
    /// Total decompressed length in bytes.
    pub fn expected_len(&self) -> usize {
        self.header_len()
            + self.count
                * match self.kind {
                    FileKind::Images => PIXELS,
                    FileKind::Labels => 1,
                }
    }
    /// The largest a stored copy of this file can be: the idx content itself
    /// (raw), or that plus gzip's framing, which never grows data by more than
    /// a few bytes per 64 KiB block (`.gz`). Anything larger is refused before
    /// it fills memory or disk.
    pub fn max_stored_len(&self, gzip: bool) -> u64 {
        let raw = self.expected_len() as u64;
        if gzip {
            raw + raw / 1000 + 64 * 1024
        } else {
            raw
        }
    }
}

/// The training images.
pub const TRAIN_IMAGES: MnistFile = MnistFile {
    name: "train-images-idx3-ubyte",
    sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    kind: FileKind::Images,
    count: 60_000,
};
/// The training labels.
pub const TRAIN_LABELS: MnistFile = MnistFile {
    name: "train-labels-idx1-ubyte",
    sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    kind: FileKind::Labels,
    count: 60_000,
};
/// The test images.
pub const TEST_IMAGES: MnistFile = MnistFile {
    name: "t10k-images-idx3-ubyte",
    sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    kind: FileKind::Images,
    count: 10_000,
};
/// The test labels.
pub const TEST_LABELS: MnistFile = MnistFile {
    name: "t10k-labels-idx1-ubyte",
    sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    kind: FileKind::Labels,
    count: 10_000,
};
/// All four files, in a fixed order.
pub const FILES: [MnistFile; 4] = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];

/// What can go wrong with the data set. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Neither `<name>` nor `<name>.gz` exists.
    #[error("MNIST file {name} not found in {dir} (looked for {name} and {name}.gz); run with network access to download it, or point --data-dir / MNIST_DATA_DIR at a copy")]
    Missing { name: String, dir: PathBuf },
    /// An I/O error while reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The gzip stream is corrupt or truncated.
    #[error("{path}: the gzip data is corrupt or truncated ({source}); delete the file so it can be downloaded again")]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The decompressed content is shorter or longer than the canonical file.
    #[error("{path}: expected {expected} bytes of decompressed idx data, found {actual} (the file is truncated or not the canonical MNIST file)")]
    Length {
        path: PathBuf,
        expected: usize,
        actual: usize,
    },
    /// The content is longer than the canonical file (reading stopped there:
    /// a gzip bomb or a huge file never fills memory).
    #[error("{path}: holds more than the {expected} bytes of {what} the canonical MNIST file has (reading stopped there); it is not the canonical file: delete it so it can be fetched again")]
    TooLong {
        path: PathBuf,
        expected: u64,
        what: &'static str,
    },
    /// The idx header does not match.
    #[error("{path}: bad idx header: {detail}")]
    Header { path: PathBuf, detail: String },
    /// The content's SHA-256 differs from the published value.
    #[error("{path}: SHA-256 of the decompressed content is {actual}, expected {expected} (the file is corrupt; delete it so it can be downloaded again)")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// Every mirror failed for one file.
    #[error("could not download {name}: {}", attempts.join("; "))]
    Download { name: String, attempts: Vec<String> },
    /// A label outside 0..=9.
    #[error("{path}: label {label} at index {index} is outside 0..=9")]
    Label {
        path: PathBuf,
        index: usize,
        label: u8,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One split (train or test): raw pixels (0..=255, row-major, `n × 784`) and
/// labels.
#[derive(Debug, Clone)]
pub struct Split {
    /// `n × 784` bytes.
    pub images: Vec<u8>,
    /// `n` labels in 0..=9.
    pub labels: Vec<u8>,
}

impl Split {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// True when the split holds no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// The first `n` examples (or all, when `n` is larger).
    pub fn truncated(mut self, n: usize) -> Split {
        let n = n.min(self.len());
        self.images.truncate(n * PIXELS);
        self.labels.truncate(n);
        self
    }
    /// The pixels of example `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * PIXELS..(i + 1) * PIXELS]
    }
}

/// The whole data set.
#[derive(Debug, Clone)]
pub struct Mnist {
    /// 60,000 training examples.
    pub train: Split,
    /// 10,000 test examples.
    pub test: Split,
}

/// Resolve the data directory: the explicit value, else `MNIST_DATA_DIR`, else
/// [`DEFAULT_DATA_DIR`].
pub fn resolve_data_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os(DATA_DIR_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_DATA_DIR),
    }
}

/// The path of `file` in `dir`: the raw file if present, else the `.gz` one.
pub fn locate(dir: &Path, file: &MnistFile) -> Option<PathBuf> {
    let raw = dir.join(file.name);
    if raw.is_file() {
        return Some(raw);
    }
    let gz = dir.join(format!("{}.gz", file.name));
    gz.is_file().then_some(gz)
}

/// Decompress (when the name ends in `.gz`) and verify one file; returns the
/// decompressed idx content.
///
/// At most one byte more than the canonical content is read (decompressed),
/// so a gzip bomb or a huge file is refused without filling memory.
pub fn read_verified(path: &Path, file: &MnistFile) -> Result<Vec<u8>, DataError> {
    let f = fs::File::open(path).map_err(io_err(path))?;
    let is_gz = path.extension().is_some_and(|e| e == "gz");
    let content = if is_gz {
        decompress(path, std::io::BufReader::new(f), file)?
    } else {
        read_capped(path, f, file, "idx data", io_err(path))?
    };
    verify_content(path, file, &content)?;
    Ok(content)
}

/// Decompresses a gzip stream of `file`, stopping one byte past the
/// canonical length.
fn decompress(path: &Path, compressed: impl Read, file: &MnistFile) -> Result<Vec<u8>, DataError> {
    read_capped(path, GzDecoder::new(compressed), file, "decompressed idx data", |source| DataError::Gzip {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads `r` up to one byte past `file`'s canonical length: more is
/// [`DataError::TooLong`] (`what` names the data), a read error goes
/// through `on_err`.
fn read_capped(
    path: &Path,
    r: impl Read,
    file: &MnistFile,
    what: &'static str,
    on_err: impl FnOnce(std::io::Error) -> DataError,
) -> Result<Vec<u8>, DataError> {
    let expected = file.expected_len() as u64;
    let mut out = Vec::with_capacity(file.expected_len() + 1);
    r.take(expected + 1).read_to_end(&mut out).map_err(on_err)?;
    if out.len() as u64 > expected {
        return Err(DataError::TooLong {
            path: path.to_path_buf(),
            expected,
            what,
        });
    }
    Ok(out)
}

/// Check length, idx header and SHA-256 of decompressed content.
pub fn verify_content(path: &Path, file: &MnistFile, content: &[u8]) -> Result<(), DataError> {
    let header = |detail: String| DataError::Header {
        path: path.to_path_buf(),
        detail,
    };
    if content.len() < file.header_len() {
        return Err(DataError::Length {
            path: path.to_path_buf(),
            expected: file.expected_len(),
            actual: content.len(),
        });
    }
    let be = |i: usize| u32::from_be_bytes([content[i], content[i + 1], content[i + 2], content[i + 3]]);
    let magic = be(0);
    if magic != file.magic() {
        return Err(header(format!(
            "magic number {magic}, expected {} ({} file)",
            file.magic(),
            match file.kind {
                FileKind::Images => "image",
                FileKind::Labels => "label",
            }
        )));
    }
    let count = be(4) as usize;
    if count != file.count {
        return Err(header(format!("{count} records, expected {}", file.count)));
    }
    if file.kind == FileKind::Images {
        let (r, c) = (be(8) as usize, be(12) as usize);
        if (r, c) != (ROWS, COLS) {
            return Err(header(format!("images are {r}x{c}, expected {ROWS}x{COLS}")));
        }
    }
    if content.len() != file.expected_len() {
        return Err(DataError::Length {
            path: path.to_path_buf(),
            expected: file.expected_len(),
            actual: content.len(),
        });
    }
    let actual = hex::encode(Sha256::digest(content));
    if actual != file.sha256 {
        return Err(DataError::Checksum {
            path: path.to_path_buf(),
            expected: file.sha256.to_string(),
            actual,
        });
    }
    Ok(())
}

fn load_file(dir: &Path, file: &MnistFile) -> Result<Vec<u8>, DataError> {
    let path = locate(dir, file).ok_or_else(|| DataError::Missing {
        name: file.name.to_string(),
        dir: dir.to_path_buf(),
    })?;
    let mut content = read_verified(&path, file)?;
    content.drain(..file.header_len());
    if file.kind == FileKind::Labels {
        if let Some((index, &label)) = content.iter().enumerate().find(|(_, &l)| l as usize >= CLASSES) {
            return Err(DataError::Label { path, index, label });
        }
    }
    Ok(content)
}

/// Load and verify all four files from `dir` (no network).
pub fn load(dir: &Path) -> Result<Mnist, DataError> {
    let train = Split {
        images: load_file(dir, &TRAIN_IMAGES)?,
        labels: load_file(dir, &TRAIN_LABELS)?,
    };
    Ok(Mnist { train, test: load_test(dir)? })
}

/// Load and verify only the test set's two files from `dir` (no network),
/// for what never trains (inference on test images).
pub fn load_test(dir: &Path) -> Result<Split, DataError> {
    Ok(Split {
        images: load_file(dir, &TEST_IMAGES)?,
        labels: load_file(dir, &TEST_LABELS)?,
    })
}

/// The state of one file in a data directory, for `doctor`.
#[derive(Debug)]
pub struct FileStatus {
    /// The canonical file.
    pub file: MnistFile,
    /// Where it was found, if anywhere.
    pub path: Option<PathBuf>,
    /// `Ok` when found and verified.
    pub result: Result<(), DataError>,
}

/// Verify every file in `dir` without stopping at the first problem.
pub fn check_dir(dir: &Path) -> Vec<FileStatus> {
    FILES
        .iter()
        .map(|file| {
            let path = locate(dir, file);
            let result = match &path {
                None => Err(DataError::Missing {
                    name: file.name.to_string(),
                    dir: dir.to_path_buf(),
                }),
                Some(p) => read_verified(p, file).map(|_| ()),
            };
            FileStatus {
                file: *file,
                path,
                result,
            }
        })
        .collect()
}

/// Mirrors to download from: `MNIST_MIRRORS` (comma-separated base URLs) if
/// set, else [`DEFAULT_MIRRORS`].
pub fn mirrors_from_env() -> Vec<String> {
    match std::env::var("MNIST_MIRRORS") {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        _ => DEFAULT_MIRRORS.iter().map(|s| s.to_string()).collect(),
    }
}

/// Download every missing file into `dir`, trying `mirrors` in order for each.
///
/// Files already present are left alone (and verified later by [`load`]).
/// Each download is verified before it is renamed into place.
pub fn ensure_downloaded(dir: &Path, mirrors: &[String]) -> Result<(), DataError> {
    let missing: Vec<&MnistFile> = FILES.iter().filter(|f| locate(dir, f).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| DataError::Download {
            name: "client".into(),
            attempts: vec![e.to_string()],
        })?;
    for file in missing {
        let mut attempts = Vec::new();
        let mut done = false;
        for mirror in mirrors {
            let url = format!("{}/{}.gz", mirror.trim_end_matches('/'), file.name);
            tracing::info!(%url, "downloading {}", file.name);
            match download_one(&client, &url, dir, file) {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(%url, error = %e, "download failed, trying the next mirror");
                    attempts.push(format!("{url}: {e}"));
                }
            }
        }
        if !done {
            return Err(DataError::Download {
                name: file.name.to_string(),
                attempts,
            });
        }
    }
    Ok(())
}

fn download_one(
    client: &reqwest::blocking::Client,
    url: &str,
    dir: &Path,
    file: &MnistFile,
) -> Result<(), String> {
    let mut resp = client.get(url).send().map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let cap = file.max_stored_len(true);
    let too_big = || format!("the body is larger than {cap} bytes, more than any gzip of {} can be; the mirror does not serve MNIST", file.name);
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(too_big());
    }
    let bar = crate::progress::bytes_bar(resp.content_length(), file.name);
    let mut body = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = resp.read(&mut buf).map_err(|e| format!("reading the body: {e}"))?;
        if n == 0 {
            break;
        }
        if (body.len() + n) as u64 > cap {
            bar.finish_and_clear();
            return Err(too_big());
        }
        body.extend_from_slice(&buf[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    let target = dir.join(format!("{}.gz", file.name));
    // Verify before anything lands under the final name.
    let content = decompress(&target, &body[..], file).map_err(|e| e.to_string())?;
    verify_content(&target, file, &content).map_err(|e| e.to_string())?;
    let tmp = dir.join(format!(".{}.gz.part-{}", file.name, std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        fs::rename(&tmp, &target)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("writing {}: {e}", target.display())
    })?;
    tracing::info!(path = %target.display(), "downloaded and verified");
    Ok(())
}

/// Find the data set in `dir`, downloading missing files from the mirrors in
/// `MNIST_MIRRORS` (or the defaults), then load and verify it.
pub fn load_or_download(dir: &Path) -> Result<Mnist, DataError> {
    ensure_downloaded(dir, &mirrors_from_env())?;
    load(dir)
}
