//! OTLP protobuf ⇄ model.

use std::sync::Arc;

use super::pb::collector::trace::v1::ExportTraceServiceRequest;
use super::pb::common::v1 as common;
use super::pb::resource::v1 as resource;
use super::pb::trace::v1 as trace;
use crate::*;

/// Converts a decoded export request, moving its strings. Spans that are malformed are
/// reported in `rejected` (their index counts spans across the whole request); the rest are kept.
pub fn decode_request(req: ExportTraceServiceRequest) -> Decoded {
    let mut out = Decoded::default();
    let mut index = 0usize;
    for rs in req.resource_spans {
        let res = Arc::new(rs.resource.map(resource_from).unwrap_or_default());
        for ss in rs.scope_spans {
            let scope = Arc::new(ss.scope.map(scope_from).unwrap_or_default());
            out.batch.spans.reserve(ss.spans.len());
            for span in ss.spans {
                match span_from(span, &res, &scope) {
                    Ok(s) => out.batch.spans.push(s),
                    Err(error) => out.rejected.push(Rejected { index, error }),
                }
                index += 1;
            }
        }
    }
    out
}

pub fn resource_from(r: resource::Resource) -> Resource {
    Resource {
        attributes: attrs_from(r.attributes),
        dropped_attributes_count: r.dropped_attributes_count,
    }
}

pub fn scope_from(s: common::InstrumentationScope) -> Scope {
    Scope {
        name: s.name,
        version: s.version,
        attributes: attrs_from(s.attributes),
        dropped_attributes_count: s.dropped_attributes_count,
    }
}

fn fixed<const N: usize>(v: &[u8]) -> Option<[u8; N]> {
    v.try_into().ok()
}

pub fn span_from(s: trace::Span, res: &Arc<Resource>, scope: &Arc<Scope>) -> Result<Span, SpanError> {
    let links = s.links.into_iter().enumerate().map(|(index, l)| {
        let link = Link {
            trace_state: l.trace_state,
            attributes: attrs_from(l.attributes),
            dropped_attributes_count: l.dropped_attributes_count,
            flags: l.flags,
            ..Link::default()
        };
        checked_link(link, index, &l.trace_id, &l.span_id)
    });
    let checked = checked_span(
        RawSpanFields {
            trace_id: &s.trace_id,
            span_id: &s.span_id,
            parent_span_id: &s.parent_span_id,
            start: s.start_time_unix_nano,
            end: s.end_time_unix_nano,
            kind: s.kind,
            status_code: s.status.as_ref().map(|st| st.code),
        },
        links,
    )?;
    Ok(Span {
        trace_id: checked.trace_id,
        span_id: checked.span_id,
        parent_span_id: checked.parent_span_id,
        trace_state: s.trace_state,
        flags: s.flags,
        name: s.name,
        kind: checked.kind,
        start_unix_nano: s.start_time_unix_nano,
        end_unix_nano: s.end_time_unix_nano,
        attributes: attrs_from(s.attributes),
        dropped_attributes_count: s.dropped_attributes_count,
        events: s
            .events
            .into_iter()
            .map(|e| Event {
                time_unix_nano: e.time_unix_nano,
                name: e.name,
                attributes: attrs_from(e.attributes),
                dropped_attributes_count: e.dropped_attributes_count,
            })
            .collect(),
        dropped_events_count: s.dropped_events_count,
        links: checked.links,
        dropped_links_count: s.dropped_links_count,
        status: Status {
            code: checked.status_code,
            message: s.status.map(|st| st.message).unwrap_or_default(),
        },
        resource: res.clone(),
        scope: scope.clone(),
    })
}

/// A span's ids, times and enums as they arrive in OTLP protobuf, before any check.
pub(crate) struct RawSpanFields<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub start: u64,
    pub end: u64,
    pub kind: i32,
    /// `None` when the span has no `status` message.
    pub status_code: Option<i32>,
}

/// What `checked_span` lets through, typed.
pub(crate) struct CheckedSpan {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: SpanId,
    pub kind: SpanKind,
    pub status_code: StatusCode,
    pub links: Vec<Link>,
}

/// The rules an OTLP protobuf span must meet, in the order its error reports them; shared by
/// both protobuf decoders so they refuse the same spans for the same reasons.
pub(crate) fn checked_span(
    raw: RawSpanFields<'_>,
    links: impl Iterator<Item = Result<Link, SpanError>>,
) -> Result<CheckedSpan, SpanError> {
    let trace_id: TraceId = fixed(raw.trace_id).ok_or(SpanError::TraceIdLength(raw.trace_id.len()))?;
    if trace_id == [0; 16] {
        return Err(SpanError::ZeroTraceId);
    }
    let span_id: SpanId = fixed(raw.span_id).ok_or(SpanError::SpanIdLength(raw.span_id.len()))?;
    if span_id == [0; 8] {
        return Err(SpanError::ZeroSpanId);
    }
    let parent_span_id = if raw.parent_span_id.is_empty() {
        [0; 8]
    } else {
        fixed(raw.parent_span_id).ok_or(SpanError::ParentIdLength(raw.parent_span_id.len()))?
    };
    if raw.end < raw.start {
        return Err(SpanError::EndBeforeStart {
            start: raw.start,
            end: raw.end,
        });
    }
    let kind = SpanKind::from_i32(raw.kind).ok_or(SpanError::Kind(raw.kind))?;
    let status_code = match raw.status_code {
        Some(code) => StatusCode::from_i32(code).ok_or(SpanError::StatusCode(code))?,
        None => StatusCode::default(),
    };
    let links = links.collect::<Result<Vec<_>, _>>()?;
    Ok(CheckedSpan {
        trace_id,
        span_id,
        parent_span_id,
        kind,
        status_code,
        links,
    })
}

/// `link` with its raw ids checked and filled in.
pub(crate) fn checked_link(mut link: Link, index: usize, trace_id: &[u8], span_id: &[u8]) -> Result<Link, SpanError> {
    link.trace_id = fixed(trace_id).ok_or_else(|| SpanError::link_id_length(index, "trace id", 16, trace_id.len()))?;
    link.span_id = fixed(span_id).ok_or_else(|| SpanError::link_id_length(index, "span id", 8, span_id.len()))?;
    Ok(link)
}

pub fn attrs_from(kvs: Vec<common::KeyValue>) -> Vec<KeyValue> {
    kvs.into_iter()
        .map(|kv| KeyValue {
            key: kv.key.into(),
            value: kv.value.map(value_from).unwrap_or_default(),
        })
        .collect()
}

pub fn value_from(v: common::AnyValue) -> AnyValue {
    use common::any_value::Value;
    match v.value {
        None => AnyValue::Empty,
        Some(Value::StringValue(s)) => AnyValue::String(s),
        Some(Value::BoolValue(b)) => AnyValue::Bool(b),
        Some(Value::IntValue(i)) => AnyValue::Int(i),
        Some(Value::DoubleValue(d)) => AnyValue::Double(d),
        Some(Value::BytesValue(b)) => AnyValue::Bytes(b),
        Some(Value::ArrayValue(a)) => AnyValue::Array(a.values.into_iter().map(value_from).collect()),
        Some(Value::KvlistValue(kv)) => AnyValue::KvList(attrs_from(kv.values)),
        #[allow(unreachable_patterns)]
        Some(_) => AnyValue::Empty,
    }
}

pub fn value_to(v: &AnyValue) -> common::AnyValue {
    use common::any_value::Value;
    let value = match v {
        AnyValue::Empty => None,
        AnyValue::String(s) => Some(Value::StringValue(s.clone())),
        AnyValue::Bool(b) => Some(Value::BoolValue(*b)),
        AnyValue::Int(i) => Some(Value::IntValue(*i)),
        AnyValue::Double(d) => Some(Value::DoubleValue(*d)),
        AnyValue::Bytes(b) => Some(Value::BytesValue(b.clone())),
        AnyValue::Array(a) => Some(Value::ArrayValue(common::ArrayValue {
            values: a.iter().map(value_to).collect(),
        })),
        AnyValue::KvList(kv) => Some(Value::KvlistValue(common::KeyValueList { values: attrs_to(kv) })),
    };
    common::AnyValue { value }
}

pub fn attrs_to(kvs: &[KeyValue]) -> Vec<common::KeyValue> {
    kvs.iter()
        .map(|kv| common::KeyValue {
            key: kv.key.to_string(),
            value: Some(value_to(&kv.value)),
            ..Default::default()
        })
        .collect()
}

pub fn resource_to(r: &Resource) -> resource::Resource {
    resource::Resource {
        attributes: attrs_to(&r.attributes),
        dropped_attributes_count: r.dropped_attributes_count,
        ..Default::default()
    }
}

pub fn scope_to(s: &Scope) -> common::InstrumentationScope {
    common::InstrumentationScope {
        name: s.name.clone(),
        version: s.version.clone(),
        attributes: attrs_to(&s.attributes),
        dropped_attributes_count: s.dropped_attributes_count,
    }
}

pub fn span_to(s: &Span) -> trace::Span {
    trace::Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: s.trace_state.clone(),
        parent_span_id: if s.is_root() {
            Vec::new()
        } else {
            s.parent_span_id.to_vec()
        },
        flags: s.flags,
        name: s.name.clone(),
        kind: s.kind as i32,
        start_time_unix_nano: s.start_unix_nano,
        end_time_unix_nano: s.end_unix_nano,
        attributes: attrs_to(&s.attributes),
        dropped_attributes_count: s.dropped_attributes_count,
        events: s
            .events
            .iter()
            .map(|e| trace::span::Event {
                time_unix_nano: e.time_unix_nano,
                name: e.name.clone(),
                attributes: attrs_to(&e.attributes),
                dropped_attributes_count: e.dropped_attributes_count,
            })
            .collect(),
        dropped_events_count: s.dropped_events_count,
        links: s
            .links
            .iter()
            .map(|l| trace::span::Link {
                trace_id: l.trace_id.to_vec(),
                span_id: l.span_id.to_vec(),
                trace_state: l.trace_state.clone(),
                attributes: attrs_to(&l.attributes),
                dropped_attributes_count: l.dropped_attributes_count,
                flags: l.flags,
            })
            .collect(),
        dropped_links_count: s.dropped_links_count,
        status: if s.status == Status::default() {
            None
        } else {
            Some(trace::Status {
                message: s.status.message.clone(),
                code: s.status.code as i32,
            })
        },
    }
}

/// Groups spans back into resource and scope blocks. Spans sharing the same `Arc` (or an equal
/// resource/scope next to each other) land in one block.
pub fn encode_spans<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Vec<trace::ResourceSpans> {
    let mut out: Vec<trace::ResourceSpans> = Vec::new();
    let mut last: Option<(*const Resource, *const Scope)> = None;
    for s in spans {
        let key = (Arc::as_ptr(&s.resource), Arc::as_ptr(&s.scope));
        let same_res = last.is_some_and(|(r, _)| r == key.0);
        if !same_res {
            out.push(trace::ResourceSpans {
                resource: Some(resource_to(&s.resource)),
                scope_spans: Vec::new(),
                schema_url: String::new(),
            });
        }
        let rs = out.last_mut().expect("pushed above");
        let same_scope = same_res && last.is_some_and(|(_, sc)| sc == key.1);
        if !same_scope {
            rs.scope_spans.push(trace::ScopeSpans {
                scope: Some(scope_to(&s.scope)),
                spans: Vec::new(),
                schema_url: String::new(),
            });
        }
        rs.scope_spans.last_mut().expect("pushed above").spans.push(span_to(s));
        last = Some(key);
    }
    out
}

pub fn encode_request<'a>(spans: impl IntoIterator<Item = &'a Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: encode_spans(spans),
    }
}
