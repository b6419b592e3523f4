//! While the store shuts down, receivers answer "unavailable, retry elsewhere": 503 with
//! Retry-After on HTTP and UNAVAILABLE with RetryInfo on gRPC. Real sockets, in-process server.

mod common;

use prost::Message;
use skein_model::otlp::pb::collector::trace::v1::trace_service_client::TraceServiceClient;

fn request() -> skein_model::otlp::pb::collector::trace::v1::ExportTraceServiceRequest {
    common::request(7, "x")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_while_shutting_down() {
    let dir = tempfile::tempdir().unwrap();
    let common::Receivers {
        store,
        http_url: url,
        grpc_url,
    } = common::start(dir.path()).await;

    // Before shutdown the same request is accepted.
    let client = reqwest::Client::new();
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

    let mut c = TraceServiceClient::connect(grpc_url).await.unwrap();
    let err = c.export(request()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(!err.details().is_empty());
}
