//! The fine-tuned verification: every condition trains a LoRA in the
//! Python sidecar and is scored there on the probes and the test split.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use seedling_coordinator::verify::probes::chance;
use seedling_coordinator::verify::report::{
    BASE, NAIVE, PERTURBED, SEEDLING, VerificationReport, by_source, compare, summarize,
};
use seedling_coordinator::verify::sidecar::{ConditionInput, condition_key};
use seedling_coordinator::verify::{
    Sidecar, SidecarConfig, SidecarEvent, TrainRow, TrainingSettings, write_jsonl,
};

use super::{Prepared, VerifyArgs, threads};

pub fn run(
    args: &VerifyArgs,
    prepared: &Prepared,
    sidecar: &Sidecar,
) -> anyhow::Result<VerificationReport> {
    let dataset = &prepared.dataset;
    let tier = if args.smoke { "smoke" } else { "full" };
    let mut training = if args.smoke {
        TrainingSettings::smoke(dataset.train.len())
    } else {
        TrainingSettings::full(dataset.train.len())
    };
    if let Some(steps) = args.steps {
        anyhow::ensure!(steps > 0, "--steps must be at least 1");
        training.steps = steps;
    }
    if args.fresh {
        let _ = std::fs::remove_dir_all(prepared.out.join("conditions"));
    }

    let write = |name: &str, rows: &[TrainRow]| write_input(prepared, name, rows);
    let probes_path = write_input(prepared, "probes.jsonl", &prepared.probes)?;
    let seedling_path = write("seedling.jsonl", &dataset.train)?;
    let perturbed_path = write("perturbed.jsonl", &prepared.perturbed)?;
    let test_path = (!dataset.test.is_empty())
        .then(|| write("test.jsonl", &dataset.test))
        .transpose()?;
    let user_eval_path = prepared
        .user_eval
        .as_deref()
        .map(|rows| write("user-eval.jsonl", rows))
        .transpose()?;

    let mut conditions = vec![(BASE, None), (SEEDLING, Some(seedling_path))];
    if !prepared.naive.is_empty() {
        conditions.push((NAIVE, Some(write("naive.jsonl", &prepared.naive)?)));
    }
    conditions.push((PERTURBED, Some(perturbed_path)));
    if let Some(rows) = &prepared.user_baseline {
        conditions.push(("user_baseline", Some(write("user-baseline.jsonl", rows)?)));
    }
    let shared = [
        Some(probes_path.as_path()),
        test_path.as_deref(),
        user_eval_path.as_deref(),
    ];
    let conditions: Vec<ConditionInput> = conditions
        .into_iter()
        .map(|(name, train)| {
            let mut files = vec![train.as_deref()];
            files.extend(shared);
            ConditionInput {
                name: name.to_string(),
                key: condition_key(
                    name,
                    &prepared.model_identity,
                    &training,
                    &dataset.system_prompt,
                    &files,
                ),
                train,
            }
        })
        .collect();
    let keys: BTreeMap<String, String> = conditions
        .iter()
        .map(|c| (c.name.clone(), c.key.clone()))
        .collect();
    let sidecar_config = SidecarConfig {
        model: args.engine.config().model_path,
        threads: threads(&args.engine),
        seed: dataset.plan.seed,
        training: training.clone(),
        system_prompt: dataset.system_prompt.clone(),
        conditions,
        test: test_path,
        probes: probes_path,
        user_eval: user_eval_path,
        out_dir: prepared.out.clone(),
        bootstrap_rounds: 2000,
    };
    eprintln!(
        "verifying {} ({} train, {} test records; {} probes; {} naive examples; {} of {} train records have facts to swap): {} tier, {} steps per condition",
        dataset.version,
        dataset.train.len(),
        dataset.test.len(),
        prepared.probes.len(),
        prepared.naive.len(),
        prepared.perturbed_records,
        dataset.train.len(),
        tier,
        training.steps
    );
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let figures = sidecar.run(&sidecar_config, |event| progress(event, tty))?;

    // Which sources' facts each condition got right: the sidecar reports
    // every probe's outcome in probe order.
    let chance = chance(&prepared.probes);
    let mut summaries: Vec<_> = figures
        .conditions
        .iter()
        .map(|result| {
            let mut summary = summarize(result);
            if result.per_probe.len() == prepared.probes.len() {
                let correct: Vec<bool> = result.per_probe.iter().map(|&c| c == 1).collect();
                summary.by_source =
                    by_source(&prepared.probes, &correct, chance, dataset.plan.seed);
            }
            summary
        })
        .collect();
    let plots = [
        "loss.png",
        "forced_choice.png",
        "fact_nll.png",
        "strata.png",
    ]
    .into_iter()
    .filter(|p| prepared.out.join(p).is_file())
    .map(str::to_string)
    .collect();
    super::greedy::answer_probes(args, prepared, &keys, &mut summaries)?;
    let mut report = prepared.report(tier, figures.device.clone(), summaries);
    report.training = Some(training);
    report.probes = figures.probes;
    report.test_rows = figures.test_rows;
    report.plots = plots;
    report.comparisons = compare(&report.conditions);
    Ok(report)
}

/// `rows` as `DIR/verify/inputs/NAME`, for the sidecar.
fn write_input<T: serde::Serialize>(
    prepared: &Prepared,
    name: &str,
    rows: &[T],
) -> anyhow::Result<PathBuf> {
    let path = prepared.inputs.join(name);
    write_jsonl(&path, rows)?;
    Ok(path)
}

fn progress(event: SidecarEvent, tty: bool) {
    let mut err = std::io::stderr();
    match event {
        SidecarEvent::Loading { device } => {
            let _ = writeln!(err, "loading the model into torch ({device})");
        }
        SidecarEvent::Train {
            condition,
            step,
            steps,
            loss,
            eta_s,
        } => {
            let line = format!(
                "training {condition}: step {step}/{steps}, loss {loss:.3}, {eta_s:.0}s left for this condition"
            );
            if tty {
                let _ = write!(err, "\r\x1b[2K{line}");
                if step == steps {
                    let _ = writeln!(err);
                }
            } else if step == steps || step % 10 == 0 || step == 1 {
                let _ = writeln!(err, "{line}");
            }
        }
        SidecarEvent::Evaluate { condition } => {
            let _ = writeln!(err, "scoring {condition} on the probes and the test split");
        }
        SidecarEvent::Reused { condition } => {
            let _ = writeln!(
                err,
                "{condition}: reusing the result computed for the same inputs"
            );
        }
        SidecarEvent::Condition { condition, seconds } => {
            let _ = writeln!(err, "{condition}: done in {seconds:.0}s");
        }
        SidecarEvent::Done => {}
    }
}
