//! Submitted plans on the coordinator's disk: `DATA/plans/<plan id>/` holds
//! the plan file as sent, the reference files it names and a small
//! `submission.json`. A restarted coordinator reopens every plan found here
//! (the lineage store holds their progress); a `cancelled` file marks a plan
//! the researcher stopped.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ClusterError;

/// What a submission was, beside its files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub plan_id: String,
    pub file_name: String,
    pub target: Option<u64>,
    pub submitted_at_ms: u64,
}

/// A submitted plan found on disk.
#[derive(Debug, Clone)]
pub struct Stored {
    pub submission: Submission,
    pub dir: PathBuf,
    pub plan_text: String,
    pub cancelled: bool,
}

pub const PLAN_FILE: &str = "plan.toml";
const META_FILE: &str = "submission.json";
const CANCELLED: &str = "cancelled";

/// Whether a reference path the plan uses stays inside the submission.
pub fn is_safe_relative(path: &str) -> bool {
    let path = Path::new(path);
    !path.as_os_str().is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The plans directory under a coordinator's data directory.
pub fn plans_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("plans")
}

/// Writes a submission durably (files first, the metadata last, then one
/// rename), so a crash leaves either the whole submission or none of it.
pub fn save(
    data_dir: &Path,
    submission: &Submission,
    plan_text: &str,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<PathBuf, ClusterError> {
    let dir = plans_dir(data_dir).join(&submission.plan_id);
    if dir.join(META_FILE).is_file() {
        return Ok(dir);
    }
    let staging = plans_dir(data_dir).join(format!(".incoming-{}", submission.plan_id));
    let io = |source| ClusterError::Disk {
        path: staging.clone(),
        source,
    };
    let _ = std::fs::remove_dir_all(&staging);
    write_synced(&staging.join(PLAN_FILE), plan_text.as_bytes()).map_err(io)?;
    for (name, bytes) in files {
        write_synced(&staging.join(name), bytes).map_err(io)?;
    }
    let meta = serde_json::to_vec_pretty(submission).expect("a submission serialises");
    write_synced(&staging.join(META_FILE), &meta).map_err(io)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staging, &dir).map_err(io)?;
    Ok(dir)
}

/// Marks a plan cancelled, durably.
pub fn mark_cancelled(dir: &Path) -> Result<(), ClusterError> {
    write_synced(&dir.join(CANCELLED), b"").map_err(|source| ClusterError::Disk {
        path: dir.to_path_buf(),
        source,
    })
}

/// Every complete submission under `data_dir`, oldest first.
pub fn load_all(data_dir: &Path) -> Result<Vec<Stored>, ClusterError> {
    let root = plans_dir(data_dir);
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ClusterError::Disk { path: root, source }),
    };
    let mut stored = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(meta) = std::fs::read(dir.join(META_FILE)) else {
            continue; // a submission interrupted before its rename
        };
        let submission: Submission =
            serde_json::from_slice(&meta).map_err(|e| ClusterError::Corrupt {
                path: dir.join(META_FILE),
                message: e.to_string(),
            })?;
        let plan_text =
            std::fs::read_to_string(dir.join(PLAN_FILE)).map_err(|source| ClusterError::Disk {
                path: dir.join(PLAN_FILE),
                source,
            })?;
        stored.push(Stored {
            cancelled: dir.join(CANCELLED).exists(),
            submission,
            dir,
            plan_text,
        });
    }
    stored.sort_by(|a, b| {
        (a.submission.submitted_at_ms, &a.submission.plan_id)
            .cmp(&(b.submission.submitted_at_ms, &b.submission.plan_id))
    });
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_paths_may_not_leave_the_submission() {
        for ok in ["notes.md", "refs/a.txt", "./b.md"] {
            assert!(is_safe_relative(ok), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x.md", "refs/../../x"] {
            assert!(!is_safe_relative(bad), "{bad}");
        }
    }

    #[test]
    fn submissions_survive_a_reload_and_remember_cancellation() {
        let data = tempfile::tempdir().unwrap();
        let files = BTreeMap::from([("refs/a.md".to_string(), b"text".to_vec())]);
        let submission = |id: &str, at| Submission {
            plan_id: id.into(),
            file_name: "p.toml".into(),
            target: Some(5),
            submitted_at_ms: at,
        };
        let dir = save(data.path(), &submission("plan-b", 2), "x = 1", &files).unwrap();
        save(
            data.path(),
            &submission("plan-a", 1),
            "y = 2",
            &BTreeMap::new(),
        )
        .unwrap();
        mark_cancelled(&dir).unwrap();
        // A half-written submission is not a submission.
        std::fs::create_dir_all(plans_dir(data.path()).join(".incoming-plan-c")).unwrap();
        let all = load_all(data.path()).unwrap();
        let ids: Vec<_> = all.iter().map(|s| s.submission.plan_id.as_str()).collect();
        assert_eq!(ids, ["plan-a", "plan-b"]);
        assert!(!all[0].cancelled && all[1].cancelled);
        assert_eq!(all[1].plan_text, "x = 1");
        assert_eq!(
            std::fs::read(all[1].dir.join("refs/a.md")).unwrap(),
            b"text"
        );
    }
}
