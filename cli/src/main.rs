//! `seedling`: the one binary people run. Parses the command line and hands
//! off to the crates that do the work; no model or storage code lives here.

mod bench;
mod certs;
mod generate;
mod plan;
mod quality;
mod reference;
mod remote;
mod review;
mod run;
mod start;
mod store;
mod tracking;
mod verify;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use seedling_worker::engine::EngineConfig;
use seedling_worker::model_file::default_model_path;
use tracing_subscriber::Layer as _;

#[derive(Debug, Parser)]
#[command(
    name = "seedling",
    version,
    about = "Grow domain-specific training datasets with local Qwen 2.5 models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a plan on this machine (a local coordinator and worker) and write its dataset
    Run(run::RunArgs),
    /// Start a cluster process: the coordinator, or a worker that joins it
    Start {
        #[command(subcommand)]
        command: start::StartCommand,
    },
    /// Submit, list, watch and cancel plans on a cluster; check plan files
    Plan {
        #[command(subcommand)]
        command: plan::PlanCommand,
    },
    /// The cluster's workers, slots, throughput, leases and queue
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Write a plan's dataset (splits, formats, card, manifest) from a lineage store
    Export(store::ExportArgs),
    /// Generate one completion with the local model (a smoke test of the engine)
    Generate(generate::GenerateArgs),
    /// Inspect the model file the engine would load
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Check the quality scores against human labels
    Quality {
        #[command(subcommand)]
        command: quality::QualityCommand,
    },
    /// Check, back up and restore the lineage store
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// Explore lineage: where a record came from and what was decided about it
    Lineage {
        #[command(subcommand)]
        command: store::LineageCommand,
    },
    /// Review a sample of the accepted records: in the browser, or through JSONL files
    Review {
        #[command(subcommand)]
        command: review::ReviewCommand,
    },
    /// Fine-tune the model on a dataset and its controls, and show whether it learned the domain
    Verify(verify::VerifyArgs),
    /// Measure throughput (see BENCHMARKS.md)
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Nodes, model, slots busy/free, tokens/s, queue depth, leases, last heartbeat
    Status {
        #[command(flatten)]
        remote: remote::Remote,
        /// Print JSON (for scripts)
        #[arg(long)]
        json: bool,
    },
    /// Create a cluster CA and node certificates for mutually authenticated node TLS
    Certs {
        #[command(subcommand)]
        command: certs::CertsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Load the model and print what llama.cpp reports about it
    Info(EngineArgs),
}

/// Engine options shared by every command that loads a model.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// GGUF model file [default: $SEEDLING_MODEL, else the fetch-model cache]
    #[arg(long, env = "SEEDLING_MODEL")]
    pub model: Option<PathBuf>,
    /// Context size in tokens, shared by all parallel sequences
    #[arg(long, default_value_t = 8192)]
    pub ctx: u32,
    /// CPU threads for llama.cpp [default: all cores]
    #[arg(long)]
    pub threads: Option<u32>,
    /// Layers to offload to the GPU (needs a build with --features cuda)
    #[arg(long, default_value_t = 0)]
    pub gpu_layers: u32,
    /// Parallel sequences decoded together
    #[arg(long, default_value_t = 8)]
    pub slots: u32,
    /// Give each sequence a fixed share of the KV cache instead of one shared
    /// pool (faster attention at many sequences; disables prefix reuse)
    #[arg(long)]
    pub kv_split: bool,
    /// A LoRA adapter (GGUF) on top of the model, e.g. one `seedling verify`
    /// trained: DIR/verify/conditions/seedling/adapter.gguf
    #[arg(long)]
    pub lora: Option<PathBuf>,
}

impl EngineArgs {
    pub fn config(&self) -> EngineConfig {
        EngineConfig {
            n_ctx: self.ctx,
            n_threads: self.threads.unwrap_or(0),
            n_gpu_layers: self.gpu_layers,
            n_slots: self.slots,
            kv_unified: !self.kv_split,
            lora_adapter: self.lora.clone(),
            ..EngineConfig::new(self.model.clone().unwrap_or_else(default_model_path))
        }
    }
}

/// A judge model for checks, loaded beside the generator.
#[derive(Debug, Clone, Args)]
pub struct JudgeArgs {
    /// A second GGUF model that checks each answer against its sources (a
    /// faithfulness judge) and grades the rubric when a plan asks for one;
    /// `scripts/fetch-model judge` fetches Qwen2.5 Coder 1.5B
    #[arg(long, env = "SEEDLING_JUDGE_MODEL")]
    pub judge_model: Option<PathBuf>,
    /// Parallel sequences of the judge model
    #[arg(long, default_value_t = 4)]
    pub judge_slots: u32,
    /// CPU threads for the judge model [default: all cores]
    #[arg(long)]
    pub judge_threads: Option<u32>,
}

impl JudgeArgs {
    /// The judge's engine, sized like the generator's context.
    pub fn config(&self, engine: &EngineArgs) -> Option<EngineConfig> {
        self.judge_model.as_ref().map(|model| EngineConfig {
            n_ctx: engine.ctx,
            n_threads: self.judge_threads.unwrap_or(0),
            n_gpu_layers: engine.gpu_layers,
            n_slots: self.judge_slots,
            ..EngineConfig::new(model.clone())
        })
    }
}

fn main() -> std::process::ExitCode {
    exit_quietly_when_stdout_closes();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // The whole chain, no backtrace: users need what and where.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `seedling plan check x.toml | head` closes our stdout early; Rust then
/// panics in `println!` (it ignores SIGPIPE). Exit as a command killed by
/// SIGPIPE would (status 141), without a panic message: the reader asked
/// for no more. Nothing is lost: the store is durable at every point.
fn exit_quietly_when_stdout_closes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let traces = start_logging(&cli.command);
    let outcome = dispatch(cli.command);
    if let Some(traces) = traces {
        traces.shutdown();
    }
    outcome
}

/// Logs to stderr as `SEEDLING_LOG` asks, and, when an OTLP endpoint is
/// configured (`OTEL_EXPORTER_OTLP_ENDPOINT`), exports this process's spans.
fn start_logging(command: &Command) -> Option<seedling_telemetry::traces::Traces> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEEDLING_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        );
    // Traces are a window, not the work: an endpoint they cannot use costs a
    // warning, never the command.
    let traces =
        seedling_telemetry::traces::Traces::from_env(command.service()).unwrap_or_else(|err| {
            eprintln!("seedling: not exporting traces: {err}");
            None
        });
    tracing_subscriber::registry()
        .with(stderr)
        .with(traces.as_ref().map(|t| t.layer()))
        .init();
    if let Some(traces) = &traces
        && matches!(command, Command::Run(_) | Command::Start { .. })
    {
        eprintln!(
            "seedling: exporting traces to {} (OTLP/HTTP) as {}",
            traces.endpoint,
            seedling_telemetry::traces::service_name().unwrap_or_else(|| command.service().into())
        );
    }
    traces
}

impl Command {
    /// The service this process's spans are exported as.
    fn service(&self) -> &'static str {
        match self {
            Command::Start {
                command: start::StartCommand::Coordinator { .. },
            } => "seedling-coordinator",
            Command::Start {
                command: start::StartCommand::Worker { .. },
            } => "seedling-worker",
            _ => "seedling",
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run::run(args),
        Command::Start { command } => start::run(command),
        Command::Cluster {
            command: ClusterCommand::Status { remote, json },
        } => remote.block_on(remote::cluster_status(&remote, json)),
        Command::Cluster {
            command: ClusterCommand::Certs { command },
        } => certs::run(command),
        Command::Export(args) => store::run_export(args),
        Command::Generate(args) => generate::run(args),
        Command::Model {
            command: ModelCommand::Info(args),
        } => {
            let engine = seedling_worker::engine::Engine::start(args.config())?;
            println!("{}", serde_json::to_string_pretty(engine.info())?);
            Ok(())
        }
        Command::Plan { command } => plan::run(command),
        Command::Store { command } => store::run_store(command),
        Command::Quality { command } => quality::run(command),
        Command::Lineage { command } => store::run_lineage(command),
        Command::Bench { command } => bench::run(command),
        Command::Verify(args) => verify::run(args),
        Command::Review { command } => review::run(command),
    }
}
