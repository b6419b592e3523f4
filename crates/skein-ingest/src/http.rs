//! What the HTTP receivers share: media-type parsing, CORS, plain-text error answers and
//! admission of a body (decompress within the size limit, then reserve pipeline memory).

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use skein_pipeline::{Pipeline, ProtocolMetrics, Reservation, SubmitError};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::arriving::{Arriving, Interrupted};
use crate::body::{self, BodyError};
use crate::refusals::refusing;

/// The request's media type, lower-cased and without parameters ("" when absent).
pub fn media_type(headers: &HeaderMap) -> String {
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

/// CORS for browser senders (and, on the Zipkin port, the Zipkin UI's queries), advertising
/// only the `methods` the port answers.
pub fn cors(origins: &[String], methods: &[Method]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods(methods.to_vec())
        .allow_headers([
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::HeaderName::from_static("x-requested-with"),
        ])
        .max_age(std::time::Duration::from_secs(3600))
}

/// Why a body was not admitted; each protocol renders it in its own error format.
pub enum Refusal {
    /// 413, 415 or 400 with a message.
    Body(StatusCode, String),
    /// Backpressure: retry later.
    Busy(SubmitError),
}

/// Reads a request body of at most `limit` bytes (the configuration key `limit_key`, named in
/// the message), counting a refusal in `m`. A body whose `Content-Length` declares more is
/// refused before any of it is read: otherwise a client declaring 100 GB held its connection
/// for as long as it kept sending, to be refused only at the limit. A body that sends nothing
/// for `limits.read_timeout` is refused with 408.
pub async fn read_body(
    pipeline: &Pipeline,
    m: &ProtocolMetrics,
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
    limit_key: &'static str,
) -> Result<Bytes, Refusal> {
    let too_large = || {
        m.request("too_large");
        Refusal::Body(
            StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TooLarge { limit, key: limit_key }.to_string(),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // Counted against the receive budget while it arrives, and timed between pieces.
    let mut body = Arriving::new(body, pipeline, |e| match e {
        Interrupted::Stalled(after) => {
            m.request("read_timeout");
            Refusal::Body(StatusCode::REQUEST_TIMEOUT, crate::arriving::stalled_message(after))
        }
        Interrupted::Busy(e) => {
            m.backpressure.inc();
            m.request("throttled");
            Refusal::Busy(e)
        }
        Interrupted::Body(e) => {
            m.request("bad_request");
            Refusal::Body(StatusCode::BAD_REQUEST, format!("could not read the request body: {e}"))
        }
    });
    // Most bodies arrive as one chunk, kept as it is; only more are copied together.
    let mut single = Bytes::new();
    let mut joined: Option<bytes::BytesMut> = None;
    while let Some(frame) = body.next_frame().await {
        let Ok(chunk) = frame?.into_data() else {
            continue; // trailers
        };
        let so_far = joined.as_ref().map_or(single.len(), |j| j.len());
        if so_far + chunk.len() > limit {
            return Err(too_large());
        }
        match &mut joined {
            Some(j) => j.extend_from_slice(&chunk),
            None if single.is_empty() => single = chunk,
            None => {
                let mut j = bytes::BytesMut::with_capacity(declared.map_or(so_far + chunk.len(), |n| n as usize));
                j.extend_from_slice(&single);
                j.extend_from_slice(&chunk);
                joined = Some(j);
            }
        }
    }
    Ok(joined.map_or(single, bytes::BytesMut::freeze))
}

/// Reads `body` and decompresses it within `limit` bytes (named `limit_key` in messages), then
/// reserves pipeline memory for it, counting the outcome of a refusal in `m`.
pub async fn admit(
    pipeline: &Pipeline,
    m: &ProtocolMetrics,
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
    limit_key: &'static str,
) -> Result<(Bytes, Reservation), Refusal> {
    let body = read_body(pipeline, m, headers, body, limit, limit_key).await?;
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
    let raw = body::decode(encoding, body, limit, limit_key).map_err(|e| {
        let (status, outcome) = match e {
            BodyError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            BodyError::UnsupportedEncoding(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            BodyError::Corrupt { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
        };
        m.request(outcome);
        Refusal::Body(status, e.to_string())
    })?;
    let reservation = pipeline.reserve(raw.len()).map_err(|e| {
        m.backpressure.inc();
        m.request("throttled");
        Refusal::Busy(e)
    })?;
    Ok((raw, reservation))
}

/// A plain-text answer (Zipkin's and Jaeger's collectors answer errors as text). A 4xx carries
/// its message as the reason spans were refused (`refusals`).
pub fn text(status: StatusCode, message: String) -> Response {
    let response = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response();
    if status.is_client_error() {
        refusing(response, message)
    } else {
        response
    }
}

/// Backpressure as text: 429/503 with `Retry-After`, or 500.
pub fn text_submit_error(e: SubmitError) -> Response {
    let (status, msg) = submit_status(e);
    retry_advice(text(status, msg))
}

/// Adds `Retry-After` to a 429 or 503, so clients back off instead of dropping data.
pub fn retry_advice(mut resp: Response) -> Response {
    if matches!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// The HTTP status for a pipeline refusal.
pub fn submit_status(e: SubmitError) -> (StatusCode, String) {
    match e {
        SubmitError::Overloaded(m) => (StatusCode::TOO_MANY_REQUESTS, m),
        SubmitError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
        SubmitError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

impl Refusal {
    /// Renders the refusal as plain text.
    pub fn into_text(self) -> Response {
        match self {
            Refusal::Body(status, msg) => text(status, msg),
            Refusal::Busy(e) => text_submit_error(e),
        }
    }
}
