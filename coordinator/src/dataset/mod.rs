//! Packaging (design section 5.1, step 7): split assignment by lineage group
//! and the record formats fine-tuning tools read.

pub mod formats;
pub mod splits;
