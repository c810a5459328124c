//! A plan's run as an MLflow run (design 6.1): what it was asked for and
//! run with (parameters), how it went (metrics over its attempts), and
//! what it produced (the dataset as the run's input, with its card,
//! manifest and plan as artifacts). `seedling verify` logs a run of its
//! own beside it: the conditions' figures, the report and the plots.

use std::path::Path;
use std::time::{Duration, Instant};

use seedling_telemetry::mlflow::{DatasetInput, Tracker, TrackingSummary};

use crate::dataset::ExportSummary;
use crate::pipeline::Progress;
use crate::plan::Plan;
use crate::verify::VerificationReport;

/// Metrics are logged at most this often (and once more at the end).
const METRICS_EVERY: Duration = Duration::from_secs(2);

/// Where a run is tracked: an MLflow tracking server and experiment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingTarget {
    pub uri: String,
    pub experiment: String,
}

impl TrackingTarget {
    /// A target from a tracking URI as users set `MLFLOW_TRACKING_URI`;
    /// only MLflow's REST API over plain HTTP is spoken.
    pub fn new(uri: &str, experiment: &str) -> Result<Self, String> {
        if !uri.starts_with("http://") {
            return Err(format!(
                "MLflow tracking URI {uri:?} is not an http:// tracking server; Seedling logs through MLflow's REST API over plain HTTP (start one with `mlflow server`; put https behind a local proxy)"
            ));
        }
        Ok(Self {
            uri: uri.to_string(),
            experiment: experiment.to_string(),
        })
    }
}

/// What a plan runs with, beside the plan itself.
#[derive(Debug, Clone)]
pub struct RunContext<'a> {
    pub plan_id: &'a str,
    /// The plan file's name and text (its hash is a parameter).
    pub plan_file: &'a Path,
    pub plan_text: &'a str,
    /// The model (its file, or the models a cluster's workers host) and
    /// its SHA-256.
    pub model: &'a str,
    pub model_sha256: &'a str,
    /// Engine and run settings, as (name, value).
    pub settings: Vec<(String, String)>,
    /// The nodes generating (worker ids; "local" for `seedling run`).
    pub nodes: Vec<String>,
}

/// One plan's MLflow run.
#[derive(Debug)]
pub struct PlanTracking {
    tracker: Tracker,
    last: Option<Instant>,
    /// Tokens and time at the first progress seen: the rate is this run's.
    baseline: Option<(u64, f64)>,
}

impl PlanTracking {
    pub fn start(target: &TrackingTarget, plan: &Plan, context: &RunContext) -> Self {
        use sha2::Digest as _;
        let tags = vec![
            ("seedling.plan_id".into(), context.plan_id.into()),
            ("seedling.domain".into(), plan.domain.name.clone()),
            ("seedling.nodes".into(), context.nodes.join(",")),
            ("mlflow.source.name".into(), "seedling".into()),
            (
                "mlflow.note.content".into(),
                plan.domain.description.clone(),
            ),
        ];
        let tracker = Tracker::start(&target.uri, &target.experiment, context.plan_id, tags);
        let plan_sha256 = hex::encode(sha2::Sha256::digest(context.plan_text.as_bytes()));
        let mut params = vec![
            ("plan_id".to_string(), context.plan_id.to_string()),
            ("plan_file".into(), context.plan_file.display().to_string()),
            ("plan_sha256".into(), plan_sha256),
            ("domain".into(), plan.domain.name.clone()),
            ("seed".into(), plan.seed.to_string()),
            ("model_file".into(), context.model.to_string()),
            ("model_sha256".into(), context.model_sha256.to_string()),
            ("seedling_version".into(), env!("CARGO_PKG_VERSION").into()),
        ];
        params.extend(context.settings.iter().cloned());
        tracker.params(params);
        Self {
            tracker,
            last: None,
            baseline: None,
        }
    }

    /// Logs the run's figures, at most every few seconds.
    pub fn progress(&mut self, progress: &Progress) {
        if self.last.is_some_and(|last| last.elapsed() < METRICS_EVERY) {
            return;
        }
        self.log(progress);
    }

    fn log(&mut self, p: &Progress) {
        self.last = Some(Instant::now());
        let (tokens_before, elapsed_before) = *self
            .baseline
            .get_or_insert((p.generated_tokens, p.elapsed_s));
        let mut values = vec![
            ("accepted".to_string(), p.accepted as f64),
            ("attempts".into(), p.attempts as f64),
            ("generated_tokens".into(), p.generated_tokens as f64),
            ("distinct_1".into(), p.diversity.distinct_1),
            ("distinct_2".into(), p.diversity.distinct_2),
        ];
        if p.attempts > 0 {
            values.push((
                "acceptance_rate".into(),
                p.accepted as f64 / p.attempts as f64,
            ));
        }
        if let Some(dispersion) = p.diversity.dispersion {
            values.push(("embedding_dispersion".into(), dispersion));
        }
        let seconds = p.elapsed_s - elapsed_before;
        if seconds > 0.0 {
            let tokens = p.generated_tokens.saturating_sub(tokens_before);
            values.push(("tokens_per_s".into(), tokens as f64 / seconds));
        }
        values.extend(
            p.rejected
                .iter()
                .map(|(reason, n)| (format!("rejected.{reason}"), *n as f64)),
        );
        self.tracker.metrics(values, p.attempts as i64);
    }

    /// The plan ended and its dataset is written: the last figures, the
    /// dataset, its card, manifest and plan; then the run ends.
    pub fn finished(
        mut self,
        progress: &Progress,
        export: &ExportSummary,
        plan_file: &Path,
    ) -> TrackingSummary {
        self.log(progress);
        let dir = std::fs::canonicalize(&export.dir).unwrap_or_else(|_| export.dir.clone());
        self.tracker.tags(vec![(
            "seedling.dataset_version".into(),
            export.version.clone(),
        )]);
        self.tracker.dataset(DatasetInput {
            name: format!("seedling {}", progress.plan),
            digest: export.version.chars().take(36).collect(),
            source: dir.display().to_string(),
            source_type: "local".into(),
            context: "train".into(),
            profile: serde_json::json!({
                "records": export.records,
                "splits": export.per_split,
            }),
        });
        self.tracker
            .artifact(&export.dir.join("README.md"), "dataset/README.md");
        self.tracker
            .artifact(&export.dir.join("manifest.json"), "dataset/manifest.json");
        let plan_name = plan_file
            .file_name()
            .map_or("plan.toml".into(), |n| n.to_string_lossy().into_owned());
        self.tracker
            .artifact(plan_file, &format!("plan/{plan_name}"));
        self.tracker.finish("FINISHED")
    }

    /// How the plan ended (`finished`, `short`, ...), as the run's tag.
    pub fn state(&self, state: &str) {
        self.tracker
            .tags(vec![("seedling.state".into(), state.to_string())]);
    }

    /// A plan submitted to a cluster ended (`status` FINISHED, FAILED or
    /// KILLED for a cancelled one): its last figures, how it ended and its
    /// plan file. Its dataset is exported by whoever asks for it, later.
    pub fn ended(
        mut self,
        progress: &Progress,
        status: &'static str,
        state: &str,
        plan_file: &Path,
    ) -> TrackingSummary {
        self.log(progress);
        self.state(state);
        let plan_name = plan_file
            .file_name()
            .map_or("plan.toml".into(), |n| n.to_string_lossy().into_owned());
        self.tracker
            .artifact(plan_file, &format!("plan/{plan_name}"));
        self.tracker.finish(status)
    }

    /// The run stopped before its dataset was written: `status` is
    /// FAILED or KILLED (interrupted; it resumes as a new MLflow run).
    pub fn stopped(mut self, progress: &Progress, status: &'static str) -> TrackingSummary {
        self.log(progress);
        self.tracker.finish(status)
    }
}

/// A `seedling verify` run as an MLflow run of its own: the training
/// settings as parameters; every condition's metrics (mean and 95%
/// interval), losses and time as metrics named `CONDITION.METRIC`; the
/// report and plots in `dir` as artifacts; tags that tie it to the dataset
/// version and plan, so it sits beside the generation run that made them.
pub fn track_verification(
    target: &TrackingTarget,
    report: &VerificationReport,
    dir: &Path,
) -> TrackingSummary {
    let tags = vec![
        ("seedling.plan_id".into(), report.plan.clone()),
        (
            "seedling.dataset_version".into(),
            report.dataset_version.clone(),
        ),
        ("seedling.kind".into(), "verification".into()),
        ("mlflow.source.name".into(), "seedling verify".into()),
    ];
    let name = format!("verify {} ({})", report.dataset_version, report.tier);
    let tracker = Tracker::start(&target.uri, &target.experiment, &name, tags);
    let mut params = vec![
        ("dataset_version".into(), report.dataset_version.clone()),
        ("plan_id".into(), report.plan.clone()),
        ("tier".into(), report.tier.clone()),
        ("model".into(), report.model.clone()),
        ("device".into(), report.device.clone()),
        ("probes".into(), report.probes.to_string()),
        ("test_rows".into(), report.test_rows.to_string()),
        ("naive_examples".into(), report.naive.1.to_string()),
        (
            "perturbed_records".into(),
            report.perturbed_records.to_string(),
        ),
    ];
    if let Some(t) = &report.training {
        params.extend([
            ("steps".into(), t.steps.to_string()),
            ("learning_rate".into(), t.learning_rate.to_string()),
            ("lora_r".into(), t.lora_r.to_string()),
            ("lora_alpha".into(), t.lora_alpha.to_string()),
            ("max_tokens".into(), t.max_tokens.to_string()),
            ("bf16".into(), t.bf16.to_string()),
        ]);
    }
    if let Some(shots) = report.shots {
        params.push(("shots".into(), shots.to_string()));
    }
    tracker.params(params);
    let mut values = vec![("seconds".to_string(), report.seconds)];
    for condition in &report.conditions {
        let c = &condition.name;
        for (metric, estimate) in &condition.metrics {
            values.push((format!("{c}.{metric}"), estimate.mean));
            values.push((format!("{c}.{metric}.low"), estimate.lo));
            values.push((format!("{c}.{metric}.high"), estimate.hi));
        }
        values.extend(condition.loss_first.map(|l| (format!("{c}.loss_first"), l)));
        values.extend(condition.loss_last.map(|l| (format!("{c}.loss_last"), l)));
        values.push((format!("{c}.seconds"), condition.seconds));
    }
    tracker.metrics(values, 0);
    let file = report.file_name();
    tracker.artifact(&dir.join(file), &format!("verify/{file}"));
    for plot in &report.plots {
        tracker.artifact(&dir.join(plot), &format!("verify/{plot}"));
    }
    tracker.finish("FINISHED")
}
