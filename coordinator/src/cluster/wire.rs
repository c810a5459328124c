//! The one place the coordinator's domain types meet the wire types: a
//! plan's view becomes a `PlanSummary` and the cluster's a `ClusterStatus`,
//! a submission, a heartbeat and a report arrive as domain types, and unit
//! assignments and withdrawals leave for the workers encoded, and review
//! calls travel both ways.

use prost::Message as _;
use ractor::{ActorRef, MessagingErr};
use seedling_common::ids::PlanId;
use seedling_common::work::UnitTask;
use seedling_proto::api::{self, Diversity, PlanSummary, StratumProgress, SubmitPlanRequest};
use seedling_proto::cluster::WorkerWire;
use seedling_proto::control::{Heartbeat, UnitAssignment, UnitWithdrawal};
use seedling_proto::results::UnitReport;
use seedling_proto::worker;

use super::messages::{
    Arrived, ClusterView, CoordinatorLoad, EngineTotals, PlanSubmission, PlanView, WorkerBeat,
    WorkerCapacity, WorkerView,
};
use crate::quality::diversity::DiversityNow;
use crate::review::{DeskAnswer, DeskCall, DeskRefusal, RefusalKind, SampleSettings};

impl PlanView {
    pub fn summary(&self) -> PlanSummary {
        let progress = &self.progress;
        PlanSummary {
            plan_id: progress.plan.clone(),
            domain: self.domain.clone(),
            state: self.state.name().into(),
            phase: progress.phase.into(),
            target: progress.target,
            accepted: progress.accepted,
            attempts: progress.attempts,
            in_flight: progress.in_flight,
            generated_tokens: progress.generated_tokens,
            elapsed_s: progress.elapsed_s,
            eta_s: progress.eta_s,
            strata: progress
                .strata
                .iter()
                .map(|s| StratumProgress {
                    stratum: s.stratum.clone(),
                    quota: s.quota,
                    accepted: s.accepted,
                    attempts: s.attempts,
                    exhausted: s.exhausted,
                    diversity: Some(diversity(&s.diversity)),
                })
                .collect(),
            rejected: progress.rejected.clone().into_iter().collect(),
            error: self.error.clone(),
            diversity: Some(diversity(&progress.diversity)),
            cost: Some((&progress.cost).into()),
            session_cost: Some((&progress.session_cost).into()),
        }
    }
}

fn diversity(d: &DiversityNow) -> Diversity {
    Diversity {
        distinct_1: d.distinct_1,
        distinct_2: d.distinct_2,
        dispersion: d.dispersion,
    }
}

impl ClusterView {
    pub fn status(&self) -> api::ClusterStatus {
        api::ClusterStatus {
            coordinator: self.coordinator.clone(),
            workers: self.workers.iter().map(WorkerView::status).collect(),
            queue_depth: self.queue_depth,
            plans_running: self.plans_running,
            leases_expired: self.leases_expired,
            workers_left: self.workers_left,
            lease_timeout_s: self.lease_timeout.as_secs_f64(),
            load: Some(self.load.into()),
            results_refused: self
                .results_refused
                .iter()
                .map(|(why, n)| (why.clone(), *n))
                .collect(),
        }
    }
}

impl WorkerView {
    fn status(&self) -> api::WorkerStatus {
        api::WorkerStatus {
            capacity: Some((&self.capacity).into()),
            busy: self.busy,
            free: self.free,
            last_heartbeat_s_ago: self.last_heartbeat_ago.as_secs_f64(),
            tokens_per_s: self.tokens_per_s,
            leased_units: self.leased_units.clone(),
            stats: self.stats.map(Into::into),
            unacknowledged: self.unacknowledged,
        }
    }
}

impl From<CoordinatorLoad> for api::CoordinatorLoad {
    fn from(l: CoordinatorLoad) -> Self {
        Self {
            results_decided: l.results_decided,
            deciding_s: l.deciding_s,
            groups_decided: l.groups_decided,
            dispatching_s: l.dispatching_s,
            results_written: l.results_written,
            writes: l.writes,
            writing_s: l.writing_s,
            uptime_s: l.uptime_s,
            deciding_cpu_s: l.deciding_cpu_s,
            writing_cpu_s: l.writing_cpu_s,
            syncing_s: l.syncing_s,
        }
    }
}

impl From<worker::WorkerCapacity> for WorkerCapacity {
    fn from(c: worker::WorkerCapacity) -> Self {
        Self {
            worker_id: c.worker_id,
            slots: c.slots,
            context_tokens: c.context_tokens,
            model_digest: c.model_digest,
            model_name: c.model_name,
            gpu: c.gpu,
            gpu_layers: c.gpu_layers,
            judge_model_name: c.judge_model_name,
        }
    }
}

impl From<&WorkerCapacity> for worker::WorkerCapacity {
    fn from(c: &WorkerCapacity) -> Self {
        Self {
            worker_id: c.worker_id.clone(),
            slots: c.slots,
            context_tokens: c.context_tokens,
            model_digest: c.model_digest.clone(),
            model_name: c.model_name.clone(),
            gpu: c.gpu,
            gpu_layers: c.gpu_layers,
            judge_model_name: c.judge_model_name.clone(),
        }
    }
}

impl From<worker::EngineStats> for EngineTotals {
    fn from(s: worker::EngineStats) -> Self {
        Self {
            requests_completed: s.requests_completed,
            requests_failed: s.requests_failed,
            prompt_tokens_computed: s.prompt_tokens_computed,
            prompt_tokens_reused: s.prompt_tokens_reused,
            generated_tokens: s.generated_tokens,
            active_slots: s.active_slots,
            queued_requests: s.queued_requests,
            prefill_ms: s.prefill_ms,
            decode_ms: s.decode_ms,
            embedding_ms: s.embedding_ms,
            idle_ms: s.idle_ms,
        }
    }
}

impl From<EngineTotals> for worker::EngineStats {
    fn from(s: EngineTotals) -> Self {
        Self {
            requests_completed: s.requests_completed,
            requests_failed: s.requests_failed,
            prompt_tokens_computed: s.prompt_tokens_computed,
            prompt_tokens_reused: s.prompt_tokens_reused,
            generated_tokens: s.generated_tokens,
            active_slots: s.active_slots,
            queued_requests: s.queued_requests,
            prefill_ms: s.prefill_ms,
            decode_ms: s.decode_ms,
            embedding_ms: s.embedding_ms,
            idle_ms: s.idle_ms,
        }
    }
}

impl WorkerBeat {
    /// A decoded heartbeat as the coordinator takes it; `None` for one
    /// without the worker's capacity, which says nothing it can use.
    pub fn from_wire(beat: Heartbeat) -> Option<Self> {
        Some(Self {
            capacity: beat.capacity?.into(),
            group: beat.group,
            running: beat.running,
            stats: beat.stats.map(Into::into),
            unacknowledged: beat.unacknowledged,
        })
    }
}

impl From<SubmitPlanRequest> for PlanSubmission {
    fn from(request: SubmitPlanRequest) -> Self {
        Self {
            file_name: request.file_name,
            plan_text: request.plan_toml,
            target: request.target,
            files: request.files.into_iter().collect(),
        }
    }
}

impl Arrived {
    /// A report with its result read (or why it could not be).
    pub fn read(report: UnitReport) -> Self {
        let result = serde_json::from_slice(&report.result_json).map_err(|e| e.to_string());
        Self {
            worker_id: report.worker_id,
            plan_id: report.plan_id,
            unit_id: report.unit_id,
            lease: report.lease,
            trace_parent: report.trace_parent,
            result,
        }
    }
}

/// A unit's assignment, encoded for its worker (on any thread) before it
/// is sent with [`assign`].
#[derive(Debug, Clone)]
pub struct Assignment(Vec<u8>);

impl Assignment {
    pub fn encode(
        task: &UnitTask,
        lease_ms: u64,
        lease: &str,
        max_result_bytes: u64,
        trace_parent: String,
    ) -> Self {
        let assignment = UnitAssignment {
            plan_id: task.plan.clone(),
            unit_id: task.unit.clone(),
            task_json: serde_json::to_vec(task).expect("a unit task serialises"),
            lease_ms,
            lease: lease.to_string(),
            max_result_bytes,
            trace_parent,
        };
        Self(assignment.encode_to_vec())
    }
}

/// Sends `assignment` to `worker`; an error when it cannot be reached.
pub fn assign(
    worker: &ActorRef<WorkerWire>,
    assignment: Assignment,
) -> Result<(), MessagingErr<WorkerWire>> {
    worker.cast(WorkerWire::Assign(assignment.0))
}

/// Tells `worker` to stop `units` of `plan`, and why; an error when it
/// cannot be reached.
pub fn withdraw(
    worker: &ActorRef<WorkerWire>,
    plan: &str,
    units: Vec<String>,
    reason: &str,
) -> Result<(), MessagingErr<WorkerWire>> {
    let withdrawal = UnitWithdrawal {
        plan_id: plan.to_string(),
        unit_ids: units,
        reason: reason.to_string(),
    };
    worker.cast(WorkerWire::Withdraw(withdrawal.encode_to_vec()))
}

/// A review request as the coordinator takes it: the plan (none: the
/// store's only one), how its sample is drawn, and the call.
pub fn review_call(
    request: api::ReviewRequest,
) -> Result<(Option<PlanId>, SampleSettings, DeskCall), String> {
    use api::review_request::Call;
    let plan = (!request.plan_id.trim().is_empty()).then(|| PlanId::new(request.plan_id.trim()));
    let settings = match request.sample {
        Some(s) => SampleSettings {
            confidence: s.confidence,
            margin: s.margin,
            minimum: s.minimum as usize,
            by: s.by,
            after_feedback: s.after_feedback,
            checks: s.checks,
        },
        None => SampleSettings::default(),
    };
    let call = match request.call.ok_or("call: required")? {
        Call::Standing(who) => DeskCall::Standing { reviewer: who.name },
        Call::DecisionJson(json) => DeskCall::Decide(
            serde_json::from_str(&json).map_err(|e| format!("decision_json: not JSON: {e}"))?,
        ),
        Call::Undo(who) => DeskCall::Undo { reviewer: who.name },
        Call::LineageOf(node) => DeskCall::Lineage { node },
        Call::DrawSample(_) => DeskCall::Sample,
        Call::ExportSample(_) => DeskCall::ExportSample,
        Call::ImportDecisions(file) => DeskCall::Import {
            source_name: file.source_name,
            text: file.text,
        },
    };
    Ok((plan, settings, call))
}

/// The request `seedling review --coordinator` sends for `call`.
pub fn review_request(
    plan: Option<&PlanId>,
    settings: &SampleSettings,
    call: DeskCall,
) -> api::ReviewRequest {
    use api::review_request::Call;
    let call = match call {
        DeskCall::Standing { reviewer } => Call::Standing(api::Reviewer { name: reviewer }),
        DeskCall::Decide(value) => Call::DecisionJson(value.to_string()),
        DeskCall::Undo { reviewer } => Call::Undo(api::Reviewer { name: reviewer }),
        DeskCall::Lineage { node } => Call::LineageOf(node),
        DeskCall::Sample => Call::DrawSample(api::DrawSample {}),
        DeskCall::ExportSample => Call::ExportSample(api::ExportSample {}),
        DeskCall::Import { source_name, text } => {
            Call::ImportDecisions(api::DecisionsFile { source_name, text })
        }
    };
    api::ReviewRequest {
        plan_id: plan.map(ToString::to_string).unwrap_or_default(),
        sample: Some(api::ReviewSample {
            confidence: settings.confidence,
            margin: settings.margin,
            minimum: settings.minimum.try_into().unwrap_or(u32::MAX),
            by: settings.by.clone(),
            after_feedback: settings.after_feedback,
            checks: settings.checks,
        }),
        call: Some(call),
    }
}

/// The answer as it travels back.
pub fn review_reply(plan: &PlanId, answer: DeskAnswer) -> api::ReviewReply {
    use api::review_reply::Answer;
    api::ReviewReply {
        plan_id: plan.to_string(),
        answer: Some(match answer {
            DeskAnswer::Json(value) => Answer::Json(value.to_string()),
            DeskAnswer::Text(text) => Answer::Text(text),
        }),
    }
}

/// The answer a client reads from a reply.
pub fn review_answer(reply: api::ReviewReply) -> Result<DeskAnswer, String> {
    use api::review_reply::Answer;
    match reply
        .answer
        .ok_or("the coordinator's review reply holds no answer")?
    {
        Answer::Json(json) => serde_json::from_str(&json)
            .map(DeskAnswer::Json)
            .map_err(|e| format!("the coordinator's review answer is not JSON: {e}")),
        Answer::Text(text) => Ok(DeskAnswer::Text(text)),
    }
}

/// A refusal as a gRPC status, and back.
pub fn review_status(refusal: DeskRefusal) -> tonic::Status {
    let code = match refusal.kind {
        RefusalKind::NotFound => tonic::Code::NotFound,
        RefusalKind::Conflict => tonic::Code::AlreadyExists,
        RefusalKind::Invalid => tonic::Code::InvalidArgument,
        RefusalKind::Forbidden => tonic::Code::PermissionDenied,
        RefusalKind::Failed => tonic::Code::Internal,
    };
    tonic::Status::new(code, refusal.message)
}

pub fn review_refusal(status: &tonic::Status) -> DeskRefusal {
    let kind = match status.code() {
        tonic::Code::NotFound => RefusalKind::NotFound,
        tonic::Code::AlreadyExists => RefusalKind::Conflict,
        tonic::Code::InvalidArgument => RefusalKind::Invalid,
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => RefusalKind::Forbidden,
        _ => RefusalKind::Failed,
    };
    DeskRefusal {
        kind,
        message: status.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_round_trips_into_the_status() {
        let capacity = worker::WorkerCapacity {
            worker_id: "w1".into(),
            slots: 4,
            context_tokens: 8192,
            model_digest: "1d96".into(),
            model_name: "tiny".into(),
            gpu: true,
            gpu_layers: 99,
            judge_model_name: "Qwen2.5 Coder 1.5B Instruct GGUF".into(),
        };
        let stats = worker::EngineStats {
            requests_completed: 1,
            requests_failed: 2,
            prompt_tokens_computed: 3,
            prompt_tokens_reused: 4,
            generated_tokens: 5,
            active_slots: 6,
            queued_requests: 7,
            prefill_ms: 8,
            decode_ms: 9,
            embedding_ms: 10,
            idle_ms: 11,
        };
        let beat = WorkerBeat::from_wire(Heartbeat {
            capacity: Some(capacity.clone()),
            group: "g".into(),
            running: vec!["p/u".into()],
            stats: Some(stats),
            unacknowledged: 3,
        })
        .expect("has a capacity");
        assert_eq!((beat.group.as_str(), beat.unacknowledged), ("g", 3));
        assert_eq!(beat.running, ["p/u"]);
        let view = WorkerView {
            capacity: beat.capacity,
            busy: 1,
            free: 7,
            last_heartbeat_ago: std::time::Duration::from_millis(1500),
            tokens_per_s: 2.5,
            leased_units: vec!["p/u".into()],
            stats: beat.stats,
            unacknowledged: beat.unacknowledged,
        };
        let status = view.status();
        assert_eq!(status.capacity, Some(capacity));
        assert_eq!(status.stats, Some(stats));
        assert_eq!(status.last_heartbeat_s_ago, 1.5);
        assert_eq!((status.busy, status.free, status.unacknowledged), (1, 7, 3));
    }

    #[test]
    fn a_heartbeat_without_capacity_is_nothing() {
        assert!(WorkerBeat::from_wire(Heartbeat::default()).is_none());
    }
}
