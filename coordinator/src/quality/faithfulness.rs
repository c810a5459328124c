//! A judge model's faithfulness verdicts beside the model-free support
//! check: how often the two agree on the same answers (issue 23), and, on
//! labelled answers, how well each finds the unfaithful ones.

use std::collections::BTreeSet;

use seedling_common::work::{HeuristicVerdict, SUPPORT_REASONS};
use serde::{Deserialize, Serialize};

use crate::prompts::{FAITHFULNESS_VERSION, Faithfulness};

/// The reason an answer is rejected with when the judge model finds a
/// statement its sources do not back.
pub const JUDGE_UNSUPPORTED: &str = "judge_unsupported";

/// The support check and the judge on the same answers: a 2x2 table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    pub both_pass: u64,
    pub both_reject: u64,
    /// The check rejects, the judge finds the answer supported.
    pub only_check_rejects: u64,
    /// The judge finds a statement unsupported, the check passes it.
    pub only_judge_rejects: u64,
}

impl Agreement {
    pub fn add(&mut self, check_rejects: bool, judge_rejects: bool) {
        *match (check_rejects, judge_rejects) {
            (false, false) => &mut self.both_pass,
            (true, true) => &mut self.both_reject,
            (true, false) => &mut self.only_check_rejects,
            (false, true) => &mut self.only_judge_rejects,
        } += 1;
    }

    pub fn total(&self) -> u64 {
        self.both_pass + self.both_reject + self.only_check_rejects + self.only_judge_rejects
    }

    /// The share of answers both call alike.
    pub fn observed(&self) -> Option<f64> {
        let n = self.total();
        (n > 0).then(|| (self.both_pass + self.both_reject) as f64 / n as f64)
    }

    /// Cohen's kappa: agreement beyond what two raters with these rejection
    /// rates reach by chance. `None` when chance agreement is total (both
    /// always say the same one thing), where kappa is undefined.
    pub fn kappa(&self) -> Option<f64> {
        let n = self.total() as f64;
        let observed = self.observed()?;
        let check = (self.both_reject + self.only_check_rejects) as f64 / n;
        let judge = (self.both_reject + self.only_judge_rejects) as f64 / n;
        let chance = check * judge + (1.0 - check) * (1.0 - judge);
        (chance < 1.0).then(|| (observed - chance) / (1.0 - chance))
    }

    /// One line for the run summary and the card.
    pub fn line(&self) -> String {
        let kappa = self
            .kappa()
            .map_or("undefined".to_string(), |k| format!("{k:.2}"));
        format!(
            "{} answers: both pass {}, both reject {}, only the check rejects {}, only the judge rejects {}; agreement {:.0}%, Cohen's kappa {kappa}",
            self.total(),
            self.both_pass,
            self.both_reject,
            self.only_check_rejects,
            self.only_judge_rejects,
            self.observed().unwrap_or(0.0) * 100.0,
        )
    }
}

/// What a record keeps of the judge model's reading (the `faithfulness`
/// field of its response node): the judge's verdict and, on the same
/// answer, the support check's. `None` when no judge model read it.
pub fn stored(verdict: &HeuristicVerdict) -> Option<serde_json::Value> {
    let reply = verdict.faithfulness.as_ref()?;
    let read = Faithfulness::read(&reply.text);
    let check = verdict
        .rejections
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .find(|reason| SUPPORT_REASONS.contains(reason))
        .unwrap_or("passed");
    let mut stored = serde_json::json!({
        "model": reply.model,
        "prompt": FAITHFULNESS_VERSION,
        "verdict": read.name(),
        "support_check": check,
    });
    match read {
        Faithfulness::Unsupported { claim } => stored["claim"] = claim.into(),
        Faithfulness::Unparsed => stored["reply"] = reply.text.clone().into(),
        Faithfulness::Supported => {}
    }
    Some(stored)
}

/// The judge model's readings over a plan's attempts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JudgedAnswers {
    pub models: BTreeSet<String>,
    pub agreement: Agreement,
    /// Replies that were no verdict (not in the table).
    pub unparsed: u64,
}

impl JudgedAnswers {
    /// Adds one response node's `faithfulness` field (see [`stored`]).
    pub fn add(&mut self, stored: &serde_json::Value) {
        if let Some(model) = stored["model"].as_str() {
            self.models.insert(model.to_string());
        }
        let check_rejects = stored["support_check"]
            .as_str()
            .is_some_and(|c| c != "passed");
        match stored["verdict"].as_str() {
            Some("supported") => self.agreement.add(check_rejects, false),
            Some("unsupported") => self.agreement.add(check_rejects, true),
            _ => self.unparsed += 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.agreement.total() == 0 && self.unparsed == 0
    }

    /// One line for the run summary and the card.
    pub fn line(&self) -> String {
        let models: Vec<&str> = self.models.iter().map(String::as_str).collect();
        let unparsed = if self.unparsed > 0 {
            format!(" ({} replies were no verdict)", self.unparsed)
        } else {
            String::new()
        };
        format!(
            "judge model {} against the support check on {}{unparsed}",
            models.join(", "),
            self.agreement.line()
        )
    }
}

/// Rejections against labels, an unfaithful answer being a positive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Detection {
    pub true_rejects: u64,
    pub false_rejects: u64,
    pub missed: u64,
    pub true_passes: u64,
}

impl Detection {
    pub fn add(&mut self, unfaithful: bool, rejected: bool) {
        *match (unfaithful, rejected) {
            (true, true) => &mut self.true_rejects,
            (false, true) => &mut self.false_rejects,
            (true, false) => &mut self.missed,
            (false, false) => &mut self.true_passes,
        } += 1;
    }

    /// Of the answers rejected, the share that were unfaithful.
    pub fn precision(&self) -> Option<f64> {
        let rejected = self.true_rejects + self.false_rejects;
        (rejected > 0).then(|| self.true_rejects as f64 / rejected as f64)
    }

    /// Of the unfaithful answers, the share rejected.
    pub fn recall(&self) -> Option<f64> {
        let unfaithful = self.true_rejects + self.missed;
        (unfaithful > 0).then(|| self.true_rejects as f64 / unfaithful as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(both_pass: u64, both_reject: u64, only_check: u64, only_judge: u64) -> Agreement {
        let mut agreement = Agreement::default();
        for (n, check, judge) in [
            (both_pass, false, false),
            (both_reject, true, true),
            (only_check, true, false),
            (only_judge, false, true),
        ] {
            for _ in 0..n {
                agreement.add(check, judge);
            }
        }
        agreement
    }

    #[test]
    fn kappa_is_one_when_alike_zero_at_chance_and_undefined_without_variation() {
        assert_eq!(table(6, 4, 0, 0).kappa(), Some(1.0));
        // Independent raters at 50% each: alike half the time, as chance predicts.
        assert_eq!(table(1, 1, 1, 1).kappa(), Some(0.0));
        // A textbook case: 20/5/10/15 of 50 (observed 0.7, chance 0.5).
        let k = table(15, 20, 5, 10).kappa().unwrap();
        assert!((k - 0.4).abs() < 1e-12, "{k}");
        // A judge that passes everything, a check that passes everything.
        assert_eq!(table(9, 0, 0, 0).kappa(), None);
        assert_eq!(table(9, 0, 0, 0).observed(), Some(1.0));
        assert_eq!(Agreement::default().observed(), None);
        assert!(table(15, 20, 5, 10).line().contains(
            "only the check rejects 5, only the judge rejects 10; agreement 70%, Cohen's kappa 0.40"
        ));
    }

    #[test]
    fn a_stored_reading_is_counted_against_the_support_check_of_the_same_answer() {
        let reply = |text: &str| seedling_common::work::JudgeReply {
            model: "Qwen2.5 1.5B".into(),
            text: text.into(),
        };
        let unsupported = r#"{"claim": "7 days", "verdict": "unsupported"}"#;
        let supported = r#"{"claim": "30 days", "verdict": "supported"}"#;
        let verdicts = [
            (vec![], supported),
            (
                vec![serde_json::json!({"reason": "unsupported_fact"})],
                unsupported,
            ),
            (
                vec![serde_json::json!({"reason": "no_substance"})],
                supported,
            ),
            (vec![], unsupported),
            (vec![], "{\"claim\": \"cut"),
        ];
        let mut judged = JudgedAnswers::default();
        for (rejections, text) in verdicts {
            let verdict = HeuristicVerdict {
                rejections,
                faithfulness: Some(reply(text)),
                ..HeuristicVerdict::default()
            };
            judged.add(&stored(&verdict).unwrap());
        }
        assert_eq!(judged.agreement, table(1, 1, 1, 1));
        assert_eq!(judged.unparsed, 1);
        assert!(
            judged
                .line()
                .starts_with("judge model Qwen2.5 1.5B against the support check on 4 answers"),
            "{}",
            judged.line()
        );
        assert!(judged.line().ends_with("(1 replies were no verdict)"));
        assert_eq!(
            stored(&HeuristicVerdict::default()),
            None,
            "no judge model read it"
        );
        let kept = stored(&HeuristicVerdict {
            faithfulness: Some(reply(unsupported)),
            ..HeuristicVerdict::default()
        })
        .unwrap();
        assert_eq!(
            (kept["claim"].as_str(), kept["support_check"].as_str()),
            (Some("7 days"), Some("passed"))
        );
    }

    #[test]
    fn precision_and_recall_count_an_unfaithful_answer_as_the_positive() {
        let mut d = Detection::default();
        for (unfaithful, rejected) in [
            (true, true),
            (true, true),
            (true, false),
            (false, true),
            (false, false),
        ] {
            d.add(unfaithful, rejected);
        }
        assert_eq!(d.precision(), Some(2.0 / 3.0));
        assert_eq!(d.recall(), Some(2.0 / 3.0));
        assert_eq!(Detection::default().precision(), None);
    }
}
