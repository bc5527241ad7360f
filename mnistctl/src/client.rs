//! The coordinator client used by `study`, `trial` and `workers`: one
//! connection, a small runtime, and errors that say what to do.

use std::time::Duration;

use anyhow::{anyhow, Context};
use mnist_proto::v1::ask_tell_service_client::AskTellServiceClient;
use mnist_proto::v1::study_service_client::StudyServiceClient;
use mnist_proto::v1::worker_service_client::WorkerServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::cli::Global;

/// The clients of one coordinator.
#[derive(Clone)]
pub struct Coordinator {
    /// The address, as given.
    pub url: String,
    pub study: StudyServiceClient<Channel>,
    #[allow(dead_code)]
    pub worker: WorkerServiceClient<Channel>,
    #[allow(dead_code)]
    pub ask_tell: AskTellServiceClient<Channel>,
}

fn unreachable(url: &str, err: &(dyn std::error::Error + 'static)) -> anyhow::Error {
    let mut cause = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    anyhow!(
        "cannot reach coordinator at {url}: {cause}; start it with `mnist-coordinator --listen {}` or point --coordinator / MNISTCTL_COORDINATOR at a running one",
        url.split("://").nth(1).unwrap_or("127.0.0.1:50051")
    )
}

/// Connects to the coordinator named by `--coordinator` / `MNISTCTL_COORDINATOR`.
pub async fn connect(global: &Global) -> anyhow::Result<Coordinator> {
    let url = mnist_common::flags::coordinator_url(&global.coordinator)?;
    let endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("{url:?} is not a valid coordinator address (expected e.g. http://127.0.0.1:50051)"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(|e| unreachable(&url, &e))?;
    Ok(Coordinator {
        url,
        study: StudyServiceClient::new(channel.clone()),
        worker: WorkerServiceClient::new(channel.clone()),
        ask_tell: AskTellServiceClient::new(channel),
    })
}

/// Turns a gRPC status into an error a person can act on.
pub fn rpc_error(url: &str, status: tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unavailable if status.message().contains("transport") || status.message().is_empty() => {
            anyhow!("lost the connection to the coordinator at {url}: {}", status.message())
        }
        // A stream cut off mid-way (the coordinator was killed, or the network
        // dropped) surfaces as an HTTP/2 error, not as the server's status.
        _ if status.message().contains("h2 protocol error") => anyhow!(
            "lost the connection to the coordinator at {url} (it stopped, or the network failed): {}",
            status.message()
        ),
        code => anyhow!("{} ({})", status.message(), code_name(code)),
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        InvalidArgument => "invalid argument",
        NotFound => "not found",
        AlreadyExists => "already exists",
        FailedPrecondition => "failed precondition",
        ResourceExhausted => "resource exhausted",
        Unavailable => "unavailable",
        Internal => "internal error",
        Unauthenticated => "unauthenticated",
        PermissionDenied => "permission denied",
        DeadlineExceeded => "deadline exceeded",
        DataLoss => "data loss",
        _ => "error",
    }
}

/// Runs `f` on a small single-threaded runtime.
pub fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}
