//! The Seedling coordinator. Today it holds the lineage store: the sled-backed
//! DAG of every record, step and decision, and its analysis with petgraph.

pub mod lineage;
pub mod plan;
