//! Packaging (design section 4.1, step 8 and 5.1): a plan's accepted records
//! become a dataset directory: splits by lineage group, the section 3.1
//! JSONL, chat formats, Parquet, a dataset card and a manifest with the
//! SHA-256 of every file. Split assignments and the export itself are
//! written into the lineage store first, so every record's trace names the
//! split it landed in and the dataset version that shipped it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use seedling_common::cost::RunCost;
use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{Edge, EdgeKind, LineageBatch, Node, NodeKind, NodeStatus};
use seedling_common::record::{Record, RecordCitations, RecordMetadata};
use seedling_common::time::{now_unix_ms, rfc3339_from_unix_ms};
use seedling_common::work::SUPPORT_REASONS;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::card::{CardFacts, SupportSample, render_card};
use super::formats::{to_alpaca, to_chatml, to_sharegpt};
use super::parquet::write_parquet;
use super::report::diversity_facts;
use super::splits::{Group, Split, assign_splits};
use crate::lineage::{LineageError, LineageStore, PlanGraph};
use crate::lineage::{stored_cost, stored_plan};
use crate::plan::Plan;
use crate::quality::consistency::CONSISTENCY_FLAG;
use crate::quality::faithfulness::JudgedAnswers;
use crate::quality::funnel::funnel;
use crate::quality::judge_probe::{JudgeReliability, RELIABILITY_STEP};
use crate::review::{Ledger, REVIEW_EDIT_STEP, ReviewError, ReviewFigures, stored_review};
use crate::verify::VerificationReport;
use crate::verify::report::PROXY_TIER;

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
    /// A judge model's readings beside the support check, if one read any.
    pub faithfulness: Option<JudgedAnswers>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ManifestEntry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
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
    let mut back: Record = serde_json::from_value(json).map_err(|e| e.to_string())?;
    // Citations travel in a file of their own, not in the record's JSON.
    back.citations.clone_from(&record.citations);
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

/// Each split's citations, beside its records: `citations/SPLIT.jsonl`, a
/// line per record that cites (written only when one does).
const CITATIONS: &str = "citations";

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

/// The newest fine-tuned verification of dataset `version` and its newest
/// proxy, for its card.
fn latest_verifications(
    store: &LineageStore,
    plan: &PlanId,
    version: &str,
) -> Result<Vec<VerificationReport>, ExportError> {
    // Index 0: a fine-tune (smoke or full tier); 1: the proxy.
    let mut latest: [Option<(u64, VerificationReport)>; 2] = [None, None];
    for id in store.nodes_of_plan(plan, Some(NodeKind::Verification), None) {
        let node = store.require(&id?)?;
        if node.params.get("dataset_version").and_then(|v| v.as_str()) != Some(version) {
            continue;
        }
        let Ok(report) = serde_json::from_value::<VerificationReport>(node.body) else {
            continue;
        };
        let slot = &mut latest[usize::from(report.tier == PROXY_TIER)];
        if slot
            .as_ref()
            .is_none_or(|(at, _)| *at <= node.created_at_ms)
        {
            *slot = Some((node.created_at_ms, report));
        }
    }
    Ok(latest.into_iter().flatten().map(|(_, r)| r).collect())
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

/// What the plan's attempts came to: the records accepted, the rest
/// counted by reason, and what making them all cost.
#[derive(Debug)]
struct Attempts {
    /// Oldest first.
    accepted: Vec<Node>,
    rejected: BTreeMap<String, u64>,
    /// The first few the support check rejected, for the card.
    support_rejected: Vec<Node>,
    /// What a judge model said of the answers it read.
    judged: JudgedAnswers,
    /// Generation attempts (a reviewer's correction is not one).
    n_attempts: u64,
    cost: RunCost,
}

impl Attempts {
    fn gather(
        store: &LineageStore,
        plan: &PlanId,
        ledger: Option<&Ledger>,
    ) -> Result<Self, ExportError> {
        let mut attempts = Attempts {
            accepted: Vec::new(),
            rejected: BTreeMap::new(),
            support_rejected: Vec::new(),
            judged: JudgedAnswers::default(),
            n_attempts: 0,
            cost: RunCost::default(),
        };
        for id in store.nodes_of_plan(plan, Some(NodeKind::Response), None) {
            let node = store.require(&id?)?;
            if node.step == REVIEW_EDIT_STEP {
                // A reviewer's correction: in the dataset while its edit stands.
                if node.status == NodeStatus::Accepted {
                    attempts.accepted.push(node);
                }
                continue;
            }
            attempts.n_attempts += 1;
            attempts.cost.add(&stored_cost(&node.body));
            if let Some(read) = node.body.get("faithfulness") {
                attempts.judged.add(read);
            }
            match node.status {
                NodeStatus::Accepted => attempts.accepted.push(node),
                // Its corrected version stands in for it.
                NodeStatus::Superseded => {}
                // Passed the checks, rejected in review: the review section counts it.
                NodeStatus::Rejected if ledger.is_some_and(|l| l.knows(&node.id)) => {}
                _ => attempts.reject(node),
            }
        }
        attempts
            .accepted
            .sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(attempts)
    }

    fn reject(&mut self, node: Node) {
        let reason = node
            .body
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or("unknown");
        *self.rejected.entry(reason.to_string()).or_default() += 1;
        if SUPPORT_REASONS.contains(&reason) && self.support_rejected.len() < SUPPORT_SAMPLES {
            self.support_rejected.push(node);
        }
    }
}

/// What the plan's judgement nodes add to the card.
#[derive(Debug)]
struct Judgements {
    /// (accepted record, why): a paraphrase of its question answered differently.
    consistency_flags: Vec<(String, String)>,
    /// The latest judge reliability probe of the plan, if one ran: (model, figures).
    judge_probe: Option<(String, JudgeReliability)>,
}

impl Judgements {
    fn gather(store: &LineageStore, plan: &PlanId) -> Result<Self, ExportError> {
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
        Ok(Judgements {
            consistency_flags,
            judge_probe: judge_probe.map(|(_, model, figures)| (model, figures)),
        })
    }
}

/// Which split each accepted record lands in: records that share a seed,
/// instance or duplicate cluster form a lineage group, and a group goes to
/// one split, stratified by subdomain.
#[derive(Debug)]
struct SplitAssignment {
    ratios: [f64; 3],
    /// Each member of a lineage group that holds an accepted record, and
    /// the group's name.
    group_of: HashMap<NodeId, String>,
    split_of_group: BTreeMap<String, Split>,
}

impl SplitAssignment {
    fn by_lineage_group(
        store: &LineageStore,
        plan: &PlanId,
        stored: &Plan,
        accepted: &[Node],
    ) -> Result<Self, ExportError> {
        let graph = PlanGraph::load(store, plan)?;
        // A group is named after its smallest accepted record id, which later
        // exports (adding split and export nodes to the group) do not change.
        let accepted_ids: HashSet<&NodeId> = accepted.iter().map(|n| &n.id).collect();
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
        let mut assignment = SplitAssignment {
            ratios: [
                stored.splits.train,
                stored.splits.validation,
                stored.splits.test,
            ],
            group_of,
            split_of_group: BTreeMap::new(),
        };
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        for node in accepted {
            let name = assignment.group(node);
            groups
                .entry(name.clone())
                .or_insert_with(|| Group {
                    id: name,
                    subdomain: node.body["stratum_fields"]["subdomain"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    records: 0,
                })
                .records += 1;
        }
        let groups: Vec<Group> = groups.into_values().collect();
        assignment.split_of_group = assign_splits(&groups, assignment.ratios, stored.seed);
        Ok(assignment)
    }

    /// The name of `node`'s lineage group: a record in none is a group of one.
    fn group(&self, node: &Node) -> String {
        self.group_of
            .get(&node.id)
            .cloned()
            .unwrap_or_else(|| node.id.to_string())
    }

    fn split(&self, node: &Node) -> Split {
        self.split_of_group
            .get(&self.group(node))
            .copied()
            .unwrap_or(Split::Train)
    }
}

/// The version: which records, in which split, made by what.
fn dataset_version(generator_version: &str, accepted: &[Node], splits: &SplitAssignment) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(generator_version.as_bytes());
    for node in accepted {
        hasher.update(node.id.as_str().as_bytes());
        hasher.update(splits.split(node).as_str().as_bytes());
    }
    format!("ds-{}", &hasher.finalize().to_hex()[..16])
}

/// Accepted records per split, every split named (an empty one with 0).
fn count_per_split(accepted: &[Node], splits: &SplitAssignment) -> BTreeMap<String, usize> {
    let mut per_split: BTreeMap<String, usize> = Split::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), 0))
        .collect();
    for node in accepted {
        *per_split
            .entry(splits.split(node).as_str().to_string())
            .or_default() += 1;
    }
    per_split
}

/// The dataset an export ships: the plan and what made it, its version
/// and how many records each split holds.
#[derive(Debug)]
struct Dataset<'a> {
    plan: &'a PlanId,
    stored: &'a Plan,
    generator_version: &'a str,
    version: String,
    per_split: BTreeMap<String, usize>,
}

/// The lineage an export writes before any file: each record's split
/// assignment, and the export node every record points to.
fn export_batch(
    dataset: &Dataset<'_>,
    accepted: &[Node],
    splits: &SplitAssignment,
    now: u64,
) -> LineageBatch {
    let plan = dataset.plan;
    let version = &dataset.version;
    let export_node = NodeId::derive(plan, &["export", version]);
    let mut batch = LineageBatch::default();
    for node in accepted {
        let id = NodeId::derive(plan, &["split", version, node.id.as_str()]);
        let mut params = serde_json::Map::new();
        params.insert("ratios".into(), serde_json::json!(splits.ratios));
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
                "split": splits.split(node).as_str(),
                "group": splits.group_of.get(&node.id),
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
        body: serde_json::json!({ "records": accepted.len(), "per_split": dataset.per_split }),
    });
    batch
}

/// A string field of a response node's body, empty if missing.
fn body_text(node: &Node, key: &str) -> String {
    node.body
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

/// The accepted record `node` in the dataset's schema, its trace read back
/// from the DAG.
fn to_record(
    store: &LineageStore,
    dataset: &Dataset<'_>,
    ledger: Option<&Ledger>,
    node: &Node,
) -> Result<Record, ExportError> {
    let record = Record {
        id: node.id.to_string(),
        created_at: rfc3339_from_unix_ms(node.created_at_ms),
        domain: dataset.stored.domain.name.clone(),
        input: body_text(node, "input"),
        response: body_text(node, "response"),
        metadata: RecordMetadata {
            generation_method: body_text(node, "method"),
            generator_version: dataset.generator_version.to_string(),
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
    Ok(record)
}

/// The records by split, and the tallies the card reports.
#[derive(Debug)]
struct Records {
    by_split: BTreeMap<Split, Vec<Record>>,
    methods: BTreeMap<String, usize>,
    languages: BTreeMap<String, usize>,
    strata: BTreeMap<String, usize>,
    scores: Vec<f64>,
    /// Records that cite a source span.
    cited: usize,
}

impl Records {
    fn build(
        store: &LineageStore,
        dataset: &Dataset<'_>,
        ledger: Option<&Ledger>,
        accepted: &[Node],
        splits: &SplitAssignment,
    ) -> Result<Self, ExportError> {
        let mut records = Records {
            by_split: Split::ALL.iter().map(|s| (*s, Vec::new())).collect(),
            methods: BTreeMap::new(),
            languages: BTreeMap::new(),
            strata: BTreeMap::new(),
            scores: Vec::new(),
            cited: 0,
        };
        for node in accepted {
            let record = to_record(store, dataset, ledger, node)?;
            records.tally(node, &record);
            records
                .by_split
                .entry(splits.split(node))
                .or_default()
                .push(record);
        }
        Ok(records)
    }

    fn tally(&mut self, node: &Node, record: &Record) {
        *self
            .methods
            .entry(record.metadata.generation_method.clone())
            .or_default() += 1;
        let language = node.body["stratum_fields"]["language"]
            .as_str()
            .unwrap_or_default();
        *self.languages.entry(language.to_string()).or_default() += 1;
        *self.strata.entry(body_text(node, "stratum")).or_default() += 1;
        self.scores.push(record.metadata.quality_score);
        self.cited += usize::from(!record.citations.is_empty());
    }
}

/// Writes each split's files: the JSONL formats and Parquet. Returns what
/// it wrote, and the splits it left out for having no records.
fn write_splits(
    out: &Path,
    by_split: &BTreeMap<Split, Vec<Record>>,
    system: &str,
) -> Result<(Vec<ManifestEntry>, Vec<&'static str>), ExportError> {
    let mut files = Vec::new();
    // A split with no records gets no files (loaders such as Hugging Face
    // `datasets` refuse an empty file); the manifest and the card say so,
    // and files an earlier export left for it go.
    let mut omitted = Vec::new();
    for (split, records) in by_split {
        let name = split.as_str();
        if records.is_empty() {
            let stale = JSONL_FORMATS.map(|format| jsonl_file(format, name));
            for rel in stale
                .iter()
                .chain([&parquet_file(name), &jsonl_file(CITATIONS, name)])
            {
                let _ = std::fs::remove_file(out.join(rel));
            }
            omitted.push(name);
            continue;
        }
        let outputs = [
            jsonl(records),
            jsonl(records.iter().map(|r| to_chatml(r, Some(system)))),
            jsonl(records.iter().map(|r| to_sharegpt(r, Some(system)))),
            jsonl(records.iter().map(to_alpaca)),
        ];
        for (format, bytes) in JSONL_FORMATS.into_iter().zip(outputs) {
            files.push(write_file(out, &jsonl_file(format, name), &bytes)?);
        }
        files.push(write_parquet_file(out, name, records)?);
        let cited: Vec<RecordCitations> = records
            .iter()
            .filter(|r| !r.citations.is_empty())
            .map(|r| RecordCitations {
                id: r.id.clone(),
                citations: r.citations.clone(),
            })
            .collect();
        let rel = jsonl_file(CITATIONS, name);
        if cited.is_empty() {
            let _ = std::fs::remove_file(out.join(rel));
        } else {
            files.push(write_file(out, &rel, &jsonl(&cited))?);
        }
    }
    Ok((files, omitted))
}

/// Writes `parquet/SPLIT.parquet` through a temporary file, as `write_file`
/// does for the others.
fn write_parquet_file(
    out: &Path,
    split: &str,
    records: &[Record],
) -> Result<ManifestEntry, ExportError> {
    let rel = parquet_file(split);
    let path = out.join(&rel);
    let fail = |reason: String| ExportError::Write {
        path: path.clone(),
        reason,
    };
    std::fs::create_dir_all(out.join("parquet")).map_err(|e| fail(e.to_string()))?;
    let tmp = path.with_extension("partial");
    write_parquet(&tmp, records).map_err(fail)?;
    std::fs::rename(&tmp, &path).map_err(|e| fail(e.to_string()))?;
    let bytes = std::fs::read(&path).map_err(|e| fail(e.to_string()))?;
    Ok(ManifestEntry {
        path: rel,
        bytes: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
    })
}

/// The dataset card, from what the export gathered, the rejected answers'
/// support verdicts and the newest verification of this version.
fn export_card(
    store: &LineageStore,
    dataset: &Dataset<'_>,
    system: &str,
    attempts: &Attempts,
    judgements: &Judgements,
    records: &Records,
    review: Option<&ReviewFigures>,
) -> Result<String, ExportError> {
    Ok(render_card(&CardFacts {
        plan: dataset.stored,
        plan_id: dataset.plan.as_str(),
        version: &dataset.version,
        generator_version: dataset.generator_version,
        system_prompt: system,
        per_split: &dataset.per_split,
        methods: &records.methods,
        languages: &records.languages,
        strata: &records.strata,
        scores: &records.scores,
        cited: records.cited,
        attempts: attempts.n_attempts,
        cost: &attempts.cost,
        funnel: &funnel(attempts.n_attempts, &attempts.rejected),
        rejected: &attempts.rejected,
        consistency_flags: &judgements.consistency_flags,
        support_samples: &support_samples(store, &attempts.support_rejected)?,
        faithfulness: (!attempts.judged.is_empty()).then_some(&attempts.judged),
        judge_probe: judgements
            .judge_probe
            .as_ref()
            .map(|(model, f)| (model.as_str(), f)),
        diversity: &diversity_facts(dataset.stored, &attempts.accepted),
        verifications: &latest_verifications(store, dataset.plan, &dataset.version)?,
        review,
    }))
}

/// Writes `manifest.json`: what the export holds, with every file's SHA-256.
fn write_manifest(
    out: &Path,
    dataset: &Dataset<'_>,
    n_records: usize,
    omitted: &[&str],
    files: &[ManifestEntry],
) -> Result<(), ExportError> {
    let manifest = serde_json::json!({
        "dataset_version": dataset.version,
        "plan": dataset.plan.as_str(),
        "generator_version": dataset.generator_version,
        "records": n_records,
        "per_split": dataset.per_split,
        "omitted_splits": omitted,
        "files": files,
    });
    write_file(
        out,
        "manifest.json",
        &serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
    )?;
    Ok(())
}

/// Exports plan `plan` from `store` into `out`.
pub fn export_dataset(
    store: &LineageStore,
    plan: &PlanId,
    out: &Path,
) -> Result<ExportSummary, ExportError> {
    let _only_export = lock_export_dir(out)?;
    let (stored, generator_version) = stored_plan(store, plan)?;
    let review = stored_review(store, plan, stored.seed)?;
    let ledger = review.as_ref().map(|(ledger, _)| ledger);
    let attempts = Attempts::gather(store, plan, ledger)?;
    let judgements = Judgements::gather(store, plan)?;
    if attempts.accepted.is_empty() {
        return Err(ExportError::Empty {
            plan: plan.to_string(),
        });
    }
    let accepted = &attempts.accepted;

    let splits = SplitAssignment::by_lineage_group(store, plan, &stored, accepted)?;
    let dataset = Dataset {
        plan,
        stored: &stored,
        generator_version: &generator_version,
        version: dataset_version(&generator_version, accepted, &splits),
        per_split: count_per_split(accepted, &splits),
    };
    // Lineage first: the split decisions and the export, so every record's
    // trace names the split and the version that shipped it.
    store.append(&export_batch(&dataset, accepted, &splits, now_unix_ms()))?;

    let records = Records::build(store, &dataset, ledger, accepted, &splits)?;
    let system = stored.system_prompt();
    let (mut files, omitted) = write_splits(out, &records.by_split, &system)?;
    let plan_json = serde_json::to_vec_pretty(&stored).unwrap_or_default();
    files.push(write_file(out, "plan.json", &plan_json)?);
    let card = export_card(
        store,
        &dataset,
        &system,
        &attempts,
        &judgements,
        &records,
        review.as_ref().map(|(_, figures)| figures),
    )?;
    files.push(write_file(out, "README.md", card.as_bytes())?);
    write_manifest(out, &dataset, accepted.len(), &omitted, &files)?;
    Ok(ExportSummary {
        dir: out.to_path_buf(),
        version: dataset.version,
        records: accepted.len(),
        per_split: dataset.per_split,
        files,
        faithfulness: (!attempts.judged.is_empty()).then(|| attempts.judged.clone()),
    })
}
