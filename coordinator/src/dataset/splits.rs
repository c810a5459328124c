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
/// subdomain's records. Then every split with a share above zero that got
/// nothing takes one group, when there are groups enough to go round: a
/// small dataset would otherwise put everything in train and ship empty
/// validation and test files, which loaders such as Hugging Face
/// `datasets` refuse. Deterministic for the same groups and seed.
pub fn assign_splits(groups: &[Group], ratios: [f64; 3], seed: u64) -> BTreeMap<String, Split> {
    let mut out = assign_by_subdomain(groups, ratios, seed);
    let wanted: Vec<Split> = (0..3)
        .filter(|&i| ratios[i] > 0.0)
        .map(|i| Split::ALL[i])
        .collect();
    if groups.len() < wanted.len() {
        return out;
    }
    for &empty in &wanted {
        if members(groups, &out, empty).next().is_some() {
            continue;
        }
        // The split holding the most groups (it holds at least two, since
        // there are groups enough) gives its smallest one.
        let donor = *wanted
            .iter()
            .max_by_key(|&&s| (members(groups, &out, s).count(), std::cmp::Reverse(s)))
            .expect("a split with a share");
        let given = members(groups, &out, donor)
            .min_by_key(|g| (g.records, order_key(seed, &g.id)))
            .map(|g| g.id.clone())
            .expect("the donor holds groups");
        out.insert(given, empty);
    }
    out
}

/// The groups `assignment` puts in `split`.
fn members<'a>(
    groups: &'a [Group],
    assignment: &'a BTreeMap<String, Split>,
    split: Split,
) -> impl Iterator<Item = &'a Group> {
    groups.iter().filter(move |g| assignment[&g.id] == split)
}

fn assign_by_subdomain(groups: &[Group], ratios: [f64; 3], seed: u64) -> BTreeMap<String, Split> {
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
    fn a_split_with_a_share_is_never_left_empty_when_groups_go_round() {
        // Three subdomains of one to three single-record groups: by
        // subdomain alone every group would land in train.
        let mut all = groups("cards", 3, 1);
        all.extend(groups("loans", 3, 1));
        all.extend(groups("fees", 2, 1));
        let ratios = [0.8, 0.1, 0.1];
        let assignment = assign_splits(&all, ratios, 7);
        let per = |split| assignment.values().filter(|&&s| s == split).count();
        assert_eq!(assignment.len(), all.len());
        assert_eq!(
            [per(Split::Train), per(Split::Validation), per(Split::Test)],
            [6, 1, 1]
        );
        assert_eq!(assignment, assign_splits(&all, ratios, 7));

        // Fewer groups than splits with a share: nothing to move.
        let two = groups("cards", 2, 1);
        let assignment = assign_splits(&two, ratios, 7);
        assert_eq!(assignment.len(), 2);
        // A split whose share is zero stays empty.
        let assignment = assign_splits(&all, [0.9, 0.1, 0.0], 7);
        assert!(assignment.values().all(|&s| s != Split::Test));
        assert!(assignment.values().any(|&s| s == Split::Validation));
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
