//! Query admission against the real binary: with `query.max_concurrent = 1`, searches over
//! Jaeger HTTP v1 and v3, Zipkin and Jaeger gRPC (the Python grpcio client) sent at once run one
//! at a time, all answer in full, and lists and metrics are not queued behind them.

mod common;
mod views;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
