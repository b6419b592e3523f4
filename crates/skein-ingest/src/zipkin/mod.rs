//! Zipkin receivers: `POST /api/v2/spans` (JSON v2, proto3) and `POST /api/v1/spans` (JSON v1),
//! optionally gzip/deflate/zstd encoded. Answers as Zipkin does: 202 Accepted, empty body.
//!
//! Partial acceptance: Zipkin's own server refuses a whole list with 400 when one span is bad.
//! We keep the good spans and still answer 202, with a plain-text body naming how many spans
//! were rejected and why (also logged and counted in `skein_spans_rejected_total`). Only when
//! every span of a request is invalid is the answer 400, so a sender with a systematic bug
//! sees an error.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use skein_model::zipkin::{json_v1, json_v2, proto, ZipkinError};
use skein_model::Decoded;
use skein_pipeline::{Pipeline, ProtocolMetrics};

pub use crate::http::cors;
use crate::http::{admit, media_type, text, text_submit_error as submit_error};

#[derive(Clone)]
struct Ctx {
    pipeline: Pipeline,
    max_bytes: usize,
    metrics: ProtocolMetrics,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Format {
    JsonV2,
    Proto3,
    JsonV1,
}

/// The ingest routes; `max_request_bytes` holds for the body before and after decompression.
pub fn router(pipeline: Pipeline, max_request_bytes: usize) -> Router {
    let ctx = Ctx {
        pipeline,
        max_bytes: max_request_bytes,
        metrics: ProtocolMetrics::new("zipkin"),
    };
    Router::new()
        .route("/api/v2/spans", post(spans_v2))
        .route("/api/v1/spans", post(spans_v1))
        .with_state(ctx)
}

async fn spans_v2(State(ctx): State<Ctx>, headers: HeaderMap, body: axum::body::Body) -> Response {
    // Zipkin treats a missing content type as JSON.
    let format = match media_type(&headers).as_str() {
        "" | "application/json" => Format::JsonV2,
        "application/x-protobuf" | "application/protobuf" => Format::Proto3,
        other => {
            ctx.metrics.request("unsupported_media_type");
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Type {other:?} for /api/v2/spans: use application/json or application/x-protobuf"),
            );
        }
    };
    ingest(ctx, format, &headers, body).await
}

async fn spans_v1(State(ctx): State<Ctx>, headers: HeaderMap, body: axum::body::Body) -> Response {
    match media_type(&headers).as_str() {
        "" | "application/json" => ingest(ctx, Format::JsonV1, &headers, body).await,
        other => {
            ctx.metrics.request("unsupported_media_type");
            text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Type {other:?} for /api/v1/spans: only JSON v1 is accepted (not thrift)"),
            )
        }
    }
}

async fn ingest(ctx: Ctx, format: Format, headers: &HeaderMap, body: axum::body::Body) -> Response {
    let m = &ctx.metrics;
    let (raw, mut reservation) = match admit(
        &ctx.pipeline,
        m,
        headers,
        body,
        ctx.max_bytes,
        "zipkin.max_request_bytes",
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_text(),
    };
    let decoded: Result<Decoded, ZipkinError> = match format {
        Format::JsonV2 => json_v2::decode(&raw),
        Format::Proto3 => proto::decode(&raw),
        Format::JsonV1 => json_v1::decode(&raw),
    };
    let decoded = match decoded {
        Ok(d) => d,
        Err(e) => {
            m.request("bad_request");
            return text(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    match ctx.pipeline.submit(&mut reservation, decoded, None, m).await {
        Ok(outcome) => match outcome.message() {
            None => StatusCode::ACCEPTED.into_response(),
            Some(msg) => {
                // Every span rejected, by the decoder or the pipeline's checks: a reporter with
                // a systematic bug should see an error.
                let status = if outcome.accepted == 0 {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::ACCEPTED
                };
                // A 202 too says why some spans were refused (`text` does it for a 4xx).
                crate::refusals::refusing(text(status, msg.clone()), msg)
            }
        },
        Err(e) => submit_error(e),
    }
}
