//! The dataset record exactly as design section 3.1 writes it: field names,
//! nesting and order are the contract with every downstream tool.

use serde::{Deserialize, Serialize};

/// One instruction/response pair with its metadata and trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub id: String,
    pub created_at: String,
    pub domain: String,
    pub input: String,
    pub response: String,
    pub metadata: RecordMetadata,
    pub trace: Trace,
    /// Where the response's figures come from (the support check); empty
    /// when it states none or its task type is not grounded. Not part of
    /// the record as written: an export keeps citations beside it, in
    /// `citations/SPLIT.jsonl`. A column some splits have and others lack
    /// (or hold only empty lists in) makes loaders that read the splits
    /// together, such as Hugging Face `datasets`, refuse the files. Still
    /// read, so exports written before it moved load as they are.
    #[serde(default, skip_serializing)]
    pub citations: Vec<RecordCitation>,
}

/// A line of `citations/SPLIT.jsonl`: a record's id and its citations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordCitations {
    pub id: String,
    pub citations: Vec<RecordCitation>,
}

/// One span of a source a record rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordCitation {
    /// The lineage node of the source: a reference chunk, a term, a rule,
    /// an expert example, or a translation's original.
    pub node: String,
    /// Character offsets of the span in that node's text.
    pub start: usize,
    pub end: usize,
    pub quote: String,
    /// The response's figures the span states.
    pub facts: Vec<String>,
}

/// How a record was made and how good it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordMetadata {
    pub generation_method: String,
    pub generator_version: String,
    pub quality_score: f64,
    pub review_status: String,
}

/// Where a record came from; reconstructed from the lineage DAG on export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trace {
    pub parent_id: Option<String>,
    pub processing_steps: Vec<ProcessingStep>,
}

impl Trace {
    /// The names of the steps, oldest first.
    pub fn step_names(&self) -> Vec<&str> {
        self.processing_steps
            .iter()
            .map(|s| s.name.as_str())
            .collect()
    }
}

/// One step that touched a record, with the parameters it ran with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessingStep {
    pub name: String,
    pub timestamp: String,
    pub params: serde_json::Map<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of design section 3.1, verbatim.
    const DESIGN_EXAMPLE: &str = r#"{
  "id": "unique_identifier",
  "created_at": "timestamp",
  "domain": "specific_industry_domain",
  "input": "user query or scenario description",
  "response": "model-generated response",
  "metadata": {
    "generation_method": "method_name",
    "generator_version": "version",
    "quality_score": 0.95,
    "review_status": "approved"
  },
  "trace": {
    "parent_id": "id_of_source_data",
    "processing_steps": [
      {"name": "step_name", "timestamp": "time", "params": {}}
    ]
  }
}"#;

    #[test]
    fn design_example_round_trips_field_for_field() {
        let record: Record = serde_json::from_str(DESIGN_EXAMPLE).unwrap();
        assert_eq!(record.metadata.quality_score, 0.95);
        assert_eq!(record.trace.processing_steps[0].name, "step_name");
        let original: serde_json::Value = serde_json::from_str(DESIGN_EXAMPLE).unwrap();
        let reserialised = serde_json::to_value(&record).unwrap();
        assert_eq!(reserialised, original);
        // key order as in the document, too
        let text = serde_json::to_string(&record).unwrap();
        let keys = [
            "\"id\"",
            "\"created_at\"",
            "\"domain\"",
            "\"input\"",
            "\"response\"",
            "\"metadata\"",
            "\"trace\"",
        ];
        let positions: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn citations_are_read_from_older_exports_but_never_written() {
        let old = DESIGN_EXAMPLE.replacen(
            "\"trace\"",
            "\"citations\": [{\"node\": \"n-1\", \"start\": 0, \"end\": 4, \"quote\": \"text\", \"facts\": []}], \"trace\"",
            1,
        );
        let record: Record = serde_json::from_str(&old).unwrap();
        assert_eq!(record.citations.len(), 1);
        let written = serde_json::to_string(&record).unwrap();
        assert!(!written.contains("citations"), "{written}");
    }

    #[test]
    fn unknown_or_missing_fields_are_rejected() {
        let extra = DESIGN_EXAMPLE.replacen("\"domain\"", "\"domian\": \"x\", \"domain\"", 1);
        assert!(serde_json::from_str::<Record>(&extra).is_err());
        let missing = DESIGN_EXAMPLE.replacen("\"review_status\": \"approved\"", "\"x\": 1", 1);
        assert!(serde_json::from_str::<Record>(&missing).is_err());
    }

    #[test]
    fn root_record_has_null_parent() {
        let root = DESIGN_EXAMPLE.replacen("\"id_of_source_data\"", "null", 1);
        let record: Record = serde_json::from_str(&root).unwrap();
        assert_eq!(record.trace.parent_id, None);
        assert!(
            serde_json::to_string(&record)
                .unwrap()
                .contains("\"parent_id\":null")
        );
    }
}
