//! Cluster configuration files (`cluster-configs/*.toml`): one file may
//! configure a coordinator, a worker, or both (a single-node cluster).
//! Pure data and parsing; the binaries read the file and the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// A parsed cluster configuration file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub coordinator: Option<CoordinatorConfig>,
    pub worker: Option<WorkerConfig>,
}

/// A shared secret, written in the file or named by an environment variable
/// (so that configs can be committed without it).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    pub value: Option<String>,
    pub env: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Lineage store and submitted plans; relative paths start at the config file.
    pub data_dir: PathBuf,
    /// Address of the gRPC API and result ingest.
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: String,
    /// ractor_cluster node port.
    #[serde(default = "default_cluster_port")]
    pub cluster_port: u16,
    /// Interface the node server listens on.
    #[serde(default = "default_listen_ip")]
    pub cluster_listen_ip: String,
    /// The name other nodes know this host by.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// Node cookie: nodes presenting another one are refused.
    #[serde(default)]
    pub cookie: Secret,
    /// Bearer token for everything the gRPC API does (submit, cancel, the
    /// workers' result stream, and all reading), when set.
    #[serde(default)]
    pub token: Secret,
    /// Bearer token that may only read (status, lists, lineage, exports).
    #[serde(default)]
    pub read_token: Secret,
    /// PEM certificate chain and key: the gRPC API serves TLS when both are
    /// set, and node traffic too when `tls_ca` is also set.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The cluster CA (PEM): a node must present a certificate it signed.
    pub tls_ca: Option<PathBuf>,
    /// A worker that sends no heartbeat for this long loses its units.
    #[serde(default = "default_lease_timeout_ms")]
    pub lease_timeout_ms: u64,
    /// Attempt budget per quota record before a stratum counts as short.
    #[serde(default = "default_attempts_per_record")]
    pub attempts_per_record: f64,
    /// What the coordinator accepts at most.
    #[serde(default)]
    pub limits: Limits,
    /// Where Prometheus scrapes this coordinator's `/metrics`, `ip:port`,
    /// or "off".
    #[serde(default = "default_coordinator_metrics")]
    pub metrics_listen: String,
    /// An MLflow tracking server (`http://host:port`): each submitted plan
    /// is logged there as an MLflow run. `MLFLOW_TRACKING_URI` or
    /// `--tracking-uri` at start override it.
    #[serde(default)]
    pub tracking_uri: Option<String>,
    /// The MLflow experiment those runs go into (created when missing).
    #[serde(default)]
    pub tracking_experiment: Option<String>,
}

/// What a coordinator accepts at most (`[coordinator.limits]`); anything
/// over a limit is refused with the limit's name, so an operator knows
/// which setting raises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// A submitted plan's TOML text.
    pub max_plan_bytes: usize,
    /// Reference files one submitted plan carries.
    pub max_reference_files: usize,
    /// Those files' bytes, all together.
    pub max_reference_bytes: usize,
    /// One unit's result as a worker reports it.
    pub max_result_bytes: usize,
    /// Units leased to one worker at once, whatever slots it claims.
    pub max_units_per_worker: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_plan_bytes: 1 << 20,
            max_reference_files: 64,
            max_reference_bytes: 32 << 20,
            max_result_bytes: 4 << 20,
            max_units_per_worker: 256,
        }
    }
}

impl Limits {
    /// Checks a value against the limit named `field`; the error names the
    /// setting that raises it.
    pub fn check(value: usize, limit: usize, what: &str, field: &str) -> Result<(), String> {
        if value <= limit {
            Ok(())
        } else {
            Err(format!(
                "{what} is {value}, over the limit of {limit} (coordinator.limits.{field} in the coordinator's config raises it)"
            ))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Unique in the cluster [default: host name and process id].
    pub id: Option<String>,
    /// The coordinator's ractor_cluster node, `host:port`.
    pub coordinator_node: String,
    /// The coordinator's gRPC address, `http://host:port`.
    pub coordinator_grpc: String,
    /// This node's ractor_cluster port (0 picks a free one).
    #[serde(default)]
    pub cluster_port: u16,
    #[serde(default)]
    pub cookie: Secret,
    #[serde(default)]
    pub token: Secret,
    /// The cluster CA (PEM): trusted for an `https://` coordinator_grpc and
    /// for the coordinator node's certificate.
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate and key (PEM), signed by the cluster CA:
    /// with `tls_ca`, node traffic runs over mutually authenticated TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// GGUF model file [default: the fetch-model cache]; relative paths start at the config file.
    pub model: Option<PathBuf>,
    #[serde(default = "default_ctx")]
    pub ctx: u32,
    /// CPU threads for llama.cpp [default: all cores].
    pub threads: Option<u32>,
    #[serde(default = "default_slots")]
    pub slots: u32,
    #[serde(default)]
    pub gpu_layers: u32,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Where Prometheus scrapes this worker's `/metrics`, `ip:port`, or
    /// "off". Workers sharing a host need one port each.
    #[serde(default = "default_worker_metrics")]
    pub metrics_listen: String,
    /// A second GGUF model for checks only (faithfulness, the rubric
    /// judge), loaded beside the generator; relative paths start at the
    /// config file. None: the worker runs no faithfulness judge.
    pub judge_model: Option<PathBuf>,
    /// Parallel sequences of the judge model.
    #[serde(default = "default_judge_slots")]
    pub judge_slots: u32,
    /// CPU threads for the judge model [default: all cores].
    pub judge_threads: Option<u32>,
}

fn default_grpc_listen() -> String {
    "127.0.0.1:7470".into()
}
fn default_cluster_port() -> u16 {
    7471
}
fn default_listen_ip() -> String {
    "0.0.0.0".into()
}
fn default_hostname() -> String {
    "127.0.0.1".into()
}
fn default_lease_timeout_ms() -> u64 {
    10_000
}
fn default_attempts_per_record() -> f64 {
    6.0
}
fn default_coordinator_metrics() -> String {
    "127.0.0.1:7472".into()
}
fn default_worker_metrics() -> String {
    "127.0.0.1:7473".into()
}
fn default_ctx() -> u32 {
    8192
}
fn default_slots() -> u32 {
    8
}
fn default_judge_slots() -> u32 {
    4
}
fn default_heartbeat_ms() -> u64 {
    1_000
}

/// What is wrong with a configuration, naming the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: {field}: {message}")]
    Invalid {
        file: String,
        field: String,
        message: String,
    },
    #[error("{file}: no [{section}] section")]
    MissingSection { file: String, section: &'static str },
}

impl ClusterConfig {
    /// Parses and checks a configuration; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|err| ConfigError::Parse {
            file: file.to_string(),
            message: err.to_string().trim().to_string(),
        })?;
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            file: file.to_string(),
            field: field.to_string(),
            message,
        };
        if let Some(c) = &config.coordinator {
            check_secret(&c.cookie, "coordinator.cookie", true)
                .map_err(|m| invalid("coordinator.cookie", m))?;
            check_secret(&c.token, "coordinator.token", false)
                .map_err(|m| invalid("coordinator.token", m))?;
            check_secret(&c.read_token, "coordinator.read_token", false)
                .map_err(|m| invalid("coordinator.read_token", m))?;
            if c.read_token.is_set() && !c.token.is_set() {
                return Err(invalid(
                    "coordinator.read_token",
                    "a read-only token needs a token for submitting beside it; without one anybody may submit".into(),
                ));
            }
            if !(1_000..=600_000).contains(&c.lease_timeout_ms) {
                return Err(invalid(
                    "coordinator.lease_timeout_ms",
                    format!("{} is outside 1000..=600000", c.lease_timeout_ms),
                ));
            }
            let limits = [
                ("max_plan_bytes", c.limits.max_plan_bytes),
                ("max_reference_files", c.limits.max_reference_files),
                ("max_reference_bytes", c.limits.max_reference_bytes),
                ("max_result_bytes", c.limits.max_result_bytes),
                ("max_units_per_worker", c.limits.max_units_per_worker),
            ];
            if let Some((name, _)) = limits.iter().find(|(_, v)| *v == 0) {
                return Err(invalid(
                    &format!("coordinator.limits.{name}"),
                    "must be at least 1".into(),
                ));
            }
            // gRPC messages carry a plan with its files, or a result, whole.
            if c.limits.max_plan_bytes + c.limits.max_reference_bytes > 1 << 30
                || c.limits.max_result_bytes > 1 << 30
            {
                return Err(invalid(
                    "coordinator.limits",
                    "a message over 1 GiB is not what gRPC is for; keep plans with their files and results under it".into(),
                ));
            }
            if !(c.attempts_per_record.is_finite() && c.attempts_per_record >= 1.0) {
                return Err(invalid(
                    "coordinator.attempts_per_record",
                    "must be >= 1".into(),
                ));
            }
            check_addr(&c.grpc_listen).map_err(|m| invalid("coordinator.grpc_listen", m))?;
            if c.tls_cert.is_some() != c.tls_key.is_some() {
                return Err(invalid(
                    "coordinator.tls_cert",
                    "set tls_cert and tls_key together".into(),
                ));
            }
            if c.tls_ca.is_some() && c.tls_cert.is_none() {
                return Err(invalid(
                    "coordinator.tls_ca",
                    "node TLS needs this node's tls_cert and tls_key too".into(),
                ));
            }
            c.cluster_listen_ip
                .parse::<std::net::IpAddr>()
                .map_err(|e| invalid("coordinator.cluster_listen_ip", e.to_string()))?;
            metrics_address(&c.metrics_listen, "coordinator.metrics_listen")
                .map_err(|m| invalid("coordinator.metrics_listen", m))?;
        }
        if let Some(w) = &config.worker {
            check_secret(&w.cookie, "worker.cookie", true)
                .map_err(|m| invalid("worker.cookie", m))?;
            check_secret(&w.token, "worker.token", false)
                .map_err(|m| invalid("worker.token", m))?;
            check_addr(&w.coordinator_node).map_err(|m| invalid("worker.coordinator_node", m))?;
            if !(w.coordinator_grpc.starts_with("http://")
                || w.coordinator_grpc.starts_with("https://"))
            {
                return Err(invalid(
                    "worker.coordinator_grpc",
                    format!(
                        "{:?} must start with http:// or https://",
                        w.coordinator_grpc
                    ),
                ));
            }
            if w.tls_cert.is_some() != w.tls_key.is_some() {
                return Err(invalid(
                    "worker.tls_cert",
                    "set tls_cert and tls_key together".into(),
                ));
            }
            if w.tls_cert.is_some() && w.tls_ca.is_none() {
                return Err(invalid(
                    "worker.tls_cert",
                    "node TLS needs the cluster CA in tls_ca too".into(),
                ));
            }
            metrics_address(&w.metrics_listen, "worker.metrics_listen")
                .map_err(|m| invalid("worker.metrics_listen", m))?;
            if w.slots == 0 || w.slots > 256 {
                return Err(invalid(
                    "worker.slots",
                    format!("{} is outside 1..=256", w.slots),
                ));
            }
            if w.ctx < 512 {
                return Err(invalid("worker.ctx", format!("{} is below 512", w.ctx)));
            }
            if !(100..=60_000).contains(&w.heartbeat_ms) {
                return Err(invalid(
                    "worker.heartbeat_ms",
                    format!("{} is outside 100..=60000", w.heartbeat_ms),
                ));
            }
            if let Some(id) = &w.id
                && (id.is_empty()
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
            {
                return Err(invalid(
                    "worker.id",
                    format!("{id:?}: use letters, digits, '-', '_' or '.'"),
                ));
            }
        }
        Ok(config)
    }
}

impl CoordinatorConfig {
    /// Whether node traffic runs over mutually authenticated TLS.
    pub fn node_tls(&self) -> bool {
        self.tls_ca.is_some() && self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// What this coordinator would carry in plain text beyond this host;
    /// empty when everything off-host is encrypted.
    pub fn plaintext_exposures(&self) -> Vec<String> {
        let mut exposed = Vec::new();
        if !self.node_tls() && !is_loopback(&self.cluster_listen_ip) {
            exposed.push(format!(
                "node traffic (units, prompts, heartbeats) on {}:{} has no TLS: set tls_cert, tls_key and tls_ca",
                self.cluster_listen_ip, self.cluster_port
            ));
        }
        if self.tls_cert.is_none() && !is_loopback(host_of(&self.grpc_listen)) {
            exposed.push(format!(
                "the gRPC API (plans, records, tokens) on {} has no TLS: set tls_cert and tls_key",
                self.grpc_listen
            ));
        }
        exposed
    }
}

impl WorkerConfig {
    /// Whether node traffic runs over mutually authenticated TLS.
    pub fn node_tls(&self) -> bool {
        self.tls_ca.is_some() && self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// What this worker would send in plain text beyond this host.
    pub fn plaintext_exposures(&self) -> Vec<String> {
        let mut exposed = Vec::new();
        if !self.node_tls() && !is_loopback(host_of(&self.coordinator_node)) {
            exposed.push(format!(
                "node traffic to {} has no TLS: set tls_cert, tls_key and tls_ca",
                self.coordinator_node
            ));
        }
        if let Some(rest) = self.coordinator_grpc.strip_prefix("http://") {
            let authority = rest.split('/').next().unwrap_or(rest);
            if !is_loopback(host_of(authority)) {
                exposed.push(format!(
                    "results to {} go without TLS: use an https:// coordinator_grpc",
                    self.coordinator_grpc
                ));
            }
        }
        exposed
    }
}

/// A `metrics_listen` setting: the address to serve `/metrics` on, or
/// `None` for "off".
pub fn metrics_address(value: &str, field: &str) -> Result<Option<SocketAddr>, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| format!("{field} {value:?} is neither ip:port nor \"off\""))
}

/// The host of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn check_secret(secret: &Secret, field: &str, required: bool) -> Result<(), String> {
    match (&secret.value, &secret.env) {
        (Some(_), Some(_)) => Err("set value or env, not both".into()),
        (Some(v), None) if v.is_empty() => Err("an empty secret protects nothing".into()),
        (None, None) if required => Err(format!("set {field}.value or {field}.env")),
        _ => Ok(()),
    }
}

fn check_addr(addr: &str) -> Result<(), String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!("{addr:?} is not host:port")),
    }
}

impl Secret {
    pub fn is_set(&self) -> bool {
        self.value.is_some() || self.env.is_some()
    }

    /// The secret's value, reading the named environment variable through
    /// `env`. `None` when neither is configured.
    pub fn resolve(
        &self,
        field: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, String> {
        match (&self.value, &self.env) {
            (Some(value), _) => Ok(Some(value.clone())),
            (None, Some(var)) => match env(var) {
                Some(value) if !value.is_empty() => Ok(Some(value)),
                _ => Err(format!("{field}: environment variable {var} is not set")),
            },
            (None, None) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &str = r#"
[coordinator]
data_dir = "data"
cookie = { value = "c" }
token = { env = "TOKEN" }
lease_timeout_ms = 3000

[worker]
coordinator_node = "127.0.0.1:7471"
coordinator_grpc = "http://127.0.0.1:7470"
cookie = { env = "COOKIE" }
slots = 4
"#;

    #[test]
    fn a_single_node_config_parses_with_defaults() {
        let config = ClusterConfig::parse("both.toml", BOTH).unwrap();
        let c = config.coordinator.unwrap();
        assert_eq!(
            (c.grpc_listen.as_str(), c.cluster_port, c.lease_timeout_ms),
            ("127.0.0.1:7470", 7471, 3000)
        );
        let w = config.worker.unwrap();
        assert_eq!(
            (w.slots, w.ctx, w.heartbeat_ms, w.cluster_port),
            (4, 8192, 1000, 0)
        );
        assert_eq!(w.judge_model, None, "no judge model unless one is named");
        let judged = ClusterConfig::parse(
            "judged.toml",
            &BOTH.replace(
                "slots = 4",
                "slots = 4\njudge_model = \"judge.gguf\"\njudge_threads = 1",
            ),
        )
        .unwrap()
        .worker
        .unwrap();
        assert_eq!(
            (judged.judge_model, judged.judge_slots, judged.judge_threads),
            (Some(PathBuf::from("judge.gguf")), 4, Some(1))
        );
        // Metrics are on, on loopback, for both; each node has its own port.
        assert_eq!(
            metrics_address(&c.metrics_listen, "c").unwrap(),
            Some("127.0.0.1:7472".parse().unwrap())
        );
        assert_eq!(
            metrics_address(&w.metrics_listen, "w").unwrap(),
            Some("127.0.0.1:7473".parse().unwrap())
        );
        assert_eq!(metrics_address("off", "w").unwrap(), None);
    }

    #[test]
    fn secrets_come_from_the_file_or_the_environment() {
        let config = ClusterConfig::parse("both.toml", BOTH).unwrap();
        let c = config.coordinator.unwrap();
        assert_eq!(
            c.cookie.resolve("cookie", |_| None).unwrap().as_deref(),
            Some("c")
        );
        assert_eq!(
            c.token
                .resolve("token", |v| (v == "TOKEN").then(|| "t".into()))
                .unwrap()
                .as_deref(),
            Some("t")
        );
        let err = c.token.resolve("coordinator.token", |_| None).unwrap_err();
        assert!(err.contains("TOKEN is not set"), "{err}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                BOTH.replace("lease_timeout_ms = 3000", "lease_timeout_ms = 5"),
                "coordinator.lease_timeout_ms",
            ),
            (BOTH.replace("slots = 4", "slots = 0"), "worker.slots"),
            (
                BOTH.replace("cookie = { value = \"c\" }", ""),
                "coordinator.cookie",
            ),
            (
                BOTH.replace("\"http://127.0.0.1:7470\"", "\"127.0.0.1:7470\""),
                "worker.coordinator_grpc",
            ),
            (
                BOTH.replace("\"127.0.0.1:7471\"", "\"nowhere\""),
                "worker.coordinator_node",
            ),
            (
                BOTH.replace("slots = 4", "slots = 4\nmetrics_listen = \"localhost\""),
                "worker.metrics_listen",
            ),
            (
                BOTH.replace("lease_timeout_ms = 3000", "metrics_listen = \"9090\""),
                "coordinator.metrics_listen",
            ),
        ];
        for (text, field) in cases {
            match ClusterConfig::parse("c.toml", &text) {
                Err(ConfigError::Invalid { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: expected an invalid-field error, got {other:?}"),
            }
        }
        let err = ClusterConfig::parse("c.toml", "[coordinator]\ndata_dr = 1\n").unwrap_err();
        assert!(err.to_string().contains("data_dr"), "{err}");
    }

    #[test]
    fn limits_default_and_can_be_raised_one_at_a_time() {
        let raised = BOTH.replace(
            "lease_timeout_ms = 3000",
            "lease_timeout_ms = 3000\nlimits = { max_reference_files = 500 }",
        );
        let c = ClusterConfig::parse("c.toml", &raised)
            .unwrap()
            .coordinator
            .unwrap();
        assert_eq!(c.limits.max_reference_files, 500);
        assert_eq!(c.limits.max_plan_bytes, Limits::default().max_plan_bytes);
        let err = Limits::check(65, 64, "reference files", "max_reference_files").unwrap_err();
        assert!(
            err.contains("65") && err.contains("coordinator.limits.max_reference_files"),
            "{err}"
        );
        assert!(Limits::check(64, 64, "reference files", "max_reference_files").is_ok());
    }

    #[test]
    fn plain_text_beyond_this_host_is_named() {
        let config = ClusterConfig::parse("both.toml", BOTH).unwrap();
        let c = config.coordinator.unwrap();
        // The node port listens on every interface by default.
        let exposed = c.plaintext_exposures();
        assert_eq!(exposed.len(), 1, "{exposed:?}");
        assert!(exposed[0].contains("0.0.0.0:7471"), "{exposed:?}");
        let loopback = CoordinatorConfig {
            cluster_listen_ip: "127.0.0.1".into(),
            ..c.clone()
        };
        assert!(loopback.plaintext_exposures().is_empty());
        let public_api = CoordinatorConfig {
            grpc_listen: "10.0.0.5:7470".into(),
            ..loopback.clone()
        };
        assert!(public_api.plaintext_exposures()[0].contains("gRPC API"));
        let encrypted = CoordinatorConfig {
            grpc_listen: "10.0.0.5:7470".into(),
            tls_cert: Some("node.pem".into()),
            tls_key: Some("node.key".into()),
            tls_ca: Some("ca.pem".into()),
            ..c
        };
        assert!(encrypted.plaintext_exposures().is_empty());

        let w = config.worker.unwrap();
        assert!(w.plaintext_exposures().is_empty(), "loopback coordinator");
        let remote = WorkerConfig {
            coordinator_node: "10.0.0.5:7471".into(),
            coordinator_grpc: "http://10.0.0.5:7470".into(),
            ..w.clone()
        };
        assert_eq!(remote.plaintext_exposures().len(), 2);
        let remote_tls = WorkerConfig {
            coordinator_grpc: "https://coordinator.internal:7470".into(),
            tls_ca: Some("ca.pem".into()),
            tls_cert: Some("node.pem".into()),
            tls_key: Some("node.key".into()),
            ..remote
        };
        assert!(remote_tls.plaintext_exposures().is_empty());
    }

    #[test]
    fn tls_and_token_settings_come_in_working_sets() {
        let cases = [
            (
                BOTH.replace("lease_timeout_ms", "tls_ca = \"ca.pem\"\nlease_timeout_ms"),
                "coordinator.tls_ca",
            ),
            (
                BOTH.replace("slots = 4", "slots = 4\ntls_cert = \"w.pem\""),
                "worker.tls_cert",
            ),
            (
                BOTH.replace(
                    "slots = 4",
                    "slots = 4\ntls_cert = \"w.pem\"\ntls_key = \"w.key\"",
                ),
                "worker.tls_cert",
            ),
            (
                BOTH.replace(
                    "token = { env = \"TOKEN\" }",
                    "read_token = { value = \"r\" }",
                ),
                "coordinator.read_token",
            ),
            (
                BOTH.replace(
                    "lease_timeout_ms = 3000",
                    "lease_timeout_ms = 3000\nlimits = { max_plan_bytes = 0 }",
                ),
                "coordinator.limits.max_plan_bytes",
            ),
        ];
        for (text, field) in cases {
            match ClusterConfig::parse("c.toml", &text) {
                Err(ConfigError::Invalid { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: expected an invalid-field error, got {other:?}"),
            }
        }
    }
}
