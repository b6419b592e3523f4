//! Requests refused for the sender's own fault — undecodable, too large, an unknown content
//! type, invalid spans — are answered with the reason, and counted. The operator also needs to
//! know *who* sends them: each ingest port logs a WARN naming the client's address and the
//! reason, at most one line per port every 10 s, with how many others were refused since.
//!
//! [`RefusalLog`] is a layer that wraps a port's service. It reads the client's address from the request
//! (`ConnectInfo<SocketAddr>` on the HTTP ports, which the accept loop adds; tonic's own on
//! gRPC) and the reason from the answer: a [`Refused`] extension that receivers attach to
//! their 4xx and partial-success answers, or the `grpc-status` of a gRPC refusal.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::{Method, Request, Response, StatusCode};
use tonic::Code;

/// Why an answer refused some or all of a request's spans; attached to the answer.
#[derive(Debug, Clone)]
pub struct Refused(pub String);

/// `response` with `reason` attached as why it refused spans.
pub fn refusing<B>(mut response: Response<B>, reason: String) -> Response<B> {
    response.extensions_mut().insert(Refused(reason));
    response
}

/// At most one line per port in this long.
const EVERY: Duration = Duration::from_secs(10);

/// Reasons are cut to this many characters in the log (a message can list many spans).
const MAX_REASON_CHARS: usize = 400;

/// One port's refusal log; cloning shares its rate limit.
#[derive(Clone)]
pub struct RefusalLog {
    port: &'static str,
    state: Arc<Mutex<RateLimit>>,
}

impl RefusalLog {
    pub fn new(port: &'static str) -> RefusalLog {
        RefusalLog {
            port,
            state: Arc::default(),
        }
    }

    /// Logs a refusal now, or counts it for the next line if one was logged less than 10 s ago.
    pub fn note(&self, client: Option<SocketAddr>, reason: &str) {
        let decided = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log_now(Instant::now());
        let Some(others) = decided else { return };
        let client = client.map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let reason = match reason.char_indices().nth(MAX_REASON_CHARS) {
            Some((cut, _)) => format!("{}…", &reason[..cut]),
            None => reason.to_string(),
        };
        tracing::warn!(
            port = self.port,
            client,
            reason,
            others_since_last_line = others,
            "refused spans for the sender's fault (skein_requests_total and skein_spans_rejected_total count every one)"
        );
    }
}

impl<S> tower::Layer<S> for RefusalLog {
    type Service = LogRefusals<S>;

    fn layer(&self, inner: S) -> LogRefusals<S> {
        LogRefusals {
            inner,
            log: self.clone(),
        }
    }
}

/// A port's service whose refusals are logged ([`RefusalLog`]).
#[derive(Clone)]
pub struct LogRefusals<S> {
    inner: S,
    log: RefusalLog,
}

#[derive(Default)]
struct RateLimit {
    last_logged: Option<Instant>,
    /// Refusals since the last line, not logged one by one.
    unlogged: u64,
}

impl RateLimit {
    /// For a refusal at `now`: `Some(others refused since the last line)` if it is to be
    /// logged, `None` if only counted.
    fn log_now(&mut self, now: Instant) -> Option<u64> {
        if self
            .last_logged
            .is_some_and(|t| now.saturating_duration_since(t) < EVERY)
        {
            self.unlogged += 1;
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

impl<S, B, R> tower::Service<Request<B>> for LogRefusals<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Queries and sampling lookups share some ingest ports; only sending spans is logged.
        let sending = req.method() != Method::GET;
        let client = client_of(&req);
        let log = self.log.clone();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await?;
            if let Some(reason) = refusal(&response).filter(|_| sending) {
                log.note(client, &reason);
            }
            Ok(response)
        })
    }
}

fn client_of<B>(req: &Request<B>) -> Option<SocketAddr> {
    let ext = req.extensions();
    ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0).or_else(|| {
        ext.get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|c| c.remote_addr())
    })
}

/// The reason an answer refused spans for the sender's fault, if it did.
fn refusal<R>(response: &Response<R>) -> Option<String> {
    if let Some(Refused(reason)) = response.extensions().get::<Refused>() {
        return Some(reason.clone());
    }
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return match status.code() {
            // The sender's faults; RESOURCE_EXHAUSTED is one only when the message was over
            // the size limit (without retry advice), else it is backpressure.
            Code::InvalidArgument | Code::OutOfRange => Some(status.message().to_string()),
            Code::ResourceExhausted if status.message().contains("send smaller batches") => {
                Some(status.message().to_string())
            }
            _ => None,
        };
    }
    match response.status() {
        s @ (StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE) => {
            Some(format!("HTTP {s}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_every_ten_seconds_counting_the_others() {
        let mut limit = RateLimit::default();
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert_eq!(limit.log_now(at(0)), Some(0));
        assert_eq!(limit.log_now(at(1)), None);
        assert_eq!(limit.log_now(at(9)), None);
        assert_eq!(limit.log_now(at(10)), Some(2));
        assert_eq!(limit.log_now(at(11)), None);
        assert_eq!(limit.log_now(at(30)), Some(1));
        assert_eq!(limit.log_now(at(41)), Some(0));
    }

    #[test]
    fn reasons_come_from_the_answer() {
        let with = |status: u16| Response::builder().status(status).body(()).unwrap();
        let mut partial = with(200);
        partial.extensions_mut().insert(Refused("2 spans rejected".into()));
        assert_eq!(refusal(&partial).as_deref(), Some("2 spans rejected"));
        assert_eq!(refusal(&with(413)).as_deref(), Some("HTTP 413 Payload Too Large"));
        assert_eq!(refusal(&with(200)), None);
        assert_eq!(refusal(&with(429)), None, "backpressure is not the sender's fault");
        let grpc = |status: tonic::Status| {
            let mut r = with(200);
            status.add_header(r.headers_mut()).unwrap();
            r
        };
        assert_eq!(
            refusal(&grpc(tonic::Status::invalid_argument("bad trace id"))).as_deref(),
            Some("bad trace id")
        );
        assert_eq!(refusal(&grpc(tonic::Status::unavailable("busy"))), None);
        assert_eq!(refusal(&grpc(tonic::Status::resource_exhausted("retry later"))), None);
        assert!(refusal(&grpc(tonic::Status::resource_exhausted(
            "request over otlp.max_request_bytes, send smaller batches (…)"
        )))
        .is_some());
    }
}
