//! `seedling verify DIR`: does the dataset in DIR teach the model its domain?
//! Prepares the conditions and probes (`seedling_coordinator::verify`),
//! generates the naive baseline on our own engine, runs the training
//! sidecar, then prints the table, writes `DIR/verify/report.json` and, when
//! the run's lineage store is there, records a verification node and
//! re-exports so the card gains its "Verification" section.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use seedling_common::time::{now_unix_ms, rfc3339_from_unix_ms};
use seedling_coordinator::lineage::LineageStore;
use seedling_coordinator::tracking::track_verification;
use seedling_coordinator::verify::naive::{naive_prompt, naive_row, naive_schema};
use seedling_coordinator::verify::perturb::perturb_facts;
use seedling_coordinator::verify::probes::build_probes;
use seedling_coordinator::verify::report::{
    BASE, NAIVE, PERTURBED, SEEDLING, compare, summarize, verification_batch,
};
use seedling_coordinator::verify::sidecar::{ConditionInput, condition_key, default_env};
use seedling_coordinator::verify::{
    Sidecar, SidecarConfig, SidecarEvent, TrainRow, TrainingSettings, VerificationReport,
    VerifyDataset, knowledge_of, read_pairs, write_jsonl,
};
use seedling_worker::engine::{Engine, GenerationRequest, OutputConstraint, SamplingParams};

use crate::EngineArgs;
use crate::tracking::{TrackingArgs, print_tracking};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A dataset directory (`seedling run --out DIR`, or `seedling export`)
    pub dir: PathBuf,
    /// The small tier: few steps, a quick answer (CI runs it)
    #[arg(long)]
    pub smoke: bool,
    /// A fifth condition: your own instruction set (JSONL with input and response)
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Your own held-out questions and answers (JSONL with input and response)
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// The lineage store [default: DIR/.seedling/lineage when it exists]
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// The verification environment [default: $SEEDLING_VERIFY_ENV, else ~/.cache/seedling/verify-env]
    #[arg(long)]
    pub env: Option<PathBuf>,
    /// Training steps per condition [default: by tier and dataset size]
    #[arg(long)]
    pub steps: Option<u32>,
    /// Naive baseline examples; 0 leaves the naive condition out [default: as many as the train split]
    #[arg(long)]
    pub naive: Option<usize>,
    /// Recompute every condition instead of reusing results for the same inputs
    #[arg(long)]
    pub fresh: bool,
    #[command(flatten)]
    pub tracking: TrackingArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

fn threads(args: &EngineArgs) -> u32 {
    args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    })
}

/// The store beside the dataset, if the user gave one or the run left one.
fn open_store(args: &VerifyArgs) -> anyhow::Result<Option<LineageStore>> {
    let path = match &args.store {
        Some(path) => path.clone(),
        None => {
            let beside = crate::run::store_dir(&args.dir);
            if !beside.is_dir() {
                return Ok(None);
            }
            beside
        }
    };
    let store = LineageStore::open(&path)
        .with_context(|| format!("opening the lineage store {}", path.display()))?;
    Ok(Some(store))
}

/// The naive baseline: `count` usable pairs from one plain prompt, kept in
/// `path` for later runs with the same prompt and model.
fn naive_rows(
    dataset: &VerifyDataset,
    engine_args: &EngineArgs,
    model_identity: &str,
    count: usize,
    path: &Path,
) -> anyhow::Result<(Vec<TrainRow>, usize)> {
    let prompt = naive_prompt(&dataset.plan);
    let meta_path = path.with_extension("meta.json");
    let meta = serde_json::json!({ "prompt": prompt, "model": model_identity, "count": count, "seed": dataset.plan.seed });
    if path.is_file()
        && std::fs::read_to_string(&meta_path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|m| {
                m["prompt"] == meta["prompt"]
                    && m["model"] == meta["model"]
                    && m["count"] == meta["count"]
                    && m["seed"] == meta["seed"]
            })
        && let Ok(rows) = read_pairs(path)
    {
        eprintln!(
            "naive baseline: reusing {} examples in {}",
            rows.len(),
            path.display()
        );
        return Ok((rows, count));
    }
    eprintln!("naive baseline: {count} examples from one plain prompt on the local engine");
    let mut config = engine_args.config();
    config.n_threads = threads(engine_args);
    config.n_slots = config.n_slots.clamp(1, 8);
    let engine = Engine::start(config)?;
    let mut rows = Vec::new();
    let mut asked = 0usize;
    // A reply cut off by the token limit does not parse; ask again with
    // other seeds, up to three times the count in all.
    while rows.len() < count && asked < count * 3 {
        let batch = (count - rows.len()).max(1);
        let requests = (asked..asked + batch).map(|i| {
            GenerationRequest::chat(vec![seedling_worker::engine::ChatMessage::user(
                prompt.clone(),
            )])
            .with_max_new_tokens(256)
            .with_constraint(OutputConstraint::JsonSchema(naive_schema()))
            .with_sampling(SamplingParams {
                temperature: 0.8,
                seed: (dataset.plan.seed as u32).wrapping_add(i as u32),
                ..SamplingParams::default()
            })
        });
        let replies = engine.generate_all_blocking(requests)?;
        for reply in replies {
            if let Some(row) = naive_row(rows.len(), &reply.text) {
                rows.push(row);
            }
        }
        asked += batch;
    }
    if rows.is_empty() {
        anyhow::bail!("the naive baseline got no usable answer in {asked} tries");
    }
    write_jsonl(path, &rows)?;
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta)?)?;
    Ok((rows, count))
}

fn progress(event: SidecarEvent, tty: bool) {
    let mut err = std::io::stderr();
    match event {
        SidecarEvent::Loading { device } => {
            let _ = writeln!(err, "loading the model into torch ({device})");
        }
        SidecarEvent::Train {
            condition,
            step,
            steps,
            loss,
            eta_s,
        } => {
            let line = format!(
                "training {condition}: step {step}/{steps}, loss {loss:.3}, {eta_s:.0}s left for this condition"
            );
            if tty {
                let _ = write!(err, "\r\x1b[2K{line}");
                if step == steps {
                    let _ = writeln!(err);
                }
            } else if step == steps || step % 10 == 0 || step == 1 {
                let _ = writeln!(err, "{line}");
            }
        }
        SidecarEvent::Evaluate { condition } => {
            let _ = writeln!(err, "scoring {condition} on the probes and the test split");
        }
        SidecarEvent::Reused { condition } => {
            let _ = writeln!(
                err,
                "{condition}: reusing the result computed for the same inputs"
            );
        }
        SidecarEvent::Condition { condition, seconds } => {
            let _ = writeln!(err, "{condition}: done in {seconds:.0}s");
        }
        SidecarEvent::Done => {}
    }
}

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    // A tracking URI that cannot work is refused before hours of training.
    let tracking = args.tracking.target("verify untracked")?;
    let config = args.engine.config();
    seedling_worker::model_file::check_gguf_header(&config.model_path)?;
    let store = open_store(&args)?;
    let dataset = VerifyDataset::open(&args.dir, store.as_ref())?;
    let sidecar = Sidecar::locate(&args.env.clone().unwrap_or_else(default_env))?;
    let user_baseline = args.baseline.as_deref().map(read_pairs).transpose()?;
    let user_eval = args.eval.as_deref().map(read_pairs).transpose()?;

    let out = args.dir.join("verify");
    let inputs = out.join("inputs");
    std::fs::create_dir_all(&inputs).with_context(|| format!("creating {}", inputs.display()))?;
    if args.fresh {
        let _ = std::fs::remove_dir_all(out.join("conditions"));
    }

    let knowledge = knowledge_of(&dataset.plan, &dataset.plan_id, store.as_ref())?;
    let probes = build_probes(&knowledge);
    if probes.is_empty() {
        anyhow::bail!(
            "the plan's glossary, rules and reference documents state no facts (figures, times, codes) to build probes from; add reference documents to the plan"
        );
    }
    if store.is_none() {
        eprintln!(
            "note: no lineage store beside {} (pass --store): probes come from the glossary and rules only, results are not split by stratum, and the card is not updated",
            args.dir.display()
        );
    }
    let mut probes_by_source: BTreeMap<String, usize> = BTreeMap::new();
    for probe in &probes {
        *probes_by_source.entry(probe.source.clone()).or_default() += 1;
    }
    let tier = if args.smoke { "smoke" } else { "full" };
    let mut training = if args.smoke {
        TrainingSettings::smoke(dataset.train.len())
    } else {
        TrainingSettings::full(dataset.train.len())
    };
    if let Some(steps) = args.steps {
        anyhow::ensure!(steps > 0, "--steps must be at least 1");
        training.steps = steps;
    }
    let model_digest = seedling_worker::model_file::sha256_file(&config.model_path)?;
    let model_name = config
        .model_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let model_identity = format!("{model_name} sha256:{}", &model_digest[..16]);

    let write = |name: &str, rows: &[TrainRow]| -> anyhow::Result<PathBuf> {
        let path = inputs.join(name);
        write_jsonl(&path, rows)?;
        Ok(path)
    };
    let probes_path = inputs.join("probes.jsonl");
    write_jsonl(&probes_path, &probes)?;
    let seedling_path = write("seedling.jsonl", &dataset.train)?;
    let (perturbed, perturbed_records) = perturb_facts(&dataset.train, dataset.plan.seed);
    let perturbed_path = write("perturbed.jsonl", &perturbed)?;
    let test_path = (!dataset.test.is_empty())
        .then(|| write("test.jsonl", &dataset.test))
        .transpose()?;
    let user_eval_path = user_eval
        .as_deref()
        .map(|rows| write("user-eval.jsonl", rows))
        .transpose()?;
    // `--naive 0` leaves the naive condition out (a quicker answer when
    // only the dataset's own effect is in question).
    let naive_count = args.naive.unwrap_or(dataset.train.len().max(1));
    let naive = if naive_count == 0 {
        Vec::new()
    } else {
        naive_rows(
            &dataset,
            &args.engine,
            &model_identity,
            naive_count,
            &inputs.join("naive.jsonl"),
        )?
        .0
    };

    let mut conditions = vec![(BASE, None), (SEEDLING, Some(seedling_path))];
    if naive_count > 0 {
        conditions.push((NAIVE, Some(inputs.join("naive.jsonl"))));
    }
    conditions.push((PERTURBED, Some(perturbed_path)));
    if let Some(rows) = &user_baseline {
        conditions.push(("user_baseline", Some(write("user-baseline.jsonl", rows)?)));
    }
    let shared = [
        Some(probes_path.as_path()),
        test_path.as_deref(),
        user_eval_path.as_deref(),
    ];
    let conditions: Vec<ConditionInput> = conditions
        .into_iter()
        .map(|(name, train)| {
            let mut files = vec![train.as_deref()];
            files.extend(shared);
            ConditionInput {
                name: name.to_string(),
                key: condition_key(
                    name,
                    &model_identity,
                    &training,
                    &dataset.system_prompt,
                    &files,
                ),
                train,
            }
        })
        .collect();
    let sidecar_config = SidecarConfig {
        model: config.model_path.clone(),
        threads: threads(&args.engine),
        seed: dataset.plan.seed,
        training: training.clone(),
        system_prompt: dataset.system_prompt.clone(),
        conditions,
        test: test_path,
        probes: probes_path,
        user_eval: user_eval_path,
        out_dir: out.clone(),
        bootstrap_rounds: 2000,
    };
    eprintln!(
        "verifying {} ({} train, {} test records; {} probes; {} naive examples; {} of {} train records have facts to swap): {} tier, {} steps per condition",
        dataset.version,
        dataset.train.len(),
        dataset.test.len(),
        probes.len(),
        naive.len(),
        perturbed_records,
        dataset.train.len(),
        tier,
        training.steps
    );
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let figures = sidecar.run(&sidecar_config, |event| progress(event, tty))?;

    let summaries: Vec<_> = figures.conditions.iter().map(summarize).collect();
    let created_at = rfc3339_from_unix_ms(now_unix_ms());
    let plots = [
        "loss.png",
        "forced_choice.png",
        "fact_nll.png",
        "strata.png",
    ]
    .into_iter()
    .filter(|p| out.join(p).is_file())
    .map(str::to_string)
    .collect();
    let report = VerificationReport {
        dataset_version: dataset.version.clone(),
        plan: dataset.plan_id.to_string(),
        tier: tier.to_string(),
        created_at,
        seconds: started.elapsed().as_secs_f64(),
        model: model_identity,
        device: figures.device.clone(),
        training,
        probes: figures.probes,
        probes_by_source,
        test_rows: figures.test_rows,
        leakage: dataset.leakage(),
        naive: (naive_count, naive.len()),
        perturbed_records,
        comparisons: compare(&summaries),
        conditions: summaries,
        plots,
    };
    let report_path = out.join("report.json");
    std::fs::write(&report_path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", report_path.display()))?;

    println!("{}", report.table());
    for line in report.verdicts() {
        println!("{line}");
    }
    println!(
        "test split against train: {} shared records, highest input ROUGE-L {:.2}, {} near duplicates",
        report.leakage.shared_ids, report.leakage.max_input_rouge_l, report.leakage.near_duplicates
    );
    if let Some(store) = &store {
        let (node, batch) = verification_batch(&dataset.plan_id, &report, now_unix_ms());
        store.append(&batch)?;
        store.sync()?;
        seedling_coordinator::dataset::export_dataset(store, &dataset.plan_id, &args.dir)?;
        println!(
            "card: {} (section Verification); lineage node {node}",
            args.dir.join("README.md").display()
        );
    }
    println!(
        "report: {}; plots in {} ({:.0}s)",
        report_path.display(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    if let Some(target) = &tracking {
        print_tracking(&track_verification(target, &report, &out));
    }
    Ok(())
}
