//! The plan file format (version 1). Every table refuses unknown keys, so a
//! misspelt field is an error, not a silently ignored default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A domain generation plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Format version; this build reads 1.
    pub version: u32,
    pub domain: Domain,
    /// Subdomains with relative weights (normalised over the list).
    pub subdomains: Vec<Subdomain>,
    #[serde(default)]
    pub glossary: Vec<GlossaryEntry>,
    #[serde(default)]
    pub scenarios: Vec<Scenario>,
    #[serde(default)]
    pub expert_examples: Vec<ExpertExample>,
    /// Business rules and constraints the responses must respect.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Reference documents, relative to the plan file; chunked for grounding.
    #[serde(default)]
    pub references: Vec<Reference>,
    /// Personas with relative weights (normalised over the list).
    pub personas: Vec<Persona>,
    /// Languages with shares that sum to 1.
    pub languages: Vec<Language>,
    /// Task types with shares that sum to 1, each with a template per language.
    pub task_types: Vec<TaskType>,
    #[serde(default)]
    pub adversarial: Adversarial,
    #[serde(default)]
    pub methods: Methods,
    #[serde(default)]
    pub augmentation: Augmentation,
    #[serde(default)]
    pub sampling: Sampling,
    /// Seed of every random choice the plan drives (allocation ties, sampling).
    pub seed: u64,
    pub target: Target,
    #[serde(default)]
    pub quality: Quality,
    #[serde(default)]
    pub splits: Splits,
    /// GGUF to generate with; the cluster's model when absent.
    #[serde(default)]
    pub model: Option<PathBuf>,
}

impl Plan {
    /// The system prompt the dataset's chat formats carry (and verification
    /// trains with).
    pub fn system_prompt(&self) -> String {
        format!(
            "You are an expert assistant for {}: {}",
            self.domain.name, self.domain.description
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subdomain {
    pub name: String,
    pub weight: f64,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlossaryEntry {
    pub term: String,
    pub definition: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub description: String,
    /// The subdomain it belongs to; any when absent.
    #[serde(default)]
    pub subdomain: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpertExample {
    pub question: String,
    pub answer: String,
    #[serde(default)]
    pub subdomain: Option<String>,
    #[serde(skip)]
    question_language: DetectedLanguage,
}

impl ExpertExample {
    /// The question's language (ISO 639-1), detected on first use: every
    /// attempt's choice of demonstration asks for it.
    pub fn question_language(&self) -> Option<&'static str> {
        *self
            .question_language
            .0
            .get_or_init(|| seedling_common::language::detect_language(&self.question))
    }
}

/// A value derived from the text beside it, computed once; equal whenever
/// the texts are.
#[derive(Debug, Clone, Default)]
struct DetectedLanguage(std::sync::OnceLock<Option<&'static str>>);

impl PartialEq for DetectedLanguage {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub statement: String,
    /// Terms a response must contain (case-insensitive).
    #[serde(default)]
    pub must_contain: Vec<String>,
    /// Terms a response must not contain (case-insensitive).
    #[serde(default)]
    pub must_not_contain: Vec<String>,
    /// A pattern a response must not match.
    #[serde(default)]
    pub forbidden_regex: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persona {
    pub name: String,
    pub weight: f64,
    /// Free-form attributes: role, expertise, age_band, region, style, ...
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Language {
    /// ISO 639-1 code (`en`, `es`, ...).
    pub code: String,
    pub share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskType {
    pub name: String,
    pub share: f64,
    /// minijinja template per language code.
    pub templates: BTreeMap<String, String>,
    /// Its answers state the domain's facts, so each figure in them must
    /// come from the passages the answer was grounded on (the support
    /// check). Set false for tasks whose answers make new figures:
    /// calculations, code, creative writing. Left out of the plan's id when
    /// true, so plans written before the option keep theirs.
    #[serde(
        default = "grounded_default",
        skip_serializing_if = "is_grounded_default"
    )]
    pub grounded: bool,
}

fn grounded_default() -> bool {
    true
}

fn is_grounded_default(grounded: &bool) -> bool {
    *grounded
}

/// Kinds of deliberately hard inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdversarialKind {
    Ambiguous,
    OutOfScope,
    ContradictsRule,
    PromptInjection,
    EdgeCaseValues,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adversarial {
    /// Share of accepted records that are adversarial, in [0, 1).
    #[serde(default)]
    pub share: f64,
    #[serde(default)]
    pub kinds: Vec<AdversarialKind>,
}

/// Mix of generation methods (shares that sum to 1). Without a `[methods]`
/// table the plan gets the default mix; within one, a method left out gets
/// no share (`[methods] template = 1.0` means templates only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Methods {
    #[serde(default)]
    pub template: f64,
    #[serde(default)]
    pub self_instruct: f64,
    #[serde(default)]
    pub evol_instruct: f64,
    #[serde(default)]
    pub magpie: f64,
    /// Not a method but how the first three start: the share of their
    /// attempts, for a grounded task type, that begin from a passage of the
    /// plan's own knowledge (a sentence of a reference document, a glossary
    /// definition, a rule or an expert answer that states a figure). The
    /// question is written about that passage and the answer with it in
    /// front of the model, and the passages are walked in turn so that every
    /// one of them is written about. Magpie and augmentation never do.
    #[serde(default = "fact_first_default")]
    pub fact_first: f64,
}

fn fact_first_default() -> f64 {
    1.0
}

impl Default for Methods {
    fn default() -> Self {
        Self {
            template: 0.6,
            self_instruct: 0.15,
            evol_instruct: 0.2,
            magpie: 0.05,
            fact_first: fact_first_default(),
        }
    }
}

/// Controlled transformations of accepted records (design section 4.1, step 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AugmentationKind {
    /// The same request in other words.
    Paraphrase,
    /// The same request from another of the plan's personas.
    PersonaShift,
    /// The same request, much more or much less formal.
    FormalityShift,
    /// Input and response translated into another plan language.
    Translation,
}

/// How many accepted records come from transforming an accepted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augmentation {
    /// Share of each stratum's attempts spent on augmentation, in [0, 1).
    pub share: f64,
    pub kinds: Vec<AugmentationKind>,
}

impl Default for Augmentation {
    fn default() -> Self {
        Self {
            share: 0.1,
            kinds: vec![
                AugmentationKind::Paraphrase,
                AugmentationKind::PersonaShift,
                AugmentationKind::FormalityShift,
                AugmentationKind::Translation,
            ],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sampling {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: i32,
    pub max_new_tokens: u32,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_p: 0.9,
            top_k: 40,
            max_new_tokens: 384,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Accepted records to produce in total (signed so that a negative
    /// number gets a clear message rather than a type error).
    pub accepted: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quality {
    /// Lowest combined quality score an accepted record may have, in [0, 1].
    pub min_score: f64,
    /// Ask the model to grade every pair that passed the heuristics. Off by
    /// default: the default 0.5B model grades everything 5/5 (BENCHMARKS.md,
    /// judge reliability); turn it on with a larger model.
    pub judge: bool,
    /// Weight of the judge in the combined score, in [0, 1]; the rest is
    /// the heuristic estimate. A small judge is noisy: keep it moderate.
    pub judge_weight: f64,
    /// Estimated Jaccard similarity of word shingles (MinHash) at or above
    /// which a record is a near duplicate of an accepted one.
    pub near_duplicate_jaccard: f64,
    /// Compare each input's engine embedding with the accepted inputs'
    /// (the semantic tier: paraphrases the text tiers miss).
    pub semantic_dedup: bool,
    /// Cosine similarity of input embeddings at or above which an input
    /// paraphrases an accepted one. The default is measured on the default
    /// model (BENCHMARKS.md, semantic duplicates); another model may need
    /// its own.
    pub semantic_duplicate_cosine: f64,
    /// What a judge model's `unsupported` verdict does, where a worker hosts
    /// one (`--judge-model`): reject the answer, or only record the verdict
    /// beside the support check's, to measure a judge on this plan's
    /// answers before trusting it. Left out of the plan's id when it
    /// rejects, so plans written before the option keep theirs.
    #[serde(skip_serializing_if = "JudgeVerdicts::rejects")]
    pub judge_verdicts: JudgeVerdicts,
}

/// What a judge model's verdicts do to the answers it reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JudgeVerdicts {
    /// An `unsupported` verdict rejects the answer (`judge_unsupported`).
    #[default]
    Reject,
    /// Verdicts are kept in the lineage and the agreement figures only.
    Record,
}

impl JudgeVerdicts {
    pub fn rejects(&self) -> bool {
        *self == Self::Reject
    }
}

impl Default for Quality {
    fn default() -> Self {
        Self {
            min_score: 0.6,
            judge: false,
            judge_weight: 0.4,
            near_duplicate_jaccard: 0.8,
            semantic_dedup: true,
            semantic_duplicate_cosine: SEMANTIC_DUPLICATE_COSINE,
            judge_verdicts: JudgeVerdicts::Reject,
        }
    }
}

/// The default model's paraphrase threshold (see [`Quality::semantic_duplicate_cosine`]).
pub const SEMANTIC_DUPLICATE_COSINE: f64 = 0.95;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Splits {
    pub train: f64,
    pub validation: f64,
    pub test: f64,
}

impl Default for Splits {
    fn default() -> Self {
        Self {
            train: 0.8,
            validation: 0.1,
            test: 0.1,
        }
    }
}
