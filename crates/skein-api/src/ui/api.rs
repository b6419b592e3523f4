//! The UI's own JSON endpoints, under `/api/ui/`.
//!
//! * `GET /api/ui/search?<Jaeger v1 search parameters>&durationScope=span|trace` — one row per
//!   trace (root, start, duration, span/error counts, spans per service), newest first.
//! * `GET /api/ui/traces/{id}` — a trace in a compact columnar shape: no attributes for traces
//!   over [`INLINE_ATTRIBUTES_MAX_SPANS`], so 100,000 spans stay a few MB and parse fast.
//! * `GET /api/ui/traces/{id}/spans/{spanId}` — one span in full (OTLP JSON, resource, scope).
//! * `GET /api/ui/dependencies?endTs=<ms>&lookback=<ms>` — service-map edges: call counts
//!   from the dependencies query, error rate and latency from a sample of recent traces.
//! * `GET /api/ui/attributes/keys?service=` and `GET /api/ui/attributes/values?key=&service=&limit=`
//!   — attribute autocomplete for the search form (recent data only, see
//!   `skein_query::autocomplete`).

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use skein_model::{hex, Span, SpanId};
use skein_query::{QueryEngine, TraceQuery};

use crate::jaeger::http::{parse_trace_id, v1_query};
use crate::params::Params;

/// Larger traces come without inline attributes (find-in-trace then matches names,
/// services and ids; the detail panel fetches a span's attributes on demand).
pub const INLINE_ATTRIBUTES_MAX_SPANS: usize = 20_000;
/// How many recent traces the service map samples for error rates and latency.
const MAP_SAMPLE_TRACES: usize = 300;
/// Traces bigger than this are left out of the service-map sample (their call counts still
/// come from the dependencies query).
const MAP_SAMPLE_MAX_SPANS: u32 = 5_000;

pub fn router(engine: QueryEngine) -> Router {
    Router::new()
        .route("/api/ui/search", get(search))
        .route("/api/ui/traces/{id}", get(trace))
        .route("/api/ui/traces/{id}/spans/{span_id}", get(span_detail))
        .route("/api/ui/dependencies", get(dependencies))
        .route("/api/ui/attributes/keys", get(attribute_keys))
        .route("/api/ui/attributes/values", get(attribute_values))
        .with_state(engine)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(error_body(msg.into()))).into_response()
}

/// The UI API's error body (also written by the query admission layer).
pub(crate) fn error_body(msg: String) -> serde_json::Value {
    json!({ "error": msg })
}

fn internal(e: impl std::fmt::Display) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SearchRow {
    trace_id: String,
    root_service: String,
    root_name: String,
    /// False when no span of the trace is a root (the root has not arrived, or never will).
    has_root: bool,
    start_us: u64,
    duration_us: f64,
    spans: u32,
    errors: u32,
    services: BTreeMap<String, u32>,
}

async fn search(State(q): State<QueryEngine>, Query(p): Query<Vec<(String, String)>>) -> Response {
    let p = Params(p);
    let mut query = match v1_query(&p).and_then(|query| q.within_max_traces(query, "limit")) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let limit = query.limit;
    // Duration of the whole trace rather than of any one span: search without the span
    // condition (over a wider sample), then filter the trace durations.
    let trace_scope = match p.get("durationScope") {
        None | Some("span") => None,
        Some("trace") => {
            let range = (query.min_duration_nano.take(), query.max_duration_nano.take());
            query.limit = if limit == 0 {
                0
            } else {
                limit.saturating_mul(20).max(1000)
            };
            Some(range)
        }
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("parameter durationScope={other:?}: expected \"span\" or \"trace\""),
            )
        }
    };
    let summaries = match q.search(&query).await {
        Ok(s) => s,
        Err(e) => return internal(e),
    };
    let mut rows: Vec<SearchRow> = summaries
        .into_iter()
        .filter(|s| match trace_scope {
            None => true,
            Some((min, max)) => {
                let d = s.end.saturating_sub(s.start);
                min.is_none_or(|m| d >= m) && max.is_none_or(|m| d <= m)
            }
        })
        .map(|s| SearchRow {
            trace_id: hex::encode(&s.trace_id),
            root_service: s.root_service,
            root_name: s.root_name,
            has_root: s.has_root,
            start_us: s.start / 1000,
            duration_us: s.end.saturating_sub(s.start) as f64 / 1000.0,
            spans: s.span_count,
            errors: s.error_count,
            services: s.services,
        })
        .collect();
    if limit > 0 {
        rows.truncate(limit);
    }
    Json(json!({ "traces": rows, "limit": limit })).into_response()
}

/// A trace as parallel arrays, one entry per span, ordered by start time.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct CompactTrace {
    trace_id: String,
    /// Unix µs of the earliest span; span starts are µs after it.
    start_us: u64,
    services: Vec<String>,
    names: Vec<String>,
    span_id: Vec<String>,
    /// Index of the parent span in these arrays; -1 for a root, -2 when the parent is missing.
    parent: Vec<i64>,
    start: Vec<f64>,
    duration: Vec<f64>,
    service: Vec<u32>,
    name: Vec<u32>,
    /// OTLP span kind number.
    kind: Vec<u8>,
    error: Vec<u8>,
    /// Number of events and links, so the waterfall can mark them without the details.
    events: Vec<u32>,
    links: Vec<u32>,
    /// `key=value` lines of span and resource attributes, for find-in-trace (small traces).
    attributes: Option<Vec<String>>,
}

fn interner(table: &mut Vec<String>, index: &mut HashMap<String, u32>, s: &str) -> u32 {
    if let Some(i) = index.get(s) {
        return *i;
    }
    let i = table.len() as u32;
    table.push(s.to_string());
    index.insert(s.to_string(), i);
    i
}

fn compact(spans: &[Span]) -> CompactTrace {
    let start_ns = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
    let position: HashMap<SpanId, usize> = spans.iter().enumerate().map(|(i, s)| (s.span_id, i)).collect();
    let mut t = CompactTrace {
        trace_id: spans.first().map(|s| hex::encode(&s.trace_id)).unwrap_or_default(),
        start_us: start_ns / 1000,
        ..Default::default()
    };
    let (mut services, mut names) = (HashMap::new(), HashMap::new());
    let inline = spans.len() <= INLINE_ATTRIBUTES_MAX_SPANS;
    let mut attributes = Vec::new();
    for s in spans {
        t.span_id.push(hex::encode(&s.span_id));
        t.parent.push(if s.is_root() {
            -1
        } else {
            position.get(&s.parent_span_id).map_or(-2, |i| *i as i64)
        });
        t.start.push((s.start_unix_nano - start_ns) as f64 / 1000.0);
        t.duration.push(s.duration_nano() as f64 / 1000.0);
        t.service
            .push(interner(&mut t.services, &mut services, s.service_name()));
        t.name.push(interner(&mut t.names, &mut names, &s.name));
        t.kind.push(s.kind as u8);
        t.error.push(s.is_error() as u8);
        t.events.push(s.events.len() as u32);
        t.links.push(s.links.len() as u32);
        if inline {
            let mut text = String::new();
            for kv in s.attributes.iter().chain(&s.resource.attributes) {
                text.push_str(&kv.key);
                text.push('=');
                text.push_str(&kv.value.to_display_string());
                text.push('\n');
            }
            attributes.push(text);
        }
    }
    if inline {
        t.attributes = Some(attributes);
    }
    t
}

async fn trace(State(q): State<QueryEngine>, Path(id): Path<String>) -> Response {
    let id = match parse_trace_id(&id) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match q.trace(&id).await {
        Ok(spans) if spans.is_empty() => error(StatusCode::NOT_FOUND, "trace not found"),
        Ok(spans) => Json(compact(&spans)).into_response(),
        Err(e) => internal(e),
    }
}

async fn span_detail(State(q): State<QueryEngine>, Path((id, span_id)): Path<(String, String)>) -> Response {
    let id = match parse_trace_id(&id) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Some(span_id) = hex::decode_id::<8>(&span_id) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid span id {span_id:?}: expected up to 16 hex characters"),
        );
    };
    let spans = match q.trace(&id).await {
        Ok(s) => s,
        Err(e) => return internal(e),
    };
    let Some(s) = spans.iter().find(|s| s.span_id == span_id) else {
        return error(StatusCode::NOT_FOUND, "span not found in this trace");
    };
    let mut resource = json!({ "attributes": skein_model::otlp::json::attributes(&s.resource.attributes) });
    if s.resource.dropped_attributes_count > 0 {
        resource["droppedAttributesCount"] = json!(s.resource.dropped_attributes_count);
    }
    Json(json!({
        "span": skein_model::otlp::json::span(s),
        "resource": resource,
        "scope": { "name": s.scope.name, "version": s.scope.version },
    }))
    .into_response()
}

async fn attribute_keys(State(q): State<QueryEngine>, Query(p): Query<Vec<(String, String)>>) -> Response {
    let p = Params(p);
    match q.attribute_keys(p.get("service")).await {
        Ok(keys) => Json(json!({ "keys": keys })).into_response(),
        Err(e) => internal(e),
    }
}

async fn attribute_values(State(q): State<QueryEngine>, Query(p): Query<Vec<(String, String)>>) -> Response {
    let p = Params(p);
    let Some(key) = p.get("key") else {
        return error(StatusCode::BAD_REQUEST, "parameter 'key' is required");
    };
    let limit = match p.u64("limit") {
        Ok(l) => l.unwrap_or(100) as usize,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match q.attribute_values(key, p.get("service"), limit).await {
        Ok(values) => Json(json!({ "values": values })).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Edge {
    parent: String,
    child: String,
    call_count: u64,
    /// Calls seen in the sampled traces, of which `sampled_errors` ended in error.
    sampled_calls: u64,
    sampled_errors: u64,
    /// Mean and maximum duration of the child's span for this edge, in the sample.
    mean_duration_us: f64,
    max_duration_us: f64,
}

#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceNode {
    name: String,
    sampled_spans: u64,
    sampled_errors: u64,
}

async fn dependencies(State(q): State<QueryEngine>, Query(p): Query<Vec<(String, String)>>) -> Response {
    let p = Params(p);
    let now_ms = skein_store::now_unix_nano() / 1_000_000;
    let (end_ms, lookback_ms) = match (p.u64("endTs"), p.u64("lookback")) {
        (Ok(e), Ok(l)) => (e.unwrap_or(now_ms), l.unwrap_or(3600 * 1000)),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    let (start, end) = (
        end_ms.saturating_sub(lookback_ms).saturating_mul(1_000_000),
        end_ms.saturating_mul(1_000_000).saturating_add(999_999),
    );
    let deps = match q.dependencies(start, end).await {
        Ok(d) => d,
        Err(e) => return internal(e),
    };
    let mut edges: BTreeMap<(String, String), Edge> = deps
        .into_iter()
        .map(|d| {
            let edge = Edge {
                parent: d.parent.clone(),
                child: d.child.clone(),
                call_count: d.call_count,
                ..Edge::default()
            };
            ((d.parent, d.child), edge)
        })
        .collect();
    let mut nodes: BTreeMap<String, ServiceNode> = BTreeMap::new();
    let sample = TraceQuery {
        start_min: Some(start),
        start_max: Some(end),
        limit: MAP_SAMPLE_TRACES,
        ..TraceQuery::default()
    };
    let summaries = match q.search(&sample).await {
        Ok(s) => s,
        Err(e) => return internal(e),
    };
    let mut sampled_traces = 0;
    for summary in summaries.iter().filter(|s| s.span_count <= MAP_SAMPLE_MAX_SPANS) {
        let spans = match q.trace(&summary.trace_id).await {
            Ok(s) => s,
            Err(e) => return internal(e),
        };
        sampled_traces += 1;
        let service_of: HashMap<SpanId, &str> = spans.iter().map(|s| (s.span_id, s.service_name())).collect();
        for s in &spans {
            let node = nodes.entry(s.service_name().to_string()).or_default();
            node.sampled_spans += 1;
            node.sampled_errors += s.is_error() as u64;
            let Some(parent) = service_of.get(&s.parent_span_id) else {
                continue;
            };
            if *parent == s.service_name() {
                continue;
            }
            let edge = edges
                .entry((parent.to_string(), s.service_name().to_string()))
                .or_insert_with(|| Edge {
                    parent: parent.to_string(),
                    child: s.service_name().to_string(),
                    ..Edge::default()
                });
            let d = s.duration_nano() as f64 / 1000.0;
            edge.sampled_calls += 1;
            edge.sampled_errors += s.is_error() as u64;
            edge.mean_duration_us += d; // a sum until the division below
            edge.max_duration_us = edge.max_duration_us.max(d);
        }
    }
    for e in edges.values_mut() {
        if e.sampled_calls > 0 {
            e.mean_duration_us /= e.sampled_calls as f64;
        }
        e.call_count = e.call_count.max(e.sampled_calls);
    }
    for (name, node) in nodes.iter_mut() {
        node.name = name.clone();
    }
    for e in edges.values() {
        for name in [&e.parent, &e.child] {
            nodes.entry(name.clone()).or_insert_with(|| ServiceNode {
                name: name.clone(),
                ..ServiceNode::default()
            });
        }
    }
    Json(json!({
        "services": nodes.into_values().collect::<Vec<_>>(),
        "edges": edges.into_values().collect::<Vec<_>>(),
        "sampledTraces": sampled_traces,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn span(id: u8, parent: u8, service: &str, start: u64, end: u64) -> Span {
        Span {
            trace_id: [1; 16],
            span_id: [0, 0, 0, 0, 0, 0, 0, id],
            parent_span_id: [0, 0, 0, 0, 0, 0, 0, parent],
            name: format!("op{id}"),
            start_unix_nano: start,
            end_unix_nano: end,
            resource: Arc::new(skein_model::Resource {
                attributes: vec![skein_model::KeyValue::string("service.name", service)],
                dropped_attributes_count: 0,
            }),
            ..Span::default()
        }
    }

    #[test]
    fn compact_links_parents_by_index_and_interns_names() {
        let spans = vec![
            span(1, 0, "front", 1_000_000, 9_000_000),
            span(2, 1, "back", 2_000_000, 3_000_000),
            span(3, 9, "back", 4_000_000, 5_500_000),
        ];
        let t = compact(&spans);
        assert_eq!(t.parent, vec![-1, 0, -2]);
        assert_eq!(t.services, vec!["front", "back"]);
        assert_eq!(t.service, vec![0, 1, 1]);
        assert_eq!(t.start, vec![0.0, 1000.0, 3000.0]);
        assert_eq!(t.duration, vec![8000.0, 1000.0, 1500.0]);
        assert_eq!(t.start_us, 1000);
        assert_eq!(
            t.attributes.as_ref().map(|a| a[0].as_str()),
            Some("service.name=front\n")
        );
    }
}
