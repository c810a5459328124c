//! What can go wrong in the lineage store.

use std::path::PathBuf;

/// Lineage store failures; each names the store, key or node involved.
#[derive(Debug, thiserror::Error)]
pub enum LineageError {
    #[error("lineage store {dir} is in use by pid {pid} (one process owns a store; go through it)")]
    InUse { dir: PathBuf, pid: String },
    #[error("cannot open lineage store {dir}: {reason}")]
    Open { dir: PathBuf, reason: String },
    #[error("lineage store io: {0}")]
    Io(String),
    #[error(
        "the lineage store's files are damaged (sled read corrupted data at {at}); nothing more can be read from it safely. Restore it from a dump into a new directory (`seedling store import --store NEW_DIR DUMP`; `seedling store export` writes dumps), or run the plan again into a new directory"
    )]
    Damaged { at: String },
    #[error("corrupt value at key {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("edge {parent} -[{kind}]-> {child} would close a cycle")]
    Cycle {
        parent: String,
        child: String,
        kind: String,
    },
    #[error("plan {0} is not in this lineage store")]
    UnknownPlan(String),
    #[error("node {0} not found")]
    NodeNotFound(String),
    #[error(
        "edge {parent} -[{kind}]-> {child} names node {missing}, which is neither stored nor in the batch"
    )]
    DanglingEdge {
        parent: String,
        child: String,
        kind: String,
        missing: String,
    },
    #[error("node {id} is in the batch twice with different content")]
    ConflictingNode { id: String },
    #[error("store dump {path}: {reason}")]
    Dump { path: PathBuf, reason: String },
    #[error("cannot import into {dir}: the store is not empty ({n_keys} keys)")]
    NotEmpty { dir: PathBuf, n_keys: usize },
}
