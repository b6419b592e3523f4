//! Head sampling through the real server, against OpenTelemetry's own consistent probability
//! sampler: opentelemetry-sdk (Python, tests/python/head_sampling_otel.py) decides on 3,000 new
//! traces at probability 0.25; skein, at the same probability, receives every one of them over
//! OTLP/HTTP and must keep exactly the traces the SDK sampled. Also: spans whose sampled flag is
//! known to be 0 are dropped while flags of 0 ("unknown") are not, sampled-out spans are
//! accepted (no partial-success rejection), the metrics count each reason exactly, kept spans
//! carry the applied threshold (`ot=th:c`) in their tracestate, and still do after a SIGKILL
//! and WAL replay.

mod common;

use std::collections::HashSet;
use std::process::Command;

use common::{hex, metrics, post_otlp, rid, Server};
use opentelemetry_proto::tonic::trace::v1::Span;

const SETS: &[&str] = &[
    "sampling.head.probability=0.25",
    "sampling.head.drop_unsampled=true",
    "sampling.head.rate_limit.services.checkout=1000000000",
];

/// 0.25 keeps randomness (the trace id's last 7 bytes) from 0xc0000000000000 up.
fn kept_at_quarter(trace_id: &[u8; 16]) -> bool {
    trace_id[9] >= 0xc0
}

fn unhex<const N: usize>(s: &str) -> [u8; N] {
    std::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
}

fn span(trace_id: [u8; 16], span_id: [u8; 8], trace_state: &str, flags: u32) -> Span {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        trace_state: trace_state.into(),
        flags,
        name: "work".into(),
        kind: 2,
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1_000_000,
        ..Default::default()
    }
}

/// The stored spans' tracestates (one per span), or `None` when the trace is not stored.
async fn stored(client: &reqwest::Client, s: &Server, id: &[u8; 16]) -> Option<Vec<String>> {
    let spans = common::jaeger_spans(client, s, id).await?;
    Some(
        spans
            .iter()
            .map(|sp| {
                sp["tags"]
                    .as_array()
                    .and_then(|tags| tags.iter().find(|t| t["key"] == "w3c.tracestate"))
                    .and_then(|t| t["value"].as_str())
                    .unwrap_or("")
                    .to_string()
            })
            .collect(),
    )
}

/// Posts one request; every span must be accepted (sampled out is not rejected).
async fn post(client: &reqwest::Client, s: &Server, spans: Vec<Span>) {
    let resp = post_otlp(client, s, "checkout", spans).await;
    assert!(resp.partial_success.is_none(), "{:?}", resp.partial_success);
}

fn value(text: &str, series: &str) -> f64 {
    common::metric(text, series).unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// OpenTelemetry's decisions: (trace id, span id, sampled, tracestate) for `n` new traces.
fn otel_sdk_decisions(probability: f64, n: usize) -> Vec<([u8; 16], [u8; 8], bool, String)> {
    let out = Command::new(common::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/python/head_sampling_otel.py"
        ))
        .args([probability.to_string(), n.to_string()])
        .output()
        .expect("run head_sampling_otel.py");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                unhex(v["trace_id"].as_str().unwrap()),
                unhex(v["span_id"].as_str().unwrap()),
                v["sampled"].as_bool().unwrap(),
                v["trace_state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every trace is stored exactly when expected, with the threshold recorded in its tracestate.
async fn check(
    client: &reqwest::Client,
    s: &Server,
    decisions: &[([u8; 16], [u8; 8], bool, String)],
    sdk_kept: &HashSet<[u8; 16]>,
    unsampled: &[[u8; 16]],
    unknown: &[[u8; 16]],
) {
    for (t, _, _, _) in decisions {
        let got = stored(client, s, t).await;
        assert_eq!(
            got.is_some(),
            sdk_kept.contains(t),
            "trace {}: skein and the OpenTelemetry SDK disagree",
            hex(t)
        );
        if let Some(states) = got {
            assert_eq!(states, ["ot=th:c"], "trace {}", hex(t));
        }
    }
    for t in unsampled {
        assert_eq!(
            stored(client, s, t).await,
            None,
            "unsampled trace {} was stored",
            hex(t)
        );
    }
    for t in unknown {
        assert_eq!(
            stored(client, s, t).await,
            Some(vec!["ot=th:c,vendor=x".to_string()]),
            "trace {}",
            hex(t)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agrees_with_opentelemetry_and_honours_the_sampled_flag() {
    let decisions = otel_sdk_decisions(0.25, 3000);
    assert_eq!(decisions.len(), 3000);
    let sdk_kept: HashSet<[u8; 16]> = decisions.iter().filter(|d| d.2).map(|d| d.0).collect();
    // 25% of 3,000: mean 750, sigma 23.7; ±6 sigma.
    assert!((608..=892).contains(&sdk_kept.len()), "the SDK kept {}", sdk_kept.len());
    // The SDK wrote its threshold into what it kept.
    assert!(
        decisions.iter().filter(|d| d.2).all(|d| d.3 == "ot=th:c"),
        "{decisions:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), SETS);
    let client = reqwest::Client::new();

    // Every trace the SDK saw, sampled or not, with the SDK's tracestate and flags 0 (unknown,
    // as from an SDK that does not fill them in): only the probability decides.
    for chunk in decisions.chunks(500) {
        let spans = chunk.iter().map(|(t, sp, _, ts)| span(*t, *sp, ts, 0)).collect();
        post(&client, &s, spans).await;
    }

    // Traces the probability keeps, in requests of their own: 100 with flags saying "not
    // sampled" (0x100, HAS_IS_REMOTE set, sampled clear) must go; 100 with flags 0 must stay and
    // get the threshold recorded (every span of these requests is kept and rewritten).
    let passing = || loop {
        let id: [u8; 16] = rid();
        if kept_at_quarter(&id) {
            return id;
        }
    };
    let unsampled: Vec<[u8; 16]> = (0..100).map(|_| passing()).collect();
    let unknown: Vec<[u8; 16]> = (0..100).map(|_| passing()).collect();
    post(
        &client,
        &s,
        unsampled.iter().map(|t| span(*t, rid(), "", 0x100)).collect(),
    )
    .await;
    post(
        &client,
        &s,
        unknown.iter().map(|t| span(*t, rid(), "vendor=x", 0)).collect(),
    )
    .await;

    check(&client, &s, &decisions, &sdk_kept, &unsampled, &unknown).await;

    let m = metrics(&s).await;
    let dropped = |reason: &str| {
        value(
            &m,
            &format!("skein_head_sampling_spans_dropped_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(dropped("probability"), (3000 - sdk_kept.len()) as f64);
    assert_eq!(dropped("parent_not_sampled"), 100.0);
    assert_eq!(dropped("rate_limit"), 0.0);
    assert_eq!(
        value(&m, "skein_head_sampling_spans_kept_total"),
        (sdk_kept.len() + 100) as f64
    );
    assert_eq!(
        value(&m, "skein_head_sampling_service_probability_ppm{service=\"checkout\"}"),
        1_000_000.0
    );
    // Sampled-out spans count as accepted by the protocol, not rejected.
    assert_eq!(
        value(&m, "skein_spans_received_total{protocol=\"otlp_http_protobuf\"}"),
        3200.0
    );

    // What was acknowledged survives a crash exactly as it was answered: the WAL replay shows
    // the same traces, with the same recorded thresholds.
    s.kill9();
    let s = Server::start(dir.path(), SETS);
    check(&client, &s, &decisions, &sdk_kept, &unsampled, &unknown).await;
}
