//! MLflow tracking of a plan's run, against a real MLflow server: the run,
//! its parameters and figures, the dataset as its input, the card and
//! manifest as artifacts; a verification of the dataset as a run beside
//! it; a plan submitted to a cluster coordinator as a run of its own; and
//! a server that is gone costs nothing but a summary that says so. The
//! records come from the scripted test double.

use std::path::Path;
use std::sync::Arc;

use seedling_coordinator::dataset::export_dataset;
use seedling_coordinator::lineage::LineageStore;
use seedling_coordinator::pipeline::PlanRun;
use seedling_coordinator::plan::load_plan;
use seedling_coordinator::tracking::{
    PlanTracking, RunContext, TrackingTarget, track_verification,
};
use seedling_coordinator::verify::VerificationReport;
use seedling_tests::mlflow::MlflowServer;
use seedling_tests::repo_root;
use seedling_tests::scripted::{scripted_options, scripted_run};

/// The value of `key` in one of MLflow's `[{key, value}]` lists.
fn entry<'a>(list: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    list.as_array()?
        .iter()
        .find(|e| e["key"] == key)
        .map(|e| &e["value"])
}

#[test]
fn a_plan_run_and_its_verification_are_mlflow_runs_with_their_figures_and_files() {
    let plan_file = repo_root().join("examples/retail-banking.toml");
    let plan = load_plan(&plan_file).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (store, plan_id) = scripted_run(dir.path(), &plan, 16);
    let out = tempfile::tempdir().unwrap();
    let export = export_dataset(&store, &plan_id, out.path()).unwrap();
    drop(store);
    // The finished run's figures, as the run reports them.
    let options = scripted_options(16);
    let store = Arc::new(LineageStore::open(dir.path()).unwrap());
    let progress = PlanRun::open(store, plan.clone(), options)
        .unwrap()
        .progress();
    assert_eq!(progress.accepted, 16);

    let mut server = MlflowServer::start();
    let target = TrackingTarget::new(&server.uri(), "seedling-test").unwrap();
    let plan_text = std::fs::read_to_string(&plan_file).unwrap();
    let model = dir.path().join("model.gguf");
    std::fs::write(&model, b"GGUF").unwrap();
    let context = RunContext {
        plan_id: plan_id.as_str(),
        plan_file: &plan_file,
        plan_text: &plan_text,
        model: &model.display().to_string(),
        model_sha256: &"ab".repeat(32),
        settings: vec![("slots".into(), "8".into())],
        nodes: vec!["local".into()],
    };
    let mut tracking = PlanTracking::start(&target, &plan, &context);
    tracking.progress(&progress);
    let summary = tracking.finished(&progress, &export, Path::new(&plan_file));
    assert!(
        summary.not_logged.is_empty() && summary.first_error.is_none(),
        "{summary:?}"
    );
    let run_id = summary.run_id.clone().expect("a run was created");
    assert!(
        summary
            .run_url
            .as_deref()
            .is_some_and(|u| u.contains(&run_id)),
        "{summary:?}"
    );

    let run = server.run(&run_id);
    assert_eq!(run["info"]["status"], "FINISHED", "{run}");
    let params = &run["data"]["params"];
    assert_eq!(entry(params, "plan_id").unwrap(), plan_id.as_str());
    assert_eq!(entry(params, "seed").unwrap(), &plan.seed.to_string());
    assert_eq!(entry(params, "slots").unwrap(), "8");
    assert_eq!(entry(params, "model_sha256").unwrap(), &"ab".repeat(32));
    let metrics = &run["data"]["metrics"];
    assert_eq!(entry(metrics, "accepted").unwrap(), 16.0);
    assert_eq!(
        entry(metrics, "attempts").unwrap().as_f64(),
        Some(progress.attempts as f64)
    );
    let tags = &run["data"]["tags"];
    assert_eq!(
        entry(tags, "seedling.dataset_version").unwrap(),
        export.version.as_str()
    );
    let inputs = &run["inputs"]["dataset_inputs"];
    assert_eq!(
        inputs[0]["dataset"]["digest"],
        export.version.chars().take(36).collect::<String>(),
        "{inputs}"
    );
    let artifacts = server.artifacts(&run_id, "dataset");
    for name in ["dataset/README.md", "dataset/manifest.json"] {
        assert!(artifacts.iter().any(|a| a == name), "{artifacts:?}");
    }
    assert!(
        server
            .artifacts(&run_id, "plan")
            .contains(&"plan/retail-banking.toml".to_string())
    );

    // A verification of that dataset is a run of its own beside it.
    let verify_dir = tempfile::tempdir().unwrap();
    let report: VerificationReport = serde_json::from_value(
        seedling_tests::verification_report_json(&export.version, plan_id.as_str()),
    )
    .unwrap();
    std::fs::write(
        verify_dir.path().join("report.json"),
        serde_json::to_vec(&report).unwrap(),
    )
    .unwrap();
    std::fs::write(verify_dir.path().join("loss.png"), b"\x89PNG\r\n").unwrap();
    let summary = track_verification(&target, &report, verify_dir.path());
    assert!(summary.first_error.is_none(), "{summary:?}");
    let run = server.run(summary.run_id.as_deref().unwrap());
    let metrics = &run["data"]["metrics"];
    assert_eq!(entry(metrics, "seedling.forced_choice").unwrap(), 0.7);
    assert_eq!(entry(metrics, "base.forced_choice.high").unwrap(), 0.6);
    assert_eq!(entry(metrics, "seedling.loss_last").unwrap(), 1.25);
    assert_eq!(entry(&run["data"]["params"], "tier").unwrap(), "smoke");
    assert_eq!(
        entry(&run["data"]["tags"], "seedling.dataset_version").unwrap(),
        export.version.as_str()
    );
    let artifacts = server.artifacts(summary.run_id.as_deref().unwrap(), "verify");
    for name in ["verify/report.json", "verify/loss.png"] {
        assert!(artifacts.iter().any(|a| a == name), "{artifacts:?}");
    }

    // The server goes away: nothing is logged, the summary says why once,
    // and nothing waits on it.
    server.stop();
    let started = std::time::Instant::now();
    let tracking = PlanTracking::start(&target, &plan, &context);
    let summary = tracking.finished(&progress, &export, Path::new(&plan_file));
    assert!(summary.run_id.is_none(), "{summary:?}");
    let why = summary.first_error.expect("the failure is named");
    assert!(
        why.contains(&server.address.to_string()) || why.contains("onnect"),
        "{why}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "a dead server held the run up for {:?}",
        started.elapsed()
    );
}

/// A plan submitted to a coordinator that tracks: one MLflow run, tagged
/// with the plan, with the cluster's settings and workers, its figures as
/// the run went, the plan file, and FINISHED once the plan is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_submitted_to_a_tracking_coordinator_is_an_mlflow_run() {
    use seedling_tests::scripted::Script;
    use seedling_tests::simulated::{LocalCoordinator, join_answering_worker};

    const TARGET: u64 = 12;
    let server = tokio::task::spawn_blocking(MlflowServer::start)
        .await
        .unwrap();
    let target = TrackingTarget::new(&server.uri(), "seedling-cluster").unwrap();
    let mut coordinator =
        LocalCoordinator::start_tracked(std::time::Duration::from_secs(30), Some(target))
            .await
            .unwrap();
    join_answering_worker(&mut coordinator, "scripted-a", 4, Script::default())
        .await
        .unwrap();
    let plan = coordinator
        .run_plan_to_its_end(&repo_root().join("examples/retail-banking.toml"), TARGET)
        .await
        .unwrap();
    assert_eq!(plan.state, "finished", "{plan:?}");

    // The run ends on a thread of its own once the plan has.
    let plan_id = plan.plan_id.clone();
    let run = tokio::task::spawn_blocking(move || {
        seedling_tests::wait_for(
            "the plan's MLflow run to end",
            std::time::Duration::from_secs(30),
            || {
                server
                    .runs_tagged("seedling-cluster", "seedling.plan_id", &plan_id)
                    .first()
                    .is_some_and(|run| run["info"]["status"] == "FINISHED")
            },
        );
        let runs = server.runs_tagged("seedling-cluster", "seedling.plan_id", &plan_id);
        assert_eq!(runs.len(), 1, "one run per plan: {runs:?}");
        let run_id = runs[0]["info"]["run_id"].as_str().unwrap().to_string();
        (
            server.run(&run_id),
            server.artifacts(&run_id, "plan"),
            server.artifacts(&run_id, "dataset"),
        )
    })
    .await
    .unwrap();
    let (run, artifacts, dataset) = run;
    let params = &run["data"]["params"];
    assert_eq!(entry(params, "target").unwrap(), &TARGET.to_string());
    assert_eq!(entry(params, "plan_id").unwrap(), plan.plan_id.as_str());
    assert_eq!(entry(params, "model_file").unwrap(), "scripted test double");
    let metrics = &run["data"]["metrics"];
    assert_eq!(entry(metrics, "accepted").unwrap(), TARGET as f64);
    assert_eq!(
        entry(metrics, "attempts").unwrap().as_f64(),
        Some(plan.attempts as f64)
    );
    let tags = &run["data"]["tags"];
    assert_eq!(entry(tags, "seedling.nodes").unwrap(), "scripted-a");
    assert_eq!(entry(tags, "seedling.state").unwrap(), "finished");
    assert_eq!(artifacts, vec!["plan/plan.toml".to_string()]);
    // Finished, it was exported beside its submission: the dataset is the
    // run's input, its card and manifest its artifacts.
    for name in ["dataset/README.md", "dataset/manifest.json"] {
        assert!(dataset.iter().any(|a| a == name), "{dataset:?}");
    }
    let version = entry(tags, "seedling.dataset_version")
        .and_then(|v| v.as_str())
        .expect("the dataset's version as a tag");
    let inputs = &run["inputs"]["dataset_inputs"];
    assert_eq!(
        inputs[0]["dataset"]["digest"],
        version.chars().take(36).collect::<String>(),
        "{inputs}"
    );
    assert!(
        inputs[0]["dataset"]["source"]
            .as_str()
            .is_some_and(|s| s.contains(&plan.plan_id)),
        "{inputs}"
    );
    coordinator.stop().await;
}

/// Traces are a window, not the work: an OTLP endpoint Seedling cannot
/// use (https, which it does not speak) costs a warning naming it, and the
/// command does its work.
#[test]
fn an_unusable_trace_endpoint_costs_a_warning_not_the_command() {
    let out = std::process::Command::new(seedling_tests::seedling_bin())
        .args(["plan", "check"])
        .arg(repo_root().join("examples/retail-banking.toml"))
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "https://collector.invalid:4318",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not exporting traces")
            && stderr.contains("https://collector.invalid:4318"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("retail-banking"));
}
