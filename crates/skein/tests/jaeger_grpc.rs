//! Jaeger gRPC query APIs (api_v2 and api_v3 QueryService on `query_grpc`) against the real
//! binary, driven by a third-party client: Python grpcio with stubs compiled by grpcio-tools
//! from official-shaped .proto files (tests/python/). Data goes in over OTLP/HTTP.

mod common;
mod views;

use std::collections::BTreeSet;

use common::{hex, Server};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::{json, Value};
use skein_model::otlp::json::base64_encode;
use views::{failed, grpc_calls, ok, SpanView, TraceView};

/// Microsecond-aligned now, so every protocol's µs view of a time is exact.
fn now_us_ns() -> u64 {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    ns / 1000 * 1000
}

fn rand_id<const N: usize>() -> [u8; N] {
    std::array::from_fn(|_| fastrand::u8(1..=255))
}

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

struct Sent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    service: &'static str,
    name: &'static str,
    kind: span::SpanKind,
    start: u64,
    duration: u64,
    error: bool,
    attributes: Vec<KeyValue>,
}

impl Sent {
    fn view(&self) -> SpanView {
        SpanView {
            span_id: hex(&self.span_id),
            parent_id: self.parent.map(|p| hex(&p)).unwrap_or_default(),
            service: self.service.into(),
            name: self.name.into(),
            start_us: self.start / 1000,
            duration_us: self.duration / 1000,
            error: self.error,
        }
    }
}

fn export(spans: &[Sent]) -> ExportTraceServiceRequest {
    let resource_spans = spans
        .iter()
        .map(|s| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", any_value::Value::StringValue(s.service.into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: s.trace_id.to_vec(),
                    span_id: s.span_id.to_vec(),
                    parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
                    name: s.name.into(),
                    kind: s.kind as i32,
                    start_time_unix_nano: s.start,
                    end_time_unix_nano: s.start + s.duration,
                    attributes: s.attributes.clone(),
                    status: Some(Status {
                        code: if s.error {
                            status::StatusCode::Error
                        } else {
                            status::StatusCode::Ok
                        } as i32,
                        message: if s.error { "cart is full".into() } else { String::new() },
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            schema_url: String::new(),
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

fn expected(spans: &[&Sent]) -> TraceView {
    spans.iter().map(|s| (hex(&s.span_id), s.view())).collect()
}

fn b64(bytes: &[u8]) -> String {
    base64_encode(bytes)
}

fn rfc3339(ns: u64) -> String {
    skein_api::time::format_rfc3339(ns)
}

/// Trace ids in the order a FindTraces answer streamed them (v2: chunks of spans).
fn v2_trace_ids(chunks: &[Value]) -> BTreeSet<String> {
    chunks
        .iter()
        .flat_map(|c| {
            c["spans"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| views::b64_hex(&s["trace_id"]))
        })
        .collect()
}

fn v3_trace_ids(messages: &[Value]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for td in messages {
        for rs in td["resource_spans"].as_array().unwrap() {
            for ss in rs["scope_spans"].as_array().unwrap() {
                for s in ss["spans"].as_array().unwrap() {
                    out.insert(views::b64_hex(&s["trace_id"]));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_grpc_query_apis_answer_a_third_party_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let target = server.addr("query_grpc");

    // Two traces over OTLP/HTTP: frontend → frontend (client) → cart (error), and a health check.
    let now = now_us_ns();
    let checkout = rand_id::<16>();
    let health = rand_id::<16>();
    let (root, call, cart) = (rand_id::<8>(), rand_id::<8>(), rand_id::<8>());
    let sent = [
        Sent {
            trace_id: checkout,
            span_id: root,
            parent: None,
            service: "frontend",
            name: "GET /checkout",
            kind: span::SpanKind::Server,
            start: now - 200_000_000,
            duration: 100_000_000,
            error: false,
            attributes: vec![kv("http.response.status_code", any_value::Value::IntValue(200))],
        },
        Sent {
            trace_id: checkout,
            span_id: call,
            parent: Some(root),
            service: "frontend",
            name: "POST cart",
            kind: span::SpanKind::Client,
            start: now - 190_000_000,
            duration: 60_000_000,
            error: false,
            attributes: vec![],
        },
        Sent {
            trace_id: checkout,
            span_id: cart,
            parent: Some(call),
            service: "cart",
            name: "POST /cart",
            kind: span::SpanKind::Server,
            start: now - 185_000_000,
            duration: 50_000_000,
            error: true,
            attributes: vec![kv("retry", any_value::Value::BoolValue(true))],
        },
        Sent {
            trace_id: health,
            span_id: rand_id(),
            parent: None,
            service: "frontend",
            name: "GET /health",
            kind: span::SpanKind::Server,
            start: now - 100_000_000,
            duration: 1_000_000,
            error: false,
            attributes: vec![kv("http.response.status_code", any_value::Value::IntValue(503))],
        },
    ];
    let r = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.http_url()))
        .header("content-type", "application/x-protobuf")
        .body(export(&sent).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let want_checkout = expected(&[&sent[0], &sent[1], &sent[2]]);
    let (min, max) = (rfc3339(now - 3_600_000_000_000), rfc3339(now + 3_600_000_000_000));
    let missing = rand_id::<16>();
    let calls = vec![
        // ---- api_v2 ----
        json!({"api": "v2", "method": "GetServices"}),
        json!({"api": "v2", "method": "GetOperations", "request": {"service": "frontend"}}),
        json!({"api": "v2", "method": "GetOperations", "request": {"service": "frontend", "span_kind": "server"}}),
        json!({"api": "v2", "method": "GetOperations", "request": {}}),
        json!({"api": "v2", "method": "GetTrace", "request": {"trace_id": b64(&checkout)}}),
        json!({"api": "v2", "method": "GetTrace", "request": {"trace_id": b64(&checkout)}, "gzip": true}),
        json!({"api": "v2", "method": "GetTrace", "request": {"trace_id": b64(&missing)}}),
        json!({"api": "v2", "method": "GetTrace", "request": {"trace_id": b64(&[1, 2, 3])}}),
        json!({"api": "v2", "method": "FindTraces", "request": {"query": {"service_name": "cart", "start_time_min": min, "start_time_max": max}}}),
        json!({"api": "v2", "method": "FindTraces", "request": {"query": {"service_name": "frontend", "tags": {"http.response.status_code": "503"}}}}),
        json!({"api": "v2", "method": "FindTraces", "request": {"query": {"service_name": "frontend", "duration_min": "0.050s", "search_depth": 5}}}),
        json!({"api": "v2", "method": "FindTraces", "request": {"query": {"service_name": "frontend", "search_depth": -1}}}),
        json!({"api": "v2", "method": "ArchiveTrace", "request": {"trace_id": b64(&checkout)}}),
        json!({"api": "v2", "method": "ArchiveTrace", "request": {"trace_id": b64(&missing)}}),
        json!({"api": "v2", "method": "GetDependencies", "request": {"start_time": min, "end_time": max}}),
        // ---- api_v3 ----
        json!({"api": "v3", "method": "GetServices"}),
        json!({"api": "v3", "method": "GetOperations", "request": {"service": "cart"}}),
        json!({"api": "v3", "method": "GetOperations", "request": {"service": "cart", "span_kind": "sideways"}}),
        json!({"api": "v3", "method": "GetTrace", "request": {"trace_id": hex(&checkout)}}),
        json!({"api": "v3", "method": "GetTrace", "request": {"trace_id": hex(&missing)}, "gzip": true}),
        json!({"api": "v3", "method": "GetTrace", "request": {"trace_id": "not-hex"}}),
        json!({"api": "v3", "method": "FindTraces", "request": {"query": {"service_name": "cart", "attributes": {"retry": "true"}, "start_time_min": min, "start_time_max": max}}}),
        json!({"api": "v3", "method": "FindTraces", "request": {"query": {"service_name": "frontend"}}}),
        json!({"api": "v3", "method": "FindTraces", "request": {"query": {"service_name": "frontend", "start_time_min": min, "start_time_max": max, "duration_max": "0.010s"}}}),
        json!({"api": "v3", "method": "FindTraceSummaries", "request": {"query": {"service_name": "cart", "start_time_min": min, "start_time_max": max}}}),
        json!({"api": "v3", "method": "GetDependencies", "request": {"start_time": min, "end_time": max}}),
        // ---- malformed and unknown ----
        json!({"raw_path": "/jaeger.api_v2.QueryService/GetTrace", "raw_hex": "0aff"}),
        json!({"raw_path": "/jaeger.api_v3.QueryService/NoSuchMethod", "raw_hex": ""}),
        json!({"raw_path": "/jaeger.api_v2.QueryService/GetServices", "raw_hex": ""}),
        // ---- more traces than query.max_traces ----
        json!({"api": "v2", "method": "FindTraces", "request": {"query": {"service_name": "frontend", "search_depth": 1501}}}),
        json!({"api": "v3", "method": "FindTraces", "request": {"query": {"service_name": "frontend", "start_time_min": min, "start_time_max": max, "search_depth": 1501}}}),
    ];
    let r = tokio::task::spawn_blocking(move || grpc_calls(target, calls))
        .await
        .unwrap();

    // ---- api_v2 ----
    let services = &ok(&r[0])[0]["services"];
    assert!(services.as_array().unwrap().contains(&json!("frontend")), "{services}");
    assert!(services.as_array().unwrap().contains(&json!("cart")), "{services}");

    let ops = &ok(&r[1])[0];
    assert_eq!(
        ops["operationNames"],
        json!(["GET /checkout", "GET /health", "POST cart"]),
        "{ops}"
    );
    let pairs: BTreeSet<(String, String)> = ops["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().into(),
                o["span_kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("GET /checkout", "server"),
        ("GET /health", "server"),
        ("POST cart", "client"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(pairs, want);
    assert_eq!(ok(&r[2])[0]["operationNames"], json!(["GET /checkout", "GET /health"]));
    failed(&r[3], "INVALID_ARGUMENT", "service");

    assert_eq!(views::from_jaeger_v2(ok(&r[4])), want_checkout);
    assert_eq!(views::from_jaeger_v2(ok(&r[5])), want_checkout, "gzip");
    // Typed tags and the OTel mapping tags come through as api_v2 KeyValues.
    let spans: Vec<&Value> = ok(&r[4]).iter().flat_map(|c| c["spans"].as_array().unwrap()).collect();
    let root_span = spans
        .iter()
        .find(|s| views::b64_hex(&s["span_id"]) == hex(&root))
        .unwrap();
    let tags = root_span["tags"].as_array().unwrap();
    assert!(
        tags.iter()
            .any(|t| t["key"] == "http.response.status_code" && t["v_type"] == "INT64" && t["v_int64"] == "200"),
        "{root_span}"
    );
    assert!(
        tags.iter().any(|t| t["key"] == "span.kind" && t["v_str"] == "server"),
        "{root_span}"
    );
    assert_eq!(views::b64_hex(&root_span["trace_id"]), hex(&checkout));
    failed(&r[6], "NOT_FOUND", &hex(&missing));
    failed(&r[7], "INVALID_ARGUMENT", "trace_id");

    assert_eq!(v2_trace_ids(ok(&r[8])), BTreeSet::from([hex(&checkout)]));
    assert_eq!(
        views::from_jaeger_v2(ok(&r[8])),
        want_checkout,
        "FindTraces returns whole traces"
    );
    assert_eq!(
        v2_trace_ids(ok(&r[9])),
        BTreeSet::from([hex(&health)]),
        "typed tag search"
    );
    assert_eq!(
        v2_trace_ids(ok(&r[10])),
        BTreeSet::from([hex(&checkout)]),
        "duration_min"
    );
    failed(&r[11], "INVALID_ARGUMENT", "search_depth");
    assert_eq!(ok(&r[12]).len(), 1, "archiving a stored trace succeeds");
    failed(&r[13], "NOT_FOUND", "not found");
    let deps = &ok(&r[14])[0]["dependencies"];
    assert_eq!(
        deps,
        &json!([{"parent": "frontend", "child": "cart", "call_count": "1"}]),
        "{deps}"
    );

    // ---- api_v3 ----
    let services = &ok(&r[15])[0]["services"];
    assert!(services.as_array().unwrap().contains(&json!("cart")), "{services}");
    assert_eq!(
        ok(&r[16])[0]["operations"],
        json!([{"name": "POST /cart", "span_kind": "server"}])
    );
    failed(&r[17], "INVALID_ARGUMENT", "sideways");
    let v3_trace = ok(&r[18]);
    assert_eq!(views::from_jaeger_v3(v3_trace), want_checkout);
    // OTLP fields survive: kind, status message, typed attributes.
    let v3_json = serde_json::to_string(v3_trace).unwrap();
    assert!(v3_json.contains("SPAN_KIND_CLIENT"), "{v3_json}");
    assert!(v3_json.contains("cart is full"), "{v3_json}");
    assert!(
        v3_json.contains(r#"{"key":"retry","value":{"bool_value":true}}"#),
        "{v3_json}"
    );
    failed(&r[19], "NOT_FOUND", "not found");
    failed(&r[20], "INVALID_ARGUMENT", "trace_id");
    assert_eq!(
        v3_trace_ids(ok(&r[21])),
        BTreeSet::from([hex(&checkout)]),
        "typed attribute search"
    );
    failed(&r[22], "INVALID_ARGUMENT", "start_time_min");
    assert_eq!(v3_trace_ids(ok(&r[23])), BTreeSet::from([hex(&health)]), "duration_max");
    let summaries = &ok(&r[24])[0]["summaries"];
    assert_eq!(summaries.as_array().unwrap().len(), 1, "{summaries}");
    let s = &summaries[0];
    assert_eq!(s["trace_id"], hex(&checkout));
    assert_eq!(
        (s["root_service_name"].as_str(), s["root_operation_name"].as_str()),
        (Some("frontend"), Some("GET /checkout"))
    );
    assert_eq!(
        (s["span_count"].as_i64(), s["error_span_count"].as_i64()),
        (Some(3), Some(1))
    );
    assert_eq!(s["min_start_time_unix_nano"], (now - 200_000_000).to_string());
    failed(&r[26], "INVALID_ARGUMENT", "decode");
    failed(&r[27], "UNIMPLEMENTED", "NoSuchMethod");
    // GetServicesResponse{services: ["cart", "frontend"]} on the wire, field 1 repeated.
    assert_eq!(ok(&r[28])[0], json!("0a04636172740a0866726f6e74656e64"));
    failed(
        &r[29],
        "INVALID_ARGUMENT",
        "query.search_depth=1501 asks for more traces than query.max_traces=1500",
    );
    failed(&r[30], "INVALID_ARGUMENT", "query.max_traces=1500");
    assert_eq!(
        ok(&r[25])[0]["dependencies"],
        json!([{"parent": "frontend", "child": "cart", "call_count": "1"}])
    );
}

/// The listener honours `query.grpc_addr = ""` (disabled) like every other port.
#[test]
fn query_grpc_can_be_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["query.grpc_addr="]);
    assert!(!server.ports.contains_key("query_grpc"), "{:?}", server.ports);
    assert!(server.ports.contains_key("query_http"));
}

/// A trace bigger than gRPC clients' default 4 MiB message limit arrives whole, in chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_trace_streams_in_chunks_under_the_client_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let trace = rand_id::<16>();
    let now = now_us_ns();
    let payload = "x".repeat(2048);
    // 3,000 spans × ~2 KiB ≈ 6 MiB, sent in three requests.
    let mut ids = BTreeSet::new();
    for batch in 0..3 {
        let spans: Vec<Sent> = (0..1000)
            .map(|i| {
                let id = rand_id::<8>();
                ids.insert(hex(&id));
                Sent {
                    trace_id: trace,
                    span_id: id,
                    parent: None,
                    service: "bulk",
                    name: "work",
                    kind: span::SpanKind::Internal,
                    start: now - 1_000_000_000 + (batch * 1000 + i) * 1000,
                    duration: 500_000,
                    error: false,
                    attributes: vec![kv("payload", any_value::Value::StringValue(payload.clone()))],
                }
            })
            .collect();
        let r = reqwest::Client::new()
            .post(format!("{}/v1/traces", server.http_url()))
            .header("content-type", "application/x-protobuf")
            .body(export(&spans).encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(ids.len(), 3000);
    let calls = vec![
        json!({"api": "v2", "method": "GetTrace", "request": {"trace_id": b64(&trace)}}),
        json!({"api": "v3", "method": "GetTrace", "request": {"trace_id": hex(&trace)}}),
    ];
    let target = server.addr("query_grpc");
    let r = tokio::task::spawn_blocking(move || grpc_calls(target, calls))
        .await
        .unwrap();
    let v2 = ok(&r[0]);
    assert!(v2.len() > 1, "expected several chunks, got {}", v2.len());
    let v2_ids: BTreeSet<String> = views::from_jaeger_v2(v2).into_keys().collect();
    assert_eq!(v2_ids, ids);
    let v3 = ok(&r[1]);
    assert!(v3.len() > 1, "expected several TracesData messages, got {}", v3.len());
    let v3_ids: BTreeSet<String> = views::from_jaeger_v3(v3).into_keys().collect();
    assert_eq!(v3_ids, ids);
}
