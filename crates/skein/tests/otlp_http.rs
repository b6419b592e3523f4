//! OTLP/HTTP and gRPC receivers against the real binary: every documented response, OTLP JSON
//! edge cases, encodings, CORS, and the query API's error shapes.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{eventually, hex, otlp_request as request, Server};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    std::array::from_fn(|_| fastrand::u8(1..=255))
}

fn span(trace: [u8; 16], id: [u8; 8], parent: Option<[u8; 8]>, name: &str) -> Span {
    Span {
        attributes: vec![KeyValue {
            key: "http.response.status_code".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(200)),
            }),
            ..Default::default()
        }],
        ..common::server_span(trace, id, parent, name, now_ns() - 5_000_000)
    }
}

async fn post(s: &Server, ctype: &str, encoding: Option<&str>, body: Vec<u8>) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .post(format!("{}/v1/traces", s.http_url()))
        .header("content-type", ctype);
    if let Some(e) = encoding {
        r = r.header("content-encoding", e);
    }
    r.body(body).send().await.unwrap()
}

async fn get_json(url: String) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn span_count(s: &Server, trace: &[u8]) -> Option<usize> {
    let (status, v) = get_json(format!("{}/api/traces/{}", s.query_url(), hex(trace))).await;
    (status == 200).then(|| v["data"][0]["spans"].as_array().map_or(0, Vec::len))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_json_encodings_partial_success_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["otlp.max_request_bytes=64KiB"]);

    // Protobuf, plain: 200 with an empty protobuf response, and queryable at once.
    let t1 = rand_bytes::<16>();
    let body = request("proto-svc", vec![span(t1, rand_bytes(), None, "GET /a")]).encode_to_vec();
    let r = post(&s, "application/x-protobuf", None, body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-protobuf");
    let resp = ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
    assert!(resp.partial_success.is_none());
    assert_eq!(
        span_count(&s, &t1).await,
        Some(1),
        "acknowledged span must be queryable immediately"
    );

    // gzip and zstd bodies.
    let t2 = rand_bytes::<16>();
    let raw = request("proto-svc", vec![span(t2, rand_bytes(), None, "GET /gz")]).encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    assert_eq!(
        post(&s, "application/x-protobuf", Some("gzip"), gz.finish().unwrap())
            .await
            .status(),
        200
    );
    let t3 = rand_bytes::<16>();
    let raw = request("proto-svc", vec![span(t3, rand_bytes(), None, "GET /zstd")]).encode_to_vec();
    let z = zstd::encode_all(&raw[..], 3).unwrap();
    assert_eq!(post(&s, "application/x-protobuf", Some("zstd"), z).await.status(), 200);
    assert_eq!(span_count(&s, &t2).await, Some(1));
    assert_eq!(span_count(&s, &t3).await, Some(1));

    // Partial success: one good span, a zero trace id, a short span id, end before start.
    let good = rand_bytes::<16>();
    let mut zero = span([0; 16], rand_bytes(), None, "zero");
    zero.trace_id = vec![0; 16];
    let mut short = span(rand_bytes(), rand_bytes(), None, "short");
    short.span_id = vec![1, 2, 3];
    let mut backwards = span(rand_bytes(), rand_bytes(), None, "backwards");
    backwards.end_time_unix_nano = backwards.start_time_unix_nano - 1;
    let body = request(
        "partial-svc",
        vec![span(good, rand_bytes(), None, "ok"), zero, short, backwards],
    )
    .encode_to_vec();
    let r = post(&s, "application/x-protobuf", None, body).await;
    assert_eq!(r.status(), 200);
    let ps = ExportTraceServiceResponse::decode(r.bytes().await.unwrap())
        .unwrap()
        .partial_success
        .unwrap();
    assert_eq!(ps.rejected_spans, 3);
    assert!(
        ps.error_message.contains("span #1: trace id is all zeros"),
        "{}",
        ps.error_message
    );
    assert_eq!(
        span_count(&s, &good).await,
        Some(1),
        "the good span of a partial batch is kept"
    );

    // Undecodable protobuf → 400 with a google.rpc.Status body naming the problem.
    let r = post(&s, "application/x-protobuf", None, vec![0xff, 0xff, 0xff]).await;
    assert_eq!(r.status(), 400);
    assert!(String::from_utf8_lossy(&r.bytes().await.unwrap()).contains("invalid OTLP protobuf"));

    // Bad JSON → 400 with a JSON Status.
    let r = post(&s, "application/json", None, b"{\"resourceSpans\": [".to_vec()).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], 3);
    assert!(v["message"].as_str().unwrap().contains("invalid OTLP JSON"), "{v}");

    // Unsupported content type → 415; unsupported encoding → 415.
    assert_eq!(post(&s, "text/plain", None, b"hello".to_vec()).await.status(), 415);
    let text = common::metrics(&s).await;
    let series = "skein_requests_total{protocol=\"otlp_http\",outcome=\"unsupported_media_type\"}";
    assert_eq!(common::metric(&text, series), Some(1.0), "{text}");
    assert_eq!(
        post(&s, "application/x-protobuf", Some("br"), vec![1]).await.status(),
        415
    );

    // Too large → 413, both plain and as a small gzip that inflates past the limit.
    assert_eq!(
        post(&s, "application/x-protobuf", None, vec![0; 65 * 1024])
            .await
            .status(),
        413
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 1 << 20]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 64 * 1024);
    assert_eq!(
        post(&s, "application/x-protobuf", Some("gzip"), bomb).await.status(),
        413
    );
    // In OTLP's error shape, naming the limit.
    let r = post(&s, "application/json", None, vec![b' '; 65 * 1024]).await;
    assert_eq!(r.status(), 413);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["message"].as_str().unwrap().contains("otlp.max_request_bytes"), "{v}");
    // A declared length over the limit is refused before the body is sent (the server used to
    // wait for it); a chunked body with no declared length is cut off at the limit.
    let declared = raw_http(
        s.http,
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n{}",
    );
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    assert!(declared.contains("otlp.max_request_bytes"), "{declared}");
    let mut chunked = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n10400\r\n".to_vec();
    chunked.extend(vec![b' '; 0x10400]);
    chunked.extend(b"\r\n0\r\n\r\n");
    let cut = raw_http(s.http, &chunked);
    assert!(cut.starts_with("HTTP/1.1 413"), "{cut}");

    // CORS preflight from a browser SDK.
    let r = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{}/v1/traces", s.http_url()))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    // Only what the port answers: a GET here is a 405.
    assert_eq!(r.headers()["access-control-allow-methods"], "POST,OPTIONS");

    // Self-metrics count what happened, by protocol and reason.
    let metrics = reqwest::get(format!("{}/metrics", s.query_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("skein_spans_accepted_total{protocol=\"otlp_http_protobuf\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("skein_spans_rejected_total{protocol=\"otlp_http_protobuf\",reason=\"invalid_trace_id\"} 1")
    );
    assert!(metrics.contains("skein_wal_fsync_seconds_bucket"));
    assert!(s.stop(), "clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_edge_cases() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let trace = hex(&rand_bytes::<16>());
    let root = hex(&rand_bytes::<8>());
    let child = hex(&rand_bytes::<8>());
    let start = now_ns() - 1_000_000_000;
    // Integers as strings and as numbers, enum names and numbers, snake_case field names, nulls,
    // unknown fields, arrays and kvlists, base64 bytes.
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}], "unknown": 1},
        "scopeSpans": [{"scope": {"name": "lib", "version": "1.2"}, "spans": [
            {"traceId": trace, "spanId": root, "name": "root", "kind": "SPAN_KIND_SERVER",
             "startTimeUnixNano": start.to_string(), "endTimeUnixNano": (start + 2_000_000).to_string(),
             "attributes": [
                {"key": "i", "value": {"intValue": "42"}},
                {"key": "i2", "value": {"intValue": 7}},
                {"key": "d", "value": {"doubleValue": 1.5}},
                {"key": "b", "value": {"boolValue": true}},
                {"key": "arr", "value": {"arrayValue": {"values": [{"stringValue": "x"}, {"intValue": "1"}]}}},
                {"key": "kv", "value": {"kvlistValue": {"values": [{"key": "inner", "value": {"stringValue": "y"}}]}}},
                {"key": "bytes", "value": {"bytesValue": "AQID"}}
             ],
             "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
             "events": [{"timeUnixNano": start + 10, "name": "exception", "attributes": null}],
             "links": null, "droppedAttributesCount": 0, "futureField": {"x": 1}},
            {"trace_id": trace, "span_id": child, "parent_span_id": root, "name": "child", "kind": 3,
             "start_time_unix_nano": start + 1000, "end_time_unix_nano": start + 5000, "status": null}
        ]}]
    }]});
    let r = post(&s, "application/json", None, serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.json::<Value>().await.unwrap(), json!({}));

    let (status, v) = get_json(format!("{}/api/v3/traces/{trace}", s.query_url())).await;
    assert_eq!(status, 200);
    let spans = v["result"]["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(spans.len(), 2);
    let r = spans.iter().find(|s| s["name"] == "root").unwrap();
    assert_eq!(r["kind"], 2);
    assert_eq!(r["status"], json!({"code": 2, "message": "boom"}));
    let attr = |k: &str| {
        r["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == k)
            .unwrap()["value"]
            .clone()
    };
    assert_eq!(attr("i"), json!({"intValue": "42"}));
    assert_eq!(attr("i2"), json!({"intValue": "7"}));
    assert_eq!(attr("d"), json!({"doubleValue": 1.5}));
    assert_eq!(attr("b"), json!({"boolValue": true}));
    assert_eq!(
        attr("arr"),
        json!({"arrayValue": {"values": [{"stringValue": "x"}, {"intValue": "1"}]}})
    );
    assert_eq!(
        attr("kv"),
        json!({"kvlistValue": {"values": [{"key": "inner", "value": {"stringValue": "y"}}]}})
    );
    assert_eq!(attr("bytes"), json!({"bytesValue": "AQID"}));
    let c = spans.iter().find(|s| s["name"] == "child").unwrap();
    assert_eq!(c["parentSpanId"], json!(root));
    assert_eq!(c["startTimeUnixNano"], json!((start + 1000).to_string()));

    // A JSON span with a bad id is rejected alone, reported in partialSuccess.
    let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "not-hex", "spanId": root, "name": "bad", "startTimeUnixNano": "1", "endTimeUnixNano": "2"},
        {"traceId": hex(&rand_bytes::<16>()), "spanId": hex(&rand_bytes::<8>()), "name": "good",
         "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
    ]}]}]});
    let r = post(&s, "application/json", None, serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["partialSuccess"]["rejectedSpans"], "1");
    assert!(
        v["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("traceId is neither hex nor base64"),
        "{v}"
    );

    // bytesValue must be base64: anything else is a 400 naming it, as protobuf's JSON parser
    // answers (it used to be stored as the text's bytes).
    let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": hex(&rand_bytes::<16>()), "spanId": hex(&rand_bytes::<8>()), "name": "bytes",
         "startTimeUnixNano": "1", "endTimeUnixNano": "2",
         "attributes": [{"key": "b", "value": {"bytesValue": "not base64!"}}]}
    ]}]}]});
    let r = post(&s, "application/json", None, serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["message"].as_str().unwrap().contains("\"not base64!\" is not base64"),
        "{v}"
    );

    // An empty request is fine.
    assert_eq!(post(&s, "application/json", None, b"{}".to_vec()).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_gives_retry_advice_on_http_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    // With no room for pending blocks, every write is refused: deterministic overload.
    let s = Server::start(dir.path(), &["store.max_pending_blocks=0"]);
    let body = request("busy", vec![span(rand_bytes(), rand_bytes(), None, "x")]).encode_to_vec();
    let r = post(&s, "application/x-protobuf", None, body).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");

    let mut client = TraceServiceClient::connect(s.grpc_url()).await.unwrap();
    let err = client
        .export(request("busy", vec![span(rand_bytes(), rand_bytes(), None, "x")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        !err.details().is_empty(),
        "RESOURCE_EXHAUSTED carries RetryInfo so SDKs retry"
    );
    let metrics = reqwest::get(format!("{}/metrics", s.query_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("skein_backpressure_events_total{protocol=\"otlp_grpc\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_partial_success_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &[
            "limits.max_spans_per_trace=3",
            "limits.max_attribute_value_length=8",
            "limits.max_attribute_key_length=25",
            "otlp.max_request_bytes=64KiB",
        ],
    );
    let mut client = TraceServiceClient::connect(s.grpc_url()).await.unwrap();
    let t = rand_bytes::<16>();
    let mut spans: Vec<Span> = (0..5).map(|i| span(t, rand_bytes(), None, &format!("s{i}"))).collect();
    for key in ["long", "a.key.of.twenty.six.bytes!"] {
        spans[0].attributes.push(KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("0123456789abcdef".into())),
            }),
            ..Default::default()
        });
    }
    let mut bad = span(t, rand_bytes(), None, "bad");
    bad.parent_span_id = vec![1; 5];
    spans.push(bad);
    let resp = client.export(request("grpc-svc", spans)).await.unwrap().into_inner();
    let ps = resp.partial_success.unwrap();
    assert_eq!(
        ps.rejected_spans, 3,
        "two over the per-trace limit and one bad parent id: {}",
        ps.error_message
    );
    let (status, v) = get_json(format!("{}/api/traces/{}", s.query_url(), hex(&t))).await;
    assert_eq!(status, 200);
    let spans = v["data"][0]["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 3);
    let long = spans
        .iter()
        .flat_map(|s| s["tags"].as_array().unwrap())
        .find(|t| t["key"] == "long")
        .expect("truncated attribute kept");
    assert_eq!(long["value"], "01234567");
    // A key over the limit is not cut (it would be another key): its attribute is dropped.
    assert!(
        spans
            .iter()
            .flat_map(|s| s["tags"].as_array().unwrap())
            .all(|t| t["key"] != "a.key.of.twenty.six.bytes!"),
        "{spans:?}"
    );
    let (status, v3) = get_json(format!("{}/api/v3/traces/{}", s.query_url(), hex(&t))).await;
    assert_eq!(status, 200);
    let s0 = v3["result"]["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "s0")
        .expect("span s0");
    assert_eq!(s0["droppedAttributesCount"], 1, "{s0}");

    // Names are capped too, resources included, whatever the protocol: a service name or an
    // operation of a megabyte would be listed, searched and drawn by every UI.
    let t2 = rand_bytes::<16>();
    let mut named = span(t2, rand_bytes(), None, "operation-name");
    named.events.push(opentelemetry_proto::tonic::trace::v1::span::Event {
        name: "event-name".into(),
        time_unix_nano: named.start_time_unix_nano,
        ..Default::default()
    });
    client.export(request("service-name", vec![named])).await.unwrap();
    let zipkin = serde_json::json!([{
        "traceId": "00000000000000000000000000000abc", "id": "0000000000000abc",
        "name": "zipkin-operation", "timestamp": now_ns() / 1000, "duration": 5,
        "localEndpoint": {"serviceName": "zipkin-service"}
    }]);
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v2/spans", s.addr("zipkin_http")))
        .json(&zipkin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let (_, v) = get_json(format!("{}/api/services", s.query_url())).await;
    let mut services: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    services.sort();
    assert_eq!(services, ["grpc-svc", "service-", "zipkin-s"]);
    let (_, v) = get_json(format!("{}/api/traces/{}", s.query_url(), hex(&t2))).await;
    let stored = &v["data"][0]["spans"][0];
    assert_eq!(stored["operationName"], "operatio");
    assert_eq!(stored["logs"][0]["fields"][0]["value"], "event-na");
    let (_, v) = get_json(format!("{}/api/services/zipkin-s/operations", s.query_url())).await;
    assert_eq!(v["data"], serde_json::json!(["zipkin-o"]));

    // A span id sent twice for one trace in one request: the second copy is rejected, so no
    // search can match a copy the trace does not show.
    let (t4, id) = (rand_bytes::<16>(), rand_bytes::<8>());
    let first = span(t4, id, None, "once");
    let mut again = first.clone();
    again.end_time_unix_nano = again.start_time_unix_nano + 400_000_000;
    let resp = client
        .export(request("dup", vec![first.clone(), again]))
        .await
        .unwrap()
        .into_inner();
    let ps = resp.partial_success.expect("the copy is rejected");
    assert_eq!(ps.rejected_spans, 1);
    assert!(ps.error_message.contains("sent twice"), "{}", ps.error_message);
    let (_, v) = get_json(format!("{}/api/traces/{}", s.query_url(), hex(&t4))).await;
    let stored = v["data"][0]["spans"].as_array().unwrap();
    assert_eq!(stored.len(), 1);
    let first_us = (first.end_time_unix_nano - first.start_time_unix_nano) / 1000;
    assert_eq!(stored[0]["duration"], first_us);
    let (_, v) = get_json(format!("{}/api/traces?service=dup&minDuration=300ms", s.query_url())).await;
    assert_eq!(v["data"], json!([]), "a search matched the rejected copy");

    // Times left at 0 (never set) are refused: stored, the span would sit at 1970.
    let mut unset = span(rand_bytes(), rand_bytes(), None, "unset");
    unset.start_time_unix_nano = 0;
    unset.end_time_unix_nano = 0;
    let resp = client
        .export(request("grpc-svc", vec![unset]))
        .await
        .unwrap()
        .into_inner();
    let ps = resp.partial_success.expect("refused");
    assert_eq!(ps.rejected_spans, 1);
    assert!(ps.error_message.contains("start time is 0"), "{}", ps.error_message);

    // A resource is capped in attributes like a span (128 by default), and its service name
    // is kept wherever it was sent: here last of 200.
    let t3 = rand_bytes::<16>();
    let mut crowded = request("crowd", vec![span(t3, rand_bytes(), None, "op")]);
    let resource = crowded.resource_spans[0].resource.as_mut().unwrap();
    let tags = (0..199).map(|i| KeyValue {
        key: format!("r{i}"),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue("v".into())),
        }),
        ..Default::default()
    });
    resource.attributes.splice(0..0, tags);
    client.export(crowded).await.unwrap();
    let (_, v) = get_json(format!("{}/api/traces/{}", s.query_url(), hex(&t3))).await;
    let process = v["data"][0]["processes"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(process["serviceName"], "crowd");
    let tags = process["tags"].as_array().unwrap();
    assert_eq!(tags.len(), 127, "128 attributes kept, service.name among them");
    assert_eq!(tags[126]["key"], "r126");

    // Over otlp.max_request_bytes, plain or once decompressed: RESOURCE_EXHAUSTED without retry
    // advice, which OTLP exporters do not retry (tonic said OUT_OF_RANGE, which they retry).
    let mut big = span(rand_bytes(), rand_bytes(), None, "big");
    big.attributes.push(KeyValue {
        key: "payload".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue("x".repeat(200 << 10))),
        }),
        ..Default::default()
    });
    let mut gzip_client = TraceServiceClient::connect(s.grpc_url())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    for (what, result) in [
        ("plain", client.export(request("grpc-svc", vec![big.clone()])).await),
        ("gzip", gzip_client.export(request("grpc-svc", vec![big])).await),
    ] {
        let err = result.expect_err(what);
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{what}: {err:?}");
        assert!(err.message().contains("otlp.max_request_bytes"), "{what}: {err:?}");
        assert!(err.details().is_empty(), "{what}: no RetryInfo");
    }
    // tonic refuses those before skein's handler: still counted.
    let text = common::metrics(&s).await;
    assert_eq!(
        common::metric(
            &text,
            "skein_requests_total{protocol=\"otlp_grpc\",outcome=\"too_large\"}"
        ),
        Some(2.0),
        "{text}"
    );
}

/// Sends raw bytes as the Export request body, to prove how malformed input is answered.
struct RawCodec;
struct RawEncoder;
struct ResponseDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_malformed_request_is_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let channel = tonic::transport::Endpoint::from_shared(s.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/opentelemetry.proto.collector.trace.v1.TraceService/Export");
    let err = grpc
        .unary(tonic::Request::new(vec![0xff, 0xff, 0xff]), path.clone(), RawCodec)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    // A well-formed body still works on the same connection.
    let ok = request("raw", vec![span(rand_bytes(), rand_bytes(), None, "fine")]).encode_to_vec();
    grpc.ready().await.unwrap();
    let resp = grpc
        .unary(tonic::Request::new(ok), path.clone(), RawCodec)
        .await
        .unwrap();
    assert!(resp.into_inner().partial_success.is_none());
    // Every span refused: a request that stored nothing is not a partial success.
    let zero_trace = request("raw", vec![span([0; 16], rand_bytes(), None, "bad")]).encode_to_vec();
    grpc.ready().await.unwrap();
    let resp = grpc
        .unary(tonic::Request::new(zero_trace), path, RawCodec)
        .await
        .unwrap();
    assert_eq!(resp.into_inner().partial_success.map(|p| p.rejected_spans), Some(1));
    let text = common::metrics(&s).await;
    for outcome in ["bad_request", "ok", "rejected"] {
        let series = format!("skein_requests_total{{protocol=\"otlp_grpc\",outcome=\"{outcome}\"}}");
        assert_eq!(common::metric(&text, &series), Some(1.0), "{series}\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_api_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let q = s.query_url();
    let (status, v) = get_json(format!("{q}/api/traces/not-a-trace-id")).await;
    assert_eq!(status, 400);
    assert_eq!(v["errors"][0]["code"], 400);
    assert!(v["errors"][0]["msg"].as_str().unwrap().contains("invalid trace id"));
    let (status, v) = get_json(format!("{q}/api/traces/{}", hex(&rand_bytes::<16>()))).await;
    assert_eq!(status, 404);
    assert_eq!(v["errors"][0]["msg"], "trace not found");
    // The all-zero id, which ingest rejects, is a 400 in every API (gRPC api_v2 already said so).
    let (status, v) = get_json(format!("{q}/api/traces/0")).await;
    assert_eq!(status, 400);
    assert!(v["errors"][0]["msg"].as_str().unwrap().contains("all zeros"), "{v}");
    let (status, v) = get_json(format!("{q}/api/v3/traces/{}", "0".repeat(32))).await;
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("all zeros"), "{v}");
    let r = reqwest::get(format!("http://{}/api/v2/trace/0", s.addr("zipkin_http")))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (status, v) = get_json(format!("{q}/api/v3/traces/{}", hex(&rand_bytes::<16>()))).await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["httpCode"], 404);
    let (status, v) = get_json(format!("{q}/api/v3/traces?query.serviceName=x")).await;
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("startTimeMin"), "{v}");
    let (status, v) = get_json(format!("{q}/api/traces?service=x&minDuration=fast")).await;
    assert_eq!(status, 400);
    assert!(v["errors"][0]["msg"].as_str().unwrap().contains("minDuration"), "{v}");
    // More traces than query.max_traces, in each API's error shape; 0 means "not set".
    let (status, v) = get_json(format!("{q}/api/traces?service=x&limit=1501")).await;
    assert_eq!(status, 400);
    let msg = v["errors"][0]["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("limit=1501 asks for more traces than query.max_traces=1500"),
        "{msg}"
    );
    let (status, v) = get_json(format!("{q}/api/traces?service=x&limit=0")).await;
    assert_eq!((status, v["data"].as_array().map(Vec::len)), (200, Some(0)));
    let (status, v) = get_json(format!(
        "{q}/api/v3/trace-summaries?query.serviceName=x&query.startTimeMin=2026-01-01T00:00:00Z&query.startTimeMax=2026-01-02T00:00:00Z&query.searchDepth=100000"
    ))
    .await;
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("query.max_traces=1500"),
        "{v}"
    );
    let (status, v) = get_json(format!("{q}/api/ui/search?service=x&limit=99999")).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("query.max_traces=1500"), "{v}");
    let r = reqwest::get(format!(
        "http://{}/api/v2/traces?serviceName=x&limit=1501",
        s.addr("zipkin_http")
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("query.max_traces=1500"));
    let (status, v) = get_json(format!("{q}/api/traces?service=x&minDuration=10ms&maxDuration=1ms")).await;
    assert_eq!(status, 400);
    assert!(
        v["errors"][0]["msg"]
            .as_str()
            .unwrap()
            .contains("greater than maxDuration"),
        "{v}"
    );
    let (status, _) = get_json(format!(
        "{q}/api/traces?service=x&start=99999999999999999&end=99999999999999999"
    ))
    .await;
    assert_eq!(status, 200, "times past the year 5000 find nothing");
    for path in ["api/dependencies", "api/ui/dependencies"] {
        let (status, _) = get_json(format!("{q}/{path}?endTs=18446744073709&lookback=18446744073709")).await;
        assert_eq!(status, 200, "{path}: times past u64 nanoseconds saturate");
    }
    // A multi-trace lookup names each id it did not find, as Jaeger does.
    let missing = hex(&rand_bytes::<16>());
    let (status, v) = get_json(format!("{q}/api/traces?traceID={missing}")).await;
    assert_eq!(status, 200);
    assert_eq!(v["data"], serde_json::json!([]));
    assert_eq!(
        v["errors"],
        serde_json::json!([{"msg": "trace not found", "traceID": missing}])
    );
    // api_v3 GetTrace's optional parameters are checked like Jaeger's gateway checks them.
    let id = hex(&rand_bytes::<16>());
    for (params, needle) in [
        ("start_time=garbage", "startTime"),
        ("startTime=2026-01-02T00:00:00Z&endTime=2026-01-01T00:00:00Z", "before"),
        ("raw_traces=maybe", "rawTraces"),
    ] {
        let (status, v) = get_json(format!("{q}/api/v3/traces/{id}?{params}")).await;
        assert_eq!(status, 400, "{params}");
        assert!(v["error"]["message"].as_str().unwrap().contains(needle), "{v}");
    }
    let (status, _) = get_json(format!(
        "{q}/api/v3/traces/{id}?start_time=2026-01-01T00:00:00Z&end_time=2026-01-02T00:00:00Z&raw_traces=true"
    ))
    .await;
    assert_eq!(status, 404, "well-formed parameters, unknown trace");
    // A bare number is no duration (Jaeger refuses it; it used to be read as seconds).
    let (status, v) = get_json(format!("{q}/api/traces?service=x&minDuration=500")).await;
    assert_eq!(status, 400);
    assert!(v["errors"][0]["msg"].as_str().unwrap().contains("missing unit"), "{v}");
    let (status, _) = get_json(format!("{q}/api/traces?service=x&minDuration=1h30m&lookback=1h30m")).await;
    assert_eq!(status, 200);
    // Durations too large for any clock: a clear 400, not a dropped connection (they panicked).
    for param in ["minDuration", "maxDuration", "lookback"] {
        let (status, v) = get_json(format!("{q}/api/traces?service=x&{param}=99999999999999999h")).await;
        assert_eq!(status, 400, "{param}");
        let msg = v["errors"][0]["msg"].as_str().unwrap();
        assert!(msg.contains(param) && msg.contains("too large"), "{msg}");
    }
    let (status, v) = get_json(format!(
        "{q}/api/v3/traces?query.serviceName=x&query.startTimeMin=2026-01-01T00:00:00Z&query.startTimeMax=2026-01-02T00:00:00Z&query.durationMin=99999999999999999h"
    ))
    .await;
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("too large"), "{v}");
    let (status, _) = get_json(format!("{q}/api/operations")).await;
    assert_eq!(status, 400);
    let r = reqwest::get(format!("{q}/health")).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(format!("{q}/ready")).await.unwrap();
    assert_eq!(r.status(), 200);
    // Still answering after all that.
    eventually("services", Duration::from_secs(5), || async {
        let (st, v) = get_json(format!("{q}/api/services")).await;
        (st == 200 && v["data"].is_array()).then_some(())
    })
    .await;
}

/// Sends `request` as raw bytes and returns what the server answers (at most 30 s of waiting).
fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The server may answer and close before it has read everything sent.
    let _ = stream.write_all(request);
    let mut answer = [0u8; 4096];
    let n = stream.read(&mut answer).expect("an answer within 30 s");
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

/// A wrong method gets a 405 that says so, with `Allow`, in each API's own error shape.
#[tokio::test]
async fn wrong_methods_are_explained_in_each_apis_shape() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let zipkin = format!("http://{}", s.addr("zipkin_http"));
    for (method, url, pick) in [
        ("POST", format!("{}/api/traces", s.query_url()), "/errors/0/msg"),
        ("POST", format!("{}/api/v3/traces", s.query_url()), "/error/message"),
        ("DELETE", format!("{}/api/ui/search", s.query_url()), "/error"),
        ("GET", format!("{}/v1/traces", s.http_url()), ""),
        ("PUT", format!("{zipkin}/api/v2/spans"), ""),
        // The Jaeger collector's /api/traces is not the query API: plain text like its errors.
        ("GET", format!("http://{}/api/traces", s.addr("jaeger_thrift_http")), ""),
        // UI pages are for reading.
        ("DELETE", format!("{}/search", s.query_url()), ""),
    ] {
        let r = client.request(method.parse().unwrap(), &url).send().await.unwrap();
        assert_eq!(r.status(), 405, "{method} {url}");
        let allow = r.headers()["allow"].to_str().unwrap().to_string();
        let body = r.text().await.unwrap();
        let msg = if pick.is_empty() {
            assert!(body.starts_with("method "), "{method} {url}: plain text, got {body}");
            body
        } else {
            let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"));
            v.pointer(pick).and_then(Value::as_str).unwrap_or_default().to_string()
        };
        assert!(
            msg.contains(&format!("method {method} is not allowed")) && msg.contains(&allow),
            "{method} {url}: {msg}"
        );
    }
    assert!(s.stop());
}

/// `/api/v3/traces` answers newest first, like every other search: each trace's resource
/// spans in turn, not every trace's spans of one service merged into one resource (which put
/// an older trace of the first service before a newer one of another).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_search_answers_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let base = now_ns() - 60_000_000_000;
    // Newest to oldest: a (service x), b (y), c (x).
    let (a, b, c) = (rand_bytes::<16>(), rand_bytes::<16>(), rand_bytes::<16>());
    let one = |trace, start| common::server_span(trace, rand_bytes(), None, "op", start);
    common::post_otlp(&client, &s, "x", vec![one(a, base + 2_000_000_000), one(c, base)]).await;
    common::post_otlp(&client, &s, "y", vec![one(b, base + 1_000_000_000)]).await;
    let url = format!(
        "{}/api/v3/traces?query.startTimeMin=2000-01-01T00:00:00Z&query.startTimeMax=2100-01-01T00:00:00Z",
        s.query_url()
    );
    let (status, v) = get_json(url).await;
    assert_eq!(status, 200, "{v}");
    let order: Vec<&str> = v["result"]["resourceSpans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["scopeSpans"].as_array().unwrap())
        .flat_map(|ss| ss["spans"].as_array().unwrap())
        .map(|span| span["traceId"].as_str().unwrap())
        .collect();
    assert_eq!(order, [hex(&a), hex(&b), hex(&c)], "{v}");
    assert!(s.stop());
}

/// `skein_query_duration_seconds`: a search is one `search` observation, the traces it fetches
/// included (they were counted as `trace_by_id` lookups, and left out of the search's time);
/// a lookup by id is one `trace_by_id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_is_timed_once_with_its_traces() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let traces: Vec<[u8; 16]> = (0..3).map(|_| rand_bytes()).collect();
    let spans = traces.iter().map(|t| span(*t, rand_bytes(), None, "op")).collect();
    common::post_otlp(&client, &s, "timed", spans).await;
    let (status, v) = get_json(format!("{}/api/traces?service=timed&limit=3", s.query_url())).await;
    assert_eq!((status, v["data"].as_array().map(Vec::len)), (200, Some(3)));
    let count = |text: &str, kind: &str| {
        common::metric(text, &format!("skein_query_duration_seconds_count{{kind=\"{kind}\"}}")).unwrap_or(0.0)
    };
    let text = common::metrics(&s).await;
    assert_eq!(
        (count(&text, "search"), count(&text, "trace_by_id")),
        (1.0, 0.0),
        "{text}"
    );
    let (status, _) = get_json(format!("{}/api/traces/{}", s.query_url(), hex(&traces[0]))).await;
    assert_eq!(status, 200);
    let text = common::metrics(&s).await;
    assert_eq!(
        (count(&text, "search"), count(&text, "trace_by_id")),
        (1.0, 1.0),
        "{text}"
    );
    assert!(s.stop());
}
