//! Jaeger's remote-sampling endpoints, answered from the strategies in force:
//! - the agent's HTTP port (5778): `GET /sampling?service=` (api_v2 JSON) and `GET /?service=`
//!   (the legacy JSON, `strategyType` as a number);
//! - the collector's HTTP port (14268): `GET /api/sampling?service=` (api_v2 JSON);
//! - the collector's gRPC port (14250): `jaeger.api_v2.SamplingManager/GetSamplingStrategy`.

pub mod grpc;

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use skein_model::metrics::{self, Counter};
use skein_pipeline::sampling::{StrategyResponse, StrategyStore};

#[derive(Clone)]
struct Ctx {
    store: Arc<StrategyStore>,
    requests: Counter,
    bad_requests: Counter,
}

fn ctx(store: Arc<StrategyStore>, endpoint: &str) -> Ctx {
    let name = "skein_sampling_requests_total";
    let help = "Remote sampling strategy requests, by endpoint and outcome";
    Ctx {
        store,
        requests: metrics::counter(name, help, &[("endpoint", endpoint), ("outcome", "ok")]),
        bad_requests: metrics::counter(name, help, &[("endpoint", endpoint), ("outcome", "bad_request")]),
    }
}

/// The router for the agent-style sampling port (`sampling.http_addr`, 5778 by default).
pub fn agent_router(store: Arc<StrategyStore>) -> Router {
    Router::new()
        .route("/", get(legacy))
        .route("/sampling", get(api_v2))
        .with_state(ctx(store, "agent_http"))
}

/// `GET /api/sampling`, merged into the Jaeger collector HTTP port (14268).
pub fn collector_router(store: Arc<StrategyStore>) -> Router {
    Router::new()
        .route("/api/sampling", get(api_v2))
        .with_state(ctx(store, "collector_http"))
}

type Params = Query<Vec<(String, String)>>;

const MISSING_SERVICE: &str = "'service' parameter must be provided once and not be empty, e.g. ?service=checkout\n";

/// The one non-empty `service` parameter (jaeger-agent answers 400 otherwise).
fn service_of(Query(params): Params) -> Option<String> {
    let services: Vec<&String> = params.iter().filter(|(k, _)| k == "service").map(|(_, v)| v).collect();
    match services.as_slice() {
        [one] if !one.is_empty() => Some(one.to_string()),
        _ => None,
    }
}

fn json(body: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn answer(ctx: &Ctx, params: Params, encode: fn(&StrategyResponse) -> serde_json::Value) -> Response {
    match service_of(params) {
        Some(service) => {
            ctx.requests.inc();
            json(encode(&ctx.store.strategy_for(&service)))
        }
        None => {
            ctx.bad_requests.inc();
            (StatusCode::BAD_REQUEST, MISSING_SERVICE).into_response()
        }
    }
}

async fn api_v2(State(ctx): State<Ctx>, params: Params) -> Response {
    answer(&ctx, params, StrategyResponse::to_json)
}

async fn legacy(State(ctx): State<Ctx>, params: Params) -> Response {
    answer(&ctx, params, StrategyResponse::to_legacy_json)
}
