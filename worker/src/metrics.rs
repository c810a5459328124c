//! What a worker node shows Prometheus: its engine (tokens generated and
//! prompt tokens computed or reused, requests, where engine time went,
//! slots, queue, KV cells), the model's load time, its units and its link
//! to the coordinator. Read from the engine's running totals at the moment
//! of the scrape; every series carries the worker's id.

use std::time::Duration;

use seedling_telemetry::{Scrape, labels};

use crate::engine::EngineStats;

/// The worker's side of a scrape, beside its engine's totals.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub worker_id: String,
    pub slots: u32,
    /// KV cells the engine has, shared by its slots.
    pub kv_cells: u32,
    pub model_load: Duration,
    /// Units running on the engine now.
    pub running: usize,
    /// Results sent and not yet acknowledged by the coordinator.
    pub unacknowledged: u32,
    /// Times this node lost the coordinator and joined it again.
    pub rejoins: u64,
}

/// The OpenMetrics exposition of a worker.
pub fn render(stats: &EngineStats, view: &WorkerView) -> String {
    let id = view.worker_id.as_str();
    let worker = || labels([("worker", id)]);
    let with = |key: &'static str, value: &str| labels([("worker", id), (key, value)]);
    let mut scrape = Scrape::new();
    scrape.counters(
        "seedling_engine_generated_tokens",
        "Tokens the engine generated",
        [(worker(), stats.generated_tokens as f64)],
    );
    scrape.counters(
        "seedling_engine_prompt_tokens",
        "Prompt tokens the engine computed, or took from its prefix cache",
        [
            (
                with("kind", "computed"),
                stats.prompt_tokens_computed as f64,
            ),
            (with("kind", "reused"), stats.prompt_tokens_reused as f64),
        ],
    );
    scrape.counters(
        "seedling_engine_requests",
        "Model calls the engine finished, by outcome",
        [
            (
                with("outcome", "completed"),
                stats.requests_completed as f64,
            ),
            (with("outcome", "failed"), stats.requests_failed as f64),
        ],
    );
    let seconds = |ms: u64| ms as f64 / 1000.0;
    scrape.counters(
        "seedling_engine_seconds",
        "Engine time by what it was spent on",
        [
            (with("phase", "prefill"), seconds(stats.prefill_ms)),
            (with("phase", "decode"), seconds(stats.decode_ms)),
            (with("phase", "embedding"), seconds(stats.embedding_ms)),
            (with("phase", "idle"), seconds(stats.idle_ms)),
        ],
    );
    let gauges = [
        (
            "seedling_engine_slots",
            "Sequences the engine decodes together",
            f64::from(view.slots),
        ),
        (
            "seedling_engine_active_slots",
            "Slots decoding now",
            stats.active_slots as f64,
        ),
        (
            "seedling_engine_queued_requests",
            "Model calls waiting for a slot",
            stats.queued_requests as f64,
        ),
        (
            "seedling_engine_kv_cells_capacity",
            "KV cells the engine has",
            f64::from(view.kv_cells),
        ),
        (
            "seedling_model_load_seconds",
            "How long loading the model took",
            view.model_load.as_secs_f64(),
        ),
        (
            "seedling_worker_running_units",
            "Units running on this worker",
            view.running as f64,
        ),
        (
            "seedling_worker_unacknowledged_results",
            "Results sent and waiting for the coordinator's acknowledgement",
            f64::from(view.unacknowledged),
        ),
    ];
    for (name, help, value) in gauges {
        scrape.gauges(name, help, [(worker(), value)]);
    }
    scrape.gauges(
        "seedling_engine_kv_cells",
        "KV cells in use: reserved by decoding sequences, or holding cached prompt prefixes",
        [
            (with("use", "reserved"), stats.kv_cells_reserved as f64),
            (with("use", "cached"), stats.kv_cells_cached as f64),
        ],
    );
    scrape.counters(
        "seedling_worker_rejoins",
        "Times this worker lost the coordinator and joined again",
        [(worker(), view.rejoins as f64)],
    );
    scrape.process();
    scrape.encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_names_the_worker_and_reads_the_engines_totals() {
        let stats = EngineStats {
            generated_tokens: 1200,
            prompt_tokens_computed: 300,
            prompt_tokens_reused: 900,
            prefill_ms: 1500,
            kv_cells_cached: 640,
            ..EngineStats::default()
        };
        let view = WorkerView {
            worker_id: "gpu-01".into(),
            slots: 4,
            kv_cells: 4096,
            model_load: Duration::from_millis(2500),
            running: 3,
            unacknowledged: 1,
            rejoins: 2,
        };
        let text = render(&stats, &view);
        for line in [
            "seedling_engine_generated_tokens_total{worker=\"gpu-01\"} 1200.0",
            "seedling_engine_prompt_tokens_total{worker=\"gpu-01\",kind=\"reused\"} 900.0",
            "seedling_engine_seconds_total{worker=\"gpu-01\",phase=\"prefill\"} 1.5",
            "seedling_engine_kv_cells{worker=\"gpu-01\",use=\"cached\"} 640.0",
            "seedling_model_load_seconds{worker=\"gpu-01\"} 2.5",
            "seedling_worker_running_units{worker=\"gpu-01\"} 3.0",
            "seedling_worker_rejoins_total{worker=\"gpu-01\"} 2.0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        let series = text.lines().filter(|l| l.starts_with("seedling_"));
        assert!(series.clone().count() >= 18, "{text}");
        assert!(
            series.clone().all(|l| l.contains("worker=\"gpu-01\"")),
            "{text}"
        );
    }
}
