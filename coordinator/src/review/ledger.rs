//! Every review decision of a plan, read from the lineage store, and what
//! they add up to. A decision is a `review_decision` node below the record
//! (`reviewed_by`); an edit adds the corrected record as a new `response`
//! node that `supersedes` the original and derives from the decision; an
//! undo is a decision node of its own below the one it takes back. Nothing
//! is overwritten: only the records' statuses follow the latest decision
//! that stands, so that the export, a resumed run and the index agree.

use std::collections::{BTreeMap, HashMap, HashSet};

use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{Edge, EdgeKind, LineageBatch, Node, NodeKind, NodeStatus};
use seedling_common::time::now_unix_ms;

use super::sample::{SampleSettings, check_rejection};
use super::verdict::{Decision, DecisionError, RejectReason, Verdict};
use crate::lineage::{LineageError, LineageStore};

/// The step of a decision node.
pub const REVIEW_STEP: &str = "human_review";
/// The step of an undo node.
pub const UNDO_STEP: &str = "human_review_undo";
/// The step of a record a reviewer corrected.
pub const REVIEW_EDIT_STEP: &str = "review_edit";
/// The field of a decision node naming the check that had rejected its record.
const CHECK_AUDITED: &str = "rejected_by_check";
/// The rejection reason a reviewed-out record counts under outside the review's own figures.
pub const REJECTED_IN_REVIEW: &str = "rejected_in_review";

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error(transparent)]
    Lineage(#[from] LineageError),
    #[error(transparent)]
    Decision(#[from] DecisionError),
    #[error("plan {0} is not in this lineage store")]
    UnknownPlan(String),
    /// Sample settings no sample can meet.
    #[error("{0}")]
    Settings(String),
    #[error(transparent)]
    Import(#[from] super::session::ImportError),
}

/// One decision as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDecision {
    pub node: NodeId,
    /// The id the client chose.
    pub id: String,
    pub record: NodeId,
    pub reviewer: String,
    pub verdict: Verdict,
    pub note: String,
    pub at_ms: u64,
    /// The corrected record an edit added.
    pub edited: Option<NodeId>,
    /// Taken back by its reviewer.
    pub undone: bool,
    /// The sample the decision was made on.
    pub sample: Option<SampleSettings>,
    /// The automatic check that had rejected the record: the decision
    /// measures that check and leaves the record's status alone.
    pub audit: Option<String>,
}

impl StoredDecision {
    fn from_node(node: &Node, edited_texts: Option<(String, String)>) -> Option<Self> {
        let text = |key: &str| node.body[key].as_str().unwrap_or_default().to_string();
        let verdict = match node.body["decision"].as_str()? {
            "accept" => Verdict::Accept,
            "reject" => Verdict::Reject {
                reason: RejectReason::parse(node.body["reason"].as_str()?)?,
            },
            "edit" => {
                let (input, response) = edited_texts.unwrap_or_default();
                Verdict::Edit { input, response }
            }
            _ => return None,
        };
        Some(Self {
            node: node.id.clone(),
            id: node.params.get("decision_id")?.as_str()?.to_string(),
            record: NodeId::new(text("record")),
            reviewer: node.params.get("reviewer")?.as_str()?.to_string(),
            verdict,
            note: text("note"),
            at_ms: node.created_at_ms,
            edited: node.body["edited_record"].as_str().map(NodeId::new),
            undone: false,
            sample: node
                .params
                .get("sample")
                .and_then(|v| serde_json::from_value(v.clone()).ok()),
            audit: node.body[CHECK_AUDITED].as_str().map(String::from),
        })
    }
}

/// All of a plan's review decisions, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    decisions: Vec<StoredDecision>,
    /// Every record decided about, for [`Self::knows`].
    records: HashSet<NodeId>,
}

/// The statuses `record` and its corrected versions take from `decisions`,
/// the record's own, oldest first: the latest standing one rules. A record
/// a check rejected keeps its status: its decisions measure the check.
fn statuses(record: &NodeId, decisions: &[StoredDecision]) -> Vec<(NodeId, NodeStatus)> {
    if decisions.iter().any(|d| d.audit.is_some()) {
        return Vec::new();
    }
    let effective = decisions.iter().rfind(|d| !d.undone);
    let mut out = vec![(
        record.clone(),
        match effective.map(|d| &d.verdict) {
            None | Some(Verdict::Accept) => NodeStatus::Accepted,
            Some(Verdict::Reject { .. }) => NodeStatus::Rejected,
            Some(Verdict::Edit { .. }) => NodeStatus::Superseded,
        },
    )];
    let chosen = effective.and_then(|d| d.edited.as_ref());
    for edit in decisions.iter().filter_map(|d| d.edited.as_ref()) {
        let status = if Some(edit) == chosen {
            NodeStatus::Accepted
        } else {
            NodeStatus::Rejected
        };
        out.push((edit.clone(), status));
    }
    out
}

/// The node id of a decision: the client's id under its reviewer, so a
/// decision sent twice is stored once.
fn decision_node(plan: &PlanId, reviewer: &str, id: &str) -> NodeId {
    NodeId::derive(plan, &["review", reviewer, id])
}

fn edit_node(plan: &PlanId, reviewer: &str, id: &str) -> NodeId {
    NodeId::derive(plan, &["review-edit", reviewer, id])
}

fn undo_node(plan: &PlanId, decision: &NodeId) -> NodeId {
    NodeId::derive(plan, &["review-undo", decision.as_str()])
}

impl Ledger {
    pub fn load(store: &LineageStore, plan: &PlanId) -> Result<Self, ReviewError> {
        let mut decisions = Vec::new();
        let mut undone = Vec::new();
        for id in store.nodes_of_plan(plan, Some(NodeKind::ReviewDecision), None) {
            let node = store.require(&id?)?;
            if node.step == UNDO_STEP {
                if let Some(target) = node.body["undoes"].as_str() {
                    undone.push(NodeId::new(target));
                }
                continue;
            }
            let edited = match node.body["edited_record"].as_str() {
                Some(edit) => store.node(&NodeId::new(edit))?.map(|n| {
                    let text = |k: &str| n.body[k].as_str().unwrap_or_default().to_string();
                    (text("input"), text("response"))
                }),
                None => None,
            };
            if let Some(decision) = StoredDecision::from_node(&node, edited) {
                decisions.push(decision);
            }
        }
        for target in undone {
            if let Some(d) = decisions.iter_mut().find(|d| d.node == target) {
                d.undone = true;
            }
        }
        decisions.sort_by(|a, b| (a.at_ms, &a.node).cmp(&(b.at_ms, &b.node)));
        let records = decisions.iter().map(|d| d.record.clone()).collect();
        Ok(Self { decisions, records })
    }

    pub fn decisions(&self) -> &[StoredDecision] {
        &self.decisions
    }

    /// Decisions that stand (not undone), oldest first.
    pub fn standing(&self) -> impl Iterator<Item = &StoredDecision> {
        self.decisions.iter().filter(|d| !d.undone)
    }

    /// What counts for a record: its latest standing decision, whoever made it.
    pub fn effective(&self, record: &NodeId) -> Option<&StoredDecision> {
        self.standing().filter(|d| &d.record == record).last()
    }

    /// Every record's latest standing decision.
    pub fn effective_all(&self) -> HashMap<&NodeId, &StoredDecision> {
        let mut out = HashMap::new();
        for d in self.standing() {
            out.insert(&d.record, d);
        }
        out
    }

    /// Each reviewer's latest standing decision per record.
    pub fn by_reviewer(&self) -> BTreeMap<&str, HashMap<&NodeId, &StoredDecision>> {
        let mut out: BTreeMap<&str, HashMap<&NodeId, &StoredDecision>> = BTreeMap::new();
        for d in self.standing() {
            out.entry(d.reviewer.as_str())
                .or_default()
                .insert(&d.record, d);
        }
        out
    }

    /// Whether `record` has ever been decided about.
    pub fn knows(&self, record: &NodeId) -> bool {
        self.records.contains(record)
    }

    /// The sample settings of the latest decision: what the review asked for.
    pub fn settings_in_use(&self) -> Option<&SampleSettings> {
        self.decisions.last().and_then(|d| d.sample.as_ref())
    }

    /// `record`'s own decisions, oldest first.
    fn of_record(&self, record: &NodeId) -> Vec<StoredDecision> {
        self.decisions
            .iter()
            .filter(|d| &d.record == record)
            .cloned()
            .collect()
    }

    /// The decision a reviewer made with client id `id`.
    fn find(&self, reviewer: &str, id: &str) -> Option<&StoredDecision> {
        self.decisions
            .iter()
            .find(|d| d.reviewer == reviewer && d.id == id)
    }

    /// The lineage batch that records `decision` about `original` (its
    /// response node), with the statuses that follow. `Ok(None)` when the
    /// same decision is already stored; a different one under the same id
    /// is refused. The ledger takes the decision in once the caller has
    /// stored the batch ([`Self::committed`]).
    pub fn decide(
        &self,
        original: &Node,
        decision: &Decision,
        sample: &SampleSettings,
    ) -> Result<Option<(LineageBatch, StoredDecision)>, ReviewError> {
        decision.check()?;
        if let Some(existing) = self.find(&decision.reviewer, &decision.id) {
            let same = existing.record == decision.record
                && existing.verdict == decision.verdict
                && existing.note == decision.note;
            return if same {
                Ok(None)
            } else {
                Err(DecisionError::Duplicate(decision.id.clone()).into())
            };
        }
        let audit = check_rejection(original).map(str::to_string);
        if let (Some(check), Verdict::Edit { .. }) = (&audit, &decision.verdict) {
            return Err(DecisionError::EditOfCheckRejected {
                record: original.id.to_string(),
                check: check.clone(),
            }
            .into());
        }
        let plan = &original.plan;
        // Later decisions sort later even within one millisecond.
        let now = now_unix_ms().max(self.decisions.last().map_or(0, |d| d.at_ms + 2));
        let node_id = decision_node(plan, &decision.reviewer, &decision.id);
        let mut batch = LineageBatch::default();
        let mut body = serde_json::json!({
            "record": original.id,
            "decision": decision.verdict.name(),
            "note": decision.note,
        });
        if let Verdict::Reject { reason } = &decision.verdict {
            body["reason"] = reason.as_str().into();
        }
        if let Some(check) = &audit {
            body[CHECK_AUDITED] = check.as_str().into();
        }
        let mut edited = None;
        if let Verdict::Edit { input, response } = &decision.verdict {
            let edit = edit_node(plan, &decision.reviewer, &decision.id);
            body["edited_record"] = edit.as_str().into();
            let mut edit_body = original.body.clone();
            if let Some(fields) = edit_body.as_object_mut() {
                // The embedding described the old input; the figures the
                // worker measured no longer describe these texts.
                for stale in [
                    "input_embedding",
                    "citations",
                    "cost",
                    "calls",
                    "finish_reason",
                ] {
                    fields.remove(stale);
                }
            }
            edit_body["input"] = input.clone().into();
            edit_body["response"] = response.clone().into();
            edit_body["edited_by"] = decision.reviewer.clone().into();
            edit_body["edited_from"] = original.id.as_str().into();
            let mut params = serde_json::Map::new();
            params.insert("reviewer".into(), decision.reviewer.clone().into());
            batch.nodes.push(Node {
                id: edit.clone(),
                plan: plan.clone(),
                kind: NodeKind::Response,
                status: NodeStatus::Accepted,
                created_at_ms: now + 1,
                step: REVIEW_EDIT_STEP.into(),
                params,
                body: edit_body,
            });
            batch
                .edges
                .push(Edge::new(&original.id, &edit, EdgeKind::Supersedes));
            batch
                .edges
                .push(Edge::new(&node_id, &edit, EdgeKind::DerivedFrom));
            edited = Some(edit);
        }
        let mut params = serde_json::Map::new();
        params.insert("reviewer".into(), decision.reviewer.clone().into());
        params.insert("decision_id".into(), decision.id.clone().into());
        // The card states the review's figures for the sample it was made on.
        params.insert(
            "sample".into(),
            serde_json::to_value(sample).expect("settings serialise"),
        );
        batch.nodes.insert(
            0,
            Node {
                id: node_id.clone(),
                plan: plan.clone(),
                kind: NodeKind::ReviewDecision,
                status: NodeStatus::Recorded,
                created_at_ms: now,
                step: REVIEW_STEP.into(),
                params,
                body,
            },
        );
        batch
            .edges
            .insert(0, Edge::new(&original.id, &node_id, EdgeKind::ReviewedBy));
        let stored = StoredDecision {
            node: node_id,
            id: decision.id.clone(),
            record: original.id.clone(),
            reviewer: decision.reviewer.clone(),
            verdict: decision.verdict.clone(),
            note: decision.note.clone(),
            at_ms: now,
            edited,
            undone: false,
            sample: Some(sample.clone()),
            audit,
        };
        let mut own = self.of_record(&original.id);
        own.push(stored.clone());
        batch.status_changes = statuses(&original.id, &own);
        Ok(Some((batch, stored)))
    }

    /// The batch that takes back `reviewer`'s latest standing decision,
    /// the decision's node and its record.
    pub fn undo_last(
        &self,
        plan: &PlanId,
        reviewer: &str,
    ) -> Result<(LineageBatch, NodeId, NodeId), ReviewError> {
        let last = self
            .standing()
            .filter(|d| d.reviewer == reviewer)
            .last()
            .ok_or_else(|| DecisionError::NothingToUndo {
                reviewer: reviewer.to_string(),
            })?;
        let id = undo_node(plan, &last.node);
        let mut params = serde_json::Map::new();
        params.insert("reviewer".into(), reviewer.into());
        let node = Node {
            id: id.clone(),
            plan: plan.clone(),
            kind: NodeKind::ReviewDecision,
            status: NodeStatus::Recorded,
            created_at_ms: now_unix_ms().max(last.at_ms + 1),
            step: UNDO_STEP.into(),
            params,
            body: serde_json::json!({ "record": last.record, "undoes": last.node }),
        };
        let record = last.record.clone();
        let target = last.node.clone();
        let mut own = self.of_record(&record);
        for d in own.iter_mut().filter(|d| d.node == target) {
            d.undone = true;
        }
        let batch = LineageBatch {
            nodes: vec![node],
            edges: vec![
                Edge::new(&target, &id, EdgeKind::ReviewedBy),
                Edge::new(&record, &id, EdgeKind::ReviewedBy),
            ],
            status_changes: statuses(&record, &own),
        };
        Ok((batch, target, record))
    }

    /// Takes in a decision whose batch is now stored.
    pub fn committed(&mut self, decision: StoredDecision) {
        self.records.insert(decision.record.clone());
        self.decisions.push(decision);
    }

    /// Takes in the undo of decision `node`, whose batch is now stored.
    pub fn committed_undo(&mut self, node: &NodeId) {
        for d in self.decisions.iter_mut().filter(|d| &d.node == node) {
            d.undone = true;
        }
    }
}
