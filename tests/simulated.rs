//! Cluster members simulated in one process, for tests of the cluster
//! coordinator and its benchmark: the real coordinator (`serve`: actor,
//! leases, lineage store, gRPC API and result ingest on loopback), and
//! stand-ins for worker nodes that join it as a worker does (a gate actor
//! in the worker's process group, heartbeats to the coordinator's gate, one
//! gRPC stream for results). Only the ractor_cluster TCP hop is skipped: the
//! actors are local. What a stand-in does with its units is the caller's.

use std::time::Duration;

use prost::Message as _;
use ractor::{ActorCell, ActorRef};
use seedling_common::work::{UnitResult, UnitTask};
use seedling_coordinator::cluster::{ClusterError, CoordinatorSettings, serve};
use seedling_proto::api::seedling_client::SeedlingClient;
use seedling_proto::api::{ClusterStatusRequest, PlanRef, PlanSummary, SubmitPlanRequest};
use seedling_proto::cluster::{COORDINATOR_GROUP, CoordinatorWire, decode, worker_group};
use seedling_proto::control::Heartbeat;
use seedling_proto::control::UnitAssignment;
use seedling_proto::results::UnitReport;
use seedling_proto::results::result_ingest_client::ResultIngestClient;
use seedling_proto::worker::WorkerCapacity;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

use crate::free_port;
use crate::scripted::ScriptedWorker;

/// How often a stand-in heartbeats (a worker node's default is a second).
const HEARTBEAT: Duration = Duration::from_millis(500);

/// A cluster coordinator served in this process, on a store in a
/// temporary directory.
#[derive(Debug)]
pub struct LocalCoordinator {
    pub url: String,
    /// Where its `/metrics` is served.
    pub metrics: std::net::SocketAddr,
    pub api: SeedlingClient<Channel>,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), ClusterError>>,
    data: tempfile::TempDir,
}

impl LocalCoordinator {
    /// Starts it and waits until its API answers.
    pub async fn start(lease_timeout: Duration) -> anyhow::Result<Self> {
        Self::start_tracked(lease_timeout, None).await
    }

    /// Starts one that logs each submitted plan to MLflow at `tracking`.
    pub async fn start_tracked(
        lease_timeout: Duration,
        tracking: Option<seedling_coordinator::tracking::TrackingTarget>,
    ) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let grpc = format!("127.0.0.1:{}", free_port());
        let mut ports =
            std::iter::repeat_with(free_port).filter(|p| !grpc.ends_with(&format!(":{p}")));
        let cluster_port = ports.next().expect("a free port");
        let metrics: std::net::SocketAddr = format!(
            "127.0.0.1:{}",
            ports.find(|&p| p != cluster_port).expect("a free port")
        )
        .parse()?;
        let settings = CoordinatorSettings {
            data_dir: data.path().to_path_buf(),
            grpc_listen: grpc.parse()?,
            cluster_port,
            cluster_listen_ip: "127.0.0.1".parse()?,
            hostname: "127.0.0.1".into(),
            cookie: "simulated".into(),
            token: None,
            read_token: None,
            tls: None,
            node_tls: None,
            lease_timeout,
            attempts_per_record: 50.0,
            limits: Default::default(),
            metrics_listen: Some(metrics),
            tracking,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(settings, async move {
            let _ = stopped.await;
        }));
        let url = format!("http://{grpc}");
        let waiting = std::time::Instant::now();
        let api = loop {
            if let Ok(client) = SeedlingClient::connect(url.clone()).await {
                break client;
            }
            if server.is_finished() || waiting.elapsed() > Duration::from_secs(20) {
                anyhow::bail!("the coordinator did not start: {:?}", server.await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(Self {
            url,
            metrics,
            api,
            stop,
            server,
            data,
        })
    }

    /// A plan's summary, as `plan status` shows it.
    pub async fn plan(&mut self, plan_id: &str) -> anyhow::Result<PlanSummary> {
        let request = PlanRef {
            plan_id: plan_id.to_string(),
        };
        Ok(self.api.get_plan(request).await?.into_inner())
    }

    /// Submits `plan_path` (with its reference files) for `target` records
    /// and waits until it is no longer running; its last summary.
    pub async fn run_plan_to_its_end(
        &mut self,
        plan_path: &std::path::Path,
        target: u64,
    ) -> anyhow::Result<PlanSummary> {
        let plan_toml = std::fs::read_to_string(plan_path)?;
        let files = seedling_coordinator::plan::reference_files(plan_path, &plan_toml)?;
        let plan_id = self
            .api
            .submit_plan(SubmitPlanRequest {
                file_name: plan_path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                plan_toml,
                files,
                target: Some(target),
            })
            .await?
            .into_inner()
            .plan_id;
        let started = std::time::Instant::now();
        loop {
            let plan = self.plan(&plan_id).await?;
            if plan.state != "running" {
                return Ok(plan);
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(120),
                "the plan did not end: {plan:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `count` workers have joined (their first heartbeat).
    pub async fn wait_for_workers(&mut self, count: usize) -> anyhow::Result<()> {
        let joining = std::time::Instant::now();
        loop {
            let status = self.api.get_cluster_status(ClusterStatusRequest {}).await?;
            let joined = status.into_inner().workers.len();
            if joined >= count {
                return Ok(());
            }
            anyhow::ensure!(
                joining.elapsed() < Duration::from_secs(30),
                "only {joined} of {count} simulated workers joined within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops it the way a signal would, and waits for it.
    pub async fn stop(self) {
        self.stop_keeping_data().await;
    }

    /// Stops it and hands over its data directory (the lineage store in
    /// `lineage/`), for a test to inspect.
    pub async fn stop_keeping_data(self) -> tempfile::TempDir {
        let _ = self.stop.send(());
        let _ = self.server.await;
        self.data
    }
}

/// Joins `gate` to the cluster at `url` as worker `id` with `slots`:
/// its process group, a heartbeat every half second, and a result stream
/// that sends what arrives on `results`; `on_sent` runs as each one leaves.
pub async fn join_worker(
    url: &str,
    id: &str,
    slots: u32,
    gate: ActorCell,
    mut results: mpsc::UnboundedReceiver<(UnitResult, String)>,
    on_sent: impl Fn() + Send + 'static,
) -> anyhow::Result<()> {
    ractor::pg::join(worker_group(id), vec![gate]);
    // Uplink: one gRPC stream, acknowledgements drained.
    let mut ingest = ResultIngestClient::connect(url.to_string()).await?;
    let (up, up_rx) = mpsc::channel::<UnitReport>(64);
    let mut acks = ingest
        .stream_results(tokio_stream::wrappers::ReceiverStream::new(up_rx))
        .await?
        .into_inner();
    tokio::spawn(async move { while let Ok(Some(_)) = acks.message().await {} });
    let worker = id.to_string();
    tokio::spawn(async move {
        let mut seq = 0;
        while let Some((result, lease)) = results.recv().await {
            seq += 1;
            let report = UnitReport {
                worker_id: worker.clone(),
                seq,
                plan_id: result.plan.clone(),
                unit_id: result.unit.clone(),
                result_json: serde_json::to_vec(&result).expect("a result serialises"),
                lease,
                trace_parent: String::new(),
            };
            on_sent();
            if up.send(report).await.is_err() {
                return;
            }
        }
    });
    // Heartbeats, as a worker node sends them.
    let capacity = WorkerCapacity {
        worker_id: id.to_string(),
        slots,
        context_tokens: 8192,
        model_digest: "scripted".into(),
        model_name: "scripted test double".into(),
        gpu: false,
        gpu_layers: 0,
        judge_model_name: String::new(),
    };
    let group = worker_group(id);
    tokio::spawn(async move {
        loop {
            if let Some(gate) = ractor::pg::get_members(&COORDINATOR_GROUP.to_string())
                .into_iter()
                .next()
            {
                let beat = Heartbeat {
                    capacity: Some(capacity.clone()),
                    group: group.clone(),
                    ..Heartbeat::default()
                };
                let gate: ActorRef<CoordinatorWire> = gate.into();
                let _ = gate.cast(CoordinatorWire::Heartbeat(beat.encode_to_vec()));
            }
            tokio::time::sleep(HEARTBEAT).await;
        }
    });
    Ok(())
}

/// Joins a worker stand-in named `id` with `slots` that answers every unit
/// at once from `script` (an [`AnsweringWorker`]), and waits until the
/// coordinator has seen it.
pub async fn join_answering_worker(
    coordinator: &mut LocalCoordinator,
    id: &str,
    slots: u32,
    script: crate::scripted::Script,
) -> anyhow::Result<()> {
    use ractor::Actor as _;
    let (results, to_send) = mpsc::unbounded_channel();
    let worker = ScriptedWorker::new(script);
    let (gate, _) = AnsweringWorker::spawn(None, AnsweringWorker, (worker, results)).await?;
    join_worker(&coordinator.url, id, slots, gate.get_cell(), to_send, || {}).await?;
    coordinator.wait_for_workers(1).await
}

/// A worker stand-in that answers every unit at once from a
/// [`ScriptedWorker`] (a test double: no model), sending each result with
/// its lease's secret to `results` (the stream `join_worker` opened).
#[derive(Debug)]
pub struct AnsweringWorker;

impl ractor::Actor for AnsweringWorker {
    type Msg = seedling_proto::cluster::WorkerWire;
    type State = (ScriptedWorker, mpsc::UnboundedSender<(UnitResult, String)>);
    type Arguments = Self::State;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        state: Self::State,
    ) -> Result<Self::State, ractor::ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        (script, results): &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        if let seedling_proto::cluster::WorkerWire::Assign(bytes) = message {
            let assignment: UnitAssignment = decode("assignment", &bytes)?;
            let task: UnitTask = serde_json::from_slice(&assignment.task_json)?;
            let _ = results.send((script.answer(&task), assignment.lease));
        }
        Ok(())
    }
}
