//! `seedling verify --smoke` end to end with the real model and the real
//! training sidecar (torch, transformers, PEFT in the environment
//! `scripts/setup` makes): a dataset of a domain whose facts are invented
//! (`tests/plans/verify-smoke.toml`), so the base model cannot know them.
//! Training on it must lower the loss on the facts it states; the report,
//! the plots and the card's section must say so; a second run must reuse
//! every result; and bad inputs must fail with one line that says what to
//! do.
//!
//! The smoke tier is too small to separate forced-choice accuracies (15
//! probes; BENCHMARKS.md has its figures): the test asserts the losses,
//! which move clearly even there (fact-token NLL 3.1 to 1.1 on this
//! machine), not the accuracy ranking.

use std::path::Path;
use std::process::{Command, Output};

use seedling_tests::{model_path, repo_root, seedling_bin};

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
            log.contains(&format!("{condition}: reusing the result")),
            "{condition} recomputed:\n{log}"
        );
    }
    assert!(!log.contains("training seedling: step"), "{log}");

    // Bad inputs: one line each, saying what is wrong and where.
    let missing_env = verify(&dir, &["--env", "/nonexistent/verify-env"]);
    let log = text(&missing_env);
    assert!(!missing_env.status.success());
    assert!(
        log.contains("/nonexistent/verify-env") && log.contains("scripts/setup"),
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
