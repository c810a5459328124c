//! What a verification found: the conditions x metrics table with 95%
//! intervals, the comparisons the design asks for (Seedling against the
//! base model, the naive baseline and the fact-perturbed control), the
//! dataset card's "Verification" section, and the lineage node that keeps
//! the figures beside the export they verify.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{Edge, EdgeKind, LineageBatch, Node, NodeKind, NodeStatus};
use serde::{Deserialize, Serialize};

use super::TrainRow;
use super::dataset::Leakage;
use super::interval::bootstrap;
use super::probes::Probe;
use super::proxy::BOOTSTRAP_ROUNDS;
use super::sidecar::{ConditionResult, Estimate, TrainingSettings};

/// The condition names the report compares; a user's baseline is `user_baseline`.
pub const BASE: &str = "base";
pub const SEEDLING: &str = "seedling";
pub const NAIVE: &str = "naive";
pub const PERTURBED: &str = "perturbed";

/// The step name of verification nodes.
pub const VERIFICATION_STEP: &str = "verification";

/// Metrics in the order the report leads with them: the fact metrics first
/// (response NLL alone is not evidence: a model trained on shuffled pairs
/// wins most of it too).
pub const METRICS: [(&str, &str, bool); 5] = [
    ("forced_choice", "fact probes: forced choice", true),
    ("fact_nll", "fact probes: fact-token NLL", false),
    (
        "greedy_fact",
        "fact probes: greedy answer states the fact",
        true,
    ),
    ("response_nll", "test split: response NLL", false),
    ("user_nll", "your eval set: response NLL", false),
];

/// One comparison of two conditions on one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub metric: String,
    pub condition: String,
    pub against: String,
    pub difference: f64,
    /// `condition` is better and the two 95% intervals do not overlap.
    pub better_separated: bool,
    /// `condition` is better by its mean.
    pub better: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionSummary {
    pub name: String,
    pub trained: bool,
    pub train_examples: usize,
    pub steps: u32,
    /// Mean training loss over the first and the last tenth of the steps.
    pub loss_first: Option<f64>,
    pub loss_last: Option<f64>,
    pub seconds: f64,
    pub metrics: BTreeMap<String, Estimate>,
    pub strata: BTreeMap<String, Option<Estimate>>,
    /// Forced-choice accuracy per probe source (`glossary`, `rule`,
    /// `reference:<file>`): whose facts the condition got right.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_source: BTreeMap<String, Estimate>,
}

/// How many of the probed facts the train split states: a fact no record
/// states cannot be learned from the dataset, and one stated once hardly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactCoverage {
    pub probes: usize,
    /// Facts found in at least one train record, and in exactly one.
    pub stated: usize,
    pub stated_once: usize,
}

impl FactCoverage {
    /// Counts, for each probe, the train records whose text holds its fact
    /// (case-insensitive, as written in the source).
    pub fn of(probes: &[Probe], train: &[TrainRow]) -> Self {
        let texts: Vec<String> = train
            .iter()
            .map(|r| format!("{}\n{}", r.input, r.response).to_lowercase())
            .collect();
        let mut coverage = Self {
            probes: probes.len(),
            ..Self::default()
        };
        for probe in probes {
            let fact = probe.fact.to_lowercase();
            match texts.iter().filter(|t| t.contains(&fact)).count() {
                0 => {}
                1 => {
                    coverage.stated += 1;
                    coverage.stated_once += 1;
                }
                _ => coverage.stated += 1,
            }
        }
        coverage
    }

    pub fn sentence(&self) -> String {
        format!(
            "the train split states {} of the {} probed facts ({} of them in one record only); a fact no record states cannot be learned from the dataset",
            self.stated, self.probes, self.stated_once
        )
    }
}

/// Forced-choice accuracy per probe source, from each probe's outcome (in
/// probe order).
pub fn by_source(
    probes: &[Probe],
    correct: &[bool],
    chance: f64,
    seed: u64,
) -> BTreeMap<String, Estimate> {
    let mut grouped: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (probe, &won) in probes.iter().zip(correct) {
        grouped
            .entry(probe.source.as_str())
            .or_default()
            .push(if won { 1.0 } else { 0.0 });
    }
    grouped
        .into_iter()
        .filter_map(|(source, values)| {
            bootstrap(&values, BOOTSTRAP_ROUNDS, seed, Some(chance))
                .map(|e| (source.to_string(), e))
        })
        .collect()
}

/// A probe source as a column head: the file name of a reference.
fn short_source(source: &str) -> &str {
    source.rsplit(['/', ':']).next().unwrap_or(source)
}

/// Rows of cells under column heads: a markdown table, or text aligned for
/// the terminal.
fn grid(corner: &str, heads: &[String], rows: &[(&str, Vec<String>)], markdown: bool) -> String {
    let mut out = String::new();
    if markdown {
        let _ = write!(out, "| {corner} |");
        for head in heads {
            let _ = write!(out, " {head} |");
        }
        let _ = writeln!(out, "\n| --- |{}", " ---: |".repeat(heads.len()));
        for (name, cells) in rows {
            let _ = write!(out, "| {name} |");
            for cell in cells {
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
    } else {
        let _ = write!(out, "{corner:<14}");
        for head in heads {
            let _ = write!(out, " {head:>30}");
        }
        out.push('\n');
        for (name, cells) in rows {
            let _ = write!(out, "{name:<14}");
            for cell in cells {
                let _ = write!(out, " {cell:>30}");
            }
            out.push('\n');
        }
    }
    out
}

/// Each condition's estimates under `keys`, "-" where it has none.
fn rows<'a>(
    conditions: &'a [ConditionSummary],
    keys: &[&str],
    of: impl Fn(&'a ConditionSummary) -> &'a BTreeMap<String, Estimate>,
) -> Vec<(&'a str, Vec<String>)> {
    conditions
        .iter()
        .map(|c| {
            let found = of(c);
            let cells = keys
                .iter()
                .map(|k| found.get(*k).map(cell).unwrap_or_else(|| "-".into()))
                .collect();
            (c.name.as_str(), cells)
        })
        .collect()
}

/// The metrics any condition has, in the order the report leads with them.
fn metrics_present(
    conditions: &[ConditionSummary],
) -> Vec<&'static (&'static str, &'static str, bool)> {
    METRICS
        .iter()
        .filter(|(m, _, _)| conditions.iter().any(|c| c.metrics.contains_key(*m)))
        .collect()
}

/// Forced choice per probe source, conditions as rows; empty when no
/// condition has it.
fn source_table(conditions: &[ConditionSummary], corner: &str, markdown: bool) -> String {
    let sources: Vec<&str> = conditions
        .iter()
        .flat_map(|c| c.by_source.keys().map(String::as_str))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if sources.is_empty() {
        return String::new();
    }
    let heads: Vec<String> = sources
        .iter()
        .map(|s| {
            let n = conditions
                .iter()
                .find_map(|c| c.by_source.get(*s))
                .map_or(0, |e| e.n);
            format!("{} ({n})", short_source(s))
        })
        .collect();
    grid(
        corner,
        &heads,
        &rows(conditions, &sources, |c| &c.by_source),
        markdown,
    )
}

/// `verify/report.json`, and the body of the verification lineage node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationReport {
    pub dataset_version: String,
    pub plan: String,
    pub tier: String,
    pub created_at: String,
    pub seconds: f64,
    pub model: String,
    pub device: String,
    /// How each condition was fine-tuned; none for the no-training proxy.
    pub training: Option<TrainingSettings>,
    /// The proxy's records in context per probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shots: Option<usize>,
    pub probes: usize,
    pub probes_by_source: BTreeMap<String, usize>,
    pub test_rows: usize,
    pub leakage: Leakage,
    /// How many of the probed facts the train split states at all.
    #[serde(default)]
    pub coverage: FactCoverage,
    /// Naive examples asked for and usable.
    pub naive: (usize, usize),
    /// Seedling train records with at least one fact to swap.
    pub perturbed_records: usize,
    pub conditions: Vec<ConditionSummary>,
    pub comparisons: Vec<Comparison>,
    pub plots: Vec<String>,
}

fn window_mean(values: &[f64], last: bool) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let n = (values.len() / 10).max(1);
    let slice = if last {
        &values[values.len() - n..]
    } else {
        &values[..n]
    };
    Some(slice.iter().sum::<f64>() / n as f64)
}

pub fn summarize(result: &ConditionResult) -> ConditionSummary {
    ConditionSummary {
        name: result.name.clone(),
        trained: result.trained,
        train_examples: result.train_examples,
        steps: result.steps,
        loss_first: window_mean(&result.loss_curve, false),
        loss_last: window_mean(&result.loss_curve, true),
        seconds: result.seconds,
        metrics: result.metrics.clone(),
        strata: result.strata.clone(),
        by_source: BTreeMap::new(),
    }
}

/// Seedling against every other condition on every metric both have.
pub fn compare(conditions: &[ConditionSummary]) -> Vec<Comparison> {
    let Some(ours) = conditions.iter().find(|c| c.name == SEEDLING) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for other in conditions.iter().filter(|c| c.name != SEEDLING) {
        for (metric, _, higher_is_better) in METRICS {
            let (Some(a), Some(b)) = (ours.metrics.get(metric), other.metrics.get(metric)) else {
                continue;
            };
            let better = if higher_is_better {
                a.mean > b.mean
            } else {
                a.mean < b.mean
            };
            let separated = if higher_is_better {
                a.lo > b.hi
            } else {
                a.hi < b.lo
            };
            out.push(Comparison {
                metric: metric.to_string(),
                condition: SEEDLING.to_string(),
                against: other.name.clone(),
                difference: a.mean - b.mean,
                better,
                better_separated: better && separated,
            });
        }
    }
    out
}

impl VerificationReport {
    /// Where in `DIR/verify/` the report is written: the proxy beside a
    /// fine-tune's, not over it.
    pub fn file_name(&self) -> &'static str {
        if self.tier == PROXY_TIER {
            "proxy.json"
        } else {
            "report.json"
        }
    }

    pub fn condition(&self, name: &str) -> Option<&ConditionSummary> {
        self.conditions.iter().find(|c| c.name == name)
    }

    pub fn comparison(&self, metric: &str, against: &str) -> Option<&Comparison> {
        self.comparisons
            .iter()
            .find(|c| c.metric == metric && c.against == against)
    }

    /// The conditions x metrics table, as plain text for the terminal.
    pub fn table(&self) -> String {
        let metrics = metrics_present(&self.conditions);
        let heads: Vec<String> = metrics
            .iter()
            .map(|(_, label, _)| label.to_string())
            .collect();
        let keys: Vec<&str> = metrics.iter().map(|(m, _, _)| *m).collect();
        let mut out = grid(
            "condition",
            &heads,
            &rows(&self.conditions, &keys, |c| &c.metrics),
            false,
        );
        if let Some(chance) = self
            .conditions
            .iter()
            .find_map(|c| c.metrics.get("forced_choice")?.chance)
        {
            let _ = writeln!(
                out,
                "forced choice: share of {} probes whose true fact scored above every swapped one (chance {chance:.2}); NLL: nats per token, lower is better; [95% bootstrap interval]",
                self.probes
            );
        }
        let sources = source_table(&self.conditions, "by source", false);
        if !sources.is_empty() {
            let _ = write!(out, "\nforced choice by probe source (probes):\n{sources}");
        }
        out
    }

    /// What the comparisons say, one line each, the fact metrics first.
    pub fn verdicts(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for against in [BASE, NAIVE, PERTURBED, "user_baseline"] {
            for metric in ["forced_choice", "fact_nll", "greedy_fact"] {
                let Some(c) = self.comparison(metric, against) else {
                    continue;
                };
                let label = METRICS
                    .iter()
                    .find(|m| m.0 == metric)
                    .map(|m| m.1)
                    .unwrap_or(metric);
                let how = if c.better_separated {
                    "beats it (95% intervals do not overlap)"
                } else if c.better {
                    "is ahead, but the 95% intervals overlap"
                } else {
                    "does NOT beat it"
                };
                lines.push(format!(
                    "seedling vs {against} on {label}: {how} (difference {:+.3})",
                    c.difference
                ));
            }
        }
        lines
    }
}

fn cell(e: &Estimate) -> String {
    format!("{:.3} [{:.3}, {:.3}]", e.mean, e.lo, e.hi)
}

/// The tier name of the no-training proxy.
pub const PROXY_TIER: &str = "proxy";

/// The dataset card's "Verification" section (a fine-tune, or the proxy).
pub fn card_section(report: &VerificationReport) -> String {
    let mut out = String::new();
    let naive = if report.conditions.iter().any(|c| c.name == NAIVE) {
        "`naive` (as many examples from one plain prompt naming the domain, no grounding, no checks), "
    } else {
        ""
    };
    match &report.training {
        Some(training) => {
            let _ = writeln!(out, "## Verification\n");
            let _ = writeln!(
                out,
                "`seedling verify` ({} tier, {}) fine-tuned a LoRA (r={}, {} steps of one example, learning rate {}) of `{}` on each condition with the same steps and seed, then scored every condition on the same held-out sets: {} fact probes built from the plan's own glossary, rules and reference documents (a forced choice between the true fact and facts of the same kind swapped in), and the {} records of the test split. Conditions: `base` (no training), `seedling` (this dataset's train split), {naive}`perturbed` (this train split with its facts swapped between records: the same form, wrong content).\n",
                report.tier,
                report.created_at,
                training.lora_r,
                training.steps,
                training.learning_rate,
                report.model,
                report.probes,
                report.test_rows,
            );
        }
        None => {
            let _ = writeln!(out, "## Verification without training (proxy)\n");
            let _ = writeln!(
                out,
                "`seedling verify --proxy` ({}) scored {} fact probes built from the plan's own glossary, rules and reference documents (a forced choice between the true fact and facts of the same kind swapped in) on `{}` as it is, with the {} records of each condition that share the most words with the probe's question shown before it as earlier chat turns. Conditions: `base` (no records), `seedling` (this dataset's train split), {naive}`perturbed` (this train split with its facts swapped between records). Nothing is trained: this ranks what each set of records puts in front of the model, a quick stand-in for the fine-tuned verification.\n",
                report.created_at,
                report.probes,
                report.model,
                report.shots.unwrap_or_default(),
            );
        }
    }
    let metrics = metrics_present(&report.conditions);
    let heads: Vec<String> = metrics
        .iter()
        .map(|(_, label, higher)| {
            let better = if *higher { "higher" } else { "lower" };
            format!("{label} ({better} is better)")
        })
        .collect();
    let keys: Vec<&str> = metrics.iter().map(|(m, _, _)| *m).collect();
    out.push_str(&grid(
        "condition",
        &heads,
        &rows(&report.conditions, &keys, |c| &c.metrics),
        true,
    ));
    out.push('\n');
    let sources = source_table(&report.conditions, "condition", true);
    if !sources.is_empty() {
        let _ = writeln!(
            out,
            "Forced choice by where the probe's fact comes from (probes in brackets):\n\n{sources}"
        );
    }
    for line in report.verdicts() {
        let _ = writeln!(out, "- {line}");
    }
    if report.coverage.probes > 0 {
        let _ = writeln!(out, "- {}", report.coverage.sentence());
    }
    if report.training.is_some() {
        let _ = writeln!(
            out,
            "- test split against train: {} shared records, highest input ROUGE-L {:.2}, {} near-duplicate inputs (>= 0.7)",
            report.leakage.shared_ids,
            report.leakage.max_input_rouge_l,
            report.leakage.near_duplicates
        );
    }
    let _ = write!(out, "\nFigures: `verify/{}`", report.file_name());
    if !report.plots.is_empty() {
        let plots: Vec<_> = report
            .plots
            .iter()
            .map(|p| format!("`verify/{p}`"))
            .collect();
        let _ = write!(out, "; plots: {}", plots.join(", "));
    }
    out.push_str(".\n\n");
    out
}

/// The verification as a lineage node derived from the export it verified.
pub fn verification_batch(
    plan: &PlanId,
    report: &VerificationReport,
    now_ms: u64,
) -> (NodeId, LineageBatch) {
    let export = NodeId::derive(plan, &["export", &report.dataset_version]);
    let id = NodeId::derive(
        plan,
        &[
            "verification",
            &report.dataset_version,
            &report.tier,
            &report.created_at,
        ],
    );
    let mut params = serde_json::Map::new();
    params.insert("tier".into(), report.tier.clone().into());
    params.insert(
        "dataset_version".into(),
        report.dataset_version.clone().into(),
    );
    params.insert("model".into(), report.model.clone().into());
    let node = Node {
        id: id.clone(),
        plan: plan.clone(),
        kind: NodeKind::Verification,
        status: NodeStatus::Recorded,
        created_at_ms: now_ms,
        step: VERIFICATION_STEP.into(),
        params,
        body: serde_json::to_value(report).unwrap_or_default(),
    };
    let batch = LineageBatch {
        nodes: vec![node],
        edges: vec![Edge::new(&export, &id, EdgeKind::DerivedFrom)],
        status_changes: Vec::new(),
    };
    (id, batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(mean: f64, half: f64) -> Estimate {
        Estimate {
            mean,
            lo: mean - half,
            hi: mean + half,
            n: 20,
            chance: None,
        }
    }

    fn condition(name: &str, accuracy: Estimate, nll: Estimate) -> ConditionSummary {
        ConditionSummary {
            name: name.into(),
            trained: name != BASE,
            train_examples: 10,
            steps: 30,
            loss_first: None,
            loss_last: None,
            seconds: 1.0,
            metrics: BTreeMap::from([
                ("forced_choice".to_string(), accuracy),
                ("fact_nll".to_string(), nll),
            ]),
            strata: BTreeMap::new(),
            by_source: BTreeMap::new(),
        }
    }

    #[test]
    fn comparisons_need_non_overlapping_intervals_to_count_as_separated() {
        let conditions = vec![
            condition(BASE, estimate(0.3, 0.1), estimate(3.0, 0.2)),
            condition(SEEDLING, estimate(0.7, 0.1), estimate(2.9, 0.2)),
            condition(PERTURBED, estimate(0.75, 0.1), estimate(3.5, 0.1)),
        ];
        let found = compare(&conditions);
        let get = |metric: &str, against: &str| {
            found
                .iter()
                .find(|c| c.metric == metric && c.against == against)
                .unwrap()
                .clone()
        };
        assert!(get("forced_choice", BASE).better_separated);
        let nll = get("fact_nll", BASE);
        assert!(
            nll.better && !nll.better_separated,
            "lower NLL, overlapping"
        );
        let perturbed = get("forced_choice", PERTURBED);
        assert!(!perturbed.better && !perturbed.better_separated);
        assert!(get("fact_nll", PERTURBED).better_separated);
    }

    #[test]
    fn coverage_counts_the_probed_facts_the_train_split_states() {
        let probe = |fact: &str| Probe {
            id: fact.into(),
            source: "glossary".into(),
            prompt: "?".into(),
            answer: fact.into(),
            fact: fact.into(),
            fact_kind: "money".into(),
            fact_start: 0,
            alternatives: vec![],
        };
        let row = |response: &str| TrainRow {
            id: response.into(),
            input: "How much?".into(),
            response: response.into(),
            stratum: String::new(),
        };
        let coverage = FactCoverage::of(
            &[probe("25 Dollars"), probe("3:00 pm"), probe("45 dollars")],
            &[
                row("A wire costs 25 dollars."),
                row("Also 25 dollars, before 3:00 PM."),
            ],
        );
        assert_eq!(
            coverage,
            FactCoverage {
                probes: 3,
                stated: 2,
                stated_once: 1
            }
        );
        assert!(
            coverage
                .sentence()
                .contains("2 of the 3 probed facts (1 of them")
        );
    }

    #[test]
    fn loss_windows_are_the_first_and_last_tenth() {
        let curve: Vec<f64> = (0..20).map(|i| 20.0 - i as f64).collect();
        assert_eq!(window_mean(&curve, false), Some(19.5));
        assert_eq!(window_mean(&curve, true), Some(1.5));
        assert_eq!(window_mean(&[], true), None);
    }
}
