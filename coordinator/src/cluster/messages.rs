//! What the coordinator actor is told and answers, in domain types: the
//! gate, the ingest, the writer, the API and the in-process coordinator all
//! speak to it through these, so none of them imports the actor (and the
//! actor imports none of them back). Wire types stay at the edges:
//! [`super::wire`] is the one place they become these and these become them.

use std::collections::BTreeMap;
use std::time::Duration;

use ractor::RpcReplyPort;
use ractor_cluster::RactorMessage;
use seedling_common::lineage::LineageBatch;
use seedling_common::work::UnitResult;
use tokio::sync::watch;

use super::ApiError;
use super::metrics::MetricsSnapshot;
use crate::pipeline::{PlanRun, Progress};

/// What the coordinator is told or asked.
#[derive(RactorMessage, Debug)]
pub enum ClusterMsg {
    /// A worker's heartbeat (decoded by the gate).
    Heartbeat(Box<WorkerBeat>),
    /// Results from the ingest (each read already, or why not): decided in
    /// order, stored in one durable write by the writer, and answered with
    /// their outcomes once it is done.
    Reports(Vec<Arrived>, RpcReplyPort<Vec<String>>),
    /// The writer made these decided groups durable, or failed to.
    Written(Written),
    /// Time to look at the leases.
    Tick,
    Submit(
        Box<PlanSubmission>,
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
    Status(RpcReplyPort<ClusterView>),
    /// Everything a metrics scrape shows (the store's size aside).
    Metrics(RpcReplyPort<MetricsSnapshot>),
}

/// Where a plan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanState {
    Running,
    /// A write of its results failed (a full or read-only disk): it hands
    /// out no units until the store takes writes again, then resumes from
    /// what the store holds.
    Paused,
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
            Self::Paused => "paused",
            Self::Finished => "finished",
            Self::Short => "short",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    pub fn has_ended(self) -> bool {
        !matches!(self, Self::Running | Self::Paused)
    }
}

/// A terminal plan state's wire name: watchers stop here.
pub fn is_terminal(state: &str) -> bool {
    state != PlanState::Running.name() && state != PlanState::Paused.name()
}

/// A plan as its watchers see it.
#[derive(Debug, Clone)]
pub struct PlanView {
    pub progress: Progress,
    pub domain: String,
    pub state: PlanState,
    /// Why it failed or is paused; empty otherwise.
    pub error: String,
}

/// A report as the coordinator gets it: its result read already, on the
/// reporting task (many streams read in parallel; the actor does not), or
/// why it could not be.
#[derive(Debug)]
pub struct Arrived {
    /// Who sent it, for which unit, with which lease secret.
    pub worker_id: String,
    pub plan_id: String,
    pub unit_id: String,
    pub lease: String,
    /// The worker's span that ran the unit (W3C traceparent; may be empty).
    pub trace_parent: String,
    pub result: Result<UnitResult, String>,
}

/// A plan submitted through the API.
#[derive(Debug, Clone, Default)]
pub struct PlanSubmission {
    /// The plan file's name, for error messages; empty when not given.
    pub file_name: String,
    pub plan_text: String,
    /// Overrides the plan's accepted-record target when set.
    pub target: Option<u64>,
    /// Reference files the plan names, by the relative path the plan uses.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// A worker's heartbeat: who it is and what its engine can run, where its
/// actor is, and what it is doing.
#[derive(Debug, Clone)]
pub struct WorkerBeat {
    pub capacity: WorkerCapacity,
    /// The process group the worker's actor joined; units are sent there.
    pub group: String,
    /// Units the worker is running ("plan/unit").
    pub running: Vec<String>,
    pub stats: Option<EngineTotals>,
    /// Results waiting for the coordinator's acknowledgement.
    pub unacknowledged: u32,
}

/// A worker and what its engine can run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerCapacity {
    pub worker_id: String,
    /// Parallel sequences the engine decodes together.
    pub slots: u32,
    /// KV cells shared by those sequences.
    pub context_tokens: u32,
    /// SHA-256 of the GGUF file, hex.
    pub model_digest: String,
    pub model_name: String,
    pub gpu: bool,
    pub gpu_layers: u32,
    /// The judge model it hosts for checks; empty: none.
    pub judge_model_name: String,
}

/// Running totals of one worker's engine, as its last heartbeat said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineTotals {
    pub requests_completed: u64,
    pub requests_failed: u64,
    pub prompt_tokens_computed: u64,
    pub prompt_tokens_reused: u64,
    pub generated_tokens: u64,
    pub active_slots: u32,
    pub queued_requests: u32,
    pub prefill_ms: u64,
    pub decode_ms: u64,
    pub embedding_ms: u64,
    pub idle_ms: u64,
}

/// The cluster as `cluster status` shows it.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// The address clients reach the coordinator at.
    pub coordinator: String,
    pub workers: Vec<WorkerView>,
    /// Records running plans still need beyond what is in flight.
    pub queue_depth: u64,
    pub plans_running: u32,
    /// Leases expired and worker departures since the coordinator started.
    pub leases_expired: u64,
    pub workers_left: u64,
    pub lease_timeout: Duration,
    pub load: CoordinatorLoad,
    /// Results refused since the coordinator started, by why.
    pub results_refused: BTreeMap<String, u64>,
}

/// One worker in [`ClusterView`].
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub capacity: WorkerCapacity,
    /// Units it holds or runs.
    pub busy: u32,
    /// Units it has room for.
    pub free: u32,
    pub last_heartbeat_ago: Duration,
    /// Its generation rate between its last two heartbeats.
    pub tokens_per_s: f64,
    /// Units leased to it ("plan/unit").
    pub leased_units: Vec<String>,
    pub stats: Option<EngineTotals>,
    pub unacknowledged: u32,
}

/// Where the coordinator's own time went since it started, per stage: the
/// actor deciding results (and handing out the units they freed), and the
/// lineage writer making them durable.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoordinatorLoad {
    pub results_decided: u64,
    pub deciding_s: f64,
    /// Actor turns that decided results.
    pub groups_decided: u64,
    /// The part of `deciding_s` spent handing out the units the results freed.
    pub dispatching_s: f64,
    pub results_written: u64,
    /// Syncs that made them durable.
    pub writes: u64,
    pub writing_s: f64,
    pub uptime_s: f64,
    /// CPU time of the actor's own thread while it decides.
    pub deciding_cpu_s: f64,
    pub writing_cpu_s: f64,
    /// The writer's second thread, waiting for the disk.
    pub syncing_s: f64,
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
    /// The admitted results' spans: they end when the write is durable
    /// (or refused), so a unit's trace runs from its lease to its storage.
    pub traces: Vec<tracing::Span>,
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
    fn only_running_and_paused_are_not_terminal() {
        for state in [
            PlanState::Finished,
            PlanState::Short,
            PlanState::Cancelled,
            PlanState::Failed,
        ] {
            assert!(is_terminal(state.name()));
            assert!(state.has_ended());
        }
        for state in [PlanState::Running, PlanState::Paused] {
            assert!(!is_terminal(state.name()));
            assert!(!state.has_ended());
        }
    }
}
