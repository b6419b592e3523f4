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
//!
//! `query.timeout` bounds how long a query waits for a slot, and again how long it runs once
//! admitted (so a query that waited long still gets its whole time). Past either, the client
//! gets an error in its API's own shape, and a running query is dropped (its block reads are
//! cancelled). A response body still being sent when the time to run is up gives its slot
//! back, so a client that stops reading a large answer cannot hold a slot for good; so does a
//! body the server could not send any of for [`STALLED`] (its client has stopped reading a
//! gRPC stream), so eight such clients no longer stop every query until their time is up.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use http::{header, HeaderValue, StatusCode};
use skein_model::metrics::{self, Counter, Gauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

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

/// The shared slots, the time limit, and gauges of queries running and waiting.
#[derive(Clone)]
pub struct QueryAdmission {
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    /// `None`: no limit.
    timeout: Option<Duration>,
    running: Gauge,
    waiting: Gauge,
    timed_out_waiting: Counter,
    timed_out_running: Counter,
}

impl QueryAdmission {
    /// `max_concurrent` queries at once (at least one), each given `timeout` to wait and run
    /// (`Duration::ZERO`: no limit).
    pub fn new(max_concurrent: usize, timeout: Duration) -> QueryAdmission {
        let max_concurrent = max_concurrent.max(1);
        let timeouts = |stage| {
            metrics::counter(
                "skein_query_timeouts_total",
                "Queries answered with an error at query.timeout, by what they were doing",
                &[("stage", stage)],
            )
        };
        QueryAdmission {
            slots: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            timeout: (!timeout.is_zero()).then_some(timeout),
            running: metrics::gauge("skein_queries_running", "Queries reading spans now", &[]),
            waiting: metrics::gauge(
                "skein_queries_waiting",
                "Queries waiting for one of query.max_concurrent slots",
                &[],
            ),
            timed_out_waiting: timeouts("waiting"),
            timed_out_running: timeouts("running"),
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

/// How long a response body may go unpolled before its slot is given back. The server polls
/// a body whenever it can send: a gRPC stream whose client has stopped reading fills its
/// HTTP/2 window and is not polled again until the client reads.
pub const STALLED: Duration = Duration::from_secs(5);

/// A slot shared with the task that takes it back at the query's deadline, or once its
/// response body has gone [`STALLED`] without being polled.
struct HeldSlot {
    slot: Arc<Mutex<Option<Slot>>>,
    /// When the body was last polled, in ms after `since`, plus one; 0 until there is a body.
    polled: Arc<std::sync::atomic::AtomicU64>,
    since: Instant,
    release: tokio::task::AbortHandle,
}

impl HeldSlot {
    /// Holds `slot` until dropped, until `deadline`, or until its body stalls.
    fn until(slot: Slot, deadline: Option<Instant>) -> HeldSlot {
        let slot = Arc::new(Mutex::new(Some(slot)));
        let polled = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let since = Instant::now();
        let release = {
            let (slot, polled) = (Arc::downgrade(&slot), polled.clone());
            tokio::spawn(async move {
                loop {
                    let stalled_at = match polled.load(std::sync::atomic::Ordering::Relaxed) {
                        // No body yet: the handler is still running; look again later.
                        0 => Instant::now() + STALLED,
                        ms => since + Duration::from_millis(ms - 1) + STALLED,
                    };
                    let wake = deadline.map_or(stalled_at, |d| d.min(stalled_at));
                    tokio::time::sleep_until(wake).await;
                    let now = Instant::now();
                    let ms = polled.load(std::sync::atomic::Ordering::Relaxed);
                    let stalled = ms > 0 && now >= since + Duration::from_millis(ms - 1) + STALLED;
                    if stalled || deadline.is_some_and(|d| now >= d) {
                        if let Some(slot) = slot.upgrade() {
                            slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                        }
                        return;
                    }
                }
            })
            .abort_handle()
        };
        HeldSlot {
            slot,
            polled,
            since,
            release,
        }
    }

    /// Notes that the body was polled (stored plus one, so 0 keeps meaning "no body yet").
    fn polled_now(&self) {
        let ms = self.since.elapsed().as_millis() as u64 + 1;
        self.polled.store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        self.release.abort();
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// What a query port answers: the service's own response, or the layer's refusal.
enum Answer<B> {
    Inner(Pin<Box<B>>),
    Refusal(Option<Bytes>),
}

/// A response body that holds its query's slot, if it has one.
pub struct SlotBody<B> {
    answer: Answer<B>,
    slot: Option<HeldSlot>,
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for SlotBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        if let Some(slot) = &self.slot {
            slot.polled_now();
        }
        match &mut self.answer {
            Answer::Inner(inner) => inner.as_mut().poll_frame(cx),
            Answer::Refusal(bytes) => Poll::Ready(bytes.take().map(|b| Ok(http_body::Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.answer {
            Answer::Inner(inner) => inner.is_end_stream(),
            Answer::Refusal(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.answer {
            Answer::Inner(inner) => inner.size_hint(),
            Answer::Refusal(bytes) => http_body::SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

fn with_slot<B>(response: http::Response<B>, slot: Option<HeldSlot>) -> http::Response<SlotBody<B>> {
    // The body exists from here: its stall clock starts now, polled or not.
    if let Some(slot) = &slot {
        slot.polled_now();
    }
    response.map(|inner| SlotBody {
        answer: Answer::Inner(Box::pin(inner)),
        slot,
    })
}

/// What a query was doing when its time ran out.
#[derive(Clone, Copy, PartialEq)]
enum Stage {
    Waiting,
    Running,
}

/// The error a query past `query.timeout` gets, in the shape of the API it called: gRPC
/// status, Zipkin's plain text, the web UI's, api_v3's or Jaeger v1's JSON error.
fn timed_out<B>(path: &str, stage: Stage, message: String) -> http::Response<SlotBody<B>> {
    let (grpc, http) = match stage {
        // All slots stayed busy: the same query may well succeed later.
        Stage::Waiting => (tonic::Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
        Stage::Running => (tonic::Code::DeadlineExceeded, StatusCode::SERVICE_UNAVAILABLE),
    };
    let refusal = |bytes: Bytes| SlotBody {
        answer: Answer::Refusal(Some(bytes)),
        slot: None,
    };
    if path.starts_with("/jaeger.") {
        return tonic::Status::new(grpc, message)
            .into_http::<()>()
            .map(|()| refusal(Bytes::new()));
    }
    let (content_type, body) = error_in_api_shape(path, http, message);
    let mut response = http::Response::new(refusal(Bytes::from(body)));
    *response.status_mut() = http;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if stage == Stage::Waiting {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

/// An error body in the shape of the query API `path` belongs to, and its content type:
/// Zipkin's plain text, api_v3's, the web UI's or Jaeger v1's JSON error.
pub fn error_in_api_shape(path: &str, status: StatusCode, message: String) -> (&'static str, String) {
    if path.starts_with("/api/v2/") {
        ("text/plain; charset=utf-8", message)
    } else if path.starts_with("/api/v3/") {
        (
            "application/json",
            crate::jaeger::v3::v3_error_body(status, message).to_string(),
        )
    } else if path.starts_with("/api/ui/") {
        ("application/json", crate::ui::api::error_body(message).to_string())
    } else {
        (
            "application/json",
            crate::jaeger::http::v1_error_body(status, message).to_string(),
        )
    }
}

/// `fut`'s output, or `None` if it takes longer than `limit`.
async fn within<F: Future>(limit: Option<Duration>, fut: F) -> Option<F::Output> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, fut).await.ok(),
        None => Some(fut.await),
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for Admitted<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    R: Send + 'static,
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
            let path = req.uri().path().to_owned();
            let limit = admission.timeout.unwrap_or_default();
            let waiting = Counted::new(&admission.waiting);
            let acquire = admission.slots.clone().acquire_owned();
            let Some(permit) = within(admission.timeout, acquire).await else {
                admission.timed_out_waiting.inc();
                let message = format!(
                    "query waited query.timeout={limit:?} for one of query.max_concurrent={} slots, all busy with other queries; retry later, or raise query.max_concurrent",
                    admission.max_concurrent
                );
                tracing::warn!(path, "{message}");
                return Ok(timed_out(&path, Stage::Waiting, message));
            };
            drop(waiting);
            let permit = permit.expect("the semaphore is never closed");
            // The time to run counts from admission, so a query that waited long still gets it all.
            let deadline = admission.timeout.map(|t| Instant::now() + t);
            let slot = HeldSlot::until(
                Slot {
                    _running: Counted::new(&admission.running),
                    _permit: permit,
                },
                deadline,
            );
            let Some(response) = within(admission.timeout, inner.call(req)).await else {
                drop(slot);
                admission.timed_out_running.inc();
                let message = format!(
                    "query did not finish within query.timeout={limit:?}; narrow the time range, name a service or attribute, or raise query.timeout"
                );
                tracing::warn!(path, "{message}");
                return Ok(timed_out(&path, Stage::Running, message));
            };
            Ok(with_slot(response?, Some(slot)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::{Layer, ServiceExt};

    /// A query's answer in these tests: one chunk, or a first chunk and then nothing more
    /// (a client that stopped reading, seen from the server).
    enum TestBody {
        Full(Option<Bytes>),
        Stalled(bool),
    }

    impl http_body::Body for TestBody {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            match &mut *self {
                TestBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(http_body::Frame::data(b)))),
                TestBody::Stalled(sent) if !*sent => {
                    *sent = true;
                    Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(b"first")))))
                }
                TestBody::Stalled(_) => Poll::Pending,
            }
        }
    }

    /// Drops counted: a query cut off at its time limit must stop its work.
    struct Dropped(Arc<AtomicUsize>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    type Svc = Admitted<tower::util::BoxCloneSyncService<http::Request<()>, http::Response<TestBody>, Infallible>>;

    /// The admission layer over a query service that answers at once, never (`?hang`), or with
    /// a body that stalls after its first chunk (`?stall`).
    fn service(max_concurrent: usize, timeout: Duration, dropped: Arc<AtomicUsize>) -> Svc {
        let inner = tower::service_fn(move |req: http::Request<()>| {
            let dropped = dropped.clone();
            async move {
                match req.uri().query() {
                    Some("hang") => {
                        let _counted = Dropped(dropped);
                        std::future::pending::<()>().await;
                        unreachable!()
                    }
                    Some("stall") => Ok(http::Response::new(TestBody::Stalled(false))),
                    _ => Ok(http::Response::new(TestBody::Full(Some(Bytes::from_static(b"answer"))))),
                }
            }
        });
        QueryAdmission::new(max_concurrent, timeout).layer(tower::util::BoxCloneSyncService::new(inner))
    }

    async fn call(svc: &Svc, uri: &str) -> http::Response<SlotBody<TestBody>> {
        let req = http::Request::builder().uri(uri).body(()).unwrap();
        svc.clone().oneshot(req).await.unwrap()
    }

    async fn next_chunk(body: &mut SlotBody<TestBody>) -> Option<Bytes> {
        use http_body::Body;
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
        Some(frame.unwrap().into_data().unwrap())
    }

    async fn text(response: http::Response<SlotBody<TestBody>>) -> String {
        let mut body = response.into_body();
        let mut out = Vec::new();
        while let Some(chunk) = next_chunk(&mut body).await {
            out.extend_from_slice(&chunk);
        }
        String::from_utf8(out).unwrap()
    }

    fn header<'a>(r: &'a http::Response<SlotBody<TestBody>>, name: &str) -> &'a str {
        r.headers().get(name).map_or("", |v| v.to_str().unwrap())
    }

    const TEN_S: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_query_past_its_time_is_cancelled_and_answered_in_its_apis_shape() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let svc = service(1, TEN_S, dropped.clone());
        let running = "query did not finish within query.timeout=10s";

        let r = call(&svc, "/api/traces?hang").await;
        assert_eq!(r.status(), 503);
        assert_eq!(
            header(&r, "retry-after"),
            "",
            "retrying the same heavy query does not help"
        );
        let v: serde_json::Value = serde_json::from_str(&text(r).await).unwrap();
        assert_eq!(v["errors"][0]["code"], 503);
        assert!(v["errors"][0]["msg"].as_str().unwrap().starts_with(running), "{v}");
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "the query's work was dropped");

        let r = call(&svc, "/api/v3/trace-summaries?hang").await;
        assert_eq!(r.status(), 503);
        let v: serde_json::Value = serde_json::from_str(&text(r).await).unwrap();
        assert_eq!(v["error"]["httpCode"], 503);
        assert!(v["error"]["message"].as_str().unwrap().starts_with(running), "{v}");

        let r = call(&svc, "/api/ui/search?hang").await;
        let v: serde_json::Value = serde_json::from_str(&text(r).await).unwrap();
        assert!(v["error"].as_str().unwrap().starts_with(running), "{v}");

        let r = call(&svc, "/api/v2/traces?hang").await;
        assert_eq!(
            (r.status().as_u16(), header(&r, "content-type")),
            (503, "text/plain; charset=utf-8")
        );
        assert!(text(r).await.starts_with(running));

        let r = call(&svc, "/jaeger.api_v2.QueryService/FindTraces?hang").await;
        assert_eq!(r.status(), 200, "gRPC: trailers-only response");
        assert_eq!(header(&r, "grpc-status"), "4", "DEADLINE_EXCEEDED");
        assert!(header(&r, "grpc-message").starts_with("query%20did%20not%20finish"));
        assert_eq!(dropped.load(Ordering::SeqCst), 5);

        // The slot was given back each time.
        assert_eq!(text(call(&svc, "/api/traces").await).await, "answer");
    }

    #[tokio::test(start_paused = true)]
    async fn a_query_that_waits_past_its_time_is_told_to_retry_and_admitted_ones_get_their_whole_time() {
        let svc = service(1, TEN_S, Arc::default());
        let start = Instant::now();
        let at = |secs: u64, uri: &'static str| {
            let svc = svc.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(start + Duration::from_secs(secs)).await;
                let r = call(&svc, uri).await;
                (start.elapsed().as_secs(), r)
            })
        };
        // The slot: `first` from 0 s to 10 s; `second` waits from 1 s, then runs from 10 s to
        // 20 s; `third` waits from 2 s and gives up at 12 s; `fourth` runs at 20 s.
        let first = at(0, "/api/traces?hang");
        let second = at(1, "/api/v3/traces?hang");
        let third = at(2, "/api/v2/traces");
        let grpc = at(3, "/jaeger.api_v3.QueryService/FindTraces");
        let fourth = at(15, "/api/traces/abc");

        let (t, r) = first.await.unwrap();
        assert_eq!((t, r.status().as_u16()), (10, 503));
        let (t, r) = third.await.unwrap();
        assert_eq!((t, r.status().as_u16()), (12, 503));
        assert_eq!(header(&r, "retry-after"), "5");
        let msg = text(r).await;
        assert!(
            msg.starts_with("query waited query.timeout=10s for one of query.max_concurrent=1 slots"),
            "{msg}"
        );
        let (t, r) = grpc.await.unwrap();
        assert_eq!((t, header(&r, "grpc-status")), (13, "14"), "UNAVAILABLE: retry later");
        let (t, r) = second.await.unwrap();
        assert_eq!(
            (t, r.status().as_u16()),
            (20, 503),
            "ran its whole 10 s though it waited 9"
        );
        let (t, r) = fourth.await.unwrap();
        assert_eq!((t, text(r).await.as_str()), (20, "answer"));
    }

    /// A body the server keeps polling (its client reads; the handler is slow to produce)
    /// holds its slot until the time limit.
    #[tokio::test(start_paused = true)]
    async fn a_body_still_unsent_at_the_time_limit_gives_its_slot_back() {
        let svc = service(1, TEN_S, Arc::default());
        let start = Instant::now();
        let stalled = call(&svc, "/api/traces?stall").await;
        assert_eq!(stalled.status(), 200);
        let mut stalled = stalled.into_body();
        assert_eq!(next_chunk(&mut stalled).await.unwrap(), "first");
        let reader = tokio::spawn(async move {
            loop {
                let _ = tokio::time::timeout(Duration::from_secs(1), next_chunk(&mut stalled)).await;
            }
        });

        tokio::time::sleep(Duration::from_secs(1)).await;
        let r = call(&svc, "/api/traces").await;
        assert_eq!(
            start.elapsed().as_secs(),
            10,
            "admitted when the polled body's time ran out, not when it paused"
        );
        assert_eq!(text(r).await, "answer");
        reader.abort();
    }

    /// A body the server cannot send (its client stopped reading a stream) gives its slot back
    /// after `STALLED`, long before the time limit; it is not cut off.
    #[tokio::test(start_paused = true)]
    async fn a_body_not_polled_for_a_while_gives_its_slot_back() {
        let svc = service(1, Duration::from_secs(60), Arc::default());
        let start = Instant::now();
        let mut stalled = call(&svc, "/api/traces?stall").await.into_body();
        assert_eq!(next_chunk(&mut stalled).await.unwrap(), "first");

        let r = call(&svc, "/api/traces").await;
        assert_eq!(start.elapsed(), STALLED, "admitted once the first body went unpolled");
        assert_eq!(text(r).await, "answer");
        // The stalled answer is not cut off: a client that reads again still gets it.
        assert!(matches!(stalled.answer, Answer::Inner(_)));
        drop(stalled);
        assert_eq!(text(call(&svc, "/api/traces").await).await, "answer");
    }

    /// A handler that runs long (its body does not exist yet) keeps its slot: the stall clock
    /// starts with the body.
    #[tokio::test(start_paused = true)]
    async fn a_long_running_handler_keeps_its_slot() {
        let svc = service(1, Duration::from_secs(60), Arc::default());
        let start = Instant::now();
        let _hung = tokio::spawn({
            let svc = svc.clone();
            async move { call(&svc, "/api/traces?hang").await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let r = call(&svc, "/api/traces").await;
        assert_eq!(
            start.elapsed().as_secs(),
            60,
            "admitted only at the hung query's time limit"
        );
        assert_eq!(text(r).await, "answer");
    }

    #[tokio::test(start_paused = true)]
    async fn no_time_limit_when_the_timeout_is_zero() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let svc = service(1, Duration::ZERO, dropped.clone());
        let hung = tokio::time::timeout(Duration::from_secs(24 * 3600), call(&svc, "/api/traces?hang")).await;
        assert!(hung.is_err(), "still running after a day");
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }

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
