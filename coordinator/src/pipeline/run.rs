//! One plan's run: what is still to do, what every finished unit means, and
//! the lineage it leaves. Everything it knows it reads back from the lineage
//! store when it opens, so a run killed at any point continues where the
//! store says it stopped: no attempt is counted twice and no quota overshoots.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use seedling_common::embedding::Embedding;
use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{
    Edge, EdgeKind, LineageBatch, Node, NodeKind, NodeStatus, RECORD_VERDICT_STEP,
};
use seedling_common::record::RecordCitation;
use seedling_common::similarity::{NoveltyPool, tokens};
use seedling_common::time::now_unix_ms;
use seedling_common::work::{AnalyzeTask, TaskKind, UnitResult, UnitTask};
use serde::Serialize;

use super::PipelineError;
use super::attempt::{
    AcceptedPool, AcceptedRecord, Grounding, Method, PlannedAttempt, plan_attempt, stratum_key,
};
use super::knowledge::{Knowledge, knowledge_batch, plan_id};
use super::prompts::{self, JUDGE_VERSION};
use super::schedule::{StratumProgress, next_attempts, steered_temperature};
use crate::lineage::LineageStore;
use crate::plan::{GlossaryEntry, Plan, Scenario, Stratum, allocate};
use crate::quality::consistency::{CONSISTENCY_FLAG, disagreement};
use crate::quality::diversity::{DiversityNow, InputNgrams, RunningDiversity};
use crate::quality::duplicates::{CandidateKeys, Duplicate, DuplicateTiers};

/// Self-Instruct's novelty gate: ROUGE-L above this to an accepted input drops a new one.
pub const NOVELTY_THRESHOLD: f64 = 0.7;
/// Least chrF between a translated input's back-translation and its source.
pub const MIN_BACK_TRANSLATION_CHRF: f64 = 0.3;
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
    generated_tokens: u64,
    consecutive_failures: u32,
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
                knowledge: knowledge.clone(),
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
            generated_tokens: 0,
            consecutive_failures: 0,
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

    pub fn plan_id(&self) -> &PlanId {
        &self.plan_id
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
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
            self.generated_tokens += node
                .body
                .get("generated_tokens")
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            if node.status == NodeStatus::Accepted {
                let record = AcceptedRecord {
                    id: node.id.clone(),
                    stratum,
                    input: body_str(&node, "input").to_string(),
                    response: body_str(&node, "response").to_string(),
                    input_embedding: stored_input_embedding(&node),
                };
                self.remember_accepted(record, None);
            } else {
                let reason = body_str(&node, "reason").to_string();
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
                unit: format!("analysis#{chunk}"),
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
        } else if let Some(chunk) = unit.strip_prefix("analysis#").and_then(|c| c.parse().ok()) {
            self.analysis_in_flight.remove(&chunk);
            self.analysis_pending.insert(chunk);
        }
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
            if let Some(chunk) = result
                .unit
                .strip_prefix("analysis#")
                .and_then(|c| c.parse::<usize>().ok())
            {
                if self.analysis_in_flight.remove(&chunk) {
                    self.generated_tokens += result.generated_tokens();
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
        if result.error.is_some() {
            self.consecutive_failures += 1;
        } else {
            self.consecutive_failures = 0;
        }
        let mut decision = self.decide(planned, result, prepared);
        let prepared = decision.prepared.take();
        self.done[planned.stratum].insert(planned.attempt);
        self.progress[planned.stratum].attempts += 1;
        self.generated_tokens += result.generated_tokens();
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

    fn decide(
        &mut self,
        planned: &PlannedAttempt,
        result: &UnitResult,
        prepared: Option<Prepared>,
    ) -> Decision {
        let reject = |reason: &str, detail: serde_json::Value| Decision {
            reason: Some(reason.to_string()),
            detail,
            duplicate_of: None,
            disagrees: None,
            prepared: None,
        };
        if let Some(error) = &result.error {
            return reject("generation_failed", serde_json::json!({ "error": error }));
        }
        let Some(verdict) = &result.verdict else {
            return reject(
                "generation_failed",
                serde_json::json!({ "error": "no verdict" }),
            );
        };
        if let Some(first) = verdict.rejections.first() {
            let reason = first
                .get("reason")
                .and_then(|r| r.as_str())
                .unwrap_or("heuristics");
            return reject(
                reason,
                serde_json::json!({ "rejections": verdict.rejections }),
            );
        }
        if let Some(first) = verdict.evolution_failures.first() {
            let reason = first
                .get("reason")
                .and_then(|r| r.as_str())
                .unwrap_or("evolution");
            return reject(
                &format!("evol_{reason}"),
                serde_json::json!({ "evolution_failures": verdict.evolution_failures }),
            );
        }
        if let Some(chrf) = verdict.back_translation_chrf
            && chrf < MIN_BACK_TRANSLATION_CHRF
        {
            return reject(
                "translation_drift",
                serde_json::json!({ "back_translation_chrf": chrf, "min": MIN_BACK_TRANSLATION_CHRF }),
            );
        }
        let score = combined_score(&self.plan, verdict);
        if score < self.plan.quality.min_score {
            return reject(
                "low_quality_score",
                serde_json::json!({ "score": score, "heuristic_score": verdict.score, "min_score": self.plan.quality.min_score }),
            );
        }
        if self.progress[planned.stratum].missing() == 0 {
            return reject(
                "quota_filled",
                serde_json::json!({ "quota": self.progress[planned.stratum].quota }),
            );
        }
        let input = final_input(planned, result);
        let response = result
            .text_of(&planned.task.response.step)
            .unwrap_or_default();
        // Duplicates first: an exact copy is reported as one, not as "too
        // similar". Augmentations are meant to stay close to their source in
        // meaning; the text tiers still stop them repeating it word for word.
        let augmented = matches!(planned.method, Method::Augmentation(_));
        let embedding = result.input_embedding.as_ref();
        let prepared = prepared.unwrap_or_else(|| {
            Prepared::of_texts(&self.duplicates_index, input, response, embedding)
        });
        if let Some(duplicate) = self.duplicates_index.check_keyed(
            &prepared.keys,
            &self.strata[planned.stratum].language,
            embedding.filter(|_| !augmented),
        ) {
            let detail = match &duplicate {
                Duplicate::Exact { .. } => serde_json::json!({}),
                Duplicate::Near { jaccard, .. } => serde_json::json!({
                    "jaccard": jaccard, "threshold": self.plan.quality.near_duplicate_jaccard,
                }),
                Duplicate::Semantic { cosine, .. } => serde_json::json!({
                    "cosine": cosine, "threshold": self.duplicates_index.semantic_threshold(),
                }),
            };
            // The same question answered twice: a second opinion on the survivor.
            let survivor = NodeId::new(duplicate.survivor());
            let disagrees = match duplicate {
                Duplicate::Exact { .. } => None,
                _ => self
                    .accepted
                    .by_id(&survivor)
                    .and_then(|r| disagreement(&r.response, response)),
            };
            return Decision {
                duplicate_of: Some(survivor),
                disagrees,
                ..reject(duplicate.reason(), detail)
            };
        }
        // The novelty gate (Self-Instruct's ROUGE-L), augmentations exempt as above.
        if !augmented && let Some(close) = self.novelty.too_similar_tokens(&prepared.input_tokens) {
            let mut decision = reject(
                "too_similar",
                serde_json::json!({ "rouge_l": close.rouge_l, "threshold": NOVELTY_THRESHOLD }),
            );
            decision.duplicate_of = self.novelty_ids.get(close.closest).cloned();
            return decision;
        }
        Decision {
            reason: None,
            detail: serde_json::json!({ "score": score, "heuristic_score": verdict.score }),
            duplicate_of: None,
            disagrees: None,
            prepared: Some(prepared),
        }
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
            generated_tokens: self.generated_tokens,
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

/// A coordinator decision about one attempt; `reason` is `None` when accepted.
#[derive(Debug, Clone)]
struct Decision {
    reason: Option<String>,
    detail: serde_json::Value,
    duplicate_of: Option<NodeId>,
    /// A duplicate's answer that disagrees with its survivor's: why.
    disagrees: Option<String>,
    /// What was computed of its texts, kept with the record when accepted.
    prepared: Option<Prepared>,
}

/// What deciding about an attempt, and keeping it, needs of its texts:
/// computed from the result and its planned attempt alone, so a group's
/// results are prepared in parallel before the decisions, which must run
/// one after another.
#[derive(Debug, Clone)]
struct Prepared {
    keys: CandidateKeys,
    input_tokens: Vec<String>,
    input_ngrams: InputNgrams,
}

impl Prepared {
    /// `None` for a result the checks before the duplicate tiers reject
    /// anyway (a failed or heuristically rejected generation).
    fn of(tiers: &DuplicateTiers, planned: &PlannedAttempt, result: &UnitResult) -> Option<Self> {
        let passed = result.error.is_none()
            && result
                .verdict
                .as_ref()
                .is_some_and(|v| v.rejections.is_empty());
        passed.then(|| {
            let response = result
                .text_of(&planned.task.response.step)
                .unwrap_or_default();
            let embedding = result.input_embedding.as_ref();
            Self::of_texts(tiers, final_input(planned, result), response, embedding)
        })
    }

    fn of_texts(
        tiers: &DuplicateTiers,
        input: &str,
        response: &str,
        embedding: Option<&Embedding>,
    ) -> Self {
        let input_tokens = tokens(input);
        Self {
            keys: tiers.keys(&dedup_text(input, response), embedding),
            input_ngrams: InputNgrams::of_words(&input_tokens),
            input_tokens,
        }
    }
}

/// Where an accepted response node keeps its input's embedding.
const INPUT_EMBEDDING: &str = "input_embedding";

/// The input embedding an accepted response node keeps, if any.
pub fn stored_input_embedding(node: &Node) -> Option<Embedding> {
    node.body
        .get(INPUT_EMBEDDING)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// The record id of a unit: deterministic in plan and unit, so a result
/// that arrives twice is stored once.
pub fn record_id(plan: &PlanId, unit: &str) -> NodeId {
    NodeId::derive(plan, &[unit, "response"])
}

/// Whether a rejection says the attempt repeated an accepted record.
fn is_duplicate(reason: &str) -> bool {
    matches!(
        reason,
        "exact_duplicate" | "near_duplicate" | "semantic_duplicate" | "too_similar"
    )
}

/// Whether a call of `planned` made (part of) its input.
fn is_input_step(planned: &PlannedAttempt, step: &str) -> bool {
    step == planned.task.input.step || planned.task.evolve.as_ref().is_some_and(|e| e.step == step)
}

/// The input as the record holds it: the last input call's cleaned text.
fn final_input<'r>(planned: &PlannedAttempt, result: &'r UnitResult) -> &'r str {
    result
        .calls
        .iter()
        .rev()
        .find(|c| is_input_step(planned, &c.step))
        .map(|c| c.text.as_str())
        .unwrap_or_default()
}

/// What the lineage of a decided attempt is built from besides the attempt
/// itself: fixed for the life of a run, shared with whichever thread
/// builds it, so the run can go on deciding meanwhile.
#[derive(Debug)]
struct LineageContext {
    plan: Plan,
    plan_id: PlanId,
    strata: Vec<Stratum>,
    /// The plan's root node, the origin of every template instance.
    plan_node: NodeId,
}

impl LineageContext {
    /// Every node and edge one attempt leaves, in one atomic batch.
    fn attempt_lineage(
        &self,
        planned: &PlannedAttempt,
        result: &UnitResult,
        decision: &Decision,
    ) -> LineageBatch {
        let plan_id = &self.plan_id;
        let mut batch = LineageBatch::default();
        let node_id = |role: &str| NodeId::derive(plan_id, &[&planned.unit, role]);
        let first_ms = result
            .calls
            .first()
            .map(|c| c.started_ms)
            .unwrap_or_else(now_unix_ms);
        let mut node = |id: NodeId,
                        kind: NodeKind,
                        step: &str,
                        at_ms: u64,
                        params: serde_json::Map<String, serde_json::Value>,
                        body: serde_json::Value| {
            batch.nodes.push(Node {
                id,
                plan: plan_id.clone(),
                kind,
                status: NodeStatus::Recorded,
                created_at_ms: at_ms,
                step: step.to_string(),
                params,
                body,
            });
        };
        let stratum = &self.strata[planned.stratum];
        let mut edges = Vec::new();

        // 1. The template instance, or the augmentation request.
        let origin = match (planned.method, &planned.source) {
            (Method::Augmentation(kind), Some(source)) => {
                let id = node_id("augmentation");
                let mut params = serde_json::Map::new();
                params.insert("transform".into(), prompts::augmentation_name(kind).into());
                params.insert("target_stratum".into(), stratum_key(stratum).into());
                node(
                    id.clone(),
                    NodeKind::Augmentation,
                    "augmentation",
                    first_ms,
                    params,
                    serde_json::json!({ "request": planned.instruction, "sampled": planned.sampled }),
                );
                edges.push(Edge::new(source, &id, EdgeKind::DerivedFrom));
                id
            }
            _ => {
                let id = node_id("instance");
                let mut params = serde_json::Map::new();
                params.insert("task_type".into(), stratum.task_type.clone().into());
                params.insert("language".into(), stratum.language.clone().into());
                params.insert("method".into(), planned.method.name().into());
                params.insert("attempt".into(), planned.attempt.into());
                node(
                    id.clone(),
                    NodeKind::TemplateInstance,
                    "template_instantiation",
                    first_ms,
                    params,
                    serde_json::json!({ "text": planned.instruction, "stratum": stratum, "sampled": planned.sampled }),
                );
                edges.push(Edge::new(&self.plan_node, &id, EdgeKind::DerivedFrom));
                for knowledge in &planned.instance_grounding {
                    edges.push(Edge::new(knowledge, &id, EdgeKind::GroundedOn));
                }
                id
            }
        };

        // 2. The input, and its evolution.
        let mut previous = origin;
        let input_steps: Vec<&seedling_common::work::CallOutcome> = result
            .calls
            .iter()
            .filter(|c| is_input_step(planned, &c.step))
            .collect();
        for (i, call) in input_steps.iter().enumerate() {
            let id = node_id(&format!("input{i}"));
            let model_call = if i == 0 {
                Some(&planned.task.input)
            } else {
                planned.task.evolve.as_ref()
            };
            let mut params = model_call.map(|c| c.params()).unwrap_or_default();
            params.insert("worker".into(), result.worker.clone().into());
            if i > 0
                && let Some(op) = planned.evol_operation
            {
                params.insert("operation".into(), op.into());
            }
            node(
                id.clone(),
                NodeKind::GeneratedInput,
                &call.step,
                call.finished_ms,
                params,
                serde_json::json!({ "text": call.text, "tokens": call.generated_tokens }),
            );
            edges.push(Edge::new(&previous, &id, EdgeKind::DerivedFrom));
            if i == 0 {
                for seed in &planned.input_grounding {
                    edges.push(Edge::new(seed, &id, EdgeKind::GroundedOn));
                }
            }
            previous = id;
        }

        // 3. The response: the record.
        let record = record_id(plan_id, &planned.unit);
        let response_call = result
            .calls
            .iter()
            .find(|c| c.step == planned.task.response.step);
        let mut params = planned.task.response.params();
        params.insert("worker".into(), result.worker.clone().into());
        let accepted = decision.reason.is_none();
        let score = result
            .verdict
            .as_ref()
            .map(|v| combined_score(&self.plan, v))
            .unwrap_or(0.0);
        let finished_ms = result
            .calls
            .last()
            .map(|c| c.finished_ms)
            .unwrap_or_else(now_unix_ms);
        let mut body = serde_json::json!({
            "unit": planned.unit,
            "stratum": stratum_key(stratum),
            "stratum_fields": stratum,
            "attempt": planned.attempt,
            "method": planned.method.name(),
            "input": final_input(planned, result),
            "response": response_call.map(|c| c.text.clone()).unwrap_or_default(),
            "finish_reason": response_call.map(|c| c.finish_reason.clone()),
            "quality_score": score,
            "generated_tokens": result.generated_tokens(),
            "decision": if accepted { "accepted" } else { "rejected" },
        });
        if let Some(reason) = &decision.reason {
            body["reason"] = reason.clone().into();
        }
        let citations = citations(planned, result);
        if !citations.is_empty() {
            body["citations"] = serde_json::to_value(&citations).expect("citations serialise");
        }
        if let Some(error) = &result.error {
            body["error"] = error.clone().into();
        }
        // Kept with accepted records only: a resumed run rebuilds its
        // semantic index, and the card its dispersion, from them.
        if accepted && let Some(embedding) = &result.input_embedding {
            body[INPUT_EMBEDDING] =
                serde_json::to_value(embedding).expect("an embedding serialises");
        }
        batch.nodes.push(Node {
            id: record.clone(),
            plan: plan_id.clone(),
            kind: NodeKind::Response,
            status: if accepted {
                NodeStatus::Accepted
            } else {
                NodeStatus::Rejected
            },
            created_at_ms: response_call.map(|c| c.finished_ms).unwrap_or(finished_ms),
            step: planned.task.response.step.clone(),
            params,
            body,
        });
        edges.push(Edge::new(&previous, &record, EdgeKind::DerivedFrom));
        for grounding in &planned.response_grounding {
            if *grounding != previous {
                edges.push(Edge::new(grounding, &record, EdgeKind::GroundedOn));
            }
        }
        // A cited term or expert answer was in the prompt without an edge.
        let cited: BTreeSet<&NodeId> = result
            .verdict
            .iter()
            .flat_map(|v| &v.citations)
            .filter_map(|c| planned.support_nodes.get(c.source))
            .collect();
        for node in cited {
            if !planned.response_grounding.contains(node) && *node != previous {
                edges.push(Edge::new(node, &record, EdgeKind::GroundedOn));
            }
        }

        // 4. The quality decision about it.
        let judgement = node_id("quality");
        let mut params = serde_json::Map::new();
        params.insert("scorer".into(), "heuristics v1".into());
        if let Some(judge) = &planned.task.judge
            && result.verdict.as_ref().is_some_and(|v| v.judge.is_some())
        {
            params.insert("judge".into(), JUDGE_VERSION.into());
            params.insert("judge_weight".into(), self.plan.quality.judge_weight.into());
            params.insert("judge_sampling".into(), judge.params().into());
        }
        params.insert("min_score".into(), self.plan.quality.min_score.into());
        params.insert("novelty_threshold".into(), NOVELTY_THRESHOLD.into());
        params.insert(
            "near_duplicate_jaccard".into(),
            self.plan.quality.near_duplicate_jaccard.into(),
        );
        if self.plan.quality.semantic_dedup {
            params.insert(
                "semantic_duplicate_cosine".into(),
                self.plan.quality.semantic_duplicate_cosine.into(),
            );
        }
        let kind = if decision.duplicate_of.is_some() {
            NodeKind::DedupDecision
        } else {
            NodeKind::Judgement
        };
        let step = if decision.duplicate_of.is_some() {
            "deduplication"
        } else {
            RECORD_VERDICT_STEP
        };
        batch.nodes.push(Node {
            id: judgement.clone(),
            plan: plan_id.clone(),
            kind,
            status: NodeStatus::Recorded,
            created_at_ms: finished_ms + 1,
            step: step.into(),
            params,
            body: serde_json::json!({
                "decision": if accepted { "accepted" } else { "rejected" },
                "reason": decision.reason,
                "detail": decision.detail,
                "heuristics": result.verdict,
                "duplicate_of": decision.duplicate_of,
            }),
        });
        edges.push(Edge::new(&record, &judgement, EdgeKind::JudgedBy));
        if let Some(survivor) = &decision.duplicate_of {
            edges.push(Edge::new(survivor, &record, EdgeKind::DuplicateOf));
        }
        // 5. A consistency flag on the survivor: `lineage show SURVIVOR` lists it.
        if let (Some(survivor), Some(why)) = (&decision.duplicate_of, &decision.disagrees) {
            let flag = node_id("consistency");
            batch.nodes.push(Node {
                id: flag.clone(),
                plan: plan_id.clone(),
                kind: NodeKind::Judgement,
                status: NodeStatus::Recorded,
                created_at_ms: finished_ms + 2,
                step: "consistency_check".into(),
                params: serde_json::Map::new(),
                body: serde_json::json!({
                    "flag": CONSISTENCY_FLAG,
                    "reason": why,
                    "record": survivor,
                    "second_opinion": record,
                }),
            });
            edges.push(Edge::new(survivor, &flag, EdgeKind::JudgedBy));
            edges.push(Edge::new(&record, &flag, EdgeKind::GroundedOn));
        }
        batch.edges = edges;
        batch
    }
}

/// Decided attempts whose lineage is still to be built ([`Self::build`]),
/// on any thread.
#[derive(Debug)]
pub struct PendingLineage {
    context: Arc<LineageContext>,
    attempts: Vec<(PlannedAttempt, UnitResult, Decision)>,
}

impl PendingLineage {
    /// Every node and edge the attempts leave, as one batch; the attempts'
    /// parts are built in parallel.
    pub fn build(self) -> LineageBatch {
        let batches: Vec<LineageBatch> = self
            .attempts
            .par_iter()
            .map(|(planned, result, decision)| {
                self.context.attempt_lineage(planned, result, decision)
            })
            .collect();
        let mut group = LineageBatch::default();
        for batch in batches {
            group.extend(batch);
        }
        group
    }

    pub fn is_empty(&self) -> bool {
        self.attempts.is_empty()
    }
}

/// The worker's citations, each naming its source's node and quoting the span.
fn citations(planned: &PlannedAttempt, result: &UnitResult) -> Vec<RecordCitation> {
    let (Some(verdict), Some(support)) = (&result.verdict, &planned.task.checks.support) else {
        return Vec::new();
    };
    verdict
        .citations
        .iter()
        .filter_map(|c| {
            let node = planned.support_nodes.get(c.source)?.clone();
            let text = support.sources.get(c.source)?;
            let quote: String = text.chars().skip(c.start).take(c.end - c.start).collect();
            Some(RecordCitation {
                node: node.to_string(),
                start: c.start,
                end: c.end,
                quote: quote.trim().to_string(),
                facts: c.facts.clone(),
            })
        })
        .collect()
}

/// The record's quality score: the heuristic estimate, blended with the
/// judge's rubric by the plan's judge weight when the judge ran.
fn combined_score(plan: &Plan, verdict: &seedling_common::work::HeuristicVerdict) -> f64 {
    match verdict.judge.as_ref().and_then(prompts::judge_score) {
        Some(judged) => {
            let w = plan.quality.judge_weight;
            (((1.0 - w) * verdict.score + w * judged) * 1000.0).round() / 1000.0
        }
        None => verdict.score,
    }
}

fn dedup_text(input: &str, response: &str) -> String {
    format!("{input}\n{response}")
}
