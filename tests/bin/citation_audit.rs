//! `citation-audit DIR...`: reads exported datasets back the way
//! `model_verify` does (issue 23) and prints, per dataset, how many answers
//! state a figure, how many of those cite a span for every figure, and each
//! answer that disagrees with what it cites or takes back its own "yes".
//! The figures of BENCHMARKS.md's citation table come from it.

use seedling_tests::citation_audit;

fn main() {
    let dirs: Vec<String> = std::env::args().skip(1).collect();
    if dirs.is_empty() {
        eprintln!("usage: citation-audit DIR... (a `seedling run` or `seedling export` output)");
        std::process::exit(2);
    }
    for dir in dirs {
        let path = std::path::Path::new(&dir);
        if !path.join("data").is_dir() {
            eprintln!("{dir}: no data/ here; give a `seedling run --out` or export directory");
            std::process::exit(2);
        }
        let audit = citation_audit(path);
        println!(
            "{dir}: {} of {} records cite; {} answers state a figure the question does not, {} \
             cite a span for every figure; {} contradicted, {} take back their \"yes\"",
            audit.citing,
            audit.records,
            audit.with_figures,
            audit.fully_cited,
            audit.contradicted.len(),
            audit.yes_then_denies.len()
        );
        for line in audit.contradicted.iter().chain(&audit.yes_then_denies) {
            println!("  {line}");
        }
    }
}
