//! The semantic duplicate tier (NeMo Curator's third): inputs whose engine
//! embeddings lie within a cosine threshold of an accepted input's are
//! paraphrases the text tiers miss ("How do I contest a card charge?" vs.
//! "What's the process for disputing a transaction?"). Inputs are compared
//! only within their language: a Spanish question about the same topic as
//! an English one is what a bilingual plan asks for, not a duplicate.

use std::collections::HashMap;
use std::sync::OnceLock;

use seedling_common::embedding::Embedding;

/// Bits of an embedding's sketch: the signs of its projections on this
/// many random hyperplanes.
const SKETCH_BITS: usize = 256;
const SKETCH_WORDS: usize = SKETCH_BITS / 64;
/// How far past its expected value (in standard deviations) a pair at the
/// threshold may stray in sketch distance and still be compared exactly.
const SKETCH_MARGIN_SIGMAS: f64 = 6.0;

type Sketch = [u64; SKETCH_WORDS];

/// The accepted input an embedding is too close to.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticMatch {
    pub of: String,
    pub cosine: f64,
}

/// What an embedding is compared by: its sketch and norm. Computing it is
/// most of a check's cost (256 projections), and needs no accepted input,
/// so the run computes it for many results in parallel, before deciding
/// them in order, and keeps it for the insert.
#[derive(Debug, Clone)]
pub struct Probe {
    norm: f64,
    sketch: Option<Sketch>,
}

#[derive(Debug)]
struct Entry {
    id: String,
    embedding: Embedding,
    norm: f64,
    sketch: Option<Sketch>,
}

/// Accepted inputs' embeddings, per language.
///
/// Each one also keeps a 256-bit sketch (random-hyperplane signs, SimHash):
/// two vectors at angle θ differ in about 256·θ/π of its bits, binomially.
/// A query compares exactly only with entries whose sketch is within six
/// standard deviations of what the threshold's angle gives, so a pair at
/// or above the threshold is missed with a probability below one in a
/// billion, while a check costs a few XORs per accepted input instead of
/// 896 multiply-adds (BENCHMARKS.md: ~15x faster at 10,000 inputs). Every
/// match reported is the exact cosine.
#[derive(Debug)]
pub struct SemanticIndex {
    threshold: f64,
    /// Most differing sketch bits a pair at the threshold shows.
    sketch_cutoff: u32,
    /// Hyperplanes for the embedding size first seen (set through `&self`:
    /// probes are made from many threads).
    sketcher: OnceLock<Sketcher>,
    by_language: HashMap<String, Vec<Entry>>,
}

impl SemanticIndex {
    pub fn new(threshold: f64) -> Self {
        Self {
            threshold,
            sketch_cutoff: sketch_cutoff(threshold),
            sketcher: OnceLock::new(),
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

    /// The sketch and norm `embedding` is compared and kept by.
    pub fn probe(&self, embedding: &Embedding) -> Probe {
        let sketcher = self
            .sketcher
            .get_or_init(|| Sketcher::new(embedding.dimensions()));
        Probe {
            norm: embedding.norm(),
            sketch: sketcher.sketch(embedding),
        }
    }

    /// The closest accepted input of `language` at or above the threshold.
    pub fn closest(&self, language: &str, embedding: &Embedding) -> Option<SemanticMatch> {
        self.closest_probed(language, embedding, &self.probe(embedding))
    }

    /// [`Self::closest`] with the embedding's [`Probe`] made already.
    pub fn closest_probed(
        &self,
        language: &str,
        embedding: &Embedding,
        probe: &Probe,
    ) -> Option<SemanticMatch> {
        let entries = self.by_language.get(language)?;
        entries
            .iter()
            .filter(|entry| match (&probe.sketch, &entry.sketch) {
                (Some(a), Some(b)) => distance(a, b) <= self.sketch_cutoff,
                _ => true,
            })
            .map(|entry| {
                let cosine = embedding.cosine_with_norms(&entry.embedding, probe.norm, entry.norm);
                (&entry.id, cosine)
            })
            .filter(|(_, cosine)| *cosine >= self.threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(id, cosine)| SemanticMatch {
                of: id.clone(),
                cosine,
            })
    }

    pub fn insert(&mut self, language: &str, id: &str, embedding: Embedding) {
        let probe = self.probe(&embedding);
        self.insert_probed(language, id, embedding, probe);
    }

    /// [`Self::insert`] with the embedding's [`Probe`] made already.
    pub fn insert_probed(&mut self, language: &str, id: &str, embedding: Embedding, probe: Probe) {
        self.by_language
            .entry(language.to_string())
            .or_default()
            .push(Entry {
                id: id.to_string(),
                norm: probe.norm,
                embedding,
                sketch: probe.sketch,
            });
    }
}

/// Random ±1 hyperplanes (seeded: the same index on every run and resume).
#[derive(Debug)]
struct Sketcher {
    dimensions: usize,
    /// `SKETCH_BITS` rows of `dimensions` signs.
    planes: Vec<i8>,
}

impl Sketcher {
    fn new(dimensions: usize) -> Self {
        let mut state: u64 = 0x5EED_1E55_D0C5_u64;
        let mut planes = Vec::with_capacity(SKETCH_BITS * dimensions);
        while planes.len() < SKETCH_BITS * dimensions {
            // splitmix64
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            for bit in 0..64 {
                if planes.len() == SKETCH_BITS * dimensions {
                    break;
                }
                planes.push(if z >> bit & 1 == 1 { 1 } else { -1 });
            }
        }
        Self { dimensions, planes }
    }

    /// None for an embedding of another size (it is compared exactly).
    fn sketch(&self, embedding: &Embedding) -> Option<Sketch> {
        let values = embedding.values();
        if values.len() != self.dimensions || self.dimensions == 0 {
            return None;
        }
        let mut sketch = [0u64; SKETCH_WORDS];
        for (bit, plane) in self.planes.chunks_exact(self.dimensions).enumerate() {
            let side: i32 = plane
                .iter()
                .zip(values)
                .map(|(&p, &v)| i32::from(p) * i32::from(v))
                .sum();
            if side >= 0 {
                sketch[bit / 64] |= 1 << (bit % 64);
            }
        }
        Some(sketch)
    }
}

fn distance(a: &Sketch, b: &Sketch) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// The most differing bits to compare exactly: the mean for a pair exactly
/// at the threshold's angle plus the margin (binomial spread).
fn sketch_cutoff(threshold: f64) -> u32 {
    let p = threshold.clamp(-1.0, 1.0).acos() / std::f64::consts::PI;
    let bits = SKETCH_BITS as f64;
    let spread = (bits * p * (1.0 - p)).sqrt().max(1.0);
    (bits * p + SKETCH_MARGIN_SIGMAS * spread).ceil().min(bits) as u32
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

    /// Anisotropic vectors like a sentence model's (a shared direction,
    /// topics, noise), with rewordings at angles around the threshold: the
    /// sketch filter finds exactly what comparing with everything finds.
    #[test]
    fn the_sketch_filter_finds_what_an_exhaustive_scan_finds() {
        let mut seed = 7u64;
        let mut gauss = move || {
            // Irwin-Hall: the sum of 12 uniforms, centred.
            (0..12)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed % 10_000) as f32 / 10_000.0
                })
                .sum::<f32>()
                - 6.0
        };
        let dims = 896;
        let mut vector = |scale: f32| -> Vec<f32> { (0..dims).map(|_| gauss() * scale).collect() };
        let shared = vector(1.0);
        let topics: Vec<Vec<f32>> = (0..8).map(|_| vector(1.0)).collect();
        let mix = |parts: &[(&[f32], f32)]| -> Vec<f32> {
            (0..dims)
                .map(|d| parts.iter().map(|(v, w)| v[d] * w).sum())
                .collect()
        };
        let mut index = SemanticIndex::new(0.95);
        let mut accepted: Vec<(String, Embedding)> = Vec::new();
        let mut queries = Vec::new();
        for n in 0..600 {
            let noise = vector(1.0);
            let base = mix(&[(&shared, 2.0), (&topics[n % 8], 1.2), (&noise, 0.8)]);
            let embedding = Embedding::quantise(&base);
            index.insert("en", &format!("r{n}"), embedding.clone());
            accepted.push((format!("r{n}"), embedding));
            // A rewording: the same vector nudged by a little noise, some
            // just inside the threshold and some just outside.
            let nudge = vector(1.0);
            let strength = 0.5 + 0.1 * (n % 7) as f32;
            queries.push(Embedding::quantise(&mix(&[
                (&base, 1.0),
                (&nudge, strength),
            ])));
            queries.push(Embedding::quantise(&vector(1.0)));
        }
        let exhaustive = |query: &Embedding| {
            accepted
                .iter()
                .map(|(id, e)| (id, query.cosine(e)))
                .filter(|(_, c)| *c >= 0.95)
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(id, c)| (id.clone(), c))
        };
        let mut near = 0;
        for query in &queries {
            let expected = exhaustive(query);
            near += usize::from(expected.is_some());
            let found = index.closest("en", query).map(|m| (m.of, m.cosine));
            assert_eq!(
                found.as_ref().map(|f| &f.0),
                expected.as_ref().map(|e| &e.0)
            );
        }
        assert!(
            near > 100 && near < 500,
            "{near} of {} queries have a match",
            queries.len()
        );
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
