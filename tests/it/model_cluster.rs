//! The cluster on loopback with real processes and the real model: a
//! coordinator and workers started by `seedling start`, plans submitted by
//! `seedling plan submit`, watched through `plan status --json` and
//! `cluster status --json`. On 2 cores each worker runs its engine at one
//! thread with passive waiting. Plans are the test-only plan (one stratum,
//! short answers) and workers have one slot: the least model work that
//! shows each behaviour (at one thread a second sequence adds little
//! throughput), and results land one at a time, so a test can act while a
//! plan is still half done on any machine. Waits on model work are derived
//! from the machine's measured speed (`seedling_tests::machine`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use seedling_common::config::ClusterConfig;
use seedling_tests::otlp::{Receiver, unit_trace};
use seedling_tests::prometheus::{Prometheus, dashboard_queries};
use seedling_tests::{
    Tap, Work, exported_records, free_port, repo_root, seedling_bin, test_plan, wait_for,
    wait_for_model,
};

const COOKIE: &str = "loopback-cookie";
const TOKEN: &str = "loopback-token";
const LEASE_MS: u64 = 4_000;

/// A loopback cluster in a temporary directory, TLS on as the README
/// starts one (a CA and node certificates from `seedling cluster certs`);
/// every process dies with it.
struct Cluster {
    dir: tempfile::TempDir,
    grpc_port: u16,
    cluster_port: u16,
    /// Where the coordinator serves `/metrics`.
    metrics: std::net::SocketAddr,
    /// Where each worker serves its `/metrics`.
    worker_metrics: Vec<(String, std::net::SocketAddr)>,
    coordinator: Option<Child>,
    workers: Vec<(String, Child)>,
    /// Relays that record what crosses the wire, kept alive with the cluster.
    taps: Vec<Tap>,
    /// Where every node exports its spans (OTLP over HTTP).
    traces: Receiver,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.workers {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(child) = &mut self.coordinator {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

impl Cluster {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let grpc_port = free_port();
        // Two probes may hand out the same free port; the cluster needs two.
        let cluster_port = std::iter::repeat_with(free_port)
            .find(|&p| p != grpc_port)
            .unwrap();
        let metrics: std::net::SocketAddr = format!(
            "127.0.0.1:{}",
            std::iter::repeat_with(free_port)
                .find(|&p| p != grpc_port && p != cluster_port)
                .unwrap()
        )
        .parse()
        .unwrap();
        let certs = dir.path().join("certs");
        let certs_arg = certs.to_str().unwrap();
        let made = Command::new(seedling_bin())
            .args(["cluster", "certs", "init", "--dir", certs_arg])
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let config = format!(
            "[coordinator]\ndata_dir = \"data\"\ngrpc_listen = \"127.0.0.1:{grpc_port}\"\ncluster_port = {cluster_port}\n\
             cluster_listen_ip = \"127.0.0.1\"\ncookie = {{ value = \"{COOKIE}\" }}\ntoken = {{ value = \"{TOKEN}\" }}\n\
             lease_timeout_ms = {LEASE_MS}\n\
             tls_ca = \"certs/ca.pem\"\ntls_cert = \"certs/coordinator.pem\"\ntls_key = \"certs/coordinator.key\"\n\
             metrics_listen = \"{metrics}\"\n"
        );
        std::fs::write(dir.path().join("coordinator.toml"), config).unwrap();
        let mut cluster = Self {
            dir,
            grpc_port,
            cluster_port,
            metrics,
            worker_metrics: Vec::new(),
            coordinator: None,
            workers: Vec::new(),
            taps: Vec::new(),
            traces: Receiver::start(),
        };
        cluster.issue_certificate("coordinator");
        cluster.start_coordinator();
        cluster
    }

    fn grpc(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc_port)
    }

    fn issue_certificate(&self, node: &str) {
        let certs = self.dir.path().join("certs");
        let made = Command::new(seedling_bin())
            .args(["cluster", "certs", "issue", node, "--dir"])
            .arg(&certs)
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    fn start_coordinator(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log("coordinator"))
            .unwrap();
        // SIGXFSZ ignored (ignored signals stay ignored across exec): a
        // file size limit then fails the store's writes as a full disk
        // would, instead of killing the process.
        let child = Command::new("sh")
            .args(["-c", "trap '' XFSZ; exec \"$0\" \"$@\""])
            .arg(seedling_bin())
            .args(["start", "coordinator", "--config"])
            .arg(self.dir.path().join("coordinator.toml"))
            .env("SEEDLING_LOG", "info")
            .envs(self.trace_export())
            .env_remove("OTEL_SERVICE_NAME")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.coordinator = Some(child);
        wait_for("the coordinator's API", Duration::from_secs(30), || {
            self.cli(&["cluster", "status", "--json"]).status.success()
        });
    }

    fn worker_config(&mut self, id: &str, cookie: &str, threads: u32, slots: u32) -> PathBuf {
        self.worker_config_via(
            id,
            cookie,
            threads,
            slots,
            (self.cluster_port, self.grpc_port),
        )
    }

    /// A worker's config that reaches the coordinator at `ports` (node, API).
    fn worker_config_via(
        &mut self,
        id: &str,
        cookie: &str,
        threads: u32,
        slots: u32,
        (node_port, grpc_port): (u16, u16),
    ) -> PathBuf {
        self.issue_certificate(id);
        let taken = [self.grpc_port, self.cluster_port, self.metrics.port()];
        let metrics: std::net::SocketAddr = format!(
            "127.0.0.1:{}",
            std::iter::repeat_with(free_port)
                .find(|p| !taken.contains(p)
                    && self.worker_metrics.iter().all(|(_, m)| m.port() != *p))
                .unwrap()
        )
        .parse()
        .unwrap();
        self.worker_metrics.push((id.to_string(), metrics));
        let path = self.dir.path().join(format!("{id}.toml"));
        let config = format!(
            "[worker]\nid = \"{id}\"\ncoordinator_node = \"127.0.0.1:{node_port}\"\n\
             coordinator_grpc = \"https://127.0.0.1:{grpc_port}\"\n\
             cookie = {{ value = \"{cookie}\" }}\ntoken = {{ value = \"{TOKEN}\" }}\nthreads = {threads}\nslots = {slots}\n\
             ctx = 4096\nheartbeat_ms = 500\n\
             tls_ca = \"certs/ca.pem\"\ntls_cert = \"certs/{id}.pem\"\ntls_key = \"certs/{id}.key\"\n\
             metrics_listen = \"{metrics}\"\n"
        );
        std::fs::write(&path, config).unwrap();
        path
    }

    fn start_worker(&mut self, id: &str, threads: u32, slots: u32) {
        let config = self.worker_config(id, COOKIE, threads, slots);
        self.spawn_worker(id, &config);
    }

    /// A worker whose node and result traffic both pass through taps;
    /// returns the taps' index range in `taps`.
    fn start_tapped_worker(
        &mut self,
        id: &str,
        threads: u32,
        slots: u32,
    ) -> std::ops::Range<usize> {
        let first = self.taps.len();
        self.taps
            .push(Tap::to(format!("127.0.0.1:{}", self.cluster_port)));
        self.taps
            .push(Tap::to(format!("127.0.0.1:{}", self.grpc_port)));
        let ports = (self.taps[first].port, self.taps[first + 1].port);
        let config = self.worker_config_via(id, COOKIE, threads, slots, ports);
        self.spawn_worker(id, &config);
        first..self.taps.len()
    }

    fn spawn_worker(&mut self, id: &str, config: &Path) {
        let log = std::fs::File::create(self.log(id)).unwrap();
        let child = Command::new(seedling_bin())
            .args(["start", "worker", "--config"])
            .arg(config)
            .env("OMP_WAIT_POLICY", "passive")
            .env("SEEDLING_LOG", "info")
            .envs(self.trace_export())
            .env_remove("OTEL_SERVICE_NAME")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.workers.push((id.to_string(), child));
    }

    /// What points a node's trace export at this cluster's receiver, sent
    /// every 200 ms so a test sees a unit's spans soon after it is stored.
    fn trace_export(&self) -> [(&'static str, String); 2] {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.traces.endpoint.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".into()),
        ]
    }

    fn worker(&self, id: &str) -> &Child {
        &self.workers.iter().find(|(w, _)| w == id).unwrap().1
    }

    /// Runs the CLI against this cluster, with the token.
    fn cli(&self, args: &[&str]) -> Output {
        self.cli_with(args, Some(TOKEN))
    }

    fn cli_with(&self, args: &[&str], token: Option<&str>) -> Output {
        let mut command = Command::new(seedling_bin());
        command
            .args(args)
            .env("SEEDLING_COORDINATOR", self.grpc())
            .env("SEEDLING_TLS_CA", self.dir.path().join("certs/ca.pem"))
            .env_remove("SEEDLING_TOKEN");
        if let Some(token) = token {
            command.env("SEEDLING_TOKEN", token);
        }
        command.output().unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "seedling {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn workers_seen(&self) -> BTreeSet<String> {
        self.json(&["cluster", "status", "--json"])["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["worker_id"].as_str().unwrap().to_string())
            .collect()
    }

    fn submit(&self, target: u64) -> String {
        self.submit_file(&test_plan(), target)
    }

    /// The test plan with another seed: another plan, the same work.
    fn submit_reseeded(&self, target: u64) -> String {
        let path = self.plan_variant("reseeded.toml", "seed = 20261204", "seed = 20261205");
        self.submit_file(&path, target)
    }

    /// The test plan with `from` replaced by `to`, written beside a copy
    /// of its reference file (so only the coordinator can object to it).
    fn plan_variant(&self, name: &str, from: &str, to: &str) -> PathBuf {
        let text = std::fs::read_to_string(test_plan()).unwrap();
        let variant = text.replacen(from, to, 1);
        assert_ne!(variant, text, "the test plan has {from:?}");
        let path = self.dir.path().join(name);
        std::fs::write(&path, variant).unwrap();
        std::fs::create_dir_all(self.dir.path().join("docs")).unwrap();
        std::fs::copy(
            repo_root().join("tests/plans/docs/library-loans.md"),
            self.dir.path().join("docs/library-loans.md"),
        )
        .unwrap();
        path
    }

    fn submit_file(&self, plan: &Path, target: u64) -> String {
        let out = self.cli(&[
            "plan",
            "submit",
            plan.to_str().unwrap(),
            "--target",
            &target.to_string(),
        ]);
        assert!(
            out.status.success(),
            "submit: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace().nth(2).unwrap().to_string()
    }

    fn plan(&self, id: &str) -> serde_json::Value {
        self.json(&["plan", "status", id, "--json"])
    }

    fn accepted(&self, id: &str) -> u64 {
        self.plan(id)["accepted"].as_u64().unwrap()
    }

    /// Exports through the API and returns the records' ids, checking every record.
    fn export(&self, id: &str) -> Vec<seedling_common::record::Record> {
        // Each export gets a directory of its own.
        let out = tempfile::tempdir_in(self.dir.path()).unwrap().keep();
        let result = self.cli(&["export", id, "--out", out.to_str().unwrap()]);
        assert!(
            result.status.success(),
            "export: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        ["train", "validation", "test"]
            .iter()
            .flat_map(|split| {
                if out.join(format!("data/{split}.jsonl")).exists() {
                    exported_records(&out, split)
                } else {
                    Vec::new()
                }
            })
            .collect()
    }

    /// A series of the coordinator's `/metrics` without labels, as scraped now.
    fn metric(&self, name: &str) -> f64 {
        let (status, text) =
            seedling_tests::http::get(self.metrics, "/metrics").expect("the coordinator's metrics");
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    fn coordinator_log(&self) -> String {
        std::fs::read_to_string(self.log("coordinator")).unwrap_or_default()
    }
}

fn assert_exact_and_unique(records: &[seedling_common::record::Record], target: usize) {
    let ids: BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let inputs: BTreeSet<&str> = records.iter().map(|r| r.input.as_str()).collect();
    assert_eq!(records.len(), target, "exactly the target");
    assert_eq!(ids.len(), target, "no duplicate ids");
    assert_eq!(inputs.len(), target, "no duplicate inputs");
}

#[test]
fn model_cluster_survives_a_hung_worker_and_a_killed_worker() {
    const TARGET: u64 = 6;
    let mut cluster = Cluster::new();
    // wa's node and result traffic pass through taps: what an eavesdropper
    // on its link would capture.
    let wa_link = cluster.start_tapped_worker("wa", 1, 1);
    cluster.start_worker("wb", 1, 1);
    wait_for("two workers", Duration::from_secs(60), || {
        cluster.workers_seen().len() == 2
    });
    let plan = cluster.submit(TARGET);
    wait_for_model("2 accepted records", Work::to_accept(2), || {
        cluster.accepted(&plan) >= 2
    });

    // One unit's path is one trace across the nodes: the coordinator's
    // lease span, the worker's run of it (with its model calls) as its
    // child, and the coordinator's decision, ended once stored.
    wait_for("a unit's whole trace", Duration::from_secs(20), || {
        unit_trace(&cluster.traces.spans()).is_some()
    });
    let trace = unit_trace(&cluster.traces.spans()).unwrap();
    let worker = &trace.lease.attributes["worker"];
    assert!(["wa", "wb"].contains(&worker.as_str()), "{trace:?}");
    assert_eq!(&trace.run.attributes["worker"], worker, "{trace:?}");
    assert_eq!(trace.run.attributes["unit"], trace.lease.attributes["unit"]);
    assert!(
        trace
            .model_calls
            .iter()
            .all(|call| call.attributes["generated_tokens"].parse::<u64>().unwrap() > 0),
        "{trace:?}"
    );
    assert!(
        trace.result.links.contains(&trace.run.span_id),
        "the decision links to the worker's run: {trace:?}"
    );
    assert!(trace.result.attributes.contains_key("outcome"), "{trace:?}");

    // A hung worker: ractor_cluster never notices it, the lease does.
    signal(cluster.worker("wa"), "STOP");
    let took = wait_for(
        "the hung worker's lease to expire",
        Duration::from_secs(30),
        || !cluster.workers_seen().contains("wa"),
    );
    assert!(
        took <= Duration::from_millis(LEASE_MS + 2_000),
        "lease expired after {took:?}"
    );
    eprintln!(
        "hung worker (SIGSTOP): its lease expired {took:?} after the stop (lease {LEASE_MS} ms)"
    );

    // A killed worker: its node leaves at once. With wa still hung, no
    // worker runs the plan from here until wa comes back, so the plan is
    // half done whatever the machine's speed.
    signal(cluster.worker("wb"), "KILL");
    let gone = wait_for(
        "the killed worker to leave",
        Duration::from_secs(10),
        || !cluster.workers_seen().contains("wb"),
    );
    eprintln!("killed worker (SIGKILL): its node left the cluster {gone:?} after the kill");
    let before = cluster.accepted(&plan);
    assert!(
        before < TARGET,
        "the plan ended before the kill; raise TARGET"
    );

    let status = cluster.json(&["cluster", "status", "--json"]);
    assert!(status["leases_expired"].as_u64().unwrap() >= 1, "{status}");
    // The coordinator's own load: turns that decided the results so far,
    // dispatch a part of deciding, and what was decided also written.
    let load = &status["load"];
    let decided = load["results_decided"].as_u64().unwrap();
    let turns = load["groups_decided"].as_u64().unwrap();
    assert!(decided >= 2 && (1..=decided).contains(&turns), "{load}");
    assert!(
        load["dispatching_s"].as_f64().unwrap() <= load["deciding_s"].as_f64().unwrap(),
        "{load}"
    );
    assert!(load["results_written"].as_u64().unwrap() >= 2, "{load}");
    // CPU time is counted within the stages' wall time, on their own threads.
    let within = |cpu: &str, wall: &str| {
        let (cpu, wall) = (load[cpu].as_f64().unwrap(), load[wall].as_f64().unwrap());
        cpu > 0.0 && cpu <= wall
    };
    assert!(within("deciding_cpu_s", "deciding_s"), "{load}");
    assert!(within("writing_cpu_s", "writing_s"), "{load}");

    // wa wakes: the results of the units it held arrive for units it no
    // longer holds (stale, stored nothing); it rejoins and runs every unit
    // left, its own and wb's, to the end of the plan.
    signal(cluster.worker("wa"), "CONT");
    wait_for_model("wa's late results to be refused", Work::attempts(2), || {
        cluster.coordinator_log().contains("stale result ignored")
    });
    wait_for("wa to rejoin", Duration::from_secs(30), || {
        cluster.workers_seen().contains("wa")
    });
    wait_for_model(
        "the plan to finish",
        Work::to_accept((TARGET - before) as u32),
        || cluster.plan(&plan)["state"] != "running",
    );
    let summary = cluster.plan(&plan);
    assert_eq!(summary["state"], "finished", "{summary}");
    assert_eq!(summary["accepted"].as_u64(), Some(TARGET));
    let records = cluster.export(&plan);
    assert_exact_and_unique(&records, TARGET as usize);
    eprintln!(
        "hung and killed workers: {before} records acknowledged before the kill, {TARGET} present at the end, no duplicate"
    );
    // wa ran most of the plan over its tapped link, yet nothing of what
    // it generated crossed it readable: node traffic and results are TLS.
    let captured: Vec<u8> = cluster.taps[wa_link].iter().flat_map(Tap::seen).collect();
    let generated: Vec<&str> = records
        .iter()
        .flat_map(|r| [r.input.as_str(), r.response.as_str()])
        .filter(|text| text.len() >= 24)
        .collect();
    assert!(!generated.is_empty());
    assert!(
        captured.len() > generated.iter().map(|t| t.len()).sum::<usize>(),
        "the tap saw only {} bytes",
        captured.len()
    );
    for text in &generated {
        // Any 24-byte run of a record would do for a reader of the wire.
        let probe = &text.as_bytes()[..24];
        assert!(
            !captured.windows(probe.len()).any(|w| w == probe),
            "generated text crossed the wire in the clear: {text:?}"
        );
    }
    // Where the time went: each engine's own clock, and the plan's stored
    // attempts' tokens and engine time by stage.
    let engine_ms = |w: &serde_json::Value| {
        w["prefill_ms"].as_u64().unwrap() + w["decode_ms"].as_u64().unwrap()
    };
    let status = cluster.json(&["cluster", "status", "--json"]);
    assert!(
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| engine_ms(w) > 0),
        "{status}"
    );
    let cost = cluster.plan(&plan)["cost"].clone();
    let stages = cost["stages"].as_object().unwrap();
    let sum = |key: &str| -> u64 { stages.values().map(|c| c[key].as_u64().unwrap()).sum() };
    assert!(sum("calls") >= 2, "{cost}");
    assert!(sum("prompt_tokens") > sum("generated_tokens"), "{cost}");
    assert!(sum("prefill_ms") > 0 && sum("decode_ms") > 0, "{cost}");

    // A second plan, cancelled while wa runs its units: the coordinator
    // withdraws them, wa stops them (its engine drops their requests) and
    // its slots are free at its next heartbeat, not when the units would
    // have finished (one takes far longer than this wait at one thread).
    // Units leased and engine slots are two numbers: a worker holds up to
    // two units per slot, and decodes at most `slots` sequences.
    let busy = || -> u64 {
        let status = cluster.json(&["cluster", "status", "--json"]);
        let workers = status["workers"].as_array().unwrap();
        for w in workers {
            let (active, slots) = (w["active_slots"].as_u64(), w["slots"].as_u64());
            assert!(active <= slots, "more sequences than slots: {w}");
            let units = w["units_in_flight"].as_u64().unwrap() + w["unit_room"].as_u64().unwrap();
            assert!(units >= 2 * slots.unwrap(), "{w}");
        }
        workers
            .iter()
            .map(|w| w["units_in_flight"].as_u64().unwrap())
            .sum()
    };
    let second = cluster.submit_reseeded(TARGET);
    assert_ne!(second, plan);
    wait_for("wa to run the second plan", Duration::from_secs(60), || {
        busy() > 0
    });
    assert!(cluster.cli(&["plan", "cancel", &second]).status.success());
    wait_for(
        "the cancelled plan's units to stop",
        Duration::from_secs(5),
        || busy() == 0,
    );
    let wa_log = std::fs::read_to_string(cluster.log("wa")).unwrap();
    assert!(
        wa_log.contains("units withdrawn by the coordinator"),
        "{wa_log}"
    );
}

#[test]
fn model_cluster_coordinator_killed_midway_resumes_and_keeps_every_acknowledged_record() {
    const TARGET: u64 = 4;
    let mut cluster = Cluster::new();
    // One slot: results land one at a time, so the plan is still half done
    // when the coordinator is killed, on any machine.
    cluster.start_worker("solo", 1, 1);
    wait_for("the worker", Duration::from_secs(60), || {
        cluster.workers_seen().len() == 1
    });
    let plan = cluster.submit(TARGET);
    wait_for_model("2 accepted records", Work::to_accept(2), || {
        cluster.accepted(&plan) >= 2
    });
    let before: BTreeSet<String> = cluster.export(&plan).into_iter().map(|r| r.id).collect();
    assert!(
        before.len() >= 2 && before.len() < TARGET as usize,
        "{before:?}"
    );

    let mut coordinator = cluster.coordinator.take().unwrap();
    signal(&coordinator, "KILL");
    coordinator.wait().unwrap();
    let restarting = Instant::now();
    cluster.start_coordinator();
    // The worker reconnects by itself; the plan resumes from the store.
    wait_for("the worker to reconnect", Duration::from_secs(60), || {
        cluster.workers_seen().len() == 1
    });
    let reconnected = restarting.elapsed();
    wait_for_model(
        "the plan to finish",
        Work::to_accept(TARGET as u32 - 2),
        || cluster.plan(&plan)["state"] != "running",
    );
    let summary = cluster.plan(&plan);
    assert_eq!(summary["state"], "finished", "{summary}");
    let after = cluster.export(&plan);
    assert_exact_and_unique(&after, TARGET as usize);
    let after: BTreeSet<String> = after.into_iter().map(|r| r.id).collect();
    assert!(
        before.is_subset(&after),
        "lost acknowledged records: {:?}",
        before.difference(&after).collect::<Vec<_>>()
    );
    // For RELIABILITY.md.
    eprintln!(
        "coordinator SIGKILL: {} records acknowledged before, all present after, {} in all, no duplicate; \
         restarted and the worker back {reconnected:?} after the restart began",
        before.len(),
        after.len()
    );
}

#[test]
fn model_cluster_partitioned_worker_rejoins_and_no_record_is_lost_or_stored_twice() {
    const TARGET: u64 = 4;
    let mut cluster = Cluster::new();
    // One worker, one slot, both its links through taps: a partition of
    // it halts the plan half done, on any machine.
    let link = cluster.start_tapped_worker("wp", 1, 1);
    wait_for("the worker", Duration::from_secs(60), || {
        cluster.workers_seen().len() == 1
    });
    let plan = cluster.submit(TARGET);
    wait_for_model("1 accepted record", Work::to_accept(1), || {
        cluster.accepted(&plan) >= 1
    });

    // The partition: every connection between wp and the coordinator
    // drops, and none gets through. The coordinator sees wp's node go and
    // gives its units back at once; wp keeps running what it holds.
    let requeued_before = cluster.metric("seedling_units_requeued_total");
    for tap in &cluster.taps[link.clone()] {
        tap.cut();
    }
    let left = wait_for("wp to leave", Duration::from_secs(30), || {
        cluster.workers_seen().is_empty()
    });
    let before: BTreeSet<String> = cluster.export(&plan).into_iter().map(|r| r.id).collect();
    assert!(before.len() < TARGET as usize, "{before:?}");
    // As many units went back as wp held when its node went, once each.
    let log = cluster.coordinator_log();
    let out = log
        .lines()
        .find(|l| l.contains("worker out") && l.contains("worker=wp"))
        .unwrap_or_else(|| panic!("{log}"));
    let held: f64 = out
        .split_whitespace()
        .find_map(|field| field.strip_prefix("units="))
        .map_or(0.0, |n| n.parse().unwrap());
    assert!(held >= 1.0, "{out}");
    assert_eq!(
        cluster.metric("seedling_units_requeued_total") - requeued_before,
        held,
        "{out}"
    );

    // Healed: wp reconnects by itself (with backoff), its late results
    // find no lease and store nothing, and it runs the plan to its end.
    std::thread::sleep(Duration::from_secs(2));
    for tap in &cluster.taps[link] {
        tap.heal();
    }
    let rejoined = wait_for("wp to rejoin", Duration::from_secs(60), || {
        cluster.workers_seen().contains("wp")
    });
    wait_for_model(
        "the plan to finish",
        Work::to_accept((TARGET - before.len() as u64) as u32),
        || cluster.plan(&plan)["state"] != "running",
    );
    let summary = cluster.plan(&plan);
    assert_eq!(summary["state"], "finished", "{summary}");
    let after = cluster.export(&plan);
    assert_exact_and_unique(&after, TARGET as usize);
    let after: BTreeSet<String> = after.into_iter().map(|r| r.id).collect();
    assert!(
        before.is_subset(&after),
        "lost acknowledged records: {:?}",
        before.difference(&after).collect::<Vec<_>>()
    );
    let wp_log = std::fs::read_to_string(cluster.log("wp")).unwrap();
    assert!(wp_log.contains("rejoined the coordinator"), "{wp_log}");
    // For RELIABILITY.md.
    eprintln!(
        "partition: {} records acknowledged before, all {} present after, no duplicate; \
         the coordinator saw wp go {left:?} after the cut and requeued its {held} units; \
         wp rejoined {rejoined:?} after the heal",
        before.len(),
        TARGET
    );
}

/// Sets the coordinator's soft file size limit (`prlimit`; the hard limit
/// stays, so it can be lifted again): at the store's size now, every write
/// that grows it fails as on a full disk.
fn limit_file_size(child: &Child, limit: &str) {
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", child.id()))
        .arg(format!("--fsize={limit}:unlimited"))
        .status()
        .unwrap();
    assert!(status.success(), "prlimit --fsize={limit}");
}

#[test]
fn model_cluster_store_that_takes_no_writes_pauses_the_plan_which_resumes_when_it_does() {
    const TARGET: u64 = 4;
    let mut cluster = Cluster::new();
    cluster.start_worker("solo", 1, 1);
    wait_for("the worker", Duration::from_secs(60), || {
        cluster.workers_seen().len() == 1
    });
    let plan = cluster.submit(TARGET);
    wait_for_model("1 accepted record", Work::to_accept(1), || {
        cluster.accepted(&plan) >= 1
    });
    let before: BTreeSet<String> = cluster.export(&plan).into_iter().map(|r| r.id).collect();

    // The disk is full: the store's files may not grow by a byte.
    let db = cluster.dir.path().join("data/lineage/db");
    let size = std::fs::metadata(&db).unwrap().len();
    limit_file_size(cluster.coordinator.as_ref().unwrap(), &size.to_string());
    let paused = wait_for_model("the plan to pause", Work::attempts(2), || {
        cluster.plan(&plan)["state"] == "paused"
    });
    let summary = cluster.plan(&plan);
    let error = summary["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("storing results failed") && error.contains("resumes by itself"),
        "{summary}"
    );
    assert!(
        (summary["accepted"].as_u64().unwrap() as usize) < TARGET as usize,
        "{summary}"
    );
    // Paused, it hands out nothing; the coordinator keeps serving.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(cluster.plan(&plan)["state"], "paused");
    assert!(cluster.cli(&["cluster", "status"]).status.success());

    // Space returns: the plan resumes from the store by itself and ends.
    limit_file_size(cluster.coordinator.as_ref().unwrap(), "unlimited");
    let resumed = wait_for("the plan to resume", Duration::from_secs(30), || {
        cluster.plan(&plan)["state"] != "paused"
    });
    wait_for_model("the plan to finish", Work::to_accept(TARGET as u32), || {
        cluster.plan(&plan)["state"] != "running"
    });
    let summary = cluster.plan(&plan);
    assert_eq!(summary["state"], "finished", "{summary}");
    let after = cluster.export(&plan);
    assert_exact_and_unique(&after, TARGET as usize);
    let after: BTreeSet<String> = after.into_iter().map(|r| r.id).collect();
    assert!(
        before.is_subset(&after),
        "lost acknowledged records: {:?}",
        before.difference(&after).collect::<Vec<_>>()
    );
    let store = cluster.cli(&["lineage", "show", after.iter().next().unwrap()]);
    assert!(store.status.success());
    assert!(cluster.coordinator_log().contains("plan resumed"));
    // For RELIABILITY.md.
    eprintln!(
        "store takes no writes: paused {paused:?} after the limit ({error}); {} records acknowledged before, all {TARGET} present after, no duplicate; resumed {resumed:?} after the limit was lifted",
        before.len()
    );
}

#[test]
fn model_cluster_refuses_strangers_and_bad_plans_and_keeps_serving() {
    let mut cluster = Cluster::new();

    // The API speaks TLS only, and requires the configured token.
    let plain = Command::new(seedling_bin())
        .args(["plan", "list", "--coordinator"])
        .arg(format!("http://127.0.0.1:{}", cluster.grpc_port))
        .env("SEEDLING_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(!plain.status.success());
    for token in [None, Some("guess")] {
        let out = cluster.cli_with(&["plan", "list"], token);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("Unauthenticated"), "{token:?}: {stderr}");
    }

    // A malformed plan: InvalidArgument naming the field; nothing stored.
    let bad = cluster.plan_variant(
        "bad-plan.toml",
        "[target]\naccepted = ",
        "[target]\naccepted = -",
    );
    let out = cluster.cli(&["plan", "submit", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("target.accepted"),
        "{stderr}"
    );
    let missing = cluster.cli(&["plan", "status", "plan-0000000000000000"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"));
    let plans = cluster.json(&["plan", "list", "--json"]);
    assert_eq!(plans.as_array().map(Vec::len), Some(0), "{plans}");

    // Lineage over the API, as text and as JSON, down to a chosen depth:
    // a submitted plan's root has its knowledge (glossary, scenarios) below it.
    let id = cluster.submit(4);
    let root = seedling_coordinator::lineage::plan_node_id(&seedling_common::ids::PlanId::new(&id));
    let report = cluster.json(&["lineage", "show", root.as_str(), "--json", "--depth", "1"]);
    assert_eq!(report["node"]["id"], root.as_str(), "{report}");
    let below = report["descendants"].as_array().unwrap();
    assert!(!below.is_empty(), "{report}");
    assert!(below.iter().all(|d| d["depth"] == 1), "{report}");
    let text = cluster.cli(&["lineage", "show", root.as_str()]);
    assert!(text.status.success());
    assert!(serde_json::from_slice::<serde_json::Value>(&text.stdout).is_err());

    // A node with the wrong cookie is refused and says why.
    let config = cluster.worker_config("stranger", "not-the-cookie", 1, 1);
    let started = Instant::now();
    let out = Command::new(seedling_bin())
        .args(["start", "worker", "--config"])
        .arg(config)
        .env("OMP_WAIT_POLICY", "passive")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cookie"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(cluster.workers_seen().is_empty());

    // And the coordinator still serves a well-formed worker.
    cluster.start_worker("friend", 1, 1);
    wait_for("the friendly worker", Duration::from_secs(60), || {
        cluster.workers_seen().contains("friend")
    });

    // Asked to stop while a worker's result stream is open, the coordinator
    // stops (a graceful stop alone would wait for the worker to leave).
    let coordinator = cluster.coordinator.as_mut().unwrap();
    signal(coordinator, "TERM");
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = coordinator.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(30),
            "the coordinator did not stop within 30 s of SIGTERM with a worker connected"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    assert!(
        cluster
            .coordinator_log()
            .contains("seedling coordinator: stopped"),
        "{}",
        cluster.coordinator_log()
    );
}

#[test]
fn model_cluster_metrics_reach_prometheus_and_fill_the_dashboard() {
    const TARGET: u64 = 3;
    let mut cluster = Cluster::new();
    cluster.start_worker("wm", 1, 1);
    let worker_metrics = cluster.worker_metrics[0].1;
    let prometheus = Prometheus::start(&[
        ("seedling-coordinator", cluster.metrics),
        ("seedling-worker", worker_metrics),
    ]);
    wait_for("the worker", Duration::from_secs(60), || {
        cluster.workers_seen().contains("wm")
    });
    let plan = cluster.submit(TARGET);
    wait_for_model("the plan to finish", Work::to_accept(TARGET as u32), || {
        cluster.plan(&plan)["state"] != "running"
    });
    let status = cluster.plan(&plan);
    assert_eq!(status["state"], "finished", "{status}");

    // Once the worker is idle, its own scrape and the coordinator's (from
    // its heartbeats) agree on what it generated, and the plan's figures
    // are what plan status says.
    let generated = "seedling_engine_generated_tokens_total{worker=\"wm\"}";
    let heard = "seedling_worker_generated_tokens_total{worker=\"wm\"}";
    let accepted = format!("seedling_records_accepted_total{{plan=\"{plan}\"}}");
    wait_for(
        "Prometheus to scrape both nodes after the plan",
        Duration::from_secs(30),
        || {
            let own = prometheus.value(generated);
            own.is_some_and(|t| t > 0.0)
                && own == prometheus.value(heard)
                && prometheus.value(&accepted) == status["accepted"].as_f64()
        },
    );
    let p = &prometheus;
    for job in ["seedling-coordinator", "seedling-worker"] {
        assert_eq!(
            p.value(&format!("up{{job=\"{job}\"}}")),
            Some(1.0),
            "{}",
            p.log()
        );
    }
    assert_eq!(
        p.value(&format!("seedling_attempts_total{{plan=\"{plan}\"}}")),
        status["attempts"].as_f64()
    );
    assert!(
        p.value("seedling_model_load_seconds{worker=\"wm\"}")
            .unwrap()
            > 0.0
    );
    assert_eq!(p.value("seedling_engine_slots{worker=\"wm\"}"), Some(1.0));
    assert_eq!(
        p.value("seedling_engine_kv_cells_capacity{worker=\"wm\"}"),
        Some(4096.0)
    );
    assert!(
        p.value("seedling_engine_requests_total{worker=\"wm\",outcome=\"completed\"}")
            .unwrap()
            >= TARGET as f64
    );
    // A worker process holds the model: far more than a coordinator.
    let rss = |job: &str| {
        p.value(&format!("process_resident_memory_bytes{{job=\"{job}\"}}"))
            .unwrap()
    };
    assert!(rss("seedling-worker") > 2.0 * rss("seedling-coordinator"));

    // Every query of the shipped dashboard runs, and every panel shows
    // data, but those that only fill when something goes wrong.
    let quiet_when_all_is_well = ["Rejections by stage and reason", "Results refused"];
    let mut shown = BTreeSet::new();
    for (panel, expr) in dashboard_queries() {
        if !p.query(&expr).is_empty() {
            shown.insert(panel);
        }
    }
    for (panel, _) in dashboard_queries() {
        assert!(
            shown.contains(&panel) || quiet_when_all_is_well.contains(&panel.as_str()),
            "the dashboard's panel {panel:?} shows no data"
        );
    }
}

#[test]
fn every_cluster_config_parses() {
    let root = repo_root().join("cluster-configs");
    let mut found = 0;
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let config = ClusterConfig::parse(&path.display().to_string(), &text)
                    .unwrap_or_else(|e| panic!("{e}"));
                assert!(
                    config.coordinator.is_some() || config.worker.is_some(),
                    "{} configures nothing",
                    path.display()
                );
                found += 1;
            }
        }
    }
    assert!(
        found >= 5,
        "expected the single-node, loopback and multi-node configs, found {found} in {}",
        Path::new(&root).display()
    );
}
