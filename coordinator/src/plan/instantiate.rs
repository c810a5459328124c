//! Template instantiation (design section 4.1, step 2): one work unit of a
//! stratum gets its sampled parameters (persona, scenario, glossary term,
//! expert example, adversarial kind) and the task template renders them
//! into the instruction the model will expand. Deterministic: the same plan,
//! stratum and unit index always give the same instance.

use serde::Serialize;

use super::allocation::Stratum;
use super::schema::{AdversarialKind, ExpertExample, GlossaryEntry, Persona, Plan, Scenario};

/// The parameters sampled for one work unit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitParams<'p> {
    pub stratum: Stratum,
    pub unit: u64,
    pub persona: &'p Persona,
    pub scenario: Option<&'p Scenario>,
    pub term: Option<&'p GlossaryEntry>,
    pub example: Option<&'p ExpertExample>,
    pub adversarial_kind: Option<AdversarialKind>,
}

/// A deterministic pick in `0..n` for one role of one unit.
fn pick(plan: &Plan, stratum: &Stratum, unit: u64, role: &str, n: usize) -> usize {
    let mut hasher = stratum.seeded_hasher(plan.seed);
    hasher.update(&unit.to_le_bytes());
    hasher.update(role.as_bytes());
    let bytes = hasher.finalize();
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes.as_bytes()[..8]);
    (u64::from_le_bytes(word) % n.max(1) as u64) as usize
}

/// Samples the parameters of unit `unit` of `stratum`. Scenarios and expert
/// examples are drawn from those of the stratum's subdomain (or of none).
/// `None` when the stratum names a persona the plan does not have.
pub fn sample_unit<'p>(plan: &'p Plan, stratum: &Stratum, unit: u64) -> Option<UnitParams<'p>> {
    let persona = plan.personas.iter().find(|p| p.name == stratum.persona)?;
    let in_subdomain =
        |subdomain: &Option<String>| subdomain.as_ref().is_none_or(|s| *s == stratum.subdomain);
    let scenarios: Vec<&Scenario> = plan
        .scenarios
        .iter()
        .filter(|s| in_subdomain(&s.subdomain))
        .collect();
    let examples: Vec<&ExpertExample> = plan
        .expert_examples
        .iter()
        .filter(|e| in_subdomain(&e.subdomain))
        .collect();
    let choose = |role: &str, n: usize| pick(plan, stratum, unit, role, n);
    Some(UnitParams {
        stratum: stratum.clone(),
        unit,
        persona,
        scenario: (!scenarios.is_empty()).then(|| scenarios[choose("scenario", scenarios.len())]),
        term: (!plan.glossary.is_empty())
            .then(|| &plan.glossary[choose("term", plan.glossary.len())]),
        example: (!examples.is_empty()).then(|| examples[choose("example", examples.len())]),
        adversarial_kind: (stratum.adversarial && !plan.adversarial.kinds.is_empty())
            .then(|| plan.adversarial.kinds[choose("adversarial", plan.adversarial.kinds.len())]),
    })
}

/// Describes a persona for a template: its name and attributes.
fn persona_text(persona: &Persona) -> String {
    if persona.attributes.is_empty() {
        return persona.name.clone();
    }
    let attributes: Vec<String> = persona
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    format!("{} ({})", persona.name, attributes.join(", "))
}

/// Renders the stratum's task template for a unit. Every variable in
/// `TEMPLATE_VARIABLES` is defined (empty when the plan has nothing for it).
pub fn render_instruction(plan: &Plan, params: &UnitParams<'_>) -> Result<String, String> {
    let stratum = &params.stratum;
    let task = plan
        .task_types
        .iter()
        .find(|t| t.name == stratum.task_type)
        .ok_or_else(|| format!("plan has no task type {:?}", stratum.task_type))?;
    let source = task.templates.get(&stratum.language).ok_or_else(|| {
        format!(
            "task type {:?} has no template for language {:?}",
            task.name, stratum.language
        )
    })?;
    let env = minijinja::Environment::new();
    let template = env.template_from_str(source).map_err(|e| e.to_string())?;
    let adversarial_kind = params
        .adversarial_kind
        .map(|k| {
            serde_json::to_value(k)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let context = minijinja::context! {
        domain => plan.domain.name.clone(),
        subdomain => stratum.subdomain.clone(),
        persona => persona_text(params.persona),
        language => stratum.language.clone(),
        scenario => params.scenario.map(|s| s.description.clone()).unwrap_or_default(),
        term => params.term.map(|t| t.term.clone()).unwrap_or_default(),
        definition => params.term.map(|t| t.definition.clone()).unwrap_or_default(),
        adversarial_kind => adversarial_kind,
        example_question => params.example.map(|e| e.question.clone()).unwrap_or_default(),
    };
    template.render(context).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::allocate;
    use crate::plan::fixtures::retail;

    #[test]
    fn units_are_deterministic_and_varied() {
        let plan = retail();
        let quotas = allocate(&plan);
        let stratum = &quotas
            .iter()
            .find(|q| q.quota > 0 && !q.stratum.adversarial)
            .unwrap()
            .stratum;
        let a = sample_unit(&plan, stratum, 0).unwrap();
        assert_eq!(a, sample_unit(&plan, stratum, 0).unwrap());
        let terms: std::collections::HashSet<_> = (0..40)
            .map(|unit| {
                sample_unit(&plan, stratum, unit)
                    .unwrap()
                    .term
                    .unwrap()
                    .term
                    .clone()
            })
            .collect();
        assert!(
            terms.len() > 1,
            "units should draw different terms: {terms:?}"
        );
        assert!(a.adversarial_kind.is_none());
    }

    #[test]
    fn scenarios_stay_in_their_subdomain_and_adversarial_units_get_a_kind() {
        let plan = retail();
        for quota in allocate(&plan) {
            let params = sample_unit(&plan, &quota.stratum, 3).unwrap();
            if let Some(scenario) = params.scenario {
                assert!(
                    scenario
                        .subdomain
                        .as_ref()
                        .is_none_or(|s| *s == quota.stratum.subdomain)
                );
            }
            assert_eq!(params.adversarial_kind.is_some(), quota.stratum.adversarial);
        }
    }

    #[test]
    fn every_stratum_renders_with_its_parameters() {
        let plan = retail();
        for quota in allocate(&plan).into_iter().filter(|q| q.quota > 0) {
            let params = sample_unit(&plan, &quota.stratum, 1).unwrap();
            let text = render_instruction(&plan, &params).unwrap();
            // every retail-banking template names the subdomain and the persona
            assert!(text.contains(&quota.stratum.subdomain), "{text}");
            assert!(text.contains(&params.persona.name), "{text}");
            assert!(!text.contains("{{"), "unrendered template: {text}");
        }
    }
}
