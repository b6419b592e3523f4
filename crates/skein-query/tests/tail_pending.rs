//! Spans waiting for a tail-sampling decision, on real files: they are durable but not
//! queryable, decisions move them into the head (and blocks) or discard them, late spans follow
//! the cached decision, pending spans survive head cuts and restarts, and turning tail sampling
//! off keeps whatever was still pending.

use std::time::Duration;

use skein_model::*;
use skein_query::QueryEngine;
use skein_store::pending::PendingBounds;
use skein_store::{Store, StoreConfig};

fn span(trace: u8, id: u8) -> Span {
    Span {
        trace_id: [trace; 16],
        span_id: [id; 8],
        name: format!("op-{id}"),
        kind: SpanKind::Server,
        start_unix_nano: 1_700_000_000_000_000_000 + id as u64 * 1000,
        end_unix_nano: 1_700_000_000_000_000_000 + id as u64 * 1000 + 500,
        attributes: vec![KeyValue::string("k", "v")],
        ..Default::default()
    }
}

const WIDE: PendingBounds = PendingBounds {
    max_traces: usize::MAX,
    max_bytes: usize::MAX,
};

fn cfg() -> StoreConfig {
    StoreConfig {
        compaction_interval: Duration::from_secs(3600),
        ..StoreConfig::default()
    }
}

async fn open(dir: &std::path::Path) -> (Store, QueryEngine) {
    let store = Store::open(dir, cfg()).await.unwrap();
    store.hold_for_decisions(Some((1000, 1000)));
    (store.clone(), QueryEngine::new(store))
}

async fn span_count(q: &QueryEngine, trace: u8) -> usize {
    q.trace(&[trace; 16]).await.map(|s| s.len()).unwrap_or(0)
}

/// Decides every due trace: keep those in `keep`, drop the rest.
async fn decide_all(store: &Store, keep: &[u8]) -> Vec<u8> {
    let due = store.take_due(Duration::ZERO, WIDE, usize::MAX);
    let decisions: Vec<(TraceId, bool)> = due
        .iter()
        .map(|d| (d.trace_id, keep.contains(&d.trace_id[0])))
        .collect();
    let mut ids: Vec<u8> = due.iter().map(|d| d.trace_id[0]).collect();
    ids.sort();
    drop(due);
    let s = store.clone();
    let rx = tokio::task::spawn_blocking(move || s.decide(decisions))
        .await
        .unwrap()
        .unwrap();
    rx.await.unwrap().unwrap();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_spans_wait_then_follow_their_decision() {
    let dir = tempfile::tempdir().unwrap();
    let (store, q) = open(dir.path()).await;
    store
        .append_pending(vec![span(1, 1), span(1, 2), span(2, 1), span(3, 1)], None)
        .await
        .unwrap();
    assert_eq!(store.pending_stats().traces, 3);
    assert_eq!(span_count(&q, 1).await, 0, "undecided spans are not queryable");

    assert_eq!(decide_all(&store, &[1]).await, vec![1, 2, 3]);
    assert_eq!(span_count(&q, 1).await, 2);
    assert_eq!(span_count(&q, 2).await, 0);
    assert_eq!(store.pending_stats().traces, 0);

    // Late spans follow the cached decision without waiting.
    store.append_pending(vec![span(1, 3), span(2, 2)], None).await.unwrap();
    assert_eq!(store.pending_stats().traces, 0);
    assert_eq!(span_count(&q, 1).await, 3);
    assert_eq!(span_count(&q, 2).await, 0);

    // Into a block and back.
    store.flush().await.unwrap();
    assert_eq!(span_count(&q, 1).await, 3);
    assert_eq!(span_count(&q, 3).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_spans_survive_cuts_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, q) = open(dir.path()).await;
        store.append(vec![span(9, 1)]).await.unwrap();
        store.append_pending(vec![span(1, 1), span(2, 1)], None).await.unwrap();
        assert_eq!(decide_all(&store, &[1]).await, vec![1, 2]);
        store.append_pending(vec![span(3, 1), span(4, 1)], None).await.unwrap();
        // Trace 4 is being decided when the head is cut: it must still be carried.
        let due: Vec<_> = store
            .take_due(Duration::ZERO, WIDE, usize::MAX)
            .into_iter()
            .filter(|d| d.trace_id[0] == 4)
            .collect();
        assert_eq!(due.len(), 1);
        store.flush().await.unwrap();
        // The old segments are deleted once the block is written; traces 3 and 4 are pending
        // and live on in the new segment's snapshot.
        assert_eq!(span_count(&q, 1).await, 1);
        store.append_pending(vec![span(3, 2)], None).await.unwrap();
        assert_eq!(store.pending_stats().spans, 3);
        // "Crash": drop the store without a shutdown; only what is on disk remains.
    }
    {
        let (store, q) = open(dir.path()).await;
        let stats = store.pending_stats();
        assert_eq!(
            (stats.traces, stats.spans),
            (2, 3),
            "pending traces are restored, not forgotten"
        );
        assert_eq!(span_count(&q, 1).await, 1);
        assert_eq!(span_count(&q, 2).await, 0);
        assert_eq!(span_count(&q, 9).await, 1);
        // Decisions made before the crash are remembered: late spans still follow them.
        store.append_pending(vec![span(2, 7), span(1, 7)], None).await.unwrap();
        assert_eq!(span_count(&q, 1).await, 2);
        assert_eq!(span_count(&q, 2).await, 0);
        assert_eq!(decide_all(&store, &[3]).await, vec![3, 4]);
        assert_eq!(span_count(&q, 3).await, 2);
        assert_eq!(span_count(&q, 4).await, 0);
    }
    let (_store, q) = open(dir.path()).await;
    assert_eq!(
        span_count(&q, 3).await,
        2,
        "a decision made after replay is durable too"
    );
    assert_eq!(span_count(&q, 4).await, 0);
    assert_eq!(span_count(&q, 1).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_tail_sampling_off_keeps_what_was_pending() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _q) = open(dir.path()).await;
        store.append_pending(vec![span(5, 1), span(5, 2)], None).await.unwrap();
    }
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    assert_eq!(store.pending_stats().spans, 2);
    store.hold_for_decisions(None);
    assert_eq!(store.pending_stats().spans, 0);
    assert_eq!(span_count(&q, 5).await, 2);
    store.flush().await.unwrap();
    assert_eq!(span_count(&q, 5).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_rotates_when_everything_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _q) = open(dir.path()).await;
    for round in 0..3u8 {
        store.append_pending(vec![span(10 + round, 1)], None).await.unwrap();
        decide_all(&store, &[]).await;
        // The same cut the head's age triggers, forced.
        store.flush().await.unwrap();
    }
    store.append_pending(vec![span(20, 1)], None).await.unwrap();
    let segments: Vec<_> = std::fs::read_dir(dir.path().join("wal")).unwrap().collect();
    assert!(
        segments.len() <= 2,
        "old segments holding only dropped spans are deleted; found {}",
        segments.len()
    );
    assert_eq!(store.stats().blocks, 0, "no block is written for an empty head");
    assert_eq!(store.pending_stats().traces, 1);
}
