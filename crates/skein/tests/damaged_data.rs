//! Data damaged on disk, against the real binary: a block whose pages no longer decode is
//! skipped, and every query API response that may lack its spans says so.

mod common;
mod views;

use std::collections::BTreeSet;
use std::path::Path;

use common::{hex, metric, metrics, post_otlp, rid, server_span, Server};
use serde_json::{json, Value};
use skein_model::otlp::json::base64_encode;
use views::{failed, grpc_calls, ok};

fn now_ns() -> u64 {
    skein_store::now_unix_nano()
}

/// A trace of two spans, `front` calling `back`, sent as two requests.
async fn send_trace(client: &reqwest::Client, s: &Server) -> [u8; 16] {
    let (trace, root) = (rid(), rid());
    let start = now_ns() - 60_000_000_000;
    post_otlp(client, s, "front", vec![server_span(trace, root, None, "GET /", start)]).await;
    post_otlp(
        client,
        s,
        "back",
        vec![server_span(trace, rid(), Some(root), "lookup", start)],
    )
    .await;
    trace
}

fn block_ids(data_dir: &Path) -> BTreeSet<String> {
    let Ok(dirs) = std::fs::read_dir(data_dir.join("blocks")) else {
        return BTreeSet::new();
    };
    dirs.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Overwrites every page of a data file with 0xFF, keeping its footer: reads of its rows then
/// fail to decode, as after bit rot or a bad sector.
fn damage_pages(data_file: &Path) {
    let mut bytes = std::fs::read(data_file).unwrap();
    let n = bytes.len();
    let footer = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
    bytes[4..n - 8 - footer].fill(0xFF);
    std::fs::write(data_file, bytes).unwrap();
}

async fn get(client: &reqwest::Client, url: String) -> (u16, Option<String>, Value) {
    let r = client.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let warning = r.headers().get("warning").map(|w| w.to_str().unwrap().to_string());
    (status, warning, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_say_when_a_damaged_block_was_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    // Two runs, one trace each: a clean stop cuts each into a block of its own.
    let mut traces = Vec::new();
    let mut blocks = Vec::new();
    for _ in 0..2 {
        let before = block_ids(dir.path());
        let s = Server::start(dir.path(), &[]);
        traces.push(send_trace(&client, &s).await);
        assert!(s.stop());
        let new: Vec<String> = block_ids(dir.path()).difference(&before).cloned().collect();
        assert_eq!(new.len(), 1, "{new:?}");
        blocks.push(new[0].clone());
    }
    let damaged = &blocks[0];
    damage_pages(&dir.path().join("blocks").join(damaged).join("data.parquet"));
    let s = Server::start(dir.path(), &[]);
    let api = s.query_url();

    // The trace in the damaged block: a 404 that says why.
    let (status, _, v) = get(&client, format!("{api}/api/traces/{}", hex(&traces[0]))).await;
    assert_eq!(status, 404, "{v}");
    let msg = v["errors"][0]["msg"].as_str().unwrap();
    assert!(msg.starts_with("trace not found; results may be incomplete"), "{msg}");
    assert!(msg.contains(damaged.as_str()), "{msg}");
    let (status, _, v) = get(&client, format!("{api}/api/v3/traces/{}", hex(&traces[0]))).await;
    assert_eq!(status, 404, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(damaged.as_str()),
        "{v}"
    );

    // The gRPC query APIs say it in their NOT_FOUND, and in a `warning` metadata entry (as the
    // HTTP header) on searches that found the readable trace.
    let (min, max) = ("2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z");
    let calls = grpc_calls(
        s.addr("query_grpc"),
        vec![
            json!({"api": "v2", "method": "GetTrace", "request": {"trace_id": base64_encode(&traces[0])}}),
            json!({"api": "v3", "method": "GetTrace", "request": {"trace_id": hex(&traces[0])}}),
            json!({"api": "v2", "method": "GetTrace", "request": {"trace_id": base64_encode(&traces[1])}}),
            json!({"api": "v2", "method": "FindTraces", "request": {"query": {"service_name": "front"}}}),
            json!({"api": "v3", "method": "FindTraces", "request": {"query": {"service_name": "front", "start_time_min": min, "start_time_max": max}}}),
            json!({"api": "v3", "method": "FindTraceSummaries", "request": {"query": {"service_name": "front", "start_time_min": min, "start_time_max": max}}}),
            json!({"api": "v2", "method": "GetDependencies", "request": {"start_time": min, "end_time": max}}),
            json!({"api": "v3", "method": "GetDependencies", "request": {"start_time": min, "end_time": max}}),
        ],
    );
    failed(&calls[0], "NOT_FOUND", damaged);
    failed(&calls[1], "NOT_FOUND", damaged);
    ok(&calls[2]);
    assert_eq!(calls[2]["metadata"].get("warning"), None, "the readable trace is whole");
    for call in &calls[3..] {
        assert!(!ok(call).is_empty(), "{call}");
        let warning = call["metadata"]["warning"].as_str().unwrap_or_default();
        assert!(
            warning.starts_with("199 skein \"results may be incomplete") && warning.contains(damaged.as_str()),
            "{call}"
        );
    }

    // The other trace is whole, and nothing says otherwise.
    let (status, warning, v) = get(&client, format!("{api}/api/traces/{}", hex(&traces[1]))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"][0]["spans"].as_array().unwrap().len(), 2);
    assert!(v["errors"].is_null(), "{v}");
    assert_eq!(warning, None);

    // A search over both blocks finds the readable trace and notes the skipped block, in
    // Jaeger's `errors` (status 200, as Jaeger answers partial multi-trace lookups) and in a
    // `Warning` header.
    let (status, warning, v) = get(&client, format!("{api}/api/traces?service=front&lookback=1h")).await;
    assert_eq!(status, 200, "{v}");
    let found: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["traceID"].as_str().unwrap())
        .collect();
    assert_eq!(found, [hex(&traces[1])]);
    assert_eq!(v["errors"][0]["code"], 500, "{v}");
    assert!(
        v["errors"][0]["msg"].as_str().unwrap().contains(damaged.as_str()),
        "{v}"
    );
    let warning = warning.expect("a Warning header");
    assert!(
        warning.starts_with("199 skein \"results may be incomplete: 1 unreadable block"),
        "{warning}"
    );

    // api_v3 has no place for it in the body: the header carries it.
    let window = "query.startTimeMin=2000-01-01T00:00:00Z&query.startTimeMax=2100-01-01T00:00:00Z";
    for path in ["traces", "trace-summaries"] {
        let url = format!("{api}/api/v3/{path}?query.serviceName=front&{window}");
        let (status, warning, v) = get(&client, url).await;
        assert_eq!(status, 200, "{path}: {v}");
        assert!(warning.is_some_and(|w| w.contains(damaged.as_str())), "{path}");
    }

    // Dependencies: the readable trace's call, and the note.
    let (status, _, v) = get(
        &client,
        format!("{api}/api/dependencies?endTs={}", now_ns() / 1_000_000),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"][0]["parent"], "front", "{v}");
    assert_eq!(v["data"][0]["child"], "back", "{v}");
    assert_eq!(v["data"][0]["callCount"], 1, "{v}");
    assert!(
        v["errors"][0]["msg"].as_str().unwrap().contains(damaged.as_str()),
        "{v}"
    );

    // A search the damaged block cannot match (another service) carries no note.
    let (status, warning, v) = get(&client, format!("{api}/api/traces?service=nobody&lookback=1h")).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["errors"].is_null(), "{v}");
    assert_eq!(warning, None);

    assert_eq!(metric(&metrics(&s).await, "skein_unreadable_blocks_total"), Some(1.0));
}
