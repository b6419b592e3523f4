//! fraud: `POST /fraud/score` scores an order while payment runs (order calls both at once).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use opentelemetry::baggage::BaggageExt as _;
use opentelemetry::trace::{SpanKind, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use serde_json::{json, Value};

use super::jitter;
use crate::http::Service;

pub fn router(service: Arc<Service>) -> Router {
    Router::new().route("/fraud/score", post(score)).with_state(service)
}

async fn score(State(svc): State<Arc<Service>>, Json(req): Json<Value>) -> Json<Value> {
    let cx = Context::current();
    cx.span().set_attribute(KeyValue::new(
        "shop.checkout.id",
        req["checkout_id"].as_str().unwrap_or("").to_string(),
    ));
    // The user arrives as baggage (absent on the deliberately broken hop).
    let user = cx.baggage().get("user.id").map(|v| v.as_str().to_string());
    let amount = req["amount_cents"].as_i64().unwrap_or(0);
    let items = req["items"].as_i64().unwrap_or(0);
    let score = svc
        .in_span(
            "score order",
            SpanKind::Internal,
            vec![KeyValue::new("fraud.model", "gbt-2024-10")],
            async {
                tokio::time::sleep(jitter(45, 20)).await; // feature lookup and model inference
                                                          // A toy model: bigger baskets look riskier, but nothing in the demo gets blocked.
                let score = ((amount as f64).ln_1p() / 40.0 + (items as f64).ln_1p() / 100.0).min(0.9);
                Context::current()
                    .span()
                    .set_attribute(KeyValue::new("fraud.score", score));
                score
            },
        )
        .await;
    let verdict = if score > 0.95 { "block" } else { "allow" };
    svc.log(
        "info",
        "order scored",
        json!({"score": score, "verdict": verdict, "user": user}),
    );
    Json(json!({"score": score, "verdict": verdict}))
}
