//! How fast this machine runs the model, measured once per suite, and the
//! waits derived from it.
//!
//! Our machines differ up to 5x in llama.cpp speed, so a fixed number of
//! seconds is either too short on the slowest or hides a hang on the
//! fastest. `scripts/test` measures the engine once before the tests
//! (`machine-speed`: `seedling bench engine` at one thread, the setting the
//! cluster tests give their workers) and prints it; every wait on model work is then
//! derived from that measurement, and a wait that runs out says what the
//! machine measured, so a failure on a slow machine says so.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::{repo_root, seedling_bin};

/// Where `scripts/test` leaves the measurement (`SEEDLING_TEST_SPEED` overrides).
pub fn speed_file() -> PathBuf {
    std::env::var_os("SEEDLING_TEST_SPEED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/test-machine-speed.jsonl"))
}

/// Slack over the derived estimate: sampling lengths, acceptance and the
/// scheduling of two processes on two cores all vary from run to run.
const SLACK: f64 = 4.0;

/// Longest wait a model test may derive. nextest stops a model test after
/// 30 minutes (`.config/nextest.toml`); a machine so slow that a wait would
/// need more is told so at once instead of being stopped without a word.
pub const MAX_WAIT: Duration = Duration::from_secs(25 * 60);

/// The engine's speed on this machine at one thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MachineSpeed {
    /// Prompt tokens per second, one sequence.
    pub prompt_tok_s: f64,
    /// Generated tokens per second, one sequence.
    pub gen_tok_s: f64,
}

impl MachineSpeed {
    /// Reads `seedling bench engine`'s JSON lines (the one-sequence line).
    pub fn parse(lines: &str) -> Option<Self> {
        lines
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|v| v["parallel"] == 1)
            .and_then(|v| {
                Some(Self {
                    prompt_tok_s: v["prompt_tok_s"].as_f64()?,
                    gen_tok_s: v["gen_tok_s"].as_f64()?,
                })
            })
            .filter(|s| s.prompt_tok_s > 0.0 && s.gen_tok_s > 0.0)
    }

    /// The measurement `scripts/test` made; measured here when it is
    /// missing (a test run on its own), and kept for the next test.
    pub fn of_this_machine() -> Self {
        std::fs::read_to_string(speed_file())
            .ok()
            .and_then(|text| Self::parse(&text))
            .unwrap_or_else(Self::measure)
    }

    /// Measures now (one short decode through the engine's real path) and
    /// keeps the figures in [`speed_file`] for the tests that follow.
    pub fn measure() -> Self {
        let out = Command::new(seedling_bin())
            .args(["bench", "engine", "--parallel", "1", "--threads", "1"])
            .args([
                "--prompt-tokens",
                "128",
                "--gen-tokens",
                "32",
                "--ctx",
                "1024",
            ])
            .env("OMP_WAIT_POLICY", "passive")
            .output()
            .expect("seedling bench engine runs");
        let measured = String::from_utf8_lossy(&out.stdout).into_owned();
        let speed = Self::parse(&measured).unwrap_or_else(|| {
            panic!(
                "seedling bench engine gave no speed ({}): {measured}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let file = speed_file();
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(&file, measured);
        speed
    }

    /// Time for `work` done one call after another at one thread, with
    /// slack; batching and a second thread only make it shorter.
    pub fn time_for(&self, work: Work) -> Duration {
        let seconds = work.calls as f64
            * (work.prompt_tokens as f64 / self.prompt_tok_s
                + work.generated_tokens as f64 / self.gen_tok_s);
        let wait = Duration::from_secs_f64(seconds * SLACK) + work.fixed;
        assert!(
            wait <= MAX_WAIT,
            "{self}: too slow for the suite's budget ({work:?} would need a wait of {wait:.0?}, \
             more than the {MAX_WAIT:?} a model test may wait)"
        );
        wait
    }
}

impl std::fmt::Display for MachineSpeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this machine runs the model at {:.0} prompt tokens/s and {:.1} generated tokens/s (one sequence, one thread)",
            self.prompt_tok_s, self.gen_tok_s
        )
    }
}

/// Model work a wait covers: `calls` model calls of the given size each,
/// plus what does not scale with the model (process starts, loading).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Work {
    pub calls: u32,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub fixed: Duration,
}

impl Work {
    /// Attempts of the test plan (`tests/plans/library-desk.toml`): an
    /// input and a grounded response each, plus the one domain analysis.
    /// Per call, what the calls averaged on the machines measured (a
    /// ~250-token prompt of which the prefix cache serves most, inputs of
    /// ~25 tokens and answers up to the plan's 72). A model load and a
    /// process start are the fixed part.
    pub fn attempts(n: u32) -> Self {
        Self {
            calls: 2 * n + 1,
            prompt_tokens: 150,
            generated_tokens: 60,
            fixed: Duration::from_secs(30),
        }
    }

    /// What accepting `records` more takes with the test plan: about two
    /// attempts a record (it accepts about half), and two to spare.
    pub fn to_accept(records: u32) -> Self {
        Self::attempts(2 * records + 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BENCH: &str = r#"{"parallel":1,"prompt_tokens_per_seq":128.0,"generated_tokens":32,"prompt_tok_s":30.0,"gen_tok_s":10.0,"wall_s":7.5,"peak_rss_kib":589724}
{"parallel":4,"prompt_tokens_per_seq":128.0,"generated_tokens":128,"prompt_tok_s":31.0,"gen_tok_s":14.0,"wall_s":12.0,"peak_rss_kib":624772}"#;

    #[test]
    fn the_one_sequence_line_is_the_speed() {
        let speed = MachineSpeed::parse(BENCH).unwrap();
        assert_eq!(
            speed,
            MachineSpeed {
                prompt_tok_s: 30.0,
                gen_tok_s: 10.0
            }
        );
        assert_eq!(MachineSpeed::parse("not json\n"), None);
        assert_eq!(
            MachineSpeed::parse(r#"{"parallel":1,"prompt_tok_s":0.0,"gen_tok_s":3.0}"#),
            None
        );
    }

    #[test]
    fn waits_scale_with_the_measured_speed() {
        let slow = MachineSpeed::parse(BENCH).unwrap();
        let fast = MachineSpeed {
            prompt_tok_s: 150.0,
            gen_tok_s: 50.0,
        };
        let work = Work {
            calls: 2,
            prompt_tokens: 300,
            generated_tokens: 100,
            fixed: Duration::from_secs(5),
        };
        // 2 x (300/30 + 100/10) = 40 s of model time, with slack, plus 5 s.
        assert_eq!(
            slow.time_for(work),
            Duration::from_secs_f64(40.0 * SLACK + 5.0)
        );
        assert_eq!(
            fast.time_for(work),
            Duration::from_secs_f64(8.0 * SLACK + 5.0)
        );
    }

    #[test]
    #[should_panic(expected = "too slow for the suite's budget")]
    fn a_machine_too_slow_for_the_budget_says_so() {
        MachineSpeed {
            prompt_tok_s: 2.0,
            gen_tok_s: 1.0,
        }
        .time_for(Work::attempts(10));
    }
}
