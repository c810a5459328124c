//! Coordinator benchmark with **scripted workers** (the test double from
//! `tests/scripted.rs` stands in for llama.cpp; it answers instantly).
//!
//! One process: the real cluster coordinator and N simulated workers
//! (`tests/simulated.rs`: each a local gate actor in its process group that
//! heartbeats like a worker node and streams its results over a real gRPC
//! stream on loopback; only the ractor_cluster TCP hop is skipped). The
//! simulated workers run on a tokio runtime of their own, whose threads are
//! named, so the coordinator's CPU is measured apart from theirs. Measured:
//! records ingested durably per second (accepted and all results),
//! assignment latency (result sent -> next unit received at that worker),
//! CPU per record (coordinator, simulated workers) and peak memory.
//!
//!   cargo run --release -p seedling-tests --bin coordinator-bench -- [WORKERS] [TARGET] [--full-checks]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use seedling_common::embedding::Embedding;
use seedling_common::time::{process_cpu, thread_cpu};
use seedling_common::work::{UnitResult, UnitTask};
use seedling_coordinator::quality::semantic::SemanticIndex;
use seedling_proto::api::{ClusterStatusRequest, PlanRef, SubmitPlanRequest};
use seedling_proto::cluster::{WorkerWire, decode};
use seedling_proto::control::UnitAssignment;
use seedling_tests::repo_root;
use seedling_tests::scripted::{Script, ScriptedWorker};
use seedling_tests::simulated::{LocalCoordinator, join_worker};
use tokio::sync::mpsc;

const SLOTS: u32 = 8;

const USAGE: &str = "usage: coordinator-bench [WORKERS (32)] [TARGET (2000)] [--full-checks]
  --full-checks  the simulated workers run the worker's heuristic checks on every
                 answer (default: on the first of each language and shape, then
                 reuse its verdict; the coordinator's work is the same)";

struct SimWorker;

struct SimState {
    script: ScriptedWorker,
    /// Results with their lease secrets.
    results: mpsc::UnboundedSender<(UnitResult, String)>,
    /// When this worker last sent a result: the next assignment's latency starts there.
    last_sent: Arc<Mutex<Option<Instant>>>,
    latencies: Arc<Mutex<Vec<Duration>>>,
    /// CPU the scripted answers took (worker-side work, not the coordinator's).
    answering: Arc<Mutex<Duration>>,
    /// Assignments received and their encoded bytes: what a unit costs the wire.
    assigned: Arc<Mutex<(u64, u64)>>,
}

impl Actor for SimWorker {
    type Msg = WorkerWire;
    type State = SimState;
    type Arguments = SimState;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        state: SimState,
    ) -> Result<SimState, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut SimState,
    ) -> Result<(), ActorProcessingErr> {
        // Its answers are instant: there is nothing to withdraw.
        let WorkerWire::Assign(bytes) = message else {
            return Ok(());
        };
        let assignment: UnitAssignment = decode("assignment", &bytes)?;
        {
            let mut assigned = state.assigned.lock().unwrap();
            assigned.0 += 1;
            assigned.1 += bytes.len() as u64;
        }
        if let Some(sent) = state.last_sent.lock().unwrap().take() {
            state.latencies.lock().unwrap().push(sent.elapsed());
        }
        let task: UnitTask = serde_json::from_slice(&assignment.task_json)?;
        let cpu = thread_cpu();
        let result = state.script.answer(&task);
        *state.answering.lock().unwrap() += thread_cpu().saturating_sub(cpu);
        let _ = state.results.send((result, assignment.lease));
        Ok(())
    }
}

/// Name of the simulated workers' runtime threads (a thread's name is at
/// most 15 bytes), so their CPU can be told from the coordinator's.
const SIM_THREADS: &str = "sim-worker";

/// CPU time of this process's threads named `name` so far: what the
/// simulated workers use, which a real cluster spends on other machines.
fn threads_cpu(name: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .filter_map(|task| {
            // Nanoseconds on a CPU, the first field of schedstat.
            let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .map(Duration::from_nanos)
        .sum()
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Mean time of `SemanticIndex::closest` over `n` accepted inputs of
/// `dims` dimensions (the default model's size), pseudo-random vectors.
fn semantic_check_ms(n: usize, dims: usize) -> f64 {
    let vector = |seed: u64| -> Embedding {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..dims)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
        Embedding::quantise(&v)
    };
    let mut index = SemanticIndex::new(0.95);
    for i in 0..n {
        index.insert("en", &format!("r{i}"), vector(i as u64 + 1));
    }
    let probes: Vec<Embedding> = (0..50).map(|i| vector(1_000_000 + i)).collect();
    let started = Instant::now();
    let hits = probes
        .iter()
        .filter(|p| index.closest("en", p).is_some())
        .count();
    std::hint::black_box(hits);
    started.elapsed().as_secs_f64() * 1e3 / probes.len() as f64
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

// As many runtime threads as the machine has cores, for the coordinator and
// again for the simulated workers (a runtime of their own, so that their CPU
// is measured apart): on a 2-core box they share the cores; on a larger one
// the coordinator's stages get cores of their own, as on a real cluster.
#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    // The simulated workers run the worker's real checks on every answer
    // only when asked: otherwise their CPU, which a real cluster spends on
    // other machines, would take most of a small machine's cores.
    let full_checks = args.iter().any(|a| a == "--full-checks");
    args.retain(|a| a != "--full-checks");
    let number = |i: usize, name: &str, default: u64| -> anyhow::Result<u64> {
        args.get(i).map_or(Ok(default), |a| {
            a.parse()
                .map_err(|_| anyhow::anyhow!("{name} must be a whole number, not {a:?}\n{USAGE}"))
        })
    };
    let workers = number(0, "WORKERS", 32)? as usize;
    let target = number(1, "TARGET", 2000)?;
    let mut coordinator = LocalCoordinator::start(Duration::from_secs(30)).await?;

    let latencies = Arc::new(Mutex::new(Vec::new()));
    let answering = Arc::new(Mutex::new(Duration::ZERO));
    let assigned = Arc::new(Mutex::new((0u64, 0u64)));
    let sim_runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(SIM_THREADS)
        .enable_all()
        .build()?;
    let mut sims = Vec::new();
    for n in 0..workers {
        let id = format!("sim-{n:02}");
        let url = coordinator.url.clone();
        let (latencies, answering, assigned) = (
            Arc::clone(&latencies),
            Arc::clone(&answering),
            Arc::clone(&assigned),
        );
        // Spawned from the workers' runtime, the actor, its gRPC stream and
        // its heartbeats all run there.
        let actor = sim_runtime
            .spawn(async move {
                let (results_tx, results_rx) = mpsc::unbounded_channel::<(UnitResult, String)>();
                let last_sent = Arc::new(Mutex::new(None));
                let (actor, _) = Actor::spawn(
                    None,
                    SimWorker,
                    SimState {
                        script: ScriptedWorker::new(Script {
                            reuse_verdicts: !full_checks,
                            ..Script::default()
                        }),
                        results: results_tx,
                        last_sent: Arc::clone(&last_sent),
                        latencies,
                        answering,
                        assigned,
                    },
                )
                .await?;
                join_worker(&url, &id, SLOTS, actor.get_cell(), results_rx, move || {
                    *last_sent.lock().unwrap() = Some(Instant::now())
                })
                .await?;
                anyhow::Ok(actor)
            })
            .await??;
        sims.push(actor);
    }
    coordinator.wait_for_workers(workers).await?;
    let api = &mut coordinator.api;

    let plan_path = repo_root().join("examples/retail-banking.toml");
    let plan_toml = std::fs::read_to_string(&plan_path)?;
    let files = seedling_coordinator::plan::reference_files(&plan_path, &plan_toml)?;
    let started = Instant::now();
    let cpu_before = process_cpu();
    let sim_cpu_before = threads_cpu(SIM_THREADS);
    let submitted = api
        .submit_plan(SubmitPlanRequest {
            file_name: "retail-banking.toml".into(),
            plan_toml,
            files,
            target: Some(target),
        })
        .await?
        .into_inner();
    let id = submitted.plan_id.clone();
    let mut last_print = Instant::now();
    let summary = loop {
        let summary = api
            .get_plan(PlanRef {
                plan_id: id.clone(),
            })
            .await?
            .into_inner();
        if summary.state != "running" {
            break summary;
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "  {}/{} accepted, {} attempts, {:.0}s",
                summary.accepted,
                summary.target,
                summary.attempts,
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    let run_cpu = process_cpu().saturating_sub(cpu_before);
    let sim_cpu = threads_cpu(SIM_THREADS).saturating_sub(sim_cpu_before);
    let answering = *answering.lock().unwrap();
    let load = api
        .get_cluster_status(ClusterStatusRequest {})
        .await?
        .into_inner()
        .load
        .unwrap_or_default();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    println!("coordinator benchmark (scripted workers stand in for llama.cpp)");
    println!(
        "  workers {workers} x {SLOTS} slots, plan retail-banking, target {target}, state {}, {} cores, checks on {}",
        summary.state,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if full_checks {
            "every answer"
        } else {
            "the first answer of each shape (--full-checks: every one)"
        }
    );
    println!(
        "  accepted {} in {elapsed:.1}s: {:.0} accepted records/s; {} results stored: {:.0} results/s (each a durable lineage batch)",
        summary.accepted,
        summary.accepted as f64 / elapsed,
        summary.attempts,
        summary.attempts as f64 / elapsed
    );
    println!(
        "  assignment latency (result sent -> next unit at that worker): p50 {:.2} ms, p99 {:.2} ms, over {} assignments",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.len()
    );
    let (assignments, assigned_bytes) = *assigned.lock().unwrap();
    println!(
        "  assignment size: {:.0} bytes on average over {assignments} assignments",
        assigned_bytes as f64 / assignments.max(1) as f64
    );
    println!(
        "  coordinator stages per result, wall clock: deciding {:.3} ms (actor; {:.3} of it handing out units; {:.1} results a turn), writing {:.3} ms (applying to sled), syncing {:.3} ms (overlaps the applying; {} results in {} syncs)",
        load.deciding_ms_per_result(),
        load.dispatching_ms_per_result(),
        load.results_per_group(),
        load.writing_ms_per_result(),
        load.syncing_ms_per_result(),
        load.results_written,
        load.writes
    );
    println!(
        "  serial CPU per result (each stage's own thread; what it costs on a core of its own): deciding {:.3} ms, writing {:.3} ms: ceiling {:.0} results/s",
        load.deciding_cpu_ms_per_result(),
        load.writing_cpu_ms_per_result(),
        load.serial_ceiling_per_s()
    );
    let per_record = |cpu: Duration| cpu.as_secs_f64() * 1e3 / summary.accepted.max(1) as f64;
    let coordinator_cpu = per_record(run_cpu.saturating_sub(sim_cpu));
    println!(
        "  CPU per accepted record: {:.3} ms in all; the coordinator {coordinator_cpu:.3} ms (every thread but the simulated workers': {:.1} cores at 10,000 records/s), the simulated workers {:.3} ms (their gRPC ends and actors; the scripted answers {:.3} ms)",
        per_record(run_cpu),
        coordinator_cpu * 10.0,
        per_record(sim_cpu),
        per_record(answering)
    );
    println!(
        "  peak RSS of the process (coordinator + simulated workers): {:.0} MiB",
        peak_rss_mib()
    );
    println!(
        "  semantic duplicate tier: one check against 10,000 accepted 896-dim inputs: {:.2} ms",
        semantic_check_ms(10_000, 896)
    );
    coordinator.stop().await;
    for sim in sims {
        sim.stop(None);
    }
    sim_runtime.shutdown_background();
    Ok(())
}
