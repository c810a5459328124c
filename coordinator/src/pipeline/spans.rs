//! Generation that starts from the facts (issue 23): the passages of a
//! plan's own knowledge that a record can be written about, and which one an
//! attempt starts from.
//!
//! A record written from a question the model made up states whatever facts
//! the model knows, or invents them; a record written about a given sentence
//! of the references states that sentence's facts, with it in front of the
//! model. Left to relevance alone, attempts kept landing on the same few
//! chunks (the full verification tier on the demo plan found 12 of its 32
//! probed facts in no train record), so the passages are walked in turn:
//! each subdomain's strata start at evenly spaced points of one seeded cycle
//! over that subdomain's passages, and passages that state a figure come up
//! twice per cycle.

use std::collections::{BTreeMap, HashSet};

use seedling_common::facts::{sentence_ranges, stated_facts};
use seedling_common::ids::NodeId;

use super::knowledge::{Knowledge, content_words};
use crate::plan::{Plan, Stratum};

/// Sentences with fewer words say too little to write a record about,
/// unless they state a figure.
const MIN_WORDS: usize = 6;

/// One passage a record can be written about.
#[derive(Debug, Clone, PartialEq)]
pub struct FactSpan {
    /// The knowledge node it is part of: a reference chunk, a rule, a
    /// glossary term or an expert example.
    pub node: NodeId,
    /// Its position in [`Knowledge::chunks`] when it is part of a chunk.
    pub chunk: Option<usize>,
    /// Character offsets in the node's text (the chunk, the rule's
    /// statement, the term's definition, the expert's answer).
    pub start: usize,
    pub end: usize,
    /// The passage as prompts show it: markup dropped, lines joined.
    pub text: String,
    /// Whether it states a figure (an amount, a time, a code, ...).
    pub figures: bool,
}

/// What one subdomain's fact-first attempts can start from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PassageCount {
    pub passages: usize,
    pub with_figures: usize,
}

/// A plan's passages and, per subdomain, the cycle its strata walk.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FactSpans {
    spans: Vec<FactSpan>,
    cycles: BTreeMap<String, Vec<usize>>,
    /// Per stratum, where on its subdomain's cycle it walks: its rank among
    /// the subdomain's regular strata, and how many there are. None for an
    /// adversarial stratum.
    places: Vec<Option<(usize, usize)>>,
}

impl FactSpans {
    /// The passages of `plan`'s knowledge, walked by `strata` (none when
    /// only the passages are wanted).
    pub fn new(plan: &Plan, knowledge: &Knowledge, strata: &[Stratum]) -> Self {
        let mut spans = Vec::new();
        // (span, the subdomain it is known to belong to)
        let mut owners: Vec<Option<&str>> = Vec::new();
        for (i, chunk) in knowledge.chunks.iter().enumerate() {
            for span in passages(&chunk.id, &chunk.text, false) {
                spans.push(FactSpan {
                    chunk: Some(i),
                    ..span
                });
                owners.push(None);
            }
        }
        for (id, entry) in knowledge.glossary.iter().zip(&plan.glossary) {
            let text = entry.definition.trim();
            if text.is_empty() {
                continue;
            }
            spans.push(FactSpan {
                node: id.clone(),
                chunk: None,
                start: 0,
                end: entry.definition.chars().count(),
                text: format!("{}: {}", entry.term, clean(text)),
                figures: states_figures(text),
            });
            owners.push(None);
        }
        for (id, rule) in knowledge.rules.iter().zip(&plan.rules) {
            // Most rules say how to behave; only those that state a figure
            // are facts of the domain.
            spans.extend(passages(id, &rule.statement, true));
            owners.resize(spans.len(), None);
        }
        for (id, example) in knowledge.examples.iter().zip(&plan.expert_examples) {
            spans.extend(passages(id, &example.answer, true));
            owners.resize(spans.len(), example.subdomain.as_deref());
        }
        let cycles = cycles(plan, knowledge, &spans, &owners);
        FactSpans {
            spans,
            cycles,
            places: places(strata),
        }
    }

    /// How many passages each subdomain's strata walk, and how many of them
    /// state a figure.
    pub fn per_subdomain(&self) -> BTreeMap<String, PassageCount> {
        self.cycles
            .iter()
            .map(|(name, cycle)| {
                let distinct: HashSet<usize> = cycle.iter().copied().collect();
                let count = PassageCount {
                    passages: distinct.len(),
                    with_figures: distinct.iter().filter(|&&i| self.spans[i].figures).count(),
                };
                (name.clone(), count)
            })
            .collect()
    }

    /// The passage attempt `attempt` of stratum `index` (of the strata
    /// given to [`FactSpans::new`]) starts from; none for an adversarial
    /// stratum.
    pub fn pick(&self, strata: &[Stratum], index: usize, attempt: u64) -> Option<&FactSpan> {
        let (rank, of) = (*self.places.get(index)?)?;
        self.walk(&strata[index].subdomain, rank, of, attempt)
    }

    /// The passage that attempt `attempt` of the `rank`-th of `of` strata
    /// of `subdomain` starts from: the strata start evenly spaced on the
    /// subdomain's cycle and each walks on from its start.
    fn walk(&self, subdomain: &str, rank: usize, of: usize, attempt: u64) -> Option<&FactSpan> {
        let cycle = self.cycles.get(subdomain).filter(|c| !c.is_empty())?;
        let n = cycle.len();
        let start = rank * n / of.max(1);
        let at = (start as u64 + attempt) % n as u64;
        Some(&self.spans[cycle[at as usize]])
    }
}

/// Each regular stratum's rank among its subdomain's regular strata, and
/// their number.
fn places(strata: &[Stratum]) -> Vec<Option<(usize, usize)>> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let ranks: Vec<Option<usize>> = strata
        .iter()
        .map(|s| {
            (!s.adversarial).then(|| {
                let seen = counts.entry(s.subdomain.as_str()).or_default();
                *seen += 1;
                *seen - 1
            })
        })
        .collect();
    strata
        .iter()
        .zip(ranks)
        .map(|(s, rank)| rank.map(|r| (r, counts[s.subdomain.as_str()])))
        .collect()
}

/// The passages of one node's text: its sentences that state a figure (only
/// those when `figures_only`) or say enough without one.
fn passages(node: &NodeId, text: &str, figures_only: bool) -> Vec<FactSpan> {
    let mut out = Vec::new();
    for (start, end) in sentence_ranges(text) {
        let raw = &text[start..end];
        // Heading lines and table rows before the sentence are layout: a
        // row says nothing without its header.
        let skipped: usize = raw
            .split_inclusive('\n')
            .take_while(|line| {
                let line = line.trim();
                line.is_empty() || line.starts_with(['#', '|'])
            })
            .map(str::len)
            .sum();
        let body = &raw[skipped..];
        let lead = body.len() - body.trim_start().len();
        let body = body.trim();
        if body.is_empty() || body.starts_with('|') {
            continue;
        }
        let figures = states_figures(body);
        let shown = clean(body);
        if !figures && (figures_only || shown.split_whitespace().count() < MIN_WORDS) {
            continue;
        }
        let from = start + skipped + lead;
        let start = text[..from].chars().count();
        out.push(FactSpan {
            node: node.clone(),
            chunk: None,
            start,
            end: start + body.chars().count(),
            text: shown,
            figures,
        });
    }
    out
}

fn states_figures(text: &str) -> bool {
    !stated_facts(text).is_empty()
}

/// A passage without list markers and bold markup, its lines joined.
fn clean(text: &str) -> String {
    text.lines()
        .map(|line| line.trim().trim_start_matches(['-', '*', '>']).trim())
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .replace("**", "")
}

/// Per subdomain, a seeded cycle over the spans that belong to it, spans
/// with figures twice. A span belongs to the subdomain it was written for
/// (an expert answer), else to the subdomains whose description, scenarios
/// and expert questions share the most words with it and its chunk, else
/// to every subdomain.
fn cycles(
    plan: &Plan,
    knowledge: &Knowledge,
    spans: &[FactSpan],
    owners: &[Option<&str>],
) -> BTreeMap<String, Vec<usize>> {
    let described: Vec<(&str, HashSet<String>)> = plan
        .subdomains
        .iter()
        .map(|d| {
            let mut text = format!("{} {}", d.name.replace(['_', '-'], " "), d.description);
            let about = |s: &Option<String>| s.as_deref() == Some(d.name.as_str());
            for scenario in plan.scenarios.iter().filter(|s| about(&s.subdomain)) {
                text.push(' ');
                text.push_str(&scenario.description);
            }
            for example in plan.expert_examples.iter().filter(|e| about(&e.subdomain)) {
                text.push(' ');
                text.push_str(&example.question);
            }
            (d.name.as_str(), content_words(&text))
        })
        .collect();
    let mut cycles: BTreeMap<String, Vec<usize>> = described
        .iter()
        .map(|(name, _)| (name.to_string(), Vec::new()))
        .collect();
    for (i, span) in spans.iter().enumerate() {
        let own = content_words(&span.text);
        let context = span
            .chunk
            .map(|c| content_words(&knowledge.chunks[c].text))
            .unwrap_or_default();
        let scores: Vec<usize> = described
            .iter()
            .map(|(_, words)| {
                2 * own.intersection(words).count() + context.intersection(words).count()
            })
            .collect();
        let best = scores.iter().copied().max().unwrap_or(0);
        for ((name, _), score) in described.iter().zip(&scores) {
            let belongs = match owners[i] {
                Some(owner) if cycles.contains_key(owner) => owner == *name,
                _ => best == 0 || *score == best,
            };
            if belongs {
                let cycle = cycles.get_mut(*name).expect("every subdomain has a cycle");
                cycle.push(i);
                if span.figures {
                    cycle.push(i);
                }
            }
        }
    }
    for (name, cycle) in &mut cycles {
        cycle.sort_by_key(|&i| shuffle_key(plan.seed, name, i));
        spread_repeats(cycle);
    }
    cycles
}

/// A seeded order: the cycle is not the documents' order, so a small
/// target still reaches every document.
fn shuffle_key(seed: u64, subdomain: &str, span: usize) -> [u8; 8] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.update(subdomain.as_bytes());
    hasher.update(&[0]);
    hasher.update(&span.to_le_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    key
}

/// The two entries of a span with figures sit half a cycle apart, so a
/// short walk states two facts once each rather than one twice. The
/// shuffle keys both copies alike; the second copies move to the second
/// half.
fn spread_repeats(cycle: &mut Vec<usize>) {
    let mut seen = HashSet::new();
    let (first, second): (Vec<usize>, Vec<usize>) = cycle.iter().partition(|&&i| seen.insert(i));
    *cycle = first.into_iter().chain(second).collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::knowledge::Chunk;

    fn knowledge(plan: &Plan, chunks: &[&str]) -> Knowledge {
        let id = |role: &str, i: usize| NodeId::new(format!("{role}{i}"));
        Knowledge {
            plan_node: NodeId::new("plan"),
            glossary: (0..plan.glossary.len()).map(|i| id("g", i)).collect(),
            scenarios: (0..plan.scenarios.len()).map(|i| id("s", i)).collect(),
            examples: (0..plan.expert_examples.len())
                .map(|i| id("e", i))
                .collect(),
            rules: (0..plan.rules.len()).map(|i| id("r", i)).collect(),
            chunks: chunks
                .iter()
                .enumerate()
                .map(|(i, text)| Chunk::new(id("c", i), "doc.md".into(), i, text.to_string()))
                .collect(),
        }
    }

    #[test]
    fn passages_are_sentences_with_figures_or_enough_words_at_their_offsets() {
        let text = "# Fees\nA **replacement** card costs $5 and\narrives in 3 days.\n\n\
                    - Short line.\n- Cards are blocked at once when you report them stolen.\n\n\
                    | Fee | $9 |\nÜber 2 Karten.";
        let spans = passages(&NodeId::new("c"), text, false);
        let shown: Vec<&str> = spans.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            shown,
            vec![
                "A replacement card costs $5 and arrives in 3 days.",
                "Cards are blocked at once when you report them stolen.",
                "Über 2 Karten.",
            ]
        );
        assert_eq!(
            spans.iter().map(|s| s.figures).collect::<Vec<_>>(),
            vec![true, false, true]
        );
        // Offsets are characters of the node's text, past the heading.
        let chars: Vec<char> = text.chars().collect();
        for span in &spans {
            let raw: String = chars[span.start..span.end].iter().collect();
            assert_eq!(clean(&raw), span.text, "{raw:?}");
        }
        assert!(
            passages(
                &NodeId::new("r"),
                "Never ask for a PIN or a password ever.",
                true
            )
            .is_empty()
        );
        assert_eq!(
            passages(&NodeId::new("r"), "Refunds take 14 days.", true).len(),
            1
        );
    }

    #[test]
    fn spans_go_to_the_subdomain_they_are_about_and_figures_come_twice() {
        let mut plan = crate::plan::fixtures::retail();
        plan.rules.clear();
        plan.expert_examples.clear();
        plan.glossary.truncate(1);
        let names: Vec<String> = plan.subdomains.iter().map(|d| d.name.clone()).collect();
        assert!(names.len() >= 2, "{names:?}");
        let about = |name: &str| {
            let d = plan.subdomains.iter().find(|d| d.name == name).unwrap();
            format!("{} {}", d.name, d.description)
        };
        let first = format!(
            "About {}: it takes 3 days to settle here.",
            about(&names[0])
        );
        let second = format!(
            "About {}: nothing more is said about that here.",
            about(&names[1])
        );
        let knowledge = knowledge(&plan, &[&first, &second]);
        let spans = FactSpans::new(&plan, &knowledge, &[]);
        let chunk_of = |subdomain: &str| -> Vec<Option<usize>> {
            spans.cycles[subdomain]
                .iter()
                .map(|&i| spans.spans[i].chunk)
                .filter(|c| c.is_some())
                .collect()
        };
        assert_eq!(chunk_of(&names[0]), vec![Some(0), Some(0)]);
        assert_eq!(chunk_of(&names[1]), vec![Some(1)]);
    }

    #[test]
    fn strata_of_a_subdomain_walk_every_span_between_them() {
        let mut plan = crate::plan::fixtures::retail();
        plan.glossary.clear();
        plan.rules.clear();
        plan.expert_examples.clear();
        plan.subdomains.truncate(1);
        plan.scenarios.clear();
        let sentences: Vec<String> = (0..10)
            .map(|i| format!("Rule number {i} of the bank says that something holds for {i} days."))
            .collect();
        let knowledge = knowledge(&plan, &[&sentences.join(" ")]);
        let spans = FactSpans::new(&plan, &knowledge, &[]);
        let subdomain = plan.subdomains[0].name.clone();
        // Four strata, five attempts each: twenty steps over a cycle of
        // twenty entries reach every span, each twice.
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for rank in 0..4 {
            for attempt in 0..5 {
                let span = spans.walk(&subdomain, rank, 4, attempt).unwrap();
                *seen.entry(span.text.clone()).or_default() += 1;
            }
        }
        assert_eq!(seen.len(), 10, "{seen:?}");
        assert!(seen.values().all(|&n| n == 2), "{seen:?}");
        // One stratum's first ten attempts state ten different facts.
        let first: HashSet<&str> = (0..10)
            .map(|a| spans.walk(&subdomain, 0, 1, a).unwrap().text.as_str())
            .collect();
        assert_eq!(first.len(), 10);
        assert!(spans.walk("no such subdomain", 0, 1, 0).is_none());
    }
}
