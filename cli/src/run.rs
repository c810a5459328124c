//! `seedling run PLAN --out DIR`: the embedded mode, a cluster of one. The
//! cluster's coordinator actor and one worker (the real engine) in this
//! process, talking as they do across machines but without a network; the lineage
//! store under `DIR/.seedling/lineage`, the dataset written to `DIR` when
//! every quota is met. Running it again with the same plan and directory
//! continues from what the store holds.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use seedling_common::cost::TimeSplit;
use seedling_coordinator::cluster::{LocalCoordinator, PlanState};
use seedling_coordinator::dataset::{ExportSummary, export_dataset};
use seedling_coordinator::lineage::LineageStore;
use seedling_coordinator::pipeline::{PlanRun, Progress, RunOptions};
use seedling_coordinator::plan::load_plan;
use seedling_coordinator::tracking::{PlanTracking, RunContext};
use seedling_proto::worker::WorkerCapacity;
use seedling_worker::engine::{EngineConfig, EngineStats};
use seedling_worker::model_file::{check_gguf_header, sha256_file};
use seedling_worker::models::Models;
use tokio::sync::oneshot;

use crate::tracking::{TrackingArgs, print_tracking};
use crate::{EngineArgs, JudgeArgs};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The plan (TOML; see examples/)
    pub plan: PathBuf,
    /// Output directory: the dataset, with the lineage store in DIR/.seedling
    #[arg(long, default_value = "seedling-out")]
    pub out: PathBuf,
    /// Accepted records to produce, overriding the plan's target
    #[arg(long)]
    pub target: Option<u64>,
    /// Attempts a stratum may spend per record of its quota before it counts as short
    #[arg(long, default_value_t = 6.0)]
    pub attempts_per_record: f64,
    /// Print no progress, only the summary
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub tracking: TrackingArgs,
    /// Take the plan's human review into this round: counter-examples and
    /// examples in its prompts, poorly reviewed groups paused
    #[arg(long)]
    pub feedback: bool,
    /// With --feedback: pause a subdomain and task type whose reviewed
    /// acceptance lies wholly below this
    #[arg(long, default_value_t = 0.5, requires = "feedback")]
    pub pause_below: f64,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub judge: JudgeArgs,
}

/// Where a run directory keeps its lineage store.
pub fn store_dir(out: &Path) -> PathBuf {
    out.join(".seedling").join("lineage")
}

/// Where a run directory keeps its latest progress, for `seedling plan status`.
pub fn progress_file(out: &Path) -> PathBuf {
    out.join(".seedling").join("progress.json")
}

/// Writes the progress snapshot through a temporary file (readers never see
/// half of it). A failure only costs the snapshot, never the run.
fn write_progress(out: &Path, progress: &Progress, dataset: Option<&str>) {
    let snapshot = serde_json::json!({
        "pid": std::process::id(),
        "updated_at": seedling_common::time::rfc3339_from_unix_ms(seedling_common::time::now_unix_ms()),
        "finished": dataset.is_some(),
        "dataset": dataset,
        "progress": progress,
    });
    let path = progress_file(out);
    let tmp = path.with_extension("partial");
    let written = serde_json::to_vec_pretty(&snapshot)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(err) = written {
        tracing::warn!(path = %path.display(), %err, "cannot write the progress snapshot");
    }
}

/// A model as lineage and reports name it: its file name and the start of
/// its SHA-256 (`digest_tag`), which `seedling verify` looks for in a plan's
/// generator version.
pub fn model_identity(model: &Path, digest: &str) -> String {
    let name = model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{name} {}", digest_tag(digest))
}

pub fn digest_tag(digest: &str) -> String {
    format!("sha256:{}", &digest[..16])
}

fn generator_version(model: &Path, digest: &str) -> String {
    format!(
        "seedling {} ({})",
        env!("CARGO_PKG_VERSION"),
        model_identity(model, digest)
    )
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    crate::plan::check_target_flag(args.target)?;
    if !(args.attempts_per_record.is_finite() && args.attempts_per_record >= 1.0) {
        anyhow::bail!("--attempts-per-record must be >= 1");
    }
    let tracking_target = args.tracking.target("run untracked")?;
    let plan = load_plan(&args.plan)?;
    let base_dir = args
        .plan
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut engine_args = args.engine.clone();
    if engine_args.model.is_none()
        && let Some(model) = &plan.model
    {
        engine_args.model = Some(base_dir.join(model));
    }
    let config = engine_args.config();
    // A missing or foreign model file is named before anything is written.
    check_gguf_header(&config.model_path)?;
    let judge = args.judge.config(&args.engine);
    if let Some(judge) = &judge {
        check_gguf_header(&judge.model_path).context("--judge-model")?;
    }
    let store_path = store_dir(&args.out);
    let store =
        Arc::new(LineageStore::open(&store_path).with_context(|| {
            format!("opening the run's lineage store in {}", args.out.display())
        })?);
    let model_sha256 = sha256_file(&config.model_path)?;
    let options = RunOptions {
        target: args.target,
        generator_version: generator_version(&config.model_path, &model_sha256),
        base_dir,
        attempts_per_record: args.attempts_per_record,
    };
    let earlier_plans = store.plans()?;
    let mut plan_run = PlanRun::open(Arc::clone(&store), plan.clone(), options)?;
    if !earlier_plans.is_empty() && !earlier_plans.contains(plan_run.plan_id()) {
        // An edited plan is a new plan: say so rather than silently start over.
        let names: Vec<&str> = earlier_plans.iter().map(|p| p.as_str()).collect();
        eprintln!(
            "seedling: {} holds {} from an earlier run; this plan differs from it, so it runs as new plan {}",
            args.out.display(),
            names.join(", "),
            plan_run.plan_id()
        );
    }
    if args.feedback {
        crate::review::take_feedback(&store, &mut plan_run, &plan, args.pause_below, &args.out)?;
    }
    let plan_id = plan_run.plan_id().clone();
    let mut tracking = match &tracking_target {
        Some(target) => {
            let plan_text = std::fs::read_to_string(&args.plan)
                .with_context(|| format!("reading {}", args.plan.display()))?;
            let context = RunContext {
                plan_id: plan_id.as_str(),
                plan_file: &args.plan,
                plan_text: &plan_text,
                model: &config.model_path.display().to_string(),
                model_sha256: &model_sha256,
                settings: run_settings(&config, &args),
                nodes: vec!["local".into()],
            };
            Some(PlanTracking::start(target, &plan, &context))
        }
        None => None,
    };
    let started = Instant::now();
    // The generation itself, model load and export aside: what the time
    // split and the delivered tokens/s are of.
    let mut generating = Duration::ZERO;
    let mut engine_stats = None;
    let mut judge_stats = None;
    let progress = if plan_run.is_finished() {
        plan_run.progress()
    } else {
        let before = plan_run.progress();
        if before.accepted > 0 || before.attempts > 0 {
            eprintln!(
                "seedling: continuing plan {plan_id}: {}/{} accepted after {} attempts",
                before.accepted, before.target, before.attempts
            );
        }
        let models = start_models(&config, judge)?;
        let engine = Arc::clone(&models.generator);
        let judge_engine = models.judge.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let driving = Instant::now();
        let progress = runtime.block_on(drive(
            Arc::clone(&store),
            plan_run,
            models,
            args.quiet,
            &args.out,
            &mut tracking,
        ))?;
        generating = driving.elapsed();
        // Units still in the engine are surplus: dropping their tasks drops
        // their tickets, and the engine abandons them instead of finishing.
        runtime.shutdown_timeout(Duration::from_secs(10));
        engine_stats = Some(engine.stats());
        judge_stats = judge_engine.map(|judge| judge.stats());
        drop(engine);
        progress
    };
    let summary = export_dataset(&store, &plan_id, &args.out)
        .with_context(|| format!("exporting plan {plan_id} to {}", args.out.display()))?;
    write_progress(&args.out, &progress, Some(&summary.version));
    print_summary(&progress, &summary, started.elapsed(), &store_path);
    print_costs(
        &progress,
        generating,
        &config,
        engine_stats.as_ref(),
        judge_stats.as_ref(),
    );
    if let Some(tracking) = tracking {
        print_tracking(&tracking.finished(&progress, &summary, &args.plan));
    }
    Ok(())
}

/// The generator and, if named, the judge model.
fn start_models(config: &EngineConfig, judge: Option<EngineConfig>) -> anyhow::Result<Models> {
    let models = Models::start(config.clone(), judge)?;
    if let Some(name) = models.judge_name() {
        eprintln!("seedling: judge model {name} checks each answer against its sources");
    }
    Ok(models)
}

/// The settings a run is tracked with, beside the plan's own.
fn run_settings(config: &EngineConfig, args: &RunArgs) -> Vec<(String, String)> {
    [
        (
            "target",
            args.target.map_or("plan's".into(), |t| t.to_string()),
        ),
        ("attempts_per_record", args.attempts_per_record.to_string()),
        ("engine.n_ctx", config.n_ctx.to_string()),
        ("engine.n_slots", config.n_slots.to_string()),
        ("engine.n_threads", config.effective_threads().to_string()),
        ("engine.n_gpu_layers", config.n_gpu_layers.to_string()),
        ("engine.n_batch", config.n_batch.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// How often the local worker renews its lease.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A lease the local worker loses only if its process stalls this long.
const LEASE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the coordinator and the local worker until the plan ends.
async fn drive(
    store: Arc<LineageStore>,
    run: PlanRun,
    models: Models,
    quiet: bool,
    out: &Path,
    tracking: &mut Option<PlanTracking>,
) -> anyhow::Result<Progress> {
    let coordinator = LocalCoordinator::start(store, LEASE_TIMEOUT)
        .await
        .context("starting the coordinator")?;
    let mut views = coordinator.host(run).await?;
    let engine = &models.generator;
    let config = engine.config().clone();
    let capacity = WorkerCapacity {
        worker_id: "local".into(),
        slots: config.n_slots,
        context_tokens: config.n_ctx,
        model_digest: String::new(),
        model_name: engine.info().name.clone(),
        gpu: config.n_gpu_layers > 0,
        gpu_layers: config.n_gpu_layers,
        judge_model_name: models.judge_name().unwrap_or_default(),
    };
    let (stop_worker, worker_stopped) = oneshot::channel::<()>();
    let worker = tokio::spawn(seedling_worker::remote::serve_local(
        models.clone(),
        capacity,
        coordinator.reports(),
        HEARTBEAT,
        async {
            let _ = worker_stopped.await;
        },
    ));

    let first = views.borrow().progress.clone();
    let mut reporter = Reporter::new(quiet, &first);
    write_progress(out, &first, None);
    let mut last_snapshot = Instant::now();
    let mut paused_said = false;
    let ended = loop {
        let view = views.borrow_and_update().clone();
        if view.state.has_ended() {
            break view;
        }
        if view.state == PlanState::Paused && !paused_said {
            reporter.clear();
            eprintln!("seedling: paused: {}", view.error);
        }
        paused_said = view.state == PlanState::Paused;
        reporter.show(&view.progress);
        if let Some(tracking) = tracking.as_mut() {
            tracking.progress(&view.progress);
        }
        if last_snapshot.elapsed() >= Duration::from_secs(1) {
            write_progress(out, &view.progress, None);
            last_snapshot = Instant::now();
        }
        tokio::select! {
            changed = views.changed() => {
                anyhow::ensure!(changed.is_ok(), "the coordinator stopped without a result");
            }
            _ = tokio::signal::ctrl_c() => {
                reporter.clear();
                eprintln!(
                    "seedling: interrupted; {} accepted records are stored. Run the same command again to continue.",
                    view.progress.accepted
                );
                if let Some(tracking) = tracking.take() {
                    tracking.stopped(&view.progress, "KILLED");
                }
                std::process::exit(130);
            }
        }
    };
    reporter.clear();
    let _ = stop_worker.send(());
    let _ = worker.await;
    coordinator.stop().await;
    if ended.state == PlanState::Failed {
        if let Some(tracking) = tracking.take() {
            tracking.stopped(&ended.progress, "FAILED");
        }
        anyhow::bail!("{}", ended.error);
    }
    Ok(ended.progress)
}

/// Progress on stderr: one rewritten line on a terminal, a line per tenth
/// of the target otherwise (quiet in CI logs).
struct Reporter {
    quiet: bool,
    terminal: bool,
    last_tenth: u64,
    started: Instant,
    last_draw: Option<Instant>,
    /// Tokens generated before this process started: the rate counts only
    /// this run's work (the run's own ETA does likewise).
    tokens_before: u64,
}

impl Reporter {
    fn new(quiet: bool, initial: &Progress) -> Self {
        Self {
            quiet,
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_draw: None,
            tokens_before: initial.generated_tokens,
            last_tenth: (initial.accepted * 10)
                .checked_div(initial.target)
                .unwrap_or(0),
        }
    }

    fn line(&self, p: &Progress) -> String {
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        let planned: Vec<_> = p.strata.iter().filter(|s| s.quota > 0).collect();
        let full = planned.iter().filter(|s| s.accepted >= s.quota).count();
        let eta = p
            .eta_s
            .map(|s| format!(", ETA {}", human_duration(Duration::from_secs_f64(s))))
            .unwrap_or_default();
        let lagging = planned
            .iter()
            .filter(|s| s.accepted < s.quota)
            .max_by_key(|s| (s.quota - s.accepted, std::cmp::Reverse(s.stratum.clone())))
            .map(|s| format!(" · lagging {} {}/{}", s.stratum, s.accepted, s.quota))
            .unwrap_or_default();
        format!(
            "[{}] accepted {}/{} · strata full {}/{} · attempts {} · in flight {} · {:.0} tok/s{}{lagging}",
            p.phase,
            p.accepted,
            p.target,
            full,
            planned.len(),
            p.attempts,
            p.in_flight,
            p.generated_tokens.saturating_sub(self.tokens_before) as f64 / elapsed,
            eta
        )
    }

    fn show(&mut self, p: &Progress) {
        if self.quiet {
            return;
        }
        if self.terminal {
            if self
                .last_draw
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
            {
                return;
            }
            self.last_draw = Some(Instant::now());
            let line = self.line(p);
            eprint!("\r\x1b[2K{line}");
        } else {
            let tenth = (p.accepted * 10).checked_div(p.target).unwrap_or(0);
            if tenth > self.last_tenth {
                self.last_tenth = tenth;
                let line = self.line(p);
                eprintln!("{line}");
            }
        }
    }

    fn clear(&self) {
        if self.terminal && !self.quiet {
            eprint!("\r\x1b[2K");
        }
    }
}

pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn print_summary(p: &Progress, export: &ExportSummary, elapsed: Duration, store: &Path) {
    println!("plan {} finished in {}", p.plan, human_duration(elapsed));
    println!(
        "  accepted {}/{} after {} attempts; {} tokens generated",
        p.accepted, p.target, p.attempts, p.generated_tokens
    );
    if !p.rejected.is_empty() {
        let reasons: Vec<String> = p.rejected.iter().map(|(r, n)| format!("{r} {n}")).collect();
        println!("  rejected: {}", reasons.join(", "));
    }
    if let Some(judged) = &export.faithfulness {
        println!("  {}", judged.line());
    }
    let planned: Vec<_> = p.strata.iter().filter(|s| s.quota > 0).collect();
    if planned.len() <= 40 {
        println!("  per stratum (accepted/quota, attempts):");
        for s in &planned {
            println!(
                "    {:>3}/{:<3} {:>4}  {}",
                s.accepted, s.quota, s.attempts, s.stratum
            );
        }
    }
    let short = p.shortfalls();
    if short.is_empty() {
        let planned = p.strata.iter().filter(|s| s.quota > 0).count();
        println!("  every stratum met its quota ({planned} strata)");
    } else {
        println!(
            "  {} strata fell short (attempt budget spent):",
            short.len()
        );
        for s in short {
            println!(
                "    {}: {}/{} after {} attempts",
                s.stratum, s.accepted, s.quota, s.attempts
            );
        }
    }
    let splits: Vec<String> = export
        .per_split
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    println!(
        "  dataset {} in {} ({}); card {}",
        export.version,
        export.dir.display(),
        splits.join(", "),
        export.dir.join("README.md").display()
    );
    println!(
        "  lineage: seedling lineage show RECORD_ID --store {}",
        store.display()
    );
    println!(
        "  does it teach the domain? seedling verify {dir} --proxy (no training, minutes), or seedling verify {dir} (fine-tunes)",
        dir = export.dir.display()
    );
}

/// Where this run's time went, what an accepted record cost per stage, and
/// the run's generated tokens/s against llama.cpp's own batched figure on
/// this machine when `scripts/bench-engine` has measured it.
fn print_costs(
    p: &Progress,
    elapsed: Duration,
    config: &EngineConfig,
    engine: Option<&EngineStats>,
    judge: Option<&EngineStats>,
) {
    let cost = &p.session_cost;
    if cost.is_empty() || elapsed.is_zero() {
        return;
    }
    let wall_ms = elapsed.as_millis() as u64;
    match engine {
        // The engine's own clock: its work on every request, including
        // those of attempts withdrawn or dropped before they reported.
        Some(engine) => {
            let split = TimeSplit {
                capacity_ms: wall_ms,
                prefill_ms: engine.prefill_ms,
                decode_ms: engine.decode_ms,
                embedding_ms: engine.embedding_ms,
                checks_ms: cost.checks_ms,
                idle_ms: engine.idle_ms,
            };
            let busy = engine.prefill_ms + engine.decode_ms + engine.embedding_ms;
            let accounted = cost.split(0);
            // A judge model's calls ran on its own engine, not this one.
            let judged = judge
                .and(cost.stages.get("judge"))
                .map_or(0, |s| s.prefill_ms + s.decode_ms);
            let kept = (accounted.prefill_ms + accounted.decode_ms + accounted.embedding_ms)
                .saturating_sub(judged);
            println!(
                "  where the generation's {} went (one worker): {}; the rest, {:.0}%, between steps",
                human_duration(elapsed),
                split.describe(),
                100.0 * split.share(wall_ms.saturating_sub(busy + engine.idle_ms + cost.checks_ms)),
            );
            println!(
                "  {:.0}% of the engine's work went to attempts that reported; the rest to attempts \
                 withdrawn or dropped at the end",
                100.0 * kept as f64 / busy.max(1) as f64
            );
            if let Some(judge) = judge {
                let ms = |ms: u64| human_duration(Duration::from_millis(ms));
                println!(
                    "  the judge model's engine, beside it: prefill {}, decode {}",
                    ms(judge.prefill_ms),
                    ms(judge.decode_ms),
                );
            }
        }
        None => println!(
            "  where the generation's {} went (one worker): {}",
            human_duration(elapsed),
            cost.split(wall_ms).describe()
        ),
    }
    let accepted = p.accepted_this_run;
    if accepted > 0 {
        println!("  per accepted record this run:");
        for line in cost.per_record_lines(accepted) {
            println!("    {line}");
        }
    }
    let generated = cost.total().generated_tokens as f64 / elapsed.as_secs_f64().max(1e-3);
    match crate::reference::reference_for(
        &config.model_path,
        config.n_slots,
        config.effective_threads(),
    ) {
        Some(reference) => println!(
            "  delivered {generated:.1} generated tok/s; llama.cpp's batched generation at {} \
             sequences here: {:.1} tok/s (efficiency {:.2}; measured {})",
            reference.parallel,
            reference.gen_tok_s,
            generated / reference.gen_tok_s,
            reference.measured_at
        ),
        None => println!(
            "  delivered {generated:.1} generated tok/s (scripts/bench-engine measures llama.cpp's \
             own figure on this machine for comparison)"
        ),
    }
}
