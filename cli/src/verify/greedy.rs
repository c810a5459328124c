//! Greedy answers: each fine-tuned condition answers the fact probes on our
//! own engine, its LoRA loaded as a GGUF adapter (the base model without
//! one), and each answer is checked for the probe's fact.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use seedling_coordinator::verify::greedy::{GREEDY_FACT, GreedyAnswer, greedy_call};
use seedling_coordinator::verify::interval::bootstrap;
use seedling_coordinator::verify::report::ConditionSummary;
use seedling_coordinator::verify::write_jsonl;
use seedling_worker::engine::{Engine, EngineConfig};
use seedling_worker::unit::request_for;

use super::{Prepared, VerifyArgs, local_engine_config};

/// A condition's answers, kept beside its training result for the same key.
#[derive(Serialize, Deserialize)]
struct Cached {
    key: String,
    answers: Vec<GreedyAnswer>,
}

/// Adds the greedy metric to every condition that can answer (the base
/// model, and each trained one whose adapter the sidecar wrote), and keeps
/// every answer in `verify/greedy.jsonl`. A condition whose inputs are
/// unchanged (`keys`, as the sidecar reuses its training) reuses its answers.
pub fn answer_probes(
    args: &VerifyArgs,
    prepared: &Prepared,
    keys: &BTreeMap<String, String>,
    conditions: &mut [ConditionSummary],
) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for condition in conditions.iter_mut() {
        let dir = prepared.out.join("conditions").join(&condition.name);
        let adapter = dir.join("adapter.gguf");
        if condition.trained && !adapter.is_file() {
            eprintln!(
                "{}: no adapter.gguf (trained before greedy answers existed; --fresh trains it again): no greedy answers",
                condition.name
            );
            continue;
        }
        let key = keys.get(&condition.name).cloned().unwrap_or_default();
        let cache = dir.join("greedy.json");
        let cached = std::fs::read(&cache)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Cached>(&bytes).ok())
            .filter(|c| c.key == key && c.answers.len() == prepared.probes.len());
        let answers = match cached {
            Some(cached) => {
                eprintln!("{}: reusing its greedy answers", condition.name);
                cached.answers
            }
            None => {
                eprintln!(
                    "{}: greedy answers to {} probes on the engine",
                    condition.name,
                    prepared.probes.len()
                );
                let lora = condition.trained.then_some(adapter);
                let answers = answer(args, prepared, &condition.name, lora.as_deref())?;
                std::fs::create_dir_all(&dir)?;
                let kept = Cached { key, answers };
                std::fs::write(&cache, serde_json::to_vec(&kept)?)?;
                kept.answers
            }
        };
        let correct: Vec<f64> = answers
            .iter()
            .map(|a| f64::from(u8::from(a.correct)))
            .collect();
        if let Some(estimate) = bootstrap(&correct, 2000, prepared.dataset.plan.seed, None) {
            condition.metrics.insert(GREEDY_FACT.to_string(), estimate);
        }
        all.extend(answers);
    }
    write_jsonl(&prepared.out.join("greedy.jsonl"), &all)?;
    Ok(())
}

fn answer(
    args: &VerifyArgs,
    prepared: &Prepared,
    condition: &str,
    lora: Option<&Path>,
) -> anyhow::Result<Vec<GreedyAnswer>> {
    let engine = Engine::start(EngineConfig {
        lora_adapter: lora.map(Path::to_path_buf),
        ..local_engine_config(&args.engine)
    })?;
    let system = &prepared.dataset.system_prompt;
    let requests: Vec<_> = prepared
        .probes
        .iter()
        .map(|probe| request_for(&greedy_call(probe, system)))
        .collect();
    let replies = engine.generate_all_blocking(requests)?;
    Ok(prepared
        .probes
        .iter()
        .zip(replies)
        .map(|(probe, reply)| GreedyAnswer::judged(condition, probe, reply.text.trim().to_string()))
        .collect())
}
