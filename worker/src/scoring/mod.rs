//! Scoring of generated pairs. `heuristics.rs` holds the fast, model-free
//! checks (design section 6.2) that run on every response before any model
//! judge sees it; each failed check is a reason recorded in the lineage.
//! `support.rs` checks an answer's figures against the passages it was
//! grounded on and cites them; `polarity.rs` checks an answer's opening
//! "yes" against the statement after it.

pub mod heuristics;
pub mod language;
pub mod polarity;
pub mod support;
