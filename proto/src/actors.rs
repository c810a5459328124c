//! The messages of the two actors, named after intent. Coordinator and
//! workers know each other only through these; in embedded mode they are
//! local actor messages, in the cluster the same values travel encoded.

use ractor::ActorRef;
use ractor_cluster::RactorMessage;
use seedling_common::work::{UnitResult, UnitTask};

use crate::worker::WorkerCapacity;

/// What a worker actor is asked to do.
#[derive(RactorMessage, Debug)]
pub enum WorkerMsg {
    /// Run one unit and report its result to `report_to`.
    RunUnit {
        task: Box<UnitTask>,
        report_to: ActorRef<CoordinatorMsg>,
    },
    /// Stop these units (their stratum filled first); they report nothing.
    Withdraw { units: Vec<String> },
}

/// What a coordinator actor is told.
#[derive(RactorMessage, Debug)]
pub enum CoordinatorMsg {
    /// A worker is ready for units, with this much capacity.
    WorkerJoined {
        worker: ActorRef<WorkerMsg>,
        capacity: WorkerCapacity,
    },
    /// A unit ended, finished or failed.
    UnitFinished(Box<UnitResult>),
}
