//! Jaeger ingest against the real server with real third-party clients: OpenTelemetry's Python
//! Jaeger exporters (UDP agent compact thrift, collector HTTP binary thrift, gRPC PostSpans) and
//! the npm `jaeger-client` tracer (UDP agent binary thrift). Traces are read back through the
//! Jaeger HTTP query API. Also the error paths: bad thrift → 400 naming the problem, 415, 413,
//! gRPC garbage → INVALID_ARGUMENT, partial acceptance, bad UDP datagrams counted, not fatal.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::{eventually, Server};
use serde_json::Value;
use skein_model::jaeger::thrift::{self, Protocol};
use skein_model::jaeger::{JaegerLog, JaegerProcess, JaegerRef, JaegerSpan, RefType};
use skein_model::{AnyValue, KeyValue};

const WAIT: Duration = Duration::from_secs(30);

// ---- helpers ---------------------------------------------------------------------------

fn run(cmd: &mut Command) -> Value {
    let out = cmd.output().expect("run client");
    assert!(
        out.status.success(),
        "client failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("client printed {stdout:?}: {e}"))
}

fn python_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/jaeger_ingest_client.py")
}

fn python_client(args: &[&str]) -> Value {
    run(Command::new(common::python())
        .arg(python_script())
        .args(args)
        // The proto-grpc exporter's generated code predates protobuf 4.
        .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python"))
}

/// Polls the Jaeger HTTP API until the trace has `spans` spans; returns the trace object.
async fn read_trace(server: &Server, trace_id: &str, spans: usize) -> Value {
    let url = format!("{}/api/traces/{trace_id}", server.query_url());
    eventually(&format!("{spans} spans of trace {trace_id}"), WAIT, || {
        let url = url.clone();
        async move {
            let v: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            let trace = v["data"].get(0)?.clone();
            (trace["spans"].as_array()?.len() >= spans).then_some(trace)
        }
    })
    .await
}

fn span<'a>(trace: &'a Value, span_id: &str) -> &'a Value {
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["spanID"] == span_id)
        .unwrap_or_else(|| panic!("span {span_id} not in {trace}"))
}

fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| &t["value"])
}

fn service_of<'a>(trace: &'a Value, span: &Value) -> &'a str {
    let pid = span["processID"].as_str().unwrap();
    trace["processes"][pid]["serviceName"].as_str().unwrap()
}

/// (refType, spanID) of each reference.
fn refs(span: &Value) -> Vec<(String, String)> {
    span["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["refType"].as_str().unwrap().to_string(),
                r["spanID"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn metric(server: &Server, line_prefix: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", server.query_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

fn test_span(trace_low: u8, span: u8) -> JaegerSpan {
    let mut trace_id = [0u8; 16];
    trace_id[0] = 0x5e;
    trace_id[15] = trace_low;
    JaegerSpan {
        trace_id,
        span_id: [0, 0, 0, 0, 0, 0, 0, span],
        operation_name: format!("op-{span}"),
        flags: 1,
        start_unix_nano: 1_700_000_000_000_000_000,
        duration_nano: 5_000_000,
        tags: vec![
            KeyValue::string("span.kind", "client"),
            KeyValue::new("n", AnyValue::Int(7)),
        ],
        logs: vec![JaegerLog {
            time_unix_nano: 1_700_000_000_001_000_000,
            fields: vec![KeyValue::string("event", "sent")],
        }],
        ..JaegerSpan::default()
    }
}

fn process(service: &str) -> JaegerProcess {
    JaegerProcess {
        service_name: service.into(),
        tags: vec![KeyValue::string("host.name", "h1")],
    }
}

async fn post_thrift(server: &Server, content_type: &str, encoding: Option<&str>, body: Vec<u8>) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("http://{}/api/traces", server.addr("jaeger_thrift_http")))
        .header("content-type", content_type)
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn udp_send(to: SocketAddr, bytes: &[u8]) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(bytes, to).unwrap();
}

/// Checks the trace the Python client script sends (see tests/python/jaeger_ingest_client.py).
fn check_python_trace(trace: &Value, sent: &Value) {
    let (root_id, db_id, work_id) = (
        sent["root"].as_str().unwrap(),
        sent["db"].as_str().unwrap(),
        sent["work"].as_str().unwrap(),
    );
    let service = sent["service"].as_str().unwrap();
    let root = span(trace, root_id);
    let db = span(trace, db_id);
    let work = span(trace, work_id);
    for s in [root, db, work] {
        assert_eq!(service_of(trace, s), service);
        assert_eq!(s["traceID"], sent["trace_id"]);
    }
    assert_eq!(root["operationName"], "GET /checkout");
    assert!(refs(root).is_empty(), "root has no parent: {root}");
    assert_eq!(tag(root, "span.kind").unwrap(), "server");
    assert_eq!(tag(root, "http.status_code").unwrap(), 200);
    assert_eq!(tag(root, "ratio").unwrap(), 0.25);
    assert_eq!(tag(root, "cached").unwrap(), true);
    assert_eq!(tag(root, "otel.scope.name").unwrap(), "jaeger-ingest-test");
    assert_eq!(tag(root, "otel.scope.version").unwrap(), "1.2.3");
    assert!(tag(root, "error").is_none());

    assert_eq!(refs(db), vec![("CHILD_OF".to_string(), root_id.to_string())]);
    assert_eq!(tag(db, "span.kind").unwrap(), "client");
    assert_eq!(tag(db, "error").unwrap(), true);
    assert_eq!(tag(db, "otel.status_code").unwrap(), "ERROR");
    assert_eq!(tag(db, "otel.status_description").unwrap(), "db down");
    // OTel's Python exporter names the event in a "message" field (the collector's mapping
    // takes only "event" as the name, so "message" stays a field).
    let log = &db["logs"][0];
    let field = |k: &str| {
        log["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["key"] == k)
            .map(|f| f["value"].clone())
    };
    assert_eq!(field("attempt"), Some(Value::from(2)));
    assert_eq!(field("message"), Some(Value::from("retry")));

    // The link became a FOLLOWS_FROM after the parent.
    assert_eq!(
        refs(work),
        vec![
            ("CHILD_OF".to_string(), root_id.to_string()),
            ("FOLLOWS_FROM".to_string(), root_id.to_string())
        ]
    );
    assert_eq!(tag(work, "span.kind").unwrap(), "internal");
    assert_eq!(tag(work, "items").unwrap(), 3);
    assert!(db["duration"].as_u64().unwrap() <= root["duration"].as_u64().unwrap());
}

// ---- tests -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_exporters_over_agent_collector_http_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);

    let agent = server.addr("jaeger_agent_compact");
    let sent = python_client(&["agent", &agent.ip().to_string(), &agent.port().to_string()]);
    check_python_trace(&read_trace(&server, sent["trace_id"].as_str().unwrap(), 3).await, &sent);

    let url = format!("http://{}/api/traces", server.addr("jaeger_thrift_http"));
    let sent = python_client(&["collector", &url]);
    check_python_trace(&read_trace(&server, sent["trace_id"].as_str().unwrap(), 3).await, &sent);

    let sent = python_client(&["grpc", &server.addr("jaeger_grpc").to_string()]);
    assert_eq!(sent["export"], "SUCCESS", "gRPC export failed: {sent}");
    let trace = read_trace(&server, sent["trace_id"].as_str().unwrap(), 3).await;
    check_python_trace(&trace, &sent);
    // The proto exporter puts the resource into each span's process: process tags → resource.
    let pid = span(&trace, sent["root"].as_str().unwrap())["processID"]
        .as_str()
        .unwrap();
    let ptags = trace["processes"][pid]["tags"].as_array().unwrap();
    assert!(
        ptags
            .iter()
            .any(|t| t["key"] == "deployment.environment" && t["value"] == "test"),
        "process tags: {ptags:?}"
    );

    for p in ["jaeger_agent_compact", "jaeger_thrift_http", "jaeger_grpc"] {
        let n = metric(&server, &format!("skein_spans_accepted_total{{protocol=\"{p}\"}}")).await;
        assert_eq!(n, 3, "accepted spans metric for {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_jaeger_client_over_binary_agent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let agent = server.addr("jaeger_agent_binary");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/node/jaeger_client_udp.js");
    let sent = run(Command::new("node")
        .arg(script)
        .arg(agent.ip().to_string())
        .arg(agent.port().to_string())
        .env("NODE_PATH", common::node_modules()));
    // jaeger-client uses 64-bit trace ids; the query API shows them left-padded.
    // jaeger-client prints ids without leading zeros (`spanIdStr` is a plain base-16 number).
    let short = format!("{:0>16}", sent["trace_id"].as_str().unwrap());
    let short = short.as_str();
    assert!(short.len() <= 16, "{short}");
    let trace = read_trace(&server, short, 2).await;
    assert_eq!(trace["traceID"], format!("{short:0>32}"));

    let root = span(&trace, &format!("{:0>16}", sent["root"].as_str().unwrap()));
    let child = span(&trace, &format!("{:0>16}", sent["child"].as_str().unwrap()));
    assert_eq!(service_of(&trace, root), "node-jaeger-client");
    let pid = root["processID"].as_str().unwrap();
    let ptags = trace["processes"][pid]["tags"].as_array().unwrap();
    assert!(ptags
        .iter()
        .any(|t| t["key"] == "deployment.zone" && t["value"] == "z1"));
    assert!(ptags.iter().any(|t| t["key"] == "jaeger.version"));

    assert_eq!(root["operationName"], "node-root");
    assert_eq!(tag(root, "span.kind").unwrap(), "server");
    assert!(refs(root).is_empty());
    assert_eq!(
        refs(child),
        vec![(
            "CHILD_OF".to_string(),
            format!("{:0>16}", sent["root"].as_str().unwrap())
        )]
    );
    // `error=true` alone became an error status, which the API writes back as both tags.
    assert_eq!(tag(child, "error").unwrap(), true);
    assert_eq!(tag(child, "otel.status_code").unwrap(), "ERROR");
    assert_eq!(tag(child, "ratio").unwrap(), 0.5);
    let fields = child["logs"][0]["fields"].as_array().unwrap();
    assert!(fields.iter().any(|f| f["key"] == "event" && f["value"] == "boom"));
    assert!(fields.iter().any(|f| f["key"] == "detail" && f["value"] == "disk full"));
    // Counted once the agent's task has its acknowledgement, which may come just after the
    // spans became readable.
    let s = &server;
    eventually("2 spans accepted", WAIT, || async move {
        let n = metric(s, "skein_spans_accepted_total{protocol=\"jaeger_agent_binary\"}").await;
        (n == 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thrift_http_errors_compression_and_partial_acceptance() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["jaeger.max_request_bytes=4KiB"]);

    // Garbage: 400 naming the problem.
    let (status, body) = post_thrift(&server, "application/x-thrift", None, b"\x0c\x00\x01garbage".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid thrift Batch"), "{body}");
    assert!(body.contains("truncated") || body.contains("unknown"), "{body}");

    // A valid batch cut short: says where.
    let good = thrift::encode_batch(Protocol::Binary, &process("svc-http"), &[test_span(1, 1)], None, None);
    let (status, body) = post_thrift(&server, "application/x-thrift", None, good[..good.len() - 5].to_vec()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("truncated") && body.contains("Batch"), "{body}");

    // Wrong content type → 415; unknown encoding → 415.
    let (status, body) = post_thrift(&server, "application/json", None, good.clone()).await;
    assert_eq!(status, 415, "{body}");
    assert!(body.contains("application/x-thrift"), "{body}");
    let (status, _) = post_thrift(&server, "application/x-thrift", Some("br"), good.clone()).await;
    assert_eq!(status, 415);

    // Too large (after decompression too) → 413.
    let big: Vec<JaegerSpan> = (1..=60).map(|i| test_span(2, i)).collect();
    let big = thrift::encode_batch(Protocol::Binary, &process("svc-http"), &big, None, None);
    assert!(big.len() > 4096);
    let (status, body) = post_thrift(&server, "application/x-thrift", Some("gzip"), gzip(&big)).await;
    assert_eq!(status, 413, "{body}");

    // gzip, the vnd content type, and 128-bit ids: 202 and stored.
    let (status, body) = post_thrift(
        &server,
        "application/vnd.apache.thrift.binary",
        Some("gzip"),
        gzip(&good),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let trace = read_trace(&server, "5e000000000000000000000000000001", 1).await;
    let s = span(&trace, "0000000000000001");
    assert_eq!(service_of(&trace, s), "svc-http");
    assert_eq!(tag(s, "span.kind").unwrap(), "client");
    assert_eq!(tag(s, "n").unwrap(), 7);
    assert_eq!(s["startTime"], 1_700_000_000_000_000u64);
    assert_eq!(s["duration"], 5_000u64);
    assert_eq!(s["logs"][0]["timestamp"], 1_700_000_000_001_000u64);

    // Compact over HTTP too.
    let compact = thrift::encode_batch(
        Protocol::Compact,
        &process("svc-compact"),
        &[test_span(3, 1)],
        None,
        None,
    );
    let (status, body) = post_thrift(&server, "application/vnd.apache.thrift.compact", None, compact).await;
    assert_eq!(status, 202, "{body}");
    read_trace(&server, "5e000000000000000000000000000003", 1).await;

    // Partial acceptance: span #1 has a zero span id; span #0 and #2 are stored, and the 400
    // names the bad one.
    let mut bad = test_span(4, 0);
    bad.span_id = [0; 8];
    let mut child = test_span(4, 2);
    child.references = vec![JaegerRef {
        ref_type: RefType::ChildOf,
        trace_id: child.trace_id,
        span_id: [0, 0, 0, 0, 0, 0, 0, 1],
    }];
    let batch = thrift::encode_batch(
        Protocol::Binary,
        &process("svc-partial"),
        &[test_span(4, 1), bad, child],
        None,
        None,
    );
    let (status, body) = post_thrift(&server, "application/x-thrift", None, batch).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("span #1") && body.contains("span id is all zeros"),
        "{body}"
    );
    assert!(body.contains("other 2 span(s) were stored"), "{body}");
    let trace = read_trace(&server, "5e000000000000000000000000000004", 2).await;
    let child = span(&trace, "0000000000000002");
    assert_eq!(
        refs(child),
        vec![("CHILD_OF".to_string(), "0000000000000001".to_string())]
    );
    assert_eq!(
        metric(
            &server,
            "skein_spans_rejected_total{protocol=\"jaeger_thrift_http\",reason=\"invalid_span_id\"}"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_garbage_is_invalid_argument_and_partial_batches_name_the_bad_span() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let target = server.addr("jaeger_grpc").to_string();

    // Not a protobuf message at all.
    let r = python_client(&["raw-grpc", &target, "ffffffff0f0a"]);
    assert_eq!(r["code"], "INVALID_ARGUMENT", "{r}");

    // A real PostSpansRequest (grpcio sends our encoding): one good span, one with a 3-byte id.
    use prost::Message;
    use skein_model::jaeger::proto;
    let good = proto::span_to_proto(&test_span(9, 1));
    let mut bad = proto::span_to_proto(&test_span(9, 2));
    bad.span_id = vec![1, 2, 3];
    let req = proto::PostSpansRequest {
        batch: Some(proto::Batch {
            spans: vec![good, bad],
            process: Some(proto::process_to_proto(&process("svc-grpc"))),
        }),
    };
    let r = python_client(&["raw-grpc", &target, &common::hex(&req.encode_to_vec())]);
    assert_eq!(r["code"], "INVALID_ARGUMENT", "{r}");
    let details = r["details"].as_str().unwrap();
    assert!(
        details.contains("span #1") && details.contains("span id must be 8 bytes, got 3"),
        "{details}"
    );
    let trace = read_trace(&server, "5e000000000000000000000000000009", 1).await;
    assert_eq!(service_of(&trace, span(&trace, "0000000000000001")), "svc-grpc");

    // An all-good request is plainly OK.
    let req = proto::PostSpansRequest {
        batch: Some(proto::Batch {
            spans: vec![proto::span_to_proto(&test_span(10, 1))],
            process: Some(proto::process_to_proto(&process("svc-grpc"))),
        }),
    };
    let r = python_client(&["raw-grpc", &target, &common::hex(&req.encode_to_vec())]);
    assert_eq!(r["code"], "OK", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_udp_datagrams_are_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let compact = server.addr("jaeger_agent_compact");
    let binary = server.addr("jaeger_agent_binary");

    udp_send(compact, b"definitely not thrift");
    udp_send(binary, b"\x80\x01\x00\x04\x00\x00\x00\x09emitBatch");
    // A valid message of the wrong protocol for the port.
    udp_send(
        compact,
        &thrift::encode_emit_batch(Protocol::Binary, 1, &process("wrong"), &[test_span(5, 1)]),
    );
    for (p, n) in [("jaeger_agent_compact", 2), ("jaeger_agent_binary", 1)] {
        let key = format!("skein_udp_datagrams_dropped_total{{protocol=\"{p}\",reason=\"bad_packet\"}}");
        let s = &server;
        eventually(&format!("{n} bad packets counted on {p}"), WAIT, || {
            let key = key.clone();
            async move { (metric(s, &key).await >= n).then_some(()) }
        })
        .await;
    }

    // Both ports still work.
    udp_send(
        compact,
        &thrift::encode_emit_batch(Protocol::Compact, 7, &process("udp-compact"), &[test_span(6, 1)]),
    );
    udp_send(
        binary,
        &thrift::encode_emit_batch(Protocol::Binary, 8, &process("udp-binary"), &[test_span(7, 1)]),
    );
    let t = read_trace(&server, "5e000000000000000000000000000006", 1).await;
    assert_eq!(service_of(&t, span(&t, "0000000000000001")), "udp-compact");
    let t = read_trace(&server, "5e000000000000000000000000000007", 1).await;
    assert_eq!(service_of(&t, span(&t, "0000000000000001")), "udp-binary");
}

/// Datagrams the kernel drops because skein did not read them in time (its socket buffer is
/// full) are counted and logged: the sender is never told, so nothing else would show them.
/// The server is stopped (SIGSTOP) while they arrive, so the buffer surely overflows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_the_kernel_drops_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let agent = server.addr("jaeger_agent_compact");
    let datagram = thrift::encode_emit_batch(Protocol::Compact, 1, &process("burst"), &[test_span(12, 1)]);
    let pid = server.pid() as libc::pid_t;
    // SAFETY: signals to the child process this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..5_000 {
        socket.send_to(&datagram, agent).unwrap();
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let key = "skein_udp_datagrams_dropped_total{protocol=\"jaeger_agent_compact\",reason=\"kernel_buffer\"}";
    let s = &server;
    let dropped = eventually("kernel drops counted", WAIT, || async move {
        let n = metric(s, key).await;
        (n > 0).then_some(n)
    })
    .await;
    assert!(dropped < 5_000, "some were read: {dropped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_gives_retry_advice_or_counted_drops() {
    let dir = tempfile::tempdir().unwrap();
    // With no room for pending blocks every write is refused: deterministic overload.
    let server = Server::start(dir.path(), &["store.max_pending_blocks=0"]);
    let body = thrift::encode_batch(Protocol::Binary, &process("busy"), &[test_span(11, 1)], None, None);

    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/traces", server.addr("jaeger_thrift_http")))
        .header("content-type", "application/x-thrift")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");

    use prost::Message;
    use skein_model::jaeger::proto;
    let req = proto::PostSpansRequest {
        batch: Some(proto::Batch {
            spans: vec![proto::span_to_proto(&test_span(11, 2))],
            process: Some(proto::process_to_proto(&process("busy"))),
        }),
    };
    let target = server.addr("jaeger_grpc").to_string();
    let r = python_client(&["raw-grpc", &target, &common::hex(&req.encode_to_vec())]);
    assert_eq!(r["code"], "RESOURCE_EXHAUSTED", "{r}");

    // UDP cannot answer: the datagram is dropped and counted.
    udp_send(
        server.addr("jaeger_agent_compact"),
        &thrift::encode_emit_batch(Protocol::Compact, 1, &process("busy"), &[test_span(11, 3)]),
    );
    let key = "skein_udp_datagrams_dropped_total{protocol=\"jaeger_agent_compact\",reason=\"backpressure\"}";
    let s = &server;
    eventually("an overloaded datagram counted", WAIT, || async move {
        (metric(s, key).await >= 1).then_some(())
    })
    .await;
    for p in ["jaeger_thrift_http", "jaeger_grpc"] {
        let n = metric(&server, &format!("skein_backpressure_events_total{{protocol=\"{p}\"}}")).await;
        assert!(n >= 1, "backpressure metric for {p}");
    }
}

#[test]
fn each_jaeger_port_can_be_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "jaeger.thrift_http_addr=",
            "jaeger.grpc_addr=",
            "jaeger.agent_compact_addr=",
            "jaeger.agent_binary_addr=",
        ],
    );
    for name in [
        "jaeger_thrift_http",
        "jaeger_grpc",
        "jaeger_agent_compact",
        "jaeger_agent_binary",
    ] {
        assert!(
            !server.ports.contains_key(name),
            "{name} still listening: {:?}",
            server.ports
        );
    }
    assert!(server.ports.contains_key("otlp_grpc"));
}
