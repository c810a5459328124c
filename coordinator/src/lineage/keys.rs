//! Key layout of the lineage tree. Everything lives in one sled tree so that
//! one batch (a node, its edges and its index entries) is applied atomically
//! by `Tree::apply_batch`, without a cross-tree transaction. Ids are ASCII and
//! never contain the 0x00 separator.
//!
//! | prefix | key                              | value                                  |
//! |--------|----------------------------------|----------------------------------------|
//! | `N`    | node id                          | the node, its parents, and the children written with it (JSON) |
//! | `C`    | parent id 0x00 child id          | edge kind code: a child added after its parent was written |
//! | `I`    | plan id 0x00 kind status node id | empty                                  |
//!
//! Embedding edges in node values keeps a record (six nodes, eight edges) at
//! about fifteen keys instead of twenty-eight: sled's per-key insert cost,
//! not the bytes, bounds ingest, and its memory grows per key.

use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{NodeKind, NodeStatus};

pub const NODE: u8 = b'N';
pub const CHILD: u8 = b'C';
pub const INDEX: u8 = b'I';

pub fn node(id: &NodeId) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.as_str().len());
    key.push(NODE);
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

fn pair(prefix: u8, first: &NodeId, second: &NodeId) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + first.as_str().len() + second.as_str().len());
    key.push(prefix);
    key.extend_from_slice(first.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(second.as_str().as_bytes());
    key
}

pub fn child_edge(parent: &NodeId, child: &NodeId) -> Vec<u8> {
    pair(CHILD, parent, child)
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
