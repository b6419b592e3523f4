//! order: `POST /orders` reserves stock (inventory, Jaeger header), then charges the card
//! (payment, B3 multi header, retried on timeout with the same idempotency key) while fraud
//! scores the order in parallel (W3C — or no headers at all when the `shop.chaos` baggage asks
//! for the broken hop), and finally publishes `order.placed` for the notification worker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use http::{Method, StatusCode};
use opentelemetry::baggage::BaggageExt as _;
use opentelemetry::trace::{SpanKind, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::jitter;
use super::notification::{Message, QUEUE_NAME};
use crate::http::{AppError, CallError, CallOptions, Hop, Service};
use crate::propagation::Format;

/// Payment calls time out after this long and are retried (same idempotency key).
pub const PAYMENT_TIMEOUT: Duration = Duration::from_millis(700);
pub const PAYMENT_ATTEMPTS: u32 = 3;
/// Baggage value that makes order drop the trace headers on its call to fraud.
pub const CHAOS_DROP_FRAUD_HEADERS: &str = "drop-fraud-headers";

pub struct Hops {
    pub inventory: Hop,
    pub payment: Hop,
    pub fraud: Hop,
}

struct Order {
    service: Arc<Service>,
    hops: Hops,
    queue: mpsc::Sender<Message>,
}

pub fn router(service: Arc<Service>, hops: Hops, queue: mpsc::Sender<Message>) -> Router {
    Router::new()
        .route("/orders", post(place_order))
        .with_state(Arc::new(Order { service, hops, queue }))
}

async fn place_order(
    State(order): State<Arc<Order>>,
    Json(req): Json<Value>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let svc = &order.service;
    let checkout_id = req["checkout_id"].as_str().unwrap_or("").to_string();
    let items = req["items"].clone();
    let item_count = items.as_array().map_or(0, Vec::len);
    let amount_cents: i64 = 1999 * item_count as i64 + 499;
    Context::current()
        .span()
        .set_attribute(KeyValue::new("shop.checkout.id", checkout_id.clone()));

    svc.call(
        &order.hops.inventory,
        Method::POST,
        "/inventory/reserve",
        &json!({"checkout_id": checkout_id, "items": items}),
        CallOptions::default(),
    )
    .await
    .map_err(|e| AppError::from_call("inventory", e))?;

    let broken = Context::current()
        .baggage()
        .get("shop.chaos")
        .map(|v| v.as_str().to_string())
        == Some(CHAOS_DROP_FRAUD_HEADERS.to_string());
    let fraud_request = json!({"checkout_id": checkout_id, "items": item_count, "amount_cents": amount_cents});
    let fraud_call = svc.call(
        &order.hops.fraud,
        Method::POST,
        "/fraud/score",
        &fraud_request,
        CallOptions {
            format: broken.then_some(Format::Dropped),
            ..CallOptions::default()
        },
    );
    let payment = json!({
        "checkout_id": checkout_id,
        "user": req["user"],
        "card": req["card"],
        "amount_cents": amount_cents,
    });
    let (charged, scored) = tokio::join!(charge_with_retries(&order, &checkout_id, &payment), fraud_call);

    let score = scored.map_err(|e| AppError::from_call("fraud", e))?;
    if score["verdict"] == "block" {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "FraudSuspected",
            "order blocked by fraud scoring",
        ));
    }
    let charge = charged?;

    svc.in_span("persist order", SpanKind::Internal, vec![], async {
        tokio::time::sleep(jitter(6, 4)).await;
    })
    .await;
    publish(&order, &checkout_id, &req["user"]);
    svc.log(
        "info",
        "order placed",
        json!({"checkout_id": checkout_id, "charge_id": charge["charge_id"]}),
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({"status": "placed", "charge_id": charge["charge_id"]})),
    ))
}

/// Payment, retried when it times out (the bank sometimes stalls on the first attempt); every
/// attempt is its own CLIENT span with `http.request.resend_count`.
async fn charge_with_retries(order: &Order, checkout_id: &str, payment: &Value) -> Result<Value, AppError> {
    let svc = &order.service;
    let mut attempt = 0;
    loop {
        let options = CallOptions {
            timeout: PAYMENT_TIMEOUT,
            resend_count: attempt,
            headers: vec![("idempotency-key", checkout_id.to_string())],
            format: None,
        };
        match svc
            .call(&order.hops.payment, Method::POST, "/payments", payment, options)
            .await
        {
            Ok(charge) => return Ok(charge),
            Err(CallError::Timeout(message)) if attempt + 1 < PAYMENT_ATTEMPTS => {
                attempt += 1;
                svc.log(
                    "warn",
                    "payment timed out, retrying",
                    json!({"checkout_id": checkout_id, "attempt": attempt, "error": message}),
                );
            }
            Err(e) => {
                let err = AppError::from_call("payment", e);
                svc.log(
                    "warn",
                    "payment failed",
                    json!({"checkout_id": checkout_id, "error": err.message}),
                );
                return Err(err);
            }
        }
    }
}

/// PRODUCER span; the W3C context and baggage travel in the message headers.
fn publish(order: &Order, checkout_id: &str, user: &Value) {
    let svc = &order.service;
    let span = svc
        .tracer
        .span_builder(format!("send {QUEUE_NAME}"))
        .with_kind(SpanKind::Producer)
        .with_attributes([
            KeyValue::new("messaging.system", "in-process"),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.operation.name", "send"),
            KeyValue::new("messaging.destination.name", QUEUE_NAME),
            KeyValue::new("messaging.message.id", checkout_id.to_string()),
            KeyValue::new("demo.propagation", Format::W3c.label()),
        ])
        .start_with_context(&svc.tracer, &Context::current());
    let cx = Context::current().with_span(span);
    let mut headers = HashMap::new();
    svc.propagators.inject_message(&cx, &mut headers);
    let message = Message {
        headers,
        body: json!({"event": "order.placed", "checkout_id": checkout_id, "user": user}),
    };
    if let Err(e) = order.queue.try_send(message) {
        // A full queue is backpressure, not a reason to fail a paid order: record and move on.
        crate::http::record_exception(&cx, "QueueFull", &format!("{QUEUE_NAME}: {e}"));
    }
    cx.span().end();
}
