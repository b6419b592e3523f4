//! jaeger-collector's HTTP endpoint: `POST /api/traces` with a thrift `Batch` (binary protocol;
//! compact too, by content type), optionally gzip/zstd encoded. Answers 202 like
//! jaeger-collector, 400 with a plain-text reason for a bad body.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use skein_model::jaeger::batch_to_model;
use skein_model::jaeger::thrift::{self, Protocol};
use skein_pipeline::{Pipeline, ProtocolMetrics, SubmitError};

use crate::body::{self, BodyError};

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
        // The compressed body may not exceed the limit either; decompression re-checks it.
        .layer(DefaultBodyLimit::max(max_request_bytes))
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

async fn post_traces(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let m = &ctx.metrics;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some(protocol) = protocol_of(&ctype) else {
        m.request("unsupported_media_type");
        let msg = if ctype.is_empty() {
            format!("missing Content-Type: use {ACCEPTED_TYPES}")
        } else {
            format!("unsupported Content-Type {ctype:?}: use {ACCEPTED_TYPES}")
        };
        return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, msg);
    };
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
    let raw = match body::decode(encoding, body, ctx.max_bytes) {
        Ok(b) => b,
        Err(e @ BodyError::TooLarge { .. }) => {
            m.request("too_large");
            return text(StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
        }
        Err(e @ BodyError::UnsupportedEncoding(_)) => {
            m.request("unsupported_media_type");
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
    match ctx.pipeline.submit(decoded, None, m).await {
        Ok(outcome) => match super::rejection_message(&outcome) {
            None => StatusCode::ACCEPTED.into_response(),
            Some(msg) => text(StatusCode::BAD_REQUEST, msg),
        },
        Err(e) => submit_error(e),
    }
}

fn text(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
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
