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
        let cpu = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        Self {
            resident_bytes: resident_bytes(),
            cpu_seconds: cpu.tv_sec as f64 + cpu.tv_nsec as f64 / 1e9,
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
