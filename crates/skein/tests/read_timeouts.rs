//! Clients that send nothing while skein waits for them are dropped after `limits.read_timeout`:
//! a connection that never speaks, request headers that stop half way, an idle keep-alive
//! connection, and a request body (HTTP or gRPC) that stops arriving. Without this, such
//! connections (slowloris) pile up until the process runs out of sockets, and stalled gRPC
//! uploads keep their share of the receive budget for good. Real binary, real sockets.

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const READ_TIMEOUT: &str = "limits.read_timeout=2s";

/// Reads until the server closes the connection and returns what it sent. The server is given
/// far longer than its 2 s limit; a connection still open after that is the failure.
async fn read_until_closed(stream: &mut TcpStream, what: &str) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{what}: the connection was still open after 60 s");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_half_sent_and_idle_http_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(dir.path(), &[READ_TIMEOUT]);

    // Every port, HTTP and gRPC: a client that connects and sends nothing.
    for port in [
        "otlp_http",
        "otlp_grpc",
        "query_http",
        "query_grpc",
        "zipkin_http",
        "jaeger_thrift_http",
        "jaeger_grpc",
        "sampling_http",
    ] {
        let mut silent = TcpStream::connect(server.addr(port)).await.unwrap();
        read_until_closed(&mut silent, &format!("{port}, nothing sent")).await;
    }

    // Request headers that stop half way.
    let mut half = TcpStream::connect(server.http).await.unwrap();
    half.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: skein\r\nContent-Type: application/x-pro")
        .await
        .unwrap();
    let answer = read_until_closed(&mut half, "half-sent headers").await;
    assert!(!answer.contains(" 200 "), "{answer}");

    // A keep-alive connection is answered, then closed once idle.
    let mut idle = TcpStream::connect(server.query).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: skein\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut idle, "idle keep-alive").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Clients that do speak are served as before.
    let health = reqwest::get(format!("{}/health", server.query_url())).await.unwrap();
    assert_eq!(health.status(), 200);
    server.stop();
}

/// An HTTP request declaring 1,000 bytes of body and sending 10.
async fn stalled_post(addr: std::net::SocketAddr, path: &str, content_type: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head =
        format!("POST {path} HTTP/1.1\r\nHost: skein\r\nContent-Type: {content_type}\r\nContent-Length: 1000\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[0u8; 10]).await.unwrap();
    read_until_closed(&mut s, path).await
}

/// A gRPC body fed by hand; it stops when the sender is dropped.
struct Fed(tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>);

impl http_body::Body for Fed {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|d| d.map(|d| Ok(http_body::Frame::data(d))))
    }
}

/// A gRPC `Export` whose message declares 1,000 bytes and sends 10; returns the grpc-status
/// and grpc-message the server answers.
async fn stalled_grpc(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut client, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Fed(rx))
        .unwrap();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&1000u32.to_be_bytes());
    frame.extend_from_slice(&[0u8; 10]);
    tx.send(frame.into()).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(60), client.send_request(request))
        .await
        .expect("an answer within 60 s")
        .unwrap();
    let (parts, mut body) = response.into_parts();
    let mut trailers = parts.headers.clone();
    while let Some(frame) =
        std::future::poll_fn(|cx| http_body::Body::poll_frame(std::pin::Pin::new(&mut body), cx)).await
    {
        if let Ok(t) = frame.unwrap().into_trailers() {
            trailers.extend(t);
        }
    }
    drop(tx);
    let get = |k: &str| {
        trailers
            .get(k)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    (get("grpc-status"), get("grpc-message"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_that_stall_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(dir.path(), &[READ_TIMEOUT]);

    let otlp = stalled_post(server.http, "/v1/traces", "application/x-protobuf").await;
    assert!(otlp.starts_with("HTTP/1.1 408"), "{otlp}");
    assert!(otlp.contains("limits.read_timeout"), "{otlp}");
    let zipkin = stalled_post(server.addr("zipkin_http"), "/api/v2/spans", "application/json").await;
    assert!(zipkin.starts_with("HTTP/1.1 408"), "{zipkin}");
    let jaeger = stalled_post(server.addr("jaeger_thrift_http"), "/api/traces", "application/x-thrift").await;
    assert!(jaeger.starts_with("HTTP/1.1 408"), "{jaeger}");

    for (port, path) in [
        (
            "otlp_grpc",
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        ),
        ("jaeger_grpc", "/jaeger.api_v2.CollectorService/PostSpans"),
    ] {
        let (status, message) = stalled_grpc(server.addr(port), path).await;
        assert_eq!(status, "4", "{port}: DEADLINE_EXCEEDED, got {status} {message}");
        assert!(message.contains("limits.read_timeout"), "{port}: {message}");
    }
    let m = common::metrics(&server).await;
    for protocol in ["otlp_grpc", "jaeger_grpc", "otlp_http_protobuf", "zipkin"] {
        let series = format!("skein_requests_total{{protocol=\"{protocol}\",outcome=\"read_timeout\"}}");
        assert_eq!(common::metric(&m, &series), Some(1.0), "{series}");
    }

    // The stalled requests held nothing: a whole export still goes through.
    let span = common::server_span(
        common::rid(),
        common::rid(),
        None,
        "after the stalls",
        1_700_000_000_000_000_000,
    );
    common::post_otlp(&reqwest::Client::new(), &server, "checkout", vec![span]).await;
    server.stop();
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// HTTP/2: a client that sends the preface and stops, or its SETTINGS split half way, is
/// dropped like a silent one; so is one that opened properly but no longer answers pings (a
/// dead or hung peer). A client that answers pings keeps its idle connection: a gRPC channel
/// stays open between exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_must_open_in_time_and_answer_pings() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(dir.path(), &[READ_TIMEOUT]);
    let mut clients = Vec::new();
    for port in ["otlp_grpc", "otlp_http", "query_grpc", "query_http"] {
        for (what, opening) in [
            ("the preface alone", PREFACE.to_vec()),
            ("half a SETTINGS frame", [PREFACE, &[0, 0, 6, 4, 0]].concat()),
            ("no answer to pings", [PREFACE, SETTINGS].concat()),
        ] {
            let addr = server.addr(port);
            clients.push(tokio::spawn(async move {
                let mut client = TcpStream::connect(addr).await.unwrap();
                client.write_all(&opening).await.unwrap();
                read_until_closed(&mut client, &format!("{port}, {what}")).await;
            }));
        }
    }
    for c in clients {
        c.await.unwrap();
    }

    // hyper's client answers pings: after three times the limit idle, the same connection
    // still carries a request.
    for port in ["otlp_grpc", "query_http"] {
        let addr = server.addr(port);
        let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (mut client, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
        let open = tokio::spawn(conn);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(
            !open.is_finished(),
            "{port}: an idle connection that answers pings was closed"
        );
        let (_, no_body) = tokio::sync::mpsc::unbounded_channel();
        let request = http::Request::get(format!("http://{addr}/health"))
            .body(Fed(no_body))
            .unwrap();
        let response = client.send_request(request).await;
        assert!(response.is_ok(), "{port}: {response:?}");
    }
    server.stop();
}
