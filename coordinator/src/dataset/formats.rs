//! The formats a dataset is written in: the record schema of design section
//! 3.1 (JSONL) and the chat layouts fine-tuning tools read: OpenAI
//! `messages` (ChatML), ShareGPT `conversations`, Alpaca `instruction/output`.

use seedling_common::record::Record;
use serde_json::{Value, json};

/// OpenAI / ChatML: `{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`,
/// with an optional system prompt first.
pub fn to_chatml(record: &Record, system: Option<&str>) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": record.input}));
    messages.push(json!({"role": "assistant", "content": record.response}));
    json!({ "messages": messages })
}

/// ShareGPT: `{"conversations": [{"from": "human", ...}, {"from": "gpt", ...}]}`.
pub fn to_sharegpt(record: &Record, system: Option<&str>) -> Value {
    let mut turns = Vec::new();
    if let Some(system) = system {
        turns.push(json!({"from": "system", "value": system}));
    }
    turns.push(json!({"from": "human", "value": record.input}));
    turns.push(json!({"from": "gpt", "value": record.response}));
    json!({ "conversations": turns })
}

/// Alpaca: `{"instruction", "input", "output"}` (the whole user turn is the instruction).
pub fn to_alpaca(record: &Record) -> Value {
    json!({ "instruction": record.input, "input": "", "output": record.response })
}

#[cfg(test)]
mod tests {
    use super::*;
    use seedling_common::record::{RecordMetadata, Trace};

    fn record() -> Record {
        Record {
            id: "r-1".into(),
            created_at: "2026-11-24T00:00:00.000Z".into(),
            domain: "retail-banking-support".into(),
            input: "Why was my card declined?".into(),
            response: "A pending hold lowered your available balance.".into(),
            metadata: RecordMetadata {
                generation_method: "template".into(),
                generator_version: "seedling 0.1.0".into(),
                quality_score: 0.9,
                review_status: "approved".into(),
            },
            trace: Trace {
                parent_id: None,
                processing_steps: vec![],
            },
            citations: vec![],
        }
    }

    #[test]
    fn chat_layouts_carry_both_turns_in_order() {
        let r = record();
        let chatml = to_chatml(&r, Some("You are a bank agent."));
        assert_eq!(chatml["messages"][0]["role"], "system");
        assert_eq!(chatml["messages"][1]["content"], r.input);
        assert_eq!(chatml["messages"][2]["role"], "assistant");
        assert_eq!(chatml["messages"][2]["content"], r.response);
        assert_eq!(to_chatml(&r, None)["messages"].as_array().unwrap().len(), 2);
        let sharegpt = to_sharegpt(&r, None);
        assert_eq!(sharegpt["conversations"][0]["from"], "human");
        assert_eq!(sharegpt["conversations"][1]["value"], r.response);
        let alpaca = to_alpaca(&r);
        assert_eq!(alpaca["instruction"], r.input);
        assert_eq!(alpaca["output"], r.response);
    }
}
