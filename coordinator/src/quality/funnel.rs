//! The acceptance funnel: how many attempts survive each stage, from the
//! rejection reasons the pipeline records on every response.

use std::collections::BTreeMap;

use serde::Serialize;

/// The stages an attempt passes, in order.
pub const STAGES: [&str; 5] = [
    "generated",
    "passed heuristics",
    "passed quality score",
    "after dedup and novelty",
    "accepted (within quota)",
];

/// The reason of an attempt whose model calls failed on the worker.
pub const GENERATION_FAILED: &str = "generation_failed";
/// The rejection of an answer that repeats one reviewers rejected.
pub const REPEATS_REJECTED: &str = "repeats_rejected";

/// The stage a rejection reason stops an attempt at (index into `STAGES`).
pub fn stage_of(reason: &str) -> usize {
    match reason {
        GENERATION_FAILED => 0,
        "low_quality_score" | "judge_rejected" => 2,
        "exact_duplicate" | "near_duplicate" | "semantic_duplicate" | "too_similar"
        | REPEATS_REJECTED => 3,
        "quota_filled" => 4,
        _ => 1, // every model-free check, Evol-Instruct's elimination included
    }
}

/// Whether a rejection says something of the pair's quality (a check, the
/// score, a duplicate), rather than that generation failed or the quota
/// was already full.
pub fn judges_quality(reason: &str) -> bool {
    (1..=3).contains(&stage_of(reason))
}

/// One funnel row: the stage and how many attempts reached it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunnelRow {
    pub stage: &'static str,
    pub count: u64,
}

/// Attempts reaching each stage, given all attempts and the rejections by reason.
pub fn funnel(attempts: u64, rejected: &BTreeMap<String, u64>) -> Vec<FunnelRow> {
    let mut lost = [0u64; 5];
    for (reason, count) in rejected {
        lost[stage_of(reason)] += count;
    }
    let mut left = attempts;
    STAGES
        .iter()
        .zip(lost)
        .map(|(stage, lost)| {
            left = left.saturating_sub(lost);
            FunnelRow { stage, count: left }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_removes_attempts_at_its_stage() {
        let rejected: BTreeMap<String, u64> = [
            ("generation_failed", 1),
            ("refusal", 3),
            ("evol_no_information_gain", 1),
            ("low_quality_score", 2),
            ("exact_duplicate", 1),
            ("too_similar", 1),
            ("quota_filled", 2),
        ]
        .into_iter()
        .map(|(r, n)| (r.to_string(), n))
        .collect();
        let counts: Vec<u64> = funnel(30, &rejected).iter().map(|r| r.count).collect();
        assert_eq!(counts, vec![29, 25, 23, 21, 19]);
    }
}
