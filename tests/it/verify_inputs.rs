//! `seedling verify`'s bad inputs, where no model is needed to see them.

use seedling_tests::seedling;

/// The fine-tune needs its Python environment; a machine without it learns
/// so at once, not after the model is read and the naive examples are
/// generated (minutes on a small machine).
#[test]
fn a_missing_training_environment_is_named_before_any_other_work() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().to_str().unwrap();
    let (ok, said) = seedling([
        "verify",
        dataset,
        "--env",
        "/nonexistent/verify-env",
        "--model",
        "/nonexistent/model.gguf",
    ]);
    assert!(!ok, "{said}");
    assert!(
        said.contains("/nonexistent/verify-env") && said.contains("scripts/setup"),
        "{said}"
    );
    assert!(
        !said.contains("model.gguf") && !said.contains("manifest.json"),
        "the environment is checked first: {said}"
    );
    assert_eq!(said.trim().lines().count(), 1, "one line: {said}");
}
