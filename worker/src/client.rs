//! The gRPC connection to the coordinator and the retry rule every call of
//! the worker follows.
//!
//! The channel connects lazily and reconnects by itself; a call that fails
//! because the coordinator is unreachable (UNAVAILABLE and friends) is
//! retried with capped exponential backoff until it succeeds, the caller
//! cancels it, or its deadline passes. Answers that retrying cannot change
//! are returned at once: FAILED_PRECONDITION and NOT_FOUND on a trial call
//! mean the lease is gone ([`CallError::Lost`]: drop the trial), anything
//! else is a refusal.

use std::future::Future;
use std::time::Duration;

use mnist_proto::v1::study_service_client::StudyServiceClient;
use mnist_proto::v1::worker_service_client::WorkerServiceClient;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::backoff::Backoff;
use crate::error::WorkerError;

/// The largest message accepted from the coordinator.
const MAX_MESSAGE_BYTES: usize = 8 << 20;

/// How many INTERNAL answers in a row are retried (a server that died in the
/// middle of a call can surface as INTERNAL; a real bug should not loop).
const MAX_INTERNAL_RETRIES: u32 = 4;

/// Why a call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// FAILED_PRECONDITION or NOT_FOUND: the lease was lost, the trial is
    /// finished or deleted. Drop the trial.
    #[error("{}", .0.message())]
    Lost(Status),
    /// The coordinator refused the call for a reason retrying cannot fix.
    #[error("{} ({:?})", .0.message(), .0.code())]
    Refused(Status),
    /// The caller cancelled while the coordinator was unreachable.
    #[error("cancelled")]
    Cancelled,
    /// The deadline passed while the coordinator was unreachable.
    #[error("the coordinator stayed unreachable: {}", .0.message())]
    GaveUp(Status),
}

/// What cancels a waiting call: a watch channel that turns `true`.
pub type Cancel = watch::Receiver<bool>;

/// Waits until `cancel` turns true (forever when `None` or when the sender is gone).
pub async fn cancelled(cancel: Option<&mut Cancel>) {
    match cancel {
        Some(rx) => {
            if rx.wait_for(|v| *v).await.is_err() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending::<()>().await,
    }
}

fn transient(s: &Status, internal_seen: u32) -> bool {
    match s.code() {
        Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted | Code::Aborted => true,
        Code::Internal => internal_seen < MAX_INTERNAL_RETRIES,
        _ => false,
    }
}

/// A connection to one coordinator.
#[derive(Debug, Clone)]
pub struct Client {
    url: String,
    channel: Channel,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl Client {
    /// A lazily connecting client of the coordinator at `url` (`host:port`
    /// gets `http://`). Call it inside a Tokio runtime.
    pub fn new(url: &str, initial_backoff: Duration, max_backoff: Duration) -> Result<Client, WorkerError> {
        let bad = |m: String| WorkerError::Address { url: url.to_string(), message: m };
        let url = mnist_common::flags::coordinator_url(url).map_err(|e| bad(e.0))?;
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| bad(format!("coordinator address {url:?} is not valid ({e}): use HOST:PORT or http://HOST:PORT")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        Ok(Client { url, channel: endpoint.connect_lazy(), initial_backoff, max_backoff })
    }

    /// The coordinator's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A `WorkerService` stub on the shared channel.
    pub fn worker(&self) -> WorkerServiceClient<Channel> {
        WorkerServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// A `StudyService` stub on the shared channel.
    pub fn study(&self) -> StudyServiceClient<Channel> {
        StudyServiceClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// A fresh backoff with this client's settings.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.initial_backoff, self.max_backoff)
    }

    /// Roughly how long `attempts` retries take at most (for deadlines).
    pub fn backoff_span(&self, attempts: u32) -> Duration {
        self.max_backoff.saturating_mul(attempts.max(1))
    }

    /// Runs `call` until it succeeds, retrying while the coordinator is
    /// unreachable, up to `deadline` and unless `cancel` fires.
    pub async fn retry<T, F, Fut>(
        &self,
        what: &'static str,
        mut cancel: Option<&mut Cancel>,
        deadline: Option<Instant>,
        mut call: F,
    ) -> Result<T, CallError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut backoff = self.backoff();
        let mut internal_seen = 0;
        loop {
            if cancel.as_ref().is_some_and(|c| *c.borrow()) {
                return Err(CallError::Cancelled);
            }
            let result = tokio::select! {
                r = call(self.clone()) => r,
                _ = cancelled(cancel.as_deref_mut()) => return Err(CallError::Cancelled),
            };
            let status = match result {
                Ok(resp) => {
                    if backoff.attempts() > 0 {
                        tracing::info!(call = what, coordinator = %self.url, "the coordinator is reachable again");
                    }
                    return Ok(resp.into_inner());
                }
                Err(s) => s,
            };
            match status.code() {
                Code::FailedPrecondition | Code::NotFound => return Err(CallError::Lost(status)),
                _ if !transient(&status, internal_seen) => return Err(CallError::Refused(status)),
                _ => {}
            }
            if status.code() == Code::Internal {
                internal_seen += 1;
            }
            let delay = backoff.next_delay();
            if deadline.is_some_and(|d| Instant::now() + delay > d) {
                return Err(CallError::GaveUp(status));
            }
            let n = backoff.attempts();
            if n == 1 || n.is_power_of_two() {
                tracing::warn!(
                    call = what,
                    coordinator = %self.url,
                    attempt = n,
                    retry_in_ms = delay.as_millis() as u64,
                    "the coordinator is unreachable or busy ({:?}: {}); retrying",
                    status.code(),
                    status.message()
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancelled(cancel.as_deref_mut()) => return Err(CallError::Cancelled),
            }
        }
    }
}

/// A request with a timeout (so a call to a coordinator that hangs fails
/// and is retried instead of blocking forever).
pub fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_get_a_scheme() {
        let c = Client::new("localhost:50051/", Duration::from_millis(1), Duration::from_millis(2)).unwrap();
        assert_eq!(c.url(), "http://localhost:50051");
        let e = Client::new("ftp://h:1", Duration::from_millis(1), Duration::from_millis(2)).unwrap_err();
        assert!(e.to_string().contains("use HOST:PORT or http://HOST:PORT"), "{e}");
        let e = Client::new("https://h:1", Duration::from_millis(1), Duration::from_millis(2)).unwrap_err();
        assert!(e.to_string().contains("TLS is not supported yet"), "{e}");
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline_when_unreachable() {
        // Port 9 (discard) on loopback: nothing listens there in the test sandbox.
        let c = Client::new("http://127.0.0.1:9", Duration::from_millis(10), Duration::from_millis(20)).unwrap();
        let deadline = Instant::now() + Duration::from_millis(300);
        let r = c
            .retry("RegisterWorker", None, Some(deadline), |c| async move {
                c.worker().register_worker(mnist_proto::v1::RegisterWorkerRequest::default()).await
            })
            .await;
        assert!(matches!(r, Err(CallError::GaveUp(_))), "{r:?}");
    }

    #[tokio::test]
    async fn cancel_stops_the_retries() {
        let c = Client::new("http://127.0.0.1:9", Duration::from_millis(10), Duration::from_millis(20)).unwrap();
        let (tx, mut rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = tx.send(true);
        });
        let r = c
            .retry("RegisterWorker", Some(&mut rx), None, |c| async move {
                c.worker().register_worker(mnist_proto::v1::RegisterWorkerRequest::default()).await
            })
            .await;
        assert!(matches!(r, Err(CallError::Cancelled)), "{r:?}");
    }
}
