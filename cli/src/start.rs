//! `seedling start coordinator|worker --config FILE`: the long-running
//! processes of a cluster (see cluster-configs/README.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use seedling_common::config::{ClusterConfig, Secret, metrics_address};
use seedling_coordinator::cluster::{CoordinatorSettings, serve};
use seedling_proto::node_tls::{NodeTls, NodeTlsPem};
use seedling_proto::worker::WorkerCapacity;
use seedling_worker::engine::EngineConfig;
use seedling_worker::model_file::{check_gguf_header, default_model_path, sha256_file};
use seedling_worker::models::Models;
use seedling_worker::remote::{RemoteSettings, serve_worker};

use crate::tracking::TrackingArgs;

#[derive(Debug, Subcommand)]
pub enum StartCommand {
    /// Start the coordinator: the cluster node, the gRPC API, the lineage store
    Coordinator {
        /// Cluster configuration with a [coordinator] section (see cluster-configs/)
        #[arg(long)]
        config: PathBuf,
        /// Allow node traffic or the API in plain text beyond loopback (warned on every start)
        #[arg(long)]
        insecure: bool,
        /// Log each submitted plan as an MLflow run (overrides coordinator.tracking_uri)
        #[command(flatten)]
        tracking: TrackingArgs,
    },
    /// Start a worker: load the model, join the coordinator, run the units it leases
    Worker {
        /// Cluster configuration with a [worker] section (see cluster-configs/)
        #[arg(long)]
        config: PathBuf,
        /// Worker id, overriding the config [default: host name and process id]
        #[arg(long)]
        id: Option<String>,
        /// Allow node traffic or results in plain text beyond loopback (warned on every start)
        #[arg(long)]
        insecure: bool,
    },
}

fn read_config(path: &Path) -> anyhow::Result<ClusterConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    Ok(ClusterConfig::parse(&path.display().to_string(), &text)?)
}

fn secret(secret: &Secret, field: &str) -> anyhow::Result<Option<String>> {
    secret
        .resolve(field, |var| std::env::var(var).ok())
        .map_err(anyhow::Error::msg)
}

/// Resolves a config path against the directory of the config file.
fn beside(config: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        config.parent().unwrap_or(Path::new(".")).join(path)
    }
}

/// Refuses to start when anything would cross the network in plain text,
/// unless the operator said `--insecure`; then it warns, on every start.
fn guard_plaintext(
    role: &str,
    config: &Path,
    exposed: &[String],
    insecure: bool,
) -> anyhow::Result<()> {
    if exposed.is_empty() {
        return Ok(());
    }
    if insecure {
        for what in exposed {
            tracing::warn!("--insecure: {what}");
            eprintln!("seedling {role}: WARNING (--insecure): {what}");
        }
        return Ok(());
    }
    anyhow::bail!(
        "{}: refusing to start the {role} with plain-text traffic beyond this host:\n  - {}\n\
         Create certificates with `seedling cluster certs init` and `seedling cluster certs issue NODE` \
         (see cluster-configs/README.md), bind to 127.0.0.1, or pass --insecure to accept the risk",
        config.display(),
        exposed.join("\n  - ")
    )
}

/// Reads a file a config names, relative to the config's directory.
fn read_beside(config: &Path, path: &Path) -> anyhow::Result<Vec<u8>> {
    let path = beside(config, path);
    std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// The TLS files a config names, each read once: the cluster CA, and this
/// node's certificate and key.
struct TlsFiles {
    ca: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    fn read(
        config: &Path,
        ca: Option<&PathBuf>,
        cert: Option<&PathBuf>,
        key: Option<&PathBuf>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            ca: ca.map(|ca| read_beside(config, ca)).transpose()?,
            identity: match (cert, key) {
                (Some(cert), Some(key)) => {
                    Some((read_beside(config, cert)?, read_beside(config, key)?))
                }
                _ => None,
            },
        })
    }

    /// Node traffic's TLS, when the CA, certificate and key are all there.
    fn node_tls(&self, config: &Path) -> anyhow::Result<Option<NodeTls>> {
        let (Some(ca), Some((cert, key))) = (&self.ca, &self.identity) else {
            return Ok(None);
        };
        let pem = NodeTlsPem {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        };
        let tls =
            NodeTls::from_pem(&pem).with_context(|| format!("{}: node TLS", config.display()))?;
        Ok(Some(tls))
    }
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
async fn stop_requested() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Where submitted plans are tracked: `--tracking-uri` (or
/// `MLFLOW_TRACKING_URI`) with its experiment, else the config's
/// `tracking_uri` and `tracking_experiment`; a URI that cannot work is
/// refused at start, naming where it came from.
fn tracking_target(
    path: &Path,
    config: &seedling_common::config::CoordinatorConfig,
    args: TrackingArgs,
) -> anyhow::Result<Option<seedling_coordinator::tracking::TrackingTarget>> {
    if args.tracking_uri.is_some() {
        return args.target("start without tracking");
    }
    let Some(uri) = &config.tracking_uri else {
        return Ok(None);
    };
    let experiment = config
        .tracking_experiment
        .as_deref()
        .unwrap_or(&args.experiment);
    seedling_coordinator::tracking::TrackingTarget::new(uri, experiment)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{}: coordinator.tracking_uri: {e}", path.display()))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

pub fn run(command: StartCommand) -> anyhow::Result<()> {
    match command {
        StartCommand::Coordinator {
            config: path,
            insecure,
            tracking,
        } => {
            let config = read_config(&path)?;
            let c = config
                .coordinator
                .with_context(|| format!("{}: no [coordinator] section", path.display()))?;
            guard_plaintext("coordinator", &path, &c.plaintext_exposures(), insecure)?;
            let tls = TlsFiles::read(
                &path,
                c.tls_ca.as_ref(),
                c.tls_cert.as_ref(),
                c.tls_key.as_ref(),
            )?;
            let node_tls = tls.node_tls(&path)?;
            let settings = CoordinatorSettings {
                data_dir: beside(&path, &c.data_dir),
                grpc_listen: c.grpc_listen.parse().with_context(|| {
                    format!(
                        "{}: coordinator.grpc_listen {:?} is not ip:port",
                        path.display(),
                        c.grpc_listen
                    )
                })?,
                cluster_port: c.cluster_port,
                cluster_listen_ip: c.cluster_listen_ip.parse()?,
                hostname: c.hostname.clone(),
                cookie: secret(&c.cookie, "coordinator.cookie")?
                    .context("coordinator.cookie is required")?,
                token: secret(&c.token, "coordinator.token")?,
                read_token: secret(&c.read_token, "coordinator.read_token")?,
                tls: tls.identity,
                node_tls,
                lease_timeout: Duration::from_millis(c.lease_timeout_ms),
                attempts_per_record: c.attempts_per_record,
                limits: c.limits,
                metrics_listen: metrics_address(&c.metrics_listen, "coordinator.metrics_listen")
                    .map_err(anyhow::Error::msg)?,
                tracking: tracking_target(&path, &c, tracking)?,
            };
            if let Some(target) = &settings.tracking {
                eprintln!(
                    "seedling coordinator: each submitted plan is logged to MLflow at {} (experiment {:?})",
                    target.uri, target.experiment
                );
            }
            runtime()?.block_on(serve(settings, stop_requested()))?;
            eprintln!("seedling coordinator: stopped");
            Ok(())
        }
        StartCommand::Worker {
            config: path,
            id,
            insecure,
        } => {
            let config = read_config(&path)?;
            let w = config
                .worker
                .with_context(|| format!("{}: no [worker] section", path.display()))?;
            guard_plaintext("worker", &path, &w.plaintext_exposures(), insecure)?;
            let tls = TlsFiles::read(
                &path,
                w.tls_ca.as_ref(),
                w.tls_cert.as_ref(),
                w.tls_key.as_ref(),
            )?;
            let node_tls = tls.node_tls(&path)?;
            let worker_id = id.or(w.id.clone()).unwrap_or_else(|| {
                let host =
                    std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "worker".into());
                format!("{}-{}", host.trim(), std::process::id())
            });
            let model = w
                .model
                .as_ref()
                .map(|m| beside(&path, m))
                .unwrap_or_else(default_model_path);
            let judge_model = w.judge_model.as_ref().map(|m| beside(&path, m));
            // A missing or foreign model file is named before the node joins.
            check_gguf_header(&model)?;
            if let Some(judge) = &judge_model {
                check_gguf_header(judge).context("worker.judge_model")?;
            }
            let engine_config = EngineConfig {
                n_ctx: w.ctx,
                n_threads: w.threads.unwrap_or(0),
                n_gpu_layers: w.gpu_layers,
                n_slots: w.slots,
                ..EngineConfig::new(model.clone())
            };
            let settings = RemoteSettings {
                coordinator_node: w.coordinator_node.clone(),
                coordinator_grpc: w.coordinator_grpc.clone(),
                cluster_port: w.cluster_port,
                cookie: secret(&w.cookie, "worker.cookie")?.context("worker.cookie is required")?,
                token: secret(&w.token, "worker.token")?,
                tls_ca: tls.ca,
                tls_identity: tls.identity,
                node_tls,
                heartbeat: Duration::from_millis(w.heartbeat_ms),
                metrics_listen: metrics_address(&w.metrics_listen, "worker.metrics_listen")
                    .map_err(anyhow::Error::msg)?,
            };
            let digest = sha256_file(&model)?;
            let judge_config = judge_model.map(|judge| EngineConfig {
                n_ctx: w.ctx,
                n_threads: w.judge_threads.unwrap_or(0),
                n_gpu_layers: w.gpu_layers,
                n_slots: w.judge_slots,
                ..EngineConfig::new(judge)
            });
            let models = Models::start(engine_config.clone(), judge_config)?;
            let engine = Arc::clone(&models.generator);
            let capacity = WorkerCapacity {
                worker_id,
                slots: engine_config.n_slots,
                context_tokens: engine_config.n_ctx,
                model_digest: digest,
                model_name: engine.info().name.clone(),
                gpu: engine_config.n_gpu_layers > 0,
                gpu_layers: engine_config.n_gpu_layers,
                judge_model_name: models.judge_name().unwrap_or_default(),
            };
            let runtime = runtime()?;
            runtime.block_on(serve_worker(settings, models, capacity, stop_requested()))?;
            // Units still in the engine are abandoned with their tasks.
            runtime.shutdown_timeout(Duration::from_secs(5));
            drop(engine);
            eprintln!("seedling worker: stopped");
            Ok(())
        }
    }
}
