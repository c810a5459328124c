//! A buggy or malicious client of the result API cannot corrupt a plan's
//! lineage: the real cluster coordinator (in-process, `simulated`), one
//! honest worker stand-in that holds its units, and reports crafted by
//! hand on a result stream of their own. Each refusal is answered with its
//! reason, counted in the cluster status, and stores nothing; the honest
//! result still counts and the store checks clean afterwards.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use seedling_common::work::{UnitResult, UnitTask};
use seedling_coordinator::lineage::LineageStore;
use seedling_proto::api::{ClusterStatusRequest, SubmitPlanRequest};
use seedling_proto::cluster::{WorkerWire, decode};
use seedling_proto::control::UnitAssignment;
use seedling_proto::results::UnitReport;
use seedling_proto::results::result_ingest_client::ResultIngestClient;
use seedling_tests::scripted::ScriptedWorker;
use seedling_tests::simulated::{LocalCoordinator, join_worker};
use seedling_tests::{repo_root, retail_banking_without_references};
use tokio::sync::mpsc;

/// Assignments as they reached the honest worker, by unit.
type Held = Arc<Mutex<BTreeMap<String, UnitAssignment>>>;

/// The honest worker: keeps what it is given and answers nothing itself.
struct Holder;

impl Actor for Holder {
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
        if let WorkerWire::Assign(bytes) = message {
            let unit: UnitAssignment = decode("assignment", &bytes)?;
            held.lock().unwrap().insert(unit.unit_id.clone(), unit);
        }
        Ok(())
    }
}

/// One report at a time on a stream of its own; the coordinator's verdict.
struct Reporter {
    up: mpsc::Sender<UnitReport>,
    acks: tonic::Streaming<seedling_proto::results::ReportAck>,
    seq: u64,
}

impl Reporter {
    async fn open(url: &str) -> Self {
        let mut client = ResultIngestClient::connect(url.to_string()).await.unwrap();
        let (up, rx) = mpsc::channel(4);
        let acks = client
            .stream_results(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self { up, acks, seq: 0 }
    }

    async fn send(&mut self, mut report: UnitReport) -> Result<String, tonic::Status> {
        self.seq += 1;
        report.seq = self.seq;
        self.up.send(report).await.unwrap();
        let ack = self
            .acks
            .message()
            .await?
            .unwrap_or_else(|| panic!("no acknowledgement for report {}", self.seq));
        assert_eq!(ack.seq, self.seq);
        Ok(ack.outcome)
    }
}

fn report(worker: &str, unit: &UnitAssignment, result: &UnitResult, lease: &str) -> UnitReport {
    UnitReport {
        worker_id: worker.into(),
        seq: 0,
        plan_id: unit.plan_id.clone(),
        unit_id: unit.unit_id.clone(),
        result_json: serde_json::to_vec(result).unwrap(),
        lease: lease.into(),
        // A hostile trace context is only ever a link that is not made.
        trace_parent: "00-not-a-trace-context".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_repeated_malformed_and_misaddressed_results_are_refused_and_counted() {
    let mut coordinator = LocalCoordinator::start(Duration::from_secs(30))
        .await
        .unwrap();
    let held = Held::default();
    let (gate, _) = Actor::spawn(None, Holder, Arc::clone(&held)).await.unwrap();
    let (keep_open, unsent) = mpsc::unbounded_channel();
    join_worker(
        &coordinator.url,
        "honest",
        2,
        gate.get_cell(),
        unsent,
        || {},
    )
    .await
    .unwrap();
    coordinator.wait_for_workers(1).await.unwrap();

    // Generation units from the start: the plan without its reference file.
    let plan_toml = retail_banking_without_references();
    let plan_id = coordinator
        .api
        .submit_plan(SubmitPlanRequest {
            file_name: "retail-banking.toml".into(),
            plan_toml,
            files: Default::default(),
            target: Some(20),
        })
        .await
        .unwrap()
        .into_inner()
        .plan_id;
    let started = Instant::now();
    while held.lock().unwrap().len() < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no units leased"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let units: Vec<UnitAssignment> = held.lock().unwrap().values().cloned().collect();
    let script = ScriptedWorker::default();
    let answer = |unit: &UnitAssignment| -> UnitResult {
        let task: UnitTask = serde_json::from_slice(&unit.task_json).unwrap();
        script.answer(&task)
    };
    let mut reporter = Reporter::open(&coordinator.url).await;

    // A unit nobody was given.
    let mut bogus = report("honest", &units[0], &answer(&units[0]), &units[0].lease);
    bogus.unit_id = "unit-never-leased".into();
    assert_eq!(reporter.send(bogus).await.unwrap(), "stale");
    // Another client naming the honest worker, without the lease secret
    // (which only reached the honest worker): refused, the lease stays.
    let forged = report(
        "honest",
        &units[0],
        &answer(&units[0]),
        "00112233445566778899aabbccddeeff",
    );
    assert_eq!(reporter.send(forged).await.unwrap(), "forged");
    // A worker that holds no lease at all.
    let stranger = report("mallory", &units[0], &answer(&units[0]), &units[0].lease);
    assert_eq!(reporter.send(stranger).await.unwrap(), "stale");
    // Unreadable bytes from the lease holder: refused, the unit goes back.
    let mut garbled = report("honest", &units[1], &answer(&units[1]), &units[1].lease);
    garbled.result_json = b"{\"plan\": 7, \"truncated".to_vec();
    assert!(reporter.send(garbled).await.unwrap().starts_with("invalid"));
    // A result whose body claims another plan than its envelope.
    let mut elsewhere = answer(&units[2]);
    elsewhere.plan = "plan-0000000000000000".into();
    let misaddressed = report("honest", &units[2], &elsewhere, &units[2].lease);
    assert!(
        reporter
            .send(misaddressed)
            .await
            .unwrap()
            .starts_with("invalid")
    );

    // The honest result counts, once; its repeat is stale.
    let honest = report("honest", &units[0], &answer(&units[0]), &units[0].lease);
    let decided = reporter.send(honest.clone()).await.unwrap();
    assert!(
        decided == "accepted" || decided.starts_with("rejected:"),
        "{decided}"
    );
    assert_eq!(reporter.send(honest).await.unwrap(), "stale");

    // A report far over the message limit ends its stream, storing nothing;
    // the coordinator serves the next stream.
    let mut oversized = report("honest", &units[3], &answer(&units[3]), &units[3].lease);
    oversized.result_json = vec![b' '; 8 << 20];
    let refused = reporter.send(oversized).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");

    let status = coordinator
        .api
        .get_cluster_status(ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let refused = &status.results_refused;
    assert_eq!(refused.get("stale"), Some(&3), "{refused:?}");
    assert_eq!(refused.get("forged"), Some(&1), "{refused:?}");
    assert_eq!(refused.get("invalid"), Some(&2), "{refused:?}");
    // Of all that arrived, only the honest result became an attempt.
    let summary = coordinator.plan(&plan_id).await.unwrap();
    assert_eq!(summary.attempts, 1, "{summary:?}");

    // Every client goes first: a connection still open holds the API's
    // handle on the store after the coordinator stops.
    drop((reporter, keep_open));
    let data = coordinator.stop_keeping_data().await;
    // The coordinator's last handles on the store go with its tasks.
    let opening = Instant::now();
    let store = loop {
        match LineageStore::open(data.path().join("lineage")) {
            Ok(store) => break store,
            Err(_) if opening.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("{err}"),
        }
    };
    let check = store.check().unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
    assert!(check.nodes > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_over_the_limits_are_refused_naming_the_setting() {
    let mut coordinator = LocalCoordinator::start(Duration::from_secs(30))
        .await
        .unwrap();
    let plan_toml =
        std::fs::read_to_string(repo_root().join("examples/retail-banking.toml")).unwrap();
    let submit =
        |plan_toml: String, files: std::collections::HashMap<String, Vec<u8>>| SubmitPlanRequest {
            file_name: "big.toml".into(),
            plan_toml,
            files,
            target: Some(2),
        };
    let cases = [
        // A plan padded past 1 MiB with a comment.
        (
            submit(
                format!("{plan_toml}\n# {}\n", "x".repeat(1 << 20)),
                Default::default(),
            ),
            "coordinator.limits.max_plan_bytes",
        ),
        // More reference files than a plan may carry.
        (
            submit(
                plan_toml.clone(),
                (0..65)
                    .map(|i| (format!("docs/{i}.md"), b"# a\n".to_vec()))
                    .collect(),
            ),
            "coordinator.limits.max_reference_files",
        ),
        // Files that together outweigh the limit.
        (
            submit(
                plan_toml.clone(),
                (0..2)
                    .map(|i| (format!("docs/{i}.md"), vec![b'a'; 17 << 20]))
                    .collect(),
            ),
            "coordinator.limits.max_reference_bytes",
        ),
    ];
    for (request, setting) in cases {
        let refused = coordinator.api.submit_plan(request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains(setting), "{}", refused.message());
    }
    let plans = coordinator
        .api
        .list_plans(seedling_proto::api::ListPlansRequest {})
        .await
        .unwrap()
        .into_inner()
        .plans;
    assert!(plans.is_empty(), "a refused plan was kept: {plans:?}");
    coordinator.stop().await;
}
