//! `seedling verify DIR`: does the dataset in DIR teach the model its domain?
//! Prepares what every condition shares (the dataset, the fact probes, the
//! naive baseline from our own engine, the fact-perturbed control), then
//! either fine-tunes in the training sidecar (`finetune.rs`) or scores the
//! probes with each condition's records in context (`--proxy`,
//! `proxy.rs`). Either way it prints the table, writes the report under
//! `DIR/verify/` and, when the run's lineage store is there, records a
//! verification node and re-exports so the card gains its section.

mod finetune;
mod greedy;
mod naive;
mod proxy;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use seedling_common::time::{now_unix_ms, rfc3339_from_unix_ms};
use seedling_coordinator::lineage::{LineageStore, stored_plan};
use seedling_coordinator::tracking::track_verification;
use seedling_coordinator::verify::perturb::perturb_facts;
use seedling_coordinator::verify::probes::{Probe, build_probes};
use seedling_coordinator::verify::report::{ConditionSummary, FactCoverage, verification_batch};
use seedling_coordinator::verify::sidecar::default_env;
use seedling_coordinator::verify::{
    Sidecar, TrainRow, VerificationReport, VerifyDataset, knowledge_of, read_pairs,
};

use crate::EngineArgs;
use crate::tracking::{TrackingArgs, print_tracking};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A dataset directory (`seedling run --out DIR`, or `seedling export`)
    pub dir: PathBuf,
    /// The small tier: few steps, a quick answer (CI runs it)
    #[arg(long)]
    pub smoke: bool,
    /// No training: score the fact probes with each condition's records in
    /// context on the local engine (minutes, no Python environment needed)
    #[arg(long, conflicts_with_all = ["smoke", "steps", "env", "eval"])]
    pub proxy: bool,
    /// Records shown before each probe by --proxy (1 to 16)
    #[arg(
        long,
        default_value_t = seedling_coordinator::verify::proxy::DEFAULT_SHOTS,
        requires = "proxy",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16)
    )]
    pub shots: usize,
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

/// The engine `verify` runs on this machine (the naive baseline, the proxy,
/// greedy answers): every core unless told otherwise, at most 8 slots.
fn local_engine_config(args: &EngineArgs) -> seedling_worker::engine::EngineConfig {
    let mut config = args.config();
    config.n_threads = threads(args);
    config.n_slots = config.n_slots.clamp(1, 8);
    config
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

/// What every condition shares, however it is verified.
pub struct Prepared {
    started: Instant,
    store: Option<LineageStore>,
    dataset: VerifyDataset,
    probes: Vec<Probe>,
    probes_by_source: BTreeMap<String, usize>,
    /// The model file's name and digest prefix.
    model_identity: String,
    /// `DIR/verify` and the inputs written there.
    out: PathBuf,
    inputs: PathBuf,
    /// The train split with its facts swapped between records.
    perturbed: Vec<TrainRow>,
    perturbed_records: usize,
    /// Asked for (0: no naive condition) and made.
    naive_count: usize,
    naive: Vec<TrainRow>,
    user_baseline: Option<Vec<TrainRow>>,
    user_eval: Option<Vec<TrainRow>>,
}

impl Prepared {
    /// A report of `conditions`, with what every tier fills in the same way.
    fn report(
        &self,
        tier: &str,
        device: String,
        conditions: Vec<ConditionSummary>,
    ) -> VerificationReport {
        VerificationReport {
            dataset_version: self.dataset.version.clone(),
            plan: self.dataset.plan_id.to_string(),
            tier: tier.to_string(),
            created_at: rfc3339_from_unix_ms(now_unix_ms()),
            seconds: self.started.elapsed().as_secs_f64(),
            model: self.model_identity.clone(),
            device,
            training: None,
            shots: None,
            probes: self.probes.len(),
            probes_by_source: self.probes_by_source.clone(),
            test_rows: 0,
            leakage: self.dataset.leakage(),
            coverage: FactCoverage::of(&self.probes, &self.dataset.train),
            naive: (self.naive_count, self.naive.len()),
            perturbed_records: self.perturbed_records,
            comparisons: Vec::new(),
            conditions,
            plots: Vec::new(),
        }
    }
}

fn prepare(args: &VerifyArgs, engine: &mut naive::LocalEngine<'_>) -> anyhow::Result<Prepared> {
    let started = Instant::now();
    let config = args.engine.config();
    seedling_worker::model_file::check_gguf_header(&config.model_path)?;
    let store = open_store(args)?;
    let dataset = VerifyDataset::open(&args.dir, store.as_ref())?;
    let model_digest = seedling_worker::model_file::sha256_file(&config.model_path)?;
    let model_identity = crate::run::model_identity(&config.model_path, &model_digest);
    // The fine-tune is meant for the model that made the data; another one
    // answers another question, so the user hears of it before any work.
    if let Some(store) = &store
        && let Ok((_, generator)) = stored_plan(store, &dataset.plan_id)
        && !generator.contains(&crate::run::digest_tag(&model_digest))
    {
        eprintln!(
            "note: the dataset was generated by {generator}; this verifies {model_identity} (pass --model to verify the model that made it)"
        );
    }
    let user_baseline = args.baseline.as_deref().map(read_pairs).transpose()?;
    let user_eval = args.eval.as_deref().map(read_pairs).transpose()?;

    let out = args.dir.join("verify");
    let inputs = out.join("inputs");
    std::fs::create_dir_all(&inputs).with_context(|| format!("creating {}", inputs.display()))?;

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
    let (perturbed, perturbed_records) = perturb_facts(&dataset.train, dataset.plan.seed);
    // `--naive 0` leaves the naive condition out (a quicker answer when
    // only the dataset's own effect is in question).
    let naive_count = args.naive.unwrap_or(dataset.train.len().max(1));
    let naive = if naive_count == 0 {
        Vec::new()
    } else {
        naive::naive_rows(
            &dataset,
            engine,
            &model_identity,
            naive_count,
            &inputs.join("naive.jsonl"),
        )?
    };
    Ok(Prepared {
        started,
        store,
        dataset,
        probes,
        probes_by_source,
        model_identity,
        out,
        inputs,
        perturbed,
        perturbed_records,
        naive_count,
        naive,
        user_baseline,
        user_eval,
    })
}

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    // A tracking URI that cannot work is refused before hours of training.
    let tracking = args.tracking.target("verify untracked")?;
    // So is a missing training environment, before minutes of naive examples.
    let sidecar = (!args.proxy)
        .then(|| Sidecar::locate(&args.env.clone().unwrap_or_else(default_env)))
        .transpose()?;
    let mut engine = naive::LocalEngine::new(&args.engine);
    let prepared = prepare(&args, &mut engine)?;
    let report = match sidecar {
        None => proxy::run(&args, &prepared, engine.get()?)?,
        Some(sidecar) => {
            // The sidecar loads the model into torch: free llama.cpp's copy
            // (the naive baseline may have started it) first.
            drop(engine);
            finetune::run(&args, &prepared, &sidecar)?
        }
    };
    let report_path = prepared.out.join(report.file_name());
    std::fs::write(&report_path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", report_path.display()))?;

    println!("{}", report.table());
    for line in report.verdicts() {
        println!("{line}");
    }
    println!("{}", report.coverage.sentence());
    if report.training.is_some() {
        println!(
            "test split against train: {} shared records, highest input ROUGE-L {:.2}, {} near duplicates",
            report.leakage.shared_ids,
            report.leakage.max_input_rouge_l,
            report.leakage.near_duplicates
        );
    }
    if let Some(store) = &prepared.store {
        let plan = &prepared.dataset.plan_id;
        let (node, batch) = verification_batch(plan, &report, now_unix_ms());
        store.append(&batch)?;
        store.sync()?;
        seedling_coordinator::dataset::export_dataset(store, plan, &args.dir)?;
        println!(
            "card: {} (section Verification); lineage node {node}",
            args.dir.join("README.md").display()
        );
    }
    let plots = if report.plots.is_empty() {
        String::new()
    } else {
        format!("; plots in {}", prepared.out.display())
    };
    println!(
        "report: {}{plots} ({:.0}s)",
        report_path.display(),
        prepared.started.elapsed().as_secs_f64()
    );
    if let Some(target) = &tracking {
        print_tracking(&track_verification(target, &report, &prepared.out));
    }
    Ok(())
}
