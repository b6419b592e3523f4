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
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        skein_model::metrics::render() + &process_metrics::render(),
    )
}
