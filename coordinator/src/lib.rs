//! The Seedling coordinator: plans (validation, allocation, instantiation),
//! the lineage store (the sled-backed DAG of every record, step and decision),
//! and the quality control that needs every worker's output (deduplication).

pub mod dataset;
pub mod lineage;
pub mod plan;
pub mod quality;
