//! The support check (issue 23): an answer's figures (amounts, durations,
//! times, codes, numbered names) must come from the passages it was grounded
//! on, and from the passage about the same thing. The generator's model
//! cannot be trusted to grade this (it passes its own inventions), so the
//! check is model-free: facts are found with `seedling_common::facts`, and a
//! response sentence is matched to source sentences by shared content words,
//! weighted by how rare each word is among the sources.
//!
//! A figure fails as `unsupported_fact` when no source states it, or states
//! it only in a sentence about something else ("the tide gauge costs 4
//! crowns" where 4 crowns is the dog tag's price); as
//! `contradicts_reference` when the sentence about the same thing states
//! another figure of the same unit. Every supported figure is cited: the
//! source sentence that states it, with character offsets. An answer whose
//! "yes" is taken back by its next statement fails as `contradicts_itself`
//! (`polarity.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;
use seedling_common::facts::{
    Fact, facts, kinds_compatible, readings, sentence_ranges, stated_facts,
};
use seedling_common::work::{Citation, SupportSpec};

use super::heuristics::Rejection;
use super::polarity::yes_then_denies;

/// What the check found: the reasons it fails (none: it passes) and the
/// spans it rests on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Support {
    pub rejections: Vec<Rejection>,
    pub citations: Vec<Citation>,
}

/// A supporting sentence must score at least this share of the best-matching
/// sentence: two sentences about the same thing both pass, a sentence that
/// shares only "costs" and "crowns" with the answer does not.
const MIN_RELATIVE_MATCH: f64 = 0.5;

/// When the best-matching sentence states another figure of the same unit,
/// a supporting sentence must come this close to it, or the answer
/// contradicts the best one.
const MIN_RELATIVE_MATCH_AGAINST_CONFLICT: f64 = 0.75;

/// Below this many distinct content words the sources are a domain line
/// and little else: too little to demand that an answer borrow from them.
/// A plan with no rules, glossary, examples or documents would otherwise
/// have every answer rejected as ungrounded.
const MIN_SOURCE_VOCABULARY: usize = 25;

/// Words too common to say what a sentence is about (en, es, de), plus the
/// verbs of prices and rules that every sentence of a fee table shares.
const STOPWORDS: &[&str] = &[
    "the", "and", "for", "are", "but", "not", "you", "your", "yours", "with", "this", "that",
    "these", "those", "from", "have", "has", "had", "was", "were", "will", "would", "can", "could",
    "should", "may", "might", "must", "there", "their", "they", "them", "what", "when", "where",
    "which", "who", "whom", "why", "how", "does", "did", "doing", "done", "been", "being", "into",
    "onto", "about", "also", "than", "then", "only", "just", "any", "all", "each", "every", "some",
    "such", "our", "ours", "its", "his", "her", "she", "him", "one", "more", "most", "other",
    "very", "out", "get", "gets", "per", "after", "before", "over", "under", "again", "here",
    "need", "needs", "cost", "costs", "price", "yes", "please", "let", "know", "help", "like",
    "make", "sure", "well", "much", "many", "because", "if", // es
    "los", "las", "del", "una", "uno", "unos", "unas", "por", "para", "con", "sin", "que", "qué",
    "como", "cómo", "cuál", "cuando", "cuándo", "donde", "dónde", "este", "esta", "estos", "estas",
    "ese", "esa", "son", "está", "están", "ser", "hay", "tiene", "tienen", "puede", "pueden",
    "sus", "más", "muy", "pero", "porque", "también", "cuesta", "precio", "usted", "ustedes",
    "nos", "les", // de
    "der", "die", "das", "den", "dem", "des", "ein", "eine", "einen", "einem", "einer", "und",
    "oder", "aber", "nicht", "mit", "für", "von", "vom", "zum", "zur", "auf", "aus", "bei", "ist",
    "sind", "war", "wird", "werden", "kann", "können", "muss", "müssen", "wie", "was", "wann",
    "warum", "welche", "welcher", "sie", "ihr", "ihre", "ihren", "wir", "uns", "sich", "auch",
    "noch", "nur", "sehr", "kostet", "preis", "haben", "hat", "dass", "wenn",
];

/// Number words a source may spell out ("two crowns"), by language.
const NUMBER_WORDS: &[(&str, u32)] = &[
    ("zero", 0),
    ("one", 1),
    ("two", 2),
    ("three", 3),
    ("four", 4),
    ("five", 5),
    ("six", 6),
    ("seven", 7),
    ("eight", 8),
    ("nine", 9),
    ("ten", 10),
    ("eleven", 11),
    ("twelve", 12),
    ("fifteen", 15),
    ("twenty", 20),
    ("thirty", 30),
    ("forty", 40),
    ("fifty", 50),
    ("hundred", 100),
    ("cero", 0),
    ("dos", 2),
    ("tres", 3),
    ("cuatro", 4),
    ("cinco", 5),
    ("seis", 6),
    ("siete", 7),
    ("ocho", 8),
    ("nueve", 9),
    ("diez", 10),
    ("doce", 12),
    ("quince", 15),
    ("veinte", 20),
    ("treinta", 30),
    ("cuarenta", 40),
    ("cincuenta", 50),
    ("cien", 100),
    ("null", 0),
    ("zwei", 2),
    ("drei", 3),
    ("vier", 4),
    ("fünf", 5),
    ("sechs", 6),
    ("sieben", 7),
    ("acht", 8),
    ("neun", 9),
    ("zehn", 10),
    ("zwölf", 12),
    ("fünfzehn", 15),
    ("zwanzig", 20),
    ("dreißig", 30),
    ("vierzig", 40),
    ("fünfzig", 50),
    ("hundert", 100),
];

/// Words that turn a statement into its denial (en, es, de). "Without",
/// "sin" and "ohne" negate a phrase, not the statement: left out.
pub(super) const NEGATIONS: &[&str] = &[
    "not", "no", "never", "none", "nothing", "cannot", "nor", "neither", "nunca", "ninguno",
    "ninguna", "ningún", "jamás", "tampoco", "nada", "nicht", "kein", "keine", "keinen", "keiner",
    "keinem", "keines", "nie", "niemals", "nichts",
];

/// A sentence shares at least this many content words with a source
/// sentence, and this share of its own, before their polarity is compared:
/// only a restatement of the same claim can contradict it.
const POLARITY_MIN_SHARED: usize = 3;
const POLARITY_MIN_COVERAGE: f64 = 0.6;

pub(super) static WORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\p{L}+").expect("word pattern"));

/// One fact with the values it may read as.
#[derive(Debug, Clone)]
struct Figure {
    text: String,
    kind: String,
    readings: Vec<String>,
}

impl Figure {
    fn of(fact: Fact) -> Self {
        Self {
            readings: readings(&fact),
            text: fact.text,
            kind: fact.kind,
        }
    }

    fn states(&self, other: &Figure) -> bool {
        kinds_compatible(&self.kind, &other.kind)
            && self.readings.iter().any(|r| other.readings.contains(r))
    }

    /// A unit of its own: "crown", "day"; not a bare number or a name.
    fn has_unit(&self) -> bool {
        !matches!(self.kind.as_str(), "number" | "code" | "time")
            && !self.kind.starts_with("named:")
    }
}

/// A sentence of a source or of the response.
#[derive(Debug)]
struct Sentence {
    source: usize,
    /// Byte range in its text.
    start: usize,
    end: usize,
    figures: Vec<Figure>,
    words: HashSet<String>,
    /// Its clauses (split at commas, semicolons and conjunctions), each
    /// with its words, and for a clause with a negation the words after it:
    /// what the clause denies.
    clauses: Vec<Clause>,
}

#[derive(Debug)]
struct Clause {
    /// Byte range in the sentence's text.
    start: usize,
    end: usize,
    words: HashSet<String>,
    denied: Option<HashSet<String>>,
}

/// `text` with "n't" spelled "n not" ("doesn't" reads "doesn not"), so that
/// a contracted negation is a word of its own.
pub(super) fn spell_negations(text: &str) -> String {
    text.replace(['\u{2019}', '\''], "'")
        .replace("n't", "n not")
}

/// Words that join two clauses (en, es, de).
const CONJUNCTIONS: &[&str] = &[
    "and", "but", "so", "or", "while", "whereas", "y", "pero", "o", "mientras", "und", "aber",
    "oder", "während",
];

fn clauses(text: &str) -> Vec<Clause> {
    let mut bounds = vec![0];
    for (i, c) in text.char_indices() {
        if matches!(c, ',' | ';' | ':' | '(' | ')') {
            bounds.push(i);
        }
    }
    for w in WORD.find_iter(text) {
        if CONJUNCTIONS.contains(&w.as_str().to_lowercase().as_str()) {
            bounds.push(w.start());
        }
    }
    bounds.push(text.len());
    bounds.sort_unstable();
    bounds.dedup();
    bounds
        .windows(2)
        .map(|w| {
            let part = &text[w[0]..w[1]];
            let spelled = spell_negations(part);
            let mut denied: Option<HashSet<String>> = None;
            for word in WORD.find_iter(&spelled) {
                let lower = word.as_str().to_lowercase();
                if let Some(scope) = &mut denied {
                    scope.extend(content_words(&lower));
                } else if NEGATIONS.contains(&lower.as_str()) {
                    denied = Some(HashSet::new());
                }
            }
            Clause {
                start: w[0],
                end: w[1],
                words: content_words(part),
                denied,
            }
        })
        .collect()
}

/// Whether `sentence` denies something `other` speaks of: one of its clauses
/// is about what `other` is about (two shared words) and negates a word of it.
fn denies(sentence: &Sentence, other: &HashSet<String>) -> bool {
    sentence.clauses.iter().any(|clause| {
        clause.denied.as_ref().is_some_and(|scope| {
            clause.words.intersection(other).count() >= 2 && scope.iter().any(|w| other.contains(w))
        })
    })
}

/// The words that say what a text is about, lowercase, a plural's `s`
/// dropped so "bicycles" meets "bicycle".
fn content_words(text: &str) -> HashSet<String> {
    WORD.find_iter(text)
        .map(|w| w.as_str().to_lowercase())
        .filter(|w| w.chars().count() >= 3 && !STOPWORDS.contains(&w.as_str()))
        .map(|w| match w.strip_suffix('s') {
            Some(stem) if stem.chars().count() >= 4 => stem.to_string(),
            _ => w,
        })
        .collect()
}

/// The figures a text states, spelled-out numbers included when `spelled`.
fn figures(text: &str, spelled: bool) -> Vec<Figure> {
    let mut out: Vec<Figure> = stated_facts(text).into_iter().map(Figure::of).collect();
    if spelled {
        let words: Vec<_> = WORD.find_iter(text).collect();
        for (i, word) in words.iter().enumerate() {
            let lower = word.as_str().to_lowercase();
            if let Some((_, value)) = NUMBER_WORDS.iter().find(|(w, _)| *w == lower) {
                let unit = words
                    .get(i + 1)
                    .and_then(|next| facts(&format!("{value} {}", next.as_str())).pop())
                    .map_or_else(|| "number".to_string(), |f| f.kind);
                out.push(Figure {
                    text: word.as_str().to_string(),
                    kind: unit,
                    readings: vec![value.to_string()],
                });
            }
        }
    }
    out
}

fn sentences(source: usize, text: &str, spelled: bool) -> Vec<Sentence> {
    sentence_ranges(text)
        .into_iter()
        .map(|(start, end)| Sentence {
            source,
            start,
            end,
            figures: figures(&text[start..end], spelled),
            words: content_words(&text[start..end]),
            clauses: clauses(&text[start..end]),
        })
        .collect()
}

/// How much a source sentence is about what `words` are about: the summed
/// rarity of the words they share, and half that for words only the
/// question has (an answer leaves its subject to the question: "You get a
/// decision within 14 days").
fn overlap(
    words: &HashSet<String>,
    question: &HashSet<String>,
    sentence: &Sentence,
    idf: &HashMap<&str, f64>,
) -> f64 {
    let weight = |w: &String| idf.get(w.as_str()).copied().unwrap_or(0.0);
    let own: f64 = words.intersection(&sentence.words).map(weight).sum();
    let asked: f64 = question
        .difference(words)
        .filter(|w| sentence.words.contains(*w))
        .map(weight)
        .sum();
    own + 0.5 * asked
}

/// The words of the clause that states `figure`, its own unit words left
/// out (every price shares "euros"): what the figure is said about. The
/// whole sentence when the clause alone says too little.
fn topic_of(sentence: &Sentence, text: &str, figure: &Figure) -> HashSet<String> {
    let own = content_words(&figure.text);
    let clause = text.find(&figure.text).and_then(|at| {
        sentence
            .clauses
            .iter()
            .find(|c| c.start <= at && at < c.end)
    });
    let words =
        |set: &HashSet<String>| -> HashSet<String> { set.difference(&own).cloned().collect() };
    match clause.map(|c| words(&c.words)) {
        Some(topic) if topic.len() >= 2 => topic,
        _ => words(&sentence.words),
    }
}

/// Whether `sentence` makes the claim `source` makes (so that denying it
/// contradicts it): most of its words are the source's, and it states no
/// figure the source does not. "The overdraft fee is 35 dollars" shares
/// most words with "No overdraft fee is charged when ... 50 dollars or
/// less", but it is another claim (one a reviewer kept), not its denial.
fn restates(sentence: &Sentence, source: &Sentence) -> bool {
    let shared = sentence.words.intersection(&source.words).count();
    shared >= POLARITY_MIN_SHARED
        && shared as f64 >= POLARITY_MIN_COVERAGE * sentence.words.len() as f64
        && sentence
            .figures
            .iter()
            .all(|mine| source.figures.iter().any(|theirs| theirs.states(mine)))
}

/// A sentence as a rejection quotes it: trimmed, at most 160 characters.
pub(super) fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Adds `sentence` to the citations (once), with `fact` among what it states.
fn cite(cited: &mut Vec<Citation>, spec: &SupportSpec, sentence: &Sentence, fact: Option<&str>) {
    let text = &spec.sources[sentence.source];
    let start = text[..sentence.start].chars().count();
    let end = start + text[sentence.start..sentence.end].chars().count();
    let index = match cited
        .iter()
        .position(|c| c.source == sentence.source && c.start == start)
    {
        Some(i) => i,
        None => {
            cited.push(Citation {
                source: sentence.source,
                start,
                end,
                facts: Vec::new(),
            });
            cited.len() - 1
        }
    };
    if let Some(fact) = fact
        && !cited[index].facts.iter().any(|f| f == fact)
    {
        cited[index].facts.push(fact.to_string());
    }
}

/// Checks `response` (to `input`) against `spec`'s sources.
pub fn check_support(input: &str, response: &str, spec: &SupportSpec, substance: bool) -> Support {
    let mut support = Support::default();
    let sources: Vec<Sentence> = spec
        .sources
        .iter()
        .enumerate()
        .flat_map(|(i, text)| sentences(i, text, true))
        .collect();
    let mut df: HashMap<&str, usize> = HashMap::new();
    for sentence in &sources {
        for word in &sentence.words {
            *df.entry(word.as_str()).or_default() += 1;
        }
    }
    let n = sources.len().max(1) as f64;
    let idf: HashMap<&str, f64> = df
        .iter()
        .map(|(w, d)| (*w, (1.0 + n / *d as f64).ln()))
        .collect();
    let asked = figures(input, true);
    let question = content_words(input);
    let answer = sentences(usize::MAX, response, false);

    if let Some(phrase) = yes_then_denies(input, response) {
        support
            .rejections
            .push(Rejection::ContradictsItself { phrase });
    }
    let mut cited: Vec<Citation> = Vec::new();
    for sentence in &answer {
        let text = &response[sentence.start..sentence.end];
        let no_question = HashSet::new();
        let scores: Vec<f64> = sources
            .iter()
            .map(|s| overlap(&sentence.words, &no_question, s, &idf))
            .collect();
        let best = (0..sources.len()).max_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        if !spec.cross_language
            && let Some(best) = best
            && restates(sentence, &sources[best])
            && denies(sentence, &sources[best].words) != denies(&sources[best], &sentence.words)
        {
            let source = &sources[best];
            support.rejections.push(Rejection::ContradictsReference {
                phrase: excerpt(text),
                reference: excerpt(&spec.sources[source.source][source.start..source.end]),
            });
            continue;
        }
        if sentence.figures.is_empty() {
            // No figure to check: cite the passage the sentence is about,
            // when it shares at least two words with it.
            if let Some(best) = best
                && sources[best].words.intersection(&sentence.words).count() >= 2
            {
                cite(&mut cited, spec, &sources[best], None);
            }
            continue;
        }
        for figure in &sentence.figures {
            let topic = topic_of(sentence, text, figure);
            let scores: Vec<f64> = sources
                .iter()
                .map(|s| overlap(&topic, &question, s, &idf))
                .collect();
            let best = (0..sources.len()).max_by(|&a, &b| scores[a].total_cmp(&scores[b]));
            let stating = (0..sources.len())
                .filter(|&i| sources[i].figures.iter().any(|f| f.states(figure)))
                .max_by(|&a, &b| scores[a].total_cmp(&scores[b]));
            // What the person said themself may be repeated; cited when a
            // source states it too.
            if asked.iter().any(|a| a.states(figure)) {
                if let Some(stating) = stating.filter(|&i| scores[i] > 0.0) {
                    cite(&mut cited, spec, &sources[stating], Some(&figure.text));
                }
                continue;
            }
            let Some(stating) = stating else {
                support.rejections.push(Rejection::UnsupportedFact {
                    phrase: figure.text.clone(),
                });
                continue;
            };
            if !spec.cross_language
                && let Some(best) = best.filter(|&b| scores[b] > 0.0 && b != stating)
            {
                let ratio = scores[stating] / scores[best];
                // The passage about this thing gives another figure of the
                // same unit, which the answer does not also state: an
                // answer that gives both figures keeps them apart.
                let conflict = sources[best].figures.iter().find(|f| {
                    figure.has_unit()
                        && f.kind == figure.kind
                        && !answer
                            .iter()
                            .flat_map(|s| &s.figures)
                            .any(|mine| mine.states(f))
                });
                // A claim may rest on two neighbouring sentences.
                let neighbours =
                    sources[best].source == sources[stating].source && best.abs_diff(stating) == 1;
                if let Some(other) = conflict
                    && ratio < MIN_RELATIVE_MATCH_AGAINST_CONFLICT
                {
                    support.rejections.push(Rejection::ContradictsReference {
                        phrase: figure.text.clone(),
                        reference: other.text.clone(),
                    });
                    continue;
                }
                if ratio < MIN_RELATIVE_MATCH && !neighbours {
                    support.rejections.push(Rejection::UnsupportedFact {
                        phrase: figure.text.clone(),
                    });
                    continue;
                }
            }
            cite(&mut cited, spec, &sources[stating], Some(&figure.text));
        }
    }
    support.citations = cited;

    if substance {
        let asked_words = content_words(input);
        let new_words: HashSet<String> = content_words(response)
            .difference(&asked_words)
            .cloned()
            .collect();
        // A figure its sources state is substance, even in the question's words.
        let states_figures = support.citations.iter().any(|c| !c.facts.is_empty());
        if new_words.is_empty() && !states_figures {
            support.rejections.push(Rejection::NoSubstance {
                why: "it only restates the question".into(),
            });
        } else if !spec.cross_language
            && df.len() >= MIN_SOURCE_VOCABULARY
            && !states_figures
            && !new_words.iter().any(|w| df.contains_key(w.as_str()))
        {
            support.rejections.push(Rejection::NoSubstance {
                why: "no word of it comes from its sources".into(),
            });
        }
    }
    support
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ferry() -> SupportSpec {
        SupportSpec {
            sources: vec![
                "The crossing from Pellin Quay to Marrow Isle takes 35 minutes. A single ticket \
                 costs 7 crowns.\nChildren under six travel free."
                    .into(),
                "green tag: The tag a bicycle needs on board; it costs 2 crowns.".into(),
                "blue tag: The tag a dog needs on board; it costs 4 crowns.".into(),
                "tide gauge: The marker at Pellin Quay; below 40 centimetres every sailing is \
                 cancelled."
                    .into(),
            ],
            cross_language: false,
        }
    }

    fn reasons(support: &Support) -> Vec<String> {
        support
            .rejections
            .iter()
            .map(|r| {
                serde_json::to_value(r).unwrap()["reason"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn a_figure_its_sources_state_passes_and_is_cited() {
        let spec = ferry();
        let support = check_support(
            "What does a bike tag cost?",
            "A bicycle needs a green tag, which costs 2 crowns.",
            &spec,
            true,
        );
        assert!(support.rejections.is_empty(), "{:?}", support.rejections);
        assert_eq!(support.citations.len(), 1);
        let c = &support.citations[0];
        assert_eq!(c.source, 1);
        let span: String = spec.sources[1]
            .chars()
            .skip(c.start)
            .take(c.end - c.start)
            .collect();
        assert!(span.contains("2 crowns"), "{span}");
        assert_eq!(c.facts, vec!["2 crowns".to_string()]);
    }

    #[test]
    fn a_wrapped_paragraph_is_one_sentence_and_a_list_item_another() {
        let text = "The crossing from Pellin Quay\nto Marrow Isle takes 35 minutes.\n- Dogs ride free\n- Bikes pay";
        let spans: Vec<&str> = sentence_ranges(text)
            .into_iter()
            .map(|(a, b)| text[a..b].trim())
            .collect();
        assert_eq!(
            spans,
            vec![
                "The crossing from Pellin Quay\nto Marrow Isle takes 35 minutes.",
                "- Dogs ride free",
                "- Bikes pay"
            ]
        );
    }

    #[test]
    fn a_sentence_without_figures_cites_the_passage_it_is_about() {
        let spec = ferry();
        let support = check_support(
            "Can I take my dog?",
            "Yes, a dog needs a blue tag on board.",
            &spec,
            true,
        );
        assert!(support.rejections.is_empty(), "{:?}", support.rejections);
        assert_eq!(support.citations.len(), 1);
        assert_eq!(support.citations[0].source, 2);
        assert!(support.citations[0].facts.is_empty());
    }

    #[test]
    fn denying_what_a_source_states_contradicts_it() {
        let spec = SupportSpec {
            sources: vec![
                "Overdraft protection does not apply to card authorizations that exceed the \
                 daily limit."
                    .into(),
                "Never ask the customer for their full card number.".into(),
            ],
            cross_language: false,
        };
        let flipped = check_support(
            "Will overdraft protection cover it?",
            "Yes. Overdraft protection applies to card authorizations above the daily limit.",
            &spec,
            true,
        );
        assert_eq!(reasons(&flipped), vec!["contradicts_reference"]);
        let asks = check_support(
            "My card was declined.",
            "Please tell me your full card number so I can check.",
            &spec,
            true,
        );
        assert_eq!(reasons(&asks), vec!["contradicts_reference"]);
        let kept = check_support(
            "Will overdraft protection cover it?",
            "No. Overdraft protection doesn\u{2019}t apply to card authorizations above the daily \
             limit.",
            &spec,
            true,
        );
        assert!(kept.rejections.is_empty(), "{:?}", kept.rejections);
        // Another claim with its own figure, in the words of a denial: a
        // reviewer kept this answer, which the check used to reject.
        let fees = SupportSpec {
            sources: vec![
                "An overdraft costs 35 dollars, at most 3 times a day. No overdraft fee is \
                 charged when the account is overdrawn by 50 dollars or less at the end of the \
                 day."
                    .into(),
            ],
            cross_language: false,
        };
        let both = check_support(
            "What is the overdraft fee for this account?",
            "The overdraft fee for this account is 35 dollars at most 3 times a day. No overdraft \
             fee is charged when the account is overdrawn by 50 dollars or less at the end of the \
             day.",
            &fees,
            true,
        );
        assert!(both.rejections.is_empty(), "{:?}", both.rejections);
        // Denying the second claim, figure and all, still contradicts it.
        let denied = check_support(
            "What is the overdraft fee for this account?",
            "An overdraft fee is charged when the account is overdrawn by 50 dollars or less at \
             the end of the day.",
            &fees,
            true,
        );
        assert_eq!(reasons(&denied), vec!["contradicts_reference"]);
    }

    #[test]
    fn an_invented_figure_is_unsupported() {
        let support = check_support(
            "How long is the crossing?",
            "The crossing takes 50 minutes and leaves every hour.",
            &ferry(),
            true,
        );
        assert_eq!(reasons(&support), vec!["unsupported_fact"]);
    }

    #[test]
    fn a_figure_about_something_else_is_unsupported_or_contradicts() {
        // 4 crowns is the dog tag's price, not the gauge's.
        let gauge = check_support(
            "What does the tide gauge cost?",
            "The tide gauge costs 4 crowns.",
            &ferry(),
            true,
        );
        assert_eq!(reasons(&gauge), vec!["unsupported_fact"]);
        // The green tag's sentence says 2 crowns.
        let green = check_support(
            "What is the green tag for?",
            "The green tag for bicycles costs 4 crowns.",
            &ferry(),
            true,
        );
        assert_eq!(reasons(&green), vec!["contradicts_reference"]);
        let json = serde_json::to_value(&green.rejections[0]).unwrap();
        assert_eq!(json["phrase"], "4 crowns");
        assert_eq!(json["reference"], "2 crowns");
    }

    #[test]
    fn two_things_in_one_sentence_each_keep_their_figure() {
        let support = check_support(
            "What do the tags cost?",
            "A green tag for a bicycle costs 2 crowns and a blue tag for a dog costs 4 crowns.",
            &ferry(),
            true,
        );
        assert!(support.rejections.is_empty(), "{:?}", support.rejections);
        assert_eq!(support.citations.len(), 2);
    }

    #[test]
    fn spelled_numbers_figures_from_the_question_and_list_markers_pass() {
        let support = check_support(
            "I travel with my 3 kids, aged 4, 5 and 9. What do they pay?",
            "1. Children under 6 travel free.\n2. Your 9 year old pays like an adult.",
            &ferry(),
            true,
        );
        assert!(support.rejections.is_empty(), "{:?}", support.rejections);
    }

    #[test]
    fn an_answer_that_restates_the_question_has_no_substance() {
        let spec = SupportSpec {
            sources: vec![
                "A card declines when the daily limit of 500 euros is reached.".into(),
                "A new card arrives by post within 5 working days. The PIN letter follows \
                 separately two days later. Cards expire at the end of the month printed on \
                 the front; a replacement is sent automatically 6 weeks earlier."
                    .into(),
            ],
            cross_language: false,
        };
        let support = check_support(
            "Why did my card decline even when I have money in my account?",
            "Because you have money in your account.",
            &spec,
            true,
        );
        assert_eq!(reasons(&support), vec!["no_substance"]);
        let generic = check_support(
            "Why did my card decline?",
            "Sometimes banks decline payments for security reasons; contact support.",
            &spec,
            true,
        );
        assert_eq!(reasons(&generic), vec!["no_substance"]);
        let grounded = check_support(
            "Why did my card decline?",
            "You probably reached the daily limit of 500 euros.",
            &spec,
            true,
        );
        assert!(grounded.rejections.is_empty(), "{:?}", grounded.rejections);
    }

    #[test]
    fn a_domain_line_alone_is_too_little_to_demand_borrowed_words() {
        let spec = SupportSpec {
            sources: vec!["lab: A clinical laboratory's front desk.".into()],
            cross_language: false,
        };
        let support = check_support(
            "How should a nurse label a blood sample?",
            "Write the patient's full name and birth date on the tube before drawing.",
            &spec,
            true,
        );
        assert!(support.rejections.is_empty(), "{:?}", support.rejections);
        let restated = check_support(
            "How should a nurse label a blood sample?",
            "A nurse should label a blood sample.",
            &spec,
            true,
        );
        assert_eq!(reasons(&restated), vec!["no_substance"]);
    }

    #[test]
    fn spanish_and_german_figures_are_checked_too() {
        let spec = SupportSpec {
            sources: vec![
                "La tarjeta verde cuesta 2 coronas. Die Überfahrt dauert 35 Minuten.".into(),
            ],
            cross_language: false,
        };
        let ok = check_support(
            "¿Cuánto cuesta?",
            "La tarjeta verde cuesta 2 coronas.",
            &spec,
            true,
        );
        assert!(ok.rejections.is_empty(), "{:?}", ok.rejections);
        let wrong = check_support(
            "Wie lange?",
            "Die Überfahrt dauert 45 Minuten.",
            &spec,
            true,
        );
        assert_eq!(reasons(&wrong), vec!["unsupported_fact"]);
    }

    #[test]
    fn a_translation_keeps_its_figures_across_languages() {
        let spec = SupportSpec {
            sources: vec!["A day pass costs 18 crowns.".into()],
            cross_language: true,
        };
        let kept = check_support(
            "¿Cuánto cuesta?",
            "Un pase diario cuesta 18 coronas.",
            &spec,
            true,
        );
        assert!(kept.rejections.is_empty(), "{:?}", kept.rejections);
        let changed = check_support(
            "¿Cuánto cuesta?",
            "Un pase diario cuesta 16 coronas.",
            &spec,
            true,
        );
        assert_eq!(reasons(&changed), vec!["unsupported_fact"]);
    }
}
