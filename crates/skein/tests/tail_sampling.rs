//! Tail sampling through the real server: a mix of errors, slow traces and bulk goes in over
//! OTLP/HTTP; every error and slow trace is kept whole, the bulk at the configured rate (within
//! statistical bounds, each kept trace complete even when its spans came in separate requests),
//! late spans follow their trace's decision, and traces still waiting for a decision survive a
//! SIGKILL and are decided after the restart.

mod common;

use std::time::Duration;

use common::{eventually, hex, metric, metrics, post_otlp, rid, Server};
use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};

const POLICIES: &str = r#"sampling.tail.policies=[
  {name = "errors", type = "status_code", status_code = {status_codes = ["ERROR"]}},
  {name = "slow", type = "latency", latency = {threshold_ms = 500}},
  {name = "bulk", type = "probabilistic", probabilistic = {sampling_percentage = 10.0}},
]"#;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Error,
    Slow,
    Bulk,
}

struct Trace {
    id: [u8; 16],
    root: [u8; 8],
    kind: Kind,
    start: u64,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn new_trace(kind: Kind) -> Trace {
    Trace {
        id: rid(),
        root: rid(),
        kind,
        start: now_ns(),
    }
}

fn span(t: &Trace, id: [u8; 8], parent: Option<[u8; 8]>, name: &str, off_ms: u64, dur_ms: u64, err: bool) -> Span {
    Span {
        trace_id: t.id.to_vec(),
        span_id: id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: name.into(),
        kind: if parent.is_none() { 2 } else { 3 },
        start_time_unix_nano: t.start + off_ms * 1_000_000,
        end_time_unix_nano: t.start + (off_ms + dur_ms) * 1_000_000,
        status: err.then(|| Status {
            code: status::StatusCode::Error as i32,
            message: "card declined".into(),
        }),
        ..Default::default()
    }
}

/// The root span, and the two children (one of them failing for error traces).
fn root_span(t: &Trace) -> Span {
    let dur = if t.kind == Kind::Slow { 800 } else { 20 };
    span(t, t.root, None, "GET /checkout", 0, dur, false)
}

fn child_spans(t: &Trace) -> Vec<Span> {
    vec![
        span(t, rid(), Some(t.root), "charge", 2, 10, t.kind == Kind::Error),
        span(t, rid(), Some(t.root), "reserve", 3, 5, false),
    ]
}

async fn span_count(client: &reqwest::Client, s: &Server, id: &[u8; 16]) -> usize {
    common::jaeger_spans(client, s, id).await.map_or(0, |spans| spans.len())
}

/// Waits until nothing is buffered: every trace sent so far has been decided.
async fn all_decided(s: &Server) {
    eventually(
        "every buffered trace to be decided",
        Duration::from_secs(120),
        || async {
            let m = metrics(s).await;
            (metric(&m, "skein_tail_sampling_buffered_traces") == Some(0.0)).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_errors_and_slow_traces_and_a_fair_share_of_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["sampling.tail.decision_wait=1s", POLICIES]);
    let client = reqwest::Client::new();

    let mut traces: Vec<Trace> = Vec::new();
    traces.extend((0..150).map(|_| new_trace(Kind::Error)));
    traces.extend((0..100).map(|_| new_trace(Kind::Slow)));
    traces.extend((0..3000).map(|_| new_trace(Kind::Bulk)));
    fastrand::shuffle(&mut traces);

    // Children first, roots in the next request: a decision covers spans from both. Each
    // chunk's roots follow its children at once; with all children sent first, a slow machine
    // could pass the 1-s wait before the roots arrived.
    for (i, chunk) in traces.chunks(250).enumerate() {
        post_otlp(&client, &s, "checkout", chunk.iter().flat_map(child_spans).collect()).await;
        if i == 0 {
            let m = metrics(&s).await;
            assert!(
                metric(&m, "skein_tail_sampling_buffered_traces").unwrap_or(0.0) > 0.0,
                "spans wait for a decision: {m}"
            );
        }
        post_otlp(&client, &s, "checkout", chunk.iter().map(root_span).collect()).await;
    }
    all_decided(&s).await;

    let mut kept_bulk = Vec::new();
    let mut dropped_bulk = Vec::new();
    for t in &traces {
        let n = span_count(&client, &s, &t.id).await;
        match t.kind {
            Kind::Error | Kind::Slow => assert_eq!(n, 3, "{:?} trace {} must be kept whole", t.kind, hex(&t.id)),
            Kind::Bulk => {
                assert!(
                    n == 0 || n == 3,
                    "bulk trace {} is partly kept ({n} of 3 spans)",
                    hex(&t.id)
                );
                if n == 3 {
                    kept_bulk.push(t);
                } else {
                    dropped_bulk.push(t);
                }
            }
        }
    }
    // 10% of 3,000: mean 300, standard deviation 16.4; ±6 sigma never flakes.
    assert!(
        (200..=400).contains(&kept_bulk.len()),
        "kept {} of 3000 bulk traces at 10%",
        kept_bulk.len()
    );

    // Late spans follow their trace's decision, at once (no second wait).
    let late: Vec<&Trace> = traces
        .iter()
        .filter(|t| t.kind == Kind::Error)
        .take(10)
        .chain(kept_bulk.iter().copied().take(10))
        .chain(dropped_bulk.iter().copied().take(10))
        .collect();
    post_otlp(
        &client,
        &s,
        "checkout",
        late.iter()
            .map(|t| span(t, rid(), Some(t.root), "late", 30, 1, false))
            .collect(),
    )
    .await;
    for t in &late {
        let kept = t.kind == Kind::Error || kept_bulk.iter().any(|k| k.id == t.id);
        assert_eq!(
            span_count(&client, &s, &t.id).await,
            if kept { 4 } else { 0 },
            "late span of {:?} trace {} (kept: {kept})",
            t.kind,
            hex(&t.id)
        );
    }

    let m = metrics(&s).await;
    assert_eq!(
        metric(&m, "skein_tail_sampling_late_spans_total{decision=\"sampled\"}"),
        Some(20.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "skein_tail_sampling_late_spans_total{decision=\"dropped\"}"),
        Some(10.0),
        "{m}"
    );
    for policy in ["errors", "slow", "bulk"] {
        assert!(
            m.contains(&format!("policy=\"{policy}\"")),
            "per-policy metrics for {policy}: {m}"
        );
    }
    assert!(s.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_waiting_for_a_decision_survive_sigkill_and_are_decided_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let errors_only =
        r#"sampling.tail.policies=[{name = "errors", type = "status_code", status_code = {status_codes = ["ERROR"]}}]"#;
    // A long wait: nothing is decided before the kill. A short head age: the WAL rotates while
    // the spans wait, so they must be carried into the new segment.
    let s = Server::start(
        dir.path(),
        &["sampling.tail.decision_wait=10m", "store.head_max_age=1s", errors_only],
    );
    let client = reqwest::Client::new();
    let errors: Vec<Trace> = (0..40).map(|_| new_trace(Kind::Error)).collect();
    let bulk: Vec<Trace> = (0..40).map(|_| new_trace(Kind::Bulk)).collect();
    let all: Vec<&Trace> = errors.iter().chain(&bulk).collect();
    post_otlp(
        &client,
        &s,
        "checkout",
        all.iter().flat_map(|t| child_spans(t)).collect(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    post_otlp(&client, &s, "checkout", all.iter().map(|t| root_span(t)).collect()).await;
    assert_eq!(span_count(&client, &s, &errors[0].id).await, 0, "not decided yet");
    s.kill9();

    let s = Server::start(dir.path(), &["sampling.tail.decision_wait=1s", errors_only]);
    all_decided(&s).await;
    for t in &errors {
        assert_eq!(
            span_count(&client, &s, &t.id).await,
            3,
            "error trace {} after restart",
            hex(&t.id)
        );
    }
    for t in &bulk {
        assert_eq!(
            span_count(&client, &s, &t.id).await,
            0,
            "bulk trace {} is dropped",
            hex(&t.id)
        );
    }
    assert!(s.stop());
}
