//! A coordinator for one process (`seedling run`): the cluster coordinator
//! actor, its gate and its ingest, without the node server and the gRPC
//! server. A worker in the same process finds the gate through ractor's
//! process groups and reports through [`Ingest::local`], so the embedded run
//! is a cluster of one on the cluster's own path: heartbeats and leases,
//! dispatch, deciding, the lineage writer.

use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use seedling_common::config::Limits;
use seedling_proto::cluster::CoordinatorWire;
use seedling_proto::local::LocalReports;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::ClusterError;
use super::actor::{ClusterArgs, ClusterCoordinator};
use super::gate::CoordinatorGate;
use super::ingest::Ingest;
use super::messages::{ClusterMsg, PlanView};
use crate::lineage::LineageStore;
use crate::pipeline::PlanRun;

/// How long the coordinator waits to be handed a plan.
const HOST_TIMEOUT: Duration = Duration::from_secs(60);

/// A running in-process coordinator.
#[derive(Debug)]
pub struct LocalCoordinator {
    coordinator: ActorRef<ClusterMsg>,
    coordinator_handle: JoinHandle<()>,
    gate: ActorRef<CoordinatorWire>,
    gate_handle: JoinHandle<()>,
    ingest: Ingest,
    written: oneshot::Receiver<()>,
}

impl LocalCoordinator {
    /// Starts the coordinator on `store`; a worker whose heartbeats stop
    /// for `lease_timeout` loses its units, as in the cluster.
    pub async fn start(
        store: Arc<LineageStore>,
        lease_timeout: Duration,
    ) -> Result<Self, ClusterError> {
        let (writes_done, written) = oneshot::channel();
        let (coordinator, coordinator_handle) = Actor::spawn(
            None,
            ClusterCoordinator,
            ClusterArgs {
                store,
                lease_timeout,
                // Used for submitted plans only; this one takes none.
                attempts_per_record: 1.0,
                address: "in-process".into(),
                limits: Limits::default(),
                data_dir: None,
                writes_done,
                // `seedling run` tracks its plan itself, with its export.
                tracking: None,
            },
        )
        .await
        .map_err(|e| ClusterError::Node(format!("coordinator: {e}")))?;
        let (gate, gate_handle) = CoordinatorGate::start(coordinator.clone()).await?;
        let ingest = Ingest::start(coordinator.clone());
        Ok(Self {
            coordinator,
            coordinator_handle,
            gate,
            gate_handle,
            ingest,
            written,
        })
    }

    /// Runs `run`; its view changes with every decided result.
    pub async fn host(&self, run: PlanRun) -> Result<watch::Receiver<PlanView>, ClusterError> {
        match self
            .coordinator
            .call(
                |reply| ClusterMsg::Host(Box::new(run), reply),
                Some(HOST_TIMEOUT),
            )
            .await
        {
            Ok(CallResult::Success(view)) => Ok(view),
            Ok(_) => Err(ClusterError::Node(
                "the coordinator did not take the plan".into(),
            )),
            Err(err) => Err(ClusterError::Node(format!("coordinator: {err}"))),
        }
    }

    /// The result stream for a worker in this process.
    pub fn reports(&self) -> LocalReports {
        self.ingest.local()
    }

    /// Stops the coordinator; returns once everything it decided is durable.
    pub async fn stop(self) {
        self.gate.stop(None);
        self.coordinator.stop(None);
        let _ = self.gate_handle.await;
        let _ = self.coordinator_handle.await;
        let _ = self.written.await;
    }
}
