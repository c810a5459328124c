//! Teacher-forced scoring: the log-probability of given continuations after
//! a context, on a context of its own so scoring never disturbs the
//! sequences the scheduler is decoding.
//!
//! The context is decoded once; each continuation is then decoded after it
//! and its cells removed again, so every continuation sees exactly the same
//! context and none sees another.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::scheduler::context_params;
use super::{EngineConfig, EngineError, ScoreRequest, ScoredToken};

/// Tokens one scoring context holds: a few records in context, a question
/// and the longest of its answers.
pub(super) const SCORE_WINDOW: u32 = 4096;

/// Tokens per decode. Every continuation token asks for its logits, and the
/// logits buffer grows with the tokens asking (a vocabulary's worth each).
const SCORE_BATCH: usize = 512;

pub(super) fn new_scoring_context<'m>(
    backend: &LlamaBackend,
    model: &'m LlamaModel,
    config: &EngineConfig,
) -> Result<LlamaContext<'m>, EngineError> {
    let batch = SCORE_BATCH as u32;
    let params = context_params(config, SCORE_WINDOW, batch, batch, 1);
    model
        .new_context(backend, params)
        .map_err(|e| EngineError::ContextCreate {
            n_ctx: SCORE_WINDOW,
            n_slots: 1,
            reason: e.to_string(),
        })
}

/// `log softmax(logits)[target]`.
fn logprob(logits: &[f32], target: LlamaToken) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|l| f64::from(l - max).exp()).sum();
    let log_z = f64::from(max) + sum.ln();
    (f64::from(logits[target.0 as usize]) - log_z) as f32
}

/// A continuation's tokens and each one's byte range in its text.
fn tokenize_continuation(
    model: &LlamaModel,
    text: &str,
    end_of_turn: Option<LlamaToken>,
) -> Vec<(LlamaToken, usize, usize)> {
    let vocab = model.vocab();
    let mut out = Vec::new();
    let mut at = 0;
    for token in vocab.tokenize(text.as_bytes(), false, false) {
        // Byte-level BPE pieces concatenate back to the text; the clamp only
        // guards a tokenizer that normalises.
        let len = vocab.token_to_piece(token, false, None).len();
        let start = at.min(text.len());
        at += len;
        out.push((token, start, at.min(text.len())));
    }
    if let Some(end) = end_of_turn {
        out.push((end, text.len(), text.len()));
    }
    out
}

fn decode(ctx: &mut LlamaContext<'_>, batch: &mut LlamaBatch<'_>) -> Result<(), EngineError> {
    ctx.decode(batch)
        .map_err(|e| EngineError::Decode(e.to_string()))
}

/// Scores every continuation of `request` after `context` (already
/// rendered). Leaves the scoring context empty, whatever happens.
pub(super) fn score(
    ctx: &mut LlamaContext<'_>,
    model: &LlamaModel,
    context: &str,
    request: &ScoreRequest,
) -> Result<(usize, Vec<Vec<ScoredToken>>), EngineError> {
    ctx.clear_kv_cache();
    let scored = score_in(ctx, model, context, request);
    ctx.clear_kv_cache();
    scored
}

fn score_in(
    ctx: &mut LlamaContext<'_>,
    model: &LlamaModel,
    context: &str,
    request: &ScoreRequest,
) -> Result<(usize, Vec<Vec<ScoredToken>>), EngineError> {
    let vocab = model.vocab();
    let prompt = vocab.tokenize(context.as_bytes(), true, true);
    if prompt.is_empty() {
        return Err(EngineError::EmptyPrompt);
    }
    let end_of_turn = request.end_of_turn.then(|| {
        let eot = vocab.eot();
        if eot.0 >= 0 { eot } else { vocab.eos() }
    });
    let continuations: Vec<_> = request
        .continuations
        .iter()
        .map(|text| tokenize_continuation(model, text, end_of_turn))
        .collect();
    let longest = continuations.iter().map(Vec::len).max().unwrap_or(0);
    if prompt.len() + longest > SCORE_WINDOW as usize {
        return Err(EngineError::ContextOverflow {
            prompt_tokens: prompt.len() + longest,
            n_ctx: SCORE_WINDOW,
        });
    }

    let mut batch = LlamaBatch::new(SCORE_BATCH, 1);
    let mut context_end = Vec::new();
    for (chunk_at, chunk) in prompt.chunks(SCORE_BATCH).enumerate() {
        batch.clear();
        let first = chunk_at * SCORE_BATCH;
        for (i, token) in chunk.iter().enumerate() {
            let pos = first + i;
            batch
                .add(*token, pos as i32, &[0], pos + 1 == prompt.len())
                .map_err(|e| EngineError::Decode(e.to_string()))?;
        }
        decode(ctx, &mut batch)?;
        if first + chunk.len() == prompt.len() {
            context_end = ctx.get_logits_ith(batch.n_tokens() - 1).to_vec();
        }
    }

    let n_context = prompt.len();
    let mut out = Vec::with_capacity(continuations.len());
    for tokens in &continuations {
        let mut scored: Vec<ScoredToken> = tokens
            .iter()
            .map(|&(_, start, end)| ScoredToken {
                start,
                end,
                logprob: 0.0,
            })
            .collect();
        if let Some(&(first, _, _)) = tokens.first() {
            scored[0].logprob = logprob(&context_end, first);
        }
        // Token j's logits predict token j + 1, so the last token itself
        // never needs decoding.
        let feed = tokens.len().saturating_sub(1);
        for chunk_at in (0..feed).step_by(SCORE_BATCH) {
            batch.clear();
            let chunk_end = (chunk_at + SCORE_BATCH).min(feed);
            for (j, &(token, _, _)) in tokens.iter().enumerate().take(chunk_end).skip(chunk_at) {
                batch
                    .add(token, (n_context + j) as i32, &[0], true)
                    .map_err(|e| EngineError::Decode(e.to_string()))?;
            }
            decode(ctx, &mut batch)?;
            for j in chunk_at..chunk_end {
                let logits = ctx.get_logits_ith((j - chunk_at) as i32);
                scored[j + 1].logprob = logprob(logits, tokens[j + 1].0);
            }
        }
        let _ = ctx.clear_kv_cache_seq(Some(0), Some(n_context as u32), None);
        out.push(scored);
    }
    Ok((n_context, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprob_is_a_log_softmax() {
        let logits = [1.0f32, 2.0, 3.0];
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        for (i, &l) in logits.iter().enumerate() {
            let expected = (f64::from(l).exp() / z).ln();
            assert!((f64::from(logprob(&logits, LlamaToken(i as i32))) - expected).abs() < 1e-6);
        }
        // Large logits must not overflow.
        let big = [1000.0f32, 1000.0];
        assert!((logprob(&big, LlamaToken(0)) - 0.5f32.ln()).abs() < 1e-6);
    }
}
