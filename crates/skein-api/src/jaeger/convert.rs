//! Model ⇄ Jaeger JSON, the trace shape of Jaeger's HTTP query API v1 (`/api/traces`) that the
//! Jaeger UI and Grafana's Jaeger data source read. Only the JSON shape lives here: the mapping
//! itself (OpenTelemetry's Jaeger translator: kind, status, scope and trace state as tags, events
//! as logs, parent and links as references) is `skein_model::jaeger::convert`, the one shared
//! by every Jaeger format, ingest and query alike.
//!
//! Lossy by nature of the format: dropped counts, link attributes/state/flags, scope
//! attributes and the type of array/kvlist values (sent as their JSON text) do not survive.

use std::collections::HashMap;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use skein_model::jaeger::convert::ScopeCache;
use skein_model::jaeger::{self, JaegerLog, JaegerProcess, JaegerRef, JaegerSpan, RefType};
use skein_model::otlp::json::{base64_decode, base64_encode};
use skein_model::{hex, AnyValue, KeyValue, Resource, Span};

const CHILD_OF: &str = "CHILD_OF";
const FOLLOWS_FROM: &str = "FOLLOWS_FROM";

// ---- model → Jaeger ---------------------------------------------------------------------

/// One trace in Jaeger's JSON shape: `{"traceID", "spans", "processes", "warnings"}`.
///
/// Spans are ordered by start time, then span id; processes are numbered `p1`, `p2`, … in
/// the order their resource first appears in that ordering. With no spans, `traceID` is "".
/// Serializes straight into a response: building a `serde_json::Value` tree first cost a
/// fifth of a trace lookup's CPU, in allocations.
pub struct JaegerTraceJson {
    trace_id: String,
    /// Each span with the index of its process.
    spans: Vec<(JaegerSpan, usize)>,
    processes: Vec<JaegerProcess>,
}

pub fn jaeger_trace(spans: &[Span]) -> JaegerTraceJson {
    let mut order: Vec<&Span> = spans.iter().collect();
    order.sort_by_key(|s| (s.start_unix_nano, s.span_id));

    let mut resources: Vec<&Arc<Resource>> = Vec::new();
    let mut out = Vec::with_capacity(order.len());
    for span in &order {
        // Different exports of one process carry equal resources in different Arcs.
        let index = match resources
            .iter()
            .position(|r| Arc::ptr_eq(r, &span.resource) || **r == span.resource)
        {
            Some(i) => i,
            None => {
                resources.push(&span.resource);
                resources.len() - 1
            }
        };
        out.push((jaeger::span_from_model(span), index));
    }
    JaegerTraceJson {
        trace_id: order.first().map(|s| hex::encode(&s.trace_id)).unwrap_or_default(),
        spans: out,
        processes: resources.iter().map(|r| jaeger::process_from_resource(r)).collect(),
    }
}

/// [`jaeger_trace`] as a JSON value.
pub fn trace_to_jaeger(spans: &[Span]) -> Value {
    serde_json::to_value(jaeger_trace(spans)).expect("a Jaeger trace serializes")
}

fn process_key(index: usize) -> String {
    format!("p{}", index + 1)
}

impl Serialize for JaegerTraceJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("traceID", &self.trace_id)?;
        m.serialize_entry("spans", &Seq(&self.spans, |(span, process)| SpanJson(span, *process)))?;
        m.serialize_entry("processes", &Processes(&self.processes))?;
        m.serialize_entry("warnings", &())?;
        m.end()
    }
}

/// A slice serialized as a JSON array of `item(element)`.
struct Seq<'a, T, W>(&'a [T], fn(&'a T) -> W);

impl<'a, T, W: Serialize> Serialize for Seq<'a, T, W> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(self.1))
    }
}

struct SpanJson<'a>(&'a JaegerSpan, usize);

impl Serialize for SpanJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let span = self.0;
        let mut m = s.serialize_map(Some(11))?;
        m.serialize_entry("traceID", &hex::encode(&span.trace_id))?;
        m.serialize_entry("spanID", &hex::encode(&span.span_id))?;
        m.serialize_entry("operationName", &span.operation_name)?;
        m.serialize_entry("references", &Seq(&span.references, Reference))?;
        m.serialize_entry("flags", &span.flags)?;
        m.serialize_entry("startTime", &(span.start_unix_nano / 1000))?;
        m.serialize_entry("duration", &(span.duration_nano / 1000))?;
        m.serialize_entry("tags", &Seq(&span.tags, Tag))?;
        m.serialize_entry("logs", &Seq(&span.logs, LogJson))?;
        m.serialize_entry("processID", &process_key(self.1))?;
        m.serialize_entry("warnings", &())?;
        m.end()
    }
}

struct Reference<'a>(&'a JaegerRef);

impl Serialize for Reference<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ref_type = match self.0.ref_type {
            RefType::ChildOf => CHILD_OF,
            RefType::FollowsFrom => FOLLOWS_FROM,
        };
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("refType", ref_type)?;
        m.serialize_entry("traceID", &hex::encode(&self.0.trace_id))?;
        m.serialize_entry("spanID", &hex::encode(&self.0.span_id))?;
        m.end()
    }
}

struct LogJson<'a>(&'a JaegerLog);

impl Serialize for LogJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("timestamp", &(self.0.time_unix_nano / 1000))?;
        m.serialize_entry("fields", &Seq(&self.0.fields, Tag))?;
        m.end()
    }
}

struct Processes<'a>(&'a [JaegerProcess]);

impl Serialize for Processes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().enumerate().map(|(i, p)| (process_key(i), ProcessJson(p))))
    }
}

struct ProcessJson<'a>(&'a JaegerProcess);

impl Serialize for ProcessJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("serviceName", &self.0.service_name)?;
        m.serialize_entry("tags", &Seq(&self.0.tags, Tag))?;
        m.end()
    }
}

/// A typed Jaeger tag (`{"key", "type", "value"}`).
struct Tag<'a>(&'a KeyValue);

impl Serialize for Tag<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("key", &self.0.key)?;
        let value = &self.0.value;
        let ty = match value {
            AnyValue::Bool(_) => "bool",
            AnyValue::Int(_) => "int64",
            AnyValue::Double(_) => "float64",
            AnyValue::Bytes(_) => "binary",
            // The shared mapping already turned composite values into their JSON text.
            AnyValue::String(_) | AnyValue::Empty | AnyValue::Array(_) | AnyValue::KvList(_) => "string",
        };
        m.serialize_entry("type", ty)?;
        match value {
            AnyValue::String(v) => m.serialize_entry("value", v)?,
            AnyValue::Bool(v) => m.serialize_entry("value", v)?,
            AnyValue::Int(v) => m.serialize_entry("value", v)?,
            AnyValue::Double(v) => m.serialize_entry("value", &Float(*v))?,
            AnyValue::Bytes(v) => m.serialize_entry("value", &base64_encode(v))?,
            other => m.serialize_entry("value", &other.to_display_string())?,
        }
        m.end()
    }
}

/// JSON numbers cannot be NaN or infinite; those go as OTLP JSON spells them.
struct Float(f64);

impl Serialize for Float {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            d if d.is_finite() => s.serialize_f64(d),
            d if d.is_nan() => s.serialize_str("NaN"),
            d if d > 0.0 => s.serialize_str("Infinity"),
            _ => s.serialize_str("-Infinity"),
        }
    }
}

// ---- Jaeger → model ---------------------------------------------------------------------

/// Parses a Jaeger JSON trace (the shape [`trace_to_jaeger`] writes) back into spans, in the
/// order they appear. Also takes the query API's envelope `{"data": [trace, …]}`, which is
/// what the Jaeger UI's "Download JSON" saves.
pub fn jaeger_to_spans(v: &Value) -> Result<Vec<Span>, String> {
    if let Some(data) = v.get("data") {
        let traces = data.as_array().ok_or("\"data\" is not an array")?;
        let mut spans = Vec::new();
        for (i, trace) in traces.iter().enumerate() {
            spans.extend(trace_from_jaeger(trace).map_err(|e| format!("data[{i}]: {e}"))?);
        }
        return Ok(spans);
    }
    trace_from_jaeger(v)
}

fn trace_from_jaeger(v: &Value) -> Result<Vec<Span>, String> {
    let obj = v.as_object().ok_or("trace is not a JSON object")?;
    let trace_id = match obj.get("traceID") {
        Some(Value::String(s)) if !s.is_empty() => Some(parse_trace_id(s)?),
        _ => None,
    };

    let mut processes: HashMap<&str, Arc<Resource>> = HashMap::new();
    match obj.get("processes") {
        Some(Value::Object(m)) => {
            for (key, p) in m {
                let process = process_from_json(p).map_err(|e| format!("process {key}: {e}"))?;
                processes.insert(key, Arc::new(jaeger::resource_from_process(process)));
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err("\"processes\" is not an object".into()),
    }

    let spans = match obj.get("spans") {
        Some(Value::Array(a)) => a.as_slice(),
        Some(Value::Null) => &[],
        Some(_) => return Err("\"spans\" is not an array".into()),
        None => return Err("no \"spans\" in trace".into()),
    };
    // Spans of one library share one Scope, as they would coming from an SDK.
    let mut scopes = ScopeCache::default();
    spans
        .iter()
        .enumerate()
        .map(|(i, s)| span_from_jaeger(s, trace_id, &processes, &mut scopes).map_err(|e| format!("span {i}: {e}")))
        .collect()
}

fn process_from_json(v: &Value) -> Result<JaegerProcess, String> {
    let obj = v.as_object().ok_or("process is not a JSON object")?;
    let service_name = match obj.get("serviceName") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err("\"serviceName\" is not a string".into()),
    };
    Ok(JaegerProcess {
        service_name,
        tags: parse_tags(obj.get("tags"))?,
    })
}

fn span_from_jaeger(
    v: &Value,
    trace_id: Option<[u8; 16]>,
    processes: &HashMap<&str, Arc<Resource>>,
    scopes: &mut ScopeCache,
) -> Result<Span, String> {
    let obj = v.as_object().ok_or("span is not a JSON object")?;

    let trace_id = match obj.get("traceID").and_then(Value::as_str) {
        Some(s) => parse_trace_id(s)?,
        None => trace_id.ok_or("no traceID")?,
    };
    let span_id = parse_span_id(obj.get("spanID").and_then(Value::as_str).ok_or("no spanID")?)?;
    let operation_name = match obj.get("operationName") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err("\"operationName\" is not a string".into()),
    };
    let flags = match obj.get("flags") {
        None | Some(Value::Null) => 0,
        Some(f) => f
            .as_u64()
            .and_then(|f| u32::try_from(f).ok())
            .ok_or("\"flags\" is not a 32-bit unsigned number")?,
    };
    let references = parse_references(obj, &trace_id)?;
    let parent_span_id = match obj.get("parentSpanID").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => parse_span_id(s)?,
        _ => [0; 8],
    };
    let start_unix_nano = micros_to_nanos(obj.get("startTime"), "startTime")?.ok_or("no startTime")?;
    let duration_nano = micros_to_nanos(obj.get("duration"), "duration")?.unwrap_or(0);
    let logs = match obj.get("logs") {
        Some(Value::Array(logs)) => logs
            .iter()
            .enumerate()
            .map(|(i, l)| log_from_json(l).map_err(|e| format!("log {i}: {e}")))
            .collect::<Result<Vec<_>, _>>()?,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err("\"logs\" is not an array".into()),
    };

    let resource = match obj.get("processID").and_then(Value::as_str) {
        Some(id) => processes
            .get(id)
            .cloned()
            .ok_or_else(|| format!("unknown processID {id:?}"))?,
        // Some producers embed the process in each span instead of the trace's map.
        None => match obj.get("process") {
            Some(p @ Value::Object(_)) => Arc::new(jaeger::resource_from_process(process_from_json(p)?)),
            _ => return Err("no processID or process".into()),
        },
    };

    let span = JaegerSpan {
        trace_id,
        span_id,
        parent_span_id,
        operation_name,
        references,
        flags,
        start_unix_nano,
        duration_nano,
        tags: parse_tags(obj.get("tags"))?,
        logs,
        process: None,
    };
    jaeger::span_to_model(span, resource, scopes).map_err(|e| e.to_string())
}

/// References in order; a reference without a `traceID` is into this trace.
fn parse_references(obj: &Map<String, Value>, trace_id: &[u8; 16]) -> Result<Vec<JaegerRef>, String> {
    let refs = match obj.get("references") {
        Some(Value::Array(a)) => a.as_slice(),
        None | Some(Value::Null) => &[],
        Some(_) => return Err("\"references\" is not an array".into()),
    };
    refs.iter()
        .enumerate()
        .map(|(i, r)| {
            let r = r
                .as_object()
                .ok_or_else(|| format!("reference {i} is not a JSON object"))?;
            let ref_trace = match r.get("traceID").and_then(Value::as_str) {
                Some(s) => parse_trace_id(s).map_err(|e| format!("reference {i}: {e}"))?,
                None => *trace_id,
            };
            let ref_span = r
                .get("spanID")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("reference {i}: no spanID"))
                .and_then(|s| parse_span_id(s).map_err(|e| format!("reference {i}: {e}")))?;
            let is_child_of = r
                .get("refType")
                .and_then(Value::as_str)
                .is_some_and(|t| t.eq_ignore_ascii_case(CHILD_OF));
            Ok(JaegerRef {
                ref_type: if is_child_of {
                    RefType::ChildOf
                } else {
                    RefType::FollowsFrom
                },
                trace_id: ref_trace,
                span_id: ref_span,
            })
        })
        .collect()
}

fn log_from_json(v: &Value) -> Result<JaegerLog, String> {
    let obj = v.as_object().ok_or("log is not a JSON object")?;
    Ok(JaegerLog {
        time_unix_nano: micros_to_nanos(obj.get("timestamp"), "timestamp")?.ok_or("no timestamp")?,
        fields: parse_tags(obj.get("fields"))?,
    })
}

fn parse_trace_id(s: &str) -> Result<[u8; 16], String> {
    // Jaeger writes 64-bit trace ids as 16 hex chars; decode_id left-pads them.
    hex::decode_id::<16>(s).ok_or_else(|| format!("bad traceID {s:?}"))
}

fn parse_span_id(s: &str) -> Result<[u8; 8], String> {
    hex::decode_id::<8>(s).ok_or_else(|| format!("bad spanID {s:?}"))
}

/// Jaeger times are whole microseconds; `None` when the field is absent.
fn micros_to_nanos(v: Option<&Value>, what: &str) -> Result<Option<u64>, String> {
    let micros = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(u) => u,
            // Tolerate float-typed integers (some JavaScript producers write 1.7e15).
            None => match n.as_f64() {
                Some(f) if f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 => f as u64,
                _ => return Err(format!("\"{what}\" is not a non-negative integer")),
            },
        },
        Some(_) => return Err(format!("\"{what}\" is not a number")),
    };
    micros
        .checked_mul(1000)
        .map(Some)
        .ok_or_else(|| format!("\"{what}\" overflows"))
}

fn parse_tags(v: Option<&Value>) -> Result<Vec<KeyValue>, String> {
    let tags = match v {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(_) => return Err("tags are not an array".into()),
    };
    tags.iter().map(parse_tag).collect()
}

fn parse_tag(v: &Value) -> Result<KeyValue, String> {
    let obj = v.as_object().ok_or("tag is not a JSON object")?;
    let key = obj.get("key").and_then(Value::as_str).ok_or("tag has no key")?;
    let value = obj.get("value").unwrap_or(&Value::Null);
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.to_ascii_lowercase(),
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(format!("tag {key:?}: \"type\" is not a string")),
    };
    let bad = || format!("tag {key:?}: value does not fit type {ty:?}");
    let value = match (ty.as_str(), value) {
        (_, Value::Null) => AnyValue::Empty,
        ("string", Value::String(s)) => AnyValue::String(s.clone()),
        ("string", other) => AnyValue::String(other.to_string()),
        ("bool", Value::Bool(b)) => AnyValue::Bool(*b),
        ("bool", Value::String(s)) => AnyValue::Bool(s.parse().map_err(|_| bad())?),
        ("int64", Value::Number(n)) => AnyValue::Int(n.as_i64().ok_or_else(bad)?),
        ("int64", Value::String(s)) => AnyValue::Int(s.trim().parse().map_err(|_| bad())?),
        ("float64", Value::Number(n)) => AnyValue::Double(n.as_f64().ok_or_else(bad)?),
        // Also reads the "NaN"/"Infinity" that `Float` writes.
        ("float64", Value::String(s)) => AnyValue::Double(s.trim().parse().map_err(|_| bad())?),
        ("binary", Value::String(s)) => AnyValue::Bytes(base64_decode(s).ok_or_else(bad)?),
        // Untyped tags: go by the JSON type.
        ("", Value::String(s)) => AnyValue::String(s.clone()),
        ("", Value::Bool(b)) => AnyValue::Bool(*b),
        ("", Value::Number(n)) => match n.as_i64() {
            Some(i) => AnyValue::Int(i),
            None => AnyValue::Double(n.as_f64().ok_or_else(bad)?),
        },
        ("", other) => AnyValue::String(other.to_string()),
        ("bool" | "int64" | "float64" | "binary", _) => return Err(bad()),
        (t, _) => return Err(format!("tag {key:?}: unknown type {t:?}")),
    };
    Ok(KeyValue { key: key.into(), value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use skein_model::jaeger::convert::{jaeger_flags, LINK_REF_TYPE};
    use skein_model::{Event, Link, Scope, SpanKind, Status, StatusCode};

    const TRACE: [u8; 16] = [0xab; 16];

    fn span(id: u8, start_us: u64) -> Span {
        Span {
            trace_id: TRACE,
            span_id: [id; 8],
            name: format!("op{id}"),
            start_unix_nano: start_us * 1000,
            end_unix_nano: start_us * 1000 + 5_000,
            resource: Arc::new(Resource {
                attributes: vec![KeyValue::string("service.name", "svc")],
                ..Default::default()
            }),
            ..Span::default()
        }
    }

    fn only_span(spans: &[Span]) -> Value {
        let v = trace_to_jaeger(spans);
        v["spans"][0].clone()
    }

    fn find_tag<'a>(tags: &'a Value, key: &str) -> Option<&'a Value> {
        tags.as_array().unwrap().iter().find(|t| t["key"] == key)
    }

    fn tag_keys(tags: &Value) -> Vec<String> {
        tags.as_array()
            .unwrap()
            .iter()
            .map(|t| t["key"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn trace_shape() {
        let mut s = span(1, 10);
        s.trace_id = [0; 16];
        s.trace_id[15] = 0x0f;
        let v = trace_to_jaeger(&[s]);
        assert_eq!(v["traceID"], "0000000000000000000000000000000f");
        assert_eq!(v["warnings"], Value::Null);
        assert_eq!(v["spans"].as_array().unwrap().len(), 1);
        assert_eq!(v["processes"]["p1"]["serviceName"], "svc");
        let sp = &v["spans"][0];
        assert_eq!(sp["traceID"], "0000000000000000000000000000000f");
        assert_eq!(sp["spanID"], "0101010101010101");
        assert_eq!(sp["operationName"], "op1");
        assert_eq!(sp["processID"], "p1");
        assert_eq!(sp["warnings"], Value::Null);
        assert_eq!(sp["references"], json!([]));
        assert_eq!(sp["logs"], json!([]));
        assert_eq!(sp["tags"], json!([]));
    }

    #[test]
    fn empty_trace() {
        let v = trace_to_jaeger(&[]);
        assert_eq!(v["traceID"], "");
        assert_eq!(v["spans"], json!([]));
        assert_eq!(v["processes"], json!({}));
        assert_eq!(jaeger_to_spans(&v).unwrap(), vec![]);
    }

    #[test]
    fn times_are_integer_microseconds() {
        let mut s = span(1, 0);
        s.start_unix_nano = 1_700_000_000_123_456_789;
        s.end_unix_nano = s.start_unix_nano + 2_500_999;
        let sp = only_span(&[s]);
        assert_eq!(sp["startTime"], json!(1_700_000_000_123_456u64));
        assert!(sp["startTime"].is_u64());
        assert_eq!(sp["duration"], json!(2_500));
        // End before start (malformed input) must not underflow.
        let mut s = span(1, 10);
        s.end_unix_nano = 0;
        assert_eq!(only_span(&[s])["duration"], json!(0));
    }

    #[test]
    fn flags_normalised() {
        for (flags, want) in [(0, 0), (1, 1), (3, 3), (0x301, 1), (0x100, 0), (2, 2)] {
            let mut s = span(1, 1);
            s.flags = flags;
            assert_eq!(only_span(&[s])["flags"], json!(want), "flags {flags:#x}");
        }
    }

    #[test]
    fn spans_sorted_by_start_then_id() {
        let spans = [span(3, 20), span(2, 10), span(1, 20)];
        let v = trace_to_jaeger(&spans);
        let ids: Vec<&str> = v["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["spanID"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["0202020202020202", "0101010101010101", "0303030303030303"]);
    }

    #[test]
    fn processes_dedup_by_value_in_order_of_appearance() {
        let res = |name: &str, extra: i64| {
            Arc::new(Resource {
                attributes: vec![
                    KeyValue::string("service.name", name),
                    KeyValue::new("host.cpus", AnyValue::Int(extra)),
                ],
                ..Default::default()
            })
        };
        let mut a = span(1, 1);
        a.resource = res("front", 4);
        let mut b = span(2, 2);
        b.resource = res("back", 8);
        // Equal by value, different Arc: same process.
        let mut c = span(3, 3);
        c.resource = res("front", 4);
        let v = trace_to_jaeger(&[c, b, a]);
        let pids: Vec<&str> = v["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["processID"].as_str().unwrap())
            .collect();
        assert_eq!(pids, ["p1", "p2", "p1"]);
        assert_eq!(v["processes"].as_object().unwrap().len(), 2);
        assert_eq!(
            v["processes"]["p1"],
            json!({"serviceName": "front", "tags": [{"key": "host.cpus", "type": "int64", "value": 4}]})
        );
        assert_eq!(v["processes"]["p2"]["serviceName"], "back");
    }

    #[test]
    fn process_without_service_name() {
        let mut s = span(1, 1);
        s.resource = Arc::new(Resource {
            attributes: vec![KeyValue::new("service.name", AnyValue::Int(3))],
            ..Default::default()
        });
        let v = trace_to_jaeger(&[s]);
        assert_eq!(v["processes"]["p1"]["serviceName"], "unknown_service");
        // The odd service.name is kept rather than dropped.
        assert_eq!(v["processes"]["p1"]["tags"][0]["key"], "service.name");
    }

    #[test]
    fn references_parent_first_then_links() {
        let mut s = span(1, 1);
        s.parent_span_id = [9; 8];
        s.links = vec![
            Link {
                trace_id: [0xcd; 16],
                span_id: [7; 8],
                ..Default::default()
            },
            Link {
                trace_id: TRACE,
                span_id: [6; 8],
                ..Default::default()
            },
        ];
        let sp = only_span(&[s]);
        assert_eq!(
            sp["references"],
            json!([
                {"refType": "CHILD_OF", "traceID": hex::encode(&TRACE), "spanID": "0909090909090909"},
                {"refType": "FOLLOWS_FROM", "traceID": hex::encode(&[0xcd; 16]), "spanID": "0707070707070707"},
                {"refType": "FOLLOWS_FROM", "traceID": hex::encode(&TRACE), "spanID": "0606060606060606"},
            ])
        );
    }

    #[test]
    fn typed_tags() {
        let mut s = span(1, 1);
        s.attributes = vec![
            KeyValue::string("s", "x"),
            KeyValue::new("b", AnyValue::Bool(true)),
            KeyValue::new("i", AnyValue::Int(-42)),
            KeyValue::new("big", AnyValue::Int(i64::MAX)),
            KeyValue::new("f", AnyValue::Double(1.5)),
            KeyValue::new("bin", AnyValue::Bytes(vec![0, 1, 2, 255])),
            KeyValue::new(
                "arr",
                AnyValue::Array(vec![AnyValue::Int(1), AnyValue::String("a".into())]),
            ),
            KeyValue::new("kv", AnyValue::KvList(vec![KeyValue::new("n", AnyValue::Bool(false))])),
        ];
        let sp = only_span(&[s]);
        assert_eq!(
            sp["tags"],
            json!([
                {"key": "s", "type": "string", "value": "x"},
                {"key": "b", "type": "bool", "value": true},
                {"key": "i", "type": "int64", "value": -42},
                {"key": "big", "type": "int64", "value": i64::MAX},
                {"key": "f", "type": "float64", "value": 1.5},
                {"key": "bin", "type": "binary", "value": "AAEC/w=="},
                {"key": "arr", "type": "string", "value": "[1,\"a\"]"},
                {"key": "kv", "type": "string", "value": "{\"n\":false}"},
            ])
        );
    }

    #[test]
    fn non_finite_doubles_survive() {
        let mut s = span(1, 1);
        s.attributes = vec![
            KeyValue::new("nan", AnyValue::Double(f64::NAN)),
            KeyValue::new("inf", AnyValue::Double(f64::INFINITY)),
            KeyValue::new("ninf", AnyValue::Double(f64::NEG_INFINITY)),
        ];
        let v = trace_to_jaeger(&[s]);
        assert_eq!(
            v["spans"][0]["tags"][0],
            json!({"key": "nan", "type": "float64", "value": "NaN"})
        );
        let back = jaeger_to_spans(&v).unwrap();
        let vals: Vec<f64> = back[0]
            .attributes
            .iter()
            .map(|kv| match kv.value {
                AnyValue::Double(d) => d,
                _ => panic!("not a double"),
            })
            .collect();
        assert!(vals[0].is_nan());
        assert_eq!(vals[1..], [f64::INFINITY, f64::NEG_INFINITY]);
    }

    #[test]
    fn span_kind_tag() {
        for (kind, want) in [
            (SpanKind::Server, Some("server")),
            (SpanKind::Client, Some("client")),
            (SpanKind::Producer, Some("producer")),
            (SpanKind::Consumer, Some("consumer")),
            (SpanKind::Internal, Some("internal")),
            (SpanKind::Unspecified, None),
        ] {
            let mut s = span(1, 1);
            s.kind = kind;
            let sp = only_span(&[s]);
            assert_eq!(
                find_tag(&sp["tags"], "span.kind").map(|t| t["value"].clone()),
                want.map(|w| json!(w))
            );
            if want.is_some() {
                assert_eq!(find_tag(&sp["tags"], "span.kind").unwrap()["type"], "string");
            }
        }
    }

    #[test]
    fn status_tags() {
        let mut s = span(1, 1);
        s.status = Status {
            code: StatusCode::Unset,
            message: String::new(),
        };
        assert!(tag_keys(&only_span(&[s.clone()])["tags"]).is_empty());

        s.status.code = StatusCode::Ok;
        let sp = only_span(&[s.clone()]);
        assert_eq!(
            sp["tags"],
            json!([{"key": "otel.status_code", "type": "string", "value": "OK"}])
        );

        s.status = Status {
            code: StatusCode::Error,
            message: "boom".into(),
        };
        let sp = only_span(&[s]);
        assert_eq!(
            sp["tags"],
            json!([
                {"key": "otel.status_code", "type": "string", "value": "ERROR"},
                {"key": "error", "type": "bool", "value": true},
                {"key": "otel.status_description", "type": "string", "value": "boom"},
            ])
        );
    }

    #[test]
    fn scope_and_trace_state_tags() {
        let mut s = span(1, 1);
        s.scope = Arc::new(Scope {
            name: "io.lib".into(),
            version: "1.2".into(),
            ..Default::default()
        });
        s.trace_state = "vendor=x".into();
        let sp = only_span(&[s.clone()]);
        assert_eq!(find_tag(&sp["tags"], "otel.scope.name").unwrap()["value"], "io.lib");
        assert_eq!(find_tag(&sp["tags"], "otel.scope.version").unwrap()["value"], "1.2");
        assert_eq!(find_tag(&sp["tags"], "w3c.tracestate").unwrap()["value"], "vendor=x");

        s.scope = Arc::new(Scope {
            name: "only-name".into(),
            ..Default::default()
        });
        s.trace_state.clear();
        assert_eq!(tag_keys(&only_span(&[s])["tags"]), ["otel.scope.name"]);
    }

    #[test]
    fn attributes_come_first_and_fields_override_same_named_ones() {
        let mut s = span(1, 1);
        s.kind = SpanKind::Server;
        s.attributes = vec![
            KeyValue::string("span.kind", "client"),
            KeyValue::string("http.method", "GET"),
        ];
        let sp = only_span(&[s]);
        assert_eq!(tag_keys(&sp["tags"]), ["http.method", "span.kind"]);
        assert_eq!(find_tag(&sp["tags"], "span.kind").unwrap()["value"], "server");
    }

    #[test]
    fn events_become_logs() {
        let mut s = span(1, 1);
        s.events = vec![
            Event {
                time_unix_nano: 3_000_999,
                name: "exception".into(),
                attributes: vec![KeyValue::new("exception.escaped", AnyValue::Bool(false))],
                dropped_attributes_count: 0,
            },
            Event {
                time_unix_nano: 4_000,
                ..Default::default()
            },
        ];
        let sp = only_span(&[s]);
        assert_eq!(
            sp["logs"],
            json!([
                {"timestamp": 3000, "fields": [
                    {"key": "event", "type": "string", "value": "exception"},
                    {"key": "exception.escaped", "type": "bool", "value": false},
                ]},
                {"timestamp": 4, "fields": []},
            ])
        );
    }

    #[test]
    fn text_round_trip() {
        let mut s = span(1, 1);
        s.parent_span_id = [2; 8];
        s.kind = SpanKind::Client;
        s.status = Status {
            code: StatusCode::Error,
            message: "bad".into(),
        };
        s.attributes = vec![
            KeyValue::new("n", AnyValue::Int(-7)),
            KeyValue::new("d", AnyValue::Double(0.25)),
        ];
        s.scope = Arc::new(Scope {
            name: "lib".into(),
            version: "0.1".into(),
            ..Default::default()
        });
        let text = serde_json::to_string(&trace_to_jaeger(std::slice::from_ref(&s))).unwrap();
        let back = jaeger_to_spans(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(back, vec![s]);
    }

    // ---- reverse-only rules ----

    fn jaeger_span(tags: Value) -> Value {
        json!({
            "traceID": "00000000000000000000000000000001",
            "spans": [{
                "traceID": "00000000000000000000000000000001",
                "spanID": "0000000000000002",
                "operationName": "op",
                "references": [],
                "startTime": 5,
                "duration": 7,
                "tags": tags,
                "logs": [],
                "processID": "p1",
            }],
            "processes": {"p1": {"serviceName": "svc", "tags": [{"key": "host", "type": "string", "value": "h"}]}},
        })
    }

    #[test]
    fn reverse_basic_fields() {
        let spans = jaeger_to_spans(&jaeger_span(json!([]))).unwrap();
        let s = &spans[0];
        assert_eq!(s.trace_id[15], 1);
        assert_eq!(s.span_id, [0, 0, 0, 0, 0, 0, 0, 2]);
        assert!(s.is_root());
        assert_eq!((s.start_unix_nano, s.end_unix_nano), (5_000, 12_000));
        assert_eq!(s.service_name(), "svc");
        assert_eq!(
            s.resource.attributes,
            vec![KeyValue::string("service.name", "svc"), KeyValue::string("host", "h")]
        );
        assert_eq!(s.kind, SpanKind::Unspecified);
        assert_eq!(s.status, Status::default());
    }

    #[test]
    fn reverse_error_tag_alone_means_error() {
        for err in [json!(true), json!("true")] {
            let v = jaeger_span(
                json!([{"key": "error", "type": if err.is_boolean() { "bool" } else { "string" }, "value": err}]),
            );
            let s = &jaeger_to_spans(&v).unwrap()[0];
            assert_eq!(s.status.code, StatusCode::Error);
            assert!(s.attributes.is_empty());
        }
        // error=false is not a status; it stays a plain attribute.
        let v = jaeger_span(json!([{"key": "error", "type": "bool", "value": false}]));
        let s = &jaeger_to_spans(&v).unwrap()[0];
        assert_eq!(s.status.code, StatusCode::Unset);
        assert_eq!(s.attributes, vec![KeyValue::new("error", AnyValue::Bool(false))]);
    }

    /// As in OpenTelemetry's translator, `error=true` is the final word.
    #[test]
    fn reverse_error_wins_over_status_code() {
        let v = jaeger_span(json!([
            {"key": "error", "type": "bool", "value": true},
            {"key": "otel.status_code", "type": "string", "value": "OK"},
        ]));
        let s = &jaeger_to_spans(&v).unwrap()[0];
        assert_eq!(s.status.code, StatusCode::Error);
        assert!(s.attributes.is_empty());
    }

    #[test]
    fn reverse_unparseable_special_tags_stay_attributes() {
        let v = jaeger_span(json!([
            {"key": "span.kind", "type": "string", "value": "sideways"},
            {"key": "otel.status_code", "type": "int64", "value": 2},
        ]));
        let s = &jaeger_to_spans(&v).unwrap()[0];
        assert_eq!(s.kind, SpanKind::Unspecified);
        assert_eq!(s.status.code, StatusCode::Unset);
        assert_eq!(s.attributes.len(), 2);
    }

    #[test]
    fn reverse_legacy_library_tags_and_shared_scopes() {
        let mut v = jaeger_span(json!([
            {"key": "otel.library.name", "type": "string", "value": "old"},
            {"key": "otel.library.version", "type": "string", "value": "9"},
        ]));
        let second = {
            let mut s = v["spans"][0].clone();
            s["spanID"] = json!("0000000000000003");
            s
        };
        v["spans"].as_array_mut().unwrap().push(second);
        let spans = jaeger_to_spans(&v).unwrap();
        assert_eq!(
            (spans[0].scope.name.as_str(), spans[0].scope.version.as_str()),
            ("old", "9")
        );
        assert!(spans[0].attributes.is_empty());
        assert!(Arc::ptr_eq(&spans[0].scope, &spans[1].scope));
        assert!(Arc::ptr_eq(&spans[0].resource, &spans[1].resource));
    }

    #[test]
    fn reverse_short_trace_id_envelope_inline_process_and_parent_field() {
        let v = json!({"data": [{
            "traceID": "00000000000000ff",
            "spans": [{
                "spanID": "2",
                "parentSpanID": "0000000000000001",
                "operationName": "op",
                "startTime": 1.0e3,
                "duration": 1,
                "process": {"serviceName": "inline", "tags": null},
                "tags": [{"key": "untyped", "value": 3}, {"key": "u2", "value": "x"}, {"key": "u3", "value": 0.5}],
                "logs": [{"timestamp": 2, "fields": [{"key": "event", "value": "hi"}, {"key": "k", "value": true}]}],
            }],
        }]});
        let s = &jaeger_to_spans(&v).unwrap()[0];
        let mut want_trace = [0u8; 16];
        want_trace[15] = 0xff;
        assert_eq!(s.trace_id, want_trace);
        assert_eq!(s.span_id, [0, 0, 0, 0, 0, 0, 0, 2]);
        assert_eq!(s.parent_span_id, [0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(s.start_unix_nano, 1_000_000);
        assert_eq!(s.service_name(), "inline");
        assert_eq!(
            s.attributes,
            vec![
                KeyValue::new("untyped", AnyValue::Int(3)),
                KeyValue::string("u2", "x"),
                KeyValue::new("u3", AnyValue::Double(0.5)),
            ]
        );
        assert_eq!(
            s.events,
            vec![Event {
                time_unix_nano: 2_000,
                name: "hi".into(),
                attributes: vec![KeyValue::new("k", AnyValue::Bool(true))],
                dropped_attributes_count: 0,
            }]
        );
    }

    #[test]
    fn reverse_references() {
        let mut v = jaeger_span(json!([]));
        v["spans"][0]["references"] = json!([
            {"refType": "FOLLOWS_FROM", "traceID": "00000000000000000000000000000001", "spanID": "00000000000000aa"},
            {"refType": "CHILD_OF", "traceID": "000000000000000000000000000000ff", "spanID": "00000000000000bb"},
            {"refType": "CHILD_OF", "traceID": "00000000000000000000000000000001", "spanID": "00000000000000cc"},
            {"refType": "CHILD_OF", "traceID": "00000000000000000000000000000001", "spanID": "00000000000000dd"},
        ]);
        let s = &jaeger_to_spans(&v).unwrap()[0];
        assert_eq!(s.parent_span_id[7], 0xcc);
        // A CHILD_OF into another trace, or a second one, can only be a link.
        let linked: Vec<u8> = s.links.iter().map(|l| l.span_id[7]).collect();
        assert_eq!(linked, [0xaa, 0xbb, 0xdd]);
        assert_eq!(s.links[1].trace_id[15], 0xff);
    }

    type Breakage = fn(&mut Value);

    #[test]
    fn reverse_rejects_bad_input() {
        let cases: Vec<(&str, Breakage)> = vec![
            ("not an object", |v| *v = json!([])),
            ("no spans", |v| drop(v.as_object_mut().unwrap().remove("spans"))),
            ("bad span id", |v| v["spans"][0]["spanID"] = json!("xyz!")),
            ("zero span id", |v| v["spans"][0]["spanID"] = json!("0000000000000000")),
            ("long span id", |v| {
                v["spans"][0]["spanID"] = json!("000000000000000001")
            }),
            ("bad trace id", |v| v["spans"][0]["traceID"] = json!("nothex")),
            ("unknown process", |v| v["spans"][0]["processID"] = json!("p9")),
            ("negative start", |v| v["spans"][0]["startTime"] = json!(-1)),
            ("no start", |v| {
                drop(v["spans"][0].as_object_mut().unwrap().remove("startTime"))
            }),
            ("huge start", |v| v["spans"][0]["startTime"] = json!(u64::MAX)),
            ("bad tag type", |v| {
                v["spans"][0]["tags"] = json!([{"key": "a", "type": "blob", "value": 1}])
            }),
            ("mistyped tag", |v| {
                v["spans"][0]["tags"] = json!([{"key": "a", "type": "int64", "value": 1.5}])
            }),
            ("bad base64", |v| {
                v["spans"][0]["tags"] = json!([{"key": "a", "type": "binary", "value": "!!"}])
            }),
            ("tag without key", |v| {
                v["spans"][0]["tags"] = json!([{"type": "string", "value": "x"}])
            }),
            ("bad flags", |v| v["spans"][0]["flags"] = json!(-1)),
            ("data not array", |v| *v = json!({"data": {}})),
        ];
        for (what, mutate) in cases {
            let mut v = jaeger_span(json!([]));
            mutate(&mut v);
            assert!(jaeger_to_spans(&v).is_err(), "{what} was accepted");
        }
    }

    // ---- round trip properties ----

    fn nonzero<const N: usize>() -> impl Strategy<Value = [u8; N]>
    where
        [u8; N]: Arbitrary,
    {
        any::<[u8; N]>().prop_filter("non-zero id", |b| b.iter().any(|&x| x != 0))
    }

    // Keys start with "k" so none collides with the tags the mapping itself uses.
    fn key() -> impl Strategy<Value = String> {
        "k[a-z0-9_.]{0,8}"
    }

    fn value() -> impl Strategy<Value = AnyValue> {
        prop_oneof![
            ".{0,12}".prop_map(AnyValue::String),
            any::<bool>().prop_map(AnyValue::Bool),
            any::<i64>().prop_map(AnyValue::Int),
            any::<f64>()
                .prop_filter("finite", |d| d.is_finite())
                .prop_map(AnyValue::Double),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(AnyValue::Bytes),
        ]
    }

    fn attrs() -> impl Strategy<Value = Vec<KeyValue>> {
        proptest::collection::vec((key(), value()).prop_map(|(k, v)| KeyValue::new(k, v)), 0..5)
    }

    fn micros_as_nanos(max: u64) -> impl Strategy<Value = u64> {
        (0..max).prop_map(|us| us * 1000)
    }

    fn resource() -> impl Strategy<Value = Arc<Resource>> {
        ("[a-z][a-z0-9-]{0,8}", attrs()).prop_map(|(service, mut attributes)| {
            attributes.insert(0, KeyValue::string("service.name", service));
            Arc::new(Resource {
                attributes,
                dropped_attributes_count: 0,
            })
        })
    }

    fn scope() -> impl Strategy<Value = Arc<Scope>> {
        ("[a-z.]{0,6}", "[0-9.]{0,4}").prop_map(|(name, version)| {
            Arc::new(Scope {
                name,
                version,
                ..Default::default()
            })
        })
    }

    fn event() -> impl Strategy<Value = Event> {
        (micros_as_nanos(1 << 50), ".{0,6}", attrs()).prop_map(|(time_unix_nano, name, attributes)| Event {
            time_unix_nano,
            name,
            attributes,
            dropped_attributes_count: 0,
        })
    }

    /// A link from OTLP (no reference type) or from Jaeger (the type it came as).
    fn link() -> impl Strategy<Value = Link> {
        let ref_type = prop_oneof![Just(None), Just(Some("child_of")), Just(Some("follows_from"))];
        (nonzero::<16>(), nonzero::<8>(), ref_type).prop_map(|(trace_id, span_id, ref_type)| Link {
            trace_id,
            span_id,
            attributes: ref_type
                .map(|t| vec![KeyValue::string(LINK_REF_TYPE, t)])
                .unwrap_or_default(),
            ..Default::default()
        })
    }

    fn status() -> impl Strategy<Value = Status> {
        (0..3i32, ".{0,8}").prop_map(|(c, message)| Status {
            code: StatusCode::from_i32(c).unwrap(),
            message,
        })
    }

    /// A span without its trace id, resource and scope, which the trace strategy shares out.
    fn span_parts() -> impl Strategy<Value = (Span, usize, usize)> {
        (
            (
                nonzero::<8>(),
                prop_oneof![Just([0u8; 8]), nonzero::<8>()],
                "[a-z0-9=,]{0,10}",
                any::<u32>(),
            ),
            (".{0,10}", 0..6i32, micros_as_nanos(1 << 50), micros_as_nanos(1 << 30)),
            (
                attrs(),
                proptest::collection::vec(event(), 0..3),
                proptest::collection::vec(link(), 0..3),
            ),
            (status(), 0..4usize, 0..4usize),
        )
            .prop_map(
                |(
                    (span_id, parent, trace_state, flags),
                    (name, kind, start, dur),
                    (attributes, events, links),
                    (status, r, sc),
                )| {
                    let span = Span {
                        span_id,
                        parent_span_id: parent,
                        trace_state,
                        flags,
                        name,
                        kind: SpanKind::from_i32(kind).unwrap(),
                        start_unix_nano: start,
                        end_unix_nano: start + dur,
                        attributes,
                        events,
                        links,
                        status,
                        ..Default::default()
                    };
                    (span, r, sc)
                },
            )
    }

    fn trace() -> impl Strategy<Value = Vec<Span>> {
        (
            nonzero::<16>(),
            proptest::collection::vec(resource(), 1..4),
            proptest::collection::vec(scope(), 1..4),
            proptest::collection::vec(span_parts(), 1..6),
        )
            .prop_map(|(trace_id, resources, scopes, parts)| {
                parts
                    .into_iter()
                    .map(|(mut span, r, sc)| {
                        span.trace_id = trace_id;
                        span.resource = resources[r % resources.len()].clone();
                        span.scope = scopes[sc % scopes.len()].clone();
                        span
                    })
                    .collect()
            })
    }

    fn sort_attrs(attrs: &mut [KeyValue]) {
        attrs.sort_by(|a, b| a.key.cmp(&b.key));
    }

    /// Brings a span into the form comparison allows: attribute order and flags are free, and
    /// a link without a reference type went out as FOLLOWS_FROM, which it comes back noting.
    fn normalise(mut s: Span) -> Span {
        sort_attrs(&mut s.attributes);
        for l in s.links.iter_mut().filter(|l| l.attributes.is_empty()) {
            l.attributes = vec![KeyValue::string(LINK_REF_TYPE, "follows_from")];
        }
        s.events.iter_mut().for_each(|e| sort_attrs(&mut e.attributes));
        let mut resource = (*s.resource).clone();
        sort_attrs(&mut resource.attributes);
        s.resource = Arc::new(resource);
        s.flags = jaeger_flags(s.flags);
        s
    }

    proptest! {
        // No regression files beside the source: a failure prints its minimal input.
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn round_trip(spans in trace()) {
            let jaeger = trace_to_jaeger(&spans);
            let back = jaeger_to_spans(&jaeger).unwrap();

            let mut want: Vec<Span> = spans.into_iter().map(normalise).collect();
            want.sort_by_key(|s| (s.start_unix_nano, s.span_id));
            let got: Vec<Span> = back.into_iter().map(normalise).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn output_is_well_formed(spans in trace()) {
            let v = trace_to_jaeger(&spans);
            prop_assert_eq!(v["traceID"].as_str().unwrap().len(), 32);
            let processes = v["processes"].as_object().unwrap();
            for s in v["spans"].as_array().unwrap() {
                prop_assert_eq!(s["spanID"].as_str().unwrap().len(), 16);
                prop_assert!(processes.contains_key(s["processID"].as_str().unwrap()));
                prop_assert!(s["startTime"].is_u64() && s["duration"].is_u64());
                for t in s["tags"].as_array().unwrap() {
                    let ty = t["type"].as_str().unwrap();
                    prop_assert!(["string", "bool", "int64", "float64", "binary"].contains(&ty));
                }
            }
            // Equal resources share one process.
            let distinct: Vec<&Value> = processes.values().collect();
            for (i, a) in distinct.iter().enumerate() {
                prop_assert!(distinct[i + 1..].iter().all(|b| a != b));
            }
        }
    }
}
