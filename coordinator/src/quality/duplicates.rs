//! The three duplicate tiers in the order a record meets them: exact (hash
//! of the normalised text), near (MinHash-LSH over word shingles), semantic
//! (engine embeddings of the input, within its language). The first tier
//! that recognises a record names it, so an exact copy is reported as one
//! and not as "semantically close".

use seedling_common::embedding::Embedding;

use super::dedup::{DedupIndex, DedupVerdict, TextKeys};
use super::semantic::{Probe, SemanticIndex};

/// Which tier recognised a record, and its survivor.
#[derive(Debug, Clone, PartialEq)]
pub enum Duplicate {
    Exact { of: String },
    Near { of: String, jaccard: f64 },
    Semantic { of: String, cosine: f64 },
}

impl Duplicate {
    /// The rejection reason recorded in the lineage.
    pub fn reason(&self) -> &'static str {
        match self {
            Duplicate::Exact { .. } => "exact_duplicate",
            Duplicate::Near { .. } => "near_duplicate",
            Duplicate::Semantic { .. } => "semantic_duplicate",
        }
    }

    /// The accepted record it repeats.
    pub fn survivor(&self) -> &str {
        match self {
            Duplicate::Exact { of }
            | Duplicate::Near { of, .. }
            | Duplicate::Semantic { of, .. } => of,
        }
    }
}

/// A candidate as the tiers see it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// What the text tiers compare (the run uses input and response).
    pub text: &'a str,
    pub language: &'a str,
    /// The input's embedding; without one the semantic tier is skipped.
    pub embedding: Option<&'a Embedding>,
    /// Whether the semantic tier applies (augmentations are meant to stay
    /// close to their source in meaning).
    pub semantic: bool,
}

/// A candidate's keys for each tier.
#[derive(Debug, Clone)]
pub struct CandidateKeys {
    text: TextKeys,
    /// Present when the candidate's input has an embedding.
    semantic: Option<Probe>,
}

/// Every accepted record, indexed for each tier.
#[derive(Debug)]
pub struct DuplicateTiers {
    text: DedupIndex,
    semantic: SemanticIndex,
}

impl DuplicateTiers {
    pub fn new(near_jaccard: f64, semantic_cosine: f64) -> Self {
        Self {
            text: DedupIndex::new(near_jaccard),
            semantic: SemanticIndex::new(semantic_cosine),
        }
    }

    pub fn semantic_threshold(&self) -> f64 {
        self.semantic.threshold()
    }

    /// The first tier that recognises `candidate`, if any; keeps nothing.
    pub fn check(&self, candidate: &Candidate) -> Option<Duplicate> {
        let keys = self.keys(candidate.text, candidate.embedding);
        let semantic = candidate.embedding.filter(|_| candidate.semantic);
        self.check_keyed(&keys, candidate.language, semantic)
    }

    /// What the tiers compare a text (and its input's embedding) by; it
    /// reads no accepted record, so many can be made in parallel.
    pub fn keys(&self, text: &str, embedding: Option<&Embedding>) -> CandidateKeys {
        CandidateKeys {
            text: DedupIndex::keys(text),
            semantic: embedding.map(|e| self.semantic.probe(e)),
        }
    }

    /// [`Self::check`] with the candidate's keys already made (they can be
    /// kept with [`Self::insert_keyed`] without hashing the text again);
    /// `semantic` is the input's embedding where the semantic tier applies.
    pub fn check_keyed(
        &self,
        keys: &CandidateKeys,
        language: &str,
        semantic: Option<&Embedding>,
    ) -> Option<Duplicate> {
        match self.text.verdict(&keys.text) {
            DedupVerdict::Exact { of } => return Some(Duplicate::Exact { of }),
            DedupVerdict::Near { of, jaccard } => return Some(Duplicate::Near { of, jaccard }),
            DedupVerdict::Unique => {}
        }
        let embedding = semantic?;
        let found = match &keys.semantic {
            Some(probe) => self.semantic.closest_probed(language, embedding, probe),
            None => self.semantic.closest(language, embedding),
        };
        found.map(|m| Duplicate::Semantic {
            of: m.of,
            cosine: m.cosine,
        })
    }

    /// Keeps an accepted record as a survivor in every tier it has keys for.
    pub fn insert(&mut self, id: &str, candidate: &Candidate) {
        let keys = self.keys(candidate.text, candidate.embedding);
        self.insert_keyed(id, keys, candidate.language, candidate.embedding);
    }

    /// [`Self::insert`] with the keys from [`Self::check_keyed`] (the text
    /// itself is not needed again).
    pub fn insert_keyed(
        &mut self,
        id: &str,
        keys: CandidateKeys,
        language: &str,
        embedding: Option<&Embedding>,
    ) {
        self.text.keep(id, keys.text);
        if let Some(embedding) = embedding {
            let probe = keys
                .semantic
                .unwrap_or_else(|| self.semantic.probe(embedding));
            self.semantic
                .insert_probed(language, id, embedding.clone(), probe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate<'a>(text: &'a str, embedding: &'a Embedding) -> Candidate<'a> {
        Candidate {
            text,
            language: "en",
            embedding: Some(embedding),
            semantic: true,
        }
    }

    #[test]
    fn the_first_tier_that_recognises_a_record_names_it() {
        let mut tiers = DuplicateTiers::new(0.8, 0.95);
        let a = Embedding::quantise(&[1.0, 0.0, 0.0]);
        let close = Embedding::quantise(&[0.99, 0.1, 0.0]);
        let far = Embedding::quantise(&[0.0, 1.0, 0.0]);
        let text = "How do I raise the daily limit on my debit card for a trip abroad next month?";
        tiers.insert("r1", &candidate(text, &a));
        // A copy with another case and punctuation, even with a far embedding.
        let copy = "how do I raise the daily limit on my debit card, for a trip abroad next month";
        assert_eq!(
            tiers.check(&candidate(copy, &far)),
            Some(Duplicate::Exact { of: "r1".into() })
        );
        // Other words, same meaning.
        let paraphrase = "Can my card's per-day cap go up while I travel?";
        let hit = tiers.check(&candidate(paraphrase, &close)).unwrap();
        assert_eq!((hit.reason(), hit.survivor()), ("semantic_duplicate", "r1"));
        // ...unless the semantic tier does not apply, or the language differs.
        let exempt = Candidate {
            semantic: false,
            ..candidate(paraphrase, &close)
        };
        assert_eq!(tiers.check(&exempt), None);
        let spanish = Candidate {
            language: "es",
            ..candidate(paraphrase, &close)
        };
        assert_eq!(tiers.check(&spanish), None);
        assert_eq!(tiers.check(&candidate(paraphrase, &far)), None);
    }
}
