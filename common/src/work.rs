//! Work units: what the coordinator asks of a worker and what comes back.
//! Plain data, so the same values travel inside one process (embedded mode)
//! and, encoded, between nodes (the cluster).
//!
//! A unit is one **attempt** at one accepted record of one stratum, or one
//! domain-analysis pass over a reference chunk. The coordinator renders every
//! prompt (it knows the plan); the worker only runs them in order, checks the
//! outcome with the model-free heuristics and reports.

use crate::embedding::Embedding;
use serde::{Deserialize, Serialize};

/// Replaced in a later call by the text the earlier call produced.
pub const INPUT_SLOT: &str = "\u{27e6}input\u{27e7}";
/// Replaced in the judge's call by the response.
pub const RESPONSE_SLOT: &str = "\u{27e6}response\u{27e7}";
/// Replaced in the faithfulness call, by a worker that hosts a judge model,
/// by the passages the support check holds the answer to: the unit carries
/// them once, in its checks, and no worker without a judge copies them.
pub const SOURCES_SLOT: &str = "\u{27e6}sources\u{27e7}";

/// One role-tagged message of a chat prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: "system".into(),
            content: content.into(),
        }
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: "assistant".into(),
            content: content.into(),
        }
    }
}

/// The prompt of one model call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CallPrompt {
    /// Through the model's chat template.
    Chat(Vec<Message>),
    /// Continued as-is (Magpie's pre-query prompt).
    Raw(String),
}

/// One model call: the prompt and how to sample it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCall {
    /// The processing step this call is (`input_generation`, `evol_instruct`, ...).
    pub step: String,
    pub prompt: CallPrompt,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: i32,
    pub max_new_tokens: u32,
    pub seed: u32,
    pub stop: Vec<String>,
    /// Constrain the output to this JSON schema.
    pub json_schema: Option<serde_json::Value>,
    /// Bytes at the start of a raw prompt that many calls share (the
    /// instructions and the demonstration before the instance's own turn):
    /// the engine keeps their KV cells for the next call that opens the same
    /// way. Its own adaptive reuse finds only the part *every* prompt shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_prefix: Option<usize>,
}

impl ModelCall {
    /// The call with every [`INPUT_SLOT`] replaced by `input`.
    pub fn with_input(&self, input: &str) -> Self {
        self.filled(input, RESPONSE_SLOT)
    }

    /// The call with both slots filled.
    pub fn filled(&self, input: &str, response: &str) -> Self {
        self.rewritten(|text| {
            text.replace(INPUT_SLOT, input)
                .replace(RESPONSE_SLOT, response)
        })
    }

    /// The call with [`SOURCES_SLOT`] replaced by `sources`, a blank line
    /// between two.
    pub fn with_sources(&self, sources: &[String]) -> Self {
        let sources = sources.join("\n\n");
        self.rewritten(|text| text.replace(SOURCES_SLOT, &sources))
    }

    /// The call with each text of its prompt passed through `rewrite`.
    fn rewritten(&self, rewrite: impl Fn(&str) -> String) -> Self {
        let prompt = match &self.prompt {
            CallPrompt::Chat(messages) => CallPrompt::Chat(
                messages
                    .iter()
                    .map(|m| Message {
                        role: m.role.clone(),
                        content: rewrite(&m.content),
                    })
                    .collect(),
            ),
            CallPrompt::Raw(text) => CallPrompt::Raw(rewrite(text)),
        };
        // A slot inside the shared opening moves where it ends.
        let shared_prefix = match (&self.prompt, self.shared_prefix) {
            (CallPrompt::Raw(text), Some(n)) => text.get(..n).map(|head| rewrite(head).len()),
            _ => None,
        };
        Self {
            prompt,
            shared_prefix,
            ..self.clone()
        }
    }

    /// The sampling parameters as lineage step parameters.
    pub fn params(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut map = serde_json::Map::new();
        map.insert("temperature".into(), f64::from(self.temperature).into());
        map.insert("top_p".into(), f64::from(self.top_p).into());
        map.insert("top_k".into(), self.top_k.into());
        map.insert("max_new_tokens".into(), self.max_new_tokens.into());
        map.insert("seed".into(), self.seed.into());
        map
    }
}

/// A business rule in the form the worker checks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSpec {
    pub must_contain: Vec<String>,
    pub must_not_contain: Vec<String>,
    pub forbidden_regex: Option<String>,
}

/// What the worker checks a finished pair against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckSpec {
    /// ISO 639-1 code both input and response must be in.
    pub language: String,
    pub rules: Vec<RuleSpec>,
    /// Adversarial inputs may rightly be declined: no refusal check.
    pub allow_refusal: bool,
    /// Evol-Instruct's elimination filter applies (the input was evolved).
    pub evolved: bool,
    /// What the answer's figures must come from; none: nothing to check.
    #[serde(default)]
    pub support: Option<SupportSpec>,
}

/// The reasons the support check rejects an answer with: its figures and
/// claims against its sources, its substance, and its "yes" against what
/// it states.
pub const SUPPORT_REASONS: [&str; 4] = [
    "unsupported_fact",
    "contradicts_reference",
    "no_substance",
    "contradicts_itself",
];

/// The passages a response was grounded on, for the support check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupportSpec {
    /// Each passage's text, in the order citations name them.
    pub sources: Vec<String>,
    /// The sources are in another language (a translation's original):
    /// figures must match, words cannot.
    pub cross_language: bool,
}

/// The part of a source a response rests on: the sentence that states its
/// figures. Offsets count characters of the source text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Citation {
    /// Index into [`SupportSpec::sources`].
    pub source: usize,
    pub start: usize,
    pub end: usize,
    /// The answer's figures this span states.
    pub facts: Vec<String>,
}

/// Which model calls make one record, run in order. Each later call may use
/// [`INPUT_SLOT`] for the text the input calls produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateTask {
    /// Produces the record's input (instruction).
    pub input: ModelCall,
    /// Rewrites that input (Evol-Instruct); its output becomes the input.
    pub evolve: Option<ModelCall>,
    /// Produces the response to the input.
    pub response: ModelCall,
    /// Grades the pair (JSON rubric) when it passed the checks.
    pub judge: Option<ModelCall>,
    /// For a translated record: the round trip back to the source language.
    pub back_translation: Option<BackTranslation>,
    pub checks: CheckSpec,
    /// Embed the final input once it passed the checks, for the
    /// coordinator's semantic duplicate tier.
    #[serde(default)]
    pub embed_input: bool,
    /// Asks a judge model whether the support sources back every fact of
    /// the answer ([`SOURCES_SLOT`], filled from `checks.support`;
    /// [`INPUT_SLOT`], [`RESPONSE_SLOT`]). Only a worker that hosts a judge
    /// model runs it: the generator cannot judge itself.
    #[serde(default)]
    pub faithfulness: Option<ModelCall>,
}

/// Translates a translated input back ([`INPUT_SLOT`]) so that chrF against
/// the source input says how much of it survived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackTranslation {
    pub call: ModelCall,
    /// The input that was translated.
    pub source: String,
}

/// Extracts key concepts and scenarios from one reference chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyzeTask {
    pub call: ModelCall,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskKind {
    Generate(Box<GenerateTask>),
    Analyze(AnalyzeTask),
}

/// One unit of work, named so that its result is recognisable wherever and
/// however often it arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitTask {
    pub plan: String,
    /// Unique within the plan (`stratum#attempt`, `analysis#chunk`).
    pub unit: String,
    pub kind: TaskKind,
}

/// How one model call went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallOutcome {
    pub step: String,
    pub text: String,
    pub finish_reason: String,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub started_ms: u64,
    pub finished_ms: u64,
    /// Prefix reuse, queueing and engine time (absent from older results).
    #[serde(default)]
    pub cost: crate::cost::CallCost,
}

/// The worker's verdict on a pair, before the coordinator's decisions.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HeuristicVerdict {
    /// Every failed check, each a JSON object with a `reason`.
    pub rejections: Vec<serde_json::Value>,
    /// Evol-Instruct elimination reasons (evolved inputs only).
    pub evolution_failures: Vec<serde_json::Value>,
    /// A model-free quality estimate in [0, 1].
    pub score: f64,
    /// The judge's rubric scores (1-5 each) and rationale, when it ran.
    #[serde(default)]
    pub judge: Option<serde_json::Value>,
    /// chrF of the back-translation against the source, for translations.
    #[serde(default)]
    pub back_translation_chrf: Option<f64>,
    /// Where the answer's figures come from (the support check).
    #[serde(default)]
    pub citations: Vec<Citation>,
    /// The model the rubric judge ran on, when not the generator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_model: Option<String>,
    /// The judge model's reply to the faithfulness call, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faithfulness: Option<JudgeReply>,
}

/// What a worker's judge model replied, and which model it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeReply {
    pub model: String,
    pub text: String,
}

/// What a worker reports for a unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitResult {
    pub plan: String,
    pub unit: String,
    pub worker: String,
    /// The calls that ran, in order.
    pub calls: Vec<CallOutcome>,
    /// Set for generate tasks that ran to the end.
    pub verdict: Option<HeuristicVerdict>,
    /// Why the unit could not finish (the calls before the failure are kept).
    pub error: Option<String>,
    /// The engine's embedding of the final input, when the task asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_embedding: Option<Embedding>,
    /// What the worker spent outside model calls.
    #[serde(default)]
    pub work: WorkerWork,
}

/// A unit's work on the worker besides its model calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WorkerWork {
    /// Texts embedded, and the engine time that took.
    pub embeddings: u32,
    pub embedding_ms: u64,
    /// The model-free checks (heuristics, support, chrF).
    pub checks_ms: u64,
}

impl UnitResult {
    /// A result with nothing run yet.
    pub fn new(
        plan: impl Into<String>,
        unit: impl Into<String>,
        worker: impl Into<String>,
    ) -> Self {
        Self {
            plan: plan.into(),
            unit: unit.into(),
            worker: worker.into(),
            calls: Vec::new(),
            verdict: None,
            error: None,
            input_embedding: None,
            work: WorkerWork::default(),
        }
    }

    /// Text of the last call of `step`, if it ran.
    pub fn text_of(&self, step: &str) -> Option<&str> {
        self.calls
            .iter()
            .rev()
            .find(|c| c.step == step)
            .map(|c| c.text.as_str())
    }

    pub fn generated_tokens(&self) -> u64 {
        self.calls
            .iter()
            .map(|c| u64::from(c.generated_tokens))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(prompt: CallPrompt, shared_prefix: Option<usize>) -> ModelCall {
        ModelCall {
            step: "response_generation".into(),
            prompt,
            temperature: 0.7,
            top_p: 0.9,
            top_k: 40,
            max_new_tokens: 10,
            seed: 1,
            stop: vec![],
            json_schema: None,
            shared_prefix,
        }
    }

    #[test]
    fn input_slot_is_filled_in_every_message() {
        let call = call(
            CallPrompt::Chat(vec![
                Message::system("Answer the customer."),
                Message::user(format!("Customer: {INPUT_SLOT}")),
            ]),
            None,
        );
        let filled = call.with_input("Why was my card declined?");
        let CallPrompt::Chat(messages) = &filled.prompt else {
            panic!("chat stays chat")
        };
        assert_eq!(messages[1].content, "Customer: Why was my card declined?");
        assert_eq!(messages[0].content, "Answer the customer.");
        assert_eq!(filled.seed, 1);
    }

    #[test]
    fn the_shared_opening_of_a_raw_prompt_follows_its_slots() {
        let raw = |text: &str, shared: usize| call(CallPrompt::Raw(text.into()), Some(shared));
        let opening = "System turn. ";
        let after = raw(&format!("{opening}Rewrite: {INPUT_SLOT}"), opening.len())
            .with_input("Why was my card declined?");
        assert_eq!(after.shared_prefix, Some(opening.len()), "a slot after it");

        let inside = raw(
            &format!("About {INPUT_SLOT}. Now: "),
            "About ".len() + INPUT_SLOT.len() + 2,
        )
        .with_input("fees");
        let CallPrompt::Raw(text) = &inside.prompt else {
            panic!("raw stays raw")
        };
        assert_eq!(&text[..inside.shared_prefix.unwrap()], "About fees. ");

        let past_the_end = raw("short", 99).with_input("x");
        assert_eq!(
            past_the_end.shared_prefix, None,
            "a length past the text is dropped"
        );
    }
}
