//! The `/metrics` HTTP endpoint a node serves for Prometheus.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// What a scrape answers: called once per request, it reads the node's
/// state (asking its actors where it must) and returns the exposition, or
/// why the node cannot say (answered as 503).
pub type Render =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "cannot serve metrics on {address} ({setting}): {source}; choose another address, or \"off\""
    )]
    Bind {
        address: SocketAddr,
        setting: String,
        source: std::io::Error,
    },
    #[error("traces: {0}")]
    Traces(String),
}

/// A running endpoint; it stops when dropped.
#[derive(Debug)]
pub struct MetricsEndpoint {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// The endpoint's port, bound before the node starts anything else (so
/// that a taken port fails the start cleanly), not serving yet.
#[derive(Debug)]
pub struct BoundMetrics {
    address: SocketAddr,
    listener: tokio::net::TcpListener,
}

impl MetricsEndpoint {
    /// Binds `address`; errors name `setting`, the config key that chose it.
    pub async fn bind(address: SocketAddr, setting: &str) -> Result<BoundMetrics, TelemetryError> {
        let bound = tokio::net::TcpListener::bind(address)
            .await
            .and_then(|listener| {
                Ok(BoundMetrics {
                    address: listener.local_addr()?,
                    listener,
                })
            });
        bound.map_err(|source| TelemetryError::Bind {
            address,
            setting: setting.to_string(),
            source,
        })
    }

    /// Where it listens (the bound port when asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl BoundMetrics {
    /// Serves `/metrics` on the current runtime.
    pub fn serve(self, render: Render) -> MetricsEndpoint {
        let Self { address, listener } = self;
        let app = Router::new()
            .route("/metrics", get(scrape))
            .with_state(render);
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::warn!(%err, "metrics endpoint stopped");
            }
        });
        tracing::info!(%address, "metrics at http://{address}/metrics");
        MetricsEndpoint { address, task }
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn scrape(State(render): State<Render>) -> Response {
    match render().await {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_metrics(address: SocketAddr) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn each_scrape_renders_anew_and_a_taken_port_is_named() {
        let scrapes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let render: Render = {
            let scrapes = Arc::clone(&scrapes);
            Arc::new(move || {
                let n = scrapes.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                Box::pin(async move {
                    if n == 3 {
                        return Err("the node is stopping".to_string());
                    }
                    let mut scrape = crate::Scrape::new();
                    scrape.gauge("seedling_scrapes", "Scrapes so far", n as f64);
                    Ok(scrape.encode())
                })
            })
        };
        let endpoint = MetricsEndpoint::bind("127.0.0.1:0".parse().unwrap(), "test.metrics_listen")
            .await
            .unwrap()
            .serve(render);
        let first = get_metrics(endpoint.address()).await;
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        assert!(first.contains("openmetrics-text"), "{first}");
        assert!(first.contains("seedling_scrapes 1.0"), "{first}");
        assert!(
            get_metrics(endpoint.address())
                .await
                .contains("seedling_scrapes 2.0")
        );
        let unavailable = get_metrics(endpoint.address()).await;
        assert!(unavailable.starts_with("HTTP/1.1 503"), "{unavailable}");
        assert!(
            unavailable.contains("the node is stopping"),
            "{unavailable}"
        );

        let taken = MetricsEndpoint::bind(endpoint.address(), "worker.metrics_listen")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            taken.contains("worker.metrics_listen")
                && taken.contains(&endpoint.address().to_string()),
            "{taken}"
        );
    }
}
