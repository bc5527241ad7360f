//! A coordinator whose stdout and stderr were closed after it started (the
//! terminal or ssh session that launched it is gone, or `| head` took the
//! address line and left) keeps serving, and still stops on SIGTERM: a log
//! line that cannot be written is dropped, not a panic in the task that
//! logged it (which had left the shutdown signal unsent).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn a_coordinator_with_closed_output_serves_and_stops_on_sigterm() {
    let dir = tempdir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mnist-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("s.db"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mnist-coordinator");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the address line");
    let url = line.trim().strip_prefix("mnist-coordinator listening on ").expect("the address line").to_string();
    // Both readers leave.
    drop(out);
    drop(child.stderr.take());

    let mut c = connect(&url).await;
    for i in 0..3 {
        // Every call logs at info level.
        let s = create(&mut c, small_spec(&format!("s{i}"), 2)).await;
        assert_eq!(s.name, format!("s{i}"));
    }
    let listed = c.study.list_studies(mnist_proto::v1::ListStudiesRequest::default()).await.expect("list studies").into_inner();
    assert_eq!(listed.studies.len(), 3);

    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let end = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("the coordinator ignored SIGTERM with its output closed");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit status {status}");
}
