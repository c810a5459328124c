//! The support check measured on hand-written answers about guides written
//! for it (issue 23). Each set holds faithful answers (paraphrases, figures
//! from the question, conclusions drawn from a limit) and unfaithful ones (a
//! wrong or invented figure, a figure that belongs to something else, a
//! denied rule, an answer that restates its question). Precision and recall
//! of the rejections are printed (BENCHMARKS.md keeps them) and held above
//! a floor.
//!
//! `brackwell` (54 + 54) is the set the check was developed against;
//! `tallow-creek` (30 + 30) was written afterwards and measured once, without
//! changing the check for it: the honest figure for text it has not seen.

use seedling_common::work::SupportSpec;
use seedling_tests::repo_root;
use seedling_worker::scoring::support::check_support;

struct Measured {
    precision: f64,
    recall: f64,
    faithful: u32,
    unfaithful: u32,
    wrong: Vec<String>,
}

fn measure(domain: &str, guide: &str, set: &str) -> Measured {
    let guide = std::fs::read_to_string(repo_root().join("tests/plans/docs").join(guide)).unwrap();
    let spec = SupportSpec {
        sources: vec![domain.to_string(), guide],
        cross_language: false,
    };
    let set = std::fs::read_to_string(repo_root().join("tests/support").join(set)).unwrap();
    let (mut true_rejects, mut false_rejects) = (0u32, 0u32);
    let (mut faithful, mut unfaithful) = (0u32, 0u32);
    let mut wrong = Vec::new();
    for line in set.lines().filter(|l| !l.trim().is_empty()) {
        let item: serde_json::Value = serde_json::from_str(line).unwrap();
        let (input, response) = (
            item["input"].as_str().unwrap(),
            item["response"].as_str().unwrap(),
        );
        let is_faithful = item["label"] == "pass";
        let support = check_support(input, response, &spec, true);
        let rejected = !support.rejections.is_empty();
        if is_faithful {
            faithful += 1;
            false_rejects += u32::from(rejected);
        } else {
            unfaithful += 1;
            true_rejects += u32::from(rejected);
        }
        if is_faithful == rejected {
            wrong.push(format!(
                "  {}: {response} -> {:?}",
                item["label"], support.rejections
            ));
        }
        if is_faithful && !rejected && !seedling_common::facts::facts(response).is_empty() {
            assert!(
                support.citations.iter().any(|c| !c.facts.is_empty()),
                "a faithful answer with figures cites none: {response}"
            );
        }
    }
    Measured {
        precision: f64::from(true_rejects) / f64::from((true_rejects + false_rejects).max(1)),
        recall: f64::from(true_rejects) / f64::from(unfaithful.max(1)),
        faithful,
        unfaithful,
        wrong,
    }
}

fn report(name: &str, m: &Measured) -> String {
    format!(
        "{name}: precision {:.2}, recall {:.2} on {} faithful + {} unfaithful answers; misjudged:\n{}",
        m.precision,
        m.recall,
        m.faithful,
        m.unfaithful,
        m.wrong.join("\n")
    )
}

#[test]
fn support_check_on_the_guide_it_was_developed_against() {
    let m = measure(
        "brackwell-permits: The permits desk of Brackwell Town Hall.",
        "brackwell-permits.md",
        "brackwell-answers.jsonl",
    );
    assert_eq!((m.faithful, m.unfaithful), (54, 54));
    eprintln!("{}", report("brackwell (development set)", &m));
    assert!(
        m.precision >= 0.9 && m.recall >= 0.8,
        "{}",
        report("brackwell", &m)
    );
}

#[test]
fn support_check_on_a_guide_it_has_not_seen() {
    let m = measure(
        "tallow-creek-campground: The reception of Tallow Creek campground.",
        "tallow-creek-campground.md",
        "tallow-creek-answers.jsonl",
    );
    assert_eq!((m.faithful, m.unfaithful), (30, 30));
    eprintln!("{}", report("tallow-creek (held out)", &m));
    assert!(
        m.precision >= 0.85 && m.recall >= 0.6,
        "{}",
        report("tallow-creek", &m)
    );
}

/// `seedling quality faithfulness-probe` reads the same labelled form; a
/// bad line is named with its file and line before any model loads.
#[test]
fn a_faithfulness_probe_names_the_line_of_a_bad_label() {
    let dir = tempfile::tempdir().unwrap();
    let answers = dir.path().join("answers.jsonl");
    std::fs::write(
        &answers,
        "{\"label\": \"pass\", \"input\": \"q\", \"response\": \"a\"}\n\n{\"label\": \"maybe\", \"input\": \"q\", \"response\": \"a\"}\n",
    )
    .unwrap();
    let (ok, said) = seedling_tests::seedling([
        "quality".as_ref(),
        "faithfulness-probe".as_ref(),
        answers.as_os_str(),
        "--source".as_ref(),
        answers.as_os_str(),
        "--model".as_ref(),
        "/nonexistent/judge.gguf".as_ref(),
    ]);
    assert!(!ok);
    assert!(
        said.contains(&format!(
            "{}:3: label must be \"pass\" or \"fail\", not \"maybe\"",
            answers.display()
        )),
        "{said}"
    );
}
