//! Greedy answers: each fine-tuned condition answers the fact probes on our
//! own engine, its LoRA loaded as a GGUF adapter (the base model without
//! one), and each answer is checked for the probe's fact.

use std::path::Path;

use seedling_coordinator::verify::greedy::{GREEDY_FACT, GreedyAnswer, greedy_call};
use seedling_coordinator::verify::interval::bootstrap;
use seedling_coordinator::verify::report::ConditionSummary;
use seedling_coordinator::verify::write_jsonl;
use seedling_worker::engine::Engine;
use seedling_worker::unit::request_for;

use super::{Prepared, VerifyArgs, threads};

/// Adds the greedy metric to every condition that can answer (the base
/// model, and each trained one whose adapter the sidecar wrote), and keeps
/// every answer in `verify/greedy.jsonl`.
pub fn answer_probes(
    args: &VerifyArgs,
    prepared: &Prepared,
    conditions: &mut [ConditionSummary],
) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for condition in conditions.iter_mut() {
        let adapter = prepared
            .out
            .join("conditions")
            .join(&condition.name)
            .join("adapter.gguf");
        if condition.trained && !adapter.is_file() {
            eprintln!(
                "{}: no adapter.gguf (trained before greedy answers existed; --fresh trains it again): no greedy answers",
                condition.name
            );
            continue;
        }
        let lora = condition.trained.then_some(adapter);
        eprintln!(
            "{}: greedy answers to {} probes on the engine",
            condition.name,
            prepared.probes.len()
        );
        let answers = answer(args, prepared, &condition.name, lora.as_deref())?;
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
    let mut config = args.engine.config();
    config.n_threads = threads(&args.engine);
    config.n_slots = config.n_slots.clamp(1, 8);
    config.lora_adapter = lora.map(Path::to_path_buf);
    let engine = Engine::start(config)?;
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
