//! The gRPC layer: thin adapters that validate the request's shape, call the
//! domain ([`crate::study::Coordinator`]), and map its errors to status codes.
//!
//! - [`study_service`]: `StudyService` (studies, trials, watch, workers).
//! - [`worker_service`]: `WorkerService` (the worker protocol, artifacts,
//!   data set).
//! - [`ask_tell`]: `AskTellService` (generic ask/tell).
//! - [`convert`]: protobuf <-> domain conversions.
//!
//! [`services`] builds the three tonic services for a coordinator; wrap them
//! with `tonic::service::interceptor` (authentication) or serve them behind
//! TLS without touching the handlers.

pub mod ask_tell;
pub mod convert;
pub mod study_service;
pub mod worker_service;

use std::sync::Arc;

use mnist_proto::v1::ask_tell_service_server::AskTellServiceServer;
use mnist_proto::v1::study_service_server::StudyServiceServer;
use mnist_proto::v1::worker_service_server::WorkerServiceServer;
use tonic::Status;

use crate::dataset::Dataset;
use crate::error::CoordError;
use crate::storage::StorageError;
use crate::study::Coordinator;

/// The largest message accepted (an artifact chunk is at most 4 MiB).
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;

impl From<CoordError> for Status {
    fn from(e: CoordError) -> Status {
        let msg = e.to_string();
        match e {
            CoordError::InvalidArgument(_) => Status::invalid_argument(msg),
            CoordError::NotFound(_) => Status::not_found(msg),
            CoordError::AlreadyExists(_) => Status::already_exists(msg),
            CoordError::FailedPrecondition(_) => Status::failed_precondition(msg),
            CoordError::DataLoss(_) => Status::data_loss(msg),
            CoordError::Storage(StorageError::Overloaded) => Status::resource_exhausted(msg),
            CoordError::Storage(_) => Status::unavailable(msg),
            CoordError::Internal(_) => Status::internal(msg),
        }
    }
}

/// The three services of a coordinator.
pub struct Services {
    pub study: StudyServiceServer<study_service::StudyApi>,
    pub worker: WorkerServiceServer<worker_service::WorkerApi>,
    pub ask_tell: AskTellServiceServer<ask_tell::AskTellApi>,
}

/// Builds the services for `coord`.
pub fn services(coord: Arc<Coordinator>) -> Services {
    let dataset = Arc::new(Dataset::new(coord.config().data_dir.clone()));
    Services {
        study: StudyServiceServer::new(study_service::StudyApi::new(coord.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        worker: WorkerServiceServer::new(worker_service::WorkerApi::new(coord.clone(), dataset))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        ask_tell: AskTellServiceServer::new(ask_tell::AskTellApi::new(coord)).max_decoding_message_size(MAX_MESSAGE_BYTES),
    }
}
