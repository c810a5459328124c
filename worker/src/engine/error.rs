//! The engine's typed errors.

use std::path::PathBuf;

use crate::model_file::ModelFileError;

/// Everything that can go wrong between a request and its generation.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    ModelFile(#[from] ModelFileError),
    #[error(
        "llama.cpp could not load {path}: {reason} (unsupported architecture, corrupt tensors or not enough memory)"
    )]
    ModelLoad { path: PathBuf, reason: String },
    #[error("llama.cpp could not apply the LoRA adapter {path}: {reason}")]
    Adapter { path: PathBuf, reason: String },
    #[error(
        "llama.cpp could not create a context of {n_ctx} tokens for {n_slots} slots: {reason} (out of memory?)"
    )]
    ContextCreate {
        n_ctx: u32,
        n_slots: u32,
        reason: String,
    },
    #[error("invalid engine config: {0}")]
    InvalidConfig(String),
    #[error("prompt of {prompt_tokens} tokens does not fit the context of {n_ctx} tokens")]
    ContextOverflow { prompt_tokens: usize, n_ctx: u32 },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("model has no chat template in its metadata; send a raw prompt instead")]
    NoChatTemplate,
    #[error("cannot render chat template: {0}")]
    ChatTemplate(String),
    #[error("invalid grammar: {0}")]
    InvalidGrammar(String),
    #[error("JSON schema cannot be turned into a grammar: {0}")]
    InvalidJsonSchema(String),
    #[error("llama_decode failed: {0}")]
    Decode(String),
    #[error("text of {tokens} tokens is longer than the embedding window of {limit}")]
    EmbeddingTooLong { tokens: usize, limit: u32 },
    #[error("embedding failed: {0}")]
    Embedding(String),
    #[error("the engine thread has stopped")]
    EngineStopped,
}
