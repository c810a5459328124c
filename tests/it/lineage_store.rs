//! The sled lineage store: atomic idempotent appends, the DAG invariant,
//! queries, versioning, checksums, dumps and single-process ownership.

use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{Edge, EdgeKind, LineageBatch, Node, NodeKind, NodeStatus};
use seedling_coordinator::lineage::synthetic::{plan_roots, record, records, response_id};
use seedling_coordinator::lineage::{LineageError, LineageStore, PlanGraph, Walk};

fn plan() -> PlanId {
    PlanId::new("p-test")
}

fn open_with_records(n: u64) -> (tempfile::TempDir, LineageStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = LineageStore::open(dir.path().join("store")).unwrap();
    store.append(&plan_roots(&plan())).unwrap();
    if n > 0 {
        store.append(&records(&plan(), 0, n)).unwrap();
    }
    (dir, store)
}

fn simple_node(id: &str, kind: NodeKind) -> Node {
    Node {
        id: NodeId::new(id),
        plan: plan(),
        kind,
        status: NodeStatus::Recorded,
        created_at_ms: 1,
        step: "test".into(),
        params: Default::default(),
        body: serde_json::Value::Null,
    }
}

#[test]
fn appended_nodes_and_edges_read_back() {
    let (_dir, store) = open_with_records(3);
    let response = response_id(&plan(), 1);
    let node = store.require(&response).unwrap();
    assert_eq!(node.kind, NodeKind::Response);
    assert_eq!(node.status, NodeStatus::Accepted);
    let parents = store.parents(&response).unwrap();
    assert_eq!(parents.len(), 2, "{parents:?}");
    assert!(parents.iter().any(|(k, _)| *k == EdgeKind::DerivedFrom));
    assert!(parents.iter().any(|(k, _)| *k == EdgeKind::GroundedOn));
    let children = store.children(&response).unwrap();
    assert_eq!(children.len(), 3);
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.nodes, 2 + 3 * 6);
    assert_eq!(report.edges, 1 + 3 * 8);
}

#[test]
fn writing_the_same_batch_twice_leaves_one_copy() {
    let (_dir, store) = open_with_records(0);
    let batch = record(&plan(), 7);
    let first = store.append(&batch).unwrap();
    assert_eq!((first.nodes_written, first.edges_written), (6, 8));
    let second = store.append(&batch).unwrap();
    assert_eq!(second.nodes_written, 0);
    assert_eq!(second.nodes_existing, 6);
    assert_eq!(second.edges_written, 0);
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.nodes, report.edges), (2 + 6, 1 + 8));
    let responses: Vec<_> = store
        .nodes_of_plan(&plan(), Some(NodeKind::Response), None)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(responses, vec![response_id(&plan(), 7)]);
}

#[test]
fn cycle_closing_edges_are_refused_and_nothing_is_applied() {
    let (_dir, store) = open_with_records(1);
    let input = NodeId::derive(&plan(), &["unit", "0", "input"]);
    let judgement = NodeId::derive(&plan(), &["unit", "0", "judgement"]);
    // judgement descends from input; an edge judgement -> input closes a cycle
    let extra = simple_node("n-extra", NodeKind::ReviewDecision);
    let batch = LineageBatch {
        nodes: vec![extra.clone()],
        edges: vec![
            Edge::new(&input, &extra.id, EdgeKind::ReviewedBy),
            Edge::new(&judgement, &input, EdgeKind::DerivedFrom),
        ],
        status_changes: vec![],
    };
    let err = store.append(&batch).unwrap_err();
    assert!(matches!(err, LineageError::Cycle { .. }), "{err}");
    assert!(err.to_string().contains("would close a cycle"), "{err}");
    assert!(
        store.node(&extra.id).unwrap().is_none(),
        "a refused batch wrote a node"
    );

    let self_loop = LineageBatch {
        edges: vec![Edge::new(&input, &input, EdgeKind::DerivedFrom)],
        ..Default::default()
    };
    assert!(matches!(
        store.append(&self_loop),
        Err(LineageError::Cycle { .. })
    ));

    // a cycle made only of the batch's own new edges
    let (a, b) = (
        simple_node("n-a", NodeKind::Scenario),
        simple_node("n-b", NodeKind::Scenario),
    );
    let inside = LineageBatch {
        nodes: vec![a.clone(), b.clone()],
        edges: vec![
            Edge::new(&a.id, &b.id, EdgeKind::DerivedFrom),
            Edge::new(&b.id, &a.id, EdgeKind::DerivedFrom),
        ],
        status_changes: vec![],
    };
    assert!(matches!(
        store.append(&inside),
        Err(LineageError::Cycle { .. })
    ));
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn edges_to_unknown_nodes_are_refused() {
    let (_dir, store) = open_with_records(1);
    let batch = LineageBatch {
        edges: vec![Edge::new(
            &response_id(&plan(), 0),
            &NodeId::new("n-nowhere"),
            EdgeKind::JudgedBy,
        )],
        ..Default::default()
    };
    let err = store.append(&batch).unwrap_err();
    assert!(err.to_string().contains("n-nowhere"), "{err}");
}

#[test]
fn walks_respect_depth_and_limit() {
    let (_dir, store) = open_with_records(2);
    let response = response_id(&plan(), 0);
    let all = store.ancestors(&response, Walk::default()).unwrap();
    let kinds: Vec<NodeKind> = all
        .iter()
        .map(|r| store.require(&r.id).unwrap().kind)
        .collect();
    assert!(
        kinds.contains(&NodeKind::Plan),
        "ancestors reach the plan: {kinds:?}"
    );
    assert!(kinds.contains(&NodeKind::TemplateInstance));
    let near = store
        .ancestors(
            &response,
            Walk {
                max_depth: 1,
                limit: 100,
            },
        )
        .unwrap();
    assert!(near.iter().all(|r| r.depth == 1));
    assert_eq!(near.len(), 2);
    let capped = store
        .ancestors(
            &response,
            Walk {
                max_depth: 10,
                limit: 1,
            },
        )
        .unwrap();
    assert_eq!(capped.len(), 1);
    let below = store.descendants(&response, Walk::default()).unwrap();
    assert_eq!(below.len(), 3);
}

#[test]
fn status_changes_move_the_index_and_versions_chain() {
    let (_dir, store) = open_with_records(1);
    let old = response_id(&plan(), 0);
    let new = simple_node("n-v2", NodeKind::Response);
    store
        .append(&LineageBatch {
            nodes: vec![new.clone()],
            edges: vec![Edge::new(&old, &new.id, EdgeKind::Supersedes)],
            status_changes: vec![
                (old.clone(), NodeStatus::Superseded),
                (new.id.clone(), NodeStatus::Accepted),
            ],
        })
        .unwrap();
    let accepted: Vec<_> = store
        .nodes_of_plan(
            &plan(),
            Some(NodeKind::Response),
            Some(NodeStatus::Accepted),
        )
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(accepted, vec![new.id.clone()]);
    assert_eq!(
        store.require(&old).unwrap().status,
        NodeStatus::Superseded,
        "old version stays readable"
    );
    assert_eq!(store.current_version(&old).unwrap(), new.id);
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn a_second_opener_is_told_who_owns_the_store() {
    let (dir, store) = open_with_records(0);
    let err = LineageStore::open(dir.path().join("store")).unwrap_err();
    assert!(matches!(err, LineageError::InUse { .. }), "{err}");
    assert!(
        err.to_string().contains(&std::process::id().to_string()),
        "{err}"
    );
    drop(store);
    LineageStore::open(dir.path().join("store")).expect("reopens once released");
}

#[test]
fn dumps_round_trip_into_an_empty_store_only() {
    let (dir, store) = open_with_records(20);
    let dump = dir.path().join("lineage.dump");
    let exported = store.export_dump(&dump).unwrap();
    assert!(exported.entries > 0);
    let restored = LineageStore::open(dir.path().join("restored")).unwrap();
    assert_eq!(
        restored.import_dump(&dump).unwrap().entries,
        exported.entries
    );
    let report = restored.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.nodes, 2 + 20 * 6);
    assert_eq!(
        restored.require(&response_id(&plan(), 19)).unwrap(),
        store.require(&response_id(&plan(), 19)).unwrap()
    );
    let err = restored.import_dump(&dump).unwrap_err();
    assert!(matches!(err, LineageError::NotEmpty { .. }), "{err}");

    // a truncated dump is refused whole
    let bytes = std::fs::read(&dump).unwrap();
    let cut = dir.path().join("cut.dump");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let empty = LineageStore::open(dir.path().join("empty")).unwrap();
    assert!(empty.import_dump(&cut).is_err());
    assert!(empty.check().unwrap().nodes == 0);
}

#[test]
fn plan_graph_orders_groups_and_renders() {
    let (_dir, store) = open_with_records(4);
    let graph = PlanGraph::load(&store, &plan()).unwrap();
    assert_eq!(graph.node_count(), 2 + 4 * 6);
    let order = graph.topological_order().unwrap();
    let pos = |id: &NodeId| order.iter().position(|o| o == id).unwrap();
    let input = NodeId::derive(&plan(), &["unit", "2", "input"]);
    assert!(pos(&input) < pos(&response_id(&plan(), 2)));
    // each record (6 nodes) is its own lineage group: neither the plan nor the
    // glossary term they are all grounded on joins them
    let groups = graph.lineage_groups();
    assert_eq!(groups.len(), 4 + 1, "{groups:?}");
    assert_eq!(
        groups.iter().filter(|g| g.len() == 6).count(),
        4,
        "{groups:?}"
    );
    let dot = graph.to_dot();
    assert!(dot.starts_with("digraph lineage"));
    assert!(dot.contains("judged_by"));
    let json = graph.to_json();
    assert_eq!(json["edges"].as_array().unwrap().len(), 1 + 4 * 8);
}

#[test]
fn record_trace_is_reconstructed_from_the_dag() {
    let (_dir, store) = open_with_records(2);
    let response = response_id(&plan(), 1);
    let trace = store.record_trace(&response).unwrap();
    let input = NodeId::derive(&plan(), &["unit", "1", "input"]);
    assert_eq!(trace.parent_id.as_deref(), Some(input.as_str()));
    let names: Vec<&str> = trace
        .processing_steps
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    // from the plan down to the response, then the decisions about it
    assert_eq!(names.first(), Some(&"plan_submitted"), "{names:?}");
    let pos = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("{name} missing: {names:?}"))
    };
    assert!(pos("template_instantiation") < pos("diversity_expansion"));
    assert!(pos("diversity_expansion") < pos("response_generation"));
    assert!(pos("response_generation") < pos("quality_filter"));
    assert!(pos("response_generation") < pos("deduplication"));
    assert!(pos("response_generation") < pos("packaging"));
    assert!(
        trace
            .processing_steps
            .iter()
            .all(|s| s.timestamp.ends_with('Z'))
    );
    // the trace serialises into the 3.1 schema's shape
    let json = serde_json::to_value(&trace).unwrap();
    assert!(json["processing_steps"][0]["params"].is_object());
}

#[test]
fn no_lineage_group_spans_two_splits() {
    use seedling_coordinator::dataset::splits::{Group, assign_splits};
    let (_dir, store) = open_with_records(30);
    // record 5 is a near duplicate of record 4: the two must land together
    let dup = NodeId::derive(&plan(), &["unit", "5", "input"]);
    let survivor = NodeId::derive(&plan(), &["unit", "4", "input"]);
    store
        .append(&LineageBatch {
            edges: vec![Edge::new(&survivor, &dup, EdgeKind::DuplicateOf)],
            ..Default::default()
        })
        .unwrap();
    let graph = PlanGraph::load(&store, &plan()).unwrap();
    let groups = graph.lineage_groups();
    let as_groups: Vec<Group> = groups
        .iter()
        .map(|members| Group {
            id: members[0].to_string(),
            subdomain: "all".into(),
            records: members.len(),
        })
        .collect();
    let assignment = assign_splits(&as_groups, [0.8, 0.1, 0.1], 3);
    let split_of = |id: &NodeId| {
        let group = groups.iter().find(|g| g.contains(id)).unwrap();
        assignment[group[0].as_str()]
    };
    // every derivation or duplicate edge between records stays inside one split
    let json = graph.to_json();
    for edge in json["edges"].as_array().unwrap() {
        let kind = edge["kind"].as_str().unwrap();
        let parent = NodeId::new(edge["parent"].as_str().unwrap());
        let child = NodeId::new(edge["child"].as_str().unwrap());
        let parent_kind = store.require(&parent).unwrap().kind;
        if kind == "grounded_on" || parent_kind == NodeKind::Plan {
            continue; // shared grounding joins no group
        }
        assert_eq!(
            split_of(&parent),
            split_of(&child),
            "{parent} -{kind}-> {child}"
        );
    }
    assert_eq!(
        split_of(&response_id(&plan(), 4)),
        split_of(&response_id(&plan(), 5))
    );
    let splits: std::collections::HashSet<_> = assignment.values().collect();
    assert!(
        splits.len() >= 2,
        "30 records should spread over several splits"
    );
}

#[test]
fn plans_lists_each_plan_once() {
    let (_dir, store) = open_with_records(3);
    let other = PlanId::new("p-other");
    store.append(&plan_roots(&other)).unwrap();
    store.append(&records(&other, 0, 2)).unwrap();
    assert_eq!(store.plans().unwrap(), vec![other, plan()]);
    let empty = tempfile::tempdir().unwrap();
    assert!(
        LineageStore::open(empty.path())
            .unwrap()
            .plans()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_index_files_plans_and_records_and_an_attempts_steps_are_reached_below_them() {
    let (_dir, store) = open_with_records(2);
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    // Per record: template instance, generated input, verdict and dedup
    // decision are left out; plan root, term, response and split are filed.
    assert_eq!(report.nodes, 2 + 2 * 6);
    assert_eq!(report.index_entries, 2 + 2 * 2);
    let listed: Vec<NodeKind> = store
        .plan_nodes(&plan())
        .unwrap()
        .iter()
        .map(|node| node.kind)
        .collect();
    assert_eq!(listed.len(), 2 + 2 * 6, "{listed:?}");
    for kind in [
        NodeKind::TemplateInstance,
        NodeKind::GeneratedInput,
        NodeKind::Judgement,
    ] {
        assert_eq!(listed.iter().filter(|k| **k == kind).count(), 2, "{kind}");
    }

    // A step with no parent would be out of every listing: check says so.
    let stray = simple_node("n-stray-input", NodeKind::GeneratedInput);
    store
        .append(&LineageBatch {
            nodes: vec![stray],
            ..Default::default()
        })
        .unwrap();
    let problems = store.check().unwrap().problems;
    assert!(
        problems
            .iter()
            .any(|p| p.contains("n-stray-input") && p.contains("no parent in its plan")),
        "{problems:?}"
    );
}

#[test]
fn a_damaged_store_file_is_named_with_the_dump_that_restores_it() {
    let (dir, store) = open_with_records(200);
    drop(store);
    let seedling = |args: &[&str]| seedling_tests::seedling(args);
    let store_dir = dir.path().join("store").to_str().unwrap().to_string();
    let backup = tempfile::tempdir().unwrap();
    let dump = backup.path().join("lineage.dump");
    let (ok, text) = seedling(&[
        "store",
        "export",
        "--store",
        &store_dir,
        "--out",
        dump.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    // Flip a byte in every 4 KiB page of sled's file after the first.
    let db = dir.path().join("store/db");
    let mut bytes = std::fs::read(&db).unwrap();
    for at in (4096..bytes.len()).step_by(4096) {
        bytes[at] ^= 0x5a;
    }
    std::fs::write(&db, bytes).unwrap();
    let (ok, text) = seedling(&["store", "check", "--store", &store_dir]);
    assert!(!ok, "a damaged store passed its check: {text}");
    assert!(
        text.contains("files are damaged") && text.contains("seedling store import"),
        "{text}"
    );
    // What the message says restores it.
    let restored = backup.path().join("restored");
    let (ok, text) = seedling(&[
        "store",
        "import",
        "--store",
        restored.to_str().unwrap(),
        dump.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let (ok, text) = seedling(&["store", "check", "--store", restored.to_str().unwrap()]);
    assert!(ok && text.contains("store ok"), "{text}");
}
