//! Analysis of one plan's sub-DAG with petgraph: topological order, lineage
//! groups (what split assignment keeps together), JSON and Graphviz exports.
//! The store is the source of truth; this is a read-only, in-memory view.

use std::collections::HashMap;
use std::fmt::Write as _;

use petgraph::algo::toposort;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::unionfind::UnionFind;
use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{Edge, EdgeKind, Node, NodeKind};

use super::{LineageError, LineageStore};

/// A plan's nodes and the edges among them.
#[derive(Debug)]
pub struct PlanGraph {
    graph: StableDiGraph<Node, EdgeKind>,
    index_of: HashMap<NodeId, NodeIndex>,
}

impl PlanGraph {
    /// Loads every node of `plan` and the edges among them.
    pub fn load(store: &LineageStore, plan: &PlanId) -> Result<Self, LineageError> {
        let (nodes, edges) = store.plan_subgraph(plan)?;
        Ok(Self::from_parts(nodes, &edges))
    }

    pub fn from_parts(mut nodes: Vec<Node>, edges: &[Edge]) -> Self {
        // Inserted in id order, so every order the graph gives (topological,
        // groups) follows from its content, not from the order it was read
        // in: the same record exported twice has the same trace.
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let mut edges: Vec<&Edge> = edges.iter().collect();
        edges.sort_by(|a, b| (&a.parent, &a.child, a.kind).cmp(&(&b.parent, &b.child, b.kind)));
        let mut graph = StableDiGraph::with_capacity(nodes.len(), edges.len());
        let mut index_of = HashMap::with_capacity(nodes.len());
        for node in nodes {
            let id = node.id.clone();
            index_of.insert(id, graph.add_node(node));
        }
        for edge in edges {
            if let (Some(&p), Some(&c)) = (index_of.get(&edge.parent), index_of.get(&edge.child)) {
                graph.add_edge(p, c, edge.kind);
            }
        }
        Self { graph, index_of }
    }

    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    pub fn edge_count(&self) -> usize {
        self.graph.edge_count()
    }

    /// Node ids with every parent before its children.
    pub fn topological_order(&self) -> Result<Vec<NodeId>, LineageError> {
        toposort(&self.graph, None)
            .map(|order| {
                order
                    .into_iter()
                    .map(|i| self.graph[i].id.clone())
                    .collect()
            })
            .map_err(|cycle| LineageError::Cycle {
                parent: self.graph[cycle.node_id()].id.to_string(),
                child: String::new(),
                kind: "?".into(),
            })
    }

    /// Groups of nodes that must share a split: connected through derivation,
    /// duplication, versioning and the decisions about them. Shared grounding
    /// (the plan itself, `grounded_on` knowledge, exports, review feedback
    /// drawn from many records) does not join groups.
    /// Groups are sorted, and listed by their first id.
    pub fn lineage_groups(&self) -> Vec<Vec<NodeId>> {
        let joins = |kind: EdgeKind| !matches!(kind, EdgeKind::GroundedOn | EdgeKind::ExportedIn);
        let shared = |kind: NodeKind| {
            matches!(
                kind,
                NodeKind::Plan | NodeKind::Export | NodeKind::Verification | NodeKind::Feedback
            )
        };
        let bound = self
            .graph
            .node_indices()
            .map(|i| i.index() + 1)
            .max()
            .unwrap_or(0);
        let mut sets = UnionFind::<usize>::new(bound);
        for edge in self.graph.edge_indices() {
            let (p, c) = self.graph.edge_endpoints(edge).expect("edge index is live");
            if joins(self.graph[edge]) && !shared(self.graph[p].kind) && !shared(self.graph[c].kind)
            {
                sets.union(p.index(), c.index());
            }
        }
        let mut groups: HashMap<usize, Vec<NodeId>> = HashMap::new();
        for i in self.graph.node_indices() {
            if !shared(self.graph[i].kind) {
                groups
                    .entry(sets.find(i.index()))
                    .or_default()
                    .push(self.graph[i].id.clone());
            }
        }
        let mut groups: Vec<Vec<NodeId>> = groups
            .into_values()
            .map(|mut g| {
                g.sort();
                g
            })
            .collect();
        groups.sort();
        groups
    }

    /// `{"nodes": [...], "edges": [{"parent", "child", "kind"}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let nodes: Vec<&Node> = self.graph.node_weights().collect();
        let edges: Vec<serde_json::Value> = self
            .graph
            .edge_indices()
            .filter_map(|e| {
                let (p, c) = self.graph.edge_endpoints(e)?;
                Some(serde_json::json!({
                    "parent": self.graph[p].id,
                    "child": self.graph[c].id,
                    "kind": self.graph[e],
                }))
            })
            .collect();
        serde_json::json!({ "nodes": nodes, "edges": edges })
    }

    /// Graphviz DOT, one box per node labelled with its kind and step.
    pub fn to_dot(&self) -> String {
        let mut dot =
            String::from("digraph lineage {\n  rankdir=LR;\n  node [shape=box, fontsize=10];\n");
        for node in self.graph.node_weights() {
            let _ = writeln!(
                dot,
                "  \"{}\" [label=\"{}\\n{}\\n{}\"];",
                node.id, node.kind, node.step, node.status
            );
        }
        for e in self.graph.edge_indices() {
            if let Some((p, c)) = self.graph.edge_endpoints(e) {
                let _ = writeln!(
                    dot,
                    "  \"{}\" -> \"{}\" [label=\"{}\"];",
                    self.graph[p].id, self.graph[c].id, self.graph[e]
                );
            }
        }
        dot.push_str("}\n");
        dot
    }

    pub fn index_of(&self, id: &NodeId) -> Option<NodeIndex> {
        self.index_of.get(id).copied()
    }
}

/// A node on a cycle of the given graph, if it has one.
pub(super) fn find_cycle(
    nodes: impl Iterator<Item = NodeId>,
    edges: &[(NodeId, NodeId)],
) -> Option<NodeId> {
    let mut graph = StableDiGraph::<NodeId, ()>::new();
    let mut index_of = HashMap::new();
    for id in nodes {
        index_of.insert(id.clone(), graph.add_node(id));
    }
    for (parent, child) in edges {
        if let (Some(&p), Some(&c)) = (index_of.get(parent), index_of.get(child)) {
            graph.add_edge(p, c, ());
        }
    }
    toposort(&graph, None)
        .err()
        .map(|cycle| graph[cycle.node_id()].clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lineage::synthetic::{plan_roots, record};
    use seedling_common::ids::PlanId;

    #[test]
    fn the_order_a_graph_gives_does_not_depend_on_the_order_it_was_read_in() {
        let plan = PlanId::new("p-order");
        let mut nodes = plan_roots(&plan).nodes;
        let mut edges = plan_roots(&plan).edges;
        for idx in 0..3 {
            let batch = record(&plan, idx);
            nodes.extend(batch.nodes);
            edges.extend(batch.edges);
        }
        let forward = PlanGraph::from_parts(nodes.clone(), &edges);
        nodes.reverse();
        edges.reverse();
        let backward = PlanGraph::from_parts(nodes, &edges);
        assert_eq!(
            forward.topological_order().unwrap(),
            backward.topological_order().unwrap()
        );
        assert_eq!(forward.lineage_groups(), backward.lineage_groups());
    }
}
