//! MLflow tracking options shared by `seedling run` and `seedling verify`,
//! and how a run's tracking summary is printed.

use clap::Args;
use seedling_coordinator::tracking::TrackingTarget;
use seedling_telemetry::mlflow::TrackingSummary;

#[derive(Debug, Clone, Args)]
pub struct TrackingArgs {
    /// An MLflow tracking server (http://host:port): the work is logged
    /// there as an MLflow run (parameters, metrics, its files)
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    pub tracking_uri: Option<String>,
    /// The MLflow experiment the run goes into (created when missing)
    #[arg(long, env = "MLFLOW_EXPERIMENT_NAME", default_value = "seedling")]
    pub experiment: String,
}

impl TrackingArgs {
    /// Where to track, if asked; a URI that cannot work is refused up
    /// front. `untracked` names what to do instead ("run untracked").
    pub fn target(&self, untracked: &str) -> anyhow::Result<Option<TrackingTarget>> {
        self.tracking_uri
            .as_deref()
            .map(|uri| TrackingTarget::new(uri, &self.experiment))
            .transpose()
            .map_err(|e| anyhow::anyhow!("{e}; or unset MLFLOW_TRACKING_URI to {untracked}"))
    }
}

/// What reached MLflow, in the summary's words.
pub fn print_tracking(tracked: &TrackingSummary) {
    let why = tracked.first_error.as_deref().unwrap_or("unknown error");
    match &tracked.run_url {
        Some(url) => println!("  tracked in MLflow: {url}"),
        None => {
            println!("  not logged to MLflow at all ({why}); the dataset is complete on disk");
            return;
        }
    }
    if !tracked.not_logged.is_empty() {
        let missing: Vec<String> = tracked
            .not_logged
            .iter()
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect();
        println!("  not logged to MLflow: {} ({why})", missing.join(", "));
    }
}
