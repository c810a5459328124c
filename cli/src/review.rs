//! `seedling review sample|serve|export|import`: human review of a run's
//! accepted records, in the browser or through JSONL files, on a local
//! store or on a plan a running coordinator holds (`--coordinator`). Both
//! are a review desk; the commands and the page only speak to it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use seedling_common::ids::PlanId;
use seedling_coordinator::cluster::{review_answer, review_refusal, review_request};
use seedling_coordinator::lineage::LineageStore;
use seedling_coordinator::pipeline::PlanRun;
use seedling_coordinator::plan::Plan;
use seedling_coordinator::review::{
    BoundReview, Desk, DeskCall, DeskRefusal, DeskReply, Feedback, FeedbackSettings, RefusalKind,
    ReviewSession, SampleOverview, SampleSettings, ServeSettings, SessionDesk, new_token,
    share_shown,
};

use crate::remote::{Client, Remote};
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
    /// `seedling run` output directory, or a lineage store directory [default: seedling-out, or the coordinator when --coordinator is given]
    dir: Option<PathBuf>,
    /// The same as DIR, as the other commands take it (DIR wins when both are given)
    #[arg(long, env = "SEEDLING_STORE")]
    store: Option<PathBuf>,
    /// Review a plan a running coordinator holds, at this API address (unless DIR or --store is given)
    #[arg(long, env = "SEEDLING_COORDINATOR")]
    coordinator: Option<String>,
    /// The coordinator's bearer token; recording decisions needs its operator token
    #[arg(long, env = "SEEDLING_TOKEN", hide_env_values = true)]
    coordinator_token: Option<String>,
    /// PEM certificate to trust for an https:// coordinator (its CA or itself)
    #[arg(long, env = "SEEDLING_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Plan id [default: the store's, or the coordinator's, only plan]
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
    /// Also review a sample of what the automatic checks rejected, one stratum per check: measures each check's precision and recall against people, and changes nothing in the dataset
    #[arg(long)]
    checks: bool,
}

/// Where the reviewed plan lives.
enum Source {
    Store(PathBuf),
    Coordinator(Remote),
}

impl Target {
    /// A local directory when one is named, else the coordinator when one
    /// is named, else `seedling-out`.
    fn source(&self) -> Source {
        let named = self.dir.clone().or_else(|| self.store.clone());
        match (named, &self.coordinator) {
            (Some(dir), _) => Source::Store(dir),
            (None, Some(coordinator)) => Source::Coordinator(Remote {
                coordinator: coordinator.clone(),
                token: self.coordinator_token.clone(),
                tls_ca: self.tls_ca.clone(),
            }),
            (None, None) => Source::Store(PathBuf::from("seedling-out")),
        }
    }

    fn settings(&self) -> SampleSettings {
        SampleSettings {
            confidence: self.confidence,
            margin: self.margin,
            minimum: self.minimum,
            by: self.by.clone(),
            after_feedback: self.after_feedback,
            checks: self.checks,
        }
    }

    /// The review desk of the plan named, and its sample, drawn now.
    async fn desk(&self) -> anyhow::Result<(Arc<dyn Desk>, SampleOverview)> {
        let desk: Arc<dyn Desk> = match self.source() {
            Source::Store(dir) => {
                let store = Arc::new(StoreArg { store: dir }.open()?);
                let plan = plan_in(&store, self.plan.clone())?;
                Arc::new(SessionDesk::new(ReviewSession::open(
                    store,
                    plan,
                    self.settings(),
                )?))
            }
            Source::Coordinator(remote) => {
                let mut desk = CoordinatorDesk {
                    client: remote.client().await?,
                    plan: self.plan.clone().map(PlanId::new),
                    settings: self.settings(),
                    address: remote.coordinator.clone(),
                };
                let overview = overview(&desk).await?;
                // Stay on this plan, whatever else the coordinator takes on.
                desk.plan = Some(overview.plan.clone());
                return Ok((Arc::new(desk), overview));
            }
        };
        let overview = overview(desk.as_ref()).await?;
        Ok((desk, overview))
    }

    /// How to export the reviewed dataset, for the page's closing hint.
    fn export_hint(&self, plan: &PlanId) -> String {
        match self.source() {
            Source::Store(dir) => format!(
                "seedling export --store {dir} --out {dir}",
                dir = dir.display()
            ),
            Source::Coordinator(remote) => format!(
                "seedling export {plan} --coordinator {} --out DIR",
                remote.coordinator
            ),
        }
    }
}

async fn overview(desk: &dyn Desk) -> anyhow::Result<SampleOverview> {
    let answer = desk.call(DeskCall::Sample).await?;
    serde_json::from_value(answer.into_json()).context("reading the review sample's overview")
}

/// The review of a plan a coordinator holds, asked over its API.
struct CoordinatorDesk {
    client: Client,
    plan: Option<PlanId>,
    settings: SampleSettings,
    address: String,
}

impl Desk for CoordinatorDesk {
    fn call(&self, call: DeskCall) -> DeskReply<'_> {
        let mut client = self.client.clone();
        let request = review_request(self.plan.as_ref(), &self.settings, call);
        Box::pin(async move {
            let reply = client.review(request).await.map_err(|status| {
                let mut refusal = review_refusal(&status);
                if refusal.kind == RefusalKind::Failed {
                    refusal.message =
                        format!("the coordinator at {}: {}", self.address, refusal.message);
                }
                refusal
            })?;
            review_answer(reply.into_inner()).map_err(|message| DeskRefusal {
                kind: RefusalKind::Failed,
                message,
            })
        })
    }
}

pub fn run(command: ReviewCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            ReviewCommand::Sample { target, json } => sample(&target, json).await,
            ReviewCommand::Serve {
                target,
                listen,
                token,
            } => serve(&target, listen, token).await,
            ReviewCommand::Export { target, out } => {
                let (desk, overview) = target.desk().await?;
                let text = desk.call(DeskCall::ExportSample).await?.into_text();
                std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
                println!(
                    "wrote {} sampled records of plan {} to {}",
                    overview.figures.to_review(),
                    overview.plan,
                    out.display()
                );
                Ok(())
            }
            ReviewCommand::Import { target, file } => {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let (desk, _) = target.desk().await?;
                let call = DeskCall::Import {
                    source_name: file.display().to_string(),
                    text,
                };
                let summary = desk.call(call).await?.into_json();
                println!(
                    "stored {} decisions ({} already stored); {}",
                    summary["stored"],
                    summary["already_stored"],
                    summary["progress"].as_str().unwrap_or_default()
                );
                Ok(())
            }
        }
    })
}

async fn sample(target: &Target, json: bool) -> anyhow::Result<()> {
    let (_, overview) = target.desk().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&overview)?);
        return Ok(());
    }
    let (s, figures) = (&overview.settings, &overview.figures);
    println!(
        "review sample of plan {}: {} of {} records, for +-{:.0} points at {:.0}% per stratum (at least {} each), split by {}",
        overview.plan,
        figures.sample,
        figures.population,
        s.margin * 100.0,
        s.confidence * 100.0,
        s.minimum,
        s.by.join(", ")
    );
    println!(
        "{:<48} {:>8} {:>7} {:>9}  acceptance",
        "stratum", "records", "sample", "reviewed"
    );
    // The checks' strata are listed below, as precision and recall.
    for f in figures.record_strata() {
        println!(
            "{:<48} {:>8} {:>7} {:>9}  {}",
            f.stratum,
            f.population,
            f.sample,
            f.reviewed,
            f.acceptance.shown()
        );
    }
    println!("{}", figures.progress_line());
    if !figures.checks.is_empty() {
        println!(
            "the automatic checks against the reviewers (recall of all checks together {}):",
            share_shown(figures.checks_recall)
        );
        for c in &figures.checks {
            println!(
                "  {:<24} rejected {:>5}, reviewed {:>4}: precision {}, recall {}",
                c.check,
                c.population,
                c.reviewed,
                c.precision.shown(),
                share_shown(c.recall)
            );
        }
    }
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

async fn serve(target: &Target, listen: SocketAddr, token: Option<String>) -> anyhow::Result<()> {
    let (desk, overview) = target.desk().await?;
    let token = token.or_else(|| (!listen.ip().is_loopback()).then(new_token));
    let bound = BoundReview::bind(
        desk,
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
    println!(
        "review page for plan {} ({} sampled records): http://{host}/{fragment}",
        overview.plan,
        overview.figures.to_review()
    );
    println!(
        "every decision is stored as it is made; Ctrl-C stops the page. Then: {}",
        target.export_hint(&overview.plan)
    );
    bound
        .serve(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
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
