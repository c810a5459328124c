//! Key facts in text: the figures, times, codes and numbered names a domain's
//! documents state and a model either knows or does not. Pure; the worker's
//! support check, verification's probes and its fact-perturbed control are
//! built from them.
//!
//! A fact's *kind* is what makes two facts interchangeable: "18 crowns" and
//! "4 crowns" are both `crowns`, "22:15" and "07:40" both `time`. Swapping a
//! fact for another of its kind keeps a sentence well-formed and makes it
//! wrong, which is what a forced choice and the perturbed control need.

use std::sync::LazyLock;

use regex::Regex;

/// One fact found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    /// Byte offset in the text.
    pub start: usize,
    pub text: String,
    pub kind: String,
}

// Alternatives in order of precedence: the first that matches at a position wins.
static FACT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?P<time>\b\d{1,2}:\d{2}\b)",
        r"|(?P<money>[$€£]\s?\d+(?:[.,]\d+)?)",
        r"|(?P<percent>\b\d+(?:[.,]\d+)?\s?%)",
        r"|(?P<code>\b[A-Z]{1,5}-\d{1,6}\b)",
        r"|(?P<named>\b[A-Z][a-z]+ \d{1,4}\b)",
        r"|(?P<measure>\b\d+(?:[.,]\d+)*\s(?P<unit>\p{L}+))",
        r"|(?P<number>\b\d+(?:[.,]\d+)*\b)",
    ))
    .expect("fact pattern")
});

/// Unit words that read as a quantity's unit, by the unit they name: "days",
/// "días" and "Tagen" are all `day`, so a fact keeps its kind across
/// languages and plurals. Any other word after a number ("6 travel") leaves
/// the number a bare `number`.
const UNITS: &[(&str, &[&str])] = &[
    (
        "minute",
        &["minute", "minutes", "minuto", "minutos", "minuten", "min"],
    ),
    (
        "hour",
        &["hour", "hours", "hora", "horas", "stunde", "stunden"],
    ),
    (
        "day",
        &[
            "day", "days", "día", "días", "dia", "dias", "tag", "tage", "tagen",
        ],
    ),
    (
        "week",
        &["week", "weeks", "semana", "semanas", "woche", "wochen"],
    ),
    (
        "month",
        &[
            "month", "months", "mes", "meses", "monat", "monate", "monaten",
        ],
    ),
    (
        "year",
        &["year", "years", "año", "años", "jahr", "jahre", "jahren"],
    ),
    (
        "second",
        &[
            "second", "seconds", "segundo", "segundos", "sekunde", "sekunden",
        ],
    ),
    ("cent", &["cent", "cents", "centavo", "centavos"]),
    (
        "dollar",
        &["dollar", "dollars", "dólar", "dólares", "dolar", "dolares"],
    ),
    ("euro", &["euro", "euros"]),
    ("pound", &["pound", "pounds", "libra", "libras"]),
    (
        "crown",
        &["crown", "crowns", "corona", "coronas", "krone", "kronen"],
    ),
    ("percent", &["percent", "per", "por", "prozent"]),
    (
        "centimetre",
        &[
            "centimetre",
            "centimetres",
            "centimeter",
            "centimeters",
            "centímetro",
            "centímetros",
            "zentimeter",
            "cm",
        ],
    ),
    (
        "metre",
        &["metre", "metres", "meter", "meters", "metro", "metros", "m"],
    ),
    (
        "kilometre",
        &[
            "kilometre",
            "kilometres",
            "kilometer",
            "kilometers",
            "kilómetro",
            "kilómetros",
            "km",
        ],
    ),
    (
        "millimetre",
        &[
            "millimetre",
            "millimetres",
            "millimeter",
            "millimeters",
            "mm",
        ],
    ),
    (
        "mile",
        &["mile", "miles", "milla", "millas", "meile", "meilen"],
    ),
    (
        "kilogram",
        &[
            "kg",
            "kilogram",
            "kilograms",
            "kilo",
            "kilos",
            "kilogramo",
            "kilogramos",
            "kilogramm",
        ],
    ),
    (
        "gram",
        &["gram", "grams", "gramo", "gramos", "gramm", "g", "mg"],
    ),
    (
        "litre",
        &[
            "litre", "litres", "liter", "liters", "litro", "litros", "ml",
        ],
    ),
    (
        "item",
        &["item", "items", "artículo", "artículos", "artikel"],
    ),
    (
        "ticket",
        &[
            "ticket",
            "tickets",
            "billete",
            "billetes",
            "fahrkarte",
            "fahrkarten",
        ],
    ),
    ("time", &["time", "times", "vez", "veces", "mal"]),
    (
        "person",
        &[
            "person",
            "persons",
            "people",
            "member",
            "members",
            "passenger",
            "passengers",
            "persona",
            "personas",
            "personen",
        ],
    ),
    (
        "transaction",
        &[
            "transaction",
            "transactions",
            "transacción",
            "transacciones",
            "transaktion",
            "transaktionen",
        ],
    ),
    (
        "point",
        &["point", "points", "punto", "puntos", "punkt", "punkte"],
    ),
    (
        "step",
        &["step", "steps", "paso", "pasos", "schritt", "schritte"],
    ),
    (
        "page",
        &["page", "pages", "página", "páginas", "seite", "seiten"],
    ),
    (
        "digit",
        &[
            "digit",
            "digits",
            "character",
            "characters",
            "dígito",
            "dígitos",
            "stelle",
            "stellen",
            "zeichen",
        ],
    ),
    (
        "unit",
        &[
            "unit",
            "units",
            "unidad",
            "unidades",
            "einheit",
            "einheiten",
        ],
    ),
    (
        "dose",
        &[
            "dose",
            "doses",
            "tablet",
            "tablets",
            "dosis",
            "pastilla",
            "pastillas",
            "dosen",
            "tablette",
            "tabletten",
        ],
    ),
    ("clock", &["am", "pm", "uhr"]),
    ("byte", &["gb", "mb", "kb", "tb"]),
];

fn unit_of(word: &str) -> Option<String> {
    let lower = word.to_lowercase();
    UNITS
        .iter()
        .find(|(_, forms)| forms.contains(&lower.as_str()))
        .map(|(unit, _)| (*unit).to_string())
}

/// Every fact in `text`, in order, not overlapping.
pub fn facts(text: &str) -> Vec<Fact> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(caps) = FACT.captures_at(text, at) {
        let whole = caps.get(0).expect("match");
        at = whole.end();
        let (kind, matched) = if let Some(m) = caps.name("time") {
            ("time".to_string(), m)
        } else if let Some(m) = caps.name("money") {
            ("money".to_string(), m)
        } else if let Some(m) = caps.name("percent") {
            ("percent".to_string(), m)
        } else if let Some(m) = caps.name("code") {
            ("code".to_string(), m)
        } else if let Some(m) = caps.name("named") {
            let (name, number) = m.as_str().split_once(' ').unwrap_or_default();
            let decimal = text[m.end()..].starts_with(['.', ','])
                && text[m.end() + 1..].starts_with(|c: char| c.is_ascii_digit());
            if decimal || NOT_NAMES.contains(&name.to_lowercase().as_str()) {
                // "At 1.5 metres", "Under 200 people": the number is the
                // fact, not a name; read again from it.
                at = m.end() - number.len();
                continue;
            }
            (format!("named:{}", name.to_lowercase()), m)
        } else if let (Some(m), Some(unit)) = (caps.name("measure"), caps.name("unit")) {
            match unit_of(unit.as_str()) {
                Some(unit) => (unit, m),
                None => {
                    // The number alone, without the word that is not a unit.
                    let number = m.as_str().split(' ').next().unwrap_or_default();
                    out.push(Fact {
                        start: m.start(),
                        text: number.to_string(),
                        kind: "number".to_string(),
                    });
                    continue;
                }
            }
        } else {
            ("number".to_string(), whole)
        };
        out.push(Fact {
            start: matched.start(),
            text: matched.as_str().to_string(),
            kind,
        });
    }
    out
}

/// Named counters a how-to answer numbers itself with ("Step 2", "Option 1"):
/// structure, not facts.
const ENUMERATORS: &[&str] = &[
    "step", "steps", "option", "options", "tip", "tips", "part", "phase", "stage", "method", "way",
    "point", "paso", "opción", "opcion", "consejo", "parte", "schritt", "tipp", "teil",
];

/// Whether a line break at `text[..at]` ends a sentence: before a blank
/// line, a list item, a heading or a table row, not inside a paragraph that
/// is merely wrapped.
fn breaks_at(text: &str, at: usize) -> bool {
    let next = text[at..].trim_start_matches([' ', '\t']);
    let numbered = next
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .starts_with(['.', ')'])
        && next.starts_with(|c: char| c.is_ascii_digit());
    next.is_empty() || next.starts_with(['\n', '-', '*', '#', '|', '>']) || numbered
}

/// Byte ranges of `text`'s sentences: split after `.`, `!`, `?` before white
/// space, and at line breaks that end a block. A decimal point is followed
/// by a digit, so it never splits.
pub fn sentence_ranges(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next_is_space = chars.peek().is_none_or(|(_, n)| n.is_whitespace());
        let ends = (c == '\n' && breaks_at(text, i + 1))
            || (matches!(c, '.' | '!' | '?') && next_is_space);
        if ends {
            let end = i + c.len_utf8();
            if !text[start..end].trim().is_empty() {
                out.push((start, end));
            }
            start = end;
        }
    }
    if !text[start..].trim().is_empty() {
        out.push((start, text.len()));
    }
    out
}

/// The facts `text` states: every fact but list markers and named counters.
pub fn stated_facts(text: &str) -> Vec<Fact> {
    facts(text)
        .into_iter()
        .filter(|f| !is_structure(text, f))
        .collect()
}

/// A list marker ("1." or "2)" opening a line) numbers the answer, it is not
/// a figure; nor is a named counter ("Step 3").
fn is_structure(text: &str, fact: &Fact) -> bool {
    let line_start = text[..fact.start].rfind('\n').map_or(0, |i| i + 1);
    let before = text[line_start..fact.start].trim();
    let after = &text[fact.start + fact.text.len()..];
    let marker = fact.kind == "number"
        && (before.is_empty() || before == "-" || before == "*")
        && (after.starts_with('.') || after.starts_with(')') || after.starts_with(':'));
    let counter = fact
        .kind
        .strip_prefix("named:")
        .is_some_and(|name| ENUMERATORS.contains(&name));
    marker || counter
}

/// Capitalised words that open a sentence before a number without naming
/// anything ("Under 200 people", "Within 14 days").
const NOT_NAMES: &[&str] = &[
    "at", "in", "on", "by", "for", "of", "to", "up", "under", "over", "about", "around", "after",
    "before", "within", "until", "from", "every", "only", "just", "each", "all", "the", "and",
    "or", "with", "than", "pay", "costs", "cost", "is", "are", "takes", "en", "por", "para", "con",
    "cada", "hasta", "desde", "unos", "mit", "für", "ab", "bis", "um", "nach", "vor", "je", "alle",
    "pro", "ca",
];

/// What the number of a fact may mean: "1.000" is a thousand in German and
/// one in English, "2,50" two and a half in Spanish and two hundred and fifty
/// in English. Two facts state the same figure when their readings meet.
/// A time or a code reads as itself.
pub fn readings(fact: &Fact) -> Vec<String> {
    if fact.kind == "time" || fact.kind == "code" {
        return vec![fact.text.to_uppercase()];
    }
    let Some(start) = fact.text.find(|c: char| c.is_ascii_digit()) else {
        return Vec::new();
    };
    let digits: String = fact.text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
        .collect();
    let digits = digits.trim_end_matches(['.', ',']);
    let mut out = Vec::new();
    for (thousands, decimal) in [(',', '.'), ('.', ',')] {
        let plain: String = digits
            .chars()
            .filter(|c| *c != thousands)
            .map(|c| if c == decimal { '.' } else { c })
            .collect();
        if let Ok(value) = plain.parse::<f64>() {
            let text = format!("{value}");
            if !out.contains(&text) {
                out.push(text);
            }
        }
    }
    if out.is_empty() {
        // A date or a version ("12.03.2024", "1.2.3") reads as itself.
        out.push(digits.to_string());
    }
    out
}

/// Whether two facts' kinds can state the same thing: a bare number or a
/// numbered name matches anything, two units only themselves ("40 minutes"
/// is not "40 centimetres"), money any currency.
pub fn kinds_compatible(a: &str, b: &str) -> bool {
    let loose = |k: &str| k == "number" || k.starts_with("named:");
    a == b || loose(a) || loose(b) || a == "money" || b == "money"
}

/// The number inside a fact (the first run of digits), and where it sits.
fn number_span(text: &str) -> Option<(usize, usize, u64)> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let len = text[start..]
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len() - start);
    let value = text[start..start + len].parse().ok()?;
    Some((start, start + len, value))
}

/// Made-up facts of the same kind as `fact`, for when a text has too few of
/// its own: the same wording with another number (deterministic, distinct,
/// never the original).
pub fn variants(fact: &Fact) -> Vec<String> {
    let Some((a, b, value)) = number_span(&fact.text) else {
        return Vec::new();
    };
    let candidates: Vec<u64> = if fact.kind == "time" {
        // Shift the hour, keep the minutes.
        (1..=3).map(|k| (value + 3 * k) % 24).collect()
    } else {
        vec![
            value * 2 + 1,
            value + 3,
            value * 3 + 2,
            value.saturating_sub(1).max(1),
        ]
    };
    let mut out: Vec<String> = Vec::new();
    for n in candidates {
        let digits = if fact.kind == "time" {
            format!("{n:02}")
        } else {
            n.to_string()
        };
        let text = format!("{}{}{}", &fact.text[..a], digits, &fact.text[b..]);
        if text != fact.text && !out.contains(&text) {
            out.push(text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(String, String)> {
        facts(text).into_iter().map(|f| (f.text, f.kind)).collect()
    }

    #[test]
    fn finds_figures_with_their_kind() {
        let found = kinds(
            "The crossing takes 35 minutes and a day pass costs 18 crowns; the last ferry leaves at 22:15.",
        );
        assert_eq!(
            found,
            vec![
                ("35 minutes".into(), "minute".into()),
                ("18 crowns".into(), "crown".into()),
                ("22:15".into(), "time".into()),
            ]
        );
    }

    #[test]
    fn codes_money_percent_and_numbered_names() {
        let found = kinds("Ask at Dock Office 9 or quote GV-417; fees are $5.50 or 2.5% a year.");
        assert_eq!(
            found,
            vec![
                ("Office 9".into(), "named:office".into()),
                ("GV-417".into(), "code".into()),
                ("$5.50".into(), "money".into()),
                ("2.5%".into(), "percent".into()),
            ]
        );
    }

    #[test]
    fn a_number_before_an_ordinary_word_is_a_bare_number() {
        let found = facts("Children under 6 travel free.");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].text, "6");
        assert_eq!(found[0].kind, "number");
        assert_eq!(&"Children under 6 travel free."[found[0].start..][..1], "6");
    }

    #[test]
    fn a_number_after_an_opening_word_is_no_name() {
        let found = kinds("At 1.5 metres it is too high. Under 200 people pay nothing. Room 104.");
        assert_eq!(
            found,
            vec![
                ("1.5 metres".into(), "metre".into()),
                ("200 people".into(), "person".into()),
                ("Room 104".into(), "named:room".into()),
            ]
        );
    }

    #[test]
    fn readings_meet_across_number_formats() {
        let read = |t: &str| readings(&facts(t)[0]);
        assert!(read("1.000 Euro").contains(&"1000".to_string()));
        assert!(read("1,000 dollars").contains(&"1000".to_string()));
        assert!(read("2,50 euros").contains(&"2.5".to_string()));
        assert!(read("$2.50").contains(&"2.5".to_string()));
        assert!(!read("18 crowns").contains(&"1.8".to_string()));
        assert_eq!(read("at 22:15"), vec!["22:15".to_string()]);
        assert!(kinds_compatible("crown", "number"));
        assert!(!kinds_compatible("minute", "centimetre"));
        assert_eq!(facts("30 Tagen")[0].kind, "day");
        assert_eq!(facts("15 minutos")[0].kind, "minute");
        assert_eq!(facts("18 coronas")[0].kind, "crown");
    }

    #[test]
    fn variants_keep_the_wording_and_change_the_number() {
        let fact = &facts("costs 18 crowns")[0];
        let made = variants(fact);
        assert!(made.len() >= 3, "{made:?}");
        assert!(
            made.iter()
                .all(|v| v.ends_with(" crowns") && v != "18 crowns"),
            "{made:?}"
        );
        let time = &facts("at 22:15")[0];
        let made = variants(time);
        assert!(
            made.iter()
                .all(|v| v.ends_with(":15") && v.len() == 5 && v != "22:15"),
            "{made:?}"
        );
    }
}
