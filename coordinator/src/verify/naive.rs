//! The naive baseline (issue 17): what a user gets without Seedling. The
//! same model, one plain prompt naming the domain, no strata, no grounding
//! documents, no checks; only the sampling seed varies. The CLI runs these
//! requests on the engine; this module says what to ask and reads answers.

use serde::Deserialize;

use super::TrainRow;
use crate::plan::Plan;

/// The one prompt every naive example comes from.
pub fn naive_prompt(plan: &Plan) -> String {
    format!(
        "Write a question and answer about {}: {}. Reply in JSON with the fields \"question\" and \"answer\".",
        plan.domain.name, plan.domain.description
    )
}

/// The output schema (so every reply parses; the content is left alone).
pub fn naive_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "question": { "type": "string", "minLength": 8, "maxLength": 400 },
            "answer": { "type": "string", "minLength": 8, "maxLength": 1200 }
        },
        "required": ["question", "answer"],
        "additionalProperties": false
    })
}

#[derive(Deserialize)]
struct Pair {
    question: String,
    answer: String,
}

/// A reply as a training row, or `None` when it is not a usable pair (cut
/// off by the token limit, or blank).
pub fn naive_row(index: usize, reply: &str) -> Option<TrainRow> {
    let pair: Pair = serde_json::from_str(reply.trim()).ok()?;
    let (question, answer) = (pair.question.trim(), pair.answer.trim());
    (!question.is_empty() && !answer.is_empty()).then(|| TrainRow {
        id: format!("naive-{index}"),
        input: question.to_string(),
        response: answer.to_string(),
        stratum: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_that_parse_become_rows_and_the_rest_are_dropped() {
        let row = naive_row(
            3,
            " {\"question\": \"How much is a day pass?\", \"answer\": \"It costs 12 crowns.\"} ",
        )
        .unwrap();
        assert_eq!(row.id, "naive-3");
        assert_eq!(row.response, "It costs 12 crowns.");
        assert!(naive_row(0, "{\"question\": \"cut off").is_none());
        assert!(naive_row(0, "{\"question\": \" \", \"answer\": \"x\"}").is_none());
    }
}
