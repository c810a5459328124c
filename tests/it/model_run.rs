//! `seedling run` end to end with the real model (the README's main job on
//! the test-only plan): killed with SIGKILL halfway, run again, it continues
//! and the dataset holds exactly the target, no duplicate ids, every record
//! in the design's schema with a trace of every step that touched it. One
//! slot: results land one at a time, so the kill comes halfway on any
//! machine.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use seedling_tests::{exported_records, seedling_bin, test_plan};

const TARGET: usize = 4;

fn run_command(out: &Path) -> Command {
    let mut command = Command::new(seedling_bin());
    command
        .arg("run")
        .arg(test_plan())
        .arg("--out")
        .arg(out)
        .arg("--target")
        .arg(TARGET.to_string())
        .args(["--slots", "1"])
        .env("OMP_WAIT_POLICY", "passive");
    command
}

/// The accepted count in a progress line (`[generation] accepted 3/8 · ...`).
fn accepted_in(line: &str) -> Option<usize> {
    let rest = line.split("accepted ").nth(1)?;
    rest.split('/').next()?.trim().parse().ok()
}

#[test]
fn model_run_killed_halfway_resumes_to_the_exact_target() {
    let out = tempfile::tempdir().unwrap();

    // First run: killed once half the target is accepted.
    let mut child = run_command(out.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        seen.push(line.clone());
        if accepted_in(&line).is_some_and(|n| n >= TARGET / 2) {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = seen.last().and_then(|l| accepted_in(l)).unwrap_or(0);
    assert!(
        (TARGET / 2..TARGET).contains(&at_kill),
        "killed too late or never progressed: {seen:?}"
    );

    // Second run: continues from the store and finishes.
    let second = run_command(out.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&second.stdout);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        second.status.success(),
        "second run failed:\n{stdout}\n{stderr}"
    );
    assert!(stderr.contains("seedling: continuing plan"), "{stderr}");
    assert!(
        stdout.contains(&format!("accepted {TARGET}/{TARGET}")),
        "{stdout}"
    );
    // The resumed run says where its own generation time went and what a
    // record cost it, from the engine's clock.
    assert!(stdout.contains("where the generation's"), "{stdout}");
    assert!(stdout.contains("decode"), "{stdout}");
    if stdout.contains("per accepted record this run:") {
        assert!(stdout.contains("response: "), "{stdout}");
    }
    eprintln!("first run killed at {at_kill}/{TARGET} accepted; second run:\n{stdout}");

    // The dataset: exactly the target, unique ids, schema, traces.
    let mut ids = BTreeSet::new();
    for split in ["train", "validation", "test"] {
        for record in exported_records(out.path(), split) {
            assert!(ids.insert(record.id.clone()), "duplicate id {}", record.id);
        }
        for format in ["chatml", "sharegpt", "alpaca"] {
            assert!(out.path().join(format!("{format}/{split}.jsonl")).exists());
        }
        assert!(out.path().join(format!("parquet/{split}.parquet")).exists());
    }
    assert_eq!(ids.len(), TARGET);
    for file in ["README.md", "manifest.json", "plan.json"] {
        assert!(out.path().join(file).exists(), "{file} missing");
    }
}
