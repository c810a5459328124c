//! Key layout of the lineage tree. Everything lives in one sled tree so that
//! one batch (a node, its edges and its index entries) is applied atomically
//! by `Tree::apply_batch`, without a cross-tree transaction. Ids are ASCII and
//! never contain the 0x00 separator.
//!
//! | prefix | key                              | value                                  |
//! |--------|----------------------------------|----------------------------------------|
//! | `N`    | node id                          | the node, its parents, and the children written with it (JSON) |
//! | `C`    | parent id 0x00 child id          | edge kind code: a child added after its parent was written (older stores) |
//! | `C`    | parent id 0x00 0x01 write number | children one append added to a written parent: (kind code, child id, 0x00) each |
//! | `I`    | plan id 0x00 kind status node id | empty (for the nodes [`indexed`] names) |
//!
//! Embedding edges in node values keeps a record (six nodes, eight edges) at
//! about fifteen keys instead of twenty-eight: sled's per-key insert cost,
//! not the bytes, bounds ingest, and its memory grows per key. For the same
//! reason the children one append gives an earlier node (the plan root and
//! the glossary terms gain one per record) share one `C` key per parent, and
//! an attempt's steps and verdict have no index entry (see [`indexed`]):
//! with both, a record is about nine keys.

use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{EdgeKind, NodeKind, NodeStatus, RECORD_VERDICT_STEP};

pub const NODE: u8 = b'N';
pub const CHILD: u8 = b'C';
pub const INDEX: u8 = b'I';
/// Written and removed again to learn whether the disk takes writes (after
/// a failed write); never left in the store.
pub const PROBE: &[u8] = b"P";

pub fn node(id: &NodeId) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.as_str().len());
    key.push(NODE);
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

/// The older single-child `C` key (still read; no longer written).
#[cfg(test)]
pub fn child_edge(parent: &NodeId, child: &NodeId) -> Vec<u8> {
    let mut key = edges_of(CHILD, parent);
    key.extend_from_slice(child.as_str().as_bytes());
    key
}

/// Marks a `C` key whose value lists several children (ids never start with it).
const CHILD_GROUP: u8 = 1;

/// The `C` key of the children that write number `write` gave `parent`.
pub fn child_group(parent: &NodeId, write: u64) -> Vec<u8> {
    let mut key = edges_of(CHILD, parent);
    key.push(CHILD_GROUP);
    key.extend_from_slice(&write.to_be_bytes());
    key
}

/// What a `C` key's value holds: one child (the key names it, the value is
/// its edge kind) or a group (the value names them all).
pub fn late_children(key: &[u8], payload: &[u8]) -> Option<Vec<(EdgeKind, NodeId)>> {
    let sep = key.iter().position(|b| *b == 0)?;
    if key.get(sep + 1) == Some(&CHILD_GROUP) {
        let mut children = Vec::new();
        let mut rest = payload;
        while let Some((&code, tail)) = rest.split_first() {
            let end = tail.iter().position(|b| *b == 0)?;
            let id = std::str::from_utf8(&tail[..end]).ok()?;
            children.push((EdgeKind::from_code(code)?, NodeId::new(id)));
            rest = &tail[end + 1..];
        }
        return Some(children);
    }
    let kind = EdgeKind::from_code(*payload.first()?)?;
    Some(vec![(kind, edge_other_end(key)?)])
}

/// A group's value: (kind code, child id, 0x00) per child.
pub fn child_group_value(children: &[(EdgeKind, NodeId)]) -> Vec<u8> {
    let mut value = Vec::new();
    for (kind, child) in children {
        value.push(kind.code());
        value.extend_from_slice(child.as_str().as_bytes());
        value.push(0);
    }
    value
}

/// Prefix of all `C`/`P` keys of one node.
pub fn edges_of(prefix: u8, id: &NodeId) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + id.as_str().len());
    key.push(prefix);
    key.extend_from_slice(id.as_str().as_bytes());
    key.push(0);
    key
}

/// The id after the separator of an edge key.
pub fn edge_other_end(key: &[u8]) -> Option<NodeId> {
    let sep = key.iter().position(|b| *b == 0)?;
    std::str::from_utf8(&key[sep + 1..]).ok().map(NodeId::new)
}

/// Whether a node of `kind` written by `step` gets an `I` entry. An
/// attempt's intermediate steps (the template instance or augmentation
/// request, the generated inputs) and its decision (the record's verdict, or
/// a duplicate's) are never listed by kind: they are reached through the
/// DAG, below the plan root and the records, which are filed, as are the
/// judgements that are not a record's verdict (probes, consistency flags).
/// Leaving them out saves about two fifths of a record's keys. Stores
/// written before this filed every node; such an entry is still read, and
/// dropped when its node's status changes, so none goes stale.
pub fn indexed(kind: NodeKind, step: &str) -> bool {
    match kind {
        NodeKind::TemplateInstance
        | NodeKind::Augmentation
        | NodeKind::GeneratedInput
        | NodeKind::DedupDecision => false,
        NodeKind::Judgement => step != RECORD_VERDICT_STEP,
        _ => true,
    }
}

pub fn index_prefix(plan: &PlanId, kind: Option<NodeKind>, status: Option<NodeStatus>) -> Vec<u8> {
    let mut key = vec![INDEX];
    key.extend_from_slice(plan.as_str().as_bytes());
    key.push(0);
    if let Some(kind) = kind {
        key.push(kind.code());
        if let Some(status) = status {
            key.push(status.code());
        }
    }
    key
}

pub fn index(plan: &PlanId, kind: NodeKind, status: NodeStatus, id: &NodeId) -> Vec<u8> {
    let mut key = index_prefix(plan, Some(kind), Some(status));
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

/// The node id at the end of an index key.
pub fn index_node(key: &[u8]) -> Option<NodeId> {
    let sep = key.iter().position(|b| *b == 0)?;
    key.get(sep + 3..)
        .and_then(|id| std::str::from_utf8(id).ok())
        .map(NodeId::new)
}

/// A key as text for error messages (ids are ASCII; codes shown as `\xNN`).
pub fn printable(key: &[u8]) -> String {
    key.iter()
        .map(|b| {
            if b.is_ascii_graphic() {
                (*b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_keys_split_back_into_ids() {
        let (a, b) = (NodeId::new("n-aa"), NodeId::new("n-bb"));
        let key = child_edge(&a, &b);
        assert!(key.starts_with(&edges_of(CHILD, &a)));
        assert_eq!(edge_other_end(&key), Some(b));
    }

    #[test]
    fn a_group_key_lists_its_children_and_a_single_key_names_its_own() {
        let parent = NodeId::new("n-root");
        let children = vec![
            (EdgeKind::DerivedFrom, NodeId::new("n-a")),
            (EdgeKind::GroundedOn, NodeId::new("n-bb")),
        ];
        let group = child_group(&parent, 7);
        assert!(group.starts_with(&edges_of(CHILD, &parent)));
        assert!(child_group(&parent, 7) < child_group(&parent, 8));
        let value = child_group_value(&children);
        assert_eq!(late_children(&group, &value), Some(children));
        assert_eq!(late_children(&group, &value[..value.len() - 1]), None);
        let single = child_edge(&parent, &NodeId::new("n-c"));
        assert_eq!(
            late_children(&single, &[EdgeKind::JudgedBy.code()]),
            Some(vec![(EdgeKind::JudgedBy, NodeId::new("n-c"))])
        );
        assert_eq!(late_children(&single, &[0]), None);
    }

    #[test]
    fn index_keys_group_by_plan_kind_status() {
        let plan = PlanId::new("p-1");
        let id = NodeId::new("n-1");
        let key = index(&plan, NodeKind::Response, NodeStatus::Accepted, &id);
        assert!(key.starts_with(&index_prefix(&plan, None, None)));
        assert!(key.starts_with(&index_prefix(&plan, Some(NodeKind::Response), None)));
        assert!(key.starts_with(&index_prefix(
            &plan,
            Some(NodeKind::Response),
            Some(NodeStatus::Accepted)
        )));
        assert!(!key.starts_with(&index_prefix(
            &plan,
            Some(NodeKind::Response),
            Some(NodeStatus::Rejected)
        )));
        // plan "p-1" must not match plan "p-10"
        assert!(
            !index(
                &PlanId::new("p-10"),
                NodeKind::Response,
                NodeStatus::Accepted,
                &id
            )
            .starts_with(&index_prefix(&plan, None, None))
        );
        assert_eq!(index_node(&key), Some(id));
    }
}
