//! The lineage one decided attempt leaves (design section 5.1): its
//! template instance, input calls, the response (the record) with its
//! grounding and citations, the quality decision, and a consistency flag on
//! a duplicate's survivor; written as one atomic batch. Built on any thread
//! from the attempt alone and a context fixed for the run.

use std::collections::BTreeSet;
use std::sync::Arc;

use rayon::prelude::*;
use seedling_common::cost::RunCost;
use seedling_common::embedding::Embedding;
use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{
    Edge, EdgeKind, LineageBatch, Node, NodeKind, NodeStatus, RECORD_VERDICT_STEP,
};
use seedling_common::record::RecordCitation;
use seedling_common::time::now_unix_ms;
use seedling_common::work::UnitResult;

use super::attempt::{Method, PlannedAttempt, stratum_key};
use super::decision::{Decision, NOVELTY_THRESHOLD, combined_score, final_input, is_input_step};
use super::prompts::{self, JUDGE_VERSION};
use crate::plan::{Plan, Stratum};
use crate::quality::consistency::CONSISTENCY_FLAG;

/// Where an accepted response node keeps its input's embedding.
pub(super) const INPUT_EMBEDDING: &str = "input_embedding";

/// The input embedding an accepted response node keeps, if any.
pub fn stored_input_embedding(node: &Node) -> Option<Embedding> {
    node.body
        .get(INPUT_EMBEDDING)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// The attempt's tokens and engine time, kept on its response node.
const COST: &str = "cost";

/// What a stored attempt cost. Attempts stored before costs were kept
/// count their generated tokens only, under stage "other".
pub fn stored_cost(body: &serde_json::Value) -> RunCost {
    if let Some(cost) = body
        .get(COST)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
    {
        return cost;
    }
    let mut cost = RunCost::default();
    if let Some(tokens) = body.get("generated_tokens").and_then(|v| v.as_u64()) {
        cost.stages
            .entry("other".into())
            .or_default()
            .generated_tokens = tokens;
    }
    cost
}

/// The record id of a unit: deterministic in plan and unit, so a result
/// that arrives twice is stored once.
pub fn record_id(plan: &PlanId, unit: &str) -> NodeId {
    NodeId::derive(plan, &[unit, "response"])
}

/// What the lineage of a decided attempt is built from besides the attempt
/// itself: fixed for the life of a run, shared with whichever thread
/// builds it, so the run can go on deciding meanwhile.
#[derive(Debug)]
pub(super) struct LineageContext {
    pub plan: Plan,
    pub plan_id: PlanId,
    pub strata: Vec<Stratum>,
    /// The plan's root node, the origin of every template instance.
    pub plan_node: NodeId,
}

impl LineageContext {
    /// Every node and edge one attempt leaves, in one atomic batch.
    fn attempt_lineage(
        &self,
        planned: &PlannedAttempt,
        result: &UnitResult,
        decision: &Decision,
    ) -> LineageBatch {
        let plan_id = &self.plan_id;
        let mut batch = LineageBatch::default();
        let node_id = |role: &str| NodeId::derive(plan_id, &[&planned.unit, role]);
        let first_ms = result
            .calls
            .first()
            .map(|c| c.started_ms)
            .unwrap_or_else(now_unix_ms);
        let mut node = |id: NodeId,
                        kind: NodeKind,
                        step: &str,
                        at_ms: u64,
                        params: serde_json::Map<String, serde_json::Value>,
                        body: serde_json::Value| {
            batch.nodes.push(Node {
                id,
                plan: plan_id.clone(),
                kind,
                status: NodeStatus::Recorded,
                created_at_ms: at_ms,
                step: step.to_string(),
                params,
                body,
            });
        };
        let stratum = &self.strata[planned.stratum];
        let mut edges = Vec::new();

        // 1. The template instance, or the augmentation request.
        let origin = match (planned.method, &planned.source) {
            (Method::Augmentation(kind), Some(source)) => {
                let id = node_id("augmentation");
                let mut params = serde_json::Map::new();
                params.insert("transform".into(), prompts::augmentation_name(kind).into());
                params.insert("target_stratum".into(), stratum_key(stratum).into());
                node(
                    id.clone(),
                    NodeKind::Augmentation,
                    "augmentation",
                    first_ms,
                    params,
                    serde_json::json!({ "request": planned.instruction, "sampled": planned.sampled }),
                );
                edges.push(Edge::new(source, &id, EdgeKind::DerivedFrom));
                id
            }
            _ => {
                let id = node_id("instance");
                let mut params = serde_json::Map::new();
                params.insert("task_type".into(), stratum.task_type.clone().into());
                params.insert("language".into(), stratum.language.clone().into());
                params.insert("method".into(), planned.method.name().into());
                params.insert("attempt".into(), planned.attempt.into());
                node(
                    id.clone(),
                    NodeKind::TemplateInstance,
                    "template_instantiation",
                    first_ms,
                    params,
                    serde_json::json!({ "text": planned.instruction, "stratum": stratum, "sampled": planned.sampled }),
                );
                edges.push(Edge::new(&self.plan_node, &id, EdgeKind::DerivedFrom));
                for knowledge in &planned.instance_grounding {
                    edges.push(Edge::new(knowledge, &id, EdgeKind::GroundedOn));
                }
                id
            }
        };

        // 2. The input, and its evolution.
        let mut previous = origin;
        let input_steps: Vec<&seedling_common::work::CallOutcome> = result
            .calls
            .iter()
            .filter(|c| is_input_step(planned, &c.step))
            .collect();
        for (i, call) in input_steps.iter().enumerate() {
            let id = node_id(&format!("input{i}"));
            let model_call = if i == 0 {
                Some(&planned.task.input)
            } else {
                planned.task.evolve.as_ref()
            };
            let mut params = model_call.map(|c| c.params()).unwrap_or_default();
            params.insert("worker".into(), result.worker.clone().into());
            if i > 0
                && let Some(op) = planned.evol_operation
            {
                params.insert("operation".into(), op.into());
            }
            node(
                id.clone(),
                NodeKind::GeneratedInput,
                &call.step,
                call.finished_ms,
                params,
                serde_json::json!({
                    "text": call.text,
                    "tokens": call.generated_tokens,
                    "prompt_tokens": call.prompt_tokens,
                    "cost": call.cost,
                }),
            );
            edges.push(Edge::new(&previous, &id, EdgeKind::DerivedFrom));
            if i == 0 {
                for seed in &planned.input_grounding {
                    edges.push(Edge::new(seed, &id, EdgeKind::GroundedOn));
                }
            }
            previous = id;
        }

        // 3. The response: the record.
        let record = record_id(plan_id, &planned.unit);
        let response_call = result
            .calls
            .iter()
            .find(|c| c.step == planned.task.response.step);
        let mut params = planned.task.response.params();
        params.insert("worker".into(), result.worker.clone().into());
        let accepted = decision.reason.is_none();
        let score = result
            .verdict
            .as_ref()
            .map(|v| combined_score(&self.plan, v))
            .unwrap_or(0.0);
        let finished_ms = result
            .calls
            .last()
            .map(|c| c.finished_ms)
            .unwrap_or_else(now_unix_ms);
        let mut body = serde_json::json!({
            "unit": planned.unit,
            "stratum": stratum_key(stratum),
            "stratum_fields": stratum,
            "attempt": planned.attempt,
            "method": planned.method.name(),
            "input": final_input(planned, result),
            "response": response_call.map(|c| c.text.clone()).unwrap_or_default(),
            "finish_reason": response_call.map(|c| c.finish_reason.clone()),
            "quality_score": score,
            "generated_tokens": result.generated_tokens(),
            "decision": if accepted { "accepted" } else { "rejected" },
        });
        if let Some(reason) = &decision.reason {
            body["reason"] = reason.clone().into();
        }
        body[COST] = serde_json::to_value(RunCost::of_result(result)).expect("a cost serialises");
        // Each engine request of the attempt, as the worker accounted it.
        body["calls"] = result
            .calls
            .iter()
            .map(|c| {
                serde_json::json!({
                    "step": c.step,
                    "prompt_tokens": c.prompt_tokens,
                    "generated_tokens": c.generated_tokens,
                    "cost": c.cost,
                })
            })
            .collect();
        let citations = citations(planned, result);
        if !citations.is_empty() {
            body["citations"] = serde_json::to_value(&citations).expect("citations serialise");
        }
        if let Some(error) = &result.error {
            body["error"] = error.clone().into();
        }
        // Kept with accepted records only: a resumed run rebuilds its
        // semantic index, and the card its dispersion, from them.
        if accepted && let Some(embedding) = &result.input_embedding {
            body[INPUT_EMBEDDING] =
                serde_json::to_value(embedding).expect("an embedding serialises");
        }
        batch.nodes.push(Node {
            id: record.clone(),
            plan: plan_id.clone(),
            kind: NodeKind::Response,
            status: if accepted {
                NodeStatus::Accepted
            } else {
                NodeStatus::Rejected
            },
            created_at_ms: response_call.map(|c| c.finished_ms).unwrap_or(finished_ms),
            step: planned.task.response.step.clone(),
            params,
            body,
        });
        edges.push(Edge::new(&previous, &record, EdgeKind::DerivedFrom));
        for grounding in &planned.response_grounding {
            if *grounding != previous {
                edges.push(Edge::new(grounding, &record, EdgeKind::GroundedOn));
            }
        }
        // A cited term or expert answer was in the prompt without an edge.
        let cited: BTreeSet<&NodeId> = result
            .verdict
            .iter()
            .flat_map(|v| &v.citations)
            .filter_map(|c| planned.support_nodes.get(c.source))
            .collect();
        for node in cited {
            if !planned.response_grounding.contains(node) && *node != previous {
                edges.push(Edge::new(node, &record, EdgeKind::GroundedOn));
            }
        }

        // 4. The quality decision about it.
        let judgement = node_id("quality");
        let mut params = serde_json::Map::new();
        params.insert("scorer".into(), "heuristics v1".into());
        if let Some(judge) = &planned.task.judge
            && result.verdict.as_ref().is_some_and(|v| v.judge.is_some())
        {
            params.insert("judge".into(), JUDGE_VERSION.into());
            params.insert("judge_weight".into(), self.plan.quality.judge_weight.into());
            params.insert("judge_sampling".into(), judge.params().into());
        }
        params.insert("min_score".into(), self.plan.quality.min_score.into());
        params.insert("novelty_threshold".into(), NOVELTY_THRESHOLD.into());
        params.insert(
            "near_duplicate_jaccard".into(),
            self.plan.quality.near_duplicate_jaccard.into(),
        );
        if self.plan.quality.semantic_dedup {
            params.insert(
                "semantic_duplicate_cosine".into(),
                self.plan.quality.semantic_duplicate_cosine.into(),
            );
        }
        let kind = if decision.duplicate_of.is_some() {
            NodeKind::DedupDecision
        } else {
            NodeKind::Judgement
        };
        let step = if decision.duplicate_of.is_some() {
            "deduplication"
        } else {
            RECORD_VERDICT_STEP
        };
        batch.nodes.push(Node {
            id: judgement.clone(),
            plan: plan_id.clone(),
            kind,
            status: NodeStatus::Recorded,
            created_at_ms: finished_ms + 1,
            step: step.into(),
            params,
            body: serde_json::json!({
                "decision": if accepted { "accepted" } else { "rejected" },
                "reason": decision.reason,
                "detail": decision.detail,
                "heuristics": result.verdict,
                "duplicate_of": decision.duplicate_of,
            }),
        });
        edges.push(Edge::new(&record, &judgement, EdgeKind::JudgedBy));
        if let Some(survivor) = &decision.duplicate_of {
            edges.push(Edge::new(survivor, &record, EdgeKind::DuplicateOf));
        }
        // 5. A consistency flag on the survivor: `lineage show SURVIVOR` lists it.
        if let (Some(survivor), Some(why)) = (&decision.duplicate_of, &decision.disagrees) {
            let flag = node_id("consistency");
            batch.nodes.push(Node {
                id: flag.clone(),
                plan: plan_id.clone(),
                kind: NodeKind::Judgement,
                status: NodeStatus::Recorded,
                created_at_ms: finished_ms + 2,
                step: "consistency_check".into(),
                params: serde_json::Map::new(),
                body: serde_json::json!({
                    "flag": CONSISTENCY_FLAG,
                    "reason": why,
                    "record": survivor,
                    "second_opinion": record,
                }),
            });
            edges.push(Edge::new(survivor, &flag, EdgeKind::JudgedBy));
            edges.push(Edge::new(&record, &flag, EdgeKind::GroundedOn));
        }
        batch.edges = edges;
        batch
    }
}

/// Decided attempts whose lineage is still to be built ([`Self::build`]),
/// on any thread.
#[derive(Debug)]
pub struct PendingLineage {
    pub(super) context: Arc<LineageContext>,
    pub(super) attempts: Vec<(PlannedAttempt, UnitResult, Decision)>,
}

impl PendingLineage {
    /// Every node and edge the attempts leave, as one batch; the attempts'
    /// parts are built in parallel.
    pub fn build(self) -> LineageBatch {
        let batches: Vec<LineageBatch> = self
            .attempts
            .par_iter()
            .map(|(planned, result, decision)| {
                self.context.attempt_lineage(planned, result, decision)
            })
            .collect();
        let mut group = LineageBatch::default();
        for batch in batches {
            group.extend(batch);
        }
        group
    }

    pub fn is_empty(&self) -> bool {
        self.attempts.is_empty()
    }
}

/// The worker's citations, each naming its source's node and quoting the span.
fn citations(planned: &PlannedAttempt, result: &UnitResult) -> Vec<RecordCitation> {
    let (Some(verdict), Some(support)) = (&result.verdict, &planned.task.checks.support) else {
        return Vec::new();
    };
    verdict
        .citations
        .iter()
        .filter_map(|c| {
            let node = planned.support_nodes.get(c.source)?.clone();
            let text = support.sources.get(c.source)?;
            let quote: String = text.chars().skip(c.start).take(c.end - c.start).collect();
            Some(RecordCitation {
                node: node.to_string(),
                start: c.start,
                end: c.end,
                quote: quote.trim().to_string(),
                facts: c.facts.clone(),
            })
        })
        .collect()
}
