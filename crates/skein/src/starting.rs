//! What the ports answer while the store opens. Listing the blocks and replaying the WAL after a
//! crash under load can take a while; every port is bound before, so a port already in use
//! stops the start at once, and each answers meanwhile instead of leaving connections hanging:
//!
//! - the query port: `/health` is 200 (the process is alive: a liveness probe must not restart
//!   it in the middle of a replay), `/ready` is 503 saying what skein is doing, `/metrics`
//!   works, and every API answers 503 with `Retry-After` in its own error shape;
//! - the ingest ports: 503 with `Retry-After` (OTLP/HTTP in the request's format, plain text
//!   elsewhere), which every OpenTelemetry, Zipkin and Jaeger client retries;
//! - gRPC on any port: `UNAVAILABLE`, which gRPC clients retry.
//!
//! Once the store is open the listeners are handed to the real servers; connections opened
//! meanwhile are closed after their current request, and clients reconnect to the real ones.

use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::connections::Pool;
use crate::http_server;

/// How long the hand-over waits for connections opened while starting to finish their request.
const HAND_OVER_WAIT: Duration = Duration::from_secs(1);

/// Clients are asked to come back after this many seconds.
const RETRY_AFTER_SECS: &str = "2";

/// The ports answering while the store opens; [`Starting::finish`] gives their listeners back.
pub struct Starting {
    stop: watch::Sender<bool>,
    ports: Vec<(&'static str, tokio::task::JoinHandle<http_server::Accepting>)>,
}

/// Starts answering on every `(name, listener)`; `query_http` is the query port.
pub fn answer_while_opening(ports: Vec<(&'static str, TcpListener)>, read_timeout: Option<Duration>) -> Starting {
    let since = Instant::now();
    let (stop, stop_rx) = watch::channel(false);
    let ports = ports
        .into_iter()
        .map(|(name, listener)| {
            let query_port = name == "query_http";
            let app = axum::Router::new().fallback(move |req: Request| async move { answer(&req, query_port, since) });
            let serving = http_server::serve_until(
                http_server::Accepting::new(listener, name, pool_of(name)),
                app,
                read_timeout,
                stop_rx.clone(),
                Some(HAND_OVER_WAIT),
                name,
            );
            (name, tokio::spawn(serving))
        })
        .collect();
    Starting { stop, ports }
}

/// The slots a port's connections take (`connections`), by the port's name.
fn pool_of(port: &str) -> Pool {
    if port.starts_with("query_") {
        Pool::Queries
    } else {
        Pool::Senders
    }
}

impl Starting {
    /// Stops answering and returns each port's listener by name, for the real servers.
    pub async fn finish(self) -> anyhow::Result<Vec<(&'static str, TcpListener)>> {
        let _ = self.stop.send(true);
        let mut out = Vec::with_capacity(self.ports.len());
        for (name, task) in self.ports {
            out.push((name, task.await?.into_inner()));
        }
        Ok(out)
    }
}

fn answer(req: &Request, query_port: bool, since: Instant) -> Response {
    let doing = format!(
        "skein is starting: opening its store (listing blocks, replaying the write-ahead log), {:.1}s so far",
        since.elapsed().as_secs_f64()
    );
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unavailable(format!("{doing}; retry shortly"))
            .into_http::<axum::body::Body>()
            .into_response();
    }
    let path = req.uri().path();
    let retry = format!("{doing}; retry in a few seconds");
    let response = if query_port {
        match path {
            "/health" => return "ok\n".into_response(),
            "/ready" => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {doing}\n")).into_response(),
            "/metrics" => return skein_api::metrics_text().into_response(),
            _ if path.starts_with("/api/") => {
                let (content_type, body) =
                    skein_api::admission::error_in_api_shape(path, StatusCode::SERVICE_UNAVAILABLE, retry);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::CONTENT_TYPE, content_type)],
                    body,
                )
                    .into_response()
            }
            // The web UI's pages.
            _ => skein_ingest::http::text(StatusCode::SERVICE_UNAVAILABLE, retry),
        }
    } else if path == "/v1/traces" {
        skein_ingest::otlp::http::unavailable(req.headers(), retry)
    } else {
        skein_ingest::http::text(StatusCode::SERVICE_UNAVAILABLE, retry)
    };
    let mut response = response;
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use skein_model::otlp::pb::collector::trace::v1::trace_service_client::TraceServiceClient;
    use skein_model::otlp::pb::collector::trace::v1::ExportTraceServiceRequest;

    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }

    async fn listener() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").await.unwrap()
    }

    async fn get(client: &reqwest::Client, url: String) -> (u16, Option<String>, String) {
        let r = client.get(url).send().await.unwrap();
        let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), retry, r.text().await.unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_port_answers_while_the_store_opens_then_hands_over() {
        let ports = [
            ("query_http", listener().await),
            ("otlp_http", listener().await),
            ("otlp_grpc", listener().await),
            ("zipkin_http", listener().await),
        ];
        let addr: std::collections::HashMap<&str, std::net::SocketAddr> =
            ports.iter().map(|(n, l)| (*n, l.local_addr().unwrap())).collect();
        let starting = answer_while_opening(ports.into_iter().collect(), Some(Duration::from_secs(5)));
        let client = reqwest::Client::new();
        let query = format!("http://{}", addr["query_http"]);

        // Alive, not ready, and saying why.
        assert_eq!(
            get(&client, format!("{query}/health")).await,
            (200, None, "ok\n".into())
        );
        let (status, retry, body) = get(&client, format!("{query}/ready")).await;
        assert_eq!((status, retry.as_deref()), (503, Some(RETRY_AFTER_SECS)));
        assert!(
            body.starts_with("not ready: skein is starting: opening its store"),
            "{body}"
        );
        let (status, _, body) = get(&client, format!("{query}/metrics")).await;
        assert_eq!(status, 200);
        assert!(body.contains("process_resident_memory_bytes"), "{body}");

        // Each query API in its own error shape.
        let (status, retry, body) = get(&client, format!("{query}/api/traces?service=a")).await;
        assert_eq!((status, retry.as_deref()), (503, Some(RETRY_AFTER_SECS)));
        let v1: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v1["errors"][0]["code"], 503, "{body}");
        assert!(
            v1["errors"][0]["msg"]
                .as_str()
                .unwrap()
                .contains("retry in a few seconds"),
            "{body}"
        );
        let (status, _, body) = get(&client, format!("{query}/api/v3/services")).await;
        let v3: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!((status, v3["error"]["httpCode"].as_u64()), (503, Some(503)), "{body}");
        let (status, _, body) = get(&client, format!("{query}/search")).await;
        assert_eq!(status, 503);
        assert!(body.starts_with("skein is starting"), "{body}");

        // OTLP/HTTP in the request's format, with the gRPC code UNAVAILABLE.
        let otlp = format!("http://{}/v1/traces", addr["otlp_http"]);
        let r = client
            .post(&otlp)
            .header("content-type", "application/x-protobuf")
            .body(ExportTraceServiceRequest::default().encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], RETRY_AFTER_SECS);
        let status = RpcStatus::decode(r.bytes().await.unwrap()).unwrap();
        assert_eq!(status.code, 14, "{status:?}");
        let r = client
            .post(&otlp)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], 14, "{body}");
        // Zipkin: plain text.
        let r = client
            .post(format!("http://{}/api/v2/spans", addr["zipkin_http"]))
            .header("content-type", "application/json")
            .body("[]")
            .send()
            .await
            .unwrap();
        assert_eq!(
            (r.status().as_u16(), r.headers()["retry-after"].to_str().unwrap()),
            (503, "2")
        );
        // gRPC: UNAVAILABLE, which exporters retry.
        let mut grpc = TraceServiceClient::connect(format!("http://{}", addr["otlp_grpc"]))
            .await
            .unwrap();
        let err = grpc.export(ExportTraceServiceRequest::default()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        assert!(err.message().contains("opening its store"), "{err:?}");

        // The hand-over: every listener comes back, and the real server answers on it, also
        // to a client whose keep-alive connection was opened while starting.
        let mut ports: std::collections::HashMap<&str, TcpListener> =
            starting.finish().await.unwrap().into_iter().collect();
        assert_eq!(ports.len(), 4);
        let l = ports.remove("query_http").unwrap();
        assert_eq!(l.local_addr().unwrap(), addr["query_http"]);
        let app = axum::Router::new().route("/ready", axum::routing::get(|| async { "ready\n" }));
        let (_stop, stop_rx) = watch::channel(false);
        let _server = http_server::spawn(
            http_server::Accepting::new(l, "query", Pool::Queries),
            app,
            skein_api::ErrorShapes::QueryApis,
            None,
            stop_rx,
            "query",
        );
        assert_eq!(
            get(&client, format!("{query}/ready")).await,
            (200, None, "ready\n".into())
        );
        drop(grpc);
    }
}
