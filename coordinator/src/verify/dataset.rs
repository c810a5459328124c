//! Reading an exported dataset for verification: its manifest, plan and
//! splits, each record's stratum joined from the lineage DAG, and the
//! plan's own knowledge (glossary, rules, reference chunks) for the probes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::NodeKind;
use seedling_common::similarity::{rouge_l, tokens};
use serde::Serialize;

use super::probes::Knowledge;
use super::{TrainRow, VerifyError};
use crate::lineage::LineageStore;
use crate::plan::Plan;

/// A dataset directory as verification sees it.
#[derive(Debug, Clone)]
pub struct VerifyDataset {
    pub dir: PathBuf,
    /// `ds-...` from the manifest: verification results are kept per version.
    pub version: String,
    pub plan_id: PlanId,
    pub plan: Plan,
    pub system_prompt: String,
    pub train: Vec<TrainRow>,
    pub test: Vec<TrainRow>,
}

/// How far the test split is from the train split (it should share nothing).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Leakage {
    /// Test records whose id is also in train (must be 0).
    pub shared_ids: usize,
    /// The highest ROUGE-L between a test input and any train input.
    pub max_input_rouge_l: f64,
    /// Test records with a train input at ROUGE-L >= 0.7 (near duplicates).
    pub near_duplicates: usize,
}

fn unreadable(path: &Path, reason: impl ToString) -> VerifyError {
    VerifyError::Unreadable {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read_split(dir: &Path, split: &str) -> Result<Vec<TrainRow>, VerifyError> {
    let path = dir.join("data").join(format!("{split}.jsonl"));
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| unreadable(&path, e))?;
    let mut rows = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let record: seedling_common::record::Record =
            serde_json::from_str(line).map_err(|e| VerifyError::BadRow {
                path: path.clone(),
                line: i + 1,
                reason: format!("not a Seedling record: {e}"),
            })?;
        rows.push(TrainRow {
            id: record.id,
            input: record.input,
            response: record.response,
            stratum: String::new(),
        });
    }
    Ok(rows)
}

impl VerifyDataset {
    /// Reads `dir`; with a store, each row gets its stratum from its record node.
    pub fn open(dir: &Path, store: Option<&LineageStore>) -> Result<Self, VerifyError> {
        let manifest_path = dir.join("manifest.json");
        if !manifest_path.is_file() {
            return Err(VerifyError::NotADataset {
                dir: dir.to_path_buf(),
            });
        }
        let manifest: serde_json::Value = std::fs::read_to_string(&manifest_path)
            .map_err(|e| unreadable(&manifest_path, e))
            .and_then(|t| serde_json::from_str(&t).map_err(|e| unreadable(&manifest_path, e)))?;
        let field = |name: &str| {
            manifest[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| unreadable(&manifest_path, format!("no \"{name}\"")))
        };
        let version = field("dataset_version")?;
        let plan_id = PlanId::new(field("plan")?);
        let plan_path = dir.join("plan.json");
        let plan: Plan = std::fs::read_to_string(&plan_path)
            .map_err(|e| unreadable(&plan_path, e))
            .and_then(|t| serde_json::from_str(&t).map_err(|e| unreadable(&plan_path, e)))?;
        let mut train = read_split(dir, "train")?;
        let mut test = read_split(dir, "test")?;
        if train.is_empty() {
            let counts = manifest["per_split"].to_string();
            return Err(VerifyError::NoTrainRecords {
                dir: dir.to_path_buf(),
                split: format!("records per split: {counts}"),
            });
        }
        if let Some(store) = store {
            for row in train.iter_mut().chain(test.iter_mut()) {
                if let Some(node) = store.node(&NodeId::new(row.id.clone()))? {
                    row.stratum = node.body["stratum"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                }
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            version,
            plan_id,
            system_prompt: plan.system_prompt(),
            plan,
            train,
            test,
        })
    }

    /// Test against train: shared ids and near-duplicate inputs.
    pub fn leakage(&self) -> Leakage {
        let train_ids: HashSet<&str> = self.train.iter().map(|r| r.id.as_str()).collect();
        let train_tokens: Vec<Vec<String>> = self.train.iter().map(|r| tokens(&r.input)).collect();
        let mut out = Leakage {
            shared_ids: 0,
            max_input_rouge_l: 0.0,
            near_duplicates: 0,
        };
        for row in &self.test {
            if train_ids.contains(row.id.as_str()) {
                out.shared_ids += 1;
            }
            let own = tokens(&row.input);
            let best = train_tokens
                .iter()
                .map(|t| rouge_l(&own, t))
                .fold(0.0, f64::max);
            out.max_input_rouge_l = out.max_input_rouge_l.max(best);
            if best >= 0.7 {
                out.near_duplicates += 1;
            }
        }
        out
    }
}

/// The plan's own knowledge: its glossary and rules (from the plan) and its
/// reference documents' chunks (from the store, which keeps their text).
/// Terms the model proposed during domain analysis are left out: probes
/// come from what the researcher supplied, never from generated text.
pub fn knowledge_of(
    plan: &Plan,
    plan_id: &PlanId,
    store: Option<&LineageStore>,
) -> Result<Knowledge, VerifyError> {
    let mut references = Vec::new();
    if let Some(store) = store {
        for id in store.nodes_of_plan(plan_id, Some(NodeKind::ReferenceChunk), None) {
            let node = store.require(&id?)?;
            if node.step != "domain_knowledge" && !node.step.is_empty() {
                continue;
            }
            let source = node.body["source"].as_str().unwrap_or_default().to_string();
            let index = node.body["index"].as_u64().unwrap_or_default();
            let text = node.body["text"].as_str().unwrap_or_default().to_string();
            references.push((source, index, text));
        }
    }
    references.sort();
    Ok(Knowledge {
        domain: plan.domain.name.clone(),
        glossary: plan
            .glossary
            .iter()
            .map(|g| (g.term.clone(), g.definition.clone()))
            .collect(),
        references: references.into_iter().map(|(s, _, t)| (s, t)).collect(),
        rules: plan.rules.iter().map(|r| r.statement.clone()).collect(),
    })
}
