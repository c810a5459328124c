//! `seedling bench engine`: throughput of our engine under the settings
//! llama.cpp's `llama-batched-bench` uses, plus the shared-prefix workload.
//! `scripts/bench-engine` runs this next to the reference and prints ratios.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use seedling_worker::engine::{ChatMessage, Engine, Generation, GenerationRequest, SamplingParams};
use serde::Serialize;

use crate::EngineArgs;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Aggregate generation throughput at N parallel sequences (one JSON line per N)
    Engine(EngineBenchArgs),
    /// Many requests sharing a long grounding prefix: cached vs recomputed
    Prefix(PrefixBenchArgs),
    /// Lineage store ingest and queries on synthetic records (6 nodes, 8 edges each)
    Lineage(LineageBenchArgs),
}

#[derive(Debug, Args)]
pub struct LineageBenchArgs {
    /// Records to ingest
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Records per durable append (sled is fastest with small batches)
    #[arg(long, default_value_t = 100)]
    pub batch: u64,
    /// Store directory (must not exist; removed afterwards unless --keep)
    #[arg(long, default_value = "target/bench-lineage")]
    pub store: std::path::PathBuf,
    /// Ancestor queries to time
    #[arg(long, default_value_t = 2000)]
    pub queries: usize,
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Args)]
pub struct EngineBenchArgs {
    /// Parallel sequence counts to measure
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    pub parallel: Vec<u32>,
    /// Approximate prompt length per sequence, in tokens
    #[arg(long, default_value_t = 64)]
    pub prompt_tokens: usize,
    /// Tokens generated per sequence (end-of-generation is ignored)
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: u32,
    /// Sampling temperature (0 = greedy); the default runs the full sampler chain
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    #[arg(long, default_value_t = 2048)]
    pub batch: u32,
    #[arg(long, default_value_t = 512)]
    pub ubatch: u32,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
pub struct PrefixBenchArgs {
    /// Requests sharing the prefix
    #[arg(long, default_value_t = 16)]
    pub requests: u32,
    /// Approximate length of the shared grounding prefix, in tokens
    #[arg(long, default_value_t = 1000)]
    pub prefix_tokens: usize,
    /// Tokens generated per request
    #[arg(long, default_value_t = 64)]
    pub gen_tokens: u32,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Serialize)]
struct EngineBenchLine {
    parallel: u32,
    prompt_tokens_per_seq: f64,
    generated_tokens: u64,
    prompt_tok_s: f64,
    gen_tok_s: f64,
    wall_s: f64,
    peak_rss_kib: u64,
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Engine(args) => engine_bench(args),
        BenchCommand::Prefix(args) => prefix_bench(args),
        BenchCommand::Lineage(args) => lineage_bench(args),
    }
}

/// Distinct filler text of roughly `n_tokens` tokens (about one per word).
fn filler(seq: usize, n_tokens: usize) -> String {
    const WORDS: &[&str] = &[
        "account", "balance", "transfer", "review", "policy", "sample", "request", "customer",
        "report", "value", "service", "limit", "process", "status", "record", "update",
    ];
    let mut text = format!("Note {seq}:");
    for i in 0..n_tokens.saturating_sub(4) {
        text.push(' ');
        text.push_str(WORDS[(i * 7 + seq * 3) % WORDS.len()]);
    }
    text
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn engine_bench(args: EngineBenchArgs) -> anyhow::Result<()> {
    let max_parallel = args.parallel.iter().copied().max().unwrap_or(1);
    let mut config = args.engine.config();
    config.n_slots = max_parallel;
    config.n_batch = args.batch;
    config.n_ubatch = args.ubatch;
    config.prefix_cache_entries = 0;
    let engine = Engine::start(config)?;
    // Warm-up: page in the weights and the compute buffers.
    engine.generate_blocking(
        GenerationRequest::raw(filler(999, 16))
            .with_max_new_tokens(4)
            .with_prefix_reuse(false),
    )?;
    for &parallel in &args.parallel {
        let started = Instant::now();
        let generations = engine.generate_all_blocking((0..parallel as usize).map(|seq| {
            GenerationRequest::raw(filler(seq, args.prompt_tokens))
                .with_sampling(SamplingParams {
                    seed: seq as u32,
                    temperature: args.temperature,
                    ..SamplingParams::default()
                })
                .with_max_new_tokens(args.gen_tokens)
                .with_ignore_eos(true)
                .with_prefix_reuse(false)
        }))?;
        let wall = started.elapsed();
        let line = summarize(parallel, &generations, wall);
        println!("{}", serde_json::to_string(&line)?);
    }
    Ok(())
}

fn summarize(parallel: u32, generations: &[Generation], wall: Duration) -> EngineBenchLine {
    let first = generations
        .iter()
        .map(|g| g.accounting.time_to_first_token)
        .min()
        .unwrap_or_default();
    let end = generations
        .iter()
        .map(|g| g.accounting.time_to_first_token + g.accounting.decode_time)
        .max()
        .unwrap_or_default();
    let prompt_tokens: u64 = generations
        .iter()
        .map(|g| u64::from(g.accounting.prompt_tokens_computed))
        .sum();
    let generated: u64 = generations
        .iter()
        .map(|g| u64::from(g.accounting.generated_tokens))
        .sum();
    // The first token of each sequence comes from the prompt's logits, as in
    // llama-batched-bench; the decode steps produce the rest.
    let decoded = generated.saturating_sub(generations.len() as u64);
    let gen_span = end.saturating_sub(first).as_secs_f64();
    EngineBenchLine {
        parallel,
        prompt_tokens_per_seq: prompt_tokens as f64 / generations.len().max(1) as f64,
        generated_tokens: generated,
        prompt_tok_s: prompt_tokens as f64 / first.as_secs_f64().max(1e-9),
        gen_tok_s: decoded as f64 / gen_span.max(1e-9),
        wall_s: wall.as_secs_f64(),
        peak_rss_kib: peak_rss_kib(),
    }
}

#[derive(Debug, Serialize)]
struct PrefixBenchLine {
    mode: &'static str,
    requests: u32,
    prompt_tokens_computed: u64,
    prompt_tokens_reused: u64,
    /// Mean prompt processing time of requests after the first, seconds.
    later_prompt_s: f64,
    first_prompt_s: f64,
    wall_s: f64,
    requests_per_hour: f64,
}

fn prefix_bench(args: PrefixBenchArgs) -> anyhow::Result<()> {
    let grounding = format!(
        "You answer customer questions for a retail bank. Reference material follows.\n{}",
        filler(0, args.prefix_tokens)
    );
    for (mode, reuse) in [("recompute", false), ("shared-prefix", true)] {
        let mut config = args.engine.config();
        config.n_slots = args.requests.min(16);
        let engine = Engine::start(config)?;
        let started = Instant::now();
        let generations = engine.generate_all_blocking((0..args.requests).map(|i| {
            GenerationRequest::chat(vec![
                ChatMessage::system(grounding.clone()),
                ChatMessage::user(format!("Question {i}: what is the daily transfer limit?")),
            ])
            .with_sampling(SamplingParams {
                seed: i,
                ..SamplingParams::default()
            })
            .with_max_new_tokens(args.gen_tokens)
            .with_ignore_eos(true)
            .with_prefix_reuse(reuse)
        }))?;
        let wall = started.elapsed().as_secs_f64();
        let stats = engine.stats();
        let prompt_s = |g: &Generation| g.accounting.prompt_time.as_secs_f64();
        let first_prompt_s = generations.first().map_or(0.0, prompt_s);
        let later: Vec<f64> = generations.iter().skip(1).map(prompt_s).collect();
        let line = PrefixBenchLine {
            mode,
            requests: args.requests,
            prompt_tokens_computed: stats.prompt_tokens_computed,
            prompt_tokens_reused: stats.prompt_tokens_reused,
            later_prompt_s: later.iter().sum::<f64>() / later.len().max(1) as f64,
            first_prompt_s,
            wall_s: wall,
            requests_per_hour: f64::from(args.requests) * 3600.0 / wall.max(1e-9),
        };
        println!("{}", serde_json::to_string(&line)?);
    }
    Ok(())
}

fn lineage_bench(args: LineageBenchArgs) -> anyhow::Result<()> {
    use seedling_common::ids::PlanId;
    use seedling_common::lineage::{NodeKind, NodeStatus};
    use seedling_coordinator::lineage::synthetic::{plan_roots, records, response_id};
    use seedling_coordinator::lineage::{LineageStore, Walk};

    anyhow::ensure!(
        !args.store.exists(),
        "{} exists; pick a new --store directory",
        args.store.display()
    );
    let plan = PlanId::new("p-bench");
    let store = LineageStore::open(&args.store)?;
    store.append(&plan_roots(&plan))?;
    let started = Instant::now();
    let mut first = 0;
    while first < args.records {
        let count = args.batch.min(args.records - first);
        store.append(&records(&plan, first, count))?;
        first += count;
    }
    let ingest_s = started.elapsed().as_secs_f64();

    // Ancestors of records spread over the whole store.
    let mut latencies = Vec::with_capacity(args.queries);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..args.queries {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let id = response_id(&plan, state % args.records);
        let t = Instant::now();
        let found = store.ancestors(&id, Walk::default())?;
        latencies.push(t.elapsed());
        anyhow::ensure!(
            found.len() == 4,
            "record {id} has {} ancestors",
            found.len()
        );
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;

    let t = Instant::now();
    let accepted = store
        .nodes_of_plan(&plan, Some(NodeKind::Response), Some(NodeStatus::Accepted))
        .try_fold(0u64, |n, id| id.map(|_| n + 1))?;
    let scan_s = t.elapsed().as_secs_f64();
    let disk = store.size_on_disk()?;
    drop(store);
    let t = Instant::now();
    let reopened = LineageStore::open(&args.store)?;
    let reopen_s = t.elapsed().as_secs_f64();
    drop(reopened);
    let line = serde_json::json!({
        "records": args.records,
        "batch": args.batch,
        "ingest_records_per_s": args.records as f64 / ingest_s,
        "ancestors_p50_ms": pct(0.5),
        "ancestors_p99_ms": pct(0.99),
        "accepted_scan_rows_per_s": accepted as f64 / scan_s.max(1e-9),
        "accepted_rows": accepted,
        "reopen_s": reopen_s,
        "disk_bytes_per_record": disk as f64 / args.records as f64,
        "peak_rss_mib": peak_rss_kib() as f64 / 1024.0,
        "sample_record": response_id(&plan, 0).to_string(),
    });
    println!("{}", serde_json::to_string(&line)?);
    if !args.keep {
        std::fs::remove_dir_all(&args.store)?;
    }
    Ok(())
}
