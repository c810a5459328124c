//! What the card reports about diversity and balance (design section 3.3):
//! lexical diversity of inputs and responses, overall and per subdomain, and
//! how evenly the accepted records cover the plan's categories.

use std::collections::BTreeMap;

use seedling_common::embedding::Embedding;
use seedling_common::lineage::Node;
use serde::Serialize;

use crate::lineage::stored_input_embedding;
use crate::plan::Plan;
use crate::quality::diversity::{LexicalDiversity, lexical_diversity, normalised_entropy};
use crate::quality::semantic::dispersion;

/// Coverage of one of the plan's dimensions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Balance {
    pub dimension: &'static str,
    /// Categories with at least one record, of those the plan names.
    pub covered: usize,
    pub categories: usize,
    /// Normalised entropy of records over the plan's categories.
    pub entropy: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiversityFacts {
    pub inputs: LexicalDiversity,
    pub responses: LexicalDiversity,
    /// Input diversity within each subdomain.
    pub per_subdomain: BTreeMap<String, LexicalDiversity>,
    /// Mean pairwise cosine distance of input embeddings, overall and per
    /// subdomain (None where fewer than two records carry one).
    pub input_dispersion: Option<f64>,
    pub per_subdomain_dispersion: BTreeMap<String, Option<f64>>,
    pub balance: Vec<Balance>,
    pub adversarial_share: f64,
}

fn field<'n>(node: &'n Node, key: &str) -> &'n str {
    node.body["stratum_fields"][key]
        .as_str()
        .unwrap_or_default()
}

fn text<'n>(node: &'n Node, key: &str) -> &'n str {
    node.body[key].as_str().unwrap_or_default()
}

/// Diversity and balance of accepted response nodes of `plan`.
pub fn diversity_facts(plan: &Plan, accepted: &[Node]) -> DiversityFacts {
    let inputs: Vec<&str> = accepted.iter().map(|n| text(n, "input")).collect();
    let responses: Vec<&str> = accepted.iter().map(|n| text(n, "response")).collect();
    let mut by_subdomain: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut embedded: BTreeMap<String, Vec<Embedding>> = BTreeMap::new();
    for node in accepted {
        let subdomain = field(node, "subdomain").to_string();
        if let Some(embedding) = stored_input_embedding(node) {
            embedded
                .entry(subdomain.clone())
                .or_default()
                .push(embedding);
        }
        by_subdomain
            .entry(subdomain)
            .or_default()
            .push(text(node, "input"));
    }
    let dimensions: [(&'static str, Vec<&str>); 4] = [
        (
            "subdomain",
            plan.subdomains.iter().map(|s| s.name.as_str()).collect(),
        ),
        (
            "task_type",
            plan.task_types.iter().map(|t| t.name.as_str()).collect(),
        ),
        (
            "persona",
            plan.personas.iter().map(|p| p.name.as_str()).collect(),
        ),
        (
            "language",
            plan.languages.iter().map(|l| l.code.as_str()).collect(),
        ),
    ];
    let balance = dimensions
        .into_iter()
        .map(|(dimension, categories)| {
            let counts: Vec<u64> = categories
                .iter()
                .map(|c| {
                    accepted
                        .iter()
                        .filter(|n| field(n, dimension) == *c)
                        .count() as u64
                })
                .collect();
            Balance {
                dimension,
                covered: counts.iter().filter(|c| **c > 0).count(),
                categories: categories.len(),
                entropy: normalised_entropy(&counts, categories.len()),
            }
        })
        .collect();
    let adversarial = accepted
        .iter()
        .filter(|n| n.body["stratum_fields"]["adversarial"].as_bool() == Some(true))
        .count();
    DiversityFacts {
        inputs: lexical_diversity(&inputs),
        responses: lexical_diversity(&responses),
        per_subdomain: by_subdomain
            .into_iter()
            .map(|(subdomain, texts)| (subdomain, lexical_diversity(&texts)))
            .collect(),
        input_dispersion: dispersion(embedded.values().flatten()),
        per_subdomain_dispersion: embedded
            .iter()
            .map(|(subdomain, e)| (subdomain.clone(), dispersion(e)))
            .collect(),
        balance,
        adversarial_share: if accepted.is_empty() {
            0.0
        } else {
            adversarial as f64 / accepted.len() as f64
        },
    }
}
