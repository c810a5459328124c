//! Experiment tracking in MLflow through its REST API: one MLflow run per
//! Seedling run, with parameters, metrics over time, tags, a dataset input
//! and artifacts.
//!
//! The tracker never holds a run up: calls go to a thread of its own over
//! a queue, and a tracking server that is down or refuses a call costs one
//! warning; whatever could not be logged is counted by kind and listed in
//! the [`TrackingSummary`], so the user knows what the MLflow run lacks.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use seedling_common::time::now_unix_ms;

use serde_json::{Value, json};

/// How long one call to the tracking server may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// MLflow's limits per log-batch call.
const BATCH_METRICS: usize = 1000;
const BATCH_PARAMS: usize = 100;
/// MLflow refuses longer parameter values.
const PARAM_VALUE_CHARS: usize = 6000;

#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    #[error("{call}: {reason}")]
    Call { call: String, reason: String },
}

/// A dataset logged as a run's input (MLflow's dataset entity).
#[derive(Debug, Clone)]
pub struct DatasetInput {
    pub name: String,
    pub digest: String,
    /// Where it lives, as a URI or path, and what kind of place that is.
    pub source: String,
    pub source_type: String,
    /// MLflow's `mlflow.data.context` tag: train, eval...
    pub context: String,
    /// A JSON summary (records, splits) shown in the UI.
    pub profile: Value,
}

/// What to log.
#[derive(Debug)]
enum Event {
    Params(Vec<(String, String)>),
    Metrics(Vec<(String, f64)>, i64),
    Tags(Vec<(String, String)>),
    Dataset(DatasetInput),
    Artifact { file: PathBuf, name: String },
    Finish(&'static str),
}

impl Event {
    fn kind(&self) -> &'static str {
        match self {
            Self::Params(_) => "parameters",
            Self::Metrics(..) => "metric batches",
            Self::Tags(_) => "tags",
            Self::Dataset(_) => "dataset inputs",
            Self::Artifact { .. } => "artifacts",
            Self::Finish(_) => "the run's end",
        }
    }
}

/// What reached MLflow, and what did not.
#[derive(Debug, Clone, Default)]
pub struct TrackingSummary {
    /// The run in MLflow's UI, once it was created; `None` when it could
    /// not be, and nothing was logged.
    pub run_url: Option<String>,
    pub run_id: Option<String>,
    /// Counts of what was not logged, by kind ("artifacts": 2), and why
    /// the first failure happened.
    pub not_logged: Vec<(String, usize)>,
    pub first_error: Option<String>,
}

/// An MLflow run being tracked from a thread of its own.
#[derive(Debug)]
pub struct Tracker {
    events: mpsc::Sender<Event>,
    thread: JoinHandle<TrackingSummary>,
}

impl Tracker {
    /// Starts tracking one run in `experiment` (created when missing) on
    /// the server at `uri`. Returns at once: the server is first asked on
    /// the tracker's thread.
    pub fn start(uri: &str, experiment: &str, run_name: &str, tags: Vec<(String, String)>) -> Self {
        let (events, inbox) = mpsc::channel();
        let client = Client::new(uri);
        let (experiment, run_name) = (experiment.to_string(), run_name.to_string());
        let thread = std::thread::Builder::new()
            .name("mlflow-tracker".into())
            .spawn(move || track(&client, &experiment, &run_name, tags, &inbox))
            .expect("spawning the tracker thread");
        Self { events, thread }
    }

    pub fn params(&self, params: Vec<(String, String)>) {
        let _ = self.events.send(Event::Params(params));
    }

    /// Metric values at `step` (MLflow plots each key over its steps).
    pub fn metrics(&self, values: Vec<(String, f64)>, step: i64) {
        let _ = self.events.send(Event::Metrics(values, step));
    }

    pub fn tags(&self, tags: Vec<(String, String)>) {
        let _ = self.events.send(Event::Tags(tags));
    }

    pub fn dataset(&self, input: DatasetInput) {
        let _ = self.events.send(Event::Dataset(input));
    }

    /// Uploads `file` into the run's artifacts as `name` (a relative path).
    pub fn artifact(&self, file: &Path, name: &str) {
        let _ = self.events.send(Event::Artifact {
            file: file.to_path_buf(),
            name: name.to_string(),
        });
    }

    /// Ends the run with `status` (FINISHED, FAILED, KILLED), waits for
    /// everything queued, and says what was logged.
    pub fn finish(self, status: &'static str) -> TrackingSummary {
        let _ = self.events.send(Event::Finish(status));
        drop(self.events);
        self.thread.join().unwrap_or_default()
    }
}

fn track(
    client: &Client,
    experiment: &str,
    run_name: &str,
    tags: Vec<(String, String)>,
    inbox: &mpsc::Receiver<Event>,
) -> TrackingSummary {
    let mut summary = TrackingSummary::default();
    let fail = |summary: &mut TrackingSummary, kind: &str, error: TrackingError| {
        if summary.first_error.is_none() {
            tracing::warn!(server = %client.base, %error, "MLflow tracking failed; the run goes on, and its summary says what was not logged");
            eprintln!(
                "seedling: MLflow at {} failed ({error}); the run goes on without it",
                client.base
            );
            summary.first_error = Some(error.to_string());
        }
        match summary.not_logged.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => *n += 1,
            None => summary.not_logged.push((kind.to_string(), 1)),
        }
    };
    let run = client
        .experiment_id(experiment)
        .and_then(|id| client.create_run(&id, run_name, &tags).map(|run| (id, run)));
    let (experiment_id, run) = match run {
        Ok(created) => created,
        Err(error) => {
            // Without a run nothing else can be logged: the summary's
            // missing `run_id` says so.
            fail(&mut summary, "the run", error);
            for _ in inbox {}
            return summary;
        }
    };
    summary.run_id = Some(run.id.clone());
    summary.run_url = Some(format!(
        "{}/#/experiments/{experiment_id}/runs/{}",
        client.base, run.id
    ));
    for event in inbox {
        let kind = event.kind();
        let logged = match event {
            Event::Params(params) => client.log_params(&run.id, &params),
            Event::Metrics(values, step) => client.log_metrics(&run.id, &values, step),
            Event::Tags(tags) => client.log_tags(&run.id, &tags),
            Event::Dataset(input) => client.log_dataset(&run.id, &input),
            Event::Artifact { file, name } => client.upload(&run, &file, &name),
            Event::Finish(status) => client.finish(&run.id, status),
        };
        if let Err(error) = logged {
            fail(&mut summary, kind, error);
        }
    }
    summary
}

/// A created MLflow run.
#[derive(Debug, Clone)]
struct RunRef {
    id: String,
    artifact_uri: String,
}

/// The REST calls Seedling makes.
#[derive(Debug)]
struct Client {
    base: String,
    agent: ureq::Agent,
}

fn pairs(values: &[(String, String)]) -> Vec<Value> {
    values
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": v }))
        .collect()
}

impl Client {
    fn new(uri: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(CALL_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base: uri.trim_end_matches('/').to_string(),
            agent,
        }
    }

    /// POSTs `body` to an MLflow API `call`; the answer's JSON.
    fn post(&self, call: &str, body: &Value) -> Result<Value, TrackingError> {
        let url = format!("{}/api/2.0/mlflow/{call}", self.base);
        let response = self.agent.post(&url).send_json(body);
        answer(call, response)
    }

    fn experiment_id(&self, name: &str) -> Result<String, TrackingError> {
        let call = "experiments/get-by-name";
        let url = format!("{}/api/2.0/mlflow/{call}", self.base);
        let response = self.agent.get(&url).query("experiment_name", name).call();
        match answer(call, response) {
            Ok(found) => Ok(found["experiment"]["experiment_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()),
            Err(TrackingError::Call { reason, .. })
                if reason.contains("RESOURCE_DOES_NOT_EXIST") =>
            {
                let created = self.post("experiments/create", &json!({ "name": name }))?;
                Ok(created["experiment_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string())
            }
            Err(other) => Err(other),
        }
    }

    fn create_run(
        &self,
        experiment: &str,
        name: &str,
        tags: &[(String, String)],
    ) -> Result<RunRef, TrackingError> {
        let created = self.post(
            "runs/create",
            &json!({
                "experiment_id": experiment,
                "run_name": name,
                "start_time": now_unix_ms(),
                "tags": pairs(tags),
            }),
        )?;
        let info = &created["run"]["info"];
        Ok(RunRef {
            id: info["run_id"].as_str().unwrap_or_default().to_string(),
            artifact_uri: info["artifact_uri"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
    }

    fn log_params(&self, run: &str, params: &[(String, String)]) -> Result<(), TrackingError> {
        let clipped: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.clone(), v.chars().take(PARAM_VALUE_CHARS).collect()))
            .collect();
        for chunk in clipped.chunks(BATCH_PARAMS) {
            self.post(
                "runs/log-batch",
                &json!({ "run_id": run, "params": pairs(chunk) }),
            )?;
        }
        Ok(())
    }

    fn log_metrics(
        &self,
        run: &str,
        values: &[(String, f64)],
        step: i64,
    ) -> Result<(), TrackingError> {
        let timestamp = now_unix_ms();
        let metrics: Vec<Value> = values
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| json!({ "key": k, "value": v, "timestamp": timestamp, "step": step }))
            .collect();
        for chunk in metrics.chunks(BATCH_METRICS) {
            self.post(
                "runs/log-batch",
                &json!({ "run_id": run, "metrics": chunk }),
            )?;
        }
        Ok(())
    }

    fn log_tags(&self, run: &str, tags: &[(String, String)]) -> Result<(), TrackingError> {
        self.post(
            "runs/log-batch",
            &json!({ "run_id": run, "tags": pairs(tags) }),
        )
        .map(drop)
    }

    fn log_dataset(&self, run: &str, input: &DatasetInput) -> Result<(), TrackingError> {
        self.post(
            "runs/log-inputs",
            &json!({
                "run_id": run,
                "datasets": [{
                    "tags": [{ "key": "mlflow.data.context", "value": input.context }],
                    "dataset": {
                        "name": input.name,
                        "digest": input.digest,
                        "source_type": input.source_type,
                        "source": json!({ "uri": input.source }).to_string(),
                        "profile": input.profile.to_string(),
                    },
                }],
            }),
        )
        .map(drop)
    }

    /// Puts a file where the run's artifacts go: through the server's
    /// artifact proxy (`mlflow-artifacts:` URIs), or into a local
    /// directory (`file:` URIs, a server on this machine).
    fn upload(&self, run: &RunRef, file: &Path, name: &str) -> Result<(), TrackingError> {
        let failed = |reason: String| TrackingError::Call {
            call: format!("artifact {name}"),
            reason,
        };
        let bytes = std::fs::read(file).map_err(|e| failed(format!("{}: {e}", file.display())))?;
        let uri = run.artifact_uri.as_str();
        if let Some(rest) = uri.strip_prefix("mlflow-artifacts:") {
            // mlflow-artifacts:/<path> or mlflow-artifacts://host/<path>.
            let path = rest.trim_start_matches("//").trim_start_matches('/');
            let path = if rest.starts_with("//") {
                path.split_once('/').map_or("", |(_, p)| p)
            } else {
                path
            };
            let url = format!(
                "{}/api/2.0/mlflow-artifacts/artifacts/{path}/{name}",
                self.base
            );
            return answer("mlflow-artifacts", self.agent.put(&url).send(&bytes[..])).map(drop);
        }
        let dir = uri.strip_prefix("file://").unwrap_or(uri);
        if dir.starts_with('/') {
            let target = Path::new(dir).join(name);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| failed(e.to_string()))?;
            }
            return std::fs::write(&target, bytes).map_err(|e| failed(e.to_string()));
        }
        Err(failed(format!(
            "the run's artifact store {uri} is not one Seedling writes to (serve artifacts through the tracking server)"
        )))
    }

    fn finish(&self, run: &str, status: &str) -> Result<(), TrackingError> {
        self.post(
            "runs/update",
            &json!({ "run_id": run, "status": status, "end_time": now_unix_ms() }),
        )
        .map(drop)
    }
}

/// An MLflow answer's JSON, or why the call failed (MLflow's own error
/// code and message when it gave one).
fn answer(
    call: &str,
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Value, TrackingError> {
    let failed = |reason: String| TrackingError::Call {
        call: call.to_string(),
        reason,
    };
    let mut response = response.map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| failed(e.to_string()))?;
    if !status.is_success() {
        let detail: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        return Err(failed(
            match (detail["error_code"].as_str(), detail["message"].as_str()) {
                (Some(code), Some(message)) => format!("{status}: {code}: {message}"),
                _ => format!("{status}: {}", text.chars().take(300).collect::<String>()),
            },
        ));
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| failed(format!("not JSON ({e})")))
}
