//! Remote sampling for SDKs against the real server: the Jaeger endpoints on the agent port
//! (`/sampling`, `/`), the collector HTTP port (`/api/sampling`) and the collector gRPC port
//! (`SamplingManager`, called by grpcio), the OpenTelemetry JS `JaegerRemoteSampler` applying
//! what it fetched, and reloading the strategies file (a bad file keeps the old strategies).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Server;
use serde_json::{json, Value};

const STRATEGIES: &str = r#"{
  "default_strategy": {"type": "probabilistic", "param": 0.5},
  "service_strategies": [
    {"service": "always-on", "type": "probabilistic", "param": 1.0},
    {"service": "always-off", "type": "probabilistic", "param": 0.0},
    {"service": "mixed", "type": "probabilistic", "param": 0.0,
     "operation_strategies": [{"operation": "keep-me", "type": "probabilistic", "param": 1.0}]},
    {"service": "limited", "type": "ratelimiting", "param": 7}
  ]
}"#;

fn start(dir: &Path, strategies: &str) -> (Server, std::path::PathBuf) {
    let file = dir.join("strategies.json");
    std::fs::write(&file, strategies).unwrap();
    let file_set = format!("sampling.strategies_file={}", file.display());
    let server = Server::start(&dir.join("data"), &[&file_set, "sampling.reload_interval=100ms"]);
    (server, file)
}

fn run(cmd: &mut Command) -> Value {
    let out = cmd.output().expect("run the client");
    assert!(
        out.status.success(),
        "client failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("GET");
    (r.status().as_u16(), r.text().await.expect("body"))
}

async fn get_json(url: &str) -> Value {
    let (status, body) = get(url).await;
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otel_js_sampler_applies_the_strategies_it_fetches() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _file) = start(dir.path(), STRATEGIES);
    let endpoint = format!("http://{}", server.addr("sampling_http"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/node/sampler_jaeger_remote.js");
    let sampler = |service: &str, spans: &[&str]| {
        run(Command::new("node")
            .arg(&script)
            .arg(&endpoint)
            .arg(service)
            .args(spans)
            .env("NODE_PATH", common::node_modules()))
    };

    let on = sampler("always-on", &["GET /a"]);
    assert_eq!(on["sampled"]["GET /a"], on["total"], "{on}");
    let off = sampler("always-off", &["GET /a"]);
    assert_eq!(off["sampled"]["GET /a"], 0, "{off}");
    // Per-operation strategies: the listed operation is always kept, the rest use 0.
    let mixed = sampler("mixed", &["keep-me", "other"]);
    assert_eq!(mixed["sampled"]["keep-me"], mixed["total"], "{mixed}");
    assert_eq!(mixed["sampled"]["other"], 0, "{mixed}");
    assert!(
        mixed["sampler"].as_str().unwrap().contains("PerOperationSampler"),
        "{mixed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_http_endpoints_answer_jaegers_json() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _file) = start(dir.path(), STRATEGIES);
    let agent = format!("http://{}", server.addr("sampling_http"));
    let collector = format!("http://{}", server.addr("jaeger_thrift_http"));

    let expected_mixed = json!({
        "strategyType": "PROBABILISTIC",
        "probabilisticSampling": {"samplingRate": 0.0},
        "operationSampling": {
            "defaultSamplingProbability": 0.0,
            "defaultLowerBoundTracesPerSecond": 0.0,
            "perOperationStrategies": [{"operation": "keep-me", "probabilisticSampling": {"samplingRate": 1.0}}],
            "defaultUpperBoundTracesPerSecond": 0.0
        }
    });
    assert_eq!(
        get_json(&format!("{agent}/sampling?service=mixed")).await,
        expected_mixed
    );
    assert_eq!(
        get_json(&format!("{collector}/api/sampling?service=mixed")).await,
        expected_mixed
    );
    assert_eq!(
        get_json(&format!("{agent}/sampling?service=limited")).await,
        json!({"strategyType": "RATE_LIMITING", "rateLimitingSampling": {"maxTracesPerSecond": 7}})
    );
    // The legacy root path numbers the enum, as jaeger-agent's does.
    assert_eq!(
        get_json(&format!("{agent}/?service=limited")).await,
        json!({"strategyType": 1, "rateLimitingSampling": {"maxTracesPerSecond": 7}})
    );
    // Unlisted services get the default strategy.
    assert_eq!(
        get_json(&format!("{agent}/?service=somebody-else")).await,
        json!({"strategyType": 0, "probabilisticSampling": {"samplingRate": 0.5}})
    );
    for url in [
        format!("{agent}/sampling"),
        format!("{agent}/"),
        format!("{agent}/sampling?service="),
        format!("{agent}/sampling?service=a&service=b"),
        format!("{collector}/api/sampling"),
    ] {
        let (status, body) = get(&url).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert!(body.contains("'service' parameter"), "{url}: {body}");
    }
    // Span ingest still works on the shared collector port (the route is not shadowed).
    let r = reqwest::Client::new()
        .post(format!("{collector}/api/traces"))
        .header("content-type", "application/x-thrift")
        .body(vec![0u8; 3])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_sampling_manager_answers_a_grpcio_client() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _file) = start(dir.path(), STRATEGIES);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/jaeger_sampling_client.py");
    let results = run(Command::new(common::python())
        .arg(&script)
        .arg(server.addr("jaeger_grpc").to_string())
        .args(["mixed", "limited", "nobody", ""]));
    assert_eq!(results[0]["ok"], true, "{results}");
    let mixed = &results[0]["response"];
    assert_eq!(mixed["strategyType"], "PROBABILISTIC");
    assert_eq!(mixed["probabilisticSampling"]["samplingRate"], 0.0);
    assert_eq!(
        mixed["operationSampling"]["perOperationStrategies"][0]["operation"],
        "keep-me"
    );
    assert_eq!(
        mixed["operationSampling"]["perOperationStrategies"][0]["probabilisticSampling"]["samplingRate"],
        1.0
    );
    let limited = &results[1]["response"];
    assert_eq!(limited["strategyType"], "RATE_LIMITING", "{results}");
    assert_eq!(limited["rateLimitingSampling"]["maxTracesPerSecond"], 7);
    assert_eq!(results[2]["response"]["probabilisticSampling"]["samplingRate"], 0.5);
    assert_eq!(results[3]["ok"], false);
    assert_eq!(results[3]["code"], "INVALID_ARGUMENT");
    assert!(
        results[3]["details"].as_str().unwrap().contains("service_name"),
        "{results}"
    );
}

fn reload_count(metrics: &str, outcome: &str) -> u64 {
    let prefix = format!("skein_sampling_strategies_reloads_total{{outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_are_reloaded_and_a_bad_file_keeps_the_old_strategies() {
    let dir = tempfile::tempdir().unwrap();
    let (server, file) = start(dir.path(), STRATEGIES);
    let url = format!("http://{}/sampling?service=always-on", server.addr("sampling_http"));
    let metrics_url = format!("{}/metrics", server.query_url());
    let rate = |v: Value| v["probabilisticSampling"]["samplingRate"].as_f64();
    assert_eq!(rate(get_json(&url).await), Some(1.0));

    let edited = STRATEGIES.replace(r#""param": 1.0}"#, r#""param": 0.25}"#);
    assert_ne!(edited, STRATEGIES);
    std::fs::write(&file, &edited).unwrap();
    common::eventually(
        "the edited strategies to be served",
        Duration::from_secs(30),
        || async { (rate(get_json(&url).await) == Some(0.25)).then_some(()) },
    )
    .await;

    let failures_before = reload_count(&get(&metrics_url).await.1, "failure");
    std::fs::write(&file, edited.replace(r#""param": 0.25}"#, r#""param": 2.5}"#)).unwrap();
    common::eventually(
        "the bad file to be counted as a failed reload",
        Duration::from_secs(30),
        || async { (reload_count(&get(&metrics_url).await.1, "failure") > failures_before).then_some(()) },
    )
    .await;
    assert_eq!(
        rate(get_json(&url).await),
        Some(0.25),
        "the previous strategies stay in force"
    );
    assert!(reload_count(&get(&metrics_url).await.1, "success") >= 2);

    // Fixing the file is picked up again.
    std::fs::write(&file, STRATEGIES).unwrap();
    common::eventually("the fixed strategies to be served", Duration::from_secs(30), || async {
        (rate(get_json(&url).await) == Some(1.0)).then_some(())
    })
    .await;
    assert!(server.stop(), "clean shutdown");
}

#[test]
fn an_invalid_strategies_file_at_startup_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken-strategies.json");
    std::fs::write(&file, r#"{"default_strategy": {"type": "sometimes", "param": 1}}"#).unwrap();
    let mut cmd = Command::new(common::bin());
    cmd.arg("serve").arg("--data-dir").arg(dir.path().join("data"));
    for key in common::ALL_ADDRS {
        cmd.args(["--set", &format!("{key}=127.0.0.1:0")]);
    }
    let out = cmd
        .args(["--set", &format!("sampling.strategies_file={}", file.display())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("broken-strategies.json") && stderr.contains("sometimes"),
        "{stderr}"
    );
}

#[test]
fn skein_config_shows_the_sampling_section() {
    let out = Command::new(common::bin())
        .args(["config", "--set", "sampling.reload_interval=30s"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[sampling]"), "{text}");
    assert!(text.contains("http_addr = \"0.0.0.0:5778\""), "{text}");
    assert!(text.contains("reload_interval = \"30s\""), "{text}");
    assert!(text.contains("strategies_file = \"\""), "{text}");
}

/// OTLP/JSON with `n` root spans named `name` of service `service` (random ids, one trace each).
fn roots_json(service: &str, name: &str, n: usize) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let spans: Vec<Value> = (0..n)
        .map(|i| {
            json!({"traceId": format!("{:016x}{:016x}", fastrand::u64(..), i), "spanId": format!("{:016x}", i + 1),
                   "name": name, "kind": 2, "startTimeUnixNano": (now - 1_000_000).to_string(),
                   "endTimeUnixNano": now.to_string()})
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"spans": spans}]
    }]})
}

fn operation_rate(v: &Value, op: &str) -> Option<f64> {
    v["operationSampling"]["perOperationStrategies"]
        .as_array()?
        .iter()
        .find(|o| o["operation"] == op)?["probabilisticSampling"]["samplingRate"]
        .as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_mode_lowers_the_probability_of_busy_operations() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strategies.json");
    std::fs::write(
        &file,
        r#"{"default_strategy": {"type": "probabilistic", "param": 1.0}}"#,
    )
    .unwrap();
    let file_set = format!("sampling.strategies_file={}", file.display());
    let server = Server::start(
        &dir.path().join("data"),
        &[
            &file_set,
            "sampling.adaptive.target_traces_per_second=1",
            "sampling.adaptive.recompute_interval=200ms",
        ],
    );
    let url = format!("http://{}/sampling?service=busy", server.addr("sampling_http"));
    // Before traffic: the file's strategy, no per-operation entries.
    assert_eq!(
        get_json(&url).await,
        json!({"strategyType": "PROBABILISTIC", "probabilisticSampling": {"samplingRate": 1.0}})
    );
    // 2000 root spans: whatever interval they land in, that is far above 1 trace/s.
    let client = reqwest::Client::new();
    for _ in 0..4 {
        let r = client
            .post(format!("{}/v1/traces", server.http_url()))
            .header("content-type", "application/json")
            .body(roots_json("busy", "GET /hot", 500).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let lowered = common::eventually(
        "an adaptive probability for GET /hot",
        Duration::from_secs(30),
        || async { operation_rate(&get_json(&url).await, "GET /hot").filter(|p| *p < 0.5) },
    )
    .await;
    assert!(lowered >= 0.001, "never below min_sampling_rate: {lowered}");
    let v = get_json(&url).await;
    assert_eq!(v["operationSampling"]["defaultSamplingProbability"], 1.0, "{v}");
    // A service without traffic keeps the file's strategy.
    let quiet = format!("http://{}/sampling?service=quiet", server.addr("sampling_http"));
    assert!(get_json(&quiet).await.get("operationSampling").is_none());
}
