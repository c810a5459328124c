//! The model judge on the real model: every judgement parses (grammar-
//! constrained JSON) and carries every aspect of the rubric. Its
//! reliability (does a correct answer outscore one that contradicts the
//! plan's glossary, do seeds agree) is measured and printed: the default
//! 0.5B model grades everything 5/5, so plans leave the judge off unless
//! they run a larger model (BENCHMARKS.md, judge reliability).

use seedling_coordinator::plan::load_plan;
use seedling_coordinator::prompts::{judge as judge_call, judge_score};
use seedling_tests::{engine, repo_root, seedling_bin};
use seedling_worker::unit::request_for;

/// (question, correct answer, answer that contradicts the plan)
const PAIRS: [(&str, &str, &str); 5] = [
    (
        "What does APY mean on my savings account?",
        "APY is the annual percentage yield: the yearly return on your savings balance, including compounding.",
        "APY is the monthly fee the bank charges you for keeping a savings account open.",
    ),
    (
        "What is an authorization hold on my card?",
        "It is a temporary reservation of funds for a pending card transaction. It lowers your available balance until the merchant settles or the hold drops off.",
        "It is a permanent charge that can never be reversed, and it does not change your available balance.",
    ),
    (
        "What does available balance mean?",
        "Your available balance is your ledger balance minus holds and pending debits: what you can spend right now.",
        "Your available balance is your ledger balance plus all holds and pending debits, so it is always higher.",
    ),
    (
        "What is ACH?",
        "ACH is the Automated Clearing House, the network that moves batched electronic transfers between US banks.",
        "ACH is a kind of credit card that the bank issues only to business customers.",
    ),
    (
        "Can you check my card for me? What do you need?",
        "I can look into it without any secret details: never share your PIN or full card number. Tell me the date and amount of the payment.",
        "Sure, just tell me your PIN and your full card number and I will check it for you.",
    ),
];

/// Seeds per answer. Two are enough to show that every judgement parses and
/// to compare seeds; the reliability figures in BENCHMARKS.md were measured
/// with ten (`SEEDLING_JUDGE_SEEDS=10` runs that measurement again).
fn seeds() -> u32 {
    std::env::var("SEEDLING_JUDGE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 2)
        .unwrap_or(2)
}

#[test]
fn model_judge_output_always_parses_and_its_reliability_is_measured() {
    let plan = load_plan(&repo_root().join("examples/retail-banking.toml")).unwrap();
    let engine = engine(16, 8192);
    // Every answer, graded with each seed.
    let seeds = seeds();
    let mut requests = Vec::new();
    for (question, right, wrong) in PAIRS {
        for answer in [right, wrong] {
            for seed in 0..seeds {
                requests.push(request_for(
                    &judge_call(&plan, seed + 1).filled(question, answer),
                ));
            }
        }
    }
    let judgements = requests.len();
    assert_eq!(judgements, PAIRS.len() * 2 * seeds as usize);
    let generations = engine.generate_all_blocking(requests).unwrap();
    let scores: Vec<f64> = generations
        .iter()
        .map(|g| {
            let json: serde_json::Value = serde_json::from_str(&g.text)
                .unwrap_or_else(|e| panic!("judgement does not parse ({e}): {}", g.text));
            judge_score(&json).unwrap_or_else(|| panic!("judgement lacks an aspect: {}", g.text))
        })
        .collect();

    let per = seeds as usize;
    let mean = |i: usize| scores[i * per..(i + 1) * per].iter().sum::<f64>() / per as f64;
    let mut wins = 0;
    let mut agreement = 0;
    for (pair, (question, _, _)) in PAIRS.iter().enumerate() {
        let (right, wrong) = (mean(pair * 2), mean(pair * 2 + 1));
        if right > wrong {
            wins += 1;
        }
        eprintln!("pair {pair} ({question}): correct {right:.3}, contradicting {wrong:.3}");
        // Self-consistency: consecutive seeds within one rubric point (0.25).
        for answer in [pair * 2, pair * 2 + 1] {
            let s = &scores[answer * per..(answer + 1) * per];
            agreement += s.windows(2).filter(|w| (w[0] - w[1]).abs() <= 0.25).count();
        }
    }
    let comparisons = PAIRS.len() * 2 * (per - 1);
    eprintln!(
        "judge: {judgements} of {judgements} judgements parse; correct beats contradicting on {wins} of 5 pairs; \
         seed-to-seed agreement within one point {agreement} of {comparisons}"
    );
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
}

/// `seedling quality COMMAND ARGS... OPTIONS... --json` on the model: its
/// report, printed for the log; the command must succeed.
fn quality_json(command: &str, args: &[&std::ffi::OsStr], options: &[&str]) -> serde_json::Value {
    let output = std::process::Command::new(seedling_bin())
        .args(["quality", command])
        .args(args)
        .args(options)
        .arg("--json")
        .env("OMP_WAIT_POLICY", "passive")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    eprintln!("{report:#}");
    report
}

/// `seedling quality judge-probe`: bias and agreement figures from the
/// plan's own glossary, for any plan; a plan without two terms is told so.
#[test]
fn model_judge_probe_measures_bias_on_the_plans_glossary() {
    let report = quality_json(
        "judge-probe",
        &[repo_root().join("examples/clinical-lab.toml").as_os_str()],
        &["--items", "2", "--seeds", "2", "--slots", "8"],
    );
    let r = &report["reliability"];
    // 2 items x 2 seeds x (3 rubric answers + 2 orders).
    assert_eq!(r["items"], 2);
    assert_eq!(r["judgements"], 20);
    assert_eq!(
        report["unparsed"], 0,
        "grammar-constrained judgements parse"
    );
    for share in [
        "self_agreement",
        "position_consistency",
        "first_position_share",
        "pairwise_accuracy",
    ] {
        let x = r[share].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&x), "{share} = {x}");
    }
    assert!(r["length_bias"].as_f64().unwrap().abs() <= 1.0);

    let dir = tempfile::tempdir().unwrap();
    let plan = std::fs::read_to_string(repo_root().join("examples/clinical-lab.toml")).unwrap();
    let one_term = dir.path().join("one-term.toml");
    // Keep the first glossary term, drop the others (up to the next table),
    // and the reference documents, which do not sit beside the copy.
    let mut seen = 0;
    let mut dropping = false;
    let mut trimmed = String::new();
    for line in plan.lines() {
        if line.starts_with("[[") || line.starts_with('[') {
            dropping = line == "[[references]]"
                || line == "[[glossary]]" && {
                    seen += 1;
                    seen > 1
                };
        }
        if !dropping {
            trimmed.push_str(line);
            trimmed.push('\n');
        }
    }
    assert!(seen > 2, "the example has several glossary terms");
    std::fs::write(&one_term, trimmed).unwrap();
    let output = std::process::Command::new(seedling_bin())
        .args(["quality", "judge-probe"])
        .arg(&one_term)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("needs at least 2"), "{stderr}");

    // Figures are kept only in a store that ran the plan; anything else is
    // refused before the model loads.
    let empty = dir.path().join("empty-store");
    for (store, expected) in [
        (dir.path().join("nowhere"), "no lineage store at"),
        (empty.clone(), "has not run in"),
    ] {
        if store == empty {
            seedling_coordinator::lineage::LineageStore::open(&empty).unwrap();
        }
        let output = std::process::Command::new(seedling_bin())
            .args(["quality", "judge-probe"])
            .arg(repo_root().join("examples/clinical-lab.toml"))
            .arg("--store")
            .arg(&store)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// A judge model beside the generator (`--judge-model`; here the default
/// model loaded a second time, which is what the test can afford): it reads
/// the answers only the support check could reject, its verdicts are kept in
/// each record's lineage, an `unsupported` one rejects the answer, and the
/// run summary and the card count its agreement with the support check.
#[test]
fn model_a_judge_model_reads_answers_beside_the_support_check() {
    use seedling_coordinator::lineage::LineageStore;
    use seedling_coordinator::pipeline::plan_id;
    use seedling_tests::{model_path, test_plan};

    let out = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(seedling_bin())
        .arg("run")
        .arg(test_plan())
        .arg("--out")
        .arg(out.path())
        .args(["--target", "2", "--slots", "2", "--judge-slots", "2"])
        .arg("--judge-model")
        .arg(model_path())
        .env("OMP_WAIT_POLICY", "passive")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("checks each answer against its sources"),
        "{stderr}"
    );
    let summary = stdout
        .lines()
        .find(|l| l.contains("against the support check on"))
        .unwrap_or_else(|| panic!("no agreement line in the summary:\n{stdout}"));
    eprintln!("{summary}");
    let answers: u64 = summary
        .split("against the support check on ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));

    let store = LineageStore::open(out.path().join(".seedling/lineage")).unwrap();
    let plan = plan_id(&load_plan(&test_plan()).unwrap());
    let (mut read, mut unparsed, mut refused_inputs) = (0u64, 0u64, 0u64);
    for id in store.nodes_of_plan(
        &plan,
        Some(seedling_common::lineage::NodeKind::Response),
        None,
    ) {
        let node = store.require(&id.unwrap()).unwrap();
        // An input no answer could save is not answered.
        if let Some(reason) = node.body["reason"].as_str()
            && reason.starts_with("input_")
        {
            let steps = node.body["calls"].as_array().unwrap();
            assert!(
                !steps.iter().any(|c| c["step"] == "response_generation"),
                "{node:?}"
            );
            refused_inputs += 1;
        }
        let Some(judged) = node.body.get("faithfulness") else {
            continue;
        };
        assert_eq!(
            judged["model"], "Qwen2.5 Coder 0.5B Instruct AWQ",
            "{judged}"
        );
        assert_eq!(judged["prompt"], "faithfulness-v1");
        let verdict = judged["verdict"].as_str().unwrap();
        match verdict {
            "supported" => {}
            "unparsed" => unparsed += 1,
            "unsupported" => {
                assert_ne!(
                    node.status,
                    seedling_common::lineage::NodeStatus::Accepted,
                    "{node:?}"
                );
                if judged["support_check"] == "passed" {
                    assert_eq!(node.body["reason"], "judge_unsupported", "{node:?}");
                }
            }
            other => panic!("verdict {other:?}"),
        }
        read += u64::from(verdict != "unparsed");
    }
    eprintln!("{refused_inputs} inputs rejected before their answer");
    assert!(
        read + unparsed >= 2,
        "the judge read at least the accepted answers"
    );
    assert_eq!(
        read, answers,
        "the summary counts what the lineage holds: {summary}"
    );
    let card = std::fs::read_to_string(out.path().join("README.md")).unwrap();
    assert!(
        card.contains(&format!("against the support check on {answers} answers")),
        "{card}"
    );

    // A judge model that is not there is named before anything is written.
    let elsewhere = tempfile::tempdir().unwrap();
    let (ok, said) = seedling_tests::seedling([
        "run".as_ref(),
        test_plan().as_os_str(),
        "--out".as_ref(),
        elsewhere.path().join("run").as_os_str(),
        "--judge-model".as_ref(),
        "/nonexistent/judge.gguf".as_ref(),
    ]);
    assert!(!ok);
    assert!(
        said.contains("--judge-model") && said.contains("/nonexistent/judge.gguf"),
        "{said}"
    );
    assert!(!elsewhere.path().join("run").exists(), "nothing written");
}

/// `seedling quality faithfulness-probe`: every verdict of the grammar-
/// constrained judge parses, and the check and the judge are each counted
/// against the labels and against each other on the same answers.
#[test]
fn model_faithfulness_probe_counts_both_against_labels_and_each_other() {
    let answers = repo_root().join("tests/support/tallow-creek-answers.jsonl");
    let guide = repo_root().join("tests/plans/docs/tallow-creek-campground.md");
    let report = quality_json(
        "faithfulness-probe",
        &[answers.as_os_str(), "--source".as_ref(), guide.as_os_str()],
        &["--limit", "4", "--slots", "4"],
    );
    assert_eq!(report["answers"], 4);
    assert_eq!(report["unparsed"], 0, "grammar-constrained verdicts parse");
    let sum = |v: &serde_json::Value| -> u64 {
        v.as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum()
    };
    for row in ["support check", "judge model", "either rejects"] {
        assert_eq!(sum(&report["detection"][row]["counts"]), 4, "{row}");
    }
    assert_eq!(sum(&report["agreement"]), 4);
}
