//! Jaeger api_v3 over HTTP (the grpc-gateway JSON shape): OTLP JSON traces in `{"result": …}`.

use std::collections::{BTreeMap, HashSet};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use skein_model::otlp::json::encode_traces_data;
use skein_model::{hex, Span, SpanKind};
use skein_query::{QueryEngine, TraceQuery};

use super::http::parse_trace_id;
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
    (
        status,
        Json(json!({ "error": { "httpCode": status.as_u16(), "message": msg.into() } })),
    )
        .into_response()
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
            None => return v3_error(StatusCode::BAD_REQUEST, format!("unknown spanKind {k:?}")),
        },
    };
    let ops: Vec<Value> = q
        .operations(service, kind)
        .into_iter()
        .map(|(name, k)| json!({ "name": name, "spanKind": if k == SpanKind::Unspecified { "" } else { k.as_jaeger() } }))
        .collect();
    Json(json!({ "operations": ops })).into_response()
}

async fn get_trace(State(q): State<QueryEngine>, Path(id): Path<String>) -> Response {
    let id = match parse_trace_id(&id) {
        Ok(id) => id,
        Err(e) => return v3_error(StatusCode::BAD_REQUEST, e),
    };
    match q.trace(&id).await {
        Ok(spans) if spans.is_empty() => v3_error(StatusCode::NOT_FOUND, "trace not found"),
        Ok(spans) => Json(json!({ "result": encode_traces_data(spans.iter()) })).into_response(),
        Err(e) => v3_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Builds a search from api_v3 parameters (camelCase, with the older snake_case accepted).
pub fn v3_query(p: &Params) -> Result<TraceQuery, String> {
    let mut q = TraceQuery {
        service: p.any(&["query.serviceName", "query.service_name"]).map(str::to_string),
        operation: p
            .any(&["query.operationName", "query.operation_name"])
            .map(str::to_string),
        min_duration_nano: p.duration_ns(&["query.durationMin", "query.duration_min"])?,
        max_duration_nano: p.duration_ns(&["query.durationMax", "query.duration_max"])?,
        limit: 20,
        ..TraceQuery::default()
    };
    if let Some(n) = p.any(&[
        "query.searchDepth",
        "query.search_depth",
        "query.numTraces",
        "query.num_traces",
    ]) {
        q.limit = n
            .parse()
            .map_err(|_| format!("query.searchDepth={n:?} is not a positive integer"))?;
    }
    if let Some(k) = p.any(&["query.spanKind", "query.span_kind"]) {
        q.span_kind = Some(SpanKind::parse(k).ok_or_else(|| format!("unknown query.spanKind {k:?}"))?);
    }
    if let Some(a) = p.get("query.attributes") {
        let map: BTreeMap<String, Value> =
            serde_json::from_str(a).map_err(|e| format!("query.attributes must be a JSON object: {e}"))?;
        for (k, v) in map {
            q.attributes
                .push((k, if let Value::String(s) = v { s } else { v.to_string() }));
        }
    }
    let min = p.any(&["query.startTimeMin", "query.start_time_min"]);
    let max = p.any(&["query.startTimeMax", "query.start_time_max"]);
    let (Some(min), Some(max)) = (min, max) else {
        return Err("query.startTimeMin and query.startTimeMax are required (RFC 3339)".into());
    };
    q.start_min = Some(parse_rfc3339(min).map_err(|e| format!("query.startTimeMin: {e}"))?);
    q.start_max = Some(parse_rfc3339(max).map_err(|e| format!("query.startTimeMax: {e}"))?);
    if q.start_min > q.start_max {
        return Err("query.startTimeMin is after query.startTimeMax".into());
    }
    Ok(q)
}

async fn find_traces(State(q): State<QueryEngine>, Query(p): Query<Vec<(String, String)>>) -> Response {
    let query = match v3_query(&Params(p)) {
        Ok(q) => q,
        Err(e) => return v3_error(StatusCode::BAD_REQUEST, e),
    };
    match q.find_traces(&query).await {
        Ok(traces) => {
            let all: Vec<&Span> = traces.iter().flatten().collect();
            Json(json!({ "result": encode_traces_data(all) })).into_response()
        }
        Err(e) => v3_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// One summary per matching trace, computed from its spans.
pub fn summarize(spans: &[Span]) -> Value {
    let ids: HashSet<_> = spans.iter().map(|s| s.span_id).collect();
    let start = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_unix_nano).max().unwrap_or(0);
    let root = spans
        .iter()
        .filter(|s| s.is_root())
        .min_by_key(|s| s.start_unix_nano)
        .or_else(|| spans.first());
    let orphans = spans
        .iter()
        .filter(|s| !s.is_root() && !ids.contains(&s.parent_span_id))
        .count();
    let mut per_service: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for s in spans {
        let e = per_service.entry(s.service_name()).or_default();
        e.0 += 1;
        e.1 += s.is_error() as usize;
    }
    json!({
        "traceId": spans.first().map(|s| hex::encode(&s.trace_id)).unwrap_or_default(),
        "rootServiceName": root.map(|s| s.service_name()).unwrap_or_default(),
        "rootSpanName": root.map(|s| s.name.as_str()).unwrap_or_default(),
        "startTime": format_rfc3339(start),
        "endTime": format_rfc3339(end),
        "durationUs": (end.saturating_sub(start)) / 1000,
        "spanCount": spans.len(),
        "errorSpanCount": spans.iter().filter(|s| s.is_error()).count(),
        "orphanSpanCount": orphans,
        "services": per_service.into_iter().map(|(name, (n, e))| json!({ "name": name, "spanCount": n, "errorSpanCount": e })).collect::<Vec<_>>(),
    })
}

async fn trace_summaries(State(q): State<QueryEngine>, Query(p): Query<Vec<(String, String)>>) -> Response {
    let query = match v3_query(&Params(p)) {
        Ok(q) => q,
        Err(e) => return v3_error(StatusCode::BAD_REQUEST, e),
    };
    match q.find_traces(&query).await {
        Ok(traces) => {
            let out: Vec<Value> = traces.iter().map(|t| summarize(t)).collect();
            Json(json!({ "result": { "summaries": out } })).into_response()
        }
        Err(e) => v3_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
