//! The answer against its own "yes" (issue 23). "Do I need a building
//! permit for a garden shed under 15 square metres?" answered "Yes, a garden
//! shed under 15 square metres does not require a building permit" states
//! the right fact and the wrong answer: a model trained on it learns that
//! "yes" and "no" mean nothing. The support check compares the answer with
//! its sources; this compares the answer's opening "yes" with the statement
//! right after it. Model-free, like the support check, because the
//! generator's model writes these slips and reads past them. "Free" takes
//! back a "yes" to "Do I have to pay?" as a negation would.
//!
//! It is built for precision: it speaks only when the statement after the
//! "yes" denies the very thing the question asks about, and stays silent
//! on questions about an absence ("without", "free", "exempt"), on
//! qualifications ("Yes, as long as it has not been sent"), on contrasts
//! ("Yes, but not in cash") and on double negations ("you cannot open one
//! without ID").

use std::collections::HashSet;

use seedling_common::facts::sentence_ranges;

use super::support::{NEGATIONS, WORD, excerpt, spell_negations};

/// Words that open an answer with "yes" (en, es, de). Spanish "si" without
/// its accent means "if" and is left out.
const YES: &[&str] = &["yes", "yeah", "yep", "sí", "ja"];

/// Beginnings of words that make a question ask about an absence or a
/// prohibition: "Can I park without a permit?" is rightly answered "Yes,
/// no permit is needed".
const ABSENCE: &[&str] = &[
    "without",
    "free",
    "exempt",
    "waive",
    "forbid",
    "prohibit",
    "banned",
    "illegal",
    "avoid",
    "refus",
    "denied",
    "deny",
    "declin",
    "block",
    "unless",
    "except",
    "skip",
    "sin",
    "gratis",
    "exent",
    "prohibid",
    "ohne",
    "frei",
    "kostenlos",
    "verbot",
    "befreit",
];

/// Words that open a clause subordinate to the "yes", or a contrast with
/// it: a denial after them qualifies the yes instead of taking it back.
const QUALIFIERS: &[&str] = &[
    "but", "however", "although", "though", "that", "which", "who", "whose", "whom", "if", "when",
    "whenever", "unless", "until", "while", "as", "since", "because", "once", "where", "provided",
    "only", "except", "pero", "aunque", "que", "si", "cuando", "mientras", "donde", "sino", "solo",
    "aber", "dass", "wenn", "falls", "weil", "ob", "solange", "sofern", "sondern", "nur",
];

/// Words after a negation that negate it in turn, or bound it in time:
/// "you cannot open one without ID", "it does not leave before 10:00".
const COUNTER_NEGATIONS: &[&str] = &[
    "without", "unless", "until", "except", "before", "sin", "hasta", "antes", "menos", "ohne",
    "bis", "außer", "bevor", "vor",
];

/// Words between a negation and what it denies: "does not *have to* pay",
/// "there is no *longer a* fee".
const FILLERS: &[&str] = &[
    "a",
    "an",
    "the",
    "any",
    "be",
    "been",
    "being",
    "is",
    "are",
    "to",
    "have",
    "has",
    "do",
    "does",
    "it",
    "you",
    "longer",
    "always",
    "really",
    "even",
    "yet",
    "usually",
    "necessarily",
    "ever",
    "actually",
    "also",
    "just",
    "se",
    "le",
    "lo",
    "la",
    "el",
    "un",
    "una",
    "es",
    "hay",
    "te",
    "ein",
    "eine",
    "einen",
    "zu",
    "sie",
    "man",
];

/// Words of need and of leave: "need" in a question and "require" after the
/// answer's negation ask and deny the same thing.
const MODALITIES: &[&[&str]] = &[
    &[
        "need",
        "needs",
        "needed",
        "require",
        "requires",
        "required",
        "necessary",
        "must",
        "mandatory",
        "compulsory",
        "obligatory",
        "necesito",
        "necesita",
        "necesitas",
        "necesitan",
        "necesario",
        "necesaria",
        "requiere",
        "obligatorio",
        "brauche",
        "braucht",
        "brauchen",
        "benötige",
        "benötigt",
        "erforderlich",
        "nötig",
        "notwendig",
        "muss",
    ],
    &[
        "can",
        "may",
        "allowed",
        "permitted",
        "possible",
        "able",
        "puedo",
        "puede",
        "puedes",
        "permitido",
        "posible",
        "darf",
        "kann",
        "erlaubt",
        "möglich",
    ],
    &[
        "pay",
        "pays",
        "paid",
        "paying",
        "payable",
        "fee",
        "fees",
        "cost",
        "costs",
        "charge",
        "charges",
        "charged",
        "price",
        "pagar",
        "pago",
        "pagan",
        "cuesta",
        "cuestan",
        "cobran",
        "cobra",
        "tarifa",
        "coste",
        "costo",
        "zahlen",
        "zahle",
        "bezahlen",
        "kostet",
        "kosten",
        "gebühr",
        "gebühren",
    ],
];

/// Index into [`MODALITIES`] of leave ("can", "may").
const LEAVE: usize = 1;
/// Index into [`MODALITIES`] of cost ("pay", "fee").
const COST: usize = 2;

/// Words that say "it costs nothing" without a negation: "Yes, a tree
/// permit is free" to "Do I have to pay for a tree permit?".
const FREE_OF_COST: &[&str] = &[
    "free",
    "gratis",
    "gratuito",
    "gratuita",
    "gratuitos",
    "gratuitas",
    "kostenlos",
    "kostenfrei",
    "gebührenfrei",
    "unentgeltlich",
];

fn words(text: &str) -> Vec<String> {
    WORD.find_iter(&spell_negations(text))
        .map(|w| w.as_str().to_lowercase())
        .collect()
}

/// Whether two word forms name the same thing: equal but for a plural's
/// `s`, or sharing their first five letters ("register", "registered").
fn same_word(a: &str, b: &str) -> bool {
    let bare = |w: &str| w.strip_suffix('s').unwrap_or(w).to_string();
    if a.chars().count() < 3 || b.chars().count() < 3 {
        return false;
    }
    if bare(a) == bare(b) {
        return true;
    }
    let prefix = |w: &str| w.chars().take(5).collect::<String>();
    a.chars().count() >= 5 && b.chars().count() >= 5 && prefix(a) == prefix(b)
}

fn modality(word: &str) -> Option<usize> {
    MODALITIES.iter().position(|class| class.contains(&word))
}

/// The statement right after an answer's opening "yes", when there is one:
/// the rest of its sentence, or the next sentence when "Yes." stands alone.
fn after_yes(response: &str) -> Option<&str> {
    let first = WORD.find(response)?;
    let lead = &response[..first.start()];
    if lead.chars().any(char::is_alphanumeric) || lead.chars().count() > 3 {
        return None;
    }
    if !YES.contains(&first.as_str().to_lowercase().as_str()) {
        return None;
    }
    let rest = &response[first.end()..];
    let skipped = rest.trim_start_matches(|c: char| !c.is_alphanumeric());
    let (start, end) = sentence_ranges(skipped).into_iter().next()?;
    Some(skipped[start..end].trim())
}

/// The first clause of `sentence`: up to a comma, semicolon, colon or dash,
/// or a word that joins another clause.
fn first_clause(sentence: &str) -> &str {
    let mut end = sentence.len();
    if let Some(at) = sentence.find([',', ';', ':', '(', '\u{2014}', '\u{2013}']) {
        end = end.min(at);
    }
    for w in WORD.find_iter(&sentence[..end]).skip(1) {
        if matches!(
            w.as_str().to_lowercase().as_str(),
            "and" | "or" | "so" | "y" | "o" | "und" | "oder"
        ) {
            end = w.start();
            break;
        }
    }
    &sentence[..end]
}

/// The statement after an answer's "yes" that denies what `input` asks, if
/// any: "Yes, a shed ... does not require a building permit" to "Do I need
/// a building permit for a shed?".
pub fn yes_then_denies(input: &str, response: &str) -> Option<String> {
    let asked = words(input);
    if asked.iter().any(|w| {
        NEGATIONS.contains(&w.as_str()) || ABSENCE.iter().any(|prefix| w.starts_with(prefix))
    }) {
        return None;
    }
    let statement = after_yes(response)?;
    let clause = first_clause(statement);
    let said = words(clause);
    let asked_modalities: HashSet<usize> = asked.iter().filter_map(|w| modality(w)).collect();
    let negation = said
        .iter()
        .position(|w| NEGATIONS.contains(&w.as_str()) || FREE_OF_COST.contains(&w.as_str()))?;
    if said[..negation]
        .iter()
        .any(|w| QUALIFIERS.contains(&w.as_str()))
    {
        return None;
    }
    // "Can I pay by card?" asks leave, not cost: "Yes, there is no fee for
    // it" answers it.
    let asks_cost = asked_modalities.contains(&COST) && !asked_modalities.contains(&LEAVE);
    if FREE_OF_COST.contains(&said[negation].as_str()) {
        // "free to choose" and "free from damp" are not about money.
        let about_money = !matches!(
            said.get(negation + 1).map(String::as_str),
            Some("to" | "from" | "for" | "de" | "von")
        );
        return (asks_cost && about_money).then(|| excerpt(statement));
    }
    let scope = &said[negation + 1..];
    if scope
        .iter()
        .any(|w| COUNTER_NEGATIONS.contains(&w.as_str()))
    {
        return None;
    }
    // What the negation denies: its first word that is not a filler.
    let head = scope.iter().find(|w| !FILLERS.contains(&w.as_str()))?;
    let denies_the_question = asked.iter().any(|w| same_word(w, head))
        || modality(head)
            .is_some_and(|m| asked_modalities.contains(&m) && (m != COST || asks_cost));
    denies_the_question.then(|| excerpt(statement))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_yes_that_denies_what_was_asked_is_caught() {
        for (input, response) in [
            (
                "Do I need a building permit for a garden shed under 15 square metres?",
                "Yes, a garden shed under 15 square metres does not require a building permit.",
            ),
            (
                "Does a street party need a permit?",
                "Yes. No permit is needed for a street party.",
            ),
            (
                "Can I pay my rent by card?",
                "Yes, you can't pay rent by card.",
            ),
            (
                "Can I park overnight on the quay?",
                "Yes, overnight parking on the quay is not allowed.",
            ),
            (
                "¿Necesito un permiso para un cobertizo pequeño?",
                "Sí, un cobertizo pequeño no necesita permiso.",
            ),
            (
                "Brauche ich eine Baugenehmigung für ein Gartenhaus?",
                "Ja, ein kleines Gartenhaus braucht keine Baugenehmigung.",
            ),
            // "Free" says "no fee" without a negation.
            (
                "Do I have to pay for a tree permit?",
                "Yes, a tree permit is free and is decided within 14 days.",
            ),
            (
                "Does it cost anything to replace a lost card?",
                "Yes, there is no fee for the first replacement.",
            ),
            (
                "¿Tengo que pagar por el permiso de obra menor?",
                "Sí, el permiso de obra menor es gratuito.",
            ),
        ] {
            assert!(
                yes_then_denies(input, response).is_some(),
                "{input} / {response}"
            );
        }
    }

    #[test]
    fn a_yes_that_qualifies_or_answers_an_absence_passes() {
        for (input, response) in [
            // The question asks about an absence.
            (
                "Can I put up a 1 metre fence by the street without asking?",
                "Yes, a fence up to 1.2 metres high along a street needs no permit.",
            ),
            ("Is the event permit free?", "Yes, there is no fee for it."),
            ("Don't I need a permit?", "Yes, you do not need one."),
            // The denial is about something the question did not ask.
            (
                "Can I use my card abroad?",
                "Yes, there are no fees for using your card abroad.",
            ),
            (
                "Is there a daily limit for card withdrawals?",
                "Yes, card withdrawals cannot exceed 500 euros per day.",
            ),
            // Qualified, contrasted, or negated twice.
            (
                "Can I cancel a transfer?",
                "Yes, as long as it has not been sent yet.",
            ),
            ("Can I get a refund?", "Yes, but not in cash."),
            // Leave to pay, answered with the absence of a fee; "free" to
            // do something.
            (
                "Can I pay my rent by card?",
                "Yes, and there is no fee for card payments.",
            ),
            (
                "Can I pay the permit fee online?",
                "Yes, card payments online are free of charge.",
            ),
            (
                "Do I have to pay for the seat I choose?",
                "Yes, you are free to choose any seat for 5 euros.",
            ),
            (
                "Is there a fee for a tree permit?",
                "Yes, a tree permit costs 40 euros.",
            ),
            (
                "Do I need ID to open an account?",
                "Yes, you cannot open an account without ID.",
            ),
            (
                "Can I cancel a transfer?",
                "Yes, a transfer that has not been processed can be cancelled.",
            ),
            (
                "Can I bring my dog?",
                "Yes, dogs are welcome; they may not enter the pool.",
            ),
            // No "yes" to take back.
            (
                "Do I need a permit for a shed?",
                "No, a shed under 15 square metres does not need a permit.",
            ),
            (
                "Does the ferry run on Sundays?",
                "Yes, it runs every hour. It does not run on holidays.",
            ),
            (
                "¿Puedo pagar con tarjeta?",
                "Si no tiene efectivo, puede pagar con tarjeta.",
            ),
        ] {
            assert_eq!(
                yes_then_denies(input, response),
                None,
                "{input} / {response}"
            );
        }
    }

    #[test]
    fn the_caught_statement_is_quoted() {
        let quoted = yes_then_denies(
            "Do I need a permit for a shed?",
            "Yes.\nA shed does not need a permit. Larger ones do.",
        );
        assert_eq!(quoted.as_deref(), Some("A shed does not need a permit."));
    }
}
