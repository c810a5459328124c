//! Seedling's shared vocabulary: the dataset record of design section 3.1,
//! the typed ids every other crate passes around, the lineage vocabulary and
//! the work units coordinator and workers exchange.
//!
//! **Invariant:** no IO and no async runtime here; everything is plain data
//! with serde, so every crate (and the wire) can depend on it.

pub mod config;
pub mod cost;
pub mod embedding;
pub mod facts;
pub mod ids;
pub mod language;
pub mod lineage;
pub mod record;
pub mod similarity;
pub mod time;
pub mod work;
