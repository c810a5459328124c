//! The coordinator's face on the cluster: a remote-addressable actor in the
//! coordinator process group. It decodes what worker nodes send and hands
//! the coordinator typed messages (domain types, through [`super::wire`]);
//! a frame that does not decode, or says nothing the coordinator can use,
//! is logged and dropped here, never inside the coordinator.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use seedling_proto::cluster::{COORDINATOR_GROUP, CoordinatorWire, decode};
use seedling_proto::control::Heartbeat;
use tokio::task::JoinHandle;

use super::ClusterError;
use super::messages::{ClusterMsg, WorkerBeat};

#[derive(Debug)]
pub struct CoordinatorGate;

impl CoordinatorGate {
    /// Starts the gate for `coordinator` and joins it to the coordinator
    /// process group, where workers (remote or in this process) find it.
    pub async fn start(
        coordinator: ActorRef<ClusterMsg>,
    ) -> Result<(ActorRef<CoordinatorWire>, JoinHandle<()>), ClusterError> {
        let (gate, handle) = Actor::spawn(None, CoordinatorGate, coordinator)
            .await
            .map_err(|e| ClusterError::Node(format!("gate: {e}")))?;
        ractor::pg::join(COORDINATOR_GROUP.into(), vec![gate.get_cell()]);
        Ok((gate, handle))
    }
}

impl Actor for CoordinatorGate {
    type Msg = CoordinatorWire;
    type State = ActorRef<ClusterMsg>;
    type Arguments = ActorRef<ClusterMsg>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        coordinator: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(coordinator)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        coordinator: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CoordinatorWire::Heartbeat(bytes) => match decode::<Heartbeat>("heartbeat", &bytes) {
                Ok(beat) => match WorkerBeat::from_wire(beat) {
                    Some(beat) => coordinator.cast(ClusterMsg::Heartbeat(Box::new(beat)))?,
                    None => tracing::warn!("heartbeat without capacity ignored"),
                },
                Err(err) => tracing::warn!(%err, "dropped a frame from a worker node"),
            },
        }
        Ok(())
    }
}
