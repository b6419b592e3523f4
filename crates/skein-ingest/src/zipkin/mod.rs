//! Zipkin receivers: `POST /api/v2/spans` (JSON v2, proto3) and `POST /api/v1/spans` (JSON v1),
//! optionally gzip/deflate/zstd encoded. Answers as Zipkin does: 202 Accepted, empty body.
//!
//! Partial acceptance: Zipkin's own server refuses a whole list with 400 when one span is bad.
//! We keep the good spans and still answer 202, with a plain-text body naming how many spans
//! were rejected and why (also logged and counted in `skein_spans_rejected_total`). Only when
//! every span of a request is invalid is the answer 400, so a sender with a systematic bug
//! sees an error.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use skein_model::zipkin::{json_v1, json_v2, proto, ZipkinError};
use skein_model::Decoded;
use skein_pipeline::{Pipeline, ProtocolMetrics, SubmitError};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::body::{self, BodyError};

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
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(ctx)
}

/// CORS for the whole Zipkin port (ingest from browsers, the Zipkin UI's queries).
pub fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::HeaderName::from_static("x-requested-with"),
        ])
        .max_age(std::time::Duration::from_secs(3600))
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

async fn spans_v2(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    // Zipkin treats a missing content type as JSON.
    let format = match content_type(&headers).as_str() {
        "" | "application/json" => Format::JsonV2,
        "application/x-protobuf" | "application/protobuf" => Format::Proto3,
        other => {
            ctx.metrics.request("unsupported");
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Type {other:?} for /api/v2/spans: use application/json or application/x-protobuf"),
            );
        }
    };
    ingest(ctx, format, &headers, body).await
}

async fn spans_v1(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    match content_type(&headers).as_str() {
        "" | "application/json" => ingest(ctx, Format::JsonV1, &headers, body).await,
        other => {
            ctx.metrics.request("unsupported");
            text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Type {other:?} for /api/v1/spans: only JSON v1 is accepted (not thrift)"),
            )
        }
    }
}

async fn ingest(ctx: Ctx, format: Format, headers: &HeaderMap, body: Bytes) -> Response {
    let m = &ctx.metrics;
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
    let raw = match body::decode(encoding, body, ctx.max_bytes) {
        Ok(b) => b,
        Err(e @ BodyError::TooLarge { .. }) => {
            m.request("too_large");
            let msg = e
                .to_string()
                .replace("ingest.max_request_bytes", "zipkin.max_request_bytes");
            return text(StatusCode::PAYLOAD_TOO_LARGE, msg);
        }
        Err(e @ BodyError::UnsupportedEncoding(_)) => {
            m.request("unsupported");
            return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string());
        }
        Err(e) => {
            m.request("bad_request");
            return text(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let _reservation = match ctx.pipeline.reserve(raw.len()) {
        Ok(r) => r,
        Err(e) => {
            m.backpressure.inc();
            m.request("throttled");
            return submit_error(e);
        }
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
    let all_invalid = decoded.batch.is_empty() && !decoded.rejected.is_empty();
    match ctx.pipeline.submit(decoded, None, m).await {
        Ok(outcome) => match outcome.message() {
            None => StatusCode::ACCEPTED.into_response(),
            Some(msg) => {
                tracing::debug!(format = ?format, rejected = outcome.rejected.len(), "zipkin: {msg}");
                let status = if all_invalid && outcome.accepted == 0 {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::ACCEPTED
                };
                text(status, msg)
            }
        },
        Err(e) => submit_error(e),
    }
}

fn submit_error(e: SubmitError) -> Response {
    let (status, msg) = match e {
        SubmitError::Overloaded(m) => (StatusCode::TOO_MANY_REQUESTS, m),
        SubmitError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
        SubmitError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
    };
    let mut resp = text(status, msg);
    if status != StatusCode::INTERNAL_SERVER_ERROR {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn text(status: StatusCode, msg: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{msg}\n"),
    )
        .into_response()
}
