//! Which records a review looks at. The sample is stratified (by default by
//! subdomain and task type), its size per stratum follows from the
//! confidence and margin asked for (so the card can state each stratum's
//! acceptance with an interval), and the choice is seeded by the plan: every
//! reviewer, and every restart of the page, sees the same sample in the
//! same order, strata taking turns so early figures cover all of them.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{EdgeKind, Node, NodeKind, NodeStatus};

use super::ledger::{Ledger, REVIEW_EDIT_STEP, ReviewError};
use super::stats::sample_size;
use crate::lineage::LineageStore;
use crate::quality::funnel::judges_quality;

/// The stratum fields a sample can be split by.
pub const STRATUM_FIELDS: [&str; 5] = [
    "subdomain",
    "task_type",
    "persona",
    "language",
    "adversarial",
];

/// What the reviewer asks of the sample.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SampleSettings {
    /// Confidence of each stratum's acceptance interval.
    pub confidence: f64,
    /// Half-width of that interval, at the worst-case rate of one half.
    pub margin: f64,
    /// Fewest records reviewed per stratum (all of them when it has fewer).
    pub minimum: usize,
    /// The stratum fields the sample is split by.
    pub by: Vec<String>,
    /// Only records made after review feedback (a second round's review).
    #[serde(default)]
    pub after_feedback: bool,
    /// Also records the automatic checks rejected, one stratum per check:
    /// reviewing them measures each check against people, and changes
    /// nothing in the dataset.
    #[serde(default)]
    pub checks: bool,
}

impl Default for SampleSettings {
    fn default() -> Self {
        Self {
            confidence: 0.95,
            margin: 0.10,
            minimum: 5,
            by: vec!["subdomain".into(), "task_type".into()],
            after_feedback: false,
            checks: false,
        }
    }
}

impl SampleSettings {
    /// Refuses settings no sample can meet, naming the setting.
    pub fn check(&self) -> Result<(), String> {
        if !(self.confidence > 0.5 && self.confidence < 1.0) {
            return Err(format!(
                "confidence {} must be above 0.5 and below 1 (0.95 is 95%)",
                self.confidence
            ));
        }
        if !(self.margin > 0.0 && self.margin <= 0.5) {
            return Err(format!(
                "margin {} must be above 0 and at most 0.5 (0.1 is +-10 points)",
                self.margin
            ));
        }
        if self.minimum == 0 {
            return Err("minimum per stratum must be at least 1".into());
        }
        if self.by.is_empty() {
            return Err(format!(
                "split the sample by at least one of {}",
                STRATUM_FIELDS.join(", ")
            ));
        }
        if let Some(bad) = self
            .by
            .iter()
            .find(|f| !STRATUM_FIELDS.contains(&f.as_str()))
        {
            return Err(format!(
                "unknown stratum field {bad:?}; one of {}",
                STRATUM_FIELDS.join(", ")
            ));
        }
        Ok(())
    }

    /// The review stratum of a record: its values of the chosen fields.
    pub fn stratum_of(&self, record: &Node) -> String {
        if let Some(check) = check_rejection(record) {
            return format!("{CHECK_STRATUM}{check}");
        }
        let fields = &record.body["stratum_fields"];
        self.by
            .iter()
            .map(|f| match &fields[f.as_str()] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Bool(true) => f.clone(),
                serde_json::Value::Bool(false) => format!("not {f}"),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" / ")
    }
}

/// How the stratum of the records one automatic check rejected begins.
pub const CHECK_STRATUM: &str = "rejected by ";

/// The automatic check that rejected `record`, when a reviewer can judge
/// it: a response with text that a quality check turned away. Failed
/// generations and full quotas say nothing of quality and are left out.
pub fn check_rejection(record: &Node) -> Option<&str> {
    let reason = record.body["reason"].as_str()?;
    let judged = record.kind == NodeKind::Response
        && record.body["decision"] == "rejected"
        && judges_quality(reason)
        && record.body["response"]
            .as_str()
            .is_some_and(|r| !r.trim().is_empty());
    judged.then_some(reason)
}

/// One stratum of the sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StratumSample {
    pub stratum: String,
    pub population: usize,
    pub size: usize,
}

/// The sample: its strata, and the records in review order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SamplePlan {
    pub settings: SampleSettings,
    pub strata: Vec<StratumSample>,
    pub items: Vec<(NodeId, String)>,
    /// Every candidate's stratum, sampled or not.
    #[serde(skip)]
    pub candidates: BTreeMap<NodeId, String>,
    /// Each sampled record's place in `items`.
    #[serde(skip)]
    positions: HashMap<NodeId, usize>,
}

impl SamplePlan {
    pub fn total(&self) -> usize {
        self.items.len()
    }

    pub fn population(&self) -> usize {
        self.strata.iter().map(|s| s.population).sum()
    }

    /// A sampled record's place in review order, from 0.
    pub fn position(&self, record: &NodeId) -> Option<usize> {
        self.positions.get(record).copied()
    }

    /// The stratum of any candidate, sampled or not.
    pub fn stratum_of(&self, record: &NodeId) -> Option<&str> {
        self.candidates.get(record).map(String::as_str)
    }
}

/// Chooses the sample from `(record, stratum)` candidates, seeded.
pub fn plan_sample(
    candidates: &[(NodeId, String)],
    seed: u64,
    settings: &SampleSettings,
) -> SamplePlan {
    let mut by_stratum: BTreeMap<&str, Vec<&NodeId>> = BTreeMap::new();
    for (id, stratum) in candidates {
        by_stratum.entry(stratum.as_str()).or_default().push(id);
    }
    let rank = |id: &NodeId| {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&seed.to_le_bytes());
        hasher.update(b"review sample");
        hasher.update(id.as_str().as_bytes());
        *hasher.finalize().as_bytes()
    };
    let mut strata = Vec::new();
    let mut chosen: Vec<Vec<(NodeId, String)>> = Vec::new();
    for (stratum, mut ids) in by_stratum {
        ids.sort_by_cached_key(|id| rank(id));
        let size = sample_size(
            ids.len(),
            settings.confidence,
            settings.margin,
            settings.minimum,
        );
        strata.push(StratumSample {
            stratum: stratum.to_string(),
            population: ids.len(),
            size,
        });
        chosen.push(
            ids.into_iter()
                .take(size)
                .map(|id| (id.clone(), stratum.to_string()))
                .collect(),
        );
    }
    // Strata take turns.
    let mut items = Vec::new();
    let longest = chosen.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for stratum in &chosen {
            if let Some(item) = stratum.get(i) {
                items.push(item.clone());
            }
        }
    }
    SamplePlan {
        settings: settings.clone(),
        strata,
        positions: items
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (id.clone(), i))
            .collect(),
        items,
        candidates: candidates.iter().cloned().collect(),
    }
}

/// The records a review can look at: those the automatic checks accepted
/// (still accepted, corrected since, or rejected by a reviewer), never a
/// reviewer's corrected version itself; with `after_feedback`, only those
/// whose prompts carried review feedback; with `checks`, also those a
/// quality check rejected.
pub fn population(
    store: &LineageStore,
    plan: &PlanId,
    ledger: &Ledger,
    settings: &SampleSettings,
) -> Result<Vec<Node>, ReviewError> {
    // Feedback nodes are few: a record's grounding is checked against their ids.
    let feedback: HashSet<NodeId> = if settings.after_feedback {
        store
            .nodes_of_plan(plan, Some(NodeKind::Feedback), None)
            .collect::<Result<_, _>>()?
    } else {
        HashSet::new()
    };
    let mut out = Vec::new();
    for status in [
        NodeStatus::Accepted,
        NodeStatus::Superseded,
        NodeStatus::Rejected,
    ] {
        for id in store.nodes_of_plan(plan, Some(NodeKind::Response), Some(status)) {
            let id = id?;
            let rejected = status == NodeStatus::Rejected;
            if rejected && !settings.checks && !ledger.knows(&id) {
                continue; // a check's rejection, not asked for
            }
            let node = store.require(&id)?;
            // Rejected by a check rather than by a reviewer: only when asked,
            // and only for a reason a reviewer can judge.
            let by_check = rejected && node.body["decision"] == "rejected";
            if by_check && !(settings.checks && check_rejection(&node).is_some()) {
                continue;
            }
            if node.step == REVIEW_EDIT_STEP
                || (settings.after_feedback && !grounded_on_any(store, &node.id, &feedback)?)
            {
                continue;
            }
            out.push(node);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Whether `record` was grounded on one of `nodes` (its prompts carried it).
fn grounded_on_any(
    store: &LineageStore,
    record: &NodeId,
    nodes: &HashSet<NodeId>,
) -> Result<bool, ReviewError> {
    Ok(store
        .parents(record)?
        .into_iter()
        .any(|(kind, parent)| kind == EdgeKind::GroundedOn && nodes.contains(&parent)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(strata: &[(&str, usize)]) -> Vec<(NodeId, String)> {
        let plan = PlanId::new("p");
        let mut out = Vec::new();
        for (name, n) in strata {
            for i in 0..*n {
                out.push((
                    NodeId::derive(&plan, &[name, &i.to_string()]),
                    name.to_string(),
                ));
            }
        }
        out
    }

    #[test]
    fn each_stratum_gets_its_own_size_and_strata_take_turns() {
        let all = candidates(&[("big", 1000), ("small", 3), ("mid", 40)]);
        let plan = plan_sample(&all, 7, &SampleSettings::default());
        let size = |s: &str| plan.strata.iter().find(|x| x.stratum == s).unwrap().size;
        assert_eq!(size("big"), 88); // 96.04 / (1 + 95.04 / 1000)
        assert_eq!(size("small"), 3); // everything, under the minimum
        assert_eq!(size("mid"), 29); // 96.04 / (1 + 95.04 / 40) = 28.4
        assert_eq!(plan.total(), 88 + 3 + 29);
        // The first three items come from three different strata.
        let first: std::collections::BTreeSet<&str> =
            plan.items[..3].iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(first.len(), 3);
        // No record twice.
        let ids: std::collections::BTreeSet<&NodeId> =
            plan.items.iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), plan.total());
    }

    #[test]
    fn the_same_seed_gives_the_same_sample_and_another_seed_another() {
        let all = candidates(&[("a", 200), ("b", 200)]);
        let settings = SampleSettings::default();
        assert_eq!(
            plan_sample(&all, 1, &settings),
            plan_sample(&all, 1, &settings)
        );
        assert_ne!(
            plan_sample(&all, 1, &settings).items,
            plan_sample(&all, 2, &settings).items
        );
        // A record added later does not reshuffle who was chosen before it
        // unless it outranks them.
        let mut more = all.clone();
        more.extend(candidates(&[("c", 1)]));
        let before = plan_sample(&all, 1, &settings);
        let after = plan_sample(&more, 1, &settings);
        for item in &before.items {
            assert!(after.items.contains(item));
        }
    }

    #[test]
    fn settings_that_cannot_be_met_are_refused_by_name() {
        let bad = SampleSettings {
            confidence: 1.0,
            ..SampleSettings::default()
        };
        assert!(bad.check().unwrap_err().contains("confidence"));
        let bad = SampleSettings {
            margin: 0.0,
            ..SampleSettings::default()
        };
        assert!(bad.check().unwrap_err().contains("margin"));
        let bad = SampleSettings {
            by: vec!["colour".into()],
            ..SampleSettings::default()
        };
        assert!(bad.check().unwrap_err().contains("colour"));
        assert!(SampleSettings::default().check().is_ok());
    }
}
