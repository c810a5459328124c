//! The review desk: what a reviewer's tools ask of one plan's review, and
//! who answers. The page's JSON API, `seedling review sample|export|import`
//! and the coordinator's `Review` call all speak [`DeskCall`], so a plan
//! held by a running coordinator is reviewed with the same page and the
//! same answers as a plan in a local store. A session on this machine
//! answers through [`SessionDesk`]; the CLI's client of a coordinator is
//! another [`Desk`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use seedling_common::ids::{NodeId, PlanId};

use super::figures::ReviewFigures;
use super::ledger::ReviewError;
use super::sample::SampleSettings;
use super::session::ReviewSession;
use super::verdict::{Decision, DecisionError, RejectReason, check_reviewer};
use crate::lineage::lineage_report;

/// How far the page's lineage link walks each way.
const PAGE_LINEAGE_DEPTH: usize = 3;

/// One request to a plan's review.
#[derive(Debug, Clone, PartialEq)]
pub enum DeskCall {
    /// Where `reviewer` stands: the figures and the record to show next.
    Standing { reviewer: String },
    /// One decision, as the page sends it (JSON, checked by the desk).
    Decide(serde_json::Value),
    /// Takes back `reviewer`'s latest standing decision.
    Undo { reviewer: String },
    /// A node's lineage, if it belongs to the plan.
    Lineage { node: String },
    /// The sample plan and the figures so far.
    Sample,
    /// The sample as JSONL, for reviewing with other tools.
    ExportSample,
    /// A decisions file (JSONL), stored whole or refused by line.
    Import { source_name: String, text: String },
}

impl DeskCall {
    /// Whether the call adds to the lineage (a read-only caller may not).
    pub fn decides(&self) -> bool {
        matches!(
            self,
            Self::Decide(_) | Self::Undo { .. } | Self::Import { .. }
        )
    }
}

/// What [`DeskCall::Sample`] answers: the sample's settings, and per
/// stratum its size and the figures so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleOverview {
    pub plan: PlanId,
    pub settings: SampleSettings,
    pub figures: ReviewFigures,
}

/// What the desk answers.
#[derive(Debug, Clone, PartialEq)]
pub enum DeskAnswer {
    Json(serde_json::Value),
    Text(String),
}

impl DeskAnswer {
    pub fn into_json(self) -> serde_json::Value {
        match self {
            Self::Json(value) => value,
            Self::Text(text) => serde_json::Value::String(text),
        }
    }

    pub fn into_text(self) -> String {
        match self {
            Self::Json(value) => value.to_string(),
            Self::Text(text) => text,
        }
    }
}

/// What kind of refusal, so that HTTP and gRPC can each say it their way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// No such record or plan.
    NotFound,
    /// The decision contradicts one already stored.
    Conflict,
    /// The request itself is malformed or impossible.
    Invalid,
    /// The caller may not decide.
    Forbidden,
    /// The desk could not do it (storage, a lost connection).
    Failed,
}

/// A call the desk did not carry out, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct DeskRefusal {
    pub kind: RefusalKind,
    pub message: String,
}

impl From<ReviewError> for DeskRefusal {
    fn from(err: ReviewError) -> Self {
        let kind = match &err {
            ReviewError::Decision(DecisionError::UnknownRecord(_))
            | ReviewError::UnknownPlan(_) => RefusalKind::NotFound,
            ReviewError::Decision(DecisionError::Duplicate(_)) => RefusalKind::Conflict,
            ReviewError::Decision(_) | ReviewError::Import(_) | ReviewError::Settings(_) => {
                RefusalKind::Invalid
            }
            ReviewError::Lineage(_) => RefusalKind::Failed,
        };
        Self {
            kind,
            message: err.to_string(),
        }
    }
}

/// A future a [`Desk`] answers with.
pub type DeskReply<'a> = Pin<Box<dyn Future<Output = Result<DeskAnswer, DeskRefusal>> + Send + 'a>>;

/// Whoever answers one plan's review.
pub trait Desk: Send + Sync + 'static {
    fn call(&self, call: DeskCall) -> DeskReply<'_>;
}

/// A review session on this machine, behind one lock: calls from any
/// number of browsers are taken one at a time, each decision durable
/// before it is answered.
#[derive(Debug, Clone)]
pub struct SessionDesk {
    session: Arc<Mutex<ReviewSession>>,
}

impl SessionDesk {
    pub fn new(session: ReviewSession) -> Self {
        Self {
            session: Arc::new(Mutex::new(session)),
        }
    }

    /// Answers `call` on this thread (it may wait for an fsync).
    pub fn answer_blocking(&self, call: DeskCall) -> Result<DeskAnswer, ReviewError> {
        let mut session = self
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        session.answer(call)
    }
}

impl Desk for SessionDesk {
    fn call(&self, call: DeskCall) -> DeskReply<'_> {
        let desk = self.clone();
        Box::pin(async move {
            // Off the async threads: a decision waits for an fsync.
            match tokio::task::spawn_blocking(move || desk.answer_blocking(call)).await {
                Ok(answer) => answer.map_err(DeskRefusal::from),
                Err(err) => Err(DeskRefusal {
                    kind: RefusalKind::Failed,
                    message: err.to_string(),
                }),
            }
        })
    }
}

impl ReviewSession {
    /// Carries out one desk call.
    pub fn answer(&mut self, call: DeskCall) -> Result<DeskAnswer, ReviewError> {
        Ok(match call {
            DeskCall::Standing { reviewer } => {
                check_reviewer(&reviewer)?;
                DeskAnswer::Json(self.standing(&reviewer, None)?)
            }
            DeskCall::Decide(value) => {
                let decision = Decision::from_json(value)?;
                let taken = self.decide(&decision)?;
                let mut body = self.standing(&decision.reviewer, None)?;
                body["taken"] = serde_json::json!(taken);
                DeskAnswer::Json(body)
            }
            DeskCall::Undo { reviewer } => {
                let record = self.undo(&reviewer)?;
                let mut body = self.standing(&reviewer, Some(record.clone()))?;
                body["undone"] = serde_json::json!(record);
                DeskAnswer::Json(body)
            }
            DeskCall::Lineage { node } => {
                let id = NodeId::new(node);
                if self
                    .store()
                    .node(&id)?
                    .is_none_or(|n| &n.plan != self.plan())
                {
                    return Err(DecisionError::UnknownRecord(id.to_string()).into());
                }
                DeskAnswer::Text(lineage_report(
                    self.store(),
                    &id,
                    PAGE_LINEAGE_DEPTH,
                    false,
                )?)
            }
            DeskCall::Sample => DeskAnswer::Json(
                serde_json::to_value(SampleOverview {
                    plan: self.plan().clone(),
                    settings: self.sample().settings.clone(),
                    figures: self.figures(),
                })
                .expect("an overview serialises"),
            ),
            DeskCall::ExportSample => DeskAnswer::Text(self.export_sample()?),
            DeskCall::Import { source_name, text } => {
                let summary = self.import(&source_name, &text)?;
                DeskAnswer::Json(serde_json::json!({
                    "stored": summary.stored,
                    "already_stored": summary.already_stored,
                    "progress": self.figures().progress_line(),
                }))
            }
        })
    }

    /// Where `reviewer` stands: the figures, and the record to show next
    /// (`show`, or the next one they have not decided).
    fn standing(
        &self,
        reviewer: &str,
        show: Option<NodeId>,
    ) -> Result<serde_json::Value, ReviewError> {
        let figures = self.figures();
        let show = show.or_else(|| self.next_for(reviewer));
        let item = match show {
            Some(record) => Some(self.item(&record, reviewer)?),
            None => None,
        };
        Ok(serde_json::json!({
            "plan": self.plan(),
            "domain": self.domain(),
            "sampled": self.sample().total(),
            "reasons": RejectReason::ALL
                .iter()
                .map(|r| serde_json::json!({ "name": r.as_str(), "label": r.label() }))
                .collect::<Vec<_>>(),
            "progress": figures.progress_line(),
            "mine": self.done_by(reviewer),
            "figures": figures,
            "item": item,
        }))
    }
}
