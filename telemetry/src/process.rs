//! The process's own resource figures, read from the OS at scrape time.

/// A point-in-time reading.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Process {
    /// `None` where `/proc` is not there to ask.
    pub resident_bytes: Option<u64>,
    pub cpu_seconds: f64,
}

impl Process {
    pub fn now() -> Self {
        Self {
            resident_bytes: resident_bytes(),
            cpu_seconds: seedling_common::time::process_cpu().as_secs_f64(),
        }
    }
}

/// `VmRSS` of `/proc/self/status` (in kB there).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
