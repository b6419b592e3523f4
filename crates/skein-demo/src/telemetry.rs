//! Per-service OpenTelemetry setup (each service its own TracerProvider and Resource, exporting
//! OTLP/HTTP protobuf to skein) and structured JSON logs that carry the trace context.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use opentelemetry::trace::{Link, SpanKind, TraceContextExt as _, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample,
};
use opentelemetry_sdk::Resource;
use serde_json::{json, Value};

/// Who a service is, as its Resource tells skein.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    pub name: &'static str,
    pub version: &'static str,
    pub environment: &'static str,
}

/// A tracer provider exporting to `endpoint` (an OTLP/HTTP base URL such as
/// `http://127.0.0.1:4318`) through a batch processor that ships every 500 ms.
pub fn provider(identity: Identity, endpoint: &str, exporter_http: ExportClient) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(exporter_http)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()
        .context("building the OTLP/HTTP span exporter")?;
    let batching = BatchConfigBuilder::default()
        .with_scheduled_delay(Duration::from_millis(500))
        .with_max_queue_size(16_384)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batching)
        .build();
    let resource = Resource::builder()
        .with_service_name(identity.name)
        .with_attributes([
            KeyValue::new("service.namespace", "shop"),
            KeyValue::new("service.version", identity.version),
            // The older and the current semantic-convention key, so either query finds it.
            KeyValue::new("deployment.environment", identity.environment),
            KeyValue::new("deployment.environment.name", identity.environment),
            KeyValue::new(
                "service.instance.id",
                format!("{}-{}", identity.name, std::process::id()),
            ),
        ])
        .build();
    Ok(SdkTracerProvider::builder()
        .with_sampler(RootTraceState(identity.name))
        .with_resource(resource)
        .with_span_processor(processor)
        .build())
}

/// Samples like the default (parent-based, always on) and gives every trace this service starts
/// a W3C `tracestate` entry `shop=<service>`, which W3C hops carry along (B3 and Jaeger headers
/// have no place for it, so it is lost after them — as in a real mixed estate).
#[derive(Clone, Debug)]
struct RootTraceState(&'static str);

impl ShouldSample for RootTraceState {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        _trace_id: TraceId,
        _name: &str,
        _kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let parent = parent
            .map(|cx| cx.span().span_context().clone())
            .filter(|sc| sc.is_valid());
        let (decision, trace_state) = match parent {
            Some(sc) if !sc.is_sampled() => (SamplingDecision::Drop, sc.trace_state().clone()),
            Some(sc) => (SamplingDecision::RecordAndSample, sc.trace_state().clone()),
            None => (
                SamplingDecision::RecordAndSample,
                TraceState::from_key_value([("shop", self.0)]).unwrap_or_default(),
            ),
        };
        SamplingResult {
            decision,
            attributes: Vec::new(),
            trace_state,
        }
    }
}

/// The exporter's HTTP client: reqwest 0.12 (already in the workspace) run on our tokio runtime.
/// The SDK's batch processor exports from its own thread with a plain executor, so the request
/// is spawned onto the runtime and awaited through its join handle.
#[derive(Clone, Debug)]
pub struct ExportClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl ExportClient {
    pub fn new(runtime: tokio::runtime::Handle) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the exporter's HTTP client")?;
        Ok(ExportClient { client, runtime })
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let send = async move {
            let (parts, body) = request.into_parts();
            let response = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            let mut out = http::Response::builder().status(status).body(body)?;
            *out.headers_mut() = headers;
            Ok::<_, HttpError>(out)
        };
        self.runtime.spawn(send).await?
    }
}

/// Structured JSON log lines, one object per line, each with the `trace_id` and `span_id` of
/// the span it was written in. skein has no OTLP logs ingest yet, so they go to a file.
#[derive(Clone)]
pub struct JsonLog {
    sink: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl JsonLog {
    pub fn to_file(path: &Path) -> anyhow::Result<JsonLog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the demo log {}", path.display()))?;
        Ok(JsonLog {
            sink: Arc::new(Mutex::new(Box::new(std::io::LineWriter::new(file)))),
        })
    }

    pub fn to_stderr() -> JsonLog {
        JsonLog {
            sink: Arc::new(Mutex::new(Box::new(std::io::stderr()))),
        }
    }

    /// Writes one line for `service` in the span of `cx`; `fields` (a JSON object) are merged in.
    pub fn write(&self, service: &str, level: &str, cx: &Context, message: &str, fields: Value) {
        let span = cx.span();
        let sc = span.span_context();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut line = json!({
            "time_unix_ms": now.as_millis() as u64,
            "level": level,
            "service": service,
            "message": message,
            "trace_id": sc.is_valid().then(|| sc.trace_id().to_string()),
            "span_id": sc.is_valid().then(|| sc.span_id().to_string()),
        });
        if let (Some(line), Value::Object(extra)) = (line.as_object_mut(), fields) {
            line.extend(extra);
        }
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        // A log line that cannot be written must not fail a checkout.
        let _ = writeln!(sink, "{line}");
    }

    pub fn flush(&self) {
        let _ = self.sink.lock().unwrap_or_else(|p| p.into_inner()).flush();
    }
}
