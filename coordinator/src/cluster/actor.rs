//! The coordinator actor: the one owner of every plan's run and of the
//! worker table, in the cluster and, as a cluster of one, in `seedling run`. Workers join and renew their lease by heartbeat (over
//! ractor_cluster, through the gate); results arrive from the gRPC ingest and
//! are answered only once their lineage is durable; the API asks it questions.
//! A worker whose heartbeats stop, or whose node leaves, loses its units to
//! the others. A result counts only from the worker holding the unit's
//! lease, so a late or resent result never lands twice. It speaks domain
//! types: [`super::wire`] encodes what it sends the workers and turns its
//! answers into the API's replies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::pg::GroupChangeMessage;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rayon::prelude::*;
use seedling_common::config::Limits;
use seedling_common::ids::PlanId;
use seedling_common::time::thread_cpu;
use seedling_common::work::UnitResult;
use seedling_proto::auth::same_secret;
use seedling_proto::cluster::WorkerWire;
use seedling_telemetry::traces::{link, trace_parent};
use tokio::sync::{oneshot, watch};

use super::assign::{WorkerRoom, assign};
use super::messages::{
    Arrived, ClusterMsg, ClusterView, CoordinatorLoad, EngineTotals, PlanState, PlanSubmission,
    PlanView, WorkerBeat, WorkerCapacity, WorkerView, Write, Written,
};
use super::metrics::{MetricsSnapshot, UnitCounts};
use super::submissions::{self, Submission, is_safe_relative};
use super::wire::{self, Assignment};
use super::writer::Writer;
use super::{ApiError, ClusterError};
use crate::dataset::export_dataset;
use crate::lineage::LineageStore;
use crate::pipeline::{PlanRun, RunOptions, UnitOutcome, plan_id};
use crate::plan::{Plan, parse_plan};
use crate::tracking::{PlanTracking, RunContext, TrackingTarget};

/// Units kept per engine slot: one running, one queued.
const UNITS_PER_SLOT: usize = 2;
/// How often leases are checked.
const TICK: Duration = Duration::from_millis(250);
/// How often a paused plan's store is tried again.
const RECOVERY_EVERY: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct ClusterCoordinator;

/// What the coordinator starts with.
#[derive(Debug)]
pub struct ClusterArgs {
    pub store: Arc<LineageStore>,
    pub lease_timeout: Duration,
    pub attempts_per_record: f64,
    /// The address clients reach this coordinator at (shown in status).
    pub address: String,
    pub limits: Limits,
    /// Where submitted plans are kept across restarts; `None` for a
    /// coordinator that only hosts the plans handed to it (`seedling run`).
    pub data_dir: Option<PathBuf>,
    /// Told once the coordinator has stopped and the last decided result it
    /// handed the lineage writer is durable (or failed).
    pub writes_done: oneshot::Sender<()>,
    /// Where each submitted plan is logged as an MLflow run, if anywhere.
    pub tracking: Option<TrackingTarget>,
}

#[derive(Debug)]
struct PlanSlot {
    run: PlanRun,
    /// Where a submitted plan is kept; hosted plans have none.
    dir: Option<PathBuf>,
    domain: String,
    state: PlanState,
    error: String,
    watchers: watch::Sender<PlanView>,
    /// Whether its units were withdrawn from the workers after it ended.
    withdrawn: bool,
    /// Its MLflow run while it runs (submitted plans, when tracked), and
    /// the plan file logged with it at the end.
    tracking: Option<(PlanTracking, PathBuf)>,
}

impl PlanSlot {
    fn new(run: PlanRun, dir: Option<PathBuf>, domain: String, state: PlanState) -> Self {
        let initial = PlanView {
            progress: run.progress(),
            domain: domain.clone(),
            state,
            error: String::new(),
        };
        let mut slot = Self {
            run,
            dir,
            domain,
            state,
            error: String::new(),
            watchers: watch::channel(initial).0,
            withdrawn: false,
            tracking: None,
        };
        slot.settle();
        slot
    }

    fn view(&self) -> PlanView {
        PlanView {
            progress: self.run.progress(),
            domain: self.domain.clone(),
            state: self.state,
            error: self.error.clone(),
        }
    }

    /// Settles the state after a change of the run.
    fn settle(&mut self) {
        if self.state == PlanState::Running && self.run.is_finished() {
            self.state = if self.run.progress().shortfalls().is_empty() {
                PlanState::Finished
            } else {
                PlanState::Short
            };
            tracing::info!(plan = %self.run.plan_id(), state = self.state.name(), "plan ended");
        }
        self.watchers.send_replace(self.view());
        self.track();
    }

    /// A write of its results failed: no more units until the store takes
    /// writes again (see [`ClusterState::recover_storage`]).
    fn pause(&mut self, error: String) {
        tracing::error!(plan = %self.run.plan_id(), %error, "plan paused: its results could not be stored");
        self.state = PlanState::Paused;
        self.error = error;
        self.watchers.send_replace(self.view());
        self.track();
    }

    fn fail(&mut self, error: impl std::fmt::Display) {
        tracing::error!(plan = %self.run.plan_id(), %error, "plan failed");
        self.state = PlanState::Failed;
        self.error = error.to_string();
        self.watchers.send_replace(self.view());
        self.track();
    }

    /// Tells the plan's MLflow run how it goes, and ends that run once the
    /// plan has ended. Ending waits for the server, so it happens on a
    /// thread of its own, never on the actor's.
    fn track(&mut self) {
        let Some((tracking, _)) = &mut self.tracking else {
            return;
        };
        let progress = self.run.progress();
        let status = match self.state {
            PlanState::Running | PlanState::Paused => return tracking.progress(&progress),
            PlanState::Finished | PlanState::Short => "FINISHED",
            PlanState::Cancelled => "KILLED",
            PlanState::Failed => "FAILED",
        };
        let (tracking, plan_file) = self.tracking.take().expect("tracked above");
        let (plan, state) = (self.run.plan_id().to_string(), self.state.name());
        // A plan that ran to its end is exported beside its submission
        // (`.seedling/dataset`, out of the way of its reference files), so
        // that its run has the dataset, card and manifest as `seedling
        // run`'s has.
        let export = (status == "FINISHED")
            .then(|| (Arc::clone(self.run.store()), self.dir.clone()))
            .and_then(|(store, dir)| Some((store, dir?.join(".seedling/dataset"))));
        std::thread::spawn(move || {
            let exported =
                export.map(|(store, out)| export_dataset(&store, &PlanId::new(plan.clone()), &out));
            let summary = match exported {
                Some(Ok(export)) => {
                    tracking.state(state);
                    tracking.finished(&progress, &export, &plan_file)
                }
                Some(Err(err)) => {
                    tracing::warn!(%plan, %err, "the finished plan's dataset could not be exported for MLflow");
                    tracking.ended(&progress, status, state, &plan_file)
                }
                None => tracking.ended(&progress, status, state, &plan_file),
            };
            match (&summary.run_url, &summary.first_error) {
                (Some(url), None) => tracing::info!(%plan, %url, "plan tracked in MLflow"),
                (url, error) => {
                    tracing::warn!(%plan, ?url, ?error, not_logged = ?summary.not_logged, "plan not wholly logged to MLflow")
                }
            }
        });
    }
}

#[derive(Debug)]
struct WorkerEntry {
    actor: ActorRef<WorkerWire>,
    capacity: WorkerCapacity,
    group: String,
    /// Units leased to it, as (plan, unit).
    units: BTreeMap<(String, String), Lease>,
    /// Units it reports running that it holds no lease on (from before a
    /// lease expiry or a coordinator restart): they still take its slots.
    stale_running: usize,
    last_heartbeat: Instant,
    stats: Option<EngineTotals>,
    unacknowledged: u32,
    tokens_per_s: f64,
}

/// One unit's lease on a worker.
#[derive(Debug)]
struct Lease {
    /// Its secret: the worker's result must carry it back.
    secret: String,
    /// The unit's span from lease to storage; the worker's spans for it
    /// are its children. It ends with the lease unless a result is admitted.
    trace: tracing::Span,
}

/// What a report brings once admitted: its plan (by index), the result,
/// and the span that ends when the result is stored.
#[derive(Debug)]
struct Admitted {
    index: usize,
    result: UnitResult,
    trace: tracing::Span,
}

impl WorkerEntry {
    fn free(&self, max_units: usize) -> usize {
        let limit = (self.capacity.slots.max(1) as usize * UNITS_PER_SLOT).min(max_units);
        limit.saturating_sub(self.units.len() + self.stale_running)
    }
}

#[derive(Debug)]
pub struct ClusterState {
    store: Arc<LineageStore>,
    data_dir: Option<PathBuf>,
    lease_timeout: Duration,
    attempts_per_record: f64,
    address: String,
    limits: Limits,
    tracking: Option<TrackingTarget>,
    /// When to try again whether the store takes writes (plans are paused).
    next_recovery: Option<Instant>,
    /// In submission order.
    plans: Vec<PlanSlot>,
    workers: BTreeMap<String, WorkerEntry>,
    leases_expired: u64,
    workers_left: u64,
    /// Results refused (stale, forged, invalid), by why.
    results_refused: BTreeMap<String, u64>,
    units: UnitCounts,
    /// Heartbeats received per worker id.
    heartbeats: BTreeMap<String, u64>,
    writer: Writer,
    started: Instant,
    results_decided: u64,
    groups_decided: u64,
    deciding: Duration,
    dispatching: Duration,
    /// The actor thread's CPU time within `deciding`.
    deciding_cpu: Duration,
}

impl ClusterState {
    fn plan_index(&self, id: &str) -> Option<usize> {
        self.plans
            .iter()
            .position(|p| p.run.plan_id().as_str() == id)
    }

    fn index_of(&self, id: &str) -> Result<usize, ApiError> {
        self.plan_index(id)
            .ok_or_else(|| ApiError::NotFound(format!("no plan {id} on this coordinator")))
    }

    fn plan(&self, id: &str) -> Result<&PlanSlot, ApiError> {
        self.index_of(id).map(|i| &self.plans[i])
    }

    fn generator_version(&self) -> String {
        let model = self
            .workers
            .values()
            .next()
            .map(|w| {
                let digest = &w.capacity.model_digest;
                format!(
                    "; {} sha256:{}",
                    w.capacity.model_name,
                    &digest[..digest.len().min(16)]
                )
            })
            .unwrap_or_default();
        format!("seedling {} (cluster{model})", env!("CARGO_PKG_VERSION"))
    }

    /// Opens a stored or newly submitted plan and adds it to the table.
    fn open_plan(&mut self, stored: submissions::Stored) -> Result<usize, ClusterError> {
        let file = &stored.submission.file_name;
        let plan = parse_plan(file, &stored.plan_text, Some(&stored.dir)).map_err(|e| {
            ClusterError::Corrupt {
                path: stored.dir.clone(),
                message: e.to_string(),
            }
        })?;
        let domain = plan.domain.name.clone();
        let run = PlanRun::open(
            Arc::clone(&self.store),
            plan,
            RunOptions {
                target: stored.submission.target,
                generator_version: self.generator_version(),
                base_dir: stored.dir.clone(),
                attempts_per_record: self.attempts_per_record,
            },
        )?;
        let state = if stored.cancelled {
            PlanState::Cancelled
        } else {
            PlanState::Running
        };
        let tracking = match (&self.tracking, state) {
            (Some(target), PlanState::Running) => {
                Some(self.track_plan(target, &stored, run.plan()))
            }
            _ => None,
        };
        let mut slot = PlanSlot::new(run, Some(stored.dir), domain, state);
        slot.tracking = tracking;
        self.plans.push(slot);
        Ok(self.plans.len() - 1)
    }

    /// Starts the MLflow run of a submitted (or resumed) plan: what the
    /// cluster runs it with, and the workers and models there now.
    fn track_plan(
        &self,
        target: &TrackingTarget,
        stored: &submissions::Stored,
        plan: &Plan,
    ) -> (PlanTracking, PathBuf) {
        let plan_file = stored.dir.join(submissions::PLAN_FILE);
        let models: BTreeSet<String> = self
            .workers
            .values()
            .map(|w| w.capacity.model_name.clone())
            .collect();
        let digests: BTreeSet<String> = self
            .workers
            .values()
            .map(|w| w.capacity.model_digest.clone())
            .collect();
        let join = |set: BTreeSet<String>, none: &str| {
            if set.is_empty() {
                none.to_string()
            } else {
                set.into_iter().collect::<Vec<_>>().join(",")
            }
        };
        let settings = vec![
            (
                "target".to_string(),
                stored
                    .submission
                    .target
                    .map_or("plan quotas".into(), |t| t.to_string()),
            ),
            (
                "attempts_per_record".into(),
                self.attempts_per_record.to_string(),
            ),
            (
                "lease_timeout_ms".into(),
                self.lease_timeout.as_millis().to_string(),
            ),
            ("coordinator".into(), self.address.clone()),
        ];
        let context = RunContext {
            plan_id: &stored.submission.plan_id,
            plan_file: &plan_file,
            plan_text: &stored.plan_text,
            model: &join(models, "no worker yet"),
            model_sha256: &join(digests, "no worker yet"),
            settings,
            nodes: self.workers.keys().cloned().collect(),
        };
        (PlanTracking::start(target, plan, &context), plan_file)
    }

    /// Adds a plan its caller opened; a plan already here is watched as it is.
    fn host(&mut self, run: PlanRun) -> watch::Receiver<PlanView> {
        let index = match self.plan_index(run.plan_id().as_str()) {
            Some(index) => index,
            None => {
                let domain = run.plan().domain.name.clone();
                tracing::info!(plan = %run.plan_id(), %domain, "plan hosted");
                self.plans
                    .push(PlanSlot::new(run, None, domain, PlanState::Running));
                self.plans.len() - 1
            }
        };
        self.plans[index].watchers.subscribe()
    }

    fn submit(&mut self, request: PlanSubmission) -> Result<PlanView, ApiError> {
        let file = if request.file_name.is_empty() {
            "plan.toml".to_string()
        } else {
            request.file_name.clone()
        };
        if request.target == Some(0) {
            return Err(ApiError::InvalidArgument("target: must be > 0".into()));
        }
        let plan = parse_plan(&file, &request.plan_text, None)
            .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
        for name in request.files.keys() {
            if !is_safe_relative(name) {
                return Err(ApiError::InvalidArgument(format!(
                    "{file}: attached file {name:?} must be a relative path inside the plan's directory"
                )));
            }
        }
        for (idx, reference) in plan.references.iter().enumerate() {
            let path = reference.path.to_string_lossy();
            if !is_safe_relative(&path) {
                return Err(ApiError::InvalidArgument(format!(
                    "{file}: references[{idx}].path: {path} must be a relative path inside the plan's directory"
                )));
            }
            if !request.files.contains_key(path.as_ref()) {
                return Err(ApiError::InvalidArgument(format!(
                    "{file}: references[{idx}].path: file {path} was not sent with the plan"
                )));
            }
        }
        let id = plan_id(&plan);
        if let Some(existing) = self.plan_index(id.as_str()) {
            // Submitting the same plan again is asking about it.
            return Ok(self.plans[existing].view());
        }
        let submission = Submission {
            plan_id: id.to_string(),
            file_name: file,
            target: request.target,
            submitted_at_ms: seedling_common::time::now_unix_ms(),
        };
        let Some(data_dir) = &self.data_dir else {
            return Err(ApiError::FailedPrecondition(
                "this coordinator runs only the plan it was started with".into(),
            ));
        };
        let dir = submissions::save(data_dir, &submission, &request.plan_text, &request.files)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let index = self
            .open_plan(submissions::Stored {
                submission,
                dir,
                plan_text: request.plan_text,
                cancelled: false,
            })
            .map_err(|e| match e {
                // A reference that is not text, or similar: the plan's fault.
                ClusterError::Pipeline(err) => ApiError::InvalidArgument(err.to_string()),
                other => ApiError::Internal(other.to_string()),
            })?;
        tracing::info!(plan = %id, domain = %self.plans[index].domain, "plan submitted");
        Ok(self.plans[index].view())
    }

    fn cancel(&mut self, id: &str) -> Result<PlanView, ApiError> {
        let index = self.index_of(id)?;
        let slot = &mut self.plans[index];
        if slot.state == PlanState::Running {
            if let Some(dir) = &slot.dir {
                submissions::mark_cancelled(dir).map_err(|e| ApiError::Internal(e.to_string()))?;
            }
            slot.state = PlanState::Cancelled;
            tracing::info!(plan = %id, "plan cancelled");
            slot.settle();
            // Its units stop on the workers; any result still on its way is
            // stale and stores nothing.
            self.withdraw_ended();
        }
        Ok(self.plans[index].view())
    }

    fn on_heartbeat(&mut self, beat: WorkerBeat) {
        let capacity = beat.capacity.clone();
        let id = capacity.worker_id.clone();
        let now = Instant::now();
        if !self.workers.contains_key(&id) {
            let Some(cell) = ractor::pg::get_members(&beat.group).into_iter().next() else {
                tracing::warn!(worker = %id, group = %beat.group, "heartbeat from a worker whose actor is not visible yet");
                return;
            };
            tracing::info!(worker = %id, slots = capacity.slots, model = %capacity.model_name, gpu = capacity.gpu, "worker joined");
            self.workers.insert(
                id.clone(),
                WorkerEntry {
                    actor: cell.into(),
                    capacity: capacity.clone(),
                    group: beat.group.clone(),
                    units: BTreeMap::new(),
                    stale_running: 0,
                    last_heartbeat: now,
                    stats: None,
                    unacknowledged: 0,
                    tokens_per_s: 0.0,
                },
            );
        }
        *self.heartbeats.entry(id.clone()).or_default() += 1;
        let worker = self.workers.get_mut(&id).expect("inserted above");
        let elapsed = now.duration_since(worker.last_heartbeat).as_secs_f64();
        if let (Some(before), Some(after)) = (&worker.stats, &beat.stats)
            && elapsed > 0.0
        {
            let delta = after
                .generated_tokens
                .saturating_sub(before.generated_tokens) as f64;
            worker.tokens_per_s = delta / elapsed;
        }
        worker.capacity = capacity;
        worker.last_heartbeat = now;
        worker.stats = beat.stats;
        worker.unacknowledged = beat.unacknowledged;
        worker.stale_running = beat
            .running
            .iter()
            .filter(|r| {
                r.split_once('/').is_none_or(|(plan, unit)| {
                    !worker
                        .units
                        .contains_key(&(plan.to_string(), unit.to_string()))
                })
            })
            .count();
        // Units of ended plans it still runs (leased before a restart of
        // this coordinator, or before the plan ended): stopped too.
        let mut ended: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
        for (plan, unit) in beat.running.iter().filter_map(|r| r.split_once('/')) {
            if let Some(slot) = self.plans.iter().find(|p| p.run.plan_id().as_str() == plan)
                && slot.state != PlanState::Running
            {
                let units = ended.entry((plan, slot.state.name())).or_default();
                units.push(unit.to_string());
            }
        }
        for ((plan, reason), units) in ended {
            withdraw(worker, plan, units, &format!("the plan is {reason}"));
        }
        self.dispatch();
    }

    /// Stops, on the workers, the attempts of running plans whose strata
    /// filled before they finished.
    fn withdraw_surplus(&mut self) {
        for slot in &mut self.plans {
            if slot.state != PlanState::Running {
                continue;
            }
            let surplus = slot.run.withdraw_surplus();
            if surplus.is_empty() {
                continue;
            }
            let plan = slot.run.plan_id().to_string();
            for worker in self.workers.values_mut() {
                let units: Vec<String> = surplus
                    .iter()
                    .filter(|unit| {
                        worker
                            .units
                            .remove(&(plan.clone(), (*unit).clone()))
                            .is_some()
                    })
                    .cloned()
                    .collect();
                withdraw(worker, &plan, units, "their stratum is full");
            }
        }
    }

    /// Stops, on the workers, the units of plans that have ended (finished,
    /// cancelled, failed): their results could change nothing, and they
    /// hold slots that other plans' units could use.
    fn withdraw_ended(&mut self) {
        for slot in &mut self.plans {
            if slot.state == PlanState::Running || slot.withdrawn {
                continue;
            }
            slot.withdrawn = true;
            let plan = slot.run.plan_id().to_string();
            for worker in self.workers.values_mut() {
                let units: Vec<String> = worker
                    .units
                    .keys()
                    .filter(|(p, _)| *p == plan)
                    .map(|(_, unit)| unit.clone())
                    .collect();
                worker.units.retain(|(p, _), _| *p != plan);
                withdraw(
                    worker,
                    &plan,
                    units,
                    &format!("the plan is {}", slot.state.name()),
                );
            }
        }
    }

    /// Takes a worker out and gives its units back to their plans.
    fn drop_worker(&mut self, id: &str, why: &str) {
        let Some(worker) = self.workers.remove(id) else {
            return;
        };
        // A worker leaving empty-handed (the end of an embedded run, a
        // drained node) costs nothing: not worth an operator's attention.
        if worker.units.is_empty() {
            tracing::info!(worker = %id, why, "worker out; it held no units");
        } else {
            tracing::warn!(worker = %id, units = worker.units.len(), why, "worker out; its units go to the others");
        }
        self.units.requeued += worker.units.len() as u64;
        for (plan, unit) in worker.units.keys() {
            if let Some(index) = self.plan_index(plan) {
                self.plans[index].run.return_unit(unit);
            }
        }
        self.dispatch();
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| now.duration_since(w.last_heartbeat) > self.lease_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.leases_expired += 1;
            self.drop_worker(&id, "lease expired: no heartbeat within the lease timeout");
        }
        self.recover_storage();
    }

    fn on_group_change(&mut self, change: &GroupChangeMessage) {
        if let GroupChangeMessage::Leave(_, group, _) = change
            && ractor::pg::get_members(group).is_empty()
            && let Some(id) = self
                .workers
                .iter()
                .find(|(_, w)| &w.group == group)
                .map(|(id, _)| id.clone())
        {
            self.workers_left += 1;
            self.drop_worker(&id, "its node left the cluster");
        }
    }

    /// Hands units to workers with free room until no plan has more to give,
    /// then publishes the progress of the plans that handed any out (once
    /// each, not once per grant).
    fn dispatch(&mut self) {
        let mut touched = BTreeSet::new();
        loop {
            let running: Vec<usize> = (0..self.plans.len())
                .filter(|&i| self.plans[i].state == PlanState::Running)
                .collect();
            let ids: Vec<String> = self.workers.keys().cloned().collect();
            let rooms: Vec<WorkerRoom> = ids
                .iter()
                .map(|id| {
                    let w = &self.workers[id];
                    WorkerRoom {
                        worker: id.clone(),
                        free: w.free(self.limits.max_units_per_worker),
                        running: running
                            .iter()
                            .enumerate()
                            .filter(|&(_, &p)| {
                                let plan = self.plans[p].run.plan_id().as_str();
                                w.units.keys().any(|(held, _)| held == plan)
                            })
                            .map(|(n, _)| n)
                            .collect(),
                    }
                })
                .collect();
            // Each plan plans all the units its grants want at once, and
            // all of them are encoded at once: one parallel pass each, not
            // one per worker.
            let grants = assign(&rooms, running.len());
            let mut wanted = vec![0usize; running.len()];
            for grant in &grants {
                wanted[grant.plan] += grant.count;
            }
            let mut planned = Vec::new();
            for (n, &count) in wanted.iter().enumerate() {
                if count == 0 {
                    continue;
                }
                let slot = &mut self.plans[running[n]];
                match slot.run.next_units(count) {
                    Ok(tasks) => planned.extend(tasks.into_iter().map(|task| (n, task))),
                    Err(err) => slot.fail(err),
                }
            }
            let lease_ms = self.lease_timeout.as_millis() as u64;
            let max_result_bytes = self.limits.max_result_bytes as u64;
            // A task's prompts are most of its bytes.
            let encoded: Vec<(usize, String, String, Lease, Assignment)> = planned
                .into_par_iter()
                .map(|(n, task)| {
                    // A root: a unit's trace starts at its lease.
                    let trace = tracing::info_span!(parent: None, "unit", plan = %task.plan, unit = %task.unit, worker = tracing::field::Empty);
                    let lease = Lease {
                        secret: lease_secret(),
                        trace,
                    };
                    let assignment = Assignment::encode(
                        &task,
                        lease_ms,
                        &lease.secret,
                        max_result_bytes,
                        trace_parent(&lease.trace),
                    );
                    (n, task.plan, task.unit, lease, assignment)
                })
                .collect();
            let mut by_plan: Vec<std::collections::VecDeque<_>> =
                std::iter::repeat_with(Default::default)
                    .take(running.len())
                    .collect();
            for (n, plan, unit, lease, bytes) in encoded {
                by_plan[n].push_back((plan, unit, lease, bytes));
            }
            let mut given = 0;
            for grant in grants {
                let slot = &mut self.plans[running[grant.plan]];
                let worker = self
                    .workers
                    .get_mut(&ids[grant.worker])
                    .expect("listed above");
                for _ in 0..grant.count {
                    let Some((plan, unit, lease, assignment)) = by_plan[grant.plan].pop_front()
                    else {
                        break;
                    };
                    if wire::assign(&worker.actor, assignment).is_err() {
                        tracing::warn!(%plan, %unit, worker = %worker.capacity.worker_id, "worker unreachable; unit returned");
                        slot.run.return_unit(&unit);
                        self.units.requeued += 1;
                        continue;
                    }
                    tracing::debug!(%plan, %unit, worker = %worker.capacity.worker_id, "unit leased");
                    lease
                        .trace
                        .record("worker", worker.capacity.worker_id.as_str());
                    worker.units.insert((plan, unit), lease);
                    given += 1;
                    self.units.leased += 1;
                }
                touched.insert(running[grant.plan]);
            }
            if given == 0 {
                break;
            }
        }
        for index in touched {
            self.plans[index].settle();
        }
    }

    /// A report's result, if it counts: from the worker holding the unit's
    /// lease, with the lease's secret, for a running plan, naming the unit
    /// it was leased for. Every refusal is counted by why.
    fn admit(&mut self, arrived: Arrived) -> Result<Admitted, String> {
        let admitted = self.check_report(arrived);
        if let Err(outcome) = &admitted {
            let why = outcome.split(':').next().unwrap_or(outcome).to_string();
            *self.results_refused.entry(why).or_default() += 1;
        }
        admitted
    }

    fn check_report(&mut self, arrived: Arrived) -> Result<Admitted, String> {
        let Arrived {
            worker_id,
            plan_id,
            unit_id,
            lease,
            trace_parent,
            result,
        } = arrived;
        let key = (plan_id.clone(), unit_id.clone());
        let leased = match self.workers.get_mut(&worker_id) {
            Some(worker) => match worker.units.get(&key) {
                Some(held) if !same_secret(held.secret.as_bytes(), lease.as_bytes()) => {
                    // Not from the worker the unit went to: it keeps its lease.
                    tracing::warn!(plan = %plan_id, unit = %unit_id, claimed = %worker_id, "forged result refused: wrong lease secret");
                    return Err("forged".into());
                }
                Some(_) => worker.units.remove(&key),
                None => None,
            },
            None => None,
        };
        let index = self.plan_index(&plan_id);
        let (Some(leased), Some(index)) = (leased, index) else {
            tracing::info!(plan = %plan_id, unit = %unit_id, worker = %worker_id, "stale result ignored: the unit is not leased to this worker");
            return Err("stale".into());
        };
        let slot = &mut self.plans[index];
        if slot.state != PlanState::Running {
            return Err("stale".into());
        }
        match result {
            Ok(result) if result.plan == plan_id && result.unit == unit_id => {
                let trace = tracing::info_span!(parent: &leased.trace, "result", outcome = tracing::field::Empty, error = tracing::field::Empty);
                link(&trace, &trace_parent);
                Ok(Admitted {
                    index,
                    result,
                    trace,
                })
            }
            Ok(_) => {
                slot.run.return_unit(&unit_id);
                self.units.requeued += 1;
                Err("invalid: the result names another unit".into())
            }
            Err(err) => {
                slot.run.return_unit(&unit_id);
                self.units.requeued += 1;
                Err(format!("invalid: {err}"))
            }
        }
    }

    /// Decides a group of results (per plan, in order) and hands out the
    /// units their slots freed. Returns the durable write that must happen
    /// before `reply` gets the outcomes, or answers at once when nothing
    /// needs storing.
    fn on_reports(
        &mut self,
        reports: Vec<Arrived>,
        reply: RpcReplyPort<Vec<String>>,
    ) -> Option<Write> {
        let mut outcomes = vec![String::new(); reports.len()];
        let mut by_plan: BTreeMap<usize, Vec<(usize, UnitResult)>> = BTreeMap::new();
        let mut traces = vec![tracing::Span::none(); reports.len()];
        for (position, arrived) in reports.into_iter().enumerate() {
            match self.admit(arrived) {
                Ok(Admitted {
                    index,
                    result,
                    trace,
                }) => {
                    self.units.completed += 1;
                    by_plan.entry(index).or_default().push((position, result));
                    traces[position] = trace;
                }
                Err(outcome) => outcomes[position] = outcome,
            }
        }
        let mut lineage = Vec::new();
        let mut tickets = Vec::new();
        for (index, admitted) in by_plan {
            let slot = &mut self.plans[index];
            let (positions, results): (Vec<usize>, Vec<UnitResult>) = admitted.into_iter().unzip();
            match slot.run.decide_results(results) {
                Ok(decided) => {
                    for (position, outcome) in positions.into_iter().zip(decided.outcomes) {
                        outcomes[position] = match outcome {
                            UnitOutcome::Accepted => "accepted".to_string(),
                            UnitOutcome::Rejected(reason) => format!("rejected:{reason}"),
                            UnitOutcome::Analysed => "analysed".into(),
                            UnitOutcome::Ignored => "stale".into(),
                        };
                    }
                    lineage.push(decided.lineage);
                    tickets.push((slot.run.plan_id().to_string(), decided.ticket));
                }
                Err(err) => {
                    for position in positions {
                        outcomes[position] = format!("error: {err}");
                    }
                    slot.fail(&err);
                    continue;
                }
            }
            if let Some(error) = slot.run.failing() {
                slot.fail(error);
            }
        }
        self.withdraw_surplus();
        let dispatching = Instant::now();
        self.dispatch();
        self.dispatching += dispatching.elapsed();
        for (trace, outcome) in traces.iter().zip(&outcomes) {
            trace.record("outcome", outcome.as_str());
        }
        if tickets.is_empty() {
            let _ = reply.send(outcomes);
            return None;
        }
        Some(Write {
            lineage: Write::build(lineage),
            tickets,
            outcomes,
            reply,
            traces,
        })
    }

    /// Decided groups are durable (their acceptances count now, and a plan
    /// may end), or their write failed, which pauses their plans until the
    /// store takes writes again: then each is opened again from the store,
    /// which alone is trusted.
    fn on_written(&mut self, written: Written) {
        let mut touched = BTreeSet::new();
        for (plan, ticket) in written.tickets {
            let Some(index) = self.plan_index(&plan) else {
                continue;
            };
            self.plans[index].run.confirm(ticket);
            touched.insert(index);
        }
        for index in touched {
            let slot = &mut self.plans[index];
            match &written.error {
                Some(error) if slot.state == PlanState::Running => {
                    slot.pause(format!(
                        "storing results failed: {error}; nothing acknowledged is lost, and the plan resumes by itself once the lineage store in {} takes writes again (free space there, or make it writable)",
                        self.store.dir().display()
                    ));
                }
                _ => slot.settle(),
            }
        }
        if written.error.is_some() {
            // Their units' results could store nothing now.
            self.withdraw_ended();
            self.next_recovery = Some(Instant::now() + RECOVERY_EVERY);
        }
    }

    /// Tries, now and then while plans are paused, whether the lineage
    /// store takes writes again: sled is opened afresh (it keeps an I/O
    /// error for the life of an open database), a probe is written and
    /// synced, and each paused plan is opened again from what is stored.
    fn recover_storage(&mut self) {
        match self.next_recovery {
            Some(at) if Instant::now() >= at => {}
            _ => return,
        }
        if !self.plans.iter().any(|p| p.state == PlanState::Paused) {
            self.next_recovery = None;
            return;
        }
        let writable = self.store.reopen().and_then(|()| self.store.probe_write());
        if let Err(err) = writable {
            tracing::warn!(%err, dir = %self.store.dir().display(), "the lineage store still takes no writes; paused plans wait");
            self.next_recovery = Some(Instant::now() + RECOVERY_EVERY);
            return;
        }
        for slot in &mut self.plans {
            if slot.state != PlanState::Paused {
                continue;
            }
            match slot.run.reopen() {
                Ok(run) => {
                    tracing::info!(plan = %run.plan_id(), "the lineage store takes writes again; plan resumed");
                    slot.run = run;
                    slot.state = PlanState::Running;
                    slot.error.clear();
                    slot.withdrawn = false;
                    slot.settle();
                }
                Err(err) => slot.fail(format!("resuming after a failed write: {err}")),
            }
        }
        self.next_recovery = None;
        self.dispatch();
    }

    fn status(&self) -> ClusterView {
        let now = Instant::now();
        let running = self.plans.iter().filter(|p| p.state == PlanState::Running);
        ClusterView {
            coordinator: self.address.clone(),
            workers: self
                .workers
                .values()
                .map(|w| WorkerView {
                    capacity: w.capacity.clone(),
                    busy: (w.units.len() + w.stale_running) as u32,
                    free: w.free(self.limits.max_units_per_worker) as u32,
                    last_heartbeat_ago: now.duration_since(w.last_heartbeat),
                    tokens_per_s: w.tokens_per_s,
                    leased_units: w.units.keys().map(|(p, u)| format!("{p}/{u}")).collect(),
                    stats: w.stats,
                    unacknowledged: w.unacknowledged,
                })
                .collect(),
            queue_depth: running
                .clone()
                .map(|p| {
                    let progress = p.run.progress();
                    progress
                        .target
                        .saturating_sub(progress.accepted + progress.in_flight)
                })
                .sum(),
            plans_running: running.count() as u32,
            leases_expired: self.leases_expired,
            workers_left: self.workers_left,
            lease_timeout: self.lease_timeout,
            load: self.load(),
            results_refused: self.results_refused.clone(),
        }
    }

    /// Adds a deciding turn begun at `started` (wall clock, thread CPU) to
    /// the load figures.
    fn count_deciding(&mut self, started: (Instant, Duration)) {
        self.deciding += started.0.elapsed();
        self.deciding_cpu += thread_cpu().saturating_sub(started.1);
    }

    fn load(&self) -> CoordinatorLoad {
        let (results_written, writes, writing_s, writing_cpu_s, syncing_s) =
            self.writer.load().totals();
        CoordinatorLoad {
            results_decided: self.results_decided,
            deciding_s: self.deciding.as_secs_f64(),
            groups_decided: self.groups_decided,
            dispatching_s: self.dispatching.as_secs_f64(),
            results_written,
            writes,
            writing_s,
            uptime_s: self.started.elapsed().as_secs_f64(),
            deciding_cpu_s: self.deciding_cpu.as_secs_f64(),
            writing_cpu_s,
            syncing_s,
        }
    }
}

impl Actor for ClusterCoordinator {
    type Msg = ClusterMsg;
    type State = ClusterState;
    type Arguments = ClusterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let writer = Writer::start(Arc::clone(&args.store), myself, args.writes_done)?;
        let mut state = ClusterState {
            store: args.store,
            data_dir: args.data_dir,
            lease_timeout: args.lease_timeout,
            attempts_per_record: args.attempts_per_record,
            limits: args.limits,
            address: args.address,
            tracking: args.tracking,
            next_recovery: None,
            plans: Vec::new(),
            workers: BTreeMap::new(),
            leases_expired: 0,
            workers_left: 0,
            results_refused: BTreeMap::new(),
            units: UnitCounts::default(),
            heartbeats: BTreeMap::new(),
            writer,
            started: Instant::now(),
            results_decided: 0,
            groups_decided: 0,
            deciding: Duration::ZERO,
            dispatching: Duration::ZERO,
            deciding_cpu: Duration::ZERO,
        };
        // A restarted coordinator picks every plan up where the store left it.
        let stored = match &state.data_dir {
            Some(dir) => submissions::load_all(dir)?,
            None => Vec::new(),
        };
        for stored in stored {
            let id = stored.submission.plan_id.clone();
            match state.open_plan(stored) {
                Ok(index) => {
                    let p = state.plans[index].run.progress();
                    tracing::info!(plan = %id, state = state.plans[index].state.name(), accepted = p.accepted, target = p.target, "plan reopened");
                }
                Err(err) => tracing::error!(plan = %id, %err, "cannot reopen a submitted plan"),
            }
        }
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        myself.send_interval(TICK, || ClusterMsg::Tick);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ClusterMsg::Heartbeat(beat) => {
                let known = state.workers.contains_key(&beat.capacity.worker_id);
                let group = beat.group.clone();
                state.on_heartbeat(*beat);
                if !known && state.workers.values().any(|w| w.group == group) {
                    // Told when its node goes, not only when its lease runs out.
                    ractor::pg::monitor(group, myself.get_cell());
                }
            }
            ClusterMsg::Reports(reports, reply) => {
                let started = (Instant::now(), thread_cpu());
                state.results_decided += reports.len() as u64;
                state.groups_decided += 1;
                let write = state.on_reports(reports, reply);
                state.count_deciding(started);
                if let Some(write) = write {
                    state.writer.write(write).await;
                }
            }
            ClusterMsg::Written(written) => {
                // Confirming is part of what a result costs the actor.
                let started = (Instant::now(), thread_cpu());
                state.on_written(written);
                state.count_deciding(started);
            }
            ClusterMsg::Tick => state.on_tick(),
            ClusterMsg::Submit(request, reply) => {
                let _ = reply.send(state.submit(*request));
                state.dispatch();
            }
            ClusterMsg::Cancel(id, reply) => {
                let _ = reply.send(state.cancel(&id));
            }
            ClusterMsg::GetPlan(id, reply) => {
                let _ = reply.send(state.plan(&id).map(PlanSlot::view));
            }
            ClusterMsg::ListPlans(reply) => {
                let _ = reply.send(state.plans.iter().map(PlanSlot::view).collect());
            }
            ClusterMsg::Watch(id, reply) => {
                let _ = reply.send(state.plan(&id).map(|p| p.watchers.subscribe()));
            }
            ClusterMsg::Host(run, reply) => {
                let _ = reply.send(state.host(*run));
                state.dispatch();
            }
            ClusterMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            ClusterMsg::Metrics(reply) => {
                let load = state.writer.load();
                let _ = reply.send(MetricsSnapshot {
                    status: state.status(),
                    plans: state.plans.iter().map(PlanSlot::view).collect(),
                    units: state.units,
                    heartbeats: state.heartbeats.clone(),
                    write_batch_seconds: load.batch_seconds.clone(),
                    write_sync_seconds: load.sync_seconds.clone(),
                    store_bytes: None,
                });
            }
        }
        state.withdraw_ended();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ProcessGroupChanged(change) = &event {
            state.on_group_change(change);
        }
        Ok(())
    }
}

/// A fresh lease secret.
fn lease_secret() -> String {
    seedling_proto::auth::fresh_secret()
}

/// Tells `worker` to stop `units` of `plan`, and why.
fn withdraw(worker: &WorkerEntry, plan: &str, units: Vec<String>, reason: &str) {
    if units.is_empty() {
        return;
    }
    let count = units.len();
    let worker_id = &worker.capacity.worker_id;
    match wire::withdraw(&worker.actor, plan, units, reason) {
        Ok(()) => {
            tracing::info!(%plan, worker = %worker_id, units = count, reason, "units withdrawn")
        }
        // Gone: its lease expires, and nothing it sends is stored.
        Err(_) => {
            tracing::debug!(%plan, worker = %worker_id, "cannot withdraw units from an unreachable worker")
        }
    }
}
