//! Packaging (design section 4.1, step 8 and 5.1): a plan's accepted records
//! become a dataset directory: splits by lineage group, the section 3.1
//! JSONL, chat formats, Parquet, a dataset card and a manifest with the
//! SHA-256 of every file. Split assignments and the export itself are
//! written into the lineage store first, so every record's trace names the
//! split it landed in and the dataset version that shipped it.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use seedling_common::cost::RunCost;
use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{Edge, EdgeKind, LineageBatch, Node, NodeKind, NodeStatus};
use seedling_common::record::{Record, RecordMetadata};
use seedling_common::time::{now_unix_ms, rfc3339_from_unix_ms};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::card::{CardFacts, SupportSample, render_card};
use super::formats::{to_alpaca, to_chatml, to_sharegpt};
use super::parquet::write_parquet;
use super::report::diversity_facts;
use super::splits::{Group, Split, assign_splits};
use crate::lineage::{LineageError, LineageStore, PlanGraph};
use crate::pipeline::{plan_node_id, stored_cost};
use crate::plan::Plan;
use crate::quality::consistency::CONSISTENCY_FLAG;
use crate::quality::funnel::funnel;
use crate::quality::judge_probe::{JudgeReliability, RELIABILITY_STEP};
use crate::review::{Ledger, REVIEW_EDIT_STEP, ReviewError, stored_review};
use crate::verify::VerificationReport;

/// `review_status` of records that passed automatic checks only.
pub const AUTO_APPROVED: &str = "auto_approved";
/// `review_status` of records a reviewer accepted as they were.
pub const HUMAN_ACCEPTED: &str = "human_accepted";
/// `review_status` of records a reviewer corrected.
pub const HUMAN_EDITED: &str = "human_edited";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Lineage(#[from] LineageError),
    #[error(transparent)]
    Review(#[from] ReviewError),
    #[error("plan {0} is not in this lineage store")]
    UnknownPlan(String),
    #[error("plan {plan} has no accepted records to export")]
    Empty { plan: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("record {id} does not conform to the schema: {reason}")]
    Invalid { id: String, reason: String },
    #[error(
        "another export is writing {dir} right now; wait for it to finish or export somewhere else"
    )]
    Busy { dir: PathBuf },
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub dir: PathBuf,
    pub version: String,
    pub records: usize,
    pub per_split: BTreeMap<String, usize>,
    pub files: Vec<ManifestEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ManifestEntry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// The plan and version a plan node carries.
pub fn stored_plan(store: &LineageStore, plan: &PlanId) -> Result<(Plan, String), ExportError> {
    let node = store
        .node(&plan_node_id(plan))?
        .ok_or_else(|| ExportError::UnknownPlan(plan.to_string()))?;
    let stored: Plan = serde_json::from_value(node.body["plan"].clone())
        .map_err(|e| ExportError::UnknownPlan(format!("{plan} (unreadable plan: {e})")))?;
    let version = node
        .params
        .get("generator_version")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown")
        .to_string();
    Ok((stored, version))
}

/// Checks a record against design section 3.1 beyond its types: every field
/// filled, the score in range, a trace that reaches the generation step.
pub fn validate_record(record: &Record) -> Result<(), String> {
    for (field, value) in [
        ("id", &record.id),
        ("created_at", &record.created_at),
        ("domain", &record.domain),
        ("input", &record.input),
        ("response", &record.response),
        (
            "metadata.generation_method",
            &record.metadata.generation_method,
        ),
        (
            "metadata.generator_version",
            &record.metadata.generator_version,
        ),
        ("metadata.review_status", &record.metadata.review_status),
    ] {
        if value.trim().is_empty() {
            return Err(format!("{field} is empty"));
        }
    }
    if !(0.0..=1.0).contains(&record.metadata.quality_score) {
        return Err(format!(
            "metadata.quality_score {} is outside [0, 1]",
            record.metadata.quality_score
        ));
    }
    let steps = record.trace.step_names();
    if !steps
        .iter()
        .any(|s| *s == "response_generation" || *s == "translate_response")
    {
        return Err(format!("trace has no generation step: {steps:?}"));
    }
    if record.trace.parent_id.is_none() {
        return Err("trace.parent_id is missing".into());
    }
    let json = serde_json::to_value(record).map_err(|e| e.to_string())?;
    let back: Record = serde_json::from_value(json).map_err(|e| e.to_string())?;
    if &back != record {
        return Err("does not round-trip through the schema".into());
    }
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Holds `dir` (created if missing) for one export until the handle is
/// dropped: two exports writing one directory at once would interleave
/// their files. An advisory lock on the directory itself, so it leaves no
/// file in the dataset, and it goes with the process: a killed export
/// holds nothing.
pub fn lock_export_dir(dir: &Path) -> Result<std::fs::File, ExportError> {
    let fail = |e: std::io::Error| ExportError::Write {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let handle = std::fs::File::open(dir).map_err(fail)?;
    match handle.try_lock() {
        Ok(()) => Ok(handle),
        Err(std::fs::TryLockError::WouldBlock) => Err(ExportError::Busy {
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(fail(e)),
    }
}

/// Writes `bytes` to `dir/rel` through a temporary file, so a killed export
/// never leaves half a file under the final name.
fn write_file(dir: &Path, rel: &str, bytes: &[u8]) -> Result<ManifestEntry, ExportError> {
    let path = dir.join(rel);
    let fail = |e: std::io::Error| ExportError::Write {
        path: path.clone(),
        reason: e.to_string(),
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let tmp = path.with_extension("partial");
    let mut file = std::fs::File::create(&tmp).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, &path).map_err(fail)?;
    Ok(ManifestEntry {
        path: rel.to_string(),
        bytes: bytes.len() as u64,
        sha256: sha256_hex(bytes),
    })
}

/// The JSONL formats an export writes for each split, in `FORMAT/SPLIT.jsonl`:
/// the record schema, then the chat formats, in the order the export makes them.
const JSONL_FORMATS: [&str; 4] = ["data", "chatml", "sharegpt", "alpaca"];

fn jsonl_file(format: &str, split: &str) -> String {
    format!("{format}/{split}.jsonl")
}

fn parquet_file(split: &str) -> String {
    format!("parquet/{split}.parquet")
}

fn jsonl<T: Serialize>(items: impl IntoIterator<Item = T>) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        out.extend(serde_json::to_vec(&item).unwrap_or_default());
        out.push(b'\n');
    }
    out
}

/// Reasons the support check gives (issue 23); the card shows a sample.
const SUPPORT_REASONS: [&str; 3] = ["unsupported_fact", "contradicts_reference", "no_substance"];
const SUPPORT_SAMPLES: usize = 5;

/// The rejected answers' texts with what the support check said of them,
/// read from each record's quality decision.
fn support_samples(
    store: &LineageStore,
    rejected: &[Node],
) -> Result<Vec<SupportSample>, ExportError> {
    let mut out = Vec::new();
    for node in rejected {
        let reason = node.body["reason"].as_str().unwrap_or_default().to_string();
        let mut detail = String::new();
        for (kind, child) in store.children(&node.id)? {
            if kind != EdgeKind::JudgedBy {
                continue;
            }
            let judgement = store.require(&child)?;
            let found = judgement.body["detail"]["rejections"]
                .as_array()
                .and_then(|all| all.iter().find(|r| r["reason"] == reason.as_str()))
                .cloned();
            if let Some(found) = found {
                detail = ["phrase", "reference", "why"]
                    .iter()
                    .filter_map(|k| found[*k].as_str().map(|v| format!("{k}: {v}")))
                    .collect::<Vec<_>>()
                    .join("; ");
            }
        }
        out.push(SupportSample {
            reason,
            input: node.body["input"].as_str().unwrap_or_default().to_string(),
            response: node.body["response"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            detail,
        });
    }
    Ok(out)
}

/// The newest verification of dataset `version`, for its card.
fn latest_verification(
    store: &LineageStore,
    plan: &PlanId,
    version: &str,
) -> Result<Option<VerificationReport>, ExportError> {
    let mut latest: Option<(u64, VerificationReport)> = None;
    for id in store.nodes_of_plan(plan, Some(NodeKind::Verification), None) {
        let node = store.require(&id?)?;
        if node.params.get("dataset_version").and_then(|v| v.as_str()) != Some(version)
            || latest
                .as_ref()
                .is_some_and(|(at, _)| *at > node.created_at_ms)
        {
            continue;
        }
        if let Ok(report) = serde_json::from_value(node.body) {
            latest = Some((node.created_at_ms, report));
        }
    }
    Ok(latest.map(|(_, report)| report))
}

/// A record's `review_status`: corrected or accepted by a reviewer, or
/// accepted by the automatic checks alone.
fn review_status(ledger: Option<&Ledger>, node: &Node) -> &'static str {
    if node.step == REVIEW_EDIT_STEP {
        HUMAN_EDITED
    } else if ledger.is_some_and(|l| l.effective(&node.id).is_some()) {
        HUMAN_ACCEPTED
    } else {
        AUTO_APPROVED
    }
}

/// The system prompt the chat formats carry (and verification trains with).
pub fn system_prompt(plan: &Plan) -> String {
    format!(
        "You are an expert assistant for {}: {}",
        plan.domain.name, plan.domain.description
    )
}

/// Exports plan `plan` from `store` into `out`.
pub fn export_dataset(
    store: &LineageStore,
    plan: &PlanId,
    out: &Path,
) -> Result<ExportSummary, ExportError> {
    let _only_export = lock_export_dir(out)?;
    let (stored, generator_version) = stored_plan(store, plan)?;
    let mut accepted: Vec<Node> = Vec::new();
    let mut rejected: BTreeMap<String, u64> = BTreeMap::new();
    let mut support_rejected: Vec<Node> = Vec::new();
    let mut attempts = 0u64;
    let mut cost = RunCost::default();
    let review = stored_review(store, plan, stored.seed)?;
    let ledger = review.as_ref().map(|(ledger, _)| ledger);
    for id in store.nodes_of_plan(plan, Some(NodeKind::Response), None) {
        let node = store.require(&id?)?;
        if node.step == REVIEW_EDIT_STEP {
            // A reviewer's correction: in the dataset while its edit stands.
            if node.status == NodeStatus::Accepted {
                accepted.push(node);
            }
            continue;
        }
        attempts += 1;
        cost.add(&stored_cost(&node.body));
        match node.status {
            NodeStatus::Accepted => accepted.push(node),
            // Its corrected version stands in for it.
            NodeStatus::Superseded => {}
            // Passed the checks, rejected in review: the review section counts it.
            NodeStatus::Rejected if ledger.is_some_and(|l| l.knows(&node.id)) => {}
            _ => {
                let reason = node
                    .body
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or("unknown");
                *rejected.entry(reason.to_string()).or_default() += 1;
                if SUPPORT_REASONS.contains(&reason) && support_rejected.len() < SUPPORT_SAMPLES {
                    support_rejected.push(node);
                }
            }
        }
    }
    // Consistency flags on accepted records (a paraphrase answered differently).
    // ...and the latest judge reliability probe of the plan, if one ran.
    let mut consistency_flags: Vec<(String, String)> = Vec::new();
    let mut judge_probe: Option<(u64, String, JudgeReliability)> = None;
    for id in store.nodes_of_plan(plan, Some(NodeKind::Judgement), None) {
        let node = store.require(&id?)?;
        if node.step == RELIABILITY_STEP
            && judge_probe
                .as_ref()
                .is_none_or(|(at, _, _)| node.created_at_ms > *at)
            && let Ok(figures) = serde_json::from_value(node.body.clone())
        {
            let model = node
                .params
                .get("model")
                .and_then(|m| m.as_str())
                .unwrap_or("?");
            judge_probe = Some((node.created_at_ms, model.to_string(), figures));
        }
        if node.body["flag"] == CONSISTENCY_FLAG {
            consistency_flags.push((
                node.body["record"].as_str().unwrap_or_default().to_string(),
                node.body["reason"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    consistency_flags.sort();
    if accepted.is_empty() {
        return Err(ExportError::Empty {
            plan: plan.to_string(),
        });
    }
    accepted.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));

    // Lineage groups: records that share a seed, instance or duplicate cluster.
    let graph = PlanGraph::load(store, plan)?;
    // A group is named after its smallest accepted record id, which later
    // exports (adding split and export nodes to the group) do not change.
    let accepted_ids: std::collections::HashSet<&NodeId> = accepted.iter().map(|n| &n.id).collect();
    let mut group_of: HashMap<NodeId, String> = HashMap::new();
    for group in graph.lineage_groups() {
        let Some(name) = group
            .iter()
            .filter(|id| accepted_ids.contains(id))
            .min()
            .map(|id| id.to_string())
        else {
            continue;
        };
        for id in group {
            group_of.insert(id, name.clone());
        }
    }
    let subdomain = |node: &Node| {
        node.body["stratum_fields"]["subdomain"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for node in &accepted {
        let name = group_of
            .get(&node.id)
            .cloned()
            .unwrap_or_else(|| node.id.to_string());
        groups
            .entry(name.clone())
            .or_insert_with(|| Group {
                id: name,
                subdomain: subdomain(node),
                records: 0,
            })
            .records += 1;
    }
    let groups: Vec<Group> = groups.into_values().collect();
    let ratios = [
        stored.splits.train,
        stored.splits.validation,
        stored.splits.test,
    ];
    let split_of_group = assign_splits(&groups, ratios, stored.seed);
    let split_of = |node: &Node| {
        let group = group_of
            .get(&node.id)
            .cloned()
            .unwrap_or_else(|| node.id.to_string());
        split_of_group.get(&group).copied().unwrap_or(Split::Train)
    };

    // The version: which records, in which split, made by what.
    let mut hasher = blake3::Hasher::new();
    hasher.update(generator_version.as_bytes());
    for node in &accepted {
        hasher.update(node.id.as_str().as_bytes());
        hasher.update(split_of(node).as_str().as_bytes());
    }
    let version = format!("ds-{}", &hasher.finalize().to_hex()[..16]);

    // Lineage first: the split decisions and the export.
    let now = now_unix_ms();
    let export_node = NodeId::derive(plan, &["export", &version]);
    let mut batch = LineageBatch::default();
    let mut per_split: BTreeMap<String, usize> = Split::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), 0))
        .collect();
    for node in &accepted {
        let split = split_of(node);
        *per_split.entry(split.as_str().to_string()).or_default() += 1;
        let id = NodeId::derive(plan, &["split", &version, node.id.as_str()]);
        let mut params = serde_json::Map::new();
        params.insert("ratios".into(), serde_json::json!(ratios));
        params.insert("by".into(), "lineage group, stratified by subdomain".into());
        batch.nodes.push(Node {
            id: id.clone(),
            plan: plan.clone(),
            kind: NodeKind::SplitAssignment,
            status: NodeStatus::Recorded,
            created_at_ms: now,
            step: "split_assignment".into(),
            params,
            body: serde_json::json!({
                "split": split.as_str(),
                "group": group_of.get(&node.id),
                "dataset_version": version,
            }),
        });
        batch
            .edges
            .push(Edge::new(&node.id, &id, EdgeKind::AssignedTo));
        batch
            .edges
            .push(Edge::new(&node.id, &export_node, EdgeKind::ExportedIn));
    }
    let mut params = serde_json::Map::new();
    params.insert("dataset_version".into(), version.clone().into());
    batch.nodes.push(Node {
        id: export_node,
        plan: plan.clone(),
        kind: NodeKind::Export,
        status: NodeStatus::Recorded,
        created_at_ms: now + 1,
        step: "export".into(),
        params,
        body: serde_json::json!({ "records": accepted.len(), "per_split": per_split }),
    });
    store.append(&batch)?;

    // The records, their traces read back from the DAG.
    let mut by_split: BTreeMap<Split, Vec<Record>> =
        Split::ALL.iter().map(|s| (*s, Vec::new())).collect();
    let mut methods: BTreeMap<String, usize> = BTreeMap::new();
    let mut languages: BTreeMap<String, usize> = BTreeMap::new();
    let mut strata: BTreeMap<String, usize> = BTreeMap::new();
    let mut scores = Vec::new();
    let mut cited = 0;
    for node in &accepted {
        let text = |key: &str| {
            node.body
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let record = Record {
            id: node.id.to_string(),
            created_at: rfc3339_from_unix_ms(node.created_at_ms),
            domain: stored.domain.name.clone(),
            input: text("input"),
            response: text("response"),
            metadata: RecordMetadata {
                generation_method: text("method"),
                generator_version: generator_version.clone(),
                quality_score: node
                    .body
                    .get("quality_score")
                    .and_then(|v| v.as_f64())
                    .unwrap_or(0.0),
                review_status: review_status(ledger, node).into(),
            },
            trace: store.record_trace(&node.id)?,
            citations: node
                .body
                .get("citations")
                .and_then(|c| serde_json::from_value(c.clone()).ok())
                .unwrap_or_default(),
        };
        validate_record(&record).map_err(|reason| ExportError::Invalid {
            id: record.id.clone(),
            reason,
        })?;
        *methods
            .entry(record.metadata.generation_method.clone())
            .or_default() += 1;
        let language = node.body["stratum_fields"]["language"]
            .as_str()
            .unwrap_or_default();
        *languages.entry(language.to_string()).or_default() += 1;
        *strata.entry(text("stratum")).or_default() += 1;
        scores.push(record.metadata.quality_score);
        cited += usize::from(!record.citations.is_empty());
        by_split.entry(split_of(node)).or_default().push(record);
    }

    let system = system_prompt(&stored);
    let mut files = Vec::new();
    // A split with no records gets no files (loaders such as Hugging Face
    // `datasets` refuse an empty file); the manifest and the card say so,
    // and files an earlier export left for it go.
    let mut omitted = Vec::new();
    for (split, records) in &by_split {
        let name = split.as_str();
        if records.is_empty() {
            let stale = JSONL_FORMATS.map(|format| jsonl_file(format, name));
            for rel in stale.iter().chain([&parquet_file(name)]) {
                let _ = std::fs::remove_file(out.join(rel));
            }
            omitted.push(name);
            continue;
        }
        let outputs = [
            jsonl(records),
            jsonl(records.iter().map(|r| to_chatml(r, Some(&system)))),
            jsonl(records.iter().map(|r| to_sharegpt(r, Some(&system)))),
            jsonl(records.iter().map(to_alpaca)),
        ];
        for (format, bytes) in JSONL_FORMATS.into_iter().zip(outputs) {
            files.push(write_file(out, &jsonl_file(format, name), &bytes)?);
        }
        let parquet_rel = parquet_file(name);
        let parquet_path = out.join(&parquet_rel);
        let fail = |reason: String| ExportError::Write {
            path: parquet_path.clone(),
            reason,
        };
        std::fs::create_dir_all(out.join("parquet")).map_err(|e| fail(e.to_string()))?;
        let tmp = parquet_path.with_extension("partial");
        write_parquet(&tmp, records).map_err(fail)?;
        std::fs::rename(&tmp, &parquet_path).map_err(|e| fail(e.to_string()))?;
        let bytes = std::fs::read(&parquet_path).map_err(|e| fail(e.to_string()))?;
        files.push(ManifestEntry {
            path: parquet_rel,
            bytes: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        });
    }
    let plan_json = serde_json::to_vec_pretty(&stored).unwrap_or_default();
    files.push(write_file(out, "plan.json", &plan_json)?);
    let card = render_card(&CardFacts {
        plan: &stored,
        plan_id: plan.as_str(),
        version: &version,
        generator_version: &generator_version,
        system_prompt: &system,
        per_split: &per_split,
        methods: &methods,
        languages: &languages,
        strata: &strata,
        scores: &scores,
        cited,
        attempts,
        cost: &cost,
        funnel: &funnel(attempts, &rejected),
        rejected: &rejected,
        consistency_flags: &consistency_flags,
        support_samples: &support_samples(store, &support_rejected)?,
        judge_probe: judge_probe
            .as_ref()
            .map(|(_, model, f)| (model.as_str(), f)),
        diversity: &diversity_facts(&stored, &accepted),
        verification: latest_verification(store, plan, &version)?.as_ref(),
        review: review.as_ref().map(|(_, figures)| figures),
    });
    files.push(write_file(out, "README.md", card.as_bytes())?);
    let manifest = serde_json::json!({
        "dataset_version": version,
        "plan": plan.as_str(),
        "generator_version": generator_version,
        "records": accepted.len(),
        "per_split": per_split,
        "omitted_splits": omitted,
        "files": files,
    });
    write_file(
        out,
        "manifest.json",
        &serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
    )?;
    Ok(ExportSummary {
        dir: out.to_path_buf(),
        version,
        records: accepted.len(),
        per_split,
        files,
    })
}
