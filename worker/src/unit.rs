//! Runs one work unit on the engine: the task's model calls in order, then
//! the model-free checks of the pair. Everything the coordinator needs to
//! decide and to write lineage comes back in the [`UnitResult`], including
//! the calls that ran before a failure.

use std::time::Instant;

use seedling_common::cost::CallCost;
use seedling_common::embedding::Embedding;
use seedling_common::similarity::chrf;
use seedling_common::time::now_unix_ms;
use seedling_common::work::{
    CallOutcome, CallPrompt, GenerateTask, HeuristicVerdict, JudgeReply, ModelCall,
    SUPPORT_REASONS, TaskKind, UnitResult, UnitTask,
};
use tracing::Instrument as _;

use crate::engine::{Engine, EngineError, GenerationRequest, OutputConstraint, SamplingParams};
use crate::models::Models;
use crate::scoring::heuristics::{
    Rejection, RuleCheck, Thresholds, assistant_phrase, check_pair, cites_the_prompt,
    copies_a_source, evolution_failures, heuristic_score, off_topic, placeholder,
};
use crate::scoring::language::detect_language;
use crate::scoring::polarity::yes_then_denies;
use crate::scoring::support::check_support;

/// Longest input kept: people's messages to a support chat are short, and a
/// longer "input" is usually the model answering its own question.
pub const MAX_INPUT_CHARS: usize = 600;

/// The engine request for a call.
pub fn request_for(call: &ModelCall) -> GenerationRequest {
    let request = match &call.prompt {
        CallPrompt::Chat(messages) => GenerationRequest::chat(messages.clone()),
        CallPrompt::Raw(text) => GenerationRequest::raw(text.clone()),
    };
    let request = request
        .with_max_new_tokens(call.max_new_tokens)
        .with_shared_prefix(call.shared_prefix)
        .with_stop(call.stop.clone())
        .with_sampling(SamplingParams {
            temperature: call.temperature,
            top_p: call.top_p,
            top_k: call.top_k,
            seed: call.seed,
            ..SamplingParams::default()
        });
    match &call.json_schema {
        Some(schema) => request.with_constraint(OutputConstraint::JsonSchema(schema.clone())),
        None => request,
    }
}

/// Openings of a reply *about* the message rather than the message itself.
const PREAMBLES: &[&str] = &[
    "certainly",
    "sure",
    "here is",
    "here's",
    "here\u{2019}s",
    "of course",
    "absolutely",
    "claro",
    "aquí",
    "por supuesto",
];

/// Labels a model puts before the message.
const LABELS: &[&str] = &[
    "#rewritten prompt#:",
    "rewritten prompt:",
    "rewritten message:",
    "message:",
    "question:",
    "user:",
    "customer:",
    "mensaje:",
    "pregunta:",
];

/// A generated instruction as a user would type it: no "Sure, here is...:"
/// line, no label, no quotes.
pub fn clean_generated_input(text: &str) -> String {
    let mut text = text.trim();
    if let Some((first, rest)) = text.split_once('\n') {
        let lower = first.trim().to_lowercase();
        if lower.ends_with(':')
            && PREAMBLES.iter().any(|p| lower.starts_with(p))
            && !rest.trim().is_empty()
        {
            text = rest.trim();
        }
    }
    for label in LABELS {
        if text
            .get(..label.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(label))
        {
            text = text[label.len()..].trim();
        }
    }
    text.trim_matches(|c| matches!(c, '"' | '\u{201c}' | '\u{201d}'))
        .trim()
        .to_string()
}

#[tracing::instrument(name = "model_call", skip_all, fields(step = %call.step, prompt_tokens, prompt_tokens_reused, generated_tokens, queued_ms, prefill_ms, decode_ms))]
async fn call(engine: &Engine, call: &ModelCall) -> Result<CallOutcome, EngineError> {
    let started_ms = now_unix_ms();
    let generation = engine.generate(request_for(call)).await?;
    let accounting = &generation.accounting;
    let span = tracing::Span::current();
    span.record(
        "prompt_tokens",
        accounting.prompt_tokens_computed + accounting.prompt_tokens_reused,
    );
    span.record("prompt_tokens_reused", accounting.prompt_tokens_reused);
    span.record("generated_tokens", accounting.generated_tokens);
    span.record("queued_ms", accounting.queued.as_millis() as u64);
    span.record("prefill_ms", accounting.prompt_time.as_millis() as u64);
    span.record("decode_ms", accounting.generate_time.as_millis() as u64);
    Ok(CallOutcome {
        step: call.step.clone(),
        text: generation.text.trim().to_string(),
        finish_reason: format!("{:?}", generation.finish_reason),
        prompt_tokens: accounting.prompt_tokens_computed + accounting.prompt_tokens_reused,
        generated_tokens: accounting.generated_tokens,
        started_ms,
        finished_ms: now_unix_ms(),
        cost: CallCost {
            prompt_tokens_reused: accounting.prompt_tokens_reused,
            queued_ms: accounting.queued.as_millis() as u64,
            prefill_ms: accounting.prompt_time.as_millis() as u64,
            decode_ms: accounting.generate_time.as_millis() as u64,
        },
    })
}

fn rule_checks(task: &GenerateTask) -> Vec<RuleCheck> {
    task.checks
        .rules
        .iter()
        .map(|rule| RuleCheck {
            must_contain: rule.must_contain.clone(),
            must_not_contain: rule.must_not_contain.clone(),
            // The plan was validated; a pattern that still fails is skipped.
            forbidden: rule.forbidden_regex.as_deref().and_then(compiled),
        })
        .collect()
}

/// A plan's rule pattern, compiled once per process (units of one plan
/// repeat the same few patterns thousands of times).
fn compiled(pattern: &str) -> Option<regex::Regex> {
    static CACHE: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, Option<regex::Regex>>>,
    > = std::sync::OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .expect("regex cache");
    cache
        .entry(pattern.to_string())
        .or_insert_with(|| regex::Regex::new(pattern).ok())
        .clone()
}

/// Least share of a request's word trigrams, copied from one of its
/// sources, that makes it a copy of the passage rather than a question
/// about it.
pub const MAX_INPUT_COPIED_SOURCE: f64 = 0.6;

/// Why `input` cannot make a record, whatever its answer: each reason reads
/// the input alone, so a unit stops before its response call, the dearest
/// one, when there is any.
pub fn input_rejections(task: &GenerateTask, input: &str) -> Vec<serde_json::Value> {
    let mut rejections = Vec::new();
    let chars = input.chars().count();
    if chars < 10 {
        rejections.push(serde_json::json!({"reason": "input_too_short", "chars": chars}));
    }
    if chars > MAX_INPUT_CHARS {
        rejections.push(
            serde_json::json!({"reason": "input_too_long", "chars": chars, "max": MAX_INPUT_CHARS}),
        );
    }
    if let Some(found) = placeholder(input) {
        rejections
            .push(serde_json::json!({"reason": "input_has_placeholder", "placeholder": found}));
    }
    if let Some(phrase) = cites_the_prompt(input) {
        rejections.push(serde_json::json!({"reason": "input_cites_the_prompt", "phrase": phrase}));
    }
    if let Some(phrase) = assistant_phrase(input) {
        rejections
            .push(serde_json::json!({"reason": "input_sounds_like_assistant", "phrase": phrase}));
    }
    let language = task.checks.language.as_str();
    if let Some(detected) = detect_language(input)
        && detected != language
        && chars >= 40
    {
        rejections.push(serde_json::json!({
            "reason": "input_wrong_language", "expected": language, "detected": detected
        }));
    }
    // A translation's sources are in another language: no words to copy.
    if let Some(support) = &task.checks.support
        && !support.cross_language
        && let Some(copied) = copies_a_source(input, &support.sources, MAX_INPUT_COPIED_SOURCE)
    {
        rejections.push(serde_json::json!({
            "reason": "input_copies_source", "copied_share": copied, "max": MAX_INPUT_COPIED_SOURCE
        }));
    }
    rejections
}

/// The model-free verdict on a finished pair.
pub fn judge_pair(
    task: &GenerateTask,
    base_input: &str,
    input: &str,
    response: &str,
) -> HeuristicVerdict {
    let thresholds = Thresholds::default();
    let language = task.checks.language.as_str();
    let mut rejections: Vec<serde_json::Value> = check_pair(
        input,
        response,
        Some(language),
        &rule_checks(task),
        &thresholds,
    )
    .into_iter()
    .filter(|r| !(task.checks.allow_refusal && matches!(r, Rejection::Refusal { .. })))
    .map(|r| serde_json::to_value(r).unwrap_or_default())
    .collect();
    rejections.extend(input_rejections(task, input));
    if let Some(found) = placeholder(response) {
        rejections
            .push(serde_json::json!({"reason": "response_has_placeholder", "placeholder": found}));
    }
    if let Some(phrase) = cites_the_prompt(response) {
        rejections
            .push(serde_json::json!({"reason": "response_cites_the_prompt", "phrase": phrase}));
    }
    if !task.checks.allow_refusal && off_topic(input, response) {
        rejections.push(serde_json::json!({"reason": "response_off_topic"}));
    }
    // The support check asks this too, when the unit has sources.
    if task.checks.support.is_none()
        && let Some(phrase) = yes_then_denies(input, response)
    {
        rejections.push(
            serde_json::to_value(Rejection::ContradictsItself { phrase }).unwrap_or_default(),
        );
    }
    let mut citations = Vec::new();
    if let Some(spec) = &task.checks.support {
        // A declined adversarial request need not carry the sources' words.
        let support = check_support(input, response, spec, !task.checks.allow_refusal);
        rejections.extend(
            support
                .rejections
                .into_iter()
                .map(|r| serde_json::to_value(r).unwrap_or_default()),
        );
        citations = support.citations;
    }
    let evolution_failures = if task.checks.evolved {
        evolution_failures(base_input, input, response)
            .into_iter()
            .map(|f| serde_json::to_value(f).unwrap_or_default())
            .collect()
    } else {
        Vec::new()
    };
    HeuristicVerdict {
        score: heuristic_score(input, response, &thresholds),
        rejections,
        evolution_failures,
        judge: None,
        back_translation_chrf: None,
        citations,
        judge_model: None,
        faithfulness: None,
    }
}

async fn run_generate(
    models: &Models,
    task: &GenerateTask,
    result: &mut UnitResult,
) -> Result<(), EngineError> {
    let engine = &models.generator;
    // Inputs are kept as a user would type them (see `clean_generated_input`).
    let mut first = call(engine, &task.input).await?;
    first.text = clean_generated_input(&first.text);
    let base_input = first.text.clone();
    result.calls.push(first);
    let mut input = base_input.clone();
    if let Some(evolve) = &task.evolve {
        let mut evolved = call(engine, &evolve.with_input(&base_input)).await?;
        evolved.text = clean_generated_input(&evolved.text);
        input = evolved.text.clone();
        result.calls.push(evolved);
    }
    let refused = input_rejections(task, &input);
    if !refused.is_empty() {
        result.verdict = Some(HeuristicVerdict {
            rejections: refused,
            ..HeuristicVerdict::default()
        });
        return Ok(());
    }
    let response = call(engine, &task.response.with_input(&input)).await?;
    let checking = Instant::now();
    let mut verdict = tracing::info_span!("checks")
        .in_scope(|| judge_pair(task, &base_input, &input, &response.text));
    result.work.checks_ms += checking.elapsed().as_millis() as u64;
    let response_text = response.text.clone();
    result.calls.push(response);
    let passed = verdict.rejections.is_empty() && verdict.evolution_failures.is_empty();
    // The judge model reads every answer the support check is the only one
    // to reject, so that the two can be compared on the same answers.
    let only_support_rejects = verdict
        .rejections
        .iter()
        .all(|r| SUPPORT_REASONS.iter().any(|s| r["reason"] == *s));
    if let (Some(faithfulness), Some(judge), Some(support)) =
        (&task.faithfulness, &models.judge, &task.checks.support)
        && only_support_rejects
    {
        let asked = faithfulness
            .with_sources(&support.sources)
            .filled(&input, &response_text);
        let judged = call(judge, &asked).await?;
        verdict.faithfulness = Some(JudgeReply {
            model: judge.info().name.clone(),
            text: judged.text.clone(),
        });
        result.calls.push(judged);
    }
    if let Some(back) = &task.back_translation
        && passed
    {
        let round_trip = call(engine, &back.call.with_input(&input)).await?;
        verdict.back_translation_chrf = Some(chrf(&round_trip.text, &back.source));
        result.calls.push(round_trip);
    }
    // The judge grades only what the cheap checks let through.
    if let Some(judge) = &task.judge
        && passed
    {
        let graded = call(models.judging(), &judge.filled(&input, &response_text)).await?;
        verdict.judge = Some(serde_json::from_str(&graded.text).unwrap_or_else(
            |e| serde_json::json!({ "unparsed": graded.text, "error": e.to_string() }),
        ));
        verdict.judge_model = models.judge_name();
        result.calls.push(graded);
    }
    // Only what may be accepted is compared with the accepted ones. An
    // input the embedding window cannot take is left to the text tiers.
    if task.embed_input && passed {
        let embedding = engine
            .embed_timed(vec![input.clone()])
            .instrument(tracing::info_span!("embedding"));
        match embedding.await {
            Ok(mut embedded) => {
                result.work.embeddings += 1;
                result.work.embedding_ms += embedded.compute.as_millis() as u64;
                result.input_embedding = embedded.vectors.pop().map(|v| Embedding::quantise(&v))
            }
            Err(EngineError::EmbeddingTooLong { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    result.verdict = Some(verdict);
    Ok(())
}

/// Runs a unit to its end; failures are reported in the result, not raised.
pub async fn run_unit(models: &Models, worker: &str, task: &UnitTask) -> UnitResult {
    let mut result = UnitResult::new(&task.plan, &task.unit, worker);
    let outcome = match &task.kind {
        TaskKind::Generate(generate) => run_generate(models, generate, &mut result).await,
        TaskKind::Analyze(analyze) => call(&models.generator, &analyze.call)
            .await
            .map(|c| result.calls.push(c)),
    };
    if let Err(err) = outcome {
        result.error = Some(err.to_string());
    }
    result
}

/// Aborts a task when dropped: its caller no longer waits for it.
struct StopOnDrop(tokio::task::AbortHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs a unit on its own task and always returns a result: a unit that
/// panics is reported as failed, or the plan would wait for it forever.
pub(crate) async fn run_caught(models: Models, worker: String, task: Box<UnitTask>) -> UnitResult {
    let (plan, unit) = (task.plan.clone(), task.unit.clone());
    let running = {
        let worker = worker.clone();
        // The unit's spans stay under the caller's (its lease's trace).
        tokio::spawn(async move { run_unit(&models, &worker, &task).await }.in_current_span())
    };
    // Stopping this future (a withdrawn unit) stops the unit too.
    let _stop = StopOnDrop(running.abort_handle());
    let result = running.await.unwrap_or_else(|err| UnitResult {
        error: Some(format!("the worker failed while running the unit: {err}")),
        ..UnitResult::new(plan, unit, worker.clone())
    });
    tracing::debug!(plan = %result.plan, unit = %result.unit, %worker, "unit finished");
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_inputs_lose_labels_and_quotes() {
        assert_eq!(
            clean_generated_input("  Question: \"Why is my card blocked?\" "),
            "Why is my card blocked?"
        );
        assert_eq!(
            clean_generated_input("#Rewritten Prompt#: How do wires work?"),
            "How do wires work?"
        );
        assert_eq!(clean_generated_input("Plain text."), "Plain text.");
        // a label cut inside a multi-byte character must not panic
        assert_eq!(
            clean_generated_input("Certainly! Here\u{2019}s"),
            "Certainly! Here\u{2019}s"
        );
        assert_eq!(
            clean_generated_input(
                "Certainly! Here\u{2019}s a more direct version:\n\n\"Can you walk me through the steps?\""
            ),
            "Can you walk me through the steps?"
        );
        assert_eq!(clean_generated_input("Mensaje: ¿Por qué?"), "¿Por qué?");
    }

    fn task(language: &str) -> GenerateTask {
        let call = ModelCall {
            step: "x".into(),
            prompt: CallPrompt::Raw(String::new()),
            temperature: 0.0,
            top_p: 1.0,
            top_k: 1,
            max_new_tokens: 1,
            seed: 0,
            stop: vec![],
            json_schema: None,
            shared_prefix: None,
        };
        GenerateTask {
            input: call.clone(),
            evolve: None,
            response: call,
            judge: None,
            back_translation: None,
            embed_input: false,
            faithfulness: None,
            checks: seedling_common::work::CheckSpec {
                language: language.into(),
                rules: vec![],
                allow_refusal: false,
                evolved: false,
                support: None,
            },
        }
    }

    fn reasons(verdict: &HeuristicVerdict) -> Vec<&str> {
        verdict
            .rejections
            .iter()
            .filter_map(|r| r["reason"].as_str())
            .collect()
    }

    const QUESTION: &str =
        "Why was my card declined at the gas station when my balance is positive?";

    #[test]
    fn chinese_drift_in_an_english_plan_is_rejected_for_its_script() {
        let drifted = "加油站的预授权冻结会减少您的可用余额，所以即使余额为正，交易也可能被拒绝。";
        assert_eq!(
            reasons(&judge_pair(&task("en"), QUESTION, QUESTION, drifted)),
            vec!["mixed_script"]
        );
        let mixed =
            "Gas stations place an authorization hold 预授权冻结会减少您的可用余额 on your card.";
        assert!(
            reasons(&judge_pair(&task("en"), QUESTION, QUESTION, mixed)).contains(&"mixed_script")
        );
        // the same text is right for a Chinese plan
        assert!(
            !reasons(&judge_pair(
                &task("zh"),
                "为什么我的卡在加油站被拒绝了？",
                "为什么我的卡在加油站被拒绝了？",
                drifted
            ))
            .contains(&"mixed_script")
        );
    }

    #[test]
    fn a_spanish_answer_in_an_english_plan_is_rejected_for_its_language() {
        let spanish = "Las gasolineras suelen bloquear una cantidad mayor que la compra. Su saldo disponible \
            descuenta esas retenciones, por eso la tarjeta puede ser rechazada aunque el saldo sea positivo.";
        assert_eq!(
            reasons(&judge_pair(&task("en"), QUESTION, QUESTION, spanish)),
            vec!["wrong_language"]
        );
    }

    #[test]
    fn an_answer_to_something_else_is_rejected_unless_the_request_was_to_be_declined() {
        let asked = "Was ist das Problem mit dem kompostierten Bin? Wie kann ich es verbessern?";
        let riddle = "Was hat der Schmied nach einem Trinken mit Rötteneggwürsten?";
        assert!(
            reasons(&judge_pair(&task("de"), asked, asked, riddle)).contains(&"response_off_topic")
        );
        // Sharing a function word ("eine") is not sharing the topic.
        let mixed = "Würden Sie eine praktische Frage zum Kompostieren? Die compost bin smells like rotten eggs";
        let short_riddle = "Was hat der Schmied nach einem Feuerhund, eine Frage?";
        assert!(
            !reasons(&judge_pair(&task("de"), mixed, mixed, short_riddle))
                .contains(&"response_off_topic"),
            "'frage' is shared"
        );
        let riddle_again = "Was hat der Schmied nach eine Feuerhund getrunken?";
        assert!(
            reasons(&judge_pair(&task("de"), mixed, mixed, riddle_again))
                .contains(&"response_off_topic")
        );
        let answer = "Das Problem ist meist zu viel Feuchtigkeit: mischen Sie trockenes Laub unter \
            und wenden Sie den Kompost, damit wieder Luft hineinkommt.";
        assert!(
            !reasons(&judge_pair(&task("de"), asked, asked, answer))
                .contains(&"response_off_topic")
        );
        let mut declined = task("en");
        declined.checks.allow_refusal = true;
        let off_scope = "Which football team will win the championship this season, do you think?";
        let scope = "I can only help with questions about your bank accounts, cards and transfers.";
        assert!(
            !reasons(&judge_pair(&declined, off_scope, off_scope, scope))
                .contains(&"response_off_topic")
        );
        assert!(
            reasons(&judge_pair(&task("en"), off_scope, off_scope, scope))
                .contains(&"response_off_topic")
        );
    }

    #[test]
    fn a_request_that_copies_its_passage_is_rejected_before_it_is_answered() {
        let entry = "Authorization hold: a temporary reservation of funds by a merchant, \
            typically a fuel station or hotel, that lowers the available balance until the \
            final amount settles, usually within 3 business days.";
        let mut grounded = task("en");
        grounded.checks.support = Some(seedling_common::work::SupportSpec {
            sources: vec!["Cards are blocked after 3 wrong PINs.".into(), entry.into()],
            cross_language: false,
        });
        // Seen from the small model: asked to question a glossary entry, it
        // returns the entry, and the answer can only repeat it.
        let copied = "An authorization hold is a temporary reservation of funds by a merchant, \
            typically a fuel station or hotel, that lowers the available balance.";
        let found = input_rejections(&grounded, copied);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0]["reason"], "input_copies_source");
        assert!(found[0]["copied_share"].as_f64().unwrap() >= MAX_INPUT_COPIED_SOURCE);
        // A passage turned into a question by its punctuation is a copy too.
        let asked_back = "An authorization hold is a temporary reservation of funds by a merchant, \
            typically a fuel station or hotel?";
        assert_eq!(
            input_rejections(&grounded, asked_back)[0]["reason"],
            "input_copies_source"
        );
        // A question in the customer's words about the same entry passes,
        // even when it names the term, and so does a short question a
        // document asks itself.
        grounded
            .checks
            .support
            .as_mut()
            .unwrap()
            .sources
            .push("How long does an ACH transfer take?\nOne to three business days.".into());
        for asked in [
            QUESTION,
            "What is an authorization hold and why does it lower my available balance?",
            "How long does an ACH transfer take?",
        ] {
            assert!(input_rejections(&grounded, asked).is_empty(), "{asked}");
        }
        // A translation's source is in another language: nothing to copy.
        grounded.checks.support.as_mut().unwrap().cross_language = true;
        assert!(input_rejections(&grounded, copied).is_empty());
        // Without sources, the input-only checks still hold.
        let letter = "Dear [Customer Name], how can I help you with your card today?";
        let found = input_rejections(&task("en"), letter);
        let found: Vec<_> = found.iter().filter_map(|r| r["reason"].as_str()).collect();
        assert_eq!(
            found,
            vec!["input_has_placeholder", "input_sounds_like_assistant"]
        );
    }

    #[test]
    fn placeholders_and_assistant_voiced_inputs_are_rejected() {
        let answer = "Fuel pumps place an authorization hold larger than the purchase; it lowers your available balance for a few days.";
        let letter = "Dear [Customer Name], how can I help you with your card today?";
        let verdict = judge_pair(&task("en"), letter, letter, answer);
        let found = reasons(&verdict);
        assert!(
            found.contains(&"input_has_placeholder")
                && found.contains(&"input_sounds_like_assistant"),
            "{found:?}"
        );
        assert!(reasons(&judge_pair(&task("en"), QUESTION, QUESTION, answer)).is_empty());
        // Seen from the small model on a new domain: a reply written as the
        // user's message, in English and in German.
        for input in [
            "It sounds like you're experiencing a problem with your card after a trip abroad.",
            "Hallo! Ich habe eine Karte. Wie kann ich Ihnen helfen? Eine Frage zum Thema Karten?",
        ] {
            assert!(
                reasons(&judge_pair(&task("en"), input, input, answer))
                    .contains(&"input_sounds_like_assistant"),
                "{input}"
            );
        }
        // Seen from the small model in the demo run: an answer citing the
        // prompt's "reference", which the customer never saw.
        let cites = "According to the reference, fuel pumps place a hold that lowers your available balance.";
        assert_eq!(
            reasons(&judge_pair(&task("en"), QUESTION, QUESTION, cites)),
            vec!["response_cites_the_prompt"]
        );
    }
}
