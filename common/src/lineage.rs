//! The lineage DAG's vocabulary (design sections 4.2 and 5.2): typed nodes for
//! every record, step and decision, typed edges between them. Pure data; the
//! store that keeps it lives in the coordinator.
//!
//! Every edge points from a **parent** (the earlier node, the origin) to a
//! **child** (the later node, derived from it or deciding about it), so
//! "ancestors" always means "where this came from" and the DAG is ordered by
//! creation.

use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, PlanId};

macro_rules! coded_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $code:literal => $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every variant, in code order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// Stable one-byte code used in storage keys. Never renumber.
            pub fn code(self) -> u8 {
                match self { $($name::$variant => $code,)* }
            }

            pub fn from_code(code: u8) -> Option<Self> {
                match code { $($code => Some($name::$variant),)* _ => None }
            }

            /// The snake_case name used in JSON and on the command line.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }

            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

coded_enum!(
    /// What a lineage node stands for.
    NodeKind {
        /// The submitted plan: the root of everything generated for it.
        Plan = 1 => "plan",
        GlossaryTerm = 2 => "glossary_term",
        Scenario = 3 => "scenario",
        ExpertExample = 4 => "expert_example",
        BusinessRule = 5 => "business_rule",
        ReferenceChunk = 6 => "reference_chunk",
        /// A template rendered with sampled parameters.
        TemplateInstance = 7 => "template_instance",
        /// An instruction (user input) produced by a generation method.
        GeneratedInput = 8 => "generated_input",
        /// A model response: with its input, a dataset record.
        Response = 9 => "response",
        Judgement = 10 => "judgement",
        Augmentation = 11 => "augmentation",
        DedupDecision = 12 => "dedup_decision",
        ReviewDecision = 13 => "review_decision",
        SplitAssignment = 14 => "split_assignment",
        Export = 15 => "export",
        /// A `seedling verify` run and its figures, derived from the export it verified.
        Verification = 16 => "verification",
        /// What a round of human review changed in a stratum's generation
        /// (counter-examples, examples, a pause), derived from the decisions.
        Feedback = 17 => "feedback",
    }
);

coded_enum!(
    /// How a child relates to its parent (read: "child <kind> parent", except
    /// where a variant says otherwise).
    EdgeKind {
        /// The child was generated or transformed from the parent.
        DerivedFrom = 1 => "derived_from",
        /// The child used the parent (glossary term, rule, chunk) as grounding.
        GroundedOn = 2 => "grounded_on",
        /// Read "parent judged_by child": the child is a judgement of the parent.
        JudgedBy = 3 => "judged_by",
        /// The child duplicates the parent, which survives.
        DuplicateOf = 4 => "duplicate_of",
        /// Read "parent reviewed_by child": the child is a review decision.
        ReviewedBy = 5 => "reviewed_by",
        /// The child is a new version of the parent record.
        Supersedes = 6 => "supersedes",
        /// Read "parent assigned_to child": the child is a split assignment.
        AssignedTo = 7 => "assigned_to",
        /// Read "parent exported_in child": the child is an export.
        ExportedIn = 8 => "exported_in",
    }
);

coded_enum!(
    /// Where a node stands; decisions change it, the index follows it.
    NodeStatus {
        /// Written, no verdict (knowledge items, steps, decisions themselves).
        Recorded = 1 => "recorded",
        /// Passed every check: part of the dataset.
        Accepted = 2 => "accepted",
        /// Dropped; the deciding node says why.
        Rejected = 3 => "rejected",
        /// Replaced by a newer version (a `supersedes` child).
        Superseded = 4 => "superseded",
    }
);

/// The step of a record's own quality verdict (a `judgement` under its
/// response; other judgements are probes and flags).
pub const RECORD_VERDICT_STEP: &str = "quality_filter";

/// One vertex of the lineage DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub plan: PlanId,
    pub kind: NodeKind,
    pub status: NodeStatus,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// The processing step that wrote this node (`template_instantiation`, ...).
    pub step: String,
    /// The step's parameters (sampling settings, template name, thresholds).
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// The node's content: text, scores, a decision and its reason.
    #[serde(default)]
    pub body: serde_json::Value,
}

/// One typed, directed edge from an earlier node to a later one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Edge {
    pub parent: NodeId,
    pub child: NodeId,
    pub kind: EdgeKind,
}

impl Edge {
    pub fn new(parent: &NodeId, child: &NodeId, kind: EdgeKind) -> Self {
        Self {
            parent: parent.clone(),
            child: child.clone(),
            kind,
        }
    }
}

/// What one acknowledged write contains: applied all together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LineageBatch {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Verdicts on nodes already stored (or in this batch).
    pub status_changes: Vec<(NodeId, NodeStatus)>,
}

impl LineageBatch {
    /// Adds another batch's writes, so several can be stored (and synced) at once.
    pub fn extend(&mut self, other: LineageBatch) {
        self.nodes.extend(other.nodes);
        self.edges.extend(other.edges);
        self.status_changes.extend(other.status_changes);
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.edges.is_empty() && self.status_changes.is_empty()
    }
}

impl NodeId {
    /// A deterministic id: the same plan, unit, attempt and role always give
    /// the same id, so writing a result twice is a no-op.
    pub fn derive(plan: &PlanId, parts: &[&str]) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(plan.as_str().as_bytes());
        for part in parts {
            hasher.update(&[0]);
            hasher.update(part.as_bytes());
        }
        let hash = hasher.finalize();
        let hex = hex::encode(&hash.as_bytes()[..12]);
        NodeId::new(format!("{}{hex}", NodeId::PREFIX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        for kind in NodeKind::ALL {
            assert_eq!(NodeKind::from_code(kind.code()), Some(*kind));
            assert_eq!(NodeKind::parse(kind.as_str()), Some(*kind));
        }
        for kind in EdgeKind::ALL {
            assert_eq!(EdgeKind::from_code(kind.code()), Some(*kind));
        }
        let mut codes: Vec<u8> = NodeKind::ALL.iter().map(|k| k.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), NodeKind::ALL.len());
        assert_eq!(NodeKind::from_code(0), None);
    }

    #[test]
    fn json_names_match_the_codes_table() {
        assert_eq!(
            serde_json::to_string(&NodeKind::GeneratedInput).unwrap(),
            "\"generated_input\""
        );
        assert_eq!(
            serde_json::to_string(&EdgeKind::DuplicateOf).unwrap(),
            "\"duplicate_of\""
        );
        for kind in NodeKind::ALL {
            assert_eq!(
                serde_json::to_string(kind).unwrap(),
                format!("\"{}\"", kind.as_str())
            );
        }
    }

    #[test]
    fn derived_ids_are_deterministic_and_distinct() {
        let plan = PlanId::new("p-1");
        let a = NodeId::derive(&plan, &["unit-3", "attempt-0", "response"]);
        assert_eq!(
            a,
            NodeId::derive(&plan, &["unit-3", "attempt-0", "response"])
        );
        assert_ne!(
            a,
            NodeId::derive(&plan, &["unit-3", "attempt-1", "response"])
        );
        assert_ne!(
            a,
            NodeId::derive(&PlanId::new("p-2"), &["unit-3", "attempt-0", "response"])
        );
        // part boundaries matter: ("ab","c") is not ("a","bc")
        assert_ne!(
            NodeId::derive(&plan, &["ab", "c"]),
            NodeId::derive(&plan, &["a", "bc"])
        );
        assert!(a.as_str().starts_with("n-") && a.as_str().len() == 26);
    }

    #[test]
    fn derived_ids_keep_the_format_stores_were_written_with() {
        // Ids are looked up by recomputing them: a store written by an
        // earlier version must get the same ids back, byte for byte.
        let plan = PlanId::new("p-1");
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"p-1\0unit-3\0attempt-0");
        let expected: String = hasher.finalize().as_bytes()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            NodeId::derive(&plan, &["unit-3", "attempt-0"]).as_str(),
            format!("n-{expected}")
        );
    }
}
