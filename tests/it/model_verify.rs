//! `seedling verify --smoke` end to end with the real model and the real
//! training sidecar (torch, transformers, PEFT in the environment
//! `scripts/setup` makes): a dataset of a domain whose facts are invented
//! (`tests/plans/verify-smoke.toml`), so the base model cannot know them.
//! Training on it must lower the loss on the facts it states; the report,
//! the plots and the card's section must say so; a second run must reuse
//! every result; and bad inputs must fail with one line that says what to
//! do.
//!
//! The no-training proxy (`--proxy`) runs on the same dataset: its records
//! in context must lower the facts' loss as training does, the wrong facts
//! of the perturbed control must not, and its untrained `base` must agree
//! with the sidecar's (the same probes scored by llama.cpp and by torch).
//!
//! The smoke tier is too small to separate forced-choice accuracies (15
//! probes; BENCHMARKS.md has its figures): the test asserts the losses,
//! which move clearly even there (fact-token NLL 3.1 to 1.1 on this
//! machine), not the accuracy ranking.

use std::path::Path;
use std::process::{Command, Output};

use seedling_tests::{citation_audit, model_path, repo_root, seedling_bin};

const TARGET: &str = "12";

fn seedling(args: &[&str]) -> Output {
    Command::new(seedling_bin())
        .args(args)
        .arg("--model")
        .arg(model_path())
        .env("OMP_WAIT_POLICY", "passive")
        .output()
        .unwrap()
}

fn verify(dir: &Path, extra: &[&str]) -> Output {
    let dir = dir.to_str().unwrap();
    let mut args = vec!["verify", dir, "--smoke", "--naive", "0", "--steps", "24"];
    args.extend(extra);
    seedling(&args)
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn metric(report: &serde_json::Value, condition: &str, metric: &str) -> f64 {
    report["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == condition)
        .unwrap_or_else(|| panic!("no condition {condition} in {report}"))["metrics"][metric]
        ["mean"]
        .as_f64()
        .unwrap_or_else(|| panic!("no {metric} for {condition}"))
}

#[test]
fn model_verify_smoke_trains_reports_and_reuses() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("ferry");
    let plan = repo_root().join("tests/plans/verify-smoke.toml");
    let run = Command::new(seedling_bin())
        .arg("run")
        .arg(&plan)
        .arg("--out")
        .arg(&dir)
        .args(["--target", TARGET])
        .env("OMP_WAIT_POLICY", "passive")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run));

    // Issue 23: the answers' figures come from the spans they cite, and
    // none disagrees with what it cites.
    let audit = citation_audit(&dir);
    eprintln!("{audit:?}");
    assert!(audit.with_figures >= 4, "{audit:?}");
    assert!(
        audit.fully_cited as f64 >= 0.9 * audit.with_figures as f64,
        "{audit:?}"
    );
    assert!(audit.contradicted.is_empty(), "{audit:?}");
    assert!(audit.yes_then_denies.is_empty(), "{audit:?}");

    let first = verify(&dir, &[]);
    let log = text(&first);
    assert!(first.status.success(), "{log}");
    eprintln!("{log}");
    assert!(log.contains("training seedling: step 24/24"), "{log}");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("verify/report.json")).unwrap())
            .unwrap();
    let names: Vec<&str> = report["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["base", "seedling", "perturbed"],
        "--naive 0 leaves naive out"
    );
    let seedling_run = &report["conditions"][1];
    assert_eq!(seedling_run["steps"], 24);
    let (first_loss, last_loss) = (
        seedling_run["loss_first"].as_f64().unwrap(),
        seedling_run["loss_last"].as_f64().unwrap(),
    );
    assert!(
        last_loss < first_loss,
        "training did not lower the loss: {seedling_run}"
    );
    // The held-out test split is scored (its 3 records are too few to
    // rank conditions on: BENCHMARKS.md).
    assert!(metric(&report, "seedling", "response_nll").is_finite());
    // Fact probes: the invented facts themselves.
    let (base, trained) = (
        metric(&report, "base", "fact_nll"),
        metric(&report, "seedling", "fact_nll"),
    );
    assert!(
        trained < base,
        "fact-token NLL: seedling {trained} vs base {base}"
    );
    let accuracy = metric(&report, "seedling", "forced_choice");
    assert!((0.0..=1.0).contains(&accuracy));
    // The control trained on swapped facts learns the wrong ones: it must
    // not pick the true fact more often than the real records' training.
    let control = metric(&report, "perturbed", "forced_choice");
    assert!(
        control <= accuracy,
        "perturbed {control} beats seedling {accuracy}"
    );
    assert!(
        report["probes"].as_u64().unwrap() >= 5,
        "{}",
        report["probes"]
    );
    assert_eq!(report["leakage"]["shared_ids"], 0);
    for plot in ["loss.png", "forced_choice.png"] {
        let bytes = std::fs::read(dir.join("verify").join(plot)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{plot} is not a PNG");
    }
    // Greedy answers on our own engine, the trained LoRA loaded as a GGUF
    // adapter: every condition answers every probe, and the adapter is
    // really applied (the fine-tuned model answers differently somewhere).
    let probes = report["probes"].as_u64().unwrap() as usize;
    for condition in ["base", "seedling", "perturbed"] {
        let greedy = metric(&report, condition, "greedy_fact");
        assert!((0.0..=1.0).contains(&greedy), "{condition}: {greedy}");
    }
    let answers: Vec<seedling_coordinator::verify::greedy::GreedyAnswer> =
        std::fs::read_to_string(dir.join("verify/greedy.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(answers.len(), 3 * probes);
    for a in answers.iter().filter(|a| a.correct) {
        assert!(
            seedling_coordinator::verify::greedy::states(&a.answer, &a.fact),
            "{a:?}"
        );
    }
    let of = |condition: &str| -> Vec<&str> {
        answers
            .iter()
            .filter(|a| a.condition == condition)
            .map(|a| a.answer.as_str())
            .collect()
    };
    assert_ne!(of("base"), of("seedling"), "the adapter changes no answer");
    let card = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let section = card
        .split("## Verification")
        .nth(1)
        .unwrap_or_else(|| panic!("no Verification section in the card:\n{card}"));
    assert!(section.contains("| seedling |"), "{section}");
    assert!(!section.contains("`naive`"), "{section}");

    // The same inputs again: every condition is reused, none retrained.
    let second = verify(&dir, &[]);
    let log = text(&second);
    assert!(second.status.success(), "{log}");
    for condition in ["base", "seedling", "perturbed"] {
        assert!(
            log.contains(&format!("{condition}: reusing the result"))
                && log.contains(&format!("{condition}: reusing its greedy answers")),
            "{condition} recomputed:\n{log}"
        );
    }
    assert!(!log.contains("training seedling: step"), "{log}");

    proxy_scores_the_same_probes_in_context(&dir, &report);

    // Bad inputs: one line each, saying what is wrong and where.
    let missing_env = verify(&dir, &["--env", "/nonexistent/verify-env"]);
    let log = text(&missing_env);
    assert!(!missing_env.status.success());
    assert!(
        log.contains("/nonexistent/verify-env") && log.contains("scripts/setup"),
        "{log}"
    );

    // Another model than the one that made the data is named, before the
    // rest of the bad input (a baseline that is not there) stops the command.
    let other = out.path().join("other-model.gguf");
    std::fs::write(&other, b"GGUF\x03\x00\x00\x00 not the generator").unwrap();
    let other_model = Command::new(seedling_bin())
        .args(["verify", dir.to_str().unwrap(), "--smoke", "--naive", "0"])
        .args(["--baseline", "/nonexistent/baseline.jsonl", "--model"])
        .arg(&other)
        .output()
        .unwrap();
    let log = text(&other_model);
    assert!(!other_model.status.success());
    assert!(
        log.contains("note: the dataset was generated by")
            && log.contains("qwen2.5-coder-0.5b-instruct.gguf")
            && log.contains("this verifies other-model.gguf")
            && log.contains("/nonexistent/baseline.jsonl"),
        "{log}"
    );
    assert!(
        !text(&second).contains("note: the dataset was generated by"),
        "the model that made the data gets no note"
    );

    let both = verify(&dir, &["--proxy"]);
    let log = text(&both);
    assert!(!both.status.success());
    assert!(
        log.contains("--proxy") && log.contains("cannot be used with"),
        "{log}"
    );

    let empty = out.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let not_a_dataset = verify(&empty, &[]);
    let log = text(&not_a_dataset);
    assert!(!not_a_dataset.status.success());
    assert!(
        log.contains(empty.to_str().unwrap()) && log.contains("manifest.json"),
        "{log}"
    );

    std::fs::remove_file(dir.join("data/train.jsonl")).unwrap();
    let no_train = verify(&dir, &[]);
    let log = text(&no_train);
    assert!(!no_train.status.success());
    assert!(log.contains("train"), "{log}");
}

/// `seedling verify --proxy` on the dataset the fine-tune just verified.
fn proxy_scores_the_same_probes_in_context(dir: &Path, finetuned: &serde_json::Value) {
    let proxy = seedling(&["verify", dir.to_str().unwrap(), "--proxy", "--naive", "0"]);
    let log = text(&proxy);
    assert!(proxy.status.success(), "{log}");
    eprintln!("{log}");
    assert!(!log.contains(": step "), "the proxy trains nothing:\n{log}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("verify/proxy.json")).unwrap())
            .unwrap();
    assert_eq!(report["tier"], "proxy");
    assert_eq!(report["shots"], 3);
    assert!(report["training"].is_null(), "{}", report["training"]);
    assert_eq!(report["probes"], finetuned["probes"]);
    assert_eq!(report["coverage"]["probes"], report["probes"]);

    // The records state the invented facts: in context they lower the
    // facts' loss, and the swapped facts of the control do not.
    let (base, seedling, perturbed) = (
        metric(&report, "base", "fact_nll"),
        metric(&report, "seedling", "fact_nll"),
        metric(&report, "perturbed", "fact_nll"),
    );
    assert!(
        seedling < base,
        "in context: seedling {seedling} vs base {base}"
    );
    assert!(
        seedling < perturbed,
        "in context: seedling {seedling} vs perturbed {perturbed}"
    );
    // No records in context is the untrained model the sidecar scored:
    // llama.cpp on the GGUF and torch on its dequantized weights must
    // agree on the same probes (an off-by-one in teacher forcing would
    // not).
    let sidecar_base = metric(finetuned, "base", "fact_nll");
    assert!(
        (base - sidecar_base).abs() < 0.3,
        "base fact NLL: llama.cpp {base} vs torch {sidecar_base}"
    );

    // Every probe under every condition, with the records it was shown.
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(dir.join("verify/proxy-probes.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let probes = report["probes"].as_u64().unwrap() as usize;
    assert_eq!(lines.len(), probes * 3, "base, seedling, perturbed");
    for line in &lines {
        let shots = line["shots"].as_array().unwrap().len();
        if line["condition"] == "base" {
            assert_eq!(shots, 0, "{line}");
        } else {
            assert!((1..=3).contains(&shots), "{line}");
        }
    }

    // The card keeps the fine-tune's section and gains the proxy's.
    let card = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(card.contains("## Verification\n"), "{card}");
    let section = card
        .split("## Verification without training (proxy)")
        .nth(1)
        .unwrap_or_else(|| panic!("no proxy section in the card:\n{card}"));
    assert!(section.contains("| perturbed |"), "{section}");
    assert!(section.contains("`verify/proxy.json`"), "{section}");
}
