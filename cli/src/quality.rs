//! `seedling quality calibrate`: how well the stored quality scores agree
//! with human labels.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use seedling_common::ids::NodeId;
use seedling_common::lineage::NodeKind;
use seedling_coordinator::dataset::stored_plan;
use seedling_coordinator::quality::calibration::{calibrate, parse_labels};

use crate::store::StoreArg;

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
}

pub fn run(command: QualityCommand) -> anyhow::Result<()> {
    let QualityCommand::Calibrate {
        labels,
        store,
        json,
    } = command;
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
