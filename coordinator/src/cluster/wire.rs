//! The coordinator's domain views as the API's wire types: the one place
//! a plan's view becomes a `PlanSummary`.

use seedling_proto::api::{Diversity, PlanSummary, StratumProgress};

use super::messages::PlanView;
use crate::quality::diversity::DiversityNow;

impl PlanView {
    pub fn summary(&self) -> PlanSummary {
        let progress = &self.progress;
        PlanSummary {
            plan_id: progress.plan.clone(),
            domain: self.domain.clone(),
            state: self.state.name().into(),
            phase: progress.phase.into(),
            target: progress.target,
            accepted: progress.accepted,
            attempts: progress.attempts,
            in_flight: progress.in_flight,
            generated_tokens: progress.generated_tokens,
            elapsed_s: progress.elapsed_s,
            eta_s: progress.eta_s,
            strata: progress
                .strata
                .iter()
                .map(|s| StratumProgress {
                    stratum: s.stratum.clone(),
                    quota: s.quota,
                    accepted: s.accepted,
                    attempts: s.attempts,
                    exhausted: s.exhausted,
                    diversity: Some(diversity(&s.diversity)),
                })
                .collect(),
            rejected: progress.rejected.clone().into_iter().collect(),
            error: self.error.clone(),
            diversity: Some(diversity(&progress.diversity)),
            cost: Some((&progress.cost).into()),
            session_cost: Some((&progress.session_cost).into()),
        }
    }
}

fn diversity(d: &DiversityNow) -> Diversity {
    Diversity {
        distinct_1: d.distinct_1,
        distinct_2: d.distinct_2,
        dispersion: d.dispersion,
    }
}
