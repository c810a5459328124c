//! What a review found, as the page's progress line, `review sample` and
//! the dataset card state it: records reviewed of the sample, acceptance
//! overall and per stratum with Wilson intervals, rejection reasons, edits,
//! and agreement between reviewers who decided the same records.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::ledger::Ledger;
use super::sample::{CHECK_STRATUM, SamplePlan};
use super::stats::{Proportion, cohens_kappa, share_shown, wilson};
use super::verdict::Verdict;

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StratumFigures {
    pub stratum: String,
    pub population: usize,
    pub sample: usize,
    pub reviewed: usize,
    /// Kept (accepted or corrected) among the reviewed.
    pub acceptance: Proportion,
}

/// Two reviewers over the records both decided.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Agreement {
    pub reviewers: (String, String),
    pub items: usize,
    pub agreed: usize,
    /// Cohen's kappa on keep / reject.
    pub kappa: Option<f64>,
}

/// One automatic check against the reviewers, from the records it
/// rejected that they reviewed.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct CheckFigures {
    /// The rejection reason the check records.
    pub check: String,
    /// Attempts it rejected that a reviewer can judge.
    pub population: usize,
    pub sample: usize,
    pub reviewed: usize,
    /// Precision: reviewers reject them too.
    pub precision: Proportion,
    /// Recall, estimated: its share of every attempt reviewers would reject,
    /// each stratum weighted by its size; known once every stratum, accepted
    /// records included, has a review.
    pub recall: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ReviewFigures {
    pub confidence: f64,
    pub margin: f64,
    /// The sample was drawn from records made after review feedback only.
    pub after_feedback: bool,
    pub sample: usize,
    pub population: usize,
    /// Sampled records with a decision that stands.
    pub reviewed: usize,
    pub acceptance: Proportion,
    pub strata: Vec<StratumFigures>,
    pub reasons: BTreeMap<String, usize>,
    /// Sampled records whose standing decision is an edit.
    pub edits: usize,
    /// Every record, sampled in this review or an earlier one, that a
    /// correction replaces, and every one rejected: what the dataset differs by.
    pub corrected_overall: usize,
    pub rejected_overall: usize,
    /// Standing decisions per reviewer.
    pub reviewers: BTreeMap<String, usize>,
    pub agreement: Vec<Agreement>,
    /// The automatic checks against the reviewers (a review with
    /// `--checks`); the figures above leave those records out.
    #[serde(default)]
    pub checks: Vec<CheckFigures>,
    /// All checks together: the estimated share of what reviewers would
    /// reject that the checks caught.
    #[serde(default)]
    pub checks_recall: Option<f64>,
}

impl StratumFigures {
    /// Whether it holds what one automatic check rejected.
    pub fn is_check(&self) -> bool {
        self.stratum.starts_with(CHECK_STRATUM)
    }
}

impl ReviewFigures {
    /// The strata of the records the checks accepted (the checks' own
    /// strata are in `checks`).
    pub fn record_strata(&self) -> impl Iterator<Item = &StratumFigures> {
        self.strata.iter().filter(|s| !s.is_check())
    }

    /// "37 of 120 reviewed, acceptance 81% +- 7%": the page's progress line.
    pub fn progress_line(&self) -> String {
        let mut line = if self.reviewed == 0 {
            format!("0 of {} reviewed", self.sample)
        } else {
            let a = &self.acceptance;
            format!(
                "{} of {} reviewed, acceptance {:.0}% +- {:.0}%",
                self.reviewed,
                self.sample,
                a.rate * 100.0,
                (a.high - a.low) / 2.0 * 100.0
            )
        };
        if !self.checks.is_empty() {
            let reviewed: usize = self.checks.iter().map(|c| c.reviewed).sum();
            let sample: usize = self.checks.iter().map(|c| c.sample).sum();
            line.push_str(&format!(
                "; {reviewed} of {sample} the checks rejected reviewed"
            ));
        }
        line
    }

    /// Every record the sample asks to review, the checks' included.
    pub fn to_review(&self) -> usize {
        self.sample + self.checks.iter().map(|c| c.sample).sum::<usize>()
    }
}

pub fn review_figures(sample: &SamplePlan, ledger: &Ledger) -> ReviewFigures {
    let confidence = sample.settings.confidence;
    let effective = ledger.effective_all();
    let mut kept: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut reasons = BTreeMap::new();
    let mut edits = 0;
    for (record, stratum) in &sample.items {
        let Some(decision) = effective.get(record) else {
            continue;
        };
        let entry = kept.entry(stratum.as_str()).or_default();
        entry.1 += 1;
        entry.0 += usize::from(decision.verdict.keeps());
        if decision.audit.is_some() {
            continue; // the check's figures, below
        }
        match &decision.verdict {
            Verdict::Reject { reason } => {
                *reasons.entry(reason.as_str().to_string()).or_default() += 1
            }
            Verdict::Edit { .. } => edits += 1,
            Verdict::Accept => {}
        }
    }
    let strata: Vec<StratumFigures> = sample
        .strata
        .iter()
        .map(|s| {
            let (yes, all) = kept.get(s.stratum.as_str()).copied().unwrap_or_default();
            StratumFigures {
                stratum: s.stratum.clone(),
                population: s.population,
                sample: s.size,
                reviewed: all,
                acceptance: wilson(yes, all, confidence),
            }
        })
        .collect();
    let (checked, records): (Vec<&StratumFigures>, Vec<&StratumFigures>) =
        strata.iter().partition(|s| s.is_check());
    let (yes, all) = records.iter().fold((0, 0), |(y, a), s| {
        (y + s.acceptance.successes, a + s.acceptance.total)
    });
    let (checks, checks_recall) = checks_against_reviewers(&checked, &records, confidence);
    let sampled = records.iter().map(|s| s.sample).sum();
    let population = records.iter().map(|s| s.population).sum();
    let by_reviewer = ledger.by_reviewer();
    let reviewers = by_reviewer
        .iter()
        .map(|(name, decided)| (name.to_string(), decided.len()))
        .collect();
    let names: Vec<&str> = by_reviewer.keys().copied().collect();
    let mut agreement = Vec::new();
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            let pairs: Vec<(bool, bool)> = by_reviewer[a]
                .iter()
                .filter_map(|(record, da)| {
                    by_reviewer[b]
                        .get(record)
                        .map(|db| (da.verdict.keeps(), db.verdict.keeps()))
                })
                .collect();
            if pairs.is_empty() {
                continue;
            }
            agreement.push(Agreement {
                reviewers: (a.to_string(), b.to_string()),
                items: pairs.len(),
                agreed: pairs.iter().filter(|(x, y)| x == y).count(),
                kappa: cohens_kappa(&pairs),
            });
        }
    }
    ReviewFigures {
        confidence,
        margin: sample.settings.margin,
        after_feedback: sample.settings.after_feedback,
        sample: sampled,
        population,
        reviewed: all,
        acceptance: wilson(yes, all, confidence),
        strata,
        reasons,
        edits,
        corrected_overall: effective
            .values()
            .filter(|d| matches!(d.verdict, Verdict::Edit { .. }))
            .count(),
        rejected_overall: effective
            .values()
            .filter(|d| d.audit.is_none() && !d.verdict.keeps())
            .count(),
        reviewers,
        agreement,
        checks,
        checks_recall,
    }
}

/// Each check's precision, and the recall of each and of all together,
/// estimated from the stratified sample: a stratum of N records of which
/// reviewers rejected a share r stands for N * r rejections.
fn checks_against_reviewers(
    checked: &[&StratumFigures],
    records: &[&StratumFigures],
    confidence: f64,
) -> (Vec<CheckFigures>, Option<f64>) {
    let rejections = |s: &StratumFigures| {
        let reviewed = s.acceptance.total.max(1) as f64;
        s.population as f64 * (s.acceptance.total - s.acceptance.successes) as f64 / reviewed
    };
    let every_stratum_reviewed = checked
        .iter()
        .chain(records)
        .all(|s| s.reviewed > 0 || s.population == 0);
    let caught: f64 = checked.iter().map(|s| rejections(s)).sum();
    let missed: f64 = records.iter().map(|s| rejections(s)).sum();
    let total = caught + missed;
    let recall = |part: f64| (every_stratum_reviewed && total > 0.0).then(|| part / total);
    let figures = checked
        .iter()
        .map(|s| {
            let rejected_too = s.acceptance.total - s.acceptance.successes;
            CheckFigures {
                check: s.stratum[CHECK_STRATUM.len()..].to_string(),
                population: s.population,
                sample: s.sample,
                reviewed: s.reviewed,
                precision: wilson(rejected_too, s.acceptance.total, confidence),
                recall: recall(rejections(s)),
            }
        })
        .collect();
    let all = (!checked.is_empty()).then(|| recall(caught)).flatten();
    (figures, all)
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

impl ReviewFigures {
    /// The dataset card's "Human review" section.
    pub fn card_section(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::from("## Human review\n\n");
        let pct = (self.confidence * 100.0).round();
        let _ = writeln!(
            out,
            "A stratified sample of {} of the {} records the automatic checks accepted{}, sized for \
             +-{:.0} points at {pct}% per stratum. {} reviewed by {} reviewer(s); acceptance {} at {pct}% \
             (Wilson interval). Over every review of this plan, {} rejected record(s) are left out \
             of this dataset and {} corrected record(s) replace their originals.\n",
            self.sample,
            self.population,
            if self.after_feedback {
                " after review feedback changed their prompts"
            } else {
                ""
            },
            self.margin * 100.0,
            self.reviewed,
            self.reviewers.len(),
            self.acceptance,
            self.rejected_overall,
            self.corrected_overall
        );
        out.push_str("| stratum | records | sample | reviewed | acceptance [CI] |\n| --- | ---: | ---: | ---: | --- |\n");
        for s in self.record_strata() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                cell(&s.stratum),
                s.population,
                s.sample,
                s.reviewed,
                s.acceptance.shown()
            );
        }
        if !self.reasons.is_empty() {
            out.push_str("\n| rejection reason | records |\n| --- | ---: |\n");
            for (reason, n) in &self.reasons {
                let _ = writeln!(out, "| {reason} | {n} |");
            }
        }
        if !self.checks.is_empty() {
            let _ = writeln!(
                out,
                "\nThe automatic checks against the reviewers, from a sample of what each check \
                 rejected (those records stay out of the dataset whatever the review says). \
                 Precision: reviewers reject them too. Recall: the check's estimated share of \
                 every attempt reviewers would reject, each stratum weighted by its size \
                 ({} for all checks together; \"-\" until every stratum has a review).\n",
                share_shown(self.checks_recall)
            );
            out.push_str("| check | rejected | reviewed | precision [CI] | recall |\n| --- | ---: | ---: | --- | ---: |\n");
            for c in &self.checks {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    cell(&c.check),
                    c.population,
                    c.reviewed,
                    c.precision.shown(),
                    share_shown(c.recall)
                );
            }
        }
        if !self.agreement.is_empty() {
            out.push_str("\n| reviewers | both decided | agreed | Cohen's kappa |\n| --- | ---: | ---: | ---: |\n");
            for a in &self.agreement {
                let kappa = a.kappa.map_or("-".to_string(), |k| format!("{k:.2}"));
                let _ = writeln!(
                    out,
                    "| {} & {} | {} | {} | {kappa} |",
                    a.reviewers.0, a.reviewers.1, a.items, a.agreed
                );
            }
        }
        out.push('\n');
        out
    }
}
