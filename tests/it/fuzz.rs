//! Fuzzing the boundaries with proptest: plan files, cluster configs,
//! lineage dumps, wire frames, and every gRPC request a client can send a
//! running coordinator. Inputs are the repository's own files (the corpus:
//! `examples/`, `tests/plans/`, `cluster-configs/`, a dump made here),
//! damaged by random edits, and raw random bytes. Nothing may panic, hang
//! or take the coordinator down; errors name where the input went wrong.
//!
//! CI runs proptest's default 256 cases per target (the coordinator target
//! fewer, each is a round trip); a longer run is
//! `PROPTEST_CASES=20000 cargo nextest run --release -p seedling-tests -E 'test(/fuzz::/)'`.
//! Failures proptest finds are kept in `tests/proptest-regressions/` and
//! replayed first on every run.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use seedling_common::config::ClusterConfig;
use seedling_common::ids::PlanId;
use seedling_common::work::{UnitResult, UnitTask};
use seedling_coordinator::lineage::{LineageStore, synthetic};
use seedling_coordinator::plan::{allocate, parse_plan};
use seedling_proto::api::{
    ClusterStatusRequest, LineageRequest, PlanRef, ReviewRequest, SubmitPlanRequest,
};
use seedling_proto::cluster::decode;
use seedling_proto::control::{Heartbeat, UnitAssignment, UnitWithdrawal};
use seedling_proto::results::UnitReport;
use seedling_proto::results::result_ingest_client::ResultIngestClient;
use seedling_tests::repo_root;
use seedling_tests::simulated::LocalCoordinator;

/// What a damaging edit can put into a file: values of the wrong type,
/// out of range, paths that escape, template and regex syntax, TOML
/// structure, odd Unicode.
const TOKENS: &[&str] = &[
    "-1",
    "0",
    "1e309",
    "nan",
    "-inf",
    "18446744073709551616",
    "\"\"",
    "[]",
    "{}",
    "[[",
    "]]",
    "=",
    "\"\\u0000\"",
    "\"../../etc/passwd\"",
    "\"/etc/shadow\"",
    "true",
    "'''",
    "\"\u{202e}ü\u{1F600}\"",
    "\"{{ undefined }}\"",
    "\"{% for x in %}\"",
    "\"(?P<unclosed\"",
    "[[references]]\npath = \"missing.md\"\n",
    "[target]\naccepted = 3\n",
    "\n[[subdomains]]\nname = \"\"\n",
];

/// One damaging edit at a position chosen by proptest.
#[derive(Debug, Clone)]
enum Edit {
    Delete(Index, usize),
    Insert(Index, Index),
    ReplaceLineValue(Index, Index),
    DuplicateLine(Index),
    Bytes(Index, Vec<u8>),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 1usize..64).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<Index>(), any::<Index>()).prop_map(|(at, t)| Edit::Insert(at, t)),
        (any::<Index>(), any::<Index>()).prop_map(|(l, t)| Edit::ReplaceLineValue(l, t)),
        any::<Index>().prop_map(Edit::DuplicateLine),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Edit::Bytes(at, bytes)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for edit in edits {
        let len = bytes.len().max(1);
        match edit {
            Edit::Delete(at, n) => {
                let start = at.index(len).min(bytes.len());
                let end = (start + n).min(bytes.len());
                bytes.drain(start..end);
            }
            Edit::Insert(at, token) => {
                let start = at.index(len).min(bytes.len());
                let token = TOKENS[token.index(TOKENS.len())].as_bytes();
                bytes.splice(start..start, token.iter().copied());
            }
            Edit::Bytes(at, inserted) => {
                let start = at.index(len).min(bytes.len());
                bytes.splice(start..start, inserted.iter().copied());
            }
            Edit::ReplaceLineValue(line, token) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
                if lines.is_empty() {
                    continue;
                }
                let i = line.index(lines.len());
                if let Some((key, _)) = lines[i].split_once('=') {
                    lines[i] = format!("{key}= {}", TOKENS[token.index(TOKENS.len())]);
                }
                bytes = lines.join("\n").into_bytes();
            }
            Edit::DuplicateLine(line) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let mut lines: Vec<&str> = text.lines().collect();
                if lines.is_empty() {
                    continue;
                }
                let i = line.index(lines.len());
                lines.insert(i, lines[i]);
                bytes = lines.join("\n").into_bytes();
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn files_in(dir: &str, extension: &str) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![repo_root().join(dir)];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == extension) {
                let text = std::fs::read_to_string(&path).unwrap();
                found.push((path, text));
            }
        }
    }
    found.sort();
    found
}

fn plan_corpus() -> &'static [(PathBuf, String)] {
    static CORPUS: OnceLock<Vec<(PathBuf, String)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut plans = files_in("examples", "toml");
        plans.extend(files_in("tests/plans", "toml"));
        assert!(
            plans.len() >= 3,
            "the plan corpus is the repository's plans"
        );
        plans
    })
}

/// A damaged plan from the corpus.
fn damaged_plan() -> impl Strategy<Value = String> {
    (any::<Index>(), prop::collection::vec(edit(), 0..6)).prop_map(|(seed, edits)| {
        let corpus = plan_corpus();
        apply(&corpus[seed.index(corpus.len())].1, &edits)
    })
}

proptest! {
    #[test]
    fn a_damaged_plan_is_refused_with_its_file_name_or_planned(text in damaged_plan()) {
        match parse_plan("fuzzed.toml", &text, None) {
            // A plan that parses can be planned.
            Ok(plan) => {
                let quotas = allocate(&plan);
                prop_assert!(!quotas.is_empty());
            }
            Err(err) => prop_assert!(err.to_string().contains("fuzzed.toml"), "{err}"),
        }
    }

    #[test]
    fn random_text_is_never_a_plan(text in ".{0,400}") {
        prop_assert!(parse_plan("noise.toml", &text, None).is_err());
    }

    #[test]
    fn a_damaged_cluster_config_is_refused_or_usable(
        seed in any::<Index>(),
        edits in prop::collection::vec(edit(), 0..6),
    ) {
        let corpus = files_in("cluster-configs", "toml");
        let text = apply(&corpus[seed.index(corpus.len())].1, &edits);
        if let Ok(config) = ClusterConfig::parse("fuzzed.toml", &text) {
            // What parses is complete enough to say what it exposes.
            if let Some(c) = &config.coordinator {
                let _ = c.plaintext_exposures();
            }
            if let Some(w) = &config.worker {
                let _ = w.plaintext_exposures();
            }
        }
    }

    #[test]
    fn wire_frames_of_random_bytes_decode_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<UnitAssignment>("assignment", &bytes);
        let _ = decode::<UnitWithdrawal>("withdrawal", &bytes);
        let _ = decode::<Heartbeat>("heartbeat", &bytes);
        let _ = serde_json::from_slice::<UnitTask>(&bytes);
        let _ = serde_json::from_slice::<UnitResult>(&bytes);
    }
}

/// A small real dump (a plan's roots and a few records), uncompressed
/// body and all: the import corpus.
fn dump_corpus() -> &'static (Vec<u8>, Vec<u8>) {
    static DUMP: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    DUMP.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = LineageStore::open(dir.path().join("store")).unwrap();
        let plan = PlanId::new("plan-00000000000000f2");
        store.append(&synthetic::plan_roots(&plan)).unwrap();
        store.append(&synthetic::records(&plan, 0, 3)).unwrap();
        let path = dir.path().join("lineage.dump");
        store.export_dump(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        // 16 bytes of magic and 4 of version, then the gzip stream.
        let mut body = Vec::new();
        flate2::read::GzDecoder::new(&bytes[20..])
            .read_to_end(&mut body)
            .unwrap();
        (bytes[..20].to_vec(), body)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    #[test]
    fn a_damaged_dump_is_refused_and_the_store_stays_empty(
        edits in prop::collection::vec(
            (any::<Index>(), any::<u8>(), prop::option::of(1usize..32)),
            1..6,
        ),
        damage_header in any::<bool>(),
    ) {
        let (header, body) = dump_corpus();
        let (mut header, mut body) = (header.clone(), body.clone());
        // Damage the body under a valid gzip layer, so the parser itself
        // meets it; or the header.
        for (at, byte, cut) in &edits {
            let target = if damage_header { &mut header } else { &mut body };
            if target.is_empty() {
                break;
            }
            let i = at.index(target.len());
            match cut {
                Some(n) => {
                    let end = (i + n).min(target.len());
                    target.drain(i..end);
                }
                None => target[i] ^= byte | 1,
            }
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&body).unwrap();
        let mut damaged = header;
        damaged.extend(gz.finish().unwrap());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("damaged.dump");
        std::fs::write(&path, &damaged).unwrap();
        let store = LineageStore::open(dir.path().join("store")).unwrap();
        match store.import_dump(&path) {
            Ok(_) => prop_assert!(store.check().unwrap().is_ok()),
            Err(err) => {
                prop_assert!(err.to_string().contains("damaged.dump"), "{err}");
                let left = store.check().unwrap();
                prop_assert!(left.nodes == 0 && left.edges == 0, "a refused import wrote into the store");
            }
        }
    }
}

/// Cases for a target, unless PROPTEST_CASES asks for more.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One request of any kind the API and the result ingest take, with
/// damaged or random contents.
#[derive(Debug, Clone)]
enum Request {
    Submit {
        plan: String,
        files: HashMap<String, Vec<u8>>,
        target: Option<u64>,
    },
    Get(String),
    Cancel(String),
    Lineage(String, u32),
    Export(String),
    Report(UnitReport),
    Review(ReviewRequest),
}

fn plan_id_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "plan-[0-9a-f]{16}",
        ".{0,40}",
        Just("../../etc".to_string())
    ]
}

/// A review call with any plan id, sample settings (NaN, zero and huge
/// included) and call, decisions and decision files as any text.
fn review_request() -> impl Strategy<Value = ReviewRequest> {
    use seedling_proto::api::review_request::Call;
    use seedling_proto::api::{DecisionsFile, DrawSample, ExportSample, ReviewSample, Reviewer};
    let number = prop_oneof![
        any::<f64>(),
        Just(0.95),
        Just(0.1),
        Just(f64::NAN),
        Just(1e-300)
    ];
    let sample = (
        number.clone(),
        number,
        any::<u32>(),
        prop::collection::vec(".{0,12}", 0..3),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(confidence, margin, minimum, by, after_feedback, checks)| ReviewSample {
                confidence,
                margin,
                minimum,
                by,
                after_feedback,
                checks,
            },
        );
    let call = prop_oneof![
        ".{0,70}".prop_map(|name| Call::Standing(Reviewer { name })),
        ".{0,200}".prop_map(Call::DecisionJson),
        ".{0,70}".prop_map(|name| Call::Undo(Reviewer { name })),
        ".{0,40}".prop_map(Call::LineageOf),
        Just(Call::DrawSample(DrawSample {})),
        Just(Call::ExportSample(ExportSample {})),
        (".{0,20}", ".{0,300}").prop_map(|(source_name, text)| Call::ImportDecisions(
            DecisionsFile { source_name, text }
        )),
    ];
    (
        prop_oneof![Just(String::new()), plan_id_like()],
        prop::option::of(sample),
        prop::option::of(call),
    )
        .prop_map(|(plan_id, sample, call)| ReviewRequest {
            plan_id,
            sample,
            call,
        })
}

fn request() -> impl Strategy<Value = Request> {
    let file_name = prop_oneof![
        "docs/[a-z]{1,8}\\.md",
        "\\.\\./[a-z]{1,8}",
        "/etc/[a-z]{1,8}",
        ".{0,20}",
    ];
    prop_oneof![
        3 => (
            damaged_plan(),
            prop::collection::hash_map(file_name, prop::collection::vec(any::<u8>(), 0..256), 0..4),
            prop::option::of(any::<u64>()),
        )
            .prop_map(|(plan, files, target)| Request::Submit { plan, files, target }),
        1 => plan_id_like().prop_map(Request::Get),
        1 => plan_id_like().prop_map(Request::Cancel),
        1 => (".{0,64}", any::<u32>()).prop_map(|(id, depth)| Request::Lineage(id, depth)),
        1 => plan_id_like().prop_map(Request::Export),
        1 => review_request().prop_map(Request::Review),
        2 => (".{0,20}", plan_id_like(), ".{0,20}", prop::collection::vec(any::<u8>(), 0..256), ".{0,40}", ".{0,60}")
            .prop_map(|(worker_id, plan_id, unit_id, result_json, lease, trace_parent)| {
                Request::Report(UnitReport { worker_id, seq: 1, plan_id, unit_id, result_json, lease, trace_parent })
            }),
    ]
}

fn coordinator() -> &'static (
    tokio::runtime::Runtime,
    tokio::sync::Mutex<LocalCoordinator>,
) {
    static COORDINATOR: OnceLock<(
        tokio::runtime::Runtime,
        tokio::sync::Mutex<LocalCoordinator>,
    )> = OnceLock::new();
    COORDINATOR.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let coordinator = runtime
            .block_on(LocalCoordinator::start(Duration::from_secs(30)))
            .unwrap();
        (runtime, tokio::sync::Mutex::new(coordinator))
    })
}

/// Sends one request; the coordinator must answer it (Ok or a status,
/// never a dropped connection) and still answer a status request after.
async fn exercise(coordinator: &mut LocalCoordinator, request: Request) -> Result<(), String> {
    let api = &mut coordinator.api;
    let answered = match request {
        Request::Submit {
            plan,
            files,
            target,
        } => api
            .submit_plan(SubmitPlanRequest {
                file_name: "fuzzed.toml".into(),
                plan_toml: plan,
                files,
                target,
            })
            .await
            .map(|_| ()),
        Request::Get(plan_id) => api.get_plan(PlanRef { plan_id }).await.map(|_| ()),
        Request::Cancel(plan_id) => api.cancel_plan(PlanRef { plan_id }).await.map(|_| ()),
        Request::Lineage(record_id, depth) => api
            .get_lineage(LineageRequest {
                record_id,
                depth,
                ..LineageRequest::default()
            })
            .await
            .map(|_| ()),
        Request::Export(plan_id) => match api.export_dataset(PlanRef { plan_id }).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => break Ok(()),
                        Err(status) => break Err(status),
                    }
                }
            }
            Err(status) => Err(status),
        },
        Request::Review(review) => api.review(review).await.map(|_| ()),
        Request::Report(report) => {
            let mut ingest = ResultIngestClient::connect(coordinator.url.clone())
                .await
                .map_err(|e| e.to_string())?;
            let mut acks = ingest
                .stream_results(tokio_stream::iter(vec![report]))
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            match acks.message().await {
                Ok(Some(ack)) if ack.outcome != "accepted" => Ok(()),
                Ok(Some(ack)) => return Err(format!("a fuzzed result was accepted: {ack:?}")),
                Ok(None) => Ok(()),
                Err(status) => Err(status),
            }
        }
    };
    if let Err(status) = answered
        && matches!(status.code(), tonic::Code::Unknown | tonic::Code::Internal)
        && status.message().contains("panic")
    {
        return Err(format!("the coordinator panicked: {status:?}"));
    }
    coordinator
        .api
        .get_cluster_status(ClusterStatusRequest {})
        .await
        .map(|_| ())
        .map_err(|status| format!("the coordinator stopped answering: {status:?}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48), ..ProptestConfig::default() })]

    #[test]
    fn every_request_a_client_can_send_is_answered_and_the_coordinator_stays_up(request in request()) {
        let (runtime, coordinator) = coordinator();
        let outcome = runtime.block_on(async {
            let mut coordinator = coordinator.lock().await;
            tokio::time::timeout(Duration::from_secs(20), exercise(&mut coordinator, request))
                .await
                .unwrap_or_else(|_| Err("no answer within 20 s".into()))
        });
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}

/// Copies a closed store's directory, so each case damages a copy.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A finished scripted run of the demo plan (its store closed) and a valid
/// decisions file for its review sample, two reviewers deciding every
/// record (accept, reject with a reason, edit): the import corpus.
fn review_corpus() -> &'static (tempfile::TempDir, PlanId, String) {
    use seedling_coordinator::review::{
        Decision, RejectReason, ReviewSession, SampleSettings, Verdict,
    };
    static CORPUS: OnceLock<(tempfile::TempDir, PlanId, String)> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let plan = seedling_coordinator::plan::load_plan(
            &repo_root().join("examples/retail-banking.toml"),
        )
        .unwrap();
        let (store, plan_id) = seedling_tests::scripted::scripted_run(dir.path(), &plan, 12);
        let session =
            ReviewSession::open(store, plan_id.clone(), SampleSettings::default()).unwrap();
        let mut lines = Vec::new();
        for (n, (record, _)) in session.sample().items.iter().enumerate() {
            for reviewer in ["ana", "ben"] {
                let verdict = match (n + reviewer.len()) % 3 {
                    0 => Verdict::Accept,
                    1 => Verdict::Reject {
                        reason: RejectReason::FactuallyWrong,
                    },
                    _ => Verdict::Edit {
                        input: "How do I close my account?".into(),
                        response: "Visit a branch with your ID; the balance is paid out.".into(),
                    },
                };
                let decision = Decision {
                    id: format!("{reviewer}-{n}"),
                    record: record.clone(),
                    reviewer: reviewer.into(),
                    verdict,
                    note: String::new(),
                };
                lines.push(serde_json::to_string(&decision).unwrap());
            }
        }
        drop(session);
        (dir, plan_id, lines.join("\n") + "\n")
    })
}

/// The demo plan's reference documents (path in the plan, bytes).
fn reference_corpus() -> &'static Vec<(PathBuf, Vec<u8>)> {
    static CORPUS: OnceLock<Vec<(PathBuf, Vec<u8>)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let plan = seedling_coordinator::plan::load_plan(
            &repo_root().join("examples/retail-banking.toml"),
        )
        .unwrap();
        plan.references
            .iter()
            .map(|r| {
                (
                    r.path.clone(),
                    std::fs::read(repo_root().join("examples").join(&r.path)).unwrap(),
                )
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(24), ..ProptestConfig::default() })]

    /// A damaged decisions file is refused with its name and line, leaving
    /// the store as it was, or it is imported whole and the store checks.
    #[test]
    fn a_damaged_decisions_file_is_refused_by_line_or_imported_whole(
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        use seedling_coordinator::review::{ReviewSession, SampleSettings};
        let (corpus, plan, decisions) = review_corpus();
        let dir = tempfile::tempdir().unwrap();
        copy_dir(corpus.path(), dir.path());
        let store = std::sync::Arc::new(LineageStore::open(dir.path()).unwrap());
        let mut session = ReviewSession::open(std::sync::Arc::clone(&store), plan.clone(), SampleSettings::default()).unwrap();
        let nodes = store.check().unwrap().nodes;
        let damaged = apply(decisions, &edits);
        match session.import("fuzzed.jsonl", &damaged) {
            Ok(_) => prop_assert!(store.check().unwrap().is_ok()),
            Err(err) => {
                let text = err.to_string();
                prop_assert!(text.starts_with("fuzzed.jsonl:"), "{text}");
                let left = store.check().unwrap();
                prop_assert!(left.is_ok() && left.nodes == nodes, "a refused file wrote into the store: {text}");
            }
        }
    }

    /// A damaged reference document (bytes flipped, cut or inserted, not
    /// UTF-8) is refused naming it, or read, and the plan then plans units.
    #[test]
    fn a_damaged_reference_document_is_refused_naming_it_or_read(
        which in any::<Index>(),
        edits in prop::collection::vec((any::<Index>(), any::<u8>(), prop::option::of(1usize..256)), 1..8),
    ) {
        use seedling_coordinator::pipeline::PlanRun;
        let corpus = reference_corpus();
        let dir = tempfile::tempdir().unwrap();
        let damaged = which.index(corpus.len());
        for (n, (path, bytes)) in corpus.iter().enumerate() {
            let mut bytes = bytes.clone();
            if n == damaged {
                for (at, byte, cut) in &edits {
                    let i = at.index(bytes.len().max(1)).min(bytes.len());
                    match cut {
                        Some(len) => {
                            let end = (i + len).min(bytes.len());
                            bytes.drain(i..end);
                        }
                        None => bytes.insert(i, *byte),
                    }
                }
            }
            let target = dir.path().join(path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(target, bytes).unwrap();
        }
        let plan = seedling_coordinator::plan::load_plan(&repo_root().join("examples/retail-banking.toml")).unwrap();
        let options = seedling_coordinator::pipeline::RunOptions {
            base_dir: dir.path().to_path_buf(),
            ..seedling_tests::scripted::scripted_options(4)
        };
        let store = std::sync::Arc::new(LineageStore::open(dir.path().join("store")).unwrap());
        match PlanRun::open(std::sync::Arc::clone(&store), plan, options) {
            Ok(mut run) => {
                prop_assert!(!run.next_units(4).unwrap().is_empty());
                prop_assert!(store.check().unwrap().is_ok());
            }
            Err(err) => {
                let name = corpus[damaged].0.file_name().unwrap().to_string_lossy().into_owned();
                prop_assert!(err.to_string().contains(&name), "{err}");
            }
        }
    }
}
