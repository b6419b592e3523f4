//! Model spans with what every Jaeger and Zipkin format can carry: µs times, the five tag
//! types, links without attributes.

use std::sync::Arc;

use proptest::prelude::*;
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

pub fn span() -> impl Strategy<Value = Span> {
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
pub fn spans() -> impl Strategy<Value = Vec<Span>> {
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
