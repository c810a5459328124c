//! The semantic duplicate tier (NeMo Curator's third): inputs whose engine
//! embeddings lie within a cosine threshold of an accepted input's are
//! paraphrases the text tiers miss ("How do I contest a card charge?" vs.
//! "What's the process for disputing a transaction?"). Inputs are compared
//! only within their language: a Spanish question about the same topic as
//! an English one is what a bilingual plan asks for, not a duplicate.

use std::collections::HashMap;

use seedling_common::embedding::Embedding;

/// The accepted input an embedding is too close to.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticMatch {
    pub of: String,
    pub cosine: f64,
}

/// Accepted inputs' embeddings, per language.
#[derive(Debug)]
pub struct SemanticIndex {
    threshold: f64,
    /// (record id, embedding, its norm) per language.
    by_language: HashMap<String, Vec<(String, Embedding, f64)>>,
}

impl SemanticIndex {
    pub fn new(threshold: f64) -> Self {
        Self {
            threshold,
            by_language: HashMap::new(),
        }
    }

    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    pub fn len(&self) -> usize {
        self.by_language.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The closest accepted input of `language` at or above the threshold.
    /// A linear scan: at 896 bytes per input, 10,000 accepted inputs are
    /// ~9 M vectorised multiply-adds, about a millisecond (BENCHMARKS.md).
    pub fn closest(&self, language: &str, embedding: &Embedding) -> Option<SemanticMatch> {
        let norm = embedding.norm();
        self.by_language
            .get(language)?
            .iter()
            .map(|(id, other, other_norm)| {
                (id, embedding.cosine_with_norms(other, norm, *other_norm))
            })
            .filter(|(_, cosine)| *cosine >= self.threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(id, cosine)| SemanticMatch {
                of: id.clone(),
                cosine,
            })
    }

    pub fn insert(&mut self, language: &str, id: &str, embedding: Embedding) {
        self.by_language
            .entry(language.to_string())
            .or_default()
            .push((id.to_string(), embedding.clone(), embedding.norm()));
    }
}

/// Mean pairwise cosine distance (1 - cosine) of a set of embeddings: the
/// "embedding dispersion" of section 3.3. 0 when everything says the same;
/// higher is more varied. Pairs are capped at `max_items` items, taken
/// evenly spaced, so large sets cost O(max_items²).
pub fn dispersion(embeddings: &[&Embedding], max_items: usize) -> Option<f64> {
    if embeddings.len() < 2 || max_items < 2 {
        return None;
    }
    let step = embeddings.len().div_ceil(max_items).max(1);
    let sample: Vec<&Embedding> = embeddings.iter().step_by(step).copied().collect();
    let mut total = 0.0;
    let mut pairs = 0u64;
    for (i, a) in sample.iter().enumerate() {
        for b in &sample[i + 1..] {
            total += 1.0 - a.cosine(b);
            pairs += 1;
        }
    }
    (pairs > 0).then(|| total / pairs as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(angle_deg: f32) -> Embedding {
        let a = angle_deg.to_radians();
        Embedding::quantise(&[a.cos(), a.sin(), 0.0])
    }

    #[test]
    fn the_closest_match_above_the_threshold_wins_within_a_language() {
        let mut index = SemanticIndex::new(0.95);
        index.insert("en", "far", unit(60.0));
        index.insert("en", "near", unit(10.0));
        index.insert("en", "nearer", unit(3.0));
        index.insert("es", "same-topic-es", unit(0.0));
        let hit = index.closest("en", &unit(0.0)).expect("a paraphrase");
        assert_eq!(hit.of, "nearer");
        assert!(hit.cosine > 0.99, "{}", hit.cosine);
        // cos(40 degrees) = 0.77: too far from everything in English.
        assert_eq!(index.closest("en", &unit(35.0)), None);
        assert_eq!(index.closest("fr", &unit(0.0)), None);
        assert_eq!(index.len(), 4);
    }

    #[test]
    fn dispersion_is_zero_for_copies_and_grows_with_spread() {
        let same = [unit(5.0), unit(5.0), unit(5.0)];
        let spread = [unit(0.0), unit(90.0), unit(180.0)];
        let same: Vec<&Embedding> = same.iter().collect();
        let spread: Vec<&Embedding> = spread.iter().collect();
        assert!(dispersion(&same, 100).unwrap() < 1e-3);
        // distances 1, 1 and 2: mean 4/3
        assert!((dispersion(&spread, 100).unwrap() - 4.0 / 3.0).abs() < 0.02);
        assert_eq!(dispersion(&same[..1], 100), None);
    }
}
