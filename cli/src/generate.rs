//! `seedling generate`: one prompt through the engine, printed with its accounting.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use seedling_worker::engine::{
    ChatMessage, Engine, GenerationRequest, OutputConstraint, SamplingParams,
};

use crate::EngineArgs;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The user message (or, with --raw, the exact text to continue)
    pub prompt: String,
    /// A system message placed before the prompt
    #[arg(long)]
    pub system: Option<String>,
    /// Send the prompt as-is instead of through the model's chat template
    #[arg(long)]
    pub raw: bool,
    /// Most tokens to generate
    #[arg(long, default_value_t = 128)]
    pub max_tokens: u32,
    /// Sampling temperature; 0 is greedy
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Sampling seed; the same seed and settings give the same text
    #[arg(long, default_value_t = 42)]
    pub seed: u32,
    /// Stop before this string (repeatable)
    #[arg(long)]
    pub stop: Vec<String>,
    /// Constrain the output to this JSON schema (a file)
    #[arg(long, conflicts_with = "grammar")]
    pub json_schema: Option<PathBuf>,
    /// Constrain the output to this GBNF grammar (a file; start rule `root`)
    #[arg(long)]
    pub grammar: Option<PathBuf>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let mut config = args.engine.config();
    config.n_slots = config.n_slots.min(4);
    let engine = Engine::start(config)?;
    let mut request = if args.raw {
        GenerationRequest::raw(args.prompt.clone())
    } else {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::system(system.clone()));
        }
        messages.push(ChatMessage::user(args.prompt.clone()));
        GenerationRequest::chat(messages)
    };
    request = request
        .with_max_new_tokens(args.max_tokens)
        .with_stop(args.stop.clone())
        .with_sampling(SamplingParams {
            temperature: args.temperature,
            seed: args.seed,
            ..SamplingParams::default()
        });
    if let Some(path) = &args.json_schema {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let schema = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        request = request.with_constraint(OutputConstraint::JsonSchema(schema));
    }
    if let Some(path) = &args.grammar {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        request = request.with_constraint(OutputConstraint::Grammar(text));
    }
    let generation = engine.generate_blocking(request)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&generation)?);
        return Ok(());
    }
    println!("{}", generation.text);
    let a = &generation.accounting;
    let tok_s = if a.decode_time.as_secs_f64() > 0.0 {
        a.generated_tokens as f64 / a.decode_time.as_secs_f64()
    } else {
        0.0
    };
    eprintln!(
        "\n[{} prompt tokens ({} reused), {} generated, first token {:.2}s, {:.1} tok/s, finish: {:?}, model: {}]",
        a.prompt_tokens_computed + a.prompt_tokens_reused,
        a.prompt_tokens_reused,
        a.generated_tokens,
        a.time_to_first_token.as_secs_f64(),
        tok_s,
        generation.finish_reason,
        engine.info().name,
    );
    Ok(())
}
