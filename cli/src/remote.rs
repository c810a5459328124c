//! The CLI as a client of a running coordinator: `plan submit|list|status|
//! cancel`, `cluster status`, and `export` / `lineage show` without a local
//! store. `--coordinator` (or SEEDLING_COORDINATOR) picks the cluster.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use seedling_common::cost::RunCost;
use seedling_proto::api::seedling_client::SeedlingClient;
use seedling_proto::api::{
    ClusterStatusRequest, CoordinatorLoad, Diversity, LineageRequest, ListPlansRequest, PlanRef,
    PlanSummary, SubmitPlanRequest,
};
use seedling_proto::auth::AttachToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Where the coordinator is and how to talk to it.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The coordinator's API address
    #[arg(
        long,
        env = "SEEDLING_COORDINATOR",
        default_value = "http://127.0.0.1:7470"
    )]
    pub coordinator: String,
    /// Bearer token, when the coordinator requires one
    #[arg(long, env = "SEEDLING_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM certificate to trust for an https:// coordinator (its CA or itself)
    #[arg(long, env = "SEEDLING_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

pub type Client = SeedlingClient<InterceptedService<Channel, AttachToken>>;

/// A gRPC failure in words: the status code name, then the server's message.
fn explain(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

impl Remote {
    pub fn block_on<T>(&self, work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(work)
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(self.coordinator.clone())
            .with_context(|| {
                format!(
                    "--coordinator {:?} is not a URL like http://host:7470",
                    self.coordinator
                )
            })?
            .connect_timeout(std::time::Duration::from_secs(5));
        if self.coordinator.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
            if let Some(ca) = &self.tls_ca {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("cannot read --tls-ca {}", ca.display()))?;
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach the coordinator at {}", self.coordinator))?;
        let token = AttachToken::new(self.token.as_deref()).map_err(explain)?;
        Ok(SeedlingClient::with_interceptor(channel, token).max_decoding_message_size(64 << 20))
    }
}

fn progress_line(s: &PlanSummary) -> String {
    let mut line = format!(
        "[{}] {} accepted {}/{} · attempts {} · in flight {} · {} tokens · {:.0}s",
        s.state,
        s.plan_id,
        s.accepted,
        s.target,
        s.attempts,
        s.in_flight,
        s.generated_tokens,
        s.elapsed_s
    );
    if let Some(eta) = s.eta_s.filter(|_| s.state == "running") {
        line.push_str(&format!(
            " · ETA {}",
            crate::run::human_duration(std::time::Duration::from_secs_f64(eta))
        ));
    }
    if !s.error.is_empty() {
        line.push_str(&format!(" · error: {}", s.error));
    }
    line
}

fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        width
    } else {
        (done.min(total) as usize * width) / total as usize
    };
    format!("{}{}", "#".repeat(filled), ".".repeat(width - filled))
}

fn print_plan(s: &PlanSummary) {
    println!("{}", progress_line(s));
    println!("  domain: {} · phase: {}", s.domain, s.phase);
    let rejected: std::collections::BTreeMap<String, u64> =
        s.rejected.iter().map(|(r, n)| (r.clone(), *n)).collect();
    println!("  funnel:");
    println!("    {:>6}  attempted", s.attempts);
    for row in seedling_coordinator::quality::funnel::funnel(s.attempts, &rejected) {
        println!("    {:>6}  {}", row.count, row.stage);
    }
    if !rejected.is_empty() {
        let parts: Vec<String> = rejected.iter().map(|(r, n)| format!("{r} {n}")).collect();
        println!("  rejected: {}", parts.join(", "));
    }
    if let Some(d) = &s.diversity {
        println!("  accepted inputs: {}", diversity_line(d));
    }
    print_cost(s);
    println!("  strata (accepted/quota, attempts; diversity of the stratum's inputs):");
    for stratum in s.strata.iter().filter(|st| st.quota > 0) {
        let spread = match &stratum.diversity {
            Some(d) if stratum.accepted >= 2 => format!("  [{}]", diversity_line(d)),
            _ => String::new(),
        };
        println!(
            "    [{}] {:>3}/{:<3} {:>4}  {}{}{spread}",
            bar(stratum.accepted, stratum.quota, 12),
            stratum.accepted,
            stratum.quota,
            stratum.attempts,
            stratum.stratum,
            if stratum.exhausted && stratum.accepted < stratum.quota {
                "  (short: budget spent)"
            } else {
                ""
            }
        );
    }
}

/// The engine time of the coordinator's current run of the plan, and what
/// an accepted record cost per stage over all its runs.
fn print_cost(s: &PlanSummary) {
    if let Some(session) = &s.session_cost {
        let session = RunCost::from(session);
        if !session.is_empty() {
            println!(
                "  worker time since the coordinator started: {}",
                session.split(0).describe()
            );
        }
    }
    if let Some(cost) = &s.cost
        && s.accepted > 0
    {
        println!("  per accepted record:");
        for line in RunCost::from(cost).per_record_lines(s.accepted) {
            println!("    {line}");
        }
    }
}

fn diversity_line(d: &Diversity) -> String {
    let dispersion = d.dispersion.map_or("-".to_string(), |x| format!("{x:.3}"));
    format!(
        "distinct-1 {:.3} · distinct-2 {:.3} · embedding dispersion {dispersion}",
        d.distinct_1, d.distinct_2
    )
}

fn json_diversity(d: Option<&Diversity>) -> serde_json::Value {
    d.map_or(serde_json::Value::Null, |d| {
        serde_json::json!({ "distinct_1": d.distinct_1, "distinct_2": d.distinct_2, "dispersion": d.dispersion })
    })
}

fn json_plan(s: &PlanSummary) -> serde_json::Value {
    serde_json::json!({
        "plan_id": s.plan_id, "domain": s.domain, "state": s.state, "phase": s.phase,
        "target": s.target, "accepted": s.accepted, "attempts": s.attempts, "in_flight": s.in_flight,
        "generated_tokens": s.generated_tokens, "elapsed_s": s.elapsed_s, "eta_s": s.eta_s, "error": s.error,
        "rejected": s.rejected, "diversity": json_diversity(s.diversity.as_ref()),
        "cost": s.cost.as_ref().map(RunCost::from), "session_cost": s.session_cost.as_ref().map(RunCost::from),
        "strata": s.strata.iter().map(|st| serde_json::json!({
            "stratum": st.stratum, "quota": st.quota, "accepted": st.accepted,
            "attempts": st.attempts, "exhausted": st.exhausted,
            "diversity": json_diversity(st.diversity.as_ref()),
        })).collect::<Vec<_>>(),
    })
}

pub async fn submit(
    remote: &Remote,
    plan: &Path,
    target: Option<u64>,
    watch: bool,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(plan)
        .with_context(|| format!("cannot read plan {}", plan.display()))?;
    let files = seedling_coordinator::plan::reference_files(plan, &text)?;
    let mut client = remote.client().await?;
    let summary = client
        .submit_plan(SubmitPlanRequest {
            file_name: plan.display().to_string(),
            plan_toml: text,
            files,
            target,
        })
        .await
        .map_err(explain)?
        .into_inner();
    println!(
        "submitted plan {} ({}): {}/{} accepted, {}",
        summary.plan_id, summary.domain, summary.accepted, summary.target, summary.state
    );
    if watch {
        watch_plan(&mut client, &summary.plan_id).await?;
    } else {
        println!(
            "  follow it with `seedling plan status {}` (or submit with --watch); the time left shows once {} records are accepted",
            summary.plan_id,
            seedling_coordinator::pipeline::ETA_AFTER_ACCEPTED
        );
    }
    Ok(())
}

async fn watch_plan(client: &mut Client, id: &str) -> anyhow::Result<()> {
    let mut updates = client
        .watch_plan(PlanRef {
            plan_id: id.to_string(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    let terminal = std::io::stderr().is_terminal();
    let mut last_accepted = None;
    let mut last = None;
    while let Some(summary) = updates.message().await.map_err(explain)? {
        if terminal {
            eprint!("\r\x1b[2K{}", progress_line(&summary));
        } else if last_accepted.as_ref() != Some(&(summary.accepted, summary.state.clone())) {
            eprintln!("{}", progress_line(&summary));
        }
        last_accepted = Some((summary.accepted, summary.state.clone()));
        last = Some(summary);
    }
    if terminal {
        eprintln!();
    }
    let last = last.context("the coordinator closed the watch without an update")?;
    print_plan(&last);
    match last.state.as_str() {
        "finished" => Ok(()),
        state @ ("running" | "paused") => anyhow::bail!(
            "the coordinator went away while plan {id} was {state}; it resumes when the coordinator restarts"
        ),
        other => anyhow::bail!("plan {id} ended {other}"),
    }
}

pub async fn watch(remote: &Remote, id: &str) -> anyhow::Result<()> {
    watch_plan(&mut remote.client().await?, id).await
}

pub async fn list(remote: &Remote, json: bool) -> anyhow::Result<()> {
    let plans = remote
        .client()
        .await?
        .list_plans(ListPlansRequest {})
        .await
        .map_err(explain)?
        .into_inner()
        .plans;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plans.iter().map(json_plan).collect::<Vec<_>>())?
        );
        return Ok(());
    }
    if plans.is_empty() {
        println!("no plans; submit one with seedling plan submit PLAN");
    }
    for p in &plans {
        println!(
            "{:<22} {:<10} {:>5}/{:<5} attempts {:<6} {}",
            p.plan_id, p.state, p.accepted, p.target, p.attempts, p.domain
        );
    }
    Ok(())
}

pub async fn status(remote: &Remote, id: &str, json: bool) -> anyhow::Result<()> {
    let plan = remote
        .client()
        .await?
        .get_plan(PlanRef {
            plan_id: id.to_string(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    if json {
        println!("{}", serde_json::to_string_pretty(&json_plan(&plan))?);
    } else {
        print_plan(&plan);
    }
    Ok(())
}

pub async fn cancel(remote: &Remote, id: &str) -> anyhow::Result<()> {
    let plan = remote
        .client()
        .await?
        .cancel_plan(PlanRef {
            plan_id: id.to_string(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    println!(
        "plan {} {}: {}/{} accepted records kept",
        plan.plan_id, plan.state, plan.accepted, plan.target
    );
    Ok(())
}

pub async fn cluster_status(remote: &Remote, json: bool) -> anyhow::Result<()> {
    let status = remote
        .client()
        .await?
        .get_cluster_status(ClusterStatusRequest {})
        .await
        .map_err(explain)?
        .into_inner();
    if json {
        let workers: Vec<serde_json::Value> = status
            .workers
            .iter()
            .map(|w| {
                let c = w.capacity.clone().unwrap_or_default();
                let stats = w.stats.unwrap_or_default();
                serde_json::json!({
                    "worker_id": c.worker_id, "model": c.model_name, "model_digest": c.model_digest,
                    "judge_model": (!c.judge_model_name.is_empty()).then_some(&c.judge_model_name),
                    "slots": c.slots, "context_tokens": c.context_tokens, "gpu": c.gpu, "gpu_layers": c.gpu_layers,
                    // Sequences the engine decodes now (at most `slots`), and
                    // the units leased to the worker, which may be twice its
                    // slots so that its queue never runs dry.
                    "active_slots": stats.active_slots, "queued_requests": stats.queued_requests,
                    "units_in_flight": w.busy, "unit_room": w.free, "tokens_per_s": w.tokens_per_s,
                    "last_heartbeat_s_ago": w.last_heartbeat_s_ago, "leased_units": w.leased_units,
                    "unacknowledged": w.unacknowledged, "generated_tokens": stats.generated_tokens,
                    "requests_completed": stats.requests_completed,
                    "prompt_tokens_computed": stats.prompt_tokens_computed,
                    "prompt_tokens_reused": stats.prompt_tokens_reused,
                    "prefill_ms": stats.prefill_ms, "decode_ms": stats.decode_ms,
                    "embedding_ms": stats.embedding_ms,
                })
            })
            .collect();
        let out = serde_json::json!({
            "coordinator": status.coordinator, "workers": workers, "queue_depth": status.queue_depth,
            "plans_running": status.plans_running, "leases_expired": status.leases_expired,
            "workers_left": status.workers_left, "lease_timeout_s": status.lease_timeout_s,
            "results_refused": status.results_refused,
            "load": status.load.map(|l| serde_json::json!({
                "results_decided": l.results_decided, "deciding_s": l.deciding_s,
                "results_written": l.results_written, "writes": l.writes, "writing_s": l.writing_s,
                "uptime_s": l.uptime_s, "groups_decided": l.groups_decided,
                "dispatching_s": l.dispatching_s, "deciding_cpu_s": l.deciding_cpu_s,
                "writing_cpu_s": l.writing_cpu_s, "syncing_s": l.syncing_s,
            })),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "coordinator {} · {} plans running · {} records queued · {} workers · leases expired {} · workers left {} · lease timeout {:.0}s",
        status.coordinator,
        status.plans_running,
        status.queue_depth,
        status.workers.len(),
        status.leases_expired,
        status.workers_left,
        status.lease_timeout_s
    );
    if let Some(load) = status.load.filter(|l| l.results_decided > 0) {
        println!("{}", load_line(&load));
    }
    if !status.results_refused.is_empty() {
        let mut refused: Vec<_> = status.results_refused.iter().collect();
        refused.sort();
        let parts: Vec<String> = refused
            .iter()
            .map(|(why, n)| format!("{why} {n}"))
            .collect();
        println!("results refused (stored nothing): {}", parts.join(" · "));
    }
    if !status.workers.is_empty() {
        // Slots are the engine's parallel sequences; units are leased work,
        // up to two per slot so that a worker's queue never runs dry.
        println!(
            "{:<18} {:<28} {:>12} {:>11} {:>8} {:>9} {:>6}",
            "worker", "model", "slots active", "units/room", "tok/s", "heartbeat", "unack"
        );
    }
    for w in &status.workers {
        let c = w.capacity.clone().unwrap_or_default();
        let active = w.stats.map(|s| s.active_slots).unwrap_or_default();
        println!(
            "{:<18} {:<28} {:>12} {:>11} {:>8.1} {:>8.1}s {:>6}{}",
            c.worker_id,
            format!(
                "{}{}",
                c.model_name,
                if c.gpu { " (GPU)" } else { " (CPU)" }
            ),
            format!("{active}/{}", c.slots),
            format!("{}/{}", w.busy, w.busy + w.free),
            w.tokens_per_s,
            w.last_heartbeat_s_ago,
            w.unacknowledged,
            if w.leased_units.is_empty() {
                String::new()
            } else {
                format!("  leases: {}", w.leased_units.len())
            }
        );
        if !c.judge_model_name.is_empty() {
            println!("{:<18} judge model for checks: {}", "", c.judge_model_name);
        }
        if let Some(stats) = w.stats.filter(|s| s.prefill_ms + s.decode_ms > 0) {
            println!("{:<18} {}", "", engine_line(&stats));
        }
    }
    Ok(())
}

/// A worker's engine time by kind and its prompt reuse, since it started.
fn engine_line(stats: &seedling_proto::worker::EngineStats) -> String {
    let busy = (stats.prefill_ms + stats.decode_ms + stats.embedding_ms).max(1) as f64;
    let prompt = stats.prompt_tokens_computed + stats.prompt_tokens_reused;
    format!(
        "engine busy {:.0}s: prefill {:.0}%, decode {:.0}%, embedding {:.0}% · prompt tokens {} ({:.0}% from the prefix cache)",
        busy / 1e3,
        100.0 * stats.prefill_ms as f64 / busy,
        100.0 * stats.decode_ms as f64 / busy,
        100.0 * stats.embedding_ms as f64 / busy,
        prompt,
        100.0 * stats.prompt_tokens_reused as f64 / prompt.max(1) as f64,
    )
}

/// Streams a plan's dataset from the coordinator into `out`.
pub async fn export(remote: &Remote, id: &str, out: &Path) -> anyhow::Result<()> {
    let mut chunks = remote
        .client()
        .await?
        .export_dataset(PlanRef {
            plan_id: id.to_string(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    // One export into a directory at a time: two would interleave chunks.
    let _only_export = seedling_coordinator::dataset::lock_export_dir(out)?;
    let mut written: Vec<PathBuf> = Vec::new();
    let mut version = String::new();
    while let Some(chunk) = chunks.message().await.map_err(explain)? {
        let relative = PathBuf::from(&chunk.path);
        anyhow::ensure!(
            relative
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_))),
            "the coordinator sent a path outside the dataset: {}",
            chunk.path
        );
        let path = out.join(&relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(written.last() == Some(&relative))
            .write(true)
            .truncate(written.last() != Some(&relative))
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        std::io::Write::write_all(&mut file, &chunk.data)?;
        if written.last() != Some(&relative) {
            written.push(relative);
        }
        version = chunk.dataset_version;
    }
    println!(
        "dataset {version} of plan {id}: {} files in {}",
        written.len(),
        out.display()
    );
    Ok(())
}

pub async fn lineage(remote: &Remote, id: &str, depth: usize, json: bool) -> anyhow::Result<()> {
    let reply = remote
        .client()
        .await?
        .get_lineage(LineageRequest {
            record_id: id.to_string(),
            depth: u32::try_from(depth).unwrap_or(u32::MAX),
            json,
        })
        .await
        .map_err(explain)?
        .into_inner();
    print!("{}", reply.text);
    Ok(())
}

/// The coordinator's own cost per result, by stage: what bounds it.
fn load_line(load: &CoordinatorLoad) -> String {
    let busy = |seconds: f64| 100.0 * seconds / load.uptime_s.max(1e-9);
    format!(
        "coordinator load: deciding {:.3} ms/result ({:.0}% busy; {:.3} of it handing out units; {:.1} results a turn; {:.3} ms of the actor thread's CPU), writing {:.3} ms/result ({:.0}% busy; {:.3} ms of the writer thread's CPU), syncing {:.3} ms/result in {} syncs ({:.0}% busy), over {} results",
        load.deciding_ms_per_result(),
        busy(load.deciding_s),
        load.dispatching_ms_per_result(),
        load.results_per_group(),
        load.deciding_cpu_ms_per_result(),
        load.writing_ms_per_result(),
        busy(load.writing_s),
        load.writing_cpu_ms_per_result(),
        load.syncing_ms_per_result(),
        load.writes,
        busy(load.syncing_s),
        load.results_decided
    )
}
