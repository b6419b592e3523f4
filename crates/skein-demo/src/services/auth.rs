//! auth: `POST /auth/verify` checks a session token (`tok-<user>`) and returns the user.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use http::StatusCode;
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use serde_json::{json, Value};

use super::jitter;
use crate::http::{AppError, Service};

pub fn router(service: Arc<Service>) -> Router {
    Router::new().route("/auth/verify", post(verify)).with_state(service)
}

async fn verify(State(svc): State<Arc<Service>>, Json(body): Json<Value>) -> Result<Json<Value>, AppError> {
    let token = body["token"].as_str().unwrap_or("").to_string();
    let user = svc
        .in_span(
            "verify session token",
            SpanKind::Internal,
            vec![KeyValue::new("auth.scheme", "bearer")],
            async {
                // Stands in for a signature check and a session-cache lookup.
                tokio::time::sleep(jitter(18, 10)).await;
                token.strip_prefix("tok-").filter(|u| !u.is_empty()).map(str::to_string)
            },
        )
        .await;
    match user {
        Some(user) => {
            svc.log("info", "token verified", json!({"user": user}));
            Ok(Json(json!({"user": user})))
        }
        None => {
            svc.log("warn", "token rejected", json!({}));
            Err(AppError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidToken",
                "the session token is not valid",
            ))
        }
    }
}
