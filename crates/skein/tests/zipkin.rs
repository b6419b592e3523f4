//! Zipkin against the real server: real third-party clients from PyPI (OpenTelemetry's Zipkin
//! JSON exporter in v2 and v1, py_zipkin in JSON v1, JSON v2 and proto3) send traces to the
//! Zipkin port; they are read back through the Zipkin v2 query API and the Jaeger HTTP API and
//! checked field by field. Also: golden fixture bodies through HTTP (shared spans keep their
//! ids on the way out), gzip, every error answer (400 naming the problem, 413, 415, 404),
//! partial acceptance, CORS, metrics and the rest of the query API.

mod common;

use std::io::Write;
use std::process::Command;

use common::Server;
use serde_json::Value;

// ---- helpers ---------------------------------------------------------------------------

fn zipkin_url(s: &Server) -> String {
    format!("http://{}", s.addr("zipkin_http"))
}

/// Runs tests/python/zipkin_client.py in `mode` against the server; returns what it printed.
fn send_with_client(s: &Server, mode: &str) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/zipkin_client.py");
    let port = s.addr("zipkin_http").port().to_string();
    let out = Command::new(common::python())
        .arg(script)
        .args([mode, "127.0.0.1", &port])
        // py_zipkin's zipkin_pb2 predates protobuf 4's generated-code checks.
        .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
        .output()
        .expect("run python client");
    assert!(
        out.status.success(),
        "{mode} client failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{mode} client printed {stdout:?}: {e}"))
}

async fn get(url: String) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn get_json(url: String) -> Value {
    let (status, body) = get(url.clone()).await;
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
}

async fn post(s: &Server, path: &str, ctype: Option<&str>, encoding: Option<&str>, body: Vec<u8>) -> (u16, String) {
    let mut r = reqwest::Client::new().post(format!("{}{path}", zipkin_url(s)));
    if let Some(c) = ctype {
        r = r.header("content-type", c);
    }
    if let Some(e) = encoding {
        r = r.header("content-encoding", e);
    }
    let r = r.body(body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn span_named<'a>(spans: &'a Value, name: &str) -> &'a Value {
    spans
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name || s["operationName"] == name)
        .unwrap_or_else(|| panic!("no span named {name} in {spans:#}"))
}

/// A Jaeger v1 tag: (type, value).
fn jaeger_tag(span: &Value, key: &str) -> Option<(String, Value)> {
    span["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| (t["type"].as_str().unwrap_or_default().to_string(), t["value"].clone()))
}

async fn jaeger_trace(s: &Server, id: &str) -> Value {
    let v = get_json(format!("{}/api/traces/{id}", s.query_url())).await;
    v["data"][0].clone()
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../skein-model/tests/fixtures/zipkin/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---- third-party clients -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opentelemetry_zipkin_exporter_v2_and_v1() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let z = zipkin_url(&s);
    for mode in ["otel-v2", "otel-v1"] {
        let sent = send_with_client(&s, mode);
        let trace_id = sent["trace_id"].as_str().unwrap();
        let service = sent["service"].as_str().unwrap();

        // Zipkin API: ids, endpoints, tags and annotations as the exporter sent them.
        let spans = get_json(format!("{z}/api/v2/trace/{trace_id}")).await;
        assert_eq!(spans.as_array().unwrap().len(), 2, "{mode}: {spans:#}");
        let root = span_named(&spans, "GET /cart");
        let child = span_named(&spans, "charge card");
        assert_eq!(root["traceId"], trace_id);
        assert_eq!(root["id"], sent["root_id"]);
        assert_eq!(child["id"], sent["child_id"]);
        assert_eq!(child["parentId"], sent["root_id"]);
        assert!(root.get("parentId").is_none());
        assert_eq!(root["localEndpoint"]["serviceName"], service);
        assert_eq!(root["localEndpoint"]["ipv4"], "10.1.2.3");
        assert_eq!(root["localEndpoint"]["port"], 8080);
        assert_eq!(root["tags"]["http.status_code"], "200");
        assert_eq!(root["tags"]["cart.ratio"], "0.5");
        assert_eq!(root["tags"]["otel.scope.name"], "shop.instrumentation");
        assert_eq!(child["tags"]["error"], "card declined");
        assert_eq!(child["tags"]["zip"], "007");
        assert_eq!(child["annotations"][0]["value"], r#"{"retrying":{"attempt":2}}"#);
        assert!(root["duration"].as_u64().unwrap() >= child["duration"].as_u64().unwrap());
        if mode == "otel-v2" {
            // JSON v1 has no kind field; the v1 exporter sends no core annotations either.
            assert_eq!(root["kind"], "SERVER");
            assert_eq!(child["kind"], "CLIENT");
        }

        // Jaeger API: the same trace, with typed tags and the OTel mapping fields.
        let jt = jaeger_trace(&s, trace_id).await;
        let jroot = span_named(&jt["spans"], "GET /cart");
        let jchild = span_named(&jt["spans"], "charge card");
        assert_eq!(
            jt["processes"][jroot["processID"].as_str().unwrap()]["serviceName"],
            service
        );
        assert_eq!(
            jaeger_tag(jroot, "http.status_code"),
            Some(("int64".into(), 200.into()))
        );
        assert_eq!(jaeger_tag(jroot, "cart.gift"), Some(("bool".into(), true.into())));
        assert_eq!(jaeger_tag(jroot, "cart.ratio"), Some(("float64".into(), 0.5.into())));
        assert_eq!(jaeger_tag(jroot, "otel.scope.name").unwrap().1, "shop.instrumentation");
        assert_eq!(jaeger_tag(jchild, "zip"), Some(("string".into(), "007".into())));
        assert_eq!(jaeger_tag(jchild, "error"), Some(("bool".into(), true.into())));
        assert_eq!(
            jaeger_tag(jchild, "otel.status_description").unwrap().1,
            "card declined"
        );
        assert_eq!(jchild["references"][0]["spanID"], sent["root_id"]);
        let log = &jchild["logs"][0]["fields"];
        assert!(
            log.as_array()
                .unwrap()
                .iter()
                .any(|f| f["key"] == "event" && f["value"] == "retrying"),
            "{log:#}"
        );
        if mode == "otel-v2" {
            assert_eq!(jaeger_tag(jroot, "span.kind").unwrap().1, "server");
        }

        // Search by service and by annotationQuery.
        let found = get_json(format!("{z}/api/v2/traces?serviceName={service}&annotationQuery=error")).await;
        assert_eq!(found.as_array().unwrap().len(), 1, "{found:#}");
        assert_eq!(found[0][0]["traceId"], trace_id);
        let found = get_json(format!(
            "{z}/api/v2/traces?serviceName={service}&annotationQuery=http.status_code%3D200%20and%20cart.gift%3Dtrue"
        ))
        .await;
        assert_eq!(found.as_array().unwrap().len(), 1, "{found:#}");
        let none = get_json(format!(
            "{z}/api/v2/traces?serviceName={service}&annotationQuery=http.status_code%3D500"
        ))
        .await;
        assert_eq!(none, serde_json::json!([]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_zipkin_json_v1_json_v2_and_proto3() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let z = zipkin_url(&s);
    for mode in ["pyzipkin-v1", "pyzipkin-v2", "pyzipkin-proto"] {
        let sent = send_with_client(&s, mode);
        let trace_id = sent["trace_id"].as_str().unwrap();
        let service = sent["service"].as_str().unwrap();
        assert_eq!(trace_id.len(), 16, "py_zipkin uses 64-bit trace ids");

        let spans = get_json(format!("{z}/api/v2/trace/{trace_id}")).await;
        assert_eq!(spans.as_array().unwrap().len(), 2, "{mode}: {spans:#}");
        let root = span_named(&spans, "handle order");
        let child = span_named(&spans, "query inventory");
        assert_eq!(root["traceId"], trace_id, "64-bit ids come back as 16 hex characters");
        assert_eq!(root["id"], sent["root_id"]);
        assert_eq!(child["parentId"], sent["root_id"]);
        assert_eq!(root["kind"], "SERVER");
        assert_eq!(child["kind"], "CLIENT");
        assert_eq!(root["localEndpoint"]["serviceName"], service);
        assert_eq!(child["remoteEndpoint"]["serviceName"], "inventory-db");
        assert_eq!(child["remoteEndpoint"]["ipv4"], "10.0.0.42");
        assert_eq!(child["remoteEndpoint"]["port"], 5432);
        assert_eq!(child["tags"]["error"], "timeout");
        assert_eq!(child["tags"]["db.system"], "postgresql");
        assert_eq!(root["tags"]["order.id"], "A-17");
        assert_eq!(child["annotations"][0]["value"], "cache.miss");

        let jt = jaeger_trace(&s, trace_id).await;
        let jroot = span_named(&jt["spans"], "handle order");
        let jchild = span_named(&jt["spans"], "query inventory");
        assert_eq!(
            jaeger_tag(jroot, "http.status_code"),
            Some(("int64".into(), 201.into()))
        );
        assert_eq!(jaeger_tag(jchild, "peer.service").unwrap().1, "inventory-db");
        assert_eq!(jaeger_tag(jchild, "server.address").unwrap().1, "10.0.0.42");
        assert_eq!(
            jaeger_tag(jchild, "network.peer.port"),
            Some(("int64".into(), 5432.into()))
        );
        assert_eq!(jaeger_tag(jchild, "error"), Some(("bool".into(), true.into())));
        assert_eq!(jaeger_tag(jchild, "span.kind").unwrap().1, "client");

        // Query API: service lists, remote services, span names, autocomplete.
        let services = get_json(format!("{z}/api/v2/services")).await;
        assert!(services.as_array().unwrap().iter().any(|v| v == service), "{services}");
        let remote = get_json(format!("{z}/api/v2/remoteServices?serviceName={service}")).await;
        assert_eq!(remote, serde_json::json!(["inventory-db"]));
        let names = get_json(format!("{z}/api/v2/spans?serviceName={service}")).await;
        assert_eq!(names, serde_json::json!(["handle order", "query inventory"]));
        let found = get_json(format!(
            "{z}/api/v2/traces?remoteServiceName=inventory-db&serviceName={service}"
        ))
        .await;
        assert_eq!(found.as_array().unwrap().len(), 1);
        let found = get_json(format!(
            "{z}/api/v2/traces?serviceName={service}&annotationQuery=cache.miss"
        ))
        .await;
        assert_eq!(found.as_array().unwrap().len(), 1, "bare word matches an annotation");
        let found = get_json(format!(
            "{z}/api/v2/traces?serviceName={service}&annotationQuery=error%3Dtimeout"
        ))
        .await;
        assert_eq!(found.as_array().unwrap().len(), 1, "error=<message>");
        let found = get_json(format!("{z}/api/v2/traces?serviceName={service}&minDuration=100000000")).await;
        assert_eq!(found, serde_json::json!([]), "minDuration is in µs");
    }
    let keys = get_json(format!("{z}/api/v2/autocompleteKeys")).await;
    assert!(keys.as_array().unwrap().iter().any(|k| k == "db.system"), "{keys}");
    let values = get_json(format!("{z}/api/v2/autocompleteValues?key=db.system")).await;
    assert_eq!(values, serde_json::json!(["postgresql"]));
    let many = get_json(format!(
        "{z}/api/v2/traceMany?traceIds=ffffffffffffffff,{}",
        "a".repeat(32)
    ))
    .await;
    assert_eq!(many, serde_json::json!([]));
}

// ---- fixtures through HTTP, shared spans, dependencies -----------------------------------

/// A v2 body with fresh timestamps (search windows look at the last day), from the golden
/// fixture's shape: client and `shared` server span with the same id, plus a 64-bit trace.
fn fresh_v2_body(trace: &str) -> Vec<u8> {
    let t = now_us();
    serde_json::to_vec(&serde_json::json!([
        {"traceId": trace, "id": "a000000000000001", "kind": "SERVER", "name": "get /checkout",
         "timestamp": t, "duration": 5000, "localEndpoint": {"serviceName": "frontend"}},
        {"traceId": trace, "parentId": "a000000000000001", "id": "b000000000000002", "kind": "CLIENT",
         "name": "post /charge", "timestamp": t + 10, "duration": 3000,
         "localEndpoint": {"serviceName": "frontend"}, "remoteEndpoint": {"serviceName": "payments"}},
        {"traceId": trace, "parentId": "a000000000000001", "id": "b000000000000002", "kind": "SERVER",
         "shared": true, "name": "post /charge", "timestamp": t + 20, "duration": 2000,
         "localEndpoint": {"serviceName": "payments"}, "tags": {"error": ""}},
        {"traceId": trace, "parentId": "b000000000000002", "id": "c000000000000003", "kind": "CLIENT",
         "name": "select", "timestamp": t + 30, "duration": 500,
         "localEndpoint": {"serviceName": "payments"}, "remoteEndpoint": {"serviceName": "ledger-db"}}
    ]))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_shared_spans_gzip_and_dependencies() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let z = zipkin_url(&s);

    // Golden fixtures over HTTP: 202, with the invalid spans named in the body.
    let (status, body) = post(&s, "/api/v2/spans", Some("application/json"), None, fixture("v2.json")).await;
    assert_eq!(status, 202, "{body}");
    assert!(
        body.contains("3 span(s) rejected") && body.contains("\"xyz\""),
        "{body}"
    );
    let (status, body) = post(&s, "/api/v1/spans", Some("application/json"), None, fixture("v1.json")).await;
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("2 span(s) rejected"), "{body}");
    let (status, body) = post(
        &s,
        "/api/v2/spans",
        Some("application/x-protobuf"),
        None,
        fixture("v2.proto.bin"),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("trace_id must be 8 or 16 bytes"), "{body}");

    // The fixture's shared span: original ids in Zipkin, a distinct child span in Jaeger.
    let spans = get_json(format!("{z}/api/v2/trace/4bf92f3577b34da6a3ce929d0e0e4736")).await;
    assert_eq!(spans.as_array().unwrap().len(), 4);
    let shared: Vec<&Value> = spans
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["id"] == "b000000000000002")
        .collect();
    assert_eq!(shared.len(), 2, "client and shared server both kept: {spans:#}");
    assert!(shared
        .iter()
        .any(|s| s["shared"] == true && s["parentId"] == "a000000000000001"));
    let jt = jaeger_trace(&s, "4bf92f3577b34da6a3ce929d0e0e4736").await;
    let ids: std::collections::HashSet<&str> = jt["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["spanID"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "Jaeger sees four distinct span ids");
    // The v1 fixture's 64-bit trace, and the proto one's.
    let v1 = get_json(format!("{z}/api/v2/trace/5af7183fb1d4cf5f")).await;
    assert_eq!(v1.as_array().unwrap().len(), 5);
    let pb = get_json(format!("{z}/api/v2/trace/0af7651916cd43dd8448eb211c80319c")).await;
    assert_eq!(pb.as_array().unwrap().len(), 2);
    let many = get_json(format!(
        "{z}/api/v2/traceMany?traceIds=5af7183fb1d4cf5f,0af7651916cd43dd8448eb211c80319c,00000000000000ff"
    ))
    .await;
    assert_eq!(many.as_array().unwrap().len(), 2);

    // Fresh spans, gzip: dependencies frontend → payments → ledger-db? Only services that
    // report spans make edges: frontend → payments.
    let trace = "1234567890abcdef1234567890abcdef";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&fresh_v2_body(trace)).unwrap();
    let (status, body) = post(
        &s,
        "/api/v2/spans",
        Some("application/json"),
        Some("gzip"),
        gz.finish().unwrap(),
    )
    .await;
    assert_eq!((status, body.as_str()), (202, ""));
    let spans = get_json(format!("{z}/api/v2/trace/{trace}")).await;
    let select = span_named(&spans, "select");
    assert_eq!(
        select["parentId"], "b000000000000002",
        "child of the shared id keeps its parent id"
    );
    let server = spans.as_array().unwrap().iter().find(|s| s["shared"] == true).unwrap();
    assert_eq!(server["tags"]["error"], "true", "error tag with empty value");
    let jt = jaeger_trace(&s, trace).await;
    let jserver = jt["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| jaeger_tag(s, "zipkin.shared").is_some())
        .unwrap();
    let jselect = span_named(&jt["spans"], "select");
    assert_eq!(
        jselect["references"][0]["spanID"], jserver["spanID"],
        "in the model the server-side child hangs under the shared server span"
    );
    let end_ms = now_us() / 1000 + 1000;
    let deps = get_json(format!("{z}/api/v2/dependencies?endTs={end_ms}&lookback=3600000")).await;
    assert_eq!(
        deps,
        serde_json::json!([{"parent": "frontend", "child": "payments", "callCount": 1}]),
        "{deps:#}"
    );
    let found = get_json(format!(
        "{z}/api/v2/traces?serviceName=payments&spanName=select&limit=5"
    ))
    .await;
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0].as_array().unwrap().len(), 4);
    let remote = get_json(format!("{z}/api/v2/remoteServices?serviceName=payments")).await;
    assert_eq!(remote, serde_json::json!(["ledger-db"]));
}

// ---- errors, limits, CORS, metrics ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_limits_cors_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["zipkin.max_request_bytes=4KiB"]);
    let z = zipkin_url(&s);
    let json = Some("application/json");

    // Not JSON / not an array / not protobuf: 400 naming the problem.
    let (status, body) = post(&s, "/api/v2/spans", json, None, b"[{\"traceId\":".to_vec()).await;
    assert_eq!(status, 400);
    assert!(body.contains("invalid Zipkin JSON"), "{body}");
    let (status, body) = post(&s, "/api/v2/spans", json, None, b"{\"spans\":[]}".to_vec()).await;
    assert_eq!(status, 400);
    assert!(body.contains("expected an array of spans, got an object"), "{body}");
    let (status, body) = post(
        &s,
        "/api/v2/spans",
        Some("application/x-protobuf"),
        None,
        vec![0xff, 0xff, 0xff],
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("proto3 ListOfSpans"), "{body}");
    let (status, body) = post(&s, "/api/v1/spans", json, None, b"7".to_vec()).await;
    assert_eq!(status, 400, "{body}");

    // Every span invalid: 400 with the reason; some invalid: 202, good ones stored.
    let bad = br#"[{"traceId":"463ac35c9f6413ad","id":"a1","timestamp":1,"duration":-1}]"#.to_vec();
    let (status, body) = post(&s, "/api/v2/spans", json, None, bad).await;
    assert_eq!(status, 400);
    assert!(body.contains("duration is negative"), "{body}");
    // Also when the spans decode but the pipeline's own checks refuse them all.
    let unset = br#"[{"traceId":"463ac35c9f6413ad","id":"a1","timestamp":0},{"traceId":"463ac35c9f6413ad","id":"a2","timestamp":0}]"#.to_vec();
    let (status, body) = post(&s, "/api/v2/spans", json, None, unset).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("start time is 0"), "{body}");
    let t = now_us();
    let partial = serde_json::to_vec(&serde_json::json!([
        {"traceId": "00000000000000000000000000000abc", "id": "0000000000000001", "timestamp": t,
         "name": "good", "localEndpoint": {"serviceName": "partial-svc"}},
        {"traceId": "00000000000000000000000000000abc", "id": "0000000000000002", "timestamp": t,
         "kind": "SIDEWAYS"},
        {"traceId": "00000000000000000000000000000abc", "id": "0000000000000000", "timestamp": t}
    ]))
    .unwrap();
    let (status, body) = post(&s, "/api/v2/spans", None, None, partial).await;
    assert_eq!(status, 202, "no content type means JSON, as in Zipkin");
    assert!(
        body.contains("2 span(s) rejected; first: span #1: kind \"SIDEWAYS\""),
        "{body}"
    );
    let spans = get_json(format!("{z}/api/v2/trace/0000000000000abc")).await;
    assert_eq!(spans.as_array().unwrap().len(), 1);
    assert_eq!(spans[0]["name"], "good");

    // 415: unknown content type, thrift on v1, unknown encoding.
    let (status, body) = post(&s, "/api/v2/spans", Some("text/csv"), None, b"x".to_vec()).await;
    assert_eq!(status, 415);
    assert!(body.contains("text/csv"), "{body}");
    let (status, body) = post(&s, "/api/v1/spans", Some("application/x-thrift"), None, b"x".to_vec()).await;
    assert_eq!(status, 415);
    assert!(body.contains("thrift"), "{body}");
    let (status, _) = post(&s, "/api/v2/spans", json, Some("br"), b"[]".to_vec()).await;
    assert_eq!(status, 415);

    // 413: plain, and a small gzip that inflates past the limit.
    let (status, _) = post(&s, "/api/v2/spans", json, None, vec![b' '; 8 << 10]).await;
    assert_eq!(status, 413);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b' '; 64 << 10]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 4 << 10);
    let (status, body) = post(&s, "/api/v2/spans", json, Some("gzip"), bomb).await;
    assert_eq!(status, 413);
    assert!(body.contains("zipkin.max_request_bytes"), "{body}");

    // Query errors: bad and unknown ids, missing parameters, bad numbers.
    assert_eq!(get(format!("{z}/api/v2/trace/xyz")).await.0, 400);
    assert_eq!(get(format!("{z}/api/v2/trace/{}", "f".repeat(32))).await.0, 404);
    let (status, body) = get(format!("{z}/api/v2/spans")).await;
    assert_eq!(status, 400);
    assert!(body.contains("serviceName"), "{body}");
    let (status, body) = get(format!("{z}/api/v2/traces?limit=lots")).await;
    assert_eq!(status, 400);
    assert!(body.contains("limit"), "{body}");
    assert_eq!(get(format!("{z}/api/v2/autocompleteValues")).await.0, 400);
    let (status, body) = get(format!("{z}/health")).await;
    assert_eq!((status, body.contains("UP")), (200, true));

    // CORS preflight, for the Zipkin UI and browser reporters.
    let r = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{z}/api/v2/spans"))
        .header("origin", "http://ui.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    // The query API shares the port.
    assert_eq!(r.headers()["access-control-allow-methods"], "GET,POST,OPTIONS");

    // Metrics by protocol.
    let (_, metrics) = get(format!("{}/metrics", s.query_url())).await;
    for line in [
        "skein_spans_accepted_total{protocol=\"zipkin\"} 1",
        "skein_spans_rejected_total{protocol=\"zipkin\",reason=\"malformed\"} 1",
        "skein_spans_rejected_total{protocol=\"zipkin\",reason=\"invalid_span_id\"} 1",
        // The negative duration and the two spans with a start time of 0.
        "skein_spans_rejected_total{protocol=\"zipkin\",reason=\"invalid_time\"} 3",
        // Both 413s: the plain body (refused by its declared length) and the gzip bomb.
        "skein_requests_total{protocol=\"zipkin\",outcome=\"too_large\"} 2",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

// ---- one trace over two protocols ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_over_otlp_and_zipkin_reads_the_same_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let z = zipkin_url(&s);
    let trace = "5b8efff798038103d269b633813fc60c";
    let t_ns = now_us() * 1000;
    // The root over OTLP/HTTP JSON…
    let otlp = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "gateway"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace, "spanId": "eee19b7ec3c1b174", "name": "GET /orders", "kind": 2,
            "startTimeUnixNano": t_ns.to_string(), "endTimeUnixNano": (t_ns + 9_000_000).to_string(),
            "attributes": [{"key": "http.response.status_code", "value": {"intValue": "200"}}]
        }]}]
    }]});
    let r = reqwest::Client::new()
        .post(format!("{}/v1/traces", s.http_url()))
        .json(&otlp)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // …its child over Zipkin (a 128-bit id from B3 propagation).
    let t_us = t_ns / 1000;
    let zipkin = serde_json::json!([{
        "traceId": trace, "parentId": "eee19b7ec3c1b174", "id": "0102030405060708", "kind": "SERVER",
        "name": "list orders", "timestamp": t_us + 1000, "duration": 5000,
        "localEndpoint": {"serviceName": "orders"}, "tags": {"db.rows": "12"}
    }]);
    let (status, body) = post(&s, "/api/v2/spans", None, None, serde_json::to_vec(&zipkin).unwrap()).await;
    assert_eq!(status, 202, "{body}");

    let zspans = get_json(format!("{z}/api/v2/trace/{trace}")).await;
    let jt = jaeger_trace(&s, trace).await;
    let zids: std::collections::BTreeSet<String> = zspans
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let jids: std::collections::BTreeSet<String> = jt["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["spanID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(zids, jids);
    assert_eq!(zids.len(), 2);
    let root = span_named(&zspans, "GET /orders");
    assert_eq!(root["localEndpoint"]["serviceName"], "gateway");
    assert_eq!(root["kind"], "SERVER");
    assert_eq!(root["tags"]["http.response.status_code"], "200");
    assert_eq!(root["duration"], 9000);
    let child = span_named(&zspans, "list orders");
    assert_eq!(child["parentId"], "eee19b7ec3c1b174");
    let jchild = span_named(&jt["spans"], "list orders");
    assert_eq!(jchild["references"][0]["spanID"], "eee19b7ec3c1b174");
    assert_eq!(jaeger_tag(jchild, "db.rows"), Some(("int64".into(), 12.into())));
    let deps = get_json(format!("{z}/api/v2/dependencies?endTs={}", now_us() / 1000 + 1000)).await;
    assert_eq!(
        deps,
        serde_json::json!([{"parent": "gateway", "child": "orders", "callCount": 1}])
    );
}
