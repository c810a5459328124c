//! The naive baseline on our own engine, and the engine `verify` shares
//! between it and the proxy (started once, and only when needed).

use std::path::Path;

use seedling_coordinator::verify::naive::{naive_prompt, naive_row, naive_schema};
use seedling_coordinator::verify::{TrainRow, VerifyDataset, read_pairs, write_jsonl};
use seedling_worker::engine::{
    ChatMessage, Engine, GenerationRequest, OutputConstraint, SamplingParams,
};

use super::local_engine_config;
use crate::EngineArgs;

/// The local engine, started on first use.
pub struct LocalEngine<'a> {
    args: &'a EngineArgs,
    engine: Option<Engine>,
}

impl<'a> LocalEngine<'a> {
    pub fn new(args: &'a EngineArgs) -> Self {
        Self { args, engine: None }
    }

    pub fn get(&mut self) -> anyhow::Result<&Engine> {
        let engine = match self.engine.take() {
            Some(engine) => engine,
            None => Engine::start(local_engine_config(self.args))?,
        };
        Ok(self.engine.insert(engine))
    }
}

/// `count` usable pairs from one plain prompt, kept in `path` for later
/// runs with the same prompt, model, count and seed.
pub fn naive_rows(
    dataset: &VerifyDataset,
    engine: &mut LocalEngine<'_>,
    model_identity: &str,
    count: usize,
    path: &Path,
) -> anyhow::Result<Vec<TrainRow>> {
    let prompt = naive_prompt(&dataset.plan);
    let meta_path = path.with_extension("meta.json");
    let meta = serde_json::json!({ "prompt": prompt, "model": model_identity, "count": count, "seed": dataset.plan.seed });
    if path.is_file()
        && std::fs::read_to_string(&meta_path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|m| m == meta)
        && let Ok(rows) = read_pairs(path)
    {
        eprintln!(
            "naive baseline: reusing {} examples in {}",
            rows.len(),
            path.display()
        );
        return Ok(rows);
    }
    eprintln!("naive baseline: {count} examples from one plain prompt on the local engine");
    let engine = engine.get()?;
    let mut rows = Vec::new();
    let mut asked = 0usize;
    // A reply cut off by the token limit does not parse; ask again with
    // other seeds, up to three times the count in all.
    while rows.len() < count && asked < count * 3 {
        let batch = (count - rows.len()).max(1);
        let requests = (asked..asked + batch).map(|i| {
            GenerationRequest::chat(vec![ChatMessage::user(prompt.clone())])
                .with_max_new_tokens(256)
                .with_constraint(OutputConstraint::JsonSchema(naive_schema()))
                .with_sampling(SamplingParams {
                    temperature: 0.8,
                    seed: (dataset.plan.seed as u32).wrapping_add(i as u32),
                    ..SamplingParams::default()
                })
        });
        let replies = engine.generate_all_blocking(requests)?;
        for reply in replies {
            if let Some(row) = naive_row(rows.len(), &reply.text) {
                rows.push(row);
            }
        }
        asked += batch;
    }
    if rows.is_empty() {
        anyhow::bail!("the naive baseline got no usable answer in {asked} tries");
    }
    write_jsonl(path, &rows)?;
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta)?)?;
    Ok(rows)
}
