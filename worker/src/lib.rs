//! The Seedling worker: hosts one GGUF model through llama.cpp and turns
//! rendered prompts into generations, embeddings and accounting.
//!
//! Data path: a caller hands [`engine::Engine`] a [`engine::GenerationRequest`];
//! the engine thread batches it with every other request in flight and answers
//! with a [`engine::Generation`].

pub mod engine;
pub mod metrics;
pub mod model_file;
pub mod models;
pub mod remote;
pub mod scoring;
pub mod unit;
