//! One trace, seen through each query API: Jaeger HTTP v1, Jaeger gRPC api_v2 and api_v3 (via
//! the Python grpcio client in tests/python/jaeger_grpc_client.py) and Zipkin v2. Each view is
//! reduced to the fields every protocol carries, so the views can be compared for equality.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use skein_model::otlp::json::base64_decode;

use crate::common;

/// What every query protocol says about a span.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpanView {
    pub span_id: String,
    /// Hex, "" for a root.
    pub parent_id: String,
    pub service: String,
    pub name: String,
    pub start_us: u64,
    pub duration_us: u64,
    pub error: bool,
}

/// Span id → view, so two views compare independent of order.
pub type TraceView = BTreeMap<String, SpanView>;

fn hex(b: &[u8]) -> String {
    common::hex(b)
}

/// Hex of a base64 bytes field in protobuf's JSON mapping.
pub fn b64_hex(v: &Value) -> String {
    let s = v.as_str().unwrap_or("");
    hex(&base64_decode(s).unwrap_or_else(|| panic!("not base64: {v}")))
}

fn u64_of(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("not an integer: {v}")),
        Value::Number(n) => n.as_u64().unwrap_or_else(|| panic!("not a u64: {v}")),
        Value::Null => 0,
        _ => panic!("not an integer: {v}"),
    }
}

/// Protobuf JSON timestamp (RFC 3339) → unix ns.
pub fn timestamp_ns(v: &Value) -> u64 {
    skein_api::time::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"))).unwrap()
}

/// Protobuf JSON duration (`"0.100s"`) → ns, without going through floats.
pub fn duration_ns(v: &Value) -> u64 {
    let s = v.as_str().unwrap_or("0s").trim_end_matches('s');
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac = format!("{frac:0<9}");
    secs.parse::<u64>().unwrap() * 1_000_000_000 + frac[..9].parse::<u64>().unwrap()
}

/// Runs the Python gRPC client on `calls` (see the script's docstring); one result per call.
pub fn grpc_calls(target: SocketAddr, calls: Vec<Value>) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/jaeger_grpc_client.py");
    let mut child = Command::new(common::python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the Python gRPC client");
    let plan = json!({ "target": target.to_string(), "calls": calls });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(plan.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the Python gRPC client failed: {:?}", out.status);
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).expect("client output is JSON");
    assert_eq!(results.len(), calls.len());
    results
}

/// The responses of a call that must have succeeded.
pub fn ok(result: &Value) -> &Vec<Value> {
    assert_eq!(result["ok"], true, "call failed: {result}");
    result["responses"].as_array().unwrap()
}

/// The status of a call that must have failed with `code`, whose message must mention `needle`.
pub fn failed(result: &Value, code: &str, needle: &str) {
    assert_eq!(result["ok"], false, "call should have failed with {code}: {result}");
    assert_eq!(result["code"], code, "{result}");
    let details = result["details"].as_str().unwrap_or("");
    assert!(details.contains(needle), "{needle:?} not in {details:?}");
}

/// Jaeger HTTP v1 `/api/traces/{id}`'s `data[0]`.
pub fn from_jaeger_v1(trace: &Value) -> TraceView {
    let processes = &trace["processes"];
    let mut out = TraceView::new();
    for s in trace["spans"].as_array().unwrap() {
        let parent = s["references"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["refType"] == "CHILD_OF")
            .map(|r| r["spanID"].as_str().unwrap().to_string())
            .unwrap_or_default();
        let error = s["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["key"] == "error" && (t["value"] == true || t["value"] == "true"));
        let v = SpanView {
            span_id: s["spanID"].as_str().unwrap().to_string(),
            parent_id: parent,
            service: processes[s["processID"].as_str().unwrap()]["serviceName"]
                .as_str()
                .unwrap()
                .to_string(),
            name: s["operationName"].as_str().unwrap().to_string(),
            start_us: u64_of(&s["startTime"]),
            duration_us: u64_of(&s["duration"]),
            error,
        };
        out.insert(v.span_id.clone(), v);
    }
    out
}

/// api_v2 `SpansResponseChunk`s (gRPC) → view; spans carry their process.
pub fn from_jaeger_v2(chunks: &[Value]) -> TraceView {
    let mut out = TraceView::new();
    for chunk in chunks {
        for s in chunk["spans"].as_array().unwrap() {
            let parent = s["references"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r.get("ref_type").is_none_or(|t| t == "CHILD_OF"))
                .map(|r| b64_hex(&r["span_id"]))
                .unwrap_or_default();
            let error = s["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["key"] == "error" && t["v_type"] == "BOOL" && t["v_bool"] == true);
            let start_ns = timestamp_ns(&s["start_time"]);
            let v = SpanView {
                span_id: b64_hex(&s["span_id"]),
                parent_id: parent,
                service: s["process"]["service_name"].as_str().unwrap().to_string(),
                name: s["operation_name"].as_str().unwrap().to_string(),
                start_us: start_ns / 1000,
                duration_us: duration_ns(&s["duration"]) / 1000,
                error,
            };
            out.insert(v.span_id.clone(), v);
        }
    }
    out
}

/// api_v3 `TracesData` messages (gRPC, protobuf JSON with proto field names) → view.
pub fn from_jaeger_v3(messages: &[Value]) -> TraceView {
    let mut out = TraceView::new();
    for td in messages {
        for rs in td["resource_spans"].as_array().unwrap() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|kv| kv["key"] == "service.name")
                .and_then(|kv| kv["value"]["string_value"].as_str())
                .unwrap_or("")
                .to_string();
            for ss in rs["scope_spans"].as_array().unwrap() {
                for s in ss["spans"].as_array().unwrap() {
                    let start = u64_of(&s["start_time_unix_nano"]);
                    let end = u64_of(&s["end_time_unix_nano"]);
                    let parent = if s.get("parent_span_id").is_some() {
                        b64_hex(&s["parent_span_id"])
                    } else {
                        String::new()
                    };
                    let v = SpanView {
                        span_id: b64_hex(&s["span_id"]),
                        parent_id: parent,
                        service: service.clone(),
                        name: s["name"].as_str().unwrap().to_string(),
                        start_us: start / 1000,
                        duration_us: (end - start) / 1000,
                        error: s["status"]["code"] == "STATUS_CODE_ERROR",
                    };
                    out.insert(v.span_id.clone(), v);
                }
            }
        }
    }
    out
}

/// Zipkin v2 `/api/v2/trace/{id}` → view. With a shared (server-side) span id, Zipkin has two
/// spans under one id; `from_zipkin` keeps them apart by the caller asking for distinct ids.
pub fn from_zipkin(spans: &[Value]) -> TraceView {
    let mut out = TraceView::new();
    for s in spans {
        let v = SpanView {
            span_id: s["id"].as_str().unwrap().to_string(),
            parent_id: s["parentId"].as_str().unwrap_or("").to_string(),
            service: s["localEndpoint"]["serviceName"].as_str().unwrap_or("").to_string(),
            name: s["name"].as_str().unwrap_or("").to_string(),
            start_us: u64_of(&s["timestamp"]),
            duration_us: u64_of(&s["duration"]),
            error: s["tags"].get("error").is_some(),
        };
        out.insert(v.span_id.clone(), v);
    }
    out
}
