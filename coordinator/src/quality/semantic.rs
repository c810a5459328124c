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

/// The sum of unit vectors seen so far, which gives the "embedding
/// dispersion" of section 3.3 (mean pairwise cosine distance) exactly and in
/// O(1) per vector: for unit vectors, the sum over pairs i != j of
/// cos(v_i, v_j) is |sum v|^2 - n.
#[derive(Debug, Clone, Default)]
pub struct Spread {
    sum: Vec<f64>,
    count: u64,
}

impl Spread {
    /// Adds one embedding (one of another size than the first is ignored).
    pub fn add(&mut self, embedding: &Embedding) {
        let unit = embedding.to_unit();
        if self.sum.is_empty() {
            self.sum = vec![0.0; unit.len()];
        }
        if unit.len() == self.sum.len() {
            for (s, x) in self.sum.iter_mut().zip(unit) {
                *s += x;
            }
            self.count += 1;
        }
    }

    /// Mean pairwise cosine distance: 0 when everything says the same,
    /// higher is more varied; None below two embeddings.
    pub fn dispersion(&self) -> Option<f64> {
        let n = self.count as f64;
        (self.count >= 2).then(|| {
            let squared: f64 = self.sum.iter().map(|x| x * x).sum();
            1.0 - (squared - n) / (n * (n - 1.0))
        })
    }
}

/// The dispersion of a set of embeddings (see [`Spread`]).
pub fn dispersion<'a>(embeddings: impl IntoIterator<Item = &'a Embedding>) -> Option<f64> {
    let mut spread = Spread::default();
    for embedding in embeddings {
        spread.add(embedding);
    }
    spread.dispersion()
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
        assert!(dispersion(&same).unwrap() < 1e-3);
        // distances 1, 1 and 2: mean 4/3
        assert!((dispersion(&spread).unwrap() - 4.0 / 3.0).abs() < 0.02);
        assert_eq!(dispersion(&same[..1]), None);
    }
}
