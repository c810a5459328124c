//! Packaging (design section 5.1, step 7): split assignment by lineage group,
//! the record formats fine-tuning tools read, the dataset card and the export
//! that writes them all with a manifest.

mod card;
pub mod export;
pub mod formats;
mod parquet;
mod report;
pub mod splits;

pub use export::{ExportError, ExportSummary, export_dataset, lock_export_dir, validate_record};
