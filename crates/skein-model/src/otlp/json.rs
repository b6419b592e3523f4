//! The OTLP/JSON mapping: lowerCamelCase names (snake_case accepted too), hex trace and span
//! ids, enums as integers (names accepted too), 64-bit integers as strings or numbers, bytes as
//! base64. Unknown fields are ignored, as the spec asks of receivers.

use std::sync::Arc;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::*;

/// A body that is not OTLP JSON at all (as opposed to a span that is invalid).
#[derive(Debug, thiserror::Error)]
#[error("invalid OTLP JSON: {0}")]
pub struct JsonError(#[from] serde_json::Error);

pub fn decode_request(body: &[u8]) -> Result<Decoded, JsonError> {
    let req: JRequest = serde_json::from_slice(body)?;
    let mut out = Decoded::default();
    let mut index = 0usize;
    for rs in req.resource_spans {
        let res = Arc::new(rs.resource.map(JResource::into_model).unwrap_or_default());
        for ss in rs.scope_spans {
            let scope = Arc::new(ss.scope.map(JScope::into_model).unwrap_or_default());
            for span in ss.spans {
                match span.into_model(&res, &scope) {
                    Ok(s) => out.batch.spans.push(s),
                    Err(error) => out.rejected.push(Rejected { index, error }),
                }
                index += 1;
            }
        }
    }
    Ok(out)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JRequest {
    #[serde(rename = "resourceSpans", alias = "resource_spans", deserialize_with = "null_vec")]
    resource_spans: Vec<JResourceSpans>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JResourceSpans {
    resource: Option<JResource>,
    #[serde(
        rename = "scopeSpans",
        alias = "scope_spans",
        alias = "instrumentationLibrarySpans",
        deserialize_with = "null_vec"
    )]
    scope_spans: Vec<JScopeSpans>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JResource {
    #[serde(deserialize_with = "null_vec")]
    attributes: Vec<JKeyValue>,
    #[serde(
        rename = "droppedAttributesCount",
        alias = "dropped_attributes_count",
        deserialize_with = "de_u32"
    )]
    dropped_attributes_count: u32,
}

impl JResource {
    fn into_model(self) -> Resource {
        Resource {
            attributes: attrs(self.attributes),
            dropped_attributes_count: self.dropped_attributes_count,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JScopeSpans {
    #[serde(alias = "instrumentationLibrary")]
    scope: Option<JScope>,
    #[serde(deserialize_with = "null_vec")]
    spans: Vec<JSpan>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JScope {
    #[serde(deserialize_with = "null_string")]
    name: String,
    #[serde(deserialize_with = "null_string")]
    version: String,
    #[serde(deserialize_with = "null_vec")]
    attributes: Vec<JKeyValue>,
    #[serde(
        rename = "droppedAttributesCount",
        alias = "dropped_attributes_count",
        deserialize_with = "de_u32"
    )]
    dropped_attributes_count: u32,
}

impl JScope {
    fn into_model(self) -> Scope {
        Scope {
            name: self.name,
            version: self.version,
            attributes: attrs(self.attributes),
            dropped_attributes_count: self.dropped_attributes_count,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JSpan {
    #[serde(rename = "traceId", alias = "trace_id", deserialize_with = "null_string")]
    trace_id: String,
    #[serde(rename = "spanId", alias = "span_id", deserialize_with = "null_string")]
    span_id: String,
    #[serde(rename = "traceState", alias = "trace_state", deserialize_with = "null_string")]
    trace_state: String,
    #[serde(rename = "parentSpanId", alias = "parent_span_id", deserialize_with = "null_string")]
    parent_span_id: String,
    #[serde(deserialize_with = "de_u32")]
    flags: u32,
    #[serde(deserialize_with = "null_string")]
    name: String,
    #[serde(deserialize_with = "de_kind")]
    kind: i32,
    #[serde(
        rename = "startTimeUnixNano",
        alias = "start_time_unix_nano",
        deserialize_with = "de_u64"
    )]
    start: u64,
    #[serde(
        rename = "endTimeUnixNano",
        alias = "end_time_unix_nano",
        deserialize_with = "de_u64"
    )]
    end: u64,
    #[serde(deserialize_with = "null_vec")]
    attributes: Vec<JKeyValue>,
    #[serde(
        rename = "droppedAttributesCount",
        alias = "dropped_attributes_count",
        deserialize_with = "de_u32"
    )]
    dropped_attributes_count: u32,
    #[serde(deserialize_with = "null_vec")]
    events: Vec<JEvent>,
    #[serde(
        rename = "droppedEventsCount",
        alias = "dropped_events_count",
        deserialize_with = "de_u32"
    )]
    dropped_events_count: u32,
    #[serde(deserialize_with = "null_vec")]
    links: Vec<JLink>,
    #[serde(
        rename = "droppedLinksCount",
        alias = "dropped_links_count",
        deserialize_with = "de_u32"
    )]
    dropped_links_count: u32,
    status: Option<JStatus>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JEvent {
    #[serde(rename = "timeUnixNano", alias = "time_unix_nano", deserialize_with = "de_u64")]
    time: u64,
    #[serde(deserialize_with = "null_string")]
    name: String,
    #[serde(deserialize_with = "null_vec")]
    attributes: Vec<JKeyValue>,
    #[serde(
        rename = "droppedAttributesCount",
        alias = "dropped_attributes_count",
        deserialize_with = "de_u32"
    )]
    dropped_attributes_count: u32,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JLink {
    #[serde(rename = "traceId", alias = "trace_id", deserialize_with = "null_string")]
    trace_id: String,
    #[serde(rename = "spanId", alias = "span_id", deserialize_with = "null_string")]
    span_id: String,
    #[serde(rename = "traceState", alias = "trace_state", deserialize_with = "null_string")]
    trace_state: String,
    #[serde(deserialize_with = "null_vec")]
    attributes: Vec<JKeyValue>,
    #[serde(
        rename = "droppedAttributesCount",
        alias = "dropped_attributes_count",
        deserialize_with = "de_u32"
    )]
    dropped_attributes_count: u32,
    #[serde(deserialize_with = "de_u32")]
    flags: u32,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JStatus {
    #[serde(deserialize_with = "null_string")]
    message: String,
    #[serde(deserialize_with = "de_status")]
    code: i32,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JKeyValue {
    #[serde(deserialize_with = "null_string")]
    key: String,
    value: Option<JAnyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JAnyValue {
    #[serde(rename = "stringValue", alias = "string_value")]
    string_value: Option<String>,
    #[serde(rename = "boolValue", alias = "bool_value")]
    bool_value: Option<bool>,
    #[serde(rename = "intValue", alias = "int_value", deserialize_with = "de_opt_i64")]
    int_value: Option<i64>,
    #[serde(rename = "doubleValue", alias = "double_value", deserialize_with = "de_opt_f64")]
    double_value: Option<f64>,
    #[serde(rename = "bytesValue", alias = "bytes_value", deserialize_with = "de_opt_base64")]
    bytes_value: Option<Vec<u8>>,
    #[serde(rename = "arrayValue", alias = "array_value")]
    array_value: Option<JValues<JAnyValue>>,
    #[serde(rename = "kvlistValue", alias = "kvlist_value")]
    kvlist_value: Option<JValues<JKeyValue>>,
}

#[derive(Deserialize)]
#[serde(bound = "T: Deserialize<'de>")]
struct JValues<T> {
    #[serde(default = "Vec::new", deserialize_with = "null_vec")]
    values: Vec<T>,
}

fn attrs(kvs: Vec<JKeyValue>) -> Vec<KeyValue> {
    kvs.into_iter()
        .map(|kv| KeyValue {
            key: kv.key.into(),
            value: kv.value.map(JAnyValue::into_model).unwrap_or_default(),
        })
        .collect()
}

impl JAnyValue {
    fn into_model(self) -> AnyValue {
        if let Some(s) = self.string_value {
            AnyValue::String(s)
        } else if let Some(b) = self.bool_value {
            AnyValue::Bool(b)
        } else if let Some(i) = self.int_value {
            AnyValue::Int(i)
        } else if let Some(d) = self.double_value {
            AnyValue::Double(d)
        } else if let Some(b) = self.bytes_value {
            AnyValue::Bytes(b)
        } else if let Some(a) = self.array_value {
            AnyValue::Array(a.values.into_iter().map(JAnyValue::into_model).collect())
        } else if let Some(kv) = self.kvlist_value {
            AnyValue::KvList(attrs(kv.values))
        } else {
            AnyValue::Empty
        }
    }
}

/// OTLP/JSON ids are hex; a few clients send protobuf-JSON base64 instead, which we accept
/// when the text is not hex but has base64's length for the id. `None`: neither.
fn json_id<const N: usize>(s: &str) -> Option<Vec<u8>> {
    if let Some(b) = hex::decode(s) {
        // Any even-length hex; a wrong length is reported by validation with the byte count.
        return Some(b);
    }
    let padded = N.div_ceil(3) * 4;
    let unpadded = (N * 4).div_ceil(3);
    if s.len() == padded || s.len() == unpadded {
        return base64_decode(s).filter(|b| b.len() == N);
    }
    None
}

impl JSpan {
    fn into_model(self, res: &Arc<Resource>, scope: &Arc<Scope>) -> Result<Span, SpanError> {
        let trace_id = json_id::<16>(&self.trace_id).ok_or(SpanError::IdEncoding("traceId"))?;
        let span_id = json_id::<8>(&self.span_id).ok_or(SpanError::IdEncoding("spanId"))?;
        let parent = json_id::<8>(&self.parent_span_id).ok_or(SpanError::IdEncoding("parentSpanId"))?;
        let mut links = Vec::with_capacity(self.links.len());
        let mut link_attrs = Vec::with_capacity(self.links.len());
        for (index, l) in self.links.into_iter().enumerate() {
            let bad = |id: &str| SpanError::LinkIds {
                what: "link",
                index,
                problem: format!("{id} is neither hex nor base64"),
            };
            link_attrs.push(attrs(l.attributes));
            links.push(super::pb::trace::v1::span::Link {
                trace_id: json_id::<16>(&l.trace_id).ok_or_else(|| bad("traceId"))?,
                span_id: json_id::<8>(&l.span_id).ok_or_else(|| bad("spanId"))?,
                trace_state: l.trace_state,
                attributes: Vec::new(),
                dropped_attributes_count: l.dropped_attributes_count,
                flags: l.flags,
            });
        }
        // Reuse the protobuf path's validation so both encodings reject exactly the same spans.
        let pb = super::pb::trace::v1::Span {
            trace_id,
            span_id,
            trace_state: self.trace_state,
            parent_span_id: parent,
            flags: self.flags,
            name: self.name,
            kind: self.kind,
            start_time_unix_nano: self.start,
            end_time_unix_nano: self.end,
            attributes: Vec::new(),
            dropped_attributes_count: self.dropped_attributes_count,
            events: Vec::new(),
            dropped_events_count: self.dropped_events_count,
            links,
            dropped_links_count: self.dropped_links_count,
            status: self.status.map(|s| super::pb::trace::v1::Status {
                message: s.message,
                code: s.code,
            }),
        };
        let mut span = super::proto::span_from(pb, res, scope)?;
        span.attributes = attrs(self.attributes);
        span.events = self
            .events
            .into_iter()
            .map(|e| Event {
                time_unix_nano: e.time,
                name: e.name,
                attributes: attrs(e.attributes),
                dropped_attributes_count: e.dropped_attributes_count,
            })
            .collect();
        for (link, a) in span.links.iter_mut().zip(link_attrs) {
            link.attributes = a;
        }
        Ok(span)
    }
}

// ---- lenient scalar readers -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrString {
    U(u64),
    I(i64),
    F(f64),
    S(String),
}

fn null_vec<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// protobuf-JSON `bytes`: base64, either alphabet. Anything else fails the request, as
/// protobuf's own JSON parser does; keeping the text as bytes would store something the client
/// never meant.
fn de_opt_base64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => base64_decode(&s).map(Some).ok_or_else(|| {
            let shown: String = s.chars().take(40).collect();
            serde::de::Error::custom(format!("bytesValue {shown:?} is not base64"))
        }),
    }
}

fn null_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn de_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Option::<NumOrString>::deserialize(d)? {
        None => Ok(0),
        Some(NumOrString::U(u)) => Ok(u),
        Some(NumOrString::I(i)) => u64::try_from(i).map_err(|_| de::Error::custom(format!("negative value {i}"))),
        Some(NumOrString::F(f)) if f >= 0.0 && f.fract() == 0.0 => Ok(f as u64),
        Some(NumOrString::F(f)) => Err(de::Error::custom(format!("expected an unsigned integer, got {f}"))),
        Some(NumOrString::S(s)) if s.is_empty() => Ok(0),
        Some(NumOrString::S(s)) => s
            .parse()
            .map_err(|_| de::Error::custom(format!("expected an unsigned integer, got {s:?}"))),
    }
}

fn de_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = de_u64(d)?;
    u32::try_from(v).map_err(|_| de::Error::custom(format!("{v} does not fit in 32 bits")))
}

fn de_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<NumOrString>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrString::U(u)) => i64::try_from(u)
            .map(Some)
            .map_err(|_| de::Error::custom(format!("intValue {u} out of range"))),
        Some(NumOrString::I(i)) => Ok(Some(i)),
        Some(NumOrString::F(f)) if f.fract() == 0.0 => Ok(Some(f as i64)),
        Some(NumOrString::F(f)) => Err(de::Error::custom(format!("intValue {f} is not an integer"))),
        Some(NumOrString::S(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("intValue {s:?} is not an integer"))),
    }
}

fn de_opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<NumOrString>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrString::U(u)) => Ok(Some(u as f64)),
        Some(NumOrString::I(i)) => Ok(Some(i as f64)),
        Some(NumOrString::F(f)) => Ok(Some(f)),
        Some(NumOrString::S(s)) => match s.as_str() {
            "NaN" => Ok(Some(f64::NAN)),
            "Infinity" => Ok(Some(f64::INFINITY)),
            "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
            _ => s
                .parse()
                .map(Some)
                .map_err(|_| de::Error::custom(format!("doubleValue {s:?} is not a number"))),
        },
    }
}

fn de_enum<'de, D: Deserializer<'de>>(d: D, parse: fn(&str) -> Option<i32>, what: &str) -> Result<i32, D::Error> {
    match Option::<NumOrString>::deserialize(d)? {
        None => Ok(0),
        Some(NumOrString::U(u)) => Ok(i32::try_from(u).unwrap_or(i32::MAX)),
        Some(NumOrString::I(i)) => Ok(i32::try_from(i).unwrap_or(i32::MIN)),
        Some(NumOrString::F(f)) => Ok(f as i32),
        Some(NumOrString::S(s)) => parse(&s)
            .or_else(|| s.parse().ok())
            .ok_or_else(|| de::Error::custom(format!("unknown {what} {s:?}"))),
    }
}

fn de_kind<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    de_enum(d, |s| SpanKind::parse(s).map(|k| k as i32), "span kind")
}

fn de_status<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    de_enum(
        d,
        |s| match s.trim_start_matches("STATUS_CODE_").to_ascii_uppercase().as_str() {
            "UNSET" => Some(0),
            "OK" => Some(1),
            "ERROR" => Some(2),
            _ => None,
        },
        "status code",
    )
}

// ---- base64 (standard and URL-safe alphabets, padding optional) -------------------------

pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

pub fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---- encoding (for the api_v3 query answers) ---------------------------------------------

pub fn any_value(v: &AnyValue) -> Value {
    match v {
        AnyValue::Empty => json!({}),
        AnyValue::String(s) => json!({ "stringValue": s }),
        AnyValue::Bool(b) => json!({ "boolValue": b }),
        AnyValue::Int(i) => json!({ "intValue": i.to_string() }),
        AnyValue::Double(d) if d.is_finite() => json!({ "doubleValue": d }),
        AnyValue::Double(d) => {
            json!({ "doubleValue": if d.is_nan() { "NaN" } else if *d > 0.0 { "Infinity" } else { "-Infinity" } })
        }
        AnyValue::Bytes(b) => json!({ "bytesValue": base64_encode(b) }),
        AnyValue::Array(a) => json!({ "arrayValue": { "values": a.iter().map(any_value).collect::<Vec<_>>() } }),
        AnyValue::KvList(kv) => json!({ "kvlistValue": { "values": attributes(kv) } }),
    }
}

/// A value as plain JSON (arrays as arrays, kvlists as objects), for display.
pub fn any_value_plain(v: &AnyValue) -> Value {
    match v {
        AnyValue::Empty => Value::Null,
        AnyValue::String(s) => json!(s),
        AnyValue::Bool(b) => json!(b),
        AnyValue::Int(i) => json!(i),
        AnyValue::Double(d) => json!(d),
        AnyValue::Bytes(b) => json!(base64_encode(b)),
        AnyValue::Array(a) => Value::Array(a.iter().map(any_value_plain).collect()),
        AnyValue::KvList(kv) => Value::Object(
            kv.iter()
                .map(|kv| (kv.key.to_string(), any_value_plain(&kv.value)))
                .collect(),
        ),
    }
}

pub fn attributes(kvs: &[KeyValue]) -> Vec<Value> {
    kvs.iter()
        .map(|kv| json!({ "key": kv.key, "value": any_value(&kv.value) }))
        .collect()
}

fn put_nonzero(m: &mut Map<String, Value>, key: &str, v: u32) {
    if v != 0 {
        m.insert(key.into(), json!(v));
    }
}

pub fn span(s: &Span) -> Value {
    let mut m = Map::new();
    m.insert("traceId".into(), json!(hex::encode(&s.trace_id)));
    m.insert("spanId".into(), json!(hex::encode(&s.span_id)));
    if !s.trace_state.is_empty() {
        m.insert("traceState".into(), json!(s.trace_state));
    }
    if !s.is_root() {
        m.insert("parentSpanId".into(), json!(hex::encode(&s.parent_span_id)));
    }
    put_nonzero(&mut m, "flags", s.flags);
    m.insert("name".into(), json!(s.name));
    m.insert("kind".into(), json!(s.kind as i32));
    m.insert("startTimeUnixNano".into(), json!(s.start_unix_nano.to_string()));
    m.insert("endTimeUnixNano".into(), json!(s.end_unix_nano.to_string()));
    m.insert("attributes".into(), Value::Array(attributes(&s.attributes)));
    put_nonzero(&mut m, "droppedAttributesCount", s.dropped_attributes_count);
    if !s.events.is_empty() {
        let events = s
            .events
            .iter()
            .map(|e| {
                let mut em = Map::new();
                em.insert("timeUnixNano".into(), json!(e.time_unix_nano.to_string()));
                em.insert("name".into(), json!(e.name));
                em.insert("attributes".into(), Value::Array(attributes(&e.attributes)));
                put_nonzero(&mut em, "droppedAttributesCount", e.dropped_attributes_count);
                Value::Object(em)
            })
            .collect();
        m.insert("events".into(), Value::Array(events));
    }
    put_nonzero(&mut m, "droppedEventsCount", s.dropped_events_count);
    if !s.links.is_empty() {
        let links = s
            .links
            .iter()
            .map(|l| {
                let mut lm = Map::new();
                lm.insert("traceId".into(), json!(hex::encode(&l.trace_id)));
                lm.insert("spanId".into(), json!(hex::encode(&l.span_id)));
                if !l.trace_state.is_empty() {
                    lm.insert("traceState".into(), json!(l.trace_state));
                }
                lm.insert("attributes".into(), Value::Array(attributes(&l.attributes)));
                put_nonzero(&mut lm, "droppedAttributesCount", l.dropped_attributes_count);
                put_nonzero(&mut lm, "flags", l.flags);
                Value::Object(lm)
            })
            .collect();
        m.insert("links".into(), Value::Array(links));
    }
    put_nonzero(&mut m, "droppedLinksCount", s.dropped_links_count);
    let mut st = Map::new();
    if !s.status.message.is_empty() {
        st.insert("message".into(), json!(s.status.message));
    }
    if s.status.code != StatusCode::Unset {
        st.insert("code".into(), json!(s.status.code as i32));
    }
    m.insert("status".into(), Value::Object(st));
    Value::Object(m)
}

/// `{"resourceSpans": [...]}` for spans, grouped by resource and scope value (so spans of one
/// resource are together even when the input interleaves them).
pub fn encode_traces_data<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Value {
    json!({ "resourceSpans": resource_spans(spans) })
}

/// `{"resourceSpans": [...]}` for several traces, each grouped as `encode_traces_data` does,
/// one after the other: a search's answer keeps its order (newest first), as Jaeger's api_v3
/// gateway appends each trace's resource spans in turn.
pub fn encode_traces_in_order<'a>(traces: impl IntoIterator<Item = &'a [Span]>) -> Value {
    let all: Vec<Value> = traces.into_iter().flat_map(resource_spans).collect();
    json!({ "resourceSpans": all })
}

fn resource_spans<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Vec<Value> {
    type ScopeGroup<'a> = (&'a Arc<Scope>, Vec<&'a Span>);
    let mut groups: Vec<(&Arc<Resource>, Vec<ScopeGroup>)> = Vec::new();
    for s in spans {
        let gi = match groups
            .iter()
            .position(|(r, _)| Arc::ptr_eq(r, &s.resource) || **r == s.resource)
        {
            Some(i) => i,
            None => {
                groups.push((&s.resource, Vec::new()));
                groups.len() - 1
            }
        };
        let scopes = &mut groups[gi].1;
        match scopes
            .iter_mut()
            .find(|(sc, _)| Arc::ptr_eq(sc, &s.scope) || **sc == s.scope)
        {
            Some((_, v)) => v.push(s),
            None => scopes.push((&s.scope, vec![s])),
        }
    }
    groups
        .into_iter()
        .map(|(r, scopes)| {
            let mut res = Map::new();
            res.insert("attributes".into(), Value::Array(attributes(&r.attributes)));
            put_nonzero(&mut res, "droppedAttributesCount", r.dropped_attributes_count);
            let scope_spans: Vec<Value> = scopes
                .into_iter()
                .map(|(sc, spans)| {
                    let mut scm = Map::new();
                    scm.insert("name".into(), json!(sc.name));
                    if !sc.version.is_empty() {
                        scm.insert("version".into(), json!(sc.version));
                    }
                    if !sc.attributes.is_empty() {
                        scm.insert("attributes".into(), Value::Array(attributes(&sc.attributes)));
                    }
                    put_nonzero(&mut scm, "droppedAttributesCount", sc.dropped_attributes_count);
                    json!({ "scope": scm, "spans": spans.into_iter().map(span).collect::<Vec<_>>() })
                })
                .collect();
            json!({ "resource": res, "scopeSpans": scope_spans })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for n in 0..20u8 {
            let v: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&base64_encode(&v)).unwrap(), v);
        }
    }

    #[test]
    fn accepts_strings_numbers_names_and_nulls() {
        let body = br#"{"resourceSpans":[{"resource":null,"scopeSpans":[{"scope":{"name":"s"},"spans":[
          {"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"a","kind":"SPAN_KIND_SERVER",
           "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":1700000000000001000,
           "attributes":[{"key":"i","value":{"intValue":"-5"}},{"key":"d","value":{"doubleValue":"NaN"}},
                         {"key":"b","value":{"bytesValue":"AQID"}},{"key":"n","value":null}],
           "status":{"code":2,"message":"boom"},"unknownField":1}]}]}]}"#;
        let d = decode_request(body).unwrap();
        assert!(d.rejected.is_empty());
        let s = &d.batch.spans[0];
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(s.end_unix_nano - s.start_unix_nano, 1000);
        assert_eq!(s.attributes[0].value, AnyValue::Int(-5));
        assert!(matches!(s.attributes[1].value, AnyValue::Double(d) if d.is_nan()));
        assert_eq!(s.attributes[2].value, AnyValue::Bytes(vec![1, 2, 3]));
        assert_eq!(s.attributes[3].value, AnyValue::Empty);
        assert_eq!(s.status.code, StatusCode::Error);
    }
}
