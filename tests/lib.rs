//! Helpers shared by the integration tests in `it/`: where the model is and
//! how to start an engine that behaves on a 2-core machine.

pub mod browser;
pub mod http;
pub mod machine;
pub mod mlflow;
pub mod otlp;
pub mod prometheus;
pub mod scripted;
pub mod simulated;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use machine::{MachineSpeed, Work};

use seedling_worker::engine::{Engine, EngineConfig};
use seedling_worker::model_file::default_model_path;

/// The verified default model; the test command fetches it first.
pub fn model_path() -> PathBuf {
    let path = default_model_path();
    assert!(
        path.exists(),
        "model {} is missing: run scripts/test (it fetches the model) or scripts/fetch-model",
        path.display()
    );
    path
}

/// An engine on the default model with `n_slots` parallel sequences. Tests
/// that load the model run one at a time (nextest group `model`).
pub fn engine(n_slots: u32, n_ctx: u32) -> Engine {
    let config = EngineConfig {
        n_slots,
        n_ctx,
        n_batch: 512,
        n_ubatch: 512,
        ..EngineConfig::new(model_path())
    };
    Engine::start(config).expect("engine starts on the default model")
}

/// The test-only plan that model tests run (`tests/plans/library-desk.toml`):
/// one stratum, one short task type, a short reference, short responses.
pub fn test_plan() -> PathBuf {
    repo_root().join("tests/plans/library-desk.toml")
}

/// Polls `ready` every 200 ms until it holds (how long that took) or
/// `limit` passes (`None`).
fn poll(limit: Duration, mut ready: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while !ready() {
        if started.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Some(started.elapsed())
}

/// Waits until `ready` holds; panics after `limit`.
pub fn wait_for(what: &str, limit: Duration, ready: impl FnMut() -> bool) -> Duration {
    poll(limit, ready).unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// Waits for model work: the bound is derived from this machine's measured
/// speed, and a wait that runs out says what the machine measured.
pub fn wait_for_model(what: &str, work: Work, ready: impl FnMut() -> bool) -> Duration {
    let speed = MachineSpeed::of_this_machine();
    let limit = speed.time_for(work);
    let took = poll(limit, ready).unwrap_or_else(|| {
        panic!(
            "timed out after {limit:.0?} waiting for {what}; {speed}, and the bound allows for {work:?}"
        )
    });
    eprintln!("{what}: after {took:.1?} of a {limit:.0?} bound");
    took
}

/// The release `seedling` binary, which the test command builds first.
pub fn seedling_bin() -> PathBuf {
    let path = repo_root().join("target/release/seedling");
    assert!(
        path.exists(),
        "{} is missing: run scripts/test (it builds it) or cargo build --release",
        path.display()
    );
    path
}

/// Runs the release `seedling` with `args`: whether it succeeded, and
/// what it printed (stdout, then stderr).
pub fn seedling<I, S>(args: I) -> (bool, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = std::process::Command::new(seedling_bin())
        .args(args)
        .output()
        .expect("seedling runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// A TCP port free on loopback right now (for servers a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Root of the repository, for scripts.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

/// The retail-banking example plan without its reference documents: no
/// domain analysis to wait for, generation units from the start.
pub fn retail_banking_without_references() -> String {
    let text = std::fs::read_to_string(repo_root().join("examples/retail-banking.toml"))
        .expect("the example plan");
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with("[[references]]") {
            skipping = true;
            continue;
        }
        if skipping && (line.starts_with("path") || line.trim().is_empty()) {
            continue;
        }
        skipping = false;
        out.push_str(line);
        out.push('\n');
    }
    assert!(!out.contains("[[references]]") && out.contains("[[personas]]"));
    out
}

/// A smoke-tier verification report of dataset `version` as JSON (two
/// conditions, base and seedling), for tests to adjust and deserialize.
pub fn verification_report_json(version: &str, plan: &str) -> serde_json::Value {
    serde_json::json!({
        "dataset_version": version,
        "plan": plan,
        "tier": "smoke",
        "created_at": "2026-12-06T00:00:00Z",
        "seconds": 12.5,
        "model": "qwen2.5 (test)",
        "device": "cpu",
        "training": {"steps": 8, "learning_rate": 0.0002, "lora_r": 16, "lora_alpha": 32, "max_tokens": 256, "bf16": true},
        "probes": 20,
        "probes_by_source": {"glossary": 20},
        "test_rows": 3,
        "leakage": {"shared_ids": 0, "max_input_rouge_l": 0.2, "near_duplicates": 0},
        "naive": [16, 15],
        "perturbed_records": 10,
        "conditions": [
            {"name": "base", "trained": false, "train_examples": 0, "steps": 0, "loss_first": null, "loss_last": null, "seconds": 1.0,
             "metrics": {"forced_choice": {"mean": 0.4, "lo": 0.2, "hi": 0.6, "n": 20}}, "strata": {}},
            {"name": "seedling", "trained": true, "train_examples": 12, "steps": 8, "loss_first": 2.5, "loss_last": 1.25, "seconds": 9.0,
             "metrics": {"forced_choice": {"mean": 0.7, "lo": 0.5, "hi": 0.85, "n": 20}}, "strata": {}}
        ],
        "comparisons": [],
        "plots": ["loss.png"],
    })
}

/// The Python environment `scripts/setup` makes for the tests' tools
/// (Hugging Face `datasets`, `mlflow`).
pub fn pyenv() -> PathBuf {
    std::env::var_os("SEEDLING_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/seedling/pyenv")
        })
}

/// Loads an export with Hugging Face `datasets` (`tests/python/load_export.py`
/// in the environment `scripts/setup` makes) and returns its rows per split.
pub fn load_with_datasets(export: &std::path::Path) -> serde_json::Value {
    let python = pyenv().join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test (scripts/setup installs datasets there)",
        python.display()
    );
    let hf_home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&python)
        .arg(repo_root().join("tests/python/load_export.py"))
        .arg(export)
        .env("HF_HOME", hf_home.path())
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "datasets cannot load {}: {}",
        export.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("rows per split as JSON")
}

/// SHA-256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The records of one split of an exported dataset, each checked: the 3.1
/// schema field for field, `validate_record`, and a trace that names every
/// step an exported record went through.
pub fn exported_records(
    dir: &std::path::Path,
    split: &str,
) -> Vec<seedling_common::record::Record> {
    let path = dir.join(format!("data/{split}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let record: seedling_common::record::Record =
                serde_json::from_str(line).expect("the 3.1 schema, field for field");
            seedling_coordinator::dataset::validate_record(&record).unwrap();
            let steps = record.trace.step_names();
            let has = |step: &str| steps.contains(&step);
            for step in [
                "plan_submitted",
                "quality_filter",
                "split_assignment",
                "export",
            ] {
                assert!(has(step), "{} lacks {step}: {steps:?}", record.id);
            }
            assert!(
                has("response_generation") || has("translate_response"),
                "{steps:?}"
            );
            assert!(
                has("template_instantiation") || has("augmentation"),
                "{steps:?}"
            );
            record
        })
        .collect()
}

/// A loopback TCP relay that keeps a copy of every byte it carries, both
/// ways: what an eavesdropper on the link between two nodes would see. It
/// can also partition the link: [`Tap::cut`] drops every connection
/// through it and refuses new ones until [`Tap::heal`].
#[derive(Debug)]
pub struct Tap {
    pub port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    /// Open connections (both streams of each), and whether the link is cut.
    links: std::sync::Arc<std::sync::Mutex<(Vec<std::net::TcpStream>, bool)>>,
}

impl Tap {
    /// Relays every connection to its port on to `target` (`host:port`).
    pub fn to(target: String) -> Self {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").expect("a tap port");
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let links = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), false)));
        let (recorded, open) = (std::sync::Arc::clone(&seen), std::sync::Arc::clone(&links));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let mut links = open.lock().unwrap();
                if links.1 {
                    // Cut: the connection dies at once, as over a dead route.
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                links.0.push(client.try_clone().unwrap());
                links.0.push(server.try_clone().unwrap());
                drop(links);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let recorded = std::sync::Arc::clone(&recorded);
                    std::thread::spawn(move || {
                        use std::io::{Read as _, Write as _};
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            recorded.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { port, seen, links }
    }

    /// Everything carried so far.
    pub fn seen(&self) -> Vec<u8> {
        self.seen.lock().unwrap().clone()
    }

    /// Partitions the link: every connection through it is dropped, and
    /// new ones are refused until [`Tap::heal`].
    pub fn cut(&self) {
        let mut links = self.links.lock().unwrap();
        links.1 = true;
        for stream in links.0.drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Ends a partition: new connections go through again.
    pub fn heal(&self) {
        self.links.lock().unwrap().1 = false;
    }
}

/// What an export's citations show about its answers' figures (issue 23),
/// read back from `data/` and `citations/` with nothing of the support
/// check but the fact finder; and whether an answer's "yes" is taken back.
#[derive(Debug, Default)]
pub struct CitationAudit {
    /// Records exported, and of those the records with a citation.
    pub records: usize,
    pub citing: usize,
    /// Records whose answer states a figure the question does not.
    pub with_figures: usize,
    /// Of those, the records each of whose figures a cited span states.
    pub fully_cited: usize,
    /// "record id: figure" for each figure no cited span states while one
    /// states another figure of its kind: the answer disagrees with what it
    /// cites.
    pub contradicted: Vec<String>,
    /// "record id: statement" for each answer that opens with "yes" and
    /// then denies what its question asks (the check the worker runs,
    /// applied to the text as exported, whatever path it took there).
    pub yes_then_denies: Vec<String>,
}

pub fn citation_audit(dir: &std::path::Path) -> CitationAudit {
    use seedling_common::facts::{facts, kinds_compatible, readings, stated_facts};
    use seedling_common::record::{Record, RecordCitations};
    let read = |path: std::path::PathBuf| -> Vec<String> {
        std::fs::read_to_string(path)
            .map(|text| text.lines().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let mut audit = CitationAudit::default();
    for split in ["train", "validation", "test"] {
        let cited: std::collections::HashMap<String, RecordCitations> =
            read(dir.join(format!("citations/{split}.jsonl")))
                .iter()
                .map(|line| serde_json::from_str::<RecordCitations>(line).unwrap())
                .map(|c| (c.id.clone(), c))
                .collect();
        for line in read(dir.join(format!("data/{split}.jsonl"))) {
            let record: Record = serde_json::from_str(&line).unwrap();
            let answer = &record.response;
            let citations = cited
                .get(&record.id)
                .map_or(&[][..], |c| c.citations.as_slice());
            audit.records += 1;
            audit.citing += usize::from(!citations.is_empty());
            if let Some(statement) =
                seedling_worker::scoring::polarity::yes_then_denies(&record.input, answer)
            {
                audit
                    .yes_then_denies
                    .push(format!("{}: {statement}", record.id));
            }
            // A figure the question states is the person's own (often a
            // premise the answer denies), not a fact the answer asserts.
            let asked: Vec<String> = facts(&record.input).iter().flat_map(readings).collect();
            let figures: Vec<_> = stated_facts(answer)
                .into_iter()
                .filter(|f| !readings(f).iter().any(|r| asked.contains(r)))
                .collect();
            if figures.is_empty() {
                continue;
            }
            audit.with_figures += 1;
            let quoted: Vec<_> = citations.iter().flat_map(|c| facts(&c.quote)).collect();
            let mut all_stated = true;
            for figure in &figures {
                let meant = readings(figure);
                let same_kind: Vec<_> = quoted
                    .iter()
                    .filter(|q| kinds_compatible(&q.kind, &figure.kind))
                    .collect();
                let stated = same_kind
                    .iter()
                    .any(|q| readings(q).iter().any(|r| meant.contains(r)));
                all_stated &= stated;
                if !stated && !same_kind.is_empty() {
                    audit
                        .contradicted
                        .push(format!("{}: {} in {answer:?}", record.id, figure.text));
                }
            }
            audit.fully_cited += usize::from(all_stated);
        }
    }
    audit
}
