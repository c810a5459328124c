//! Text similarity for the Self-Instruct novelty gate (design section 4.1,
//! step 3): a new instruction joins the pool only if its ROUGE-L F1 against
//! every instruction already there stays at or below a threshold (0.7 in the
//! paper). And chrF, for how much of a text survives a translation round trip
//! (design section 7).

use std::collections::HashMap;

/// Lowercase word tokens (letters and digits; everything else separates).
pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn lcs_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diagonal = 0;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y {
                diagonal + 1
            } else {
                above.max(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// ROUGE-L F1 of two token sequences: harmonic mean of LCS precision and recall.
pub fn rouge_l<T: PartialEq>(a: &[T], b: &[T]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let lcs = lcs_len(a, b) as f64;
    if lcs == 0.0 {
        return 0.0;
    }
    let precision = lcs / b.len() as f64;
    let recall = lcs / a.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// A pool of instructions that admits only novel ones.
///
/// Tokens are interned, and an inverted index bounds each entry's ROUGE-L
/// before computing it: the LCS of two texts is at most the tokens they
/// share, so an entry sharing too few tokens cannot be too similar and its
/// O(n·m) LCS is skipped. A pool of thousands stays cheap to ask.
#[derive(Debug, Clone)]
pub struct NoveltyPool {
    /// Each entry's token ids.
    entries: Vec<Vec<u32>>,
    /// Token id -> (entry, occurrences in it).
    postings: HashMap<u32, Vec<(u32, u32)>>,
    vocabulary: HashMap<String, u32>,
    threshold: f64,
}

/// Why a candidate was turned away: the pool entry it is too close to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TooSimilar {
    pub closest: usize,
    pub rouge_l: f64,
}

/// Occurrences of each token id.
fn counts(ids: &[u32]) -> HashMap<u32, u32> {
    let mut counts = HashMap::new();
    for id in ids {
        *counts.entry(*id).or_insert(0) += 1;
    }
    counts
}

/// Stands for a token no entry has: it matches nothing.
const UNSEEN: u32 = u32::MAX;

impl NoveltyPool {
    pub fn new(threshold: f64) -> Self {
        Self {
            entries: Vec::new(),
            postings: HashMap::new(),
            vocabulary: HashMap::new(),
            threshold,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry `text` is too close to, if any (nothing is added). Among
    /// equally close entries, the latest.
    pub fn too_similar(&self, text: &str) -> Option<TooSimilar> {
        self.too_similar_tokens(&tokens(text))
    }

    /// [`Self::too_similar`] for a text already split by [`tokens`].
    pub fn too_similar_tokens(&self, tokens: &[String]) -> Option<TooSimilar> {
        let candidate: Vec<u32> = tokens
            .iter()
            .map(|t| self.vocabulary.get(t).copied().unwrap_or(UNSEEN))
            .collect();
        if candidate.is_empty() {
            return None;
        }
        let (unprobed, probed) = self.split_by_frequency(&candidate);
        let mut shared = vec![0u32; self.entries.len()];
        for (id, count) in probed {
            for &(entry, occurrences) in self
                .postings
                .get(&id)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                shared[entry as usize] += count.min(occurrences);
            }
        }
        let mut best: Option<TooSimilar> = None;
        for (idx, entry) in self.entries.iter().enumerate() {
            // ROUGE-L F1 = 2·LCS / (|a| + |b|) and LCS <= shared tokens.
            let bound =
                2.0 * f64::from(shared[idx] + unprobed) / (entry.len() + candidate.len()) as f64;
            if shared[idx] == 0 || bound + 1e-9 < self.threshold {
                continue;
            }
            let score = rouge_l(entry, &candidate);
            if score > self.threshold && best.is_none_or(|b| score >= b.rouge_l) {
                best = Some(TooSimilar {
                    closest: idx,
                    rouge_l: score,
                });
            }
        }
        best
    }

    /// Which of the candidate's tokens to look up. A match
    /// needs LCS > threshold·(|a| + |b|) / 2, so it shares more than
    /// threshold·|b| / 2 token occurrences with the candidate: the most
    /// common tokens (the longest postings: "how", "my", "the"), up to one
    /// occurrence fewer than that, can be left out and every match still
    /// shares a looked-up token. Their occurrences are added back to each
    /// entry's bound. Returns (occurrences left out, tokens looked up with
    /// their counts).
    fn split_by_frequency(&self, candidate: &[u32]) -> (u32, Vec<(u32, u32)>) {
        let mut tokens: Vec<(u32, u32)> = counts(candidate).into_iter().collect();
        let postings = |id: u32| self.postings.get(&id).map_or(0, Vec::len);
        // Most common first; ties by id so the split is deterministic.
        tokens.sort_unstable_by_key(|&(id, _)| (std::cmp::Reverse(postings(id)), id));
        let least_shared =
            (self.threshold * candidate.len() as f64 / 2.0 - 1e-6).floor() as i64 + 1;
        let mut left_out = 0u32;
        let mut first_probed = 0;
        for &(_, count) in &tokens {
            if i64::from(left_out + count) < least_shared {
                left_out += count;
                first_probed += 1;
            } else {
                break;
            }
        }
        (left_out, tokens.split_off(first_probed))
    }

    /// Adds `text` unconditionally; it becomes entry `len() - 1`.
    pub fn insert(&mut self, text: &str) {
        self.insert_tokens(tokens(text));
    }

    /// [`Self::insert`] for a text already split by [`tokens`].
    pub fn insert_tokens(&mut self, tokens: Vec<String>) {
        let mut ids = Vec::new();
        for token in tokens {
            let fresh = self.vocabulary.len() as u32;
            ids.push(*self.vocabulary.entry(token).or_insert(fresh));
        }
        let entry = self.entries.len() as u32;
        for (id, count) in counts(&ids) {
            self.postings.entry(id).or_default().push((entry, count));
        }
        self.entries.push(ids);
    }

    /// Adds `text` when its ROUGE-L to every entry is at most the threshold.
    pub fn admit(&mut self, text: &str) -> Result<(), TooSimilar> {
        if let Some(too_similar) = self.too_similar(text) {
            return Err(too_similar);
        }
        self.insert(text);
        Ok(())
    }
}

fn char_ngrams(text: &[char], n: usize) -> std::collections::HashMap<&[char], usize> {
    let mut counts = std::collections::HashMap::new();
    for gram in text.windows(n) {
        *counts.entry(gram).or_default() += 1;
    }
    counts
}

/// chrF (Popović 2015): the F-score (beta 2, recall weighted) of character
/// n-grams for n = 1..6, averaged over n, whitespace ignored, in [0, 1].
pub fn chrf(hypothesis: &str, reference: &str) -> f64 {
    let chars = |t: &str| -> Vec<char> {
        t.chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let (h, r) = (chars(hypothesis), chars(reference));
    let beta2 = 4.0;
    let mut total = 0.0;
    let mut orders = 0;
    for n in 1..=6 {
        let (hg, rg) = (char_ngrams(&h, n), char_ngrams(&r, n));
        let (h_total, r_total): (usize, usize) = (hg.values().sum(), rg.values().sum());
        if h_total == 0 || r_total == 0 {
            continue;
        }
        let matched: usize = hg
            .iter()
            .map(|(g, c)| (*c).min(rg.get(g).copied().unwrap_or(0)))
            .sum();
        let precision = matched as f64 / h_total as f64;
        let recall = matched as f64 / r_total as f64;
        let f = if precision + recall == 0.0 {
            0.0
        } else {
            (1.0 + beta2) * precision * recall / (beta2 * precision + recall)
        };
        total += f;
        orders += 1;
    }
    if orders == 0 {
        0.0
    } else {
        total / orders as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_novelty_pool_finds_what_an_exhaustive_rouge_scan_finds() {
        // A small vocabulary so that texts share common words, as questions do.
        let words = [
            "how", "do", "i", "my", "the", "a", "card", "account", "open", "close", "fee",
            "transfer", "why", "was", "declined", "limit", "to", "can", "savings", "loan",
        ];
        let mut state = 7u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        let mut texts: Vec<String> = Vec::new();
        for _ in 0..400 {
            let len = 3 + next() % 12;
            let text: Vec<&str> = (0..len).map(|_| words[next() % words.len()]).collect();
            texts.push(text.join(" "));
        }
        // Near copies of earlier texts, so some candidates do match.
        for i in 0..100 {
            let mut text: Vec<&str> = texts[i * 3].split(' ').collect();
            let at = next() % text.len();
            text[at] = words[next() % words.len()];
            texts.push(text.join(" "));
        }
        let mut pool = NoveltyPool::new(0.7);
        let mut kept: Vec<Vec<String>> = Vec::new();
        let mut matches = 0;
        for text in &texts {
            let candidate = tokens(text);
            let exhaustive = kept
                .iter()
                .enumerate()
                .map(|(i, entry)| (i, rouge_l(entry, &candidate)))
                .filter(|(_, score)| *score > 0.7)
                .fold(None, |best: Option<(usize, f64)>, (i, score)| match best {
                    Some((_, b)) if score < b => best,
                    _ => Some((i, score)),
                });
            let found = pool
                .too_similar_tokens(&candidate)
                .map(|t| (t.closest, t.rouge_l));
            assert_eq!(found, exhaustive, "{text}");
            matches += usize::from(found.is_some());
            pool.insert_tokens(candidate.clone());
            kept.push(candidate);
        }
        assert!(
            matches > 20,
            "the fixture should produce matches, got {matches}"
        );
    }

    #[test]
    fn chrf_rewards_surviving_round_trips() {
        let source = "Why was my card declined at the gas station?";
        assert!((chrf(source, source) - 1.0).abs() < 1e-9);
        let back = "Why did my card get declined at the gas station?";
        let drift = "The weather is lovely in the mountains this spring.";
        assert!(chrf(back, source) > 0.6, "{}", chrf(back, source));
        assert!(chrf(drift, source) < 0.3, "{}", chrf(drift, source));
        assert_eq!(chrf("", source), 0.0);
    }

    fn score(a: &str, b: &str) -> f64 {
        rouge_l(&tokens(a), &tokens(b))
    }

    #[test]
    fn rouge_l_table() {
        let cases = [
            ("the card was declined", "the card was declined", 1.0),
            ("the card was declined", "", 0.0),
            ("alpha beta", "gamma delta", 0.0),
            // LCS "the card declined" = 3 of 4 and 3 of 5 tokens: F1 = 2*(3/5)(3/4)/(3/5+3/4)
            (
                "the card was declined",
                "the new card got declined",
                2.0 * 0.6 * 0.75 / 1.35,
            ),
        ];
        for (a, b, want) in cases {
            assert!(
                (score(a, b) - want).abs() < 1e-9,
                "{a:?} vs {b:?}: {} != {want}",
                score(a, b)
            );
        }
        assert_eq!(
            score("Card DECLINED!", "card declined"),
            1.0,
            "case and punctuation do not count"
        );
    }

    #[test]
    fn the_gate_keeps_novel_instructions_only() {
        let mut pool = NoveltyPool::new(0.7);
        pool.admit("Why was my card declined at the gas station?")
            .unwrap();
        pool.admit("How long does an international wire transfer take?")
            .unwrap();
        let near_copy = pool
            .admit("Why was my debit card declined at the gas station?")
            .unwrap_err();
        assert_eq!(near_copy.closest, 0);
        assert!(near_copy.rouge_l > 0.7);
        pool.admit("What interest does a high-yield savings account pay?")
            .unwrap();
        assert_eq!(pool.len(), 3);
    }

    #[test]
    fn the_indexed_pool_answers_as_a_full_scan_would() {
        let words = [
            "card", "declined", "why", "was", "my", "the", "fee", "wire", "transfer", "how",
            "long", "at", "a",
        ];
        // Deterministic pseudo-random texts over a small vocabulary: many near matches.
        let mut state = 7u64;
        let mut text = |len: usize| {
            (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    words[(state >> 33) as usize % words.len()]
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut pool = NoveltyPool::new(0.5);
        let mut plain: Vec<Vec<String>> = Vec::new();
        for round in 0..400 {
            let candidate = text(3 + round % 9);
            let expected = plain
                .iter()
                .enumerate()
                .map(|(idx, entry)| (idx, rouge_l(entry, &tokens(&candidate))))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .filter(|(_, score)| *score > 0.5);
            let got = pool.too_similar(&candidate).map(|t| (t.closest, t.rouge_l));
            assert_eq!(
                got.map(|g| g.1),
                expected.map(|e| e.1),
                "round {round}: {candidate}"
            );
            pool.insert(&candidate);
            plain.push(tokens(&candidate));
        }
    }
}
