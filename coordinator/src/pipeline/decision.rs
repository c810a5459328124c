//! The decision about one finished attempt (design section 6.2): accept,
//! or reject with the first reason that applies (the worker's checks,
//! Evol-Instruct's filter, back-translation drift, the quality score, the
//! quota, the duplicate tiers, the novelty gate). Pure over a read-only
//! view of the run: the run applies what it returns.

use seedling_common::embedding::Embedding;
use seedling_common::ids::NodeId;
use seedling_common::similarity::{NoveltyPool, tokens};
use seedling_common::work::{HeuristicVerdict, UnitResult};

use super::attempt::{AcceptedPool, Method, PlannedAttempt};
use crate::plan::Plan;
use crate::prompts::{self, Faithfulness};
use crate::quality::consistency::disagreement;
use crate::quality::diversity::InputNgrams;
use crate::quality::duplicates::{CandidateKeys, Duplicate, DuplicateTiers};
use crate::quality::faithfulness::JUDGE_UNSUPPORTED;
use crate::quality::funnel::{GENERATION_FAILED, REPEATS_REJECTED};

/// Self-Instruct's novelty gate: ROUGE-L above this to an accepted input drops a new one.
pub const NOVELTY_THRESHOLD: f64 = 0.7;
/// ROUGE-L of an answer to one reviewers rejected at or above which it
/// repeats that answer (a small model copies the counter-examples it is shown).
pub const REPEATS_REJECTED_ROUGE_L: f64 = 0.6;
/// Least chrF between a translated input's back-translation and its source.
pub const MIN_BACK_TRANSLATION_CHRF: f64 = 0.3;

/// What deciding about an attempt may read of its run.
#[derive(Debug, Clone, Copy)]
pub struct RunView<'a> {
    pub plan: &'a Plan,
    /// The attempt's stratum: its language, quota and what is left of it.
    pub language: &'a str,
    pub quota: u64,
    pub quota_left: u64,
    pub duplicates: &'a DuplicateTiers,
    pub accepted: &'a AcceptedPool,
    pub novelty: &'a NoveltyPool,
    /// Accepted record of each novelty-pool entry.
    pub novelty_ids: &'a [NodeId],
    /// Answers reviewers rejected and the feedback notes (their node and
    /// tokens): a new answer that repeats one is rejected too.
    pub rejected_answers: &'a [(NodeId, Vec<String>)],
    /// Requests reviewers rejected: a new request that repeats one is rejected.
    pub rejected_inputs: &'a [(NodeId, Vec<String>)],
}

/// A coordinator decision about one attempt; `reason` is `None` when accepted.
#[derive(Debug, Clone)]
pub struct Decision {
    pub reason: Option<String>,
    pub detail: serde_json::Value,
    pub duplicate_of: Option<NodeId>,
    /// A duplicate's answer that disagrees with its survivor's: why.
    pub disagrees: Option<String>,
    /// What was computed of its texts, kept with the record when accepted.
    pub prepared: Option<Prepared>,
}

/// What deciding about an attempt, and keeping it, needs of its texts:
/// computed from the result and its planned attempt alone, so a group's
/// results are prepared in parallel before the decisions, which must run
/// one after another.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub keys: CandidateKeys,
    pub input_tokens: Vec<String>,
    pub input_ngrams: InputNgrams,
}

impl Prepared {
    /// `None` for a result the checks before the duplicate tiers reject
    /// anyway (a failed or heuristically rejected generation).
    pub fn of(
        tiers: &DuplicateTiers,
        planned: &PlannedAttempt,
        result: &UnitResult,
    ) -> Option<Self> {
        let passed = result.error.is_none()
            && result
                .verdict
                .as_ref()
                .is_some_and(|v| v.rejections.is_empty());
        passed.then(|| {
            let response = result
                .text_of(&planned.task.response.step)
                .unwrap_or_default();
            let embedding = result.input_embedding.as_ref();
            Self::of_texts(tiers, final_input(planned, result), response, embedding)
        })
    }

    pub fn of_texts(
        tiers: &DuplicateTiers,
        input: &str,
        response: &str,
        embedding: Option<&Embedding>,
    ) -> Self {
        let input_tokens = tokens(input);
        Self {
            keys: tiers.keys(&dedup_text(input, response), embedding),
            input_ngrams: InputNgrams::of_words(&input_tokens),
            input_tokens,
        }
    }
}

/// The rejected text `tokens` are closest to, by ROUGE-L.
fn closest_rejected<'a>(
    tokens: &[String],
    rejected: &'a [(NodeId, Vec<String>)],
) -> Option<(&'a NodeId, f64)> {
    rejected
        .iter()
        .map(|(id, other)| (id, seedling_common::similarity::rouge_l(tokens, other)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

pub fn decide(
    run: &RunView<'_>,
    planned: &PlannedAttempt,
    result: &UnitResult,
    prepared: Option<Prepared>,
) -> Decision {
    let reject = |reason: &str, detail: serde_json::Value| Decision {
        reason: Some(reason.to_string()),
        detail,
        duplicate_of: None,
        disagrees: None,
        prepared: None,
    };
    if let Some(error) = &result.error {
        return reject(GENERATION_FAILED, serde_json::json!({ "error": error }));
    }
    let Some(verdict) = &result.verdict else {
        return reject(
            GENERATION_FAILED,
            serde_json::json!({ "error": "no verdict" }),
        );
    };
    if let Some(first) = verdict.rejections.first() {
        let reason = first
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or("heuristics");
        return reject(
            reason,
            serde_json::json!({ "rejections": verdict.rejections }),
        );
    }
    if let Some(first) = verdict.evolution_failures.first() {
        let reason = first
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or("evolution");
        return reject(
            &format!("evol_{reason}"),
            serde_json::json!({ "evolution_failures": verdict.evolution_failures }),
        );
    }
    // A judge model, where the worker hosts one, may find what the
    // model-free check cannot: a statement its sources do not back. A plan
    // that only records its verdicts keeps them in the lineage.
    if let Some(reply) = &verdict.faithfulness
        && run.plan.quality.judge_verdicts.rejects()
        && let Faithfulness::Unsupported { claim } = Faithfulness::read(&reply.text)
    {
        return reject(
            JUDGE_UNSUPPORTED,
            serde_json::json!({ "claim": claim, "model": reply.model, "prompt": prompts::FAITHFULNESS_VERSION }),
        );
    }
    if let Some(chrf) = verdict.back_translation_chrf
        && chrf < MIN_BACK_TRANSLATION_CHRF
    {
        return reject(
            "translation_drift",
            serde_json::json!({ "back_translation_chrf": chrf, "min": MIN_BACK_TRANSLATION_CHRF }),
        );
    }
    let score = combined_score(run.plan, verdict);
    if score < run.plan.quality.min_score {
        return reject(
            "low_quality_score",
            serde_json::json!({ "score": score, "heuristic_score": verdict.score, "min_score": run.plan.quality.min_score }),
        );
    }
    if run.quota_left == 0 {
        return reject("quota_filled", serde_json::json!({ "quota": run.quota }));
    }
    let input = final_input(planned, result);
    let response = result
        .text_of(&planned.task.response.step)
        .unwrap_or_default();
    let embedding = result.input_embedding.as_ref();
    let prepared =
        prepared.unwrap_or_else(|| Prepared::of_texts(run.duplicates, input, response, embedding));
    // What reviewers rejected, repeated (only in a round with review feedback).
    if !run.rejected_inputs.is_empty() || !run.rejected_answers.is_empty() {
        let response_tokens = tokens(response);
        for (what, tokens, rejected) in [
            ("request", &prepared.input_tokens, run.rejected_inputs),
            ("answer", &response_tokens, run.rejected_answers),
        ] {
            if let Some((node, rouge_l)) = closest_rejected(tokens, rejected)
                && rouge_l >= REPEATS_REJECTED_ROUGE_L
            {
                return reject(
                    REPEATS_REJECTED,
                    serde_json::json!({ "repeats": what, "rouge_l": rouge_l, "threshold": REPEATS_REJECTED_ROUGE_L, "rejected": node }),
                );
            }
        }
    }
    // Duplicates first: an exact copy is reported as one, not as "too
    // similar". Augmentations are meant to stay close to their source in
    // meaning; the text tiers still stop them repeating it word for word.
    let augmented = matches!(planned.method, Method::Augmentation(_));
    if let Some(duplicate) = run.duplicates.check_keyed(
        &prepared.keys,
        run.language,
        embedding.filter(|_| !augmented),
    ) {
        let detail = match &duplicate {
            Duplicate::Exact { .. } => serde_json::json!({}),
            Duplicate::Near { jaccard, .. } => serde_json::json!({
                "jaccard": jaccard, "threshold": run.plan.quality.near_duplicate_jaccard,
            }),
            Duplicate::Semantic { cosine, .. } => serde_json::json!({
                "cosine": cosine, "threshold": run.duplicates.semantic_threshold(),
            }),
        };
        // The same question answered twice: a second opinion on the survivor.
        let survivor = NodeId::new(duplicate.survivor());
        let disagrees = match duplicate {
            Duplicate::Exact { .. } => None,
            _ => run
                .accepted
                .by_id(&survivor)
                .and_then(|r| disagreement(&r.response, response)),
        };
        return Decision {
            duplicate_of: Some(survivor),
            disagrees,
            ..reject(duplicate.reason(), detail)
        };
    }
    // The novelty gate (Self-Instruct's ROUGE-L), augmentations exempt as above.
    if !augmented && let Some(close) = run.novelty.too_similar_tokens(&prepared.input_tokens) {
        let mut decision = reject(
            "too_similar",
            serde_json::json!({ "rouge_l": close.rouge_l, "threshold": NOVELTY_THRESHOLD }),
        );
        decision.duplicate_of = run.novelty_ids.get(close.closest).cloned();
        return decision;
    }
    Decision {
        reason: None,
        detail: serde_json::json!({ "score": score, "heuristic_score": verdict.score }),
        duplicate_of: None,
        disagrees: None,
        prepared: Some(prepared),
    }
}

/// Whether a rejection says the attempt repeated an accepted record.
pub fn is_duplicate(reason: &str) -> bool {
    matches!(
        reason,
        "exact_duplicate" | "near_duplicate" | "semantic_duplicate" | "too_similar"
    )
}

/// Whether a call of `planned` made (part of) its input.
pub fn is_input_step(planned: &PlannedAttempt, step: &str) -> bool {
    step == planned.task.input.step || planned.task.evolve.as_ref().is_some_and(|e| e.step == step)
}

/// The input as the record holds it: the last input call's cleaned text.
pub fn final_input<'r>(planned: &PlannedAttempt, result: &'r UnitResult) -> &'r str {
    result
        .calls
        .iter()
        .rev()
        .find(|c| is_input_step(planned, &c.step))
        .map(|c| c.text.as_str())
        .unwrap_or_default()
}

/// The record's quality score: the heuristic estimate, blended with the
/// judge's rubric by the plan's judge weight when the judge ran.
pub fn combined_score(plan: &Plan, verdict: &HeuristicVerdict) -> f64 {
    match verdict.judge.as_ref().and_then(prompts::judge_score) {
        Some(judged) => {
            let w = plan.quality.judge_weight;
            (((1.0 - w) * verdict.score + w * judged) * 1000.0).round() / 1000.0
        }
        None => verdict.score,
    }
}

fn dedup_text(input: &str, response: &str) -> String {
    format!("{input}\n{response}")
}

#[cfg(test)]
mod tests {
    use seedling_common::work::{
        CallOutcome, CallPrompt, CheckSpec, GenerateTask, ModelCall, UnitResult,
    };

    use super::*;

    use crate::plan::fixtures::retail as plan;

    fn call(step: &str) -> ModelCall {
        ModelCall {
            step: step.into(),
            prompt: CallPrompt::Raw(String::new()),
            temperature: 0.7,
            top_p: 0.9,
            top_k: 40,
            max_new_tokens: 64,
            seed: 1,
            stop: vec![],
            json_schema: None,
            shared_prefix: None,
        }
    }

    fn planned(method: Method) -> PlannedAttempt {
        PlannedAttempt {
            unit: "cards|qa|customer|en|regular#0".into(),
            stratum: 0,
            attempt: 0,
            method,
            instruction: String::new(),
            sampled: serde_json::Value::Null,
            instance_grounding: vec![],
            input_grounding: vec![],
            response_grounding: vec![],
            support_nodes: vec![],
            source: None,
            evol_operation: None,
            task: GenerateTask {
                input: call("input_generation"),
                evolve: None,
                response: call("response_generation"),
                judge: None,
                back_translation: None,
                checks: CheckSpec {
                    language: "en".into(),
                    rules: vec![],
                    allow_refusal: false,
                    evolved: false,
                    support: None,
                },
                embed_input: false,
                faithfulness: None,
            },
        }
    }

    fn result(input: &str, response: &str, verdict: Option<HeuristicVerdict>) -> UnitResult {
        let outcome = |step: &str, text: &str| CallOutcome {
            step: step.into(),
            text: text.into(),
            finish_reason: "stop".into(),
            prompt_tokens: 10,
            generated_tokens: 10,
            started_ms: 0,
            finished_ms: 1,
            cost: Default::default(),
        };
        let mut result = UnitResult::new("plan", "unit", "worker");
        result.calls = vec![
            outcome("input_generation", input),
            outcome("response_generation", response),
        ];
        result.verdict = verdict;
        result
    }

    fn passed(score: f64) -> Option<HeuristicVerdict> {
        Some(HeuristicVerdict {
            score,
            ..HeuristicVerdict::default()
        })
    }

    /// The run an attempt is decided against: one accepted record.
    struct Run {
        plan: Plan,
        duplicates: DuplicateTiers,
        accepted: AcceptedPool,
        novelty: NoveltyPool,
        novelty_ids: Vec<NodeId>,
        rejected_answers: Vec<(NodeId, Vec<String>)>,
        rejected_inputs: Vec<(NodeId, Vec<String>)>,
    }

    const REVIEWED_OUT_INPUT: &str = "Hello! How do you plan to make your domestic transfer today?";
    const REVIEWED_OUT_RESPONSE: &str =
        "A transfer has not arrived yet because an authorization has been held.";
    const ACCEPTED_INPUT: &str = "Why was my card declined at the gas station yesterday?";
    const ACCEPTED_RESPONSE: &str =
        "A pending hold from the pump can lower your available balance.";

    impl Run {
        fn new() -> Self {
            let plan = plan();
            let mut run = Self {
                duplicates: DuplicateTiers::new(
                    plan.quality.near_duplicate_jaccard,
                    plan.quality.semantic_duplicate_cosine,
                ),
                plan,
                accepted: AcceptedPool::default(),
                novelty: NoveltyPool::new(NOVELTY_THRESHOLD),
                novelty_ids: vec![],
                rejected_answers: vec![(
                    NodeId::new("reviewed-out-1"),
                    seedling_common::similarity::tokens(REVIEWED_OUT_RESPONSE),
                )],
                rejected_inputs: vec![(
                    NodeId::new("reviewed-out-2"),
                    seedling_common::similarity::tokens(REVIEWED_OUT_INPUT),
                )],
            };
            let prepared =
                Prepared::of_texts(&run.duplicates, ACCEPTED_INPUT, ACCEPTED_RESPONSE, None);
            run.duplicates
                .insert_keyed("accepted-1", prepared.keys, "en", None);
            run.novelty.insert_tokens(prepared.input_tokens);
            run.novelty_ids.push(NodeId::new("accepted-1"));
            run
        }

        fn view(&self, quota_left: u64) -> RunView<'_> {
            RunView {
                plan: &self.plan,
                language: "en",
                quota: 3,
                quota_left,
                duplicates: &self.duplicates,
                accepted: &self.accepted,
                novelty: &self.novelty,
                novelty_ids: &self.novelty_ids,
                rejected_answers: &self.rejected_answers,
                rejected_inputs: &self.rejected_inputs,
            }
        }
    }

    #[test]
    fn decision_table() {
        let run = Run::new();
        let fresh_input = "How long does an international wire transfer take to arrive?";
        let fresh_response =
            "International wires usually arrive within one to three business days.";
        let check = |reason: &str| {
            let mut verdict = passed(0.9).unwrap();
            verdict.rejections = vec![serde_json::json!({ "reason": reason })];
            Some(verdict)
        };
        let evolution = {
            let mut verdict = passed(0.9).unwrap();
            verdict.evolution_failures =
                vec![serde_json::json!({ "reason": "no_information_gain" })];
            Some(verdict)
        };
        let drifted = {
            let mut verdict = passed(0.9).unwrap();
            verdict.back_translation_chrf = Some(0.1);
            Some(verdict)
        };
        let judged = |text: &str| {
            let mut verdict = passed(0.9).unwrap();
            verdict.faithfulness = Some(seedling_common::work::JudgeReply {
                model: "judge-1.5b".into(),
                text: text.into(),
            });
            Some(verdict)
        };
        let mut failed = result(fresh_input, fresh_response, None);
        failed.error = Some("engine gone".into());
        // A near copy of the accepted question, answered differently.
        let rephrased = "Why was my card declined at the gas station today?";

        let table: Vec<(&str, UnitResult, u64, Method, Option<&str>)> = vec![
            (
                "a failed unit",
                failed,
                3,
                Method::Template,
                Some("generation_failed"),
            ),
            (
                "no verdict",
                result(fresh_input, fresh_response, None),
                3,
                Method::Template,
                Some("generation_failed"),
            ),
            (
                "a worker check's reason",
                result(fresh_input, fresh_response, check("unsupported_fact")),
                3,
                Method::Template,
                Some("unsupported_fact"),
            ),
            (
                "a judge model that finds a statement unsupported",
                result(
                    fresh_input,
                    fresh_response,
                    judged(r#"{"claim": "one to three days", "verdict": "unsupported"}"#),
                ),
                3,
                Method::Template,
                Some("judge_unsupported"),
            ),
            (
                "a judge model that finds it supported",
                result(
                    fresh_input,
                    fresh_response,
                    judged(r#"{"claim": "one to three days", "verdict": "supported"}"#),
                ),
                3,
                Method::Template,
                None,
            ),
            (
                "a judge reply that is no verdict decides nothing",
                result(fresh_input, fresh_response, judged("{\"weakest")),
                3,
                Method::Template,
                None,
            ),
            (
                "Evol-Instruct's filter",
                result(fresh_input, fresh_response, evolution),
                3,
                Method::EvolInstruct,
                Some("evol_no_information_gain"),
            ),
            (
                "back-translation drift",
                result(fresh_input, fresh_response, drifted),
                3,
                Method::Template,
                Some("translation_drift"),
            ),
            (
                "a score under the plan's floor",
                result(fresh_input, fresh_response, passed(0.2)),
                3,
                Method::Template,
                Some("low_quality_score"),
            ),
            (
                "a full quota",
                result(fresh_input, fresh_response, passed(0.9)),
                0,
                Method::Template,
                Some("quota_filled"),
            ),
            (
                "an exact duplicate",
                result(ACCEPTED_INPUT, ACCEPTED_RESPONSE, passed(0.9)),
                3,
                Method::Template,
                Some("exact_duplicate"),
            ),
            (
                "a question too close to an accepted one",
                result(
                    rephrased,
                    "Check the app for holds and your daily limit.",
                    passed(0.9),
                ),
                3,
                Method::Template,
                Some("too_similar"),
            ),
            (
                "an augmentation may stay close to its source",
                result(
                    rephrased,
                    "Check the app for holds and your daily limit.",
                    passed(0.9),
                ),
                3,
                Method::Augmentation(crate::plan::AugmentationKind::Paraphrase),
                None,
            ),
            (
                "an answer that repeats one reviewers rejected",
                result(
                    "Why is my transfer to my landlord still missing?",
                    "The transfer has not arrived yet because an authorization has been held.",
                    passed(0.9),
                ),
                3,
                Method::Template,
                Some("repeats_rejected"),
            ),
            (
                "a request that repeats one reviewers rejected",
                result(
                    "How do you plan to make your domestic transfer today?",
                    fresh_response,
                    passed(0.9),
                ),
                3,
                Method::Template,
                Some("repeats_rejected"),
            ),
            (
                "a new record",
                result(fresh_input, fresh_response, passed(0.9)),
                3,
                Method::Template,
                None,
            ),
        ];
        for (case, result, quota_left, method, expected) in table {
            let decision = decide(&run.view(quota_left), &planned(method), &result, None);
            assert_eq!(
                decision.reason.as_deref(),
                expected,
                "{case}: {:?}",
                decision.detail
            );
            assert_eq!(decision.prepared.is_some(), expected.is_none(), "{case}");
            if expected == Some("too_similar") || expected == Some("exact_duplicate") {
                assert_eq!(
                    decision.duplicate_of,
                    Some(NodeId::new("accepted-1")),
                    "{case}: names its survivor"
                );
            }
        }
    }

    #[test]
    fn a_plan_that_records_judge_verdicts_keeps_the_answer() {
        let mut run = Run::new();
        run.plan.quality.judge_verdicts = crate::plan::JudgeVerdicts::Record;
        let mut verdict = passed(0.9).unwrap();
        verdict.faithfulness = Some(seedling_common::work::JudgeReply {
            model: "judge-1.5b".into(),
            text: r#"{"claim": "one to three days", "verdict": "unsupported"}"#.into(),
        });
        let result = result(
            "How long does an international wire transfer take to arrive?",
            "International wires usually arrive within one to three business days.",
            Some(verdict),
        );
        let decision = decide(&run.view(3), &planned(Method::Template), &result, None);
        assert_eq!(decision.reason, None, "{:?}", decision.detail);
        // Read back, the plan says so; left out of the id when it rejects.
        let toml = toml::to_string(&run.plan).unwrap();
        assert!(toml.contains("judge_verdicts = \"record\""), "{toml}");
        assert!(!toml::to_string(&plan()).unwrap().contains("judge_verdicts"));
    }

    #[test]
    fn without_a_judge_the_score_is_the_heuristic_one() {
        let mut plan = plan();
        plan.quality.judge_weight = 0.5;
        let plain = HeuristicVerdict {
            score: 0.8,
            ..HeuristicVerdict::default()
        };
        assert_eq!(combined_score(&plan, &plain), 0.8);
        assert!(is_duplicate("semantic_duplicate") && !is_duplicate("low_quality_score"));
    }
}
