//! Planning one attempt (design section 4.1, steps 2-5): the generation
//! method, the template instance with its sampled parameters, and the model
//! calls a worker runs for it. Deterministic in plan, stratum and attempt
//! index, so a resumed run plans exactly what an uninterrupted one would.

use seedling_common::embedding::Embedding;
use seedling_common::ids::NodeId;
use seedling_common::work::{
    BackTranslation, CheckSpec, GenerateTask, ModelCall, RuleSpec, SupportSpec,
};

use super::knowledge::{Chunk, Knowledge, content_words, most_relevant_chunk};
use super::spans::{FactSpan, FactSpans};
use crate::plan::{AugmentationKind, Plan, Stratum, UnitParams, render_instruction, sample_unit};
use crate::prompts::{self, CallSettings};
use crate::review::Feedback;

/// How an attempt makes its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Template,
    SelfInstruct,
    EvolInstruct,
    Magpie,
    Augmentation(AugmentationKind),
}

impl Method {
    /// The name in `metadata.generation_method`.
    pub fn name(self) -> String {
        match self {
            Method::Template => "template".into(),
            Method::SelfInstruct => "self_instruct".into(),
            Method::EvolInstruct => "evol_instruct".into(),
            Method::Magpie => "magpie".into(),
            Method::Augmentation(kind) => {
                format!("augmentation:{}", prompts::augmentation_name(kind))
            }
        }
    }
}

/// An accepted record the pipeline can build on (Self-Instruct seeds,
/// augmentation sources).
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedRecord {
    pub id: NodeId,
    pub stratum: usize,
    pub input: String,
    pub response: String,
    /// The engine's embedding of the input, when the semantic tier ran.
    pub input_embedding: Option<Embedding>,
}

/// The accepted records in acceptance order, indexed by stratum and by
/// language: planning a unit looks up its Self-Instruct seeds and
/// augmentation sources here instead of scanning every accepted record
/// (which made each unit cost more as the dataset grew).
#[derive(Debug, Default)]
pub struct AcceptedPool {
    records: Vec<AcceptedRecord>,
    /// Positions in `records`, per stratum, ascending.
    by_stratum: Vec<Vec<usize>>,
    /// Positions in `records`, per language, ascending.
    by_language: std::collections::HashMap<String, Vec<usize>>,
    /// Position in `records` of each record.
    by_id: std::collections::HashMap<NodeId, usize>,
}

impl AcceptedPool {
    pub fn push(&mut self, record: AcceptedRecord, language: &str) {
        let position = self.records.len();
        if self.by_stratum.len() <= record.stratum {
            self.by_stratum.resize_with(record.stratum + 1, Vec::new);
        }
        self.by_stratum[record.stratum].push(position);
        self.by_language
            .entry(language.to_string())
            .or_default()
            .push(position);
        self.by_id.insert(record.id.clone(), position);
        self.records.push(record);
    }

    pub fn get(&self, position: usize) -> &AcceptedRecord {
        &self.records[position]
    }

    pub fn by_id(&self, id: &NodeId) -> Option<&AcceptedRecord> {
        self.by_id.get(id).map(|&p| &self.records[p])
    }

    fn of_stratum(&self, stratum: usize) -> &[usize] {
        self.by_stratum.get(stratum).map_or(&[], Vec::as_slice)
    }

    fn of_language(&self, language: &str) -> &[usize] {
        self.by_language.get(language).map_or(&[], Vec::as_slice)
    }

    /// Strata whose accepted records `kind` may turn into records of `target`.
    fn source_strata(
        strata: &[Stratum],
        kind: AugmentationKind,
        target: &Stratum,
    ) -> impl Iterator<Item = usize> {
        strata
            .iter()
            .enumerate()
            .filter(move |(_, s)| augmentable(kind, s, target))
            .map(|(i, _)| i)
    }

    fn has_source(&self, strata: &[Stratum], kind: AugmentationKind, target: &Stratum) -> bool {
        Self::source_strata(strata, kind, target).any(|s| !self.of_stratum(s).is_empty())
    }

    /// Every possible source, in acceptance order.
    fn sources(
        &self,
        strata: &[Stratum],
        kind: AugmentationKind,
        target: &Stratum,
    ) -> Vec<&AcceptedRecord> {
        let mut positions: Vec<usize> = Self::source_strata(strata, kind, target)
            .flat_map(|s| self.of_stratum(s).iter().copied())
            .collect();
        positions.sort_unstable();
        positions.into_iter().map(|p| &self.records[p]).collect()
    }
}

/// The plan's knowledge as instantiation sees it: the plan's own items plus
/// what domain analysis extracted, each with its lineage node.
#[derive(Debug, Clone)]
pub struct Grounding {
    /// The plan with extracted scenarios and concepts appended.
    pub effective: Plan,
    pub scenario_ids: Vec<NodeId>,
    pub glossary_ids: Vec<NodeId>,
    pub knowledge: Knowledge,
    /// The passages of the plan's own knowledge that attempts start from.
    pub spans: FactSpans,
    /// What human review of an earlier round asks of this one.
    pub feedback: Feedback,
}

/// One planned attempt: what the worker runs and what lineage needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedAttempt {
    pub unit: String,
    pub stratum: usize,
    pub attempt: u64,
    pub method: Method,
    /// The rendered template instruction (or the augmentation request).
    pub instruction: String,
    /// What was sampled, for the template instance node.
    pub sampled: serde_json::Value,
    /// Knowledge the instance drew on (terms, scenarios, examples).
    pub instance_grounding: Vec<NodeId>,
    /// Accepted records or expert examples a Self-Instruct prompt showed.
    pub input_grounding: Vec<NodeId>,
    /// Rules and the reference chunk the response prompt carried.
    pub response_grounding: Vec<NodeId>,
    /// The node of each support source, in the order of the task's
    /// [`SupportSpec::sources`]: what a citation's `source` index names.
    pub support_nodes: Vec<NodeId>,
    /// The accepted record an augmentation transformed.
    pub source: Option<NodeId>,
    pub evol_operation: Option<&'static str>,
    pub task: GenerateTask,
}

/// Key of a stratum in unit names and lineage bodies.
pub fn stratum_key(stratum: &Stratum) -> String {
    format!(
        "{}|{}|{}|{}|{}",
        stratum.subdomain,
        stratum.task_type,
        stratum.persona,
        stratum.language,
        if stratum.adversarial {
            "adversarial"
        } else {
            "regular"
        }
    )
}

/// A uniform draw in [0, 1) for one role of one attempt.
fn draw(plan: &Plan, unit: &str, role: &str) -> f64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&plan.seed.to_le_bytes());
    hasher.update(unit.as_bytes());
    hasher.update(&[0]);
    hasher.update(role.as_bytes());
    let mut word = [0u8; 8];
    word.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    (u64::from_le_bytes(word) >> 11) as f64 / (1u64 << 53) as f64
}

fn pick<T: Copy>(items: &[T], x: f64) -> Option<T> {
    (!items.is_empty()).then(|| items[((x * items.len() as f64) as usize).min(items.len() - 1)])
}

/// The method by the plan's mix; augmentation when its draw says so and a
/// source exists.
fn choose_method(plan: &Plan, unit: &str, augmentation_kinds: &[AugmentationKind]) -> Method {
    if draw(plan, unit, "augment") < plan.augmentation.share
        && let Some(kind) = pick(augmentation_kinds, draw(plan, unit, "augmentation_kind"))
    {
        return Method::Augmentation(kind);
    }
    let m = &plan.methods;
    let x = draw(plan, unit, "method");
    let mut edge = 0.0;
    for (share, method) in [
        (m.template, Method::Template),
        (m.self_instruct, Method::SelfInstruct),
        (m.evol_instruct, Method::EvolInstruct),
        (m.magpie, Method::Magpie),
    ] {
        edge += share;
        if x < edge {
            return method;
        }
    }
    Method::Template
}

/// Whether `source` may be augmented into a record of `target` by `kind`:
/// translation changes only the language, persona shift only the persona,
/// the others nothing.
pub fn augmentable(kind: AugmentationKind, source: &Stratum, target: &Stratum) -> bool {
    let same_except = |language: bool, persona: bool| {
        source.subdomain == target.subdomain
            && source.task_type == target.task_type
            && source.adversarial == target.adversarial
            && (language || source.language == target.language)
            && (persona || source.persona == target.persona)
    };
    match kind {
        AugmentationKind::Translation => {
            source.language != target.language && same_except(true, false)
        }
        AugmentationKind::PersonaShift => {
            source.persona != target.persona && same_except(false, true)
        }
        AugmentationKind::Paraphrase | AugmentationKind::FormalityShift => source == target,
    }
}

fn seed_of(plan: &Plan, unit: &str) -> u32 {
    (draw(plan, unit, "seed") * f64::from(u32::MAX)) as u32
}

/// What a response's figures may come from: exactly what its prompt showed
/// (the domain, the rules, the terms, the reference chunk) and the plan's
/// expert answers, each with its lineage node.
fn support_sources(
    plan: &Plan,
    grounding: &Grounding,
    chunk: Option<&Chunk>,
) -> Vec<(NodeId, String)> {
    let knowledge = &grounding.knowledge;
    let mut sources = vec![(
        knowledge.plan_node.clone(),
        format!("{}: {}", plan.domain.name, plan.domain.description),
    )];
    sources.extend(
        knowledge
            .rules
            .iter()
            .zip(&plan.rules)
            .map(|(id, rule)| (id.clone(), rule.statement.clone())),
    );
    sources.extend(
        grounding
            .glossary_ids
            .iter()
            .zip(&plan.glossary)
            .take(prompts::PROMPT_GLOSSARY_TERMS)
            .map(|(id, entry)| (id.clone(), format!("{}: {}", entry.term, entry.definition))),
    );
    sources.extend(
        knowledge
            .examples
            .iter()
            .zip(&plan.expert_examples)
            .map(|(id, example)| {
                (
                    id.clone(),
                    format!("{}\n{}", example.question, example.answer),
                )
            }),
    );
    sources.extend(chunk.map(|c| (c.id.clone(), c.text.clone())));
    sources
}

fn checks(plan: &Plan, stratum: &Stratum, evolved: bool) -> CheckSpec {
    CheckSpec {
        language: stratum.language.clone(),
        rules: plan
            .rules
            .iter()
            .map(|r| RuleSpec {
                must_contain: r.must_contain.clone(),
                must_not_contain: r.must_not_contain.clone(),
                forbidden_regex: r.forbidden_regex.clone(),
            })
            .collect(),
        allow_refusal: stratum.adversarial,
        evolved,
        support: None,
    }
}

/// Plans attempt `attempt` of stratum `index`. `accepted` are the plan's
/// accepted records so far, in acceptance order; `temperature` samples the
/// generation calls (the plan's, or higher when the stratum is steered).
pub fn plan_attempt(
    plan: &Plan,
    grounding: &Grounding,
    strata: &[Stratum],
    index: usize,
    attempt: u64,
    accepted: &AcceptedPool,
    temperature: f32,
) -> Result<PlannedAttempt, String> {
    let mut unit = Unit::sample(
        plan,
        grounding,
        strata,
        index,
        attempt,
        accepted,
        temperature,
    )?;
    let method = choose_method(plan, &unit.name, &unit.augmentation_kinds());
    let span = unit.fact_span(method);
    if let Some(span) = span {
        unit.fit_to(span);
    }
    let instruction = render_instruction(&grounding.effective, &unit.params)?;
    let instance_grounding = unit.instance_grounding(span);
    let sampled = unit.sampled(span);
    let chunk = match span {
        Some(span) => unit.chunk_of(span),
        None => unit.reference_chunk(&instruction),
    };
    let mut response = unit.response(chunk, span);
    let mut input = match method {
        Method::Template => unit.template_input(instruction),
        Method::Magpie => unit.magpie_input(instruction),
        Method::EvolInstruct => unit.evol_input(instruction),
        Method::SelfInstruct => unit.self_instruct_input(instruction),
        Method::Augmentation(kind) => {
            let record = unit.augmentation_source(kind)?;
            let mut back_translation = None;
            if kind == AugmentationKind::Translation {
                response = unit.translation_response(record);
                back_translation = Some(unit.back_translation(record));
            }
            Input {
                back_translation,
                ..unit.augmentation_input(kind, record)
            }
        }
    };
    unit.add_feedback_notes(&mut input.call, &mut response);
    Ok(unit.assemble(sampled, instance_grounding, input, response))
}

/// One attempt being planned: what every planning step reads.
#[derive(Debug)]
struct Unit<'a> {
    plan: &'a Plan,
    grounding: &'a Grounding,
    strata: &'a [Stratum],
    stratum: &'a Stratum,
    index: usize,
    attempt: u64,
    accepted: &'a AcceptedPool,
    /// `stratum_key#attempt`: the unit's name, which keys its draws.
    name: String,
    settings: CallSettings,
    params: UnitParams<'a>,
    /// The passage a fact-first unit's input asks about.
    passage: Option<&'a str>,
}

/// The input call and what its method made along with it.
#[derive(Debug)]
struct Input {
    call: ModelCall,
    /// The method that made it: Self-Instruct falls back to the template
    /// when it has no seeds.
    method: Method,
    /// The rendered template instruction (or the augmentation request).
    instruction: String,
    grounding: Vec<NodeId>,
    source: Option<NodeId>,
    evol_operation: Option<&'static str>,
    evolve: Option<ModelCall>,
    back_translation: Option<BackTranslation>,
}

impl Input {
    fn new(method: Method, instruction: String, call: ModelCall) -> Self {
        Input {
            call,
            method,
            instruction,
            grounding: Vec::new(),
            source: None,
            evol_operation: None,
            evolve: None,
            back_translation: None,
        }
    }
}

/// The response call and what the checks hold it to.
#[derive(Debug)]
struct Response {
    call: ModelCall,
    grounding: Vec<NodeId>,
    /// What the response's figures may come from, with their nodes.
    support: Vec<(NodeId, String)>,
    /// Whether the support is in another language than the response.
    cross_language: bool,
    /// The judge in place of the plan's generic one.
    judge: Option<ModelCall>,
}

impl<'a> Unit<'a> {
    /// The unit's seed and sampled template parameters.
    fn sample(
        plan: &'a Plan,
        grounding: &'a Grounding,
        strata: &'a [Stratum],
        index: usize,
        attempt: u64,
        accepted: &'a AcceptedPool,
        temperature: f32,
    ) -> Result<Self, String> {
        let stratum = &strata[index];
        let name = format!("{}#{attempt}", stratum_key(stratum));
        let settings = CallSettings {
            temperature,
            ..CallSettings::of(plan, seed_of(plan, &name))
        };
        let params = sample_unit(&grounding.effective, stratum, attempt)
            .ok_or_else(|| format!("stratum {name} names a persona the plan does not have"))?;
        Ok(Unit {
            plan,
            grounding,
            strata,
            stratum,
            index,
            attempt,
            accepted,
            name,
            settings,
            params,
            passage: None,
        })
    }

    /// The knowledge the sampled instance drew on: its term, scenario,
    /// expert example and the passage it starts from.
    fn instance_grounding(&self, span: Option<&FactSpan>) -> Vec<NodeId> {
        let effective = &self.grounding.effective;
        let mut instance_grounding = Vec::new();
        if let Some(term) = self.params.term
            && let Some(i) = effective
                .glossary
                .iter()
                .position(|g| std::ptr::eq(g, term))
        {
            instance_grounding.push(self.grounding.glossary_ids[i].clone());
        }
        if let Some(scenario) = self.params.scenario
            && let Some(i) = effective
                .scenarios
                .iter()
                .position(|s| std::ptr::eq(s, scenario))
        {
            instance_grounding.push(self.grounding.scenario_ids[i].clone());
        }
        if let Some(example) = self.params.example
            && let Some(i) = self.plan.expert_examples.iter().position(|e| e == example)
        {
            instance_grounding.push(self.grounding.knowledge.examples[i].clone());
        }
        if let Some(span) = span
            && !instance_grounding.contains(&span.node)
        {
            instance_grounding.push(span.node.clone());
        }
        instance_grounding
    }

    /// What was sampled, for the template instance node.
    fn sampled(&self, span: Option<&FactSpan>) -> serde_json::Value {
        let params = &self.params;
        let mut sampled = serde_json::json!({
            "persona": params.persona.name,
            "scenario": params.scenario.map(|s| s.description.clone()),
            "term": params.term.map(|t| t.term.clone()),
            "example_question": params.example.map(|e| e.question.clone()),
            "adversarial_kind": params.adversarial_kind,
        });
        if let Some(span) = span {
            sampled["fact"] = serde_json::json!({
                "node": span.node,
                "start": span.start,
                "end": span.end,
                "text": span.text,
            });
        }
        sampled
    }

    /// Whether the stratum's task type states the domain's facts.
    fn grounded(&self) -> bool {
        self.plan
            .task_types
            .iter()
            .find(|t| t.name == self.stratum.task_type)
            .is_none_or(|t| t.grounded)
    }

    /// The passage this attempt starts from, when it starts from one: the
    /// plan's `fact_first` share of template, Self-Instruct and
    /// Evol-Instruct attempts of a grounded, regular stratum. The strata of
    /// a subdomain walk its passages between them.
    fn fact_span(&self, method: Method) -> Option<&'a FactSpan> {
        let starts_from_a_fact = matches!(
            method,
            Method::Template | Method::SelfInstruct | Method::EvolInstruct
        ) && !self.stratum.adversarial
            && self.grounded()
            && draw(self.plan, &self.name, "fact_first") < self.plan.methods.fact_first;
        if !starts_from_a_fact {
            return None;
        }
        let spans: &'a FactSpans = &self.grounding.spans;
        spans.pick(self.strata, self.index, self.attempt)
    }

    /// The unit starts from `span`: its input asks about it, and the sampled
    /// term and scenario are replaced by ones the passage is about,
    /// where the plan has such, so the instruction does not ask about one
    /// thing while the passage states another.
    fn fit_to(&mut self, span: &'a FactSpan) {
        self.passage = Some(&span.text);
        let effective: &'a Plan = &self.grounding.effective;
        let text = span.text.to_lowercase();
        if let Some(term) = effective
            .glossary
            .iter()
            .filter(|g| text.contains(&g.term.to_lowercase()))
            .max_by_key(|g| g.term.len())
        {
            self.params.term = Some(term);
        }
        let words = content_words(&span.text);
        let mut best = 0;
        for scenario in &effective.scenarios {
            let in_subdomain = scenario
                .subdomain
                .as_ref()
                .is_none_or(|d| *d == self.stratum.subdomain);
            let shared = content_words(&scenario.description)
                .intersection(&words)
                .count();
            if in_subdomain && shared > best {
                best = shared;
                self.params.scenario = Some(scenario);
            }
        }
    }

    /// The chunk a passage is part of; for a term, rule or expert answer,
    /// the chunk closest to it.
    fn chunk_of(&self, span: &FactSpan) -> Option<&'a Chunk> {
        let chunks: &'a [Chunk] = &self.grounding.knowledge.chunks;
        match span.chunk {
            Some(i) => chunks.get(i),
            None => self.reference_chunk(&span.text),
        }
    }

    /// The plan's augmentation kinds this unit may use.
    fn augmentation_kinds(&self) -> Vec<AugmentationKind> {
        // Augmentation needs an accepted source it may transform.
        self.plan
            .augmentation
            .kinds
            .iter()
            .copied()
            .filter(|kind| self.accepted.has_source(self.strata, *kind, self.stratum))
            .collect()
    }

    /// The reference chunk closest to the instruction and subdomain.
    fn reference_chunk(&self, instruction: &str) -> Option<&'a Chunk> {
        most_relevant_chunk(
            &self.grounding.knowledge.chunks,
            &format!("{instruction} {}", self.stratum.subdomain),
        )
    }

    /// The response call carrying the rules and `chunk`, and the passage
    /// the attempt starts from; a grounded task type's figures may come only
    /// from what the prompt showed.
    fn response(&self, chunk: Option<&Chunk>, span: Option<&FactSpan>) -> Response {
        let plan = self.plan;
        let mut grounding: Vec<NodeId> = self.grounding.knowledge.rules.clone();
        grounding.extend(chunk.map(|c| c.id.clone()));
        let mut call = prompts::response(
            plan,
            &self.stratum.language,
            chunk.map(|c| c.text.as_str()),
            self.settings,
        );
        let mut support = if self.grounded() {
            support_sources(plan, self.grounding, chunk)
        } else {
            Vec::new()
        };
        if let Some(span) = span {
            prompts::add_note(&mut call, &prompts::answer_from(&span.text));
            if !grounding.contains(&span.node) {
                grounding.push(span.node.clone());
            }
            // A term past the prompt's glossary is shown by the note alone.
            if !support.is_empty() && !support.iter().any(|(id, _)| *id == span.node) {
                support.push((span.node.clone(), span.text.clone()));
            }
        }
        Response {
            call,
            grounding,
            support,
            cross_language: false,
            judge: None,
        }
    }

    fn template_input(&self, instruction: String) -> Input {
        let call = prompts::template_input(
            self.plan,
            &self.params,
            &instruction,
            self.passage,
            self.settings,
        );
        Input::new(Method::Template, instruction, call)
    }

    fn magpie_input(&self, instruction: String) -> Input {
        let call = prompts::magpie_input(self.plan, &self.params, self.settings);
        Input::new(Method::Magpie, instruction, call)
    }

    /// The template input, and the call that evolves it by a drawn
    /// operation.
    fn evol_input(&self, instruction: String) -> Input {
        let op = (draw(self.plan, &self.name, "evol_operation")
            * prompts::EVOL_OPERATIONS.len() as f64) as usize;
        let op = op.min(prompts::EVOL_OPERATIONS.len() - 1);
        let evolve = prompts::evolve_input(self.plan, &self.stratum.language, op, self.settings);
        Input {
            method: Method::EvolInstruct,
            evol_operation: Some(prompts::EVOL_OPERATIONS[op].0),
            evolve: Some(evolve),
            ..self.template_input(instruction)
        }
    }

    /// A question bootstrapped from seeds; the template input when there
    /// are none.
    fn self_instruct_input(&self, instruction: String) -> Input {
        let (seeds, grounding) = self.self_instruct_seeds();
        if seeds.is_empty() {
            // Nothing in this language to bootstrap from yet.
            return self.template_input(instruction);
        }
        let call = prompts::self_instruct_input(
            self.plan,
            &self.params,
            &seeds,
            self.passage,
            self.settings,
        );
        Input {
            grounding,
            ..Input::new(Method::SelfInstruct, instruction, call)
        }
    }

    /// Up to three expert questions that fit the stratum and up to two
    /// drawn accepted inputs, with the node of each.
    fn self_instruct_seeds(&self) -> (Vec<String>, Vec<NodeId>) {
        let plan = self.plan;
        let stratum = self.stratum;
        let mut seeds = Vec::new();
        let mut grounding = Vec::new();
        for (i, example) in plan.expert_examples.iter().enumerate() {
            let in_subdomain = example
                .subdomain
                .as_ref()
                .is_none_or(|s| *s == stratum.subdomain);
            if in_subdomain
                && prompts::example_fits(plan, example, &stratum.language)
                && seeds.len() < 3
            {
                seeds.push(example.question.clone());
                grounding.push(self.grounding.knowledge.examples[i].clone());
            }
        }
        // Bootstrapping: up to two accepted inputs of the same language.
        let accepted = self.accepted;
        let pool = accepted.of_language(&stratum.language);
        for role in ["seed_a", "seed_b"] {
            if let Some(record) = pick(pool, draw(plan, &self.name, role)).map(|p| accepted.get(p))
                && !grounding.contains(&record.id)
            {
                seeds.push(record.input.clone());
                grounding.push(record.id.clone());
            }
        }
        (seeds, grounding)
    }

    /// The drawn accepted record `kind` transforms.
    fn augmentation_source(&self, kind: AugmentationKind) -> Result<&'a AcceptedRecord, String> {
        let sources = self.accepted.sources(self.strata, kind, self.stratum);
        pick(&sources, draw(self.plan, &self.name, "source")).ok_or_else(|| {
            format!(
                "no source for {} in {}",
                prompts::augmentation_name(kind),
                self.name
            )
        })
    }

    /// A translation's response: the source's response translated, held
    /// to it and judged against it.
    fn translation_response(&self, record: &AcceptedRecord) -> Response {
        let plan = self.plan;
        let language = &self.stratum.language;
        Response {
            call: prompts::translate_response(plan, &record.response, language, self.settings),
            grounding: vec![record.id.clone()],
            // A translation states its original's figures, nothing else.
            support: vec![(record.id.clone(), record.response.clone())],
            cross_language: true,
            judge: Some(prompts::translation_judge(
                plan,
                &record.response,
                language,
                self.settings.seed,
            )),
        }
    }

    /// The round trip of a translated input back into its source's
    /// language.
    fn back_translation(&self, record: &AcceptedRecord) -> BackTranslation {
        BackTranslation {
            call: prompts::back_translate(
                self.plan,
                &self.strata[record.stratum].language,
                self.settings,
            ),
            source: record.input.clone(),
        }
    }

    fn augmentation_input(&self, kind: AugmentationKind, record: &AcceptedRecord) -> Input {
        let instruction = format!("{} of: {}", prompts::augmentation_name(kind), record.input);
        let call =
            prompts::augment_input(self.plan, kind, &record.input, &self.params, self.settings);
        Input {
            source: Some(record.id.clone()),
            ..Input::new(Method::Augmentation(kind), instruction, call)
        }
    }

    fn add_feedback_notes(&self, input: &mut ModelCall, response: &mut Response) {
        // Reviewers' counter-examples and examples for this stratum's group;
        // the attempt is grounded on the feedback node that carries them.
        if let Some(group) = self
            .grounding
            .feedback
            .for_stratum(&self.stratum.subdomain, &self.stratum.task_type)
        {
            if let Some(note) = group.input_note() {
                prompts::add_note(input, &note);
            }
            if !response.cross_language
                && let Some(note) = group.response_note()
            {
                prompts::add_note(&mut response.call, &note);
            }
            response.grounding.push(group.node.clone());
        }
    }

    fn assemble(
        self,
        sampled: serde_json::Value,
        instance_grounding: Vec<NodeId>,
        input: Input,
        response: Response,
    ) -> PlannedAttempt {
        let plan = self.plan;
        let (support_nodes, support) = support_spec(response.support, response.cross_language);
        let seed = self.settings.seed;
        let faithfulness = support.as_ref().map(|_| prompts::faithfulness(seed));
        let checks = CheckSpec {
            support,
            ..checks(plan, self.stratum, input.evolve.is_some())
        };
        PlannedAttempt {
            unit: self.name,
            stratum: self.index,
            attempt: self.attempt,
            method: input.method,
            instruction: input.instruction,
            sampled,
            instance_grounding,
            input_grounding: input.grounding,
            response_grounding: response.grounding,
            support_nodes,
            source: input.source,
            evol_operation: input.evol_operation,
            task: GenerateTask {
                judge: plan
                    .quality
                    .judge
                    .then(|| response.judge.unwrap_or_else(|| prompts::judge(plan, seed))),
                back_translation: input.back_translation,
                input: input.call,
                checks,
                evolve: input.evolve,
                embed_input: plan.quality.semantic_dedup,
                response: response.call,
                faithfulness,
            },
        }
    }
}

/// The support nodes, and the check that holds the response to their
/// texts when there are any.
fn support_spec(
    support: Vec<(NodeId, String)>,
    cross_language: bool,
) -> (Vec<NodeId>, Option<SupportSpec>) {
    let (support_nodes, sources): (Vec<NodeId>, Vec<String>) = support.into_iter().unzip();
    let spec = (!sources.is_empty()).then_some(SupportSpec {
        sources,
        cross_language,
    });
    (support_nodes, spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stratum(language: &str, persona: &str) -> Stratum {
        Stratum {
            subdomain: "cards".into(),
            task_type: "qa".into(),
            persona: persona.into(),
            language: language.into(),
            adversarial: false,
        }
    }

    #[test]
    fn augmentation_sources_differ_only_where_the_transform_says() {
        let en = stratum("en", "a");
        let es = stratum("es", "a");
        let en_b = stratum("en", "b");
        assert!(augmentable(AugmentationKind::Translation, &en, &es));
        assert!(!augmentable(AugmentationKind::Translation, &en, &en));
        assert!(!augmentable(AugmentationKind::Translation, &en_b, &es));
        assert!(augmentable(AugmentationKind::PersonaShift, &en, &en_b));
        assert!(!augmentable(AugmentationKind::PersonaShift, &en, &es));
        assert!(augmentable(AugmentationKind::Paraphrase, &en, &en));
        assert!(!augmentable(AugmentationKind::FormalityShift, &en, &es));
    }

    #[test]
    fn draws_are_uniform_enough_and_deterministic() {
        let plan = crate::plan::fixtures::retail();
        let xs: Vec<f64> = (0..2000)
            .map(|i| draw(&plan, &format!("u#{i}"), "method"))
            .collect();
        assert_eq!(xs[7], draw(&plan, "u#7", "method"));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((0.45..0.55).contains(&mean), "{mean}");
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let templates = (0..2000)
            .filter(|i| choose_method(&plan, &format!("u#{i}"), &[]) == Method::Template)
            .count();
        // the retail plan: 0.6 template
        assert!((1050..1350).contains(&templates), "{templates}");
    }
}
