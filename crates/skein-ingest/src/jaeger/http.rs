//! jaeger-collector's HTTP endpoint: `POST /api/traces` with a thrift `Batch` (binary protocol;
//! compact too, by content type), optionally gzip/zstd encoded. Answers 202 like
//! jaeger-collector, 400 with a plain-text reason for a bad body.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use skein_model::jaeger::batch_to_model;
use skein_model::jaeger::thrift::{self, Protocol};
use skein_pipeline::{Pipeline, ProtocolMetrics};

use crate::http::{admit, media_type, text, text_submit_error as submit_error};

#[derive(Clone)]
struct Ctx {
    pipeline: Pipeline,
    max_bytes: usize,
    metrics: ProtocolMetrics,
}

pub fn router(pipeline: Pipeline, max_request_bytes: usize) -> Router {
    let ctx = Ctx {
        pipeline,
        max_bytes: max_request_bytes,
        metrics: ProtocolMetrics::new("jaeger_thrift_http"),
    };
    Router::new()
        .route("/api/traces", post(post_traces))
        // The compressed body may not exceed the limit either (`admit`); decompression re-checks it.
        .with_state(ctx)
}

const ACCEPTED_TYPES: &str =
    "application/x-thrift, application/vnd.apache.thrift.binary or application/vnd.apache.thrift.compact";

fn protocol_of(content_type: &str) -> Option<Protocol> {
    match content_type {
        "application/x-thrift" | "application/vnd.apache.thrift.binary" => Some(Protocol::Binary),
        "application/vnd.apache.thrift.compact" => Some(Protocol::Compact),
        _ => None,
    }
}

async fn post_traces(State(ctx): State<Ctx>, headers: HeaderMap, body: axum::body::Body) -> Response {
    let m = &ctx.metrics;
    let ctype = media_type(&headers);
    let Some(protocol) = protocol_of(&ctype) else {
        m.request("unsupported_media_type");
        let msg = if ctype.is_empty() {
            format!("missing Content-Type: use {ACCEPTED_TYPES}")
        } else {
            format!("unsupported Content-Type {ctype:?}: use {ACCEPTED_TYPES}")
        };
        return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, msg);
    };
    let (raw, mut reservation) = match admit(
        &ctx.pipeline,
        m,
        &headers,
        body,
        ctx.max_bytes,
        "jaeger.max_request_bytes",
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_text(),
    };
    let batch = match thrift::decode_batch(protocol, &raw) {
        Ok(b) => b,
        Err(e) => {
            m.request("bad_request");
            return text(
                StatusCode::BAD_REQUEST,
                format!("unable to process request body: invalid thrift Batch: {e}"),
            );
        }
    };
    let decoded = batch_to_model(batch.process, batch.spans);
    match ctx.pipeline.submit(&mut reservation, decoded, None, m).await {
        Ok(outcome) => match super::rejection_message(&outcome) {
            None => StatusCode::ACCEPTED.into_response(),
            Some(msg) => text(StatusCode::BAD_REQUEST, msg),
        },
        Err(e) => submit_error(e),
    }
}
