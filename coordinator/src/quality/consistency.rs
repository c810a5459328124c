//! Consistency across related records: when a new record repeats an
//! accepted one's question (a near or semantic duplicate), its answer is a
//! second opinion on the same question. If the two answers disagree, one of
//! them is wrong, and the accepted one is flagged for review. Model-free
//! signals of disagreement, on purpose narrow so that a flag means something:
//! the answers open with opposite verdicts (yes / no), or both state figures
//! (amounts, days, percentages) and share none of them.

use std::collections::BTreeSet;

/// The flag a consistency check leaves on an accepted record whose question
/// was asked again and answered differently.
pub const CONSISTENCY_FLAG: &str = "answers_disagree";

/// Why two answers to the same question disagree, if they do.
pub fn disagreement(a: &str, b: &str) -> Option<String> {
    if let (Some(x), Some(y)) = (verdict(a), verdict(b))
        && x != y
    {
        return Some(format!(
            "one answer opens with \"{x}\", the other with \"{y}\""
        ));
    }
    let (x, y) = (figures(a), figures(b));
    if !x.is_empty() && !y.is_empty() && x.is_disjoint(&y) {
        let show = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
        return Some(format!(
            "the answers state different figures ({} vs {})",
            show(&x),
            show(&y)
        ));
    }
    None
}

/// "yes" or "no" when an answer opens with one (English and Spanish).
fn verdict(text: &str) -> Option<&'static str> {
    let first = text
        .trim_start()
        .split(|c: char| !c.is_alphanumeric())
        .find(|w| !w.is_empty())?
        .to_lowercase();
    match first.as_str() {
        "yes" | "sí" | "si" => Some("yes"),
        "no" => Some("no"),
        _ => None,
    }
}

/// Numbers as written (digits with their decimal part), so "3" and "3.5" differ
/// and "$1,000" and "1000" agree.
fn figures(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            current.push(c);
        } else if (c == '.' || c == ',')
            && !current.is_empty()
            && chars.peek().is_some_and(char::is_ascii_digit)
        {
            if c == '.' {
                current.push('.');
            }
        } else if !current.is_empty() {
            out.insert(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.insert(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opposite_verdicts_disagree() {
        let yes = "Yes, you can raise the limit in the app under Card settings.";
        let no = "No. The daily limit is fixed by the bank and cannot be changed.";
        assert!(disagreement(yes, no).unwrap().contains("\"yes\""));
        assert_eq!(
            disagreement(yes, "Yes: open Card settings and pick a new limit."),
            None
        );
    }

    #[test]
    fn different_figures_disagree_and_shared_ones_do_not() {
        let three = "A domestic wire usually arrives within 3 business days and costs $25.";
        let five = "Expect about 5 business days; the fee is $30.";
        let same = "It costs $25 and can take up to 3 business days.";
        assert!(
            disagreement(three, five)
                .unwrap()
                .contains("25, 3 vs 30, 5")
        );
        assert_eq!(disagreement(three, same), None);
        // Only one answer states figures: nothing to compare.
        assert_eq!(disagreement(three, "It takes a few business days."), None);
        // Thousands separators and decimals are read as one number.
        assert_eq!(
            disagreement("The limit is $1,000.", "Up to 1000 dollars."),
            None
        );
        assert!(disagreement("The rate is 3.5%.", "The rate is 3%.").is_some());
    }
}
