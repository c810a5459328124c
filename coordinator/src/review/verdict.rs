//! What a reviewer can decide about one record, as the page sends it and as
//! `seedling review import` reads it, and the checks every decision passes
//! before it reaches the store.

use serde::{Deserialize, Serialize};

use seedling_common::ids::NodeId;

/// Why a reviewer rejects a record: a fixed list, so that reasons can be
/// counted per stratum and fed back into generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    FactuallyWrong,
    ContradictsReference,
    OffDomain,
    Unsafe,
    WrongLanguage,
    PoorInstruction,
    PoorResponse,
    Duplicate,
}

impl RejectReason {
    pub const ALL: [RejectReason; 8] = [
        RejectReason::FactuallyWrong,
        RejectReason::ContradictsReference,
        RejectReason::OffDomain,
        RejectReason::Unsafe,
        RejectReason::WrongLanguage,
        RejectReason::PoorInstruction,
        RejectReason::PoorResponse,
        RejectReason::Duplicate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::FactuallyWrong => "factually_wrong",
            RejectReason::ContradictsReference => "contradicts_reference",
            RejectReason::OffDomain => "off_domain",
            RejectReason::Unsafe => "unsafe",
            RejectReason::WrongLanguage => "wrong_language",
            RejectReason::PoorInstruction => "poor_instruction",
            RejectReason::PoorResponse => "poor_response",
            RejectReason::Duplicate => "duplicate",
        }
    }

    /// What the page shows.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::FactuallyWrong => "Factually wrong",
            RejectReason::ContradictsReference => "Contradicts reference",
            RejectReason::OffDomain => "Off-domain",
            RejectReason::Unsafe => "Unsafe",
            RejectReason::WrongLanguage => "Wrong language",
            RejectReason::PoorInstruction => "Poor instruction",
            RejectReason::PoorResponse => "Poor response",
            RejectReason::Duplicate => "Duplicate",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }

    fn names() -> String {
        Self::ALL.map(RejectReason::as_str).join(", ")
    }
}

/// One decision about one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Verdict {
    Accept,
    Reject {
        reason: RejectReason,
    },
    /// The corrected texts become a new record derived from the original.
    Edit {
        input: String,
        response: String,
    },
}

impl Verdict {
    /// The label agreement and calibration compare: an edit keeps the record.
    pub fn keeps(&self) -> bool {
        !matches!(self, Verdict::Reject { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Reject { .. } => "reject",
            Verdict::Edit { .. } => "edit",
        }
    }
}

/// A decision as a reviewer submits it. `id` is chosen by the client (the
/// page makes one per decision), so a decision sent twice, after a lost
/// answer, is stored once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub id: String,
    pub record: NodeId,
    pub reviewer: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    #[serde(default)]
    pub note: String,
}

/// Longest note, edited text and name a decision may carry: a page or a
/// file is not a way to grow the store without bound.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
const MAX_NAME_BYTES: usize = 64;

/// Why a decision is refused before anything is stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecisionError {
    #[error("not a decision: {0}")]
    Malformed(String),
    #[error(
        "unknown reason {0:?}; one of: {reasons}",
        reasons = RejectReason::names()
    )]
    UnknownReason(String),
    #[error("`{field}` must be 1 to {max} letters, digits, '-', '_' or '.' (got {value:?})")]
    BadName {
        field: &'static str,
        max: usize,
        value: String,
    },
    #[error("`{field}` is longer than {MAX_TEXT_BYTES} bytes")]
    TooLong { field: &'static str },
    #[error("an edit needs a non-empty `{0}`")]
    EmptyEdit(&'static str),
    #[error("record {0} is not in this plan's review population")]
    UnknownRecord(String),
    #[error("decision id {0:?} was already used for a different decision")]
    Duplicate(String),
    #[error(
        "record {record} was rejected by the automatic check {check}; reviewing it measures the check: accept or reject it (an edit would add it to the dataset)"
    )]
    EditOfCheckRejected { record: String, check: String },
    #[error("{reviewer} has no decision to undo")]
    NothingToUndo { reviewer: String },
}

fn check_name(field: &'static str, value: &str) -> Result<(), DecisionError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_BYTES
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(DecisionError::BadName {
            field,
            max: MAX_NAME_BYTES,
            value: value.chars().take(80).collect(),
        })
    }
}

/// A reviewer's name as the page and the files carry it.
pub fn check_reviewer(name: &str) -> Result<(), DecisionError> {
    check_name("reviewer", name)
}

impl Decision {
    /// Reads one decision from JSON, naming the unknown reason rather than
    /// serde's generic variant error.
    pub fn from_json(value: serde_json::Value) -> Result<Self, DecisionError> {
        if value["decision"] == "reject"
            && let Some(reason) = value["reason"].as_str()
            && RejectReason::parse(reason).is_none()
        {
            return Err(DecisionError::UnknownReason(reason.to_string()));
        }
        if value["decision"] == "reject" && value.get("reason").is_none() {
            return Err(DecisionError::Malformed(format!(
                "a rejection needs a `reason`: one of {}",
                RejectReason::names()
            )));
        }
        let decision: Decision =
            serde_json::from_value(value).map_err(|e| DecisionError::Malformed(e.to_string()))?;
        decision.check()?;
        Ok(decision)
    }

    /// The checks that need no store.
    pub fn check(&self) -> Result<(), DecisionError> {
        check_name("id", &self.id)?;
        check_reviewer(&self.reviewer)?;
        if self.note.len() > MAX_TEXT_BYTES {
            return Err(DecisionError::TooLong { field: "note" });
        }
        if let Verdict::Edit { input, response } = &self.verdict {
            for (field, text) in [("input", input), ("response", response)] {
                if text.trim().is_empty() {
                    return Err(DecisionError::EmptyEdit(field));
                }
                if text.len() > MAX_TEXT_BYTES {
                    return Err(DecisionError::TooLong { field });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_read_from_json_name_what_is_wrong() {
        let ok = Decision::from_json(serde_json::json!({
            "id": "d-1", "record": "n-abc", "reviewer": "ana",
            "decision": "reject", "reason": "off_domain", "note": "about cars"
        }))
        .unwrap();
        assert_eq!(
            ok.verdict,
            Verdict::Reject {
                reason: RejectReason::OffDomain
            }
        );
        let unknown = Decision::from_json(serde_json::json!({
            "id": "d-1", "record": "n-abc", "reviewer": "ana",
            "decision": "reject", "reason": "boring"
        }))
        .unwrap_err();
        assert_eq!(unknown, DecisionError::UnknownReason("boring".into()));
        assert!(unknown.to_string().contains("factually_wrong"), "{unknown}");
        let no_reason = Decision::from_json(serde_json::json!({
            "id": "d-1", "record": "n-abc", "reviewer": "ana", "decision": "reject"
        }))
        .unwrap_err();
        assert!(
            no_reason.to_string().contains("needs a `reason`"),
            "{no_reason}"
        );
        let empty_edit = Decision::from_json(serde_json::json!({
            "id": "d-1", "record": "n-abc", "reviewer": "ana",
            "decision": "edit", "input": "q", "response": "  "
        }))
        .unwrap_err();
        assert_eq!(empty_edit, DecisionError::EmptyEdit("response"));
        let bad_name = Decision::from_json(serde_json::json!({
            "id": "d-1", "record": "n-abc", "reviewer": "<script>",
            "decision": "accept"
        }))
        .unwrap_err();
        assert!(matches!(
            bad_name,
            DecisionError::BadName {
                field: "reviewer",
                ..
            }
        ));
        let verdict = Decision::from_json(serde_json::json!({
            "id": "d-1", "record": "n-abc", "reviewer": "ana", "decision": "maybe"
        }))
        .unwrap_err();
        assert!(
            matches!(verdict, DecisionError::Malformed(_)),
            "{verdict:?}"
        );
    }

    #[test]
    fn every_reason_round_trips_through_its_name() {
        for reason in RejectReason::ALL {
            assert_eq!(RejectReason::parse(reason.as_str()), Some(reason));
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                serde_json::json!(reason.as_str())
            );
        }
    }
}
