//! Hand-routed tonic plumbing for the unary ingest methods (OTLP `Export`, Jaeger `PostSpans`):
//! each receiver is a small `tower::Service` that checks the path and lets
//! `tonic::server::Grpc` do framing, decompression, size limits and status trailers.

use std::convert::Infallible;
use std::future::Future;

use futures::TryFutureExt;
use tonic::codec::{Codec, CompressionEncoding, EnabledCompressionEncodings};
use tonic::codegen::{http, Body, BoxFuture, StdError};
use tonic::Status;

/// Answers a request for `path` with `handler(state, message)`, decoding with `codec`; any other
/// path is UNIMPLEMENTED. Accepts gzip and zstd; answers gzip when the client accepts it.
pub fn unary<B, C, S, Fut>(
    req: http::Request<B>,
    path: &'static str,
    codec: C,
    max_request_bytes: usize,
    state: S,
    handler: fn(S, C::Decode) -> Fut,
) -> BoxFuture<http::Response<tonic::body::Body>, Infallible>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    C: Codec + Send + 'static,
    S: Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<C::Encode, Status>> + Send + 'static,
{
    if req.uri().path() != path {
        return Box::pin(async move { Ok(Status::unimplemented("unknown method").into_http()) });
    }
    Box::pin(async move {
        let mut accept = EnabledCompressionEncodings::default();
        accept.enable(CompressionEncoding::Gzip);
        accept.enable(CompressionEncoding::Zstd);
        let mut send = EnabledCompressionEncodings::default();
        send.enable(CompressionEncoding::Gzip);
        let mut grpc = tonic::server::Grpc::new(codec)
            .apply_compression_config(accept, send)
            .apply_max_message_size_config(Some(max_request_bytes), None);
        let method = tower::service_fn(move |r: tonic::Request<C::Decode>| {
            handler(state.clone(), r.into_inner()).map_ok(tonic::Response::new)
        });
        Ok(grpc.unary(method, req).await)
    })
}
