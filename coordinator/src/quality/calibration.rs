//! How well the automatic quality score agrees with human labels: accuracy
//! of the accept threshold, and AUC (the chance that a record a human calls
//! good scores above one a human calls bad). Labels come as JSONL, one
//! `{"id": ..., "label": ...}` per line; a review workflow will write them.

use serde::Serialize;

/// A human verdict on one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub id: String,
    pub good: bool,
}

/// Reads labels: `label` may be a boolean, `"good"`/`"bad"`,
/// `"approved"`/`"rejected"`, or a 1-5 rating (4 and 5 are good).
/// Errors name the line.
pub fn parse_labels(source: &str, text: &str) -> Result<Vec<Label>, String> {
    let mut labels = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{source}:{}", idx + 1);
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{at}: not JSON: {e}"))?;
        let id = value["id"]
            .as_str()
            .ok_or_else(|| format!("{at}: `id` must be a string"))?;
        let good = match &value["label"] {
            serde_json::Value::Bool(b) => *b,
            serde_json::Value::Number(n) => match n.as_f64() {
                Some(r) if (1.0..=5.0).contains(&r) => r >= 4.0,
                _ => return Err(format!("{at}: a numeric `label` is a rating from 1 to 5")),
            },
            serde_json::Value::String(s) => match s.as_str() {
                "good" | "approved" | "accept" => true,
                "bad" | "rejected" | "reject" => false,
                other => {
                    return Err(format!(
                        "{at}: unknown label {other:?} (good, bad, approved, rejected)"
                    ));
                }
            },
            _ => {
                return Err(format!(
                    "{at}: `label` is missing (true/false, good/bad, or 1-5)"
                ));
            }
        };
        labels.push(Label {
            id: id.to_string(),
            good,
        });
    }
    Ok(labels)
}

/// Agreement of scores with labels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub labelled: usize,
    pub good: usize,
    pub bad: usize,
    /// Share of labels the threshold (score >= threshold means good) gets right.
    pub accuracy: f64,
    /// Probability that a good record outscores a bad one (ties count half);
    /// `None` without both kinds.
    pub auc: Option<f64>,
    pub mean_score_good: Option<f64>,
    pub mean_score_bad: Option<f64>,
}

/// Compares `(score, good)` pairs with the accept threshold.
pub fn calibrate(pairs: &[(f64, bool)], threshold: f64) -> Calibration {
    let good: Vec<f64> = pairs.iter().filter(|(_, g)| *g).map(|(s, _)| *s).collect();
    let bad: Vec<f64> = pairs.iter().filter(|(_, g)| !*g).map(|(s, _)| *s).collect();
    let right = pairs
        .iter()
        .filter(|(s, g)| (*s >= threshold) == *g)
        .count();
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let auc = (!good.is_empty() && !bad.is_empty()).then(|| {
        let mut wins = 0.0;
        for g in &good {
            for b in &bad {
                wins += if g > b {
                    1.0
                } else if g == b {
                    0.5
                } else {
                    0.0
                };
            }
        }
        wins / (good.len() * bad.len()) as f64
    });
    Calibration {
        labelled: pairs.len(),
        good: good.len(),
        bad: bad.len(),
        accuracy: if pairs.is_empty() {
            0.0
        } else {
            right as f64 / pairs.len() as f64
        },
        auc,
        mean_score_good: mean(&good),
        mean_score_bad: mean(&bad),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_in_every_accepted_spelling_and_errors_with_lines() {
        let text = "{\"id\": \"a\", \"label\": true}\n\n{\"id\": \"b\", \"label\": \"bad\"}\n{\"id\": \"c\", \"label\": 5}\n{\"id\": \"d\", \"label\": 2}\n";
        let labels = parse_labels("l.jsonl", text).unwrap();
        let good: Vec<bool> = labels.iter().map(|l| l.good).collect();
        assert_eq!(good, vec![true, false, true, false]);
        assert_eq!(
            parse_labels("l.jsonl", "{\"id\": \"a\"}").unwrap_err(),
            "l.jsonl:1: `label` is missing (true/false, good/bad, or 1-5)"
        );
        assert!(
            parse_labels("l.jsonl", "\n{\"id\": \"a\", \"label\": \"meh\"}")
                .unwrap_err()
                .starts_with("l.jsonl:2: unknown label")
        );
        assert!(parse_labels("l.jsonl", "{\"id\": \"a\", \"label\": 9}").is_err());
        assert!(
            parse_labels("l.jsonl", "nope")
                .unwrap_err()
                .starts_with("l.jsonl:1: not JSON")
        );
    }

    #[test]
    fn a_score_that_separates_labels_has_auc_one_and_a_useless_one_half() {
        let perfect = [(0.9, true), (0.8, true), (0.3, false), (0.2, false)];
        let c = calibrate(&perfect, 0.6);
        assert_eq!((c.accuracy, c.auc), (1.0, Some(1.0)));
        let flat = [(0.7, true), (0.7, false), (0.7, true), (0.7, false)];
        let c = calibrate(&flat, 0.6);
        assert_eq!((c.accuracy, c.auc), (0.5, Some(0.5)));
        let inverted = [(0.2, true), (0.9, false)];
        assert_eq!(calibrate(&inverted, 0.6).auc, Some(0.0));
        assert_eq!(calibrate(&[(0.9, true)], 0.6).auc, None);
    }
}
