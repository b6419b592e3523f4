//! Zipkin query API v2 (served on the Zipkin port beside ingest), as the Zipkin UI and
//! Grafana's Zipkin data source call it. Spans are written with the model → Zipkin v2 mapping
//! of `skein_model::zipkin`; errors are plain text, as Zipkin's own server answers.

use std::collections::HashSet;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use skein_model::zipkin::json_v2;
use skein_model::{hex, Span, StatusCode as SpanStatus, TraceId};
use skein_query::{QueryEngine, TraceQuery};

use crate::params::Params;

/// Values `autocompleteValues` returns at most.
const AUTOCOMPLETE_LIMIT: usize = 1000;

pub fn router(engine: QueryEngine) -> Router {
    Router::new()
        .route("/api/v2/services", get(services))
        .route("/api/v2/spans", get(span_names))
        .route("/api/v2/remoteServices", get(remote_services))
        .route("/api/v2/traces", get(traces))
        .route("/api/v2/trace/{id}", get(trace))
        .route("/api/v2/traceMany", get(trace_many))
        .route("/api/v2/dependencies", get(dependencies))
        .route("/api/v2/autocompleteKeys", get(autocomplete_keys))
        .route("/api/v2/autocompleteValues", get(autocomplete_values))
        .route("/health", get(health))
        .with_state(engine)
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut msg = msg.into();
    msg.push('\n');
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg).into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn health() -> Response {
    Json(json!({"status": "UP", "zipkin": {"status": "UP"}})).into_response()
}

async fn services(State(q): State<QueryEngine>) -> Response {
    Json(q.services()).into_response()
}

fn required<'a>(p: &'a Params, key: &str) -> Result<&'a str, String> {
    p.get(key).ok_or_else(|| format!("parameter {key} is required"))
}

fn bad_request(msg: String) -> Response {
    text(StatusCode::BAD_REQUEST, msg)
}

async fn span_names(State(q): State<QueryEngine>, Query(p): Query<Vec<(String, String)>>) -> Response {
    let p = Params(p);
    let service = match required(&p, "serviceName") {
        Ok(s) => s,
        Err(e) => return bad_request(e),
    };
    let mut names: Vec<String> = q.operations(service, None).into_iter().map(|(n, _)| n).collect();
    names.sort();
    names.dedup();
    Json(names).into_response()
}

async fn remote_services(State(q): State<QueryEngine>, Query(p): Query<Vec<(String, String)>>) -> Response {
    let p = Params(p);
    let service = match required(&p, "serviceName") {
        Ok(s) => s,
        Err(e) => return bad_request(e),
    };
    match q.remote_services(service).await {
        Ok(names) => Json(names).into_response(),
        Err(e) => internal(e),
    }
}

/// A Zipkin trace id: up to 32 hex characters, shorter ones left-padded with zeros as Zipkin
/// itself does (ingest reads them the same way).
fn parse_trace_id(s: &str) -> Result<TraceId, String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 32 {
        return Err(format!("traceId {s:?} must be 1 to 32 hex characters"));
    }
    let id = hex::decode_id::<16>(s).ok_or_else(|| format!("traceId {s:?} is not hex"))?;
    crate::jaeger::http::not_all_zeros(id, s)
}

async fn trace(State(q): State<QueryEngine>, Path(id): Path<String>) -> Response {
    let tid = match parse_trace_id(&id) {
        Ok(t) => t,
        Err(e) => return bad_request(e),
    };
    match q.trace(&tid).await {
        Ok(spans) if spans.is_empty() => text(StatusCode::NOT_FOUND, format!("trace {id} not found")),
        Ok(spans) => Json(json_v2::encode(&spans)).into_response(),
        Err(e) => internal(e),
    }
}

async fn trace_many(State(q): State<QueryEngine>, Query(p): Query<Vec<(String, String)>>) -> Response {
    let p = Params(p);
    let ids = match required(&p, "traceIds") {
        Ok(s) => s,
        Err(e) => return bad_request(e),
    };
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for id in ids.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let tid = match parse_trace_id(id) {
            Ok(t) => t,
            Err(e) => return bad_request(e),
        };
        if !seen.insert(tid) {
            continue;
        }
        match q.trace(&tid).await {
            Ok(spans) if !spans.is_empty() => out.push(json_v2::encode(&spans)),
            Ok(_) => {}
            Err(e) => return internal(e),
        }
    }
    Json(out).into_response()
}

fn now_ms() -> u64 {
    skein_store::now_unix_nano() / 1_000_000
}

/// One `annotationQuery` term that the engine's search cannot express; checked per span.
#[derive(Debug, PartialEq)]
enum Extra {
    /// A bare word: an annotation (event) value or a tag (attribute) key.
    Present(String),
    /// `error=<message>`: error status with that message.
    ErrorMessage(String),
}

impl Extra {
    fn holds(&self, s: &Span) -> bool {
        match self {
            Extra::Present(word) => {
                s.events.iter().any(|e| &e.name == word)
                    || s.attributes.iter().any(|kv| &kv.key == word)
                    || s.resource.attributes.iter().any(|kv| &kv.key == word)
            }
            Extra::ErrorMessage(m) => s.status.code == SpanStatus::Error && &s.status.message == m,
        }
    }
}

/// A Zipkin search: what the engine filters on, plus the terms checked on loaded traces.
#[derive(Debug)]
struct ZipkinSearch {
    query: TraceQuery,
    extra: Vec<Extra>,
}

/// A parameter that Zipkin requires to be positive when given (its `QueryRequest` checks).
fn positive(p: &Params, key: &str) -> Result<Option<u64>, String> {
    match p.u64(key)? {
        Some(0) => Err(format!("{key} <= 0")),
        n => Ok(n),
    }
}

/// `endTs` (default now) and `lookback` (default a day), in ms.
fn window_ms(p: &Params) -> Result<(u64, u64), String> {
    let end_ms = positive(p, "endTs")?.unwrap_or_else(now_ms);
    let lookback_ms = positive(p, "lookback")?.unwrap_or(24 * 3600 * 1000);
    Ok((end_ms, lookback_ms))
}

fn search_from(p: &Params) -> Result<ZipkinSearch, String> {
    // Zipkin's own rules and messages for the duration bounds.
    let min_us = positive(p, "minDuration")?;
    let max_us = p.u64("maxDuration")?;
    match (min_us, max_us) {
        (None, Some(_)) => return Err("maxDuration is only valid with minDuration".into()),
        (Some(min), Some(max)) if max < min => return Err("maxDuration < minDuration".into()),
        _ => {}
    }
    let mut q = TraceQuery {
        service: p.get("serviceName").map(str::to_string),
        operation: p.get("spanName").filter(|n| *n != "all").map(str::to_string),
        limit: positive(p, "limit")?.map_or(10, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        min_duration_nano: min_us.map(|us| us.saturating_mul(1000)),
        max_duration_nano: max_us.map(|us| us.saturating_mul(1000)),
        ..TraceQuery::default()
    };
    if let Some(remote) = p.get("remoteServiceName") {
        q.attributes.push(("peer.service".into(), remote.to_string()));
    }
    let mut extra = Vec::new();
    if let Some(aq) = p.get("annotationQuery") {
        for term in aq.split(" and ").map(str::trim).filter(|t| !t.is_empty()) {
            match term.split_once('=') {
                Some(("error", "true")) => q.error = Some(true),
                Some(("error", m)) => extra.push(Extra::ErrorMessage(m.to_string())),
                Some((k, v)) if !k.is_empty() => q.attributes.push((k.to_string(), v.to_string())),
                Some(_) => return Err(format!("annotationQuery term {term:?} has no key")),
                None if term == "error" => q.error = Some(true),
                None => extra.push(Extra::Present(term.to_string())),
            }
        }
    }
    let (end_ms, lookback_ms) = window_ms(p)?;
    q.start_min = Some(end_ms.saturating_sub(lookback_ms).saturating_mul(1_000_000));
    q.start_max = Some(end_ms.saturating_mul(1_000_000).saturating_add(999_999));
    Ok(ZipkinSearch { query: q, extra })
}

async fn traces(State(q): State<QueryEngine>, Query(p): Query<Vec<(String, String)>>) -> Response {
    let search = match search_from(&Params(p)).and_then(|mut s| {
        s.query = q.within_max_traces(s.query, "limit")?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let found = if search.extra.is_empty() {
        q.find_traces(&search.query).await
    } else {
        find_with_extra(&q, &search).await
    };
    match found {
        Ok(traces) => {
            let out: Vec<Value> = traces.iter().map(|t| json_v2::encode(t)).collect();
            Json(out).into_response()
        }
        Err(e) => internal(e),
    }
}

/// Terms the engine cannot filter on: search without a limit, then keep traces where one span
/// satisfies everything, newest first, up to the limit.
async fn find_with_extra(q: &QueryEngine, s: &ZipkinSearch) -> Result<Vec<Vec<Span>>, skein_query::QueryError> {
    let limit = s.query.limit;
    let unbounded = TraceQuery {
        limit: 0,
        ..s.query.clone()
    };
    let mut out = Vec::new();
    for summary in q.search(&unbounded).await? {
        let spans = q.trace(&summary.trace_id).await?;
        let hit = spans
            .iter()
            .any(|sp| s.query.matches_span(sp) && s.extra.iter().all(|e| e.holds(sp)));
        if hit {
            out.push(spans);
            if limit > 0 && out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

async fn dependencies(State(q): State<QueryEngine>, Query(p): Query<Vec<(String, String)>>) -> Response {
    let (end_ms, lookback_ms) = match window_ms(&Params(p)) {
        Ok(w) => w,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let start = end_ms.saturating_sub(lookback_ms).saturating_mul(1_000_000);
    let end = end_ms.saturating_mul(1_000_000).saturating_add(999_999);
    match q.dependencies(start, end).await {
        Ok(deps) => {
            let out: Vec<Value> = deps
                .iter()
                .map(|d| json!({"parent": d.parent, "child": d.child, "callCount": d.call_count}))
                .collect();
            Json(out).into_response()
        }
        Err(e) => internal(e),
    }
}

async fn autocomplete_keys(State(q): State<QueryEngine>) -> Response {
    match q.attribute_keys(None).await {
        Ok(keys) => Json(keys).into_response(),
        Err(e) => internal(e),
    }
}

async fn autocomplete_values(State(q): State<QueryEngine>, Query(p): Query<Vec<(String, String)>>) -> Response {
    let p = Params(p);
    let key = match required(&p, "key") {
        Ok(k) => k,
        Err(e) => return bad_request(e),
    };
    match q.attribute_values(key, None, AUTOCOMPLETE_LIMIT).await {
        Ok(values) => Json(values).into_response(),
        Err(e) => internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn short_trace_ids_are_left_padded_as_at_ingest() {
        let mut want = [0u8; 16];
        want[14..].copy_from_slice(&[0x0a, 0xbc]);
        assert_eq!(parse_trace_id("abc"), Ok(want));
        assert_eq!(parse_trace_id("0000000000000abc"), Ok(want));
        assert!(parse_trace_id("").unwrap_err().contains("1 to 32"));
        assert!(parse_trace_id(&"a".repeat(33)).unwrap_err().contains("1 to 32"));
        assert!(parse_trace_id("xyz").unwrap_err().contains("not hex"));
        assert!(parse_trace_id("000").unwrap_err().contains("all zeros"));
    }

    #[test]
    fn annotation_query_terms() {
        let s = search_from(&params(&[
            ("serviceName", "front"),
            ("remoteServiceName", "db"),
            ("spanName", "all"),
            (
                "annotationQuery",
                "error and http.method=GET and retried and error=boom",
            ),
            ("minDuration", "5"),
            ("endTs", "2000"),
            ("lookback", "1000"),
        ]))
        .unwrap();
        assert_eq!(s.query.service.as_deref(), Some("front"));
        assert_eq!(s.query.operation, None);
        assert_eq!(s.query.error, Some(true));
        assert_eq!(
            s.query.attributes,
            [
                ("peer.service".into(), "db".into()),
                ("http.method".into(), "GET".into())
            ]
        );
        assert_eq!(
            s.extra,
            [Extra::Present("retried".into()), Extra::ErrorMessage("boom".into())]
        );
        assert_eq!(s.query.min_duration_nano, Some(5000));
        assert_eq!(s.query.start_min, Some(1_000_000_000));
        assert_eq!(s.query.start_max, Some(2_000_999_999));
        assert_eq!(s.query.limit, 10);
        let err = search_from(&params(&[("limit", "many")])).unwrap_err();
        assert!(err.contains("limit"), "{err}");
        // Zipkin's QueryRequest rules, with its messages.
        for (given, want) in [
            (&[("limit", "0")][..], "limit <= 0"),
            (&[("endTs", "0")], "endTs <= 0"),
            (&[("lookback", "0")], "lookback <= 0"),
            (&[("minDuration", "0")], "minDuration <= 0"),
            (&[("maxDuration", "5")], "maxDuration is only valid with minDuration"),
            (
                &[("minDuration", "200"), ("maxDuration", "100")],
                "maxDuration < minDuration",
            ),
        ] {
            assert_eq!(search_from(&params(given)).unwrap_err(), want);
        }
        assert!(search_from(&params(&[("minDuration", "100"), ("maxDuration", "100")])).is_ok());
    }
}
