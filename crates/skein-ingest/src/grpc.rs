//! Hand-routed tonic plumbing for the unary ingest methods (OTLP `Export`, Jaeger `PostSpans`):
//! each receiver implements `UnaryMethod`, and `UnaryService` checks the path and lets
//! `tonic::server::Grpc` do framing, decompression, size limits and status trailers.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::TryFutureExt;
use tonic::codec::{Codec, CompressionEncoding, EnabledCompressionEncodings};
use tonic::codegen::{http, Body, BoxFuture, StdError};
use tonic::server::NamedService;
use tonic::Status;

/// One unary gRPC method of an ingest receiver.
pub trait UnaryMethod: Send + Sync + 'static {
    /// Fully qualified service name, e.g. `jaeger.api_v2.CollectorService`.
    const SERVICE: &'static str;
    /// The method's path, `/<service>/<method>`.
    const PATH: &'static str;
    type Codec: Codec + Default + Send + 'static;

    fn handle(
        self: Arc<Self>,
        message: <Self::Codec as Codec>::Decode,
    ) -> impl Future<Output = Result<<Self::Codec as Codec>::Encode, Status>> + Send;
}

/// The gRPC service of one `UnaryMethod`; add it to a `tonic::transport::Server`. Any other
/// path is UNIMPLEMENTED. Accepts gzip and zstd; answers gzip when the client accepts it.
pub struct UnaryService<M> {
    method: Arc<M>,
    max_request_bytes: usize,
}

impl<M: UnaryMethod> UnaryService<M> {
    pub fn new(method: M, max_request_bytes: usize) -> UnaryService<M> {
        UnaryService {
            method: Arc::new(method),
            max_request_bytes,
        }
    }
}

impl<M> Clone for UnaryService<M> {
    fn clone(&self) -> Self {
        UnaryService {
            method: self.method.clone(),
            max_request_bytes: self.max_request_bytes,
        }
    }
}

impl<M: UnaryMethod> NamedService for UnaryService<M> {
    const NAME: &'static str = M::SERVICE;
}

impl<M, B> tower::Service<http::Request<B>> for UnaryService<M>
where
    M: UnaryMethod,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != M::PATH {
            return Box::pin(async move { Ok(Status::unimplemented("unknown method").into_http()) });
        }
        let (method, max_request_bytes) = (self.method.clone(), self.max_request_bytes);
        Box::pin(async move {
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            accept.enable(CompressionEncoding::Zstd);
            let mut send = EnabledCompressionEncodings::default();
            send.enable(CompressionEncoding::Gzip);
            let mut grpc = tonic::server::Grpc::new(M::Codec::default())
                .apply_compression_config(accept, send)
                .apply_max_message_size_config(Some(max_request_bytes), None);
            let handler = tower::service_fn(move |r: tonic::Request<<M::Codec as Codec>::Decode>| {
                method.clone().handle(r.into_inner()).map_ok(tonic::Response::new)
            });
            Ok(grpc.unary(handler, req).await)
        })
    }
}
