//! The crate boundaries ARCHITECTURE.md promises, checked on the sources:
//! llama.cpp only behind the worker's engine, sled only behind the lineage
//! store, a tonic server only in the coordinator's node start-up. A change
//! that reaches past one fails here, with the file that did.

use std::path::{Path, PathBuf};

use seedling_tests::repo_root;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Source files (relative to the root) that mention any of `needles`.
fn files_naming(needles: &[&str]) -> Vec<String> {
    let root = repo_root();
    let mut files = Vec::new();
    for crate_dir in ["common", "proto", "coordinator", "worker", "cli", "tests"] {
        rust_files(&root.join(crate_dir), &mut files);
    }
    let mut found: Vec<String> = files
        .into_iter()
        .filter(|f| !f.ends_with("tests/it/boundaries.rs"))
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            needles.iter().any(|n| text.contains(n))
        })
        .map(|f| f.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    found.sort();
    found
}

#[test]
fn only_the_engine_touches_llama_cpp() {
    for file in files_naming(&["llama_cpp_2"]) {
        assert!(
            file.starts_with("worker/src/engine/"),
            "{file} uses llama_cpp_2"
        );
    }
}

#[test]
fn only_the_lineage_store_touches_sled() {
    assert_eq!(
        files_naming(&["sled::", "use sled"]),
        ["coordinator/src/lineage/store.rs"]
    );
}

#[test]
fn only_the_coordinator_node_serves_grpc() {
    assert_eq!(
        files_naming(&["tonic::transport::Server", "tonic::server"]),
        ["coordinator/src/cluster/node.rs"]
    );
}
