//! A worker node in a cluster, or beside its coordinator in one process
//! (`serve_local`, the embedded `seedling run`). Control plane: a ractor_cluster node connected
//! to the coordinator's; a gate actor in this worker's process group takes
//! unit assignments; a heartbeat (join, lease renewal, load) goes to the
//! coordinator's gate every interval. Data plane: results go up one gRPC
//! stream and stay in memory until acknowledged, so a reconnect (coordinator
//! restarted, network blip) resends exactly what was not yet durable.
//!
//! Both planes reconnect by themselves, with backoff; ractor_cluster does
//! not re-dial, and never notices a hung peer, hence the coordinator's lease.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{IncomingEncryptionMode, NodeServer};
use seedling_common::work::{UnitResult, UnitTask};
use seedling_proto::auth::AttachToken;
use seedling_proto::cluster::{
    COORDINATOR_GROUP, CoordinatorWire, WorkerWire, decode, worker_group,
};
use seedling_proto::control::{Heartbeat, UnitAssignment, UnitWithdrawal};
use seedling_proto::local::LocalReports;
use seedling_proto::node_tls::NodeTls;
use seedling_proto::results::UnitReport;
use seedling_proto::results::result_ingest_client::ResultIngestClient;
use seedling_proto::worker::{EngineStats, WorkerCapacity};
use seedling_telemetry::MetricsEndpoint;
use seedling_telemetry::traces::{follow, trace_parent};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::Instrument as _;

use crate::engine::Engine;
use crate::metrics::WorkerView;
use crate::models::Models;
use crate::unit::run_caught;

/// Finished results waiting for the uplink; a full outbox holds the units back.
const OUTBOX: usize = 64;
/// Results sent but not acknowledged before the uplink stops sending more.
const MAX_UNACKNOWLEDGED: usize = 64;
/// How long a first connection may take to be accepted.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A worker node's settings, secrets resolved.
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    pub coordinator_node: String,
    pub coordinator_grpc: String,
    pub cluster_port: u16,
    pub cookie: String,
    pub token: Option<String>,
    /// PEM certificate to trust for an `https://` coordinator.
    pub tls_ca: Option<Vec<u8>>,
    /// This node's certificate and key, presented on the gRPC channel too.
    pub tls_identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Node traffic over mutual TLS; plain (cookie only) when `None`.
    pub node_tls: Option<NodeTls>,
    pub heartbeat: Duration,
    /// Where `/metrics` is served; `None` serves none.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot start this node's cluster server: {0}")]
    Node(String),
    #[error("cannot reach the coordinator node at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error(
        "the coordinator node at {addr} did not accept this node within {secs}s: check that worker and coordinator use the same cookie, that both use TLS or neither, that this node's certificate is signed by the coordinator's cluster CA, and that {addr} is a seedling coordinator's cluster port"
    )]
    Refused { addr: String, secs: u64 },
    #[error("the coordinator's gRPC address {addr} is not usable: {reason}")]
    Grpc { addr: String, reason: String },
    #[error(transparent)]
    Metrics(#[from] seedling_telemetry::TelemetryError),
}

/// A unit's result with what its assignment said a report must carry.
#[derive(Debug)]
struct Finished {
    result: UnitResult,
    /// The lease's secret, echoed back.
    lease: String,
    /// The coordinator takes no larger report (0: no limit named).
    max_bytes: u64,
    /// The span that ran the unit, for the coordinator's trace.
    trace_parent: String,
}

impl Finished {
    /// The report for this result; a result larger than the coordinator
    /// takes becomes the unit's failure, so it is counted rather than
    /// resent for ever.
    fn report(self, worker_id: &str, seq: u64) -> UnitReport {
        let mut report = UnitReport {
            worker_id: worker_id.to_string(),
            seq,
            plan_id: self.result.plan.clone(),
            unit_id: self.result.unit.clone(),
            result_json: serde_json::to_vec(&self.result).expect("a unit result serialises"),
            lease: self.lease,
            trace_parent: self.trace_parent,
        };
        let size = report.encoded_len() as u64;
        if self.max_bytes > 0 && size > self.max_bytes {
            tracing::warn!(plan = %report.plan_id, unit = %report.unit_id, size, limit = self.max_bytes, "result over the coordinator's limit; reported as the unit's failure");
            let failed = UnitResult {
                error: Some(format!(
                    "the unit's result was {size} bytes, over the coordinator's limit of {} (coordinator.limits.max_result_bytes)",
                    self.max_bytes
                )),
                ..UnitResult::new(
                    self.result.plan.clone(),
                    self.result.unit.clone(),
                    worker_id.to_string(),
                )
            };
            report.result_json = serde_json::to_vec(&failed).expect("a unit result serialises");
        }
        report
    }
}

/// The units this worker runs, shared by the gate and the heartbeat.
type Running = Arc<Mutex<BTreeSet<String>>>;

#[derive(Debug)]
struct WorkerGate;

#[derive(Debug)]
struct GateState {
    models: Models,
    worker_id: String,
    outbox: mpsc::Sender<Finished>,
    running: Running,
    /// Each unit's task, to stop it when the coordinator withdraws it.
    tasks: HashMap<String, AbortHandle>,
}

impl Actor for WorkerGate {
    type Msg = WorkerWire;
    type State = GateState;
    type Arguments = GateState;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let bytes = match message {
            WorkerWire::Assign(bytes) => bytes,
            WorkerWire::Withdraw(bytes) => {
                match decode::<UnitWithdrawal>("withdrawal", &bytes) {
                    Ok(withdrawal) => state.withdraw(&withdrawal),
                    Err(err) => tracing::warn!(%err, "dropped a frame from the coordinator"),
                }
                return Ok(());
            }
        };
        let assignment = match decode::<UnitAssignment>("assignment", &bytes) {
            Ok(assignment) => assignment,
            Err(err) => {
                tracing::warn!(%err, "dropped a frame from the coordinator");
                return Ok(());
            }
        };
        let task: Box<UnitTask> = match serde_json::from_slice(&assignment.task_json) {
            Ok(task) => task,
            Err(err) => {
                // Likely a coordinator of another version: say so, the lease expires the unit.
                tracing::error!(plan = %assignment.plan_id, unit = %assignment.unit_id, %err, "cannot read the unit's task");
                return Ok(());
            }
        };
        let key = format!("{}/{}", task.plan, task.unit);
        state
            .running
            .lock()
            .expect("running set")
            .insert(key.clone());
        let (models, worker, outbox, running) = (
            state.models.clone(),
            state.worker_id.clone(),
            state.outbox.clone(),
            Arc::clone(&state.running),
        );
        tracing::debug!(plan = %task.plan, unit = %task.unit, "unit assigned");
        let task_key = key.clone();
        let (lease, max_bytes) = (assignment.lease, assignment.max_result_bytes);
        // A child of the coordinator's lease span: one trace per unit.
        let trace = tracing::info_span!(parent: None, "unit_run", plan = %task.plan, unit = %task.unit, worker = %worker);
        follow(&trace, &assignment.trace_parent);
        let trace_parent = trace_parent(&trace);
        let handle = tokio::spawn(async move {
            let result = run_caught(models, worker, task).instrument(trace).await;
            let finished = Finished {
                result,
                lease,
                max_bytes,
                trace_parent,
            };
            // Waits while the outbox is full: backpressure from the coordinator.
            let _ = outbox.send(finished).await;
            running.lock().expect("running set").remove(&task_key);
        });
        state.tasks.retain(|_, task| !task.is_finished());
        state.tasks.insert(key, handle.abort_handle());
        Ok(())
    }
}

impl GateState {
    /// Stops the withdrawn units: their model calls end (the engine drops a
    /// request whose caller is gone), their slots free up, and nothing is
    /// sent for them.
    fn withdraw(&mut self, withdrawal: &UnitWithdrawal) {
        let mut stopped = 0;
        let mut running = self.running.lock().expect("running set");
        for unit in &withdrawal.unit_ids {
            let key = format!("{}/{unit}", withdrawal.plan_id);
            if let Some(task) = self.tasks.remove(&key) {
                task.abort();
                stopped += 1;
            }
            running.remove(&key);
        }
        tracing::info!(plan = %withdrawal.plan_id, stopped, reason = %withdrawal.reason, "units withdrawn by the coordinator");
    }
}

fn engine_stats(engine: &Engine) -> EngineStats {
    let s = engine.stats();
    EngineStats {
        requests_completed: s.requests_completed,
        requests_failed: s.requests_failed,
        prompt_tokens_computed: s.prompt_tokens_computed,
        prompt_tokens_reused: s.prompt_tokens_reused,
        generated_tokens: s.generated_tokens,
        active_slots: s.active_slots as u32,
        queued_requests: s.queued_requests as u32,
        prefill_ms: s.prefill_ms,
        decode_ms: s.decode_ms,
        embedding_ms: s.embedding_ms,
        idle_ms: s.idle_ms,
    }
}

/// What a worker is wherever its coordinator runs: the gate that takes its
/// assignments and withdrawals, the units it runs, and its heartbeat.
struct WorkerCore {
    gate: ActorRef<WorkerWire>,
    gate_handle: tokio::task::JoinHandle<()>,
    beat: Beat,
}

impl WorkerCore {
    /// Starts the gate in this worker's process group; finished units go
    /// to the returned queue, for the uplink.
    async fn start(
        models: &Models,
        capacity: &WorkerCapacity,
    ) -> Result<(Self, mpsc::Receiver<Finished>), RemoteError> {
        let worker_id = capacity.worker_id.clone();
        let (outbox, results) = mpsc::channel(OUTBOX);
        let running: Running = Arc::default();
        let (gate, gate_handle) = Actor::spawn(
            None,
            WorkerGate,
            GateState {
                models: models.clone(),
                worker_id: worker_id.clone(),
                outbox,
                running: Arc::clone(&running),
                tasks: HashMap::new(),
            },
        )
        .await
        .map_err(|e| RemoteError::Node(e.to_string()))?;
        let group = worker_group(&worker_id);
        ractor::pg::join(group.clone(), vec![gate.get_cell()]);
        let beat = Beat {
            capacity: capacity.clone(),
            group,
            running,
            engine: Arc::clone(&models.generator),
            unacknowledged: Arc::default(),
        };
        Ok((
            Self {
                gate,
                gate_handle,
                beat,
            },
            results,
        ))
    }

    async fn stop(self) {
        self.gate.stop(None);
        let _ = self.gate_handle.await;
    }
}

/// A worker's heartbeat: its join, its lease renewal and its load report.
struct Beat {
    capacity: WorkerCapacity,
    group: String,
    running: Running,
    engine: Arc<Engine>,
    /// Results sent and not acknowledged yet.
    unacknowledged: Arc<AtomicU32>,
}

impl Beat {
    /// Sends the heartbeat to the coordinator's gate; `false` when no
    /// coordinator is visible.
    fn send(&self) -> bool {
        let members = ractor::pg::get_members(&COORDINATOR_GROUP.to_string());
        let Some(coordinator) = members.into_iter().next() else {
            return false;
        };
        let beat = Heartbeat {
            capacity: Some(self.capacity.clone()),
            group: self.group.clone(),
            running: self
                .running
                .lock()
                .expect("running set")
                .iter()
                .cloned()
                .collect(),
            stats: Some(engine_stats(&self.engine)),
            unacknowledged: self.unacknowledged.load(Ordering::Relaxed),
        };
        let coordinator: ActorRef<CoordinatorWire> = coordinator.into();
        if let Err(err) = coordinator.cast(CoordinatorWire::Heartbeat(beat.encode_to_vec())) {
            tracing::warn!(%err, "heartbeat not sent");
        }
        true
    }
}

/// Runs a worker beside its coordinator in this process (`seedling run`)
/// until `shutdown` resolves: the cluster worker's gate and heartbeat, with
/// its reports handed to the coordinator's ingest instead of a gRPC stream.
pub async fn serve_local(
    models: Models,
    capacity: WorkerCapacity,
    reports: LocalReports,
    heartbeat: Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RemoteError> {
    let (core, results) = WorkerCore::start(&models, &capacity).await?;
    let uplink = tokio::spawn(local_uplink(
        reports,
        capacity.worker_id.clone(),
        results,
        Arc::clone(&core.beat.unacknowledged),
    ));
    let heartbeats = async {
        let mut tick = tokio::time::interval(heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !core.beat.send() {
                tracing::warn!(worker = %capacity.worker_id, "no coordinator in this process");
            }
        }
    };
    tokio::select! {
        () = heartbeats => {}
        () = shutdown => {}
    }
    uplink.abort();
    core.stop().await;
    Ok(())
}

/// Hands finished units to the coordinator in this process, holding at
/// most `MAX_UNACKNOWLEDGED` unanswered, as the gRPC stream does.
async fn local_uplink(
    reports: LocalReports,
    worker_id: String,
    mut results: mpsc::Receiver<Finished>,
    unacknowledged: Arc<AtomicU32>,
) {
    let room = Arc::new(tokio::sync::Semaphore::new(MAX_UNACKNOWLEDGED));
    let mut next_seq = 1u64;
    while let Some(finished) = results.recv().await {
        let Ok(permit) = Arc::clone(&room).acquire_owned().await else {
            return;
        };
        let report = finished.report(&worker_id, next_seq);
        next_seq += 1;
        let (reply, outcome) = tokio::sync::oneshot::channel();
        if reports.send((report, reply)).await.is_err() {
            return; // the coordinator stopped
        }
        unacknowledged.fetch_add(1, Ordering::Relaxed);
        let unacknowledged = Arc::clone(&unacknowledged);
        tokio::spawn(async move {
            if let Ok(Some(outcome)) = outcome.await {
                tracing::debug!(%outcome, "result acknowledged");
            }
            unacknowledged.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// Dials the coordinator node until its gate is visible; `give_up` bounds
/// the wait (a first join), `None` retries forever (a rejoin).
async fn join(
    node: &ActorRef<ractor_cluster::NodeServerMessage>,
    addr: &str,
    tls: Option<&NodeTls>,
    give_up: Option<Duration>,
) -> Result<(), RemoteError> {
    let started = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(250);
    loop {
        let connected = match tls {
            Some(tls) => tls.connect(node, addr).await.map_err(|e| e.to_string()),
            None => ractor_cluster::client_connect(node, addr)
                .await
                .map_err(|e| e.to_string()),
        };
        match connected {
            Ok(()) => {
                // Authentication and the process-group sync follow the TCP connect.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
                while tokio::time::Instant::now() < deadline {
                    if !ractor::pg::get_members(&COORDINATOR_GROUP.to_string()).is_empty() {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if let Some(limit) = give_up
                    && started.elapsed() >= limit
                {
                    return Err(RemoteError::Refused {
                        addr: addr.to_string(),
                        secs: limit.as_secs(),
                    });
                }
            }
            Err(err) => {
                if let Some(limit) = give_up
                    && started.elapsed() >= limit
                {
                    return Err(RemoteError::Unreachable {
                        addr: addr.to_string(),
                        reason: err,
                    });
                }
                tracing::debug!(%addr, %err, "coordinator node not reachable yet");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Runs this worker in the cluster until `shutdown` resolves.
pub async fn serve_worker(
    settings: RemoteSettings,
    models: Models,
    capacity: WorkerCapacity,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RemoteError> {
    let worker_id = capacity.worker_id.clone();
    let grpc_error = |reason: String| RemoteError::Grpc {
        addr: settings.coordinator_grpc.clone(),
        reason,
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(settings.coordinator_grpc.clone())
        .map_err(|e| grpc_error(e.to_string()))?;
    if settings.coordinator_grpc.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &settings.tls_ca {
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &settings.tls_identity {
            tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| grpc_error(format!("TLS: {e}")))?;
    }
    let token = AttachToken::new(settings.token.as_deref()).map_err(|e| RemoteError::Grpc {
        addr: settings.coordinator_grpc.clone(),
        reason: e.message().to_string(),
    })?;
    let metrics = match settings.metrics_listen {
        Some(address) => Some(MetricsEndpoint::bind(address, "worker.metrics_listen").await?),
        None => None,
    };
    // Nobody dials a worker (the cluster is isolated: workers dial the
    // coordinator), so its own listener stays on loopback, under TLS too
    // when the cluster uses it.
    let node = NodeServer::new(
        settings.cluster_port,
        settings.cookie.clone(),
        format!("seedling-worker-{worker_id}"),
        "localhost".into(),
        settings
            .node_tls
            .as_ref()
            .map(|tls| IncomingEncryptionMode::Tls(tls.acceptor())),
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into());
    let (node, node_handle) = Actor::spawn(None, node, ())
        .await
        .map_err(|e| RemoteError::Node(e.to_string()))?;

    let (core, results) = WorkerCore::start(&models, &capacity).await?;
    let engine = &models.generator;

    let joined = join(
        &node,
        &settings.coordinator_node,
        settings.node_tls.as_ref(),
        Some(JOIN_TIMEOUT),
    )
    .await;
    if let Err(err) = joined {
        core.stop().await;
        node.stop(None);
        let _ = node_handle.await;
        return Err(err);
    }
    eprintln!(
        "seedling worker {worker_id}: joined the coordinator at {} ({} slots, {})",
        settings.coordinator_node, capacity.slots, capacity.model_name
    );
    tracing::info!(worker = %worker_id, coordinator = %settings.coordinator_node, "joined the cluster");

    let unacknowledged = Arc::clone(&core.beat.unacknowledged);
    let rejoins = Arc::new(AtomicU64::new(0));
    let _metrics = metrics.map(|bound| {
        let view = Watched {
            engine: Arc::clone(engine),
            running: Arc::clone(&core.beat.running),
            unacknowledged: Arc::clone(&unacknowledged),
            rejoins: Arc::clone(&rejoins),
            view: WorkerView {
                worker_id: worker_id.clone(),
                slots: capacity.slots,
                kv_cells: capacity.context_tokens,
                model_load: engine.load_time(),
                running: 0,
                unacknowledged: 0,
                rejoins: 0,
            },
        };
        let endpoint = bound.serve(Arc::new(move || {
            let text = view.render();
            Box::pin(async move { Ok(text) })
        }));
        eprintln!(
            "seedling worker {worker_id}: metrics at http://{}/metrics",
            endpoint.address()
        );
        endpoint
    });
    let uplink = tokio::spawn(uplink(
        endpoint,
        token,
        worker_id.clone(),
        results,
        Arc::clone(&unacknowledged),
    ));

    let heartbeats = async {
        let mut tick = tokio::time::interval(settings.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !core.beat.send() {
                eprintln!("seedling worker {worker_id}: lost the coordinator; reconnecting");
                tracing::warn!(worker = %worker_id, "coordinator gone; reconnecting");
                let _ = join(
                    &node,
                    &settings.coordinator_node,
                    settings.node_tls.as_ref(),
                    None,
                )
                .await;
                eprintln!("seedling worker {worker_id}: rejoined the coordinator");
                rejoins.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    tokio::select! {
        () = heartbeats => {}
        () = shutdown => {}
    }
    uplink.abort();
    core.stop().await;
    node.stop(None);
    let _ = node_handle.await;
    Ok(())
}

/// The result stream: connect, resend what is unacknowledged, then send new
/// results as they finish; on any error, reconnect with backoff.
async fn uplink(
    endpoint: tonic::transport::Endpoint,
    token: AttachToken,
    worker_id: String,
    mut results: mpsc::Receiver<Finished>,
    unacknowledged_count: Arc<AtomicU32>,
) {
    let mut unacknowledged: BTreeMap<u64, UnitReport> = BTreeMap::new();
    let mut next_seq = 1u64;
    let mut backoff = Duration::from_millis(250);
    loop {
        let channel = match endpoint.connect().await {
            Ok(channel) => channel,
            Err(err) => {
                tracing::debug!(%err, "result stream: coordinator not reachable");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let mut client = ResultIngestClient::with_interceptor(channel, token.clone());
        let (up, up_rx) = mpsc::channel::<UnitReport>(MAX_UNACKNOWLEDGED);
        let response = client
            .stream_results(tokio_stream::wrappers::ReceiverStream::new(up_rx))
            .await;
        let mut acks = match response {
            Ok(response) => response.into_inner(),
            Err(status) => {
                tracing::warn!(%status, "result stream refused");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(250);
        if !unacknowledged.is_empty() {
            tracing::info!(
                count = unacknowledged.len(),
                "resending unacknowledged results"
            );
        }
        let mut broken = false;
        for report in unacknowledged.values() {
            if up.send(report.clone()).await.is_err() {
                broken = true;
                break;
            }
        }
        while !broken {
            let room = unacknowledged.len() < MAX_UNACKNOWLEDGED;
            tokio::select! {
                result = results.recv(), if room => {
                    let Some(finished) = result else { return };
                    let report = finished.report(&worker_id, next_seq);
                    next_seq += 1;
                    unacknowledged.insert(report.seq, report.clone());
                    broken = up.send(report).await.is_err();
                }
                ack = acks.message() => match ack {
                    Ok(Some(ack)) => {
                        if let Some(report) = unacknowledged.remove(&ack.seq) {
                            tracing::debug!(plan = %report.plan_id, unit = %report.unit_id, outcome = %ack.outcome, "result acknowledged");
                        }
                    }
                    Ok(None) | Err(_) => broken = true,
                },
            }
            unacknowledged_count.store(unacknowledged.len() as u32, Ordering::Relaxed);
        }
        tracing::warn!(
            pending = unacknowledged.len(),
            "result stream broken; reconnecting"
        );
        tokio::time::sleep(backoff).await;
    }
}

/// What a metrics scrape of this worker reads.
struct Watched {
    engine: Arc<Engine>,
    running: Running,
    unacknowledged: Arc<AtomicU32>,
    rejoins: Arc<AtomicU64>,
    view: WorkerView,
}

impl Watched {
    fn render(&self) -> String {
        let view = WorkerView {
            running: self.running.lock().expect("running set").len(),
            unacknowledged: self.unacknowledged.load(Ordering::Relaxed),
            rejoins: self.rejoins.load(Ordering::Relaxed),
            ..self.view.clone()
        };
        crate::metrics::render(&self.engine.stats(), &view)
    }
}
