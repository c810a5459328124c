//! Which strata get the next attempts: a pure function of every stratum's
//! quota, accepted count, attempts and acceptance rate. A stratum that
//! accepts 20% of its attempts needs about five attempts per missing record,
//! one at 80% about 1.25, so free slots go where the expected shortfall in
//! attempts is largest. Each stratum has an attempt budget; one that spends
//! it falls short, and the summary says so.

/// Where one stratum stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StratumProgress {
    pub quota: u64,
    pub accepted: u64,
    /// Attempts finished (accepted or not).
    pub attempts: u64,
    pub in_flight: u64,
    /// Human review paused it: no new attempts, and it may end short.
    pub paused: bool,
}

impl StratumProgress {
    pub fn missing(&self) -> u64 {
        self.quota.saturating_sub(self.accepted)
    }

    /// Acceptance rate, starting from `prior` (the plan's overall rate)
    /// worth two attempts, so a new stratum is neither starved nor flooded.
    pub fn expected_yield(&self, prior: f64) -> f64 {
        (self.accepted as f64 + 2.0 * prior) / (self.attempts as f64 + 2.0)
    }

    /// Most attempts this stratum may use in total.
    pub fn budget(&self, attempts_per_record: f64) -> u64 {
        (self.quota as f64 * attempts_per_record).ceil() as u64 + 4
    }

    /// Attempts still needed beyond those in flight, by the expected yield.
    fn wanted(&self, attempts_per_record: f64, prior: f64) -> f64 {
        if self.missing() == 0 || self.paused {
            return 0.0;
        }
        let left = self
            .budget(attempts_per_record)
            .saturating_sub(self.attempts + self.in_flight) as f64;
        let needed = self.missing() as f64 / self.expected_yield(prior) - self.in_flight as f64;
        needed.min(left).max(0.0)
    }

    /// Spent its budget without reaching its quota.
    pub fn exhausted(&self, attempts_per_record: f64) -> bool {
        self.missing() > 0
            && (self.paused || self.attempts + self.in_flight >= self.budget(attempts_per_record))
    }
}

/// How many new attempts each stratum gets from `free` slots: one at a time
/// to the stratum wanting the most (ties: the earlier stratum), while it
/// wants at least half an attempt more. Rounding instead of always topping
/// up keeps surplus records (attempts for a stratum already full) rare.
pub fn next_attempts(
    strata: &[StratumProgress],
    free: usize,
    attempts_per_record: f64,
) -> Vec<u64> {
    let accepted: u64 = strata.iter().map(|s| s.accepted).sum();
    let attempts: u64 = strata.iter().map(|s| s.attempts).sum();
    let prior = (accepted as f64 + 1.0) / (attempts as f64 + 2.0);
    let mut wanted: Vec<f64> = strata
        .iter()
        .map(|s| s.wanted(attempts_per_record, prior))
        .collect();
    let mut given = vec![0u64; strata.len()];
    for _ in 0..free {
        let best = wanted
            .iter()
            .enumerate()
            .filter(|(_, w)| **w >= 0.5)
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)));
        let Some((idx, _)) = best else { break };
        given[idx] += 1;
        wanted[idx] -= 1.0;
    }
    given
}

/// Attempts a stratum needs before its duplicate rate steers it.
pub const STEER_AFTER_ATTEMPTS: u64 = 4;
/// Duplicate share (exact, near, too similar) at which a stratum is steered.
pub const STEER_DUPLICATE_SHARE: f64 = 0.3;
/// Highest temperature steering goes to.
pub const MAX_STEERED_TEMPERATURE: f32 = 1.3;

/// The temperature for a stratum's next attempts: the plan's, raised by 0.2
/// for every 0.3 of its attempts that came back as duplicates, so a stratum
/// whose outputs collapse onto each other samples more widely.
pub fn steered_temperature(base: f32, attempts: u64, duplicates: u64) -> f32 {
    if attempts < STEER_AFTER_ATTEMPTS {
        return base;
    }
    let share = duplicates as f64 / attempts as f64;
    let steps = (share / STEER_DUPLICATE_SHARE).floor() as f32;
    if steps <= 0.0 {
        base
    } else {
        (base + 0.2 * steps).min(MAX_STEERED_TEMPERATURE.max(base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(quota: u64, accepted: u64, attempts: u64, in_flight: u64) -> StratumProgress {
        StratumProgress {
            quota,
            accepted,
            attempts,
            in_flight,
            paused: false,
        }
    }

    #[test]
    fn table() {
        // (strata, free slots, expected attempts per stratum)
        let cases: Vec<(Vec<StratumProgress>, usize, Vec<u64>)> = vec![
            // fresh strata: two attempts per missing record at the prior 1/2
            (vec![s(2, 0, 0, 0), s(1, 0, 0, 0)], 10, vec![4, 2]),
            // full strata get nothing
            (vec![s(3, 3, 5, 0), s(1, 0, 0, 0)], 10, vec![0, 2]),
            // in-flight attempts count against the need
            (vec![s(2, 0, 0, 3), s(1, 0, 0, 0)], 10, vec![1, 2]),
            // few free slots go to the largest need first
            (vec![s(1, 0, 0, 0), s(4, 0, 0, 0)], 3, vec![0, 3]),
            // no free slots, no attempts
            (vec![s(4, 0, 0, 0)], 0, vec![0]),
            // the budget caps a hopeless stratum
            (vec![s(1, 0, 7, 0)], 10, vec![1]),
            (vec![s(1, 0, 8, 0)], 10, vec![0]),
            // a plan accepting most attempts makes one attempt per record
            (
                vec![s(10, 10, 12, 0), s(1, 0, 0, 0), s(2, 0, 0, 0)],
                10,
                vec![0, 1, 3],
            ),
        ];
        for (strata, free, expected) in cases {
            assert_eq!(
                next_attempts(&strata, free, 4.0),
                expected,
                "{strata:?} free {free}"
            );
        }
    }

    #[test]
    fn low_yield_strata_get_proportionally_more_attempts() {
        // 20% vs 80% acceptance over 50 attempts, ten records missing each
        let low = s(20, 10, 50, 0);
        let high = s(50, 40, 50, 0);
        let given = next_attempts(&[low, high], 100, 100.0);
        let ratio = given[0] as f64 / given[1] as f64;
        assert!(given[0] > given[1], "{given:?}");
        // yields (11/52) and (41/52): about 3.7x as many attempts
        assert!((3.0..4.5).contains(&ratio), "{given:?} ratio {ratio}");
    }

    #[test]
    fn steering_raises_temperature_with_the_duplicate_rate() {
        // (base, attempts, duplicates) -> temperature
        let cases = [
            (0.8, 3, 3, 0.8),   // too few attempts to judge
            (0.8, 10, 2, 0.8),  // 20% duplicates: fine
            (0.8, 10, 3, 1.0),  // 30%: one step
            (0.8, 10, 6, 1.2),  // 60%: two steps
            (0.8, 10, 10, 1.3), // capped
            (1.5, 10, 10, 1.5), // never lowered
        ];
        for (base, attempts, duplicates, expected) in cases {
            let got = steered_temperature(base, attempts, duplicates);
            assert!(
                (got - expected).abs() < 1e-6,
                "{base} {attempts} {duplicates}: {got}"
            );
        }
    }

    #[test]
    fn exhaustion_is_reported() {
        assert!(s(1, 0, 8, 0).exhausted(4.0));
        assert!(!s(1, 1, 8, 0).exhausted(4.0));
        assert!(!s(1, 0, 7, 0).exhausted(4.0));
    }
}
