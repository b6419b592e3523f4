//! Jaeger's query APIs: v1 JSON (`/api/...`, Jaeger UI classic and Grafana) and api_v3
//! (`/api/v3/...`, OTLP JSON in `{"result": …}`).

pub mod convert;
pub mod grpc;
pub mod http;
pub mod v3;

use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::Router;
use skein_query::{Asked, QueryEngine};

pub fn router(engine: QueryEngine) -> Router {
    Router::new()
        .merge(http::router(engine.clone()))
        .merge(v3::router(engine))
}

/// What a response says when blocks that could not be read may have held part of its answer (see
/// `QueryEngine::damaged_blocks_for`); `None` when none may have.
pub fn incomplete_note(engine: &QueryEngine, asked: Asked<'_>) -> Option<String> {
    let blocks = engine.damaged_blocks_for(asked);
    (!blocks.is_empty()).then(|| {
        format!(
            "results may be incomplete: {} unreadable block(s) that may hold spans asked for were skipped ({}); see the server log",
            blocks.len(),
            blocks.join(", ")
        )
    })
}

/// Adds the note as an HTTP `Warning` header (code 199, "miscellaneous warning"), the one
/// place the v3 JSON shape leaves for it.
pub fn with_warning(mut response: Response, note: Option<&str>) -> Response {
    if let Some(value) = note.and_then(|n| HeaderValue::from_str(&format!("199 skein \"{n}\"")).ok()) {
        response.headers_mut().insert(header::WARNING, value);
    }
    response
}
