//! What a cluster coordinator shows Prometheus: its plans (records accepted
//! and rejected by stage and reason, quota fill per stratum, diversity),
//! units, workers as their heartbeats report them, refused results, and
//! the lineage writer. Every figure is read from the same state `cluster
//! status` and `plan status` print, at the moment of the scrape.

use std::collections::BTreeMap;

use seedling_proto::api::PlanSummary;
use seedling_telemetry::{Histogram, Scrape, labels};

use super::messages::{ClusterView, PlanView, WorkerView};

use crate::quality::funnel::{GENERATION_FAILED, stage_of};

/// Metric label of each funnel stage a rejection stops an attempt at
/// (indexed like `funnel::STAGES`).
const STAGE_LABELS: [&str; 5] = [
    "generation",
    "heuristics",
    "quality_score",
    "dedup_novelty",
    "quota",
];

/// What happened to units since the coordinator started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitCounts {
    /// Handed to a worker.
    pub leased: u64,
    /// Whose result came back from the lease holder and was decided.
    pub completed: u64,
    /// Given back to their plan to be leased again: their worker left or
    /// could not be reached, or its result was unreadable.
    pub requeued: u64,
}

/// The coordinator's state at one scrape.
#[derive(Debug)]
pub struct MetricsSnapshot {
    pub status: ClusterView,
    pub plans: Vec<PlanView>,
    pub units: UnitCounts,
    /// Heartbeats received per worker id since the coordinator started.
    pub heartbeats: BTreeMap<String, u64>,
    /// The lineage writer's latencies (shared with the writer).
    pub write_batch_seconds: Histogram,
    pub write_sync_seconds: Histogram,
    /// The lineage store's size on disk, when it could be read.
    pub store_bytes: Option<u64>,
}

/// The OpenMetrics exposition of `snapshot`.
pub fn render(snapshot: &MetricsSnapshot) -> String {
    // Read as `plan status` shows them.
    let summaries: Vec<PlanSummary> = snapshot.plans.iter().map(PlanView::summary).collect();
    let mut scrape = Scrape::new();
    plans(&mut scrape, &summaries);
    units(&mut scrape, snapshot);
    workers(&mut scrape, snapshot);
    lineage(&mut scrape, snapshot);
    scrape.process();
    scrape.encode()
}

fn plans(scrape: &mut Scrape, plans: &[PlanSummary]) {
    let mut states: BTreeMap<&str, f64> = [
        "running",
        "paused",
        "finished",
        "short",
        "cancelled",
        "failed",
    ]
    .into_iter()
    .map(|s| (s, 0.0))
    .collect();
    for plan in plans {
        *states.entry(plan.state.as_str()).or_default() += 1.0;
    }
    scrape.gauges(
        "seedling_plans",
        "Plans on this coordinator by state",
        states.into_iter().map(|(s, n)| (labels([("state", s)]), n)),
    );
    let per_plan = |value: fn(&PlanSummary) -> f64| {
        plans
            .iter()
            .map(move |p| (labels([("plan", &p.plan_id)]), value(p)))
    };
    scrape.gauges(
        "seedling_plan_target_records",
        "Records a plan asks for",
        per_plan(|p| p.target as f64),
    );
    scrape.counters(
        "seedling_records_accepted",
        "Records accepted and stored, per plan (a resumed plan counts what its store holds)",
        per_plan(|p| p.accepted as f64),
    );
    scrape.counters(
        "seedling_attempts",
        "Attempts decided, per plan",
        per_plan(|p| p.attempts as f64),
    );
    scrape.gauges(
        "seedling_attempts_in_flight",
        "Attempts leased or waiting to be, per plan",
        per_plan(|p| p.in_flight as f64),
    );
    scrape.counters(
        "seedling_plan_generated_tokens",
        "Tokens the workers generated for a plan",
        per_plan(|p| p.generated_tokens as f64),
    );
    scrape.gauges(
        "seedling_plan_eta_seconds",
        "Seconds until a running plan reaches its target at its own rate",
        plans.iter().filter_map(|p| {
            p.eta_s
                .filter(|_| p.state == "running")
                .map(|eta| (labels([("plan", &p.plan_id)]), eta))
        }),
    );
    scrape.counters(
        "seedling_records_rejected",
        "Attempts rejected, by the stage that stopped them and the reason",
        plans.iter().flat_map(|p| {
            p.rejected.iter().map(|(reason, &n)| {
                let stage = STAGE_LABELS[stage_of(reason)];
                (
                    labels([("plan", &p.plan_id), ("stage", stage), ("reason", reason)]),
                    n as f64,
                )
            })
        }),
    );
    let strata = || {
        plans.iter().flat_map(|p| {
            p.strata
                .iter()
                .map(move |s| (labels([("plan", &p.plan_id), ("stratum", &s.stratum)]), s))
        })
    };
    scrape.gauges(
        "seedling_stratum_quota_records",
        "Records a stratum's quota asks for",
        strata().map(|(l, s)| (l, s.quota as f64)),
    );
    scrape.gauges(
        "seedling_stratum_accepted_records",
        "Records a stratum has accepted",
        strata().map(|(l, s)| (l, s.accepted as f64)),
    );
    scrape.gauges(
        "seedling_stratum_fill_ratio",
        "Accepted over quota, per stratum (1 when full)",
        strata().map(|(l, s)| (l, fill(s.accepted, s.quota))),
    );
    scrape.gauges(
        "seedling_plan_distinct_2",
        "Distinct word bigrams over all bigrams of a plan's accepted inputs",
        plans.iter().filter_map(|p| {
            let d = p.diversity.as_ref()?;
            Some((labels([("plan", &p.plan_id)]), d.distinct_2))
        }),
    );
    scrape.gauges(
        "seedling_plan_embedding_dispersion",
        "Mean pairwise cosine distance of a plan's accepted input embeddings",
        plans.iter().filter_map(|p| {
            let dispersion = p.diversity.as_ref()?.dispersion?;
            Some((labels([("plan", &p.plan_id)]), dispersion))
        }),
    );
}

fn fill(accepted: u64, quota: u64) -> f64 {
    if quota == 0 {
        1.0
    } else {
        accepted.min(quota) as f64 / quota as f64
    }
}

fn units(scrape: &mut Scrape, snapshot: &MetricsSnapshot) {
    let u = snapshot.units;
    scrape.counter(
        "seedling_units_leased",
        "Units handed to workers",
        u.leased as f64,
    );
    scrape.counter(
        "seedling_units_completed",
        "Units whose result came back from their lease holder",
        u.completed as f64,
    );
    // A unit whose model calls failed is an attempt rejected at the
    // generation stage: the plans count those already.
    let failed: u64 = snapshot
        .plans
        .iter()
        .filter_map(|p| p.progress.rejected.get(GENERATION_FAILED))
        .sum();
    scrape.counter(
        "seedling_units_failed",
        "Completed units whose model calls failed on the worker",
        failed as f64,
    );
    scrape.counter(
        "seedling_units_requeued",
        "Units given back to their plan to be leased again (worker gone or unreachable, unreadable result)",
        u.requeued as f64,
    );
    scrape.gauge(
        "seedling_queue_depth_records",
        "Records running plans still need beyond what is in flight",
        snapshot.status.queue_depth as f64,
    );
    scrape.counters(
        "seedling_results_refused",
        "Results refused, by why: stale (not leased to the sender), forged (wrong lease secret), invalid",
        snapshot
            .status
            .results_refused
            .iter()
            .map(|(why, &n)| (labels([("why", why)]), n as f64)),
    );
}

/// One figure of a worker's status line.
type WorkerFigure = fn(&WorkerView) -> f64;

fn workers(scrape: &mut Scrape, snapshot: &MetricsSnapshot) {
    let status = &snapshot.status;
    scrape.gauge(
        "seedling_workers",
        "Workers holding a lease (heartbeating)",
        status.workers.len() as f64,
    );
    scrape.counters(
        "seedling_worker_departures",
        "Workers taken out, by why",
        [
            (
                labels([("why", "lease_expired")]),
                status.leases_expired as f64,
            ),
            (labels([("why", "node_left")]), status.workers_left as f64),
        ],
    );
    scrape.counters(
        "seedling_worker_heartbeats",
        "Heartbeats received, per worker",
        snapshot
            .heartbeats
            .iter()
            .map(|(w, &n)| (labels([("worker", w)]), n as f64)),
    );
    let each = || {
        status
            .workers
            .iter()
            .map(|w| (labels([("worker", &w.capacity.worker_id)]), w))
    };
    let stats = || each().filter_map(|(l, w)| Some((l, w.stats?)));
    let gauges: [(&str, &str, WorkerFigure); 6] = [
        (
            "seedling_worker_slots",
            "Sequences a worker's engine decodes together",
            |w| w.capacity.slots as f64,
        ),
        (
            "seedling_worker_leased_units",
            "Units a worker holds",
            |w| w.busy as f64,
        ),
        (
            "seedling_worker_generated_tokens_per_second",
            "A worker's generation rate between its last two heartbeats",
            |w| w.tokens_per_s,
        ),
        (
            "seedling_worker_heartbeat_age_seconds",
            "Seconds since a worker's last heartbeat",
            |w| w.last_heartbeat_ago.as_secs_f64(),
        ),
        (
            "seedling_worker_unacknowledged_results",
            "Results a worker sent and waits to have acknowledged",
            |w| w.unacknowledged as f64,
        ),
        (
            "seedling_worker_active_slots",
            "Engine slots decoding, as the last heartbeat said",
            |w| w.stats.map_or(0.0, |s| s.active_slots as f64),
        ),
    ];
    for (name, help, value) in gauges {
        scrape.gauges(name, help, each().map(|(l, w)| (l, value(w))));
    }
    scrape.gauges(
        "seedling_worker_queued_requests",
        "Model calls waiting for an engine slot, as the last heartbeat said",
        stats().map(|(l, s)| (l, s.queued_requests as f64)),
    );
    scrape.counters(
        "seedling_worker_generated_tokens",
        "Tokens a worker's engine generated, as its last heartbeat said",
        stats().map(|(l, s)| (l, s.generated_tokens as f64)),
    );
    scrape.counters(
        "seedling_worker_prompt_tokens",
        "Prompt tokens a worker's engine computed or took from its prefix cache",
        stats().flat_map(|(l, s)| {
            let with = |kind: &str| {
                let mut l = l.clone();
                l.push(("kind", kind.to_string()));
                l
            };
            [
                (with("computed"), s.prompt_tokens_computed as f64),
                (with("reused"), s.prompt_tokens_reused as f64),
            ]
        }),
    );
}

fn lineage(scrape: &mut Scrape, snapshot: &MetricsSnapshot) {
    let load = snapshot.status.load;
    scrape.counter(
        "seedling_coordinator_results_decided",
        "Results the coordinator decided",
        load.results_decided as f64,
    );
    scrape.counter(
        "seedling_coordinator_deciding_seconds",
        "Wall time the coordinator actor spent deciding results",
        load.deciding_s,
    );
    scrape.counter(
        "seedling_lineage_results_written",
        "Results whose lineage is durable",
        load.results_written as f64,
    );
    scrape.counter(
        "seedling_lineage_syncs",
        "Syncs that made lineage durable",
        load.writes as f64,
    );
    scrape.histogram(
        "seedling_lineage_write_batch_seconds",
        "From the writer taking a batch of decided results to the sync that made it durable",
        &snapshot.write_batch_seconds,
    );
    scrape.histogram(
        "seedling_lineage_sync_seconds",
        "One sync of the lineage store",
        &snapshot.write_sync_seconds,
    );
    if let Some(bytes) = snapshot.store_bytes {
        scrape.gauge(
            "seedling_lineage_store_bytes",
            "The lineage store's size on disk",
            bytes as f64,
        );
    }
}
