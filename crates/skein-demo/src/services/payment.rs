//! payment: `POST /payments` validates the card and charges it at the bank (W3C), passing the
//! caller's idempotency key so a retried charge is not taken twice.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use http::{HeaderMap, Method, StatusCode};
use opentelemetry::trace::{SpanKind, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use serde_json::{json, Value};

use super::jitter;
use crate::http::{record_exception, AppError, CallError, CallOptions, Hop, Service};

struct Payment {
    service: Arc<Service>,
    bank: Hop,
}

pub fn router(service: Arc<Service>, bank: Hop) -> Router {
    Router::new()
        .route("/payments", post(pay))
        .with_state(Arc::new(Payment { service, bank }))
}

async fn pay(
    State(p): State<Arc<Payment>>,
    headers: HeaderMap,
    Json(req): Json<Value>,
) -> Result<Json<Value>, AppError> {
    let svc = &p.service;
    let card = req["card"].as_str().unwrap_or("").replace([' ', '-'], "");
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let last4 = card.get(card.len().saturating_sub(4)..).unwrap_or("").to_string();
    Context::current()
        .span()
        .set_attribute(KeyValue::new("payment.card.last4", last4.clone()));
    if !luhn_valid(&card) {
        return Err(AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "InvalidCard",
            "card number fails the Luhn check",
        ));
    }
    let charge = json!({
        "amount_cents": req["amount_cents"],
        "currency": "EUR",
        "card": card,
        "reference": req["checkout_id"],
    });
    let attributes = vec![
        KeyValue::new("payment.amount_cents", req["amount_cents"].as_i64().unwrap_or(0)),
        KeyValue::new("payment.card.last4", last4),
    ];
    svc.in_span("charge card", SpanKind::Internal, attributes, async {
        tokio::time::sleep(jitter(6, 4)).await; // tokenising the card
        let options = CallOptions {
            headers: vec![("idempotency-key", key.clone())],
            ..CallOptions::default()
        };
        match svc.call(&p.bank, Method::POST, "/v1/charges", &charge, options).await {
            Ok(body) => {
                svc.log(
                    "info",
                    "card charged",
                    json!({"charge_id": body["id"], "idempotency_key": key}),
                );
                Ok(Json(json!({"charge_id": body["id"]})))
            }
            Err(CallError::Status(StatusCode::PAYMENT_REQUIRED, body)) => {
                let reason = body["decline_code"].as_str().unwrap_or("declined").to_string();
                let message = format!("card declined by the bank: {reason}");
                record_exception(&Context::current(), "CardDeclinedError", &message);
                svc.log("warn", "card declined", json!({"user": req["user"], "reason": reason}));
                Err(AppError::new(
                    StatusCode::PAYMENT_REQUIRED,
                    "CardDeclinedError",
                    message,
                ))
            }
            Err(e) => {
                let message = format!("bank unavailable: {e}");
                record_exception(&Context::current(), "BankUnavailableError", &message);
                svc.log("error", "charge failed", json!({"error": message}));
                Err(AppError::new(StatusCode::BAD_GATEWAY, "BankUnavailableError", message))
            }
        }
    })
    .await
}

fn luhn_valid(card: &str) -> bool {
    if card.len() < 12 || !card.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = card
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = (b - b'0') as u32;
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    #[test]
    fn luhn() {
        assert!(super::luhn_valid("4242424242424242"));
        assert!(super::luhn_valid("4000000000000002"));
        assert!(!super::luhn_valid("4242424242424241"));
        assert!(!super::luhn_valid("42"));
    }
}
