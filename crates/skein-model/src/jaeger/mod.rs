//! Jaeger codecs: thrift (binary, compact) and protobuf (api_v2 model) to and from the one model.
//!
//! Every Jaeger wire format is first read into the intermediate [`JaegerSpan`] (ids as bytes,
//! times in nanoseconds, typed tags as model [`KeyValue`]s), and [`convert`] holds the one
//! mapping between that and the model, following OpenTelemetry's Jaeger translator.

pub mod convert;
pub mod proto;
pub mod thrift;

use crate::{KeyValue, SpanId, TraceId};

pub use convert::{batch_to_model, process_from_resource, resource_from_process, span_from_model, span_to_model};

/// The service that emitted spans: its name and its tags (the model's resource).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JaegerProcess {
    pub service_name: String,
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefType {
    #[default]
    ChildOf,
    FollowsFrom,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct JaegerRef {
    pub ref_type: RefType,
    pub trace_id: TraceId,
    pub span_id: SpanId,
}

/// A timed set of fields; the `event` field names it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JaegerLog {
    pub time_unix_nano: u64,
    pub fields: Vec<KeyValue>,
}

/// One Jaeger span as every Jaeger format carries it. Tag values are only ever String, Bool,
/// Int, Double or Bytes (Jaeger's five tag types).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JaegerSpan {
    /// 64-bit ids (thrift `traceIdHigh` = 0) are left-padded with zeros.
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// Thrift's `parentSpanId` field: the parent when no CHILD_OF reference says otherwise.
    /// All zeros when absent.
    pub parent_span_id: SpanId,
    pub operation_name: String,
    pub references: Vec<JaegerRef>,
    /// 1 = sampled, 2 = debug.
    pub flags: u32,
    pub start_unix_nano: u64,
    pub duration_nano: u64,
    pub tags: Vec<KeyValue>,
    pub logs: Vec<JaegerLog>,
    /// A span's own process, which takes priority over its batch's (protobuf only).
    pub process: Option<JaegerProcess>,
}

/// Splits a 128-bit trace id into thrift's (high, low) halves.
pub fn trace_id_halves(id: &TraceId) -> (i64, i64) {
    let high = i64::from_be_bytes(id[..8].try_into().expect("8 bytes"));
    let low = i64::from_be_bytes(id[8..].try_into().expect("8 bytes"));
    (high, low)
}

pub fn trace_id_from_halves(high: i64, low: i64) -> TraceId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&high.to_be_bytes());
    id[8..].copy_from_slice(&low.to_be_bytes());
    id
}
