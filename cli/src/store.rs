//! `seedling store check|export|import` and `seedling lineage show|graph`:
//! the lineage store from the command line (against a local store directory
//! until the cluster serves these over gRPC).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use seedling_common::ids::{NodeId, PlanId};
use seedling_coordinator::lineage::{LineageStore, PlanGraph, lineage_report};

use crate::remote::Remote;

#[derive(Debug, Clone, Args)]
pub struct StoreArg {
    /// Lineage store directory, or the output directory of `seedling run`
    #[arg(long, env = "SEEDLING_STORE", default_value = "seedling-store")]
    pub store: PathBuf,
}

/// The store directory a user named: a run's output directory keeps it
/// under `.seedling/`, anything else is the store itself.
pub fn store_path(dir: &Path) -> PathBuf {
    let in_run = crate::run::store_dir(dir);
    if in_run.exists() {
        in_run
    } else {
        dir.to_path_buf()
    }
}

impl StoreArg {
    /// The store directory itself (see [`store_path`]).
    pub fn path(&self) -> PathBuf {
        store_path(&self.store)
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
    /// Plan id [default with --store: the store's only plan]
    pub plan: Option<String>,
    /// Lineage store directory or `seedling run` output directory; without
    /// it the dataset comes from the coordinator
    #[arg(long, env = "SEEDLING_STORE")]
    pub store: Option<PathBuf>,
    /// Directory to write the dataset into
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub remote: Remote,
}

/// The plan a user named, or the store's only plan.
pub fn plan_in(store: &LineageStore, named: Option<String>) -> anyhow::Result<PlanId> {
    if let Some(plan) = named {
        return Ok(PlanId::new(plan));
    }
    let plans = store.plans()?;
    match plans.as_slice() {
        [only] => Ok(only.clone()),
        [] => anyhow::bail!("the store holds no plan"),
        many => anyhow::bail!(
            "the store holds {} plans; name one with --plan: {}",
            many.len(),
            many.iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `seedling export`: package a plan's accepted records again, anywhere.
pub fn run_export(args: ExportArgs) -> anyhow::Result<()> {
    let Some(store) = args.store else {
        let plan = args
            .plan
            .context("name the plan id (seedling plan list), or give --store for a local store")?;
        return args
            .remote
            .block_on(crate::remote::export(&args.remote, &plan, &args.out));
    };
    let store = StoreArg { store }.open()?;
    let plan = plan_in(&store, args.plan)?;
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
        /// Lineage store directory or `seedling run` output directory;
        /// without it the coordinator answers
        #[arg(long, env = "SEEDLING_STORE")]
        store: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
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

pub fn run_lineage(command: LineageCommand) -> anyhow::Result<()> {
    match command {
        LineageCommand::Show {
            id,
            store,
            remote,
            depth,
            json,
        } => {
            let Some(store) = store else {
                return remote.block_on(crate::remote::lineage(&remote, &id, depth, json));
            };
            let store = StoreArg { store }.open()?;
            print!("{}", lineage_report(&store, &NodeId::new(id), depth, json)?);
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
