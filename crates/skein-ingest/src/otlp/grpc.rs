//! `opentelemetry.proto.collector.trace.v1.TraceService/Export` on tonic.

use prost::Message;
use skein_model::otlp::pb::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use skein_model::otlp::pb::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use skein_model::otlp::proto;
use skein_pipeline::{Pipeline, ProtocolMetrics, SubmitError};
use tonic::{Code, Request, Response, Status};

pub struct OtlpGrpc {
    pipeline: Pipeline,
    metrics: ProtocolMetrics,
}

pub fn service(pipeline: Pipeline, max_request_bytes: usize) -> TraceServiceServer<OtlpGrpc> {
    TraceServiceServer::new(OtlpGrpc {
        pipeline,
        metrics: ProtocolMetrics::new("otlp_grpc"),
    })
    .max_decoding_message_size(max_request_bytes)
    .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
    .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
    .send_compressed(tonic::codec::CompressionEncoding::Gzip)
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let req = request.into_inner();
        let _reservation = self.pipeline.reserve(req.encoded_len()).map_err(|e| {
            self.metrics.backpressure.inc();
            submit_status(e)
        })?;
        // Re-encoding the generated structs is cheap (no string copies into new structs) and lets
        // the WAL keep the request as it came.
        let encoded = req.encode_to_vec();
        let decoded = proto::decode_request(req);
        let outcome = self
            .pipeline
            .submit(decoded, Some(encoded.into()), &self.metrics)
            .await
            .map_err(submit_status)?;
        let partial_success = outcome.message().map(|error_message| ExportTracePartialSuccess {
            rejected_spans: outcome.rejected.len() as i64,
            error_message,
        });
        Ok(Response::new(ExportTraceServiceResponse { partial_success }))
    }
}

// google.rpc.Status with a RetryInfo detail, so SDKs know RESOURCE_EXHAUSTED is retryable.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}
#[derive(Clone, PartialEq, Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}
#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}
#[derive(Clone, PartialEq, Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// A retryable status carrying `google.rpc.RetryInfo` (retry after one second).
pub fn retryable(code: Code, message: String) -> Status {
    let retry = RetryInfo {
        retry_delay: Some(ProtoDuration { seconds: 1, nanos: 0 }),
    };
    let details = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: retry.encode_to_vec(),
        }],
    };
    Status::with_details(code, message, details.encode_to_vec().into())
}

pub fn submit_status(e: SubmitError) -> Status {
    match e {
        SubmitError::Overloaded(m) => retryable(Code::ResourceExhausted, m),
        SubmitError::Unavailable(m) => retryable(Code::Unavailable, m),
        SubmitError::Internal(m) => Status::internal(m),
    }
}

/// tonic answers an undecodable request body with INTERNAL; OTLP asks for INVALID_ARGUMENT
/// (not retryable, and it tells the sender the fault is theirs). Decode failures are answered
/// "trailers-only", so the status is in the response headers and can be rewritten there.
pub fn invalid_argument_on_decode_error<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let h = resp.headers_mut();
    let internal = h.get("grpc-status").is_some_and(|v| v == "13");
    let decode = h
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| m.contains("decode") && m.contains("Protobuf"));
    if internal && decode {
        h.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    resp
}
