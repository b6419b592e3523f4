//! Jaeger query API v1 (JSON), as served by jaeger-query on 16686.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use skein_model::{hex, SpanKind, TraceId};
use skein_query::{Asked, QueryEngine, TraceQuery};

use super::convert::{jaeger_trace, JaegerTraceJson};
use super::{incomplete_note, with_warning};
use crate::params::Params;

pub fn router(engine: QueryEngine) -> Router {
    Router::new()
        .route("/api/services", get(services))
        .route("/api/services/{service}/operations", get(service_operations))
        .route("/api/operations", get(operations))
        .route("/api/traces", get(find_traces))
        .route("/api/traces/{id}", get(get_trace))
        .route("/api/dependencies", get(dependencies))
        .with_state(engine)
}

/// Jaeger's v1 envelope.
fn data(data: impl Serialize, total: usize) -> Response {
    data_noting(data, total, None)
}

/// The envelope with a note that the data may be incomplete in `errors` (status 200, as Jaeger
/// answers a multi-trace lookup that found some of the traces) and in a `Warning` header.
fn data_noting(data: impl Serialize, total: usize, note: Option<String>) -> Response {
    let errors = note.iter().map(|msg| json!({ "code": 500, "msg": msg })).collect();
    envelope(data, total, errors, note.as_deref())
}

/// The envelope with `errors` (none: `null`) and a `Warning` header when `warning` is set.
fn envelope(data: impl Serialize, total: usize, errors: Vec<Value>, warning: Option<&str>) -> Response {
    #[derive(Serialize)]
    struct Envelope<T> {
        data: T,
        total: usize,
        limit: usize,
        offset: usize,
        errors: Option<Vec<Value>>,
    }
    let response = Json(Envelope {
        data,
        total,
        limit: 0,
        offset: 0,
        errors: (!errors.is_empty()).then_some(errors),
    })
    .into_response();
    with_warning(response, warning)
}

/// A 404 for a trace, saying so when a damaged block that may hold it was skipped.
fn trace_not_found(note: Option<String>) -> Response {
    match note {
        Some(note) => v1_error(StatusCode::NOT_FOUND, format!("trace not found; {note}")),
        None => v1_error(StatusCode::NOT_FOUND, "trace not found"),
    }
}

pub fn v1_error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(v1_error_body(status, msg.into()))).into_response()
}

/// Jaeger v1's error envelope (also written by the query admission layer).
pub fn v1_error_body(status: StatusCode, msg: String) -> Value {
    json!({ "data": null, "total": 0, "limit": 0, "offset": 0, "errors": [{ "code": status.as_u16(), "msg": msg }] })
}

async fn services(State(q): State<QueryEngine>) -> Response {
    let s = q.services();
    let n = s.len();
    data(s, n)
}

async fn service_operations(State(q): State<QueryEngine>, Path(service): Path<String>) -> Response {
    let mut names: Vec<String> = q.operations(&service, None).into_iter().map(|(n, _)| n).collect();
    names.dedup();
    let n = names.len();
    data(names, n)
}

async fn operations(State(q): State<QueryEngine>, Query(p): Query<Vec<(String, String)>>) -> Response {
    let p = Params(p);
    let Some(service) = p.get("service") else {
        return v1_error(StatusCode::BAD_REQUEST, "parameter 'service' is required");
    };
    let kind = match p.get("spanKind").map(|k| SpanKind::parse(k).ok_or(k)) {
        Some(Err(k)) => {
            return v1_error(
                StatusCode::BAD_REQUEST,
                format!("unknown spanKind {k:?} (server, client, producer, consumer, internal)"),
            )
        }
        Some(Ok(k)) => Some(k),
        None => None,
    };
    let ops: Vec<Value> = q
        .operations(service, kind)
        .into_iter()
        .map(|(name, k)| json!({ "name": name, "spanKind": if k == SpanKind::Unspecified { "" } else { k.as_jaeger() } }))
        .collect();
    let n = ops.len();
    data(ops, n)
}

pub fn parse_trace_id(s: &str) -> Result<TraceId, String> {
    let id =
        hex::decode_id::<16>(s).ok_or_else(|| format!("invalid trace id {s:?}: expected up to 32 hex characters"))?;
    not_all_zeros(id, s)
}

/// A lookup of the all-zero trace id is refused (400), as gRPC api_v2 refuses it: ingest
/// rejects that id, so the lookup could only ever say "not found".
pub fn not_all_zeros(id: TraceId, s: &str) -> Result<TraceId, String> {
    if id == [0; 16] {
        return Err(format!("invalid trace id {s:?}: all zeros, which no span can have"));
    }
    Ok(id)
}

async fn get_trace(State(q): State<QueryEngine>, Path(id): Path<String>) -> Response {
    let id = match parse_trace_id(&id) {
        Ok(id) => id,
        Err(e) => return v1_error(StatusCode::BAD_REQUEST, e),
    };
    match q.trace(&id).await {
        Ok(spans) if spans.is_empty() => trace_not_found(incomplete_note(&q, Asked::Trace(&id))),
        Ok(spans) => data_noting([jaeger_trace(&spans)], 1, incomplete_note(&q, Asked::Trace(&id))),
        Err(e) => v1_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn now_us() -> u64 {
    skein_store::now_unix_nano() / 1000
}

/// Builds a search from Jaeger v1 parameters.
pub fn v1_query(p: &Params) -> Result<TraceQuery, String> {
    let mut q = TraceQuery {
        service: p.get("service").map(str::to_string),
        operation: p.get("operation").filter(|o| *o != "all").map(str::to_string),
        // 0 is "not set", as in Jaeger (a search for every trace is refused by `max_traces`).
        limit: p
            .u64("limit")?
            .filter(|&n| n > 0)
            .map_or(20, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        min_duration_nano: p.duration_ns(&["minDuration"])?,
        max_duration_nano: p.duration_ns(&["maxDuration"])?,
        ..TraceQuery::default()
    };
    if let (Some(min), Some(max)) = (q.min_duration_nano, q.max_duration_nano) {
        if min > max {
            return Err("parameter minDuration is greater than maxDuration".into());
        }
    }
    if let Some(k) = p.get("spanKind") {
        q.span_kind = Some(
            SpanKind::parse(k)
                .ok_or_else(|| format!("unknown spanKind {k:?} (server, client, producer, consumer, internal)"))?,
        );
    }
    if let Some(tags) = p.get("tags") {
        let map: BTreeMap<String, Value> =
            serde_json::from_str(tags).map_err(|e| format!("parameter tags must be a JSON object of strings: {e}"))?;
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            q.attributes.push((k, v));
        }
    }
    for t in p.all("tag") {
        let (k, v) = t
            .split_once(':')
            .ok_or_else(|| format!("parameter tag={t:?} must look like key:value"))?;
        q.attributes.push((k.to_string(), v.to_string()));
    }
    let end_us = p.u64("end")?.unwrap_or_else(now_us);
    let start_us = match p.u64("start")? {
        Some(s) => s,
        None => match p.get("lookback").filter(|l| *l != "custom") {
            Some(l) => {
                let d = crate::params::parse_api_duration(l).map_err(|e| format!("parameter lookback: {e}"))?;
                end_us.saturating_sub(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            }
            None => end_us.saturating_sub(3600 * 1_000_000 * 48),
        },
    };
    q.start_min = Some(start_us.saturating_mul(1000));
    q.start_max = Some(end_us.saturating_mul(1000).saturating_add(999));
    Ok(q)
}

async fn find_traces(State(q): State<QueryEngine>, Query(p): Query<Vec<(String, String)>>) -> Response {
    let p = Params(p);
    // Jaeger also accepts traceID=…&traceID=… to fetch several traces at once.
    let ids: Vec<&str> = p.all("traceID").collect();
    if !ids.is_empty() {
        let mut out = Vec::new();
        let mut notes = Vec::new();
        // Jaeger's entry for each id it did not find.
        let mut errors = Vec::new();
        for id in ids {
            let id = match parse_trace_id(id) {
                Ok(id) => id,
                Err(e) => return v1_error(StatusCode::BAD_REQUEST, e),
            };
            match q.trace(&id).await {
                Ok(spans) if !spans.is_empty() => out.push(jaeger_trace(&spans)),
                Ok(_) => errors.push(json!({ "msg": "trace not found", "traceID": hex::encode(&id) })),
                Err(e) => return v1_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
            notes.extend(incomplete_note(&q, Asked::Trace(&id)).map(|n| format!("trace {}: {n}", hex::encode(&id))));
        }
        let n = out.len();
        let note = (!notes.is_empty()).then(|| notes.join("; "));
        errors.extend(note.iter().map(|msg| json!({ "code": 500, "msg": msg })));
        return envelope(out, n, errors, note.as_deref());
    }
    let query = match v1_query(&p).and_then(|query| q.within_max_traces(query, "limit")) {
        Ok(q) => q,
        Err(e) => return v1_error(StatusCode::BAD_REQUEST, e),
    };
    match q.find_traces(&query).await {
        Ok(traces) => {
            let out: Vec<JaegerTraceJson> = traces.iter().map(|t| jaeger_trace(t)).collect();
            let n = out.len();
            data_noting(out, n, incomplete_note(&q, Asked::Search(&query)))
        }
        Err(e) => v1_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn dependencies(State(q): State<QueryEngine>, Query(p): Query<Vec<(String, String)>>) -> Response {
    let p = Params(p);
    let end_ms = match p.u64("endTs") {
        Ok(v) => v.unwrap_or(now_us() / 1000),
        Err(e) => return v1_error(StatusCode::BAD_REQUEST, e),
    };
    let lookback_ms = match p.u64("lookback") {
        Ok(v) => v.unwrap_or(24 * 3600 * 1000),
        Err(e) => return v1_error(StatusCode::BAD_REQUEST, e),
    };
    let end = end_ms.saturating_mul(1_000_000);
    let start = end_ms.saturating_sub(lookback_ms).saturating_mul(1_000_000);
    match q.dependencies(start, end).await {
        Ok(deps) => {
            let n = deps.len();
            data_noting(deps, n, incomplete_note(&q, Asked::Window(start, end)))
        }
        Err(e) => v1_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
