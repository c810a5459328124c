//! The cluster's doors, with a real coordinator (`seedling start
//! coordinator`, no model needed) and certificates made by `seedling
//! cluster certs`: node traffic is mutual TLS against the cluster CA with
//! the cookie as a second factor, a read-only token cannot submit, and
//! plain text beyond loopback needs an explicit `--insecure`.
//!
//! The probing node is a ractor_cluster node server in this test process
//! dialling the coordinator exactly as a worker does (`NodeTls::connect`);
//! it has joined when the coordinator's gate shows up in its process group.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use ractor::Actor;
use ractor_cluster::NodeServer;
use ractor_cluster::node::NodeConnectionMode;
use seedling_proto::cluster::COORDINATOR_GROUP;
use seedling_proto::node_tls::{NodeTls, NodeTlsPem};
use seedling_tests::{free_port, seedling_bin, test_plan, wait_for};

const COOKIE: &str = "security-cookie";
const OPERATOR_TOKEN: &str = "operator-token";
const READ_TOKEN: &str = "read-only-token";

fn seedling(args: &[&str]) -> Output {
    Command::new(seedling_bin())
        .args(args)
        .env_remove("SEEDLING_TOKEN")
        .env_remove("SEEDLING_COORDINATOR")
        .output()
        .unwrap()
}

fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA and the named nodes' certificates in `dir`, made by the CLI.
fn certificates(dir: &Path, nodes: &[&str]) {
    let dir_arg = dir.to_str().unwrap();
    succeeded(&seedling(&["cluster", "certs", "init", "--dir", dir_arg]));
    for node in nodes {
        succeeded(&seedling(&[
            "cluster", "certs", "issue", node, "--dir", dir_arg,
        ]));
    }
}

/// A node's TLS that trusts the CA in `trusted` and presents `node`'s
/// certificate from `issued`.
fn node_tls(trusted: &Path, issued: &Path, node: &str) -> NodeTls {
    NodeTls::from_pem(&NodeTlsPem {
        ca: std::fs::read(trusted.join("ca.pem")).unwrap(),
        cert: std::fs::read(issued.join(format!("{node}.pem"))).unwrap(),
        key: std::fs::read(issued.join(format!("{node}.key"))).unwrap(),
    })
    .unwrap()
}

struct Coordinator {
    child: Child,
    log: PathBuf,
    node_port: u16,
    api: String,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Coordinator {
    fn start(dir: &Path, certs: &Path) -> Self {
        let api_port = free_port();
        let node_port = std::iter::repeat_with(free_port)
            .find(|&p| p != api_port)
            .unwrap();
        let certs = certs.display();
        let config = dir.join("coordinator.toml");
        std::fs::write(
            &config,
            format!(
                "[coordinator]\ndata_dir = \"data\"\ngrpc_listen = \"127.0.0.1:{api_port}\"\n\
                 cluster_port = {node_port}\ncluster_listen_ip = \"127.0.0.1\"\n\
                 cookie = {{ value = \"{COOKIE}\" }}\ntoken = {{ value = \"{OPERATOR_TOKEN}\" }}\n\
                 read_token = {{ env = \"SECURITY_TEST_READ_TOKEN\" }}\n\
                 tls_ca = \"{certs}/ca.pem\"\ntls_cert = \"{certs}/coordinator.pem\"\ntls_key = \"{certs}/coordinator.key\"\n\
                 metrics_listen = \"off\"\n"
            ),
        )
        .unwrap();
        let log = dir.join("coordinator.log");
        let child = Command::new(seedling_bin())
            .args(["start", "coordinator", "--config"])
            .arg(&config)
            .env("SECURITY_TEST_READ_TOKEN", READ_TOKEN)
            .env("SEEDLING_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let coordinator = Self {
            child,
            log,
            node_port,
            api: format!("https://127.0.0.1:{api_port}"),
        };
        wait_for("the coordinator's API", Duration::from_secs(30), || {
            coordinator
                .cli(&["plan", "list"], Some(READ_TOKEN), certs_dir(dir))
                .status
                .success()
        });
        coordinator
    }

    fn cli(&self, args: &[&str], token: Option<&str>, certs: PathBuf) -> Output {
        let mut command = Command::new(seedling_bin());
        command
            .args(args)
            .env("SEEDLING_COORDINATOR", &self.api)
            .env("SEEDLING_TLS_CA", certs.join("ca.pem"))
            .env_remove("SEEDLING_TOKEN");
        if let Some(token) = token {
            command.env("SEEDLING_TOKEN", token);
        }
        command.output().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn refusals(&self, reason: &str) -> usize {
        self.log()
            .lines()
            .filter(|line| line.contains("refused a node") && line.contains(reason))
            .count()
    }
}

fn certs_dir(dir: &Path) -> PathBuf {
    dir.join("certs")
}

/// Dials the coordinator node as a worker would; true when its gate
/// became visible (the node was let in) within a few seconds.
async fn joins(port: u16, cookie: &str, tls: Option<&NodeTls>) -> bool {
    let server = NodeServer::new(
        0,
        cookie.into(),
        format!("probe-{}", free_port()),
        "localhost".into(),
        tls.map(|t| ractor_cluster::IncomingEncryptionMode::Tls(t.acceptor())),
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into());
    let (node, handle) = Actor::spawn(None, server, ()).await.unwrap();
    let addr = format!("127.0.0.1:{port}");
    let dialled = match tls {
        Some(tls) => tls.connect(&node, &addr).await.is_ok(),
        None => ractor_cluster::client_connect(&node, addr.as_str())
            .await
            .is_ok(),
    };
    let mut joined = false;
    if dialled {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline {
            if !ractor::pg::get_members(&COORDINATOR_GROUP.to_string()).is_empty() {
                joined = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    node.stop(None);
    let _ = handle.await;
    joined
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_nodes_with_the_clusters_certificate_and_cookie_join() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs_dir(dir.path());
    certificates(&certs, &["coordinator", "worker"]);
    let foreign = dir.path().join("foreign");
    certificates(&foreign, &["worker"]);
    let coordinator = Coordinator::start(dir.path(), &certs);
    let port = coordinator.node_port;

    // The probes that must fail come first: once a node joins, the
    // coordinator's gate is in this process's groups for good.
    // A stranger knows the (public) cluster CA but holds a certificate of
    // another CA's making.
    assert!(!joins(port, COOKIE, Some(&node_tls(&certs, &foreign, "worker"))).await);
    wait_for(
        "the refusal of a foreign certificate",
        Duration::from_secs(10),
        || coordinator.refusals("invalid peer certificate") == 1,
    );
    assert!(!joins(port, COOKIE, None).await, "plain text joined");
    wait_for(
        "the refusal of a plain socket",
        Duration::from_secs(10),
        || coordinator.refusals("TLS handshake failed") == 2,
    );
    assert!(
        !joins(
            port,
            "not-the-cookie",
            Some(&node_tls(&certs, &certs, "worker"))
        )
        .await
    );
    wait_for(
        "the refusal of a wrong cookie",
        Duration::from_secs(10),
        || coordinator.refusals("cookie") == 1,
    );
    // Each refusal names the address that tried.
    let log = coordinator.log();
    assert!(
        log.lines()
            .filter(|l| l.contains("refused a node"))
            .all(|l| l.contains("peer=127.0.0.1:")),
        "{log}"
    );

    // The positive control: the cluster's certificate and cookie get in.
    assert!(joins(port, COOKIE, Some(&node_tls(&certs, &certs, "worker"))).await);
}

#[test]
fn a_read_only_token_reads_but_cannot_submit_or_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs_dir(dir.path());
    certificates(&certs, &["coordinator"]);
    let coordinator = Coordinator::start(dir.path(), &certs);
    let plan = test_plan();
    let plan = plan.to_str().unwrap();

    succeeded(&coordinator.cli(&["cluster", "status"], Some(READ_TOKEN), certs.clone()));
    let refused = coordinator.cli(&["plan", "submit", plan], Some(READ_TOKEN), certs.clone());
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("PermissionDenied") && stderr.contains("may only read"),
        "{stderr}"
    );
    // The operator's token submits; the reader sees the plan but cannot cancel it.
    let submitted = succeeded(&coordinator.cli(
        &["plan", "submit", plan, "--target", "2"],
        Some(OPERATOR_TOKEN),
        certs.clone(),
    ));
    let id = submitted.split_whitespace().nth(2).unwrap().to_string();
    let listed = succeeded(&coordinator.cli(&["plan", "list"], Some(READ_TOKEN), certs.clone()));
    assert!(listed.contains(&id), "{listed}");
    // Review through the coordinator: the reader sees the plan's sample but
    // cannot record decisions.
    let sample = succeeded(&coordinator.cli(
        &["review", "sample", "--plan", &id],
        Some(READ_TOKEN),
        certs.clone(),
    ));
    assert!(
        sample.contains(&format!("review sample of plan {id}")),
        "{sample}"
    );
    let decisions = dir.path().join("decisions.jsonl");
    std::fs::write(&decisions, "{}\n").unwrap();
    let import = [
        "review",
        "import",
        decisions.to_str().unwrap(),
        "--plan",
        id.as_str(),
    ];
    let refused = coordinator.cli(&import, Some(READ_TOKEN), certs.clone());
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("may only read; to record review decisions"),
        "{stderr}"
    );
    let cancel = coordinator.cli(&["plan", "cancel", &id], Some(READ_TOKEN), certs.clone());
    assert!(!cancel.status.success());
    // No token, or a made-up one, reads nothing.
    assert!(
        !coordinator
            .cli(&["plan", "list"], None, certs.clone())
            .status
            .success()
    );
    assert!(
        !coordinator
            .cli(&["plan", "list"], Some("guess"), certs)
            .status
            .success()
    );
}

#[test]
fn plain_text_beyond_loopback_needs_insecure_and_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("open.toml");
    std::fs::write(
        &config,
        format!(
            "[coordinator]\ndata_dir = \"data\"\ngrpc_listen = \"127.0.0.1:{}\"\ncluster_port = {}\n\
             cluster_listen_ip = \"0.0.0.0\"\ncookie = {{ value = \"{COOKIE}\" }}\nmetrics_listen = \"off\"\n",
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let refused = seedling(&["start", "coordinator", "--config", config]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("0.0.0.0")
            && stderr.contains("has no TLS")
            && stderr.contains("--insecure"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "a refused start touched the data directory"
    );

    let log = dir.path().join("insecure.log");
    let mut child = Command::new(seedling_bin())
        .args(["start", "coordinator", "--insecure", "--config", config])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for(
        "the insecure coordinator to start",
        Duration::from_secs(30),
        || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("cluster node port")),
    );
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("WARNING (--insecure)"), "{text}");
    assert!(text.contains("cookie only, no TLS"), "{text}");
}
