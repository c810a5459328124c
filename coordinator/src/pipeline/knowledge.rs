//! The plan's domain knowledge as lineage nodes (design section 3.2): the
//! plan root, glossary terms, scenarios, expert examples, business rules and
//! reference chunks. Written once per plan; every generated record is
//! grounded on the nodes it used, so its trace reaches back to them.

use std::collections::HashSet;
use std::path::Path;

use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{Edge, EdgeKind, LineageBatch, Node, NodeKind, NodeStatus};
use seedling_common::similarity::tokens;

use super::PipelineError;
use crate::lineage::plan_node_id;
use crate::plan::{Adversarial, Augmentation, Methods, Plan, Quality, Sampling, Splits};

/// Reference chunks aim at this many characters (paragraphs are kept whole
/// unless one alone is longer).
pub const CHUNK_CHARS: usize = 900;

/// One chunk of a reference document.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub id: NodeId,
    pub source: String,
    pub index: usize,
    pub text: String,
    /// Its content words, computed once: every attempt ranks chunks by them.
    words: HashSet<String>,
}

impl Chunk {
    pub fn new(id: NodeId, source: String, index: usize, text: String) -> Self {
        let words = content_words(&text);
        Self {
            id,
            source,
            index,
            text,
            words,
        }
    }
}

/// Lineage ids of the plan's knowledge, by position in the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Knowledge {
    pub plan_node: NodeId,
    pub glossary: Vec<NodeId>,
    pub scenarios: Vec<NodeId>,
    pub examples: Vec<NodeId>,
    pub rules: Vec<NodeId>,
    pub chunks: Vec<Chunk>,
}

/// A plan's id: a digest of what it says except the target, so a run with
/// another `--target` continues the same plan. Settings left at their
/// defaults do not count, so a Seedling version that adds a plan field (with
/// a default) still recognises plans written before it.
pub fn plan_id(plan: &Plan) -> PlanId {
    let mut value = serde_json::to_value(plan).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.remove("target");
        let defaults = serde_json::json!({
            "adversarial": Adversarial::default(),
            "methods": Methods::default(),
            "augmentation": Augmentation::default(),
            "sampling": Sampling::default(),
            "quality": Quality::default(),
            "splits": Splits::default(),
        });
        for (table, default) in defaults.as_object().into_iter().flatten() {
            if let Some(fields) = object.get_mut(table).and_then(|t| t.as_object_mut()) {
                fields.retain(|key, v| default.get(key) != Some(v));
            }
        }
    }
    let hash = blake3::hash(canonical_json(&value).as_bytes());
    let hex: String = hash.as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    PlanId::new(format!("plan-{hex}"))
}

/// JSON with object keys sorted and absent-like values (null, "", [], {})
/// dropped, whatever order or map type produced it.
fn canonical_json(value: &serde_json::Value) -> String {
    use serde_json::Value;
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    match value {
        Value::Object(object) => {
            let mut entries: Vec<(&String, String)> = object
                .iter()
                .filter(|(_, v)| !empty(v))
                .map(|(k, v)| (k, canonical_json(v)))
                .filter(|(_, v)| v != "{}")
                .collect();
            entries.sort();
            let fields: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(canonical_json)
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

/// Splits text into chunks of about `max_chars`, on paragraph boundaries.
pub fn chunk_text(text: &str, max_chars: usize) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    for paragraph in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        if !current.is_empty() && current.chars().count() + paragraph.chars().count() > max_chars {
            chunks.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push_str("\n\n");
        }
        current.push_str(paragraph);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

fn node(
    plan: &PlanId,
    id: NodeId,
    kind: NodeKind,
    step: &str,
    now_ms: u64,
    body: serde_json::Value,
) -> Node {
    Node {
        id,
        plan: plan.clone(),
        kind,
        status: NodeStatus::Recorded,
        created_at_ms: now_ms,
        step: step.to_string(),
        params: serde_json::Map::new(),
        body,
    }
}

/// The knowledge nodes of a plan, and the batch that stores them (a no-op
/// when they are stored already: ids are derived from the plan).
pub fn knowledge_batch(
    plan_id: &PlanId,
    plan: &Plan,
    base_dir: &Path,
    generator_version: &str,
    now_ms: u64,
) -> Result<(Knowledge, LineageBatch), PipelineError> {
    let mut batch = LineageBatch::default();
    let plan_node = plan_node_id(plan_id);
    let mut root = node(
        plan_id,
        plan_node.clone(),
        NodeKind::Plan,
        "plan_submitted",
        now_ms,
        serde_json::json!({ "plan": plan, "base_dir": base_dir }),
    );
    root.params
        .insert("generator_version".into(), generator_version.into());
    root.params.insert("seed".into(), plan.seed.into());
    batch.nodes.push(root);

    let mut add = |kind: NodeKind, role: &str, idx: usize, body: serde_json::Value| {
        let id = NodeId::derive(plan_id, &[role, &idx.to_string()]);
        batch.nodes.push(node(
            plan_id,
            id.clone(),
            kind,
            "domain_knowledge",
            now_ms,
            body,
        ));
        batch
            .edges
            .push(Edge::new(&plan_node, &id, EdgeKind::DerivedFrom));
        id
    };
    let glossary = plan
        .glossary
        .iter()
        .enumerate()
        .map(|(i, g)| add(NodeKind::GlossaryTerm, "glossary", i, serde_json::json!(g)))
        .collect();
    let scenarios = plan
        .scenarios
        .iter()
        .enumerate()
        .map(|(i, s)| add(NodeKind::Scenario, "scenario", i, serde_json::json!(s)))
        .collect();
    let examples = plan
        .expert_examples
        .iter()
        .enumerate()
        .map(|(i, e)| add(NodeKind::ExpertExample, "example", i, serde_json::json!(e)))
        .collect();
    let rules = plan
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| add(NodeKind::BusinessRule, "rule", i, serde_json::json!(r)))
        .collect();
    let mut chunks = Vec::new();
    for reference in &plan.references {
        let path = base_dir.join(&reference.path);
        let text = std::fs::read_to_string(&path).map_err(|e| PipelineError::Reference {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let source = reference.path.display().to_string();
        for (index, text) in chunk_text(&text, CHUNK_CHARS).into_iter().enumerate() {
            let id = add(
                NodeKind::ReferenceChunk,
                &format!("chunk:{source}"),
                index,
                serde_json::json!({ "source": source, "index": index, "text": text }),
            );
            chunks.push(Chunk::new(id, source.clone(), index, text));
        }
    }
    Ok((
        Knowledge {
            plan_node,
            glossary,
            scenarios,
            examples,
            rules,
            chunks,
        },
        batch,
    ))
}

/// Lower-case words of three letters or more, for relevance by overlap.
pub(super) fn content_words(text: &str) -> HashSet<String> {
    tokens(text)
        .into_iter()
        .filter(|w| w.chars().count() >= 3)
        .collect()
}

/// The chunk sharing the most words with `text` (ties: the earliest).
pub fn most_relevant_chunk<'k>(chunks: &'k [Chunk], text: &str) -> Option<&'k Chunk> {
    let wanted = content_words(text);
    chunks
        .iter()
        .enumerate()
        .max_by_key(|(i, chunk)| {
            let shared = chunk.words.intersection(&wanted).count();
            (shared, std::cmp::Reverse(*i))
        })
        .map(|(_, chunk)| chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_keep_paragraphs_and_respect_the_size() {
        let text = "First paragraph.\n\nSecond one.\n\n\n\nThird paragraph here.";
        assert_eq!(
            chunk_text(text, 30),
            vec!["First paragraph.\n\nSecond one.", "Third paragraph here."]
        );
        assert_eq!(chunk_text(text, 1000).len(), 1);
        assert!(chunk_text("  \n\n ", 10).is_empty());
    }

    #[test]
    fn plan_id_ignores_settings_written_at_their_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/retail-banking.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let parse = |text: &str| crate::plan::parse_plan("p.toml", text, None).unwrap();
        let plan = parse(&text);
        // As if a later version had added `judge` and the user wrote its default.
        let explicit = text.replace(
            "[quality]\nmin_score = 0.6",
            "[quality]\nmin_score = 0.6\njudge = false",
        );
        assert_ne!(explicit, text);
        assert_eq!(plan_id(&parse(&explicit)), plan_id(&plan));
        let judged = text.replace(
            "[quality]\nmin_score = 0.6",
            "[quality]\nmin_score = 0.6\njudge = true",
        );
        assert_ne!(plan_id(&parse(&judged)), plan_id(&plan));
        // Whitespace and comments are not part of a plan.
        assert_eq!(
            plan_id(&parse(&format!("# a note\n{text}\n\n"))),
            plan_id(&plan)
        );
    }

    #[test]
    fn plan_id_ignores_the_target_only() {
        let plan = crate::plan::fixtures::retail();
        let mut other_target = plan.clone();
        other_target.target.accepted = 7;
        assert_eq!(plan_id(&plan), plan_id(&other_target));
        let mut other_seed = plan.clone();
        other_seed.seed += 1;
        assert_ne!(plan_id(&plan), plan_id(&other_seed));
    }

    #[test]
    fn relevance_prefers_shared_words() {
        let chunk = |i: usize, text: &str| {
            Chunk::new(NodeId::new(format!("n{i}")), "doc".into(), i, text.into())
        };
        let chunks = vec![
            chunk(0, "wire transfers and cut-off times"),
            chunk(1, "card declines at fuel pumps and holds"),
        ];
        assert_eq!(
            most_relevant_chunk(&chunks, "my card was declined at the pump")
                .unwrap()
                .index,
            1
        );
        assert_eq!(most_relevant_chunk(&chunks, "zzz").unwrap().index, 0);
        assert!(most_relevant_chunk(&[], "x").is_none());
    }
}
