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

use crate::arriving::{Arriving, Interrupted};

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

    /// Why a successful answer still refused some spans (a partial success), for the log.
    fn refused(_answer: &<Self::Codec as Codec>::Encode) -> Option<String> {
        None
    }
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
                method.clone().handle(r.into_inner()).map_ok(|answer| {
                    let refused = M::refused(&answer).map(crate::refusals::Refused);
                    let mut response = tonic::Response::new(answer);
                    if let Some(r) = refused {
                        response.extensions_mut().insert(r);
                    }
                    response
                })
            });
            Ok(grpc.unary(handler, req).await)
        })
    }
}

/// Counts each request body against the pipeline's receive budget while it arrives (see
/// `Pipeline::receiving`); use as `tower::util::MapRequestLayer::new(receive_budget(p, protocol))`
/// on an ingest gRPC server. tonic buffers a message until it is whole, so without this a client
/// could hold any number of nearly complete 16 MiB messages open at no cost to itself. Past
/// the budget the body fails with RESOURCE_EXHAUSTED and retry advice, which tonic answers.
/// A body that sends nothing for `limits.read_timeout` fails with DEADLINE_EXCEEDED, so a
/// stalled client cannot keep its share of the budget for good.
pub fn receive_budget(
    pipeline: skein_pipeline::Pipeline,
    protocol: &'static str,
) -> impl FnMut(http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body> + Clone {
    let metrics = skein_pipeline::ProtocolMetrics::new(protocol);
    move |req| {
        let metrics = metrics.clone();
        req.map(|body| {
            tonic::body::Body::new(Arriving::new(body, &pipeline, move |e| match e {
                Interrupted::Stalled(after) => {
                    metrics.request("read_timeout");
                    Status::deadline_exceeded(crate::arriving::stalled_message(after))
                }
                Interrupted::Busy(e) => crate::otlp::grpc::submit_status(e),
                Interrupted::Body(status) => status,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(body: &mut tonic::body::Body) -> Option<Result<usize, Status>> {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await?;
        Some(
            frame
                .map(|f| f.into_data().map_or(0, |d| d.len()))
                .map_err(|e| Status::from_error(e.into())),
        )
    }

    /// A gRPC body arriving past the receive budget fails with RESOURCE_EXHAUSTED and retry
    /// advice, and a finished body gives its bytes back.
    #[tokio::test]
    async fn bodies_past_the_receive_budget_fail_with_retry_advice() {
        let dir = tempfile::tempdir().unwrap();
        let store = skein_store::Store::open(dir.path(), skein_store::StoreConfig::default())
            .await
            .unwrap();
        let limits = skein_pipeline::Limits {
            max_inflight_bytes: 64 << 10,
            ..Default::default()
        };
        let mut budget = receive_budget(skein_pipeline::Pipeline::new(limits, store), "otlp_grpc");
        // A body of `n` frames of 16 KiB, all sent.
        let request = |n| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            for _ in 0..n {
                tx.send(bytes::Bytes::from(vec![0u8; 16 << 10])).unwrap();
            }
            http::Request::new(tonic::body::Body::new(Fed(rx)))
        };

        let mut held = budget(request(3)).into_body();
        while let Some(frame) = next(&mut held).await {
            frame.unwrap();
        }
        let mut second = budget(request(2)).into_body();
        assert_eq!(next(&mut second).await.unwrap().unwrap(), 16 << 10);
        let err = next(&mut second).await.unwrap().expect_err("past 64 KiB");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
        assert!(!err.details().is_empty(), "RetryInfo: senders retry later");
        drop((held, second));
        let mut third = budget(request(4)).into_body();
        while let Some(frame) = next(&mut third).await {
            frame.expect("the first two bodies gave their bytes back");
        }
    }

    /// A request body fed by hand, frame by frame.
    struct Fed(tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>);

    impl Body for Fed {
        type Data = bytes::Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Status>>> {
            self.0.poll_recv(cx).map(|d| d.map(|d| Ok(http_body::Frame::data(d))))
        }
    }

    /// A body that keeps sending, however slowly, is read to its end; one that sends nothing
    /// for `read_timeout` fails with DEADLINE_EXCEEDED naming the key, and gives its share of
    /// the receive budget back.
    #[tokio::test(start_paused = true)]
    async fn bodies_that_stall_fail_after_the_read_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let store = skein_store::Store::open(dir.path(), skein_store::StoreConfig::default())
            .await
            .unwrap();
        let limits = skein_pipeline::Limits {
            max_inflight_bytes: 64 << 10,
            read_timeout: std::time::Duration::from_secs(60),
            ..Default::default()
        };
        let mut budget = receive_budget(skein_pipeline::Pipeline::new(limits, store), "otlp_grpc");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut body = budget(http::Request::new(tonic::body::Body::new(Fed(rx)))).into_body();
        for _ in 0..3 {
            tx.send(bytes::Bytes::from(vec![0u8; 16 << 10])).unwrap();
            assert_eq!(next(&mut body).await.unwrap().unwrap(), 16 << 10);
            tokio::time::sleep(std::time::Duration::from_secs(59)).await;
        }
        let started = tokio::time::Instant::now();
        let err = next(&mut body).await.unwrap().expect_err("stalled");
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
        assert!(err.message().contains("limits.read_timeout"), "{err:?}");
        assert_eq!(
            started.elapsed(),
            std::time::Duration::from_secs(1),
            "60 s after the last frame"
        );
        drop(body);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut next_body = budget(http::Request::new(tonic::body::Body::new(Fed(rx)))).into_body();
        for _ in 0..4 {
            tx.send(bytes::Bytes::from(vec![0u8; 16 << 10])).unwrap();
            next(&mut next_body)
                .await
                .unwrap()
                .expect("the stalled body gave its bytes back");
        }
    }
}
