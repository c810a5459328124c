//! Synthetic lineage shaped like a real record (for benchmarks and the crash
//! test): a template instance grounded on a glossary term, a generated input,
//! a response, a judgement, a dedup decision and a split assignment: six
//! nodes and eight edges per record, as the pipeline writes them.

use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{
    Edge, EdgeKind, LineageBatch, Node, NodeKind, NodeStatus, RECORD_VERDICT_STEP,
};

const SPLITS: [&str; 3] = ["train", "validation", "test"];

fn node(plan: &PlanId, id: NodeId, kind: NodeKind, step: &str, body: serde_json::Value) -> Node {
    Node {
        id,
        plan: plan.clone(),
        kind,
        status: NodeStatus::Recorded,
        created_at_ms: 1_795_000_000_000,
        step: step.into(),
        params: serde_json::Map::new(),
        body,
    }
}

/// The plan's root node and one glossary term every record is grounded on.
pub fn plan_roots(plan: &PlanId) -> LineageBatch {
    let root = node(
        plan,
        NodeId::derive(plan, &["plan"]),
        NodeKind::Plan,
        "plan_submitted",
        serde_json::json!({}),
    );
    let term = node(
        plan,
        NodeId::derive(plan, &["glossary", "0"]),
        NodeKind::GlossaryTerm,
        "domain_analysis",
        serde_json::json!({"term": "overdraft", "definition": "a negative balance"}),
    );
    let edges = vec![Edge::new(&root.id, &term.id, EdgeKind::DerivedFrom)];
    LineageBatch {
        nodes: vec![root, term],
        edges,
        status_changes: Vec::new(),
    }
}

/// The id of record `idx`'s response node.
pub fn response_id(plan: &PlanId, idx: u64) -> NodeId {
    NodeId::derive(plan, &["unit", &idx.to_string(), "response"])
}

/// Six nodes and eight edges for record `idx` of `plan` (needs [`plan_roots`]).
pub fn record(plan: &PlanId, idx: u64) -> LineageBatch {
    let unit = idx.to_string();
    let id = |role: &str| NodeId::derive(plan, &["unit", &unit, role]);
    let root = NodeId::derive(plan, &["plan"]);
    let term = NodeId::derive(plan, &["glossary", "0"]);
    let template = node(
        plan,
        id("template"),
        NodeKind::TemplateInstance,
        "template_instantiation",
        serde_json::json!({"template": "qa/en", "persona": "retail customer"}),
    );
    let input = node(
        plan,
        id("input"),
        NodeKind::GeneratedInput,
        "diversity_expansion",
        serde_json::json!({"text": format!("Question {idx}: why was my card declined?")}),
    );
    let mut response = node(
        plan,
        id("response"),
        NodeKind::Response,
        "response_generation",
        serde_json::json!({"text": format!("Answer {idx}: your account may be overdrawn.")}),
    );
    response.status = NodeStatus::Accepted;
    let judgement = node(
        plan,
        id("judgement"),
        NodeKind::Judgement,
        RECORD_VERDICT_STEP,
        serde_json::json!({"quality_score": 0.8}),
    );
    let dedup = node(
        plan,
        id("dedup"),
        NodeKind::DedupDecision,
        "deduplication",
        serde_json::json!({"unique": true}),
    );
    let split = node(
        plan,
        id("split"),
        NodeKind::SplitAssignment,
        "packaging",
        serde_json::json!({ "split": SPLITS[(idx % 3) as usize] }),
    );
    let edges = vec![
        Edge::new(&root, &template.id, EdgeKind::DerivedFrom),
        Edge::new(&term, &template.id, EdgeKind::GroundedOn),
        Edge::new(&template.id, &input.id, EdgeKind::DerivedFrom),
        Edge::new(&input.id, &response.id, EdgeKind::DerivedFrom),
        Edge::new(&term, &response.id, EdgeKind::GroundedOn),
        Edge::new(&response.id, &judgement.id, EdgeKind::JudgedBy),
        Edge::new(&response.id, &dedup.id, EdgeKind::DerivedFrom),
        Edge::new(&response.id, &split.id, EdgeKind::AssignedTo),
    ];
    LineageBatch {
        nodes: vec![template, input, response, judgement, dedup, split],
        edges,
        status_changes: Vec::new(),
    }
}

/// Records `first..first + count` in one batch.
pub fn records(plan: &PlanId, first: u64, count: u64) -> LineageBatch {
    let mut batch = LineageBatch::default();
    for idx in first..first + count {
        let one = record(plan, idx);
        batch.nodes.extend(one.nodes);
        batch.edges.extend(one.edges);
    }
    batch
}
