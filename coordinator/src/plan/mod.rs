//! Plans: what a researcher writes (a TOML file), checked on load with
//! errors that name the file, the line and the field, and turned into a
//! stratified allocation of accepted-record quotas.
//!
//! `schema.rs` is the file format, `load.rs` reading and locating errors,
//! `validate.rs` the semantic checks, `allocation.rs` the pure data-planning step, `instantiate.rs` template
//! instantiation of one work unit.

mod allocation;
mod instantiate;
mod load;
mod schema;
mod validate;

pub use allocation::{Stratum, StratumQuota, allocate};
pub use instantiate::{UnitParams, render_instruction, sample_unit};
pub use load::{MAX_REFERENCE_BYTES, PlanError, load_plan, parse_plan, reference_files};
pub use schema::{
    Adversarial, AdversarialKind, Augmentation, AugmentationKind, Domain, ExpertExample,
    GlossaryEntry, JudgeVerdicts, Language, Methods, Persona, Plan, Quality, Reference, Rule,
    Sampling, Scenario, Splits, Subdomain, Target, TaskType,
};
pub use validate::{KNOWN_LANGUAGES, MAX_TARGET, TEMPLATE_VARIABLES, check_target};

/// The example plans, loaded for unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{Plan, load_plan};

    /// `examples/NAME.toml`, which must load.
    pub fn example(name: &str) -> Plan {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(format!("{name}.toml"));
        load_plan(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The retail-banking example most unit tests use.
    pub fn retail() -> Plan {
        example("retail-banking")
    }
}
