//! The engine: one dedicated OS thread owns llama.cpp's model and context and
//! decodes every request in flight together (continuous batching). Callers
//! talk to it over a bounded channel and never block the async runtime.
//!
//! This module is the only place in Seedling that touches `llama_cpp_2`.

mod admission;
mod config;
mod error;
mod prefix_cache;
mod request;
mod scheduler;
mod score;
mod stop;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

pub use config::EngineConfig;
pub use error::EngineError;
pub use request::{
    ChatMessage, FinishReason, Generation, GenerationRequest, OutputConstraint, Prompt,
    RequestAccounting, SamplingParams, ScoreRequest, Scored, ScoredToken,
};

/// What the loaded model is, as llama.cpp reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelInfo {
    pub path: std::path::PathBuf,
    pub name: String,
    pub architecture: String,
    pub file_bytes: u64,
    pub n_params: u64,
    pub n_ctx_train: u32,
    pub n_embd: u32,
    pub has_chat_template: bool,
    pub gpu_offload: bool,
}

/// Running totals, readable from any thread.
#[derive(Debug, Default)]
pub struct EngineCounters {
    pub requests_completed: AtomicU64,
    pub requests_failed: AtomicU64,
    pub prompt_tokens_computed: AtomicU64,
    pub prompt_tokens_reused: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub active_slots: AtomicU64,
    pub queued_requests: AtomicU64,
    /// Engine time on prompt tokens, generated tokens and embeddings.
    pub prefill_us: AtomicU64,
    pub decode_us: AtomicU64,
    pub embedding_us: AtomicU64,
    /// Time the engine had nothing to do.
    pub idle_us: AtomicU64,
    /// KV cells held for the sequences decoding (each reserves what its
    /// request may need) and by cached prompt prefixes.
    pub kv_cells_reserved: AtomicU64,
    pub kv_cells_cached: AtomicU64,
}

/// A point-in-time copy of [`EngineCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EngineStats {
    pub requests_completed: u64,
    pub requests_failed: u64,
    pub prompt_tokens_computed: u64,
    pub prompt_tokens_reused: u64,
    pub generated_tokens: u64,
    pub active_slots: u64,
    pub queued_requests: u64,
    pub prefill_ms: u64,
    pub decode_ms: u64,
    pub embedding_ms: u64,
    pub idle_ms: u64,
    pub kv_cells_reserved: u64,
    pub kv_cells_cached: u64,
}

impl EngineCounters {
    fn snapshot(&self) -> EngineStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        EngineStats {
            requests_completed: load(&self.requests_completed),
            requests_failed: load(&self.requests_failed),
            prompt_tokens_computed: load(&self.prompt_tokens_computed),
            prompt_tokens_reused: load(&self.prompt_tokens_reused),
            generated_tokens: load(&self.generated_tokens),
            active_slots: load(&self.active_slots),
            queued_requests: load(&self.queued_requests),
            prefill_ms: load(&self.prefill_us) / 1000,
            decode_ms: load(&self.decode_us) / 1000,
            embedding_ms: load(&self.embedding_us) / 1000,
            idle_ms: load(&self.idle_us) / 1000,
            kv_cells_reserved: load(&self.kv_cells_reserved),
            kv_cells_cached: load(&self.kv_cells_cached),
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// Messages to the engine thread.
#[derive(Debug)]
enum Command {
    Generate {
        request: Box<GenerationRequest>,
        submitted: Instant,
        reply: Reply<Generation>,
    },
    Embed {
        texts: Vec<String>,
        reply: Reply<Embedded>,
    },
    Score {
        request: ScoreRequest,
        reply: Reply<Scored>,
    },
}

/// Embeddings and the engine time they took (the wait for the engine's
/// current step not included).
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub compute: std::time::Duration,
}

/// A submitted generation; wait on it for the result.
#[derive(Debug)]
pub struct GenerationTicket {
    reply: oneshot::Receiver<Result<Generation, EngineError>>,
}

impl GenerationTicket {
    pub async fn wait(self) -> Result<Generation, EngineError> {
        self.reply.await.map_err(|_| EngineError::EngineStopped)?
    }

    /// For synchronous callers; must not be called inside an async runtime.
    pub fn wait_blocking(self) -> Result<Generation, EngineError> {
        self.reply
            .blocking_recv()
            .map_err(|_| EngineError::EngineStopped)?
    }
}

/// Handle to a running engine. Dropping it drains in-flight work and stops the thread.
#[derive(Debug)]
pub struct Engine {
    commands: Option<mpsc::Sender<Command>>,
    info: ModelInfo,
    config: EngineConfig,
    counters: Arc<EngineCounters>,
    thread: Option<JoinHandle<()>>,
    /// How long loading the model took.
    load_time: std::time::Duration,
}

impl Engine {
    /// Loads the model on a new thread; returns once it is ready or failed.
    pub fn start(config: EngineConfig) -> Result<Self, EngineError> {
        config.validate()?;
        let loading = std::time::Instant::now();
        crate::model_file::check_gguf_header(&config.model_path)?;
        if let Some(expected) = &config.expected_sha256 {
            crate::model_file::verify_sha256(&config.model_path, expected)?;
        }
        let (commands, inbox) = mpsc::channel(config.queue_capacity);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let counters = Arc::new(EngineCounters::default());
        let thread = {
            let config = config.clone();
            let counters = Arc::clone(&counters);
            std::thread::Builder::new()
                .name("seedling-engine".into())
                .spawn(move || scheduler::run(config, inbox, counters, ready_tx))
                .map_err(|e| {
                    EngineError::InvalidConfig(format!("cannot spawn engine thread: {e}"))
                })?
        };
        let info = match ready_rx.recv() {
            Ok(Ok(info)) => info,
            Ok(Err(err)) => {
                let _ = thread.join();
                return Err(err);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(EngineError::EngineStopped);
            }
        };
        Ok(Self {
            commands: Some(commands),
            info,
            config,
            counters,
            thread: Some(thread),
            load_time: loading.elapsed(),
        })
    }

    /// How long `start` took: reading (and checking) the model file and
    /// loading it into llama.cpp.
    pub fn load_time(&self) -> std::time::Duration {
        self.load_time
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn stats(&self) -> EngineStats {
        self.counters.snapshot()
    }

    fn sender(&self) -> Result<&mpsc::Sender<Command>, EngineError> {
        self.commands.as_ref().ok_or(EngineError::EngineStopped)
    }

    fn generate_command(request: GenerationRequest) -> (Command, GenerationTicket) {
        let (reply, ticket) = oneshot::channel();
        let command = Command::Generate {
            request: Box::new(request),
            submitted: Instant::now(),
            reply,
        };
        (command, GenerationTicket { reply: ticket })
    }

    /// Queues a request; waits only while the queue is full (backpressure).
    pub async fn submit(
        &self,
        request: GenerationRequest,
    ) -> Result<GenerationTicket, EngineError> {
        let (command, ticket) = Self::generate_command(request);
        self.sender()?
            .send(command)
            .await
            .map_err(|_| EngineError::EngineStopped)?;
        Ok(ticket)
    }

    /// [`Engine::submit`] for synchronous callers (not inside a runtime).
    pub fn submit_blocking(
        &self,
        request: GenerationRequest,
    ) -> Result<GenerationTicket, EngineError> {
        let (command, ticket) = Self::generate_command(request);
        self.sender()?
            .blocking_send(command)
            .map_err(|_| EngineError::EngineStopped)?;
        Ok(ticket)
    }

    /// Submits every request before waiting on any, so they decode
    /// together; results come back in request order. For synchronous callers.
    pub fn generate_all_blocking(
        &self,
        requests: impl IntoIterator<Item = GenerationRequest>,
    ) -> Result<Vec<Generation>, EngineError> {
        let tickets = requests
            .into_iter()
            .map(|request| self.submit_blocking(request))
            .collect::<Result<Vec<_>, _>>()?;
        tickets
            .into_iter()
            .map(GenerationTicket::wait_blocking)
            .collect()
    }

    pub async fn generate(&self, request: GenerationRequest) -> Result<Generation, EngineError> {
        self.submit(request).await?.wait().await
    }

    pub fn generate_blocking(&self, request: GenerationRequest) -> Result<Generation, EngineError> {
        self.submit_blocking(request)?.wait_blocking()
    }

    /// Mean-pooled, L2-normalised embeddings of `texts` (cosine = dot product).
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EngineError> {
        Ok(self.embed_timed(texts).await?.vectors)
    }

    /// [`Self::embed`], with the engine time the embeddings took.
    pub async fn embed_timed(&self, texts: Vec<String>) -> Result<Embedded, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .send(Command::Embed { texts, reply })
            .await
            .map_err(|_| EngineError::EngineStopped)?;
        rx.await.map_err(|_| EngineError::EngineStopped)?
    }

    pub fn embed_blocking(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .blocking_send(Command::Embed { texts, reply })
            .map_err(|_| EngineError::EngineStopped)?;
        Ok(rx
            .blocking_recv()
            .map_err(|_| EngineError::EngineStopped)??
            .vectors)
    }

    /// Teacher-forced log-probabilities of each continuation after the
    /// context (see [`ScoreRequest`]). For synchronous callers.
    pub fn score_blocking(&self, request: ScoreRequest) -> Result<Scored, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .blocking_send(Command::Score { request, reply })
            .map_err(|_| EngineError::EngineStopped)?;
        rx.blocking_recv().map_err(|_| EngineError::EngineStopped)?
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Closing the channel lets the thread finish what it holds and exit.
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Cosine similarity of two vectors (1.0 for identical directions).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let denom = norm(a) * norm(b);
    if denom == 0.0 { 0.0 } else { dot / denom }
}
