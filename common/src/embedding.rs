//! Sentence embeddings as they travel and are kept: L2-normalised vectors
//! quantised to one signed byte per dimension. A 0.5B model's 896 floats
//! become 896 bytes (1,792 hex characters on the wire and in the lineage
//! store) instead of ~9 KB of JSON numbers, and the cosine of two quantised
//! vectors stays within about 0.01 of the float one, far below the gap
//! between paraphrases and distinct questions.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A quantised, unit-length embedding (`round(x * 127)` per dimension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embedding(Vec<i8>);

impl Embedding {
    /// Quantises a vector; it is normalised first, so any length works.
    pub fn quantise(vector: &[f32]) -> Self {
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        let scale = if norm > 0.0 { 127.0 / norm } else { 0.0 };
        Self(
            vector
                .iter()
                .map(|x| (x * scale).round().clamp(-127.0, 127.0) as i8)
                .collect(),
        )
    }

    pub fn dimensions(&self) -> usize {
        self.0.len()
    }

    /// The quantised components.
    pub fn values(&self) -> &[i8] {
        &self.0
    }

    /// The unit-length float vector it stands for (all zeros for a zero vector).
    pub fn to_unit(&self) -> Vec<f64> {
        let norm = self
            .0
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        self.0.iter().map(|&x| f64::from(x) * scale).collect()
    }

    /// Cosine similarity; 0 for vectors of different sizes or a zero vector.
    pub fn cosine(&self, other: &Embedding) -> f64 {
        self.cosine_with_norms(other, self.norm(), other.norm())
    }

    /// Euclidean length of the quantised vector (~127 for a unit vector).
    pub fn norm(&self) -> f64 {
        f64::from(self.dot(self)).sqrt()
    }

    /// Cosine when both norms are known: one pass of i8 multiply-adds, which
    /// the compiler vectorises (an index compares with every entry).
    pub fn cosine_with_norms(&self, other: &Embedding, norm: f64, other_norm: f64) -> f64 {
        if self.0.len() != other.0.len() || norm == 0.0 || other_norm == 0.0 {
            return 0.0;
        }
        f64::from(self.dot(other)) / (norm * other_norm)
    }

    /// Integer dot product; 896 dimensions of at most 127² stay far inside i32.
    fn dot(&self, other: &Embedding) -> i32 {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum()
    }

    fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(self.0.len() * 2);
        for &b in &self.0 {
            let b = b as u8;
            out.push(DIGITS[usize::from(b >> 4)] as char);
            out.push(DIGITS[usize::from(b & 15)] as char);
        }
        out
    }

    fn from_hex(text: &str) -> Result<Self, String> {
        if !text.len().is_multiple_of(2) {
            return Err(format!("embedding hex has odd length {}", text.len()));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(&text[i..i + 2], 16)
                    .map(|b| b as i8)
                    .map_err(|e| format!("embedding hex at {i}: {e}"))
            })
            .collect::<Result<Vec<i8>, String>>()
            .map(Self)
    }
}

impl Serialize for Embedding {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Embedding {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float_cosine(a: &[f32], b: &[f32]) -> f64 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        f64::from(dot / (na * nb))
    }

    /// Deterministic pseudo-random vector in [-1, 1).
    fn vector(seed: u64, n: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn quantised_cosine_stays_close_to_the_float_cosine() {
        let a = vector(1, 896);
        let b: Vec<f32> = a
            .iter()
            .zip(vector(2, 896))
            .map(|(x, y)| x + 0.5 * y)
            .collect();
        let c = vector(3, 896);
        for (x, y) in [(&a, &b), (&a, &c), (&b, &c), (&a, &a)] {
            let exact = float_cosine(x, y);
            let quantised = Embedding::quantise(x).cosine(&Embedding::quantise(y));
            assert!((exact - quantised).abs() < 0.01, "{exact} vs {quantised}");
        }
    }

    #[test]
    fn round_trips_through_json_and_rejects_bad_hex() {
        let e = Embedding::quantise(&vector(7, 32));
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json.len(), 2 + 64);
        assert_eq!(serde_json::from_str::<Embedding>(&json).unwrap(), e);
        assert!(serde_json::from_str::<Embedding>("\"abc\"").is_err());
        assert!(serde_json::from_str::<Embedding>("\"zz\"").is_err());
    }

    #[test]
    fn mismatched_or_zero_vectors_have_no_similarity() {
        let a = Embedding::quantise(&[1.0, 0.0]);
        assert_eq!(a.cosine(&Embedding::quantise(&[1.0, 0.0, 0.0])), 0.0);
        assert_eq!(a.cosine(&Embedding::quantise(&[0.0, 0.0])), 0.0);
        assert!((a.cosine(&Embedding::quantise(&[2.0, 0.0])) - 1.0).abs() < 1e-9);
    }
}
