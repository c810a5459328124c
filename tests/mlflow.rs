//! A real MLflow tracking server for tests (the `mlflow` package in the
//! Python environment `scripts/setup` makes): a SQLite store and an
//! artifact directory in a temporary directory, asked through its REST API
//! as the MLflow UI asks it.
//!
//! `mlflow server` serves from child processes (uvicorn's, its job
//! runner's), so it starts in a process group of its own and the whole
//! group is killed: killing the launcher alone leaves the port served.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::http::{get, percent_encode, request};
use crate::{free_port, pyenv, wait_for};

#[derive(Debug)]
pub struct MlflowServer {
    child: Child,
    pub address: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl MlflowServer {
    pub fn start() -> Self {
        let mlflow = pyenv().join("bin/mlflow");
        assert!(
            mlflow.exists(),
            "{} is missing: run scripts/test (scripts/setup installs mlflow there)",
            mlflow.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.path().join("mlflow.log")).unwrap();
        let child = Command::new(mlflow)
            .args(["server", "--host", "127.0.0.1", "--workers", "1"])
            .args(["--port", &address.port().to_string()])
            .arg("--backend-store-uri")
            .arg(format!(
                "sqlite:///{}",
                dir.path().join("mlflow.db").display()
            ))
            .arg("--artifacts-destination")
            .arg(dir.path().join("artifacts"))
            .env("MLFLOW_HOME", dir.path())
            .env("HOME", dir.path())
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mlflow server starts");
        let server = Self {
            child,
            address,
            dir,
        };
        wait_for("the MLflow server", Duration::from_secs(180), || {
            get(address, "/health").is_some_and(|(status, _)| status == 200)
        });
        server
    }

    pub fn uri(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Kills the server and everything it started; its port stops answering.
    pub fn stop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }

    /// GET an API path; panics with the server's log when it fails.
    pub fn api(&self, path: &str) -> serde_json::Value {
        let (status, body) = get(self.address, path).expect("MLflow answers");
        assert_eq!(status, 200, "{path}: {body}\n{}", self.log());
        serde_json::from_str(&body).unwrap()
    }

    /// The run `run_id` as `runs/get` returns it.
    pub fn run(&self, run_id: &str) -> serde_json::Value {
        self.api(&format!(
            "/api/2.0/mlflow/runs/get?run_id={}",
            percent_encode(run_id)
        ))["run"]
            .clone()
    }

    /// The names of a run's artifacts under `path`.
    pub fn artifacts(&self, run_id: &str, path: &str) -> Vec<String> {
        let listed = self.api(&format!(
            "/api/2.0/mlflow/artifacts/list?run_id={}&path={}",
            percent_encode(run_id),
            percent_encode(path)
        ));
        listed["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["path"].as_str().map(str::to_string))
            .collect()
    }

    /// The runs of `experiment` tagged `key` = `value`, as `runs/search`
    /// returns them (none when the experiment does not exist yet).
    pub fn runs_tagged(&self, experiment: &str, key: &str, value: &str) -> Vec<serde_json::Value> {
        let found = get(
            self.address,
            &format!(
                "/api/2.0/mlflow/experiments/get-by-name?experiment_name={}",
                percent_encode(experiment)
            ),
        );
        let Some((200, body)) = found else {
            return Vec::new();
        };
        let experiment: serde_json::Value = serde_json::from_str(&body).unwrap();
        let search = serde_json::json!({
            "experiment_ids": [experiment["experiment"]["experiment_id"]],
            "filter": format!("tags.`{key}` = '{value}'"),
        });
        let (status, body) = request(
            self.address,
            "POST",
            "/api/2.0/mlflow/runs/search",
            &[],
            Some(&search),
        )
        .expect("MLflow answers");
        assert_eq!(status, 200, "runs/search: {body}\n{}", self.log());
        let runs: serde_json::Value = serde_json::from_str(&body).unwrap();
        runs["runs"].as_array().cloned().unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mlflow.log")).unwrap_or_default()
    }
}
