//! Quality control that needs every worker's output: deduplication, the
//! diversity of what was accepted, and the acceptance funnel.

pub mod dedup;
pub mod diversity;
pub mod funnel;
