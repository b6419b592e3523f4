//! `jaeger.api_v2` protobuf messages (model.proto and collector.proto of jaegertracing/jaeger-idl),
//! written by hand with `prost` so the build needs no protoc. Field numbers follow the .proto files.
//!
//! Ids are `bytes`: trace ids 16 bytes, span ids 8 bytes, big-endian. Jaeger's Go code also
//! accepts 8-byte trace ids (the high half omitted); [`super::JaegerSpan::from_proto`] does too.
//!
//! The Jaeger gRPC query service (api_v2 QueryService) builds on these types.

pub use prost_types::{Duration, Timestamp};

/// `jaeger.api_v2.ValueType`: the type of a [`KeyValue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ValueType {
    String = 0,
    Bool = 1,
    Int64 = 2,
    Float64 = 3,
    Binary = 4,
}

/// A typed tag; only the field matching `v_type` is meaningful.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(enumeration = "ValueType", tag = "2")]
    pub v_type: i32,
    #[prost(string, tag = "3")]
    pub v_str: String,
    #[prost(bool, tag = "4")]
    pub v_bool: bool,
    #[prost(int64, tag = "5")]
    pub v_int64: i64,
    #[prost(double, tag = "6")]
    pub v_float64: f64,
    #[prost(bytes = "vec", tag = "7")]
    pub v_binary: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Log {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(message, repeated, tag = "2")]
    pub fields: Vec<KeyValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SpanRefType {
    ChildOf = 0,
    FollowsFrom = 1,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SpanRef {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(enumeration = "SpanRefType", tag = "3")]
    pub ref_type: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Process {
    #[prost(string, tag = "1")]
    pub service_name: String,
    #[prost(message, repeated, tag = "2")]
    pub tags: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub operation_name: String,
    #[prost(message, repeated, tag = "4")]
    pub references: Vec<SpanRef>,
    #[prost(uint32, tag = "5")]
    pub flags: u32,
    #[prost(message, optional, tag = "6")]
    pub start_time: Option<Timestamp>,
    #[prost(message, optional, tag = "7")]
    pub duration: Option<Duration>,
    #[prost(message, repeated, tag = "8")]
    pub tags: Vec<KeyValue>,
    #[prost(message, repeated, tag = "9")]
    pub logs: Vec<Log>,
    /// Takes priority over the batch's process when set.
    #[prost(message, optional, tag = "10")]
    pub process: Option<Process>,
    #[prost(string, tag = "11")]
    pub process_id: String,
    #[prost(string, repeated, tag = "12")]
    pub warnings: Vec<String>,
}

/// `Trace.ProcessMapping`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProcessMapping {
    #[prost(string, tag = "1")]
    pub process_id: String,
    #[prost(message, optional, tag = "2")]
    pub process: Option<Process>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Trace {
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<Span>,
    #[prost(message, repeated, tag = "2")]
    pub process_map: Vec<ProcessMapping>,
    #[prost(string, repeated, tag = "3")]
    pub warnings: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Batch {
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<Span>,
    #[prost(message, optional, tag = "2")]
    pub process: Option<Process>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DependencyLink {
    #[prost(string, tag = "1")]
    pub parent: String,
    #[prost(string, tag = "2")]
    pub child: String,
    #[prost(uint64, tag = "3")]
    pub call_count: u64,
    #[prost(string, tag = "4")]
    pub source: String,
}

/// collector.proto: the request of `jaeger.api_v2.CollectorService/PostSpans`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PostSpansRequest {
    #[prost(message, optional, tag = "1")]
    pub batch: Option<Batch>,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct PostSpansResponse {}

/// gRPC path of the collector's one method.
pub const POST_SPANS_PATH: &str = "/jaeger.api_v2.CollectorService/PostSpans";

/// Nanoseconds since the epoch as a protobuf timestamp (never negative here).
pub fn timestamp_from_nanos(nanos: u64) -> Timestamp {
    Timestamp {
        seconds: (nanos / 1_000_000_000) as i64,
        nanos: (nanos % 1_000_000_000) as i32,
    }
}

pub fn duration_from_nanos(nanos: u64) -> Duration {
    Duration {
        seconds: (nanos / 1_000_000_000) as i64,
        nanos: (nanos % 1_000_000_000) as i32,
    }
}

/// `None` when the timestamp is before 1970, out of range or not normalized.
pub fn nanos_from_timestamp(t: &Timestamp) -> Option<u64> {
    seconds_nanos(t.seconds, t.nanos)
}

/// `None` when the duration is negative or out of range.
pub fn nanos_from_duration(d: &Duration) -> Option<u64> {
    seconds_nanos(d.seconds, d.nanos)
}

fn seconds_nanos(seconds: i64, nanos: i32) -> Option<u64> {
    if seconds < 0 || !(0..1_000_000_000).contains(&nanos) {
        return None;
    }
    (seconds as u64).checked_mul(1_000_000_000)?.checked_add(nanos as u64)
}

// ---- protobuf ⇄ the intermediate Jaeger span ----------------------------------------------

use super::{convert, JaegerLog, JaegerProcess, JaegerRef, JaegerSpan, RefType};
use crate::{AnyValue, Decoded, SpanError};

/// Converts a PostSpans request into model spans; malformed spans are reported by their index
/// in `batch.spans`, the rest kept. A span's own process takes priority over the batch's.
pub fn decode_post_spans(req: PostSpansRequest) -> Decoded {
    let Some(batch) = req.batch else {
        return Decoded::default();
    };
    let process = batch.process.map(process_from_proto).unwrap_or_default();
    convert::batch_to_model(process, batch.spans.into_iter().map(span_from_proto))
}

pub fn process_from_proto(p: Process) -> JaegerProcess {
    JaegerProcess {
        service_name: p.service_name,
        tags: p.tags.into_iter().map(tag_from_proto).collect(),
    }
}

pub fn process_to_proto(p: &JaegerProcess) -> Process {
    Process {
        service_name: p.service_name.clone(),
        tags: p.tags.iter().map(tag_to_proto).collect(),
    }
}

/// Jaeger writes 64-bit trace ids as 8 bytes; they are left-padded to 16.
fn trace_id_from(bytes: &[u8]) -> Option<crate::TraceId> {
    let mut id = [0u8; 16];
    match bytes.len() {
        16 => id.copy_from_slice(bytes),
        8 => id[8..].copy_from_slice(bytes),
        _ => return None,
    }
    Some(id)
}

pub fn span_from_proto(s: Span) -> Result<JaegerSpan, SpanError> {
    let trace_id = trace_id_from(&s.trace_id).ok_or(SpanError::TraceIdLength(s.trace_id.len()))?;
    let span_id: crate::SpanId = s
        .span_id
        .as_slice()
        .try_into()
        .map_err(|_| SpanError::SpanIdLength(s.span_id.len()))?;
    let references = s
        .references
        .into_iter()
        .enumerate()
        .map(|(index, r)| {
            let bad = |id: &str, want: &str, got: usize| SpanError::LinkIds {
                what: "reference",
                index,
                problem: format!("{id} must be {want} bytes, got {got}"),
            };
            Ok(JaegerRef {
                ref_type: if r.ref_type == SpanRefType::FollowsFrom as i32 {
                    RefType::FollowsFrom
                } else {
                    RefType::ChildOf
                },
                trace_id: trace_id_from(&r.trace_id).ok_or_else(|| bad("trace id", "8 or 16", r.trace_id.len()))?,
                span_id: r
                    .span_id
                    .as_slice()
                    .try_into()
                    .map_err(|_| bad("span id", "8", r.span_id.len()))?,
            })
        })
        .collect::<Result<Vec<_>, SpanError>>()?;
    let start = s.start_time.ok_or(SpanError::MissingField("start_time"))?;
    let start_unix_nano = nanos_from_timestamp(&start).ok_or(SpanError::TimeRange("start_time"))?;
    let duration_nano = match s.duration {
        Some(d) => nanos_from_duration(&d).ok_or(SpanError::TimeRange("duration"))?,
        None => 0,
    };
    let logs = s
        .logs
        .into_iter()
        .map(|l| {
            let time_unix_nano = match l.timestamp {
                Some(t) => nanos_from_timestamp(&t).ok_or(SpanError::TimeRange("log timestamp"))?,
                None => return Err(SpanError::MissingField("log timestamp")),
            };
            Ok(JaegerLog {
                time_unix_nano,
                fields: l.fields.into_iter().map(tag_from_proto).collect(),
            })
        })
        .collect::<Result<Vec<_>, SpanError>>()?;
    Ok(JaegerSpan {
        trace_id,
        span_id,
        parent_span_id: [0; 8],
        operation_name: s.operation_name,
        references,
        flags: s.flags,
        start_unix_nano,
        duration_nano,
        tags: s.tags.into_iter().map(tag_from_proto).collect(),
        logs,
        process: s.process.map(process_from_proto),
    })
}

/// A tag of an unknown type keeps its string value.
pub fn tag_from_proto(kv: KeyValue) -> crate::KeyValue {
    let value = match ValueType::try_from(kv.v_type) {
        Ok(ValueType::Bool) => AnyValue::Bool(kv.v_bool),
        Ok(ValueType::Int64) => AnyValue::Int(kv.v_int64),
        Ok(ValueType::Float64) => AnyValue::Double(kv.v_float64),
        Ok(ValueType::Binary) => AnyValue::Bytes(kv.v_binary),
        Ok(ValueType::String) | Err(_) => AnyValue::String(kv.v_str),
    };
    crate::KeyValue {
        key: kv.key.into(),
        value,
    }
}

pub fn tag_to_proto(kv: &crate::KeyValue) -> KeyValue {
    let mut out = KeyValue {
        key: kv.key.to_string(),
        ..KeyValue::default()
    };
    match &kv.value {
        AnyValue::Bool(b) => {
            out.v_type = ValueType::Bool as i32;
            out.v_bool = *b;
        }
        AnyValue::Int(i) => {
            out.v_type = ValueType::Int64 as i32;
            out.v_int64 = *i;
        }
        AnyValue::Double(d) => {
            out.v_type = ValueType::Float64 as i32;
            out.v_float64 = *d;
        }
        AnyValue::Bytes(b) => {
            out.v_type = ValueType::Binary as i32;
            out.v_binary = b.clone();
        }
        AnyValue::String(s) => out.v_str = s.clone(),
        other => out.v_str = other.to_display_string(),
    }
    out
}

pub fn span_to_proto(s: &JaegerSpan) -> Span {
    Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        operation_name: s.operation_name.clone(),
        references: s
            .references
            .iter()
            .map(|r| SpanRef {
                trace_id: r.trace_id.to_vec(),
                span_id: r.span_id.to_vec(),
                ref_type: match r.ref_type {
                    RefType::ChildOf => SpanRefType::ChildOf,
                    RefType::FollowsFrom => SpanRefType::FollowsFrom,
                } as i32,
            })
            .collect(),
        flags: s.flags,
        start_time: Some(timestamp_from_nanos(s.start_unix_nano)),
        duration: Some(duration_from_nanos(s.duration_nano)),
        tags: s.tags.iter().map(tag_to_proto).collect(),
        logs: s
            .logs
            .iter()
            .map(|l| Log {
                timestamp: Some(timestamp_from_nanos(l.time_unix_nano)),
                fields: l.fields.iter().map(tag_to_proto).collect(),
            })
            .collect(),
        process: s.process.as_ref().map(process_to_proto),
        process_id: String::new(),
        warnings: Vec::new(),
    }
}

/// A model span as the api_v2 query service returns it: with its process embedded.
pub fn span_from_model(span: &crate::Span) -> Span {
    let mut s = span_to_proto(&convert::span_from_model(span));
    s.process = Some(process_to_proto(&convert::process_from_resource(&span.resource)));
    s
}

/// Model spans as the batches a Jaeger client would post, one per process.
pub fn batches_from_model(spans: &[crate::Span]) -> Vec<Batch> {
    convert::group_by_process(spans)
        .into_iter()
        .map(|(process, spans)| Batch {
            spans: spans.iter().map(span_to_proto).collect(),
            process: Some(process_to_proto(&process)),
        })
        .collect()
}
