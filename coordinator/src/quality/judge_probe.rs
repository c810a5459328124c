//! Probes of the model judge's reliability, built from the plan itself so
//! they work for any domain: for each glossary term, "what does TERM mean?"
//! answered with its definition (correct), with another term's definition
//! (contradicting), and with the correct answer padded by polite filler that
//! adds nothing (longer, not better). The engine runs the calls; this module
//! only builds the items and reads the figures out of the judgements.
//!
//! - correctness: does the correct answer outscore the contradicting one?
//! - self-consistency: do two seeds grade the same answer alike?
//! - length bias: how much more does padding earn (it should earn nothing)?
//! - position bias: asked "A or B?" with both orders, does the verdict
//!   follow the answer or the position?

use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{Edge, EdgeKind, LineageBatch, Node, NodeKind, NodeStatus};
use serde::{Deserialize, Serialize};

use seedling_common::work::ModelCall;

use crate::lineage::plan_node_id;
use crate::plan::Plan;
use crate::prompts::{judge as judge_call, judge_score, pairwise_judge};

/// The step of the lineage node that keeps a probe's figures for a plan.
pub const RELIABILITY_STEP: &str = "judge_reliability";

/// Filler that makes an answer longer and no better.
pub const PADDING: &str = " Thank you so much for reaching out to us today, we truly value you as a \
    customer. We hope this explanation has been helpful to you. Please do not hesitate to contact us \
    again if you have any other questions at all. Have a wonderful day!";

/// One probe: a question with three answers.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeItem {
    pub question: String,
    pub correct: String,
    pub contradicting: String,
}

impl ProbeItem {
    pub fn padded(&self) -> String {
        format!("{}{PADDING}", self.correct)
    }
}

/// Up to `max` items from the plan's glossary; each contradicting answer is
/// the next term's definition. Needs two terms with different definitions.
pub fn probe_items(plan: &Plan, max: usize) -> Result<Vec<ProbeItem>, String> {
    let glossary = &plan.glossary;
    if glossary.len() < 2 {
        return Err(format!(
            "the judge probe builds its questions from the plan's glossary, which has {} term(s); it needs at least 2",
            glossary.len()
        ));
    }
    Ok(glossary
        .iter()
        .enumerate()
        .filter_map(|(i, entry)| {
            let other = &glossary[(i + 1) % glossary.len()];
            (other.definition.trim() != entry.definition.trim()).then(|| ProbeItem {
                question: format!("What does \"{}\" mean?", entry.term),
                correct: entry.definition.clone(),
                contradicting: other.definition.clone(),
            })
        })
        .take(max)
        .collect())
}

/// Every judge call of a probe, in the order [`read_judgements`] reads the
/// answers back: per item, `seeds` rubric calls for each of the correct,
/// contradicting and padded answers, then `seeds` pairs of pairwise calls
/// (correct answer first, then second).
pub fn probe_calls(plan: &Plan, items: &[ProbeItem], seeds: u32) -> Vec<ModelCall> {
    let mut calls = Vec::new();
    for item in items {
        for answer in [&item.correct, &item.contradicting, &item.padded()] {
            for seed in 1..=seeds {
                calls.push(judge_call(plan, seed).filled(&item.question, answer));
            }
        }
        for seed in 1..=seeds {
            calls.push(pairwise_judge(
                plan,
                &item.question,
                &item.correct,
                &item.contradicting,
                seed,
            ));
            calls.push(pairwise_judge(
                plan,
                &item.question,
                &item.contradicting,
                &item.correct,
                seed,
            ));
        }
    }
    calls
}

/// The judgements of [`probe_calls`]' answers (texts in the same order),
/// and how many rubric judgements did not parse (they count as 0).
pub fn read_judgements(
    items: usize,
    seeds: u32,
    texts: Vec<String>,
) -> (Vec<ItemJudgements>, usize) {
    let mut texts = texts.into_iter();
    let mut take =
        |n: u32| -> Vec<String> { (0..n).map(|_| texts.next().unwrap_or_default()).collect() };
    let mut unparsed = 0;
    let mut scores = |texts: Vec<String>| -> Vec<f64> {
        texts
            .iter()
            .map(|text| {
                serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|j| judge_score(&j))
                    .unwrap_or_else(|| {
                        unparsed += 1;
                        0.0
                    })
            })
            .collect()
    };
    let better = |text: &String| {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|j| j["better"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let mut judged = Vec::with_capacity(items);
    for _ in 0..items {
        let correct = scores(take(seeds));
        let contradicting = scores(take(seeds));
        let padded = scores(take(seeds));
        let verdicts = take(seeds * 2);
        judged.push(ItemJudgements {
            correct,
            contradicting,
            padded,
            correct_first: verdicts.iter().step_by(2).map(better).collect(),
            correct_second: verdicts.iter().skip(1).step_by(2).map(better).collect(),
        });
    }
    (judged, unparsed)
}

/// The rubric scores (in [0, 1]) of one item, `seeds` each; and the
/// pairwise verdicts ("A"/"B") with the correct answer first and second.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemJudgements {
    pub correct: Vec<f64>,
    pub contradicting: Vec<f64>,
    pub padded: Vec<f64>,
    pub correct_first: Vec<String>,
    pub correct_second: Vec<String>,
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeReliability {
    pub items: usize,
    pub judgements: usize,
    /// Items whose correct answer scored higher on average than the contradicting one.
    pub correct_beats_contradicting: usize,
    /// Mean score of correct minus contradicting answers (in [0, 1] units).
    pub correctness_margin: f64,
    /// Pairs of seeds grading one answer within one rubric point (0.25).
    pub self_agreement: f64,
    /// Mean score of padded minus plain correct answers: > 0 rewards length.
    pub length_bias: f64,
    /// Share of pairwise verdicts that pick the same answer in both orders.
    pub position_consistency: f64,
    /// Share of all pairwise verdicts that pick the first position.
    pub first_position_share: f64,
    /// Share of pairwise verdicts that pick the correct answer.
    pub pairwise_accuracy: f64,
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

fn share(hits: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        hits as f64 / of as f64
    }
}

pub fn reliability(judged: &[ItemJudgements]) -> JudgeReliability {
    let mut wins = 0;
    let (mut margins, mut length) = (Vec::new(), Vec::new());
    let (mut agree, mut pairs) = (0, 0);
    let (mut consistent, mut orders) = (0, 0);
    let (mut first, mut right, mut verdicts) = (0, 0, 0);
    let mut judgements = 0;
    for item in judged {
        let (c, w) = (mean(&item.correct), mean(&item.contradicting));
        wins += usize::from(c > w);
        margins.push(c - w);
        length.push(mean(&item.padded) - c);
        for scores in [&item.correct, &item.contradicting, &item.padded] {
            judgements += scores.len();
            for pair in scores.windows(2) {
                pairs += 1;
                agree += usize::from((pair[0] - pair[1]).abs() <= 0.25 + 1e-9);
            }
        }
        for (a_first, a_second) in item.correct_first.iter().zip(&item.correct_second) {
            orders += 1;
            // The same answer both times: A when it came first, B when second.
            consistent += usize::from((a_first == "A") == (a_second == "B"));
        }
        for verdict in &item.correct_first {
            verdicts += 1;
            first += usize::from(verdict == "A");
            right += usize::from(verdict == "A");
        }
        for verdict in &item.correct_second {
            verdicts += 1;
            first += usize::from(verdict == "A");
            right += usize::from(verdict == "B");
        }
        judgements += item.correct_first.len() + item.correct_second.len();
    }
    JudgeReliability {
        items: judged.len(),
        judgements,
        correct_beats_contradicting: wins,
        correctness_margin: mean(&margins),
        self_agreement: share(agree, pairs),
        length_bias: mean(&length),
        position_consistency: share(consistent, orders),
        first_position_share: share(first, verdicts),
        pairwise_accuracy: share(right, verdicts),
    }
}

/// The probe's figures as a lineage node under the plan, so the dataset
/// card of every later export reports them (with the model that judged).
pub fn reliability_batch(
    plan: &PlanId,
    model: &str,
    figures: &JudgeReliability,
    at_ms: u64,
) -> LineageBatch {
    let id = NodeId::derive(plan, &[RELIABILITY_STEP, model, &at_ms.to_string()]);
    let mut params = serde_json::Map::new();
    params.insert("model".into(), model.into());
    LineageBatch {
        nodes: vec![Node {
            id: id.clone(),
            plan: plan.clone(),
            kind: NodeKind::Judgement,
            status: NodeStatus::Recorded,
            created_at_ms: at_ms,
            step: RELIABILITY_STEP.into(),
            params,
            body: serde_json::to_value(figures).expect("figures serialise"),
        }],
        edges: vec![Edge::new(&plan_node_id(plan), &id, EdgeKind::JudgedBy)],
        status_changes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::plan::fixtures::retail as plan;

    #[test]
    fn items_come_from_the_glossary_and_contradict_with_another_definition() {
        let plan = plan();
        let items = probe_items(&plan, 3).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(probe_items(&plan, 100).unwrap().len(), plan.glossary.len());
        let first = &plan.glossary[0];
        assert!(items[0].question.contains(&first.term));
        assert_eq!(items[0].correct, first.definition);
        assert_eq!(items[0].contradicting, plan.glossary[1].definition);
        assert!(items[0].padded().len() > items[0].correct.len() + 100);
        let mut bare = plan.clone();
        bare.glossary.truncate(1);
        assert!(probe_items(&bare, 5).unwrap_err().contains("at least 2"));
    }

    fn item(
        correct: &[f64],
        wrong: &[f64],
        padded: &[f64],
        first: &[&str],
        second: &[&str],
    ) -> ItemJudgements {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        ItemJudgements {
            correct: correct.to_vec(),
            contradicting: wrong.to_vec(),
            padded: padded.to_vec(),
            correct_first: s(first),
            correct_second: s(second),
        }
    }

    #[test]
    fn a_judge_that_always_says_a_is_position_biased_and_a_fair_one_is_not() {
        // Always "A", scores everything 1.0: no discrimination, full position bias.
        let blind = reliability(&[
            item(
                &[1.0, 1.0],
                &[1.0, 1.0],
                &[1.0, 1.0],
                &["A", "A"],
                &["A", "A"],
            ),
            item(&[1.0, 1.0], &[1.0, 1.0], &[1.0, 1.0], &["A"], &["A"]),
        ]);
        assert_eq!(blind.correct_beats_contradicting, 0);
        assert_eq!(blind.position_consistency, 0.0);
        assert_eq!(blind.first_position_share, 1.0);
        assert_eq!(blind.pairwise_accuracy, 0.5);
        assert_eq!(blind.self_agreement, 1.0);
        // Picks the correct answer whatever its position; padding earns 0.25.
        let fair = reliability(&[item(
            &[0.75, 0.75],
            &[0.0, 0.5],
            &[1.0, 1.0],
            &["A", "A"],
            &["B", "B"],
        )]);
        assert_eq!(fair.correct_beats_contradicting, 1);
        assert_eq!(fair.position_consistency, 1.0);
        assert_eq!(fair.pairwise_accuracy, 1.0);
        assert!((fair.length_bias - 0.25).abs() < 1e-9);
        assert!((fair.correctness_margin - 0.5).abs() < 1e-9);
        // 0.0 vs 0.5 differ by two points: one disagreement of three pairs.
        assert!((fair.self_agreement - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(fair.judgements, 10);
    }
}
