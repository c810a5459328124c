//! The feedback loop (design 6.2): what a round of human review changes in
//! the next round of the same plan. Per subdomain and task type: rejected
//! records with their reasons become counter-examples in the prompts,
//! accepted and corrected ones become examples, and a group whose
//! acceptance is confidently below the threshold is paused. Each group's
//! change is a `feedback` node derived from the decisions it read, and
//! every attempt planned under it is grounded on it, so a record made after
//! review traces back to the review that changed its prompt. The automatic
//! checks are measured against the same human labels.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{Edge, EdgeKind, LineageBatch, Node, NodeKind, NodeStatus};
use seedling_common::time::now_unix_ms;

use super::ledger::{Ledger, ReviewError};
use super::stats::{Proportion, wilson};
use super::verdict::{RejectReason, Verdict};
use crate::lineage::LineageStore;
use crate::quality::calibration::{Calibration, calibrate};

/// How many rejected and approved records a prompt shows.
const COUNTER_EXAMPLES: usize = 3;
const EXAMPLES: usize = 2;
/// The longest excerpt of a record a prompt quotes.
const EXCERPT_CHARS: usize = 240;

/// When the loop pauses a group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FeedbackSettings {
    /// A group whose acceptance interval lies wholly below this is paused.
    pub pause_below: f64,
    /// Confidence of that interval.
    pub confidence: f64,
    /// Fewest reviewed records before a group may be paused.
    pub minimum_reviewed: usize,
}

impl Default for FeedbackSettings {
    fn default() -> Self {
        Self {
            pause_below: 0.5,
            confidence: 0.95,
            minimum_reviewed: 5,
        }
    }
}

/// A rejected record as a prompt shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterExample {
    pub input: String,
    pub response: String,
    pub reason: RejectReason,
    pub note: String,
}

/// What review says about one subdomain and task type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupFeedback {
    pub subdomain: String,
    pub task_type: String,
    pub reviewed: usize,
    pub kept: usize,
    pub acceptance: (f64, f64, f64),
    pub counter_examples: Vec<CounterExample>,
    /// Approved (input, response) pairs, corrections first.
    pub examples: Vec<(String, String)>,
    pub paused: bool,
    /// The `feedback` node that records this change.
    pub node: NodeId,
    /// The decisions it was drawn from (their nodes), sorted.
    #[serde(skip)]
    pub decisions: Vec<NodeId>,
}

/// What the automatic checks let through that reviewers rejected, and how
/// well the quality score separates what reviewers kept from what they did not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChecksAgainstReview {
    pub reviewed: usize,
    /// Records every check passed and reviewers rejected, by reason: what
    /// the checks missed.
    pub missed: BTreeMap<String, usize>,
    pub quality_score: Calibration,
    /// The judge's overall score, where the judge ran.
    pub judge: Option<Calibration>,
}

/// Everything the next round takes from review.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Feedback {
    pub groups: Vec<GroupFeedback>,
    pub checks: Option<ChecksAgainstReview>,
    /// Every answer reviewers rejected for what it says (its record and
    /// tokens), and the notes the prompts carry (their feedback node): an
    /// answer of the next round that repeats one is rejected.
    pub rejected_answers: Vec<(NodeId, Vec<String>)>,
    /// Every request reviewers rejected as a request (off-domain, poor,
    /// duplicate): a request of the next round that repeats one is rejected.
    pub rejected_inputs: Vec<(NodeId, Vec<String>)>,
}

/// A reviewed record with its standing verdict, the note and the decision node.
type Reviewed = (Node, Verdict, String, NodeId);

fn excerpt(text: &str) -> String {
    let trimmed: String = text.chars().take(EXCERPT_CHARS).collect();
    if trimmed.len() < text.len() {
        format!("{trimmed}...")
    } else {
        trimmed
    }
}

/// Reasons about the request rather than the answer.
fn about_input(reason: RejectReason) -> bool {
    matches!(
        reason,
        RejectReason::OffDomain | RejectReason::PoorInstruction | RejectReason::Duplicate
    )
}

impl GroupFeedback {
    pub fn acceptance(&self) -> Proportion {
        Proportion {
            successes: self.kept,
            total: self.reviewed,
            rate: self.acceptance.0,
            low: self.acceptance.1,
            high: self.acceptance.2,
        }
    }

    /// What the input prompt adds: requests reviewers rejected, and one they approved.
    pub fn input_note(&self) -> Option<String> {
        let rejected: Vec<String> = self
            .counter_examples
            .iter()
            .filter(|c| about_input(c.reason))
            .map(|c| {
                format!(
                    "- \"{}\" ({})",
                    excerpt(&c.input),
                    c.reason.label().to_lowercase()
                )
            })
            .collect();
        if rejected.is_empty() {
            return None;
        }
        let mut note = format!(
            "Reviewers rejected earlier messages like these; write one that avoids their faults:\n{}",
            rejected.join("\n")
        );
        if let Some((input, _)) = self.examples.first() {
            note.push_str(&format!(
                "\nReviewers approved this one: \"{}\"",
                excerpt(input)
            ));
        }
        Some(note)
    }

    /// What the response prompt adds: which requests got answers reviewers
    /// rejected and why (their note says what is right), and one answer they
    /// approved (a correction, where there is one). The rejected answers
    /// themselves are not quoted: a small model shown a wrong answer repeats
    /// it (measured: four of seventeen answers of a feedback round copied a
    /// quoted counter-example nearly word for word).
    pub fn response_note(&self) -> Option<String> {
        let rejected: Vec<String> = self
            .counter_examples
            .iter()
            .filter(|c| !about_input(c.reason))
            .map(|c| {
                let why = if c.note.trim().is_empty() {
                    c.reason.label().to_lowercase()
                } else {
                    format!("{}: {}", c.reason.label().to_lowercase(), excerpt(&c.note))
                };
                format!("- To \"{}\": rejected as {why}", excerpt(&c.input))
            })
            .collect();
        if rejected.is_empty() && self.examples.is_empty() {
            return None;
        }
        let mut note = String::from("Feedback from the domain's reviewers on earlier answers:");
        if !rejected.is_empty() {
            note.push_str("\nRejected; do not repeat these faults:\n");
            note.push_str(&rejected.join("\n"));
        }
        if let Some((input, response)) = self.examples.first() {
            note.push_str(&format!(
                "\nApproved, as a model of a good answer: to \"{}\" the answer \"{}\"",
                excerpt(input),
                excerpt(response)
            ));
        }
        Some(note)
    }
}

impl Feedback {
    /// Reads the plan's review and works out its feedback. Records
    /// reviewers decided are grouped by their subdomain and task type.
    /// `min_score` is the plan's accept threshold, which the checks'
    /// agreement with reviewers is measured at.
    pub fn gather(
        store: &LineageStore,
        plan: &PlanId,
        settings: &FeedbackSettings,
        min_score: f64,
    ) -> Result<Self, ReviewError> {
        let ledger = Ledger::load(store, plan)?;
        let mut groups: BTreeMap<(String, String), Vec<Reviewed>> = BTreeMap::new();
        let mut pairs_score = Vec::new();
        let mut pairs_judge = Vec::new();
        let mut missed: BTreeMap<String, usize> = BTreeMap::new();
        let mut rejected_answers = Vec::new();
        let mut rejected_inputs = Vec::new();
        let mut effective: Vec<_> = ledger.effective_all().into_values().collect();
        effective.sort_by(|a, b| (a.at_ms, &a.node).cmp(&(b.at_ms, &b.node)));
        // A decision on what a check rejected measures the check; it says
        // nothing of the records the plan keeps.
        for decision in effective.into_iter().filter(|d| d.audit.is_none()) {
            let record = store.require(&decision.record)?;
            let field = |k: &str| {
                record.body["stratum_fields"][k]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            };
            let keeps = decision.verdict.keeps();
            if let Some(score) = record.body["quality_score"].as_f64() {
                pairs_score.push((score, keeps));
            }
            if let Some(judge) = judge_score(store, &record)? {
                pairs_judge.push((judge, keeps));
            }
            if let Verdict::Reject { reason } = &decision.verdict {
                *missed.entry(reason.as_str().to_string()).or_default() += 1;
                let (field, list) = if about_input(*reason) {
                    ("input", &mut rejected_inputs)
                } else {
                    ("response", &mut rejected_answers)
                };
                let text = record.body[field].as_str().unwrap_or_default();
                list.push((record.id.clone(), seedling_common::similarity::tokens(text)));
            }
            groups
                .entry((field("subdomain"), field("task_type")))
                .or_default()
                .push((
                    record,
                    decision.verdict.clone(),
                    decision.note.clone(),
                    decision.node.clone(),
                ));
        }
        let mut out = Vec::new();
        for ((subdomain, task_type), decided) in groups {
            let reviewed = decided.len();
            let kept = decided.iter().filter(|(_, v, _, _)| v.keeps()).count();
            let acceptance = wilson(kept, decided.len(), settings.confidence);
            let text = |n: &Node, k: &str| n.body[k].as_str().unwrap_or_default().to_string();
            let mut counter_examples = Vec::new();
            let mut corrections = Vec::new();
            let mut approved = Vec::new();
            // Newest first: the latest review speaks loudest.
            for (record, verdict, note, _) in decided.iter().rev() {
                match verdict {
                    Verdict::Reject { reason } if counter_examples.len() < COUNTER_EXAMPLES => {
                        counter_examples.push(CounterExample {
                            input: text(record, "input"),
                            response: text(record, "response"),
                            reason: *reason,
                            note: note.clone(),
                        });
                    }
                    Verdict::Edit { input, response } => {
                        corrections.push((input.clone(), response.clone()));
                    }
                    Verdict::Accept => {
                        approved.push((text(record, "input"), text(record, "response")))
                    }
                    Verdict::Reject { .. } => {}
                }
            }
            let examples: Vec<(String, String)> = corrections
                .into_iter()
                .chain(approved)
                .take(EXAMPLES)
                .collect();
            let paused = decided.len() >= settings.minimum_reviewed
                && acceptance.high < settings.pause_below;
            let mut decisions: Vec<NodeId> = decided.into_iter().map(|(_, _, _, id)| id).collect();
            decisions.sort_unstable();
            let mut parts = vec!["feedback", subdomain.as_str(), task_type.as_str()];
            parts.extend(decisions.iter().map(NodeId::as_str));
            out.push(GroupFeedback {
                node: NodeId::derive(plan, &parts),
                decisions,
                subdomain,
                task_type,
                reviewed,
                kept,
                acceptance: (acceptance.rate, acceptance.low, acceptance.high),
                counter_examples,
                examples,
                paused,
            });
        }
        let checks = (!pairs_score.is_empty()).then(|| ChecksAgainstReview {
            reviewed: pairs_score.len(),
            missed,
            quality_score: calibrate(&pairs_score, min_score),
            judge: (!pairs_judge.is_empty()).then(|| calibrate(&pairs_judge, min_score)),
        });
        // A small model sometimes answers with the note itself.
        for group in &out {
            for note in [group.input_note(), group.response_note()]
                .into_iter()
                .flatten()
            {
                rejected_answers.push((
                    group.node.clone(),
                    seedling_common::similarity::tokens(&note),
                ));
            }
        }
        Ok(Self {
            groups: out,
            checks,
            rejected_answers,
            rejected_inputs,
        })
    }

    /// The group a stratum of `subdomain` and `task_type` belongs to.
    pub fn for_stratum(&self, subdomain: &str, task_type: &str) -> Option<&GroupFeedback> {
        self.groups
            .iter()
            .find(|g| g.subdomain == subdomain && g.task_type == task_type)
    }

    /// The `feedback` nodes, each derived from the decisions it read.
    pub fn lineage(&self, plan: &PlanId) -> LineageBatch {
        let now = now_unix_ms();
        let mut batch = LineageBatch::default();
        for group in &self.groups {
            let mut body = serde_json::to_value(group).expect("feedback serialises");
            body["note_for_inputs"] = group.input_note().into();
            body["note_for_responses"] = group.response_note().into();
            batch.nodes.push(Node {
                id: group.node.clone(),
                plan: plan.clone(),
                kind: NodeKind::Feedback,
                status: NodeStatus::Recorded,
                created_at_ms: now,
                step: "review_feedback".into(),
                params: serde_json::Map::new(),
                body,
            });
            for decision in &group.decisions {
                batch
                    .edges
                    .push(Edge::new(decision, &group.node, EdgeKind::DerivedFrom));
            }
        }
        batch
    }
}

/// The judge's mean rubric score of a record, scaled to [0, 1], where it ran.
fn judge_score(store: &LineageStore, record: &Node) -> Result<Option<f64>, ReviewError> {
    for (kind, child) in store.children(&record.id)? {
        if kind != EdgeKind::JudgedBy {
            continue;
        }
        let judgement = store.require(&child)?;
        if let Some(judge) = judgement.body["heuristics"].get("judge")
            && let Some(score) = crate::prompts::judge_score(judge)
        {
            return Ok(Some(score));
        }
    }
    Ok(None)
}
