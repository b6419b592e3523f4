//! `skein generate` fills a store straight into blocks; a server started on it afterwards
//! finds every span, in whole traces, over the generated window.

mod common;

use std::process::Command;

use common::{bin, metric, metrics, Server};
use serde_json::Value;

fn generate(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("generate")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run skein generate")
}

#[tokio::test]
async fn generated_store_is_served_whole() {
    let dir = tempfile::tempdir().unwrap();
    // 5,500 spans: two full blocks of 2,000 and one of 1,500, ending in a partial request.
    let out = generate(
        dir.path(),
        &[
            "--spans",
            "5500",
            "--block-spans",
            "2000",
            "--window",
            "2h",
            "--services",
            "4",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("5,500 spans in 3 blocks"), "{stdout}");

    let server = Server::start(dir.path(), &[]);
    let m = metrics(&server).await;
    assert_eq!(metric(&m, "skein_block_spans"), Some(5500.0), "{m}");
    assert_eq!(metric(&m, "skein_blocks"), Some(3.0), "{m}");

    // Every trace in the window, with as many spans as its summary counts.
    let client = reqwest::Client::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let url = format!(
        "{}/api/traces?start={}&end={}&limit=1500",
        server.query_url(),
        (now - 3 * 3600) * 1_000_000,
        (now + 60) * 1_000_000
    );
    let v: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    let traces = v["data"].as_array().expect("data");
    let spans: usize = traces.iter().map(|t| t["spans"].as_array().map_or(0, Vec::len)).sum();
    assert_eq!(spans, 5500, "every generated span is found by search");
    for t in traces {
        let id = t["traceID"].as_str().unwrap();
        let one: Value = client
            .get(format!("{}/api/traces/{id}", server.query_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            one["data"][0]["spans"].as_array().map(Vec::len),
            t["spans"].as_array().map(Vec::len)
        );
    }
    // Start times are spread over the window, not bunched at its end.
    let starts: Vec<u64> = traces
        .iter()
        .flat_map(|t| {
            t["spans"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["startTime"].as_u64().unwrap())
        })
        .collect();
    let (lo, hi) = (starts.iter().min().unwrap(), starts.iter().max().unwrap());
    assert!(
        hi - lo > 3_600_000_000,
        "spans span more than an hour of the 2h window: {lo}..{hi}"
    );
    assert!(server.stop());
}

#[test]
fn bad_block_size_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = generate(dir.path(), &["--spans", "100", "--block-spans", "1500"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--block-spans must be a multiple of 1000, got 1500"),
        "{err}"
    );
}
