//! llama.cpp's own batched generation throughput on this machine, as
//! `scripts/bench-engine` measured it, so that a run can state how much of
//! it the whole pipeline delivered.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file `scripts/bench-engine` writes beside the model.
pub const REFERENCE_FILE: &str = "reference-throughput.json";

#[derive(Debug, Deserialize)]
struct ReferenceFile {
    model: String,
    cpu: String,
    threads: u32,
    measured_at: String,
    llama_batched_bench: Vec<ReferenceLine>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
struct ReferenceLine {
    parallel: u32,
    gen_tok_s: f64,
}

/// The reference figure a run is compared with.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// Sequences decoded together (the slot count it was measured at).
    pub parallel: u32,
    /// Aggregate generated tokens/s.
    pub gen_tok_s: f64,
    pub measured_at: String,
}

pub fn reference_path(model: &Path) -> PathBuf {
    model
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(REFERENCE_FILE)
}

/// This CPU's model name, as the reference file records it.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_default()
}

/// The reference for `model` at `slots` sequences and `threads` threads on
/// this CPU: the measured line with the same sequence count, else the
/// nearest one. `None` when nothing was measured for this model, machine
/// and thread count (a figure from another machine would mislead).
pub fn reference_for(model: &Path, slots: u32, threads: u32) -> Option<Reference> {
    let text = std::fs::read_to_string(reference_path(model)).ok()?;
    let file: ReferenceFile = serde_json::from_str(&text).ok()?;
    let name = model.file_name()?.to_string_lossy();
    if file.model != name || file.cpu != cpu_name() || file.threads != threads {
        return None;
    }
    pick(&file.llama_batched_bench, slots).map(|line| Reference {
        parallel: line.parallel,
        gen_tok_s: line.gen_tok_s,
        measured_at: file.measured_at,
    })
}

fn pick(lines: &[ReferenceLine], slots: u32) -> Option<ReferenceLine> {
    let distance = |l: &ReferenceLine| {
        (f64::from(l.parallel.max(1)) / f64::from(slots.max(1)))
            .ln()
            .abs()
    };
    lines
        .iter()
        .filter(|l| l.gen_tok_s > 0.0)
        .min_by(|a, b| distance(a).total_cmp(&distance(b)))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_slot_count_else_the_nearest_is_picked() {
        let lines: Vec<ReferenceLine> = [(1, 13.9), (4, 15.9), (16, 21.4)]
            .into_iter()
            .map(|(parallel, gen_tok_s)| ReferenceLine {
                parallel,
                gen_tok_s,
            })
            .collect();
        assert_eq!(pick(&lines, 4).unwrap().parallel, 4);
        assert_eq!(
            pick(&lines, 8).unwrap().parallel,
            4,
            "8 is as near 4 as 16; the first wins"
        );
        assert_eq!(pick(&lines, 12).unwrap().parallel, 16);
        assert!(pick(&[], 8).is_none());
    }

    #[test]
    fn a_reference_from_another_machine_or_model_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("qwen.gguf");
        let write = |cpu: &str, threads: u32| {
            let file = serde_json::json!({
                "model": "qwen.gguf", "cpu": cpu, "threads": threads,
                "measured_at": "2026-12-05T12:00:00Z",
                "llama_batched_bench": [{"parallel": 8, "gen_tok_s": 20.0, "pp_tok_s": 30.0}],
            });
            std::fs::write(reference_path(&model), file.to_string()).unwrap();
        };
        assert!(reference_for(&model, 8, 2).is_none(), "no file");
        write(&cpu_name(), 2);
        let found = reference_for(&model, 8, 2).unwrap();
        assert_eq!((found.parallel, found.gen_tok_s), (8, 20.0));
        assert!(reference_for(&model, 8, 4).is_none(), "other thread count");
        assert!(reference_for(&dir.path().join("other.gguf"), 8, 2).is_none());
        write("Some Other CPU", 2);
        assert!(reference_for(&model, 8, 2).is_none(), "other machine");
    }
}
