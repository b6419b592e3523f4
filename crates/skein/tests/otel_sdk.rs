//! The real OpenTelemetry Rust SDK and its OTLP exporters (gRPC via tonic, HTTP/protobuf via
//! reqwest) send traces to a running skein, which is then read back through the Jaeger query
//! APIs (v1 JSON and api_v3 OTLP JSON) and compared span for span with what the SDK exported,
//! as captured by an in-memory exporter on a second processor of the same provider.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{eventually, hex};
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceId, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Array, Context, InstrumentationScope, KeyValue, StringValue, Value as OtelValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, InMemorySpanExporter, SdkTracerProvider, SimpleSpanProcessor, SpanData, SpanExporter,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;
use serde_json::{json, Map, Value};

const WAIT: Duration = Duration::from_secs(30);
const SCOPE_NAME: &str = "shop.checkout";
const SCOPE_VERSION: &str = "3.1.4";

// ---- exporting -------------------------------------------------------------------------

/// Forwards everything to the real OTLP exporter and keeps its export errors, so a failed
/// export fails the test with the exporter's own message rather than as a query timeout.
#[derive(Debug)]
struct Checked<E> {
    inner: E,
    errors: Arc<Mutex<Vec<String>>>,
}

impl<E> Checked<E> {
    fn new(inner: E) -> (Self, Arc<Mutex<Vec<String>>>) {
        let errors = Arc::new(Mutex::new(Vec::new()));
        (
            Checked {
                inner,
                errors: errors.clone(),
            },
            errors,
        )
    }
}

impl<E: SpanExporter> SpanExporter for Checked<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            self.errors.lock().unwrap().push(e.to_string());
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn shutdown(&self) -> OTelSdkResult {
        self.inner.shutdown()
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The gRPC exporter behind a batch processor (its export runs on the processor's own thread;
/// tonic's channel needs the tokio runtime this is built in).
fn grpc_processor(server: &common::Server) -> (BatchSpanProcessor, Arc<Mutex<Vec<String>>>) {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(server.grpc_url())
        .build()
        .expect("build OTLP gRPC exporter");
    let (exporter, errors) = Checked::new(exporter);
    (BatchSpanProcessor::builder(exporter).build(), errors)
}

/// The HTTP/protobuf exporter uses the async reqwest client, which must run where a tokio
/// runtime is entered: a simple processor exports on the thread that ends the span, and spans
/// are ended inside `spawn_blocking`.
fn http_processor(server: &common::Server) -> (SimpleSpanProcessor<impl SpanExporter>, Arc<Mutex<Vec<String>>>) {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", server.http_url()))
        .with_protocol(Protocol::HttpBinary)
        .build()
        .expect("build OTLP/HTTP exporter");
    let (exporter, errors) = Checked::new(exporter);
    (SimpleSpanProcessor::new(exporter), errors)
}

fn resource(service: &str) -> Resource {
    Resource::builder()
        .with_service_name(service.to_string())
        .with_attributes([
            KeyValue::new("service.version", "2.4.1"),
            KeyValue::new("deployment.environment.name", "integration"),
            KeyValue::new("host.cpu.count", 2i64),
        ])
        .build()
}

/// What the SDK exported: every span as the in-memory exporter saw it, and the resource.
struct Exported {
    service: String,
    resource: Resource,
    spans: Vec<SpanData>,
    /// The checkout trace, then the other trace its producer span links to.
    traces: [TraceId; 2],
}

impl Exported {
    fn trace(&self, id: TraceId) -> Vec<&SpanData> {
        self.spans.iter().filter(|s| s.span_context.trace_id() == id).collect()
    }
}

/// Builds a provider with `processor` plus a capturing in-memory exporter, emits the checkout
/// trace, flushes and shuts down, and returns what was exported.
async fn export_checkout<P: SpanProcessor + 'static>(
    service: &str,
    processor: P,
    errors: Arc<Mutex<Vec<String>>>,
) -> Exported {
    let capture = InMemorySpanExporter::default();
    let resource = resource(service);
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_span_processor(processor)
        .with_simple_exporter(capture.clone())
        .build();
    let (traces, spans) = tokio::task::spawn_blocking(move || {
        let traces = emit_checkout(&provider);
        provider.force_flush().expect("force_flush");
        // Shutting down clears the in-memory exporter: read it first.
        let spans = capture.get_finished_spans().expect("captured spans");
        provider.shutdown().expect("shutdown");
        (traces, spans)
    })
    .await
    .expect("exporting task");
    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "OTLP export failed: {errors:?}");
    assert_eq!(spans.len(), 5, "the SDK captured {} spans", spans.len());
    assert!(spans.iter().all(|s| s.span_context.is_sampled()));
    Exported {
        service: service.to_string(),
        resource,
        spans,
        traces,
    }
}

fn str_array(items: &[&'static str]) -> OtelValue {
    OtelValue::Array(Array::String(items.iter().map(|s| StringValue::from(*s)).collect()))
}

/// A small realistic trace: an HTTP server span with typed attributes and an event; a failing
/// client call (with an event) and the internal work under it; a message published with a link
/// to a span of another trace (a scheduled job, exported too).
fn emit_checkout(provider: &SdkTracerProvider) -> [TraceId; 2] {
    let tracer = provider.tracer_with_scope(
        InstrumentationScope::builder(SCOPE_NAME)
            .with_version(SCOPE_VERSION)
            .build(),
    );

    let mut job = tracer
        .span_builder("reconcile inventory")
        .with_kind(SpanKind::Internal)
        .with_attributes([KeyValue::new("job.run", 41i64)])
        .start_with_context(&tracer, &Context::new());
    let job_context: SpanContext = job.span_context().clone();
    job.end();

    let root = tracer
        .span_builder("POST /checkout")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("url.path", "/checkout"),
            KeyValue::new("http.response.status_code", 201i64),
            KeyValue::new("checkout.total", 129.95f64),
            KeyValue::new("checkout.express", true),
            KeyValue::new("checkout.items", str_array(&["sku-1", "sku-22", "sku-333"])),
        ])
        .start_with_context(&tracer, &Context::new());
    let root_cx = Context::new().with_span(root);
    root_cx.span().add_event(
        "order.validated",
        vec![
            KeyValue::new("order.items", 3i64),
            KeyValue::new("order.currency", "EUR"),
            KeyValue::new("order.gift", false),
        ],
    );

    let charge = tracer
        .span_builder("charge card")
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("server.address", "payments.internal"),
            KeyValue::new("server.port", 443i64),
        ])
        .start_with_context(&tracer, &root_cx);
    let charge_cx = root_cx.with_span(charge);
    let mut encode = tracer
        .span_builder("encode request")
        .with_kind(SpanKind::Internal)
        .with_attributes([KeyValue::new("payload.bytes", 512i64)])
        .start_with_context(&tracer, &charge_cx);
    encode.end();
    charge_cx.span().add_event(
        "retry",
        vec![
            KeyValue::new("retry.attempt", 1i64),
            KeyValue::new("retry.backoff_ms", 12.5f64),
        ],
    );
    charge_cx.span().set_status(Status::error("card declined by issuer"));
    charge_cx.span().end();

    let mut publish = tracer
        .span_builder("publish order.created")
        .with_kind(SpanKind::Producer)
        .with_attributes([
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.destination.name", "orders"),
        ])
        .with_links(vec![Link::new(
            job_context.clone(),
            vec![
                KeyValue::new("link.reason", "reconciles"),
                KeyValue::new("link.batch", 7i64),
            ],
            0,
        )])
        .start_with_context(&tracer, &root_cx);
    publish.end();

    root_cx.span().end();
    [root_cx.span().span_context().trace_id(), job_context.trace_id()]
}

// ---- reading back ----------------------------------------------------------------------

async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    let resp = client.get(url).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// Polls `GET /api/traces/{id}` until the trace has all `n` spans; returns the trace object.
async fn v1_trace(client: &reqwest::Client, server: &common::Server, id: &str, n: usize) -> Value {
    let url = format!("{}/api/traces/{id}", server.query_url());
    let url = &url;
    eventually(
        &format!("{n} spans of trace {id} via /api/traces"),
        WAIT,
        || async move {
            let v = get_json(client, url).await?;
            let trace = v["data"].get(0)?.clone();
            (trace["spans"].as_array()?.len() == n).then_some(trace)
        },
    )
    .await
}

/// Polls `GET /api/v3/traces/{id}` until the trace has all `n` spans; returns `result`.
async fn v3_trace(client: &reqwest::Client, server: &common::Server, id: &str, n: usize) -> Value {
    let url = format!("{}/api/v3/traces/{id}", server.query_url());
    let url = &url;
    eventually(
        &format!("{n} spans of trace {id} via /api/v3/traces"),
        WAIT,
        || async move {
            let v = get_json(client, url).await?;
            let result = v.get("result")?.clone();
            (v3_spans(&result).len() == n).then_some(result)
        },
    )
    .await
}

/// Every span of an OTLP JSON `TracesData`, with its resource and scope.
fn v3_spans(result: &Value) -> Vec<(&Value, &Value, &Value)> {
    let mut out = Vec::new();
    for rs in result["resourceSpans"].as_array().into_iter().flatten() {
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for span in ss["spans"].as_array().into_iter().flatten() {
                out.push((&rs["resource"], &ss["scope"], span));
            }
        }
    }
    out
}

// ---- expectations, from the SDK's SpanData ---------------------------------------------

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).expect("time after 1970").as_nanos() as u64
}

fn trace_hex(id: TraceId) -> String {
    hex(&id.to_bytes())
}

fn span_hex(id: SpanId) -> String {
    hex(&id.to_bytes())
}

/// A value as plain JSON, the way Jaeger shows composite values (their JSON text).
fn plain(v: &OtelValue) -> Value {
    match v {
        OtelValue::Bool(b) => json!(b),
        OtelValue::I64(i) => json!(i),
        OtelValue::F64(d) => json!(d),
        OtelValue::String(s) => json!(s.as_str()),
        OtelValue::Array(Array::Bool(a)) => json!(a),
        OtelValue::Array(Array::I64(a)) => json!(a),
        OtelValue::Array(Array::F64(a)) => json!(a),
        OtelValue::Array(Array::String(a)) => json!(a.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
        other => panic!("value type the test does not know: {other:?}"),
    }
}

/// Jaeger v1 typed tag.
fn v1_tag(key: &str, v: &OtelValue) -> Value {
    let (ty, value) = match v {
        OtelValue::Bool(b) => ("bool", json!(b)),
        OtelValue::I64(i) => ("int64", json!(i)),
        OtelValue::F64(d) => ("float64", json!(d)),
        OtelValue::String(s) => ("string", json!(s.as_str())),
        other => ("string", json!(plain(other).to_string())),
    };
    json!({ "key": key, "type": ty, "value": value })
}

fn v1_str_tag(key: &str, v: &str) -> Value {
    json!({ "key": key, "type": "string", "value": v })
}

fn v1_tags(attrs: &[KeyValue]) -> Vec<Value> {
    attrs.iter().map(|kv| v1_tag(kv.key.as_str(), &kv.value)).collect()
}

/// OTLP JSON AnyValue.
fn otlp_value(v: &OtelValue) -> Value {
    fn each<T>(items: &[T], f: impl Fn(&T) -> Value) -> Value {
        json!({ "arrayValue": { "values": items.iter().map(f).collect::<Vec<_>>() } })
    }
    match v {
        OtelValue::Bool(b) => json!({ "boolValue": b }),
        OtelValue::I64(i) => json!({ "intValue": i.to_string() }),
        OtelValue::F64(d) => json!({ "doubleValue": d }),
        OtelValue::String(s) => json!({ "stringValue": s.as_str() }),
        OtelValue::Array(Array::Bool(a)) => each(a, |b| json!({ "boolValue": b })),
        OtelValue::Array(Array::I64(a)) => each(a, |i| json!({ "intValue": i.to_string() })),
        OtelValue::Array(Array::F64(a)) => each(a, |d| json!({ "doubleValue": d })),
        OtelValue::Array(Array::String(a)) => each(a, |s| json!({ "stringValue": s.as_str() })),
        other => panic!("value type the test does not know: {other:?}"),
    }
}

fn otlp_attrs<'a>(attrs: impl IntoIterator<Item = (&'a str, &'a OtelValue)>) -> Value {
    attrs
        .into_iter()
        .map(|(k, v)| json!({ "key": k, "value": otlp_value(v) }))
        .collect()
}

fn kv_pairs(attrs: &[KeyValue]) -> impl Iterator<Item = (&str, &OtelValue)> {
    attrs.iter().map(|kv| (kv.key.as_str(), &kv.value))
}

fn jaeger_kind(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Client => "client",
        SpanKind::Server => "server",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
    }
}

fn otlp_kind(kind: &SpanKind) -> i64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// OTLP span/link flags as the SDK's exporter builds them: W3C trace flags, plus bit 8 ("the
/// remote bit is known") and bit 9 (the parent or linked context is remote).
fn otlp_flags(trace_flags: u8, remote: bool) -> u32 {
    trace_flags as u32 | 0x100 | if remote { 0x200 } else { 0 }
}

fn is_root(s: &SpanData) -> bool {
    s.parent_span_id == SpanId::INVALID
}

/// The span as `/api/traces` should show it (without processID, checked separately).
fn want_v1_span(s: &SpanData) -> Value {
    let trace_id = trace_hex(s.span_context.trace_id());
    let mut references = Vec::new();
    if !is_root(s) {
        references.push(json!({ "refType": "CHILD_OF", "traceID": trace_id, "spanID": span_hex(s.parent_span_id) }));
    }
    for l in s.links.iter() {
        references.push(json!({
            "refType": "FOLLOWS_FROM",
            "traceID": trace_hex(l.span_context.trace_id()),
            "spanID": span_hex(l.span_context.span_id()),
        }));
    }

    let mut tags = v1_tags(&s.attributes);
    tags.push(v1_str_tag("span.kind", jaeger_kind(&s.span_kind)));
    match &s.status {
        Status::Unset => {}
        Status::Ok => tags.push(v1_str_tag("otel.status_code", "OK")),
        Status::Error { description } => {
            tags.push(v1_str_tag("otel.status_code", "ERROR"));
            tags.push(json!({ "key": "error", "type": "bool", "value": true }));
            if !description.is_empty() {
                tags.push(v1_str_tag("otel.status_description", description));
            }
        }
    }
    let scope = &s.instrumentation_scope;
    tags.push(v1_str_tag("otel.scope.name", scope.name()));
    if let Some(v) = scope.version() {
        tags.push(v1_str_tag("otel.scope.version", v));
    }

    let logs: Vec<Value> = s
        .events
        .iter()
        .map(|e| {
            let mut fields = vec![v1_str_tag("event", &e.name)];
            fields.extend(v1_tags(&e.attributes));
            json!({ "timestamp": nanos(e.timestamp) / 1000, "fields": fields })
        })
        .collect();

    let (start, end) = (nanos(s.start_time), nanos(s.end_time));
    json!({
        "traceID": trace_id,
        "spanID": span_hex(s.span_context.span_id()),
        "operationName": s.name,
        "references": references,
        // Jaeger knows only its own flag bits: a sampled span is plainly 1.
        "flags": 1,
        "startTime": start / 1000,
        "duration": (end - start) / 1000,
        "tags": tags,
        "logs": logs,
    })
}

/// The span as `/api/v3/traces` should show it (OTLP JSON).
fn want_v3_span(s: &SpanData) -> Value {
    let status = match &s.status {
        Status::Unset => json!({}),
        Status::Ok => json!({ "code": 1 }),
        Status::Error { description } => json!({ "code": 2, "message": description }),
    };
    let events: Vec<Value> = s
        .events
        .iter()
        .map(|e| {
            json!({
                "timeUnixNano": nanos(e.timestamp).to_string(),
                "name": e.name,
                "attributes": otlp_attrs(kv_pairs(&e.attributes)),
            })
        })
        .collect();
    let links: Vec<Value> = s
        .links
        .iter()
        .map(|l| {
            json!({
                "traceId": trace_hex(l.span_context.trace_id()),
                "spanId": span_hex(l.span_context.span_id()),
                "attributes": otlp_attrs(kv_pairs(&l.attributes)),
                "flags": otlp_flags(l.span_context.trace_flags().to_u8(), l.span_context.is_remote()),
            })
        })
        .collect();
    let mut span = json!({
        "traceId": trace_hex(s.span_context.trace_id()),
        "spanId": span_hex(s.span_context.span_id()),
        "flags": otlp_flags(s.span_context.trace_flags().to_u8(), s.parent_span_is_remote),
        "name": s.name,
        "kind": otlp_kind(&s.span_kind),
        "startTimeUnixNano": nanos(s.start_time).to_string(),
        "endTimeUnixNano": nanos(s.end_time).to_string(),
        "attributes": otlp_attrs(kv_pairs(&s.attributes)),
        "events": events,
        "links": links,
        "status": status,
    });
    if !is_root(s) {
        span["parentSpanId"] = json!(span_hex(s.parent_span_id));
    }
    span
}

// ---- comparison ------------------------------------------------------------------------

/// Sorts every key/value list (`attributes`, `tags`, `fields`) by key, recursively: their order
/// is not part of what is compared.
fn normalise(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if let ("attributes" | "tags" | "fields", Value::Array(items)) = (k.as_str(), &mut *child) {
                    items.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
                }
                normalise(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

/// `got` cut down to the fields `want` names (a list the server omitted counts as empty, as
/// OTLP JSON allows), both normalised.
fn project(got: &Value, want: &Value) -> (Value, Value) {
    let want_map = want.as_object().expect("expectation is an object");
    let mut cut = Map::new();
    for (k, w) in want_map {
        let g = match got.get(k) {
            Some(g) => g.clone(),
            None if w.is_array() => json!([]),
            None => Value::Null,
        };
        cut.insert(k.clone(), g);
    }
    let (mut got, mut want) = (Value::Object(cut), want.clone());
    normalise(&mut got);
    normalise(&mut want);
    (got, want)
}

fn assert_matches(got: &Value, want: &Value, what: &str) {
    let (got, want) = project(got, want);
    if got != want {
        panic!(
            "{what} differs\n got: {}\nwant: {}",
            serde_json::to_string_pretty(&got).unwrap(),
            serde_json::to_string_pretty(&want).unwrap()
        );
    }
}

fn span_label(s: &SpanData) -> String {
    format!("span {:?} ({})", s.name, span_hex(s.span_context.span_id()))
}

/// Compares one trace from `/api/traces/{id}` with the SDK's spans of it.
fn check_v1(trace: &Value, want: &[&SpanData], exported: &Exported) {
    let id = trace_hex(want[0].span_context.trace_id());
    assert_eq!(trace["traceID"], json!(id));
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), want.len(), "span count of trace {id}");

    // One resource, so one process: the service name plus the other resource attributes.
    let processes = trace["processes"].as_object().expect("processes");
    assert_eq!(processes.len(), 1, "processes of trace {id}: {processes:?}");
    let others: Vec<Value> = exported
        .resource
        .iter()
        .filter(|(k, _)| k.as_str() != "service.name")
        .map(|(k, v)| v1_tag(k.as_str(), v))
        .collect();
    let want_process = json!({ "serviceName": exported.service, "tags": others });

    for s in want {
        let sid = span_hex(s.span_context.span_id());
        let got = spans
            .iter()
            .find(|g| g["spanID"] == json!(sid))
            .unwrap_or_else(|| panic!("{} missing from /api/traces/{id}", span_label(s)));
        assert_matches(got, &want_v1_span(s), &format!("/api/traces: {}", span_label(s)));
        let pid = got["processID"].as_str().expect("processID");
        assert_matches(
            &processes[pid],
            &want_process,
            &format!("/api/traces: process {pid} of {}", span_label(s)),
        );
    }
}

/// Compares one trace from `/api/v3/traces/{id}` with the SDK's spans of it.
fn check_v3(result: &Value, want: &[&SpanData], exported: &Exported) {
    let id = trace_hex(want[0].span_context.trace_id());
    // One resource and one scope: one group each.
    let resource_spans = result["resourceSpans"].as_array().expect("resourceSpans");
    assert_eq!(resource_spans.len(), 1, "resourceSpans of trace {id}");
    assert_eq!(
        resource_spans[0]["scopeSpans"].as_array().map(Vec::len),
        Some(1),
        "scopeSpans of trace {id}"
    );
    let got_spans = v3_spans(result);
    assert_eq!(got_spans.len(), want.len(), "span count of trace {id}");

    let want_resource = json!({ "attributes": otlp_attrs(exported.resource.iter().map(|(k, v)| (k.as_str(), v))) });
    for s in want {
        let sid = span_hex(s.span_context.span_id());
        let (resource, scope, got) = got_spans
            .iter()
            .find(|(_, _, g)| g["spanId"] == json!(sid))
            .copied()
            .unwrap_or_else(|| panic!("{} missing from /api/v3/traces/{id}", span_label(s)));
        let label = format!("/api/v3/traces: {}", span_label(s));
        assert_matches(got, &want_v3_span(s), &label);
        if is_root(s) {
            assert!(
                got.get("parentSpanId").is_none_or(|p| p == "" || p.is_null()),
                "{label}: root has parentSpanId {}",
                got["parentSpanId"]
            );
        }
        assert_matches(resource, &want_resource, &format!("{label}: resource"));
        let want_scope = json!({
            "name": s.instrumentation_scope.name(),
            "version": s.instrumentation_scope.version().unwrap_or_default(),
        });
        assert_matches(scope, &want_scope, &format!("{label}: scope"));
    }
}

/// Reads both exported traces back through both APIs and compares them span for span.
async fn check_round_trip(server: &common::Server, exported: &Exported) {
    let client = reqwest::Client::new();
    for id in exported.traces {
        let want = exported.trace(id);
        assert!(!want.is_empty());
        let hex_id = trace_hex(id);
        let v1 = v1_trace(&client, server, &hex_id, want.len()).await;
        check_v1(&v1, &want, exported);
        let v3 = v3_trace(&client, server, &hex_id, want.len()).await;
        check_v3(&v3, &want, exported);
    }
}

// ---- tests -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_over_grpc_and_reads_back_span_for_span() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(dir.path(), &[]);
    let (processor, errors) = grpc_processor(&server);
    let exported = export_checkout("sdk-grpc-checkout", processor, errors).await;
    assert_eq!(exported.trace(exported.traces[0]).len(), 4);
    assert_eq!(exported.trace(exported.traces[1]).len(), 1);
    check_round_trip(&server, &exported).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_over_http_protobuf() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(dir.path(), &[]);
    let (processor, errors) = http_processor(&server);
    let exported = export_checkout("sdk-http-checkout", processor, errors).await;
    check_round_trip(&server, &exported).await;
}

/// Two independent SDK pipelines of one service (as two replicas would be) export a trace each
/// at the same moment; search, the service list and the operation lists see both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_exports_are_found_by_search_services_and_operations() {
    const SERVICE: &str = "sdk-concurrent-shop";
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(dir.path(), &[]);
    let plans = [("GET /cart", "SELECT cart_items"), ("POST /orders", "INSERT orders")];
    let barrier = Arc::new(tokio::sync::Barrier::new(plans.len()));

    let tasks = plans.map(|(root_name, child_name)| {
        let (processor, errors) = grpc_processor(&server);
        let barrier = barrier.clone();
        tokio::spawn(async move {
            let provider = SdkTracerProvider::builder()
                .with_resource(resource(SERVICE))
                .with_span_processor(processor)
                .build();
            let (provider, trace_id) = tokio::task::spawn_blocking(move || {
                let tracer = provider.tracer_with_scope(InstrumentationScope::builder(SCOPE_NAME).build());
                let root = tracer
                    .span_builder(root_name)
                    .with_kind(SpanKind::Server)
                    .start_with_context(&tracer, &Context::new());
                let cx = Context::new().with_span(root);
                let mut child = tracer
                    .span_builder(child_name)
                    .with_kind(SpanKind::Client)
                    .with_attributes([KeyValue::new("db.system.name", "postgresql")])
                    .start_with_context(&tracer, &cx);
                child.end();
                cx.span().end();
                let trace_id = cx.span().span_context().trace_id();
                (provider, trace_id)
            })
            .await
            .expect("emitting task");
            // Both pipelines hold their finished trace; now both export at once.
            barrier.wait().await;
            tokio::task::spawn_blocking(move || {
                provider.force_flush().expect("force_flush");
                provider.shutdown().expect("shutdown");
            })
            .await
            .expect("flushing task");
            let errors = errors.lock().unwrap().clone();
            assert!(errors.is_empty(), "OTLP export failed: {errors:?}");
            (trace_hex(trace_id), [root_name, child_name])
        })
    });
    let done = futures::future::try_join_all(tasks).await.expect("exporting tasks");

    let client = reqwest::Client::new();
    let client = &client;
    let base = server.query_url();

    let search = format!("{base}/api/traces?service={SERVICE}&limit=20&lookback=1h");
    let search = &search;
    let done = &done;
    let found = eventually("both traces via /api/traces?service=…", WAIT, || async move {
        let v = get_json(client, search).await?;
        let traces = v["data"].as_array()?.clone();
        let complete = done.iter().all(|(id, _)| {
            traces
                .iter()
                .any(|t| t["traceID"] == json!(id) && t["spans"].as_array().is_some_and(|s| s.len() == 2))
        });
        complete.then_some(traces)
    })
    .await;
    assert_eq!(found.len(), 2, "search found {found:#?}");
    for (id, names) in done {
        let trace = found.iter().find(|t| t["traceID"] == json!(id)).unwrap();
        let mut got: Vec<&str> = trace["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["operationName"].as_str().unwrap())
            .collect();
        got.sort_unstable();
        let mut want = names.to_vec();
        want.sort_unstable();
        assert_eq!(got, want, "operations of trace {id}");
        for p in trace["processes"].as_object().unwrap().values() {
            assert_eq!(p["serviceName"], json!(SERVICE));
        }
    }

    let services = format!("{base}/api/services");
    let services = &services;
    eventually("the service in /api/services", WAIT, || async move {
        let v = get_json(client, services).await?;
        v["data"].as_array()?.contains(&json!(SERVICE)).then_some(())
    })
    .await;

    let mut want_ops: Vec<&str> = plans.iter().flat_map(|(a, b)| [*a, *b]).collect();
    want_ops.sort_unstable();
    let operations = format!("{base}/api/services/{SERVICE}/operations");
    let operations = &operations;
    let want_ops = &want_ops;
    let mut got_ops: Vec<String> = eventually("all operations in /api/services/…/operations", WAIT, || async move {
        let v = get_json(client, operations).await?;
        let names: Vec<String> = serde_json::from_value(v["data"].clone()).ok()?;
        want_ops.iter().all(|w| names.iter().any(|n| n == w)).then_some(names)
    })
    .await;
    got_ops.sort_unstable();
    assert_eq!(got_ops, *want_ops, "/api/services/{SERVICE}/operations");

    // The kind-aware variant, as the Jaeger UI asks it.
    let v = get_json(client, &format!("{base}/api/operations?service={SERVICE}"))
        .await
        .expect("/api/operations");
    let mut got_kinds: Vec<(String, String)> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().to_string(),
                o["spanKind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got_kinds.sort_unstable();
    let mut want_kinds: Vec<(String, String)> = plans
        .iter()
        .flat_map(|(a, b)| {
            [
                (a.to_string(), "server".to_string()),
                (b.to_string(), "client".to_string()),
            ]
        })
        .collect();
    want_kinds.sort_unstable();
    assert_eq!(got_kinds, want_kinds, "/api/operations?service={SERVICE}");
}
