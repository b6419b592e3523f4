//! Zipkin JSON v2: `[{"traceId", "id", "parentId", "kind", "name", "timestamp", "duration",
//! "localEndpoint", "remoteEndpoint", "annotations", "tags", "debug", "shared"}]`.
//! Reading is lenient where real clients differ (`"kind": null`, numeric tag values, floats for
//! integers); a span that cannot be used is rejected alone with the reason.

use serde_json::{json, Map, Value};

use super::{span_id_from_hex, trace_id_from_hex, Endpoint, Kind, ZipkinError, ZipkinSpan};
use crate::{Decoded, Span, SpanError};

/// Decodes a `POST /api/v2/spans` JSON body.
pub fn decode(body: &[u8]) -> Result<Decoded, ZipkinError> {
    let items = match serde_json::from_slice::<Value>(body)? {
        Value::Array(items) => items,
        other => return Err(ZipkinError::NotArray(json_type(&other))),
    };
    let spans = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| (i, span_from_json(&item)))
        .collect();
    Ok(super::decoded_from(spans))
}

pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn malformed(msg: String) -> SpanError {
    SpanError::Malformed(msg)
}

/// An optional string field; `null` counts as absent.
pub(crate) fn opt_str<'a>(o: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, SpanError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(malformed(format!("{key} must be a string, got {}", json_type(other)))),
    }
}

/// An optional non-negative integer (µs); floats with no fraction are accepted.
pub(crate) fn opt_u64(o: &Map<String, Value>, key: &'static str) -> Result<Option<u64>, SpanError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                Ok(Some(v))
            } else if n.as_i64().is_some() || n.as_f64().is_some_and(|f| f < 0.0) {
                Err(SpanError::TimeRange(key))
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() && f.fract() == 0.0 && f < u64::MAX as f64 => Ok(Some(f as u64)),
                    _ => Err(malformed(format!("{key} {n} is not a whole number of microseconds"))),
                }
            }
        }
        Some(other) => Err(malformed(format!("{key} must be a number, got {}", json_type(other)))),
    }
}

pub(crate) fn opt_bool(o: &Map<String, Value>, key: &str) -> Result<bool, SpanError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(malformed(format!("{key} must be a boolean, got {}", json_type(other)))),
    }
}

pub(crate) fn endpoint(o: &Map<String, Value>, key: &str) -> Result<Option<Endpoint>, SpanError> {
    let e = match o.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(e)) => e,
        Some(other) => return Err(malformed(format!("{key} must be an object, got {}", json_type(other)))),
    };
    let port = match e.get("port") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| malformed(format!("{key}.port {n} is not a port number")))?,
        Some(other) => {
            return Err(malformed(format!(
                "{key}.port must be a number, got {}",
                json_type(other)
            )))
        }
    };
    Ok(Some(Endpoint {
        service_name: opt_str(e, "serviceName")?.unwrap_or_default().to_string(),
        ipv4: opt_str(e, "ipv4")?.unwrap_or_default().to_string(),
        ipv6: opt_str(e, "ipv6")?.unwrap_or_default().to_string(),
        port,
    }))
}

/// A tag or binary-annotation value as text; numbers and booleans some clients send are kept.
pub(crate) fn tag_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The trace id, span id and parent id every Zipkin JSON span carries.
pub(crate) fn ids(o: &Map<String, Value>) -> Result<(crate::TraceId, crate::SpanId, crate::SpanId), SpanError> {
    let trace_id = trace_id_from_hex(opt_str(o, "traceId")?.ok_or(SpanError::MissingField("traceId"))?)?;
    let id = span_id_from_hex("id", opt_str(o, "id")?.ok_or(SpanError::MissingField("id"))?)?;
    if id == [0; 8] {
        return Err(SpanError::ZeroSpanId);
    }
    let parent_id = match opt_str(o, "parentId")? {
        None | Some("") => [0; 8],
        Some(p) => span_id_from_hex("parentId", p)?,
    };
    Ok((trace_id, id, parent_id))
}

fn span_from_json(v: &Value) -> Result<ZipkinSpan, SpanError> {
    let o = v
        .as_object()
        .ok_or_else(|| malformed(format!("span must be a JSON object, got {}", json_type(v))))?;
    let (trace_id, id, parent_id) = ids(o)?;
    let kind = match opt_str(o, "kind")? {
        None | Some("") => None,
        Some(k) => Some(
            Kind::parse(k)
                .ok_or_else(|| malformed(format!("kind {k:?} is not one of CLIENT, SERVER, PRODUCER, CONSUMER")))?,
        ),
    };
    let mut annotations = Vec::new();
    match o.get("annotations") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for a in items {
                let a = a
                    .as_object()
                    .ok_or_else(|| malformed("annotations must hold objects".to_string()))?;
                let ts = opt_u64(a, "timestamp")?.ok_or(SpanError::MissingField("annotations[].timestamp"))?;
                annotations.push((ts, opt_str(a, "value")?.unwrap_or_default().to_string()));
            }
        }
        Some(other) => {
            return Err(malformed(format!(
                "annotations must be an array, got {}",
                json_type(other)
            )))
        }
    }
    let tags = match o.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(t)) => t.iter().map(|(k, v)| (k.clone(), tag_text(v))).collect(),
        Some(other) => return Err(malformed(format!("tags must be an object, got {}", json_type(other)))),
    };
    Ok(ZipkinSpan {
        trace_id,
        parent_id,
        id,
        kind,
        name: opt_str(o, "name")?.unwrap_or_default().to_string(),
        timestamp_us: opt_u64(o, "timestamp")?.ok_or(SpanError::MissingField("timestamp"))?,
        duration_us: opt_u64(o, "duration")?.unwrap_or(0),
        local: endpoint(o, "localEndpoint")?,
        remote: endpoint(o, "remoteEndpoint")?,
        annotations,
        tags,
        debug: opt_bool(o, "debug")?,
        shared: opt_bool(o, "shared")?,
    })
}

fn endpoint_json(e: &Endpoint) -> Value {
    let mut m = Map::new();
    if !e.service_name.is_empty() {
        m.insert("serviceName".into(), json!(e.service_name));
    }
    if !e.ipv4.is_empty() {
        m.insert("ipv4".into(), json!(e.ipv4));
    }
    if !e.ipv6.is_empty() {
        m.insert("ipv6".into(), json!(e.ipv6));
    }
    if e.port != 0 {
        m.insert("port".into(), json!(e.port));
    }
    Value::Object(m)
}

/// One Zipkin v2 span as JSON, fields omitted when empty (as Zipkin itself writes them).
pub fn span_json(z: &ZipkinSpan) -> Value {
    let mut m = Map::new();
    m.insert("traceId".into(), json!(super::trace_id_hex(&z.trace_id)));
    if z.parent_id != [0; 8] {
        m.insert("parentId".into(), json!(crate::hex::encode(&z.parent_id)));
    }
    m.insert("id".into(), json!(crate::hex::encode(&z.id)));
    if let Some(k) = z.kind {
        m.insert("kind".into(), json!(k.as_str()));
    }
    if !z.name.is_empty() {
        m.insert("name".into(), json!(z.name));
    }
    m.insert("timestamp".into(), json!(z.timestamp_us));
    // Zipkin omits a zero duration rather than writing 0.
    if z.duration_us != 0 {
        m.insert("duration".into(), json!(z.duration_us));
    }
    if let Some(e) = &z.local {
        m.insert("localEndpoint".into(), endpoint_json(e));
    }
    if let Some(e) = &z.remote {
        m.insert("remoteEndpoint".into(), endpoint_json(e));
    }
    if !z.annotations.is_empty() {
        let a: Vec<Value> = z
            .annotations
            .iter()
            .map(|(ts, v)| json!({"timestamp": ts, "value": v}))
            .collect();
        m.insert("annotations".into(), Value::Array(a));
    }
    if !z.tags.is_empty() {
        let t: Map<String, Value> = z.tags.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        m.insert("tags".into(), Value::Object(t));
    }
    if z.debug {
        m.insert("debug".into(), json!(true));
    }
    if z.shared {
        m.insert("shared".into(), json!(true));
    }
    Value::Object(m)
}

/// Model spans (typically one trace) as a Zipkin v2 JSON array.
pub fn encode(spans: &[Span]) -> Value {
    Value::Array(super::encode(spans).iter().map(span_json).collect())
}
