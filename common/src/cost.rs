//! Where a run's time and tokens go: what each model call cost, summed per
//! stage of the generation flow, and the share of a worker's time each kind
//! of work took.
//!
//! Engine times are shares of the engine's own step time (a step that mixes
//! sequences is split by their token counts), so the prefill and decode of
//! every call add up to the time the engine was busy, however many slots ran
//! at once. Queue time overlaps everything else and is reported apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::work::{CallOutcome, UnitResult};

/// What one model call cost beyond its token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CallCost {
    /// Prompt tokens served from the prefix cache (included in `prompt_tokens`).
    #[serde(default)]
    pub prompt_tokens_reused: u32,
    /// Waiting for a free slot.
    #[serde(default)]
    pub queued_ms: u64,
    /// This call's share of the engine's time on prompt tokens.
    #[serde(default)]
    pub prefill_ms: u64,
    /// This call's share of the engine's time on generated tokens.
    #[serde(default)]
    pub decode_ms: u64,
}

/// The stages a run's tokens are reported by, in the order of the flow.
pub const STAGES: &[&str] = &[
    "analysis",
    "input",
    "expansion",
    "response",
    "back_translation",
    "judge",
];

/// The stage a model call's step belongs to.
pub fn stage_of(step: &str) -> &'static str {
    match step {
        "domain_analysis" => "analysis",
        "template_rewrite" | "self_instruct" | "magpie" => "input",
        "evol_instruct" => "expansion",
        s if s.starts_with("augment_") => "expansion",
        "response_generation" | "translate_response" => "response",
        "back_translation" => "back_translation",
        "judge" | "pairwise_judge" | "faithfulness_judge" => "judge",
        _ => "other",
    }
}

/// Calls, tokens and engine time of one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StageCost {
    pub calls: u64,
    /// All prompt tokens, computed or reused.
    pub prompt_tokens: u64,
    pub prompt_tokens_reused: u64,
    pub generated_tokens: u64,
    pub queued_ms: u64,
    pub prefill_ms: u64,
    pub decode_ms: u64,
}

impl StageCost {
    fn of_call(call: &CallOutcome) -> Self {
        Self {
            calls: 1,
            prompt_tokens: u64::from(call.prompt_tokens),
            prompt_tokens_reused: u64::from(call.cost.prompt_tokens_reused),
            generated_tokens: u64::from(call.generated_tokens),
            queued_ms: call.cost.queued_ms,
            prefill_ms: call.cost.prefill_ms,
            decode_ms: call.cost.decode_ms,
        }
    }

    fn add(&mut self, other: &StageCost) {
        self.calls += other.calls;
        self.prompt_tokens += other.prompt_tokens;
        self.prompt_tokens_reused += other.prompt_tokens_reused;
        self.generated_tokens += other.generated_tokens;
        self.queued_ms += other.queued_ms;
        self.prefill_ms += other.prefill_ms;
        self.decode_ms += other.decode_ms;
    }
}

/// The cost of a set of units: per stage, plus the worker's own work.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunCost {
    /// Keyed by [`stage_of`].
    #[serde(default)]
    pub stages: BTreeMap<String, StageCost>,
    /// Texts embedded, and the engine time that took.
    #[serde(default)]
    pub embeddings: u64,
    #[serde(default)]
    pub embedding_ms: u64,
    /// Model-free checks on the worker (heuristics, support, chrF).
    #[serde(default)]
    pub checks_ms: u64,
}

impl RunCost {
    /// What one unit cost.
    pub fn of_result(result: &UnitResult) -> Self {
        let mut cost = Self::default();
        for call in &result.calls {
            cost.stages
                .entry(stage_of(&call.step).to_string())
                .or_default()
                .add(&StageCost::of_call(call));
        }
        cost.embeddings = u64::from(result.work.embeddings);
        cost.embedding_ms = result.work.embedding_ms;
        cost.checks_ms = result.work.checks_ms;
        cost
    }

    pub fn add(&mut self, other: &RunCost) {
        for (stage, cost) in &other.stages {
            self.stages.entry(stage.clone()).or_default().add(cost);
        }
        self.embeddings += other.embeddings;
        self.embedding_ms += other.embedding_ms;
        self.checks_ms += other.checks_ms;
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty() && self.embeddings == 0 && self.checks_ms == 0
    }

    /// All stages together.
    pub fn total(&self) -> StageCost {
        let mut total = StageCost::default();
        for cost in self.stages.values() {
            total.add(cost);
        }
        total
    }

    /// Stages in the order of the flow, then any others by name.
    pub fn ordered_stages(&self) -> Vec<(&str, &StageCost)> {
        let known = STAGES
            .iter()
            .filter_map(|s| self.stages.get(*s).map(|c| (*s, c)));
        let others = self
            .stages
            .iter()
            .filter(|(s, _)| !STAGES.contains(&s.as_str()))
            .map(|(s, c)| (s.as_str(), c));
        known.chain(others).collect()
    }

    /// One line per stage: calls, prompt tokens (and the share reused) and
    /// generated tokens per accepted record, then embeddings.
    pub fn per_record_lines(&self, accepted: u64) -> Vec<String> {
        let per = |n: u64| n as f64 / accepted.max(1) as f64;
        let mut lines: Vec<String> = self
            .ordered_stages()
            .into_iter()
            .map(|(stage, c)| {
                let reused = if c.prompt_tokens > 0 {
                    format!(
                        " ({:.0}% from the prefix cache)",
                        100.0 * c.prompt_tokens_reused as f64 / c.prompt_tokens as f64
                    )
                } else {
                    String::new()
                };
                format!(
                    "{stage}: {:.1} calls, {:.0} prompt tokens{reused}, {:.0} generated tokens",
                    per(c.calls),
                    per(c.prompt_tokens),
                    per(c.generated_tokens),
                )
            })
            .collect();
        if self.embeddings > 0 {
            lines.push(format!(
                "embedding: {:.1} texts, {:.2} s",
                per(self.embeddings),
                per(self.embedding_ms) / 1e3
            ));
        }
        lines
    }

    /// How `capacity_ms` of worker time (wall time times workers) went.
    /// Idle is what the engine and the checks did not use; it is never
    /// negative, though queued and overlapping work can make the parts
    /// exceed a short wall time.
    pub fn split(&self, capacity_ms: u64) -> TimeSplit {
        let total = self.total();
        let busy = total.prefill_ms + total.decode_ms + self.embedding_ms + self.checks_ms;
        TimeSplit {
            capacity_ms,
            prefill_ms: total.prefill_ms,
            decode_ms: total.decode_ms,
            embedding_ms: self.embedding_ms,
            checks_ms: self.checks_ms,
            idle_ms: capacity_ms.saturating_sub(busy),
        }
    }
}

/// Worker time by kind of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TimeSplit {
    pub capacity_ms: u64,
    pub prefill_ms: u64,
    pub decode_ms: u64,
    pub embedding_ms: u64,
    pub checks_ms: u64,
    pub idle_ms: u64,
}

impl TimeSplit {
    /// `part` as a share of the whole (capacity, or the parts if more).
    pub fn share(&self, part: u64) -> f64 {
        let whole = self
            .capacity_ms
            .max(self.prefill_ms + self.decode_ms + self.embedding_ms + self.checks_ms);
        if whole == 0 {
            return 0.0;
        }
        part as f64 / whole as f64
    }

    /// One line: "prefill 41%, decode 38%, embedding 3%, checks 1%, idle 17%";
    /// without a capacity, shares of the busy time and no idle.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "prefill {:.0}%, decode {:.0}%, embedding {:.0}%, checks {:.0}%",
            100.0 * self.share(self.prefill_ms),
            100.0 * self.share(self.decode_ms),
            100.0 * self.share(self.embedding_ms),
            100.0 * self.share(self.checks_ms),
        );
        if self.capacity_ms > 0 {
            line.push_str(&format!(", idle {:.0}%", 100.0 * self.share(self.idle_ms)));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::work::WorkerWork;

    fn call(
        step: &str,
        prompt: u32,
        reused: u32,
        generated: u32,
        prefill: u64,
        decode: u64,
    ) -> CallOutcome {
        CallOutcome {
            step: step.into(),
            text: String::new(),
            finish_reason: "EndOfGeneration".into(),
            prompt_tokens: prompt,
            generated_tokens: generated,
            started_ms: 0,
            finished_ms: 0,
            cost: CallCost {
                prompt_tokens_reused: reused,
                queued_ms: 5,
                prefill_ms: prefill,
                decode_ms: decode,
            },
        }
    }

    #[test]
    fn calls_sum_into_their_stages_and_units_into_a_run() {
        let mut result = UnitResult::new("p", "u", "w");
        result.calls = vec![
            call("template_rewrite", 300, 200, 40, 100, 400),
            call("evol_instruct", 200, 0, 50, 150, 500),
            call("response_generation", 500, 300, 200, 200, 2000),
            call("judge", 600, 500, 60, 100, 600),
        ];
        result.work = WorkerWork {
            embeddings: 1,
            embedding_ms: 300,
            checks_ms: 20,
        };
        let one = RunCost::of_result(&result);
        assert_eq!(one.stages["input"].prompt_tokens_reused, 200);
        assert_eq!(one.stages["expansion"].generated_tokens, 50);
        assert_eq!(one.stages["judge"].calls, 1);
        let mut run = RunCost::default();
        run.add(&one);
        run.add(&one);
        let total = run.total();
        assert_eq!(total.calls, 8);
        assert_eq!(total.prompt_tokens, 2 * 1600);
        assert_eq!(total.generated_tokens, 2 * 350);
        assert_eq!(total.queued_ms, 40);
        assert_eq!(run.embeddings, 2);
        let lines = run.per_record_lines(2);
        assert_eq!(
            lines[0],
            "input: 1.0 calls, 300 prompt tokens (67% from the prefix cache), 40 generated tokens"
        );
        assert_eq!(lines.last().unwrap(), "embedding: 1.0 texts, 0.30 s");
        let stages: Vec<&str> = run.ordered_stages().iter().map(|(s, _)| *s).collect();
        assert_eq!(stages, vec!["input", "expansion", "response", "judge"]);
        // survives the lineage's JSON
        let back: RunCost = serde_json::from_value(serde_json::to_value(&run).unwrap()).unwrap();
        assert_eq!(back, run);
    }

    #[test]
    fn the_split_accounts_for_all_worker_time() {
        let mut result = UnitResult::new("p", "u", "w");
        result.calls = vec![call("response_generation", 500, 0, 200, 3000, 5000)];
        result.work.embedding_ms = 1000;
        result.work.checks_ms = 1000;
        let split = RunCost::of_result(&result).split(20_000);
        assert_eq!(split.idle_ms, 10_000);
        assert_eq!(
            split.describe(),
            "prefill 15%, decode 25%, embedding 5%, checks 5%, idle 50%"
        );
        assert_eq!(
            RunCost::of_result(&result).split(0).describe(),
            "prefill 30%, decode 50%, embedding 10%, checks 10%"
        );
        // overlapping work longer than the wall time is shown, not clipped
        let tight = RunCost::of_result(&result).split(5_000);
        assert_eq!(tight.idle_ms, 0);
        assert!((tight.share(tight.decode_ms) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn steps_map_to_stages() {
        assert_eq!(stage_of("magpie"), "input");
        assert_eq!(stage_of("augment_paraphrase"), "expansion");
        assert_eq!(stage_of("translate_response"), "response");
        assert_eq!(stage_of("pairwise_judge"), "judge");
        assert_eq!(stage_of("faithfulness_judge"), "judge");
        assert_eq!(stage_of("something_new"), "other");
    }
}
