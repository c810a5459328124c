//! Percentile-bootstrap intervals, computed in Rust where the sidecar is
//! not involved (the proxy, attribution by probe source).

use super::seeded::SplitMix;
use super::sidecar::Estimate;

/// The mean of `values` with a 95% percentile-bootstrap interval.
pub fn bootstrap(
    values: &[f64],
    rounds: usize,
    seed: u64,
    chance: Option<f64>,
) -> Option<Estimate> {
    if values.is_empty() {
        return None;
    }
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    let mut rng = SplitMix(seed);
    let mut means: Vec<f64> = (0..rounds.max(1))
        .map(|_| (0..n).map(|_| values[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((means.len() - 1) as f64 * q).round() as usize];
    Some(Estimate {
        mean,
        lo: at(0.025),
        hi: at(0.975),
        n,
        chance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_intervals_hold_the_mean_and_repeat_for_a_seed() {
        let values: Vec<f64> = (0..40)
            .map(|i| if i % 4 == 0 { 0.0 } else { 1.0 })
            .collect();
        let e = bootstrap(&values, 2000, 7, Some(0.25)).unwrap();
        assert_eq!(e.mean, 0.75);
        assert!(e.lo < 0.75 && e.hi > 0.75, "{e:?}");
        assert!(e.lo > 0.5 && e.hi <= 0.9, "{e:?}");
        assert_eq!(Some(e.clone()), bootstrap(&values, 2000, 7, Some(0.25)));
        let constant = bootstrap(&[2.0; 5], 100, 1, None).unwrap();
        assert_eq!((constant.lo, constant.hi), (2.0, 2.0));
        assert_eq!(bootstrap(&[], 100, 1, None), None);
    }
}
