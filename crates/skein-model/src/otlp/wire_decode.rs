//! OTLP protobuf read straight into the model, without the generated message structs in
//! between: no `Vec<u8>` per id, no second `Vec` per attribute list, and every list allocated
//! once at its final length. This is the ingest hot path (gRPC, HTTP protobuf, WAL replay);
//! `proto::decode_request` stays as the reference the tests compare it with.
//!
//! Field numbers are OTLP's (`opentelemetry/proto/{common,resource,trace}/v1/*.proto`,
//! `collector/trace/v1/trace_service.proto`). Unknown fields are skipped, as protobuf requires.

use std::cell::RefCell;
use std::sync::Arc;
use std::thread::LocalKey;

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

thread_local! {
    /// Resources and scopes this thread decoded lately. An exporter sends the same few in
    /// every request; one shared `Arc` per distinct value lets a block build encode each once
    /// per batch rather than once per request that sent it (1.8 % of the server's CPU under
    /// full ingest went to those encodings, docs/benchmarks.md "Prefetching the head's spans"),
    /// and the head holds one copy.
    static RECENT_RESOURCES: RefCell<Recent<Resource>> = const { RefCell::new(Recent::new()) };
    static RECENT_SCOPES: RefCell<Recent<Scope>> = const { RefCell::new(Recent::new()) };
}

/// How many values `Recent` keeps: a few services' resources per decoding thread...
const RECENT_SLOTS: usize = 32;
/// ...each at most this long on the wire, so the cache stays small whatever clients send.
const RECENT_MAX_BYTES: usize = 4096;

/// A small ring of recently decoded values, each with the exact wire bytes it came from.
struct Recent<T> {
    slots: Vec<(Box<[u8]>, Arc<T>)>,
    next: usize,
}

impl<T> Recent<T> {
    const fn new() -> Self {
        Recent {
            slots: Vec::new(),
            next: 0,
        }
    }

    fn get(&self, bytes: &[u8]) -> Option<Arc<T>> {
        let (_, value) = self.slots.iter().find(|(b, _)| **b == *bytes)?;
        Some(value.clone())
    }

    fn put(&mut self, bytes: &[u8], value: &Arc<T>) {
        if bytes.len() > RECENT_MAX_BYTES {
            return;
        }
        let slot = (Box::from(bytes), value.clone());
        if self.slots.len() < RECENT_SLOTS {
            self.slots.push(slot);
        } else {
            self.slots[self.next] = slot;
            self.next = (self.next + 1) % RECENT_SLOTS;
        }
    }
}

/// Decodes an export request. Malformed protobuf fails the whole request; spans that decode but
/// break OTLP's rules (id lengths, zero ids, end before start …) are listed in `rejected`, their
/// index counting spans across the whole request.
pub fn decode_request(body: &[u8]) -> Result<Decoded, WireError> {
    let mut d = Decoder {
        body,
        out: Decoded {
            sizes: Some(DecodedSizes::default()),
            ..Decoded::default()
        },
        index: 0,
        scratch: Vec::new(),
        depth: 0,
    };
    let mut r = d.reader(0, body.len(), "ExportTraceServiceRequest");
    while let Some((field, wire)) = r.field()? {
        match field {
            1 => {
                let (start, end) = r.len_field(wire)?;
                d.resource_spans(start, end)?;
            }
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

    /// Fails unless a known field came with the wire type its declaration gives it.
    fn expect(&self, wire: u8, want: u8) -> Result<(), WireError> {
        if wire == want {
            Ok(())
        } else {
            Err(self.error("field has the wrong wire type"))
        }
    }

    // Field readers: each takes the wire type the field came with and checks it.

    fn varint_field(&mut self, wire: u8) -> Result<u64, WireError> {
        self.expect(wire, VARINT)?;
        self.varint()
    }

    /// int32 and enum fields: protobuf truncates a wider varint.
    fn i32_field(&mut self, wire: u8) -> Result<i32, WireError> {
        self.varint_field(wire).map(|v| v as i32)
    }

    /// uint32 fields: protobuf truncates a wider varint.
    fn u32_field(&mut self, wire: u8) -> Result<u32, WireError> {
        self.varint_field(wire).map(|v| v as u32)
    }

    fn fixed64_field(&mut self, wire: u8) -> Result<u64, WireError> {
        self.expect(wire, I64)?;
        self.fixed::<8>().map(u64::from_le_bytes)
    }

    fn fixed32_field(&mut self, wire: u8) -> Result<u32, WireError> {
        self.expect(wire, I32)?;
        self.fixed::<4>().map(u32::from_le_bytes)
    }

    /// A length-delimited field (a message, bytes or a string): its bounds within the body.
    fn len_field(&mut self, wire: u8) -> Result<(usize, usize), WireError> {
        self.expect(wire, LEN)?;
        self.len_delimited()
    }

    fn bytes_field(&mut self, wire: u8) -> Result<&'a [u8], WireError> {
        let (start, end) = self.len_field(wire)?;
        Ok(&self.body[start..end])
    }

    fn str_field(&mut self, wire: u8) -> Result<&'a str, WireError> {
        let at = self.pos;
        let bytes = self.bytes_field(wire)?;
        std::str::from_utf8(bytes).map_err(|_| self.not_utf8(at))
    }

    fn string_field(&mut self, wire: u8) -> Result<String, WireError> {
        self.str_field(wire).map(str::to_owned)
    }

    /// The string field starting at `at` is not UTF-8.
    fn not_utf8(&self, at: usize) -> WireError {
        WireError {
            message: "string field is not valid UTF-8",
            message_name: self.name,
            offset: at,
        }
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

/// Arrays and key-value lists nest; past this many `AnyValue`s a request is refused. Blocks are
/// read back with prost, which refuses data more than 100 messages deep, so everything accepted
/// here must stay inside that: the deepest path is an event attribute nested through key-value
/// lists (`EventList`, `Event`, `KeyValue`, then three messages per `AnyValue`: 3 + 3 × 32 = 99).
/// At 64, a value 50 arrays deep was accepted and then made its whole block unreadable.
pub const MAX_VALUE_DEPTH: u32 = 32;

impl<'a> Decoder<'a> {
    fn reader(&self, start: usize, end: usize, name: &'static str) -> Reader<'a> {
        Reader {
            body: self.body,
            pos: start,
            end,
            name,
        }
    }

    /// Reads the resource first and the scope blocks after it: the resource may follow its
    /// spans on the wire. One pass notes where each scope block lies.
    fn resource_spans(&mut self, start: usize, end: usize) -> Result<(), WireError> {
        let mut resource_fields = Vec::new();
        let mut scope_spans = Vec::new();
        let mut r = self.reader(start, end, "ResourceSpans");
        while let Some((field, wire)) = r.field()? {
            match field {
                1 => resource_fields.push(r.len_field(wire)?),
                2 => scope_spans.push(r.len_field(wire)?),
                // schema_url: not kept, but protobuf still requires UTF-8.
                3 => {
                    r.str_field(wire)?;
                }
                _ => r.skip(field, wire)?,
            }
        }
        // A resource may come from the cache, decoded for an earlier request: its encoded size
        // bounds its strings for this one's limits check.
        for &(s, e) in &resource_fields {
            self.note_string(e - s);
        }
        let resource = self.shared(&RECENT_RESOURCES, &resource_fields, Self::resource)?;
        self.note_attributes(resource.attributes.len());
        // Its keys, not its encoded size: most resources outgrow the key limit as a whole.
        self.note_key(longest_key(&resource.attributes));
        for (s, e) in scope_spans {
            self.scope_spans(s, e, &resource)?;
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
                2 => resource.dropped_attributes_count = r.u32_field(wire)?,
                3 => {
                    // `entity_refs` (in development): not kept, but checked as prost would.
                    let (s, e) = r.len_field(wire)?;
                    let mut entity = self.reader(s, e, "EntityRef");
                    while let Some((field, wire)) = entity.field()? {
                        match field {
                            1..=4 => {
                                entity.str_field(wire)?;
                            }
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

    /// Like `resource_spans`: the scope first, then the spans.
    fn scope_spans(&mut self, start: usize, end: usize, resource: &Arc<Resource>) -> Result<(), WireError> {
        let mut scope_fields = Vec::new();
        let mut spans = Vec::new();
        let mut r = self.reader(start, end, "ScopeSpans");
        while let Some((field, wire)) = r.field()? {
            match field {
                1 => scope_fields.push(r.len_field(wire)?),
                2 => spans.push(r.len_field(wire)?),
                3 => {
                    r.str_field(wire)?;
                }
                _ => r.skip(field, wire)?,
            }
        }
        for &(s, e) in &scope_fields {
            self.note_string(e - s);
        }
        let scope = self.shared(&RECENT_SCOPES, &scope_fields, Self::scope)?;
        self.note_attributes(scope.attributes.len());
        self.note_key(longest_key(&scope.attributes));
        self.out.batch.spans.reserve(spans.len());
        for (s, e) in spans {
            match self.span(s, e, resource, &scope)? {
                Ok(span) => self.out.batch.spans.push(span),
                Err(error) => self.out.rejected.push(Rejected {
                    index: self.index,
                    error,
                }),
            }
            self.index += 1;
        }
        Ok(())
    }

    /// The resource or scope held in `fields` (the ranges of its message field; protobuf
    /// merges repeats, in order), decoded by `merge`. The usual single field is looked up by its
    /// bytes among the values this thread decoded lately, and shares their `Arc` when found.
    fn shared<T: Default>(
        &mut self,
        recent: &'static LocalKey<RefCell<Recent<T>>>,
        fields: &[(usize, usize)],
        merge: fn(&mut Self, usize, usize, &mut T) -> Result<(), WireError>,
    ) -> Result<Arc<T>, WireError> {
        let mut value = T::default();
        let &[(start, end)] = fields else {
            for &(s, e) in fields {
                merge(self, s, e, &mut value)?;
            }
            return Ok(Arc::new(value));
        };
        let bytes = &self.body[start..end];
        if let Some(same) = recent.with_borrow(|r| r.get(bytes)) {
            return Ok(same);
        }
        merge(self, start, end, &mut value)?;
        let value = Arc::new(value);
        recent.with_borrow_mut(|r| r.put(bytes, &value));
        Ok(value)
    }

    fn scope(&mut self, start: usize, end: usize, scope: &mut Scope) -> Result<(), WireError> {
        let mark = self.scratch.len();
        let mut r = self.reader(start, end, "InstrumentationScope");
        while let Some((field, wire)) = r.field()? {
            match field {
                1 => scope.name = r.string_field(wire)?,
                2 => scope.version = r.string_field(wire)?,
                3 => self.key_value(&mut r, wire)?,
                4 => scope.dropped_attributes_count = r.u32_field(wire)?,
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
                1 => ids[0] = r.bytes_field(wire)?,
                2 => ids[1] = r.bytes_field(wire)?,
                3 => span.trace_state = r.string_field(wire)?,
                4 => ids[2] = r.bytes_field(wire)?,
                5 => span.name = r.string_field(wire)?,
                6 => kind = r.i32_field(wire)?,
                7 => span.start_unix_nano = r.fixed64_field(wire)?,
                8 => span.end_unix_nano = r.fixed64_field(wire)?,
                9 => self.key_value(&mut r, wire)?,
                10 => span.dropped_attributes_count = r.u32_field(wire)?,
                11 => {
                    let (s, e) = r.len_field(wire)?;
                    events.push(self.event(s, e)?);
                }
                12 => span.dropped_events_count = r.u32_field(wire)?,
                13 => {
                    let (s, e) = r.len_field(wire)?;
                    links.push(self.link(s, e)?);
                }
                14 => span.dropped_links_count = r.u32_field(wire)?,
                15 => {
                    let (s, e) = r.len_field(wire)?;
                    status_code = Some(self.status(s, e, &mut span.status.message, status_code)?);
                }
                16 => span.flags = r.fixed32_field(wire)?,
                _ => r.skip(field, wire)?,
            }
        }
        span.attributes = self.scratch.drain(mark..).collect();
        self.note_string(
            span.name
                .len()
                .max(span.status.message.len())
                .max(span.trace_state.len()),
        );
        if let Some(sizes) = &mut self.out.sizes {
            sizes.most_attributes = sizes.most_attributes.max(span.attributes.len());
            sizes.most_events = sizes.most_events.max(events.len());
            sizes.most_links = sizes.most_links.max(links.len());
        }
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
                .enumerate()
                .map(|(index, (l, trace_id, span_id))| checked_link(l, index, trace_id, span_id)),
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
                1 => event.time_unix_nano = r.fixed64_field(wire)?,
                2 => event.name = r.string_field(wire)?,
                3 => self.key_value(&mut r, wire)?,
                4 => event.dropped_attributes_count = r.u32_field(wire)?,
                _ => r.skip(field, wire)?,
            }
        }
        event.attributes = self.scratch.drain(mark..).collect();
        self.note_attributes(event.attributes.len());
        self.note_string(event.name.len());
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
                1 => trace_id = r.bytes_field(wire)?,
                2 => span_id = r.bytes_field(wire)?,
                3 => link.trace_state = r.string_field(wire)?,
                4 => self.key_value(&mut r, wire)?,
                5 => link.dropped_attributes_count = r.u32_field(wire)?,
                6 => link.flags = r.fixed32_field(wire)?,
                _ => r.skip(field, wire)?,
            }
        }
        link.attributes = self.scratch.drain(mark..).collect();
        self.note_attributes(link.attributes.len());
        self.note_string(link.trace_state.len());
        Ok((link, trace_id, span_id))
    }

    /// Reads a `Status` into `message`, returning its code (a repeated status merges).
    fn status(&self, start: usize, end: usize, message: &mut String, code: Option<i32>) -> Result<i32, WireError> {
        let mut code = code.unwrap_or(0);
        let mut r = self.reader(start, end, "Status");
        while let Some((field, wire)) = r.field()? {
            match field {
                2 => *message = r.string_field(wire)?,
                3 => code = r.i32_field(wire)?,
                _ => r.skip(field, wire)?,
            }
        }
        Ok(code)
    }

    /// Notes a string's length (or a bound on it) in `DecodedSizes::longest_string`.
    fn note_string(&mut self, len: usize) {
        if let Some(sizes) = &mut self.out.sizes {
            sizes.longest_string = sizes.longest_string.max(len);
        }
    }

    /// Notes an attribute key's length (or a bound on it) in `DecodedSizes::longest_key`.
    fn note_key(&mut self, len: usize) {
        if let Some(sizes) = &mut self.out.sizes {
            sizes.longest_key = sizes.longest_key.max(len);
        }
    }

    /// Notes the attribute count of an event, link, resource or scope in
    /// `DecodedSizes::most_attributes`.
    fn note_attributes(&mut self, n: usize) {
        if let Some(sizes) = &mut self.out.sizes {
            sizes.most_attributes = sizes.most_attributes.max(n);
        }
    }

    /// One `KeyValue` field, pushed onto `scratch`.
    fn key_value(&mut self, r: &mut Reader<'a>, wire: u8) -> Result<(), WireError> {
        let (start, end) = r.len_field(wire)?;
        let mut kv = KeyValue::default();
        let mut r = self.reader(start, end, "KeyValue");
        while let Some((field, wire)) = r.field()? {
            match field {
                1 => {
                    let at = r.pos;
                    let key = r.bytes_field(wire)?;
                    self.note_key(key.len());
                    kv.key = Key::from_utf8(key).ok_or_else(|| r.not_utf8(at))?;
                }
                2 => {
                    let (s, e) = r.len_field(wire)?;
                    // The encoded value is longer than any string or bytes inside it.
                    self.note_string(e - s);
                    self.any_value(s, e, &mut kv.value)?;
                }
                // `key_strindex` (profiles' string table): no meaning in traces.
                3 => {
                    r.i32_field(wire)?;
                }
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
                1 => AnyValue::String(r.string_field(wire)?),
                2 => AnyValue::Bool(r.varint_field(wire)? != 0),
                3 => AnyValue::Int(r.varint_field(wire)? as i64),
                4 => AnyValue::Double(f64::from_bits(r.fixed64_field(wire)?)),
                5 => {
                    let (s, e) = r.len_field(wire)?;
                    let mut items = match std::mem::take(value) {
                        AnyValue::Array(items) => items,
                        _ => Vec::new(),
                    };
                    let mut list = self.reader(s, e, "ArrayValue");
                    while let Some((field, wire)) = list.field()? {
                        match field {
                            1 => {
                                let (s, e) = list.len_field(wire)?;
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
                    let (s, e) = r.len_field(wire)?;
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
                7 => AnyValue::Bytes(r.bytes_field(wire)?.to_vec()),
                // `string_value_strindex` (profiles' string table): no value in traces.
                8 => {
                    r.i32_field(wire)?;
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

/// The longest key in `attrs`, nested key-value lists included.
fn longest_key(attrs: &[KeyValue]) -> usize {
    fn in_value(v: &AnyValue) -> usize {
        match v {
            AnyValue::KvList(kvs) => longest_key(kvs),
            AnyValue::Array(items) => items.iter().map(in_value).max().unwrap_or(0),
            _ => 0,
        }
    }
    attrs
        .iter()
        .map(|kv| kv.key.len().max(in_value(&kv.value)))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(service: &str, name: &str) -> Vec<u8> {
        let span = Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            name: name.into(),
            start_unix_nano: 1,
            end_unix_nano: 2,
            resource: Arc::new(Resource {
                attributes: vec![KeyValue::new("service.name", AnyValue::String(service.into()))],
                dropped_attributes_count: 0,
            }),
            scope: Arc::new(Scope {
                name: "lib".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut body = Vec::new();
        super::super::wire::export_request([&span], &mut body);
        body
    }

    fn decode(body: &[u8]) -> Span {
        decode_request(body).expect("decodes").batch.spans.remove(0)
    }

    /// `DecodedSizes::longest_key` bounds every attribute key wherever it is: span, event and
    /// link attributes, nested lists (in arrays too), resources and scopes, including a
    /// resource or scope served from the cache of recent ones on a second request.
    #[test]
    fn longest_key_bounds_every_attribute_key() {
        let key = |len: usize| "k".repeat(len);
        let nested =
            |len: usize| AnyValue::Array(vec![AnyValue::KvList(vec![KeyValue::new(key(len), AnyValue::Int(1))])]);
        let base = || Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            start_unix_nano: 1,
            end_unix_nano: 2,
            ..Default::default()
        };
        type Put<'a> = Box<dyn Fn(usize, &mut Span) + 'a>;
        let places: Vec<(&str, Put)> = vec![
            (
                "span",
                Box::new(|n, s| s.attributes.push(KeyValue::new(key(n), AnyValue::Int(1)))),
            ),
            (
                "nested",
                Box::new(|n, s| s.attributes.push(KeyValue::new("a", nested(n)))),
            ),
            (
                "event",
                Box::new(|n, s| {
                    s.events.push(Event {
                        attributes: vec![KeyValue::new(key(n), AnyValue::Int(1))],
                        ..Default::default()
                    })
                }),
            ),
            (
                "link",
                Box::new(|n, s| {
                    s.links.push(Link {
                        trace_id: [3; 16],
                        span_id: [4; 8],
                        attributes: vec![KeyValue::new(key(n), AnyValue::Int(1))],
                        ..Default::default()
                    })
                }),
            ),
            (
                "resource",
                Box::new(|n, s| {
                    s.resource = Arc::new(Resource {
                        attributes: vec![KeyValue::new("r", nested(n))],
                        dropped_attributes_count: 0,
                    })
                }),
            ),
            (
                "scope",
                Box::new(|n, s| {
                    s.scope = Arc::new(Scope {
                        attributes: vec![KeyValue::new(key(n), AnyValue::Int(1))],
                        ..Default::default()
                    })
                }),
            ),
        ];
        for (i, (place, put)) in places.iter().enumerate() {
            let n = 300 + i;
            let mut span = base();
            put(n, &mut span);
            let mut body = Vec::new();
            super::super::wire::export_request([&span], &mut body);
            // The second decode takes the resource and scope from the cache.
            for round in 0..2 {
                let sizes = decode_request(&body).expect("decodes").sizes.expect("noted");
                assert_eq!(sizes.longest_key, n, "{place}, round {round}");
            }
        }
    }

    #[test]
    fn requests_with_the_same_resource_and_scope_share_them() {
        let (a, b) = (decode(&request("checkout", "a")), decode(&request("checkout", "b")));
        assert!(Arc::ptr_eq(&a.resource, &b.resource));
        assert!(Arc::ptr_eq(&a.scope, &b.scope));
        assert_eq!(b.name, "b");

        let other = decode(&request("cart", "c"));
        assert!(!Arc::ptr_eq(&a.resource, &other.resource));
        assert_eq!(other.resource.service_name(), "cart");
        assert!(Arc::ptr_eq(&a.scope, &other.scope));
    }

    #[test]
    fn the_ring_forgets_its_oldest_and_skips_long_values() {
        let mut recent = Recent::new();
        let first = Arc::new(1);
        recent.put(b"first", &first);
        assert!(Arc::ptr_eq(&recent.get(b"first").expect("kept"), &first));
        for i in 0..RECENT_SLOTS {
            recent.put(format!("other {i}").as_bytes(), &Arc::new(2));
        }
        assert_eq!(recent.slots.len(), RECENT_SLOTS);
        assert!(recent.get(b"first").is_none());
        let long = vec![7u8; RECENT_MAX_BYTES + 1];
        recent.put(&long, &Arc::new(3));
        assert!(recent.get(&long).is_none());
    }
}
