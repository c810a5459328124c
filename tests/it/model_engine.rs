//! The engine against the real Qwen 2.5 GGUF: determinism, batching
//! numerics, grammars, stops, context overflow, embeddings, prefix reuse,
//! teacher-forced scoring.

use seedling_tests::engine;
use seedling_worker::engine::{
    ChatMessage, EngineError, FinishReason, Generation, GenerationRequest, OutputConstraint,
    Prompt, SamplingParams, ScoreRequest, cosine,
};

fn ask(question: &str) -> GenerationRequest {
    GenerationRequest::chat(vec![ChatMessage::user(question)])
}

fn greedy(question: &str, max_new_tokens: u32) -> GenerationRequest {
    ask(question)
        .with_sampling(SamplingParams::greedy())
        .with_max_new_tokens(max_new_tokens)
}

/// Largest absolute difference between the top-5 logits of `a` and the same
/// tokens' logits in `b`'s top-10 (ranks near 10 may swap places). A token
/// missing from `b`'s list counts as infinitely far.
fn logit_distance(a: &[(i32, f32)], b: &[(i32, f32)]) -> f32 {
    a.iter()
        .take(5)
        .map(|(token, logit)| {
            b.iter()
                .find(|(t, _)| t == token)
                .map_or(f32::INFINITY, |(_, other)| (logit - other).abs())
        })
        .fold(0.0, f32::max)
}

/// Logits from a batched decode differ from a single-sequence one: ggml sums
/// attention over a different number of (F16) KV cells and in another order.
/// Measured here: up to ~0.17 on top logits of ~20 (under 1%); this bounds it.
const LOGIT_TOLERANCE: f32 = 0.25;

/// The top-1 token must agree unless the runner-up is within the tolerance.
fn assert_same_argmax(a: &[(i32, f32)], b: &[(i32, f32)], what: &str) {
    let near_tie = a.len() > 1 && (a[0].1 - a[1].1).abs() <= LOGIT_TOLERANCE;
    assert!(
        near_tie || a[0].0 == b[0].0,
        "{what}: argmax {:?} vs {:?}",
        a[0],
        b[0]
    );
}

fn first_divergence(a: &str, b: &str) -> usize {
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count()
}

#[test]
fn model_same_seed_and_params_give_identical_text() {
    let engine = engine(2, 1024);
    let request = |seed| {
        ask("Write one sentence about savings accounts.")
            .with_sampling(SamplingParams {
                temperature: 0.9,
                seed,
                ..SamplingParams::default()
            })
            .with_max_new_tokens(40)
    };
    let first = engine.generate_blocking(request(7)).unwrap();
    let second = engine.generate_blocking(request(7)).unwrap();
    assert!(!first.text.is_empty());
    assert_eq!(first.text, second.text, "same seed, same params");
    let others: Vec<String> = [8, 9, 10]
        .into_iter()
        .map(|seed| engine.generate_blocking(request(seed)).unwrap().text)
        .collect();
    assert!(
        others.iter().any(|text| *text != first.text),
        "three other seeds all reproduced seed 7's text: sampling ignores the seed"
    );
}

#[test]
fn model_batched_greedy_decoding_matches_single_sequence() {
    let questions = [
        "What is an overdraft fee?",
        "Name three primary colors.",
        "How do I reset a forgotten password?",
        "What does a phlebotomist do?",
        "Explain compound interest briefly.",
        "What is the capital of France?",
        "Give one tip for writing clear emails.",
        "What is a centrifuge used for in a lab?",
    ];
    let engine = engine(8, 2048);
    let request = |q: &str| greedy(q, 24).with_first_logits(10).with_prefix_reuse(false);
    let alone: Vec<Generation> = questions
        .iter()
        .map(|q| engine.generate_blocking(request(q)).unwrap())
        .collect();
    let together = engine
        .generate_all_blocking(questions.iter().map(|q| request(q)))
        .unwrap();

    let mut diverged = Vec::new();
    let mut worst = 0.0f32;
    for (idx, (a, b)) in alone.iter().zip(&together).enumerate() {
        let distance = logit_distance(&a.first_logits, &b.first_logits);
        worst = worst.max(distance);
        assert_same_argmax(&a.first_logits, &b.first_logits, &format!("request {idx}"));
        assert!(
            distance <= LOGIT_TOLERANCE,
            "request {idx}: first-step logits differ by {distance} (alone {:?}, batched {:?})",
            &a.first_logits[..3],
            &b.first_logits[..3]
        );
        if a.text != b.text {
            diverged.push((idx, first_divergence(&a.text, &b.text)));
        }
    }
    eprintln!(
        "batched vs alone at temperature 0: {} of 8 texts diverge (request, char offset): {diverged:?}; \
         largest first-step top-10 logit difference {worst:.4}",
        diverged.len()
    );
    // Batched kernels are not bit-identical, so a near-tie may flip late in a
    // text (on this 2-core machine 2 or 3 of 8 do, after 40+ characters); a
    // text that differs early, or most texts differing, is a batching bug.
    assert!(
        diverged.len() <= 4 && diverged.iter().all(|(_, at)| *at >= 20),
        "batched texts diverge too often or too early: {diverged:?}"
    );
}

#[test]
fn model_grammar_constrained_json_always_parses() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "member": {"type": "boolean"}
        },
        "required": ["name", "age", "member"],
        "additionalProperties": false
    });
    let engine = engine(16, 4096);
    // More requests than slots, so some wait in the queue and take a slot
    // another request's grammar state has just left.
    const REQUESTS: u32 = 24;
    let tickets: Vec<_> = (0..REQUESTS)
        .map(|seed| {
            let request = ask("Invent a bank customer and describe them as JSON.")
                .with_sampling(SamplingParams {
                    temperature: 1.0,
                    seed,
                    ..SamplingParams::default()
                })
                .with_max_new_tokens(64)
                .with_constraint(OutputConstraint::JsonSchema(schema.clone()));
            engine.submit_blocking(request).unwrap()
        })
        .collect();
    let mut names = std::collections::HashSet::new();
    for (idx, ticket) in tickets.into_iter().enumerate() {
        let generation = ticket.wait_blocking().unwrap();
        let value: serde_json::Value = serde_json::from_str(&generation.text)
            .unwrap_or_else(|e| panic!("request {idx}: {e}: {:?}", generation.text));
        assert!(value["name"].is_string(), "{value}");
        assert!(value["age"].is_u64(), "{value}");
        assert!(value["member"].is_boolean(), "{value}");
        assert_eq!(value.as_object().unwrap().len(), 3, "{value}");
        names.insert(value["name"].as_str().unwrap().to_string());
    }
    assert!(
        names.len() > 1,
        "{REQUESTS} seeds produced one name: sampling is not varied"
    );
}

#[test]
fn model_gbnf_grammar_restricts_output() {
    let engine = engine(2, 1024);
    let grammar = r#"root ::= ("yes" | "no") "." "#;
    let generation = engine
        .generate_blocking(
            ask("Is the sky blue? Answer yes or no.")
                .with_max_new_tokens(8)
                .with_constraint(OutputConstraint::Grammar(grammar.into())),
        )
        .unwrap();
    assert!(
        generation.text == "yes." || generation.text == "no.",
        "{:?}",
        generation.text
    );
    let bad = engine.generate_blocking(
        ask("x").with_constraint(OutputConstraint::Grammar("root ::= (".into())),
    );
    assert!(
        matches!(bad, Err(EngineError::InvalidGrammar(_))),
        "{bad:?}"
    );
}

#[test]
fn model_stop_strings_and_token_limits_are_finish_reasons() {
    let engine = engine(4, 2048);
    let counting = greedy(
        "Count from 1 to 20, separated by commas and spaces. Output only the numbers.",
        80,
    );

    let full = engine.generate_blocking(counting.clone()).unwrap();
    assert!(
        full.text.contains("4, 5"),
        "model did not count: {:?}",
        full.text
    );

    let stopped = engine
        .generate_blocking(counting.clone().with_stop([", 5"]))
        .unwrap();
    assert_eq!(stopped.finish_reason, FinishReason::StopString);
    assert!(!stopped.text.contains(", 5"), "{:?}", stopped.text);
    assert!(stopped.text.ends_with('4'), "{:?}", stopped.text);

    let limited = engine
        .generate_blocking(counting.with_max_new_tokens(5))
        .unwrap();
    assert_eq!(limited.finish_reason, FinishReason::MaxTokens);
    assert_eq!(limited.accounting.generated_tokens, 5);

    let short = engine
        .generate_blocking(greedy("Reply with the single word: ok", 20))
        .unwrap();
    assert_eq!(
        short.finish_reason,
        FinishReason::EndOfGeneration,
        "{:?}",
        short.text
    );
    assert!(short.accounting.generated_tokens < 20);
    assert!(short.accounting.time_to_first_token > std::time::Duration::ZERO);
}

#[test]
fn model_context_overflow_fails_alone() {
    let engine = engine(4, 512);
    let long_prompt = "The ledger lists deposits and withdrawals. ".repeat(120);
    let tickets: Vec<_> = [
        greedy("What is a deposit?", 16),
        ask(&long_prompt).with_max_new_tokens(16),
        greedy("What is a withdrawal?", 16),
        greedy("What is a ledger?", 16),
    ]
    .into_iter()
    .map(|r| engine.submit_blocking(r).unwrap())
    .collect();
    let results: Vec<_> = tickets.into_iter().map(|t| t.wait_blocking()).collect();
    match &results[1] {
        Err(EngineError::ContextOverflow {
            prompt_tokens,
            n_ctx,
        }) => {
            assert!(*prompt_tokens > 512);
            assert_eq!(*n_ctx, 512);
        }
        other => panic!("expected a context overflow, got {other:?}"),
    }
    for idx in [0, 2, 3] {
        let generation = results[idx].as_ref().unwrap();
        assert!(
            !generation.text.is_empty(),
            "request {idx} produced nothing"
        );
    }
}

#[test]
fn model_embeddings_rank_paraphrases_above_unrelated_text() {
    let engine = engine(1, 512);
    let texts = vec![
        "How do I open a new savings account?".to_string(),
        "How do I open a new savings account?".to_string(),
        "What are the steps to start a savings account?".to_string(),
        "The centrifuge must be balanced before each run.".to_string(),
    ];
    let vectors = engine.embed_blocking(texts).unwrap();
    assert_eq!(vectors.len(), 4);
    assert_eq!(vectors[0].len(), engine.info().n_embd as usize);
    let identical = cosine(&vectors[0], &vectors[1]);
    let paraphrase = cosine(&vectors[0], &vectors[2]);
    let unrelated = cosine(&vectors[0], &vectors[3]);
    assert!(
        (identical - 1.0).abs() < 1e-4,
        "identical texts: {identical}"
    );
    assert!(
        paraphrase > unrelated,
        "paraphrase {paraphrase} should be closer than unrelated {unrelated}"
    );
    // Batched and single embeddings agree: the pooled vectors do not leak across sequences.
    let alone = engine
        .embed_blocking(vec![
            "The centrifuge must be balanced before each run.".into(),
        ])
        .unwrap();
    assert!(cosine(&alone[0], &vectors[3]) > 0.999);
}

#[test]
fn model_reused_prefix_gives_the_text_of_a_fresh_prefix() {
    let grounding = format!(
        "You are a support agent for a retail bank. Glossary: {}",
        "An overdraft is a negative balance; a hold is a temporary block on funds; \
         ACH is an electronic transfer network; APY is the annual percentage yield. "
            .repeat(6)
    );
    let request = |question: &str, reuse: bool| {
        GenerationRequest::chat(vec![
            ChatMessage::system(grounding.clone()),
            ChatMessage::user(question),
        ])
        .with_sampling(SamplingParams::greedy())
        .with_max_new_tokens(24)
        .with_prefix_reuse(reuse)
        .with_first_logits(10)
    };
    let fresh_engine = engine(2, 2048);
    let fresh = fresh_engine
        .generate_blocking(request("What is a hold?", false))
        .unwrap();
    assert_eq!(fresh.accounting.prompt_tokens_reused, 0);
    drop(fresh_engine);

    let engine = engine(2, 2048);
    let warm = engine
        .generate_blocking(request("What is ACH?", true))
        .unwrap();
    assert_eq!(
        warm.accounting.prompt_tokens_reused, 0,
        "nothing cached yet"
    );
    let reused = engine
        .generate_blocking(request("What is a hold?", true))
        .unwrap();
    let prompt_len =
        reused.accounting.prompt_tokens_reused + reused.accounting.prompt_tokens_computed;
    assert!(
        reused.accounting.prompt_tokens_reused * 10 >= prompt_len * 8,
        "expected most of the {prompt_len} prompt tokens reused, got {:?}",
        reused.accounting
    );
    let distance = logit_distance(&fresh.first_logits, &reused.first_logits);
    eprintln!(
        "reused prefix: {} of {prompt_len} prompt tokens reused; first-step logit difference \
         {distance:.4}; text {}",
        reused.accounting.prompt_tokens_reused,
        if fresh.text == reused.text {
            "identical to the fresh computation".to_string()
        } else {
            format!(
                "diverges at char {}",
                first_divergence(&fresh.text, &reused.text)
            )
        }
    );
    assert!(
        distance <= LOGIT_TOLERANCE,
        "first-step logits differ by {distance}"
    );
    assert_same_argmax(&fresh.first_logits, &reused.first_logits, "reused prefix");
    assert_eq!(
        engine.stats().prompt_tokens_reused,
        u64::from(reused.accounting.prompt_tokens_reused)
    );
}

/// A raw ChatML prompt: instructions, one demonstration, then the instance's
/// own turn; the first two are what it says later prompts share.
fn demonstrated(demo: &str, question: &str) -> GenerationRequest {
    let opening = format!(
        "<|im_start|>system\nYou write short, realistic questions that customers send to the support chat of a retail \
         bank. Write only the question, in English, in the first person, in one sentence.<|im_end|>\n\
         <|im_start|>user\nWrite a question about this: {demo}<|im_end|>\n\
         <|im_start|>assistant\nCustomer: \"What does it cost?\"<|im_end|>\n"
    );
    let text = format!(
        "{opening}<|im_start|>user\nWrite a question about this: {question}<|im_end|>\n<|im_start|>assistant\nCustomer: \""
    );
    GenerationRequest::raw(text)
        .with_shared_prefix(Some(opening.len()))
        .with_sampling(SamplingParams::greedy())
        .with_max_new_tokens(8)
}

#[test]
fn model_a_said_opening_is_kept_for_the_next_prompt_that_opens_so() {
    let cards = "A replacement debit card costs 5 dollars and arrives within 7 business days; \
                 an express card costs 25 dollars and arrives in 2. "
        .repeat(4);
    let transfers =
        "Domestic wire transfers sent before 3 pm Eastern settle the same business day; \
                     international wires take 2 to 5 business days and cost 45 dollars. "
            .repeat(4);
    let engine = engine(2, 4096);
    let first = engine
        .generate_blocking(demonstrated(&cards, "overdraft fees"))
        .unwrap();
    assert_eq!(
        first.accounting.prompt_tokens_reused, 0,
        "nothing cached yet"
    );
    // Opens with the same instructions, another demonstration: it reuses the
    // instructions only, and its own opening is kept.
    let second = engine
        .generate_blocking(demonstrated(&transfers, "savings rates"))
        .unwrap();
    let third = engine
        .generate_blocking(demonstrated(&transfers, "a lost card"))
        .unwrap();
    let (second_reused, third_reused) = (
        second.accounting.prompt_tokens_reused,
        third.accounting.prompt_tokens_reused,
    );
    eprintln!(
        "reused: {second_reused} then {third_reused} of {} prompt tokens",
        third.accounting.prompt_tokens_reused + third.accounting.prompt_tokens_computed
    );
    assert!(second_reused > 0, "the shared instructions are reused");
    assert!(
        third_reused >= second_reused + 80,
        "the third prompt reuses the second's whole demonstration ({third_reused} against {second_reused})"
    );
    assert!(
        third.accounting.prompt_tokens_computed < 30,
        "only the instance's own turn is computed: {:?}",
        third.accounting
    );
}

#[test]
fn model_missing_and_non_gguf_files_are_named_errors() {
    use seedling_worker::engine::{Engine, EngineConfig};
    let missing = Engine::start(EngineConfig::new("/nonexistent/dir/model.gguf")).unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/dir/model.gguf"),
        "{missing}"
    );
    assert!(missing.to_string().contains("not found"), "{missing}");
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.gguf");
    std::fs::write(&fake, b"this is not a model").unwrap();
    let not_gguf = Engine::start(EngineConfig::new(&fake)).unwrap_err();
    assert!(not_gguf.to_string().contains("not a GGUF"), "{not_gguf}");
    // A truncated GGUF passes the header check but llama.cpp refuses it.
    let truncated = dir.path().join("truncated.gguf");
    let mut head = vec![0u8; 4096];
    std::io::Read::read_exact(
        &mut std::fs::File::open(seedling_tests::model_path()).unwrap(),
        &mut head,
    )
    .unwrap();
    std::fs::write(&truncated, head).unwrap();
    let err = Engine::start(EngineConfig::new(&truncated)).unwrap_err();
    assert!(matches!(err, EngineError::ModelLoad { .. }), "{err}");
    // A pinned digest that the file does not have stops the start.
    let pinned = EngineConfig {
        expected_sha256: Some("0".repeat(64)),
        ..EngineConfig::new(seedling_tests::model_path())
    };
    let err = Engine::start(pinned).unwrap_err();
    assert!(err.to_string().contains("expected 0000"), "{err}");
}

#[test]
fn model_a_dropped_ticket_is_abandoned_not_decoded() {
    let engine = engine(1, 2048);
    // One slot: the short request can only run once the long one is gone.
    let long = engine
        .submit_blocking(greedy("Count from one to one thousand.", 1500).with_ignore_eos(true))
        .unwrap();
    drop(long);
    let short = engine.generate_blocking(greedy("Say hello.", 4)).unwrap();
    assert!(!short.text.is_empty());
    let stats = engine.stats();
    assert_eq!(
        stats.requests_completed, 1,
        "the abandoned request must not be decoded to its end: {stats:?}"
    );
}

#[test]
fn model_teacher_forcing_ranks_the_greedy_answer_first_and_tiles_its_bytes() {
    let engine = engine(1, 1024);
    let question = "Name the largest planet of the solar system in one sentence.";
    let answer = engine.generate_blocking(greedy(question, 48)).unwrap().text;
    assert!(!answer.is_empty());
    // The same answer with one word swapped, and an unrelated one.
    let swapped = match answer.split_once("Jupiter") {
        Some((before, after)) => format!("{before}Saturn{after}"),
        None => format!("Saturn. {answer}"),
    };
    let unrelated = "Bananas are yellow and grow in bunches.".to_string();
    let score = |continuations: Vec<String>| {
        engine
            .score_blocking(ScoreRequest {
                context: Prompt::Chat(vec![ChatMessage::user(question)]),
                continuations,
                end_of_turn: true,
            })
            .unwrap()
    };
    let scored = score(vec![answer.clone(), swapped.clone(), unrelated.clone()]);
    let totals = scored.totals();
    assert!(scored.context_tokens > 5);
    assert!(
        totals[0] > totals[1] && totals[0] > totals[2],
        "greedy {answer:?} scored {totals:?}"
    );
    for (text, tokens) in [&answer, &swapped, &unrelated]
        .into_iter()
        .zip(&scored.continuations)
    {
        // Every byte of the text belongs to exactly one token, in order;
        // the end-of-turn token is the empty range at the end.
        let (last, body) = tokens.split_last().unwrap();
        assert_eq!((last.start, last.end), (text.len(), text.len()));
        assert_eq!(body.first().unwrap().start, 0);
        for pair in body.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "{text:?}: {tokens:?}");
        }
        assert_eq!(body.last().unwrap().end, text.len());
        assert!(
            tokens
                .iter()
                .all(|t| t.logprob <= 0.0 && t.logprob.is_finite())
        );
    }
    // Greedy decoding picked each token as the most likely one: under
    // teacher forcing every one of them is likely (an argmax keeps well
    // above 1 in 1000). The end-of-turn token is left out: the answer may
    // have stopped at the token limit.
    let (_, greedy_tokens) = scored.continuations[0].split_last().unwrap();
    for t in greedy_tokens {
        assert!(
            t.logprob > -7.0,
            "{answer:?}: {:?}",
            scored.continuations[0]
        );
    }
    // Continuations do not see each other: reversed order, same scores.
    let reversed = score(vec![unrelated, swapped, answer]).totals();
    for (a, b) in totals.iter().zip(reversed.iter().rev()) {
        assert!((a - b).abs() < 1e-3, "{totals:?} vs {reversed:?}");
    }
}
