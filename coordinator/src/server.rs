//! The gRPC server: bind, serve the three services, shut down gracefully.
//!
//! [`start`] is what the `mnist-coordinator` binary, the tests and an
//! embedding program (`mnistctl tune`) call: it opens the coordinator, binds
//! the listener (port 0 picks a free one), starts the reaper, and serves
//! until [`RunningServer::shutdown`] (or a fatal storage error).
//!
//! ```no_run
//! # async fn demo() -> Result<(), mnist_coordinator::ServeError> {
//! use mnist_coordinator::{server, ServerConfig};
//! let cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), "study.db");
//! let running = server::start(cfg).await?;
//! println!("coordinator at {}", running.url());
//! running.shutdown().await?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::config::ServerConfig;
use crate::error::CoordError;
use crate::study::Coordinator;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Opening the coordinator failed.
    #[error(transparent)]
    Coordinator(#[from] CoordError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}; pick another address with --listen (port 0 picks a free one)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The transport failed.
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A database write failed; the state in memory is ahead of the disk.
    #[error("stopped after a database write failed ({0}); restart the coordinator to reload the study state")]
    Storage(String),
}

/// A server running in the background.
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    coordinator: Arc<Coordinator>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL clients connect to, e.g. `http://127.0.0.1:50051`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// The coordinator behind the server (for in-process use).
    pub fn coordinator(&self) -> &Arc<Coordinator> {
        &self.coordinator
    }

    /// Stops accepting calls, lets in-flight ones finish (up to the grace
    /// period), flushes the database and returns.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.stop.send_replace(true);
        self.wait().await
    }

    /// Waits until the server stops (after [`RunningServer::shutdown`] from
    /// elsewhere, or a fatal error).
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServeError::Storage(format!("the server task panicked: {e}"))),
        }
    }

    /// A handle that stops the server when sent `true`.
    pub fn stop_handle(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Opens the coordinator for `config`, binds `config.listen` and serves.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServeError> {
    let listener = TcpListener::bind(config.listen).await.map_err(|source| ServeError::Bind { addr: config.listen, source })?;
    let coord = Coordinator::open(config.coordinator.clone()).await?;
    Ok(serve(coord, listener, config.shutdown_grace))
}

/// Serves an open coordinator on a bound listener.
pub fn serve(coord: Arc<Coordinator>, listener: TcpListener, grace: Duration) -> RunningServer {
    let local_addr = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let (stop, mut stop_rx) = watch::channel(false);
    let reaper = crate::reaper::spawn(coord.clone(), coord.config().reaper_interval, stop.subscribe());
    let c = coord.clone();
    let stop_tx = stop.clone();
    let task = tokio::spawn(async move {
        let tracking = match crate::tracking::Tracking::start(c.clone(), stop_tx.subscribe()).await {
            Ok((t, task)) => {
                c.set_tracking(t);
                Some(task)
            }
            Err(e) => {
                tracing::error!(error = %e, "MLflow tracking could not start; the study runs without it");
                None
            }
        };
        let services = crate::rpc::services(c.clone());
        let (sig_tx, sig_rx) = oneshot::channel::<()>();
        // Nagle off on every accepted socket: a response is several small
        // writes, and Nagle with delayed ACKs would stall each by ~40 ms.
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(services.study)
            .add_service(services.worker)
            .add_service(services.ask_tell)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), async {
                let _ = sig_rx.await;
            });
        tokio::pin!(server);
        let mut health = c.storage_health();
        let mut storage_failure = None;
        let result = tokio::select! {
            r = &mut server => r.map_err(ServeError::from),
            _ = async {
                loop {
                    tokio::select! {
                        changed = stop_rx.changed() => if changed.is_err() || *stop_rx.borrow() { break },
                        changed = health.changed() => {
                            if changed.is_err() { break }
                            if let Some(msg) = health.borrow().clone() { storage_failure = Some(msg); break }
                        }
                    }
                }
            } => {
                c.begin_shutdown();
                let _ = sig_tx.send(());
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(r) => r.map_err(ServeError::from),
                    Err(_) => {
                        tracing::warn!("in-flight calls did not finish within {grace:?}; closing anyway");
                        Ok(())
                    }
                }
            }
        };
        stop_tx.send_replace(true);
        let _ = reaper.await;
        if let Some(t) = tracking {
            let _ = t.await;
        }
        c.close().await;
        match storage_failure {
            Some(msg) => Err(ServeError::Storage(msg)),
            None => result,
        }
    });
    RunningServer { local_addr, coordinator: coord, stop, task }
}
