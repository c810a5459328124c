//! Semantic checks of a parsed plan. Each problem carries the path of the
//! field it is about, so the loader can point at the line.

use std::collections::HashSet;
use std::fmt;

use super::schema::Plan;

/// One step of a field path: a key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(&'static str),
    Name(String),
    Index(usize),
}

/// A field path such as `subdomains[2].weight`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldPath(pub Vec<Segment>);

impl FieldPath {
    fn key(&self, key: &'static str) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(key));
        path
    }

    fn name(&self, name: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Name(name.to_string()));
        path
    }

    fn index(&self, idx: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Index(idx));
        path
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if n == 0 => write!(f, "{key}")?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Name(name) => write!(f, ".{name}")?,
                Segment::Index(idx) => write!(f, "[{idx}]")?,
            }
        }
        Ok(())
    }
}

/// A semantic problem with a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: FieldPath,
    pub message: String,
}

/// ISO 639-1 codes the pipeline's language checks know.
pub const KNOWN_LANGUAGES: &[&str] = &[
    "ar", "bg", "bn", "ca", "cs", "da", "de", "el", "en", "es", "et", "fa", "fi", "fr", "he", "hi",
    "hr", "hu", "id", "it", "ja", "ko", "lt", "lv", "ms", "nl", "no", "pl", "pt", "ro", "ru", "sk",
    "sl", "sr", "sv", "sw", "ta", "th", "tl", "tr", "uk", "ur", "vi", "zh",
];

/// The most accepted records one plan may ask for. A store holds about
/// 7 KB of lineage per record (BENCHMARKS.md), so this is ~70 GB on disk
/// and days of generation on a large cluster; a larger dataset is several
/// plans. The same limit applies to a `--target` override.
pub const MAX_TARGET: u64 = 10_000_000;

/// Whether `target` accepted records is something a plan can ask for.
pub fn check_target(target: i64) -> Result<(), String> {
    if target <= 0 {
        Err(format!("must be > 0 (got {target})"))
    } else if target as u64 > MAX_TARGET {
        Err(format!(
            "must be at most {MAX_TARGET} (got {target}); a larger dataset is several plans"
        ))
    } else {
        Ok(())
    }
}

/// Variables a task template may use; the pipeline fills every one of them.
pub const TEMPLATE_VARIABLES: &[&str] = &[
    "domain",
    "subdomain",
    "persona",
    "language",
    "scenario",
    "term",
    "definition",
    "adversarial_kind",
    "example_question",
];

const SHARE_TOLERANCE: f64 = 1e-6;

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn fail(&mut self, path: FieldPath, message: impl Into<String>) {
        self.problems.push(Problem {
            path,
            message: message.into(),
        });
    }

    fn positive(&mut self, path: FieldPath, value: f64) {
        if !(value.is_finite() && value > 0.0) {
            self.fail(path, format!("must be > 0 (got {value})"));
        }
    }

    fn unit_interval(&mut self, path: FieldPath, value: f64) {
        if !(0.0..=1.0).contains(&value) {
            self.fail(path, format!("must be between 0 and 1 (got {value})"));
        }
    }

    fn shares_sum_to_one(&mut self, path: FieldPath, shares: &[f64]) {
        let sum: f64 = shares.iter().sum();
        if (sum - 1.0).abs() > SHARE_TOLERANCE && shares.iter().all(|s| s.is_finite()) {
            let shown = (sum * 1e6).round() / 1e6;
            self.fail(path, format!("shares sum to {shown}; they must sum to 1"));
        }
    }

    /// A share in [0, 1) that needs at least one kind when it is above 0.
    fn share_with_kinds(&mut self, path: FieldPath, share: f64, kinds: usize) {
        if !(0.0..1.0).contains(&share) {
            self.fail(
                path.key("share"),
                format!("must be in [0, 1) (got {share})"),
            );
        } else if share > 0.0 && kinds == 0 {
            self.fail(path.key("kinds"), "needs at least one kind when share > 0");
        }
    }

    fn non_empty(&mut self, path: FieldPath, what: &str, len: usize) -> bool {
        if len == 0 {
            self.fail(path, format!("needs at least one {what}"));
        }
        len > 0
    }

    fn unique_names<'a>(&mut self, path: &FieldPath, names: impl Iterator<Item = &'a str>) {
        let mut seen = HashSet::new();
        for (idx, name) in names.enumerate() {
            if name.trim().is_empty() {
                self.fail(path.index(idx).key("name"), "must not be empty");
            } else if !seen.insert(name) {
                self.fail(
                    path.index(idx).key("name"),
                    format!("{name:?} appears twice"),
                );
            }
        }
    }
}

/// Every semantic problem of a plan (empty when it is valid).
pub fn validate(plan: &Plan) -> Vec<Problem> {
    let mut c = Checker {
        problems: Vec::new(),
    };
    check_version(&mut c, plan);
    check_domain(&mut c, plan);
    check_subdomains(&mut c, plan);
    check_subdomain_references(&mut c, plan);
    check_personas(&mut c, plan);
    check_languages(&mut c, plan);
    check_task_types(&mut c, plan);
    check_rules(&mut c, plan);
    check_adversarial_and_augmentation(&mut c, plan);
    check_methods(&mut c, plan);
    check_sampling(&mut c, plan);
    check_target_accepted(&mut c, plan);
    check_quality(&mut c, plan);
    check_splits(&mut c, plan);
    c.problems
}

/// The path of a top-level field of the plan.
fn field(key: &'static str) -> FieldPath {
    FieldPath::default().key(key)
}

fn check_version(c: &mut Checker, plan: &Plan) {
    if plan.version != 1 {
        c.fail(
            field("version"),
            format!("is {}; this build reads plan version 1", plan.version),
        );
    }
}

fn check_domain(c: &mut Checker, plan: &Plan) {
    if plan.domain.name.trim().is_empty() {
        c.fail(field("domain").key("name"), "must not be empty");
    }
}

fn check_subdomains(c: &mut Checker, plan: &Plan) {
    let subdomains = field("subdomains");
    if c.non_empty(subdomains.clone(), "subdomain", plan.subdomains.len()) {
        c.unique_names(&subdomains, plan.subdomains.iter().map(|s| s.name.as_str()));
        for (idx, subdomain) in plan.subdomains.iter().enumerate() {
            c.positive(subdomains.index(idx).key("weight"), subdomain.weight);
        }
    }
}

/// Scenarios and expert examples name only subdomains of the plan.
fn check_subdomain_references(c: &mut Checker, plan: &Plan) {
    let subdomain_names: HashSet<&str> = plan.subdomains.iter().map(|s| s.name.as_str()).collect();
    let scenario_refs = plan.scenarios.iter().map(|s| s.subdomain.as_deref());
    let example_refs = plan.expert_examples.iter().map(|e| e.subdomain.as_deref());
    let refs: [(&'static str, Vec<Option<&str>>); 2] = [
        ("scenarios", scenario_refs.collect()),
        ("expert_examples", example_refs.collect()),
    ];
    for (key, names) in refs {
        for (idx, name) in names.into_iter().enumerate() {
            if let Some(name) = name.filter(|n| !subdomain_names.contains(n)) {
                c.fail(
                    field(key).index(idx).key("subdomain"),
                    format!("names unknown subdomain {name:?}"),
                );
            }
        }
    }
}

fn check_personas(c: &mut Checker, plan: &Plan) {
    let personas = field("personas");
    if c.non_empty(personas.clone(), "persona", plan.personas.len()) {
        c.unique_names(&personas, plan.personas.iter().map(|p| p.name.as_str()));
        for (idx, persona) in plan.personas.iter().enumerate() {
            c.positive(personas.index(idx).key("weight"), persona.weight);
        }
    }
}

fn check_languages(c: &mut Checker, plan: &Plan) {
    let languages = field("languages");
    if c.non_empty(languages.clone(), "language", plan.languages.len()) {
        let mut seen = HashSet::new();
        for (idx, language) in plan.languages.iter().enumerate() {
            if !KNOWN_LANGUAGES.contains(&language.code.as_str()) {
                c.fail(
                    languages.index(idx).key("code"),
                    format!("{:?} is not a known ISO 639-1 language code", language.code),
                );
            } else if !seen.insert(language.code.as_str()) {
                c.fail(
                    languages.index(idx).key("code"),
                    format!("{:?} appears twice", language.code),
                );
            }
            c.positive(languages.index(idx).key("share"), language.share);
        }
        let shares: Vec<f64> = plan.languages.iter().map(|l| l.share).collect();
        c.shares_sum_to_one(languages.clone(), &shares);
    }
}

fn check_task_types(c: &mut Checker, plan: &Plan) {
    let task_types = field("task_types");
    if c.non_empty(task_types.clone(), "task type", plan.task_types.len()) {
        c.unique_names(&task_types, plan.task_types.iter().map(|t| t.name.as_str()));
        let env = minijinja::Environment::new();
        for (idx, task) in plan.task_types.iter().enumerate() {
            let path = task_types.index(idx);
            c.positive(path.key("share"), task.share);
            for language in &plan.languages {
                if !task.templates.contains_key(&language.code) {
                    c.fail(
                        path.key("templates"),
                        format!("has no template for plan language {:?}", language.code),
                    );
                }
            }
            for (code, source) in &task.templates {
                check_template(c, &env, path.key("templates").name(code), source);
            }
        }
        let shares: Vec<f64> = plan.task_types.iter().map(|t| t.share).collect();
        c.shares_sum_to_one(task_types.clone(), &shares);
    }
}

/// A task template parses and uses only [`TEMPLATE_VARIABLES`].
fn check_template<'source>(
    c: &mut Checker,
    env: &minijinja::Environment<'source>,
    at: FieldPath,
    source: &'source str,
) {
    match env.template_from_str(source) {
        Err(err) => c.fail(at, format!("template syntax error: {err}")),
        Ok(template) => {
            let mut unknown: Vec<String> = template
                .undeclared_variables(false)
                .into_iter()
                .filter(|v| !TEMPLATE_VARIABLES.contains(&v.as_str()))
                .collect();
            unknown.sort();
            if !unknown.is_empty() {
                c.fail(
                    at,
                    format!(
                        "template uses unknown variable(s) {}; known: {}",
                        unknown.join(", "),
                        TEMPLATE_VARIABLES.join(", ")
                    ),
                );
            }
        }
    }
}

fn check_rules(c: &mut Checker, plan: &Plan) {
    for (idx, rule) in plan.rules.iter().enumerate() {
        if let Some(pattern) = &rule.forbidden_regex
            && let Err(err) = regex::Regex::new(pattern)
        {
            let first_line = err
                .to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_string();
            c.fail(
                field("rules").index(idx).key("forbidden_regex"),
                format!("invalid regex: {first_line}"),
            );
        }
    }
}

fn check_adversarial_and_augmentation(c: &mut Checker, plan: &Plan) {
    for (key, share, kinds) in [
        (
            "adversarial",
            plan.adversarial.share,
            plan.adversarial.kinds.len(),
        ),
        (
            "augmentation",
            plan.augmentation.share,
            plan.augmentation.kinds.len(),
        ),
    ] {
        c.share_with_kinds(field(key), share, kinds);
    }
}

fn check_methods(c: &mut Checker, plan: &Plan) {
    let m = &plan.methods;
    let methods = field("methods");
    for (key, share) in [
        ("template", m.template),
        ("self_instruct", m.self_instruct),
        ("evol_instruct", m.evol_instruct),
        ("magpie", m.magpie),
        ("fact_first", m.fact_first),
    ] {
        c.unit_interval(methods.key(key), share);
    }
    c.shares_sum_to_one(
        methods,
        &[m.template, m.self_instruct, m.evol_instruct, m.magpie],
    );
    if m.self_instruct > 0.0 && plan.expert_examples.is_empty() {
        c.fail(
            field("expert_examples"),
            "Self-Instruct (methods.self_instruct > 0) needs at least one expert example",
        );
    }
}

fn check_sampling(c: &mut Checker, plan: &Plan) {
    let sampling = field("sampling");
    if !(plan.sampling.temperature >= 0.0 && plan.sampling.temperature.is_finite()) {
        c.fail(sampling.key("temperature"), "must be >= 0");
    }
    if !(plan.sampling.top_p > 0.0 && plan.sampling.top_p <= 1.0) {
        c.fail(sampling.key("top_p"), "must be in (0, 1]");
    }
    if plan.sampling.max_new_tokens == 0 {
        c.fail(sampling.key("max_new_tokens"), "must be > 0");
    }
}

fn check_target_accepted(c: &mut Checker, plan: &Plan) {
    if let Err(message) = check_target(plan.target.accepted) {
        c.fail(field("target").key("accepted"), message);
    }
}

fn check_quality(c: &mut Checker, plan: &Plan) {
    let quality = field("quality");
    c.unit_interval(quality.key("min_score"), plan.quality.min_score);
    c.unit_interval(quality.key("judge_weight"), plan.quality.judge_weight);
    for (key, threshold) in [
        (
            "near_duplicate_jaccard",
            plan.quality.near_duplicate_jaccard,
        ),
        (
            "semantic_duplicate_cosine",
            plan.quality.semantic_duplicate_cosine,
        ),
    ] {
        if !(threshold > 0.0 && threshold <= 1.0) {
            c.fail(
                quality.key(key),
                format!("must be in (0, 1] (got {threshold}); 1 counts only identical texts"),
            );
        }
    }
}

fn check_splits(c: &mut Checker, plan: &Plan) {
    let splits = field("splits");
    let s = &plan.splits;
    for (key, share) in [
        ("train", s.train),
        ("validation", s.validation),
        ("test", s.test),
    ] {
        c.unit_interval(splits.key(key), share);
    }
    if s.train <= 0.0 {
        c.fail(splits.key("train"), "must be > 0");
    }
    c.shares_sum_to_one(splits, &[s.train, s.validation, s.test]);
}
