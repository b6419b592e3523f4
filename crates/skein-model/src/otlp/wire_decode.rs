//! OTLP protobuf read straight into the model, without the generated message structs in
//! between: no `Vec<u8>` per id, no second `Vec` per attribute list, and every list allocated
//! once at its final length. This is the ingest hot path (gRPC, HTTP protobuf, WAL replay);
//! `proto::decode_request` stays as the reference the tests compare it with.
//!
//! Field numbers are OTLP's (`opentelemetry/proto/{common,resource,trace}/v1/*.proto`,
//! `collector/trace/v1/trace_service.proto`). Unknown fields are skipped, as protobuf requires.

use std::sync::Arc;

use super::proto::{checked_link, checked_span, RawSpanFields};
use crate::*;

/// Why a request body is not a valid `ExportTraceServiceRequest`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (in {message_name} at byte {offset})")]
pub struct WireError {
    message: &'static str,
    message_name: &'static str,
    offset: usize,
}

/// Decodes an export request. Malformed protobuf fails the whole request; spans that decode but
/// break OTLP's rules (id lengths, zero ids, end before start …) are listed in `rejected`, their
/// index counting spans across the whole request.
pub fn decode_request(body: &[u8]) -> Result<Decoded, WireError> {
    let mut d = Decoder {
        body,
        out: Decoded::default(),
        index: 0,
        scratch: Vec::new(),
        depth: 0,
    };
    let mut r = d.reader(0, body.len(), "ExportTraceServiceRequest");
    while let Some((field, wire)) = r.field()? {
        match (field, wire) {
            (1, LEN) => {
                let (start, end) = r.len_delimited()?;
                d.resource_spans(start, end)?;
            }
            (1, _) => r.expect(wire, LEN)?,
            _ => r.skip(field, wire)?,
        }
    }
    Ok(d.out)
}

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const I32: u8 = 5;

/// A cursor over one message's bytes (`pos..end` of the whole body, so errors give offsets).
struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
    end: usize,
    name: &'static str,
}

impl<'a> Reader<'a> {
    fn error(&self, message: &'static str) -> WireError {
        WireError {
            message,
            message_name: self.name,
            offset: self.pos,
        }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.body[..self.end].get(self.pos) else {
                return Err(self.error("truncated varint"));
            };
            self.pos += 1;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                // The tenth byte may only carry the top bit of a u64.
                if i == 9 && b > 1 {
                    return Err(self.error("varint overflows 64 bits"));
                }
                return Ok(value);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    /// The next field's number and wire type, or `None` at the end of the message.
    fn field(&mut self) -> Result<Option<(u32, u8)>, WireError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(self.error("invalid field number"));
        }
        let wire = (key & 7) as u8;
        if wire > I32 {
            return Err(self.error("invalid wire type"));
        }
        Ok(Some((field as u32, wire)))
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let bytes = self.body[..self.end]
            .get(self.pos..self.pos + N)
            .ok_or_else(|| self.error("truncated fixed-width field"))?;
        self.pos += N;
        Ok(bytes.try_into().expect("slice of N bytes"))
    }

    fn fixed64(&mut self) -> Result<u64, WireError> {
        self.fixed::<8>().map(u64::from_le_bytes)
    }

    fn fixed32(&mut self) -> Result<u32, WireError> {
        self.fixed::<4>().map(u32::from_le_bytes)
    }

    /// A length-delimited field's bounds within the body; the cursor moves past it.
    fn len_delimited(&mut self) -> Result<(usize, usize), WireError> {
        let len = self.varint()?;
        let start = self.pos;
        match usize::try_from(len).ok().and_then(|l| start.checked_add(l)) {
            Some(end) if end <= self.end => {
                self.pos = end;
                Ok((start, end))
            }
            _ => Err(self.error("length-delimited field runs past the end of its message")),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let (start, end) = self.len_delimited()?;
        Ok(&self.body[start..end])
    }

    fn str(&mut self) -> Result<&'a str, WireError> {
        let at = self.pos;
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).map_err(|_| self.not_utf8(at))
    }

    /// The string field starting at `at` is not UTF-8.
    fn not_utf8(&self, at: usize) -> WireError {
        WireError {
            message: "string field is not valid UTF-8",
            message_name: self.name,
            offset: at,
        }
    }

    fn string(&mut self) -> Result<String, WireError> {
        self.str().map(str::to_owned)
    }

    /// Checks a string field this decoder does not keep (protobuf still requires UTF-8).
    fn unused_string(&mut self, wire: u8) -> Result<(), WireError> {
        self.expect(wire, LEN)?;
        self.str().map(drop)
    }

    /// Checks an int32 field this decoder does not keep.
    fn unused_varint(&mut self, wire: u8) -> Result<(), WireError> {
        self.expect(wire, VARINT)?;
        self.varint().map(drop)
    }

    /// Reads a scalar of the expected wire type, or fails naming the mismatch.
    fn expect(&self, wire: u8, want: u8) -> Result<(), WireError> {
        if wire == want {
            Ok(())
        } else {
            Err(self.error("field has the wrong wire type"))
        }
    }

    fn u32_varint(&mut self, wire: u8) -> Result<u32, WireError> {
        self.expect(wire, VARINT)?;
        // Protobuf truncates a uint32 sent as a wider varint.
        Ok(self.varint()? as u32)
    }

    /// Skips field `field` of wire type `wire` (a group up to its matching end).
    fn skip(&mut self, field: u32, wire: u8) -> Result<(), WireError> {
        match wire {
            VARINT => self.varint().map(drop),
            I64 => self.fixed::<8>().map(drop),
            I32 => self.fixed::<4>().map(drop),
            LEN => self.len_delimited().map(drop),
            START_GROUP => {
                // Iterative, so a body of nothing but group starts cannot exhaust the stack.
                let mut open = vec![field];
                while let Some(&inner) = open.last() {
                    match self.field()? {
                        Some((f, END_GROUP)) if f == inner => drop(open.pop()),
                        Some((_, END_GROUP)) => return Err(self.error("group ends with another field's number")),
                        Some((_, START_GROUP)) if open.len() >= MAX_VALUE_DEPTH as usize => {
                            return Err(self.error("groups nested too deeply"))
                        }
                        Some((f, START_GROUP)) => open.push(f),
                        Some((f, w)) => self.skip(f, w)?,
                        None => return Err(self.error("group without an end")),
                    }
                }
                Ok(())
            }
            _ => Err(self.error("unexpected end of group")),
        }
    }
}

struct Decoder<'a> {
    body: &'a [u8],
    out: Decoded,
    /// Spans counted so far, rejected ones included (the index `Rejected` reports).
    index: usize,
    /// Attributes being read; each list moves out into a `Vec` of exactly its length. Nested
    /// lists (`kvlistValue`) push above their parent's entries and leave before it continues.
    scratch: Vec<KeyValue>,
    /// How many `AnyValue`s enclose the one being read.
    depth: u32,
}

/// Arrays and key-value lists nest; past this depth a request is refused rather than risk the
/// stack (prost stops at 100 messages deep, which this stays inside).
const MAX_VALUE_DEPTH: u32 = 64;

impl<'a> Decoder<'a> {
    fn reader(&self, start: usize, end: usize, name: &'static str) -> Reader<'a> {
        Reader {
            body: self.body,
            pos: start,
            end,
            name,
        }
    }

    fn resource_spans(&mut self, start: usize, end: usize) -> Result<(), WireError> {
        // The resource may follow its spans on the wire, so read it first.
        let mut resource = Resource::default();
        let mut r = self.reader(start, end, "ResourceSpans");
        while let Some((field, wire)) = r.field()? {
            match (field, wire) {
                (1, LEN) => {
                    let (s, e) = r.len_delimited()?;
                    self.resource(s, e, &mut resource)?;
                }
                (1, _) => r.expect(wire, LEN)?,
                (3, _) => r.unused_string(wire)?,
                _ => r.skip(field, wire)?,
            }
        }
        let resource = Arc::new(resource);
        let mut r = self.reader(start, end, "ResourceSpans");
        while let Some((field, wire)) = r.field()? {
            match (field, wire) {
                (2, LEN) => {
                    let (s, e) = r.len_delimited()?;
                    self.scope_spans(s, e, &resource)?;
                }
                (2, _) => r.expect(wire, LEN)?,
                _ => r.skip(field, wire)?,
            }
        }
        Ok(())
    }

    /// Merges into `resource`, as protobuf merges a repeated singular message field.
    fn resource(&mut self, start: usize, end: usize, resource: &mut Resource) -> Result<(), WireError> {
        let mark = self.scratch.len();
        let mut r = self.reader(start, end, "Resource");
        while let Some((field, wire)) = r.field()? {
            match field {
                1 => self.key_value(&mut r, wire)?,
                2 => resource.dropped_attributes_count = r.u32_varint(wire)?,
                3 => {
                    // `entity_refs` (in development): not kept, but checked as prost would.
                    r.expect(wire, LEN)?;
                    let (s, e) = r.len_delimited()?;
                    let mut entity = self.reader(s, e, "EntityRef");
                    while let Some((field, wire)) = entity.field()? {
                        match field {
                            1..=4 => entity.unused_string(wire)?,
                            _ => entity.skip(field, wire)?,
                        }
                    }
                }
                _ => r.skip(field, wire)?,
            }
        }
        resource.attributes.extend(self.scratch.drain(mark..));
        Ok(())
    }

    fn scope_spans(&mut self, start: usize, end: usize, resource: &Arc<Resource>) -> Result<(), WireError> {
        let mut scope = Scope::default();
        let mut spans = 0usize;
        let mut r = self.reader(start, end, "ScopeSpans");
        while let Some((field, wire)) = r.field()? {
            match (field, wire) {
                (1, LEN) => {
                    let (s, e) = r.len_delimited()?;
                    self.scope(s, e, &mut scope)?;
                }
                (1, _) | (2, _) => {
                    r.expect(wire, LEN)?;
                    r.skip(field, wire)?;
                    spans += usize::from(field == 2);
                }
                (3, _) => r.unused_string(wire)?,
                _ => r.skip(field, wire)?,
            }
        }
        let scope = Arc::new(scope);
        self.out.batch.spans.reserve(spans);
        let mut r = self.reader(start, end, "ScopeSpans");
        while let Some((field, wire)) = r.field()? {
            match field {
                2 => {
                    let (s, e) = r.len_delimited()?;
                    match self.span(s, e, resource, &scope)? {
                        Ok(span) => self.out.batch.spans.push(span),
                        Err(error) => self.out.rejected.push(Rejected {
                            index: self.index,
                            error,
                        }),
                    }
                    self.index += 1;
                }
                _ => r.skip(field, wire)?,
            }
        }
        Ok(())
    }

    fn scope(&mut self, start: usize, end: usize, scope: &mut Scope) -> Result<(), WireError> {
        let mark = self.scratch.len();
        let mut r = self.reader(start, end, "InstrumentationScope");
        while let Some((field, wire)) = r.field()? {
            match field {
                1 => scope.name = string_field(&mut r, wire)?,
                2 => scope.version = string_field(&mut r, wire)?,
                3 => self.key_value(&mut r, wire)?,
                4 => scope.dropped_attributes_count = r.u32_varint(wire)?,
                _ => r.skip(field, wire)?,
            }
        }
        scope.attributes.extend(self.scratch.drain(mark..));
        Ok(())
    }

    /// One span: `Err` for malformed protobuf (the whole request fails), `Ok(Err)` for a span
    /// that decodes but is invalid (only it is rejected).
    fn span(
        &mut self,
        start: usize,
        end: usize,
        resource: &Arc<Resource>,
        scope: &Arc<Scope>,
    ) -> Result<Result<Span, SpanError>, WireError> {
        let mut ids: [&[u8]; 3] = [&[], &[], &[]];
        let (mut kind, mut status_code) = (0i32, None);
        let mut span = Span {
            resource: resource.clone(),
            scope: scope.clone(),
            ..Span::default()
        };
        let mark = self.scratch.len();
        let mut events = Vec::new();
        let mut links = Vec::new();
        let mut r = self.reader(start, end, "Span");
        while let Some((field, wire)) = r.field()? {
            match field {
                1 | 2 | 4 => {
                    r.expect(wire, LEN)?;
                    ids[if field == 4 { 2 } else { field as usize - 1 }] = r.bytes()?;
                }
                3 => span.trace_state = string_field(&mut r, wire)?,
                5 => span.name = string_field(&mut r, wire)?,
                6 => {
                    r.expect(wire, VARINT)?;
                    kind = r.varint()? as i32;
                }
                7 => {
                    r.expect(wire, I64)?;
                    span.start_unix_nano = r.fixed64()?;
                }
                8 => {
                    r.expect(wire, I64)?;
                    span.end_unix_nano = r.fixed64()?;
                }
                9 => self.key_value(&mut r, wire)?,
                10 => span.dropped_attributes_count = r.u32_varint(wire)?,
                11 => {
                    r.expect(wire, LEN)?;
                    let (s, e) = r.len_delimited()?;
                    events.push(self.event(s, e)?);
                }
                12 => span.dropped_events_count = r.u32_varint(wire)?,
                13 => {
                    r.expect(wire, LEN)?;
                    let (s, e) = r.len_delimited()?;
                    links.push(self.link(s, e)?);
                }
                14 => span.dropped_links_count = r.u32_varint(wire)?,
                15 => {
                    r.expect(wire, LEN)?;
                    let (s, e) = r.len_delimited()?;
                    status_code = Some(self.status(s, e, &mut span.status.message, status_code)?);
                }
                16 => {
                    r.expect(wire, I32)?;
                    span.flags = r.fixed32()?;
                }
                _ => r.skip(field, wire)?,
            }
        }
        span.attributes = self.scratch.drain(mark..).collect();
        let checked = checked_span(
            RawSpanFields {
                trace_id: ids[0],
                span_id: ids[1],
                parent_span_id: ids[2],
                start: span.start_unix_nano,
                end: span.end_unix_nano,
                kind,
                status_code,
            },
            links
                .into_iter()
                .map(|(l, trace_id, span_id)| checked_link(l, trace_id, span_id)),
        );
        Ok(checked.map(|c| {
            span.trace_id = c.trace_id;
            span.span_id = c.span_id;
            span.parent_span_id = c.parent_span_id;
            span.kind = c.kind;
            span.status.code = c.status_code;
            span.events = events;
            span.links = c.links;
            span
        }))
    }

    fn event(&mut self, start: usize, end: usize) -> Result<Event, WireError> {
        let mut event = Event::default();
        let mark = self.scratch.len();
        let mut r = self.reader(start, end, "Span.Event");
        while let Some((field, wire)) = r.field()? {
            match field {
                1 => {
                    r.expect(wire, I64)?;
                    event.time_unix_nano = r.fixed64()?;
                }
                2 => event.name = string_field(&mut r, wire)?,
                3 => self.key_value(&mut r, wire)?,
                4 => event.dropped_attributes_count = r.u32_varint(wire)?,
                _ => r.skip(field, wire)?,
            }
        }
        event.attributes = self.scratch.drain(mark..).collect();
        Ok(event)
    }

    /// A link with its ids still raw; `checked_link` validates them.
    fn link(&mut self, start: usize, end: usize) -> Result<(Link, &'a [u8], &'a [u8]), WireError> {
        let mut link = Link::default();
        let (mut trace_id, mut span_id): (&[u8], &[u8]) = (&[], &[]);
        let mark = self.scratch.len();
        let mut r = self.reader(start, end, "Span.Link");
        while let Some((field, wire)) = r.field()? {
            match field {
                1 | 2 => {
                    r.expect(wire, LEN)?;
                    *(if field == 1 { &mut trace_id } else { &mut span_id }) = r.bytes()?;
                }
                3 => link.trace_state = string_field(&mut r, wire)?,
                4 => self.key_value(&mut r, wire)?,
                5 => link.dropped_attributes_count = r.u32_varint(wire)?,
                6 => {
                    r.expect(wire, I32)?;
                    link.flags = r.fixed32()?;
                }
                _ => r.skip(field, wire)?,
            }
        }
        link.attributes = self.scratch.drain(mark..).collect();
        Ok((link, trace_id, span_id))
    }

    /// Reads a `Status` into `message`, returning its code (a repeated status merges).
    fn status(&self, start: usize, end: usize, message: &mut String, code: Option<i32>) -> Result<i32, WireError> {
        let mut code = code.unwrap_or(0);
        let mut r = self.reader(start, end, "Status");
        while let Some((field, wire)) = r.field()? {
            match field {
                2 => *message = string_field(&mut r, wire)?,
                3 => {
                    r.expect(wire, VARINT)?;
                    code = r.varint()? as i32;
                }
                _ => r.skip(field, wire)?,
            }
        }
        Ok(code)
    }

    /// One `KeyValue` field, pushed onto `scratch`.
    fn key_value(&mut self, r: &mut Reader<'a>, wire: u8) -> Result<(), WireError> {
        r.expect(wire, LEN)?;
        let (start, end) = r.len_delimited()?;
        let mut kv = KeyValue::default();
        let mut r = self.reader(start, end, "KeyValue");
        while let Some((field, wire)) = r.field()? {
            match field {
                1 => {
                    r.expect(wire, LEN)?;
                    let at = r.pos;
                    kv.key = Key::from_utf8(r.bytes()?).ok_or_else(|| r.not_utf8(at))?;
                }
                2 => {
                    r.expect(wire, LEN)?;
                    let (s, e) = r.len_delimited()?;
                    self.any_value(s, e, &mut kv.value)?;
                }
                // `key_strindex` (profiles' string table): no meaning in traces.
                3 => r.unused_varint(wire)?,
                _ => r.skip(field, wire)?,
            }
        }
        self.scratch.push(kv);
        Ok(())
    }

    /// Reads an `AnyValue` into `value`. Like protobuf's merge, a second occurrence of the same
    /// list kind appends to it and an empty message leaves `value` as it was.
    fn any_value(&mut self, start: usize, end: usize, value: &mut AnyValue) -> Result<(), WireError> {
        let mut r = self.reader(start, end, "AnyValue");
        if self.depth >= MAX_VALUE_DEPTH {
            return Err(r.error("attribute values nested too deeply"));
        }
        self.depth += 1;
        while let Some((field, wire)) = r.field()? {
            *value = match field {
                1 => AnyValue::String(string_field(&mut r, wire)?),
                2 => {
                    r.expect(wire, VARINT)?;
                    AnyValue::Bool(r.varint()? != 0)
                }
                3 => {
                    r.expect(wire, VARINT)?;
                    AnyValue::Int(r.varint()? as i64)
                }
                4 => {
                    r.expect(wire, I64)?;
                    AnyValue::Double(f64::from_bits(r.fixed64()?))
                }
                5 => {
                    r.expect(wire, LEN)?;
                    let (s, e) = r.len_delimited()?;
                    let mut items = match std::mem::take(value) {
                        AnyValue::Array(items) => items,
                        _ => Vec::new(),
                    };
                    let mut list = self.reader(s, e, "ArrayValue");
                    while let Some((field, wire)) = list.field()? {
                        match field {
                            1 => {
                                list.expect(wire, LEN)?;
                                let (s, e) = list.len_delimited()?;
                                let mut item = AnyValue::Empty;
                                self.any_value(s, e, &mut item)?;
                                items.push(item);
                            }
                            _ => list.skip(field, wire)?,
                        }
                    }
                    AnyValue::Array(items)
                }
                6 => {
                    r.expect(wire, LEN)?;
                    let (s, e) = r.len_delimited()?;
                    let mark = self.scratch.len();
                    let mut list = self.reader(s, e, "KeyValueList");
                    while let Some((field, wire)) = list.field()? {
                        match field {
                            1 => self.key_value(&mut list, wire)?,
                            _ => list.skip(field, wire)?,
                        }
                    }
                    match std::mem::take(value) {
                        AnyValue::KvList(mut kvs) => {
                            kvs.extend(self.scratch.drain(mark..));
                            AnyValue::KvList(kvs)
                        }
                        _ => AnyValue::KvList(self.scratch.drain(mark..).collect()),
                    }
                }
                7 => {
                    r.expect(wire, LEN)?;
                    AnyValue::Bytes(r.bytes()?.to_vec())
                }
                // `string_value_strindex` (profiles' string table): no value in traces.
                8 => {
                    r.unused_varint(wire)?;
                    AnyValue::Empty
                }
                _ => {
                    r.skip(field, wire)?;
                    continue;
                }
            };
        }
        self.depth -= 1;
        Ok(())
    }
}

fn string_field(r: &mut Reader<'_>, wire: u8) -> Result<String, WireError> {
    r.expect(wire, LEN)?;
    r.string()
}
