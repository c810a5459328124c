//! One plan's review, open on one lineage store: the sample, the ledger of
//! decisions, and the operations the page, the CLI and imports share. Every
//! decision is durable in the store before it is acknowledged; callers that
//! serve several reviewers hold the session behind one lock, so decisions
//! are taken one at a time and none is lost to a race.

use std::sync::Arc;

use serde::Serialize;

use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{EdgeKind, LineageBatch, Node, NodeKind, RECORD_VERDICT_STEP};

use super::figures::{ReviewFigures, review_figures};
use super::ledger::{Ledger, ReviewError, StoredDecision};
use super::sample::{SamplePlan, SampleSettings, check_rejection, plan_sample, population};
use super::verdict::{Decision, DecisionError, check_reviewer};
use crate::lineage::LineageStore;
use crate::lineage::stored_plan;

#[derive(Debug)]
pub struct ReviewSession {
    store: Arc<LineageStore>,
    plan: PlanId,
    domain: String,
    ledger: Ledger,
    sample: SamplePlan,
}

/// What the page shows of one record.
#[derive(Debug, Clone, Serialize)]
pub struct ItemView {
    pub record: NodeId,
    pub stratum: String,
    pub fields: serde_json::Value,
    pub method: String,
    pub input: String,
    pub response: String,
    pub quality_score: Option<f64>,
    pub checks: Vec<Check>,
    pub references: Vec<Reference>,
    pub citations: serde_json::Value,
    /// This reviewer's standing decision, if any.
    pub decision: Option<serde_json::Value>,
    /// Place in the sample, from 1.
    pub position: usize,
    pub sample: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    pub id: NodeId,
    pub kind: String,
    pub text: String,
}

/// What taking a decision did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Taken {
    Stored,
    /// The same decision was already stored (a resend).
    AlreadyStored,
}

/// A decisions file refused: where and why. Nothing of it was stored.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}:{line}: {reason}")]
pub struct ImportError {
    pub source_name: String,
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportSummary {
    pub stored: usize,
    pub already_stored: usize,
}

fn describe(node: &Node) -> String {
    let body = &node.body;
    let s = |k: &str| body[k].as_str().unwrap_or_default();
    match node.kind {
        NodeKind::GlossaryTerm => format!("{}: {}", s("term"), s("definition")),
        NodeKind::Scenario => s("description").to_string(),
        NodeKind::ExpertExample => format!("Q: {}\nA: {}", s("question"), s("answer")),
        NodeKind::BusinessRule => s("statement").to_string(),
        NodeKind::Plan => {
            let domain = &body["plan"]["domain"];
            format!(
                "the domain: {}: {}",
                domain["name"].as_str().unwrap_or_default(),
                domain["description"].as_str().unwrap_or_default()
            )
        }
        _ if !s("text").is_empty() => s("text").to_string(),
        _ => body.to_string(),
    }
}

impl ReviewSession {
    pub fn open(
        store: Arc<LineageStore>,
        plan: PlanId,
        settings: SampleSettings,
    ) -> Result<Self, ReviewError> {
        settings.check().map_err(ReviewError::Settings)?;
        let (stored, _) =
            stored_plan(&store, &plan).map_err(|_| ReviewError::UnknownPlan(plan.to_string()))?;
        let ledger = Ledger::load(&store, &plan)?;
        let sample = choose_sample(&store, &plan, &ledger, stored.seed, &settings)?;
        Ok(Self {
            store,
            plan,
            domain: stored.domain.name,
            ledger,
            sample,
        })
    }

    pub fn plan(&self) -> &PlanId {
        &self.plan
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn sample(&self) -> &SamplePlan {
        &self.sample
    }

    pub fn store(&self) -> &LineageStore {
        &self.store
    }

    pub fn figures(&self) -> ReviewFigures {
        review_figures(&self.sample, &self.ledger)
    }

    /// The next sampled record `reviewer` has not decided, in sample order.
    pub fn next_for(&self, reviewer: &str) -> Option<NodeId> {
        let mine = self.ledger.by_reviewer();
        let mine = mine.get(reviewer);
        self.sample
            .items
            .iter()
            .map(|(id, _)| id)
            .find(|id| mine.is_none_or(|m| !m.contains_key(id)))
            .cloned()
    }

    /// How many sampled records `reviewer` has decided.
    pub fn done_by(&self, reviewer: &str) -> usize {
        self.ledger.by_reviewer().get(reviewer).map_or(0, |m| {
            m.keys()
                .filter(|id| self.sample.position(id).is_some())
                .count()
        })
    }

    fn original(&self, record: &NodeId) -> Result<Node, ReviewError> {
        if self.sample.stratum_of(record).is_none() {
            return Err(DecisionError::UnknownRecord(record.to_string()).into());
        }
        Ok(self.store.require(record)?)
    }

    /// One record as the page shows it to `reviewer`.
    pub fn item(&self, record: &NodeId, reviewer: &str) -> Result<ItemView, ReviewError> {
        let node = self.original(record)?;
        let text = |k: &str| node.body[k].as_str().unwrap_or_default().to_string();
        let mut checks = Vec::new();
        if let Some(check) = check_rejection(&node) {
            checks.push(Check {
                name: "automatic checks".into(),
                value: format!(
                    "REJECTED by {check}: your decision measures that check (accept: the check was wrong) and leaves the dataset as it is"
                ),
            });
        }
        if let Some(score) = node.body["quality_score"].as_f64() {
            checks.push(Check {
                name: "quality score".into(),
                value: format!("{score:.2}"),
            });
        }
        let mut references = Vec::new();
        for (kind, parent) in self.store.parents(record)? {
            if kind != EdgeKind::GroundedOn {
                continue;
            }
            let source = self.store.require(&parent)?;
            if source.kind == NodeKind::Feedback {
                continue; // how review shaped its prompt, not a passage
            }
            references.push(Reference {
                id: parent,
                kind: source.kind.as_str().to_string(),
                text: describe(&source),
            });
        }
        for (kind, child) in self.store.children(record)? {
            if kind != EdgeKind::JudgedBy {
                continue;
            }
            let judgement = self.store.require(&child)?;
            // What the checks found of a record they passed; a rejection
            // is named above.
            if judgement.step != RECORD_VERDICT_STEP || judgement.body["decision"] != "accepted" {
                continue;
            }
            let heuristics = &judgement.body["heuristics"];
            if let Some(score) = heuristics["score"].as_f64() {
                checks.push(Check {
                    name: "heuristic checks".into(),
                    value: format!("passed, score {score:.2}"),
                });
            }
            if let Some(judge) = heuristics["judge"].as_object() {
                let scores: Vec<String> = judge
                    .iter()
                    .filter(|(_, v)| v.is_number())
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                checks.push(Check {
                    name: "judge".into(),
                    value: scores.join(", "),
                });
            }
            if let Some(chrf) = heuristics["back_translation_chrf"].as_f64() {
                checks.push(Check {
                    name: "back-translation chrF".into(),
                    value: format!("{chrf:.1}"),
                });
            }
            checks.push(Check {
                name: "duplicates".into(),
                value: "none found (exact, near, semantic)".into(),
            });
        }
        let citations = node.body["citations"].clone();
        if let Some(n) = citations.as_array().map(Vec::len) {
            checks.push(Check {
                name: "support check".into(),
                value: format!("{n} figure(s) matched to the reference"),
            });
        }
        let decision = self
            .ledger
            .by_reviewer()
            .get(reviewer)
            .and_then(|m| m.get(record).copied())
            .map(decision_json);
        Ok(ItemView {
            record: record.clone(),
            stratum: self
                .sample
                .stratum_of(record)
                .unwrap_or_default()
                .to_string(),
            fields: node.body["stratum_fields"].clone(),
            method: text("method"),
            input: text("input"),
            response: text("response"),
            quality_score: node.body["quality_score"].as_f64(),
            checks,
            references,
            citations,
            decision,
            position: self.sample.position(record).map_or(0, |i| i + 1),
            sample: self.sample.total(),
        })
    }

    /// Stores one decision durably, then counts it.
    pub fn decide(&mut self, decision: &Decision) -> Result<Taken, ReviewError> {
        let original = self.original(&decision.record)?;
        match self
            .ledger
            .decide(&original, decision, &self.sample.settings)?
        {
            None => Ok(Taken::AlreadyStored),
            Some((batch, stored)) => {
                self.store.append_owned(batch)?;
                self.ledger.committed(stored);
                Ok(Taken::Stored)
            }
        }
    }

    /// Takes back `reviewer`'s latest standing decision; returns its record.
    pub fn undo(&mut self, reviewer: &str) -> Result<NodeId, ReviewError> {
        check_reviewer(reviewer)?;
        let (batch, undone, record) = self.ledger.undo_last(&self.plan, reviewer)?;
        self.store.append_owned(batch)?;
        self.ledger.committed_undo(&undone);
        Ok(record)
    }

    /// The sample as JSONL for teams with their own tooling: one line per
    /// record with what a reviewer needs, and the fields a decision line
    /// sends back.
    pub fn export_sample(&self) -> Result<String, ReviewError> {
        let mut out = String::new();
        for (record, stratum) in &self.sample.items {
            let node = self.store.require(record)?;
            let line = serde_json::json!({
                "record": record,
                "plan": self.plan,
                "stratum": stratum,
                "stratum_fields": node.body["stratum_fields"],
                "input": node.body["input"],
                "response": node.body["response"],
                "quality_score": node.body["quality_score"],
                "citations": node.body["citations"],
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
        Ok(out)
    }

    /// Reads decisions (one JSON object per line, as [`Decision`]) and
    /// stores all of them in one write, or none: an unknown record, an
    /// unknown reason, a malformed line or a duplicate (the same id, or the
    /// same reviewer deciding the same record twice in the file) is refused
    /// with its line number.
    pub fn import(&mut self, source_name: &str, text: &str) -> Result<ImportSummary, ReviewError> {
        let refuse = |line: usize, reason: String| -> ReviewError {
            ReviewError::Import(ImportError {
                source_name: source_name.to_string(),
                line,
                reason,
            })
        };
        // Decided against a copy, so a refused file leaves the ledger as it was.
        let mut working = self.ledger.clone();
        let mut batch = LineageBatch::default();
        let mut stored = 0;
        let mut seen_ids = std::collections::HashMap::new();
        let mut seen_pairs = std::collections::HashMap::new();
        let mut already = 0;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value =
                serde_json::from_str(line).map_err(|e| refuse(number, format!("not JSON: {e}")))?;
            let decision = Decision::from_json(value).map_err(|e| refuse(number, e.to_string()))?;
            if let Some(first) =
                seen_ids.insert((decision.reviewer.clone(), decision.id.clone()), number)
            {
                return Err(refuse(
                    number,
                    format!(
                        "decision id {:?} of {} repeats line {first}",
                        decision.id, decision.reviewer
                    ),
                ));
            }
            if let Some(first) =
                seen_pairs.insert((decision.reviewer.clone(), decision.record.clone()), number)
            {
                return Err(refuse(
                    number,
                    format!(
                        "{} already decides record {} on line {first}",
                        decision.reviewer, decision.record
                    ),
                ));
            }
            let original = self
                .original(&decision.record)
                .map_err(|e| refuse(number, e.to_string()))?;
            match working
                .decide(&original, &decision, &self.sample.settings)
                .map_err(|e| refuse(number, e.to_string()))?
            {
                None => already += 1,
                Some((one, decision)) => {
                    batch.extend(one);
                    working.committed(decision);
                    stored += 1;
                }
            }
        }
        if !batch.is_empty() {
            self.store.append_owned(batch)?;
        }
        self.ledger = working;
        Ok(ImportSummary {
            stored,
            already_stored: already,
        })
    }
}

/// The sample `settings` choose among the plan's reviewable records.
fn choose_sample(
    store: &LineageStore,
    plan: &PlanId,
    ledger: &Ledger,
    seed: u64,
    settings: &SampleSettings,
) -> Result<SamplePlan, ReviewError> {
    let candidates: Vec<(NodeId, String)> = population(store, plan, ledger, settings)?
        .iter()
        .map(|node| (node.id.clone(), settings.stratum_of(node)))
        .collect();
    Ok(plan_sample(&candidates, seed, settings))
}

/// What the review of `plan` found so far, on the sample its latest
/// decision was made on; `None` before any decision.
pub fn stored_review(
    store: &LineageStore,
    plan: &PlanId,
    seed: u64,
) -> Result<Option<(Ledger, ReviewFigures)>, ReviewError> {
    let ledger = Ledger::load(store, plan)?;
    let Some(settings) = ledger.settings_in_use() else {
        return Ok(None);
    };
    let sample = choose_sample(store, plan, &ledger, seed, settings)?;
    let figures = review_figures(&sample, &ledger);
    Ok(Some((ledger, figures)))
}

/// A stored decision as the page shows it: the decision as it was sent,
/// with its node and the corrected record an edit added.
pub fn decision_json(d: &StoredDecision) -> serde_json::Value {
    let sent = Decision {
        id: d.id.clone(),
        record: d.record.clone(),
        reviewer: d.reviewer.clone(),
        verdict: d.verdict.clone(),
        note: d.note.clone(),
    };
    let mut out = serde_json::to_value(sent).expect("a decision serialises");
    out["node"] = serde_json::json!(d.node);
    if let Some(edited) = &d.edited {
        out["edited_record"] = serde_json::json!(edited);
    }
    out
}
