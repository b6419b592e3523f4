//! `jaeger.api_v2.CollectorService/PostSpans` on tonic, written by hand (no protoc): the one
//! method served by `crate::grpc::UnaryService` with prost.

use std::sync::Arc;

use prost::Message;
use skein_model::jaeger::proto::{self, PostSpansRequest, PostSpansResponse};
use skein_pipeline::{Pipeline, ProtocolMetrics};
use tonic::Status;

use crate::grpc::{UnaryMethod, UnaryService};
use crate::otlp::grpc::submit_status;

/// The Jaeger collector's `PostSpans` method.
pub struct Collector {
    pipeline: Pipeline,
    metrics: ProtocolMetrics,
}

impl UnaryMethod for Collector {
    const SERVICE: &'static str = "jaeger.api_v2.CollectorService";
    const PATH: &'static str = proto::POST_SPANS_PATH;
    type Codec = tonic_prost::ProstCodec<PostSpansResponse, PostSpansRequest>;

    async fn handle(self: Arc<Self>, req: PostSpansRequest) -> Result<PostSpansResponse, Status> {
        let mut reservation = self.pipeline.reserve(req.encoded_len()).map_err(|e| {
            self.metrics.backpressure.inc();
            self.metrics.request("throttled");
            submit_status(e)
        })?;
        let decoded = proto::decode_post_spans(req);
        let outcome = self
            .pipeline
            .submit(&mut reservation, decoded, None, &self.metrics)
            .await
            .map_err(submit_status)?;
        match super::rejection_message(&outcome) {
            None => Ok(PostSpansResponse {}),
            Some(msg) => Err(Status::invalid_argument(msg)),
        }
    }
}

/// The gRPC service; add it to a `tonic::transport::Server`.
pub type CollectorServer = UnaryService<Collector>;

pub fn service(pipeline: Pipeline, max_request_bytes: usize) -> CollectorServer {
    let metrics = ProtocolMetrics::new("jaeger_grpc");
    UnaryService::new(Collector { pipeline, metrics }, max_request_bytes)
}
