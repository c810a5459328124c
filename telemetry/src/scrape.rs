//! One scrape's exposition, built fresh from a snapshot of a node's state.
//!
//! Why a fresh registry per scrape rather than counters bumped where things
//! happen: the nodes already keep exact running totals (the engine's
//! counters, the coordinator's plan progress, which survives a restart in the
//! store); reading them at scrape time exposes those very numbers instead of
//! a second bookkeeping that could drift from them. Histograms, which no
//! total can rebuild, are kept by the node and added here by reference.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// A series' labels. Keep their values bounded (plan, stratum, worker,
/// reason), never one per record.
pub type Labels = Vec<(&'static str, String)>;

/// Labels from (name, value) pairs.
pub fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|&(k, v)| (k, v.to_string())).collect()
}

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;

/// The metrics of one scrape. Counter names are given without `_total`:
/// the OpenMetrics encoding adds it.
#[derive(Debug, Default)]
pub struct Scrape {
    registry: Registry,
}

impl Scrape {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        let gauge = FloatGauge::default();
        gauge.set(value);
        self.registry.register(name, help, gauge);
    }

    pub fn gauges(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        let family = Family::<Labels, FloatGauge>::default();
        for (labels, value) in series {
            family.get_or_create(&labels).set(value);
        }
        self.registry.register(name, help, family);
    }

    pub fn counter(&mut self, name: &str, help: &str, value: f64) {
        let counter = FloatCounter::default();
        counter.inc_by(value);
        self.registry.register(name, help, counter);
    }

    /// A labelled counter; series with the same labels add up.
    pub fn counters(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        let family = Family::<Labels, FloatCounter>::default();
        for (labels, value) in series {
            family.get_or_create(&labels).inc_by(value);
        }
        self.registry.register(name, help, family);
    }

    /// A histogram the node keeps; the scrape shows its current buckets.
    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.registry.register(name, help, histogram.clone());
    }

    /// The process's own figures under their conventional names
    /// (`process_resident_memory_bytes`, `process_cpu_seconds_total`).
    pub fn process(&mut self) {
        let now = crate::process::Process::now();
        if let Some(rss) = now.resident_bytes {
            self.gauge(
                "process_resident_memory_bytes",
                "Resident memory of this process",
                rss as f64,
            );
        }
        self.counter(
            "process_cpu_seconds",
            "CPU time this process has used, all threads",
            now.cpu_seconds,
        );
    }

    /// The OpenMetrics text, `# EOF` included.
    pub fn encode(self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_encoded_with_their_labels_and_counters_get_total() {
        let mut scrape = Scrape::new();
        scrape.gauge("seedling_plans_running", "Plans running", 2.0);
        scrape.counters(
            "seedling_records_rejected",
            "Rejected",
            [
                (vec![("reason", "too_short".to_string())], 3.0),
                (vec![("reason", "too_short".to_string())], 1.0),
                (vec![("reason", "exact_duplicate".to_string())], 5.0),
            ],
        );
        let histogram = Histogram::new([0.01, 0.1]);
        histogram.observe(0.05);
        scrape.histogram("seedling_lineage_write_seconds", "Writes", &histogram);
        let text = scrape.encode();
        assert!(text.contains("seedling_plans_running 2.0"), "{text}");
        assert!(
            text.contains("seedling_records_rejected_total{reason=\"too_short\"} 4.0"),
            "{text}"
        );
        assert!(
            text.contains("seedling_records_rejected_total{reason=\"exact_duplicate\"} 5.0"),
            "{text}"
        );
        assert!(
            text.contains("seedling_lineage_write_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("seedling_lineage_write_seconds_bucket{le=\"0.1\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_process_reports_its_memory_and_cpu() {
        let mut scrape = Scrape::new();
        scrape.process();
        let text = scrape.encode();
        let rss: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .expect("an RSS line")
            .parse()
            .unwrap();
        assert!(rss > 1_000_000.0, "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
    }
}
