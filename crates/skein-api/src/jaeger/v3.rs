//! Jaeger api_v3 over HTTP (the grpc-gateway JSON shape): OTLP JSON traces in `{"result": …}`.

use std::collections::{BTreeMap, HashSet};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use skein_model::otlp::json::{encode_traces_data, encode_traces_in_order};
use skein_model::{hex, Span, SpanKind};
use skein_query::{Asked, QueryEngine, TraceQuery};

use super::http::parse_trace_id;
use super::{incomplete_note, with_warning};
use crate::params::Params;
use crate::time::{format_rfc3339, parse_rfc3339};

pub fn router(engine: QueryEngine) -> Router {
    Router::new()
        .route("/api/v3/services", get(services))
        .route("/api/v3/operations", get(operations))
        .route("/api/v3/traces", get(find_traces))
        .route("/api/v3/traces/{id}", get(get_trace))
        .route("/api/v3/trace-summaries", get(trace_summaries))
        .with_state(engine)
}

pub fn v3_error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(v3_error_body(status, msg.into()))).into_response()
}

/// api_v3's error body (also written by the query admission layer).
pub fn v3_error_body(status: StatusCode, msg: String) -> Value {
    json!({ "error": { "httpCode": status.as_u16(), "message": msg } })
}

async fn services(State(q): State<QueryEngine>) -> Response {
    Json(json!({ "services": q.services() })).into_response()
}

async fn operations(State(q): State<QueryEngine>, Query(p): Query<Vec<(String, String)>>) -> Response {
    let p = Params(p);
    let Some(service) = p.get("service") else {
        return v3_error(StatusCode::BAD_REQUEST, "parameter 'service' is required");
    };
    let kind = match p.any(&["spanKind", "span_kind"]) {
        None => None,
        Some(k) => match SpanKind::parse(k) {
            Some(k) => Some(k),
            None => {
                return v3_error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown spanKind {k:?} (server, client, producer, consumer, internal)"),
                )
            }
        },
    };
    let ops: Vec<Value> = q
        .operations(service, kind)
        .into_iter()
        .map(|(name, k)| json!({ "name": name, "spanKind": if k == SpanKind::Unspecified { "" } else { k.as_jaeger() } }))
        .collect();
    Json(json!({ "operations": ops })).into_response()
}

async fn get_trace(
    State(q): State<QueryEngine>,
    Path(id): Path<String>,
    Query(p): Query<Vec<(String, String)>>,
) -> Response {
    let id = match parse_trace_id(&id).and_then(|id| check_get_trace_params(&Params(p)).map(|()| id)) {
        Ok(id) => id,
        Err(e) => return v3_error(StatusCode::BAD_REQUEST, e),
    };
    let note = || incomplete_note(&q, Asked::Trace(&id));
    match q.trace(&id).await {
        Ok(spans) if spans.is_empty() => match note() {
            Some(note) => v3_error(StatusCode::NOT_FOUND, format!("trace not found; {note}")),
            None => v3_error(StatusCode::NOT_FOUND, "trace not found"),
        },
        Ok(spans) => with_warning(
            Json(json!({ "result": encode_traces_data(spans.iter()) })).into_response(),
            note().as_deref(),
        ),
        Err(e) => v3_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GetTraceRequest`'s optional `start_time`, `end_time` (RFC 3339) and `raw_traces` (a
/// bool), refused when malformed as Jaeger's gateway does. They cannot change the answer here:
/// every trace is kept whole and never adjusted, so the whole trace is returned either way.
fn check_get_trace_params(p: &Params) -> Result<(), String> {
    let time = |keys: &[&str]| {
        p.any(keys)
            .map(|v| parse_rfc3339(v).map_err(|e| format!("{}: {e}", keys[0])))
            .transpose()
    };
    let start = time(&["startTime", "start_time"])?;
    let end = time(&["endTime", "end_time"])?;
    if let (Some(start), Some(end)) = (start, end) {
        if end < start {
            return Err("endTime (end_time) is before startTime (start_time)".into());
        }
    }
    if let Some(raw) = p.any(&["rawTraces", "raw_traces"]) {
        raw.parse::<bool>()
            .map_err(|_| format!("rawTraces={raw:?} must be true or false"))?;
    }
    Ok(())
}

/// api_v3 `TraceQueryParameters` after decoding, whichever binding they came over (the HTTP
/// query string here, protobuf in `grpc::v3`), so both validate and default them the same way.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct V3Search {
    pub service: Option<String>,
    pub operation: Option<String>,
    pub span_kind: Option<SpanKind>,
    /// Exact matches on span or resource attributes (the proto's `map<string, string>`).
    pub attributes: Vec<(String, String)>,
    /// Unix ns; both are required.
    pub start_min: Option<u64>,
    pub start_max: Option<u64>,
    pub duration_min_nano: Option<u64>,
    pub duration_max_nano: Option<u64>,
    /// Maximum number of traces; 20 when absent.
    pub search_depth: Option<usize>,
}

impl V3Search {
    pub fn into_query(self) -> Result<TraceQuery, String> {
        let (Some(start_min), Some(start_max)) = (self.start_min, self.start_max) else {
            return Err(
                "query.startTimeMin (start_time_min) and query.startTimeMax (start_time_max) are required".into(),
            );
        };
        if start_min > start_max {
            return Err("query.startTimeMin (start_time_min) is after query.startTimeMax (start_time_max)".into());
        }
        if let (Some(lo), Some(hi)) = (self.duration_min_nano, self.duration_max_nano) {
            if lo > hi {
                return Err("query.durationMin (duration_min) is greater than query.durationMax (duration_max)".into());
            }
        }
        Ok(TraceQuery {
            service: self.service.filter(|s| !s.is_empty()),
            operation: self.operation.filter(|s| !s.is_empty()),
            span_kind: self.span_kind,
            attributes: self.attributes,
            min_duration_nano: self.duration_min_nano,
            max_duration_nano: self.duration_max_nano,
            start_min: Some(start_min),
            start_max: Some(start_max),
            limit: self.search_depth.filter(|&n| n > 0).unwrap_or(20),
            ..TraceQuery::default()
        })
    }
}

/// Builds a search from api_v3 parameters (camelCase, with the older snake_case accepted).
pub fn v3_query(p: &Params) -> Result<TraceQuery, String> {
    let mut q = V3Search {
        service: p.any(&["query.serviceName", "query.service_name"]).map(str::to_string),
        operation: p
            .any(&["query.operationName", "query.operation_name"])
            .map(str::to_string),
        duration_min_nano: p.duration_ns(&["query.durationMin", "query.duration_min"])?,
        duration_max_nano: p.duration_ns(&["query.durationMax", "query.duration_max"])?,
        ..V3Search::default()
    };
    if let Some((key, n)) = p.any_named(&[
        "query.searchDepth",
        "query.search_depth",
        "query.numTraces",
        "query.num_traces",
    ]) {
        q.search_depth = Some(
            n.parse()
                .map_err(|_| format!("{key}={n:?} is not a whole number (0: the default, 20)"))?,
        );
    }
    if let Some(k) = p.any(&["query.spanKind", "query.span_kind"]) {
        q.span_kind =
            Some(SpanKind::parse(k).ok_or_else(|| {
                format!("unknown query.spanKind {k:?} (server, client, producer, consumer, internal)")
            })?);
    }
    if let Some(a) = p.get("query.attributes") {
        let map: BTreeMap<String, Value> =
            serde_json::from_str(a).map_err(|e| format!("query.attributes must be a JSON object: {e}"))?;
        for (k, v) in map {
            q.attributes
                .push((k, if let Value::String(s) = v { s } else { v.to_string() }));
        }
    }
    if let Some(min) = p.any(&["query.startTimeMin", "query.start_time_min"]) {
        q.start_min = Some(parse_rfc3339(min).map_err(|e| format!("query.startTimeMin: {e}"))?);
    }
    if let Some(max) = p.any(&["query.startTimeMax", "query.start_time_max"]) {
        q.start_max = Some(parse_rfc3339(max).map_err(|e| format!("query.startTimeMax: {e}"))?);
    }
    q.into_query()
}

async fn find_traces(State(q): State<QueryEngine>, Query(p): Query<Vec<(String, String)>>) -> Response {
    let query = match v3_query(&Params(p)).and_then(|query| q.within_max_traces(query, "query.searchDepth")) {
        Ok(q) => q,
        Err(e) => return v3_error(StatusCode::BAD_REQUEST, e),
    };
    match q.find_traces(&query).await {
        Ok(traces) => {
            let in_order = encode_traces_in_order(traces.iter().map(Vec::as_slice));
            let response = Json(json!({ "result": in_order })).into_response();
            with_warning(response, incomplete_note(&q, Asked::Search(&query)).as_deref())
        }
        Err(e) => v3_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// What the api_v3 trace summary reports about one trace, for both bindings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TraceStats {
    pub trace_id: String,
    pub root_service: String,
    pub root_name: String,
    /// Unix ns of the earliest start and the latest end.
    pub start: u64,
    pub end: u64,
    pub span_count: usize,
    pub error_count: usize,
    /// Spans whose parent is not in the trace.
    pub orphan_count: usize,
    /// (service, spans, error spans), sorted by service.
    pub services: Vec<(String, usize, usize)>,
}

/// The summary of one trace, computed from its spans.
pub fn summary_of(spans: &[Span]) -> TraceStats {
    let ids: HashSet<_> = spans.iter().map(|s| s.span_id).collect();
    let root = spans
        .iter()
        .filter(|s| s.is_root())
        .min_by_key(|s| s.start_unix_nano)
        .or_else(|| spans.first());
    let mut per_service: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for s in spans {
        let e = per_service.entry(s.service_name()).or_default();
        e.0 += 1;
        e.1 += s.is_error() as usize;
    }
    TraceStats {
        trace_id: spans.first().map(|s| hex::encode(&s.trace_id)).unwrap_or_default(),
        root_service: root.map(|s| s.service_name().to_string()).unwrap_or_default(),
        root_name: root.map(|s| s.name.clone()).unwrap_or_default(),
        start: spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0),
        end: spans.iter().map(|s| s.end_unix_nano).max().unwrap_or(0),
        span_count: spans.len(),
        error_count: spans.iter().filter(|s| s.is_error()).count(),
        orphan_count: spans
            .iter()
            .filter(|s| !s.is_root() && !ids.contains(&s.parent_span_id))
            .count(),
        services: per_service
            .into_iter()
            .map(|(name, (n, e))| (name.to_string(), n, e))
            .collect(),
    }
}

/// One summary per matching trace, in the gateway's JSON.
pub fn summarize(spans: &[Span]) -> Value {
    let s = summary_of(spans);
    json!({
        "traceId": s.trace_id,
        "rootServiceName": s.root_service,
        "rootSpanName": s.root_name,
        "startTime": format_rfc3339(s.start),
        "endTime": format_rfc3339(s.end),
        "durationUs": (s.end.saturating_sub(s.start)) / 1000,
        "spanCount": s.span_count,
        "errorSpanCount": s.error_count,
        "orphanSpanCount": s.orphan_count,
        "services": s.services.into_iter().map(|(name, n, e)| json!({ "name": name, "spanCount": n, "errorSpanCount": e })).collect::<Vec<_>>(),
    })
}

async fn trace_summaries(State(q): State<QueryEngine>, Query(p): Query<Vec<(String, String)>>) -> Response {
    let query = match v3_query(&Params(p)).and_then(|query| q.within_max_traces(query, "query.searchDepth")) {
        Ok(q) => q,
        Err(e) => return v3_error(StatusCode::BAD_REQUEST, e),
    };
    match q.find_trace_outlines(&query).await {
        Ok(traces) => {
            let out: Vec<Value> = traces.iter().map(|t| summarize(t)).collect();
            let response = Json(json!({ "result": { "summaries": out } })).into_response();
            with_warning(response, incomplete_note(&q, Asked::Search(&query)).as_deref())
        }
        Err(e) => v3_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
