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

/// Generated wire types stay at the edges: the cluster's coordinator side,
/// the worker's remote side, and the CLI that talks to the API. The layers
/// below speak domain types.
#[test]
fn only_the_cluster_edges_name_wire_types() {
    let wire = [
        "seedling_proto::api",
        "seedling_proto::control",
        "seedling_proto::results",
        "seedling_proto::worker",
        "seedling_proto::cluster",
    ];
    for file in files_naming(&wire) {
        assert!(
            file.starts_with("coordinator/src/cluster/")
                || file == "worker/src/remote.rs"
                || file.starts_with("cli/")
                || file.starts_with("tests/"),
            "{file} names a generated wire type"
        );
    }
}

/// The coordinator's modules in layers, lowest first. A module imports
/// from lower layers only: none from its own layer or above, so there is
/// no cycle and no upward import (ARCHITECTURE.md's codemap says why each
/// sits where it does).
const COORDINATOR_LAYERS: &[&[&str]] = &[
    &["plan"],
    &["lineage", "prompts"],
    &["quality"],
    &["review"],
    &["verify"],
    &["pipeline", "dataset"],
    &["tracking"],
    &["cluster"],
];

fn layer_of(module: &str) -> Option<usize> {
    COORDINATOR_LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
}

#[test]
fn coordinator_modules_import_only_from_lower_layers() {
    let src = repo_root().join("coordinator/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut checked = 0;
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let module = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" {
            continue;
        }
        let own = layer_of(&module)
            .unwrap_or_else(|| panic!("coordinator module {module} has no layer in this test"));
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("crate::") {
            let name: String = text[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name == module || name.is_empty() {
                continue;
            }
            let Some(theirs) = layer_of(&name) else {
                continue; // a crate-root item, not a module
            };
            checked += 1;
            assert!(
                theirs < own,
                "coordinator/src/{} ({module}, layer {own}) imports crate::{name} (layer {theirs}): an import upward or within a layer",
                relative.display()
            );
        }
    }
    assert!(
        checked > 50,
        "only {checked} imports checked: the scan is broken"
    );
}
