//! `jaeger.api_v2.CollectorService/PostSpans` on tonic, written by hand (no protoc): the one
//! method routed through `crate::grpc::unary` with prost.

use std::sync::Arc;
use std::task::{Context, Poll};

use prost::Message;
use skein_model::jaeger::proto::{self, PostSpansRequest, PostSpansResponse};
use skein_pipeline::{Pipeline, ProtocolMetrics};
use tonic::codegen::{http, Body, BoxFuture, StdError};
use tonic::server::NamedService;
use tonic::Status;

use crate::otlp::grpc::submit_status;

struct Collector {
    pipeline: Pipeline,
    metrics: ProtocolMetrics,
}

impl Collector {
    async fn post_spans(&self, req: PostSpansRequest) -> Result<PostSpansResponse, Status> {
        let _reservation = self.pipeline.reserve(req.encoded_len()).map_err(|e| {
            self.metrics.backpressure.inc();
            self.metrics.request("throttled");
            submit_status(e)
        })?;
        let decoded = proto::decode_post_spans(req);
        let outcome = self
            .pipeline
            .submit(decoded, None, &self.metrics)
            .await
            .map_err(submit_status)?;
        match super::rejection_message(&outcome) {
            None => Ok(PostSpansResponse {}),
            Some(msg) => Err(Status::invalid_argument(msg)),
        }
    }
}

/// The gRPC service; add it to a `tonic::transport::Server`.
#[derive(Clone)]
pub struct CollectorServer {
    inner: Arc<Collector>,
    max_request_bytes: usize,
}

pub fn service(pipeline: Pipeline, max_request_bytes: usize) -> CollectorServer {
    CollectorServer {
        inner: Arc::new(Collector {
            pipeline,
            metrics: ProtocolMetrics::new("jaeger_grpc"),
        }),
        max_request_bytes,
    }
}

impl NamedService for CollectorServer {
    const NAME: &'static str = "jaeger.api_v2.CollectorService";
}

impl<B> tower::Service<http::Request<B>> for CollectorServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let codec = tonic_prost::ProstCodec::<PostSpansResponse, PostSpansRequest>::default();
        crate::grpc::unary(
            req,
            proto::POST_SPANS_PATH,
            codec,
            self.max_request_bytes,
            self.inner.clone(),
            |c, r| async move { c.post_spans(r).await },
        )
    }
}
