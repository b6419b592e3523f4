//! Query admission against the real binary: with `query.max_concurrent = 1`, searches over
//! Jaeger HTTP v1 and v3, Zipkin and Jaeger gRPC (the Python grpcio client) sent at once run one
//! at a time, all answer in full, and lists and metrics are not queued behind them. gRPC clients
//! that stop reading a streamed answer hold a slot only until `query.timeout`, or until their
//! stream has gone unsent for `STALLED`, whichever comes first; queries that wait longer than
//! `query.timeout` are told to retry.

mod common;
mod views;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use skein_api::jaeger::grpc::v2;

use common::{metric, metrics, post_otlp, rid, server_span, Server};
use serde_json::{json, Value};
use views::{grpc_calls, ok};

const TRACES: usize = 2_000;

async fn json(client: &reqwest::Client, url: String) -> Value {
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_beyond_max_concurrent_wait_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["query.max_concurrent=1"]);
    let client = reqwest::Client::new();
    let now = skein_store::now_unix_nano();
    for batch in 0..TRACES / 500 {
        let (mut front, mut back) = (Vec::new(), Vec::new());
        for i in 0..500 {
            let start = now - 60_000_000_000 + ((batch * 500 + i) as u64) * 1_000_000;
            let (trace, root) = (rid(), rid());
            front.push(server_span(trace, root, None, "GET /", start));
            back.push(server_span(trace, rid(), Some(root), "lookup", start + 1000));
        }
        post_otlp(&client, &s, "front", front).await;
        post_otlp(&client, &s, "back", back).await;
    }

    // Watch the gauges while the queries run; `/metrics` is not queued.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (done, s_url) = (done.clone(), s.query_url());
        tokio::spawn(async move {
            let (mut most_running, mut most_waiting) = (0.0f64, 0.0f64);
            while !done.load(Ordering::Relaxed) {
                let m = reqwest::get(format!("{s_url}/metrics"))
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                most_running = most_running.max(metric(&m, "skein_queries_running").unwrap());
                most_waiting = most_waiting.max(metric(&m, "skein_queries_waiting").unwrap());
            }
            (most_running, most_waiting)
        })
    };

    let api = s.query_url();
    let zipkin = format!("http://{}", s.addr("zipkin_http"));
    let window = "query.startTimeMin=2000-01-01T00:00:00Z&query.startTimeMax=2100-01-01T00:00:00Z";
    let mut queries = Vec::new();
    for i in 0..8 {
        let url = match i % 3 {
            0 => format!("{api}/api/traces?service=front&lookback=1h&limit=300"),
            1 => format!("{api}/api/v3/trace-summaries?query.serviceName=front&query.searchDepth=300&{window}"),
            _ => format!("{zipkin}/api/v2/traces?serviceName=front&limit=300"),
        };
        let client = client.clone();
        queries.push(tokio::spawn(async move { (i % 3, json(&client, url).await) }));
    }
    let target = s.addr("query_grpc");
    let grpc = tokio::task::spawn_blocking(move || {
        let find = json!({"api": "v2", "method": "FindTraces", "request": {"query": {"service_name": "front", "search_depth": 300}}});
        grpc_calls(target, vec![find.clone(), find])
    });
    // Lists answer while searches wait.
    let services = json(&client, format!("{api}/api/services")).await;
    assert_eq!(services["data"], json!(["back", "front"]));

    for q in queries {
        let (kind, v) = q.await.unwrap();
        let traces = match kind {
            0 => v["data"].as_array().unwrap().len(),
            1 => v["result"]["summaries"].as_array().unwrap().len(),
            _ => v.as_array().unwrap().len(),
        };
        assert_eq!(traces, 300, "query kind {kind}");
    }
    for call in grpc.await.unwrap() {
        let spans: usize = ok(&call)
            .iter()
            .map(|chunk| chunk["spans"].as_array().unwrap().len())
            .sum();
        assert_eq!(spans, 600);
    }
    done.store(true, Ordering::Relaxed);
    let (most_running, most_waiting) = watcher.await.unwrap();
    assert_eq!(most_running, 1.0, "one slot, one query at a time");
    assert!(most_waiting >= 1.0, "ten queries at once, one slot: some waited");
    let m = metrics(&s).await;
    assert_eq!(metric(&m, "skein_queries_running"), Some(0.0));
    assert_eq!(metric(&m, "skein_queries_waiting"), Some(0.0));
}

/// 1,000 traces of `front`, each one span with a 10 KB attribute: a search for all of them
/// answers ~10 MB, more than socket buffers and flow-control windows let through unread.
/// Returns the last trace's id.
async fn big_traces(client: &reqwest::Client, s: &Server) -> [u8; 16] {
    let now = skein_store::now_unix_nano();
    let mut last = [0u8; 16];
    for batch in 0..10u64 {
        let spans = (0..100u64)
            .map(|i| {
                last = rid();
                let start = now - 60_000_000_000 + (batch * 100 + i) * 1_000;
                let mut span = server_span(last, rid(), None, "GET /", start);
                span.attributes.push(KeyValue {
                    key: "payload".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(
                            (0..10_000).map(|_| fastrand::alphanumeric()).collect(),
                        )),
                    }),
                    ..Default::default()
                });
                span
            })
            .collect();
        post_otlp(client, s, "front", spans).await;
    }
    last
}

/// A Jaeger gRPC `FindTraces` for the service `front`, its answer left unread until asked for.
async fn find_traces(addr: SocketAddr, limit: i32) -> Result<tonic::Streaming<v2::SpansResponseChunk>, tonic::Status> {
    // A small flow-control window: the server can send ~64 KB before this client reads.
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(65_535);
    let mut grpc = tonic::client::Grpc::new(endpoint.connect().await.unwrap());
    grpc.ready().await.unwrap();
    let request = v2::FindTracesRequest {
        query: Some(v2::TraceQueryParameters {
            service_name: "front".into(),
            search_depth: limit,
            ..Default::default()
        }),
    };
    let path = http::uri::PathAndQuery::from_static("/jaeger.api_v2.QueryService/FindTraces");
    let codec = tonic_prost::ProstCodec::default();
    Ok(grpc
        .server_streaming(tonic::Request::new(request), path, codec)
        .await?
        .into_inner())
}

/// The spans in the rest of a `FindTraces` answer.
async fn spans_left(mut answer: tonic::Streaming<v2::SpansResponseChunk>) -> usize {
    let mut spans = 0;
    while let Some(chunk) = answer.message().await.unwrap() {
        spans += chunk.spans.len();
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_hold_a_slot_only_until_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // A time limit below `STALLED` (5 s), so the limit is what frees the slots here.
    let s = Server::start(dir.path(), &["query.max_concurrent=1", "query.timeout=4s"]);
    let client = reqwest::Client::new();
    let last = big_traces(&client, &s).await;

    // The slot: the first stalled search from 0 s until its 4 s run out; the second, queued
    // at 0.5 s, from 4 s until 8 s. Searches queued at 1 s and 1.5 s give up at 5 s and 5.5 s.
    let grpc = s.addr("query_grpc");
    let mut first = find_traces(grpc, 1000).await.unwrap();
    assert_eq!(
        first.message().await.unwrap().unwrap().spans.len(),
        1,
        "the first trace"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = tokio::spawn(find_traces(grpc, 1000));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused_grpc = tokio::spawn(find_traces(grpc, 10));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = client
        .get(format!(
            "{}/api/traces?service=front&lookback=1h&limit=10",
            s.query_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    let v: Value = refused.json().await.unwrap();
    let msg = v["errors"][0]["msg"].as_str().unwrap();
    assert!(
        msg.contains("waited query.timeout=4s for one of query.max_concurrent=1 slots"),
        "{msg}"
    );
    let status = refused_grpc.await.unwrap().expect_err("UNAVAILABLE");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("query.max_concurrent=1"), "{status:?}");

    // Neither stalled answer has been read on, and the slot is free again.
    let trace = json(&client, format!("{}/api/traces/{}", s.query_url(), common::hex(&last))).await;
    assert_eq!(trace["data"][0]["spans"].as_array().unwrap().len(), 1);
    let m = metrics(&s).await;
    assert_eq!(metric(&m, "skein_query_timeouts_total{stage=\"waiting\"}"), Some(2.0));
    assert_eq!(metric(&m, "skein_query_timeouts_total{stage=\"running\"}"), Some(0.0));
    assert_eq!(metric(&m, "skein_queries_running"), Some(0.0));

    // The stalled answers were not cut off: read now, each is whole.
    assert_eq!(spans_left(first).await, 999);
    assert_eq!(spans_left(second.await.unwrap().unwrap()).await, 1000);
}

/// With a long time limit, a stream whose client stopped reading gives its slot back once the
/// server has been unable to send any of it for `STALLED` (5 s). Two stalled streams and then
/// a search queue for the one slot: the search answers after ~10 s. Released only at the time
/// limit, the second stream would hold the slot from 60 s to 120 s and the search would be
/// refused at 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_give_their_slot_back_before_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["query.max_concurrent=1", "query.timeout=60s"]);
    let client = reqwest::Client::new();
    let last = big_traces(&client, &s).await;
    let grpc = s.addr("query_grpc");
    let mut first = find_traces(grpc, 1000).await.unwrap();
    assert_eq!(first.message().await.unwrap().unwrap().spans.len(), 1);
    let second = tokio::spawn(find_traces(grpc, 1000));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v = json(
        &client,
        format!("{}/api/traces?service=front&lookback=1h&limit=10", s.query_url()),
    )
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 10);
    let trace = json(&client, format!("{}/api/traces/{}", s.query_url(), common::hex(&last))).await;
    assert_eq!(trace["data"][0]["spans"].as_array().unwrap().len(), 1);
    let m = metrics(&s).await;
    assert_eq!(metric(&m, "skein_query_timeouts_total{stage=\"waiting\"}"), Some(0.0));
    // Not cut off: read now, each stalled answer is whole.
    assert_eq!(spans_left(first).await, 999);
    assert_eq!(spans_left(second.await.unwrap().unwrap()).await, 1000);
}
