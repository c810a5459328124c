//! Review of the plans a coordinator holds. The coordinator owns the
//! lineage store, so `seedling review --coordinator` and its page ask it;
//! each plan has one review desk here, shared by every reviewer and
//! command that asks, so decisions are taken one at a time whichever page
//! sends them, and each is durable before it is answered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use seedling_common::ids::PlanId;

use crate::lineage::LineageStore;
use crate::review::{
    DeskAnswer, DeskCall, ReviewError, ReviewSession, SampleSettings, SessionDesk,
};

#[derive(Debug)]
pub struct ReviewDesks {
    store: Arc<LineageStore>,
    open: Mutex<HashMap<PlanId, (SampleSettings, SessionDesk)>>,
}

impl ReviewDesks {
    pub fn new(store: Arc<LineageStore>) -> Self {
        Self {
            store,
            open: Mutex::default(),
        }
    }

    /// Answers `call` on the review of `plan` (the store's only plan when
    /// `None`), sampled with `settings`. The sample is drawn when a plan's
    /// review is first asked for, again when the settings change, and again
    /// on [`DeskCall::Sample`], which is how a reviewer starting on a plan
    /// that is still running sees the records accepted since. Decisions
    /// live in the store, so drawing again loses none.
    pub fn answer_blocking(
        &self,
        plan: Option<PlanId>,
        settings: SampleSettings,
        call: DeskCall,
    ) -> Result<(PlanId, DeskAnswer), ReviewError> {
        let plan = match plan {
            Some(plan) => plan,
            None => self.only_plan()?,
        };
        let desk = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let current = open
                .get(&plan)
                .filter(|(drawn, _)| *drawn == settings && call != DeskCall::Sample);
            match current {
                Some((_, desk)) => desk.clone(),
                None => {
                    let session = ReviewSession::open(
                        Arc::clone(&self.store),
                        plan.clone(),
                        settings.clone(),
                    )?;
                    let desk = SessionDesk::new(session);
                    open.insert(plan.clone(), (settings, desk.clone()));
                    desk
                }
            }
        };
        Ok((plan, desk.answer_blocking(call)?))
    }

    fn only_plan(&self) -> Result<PlanId, ReviewError> {
        let plans = self.store.plans()?;
        match plans.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ReviewError::UnknownPlan("(none named)".into())),
            many => Err(ReviewError::Settings(format!(
                "the coordinator holds {} plans; name one with --plan",
                many.len()
            ))),
        }
    }
}
