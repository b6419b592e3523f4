//! One trace, many protocols: spans of one trace id arrive over OTLP/HTTP, Zipkin v2 JSON,
//! Jaeger thrift over HTTP (the thrift client shipped in opentelemetry-exporter-jaeger-thrift)
//! and Jaeger gRPC PostSpans (grpcio), two of them twice over different protocols. skein must
//! assemble one deduped tree, and the Jaeger HTTP, Jaeger gRPC (api_v2 and api_v3) and Zipkin
//! query APIs must agree on it span for span.

mod common;
mod views;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, hex, Server};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Span};
use prost::Message;
use serde_json::{json, Value};
use skein_model::otlp::json::base64_encode;
use views::{grpc_calls, ok, SpanView, TraceView};

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn rand_id<const N: usize>() -> [u8; N] {
    std::array::from_fn(|_| fastrand::u8(1..=255))
}

/// A span as the test means it, before any protocol sees it.
#[derive(Clone)]
struct Planned {
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    service: &'static str,
    name: &'static str,
    start_us: u64,
    duration_us: u64,
    error: bool,
}

impl Planned {
    fn view(&self) -> SpanView {
        SpanView {
            span_id: hex(&self.span_id),
            parent_id: self.parent.map(|p| hex(&p)).unwrap_or_default(),
            service: self.service.into(),
            name: self.name.into(),
            start_us: self.start_us,
            duration_us: self.duration_us,
            error: self.error,
        }
    }
}

fn otlp(trace: [u8; 16], planned: &[(&Planned, SpanKind)]) -> ExportTraceServiceRequest {
    let spans = planned
        .iter()
        .map(|(p, kind)| Span {
            trace_id: trace.to_vec(),
            span_id: p.span_id.to_vec(),
            parent_span_id: p.parent.map(|x| x.to_vec()).unwrap_or_default(),
            name: p.name.into(),
            kind: *kind as i32,
            start_time_unix_nano: p.start_us * 1000,
            end_time_unix_nano: (p.start_us + p.duration_us) * 1000,
            ..Default::default()
        })
        .collect();
    common::otlp_request(planned[0].0.service, spans)
}

fn zipkin_json(trace: [u8; 16], p: &Planned, kind: &str) -> Value {
    let mut s = json!({
        "traceId": hex(&trace),
        "id": hex(&p.span_id),
        "name": p.name,
        "kind": kind,
        "timestamp": p.start_us,
        "duration": p.duration_us,
        "localEndpoint": {"serviceName": p.service},
    });
    if let Some(parent) = p.parent {
        s["parentId"] = json!(hex(&parent));
    }
    if p.error {
        s["tags"] = json!({"error": "db down"});
    }
    s
}

fn jaeger_thrift_span(trace: [u8; 16], p: &Planned, kind: &str) -> Value {
    let mut tags = json!({"span.kind": kind});
    if p.error {
        tags["error"] = json!(true);
    }
    json!({
        "trace_id": hex(&trace),
        "span_id": hex(&p.span_id),
        "parent_id": p.parent.map(|x| hex(&x)).unwrap_or_default(),
        "name": p.name,
        "start_us": p.start_us,
        "duration_us": p.duration_us,
        "tags": tags,
    })
}

/// api_v2 model span in protobuf JSON, for the grpcio PostSpans call.
fn jaeger_proto_span(trace: [u8; 16], p: &Planned, kind: &str) -> Value {
    let mut tags = vec![json!({"key": "span.kind", "v_str": kind})];
    if p.error {
        tags.push(json!({"key": "error", "v_type": "BOOL", "v_bool": true}));
    }
    let mut s = json!({
        "trace_id": base64_encode(&trace),
        "span_id": base64_encode(&p.span_id),
        "operation_name": p.name,
        "start_time": skein_api::time::format_rfc3339(p.start_us * 1000),
        "duration": format!("{}.{:06}s", p.duration_us / 1_000_000, p.duration_us % 1_000_000),
        "tags": tags,
    });
    if let Some(parent) = p.parent {
        s["references"] =
            json!([{"trace_id": base64_encode(&trace), "span_id": base64_encode(&parent), "ref_type": "CHILD_OF"}]);
    }
    s
}

fn post_jaeger_thrift(url: String, service: &str, spans: Vec<Value>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/jaeger_thrift_send.py");
    let mut child = Command::new(common::python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let req = json!({"url": url, "service": service, "spans": spans});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "jaeger_thrift_send.py failed");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        (200..300).contains(&v["status"].as_u64().unwrap()),
        "thrift POST answered {v}"
    );
}

async fn get_json(url: String) -> Option<Value> {
    let r = reqwest::get(url).await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_over_four_protocols_reads_back_the_same_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let trace = rand_id::<16>();
    let t0 = now_us() - 1_000_000;
    let [a, b, c, d, e] = [rand_id::<8>(), rand_id(), rand_id(), rand_id(), rand_id()];
    let plan = |span_id, parent, service, name, offset_us, duration_us, error| Planned {
        span_id,
        parent,
        service,
        name,
        start_us: t0 + offset_us,
        duration_us,
        error,
    };
    // gateway (OTLP) → orders (Zipkin, fails) → inventory (Jaeger thrift) → inventory (Jaeger gRPC, fails).
    let root = plan(a, None, "gateway", "get /order", 0, 100_000, false);
    let call = plan(b, Some(a), "gateway", "call orders", 5_000, 80_000, false);
    let orders = plan(c, Some(b), "orders", "get /order/{id}", 10_000, 60_000, true);
    let reserve = plan(d, Some(c), "inventory", "reserve", 20_000, 20_000, false);
    let select = plan(e, Some(d), "inventory", "select stock", 25_000, 10_123, true);
    let want: TraceView = [&root, &call, &orders, &reserve, &select]
        .iter()
        .map(|p| (hex(&p.span_id), p.view()))
        .collect();

    // OTLP/HTTP: the gateway's two spans.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.http_url()))
        .header("content-type", "application/x-protobuf")
        .body(otlp(trace, &[(&root, SpanKind::Server), (&call, SpanKind::Client)]).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Zipkin v2 JSON: the orders span, and the gateway's client span again (a duplicate).
    let zipkin = format!("http://{}", server.addr("zipkin_http"));
    let r = reqwest::Client::new()
        .post(format!("{zipkin}/api/v2/spans"))
        .json(&json!([
            zipkin_json(trace, &orders, "SERVER"),
            zipkin_json(trace, &call, "CLIENT")
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());

    // Jaeger thrift over HTTP: reserve, and select (which also comes over gRPC below).
    let thrift_url = format!("http://{}/api/traces", server.addr("jaeger_thrift_http"));
    let thrift_spans = vec![
        jaeger_thrift_span(trace, &reserve, "server"),
        jaeger_thrift_span(trace, &select, "client"),
    ];
    tokio::task::spawn_blocking(move || post_jaeger_thrift(thrift_url, "inventory", thrift_spans))
        .await
        .unwrap();

    // Jaeger gRPC PostSpans: select.
    let collector = server.addr("jaeger_grpc");
    let post = vec![json!({
        "api": "collector",
        "method": "PostSpans",
        "target": collector.to_string(),
        "request": {"batch": {
            "process": {"service_name": "inventory"},
            "spans": [jaeger_proto_span(trace, &select, "client")],
        }},
    })];
    let query_grpc = server.addr("query_grpc");
    let r = tokio::task::spawn_blocking(move || grpc_calls(query_grpc, post))
        .await
        .unwrap();
    ok(&r[0]);

    // Every ingest path acknowledges after the WAL; poll only so a slow box cannot flake.
    let id = hex(&trace);
    let query = server.query_url();
    let v1 = eventually("all five spans via Jaeger HTTP", Duration::from_secs(30), || {
        let url = format!("{query}/api/traces/{id}");
        async move {
            let v = get_json(url).await?;
            (v["data"][0]["spans"].as_array()?.len() >= 5).then_some(v)
        }
    })
    .await;
    let from_v1 = views::from_jaeger_v1(&v1["data"][0]);
    assert_eq!(
        v1["data"][0]["spans"].as_array().unwrap().len(),
        5,
        "duplicates were not merged: {v1}"
    );
    assert_eq!(from_v1, want, "Jaeger HTTP");

    let calls = vec![
        json!({"api": "v2", "method": "GetTrace", "request": {"trace_id": base64_encode(&trace)}}),
        json!({"api": "v3", "method": "GetTrace", "request": {"trace_id": id}}),
    ];
    let r = tokio::task::spawn_blocking(move || grpc_calls(query_grpc, calls))
        .await
        .unwrap();
    let v2_spans: usize = ok(&r[0]).iter().map(|c| c["spans"].as_array().unwrap().len()).sum();
    assert_eq!(v2_spans, 5, "api_v2 sent a duplicate");
    assert_eq!(views::from_jaeger_v2(ok(&r[0])), want, "Jaeger gRPC api_v2");
    assert_eq!(views::from_jaeger_v3(ok(&r[1])), want, "Jaeger gRPC api_v3");

    let zipkin_trace = get_json(format!("{zipkin}/api/v2/trace/{id}"))
        .await
        .expect("Zipkin trace");
    let zipkin_spans = zipkin_trace.as_array().unwrap();
    assert_eq!(zipkin_spans.len(), 5, "{zipkin_trace}");
    assert!(
        zipkin_spans.iter().all(|s| s["traceId"] == id.as_str()),
        "{zipkin_trace}"
    );
    assert_eq!(views::from_zipkin(zipkin_spans), want, "Zipkin");

    // One tree: one root, every other span's parent is in the trace.
    let roots: Vec<&SpanView> = from_v1.values().filter(|s| s.parent_id.is_empty()).collect();
    assert_eq!(roots.len(), 1, "{from_v1:?}");
    assert!(from_v1
        .values()
        .all(|s| s.parent_id.is_empty() || from_v1.contains_key(&s.parent_id)));
}
