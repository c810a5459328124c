//! How Seedling's nodes are watched from outside. Each node (coordinator,
//! worker) serves `/metrics` in the OpenMetrics text format that Prometheus
//! scrapes; what a scrape shows is read from the node's own state at that
//! moment ([`Scrape`]), so the figures an operator graphs are the same ones
//! `seedling cluster status` prints.
//!
//! A node may also export its `tracing` spans over OTLP ([`traces`]), with
//! the trace context that joins one unit's spans across nodes.
//!
//! **Invariant:** knows nothing of plans, workers or engines; the nodes
//! decide what to expose and this crate only encodes and serves it.

mod endpoint;
pub mod mlflow;
mod process;
mod scrape;
pub mod traces;

pub use endpoint::{BoundMetrics, MetricsEndpoint, Render, TelemetryError};
pub use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
pub use scrape::{Labels, Scrape, labels};
