//! The Seedling coordinator: plans (validation, allocation, instantiation),
//! the lineage store (the sled-backed DAG of every record, step and decision),
//! the generation pipeline and its coordinator actor, the quality control that
//! needs every worker's output (deduplication), and dataset packaging.

pub mod cluster;
pub mod dataset;
pub mod lineage;
pub mod pipeline;
pub mod plan;
pub mod prompts;
pub mod quality;
pub mod review;
pub mod tracking;
pub mod verify;
