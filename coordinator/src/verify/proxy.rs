//! The no-training proxy (`seedling verify --proxy`): the fact probes
//! scored in context instead of after fine-tuning. For each probe, the few
//! records of a condition that share the most (rare) words with its
//! question go before it as earlier chat turns; the true answer and its
//! swapped alternatives are then scored by teacher forcing on our own
//! engine. A dataset that holds the domain's facts puts them in front of
//! the model; one that holds wrong facts or none does not. Minutes on a
//! CPU instead of hours, and no Python.
//!
//! This module is the pure part (picking the records, judging a probe from
//! token scores, the intervals); the CLI runs the engine.

use std::collections::{BTreeMap, BTreeSet};

use seedling_common::work::Message;

use super::TrainRow;
use super::interval::bootstrap;
use super::probes::Probe;
use super::report::{ConditionSummary, by_source};

/// Records shown before each probe, by default.
pub const DEFAULT_SHOTS: usize = 3;

/// Bootstrap resamples for the intervals (as the training sidecar uses).
pub const BOOTSTRAP_ROUNDS: usize = 2000;

fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
        .map(str::to_lowercase)
        .collect()
}

/// One condition's records, indexed for picking the ones a question is
/// about: overlap of words, each weighted by how rare it is among the
/// records (inverse document frequency), so "the" does not pick and
/// "gauge" does.
#[derive(Debug)]
pub struct ShotIndex<'a> {
    rows: &'a [TrainRow],
    words: Vec<BTreeSet<String>>,
    idf: BTreeMap<String, f64>,
}

impl<'a> ShotIndex<'a> {
    pub fn new(rows: &'a [TrainRow]) -> Self {
        let words: Vec<_> = rows
            .iter()
            .map(|r| words(&format!("{} {}", r.input, r.response)))
            .collect();
        let mut df: BTreeMap<String, usize> = BTreeMap::new();
        for set in &words {
            for w in set {
                *df.entry(w.clone()).or_default() += 1;
            }
        }
        let n = rows.len() as f64;
        let idf = df
            .into_iter()
            .map(|(w, d)| (w, (1.0 + n / d as f64).ln()))
            .collect();
        Self { rows, words, idf }
    }

    /// The `k` records that share the most weight with `question`, best
    /// first; ties go to the earlier record, so a pick is reproducible.
    pub fn pick(&self, question: &str, k: usize) -> Vec<&'a TrainRow> {
        let query = words(question);
        let mut scored: Vec<(f64, usize)> = self
            .words
            .iter()
            .enumerate()
            .map(|(i, set)| {
                let weight = query
                    .intersection(set)
                    .map(|w| self.idf.get(w).copied().unwrap_or(0.0))
                    .sum();
                (weight, i)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored
            .into_iter()
            .take(k)
            .map(|(_, i)| &self.rows[i])
            .collect()
    }
}

/// The chat the probe's answers are scored after: the dataset's system
/// prompt, the picked records as earlier turns (best last, nearest the
/// question), then the question.
pub fn context(system_prompt: &str, shots: &[&TrainRow], question: &str) -> Vec<Message> {
    let mut messages = Vec::with_capacity(2 + shots.len() * 2);
    if !system_prompt.is_empty() {
        messages.push(Message::system(system_prompt));
    }
    for row in shots.iter().rev() {
        messages.push(Message::user(row.input.clone()));
        messages.push(Message::assistant(row.response.clone()));
    }
    messages.push(Message::user(question));
    messages
}

/// A scored token of an answer: its byte range and log-probability.
pub type TokenScore = (usize, usize, f32);

/// How one probe came out for one condition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeOutcome {
    /// The true answer scored above every swapped one.
    pub correct: bool,
    /// Mean negative log-probability of the fact's own tokens in the true
    /// answer (none when no token overlaps the fact).
    pub fact_nll: Option<f64>,
}

/// Judges a probe from the summed log-probability of each answer (the true
/// one first, then the alternatives) and the true answer's tokens.
pub fn judge(probe: &Probe, totals: &[f64], true_tokens: &[TokenScore]) -> ProbeOutcome {
    let correct = match totals.split_first() {
        Some((truth, others)) => others.iter().all(|o| truth > o),
        None => false,
    };
    // The probe counts its offsets in characters; the tokens in bytes.
    let byte_at = |chars: usize| {
        probe
            .answer
            .char_indices()
            .nth(chars)
            .map_or(probe.answer.len(), |(b, _)| b)
    };
    let lo = byte_at(probe.fact_start);
    let hi = lo + probe.fact.len();
    let fact: Vec<f64> = true_tokens
        .iter()
        .filter(|(start, end, _)| *start < hi && *end > lo)
        .map(|(_, _, lp)| f64::from(*lp))
        .collect();
    let fact_nll = (!fact.is_empty()).then(|| -fact.iter().sum::<f64>() / fact.len() as f64);
    ProbeOutcome { correct, fact_nll }
}

/// A condition's row of the report from its probes' outcomes.
pub fn summarize(
    name: &str,
    records: usize,
    probes: &[Probe],
    outcomes: &[ProbeOutcome],
    chance: f64,
    seed: u64,
    seconds: f64,
) -> ConditionSummary {
    let correct: Vec<f64> = outcomes
        .iter()
        .map(|o| if o.correct { 1.0 } else { 0.0 })
        .collect();
    let fact: Vec<f64> = outcomes.iter().filter_map(|o| o.fact_nll).collect();
    let mut metrics = BTreeMap::new();
    if let Some(e) = bootstrap(&correct, BOOTSTRAP_ROUNDS, seed, Some(chance)) {
        metrics.insert("forced_choice".to_string(), e);
    }
    if let Some(e) = bootstrap(&fact, BOOTSTRAP_ROUNDS, seed, None) {
        metrics.insert("fact_nll".to_string(), e);
    }
    ConditionSummary {
        name: name.to_string(),
        trained: false,
        train_examples: records,
        steps: 0,
        loss_first: None,
        loss_last: None,
        seconds,
        metrics,
        strata: BTreeMap::new(),
        by_source: by_source(
            probes,
            &outcomes.iter().map(|o| o.correct).collect::<Vec<_>>(),
            chance,
            seed,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, input: &str, response: &str) -> TrainRow {
        TrainRow {
            id: id.into(),
            input: input.into(),
            response: response.into(),
            stratum: String::new(),
        }
    }

    fn probe(answer: &str, fact: &str) -> Probe {
        Probe {
            id: "p".into(),
            source: "glossary".into(),
            prompt: "How much is the tide gauge?".into(),
            answer: answer.into(),
            fact: fact.into(),
            fact_kind: "money".into(),
            fact_start: answer.find(fact).map_or(0, |b| answer[..b].chars().count()),
            alternatives: vec!["x".into(), "y".into(), "z".into()],
        }
    }

    #[test]
    fn records_sharing_the_rare_words_of_the_question_are_picked() {
        let rows = vec![
            row("a", "What is the fare?", "The fare is what you pay."),
            row(
                "b",
                "When will the ferry leave?",
                "The ferry leaves at 07:40.",
            ),
            row(
                "c",
                "What does the tide gauge cost?",
                "The tide gauge costs 4 crowns.",
            ),
            row("d", "Is the gauge free?", "No, the gauge is not free."),
        ];
        let index = ShotIndex::new(&rows);
        let picked: Vec<_> = index
            .pick("How much does the tide gauge cost?", 2)
            .into_iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(picked, ["c", "d"]);
        // Fewer records than asked for: all of them, none twice.
        assert_eq!(index.pick("gauge", 9).len(), 4);
        // Nothing in common: still k records, in their order.
        let none: Vec<_> = index
            .pick("zzz", 2)
            .into_iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(none, ["a", "b"]);
    }

    #[test]
    fn the_context_ends_with_the_question_and_the_best_record_nearest_it() {
        let rows = [row("best", "q1", "a1"), row("second", "q2", "a2")];
        let shots: Vec<&TrainRow> = rows.iter().collect();
        let chat = context("You help.", &shots, "question?");
        let roles: Vec<_> = chat.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(
            roles,
            ["system", "user", "assistant", "user", "assistant", "user"]
        );
        assert_eq!(chat[3].content, "q1");
        assert_eq!(chat[5].content, "question?");
        assert_eq!(context("", &[], "q").len(), 1);
    }

    #[test]
    fn a_probe_is_right_only_when_the_truth_beats_every_alternative() {
        let p = probe("The gauge costs 4 crowns.", "4 crowns");
        let tokens = [
            (0, 3, -0.1),
            (3, 15, -0.2),
            (15, 17, -2.0),
            (17, 24, -1.0),
            (24, 25, -0.1),
        ];
        let won = judge(&p, &[-3.0, -4.0, -5.0, -3.5], &tokens);
        assert!(won.correct);
        // " 4" and " crowns" overlap the fact; the tokens around it do not.
        assert_eq!(won.fact_nll, Some(1.5));
        assert!(!judge(&p, &[-3.0, -2.0, -5.0, -3.5], &tokens).correct);
        // A tie is not a win.
        assert!(!judge(&p, &[-3.0, -3.0, -5.0, -3.5], &tokens).correct);
        assert_eq!(judge(&p, &[-3.0], &[]).fact_nll, None);
    }

    #[test]
    fn fact_offsets_in_characters_meet_token_offsets_in_bytes() {
        // "€" is three bytes: the fact starts at character 10, byte 14.
        let p = probe("Costs: €€ 12 crowns", "12 crowns");
        assert_eq!(p.fact_start, 10);
        let tokens = [(0, 13, -0.5), (13, 16, -1.0), (16, 23, -3.0)];
        assert_eq!(judge(&p, &[0.0, -1.0], &tokens).fact_nll, Some(2.0));
    }
}
