//! HTTP server and client instrumentation following the OpenTelemetry semantic conventions:
//! a SERVER span per request (`{method} {route}`), a CLIENT span per outgoing call, status
//! codes, `error.type`, Error status on 5xx (server) and 4xx/5xx (client), and failures recorded
//! as `exception` events with `exception.type` / `exception.message`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use opentelemetry::trace::{FutureExt as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use serde_json::{json, Value};

use crate::propagation::{Format, Propagators};
use crate::telemetry::{Identity, JsonLog};

/// One instrumented service: its tracer (own provider and Resource), logger and HTTP client.
pub struct Service {
    pub identity: Identity,
    pub tracer: SdkTracer,
    pub provider: SdkTracerProvider,
    pub log: JsonLog,
    pub propagators: Arc<Propagators>,
    pub http: reqwest::Client,
}

/// A downstream service as seen by a caller: where it is and which header format this hop uses.
#[derive(Clone, Debug)]
pub struct Hop {
    pub peer: &'static str,
    pub base_url: String,
    pub format: Format,
}

/// What a call needs besides the body.
#[derive(Clone, Debug)]
pub struct CallOptions {
    pub timeout: Duration,
    /// `http.request.resend_count` (0 = first attempt, not recorded).
    pub resend_count: u32,
    pub headers: Vec<(&'static str, String)>,
    /// Overrides the hop's configured format (the deliberately broken hop).
    pub format: Option<Format>,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            timeout: Duration::from_secs(30),
            resend_count: 0,
            headers: Vec::new(),
            format: None,
        }
    }
}

/// Why a downstream call did not return 2xx.
#[derive(Debug)]
pub enum CallError {
    /// The callee answered with a non-2xx status; its JSON body (if any) is kept.
    Status(StatusCode, Value),
    Timeout(String),
    Transport(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Status(code, body) => write!(f, "{code}: {}", body["message"].as_str().unwrap_or("")),
            CallError::Timeout(m) | CallError::Transport(m) => f.write_str(m),
        }
    }
}

/// Records an `exception` event (semantic conventions) and sets Error status on the span of `cx`.
pub fn record_exception(cx: &Context, exception_type: &str, message: &str) {
    let span = cx.span();
    span.add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", exception_type.to_string()),
            KeyValue::new("exception.message", message.to_string()),
        ],
    );
    span.set_attribute(KeyValue::new("error.type", exception_type.to_string()));
    span.set_status(Status::error(message.to_string()));
}

impl Service {
    pub fn log(&self, level: &str, message: &str, fields: Value) {
        self.log
            .write(self.identity.name, level, &Context::current(), message, fields);
    }

    /// Runs `work` inside a new span of `kind` under the current context and ends the span after.
    pub async fn in_span<T, F>(&self, name: &str, kind: SpanKind, attributes: Vec<KeyValue>, work: F) -> T
    where
        F: Future<Output = T>,
    {
        let span = self
            .tracer
            .span_builder(name.to_string())
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &Context::current());
        let cx = Context::current().with_span(span);
        let out = work.with_context(cx.clone()).await;
        cx.span().end();
        out
    }

    /// An instrumented JSON request to `hop`: a CLIENT span named `{method} {route}`, the trace
    /// context injected in the hop's format, 2xx bodies returned, anything else an error.
    pub async fn call(
        &self,
        hop: &Hop,
        method: Method,
        route: &str,
        body: &Value,
        options: CallOptions,
    ) -> Result<Value, CallError> {
        let url = format!("{}{route}", hop.base_url);
        let format = options.format.unwrap_or(hop.format);
        let parsed = reqwest::Url::parse(&url).ok();
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.as_str().to_string()),
            KeyValue::new("url.full", url.clone()),
            KeyValue::new("url.template", route.to_string()),
            KeyValue::new(
                "server.address",
                parsed.as_ref().and_then(|u| u.host_str()).unwrap_or("").to_string(),
            ),
            KeyValue::new(
                "server.port",
                parsed.as_ref().and_then(|u| u.port()).unwrap_or(80) as i64,
            ),
            KeyValue::new("peer.service", hop.peer),
            KeyValue::new("demo.propagation", format.label()),
        ];
        if options.resend_count > 0 {
            attributes.push(KeyValue::new("http.request.resend_count", options.resend_count as i64));
        }
        let span = self
            .tracer
            .span_builder(format!("{method} {route}"))
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &Context::current());
        let cx = Context::current().with_span(span);

        let mut cancelled = CancelledGuard(Some(cx.clone()), WORK_ABANDONED);
        let mut headers = HeaderMap::new();
        self.propagators.inject(format, &cx, &mut headers);
        for (name, value) in &options.headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
        let sent = self
            .http
            .request(method.clone(), &url)
            .headers(headers)
            .json(body)
            .timeout(options.timeout)
            .send()
            .await;
        let result = match sent {
            Ok(response) => {
                let status = response.status();
                cx.span()
                    .set_attribute(KeyValue::new("http.response.status_code", status.as_u16() as i64));
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if status.is_success() {
                    Ok(body)
                } else {
                    let detail = body["message"].as_str().unwrap_or("").to_string();
                    let exception_type = body["error"].as_str().unwrap_or("HttpError").to_string();
                    record_exception(
                        &cx,
                        &exception_type,
                        &format!("{method} {url} returned {status}: {detail}"),
                    );
                    cx.span()
                        .set_attribute(KeyValue::new("error.type", status.as_u16().to_string()));
                    Err(CallError::Status(status, body))
                }
            }
            Err(e) if e.is_timeout() => {
                let message = format!("{method} {url} timed out after {:?}", options.timeout);
                record_exception(&cx, "TimeoutError", &message);
                cx.span().set_attribute(KeyValue::new("error.type", "timeout"));
                Err(CallError::Timeout(message))
            }
            Err(e) => {
                let message = format!("{method} {url} failed: {e}");
                record_exception(&cx, "ConnectionError", &message);
                Err(CallError::Transport(message))
            }
        };
        cancelled.0 = None; // completed: not cancelled
        cx.span().end();
        result
    }
}

/// Axum middleware (as a `route_layer`, so the matched route is known): the SERVER span.
pub async fn server_span(State(service): State<Arc<Service>>, request: Request, next: Next) -> Response {
    let (parent, format) = service.propagators.extract(request.headers());
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| request.uri().path().to_string());
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (address, port) = match host.rsplit_once(':') {
        Some((a, p)) => (a.to_string(), p.parse::<i64>().unwrap_or(80)),
        None => (host.clone(), 80),
    };
    let span = service
        .tracer
        .span_builder(format!("{method} {route}"))
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", method),
            KeyValue::new("http.route", route),
            KeyValue::new("url.path", request.uri().path().to_string()),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("server.address", address),
            KeyValue::new("server.port", port),
            KeyValue::new("network.protocol.version", "1.1"),
            KeyValue::new("demo.propagation", format.label()),
        ])
        .start_with_context(&service.tracer, &parent);
    let cx = parent.with_span(span);
    let mut cancelled = CancelledGuard(Some(cx.clone()), CALLER_HUNG_UP);
    let response = next.run(request).with_context(cx.clone()).await;
    cancelled.0 = None; // completed: not cancelled
    let status = response.status();
    let span = cx.span();
    span.set_attribute(KeyValue::new("http.response.status_code", status.as_u16() as i64));
    if status.is_server_error() {
        // The handler recorded the exception (see `AppError`); the status is the server's verdict.
        span.set_attribute(KeyValue::new("error.type", status.as_u16().to_string()));
        span.set_status(Status::error(format!("responded {status}")));
    }
    span.end();
    response
}

/// Fires only if a request (or call) future is dropped before it completes: the caller hung up
/// (say, its timeout fired) and hyper cancelled the handler, and with it the calls it was making.
/// Says so on the span instead of leaving a silently truncated one.
struct CancelledGuard(Option<Context>, &'static str);

impl Drop for CancelledGuard {
    fn drop(&mut self) {
        if let Some(cx) = self.0.take() {
            record_exception(&cx, "RequestCancelled", self.1);
            cx.span().end();
        }
    }
}

const CALLER_HUNG_UP: &str = "the caller closed the connection before the response";
const WORK_ABANDONED: &str = "the request handling this call was cancelled before the call completed";

/// A handler's failure: becomes a JSON error response and an `exception` event on the server
/// span (with Error status for 5xx; 4xx are the caller's problem and stay unset, per semconv).
#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub exception_type: String,
    pub message: String,
}

impl AppError {
    pub fn new(status: StatusCode, exception_type: &str, message: impl Into<String>) -> Self {
        AppError {
            status,
            exception_type: exception_type.to_string(),
            message: message.into(),
        }
    }

    /// A failed downstream call, passed on: the callee's 4xx stays a 4xx, anything else is 502.
    pub fn from_call(peer: &str, e: CallError) -> Self {
        match e {
            CallError::Status(status, body) if status.is_client_error() => AppError::new(
                status,
                body["error"].as_str().unwrap_or("HttpError"),
                body["message"].as_str().unwrap_or("rejected").to_string(),
            ),
            other => AppError::new(StatusCode::BAD_GATEWAY, "UpstreamError", format!("{peer}: {other}")),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        // Runs inside the handler's future, where the server span is the current context.
        let cx = Context::current();
        let span = cx.span();
        span.add_event(
            "exception",
            vec![
                KeyValue::new("exception.type", self.exception_type.clone()),
                KeyValue::new("exception.message", self.message.clone()),
            ],
        );
        let trace_id = span.span_context().trace_id().to_string();
        let body = json!({"error": self.exception_type, "message": self.message, "trace_id": trace_id});
        (self.status, Json(body)).into_response()
    }
}

/// The current trace id, for responses and logs.
pub fn current_trace_id() -> String {
    Context::current().span().span_context().trace_id().to_string()
}
