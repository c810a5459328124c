//! The figures a review states: how many records to look at for a given
//! confidence and margin, the acceptance rate's interval, and how much two
//! reviewers agree. Pure arithmetic.

use serde::Serialize;

/// The standard normal quantile (Acklam's rational approximation, relative
/// error below 1.2e-9): the `z` of a two-sided interval at `confidence` is
/// `normal_quantile(1 - (1 - confidence) / 2)`.
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    let low = 0.02425;
    if p <= low {
        tail((-2.0 * p.ln()).sqrt())
    } else if p >= 1.0 - low {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// `z` for a two-sided interval at `confidence` (0.95 gives 1.96).
pub fn z_for(confidence: f64) -> f64 {
    normal_quantile(1.0 - (1.0 - confidence) / 2.0)
}

/// How many of `population` records to review so that the acceptance rate
/// is known within `margin` at `confidence`: the worst case (a rate of one
/// half), corrected for a finite population, never fewer than `minimum`
/// and never more than there are.
pub fn sample_size(population: usize, confidence: f64, margin: f64, minimum: usize) -> usize {
    if population == 0 {
        return 0;
    }
    let z = z_for(confidence);
    let infinite = z * z * 0.25 / (margin * margin);
    // A margin so small the infinite-population size overflows asks for
    // every record (inf / inf would be NaN, and NaN casts to 0).
    let finite = if infinite.is_finite() {
        infinite / (1.0 + (infinite - 1.0) / population as f64)
    } else {
        population as f64
    };
    (finite.ceil() as usize).max(minimum).min(population)
}

/// A proportion with its Wilson score interval (sound at small samples and
/// at rates near 0 or 1, where the normal approximation is not).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Proportion {
    pub successes: usize,
    pub total: usize,
    pub rate: f64,
    pub low: f64,
    pub high: f64,
}

pub fn wilson(successes: usize, total: usize, confidence: f64) -> Proportion {
    if total == 0 {
        return Proportion {
            successes,
            total,
            rate: 0.0,
            low: 0.0,
            high: 1.0,
        };
    }
    let n = total as f64;
    let p = successes as f64 / n;
    let z = z_for(confidence);
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Proportion {
        successes,
        total,
        rate: p,
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    }
}

impl Proportion {
    /// As the card and `review sample` print it: "-" before anything was
    /// reviewed.
    pub fn shown(&self) -> String {
        if self.total == 0 {
            "-".to_string()
        } else {
            self.to_string()
        }
    }
}

/// An estimated share as the card and `review sample` print it: "-" while
/// it cannot be estimated.
pub fn share_shown(share: Option<f64>) -> String {
    share.map_or("-".to_string(), |s| format!("{s:.2}"))
}

impl std::fmt::Display for Proportion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} [{:.2}, {:.2}]", self.rate, self.low, self.high)
    }
}

/// Cohen's kappa of two raters over the same items, each label one of a
/// few categories: agreement beyond what their label frequencies would
/// give by chance. `None` without items; 1.0 when both always give the one
/// same label (no disagreement is possible to measure, and none happened).
pub fn cohens_kappa<L: Eq + std::hash::Hash + Clone>(pairs: &[(L, L)]) -> Option<f64> {
    if pairs.is_empty() {
        return None;
    }
    let n = pairs.len() as f64;
    let observed = pairs.iter().filter(|(a, b)| a == b).count() as f64 / n;
    let mut first = std::collections::HashMap::new();
    let mut second = std::collections::HashMap::new();
    for (a, b) in pairs {
        *first.entry(a.clone()).or_insert(0usize) += 1;
        *second.entry(b.clone()).or_insert(0usize) += 1;
    }
    let expected: f64 = first
        .iter()
        .map(|(label, count)| {
            *count as f64 / n * second.get(label).copied().unwrap_or(0) as f64 / n
        })
        .sum();
    if (1.0 - expected).abs() < 1e-12 {
        return Some(1.0);
    }
    Some((observed - expected) / (1.0 - expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_the_tables() {
        assert!((z_for(0.95) - 1.959_964).abs() < 1e-5);
        assert!((z_for(0.90) - 1.644_854).abs() < 1e-5);
        assert!((z_for(0.99) - 2.575_829).abs() < 1e-5);
        assert!((normal_quantile(0.001) + 3.090_232).abs() < 1e-5);
        assert!(normal_quantile(0.5).abs() < 1e-12);
    }

    #[test]
    fn sample_sizes_follow_confidence_margin_and_population() {
        // 95% +-10% of a large population: the textbook 97 (0.25 * 1.96^2 / 0.01 = 96.04).
        assert_eq!(sample_size(1_000_000, 0.95, 0.10, 5), 97);
        // A finite population needs fewer: 1 + (96.04 - 1) / 100 = 1.95 -> 49.2.
        assert_eq!(sample_size(100, 0.95, 0.10, 5), 50);
        // Tighter margin, higher confidence: more.
        assert!(sample_size(1000, 0.99, 0.05, 5) > sample_size(1000, 0.95, 0.10, 5));
        // The minimum holds, but never beyond what exists.
        assert_eq!(sample_size(4, 0.95, 0.5, 5), 4);
        assert_eq!(sample_size(40, 0.8, 0.45, 6), 6);
        assert_eq!(sample_size(0, 0.95, 0.1, 5), 0);
        // A margin too small for f64 asks for everything, not the minimum.
        assert_eq!(sample_size(300, 0.95, 1e-300, 5), 300);
    }

    #[test]
    fn wilson_intervals_match_a_reference_and_stay_in_bounds() {
        // 81 of 100 at 95%: [0.7222, 0.8749] (Wilson, as R's prop.test without correction).
        let p = wilson(81, 100, 0.95);
        assert!(
            (p.low - 0.7222).abs() < 1e-3 && (p.high - 0.8749).abs() < 1e-3,
            "{p:?}"
        );
        let all = wilson(10, 10, 0.95);
        assert_eq!(all.high, 1.0);
        assert!(all.low > 0.6 && all.low < 0.75, "{all:?}");
        assert_eq!(wilson(0, 0, 0.95).total, 0);
        assert_eq!(format!("{}", wilson(81, 100, 0.95)), "0.81 [0.72, 0.87]");
    }

    #[test]
    fn kappa_separates_agreement_from_chance() {
        // Perfect agreement over two labels.
        let same: Vec<(&str, &str)> = vec![("a", "a"), ("r", "r"), ("a", "a"), ("r", "r")];
        assert_eq!(cohens_kappa(&same), Some(1.0));
        // Always opposite: below zero.
        let opposite: Vec<(&str, &str)> = vec![("a", "r"), ("r", "a"), ("a", "r"), ("r", "a")];
        assert!(cohens_kappa(&opposite).unwrap() < 0.0);
        // The textbook example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> 0.4.
        let mut book = vec![("y", "y"); 20];
        book.extend(vec![("y", "n"); 5]);
        book.extend(vec![("n", "y"); 10]);
        book.extend(vec![("n", "n"); 15]);
        assert!((cohens_kappa(&book).unwrap() - 0.4).abs() < 1e-9);
        assert_eq!(cohens_kappa::<&str>(&[]), None);
    }
}
