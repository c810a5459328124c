//! A real Prometheus server for tests (Debian's `prometheus`, which
//! `scripts/setup` installs): it scrapes the given targets every second
//! into a store in a temporary directory, and is asked through its HTTP
//! API, as a dashboard asks it.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::http::percent_encode;
use crate::{free_port, wait_for};

/// A Prometheus process; killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    address: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One series of a query's answer: its labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: serde_json::Value,
    pub value: f64,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (job name, address) every
    /// second and waits until it is ready.
    pub fn start(targets: &[(&str, SocketAddr)]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let jobs: String = targets
            .iter()
            .map(|(job, address)| {
                format!(
                    "  - job_name: {job}\n    scrape_interval: 1s\n    static_configs:\n      - targets: [\"{address}\"]\n"
                )
            })
            .collect();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, format!("scrape_configs:\n{jobs}")).unwrap();
        let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start prometheus ({e}): run scripts/setup, which installs it")
            });
        let prometheus = Self {
            child,
            address,
            dir,
        };
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            prometheus
                .get("/-/ready")
                .is_some_and(|(status, _)| status == 200)
        });
        prometheus
    }

    /// Its own log, for a failing test to show.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query's series.
    pub fn query(&self, promql: &str) -> Vec<Sample> {
        let (status, body) = self
            .get(&format!("/api/v1/query?query={}", percent_encode(promql)))
            .expect("Prometheus answers");
        let answer: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{promql}: not JSON ({e}): {body}"));
        assert_eq!(status, 200, "{promql}: {body}");
        answer["data"]["result"]
            .as_array()
            .expect("a vector result")
            .iter()
            .map(|series| Sample {
                labels: series["metric"].clone(),
                value: series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .expect("a sample value"),
            })
            .collect()
    }

    /// The value of a query that yields one series, if it yields one.
    pub fn value(&self, promql: &str) -> Option<f64> {
        match self.query(promql).as_slice() {
            [one] => Some(one.value),
            _ => None,
        }
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        crate::http::get(self.address, path)
    }
}

/// The queries of the shipped Grafana dashboard
/// (`cluster-configs/monitoring/grafana-dashboard.json`): (panel title,
/// PromQL expression).
pub fn dashboard_queries() -> Vec<(String, String)> {
    let path = crate::repo_root().join("cluster-configs/monitoring/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_string();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_string()))
        })
        .collect()
}
