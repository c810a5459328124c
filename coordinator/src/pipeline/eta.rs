//! How long a run still needs, from the rate it has shown so far.

/// Records a run accepts before its rate is worth quoting: the first one
/// waits for the model to load and the domain analysis, so a rate from it
/// alone overstates the time left many times over.
pub const ETA_AFTER_ACCEPTED: u64 = 3;

/// Seconds until `missing` more records are accepted, at the rate of the
/// `accepted` records this run took `elapsed_s` for; `None` until it has
/// accepted [`ETA_AFTER_ACCEPTED`] or when nothing is missing.
pub fn eta_s(accepted: u64, missing: u64, elapsed_s: f64) -> Option<f64> {
    (accepted >= ETA_AFTER_ACCEPTED && missing > 0 && elapsed_s > 0.0)
        .then(|| missing as f64 * elapsed_s / accepted as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_left_follows_the_rate_once_a_few_records_are_in() {
        assert_eq!(eta_s(0, 10, 30.0), None);
        assert_eq!(eta_s(ETA_AFTER_ACCEPTED - 1, 10, 30.0), None);
        // 4 records in 60 s: 15 s each, 6 more take 90 s.
        assert_eq!(eta_s(4, 6, 60.0), Some(90.0));
        assert_eq!(eta_s(4, 0, 60.0), None, "nothing left to wait for");
        assert_eq!(eta_s(4, 6, 0.0), None);
    }
}
