//! Quality control that needs every worker's output: deduplication (text
//! and semantic tiers), the
//! diversity of what was accepted, the acceptance funnel, and the agreement
//! of the quality score with human labels, and of a judge model with the
//! support check.

pub mod calibration;
pub mod consistency;
pub mod dedup;
pub mod diversity;
pub mod duplicates;
pub mod faithfulness;
pub mod funnel;
pub mod judge_probe;
pub mod semantic;
