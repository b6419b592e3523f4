//! Property tests for the OTLP codecs: protobuf and JSON round trips of the span model,
//! per-span rejection of malformed spans, and robustness of the JSON decoder on arbitrary input.

use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use prost::Message;
use serde_json::Value;
use skein_model::otlp::pb::collector::trace::v1::ExportTraceServiceRequest;
use skein_model::otlp::pb::trace::v1 as pb_trace;
use skein_model::otlp::{json, proto, wire_decode};
use skein_model::*;

mod support;
use support::*;

// ---- strategies for the model -------------------------------------------------------------

/// Any Unicode (control characters and NUL included) or short ASCII.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z._]{0,8}",
        vec(any::<char>(), 0..6).prop_map(String::from_iter),
        Just(String::new()),
    ]
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        Just(i64::MIN),
        Just(i64::MAX),
        Just(0),
        Just(-1),
        // Beyond 2^53, where a JSON number would lose precision.
        Just((1i64 << 53) + 1),
    ]
}

fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        prop::num::f64::ANY,
        Just(0.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::MIN_POSITIVE),
        Just(f64::EPSILON),
        Just(5e-324),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::NAN),
        Just(1.5),
        Just(1e21),
    ]
}

fn time() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        Just(0),
        Just(u64::MAX),
        1_600_000_000_000_000_000u64..1_800_000_000_000_000_000u64,
    ]
}

fn count() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), any::<u32>(), Just(u32::MAX)]
}

fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        Just(AnyValue::Empty),
        text().prop_map(AnyValue::String),
        any::<bool>().prop_map(AnyValue::Bool),
        int().prop_map(AnyValue::Int),
        double().prop_map(AnyValue::Double),
        vec(any::<u8>(), 0..10).prop_map(AnyValue::Bytes),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(AnyValue::Array),
            vec((text(), inner).prop_map(|(key, value)| KeyValue::new(key, value)), 0..4).prop_map(AnyValue::KvList),
        ]
    })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    vec(
        (text(), any_value()).prop_map(|(key, value)| KeyValue::new(key, value)),
        0..4,
    )
}

fn event() -> impl Strategy<Value = Event> {
    (time(), text(), attributes(), count()).prop_map(|(time_unix_nano, name, attributes, dropped_attributes_count)| {
        Event {
            time_unix_nano,
            name,
            attributes,
            dropped_attributes_count,
        }
    })
}

fn link() -> impl Strategy<Value = Link> {
    (
        any::<[u8; 16]>(),
        any::<[u8; 8]>(),
        text(),
        attributes(),
        count(),
        count(),
    )
        .prop_map(
            |(trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags)| Link {
                trace_id,
                span_id,
                trace_state,
                attributes,
                dropped_attributes_count,
                flags,
            },
        )
}

fn trace_id() -> impl Strategy<Value = TraceId> {
    any::<[u8; 16]>().prop_filter("trace id must not be zero", |id| *id != [0; 16])
}

fn span_id() -> impl Strategy<Value = SpanId> {
    any::<[u8; 8]>().prop_filter("span id must not be zero", |id| *id != [0; 8])
}

fn parent_id() -> impl Strategy<Value = SpanId> {
    prop_oneof![Just([0u8; 8]), span_id()]
}

fn kind() -> impl Strategy<Value = SpanKind> {
    (0i32..6).prop_map(|k| SpanKind::from_i32(k).expect("0..6 are span kinds"))
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::default()),
        (
            (0i32..3).prop_map(|c| StatusCode::from_i32(c).expect("0..3 are status codes")),
            text()
        )
            .prop_map(|(code, message)| Status { code, message }),
    ]
}

/// `(start, end)` with `end >= start`, including equal times and the extremes.
fn times() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        (time(), time()).prop_map(|(a, b)| (a.min(b), a.max(b))),
        time().prop_map(|t| (t, t)),
        (time(), 0u64..1_000_000_000).prop_map(|(t, d)| (t, t.saturating_add(d))),
    ]
}

/// A valid span, with a default resource and scope (the callers attach shared ones).
fn span() -> impl Strategy<Value = Span> {
    let ids = (trace_id(), span_id(), parent_id(), text(), count());
    let body = (text(), kind(), times(), attributes(), count(), status());
    let children = (vec(event(), 0..3), count(), vec(link(), 0..3), count());
    (ids, body, children).prop_map(
        |(
            (trace_id, span_id, parent_span_id, trace_state, flags),
            (name, kind, (start_unix_nano, end_unix_nano), attributes, dropped_attributes_count, status),
            (events, dropped_events_count, links, dropped_links_count),
        )| Span {
            trace_id,
            span_id,
            parent_span_id,
            trace_state,
            flags,
            name,
            kind,
            start_unix_nano,
            end_unix_nano,
            attributes,
            dropped_attributes_count,
            events,
            dropped_events_count,
            links,
            dropped_links_count,
            status,
            resource: Arc::default(),
            scope: Arc::default(),
        },
    )
}

/// Resource number `i` of a pool. The `pool.index` attribute keeps the resources of one pool
/// distinct by value, so grouping by value and grouping by `Arc` agree.
fn resource(i: usize) -> impl Strategy<Value = Arc<Resource>> {
    (attributes(), count()).prop_map(move |(mut attributes, dropped_attributes_count)| {
        attributes.insert(0, KeyValue::new("pool.index", AnyValue::Int(i as i64)));
        Arc::new(Resource {
            attributes,
            dropped_attributes_count,
        })
    })
}

/// Scope number `i` of a pool (its name starts with `scope-{i}/`, keeping the pool distinct).
fn scope(i: usize) -> impl Strategy<Value = Arc<Scope>> {
    (text(), text(), attributes(), count()).prop_map(move |(name, version, attributes, dropped_attributes_count)| {
        Arc::new(Scope {
            name: format!("scope-{i}/{name}"),
            version,
            attributes,
            dropped_attributes_count,
        })
    })
}

fn pool<T: std::fmt::Debug, S: Strategy<Value = T>>(max: usize, item: fn(usize) -> S) -> impl Strategy<Value = Vec<T>> {
    (1..=max).prop_flat_map(move |n| (0..n).map(item).collect::<Vec<_>>())
}

/// Spans whose resources and scopes come from small pools of shared `Arc`s, in any order
/// (neighbours often share a resource, sometimes a resource comes back after another one).
fn spans() -> impl Strategy<Value = Vec<Span>> {
    (
        pool(3, resource),
        pool(3, scope),
        vec(
            (span(), any::<prop::sample::Index>(), any::<prop::sample::Index>()),
            0..8,
        ),
    )
        .prop_map(|(resources, scopes, parts)| {
            parts
                .into_iter()
                .map(|(mut s, r, sc)| {
                    s.resource = r.get(&resources).clone();
                    s.scope = sc.get(&scopes).clone();
                    s
                })
                .collect()
        })
}

/// Spans as a request holds them: each resource once, each scope once within its resource.
fn grouped_spans() -> impl Strategy<Value = Vec<Span>> {
    (
        pool(3, resource),
        pool(3, scope),
        vec(vec(vec(span(), 0..3), 1..3), 1..4),
    )
        .prop_map(|(resources, scopes, blocks)| {
            let mut out = Vec::new();
            for (resource, scope_blocks) in resources.iter().zip(blocks) {
                for (scope, spans) in scopes.iter().zip(scope_blocks) {
                    for mut s in spans {
                        s.resource = resource.clone();
                        s.scope = scope.clone();
                        out.push(s);
                    }
                }
            }
            out
        })
}

// ---- comparison ------------------------------------------------------------------------------

/// How two doubles are compared: NaN always equals NaN (OTLP/JSON has a single "NaN").
type F64Eq = fn(f64, f64) -> bool;

/// Bit for bit (so `-0.0` differs from `0.0`), except that any NaN equals any NaN.
fn exact_f64(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

/// Doubles survive OTLP JSON bit for bit: the workspace enables serde_json's `float_roundtrip`
/// (its default parser is off by an ULP or two for about a third of all doubles).
fn json_f64(expected: f64, actual: f64) -> bool {
    exact_f64(expected, actual)
}

fn same_value(eq: F64Eq, a: &AnyValue, b: &AnyValue) -> bool {
    match (a, b) {
        (AnyValue::Double(x), AnyValue::Double(y)) => eq(*x, *y),
        (AnyValue::Array(x), AnyValue::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(eq, x, y))
        }
        (AnyValue::KvList(x), AnyValue::KvList(y)) => same_attrs(eq, x, y),
        _ => a == b,
    }
}

fn same_attrs(eq: F64Eq, a: &[KeyValue], b: &[KeyValue]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.key == y.key && same_value(eq, &x.value, &y.value))
}

fn check_attrs(eq: F64Eq, what: &str, expected: &[KeyValue], actual: &[KeyValue]) -> Result<(), TestCaseError> {
    prop_assert!(
        same_attrs(eq, expected, actual),
        "{what} differ:\n expected {expected:?}\n   actual {actual:?}"
    );
    Ok(())
}

fn check_resource(eq: F64Eq, expected: &Resource, actual: &Resource) -> Result<(), TestCaseError> {
    check_attrs(eq, "resource attributes", &expected.attributes, &actual.attributes)?;
    prop_assert_eq!(expected.dropped_attributes_count, actual.dropped_attributes_count);
    Ok(())
}

fn check_scope(eq: F64Eq, expected: &Scope, actual: &Scope) -> Result<(), TestCaseError> {
    prop_assert_eq!(&expected.name, &actual.name);
    prop_assert_eq!(&expected.version, &actual.version);
    check_attrs(eq, "scope attributes", &expected.attributes, &actual.attributes)?;
    prop_assert_eq!(expected.dropped_attributes_count, actual.dropped_attributes_count);
    Ok(())
}

/// Field by field, resource and scope by value.
fn check_span(eq: F64Eq, expected: &Span, actual: &Span) -> Result<(), TestCaseError> {
    prop_assert_eq!(expected.trace_id, actual.trace_id);
    prop_assert_eq!(expected.span_id, actual.span_id);
    prop_assert_eq!(expected.parent_span_id, actual.parent_span_id);
    prop_assert_eq!(&expected.trace_state, &actual.trace_state);
    prop_assert_eq!(expected.flags, actual.flags);
    prop_assert_eq!(&expected.name, &actual.name);
    prop_assert_eq!(expected.kind, actual.kind);
    prop_assert_eq!(expected.start_unix_nano, actual.start_unix_nano);
    prop_assert_eq!(expected.end_unix_nano, actual.end_unix_nano);
    check_attrs(eq, "span attributes", &expected.attributes, &actual.attributes)?;
    prop_assert_eq!(expected.dropped_attributes_count, actual.dropped_attributes_count);
    prop_assert_eq!(expected.events.len(), actual.events.len());
    for (e, a) in expected.events.iter().zip(&actual.events) {
        prop_assert_eq!(e.time_unix_nano, a.time_unix_nano);
        prop_assert_eq!(&e.name, &a.name);
        check_attrs(eq, "event attributes", &e.attributes, &a.attributes)?;
        prop_assert_eq!(e.dropped_attributes_count, a.dropped_attributes_count);
    }
    prop_assert_eq!(expected.dropped_events_count, actual.dropped_events_count);
    prop_assert_eq!(expected.links.len(), actual.links.len());
    for (e, a) in expected.links.iter().zip(&actual.links) {
        prop_assert_eq!(e.trace_id, a.trace_id);
        prop_assert_eq!(e.span_id, a.span_id);
        prop_assert_eq!(&e.trace_state, &a.trace_state);
        check_attrs(eq, "link attributes", &e.attributes, &a.attributes)?;
        prop_assert_eq!(e.dropped_attributes_count, a.dropped_attributes_count);
        prop_assert_eq!(e.flags, a.flags);
    }
    prop_assert_eq!(expected.dropped_links_count, actual.dropped_links_count);
    prop_assert_eq!(&expected.status, &actual.status);
    check_resource(eq, &expected.resource, &actual.resource)?;
    check_scope(eq, &expected.scope, &actual.scope)?;
    Ok(())
}

fn check_spans(eq: F64Eq, expected: &[Span], actual: &[Span]) -> Result<(), TestCaseError> {
    prop_assert_eq!(expected.len(), actual.len(), "span count");
    for (i, (e, a)) in expected.iter().zip(actual).enumerate() {
        check_span(eq, e, a).map_err(|err| TestCaseError::fail(format!("span #{i}: {err}")))?;
    }
    Ok(())
}

/// The order the JSON encoder emits spans in: grouped by resource (first appearance), then by
/// scope within the resource (first appearance), otherwise in input order. Pools are distinct
/// by value, so `Arc` identity is the grouping key.
fn json_group_order(spans: &[Span]) -> Vec<Span> {
    let first = |same: &dyn Fn(&Span) -> bool| spans.iter().position(same).expect("the span itself matches");
    let mut out = spans.to_vec();
    // Stable: spans of one resource and scope keep their relative order.
    out.sort_by_cached_key(|s| {
        let resource = first(&|o| Arc::ptr_eq(&o.resource, &s.resource));
        let scope = first(&|o| Arc::ptr_eq(&o.resource, &s.resource) && Arc::ptr_eq(&o.scope, &s.scope));
        (resource, scope)
    });
    out
}

// ---- codec helpers --------------------------------------------------------------------------

fn proto_round_trip(spans: &[Span]) -> Decoded {
    let bytes = proto::encode_request(spans).encode_to_vec();
    let req = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("prost decodes what it encoded");
    proto::decode_request(req)
}

fn wire_request(spans: &[Span]) -> Vec<u8> {
    let mut bytes = Vec::new();
    skein_model::otlp::wire::export_request(spans, &mut bytes);
    bytes
}

/// Both protobuf decoders on the same bytes: the generated structs then `proto::decode_request`,
/// and `wire_decode` straight into the model. Their spans and rejections must agree.
fn both_protobuf_decoders(bytes: &[u8]) -> Result<(Decoded, Decoded), TestCaseError> {
    let req = ExportTraceServiceRequest::decode(bytes).expect("prost decodes what it encoded");
    let reference = proto::decode_request(req);
    let direct = wire_decode::decode_request(bytes).map_err(|e| TestCaseError::fail(format!("wire_decode: {e}")))?;
    Ok((reference, direct))
}

fn json_round_trip(spans: &[Span]) -> Decoded {
    let bytes = serde_json::to_vec(&json::encode_traces_data(spans)).expect("a Value serialises");
    json::decode_request(&bytes).expect("the decoder accepts what the encoder wrote")
}

// ---- 1. protobuf round trip ---------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn protobuf_round_trip_is_identity(spans in spans()) {
        let decoded = proto_round_trip(&spans);
        prop_assert!(decoded.rejected.is_empty(), "rejected: {:?}", decoded.rejected);
        check_spans(exact_f64, &spans, &decoded.batch.spans)?;
    }

    #[test]
    fn protobuf_read_straight_into_the_model_is_identity(spans in spans()) {
        let bytes = wire_request(&spans);
        let (reference, direct) = both_protobuf_decoders(&bytes)?;
        prop_assert!(direct.rejected.is_empty(), "rejected: {:?}", direct.rejected);
        check_spans(exact_f64, &spans, &direct.batch.spans)?;
        check_spans(exact_f64, &reference.batch.spans, &direct.batch.spans)?;
    }
}

// ---- 2. JSON round trip -------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Spans already grouped as a request holds them come back in the same order.
    #[test]
    fn json_round_trip_is_identity(spans in grouped_spans()) {
        let decoded = json_round_trip(&spans);
        prop_assert!(decoded.rejected.is_empty(), "rejected: {:?}", decoded.rejected);
        check_spans(json_f64, &spans, &decoded.batch.spans)?;
    }

    /// Interleaved resources and scopes are regrouped by the JSON encoder (unlike the
    /// protobuf one, which only merges neighbours); apart from that order, nothing changes.
    #[test]
    fn json_round_trip_of_interleaved_spans_keeps_every_span(spans in spans()) {
        let decoded = json_round_trip(&spans);
        prop_assert!(decoded.rejected.is_empty(), "rejected: {:?}", decoded.rejected);
        check_spans(json_f64, &json_group_order(&spans), &decoded.batch.spans)?;
    }
}

proptest! {
    #![proptest_config(config())]

    /// Fails today: serde_json is built without `float_roundtrip`, so e.g. 1.9587319971411894e-45
    /// comes back as 1.9587319971411897e-45. Enabling the feature in the workspace fixes it.
    #[test]
    fn json_round_trip_keeps_doubles_bit_exact(d in double()) {
        let span = Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            attributes: vec![KeyValue::new("d", AnyValue::Double(d))],
            ..Span::default()
        };
        let decoded = json_round_trip(std::slice::from_ref(&span));
        check_spans(exact_f64, std::slice::from_ref(&span), &decoded.batch.spans)?;
    }
}

#[test]
fn json_round_trip_of_extreme_scalars() {
    let values = [
        AnyValue::Int(i64::MIN),
        AnyValue::Int(i64::MAX),
        AnyValue::Double(f64::MAX),
        AnyValue::Double(-0.0),
        AnyValue::Double(5e-324),
        AnyValue::Double(f64::NEG_INFINITY),
        AnyValue::Double(f64::NAN),
        AnyValue::Bytes(Vec::new()),
        AnyValue::Bytes(vec![0, 0xff, 0xfe]),
        AnyValue::Empty,
        AnyValue::Array(vec![AnyValue::Empty, AnyValue::Array(Vec::new())]),
        AnyValue::KvList(vec![KeyValue::new("", AnyValue::Empty)]),
    ];
    let span = Span {
        trace_id: [1; 16],
        span_id: [2; 8],
        start_unix_nano: u64::MAX,
        end_unix_nano: u64::MAX,
        attributes: values
            .iter()
            .enumerate()
            .map(|(i, v)| KeyValue::new(i.to_string(), v.clone()))
            .collect(),
        ..Span::default()
    };
    let decoded = json_round_trip(std::slice::from_ref(&span));
    assert!(decoded.rejected.is_empty());
    check_spans(exact_f64, std::slice::from_ref(&span), &decoded.batch.spans).unwrap();
}

// ---- 3. invalid spans are rejected one at a time ------------------------------------------

/// What is wrong with a generated span (at most one thing, so the error is determined).
#[derive(Debug, Clone)]
enum Defect {
    TraceIdLength(usize),
    ZeroTraceId,
    SpanIdLength(usize),
    ZeroSpanId,
    ParentIdLength(usize),
    EndBeforeStart { start: u64, end: u64 },
    Kind(i32),
    StatusCode(i32),
    LinkTraceIdLength(usize),
    LinkSpanIdLength(usize),
}

fn bad_len(good: usize, allow_zero: bool) -> impl Strategy<Value = usize> {
    (usize::from(!allow_zero)..40).prop_filter("the right length is not a defect", move |n| *n != good)
}

fn defect() -> impl Strategy<Value = Defect> {
    prop_oneof![
        bad_len(16, true).prop_map(Defect::TraceIdLength),
        Just(Defect::ZeroTraceId),
        bad_len(8, true).prop_map(Defect::SpanIdLength),
        Just(Defect::ZeroSpanId),
        // An empty parent id means "root", which is valid.
        bad_len(8, false).prop_map(Defect::ParentIdLength),
        (any::<u64>(), any::<u64>())
            .prop_filter("end must be before start", |(s, e)| e < s)
            .prop_map(|(start, end)| Defect::EndBeforeStart { start, end }),
        prop_oneof![6i32..100, Just(i32::MAX), i32::MIN..0].prop_map(Defect::Kind),
        prop_oneof![3i32..100, Just(i32::MAX), i32::MIN..0].prop_map(Defect::StatusCode),
        bad_len(16, true).prop_map(Defect::LinkTraceIdLength),
        bad_len(8, true).prop_map(Defect::LinkSpanIdLength),
    ]
}

fn with_defect(mut s: pb_trace::Span, defect: &Defect, fill: u8) -> (pb_trace::Span, SpanError) {
    let error = match *defect {
        Defect::TraceIdLength(n) => {
            s.trace_id = vec![fill; n];
            SpanError::TraceIdLength(n)
        }
        Defect::ZeroTraceId => {
            s.trace_id = vec![0; 16];
            SpanError::ZeroTraceId
        }
        Defect::SpanIdLength(n) => {
            s.span_id = vec![fill; n];
            SpanError::SpanIdLength(n)
        }
        Defect::ZeroSpanId => {
            s.span_id = vec![0; 8];
            SpanError::ZeroSpanId
        }
        Defect::ParentIdLength(n) => {
            s.parent_span_id = vec![fill; n];
            SpanError::ParentIdLength(n)
        }
        Defect::EndBeforeStart { start, end } => {
            s.start_time_unix_nano = start;
            s.end_time_unix_nano = end;
            SpanError::EndBeforeStart { start, end }
        }
        Defect::Kind(k) => {
            s.kind = k;
            SpanError::Kind(k)
        }
        Defect::StatusCode(c) => {
            let message = s.status.take().map(|st| st.message).unwrap_or_default();
            s.status = Some(pb_trace::Status { message, code: c });
            SpanError::StatusCode(c)
        }
        Defect::LinkTraceIdLength(n) => {
            let index = s.links.len();
            s.links.push(pb_trace::span::Link {
                trace_id: vec![fill; n],
                span_id: vec![fill; 8],
                ..Default::default()
            });
            SpanError::link_id_length(index, "trace id", 16, n)
        }
        Defect::LinkSpanIdLength(n) => {
            let index = s.links.len();
            s.links.push(pb_trace::span::Link {
                trace_id: vec![fill; 16],
                span_id: vec![fill; n],
                ..Default::default()
            });
            SpanError::link_id_length(index, "span id", 8, n)
        }
    };
    (s, error)
}

/// One span of a mixed request: valid (maybe with its root parent spelled as eight zero bytes
/// rather than left empty), or a valid span with one defect.
#[derive(Debug, Clone)]
enum Entry {
    Valid { span: Span, zero_parent_bytes: bool },
    Invalid { span: Span, defect: Defect, fill: u8 },
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        (span(), any::<bool>()).prop_map(|(span, zero_parent_bytes)| Entry::Valid {
            span,
            zero_parent_bytes
        }),
        (span(), defect(), 1u8..=255).prop_map(|(span, defect, fill)| Entry::Invalid { span, defect, fill }),
    ]
}

/// Entries split into resource blocks of scope blocks (the index of a rejected span counts
/// across blocks).
type Blocks = Vec<(Arc<Resource>, Vec<(Arc<Scope>, Vec<Entry>)>)>;

fn blocks() -> impl Strategy<Value = Blocks> {
    (
        pool(3, resource),
        pool(3, scope),
        vec(vec(vec(entry(), 0..5), 1..3), 1..4),
    )
        .prop_map(|(resources, scopes, entries)| {
            resources
                .into_iter()
                .zip(entries)
                .map(|(r, scope_entries)| (r, scopes.iter().cloned().zip(scope_entries).collect()))
                .collect()
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn invalid_spans_are_rejected_one_by_one(blocks in blocks()) {
        let mut expected_spans = Vec::new();
        let mut expected_rejected = Vec::new();
        let mut index = 0;
        let mut resource_spans = Vec::new();
        for (resource, scope_blocks) in &blocks {
            let mut scope_spans = Vec::new();
            for (scope, entries) in scope_blocks {
                let mut spans = Vec::new();
                for entry in entries {
                    match entry {
                        Entry::Valid { span, zero_parent_bytes } => {
                            let mut pb = proto::span_to(span);
                            if *zero_parent_bytes && span.is_root() {
                                pb.parent_span_id = vec![0; 8];
                            }
                            spans.push(pb);
                            let mut span = span.clone();
                            span.resource = resource.clone();
                            span.scope = scope.clone();
                            expected_spans.push(span);
                        }
                        Entry::Invalid { span, defect, fill } => {
                            let (pb, error) = with_defect(proto::span_to(span), defect, *fill);
                            spans.push(pb);
                            expected_rejected.push(Rejected { index, error });
                        }
                    }
                    index += 1;
                }
                scope_spans.push(pb_trace::ScopeSpans {
                    scope: Some(proto::scope_to(scope)),
                    spans,
                    schema_url: String::new(),
                });
            }
            resource_spans.push(pb_trace::ResourceSpans {
                resource: Some(proto::resource_to(resource)),
                scope_spans,
                schema_url: String::new(),
            });
        }
        let bytes = ExportTraceServiceRequest { resource_spans }.encode_to_vec();
        let (reference, direct) = both_protobuf_decoders(&bytes)?;
        for decoded in [reference, direct] {
            prop_assert_eq!(&decoded.rejected, &expected_rejected);
            check_spans(exact_f64, &expected_spans, &decoded.batch.spans)?;
            prop_assert_eq!(decoded.rejection_message().is_some(), !expected_rejected.is_empty());
        }
    }
}

#[test]
fn request_without_resource_or_scope_gets_defaults() {
    let span = pb_trace::Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        ..Default::default()
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![pb_trace::ResourceSpans {
            resource: None,
            scope_spans: vec![pb_trace::ScopeSpans {
                scope: None,
                spans: vec![span],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    let decoded = proto::decode_request(req);
    assert!(decoded.rejected.is_empty());
    assert_eq!(*decoded.batch.spans[0].resource, Resource::default());
    assert_eq!(*decoded.batch.spans[0].scope, Scope::default());
    assert_eq!(decoded.batch.spans[0].service_name(), UNKNOWN_SERVICE);
}

proptest! {
    #![proptest_config(config())]

    /// Damaged protobuf: the direct decoder fails exactly when prost does, and otherwise reads
    /// the same spans (unknown fields skipped, repeated messages merged, as protobuf requires).
    #[test]
    fn damaged_protobuf_fails_or_decodes_as_prost_does(spans in spans(), damages in vec(damage(), 1..4)) {
        let bytes = damaged(wire_request(&spans), damages);
        let reference = ExportTraceServiceRequest::decode(bytes.as_slice()).map(proto::decode_request);
        let direct = wire_decode::decode_request(&bytes);
        match (reference, direct) {
            (Ok(r), Ok(d)) => {
                prop_assert_eq!(&r.rejected, &d.rejected);
                check_spans(exact_f64, &r.batch.spans, &d.batch.spans)?;
            }
            (Err(_), Err(_)) => {}
            (r, d) => prop_assert!(false, "prost: {:?}\nwire_decode: {:?}", r.map(|_| "ok"), d.map(|_| "ok")),
        }
    }
}

/// Fields in any order: a resource after its scope spans, a scope after its spans.
#[test]
fn resource_and_scope_may_follow_their_spans() {
    fn field(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag << 3 | 2];
        prost::encoding::encode_varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }
    let span = pb_trace::Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "late".into(),
        ..Default::default()
    };
    let resource = proto::resource_to(&Resource {
        attributes: vec![KeyValue::string("service.name", "checkout")],
        dropped_attributes_count: 0,
    });
    let scope = proto::scope_to(&Scope {
        name: "lib".into(),
        ..Scope::default()
    });
    let scope_spans = [field(2, &span.encode_to_vec()), field(1, &scope.encode_to_vec())].concat();
    let resource_spans = [field(2, &scope_spans), field(1, &resource.encode_to_vec())].concat();
    let body = field(1, &resource_spans);
    let decoded = wire_decode::decode_request(&body).expect("decodes");
    assert_eq!(decoded.batch.spans.len(), 1);
    let s = &decoded.batch.spans[0];
    assert_eq!(
        (s.name.as_str(), s.service_name(), s.scope.name.as_str()),
        ("late", "checkout", "lib")
    );
}

/// Arrays nested deeper than any real attribute are refused with a message (a request of
/// nothing but nesting must not overflow the stack).
#[test]
fn deeply_nested_values_are_refused() {
    let mut value = AnyValue::Int(1);
    for _ in 0..200 {
        value = AnyValue::Array(vec![value]);
    }
    let span = Span {
        trace_id: [1; 16],
        span_id: [2; 8],
        attributes: vec![KeyValue::new("deep", value)],
        ..Span::default()
    };
    let bytes = wire_request(std::slice::from_ref(&span));
    let err = wire_decode::decode_request(&bytes).expect_err("too deep");
    assert!(err.to_string().contains("nested too deeply"), "{err}");
}

// ---- 4. the JSON decoder never panics -----------------------------------------------------

/// Object keys the decoder looks for, in both spellings, plus a few others.
const KEYS: &[&str] = &[
    "resourceSpans",
    "resource_spans",
    "resource",
    "scopeSpans",
    "scope_spans",
    "instrumentationLibrarySpans",
    "scope",
    "instrumentationLibrary",
    "spans",
    "traceId",
    "spanId",
    "parentSpanId",
    "traceState",
    "flags",
    "name",
    "version",
    "kind",
    "startTimeUnixNano",
    "endTimeUnixNano",
    "timeUnixNano",
    "attributes",
    "droppedAttributesCount",
    "events",
    "droppedEventsCount",
    "links",
    "droppedLinksCount",
    "status",
    "code",
    "message",
    "key",
    "value",
    "values",
    "stringValue",
    "boolValue",
    "intValue",
    "doubleValue",
    "bytesValue",
    "arrayValue",
    "kvlistValue",
    "int_value",
    "double_value",
    "",
];

/// Strings the decoder treats specially, plus arbitrary ones.
fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "NaN",
            "Infinity",
            "-Infinity",
            "SPAN_KIND_SERVER",
            "server",
            "STATUS_CODE_ERROR",
            "ok",
            "-1",
            "18446744073709551616",
            "-9223372036854775809",
            "1e400",
            "0102030405060708090a0b0c0d0e0f10",
            "0102030405060708",
            "AQIDBAUGBwgJCgsMDQ4PEA==",
            "AQIDBAUGBwg",
            "====",
            "zz",
        ])
        .prop_map(String::from),
        text(),
    ]
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        json_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(8, 64, 6, |inner| {
        let key = prop_oneof![3 => prop::sample::select(KEYS).prop_map(String::from), 1 => text()];
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((key, inner), 0..6).prop_map(|kvs| Value::Object(kvs.into_iter().collect())),
        ]
    })
}

/// A valid OTLP JSON document with a few subtrees replaced: mostly deep down by a scalar (which
/// keeps the rest of the document decodable often enough to reach the per-span checks),
/// sometimes by an arbitrary tree.
fn mutated_otlp_json() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        json_string().prop_map(Value::String),
    ];
    let replacement = prop_oneof![3 => scalar, 1 => arbitrary_json()];
    (
        spans().prop_filter("something to mutate", |spans| !spans.is_empty()),
        vec((vec(any::<prop::sample::Index>(), 4..16), replacement), 1..4),
    )
        .prop_map(|(spans, grafts)| {
            let mut doc = json::encode_traces_data(&spans);
            for (path, replacement) in grafts {
                graft(&mut doc, &path, replacement);
            }
            doc
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn json_decoder_survives_arbitrary_bytes(bytes in vec(any::<u8>(), 0..256)) {
        check_decoded(json::decode_request(&bytes))?;
    }

    #[test]
    fn json_decoder_survives_truncated_and_corrupted_documents(
        spans in spans(),
        cut in any::<prop::sample::Index>(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut bytes = serde_json::to_vec(&json::encode_traces_data(&spans)).expect("a Value serialises");
        for (at, byte) in flips {
            *at.get_mut(&mut bytes) = byte;
        }
        let len = cut.index(bytes.len() + 1);
        bytes.truncate(len);
        check_decoded(json::decode_request(&bytes))?;
    }

    #[test]
    fn json_decoder_survives_arbitrary_json(value in arbitrary_json()) {
        let bytes = serde_json::to_vec(&value).expect("a Value serialises");
        check_decoded(json::decode_request(&bytes))?;
    }

    #[test]
    fn json_decoder_survives_arbitrary_json_inside_otlp(value in mutated_otlp_json()) {
        let bytes = serde_json::to_vec(&value).expect("a Value serialises");
        check_decoded(json::decode_request(&bytes))?;
    }
}
