//! Quality control that needs every worker's output: deduplication now;
//! consistency checks and quota steering build on it.

pub mod dedup;
