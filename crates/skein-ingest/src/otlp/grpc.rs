//! `opentelemetry.proto.collector.trace.v1.TraceService/Export` on tonic, routed by hand so the
//! request's protobuf bytes reach the handler as they came: the WAL stores them without
//! re-encoding (which cost ~11% of server CPU under load), and `wire_decode` reads them straight
//! into the model.

use std::sync::Arc;

use bytes::{Buf, Bytes};
use prost::Message;
use skein_model::otlp::pb::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use skein_model::otlp::wire_decode;
use skein_pipeline::{Pipeline, ProtocolMetrics, SubmitError};
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::codegen::http;
use tonic::{Code, Status};

use crate::grpc::{UnaryMethod, UnaryService};

pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// An export request as received: its bytes (uncompressed protobuf), not yet decoded.
pub struct RawExport {
    pub bytes: Bytes,
}

/// The OTLP trace `Export` method.
pub struct Exporter {
    pipeline: Pipeline,
    metrics: ProtocolMetrics,
}

impl UnaryMethod for Exporter {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const PATH: &'static str = EXPORT_PATH;
    type Codec = RawCodec;

    async fn handle(self: Arc<Self>, raw: RawExport) -> Result<ExportTraceServiceResponse, Status> {
        let mut reservation = self.pipeline.reserve(raw.bytes.len()).map_err(|e| {
            self.metrics.backpressure.inc();
            submit_status(e)
        })?;
        // OTLP asks for INVALID_ARGUMENT (not retryable: the fault is the sender's).
        let decoded = wire_decode::decode_request(&raw.bytes).map_err(|e| {
            self.metrics.request("bad_request");
            Status::invalid_argument(format!("failed to decode Protobuf message: {e}"))
        })?;
        let outcome = self
            .pipeline
            .submit(&mut reservation, decoded, Some(raw.bytes), &self.metrics)
            .await
            .map_err(submit_status)?;
        let partial_success = outcome.message().map(|error_message| ExportTracePartialSuccess {
            rejected_spans: outcome.rejected.len() as i64,
            error_message,
        });
        Ok(ExportTraceServiceResponse { partial_success })
    }

    fn refused(answer: &ExportTraceServiceResponse) -> Option<String> {
        answer.partial_success.as_ref().map(|p| p.error_message.clone())
    }
}

/// The gRPC service; add it to a `tonic::transport::Server`.
pub type OtlpGrpc = UnaryService<Exporter>;

pub fn service(pipeline: Pipeline, max_request_bytes: usize) -> OtlpGrpc {
    let metrics = ProtocolMetrics::new("otlp_grpc");
    UnaryService::new(Exporter { pipeline, metrics }, max_request_bytes)
}

/// Prost for the response; for the request, the bytes are kept and then decoded.
#[derive(Default)]
pub struct RawCodec;

pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = RawExport;
    type Encoder = <tonic_prost::ProstCodec<ExportTraceServiceResponse, ExportTraceServiceResponse> as Codec>::Encoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstCodec::<ExportTraceServiceResponse, ExportTraceServiceResponse>::default().encoder()
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

impl Decoder for RawDecoder {
    type Item = RawExport;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<RawExport>, Status> {
        Ok(Some(RawExport {
            bytes: src.copy_to_bytes(src.remaining()),
        }))
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

/// Rewrites two of tonic's answers to senders so they say what OTLP asks (`limit_key` names
/// the size limit). Both are answered "trailers-only", so the status is in the headers:
/// * an undecodable body: INTERNAL → INVALID_ARGUMENT (not retryable; the fault is the sender's);
/// * a message over the size limit: OUT_OF_RANGE, which OTLP exporters retry, so they resent a
///   batch that can never fit → RESOURCE_EXHAUSTED without retry advice (not retried), with a
///   message naming the limit. Over the limit after decompression is already RESOURCE_EXHAUSTED;
///   its message names the limit too.
///
/// Each is counted in `skein_requests_total` of `protocol` (`bad_request`, `too_large`), when
/// it names one: tonic refuses these before any handler sees the request.
pub fn sender_errors<B>(
    limit_key: &'static str,
    protocol: Option<&'static str>,
) -> impl Fn(http::Response<B>) -> http::Response<B> + Clone {
    let metrics = protocol.map(ProtocolMetrics::new);
    move |resp| rewrite_sender_errors(resp, limit_key, metrics.as_ref())
}

fn rewrite_sender_errors<B>(
    mut resp: http::Response<B>,
    limit_key: &str,
    metrics: Option<&ProtocolMetrics>,
) -> http::Response<B> {
    let h = resp.headers_mut();
    let Some(status) = Status::from_header_map(h) else {
        return resp;
    };
    let message = status.message();
    let (rewritten, outcome) = match status.code() {
        Code::Internal if message.contains("decode") && message.contains("Protobuf") => {
            (Status::invalid_argument(message), "bad_request")
        }
        Code::OutOfRange if message.contains("message length too large") => {
            (too_large(limit_key, message), "too_large")
        }
        Code::ResourceExhausted if message.contains("size limit") => (too_large(limit_key, message), "too_large"),
        _ => return resp,
    };
    if let Some(m) = metrics {
        m.request(outcome);
    }
    let _ = rewritten.add_header(h);
    resp
}

/// Not retried by OTLP exporters: RESOURCE_EXHAUSTED without retry advice.
fn too_large(limit_key: &str, message: &str) -> Status {
    Status::resource_exhausted(format!("request over {limit_key}, send smaller batches ({message})"))
}
