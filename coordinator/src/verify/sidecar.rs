//! The training sidecar: a Python program (`finetune.py`, compiled into this
//! binary and written next to its config) run in the verification
//! environment `scripts/setup` creates. Python is here and only here: torch,
//! transformers and PEFT train LoRA adapters, which nothing in Rust does
//! yet. It reports progress as JSON lines and its figures as a JSON file.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::VerifyError;

/// The program the environment runs; written out for every run, so the
/// binary and its sidecar always match.
pub const SCRIPT: &str = include_str!("finetune.py");

/// How every condition is trained: the same steps, token budget and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSettings {
    /// Optimiser steps of one example each.
    pub steps: u32,
    pub learning_rate: f64,
    pub lora_r: u32,
    pub lora_alpha: u32,
    /// Prompt and answer together are cut to this many tokens.
    pub max_tokens: u32,
    /// bf16 autocast on CPU (LoRA weights stay fp32).
    pub bf16: bool,
}

impl TrainingSettings {
    /// The small tier: enough steps for a few passes over a small dataset,
    /// with a learning rate high enough that they show.
    pub fn smoke(train_rows: usize) -> Self {
        Self {
            steps: (train_rows as u32 * 3).clamp(12, 48),
            learning_rate: 1e-3,
            lora_r: 16,
            lora_alpha: 32,
            max_tokens: 192,
            bf16: true,
        }
    }

    /// The full tier: three passes over the train split, 60 steps at least.
    pub fn full(train_rows: usize) -> Self {
        Self {
            steps: (train_rows as u32 * 3).max(60),
            learning_rate: 5e-4,
            lora_r: 16,
            lora_alpha: 32,
            max_tokens: 256,
            bf16: true,
        }
    }
}

/// One condition: trained on `train` (none: the base model as it is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionInput {
    pub name: String,
    pub train: Option<PathBuf>,
    /// A digest of everything its result depends on: a cached result with
    /// the same key is reused.
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SidecarConfig {
    pub model: PathBuf,
    pub threads: u32,
    pub seed: u64,
    pub training: TrainingSettings,
    pub system_prompt: String,
    pub conditions: Vec<ConditionInput>,
    pub test: Option<PathBuf>,
    pub probes: PathBuf,
    pub user_eval: Option<PathBuf>,
    pub out_dir: PathBuf,
    pub bootstrap_rounds: u32,
}

/// A progress line from the sidecar.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SidecarEvent {
    Loading {
        device: String,
    },
    Train {
        condition: String,
        step: u32,
        steps: u32,
        loss: f64,
        eta_s: f64,
    },
    Evaluate {
        condition: String,
    },
    Reused {
        condition: String,
    },
    Condition {
        condition: String,
        seconds: f64,
    },
    Done,
}

/// A mean with its bootstrap 95% interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
    /// For accuracies: what guessing scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chance: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionResult {
    pub name: String,
    pub trained: bool,
    pub train_examples: usize,
    pub steps: u32,
    #[serde(default)]
    pub loss_curve: Vec<f64>,
    pub seconds: f64,
    /// `forced_choice`, `fact_nll`, `response_nll`, `user_nll`.
    pub metrics: BTreeMap<String, Estimate>,
    /// Test response NLL per stratum.
    #[serde(default)]
    pub strata: BTreeMap<String, Option<Estimate>>,
    /// 1 where the probe's true answer won, in probe order.
    #[serde(default)]
    pub per_probe: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SidecarReport {
    pub probes: usize,
    pub test_rows: usize,
    pub user_rows: usize,
    pub device: String,
    pub torch: String,
    pub conditions: Vec<ConditionResult>,
}

/// The verification environment's Python.
#[derive(Debug, Clone)]
pub struct Sidecar {
    python: PathBuf,
}

/// Where `scripts/setup` puts the environment unless told otherwise.
pub fn default_env() -> PathBuf {
    std::env::var_os("SEEDLING_VERIFY_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache").join("seedling").join("verify-env")
        })
}

impl Sidecar {
    /// The environment at `env`, checked to import what the sidecar needs.
    pub fn locate(env: &Path) -> Result<Self, VerifyError> {
        let python = env.join("bin").join("python");
        let missing = |reason: String| VerifyError::NoEnvironment {
            env: env.to_path_buf(),
            reason,
        };
        if !python.is_file() {
            return Err(missing(format!("{} does not exist", python.display())));
        }
        let probe = Command::new(&python)
            .args(["-c", "import torch, transformers, peft, matplotlib, numpy"])
            .output()
            .map_err(|e| missing(format!("cannot run {}: {e}", python.display())))?;
        if !probe.status.success() {
            let stderr = String::from_utf8_lossy(&probe.stderr);
            let last = stderr.lines().last().unwrap_or("import failed").to_string();
            return Err(missing(last));
        }
        Ok(Self { python })
    }

    /// Runs the sidecar on `config`, handing each progress line to
    /// `on_event`, and reads its report.
    pub fn run(
        &self,
        config: &SidecarConfig,
        mut on_event: impl FnMut(SidecarEvent),
    ) -> Result<SidecarReport, VerifyError> {
        let io = |path: &Path, e: std::io::Error| VerifyError::Unreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&config.out_dir).map_err(|e| io(&config.out_dir, e))?;
        let script = config.out_dir.join("finetune.py");
        std::fs::write(&script, SCRIPT).map_err(|e| io(&script, e))?;
        let config_path = config.out_dir.join("sidecar-config.json");
        let text = serde_json::to_vec_pretty(config).unwrap_or_default();
        std::fs::write(&config_path, text).map_err(|e| io(&config_path, e))?;

        let mut child = Command::new(&self.python)
            .arg(&script)
            .arg(&config_path)
            .env("OMP_NUM_THREADS", config.threads.max(1).to_string())
            .env("HF_HUB_OFFLINE", "1")
            .env("TRANSFORMERS_VERBOSITY", "error")
            .env("TQDM_DISABLE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                VerifyError::Sidecar(format!("cannot start {}: {e}", self.python.display()))
            })?;
        // Drained on a thread of its own, so a chatty library never blocks the child.
        let mut stderr = child.stderr.take().expect("piped stderr");
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let stdout = child.stdout.take().expect("piped stdout");
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(event) = serde_json::from_str::<SidecarEvent>(&line) {
                on_event(event);
            }
        }
        let status = child
            .wait()
            .map_err(|e| VerifyError::Sidecar(format!("waiting for it: {e}")))?;
        let errors = errors.join().unwrap_or_default();
        if !status.success() {
            let last = errors
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("no message");
            return Err(VerifyError::Sidecar(format!(
                "{status}: {last} (its whole output: {})",
                config.out_dir.join("sidecar.log").display()
            )))
            .inspect_err(|_| {
                let _ = std::fs::write(config.out_dir.join("sidecar.log"), &errors);
            });
        }
        let report_path = config.out_dir.join("sidecar-report.json");
        let text = std::fs::read_to_string(&report_path).map_err(|e| io(&report_path, e))?;
        serde_json::from_str(&text).map_err(|e| VerifyError::Unreadable {
            path: report_path,
            reason: e.to_string(),
        })
    }
}

/// A condition's cache key: the script, the model, the settings and the
/// bytes of every file its result depends on.
pub fn condition_key(
    name: &str,
    model_identity: &str,
    settings: &TrainingSettings,
    system_prompt: &str,
    files: &[Option<&Path>],
) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in [
        SCRIPT,
        name,
        model_identity,
        &serde_json::to_string(settings).unwrap_or_default(),
        system_prompt,
    ] {
        hasher.update(part.as_bytes());
        hasher.update(&[0]);
    }
    for file in files {
        if let Some(bytes) = file.and_then(|f| std::fs::read(f).ok()) {
            hasher.update(&bytes);
        }
        hasher.update(&[0]);
    }
    hasher.finalize().to_hex()[..24].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_parse_and_others_do_not() {
        let line = r#"{"event": "train", "condition": "seedling", "step": 3, "steps": 24, "loss": 1.25, "eta_s": 40.0}"#;
        assert_eq!(
            serde_json::from_str::<SidecarEvent>(line).unwrap(),
            SidecarEvent::Train {
                condition: "seedling".into(),
                step: 3,
                steps: 24,
                loss: 1.25,
                eta_s: 40.0
            }
        );
        assert!(serde_json::from_str::<SidecarEvent>("Converting tensors 10%").is_err());
    }

    #[test]
    fn a_missing_environment_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = Sidecar::locate(&dir.path().join("nowhere"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("scripts/setup") && err.contains("nowhere"),
            "{err}"
        );
    }

    #[test]
    fn the_key_changes_with_the_training_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("train.jsonl");
        std::fs::write(&file, "a\n").unwrap();
        let settings = TrainingSettings::smoke(10);
        let key = || condition_key("seedling", "m", &settings, "sys", &[Some(&file), None]);
        let first = key();
        assert_eq!(first, key());
        std::fs::write(&file, "b\n").unwrap();
        assert_ne!(first, key());
    }
}
