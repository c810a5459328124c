//! The dataset card (README.md of an exported dataset): what is in it, how
//! it was made, and how to use and trace it.

use std::collections::BTreeMap;

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, UndefinedBehavior, Value, context};
use seedling_common::cost::RunCost;

use super::report::DiversityFacts;
use crate::plan::Plan;
use crate::quality::diversity::LexicalDiversity;
use crate::quality::faithfulness::JudgedAnswers;
use crate::quality::funnel::FunnelRow;
use crate::quality::judge_probe::JudgeReliability;
use crate::review::ReviewFigures;
use crate::verify::{VerificationReport, card_section};

/// An answer the support check rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct SupportSample {
    pub reason: String,
    pub input: String,
    pub response: String,
    /// The offending phrase, the reference it contradicts, or why.
    pub detail: String,
}

/// Everything the card reports.
#[derive(Debug)]
pub struct CardFacts<'a> {
    pub plan: &'a Plan,
    pub plan_id: &'a str,
    pub version: &'a str,
    pub generator_version: &'a str,
    pub system_prompt: &'a str,
    pub per_split: &'a BTreeMap<String, usize>,
    pub methods: &'a BTreeMap<String, usize>,
    pub languages: &'a BTreeMap<String, usize>,
    pub strata: &'a BTreeMap<String, usize>,
    pub scores: &'a [f64],
    /// Records that cite a source span for their figures.
    pub cited: usize,
    pub attempts: u64,
    /// What every attempt of the plan cost, summed over its runs.
    pub cost: &'a RunCost,
    pub funnel: &'a [FunnelRow],
    pub rejected: &'a BTreeMap<String, u64>,
    /// (accepted record, why): its question was asked again and answered differently.
    pub consistency_flags: &'a [(String, String)],
    /// A few answers the support check rejected, with why.
    pub support_samples: &'a [SupportSample],
    /// A judge model's readings beside the support check, if one ran.
    pub faithfulness: Option<&'a JudgedAnswers>,
    /// The latest `seedling quality judge-probe --store` for the plan: (model, figures).
    pub judge_probe: Option<(&'a str, &'a JudgeReliability)>,
    pub diversity: &'a DiversityFacts,
    /// The latest `seedling verify` of this dataset version, if one ran.
    /// The newest fine-tuned verification and the newest proxy, in that order.
    pub verifications: &'a [VerificationReport],
    pub review: Option<&'a ReviewFigures>,
}

/// The card's prose and layout; the figures below fill it in.
const TEMPLATE: &str = include_str!("card.md.j2");
const TEMPLATE_NAME: &str = "card.md.j2";

/// Counts of scores in ten bins over [0, 1].
pub fn histogram(scores: &[f64]) -> [usize; 10] {
    let mut bins = [0usize; 10];
    for score in scores {
        bins[((score.clamp(0.0, 1.0) * 10.0) as usize).min(9)] += 1;
    }
    bins
}

/// Rows of a two-column table, in the map's order.
fn rows<V: ToString>(map: &BTreeMap<String, V>) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

/// The quality-score histogram as table rows (`0.3-0.4`, count).
fn score_bins(scores: &[f64]) -> Vec<(String, String)> {
    histogram(scores)
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                format!("{:.1}-{:.1}", i as f64 / 10.0, (i + 1) as f64 / 10.0),
                n.to_string(),
            )
        })
        .collect()
}

/// Free text as one table cell: pipes escaped, one line, cut at 160
/// characters.
fn cell(text: &str) -> String {
    let flat = text.replace('|', "\\|").replace('\n', " ");
    match flat.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

fn support_sample(sample: &SupportSample) -> Value {
    context! {
        reason => &sample.reason,
        input => cell(&sample.input),
        response => cell(&sample.response),
        detail => cell(&sample.detail),
    }
}

/// Where generation's tokens and engine time went, per stage and per
/// accepted record (rejected attempts' cost included: it is what a record
/// cost to make). None when no attempt reported a cost.
fn cost_facts(cost: &RunCost, accepted: usize) -> Option<Value> {
    if cost.is_empty() || accepted == 0 {
        return None;
    }
    let per = |n: u64| n as f64 / accepted as f64;
    let stages: Vec<Vec<String>> = cost
        .ordered_stages()
        .into_iter()
        .map(|(stage, c)| {
            vec![
                stage.to_string(),
                format!("{:.1}", per(c.calls)),
                format!("{:.0}", per(c.prompt_tokens)),
                format!(
                    "{:.0}%",
                    100.0 * c.prompt_tokens_reused as f64 / c.prompt_tokens.max(1) as f64
                ),
                format!("{:.0}", per(c.generated_tokens)),
                format!("{:.1}", per(c.prefill_ms) / 1e3),
                format!("{:.1}", per(c.decode_ms) / 1e3),
            ]
        })
        .collect();
    let embedding = (cost.embeddings > 0).then(|| {
        context! {
            calls => format!("{:.1}", per(cost.embeddings)),
            seconds => format!("{:.1}", per(cost.embedding_ms) / 1e3),
        }
    });
    Some(context! {
        time_split => cost.split(0).describe(),
        accepted,
        stages,
        embedding,
    })
}

fn judge_probe_facts(model: &str, r: &JudgeReliability) -> Value {
    let percent = |share: f64| format!("{:.1}%", share * 100.0);
    context! {
        model,
        items => r.items,
        judgements => r.judgements,
        correct_beats_contradicting => format!("{} of {}", r.correct_beats_contradicting, r.items),
        correctness_margin => format!("{:+.3}", r.correctness_margin),
        self_agreement => percent(r.self_agreement),
        length_bias => format!("{:+.3}", r.length_bias),
        position_consistency => percent(r.position_consistency),
        first_position_share => percent(r.first_position_share),
        pairwise_accuracy => percent(r.pairwise_accuracy),
    }
}

/// One row of the diversity table: `-` where no dispersion was measured.
fn diversity_row(name: &str, d: &LexicalDiversity, spread: Option<f64>) -> Vec<String> {
    vec![
        name.to_string(),
        d.texts.to_string(),
        format!("{:.3}", d.distinct_1),
        format!("{:.3}", d.distinct_2),
        format!("{:.3}", d.type_token_ratio),
        format!("{:.3}", d.self_bleu),
        spread.map_or("-".to_string(), |x| format!("{x:.3}")),
    ]
}

fn diversity_rows(d: &DiversityFacts) -> Vec<Vec<String>> {
    let mut out = vec![
        diversity_row("inputs", &d.inputs, d.input_dispersion),
        diversity_row("responses", &d.responses, None),
    ];
    for (subdomain, lexical) in &d.per_subdomain {
        let spread = d.per_subdomain_dispersion.get(subdomain).copied().flatten();
        out.push(diversity_row(
            &format!("inputs: {subdomain}"),
            lexical,
            spread,
        ));
    }
    out
}

fn balance_rows(d: &DiversityFacts) -> Vec<Vec<String>> {
    d.balance
        .iter()
        .map(|b| {
            vec![
                b.dimension.to_string(),
                format!("{}/{}", b.covered, b.categories),
                format!("{:.3}", b.entropy),
            ]
        })
        .collect()
}

/// The plan's size, as the card's "Plan" section states it.
fn plan_facts(plan: &Plan) -> Value {
    context! {
        seed => plan.seed,
        target => plan.target.accepted,
        subdomains => plan.subdomains.len(),
        personas => plan.personas.len(),
        languages => plan.languages.len(),
        task_types => plan.task_types.len(),
        adversarial_share => plan.adversarial.share.to_string(),
        augmentation_share => plan.augmentation.share.to_string(),
        glossary => plan.glossary.len(),
        rules => plan.rules.len(),
        references => plan.references.len(),
    }
}

/// The template environment: a line holding only a block tag leaves
/// nothing behind, and a misspelt variable fails instead of printing empty.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_template(TEMPLATE_NAME, TEMPLATE)
        .expect("card.md.j2 does not parse: a bug in the template");
    env
}

pub fn render_card(f: &CardFacts<'_>) -> String {
    let plan = f.plan;
    // Floats the card prints as Rust writes them (`0.5`, `1`): the template
    // engine would write `1.0`.
    let facts = context! {
        name => &plan.domain.name,
        description => &plan.domain.description,
        plan_id => f.plan_id,
        version => f.version,
        generator_version => f.generator_version,
        system_prompt => f.system_prompt,
        per_split => rows(f.per_split),
        empty_splits => f
            .per_split
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>(),
        methods => rows(f.methods),
        languages => rows(f.languages),
        strata => rows(f.strata),
        min_score => plan.quality.min_score.to_string(),
        judge => plan.quality.judge,
        judge_weight => plan.quality.judge_weight.to_string(),
        cited => f.cited,
        total => f.per_split.values().sum::<usize>(),
        score_bins => score_bins(f.scores),
        attempts => f.attempts,
        funnel => f
            .funnel
            .iter()
            .map(|r| (r.stage.to_string(), r.count.to_string()))
            .collect::<Vec<_>>(),
        rejected => rows(f.rejected),
        support_samples => f.support_samples.iter().map(support_sample).collect::<Vec<_>>(),
        faithfulness => f.faithfulness.map(JudgedAnswers::line),
        cost => cost_facts(f.cost, f.per_split.values().sum()),
        judge_probe => f.judge_probe.map(|(model, r)| judge_probe_facts(model, r)),
        consistency_flags => f.consistency_flags.to_vec(),
        diversity => diversity_rows(f.diversity),
        balance => balance_rows(f.diversity),
        adversarial_share => format!("{:.3}", f.diversity.adversarial_share),
        plan => plan_facts(plan),
        review => f.review.map(ReviewFigures::card_section),
        verification => (!f.verifications.is_empty())
            .then(|| f.verifications.iter().map(card_section).collect::<String>()),
    };
    environment()
        .get_template(TEMPLATE_NAME)
        .and_then(|template| template.render(facts))
        .expect("the card template does not render its own facts: a bug in card.md.j2")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use seedling_common::cost::StageCost;

    use super::*;
    use crate::dataset::report::Balance;

    fn lexical(texts: usize) -> LexicalDiversity {
        LexicalDiversity {
            texts,
            distinct_1: 0.5,
            distinct_2: 0.75,
            type_token_ratio: 0.25,
            self_bleu: 0.125,
        }
    }

    /// The branches an export with few records rarely takes (a judge
    /// probe, cost with embeddings, rejected samples, flags, an empty
    /// split) render, and the figures come out as Rust formats them.
    #[test]
    fn every_optional_section_renders() {
        let mut plan = crate::plan::load_plan(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/plans/library-desk.toml"
        )))
        .unwrap();
        plan.quality.judge = true;
        plan.quality.judge_weight = 1.0;
        let counts = |pairs: &[(&str, usize)]| -> BTreeMap<String, usize> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let per_split = counts(&[("test", 0), ("train", 4), ("validation", 1)]);
        let strata = counts(&[("loans | faq", 5)]);
        let rejected: BTreeMap<String, u64> = [("unsupported_fact".to_string(), 2)].into();
        let mut cost = RunCost {
            embeddings: 5,
            embedding_ms: 500,
            ..RunCost::default()
        };
        cost.stages.insert(
            "response".into(),
            StageCost {
                calls: 10,
                prompt_tokens: 1000,
                prompt_tokens_reused: 250,
                generated_tokens: 500,
                queued_ms: 0,
                prefill_ms: 2000,
                decode_ms: 8000,
            },
        );
        let probe = JudgeReliability {
            items: 4,
            judgements: 32,
            correct_beats_contradicting: 3,
            correctness_margin: 0.25,
            self_agreement: 0.5,
            length_bias: -0.125,
            position_consistency: 1.0,
            first_position_share: 0.5,
            pairwise_accuracy: 0.75,
        };
        let diversity = DiversityFacts {
            inputs: lexical(5),
            responses: lexical(5),
            per_subdomain: [("loans".to_string(), lexical(5))].into(),
            input_dispersion: None,
            per_subdomain_dispersion: [("loans".to_string(), Some(0.5))].into(),
            balance: vec![Balance {
                dimension: "subdomain",
                covered: 1,
                categories: 2,
                entropy: 0.0,
            }],
            adversarial_share: 0.2,
        };
        let mut judged = JudgedAnswers::default();
        judged.add(&serde_json::json!({"model": "judge-1.5b", "verdict": "unsupported", "support_check": "passed"}));
        judged.add(&serde_json::json!({"model": "judge-1.5b", "verdict": "supported", "support_check": "passed"}));
        let card = render_card(&CardFacts {
            plan: &plan,
            plan_id: "p-1",
            version: "ds-1",
            generator_version: "g-1",
            system_prompt: "be helpful",
            per_split: &per_split,
            methods: &BTreeMap::new(),
            languages: &BTreeMap::new(),
            strata: &strata,
            scores: &[0.95],
            cited: 1,
            attempts: 7,
            cost: &cost,
            funnel: &[],
            rejected: &rejected,
            consistency_flags: &[("r|1".to_string(), "yes against no".to_string())],
            support_samples: &[SupportSample {
                reason: "unsupported_fact".into(),
                input: "a|b\nc".into(),
                response: "x".repeat(161),
                detail: String::new(),
            }],
            faithfulness: Some(&judged),
            judge_probe: Some(("judge-model", &probe)),
            diversity: &diversity,
            verifications: &[],
            review: None,
        });
        for line in [
            "No record fell to test (fewer lineage groups than splits, or a share of zero): its files",
            "| loans \\| faq | 5 |\n\n## Quality",
            "at weight 1. `review_status`",
            "| 0.9-1.0 | 1 |\n\nAcceptance funnel: 5 records accepted of 7 attempts.",
            "| unsupported_fact | a\\|b c | xxx",
            "rejected as `judge_unsupported` those it found stating something their sources do not back: judge model judge-1.5b against the support check on 2 answers: both pass 1, both reject 0, only the check rejects 0, only the judge rejects 1; agreement 50%, Cohen's kappa 0.00.",
            "x… |  |\n\n## What it cost",
            "| response | 2.0 | 200 | 25% | 100 | 0.4 | 1.6 |\n| embedding | 1.0 | | | | 0.1 | |\n\n",
            "Probe of the judge (judge-model) on 4 questions",
            "| mean margin (score units) | +0.250 |\n| seed-to-seed agreement within one point | 50.0% |",
            "1 accepted record(s) got a second",
            "| r\\|1 | yes against no |\n\n## Diversity",
            "| inputs | 5 | 0.500 | 0.750 | 0.250 | 0.125 | - |",
            "| inputs: loans | 5 | 0.500 | 0.750 | 0.250 | 0.125 | 0.500 |\n\n| dimension",
            "| subdomain | 1/2 | 0.000 |\n\nAdversarial share: 0.200",
        ] {
            assert!(card.contains(line), "card lacks {line:?}:\n{card}");
        }
        assert!(card.ends_with("why it is in its split.\n\n"), "{card}");
    }

    #[test]
    fn histogram_bins_cover_the_edges() {
        assert_eq!(
            histogram(&[0.0, 0.05, 0.99, 1.0, 0.5]),
            [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
        );
    }
}
