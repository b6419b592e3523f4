//! Zipkin decode→batch: one request of 1000 spans as JSON v2, proto3 and (same spans) OTLP
//! protobuf, to the model; and model → Zipkin JSON v2 for the query API. Ratios between the
//! formats are measured in the same run.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use serde_json::{json, Value};
use skein_model::otlp::pb::collector::trace::v1::ExportTraceServiceRequest;
use skein_model::zipkin::{json_v2, proto};

const SPANS: usize = 1000;

/// Deterministic Zipkin v2 spans: traces of 10 spans over 4 services, 12 tags, one annotation,
/// remote endpoints on client spans, ~2% errors.
fn zipkin_json(n: usize) -> Vec<Value> {
    let services = ["frontend", "checkout", "payments", "inventory"];
    let mut state = 42u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut out = Vec::with_capacity(n);
    let mut trace = String::new();
    let mut parent = String::new();
    for i in 0..n {
        if i % 10 == 0 {
            trace = format!("{:016x}{:016x}", next(), next());
            parent.clear();
        }
        let id = format!("{:016x}", next() | 1);
        let client = i % 2 == 1;
        let mut tags = serde_json::Map::new();
        tags.insert("http.method".into(), json!("POST"));
        tags.insert(
            "http.status_code".into(),
            json!(if next() % 50 == 0 { "500" } else { "200" }),
        );
        tags.insert("http.path".into(), json!(format!("/api/v1/items/{}", next() % 1000)));
        tags.insert(
            "http.url".into(),
            json!(format!("https://shop.example/api/v1/items/{}", next() % 1000)),
        );
        tags.insert("component".into(), json!("spring-webmvc"));
        tags.insert(
            "thread.name".into(),
            json!(format!("http-nio-8080-exec-{}", next() % 16)),
        );
        tags.insert("customer.id".into(), json!(format!("c-{}", next() % 100_000)));
        tags.insert(
            "cache.hit".into(),
            json!(if next() % 2 == 0 { "true" } else { "false" }),
        );
        tags.insert("retry.count".into(), json!((next() % 3).to_string()));
        tags.insert("ratio".into(), json!("0.25"));
        tags.insert("region".into(), json!("eu-west-1"));
        tags.insert("version".into(), json!("2.14.1"));
        if next() % 50 == 0 {
            tags.insert("error".into(), json!("upstream timed out"));
        }
        let mut span = json!({
            "traceId": trace, "id": id, "kind": if client { "CLIENT" } else { "SERVER" },
            "name": format!("post /api/v1/items/{{id}}/{}", i % 7),
            "timestamp": 1_700_000_000_000_000u64 + i as u64 * 1000, "duration": 100 + next() % 50_000,
            "localEndpoint": {"serviceName": services[i % 4], "ipv4": "10.0.0.1", "port": 8080},
            "annotations": [{"timestamp": 1_700_000_000_000_000u64 + i as u64 * 1000 + 5, "value": "wr"}],
            "tags": tags,
        });
        if client {
            span["remoteEndpoint"] = json!({"serviceName": services[(i + 1) % 4], "ipv4": "10.0.0.2", "port": 9000});
        }
        if !parent.is_empty() {
            span["parentId"] = json!(parent);
        }
        parent = id;
        out.push(span);
    }
    out
}

fn to_proto(spans: &[Value]) -> Vec<u8> {
    let list = proto::ListOfSpans {
        spans: spans
            .iter()
            .map(|s| {
                let hex = |v: &Value| skein_model::hex::decode(v.as_str().unwrap_or_default()).unwrap_or_default();
                let ep = |e: &Value| proto::PbEndpoint {
                    service_name: e["serviceName"].as_str().unwrap_or_default().into(),
                    ipv4: e["ipv4"]
                        .as_str()
                        .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
                        .map(|ip| ip.octets().to_vec())
                        .unwrap_or_default(),
                    ipv6: Vec::new(),
                    port: e["port"].as_i64().unwrap_or(0) as i32,
                };
                proto::PbSpan {
                    trace_id: hex(&s["traceId"]),
                    parent_id: hex(&s["parentId"]),
                    id: hex(&s["id"]),
                    kind: if s["kind"] == "CLIENT" { 1 } else { 2 },
                    name: s["name"].as_str().unwrap_or_default().into(),
                    timestamp: s["timestamp"].as_u64().unwrap_or(0),
                    duration: s["duration"].as_u64().unwrap_or(0),
                    local_endpoint: Some(ep(&s["localEndpoint"])),
                    remote_endpoint: s.get("remoteEndpoint").map(ep),
                    annotations: vec![proto::PbAnnotation {
                        timestamp: s["annotations"][0]["timestamp"].as_u64().unwrap_or(0),
                        value: "wr".into(),
                    }],
                    tags: s["tags"]
                        .as_object()
                        .map(|t| {
                            t.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                                .collect()
                        })
                        .unwrap_or_default(),
                    debug: false,
                    shared: false,
                }
            })
            .collect(),
    };
    list.encode_to_vec()
}

fn zipkin(c: &mut Criterion) {
    let spans = zipkin_json(SPANS);
    let json_body = serde_json::to_vec(&spans).unwrap();
    let proto_body = to_proto(&spans);
    let model = json_v2::decode(&json_body).unwrap().batch.spans;
    assert_eq!(model.len(), SPANS);
    let otlp_body = skein_model::otlp::proto::encode_request(model.iter()).encode_to_vec();
    println!(
        "zipkin: {SPANS} spans; JSON v2 {} B, proto3 {} B, OTLP protobuf {} B",
        json_body.len(),
        proto_body.len(),
        otlp_body.len()
    );

    let mut g = c.benchmark_group("zipkin decode→batch");
    g.throughput(Throughput::Elements(SPANS as u64));
    g.bench_function("json v2", |b| {
        b.iter(|| {
            let d = json_v2::decode(black_box(&json_body)).expect("decodes");
            assert!(d.rejected.is_empty());
            black_box(d.batch)
        })
    });
    g.bench_function("proto3", |b| {
        b.iter(|| {
            let d = proto::decode(black_box(&proto_body)).expect("decodes");
            assert!(d.rejected.is_empty());
            black_box(d.batch)
        })
    });
    g.bench_function("otlp proto (same spans)", |b| {
        b.iter(|| {
            let req = ExportTraceServiceRequest::decode(black_box(otlp_body.as_slice())).expect("decodes");
            black_box(skein_model::otlp::proto::decode_request(req).batch)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("zipkin encode");
    g.throughput(Throughput::Elements(SPANS as u64));
    g.bench_function("model → json v2 bytes", |b| {
        b.iter(|| black_box(serde_json::to_vec(&json_v2::encode(black_box(&model))).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, zipkin);
criterion_main!(benches);
