//! Damaged and hostile bodies for the Jaeger and Zipkin decoders (the OTLP ones are in
//! roundtrip.rs): whatever arrives, a decoder answers with spans or an error. It never panics,
//! and what it accepts is well formed. Jaeger's agent ports take thrift datagrams from anyone
//! on the network.

mod support;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use prost::Message;
use serde_json::{json, Value};
use skein_model::jaeger::convert::group_by_process;
use skein_model::jaeger::thrift::{self, Protocol};
use skein_model::jaeger::{batch_to_model, proto};
use skein_model::zipkin::{self, json_v1, json_v2};
use skein_model::{hex, AnyValue, Span, SpanKind};
use support::micro_spans::spans;
use support::*;

/// Every thrift body the spans make: both protocols, as a bare batch (HTTP) and as an agent's
/// `emitBatch` call (UDP).
fn thrift_bodies(spans: &[Span]) -> Vec<(Protocol, bool, Vec<u8>)> {
    let mut out = Vec::new();
    for (process, jspans) in group_by_process(spans) {
        for protocol in [Protocol::Binary, Protocol::Compact] {
            out.push((
                protocol,
                false,
                thrift::encode_batch(protocol, &process, &jspans, Some(1), None),
            ));
            out.push((
                protocol,
                true,
                thrift::encode_emit_batch(protocol, 1, &process, &jspans),
            ));
        }
    }
    out
}

fn micros(nanos: u64) -> u64 {
    nanos / 1000
}

/// Zipkin v1 JSON for the spans: RPC sides as `cs`/`cr` or `sr`/`ss` annotations, the remote
/// side as an `sa`/`ca` address, events as annotations and attributes as binary annotations.
fn zipkin_v1(spans: &[Span]) -> Value {
    let doc = spans.iter().map(|s| {
        let local = json!({"serviceName": s.service_name(), "ipv4": "10.0.0.1", "port": 8080});
        let remote = json!({"serviceName": "peer", "ipv6": "::1"});
        let (start, end) = (micros(s.start_unix_nano), micros(s.end_unix_nano));
        let mut annotations = Vec::new();
        let mut binary = Vec::new();
        let sides = match s.kind {
            SpanKind::Client => Some(("cs", "cr", "sa")),
            SpanKind::Server => Some(("sr", "ss", "ca")),
            _ => None,
        };
        if let Some((begin, finish, address)) = sides {
            annotations.push(json!({"timestamp": start, "value": begin, "endpoint": local}));
            annotations.push(json!({"timestamp": end, "value": finish, "endpoint": local}));
            binary.push(json!({"key": address, "value": true, "endpoint": remote}));
        } else {
            binary.push(json!({"key": "lc", "value": s.name, "endpoint": local}));
        }
        for e in &s.events {
            annotations.push(json!({"timestamp": micros(e.time_unix_nano), "value": e.name, "endpoint": local}));
        }
        for kv in &s.attributes {
            if let AnyValue::String(v) = &kv.value {
                binary.push(json!({"key": kv.key, "value": v, "endpoint": local}));
            }
        }
        let mut span = json!({
            "traceId": zipkin::trace_id_hex(&s.trace_id),
            "id": hex::encode(&s.span_id),
            "name": s.name,
            "timestamp": start,
            "duration": end - start,
            "annotations": annotations,
            "binaryAnnotations": binary,
            "debug": s.flags & 1 == 1,
        });
        if s.parent_span_id != [0; 8] {
            span["parentId"] = json!(hex::encode(&s.parent_span_id));
        }
        span
    });
    Value::Array(doc.collect())
}

/// Zipkin proto3 `ListOfSpans` for the spans (skein answers only JSON, so it has no encoder).
fn zipkin_proto3(spans: &[Span]) -> Vec<u8> {
    let endpoint = |service: &str| {
        Some(zipkin::proto::PbEndpoint {
            service_name: service.to_string(),
            ipv4: vec![10, 0, 0, 1],
            ipv6: Vec::new(),
            port: 8080,
        })
    };
    let spans = spans
        .iter()
        .map(|s| zipkin::proto::PbSpan {
            trace_id: s.trace_id.to_vec(),
            parent_id: if s.parent_span_id == [0; 8] {
                Vec::new()
            } else {
                s.parent_span_id.to_vec()
            },
            id: s.span_id.to_vec(),
            kind: s.kind as i32 % 5,
            name: s.name.clone(),
            timestamp: micros(s.start_unix_nano),
            duration: micros(s.end_unix_nano - s.start_unix_nano),
            local_endpoint: endpoint(s.service_name()),
            remote_endpoint: endpoint("peer"),
            annotations: s
                .events
                .iter()
                .map(|e| zipkin::proto::PbAnnotation {
                    timestamp: micros(e.time_unix_nano),
                    value: e.name.clone(),
                })
                .collect(),
            tags: s
                .attributes
                .iter()
                .map(|kv| (kv.key.to_string(), format!("{:?}", kv.value)))
                .collect(),
            debug: s.flags & 1 == 1,
            shared: false,
        })
        .collect();
    zipkin::proto::ListOfSpans { spans }.encode_to_vec()
}

/// A JSON document with a few subtrees replaced by scalars or small objects of the format's
/// own keys, so that many mutants still parse and reach the per-span checks.
fn grafted(doc: Value, keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        prop::sample::select(&["", "0", "00000000000000000000000000000000", "zz", "-1", "1e400"][..])
            .prop_map(Value::from),
        ".{0,8}".prop_map(Value::String),
    ];
    let replacement = scalar.prop_recursive(3, 16, 4, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(Value::Array),
            vec((prop::sample::select(keys), inner), 0..4)
                .prop_map(|kvs| Value::Object(kvs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    });
    vec((vec(any::<prop::sample::Index>(), 1..8), replacement), 1..4).prop_map(move |grafts| {
        let mut doc = doc.clone();
        for (path, replacement) in grafts {
            graft(&mut doc, &path, replacement);
        }
        doc
    })
}

const V1_KEYS: &[&str] = &[
    "traceId",
    "id",
    "parentId",
    "name",
    "timestamp",
    "duration",
    "annotations",
    "binaryAnnotations",
    "value",
    "key",
    "endpoint",
    "serviceName",
    "ipv4",
    "ipv6",
    "port",
    "type",
];
const V2_KEYS: &[&str] = &[
    "traceId",
    "id",
    "parentId",
    "name",
    "kind",
    "timestamp",
    "duration",
    "localEndpoint",
    "remoteEndpoint",
    "annotations",
    "tags",
    "value",
    "serviceName",
    "ipv4",
    "ipv6",
    "port",
    "shared",
    "debug",
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn thrift_decoders_survive_damaged_bodies(spans in spans(), damages in vec(damage(), 1..4)) {
        for (protocol, emit, body) in thrift_bodies(&spans) {
            let body = damaged(body, damages.clone());
            let batch = if emit {
                thrift::decode_emit_batch(protocol, &body)
            } else {
                thrift::decode_batch(protocol, &body)
            };
            if let Ok(b) = batch {
                check_decoded::<()>(Ok(batch_to_model(b.process, b.spans)))?;
            }
        }
    }

    #[test]
    fn thrift_decoders_survive_arbitrary_bytes(body in vec(any::<u8>(), 0..512)) {
        for protocol in [Protocol::Binary, Protocol::Compact] {
            let batches = [thrift::decode_batch(protocol, &body), thrift::decode_emit_batch(protocol, &body)];
            for b in batches.into_iter().flatten() {
                check_decoded::<()>(Ok(batch_to_model(b.process, b.spans)))?;
            }
        }
    }

    #[test]
    fn jaeger_protobuf_survives_damaged_bodies(spans in spans(), damages in vec(damage(), 1..4)) {
        for batch in proto::batches_from_model(&spans) {
            let body = damaged(proto::PostSpansRequest { batch: Some(batch) }.encode_to_vec(), damages.clone());
            if let Ok(req) = proto::PostSpansRequest::decode(body.as_slice()) {
                check_decoded::<()>(Ok(proto::decode_post_spans(req)))?;
            }
        }
    }

    #[test]
    fn zipkin_json_v2_survives_damaged_documents(spans in spans(), damages in vec(damage(), 1..4)) {
        let body = serde_json::to_vec(&json_v2::encode(&spans)).expect("a Value serialises");
        check_decoded(json_v2::decode(&damaged(body, damages)))?;
    }

    #[test]
    fn zipkin_json_v2_survives_grafted_documents(doc in spans().prop_flat_map(|s| grafted(json_v2::encode(&s), V2_KEYS))) {
        check_decoded(json_v2::decode(&serde_json::to_vec(&doc).expect("a Value serialises")))?;
    }

    #[test]
    fn zipkin_json_v1_survives_damaged_documents(spans in spans(), damages in vec(damage(), 1..4)) {
        let body = serde_json::to_vec(&zipkin_v1(&spans)).expect("a Value serialises");
        check_decoded(json_v1::decode(&damaged(body, damages)))?;
    }

    #[test]
    fn zipkin_json_v1_survives_grafted_documents(doc in spans().prop_flat_map(|s| grafted(zipkin_v1(&s), V1_KEYS))) {
        check_decoded(json_v1::decode(&serde_json::to_vec(&doc).expect("a Value serialises")))?;
    }

    #[test]
    fn zipkin_proto3_survives_damaged_bodies(spans in spans(), damages in vec(damage(), 1..4)) {
        check_decoded(zipkin::proto::decode(&damaged(zipkin_proto3(&spans), damages)))?;
    }
}

/// The seeds decode whole: otherwise the damage tests above would only ever exercise errors.
#[test]
fn undamaged_seeds_decode() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..32 {
        let spans = spans().new_tree(&mut runner).expect("a value").current();
        for (protocol, emit, body) in thrift_bodies(&spans) {
            let b = if emit {
                thrift::decode_emit_batch(protocol, &body)
            } else {
                thrift::decode_batch(protocol, &body)
            }
            .expect("thrift seed decodes");
            assert!(b.spans.iter().all(Result::is_ok), "thrift seed spans");
        }
        let v2 = json_v2::decode(&serde_json::to_vec(&json_v2::encode(&spans)).unwrap()).expect("v2 seed");
        assert_eq!(v2.batch.spans.len(), spans.len(), "v2 seed: {:?}", v2.rejected);
        let v1 = json_v1::decode(&serde_json::to_vec(&zipkin_v1(&spans)).unwrap()).expect("v1 seed");
        assert!(
            v1.rejected.is_empty() && v1.batch.spans.len() >= spans.len(),
            "v1 seed: {:?}",
            v1.rejected
        );
        let p3 = zipkin::proto::decode(&zipkin_proto3(&spans)).expect("proto3 seed");
        assert_eq!(p3.batch.spans.len(), spans.len(), "proto3 seed: {:?}", p3.rejected);
    }
}
