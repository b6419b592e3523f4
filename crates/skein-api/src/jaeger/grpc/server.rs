//! Hand-written tonic plumbing (no protoc, no tonic-build), shared by every gRPC service of
//! this crate (Jaeger query api_v2/api_v3, remote sampling): each service is a `tower::Service`
//! that routes on the request path to a handler and lets `tonic::server::Grpc` with the prost
//! codec do framing, compression and status trailers — exactly what generated code does.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use futures::stream::BoxStream;
use futures::TryFutureExt;
use skein_query::QueryEngine;
use tonic::body::Body;
use tonic::codec::{CompressionEncoding, EnabledCompressionEncodings};
use tonic::Status;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The chunks a streaming method sends, after it has validated its request.
pub type Chunks<T> = BoxStream<'static, Result<T, Status>>;

/// A streamed answer and, when a damaged block that may hold part of it was skipped, the note
/// saying so: sent as the `warning` metadata the HTTP APIs send as a `Warning` header.
pub type Noted<T> = (Chunks<T>, Option<String>);

/// Requests bigger than this are refused; every query request is a few hundred bytes.
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Spans per streamed chunk are capped by encoded size so a big trace never exceeds a client's
/// default 4 MiB message limit.
pub const CHUNK_BYTES: usize = 1 << 20;

fn grpc<Resp, Req>() -> tonic::server::Grpc<tonic_prost::ProstCodec<Resp, Req>>
where
    Resp: prost::Message + Send + 'static,
    Req: prost::Message + Default + Send + 'static,
{
    let mut accept = EnabledCompressionEncodings::default();
    accept.enable(CompressionEncoding::Gzip);
    accept.enable(CompressionEncoding::Zstd);
    let mut send = EnabledCompressionEncodings::default();
    send.enable(CompressionEncoding::Gzip);
    tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
        .apply_compression_config(accept, send)
        .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None)
}

/// Answers a unary method with `handler`, which gets a clone of `state`.
pub fn unary<S, Req, Resp, Fut>(
    state: S,
    req: http::Request<Body>,
    handler: fn(S, Req) -> Fut,
) -> BoxFuture<Result<http::Response<Body>, Infallible>>
where
    S: Clone + Send + Sync + 'static,
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    unary_with(state, req, move |s, r| handler(s, r).map_ok(|resp| (resp, None)))
}

/// `unary` for a handler whose answer may carry a note (see `Noted`).
pub fn unary_noted<Req, Resp, Fut>(
    engine: QueryEngine,
    req: http::Request<Body>,
    handler: fn(QueryEngine, Req) -> Fut,
) -> BoxFuture<Result<http::Response<Body>, Infallible>>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    Fut: Future<Output = Result<(Resp, Option<String>), Status>> + Send + 'static,
{
    unary_with(engine, req, handler)
}

fn unary_with<S, Req, Resp, Fut>(
    state: S,
    req: http::Request<Body>,
    handler: impl Fn(S, Req) -> Fut + Clone + Send + 'static,
) -> BoxFuture<Result<http::Response<Body>, Infallible>>
where
    S: Clone + Send + Sync + 'static,
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    Fut: Future<Output = Result<(Resp, Option<String>), Status>> + Send + 'static,
{
    Box::pin(async move {
        let svc = tower::service_fn(move |r: tonic::Request<Req>| {
            handler(state.clone(), r.into_inner()).map_ok(|(resp, note)| warned(tonic::Response::new(resp), note))
        });
        Ok(grpc::<Resp, Req>().unary(svc, req).await)
    })
}

/// `response` with `note` as its `warning` metadata (`199 skein "…"`, as the HTTP header).
fn warned<T>(mut response: tonic::Response<T>, note: Option<String>) -> tonic::Response<T> {
    let warning = note.map(|n| format!("199 skein \"{n}\""));
    if let Some(Ok(w)) = warning.map(tonic::metadata::MetadataValue::try_from) {
        response.metadata_mut().insert("warning", w);
    }
    response
}

/// Answers a server-streaming method with `handler`; an error before the first chunk is the
/// call's status, an error mid-stream ends the stream with that status. A note becomes the
/// response's `warning` metadata (`199 skein "…"`, as the HTTP header).
pub fn server_streaming<Req, Resp, Fut>(
    engine: QueryEngine,
    req: http::Request<Body>,
    handler: fn(QueryEngine, Req) -> Fut,
) -> BoxFuture<Result<http::Response<Body>, Infallible>>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    Fut: Future<Output = Result<Noted<Resp>, Status>> + Send + 'static,
{
    Box::pin(async move {
        // Boxed so the compiler checks `Send` on the concrete future here (it cannot prove it
        // through the higher-ranked `dyn Stream` lifetime otherwise).
        let svc = tower::service_fn(
            move |r: tonic::Request<Req>| -> BoxFuture<Result<tonic::Response<Chunks<Resp>>, Status>> {
                Box::pin(
                    handler(engine.clone(), r.into_inner())
                        .map_ok(|(chunks, note)| warned(tonic::Response::new(chunks), note)),
                )
            },
        );
        Ok(grpc::<Resp, Req>().server_streaming(svc, req).await)
    })
}

/// `UNIMPLEMENTED` for a method this service does not have (what generated servers answer).
pub fn unimplemented(path: &str) -> BoxFuture<Result<http::Response<Body>, Infallible>> {
    let status = Status::unimplemented(format!("unknown method {path}"));
    Box::pin(async move { Ok(status.into_http()) })
}

/// `google.protobuf.Timestamp` and `Duration`, shared with the api_v2 model messages.
pub use skein_model::jaeger::proto::{
    duration_from_nanos, nanos_from_duration, nanos_from_timestamp, timestamp_from_nanos, Duration, Timestamp,
};

/// Unix ns from an optional timestamp: absent or all-zero (proto3's default, which Jaeger's
/// non-nullable gogo fields send for "not set") is `None`; before 1970 is an error naming `field`.
pub fn timestamp_ns(t: Option<Timestamp>, field: &str) -> Result<Option<u64>, Status> {
    match t {
        None => Ok(None),
        Some(t) if t.seconds == 0 && t.nanos == 0 => Ok(None),
        Some(t) => nanos_from_timestamp(&t).map(Some).ok_or_else(|| {
            Status::invalid_argument(format!(
                "{field} is not a valid timestamp (seconds={}, nanos={})",
                t.seconds, t.nanos
            ))
        }),
    }
}

/// Nanoseconds from an optional duration: absent or zero is `None`; negative is an error.
pub fn duration_ns(d: Option<Duration>, field: &str) -> Result<Option<u64>, Status> {
    match d {
        None => Ok(None),
        Some(d) if d.seconds == 0 && d.nanos == 0 => Ok(None),
        Some(d) => nanos_from_duration(&d).map(Some).ok_or_else(|| {
            Status::invalid_argument(format!(
                "{field} is not a valid non-negative duration (seconds={}, nanos={})",
                d.seconds, d.nanos
            ))
        }),
    }
}

/// Store failures are ours, not the caller's.
pub fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// NOT_FOUND for a trace, saying so when a damaged block that may hold it was skipped.
pub fn trace_not_found(q: &skein_query::QueryEngine, id: &skein_model::TraceId) -> Status {
    let msg = format!("trace {} not found", skein_model::hex::encode(id));
    match crate::jaeger::incomplete_note(q, skein_query::Asked::Trace(id)) {
        Some(note) => Status::not_found(format!("{msg}; {note}")),
        None => Status::not_found(msg),
    }
}

/// `search_depth` as a limit: 0 means "not set" (proto3 default), negative is an error.
pub fn search_depth(n: i32, field: &str) -> Result<Option<usize>, Status> {
    match n {
        0 => Ok(None),
        n if n < 0 => Err(Status::invalid_argument(format!("{field}={n} must not be negative"))),
        n => Ok(Some(n as usize)),
    }
}

/// Splits a trace's spans into runs whose encoded size stays under [`CHUNK_BYTES`].
pub fn chunk_by_size<T>(items: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for item in items {
        let n = size(&item);
        if !current.is_empty() && bytes + n > CHUNK_BYTES {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += n;
        current.push(item);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_durations() {
        assert_eq!(timestamp_ns(None, "t").unwrap(), None);
        assert_eq!(timestamp_ns(Some(Timestamp::default()), "t").unwrap(), None);
        let t = timestamp_from_nanos(1_700_000_000_123_456_789);
        assert_eq!(timestamp_ns(Some(t), "t").unwrap(), Some(1_700_000_000_123_456_789));
        let err = timestamp_ns(Some(Timestamp { seconds: -1, nanos: 0 }), "query.start_time_min").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("query.start_time_min"), "{}", err.message());
        assert_eq!(
            duration_ns(Some(duration_from_nanos(1_500_000)), "d").unwrap(),
            Some(1_500_000)
        );
        assert!(duration_ns(Some(Duration { seconds: -2, nanos: 0 }), "d").is_err());
        assert_eq!(search_depth(0, "x").unwrap(), None);
        assert!(search_depth(-1, "x").is_err());
    }

    #[test]
    fn chunks_respect_the_byte_budget() {
        let items: Vec<usize> = vec![CHUNK_BYTES / 2, CHUNK_BYTES / 2, 1, CHUNK_BYTES * 2, 3];
        let chunks = chunk_by_size(items, |n| *n);
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks[0].len(), 2);
        assert_eq!(chunks[1], vec![1]);
        assert_eq!(chunks[2], vec![CHUNK_BYTES * 2]);
        assert_eq!(chunks[3], vec![3]);
        assert!(chunk_by_size(Vec::<usize>::new(), |n| *n).is_empty());
    }
}
