//! Reading a plan file: TOML syntax and types first (toml's own errors,
//! placed by their span), then the semantic checks, each placed on the line
//! of the field it names, then the reference files it points to.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::schema::Plan;
use super::validate::{FieldPath, Problem, Segment, validate};

/// One problem, placed in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedProblem {
    /// 1-based line, when the field (or its nearest parent) is in the file.
    pub line: Option<usize>,
    /// The field path (`subdomains[2].weight`); empty for syntax errors.
    pub field: String,
    pub message: String,
}

/// Why a plan cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read plan {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{plan}: reference {reference}: cannot read {}", path.display())]
    Reference {
        plan: String,
        reference: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{plan}: reference {reference}: {why}")]
    ReferenceUnusable {
        plan: String,
        reference: String,
        why: String,
    },
    #[error("{}", Listing(file, problems))]
    Invalid {
        file: String,
        problems: Vec<LocatedProblem>,
    },
}

struct Listing<'a>(&'a String, &'a Vec<LocatedProblem>);

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, problem) in self.1.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.0)?;
            if let Some(line) = problem.line {
                write!(f, ":{line}")?;
            }
            write!(f, ": ")?;
            if !problem.field.is_empty() {
                write!(f, "{} ", problem.field)?;
            }
            write!(f, "{}", problem.message)?;
        }
        Ok(())
    }
}

/// Reads and checks a plan file; reference paths are relative to it.
pub fn load_plan(path: &Path) -> Result<Plan, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlanError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_plan(&path.display().to_string(), &text, path.parent())
}

/// Largest reference document a plan may name (2 MiB, a long manual: some
/// 2,300 chunks, each analysed by the model before generation starts).
pub const MAX_REFERENCE_BYTES: u64 = 2 * 1024 * 1024;

/// Whether `path` is a document a plan can use as a reference: a regular
/// file, not larger than [`MAX_REFERENCE_BYTES`]; the message says why not.
fn check_reference(path: &Path) -> Result<(), String> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "file {shown} not found (paths are relative to the plan file)"
        )),
        Err(err) => Err(format!("cannot read {shown}: {err}")),
        Ok(meta) if meta.is_dir() => Err(format!(
            "{shown} is a directory; name one document file per reference"
        )),
        Ok(meta) if !meta.is_file() => Err(format!(
            "{shown} is not a regular file (a device, pipe or socket); name a document file"
        )),
        Ok(meta) if meta.len() > MAX_REFERENCE_BYTES => Err(format!(
            "{shown} is {} bytes; a reference document may be at most {MAX_REFERENCE_BYTES} bytes: \
             split it into several references",
            meta.len()
        )),
        Ok(_) => Ok(()),
    }
}

/// The reference files plan text names, read relative to the plan file and
/// keyed by the path the plan uses: what travels with a plan submitted to a
/// coordinator. Only the paths are read here; the coordinator validates the
/// plan (text that does not parse names no files).
pub fn reference_files(
    plan: &Path,
    text: &str,
) -> Result<std::collections::HashMap<String, Vec<u8>>, PlanError> {
    let Ok(value) = text.parse::<toml::Table>() else {
        return Ok(Default::default());
    };
    let base = plan.parent().unwrap_or(Path::new("."));
    let references = value.get("references").and_then(|r| r.as_array());
    references
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("path")?.as_str())
        .map(|reference| {
            let path = base.join(reference);
            // Checked before reading: `/dev/zero` would never end.
            if let Err(why) = check_reference(&path) {
                return Err(PlanError::ReferenceUnusable {
                    plan: plan.display().to_string(),
                    reference: reference.to_string(),
                    why,
                });
            }
            std::fs::read(&path)
                .map(|bytes| (reference.to_string(), bytes))
                .map_err(|source| PlanError::Reference {
                    plan: plan.display().to_string(),
                    reference: reference.to_string(),
                    path,
                    source,
                })
        })
        .collect()
}

/// Parses and checks plan text. `file` names it in errors; with `base_dir`
/// the reference files must exist under it.
pub fn parse_plan(file: &str, text: &str, base_dir: Option<&Path>) -> Result<Plan, PlanError> {
    let invalid = |problems| PlanError::Invalid {
        file: file.to_string(),
        problems,
    };
    let plan: Plan = toml::from_str(text).map_err(|err| {
        let line = err.span().map(|span| line_of(text, span.start));
        invalid(vec![LocatedProblem {
            line,
            field: String::new(),
            message: err.message().trim().to_string(),
        }])
    })?;
    let mut problems = validate(&plan);
    if let Some(base_dir) = base_dir {
        for (idx, reference) in plan.references.iter().enumerate() {
            if let Err(message) = check_reference(&base_dir.join(&reference.path)) {
                problems.push(Problem {
                    path: FieldPath(vec![
                        Segment::Key("references"),
                        Segment::Index(idx),
                        Segment::Key("path"),
                    ]),
                    message,
                });
            }
        }
    }
    if problems.is_empty() {
        return Ok(plan);
    }
    let document = DeTable::parse(text).ok();
    let located = problems
        .into_iter()
        .map(|problem| LocatedProblem {
            line: document
                .as_ref()
                .and_then(|doc| locate(doc, &problem.path))
                .map(|span| line_of(text, span.start)),
            field: problem.path.to_string(),
            message: problem.message,
        })
        .collect();
    Err(invalid(located))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The span of the deepest part of `path` present in the document.
fn locate(document: &Spanned<DeTable<'_>>, path: &FieldPath) -> Option<Range<usize>> {
    let mut table = Some(document.get_ref());
    let mut array: Option<&[Spanned<DeValue<'_>>]> = None;
    let mut found = None;
    for segment in &path.0 {
        let value = match segment {
            Segment::Key(key) => find_key(table?, key),
            Segment::Name(name) => find_key(table?, name),
            Segment::Index(idx) => array.and_then(|items| items.get(*idx)),
        };
        let Some(value) = value else {
            break;
        };
        found = Some(value.span());
        table = value.get_ref().as_table();
        array = value.get_ref().as_array().map(|items| &items[..]);
    }
    found
}

fn find_key<'d, 'i>(table: &'d DeTable<'i>, key: &str) -> Option<&'d Spanned<DeValue<'i>>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}
