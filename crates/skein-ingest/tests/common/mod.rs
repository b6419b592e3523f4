//! Shared by the receiver tests: a store on a temporary directory, its pipeline, and both OTLP
//! receivers on loopback ports, in-process.

use std::path::Path;

use skein_model::otlp::pb::collector::trace::v1::ExportTraceServiceRequest;
use skein_model::otlp::pb::trace::v1::{ResourceSpans, ScopeSpans, Span};
use skein_pipeline::{Limits, Pipeline};
use skein_store::{Store, StoreConfig};

pub struct Receivers {
    pub store: Store,
    /// `http://…/v1/traces`
    pub http_url: String,
    /// `http://…` of the gRPC receiver.
    pub grpc_url: String,
}

/// Opens a store in `data_dir` and serves OTLP/HTTP and OTLP/gRPC into it.
pub async fn start(data_dir: &Path) -> Receivers {
    let store = Store::open(data_dir, StoreConfig::default()).await.unwrap();
    let pipeline = Pipeline::new(Limits::default(), store.clone());
    let cfg = skein_ingest::otlp::OtlpConfig::default();

    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let app = skein_ingest::otlp::http::router(pipeline.clone(), &cfg);
    tokio::spawn(async move { axum::serve(http, app).await });

    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    let svc = skein_ingest::otlp::grpc::service(pipeline, 1 << 20);
    tokio::spawn(async move {
        let incoming = futures::stream::unfold(grpc, |l| async move { Some((l.accept().await.map(|(s, _)| s), l)) });
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
    });
    Receivers {
        store,
        http_url: format!("http://{http_addr}/v1/traces"),
        grpc_url: format!("http://{grpc_addr}"),
    }
}

/// An export request of one span of trace `[n; 16]`, named `name`.
pub fn request(n: u8, name: &str) -> ExportTraceServiceRequest {
    let span = Span {
        trace_id: vec![n; 16],
        span_id: vec![n; 8],
        name: name.into(),
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
