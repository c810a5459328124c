//! What the coordinator actor is told and answers, in domain types: the
//! gate, the ingest, the writer, the API and the in-process coordinator all
//! speak to it through these, so none of them imports the actor (and the
//! actor imports none of them back). Wire types stay at the edges: a
//! heartbeat arrives decoded, and [`super::wire`] turns views into replies.

use ractor::RpcReplyPort;
use ractor_cluster::RactorMessage;
use seedling_common::lineage::LineageBatch;
use seedling_common::work::UnitResult;
use seedling_proto::api::{ClusterStatus, SubmitPlanRequest};
use seedling_proto::control::Heartbeat;
use seedling_proto::results::UnitReport;
use tokio::sync::watch;

use super::ApiError;
use super::metrics::MetricsSnapshot;
use crate::pipeline::{PlanRun, Progress};

/// What the coordinator is told or asked.
#[derive(RactorMessage, Debug)]
pub enum ClusterMsg {
    /// A worker's heartbeat (decoded by the gate).
    Heartbeat(Box<Heartbeat>),
    /// Results from the ingest (each read already, or why not): decided in
    /// order, stored in one durable write by the writer, and answered with
    /// their outcomes once it is done.
    Reports(Vec<Arrived>, RpcReplyPort<Vec<String>>),
    /// The writer made these decided groups durable, or failed to.
    Written(Written),
    /// Time to look at the leases.
    Tick,
    Submit(
        Box<SubmitPlanRequest>,
        RpcReplyPort<Result<PlanView, ApiError>>,
    ),
    Cancel(String, RpcReplyPort<Result<PlanView, ApiError>>),
    GetPlan(String, RpcReplyPort<Result<PlanView, ApiError>>),
    ListPlans(RpcReplyPort<Vec<PlanView>>),
    Watch(
        String,
        RpcReplyPort<Result<watch::Receiver<PlanView>, ApiError>>,
    ),
    /// Run a plan its caller opened (the in-process coordinator's one plan);
    /// answered with its view, which changes with every decided result.
    Host(Box<PlanRun>, RpcReplyPort<watch::Receiver<PlanView>>),
    Status(RpcReplyPort<ClusterStatus>),
    /// Everything a metrics scrape shows (the store's size aside).
    Metrics(RpcReplyPort<MetricsSnapshot>),
}

/// Where a plan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanState {
    Running,
    Finished,
    /// Every stratum ended, some short of their quota (budget spent).
    Short,
    Cancelled,
    Failed,
}

impl PlanState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Short => "short",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    pub fn has_ended(self) -> bool {
        self != Self::Running
    }
}

/// A terminal plan state's wire name: watchers stop here.
pub fn is_terminal(state: &str) -> bool {
    state != PlanState::Running.name()
}

/// A plan as its watchers see it.
#[derive(Debug, Clone)]
pub struct PlanView {
    pub progress: Progress,
    pub domain: String,
    pub state: PlanState,
    /// Why it failed; empty otherwise.
    pub error: String,
}

/// A report as the coordinator gets it: its result read already, on the
/// reporting task (many streams read in parallel; the actor does not), or
/// why it could not be.
#[derive(Debug)]
pub struct Arrived {
    /// The report's envelope (its `result_json` taken out).
    pub report: UnitReport,
    pub result: Result<UnitResult, String>,
}

impl Arrived {
    pub fn read(mut report: UnitReport) -> Self {
        let json = std::mem::take(&mut report.result_json);
        let result = serde_json::from_slice(&json).map_err(|e| e.to_string());
        Self { report, result }
    }
}

/// One decided group on its way to the writer: its lineage, and who waits.
#[derive(Debug)]
pub struct Write {
    /// The group's lineage, being built on the rayon pool meanwhile (the
    /// actor does not wait for it; the writer does, in order).
    pub lineage: std::sync::mpsc::Receiver<LineageBatch>,
    /// The decided groups in it, `(plan id, ticket)`, to confirm.
    pub tickets: Vec<(String, u64)>,
    /// Each result's outcome, sent once the batch is durable.
    pub outcomes: Vec<String>,
    pub reply: RpcReplyPort<Vec<String>>,
}

/// What the writer tells the coordinator after a write.
#[derive(Debug)]
pub struct Written {
    pub tickets: Vec<(String, u64)>,
    /// Why the write failed; `None` when it is durable.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_is_not_terminal() {
        for state in [
            PlanState::Finished,
            PlanState::Short,
            PlanState::Cancelled,
            PlanState::Failed,
        ] {
            assert!(is_terminal(state.name()));
            assert!(state.has_ended());
        }
        assert!(!is_terminal(PlanState::Running.name()));
        assert!(!PlanState::Running.has_ended());
    }
}
