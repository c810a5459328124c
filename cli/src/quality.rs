//! `seedling quality calibrate`: how well the stored quality scores agree
//! with human labels. `seedling quality judge-probe`: how reliable the model
//! judge is on a plan's own glossary (correctness, seeds, length, position).
//! `seedling quality faithfulness-probe`: a judge model and the model-free
//! support check on labelled answers, each against the labels and against
//! each other.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use seedling_common::ids::NodeId;
use seedling_common::lineage::NodeKind;
use seedling_common::time::now_unix_ms;
use seedling_common::work::SupportSpec;
use seedling_coordinator::lineage::LineageStore;
use seedling_coordinator::lineage::{plan_node_id, stored_plan};
use seedling_coordinator::pipeline::plan_id;
use seedling_coordinator::plan::load_plan;
use seedling_coordinator::prompts::{self, Faithfulness};
use seedling_coordinator::quality::calibration::{calibrate, parse_labels};
use seedling_coordinator::quality::faithfulness::{Agreement, Detection};
use seedling_coordinator::quality::judge_probe::{
    probe_calls, probe_items, read_judgements, reliability, reliability_batch,
};
use seedling_worker::engine::Engine;
use seedling_worker::scoring::support::check_support;
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
    /// Measure a judge model (`--model`) and the model-free support check on
    /// answers labelled faithful or not to their sources: precision, recall,
    /// and how often the two agree
    FaithfulnessProbe {
        /// JSONL, one {"input", "response", "label": "pass"|"fail"} per line
        /// ("fail": the answer states something its sources do not back)
        answers: PathBuf,
        /// A text the answers should rest on (repeat for several)
        #[arg(long = "source", required = true)]
        sources: Vec<PathBuf>,
        /// Read only the first N answers
        #[arg(long)]
        limit: Option<usize>,
        /// Print JSON
        #[arg(long)]
        json: bool,
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
        QualityCommand::FaithfulnessProbe {
            answers,
            sources,
            limit,
            json,
            engine,
        } => faithfulness_probe(&answers, &sources, limit, json, &engine),
    }
}

/// One labelled answer of a faithfulness probe.
struct Labelled {
    input: String,
    response: String,
    unfaithful: bool,
}

fn read_labelled(path: &Path, limit: Option<usize>) -> anyhow::Result<Vec<Labelled>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut answers = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let item: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        let field = |name: &str| {
            item[name]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("{}: \"{name}\" must be a string", at()))
        };
        let unfaithful = match field("label")?.as_str() {
            "pass" => false,
            "fail" => true,
            other => anyhow::bail!(
                "{}: label must be \"pass\" or \"fail\", not {other:?}",
                at()
            ),
        };
        answers.push(Labelled {
            input: field("input")?,
            response: field("response")?,
            unfaithful,
        });
    }
    anyhow::ensure!(!answers.is_empty(), "{} holds no answers", path.display());
    answers.truncate(limit.unwrap_or(usize::MAX));
    Ok(answers)
}

fn faithfulness_probe(
    answers: &Path,
    sources: &[PathBuf],
    limit: Option<usize>,
    json: bool,
    engine: &EngineArgs,
) -> anyhow::Result<()> {
    let answers = read_labelled(answers, limit)?;
    let sources = sources
        .iter()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let spec = SupportSpec {
        sources: sources.clone(),
        cross_language: false,
    };
    let engine = Engine::start(engine.config())?;
    let model = engine.info().name.clone();
    eprintln!(
        "faithfulness probe: {} answers, judge model {model}",
        answers.len()
    );
    let requests: Vec<_> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| {
            request_for(
                &prompts::faithfulness(i as u32)
                    .with_sources(&sources)
                    .filled(&a.input, &a.response),
            )
        })
        .collect();
    let replies = engine.generate_all_blocking(requests)?;
    let (mut check, mut judge, mut either) = (
        Detection::default(),
        Detection::default(),
        Detection::default(),
    );
    let (mut agreement, mut unparsed) = (Agreement::default(), 0u64);
    let mut disagreements = Vec::new();
    for (answer, reply) in answers.iter().zip(&replies) {
        let check_rejects = !check_support(&answer.input, &answer.response, &spec, true)
            .rejections
            .is_empty();
        let judge_rejects = match Faithfulness::read(&reply.text) {
            Faithfulness::Supported => false,
            Faithfulness::Unsupported { .. } => true,
            Faithfulness::Unparsed => {
                unparsed += 1;
                continue;
            }
        };
        check.add(answer.unfaithful, check_rejects);
        judge.add(answer.unfaithful, judge_rejects);
        either.add(answer.unfaithful, check_rejects || judge_rejects);
        agreement.add(check_rejects, judge_rejects);
        if check_rejects != judge_rejects {
            disagreements.push(serde_json::json!({
                "label": if answer.unfaithful { "fail" } else { "pass" },
                "response": answer.response,
                "check_rejects": check_rejects,
                "judge": reply.text,
            }));
        }
    }
    let rows = [
        ("support check", &check),
        ("judge model", &judge),
        ("either rejects", &either),
    ];
    if json {
        let figures: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(name, d)| {
                let value = serde_json::json!({
                    "counts": d, "precision": d.precision(), "recall": d.recall(),
                });
                (name.to_string(), value)
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "judge_model": model, "answers": answers.len(), "unparsed": unparsed,
                "detection": figures, "agreement": agreement, "kappa": agreement.kappa(),
                "disagreements": disagreements,
            }))?
        );
        return Ok(());
    }
    let shown = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
    println!(
        "faithfulness on {} labelled answers ({} unparsed), judge model {model}",
        answers.len(),
        unparsed
    );
    println!(
        "  {:<15} {:>9} {:>7} {:>13} {:>8}",
        "", "precision", "recall", "false rejects", "missed"
    );
    for (name, d) in rows {
        println!(
            "  {name:<15} {:>9} {:>7} {:>13} {:>8}",
            shown(d.precision()),
            shown(d.recall()),
            d.false_rejects,
            d.missed
        );
    }
    println!("  agreement: {}", agreement.line());
    Ok(())
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
