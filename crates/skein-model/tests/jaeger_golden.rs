//! Golden fixtures: Jaeger payloads written by third-party encoders (Apache Thrift's Python
//! library and Google's protobuf runtime, see tests/python/jaeger_fixtures.py), decoded by our
//! codecs and compared field by field with the model they must become. Our thrift writer must
//! reproduce the thrift files byte for byte.

use std::sync::Arc;

use prost::Message;
use skein_model::jaeger::convert::LINK_REF_TYPE;
use skein_model::jaeger::thrift::{self, Protocol};
use skein_model::jaeger::{batch_to_model, proto};
use skein_model::{AnyValue, Decoded, Event, KeyValue, Link, Resource, Span, SpanKind, Status, StatusCode};

const START_US: u64 = 1_700_000_000_123_456;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/jaeger/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn id16(high: u64, low: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&high.to_be_bytes());
    id[8..].copy_from_slice(&low.to_be_bytes());
    id
}

fn id8(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

/// The model every fixture must decode to.
fn expected() -> Vec<Span> {
    let trace = id16(0x0102030405060708, 0xffff_ffff_ffff_fffe);
    let resource = Arc::new(Resource {
        attributes: vec![
            KeyValue::string("service.name", "fixture-svc"),
            KeyValue::string("host.name", "h1"),
            KeyValue::new("cpus", AnyValue::Int(8)),
        ],
        dropped_attributes_count: 0,
    });
    let root = Span {
        trace_id: trace,
        span_id: id8(0x0a),
        flags: 1,
        name: "root-op".into(),
        kind: SpanKind::Server,
        start_unix_nano: START_US * 1000,
        end_unix_nano: (START_US + 2500) * 1000,
        attributes: vec![
            KeyValue::string("s", "text ✓"),
            KeyValue::new("d", AnyValue::Double(1.5)),
            KeyValue::new("b", AnyValue::Bool(true)),
            KeyValue::new("l", AnyValue::Int(-42)),
            KeyValue::new("bin", AnyValue::Bytes(vec![0x00, 0xff])),
        ],
        events: vec![Event {
            time_unix_nano: (START_US + 100) * 1000,
            name: "started".into(),
            attributes: vec![KeyValue::string("k", "v")],
            dropped_attributes_count: 0,
        }],
        status: Status {
            code: StatusCode::Ok,
            message: String::new(),
        },
        resource: resource.clone(),
        ..Span::default()
    };
    let child = Span {
        trace_id: trace,
        span_id: id8(0x0b),
        parent_span_id: id8(0x0a),
        trace_state: "k=v".into(),
        flags: 2,
        name: "child-op".into(),
        kind: SpanKind::Client,
        start_unix_nano: (START_US + 500) * 1000,
        end_unix_nano: (START_US + 1500) * 1000,
        links: vec![Link {
            trace_id: id16(0, 0x99),
            span_id: id8(0x0f),
            attributes: vec![KeyValue::string(LINK_REF_TYPE, "follows_from")],
            ..Link::default()
        }],
        status: Status {
            code: StatusCode::Error,
            message: "boom".into(),
        },
        resource: resource.clone(),
        scope: Arc::new(skein_model::Scope {
            name: "lib".into(),
            version: "2.0".into(),
            ..Default::default()
        }),
        ..Span::default()
    };
    let short = Span {
        trace_id: id16(0, 0x77),
        span_id: id8(0x0c),
        parent_span_id: id8(0x0e),
        name: "short-id".into(),
        kind: SpanKind::Producer,
        start_unix_nano: START_US * 1000,
        end_unix_nano: START_US * 1000,
        links: vec![Link {
            trace_id: id16(0, 0x55),
            span_id: id8(0x0d),
            // A CHILD_OF reference into another trace.
            attributes: vec![KeyValue::string(LINK_REF_TYPE, "child_of")],
            ..Link::default()
        }],
        resource,
        ..Span::default()
    };
    vec![root, child, short]
}

fn check(decoded: Decoded, what: &str) {
    assert!(decoded.rejected.is_empty(), "{what}: rejected {:?}", decoded.rejected);
    let got = decoded.batch.spans;
    let want = expected();
    assert_eq!(got.len(), want.len(), "{what}: span count");
    for (g, w) in got.iter().zip(&want) {
        // Field by field, so a failure names the field.
        let name = &w.name;
        assert_eq!(g.trace_id, w.trace_id, "{what} {name}: trace_id");
        assert_eq!(g.span_id, w.span_id, "{what} {name}: span_id");
        assert_eq!(g.parent_span_id, w.parent_span_id, "{what} {name}: parent_span_id");
        assert_eq!(g.trace_state, w.trace_state, "{what} {name}: trace_state");
        assert_eq!(g.flags, w.flags, "{what} {name}: flags");
        assert_eq!(g.name, w.name, "{what} {name}: name");
        assert_eq!(g.kind, w.kind, "{what} {name}: kind");
        assert_eq!(g.start_unix_nano, w.start_unix_nano, "{what} {name}: start");
        assert_eq!(g.end_unix_nano, w.end_unix_nano, "{what} {name}: end");
        assert_eq!(g.attributes, w.attributes, "{what} {name}: attributes");
        assert_eq!(g.events, w.events, "{what} {name}: events");
        assert_eq!(g.links, w.links, "{what} {name}: links");
        assert_eq!(g.status, w.status, "{what} {name}: status");
        assert_eq!(g.resource, w.resource, "{what} {name}: resource");
        assert_eq!(g.scope, w.scope, "{what} {name}: scope");
        assert_eq!(g, w, "{what} {name}: whole span");
    }
    // One resource for the batch, shared.
    assert!(
        Arc::ptr_eq(&got[0].resource, &got[2].resource),
        "{what}: shared resource"
    );
}

#[test]
fn thrift_batch_binary_and_compact() {
    for (file, protocol) in [
        ("batch.binary.thrift", Protocol::Binary),
        ("batch.compact.thrift", Protocol::Compact),
    ] {
        let bytes = fixture(file);
        let batch = thrift::decode_batch(protocol, &bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(batch.seq_no, None);
        assert_eq!(batch.stats, None);
        assert_eq!(batch.process.service_name, "fixture-svc");
        let spans: Vec<_> = batch.spans.iter().cloned().map(Result::unwrap).collect();
        // Our writer produces the same bytes as Apache Thrift's.
        let again = thrift::encode_batch(protocol, &batch.process, &spans, None, None);
        assert!(again == bytes, "{file}: our encoding differs from the fixture");
        check(batch_to_model(batch.process, batch.spans), file);
    }
}

#[test]
fn agent_emit_batch_binary_and_compact() {
    for (file, protocol) in [
        ("emit_batch.binary.thrift", Protocol::Binary),
        ("emit_batch.compact.thrift", Protocol::Compact),
    ] {
        let bytes = fixture(file);
        let batch = thrift::decode_emit_batch(protocol, &bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        let spans: Vec<_> = batch.spans.iter().cloned().map(Result::unwrap).collect();
        // Apache's client sends emitBatch as a oneway call with sequence id 0, like ours.
        let again = thrift::encode_emit_batch(protocol, 0, &batch.process, &spans);
        assert!(again == bytes, "{file}: our encoding differs from the fixture");
        check(batch_to_model(batch.process, batch.spans), file);
        // The other protocol's reader refuses it with a reason.
        let other = match protocol {
            Protocol::Binary => Protocol::Compact,
            Protocol::Compact => Protocol::Binary,
        };
        let err = thrift::decode_emit_batch(other, &bytes).unwrap_err();
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn protobuf_post_spans_request() {
    let bytes = fixture("post_spans.pb");
    let req = proto::PostSpansRequest::decode(bytes.as_slice()).expect("fixture decodes");
    check(proto::decode_post_spans(req.clone()), "post_spans.pb");
    // Re-encoding what we decoded gives the same bytes (field numbers and types match).
    assert!(req.encode_to_vec() == bytes, "post_spans.pb: re-encoding differs");
}

/// Every strict prefix of a fixture is an error, never a panic or a partial batch.
#[test]
fn truncated_fixtures_error_cleanly() {
    for (file, protocol, envelope) in [
        ("batch.binary.thrift", Protocol::Binary, false),
        ("batch.compact.thrift", Protocol::Compact, false),
        ("emit_batch.binary.thrift", Protocol::Binary, true),
        ("emit_batch.compact.thrift", Protocol::Compact, true),
    ] {
        let bytes = fixture(file);
        for n in 0..bytes.len() {
            let r = if envelope {
                thrift::decode_emit_batch(protocol, &bytes[..n])
            } else {
                thrift::decode_batch(protocol, &bytes[..n])
            };
            let e = r.expect_err(&format!("{file} cut at {n} decoded"));
            assert!(e.offset <= n, "{file} cut at {n}: offset {} past the end", e.offset);
        }
    }
}

/// A cut inside a span's tag names the whole field path and the byte offset.
#[test]
fn errors_name_the_field_path() {
    let bytes = fixture("batch.binary.thrift");
    // The child span's first tag key ("error") starts after its marker; cut in its middle.
    let at = bytes
        .windows(5)
        .position(|w| w == b"error")
        .expect("tag key in fixture")
        + 2;
    let e = thrift::decode_batch(Protocol::Binary, &bytes[..at]).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "Batch.spans[1].tags[0].key: truncated: string needs 5 bytes, 2 left (at byte {})",
            at - 2
        )
    );
}

/// Flipping bytes of the fixtures never panics; it either decodes or errors.
#[test]
fn mutated_fixtures_never_panic() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for (file, protocol) in [
        ("emit_batch.binary.thrift", Protocol::Binary),
        ("emit_batch.compact.thrift", Protocol::Compact),
    ] {
        let bytes = fixture(file);
        for _ in 0..3000 {
            let mut b = bytes.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % b.len();
                b[i] = next() as u8;
            }
            if let Ok(batch) = thrift::decode_emit_batch(protocol, &b) {
                let _ = batch_to_model(batch.process, batch.spans);
            }
        }
    }
    let bytes = fixture("post_spans.pb");
    for _ in 0..3000 {
        let mut b = bytes.clone();
        let i = (next() as usize) % b.len();
        b[i] = next() as u8;
        if let Ok(req) = proto::PostSpansRequest::decode(b.as_slice()) {
            let _ = proto::decode_post_spans(req);
        }
    }
}
