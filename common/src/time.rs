//! Timestamps as the dataset writes them (RFC 3339, UTC), without a calendar
//! crate, and the CPU clocks the coordinator's load figures are read from.

use std::time::Duration;

use rustix::time::{ClockId, clock_gettime};

/// CPU time the calling thread has used. A stage's CPU per result, unlike
/// its wall time, does not grow when other threads take its core, so it is
/// what says how fast the stage would go on a core of its own.
pub fn thread_cpu() -> Duration {
    cpu(ClockId::ThreadCPUTime)
}

/// CPU time the whole process has used, every thread together.
pub fn process_cpu() -> Duration {
    cpu(ClockId::ProcessCPUTime)
}

fn cpu(clock: ClockId) -> Duration {
    let t = clock_gettime(clock);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Formats milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_from_unix_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let millis = unix_ms % 1000;
    let days = (secs / 86_400) as i64;
    let second_of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3600,
        (second_of_day % 3600) / 60,
        second_of_day % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_cpu_clock_counts_work_and_not_sleep() {
        let start = thread_cpu();
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu() - start;
        // Work until the clock says 20 ms of it were counted. Wall time is
        // no yardstick: on a busy machine 30 ms of wall time may hold 5 ms
        // of this thread's CPU. A clock that ignores work never gets there.
        let mut x = 0u64;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut worked = Duration::ZERO;
        while worked < Duration::from_millis(20) && std::time::Instant::now() < deadline {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            worked = thread_cpu() - start - slept;
        }
        assert!(slept < Duration::from_millis(10), "sleeping used {slept:?}");
        assert!(
            worked >= Duration::from_millis(20),
            "20 s of busy work counted only {worked:?} of CPU time"
        );
        assert!(process_cpu() >= worked);
    }

    #[test]
    fn known_instants() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_795_000_000_123, "2026-11-18T11:06:40.123Z"),
            (4_102_444_799_999, "2099-12-31T23:59:59.999Z"),
        ];
        for (ms, want) in cases {
            assert_eq!(rfc3339_from_unix_ms(ms), want, "{ms}");
        }
    }
}
