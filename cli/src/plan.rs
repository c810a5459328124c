//! `seedling plan check`: validate a plan file and show the stratified
//! allocation it asks for, before any model is loaded.

use std::path::PathBuf;

use clap::Subcommand;
use seedling_coordinator::plan::{allocate, load_plan};

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
}

pub fn run(command: PlanCommand) -> anyhow::Result<()> {
    match command {
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
            Ok(())
        }
    }
}
