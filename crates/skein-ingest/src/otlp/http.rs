//! OTLP/HTTP: `POST /v1/traces` with protobuf or JSON bodies, optionally gzip/zstd encoded.
//! Answers in the request's content type, as the spec requires.

use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use prost::Message;
use skein_model::otlp::pb::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use skein_model::otlp::{json, wire_decode};
use skein_pipeline::{Pipeline, ProtocolMetrics, SubmitError};

use super::config::OtlpConfig;
use crate::http::{admit, cors, media_type, retry_advice, submit_status, Refusal};
use crate::refusals::refusing;

#[derive(Clone)]
struct Ctx {
    pipeline: Pipeline,
    max_bytes: usize,
    proto_metrics: ProtocolMetrics,
    json_metrics: ProtocolMetrics,
    /// Requests whose Content-Type names neither format.
    unknown_format_metrics: ProtocolMetrics,
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Protobuf,
    Json,
}

pub fn router(pipeline: Pipeline, cfg: &OtlpConfig) -> Router {
    let max_bytes = cfg.max_request_bytes as usize;
    let ctx = Ctx {
        pipeline,
        max_bytes,
        proto_metrics: ProtocolMetrics::new("otlp_http_protobuf"),
        json_metrics: ProtocolMetrics::new("otlp_http_json"),
        unknown_format_metrics: ProtocolMetrics::new("otlp_http"),
    };
    Router::new()
        .route("/v1/traces", post(export))
        // The compressed body may not exceed the limit either (`admit`); decompression re-checks it.
        .layer(cors(&cfg.cors_allowed_origins, &[Method::POST, Method::OPTIONS]))
        .with_state(ctx)
}

async fn export(State(ctx): State<Ctx>, headers: HeaderMap, body: axum::body::Body) -> Response {
    let format = match media_type(&headers).as_str() {
        "application/x-protobuf" | "application/protobuf" => Format::Protobuf,
        "application/json" => Format::Json,
        other => {
            let msg = if other.is_empty() {
                "missing Content-Type: use application/x-protobuf or application/json".to_string()
            } else {
                format!("unsupported Content-Type {other:?}: use application/x-protobuf or application/json")
            };
            // Neither format's protocol: counted under the receiver's own name.
            ctx.unknown_format_metrics.request("unsupported_media_type");
            return error(Format::Json, StatusCode::UNSUPPORTED_MEDIA_TYPE, msg);
        }
    };
    let m = if format == Format::Json {
        &ctx.json_metrics
    } else {
        &ctx.proto_metrics
    };
    let (raw, mut reservation) = match admit(
        &ctx.pipeline,
        m,
        &headers,
        body,
        ctx.max_bytes,
        "otlp.max_request_bytes",
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(Refusal::Body(status, msg)) => return error(format, status, msg),
        Err(Refusal::Busy(e)) => return submit_error(format, e),
    };
    let (decoded, encoded) = match format {
        Format::Protobuf => match wire_decode::decode_request(&raw) {
            Ok(d) => (d, Some(raw)),
            Err(e) => {
                m.request("bad_request");
                return error(format, StatusCode::BAD_REQUEST, format!("invalid OTLP protobuf: {e}"));
            }
        },
        Format::Json => match json::decode_request(&raw) {
            Ok(d) => (d, None),
            Err(e) => {
                m.request("bad_request");
                return error(format, StatusCode::BAD_REQUEST, e.to_string());
            }
        },
    };
    match ctx.pipeline.submit(&mut reservation, decoded, encoded, m).await {
        Ok(outcome) => {
            let partial = outcome.message().map(|error_message| ExportTracePartialSuccess {
                rejected_spans: outcome.rejected.len() as i64,
                error_message,
            });
            let reason = partial.as_ref().map(|p| p.error_message.clone());
            let response = match format {
                Format::Protobuf => {
                    let body = ExportTraceServiceResponse {
                        partial_success: partial,
                    }
                    .encode_to_vec();
                    ([(header::CONTENT_TYPE, "application/x-protobuf")], body).into_response()
                }
                Format::Json => {
                    let body = match partial {
                        Some(p) => serde_json::json!({"partialSuccess": {
                            "rejectedSpans": p.rejected_spans.to_string(),
                            "errorMessage": p.error_message,
                        }}),
                        None => serde_json::json!({}),
                    };
                    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
                }
            };
            match reason {
                Some(reason) => refusing(response, reason),
                None => response,
            }
        }
        Err(e) => submit_error(format, e),
    }
}

/// The answer to an export while skein cannot take spans yet (its store is still opening):
/// 503 with `Retry-After`, in the request's format.
pub fn unavailable(headers: &HeaderMap, message: String) -> Response {
    let format = if media_type(headers) == "application/json" {
        Format::Json
    } else {
        Format::Protobuf
    };
    submit_error(format, SubmitError::Unavailable(message))
}

fn submit_error(format: Format, e: SubmitError) -> Response {
    let (status, msg) = submit_status(e);
    retry_advice(error(format, status, msg))
}

// google.rpc.Status, the OTLP/HTTP error body.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn grpc_code(status: StatusCode) -> i32 {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3, // INVALID_ARGUMENT
        StatusCode::PAYLOAD_TOO_LARGE => 11,                               // OUT_OF_RANGE
        StatusCode::TOO_MANY_REQUESTS => 8,                                // RESOURCE_EXHAUSTED
        StatusCode::SERVICE_UNAVAILABLE => 14,                             // UNAVAILABLE
        _ => 13,                                                           // INTERNAL
    }
}

fn error(format: Format, status: StatusCode, message: String) -> Response {
    let code = grpc_code(status);
    let reason = status.is_client_error().then(|| message.clone());
    let response = match format {
        Format::Protobuf => {
            let body = RpcStatus { code, message }.encode_to_vec();
            (status, [(header::CONTENT_TYPE, "application/x-protobuf")], body).into_response()
        }
        Format::Json => {
            let body = serde_json::json!({ "code": code, "message": message });
            (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
        }
    };
    match reason {
        Some(reason) => refusing(response, reason),
        None => response,
    }
}
