//! `seedling review sample|serve|export|import`: human review of a run's
//! accepted records, in the browser or through JSONL files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use seedling_coordinator::lineage::LineageStore;
use seedling_coordinator::pipeline::PlanRun;
use seedling_coordinator::plan::Plan;
use seedling_coordinator::review::{
    BoundReview, Feedback, FeedbackSettings, ReviewSession, SampleSettings, ServeSettings,
    new_token,
};

use crate::store::{StoreArg, plan_in};

#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// Print the review sample: records per stratum for the confidence and margin asked, and the figures so far
    Sample {
        #[command(flatten)]
        target: Target,
        /// Print JSON (for scripts)
        #[arg(long)]
        json: bool,
    },
    /// Serve the review page (loopback by default) and print its URL
    Serve {
        #[command(flatten)]
        target: Target,
        /// Address to listen on; beyond loopback every request needs the token
        #[arg(long, default_value = "127.0.0.1:7480")]
        listen: SocketAddr,
        /// Token the page must present [default beyond loopback: a fresh random one, printed in the URL]
        #[arg(long, env = "SEEDLING_REVIEW_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Write the review sample as JSONL, for reviewing with other tools
    Export {
        #[command(flatten)]
        target: Target,
        /// File to write
        #[arg(long)]
        out: PathBuf,
    },
    /// Read decisions back from a JSONL file (all or nothing; errors name the line)
    Import {
        /// Decisions, one JSON object per line: id, record, reviewer, decision (accept|reject|edit), reason, note, input, response
        file: PathBuf,
        #[command(flatten)]
        target: Target,
    },
}

/// Which run, plan and sample.
#[derive(Debug, Args)]
pub struct Target {
    /// `seedling run` output directory, or a lineage store directory [default: seedling-out]
    dir: Option<PathBuf>,
    /// The same as DIR, as the other commands take it (DIR wins when both are given)
    #[arg(long, env = "SEEDLING_STORE")]
    store: Option<PathBuf>,
    /// Plan id [default: the store's only plan]
    #[arg(long)]
    plan: Option<String>,
    /// Confidence of each stratum's acceptance interval
    #[arg(long, default_value_t = 0.95)]
    confidence: f64,
    /// Half-width of that interval (0.1 is +-10 points)
    #[arg(long, default_value_t = 0.10)]
    margin: f64,
    /// Fewest records per stratum (all when a stratum has fewer)
    #[arg(long, default_value_t = 5)]
    minimum: usize,
    /// Stratum fields the sample is split by
    #[arg(long, value_delimiter = ',', default_value = "subdomain,task_type")]
    by: Vec<String>,
    /// Review only records made after review feedback (the round `seedling run --feedback` made)
    #[arg(long)]
    after_feedback: bool,
}

impl Target {
    /// The directory named, as DIR or --store.
    fn dir(&self) -> PathBuf {
        self.dir
            .clone()
            .or_else(|| self.store.clone())
            .unwrap_or_else(|| PathBuf::from("seedling-out"))
    }

    fn open(&self) -> anyhow::Result<ReviewSession> {
        let store = Arc::new(StoreArg { store: self.dir() }.open()?);
        let plan = plan_in(&store, self.plan.clone())?;
        let settings = SampleSettings {
            confidence: self.confidence,
            margin: self.margin,
            minimum: self.minimum,
            by: self.by.clone(),
            after_feedback: self.after_feedback,
        };
        Ok(ReviewSession::open(store, plan, settings)?)
    }
}

pub fn run(command: ReviewCommand) -> anyhow::Result<()> {
    match command {
        ReviewCommand::Sample { target, json } => sample(&target, json),
        ReviewCommand::Serve {
            target,
            listen,
            token,
        } => serve(&target, listen, token),
        ReviewCommand::Export { target, out } => {
            let session = target.open()?;
            let text = session.export_sample()?;
            std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "wrote {} sampled records of plan {} to {}",
                session.sample().total(),
                session.plan(),
                out.display()
            );
            Ok(())
        }
        ReviewCommand::Import { target, file } => {
            let mut session = target.open()?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let summary = session.import(&file.display().to_string(), &text)?;
            println!(
                "stored {} decisions ({} already stored); {}",
                summary.stored,
                summary.already_stored,
                session.figures().progress_line()
            );
            Ok(())
        }
    }
}

fn sample(target: &Target, json: bool) -> anyhow::Result<()> {
    let session = target.open()?;
    let plan = session.sample();
    let figures = session.figures();
    if json {
        let out = serde_json::json!({ "sample": plan, "figures": figures });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let s = &plan.settings;
    println!(
        "review sample of plan {}: {} of {} records, for +-{:.0} points at {:.0}% per stratum (at least {} each), split by {}",
        session.plan(),
        plan.total(),
        plan.population(),
        s.margin * 100.0,
        s.confidence * 100.0,
        s.minimum,
        s.by.join(", ")
    );
    println!(
        "{:<48} {:>8} {:>7} {:>9}  acceptance",
        "stratum", "records", "sample", "reviewed"
    );
    for (stratum, f) in plan.strata.iter().zip(&figures.strata) {
        let acceptance = if f.reviewed == 0 {
            "-".to_string()
        } else {
            f.acceptance.to_string()
        };
        println!(
            "{:<48} {:>8} {:>7} {:>9}  {acceptance}",
            stratum.stratum, stratum.population, stratum.size, f.reviewed
        );
    }
    println!("{}", figures.progress_line());
    for a in &figures.agreement {
        println!(
            "agreement {} & {}: {} of {} alike, kappa {}",
            a.reviewers.0,
            a.reviewers.1,
            a.agreed,
            a.items,
            a.kappa.map_or("-".into(), |k| format!("{k:.2}"))
        );
    }
    Ok(())
}

fn serve(target: &Target, listen: SocketAddr, token: Option<String>) -> anyhow::Result<()> {
    let session = target.open()?;
    let token = token.or_else(|| (!listen.ip().is_loopback()).then(new_token));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let plan = session.plan().clone();
        let total = session.sample().total();
        let bound = BoundReview::bind(
            session,
            ServeSettings {
                listen,
                token: token.clone(),
            },
        )
        .await?;
        let address = bound.address();
        let host = if address.ip().is_unspecified() {
            format!("<this machine's address>:{}", address.port())
        } else {
            address.to_string()
        };
        let fragment = token.map(|t| format!("#token={t}")).unwrap_or_default();
        println!("review page for plan {plan} ({total} sampled records): http://{host}/{fragment}");
        println!(
            "every decision is stored as it is made; Ctrl-C stops the page. Then: seedling export --store {dir} --out {dir}",
            dir = target.dir().display()
        );
        bound
            .serve(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        anyhow::Ok(())
    })
}

/// `seedling run --feedback`: reads the plan's review, says what it changes,
/// and hands it to the run.
pub fn take_feedback(
    store: &LineageStore,
    run: &mut PlanRun,
    plan: &Plan,
    pause_below: f64,
    out: &Path,
) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&pause_below) {
        anyhow::bail!("--pause-below {pause_below} must be between 0 and 1");
    }
    let settings = FeedbackSettings {
        pause_below,
        ..FeedbackSettings::default()
    };
    let feedback = Feedback::gather(store, run.plan_id(), &settings, plan.quality.min_score)?;
    if feedback.groups.is_empty() {
        anyhow::bail!(
            "--feedback: plan {} has no review decisions in {}; review first (seedling review serve {})",
            run.plan_id(),
            out.display(),
            out.display()
        );
    }
    eprintln!("feedback from human review:");
    for group in &feedback.groups {
        let what = if group.paused {
            format!("paused (acceptance wholly below {pause_below:.2})")
        } else {
            let rejected = group.counter_examples.len();
            format!(
                "prompts carry {rejected} rejected record(s) as counter-examples and {} approved as examples",
                group.examples.len()
            )
        };
        eprintln!(
            "  {} / {}: acceptance {} over {} reviewed; {what} (lineage node {})",
            group.subdomain,
            group.task_type,
            group.acceptance(),
            group.reviewed,
            group.node
        );
    }
    if let Some(checks) = &feedback.checks {
        let auc = |c: &seedling_coordinator::quality::calibration::Calibration| {
            c.auc.map_or("-".into(), |a| format!("{a:.2}"))
        };
        let missed: Vec<String> = checks
            .missed
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        eprintln!(
            "  the automatic checks against {} reviewed records: quality score AUC {} (accuracy {:.2} at the plan's threshold){}; passed but rejected by reviewers: {}",
            checks.reviewed,
            auc(&checks.quality_score),
            checks.quality_score.accuracy,
            checks
                .judge
                .as_ref()
                .map(|j| format!(", judge AUC {}", auc(j)))
                .unwrap_or_default(),
            if missed.is_empty() {
                "none".into()
            } else {
                missed.join(", ")
            }
        );
    }
    run.apply_feedback(feedback)?;
    Ok(())
}
