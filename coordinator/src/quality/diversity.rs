//! Diversity of a set of records (design section 3.3): lexical variety
//! (distinct-n, type-token ratio), how much each text repeats the others
//! (self-BLEU), and how evenly records spread over the plan's categories
//! (normalised entropy). Pure functions over texts and counts, and
//! [`RunningDiversity`], which keeps the cheap ones current while a plan runs.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use seedling_common::embedding::Embedding;
use seedling_common::similarity::tokens as words;

use super::semantic::Spread;

/// Distinct n-grams over all n-grams of all texts (Li et al.'s distinct-n):
/// 1.0 when nothing repeats, near 0 when every text says the same.
pub fn distinct_n(texts: &[&str], n: usize) -> f64 {
    let mut total = 0usize;
    let mut distinct: HashSet<Vec<String>> = HashSet::new();
    for text in texts {
        let words = words(text);
        for gram in words.windows(n) {
            total += 1;
            distinct.insert(gram.to_vec());
        }
    }
    if total == 0 {
        0.0
    } else {
        distinct.len() as f64 / total as f64
    }
}

/// Word types over word tokens across all texts.
pub fn type_token_ratio(texts: &[&str]) -> f64 {
    distinct_n(texts, 1)
}

fn ngram_counts(words: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for gram in words.windows(n) {
        *counts.entry(gram).or_default() += 1;
    }
    counts
}

/// BLEU-4 of `candidate` against `references` (clipped n-gram precision,
/// add-one smoothing above unigrams, brevity penalty by the closest length).
pub fn bleu(candidate: &[String], references: &[Vec<String>]) -> f64 {
    if candidate.is_empty() || references.is_empty() {
        return 0.0;
    }
    let mut log_precision = 0.0;
    for n in 1..=4usize {
        let counts = ngram_counts(candidate, n);
        let total: usize = counts.values().sum();
        let mut max_ref: HashMap<&[String], usize> = HashMap::new();
        for reference in references {
            for (gram, count) in ngram_counts(reference, n) {
                let entry = max_ref.entry(gram).or_default();
                *entry = (*entry).max(count);
            }
        }
        let clipped: usize = counts
            .iter()
            .map(|(gram, count)| (*count).min(max_ref.get(gram).copied().unwrap_or(0)))
            .sum();
        let smoothing = if n == 1 { 0.0 } else { 1.0 };
        let precision = (clipped as f64 + smoothing) / (total as f64 + smoothing).max(1e-9);
        if precision <= 0.0 {
            return 0.0;
        }
        log_precision += precision.ln() / 4.0;
    }
    let c = candidate.len() as f64;
    let closest = references
        .iter()
        .map(|r| r.len() as f64)
        .min_by(|a, b| (a - c).abs().total_cmp(&(b - c).abs()).then(a.total_cmp(b)))
        .unwrap_or(c);
    let brevity = if c >= closest {
        1.0
    } else {
        (1.0 - closest / c).exp()
    };
    brevity * log_precision.exp()
}

/// Mean BLEU of each of the first `sample` texts against all the others
/// (Zhu et al.'s self-BLEU): high when texts repeat each other.
pub fn self_bleu(texts: &[&str], sample: usize) -> f64 {
    let tokenised: Vec<Vec<String>> = texts.iter().map(|t| words(t)).collect();
    if tokenised.len() < 2 {
        return 0.0;
    }
    let picked = tokenised.len().min(sample.max(1));
    let total: f64 = (0..picked)
        .map(|i| {
            let others: Vec<Vec<String>> = tokenised
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, t)| t.clone())
                .collect();
            bleu(&tokenised[i], &others)
        })
        .sum();
    total / picked as f64
}

/// Shannon entropy of counts over `categories` possible values, divided by
/// its maximum: 1.0 for a perfectly even spread, 0.0 for one category.
pub fn normalised_entropy(counts: &[u64], categories: usize) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 || categories < 2 {
        return if categories < 2 { 1.0 } else { 0.0 };
    }
    let h: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / total as f64;
            -p * p.ln()
        })
        .sum();
    h / (categories as f64).ln()
}

/// The lexical diversity of a set of texts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LexicalDiversity {
    pub texts: usize,
    pub distinct_1: f64,
    pub distinct_2: f64,
    pub type_token_ratio: f64,
    pub self_bleu: f64,
}

/// Self-BLEU reads this many texts against all others (quadratic cost).
pub const SELF_BLEU_SAMPLE: usize = 64;

pub fn lexical_diversity(texts: &[&str]) -> LexicalDiversity {
    LexicalDiversity {
        texts: texts.len(),
        distinct_1: distinct_n(texts, 1),
        distinct_2: distinct_n(texts, 2),
        type_token_ratio: type_token_ratio(texts),
        self_bleu: self_bleu(texts, SELF_BLEU_SAMPLE),
    }
}

/// Diversity of the inputs accepted so far, kept current one record at a
/// time (O(words) per record): distinct-1/2 from the sets of n-grams seen,
/// embedding dispersion from the running [`Spread`] of unit vectors.
#[derive(Debug, Clone, Default)]
pub struct RunningDiversity {
    /// 64-bit hashes of the n-grams, not the words: only the distinct
    /// counts are read, and a hash costs neither an allocation nor a copy
    /// per word (a collision among a run's n-grams is vanishingly rare).
    unigrams: HashSet<u64>,
    bigrams: HashSet<u64>,
    unigram_total: u64,
    bigram_total: u64,
    spread: Spread,
}

/// A [`RunningDiversity`] read out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DiversityNow {
    pub distinct_1: f64,
    pub distinct_2: f64,
    /// Mean pairwise cosine distance of input embeddings (None below two).
    pub dispersion: Option<f64>,
}

/// An input's word unigrams and bigrams, hashed: what [`RunningDiversity`]
/// keeps of it, computable away from the running totals.
#[derive(Debug, Clone, Default)]
pub struct InputNgrams {
    unigrams: Vec<u64>,
    bigrams: Vec<u64>,
}

impl InputNgrams {
    pub fn of(input: &str) -> Self {
        Self::of_words(&words(input))
    }

    /// For an input already split by `seedling_common::similarity::tokens`.
    pub fn of_words(words: &[String]) -> Self {
        Self {
            unigrams: words.iter().map(|w| ngram_hash(&[w])).collect(),
            bigrams: words
                .windows(2)
                .map(|pair| ngram_hash(&[&pair[0], &pair[1]]))
                .collect(),
        }
    }
}

/// A stable 64-bit hash of an n-gram (word boundaries included).
fn ngram_hash(words: &[&String]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    words.hash(&mut hasher);
    hasher.finish()
}

impl RunningDiversity {
    pub fn add(&mut self, input: &str, embedding: Option<&Embedding>) {
        self.add_ngrams(&InputNgrams::of(input), embedding);
    }

    /// [`Self::add`] for an input whose n-grams are already hashed.
    pub fn add_ngrams(&mut self, ngrams: &InputNgrams, embedding: Option<&Embedding>) {
        self.unigram_total += ngrams.unigrams.len() as u64;
        self.bigram_total += ngrams.bigrams.len() as u64;
        self.unigrams.extend(&ngrams.unigrams);
        self.bigrams.extend(&ngrams.bigrams);
        if let Some(embedding) = embedding {
            self.spread.add(embedding);
        }
    }

    pub fn now(&self) -> DiversityNow {
        let ratio = |distinct: usize, total: u64| {
            if total == 0 {
                0.0
            } else {
                distinct as f64 / total as f64
            }
        };
        DiversityNow {
            distinct_1: ratio(self.unigrams.len(), self.unigram_total),
            distinct_2: ratio(self.bigrams.len(), self.bigram_total),
            dispersion: self.spread.dispersion(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VARIED: [&str; 3] = [
        "Why was my card declined at the fuel pump?",
        "How long does an international wire take to arrive?",
        "Which savings account pays the higher yearly interest?",
    ];
    const SAME: [&str; 3] = [
        "Why was my card declined at the store?",
        "Why was my card declined at the shop?",
        "Why was my card declined at the store?",
    ];

    #[test]
    fn distinct_n_separates_varied_from_repetitive_texts() {
        assert!(distinct_n(&VARIED, 2) > 0.95);
        assert!(distinct_n(&SAME, 2) < 0.5, "{}", distinct_n(&SAME, 2));
        assert!(type_token_ratio(&VARIED) > type_token_ratio(&SAME));
        assert_eq!(distinct_n(&[], 1), 0.0);
    }

    #[test]
    fn self_bleu_is_high_for_copies_and_low_for_varied_texts() {
        let same = self_bleu(&SAME, 10);
        let varied = self_bleu(&VARIED, 10);
        assert!(same > 0.6, "{same}");
        assert!(varied < 0.2, "{varied}");
        let w = |t: &str| words(t);
        assert!((bleu(&w(SAME[0]), &[w(SAME[0])]) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn entropy_is_one_for_even_and_zero_for_single_categories() {
        assert!((normalised_entropy(&[5, 5, 5, 5], 4) - 1.0).abs() < 1e-9);
        assert_eq!(normalised_entropy(&[12, 0, 0], 3), 0.0);
        // a category never reached lowers the score
        assert!(normalised_entropy(&[6, 6, 0], 3) < 0.7);
        assert_eq!(normalised_entropy(&[3], 1), 1.0);
    }

    #[test]
    fn running_diversity_matches_the_batch_measures() {
        let texts = [
            "How do I dispute a card charge?",
            "How do I dispute a card charge today?",
            "Which documents open a business account?",
        ];
        let embeddings: Vec<Embedding> = [[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]]
            .iter()
            .map(|v| Embedding::quantise(v))
            .collect();
        let mut running = RunningDiversity::default();
        for (text, embedding) in texts.iter().zip(&embeddings) {
            running.add(text, Some(embedding));
        }
        let now = running.now();
        assert!((now.distinct_1 - distinct_n(&texts, 1)).abs() < 1e-12);
        assert!((now.distinct_2 - distinct_n(&texts, 2)).abs() < 1e-12);
        // The reference: the mean of 1 - cosine over every pair.
        let mut distances = Vec::new();
        for (i, a) in embeddings.iter().enumerate() {
            for b in &embeddings[i + 1..] {
                distances.push(1.0 - a.cosine(b));
            }
        }
        let batch = distances.iter().sum::<f64>() / distances.len() as f64;
        assert!(
            (now.dispersion.unwrap() - batch).abs() < 1e-9,
            "{now:?} vs {batch}"
        );
        assert_eq!(RunningDiversity::default().now().dispersion, None);
    }
}
