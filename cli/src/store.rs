//! `seedling store check|export|import` and `seedling lineage show|graph`:
//! the lineage store from the command line (against a local store directory
//! until the cluster serves these over gRPC).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{Node, NodeKind};
use seedling_common::time::rfc3339_from_unix_ms;
use seedling_coordinator::lineage::{LineageStore, PlanGraph, Walk};

#[derive(Debug, Clone, Args)]
pub struct StoreArg {
    /// Lineage store directory, or the output directory of `seedling run`
    #[arg(long, env = "SEEDLING_STORE", default_value = "seedling-store")]
    pub store: PathBuf,
}

impl StoreArg {
    /// The store directory itself: a run's output directory keeps it under `.seedling/`.
    pub fn path(&self) -> PathBuf {
        let in_run = crate::run::store_dir(&self.store);
        if in_run.exists() {
            in_run
        } else {
            self.store.clone()
        }
    }

    pub fn open(&self) -> anyhow::Result<LineageStore> {
        let path = self.path();
        if !path.exists() {
            anyhow::bail!("lineage store {} does not exist", path.display());
        }
        Ok(LineageStore::open(&path)?)
    }
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Plan id [default: the store's only plan]
    pub plan: Option<String>,
    #[command(flatten)]
    pub store: StoreArg,
    /// Directory to write the dataset into
    #[arg(long)]
    pub out: PathBuf,
}

/// `seedling export`: package a plan's accepted records again, anywhere.
pub fn run_export(args: ExportArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let plan = match args.plan {
        Some(plan) => PlanId::new(plan),
        None => {
            let plans = store.plans()?;
            match plans.as_slice() {
                [only] => only.clone(),
                [] => anyhow::bail!("the store holds no plan"),
                many => anyhow::bail!(
                    "the store holds {} plans; name one: {}",
                    many.len(),
                    many.iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    };
    let summary = seedling_coordinator::dataset::export_dataset(&store, &plan, &args.out)?;
    let splits: Vec<String> = summary
        .per_split
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    println!(
        "dataset {} of plan {plan}: {} records ({}) in {}",
        summary.version,
        summary.records,
        splits.join(", "),
        summary.dir.display()
    );
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Verify every checksum and the DAG invariants
    Check(StoreArg),
    /// Write a versioned, compressed dump of the whole store
    Export {
        #[command(flatten)]
        store: StoreArg,
        /// Dump file to write
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a dump into an empty store
    Import {
        #[command(flatten)]
        store: StoreArg,
        /// Dump file to read
        dump: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum LineageCommand {
    /// A node, everything it came from, everything derived from it, every decision about it
    Show {
        /// Node or record id
        id: String,
        #[command(flatten)]
        store: StoreArg,
        /// How many levels to walk each way
        #[arg(long, default_value_t = 32)]
        depth: usize,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// A plan's whole lineage DAG as Graphviz DOT or JSON
    Graph {
        plan: String,
        #[command(flatten)]
        store: StoreArg,
        #[arg(long, value_parser = ["dot", "json"], default_value = "dot")]
        format: String,
    },
}

pub fn run_store(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Check(store) => {
            let report = store.open()?.check()?;
            println!(
                "{} nodes, {} edges, {} index entries",
                report.nodes, report.edges, report.index_entries
            );
            if report.is_ok() {
                println!(
                    "store ok: every checksum verified, edges mirrored, index complete, no cycle"
                );
                Ok(())
            } else {
                for problem in &report.problems {
                    println!("problem: {problem}");
                }
                anyhow::bail!(
                    "{} problems found in {}",
                    report.problems.len(),
                    store.store.display()
                )
            }
        }
        StoreCommand::Export { store, out } => {
            let summary = store.open()?.export_dump(&out)?;
            println!(
                "exported {} entries to {} ({} bytes)",
                summary.entries,
                out.display(),
                summary.bytes
            );
            Ok(())
        }
        StoreCommand::Import { store, dump } => {
            let opened = LineageStore::open(&store.store)?;
            let summary = opened.import_dump(&dump)?;
            let report = opened.check()?;
            anyhow::ensure!(
                report.is_ok(),
                "imported store fails its check: {:?}",
                report.problems
            );
            println!(
                "imported {} entries into {}: {} nodes, {} edges, check ok",
                summary.entries,
                store.store.display(),
                report.nodes,
                report.edges
            );
            Ok(())
        }
    }
}

fn is_decision(kind: NodeKind) -> bool {
    matches!(
        kind,
        NodeKind::Judgement
            | NodeKind::DedupDecision
            | NodeKind::ReviewDecision
            | NodeKind::SplitAssignment
            | NodeKind::Export
    )
}

fn line(node: &Node) -> String {
    format!(
        "{} {} [{}] status={} at {}",
        node.id,
        node.kind,
        node.step,
        node.status,
        rfc3339_from_unix_ms(node.created_at_ms)
    )
}

pub fn run_lineage(command: LineageCommand) -> anyhow::Result<()> {
    match command {
        LineageCommand::Show {
            id,
            store,
            depth,
            json,
        } => {
            let store = store.open()?;
            let id = NodeId::new(id);
            let node = store.require(&id)?;
            let walk = Walk {
                max_depth: depth,
                limit: 10_000,
            };
            let ancestors = store.ancestors(&id, walk)?;
            let descendants = store.descendants(&id, walk)?;
            let load = |reached: &[seedling_coordinator::lineage::Reached]| {
                reached
                    .iter()
                    .map(|r| store.require(&r.id).map(|n| (r.depth, r.via, n)))
                    .collect::<Result<Vec<_>, _>>()
            };
            let ancestors = load(&ancestors)?;
            let descendants = load(&descendants)?;
            let current = store.current_version(&id)?;
            if json {
                let walk_json = |list: &[(usize, seedling_common::lineage::EdgeKind, Node)]| {
                    list.iter()
                        .map(|(depth, via, node)| serde_json::json!({"depth": depth, "via": via, "node": node}))
                        .collect::<Vec<_>>()
                };
                let out = serde_json::json!({
                    "node": node,
                    "current_version": current,
                    "ancestors": walk_json(&ancestors),
                    "descendants": walk_json(&descendants),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            println!("{}", line(&node));
            println!("  plan: {}", node.plan);
            if current != id {
                println!("  superseded; current version: {current}");
            }
            if !node.params.is_empty() {
                println!(
                    "  params: {}",
                    serde_json::Value::Object(node.params.clone())
                );
            }
            if !node.body.is_null() {
                println!("  body: {}", node.body);
            }
            println!("ancestors ({}):", ancestors.len());
            for (depth, via, n) in &ancestors {
                println!("  {}{via:<13} {}", "  ".repeat(depth - 1), line(n));
            }
            println!("descendants ({}):", descendants.len());
            for (depth, via, n) in &descendants {
                println!("  {}{via:<13} {}", "  ".repeat(depth - 1), line(n));
            }
            let decisions: Vec<_> = descendants
                .iter()
                .filter(|(_, _, n)| is_decision(n.kind))
                .collect();
            println!("decisions ({}):", decisions.len());
            for (_, via, n) in decisions {
                println!("  {via:<13} {} {}: {}", n.kind, n.id, n.body);
            }
            Ok(())
        }
        LineageCommand::Graph {
            plan,
            store,
            format,
        } => {
            let store = store.open()?;
            let graph = PlanGraph::load(&store, &PlanId::new(plan.clone()))
                .with_context(|| format!("loading plan {plan}"))?;
            anyhow::ensure!(
                graph.node_count() > 0,
                "plan {plan} has no nodes in {}",
                store.dir().display()
            );
            match format.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&graph.to_json())?),
                _ => print!("{}", graph.to_dot()),
            }
            Ok(())
        }
    }
}
