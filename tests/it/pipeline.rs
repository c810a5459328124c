//! The coordinator's side of the pipeline, driven by the scripted test
//! double instead of the model: exact targets, resume after a crash, late
//! results, dedup with lineage, failing engines, and the packaged dataset
//! (splits by lineage group, schema, traces, manifest).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{EdgeKind, NodeKind, NodeStatus};
use seedling_common::work::{CallPrompt, TaskKind};
use seedling_coordinator::dataset::{ExportError, export_dataset, lock_export_dir};
use seedling_coordinator::lineage::{LineageStore, PlanGraph};
use seedling_coordinator::pipeline::{PlanRun, Progress, RunOptions, UnitOutcome};
use seedling_coordinator::plan::{Plan, allocate, load_plan};
use seedling_tests::scripted::{Script, ScriptedWorker};
use seedling_tests::{exported_records, repo_root};

fn example(name: &str) -> Plan {
    load_plan(&repo_root().join("examples").join(name)).unwrap()
}

/// An example plan without its reference documents: generation units from
/// the first call, no domain analysis first.
fn example_without_references(name: &str) -> Plan {
    let mut plan = example(name);
    plan.references.clear();
    plan
}

fn options(target: u64) -> RunOptions {
    RunOptions {
        target: Some(target),
        generator_version: "seedling test (scripted worker)".into(),
        base_dir: repo_root().join("examples"),
        attempts_per_record: 6.0,
    }
}

fn open(dir: &Path, plan: &Plan, target: u64) -> (Arc<LineageStore>, PlanRun) {
    let store = Arc::new(LineageStore::open(dir).unwrap());
    let run = PlanRun::open(Arc::clone(&store), plan.clone(), options(target)).unwrap();
    (store, run)
}

/// Runs units `slots` at a time, oldest first, until the run ends or
/// `stop_at` records are accepted (then whatever is in flight is lost, as
/// in a crash).
fn drive(
    run: &mut PlanRun,
    worker: &ScriptedWorker,
    slots: usize,
    stop_at: Option<u64>,
) -> Progress {
    let mut pending = VecDeque::new();
    loop {
        pending.extend(run.next_units(slots - pending.len()).unwrap());
        let Some(unit) = pending.pop_front() else {
            return run.progress();
        };
        run.record_result(worker.answer(&unit)).unwrap();
        if run.is_failing() || stop_at.is_some_and(|n| run.progress().accepted >= n) {
            return run.progress();
        }
    }
}

fn accepted_ids(store: &LineageStore, plan: &PlanId) -> Vec<NodeId> {
    store
        .nodes_of_plan(plan, Some(NodeKind::Response), Some(NodeStatus::Accepted))
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_run_reaches_its_target_exactly_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let plan = example("retail-banking.toml");
    let worker = ScriptedWorker::new(Script {
        duplicate_every: 7,
        refuse_every: 11,
        paraphrase_every: 5,
        ..Script::default()
    });
    let plan_id;
    {
        let (_store, mut run) = open(dir.path(), &plan, 40);
        plan_id = run.plan_id().clone();
        let at_crash = drive(&mut run, &worker, 8, Some(15));
        assert_eq!(at_crash.accepted, 15);
        assert!(
            at_crash.in_flight > 0,
            "the crash must lose units in flight"
        );
    }
    let (store, mut run) = open(dir.path(), &plan, 40);
    let resumed = run.progress();
    assert_eq!(
        resumed.accepted, 15,
        "the accepted records survive the crash"
    );
    let done = drive(&mut run, &worker, 8, None);
    assert!(run.is_finished());
    assert_eq!(done.accepted, 40);
    assert!(done.shortfalls().is_empty(), "{:?}", done.shortfalls());
    // Every stratum has exactly its quota.
    let quotas: BTreeMap<String, u64> = done
        .strata
        .iter()
        .map(|s| (s.stratum.clone(), s.quota))
        .collect();
    for line in &done.strata {
        assert_eq!(line.accepted, quotas[&line.stratum], "{}", line.stratum);
    }
    let ids = accepted_ids(&store, &plan_id);
    assert_eq!(ids.len(), 40);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 40);
    // Duplicates (copies and paraphrases) and refusals were caught, with
    // the reason and the survivor.
    for tier in ["exact_duplicate", "semantic_duplicate"] {
        assert!(
            done.rejected.get(tier).copied().unwrap_or(0) > 0,
            "{tier}: {:?}",
            done.rejected
        );
    }
    assert!(
        done.rejected.get("refusal").copied().unwrap_or(0) > 0,
        "{:?}",
        done.rejected
    );
    let rejected: Vec<NodeId> = store
        .nodes_of_plan(
            &plan_id,
            Some(NodeKind::Response),
            Some(NodeStatus::Rejected),
        )
        .collect::<Result<_, _>>()
        .unwrap();
    let mut duplicates = BTreeMap::new();
    for id in rejected {
        let node = store.require(&id).unwrap();
        assert!(
            node.body["reason"].is_string(),
            "a rejected record says why: {:?}",
            node.body
        );
        let reason = node.body["reason"].as_str().unwrap_or_default();
        if reason.ends_with("_duplicate") {
            *duplicates.entry(reason.to_string()).or_insert(0) += 1;
            let survivor = store
                .parents(&id)
                .unwrap()
                .into_iter()
                .find(|(kind, _)| *kind == EdgeKind::DuplicateOf)
                .expect("a duplicate links to its survivor")
                .1;
            assert_eq!(
                store.require(&survivor).unwrap().status,
                NodeStatus::Accepted
            );
        }
    }
    assert_eq!(
        duplicates.keys().collect::<Vec<_>>(),
        ["exact_duplicate", "semantic_duplicate"],
        "every duplicate links to an accepted survivor"
    );
    let check = store.check().unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
}

#[test]
fn the_time_left_shows_once_this_run_has_accepted_a_few_records() {
    let dir = tempfile::tempdir().unwrap();
    let plan = example("retail-banking.toml");
    let worker = ScriptedWorker::default();
    let (_, mut run) = open(dir.path(), &plan, 12);
    let early = drive(&mut run, &worker, 1, Some(2));
    assert_eq!(early.eta_s, None, "a rate from {} records", early.accepted);
    let later = drive(&mut run, &worker, 1, Some(4));
    assert!(later.eta_s.is_some_and(|s| s > 0.0), "{:?}", later.eta_s);
    drop(run);
    // Reopened, it counts only what this run accepted: the store's records
    // say nothing of how fast this process goes.
    let (_, mut run) = open(dir.path(), &plan, 12);
    let resumed = run.progress();
    assert!(resumed.accepted >= 4);
    assert_eq!(resumed.eta_s, None);
    let on = drive(&mut run, &worker, 1, Some(resumed.accepted + 3));
    assert!(on.eta_s.is_some(), "{on:?}");
    let done = drive(&mut run, &worker, 1, None);
    assert_eq!((done.accepted, done.eta_s), (12, None));
}

#[test]
fn late_and_repeated_results_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let plan = example_without_references("clinical-lab.toml");
    let (store, mut run) = open(dir.path(), &plan, 6);
    let worker = ScriptedWorker::default();
    let units = run.next_units(4).unwrap();
    let results: Vec<_> = units.iter().map(|u| worker.answer(u)).collect();
    for result in &results {
        assert_ne!(
            run.record_result(result.clone()).unwrap(),
            UnitOutcome::Ignored
        );
    }
    let before = store.check().unwrap();
    for result in &results {
        assert_eq!(
            run.record_result(result.clone()).unwrap(),
            UnitOutcome::Ignored
        );
    }
    assert_eq!(store.check().unwrap(), before);
}

#[test]
fn a_failing_engine_stops_the_run_and_keeps_what_was_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let plan = example("retail-banking.toml");
    let (store, mut run) = open(dir.path(), &plan, 30);
    let plan_id = run.plan_id().clone();
    let healthy = drive(&mut run, &ScriptedWorker::default(), 4, Some(5));
    let failing = ScriptedWorker::new(Script {
        failing: true,
        ..Script::default()
    });
    let end = drive(&mut run, &failing, 4, None);
    assert!(run.is_failing());
    assert!(!run.is_finished());
    assert_eq!(end.accepted, healthy.accepted);
    assert!(end.rejected["generation_failed"] >= 16);
    assert_eq!(
        accepted_ids(&store, &plan_id).len() as u64,
        healthy.accepted
    );
}

#[test]
fn the_bilingual_plan_yields_both_languages_in_their_quotas() {
    let dir = tempfile::tempdir().unwrap();
    let mut plan = example("bilingual-en-es.toml");
    // Translation often enough that a 20-record run has some.
    plan.augmentation.share = 0.5;
    plan.augmentation.kinds = vec![seedling_coordinator::plan::AugmentationKind::Translation];
    let (store, mut run) = open(dir.path(), &plan, 20);
    let plan_id = run.plan_id().clone();
    // One unit at a time: later attempts see accepted sources to translate.
    let done = drive(&mut run, &ScriptedWorker::default(), 1, None);
    assert_eq!(done.accepted, 20);
    let mut planned: BTreeMap<String, u64> = BTreeMap::new();
    let mut plan20 = plan.clone();
    plan20.target.accepted = 20;
    for quota in allocate(&plan20) {
        *planned.entry(quota.stratum.language.clone()).or_default() += quota.quota;
    }
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    for id in accepted_ids(&store, &plan_id) {
        let node = store.require(&id).unwrap();
        let language = node.body["stratum_fields"]["language"]
            .as_str()
            .unwrap()
            .to_string();
        *got.entry(language).or_default() += 1;
    }
    assert_eq!(got, planned);
    assert_eq!(planned.len(), 2);

    // Translated records link, through their augmentation, to a source in
    // the other language, and carry the round trip's chrF.
    let mut translated = 0;
    for id in accepted_ids(&store, &plan_id) {
        let node = store.require(&id).unwrap();
        if node.body["method"] != "augmentation:translation" {
            continue;
        }
        translated += 1;
        let ancestors = store.ancestors(&id, Default::default()).unwrap();
        let augmentation = ancestors
            .iter()
            .map(|r| store.require(&r.id).unwrap())
            .find(|n| n.kind == NodeKind::Augmentation)
            .expect("a translation descends from an augmentation");
        let source = store
            .parents(&augmentation.id)
            .unwrap()
            .into_iter()
            .find(|(kind, _)| *kind == EdgeKind::DerivedFrom)
            .map(|(_, id)| store.require(&id).unwrap())
            .unwrap();
        assert_eq!(source.kind, NodeKind::Response);
        assert_ne!(
            source.body["stratum_fields"]["language"],
            node.body["stratum_fields"]["language"]
        );
        let quality = store
            .children(&id)
            .unwrap()
            .into_iter()
            .find(|(kind, _)| *kind == EdgeKind::JudgedBy)
            .map(|(_, id)| store.require(&id).unwrap())
            .unwrap();
        assert!(
            quality.body["heuristics"]["back_translation_chrf"]
                .as_f64()
                .is_some(),
            "{:?}",
            quality.body
        );
    }
    assert!(translated > 0, "the bilingual plan translates some records");
}

fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_export_keeps_lineage_groups_in_one_split_and_every_record_traceable() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut plan = example("retail-banking.toml");
    // More augmentation, so that groups of several records exist.
    plan.augmentation.share = 0.4;
    let (store, mut run) = open(dir.path(), &plan, 40);
    let plan_id = run.plan_id().clone();
    let done = drive(&mut run, &ScriptedWorker::default(), 8, None);
    assert_eq!(done.accepted, 40);
    let summary = export_dataset(&store, &plan_id, out.path()).unwrap();
    assert_eq!(summary.records, 40);

    let mut split_of: HashMap<String, String> = HashMap::new();
    for split in ["train", "validation", "test"] {
        for record in exported_records(out.path(), split) {
            assert!(
                split_of
                    .insert(record.id.clone(), split.to_string())
                    .is_none(),
                "duplicate id {}",
                record.id
            );
        }
        assert_eq!(
            read_jsonl(&out.path().join(format!("chatml/{split}.jsonl"))).len(),
            summary.per_split[split]
        );
    }
    assert_eq!(split_of.len(), 40);

    // No lineage group spans two splits, and some groups hold several records.
    let mut largest = 0;
    for group in PlanGraph::load(&store, &plan_id).unwrap().lineage_groups() {
        let splits: BTreeSet<&String> = group
            .iter()
            .filter_map(|id| split_of.get(id.as_str()))
            .collect();
        assert!(splits.len() <= 1, "group {:?} spans {splits:?}", group[0]);
        largest = largest.max(
            group
                .iter()
                .filter(|id| split_of.contains_key(id.as_str()))
                .count(),
        );
    }
    assert!(
        largest >= 2,
        "augmentation should put related records in one group"
    );

    // The manifest names every file with its digest.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("manifest.json")).unwrap())
            .unwrap();
    let files = manifest["files"].as_array().unwrap();
    assert!(files.len() >= 3 * 5 + 2);
    for file in files {
        let bytes = std::fs::read(out.path().join(file["path"].as_str().unwrap())).unwrap();
        let digest = seedling_tests::sha256_hex(&bytes);
        assert_eq!(file["sha256"], digest, "{}", file["path"]);
    }
    assert_eq!(manifest["dataset_version"], summary.version);
    let card = std::fs::read_to_string(out.path().join("README.md")).unwrap();
    assert!(card.contains(&summary.version) && card.contains("lineage group"));

    // Exporting again changes nothing: same version, same files.
    let again = export_dataset(&store, &plan_id, out.path()).unwrap();
    assert_eq!(again.version, summary.version);

    // While another export holds the directory, a second one is refused
    // and names it; once it is free, exporting works again.
    let held = lock_export_dir(out.path()).unwrap();
    let busy = export_dataset(&store, &plan_id, out.path()).unwrap_err();
    assert!(matches!(busy, ExportError::Busy { .. }), "{busy}");
    assert!(
        busy.to_string().contains(&out.path().display().to_string()),
        "{busy}"
    );
    drop(held);
    assert_eq!(
        export_dataset(&store, &plan_id, out.path())
            .unwrap()
            .version,
        summary.version
    );
}

#[test]
fn a_small_export_leaves_no_split_empty_and_loads_in_datasets() {
    // Eight records in eight lineage groups over three subdomains: by
    // subdomain alone every one would land in train.
    let dir = tempfile::tempdir().unwrap();
    let mut plan = example("retail-banking.toml");
    plan.augmentation.share = 0.0;
    let (store, mut run) = open(dir.path(), &plan, 8);
    let plan_id = run.plan_id().clone();
    assert_eq!(
        drive(&mut run, &ScriptedWorker::default(), 4, None).accepted,
        8
    );
    let out = tempfile::tempdir().unwrap();
    let summary = export_dataset(&store, &plan_id, out.path()).unwrap();
    for split in ["train", "validation", "test"] {
        assert!(summary.per_split[split] > 0, "{:?}", summary.per_split);
    }
    let rows = seedling_tests::load_with_datasets(out.path());
    assert_eq!(rows["validation"], summary.per_split["validation"]);

    // Two records are two groups, fewer than the three splits: the empty
    // ones are left out and said to be, and what is there still loads.
    let dir = tempfile::tempdir().unwrap();
    let (store, mut run) = open(dir.path(), &plan, 2);
    let plan_id = run.plan_id().clone();
    assert_eq!(
        drive(&mut run, &ScriptedWorker::default(), 2, None).accepted,
        2
    );
    let summary = export_dataset(&store, &plan_id, out.path()).unwrap();
    let empty: Vec<&str> = ["train", "validation", "test"]
        .into_iter()
        .filter(|s| summary.per_split[*s] == 0)
        .collect();
    assert!(!empty.is_empty(), "{:?}", summary.per_split);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["omitted_splits"], serde_json::json!(empty));
    for split in &empty {
        // Written by the first export into the same directory, gone now.
        assert!(!out.path().join(format!("data/{split}.jsonl")).exists());
        assert!(!out.path().join(format!("parquet/{split}.parquet")).exists());
    }
    let card = std::fs::read_to_string(out.path().join("README.md")).unwrap();
    assert!(card.contains("omitted_splits"), "{card}");
    let rows = seedling_tests::load_with_datasets(out.path());
    assert_eq!(rows.as_object().unwrap().len(), 3 - empty.len(), "{rows}");
}

#[test]
fn a_stratum_that_keeps_repeating_itself_is_sampled_hotter() {
    let text = r#"
version = 1
seed = 5
[domain]
name = "lab"
description = "A clinical laboratory's front desk."
[[subdomains]]
name = "samples"
weight = 1
[[personas]]
name = "nurse"
weight = 1
[[languages]]
code = "en"
share = 1.0
[[task_types]]
name = "question_answering"
share = 1.0
[task_types.templates]
en = "As a {{ persona }}, ask about {{ subdomain }}."
[methods]
template = 1.0
self_instruct = 0.0
evol_instruct = 0.0
magpie = 0.0
[augmentation]
share = 0.0
kinds = []
[target]
accepted = 30
"#;
    let plan = seedling_coordinator::plan::parse_plan("steer.toml", text, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_store, mut run) = open(dir.path(), &plan, 30);
    let base = plan.sampling.temperature;
    let temperatures = |run: &mut PlanRun| -> Vec<f32> {
        let units = run.next_units(2).unwrap();
        let temps = units
            .iter()
            .map(|u| match &u.kind {
                seedling_common::work::TaskKind::Generate(task) => task.input.temperature,
                other => panic!("{other:?}"),
            })
            .collect();
        for unit in units {
            run.return_unit(&unit.unit);
        }
        temps
    };
    assert!(temperatures(&mut run).iter().all(|t| *t == base));
    // Every other answer repeats the previous one.
    let worker = ScriptedWorker::new(Script {
        duplicate_every: 2,
        ..Script::default()
    });
    let progress = drive(&mut run, &worker, 2, Some(6));
    assert!(
        progress
            .rejected
            .get("exact_duplicate")
            .copied()
            .unwrap_or(0)
            >= 3,
        "{:?}",
        progress.rejected
    );
    let hotter = temperatures(&mut run);
    assert!(
        hotter.iter().all(|t| *t > base + 0.1),
        "base {base}, now {hotter:?}"
    );
}

#[test]
fn a_question_answered_twice_differently_flags_the_accepted_answer() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let plan = example("retail-banking.toml");
    let (store, mut run) = open(dir.path(), &plan, 12);
    let plan_id = run.plan_id().clone();
    let worker = ScriptedWorker::new(Script {
        paraphrase_every: 3,
        contradict_paraphrases: true,
        ..Script::default()
    });
    let done = drive(&mut run, &worker, 1, None);
    assert_eq!(done.accepted, 12);
    let paraphrases = done
        .rejected
        .get("semantic_duplicate")
        .copied()
        .unwrap_or(0);
    assert!(paraphrases > 0, "{:?}", done.rejected);
    // Every paraphrase of an accepted question leaves a flag on that record.
    let mut flagged = BTreeSet::new();
    for id in store.nodes_of_plan(&plan_id, Some(NodeKind::Judgement), None) {
        let node = store.require(&id.unwrap()).unwrap();
        if node.step != "consistency_check" {
            continue;
        }
        let survivor = NodeId::new(node.body["record"].as_str().unwrap());
        assert_eq!(
            store.require(&survivor).unwrap().status,
            NodeStatus::Accepted
        );
        assert!(
            store
                .children(&survivor)
                .unwrap()
                .contains(&(EdgeKind::JudgedBy, node.id.clone())),
            "the flag hangs off the accepted record"
        );
        assert!(node.body["reason"].as_str().unwrap().contains("\"no\""));
        flagged.insert(survivor);
    }
    assert!(!flagged.is_empty());
    export_dataset(&store, &plan_id, out.path()).unwrap();
    let card = std::fs::read_to_string(out.path().join("README.md")).unwrap();
    assert!(
        card.contains(&format!(
            "{} accepted record(s) got a second, disagreeing answer",
            store
                .nodes_of_plan(&plan_id, Some(NodeKind::Judgement), None)
                .filter(
                    |id| store.require(id.as_ref().unwrap()).unwrap().step == "consistency_check"
                )
                .count()
        )),
        "{card}"
    );
    let check = store.check().unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
}

#[test]
fn a_judge_probe_kept_in_the_lineage_shows_in_the_card() {
    use seedling_coordinator::quality::judge_probe::{JudgeReliability, reliability_batch};
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let plan = example_without_references("clinical-lab.toml");
    let (store, mut run) = open(dir.path(), &plan, 6);
    let plan_id = run.plan_id().clone();
    drive(&mut run, &ScriptedWorker::default(), 4, None);
    export_dataset(&store, &plan_id, out.path()).unwrap();
    let card = std::fs::read_to_string(out.path().join("README.md")).unwrap();
    assert!(
        card.contains("The model judge is off for this plan"),
        "{card}"
    );

    let figures = |wins| JudgeReliability {
        items: 4,
        judgements: 40,
        correct_beats_contradicting: wins,
        correctness_margin: 0.0,
        self_agreement: 1.0,
        length_bias: 0.0,
        position_consistency: 0.0,
        first_position_share: 1.0,
        pairwise_accuracy: 0.5,
    };
    // Two probes: the card reports the later one.
    store
        .append(&reliability_batch(&plan_id, "model A", &figures(1), 1_000))
        .unwrap();
    store
        .append(&reliability_batch(&plan_id, "model B", &figures(3), 2_000))
        .unwrap();
    export_dataset(&store, &plan_id, out.path()).unwrap();
    let card = std::fs::read_to_string(out.path().join("README.md")).unwrap();
    assert!(
        card.contains("Probe of the judge (model B) on 4 questions"),
        "{card}"
    );
    assert!(
        card.contains("| correct answer outscores a contradicting one | 3 of 4 |"),
        "{card}"
    );
    assert!(card.contains("| first answer chosen | 100.0% |"), "{card}");
    assert!(store.check().unwrap().is_ok());
}

/// A fine-tuned verification and a proxy each keep their own section in the
/// card: the newest of each kind for the exported version, and neither
/// replaces the other.
#[test]
fn the_card_shows_the_newest_fine_tune_and_the_newest_proxy() {
    use seedling_coordinator::verify::VerificationReport;
    use seedling_coordinator::verify::report::verification_batch;
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let plan = example_without_references("clinical-lab.toml");
    let (store, mut run) = open(dir.path(), &plan, 6);
    let plan_id = run.plan_id().clone();
    drive(&mut run, &ScriptedWorker::default(), 4, None);
    let version = export_dataset(&store, &plan_id, out.path())
        .unwrap()
        .version;
    let report = |tier: &str, accuracy: f64, proxy: bool| -> VerificationReport {
        let mut json = seedling_tests::verification_report_json(&version, plan_id.as_str());
        json["tier"] = tier.into();
        json["created_at"] = format!("2026-12-06T00:00:0{}Z", (accuracy * 10.0) as u32).into();
        json["plots"] = serde_json::json!([]);
        json["conditions"] = serde_json::json!([
            {"name": "seedling", "trained": !proxy, "train_examples": 12, "steps": 0, "loss_first": null, "loss_last": null, "seconds": 1.0,
             "metrics": {"forced_choice": {"mean": accuracy, "lo": accuracy - 0.1, "hi": accuracy + 0.1, "n": 20}}, "strata": {},
             "by_source": {"reference:docs/specimen-handling.md": {"mean": accuracy, "lo": 0.0, "hi": 1.0, "n": 20}}}
        ]);
        if proxy {
            json["training"] = serde_json::Value::Null;
            json["shots"] = 3.into();
        }
        serde_json::from_value(json).unwrap()
    };
    for (at, tier, accuracy, proxy) in [
        (1_000, "smoke", 0.5, false),
        (2_000, "proxy", 0.6, true),
        (3_000, "proxy", 0.7, true),
    ] {
        let (_, batch) = verification_batch(&plan_id, &report(tier, accuracy, proxy), at);
        store.append(&batch).unwrap();
    }
    export_dataset(&store, &plan_id, out.path()).unwrap();
    let card = std::fs::read_to_string(out.path().join("README.md")).unwrap();
    let (_, tuned) = card
        .split_once("## Verification\n")
        .unwrap_or_else(|| panic!("no fine-tune section:\n{card}"));
    assert!(tuned.contains("(smoke tier"), "{tuned}");
    assert!(
        tuned.contains("| seedling | 0.500 [0.400, 0.600]"),
        "{tuned}"
    );
    let (_, proxy) = card
        .split_once("## Verification without training (proxy)")
        .unwrap_or_else(|| panic!("no proxy section:\n{card}"));
    assert!(
        proxy.contains("| seedling | 0.700 [0.600, 0.800]"),
        "{proxy}"
    );
    assert!(
        !card.contains("0.600 [0.500, 0.700]"),
        "the older proxy is replaced:\n{card}"
    );
    assert!(
        proxy.contains("| condition | specimen-handling.md (20) |"),
        "{proxy}"
    );
    assert!(proxy.contains("`verify/proxy.json`"), "{proxy}");
    assert!(store.check().unwrap().is_ok());
}

/// Issue 5's acceptance: a plan finishes with every quota met, on every
/// example plan (the scripted worker stands in for the model).
#[test]
fn every_example_plan_finishes_with_every_quota_met() {
    let mut plans: Vec<_> = std::fs::read_dir(repo_root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    plans.sort();
    assert!(plans.len() >= 3, "{plans:?}");
    for path in plans {
        let dir = tempfile::tempdir().unwrap();
        let plan = load_plan(&path).unwrap();
        let (_store, mut run) = open(dir.path(), &plan, 30);
        let worker = ScriptedWorker::new(Script {
            duplicate_every: 9,
            refuse_every: 13,
            paraphrase_every: 7,
            ..Script::default()
        });
        let done = drive(&mut run, &worker, 8, None);
        let name = path.display();
        assert_eq!(done.accepted, 30, "{name}");
        assert!(
            done.shortfalls().is_empty(),
            "{name}: {:?}",
            done.shortfalls()
        );
        for line in done.strata.iter().filter(|s| s.quota > 0) {
            assert_eq!(line.accepted, line.quota, "{name}: {}", line.stratum);
        }
    }
}

/// The cluster decides a group while the previous one is being written:
/// decisions apply at once, but nothing counts (progress, the end of the
/// run) before its write is confirmed, and groups written in the order
/// they were decided may name each other's records (duplicates' survivors).
#[test]
fn decided_groups_count_only_once_confirmed_durable() {
    let dir = tempfile::tempdir().unwrap();
    let plan = example("retail-banking.toml");
    let worker = ScriptedWorker::new(Script {
        duplicate_every: 3,
        ..Script::default()
    });
    let (store, mut run) = open(dir.path(), &plan, 12);
    let mut waiting = VecDeque::new();
    loop {
        let units = run.next_units(4).unwrap();
        if !units.is_empty() {
            let before = run.progress().accepted;
            let answers = units.iter().map(|u| worker.answer(u)).collect();
            waiting.push_back(run.decide_results(answers).unwrap());
            assert_eq!(run.progress().accepted, before, "counted before durable");
        }
        // The writer runs one group behind the decisions.
        if waiting.len() > 1 || units.is_empty() {
            let Some(oldest) = waiting.pop_front() else {
                break;
            };
            assert!(!run.is_finished(), "finished with a group not durable");
            let accepted = oldest
                .outcomes
                .iter()
                .filter(|o| **o == UnitOutcome::Accepted)
                .count() as u64;
            let before = run.progress().accepted;
            // Built only now, after later decisions: it depends on none of them.
            store.append(&oldest.lineage.build()).unwrap();
            run.confirm(oldest.ticket);
            assert_eq!(run.progress().accepted, before + accepted);
        }
    }
    assert!(run.is_finished());
    assert_eq!(run.progress().accepted, 12);
    assert_eq!(accepted_ids(&store, run.plan_id()).len(), 12);
    assert!(
        run.progress()
            .rejected
            .keys()
            .any(|r| r.contains("duplicate")),
        "{:?}",
        run.progress().rejected
    );
}

#[test]
fn every_calls_cost_is_counted_kept_through_a_crash_and_shown_in_the_card() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let plan = example("retail-banking.toml");
    let worker = ScriptedWorker::default();
    let (first, plan_id) = {
        let (_store, mut run) = open(dir.path(), &plan, 12);
        let plan_id = run.plan_id().clone();
        (drive(&mut run, &worker, 3, Some(6)), plan_id)
    };
    // The scripted worker charges every call the same: 100 prompt tokens
    // (60 from the prefix cache), 40 generated, 10 ms prefill, 40 ms decode.
    let total = first.cost.total();
    assert!(total.calls >= 12, "{total:?}");
    assert_eq!(total.prompt_tokens, 100 * total.calls);
    assert_eq!(total.prompt_tokens_reused, 60 * total.calls);
    assert_eq!(total.prefill_ms, 10 * total.calls);
    assert_eq!(total.decode_ms, 40 * total.calls);
    assert!(first.cost.stages["input"].calls > 0 && first.cost.stages["response"].calls > 0);
    // This run also paid for the domain analysis, which the plan's cost leaves out.
    assert!(first.session_cost.total().calls > total.calls);
    assert_eq!(
        first.session_cost.stages["response"],
        first.cost.stages["response"]
    );

    // After the crash, the plan's cost is rebuilt from the stored attempts.
    let (store, mut run) = open(dir.path(), &plan, 12);
    let reopened = run.progress();
    assert_eq!(
        reopened.cost.stages["response"],
        first.cost.stages["response"]
    );
    assert!(reopened.session_cost.is_empty());
    let done = drive(&mut run, &worker, 3, None);
    assert_eq!(done.accepted, 12);
    assert_eq!(done.accepted_this_run, 12 - reopened.accepted);
    let calls = done.cost.total().calls;
    assert_eq!(done.cost.total().generated_tokens, 40 * calls);

    // Each response node keeps its requests' accounting.
    let record = &accepted_ids(&store, &plan_id)[0];
    let node = store.require(record).unwrap();
    let kept = node.body["calls"].as_array().unwrap();
    assert!(!kept.is_empty());
    assert_eq!(kept[0]["cost"]["prefill_ms"], 10);

    export_dataset(&store, &plan_id, out.path()).unwrap();
    let card = std::fs::read_to_string(out.path().join("README.md")).unwrap();
    assert!(card.contains("## What it cost to generate"), "{card}");
    let response_row = card
        .lines()
        .find(|l| l.starts_with("| response |"))
        .unwrap_or_else(|| panic!("{card}"));
    // 100 prompt tokens a call, 60% of them from the prefix cache.
    assert!(response_row.contains("| 60% |"), "{response_row}");
    assert!(card.contains("prefill 20%, decode 80%"), "{card}");
}

#[test]
fn attempts_for_a_stratum_that_filled_are_withdrawn_not_wasted() {
    let dir = tempfile::tempdir().unwrap();
    let plan = example_without_references("clinical-lab.toml");
    let (_store, mut run) = open(dir.path(), &plan, 6);
    let worker = ScriptedWorker::default();
    let mut pending: VecDeque<_> = run.next_units(32).unwrap().into();
    assert!(pending.len() > 6, "more attempts than records in flight");
    let mut withdrawn = BTreeSet::new();
    while let Some(unit) = pending.pop_front() {
        if withdrawn.contains(&unit.unit) {
            // The worker was told to stop it; were its answer to come anyway,
            // it would change nothing.
            let late = run.record_result(worker.answer(&unit)).unwrap();
            assert_eq!(late, UnitOutcome::Ignored, "{}", unit.unit);
            continue;
        }
        run.record_result(worker.answer(&unit)).unwrap();
        withdrawn.extend(run.withdraw_surplus());
        pending.extend(run.next_units(32 - pending.len()).unwrap());
    }
    let done = run.progress();
    assert!(run.is_finished());
    assert_eq!(done.accepted, 6);
    assert!(!withdrawn.is_empty());
    assert_eq!(done.withdrawn_surplus, withdrawn.len() as u64);
    assert!(
        !done.rejected.contains_key("quota_filled"),
        "{:?}",
        done.rejected
    );
    assert_eq!(done.in_flight, 0);
}

/// The text of a prompt, whichever form it has.
fn prompt_text(prompt: &CallPrompt) -> String {
    match prompt {
        CallPrompt::Raw(text) => text.clone(),
        CallPrompt::Chat(messages) => messages
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn squeezed(text: &str) -> String {
    text.replace("**", "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Issue 23 (and the coverage the full verification tier asked for): the
/// attempts start from passages of the references, the question and the
/// answer from the same one, and a run reaches every figure its documents
/// state, not just the chunks its questions happen to match.
#[test]
fn attempts_start_from_passages_and_reach_every_figure_of_the_references() {
    use seedling_common::facts::{sentence_ranges, stated_facts};
    let dir = tempfile::tempdir().unwrap();
    let plan = example("retail-banking.toml");
    let (store, mut run) = open(dir.path(), &plan, 64);
    let worker = ScriptedWorker::new(Script::default());
    let mut passages: BTreeSet<String> = BTreeSet::new();
    let mut attempts = 0;
    loop {
        let units = run.next_units(8).unwrap();
        if units.is_empty() {
            break;
        }
        for unit in units {
            if let TaskKind::Generate(generate) = &unit.kind {
                attempts += 1;
                // The response's system message, where the note goes.
                let response = match &generate.response.prompt {
                    CallPrompt::Chat(messages) => messages[0].content.clone(),
                    CallPrompt::Raw(text) => text.clone(),
                };
                let answer_note =
                    "Answer from it, and give its figures exactly as it states them: ";
                if let Some(at) = response.find(answer_note) {
                    let passage = response[at + answer_note.len()..].trim().to_string();
                    let input = prompt_text(&generate.input.prompt);
                    assert!(
                        input.contains(&format!("without stating its answer: \"{passage}\"")),
                        "the question is not asked about the answer's passage {passage:?}:\n{input}"
                    );
                    passages.insert(passage);
                }
            }
            run.record_result(worker.answer(&unit)).unwrap();
        }
    }
    assert_eq!(run.progress().accepted, 64);
    assert!(
        passages.len() >= 20,
        "{} passages over {attempts} attempts",
        passages.len()
    );
    // Every figure a reference chunk states, outside headings and tables,
    // is in a passage some attempt started from.
    let plan_id = seedling_coordinator::pipeline::plan_id(&plan);
    let chunks: Vec<String> = store
        .nodes_of_plan(&plan_id, Some(NodeKind::ReferenceChunk), None)
        .map(|id| {
            store.require(&id.unwrap()).unwrap().body["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(chunks.len() >= 2, "{chunks:?}");
    let mut figures = 0;
    for chunk in &chunks {
        for (start, end) in sentence_ranges(chunk) {
            let sentence = &chunk[start..end];
            let body: String = sentence
                .lines()
                .filter(|l| !l.trim_start().starts_with(['#', '|']))
                .collect::<Vec<_>>()
                .join(" ");
            for fact in stated_facts(&body) {
                figures += 1;
                let sentence = squeezed(&body);
                assert!(
                    passages.iter().any(|p| p.contains(&fact.text)
                        && sentence.contains(
                            &squeezed(p).split(' ').take(4).collect::<Vec<_>>().join(" ")
                        )),
                    "no attempt started from {:?} ({}); passages: {passages:#?}",
                    sentence,
                    fact.text
                );
            }
        }
    }
    assert!(figures >= 20, "{figures}");
}
