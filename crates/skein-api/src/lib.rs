//! Query-side HTTP: Jaeger's APIs (v1 JSON and api_v3), health, readiness and metrics.
//! Protocol shapes are produced here, at the edge, from the one model.

pub mod admission;
pub mod jaeger;
pub mod params;
/// Prometheus' standard `process_*` metrics.
pub mod process_metrics;
/// Jaeger remote-sampling endpoints (HTTP and gRPC) for SDKs.
pub mod sampling;
/// Closing connections whose client stopped reading its answer.
pub mod slow_readers;
pub mod time;
pub mod ui;
pub mod zipkin;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use skein_query::QueryEngine;

/// The router for the query port (16686).
pub fn router(engine: QueryEngine) -> Router {
    let engine_for_ui = engine.clone();
    Router::new()
        .merge(jaeger::router(engine))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(|| async { "ready\n" }))
        .route("/metrics", get(metrics))
        .merge(ui::router(engine_for_ui))
        // The UI's pages for non-API paths; `/api/*` and `/static/*` misses stay a plain 404.
        .fallback(ui::fallback)
        .layer(axum::middleware::map_response(no_sniffing))
}

/// Browsers must take every answer as the type it declares: an API answer echoing span data
/// (or an error echoing a parameter) is never run as a page or a script.
async fn no_sniffing(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    response
}

async fn metrics() -> impl IntoResponse {
    metrics_text()
}

/// `/metrics`: every series in Prometheus' text format.
pub fn metrics_text() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        skein_model::metrics::render() + &process_metrics::render(),
    )
}

/// The error shape of a port's 405 answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShapes {
    /// The query port: Jaeger v1's `errors` under `/api/`, api_v3's `error` under `/api/v3/`, the
    /// UI's `error` under `/api/ui/`, plain text elsewhere.
    QueryApis,
    /// Ingest, Zipkin and sampling ports: plain text, as their other errors.
    PlainText,
}

/// `app` with a body for the 405 answers its routers leave empty, naming the method and the
/// allowed ones, in the port's error shape. The router is wrapped whole, so the answer already
/// carries the `Allow` header that axum adds on the way out of a route.
pub fn explain_wrong_methods(app: Router, shapes: ErrorShapes) -> Router {
    Router::new()
        .fallback_service(app)
        .layer(axum::middleware::from_fn(move |req, next| {
            explain_method_not_allowed(req, next, shapes)
        }))
}

async fn explain_method_not_allowed(
    req: axum::extract::Request,
    next: axum::middleware::Next,
    shapes: ErrorShapes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let response = next.run(req).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let msg = format!("method {method} is not allowed on {path}; allowed: {allow}");
    let status = StatusCode::METHOD_NOT_ALLOWED;
    let (mut parts, _) = response.into_parts();
    let api = shapes == ErrorShapes::QueryApis;
    let mut answer = if api && path.starts_with("/api/v3/") {
        axum::Json(jaeger::v3::v3_error_body(status, msg)).into_response()
    } else if api && path.starts_with("/api/ui/") {
        axum::Json(ui::api::error_body(msg)).into_response()
    } else if api && path.starts_with("/api/") {
        axum::Json(jaeger::http::v1_error_body(status, msg)).into_response()
    } else {
        (msg + "\n").into_response()
    };
    // Keep `Allow` and CORS headers; the body's own type and length replace the old ones.
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(answer.headers_mut().drain());
    *answer.headers_mut() = parts.headers;
    *answer.status_mut() = status;
    answer
}
