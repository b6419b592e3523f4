//! Golden fixtures for the Zipkin codecs (tests/fixtures/zipkin/): JSON v2, JSON v1 and proto3
//! bodies decoded into the model and compared field by field.

use skein_model::zipkin::{json_v1, json_v2, proto, shared_span_id, DEBUG_ATTR, SHARED_ATTR};
use skein_model::{find_attr, hex, AnyValue, Decoded, Span, SpanKind, StatusCode};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/zipkin/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn id8(s: &str) -> [u8; 8] {
    hex::decode_id::<8>(s).unwrap()
}

fn id16(s: &str) -> [u8; 16] {
    hex::decode_id::<16>(s).unwrap()
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a AnyValue> {
    find_attr(&s.attributes, key)
}

fn string(v: &str) -> Option<&'static AnyValue> {
    Some(Box::leak(Box::new(AnyValue::String(v.into()))))
}

fn reasons(d: &Decoded) -> Vec<String> {
    d.rejected
        .iter()
        .map(|r| format!("#{}: {}", r.index, r.error))
        .collect()
}

#[test]
fn json_v2_fixture() {
    let d = json_v2::decode(&fixture("v2.json")).unwrap();
    assert_eq!(
        reasons(&d),
        [
            "#6: id \"xyz\" is not 16 hex characters",
            "#7: required field traceId is missing",
            "#8: duration is negative or out of range",
        ]
    );
    let s = &d.batch.spans;
    assert_eq!(s.len(), 6);

    // Server root: kind, times, local endpoint → resource + local address, remote → peer attrs.
    let root = &s[0];
    assert_eq!(root.trace_id, id16("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_eq!(root.span_id, id8("a000000000000001"));
    assert!(root.is_root());
    assert_eq!(root.kind, SpanKind::Server);
    assert_eq!(root.name, "get /checkout");
    assert_eq!(root.start_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(root.duration_nano(), 150_000_000);
    assert_eq!(root.service_name(), "frontend");
    assert_eq!(attr(root, "network.local.address"), string("10.0.0.1"));
    assert_eq!(attr(root, "network.local.port"), Some(&AnyValue::Int(8080)));
    assert_eq!(attr(root, "network.peer.address"), string("2001:db8::7"));
    assert_eq!(attr(root, "network.peer.port"), Some(&AnyValue::Int(51000)));
    assert_eq!(
        attr(root, "server.address"),
        None,
        "only client/producer spans get server.*"
    );
    assert_eq!(attr(root, "http.status_code"), Some(&AnyValue::Int(200)));
    assert_eq!(attr(root, "http.method"), string("GET"));
    assert_eq!(root.events.len(), 1);
    assert_eq!(root.events[0].name, "wr");
    assert_eq!(root.events[0].time_unix_nano, 1_700_000_000_000_100_000);
    assert_eq!(root.status.code, StatusCode::Unset);

    // Client: error tag → status, typed tags, remote endpoint, OTel-style annotation.
    let client = &s[1];
    assert_eq!(client.kind, SpanKind::Client);
    assert_eq!(client.parent_span_id, root.span_id);
    assert_eq!(client.status.code, StatusCode::Error);
    assert_eq!(client.status.message, "card declined");
    assert_eq!(attr(client, "error"), None);
    assert_eq!(attr(client, "retry"), Some(&AnyValue::Bool(false)));
    assert_eq!(attr(client, "attempt"), Some(&AnyValue::Int(3)));
    assert_eq!(attr(client, "ratio"), Some(&AnyValue::Double(0.25)));
    assert_eq!(attr(client, "zip"), string("007"), "leading zero: stays text");
    assert_eq!(attr(client, "peer.service"), string("payments"));
    assert_eq!(attr(client, "network.peer.address"), string("10.0.0.2"));
    assert_eq!(attr(client, "server.address"), string("10.0.0.2"));
    assert_eq!(attr(client, "server.port"), Some(&AnyValue::Int(9000)));
    assert_eq!(client.events[0].name, "retry");
    assert_eq!(
        find_attr(&client.events[0].attributes, "attempt"),
        Some(&AnyValue::Int(2))
    );
    assert_eq!(find_attr(&client.events[0].attributes, "reason"), string("timeout"));

    // Shared server: own derived id, child of the client, otel status and scope tags.
    let server = &s[2];
    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!(server.span_id, shared_span_id(id8("b000000000000002")));
    assert_eq!(server.parent_span_id, client.span_id);
    assert_eq!(attr(server, SHARED_ATTR), Some(&AnyValue::Bool(true)));
    assert_eq!(server.service_name(), "payments");
    assert_eq!(server.status.code, StatusCode::Error);
    assert_eq!(server.status.message, "declined by issuer");
    assert_eq!(server.scope.name, "io.opentelemetry.flask");
    assert_eq!(server.scope.version, "1.2.3");
    assert_eq!(attr(server, "otel.scope.name"), None);
    assert_eq!(attr(server, "network.local.address"), string("::1"));

    // Local child of the shared server span (same request, same service): re-parented onto it.
    let local = &s[3];
    assert_eq!(local.kind, SpanKind::Internal, "\"kind\": null");
    assert_eq!(local.parent_span_id, server.span_id);
    assert_eq!(attr(local, DEBUG_ATTR), Some(&AnyValue::Bool(true)));
    assert_eq!(attr(local, "db.statement"), string("select 1"));

    // 64-bit trace id, producer/consumer, OK status, missing duration.
    let producer = &s[4];
    assert_eq!(producer.trace_id, id16("0000000000000000463ac35c9f6413ad"));
    assert_eq!(producer.kind, SpanKind::Producer);
    assert_eq!(producer.status.code, StatusCode::Ok);
    assert_eq!(attr(producer, "peer.service"), string("kafka"));
    let consumer = &s[5];
    assert_eq!(consumer.kind, SpanKind::Consumer);
    assert_eq!(consumer.duration_nano(), 0);
    assert_eq!(consumer.service_name(), "billing");

    // Spans of one service in one request share their resource.
    assert!(std::sync::Arc::ptr_eq(&root.resource, &client.resource));

    // And back to Zipkin: the original ids, `shared`, endpoints and tags come back.
    let out = json_v2::encode(s);
    let out = out.as_array().unwrap();
    assert_eq!(out[2]["id"], "b000000000000002");
    assert_eq!(out[2]["parentId"], "a000000000000001");
    assert_eq!(out[2]["shared"], true);
    assert_eq!(out[3]["parentId"], "b000000000000002");
    assert_eq!(out[3]["debug"], true);
    assert_eq!(out[1]["remoteEndpoint"]["serviceName"], "payments");
    assert_eq!(out[1]["remoteEndpoint"]["ipv4"], "10.0.0.2");
    assert_eq!(out[1]["remoteEndpoint"]["port"], 9000);
    assert_eq!(out[1]["tags"]["error"], "card declined");
    assert_eq!(out[1]["tags"]["zip"], "007");
    assert!(out[1]["tags"].get("server.address").is_none());
    assert_eq!(out[0]["localEndpoint"]["ipv4"], "10.0.0.1");
    assert_eq!(out[0]["remoteEndpoint"]["ipv6"], "2001:db8::7");
    assert_eq!(out[4]["traceId"], "463ac35c9f6413ad");
    assert_eq!(out[4]["kind"], "PRODUCER");
    assert_eq!(out[2]["tags"]["otel.scope.name"], "io.opentelemetry.flask");
}

/// `server.address`/`server.port` name the remote side only of a span that calls out; on a
/// SERVER span (an OTLP server span, say) they are its own address and stay tags.
#[test]
fn server_address_is_remote_only_for_callers() {
    let span = |kind: SpanKind| Span {
        trace_id: [1; 16],
        span_id: [2; 8],
        kind,
        start_unix_nano: 1_000_000,
        end_unix_nano: 2_000_000,
        attributes: vec![
            skein_model::KeyValue::string("server.address", "10.0.0.9"),
            skein_model::KeyValue::new("server.port", AnyValue::Int(443)),
        ],
        ..Span::default()
    };
    let out = json_v2::encode(&[span(SpanKind::Server), span(SpanKind::Client)]);
    let (server, client) = (&out[0], &out[1]);
    assert!(server.get("remoteEndpoint").is_none(), "{server}");
    assert_eq!(server["tags"]["server.port"], "443");
    assert_eq!(server["tags"]["server.address"], "10.0.0.9");
    assert_eq!(client["remoteEndpoint"]["ipv4"], "10.0.0.9");
    assert_eq!(client["remoteEndpoint"]["port"], 443);
    assert!(client["tags"].get("server.port").is_none(), "{client}");
}

#[test]
fn json_v1_fixture() {
    let d = json_v1::decode(&fixture("v1.json")).unwrap();
    assert_eq!(
        reasons(&d),
        [
            "#4: required field timestamp is missing",
            "#5: span must be a JSON object, got a string",
        ]
    );
    let s = &d.batch.spans;
    assert_eq!(s.len(), 5, "{s:#?}");

    // One v1 RPC span → a client span and a shared server span.
    let (client, server) = (&s[0], &s[1]);
    assert_eq!(client.trace_id, id16("5af7183fb1d4cf5f"));
    assert_eq!(client.kind, SpanKind::Client);
    assert_eq!(client.span_id, id8("1000000000000001"));
    assert_eq!(client.service_name(), "web");
    assert_eq!(client.start_unix_nano, 1_700_000_100_000_000_000);
    assert_eq!(client.duration_nano(), 80_000_000);
    assert_eq!(attr(client, "peer.service"), string("users"));
    assert_eq!(attr(client, "server.port"), Some(&AnyValue::Int(7000)));
    assert_eq!(attr(client, "http.path"), string("/users"));
    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!(server.service_name(), "users");
    assert_eq!(server.parent_span_id, client.span_id);
    assert_eq!(server.span_id, shared_span_id(client.span_id));
    assert_eq!(server.start_unix_nano, 1_700_000_100_005_000_000);
    assert_eq!(server.duration_nano(), 70_000_000);
    assert_eq!(attr(server, "peer.service"), string("web"));
    assert_eq!(attr(server, "network.peer.port"), Some(&AnyValue::Int(40000)));
    assert_eq!(attr(server, "rows"), Some(&AnyValue::Int(12)));
    assert_eq!(server.events.len(), 1);
    assert_eq!(server.events[0].name, "cache miss");

    // Local span named by `lc`; its `error` binary annotation is an error status.
    let local = &s[2];
    assert_eq!(local.kind, SpanKind::Internal);
    assert_eq!(local.service_name(), "users");
    assert_eq!(attr(local, "lc"), string("templates"));
    assert_eq!(local.status.code, StatusCode::Error);
    assert_eq!(local.status.message, "template missing");
    // A child of the shared id from the server's service hangs under the server span.
    assert_eq!(local.parent_span_id, server.span_id);

    // Server-only span with a parent and no timestamp: shared, timed by its annotations.
    let auth = &s[3];
    assert_eq!(auth.kind, SpanKind::Server);
    assert_eq!(attr(auth, SHARED_ATTR), Some(&AnyValue::Bool(true)));
    assert_eq!(auth.parent_span_id, id8("3000000000000003"));
    assert_eq!(auth.duration_nano(), 1_000_000);

    // Messaging: `ms` → producer, `ma` → broker as the remote endpoint.
    let publish = &s[4];
    assert_eq!(publish.kind, SpanKind::Producer);
    assert_eq!(attr(publish, "peer.service"), string("rabbitmq"));
    assert_eq!(attr(publish, "network.peer.port"), Some(&AnyValue::Int(5672)));
}

#[test]
fn proto3_fixture() {
    let d = proto::decode(&fixture("v2.proto.bin")).unwrap();
    assert_eq!(
        reasons(&d),
        [
            "#3: trace_id must be 8 or 16 bytes, got 5",
            "#4: required field id is missing",
        ]
    );
    let s = &d.batch.spans;
    assert_eq!(s.len(), 3);
    let client = &s[0];
    assert_eq!(client.trace_id, id16("0af7651916cd43dd8448eb211c80319c"));
    assert_eq!(client.span_id, id8("b7ad6b7169203331"));
    assert_eq!(client.parent_span_id, id8("00f067aa0ba902b7"));
    assert_eq!(client.kind, SpanKind::Client);
    assert_eq!(client.name, "get /inventory");
    assert_eq!(client.start_unix_nano, 1_700_000_200_000_000_000);
    assert_eq!(client.duration_nano(), 42_000_000);
    assert_eq!(client.service_name(), "shop");
    assert_eq!(attr(client, "network.local.address"), string("2001:db8::1"));
    assert_eq!(attr(client, "peer.service"), string("inventory"));
    assert_eq!(attr(client, "network.peer.address"), string("192.168.1.20"));
    assert_eq!(attr(client, "network.peer.port"), Some(&AnyValue::Int(8443)));
    assert_eq!(attr(client, "http.status_code"), Some(&AnyValue::Int(503)));
    assert_eq!(client.status.code, StatusCode::Error);
    assert_eq!(client.status.message, "upstream unavailable");
    assert_eq!(client.events[0].name, "ws");

    let server = &s[1];
    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!(server.parent_span_id, client.span_id);
    assert_eq!(server.span_id, shared_span_id(client.span_id));
    assert_eq!(server.scope.name, "inventory-lib");
    assert_eq!(server.scope.version, "0.9");
    assert_eq!(attr(server, "network.local.port"), Some(&AnyValue::Int(8443)));

    let producer = &s[2];
    assert_eq!(producer.trace_id, id16("463ac35c9f6413ad"));
    assert_eq!(producer.kind, SpanKind::Producer);
    assert_eq!(attr(producer, DEBUG_ATTR), Some(&AnyValue::Bool(true)));
    assert_eq!(producer.duration_nano(), 10_000);

    // Proto garbage is a whole-body error.
    assert!(proto::decode(b"\xff\xff\xff").is_err());
}
