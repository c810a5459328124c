//! Verification (design section 8, issue 17): does a Seedling dataset teach a
//! small Qwen 2.5 its domain? A dataset directory's train split, a naive
//! baseline and a fact-perturbed control are each used to fine-tune a LoRA
//! of the model that generated the data; every condition (and the untrained
//! model) is scored on the same held-out sets: the dataset's test split, fact
//! probes built from the plan's own knowledge, and a user's questions.
//!
//! This module prepares what the training sidecar reads (`dataset.rs`,
//! `probes.rs`, `perturb.rs`, `naive.rs`), runs it (`sidecar.rs`) and turns
//! its figures into the report, the card section and a lineage node
//! (`report.rs`). The no-training proxy (`proxy.rs`) scores the same probes
//! with a condition's records in context instead; `greedy.rs` checks the
//! answers a fine-tuned condition writes on its own. **Invariant:** never
//! loads a model itself: the sidecar trains and scores, and the CLI runs
//! the engine for the naive baseline and the proxy.

pub mod dataset;
pub mod greedy;
pub mod interval;
pub mod naive;
pub mod perturb;
pub mod probes;
pub mod proxy;
pub mod report;
mod seeded;
pub mod sidecar;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use dataset::{VerifyDataset, knowledge_of};
pub use report::{VerificationReport, card_section};
pub use sidecar::{Sidecar, SidecarConfig, SidecarEvent, TrainingSettings};

/// One instruction/response pair as the sidecar reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainRow {
    pub id: String,
    pub input: String,
    pub response: String,
    /// `subdomain|task type|persona|language|kind`, from the lineage DAG
    /// (empty where the row has no lineage: baselines, a user's files).
    #[serde(default)]
    pub stratum: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "{dir} holds no Seedling dataset (no manifest.json): run `seedling run PLAN --out {dir}` or `seedling export` into it first"
    )]
    NotADataset { dir: PathBuf },
    #[error("{path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "the dataset in {dir} has no train records ({split}); generate more (`seedling run PLAN --out {dir} --target N`) or give [splits] a train share"
    )]
    NoTrainRecords { dir: PathBuf, split: String },
    #[error("{path}:{line}: {reason}")]
    BadRow {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "no verification environment at {env}: run `scripts/setup` (it creates it), or point --env / SEEDLING_VERIFY_ENV at one ({reason})"
    )]
    NoEnvironment { env: PathBuf, reason: String },
    #[error("the training sidecar failed: {0}")]
    Sidecar(String),
    #[error(transparent)]
    Lineage(#[from] crate::lineage::LineageError),
}

/// Reads a JSONL file of `{input, response}` rows (a user's baseline or
/// evaluation set); other fields are kept only if they are `id` / `stratum`.
pub fn read_pairs(path: &std::path::Path) -> Result<Vec<TrainRow>, VerifyError> {
    let text = std::fs::read_to_string(path).map_err(|e| VerifyError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| VerifyError::BadRow {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let field = |name: &str| {
            value
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .filter(|s| !s.trim().is_empty())
        };
        let (Some(input), Some(response)) = (field("input"), field("response")) else {
            return Err(bad(
                "each line needs non-empty string fields \"input\" and \"response\"".into(),
            ));
        };
        rows.push(TrainRow {
            id: field("id").unwrap_or_else(|| format!("{}:{}", path.display(), i + 1)),
            input,
            response,
            stratum: field("stratum").unwrap_or_default(),
        });
    }
    if rows.is_empty() {
        return Err(VerifyError::Unreadable {
            path: path.to_path_buf(),
            reason: "no rows".into(),
        });
    }
    Ok(rows)
}

/// Writes rows as JSONL (the sidecar's input).
pub fn write_jsonl<T: Serialize>(path: &std::path::Path, rows: &[T]) -> Result<(), VerifyError> {
    let mut out = Vec::new();
    for row in rows {
        out.extend(serde_json::to_vec(row).unwrap_or_default());
        out.push(b'\n');
    }
    std::fs::write(path, out).map_err(|e| VerifyError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_file_needs_input_and_response_on_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.jsonl");
        std::fs::write(&good, "{\"input\":\"q\",\"response\":\"a\"}\n\n{\"input\":\"q2\",\"response\":\"a2\",\"id\":\"x\"}\n").unwrap();
        let rows = read_pairs(&good).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].id, "x");
        let bad = dir.path().join("bad.jsonl");
        std::fs::write(
            &bad,
            "{\"input\":\"q\",\"response\":\"a\"}\n{\"question\":\"q\"}\n",
        )
        .unwrap();
        let err = read_pairs(&bad).unwrap_err().to_string();
        assert!(
            err.contains("bad.jsonl:2:") && err.contains("\"input\""),
            "{err}"
        );
    }
}
