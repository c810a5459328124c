//! An OTLP/HTTP trace receiver for tests: what a collector would get from
//! the nodes (`OTEL_EXPORTER_OTLP_ENDPOINT` pointed at it), decoded with
//! the OpenTelemetry project's own protobuf types. Plain HTTP/1.1 on a
//! thread: each request's body is read by its Content-Length and answered
//! with an empty success.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;

/// One span as the receiver got it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The resource's `service.name`.
    pub service: String,
    pub name: String,
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    /// Empty for a root span.
    pub parent_span_id: Vec<u8>,
    /// String, integer and boolean attributes, as text.
    pub attributes: BTreeMap<String, String>,
    /// The span ids this span links to.
    pub links: Vec<Vec<u8>>,
}

/// A receiver on a loopback port; it stops with the test process.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// `http://127.0.0.1:PORT`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

impl Receiver {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&spans);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = Arc::clone(&kept);
                std::thread::spawn(move || serve(stream, &kept));
            }
        });
        Self { endpoint, spans }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }
}

/// Answers requests on one connection until the client closes it.
fn serve(stream: TcpStream, kept: &Mutex<Vec<ReceivedSpan>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = match ExportTraceServiceRequest::decode(body.as_slice()) {
            Ok(request) if request_line.contains("/v1/traces") => {
                kept.lock().unwrap().extend(flatten(request));
                "200 OK"
            }
            _ => "400 Bad Request",
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
        );
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn text(value: Option<Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s,
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .into_iter()
            .flat_map(|r| r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.and_then(|v| v.value)))
            .unwrap_or_default();
        for span in resource_spans
            .scope_spans
            .into_iter()
            .flat_map(|scope| scope.spans)
        {
            out.push(ReceivedSpan {
                service: service.clone(),
                name: span.name,
                trace_id: span.trace_id,
                span_id: span.span_id,
                parent_span_id: span.parent_span_id,
                attributes: span
                    .attributes
                    .into_iter()
                    .map(|kv| (kv.key, text(kv.value.and_then(|v| v.value))))
                    .collect(),
                links: span.links.into_iter().map(|l| l.span_id).collect(),
            });
        }
    }
    out
}

/// One unit's trace across the nodes: the coordinator's `unit` span
/// (its lease), the worker's `unit_run` as its child with the unit's
/// model calls under it, and the coordinator's `result` (the decision,
/// ended when stored) under the lease, linked to the worker's span.
#[derive(Debug)]
pub struct UnitTrace {
    pub lease: ReceivedSpan,
    pub run: ReceivedSpan,
    pub model_calls: Vec<ReceivedSpan>,
    pub result: ReceivedSpan,
}

/// The first unit whose whole trace (lease, run with model calls, stored
/// result) has arrived, if any.
pub fn unit_trace(spans: &[ReceivedSpan]) -> Option<UnitTrace> {
    let children = |parent: &ReceivedSpan, service: &str, name: &str| -> Vec<ReceivedSpan> {
        spans
            .iter()
            .filter(|s| {
                s.service == service
                    && s.name == name
                    && s.trace_id == parent.trace_id
                    && s.parent_span_id == parent.span_id
            })
            .cloned()
            .collect()
    };
    spans
        .iter()
        .filter(|s| s.service == "seedling-coordinator" && s.name == "unit")
        .find_map(|lease| {
            let run = children(lease, "seedling-worker", "unit_run")
                .into_iter()
                .next()?;
            let model_calls = children(&run, "seedling-worker", "model_call");
            let result = children(lease, "seedling-coordinator", "result")
                .into_iter()
                .next()?;
            (!model_calls.is_empty()).then(|| UnitTrace {
                lease: lease.clone(),
                run,
                model_calls,
                result,
            })
        })
}
