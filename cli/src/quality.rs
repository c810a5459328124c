//! `seedling quality calibrate`: how well the stored quality scores agree
//! with human labels. `seedling quality judge-probe`: how reliable the model
//! judge is on a plan's own glossary (correctness, seeds, length, position).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use seedling_common::ids::NodeId;
use seedling_common::lineage::NodeKind;
use seedling_common::time::now_unix_ms;
use seedling_coordinator::lineage::LineageStore;
use seedling_coordinator::lineage::{plan_node_id, stored_plan};
use seedling_coordinator::pipeline::plan_id;
use seedling_coordinator::plan::load_plan;
use seedling_coordinator::quality::calibration::{calibrate, parse_labels};
use seedling_coordinator::quality::judge_probe::{
    probe_calls, probe_items, read_judgements, reliability, reliability_batch,
};
use seedling_worker::engine::Engine;
use seedling_worker::unit::request_for;

use crate::EngineArgs;
use crate::store::{StoreArg, store_path};

#[derive(Debug, Subcommand)]
pub enum QualityCommand {
    /// Compare the quality scores of labelled records with their human labels
    Calibrate {
        /// JSONL, one {"id": RECORD_ID, "label": true|false|"good"|"bad"|1-5} per line
        labels: PathBuf,
        #[command(flatten)]
        store: StoreArg,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Measure the model judge on questions built from the plan's glossary:
    /// correct vs contradicting answers, seed agreement, length and position bias
    JudgeProbe {
        /// The plan (its domain, rules and glossary ground the judge)
        plan: PathBuf,
        /// Glossary terms to probe
        #[arg(long, default_value_t = 5)]
        items: usize,
        /// Seeds per answer (self-consistency compares them)
        #[arg(long, default_value_t = 3)]
        seeds: u32,
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// Keep the figures in this run's lineage (a store or `seedling run`
        /// output directory that ran the plan): the card of every later export shows them
        #[arg(long)]
        store: Option<PathBuf>,
        #[command(flatten)]
        engine: EngineArgs,
    },
}

pub fn run(command: QualityCommand) -> anyhow::Result<()> {
    match command {
        QualityCommand::Calibrate {
            labels,
            store,
            json,
        } => run_calibrate(labels, store, json),
        QualityCommand::JudgeProbe {
            plan,
            items,
            seeds,
            json,
            store,
            engine,
        } => judge_probe(&plan, items, seeds, json, store.as_deref(), &engine),
    }
}

fn judge_probe(
    plan_path: &Path,
    items: usize,
    seeds: u32,
    json: bool,
    store: Option<&Path>,
    engine: &EngineArgs,
) -> anyhow::Result<()> {
    anyhow::ensure!(items > 0, "--items must be > 0");
    anyhow::ensure!(seeds > 0, "--seeds must be > 0");
    let plan = load_plan(plan_path)?;
    let probes = probe_items(&plan, items).map_err(anyhow::Error::msg)?;
    // Before the model loads: a store that never ran this plan is a mistake to report now.
    let store = match store {
        Some(dir) => {
            let dir = store_path(dir);
            anyhow::ensure!(dir.exists(), "no lineage store at {}", dir.display());
            let store = LineageStore::open(&dir)?;
            let id = plan_id(&plan);
            anyhow::ensure!(
                store.node(&plan_node_id(&id))?.is_some(),
                "plan {id} ({}) has not run in {}: run it there first",
                plan_path.display(),
                dir.display()
            );
            Some((store, id))
        }
        None => None,
    };
    let engine = Engine::start(engine.config())?;
    let requests: Vec<_> = probe_calls(&plan, &probes, seeds)
        .iter()
        .map(request_for)
        .collect();
    eprintln!(
        "judge probe: {} items from the glossary, {} judge calls",
        probes.len(),
        requests.len()
    );
    let texts = engine
        .generate_all_blocking(requests)?
        .into_iter()
        .map(|g| g.text)
        .collect();
    let (judged, unparsed) = read_judgements(probes.len(), seeds, texts);
    let figures = reliability(&judged);
    if let Some((store, id)) = &store {
        let model = engine.info().name.clone();
        store.append(&reliability_batch(id, &model, &figures, now_unix_ms()))?;
        eprintln!(
            "judge probe: figures kept in the lineage of plan {id}; the next export's card shows them"
        );
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "reliability": figures, "unparsed": unparsed })
            )?
        );
        return Ok(());
    }
    println!(
        "judge reliability on {} glossary items, {} judgements ({} unparsed)",
        figures.items, figures.judgements, unparsed
    );
    println!(
        "  correct beats contradicting: {} of {} (mean margin {:+.3})",
        figures.correct_beats_contradicting, figures.items, figures.correctness_margin
    );
    println!(
        "  seed-to-seed agreement within one point: {:.1}%",
        figures.self_agreement * 100.0
    );
    println!(
        "  length bias (padded minus plain score, 0 is unbiased): {:+.3}",
        figures.length_bias
    );
    println!(
        "  position: same verdict in both orders {:.1}%, first answer chosen {:.1}%, correct answer chosen {:.1}%",
        figures.position_consistency * 100.0,
        figures.first_position_share * 100.0,
        figures.pairwise_accuracy * 100.0
    );
    Ok(())
}

fn run_calibrate(labels: PathBuf, store: StoreArg, json: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&labels)
        .with_context(|| format!("reading {}", labels.display()))?;
    let labels = parse_labels(&labels.display().to_string(), &text).map_err(anyhow::Error::msg)?;
    let store = store.open()?;
    let mut pairs = Vec::new();
    let mut unknown = Vec::new();
    let mut threshold = None;
    for label in &labels {
        match store.node(&NodeId::new(label.id.clone()))? {
            Some(node) if node.kind == NodeKind::Response => {
                if threshold.is_none() {
                    threshold = Some(stored_plan(&store, &node.plan)?.0.quality.min_score);
                }
                let score = node.body["quality_score"].as_f64().unwrap_or(0.0);
                pairs.push((score, label.good));
            }
            _ => unknown.push(label.id.clone()),
        }
    }
    if pairs.is_empty() {
        anyhow::bail!(
            "none of the {} labelled ids is a record in this store",
            labels.len()
        );
    }
    let threshold = threshold.unwrap_or(0.6);
    let report = calibrate(&pairs, threshold);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "calibration": report, "threshold": threshold, "unknown_ids": unknown })
            )?
        );
        return Ok(());
    }
    let show = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "n/a".into());
    println!(
        "{} labelled records ({} good, {} bad); {} ids not found",
        report.labelled,
        report.good,
        report.bad,
        unknown.len()
    );
    println!(
        "  accept threshold {threshold}: agrees with the labels on {:.1}%",
        report.accuracy * 100.0
    );
    println!(
        "  AUC (a good record outscores a bad one): {}",
        show(report.auc)
    );
    println!(
        "  mean quality_score: good {}, bad {}",
        show(report.mean_score_good),
        show(report.mean_score_bad)
    );
    Ok(())
}
