//! Greedy answers of a fine-tuned condition: each fact probe's question
//! asked of the model with its trained LoRA (on our own engine, as a GGUF
//! adapter), and the answer checked for the probe's fact. Teacher forcing
//! says which fact the model finds likelier; this says whether it writes
//! the right one when it answers on its own.

use seedling_common::facts::{facts, kinds_compatible, readings};
use seedling_common::work::{CallPrompt, ModelCall};
use serde::{Deserialize, Serialize};

use super::probes::Probe;
use super::proxy::context;

/// The metric's name in a condition's metrics.
pub const GREEDY_FACT: &str = "greedy_fact";

/// Long enough for the statement a probe asks for (the probes' answers are
/// one sentence), short enough for the smoke tier on a slow machine.
const MAX_NEW_TOKENS: u32 = 64;

/// The probe's question as a greedy chat call, under the dataset's system prompt.
pub fn greedy_call(probe: &Probe, system_prompt: &str) -> ModelCall {
    ModelCall {
        step: "greedy_probe".into(),
        prompt: CallPrompt::Chat(context(system_prompt, &[], &probe.prompt)),
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        max_new_tokens: MAX_NEW_TOKENS,
        seed: 0,
        stop: Vec::new(),
        json_schema: None,
        shared_prefix: None,
    }
}

/// Whether `answer` states `fact`: a figure by what its number may mean
/// ("1,500 dollars" is "$1500"), other text word for word, case aside.
pub fn states(answer: &str, fact: &str) -> bool {
    let wanted = facts(fact);
    if wanted.is_empty() {
        return answer.to_lowercase().contains(&fact.trim().to_lowercase());
    }
    let found = facts(answer);
    wanted.iter().all(|w| {
        let meant = readings(w);
        found.iter().any(|f| {
            kinds_compatible(&w.kind, &f.kind) && readings(f).iter().any(|r| meant.contains(r))
        })
    })
}

/// One greedy answer and whether it is right: it states the probe's fact
/// and none of the swapped alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GreedyAnswer {
    pub condition: String,
    pub probe: String,
    pub question: String,
    pub fact: String,
    pub answer: String,
    pub correct: bool,
}

impl GreedyAnswer {
    pub fn judged(condition: &str, probe: &Probe, answer: String) -> Self {
        let correct = states(&answer, &probe.fact)
            && !probe.alternatives.iter().any(|alt| states(&answer, alt));
        Self {
            condition: condition.to_string(),
            probe: probe.id.clone(),
            question: probe.prompt.clone(),
            fact: probe.fact.clone(),
            answer,
            correct,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(fact: &str, alternatives: &[&str]) -> Probe {
        Probe {
            id: "p-1".into(),
            source: "rule".into(),
            prompt: "How much is the minor works permit?".into(),
            answer: format!("It costs {fact}."),
            fact: fact.into(),
            fact_kind: "money".into(),
            fact_start: 9,
            alternatives: alternatives.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn an_answer_is_right_when_it_states_the_fact_and_no_alternative() {
        let p = probe("120 euros", &["150 euros", "45 euros"]);
        let judged = |answer: &str| GreedyAnswer::judged("seedling", &p, answer.into()).correct;
        assert!(judged("The minor works permit costs 120 euros."));
        assert!(!judged("It costs 150 euros."), "a swapped figure");
        assert!(
            !judged("Between 120 euros and 150 euros."),
            "hedging over both"
        );
        assert!(!judged("Please ask the permits desk."), "no figure at all");
        // What a number may mean, not how it is written.
        assert!(states("You pay $1500 up front.", "1,500 dollars"));
        assert!(states("Fees are due at 3:00 pm.", "3:00"));
        // Words are matched as words.
        assert!(states(
            "APY is the Annual Percentage Yield.",
            "annual percentage yield"
        ));
        assert!(!states("APY is a fee.", "annual percentage yield"));
    }

    #[test]
    fn the_call_is_greedy_and_carries_the_system_prompt() {
        let call = greedy_call(&probe("120 euros", &[]), "You are the permits desk.");
        assert_eq!(call.temperature, 0.0);
        let CallPrompt::Chat(messages) = &call.prompt else {
            panic!("a chat call")
        };
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1].content, "How much is the minor works permit?");
        let bare = greedy_call(&probe("120 euros", &[]), "");
        let CallPrompt::Chat(messages) = &bare.prompt else {
            panic!("a chat call")
        };
        assert_eq!(messages.len(), 1, "no empty system message");
    }
}
