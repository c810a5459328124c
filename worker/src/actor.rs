//! The worker actor: owns an engine and runs the units it is sent. Each unit
//! runs on its own task so that the engine batches them together; the actor
//! itself only hands work out, so it never blocks on the model.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use seedling_common::work::{UnitResult, UnitTask};
use seedling_proto::actors::{CoordinatorMsg, WorkerMsg};
use seedling_proto::worker::WorkerCapacity;
use tokio::task::AbortHandle;

use crate::engine::Engine;
use crate::unit::run_unit;

/// A worker actor for one engine.
#[derive(Debug)]
pub struct WorkerActor;

/// What a worker actor starts with.
#[derive(Debug)]
pub struct WorkerArgs {
    pub engine: Arc<Engine>,
    pub capacity: WorkerCapacity,
    /// Told that this worker is ready once it has started.
    pub coordinator: ActorRef<CoordinatorMsg>,
}

#[derive(Debug)]
pub struct WorkerState {
    engine: Arc<Engine>,
    id: String,
    /// Each running unit's task, to stop it when it is withdrawn.
    running: HashMap<String, AbortHandle>,
}

impl Actor for WorkerActor {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let id = args.capacity.worker_id.clone();
        args.coordinator
            .send_message(CoordinatorMsg::WorkerJoined {
                worker: myself,
                capacity: args.capacity,
            })?;
        Ok(WorkerState {
            engine: args.engine,
            id,
            running: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMsg::RunUnit { task, report_to } => {
                let engine = Arc::clone(&state.engine);
                let worker = state.id.clone();
                let unit = task.unit.clone();
                let running = tokio::spawn(async move {
                    let result = run_caught(engine, worker, task).await;
                    // A coordinator that has stopped no longer wants it.
                    let _ = report_to.send_message(CoordinatorMsg::UnitFinished(Box::new(result)));
                });
                state.running.retain(|_, task| !task.is_finished());
                state.running.insert(unit, running.abort_handle());
            }
            WorkerMsg::Withdraw { units } => {
                // Stopping the task drops its engine requests: the engine
                // frees their slots at its next step.
                for unit in &units {
                    if let Some(task) = state.running.remove(unit) {
                        task.abort();
                    }
                }
                tracing::debug!(worker = %state.id, units = units.len(), "surplus units withdrawn");
            }
        }
        Ok(())
    }
}

/// Aborts a task when dropped: its caller no longer waits for it.
struct StopOnDrop(tokio::task::AbortHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs a unit on its own task and always returns a result: a unit that
/// panics is reported as failed, or the plan would wait for it forever.
pub(crate) async fn run_caught(
    engine: Arc<Engine>,
    worker: String,
    task: Box<UnitTask>,
) -> UnitResult {
    let (plan, unit) = (task.plan.clone(), task.unit.clone());
    let running = {
        let worker = worker.clone();
        tokio::spawn(async move { run_unit(&engine, &worker, &task).await })
    };
    // Stopping this future (a withdrawn unit) stops the unit too.
    let _stop = StopOnDrop(running.abort_handle());
    let result = running.await.unwrap_or_else(|err| UnitResult {
        error: Some(format!("the worker failed while running the unit: {err}")),
        ..UnitResult::new(plan, unit, worker.clone())
    });
    tracing::debug!(plan = %result.plan, unit = %result.unit, %worker, "unit finished");
    result
}
