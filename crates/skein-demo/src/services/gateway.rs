//! api-gateway: the public `POST /api/checkout`. Verifies the token with auth (W3C), then places
//! the order (B3 single header), with the user id added to the baggage for everything downstream.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use http::Method;
use opentelemetry::baggage::BaggageExt as _;
use opentelemetry::trace::{FutureExt as _, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::http::{current_trace_id, AppError, CallOptions, Hop, Service};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckoutItem {
    pub sku: String,
    pub qty: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckoutRequest {
    pub checkout_id: String,
    pub token: String,
    pub card: String,
    pub items: Vec<CheckoutItem>,
}

pub struct Hops {
    pub auth: Hop,
    pub order: Hop,
}

struct Gateway {
    service: Arc<Service>,
    hops: Hops,
}

pub fn router(service: Arc<Service>, hops: Hops) -> Router {
    Router::new()
        .route("/api/checkout", post(checkout))
        .with_state(Arc::new(Gateway { service, hops }))
}

async fn checkout(State(gw): State<Arc<Gateway>>, Json(req): Json<CheckoutRequest>) -> Result<Json<Value>, AppError> {
    let svc = &gw.service;
    let cx = Context::current();
    cx.span()
        .set_attribute(KeyValue::new("shop.checkout.id", req.checkout_id.clone()));
    cx.span()
        .set_attribute(KeyValue::new("shop.cart.items", req.items.len() as i64));

    let verified = svc
        .call(
            &gw.hops.auth,
            Method::POST,
            "/auth/verify",
            &json!({"token": req.token}),
            CallOptions::default(),
        )
        .await
        .map_err(|e| AppError::from_call("auth", e))?;
    let user = verified["user"].as_str().unwrap_or("anonymous").to_string();
    cx.span().set_attribute(KeyValue::new("enduser.id", user.clone()));
    svc.log(
        "info",
        "checkout started",
        json!({"checkout_id": req.checkout_id, "user": user, "items": req.items.len()}),
    );

    // Everything downstream of here sees who is buying, on every hop, as baggage.
    // (Added to what the caller sent: `with_baggage` replaces, so start from a copy.)
    let mut baggage: Vec<KeyValue> = cx
        .baggage()
        .iter()
        .map(|(key, (value, _))| KeyValue::new(key.clone(), value.to_string()))
        .collect();
    baggage.push(KeyValue::new("user.id", user.clone()));
    let with_user = Context::current().with_baggage(baggage);
    let order = json!({
        "checkout_id": req.checkout_id,
        "user": user,
        "card": req.card,
        "items": req.items,
    });
    let placed = svc
        .call(&gw.hops.order, Method::POST, "/orders", &order, CallOptions::default())
        .with_context(with_user)
        .await;
    match placed {
        Ok(body) => {
            svc.log("info", "checkout completed", json!({"checkout_id": req.checkout_id}));
            Ok(Json(json!({
                "checkout_id": req.checkout_id,
                "status": body["status"],
                "trace_id": current_trace_id(),
            })))
        }
        Err(e) => {
            let err = AppError::from_call("order", e);
            let level = if err.status.is_server_error() { "error" } else { "warn" };
            svc.log(
                level,
                "checkout failed",
                json!({"checkout_id": req.checkout_id, "error": err.message}),
            );
            Err(err)
        }
    }
}
