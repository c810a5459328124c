//! How an engine is set up: model, context, threads, slots, prefix cache.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::EngineError;

/// Engine settings; [`EngineConfig::validate`] checks them before any load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    pub model_path: PathBuf,
    /// KV cells shared by all sequences (unified KV cache).
    pub n_ctx: u32,
    /// Most tokens submitted to one `llama_decode`.
    pub n_batch: u32,
    /// Physical micro-batch; the logits scratch buffer scales with it.
    pub n_ubatch: u32,
    /// Threads for ggml; `0` means one per free core.
    pub n_threads: u32,
    /// Layers offloaded to the GPU (needs the `cuda` feature); 0 on CPU.
    pub n_gpu_layers: u32,
    /// Requests decoded together (parallel sequences).
    pub n_slots: u32,
    /// Queue of requests waiting for a slot before callers are slowed down.
    pub queue_capacity: usize,
    /// Prefix cache: sequence ids kept for cached prefixes. A plan's input
    /// prompts open with one demonstration per subdomain, language and
    /// persona, beside the responses' plan-wide grounding: 8 churned.
    pub prefix_cache_entries: u32,
    /// Prefix cache: KV cells the cached prefixes may hold.
    pub prefix_cache_cells: u32,
    /// Prefix cache: shortest common prefix worth caching, in tokens.
    pub prefix_min_tokens: u32,
    /// Longest text the embedding context takes, in tokens.
    pub embedding_window: u32,
    /// One KV pool for all sequences (true, the default) or a fixed share of
    /// `n_ctx / n_slots` cells per sequence. Shared-prefix reuse needs the
    /// unified pool (a copy only tags cells); the split layout is what
    /// llama-batched-bench measures and is cheaper for attention at many
    /// sequences, at the price of no prefix reuse.
    pub kv_unified: bool,
    /// When set, the model file must have this SHA-256 (hex) or start fails.
    pub expected_sha256: Option<String>,
    /// A LoRA adapter (GGUF) applied at scale 1 to every request: a model
    /// fine-tuned by `seedling verify`, answering on our own engine.
    pub lora_adapter: Option<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            model_path: PathBuf::new(),
            n_ctx: 8192,
            n_batch: 2048,
            n_ubatch: 512,
            n_threads: 0,
            n_gpu_layers: 0,
            n_slots: 8,
            queue_capacity: 256,
            prefix_cache_entries: 16,
            prefix_cache_cells: 4096,
            prefix_min_tokens: 32,
            embedding_window: 512,
            kv_unified: true,
            expected_sha256: None,
            lora_adapter: None,
        }
    }
}

impl EngineConfig {
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        Self {
            model_path: model_path.into(),
            ..Self::default()
        }
    }

    /// Refuses settings llama.cpp would reject or misbehave on.
    pub fn validate(&self) -> Result<(), EngineError> {
        let fail = |msg: String| Err(EngineError::InvalidConfig(msg));
        if self.n_ctx < 64 {
            return fail(format!("n_ctx must be >= 64, got {}", self.n_ctx));
        }
        if self.n_slots == 0 || self.n_slots + self.prefix_cache_entries > 256 {
            return fail(format!(
                "n_slots ({}) must be >= 1 and n_slots + prefix_cache_entries ({}) <= 256",
                self.n_slots, self.prefix_cache_entries
            ));
        }
        if self.n_ubatch == 0 || self.n_batch < self.n_ubatch {
            return fail(format!(
                "n_batch ({}) must be >= n_ubatch ({}) > 0",
                self.n_batch, self.n_ubatch
            ));
        }
        if self.n_batch < self.n_slots {
            return fail(format!(
                "n_batch ({}) must be >= n_slots ({}) so every sequence advances each step",
                self.n_batch, self.n_slots
            ));
        }
        if self.cells_per_sequence() < 16 {
            return fail(format!(
                "n_ctx ({}) split over n_slots ({}) leaves under 16 cells per sequence",
                self.n_ctx, self.n_slots
            ));
        }
        if self.queue_capacity == 0 {
            return fail("queue_capacity must be >= 1".into());
        }
        if self.embedding_window == 0 {
            return fail("embedding_window must be >= 1".into());
        }
        Ok(())
    }

    /// Sequence ids reserved for cached prefixes (none without a unified KV cache).
    pub fn effective_cache_entries(&self) -> u32 {
        if self.kv_unified {
            self.prefix_cache_entries
        } else {
            0
        }
    }

    /// KV cells one sequence can use.
    pub fn cells_per_sequence(&self) -> u32 {
        if self.kv_unified {
            self.n_ctx
        } else {
            self.n_ctx / self.n_slots.max(1)
        }
    }

    /// The thread count actually used.
    pub fn effective_threads(&self) -> u32 {
        if self.n_threads > 0 {
            return self.n_threads;
        }
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        EngineConfig::new("m.gguf").validate().unwrap();
    }

    #[test]
    fn bad_settings_are_named() {
        let cases: Vec<(EngineConfig, &str)> = vec![
            (
                EngineConfig {
                    n_ctx: 10,
                    ..EngineConfig::default()
                },
                "n_ctx",
            ),
            (
                EngineConfig {
                    n_slots: 0,
                    ..EngineConfig::default()
                },
                "n_slots",
            ),
            (
                EngineConfig {
                    n_slots: 250,
                    ..EngineConfig::default()
                },
                "n_slots",
            ),
            (
                EngineConfig {
                    n_batch: 256,
                    n_ubatch: 512,
                    ..EngineConfig::default()
                },
                "n_batch",
            ),
            (
                EngineConfig {
                    n_batch: 4,
                    n_ubatch: 4,
                    n_slots: 8,
                    ..EngineConfig::default()
                },
                "n_slots",
            ),
            (
                EngineConfig {
                    queue_capacity: 0,
                    ..EngineConfig::default()
                },
                "queue_capacity",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err} should name {field}");
        }
    }
}
