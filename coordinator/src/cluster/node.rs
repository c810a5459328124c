//! Starts a coordinator: the lineage store, the ractor_cluster node server
//! (mutual TLS against the cluster CA when configured, cookie-checked
//! always), the coordinator and its gate, and the gRPC server with the API
//! and the result ingest; stops them in reverse order.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{IncomingEncryptionMode, NodeServer};
use seedling_common::config::Limits;
use seedling_proto::api::seedling_server::SeedlingServer;
use seedling_proto::auth::RequireToken;
use seedling_proto::node_tls::{NodeTls, log_refused_sessions, serve_nodes};
use seedling_proto::results::result_ingest_server::ResultIngestServer;
use seedling_telemetry::{MetricsEndpoint, Render};
use tonic::service::interceptor::InterceptedService;

use super::ClusterError;
use super::actor::{ClusterArgs, ClusterCoordinator};
use super::api::Api;
use super::gate::CoordinatorGate;
use super::ingest::Ingest;
use super::messages::ClusterMsg;
use super::metrics;
use super::reviews::ReviewDesks;
use crate::lineage::LineageStore;

/// Room in a submission's message beyond the plan and its files (names,
/// framing), so that the limits' own errors, which name the setting, are
/// what a large plan meets rather than gRPC's.
const SUBMISSION_OVERHEAD: usize = 1 << 20;
/// How long a stopping coordinator lets calls in progress finish. Workers'
/// result streams never end by themselves, so a graceful stop alone would
/// wait for every worker to leave; after this the connections are closed
/// (a worker keeps what was not acknowledged and resends it).
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long a scrape waits for the coordinator actor.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// A coordinator's settings, secrets resolved.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    pub data_dir: PathBuf,
    pub grpc_listen: SocketAddr,
    pub cluster_port: u16,
    pub cluster_listen_ip: IpAddr,
    pub hostname: String,
    pub cookie: String,
    /// The operator's token (everything) and the read-only one.
    pub token: Option<String>,
    pub read_token: Option<String>,
    /// PEM certificate chain and key; the API serves TLS when set.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Node traffic over mutual TLS; plain (cookie only) when `None`.
    pub node_tls: Option<NodeTls>,
    pub lease_timeout: Duration,
    pub attempts_per_record: f64,
    pub limits: Limits,
    /// Where `/metrics` is served; `None` serves none.
    pub metrics_listen: Option<SocketAddr>,
    /// Where each submitted plan is logged as an MLflow run, if anywhere.
    pub tracking: Option<crate::tracking::TrackingTarget>,
}

/// Runs a coordinator until `shutdown` resolves.
pub async fn serve(
    settings: CoordinatorSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ClusterError> {
    let disk = |source| ClusterError::Disk {
        path: settings.data_dir.clone(),
        source,
    };
    std::fs::create_dir_all(&settings.data_dir).map_err(disk)?;
    let store = Arc::new(LineageStore::open(settings.data_dir.join("lineage"))?);
    // Bind the API first: a taken port fails before anything else starts.
    let listener = tokio::net::TcpListener::bind(settings.grpc_listen)
        .await
        .map_err(|e| ClusterError::Grpc {
            addr: settings.grpc_listen.to_string(),
            message: e.to_string(),
        })?;
    let metrics = match settings.metrics_listen {
        Some(address) => Some(MetricsEndpoint::bind(address, "coordinator.metrics_listen").await?),
        None => None,
    };
    let node_port = |e: String| ClusterError::Node(format!("port {}: {e}", settings.cluster_port));
    // With TLS this process accepts node connections itself (see
    // `node_tls`); the node server's own listener then sits on a loopback
    // port nobody is told of, and refuses plain sockets there too.
    let (port, listen_ip, encryption, tls_listener) = match &settings.node_tls {
        Some(tls) => {
            let listener =
                tokio::net::TcpListener::bind((settings.cluster_listen_ip, settings.cluster_port))
                    .await
                    .map_err(|e| node_port(e.to_string()))?;
            let encryption = IncomingEncryptionMode::Tls(tls.acceptor());
            let loopback = std::net::Ipv4Addr::LOCALHOST.into();
            (0, loopback, Some(encryption), Some((listener, tls)))
        }
        None => (
            settings.cluster_port,
            settings.cluster_listen_ip,
            None,
            None,
        ),
    };
    let node = NodeServer::new(
        port,
        settings.cookie.clone(),
        "seedling-coordinator".into(),
        settings.hostname.clone(),
        encryption,
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(listen_ip);
    let (node, node_handle) = Actor::spawn(None, node, ())
        .await
        .map_err(|e| node_port(e.to_string()))?;
    log_refused_sessions(&node);
    let node_acceptor =
        tls_listener.map(|(listener, tls)| serve_nodes(listener, tls, node.clone()));
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let address = format!("{scheme}://{}", settings.grpc_listen);
    let (writes_done, written) = tokio::sync::oneshot::channel();
    let (coordinator, coordinator_handle) = Actor::spawn(
        None,
        ClusterCoordinator,
        ClusterArgs {
            store: Arc::clone(&store),
            lease_timeout: settings.lease_timeout,
            attempts_per_record: settings.attempts_per_record,
            limits: settings.limits,
            address: address.clone(),
            data_dir: Some(settings.data_dir.clone()),
            writes_done,
            tracking: settings.tracking.clone(),
        },
    )
    .await
    .map_err(|e| ClusterError::Node(format!("coordinator: {e}")))?;
    let (gate, gate_handle) = CoordinatorGate::start(coordinator.clone()).await?;
    let metrics = metrics.map(|bound| bound.serve(scrape(coordinator.clone(), Arc::clone(&store))));
    tracing::info!(grpc = %address, cluster_port = settings.cluster_port, data_dir = %settings.data_dir.display(), "coordinator ready");
    eprintln!(
        "seedling coordinator: API {address}, cluster node port {} ({}), data {}",
        settings.cluster_port,
        if settings.node_tls.is_some() {
            "mutual TLS and cookie"
        } else {
            "cookie only, no TLS"
        },
        settings.data_dir.display()
    );
    if let Some(metrics) = &metrics {
        eprintln!(
            "seedling coordinator: metrics at http://{}/metrics",
            metrics.address()
        );
    }

    let auth = RequireToken::new(settings.token.clone(), settings.read_token.clone());
    let api = InterceptedService::new(
        SeedlingServer::new(Api {
            coordinator: coordinator.clone(),
            store: Arc::clone(&store),
            data_dir: settings.data_dir.clone(),
            limits: settings.limits,
            reviews: Arc::new(ReviewDesks::new(Arc::clone(&store))),
        })
        .max_decoding_message_size(
            // Twice the limits: a submission somewhat over them still
            // arrives, and is refused by name.
            2 * (settings.limits.max_plan_bytes + settings.limits.max_reference_bytes)
                + SUBMISSION_OVERHEAD,
        ),
        auth.clone(),
    );
    let ingest = InterceptedService::new(
        ResultIngestServer::new(Ingest::start(coordinator.clone()))
            .max_decoding_message_size(settings.limits.max_result_bytes + SUBMISSION_OVERHEAD),
        auth,
    );
    let mut server = tonic::transport::Server::builder();
    if let Some((cert, key)) = &settings.tls {
        let identity = tonic::transport::Identity::from_pem(cert, key);
        server = server
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| ClusterError::Grpc {
                addr: address.clone(),
                message: format!("TLS: {e}"),
            })?;
    }
    let (stopping, stop_requested) = tokio::sync::oneshot::channel::<()>();
    let serving = server
        .add_service(api)
        .add_service(ingest)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async move {
                shutdown.await;
                let _ = stopping.send(());
            },
        );
    let served = tokio::select! {
        served = serving => served,
        () = async {
            if stop_requested.await.is_err() {
                // The server ended by itself; its own result wins.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(STOP_GRACE).await;
        } => {
            tracing::info!("connections still open after the grace period are closed");
            Ok(())
        }
    };

    drop(metrics);
    if let Some(acceptor) = node_acceptor {
        acceptor.abort();
    }
    gate.stop(None);
    coordinator.stop(None);
    node.stop(None);
    let _ = gate_handle.await;
    let _ = coordinator_handle.await;
    // What was decided before the stop is durable before serve returns.
    let _ = written.await;
    let _ = node_handle.await;
    served.map_err(|e| ClusterError::Grpc {
        addr: address,
        message: e.to_string(),
    })
}

/// A scrape of this coordinator: its actor's snapshot, and the store's
/// size read off the actor's thread.
fn scrape(coordinator: ActorRef<ClusterMsg>, store: Arc<LineageStore>) -> Render {
    Arc::new(move || {
        let (coordinator, store) = (coordinator.clone(), Arc::clone(&store));
        Box::pin(async move {
            let asked = coordinator
                .call(ClusterMsg::Metrics, Some(SCRAPE_TIMEOUT))
                .await;
            let Ok(CallResult::Success(mut snapshot)) = asked else {
                return Err("the coordinator is busy or stopping; scrape again".to_string());
            };
            snapshot.store_bytes = tokio::task::spawn_blocking(move || store.size_on_disk().ok())
                .await
                .ok()
                .flatten();
            Ok(metrics::render(&snapshot))
        })
    })
}
