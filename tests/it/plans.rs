//! Plans: the shipped examples load; malformed plans get an error naming the
//! file, the line and the field, and never a panic; allocation is stable.

use std::path::{Path, PathBuf};

use seedling_coordinator::plan::{PlanError, allocate, load_plan};
use seedling_tests::repo_root;

fn examples() -> PathBuf {
    repo_root().join("examples")
}

#[test]
fn every_example_plan_loads_and_allocates_its_target() {
    let mut seen = 0;
    let test_plans = std::fs::read_dir(repo_root().join("tests/plans")).unwrap();
    for entry in std::fs::read_dir(examples()).unwrap().chain(test_plans) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let plan = load_plan(&path).unwrap_or_else(|e| panic!("{e}"));
            let quotas = allocate(&plan);
            let total: u64 = quotas.iter().map(|q| q.quota).sum();
            assert_eq!(total as i64, plan.target.accepted, "{}", path.display());
            assert_eq!(quotas, allocate(&plan), "allocation is deterministic");
            seen += 1;
        }
    }
    assert!(
        seen >= 4,
        "expected at least three example plans and the test plan, found {seen}"
    );
}

#[test]
fn bilingual_example_allocates_both_languages_equally() {
    let plan = load_plan(&examples().join("bilingual-en-es.toml")).unwrap();
    let quotas = allocate(&plan);
    let per = |code: &str| -> u64 {
        quotas
            .iter()
            .filter(|q| q.stratum.language == code)
            .map(|q| q.quota)
            .sum()
    };
    assert_eq!(per("en"), per("es"));
    assert_eq!(per("en") + per("es"), 48);
}

/// Writes `text` as `name` next to a copy of the examples' reference docs.
fn write_plan(dir: &Path, name: &str, text: &str) -> PathBuf {
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for doc in ["card-declines.md", "transfers-and-accounts.md"] {
        std::fs::copy(examples().join("docs").join(doc), docs.join(doc)).unwrap();
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn line_of(text: &str, needle: &str) -> usize {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in plan"));
    text[..offset].matches('\n').count() + 1
}

struct Case {
    what: &'static str,
    from: &'static str,
    to: &'static str,
    /// Text on the line the error must point at (after the edit); None: no line check.
    line_of: Option<&'static str>,
    /// Words the message must contain.
    says: &'static [&'static str],
}

#[test]
fn malformed_plans_name_file_line_and_field() {
    let original = std::fs::read_to_string(examples().join("retail-banking.toml")).unwrap();
    let cases = [
        Case {
            what: "missing field",
            from: "[target]\naccepted = 200\n",
            to: "",
            line_of: None,
            says: &["missing field `target`"],
        },
        Case {
            what: "wrong type",
            from: "weight = 0.4",
            to: "weight = \"heavy\"",
            line_of: Some("weight = \"heavy\""),
            says: &["invalid type", "f64"],
        },
        Case {
            what: "unknown key",
            from: "weight = 0.35",
            to: "weigth = 0.35",
            line_of: Some("weigth = 0.35"),
            says: &["unknown field `weigth`"],
        },
        Case {
            what: "share sum",
            from: "name = \"question_answering\"\nshare = 0.5",
            to: "name = \"question_answering\"\nshare = 0.4",
            line_of: None,
            says: &["task_types shares sum to 0.9; they must sum to 1"],
        },
        Case {
            what: "unknown template variable",
            from: "ask one question about {{ subdomain }}",
            to: "ask one question about {{ sub_domain }}",
            line_of: Some("{{ sub_domain }}"),
            says: &["task_types[0].templates.en", "sub_domain"],
        },
        Case {
            what: "template syntax error",
            from: "Mention '{{ term }}' if it fits.",
            to: "Mention '{{ term ' if it fits.",
            line_of: Some("Mention '{{ term '"),
            says: &["task_types[1].templates.en", "syntax error"],
        },
        Case {
            what: "missing reference file",
            from: "docs/card-declines.md",
            to: "docs/missing.md",
            line_of: Some("docs/missing.md"),
            says: &["references[0].path", "missing.md", "not found"],
        },
        Case {
            what: "reference is a directory",
            from: "path = \"docs/card-declines.md\"",
            to: "path = \"docs\"",
            line_of: Some("path = \"docs\""),
            says: &["references[0].path", "is a directory"],
        },
        Case {
            what: "reference is a device",
            from: "path = \"docs/card-declines.md\"",
            to: "path = \"/dev/zero\"",
            line_of: Some("path = \"/dev/zero\""),
            says: &["references[0].path", "/dev/zero is not a regular file"],
        },
        Case {
            what: "negative target",
            from: "accepted = 200",
            to: "accepted = -5",
            line_of: Some("accepted = -5"),
            says: &["target.accepted", "must be > 0"],
        },
        Case {
            what: "impossible target",
            from: "accepted = 200",
            to: "accepted = 1000000000000",
            line_of: Some("accepted = 1000000000000"),
            says: &["target.accepted", "at most 10000000", "several plans"],
        },
        Case {
            what: "unknown language",
            from: "code = \"en\"",
            to: "code = \"xx\"",
            line_of: Some("code = \"xx\""),
            says: &["languages[0].code", "\"xx\"", "ISO 639-1"],
        },
        Case {
            what: "bad regex",
            from: "forbidden_regex = '\\b\\d{4}",
            to: "forbidden_regex = '(\\b\\d{4}",
            line_of: Some("forbidden_regex = '(\\b"),
            says: &["rules[1].forbidden_regex", "invalid regex"],
        },
        Case {
            what: "zero weight",
            from: "weight = 0.25",
            to: "weight = 0",
            line_of: Some("weight = 0\n"),
            says: &["subdomains[2].weight", "must be > 0"],
        },
        Case {
            what: "missing template language",
            from: "[[languages]]\ncode = \"en\"\nshare = 1.0",
            to: "[[languages]]\ncode = \"en\"\nshare = 0.5\n\n[[languages]]\ncode = \"de\"\nshare = 0.5",
            line_of: None,
            says: &["has no template for plan language \"de\""],
        },
        Case {
            what: "augmentation share out of range",
            from: "share = 0.1\nkinds = [\"paraphrase\"",
            to: "share = 1.5\nkinds = [\"paraphrase\"",
            line_of: None,
            says: &["augmentation.share", "must be in [0, 1)"],
        },
        Case {
            what: "unknown adversarial kind",
            from: "\"prompt_injection\"]",
            to: "\"jailbreak\"]",
            line_of: Some("\"jailbreak\"]"),
            says: &["unknown variant `jailbreak`"],
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    for case in cases {
        assert!(
            original.contains(case.from),
            "{}: edit target missing",
            case.what
        );
        let text = original.replacen(case.from, case.to, 1);
        let path = write_plan(dir.path(), "plan.toml", &text);
        let err = load_plan(&path).expect_err(case.what);
        let message = err.to_string();
        assert!(
            matches!(err, PlanError::Invalid { .. }),
            "{}: {message}",
            case.what
        );
        assert!(
            message.contains("plan.toml"),
            "{}: no file in {message}",
            case.what
        );
        for word in case.says {
            assert!(
                message.contains(word),
                "{}: {word:?} missing from {message}",
                case.what
            );
        }
        if let Some(needle) = case.line_of {
            let want = format!("plan.toml:{}:", line_of(&text, needle));
            assert!(
                message.contains(&want),
                "{}: expected {want} in {message}",
                case.what
            );
        }
    }
}

#[test]
fn empty_subdomain_list_and_unreadable_file_are_named() {
    let original = std::fs::read_to_string(examples().join("bilingual-en-es.toml")).unwrap();
    let text = original
        .replace("[[subdomains]]\nname = \"billing\"\nweight = 1\n\n", "")
        .replace(
            "[[subdomains]]\nname = \"connectivity\"\nweight = 1\n\n",
            "",
        )
        .replacen("seed = 99\n", "seed = 99\nsubdomains = []\n", 1);
    let dir = tempfile::tempdir().unwrap();
    let path = write_plan(dir.path(), "plan.toml", &text);
    let message = load_plan(&path).unwrap_err().to_string();
    let want = format!(
        "plan.toml:{}: subdomains needs at least one subdomain",
        line_of(&text, "subdomains = []")
    );
    assert!(message.contains(&want), "{message}");

    let missing = load_plan(&dir.path().join("nope.toml")).unwrap_err();
    assert!(matches!(missing, PlanError::Read { .. }));
    assert!(missing.to_string().contains("nope.toml"), "{missing}");
    let garbage = write_plan(dir.path(), "garbage.toml", "this is = = not toml");
    let message = load_plan(&garbage).unwrap_err().to_string();
    assert!(message.contains("garbage.toml:1:"), "{message}");
}

#[test]
fn a_reference_too_large_or_not_a_file_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(examples().join("retail-banking.toml")).unwrap();
    let plan = write_plan(dir.path(), "plan.toml", &original);
    let large = dir.path().join("docs/card-declines.md");
    let bytes = seedling_coordinator::plan::MAX_REFERENCE_BYTES as usize + 1;
    std::fs::write(&large, "a".repeat(bytes)).unwrap();
    let message = load_plan(&plan).unwrap_err().to_string();
    assert!(
        message.contains("references[0].path")
            && message.contains(&format!("{bytes} bytes"))
            && message.contains("at most 2097152 bytes"),
        "{message}"
    );
    // What travels with a submitted plan is checked the same way, before a
    // read that would never end.
    let text = original.replace("docs/card-declines.md", "/dev/zero");
    let err = seedling_coordinator::plan::reference_files(&plan, &text).unwrap_err();
    assert!(
        err.to_string().contains("/dev/zero is not a regular file"),
        "{err}"
    );
}

#[test]
fn a_reader_that_stops_early_gets_no_panic() {
    // `seedling plan check PLAN | head -0`: the reader closes the pipe
    // before the command prints, which must then stop quietly, not panic.
    let plan = examples().join("retail-banking.toml");
    let mut child = std::process::Command::new(seedling_tests::seedling_bin())
        .args(["plan", "check"])
        .arg(&plan)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("seedling starts");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("seedling exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.status.success() || out.status.code() == Some(141),
        "{:?}: {stderr}",
        out.status
    );
}

#[test]
fn a_methods_table_gives_the_methods_it_leaves_out_no_share() {
    let original = std::fs::read_to_string(examples().join("retail-banking.toml")).unwrap();
    let mix =
        "[methods]\ntemplate = 0.6\nself_instruct = 0.15\nevol_instruct = 0.2\nmagpie = 0.05\n";
    assert!(original.contains(mix));
    let dir = tempfile::tempdir().unwrap();
    let only_templates = write_plan(
        dir.path(),
        "templates.toml",
        &original.replace(mix, "[methods]\ntemplate = 1.0\n"),
    );
    let plan = load_plan(&only_templates).expect("a partial [methods] table loads");
    assert_eq!(plan.methods.template, 1.0);
    assert_eq!(
        (
            plan.methods.self_instruct,
            plan.methods.evol_instruct,
            plan.methods.magpie
        ),
        (0.0, 0.0, 0.0)
    );
    // What is named must still add up.
    let short = write_plan(
        dir.path(),
        "short.toml",
        &original.replace(mix, "[methods]\ntemplate = 0.5\n"),
    );
    let err = load_plan(&short).expect_err("shares that do not sum to 1");
    assert!(err.to_string().contains("methods"), "{err}");
}
