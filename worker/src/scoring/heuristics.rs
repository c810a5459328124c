//! Model-free checks of an instruction/response pair. Each returns the
//! reasons it fails; an empty list passes. Cheap enough to run on every
//! response before the judge, and specific enough that `lineage show` can say
//! why a record was dropped.

use std::collections::HashSet;

use serde::Serialize;

use super::language::{cjk_share, detect_language, language_uses_cjk};

/// Why a pair fails a heuristic check.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Rejection {
    TooShort {
        chars: usize,
        min: usize,
    },
    TooLong {
        chars: usize,
        max: usize,
    },
    Repetitive {
        repeated_trigram_share: f64,
        max: f64,
    },
    Refusal {
        phrase: String,
    },
    CopiesInput {
        copied_share: f64,
        max: f64,
    },
    UnclosedCodeFence,
    MissingRequiredTerm {
        rule: usize,
        term: String,
    },
    ForbiddenTerm {
        rule: usize,
        term: String,
    },
    ForbiddenPattern {
        rule: usize,
        matched: String,
    },
    WrongLanguage {
        expected: String,
        detected: String,
    },
    MixedScript {
        cjk_share: f64,
    },
    /// A figure no source states, or states only about something else.
    UnsupportedFact {
        phrase: String,
    },
    /// A figure where the passage about the same thing states another.
    ContradictsReference {
        phrase: String,
        reference: String,
    },
    /// The answer adds nothing: it restates the question, or carries no
    /// content word from its sources.
    NoSubstance {
        why: String,
    },
    /// The answer says "yes", then denies what was asked.
    ContradictsItself {
        phrase: String,
    },
}

/// A business rule in checkable form.
#[derive(Debug, Clone)]
pub struct RuleCheck {
    pub must_contain: Vec<String>,
    pub must_not_contain: Vec<String>,
    pub forbidden: Option<regex::Regex>,
}

/// Thresholds of the heuristic checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    pub min_chars: usize,
    pub max_chars: usize,
    /// Largest share of word trigrams that may repeat an earlier one.
    pub max_repeated_trigrams: f64,
    /// Largest share of the input's word trigrams the response may copy.
    pub max_copied_input: f64,
    /// CJK letters tolerated in a non-CJK language (names, a quoted term).
    pub max_cjk_share: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_chars: 20,
            max_chars: 8000,
            max_repeated_trigrams: 0.3,
            max_copied_input: 0.8,
            max_cjk_share: 0.02,
        }
    }
}

/// Phrases of a refusal, lowercase. Empathy ("I'm sorry to hear that")
/// is not a refusal: support answers open with it all the time.
const REFUSALS: &[&str] = &[
    "i'm sorry, but",
    "i am sorry, but",
    "sorry, but i",
    "sorry, i can't",
    "sorry, i cannot",
    "i apologize, but",
    "i cannot help",
    "i can't help",
    "i cannot assist",
    "i can't assist",
    "i cannot provide",
    "i can't provide",
    "i'm unable to",
    "i am unable to",
    "i'm not able to",
    "i don't have the capability",
    "as an ai",
    "as a language model",
    "lo siento, pero",
    "lo siento, no puedo",
    "no puedo ayudar",
    "como modelo de lenguaje",
    "je suis désolé, mais",
    "es tut mir leid, aber",
];

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn trigrams(words: &[String]) -> Vec<[&str; 3]> {
    words
        .windows(3)
        .map(|w| [w[0].as_str(), w[1].as_str(), w[2].as_str()])
        .collect()
}

/// Share of word trigrams that repeat an earlier trigram of the same text.
pub fn repeated_trigram_share(text: &str) -> f64 {
    let words = words(text);
    let grams = trigrams(&words);
    if grams.is_empty() {
        return 0.0;
    }
    let distinct: HashSet<&[&str; 3]> = grams.iter().collect();
    1.0 - distinct.len() as f64 / grams.len() as f64
}

/// The refusal phrase a text contains, if any.
pub fn refusal_phrase(text: &str) -> Option<&'static str> {
    let lower = text.to_lowercase();
    REFUSALS
        .iter()
        .copied()
        .find(|phrase| lower.contains(phrase))
}

/// Share of the input's word trigrams that reappear in the response.
pub fn copied_input_share(input: &str, response: &str) -> f64 {
    let input_words = words(input);
    let (copied, of) = copied_trigrams(&trigrams(&input_words), response);
    if of < 3 {
        return 0.0; // too short to say anything
    }
    copied as f64 / of as f64
}

/// How many of `grams` `source` holds, and of how many.
fn copied_trigrams(grams: &[[&str; 3]], source: &str) -> (usize, usize) {
    let source_words = words(source);
    let source_grams: HashSet<[&str; 3]> = trigrams(&source_words).into_iter().collect();
    let copied = grams.iter().filter(|g| source_grams.contains(*g)).count();
    (copied, grams.len())
}

/// Least word trigrams copied that make a question a copy of its passage
/// (a run of 12 words): a question may repeat a document's own heading
/// ("How long does an ACH transfer take?") or an expert example's question.
/// In the demo run of 2026-12-07 every input over it was a passage with a
/// question mark or a "Why is this so?" after it.
const MIN_COPIED_TRIGRAMS_OF_A_QUESTION: usize = 10;

/// The share of `input`'s word trigrams that one of `sources` holds, when
/// it is a copy of that passage rather than a request about it. The small
/// model, asked to question a glossary entry, often returns the entry, and
/// the answer can only repeat it. A statement is a copy from `max_share`; a
/// question only when it also copies a long run of words.
pub fn copies_a_source(input: &str, sources: &[String], max_share: f64) -> Option<f64> {
    let asks = input.contains(['?', '\u{bf}']);
    let input_words = words(input);
    let grams = trigrams(&input_words);
    sources
        .iter()
        .map(|source| copied_trigrams(&grams, source))
        .filter(|&(copied, of)| of >= 3 && (!asks || copied >= MIN_COPIED_TRIGRAMS_OF_A_QUESTION))
        .map(|(copied, of)| copied as f64 / of as f64)
        .filter(|&share| share >= max_share)
        .reduce(f64::max)
}

/// A template placeholder left in a text (`[Customer Name]`, `[Your Bank]`).
pub fn placeholder(text: &str) -> Option<String> {
    static PATTERN: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        regex::Regex::new(r"\[(?:[A-Z][\w'’]*|[a-z]+_[a-z_]+)(?:[ _'’][\w'’]+){0,4}\]")
            .expect("valid pattern")
    });
    pattern.find(text).map(|m| m.as_str().to_string())
}

/// A text that speaks of the material its prompt carried ("according to
/// the reference", "the passage states", "this point of the reference"):
/// the customer never saw it, so the record teaches a model to cite
/// documents nobody gave it. Every such answer in the reviewed demo run was
/// rejected by the reviewer (7 of 55 records). A payment's "reference
/// number" is not the prompt's reference.
pub fn cites_the_prompt(text: &str) -> Option<String> {
    /// Words after "the reference" that make it a payment's reference.
    const PAYMENT_REFERENCE_WORDS: &[&str] = &[
        "number", "code", "id", "field", "line", "box", "nummer", "número", "numero",
    ];
    static PATTERN: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        regex::Regex::new(
            r"(?xi)
            \b(?:according\ to|as\ (?:stated|specified|mentioned|described|given)\ in|specified\ in
                |based\ on|from|in|on|see)\ the\ (?:reference|passage|provided\ (?:text|context|passage|document)s?
                |given\ (?:text|context|passage)s?)\b
            | \bthe\ (?:reference|passage)\ (?:states|says|mentions|notes|specifies|indicates|above)\b
            | \b(?:this|that)\ point\ of\ the\ reference\b
            | \bsegún\ (?:la\ referencia|el\ pasaje|el\ texto\ proporcionado|el\ documento\ proporcionado)
            | \bla\ referencia\ (?:indica|dice|menciona|establece|señala)\b
            | \b(?:laut|gemäß)\ (?:der\ referenz|dem\ abschnitt|dem\ bereitgestellten\ text)
            | \bdie\ referenz\ (?:besagt|sagt|nennt|gibt\ an)\b",
        )
        .expect("valid pattern")
    });
    pattern
        .find_iter(text)
        .find(|m| {
            let next = text[m.end()..]
                .split_whitespace()
                .next()
                .unwrap_or_default();
            !PAYMENT_REFERENCE_WORDS
                .iter()
                .any(|w| next.to_lowercase().starts_with(w))
        })
        .map(|m| m.as_str().to_string())
}

/// Phrases of an assistant, lowercase: an input (the user's message) that
/// contains them was written from the wrong side of the conversation.
const ASSISTANT_PHRASES: &[&str] = &[
    "how can i help you",
    "how can i assist you",
    "how may i help",
    "how may i assist",
    "i'm here to help",
    "i am here to help",
    "i'm here to assist",
    "i am here to assist",
    "feel free to ask",
    "thank you for reaching out",
    "thank you for contacting",
    "i hope this message finds you well",
    // openers of a reply to someone else's problem
    "it sounds like you're",
    "it sounds like you are",
    "i'm sorry to hear that",
    "i am sorry to hear that",
    "¿en qué puedo ayudarle",
    "¿en qué puedo ayudarte",
    "estoy aquí para ayudar",
    "wie kann ich ihnen helfen",
    "wie kann ich dir helfen",
    "ich helfe ihnen gerne",
    "ich bin hier, um zu helfen",
    "comment puis-je vous aider",
    "comment puis-je t'aider",
    "je suis là pour vous aider",
    "come posso aiutarti",
    "come posso aiutarla",
    "como posso ajudar",
];

/// Word stems (the first four letters of words of four or more) of a text,
/// lowercase. Crude on purpose: it only has to say whether two texts share
/// any vocabulary at all.
fn stems(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphabetic())
        .filter(|w| w.chars().count() >= 4 && !w.chars().any(unspaced_script))
        .map(|w| w.to_lowercase().chars().take(4).collect::<String>())
        .filter(|stem| !FUNCTION_STEMS.contains(&stem.as_str()))
        .collect()
}

/// Stems of the commonest function words of the languages plans use most:
/// sharing only "eine" or "with" says nothing about the topic.
const FUNCTION_STEMS: &[&str] = &[
    "that", "this", "with", "your", "have", "from", "what", "when", "will", "woul", "they", "ther",
    "thei", "been", "were", "abou", "whic", "some", "into", "also", "just", "more", "than", "then",
    "eine", "nich", "sind", "oder", "aber", "wenn", "dass", "wird", "werd", "sich", "auch", "noch",
    "nach", "mein", "ihre", "sein", "kann", "habe", "para", "como", "pero", "esta", "este", "sobr",
    "pour", "dans", "avec", "vous", "nous", "sont", "mais", "cett", "plus",
];

/// Scripts written without spaces between words (Han, kana, Hangul, Thai,
/// Lao, Myanmar, Khmer): there a "word" is a phrase and its stem means
/// nothing, so such words are left out.
fn unspaced_script(c: char) -> bool {
    matches!(c,
        '\u{0E00}'..='\u{0EFF}' | '\u{1000}'..='\u{109F}' | '\u{1780}'..='\u{17FF}'
        | '\u{2E80}'..='\u{9FFF}' | '\u{AC00}'..='\u{D7AF}' | '\u{F900}'..='\u{FAFF}')
}

/// True when a response shares not one word stem with a request of several:
/// an answer to something else (seen from the small model: a question about
/// a compost bin answered with a riddle about a blacksmith). Requests meant
/// to be declined (adversarial units) are not asked this: "I can only help
/// with banking" rightly shares nothing with an off-scope question.
pub fn off_topic(input: &str, response: &str) -> bool {
    let asked = stems(input);
    let answered = stems(response);
    asked.len() >= 3 && answered.len() >= 3 && asked.is_disjoint(&answered)
}

/// The assistant phrase an input contains, if any.
pub fn assistant_phrase(input: &str) -> Option<&'static str> {
    let lower = input.to_lowercase();
    ASSISTANT_PHRASES
        .iter()
        .copied()
        .find(|p| lower.contains(p))
}

/// Every heuristic reason to reject `response` to `input`.
pub fn check_pair(
    input: &str,
    response: &str,
    expected_language: Option<&str>,
    rules: &[RuleCheck],
    thresholds: &Thresholds,
) -> Vec<Rejection> {
    let mut out = Vec::new();
    let chars = response.trim().chars().count();
    if chars < thresholds.min_chars {
        out.push(Rejection::TooShort {
            chars,
            min: thresholds.min_chars,
        });
    }
    if chars > thresholds.max_chars {
        out.push(Rejection::TooLong {
            chars,
            max: thresholds.max_chars,
        });
    }
    let repeated = repeated_trigram_share(response);
    if repeated > thresholds.max_repeated_trigrams {
        out.push(Rejection::Repetitive {
            repeated_trigram_share: repeated,
            max: thresholds.max_repeated_trigrams,
        });
    }
    if let Some(phrase) = refusal_phrase(response) {
        out.push(Rejection::Refusal {
            phrase: phrase.to_string(),
        });
    }
    let copied = copied_input_share(input, response);
    if copied > thresholds.max_copied_input {
        out.push(Rejection::CopiesInput {
            copied_share: copied,
            max: thresholds.max_copied_input,
        });
    }
    if response.matches("```").count() % 2 == 1 {
        out.push(Rejection::UnclosedCodeFence);
    }
    let lower = response.to_lowercase();
    for (rule, check) in rules.iter().enumerate() {
        for term in &check.must_contain {
            if !lower.contains(&term.to_lowercase()) {
                out.push(Rejection::MissingRequiredTerm {
                    rule,
                    term: term.clone(),
                });
            }
        }
        for term in &check.must_not_contain {
            if lower.contains(&term.to_lowercase()) {
                out.push(Rejection::ForbiddenTerm {
                    rule,
                    term: term.clone(),
                });
            }
        }
        if let Some(found) = check.forbidden.as_ref().and_then(|re| re.find(response)) {
            out.push(Rejection::ForbiddenPattern {
                rule,
                matched: found.as_str().to_string(),
            });
        }
    }
    if let Some(expected) = expected_language {
        let share = cjk_share(response);
        if !language_uses_cjk(expected) && share > thresholds.max_cjk_share {
            out.push(Rejection::MixedScript { cjk_share: share });
        } else if let Some(detected) = detect_language(response)
            && detected != expected
            && chars >= thresholds.min_chars
        {
            out.push(Rejection::WrongLanguage {
                expected: expected.to_string(),
                detected: detected.to_string(),
            });
        }
    }
    out
}

/// A model-free quality estimate in [0, 1] of a pair that passed the checks:
/// 0.4 for little repetition, 0.3 for substance (full at 300 characters),
/// 0.3 for saying something of its own rather than echoing the input. It
/// stands in for `quality_score` until a judge scores the pair.
pub fn heuristic_score(input: &str, response: &str, thresholds: &Thresholds) -> f64 {
    let repetition =
        1.0 - (repeated_trigram_share(response) / thresholds.max_repeated_trigrams).min(1.0);
    let substance = (response.trim().chars().count() as f64 / 300.0).min(1.0);
    let originality =
        1.0 - (copied_input_share(input, response) / thresholds.max_copied_input).min(1.0);
    let score = 0.4 * repetition + 0.3 * substance + 0.3 * originality;
    (score * 1000.0).round() / 1000.0
}

/// Words Evol-Instruct's rewriting prompt uses; an evolved instruction that
/// contains them copied the prompt instead of rewriting.
const EVOL_PROMPT_WORDS: &[&str] = &[
    "#rewritten prompt#",
    "#given prompt#",
    "rewritten prompt",
    "given prompt",
];

/// Why an Evol-Instruct evolution is eliminated (the paper's filter).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum EvolutionFailure {
    /// The evolved instruction says nothing the original did not.
    NoInformationGain { word_overlap: f64 },
    /// Its response apologises and is short: the evolution was unanswerable.
    SorryAndShort,
    /// It copied words of the rewriting prompt.
    CopiedPromptWords { words: String },
}

/// The elimination filter of Evol-Instruct, applied to one evolution.
pub fn evolution_failures(
    original: &str,
    evolved: &str,
    evolved_response: &str,
) -> Vec<EvolutionFailure> {
    let mut out = Vec::new();
    let a: HashSet<String> = words(original).into_iter().collect();
    let b: HashSet<String> = words(evolved).into_iter().collect();
    let union = a.union(&b).count().max(1);
    let overlap = a.intersection(&b).count() as f64 / union as f64;
    if overlap >= 0.9 {
        out.push(EvolutionFailure::NoInformationGain {
            word_overlap: overlap,
        });
    }
    if evolved_response.to_lowercase().contains("sorry") && evolved_response.chars().count() < 80 {
        out.push(EvolutionFailure::SorryAndShort);
    }
    let lower = evolved.to_lowercase();
    if let Some(words) = EVOL_PROMPT_WORDS.iter().find(|w| lower.contains(*w)) {
        out.push(EvolutionFailure::CopiedPromptWords {
            words: words.to_string(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUESTION: &str =
        "Why was my card declined at the gas station when my balance is positive?";
    const GOOD: &str = "Gas stations often place an authorization hold that is larger than the \
        purchase itself. Your available balance subtracts pending holds, so it can be lower than \
        the balance you see. The hold usually drops off within a few days.";

    fn check(response: &str) -> Vec<Rejection> {
        check_pair(QUESTION, response, Some("en"), &[], &Thresholds::default())
    }

    #[test]
    fn texts_that_speak_of_their_prompt_are_found_and_payment_references_are_not() {
        for (text, found) in [
            (
                "According to the reference, the balance is declining.",
                Some("According to the reference"),
            ),
            (
                "You must follow the rules specified in the reference.",
                Some("specified in the reference"),
            ),
            (
                "The reference states: a new card arrives within 7 days.",
                Some("The reference states"),
            ),
            (
                "Contact customer support for this point of the reference.",
                Some("this point of the reference"),
            ),
            (
                "Según la referencia, la tarifa es de 25 dólares.",
                Some("Según la referencia"),
            ),
            (
                "Laut der Referenz kostet die Überweisung 25 Dollar.",
                Some("Laut der Referenz"),
            ),
            ("Put the invoice in the reference number field.", None),
            ("Quote the reference on the transfer.", None),
            ("Type the invoice number in the reference field.", None),
            (
                "A new debit card arrives within 7 to 10 business days.",
                None,
            ),
        ] {
            assert_eq!(cites_the_prompt(text).as_deref(), found, "{text}");
        }
    }

    #[test]
    fn a_good_answer_passes() {
        assert_eq!(check(GOOD), vec![]);
    }

    #[test]
    fn length_bounds() {
        assert!(matches!(
            check("Holds.")[..],
            [Rejection::TooShort { .. }, ..]
        ));
        let thresholds = Thresholds {
            max_chars: 100,
            ..Thresholds::default()
        };
        let long = check_pair(QUESTION, GOOD, None, &[], &thresholds);
        assert!(matches!(long[..], [Rejection::TooLong { .. }]), "{long:?}");
    }

    #[test]
    fn repetition() {
        let looping = "The hold is on your card. The hold is on your card. The hold is on your card. \
            The hold is on your card. The hold is on your card.";
        assert!(repeated_trigram_share(looping) > 0.5);
        assert!(
            check(looping)
                .iter()
                .any(|r| matches!(r, Rejection::Repetitive { .. }))
        );
        assert!(repeated_trigram_share(GOOD) < 0.1);
    }

    #[test]
    fn refusals_and_apologies() {
        let refusal = "I'm sorry, but I cannot help with questions about your bank account.";
        assert_eq!(refusal_phrase(refusal), Some("i'm sorry, but"));
        assert!(
            check(refusal)
                .iter()
                .any(|r| matches!(r, Rejection::Refusal { .. }))
        );
        assert_eq!(
            refusal_phrase("Lo siento, no puedo ayudarle con eso."),
            Some("lo siento, no puedo")
        );
        // empathy is not a refusal
        assert_eq!(
            refusal_phrase("I'm sorry to hear your card was declined. A hold may be the cause."),
            None
        );
        // a response that merely mentions sorry in another sense is not a refusal phrase
        assert_eq!(refusal_phrase(GOOD), None);
    }

    #[test]
    fn copied_input() {
        let parrot = format!("{QUESTION} {QUESTION}");
        assert!(copied_input_share(QUESTION, &parrot) > 0.99);
        assert!(
            check(&parrot)
                .iter()
                .any(|r| matches!(r, Rejection::CopiesInput { .. }))
        );
        assert!(copied_input_share(QUESTION, GOOD) < 0.2);
    }

    #[test]
    fn unclosed_code_fence() {
        let broken = "Run this in the app console:\n```\nshow holds --card 1\n";
        assert!(check(broken).contains(&Rejection::UnclosedCodeFence));
        let closed = "Run this in the app console:\n```\nshow holds --card 1\n```\nThen retry.";
        assert!(!check(closed).contains(&Rejection::UnclosedCodeFence));
    }

    #[test]
    fn business_rules() {
        let rules = vec![RuleCheck {
            must_contain: vec!["available balance".into()],
            must_not_contain: vec!["tell me your PIN".into()],
            forbidden: Some(regex::Regex::new(r"\b\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}\b").unwrap()),
        }];
        let ok = check_pair(QUESTION, GOOD, Some("en"), &rules, &Thresholds::default());
        assert_eq!(ok, vec![]);
        let bad = "Please tell me your PIN and the card number 4111 1111 1111 1111 so I can check the hold.";
        let found = check_pair(QUESTION, bad, Some("en"), &rules, &Thresholds::default());
        assert!(found.contains(&Rejection::MissingRequiredTerm {
            rule: 0,
            term: "available balance".into()
        }));
        assert!(found.contains(&Rejection::ForbiddenTerm {
            rule: 0,
            term: "tell me your PIN".into()
        }));
        assert!(found.contains(&Rejection::ForbiddenPattern {
            rule: 0,
            matched: "4111 1111 1111 1111".into()
        }));
    }

    #[test]
    fn wrong_language_and_mixed_script() {
        let spanish = "Las gasolineras suelen aplicar una retención mayor que la compra. Su saldo \
            disponible resta las retenciones pendientes.";
        let found = check(spanish);
        assert!(
            found.contains(&Rejection::WrongLanguage {
                expected: "en".into(),
                detected: "es".into()
            }),
            "{found:?}"
        );
        let drifted =
            "Gas stations place an authorization hold. 预授权会减少您的可用余额，通常几天后释放。";
        assert!(
            check(drifted)
                .iter()
                .any(|r| matches!(r, Rejection::MixedScript { .. }))
        );
        // the same Chinese text is fine in a Chinese plan
        let chinese = "加油站通常会预授权一笔比实际消费更大的金额，这会减少您的可用余额。";
        assert_eq!(
            check_pair(
                "为什么我的卡被拒绝？",
                chinese,
                Some("zh"),
                &[],
                &Thresholds {
                    min_chars: 5,
                    ..Thresholds::default()
                }
            ),
            vec![]
        );
    }

    #[test]
    fn evol_instruct_elimination() {
        let original = "How do I dispute a card transaction?";
        let same = "How do I dispute a card transaction?";
        assert!(matches!(
            evolution_failures(original, same, GOOD)[..],
            [EvolutionFailure::NoInformationGain { .. }]
        ));
        let deeper = "How do I dispute a foreign card transaction that was charged twice, and how long will the provisional credit take?";
        assert_eq!(evolution_failures(original, deeper, GOOD), vec![]);
        assert!(
            evolution_failures(original, deeper, "Sorry, I can't answer that.")
                .contains(&EvolutionFailure::SorryAndShort)
        );
        let copied = "#Rewritten Prompt#: How do I dispute a card transaction in detail?";
        assert!(
            evolution_failures(original, copied, GOOD)
                .iter()
                .any(|f| matches!(f, EvolutionFailure::CopiedPromptWords { .. }))
        );
    }

    #[test]
    fn heuristic_score_ranks_substance_over_echo_and_repetition() {
        let thresholds = Thresholds::default();
        let good = heuristic_score(QUESTION, GOOD, &thresholds);
        let echo = heuristic_score(QUESTION, &format!("{QUESTION} {QUESTION}"), &thresholds);
        let repetitive = heuristic_score(
            QUESTION,
            &"the hold is pending and the hold is pending ".repeat(8),
            &thresholds,
        );
        assert!(good > 0.8, "{good}");
        assert!(
            echo < good && repetitive < good,
            "{echo} {repetitive} {good}"
        );
        assert!((0.0..=1.0).contains(&echo) && (0.0..=1.0).contains(&repetitive));
    }

    #[test]
    fn placeholders_and_assistant_voice() {
        assert_eq!(
            placeholder("Dear [Customer Name], hello").as_deref(),
            Some("[Customer Name]")
        );
        assert_eq!(
            placeholder("Hi [small_business_owner's name]!").as_deref(),
            Some("[small_business_owner's name]")
        );
        assert_eq!(placeholder("See note [1] and the list [a, b]."), None);
        assert_eq!(placeholder(GOOD), None);
        assert_eq!(
            assistant_phrase("Hello! How can I help you today?"),
            Some("how can i help you")
        );
        assert_eq!(assistant_phrase(QUESTION), None);
    }
}
