//! The lineage layer's vocabulary: the ids of the nodes every layer names
//! (a plan's root, a unit's record) and the stored values that layers other
//! than the one writing them read back. Kept here, below the pipeline, so
//! that whoever reads lineage (export, review, quality probes) needs nothing
//! from the layer that wrote it.

use seedling_common::cost::RunCost;
use seedling_common::embedding::Embedding;
use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::Node;

use super::{LineageError, LineageStore};
use crate::plan::Plan;

/// The id of a plan's root node, where its plan and generator version live.
pub fn plan_node_id(plan: &PlanId) -> NodeId {
    NodeId::derive(plan, &["plan"])
}

/// Where an accepted response node keeps its input's embedding.
pub const INPUT_EMBEDDING: &str = "input_embedding";

/// The input embedding an accepted response node keeps, if any.
pub fn stored_input_embedding(node: &Node) -> Option<Embedding> {
    node.body
        .get(INPUT_EMBEDDING)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// The attempt's tokens and engine time, kept on its response node.
pub const COST: &str = "cost";

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

/// The plan and version a plan node carries.
pub fn stored_plan(store: &LineageStore, plan: &PlanId) -> Result<(Plan, String), LineageError> {
    let node = store
        .node(&plan_node_id(plan))?
        .ok_or_else(|| LineageError::UnknownPlan(plan.to_string()))?;
    let stored: Plan = serde_json::from_value(node.body["plan"].clone())
        .map_err(|e| LineageError::UnknownPlan(format!("{plan} (unreadable plan: {e})")))?;
    let version = node
        .params
        .get("generator_version")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown")
        .to_string();
    Ok((stored, version))
}
