//! `seedling verify --proxy`: every condition's records in context, the
//! fact probes scored on the local engine by teacher forcing; nothing is
//! trained. The pure half (picking records, judging, intervals) is
//! `seedling_coordinator::verify::proxy`.

use std::io::Write;
use std::time::Instant;

use seedling_coordinator::verify::TrainRow;
use seedling_coordinator::verify::probes::{Probe, chance};
use seedling_coordinator::verify::proxy::{
    ProbeOutcome, ShotIndex, TokenScore, context, judge, summarize,
};
use seedling_coordinator::verify::report::{
    BASE, NAIVE, PERTURBED, PROXY_TIER, SEEDLING, VerificationReport, compare,
};
use seedling_coordinator::verify::write_jsonl;
use seedling_worker::engine::{Engine, EngineError, Prompt, ScoreRequest};
use serde::Serialize;

use super::{Prepared, VerifyArgs, threads};

/// One probe under one condition, as `verify/proxy-probes.jsonl` keeps it:
/// which records were in context and how the answers scored.
#[derive(Debug, Serialize)]
struct ProbeLine<'a> {
    condition: &'a str,
    probe: &'a str,
    source: &'a str,
    fact: &'a str,
    shots: Vec<&'a str>,
    correct: bool,
    fact_nll: Option<f64>,
    /// Summed log-probability of the true answer, then the alternatives.
    scores: Vec<f64>,
}

pub fn run(
    args: &VerifyArgs,
    prepared: &Prepared,
    engine: &Engine,
) -> anyhow::Result<VerificationReport> {
    let dataset = &prepared.dataset;
    let mut conditions: Vec<(&str, &[TrainRow])> = vec![(BASE, &[]), (SEEDLING, &dataset.train)];
    if !prepared.naive.is_empty() {
        conditions.push((NAIVE, &prepared.naive));
    }
    conditions.push((PERTURBED, &prepared.perturbed));
    if let Some(rows) = &prepared.user_baseline {
        conditions.push(("user_baseline", rows));
    }
    eprintln!(
        "proxy verification of {} ({} train records; {} probes; {} naive examples): up to {} records in context per probe, no training",
        dataset.version,
        dataset.train.len(),
        prepared.probes.len(),
        prepared.naive.len(),
        args.shots,
    );
    let chance = chance(&prepared.probes);
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut lines = Vec::new();
    let mut summaries = Vec::new();
    for (name, rows) in conditions {
        let started = Instant::now();
        let index = ShotIndex::new(rows);
        let mut outcomes = Vec::with_capacity(prepared.probes.len());
        for (n, probe) in prepared.probes.iter().enumerate() {
            let shots = index.pick(&probe.prompt, args.shots);
            let (outcome, scores, used) =
                score_probe(engine, &dataset.system_prompt, probe, &shots)?;
            outcomes.push(outcome);
            lines.push(ProbeLine {
                condition: name,
                probe: &probe.id,
                source: &probe.source,
                fact: &probe.fact,
                shots: shots[..used].iter().map(|r| r.id.as_str()).collect(),
                correct: outcome.correct,
                fact_nll: outcome.fact_nll,
                scores,
            });
            if tty {
                let _ = write!(
                    std::io::stderr(),
                    "\r\x1b[2Kproxy {name}: probe {}/{}",
                    n + 1,
                    prepared.probes.len()
                );
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        if tty {
            eprintln!();
        }
        eprintln!(
            "proxy {name}: {} probes in {seconds:.0}s",
            prepared.probes.len()
        );
        summaries.push(summarize(
            name,
            rows.len(),
            &prepared.probes,
            &outcomes,
            chance,
            dataset.plan.seed,
            seconds,
        ));
    }
    write_jsonl(&prepared.out.join("proxy-probes.jsonl"), &lines)?;

    let device = match args.engine.gpu_layers {
        0 => format!("cpu (llama.cpp, {} threads)", threads(&args.engine)),
        layers => format!("llama.cpp, {layers} layers on the GPU"),
    };
    let mut report = prepared.report(PROXY_TIER, device, summaries);
    report.shots = Some(args.shots);
    report.comparisons = compare(&report.conditions);
    Ok(report)
}

/// Scores one probe after `shots`; a context too long for the scoring
/// window drops the least similar record until it fits. Returns the
/// outcome, each answer's summed log-probability and how many records
/// were used.
fn score_probe(
    engine: &Engine,
    system_prompt: &str,
    probe: &Probe,
    shots: &[&TrainRow],
) -> anyhow::Result<(ProbeOutcome, Vec<f64>, usize)> {
    let mut used = shots.len();
    loop {
        let request = ScoreRequest {
            context: Prompt::Chat(context(system_prompt, &shots[..used], &probe.prompt)),
            continuations: std::iter::once(&probe.answer)
                .chain(&probe.alternatives)
                .cloned()
                .collect(),
            end_of_turn: true,
        };
        match engine.score_blocking(request) {
            Ok(scored) => {
                let totals = scored.totals();
                let truth: Vec<TokenScore> = scored.continuations[0]
                    .iter()
                    .map(|t| (t.start, t.end, t.logprob))
                    .collect();
                return Ok((judge(probe, &totals, &truth), totals, used));
            }
            Err(EngineError::ContextOverflow { .. }) if used > 0 => used -= 1,
            Err(err) => {
                return Err(anyhow::Error::new(err)
                    .context(format!("scoring probe {} ({})", probe.id, probe.source)));
            }
        }
    }
}
