//! Prometheus sees what the coordinator knows: the real cluster coordinator
//! (in-process, `simulated`, metrics on) runs a plan to its end for a
//! scripted worker stand-in (a test double: no model), a real Prometheus
//! server scrapes it, and what Prometheus answers through its own API
//! agrees with the plan's status and the cluster status.

use std::time::Duration;

use seedling_proto::api::ClusterStatusRequest;
use seedling_tests::prometheus::{Prometheus, dashboard_queries};
use seedling_tests::repo_root;
use seedling_tests::scripted::Script;
use seedling_tests::simulated::{LocalCoordinator, join_answering_worker};

const TARGET: u64 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_coordinator_and_agrees_with_plan_status() {
    let mut coordinator = LocalCoordinator::start(Duration::from_secs(30))
        .await
        .unwrap();
    // Duplicates and refusals, so that rejections by reason are scraped.
    let script = Script {
        duplicate_every: 5,
        refuse_every: 7,
        ..Script::default()
    };
    join_answering_worker(&mut coordinator, "scripted-a", 4, script)
        .await
        .unwrap();
    let prometheus = tokio::task::spawn_blocking({
        let target = coordinator.metrics;
        move || Prometheus::start(&[("seedling-coordinator", target)])
    })
    .await
    .unwrap();

    let plan = coordinator
        .run_plan_to_its_end(&repo_root().join("examples/retail-banking.toml"), TARGET)
        .await
        .unwrap();
    assert_eq!(plan.state, "finished", "{plan:?}");
    let status = coordinator
        .api
        .get_cluster_status(ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let id = plan.plan_id.clone();

    // Wait for a scrape taken after the plan ended, then ask Prometheus.
    let accepted = format!("seedling_records_accepted_total{{plan=\"{id}\"}}");
    let prometheus = tokio::task::spawn_blocking(move || {
        seedling_tests::wait_for(
            "Prometheus to scrape the finished plan",
            Duration::from_secs(30),
            || {
                prometheus.value(&accepted) == Some(plan.accepted as f64)
                    && prometheus.value("seedling_plans{state=\"finished\"}") == Some(1.0)
            },
        );
        prometheus
    })
    .await
    .unwrap();
    let p = &prometheus;
    assert_eq!(
        p.value("up{job=\"seedling-coordinator\"}"),
        Some(1.0),
        "{}",
        p.log()
    );
    assert_eq!(
        p.value(&format!("seedling_attempts_total{{plan=\"{id}\"}}")),
        Some(plan.attempts as f64)
    );
    assert_eq!(
        p.value(&format!("seedling_plan_target_records{{plan=\"{id}\"}}")),
        Some(TARGET as f64)
    );
    // Every rejection reason, with its stage, as plan status counts it.
    let rejected = p.query(&format!("seedling_records_rejected_total{{plan=\"{id}\"}}"));
    assert_eq!(
        rejected.len(),
        plan.rejected.len(),
        "{rejected:?} vs {:?}",
        plan.rejected
    );
    for sample in &rejected {
        let reason = sample.labels["reason"].as_str().unwrap();
        assert_eq!(
            Some(&(sample.value as u64)),
            plan.rejected.get(reason),
            "{reason}"
        );
        assert!(sample.labels["stage"].is_string(), "{sample:?}");
    }
    assert!(
        !rejected.is_empty(),
        "the script makes duplicates and refusals"
    );
    // Quota fill: every stratum full, and the per-stratum figures add up.
    let fill = p.query(&format!("seedling_stratum_fill_ratio{{plan=\"{id}\"}}"));
    assert_eq!(fill.len(), plan.strata.len());
    assert!(fill.iter().all(|s| s.value == 1.0), "{fill:?}");
    assert_eq!(
        p.value(&format!(
            "sum(seedling_stratum_accepted_records{{plan=\"{id}\"}})"
        )),
        Some(plan.accepted as f64)
    );
    // Units: every attempt was leased and completed by the one worker.
    let completed = p.value("seedling_units_completed_total").unwrap();
    let leased = p.value("seedling_units_leased_total").unwrap();
    assert!(
        completed >= plan.attempts as f64,
        "{completed} < {}",
        plan.attempts
    );
    assert!(leased >= completed, "{leased} < {completed}");
    assert_eq!(p.value("seedling_units_failed_total"), Some(0.0));
    // The worker, as its heartbeats report it.
    assert_eq!(p.value("seedling_workers"), Some(1.0));
    assert_eq!(
        p.value("seedling_worker_slots{worker=\"scripted-a\"}"),
        Some(4.0)
    );
    assert!(
        p.value("seedling_worker_heartbeats_total{worker=\"scripted-a\"}")
            .unwrap()
            >= 1.0
    );
    // The lineage writer: results made durable, how long batches took.
    let load = status.load.unwrap();
    let written = p.value("seedling_lineage_results_written_total").unwrap();
    assert!(written >= load.results_written as f64, "{written}");
    assert!(
        p.value("seedling_lineage_write_batch_seconds_count")
            .unwrap()
            >= 1.0
    );
    assert!(p.value("seedling_lineage_store_bytes").unwrap() > 0.0);
    assert!(p.value("process_resident_memory_bytes").unwrap() > 1e6);
    // Every query of the shipped dashboard is PromQL that Prometheus runs
    // (`query` fails on any other answer than 200); the coordinator's own
    // panels show this plan (the workers' engines are the model test's).
    for (panel, expr) in dashboard_queries() {
        let series = p.query(&expr);
        if expr.contains("seedling_stratum_fill_ratio")
            || expr.contains("seedling_lineage_store_bytes")
        {
            assert!(!series.is_empty(), "{panel}: {expr}");
        }
    }
    coordinator.stop().await;
}

#[test]
fn the_shipped_prometheus_config_is_one_prometheus_accepts() {
    let config = repo_root().join("cluster-configs/monitoring/prometheus.yml");
    let checked = std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(&config)
        .output()
        .expect("promtool (from the prometheus package scripts/setup installs)");
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
