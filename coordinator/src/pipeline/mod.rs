//! The generation pipeline (design sections 4.1 and 5.1): from a plan to
//! accepted records, every step written into the lineage store as it
//! happens.
//!
//! Data flow: `knowledge` stores the plan's domain knowledge; `run` drives
//! one plan (domain analysis, then attempts chosen by `schedule`, each
//! planned by `attempt` with prompts from `crate::prompts`); workers run the units;
//! `decision` decides about every result (heuristics, novelty, dedup,
//! quota) over a read-only view of the run, `run` applies it and appends the
//! lineage `record_lineage` builds, atomically. The coordinator actor
//! (`cluster`) connects runs to their workers.

mod attempt;
mod decision;
mod eta;
mod knowledge;
mod record_lineage;
mod run;
mod schedule;
mod spans;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use attempt::{Method, stratum_key};
pub use eta::{ETA_AFTER_ACCEPTED, eta_s};
pub use knowledge::{chunk_text, plan_id};
pub use record_lineage::PendingLineage;
pub use run::{Decided, PlanRun, Progress, RunOptions, StratumLine, UnitOutcome};
pub use schedule::{StratumProgress, next_attempts};
pub use spans::PassageCount;

use crate::lineage::LineageError;
use crate::plan::Plan;

/// The passages of its own knowledge that `plan`'s fact-first attempts
/// start from, per subdomain (its reference documents are read from
/// `base_dir`).
pub fn passages(
    plan: &Plan,
    base_dir: &Path,
) -> Result<BTreeMap<String, PassageCount>, PipelineError> {
    let (knowledge, _) = knowledge::knowledge_batch(&plan_id(plan), plan, base_dir, "", 0)?;
    Ok(spans::FactSpans::new(plan, &knowledge, &[]).per_subdomain())
}

/// Why a plan could not run on.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Lineage(#[from] LineageError),
    #[error("cannot read reference document {path}: {reason}")]
    Reference { path: PathBuf, reason: String },
    #[error("cannot plan an attempt: {0}")]
    Planning(String),
    #[error("target {0}")]
    Target(String),
    #[error(
        "the engine fails every unit (last error: {last_error}); records accepted so far are stored"
    )]
    EngineFailing { last_error: String },
    #[error(transparent)]
    Review(#[from] crate::review::ReviewError),
}
