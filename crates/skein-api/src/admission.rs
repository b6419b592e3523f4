//! Query admission: at most `query.max_concurrent` queries run at once, the others wait their
//! turn. A query holds what it found, the traces it fetched and its encoded response until it
//! answers, so without a bound the heap grew with the number of queries in flight (128
//! concurrent searches of 100 traces each took the server to 942 MiB). Waiting costs a parked
//! request, not memory; a client that gives up leaves the queue.
//!
//! One `tower` layer for every query port (HTTP on 16686, Zipkin's 9411, gRPC on 16685), so
//! each API is bounded by the same slots. A slot is held until the response body has been
//! sent, so streamed answers count until they end. Cheap lookups (services, operations,
//! metrics, health, the UI's files) and ingest are not queued behind searches.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use skein_model::metrics::{self, Gauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Paths that read spans (prefixes). Everything else on a query port answers from memory.
const QUERY_PATHS: &[&str] = &[
    // Jaeger v1 and api_v3 over HTTP
    "/api/traces",
    "/api/dependencies",
    "/api/v3/traces",
    "/api/v3/trace-summaries",
    // the web UI's API
    "/api/ui/",
    // Zipkin v2 (`/api/v2/trace/{id}`, `/api/v2/traces`, `/api/v2/traceMany`)
    "/api/v2/trace",
    "/api/v2/dependencies",
    "/api/v2/autocomplete",
    "/api/v2/remoteServices",
    // Jaeger gRPC api_v2 and api_v3 (their services and operations lists excepted below)
    "/jaeger.api_v2.QueryService/",
    "/jaeger.api_v3.QueryService/",
];

fn is_query(path: &str) -> bool {
    QUERY_PATHS.iter().any(|p| path.starts_with(p))
        && !path.ends_with("/GetServices")
        && !path.ends_with("/GetOperations")
}

/// The shared slots, and gauges of queries running and waiting.
#[derive(Clone)]
pub struct QueryAdmission {
    slots: Arc<Semaphore>,
    running: Gauge,
    waiting: Gauge,
}

impl QueryAdmission {
    /// `max_concurrent` queries at once (at least one).
    pub fn new(max_concurrent: usize) -> QueryAdmission {
        QueryAdmission {
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            running: metrics::gauge("skein_queries_running", "Queries reading spans now", &[]),
            waiting: metrics::gauge(
                "skein_queries_waiting",
                "Queries waiting for one of query.max_concurrent slots",
                &[],
            ),
        }
    }
}

impl<S> tower::Layer<S> for QueryAdmission {
    type Service = Admitted<S>;

    fn layer(&self, inner: S) -> Admitted<S> {
        Admitted {
            inner,
            admission: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Admitted<S> {
    inner: S,
    admission: QueryAdmission,
}

/// Decrements a gauge when dropped, so a request cancelled while it waits or runs is counted
/// out too.
struct Counted(Gauge);

impl Counted {
    fn new(g: &Gauge) -> Counted {
        g.add(1);
        Counted(g.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

/// A query's slot, held until its response body has been sent (or dropped): a streamed answer
/// (gRPC `FindTraces` reads each trace as it streams) keeps working after its handler returns.
struct Slot {
    // Fields drop in order: the gauge counts this query out before the next one gets the slot.
    _running: Counted,
    _permit: OwnedSemaphorePermit,
}

/// A response body that holds its query's slot, if it has one.
pub struct SlotBody<B> {
    inner: Pin<Box<B>>,
    _slot: Option<Slot>,
}

impl<B: http_body::Body> http_body::Body for SlotBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.inner.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn with_slot<B>(response: http::Response<B>, slot: Option<Slot>) -> http::Response<SlotBody<B>> {
    response.map(|inner| SlotBody {
        inner: Box::pin(inner),
        _slot: slot,
    })
}

impl<S, B, R> tower::Service<http::Request<B>> for Admitted<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<SlotBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if !is_query(req.uri().path()) {
            let answer = self.inner.call(req);
            return Box::pin(async move { Ok(with_slot(answer.await?, None)) });
        }
        // The service made ready by `poll_ready` serves this request; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let admission = self.admission.clone();
        Box::pin(async move {
            let waiting = Counted::new(&admission.waiting);
            let permit = admission
                .slots
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            drop(waiting);
            let slot = Slot {
                _running: Counted::new(&admission.running),
                _permit: permit,
            };
            Ok(with_slot(inner.call(req).await?, Some(slot)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::is_query;

    #[test]
    fn searches_and_trace_reads_queue_lists_do_not() {
        for p in [
            "/api/traces",
            "/api/traces/0af7651916cd43dd8448eb211c80319c",
            "/api/dependencies",
            "/api/v3/traces/0af7651916cd43dd8448eb211c80319c",
            "/api/v3/trace-summaries",
            "/api/ui/search",
            "/api/v2/trace/0af7651916cd43dd",
            "/api/v2/traceMany",
            "/api/v2/traces",
            "/jaeger.api_v2.QueryService/FindTraces",
            "/jaeger.api_v3.QueryService/GetTrace",
        ] {
            assert!(is_query(p), "{p}");
        }
        for p in [
            "/api/services",
            "/api/services/checkout/operations",
            "/api/operations",
            "/api/v3/services",
            "/api/v2/services",
            "/api/v2/spans",
            "/metrics",
            "/ready",
            "/static/app.js",
            "/",
            "/jaeger.api_v2.QueryService/GetServices",
            "/jaeger.api_v3.QueryService/GetOperations",
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        ] {
            assert!(!is_query(p), "{p}");
        }
    }
}
