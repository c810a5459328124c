//! Traces: a node's `tracing` spans exported over OTLP (HTTP/protobuf)
//! when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) names a collector, and the W3C
//! trace context (`traceparent`) that carries one unit's trace from the
//! coordinator that leased it to the worker that ran it and back.
//!
//! Exports go through a blocking ureq client on the SDK's own batch
//! thread: the exporter's bundled async clients need a Tokio reactor on
//! that thread and drop every span without one.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::TelemetryError;

/// The variables that turn trace export on, as every OpenTelemetry SDK
/// reads them.
const ENDPOINTS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// How long one export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// A node's trace export; spans still buffered are sent when it is shut
/// down (or dropped).
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
    /// Where spans go, for the node's start-up line.
    pub endpoint: String,
}

impl Traces {
    /// Trace export for a node named `service` (`OTEL_SERVICE_NAME`
    /// overrides it), or `None` when no OTLP endpoint is configured.
    pub fn from_env(service: &str) -> Result<Option<Self>, TelemetryError> {
        let Some(endpoint) = ENDPOINTS
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        else {
            return Ok(None);
        };
        if !endpoint.starts_with("http://") {
            return Err(TelemetryError::Traces(format!(
                "OTLP endpoint {endpoint:?} is not http://: Seedling exports traces as OTLP over plain HTTP (port 4318 on most collectors; put TLS behind a local collector)"
            )));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(BlockingHttp::new())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| TelemetryError::Traces(format!("OTLP exporter for {endpoint}: {e}")))?;
        let mut resource = Resource::builder();
        if service_name().is_none() {
            resource = resource.with_service_name(service.to_string());
        }
        let provider = SdkTracerProvider::builder()
            .with_resource(resource.build())
            .with_batch_exporter(exporter)
            .build();
        Ok(Some(Self { provider, endpoint }))
    }

    /// The layer that turns this node's `seedling*` spans at info level
    /// and above into OpenTelemetry spans, whatever `SEEDLING_LOG` prints.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        let filter = tracing_subscriber::filter::Targets::new()
            .with_target("seedling", tracing::Level::INFO);
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("seedling"))
            .with_filter(filter)
    }

    /// Sends what is buffered and stops exporting.
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            eprintln!("seedling: traces not all sent to the OTLP collector: {err}");
        }
    }
}

/// The service name the operator set, if any.
pub fn service_name() -> Option<String> {
    std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
}

/// The W3C `traceparent` of `span`, for the node the work goes to next;
/// empty when spans are not exported (or `span` is disabled).
pub fn trace_parent(span: &tracing::Span) -> String {
    // Without export no layer records the span: nothing to carry, and no
    // allocation on the coordinator's path per unit.
    if span.is_disabled() {
        return String::new();
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent").unwrap_or_default()
}

/// Makes `span` a child of the remote span named by `trace_parent` (as
/// [`trace_parent`] wrote it); an empty or unreadable one leaves `span` a
/// root. Call it before `span` is first entered.
pub fn follow(span: &tracing::Span, trace_parent: &str) {
    if trace_parent.is_empty() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_string(), trace_parent.to_string())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    // Only fails when spans are not exported, where there is nothing to link.
    let _ = span.set_parent(parent);
}

/// Adds a link from `span` to the remote span named by `trace_parent`
/// (work that span continues without being its child).
pub fn link(span: &tracing::Span, trace_parent: &str) {
    use opentelemetry::trace::TraceContextExt as _;
    if trace_parent.is_empty() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_string(), trace_parent.to_string())]);
    let remote = TraceContextPropagator::new().extract(&carrier);
    let context = remote.span().span_context().clone();
    if context.is_valid() {
        span.add_link(context);
    }
}

/// OTLP/HTTP through ureq, blocking the SDK's export thread (its own).
#[derive(Debug)]
struct BlockingHttp(ureq::Agent);

impl BlockingHttp {
    fn new() -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(EXPORT_TIMEOUT))
            .http_status_as_error(false)
            .build();
        Self(config.into())
    }
}

#[async_trait::async_trait]
impl HttpClient for BlockingHttp {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, body.to_vec());
        let response = self.0.run(request)?;
        let (parts, mut body) = response.into_parts();
        let bytes = body.read_to_vec()?;
        Ok(Response::from_parts(parts, Bytes::from(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Keeps finished spans in memory, as the OTLP exporter would send them.
    #[derive(Debug, Clone, Default)]
    struct Kept(std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Kept {
        async fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    #[test]
    fn a_span_that_follows_a_trace_parent_is_its_child_in_the_same_trace() {
        let kept = Kept::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(kept.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let (sent, parent_id) = tracing::subscriber::with_default(subscriber, || {
            let leased = tracing::info_span!("unit");
            let sent = trace_parent(&leased);
            let ran = tracing::info_span!(parent: None, "unit_run");
            follow(&ran, &sent);
            drop(ran.entered());
            let parent_id = {
                use opentelemetry::trace::TraceContextExt as _;
                leased.context().span().span_context().span_id()
            };
            (sent, parent_id)
        });
        let spans = kept.0.lock().unwrap().clone();
        let ran = spans.iter().find(|s| s.name == "unit_run").unwrap();
        let leased = spans.iter().find(|s| s.name == "unit").unwrap();
        assert!(sent.starts_with("00-"), "{sent}");
        assert_eq!(ran.span_context.trace_id(), leased.span_context.trace_id());
        assert_eq!(ran.parent_span_id, parent_id);
    }

    #[test]
    fn without_export_there_is_no_trace_parent_and_following_one_is_harmless() {
        let span = tracing::info_span!("unit");
        assert_eq!(trace_parent(&span), "");
        follow(
            &span,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        follow(&span, "not a traceparent");
        link(&span, "garbage");
    }
}
