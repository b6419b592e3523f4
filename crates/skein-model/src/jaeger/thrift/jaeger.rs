//! The structs of jaeger.thrift (`Batch`, `Process`, `Span`, `Tag`, `Log`, `SpanRef`,
//! `ClientStats`) and agent.thrift's `Agent.emitBatch`, over either protocol. Field ids from
//! jaegertracing/jaeger-idl. Unknown fields are skipped, as thrift's own readers do.

use super::{
    BinaryReader, BinaryWriter, CompactReader, CompactWriter, MessageType, Protocol, ProtocolReader, ProtocolWriter,
    Result, TType, ThriftError,
};
use crate::jaeger::{trace_id_from_halves, trace_id_halves, JaegerLog, JaegerProcess, JaegerRef, JaegerSpan, RefType};
use crate::{AnyValue, KeyValue, SpanError};

/// The one method of agent.thrift that carries Jaeger spans.
pub const EMIT_BATCH: &str = "emitBatch";

// jaeger.thrift `TagType`.
const TAG_STRING: i32 = 0;
const TAG_DOUBLE: i32 = 1;
const TAG_BOOL: i32 = 2;
const TAG_LONG: i32 = 3;
const TAG_BINARY: i32 = 4;

/// What a client reports about its own losses (optional part of a batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientStats {
    pub full_queue_dropped_spans: i64,
    pub too_large_dropped_spans: i64,
    pub failed_to_emit_spans: i64,
}

/// A decoded `Batch`. Each span is either well-formed or the reason it is not; a structural
/// error (truncation, wrong types) fails the whole batch instead.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ThriftBatch {
    pub process: JaegerProcess,
    pub spans: Vec<std::result::Result<JaegerSpan, SpanError>>,
    pub seq_no: Option<i64>,
    pub stats: Option<ClientStats>,
}

/// Decodes a bare `Batch` struct (the collector's HTTP body); trailing bytes are an error.
pub fn decode_batch(protocol: Protocol, bytes: &[u8]) -> Result<ThriftBatch> {
    match protocol {
        Protocol::Binary => whole(BinaryReader::new(bytes), |r| {
            read_batch(r).map_err(|e| e.within("Batch"))
        }),
        Protocol::Compact => whole(CompactReader::new(bytes), |r| {
            read_batch(r).map_err(|e| e.within("Batch"))
        }),
    }
}

/// Decodes one agent datagram: an `Agent.emitBatch` message (call or oneway).
pub fn decode_emit_batch(protocol: Protocol, bytes: &[u8]) -> Result<ThriftBatch> {
    match protocol {
        Protocol::Binary => whole(BinaryReader::new(bytes), read_emit_batch),
        Protocol::Compact => whole(CompactReader::new(bytes), read_emit_batch),
    }
}

fn whole<'a, R: ProtocolReader<'a>>(mut r: R, f: impl FnOnce(&mut R) -> Result<ThriftBatch>) -> Result<ThriftBatch> {
    let batch = f(&mut r)?;
    if r.remaining() != 0 {
        return Err(r.error(format!("{} unexpected bytes after the batch", r.remaining())));
    }
    Ok(batch)
}

fn read_emit_batch<'a, R: ProtocolReader<'a>>(r: &mut R) -> Result<ThriftBatch> {
    let at = r.offset();
    let header = r.read_message_begin()?;
    if header.name != EMIT_BATCH {
        return Err(ThriftError::new(
            format!(
                "unsupported agent method {:?} (only {EMIT_BATCH} is accepted)",
                header.name
            ),
            at,
        ));
    }
    if !matches!(header.message_type, MessageType::Call | MessageType::Oneway) {
        return Err(ThriftError::new(
            format!("{EMIT_BATCH} message of type {:?}, want a call", header.message_type),
            at,
        ));
    }
    let mut batch = None;
    r.read_struct_begin()?;
    while let Some((t, id)) = r.read_field_begin()? {
        match (id, t) {
            (1, TType::Struct) => batch = Some(read_batch(r).map_err(|e| e.within("emitBatch.batch"))?),
            _ => r.skip(t, 1)?,
        }
    }
    r.read_struct_end();
    batch.ok_or_else(|| r.error("emitBatch has no batch argument (field 1)"))
}

fn read_batch<'a, R: ProtocolReader<'a>>(r: &mut R) -> Result<ThriftBatch> {
    let mut process = None;
    let mut spans = None;
    let mut out = ThriftBatch::default();
    r.read_struct_begin()?;
    while let Some((t, id)) = r.read_field_begin()? {
        match (id, t) {
            (1, TType::Struct) => process = Some(read_process(r).map_err(|e| e.within("process"))?),
            (2, TType::List) => spans = Some(read_list(r, TType::Struct, "spans", read_span)?),
            (3, TType::I64) => out.seq_no = Some(r.read_i64()?),
            (4, TType::Struct) => out.stats = Some(read_stats(r).map_err(|e| e.within("stats"))?),
            _ => r.skip(t, 1)?,
        }
    }
    r.read_struct_end();
    out.process = process.ok_or_else(|| r.error("required field process (1) is missing"))?;
    out.spans = spans.ok_or_else(|| r.error("required field spans (2) is missing"))?;
    Ok(out)
}

/// Reads a `list<elem>`, naming the failing element's index in the error.
fn read_list<'a, R: ProtocolReader<'a>, T>(
    r: &mut R,
    elem: TType,
    name: &str,
    mut f: impl FnMut(&mut R) -> Result<T>,
) -> Result<Vec<T>> {
    let at = r.offset();
    let (t, n) = r.read_list_begin().map_err(|e| e.within(name))?;
    if n > 0 && t != elem {
        return Err(ThriftError::new(format!("{name}: list of {t:?}, want {elem:?}"), at));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(f(r).map_err(|e| e.within(&format!("{name}[{i}]")))?);
    }
    Ok(out)
}

fn read_stats<'a, R: ProtocolReader<'a>>(r: &mut R) -> Result<ClientStats> {
    let mut s = ClientStats::default();
    r.read_struct_begin()?;
    while let Some((t, id)) = r.read_field_begin()? {
        match (id, t) {
            (1, TType::I64) => s.full_queue_dropped_spans = r.read_i64()?,
            (2, TType::I64) => s.too_large_dropped_spans = r.read_i64()?,
            (3, TType::I64) => s.failed_to_emit_spans = r.read_i64()?,
            _ => r.skip(t, 1)?,
        }
    }
    r.read_struct_end();
    Ok(s)
}

fn read_process<'a, R: ProtocolReader<'a>>(r: &mut R) -> Result<JaegerProcess> {
    let mut p = JaegerProcess::default();
    r.read_struct_begin()?;
    while let Some((t, id)) = r.read_field_begin()? {
        match (id, t) {
            (1, TType::Binary) => p.service_name = r.read_string().map_err(|e| e.within("serviceName"))?,
            (2, TType::List) => p.tags = read_list(r, TType::Struct, "tags", read_tag)?,
            _ => r.skip(t, 1)?,
        }
    }
    r.read_struct_end();
    Ok(p)
}

fn read_tag<'a, R: ProtocolReader<'a>>(r: &mut R) -> Result<KeyValue> {
    let mut key = String::new();
    let mut v_type = TAG_STRING;
    let (mut v_str, mut v_double, mut v_bool, mut v_long, mut v_binary) = (String::new(), 0.0, false, 0, Vec::new());
    r.read_struct_begin()?;
    while let Some((t, id)) = r.read_field_begin()? {
        match (id, t) {
            (1, TType::Binary) => key = r.read_string().map_err(|e| e.within("key"))?,
            (2, TType::I32) => v_type = r.read_i32()?,
            (3, TType::Binary) => v_str = r.read_string().map_err(|e| e.within(&format!("{key:?}.vStr")))?,
            (4, TType::Double) => v_double = r.read_double()?,
            (5, TType::Bool) => v_bool = r.read_bool()?,
            (6, TType::I64) => v_long = r.read_i64()?,
            (7, TType::Binary) => v_binary = r.read_binary()?.to_vec(),
            _ => r.skip(t, 1)?,
        }
    }
    r.read_struct_end();
    let value = match v_type {
        TAG_DOUBLE => AnyValue::Double(v_double),
        TAG_BOOL => AnyValue::Bool(v_bool),
        TAG_LONG => AnyValue::Int(v_long),
        TAG_BINARY => AnyValue::Bytes(v_binary),
        // STRING, and any type a newer client may invent: keep the string.
        _ => AnyValue::String(v_str),
    };
    Ok(KeyValue { key: key.into(), value })
}

fn micros_to_nanos(micros: i64, what: &'static str) -> std::result::Result<u64, SpanError> {
    u64::try_from(micros)
        .ok()
        .and_then(|m| m.checked_mul(1000))
        .ok_or(SpanError::TimeRange(what))
}

fn read_log<'a, R: ProtocolReader<'a>>(r: &mut R) -> Result<(Option<i64>, Vec<KeyValue>)> {
    let mut timestamp = None;
    let mut fields = Vec::new();
    r.read_struct_begin()?;
    while let Some((t, id)) = r.read_field_begin()? {
        match (id, t) {
            (1, TType::I64) => timestamp = Some(r.read_i64()?),
            (2, TType::List) => fields = read_list(r, TType::Struct, "fields", read_tag)?,
            _ => r.skip(t, 1)?,
        }
    }
    r.read_struct_end();
    Ok((timestamp, fields))
}

fn read_ref<'a, R: ProtocolReader<'a>>(r: &mut R) -> Result<JaegerRef> {
    let (mut ref_type, mut low, mut high, mut span_id) = (0, 0, 0, 0);
    r.read_struct_begin()?;
    while let Some((t, id)) = r.read_field_begin()? {
        match (id, t) {
            (1, TType::I32) => ref_type = r.read_i32()?,
            (2, TType::I64) => low = r.read_i64()?,
            (3, TType::I64) => high = r.read_i64()?,
            (4, TType::I64) => span_id = r.read_i64()?,
            _ => r.skip(t, 1)?,
        }
    }
    r.read_struct_end();
    Ok(JaegerRef {
        ref_type: if ref_type == 1 {
            RefType::FollowsFrom
        } else {
            RefType::ChildOf
        },
        trace_id: trace_id_from_halves(high, low),
        span_id: span_id.to_be_bytes(),
    })
}

/// The outer `Result` is a structural error; the inner one a span that is readable but not valid.
fn read_span<'a, R: ProtocolReader<'a>>(r: &mut R) -> Result<std::result::Result<JaegerSpan, SpanError>> {
    let (mut low, mut high, mut span_id, mut parent) = (None, 0i64, None, 0i64);
    let (mut start, mut duration) = (None, None);
    let mut logs = Vec::new();
    let mut span = JaegerSpan::default();
    r.read_struct_begin()?;
    while let Some((t, id)) = r.read_field_begin()? {
        match (id, t) {
            (1, TType::I64) => low = Some(r.read_i64()?),
            (2, TType::I64) => high = r.read_i64()?,
            (3, TType::I64) => span_id = Some(r.read_i64()?),
            (4, TType::I64) => parent = r.read_i64()?,
            (5, TType::Binary) => span.operation_name = r.read_string().map_err(|e| e.within("operationName"))?,
            (6, TType::List) => span.references = read_list(r, TType::Struct, "references", read_ref)?,
            (7, TType::I32) => span.flags = r.read_i32()? as u32,
            (8, TType::I64) => start = Some(r.read_i64()?),
            (9, TType::I64) => duration = Some(r.read_i64()?),
            (10, TType::List) => span.tags = read_list(r, TType::Struct, "tags", read_tag)?,
            (11, TType::List) => logs = read_list(r, TType::Struct, "logs", read_log)?,
            _ => r.skip(t, 1)?,
        }
    }
    r.read_struct_end();

    let valid = (|| {
        span.trace_id = trace_id_from_halves(high, low.ok_or(SpanError::MissingField("traceIdLow"))?);
        span.span_id = span_id.ok_or(SpanError::MissingField("spanId"))?.to_be_bytes();
        span.parent_span_id = parent.to_be_bytes();
        span.start_unix_nano = micros_to_nanos(start.ok_or(SpanError::MissingField("startTime"))?, "startTime")?;
        span.duration_nano = micros_to_nanos(duration.unwrap_or(0), "duration")?;
        span.logs = logs
            .into_iter()
            .map(|(timestamp, fields)| {
                Ok(JaegerLog {
                    time_unix_nano: micros_to_nanos(
                        timestamp.ok_or(SpanError::MissingField("log timestamp"))?,
                        "log timestamp",
                    )?,
                    fields,
                })
            })
            .collect::<std::result::Result<_, SpanError>>()?;
        Ok(span)
    })();
    Ok(valid)
}

// ---- writing ----------------------------------------------------------------------------

/// Encodes a bare `Batch` struct (what the collector's HTTP endpoint takes).
pub fn encode_batch(
    protocol: Protocol,
    process: &JaegerProcess,
    spans: &[JaegerSpan],
    seq_no: Option<i64>,
    stats: Option<ClientStats>,
) -> Vec<u8> {
    fn go<W: ProtocolWriter>(
        mut w: W,
        p: &JaegerProcess,
        s: &[JaegerSpan],
        n: Option<i64>,
        c: Option<ClientStats>,
    ) -> Vec<u8> {
        write_batch(&mut w, p, s, n, c);
        w.into_bytes()
    }
    match protocol {
        Protocol::Binary => go(BinaryWriter::new(), process, spans, seq_no, stats),
        Protocol::Compact => go(CompactWriter::new(), process, spans, seq_no, stats),
    }
}

/// Encodes an agent datagram: a oneway `Agent.emitBatch` message.
pub fn encode_emit_batch(protocol: Protocol, seq_id: i32, process: &JaegerProcess, spans: &[JaegerSpan]) -> Vec<u8> {
    fn go<W: ProtocolWriter>(mut w: W, seq_id: i32, p: &JaegerProcess, s: &[JaegerSpan]) -> Vec<u8> {
        w.write_message_begin(EMIT_BATCH, MessageType::Oneway, seq_id);
        w.write_struct_begin();
        w.write_field_begin(TType::Struct, 1);
        write_batch(&mut w, p, s, None, None);
        w.write_struct_end();
        w.into_bytes()
    }
    match protocol {
        Protocol::Binary => go(BinaryWriter::new(), seq_id, process, spans),
        Protocol::Compact => go(CompactWriter::new(), seq_id, process, spans),
    }
}

fn write_batch<W: ProtocolWriter>(
    w: &mut W,
    process: &JaegerProcess,
    spans: &[JaegerSpan],
    seq_no: Option<i64>,
    stats: Option<ClientStats>,
) {
    w.write_struct_begin();
    w.write_field_begin(TType::Struct, 1);
    write_process(w, process);
    w.write_field_begin(TType::List, 2);
    w.write_list_begin(TType::Struct, spans.len());
    for s in spans {
        write_span(w, s);
    }
    if let Some(n) = seq_no {
        w.write_field_begin(TType::I64, 3);
        w.write_i64(n);
    }
    if let Some(c) = stats {
        w.write_field_begin(TType::Struct, 4);
        w.write_struct_begin();
        for (id, v) in [
            (1, c.full_queue_dropped_spans),
            (2, c.too_large_dropped_spans),
            (3, c.failed_to_emit_spans),
        ] {
            w.write_field_begin(TType::I64, id);
            w.write_i64(v);
        }
        w.write_struct_end();
    }
    w.write_struct_end();
}

fn write_process<W: ProtocolWriter>(w: &mut W, p: &JaegerProcess) {
    w.write_struct_begin();
    w.write_field_begin(TType::Binary, 1);
    w.write_binary(p.service_name.as_bytes());
    write_tags(w, 2, &p.tags);
    w.write_struct_end();
}

fn write_tags<W: ProtocolWriter>(w: &mut W, field: i16, tags: &[KeyValue]) {
    w.write_field_begin(TType::List, field);
    w.write_list_begin(TType::Struct, tags.len());
    for kv in tags {
        w.write_struct_begin();
        w.write_field_begin(TType::Binary, 1);
        w.write_binary(kv.key.as_bytes());
        let text;
        let (v_type, field, ty): (i32, i16, TType) = match &kv.value {
            AnyValue::Double(_) => (TAG_DOUBLE, 4, TType::Double),
            AnyValue::Bool(_) => (TAG_BOOL, 5, TType::Bool),
            AnyValue::Int(_) => (TAG_LONG, 6, TType::I64),
            AnyValue::Bytes(_) => (TAG_BINARY, 7, TType::Binary),
            _ => (TAG_STRING, 3, TType::Binary),
        };
        w.write_field_begin(TType::I32, 2);
        w.write_i32(v_type);
        w.write_field_begin(ty, field);
        match &kv.value {
            AnyValue::Double(d) => w.write_double(*d),
            AnyValue::Bool(b) => w.write_bool(*b),
            AnyValue::Int(i) => w.write_i64(*i),
            AnyValue::Bytes(b) => w.write_binary(b),
            AnyValue::String(s) => w.write_binary(s.as_bytes()),
            other => {
                text = other.to_display_string();
                w.write_binary(text.as_bytes())
            }
        }
        w.write_struct_end();
    }
}

/// Nanoseconds as thrift's microseconds (sub-microsecond precision is lost).
fn micros(nanos: u64) -> i64 {
    (nanos / 1000) as i64
}

fn write_span<W: ProtocolWriter>(w: &mut W, s: &JaegerSpan) {
    let (high, low) = trace_id_halves(&s.trace_id);
    w.write_struct_begin();
    for (id, v) in [
        (1, low),
        (2, high),
        (3, i64::from_be_bytes(s.span_id)),
        (4, i64::from_be_bytes(s.parent_span_id)),
    ] {
        w.write_field_begin(TType::I64, id);
        w.write_i64(v);
    }
    w.write_field_begin(TType::Binary, 5);
    w.write_binary(s.operation_name.as_bytes());
    if !s.references.is_empty() {
        w.write_field_begin(TType::List, 6);
        w.write_list_begin(TType::Struct, s.references.len());
        for r in &s.references {
            let (high, low) = trace_id_halves(&r.trace_id);
            w.write_struct_begin();
            w.write_field_begin(TType::I32, 1);
            w.write_i32(match r.ref_type {
                RefType::ChildOf => 0,
                RefType::FollowsFrom => 1,
            });
            for (id, v) in [(2, low), (3, high), (4, i64::from_be_bytes(r.span_id))] {
                w.write_field_begin(TType::I64, id);
                w.write_i64(v);
            }
            w.write_struct_end();
        }
    }
    w.write_field_begin(TType::I32, 7);
    w.write_i32(s.flags as i32);
    w.write_field_begin(TType::I64, 8);
    w.write_i64(micros(s.start_unix_nano));
    w.write_field_begin(TType::I64, 9);
    w.write_i64(micros(s.duration_nano));
    if !s.tags.is_empty() {
        write_tags(w, 10, &s.tags);
    }
    if !s.logs.is_empty() {
        w.write_field_begin(TType::List, 11);
        w.write_list_begin(TType::Struct, s.logs.len());
        for l in &s.logs {
            w.write_struct_begin();
            w.write_field_begin(TType::I64, 1);
            w.write_i64(micros(l.time_unix_nano));
            write_tags(w, 2, &l.fields);
            w.write_struct_end();
        }
    }
    w.write_struct_end();
}
