//! The gRPC API of the tuning system, package `mnist.tuning.v1`.
//!
//! The `.proto` files under `proto/mnist/tuning/v1/` are the documentation of
//! record, field by field; this crate only holds the Rust code generated from
//! them at build time (see `build.rs`: `protox` + `tonic-prost-build`, no
//! system `protoc`).
//!
//! Services:
//! - [`v1::study_service_server::StudyService`]: studies (create, get, list,
//!   stop, resume, delete, watch), trials (enqueue, list, get) and workers
//!   (list), for people and tools such as `mnistctl`.
//! - [`v1::worker_service_server::WorkerService`]: the training worker's
//!   protocol (register, acquire, heartbeat, report, complete, fail, release,
//!   upload artifacts, fetch the data set).
//! - [`v1::ask_tell_service_server::AskTellService`]: generic ask/tell for an
//!   objective written in any language.
//!
//! Clients are in the `*_client` modules, servers in the `*_server` modules.

/// Version 1 of the API.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("mnist.tuning.v1");
}

pub use prost_types::Timestamp;
