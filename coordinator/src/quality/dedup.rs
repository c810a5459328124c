//! Incremental deduplication in two text tiers (NeMo Curator's first two):
//! exact duplicates by a hash of the normalised text, near duplicates by
//! MinHash signatures over word shingles with LSH banding. Records arrive one
//! at a time from all workers; each is checked against everything kept so far.
//! (The semantic tier, engine embeddings with a cosine threshold, sits on top.)

use std::collections::HashMap;

/// What the index says about a new text.
#[derive(Debug, Clone, PartialEq)]
pub enum DedupVerdict {
    Unique,
    /// Same text after normalisation (case, punctuation, spacing).
    Exact {
        of: String,
    },
    /// Estimated Jaccard similarity of word shingles at or above the threshold.
    Near {
        of: String,
        jaccard: f64,
    },
}

const SHINGLE_WORDS: usize = 3;
const BANDS: usize = 16;
const ROWS: usize = 8;
const PERMUTATIONS: usize = BANDS * ROWS;

/// Lowercase words, punctuation dropped, single spaces.
pub fn normalise(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    let digest = blake3::hash(bytes);
    let mut word = [0u8; 8];
    word.copy_from_slice(&digest.as_bytes()[..8]);
    u64::from_le_bytes(word)
}

/// A word's hash for shingling: FNV-1a, finished by splitmix64 so nearby
/// words spread over all 64 bits. A cryptographic hash per shingle cost more
/// than the rest of a record's duplicate keys together; nothing here needs
/// to resist an adversary, only to be stable.
fn word_hash(word: &str) -> u64 {
    let fnv = word.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    splitmix64(fnv)
}

/// MinHash signature of a normalised text's word shingles. Stable across
/// runs and versions: it depends on nothing but the text.
pub fn signature(normalised: &str) -> Vec<u64> {
    let words: Vec<u64> = normalised
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(word_hash)
        .collect();
    let shingles: Vec<u64> = if words.len() < SHINGLE_WORDS {
        vec![hash_bytes(normalised.as_bytes())]
    } else {
        // Order matters within a shingle: each word is mixed into the hash
        // of the ones before it.
        words
            .windows(SHINGLE_WORDS)
            .map(|w| w.iter().fold(0, |h, word| splitmix64(h ^ word)))
            .collect()
    };
    (0..PERMUTATIONS as u64)
        .map(|perm| {
            let salt = splitmix64(perm + 1);
            shingles
                .iter()
                .map(|s| splitmix64(s ^ salt))
                .min()
                .unwrap_or(u64::MAX)
        })
        .collect()
}

/// Share of signature positions that agree: an estimate of Jaccard similarity.
pub fn estimated_jaccard(a: &[u64], b: &[u64]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().max(1) as f64
}

/// The set of texts kept so far, with the structures that find their duplicates.
#[derive(Debug, Default)]
pub struct DedupIndex {
    threshold: f64,
    exact: HashMap<u64, String>,
    ids: Vec<String>,
    signatures: Vec<Vec<u64>>,
    buckets: Vec<HashMap<u64, Vec<usize>>>,
}

impl DedupIndex {
    /// `threshold`: the Jaccard similarity from which a text is a near duplicate.
    pub fn new(threshold: f64) -> Self {
        Self {
            threshold,
            buckets: vec![HashMap::new(); BANDS],
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn keys(text: &str) -> TextKeys {
        let normalised = normalise(text);
        let exact_key = hash_bytes(normalised.as_bytes());
        let signature = signature(&normalised);
        let band_keys = signature
            .chunks(ROWS)
            .map(|rows| rows.iter().fold(0, |h, row| splitmix64(h ^ row)))
            .collect();
        TextKeys {
            exact_key,
            signature,
            band_keys,
        }
    }

    pub fn verdict(&self, prepared: &TextKeys) -> DedupVerdict {
        if let Some(of) = self.exact.get(&prepared.exact_key) {
            return DedupVerdict::Exact { of: of.clone() };
        }
        let mut best: Option<(usize, f64)> = None;
        for (band, key) in prepared.band_keys.iter().enumerate() {
            for &candidate in self.buckets[band].get(key).into_iter().flatten() {
                let jaccard = estimated_jaccard(&prepared.signature, &self.signatures[candidate]);
                if best.is_none_or(|(_, b)| jaccard > b) {
                    best = Some((candidate, jaccard));
                }
            }
        }
        match best.filter(|(_, j)| *j >= self.threshold) {
            Some((candidate, jaccard)) => DedupVerdict::Near {
                of: self.ids[candidate].clone(),
                jaccard,
            },
            None => DedupVerdict::Unique,
        }
    }

    pub fn keep(&mut self, id: &str, prepared: TextKeys) {
        let idx = self.ids.len();
        self.exact.insert(prepared.exact_key, id.to_string());
        self.ids.push(id.to_string());
        for (band, key) in prepared.band_keys.into_iter().enumerate() {
            self.buckets[band].entry(key).or_default().push(idx);
        }
        self.signatures.push(prepared.signature);
    }

    /// What the index says about `text`, keeping nothing.
    pub fn check(&self, text: &str) -> DedupVerdict {
        self.verdict(&Self::keys(text))
    }

    /// Keeps `text` under `id` as a survivor, whatever it duplicates.
    pub fn insert(&mut self, id: &str, text: &str) {
        self.keep(id, Self::keys(text));
    }

    /// Checks `text` and keeps it under `id` when it is unique; a duplicate
    /// is not kept, so its survivor stays the one it is compared with.
    pub fn check_and_insert(&mut self, id: &str, text: &str) -> DedupVerdict {
        let prepared = Self::keys(text);
        let verdict = self.verdict(&prepared);
        if verdict == DedupVerdict::Unique {
            self.keep(id, prepared);
        }
        verdict
    }
}

/// What the index keeps of a text: computed once per record, whether it is
/// checked, kept, or both.
#[derive(Debug, Clone)]
pub struct TextKeys {
    exact_key: u64,
    signature: Vec<u64>,
    band_keys: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "Fuel pumps often place an authorization hold that is larger than the purchase. \
        Your available balance subtracts pending holds, so a card can be declined even when the \
        ledger balance is positive. The hold usually drops off within three business days, and \
        you can see it in the app under pending transactions.";

    #[test]
    fn each_tier_catches_its_kind_and_survivors_are_unique() {
        let mut index = DedupIndex::new(0.7);
        assert_eq!(index.check_and_insert("r-1", BASE), DedupVerdict::Unique);
        // exact: case, punctuation and spacing differ only
        let shouted = BASE.to_uppercase().replace(". ", ".\n\n");
        assert_eq!(
            index.check_and_insert("r-2", &shouted),
            DedupVerdict::Exact { of: "r-1".into() }
        );
        // near: one word changed in a long text
        let near = BASE.replace("three business days", "two business days");
        match index.check_and_insert("r-3", &near) {
            DedupVerdict::Near { of, jaccard } => {
                assert_eq!(of, "r-1");
                assert!(jaccard >= 0.7, "{jaccard}");
            }
            other => panic!("expected a near duplicate, got {other:?}"),
        }
        // unrelated and merely on-topic texts are unique
        let other = "An ACH transfer settles in one to three business days; transfers sent after the \
            daily cut-off start on the next business day.";
        assert_eq!(index.check_and_insert("r-4", other), DedupVerdict::Unique);
        let paraphrase = "Gas stations can reserve more money than you spend, which lowers what you can \
            use until the reservation expires.";
        assert_eq!(
            index.check_and_insert("r-5", paraphrase),
            DedupVerdict::Unique,
            "paraphrases are the semantic tier's job"
        );
        assert_eq!(index.len(), 3, "only unique texts are kept");
    }

    #[test]
    fn signatures_are_stable_and_estimate_jaccard() {
        let a = signature(&normalise(BASE));
        assert_eq!(a, signature(&normalise(BASE)));
        assert_eq!(estimated_jaccard(&a, &a), 1.0);
        let unrelated = signature(&normalise(
            "Completely different words about laboratory centrifuges and samples.",
        ));
        assert!(estimated_jaccard(&a, &unrelated) < 0.1);
        // Shingles are ordered: the same words backwards share none of them.
        let normalised = normalise(BASE);
        let backwards: Vec<&str> = normalised.split(' ').rev().collect();
        let reversed = signature(&backwards.join(" "));
        assert!(estimated_jaccard(&a, &reversed) < 0.1);
    }
}
