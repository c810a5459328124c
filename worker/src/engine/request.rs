//! What callers ask the engine for and what they get back. Plain data: no
//! llama.cpp types cross this boundary.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One chat turn; `role` is `system`, `user` or `assistant`. The same type
/// the work units carry, so a unit's prompt reaches the engine unchanged.
pub use seedling_common::work::Message as ChatMessage;

/// The text the model continues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Prompt {
    /// Rendered with the model's own chat template (from the GGUF metadata),
    /// ending with the opening of an assistant turn.
    Chat(Vec<ChatMessage>),
    /// Sent as-is; special tokens such as `<|im_start|>` are parsed. This is
    /// the path Magpie-style pre-query generation needs.
    Raw(String),
}

/// Token sampling; `temperature <= 0` means greedy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: i32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    /// How many recent tokens the repeat penalty looks at.
    pub repeat_last_n: i32,
    pub seed: u32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.7,
            top_p: 0.9,
            top_k: 40,
            min_p: 0.05,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Deterministic argmax decoding, no penalties.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            repeat_penalty: 1.0,
            ..Self::default()
        }
    }
}

/// Restricts what the model may emit, so the output always parses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OutputConstraint {
    /// A GBNF grammar whose start rule is `root`.
    Grammar(String),
    /// A JSON schema, converted to a grammar by llama.cpp.
    JsonSchema(serde_json::Value),
}

/// One generation job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRequest {
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    pub max_new_tokens: u32,
    /// Generation stops before the first occurrence of any of these.
    pub stop: Vec<String>,
    pub constraint: Option<OutputConstraint>,
    /// Keep the KV cells of this prompt's prefix for later requests that
    /// share it (and reuse a cached one). On by default.
    pub reuse_prefix: bool,
    /// Bytes at the start of a raw prompt that later requests share (the
    /// instructions and demonstration before the instance): kept in the
    /// prefix cache as one entry, where the cache alone would keep only the
    /// part that every prompt shares.
    pub shared_prefix: Option<usize>,
    /// Report the `n` highest first-step logits (for comparing batched and
    /// single-sequence numerics). Zero for none.
    pub report_first_logits: usize,
    /// Keep generating past end-of-generation tokens (benchmarks only).
    pub ignore_eos: bool,
}

impl GenerationRequest {
    pub fn chat(messages: Vec<ChatMessage>) -> Self {
        Self::new(Prompt::Chat(messages))
    }

    pub fn raw(text: impl Into<String>) -> Self {
        Self::new(Prompt::Raw(text.into()))
    }

    fn new(prompt: Prompt) -> Self {
        Self {
            prompt,
            sampling: SamplingParams::default(),
            max_new_tokens: 256,
            stop: Vec::new(),
            constraint: None,
            reuse_prefix: true,
            shared_prefix: None,
            report_first_logits: 0,
            ignore_eos: false,
        }
    }

    pub fn with_sampling(mut self, sampling: SamplingParams) -> Self {
        self.sampling = sampling;
        self
    }

    pub fn with_max_new_tokens(mut self, max_new_tokens: u32) -> Self {
        self.max_new_tokens = max_new_tokens;
        self
    }

    pub fn with_stop(mut self, stop: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.stop = stop.into_iter().map(Into::into).collect();
        self
    }

    pub fn with_shared_prefix(mut self, bytes: Option<usize>) -> Self {
        self.shared_prefix = bytes;
        self
    }

    pub fn with_constraint(mut self, constraint: OutputConstraint) -> Self {
        self.constraint = Some(constraint);
        self
    }

    pub fn with_prefix_reuse(mut self, reuse_prefix: bool) -> Self {
        self.reuse_prefix = reuse_prefix;
        self
    }

    pub fn with_ignore_eos(mut self, ignore_eos: bool) -> Self {
        self.ignore_eos = ignore_eos;
        self
    }

    pub fn with_first_logits(mut self, n: usize) -> Self {
        self.report_first_logits = n;
        self
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// The model emitted an end-of-generation token.
    EndOfGeneration,
    /// One of the request's stop strings appeared.
    StopString,
    /// `max_new_tokens` were generated.
    MaxTokens,
    /// The sequence reached the context size.
    ContextFull,
}

/// What one request cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestAccounting {
    /// Prompt tokens run through the model for this request.
    pub prompt_tokens_computed: u32,
    /// Prompt tokens whose KV cells were copied from a cached prefix.
    pub prompt_tokens_reused: u32,
    pub generated_tokens: u32,
    /// This request's share of the decode time spent on its prompt (a step
    /// that mixes sequences is split by their token counts).
    pub prompt_time: Duration,
    /// This request's share of the decode time spent on its generated
    /// tokens. With `prompt_time`, the shares of all requests add up to the
    /// engine's busy time.
    #[serde(default)]
    pub generate_time: Duration,
    /// Time in the queue before a slot was free.
    pub queued: Duration,
    /// From submission to the first generated token.
    pub time_to_first_token: Duration,
    /// From the first generated token to the last.
    pub decode_time: Duration,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub text: String,
    pub finish_reason: FinishReason,
    pub accounting: RequestAccounting,
    /// `(token id, logit)` of the highest first-step logits, when asked for.
    pub first_logits: Vec<(i32, f32)>,
}

/// Teacher forcing: how likely the model finds each continuation right
/// after one context. Verification's no-training proxy scores a fact
/// probe's true answer and its swapped ones this way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRequest {
    /// Rendered as a generation prompt is (a chat ends with the opening of
    /// the assistant turn).
    pub context: Prompt,
    pub continuations: Vec<String>,
    /// Also score the model's end-of-turn token after each continuation, as
    /// fine-tuning on a chat turn trains it.
    pub end_of_turn: bool,
}

/// One token of a continuation and its log-probability given everything
/// before it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoredToken {
    /// Byte range of the token in the continuation's text; the end-of-turn
    /// token is the empty range at the end.
    pub start: usize,
    pub end: usize,
    pub logprob: f32,
}

/// What a [`ScoreRequest`] found, continuations in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub context_tokens: usize,
    pub continuations: Vec<Vec<ScoredToken>>,
    /// Engine time the scoring took.
    pub compute: Duration,
}

impl Scored {
    /// Summed log-probability of each continuation.
    pub fn totals(&self) -> Vec<f64> {
        self.continuations
            .iter()
            .map(|tokens| tokens.iter().map(|t| f64::from(t.logprob)).sum())
            .collect()
    }
}
