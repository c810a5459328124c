//! The lineage store: every node and edge of every plan, durable and
//! checksummed, with the queries lineage needs (ancestors, descendants, nodes
//! of a plan by kind and status, a record's history) and petgraph analysis.
//!
//! `store.rs` is the only module in the workspace that imports `sled`.

mod codec;
mod dump;
mod error;
mod graph;
mod keys;
mod report;
mod store;
pub mod synthetic;
mod vocabulary;

pub use dump::{DUMP_FORMAT_VERSION, DumpSummary};
pub use error::LineageError;
pub use graph::PlanGraph;
pub use report::lineage_report;
pub use store::{AppendOutcome, CheckReport, LineageStore, Reached, Walk};
pub use vocabulary::{
    COST, INPUT_EMBEDDING, plan_node_id, record_id, stored_cost, stored_input_embedding,
    stored_plan,
};
