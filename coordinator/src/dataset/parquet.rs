//! The records as one Parquet file per split (for pandas, polars, Hugging
//! Face `datasets`): flat columns, the trace as a JSON string.

use std::path::Path;
use std::sync::Arc;

use parquet::data_type::{ByteArray, ByteArrayType, DoubleType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use seedling_common::record::Record;

const SCHEMA: &str = "message record {
  REQUIRED BYTE_ARRAY id (UTF8);
  REQUIRED BYTE_ARRAY created_at (UTF8);
  REQUIRED BYTE_ARRAY domain (UTF8);
  REQUIRED BYTE_ARRAY input (UTF8);
  REQUIRED BYTE_ARRAY response (UTF8);
  REQUIRED BYTE_ARRAY generation_method (UTF8);
  REQUIRED BYTE_ARRAY generator_version (UTF8);
  REQUIRED DOUBLE quality_score;
  REQUIRED BYTE_ARRAY review_status (UTF8);
  OPTIONAL BYTE_ARRAY parent_id (UTF8);
  REQUIRED BYTE_ARRAY trace (UTF8);
}";

/// Writes `records` to `path` as one row group.
pub fn write_parquet(path: &Path, records: &[Record]) -> Result<(), String> {
    let schema = Arc::new(parse_message_type(SCHEMA).map_err(|e| e.to_string())?);
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let properties = Arc::new(WriterProperties::builder().build());
    let mut writer =
        SerializedFileWriter::new(file, schema, properties).map_err(|e| e.to_string())?;
    let text = |f: &dyn Fn(&Record) -> String| -> Vec<ByteArray> {
        records
            .iter()
            .map(|r| ByteArray::from(f(r).into_bytes()))
            .collect()
    };
    let columns: Vec<Vec<ByteArray>> = vec![
        text(&|r| r.id.clone()),
        text(&|r| r.created_at.clone()),
        text(&|r| r.domain.clone()),
        text(&|r| r.input.clone()),
        text(&|r| r.response.clone()),
        text(&|r| r.metadata.generation_method.clone()),
        text(&|r| r.metadata.generator_version.clone()),
    ];
    let scores: Vec<f64> = records.iter().map(|r| r.metadata.quality_score).collect();
    let review = text(&|r| r.metadata.review_status.clone());
    let parents: Vec<ByteArray> = records
        .iter()
        .filter_map(|r| r.trace.parent_id.clone())
        .map(|p| ByteArray::from(p.into_bytes()))
        .collect();
    let parent_levels: Vec<i16> = records
        .iter()
        .map(|r| i16::from(r.trace.parent_id.is_some()))
        .collect();
    let traces = text(&|r| serde_json::to_string(&r.trace).unwrap_or_default());

    let mut row_group = writer.next_row_group().map_err(|e| e.to_string())?;
    let mut index = 0;
    while let Some(mut column) = row_group.next_column().map_err(|e| e.to_string())? {
        let written = match index {
            0..=6 => column
                .typed::<ByteArrayType>()
                .write_batch(&columns[index], None, None),
            7 => column
                .typed::<DoubleType>()
                .write_batch(&scores, None, None),
            8 => column
                .typed::<ByteArrayType>()
                .write_batch(&review, None, None),
            9 => column
                .typed::<ByteArrayType>()
                .write_batch(&parents, Some(&parent_levels), None),
            _ => column
                .typed::<ByteArrayType>()
                .write_batch(&traces, None, None),
        };
        written.map_err(|e| e.to_string())?;
        column.close().map_err(|e| e.to_string())?;
        index += 1;
    }
    row_group.close().map_err(|e| e.to_string())?;
    writer.close().map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use seedling_common::record::{RecordMetadata, Trace};

    #[test]
    fn records_round_trip_through_parquet() {
        let record = |id: &str, parent: Option<&str>| Record {
            id: id.into(),
            created_at: "2026-11-24T00:00:00.000Z".into(),
            domain: "banking".into(),
            input: "Why was my card declined?".into(),
            response: "A hold lowered your available balance.".into(),
            metadata: RecordMetadata {
                generation_method: "template".into(),
                generator_version: "seedling 0.1.0".into(),
                quality_score: 0.8,
                review_status: "auto_approved".into(),
            },
            trace: Trace {
                parent_id: parent.map(str::to_string),
                processing_steps: vec![],
            },
            citations: vec![],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.parquet");
        write_parquet(&path, &[record("a", Some("p")), record("b", None)]).unwrap();
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 2);
        let rows: Vec<String> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|row| row.unwrap().to_string())
            .collect();
        assert!(
            rows[0].contains("id: \"a\"") && rows[0].contains("parent_id: \"p\""),
            "{}",
            rows[0]
        );
        assert!(rows[1].contains("parent_id: null"), "{}", rows[1]);
        assert!(rows[1].contains("quality_score: 0.8"), "{}", rows[1]);
    }
}
