//! `seedling plan check`: validate a plan file and show the stratified
//! allocation it asks for, before any model is loaded. `seedling plan
//! status`: where a plan stands, from the coordinator or from the snapshot a
//! local run keeps. `submit|list|watch|cancel`: the cluster's plans.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use seedling_common::cost::RunCost;
use seedling_coordinator::plan::{Plan, allocate, load_plan};

use crate::remote::Remote;

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Validate a plan file and print its accepted-record quota per stratum
    Check {
        /// The plan (TOML)
        plan: PathBuf,
        /// Print the allocation as JSON
        #[arg(long)]
        json: bool,
        /// Also list strata whose quota rounds to zero
        #[arg(long)]
        all: bool,
    },
    /// Show a plan's progress: the acceptance funnel and every stratum's
    /// quota. A plan id asks the coordinator; a directory reads the snapshot
    /// `seedling run` keeps there (also while it runs)
    Status {
        /// Plan id, or a `seedling run` output directory
        #[arg(default_value = "seedling-out")]
        plan: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Submit a plan to the cluster's coordinator
    Submit {
        /// The plan (TOML); the reference files it names are sent with it
        plan: PathBuf,
        /// Accepted records to produce, overriding the plan's target
        #[arg(long)]
        target: Option<u64>,
        /// Follow its progress until it ends
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the coordinator's plans
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Follow a submitted plan until it ends
    Watch {
        plan: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop a plan; its accepted records stay in the store
    Cancel {
        plan: String,
        #[command(flatten)]
        remote: Remote,
    },
}

fn status(dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let path = crate::run::progress_file(dir);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "no run in {} ({}: {e}); start one with seedling run PLAN --out {}",
            dir.display(),
            path.display(),
            dir.display()
        )
    })?;
    let snapshot: serde_json::Value = serde_json::from_str(&text)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
        return Ok(());
    }
    let p = &snapshot["progress"];
    let pid = snapshot["pid"].as_u64().unwrap_or(0);
    let live = !snapshot["finished"].as_bool().unwrap_or(false)
        && std::path::Path::new(&format!("/proc/{pid}")).exists();
    let state = if snapshot["finished"].as_bool() == Some(true) {
        format!(
            "finished, dataset {}",
            snapshot["dataset"].as_str().unwrap_or("?")
        )
    } else if live {
        format!("running (pid {pid})")
    } else {
        "stopped before the end: run the same command again to continue".to_string()
    };
    println!(
        "plan {} in {}: {state}; updated {}",
        p["plan"].as_str().unwrap_or("?"),
        dir.display(),
        snapshot["updated_at"].as_str().unwrap_or("?")
    );
    let count = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    println!(
        "  [{}] accepted {}/{}, {} attempts, {} in flight, {} tokens",
        p["phase"].as_str().unwrap_or("?"),
        count(&p["accepted"]),
        count(&p["target"]),
        count(&p["attempts"]),
        count(&p["in_flight"]),
        count(&p["generated_tokens"])
    );
    let rejected: std::collections::BTreeMap<String, u64> =
        serde_json::from_value(p["rejected"].clone()).unwrap_or_default();
    println!("  funnel:");
    println!("    {:>6}  attempted", count(&p["attempts"]));
    for row in seedling_coordinator::quality::funnel::funnel(count(&p["attempts"]), &rejected) {
        println!("    {:>6}  {}", row.count, row.stage);
    }
    if !rejected.is_empty() {
        let reasons: Vec<String> = rejected.iter().map(|(r, n)| format!("{r} {n}")).collect();
        println!("  rejected: {}", reasons.join(", "));
    }
    // Diversity of what was accepted so far (section 3.3), kept current by the run.
    let diversity = |d: &serde_json::Value| {
        let dispersion = d["dispersion"]
            .as_f64()
            .map_or("-".to_string(), |x| format!("{x:.3}"));
        format!(
            "distinct-1 {:.3} · distinct-2 {:.3} · embedding dispersion {dispersion}",
            d["distinct_1"].as_f64().unwrap_or(0.0),
            d["distinct_2"].as_f64().unwrap_or(0.0),
        )
    };
    if p["diversity"].is_object() {
        println!("  accepted inputs: {}", diversity(&p["diversity"]));
    }
    // Where the run's time went, by the units that reported so far.
    let cost =
        |key: &str| -> RunCost { serde_json::from_value(p[key].clone()).unwrap_or_default() };
    let session = cost("session_cost");
    if !session.is_empty() {
        let wall_ms = (p["elapsed_s"].as_f64().unwrap_or(0.0) * 1e3) as u64;
        println!(
            "  this run's worker time, by the units that reported (idle includes work on \
             attempts withdrawn when their stratum filled): {}",
            session.split(wall_ms).describe()
        );
    }
    let plan_cost = cost("cost");
    if count(&p["accepted"]) > 0 && !plan_cost.is_empty() {
        println!("  per accepted record:");
        for line in plan_cost.per_record_lines(count(&p["accepted"])) {
            println!("    {line}");
        }
    }
    println!("  strata (accepted/quota, attempts; diversity of the stratum's inputs):");
    for line in p["strata"].as_array().into_iter().flatten() {
        if count(&line["quota"]) == 0 {
            continue;
        }
        let mark = if line["exhausted"].as_bool() == Some(true) {
            "  (budget spent)"
        } else {
            ""
        };
        let spread = if count(&line["accepted"]) >= 2 && line["diversity"].is_object() {
            format!("  [{}]", diversity(&line["diversity"]))
        } else {
            String::new()
        };
        println!(
            "    {:>3}/{:<3} {:>4}  {}{mark}{spread}",
            count(&line["accepted"]),
            count(&line["quota"]),
            count(&line["attempts"]),
            line["stratum"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

pub fn run(command: PlanCommand) -> anyhow::Result<()> {
    match command {
        PlanCommand::Status { plan, json, remote } => {
            let dir = std::path::Path::new(&plan);
            if dir.is_dir() {
                status(dir, json)
            } else if plan == "seedling-out" {
                anyhow::bail!(
                    "no run in seedling-out; name a plan id (seedling plan list) or a run directory"
                )
            } else {
                remote.block_on(crate::remote::status(&remote, &plan, json))
            }
        }
        PlanCommand::Submit {
            plan,
            target,
            watch,
            remote,
        } => {
            check_target_flag(target)?;
            remote.block_on(crate::remote::submit(&remote, &plan, target, watch))
        }
        PlanCommand::List { json, remote } => remote.block_on(crate::remote::list(&remote, json)),
        PlanCommand::Watch { plan, remote } => {
            remote.block_on(crate::remote::watch(&remote, &plan))
        }
        PlanCommand::Cancel { plan, remote } => {
            remote.block_on(crate::remote::cancel(&remote, &plan))
        }
        PlanCommand::Check { plan, json, all } => {
            let parsed = load_plan(&plan)?;
            let quotas = allocate(&parsed);
            if json {
                println!("{}", serde_json::to_string_pretty(&quotas)?);
                return Ok(());
            }
            let non_zero = quotas.iter().filter(|q| q.quota > 0).count();
            println!(
                "plan {} ok: domain {:?}, target {} accepted records over {} strata ({} with a quota)",
                plan.display(),
                parsed.domain.name,
                parsed.target.accepted,
                quotas.len(),
                non_zero
            );
            println!(
                "{:>5}  subdomain / task type / persona / language / adversarial",
                "quota"
            );
            for q in quotas.iter().filter(|q| all || q.quota > 0) {
                let s = &q.stratum;
                println!(
                    "{:>5}  {} / {} / {} / {} / {}",
                    q.quota,
                    s.subdomain,
                    s.task_type,
                    s.persona,
                    s.language,
                    if s.adversarial {
                        "adversarial"
                    } else {
                        "regular"
                    }
                );
            }
            print_passages(&plan, &parsed)
        }
    }
}

/// What the plan's fact-first attempts start from, per subdomain, and the
/// subdomains that have nothing to start from.
fn print_passages(path: &Path, plan: &Plan) -> anyhow::Result<()> {
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let passages = seedling_coordinator::pipeline::passages(plan, base_dir)?;
    println!(
        "passages of the plan's own knowledge that attempts start from (methods.fact_first = {}):",
        plan.methods.fact_first
    );
    for (subdomain, count) in &passages {
        if count.passages == 0 {
            println!("  {subdomain}: none; its questions are written without one");
        } else {
            println!(
                "  {subdomain}: {} ({} state a figure)",
                count.passages, count.with_figures
            );
        }
    }
    Ok(())
}

/// A `--target` override meets the same limits as a plan's own target,
/// checked before anything loads.
pub fn check_target_flag(target: Option<u64>) -> anyhow::Result<()> {
    match target {
        Some(target) => {
            seedling_coordinator::plan::check_target(i64::try_from(target).unwrap_or(i64::MAX))
                .map_err(|message| anyhow::anyhow!("--target {message}"))
        }
        None => Ok(()),
    }
}
