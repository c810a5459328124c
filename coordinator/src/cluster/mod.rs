//! The cluster coordinator: plans from the gRPC API, workers on
//! ractor_cluster, results from the gRPC ingest, everything durable in the
//! lineage store.
//!
//! - `actor`: the coordinator actor (plans, workers, leases, dispatch)
//! - `messages`: what it is told and answers, in domain types
//! - `wire`: where its domain types and the wire types meet, both ways
//! - `assign`: the pure placement rule
//! - `gate`: decodes worker nodes' frames for the actor
//! - `ingest`: result streams, acknowledged once durable
//! - `writer`: the thread that makes decided groups durable, in order
//! - `api`: the researcher's and operator's API
//! - `reviews`: one review desk per plan, for `seedling review --coordinator`
//! - `submissions`: submitted plans on disk, for restarts
//! - `node`: starts all of it and stops it cleanly
//! - `local`: the same coordinator in one process, for `seedling run`

mod actor;
mod api;
mod assign;
mod gate;
mod ingest;
mod local;
mod messages;
mod metrics;
mod node;
mod reviews;
mod submissions;
mod wire;
mod writer;

use std::path::PathBuf;

pub use actor::{ClusterArgs, ClusterCoordinator};
pub use assign::{Grant, WorkerRoom, assign};
pub use local::LocalCoordinator;
pub use messages::{ClusterMsg, PlanState, PlanView, is_terminal};
pub use node::{CoordinatorSettings, serve};
pub use wire::{review_answer, review_refusal, review_request};

use crate::lineage::LineageError;
use crate::pipeline::PipelineError;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{path}: {source}")]
    Disk {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Lineage(#[from] LineageError),
    #[error("cluster node: {0}")]
    Node(String),
    #[error("gRPC server on {addr}: {message}")]
    Grpc { addr: String, message: String },
    #[error(transparent)]
    Metrics(#[from] seedling_telemetry::TelemetryError),
}

/// What an API call can fail with; each maps to one gRPC status code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Internal(String),
}

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::InvalidArgument(m) => Self::invalid_argument(m),
            ApiError::NotFound(m) => Self::not_found(m),
            ApiError::FailedPrecondition(m) => Self::failed_precondition(m),
            ApiError::Internal(m) => Self::internal(m),
        }
    }
}
