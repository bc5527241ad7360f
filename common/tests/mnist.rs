//! The MNIST loader against the real data set, damaged copies of it, and a
//! local HTTP server standing in for the download mirrors.

use mnist_common::mnist::{self, DataError, FILES, TEST_LABELS, TRAIN_LABELS};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn shared_data() -> PathBuf {
    match std::env::var_os("MNIST_TEST_DATA") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/mnist"),
    }
}

/// A copy of the shared data set in a temp dir, to damage.
fn copy_data() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in FILES {
        let src = mnist::locate(&shared_data(), &f).expect("shared MNIST copy");
        std::fs::copy(&src, dir.path().join(src.file_name().unwrap())).unwrap();
    }
    dir
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut out).unwrap();
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn loads_and_verifies_the_real_data_set() {
    let m = mnist::load(&shared_data()).unwrap();
    assert_eq!(m.train.len(), 60_000);
    assert_eq!(m.test.len(), 10_000);
    assert_eq!(m.train.images.len(), 60_000 * 784);
    let mut counts = [0usize; 10];
    m.test.labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
    let mean = m.train.images.iter().map(|&p| p as f64 / 255.0).sum::<f64>() / m.train.images.len() as f64;
    assert!((mean - 0.1307).abs() < 1e-3, "{mean}");
}

#[test]
fn raw_files_work_as_well_as_gz() {
    let dir = copy_data();
    let gz = dir.path().join("t10k-labels-idx1-ubyte.gz");
    std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), gunzip(&gz)).unwrap();
    std::fs::remove_file(&gz).unwrap();
    let m = mnist::load(dir.path()).unwrap();
    assert_eq!(m.test.labels.len(), 10_000);
}

#[test]
fn truncated_gzip_names_the_file() {
    let dir = copy_data();
    let p = dir.path().join("train-labels-idx1-ubyte.gz");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let err = mnist::load(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::Gzip { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("train-labels-idx1-ubyte.gz") && msg.contains("corrupt or truncated"), "{msg}");
}

#[test]
fn truncated_content_reports_lengths() {
    let dir = copy_data();
    let p = dir.path().join("t10k-labels-idx1-ubyte.gz");
    let raw = gunzip(&p);
    std::fs::write(&p, gzip(&raw[..5000])).unwrap();
    let err = mnist::load(dir.path()).unwrap_err();
    match &err {
        DataError::Length { expected, actual, .. } => assert_eq!((*expected, *actual), (10_008, 5000)),
        other => panic!("expected a length error, got {other:?}"),
    }
    assert!(err.to_string().contains("t10k-labels-idx1-ubyte.gz"));
}

/// A gzip bomb under a valid name (the real labels followed by 64 MiB of
/// zeros, 64 KiB compressed): decompression stops one byte past the
/// canonical length instead of inflating it all into memory.
#[test]
fn a_gzip_bomb_is_cut_off_at_the_canonical_length() {
    let dir = copy_data();
    let p = dir.path().join("t10k-labels-idx1-ubyte.gz");
    let mut raw = gunzip(&p);
    raw.resize(raw.len() + (64 << 20), 0);
    std::fs::write(&p, gzip(&raw)).unwrap();
    drop(raw);
    let err = mnist::load(dir.path()).unwrap_err();
    match &err {
        DataError::TooLong { expected, .. } => assert_eq!(*expected, 10_008),
        other => panic!("expected the content to be cut off, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("t10k-labels-idx1-ubyte.gz") && msg.contains("more than the 10008 bytes") && msg.contains("delete it"), "{msg}");
}

/// The same for a raw (uncompressed) file that is too long.
#[test]
fn an_oversized_raw_file_is_refused_without_reading_it_all() {
    let dir = copy_data();
    let gz = dir.path().join("t10k-labels-idx1-ubyte.gz");
    let raw_path = dir.path().join("t10k-labels-idx1-ubyte");
    let mut raw = gunzip(&gz);
    raw.extend_from_slice(&[0u8; 1000]);
    std::fs::write(&raw_path, &raw).unwrap();
    std::fs::remove_file(&gz).unwrap();
    let err = mnist::load(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::TooLong { expected: 10_008, .. }), "{err:?}");
    assert!(err.to_string().contains("t10k-labels-idx1-ubyte"), "{err}");
}

#[test]
fn a_flipped_byte_fails_the_checksum() {
    let dir = copy_data();
    let p = dir.path().join("t10k-labels-idx1-ubyte.gz");
    let mut raw = gunzip(&p);
    raw[100] = (raw[100] + 1) % 10; // still a valid label, still the right length
    std::fs::write(&p, gzip(&raw)).unwrap();
    let err = mnist::load(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::Checksum { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("t10k-labels-idx1-ubyte.gz") && msg.contains(TEST_LABELS.sha256), "{msg}");
}

#[test]
fn swapped_files_fail_the_header_check() {
    let dir = copy_data();
    // Labels where the images should be.
    std::fs::copy(dir.path().join("t10k-labels-idx1-ubyte.gz"), dir.path().join("t10k-images-idx3-ubyte.gz")).unwrap();
    let err = mnist::load(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::Header { .. }), "{err:?}");
    assert!(err.to_string().contains("magic number 2049, expected 2051"), "{err}");
}

#[test]
fn missing_file_says_where_it_looked() {
    let dir = copy_data();
    std::fs::remove_file(dir.path().join("train-labels-idx1-ubyte.gz")).unwrap();
    let err = mnist::load(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    assert!(err.to_string().contains("train-labels-idx1-ubyte"));
    let statuses = mnist::check_dir(dir.path());
    assert_eq!(statuses.iter().filter(|s| s.result.is_err()).count(), 1);
}

/// A tiny HTTP/1.1 server: `routes` maps a request path to a body; anything
/// else is a 404. Counts the requests it served.
struct Server {
    base: String,
    hits: Arc<AtomicUsize>,
}

fn serve(routes: Vec<(String, Vec<u8>)>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/mnist/", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
            h.fetch_add(1, Ordering::SeqCst);
            match routes.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => {
                    let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    let _ = s.write_all(body);
                }
                None => {
                    let _ = write!(s, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                }
            }
        }
    });
    Server { base, hits }
}

fn routes_for_all(damage: Option<&str>) -> Vec<(String, Vec<u8>)> {
    FILES
        .iter()
        .map(|f| {
            let src = mnist::locate(&shared_data(), f).unwrap();
            let mut body = std::fs::read(&src).unwrap();
            if damage == Some(f.name) {
                let mut raw = gunzip(&src);
                let last = raw.len() - 1;
                raw[last] ^= 0xff;
                body = gzip(&raw);
            }
            (format!("/mnist/{}.gz", f.name), body)
        })
        .collect()
}

#[test]
fn downloads_from_the_second_mirror_when_the_first_fails() {
    let empty = serve(vec![]);
    let good = serve(routes_for_all(None));
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("mnist");
    mnist::ensure_downloaded(&target, &[empty.base.clone(), good.base.clone()]).unwrap();
    assert_eq!(empty.hits.load(Ordering::SeqCst), 4, "the first mirror was tried for each file");
    assert_eq!(good.hits.load(Ordering::SeqCst), 4);
    let m = mnist::load(&target).unwrap();
    assert_eq!(m.train.len(), 60_000);
    // No temporary files left behind.
    let names: Vec<String> = std::fs::read_dir(&target).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    // A second call downloads nothing.
    mnist::ensure_downloaded(&target, std::slice::from_ref(&good.base)).unwrap();
    assert_eq!(good.hits.load(Ordering::SeqCst), 4);
}

#[test]
fn a_corrupt_download_is_rejected_and_not_kept() {
    let bad = serve(routes_for_all(Some(TRAIN_LABELS.name)));
    let dir = tempfile::tempdir().unwrap();
    let err = mnist::ensure_downloaded(dir.path(), std::slice::from_ref(&bad.base)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::Download { .. }), "{err:?}");
    assert!(msg.contains("train-labels-idx1-ubyte") && msg.contains("SHA-256"), "{msg}");
    assert!(mnist::locate(dir.path(), &TRAIN_LABELS).is_none(), "a corrupt file must not land under its final name");
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".part")));
}

/// A mirror that answers with far more bytes than any gzip of the file can
/// have is refused before the body is read into memory.
#[test]
fn an_oversized_download_is_refused() {
    let cap = TEST_LABELS.max_stored_len(true) as usize;
    let bad = serve(vec![(format!("/mnist/{}.gz", TEST_LABELS.name), vec![0x1f; cap + 1])]);
    let dir = copy_data();
    std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let err = mnist::ensure_downloaded(dir.path(), std::slice::from_ref(&bad.base)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("t10k-labels-idx1-ubyte") && msg.contains(&format!("larger than {cap} bytes")), "{msg}");
    assert!(mnist::locate(dir.path(), &TEST_LABELS).is_none());
}

#[test]
fn unreachable_mirrors_give_a_clear_error() {
    // A port with nothing listening.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let err = mnist::ensure_downloaded(dir.path(), &[format!("http://127.0.0.1:{port}/")]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("could not download train-images-idx3-ubyte"), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
}
