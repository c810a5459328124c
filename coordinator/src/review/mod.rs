//! Human review (design 4.1 step 6, 6.2): a stratified sample of the
//! accepted records with a stated confidence, decisions (accept, reject
//! with a reason, edit) kept as lineage nodes, the page reviewers use, the
//! JSONL path for teams with their own tooling, and the figures the card
//! reports.
//!
//! `verdict.rs` (what a decision is, and its checks), `ledger.rs` (the
//! decisions read from and written to the store; the statuses they imply),
//! `sample.rs` (who gets reviewed), `stats.rs` (sample sizes, Wilson
//! intervals, Cohen's kappa), `figures.rs` (what the review found), `feedback.rs` (what the next
//! round takes from it),
//! `session.rs` (one plan's review: the operations page, CLI and imports
//! share), `desk.rs` (those operations as calls, answered here or by a
//! coordinator), `server.rs` (the page and its JSON API).

mod desk;
mod feedback;
mod figures;
mod ledger;
mod sample;
mod server;
mod session;
mod stats;
mod verdict;

pub use desk::{
    Desk, DeskAnswer, DeskCall, DeskRefusal, DeskReply, RefusalKind, SampleOverview, SessionDesk,
};
pub use feedback::{
    ChecksAgainstReview, CounterExample, Feedback, FeedbackSettings, GroupFeedback,
};
pub use figures::{Agreement, CheckFigures, ReviewFigures, StratumFigures, review_figures};
pub use ledger::{
    Ledger, REJECTED_IN_REVIEW, REVIEW_EDIT_STEP, REVIEW_STEP, ReviewError, StoredDecision,
    UNDO_STEP,
};
pub use sample::{
    CHECK_STRATUM, STRATUM_FIELDS, SamplePlan, SampleSettings, StratumSample, check_rejection,
    plan_sample, population,
};
pub use server::{BoundReview, ServeError, ServeSettings, TOKEN_HEADER, new_token};
pub use session::{
    ImportError, ImportSummary, ItemView, ReviewSession, Taken, decision_json, stored_review,
};
pub use stats::{Proportion, cohens_kappa, sample_size, share_shown, wilson};
pub use verdict::{Decision, DecisionError, RejectReason, Verdict};
