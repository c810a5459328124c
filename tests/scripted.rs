//! A **test double** for the worker: answers every unit from a script, with
//! no model, so the coordinator's logic (quotas, resume, dedup, lineage,
//! packaging) can be tested quickly and exactly. It lives only in the test
//! crate; the shipped `seedling` binary cannot reach it.
//!
//! Inputs and responses are random words of the task's language, so they are
//! novel and pass the language check; a few units are scripted duplicates of
//! an earlier answer or refusals, so dedup and heuristics have work to do.
//! The verdict comes from the worker's real model-free checks.

use std::cell::RefCell;
use std::collections::HashMap;

use seedling_common::embedding::Embedding;
use seedling_common::work::{CallOutcome, HeuristicVerdict, TaskKind, UnitResult, UnitTask};
use seedling_worker::unit::judge_pair;

const ENGLISH: &str = "account balance card payment transfer bank money fee charge monthly statement \
    deposit withdraw online branch customer service phone number address change limit daily weekly \
    travel abroad currency exchange rate interest savings checking loan mortgage credit debit history \
    pending hold merchant refund dispute receipt purchase store fuel station grocery restaurant hotel \
    airline ticket booking cancel order delivery package return policy window week month year today \
    yesterday morning evening night please help understand explain why how when where which would \
    could should might really quite very simply clearly quickly slowly usually often never always \
    family friend business owner small large new old second first last next previous recent \
    automatic manual mobile app website email letter message notice alert reminder password login \
    security code verification identity document proof income salary employer tax form report";

const SPANISH: &str = "cuenta saldo tarjeta pago transferencia banco dinero comisión cargo mensual \
    extracto depósito retirar sucursal cliente servicio teléfono número dirección cambio límite diario \
    semanal viaje extranjero moneda cambio interés ahorro préstamo hipoteca crédito débito historial \
    pendiente retención comercio reembolso disputa recibo compra tienda gasolinera supermercado \
    restaurante hotel aerolínea billete reserva cancelar pedido entrega paquete devolución política \
    semana mes año hoy ayer mañana tarde noche por favor ayuda entender explicar porque cómo cuándo \
    dónde cuál podría debería realmente bastante muy claramente rápidamente despacio normalmente \
    siempre nunca familia amigo negocio dueño pequeño grande nuevo viejo segundo primero último \
    próximo anterior reciente automático manual aplicación móvil correo carta mensaje aviso alerta \
    contraseña acceso seguridad código verificación identidad documento prueba ingresos salario";

/// What the script makes go wrong.
#[derive(Debug, Clone, Copy, Default)]
pub struct Script {
    /// Every `duplicate_every`-th generate unit repeats the previous answer (0: never).
    pub duplicate_every: u64,
    /// Every `refuse_every`-th generate unit refuses (0: never).
    pub refuse_every: u64,
    /// Every `paraphrase_every`-th generate unit asks the previous question
    /// in other words: new text, the previous input's embedding (0: never).
    pub paraphrase_every: u64,
    /// Answers open with "Yes," and paraphrases' answers with "No,": the
    /// second opinion contradicts the first.
    pub contradict_paraphrases: bool,
    /// Every unit fails as if the engine were gone.
    pub failing: bool,
    /// Plain answers (not duplicates, paraphrases or refusals) reuse the
    /// verdict the worker's real checks gave the first one of their
    /// language and shape. For the coordinator benchmark, whose simulated
    /// workers stand in for other machines: the coordinator gets results of
    /// the same shape while the double's own CPU stays off its cores.
    pub reuse_verdicts: bool,
}

/// Scripted answers to units.
#[derive(Debug, Default)]
pub struct ScriptedWorker {
    script: Script,
    /// The last generated (input, response).
    last: RefCell<Option<(String, String)>>,
    count: RefCell<u64>,
    /// Verdicts of plain answers by (language, evolved, judged, translated back).
    verdicts: RefCell<HashMap<(String, bool, bool, bool), HeuristicVerdict>>,
}

fn hash(text: &str, salt: &str) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(text.as_bytes());
    hasher.update(salt.as_bytes());
    let mut word = [0u8; 8];
    word.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    u64::from_le_bytes(word)
}

const ENGLISH_GLUE: &[&str] = &[
    "the", "and", "my", "of", "to", "is", "for", "with", "that", "it", "I", "was",
];
const SPANISH_GLUE: &[&str] = &[
    "el", "la", "de", "que", "y", "en", "los", "por", "con", "para", "mi", "una",
];

/// `n` words of `language` drawn by a hash of `seed`, every other one a
/// function word, so that language identification recognises the text.
pub fn words(language: &str, seed: &str, n: usize) -> String {
    let (vocabulary, glue) = if language == "es" {
        (SPANISH, SPANISH_GLUE)
    } else {
        (ENGLISH, ENGLISH_GLUE)
    };
    let vocabulary: Vec<&str> = vocabulary.split_whitespace().collect();
    let mut out: Vec<&str> = (0..n)
        .map(|i| {
            let h = hash(seed, &i.to_string());
            if i % 2 == 0 {
                glue[(h % glue.len() as u64) as usize]
            } else {
                vocabulary[(h % vocabulary.len() as u64) as usize]
            }
        })
        .collect();
    out.dedup();
    out.join(" ")
}

/// The double's stand-in for an engine embedding: a pseudo-random vector
/// of the text, so distinct texts are nearly orthogonal.
pub fn scripted_embedding(text: &str) -> Embedding {
    let vector: Vec<f32> = (0..64)
        .map(|i| (hash(text, &format!("dim{i}")) % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    Embedding::quantise(&vector)
}

fn call(step: &str, text: String) -> CallOutcome {
    CallOutcome {
        step: step.into(),
        text,
        finish_reason: "EndOfGeneration".into(),
        prompt_tokens: 100,
        generated_tokens: 40,
        started_ms: seedling_common::time::now_unix_ms(),
        finished_ms: seedling_common::time::now_unix_ms(),
        // A fixed cost per call, so tests can check that costs add up.
        cost: seedling_common::cost::CallCost {
            prompt_tokens_reused: 60,
            queued_ms: 1,
            prefill_ms: 10,
            decode_ms: 40,
        },
    }
}

impl ScriptedWorker {
    pub fn new(script: Script) -> Self {
        Self {
            script,
            ..Self::default()
        }
    }

    pub fn answer(&self, task: &UnitTask) -> UnitResult {
        let mut result = UnitResult::new(&task.plan, &task.unit, "scripted");
        if self.script.failing {
            result.error = Some("the engine has stopped".into());
            return result;
        }
        match &task.kind {
            TaskKind::Analyze(analyze) => {
                let schema = analyze
                    .call
                    .json_schema
                    .as_ref()
                    .expect("analysis is constrained");
                let subdomain =
                    schema["properties"]["scenarios"]["items"]["properties"]["subdomain"]["enum"]
                        [0]
                    .clone();
                let json = serde_json::json!({
                    "concepts": [{"term": format!("concept {}", task.unit), "definition": "What the chunk explains."}],
                    "scenarios": [{"description": format!("A customer asks about {}", task.unit), "subdomain": subdomain}],
                });
                result.calls.push(call("domain_analysis", json.to_string()));
            }
            TaskKind::Generate(generate) => {
                let n = {
                    let mut count = self.count.borrow_mut();
                    *count += 1;
                    *count
                };
                let language = generate.checks.language.as_str();
                let previous = self.last.borrow().clone();
                let mut embedding_of = None;
                let mut plain = false;
                // A scripted answer, opening with a verdict when answers are
                // meant to contradict each other, and ending on the topic of
                // the request (a few of its longer words, not in a row), as
                // a real answer takes up the words it was asked in.
                // A grounded answer also borrows a word from its sources
                // (the support check rejects one that borrows none).
                let borrowed = generate
                    .checks
                    .support
                    .as_ref()
                    .and_then(|spec| spec.sources.first())
                    .and_then(|source| {
                        source
                            .split(|c: char| !c.is_alphabetic())
                            .find(|w| w.chars().count() >= 6)
                    })
                    .map(|w| format!(" in {}", w.to_lowercase()))
                    .unwrap_or_default();
                let answer = |task: &UnitTask, language: &str, verdict: &str, input: &str| {
                    let words = words(language, &format!("{}response", task.unit), 40);
                    let topic: Vec<&str> = input
                        .split_whitespace()
                        .filter(|w| w.chars().count() >= 5)
                        .take(3)
                        .collect();
                    let words = format!("{words}, about {}{borrowed}", topic.join(" and "));
                    if self.script.contradict_paraphrases {
                        format!("{verdict}{words}")
                    } else {
                        words
                    }
                };
                let (base, input, response) = match previous {
                    Some((input, response))
                        if self.script.duplicate_every > 0
                            && n % self.script.duplicate_every == 0 =>
                    {
                        (input.clone(), input, response)
                    }
                    Some((previous_input, _))
                        if self.script.paraphrase_every > 0
                            && n % self.script.paraphrase_every == 0 =>
                    {
                        embedding_of = Some(previous_input);
                        let input = words(language, &format!("{}paraphrase", task.unit), 16);
                        let response = answer(task, language, "No, ", &input);
                        (input.clone(), input, response)
                    }
                    _ => {
                        let base = words(language, &format!("{}base", task.unit), 16);
                        let input = if generate.evolve.is_some() {
                            words(language, &format!("{}evolved", task.unit), 18)
                        } else {
                            base.clone()
                        };
                        let response =
                            if self.script.refuse_every > 0 && n % self.script.refuse_every == 0 {
                                "I'm sorry, but I cannot help with that request today.".to_string()
                            } else {
                                plain = true;
                                answer(task, language, "Yes, ", &input)
                            };
                        (base, input, response)
                    }
                };
                result.calls.push(call(&generate.input.step, base.clone()));
                if let Some(evolve) = &generate.evolve {
                    result.calls.push(call(&evolve.step, input.clone()));
                }
                result
                    .calls
                    .push(call(&generate.response.step, response.clone()));
                let shape = (
                    language.to_string(),
                    generate.evolve.is_some(),
                    generate.judge.is_some(),
                    generate.back_translation.is_some(),
                );
                let reuse = plain && self.script.reuse_verdicts;
                let kept = reuse
                    .then(|| self.verdicts.borrow().get(&shape).cloned())
                    .flatten();
                let mut verdict = kept.unwrap_or_else(|| {
                    let verdict = judge_pair(generate, &base, &input, &response);
                    if reuse && verdict.rejections.is_empty() {
                        self.verdicts.borrow_mut().insert(shape, verdict.clone());
                    }
                    verdict
                });
                if let Some(back) = &generate.back_translation
                    && verdict.rejections.is_empty()
                {
                    // A perfect round trip.
                    result
                        .calls
                        .push(call(&back.call.step, back.source.clone()));
                    verdict.back_translation_chrf = Some(seedling_common::similarity::chrf(
                        &back.source,
                        &back.source,
                    ));
                }
                if let Some(judge) = &generate.judge
                    && verdict.rejections.is_empty()
                {
                    let graded = serde_json::json!({
                        "rationale": "scripted", "helpfulness": 4, "correctness": 4,
                        "instruction_following": 5, "clarity": 3,
                    });
                    result.calls.push(call(&judge.step, graded.to_string()));
                    verdict.judge = Some(graded);
                }
                if generate.embed_input && verdict.rejections.is_empty() {
                    result.input_embedding = Some(scripted_embedding(
                        embedding_of.as_deref().unwrap_or(&input),
                    ));
                }
                result.verdict = Some(verdict);
                *self.last.borrow_mut() = Some((input, response));
            }
        }
        result
    }
}

/// How the tests run a plan on the scripted worker: `target` records, the
/// example plans' directory, six attempts per record.
pub fn scripted_options(target: u64) -> seedling_coordinator::pipeline::RunOptions {
    seedling_coordinator::pipeline::RunOptions {
        target: Some(target),
        generator_version: "seedling test (scripted worker)".into(),
        base_dir: crate::repo_root().join("examples"),
        attempts_per_record: 6.0,
    }
}

/// Runs `plan` to `target` accepted records on the scripted worker into a
/// store at `dir`, `slots` units at a time: a store with a finished run, for
/// tests of what comes after generation (review, export).
pub fn scripted_run(
    dir: &std::path::Path,
    plan: &seedling_coordinator::plan::Plan,
    target: u64,
) -> (
    std::sync::Arc<seedling_coordinator::lineage::LineageStore>,
    seedling_common::ids::PlanId,
) {
    scripted_run_with(dir, plan, target, Script::default())
}

/// [`scripted_run`] with what `script` makes go wrong.
pub fn scripted_run_with(
    dir: &std::path::Path,
    plan: &seedling_coordinator::plan::Plan,
    target: u64,
    script: Script,
) -> (
    std::sync::Arc<seedling_coordinator::lineage::LineageStore>,
    seedling_common::ids::PlanId,
) {
    use seedling_coordinator::pipeline::PlanRun;
    let store = std::sync::Arc::new(
        seedling_coordinator::lineage::LineageStore::open(dir).expect("a store opens"),
    );
    let mut run = PlanRun::open(
        std::sync::Arc::clone(&store),
        plan.clone(),
        scripted_options(target),
    )
    .expect("the plan opens");
    let worker = ScriptedWorker::new(script);
    let mut pending = std::collections::VecDeque::new();
    loop {
        pending.extend(run.next_units(8 - pending.len()).expect("units"));
        let Some(unit) = pending.pop_front() else {
            break;
        };
        run.record_result(worker.answer(&unit))
            .expect("a result is stored");
    }
    let plan_id = run.plan_id().clone();
    (store, plan_id)
}
