//! Attribute keys/values and remote services over a real store: spans in the head and spans
//! already cut into a Parquet block are both offered.

use std::sync::Arc;
use std::time::Duration;

use skein_model::*;
use skein_query::QueryEngine;
use skein_store::{Store, StoreConfig};

fn span(service: &Arc<Resource>, id: u8, kind: SpanKind, attrs: Vec<KeyValue>) -> Span {
    let start = skein_store::now_unix_nano() - 1_000_000_000;
    Span {
        trace_id: [id; 16],
        span_id: [id; 8],
        name: format!("op{id}"),
        kind,
        start_unix_nano: start,
        end_unix_nano: start + 1000,
        attributes: attrs,
        resource: service.clone(),
        ..Span::default()
    }
}

fn resource(name: &str) -> Arc<Resource> {
    Arc::new(Resource {
        attributes: vec![
            KeyValue::string("service.name", name),
            KeyValue::string("host.name", format!("{name}-host")),
        ],
        dropped_attributes_count: 0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_values_and_remote_services_from_head_and_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        compaction_interval: Duration::from_secs(3600),
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), cfg).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let (front, back) = (resource("front"), resource("back"));

    // These go into a block...
    store
        .append(vec![
            span(
                &front,
                1,
                SpanKind::Client,
                vec![
                    KeyValue::string("peer.service", "back"),
                    KeyValue::string("http.request.method", "GET"),
                    KeyValue::new("http.response.status_code", AnyValue::Int(200)),
                ],
            ),
            span(&back, 2, SpanKind::Server, vec![KeyValue::string("db.system", "redis")]),
        ])
        .await
        .unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.stats().blocks, 1);
    // ...these stay in the head.
    store
        .append(vec![span(
            &front,
            3,
            SpanKind::Producer,
            vec![
                KeyValue::string("peer.service", "kafka"),
                KeyValue::string("http.request.method", "POST"),
                KeyValue::new("retry", AnyValue::Bool(true)),
            ],
        )])
        .await
        .unwrap();

    let keys = q.attribute_keys(None).await.unwrap();
    for k in [
        "db.system",
        "host.name",
        "http.request.method",
        "http.response.status_code",
        "peer.service",
        "retry",
        "service.name",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
    }
    let front_keys = q.attribute_keys(Some("front")).await.unwrap();
    assert!(!front_keys.iter().any(|k| k == "db.system"), "{front_keys:?}");

    assert_eq!(
        q.attribute_values("http.request.method", None, 10).await.unwrap(),
        ["GET", "POST"]
    );
    assert_eq!(
        q.attribute_values("http.request.method", None, 1).await.unwrap(),
        ["GET"]
    );
    assert_eq!(
        q.attribute_values("http.response.status_code", None, 0).await.unwrap(),
        ["200"]
    );
    assert_eq!(
        q.attribute_values("host.name", Some("back"), 10).await.unwrap(),
        ["back-host"]
    );
    assert!(q.attribute_values("nope", None, 10).await.unwrap().is_empty());

    assert_eq!(q.remote_services("front").await.unwrap(), ["back", "kafka"]);
    assert!(q.remote_services("back").await.unwrap().is_empty());
}
