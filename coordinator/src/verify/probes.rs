//! The fact probe set (issue 17): questions whose answers carry a fact from
//! the plan's own knowledge (reference documents, glossary definitions,
//! business rules), never from generated text, so a model can only answer
//! them well if training taught it the domain. Each probe is scored by
//! teacher forcing: its true answer against the same answer with the fact
//! swapped for another of its kind (a forced choice), plus the NLL of the
//! fact's own tokens.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use seedling_common::facts::{Fact, facts, variants};

/// Wrong answers per probe: chance is 1 in (ALTERNATIVES + 1).
pub const ALTERNATIVES: usize = 3;

/// Probes per source text at most, so one long document does not outweigh
/// the glossary.
const MAX_PROBES: usize = 400;

/// What the probes are built from.
#[derive(Debug, Clone, Default)]
pub struct Knowledge {
    pub domain: String,
    /// (term, definition)
    pub glossary: Vec<(String, String)>,
    /// (source name, text) of each reference chunk.
    pub references: Vec<(String, String)>,
    pub rules: Vec<String>,
}

/// One forced-choice question. Offsets count characters (not bytes), as the
/// sidecar's Python strings do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub id: String,
    /// `glossary`, `reference:<file>` or `rule`.
    pub source: String,
    pub prompt: String,
    pub answer: String,
    pub fact: String,
    pub fact_kind: String,
    pub fact_start: usize,
    pub alternatives: Vec<String>,
}

/// What guessing scores on `probes`: the mean of one in (alternatives + 1).
pub fn chance(probes: &[Probe]) -> f64 {
    if probes.is_empty() {
        return 0.0;
    }
    probes
        .iter()
        .map(|p| 1.0 / (1 + p.alternatives.len()) as f64)
        .sum::<f64>()
        / probes.len() as f64
}

/// A line without its list marker (`-`, `*`, `1.`, `2)`) and bold markup:
/// an item's number is layout, not a fact a probe may ask for.
fn without_markup(line: &str) -> String {
    let line = line.trim_start_matches(['-', '*', ' ']);
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let rest = &line[digits..];
    let line = if digits > 0 && (rest.starts_with(". ") || rest.starts_with(") ")) {
        rest[2..].trim_start()
    } else {
        line
    };
    line.replace("**", "")
}

/// Sentences of a document: headings, list markers and bold markup
/// dropped, lines of a paragraph joined, split after `.`, `!` or `?` before
/// a capital or digit.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for paragraph in text.split("\n\n") {
        let joined = paragraph
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(without_markup)
            .collect::<Vec<_>>()
            .join(" ");
        let chars: Vec<char> = joined.chars().collect();
        let mut current = String::new();
        for (i, &c) in chars.iter().enumerate() {
            current.push(c);
            let ends = matches!(c, '.' | '!' | '?')
                && chars.get(i + 1).is_some_and(|n| n.is_whitespace())
                && chars
                    .get(i + 2)
                    .is_some_and(|n| n.is_uppercase() || n.is_ascii_digit());
            if ends {
                out.push(current.trim().to_string());
                current.clear();
            }
        }
        if !current.trim().is_empty() {
            out.push(current.trim().to_string());
        }
    }
    out
}

fn masked(sentence: &str, fact: &Fact) -> String {
    format!(
        "{}___{}",
        &sentence[..fact.start],
        &sentence[fact.start + fact.text.len()..]
    )
}

fn char_offset(text: &str, byte: usize) -> usize {
    text[..byte].chars().count()
}

/// Every probe the knowledge supports, in a stable order.
pub fn build_probes(knowledge: &Knowledge) -> Vec<Probe> {
    // (source, prompt, answer) before facts are chosen.
    let mut items: Vec<(String, String, String)> = Vec::new();
    let domain = &knowledge.domain;
    for (term, definition) in &knowledge.glossary {
        items.push((
            "glossary".to_string(),
            format!("In {domain}, what is \"{term}\"?"),
            definition.trim().to_string(),
        ));
    }
    let statement = |sentence: &str, fact: &Fact| {
        format!(
            "In {domain}, which detail is missing from this statement: \"{}\"? Answer with the complete statement.",
            masked(sentence, fact)
        )
    };
    let mut statements: Vec<(String, String)> = Vec::new();
    for (source, text) in &knowledge.references {
        for sentence in sentences(text) {
            statements.push((format!("reference:{source}"), sentence));
        }
    }
    for rule in &knowledge.rules {
        statements.push(("rule".to_string(), rule.trim().to_string()));
    }

    // The pool of facts by kind, for alternatives that a reader of the same
    // documents could believe.
    let mut pool: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let all_texts = items
        .iter()
        .map(|(_, _, a)| a.as_str())
        .chain(statements.iter().map(|(_, s)| s.as_str()));
    for text in all_texts {
        for fact in facts(text) {
            pool.entry(fact.kind).or_default().insert(fact.text);
        }
    }
    let alternatives = |fact: &Fact| -> Vec<String> {
        let mut out: Vec<String> = pool
            .get(&fact.kind)
            .into_iter()
            .flatten()
            .filter(|t| **t != fact.text)
            .take(ALTERNATIVES)
            .cloned()
            .collect();
        for made in variants(fact) {
            if out.len() >= ALTERNATIVES {
                break;
            }
            if !out.contains(&made) {
                out.push(made);
            }
        }
        out
    };

    let mut probes = Vec::new();
    let mut seen = BTreeSet::new();
    let mut add = |source: &str, prompt: String, answer: &str, fact: &Fact| {
        let swaps = alternatives(fact);
        if swaps.is_empty() || !seen.insert((answer.to_string(), fact.start)) {
            return;
        }
        let replace = |with: &str| {
            format!(
                "{}{with}{}",
                &answer[..fact.start],
                &answer[fact.start + fact.text.len()..]
            )
        };
        probes.push(Probe {
            id: format!("p{}", probes.len() + 1),
            source: source.to_string(),
            prompt,
            answer: answer.to_string(),
            fact: fact.text.clone(),
            fact_kind: fact.kind.clone(),
            fact_start: char_offset(answer, fact.start),
            alternatives: swaps.iter().map(|s| replace(s)).collect(),
        });
    };
    for (source, prompt, answer) in &items {
        for fact in facts(answer) {
            add(source, prompt.clone(), answer, &fact);
        }
    }
    for (source, sentence) in &statements {
        for fact in facts(sentence) {
            add(source, statement(sentence, &fact), sentence, &fact);
        }
    }
    probes.truncate(MAX_PROBES);
    probes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ferry() -> Knowledge {
        Knowledge {
            domain: "harrowgate-ferry".into(),
            glossary: vec![
                ("day pass".into(), "A ticket for one day; it costs 18 crowns.".into()),
                ("harbour".into(), "Where the ferry docks.".into()),
            ],
            references: vec![(
                "rules.md".into(),
                "# Rules\n\nThe crossing takes 35 minutes. A single ticket costs 7 crowns.\nThe last ferry leaves at 22:15.".into(),
            )],
            rules: vec!["Never ask for a card number.".into()],
        }
    }

    #[test]
    fn sentences_drop_headings_and_join_lines() {
        let found = sentences(
            "# Title\n\nOne line\ncontinues here. Two is 3 words.\n\n- A list item.\n\n1. **Holds.** They last up to 7 days.\n2) Limits reset at 00:00.\n3.5 percent is not a marker.",
        );
        assert_eq!(
            found,
            vec![
                "One line continues here.",
                "Two is 3 words.",
                "A list item.",
                "Holds.",
                "They last up to 7 days.",
                "Limits reset at 00:00.",
                "3.5 percent is not a marker."
            ]
        );
    }

    #[test]
    fn every_fact_of_the_knowledge_becomes_one_probe() {
        let probes = build_probes(&ferry());
        let facts: Vec<&str> = probes.iter().map(|p| p.fact.as_str()).collect();
        assert_eq!(facts, vec!["18 crowns", "35 minutes", "7 crowns", "22:15"]);
        let glossary = &probes[0];
        assert_eq!(
            glossary.prompt,
            "In harrowgate-ferry, what is \"day pass\"?"
        );
        assert_eq!(
            glossary.alternatives[0],
            "A ticket for one day; it costs 7 crowns."
        );
        let reference = &probes[1];
        assert!(
            reference.prompt.contains("\"The crossing takes ___.\""),
            "{}",
            reference.prompt
        );
        assert_eq!(reference.source, "reference:rules.md");
    }

    #[test]
    fn alternatives_differ_only_in_the_fact_and_prefer_the_documents_own() {
        for probe in build_probes(&ferry()) {
            assert_eq!(probe.alternatives.len(), ALTERNATIVES, "{probe:?}");
            let start: String = probe.answer.chars().take(probe.fact_start).collect();
            for alt in &probe.alternatives {
                assert_ne!(alt, &probe.answer);
                assert!(alt.starts_with(&start), "{alt} vs {}", probe.answer);
            }
            let unique: BTreeSet<_> = probe.alternatives.iter().collect();
            assert_eq!(unique.len(), probe.alternatives.len(), "{probe:?}");
        }
        // "7 crowns" has "18 crowns" from the glossary as its first alternative.
        let seven = build_probes(&ferry())
            .into_iter()
            .find(|p| p.fact == "7 crowns")
            .unwrap();
        assert_eq!(seven.alternatives[0], "A single ticket costs 18 crowns.");
    }

    #[test]
    fn offsets_count_characters_not_bytes() {
        let knowledge = Knowledge {
            domain: "café".into(),
            glossary: vec![("entrée".into(), "Le menu à 12 euros.".into())],
            ..Knowledge::default()
        };
        let probe = &build_probes(&knowledge)[0];
        let fact: String = probe
            .answer
            .chars()
            .skip(probe.fact_start)
            .take(8)
            .collect();
        assert_eq!(fact, "12 euros");
    }
}
