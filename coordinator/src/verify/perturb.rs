//! The fact-perturbed control (issue 17): the Seedling records with their key
//! facts swapped between records, so the format, length and wording stay and
//! the content is wrong. Training on it separates "the content helps" from
//! "the format helps". Pure and seeded.

use std::collections::BTreeMap;

use super::TrainRow;
use super::seeded::SplitMix;
use seedling_common::facts::{facts, variants};

/// The rows with every fact in each response replaced by a different fact
/// of the same kind, taken from the other rows when they have one, else a
/// made-up one of the same wording. Rows without facts stay as they are
/// (their share is reported, since they make the control weaker).
pub fn perturb_facts(rows: &[TrainRow], seed: u64) -> (Vec<TrainRow>, usize) {
    let mut by_kind: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        for fact in facts(&row.response) {
            by_kind.entry(fact.kind).or_default().push((i, fact.text));
        }
    }
    let mut mix = SplitMix(seed);
    let mut changed = 0;
    let out = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let found = facts(&row.response);
            if found.is_empty() {
                return row.clone();
            }
            changed += 1;
            let mut response = String::with_capacity(row.response.len());
            let mut at = 0;
            for fact in found {
                let others: Vec<&String> = by_kind[&fact.kind]
                    .iter()
                    .filter(|(j, text)| *j != i && *text != fact.text)
                    .map(|(_, text)| text)
                    .collect();
                let swap = if others.is_empty() {
                    let made = variants(&fact);
                    if made.is_empty() {
                        fact.text.clone()
                    } else {
                        made[mix.below(made.len())].clone()
                    }
                } else {
                    others[mix.below(others.len())].clone()
                };
                response.push_str(&row.response[at..fact.start]);
                response.push_str(&swap);
                at = fact.start + fact.text.len();
            }
            response.push_str(&row.response[at..]);
            TrainRow {
                id: format!("{}-perturbed", row.id),
                response,
                ..row.clone()
            }
        })
        .collect();
    (out, changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, response: &str) -> TrainRow {
        TrainRow {
            id: id.into(),
            input: format!("question {id}"),
            response: response.into(),
            stratum: "s".into(),
        }
    }

    #[test]
    fn facts_move_between_records_and_everything_else_stays() {
        let rows = vec![
            row(
                "a",
                "A day pass costs 18 crowns and the crossing takes 35 minutes.",
            ),
            row("b", "A green tag costs 2 crowns."),
            row("c", "The last ferry leaves at 22:15."),
            row("d", "Ask the desk."),
        ];
        let (out, changed) = perturb_facts(&rows, 7);
        assert_eq!(changed, 3);
        assert_eq!(out[1].response, "A green tag costs 18 crowns.");
        assert!(
            out[0]
                .response
                .starts_with("A day pass costs 2 crowns and the crossing takes ")
        );
        assert!(
            !out[0].response.contains("35 minutes"),
            "{}",
            out[0].response
        );
        assert!(out[0].response.ends_with(" minutes."));
        assert!(
            out[2].response.starts_with("The last ferry leaves at ")
                && !out[2].response.contains("22:15")
        );
        assert_eq!(out[3], rows[3]);
        for (a, b) in rows.iter().zip(&out) {
            assert_eq!(a.input, b.input);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_control() {
        let rows: Vec<TrainRow> = (0..6)
            .map(|i| {
                row(
                    &i.to_string(),
                    &format!(
                        "It costs {} crowns and takes {} minutes.",
                        i + 2,
                        i * 5 + 10
                    ),
                )
            })
            .collect();
        assert_eq!(perturb_facts(&rows, 1).0, perturb_facts(&rows, 1).0);
        assert!(
            perturb_facts(&rows, 1)
                .0
                .iter()
                .zip(&rows)
                .all(|(p, r)| p.response != r.response)
        );
    }
}
