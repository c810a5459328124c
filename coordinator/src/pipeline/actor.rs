//! The coordinator actor: holds one plan's run, hands units to the workers
//! that joined by their free slots, and turns every reported result into
//! durable lineage before it hands out more. The same actor serves the
//! embedded mode (a local worker) and the cluster (remote workers).

use std::collections::HashSet;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use seedling_proto::actors::{CoordinatorMsg, WorkerMsg};
use seedling_proto::worker::WorkerCapacity;
use tokio::sync::{oneshot, watch};

use super::PipelineError;
use super::run::{PlanRun, Progress};

/// Units kept per engine slot: one running, one queued, so the engine never
/// waits for the coordinator between sequences.
const UNITS_PER_SLOT: usize = 2;

#[derive(Debug)]
pub struct CoordinatorActor;

/// What a coordinator starts with.
#[derive(Debug)]
pub struct CoordinatorArgs {
    pub run: PlanRun,
    /// Every change of progress is published here.
    pub progress: watch::Sender<Progress>,
    /// Told once, when the run ends.
    pub finished: oneshot::Sender<Result<Progress, PipelineError>>,
}

#[derive(Debug)]
struct WorkerSlot {
    actor: ActorRef<WorkerMsg>,
    capacity: WorkerCapacity,
    units: HashSet<String>,
}

#[derive(Debug)]
pub struct CoordinatorState {
    run: PlanRun,
    workers: Vec<WorkerSlot>,
    progress: watch::Sender<Progress>,
    finished: Option<oneshot::Sender<Result<Progress, PipelineError>>>,
}

impl CoordinatorState {
    fn dispatch(&mut self, myself: &ActorRef<CoordinatorMsg>) -> Result<(), PipelineError> {
        for worker in &mut self.workers {
            let limit = worker.capacity.slots.max(1) as usize * UNITS_PER_SLOT;
            let free = limit.saturating_sub(worker.units.len());
            if free == 0 {
                continue;
            }
            for task in self.run.next_units(free)? {
                let unit = task.unit.clone();
                let sent = worker.actor.send_message(WorkerMsg::RunUnit {
                    task: Box::new(task),
                    report_to: myself.clone(),
                });
                if sent.is_err() {
                    tracing::warn!(%unit, worker = %worker.capacity.worker_id, "worker gone; unit returned");
                    self.run.return_unit(&unit);
                } else {
                    worker.units.insert(unit);
                }
            }
        }
        Ok(())
    }

    /// Stops, on their workers, the attempts for strata that just filled.
    fn withdraw_surplus(&mut self) {
        let surplus = self.run.withdraw_surplus();
        if surplus.is_empty() {
            return;
        }
        for worker in &mut self.workers {
            let units: Vec<String> = surplus
                .iter()
                .filter(|u| worker.units.remove(*u))
                .cloned()
                .collect();
            if !units.is_empty() {
                // A worker that is gone has nothing left to stop.
                let _ = worker.actor.send_message(WorkerMsg::Withdraw { units });
            }
        }
    }

    fn publish(&self) {
        self.progress.send_replace(self.run.progress());
    }

    /// Ends the run: the waiting caller learns how, the actor stops.
    fn finish(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
        outcome: Result<Progress, PipelineError>,
    ) {
        if let Some(finished) = self.finished.take() {
            let _ = finished.send(outcome);
        }
        myself.stop(None);
    }

    fn on_result(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
        result: seedling_common::work::UnitResult,
    ) -> Result<(), PipelineError> {
        for worker in &mut self.workers {
            worker.units.remove(&result.unit);
        }
        let unit = result.unit.clone();
        let error = result.error.clone();
        let outcome = self.run.record_result(result)?;
        tracing::debug!(plan = %self.run.plan_id(), %unit, ?outcome, "unit recorded");
        if self.run.is_failing() {
            return Err(PipelineError::EngineFailing {
                last_error: error.unwrap_or_default(),
            });
        }
        self.withdraw_surplus();
        self.dispatch(myself)?;
        self.publish();
        if self.run.is_finished() {
            let progress = self.run.progress();
            self.finish(myself, Ok(progress));
        }
        Ok(())
    }
}

impl Actor for CoordinatorActor {
    type Msg = CoordinatorMsg;
    type State = CoordinatorState;
    type Arguments = CoordinatorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(CoordinatorState {
            run: args.run,
            workers: Vec::new(),
            progress: args.progress,
            finished: Some(args.finished),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.publish();
        if state.run.is_finished() {
            let progress = state.run.progress();
            state.finish(&myself, Ok(progress));
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let handled = match message {
            CoordinatorMsg::WorkerJoined { worker, capacity } => {
                tracing::info!(worker = %capacity.worker_id, slots = capacity.slots, "worker joined");
                state.workers.push(WorkerSlot {
                    actor: worker,
                    capacity,
                    units: HashSet::new(),
                });
                state.dispatch(&myself)
            }
            CoordinatorMsg::UnitFinished(result) => state.on_result(&myself, *result),
        };
        if let Err(err) = handled {
            // What is stored stays stored; the caller learns why the run stopped.
            state.finish(&myself, Err(err));
        }
        Ok(())
    }
}
