//! Human review: the page in a real browser (headless Chromium over
//! WebDriver), decisions as lineage nodes, the statuses they imply, the
//! export and the card, the JSONL path, and the page's guards. The records
//! come from the scripted test double; no model is loaded.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{Edge, EdgeKind, LineageBatch, Node, NodeKind, NodeStatus};
use seedling_coordinator::dataset::export_dataset;
use seedling_coordinator::lineage::LineageStore;
use seedling_coordinator::pipeline::PlanRun;
use seedling_coordinator::plan::load_plan;
use seedling_coordinator::review::{
    Decision, Ledger, RejectReason, ReviewSession, SampleSettings, Verdict,
};
use seedling_tests::browser::{Browser, Driver};
use seedling_tests::http::request;
use seedling_tests::scripted::{ScriptedWorker, scripted_options, scripted_run};
use seedling_tests::{free_port, repo_root, seedling, seedling_bin, wait_for};

const HOSTILE_INPUT: &str = "<script>window.pwned = 1</script> What does <b>bold</b> cost?";
const HOSTILE_RESPONSE: &str = "<img src=x onerror=\"window.pwned = 2\"> Nothing &amp; nobody.";

fn banking() -> seedling_coordinator::plan::Plan {
    load_plan(&repo_root().join("examples/retail-banking.toml")).unwrap()
}

/// A finished scripted run of `target` records, plus one accepted record
/// whose texts are HTML, as a model could write them.
fn reviewed_store(dir: &Path, target: u64) -> PlanId {
    let (store, plan) = scripted_run(dir, &banking(), target);
    let first = store
        .nodes_of_plan(&plan, Some(NodeKind::Response), Some(NodeStatus::Accepted))
        .next()
        .unwrap()
        .unwrap();
    let model = store.require(&first).unwrap();
    let mut body = model.body.clone();
    body["input"] = HOSTILE_INPUT.into();
    body["response"] = HOSTILE_RESPONSE.into();
    let id = NodeId::derive(&plan, &["hostile"]);
    // Made where its model was made, so its lineage is whole.
    let edges = store
        .parents(&model.id)
        .unwrap()
        .into_iter()
        .map(|(kind, parent)| Edge::new(&parent, &id, kind))
        .collect();
    let hostile = Node { id, body, ..model };
    store
        .append(&LineageBatch {
            nodes: vec![hostile],
            edges,
            ..LineageBatch::default()
        })
        .unwrap();
    plan
}

/// `seedling review serve` on a free loopback port; killed when dropped.
struct Page {
    child: Child,
    address: SocketAddr,
    first_line: String,
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Page {
    fn serve(store: &Path, listen: &str, extra: &[&str]) -> Self {
        Self::serve_from(&[store.as_os_str()], listen, extra)
    }

    /// `seedling review serve SOURCE...`: a store, or `--coordinator URL`.
    fn serve_from(source: &[&std::ffi::OsStr], listen: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(seedling_bin())
            .args(["review", "serve"])
            .args(source)
            .args(["--listen", listen])
            .args(extra)
            .env_remove("SEEDLING_REVIEW_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut first_line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut first_line).unwrap();
        // Keep reading: a closed pipe would end the server at its next line.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        assert!(first_line.contains("review page"), "{first_line:?}");
        let port = listen.rsplit(':').next().unwrap();
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for("the review page", Duration::from_secs(90), || {
            request(address, "GET", "/", &[], None).is_some_and(|(s, _)| s == 200)
        });
        Self {
            child,
            address,
            first_line,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.address)
    }
}

fn sign_in(browser: &Browser, page: &Page, reviewer: &str) {
    browser.goto(&page.url());
    browser.fill("#reviewer-name", reviewer);
    browser.click("#start");
    browser.wait_text("#progress", "the first progress line", |t| {
        t.contains(" reviewed")
    });
}

fn shown(browser: &Browser) -> String {
    browser
        .eval("return document.getElementById('item').dataset.record;")
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn wait_reviewed(browser: &Browser, n: usize) {
    browser.wait_text("#progress", &format!("{n} reviewed"), |t| {
        t.starts_with(&format!("{n} of "))
    });
}

const ENTER: &str = "\u{E007}";

#[test]
fn a_review_in_the_browser_is_lineage_and_shapes_the_export() {
    let dir = tempfile::tempdir().unwrap();
    let plan = reviewed_store(dir.path(), 24);
    // The whole population in the sample, so the hostile record is in it.
    let page = Page::serve(
        dir.path(),
        &format!("127.0.0.1:{}", free_port()),
        &["--margin", "0.5", "--minimum", "1000"],
    );
    let driver = Driver::start();
    let ana = Browser::open(&driver);
    sign_in(&ana, &page, "ana");
    assert!(
        ana.text("#progress").starts_with("0 of 25 reviewed"),
        "{}",
        ana.text("#progress")
    );

    // Accept by keyboard until the record made of HTML shows; it must show
    // as text, and nothing in it may run.
    let mut done = 0;
    while !ana.text("#input").contains("<script>") {
        assert!(done < 25, "the hostile record never showed");
        ana.press("a", false);
        done += 1;
        wait_reviewed(&ana, done);
    }
    assert_eq!(ana.text("#input"), HOSTILE_INPUT);
    assert_eq!(ana.text("#response"), HOSTILE_RESPONSE);
    let injected = ana.eval(
        "return document.querySelectorAll('#item script, #item img, #item b').length + \
         (window.pwned === undefined ? 0 : 100);",
    );
    assert_eq!(injected, 0, "markup from a record rendered or ran");
    ana.press("a", false);
    done += 1;
    wait_reviewed(&ana, done);

    // Accept by clicking.
    let accepted = shown(&ana);
    ana.click("#accept");
    done += 1;
    wait_reviewed(&ana, done);

    // Reject by keyboard: r, the third reason, Enter.
    let rejected = shown(&ana);
    ana.press("r", false);
    ana.wait_text("#reasons", "the reasons", |t| t.contains("Off-domain"));
    ana.press("3", false);
    ana.press(ENTER, false);
    done += 1;
    wait_reviewed(&ana, done);

    // Edit: the corrected text becomes a new record.
    let edited = shown(&ana);
    ana.press("e", false);
    ana.fill(
        "#edit-response",
        "A corrected answer: the overdraft fee is 25 euros.",
    );
    ana.press(ENTER, true);
    done += 1;
    wait_reviewed(&ana, done);

    // Accept one more, then undo it: the same record is back.
    let undone = shown(&ana);
    ana.press("a", false);
    wait_reviewed(&ana, done + 1);
    ana.press("u", false);
    wait_reviewed(&ana, done);
    assert_eq!(shown(&ana), undone, "undo shows the record again");
    assert!(
        ana.text("#status").contains("Undone"),
        "{}",
        ana.text("#status")
    );

    // A killed server keeps every decision it acknowledged.
    drop(ana);
    drop(page);
    let store = Arc::new(LineageStore::open(dir.path()).unwrap());
    let ledger = Ledger::load(&store, &plan).unwrap();
    let standing: Vec<_> = ledger.standing().collect();
    assert_eq!(standing.len(), done);
    assert_eq!(ledger.decisions().iter().filter(|d| d.undone).count(), 1);
    assert!(standing.iter().all(|d| d.reviewer == "ana"));
    let status = |id: &str| store.require(&NodeId::new(id)).unwrap().status;
    assert_eq!(status(&accepted), NodeStatus::Accepted);
    assert_eq!(status(&rejected), NodeStatus::Rejected);
    assert_eq!(status(&edited), NodeStatus::Superseded);
    assert_eq!(status(&undone), NodeStatus::Accepted);
    let rejection = ledger.effective(&NodeId::new(&rejected)).unwrap();
    assert_eq!(
        rejection.verdict,
        Verdict::Reject {
            reason: RejectReason::OffDomain
        }
    );
    // Each decision hangs below its record; the edit supersedes it.
    let children = store.children(&NodeId::new(&edited)).unwrap();
    assert!(children.iter().any(|(k, _)| *k == EdgeKind::ReviewedBy));
    let (_, correction) = children
        .iter()
        .find(|(k, _)| *k == EdgeKind::Supersedes)
        .expect("the edit supersedes its original")
        .clone();
    let correction_node = store.require(&correction).unwrap();
    assert_eq!(correction_node.status, NodeStatus::Accepted);
    assert_eq!(correction_node.body["edited_by"], "ana");
    assert_eq!(
        store.current_version(&NodeId::new(&edited)).unwrap(),
        correction
    );

    // The export leaves the rejected record out and ships the corrected one.
    let out = tempfile::tempdir().unwrap();
    let summary = export_dataset(&store, &plan, out.path()).unwrap();
    assert_eq!(summary.records, 25 - 1);
    let mut records = Vec::new();
    for split in ["train", "validation", "test"] {
        let path = out.path().join(format!("data/{split}.jsonl"));
        if let Ok(text) = std::fs::read_to_string(path) {
            for line in text.lines() {
                records.push(serde_json::from_str::<serde_json::Value>(line).unwrap());
            }
        }
    }
    let by_id = |id: &str| records.iter().find(|r| r["id"] == id);
    assert!(by_id(&rejected).is_none(), "a rejected record was exported");
    assert!(by_id(&edited).is_none(), "an edited original was exported");
    let shipped = by_id(correction.as_str()).expect("the correction is exported");
    assert_eq!(
        shipped["response"],
        "A corrected answer: the overdraft fee is 25 euros."
    );
    assert_eq!(shipped["metadata"]["review_status"], "human_edited");
    assert_eq!(shipped["trace"]["parent_id"], edited.as_str());
    assert_eq!(
        by_id(&accepted).unwrap()["metadata"]["review_status"],
        "human_accepted"
    );
    let card = std::fs::read_to_string(out.path().join("README.md")).unwrap();
    assert!(card.contains("## Human review"), "{card}");
    assert!(
        card.contains(&format!("{done} reviewed by 1 reviewer(s)")),
        "{card}"
    );
    assert!(card.contains("| off_domain | 1 |"), "{card}");
}

#[test]
fn two_reviewers_at_once_lose_nothing_and_their_agreement_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let plan = reviewed_store(dir.path(), 12);
    let page = Page::serve(dir.path(), &format!("127.0.0.1:{}", free_port()), &[]);
    let driver = Driver::start();
    let ana = Browser::open(&driver);
    let ben = Browser::open(&driver);
    sign_in(&ana, &page, "ana");
    sign_in(&ben, &page, "ben");
    // Both decide the same records, interleaved, without waiting for each
    // other: ana accepts everything, ben rejects every third.
    let rounds = 6;
    for i in 0..rounds {
        ana.press("a", false);
        if i % 3 == 2 {
            ben.press("r", false);
            ben.wait_text("#reasons", "the reasons", |t| t.contains("Poor response"));
            ben.press("7", false);
            ben.press(ENTER, false);
        } else {
            ben.press("a", false);
        }
        for (who, browser) in [("ana", &ana), ("ben", &ben)] {
            browser.wait_text("#who", &format!("{who}'s count"), |t| {
                t.contains(&format!("{} decided by you", i + 1))
            });
        }
    }
    drop((ana, ben, page));
    let store = Arc::new(LineageStore::open(dir.path()).unwrap());
    let ledger = Ledger::load(&store, &plan).unwrap();
    let by = ledger.by_reviewer();
    assert_eq!(by["ana"].len(), rounds);
    assert_eq!(by["ben"].len(), rounds);
    drop(store);
    let (ok, text) = seedling(["review".as_ref(), "sample".as_ref(), dir.path().as_os_str()]);
    assert!(ok, "{text}");
    // Six shared records, two of them decided differently.
    assert!(
        text.contains("agreement ana & ben: 4 of 6 alike, kappa 0.00"),
        "{text}"
    );
}

fn session(dir: &Path, plan: &PlanId) -> ReviewSession {
    let store = Arc::new(LineageStore::open(dir).unwrap());
    ReviewSession::open(store, plan.clone(), SampleSettings::default()).unwrap()
}

#[test]
fn the_latest_standing_decision_rules_and_a_resumed_run_replaces_the_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (store, plan) = scripted_run(dir.path(), &banking(), 20);
    drop(store);
    let mut review = session(dir.path(), &plan);
    let items: Vec<NodeId> = review
        .sample()
        .items
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    assert!(items.len() >= 5, "{items:?}");
    let decide = |id: &str, record: &NodeId, reviewer: &str, verdict: Verdict| Decision {
        id: id.into(),
        record: record.clone(),
        reviewer: reviewer.into(),
        verdict,
        note: String::new(),
    };
    let reject = |reason| Verdict::Reject { reason };
    let status = |review: &ReviewSession, id: &NodeId| review.store().require(id).unwrap().status;
    // ana rejects, ben then accepts: the latest decision stands.
    review
        .decide(&decide(
            "d1",
            &items[0],
            "ana",
            reject(RejectReason::Unsafe),
        ))
        .unwrap();
    assert_eq!(status(&review, &items[0]), NodeStatus::Rejected);
    review
        .decide(&decide("d1", &items[0], "ben", Verdict::Accept))
        .unwrap();
    assert_eq!(status(&review, &items[0]), NodeStatus::Accepted);
    // ben takes it back: ana's rejection stands again.
    assert_eq!(review.undo("ben").unwrap(), items[0]);
    assert_eq!(status(&review, &items[0]), NodeStatus::Rejected);
    // An edit, then a different edit by someone else: only the latest ships.
    let edit = |text: &str| Verdict::Edit {
        input: "How do I close my account?".into(),
        response: text.into(),
    };
    review
        .decide(&decide("d2", &items[1], "ana", edit("First fix.")))
        .unwrap();
    review
        .decide(&decide("d2", &items[1], "ben", edit("Second fix.")))
        .unwrap();
    let versions: Vec<_> = review
        .store()
        .children(&items[1])
        .unwrap()
        .into_iter()
        .filter(|(k, _)| *k == EdgeKind::Supersedes)
        .map(|(_, id)| review.store().require(&id).unwrap())
        .collect();
    assert_eq!(versions.len(), 2);
    for version in &versions {
        let latest = version.body["response"] == "Second fix.";
        assert_eq!(
            version.status,
            if latest {
                NodeStatus::Accepted
            } else {
                NodeStatus::Rejected
            },
            "{}",
            version.body["response"]
        );
    }
    // The same decision sent twice is stored once; a different one under
    // a used id is refused.
    let again = review
        .decide(&decide("d2", &items[1], "ben", edit("Second fix.")))
        .unwrap();
    assert_eq!(again, seedling_coordinator::review::Taken::AlreadyStored);
    let clash = review
        .decide(&decide("d2", &items[2], "ben", Verdict::Accept))
        .unwrap_err();
    assert!(clash.to_string().contains("already used"), "{clash}");
    // A record outside the population is refused by name.
    let stranger = NodeId::derive(&plan, &["nobody"]);
    let unknown = review
        .decide(&decide("d3", &stranger, "ana", Verdict::Accept))
        .unwrap_err();
    assert!(unknown.to_string().contains(stranger.as_str()), "{unknown}");
    drop(review);

    // The next round: a resumed run replaces the rejected record (and only
    // it), and keeps the edited one in its place.
    let store = Arc::new(LineageStore::open(dir.path()).unwrap());
    let options = scripted_options(20);
    let mut run = PlanRun::open(Arc::clone(&store), banking(), options).unwrap();
    assert_eq!(
        run.progress().accepted,
        19,
        "the rejected record no longer counts"
    );
    let worker = ScriptedWorker::default();
    while let Some(unit) = run.next_units(1).unwrap().pop() {
        run.record_result(worker.answer(&unit)).unwrap();
    }
    assert_eq!(run.progress().accepted, 20);
    let out = tempfile::tempdir().unwrap();
    let summary = export_dataset(&store, &plan, out.path()).unwrap();
    assert_eq!(summary.records, 20);
}

#[test]
fn decisions_files_are_refused_by_line_and_imported_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, plan) = scripted_run(dir.path(), &banking(), 16);
    drop(store);
    let sample_file = dir.path().join("sample.jsonl");
    let run = |args: &[&str]| {
        let mut all: Vec<&std::ffi::OsStr> = vec!["review".as_ref()];
        all.extend(args.iter().map(std::ffi::OsStr::new));
        all.push(dir.path().as_os_str());
        seedling(all)
    };
    let (ok, text) = run(&["export", "--out", sample_file.to_str().unwrap()]);
    assert!(ok, "{text}");
    let sample: Vec<serde_json::Value> = std::fs::read_to_string(&sample_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expected = session(dir.path(), &plan).sample().total();
    assert_eq!(sample.len(), expected);
    assert!(
        sample
            .iter()
            .all(|r| r["input"].is_string() && r["stratum"].is_string())
    );

    let line = |id: &str, record: &serde_json::Value, extra: serde_json::Value| {
        let mut value = serde_json::json!({"id": id, "record": record, "reviewer": "ext"});
        for (k, v) in extra.as_object().unwrap() {
            value[k] = v.clone();
        }
        value.to_string()
    };
    let accept = serde_json::json!({"decision": "accept"});
    let cases = [
        (
            vec![
                line("a", &sample[0]["record"], accept.clone()),
                line(
                    "b",
                    &serde_json::json!("n-000000000000000000000000"),
                    accept.clone(),
                ),
            ],
            ":2: record n-000000000000000000000000 is not in this plan's review population",
        ),
        (
            vec![
                line("a", &sample[0]["record"], accept.clone()),
                line("b", &sample[1]["record"], accept.clone()),
                line(
                    "c",
                    &sample[2]["record"],
                    serde_json::json!({"decision": "reject", "reason": "boring"}),
                ),
            ],
            ":3: unknown reason \"boring\"",
        ),
        (
            vec![
                line("a", &sample[0]["record"], accept.clone()),
                line("a", &sample[1]["record"], accept.clone()),
            ],
            ":2: decision id \"a\" of ext repeats line 1",
        ),
        (
            vec![
                line("a", &sample[0]["record"], accept.clone()),
                line(
                    "b",
                    &sample[0]["record"],
                    serde_json::json!({"decision": "reject", "reason": "unsafe"}),
                ),
            ],
            ":2: ext already decides record",
        ),
        (vec!["{not json".to_string()], ":1: not JSON"),
    ];
    let file = dir.path().join("decisions.jsonl");
    for (lines, expected) in cases {
        std::fs::write(&file, lines.join("\n")).unwrap();
        let (ok, text) = run(&["import", file.to_str().unwrap()]);
        assert!(
            !ok && text.contains(expected),
            "expected {expected:?} in {text}"
        );
    }
    // Nothing of a refused file was stored.
    assert!(
        Ledger::load(&LineageStore::open(dir.path()).unwrap(), &plan)
            .unwrap()
            .decisions()
            .is_empty()
    );
    let good = [
        line("a", &sample[0]["record"], accept.clone()),
        line(
            "b",
            &sample[1]["record"],
            serde_json::json!({"decision": "reject", "reason": "factually_wrong", "note": "rate is 3%"}),
        ),
        line(
            "c",
            &sample[2]["record"],
            serde_json::json!({"decision": "edit", "input": "Q?", "response": "A fixed answer."}),
        ),
    ];
    std::fs::write(&file, good.join("\n")).unwrap();
    let (ok, text) = run(&["import", file.to_str().unwrap()]);
    assert!(
        ok && text.contains("stored 3 decisions (0 already stored)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("3 of {expected} reviewed, acceptance 67%")),
        "{text}"
    );
    let (ok, text) = run(&["import", file.to_str().unwrap()]);
    assert!(
        ok && text.contains("stored 0 decisions (3 already stored)"),
        "{text}"
    );
}

#[test]
fn the_page_beyond_loopback_needs_its_token_and_answers_only_its_own_host() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = scripted_run(dir.path(), &banking(), 8);
    drop(store);
    let state = "/api/state?reviewer=ana";
    {
        // Beyond loopback without --token: a fresh token, in the printed URL.
        let page = Page::serve(dir.path(), &format!("0.0.0.0:{}", free_port()), &[]);
        let token = page
            .first_line
            .split("#token=")
            .nth(1)
            .expect("the URL carries the token")
            .trim()
            .to_string();
        assert!(token.len() >= 32, "{token}");
        let (status, body) = request(page.address, "GET", state, &[], None).unwrap();
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("needs its token"), "{body}");
        let (status, _) = request(
            page.address,
            "GET",
            state,
            &[("x-seedling-token", "wrong")],
            None,
        )
        .unwrap();
        assert_eq!(status, 401);
        let (status, body) = request(
            page.address,
            "GET",
            state,
            &[("x-seedling-token", &token)],
            None,
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        // The page itself is served with a policy that runs no inline script.
        let (_, _) = request(page.address, "GET", "/", &[], None).unwrap();
    }
    // On loopback: no token, but a request for another host is refused
    // (DNS rebinding), and a decision must be JSON.
    let page = Page::serve(dir.path(), &format!("127.0.0.1:{}", free_port()), &[]);
    let (status, _) = request(page.address, "GET", state, &[], None).unwrap();
    assert_eq!(status, 200);
    let (status, body) = request(
        page.address,
        "GET",
        state,
        &[("Host", "evil.example:80")],
        None,
    )
    .unwrap();
    assert_eq!(status, 421, "{body}");
    let (status, _) = request(
        page.address,
        "POST",
        "/api/decisions",
        &[("Content-Type", "text/plain")],
        None,
    )
    .unwrap();
    assert_eq!(status, 415);
    let (status, body) = request(
        page.address,
        "POST",
        "/api/decisions",
        &[],
        Some(&serde_json::json!({"id": "x", "record": "n-0", "reviewer": "ana", "decision": "reject", "reason": "meh"})),
    )
    .unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("unknown reason"), "{body}");
}

#[test]
fn feedback_puts_review_into_the_next_rounds_prompts_and_lineage_and_pauses_what_fails() {
    use seedling_coordinator::review::{Feedback, FeedbackSettings};
    let dir = tempfile::tempdir().unwrap();
    let (store, plan) = scripted_run(dir.path(), &banking(), 48);
    drop(store);
    let mut review = session(dir.path(), &plan);
    // The two groups (subdomain / task type) with the most sampled records.
    let mut groups: std::collections::BTreeMap<String, Vec<NodeId>> = Default::default();
    for (id, stratum) in &review.sample().items {
        groups.entry(stratum.clone()).or_default().push(id.clone());
    }
    let mut groups: Vec<(String, Vec<NodeId>)> = groups.into_iter().collect();
    groups.sort_by_key(|(_, ids)| std::cmp::Reverse(ids.len()));
    let (failing, failing_ids) = groups[0].clone();
    let (mixed, mixed_ids) = groups[1].clone();
    assert!(failing_ids.len() >= 5 && mixed_ids.len() >= 3, "{groups:?}");
    let decide =
        |review: &mut ReviewSession, n: usize, record: &NodeId, verdict: Verdict, note: &str| {
            review
                .decide(&Decision {
                    id: format!("d{n}"),
                    record: record.clone(),
                    reviewer: "ana".into(),
                    verdict,
                    note: note.into(),
                })
                .unwrap();
        };
    // Every reviewed record of the first group is wrong: it pauses.
    for (n, id) in failing_ids.iter().take(5).enumerate() {
        decide(
            &mut review,
            n,
            id,
            Verdict::Reject {
                reason: RejectReason::FactuallyWrong,
            },
            "",
        );
    }
    // The second: one answer wrong (with a note), one request off-domain, one corrected.
    decide(
        &mut review,
        10,
        &mixed_ids[0],
        Verdict::Reject {
            reason: RejectReason::ContradictsReference,
        },
        "the fee is 25 euros, not 40",
    );
    decide(
        &mut review,
        11,
        &mixed_ids[1],
        Verdict::Reject {
            reason: RejectReason::OffDomain,
        },
        "",
    );
    decide(
        &mut review,
        12,
        &mixed_ids[2],
        Verdict::Edit {
            input: "Can I raise my card limit in the app?".into(),
            response: "Yes: open Cards, choose Limits and confirm with your PIN.".into(),
        },
        "",
    );
    let wrong_answer = review.store().require(&mixed_ids[0]).unwrap().body["response"]
        .as_str()
        .unwrap()
        .to_string();
    drop(review);

    let store = Arc::new(LineageStore::open(dir.path()).unwrap());
    let feedback = Feedback::gather(&store, &plan, &FeedbackSettings::default(), 0.5).unwrap();
    let group = |name: &str| {
        feedback
            .groups
            .iter()
            .find(|g| format!("{} / {}", g.subdomain, g.task_type) == name)
            .unwrap()
            .clone()
    };
    let paused = group(&failing);
    let steered = group(&mixed);
    assert!(
        paused.paused && paused.reviewed == 5 && paused.kept == 0,
        "{paused:?}"
    );
    assert!(!steered.paused, "{steered:?}");
    let checks = feedback.checks.clone().unwrap();
    assert_eq!(checks.reviewed, 8);
    assert_eq!(checks.missed["factually_wrong"], 5);
    // Answers rejected for what they say, the notes the prompts carry and
    // the off-domain request are kept for the check that stops the next
    // round repeating them.
    let notes: usize = feedback
        .groups
        .iter()
        .map(|g| usize::from(g.input_note().is_some()) + usize::from(g.response_note().is_some()))
        .sum();
    assert_eq!(feedback.rejected_answers.len(), 6 + notes);
    assert_eq!(feedback.rejected_inputs.len(), 1);

    // The next round: the records reviewers took out are replaced, except
    // in the paused group, and the steered group's prompts carry the review.
    let options = scripted_options(48);
    let mut run = PlanRun::open(Arc::clone(&store), banking(), options).unwrap();
    run.apply_feedback(feedback).unwrap();
    let worker = ScriptedWorker::default();
    let mut steered_units = 0;
    loop {
        let units = run.next_units(1).unwrap();
        let Some(unit) = units.into_iter().next() else {
            break;
        };
        let text = serde_json::to_string(&unit).unwrap();
        assert!(
            !unit.unit.starts_with(&paused.subdomain) || !text.contains(&paused.task_type),
            "a unit of the paused group was planned: {}",
            unit.unit
        );
        if text.contains("Reviewers rejected earlier messages") {
            steered_units += 1;
            assert!(
                text.contains("Feedback from the domain's reviewers"),
                "{text}"
            );
            assert!(text.contains("the fee is 25 euros, not 40"), "{text}");
            // The wrong answer itself is not shown: small models copy it.
            assert!(!text.contains(&wrong_answer[..40]), "{text}");
            assert!(text.contains("Yes: open Cards, choose Limits"), "{text}");
        }
        run.record_result(worker.answer(&unit)).unwrap();
    }
    let progress = run.progress();
    assert_eq!(
        progress.accepted,
        48 - 5,
        "the paused group stays short by its 5 rejected"
    );
    assert!(
        steered_units >= 2,
        "the replacements of the steered group carry its feedback"
    );

    // A record made after feedback traces back to the decisions that changed its prompt.
    let feedback_node = store.require(&steered.node).unwrap();
    assert_eq!(feedback_node.kind, NodeKind::Feedback);
    let made_after: Vec<NodeId> = store
        .children(&steered.node)
        .unwrap()
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert!(!made_after.is_empty());
    let ancestors = store
        .ancestors(
            &made_after[0],
            seedling_coordinator::lineage::Walk::default(),
        )
        .unwrap();
    let kinds: Vec<NodeKind> = ancestors
        .iter()
        .map(|r| store.require(&r.id).unwrap().kind)
        .collect();
    assert!(kinds.contains(&NodeKind::Feedback), "{kinds:?}");
    assert!(kinds.contains(&NodeKind::ReviewDecision), "{kinds:?}");

    // A second review can look at exactly what the feedback round made.
    let accepted_after = made_after
        .iter()
        .filter(|id| store.require(id).unwrap().status == NodeStatus::Accepted)
        .count();
    assert!(accepted_after >= 2, "{accepted_after}");
    drop(run);
    let second = ReviewSession::open(
        store,
        plan,
        SampleSettings {
            after_feedback: true,
            ..SampleSettings::default()
        },
    )
    .unwrap();
    assert_eq!(second.sample().population(), accepted_after);
}

#[test]
fn a_feedback_round_without_a_review_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let plan = repo_root().join("examples/retail-banking.toml");
    let run = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "run".as_ref(),
            plan.as_os_str(),
            "--out".as_ref(),
            dir.path().as_os_str(),
        ];
        args.extend(["--target", "4", "--feedback"].map(std::ffi::OsStr::new));
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        seedling(args)
    };
    let (ok, err) = run(&["--pause-below", "2"]);
    assert!(
        !ok && err.contains("--pause-below 2 must be between 0 and 1"),
        "{err}"
    );
    let (ok, err) = run(&[]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("has no review decisions") && err.contains("seedling review serve"),
        "{err}"
    );
}

/// A plan that a running coordinator holds is reviewed through the
/// coordinator, which owns its store: the same sample, page, decisions,
/// undo, refusals and JSONL path as for a local store, and the dataset the
/// coordinator exports leaves out what reviewers rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_a_coordinator_holds_is_reviewed_through_the_coordinator() {
    use seedling_tests::scripted::Script;
    use seedling_tests::simulated::{LocalCoordinator, join_answering_worker};

    let mut coordinator = LocalCoordinator::start(Duration::from_secs(30))
        .await
        .unwrap();
    join_answering_worker(&mut coordinator, "scripted-a", 4, Script::default())
        .await
        .unwrap();
    let plan = coordinator
        .run_plan_to_its_end(&repo_root().join("examples/retail-banking.toml"), 12)
        .await
        .unwrap();
    assert_eq!(plan.state, "finished", "{plan:?}");
    let url = coordinator.url.clone();
    let review = tokio::task::spawn_blocking(move || review_through(&url, &plan.plan_id)).await;
    coordinator.stop().await;
    review.unwrap();
}

fn review_through(url: &str, plan: &str) {
    use serde_json::{Value, json};
    let dir = tempfile::tempdir().unwrap();
    let review = |args: &[&str]| {
        let mut all = vec!["review"];
        all.extend(args);
        all.extend(["--coordinator", url]);
        seedling(all)
    };
    // The coordinator's only plan, without --plan.
    let (ok, text) = review(&["sample"]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("review sample of plan {plan}: ")),
        "{text}"
    );
    let (ok, text) = review(&["sample", "--json", "--plan", plan]);
    assert!(ok, "{text}");
    let overview: Value = serde_json::from_str(&text).unwrap();
    let total = overview["figures"]["sample"].as_u64().unwrap();
    assert!(total >= 2, "{overview}");
    assert_eq!(overview["figures"]["reviewed"], 0, "{overview}");

    // The page, answered by the coordinator.
    let listen = format!("127.0.0.1:{}", free_port());
    let page = Page::serve_from(&["--coordinator".as_ref(), url.as_ref()], &listen, &[]);
    assert!(
        page.first_line.contains(&format!(
            "review page for plan {plan} ({total} sampled records)"
        )),
        "{}",
        page.first_line
    );
    let api = |method: &str, path: &str, body: Option<Value>| {
        let (status, text) = request(page.address, method, path, &[], body.as_ref()).unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    };
    let decide = |id: &str, record: &str, verdict: Value| {
        let mut decision = json!({"id": id, "record": record, "reviewer": "ana"});
        for (k, v) in verdict.as_object().unwrap() {
            decision[k] = v.clone();
        }
        api("POST", "/api/decisions", Some(decision))
    };
    let accept = json!({"decision": "accept"});
    let (status, state) = api("GET", "/api/state?reviewer=ana", None);
    assert_eq!(status, 200, "{state}");
    let first = state["item"]["record"].as_str().unwrap().to_string();
    let wrong = json!({"decision": "reject", "reason": "factually_wrong", "note": "wrong fee"});
    let (status, body) = decide("ana-1", &first, wrong.clone());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["taken"], "stored", "{body}");
    let progress = body["progress"].as_str().unwrap();
    assert!(
        progress.starts_with(&format!("1 of {total} reviewed, acceptance 0% +- ")),
        "{progress}"
    );
    let second = body["item"]["record"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    // A resend is answered as already stored; the same id for another
    // verdict, an unknown reason and an unknown record are refused with
    // the status a local page gives.
    assert_eq!(decide("ana-1", &first, wrong).1["taken"], "already_stored");
    let (status, body) = decide("ana-1", &first, accept.clone());
    assert_eq!(status, 409, "{body}");
    let (status, body) = decide(
        "ana-9",
        &first,
        json!({"decision": "reject", "reason": "meh"}),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("unknown reason"),
        "{body}"
    );
    let (status, _) = decide("ana-9", "n-000000000000000000000000", accept.clone());
    assert_eq!(status, 404);
    // Accept, undo (the record comes back), accept again.
    assert_eq!(decide("ana-2", &second, accept.clone()).0, 200);
    let (status, body) = api("POST", "/api/undo", Some(json!({"reviewer": "ana"})));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["undone"], second.as_str());
    assert_eq!(body["item"]["record"], second.as_str());
    assert_eq!(decide("ana-3", &second, accept).0, 200);
    let (status, lineage) = api("GET", &format!("/api/lineage/{first}"), None);
    assert_eq!(status, 200);
    assert!(
        lineage.as_str().unwrap().contains("review_decision"),
        "{lineage}"
    );
    drop(page);

    // JSONL both ways.
    let sample_file = dir.path().join("sample.jsonl");
    let (ok, text) = review(&["export", "--out", sample_file.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("wrote {total} sampled records of plan {plan}")),
        "{text}"
    );
    let lines = std::fs::read_to_string(&sample_file)
        .unwrap()
        .lines()
        .count();
    assert_eq!(lines as u64, total);
    let decisions = dir.path().join("bob.jsonl");
    let bob = |record: &str| {
        json!({"id": "bob-1", "record": record, "reviewer": "bob", "decision": "accept"})
            .to_string()
    };
    std::fs::write(&decisions, bob("n-000000000000000000000000")).unwrap();
    let (ok, text) = review(&["import", decisions.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        text.contains("bob.jsonl:1: record n-000000000000000000000000"),
        "{text}"
    );
    std::fs::write(&decisions, bob(&second)).unwrap();
    let (ok, text) = review(&["import", decisions.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(
        text.contains("stored 1 decisions (0 already stored); 2 of "),
        "{text}"
    );
    let (_, text) = review(&["sample"]);
    assert!(text.contains("agreement ana & bob: 1 of 1 alike"), "{text}");

    // The coordinator's export leaves the rejected record out and reports the review.
    let out = dir.path().join("dataset");
    let (ok, text) = seedling([
        "export",
        plan,
        "--coordinator",
        url,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let mut exported = Vec::new();
    for split in ["train", "validation", "test"] {
        if let Ok(text) = std::fs::read_to_string(out.join(format!("data/{split}.jsonl"))) {
            exported.extend(
                text.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()),
            );
        }
    }
    assert_eq!(exported.len(), 12 - 1);
    assert!(exported.iter().all(|r| r["id"] != first.as_str()));
    let kept = exported
        .iter()
        .find(|r| r["id"] == second.as_str())
        .unwrap();
    assert_eq!(kept["metadata"]["review_status"], "human_accepted");
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.contains("## Human review"), "{card}");
    assert!(card.contains("| factually_wrong | 1 |"), "{card}");
}

/// A review of the checks: a sample of what each automatic check rejected,
/// one stratum per check. Reviewers' decisions there measure the check
/// (precision, and recall estimated over every stratum) and change
/// nothing in the dataset; the card and `review sample` report them.
#[test]
fn a_review_of_the_checks_measures_each_against_people_and_leaves_the_dataset_alone() {
    use seedling_coordinator::review::{CHECK_STRATUM, check_rejection};
    use seedling_tests::scripted::{Script, scripted_run_with};
    let dir = tempfile::tempdir().unwrap();
    let script = Script {
        duplicate_every: 3,
        refuse_every: 4,
        ..Script::default()
    };
    let (store, plan) = scripted_run_with(dir.path(), &banking(), 12, script);
    let checks = SampleSettings {
        checks: true,
        ..SampleSettings::default()
    };
    let mut session = ReviewSession::open(Arc::clone(&store), plan.clone(), checks).unwrap();
    let sample = session.sample().clone();
    let check_strata: Vec<&str> = sample
        .strata
        .iter()
        .filter_map(|s| s.stratum.strip_prefix(CHECK_STRATUM))
        .collect();
    assert!(check_strata.len() >= 2, "{:?}", sample.strata);
    // The check whose rejections reviewers confirm; they overrule the others.
    let confirmed = check_strata[0].to_string();
    let mut rejected_record = None;
    for (n, (record, stratum)) in sample.items.iter().enumerate() {
        let node = store.require(record).unwrap();
        let verdict = match stratum.strip_prefix(CHECK_STRATUM) {
            Some(check) => {
                assert_eq!(check_rejection(&node), Some(check));
                assert_eq!(node.status, NodeStatus::Rejected);
                // An edit would put the record in the dataset: refused.
                let edit = Decision {
                    id: format!("edit-{n}"),
                    record: record.clone(),
                    reviewer: "ana".into(),
                    verdict: Verdict::Edit {
                        input: "q".into(),
                        response: "a".into(),
                    },
                    note: String::new(),
                };
                let refused = session.decide(&edit).unwrap_err().to_string();
                assert!(refused.contains("measures the check"), "{refused}");
                if check == confirmed {
                    Verdict::Reject {
                        reason: RejectReason::PoorResponse,
                    }
                } else {
                    Verdict::Accept
                }
            }
            None if rejected_record.is_none() => {
                rejected_record = Some(record.clone());
                Verdict::Reject {
                    reason: RejectReason::FactuallyWrong,
                }
            }
            None => Verdict::Accept,
        };
        let decision = Decision {
            id: format!("d-{n}"),
            record: record.clone(),
            reviewer: "ana".into(),
            verdict,
            note: String::new(),
        };
        session.decide(&decision).unwrap();
    }
    let figures = session.figures();
    let by_check = |check: &str| figures.checks.iter().find(|c| c.check == check).unwrap();
    let kept = by_check(&confirmed);
    assert_eq!(kept.precision.successes, kept.reviewed);
    assert!(kept.reviewed > 0 && kept.recall.unwrap() > 0.0, "{kept:?}");
    for other in &check_strata[1..] {
        let overruled = by_check(other);
        assert_eq!(overruled.precision.successes, 0, "{overruled:?}");
        assert_eq!(overruled.recall, Some(0.0));
    }
    // All checks together caught what the confirmed one did, out of that
    // plus the accepted records reviewers rejected (one, in its stratum).
    let recall = figures.checks_recall.unwrap();
    assert!(recall > 0.0 && recall < 1.0, "{recall}");
    assert!((recall - kept.recall.unwrap()).abs() < 1e-9);
    // The record figures leave the checks' strata out.
    let records: usize = sample
        .items
        .iter()
        .filter(|(_, s)| !s.starts_with(CHECK_STRATUM))
        .count();
    assert_eq!(figures.reviewed, records);
    assert_eq!(figures.acceptance.successes, records - 1);
    assert_eq!(figures.reasons.len(), 1, "{:?}", figures.reasons);
    assert_eq!(figures.rejected_overall, 1);
    assert!(
        figures.progress_line().contains(&format!(
            "; {} of {} the checks rejected reviewed",
            sample.total() - records,
            sample.total() - records
        )),
        "{}",
        figures.progress_line()
    );

    // Nothing the checks rejected comes back, even where reviewers overruled
    // them; the record reviewers rejected is left out.
    for (record, stratum) in &sample.items {
        if stratum.starts_with(CHECK_STRATUM) {
            assert_eq!(store.require(record).unwrap().status, NodeStatus::Rejected);
        }
    }
    let out = tempfile::tempdir().unwrap();
    let summary = export_dataset(&store, &plan, out.path()).unwrap();
    assert_eq!(summary.records, 12 - 1);
    let card = std::fs::read_to_string(out.path().join("README.md")).unwrap();
    assert!(
        card.contains("| check | rejected | reviewed | precision [CI] | recall |"),
        "{card}"
    );
    assert!(card.contains(&format!("| {confirmed} | ")), "{card}");
    assert!(!card.contains(&format!("| {CHECK_STRATUM}")), "{card}");

    // A review without --checks leaves the checks' rejections out of its sample.
    drop(session);
    let plain =
        ReviewSession::open(Arc::clone(&store), plan.clone(), SampleSettings::default()).unwrap();
    assert!(
        plain
            .sample()
            .items
            .iter()
            .all(|(_, s)| !s.starts_with(CHECK_STRATUM))
    );
    drop((plain, store));
    let (ok, text) = seedling([
        "review".as_ref(),
        "sample".as_ref(),
        "--checks".as_ref(),
        dir.path().as_os_str(),
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("the automatic checks against the reviewers"),
        "{text}"
    );
    assert!(text.contains(&format!("  {confirmed} ")), "{text}");
}
