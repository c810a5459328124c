//! The engine thread: owns the llama.cpp model and context, admits requests
//! into slots, builds one `llama_batch` per step holding every active
//! sequence (one token each while generating, prompt chunks while
//! prefilling), samples, and answers finished requests.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use tokio::sync::mpsc;

use super::admission::{Admission, Cells, admission, waits_for_prefix};
use super::prefix_cache::{PrefixCache, prefix_to_keep};
use super::score;
use super::stop::StopMatcher;
use super::{
    Command, EngineConfig, EngineCounters, EngineError, FinishReason, Generation,
    GenerationRequest, ModelInfo, OutputConstraint, Prompt, Reply, RequestAccounting,
    SamplingParams,
};

/// llama.cpp's backend may be initialised once per process; engines share it.
fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            backend.void_logs();
            Ok(backend)
        })
        .as_ref()
        .map_err(|e| EngineError::ModelLoad {
            path: Default::default(),
            reason: format!("llama.cpp backend: {e}"),
        })
}

/// Entry point of the engine thread.
pub(super) fn run(
    config: EngineConfig,
    inbox: mpsc::Receiver<Command>,
    counters: Arc<EngineCounters>,
    ready: std::sync::mpsc::Sender<Result<ModelInfo, EngineError>>,
) {
    let loaded = backend().and_then(|backend| load_model(backend, &config).map(|m| (backend, m)));
    let (backend, mut model) = match loaded {
        Ok(loaded) => loaded,
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    let adapter_error = |path: &std::path::Path, e: &dyn std::fmt::Display| EngineError::Adapter {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    // Declared before the context, so it outlives every use of it.
    let adapter = config
        .lora_adapter
        .as_ref()
        .map(|path| {
            model
                .lora_adapter_init(path)
                .map(|adapter| (path, adapter))
                .map_err(|e| adapter_error(path, &e))
        })
        .transpose();
    let mut adapter = match adapter {
        Ok(adapter) => adapter,
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    let mut ctx = match new_generation_context(backend, &model, &config) {
        Ok(ctx) => ctx,
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    if let Some((path, adapter)) = adapter.as_mut()
        && let Err(e) = ctx.lora_adapter_set(adapter, 1.0)
    {
        let _ = ready.send(Err(adapter_error(path, &e)));
        return;
    }
    let info = model_info(backend, &model, &config);
    let mut scheduler = Scheduler::new(backend, &model, ctx, &config, counters);
    if ready.send(Ok(info)).is_err() {
        return;
    }
    scheduler.serve(inbox);
}

fn load_model(backend: &LlamaBackend, config: &EngineConfig) -> Result<LlamaModel, EngineError> {
    let params = LlamaModelParams::default().with_n_gpu_layers(config.n_gpu_layers);
    LlamaModel::load_from_file(backend, &config.model_path, &params).map_err(|e| {
        EngineError::ModelLoad {
            path: config.model_path.clone(),
            reason: e.to_string(),
        }
    })
}

/// A context's sizes, on the engine's threads.
pub(super) fn context_params(
    config: &EngineConfig,
    n_ctx: u32,
    n_batch: u32,
    n_ubatch: u32,
    n_seq_max: u32,
) -> LlamaContextParams {
    let n_threads = config.effective_threads() as i32;
    LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(n_batch)
        .with_n_ubatch(n_ubatch)
        .with_n_seq_max(n_seq_max)
        .with_n_threads(n_threads)
        .with_n_threads_batch(n_threads)
}

fn new_generation_context<'m>(
    backend: &LlamaBackend,
    model: &'m LlamaModel,
    config: &EngineConfig,
) -> Result<LlamaContext<'m>, EngineError> {
    // Unified KV: every sequence draws cells from one pool, so copying a
    // cached prefix into a new sequence only tags cells, it moves no data.
    let params = context_params(
        config,
        config.n_ctx,
        config.n_batch,
        config.n_ubatch,
        config.n_slots + config.effective_cache_entries(),
    )
    .with_kv_unified(config.kv_unified);
    model
        .new_context(backend, params)
        .map_err(|e| EngineError::ContextCreate {
            n_ctx: config.n_ctx,
            n_slots: config.n_slots,
            reason: e.to_string(),
        })
}

fn new_embedding_context<'m>(
    backend: &LlamaBackend,
    model: &'m LlamaModel,
    config: &EngineConfig,
) -> Result<LlamaContext<'m>, EngineError> {
    // Pooled embeddings of several sequences in one decode are only right
    // when the whole decode fits one micro-batch (n_ubatch >= tokens).
    let window = config.embedding_window;
    let params = context_params(config, window, window, window, 16)
        .with_kv_unified(true)
        .with_embeddings(true)
        .with_pooling_type(LlamaPoolingType::Mean);
    model
        .new_context(backend, params)
        .map_err(|e| EngineError::Embedding(format!("cannot create embedding context: {e}")))
}

fn model_info(backend: &LlamaBackend, model: &LlamaModel, config: &EngineConfig) -> ModelInfo {
    ModelInfo {
        path: config.model_path.clone(),
        name: model.meta_val_str("general.name").unwrap_or_default(),
        architecture: model
            .meta_val_str("general.architecture")
            .unwrap_or_default(),
        file_bytes: std::fs::metadata(&config.model_path)
            .map(|m| m.len())
            .unwrap_or(0),
        n_params: model.n_params(),
        n_ctx_train: model.n_ctx_train(),
        n_embd: model.n_embd() as u32,
        has_chat_template: model.chat_template(None).is_ok(),
        gpu_offload: backend.supports_gpu_offload() && config.n_gpu_layers > 0,
    }
}

/// A request's samplers. The grammar stays out of the chain: the chain picks
/// a token from the top candidates and the grammar only checks that one
/// token; only when it is refused does the grammar filter the whole
/// vocabulary (llama.cpp's own common sampler does the same). Filtering
/// 152k candidates through a grammar on every step would cost more than
/// the decode.
struct Sampling {
    chain: LlamaSampler,
    grammar: Option<LlamaSampler>,
}

impl Sampling {
    fn sample(&mut self, ctx: &LlamaContext<'_>, idx: i32, end_of_text: LlamaToken) -> LlamaToken {
        let Some(grammar) = self.grammar.as_mut() else {
            return self.chain.sample(ctx, idx); // samples and accepts
        };
        let mut candidates = ctx.token_data_array_ith(idx);
        candidates.apply_sampler(&mut self.chain);
        let proposed = candidates.selected_token();
        let allowed = proposed.is_some_and(|token| {
            let mut single =
                LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 1.0, 0.0)], false);
            single.apply_sampler(grammar);
            single.data[0].logit().is_finite()
        });
        let token = match proposed {
            Some(token) if allowed => token,
            _ => {
                let mut candidates = ctx.token_data_array_ith(idx);
                candidates.apply_sampler(grammar);
                candidates.apply_sampler(&mut self.chain);
                // The grammar leaves at least one candidate unless it is complete,
                // in which case end-of-generation is the only valid token.
                candidates.selected_token().unwrap_or(end_of_text)
            }
        };
        grammar.accept(token);
        self.chain.accept(token);
        token
    }
}

/// A request waiting for a slot, already tokenised and with its sampler.
struct Pending {
    /// Prompt token ids (plain ids: the prefix cache compares them every step).
    tokens: Vec<i32>,
    /// Leading tokens the request says later ones share (0: none said).
    shared: usize,
    sampler: Sampling,
    request: Box<GenerationRequest>,
    submitted: Instant,
    reply: Reply<Generation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Prompt tokens `[n_past..]` still to be computed.
    Prefill,
    /// The last sampled token, to be fed at position `n_past`.
    Generate(LlamaToken),
}

/// A request in flight, bound to one llama.cpp sequence id.
struct Slot {
    seq_id: i32,
    tokens: Vec<i32>,
    /// Positions already in the KV cache for this sequence.
    n_past: usize,
    n_reused: usize,
    /// Leading tokens the request says later ones share (0: none said).
    shared: usize,
    phase: Phase,
    /// Batch index whose logits this slot samples after the current decode.
    logits_at: Option<i32>,
    sampler: Sampling,
    stop: StopMatcher,
    n_generated: u32,
    reserved_cells: usize,
    request: Box<GenerationRequest>,
    submitted: Instant,
    admitted: Instant,
    first_token_at: Option<Instant>,
    first_logits: Vec<(i32, f32)>,
    /// Prompt tokens this slot put into the current batch.
    step_prompt_tokens: usize,
    prompt_time: std::time::Duration,
    generate_time: std::time::Duration,
    reply: Reply<Generation>,
}

/// The outcome of sampling one token for a slot.
enum Step {
    Continue,
    Finished(FinishReason),
}

struct Scheduler<'m> {
    backend: &'m LlamaBackend,
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    embed_ctx: Option<LlamaContext<'m>>,
    score_ctx: Option<LlamaContext<'m>>,
    config: EngineConfig,
    slots: Vec<Option<Slot>>,
    waiting: VecDeque<Pending>,
    cache: PrefixCache,
    batch: LlamaBatch<'static>,
    counters: Arc<EngineCounters>,
}

impl<'m> Scheduler<'m> {
    fn new(
        backend: &'m LlamaBackend,
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        config: &EngineConfig,
        counters: Arc<EngineCounters>,
    ) -> Self {
        let n_slots = config.n_slots as usize;
        let cache_ids =
            (config.n_slots as i32)..(config.n_slots + config.effective_cache_entries()) as i32;
        Self {
            backend,
            model,
            ctx,
            embed_ctx: None,
            score_ctx: None,
            config: config.clone(),
            slots: (0..n_slots).map(|_| None).collect(),
            waiting: VecDeque::new(),
            cache: PrefixCache::new(
                cache_ids,
                config.prefix_cache_cells as usize,
                config.prefix_min_tokens as usize,
            ),
            batch: LlamaBatch::new(config.n_batch as usize, 1),
            counters,
        }
    }

    fn busy(&self) -> bool {
        !self.waiting.is_empty() || self.slots.iter().any(Option::is_some)
    }

    /// Runs until the channel is closed and all accepted work is answered.
    fn serve(&mut self, mut inbox: mpsc::Receiver<Command>) {
        let mut open = true;
        loop {
            if !self.busy() {
                if !open {
                    return;
                }
                let waiting = Instant::now();
                let command = inbox.blocking_recv();
                self.counters
                    .idle_us
                    .fetch_add(waiting.elapsed().as_micros() as u64, Ordering::Relaxed);
                match command {
                    Some(command) => self.accept(command),
                    None => return,
                }
            }
            while open {
                match inbox.try_recv() {
                    Ok(command) => self.accept(command),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => open = false,
                }
            }
            self.drop_abandoned();
            self.admit();
            self.step();
            self.publish_gauges();
        }
    }

    /// Requests whose caller has gone (the ticket was dropped) are not worth
    /// decoding: forget them and free their cells. This is how a finished
    /// plan stops the surplus work still in the engine.
    fn drop_abandoned(&mut self) {
        self.waiting.retain(|pending| !pending.reply.is_closed());
        for idx in 0..self.slots.len() {
            if self.slots[idx]
                .as_ref()
                .is_some_and(|slot| slot.reply.is_closed())
                && let Some(slot) = self.slots[idx].take()
            {
                self.clear_seq(slot.seq_id);
            }
        }
    }

    fn publish_gauges(&self) {
        let active = self.slots.iter().filter(|s| s.is_some()).count() as u64;
        self.counters.active_slots.store(active, Ordering::Relaxed);
        self.counters
            .queued_requests
            .store(self.waiting.len() as u64, Ordering::Relaxed);
        self.counters
            .kv_cells_reserved
            .store(self.reserved_cells() as u64, Ordering::Relaxed);
        self.counters
            .kv_cells_cached
            .store(self.cache.cells() as u64, Ordering::Relaxed);
    }

    fn accept(&mut self, command: Command) {
        match command {
            Command::Generate {
                request,
                submitted,
                reply,
            } => match self.prepare(&request) {
                Ok((tokens, shared, sampler)) => self.waiting.push_back(Pending {
                    tokens,
                    shared,
                    sampler,
                    request,
                    submitted,
                    reply,
                }),
                Err(err) => {
                    self.counters
                        .requests_failed
                        .fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Err(err));
                }
            },
            Command::Embed { texts, reply } => {
                let started = Instant::now();
                let vectors = self.embed(&texts);
                let compute = started.elapsed();
                self.counters
                    .embedding_us
                    .fetch_add(compute.as_micros() as u64, Ordering::Relaxed);
                let _ = reply.send(vectors.map(|vectors| super::Embedded { vectors, compute }));
            }
            Command::Score { request, reply } => {
                let started = Instant::now();
                let scored = self.score(&request);
                let compute = started.elapsed();
                // Teacher forcing is prompt evaluation: it counts as prefill.
                self.counters
                    .prefill_us
                    .fetch_add(compute.as_micros() as u64, Ordering::Relaxed);
                let _ = reply.send(scored.map(|(context_tokens, continuations)| super::Scored {
                    context_tokens,
                    continuations,
                    compute,
                }));
            }
        }
    }

    fn score(
        &mut self,
        request: &super::ScoreRequest,
    ) -> Result<(usize, Vec<Vec<super::ScoredToken>>), EngineError> {
        let context = self.render(&request.context)?;
        if self.score_ctx.is_none() {
            self.score_ctx = Some(score::new_scoring_context(
                self.backend,
                self.model,
                &self.config,
            )?);
        }
        let ctx = self.score_ctx.as_mut().ok_or(EngineError::EngineStopped)?;
        score::score(ctx, self.model, &context, request)
    }

    fn render(&self, prompt: &Prompt) -> Result<String, EngineError> {
        match prompt {
            Prompt::Raw(text) => Ok(text.clone()),
            Prompt::Chat(messages) => self.render_chat(messages),
        }
    }

    /// Tokenises the prompt (and the opening it says later requests share)
    /// and builds the sampler chain; errors here belong to this request alone.
    fn prepare(
        &self,
        request: &GenerationRequest,
    ) -> Result<(Vec<i32>, usize, Sampling), EngineError> {
        let text = self.render(&request.prompt)?;
        let tokens = self.tokenize(&text);
        // Only a raw prompt's bytes are the bytes the caller counted; an
        // opening that does not tokenise to a prefix of the whole is ignored.
        let shared = match (&request.prompt, request.shared_prefix) {
            (Prompt::Raw(_), Some(bytes)) => text
                .get(..bytes)
                .map(|head| self.tokenize(head))
                .filter(|head| tokens.starts_with(head))
                .map_or(0, |head| head.len()),
            _ => 0,
        };
        if tokens.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if tokens.len() >= self.config.cells_per_sequence() as usize {
            return Err(EngineError::ContextOverflow {
                prompt_tokens: tokens.len(),
                n_ctx: self.config.cells_per_sequence(),
            });
        }
        let sampler = self.sampler_chain(&request.sampling, request.constraint.as_ref())?;
        Ok((tokens, shared, sampler))
    }

    fn tokenize(&self, text: &str) -> Vec<i32> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), true, true)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }

    fn render_chat(&self, messages: &[super::ChatMessage]) -> Result<String, EngineError> {
        let template = self
            .model
            .chat_template(None)
            .map_err(|_| EngineError::NoChatTemplate)?;
        let messages = messages
            .iter()
            .map(|m| LlamaChatMessage::new(m.role.clone(), m.content.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EngineError::ChatTemplate(e.to_string()))?;
        self.model
            .apply_chat_template(&template, &messages, true)
            .map_err(|e| EngineError::ChatTemplate(e.to_string()))
    }

    fn sampler_chain(
        &self,
        params: &SamplingParams,
        constraint: Option<&OutputConstraint>,
    ) -> Result<Sampling, EngineError> {
        // Top-k first: every later sampler then touches k candidates instead
        // of the whole 152k vocabulary. Penalising within the top k differs
        // from penalising first only in which token would take a penalised
        // token's place at rank k.
        let mut chain = Vec::new();
        if params.top_k > 0 {
            chain.push(LlamaSampler::top_k(params.top_k));
        }
        if params.repeat_penalty != 1.0 {
            chain.push(LlamaSampler::penalties(
                self.model.n_vocab(),
                params.repeat_last_n,
                params.repeat_penalty,
                0.0,
                0.0,
            ));
        }
        let grammar = match constraint {
            None => None,
            Some(constraint) => {
                let gbnf = match constraint {
                    OutputConstraint::Grammar(gbnf) => gbnf.clone(),
                    OutputConstraint::JsonSchema(schema) => {
                        llama_cpp_2::json_schema_to_grammar(&schema.to_string())
                            .map_err(|e| EngineError::InvalidJsonSchema(e.to_string()))?
                    }
                };
                Some(
                    LlamaSampler::grammar(self.model, &gbnf, "root")
                        .map_err(|e| EngineError::InvalidGrammar(format!("{e}: {gbnf}")))?,
                )
            }
        };
        if params.temperature <= 0.0 {
            chain.push(LlamaSampler::greedy());
        } else {
            if params.top_p < 1.0 {
                chain.push(LlamaSampler::top_p(params.top_p, 1));
            }
            if params.min_p > 0.0 {
                chain.push(LlamaSampler::min_p(params.min_p, 1));
            }
            chain.push(LlamaSampler::temp(params.temperature));
            chain.push(LlamaSampler::dist(params.seed));
        }
        Ok(Sampling {
            chain: LlamaSampler::chain_simple(chain),
            grammar,
        })
    }

    fn reserved_cells(&self) -> usize {
        self.slots.iter().flatten().map(|s| s.reserved_cells).sum()
    }

    /// Moves waiting requests into free slots while KV cells allow.
    fn admit(&mut self) {
        let mut idx = 0;
        while idx < self.waiting.len() {
            let Some(slot_idx) = self.slots.iter().position(Option::is_none) else {
                return;
            };
            let reuse = self.waiting[idx].request.reuse_prefix;
            // A request whose prefix another slot is computing right now
            // waits for it to be cached instead of computing it again.
            if reuse && self.prefix_in_flight(&self.waiting[idx].tokens) {
                idx += 1;
                continue;
            }
            let max_new = self.waiting[idx].request.max_new_tokens as usize;
            let (hit, reused, need) = loop {
                let tokens = &self.waiting[idx].tokens;
                let hit = if reuse {
                    self.cache.lookup(tokens)
                } else {
                    None
                };
                let cells = Cells {
                    n_ctx: self.config.n_ctx as usize,
                    per_sequence: self.config.cells_per_sequence() as usize,
                    reserved: self.reserved_cells(),
                    cached: self.cache.cells(),
                };
                match admission(tokens.len(), max_new, hit.map(|m| m.n_tokens), cells) {
                    Admission::Admit { reused, need } => break (hit, reused, need),
                    // Frees cells but may take this request's match with it,
                    // so the match is looked up again.
                    Admission::Evict => match self.cache.evict_lru() {
                        Some(seq_id) => self.clear_seq(seq_id),
                        None => return,
                    },
                    Admission::Wait => return, // until a slot finishes and frees cells
                }
            };
            let seq_id = slot_idx as i32;
            if let Some(hit) = hit.filter(|_| reused > 0) {
                let _ =
                    self.ctx
                        .copy_kv_cache_seq(hit.seq_id, seq_id, Some(0), Some(reused as u32));
            }
            let Some(pending) = self.waiting.remove(idx) else {
                return;
            };
            self.slots[slot_idx] = Some(Slot {
                seq_id,
                n_past: reused,
                n_reused: reused,
                shared: pending.shared,
                phase: Phase::Prefill,
                logits_at: None,
                stop: StopMatcher::new(&pending.request.stop),
                n_generated: 0,
                reserved_cells: need,
                tokens: pending.tokens,
                sampler: pending.sampler,
                request: pending.request,
                submitted: pending.submitted,
                admitted: Instant::now(),
                first_token_at: None,
                first_logits: Vec::new(),
                step_prompt_tokens: 0,
                prompt_time: std::time::Duration::ZERO,
                generate_time: std::time::Duration::ZERO,
                reply: pending.reply,
            });
        }
    }

    fn prefix_in_flight(&self, tokens: &[i32]) -> bool {
        let prefilling = self
            .slots
            .iter()
            .flatten()
            .filter(|slot| slot.phase == Phase::Prefill && slot.request.reuse_prefix)
            .map(|slot| slot.tokens.as_slice());
        let already_cached = self.cache.peek_best(tokens).unwrap_or(0);
        waits_for_prefix(tokens, prefilling, already_cached, self.cache.min_tokens())
    }

    fn clear_seq(&mut self, seq_id: i32) {
        let _ = self.ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None);
    }

    /// One decode over all active sequences, then sampling.
    fn step(&mut self) {
        self.batch.clear();
        let budget = self.config.n_batch as usize;
        // Generating sequences first: each adds exactly one token.
        for slot in self.slots.iter_mut().flatten() {
            slot.logits_at = None;
            slot.step_prompt_tokens = 0;
            if let Phase::Generate(token) = slot.phase {
                slot.logits_at = Some(self.batch.n_tokens());
                // Capacity is n_batch >= n_slots (validated), so this fits.
                let _ = self
                    .batch
                    .add(token, slot.n_past as i32, &[slot.seq_id], true);
            }
        }
        // Prompt chunks fill the rest of the batch.
        for slot in self.slots.iter_mut().flatten() {
            if slot.phase != Phase::Prefill {
                continue;
            }
            let room = budget.saturating_sub(self.batch.n_tokens() as usize);
            if room == 0 {
                break;
            }
            let end = (slot.n_past + room).min(slot.tokens.len());
            slot.step_prompt_tokens = end - slot.n_past;
            for pos in slot.n_past..end {
                let last = pos + 1 == slot.tokens.len();
                let _ = self.batch.add(
                    LlamaToken(slot.tokens[pos]),
                    pos as i32,
                    &[slot.seq_id],
                    last,
                );
                if last {
                    slot.logits_at = Some(self.batch.n_tokens() - 1);
                }
            }
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        let started = Instant::now();
        if let Err(err) = self.ctx.decode(&mut self.batch) {
            self.recover_from_decode_failure(err);
            return;
        }
        // The step's time is shared by the tokens in it: a prompt chunk's
        // share is prefill, a generated token's is decode (its sampling is
        // added in `advance`).
        let elapsed = started.elapsed();
        let n_tokens = self.batch.n_tokens().max(1) as u32;
        let (mut prefill, mut decode) = (Duration::ZERO, Duration::ZERO);
        for slot in self.slots.iter_mut().flatten() {
            if slot.step_prompt_tokens > 0 {
                let share = elapsed * slot.step_prompt_tokens as u32 / n_tokens;
                slot.prompt_time += share;
                prefill += share;
            } else if matches!(slot.phase, Phase::Generate(_)) {
                let share = elapsed / n_tokens;
                slot.generate_time += share;
                decode += share;
            }
        }
        let c = &self.counters;
        c.prefill_us
            .fetch_add(prefill.as_micros() as u64, Ordering::Relaxed);
        c.decode_us
            .fetch_add(decode.as_micros() as u64, Ordering::Relaxed);
        self.advance();
    }

    /// A failed decode advanced nothing: free cells and let the batch be rebuilt.
    fn recover_from_decode_failure(&mut self, err: llama_cpp_2::DecodeError) {
        tracing::warn!(error = %err, "llama_decode failed");
        if !self.cache.is_empty() {
            while let Some(seq_id) = self.cache.evict_lru() {
                self.clear_seq(seq_id);
            }
            return;
        }
        // Nothing cached to give back: the youngest request fails alone.
        let youngest = (0..self.slots.len())
            .filter_map(|i| self.slots[i].as_ref().map(|slot| (i, slot.admitted)))
            .max_by_key(|(_, admitted)| *admitted)
            .map(|(i, _)| i);
        if let Some(slot) = youngest.and_then(|slot_idx| self.slots[slot_idx].take()) {
            self.clear_seq(slot.seq_id);
            self.counters
                .requests_failed
                .fetch_add(1, Ordering::Relaxed);
            let _ = slot.reply.send(Err(EngineError::Decode(format!(
                "{err} (KV cache of {} cells exhausted)",
                self.config.n_ctx
            ))));
        }
    }

    /// After a successful decode: move prefill forward, sample, finish.
    fn advance(&mut self) {
        let mut finished_prefill = Vec::new();
        for (slot_idx, slot) in self.slots.iter_mut().enumerate() {
            let Some(slot) = slot.as_mut() else {
                continue;
            };
            match slot.phase {
                Phase::Generate(_) => slot.n_past += 1,
                Phase::Prefill => {
                    slot.n_past += slot.step_prompt_tokens;
                    if slot.step_prompt_tokens > 0 && slot.n_past == slot.tokens.len() {
                        finished_prefill.push(slot_idx);
                    }
                }
            }
        }
        for slot_idx in finished_prefill {
            self.cache_prefix_of(slot_idx);
        }
        for slot_idx in 0..self.slots.len() {
            let Some(logits_at) = self.slots[slot_idx].as_ref().and_then(|s| s.logits_at) else {
                continue;
            };
            // Sampling over the whole vocabulary is part of what a generated
            // token costs: counted as decode.
            let sampling = Instant::now();
            let step = self.sample(slot_idx, logits_at);
            let spent = sampling.elapsed();
            if let Some(slot) = self.slots[slot_idx].as_mut() {
                slot.generate_time += spent;
            }
            self.counters
                .decode_us
                .fetch_add(spent.as_micros() as u64, Ordering::Relaxed);
            match step {
                Step::Continue => {}
                Step::Finished(reason) => self.finish(slot_idx, reason),
            }
        }
    }

    /// Keeps the KV cells of a just-computed prompt for later requests.
    fn cache_prefix_of(&mut self, slot_idx: usize) {
        let Some(slot) = self.slots[slot_idx].as_ref() else {
            return;
        };
        if !slot.request.reuse_prefix {
            return;
        }
        let tokens = &slot.tokens;
        let Some(n) = prefix_to_keep(
            tokens.len(),
            slot.n_reused,
            slot.shared,
            self.cache.min_tokens(),
        ) else {
            return;
        };
        // Another entry already holds more of this prompt than it reused.
        if n == slot.n_reused && self.cache.peek_best(tokens).is_some_and(|best| best > n) {
            return;
        }
        let keep = tokens[..n].to_vec();
        let seq_id = slot.seq_id;
        if let Some((cache_seq, evicted)) = self.cache.insert(&keep) {
            for old in evicted {
                self.clear_seq(old);
            }
            let _ = self
                .ctx
                .copy_kv_cache_seq(seq_id, cache_seq, Some(0), Some(keep.len() as u32));
        }
    }

    fn sample(&mut self, slot_idx: usize, logits_at: i32) -> Step {
        let n_ctx = self.config.cells_per_sequence() as usize;
        let vocab = self.model.vocab();
        let ctx = &self.ctx;
        let Some(slot) = self.slots[slot_idx].as_mut() else {
            return Step::Continue;
        };
        if slot.first_token_at.is_none() && slot.request.report_first_logits > 0 {
            slot.first_logits = top_logits(
                ctx.get_logits_ith(logits_at),
                slot.request.report_first_logits,
            );
        }
        let token = slot.sampler.sample(ctx, logits_at, vocab.eos());
        let now = Instant::now();
        slot.first_token_at.get_or_insert(now);
        if vocab.is_eog(token) && !slot.request.ignore_eos {
            return Step::Finished(FinishReason::EndOfGeneration);
        }
        slot.n_generated += 1;
        let piece = vocab.token_to_piece(token, false, None);
        if slot.stop.push(&piece) {
            return Step::Finished(FinishReason::StopString);
        }
        if slot.n_generated >= slot.request.max_new_tokens {
            return Step::Finished(FinishReason::MaxTokens);
        }
        if slot.n_past + 1 >= n_ctx {
            return Step::Finished(FinishReason::ContextFull);
        }
        slot.phase = Phase::Generate(token);
        Step::Continue
    }

    fn finish(&mut self, slot_idx: usize, reason: FinishReason) {
        let Some(slot) = self.slots[slot_idx].take() else {
            return;
        };
        self.clear_seq(slot.seq_id);
        let now = Instant::now();
        let first = slot.first_token_at.unwrap_or(now);
        let n_computed = (slot.tokens.len() - slot.n_reused) as u32;
        let accounting = RequestAccounting {
            prompt_tokens_computed: n_computed,
            prompt_tokens_reused: slot.n_reused as u32,
            generated_tokens: slot.n_generated,
            prompt_time: slot.prompt_time,
            generate_time: slot.generate_time,
            queued: slot.admitted.duration_since(slot.submitted),
            time_to_first_token: first.duration_since(slot.submitted),
            decode_time: now.saturating_duration_since(first),
        };
        let c = &self.counters;
        c.requests_completed.fetch_add(1, Ordering::Relaxed);
        c.prompt_tokens_computed
            .fetch_add(n_computed as u64, Ordering::Relaxed);
        c.prompt_tokens_reused
            .fetch_add(slot.n_reused as u64, Ordering::Relaxed);
        c.generated_tokens
            .fetch_add(slot.n_generated as u64, Ordering::Relaxed);
        let _ = slot.reply.send(Ok(Generation {
            text: slot.stop.text(),
            finish_reason: reason,
            accounting,
            first_logits: slot.first_logits,
        }));
    }

    /// Pooled embeddings, several texts per decode within one micro-batch.
    fn embed(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>, EngineError> {
        if self.embed_ctx.is_none() {
            self.embed_ctx = Some(new_embedding_context(
                self.backend,
                self.model,
                &self.config,
            )?);
        }
        let window = self.config.embedding_window as usize;
        let vocab = self.model.vocab();
        let tokenized: Vec<Vec<LlamaToken>> = texts
            .iter()
            .map(|text| {
                let tokens = vocab.tokenize(text.as_bytes(), true, false);
                if tokens.len() > window {
                    Err(EngineError::EmbeddingTooLong {
                        tokens: tokens.len(),
                        limit: window as u32,
                    })
                } else if tokens.is_empty() {
                    Err(EngineError::EmptyPrompt)
                } else {
                    Ok(tokens)
                }
            })
            .collect::<Result<_, _>>()?;
        let ctx = self.embed_ctx.as_mut().ok_or(EngineError::EngineStopped)?;
        let mut batch = LlamaBatch::new(window, 1);
        let mut out = Vec::with_capacity(texts.len());
        let mut start = 0;
        while start < tokenized.len() {
            batch.clear();
            let mut end = start;
            let mut n_tokens = 0;
            while end < tokenized.len()
                && end - start < 16
                && n_tokens + tokenized[end].len() <= window
            {
                let seq_id = (end - start) as i32;
                for (pos, token) in tokenized[end].iter().enumerate() {
                    batch
                        .add(*token, pos as i32, &[seq_id], true)
                        .map_err(|e| EngineError::Embedding(e.to_string()))?;
                }
                n_tokens += tokenized[end].len();
                end += 1;
            }
            ctx.clear_kv_cache();
            ctx.decode(&mut batch)
                .map_err(|e| EngineError::Embedding(e.to_string()))?;
            for seq_id in 0..(end - start) as i32 {
                let vector = ctx
                    .embeddings_seq_ith(seq_id)
                    .map_err(|e| EngineError::Embedding(e.to_string()))?;
                out.push(normalized(vector));
            }
            start = end;
        }
        ctx.clear_kv_cache();
        Ok(out)
    }
}

fn normalized(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        return v.to_vec();
    }
    v.iter().map(|x| x / norm).collect()
}

fn top_logits(logits: &[f32], n: usize) -> Vec<(i32, f32)> {
    let mut indexed: Vec<(i32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, l)| (i as i32, *l))
        .collect();
    let n = n.min(indexed.len());
    indexed.select_nth_unstable_by(n.saturating_sub(1), |a, b| b.1.total_cmp(&a.1));
    indexed.truncate(n);
    indexed.sort_by(|a, b| b.1.total_cmp(&a.1));
    indexed
}
