//! The lineage one decided attempt leaves (design section 5.1): its
//! template instance, input calls, the response (the record) with its
//! grounding and citations, the quality decision, and a consistency flag on
//! a duplicate's survivor; written as one atomic batch. Built on any thread
//! from the attempt alone and a context fixed for the run.

use std::collections::BTreeSet;
use std::sync::Arc;

use rayon::prelude::*;
use seedling_common::cost::RunCost;
use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{
    Edge, EdgeKind, LineageBatch, Node, NodeKind, NodeStatus, RECORD_VERDICT_STEP,
};
use seedling_common::record::RecordCitation;
use seedling_common::time::now_unix_ms;
use seedling_common::work::{CallOutcome, UnitResult};

use super::attempt::{Method, PlannedAttempt, stratum_key};
use super::decision::{Decision, NOVELTY_THRESHOLD, combined_score, final_input, is_input_step};
use crate::lineage::{COST, INPUT_EMBEDDING, record_id};
use crate::plan::{AugmentationKind, Plan, Stratum};
use crate::prompts::{self, JUDGE_VERSION};
use crate::quality::consistency::CONSISTENCY_FLAG;
use crate::quality::faithfulness;

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
        let mut lineage = AttemptLineage::new(self, planned, result, decision);
        let origin = lineage.origin();
        let input = lineage.inputs(origin);
        let record = lineage.response(&input);
        lineage.quality_decision(&record);
        lineage.consistency_flag(&record);
        lineage.batch
    }
}

/// One decided attempt's lineage while it is built: what it is built from
/// and the nodes and edges so far, in the order they are stored.
struct AttemptLineage<'a> {
    context: &'a LineageContext,
    planned: &'a PlannedAttempt,
    result: &'a UnitResult,
    decision: &'a Decision,
    stratum: &'a Stratum,
    accepted: bool,
    /// When the attempt's first engine call started (now, if it made none).
    first_ms: u64,
    /// When the attempt's last engine call finished (now, if it made none).
    finished_ms: u64,
    batch: LineageBatch,
}

impl<'a> AttemptLineage<'a> {
    fn new(
        context: &'a LineageContext,
        planned: &'a PlannedAttempt,
        result: &'a UnitResult,
        decision: &'a Decision,
    ) -> Self {
        let first_ms = result
            .calls
            .first()
            .map(|c| c.started_ms)
            .unwrap_or_else(now_unix_ms);
        let finished_ms = result
            .calls
            .last()
            .map(|c| c.finished_ms)
            .unwrap_or_else(now_unix_ms);
        Self {
            context,
            planned,
            result,
            decision,
            stratum: &context.strata[planned.stratum],
            accepted: decision.reason.is_none(),
            first_ms,
            finished_ms,
            batch: LineageBatch::default(),
        }
    }

    /// The id of the attempt's node in `role`.
    fn node_id(&self, role: &str) -> NodeId {
        NodeId::derive(&self.context.plan_id, &[&self.planned.unit, role])
    }

    /// Adds a node with status [`NodeStatus::Recorded`].
    fn recorded(
        &mut self,
        id: NodeId,
        kind: NodeKind,
        step: &str,
        at_ms: u64,
        params: serde_json::Map<String, serde_json::Value>,
        body: serde_json::Value,
    ) {
        self.batch.nodes.push(Node {
            id,
            plan: self.context.plan_id.clone(),
            kind,
            status: NodeStatus::Recorded,
            created_at_ms: at_ms,
            step: step.to_string(),
            params,
            body,
        });
    }

    fn edge(&mut self, parent: &NodeId, child: &NodeId, kind: EdgeKind) {
        self.batch.edges.push(Edge::new(parent, child, kind));
    }

    /// The template instance, or the augmentation request.
    fn origin(&mut self) -> NodeId {
        match (self.planned.method, &self.planned.source) {
            (Method::Augmentation(kind), Some(source)) => self.augmentation(kind, source),
            _ => self.template_instance(),
        }
    }

    fn augmentation(&mut self, kind: AugmentationKind, source: &NodeId) -> NodeId {
        let id = self.node_id("augmentation");
        let mut params = serde_json::Map::new();
        params.insert("transform".into(), prompts::augmentation_name(kind).into());
        params.insert("target_stratum".into(), stratum_key(self.stratum).into());
        let body = serde_json::json!({
            "request": self.planned.instruction,
            "sampled": self.planned.sampled,
        });
        let at_ms = self.first_ms;
        self.recorded(
            id.clone(),
            NodeKind::Augmentation,
            "augmentation",
            at_ms,
            params,
            body,
        );
        self.edge(source, &id, EdgeKind::DerivedFrom);
        id
    }

    fn template_instance(&mut self) -> NodeId {
        let (context, planned, stratum) = (self.context, self.planned, self.stratum);
        let id = self.node_id("instance");
        let mut params = serde_json::Map::new();
        params.insert("task_type".into(), stratum.task_type.clone().into());
        params.insert("language".into(), stratum.language.clone().into());
        params.insert("method".into(), planned.method.name().into());
        params.insert("attempt".into(), planned.attempt.into());
        let body = serde_json::json!({
            "text": planned.instruction,
            "stratum": stratum,
            "sampled": planned.sampled,
        });
        let at_ms = self.first_ms;
        self.recorded(
            id.clone(),
            NodeKind::TemplateInstance,
            "template_instantiation",
            at_ms,
            params,
            body,
        );
        self.edge(&context.plan_node, &id, EdgeKind::DerivedFrom);
        for knowledge in &planned.instance_grounding {
            self.edge(knowledge, &id, EdgeKind::GroundedOn);
        }
        id
    }

    /// The input, and its evolution: one node per input call, each
    /// derived from the one before, starting at `origin`. The last of them
    /// (or `origin`, without input calls).
    fn inputs(&mut self, origin: NodeId) -> NodeId {
        let planned = self.planned;
        let result = self.result;
        let mut previous = origin;
        let input_steps = result
            .calls
            .iter()
            .filter(|c| is_input_step(planned, &c.step));
        for (i, call) in input_steps.enumerate() {
            let id = self.node_id(&format!("input{i}"));
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
            let body = serde_json::json!({
                "text": call.text,
                "tokens": call.generated_tokens,
                "prompt_tokens": call.prompt_tokens,
                "cost": call.cost,
            });
            self.recorded(
                id.clone(),
                NodeKind::GeneratedInput,
                &call.step,
                call.finished_ms,
                params,
                body,
            );
            self.edge(&previous, &id, EdgeKind::DerivedFrom);
            if i == 0 {
                for seed in &planned.input_grounding {
                    self.edge(seed, &id, EdgeKind::GroundedOn);
                }
            }
            previous = id;
        }
        previous
    }

    /// The response: the record, derived from `input`.
    fn response(&mut self, input: &NodeId) -> NodeId {
        let planned = self.planned;
        let record = record_id(&self.context.plan_id, &planned.unit);
        let response_call = self.response_call();
        let mut params = planned.task.response.params();
        params.insert("worker".into(), self.result.worker.clone().into());
        let body = self.response_body();
        self.batch.nodes.push(Node {
            id: record.clone(),
            plan: self.context.plan_id.clone(),
            kind: NodeKind::Response,
            status: if self.accepted {
                NodeStatus::Accepted
            } else {
                NodeStatus::Rejected
            },
            created_at_ms: response_call
                .map(|c| c.finished_ms)
                .unwrap_or(self.finished_ms),
            step: planned.task.response.step.clone(),
            params,
            body,
        });
        self.edge(input, &record, EdgeKind::DerivedFrom);
        self.response_grounding(input, &record);
        record
    }

    fn response_call(&self) -> Option<&'a CallOutcome> {
        let step = &self.planned.task.response.step;
        self.result.calls.iter().find(|c| c.step == *step)
    }

    /// The record itself: its texts, score, decision, cost, engine calls,
    /// citations, error and input embedding.
    fn response_body(&self) -> serde_json::Value {
        let (planned, result, decision) = (self.planned, self.result, self.decision);
        let accepted = self.accepted;
        let response_call = self.response_call();
        let score = result
            .verdict
            .as_ref()
            .map(|v| combined_score(&self.context.plan, v))
            .unwrap_or(0.0);
        let mut body = serde_json::json!({
            "unit": planned.unit,
            "stratum": stratum_key(self.stratum),
            "stratum_fields": self.stratum,
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
        body["calls"] = engine_calls(result);
        if let Some(read) = result.verdict.as_ref().and_then(faithfulness::stored) {
            body["faithfulness"] = read;
        }
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
        body
    }

    /// What the record is grounded on besides `input`: the planned
    /// grounding, then what the response cites.
    fn response_grounding(&mut self, input: &NodeId, record: &NodeId) {
        let planned = self.planned;
        for grounding in &planned.response_grounding {
            if grounding != input {
                self.edge(grounding, record, EdgeKind::GroundedOn);
            }
        }
        // A cited term or expert answer was in the prompt without an edge.
        let cited: BTreeSet<&NodeId> = self
            .result
            .verdict
            .iter()
            .flat_map(|v| &v.citations)
            .filter_map(|c| planned.support_nodes.get(c.source))
            .collect();
        for node in cited {
            if !planned.response_grounding.contains(node) && node != input {
                self.edge(node, record, EdgeKind::GroundedOn);
            }
        }
    }

    /// The quality decision about the record: a judgement, or the
    /// deduplication that found it a duplicate.
    fn quality_decision(&mut self, record: &NodeId) {
        let decision = self.decision;
        let judgement = self.node_id("quality");
        let (kind, step) = if decision.duplicate_of.is_some() {
            (NodeKind::DedupDecision, "deduplication")
        } else {
            (NodeKind::Judgement, RECORD_VERDICT_STEP)
        };
        let params = self.quality_params();
        let body = serde_json::json!({
            "decision": if self.accepted { "accepted" } else { "rejected" },
            "reason": decision.reason,
            "detail": decision.detail,
            "heuristics": self.result.verdict,
            "duplicate_of": decision.duplicate_of,
        });
        let at_ms = self.finished_ms + 1;
        self.recorded(judgement.clone(), kind, step, at_ms, params, body);
        self.edge(record, &judgement, EdgeKind::JudgedBy);
        if let Some(survivor) = &decision.duplicate_of {
            self.edge(survivor, record, EdgeKind::DuplicateOf);
        }
    }

    /// The scorers and thresholds the quality decision was made with.
    fn quality_params(&self) -> serde_json::Map<String, serde_json::Value> {
        let quality = &self.context.plan.quality;
        let mut params = serde_json::Map::new();
        params.insert("scorer".into(), "heuristics v1".into());
        if let Some(judge) = &self.planned.task.judge
            && self
                .result
                .verdict
                .as_ref()
                .is_some_and(|v| v.judge.is_some())
        {
            params.insert("judge".into(), JUDGE_VERSION.into());
            params.insert("judge_weight".into(), quality.judge_weight.into());
            params.insert("judge_sampling".into(), judge.params().into());
        }
        params.insert("min_score".into(), quality.min_score.into());
        params.insert("novelty_threshold".into(), NOVELTY_THRESHOLD.into());
        params.insert(
            "near_duplicate_jaccard".into(),
            quality.near_duplicate_jaccard.into(),
        );
        if quality.semantic_dedup {
            params.insert(
                "semantic_duplicate_cosine".into(),
                quality.semantic_duplicate_cosine.into(),
            );
        }
        params
    }

    /// A consistency flag on the survivor: `lineage show SURVIVOR` lists it.
    fn consistency_flag(&mut self, record: &NodeId) {
        let decision = self.decision;
        let (Some(survivor), Some(why)) = (&decision.duplicate_of, &decision.disagrees) else {
            return;
        };
        let flag = self.node_id("consistency");
        let body = serde_json::json!({
            "flag": CONSISTENCY_FLAG,
            "reason": why,
            "record": survivor,
            "second_opinion": record,
        });
        let at_ms = self.finished_ms + 2;
        self.recorded(
            flag.clone(),
            NodeKind::Judgement,
            "consistency_check",
            at_ms,
            serde_json::Map::new(),
            body,
        );
        self.edge(survivor, &flag, EdgeKind::JudgedBy);
        self.edge(record, &flag, EdgeKind::GroundedOn);
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

/// Each engine request of the attempt, as the worker accounted it.
fn engine_calls(result: &UnitResult) -> serde_json::Value {
    result
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
        .collect()
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
