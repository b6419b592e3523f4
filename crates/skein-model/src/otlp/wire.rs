//! OTLP protobuf written straight from the model, without building (and cloning into) the
//! generated message structs. Used on hot paths: the WAL record and block columns. Field
//! numbers are OTLP's (`opentelemetry/proto/{common,resource,trace}/v1/*.proto`); the unit
//! tests check every function against prost's decoder.

use std::sync::Arc;

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};

use crate::*;

fn put_bytes(tag: u32, v: &[u8], buf: &mut Vec<u8>) {
    if v.is_empty() {
        return;
    }
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(v.len() as u64, buf);
    buf.extend_from_slice(v);
}

fn put_varint(tag: u32, v: u64, buf: &mut Vec<u8>) {
    if v == 0 {
        return;
    }
    encode_key(tag, WireType::Varint, buf);
    encode_varint(v, buf);
}

fn put_fixed64(tag: u32, v: u64, buf: &mut Vec<u8>) {
    if v == 0 {
        return;
    }
    encode_key(tag, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_fixed32(tag: u32, v: u32, buf: &mut Vec<u8>) {
    if v == 0 {
        return;
    }
    encode_key(tag, WireType::ThirtyTwoBit, buf);
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Writes a nested message in place: one byte is reserved for the length, and the body is
/// shifted only when its length needs a longer varint.
fn put_message(tag: u32, buf: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    encode_key(tag, WireType::LengthDelimited, buf);
    let len_at = buf.len();
    buf.push(0);
    let start = buf.len();
    body(buf);
    let len = buf.len() - start;
    let prefix = encoded_len_varint(len as u64);
    if prefix > 1 {
        buf.splice(len_at..len_at + 1, std::iter::repeat_n(0u8, prefix));
    }
    let mut lenbuf = Vec::with_capacity(prefix);
    encode_varint(len as u64, &mut lenbuf);
    buf[len_at..len_at + prefix].copy_from_slice(&lenbuf);
}

pub fn any_value(v: &AnyValue, buf: &mut Vec<u8>) {
    match v {
        AnyValue::Empty => {}
        AnyValue::String(s) => {
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint(s.len() as u64, buf);
            buf.extend_from_slice(s.as_bytes());
        }
        AnyValue::Bool(b) => {
            encode_key(2, WireType::Varint, buf);
            encode_varint(*b as u64, buf);
        }
        AnyValue::Int(i) => {
            encode_key(3, WireType::Varint, buf);
            encode_varint(*i as u64, buf);
        }
        AnyValue::Double(d) => {
            encode_key(4, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&d.to_le_bytes());
        }
        AnyValue::Array(a) => put_message(5, buf, |b| {
            for x in a {
                put_message(1, b, |b| any_value(x, b));
            }
        }),
        AnyValue::KvList(kv) => put_message(6, buf, |b| key_values(1, kv.iter(), b)),
        AnyValue::Bytes(bytes) => {
            encode_key(7, WireType::LengthDelimited, buf);
            encode_varint(bytes.len() as u64, buf);
            buf.extend_from_slice(bytes);
        }
    }
}

/// Repeated `KeyValue` at field `tag`.
pub fn key_values<'a>(tag: u32, kvs: impl IntoIterator<Item = &'a KeyValue>, buf: &mut Vec<u8>) {
    for kv in kvs {
        put_message(tag, buf, |b| {
            put_bytes(1, kv.key.as_bytes(), b);
            put_message(2, b, |b| any_value(&kv.value, b));
        });
    }
}

/// A `KeyValueList` message body (field 1: values).
pub fn key_value_list<'a>(kvs: impl IntoIterator<Item = &'a KeyValue>, buf: &mut Vec<u8>) {
    key_values(1, kvs, buf);
}

pub fn resource(r: &Resource, buf: &mut Vec<u8>) {
    key_values(1, &r.attributes, buf);
    put_varint(2, r.dropped_attributes_count as u64, buf);
}

pub fn scope(s: &Scope, buf: &mut Vec<u8>) {
    put_bytes(1, s.name.as_bytes(), buf);
    put_bytes(2, s.version.as_bytes(), buf);
    key_values(3, &s.attributes, buf);
    put_varint(4, s.dropped_attributes_count as u64, buf);
}

pub fn event(e: &Event, buf: &mut Vec<u8>) {
    put_fixed64(1, e.time_unix_nano, buf);
    put_bytes(2, e.name.as_bytes(), buf);
    key_values(3, &e.attributes, buf);
    put_varint(4, e.dropped_attributes_count as u64, buf);
}

pub fn link(l: &Link, buf: &mut Vec<u8>) {
    put_bytes(1, &l.trace_id, buf);
    put_bytes(2, &l.span_id, buf);
    put_bytes(3, l.trace_state.as_bytes(), buf);
    key_values(4, &l.attributes, buf);
    put_varint(5, l.dropped_attributes_count as u64, buf);
    put_fixed32(6, l.flags, buf);
}

/// Field of a stored event's time relative to its span's start (not an OTLP field).
const EVENT_SINCE_START_FIELD: u32 = 15;

/// Repeated events at field 1, as a block stores them: OTLP `Event`s, except that the time is
/// nanoseconds since `span_start` as a zigzag varint in field 15 instead of the absolute fixed64
/// in field 1. An event a few milliseconds into its span then costs three or four bytes
/// instead of eight random-looking ones, which zstd cannot shrink.
pub fn stored_event_list(events: &[Event], span_start: u64, buf: &mut Vec<u8>) {
    for e in events {
        put_message(1, buf, |b| {
            put_bytes(2, e.name.as_bytes(), b);
            key_values(3, &e.attributes, b);
            put_varint(4, e.dropped_attributes_count as u64, b);
            // Written even when zero: its presence is what marks the time as relative.
            let since = e.time_unix_nano.wrapping_sub(span_start) as i64;
            encode_key(EVENT_SINCE_START_FIELD, WireType::Varint, b);
            encode_varint(((since << 1) ^ (since >> 63)) as u64, b);
        });
    }
}

/// Repeated links at field 1 (the block's `LinkList`).
pub fn link_list(links: &[Link], buf: &mut Vec<u8>) {
    for l in links {
        put_message(1, buf, |b| link(l, b));
    }
}

pub fn span(s: &Span, buf: &mut Vec<u8>) {
    put_bytes(1, &s.trace_id, buf);
    put_bytes(2, &s.span_id, buf);
    put_bytes(3, s.trace_state.as_bytes(), buf);
    if !s.is_root() {
        put_bytes(4, &s.parent_span_id, buf);
    }
    put_bytes(5, s.name.as_bytes(), buf);
    put_varint(6, s.kind as u64, buf);
    put_fixed64(7, s.start_unix_nano, buf);
    put_fixed64(8, s.end_unix_nano, buf);
    key_values(9, &s.attributes, buf);
    put_varint(10, s.dropped_attributes_count as u64, buf);
    for e in &s.events {
        put_message(11, buf, |b| event(e, b));
    }
    put_varint(12, s.dropped_events_count as u64, buf);
    for l in &s.links {
        put_message(13, buf, |b| link(l, b));
    }
    put_varint(14, s.dropped_links_count as u64, buf);
    if s.status != Status::default() {
        put_message(15, buf, |b| {
            put_bytes(2, s.status.message.as_bytes(), b);
            put_varint(3, s.status.code as u64, b);
        });
    }
    put_fixed32(16, s.flags, buf);
}

/// An `ExportTraceServiceRequest`, spans grouped into resource/scope blocks where neighbours
/// share the same `Arc`.
pub fn export_request<'a>(spans: impl IntoIterator<Item = &'a Span>, buf: &mut Vec<u8>) {
    let mut spans = spans.into_iter().peekable();
    while let Some(first) = spans.next() {
        let res = first.resource.clone();
        let mut group = vec![first];
        while let Some(next) = spans.next_if(|s| Arc::ptr_eq(&s.resource, &res)) {
            group.push(next);
        }
        put_message(1, buf, |b| {
            put_message(1, b, |b| resource(&res, b));
            let mut i = 0;
            while i < group.len() {
                let sc = group[i].scope.clone();
                let mut j = i;
                while j < group.len() && Arc::ptr_eq(&group[j].scope, &sc) {
                    j += 1;
                }
                put_message(2, b, |b| {
                    put_message(1, b, |b| scope(&sc, b));
                    for s in &group[i..j] {
                        put_message(2, b, |b| span(s, b));
                    }
                });
                i = j;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn sample() -> Vec<Span> {
        let r1 = Arc::new(Resource {
            attributes: vec![KeyValue::string("service.name", "a")],
            dropped_attributes_count: 2,
        });
        let r2 = Arc::new(Resource::default());
        let sc = Arc::new(Scope {
            name: "lib".into(),
            version: "1".into(),
            attributes: vec![],
            dropped_attributes_count: 0,
        });
        let long = "x".repeat(300);
        let mk = |i: u8, r: &Arc<Resource>| Span {
            trace_id: [i; 16],
            span_id: [i + 1; 8],
            parent_span_id: if i.is_multiple_of(2) { [0; 8] } else { [9; 8] },
            trace_state: "k=v".into(),
            flags: 0x101,
            name: format!("op{i}"),
            kind: SpanKind::Client,
            start_unix_nano: 1_700_000_000_000_000_000,
            end_unix_nano: 1_700_000_000_000_000_500,
            attributes: vec![
                KeyValue::string("s", long.clone()),
                KeyValue::new("i", AnyValue::Int(-5)),
                KeyValue::new("d", AnyValue::Double(1.5)),
                KeyValue::new("b", AnyValue::Bool(true)),
                KeyValue::new("bytes", AnyValue::Bytes(vec![0, 1])),
                KeyValue::new("e", AnyValue::Empty),
                KeyValue::new(
                    "a",
                    AnyValue::Array(vec![AnyValue::Int(1), AnyValue::Empty, AnyValue::String("z".into())]),
                ),
                KeyValue::new("kv", AnyValue::KvList(vec![KeyValue::new("n", AnyValue::Bool(false))])),
            ],
            dropped_attributes_count: 1,
            events: vec![Event {
                time_unix_nano: 7,
                name: "ev".into(),
                attributes: vec![KeyValue::string("k", "v")],
                dropped_attributes_count: 3,
            }],
            dropped_events_count: 4,
            links: vec![Link {
                trace_id: [3; 16],
                span_id: [4; 8],
                trace_state: "t".into(),
                attributes: vec![],
                dropped_attributes_count: 0,
                flags: 1,
            }],
            dropped_links_count: 5,
            status: Status {
                code: StatusCode::Error,
                message: "bad".into(),
            },
            resource: r.clone(),
            scope: sc.clone(),
        };
        vec![mk(1, &r1), mk(2, &r1), mk(4, &r2), mk(6, &r1)]
    }

    #[test]
    fn request_matches_prost() {
        let spans = sample();
        let mut buf = Vec::new();
        export_request(spans.iter(), &mut buf);
        let decoded = crate::otlp::pb::collector::trace::v1::ExportTraceServiceRequest::decode(buf.as_slice()).unwrap();
        assert_eq!(decoded, super::super::proto::encode_request(spans.iter()));
        let back = super::super::proto::decode_request(decoded);
        assert!(back.rejected.is_empty());
        assert_eq!(back.batch.spans, spans);
    }

    #[test]
    fn lists_match_prost() {
        let s = &sample()[0];
        let mut buf = Vec::new();
        key_value_list(&s.attributes, &mut buf);
        let kv = crate::otlp::pb::common::v1::KeyValueList::decode(buf.as_slice()).unwrap();
        assert_eq!(kv.values, super::super::proto::attrs_to(&s.attributes));
        buf.clear();
        resource(&s.resource, &mut buf);
        let r = crate::otlp::pb::resource::v1::Resource::decode(buf.as_slice()).unwrap();
        assert_eq!(r, super::super::proto::resource_to(&s.resource));
        buf.clear();
        scope(&s.scope, &mut buf);
        let sc = crate::otlp::pb::common::v1::InstrumentationScope::decode(buf.as_slice()).unwrap();
        assert_eq!(sc, super::super::proto::scope_to(&s.scope));
    }
}
