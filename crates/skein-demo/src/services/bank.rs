//! bank: an "external" card processor (its own version scheme and environment).
//! `POST /v1/charges` answers after a network-ish delay. Test cards, as card processors do:
//! `4000 0000 0000 0002` is always declined; `4000 0000 0000 3220` needs a 3-D Secure check that
//! stalls the first attempt of each idempotency key for 1.5 s (the caller's retry succeeds).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http::{HeaderMap, StatusCode};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{Context, KeyValue};
use serde_json::{json, Value};

use super::jitter;

pub const DECLINED_CARD: &str = "4000000000000002";
pub const SLOW_CARD: &str = "4000000000003220";
const STALL: Duration = Duration::from_millis(1500);

struct Bank {
    service: Arc<crate::http::Service>,
    stalled_keys: Mutex<HashSet<String>>,
    next_charge: std::sync::atomic::AtomicU64,
}

pub fn router(service: Arc<crate::http::Service>) -> Router {
    Router::new()
        .route("/v1/charges", post(charge))
        .with_state(Arc::new(Bank {
            service,
            stalled_keys: Mutex::default(),
            next_charge: Default::default(),
        }))
}

async fn charge(State(bank): State<Arc<Bank>>, headers: HeaderMap, Json(req): Json<Value>) -> Response {
    let card = req["card"].as_str().unwrap_or("");
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    tokio::time::sleep(jitter(95, 40)).await;
    if card == SLOW_CARD && bank.stalled_keys.lock().unwrap_or_else(|p| p.into_inner()).insert(key) {
        Context::current()
            .span()
            .set_attribute(KeyValue::new("bank.3ds_challenge", true));
        bank.service.log(
            "warn",
            "3-D Secure challenge pending",
            json!({"card_last4": &card[card.len().saturating_sub(4)..]}),
        );
        tokio::time::sleep(STALL).await;
    }
    if card == DECLINED_CARD {
        bank.service
            .log("warn", "charge declined", json!({"decline_code": "insufficient_funds"}));
        let body = json!({"error": "card_declined", "decline_code": "insufficient_funds", "message": "Your card has insufficient funds."});
        return (StatusCode::PAYMENT_REQUIRED, Json(body)).into_response();
    }
    let n = bank.next_charge.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("ch_{n:08}");
    bank.service.log("info", "charge succeeded", json!({"charge_id": id}));
    (StatusCode::CREATED, Json(json!({"id": id, "status": "succeeded"}))).into_response()
}
