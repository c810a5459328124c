//! Train/validation/test assignment by lineage group, never by row: every
//! record descended from the same seed, template instance or near-duplicate
//! cluster lands in the same split, so nothing leaks from train into test.
//! Stratified by subdomain: each subdomain's groups are split by the ratios.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Validation, Split::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

/// A lineage group: the records that must share a split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub subdomain: String,
    /// Accepted records in the group.
    pub records: usize,
}

fn order_key(seed: u64, id: &str) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.update(id.as_bytes());
    *hasher.finalize().as_bytes()
}

/// Assigns every group a split. Within each subdomain, groups in a seeded
/// order go to whichever split is furthest below its share of that
/// subdomain's records. Deterministic for the same groups and seed.
pub fn assign_splits(groups: &[Group], ratios: [f64; 3], seed: u64) -> BTreeMap<String, Split> {
    let mut by_subdomain: BTreeMap<&str, Vec<&Group>> = BTreeMap::new();
    for group in groups {
        by_subdomain
            .entry(group.subdomain.as_str())
            .or_default()
            .push(group);
    }
    let mut out = BTreeMap::new();
    for (_, mut members) in by_subdomain {
        members.sort_by_key(|g| order_key(seed, &g.id));
        let total: usize = members.iter().map(|g| g.records).sum();
        let mut filled = [0usize; 3];
        for group in members {
            // the split with the largest deficit against its target share
            let deficit = |i: usize| ratios[i] * total as f64 - filled[i] as f64;
            let chosen = (0..3)
                .filter(|&i| ratios[i] > 0.0)
                .max_by(|&a, &b| deficit(a).total_cmp(&deficit(b)).then(b.cmp(&a)))
                .unwrap_or(0);
            filled[chosen] += group.records;
            out.insert(group.id.clone(), Split::ALL[chosen]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(subdomain: &str, n: usize, size: usize) -> Vec<Group> {
        (0..n)
            .map(|i| Group {
                id: format!("{subdomain}-{i}"),
                subdomain: subdomain.into(),
                records: size,
            })
            .collect()
    }

    fn count(
        assignment: &BTreeMap<String, Split>,
        groups: &[Group],
        subdomain: &str,
        split: Split,
    ) -> usize {
        groups
            .iter()
            .filter(|g| g.subdomain == subdomain && assignment[&g.id] == split)
            .map(|g| g.records)
            .sum()
    }

    #[test]
    fn ratios_hold_per_subdomain() {
        // (groups per subdomain, records per group, ratios, expected train/validation/test per subdomain)
        let cases = [
            (10, 1, [0.8, 0.1, 0.1], [8, 1, 1]),
            (20, 2, [0.5, 0.25, 0.25], [20, 10, 10]),
            (4, 1, [1.0, 0.0, 0.0], [4, 0, 0]),
        ];
        for (n, size, ratios, want) in cases {
            let mut all = groups("cards", n, size);
            all.extend(groups("loans", n, size));
            let assignment = assign_splits(&all, ratios, 7);
            for subdomain in ["cards", "loans"] {
                let got = Split::ALL.map(|s| count(&assignment, &all, subdomain, s));
                assert_eq!(got, want, "{subdomain} with {ratios:?}");
            }
        }
    }

    #[test]
    fn every_group_gets_one_split_deterministically() {
        let mut all = groups("cards", 13, 3);
        all.extend(groups("loans", 7, 1));
        let a = assign_splits(&all, [0.8, 0.1, 0.1], 42);
        assert_eq!(a.len(), all.len());
        assert_eq!(a, assign_splits(&all, [0.8, 0.1, 0.1], 42));
        let other_seed = assign_splits(&all, [0.8, 0.1, 0.1], 43);
        assert_ne!(a, other_seed, "the seed decides which groups go where");
    }
}
