//! One plan's run: what is still to do, what every finished unit means, and
//! the lineage it leaves. Everything it knows it reads back from the lineage
//! store when it opens, so a run killed at any point continues where the
//! store says it stopped: no attempt is counted twice and no quota overshoots.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use seedling_common::cost::RunCost;
use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{Edge, EdgeKind, LineageBatch, Node, NodeKind, NodeStatus};
use seedling_common::similarity::NoveltyPool;
use seedling_common::time::now_unix_ms;
use seedling_common::work::{AnalyzeTask, TaskKind, UnitResult, UnitTask};
use serde::Serialize;

use super::PipelineError;
use super::attempt::{
    AcceptedPool, AcceptedRecord, Grounding, PlannedAttempt, plan_attempt, stratum_key,
};
use super::decision::{
    Decision, NOVELTY_THRESHOLD, Prepared, RunView, decide, final_input, is_duplicate,
};
use super::knowledge::{Knowledge, knowledge_batch, plan_id};
use super::record_lineage::{LineageContext, PendingLineage};
use super::schedule::{StratumProgress, next_attempts, steered_temperature};
use super::spans::FactSpans;
use crate::lineage::{LineageStore, record_id, stored_cost, stored_input_embedding};
use crate::plan::{GlossaryEntry, Plan, Scenario, Stratum, allocate};
use crate::prompts;
use crate::quality::diversity::{DiversityNow, RunningDiversity};
use crate::quality::duplicates::DuplicateTiers;
use crate::review::{Feedback, REJECTED_IN_REVIEW, REVIEW_EDIT_STEP};

/// Reference chunks domain analysis reads at most.
pub const MAX_ANALYSED_CHUNKS: usize = 6;
/// Consecutive failed units after which the run stops: the engine is gone.
pub const MAX_CONSECUTIVE_FAILURES: u32 = 16;

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Overrides the plan's accepted-record target.
    pub target: Option<u64>,
    /// `seedling <version> + model digest`, recorded on every record.
    pub generator_version: String,
    /// Directory the plan's relative paths start from.
    pub base_dir: PathBuf,
    /// Attempt budget per quota record before a stratum counts as short.
    pub attempts_per_record: f64,
}

/// What a finished unit came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitOutcome {
    Accepted,
    Rejected(String),
    Analysed,
    /// Not a unit this run has in flight (a late or repeated result).
    Ignored,
}

/// What a unit id names: one reference chunk's domain analysis, or an
/// attempt (`stratum#attempt`, named by `attempt.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnitKind {
    Analysis { chunk: usize },
    Attempt,
}

impl UnitKind {
    const ANALYSIS: &'static str = "analysis#";

    fn analysis_unit(chunk: usize) -> String {
        format!("{}{chunk}", Self::ANALYSIS)
    }

    fn of(unit: &str) -> Self {
        match unit
            .strip_prefix(Self::ANALYSIS)
            .and_then(|c| c.parse().ok())
        {
            Some(chunk) => Self::Analysis { chunk },
            None => Self::Attempt,
        }
    }
}

/// A stratum's line in progress reports.
#[derive(Debug, Clone, Serialize)]
pub struct StratumLine {
    pub stratum: String,
    pub quota: u64,
    pub accepted: u64,
    pub attempts: u64,
    pub exhausted: bool,
    /// Of the stratum's accepted inputs so far.
    pub diversity: DiversityNow,
}

/// Where a run stands.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub plan: String,
    pub phase: &'static str,
    pub target: u64,
    pub accepted: u64,
    pub attempts: u64,
    pub in_flight: u64,
    pub rejected: BTreeMap<String, u64>,
    pub generated_tokens: u64,
    /// What the plan's attempts cost, over all runs of it (as stored).
    pub cost: RunCost,
    /// What this run's (since it opened) cost: with `elapsed_s`, where its
    /// time went.
    pub session_cost: RunCost,
    /// Accepted since this run opened (a resumed plan's earlier work aside).
    pub accepted_this_run: u64,
    /// Attempts this run stopped because their stratum filled before they
    /// finished (not counted as attempts).
    pub withdrawn_surplus: u64,
    pub elapsed_s: f64,
    /// Seconds until the target at the rate this run has accepted records
    /// (once it has accepted a few; see [`super::eta_s`]).
    pub eta_s: Option<f64>,
    /// Of all accepted inputs so far.
    pub diversity: DiversityNow,
    pub strata: Vec<StratumLine>,
}

impl Progress {
    /// Strata that spent their attempt budget short of their quota.
    pub fn shortfalls(&self) -> Vec<&StratumLine> {
        self.strata.iter().filter(|s| s.exhausted).collect()
    }
}

/// A plan being run.
#[derive(Debug)]
pub struct PlanRun {
    store: Arc<LineageStore>,
    plan: Plan,
    plan_id: PlanId,
    options: RunOptions,
    grounding: Grounding,
    strata: Vec<Stratum>,
    /// The part of the run an attempt's lineage is built from.
    lineage: Arc<LineageContext>,
    progress: Vec<StratumProgress>,
    /// Attempt indexes finished per stratum (stored).
    done: Vec<BTreeSet<u64>>,
    /// Per stratum: attempt indexes in flight, and the lowest index that
    /// may not be stored yet.
    leased: Vec<BTreeSet<u64>>,
    floor: Vec<u64>,
    in_flight: HashMap<String, PlannedAttempt>,
    analysis_pending: BTreeSet<usize>,
    analysis_in_flight: BTreeSet<usize>,
    accepted: AcceptedPool,
    novelty: NoveltyPool,
    /// Accepted record of each novelty-pool entry.
    novelty_ids: Vec<NodeId>,
    /// Accepted records in the exact, near and semantic duplicate tiers.
    duplicates_index: DuplicateTiers,
    /// Diversity of accepted inputs per stratum, and over all of them.
    diversity: Vec<RunningDiversity>,
    overall_diversity: RunningDiversity,
    rejected: BTreeMap<String, u64>,
    /// Attempts per stratum rejected as duplicates (steers its temperature).
    duplicates: Vec<u64>,
    /// The plan's cost over all its runs, and this run's share.
    cost: RunCost,
    session_cost: RunCost,
    /// Attempts this run took back because their stratum filled first.
    withdrawn_surplus: u64,
    consecutive_failures: u32,
    /// The error of the last attempt that failed, for when they all do.
    last_failure: Option<String>,
    started: Instant,
    /// Accepted records when this run opened (a resumed plan's earlier
    /// work): the rate behind the ETA counts only this run's.
    accepted_at_open: u64,
    /// Decided groups whose lineage write is not confirmed durable yet, by
    /// ticket: the strata of their acceptances (progress leaves them out).
    unconfirmed: BTreeMap<u64, Vec<usize>>,
    next_ticket: u64,
}

/// A group of decisions whose lineage must be made durable before any of
/// them is acknowledged; [`PlanRun::confirm`] its ticket once it is.
#[derive(Debug)]
pub struct Decided {
    pub outcomes: Vec<UnitOutcome>,
    pub lineage: PendingLineage,
    pub ticket: u64,
}

fn body_str<'a>(node: &'a Node, key: &str) -> &'a str {
    node.body
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
}

impl PlanRun {
    /// Opens a plan in `store`: writes its knowledge (a no-op if stored) and
    /// reads back everything an earlier run of it left.
    pub fn open(
        store: Arc<LineageStore>,
        plan: Plan,
        options: RunOptions,
    ) -> Result<Self, PipelineError> {
        let mut plan = plan;
        if let Some(target) = options.target {
            plan.target.accepted = i64::try_from(target).unwrap_or(i64::MAX);
            crate::plan::check_target(plan.target.accepted).map_err(PipelineError::Target)?;
        }
        let plan_id = plan_id(&plan);
        let (knowledge, batch) = knowledge_batch(
            &plan_id,
            &plan,
            &options.base_dir,
            &options.generator_version,
            now_unix_ms(),
        )?;
        store.append(&batch)?;
        let quotas = allocate(&plan);
        let strata: Vec<Stratum> = quotas.iter().map(|q| q.stratum.clone()).collect();
        let progress: Vec<StratumProgress> = quotas
            .iter()
            .map(|q| StratumProgress {
                quota: q.quota,
                ..StratumProgress::default()
            })
            .collect();
        let lineage = Arc::new(LineageContext {
            plan: plan.clone(),
            plan_id: plan_id.clone(),
            strata: strata.clone(),
            plan_node: knowledge.plan_node.clone(),
        });
        let mut run = Self {
            lineage,
            grounding: Grounding {
                effective: plan.clone(),
                scenario_ids: knowledge.scenarios.clone(),
                glossary_ids: knowledge.glossary.clone(),
                spans: FactSpans::new(&plan, &knowledge, &strata),
                knowledge: knowledge.clone(),
                feedback: Feedback::default(),
            },
            done: vec![BTreeSet::new(); strata.len()],
            leased: vec![BTreeSet::new(); strata.len()],
            floor: vec![0; strata.len()],
            duplicates: vec![0; strata.len()],
            diversity: vec![RunningDiversity::default(); strata.len()],
            duplicates_index: DuplicateTiers::new(
                plan.quality.near_duplicate_jaccard,
                plan.quality.semantic_duplicate_cosine,
            ),
            strata,
            progress,
            store,
            plan,
            plan_id,
            options,
            in_flight: HashMap::new(),
            analysis_pending: BTreeSet::new(),
            analysis_in_flight: BTreeSet::new(),
            accepted: AcceptedPool::default(),
            novelty: NoveltyPool::new(NOVELTY_THRESHOLD),
            novelty_ids: Vec::new(),
            overall_diversity: RunningDiversity::default(),
            rejected: BTreeMap::new(),
            cost: RunCost::default(),
            session_cost: RunCost::default(),
            withdrawn_surplus: 0,
            consecutive_failures: 0,
            last_failure: None,
            started: Instant::now(),
            accepted_at_open: 0,
            unconfirmed: BTreeMap::new(),
            next_ticket: 0,
        };
        run.resume_analysis(&knowledge)?;
        run.resume_attempts()?;
        run.accepted_at_open = run.progress.iter().map(|p| p.accepted).sum();
        Ok(run)
    }

    /// The same plan opened again from the store, with the same review
    /// feedback: after a write failed, this run's memory holds decisions the
    /// store does not, and only the store is trusted.
    pub fn reopen(&self) -> Result<Self, PipelineError> {
        let mut run = Self::open(
            Arc::clone(&self.store),
            self.plan.clone(),
            self.options.clone(),
        )?;
        if self.grounding.feedback != Feedback::default() {
            run.apply_feedback(self.grounding.feedback.clone())?;
        }
        Ok(run)
    }

    pub fn plan_id(&self) -> &PlanId {
        &self.plan_id
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The store this run writes to.
    pub fn store(&self) -> &Arc<LineageStore> {
        &self.store
    }

    fn load_nodes(&self, kind: NodeKind) -> Result<Vec<Node>, PipelineError> {
        let mut nodes = Vec::new();
        for id in self.store.nodes_of_plan(&self.plan_id, Some(kind), None) {
            nodes.push(self.store.require(&id?)?);
        }
        nodes.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(nodes)
    }

    /// Extracted knowledge already stored; chunks without it are analysed.
    fn resume_analysis(&mut self, knowledge: &Knowledge) -> Result<(), PipelineError> {
        let mut analysed = BTreeSet::new();
        let mut extracted: Vec<Node> = self
            .load_nodes(NodeKind::Scenario)?
            .into_iter()
            .chain(self.load_nodes(NodeKind::GlossaryTerm)?)
            .filter(|n| n.step == "domain_analysis")
            .collect();
        extracted.sort_by(|a, b| a.id.cmp(&b.id));
        for node in extracted {
            if let Some(chunk) = node.body.get("chunk").and_then(|v| v.as_u64()) {
                analysed.insert(chunk as usize);
            }
            self.add_extracted(&node);
        }
        self.analysis_pending = (0..knowledge.chunks.len().min(MAX_ANALYSED_CHUNKS))
            .filter(|i| !analysed.contains(i))
            .collect();
        Ok(())
    }

    fn add_extracted(&mut self, node: &Node) {
        let effective = &mut self.grounding.effective;
        match node.kind {
            NodeKind::Scenario => {
                effective.scenarios.push(Scenario {
                    description: body_str(node, "description").to_string(),
                    subdomain: node
                        .body
                        .get("subdomain")
                        .and_then(|v| v.as_str())
                        .map(str::to_string),
                });
                self.grounding.scenario_ids.push(node.id.clone());
            }
            NodeKind::GlossaryTerm => {
                effective.glossary.push(GlossaryEntry {
                    term: body_str(node, "term").to_string(),
                    definition: body_str(node, "definition").to_string(),
                });
                self.grounding.glossary_ids.push(node.id.clone());
            }
            _ => {}
        }
    }

    /// Attempts already stored: counts, pools, the accepted records.
    fn resume_attempts(&mut self) -> Result<(), PipelineError> {
        let index: HashMap<String, usize> = self
            .strata
            .iter()
            .enumerate()
            .map(|(i, s)| (stratum_key(s), i))
            .collect();
        for node in self.load_nodes(NodeKind::Response)? {
            if node.step == REVIEW_EDIT_STEP {
                continue; // a reviewer's correction: its original counts the attempt
            }
            let Some(&stratum) = index.get(body_str(&node, "stratum")) else {
                continue; // a stratum of another target's allocation
            };
            let attempt = node
                .body
                .get("attempt")
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            if !self.done[stratum].insert(attempt) {
                continue;
            }
            let progress = &mut self.progress[stratum];
            progress.attempts += 1;
            self.cost.add(&stored_cost(&node.body));
            // A record a reviewer corrected still fills its place.
            if matches!(node.status, NodeStatus::Accepted | NodeStatus::Superseded) {
                let record = AcceptedRecord {
                    id: node.id.clone(),
                    stratum,
                    input: body_str(&node, "input").to_string(),
                    response: body_str(&node, "response").to_string(),
                    input_embedding: stored_input_embedding(&node),
                };
                self.remember_accepted(record, None);
            } else {
                let reason = match body_str(&node, "reason") {
                    // Accepted by the checks, then rejected by a reviewer.
                    "" => REJECTED_IN_REVIEW.to_string(),
                    reason => reason.to_string(),
                };
                self.duplicates[stratum] += u64::from(is_duplicate(&reason));
                *self.rejected.entry(reason).or_default() += 1;
            }
        }
        Ok(())
    }

    /// Keeps an accepted record in every pool and index; `prepared` is
    /// what its decision already computed of its texts.
    fn remember_accepted(&mut self, record: AcceptedRecord, prepared: Option<Prepared>) {
        let prepared = prepared.unwrap_or_else(|| {
            let embedding = record.input_embedding.as_ref();
            Prepared::of_texts(
                &self.duplicates_index,
                &record.input,
                &record.response,
                embedding,
            )
        });
        self.progress[record.stratum].accepted += 1;
        self.novelty.insert_tokens(prepared.input_tokens);
        self.novelty_ids.push(record.id.clone());
        let embedding = record.input_embedding.as_ref();
        let language = &self.strata[record.stratum].language;
        self.duplicates_index
            .insert_keyed(record.id.as_str(), prepared.keys, language, embedding);
        self.diversity[record.stratum].add_ngrams(&prepared.input_ngrams, embedding);
        self.overall_diversity
            .add_ngrams(&prepared.input_ngrams, embedding);
        self.accepted.push(record, language);
    }

    /// Takes a round of human review into this run: its feedback nodes are
    /// stored, attempts planned from now on carry the reviewers'
    /// counter-examples and examples (and are grounded on those nodes), and
    /// strata of a paused group get no new attempts. Call before the first
    /// `next_units`.
    pub fn apply_feedback(&mut self, feedback: Feedback) -> Result<(), PipelineError> {
        let batch = feedback.lineage(&self.plan_id);
        if !batch.is_empty() {
            self.store.append_owned(batch)?;
        }
        for (stratum, progress) in self.strata.iter().zip(self.progress.iter_mut()) {
            progress.paused = feedback
                .for_stratum(&stratum.subdomain, &stratum.task_type)
                .is_some_and(|g| g.paused);
        }
        self.grounding.feedback = feedback;
        Ok(())
    }

    /// Whether every stratum is full, or out of budget with nothing in
    /// flight. Units still running for full strata cannot change the
    /// dataset (they would be surplus), so they are not waited for.
    pub fn is_finished(&self) -> bool {
        self.unconfirmed.is_empty()
            && self.analysis_pending.is_empty()
            && self.analysis_in_flight.is_empty()
            && self.progress.iter().all(|p| {
                p.missing() == 0
                    || (p.exhausted(self.options.attempts_per_record) && p.in_flight == 0)
            })
    }

    /// Whether the engine behind the units looks gone.
    pub fn is_failing(&self) -> bool {
        self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES
    }

    /// Why the run cannot go on, when the engine behind its units looks
    /// gone (every recent attempt failed).
    pub fn failing(&self) -> Option<PipelineError> {
        self.is_failing().then(|| PipelineError::EngineFailing {
            last_error: self.last_failure.clone().unwrap_or_default(),
        })
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len() + self.analysis_in_flight.len()
    }

    /// Up to `free` new units: domain analysis first, generation after it.
    pub fn next_units(&mut self, free: usize) -> Result<Vec<UnitTask>, PipelineError> {
        let mut units = Vec::new();
        while units.len() < free
            && let Some(chunk) = self.analysis_pending.pop_first()
        {
            self.analysis_in_flight.insert(chunk);
            let text = &self.grounding.knowledge.chunks[chunk].text;
            let seed = (self.plan.seed as u32).wrapping_add(chunk as u32);
            units.push(UnitTask {
                plan: self.plan_id.to_string(),
                unit: UnitKind::analysis_unit(chunk),
                kind: TaskKind::Analyze(AnalyzeTask {
                    call: prompts::analysis(&self.plan, text, seed),
                }),
            });
        }
        if !self.analysis_in_flight.is_empty() {
            return Ok(units);
        }
        let given = next_attempts(
            &self.progress,
            free - units.len(),
            self.options.attempts_per_record,
        );
        // Attempt numbers are taken one after another; planning each (its
        // prompts, its grounding) depends on nothing the others change, so
        // the units are planned in parallel.
        let mut numbered = Vec::new();
        for (stratum, count) in given.into_iter().enumerate() {
            let temperature = steered_temperature(
                self.plan.sampling.temperature,
                self.progress[stratum].attempts,
                self.duplicates[stratum],
            );
            for _ in 0..count {
                let attempt = self.open_attempt(stratum);
                self.leased[stratum].insert(attempt);
                numbered.push((stratum, attempt, temperature));
            }
        }
        let planned: Result<Vec<PlannedAttempt>, String> = numbered
            .par_iter()
            .map(|&(stratum, attempt, temperature)| {
                plan_attempt(
                    &self.plan,
                    &self.grounding,
                    &self.strata,
                    stratum,
                    attempt,
                    &self.accepted,
                    temperature,
                )
            })
            .collect();
        let planned = planned.map_err(|error| {
            for (stratum, attempt, _) in &numbered {
                self.leased[*stratum].remove(attempt);
            }
            PipelineError::Planning(error)
        })?;
        for planned in planned {
            units.push(UnitTask {
                plan: self.plan_id.to_string(),
                unit: planned.unit.clone(),
                kind: TaskKind::Generate(Box::new(planned.task.clone())),
            });
            self.progress[planned.stratum].in_flight += 1;
            self.in_flight.insert(planned.unit.clone(), planned);
        }
        Ok(units)
    }

    /// The lowest attempt index of `stratum` neither stored nor in flight.
    /// Attempts below `floor` are all stored, so the search starts there
    /// and passes at most the attempts in flight (not every stored one).
    fn open_attempt(&mut self, stratum: usize) -> u64 {
        let done = &self.done[stratum];
        let mut attempt = self.floor[stratum];
        while done.contains(&attempt) {
            attempt += 1;
        }
        self.floor[stratum] = attempt;
        while done.contains(&attempt) || self.leased[stratum].contains(&attempt) {
            attempt += 1;
        }
        attempt
    }

    /// Puts a unit that could not be delivered back into the queue.
    pub fn return_unit(&mut self, unit: &str) {
        if let Some(planned) = self.in_flight.remove(unit) {
            self.progress[planned.stratum].in_flight -= 1;
            self.leased[planned.stratum].remove(&planned.attempt);
        } else if let UnitKind::Analysis { chunk } = UnitKind::of(unit) {
            self.analysis_in_flight.remove(&chunk);
            self.analysis_pending.insert(chunk);
        }
    }

    /// Takes back the attempts in flight for strata that are full now: their
    /// answers could only be rejected as surplus, and their slots are worth
    /// more to the strata still short. The caller stops them on the workers;
    /// a result that arrives anyway is ignored, like any unit not in flight.
    pub fn withdraw_surplus(&mut self) -> Vec<String> {
        let surplus: Vec<String> = self
            .in_flight
            .iter()
            .filter(|(_, planned)| self.progress[planned.stratum].missing() == 0)
            .map(|(unit, _)| unit.clone())
            .collect();
        for unit in &surplus {
            self.return_unit(unit);
        }
        self.withdrawn_surplus += surplus.len() as u64;
        surplus
    }

    /// Decides about a finished unit and stores its lineage durably.
    pub fn record_result(&mut self, result: UnitResult) -> Result<UnitOutcome, PipelineError> {
        let mut outcomes = self.record_results(vec![result])?;
        Ok(outcomes.pop().expect("one outcome per result"))
    }

    /// Decides about finished units in order (each decision sees the ones
    /// before it) and stores all their lineage in one durable write: one
    /// sync for the group, which is what lets the coordinator keep up with
    /// many workers. The caller acknowledges none of them before this
    /// returns `Ok`; on `Err` the run must stop (the store is the truth a
    /// reopened run starts from).
    pub fn record_results(
        &mut self,
        results: Vec<UnitResult>,
    ) -> Result<Vec<UnitOutcome>, PipelineError> {
        let decided = self.decide_results(results)?;
        if !decided.lineage.is_empty() {
            self.store.append(&decided.lineage.build())?;
        }
        self.confirm(decided.ticket);
        Ok(decided.outcomes)
    }

    /// [`Self::record_results`] without the write, for a caller that writes
    /// on another thread: the decisions take effect at once (the next group
    /// sees them), but progress counts their acceptances, and the run can
    /// finish, only after [`Self::confirm`]. Groups must be written in the
    /// order they were decided (a later one may name an earlier one's
    /// records). If a write fails the run must stop.
    ///
    /// Only the decisions themselves run one after another: what each needs
    /// of its own texts is computed for the whole group in parallel first,
    /// and their lineage is left to build ([`PendingLineage::build`]) on
    /// whichever thread the caller chooses, so deciding need not wait for it.
    pub fn decide_results(&mut self, results: Vec<UnitResult>) -> Result<Decided, PipelineError> {
        let mut outcomes = vec![UnitOutcome::Ignored; results.len()];
        let mut attempts = Vec::with_capacity(results.len());
        for (position, result) in results.into_iter().enumerate() {
            if let UnitKind::Analysis { chunk } = UnitKind::of(&result.unit) {
                if self.analysis_in_flight.remove(&chunk) {
                    self.count_cost(&result, false);
                    self.record_analysis(chunk, &result)?;
                    outcomes[position] = UnitOutcome::Analysed;
                }
                continue;
            }
            if let Some(planned) = self.in_flight.remove(&result.unit) {
                attempts.push((position, planned, result));
            }
        }
        let prepared: Vec<Option<Prepared>> = attempts
            .par_iter()
            .map(|(_, planned, result)| Prepared::of(&self.duplicates_index, planned, result))
            .collect();
        let mut decisions = Vec::with_capacity(attempts.len());
        let mut accepted_strata = Vec::new();
        for ((position, planned, result), prepared) in attempts.iter().zip(prepared) {
            let (decision, outcome) = self.decide_attempt(planned, result, prepared);
            if outcome == UnitOutcome::Accepted {
                accepted_strata.push(planned.stratum);
            }
            outcomes[*position] = outcome;
            decisions.push(decision);
        }
        let lineage = PendingLineage {
            context: Arc::clone(&self.lineage),
            attempts: attempts
                .into_iter()
                .zip(decisions)
                .map(|((_, planned, result), decision)| (planned, result, decision))
                .collect(),
        };
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.unconfirmed.insert(ticket, accepted_strata);
        Ok(Decided {
            outcomes,
            lineage,
            ticket,
        })
    }

    /// The group decided under `ticket` is durable: its acceptances count.
    pub fn confirm(&mut self, ticket: u64) {
        self.unconfirmed.remove(&ticket);
    }

    /// Acceptances per stratum whose write is not confirmed yet.
    fn unconfirmed_accepted(&self) -> Vec<u64> {
        let mut counts = vec![0; self.strata.len()];
        for &stratum in self.unconfirmed.values().flatten() {
            counts[stratum] += 1;
        }
        counts
    }

    /// One attempt's decision; its effects on the run's counts, pools and
    /// indexes apply at once, so the next attempt in a group sees them.
    fn decide_attempt(
        &mut self,
        planned: &PlannedAttempt,
        result: &UnitResult,
        prepared: Option<Prepared>,
    ) -> (Decision, UnitOutcome) {
        self.progress[planned.stratum].in_flight -= 1;
        self.leased[planned.stratum].remove(&planned.attempt);
        if let Some(error) = &result.error {
            self.consecutive_failures += 1;
            self.last_failure = Some(error.clone());
        } else {
            self.consecutive_failures = 0;
        }
        let view = RunView {
            plan: &self.plan,
            language: &self.strata[planned.stratum].language,
            quota: self.progress[planned.stratum].quota,
            quota_left: self.progress[planned.stratum].missing(),
            duplicates: &self.duplicates_index,
            accepted: &self.accepted,
            novelty: &self.novelty,
            novelty_ids: &self.novelty_ids,
            rejected_answers: &self.grounding.feedback.rejected_answers,
            rejected_inputs: &self.grounding.feedback.rejected_inputs,
        };
        let mut decision = decide(&view, planned, result, prepared);
        let prepared = decision.prepared.take();
        self.done[planned.stratum].insert(planned.attempt);
        self.progress[planned.stratum].attempts += 1;
        self.count_cost(result, true);
        let outcome = match &decision.reason {
            None => {
                let record = AcceptedRecord {
                    id: record_id(&self.plan_id, &planned.unit),
                    stratum: planned.stratum,
                    input: final_input(planned, result).to_string(),
                    response: result
                        .text_of(&planned.task.response.step)
                        .unwrap_or_default()
                        .to_string(),
                    input_embedding: result.input_embedding.clone(),
                };
                self.remember_accepted(record, prepared);
                UnitOutcome::Accepted
            }
            Some(reason) => {
                self.duplicates[planned.stratum] += u64::from(is_duplicate(reason));
                *self.rejected.entry(reason.clone()).or_default() += 1;
                UnitOutcome::Rejected(reason.clone())
            }
        };
        (decision, outcome)
    }

    /// Adds a unit's cost to this run's and, for attempts, to the plan's:
    /// the plan's is what its stored attempts cost, so that a resumed run
    /// rebuilds it from the lineage (the domain analysis's few calls are
    /// counted by the run that made them only).
    fn count_cost(&mut self, result: &UnitResult, attempt: bool) {
        let cost = RunCost::of_result(result);
        if attempt {
            self.cost.add(&cost);
        }
        self.session_cost.add(&cost);
    }

    fn record_analysis(&mut self, chunk: usize, result: &UnitResult) -> Result<(), PipelineError> {
        let Some(text) = result.text_of("domain_analysis") else {
            tracing::warn!(chunk, error = ?result.error, "domain analysis failed; generation goes on without it");
            return Ok(());
        };
        let parsed: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        let chunk_node = self.grounding.knowledge.chunks[chunk].id.clone();
        let call = result.calls.last();
        let mut batch = LineageBatch::default();
        let mut add = |kind: NodeKind, role: &str, i: usize, mut body: serde_json::Value| {
            body["chunk"] = chunk.into();
            let id = NodeId::derive(
                &self.plan_id,
                &["analysis", &chunk.to_string(), role, &i.to_string()],
            );
            let mut params = serde_json::Map::new();
            params.insert("worker".into(), result.worker.clone().into());
            params.insert("schema".into(), "concepts+scenarios v1".into());
            batch.nodes.push(Node {
                id: id.clone(),
                plan: self.plan_id.clone(),
                kind,
                status: NodeStatus::Recorded,
                created_at_ms: call.map(|c| c.finished_ms).unwrap_or_else(now_unix_ms),
                step: "domain_analysis".into(),
                params,
                body,
            });
            batch
                .edges
                .push(Edge::new(&chunk_node, &id, EdgeKind::DerivedFrom));
        };
        let items = |key: &str| {
            parsed
                .get(key)
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default()
        };
        for (i, concept) in items("concepts").into_iter().enumerate() {
            if concept
                .get("term")
                .and_then(|t| t.as_str())
                .is_some_and(|t| !t.trim().is_empty())
            {
                add(NodeKind::GlossaryTerm, "concept", i, concept);
            }
        }
        for (i, scenario) in items("scenarios").into_iter().enumerate() {
            if scenario
                .get("description")
                .and_then(|t| t.as_str())
                .is_some_and(|t| !t.trim().is_empty())
            {
                add(NodeKind::Scenario, "scenario", i, scenario);
            }
        }
        self.store.append(&batch)?;
        let mut nodes = batch.nodes;
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        for node in &nodes {
            self.add_extracted(node);
        }
        Ok(())
    }

    /// Where the run stands now.
    pub fn progress(&self) -> Progress {
        let unconfirmed = self.unconfirmed_accepted();
        let phase = if !self.analysis_pending.is_empty() || !self.analysis_in_flight.is_empty() {
            "domain analysis"
        } else if self.is_finished() {
            "done"
        } else {
            "generation"
        };
        let target = self.progress.iter().map(|p| p.quota).sum();
        let accepted =
            self.progress.iter().map(|p| p.accepted).sum::<u64>() - unconfirmed.iter().sum::<u64>();
        let elapsed_s = self.started.elapsed().as_secs_f64();
        Progress {
            plan: self.plan_id.to_string(),
            phase,
            target,
            accepted,
            attempts: self.progress.iter().map(|p| p.attempts).sum(),
            in_flight: self.in_flight() as u64,
            rejected: self.rejected.clone(),
            generated_tokens: self.cost.total().generated_tokens
                + self
                    .session_cost
                    .stages
                    .get("analysis")
                    .map_or(0, |a| a.generated_tokens),
            cost: self.cost.clone(),
            session_cost: self.session_cost.clone(),
            accepted_this_run: accepted.saturating_sub(self.accepted_at_open),
            withdrawn_surplus: self.withdrawn_surplus,
            elapsed_s,
            eta_s: super::eta_s(
                accepted.saturating_sub(self.accepted_at_open),
                target.saturating_sub(accepted),
                elapsed_s,
            ),
            diversity: self.overall_diversity.now(),
            strata: self
                .strata
                .iter()
                .zip(&self.progress)
                .zip(&self.diversity)
                .zip(&unconfirmed)
                .map(|(((s, p), d), unconfirmed)| StratumLine {
                    stratum: stratum_key(s),
                    quota: p.quota,
                    accepted: p.accepted - unconfirmed,
                    attempts: p.attempts,
                    exhausted: p.exhausted(self.options.attempts_per_record),
                    diversity: d.now(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_ids_name_their_kind_and_round_trip() {
        assert_eq!(
            UnitKind::of(&UnitKind::analysis_unit(7)),
            UnitKind::Analysis { chunk: 7 }
        );
        for attempt in ["qa|en|retail#3", "analysis#x", "analysis", ""] {
            assert_eq!(UnitKind::of(attempt), UnitKind::Attempt, "{attempt}");
        }
    }
}
