//! Property round trips through every Jaeger codec: model → thrift (binary, compact; bare batch
//! and agent emitBatch) → model, and model → api_v2 protobuf → model, for everything the Jaeger
//! formats can carry (µs times, the five tag types, links without attributes).

use std::sync::Arc;

use proptest::prelude::*;
use prost::Message;
use skein_model::jaeger::convert::{group_by_process, jaeger_flags};
use skein_model::jaeger::thrift::{self, Protocol};
use skein_model::jaeger::{batch_to_model, proto};
use skein_model::{AnyValue, Event, KeyValue, Link, Resource, Scope, Span, SpanKind, Status, StatusCode};

fn nonzero<const N: usize>() -> impl Strategy<Value = [u8; N]>
where
    [u8; N]: Arbitrary,
{
    any::<[u8; N]>().prop_filter("non-zero id", |b| b.iter().any(|&x| x != 0))
}

// Keys start with "k" so none collides with the tags the mapping itself uses.
fn attrs() -> impl Strategy<Value = Vec<KeyValue>> {
    let value = prop_oneof![
        ".{0,12}".prop_map(AnyValue::String),
        any::<bool>().prop_map(AnyValue::Bool),
        any::<i64>().prop_map(AnyValue::Int),
        any::<f64>()
            .prop_filter("finite", |d| d.is_finite())
            .prop_map(AnyValue::Double),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(AnyValue::Bytes),
    ];
    proptest::collection::vec(("k[a-z0-9_.]{0,8}", value).prop_map(|(k, v)| KeyValue::new(k, v)), 0..5)
}

fn micros_as_nanos(max: u64) -> impl Strategy<Value = u64> {
    (0..max).prop_map(|us| us * 1000)
}

fn span() -> impl Strategy<Value = Span> {
    (
        (
            nonzero::<16>(),
            nonzero::<8>(),
            prop_oneof![Just([0u8; 8]), nonzero::<8>()],
        ),
        ("[a-z0-9=,]{0,10}", 0..4u32, ".{0,10}", 0..6i32),
        (micros_as_nanos(1 << 50), micros_as_nanos(1 << 30), attrs()),
        (
            proptest::collection::vec(
                (micros_as_nanos(1 << 50), "[a-z ]{0,6}", attrs()).prop_map(|(t, name, attributes)| Event {
                    time_unix_nano: t,
                    name,
                    attributes,
                    dropped_attributes_count: 0,
                }),
                0..3,
            ),
            proptest::collection::vec(
                (nonzero::<16>(), nonzero::<8>()).prop_map(|(trace_id, span_id)| Link {
                    trace_id,
                    span_id,
                    ..Link::default()
                }),
                0..3,
            ),
            (0..3i32, ".{0,8}"),
        ),
        ("[a-z][a-z0-9-]{0,8}", attrs(), "[a-z.]{0,6}", "[0-9.]{0,4}"),
    )
        .prop_map(
            |(
                (trace_id, span_id, parent),
                (trace_state, flags, name, kind),
                (start, dur, attributes),
                (events, links, (code, message)),
                (service, mut res_attrs, scope_name, scope_version),
            )| {
                res_attrs.insert(0, KeyValue::string("service.name", service));
                Span {
                    trace_id,
                    span_id,
                    parent_span_id: parent,
                    trace_state,
                    flags,
                    name,
                    kind: SpanKind::from_i32(kind).unwrap(),
                    start_unix_nano: start,
                    end_unix_nano: start + dur,
                    attributes,
                    events,
                    links,
                    status: Status {
                        code: StatusCode::from_i32(code).unwrap(),
                        message,
                    },
                    resource: Arc::new(Resource {
                        attributes: res_attrs,
                        dropped_attributes_count: 0,
                    }),
                    scope: Arc::new(Scope {
                        name: scope_name,
                        version: scope_version,
                        ..Default::default()
                    }),
                    ..Span::default()
                }
            },
        )
}

/// Spans sharing some resources, as one client's batches would.
fn spans() -> impl Strategy<Value = Vec<Span>> {
    proptest::collection::vec(span(), 1..5).prop_flat_map(|spans| {
        let n = spans.len();
        (Just(spans), proptest::collection::vec(0..n, n)).prop_map(|(mut spans, owners)| {
            // Give some spans the resource of another, to exercise grouping.
            for (i, o) in owners.into_iter().enumerate() {
                if o < i {
                    spans[i].resource = spans[o].resource.clone();
                }
            }
            spans
        })
    })
}

/// What survives Jaeger: its own flag bits only.
fn expected(spans: &[Span]) -> Vec<Span> {
    let mut out: Vec<Span> = spans
        .iter()
        .cloned()
        .map(|mut s| {
            s.flags = jaeger_flags(s.flags);
            s
        })
        .collect();
    out.sort_by_key(|s| (s.span_id, s.trace_id));
    out
}

fn sorted(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by_key(|s| (s.span_id, s.trace_id));
    spans
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn thrift_batches_round_trip(spans in spans()) {
        for protocol in [Protocol::Binary, Protocol::Compact] {
            let mut back = Vec::new();
            for (i, (process, jspans)) in group_by_process(&spans).into_iter().enumerate() {
                let bytes = thrift::encode_batch(protocol, &process, &jspans, Some(i as i64), None);
                let batch = thrift::decode_batch(protocol, &bytes).expect("decodes");
                let decoded = batch_to_model(batch.process, batch.spans);
                prop_assert!(decoded.rejected.is_empty());
                back.extend(decoded.batch.spans);

                let bytes = thrift::encode_emit_batch(protocol, i as i32, &process, &jspans);
                let batch = thrift::decode_emit_batch(protocol, &bytes).expect("decodes");
                let again = batch_to_model(batch.process, batch.spans);
                prop_assert_eq!(&again.batch.spans[..], &back[back.len() - jspans.len()..]);
            }
            prop_assert_eq!(sorted(back), expected(&spans));
        }
    }

    #[test]
    fn proto_batches_round_trip(spans in spans()) {
        let mut back = Vec::new();
        for batch in proto::batches_from_model(&spans) {
            let bytes = proto::PostSpansRequest { batch: Some(batch) }.encode_to_vec();
            let req = proto::PostSpansRequest::decode(bytes.as_slice()).unwrap();
            let decoded = proto::decode_post_spans(req);
            prop_assert!(decoded.rejected.is_empty());
            back.extend(decoded.batch.spans);
        }
        prop_assert_eq!(sorted(back), expected(&spans));
    }

    /// The query service's shape: every span carries its own process, the batch none.
    #[test]
    fn proto_spans_with_own_process_round_trip(spans in spans()) {
        let batch = proto::Batch {
            spans: spans.iter().map(proto::span_from_model).collect(),
            process: None,
        };
        let decoded = proto::decode_post_spans(proto::PostSpansRequest { batch: Some(batch) });
        prop_assert!(decoded.rejected.is_empty());
        let back = decoded.batch.spans;
        // Equal processes share one resource again.
        for (i, a) in back.iter().enumerate() {
            for b in &back[i + 1..] {
                if a.resource == b.resource {
                    prop_assert!(Arc::ptr_eq(&a.resource, &b.resource));
                }
            }
        }
        prop_assert_eq!(sorted(back), expected(&spans));
    }
}
