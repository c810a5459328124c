//! The one difference between a worker in the coordinator's process and a
//! remote one: its reports reach the coordinator's ingest through a channel
//! instead of the gRPC result stream. Everything else (heartbeats to the
//! coordinator's gate, assignments and withdrawals to the worker's gate)
//! travels as the same encoded frames over ractor's process groups, so the
//! embedded `seedling run` is a cluster of one on the cluster's code path.

use tokio::sync::{mpsc, oneshot};

use crate::results::UnitReport;

/// A report, and where its outcome goes once the coordinator has made it
/// durable (`None`: it was not stored).
pub type LocalReport = (UnitReport, oneshot::Sender<Option<String>>);

/// The in-process result stream: what a local worker sends its reports to.
pub type LocalReports = mpsc::Sender<LocalReport>;
