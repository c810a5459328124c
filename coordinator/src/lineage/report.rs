//! `lineage show`: one node, everything it came from, everything derived
//! from it and every decision about it, as text or JSON. The CLI prints it
//! for a local store; the coordinator serves it over gRPC.

use std::fmt::Write as _;

use seedling_common::ids::NodeId;
use seedling_common::lineage::{EdgeKind, Node, NodeKind};
use seedling_common::time::rfc3339_from_unix_ms;

use super::{LineageError, LineageStore, Reached, Walk};

fn is_decision(kind: NodeKind) -> bool {
    matches!(
        kind,
        NodeKind::Judgement
            | NodeKind::DedupDecision
            | NodeKind::ReviewDecision
            | NodeKind::SplitAssignment
            | NodeKind::Export
    )
}

fn line(node: &Node) -> String {
    format!(
        "{} {} [{}] status={} at {}",
        node.id,
        node.kind,
        node.step,
        node.status,
        rfc3339_from_unix_ms(node.created_at_ms)
    )
}

/// The report on node `id`, walking `depth` levels each way.
pub fn lineage_report(
    store: &LineageStore,
    id: &NodeId,
    depth: usize,
    json: bool,
) -> Result<String, LineageError> {
    let node = store.require(id)?;
    let walk = Walk {
        max_depth: depth,
        limit: 10_000,
    };
    let load = |reached: &[Reached]| {
        reached
            .iter()
            .map(|r| store.require(&r.id).map(|n| (r.depth, r.via, n)))
            .collect::<Result<Vec<_>, _>>()
    };
    let ancestors = load(&store.ancestors(id, walk)?)?;
    let descendants = load(&store.descendants(id, walk)?)?;
    let current = store.current_version(id)?;
    if json {
        let walk_json = |list: &[(usize, EdgeKind, Node)]| {
            list.iter()
                .map(|(depth, via, node)| serde_json::json!({"depth": depth, "via": via, "node": node}))
                .collect::<Vec<_>>()
        };
        let out = serde_json::json!({
            "node": node,
            "current_version": current,
            "ancestors": walk_json(&ancestors),
            "descendants": walk_json(&descendants),
        });
        return Ok(serde_json::to_string_pretty(&out).expect("JSON values serialise") + "\n");
    }
    let mut out = String::new();
    let w = &mut out;
    // Writing into a String cannot fail.
    let _ = writeln!(w, "{}", line(&node));
    let _ = writeln!(w, "  plan: {}", node.plan);
    if &current != id {
        let _ = writeln!(w, "  superseded; current version: {current}");
    }
    if !node.params.is_empty() {
        let _ = writeln!(
            w,
            "  params: {}",
            serde_json::Value::Object(node.params.clone())
        );
    }
    if !node.body.is_null() {
        let _ = writeln!(w, "  body: {}", node.body);
    }
    let _ = writeln!(w, "ancestors ({}):", ancestors.len());
    for (depth, via, n) in &ancestors {
        let _ = writeln!(w, "  {}{via:<13} {}", "  ".repeat(depth - 1), line(n));
    }
    let _ = writeln!(w, "descendants ({}):", descendants.len());
    for (depth, via, n) in &descendants {
        let _ = writeln!(w, "  {}{via:<13} {}", "  ".repeat(depth - 1), line(n));
    }
    let decisions: Vec<_> = descendants
        .iter()
        .filter(|(_, _, n)| is_decision(n.kind))
        .collect();
    let _ = writeln!(w, "decisions ({}):", decisions.len());
    for (_, via, n) in decisions {
        let _ = writeln!(w, "  {via:<13} {} {}: {}", n.kind, n.id, n.body);
    }
    Ok(out)
}
