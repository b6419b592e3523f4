//! While the store shuts down, receivers answer "unavailable, retry elsewhere": 503 with
//! Retry-After on HTTP and UNAVAILABLE with RetryInfo on gRPC. Real sockets, in-process server.

use prost::Message;
use skein_model::otlp::pb::collector::trace::v1::trace_service_client::TraceServiceClient;
use skein_model::otlp::pb::collector::trace::v1::ExportTraceServiceRequest;
use skein_model::otlp::pb::trace::v1::{ResourceSpans, ScopeSpans, Span};
use skein_pipeline::{Limits, Pipeline};
use skein_store::{Store, StoreConfig};

fn request() -> ExportTraceServiceRequest {
    let span = Span {
        trace_id: vec![7; 16],
        span_id: vec![8; 8],
        name: "x".into(),
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_while_shutting_down() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).await.unwrap();
    let pipeline = Pipeline::new(Limits::default(), store.clone());
    let cfg = skein_ingest::otlp::OtlpConfig::default();

    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let app = skein_ingest::otlp::http::router(pipeline.clone(), &cfg);
    tokio::spawn(async move { axum::serve(http, app).await });

    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    let svc = skein_ingest::otlp::grpc::service(pipeline.clone(), 1 << 20);
    tokio::spawn(async move {
        let incoming = futures::stream::unfold(grpc, |l| async move { Some((l.accept().await.map(|(s, _)| s), l)) });
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
    });

    // Before shutdown the same request is accepted.
    let client = reqwest::Client::new();
    let url = format!("http://{http_addr}/v1/traces");
    let ok = client
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(request().encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    store.shutdown().await.unwrap();

    let r = client
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(request().encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");

    let mut c = TraceServiceClient::connect(format!("http://{grpc_addr}"))
        .await
        .unwrap();
    let err = c.export(request()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(!err.details().is_empty());
}
