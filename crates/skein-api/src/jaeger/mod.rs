//! Jaeger's query APIs: v1 JSON (`/api/...`, Jaeger UI classic and Grafana) and api_v3
//! (`/api/v3/...`, OTLP JSON in `{"result": …}`).

pub mod convert;
pub mod grpc;
pub mod http;
pub mod v3;

use axum::Router;
use skein_query::QueryEngine;

pub fn router(engine: QueryEngine) -> Router {
    Router::new()
        .merge(http::router(engine.clone()))
        .merge(v3::router(engine))
}
