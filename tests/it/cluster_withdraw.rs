//! The cluster coordinator with simulated workers (no model): units of a
//! plan that has ended are withdrawn from the workers running them, so
//! their slots go to other work instead of to results nobody stores.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use seedling_proto::api::{ClusterStatusRequest, PlanRef, SubmitPlanRequest};
use seedling_proto::cluster::{WorkerWire, decode};
use seedling_proto::control::{UnitAssignment, UnitWithdrawal};
use seedling_tests::retail_banking_without_references;
use seedling_tests::simulated::{LocalCoordinator, join_worker};

type Units = Arc<Mutex<BTreeSet<(String, String)>>>;

/// A worker stand-in that takes units and never finishes them.
struct HoldingWorker;

struct Held {
    assigned: Units,
    withdrawn: Units,
}

impl Actor for HoldingWorker {
    type Msg = WorkerWire;
    type State = Held;
    type Arguments = Held;

    async fn pre_start(
        &self,
        _: ActorRef<WorkerWire>,
        held: Held,
    ) -> Result<Held, ActorProcessingErr> {
        Ok(held)
    }

    async fn handle(
        &self,
        _: ActorRef<WorkerWire>,
        message: WorkerWire,
        held: &mut Held,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerWire::Assign(bytes) => {
                let unit: UnitAssignment = decode("assignment", &bytes)?;
                held.assigned
                    .lock()
                    .unwrap()
                    .insert((unit.plan_id, unit.unit_id));
            }
            WorkerWire::Withdraw(bytes) => {
                let withdrawal: UnitWithdrawal = decode("withdrawal", &bytes)?;
                assert!(
                    withdrawal.reason.contains("cancelled"),
                    "{}",
                    withdrawal.reason
                );
                let mut withdrawn = held.withdrawn.lock().unwrap();
                for unit in withdrawal.unit_ids {
                    assert!(
                        withdrawn.insert((withdrawal.plan_id.clone(), unit)),
                        "a unit withdrawn twice"
                    );
                }
            }
        }
        Ok(())
    }
}

async fn eventually(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_plans_units_are_withdrawn_from_the_workers_running_them() {
    let mut coordinator = LocalCoordinator::start(Duration::from_secs(30))
        .await
        .unwrap();
    let mut workers = Vec::new();
    for id in ["hold-a", "hold-b"] {
        let (assigned, withdrawn) = (Units::default(), Units::default());
        let held = Held {
            assigned: Arc::clone(&assigned),
            withdrawn: Arc::clone(&withdrawn),
        };
        let (actor, _) = Actor::spawn(None, HoldingWorker, held).await.unwrap();
        // It sends no results; the stream stays open while the sender lives.
        let (results, unsent) = tokio::sync::mpsc::unbounded_channel();
        join_worker(&coordinator.url, id, 2, actor.get_cell(), unsent, || {})
            .await
            .unwrap();
        workers.push((assigned, withdrawn, results, actor));
    }
    coordinator.wait_for_workers(2).await.unwrap();

    // Without its reference document: no domain analysis to wait for,
    // generation units from the start.
    let plan_toml = retail_banking_without_references();
    let plan = coordinator
        .api
        .submit_plan(SubmitPlanRequest {
            file_name: "retail-banking.toml".into(),
            plan_toml,
            files: Default::default(),
            target: Some(50),
        })
        .await
        .unwrap()
        .into_inner()
        .plan_id;
    // Two slots, two units a slot: each worker holds four.
    eventually("every worker to hold four units", || {
        workers
            .iter()
            .all(|(assigned, ..)| assigned.lock().unwrap().len() == 4)
    })
    .await;
    let plan_ref = PlanRef {
        plan_id: plan.clone(),
    };
    let cancelled = coordinator
        .api
        .cancel_plan(plan_ref)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state, "cancelled");

    eventually("the held units to be withdrawn", || {
        workers.iter().all(|(assigned, withdrawn, ..)| {
            *assigned.lock().unwrap() == *withdrawn.lock().unwrap()
        })
    })
    .await;
    for (assigned, ..) in &workers {
        assert!(assigned.lock().unwrap().iter().all(|(p, _)| *p == plan));
    }
    // No lease is left on the workers' slots.
    let status = coordinator
        .api
        .get_cluster_status(ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    for worker in &status.workers {
        assert!(worker.leased_units.is_empty(), "{:?}", worker.leased_units);
        assert_eq!((worker.busy, worker.free), (0, 4));
    }
    for (.., actor) in workers {
        actor.stop(None);
    }
    coordinator.stop().await;
}
