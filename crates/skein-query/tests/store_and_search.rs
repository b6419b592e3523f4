//! The store and query engine on real files: blocks round-trip spans exactly, search agrees
//! between head and blocks, compaction dedupes, retention drops by age and size, and a restart
//! finds everything.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use skein_model::*;
use skein_query::{Asked, QueryEngine, TraceQuery};
use skein_store::{Store, StoreConfig};

fn rid<const N: usize>() -> [u8; N] {
    std::array::from_fn(|_| fastrand::u8(1..))
}

struct Gen {
    resources: Vec<Arc<Resource>>,
    scope: Arc<Scope>,
}

impl Gen {
    fn new() -> Gen {
        let resources = ["frontend", "checkout", "payment", "db-proxy"]
            .iter()
            .map(|s| {
                Arc::new(Resource {
                    attributes: vec![
                        KeyValue::string("service.name", *s),
                        KeyValue::string("host.name", format!("{s}-1")),
                        KeyValue::new("process.pid", AnyValue::Int(42)),
                    ],
                    dropped_attributes_count: 0,
                })
            })
            .collect();
        let scope = Arc::new(Scope {
            name: "test-lib".into(),
            version: "1.0".into(),
            ..Default::default()
        });
        Gen { resources, scope }
    }

    /// A trace: frontend root → checkout → payment (error when `fail`), durations in ms.
    fn trace(&self, start: u64, dur_ms: u64, fail: bool) -> Vec<Span> {
        let t = rid::<16>();
        let ids: Vec<[u8; 8]> = (0..4).map(|_| rid()).collect();
        let mk = |i: usize, parent: Option<usize>, name: &str, kind: SpanKind, off_ms: u64, d_ms: u64| Span {
            trace_id: t,
            span_id: ids[i],
            parent_span_id: parent.map(|p| ids[p]).unwrap_or([0; 8]),
            name: name.into(),
            kind,
            start_unix_nano: start + off_ms * 1_000_000,
            end_unix_nano: start + (off_ms + d_ms) * 1_000_000,
            attributes: vec![
                KeyValue::string("http.request.method", "POST"),
                KeyValue::new("http.response.status_code", AnyValue::Int(if fail { 500 } else { 200 })),
                KeyValue::string("customer.tier", if fail { "gold" } else { "free" }),
                KeyValue::new("retry", AnyValue::Bool(false)),
                KeyValue::new("ratio", AnyValue::Double(0.25)),
                KeyValue::new(
                    "tags",
                    AnyValue::Array(vec![AnyValue::String("a".into()), AnyValue::Int(1)]),
                ),
            ],
            events: vec![Event {
                time_unix_nano: start + off_ms * 1_000_000 + 1,
                name: "work".into(),
                attributes: vec![KeyValue::new("n", AnyValue::Int(i as i64))],
                dropped_attributes_count: 0,
            }],
            links: if i == 3 {
                vec![Link {
                    trace_id: rid(),
                    span_id: rid(),
                    trace_state: "k=v".into(),
                    attributes: vec![KeyValue::string("l", "1")],
                    dropped_attributes_count: 0,
                    flags: 1,
                }]
            } else {
                Vec::new()
            },
            status: if fail && i == 2 {
                Status {
                    code: StatusCode::Error,
                    message: "card declined".into(),
                }
            } else {
                Status::default()
            },
            resource: self.resources[i].clone(),
            scope: self.scope.clone(),
            flags: 1,
            trace_state: String::new(),
            dropped_attributes_count: 0,
            dropped_events_count: 0,
            dropped_links_count: 0,
        };
        vec![
            mk(0, None, "GET /checkout", SpanKind::Server, 0, dur_ms),
            mk(1, Some(0), "checkout", SpanKind::Server, 1, dur_ms - 2),
            mk(2, Some(1), "charge", SpanKind::Client, 2, dur_ms / 2),
            mk(3, Some(1), "SELECT stock", SpanKind::Client, 3, 1),
        ]
    }
}

/// Dependencies as (parent, child, calls), comparable with expected lists.
fn deps(d: Vec<skein_query::Dependency>) -> Vec<(String, String, u64)> {
    d.into_iter().map(|d| (d.parent, d.child, d.call_count)).collect()
}

/// All the calls of some dependencies.
fn total_calls(d: Vec<skein_query::Dependency>) -> u64 {
    d.iter().map(|d| d.call_count).sum()
}

fn sorted(mut v: Vec<Span>) -> Vec<Span> {
    v.sort_by_key(|s| (s.start_unix_nano, s.span_id));
    for s in &mut v {
        s.attributes.sort_by(|a, b| a.key.cmp(&b.key));
    }
    v
}

fn cfg() -> StoreConfig {
    StoreConfig {
        compaction_interval: Duration::from_secs(3600),
        ..StoreConfig::default()
    }
}

/// Seeds this thread's `fastrand` afresh and prints the seed, to replay a failure.
fn random_seed() {
    let seed = fastrand::u64(..);
    fastrand::seed(seed);
    eprintln!("fastrand seed {seed}");
}

fn now() -> u64 {
    skein_store::now_unix_nano()
}

const DAY: u64 = 86_400 * 1_000_000_000;

/// `cfg()` keeping blocks `days` days and, unless 0, at most `max_bytes`.
fn retaining(days: u64, max_bytes: u64) -> StoreConfig {
    StoreConfig {
        retention: Duration::from_secs(days * 86_400),
        retention_max_bytes: max_bytes,
        ..cfg()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_round_trip_and_search_agrees_with_head() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let base = now() - 600 * 1_000_000_000;
    let mut traces = Vec::new();
    for i in 0..60u64 {
        let t = g.trace(base + i * 1_000_000_000, 20 + i, i % 10 == 0);
        store.append(t.clone()).await.unwrap();
        traces.push(t);
    }
    let queries = vec![
        TraceQuery {
            service: Some("payment".into()),
            limit: 100,
            ..Default::default()
        },
        TraceQuery {
            error: Some(true),
            limit: 100,
            ..Default::default()
        },
        TraceQuery {
            attributes: vec![("error".into(), "true".into())],
            limit: 100,
            ..Default::default()
        },
        TraceQuery {
            attributes: vec![("http.response.status_code".into(), "500".into())],
            limit: 100,
            ..Default::default()
        },
        TraceQuery {
            attributes: vec![("customer.tier".into(), "gold".into())],
            limit: 100,
            ..Default::default()
        },
        TraceQuery {
            attributes: vec![("host.name".into(), "payment-1".into())],
            limit: 100,
            ..Default::default()
        },
        TraceQuery {
            service: Some("checkout".into()),
            operation: Some("checkout".into()),
            span_kind: Some(SpanKind::Server),
            limit: 100,
            ..Default::default()
        },
        TraceQuery {
            min_duration_nano: Some(70_000_000),
            limit: 100,
            ..Default::default()
        },
        TraceQuery {
            max_duration_nano: Some(2_000_000),
            limit: 100,
            ..Default::default()
        },
        TraceQuery {
            start_min: Some(base + 10_000_000_000),
            start_max: Some(base + 19_999_999_999),
            limit: 100,
            ..Default::default()
        },
        // A window cutting through the block (its start column is read) and one holding all
        // of it (not read), each alone and with another condition.
        TraceQuery {
            service: Some("payment".into()),
            start_min: Some(base + 10_000_000_000),
            start_max: Some(base + 19_999_999_999),
            limit: 100,
            ..Default::default()
        },
        TraceQuery {
            start_min: Some(base - 1_000_000_000),
            start_max: Some(now()),
            limit: 100,
            ..Default::default()
        },
        TraceQuery {
            service: Some("payment".into()),
            start_min: Some(base - 1_000_000_000),
            start_max: Some(now()),
            limit: 100,
            ..Default::default()
        },
        TraceQuery {
            service: Some("frontend".into()),
            limit: 7,
            ..Default::default()
        },
        TraceQuery {
            service: Some("nope".into()),
            limit: 100,
            ..Default::default()
        },
        // Few-valued string columns are compared as dictionary indexes in blocks.
        TraceQuery {
            attributes: vec![("http.request.method".into(), "POST".into())],
            limit: 100,
            ..Default::default()
        },
        TraceQuery {
            attributes: vec![("http.request.method".into(), "GET".into())],
            limit: 100,
            ..Default::default()
        },
        TraceQuery {
            service: Some("checkout".into()),
            operation: Some("charge".into()),
            limit: 100,
            ..Default::default()
        },
        // Two resource conditions on one span, met and not met (in blocks each distinct
        // resource is matched once per condition).
        TraceQuery {
            attributes: vec![
                ("host.name".into(), "payment-1".into()),
                ("process.pid".into(), "42".into()),
            ],
            limit: 100,
            ..Default::default()
        },
        TraceQuery {
            attributes: vec![
                ("host.name".into(), "payment-1".into()),
                ("process.pid".into(), "43".into()),
            ],
            limit: 100,
            ..Default::default()
        },
    ];
    let in_head: Vec<Vec<TraceId>> = {
        let mut v = Vec::new();
        for qq in &queries {
            v.push(q.search(qq).await.unwrap().iter().map(|s| s.trace_id).collect());
        }
        v
    };
    // Expected answers computed directly from the spans.
    let expect = |qq: &TraceQuery| -> Vec<TraceId> {
        let mut hits: Vec<&Vec<Span>> = traces.iter().filter(|t| t.iter().any(|s| qq.matches_span(s))).collect();
        hits.sort_by(|a, b| {
            b[0].start_unix_nano
                .cmp(&a[0].start_unix_nano)
                .then(a[0].trace_id.cmp(&b[0].trace_id))
        });
        hits.iter().take(qq.limit).map(|t| t[0].trace_id).collect()
    };
    for (qq, got) in queries.iter().zip(&in_head) {
        assert_eq!(got, &expect(qq), "head answer for {qq:?}");
    }
    assert_eq!(in_head[0].len(), 60);
    assert_eq!(in_head[1].len(), 6);
    assert_eq!(in_head[10].len(), 10);
    assert_eq!((in_head[11].len(), in_head[12].len()), (60, 60));
    assert_eq!(in_head[13].len(), 7);
    assert!(in_head[14].is_empty());
    assert_eq!((in_head[15].len(), in_head[16].len(), in_head[17].len()), (60, 0, 0));
    assert_eq!((in_head[18].len(), in_head[19].len()), (60, 0));

    store.flush().await.unwrap();
    assert_eq!(store.stats().blocks, 1);
    assert_eq!(store.stats().head_spans, 0);
    for (qq, want) in queries.iter().zip(&in_head) {
        let got: Vec<TraceId> = q.search(qq).await.unwrap().iter().map(|s| s.trace_id).collect();
        assert_eq!(&got, want, "block answer differs from head answer for {qq:?}");
    }
    // Every span comes back from the block exactly as it went in.
    for t in &traces {
        assert_eq!(sorted(q.trace(&t[0].trace_id).await.unwrap()), sorted(t.clone()));
    }
    // Summaries come from the block's summary table.
    let s = q
        .search(&TraceQuery {
            error: Some(true),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (
            s[0].span_count,
            s[0].error_count,
            s[0].root_service.as_str(),
            s[0].root_name.as_str()
        ),
        (4, 1, "frontend", "GET /checkout")
    );
    assert_eq!(s[0].services.get("checkout"), Some(&1));

    // Services, operations and dependencies from block meta and columns.
    assert_eq!(q.services(), vec!["checkout", "db-proxy", "frontend", "payment"]);
    assert_eq!(
        q.operations("payment", None),
        vec![("charge".to_string(), SpanKind::Client)]
    );
    assert!(q.operations("payment", Some(SpanKind::Server)).is_empty());
    let deps = q.dependencies(base - 1, now()).await.unwrap();
    let d: Vec<(String, String, u64)> = deps.into_iter().map(|d| (d.parent, d.child, d.call_count)).collect();
    assert_eq!(
        d,
        vec![
            ("checkout".into(), "db-proxy".into(), 60),
            ("checkout".into(), "payment".into(), 60),
            ("frontend".into(), "checkout".into(), 60)
        ]
    );

    // A restart reads the block back; nothing is replayed twice.
    store.shutdown().await.unwrap();
    drop(store);
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    assert_eq!(store.stats().head_spans, 0);
    assert_eq!(store.stats().block_spans, 240);
    assert_eq!(q.search(&queries[0]).await.unwrap().len(), 60);
}

/// Resource conditions in a block of several row groups, each read in several batches: the
/// matcher remembers which resources match per row-group dictionary, and must not carry an
/// answer over to another row group's dictionary, whose keys mean other resources. Two
/// conditions on keys in the generic column share one decoding of each row's attributes.
#[tokio::test]
async fn resource_conditions_hold_across_batches_and_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let resource = |service: &str, env: &str| {
        Arc::new(Resource {
            attributes: vec![
                KeyValue::string("service.name", service),
                KeyValue::string("deployment.environment", env),
            ],
            dropped_attributes_count: 0,
        })
    };
    let base = now() - 600 * 1_000_000_000;
    let mut traces = Vec::new();
    // 40,000 spans: three level-0 row groups of up to 16 Ki rows, read 8 Ki rows a batch.
    for i in 0..10_000u64 {
        // Several environments of similar counts, so each row group's dictionary meets them in
        // its own order.
        let env = ["staging", "qa", "dev", "perf"]
            .get(i as usize % 10)
            .unwrap_or(&"production");
        let mut t = g.trace(base + i * 1_000_000, 20, false);
        for s in &mut t {
            let service = s.resource.service_name().to_string();
            s.resource = resource(&service, if service == "payment" { env } else { "production" });
        }
        // Two rare keys, left to the generic column, which two conditions then both test.
        if i % 100 == 3 {
            t[1].attributes.push(KeyValue::string("feature", "dark-mode"));
            t[1].attributes
                .push(KeyValue::new("cohort", AnyValue::Int(i as i64 % 7)));
        }
        traces.push(t);
    }
    for chunk in traces.chunks(500) {
        store.append(chunk.concat()).await.unwrap();
    }
    store.flush().await.unwrap();
    assert_eq!(store.stats().blocks, 1);
    let groups: Vec<i64> = {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let block = std::fs::read_dir(dir.path().join("blocks"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let reader = SerializedFileReader::new(std::fs::File::open(block.join("data.parquet")).unwrap()).unwrap();
        reader.metadata().row_groups().iter().map(|g| g.num_rows()).collect()
    };
    assert!(groups.len() >= 2 && groups[0] > 8192, "row groups of {groups:?} rows");
    let queries = [
        vec![("deployment.environment", "staging")],
        vec![("deployment.environment", "production")],
        vec![("deployment.environment", "staging"), ("http.request.method", "POST")],
        vec![("deployment.environment", "staging"), ("service.name", "checkout")],
        vec![("deployment.environment", "qa")],
        vec![("deployment.environment", "perf"), ("service.name", "payment")],
        vec![("deployment.environment", "canary")],
        vec![("feature", "dark-mode"), ("cohort", "3")],
        vec![("feature", "dark-mode"), ("cohort", "9")],
        vec![("cohort", "3"), ("deployment.environment", "production")],
    ];
    for attrs in queries {
        let qq = TraceQuery {
            attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            limit: 1_500,
            ..Default::default()
        };
        let mut want: Vec<TraceId> = traces
            .iter()
            .filter(|t| t.iter().any(|s| qq.matches_span(s)))
            .map(|t| t[0].trace_id)
            .collect();
        let mut got: Vec<TraceId> = q.search(&qq).await.unwrap().iter().map(|s| s.trace_id).collect();
        if want.len() <= 1_500 {
            want.sort();
            got.sort();
            assert_eq!(got, want, "{attrs:?}");
        } else {
            assert_eq!(got.len(), 1_500, "{attrs:?}");
        }
        if attrs == [("deployment.environment", "staging")] {
            assert_eq!(want.len(), 1_000, "a tenth of the traces are staging ones");
        }
        if attrs == [("feature", "dark-mode"), ("cohort", "3")] {
            assert_eq!(want.len(), 15, "{attrs:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_and_dedupes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let base = now() - 60 * 1_000_000_000;
    let mut all = Vec::new();
    for b in 0..4u64 {
        let mut batch = Vec::new();
        for i in 0..50u64 {
            batch.extend(g.trace(base + (b * 50 + i) * 10_000_000, 30, false));
        }
        store.append(batch.clone()).await.unwrap();
        store.flush().await.unwrap();
        all.push(batch);
    }
    // A client retry: the same spans again, in their own block.
    store.append(all[1].clone()).await.unwrap();
    // A trace split across two blocks: half its spans now, half later.
    let split = g.trace(base, 40, true);
    store.append(split[..2].to_vec()).await.unwrap();
    store.flush().await.unwrap();
    store.append(split[2..].to_vec()).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.stats().blocks, 6);
    let before = store.stats().block_spans;
    assert_eq!(before, 4 * 200 + 200 + 4);

    // Duplicate spans are merged at query time already.
    assert_eq!(q.trace(&all[1][0].trace_id).await.unwrap().len(), 4);

    let merged = store.compact_once().await.unwrap();
    assert_eq!(merged, 6);
    let st = store.stats();
    assert_eq!(st.blocks, 1);
    assert_eq!(st.block_spans, 4 * 200 + 4, "the retried copies are gone");
    for batch in &all {
        for t in batch.chunks(4) {
            assert_eq!(sorted(q.trace(&t[0].trace_id).await.unwrap()), sorted(t.to_vec()));
        }
    }
    assert_eq!(
        sorted(q.trace(&split[0].trace_id).await.unwrap()),
        sorted(split.clone())
    );
    one_failed_trace_of_four_spans(&q).await;
    // Nothing more to do.
    assert_eq!(store.compact_once().await.unwrap(), 0);
    // Deleted inputs are gone from disk and a restart sees one block.
    store.shutdown().await.unwrap();
    drop(store);
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    assert_eq!(store.stats().blocks, 1);
    assert_eq!(std::fs::read_dir(dir.path().join("blocks")).unwrap().count(), 1);
}

/// A wide merge: more inputs than one merge takes, each streamed in several batches, the output
/// written in several flushes, a retried block's duplicates dropped, and a trace whose spans
/// are spread over four inputs kept whole with its parents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_of_many_blocks_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let base = now() - 600 * 1_000_000_000;
    let spread = g.trace(base, 40, true);
    let mut all = Vec::new();
    for b in 0..20u64 {
        let mut batch = Vec::new();
        for i in 0..500u64 {
            batch.extend(g.trace(base + (b * 500 + i) * 1_000_000, 30, false));
        }
        if let Some(s) = spread.get(b as usize) {
            batch.push(s.clone());
        }
        store.append(batch.clone()).await.unwrap();
        store.flush().await.unwrap();
        all.push(batch);
    }
    // A client retry of the third block, cut as a block of its own.
    store.append(all[2].clone()).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.stats().blocks, 21);
    let unique = 20 * 2000 + 4;

    // The oldest 16 merge first; the rest (and that output) next.
    assert_eq!(store.compact_once().await.unwrap(), 16);
    assert_eq!(store.stats().blocks, 6);
    assert_eq!(store.compact_once().await.unwrap(), 6);
    assert_eq!(store.compact_once().await.unwrap(), 0);
    let st = store.stats();
    assert_eq!(
        (st.blocks, st.block_spans),
        (1, unique as u64),
        "one block, no duplicate"
    );

    for batch in &all {
        for t in batch.chunks(4).step_by(37) {
            if t[0].trace_id == spread[0].trace_id {
                continue;
            }
            assert_eq!(sorted(q.trace(&t[0].trace_id).await.unwrap()), sorted(t.to_vec()));
        }
    }
    assert_eq!(
        sorted(q.trace(&spread[0].trace_id).await.unwrap()),
        sorted(spread.clone())
    );
    one_failed_trace_of_four_spans(&q).await;
}

/// Searching for errors finds one trace, summarised whole (one summary for a trace whose
/// spans were once in several blocks).
async fn one_failed_trace_of_four_spans(q: &QueryEngine) {
    let s = q
        .search(&TraceQuery {
            error: Some(true),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].span_count, s[0].root_name.as_str()), (4, "GET /checkout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_age_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), retaining(2, 0)).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let n = now();
    // Blocks of traces 5, 3, 1 and 0 days old.
    let mut ids = Vec::new();
    for age in [5, 3, 1, 0] {
        let t = g.trace(n - age * DAY - 1_000_000_000, 10, false);
        ids.push(t[0].trace_id);
        store.append(t).await.unwrap();
        store.flush().await.unwrap();
    }
    assert_eq!(store.stats().blocks, 4);
    assert_eq!(store.enforce_retention(n).await.unwrap(), 2);
    assert!(q.trace(&ids[0]).await.unwrap().is_empty());
    assert!(q.trace(&ids[1]).await.unwrap().is_empty());
    assert_eq!(q.trace(&ids[2]).await.unwrap().len(), 4);
    store.shutdown().await.unwrap();
    drop(store);

    // By size: cap below two blocks' worth keeps only the newest.
    let one = std::fs::read_dir(dir.path().join("blocks")).unwrap().count();
    assert_eq!(one, 2);
    let store = Store::open(dir.path(), retaining(30, 1)).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let newest = store
        .snapshot()
        .blocks
        .iter()
        .map(|b| b.meta.total_bytes())
        .max()
        .unwrap();
    drop(q);
    let c2 = StoreConfig {
        retention_max_bytes: newest + 1,
        ..store.config().clone()
    };
    store.shutdown().await.unwrap();
    drop(store);
    let store = Store::open(dir.path(), c2).await.unwrap();
    let q = QueryEngine::new(store.clone());
    assert_eq!(store.enforce_retention(n).await.unwrap(), 1);
    assert!(
        q.trace(&ids[2]).await.unwrap().is_empty(),
        "oldest block dropped for size"
    );
    assert_eq!(q.trace(&ids[3]).await.unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_replay_after_unclean_stop_and_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gen::new();
    let t = g.trace(now() - 1_000_000_000, 10, false);
    {
        let store = Store::open(dir.path(), cfg()).await.unwrap();
        store.append(t.clone()).await.unwrap();
        // Dropped without shutdown: only the WAL has it.
    }
    // Simulate a torn write after the last good record.
    let wal = dir.path().join("wal");
    let mut segs: Vec<_> = std::fs::read_dir(&wal).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    let with_data = segs
        .iter()
        .find(|p| std::fs::metadata(p).unwrap().len() > 0)
        .unwrap()
        .clone();
    let mut bytes = std::fs::read(&with_data).unwrap();
    let good = bytes.len();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 5]);
    std::fs::write(&with_data, &bytes).unwrap();

    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    assert_eq!(sorted(q.trace(&t[0].trace_id).await.unwrap()), sorted(t.clone()));
    assert_eq!(
        std::fs::metadata(&with_data).unwrap().len() as usize,
        good,
        "torn tail truncated"
    );
}

/// The deepest attribute values ingest accepts (key-value lists inside key-value lists, the
/// most protobuf messages per level) read back from a block, in span, event, link and resource
/// attributes; one level more is refused at ingest. Ingest once allowed 64 levels, and a value
/// 50 arrays deep made its whole block unreadable.
#[tokio::test]
async fn values_nested_as_deep_as_ingest_accepts_read_back_from_blocks() {
    use skein_model::otlp::{wire, wire_decode};
    let nested = |levels: u32| {
        let mut v = AnyValue::Int(7);
        for _ in 1..levels {
            v = AnyValue::KvList(vec![KeyValue::new("k", v)]);
        }
        v
    };
    let deepest = nested(wire_decode::MAX_VALUE_DEPTH);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let mut trace = Gen::new().trace(now() - 60_000_000_000, 10, false);
    let span = &mut trace[0];
    span.attributes.push(KeyValue::new("deep", deepest.clone()));
    span.events.push(Event {
        time_unix_nano: span.start_unix_nano,
        name: "deep".into(),
        attributes: vec![KeyValue::new("deep", deepest.clone())],
        dropped_attributes_count: 0,
    });
    span.links.push(Link {
        trace_id: [9; 16],
        span_id: [9; 8],
        attributes: vec![KeyValue::new("deep", deepest.clone())],
        ..Default::default()
    });
    let mut resource = (*span.resource).clone();
    resource.attributes.push(KeyValue::new("deep", deepest.clone()));
    span.resource = Arc::new(resource);

    let request = |spans: &[Span]| {
        let mut bytes = Vec::new();
        wire::export_request(spans, &mut bytes);
        wire_decode::decode_request(&bytes)
    };
    let mut too_deep = trace[0].clone();
    too_deep
        .attributes
        .push(KeyValue::new("deeper", nested(wire_decode::MAX_VALUE_DEPTH + 1)));
    let err = request(&[too_deep]).expect_err("one level more is refused");
    assert!(err.to_string().contains("nested too deeply"), "{err}");

    let decoded = request(&trace).expect("accepted");
    assert!(decoded.rejected.is_empty());
    store.append(decoded.batch.spans).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.snapshot().blocks.len(), 1);
    let read = q.trace(&trace[0].trace_id).await.unwrap();
    let root = read
        .iter()
        .find(|s| s.span_id == trace[0].span_id)
        .expect("read back from the block");
    let deep = |kvs: &[KeyValue]| kvs.iter().find(|kv| kv.key == "deep").map(|kv| kv.value.clone());
    assert_eq!(deep(&root.attributes), Some(deepest.clone()));
    let event = root.events.iter().find(|e| e.name == "deep").unwrap();
    assert_eq!(deep(&event.attributes), Some(deepest.clone()));
    let link = root.links.iter().find(|l| l.trace_id == [9; 16]).unwrap();
    assert_eq!(deep(&link.attributes), Some(deepest.clone()));
    assert_eq!(deep(&root.resource.attributes), Some(deepest));
    assert_eq!(read.len(), trace.len());
}

/// A service whose span names carry ids: each block lists its first
/// `MAX_OPERATIONS_PER_SERVICE` operations and marks the list capped, and a search by
/// operation still finds spans whose names did not make the list, before and after compaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operation_lists_of_services_with_ids_in_span_names_are_capped() {
    use skein_store::block::MAX_OPERATIONS_PER_SERVICE;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let base = now() - 60 * 1_000_000_000;
    let mut traces = Vec::new();
    for block in 0..2u64 {
        let mut batch = Vec::new();
        for i in block * 1500..(block + 1) * 1500 {
            let mut t = g.trace(base + i * 1_000_000, 10, false);
            t[3].name = format!("SELECT stock {i}"); // service db-proxy
            batch.extend(t.clone());
            traces.push(t);
        }
        store.append(batch).await.unwrap();
        store.flush().await.unwrap();
    }
    let check = |stage: &str, blocks: usize| {
        let snap = store.snapshot();
        assert_eq!(snap.blocks.len(), blocks, "{stage}");
        let mut listed = std::collections::HashSet::new();
        for b in &snap.blocks {
            assert_eq!(b.meta.services["db-proxy"].len(), MAX_OPERATIONS_PER_SERVICE, "{stage}");
            assert_eq!(
                b.meta.operations_capped.iter().collect::<Vec<_>>(),
                ["db-proxy"],
                "{stage}"
            );
            assert_eq!(
                b.meta.services["frontend"],
                [("GET /checkout".to_string(), SpanKind::Server as u8)],
                "{stage}"
            );
            listed.extend(b.meta.services["db-proxy"].iter().map(|(n, _)| n.clone()));
        }
        // Spans whose names no meta lists, searched by service and operation and by operation.
        let unlisted: Vec<&Vec<Span>> = traces.iter().filter(|t| !listed.contains(&t[3].name)).take(3).collect();
        assert_eq!(unlisted.len(), 3, "{stage}");
        unlisted
            .into_iter()
            .map(|t| (t[0].trace_id, t[3].name.clone()))
            .collect::<Vec<_>>()
    };
    for (stage, blocks) in [("level 0", 2), ("compacted", 1)] {
        if blocks == 1 {
            assert_eq!(store.compact_once().await.unwrap(), 2);
        }
        for (trace_id, name) in check(stage, blocks) {
            for service in [Some("db-proxy".to_string()), None] {
                let query = TraceQuery {
                    service: service.clone(),
                    operation: Some(name.clone()),
                    limit: 10,
                    ..Default::default()
                };
                let found: Vec<TraceId> = q.search(&query).await.unwrap().iter().map(|s| s.trace_id).collect();
                assert_eq!(found, [trace_id], "{stage}: {name} in {service:?}");
            }
        }
        let ops = q.operations("db-proxy", None);
        assert!(ops.len() >= MAX_OPERATIONS_PER_SERVICE && ops.len() <= blocks * MAX_OPERATIONS_PER_SERVICE);
    }
}

/// A `service.name` with ids in it (a new service per trace): each block lists its first
/// `MAX_SERVICES_PER_BLOCK` services and is marked capped, so its meta stays small, and a
/// search by a service no meta lists still finds its spans, before and after compaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_lists_of_blocks_with_ids_in_service_names_are_capped() {
    use skein_store::block::MAX_SERVICES_PER_BLOCK;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let base = now() - 60 * 1_000_000_000;
    let per_block = MAX_SERVICES_PER_BLOCK as u64 + 100;
    let mut traces = Vec::new();
    for block in 0..2u64 {
        let mut batch = Vec::new();
        for i in block * per_block..(block + 1) * per_block {
            let mut t = g.trace(base + i * 1_000_000, 10, false);
            t[3].resource = Arc::new(Resource {
                attributes: vec![KeyValue::string("service.name", format!("worker-{i}"))],
                dropped_attributes_count: 0,
            });
            t[3].name = format!("work {i}");
            batch.extend(t.clone());
            traces.push(t);
        }
        store.append(batch).await.unwrap();
        store.flush().await.unwrap();
    }
    for (stage, blocks) in [("level 0", 2), ("compacted", 1)] {
        if blocks == 1 {
            assert_eq!(store.compact_once().await.unwrap(), 2);
        }
        let snap = store.snapshot();
        assert_eq!(snap.blocks.len(), blocks, "{stage}");
        let mut listed = std::collections::HashSet::new();
        for b in &snap.blocks {
            assert_eq!(b.meta.services.len(), MAX_SERVICES_PER_BLOCK, "{stage}");
            assert!(b.meta.services_capped, "{stage}");
            listed.extend(b.meta.services.keys().cloned());
        }
        let unlisted: Vec<&Vec<Span>> = traces
            .iter()
            .filter(|t| !listed.contains(t[3].resource.service_name()))
            .take(3)
            .collect();
        assert_eq!(unlisted.len(), 3, "{stage}");
        for t in unlisted {
            let service = t[3].resource.service_name().to_string();
            for operation in [None, Some(t[3].name.clone())] {
                let query = TraceQuery {
                    service: Some(service.clone()),
                    operation: operation.clone(),
                    limit: 10,
                    ..Default::default()
                };
                let found: Vec<TraceId> = q.search(&query).await.unwrap().iter().map(|s| s.trace_id).collect();
                assert_eq!(found, [t[0].trace_id], "{stage}: {service} {operation:?}");
            }
            // By operation alone: an unlisted service may hold any operation, so its span's
            // name, listed nowhere, does not rule the block out.
            let query = TraceQuery {
                operation: Some(t[3].name.clone()),
                limit: 10,
                ..Default::default()
            };
            let found: Vec<TraceId> = q.search(&query).await.unwrap().iter().map(|s| s.trace_id).collect();
            assert_eq!(found, [t[0].trace_id], "{stage}: by operation {}", t[3].name);
        }
        // A service no span has: a capped block cannot rule it out, so it is read, and nothing
        // is found.
        let query = TraceQuery {
            service: Some("nowhere".into()),
            limit: 10,
            ..Default::default()
        };
        assert!(q.search(&query).await.unwrap().is_empty(), "{stage}");
        let services = q.services();
        assert!(
            services.len() >= MAX_SERVICES_PER_BLOCK && services.iter().any(|s| s == "frontend"),
            "{stage}"
        );
    }
}

/// Damage found when the store opens. A bloom filter that fails its CRC, or is the wrong
/// size, would turn lookups away from a block holding the trace: it is replaced by one that
/// admits everything, and the block's own index answers. A block whose meta cannot be read
/// is skipped, and every answer says it may be incomplete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_blooms_cost_no_lookups_and_unreadable_metas_are_reported() {
    use skein_query::Asked;
    let dir = tempfile::tempdir().unwrap();
    let g = Gen::new();
    let base = now() - 60 * 1_000_000_000;
    let blocks = {
        let store = Store::open(dir.path(), cfg()).await.unwrap();
        let blocks = blocks_of_20_traces(&store, &g, base, 4).await;
        store.shutdown().await.unwrap();
        blocks
    };
    let file = |b: usize, name: &str| dir.path().join("blocks").join(&blocks[b].0).join(name);
    // Block 0: bloom bits cleared (its CRC no longer matches); block 1: bloom cut short;
    // block 2: meta unreadable; block 3 untouched.
    let mut bloom = std::fs::read(file(0, "bloom")).unwrap();
    bloom.fill(0);
    std::fs::write(file(0, "bloom"), bloom).unwrap();
    std::fs::write(file(1, "bloom"), [1, 2, 3]).unwrap();
    let meta = std::fs::read(file(2, "meta.json")).unwrap();
    std::fs::write(file(2, "meta.json"), &meta[..meta.len() / 2]).unwrap();

    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    assert_eq!(store.snapshot().blocks.len(), 3);
    for b in [0, 1, 3] {
        for t in &blocks[b].1 {
            assert_eq!(
                sorted(q.trace(&t[0].trace_id).await.unwrap()),
                sorted(t.clone()),
                "block {b}"
            );
        }
    }
    let lost = &blocks[2].1[0];
    assert!(q.trace(&lost[0].trace_id).await.unwrap().is_empty());
    let unloadable = vec![blocks[2].0.clone()];
    assert_eq!(store.unloadable_blocks(), unloadable.as_slice());
    for asked in [
        Asked::Trace(&lost[0].trace_id),
        Asked::Trace(&blocks[3].1[0][0].trace_id),
        Asked::Search(&TraceQuery::default()),
        Asked::Window(0, 1),
    ] {
        assert_eq!(q.damaged_blocks_for(asked), unloadable, "{asked:?}");
    }
}

/// Spans that each bring a resource of their own (a unique `service.name`, a big attribute)
/// count it against the head's byte budget, so the head is cut by bytes instead of growing
/// with memory nobody counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_of_their_own_count_against_the_head_budget() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        head_max_bytes: 8 << 20,
        ..cfg()
    };
    let store = Store::open(dir.path(), config).await.unwrap();
    let g = Gen::new();
    let base = now() - 60 * 1_000_000_000;
    // 4,000 spans: ~3 MB of their own, ~17 MB of resources.
    for r in 0..10u64 {
        let mut batch = Vec::new();
        for i in 0..100u64 {
            for mut s in g.trace(base + (r * 100 + i) * 1_000_000, 10, false) {
                s.resource = Arc::new(Resource {
                    attributes: vec![
                        KeyValue::string("service.name", format!("pod-{r}-{i}-{}", s.name)),
                        KeyValue::string("k8s.pod.labels", "x".repeat(4096)),
                    ],
                    dropped_attributes_count: 0,
                });
                batch.push(s);
            }
        }
        store.append(batch).await.unwrap();
    }
    let st = store.stats();
    assert!(st.blocks + st.pending_blocks >= 1, "the head was never cut: {st:?}");
}

/// A WAL record damaged on disk, with acknowledged records after it: replay loses that
/// record's spans only, keeps a copy of the segment, and starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_inside_the_wal_loses_only_the_damaged_record() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gen::new();
    let traces: Vec<Vec<Span>> = (0..3)
        .map(|i| g.trace(now() - (3 - i) * 1_000_000_000, 10, false))
        .collect();
    {
        let store = Store::open(dir.path(), cfg()).await.unwrap();
        for t in &traces {
            store.append(t.clone()).await.unwrap();
        }
        // Dropped without shutdown: only the WAL has them, one record per append.
    }
    let wal = dir.path().join("wal");
    let segment = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::metadata(p).unwrap().len() > 0)
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let first_len = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
    let second = 8 + first_len;
    bytes[second + 8 + 100] ^= 0x55;
    std::fs::write(&segment, &bytes).unwrap();

    for round in 0..2 {
        let store = Store::open(dir.path(), cfg()).await.unwrap();
        let q = QueryEngine::new(store.clone());
        for (i, t) in traces.iter().enumerate() {
            let found = q.trace(&t[0].trace_id).await.unwrap();
            if i == 1 {
                assert!(found.is_empty(), "round {round}: the damaged record's trace");
            } else {
                assert_eq!(sorted(found), sorted(t.clone()), "round {round}: trace {i}");
            }
        }
        assert_eq!(
            std::fs::read(&segment).unwrap(),
            bytes,
            "round {round}: nothing cut off"
        );
        let mut copy = segment.clone().into_os_string();
        copy.push(".damaged");
        assert_eq!(std::fs::read(&copy).unwrap(), bytes, "round {round}: a copy kept");
    }
    // Once the spans are in a block the segment goes; the copy stays, and replay ignores it.
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    store.flush().await.unwrap();
    store.shutdown().await.unwrap();
    drop(store);
    assert!(!segment.exists());
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    assert_eq!(
        sorted(q.trace(&traces[2][0].trace_id).await.unwrap()),
        sorted(traces[2].clone())
    );
    let names: Vec<String> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.ends_with(".wal.damaged")), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_attribute_with_another_type_is_still_found_in_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let mut odd = g.trace(now() - 5_000_000_000, 10, false);
    // A client that sends the status code as a string: it cannot live in the Int64 column.
    for kv in &mut odd[3].attributes {
        if kv.key == "http.response.status_code" {
            kv.value = AnyValue::String("418".into());
        }
    }
    store.append(odd.clone()).await.unwrap();
    store.append(g.trace(now() - 4_000_000_000, 10, false)).await.unwrap();
    let query = TraceQuery {
        attributes: vec![("http.response.status_code".into(), "418".into())],
        limit: 10,
        ..Default::default()
    };
    let head: Vec<TraceId> = q.search(&query).await.unwrap().iter().map(|s| s.trace_id).collect();
    assert_eq!(head, vec![odd[0].trace_id]);
    store.flush().await.unwrap();
    let meta = &store.snapshot().blocks[0].meta;
    assert!(meta.generic_may_contain("http.response.status_code"));
    assert!(
        !meta.generic_may_contain("http.request.method"),
        "{:?}",
        meta.generic_keys
    );
    let block: Vec<TraceId> = q.search(&query).await.unwrap().iter().map(|s| s.trace_id).collect();
    assert_eq!(block, head);
    let typed = TraceQuery {
        attributes: vec![("http.response.status_code".into(), "200".into())],
        limit: 10,
        ..Default::default()
    };
    assert_eq!(q.search(&typed).await.unwrap().len(), 2);
}

/// Blocks pick their own dedicated attribute columns; compaction merges blocks whose layouts
/// disagree (a key dedicated in one block, generic in another, another type in a third) and
/// every value stays exactly where search and trace-by-id find it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_blocks_with_different_dedicated_columns() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let base = now() - 60 * 1_000_000_000;
    let with_items = |traces: usize, offset: u64, value: AnyValue| -> Vec<Span> {
        let mut out = Vec::new();
        for i in 0..traces as u64 {
            let mut t = g.trace(base + (offset + i) * 10_000_000, 30, false);
            for s in &mut t {
                s.attributes.push(KeyValue::new("cart.items", value.clone()));
            }
            out.extend(t);
        }
        out
    };
    let ints = with_items(100, 0, AnyValue::Int(7));
    let few = with_items(1, 200, AnyValue::Int(7));
    let strs = with_items(100, 300, AnyValue::String("many".into()));
    for batch in [&ints, &few, &strs] {
        store.append(batch.clone()).await.unwrap();
        store.flush().await.unwrap();
    }
    let metas: Vec<_> = store.snapshot().blocks.iter().map(|b| b.meta.clone()).collect();
    let dedicated_of = |m: &skein_store::block::BlockMeta| -> Vec<String> {
        m.dedicated.iter().map(|d| format!("{}:{:?}", d.key, d.ty)).collect()
    };
    let by_count = |n: u64| metas.iter().find(|m| m.span_count == n).unwrap();
    assert!(dedicated_of(by_count(400))
        .iter()
        .any(|d| d == "cart.items:Int" || d == "cart.items:Str"));
    assert!(
        dedicated_of(by_count(4)).is_empty(),
        "too few spans for dedicated columns"
    );
    assert!(by_count(4).generic_may_contain("cart.items"));

    let search = |v: &str| TraceQuery {
        attributes: vec![("cart.items".into(), v.into())],
        limit: 1000,
        ..Default::default()
    };
    let before_int = q.search(&search("7")).await.unwrap().len();
    let before_str = q.search(&search("many")).await.unwrap().len();
    assert_eq!((before_int, before_str), (101, 100));

    assert_eq!(store.compact_once().await.unwrap(), 3);
    let meta = store.snapshot().blocks[0].meta.clone();
    assert_eq!(meta.span_count, 804);
    assert_eq!(
        meta.dedicated.iter().filter(|d| d.key == "cart.items").count(),
        1,
        "one type wins the column: {:?}",
        meta.dedicated
    );
    assert!(
        meta.generic_may_contain("cart.items"),
        "the other type's values moved to the generic column"
    );
    assert_eq!(q.search(&search("7")).await.unwrap().len(), 101);
    assert_eq!(q.search(&search("many")).await.unwrap().len(), 100);
    for t in ints.chunks(4).chain(few.chunks(4)).chain(strs.chunks(4)) {
        assert_eq!(sorted(q.trace(&t[0].trace_id).await.unwrap()), sorted(t.to_vec()));
    }
    // Other dedicated keys (string, bool, double) are searchable with typed matching.
    let typed = |k: &str, v: &str| TraceQuery {
        attributes: vec![(k.into(), v.into())],
        limit: 1000,
        ..Default::default()
    };
    assert_eq!(q.search(&typed("customer.tier", "free")).await.unwrap().len(), 201);
    assert_eq!(q.search(&typed("retry", "false")).await.unwrap().len(), 201);
    assert_eq!(q.search(&typed("ratio", "0.25")).await.unwrap().len(), 201);
    assert_eq!(q.search(&typed("ratio", "0.5")).await.unwrap().len(), 0);
    // Resource keys are listed, so a span-attribute search skips the resource column, and a
    // resource-attribute search still finds its traces.
    assert!(meta.resource_may_contain("host.name"), "{:?}", meta.resource_keys);
    assert!(!meta.resource_may_contain("cart.items"));
    assert_eq!(q.search(&typed("host.name", "payment-1")).await.unwrap().len(), 201);
}

/// A double attribute whose values are decimals of a few places (amounts) is stored as
/// integers, and every value comes back bit for bit. Values such a column cannot hold (1/3,
/// -0.0, 1e300, 0.1 + 0.2) keep a block's column a double one; merged into a decimal column by
/// compaction, they move to the generic column. Search finds every value, before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decimal_doubles_are_stored_as_integers_and_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let base = now() - 60 * 1_000_000_000;
    let priced = |traces: u64, offset: u64, price: &dyn Fn(u64) -> f64| -> Vec<Span> {
        let mut out = Vec::new();
        for i in 0..traces {
            let mut t = g.trace(base + (offset + i) * 10_000_000, 30, false);
            for (j, s) in t.iter_mut().enumerate() {
                s.attributes
                    .push(KeyValue::new("price", AnyValue::Double(price(i * 4 + j as u64))));
            }
            out.extend(t);
        }
        out
    };
    let odd = [1.0 / 3.0, -0.0, 1e300, 0.1 + 0.2];
    // Block A: cents; B: whole numbers; C: doubles with no short decimal form; D: odd values.
    let cents = priced(200, 0, &|n| (n * 37 % 90_000) as f64 / 100.0);
    let whole = priced(50, 300, &|n| (n % 13) as f64);
    let noisy = priced(60, 400, &|n| (n as f64 + 0.5).sqrt());
    let odds = priced(10, 500, &|n| odd[(n % 4) as usize]);
    for batch in [&cents, &whole, &noisy, &odds] {
        store.append(batch.clone()).await.unwrap();
        store.flush().await.unwrap();
    }
    let decimals_of = |span_count: u64| {
        let snap = store.snapshot();
        let b = snap
            .blocks
            .iter()
            .find(|b| b.meta.span_count == span_count)
            .unwrap()
            .clone();
        let d = b
            .meta
            .dedicated
            .iter()
            .find(|d| d.key == "price")
            .expect("price column")
            .clone();
        (b.meta.id.clone(), d.decimals, b.meta.generic_may_contain("price"))
    };
    let (a_id, a_decimals, a_generic) = decimals_of(800);
    assert_eq!((a_decimals, a_generic), (Some(2), false));
    assert_eq!(decimals_of(200).1, Some(0));
    assert_eq!(decimals_of(240).1, None);
    assert_eq!(decimals_of(40).1, None);
    let physical = |id: &str| {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let file = std::fs::File::open(dir.path().join("blocks").join(id).join("data.parquet")).unwrap();
        let reader = SerializedFileReader::new(file).unwrap();
        let schema = reader.metadata().file_metadata().schema_descr_ptr();
        let col = schema
            .columns()
            .iter()
            .find(|c| c.name() == "attr.price")
            .unwrap()
            .clone();
        col.physical_type()
    };
    assert_eq!(physical(&a_id), parquet::basic::Type::INT64);

    let exact = |spans: &[Span]| -> Vec<(SpanId, u64)> {
        let mut v: Vec<(SpanId, u64)> = spans
            .iter()
            .map(|s| {
                let price = s
                    .attributes
                    .iter()
                    .find(|kv| kv.key == "price")
                    .map(|kv| match kv.value {
                        AnyValue::Double(x) => x.to_bits(),
                        ref other => panic!("price came back as {other:?}"),
                    });
                (s.span_id, price.expect("price kept"))
            })
            .collect();
        v.sort();
        v
    };
    let by_price = |v: &str| TraceQuery {
        attributes: vec![("price".into(), v.into())],
        limit: 1000,
        ..Default::default()
    };
    let check = |when: &'static str| {
        let q = &q;
        let (cents, whole, noisy, odds) = (&cents, &whole, &noisy, &odds);
        async move {
            for t in cents
                .chunks(4)
                .chain(whole.chunks(4))
                .chain(noisy.chunks(4))
                .chain(odds.chunks(4))
            {
                let back = q.trace(&t[0].trace_id).await.unwrap();
                assert_eq!(exact(&back), exact(t), "{when}");
                assert_eq!(sorted(back), sorted(t.to_vec()), "{when}");
            }
            // Span 8 of block A alone costs 2.96 (found through the column)...
            let hits = q.search(&by_price("2.96")).await.unwrap();
            assert_eq!(
                hits.iter().map(|s| s.trace_id).collect::<Vec<_>>(),
                vec![cents[8].trace_id],
                "{when}"
            );
            // ...odd values through a double or the generic column, whole numbers in either
            // spelling.
            let third = q.search(&by_price(&(1.0f64 / 3.0).to_string())).await.unwrap();
            let mut found: Vec<TraceId> = third.iter().map(|s| s.trace_id).collect();
            let mut want: Vec<TraceId> = odds.chunks(4).map(|t| t[0].trace_id).collect();
            found.sort();
            want.sort();
            assert_eq!(found, want, "{when}");
            assert_eq!(
                q.search(&by_price("0.30000000000000004")).await.unwrap().len(),
                10,
                "{when}"
            );
            assert_eq!(q.search(&by_price("1e300")).await.unwrap().len(), 10, "{when}");
            assert_eq!(q.search(&by_price("0.3")).await.unwrap().len(), 0, "{when}");
            assert_eq!(q.search(&by_price("12")).await.unwrap().len(), 15, "{when}");
            assert_eq!(q.search(&by_price("12.0")).await.unwrap().len(), 15, "{when}");
        }
    };
    check("in blocks").await;
    assert_eq!(store.compact_once().await.unwrap(), 4);
    let merged = store.snapshot().blocks[0].meta.clone();
    assert_eq!(merged.span_count, 1280);
    let d = merged.dedicated.iter().find(|d| d.key == "price").unwrap();
    assert_eq!(d.decimals, Some(2), "the most places an input chose");
    assert_eq!(physical(&merged.id), parquet::basic::Type::INT64);
    assert!(
        merged.generic_may_contain("price"),
        "D's values moved to the generic column"
    );
    check("compacted").await;
}

/// Parents are stored as row offsets within a trace and row groups are cut only between
/// traces: ids come back exactly, including clock-skewed children (parent sorted after the
/// child), parents in another block, and traces either side of a row-group boundary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_ids_survive_offsets_row_groups_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    // One head of 144,000 spans: a block of two 128 Ki-row groups.
    let store = big_head_store(dir.path()).await;
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let base = now() - 600 * 1_000_000_000;
    let mut traces: Vec<Vec<Span>> = (0..36_000u64)
        .map(|i| g.trace(base + i * 1_000_000, 30, i % 97 == 0))
        .collect();
    // Clock skew: the child starts 5 ms before its parent, so it sorts first.
    let skewed = &mut traces[10];
    skewed[2].start_unix_nano = skewed[1].start_unix_nano - 5_000_000;
    // Two children of one parent, the second listed first.
    traces[20].swap(2, 3);
    // An orphan whose parent arrives in another block.
    let late_parent = traces[30].remove(1);
    let all: Vec<Span> = traces.iter().flatten().cloned().collect();
    store.append(all.clone()).await.unwrap();
    let deps_head = q.dependencies(0, u64::MAX).await.unwrap();
    assert_eq!(deps_head.len(), 3, "{deps_head:?}");
    store.flush().await.unwrap();
    let meta = store.snapshot().blocks[0].meta.clone();
    assert!(
        meta.row_groups.len() >= 2,
        "{} row groups, {} spans, {} blocks",
        meta.row_groups.len(),
        meta.span_count,
        store.snapshot().blocks.len()
    );
    let check = |traces: Vec<Vec<Span>>| async {
        for t in traces {
            assert_eq!(sorted(q.trace(&t[0].trace_id).await.unwrap()), sorted(t.clone()));
        }
    };
    let special = |traces: &[Vec<Span>]| -> Vec<Vec<Span>> {
        let mut pick: Vec<Vec<Span>> = [10, 20, 30].iter().map(|&i| traces[i].clone()).collect();
        // Both sides of every row-group boundary.
        let mut seen = 0u64;
        for t in traces {
            let before = seen;
            seen += t.len() as u64;
            if meta
                .row_groups
                .iter()
                .scan(0, |acc, g| {
                    *acc += g.rows;
                    Some(*acc)
                })
                .any(|edge| before <= edge && edge <= seen + 4)
            {
                pick.push(t.clone());
            }
        }
        pick
    };
    check(special(&traces)).await;
    check(traces.iter().step_by(150).cloned().collect()).await;
    assert_eq!(q.dependencies(0, u64::MAX).await.unwrap(), deps_head);

    store.append(vec![late_parent.clone()]).await.unwrap();
    store.flush().await.unwrap();
    traces[30].insert(1, late_parent);
    assert_eq!(store.compact_once().await.unwrap(), 2);
    check(special(&traces)).await;
    check(traces.iter().step_by(150).cloned().collect()).await;
}

/// A store whose head is cut only by `flush` (up to a million spans).
async fn big_head_store(dir: &std::path::Path) -> Store {
    Store::open(
        dir,
        StoreConfig {
            head_max_spans: 1_000_000,
            head_max_bytes: 1 << 30,
            ..cfg()
        },
    )
    .await
    .unwrap()
}

/// A trace lookup finds its rows from the trace-id column first, then reads the wide-page
/// columns (events, starts, durations) on a task of their own beside the rest and puts the two
/// side by side. A trace of 20,000 spans crosses every kind of page boundary (1 Ki-row trace-id
/// pages, 4 Ki-row pages, and after compaction 16 Ki-row wide pages) and many of the reader's
/// batches; it and its neighbours read back whole before and after compaction, and an id no
/// block holds reads back as nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_traces_read_back_whole_across_page_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let store = big_head_store(dir.path()).await;
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let base = now() - 600 * 1_000_000_000;
    let big_id = rid::<16>();
    let big: Vec<Span> = (0..5_000u64)
        .flat_map(|i| g.trace(base + i * 1_000, 30, i % 50 == 0))
        .map(|mut s| {
            s.trace_id = big_id;
            s
        })
        .collect();
    let small: Vec<Vec<Span>> = (0..4_000u64)
        .map(|i| g.trace(base + i * 1_000_000, 10, i % 7 == 0))
        .collect();
    store.append(big.clone()).await.unwrap();
    store.append(small[..2_000].concat()).await.unwrap();
    store.flush().await.unwrap();
    store.append(small[2_000..].concat()).await.unwrap();
    store.flush().await.unwrap();
    let check = || async {
        for t in std::iter::once(&big).chain(small.iter().step_by(37)) {
            assert_eq!(sorted(q.trace(&t[0].trace_id).await.unwrap()), sorted(t.clone()));
        }
        assert!(q.trace(&rid::<16>()).await.unwrap().is_empty());
    };
    check().await;
    assert_eq!(store.compact_once().await.unwrap(), 2);
    assert_eq!(store.snapshot().blocks.len(), 1);
    check().await;
}

/// A trace whose services' spans landed in different blocks, or partly in a block and partly
/// still in memory (services export at different times), still counts each call once: a
/// parent is looked up wherever it is. The counts do not change as the head is cut and the
/// blocks merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_join_parents_and_children_stored_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let base = now() - 600 * 1_000_000_000;
    // Each trace: frontend → checkout → {payment, db-proxy}.
    let traces: Vec<Vec<Span>> = (0..3).map(|i| g.trace(base + i * 1_000_000, 30, false)).collect();
    let expected = [
        ("checkout", "db-proxy", 3),
        ("checkout", "payment", 3),
        ("frontend", "checkout", 3),
    ];
    let expected: Vec<(String, String, u64)> = expected
        .into_iter()
        .map(|(p, c, n)| (p.to_string(), c.to_string(), n))
        .collect();
    // Block 1: trace 0's root, trace 1's root and checkout span.
    store
        .append(vec![traces[0][0].clone(), traces[1][0].clone(), traces[1][1].clone()])
        .await
        .unwrap();
    store.flush().await.unwrap();
    // Block 2: the rest of trace 0, and trace 2's payment and db spans.
    let mut second: Vec<Span> = traces[0][1..].to_vec();
    second.extend(traces[2][2..].iter().cloned());
    store.append(second).await.unwrap();
    store.flush().await.unwrap();
    // Memory: trace 1's children (parent in block 1), trace 2's root and checkout span (the
    // parents of spans in block 2).
    let mut head: Vec<Span> = traces[1][2..].to_vec();
    head.extend(traces[2][..2].iter().cloned());
    store.append(head).await.unwrap();
    assert_eq!(store.snapshot().blocks.len(), 2);
    assert_eq!(deps(q.dependencies(0, u64::MAX).await.unwrap()), expected);

    store.flush().await.unwrap();
    assert_eq!(store.snapshot().blocks.len(), 3);
    assert_eq!(deps(q.dependencies(0, u64::MAX).await.unwrap()), expected);
    assert_eq!(store.compact_once().await.unwrap(), 3);
    assert_eq!(deps(q.dependencies(0, u64::MAX).await.unwrap()), expected);
    // A window that leaves out a parent's start leaves out its calls: trace 0's root and
    // checkout span, and trace 1's root.
    let later = deps(q.dependencies(base + 1_500_000, u64::MAX).await.unwrap());
    let later_expected = [
        ("checkout", "db-proxy", 2),
        ("checkout", "payment", 2),
        ("frontend", "checkout", 1),
    ];
    let later_expected: Vec<(String, String, u64)> = later_expected
        .into_iter()
        .map(|(p, c, n)| (p.to_string(), c.to_string(), n))
        .collect();
    assert_eq!(later, later_expected);
}

/// A request sent twice (an exporter's retry) puts every span in memory twice: each call
/// still counts once, as trace reads show each span once, and as the block cut from memory
/// (which keeps one copy) counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_count_a_resent_span_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let trace = g.trace(now() - 600 * 1_000_000_000, 30, false);
    store.append(trace.clone()).await.unwrap();
    let once = deps(q.dependencies(0, u64::MAX).await.unwrap());
    assert!(!once.is_empty() && once.iter().all(|(_, _, n)| *n >= 1), "{once:?}");
    store.append(trace.clone()).await.unwrap();
    assert_eq!(
        deps(q.dependencies(0, u64::MAX).await.unwrap()),
        once,
        "both copies in memory"
    );
    store.flush().await.unwrap();
    assert_eq!(store.snapshot().blocks.len(), 1);
    assert_eq!(
        deps(q.dependencies(0, u64::MAX).await.unwrap()),
        once,
        "the block cut from them"
    );
}

/// Blocks written before parents were stored as row offsets (format 1: `parent_span_id` ids
/// only, no `parent_offset` column) still give their calls: dependencies look parents up by id
/// there. The block is rewritten in that shape from a current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_read_blocks_without_parent_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gen::new();
    let base = now() - 600 * 1_000_000_000;
    let traces: Vec<Vec<Span>> = (0..50).map(|i| g.trace(base + i * 1_000_000, 30, false)).collect();
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    store.append(traces.concat()).await.unwrap();
    store.flush().await.unwrap();
    let q = QueryEngine::new(store.clone());
    let expected = q.dependencies(0, u64::MAX).await.unwrap();
    assert_eq!(expected.len(), 3);
    assert!(expected.iter().all(|d| d.call_count == 50), "{expected:?}");
    let block = store.snapshot().blocks[0].clone();
    assert_eq!(block.meta.row_groups.len(), 1);
    let columns = block.meta.layout().column_names();
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    let batches = block.scan(&columns, None).await.unwrap();
    let id = block.meta.id.clone();
    drop((q, block));
    store.shutdown().await.unwrap();
    drop(store);

    // The same rows with parent ids and no offsets, as a format-1 writer left them, and
    // without page statistics, so trace lookups find no trace-id pages to pick.
    let block_dir = dir.path().join("blocks").join(&id);
    let data = block_dir.join(skein_store::block::DATA_FILE);
    let file = std::fs::File::create(&data).unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_statistics_enabled(parquet::file::properties::EnabledStatistics::None)
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batches[0].schema(), Some(props)).unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    let meta_path = block_dir.join(skein_store::block::META_FILE);
    let mut meta: skein_store::block::BlockMeta = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta.data_bytes = std::fs::metadata(&data).unwrap().len();
    // The scan gave decimal columns back as doubles, and they were written so.
    for d in &mut meta.dedicated {
        d.decimals = None;
    }
    // Nor did format 1 count calls: dependencies read the rows.
    meta.calls = None;
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();

    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let block = store.snapshot().blocks[0].clone();
    assert!(
        block.stream_parent_links(vec![0]).await.unwrap().is_none(),
        "no offsets in the rewritten block"
    );
    let q = QueryEngine::new(store.clone());
    assert_eq!(q.dependencies(0, u64::MAX).await.unwrap(), expected);
    for t in &traces {
        assert_eq!(sorted(q.trace(&t[0].trace_id).await.unwrap()), sorted(t.clone()));
    }
}

/// A search with a limit returns the traces whose matching spans are newest, wherever their
/// spans are stored. Each block gives only its own newest: it maps matching rows to traces by
/// the summary table's span counts (format 4 on), or, where the summary table keeps trace ids
/// (formats 1 to 3; one block is rewritten so), by each matching row's trace id. Trace ids
/// rise with their starts here, so row groups cover distinct times: a window takes some
/// whole and cuts others (scanned in two passes), and the newest block alone can fill a limit
/// (the search then stops before older blocks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_searches_find_the_newest_matching_traces_across_blocks() {
    random_seed();
    let dir = tempfile::tempdir().unwrap();
    let g = Gen::new();
    let base = now() - 3600 * 1_000_000_000;
    let minute = 60 * 1_000_000_000;
    // Traces start over 20 minutes, their ids rising with their starts; each span has one of
    // three tiers.
    let mut starts: Vec<u64> = (0..11_000).map(|_| base + fastrand::u64(..20 * minute)).collect();
    starts.sort_unstable();
    let traces: Vec<Vec<Span>> = starts
        .iter()
        .enumerate()
        .map(|(i, &start)| {
            let mut t = g.trace(start, 30, false);
            let id = (((i as u128 + 1) << 64) | fastrand::u64(..) as u128).to_be_bytes();
            for s in &mut t {
                s.trace_id = id;
                let tier = ["free", "pro", "enterprise"][fastrand::usize(..3)];
                s.attributes.push(KeyValue::string("app.tier", tier));
            }
            t
        })
        .collect();
    // Traces 4500..6500 have their first two spans in the first block, their last two in the
    // second. Both blocks have two row groups (16 Ki rows each at most).
    let halves = |from: usize, to: usize| -> Vec<Span> {
        traces[4500..6500].iter().flat_map(|t| t[from..to].to_vec()).collect()
    };
    let blocks = [
        [traces[..4500].concat(), halves(0, 2)].concat(),
        [halves(2, 4), traces[6500..10_000].concat()].concat(),
        traces[10_000..].concat(),
    ];
    let store = big_head_store(dir.path()).await;
    for spans in &blocks {
        store.append(spans.clone()).await.unwrap();
        store.flush().await.unwrap();
    }

    let expected = |tier: &str, lo: u64, hi: u64, limit: usize| -> Vec<TraceId> {
        let mut newest: std::collections::HashMap<TraceId, u64> = Default::default();
        for s in traces.iter().flatten() {
            let matches = s
                .attributes
                .iter()
                .any(|a| a.key == "app.tier" && a.value == AnyValue::String(tier.into()));
            if matches && (lo..=hi).contains(&s.start_unix_nano) {
                let e = newest.entry(s.trace_id).or_insert(0);
                *e = (*e).max(s.start_unix_nano);
            }
        }
        let mut found: Vec<(TraceId, u64)> = newest.into_iter().collect();
        found.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        if limit > 0 {
            found.truncate(limit);
        }
        let mut ids: Vec<TraceId> = found.into_iter().map(|(t, _)| t).collect();
        ids.sort();
        ids
    };
    let check = |q: QueryEngine| {
        let expected = &expected;
        async move {
            for (lo, hi) in [(0, u64::MAX), (base + 5 * minute, base + 12 * minute)] {
                for limit in [1, 20, 700, 0] {
                    let query = TraceQuery {
                        attributes: vec![("app.tier".into(), "enterprise".into())],
                        start_min: Some(lo),
                        start_max: Some(hi),
                        limit,
                        ..Default::default()
                    };
                    let found = q.search(&query).await.unwrap();
                    assert!(found.windows(2).all(|w| w[0].start >= w[1].start), "newest first");
                    if (1..=20).contains(&limit) {
                        // Searches returning traces order them by their spans, not summaries.
                        let traces = q.find_traces(&query).await.unwrap();
                        assert_eq!(
                            traces.iter().map(|t| t[0].trace_id).collect::<Vec<_>>(),
                            found.iter().map(|s| s.trace_id).collect::<Vec<_>>()
                        );
                    }
                    let mut ids: Vec<TraceId> = found.iter().map(|s| s.trace_id).collect();
                    ids.sort();
                    let want = expected("enterprise", lo, hi, limit);
                    let missing = want.iter().filter(|t| ids.binary_search(t).is_err()).count();
                    assert!(
                        ids == want,
                        "window {lo}..{hi}, limit {limit}: {} found, {} expected, {missing} of them missing",
                        ids.len(),
                        want.len()
                    );
                }
            }
        }
    };
    let snap = store.snapshot();
    assert_eq!(snap.blocks.len(), 3);
    assert_eq!(snap.blocks.iter().filter(|b| b.meta.row_groups.len() == 2).count(), 2);
    assert!(snap.blocks.iter().all(|b| b.meta.summaries_by_row()));
    // Each block counted its calls as it was built, so a window holding it whole reads only
    // its children whose parent is elsewhere: traces 4500..6500's payment and db spans, in the
    // second block, whose checkout parents are in the first.
    let unresolved: u64 = snap
        .blocks
        .iter()
        .map(|b| b.meta.calls.as_ref().expect("calls").unresolved)
        .sum();
    assert_eq!(unresolved, 2 * 2000);
    // Each block scanned whole, then split into one scan per row group (a trace's rows all lie
    // in one), also with more reads at once than a block has groups. Dependencies are read the
    // same way.
    let calls = |lo: u64, hi: u64| -> Vec<(String, String, u64)> {
        let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
        for t in &traces {
            for child in t {
                let Some(parent) = t.iter().find(|p| p.span_id == child.parent_span_id) else {
                    continue;
                };
                let here = |s: &Span| (lo..=hi).contains(&s.start_unix_nano);
                let (from, to) = (parent.service_name(), child.service_name());
                if here(parent) && here(child) && from != to {
                    *counts.entry((from.to_string(), to.to_string())).or_default() += 1;
                }
            }
        }
        counts.into_iter().map(|((p, c), n)| (p, c, n)).collect()
    };
    for parallelism in [1, 2, 3] {
        let q = QueryEngine::new(store.clone()).with_read_parallelism(parallelism);
        // The whole store: every block's calls from its meta. Then a window that cuts into
        // blocks, which are read.
        for (lo, hi) in [(0, u64::MAX), (base + 5 * minute, base + 12 * minute)] {
            let found = deps(q.dependencies(lo, hi).await.unwrap());
            assert_eq!(
                found,
                calls(lo, hi),
                "dependencies in {lo}..{hi}, {parallelism} reads at once"
            );
        }
        check(q).await;
    }

    // The third block's summary table rewritten with trace ids and starts, as formats 1 to 3
    // kept them.
    let third = snap
        .blocks
        .iter()
        .find(|b| b.meta.span_count == 4000)
        .unwrap()
        .meta
        .id
        .clone();
    drop(snap);
    store.shutdown().await.unwrap();
    drop(store);
    let mut firsts: std::collections::BTreeMap<TraceId, u64> = Default::default();
    for s in &blocks[2] {
        let e = firsts.entry(s.trace_id).or_insert(u64::MAX);
        *e = (*e).min(s.start_unix_nano);
    }
    let block_dir = dir.path().join("blocks").join(&third);
    keep_trace_ids_in_summaries(&block_dir, &firsts);
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let block = store
        .snapshot()
        .blocks
        .iter()
        .find(|b| b.meta.id == third)
        .unwrap()
        .clone();
    assert!(
        !block.meta.summaries_by_row(),
        "the rewritten block maps rows by trace id"
    );
    drop(block);
    check(QueryEngine::new(store.clone())).await;
}

/// Rewrites a block's summary table with its trace ids and starts (`firsts`, in the table's
/// order) in front, as formats 1 to 3 stored it, and marks the block format 3.
fn keep_trace_ids_in_summaries(block_dir: &std::path::Path, firsts: &std::collections::BTreeMap<TraceId, u64>) {
    use arrow_array::{ArrayRef, FixedSizeBinaryArray, Int64Array, RecordBatch};
    use skein_store::block::schema;
    let path = block_dir.join(skein_store::block::SUMMARY_FILE);
    let batches: Vec<RecordBatch> =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let mut traces = firsts.iter();
    let mut older = Vec::new();
    for b in &batches {
        let (ids, starts): (Vec<TraceId>, Vec<i64>) = (0..b.num_rows())
            .map(|_| traces.next().map(|(t, s)| (*t, *s as i64)).unwrap())
            .unzip();
        let mut fields = vec![
            arrow_schema::Field::new(schema::SUM_TRACE_ID, arrow_schema::DataType::FixedSizeBinary(16), false),
            arrow_schema::Field::new(schema::SUM_START, arrow_schema::DataType::Int64, false),
        ];
        fields.extend(b.schema().fields().iter().map(|f| f.as_ref().clone()));
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(FixedSizeBinaryArray::try_from_iter(ids.iter()).unwrap()),
            Arc::new(Int64Array::from(starts)),
        ];
        columns.extend(b.columns().iter().cloned());
        older.push(RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns).unwrap());
    }
    assert!(traces.next().is_none(), "a summary per trace");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), older[0].schema(), None).unwrap();
    for b in &older {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    let meta_path = block_dir.join(skein_store::block::META_FILE);
    let mut meta: skein_store::block::BlockMeta = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta.summary_bytes = std::fs::metadata(&path).unwrap().len();
    meta.format = 3;
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
}

/// Makes block writes fail: a file where the blocks directory goes (root ignores permissions).
fn break_blocks(blocks: &std::path::Path) {
    if blocks.exists() {
        std::fs::remove_dir_all(blocks).unwrap();
    }
    std::fs::write(blocks, b"not a directory").unwrap();
}

/// With the block backlog full, an append waits for the block being written instead of being
/// refused at once, and is refused only when `admission_wait` runs out. The block writer is
/// held back for real: the blocks directory is replaced by a file, so block writes fail and are
/// retried until it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_wait_for_the_block_writer_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let open = |wait: Duration| {
        Store::open(
            dir.path(),
            StoreConfig {
                head_max_spans: 1,
                max_pending_blocks: 1,
                admission_wait: wait,
                ..cfg()
            },
        )
    };
    let blocks = dir.path().join("blocks");
    let g = Gen::new();
    let base = now() - 60 * 1_000_000_000;
    let first = g.trace(base, 20, false);
    let second = g.trace(base + 1_000_000, 20, false);

    // Nothing being written: nothing could make room, so the refusal is immediate.
    let refusing = Store::open(
        dir.path(),
        StoreConfig {
            max_pending_blocks: 0,
            ..cfg()
        },
    )
    .await
    .unwrap();
    let err = refusing.append(first.clone()).await.unwrap_err();
    assert!(matches!(err, skein_store::StoreError::Overloaded(_)), "{err}");
    refusing.shutdown().await.unwrap();
    drop(refusing);

    let store = open(Duration::from_secs(60)).await.unwrap();
    break_blocks(&blocks);
    // One span over `head_max_spans`: the head is cut after this append, and its block cannot
    // be written.
    store.append(first.clone()).await.unwrap();
    while store.stats().pending_blocks < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waiting = tokio::spawn({
        let store = store.clone();
        let spans = second.clone();
        async move { store.append(spans).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the append waits while the block backlog is full"
    );

    // The writer's next retry succeeds, makes room, and the waiting append goes through.
    std::fs::remove_file(&blocks).unwrap();
    waiting
        .await
        .unwrap()
        .expect("the append went through once a block was written");
    store.flush().await.unwrap();
    let q = QueryEngine::new(store.clone());
    for t in [&first, &second] {
        assert_eq!(sorted(q.trace(&t[0].trace_id).await.unwrap()), sorted(t.clone()));
    }
    store.shutdown().await.unwrap();
    drop((q, store));

    // A wait that runs out is refused as backpressure, and the refused spans are not stored.
    let store = open(Duration::from_millis(200)).await.unwrap();
    break_blocks(&blocks);
    let third = g.trace(base + 2_000_000, 20, false);
    let fourth = g.trace(base + 3_000_000, 20, false);
    store.append(third.clone()).await.unwrap();
    while store.stats().pending_blocks < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = store.append(fourth.clone()).await.unwrap_err();
    assert!(matches!(err, skein_store::StoreError::Overloaded(_)), "{err}");
    std::fs::remove_file(&blocks).unwrap();
    store.flush().await.unwrap();
    let q = QueryEngine::new(store.clone());
    assert_eq!(
        sorted(q.trace(&third[0].trace_id).await.unwrap()),
        sorted(third.clone())
    );
    assert!(q.trace(&fourth[0].trace_id).await.unwrap().is_empty());
}

/// Trace outlines (what trace summaries read) agree with whole traces on every field they
/// carry, for traces in blocks, in the head, and split between the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_outlines_agree_with_whole_traces() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let base = now() - 60 * 1_000_000_000;
    let in_block: Vec<Vec<Span>> = (0..50u64)
        .map(|i| g.trace(base + i * 1_000_000, 30, i % 7 == 0))
        .collect();
    let mut split = g.trace(base + 60_000_000, 30, true);
    // An orphan: its parent never arrives.
    split[3].parent_span_id = rid();
    store
        .append(in_block.iter().flatten().cloned().collect())
        .await
        .unwrap();
    store.append(split[..2].to_vec()).await.unwrap();
    store.flush().await.unwrap();
    store.append(split[2..].to_vec()).await.unwrap();
    assert!(store.stats().blocks >= 1 && store.stats().head_spans == 2);

    let outline_fields = |s: &Span| {
        (
            s.trace_id,
            s.span_id,
            s.parent_span_id,
            s.name.clone(),
            s.kind,
            s.start_unix_nano,
            s.end_unix_nano,
            s.status.code,
            s.service_name().to_string(),
        )
    };
    for t in in_block.iter().chain([&split]) {
        let whole = q.trace(&t[0].trace_id).await.unwrap();
        let outline = q.trace_outline(&t[0].trace_id).await.unwrap();
        assert_eq!(whole.len(), t.len());
        assert_eq!(
            outline.iter().map(outline_fields).collect::<Vec<_>>(),
            whole.iter().map(outline_fields).collect::<Vec<_>>()
        );
    }
    // Spans read from blocks carry nothing more: no attributes, events or other resource keys.
    let outline = q.trace_outline(&in_block[0][0].trace_id).await.unwrap();
    assert!(outline
        .iter()
        .all(|s| s.attributes.is_empty() && s.events.is_empty() && s.resource.attributes.len() == 1));

    // A search's outlines come in the search's order, like its whole traces.
    let query = TraceQuery {
        error: Some(true),
        limit: 100,
        ..Default::default()
    };
    let whole = q.find_traces(&query).await.unwrap();
    let summaries = q.search(&query).await.unwrap();
    assert_eq!(
        whole.iter().map(|t| t[0].trace_id).collect::<Vec<_>>(),
        summaries.iter().map(|s| s.trace_id).collect::<Vec<_>>()
    );
    let outlines = q.find_trace_outlines(&query).await.unwrap();
    assert_eq!(whole.len(), 9, "8 failing traces in the block and the split one");
    assert_eq!(
        outlines
            .iter()
            .map(|t| t.iter().map(outline_fields).collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        whole
            .iter()
            .map(|t| t.iter().map(outline_fields).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );
}

/// The codec and number of data pages of each column of a block's data file, by column name.
fn column_codecs(data_dir: &std::path::Path, block: &str) -> std::collections::BTreeMap<String, (String, usize)> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::file::serialized_reader::ReadOptionsBuilder;
    let file = std::fs::File::open(data_dir.join("blocks").join(block).join("data.parquet")).unwrap();
    let options = ReadOptionsBuilder::new().with_page_index().build();
    let reader = SerializedFileReader::new_with_options(file, options).unwrap();
    let pages = reader.metadata().page_index_for_row_group(0);
    let group = reader.metadata().row_group(0);
    group
        .columns()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let codec = format!("{:?}", c.compression());
            let count = pages.offset_index(i).expect("offset index").page_locations().len();
            (c.column_path().string(), (codec, count))
        })
        .collect()
}

/// Ids are written uncompressed (random bytes); few-valued attributes, codes and booleans too
/// in level-0 blocks, which compete with ingest for the CPU, and zstd in compacted ones. Times,
/// events and per-request values are always zstd, and compacted blocks hold their events and
/// times in bigger pages than other columns. The choices are sampled when a head is cut and
/// carried through compaction, and the values read back exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn few_valued_columns_are_uncompressed_until_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let base = now() - 60 * 1_000_000_000;
    let mut sent = Vec::new();
    for part in 0..2u64 {
        let mut batch = Vec::new();
        for i in 0..100u64 {
            let mut t = g.trace(base + (part * 100 + i) * 10_000_000, 30, i % 10 == 0);
            for s in &mut t {
                let session = format!("session-{}", u64::from_be_bytes(s.span_id));
                s.attributes.push(KeyValue::string("session.id", session));
            }
            batch.extend(t);
        }
        store.append(batch.clone()).await.unwrap();
        store.flush().await.unwrap();
        sent.extend(batch);
    }
    let few_valued = [
        "name",
        "service_name",
        "attr_http_request_method",
        "attr_http_response_status_code",
        "attr.customer.tier",
        "attr.retry",
        "attr.ratio",
    ];
    let check = |compacted: bool| {
        let stage = if compacted { "compacted" } else { "level 0" };
        let blocks = store.snapshot().blocks.clone();
        assert!(!blocks.is_empty());
        for b in blocks.iter() {
            let columns = column_codecs(dir.path(), &b.meta.id);
            let codec = |c: &str| columns.get(c).map(|(codec, _)| codec.as_str()).unwrap_or("missing");
            let pages = |c: &str| columns.get(c).map(|(_, pages)| *pages).unwrap_or(0);
            assert_eq!(codec("span_id"), "UNCOMPRESSED", "{stage}");
            for c in few_valued {
                if compacted {
                    assert!(codec(c).starts_with("ZSTD"), "{stage}: {c} is {}", codec(c));
                } else {
                    assert_eq!(codec(c), "UNCOMPRESSED", "{stage}: {c}");
                }
            }
            for c in ["trace_id", "start_unix_nano", "events", "attributes", "attr.session.id"] {
                assert!(codec(c).starts_with("ZSTD"), "{stage}: {c} is {}", codec(c));
            }
            // 3,000 rows per level-0 block and 6,000 compacted: 4 Ki-row pages, except the
            // compacted events and times in 16 Ki-row pages.
            let rows = b.meta.span_count as usize;
            assert_eq!(pages("name"), rows.div_ceil(4096), "{stage}");
            for c in ["events", "start_unix_nano", "duration_nano"] {
                let want = if compacted { 1 } else { rows.div_ceil(4096) };
                assert_eq!(pages(c), want, "{stage}: {c}");
            }
            assert_eq!(b.meta.low_cardinality, ["customer.tier", "ratio", "retry"], "{stage}");
        }
    };
    check(false);
    assert_eq!(store.compact_once().await.unwrap(), 2);
    check(true);
    for t in sent.chunks(4) {
        assert_eq!(sorted(q.trace(&t[0].trace_id).await.unwrap()), sorted(t.to_vec()));
    }
    let tier = TraceQuery {
        attributes: vec![("customer.tier".into(), "gold".into())],
        limit: 1000,
        ..Default::default()
    };
    assert_eq!(q.search(&tier).await.unwrap().len(), 20);

    // A search's filter gets few-valued string columns as dictionaries (it compares indexes,
    // copies no string per row); per-request values stay plain strings.
    let block = store.snapshot().blocks[0].clone();
    let types = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let seen = types.clone();
    let filter = [
        "service_name",
        "name",
        "attr_http_request_method",
        "attr.customer.tier",
        "attr.session.id",
    ];
    let rows: usize = block
        .scan_where(
            &filter,
            move |batch| {
                for f in batch.schema().fields() {
                    seen.lock().unwrap().insert(f.name().clone(), f.data_type().to_string());
                }
                Ok(arrow_array::BooleanArray::from(vec![true; batch.num_rows()]))
            },
            &["trace_id"],
            (0..block.meta.row_groups.len()).collect(),
        )
        .await
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .fold(0, |n, r| async move { n + r })
        .await;
    assert_eq!(rows, sent.len());
    let dictionary = "Dictionary(Int32, Utf8)".to_string();
    let types = types.lock().unwrap().clone();
    for c in &filter[..4] {
        assert_eq!(types.get(*c), Some(&dictionary), "{c}");
    }
    assert_eq!(types.get("attr.session.id").map(String::as_str), Some("Utf8"));
}

/// `n` blocks of 20 traces each from `base` on, flushed one at a time: each block's id and
/// traces.
async fn blocks_of_20_traces(store: &Store, g: &Gen, base: u64, n: u64) -> Vec<(String, Vec<Vec<Span>>)> {
    let mut blocks: Vec<(String, Vec<Vec<Span>>)> = Vec::new();
    for b in 0..n {
        let traces: Vec<Vec<Span>> = (0..20u64)
            .map(|i| g.trace(base + (b * 20 + i) * 10_000_000, 30, false))
            .collect();
        store.append(traces.concat()).await.unwrap();
        store.flush().await.unwrap();
        let known: Vec<&String> = blocks.iter().map(|(id, _)| id).collect();
        let id = store
            .snapshot()
            .blocks
            .iter()
            .map(|b| b.meta.id.clone())
            .find(|id| !known.contains(&id))
            .unwrap();
        blocks.push((id, traces));
    }
    blocks
}

/// Overwrites every page of a block's data file with 0xFF, keeping its footer: any read of
/// its rows then fails to decode, as after bit rot or a bad sector.
fn damage_pages(data_file: &std::path::Path) {
    let mut bytes = std::fs::read(data_file).unwrap();
    let n = bytes.len();
    let footer = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
    bytes[4..n - 8 - footer].fill(0xFF);
    std::fs::write(data_file, bytes).unwrap();
}

/// A block whose files no longer decode fails no query: trace by id, search and dependencies
/// answer from the other blocks, and the block is left out from then on, by compaction too,
/// until retention deletes it like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_block_is_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let base = now() - 60 * 1_000_000_000;
    // Six blocks of 20 traces: four to damage (one per kind of read, one for compaction),
    // two kept.
    let blocks: Vec<(String, Vec<Span>)> = blocks_of_20_traces(&store, &g, base, 6)
        .await
        .into_iter()
        .map(|(id, traces)| (id, traces.concat()))
        .collect();
    let damage = |i: usize| damage_pages(&dir.path().join("blocks").join(&blocks[i].0).join("data.parquet"));
    let good: Vec<&Span> = blocks[4..].iter().flat_map(|(_, b)| b).collect();
    // The counter is the process's: other tests in this binary (run as threads by `cargo
    // test`) may count meanwhile, hence "at least".
    let unreadable = || {
        let text = skein_model::metrics::render();
        text.lines()
            .find_map(|l| {
                l.strip_prefix("skein_unreadable_blocks_total ")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    let unreadable_before = unreadable();

    // Each kind of read meets a block damaged just before it (each reads every block).
    // Trace by id in the first damaged block: nothing, not an error.
    damage(0);
    assert_eq!(q.trace(&blocks[0].1[0].trace_id).await.unwrap(), Vec::new());
    assert_eq!(store.snapshot().blocks.len(), 5, "left out once found damaged");
    // Search over everything: the second damaged block is skipped.
    damage(1);
    let found = q.search(&TraceQuery::default()).await.unwrap();
    assert_eq!(found.len(), 80, "the traces of the four readable blocks");
    assert_eq!(store.snapshot().blocks.len(), 4);
    // Dependencies: the third. A window holding a block whole takes its calls from its meta
    // without reading it (the damaged block's 60 calls are still counted then), so this one
    // starts inside the third block, whose traces start 400 to 590 ms after `base`.
    damage(2);
    let whole = total_calls(q.dependencies(0, u64::MAX).await.unwrap());
    assert_eq!(whole, 60 * 4, "the calls of the four blocks left, from their metas");
    assert_eq!(store.snapshot().blocks.len(), 4, "not read, so not found damaged yet");
    let calls = total_calls(q.dependencies(base + 500 * 1_000_000, u64::MAX).await.unwrap());
    assert_eq!(calls, 60 * 3, "the calls of the three readable blocks");
    assert_eq!(store.snapshot().blocks.len(), 3);
    // Traces of the readable blocks come back whole.
    assert_eq!(
        sorted(q.trace(&good[0].trace_id).await.unwrap()),
        sorted(good[..4].iter().map(|s| (*s).clone()).collect())
    );
    assert!(unreadable() - unreadable_before >= 3, "three blocks counted unreadable");

    // A merge that meets the fourth fails once; the next merges the readable blocks only. The
    // damaged ones stay on disk, untouched.
    damage(3);
    assert!(store.compact_once().await.is_err());
    assert_eq!(store.snapshot().blocks.len(), 2);
    assert_eq!(store.compact_once().await.unwrap(), 2);
    assert_eq!(store.compact_once().await.unwrap(), 0);
    assert_eq!(store.stats().blocks, 5, "the merged block and the four damaged ones");
    for (id, _) in &blocks[..4] {
        assert!(dir.path().join("blocks").join(id).join("data.parquet").exists());
    }
    assert!(unreadable() - unreadable_before >= 4, "the fourth counted too");
    // Retention deletes them like any other block.
    let far_future = now() + 30 * 86400 * 1_000_000_000;
    assert_eq!(store.enforce_retention(far_future).await.unwrap(), 5);
    assert_eq!(store.stats().blocks, 0);
    store.shutdown().await.unwrap();
}

/// A trace lookup reads the wide columns (events among them) and the dedicated ones on tasks
/// of their own: damage met only there is damage like any other. The lookup answers without
/// the block, which is left out from then on, and the other block's traces still read back
/// whole. The block's checksums are removed, so the damage is met by decoding the page, not by
/// its checksum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_only_in_a_lookups_other_reads_is_found() {
    for damaged in ["events", "a dedicated column"] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), cfg()).await.unwrap();
        let g = Gen::new();
        let blocks = blocks_of_20_traces(&store, &g, now() - 60 * 1_000_000_000, 2).await;
        store.shutdown().await.unwrap();
        drop(store);
        let block_dir = dir.path().join("blocks").join(&blocks[0].0);
        std::fs::remove_file(block_dir.join(skein_store::block::SUMS_FILE)).unwrap();
        let data = block_dir.join(skein_store::block::DATA_FILE);
        let reader =
            parquet::file::serialized_reader::SerializedFileReader::new(std::fs::File::open(&data).unwrap()).unwrap();
        let group = parquet::file::reader::FileReader::metadata(&reader).row_group(0);
        let column = (0..group.num_columns())
            .map(|c| group.column(c))
            .find(|c| match damaged {
                "events" => c.column_path().string() == skein_store::block::schema::EVENTS,
                _ => c
                    .column_path()
                    .string()
                    .starts_with(skein_store::block::schema::DEDICATED_PREFIX),
            })
            .unwrap_or_else(|| panic!("the block has {damaged}"));
        let (at, len) = column.byte_range();
        let mut bytes = std::fs::read(&data).unwrap();
        bytes[at as usize..(at + len) as usize].fill(0xFF);
        std::fs::write(&data, bytes).unwrap();

        let store = Store::open(dir.path(), cfg()).await.unwrap();
        let q = QueryEngine::new(store.clone());
        assert_eq!(store.snapshot().blocks.len(), 2);
        assert_eq!(
            q.trace(&blocks[0].1[0][0].trace_id).await.unwrap(),
            Vec::new(),
            "{damaged}"
        );
        assert_eq!(
            store.snapshot().blocks.len(),
            1,
            "left out once found damaged ({damaged})"
        );
        for t in &blocks[1].1 {
            assert_eq!(sorted(q.trace(&t[0].trace_id).await.unwrap()), sorted(t.clone()));
        }
        store.shutdown().await.unwrap();
    }
}

/// A block whose file cannot be reached (moved away, no descriptor left) is not taken for
/// damage: queries skip it while it fails, saying they may be incomplete, and use it again as
/// soon as it can be read. A missing summary file costs searches only; trace lookups, which
/// read the span file, still find the block's traces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_that_cannot_be_reached_is_skipped_and_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let base = now() - 60 * 1_000_000_000;
    let blocks = blocks_of_20_traces(&store, &g, base, 2).await;
    let file = |name: &str| dir.path().join("blocks").join(&blocks[0].0).join(name);
    let aside = dir.path().join("aside");
    let id = blocks[0].1[0][0].trace_id;
    let whole = blocks[0].1[0].len();
    // Read once, so its footer is cached and the next read goes for the pages.
    assert_eq!(q.trace(&id).await.unwrap().len(), whole);

    std::fs::rename(file("data.parquet"), &aside).unwrap();
    assert_eq!(q.trace(&id).await.unwrap(), Vec::new(), "skipped, not an error");
    assert_eq!(q.damaged_blocks_for(Asked::Trace(&id)), [blocks[0].0.clone()]);
    assert_eq!(store.snapshot().blocks.len(), 2, "still in service");
    std::fs::rename(&aside, file("data.parquet")).unwrap();
    assert_eq!(q.trace(&id).await.unwrap().len(), whole, "read again once it is back");
    assert!(q.damaged_blocks_for(Asked::Trace(&id)).is_empty());

    std::fs::rename(file("traces.parquet"), &aside).unwrap();
    let found = q.search(&TraceQuery::default()).await.unwrap();
    assert_eq!(found.len(), 20, "the other block's traces");
    assert_eq!(
        q.trace(&id).await.unwrap().len(),
        whole,
        "trace lookups need no summaries"
    );
    assert_eq!(store.snapshot().blocks.len(), 2, "still in service");
    store.shutdown().await.unwrap();
}

/// A span stamped far in the future does not stretch its block's or row group's time range
/// past `CLOCK_AHEAD_SLACK` after the block's write, so searches do not read every block such
/// a client touched; the span is kept whole, read with its trace, and the trace is found by
/// search through its other spans, never through the span outside the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_the_future_do_not_stretch_block_time_ranges() {
    use skein_store::block::CLOCK_AHEAD_SLACK;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), retaining(2, 0)).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let start = now() - 60 * 1_000_000_000;
    let mut mixed = g.trace(start, 10, false);
    let ahead = 3650 * DAY;
    mixed[2].start_unix_nano += ahead; // payment, on a clock ten years ahead
    mixed[2].end_unix_nano += ahead;
    let all_ahead = g.trace(start + ahead, 10, false);
    let recent = g.trace(start + 1_000_000, 10, false);
    store
        .append([mixed.clone(), all_ahead.clone(), recent.clone()].concat())
        .await
        .unwrap();
    store.flush().await.unwrap();
    let snap = store.snapshot();
    assert_eq!(snap.blocks.len(), 1);
    let meta = &snap.blocks[0].meta;
    let latest = meta.created_unix_nano + CLOCK_AHEAD_SLACK;
    assert!(
        meta.max_end <= latest && meta.min_start <= start,
        "{} {}",
        meta.min_start,
        meta.max_end
    );
    assert!(meta.row_groups.iter().all(|g| g.max_end <= latest));
    // Ten years is past the retention period (two days here): the block is due to go before
    // then, so those starts share one open range from then on (`BlockBuilder::keep_ahead_for`).
    let due = meta.created_unix_nano + 2 * DAY;
    assert_eq!(meta.ahead_starts, Some(vec![[due + 1, u64::MAX]]));
    assert!(meta.row_groups.iter().any(|g| g.ahead));
    assert_eq!(meta.latest_start_until(u64::MAX), u64::MAX);
    assert!(!meta.overlaps(due - DAY / 2, due));
    // A search of their own time, bounded or open-ended, finds them while the block is kept.
    let mut ahead_traces = vec![mixed[0].trace_id, all_ahead[0].trace_id];
    ahead_traces.sort();
    for start_max in [Some(start + ahead + 3_600_000_000_000), None] {
        let query = TraceQuery {
            start_min: Some(start + ahead - 1),
            start_max,
            limit: 10,
            ..Default::default()
        };
        let mut found: Vec<TraceId> = q.search(&query).await.unwrap().iter().map(|s| s.trace_id).collect();
        found.sort();
        assert_eq!(found, ahead_traces, "window ending {start_max:?}");
    }
    // Stored whole, and read with their traces.
    let read = q.trace(&mixed[0].trace_id).await.unwrap();
    let child = read.iter().find(|s| s.span_id == mixed[2].span_id).expect("kept");
    assert_eq!(child.start_unix_nano, mixed[2].start_unix_nano);
    assert_eq!(q.trace(&all_ahead[0].trace_id).await.unwrap().len(), 4);
    // Searches find the traces through their spans inside the window: the last hour's, and a
    // window reaching past the capped range, where the capped row group's rows must still be
    // tested against the window (its range no longer bounds them).
    let mut want = vec![mixed[0].trace_id, recent[0].trace_id];
    want.sort();
    for ahead_of_now in [0, 3 * DAY] {
        let query = TraceQuery {
            service: Some("frontend".into()),
            start_min: Some(now() - 3600 * 1_000_000_000),
            start_max: Some(now() + ahead_of_now),
            limit: 10,
            ..Default::default()
        };
        let mut found: Vec<TraceId> = q.search(&query).await.unwrap().iter().map(|s| s.trace_id).collect();
        found.sort();
        assert_eq!(found, want, "window ending {ahead_of_now} ns from now");
    }
    store.shutdown().await.unwrap();
}

/// A span stamped a few days ahead, past its block's capped range but inside the retention
/// period, is found by a search of its own time once that time comes: its block keeps where
/// such spans start (`BlockMeta::ahead_starts`), through a restart and a merge, while windows
/// between the block's range and those starts still pass the block by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_a_few_days_ahead_are_found_by_searches_of_their_time() {
    use skein_store::block::MAX_AHEAD_RANGES;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let g = Gen::new();
    let start = now() - 60 * 1_000_000_000;
    let ahead = 3 * DAY;
    let mut mixed = g.trace(start, 10, false);
    mixed[2].start_unix_nano += ahead; // payment, on a clock three days ahead
    mixed[2].end_unix_nano += ahead;
    let all_ahead = g.trace(start + ahead + 5_000_000_000, 10, true);
    let recent = g.trace(start + 1_000_000, 10, false);
    store
        .append([mixed.clone(), all_ahead.clone(), recent.clone()].concat())
        .await
        .unwrap();
    store.flush().await.unwrap();
    let mut long = g.trace(start + 2_000_000, 10, false);
    long[1].end_unix_nano += 10 * DAY;
    store.append(long).await.unwrap();
    store.flush().await.unwrap();

    let window = |from: u64, to: u64| TraceQuery {
        start_min: Some(from),
        start_max: Some(to),
        limit: 10,
        ..Default::default()
    };
    let sorted = |mut ids: Vec<TraceId>| {
        ids.sort();
        ids
    };
    let ahead_hour = window(start + ahead - 60 * 1_000_000_000, start + ahead + 3_600_000_000_000);
    let between = window(start + DAY + 3_600_000_000_000, start + 2 * DAY);
    let want = sorted(vec![mixed[0].trace_id, all_ahead[0].trace_id]);
    let check = |q: QueryEngine, blocks: usize| {
        let (mixed, all_ahead, want, ahead_hour, between) = (&mixed, &all_ahead, &want, &ahead_hour, &between);
        let sorted = &sorted;
        async move {
            let snap = q.store().snapshot();
            assert_eq!(snap.blocks.len(), blocks);
            let block = snap
                .blocks
                .iter()
                .find(|b| b.meta.ahead_starts.as_ref().is_some_and(|a| !a.is_empty()))
                .expect("a block keeps where its spans ahead start");
            let ranges = block.meta.ahead_starts.as_ref().unwrap();
            assert!(ranges.len() <= MAX_AHEAD_RANGES, "{ranges:?}");
            for s in [&mixed[2]].into_iter().chain(all_ahead) {
                let t = s.start_unix_nano;
                assert!(ranges.iter().any(|r| r[0] <= t && t <= r[1]), "{t} not in {ranges:?}");
            }
            assert!(block.meta.row_groups.iter().any(|g| g.ahead));
            let last_ahead = all_ahead.iter().map(|s| s.start_unix_nano).max().unwrap();
            assert_eq!(block.meta.latest_start_until(u64::MAX), last_ahead);
            if blocks == 2 {
                // The other block's range reaches its cap through a span's end only: its starts
                // are still bounded, so limited searches need not read it first.
                let other = snap
                    .blocks
                    .iter()
                    .find(|b| b.meta.ahead_starts.as_ref().is_some_and(|a| a.is_empty()))
                    .expect("the block without spans ahead");
                assert_eq!(other.meta.max_end, other.meta.times_capped_at());
                assert_eq!(other.meta.latest_start_until(u64::MAX), other.meta.max_end);
            }
            // The newest matching span of all is ahead: a limited search with no window takes
            // its trace, from the block listed as holding the latest start.
            let newest = q
                .search(&TraceQuery {
                    limit: 1,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(
                newest.iter().map(|s| s.trace_id).collect::<Vec<_>>(),
                [all_ahead[0].trace_id]
            );
            assert!(
                !block
                    .meta
                    .overlaps(between.start_min.unwrap(), between.start_max.unwrap()),
                "a window between the range and the spans ahead does not read the block"
            );
            let found = q.search(ahead_hour).await.unwrap();
            assert_eq!(sorted(found.iter().map(|s| s.trace_id).collect()), *want);
            let traces = q.find_traces(ahead_hour).await.unwrap();
            assert_eq!(sorted(traces.iter().map(|t| t[0].trace_id).collect()), *want);
            let by_service = TraceQuery {
                service: Some("payment".into()),
                ..ahead_hour.clone()
            };
            let found = q.search(&by_service).await.unwrap();
            assert_eq!(sorted(found.iter().map(|s| s.trace_id).collect()), *want);
            assert!(q.search(between).await.unwrap().is_empty());
            // Calls whose two spans started in the window: the trace ahead's (the mixed trace's
            // payment span has its parent an hour before the window).
            let deps = q
                .dependencies(ahead_hour.start_min.unwrap(), ahead_hour.start_max.unwrap())
                .await
                .unwrap();
            let calls: Vec<(String, String, u64)> =
                deps.into_iter().map(|d| (d.parent, d.child, d.call_count)).collect();
            let want_calls = [
                ("checkout", "db-proxy"),
                ("checkout", "payment"),
                ("frontend", "checkout"),
            ];
            assert_eq!(
                calls,
                want_calls.map(|(p, c)| (p.to_string(), c.to_string(), 1)).to_vec()
            );
        }
    };
    check(QueryEngine::new(store.clone()), 2).await;
    store.shutdown().await.unwrap();
    drop(store);

    let store = Store::open(dir.path(), cfg()).await.unwrap();
    check(QueryEngine::new(store.clone()), 2).await;
    assert_eq!(store.compact_once().await.unwrap(), 2);
    check(QueryEngine::new(store.clone()), 1).await;
    store.shutdown().await.unwrap();
}

/// Spans stamped far in the future (a client whose clock is years ahead) do not keep their
/// block forever: retention ages a block by when it was written when that is earlier than its
/// newest span, and the size cap deletes it before blocks of real recent data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_the_future_expire_with_their_block() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), retaining(2, 0)).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let n = now();
    let future = g.trace(n + 3650 * DAY, 10, false);
    store.append(future.clone()).await.unwrap();
    store.flush().await.unwrap();
    // Stamped after the future block was written, as real data arriving later would be.
    let recent = g.trace(now(), 10, false);
    store.append(recent.clone()).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.stats().blocks, 2);

    // Within the retention period both stay.
    assert_eq!(store.enforce_retention(n + DAY).await.unwrap(), 0);
    assert_eq!(q.trace(&future[0].trace_id).await.unwrap().len(), 4);
    // By size, the future block goes first: it was written first.
    let sizes: Vec<u64> = store.snapshot().blocks.iter().map(|b| b.meta.total_bytes()).collect();
    store.shutdown().await.unwrap();
    drop((q, store));
    let store = Store::open(dir.path(), retaining(2, sizes.iter().max().unwrap() + 1))
        .await
        .unwrap();
    let q = QueryEngine::new(store.clone());
    assert_eq!(store.enforce_retention(n + DAY).await.unwrap(), 1);
    assert!(q.trace(&future[0].trace_id).await.unwrap().is_empty());
    assert_eq!(q.trace(&recent[0].trace_id).await.unwrap().len(), 4);
    store.shutdown().await.unwrap();
    drop((q, store));

    // By age: a block written more than the retention period ago goes, future spans or not.
    let store = Store::open(dir.path(), retaining(2, 0)).await.unwrap();
    store.append(future.clone()).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.enforce_retention(n + DAY).await.unwrap(), 0);
    assert_eq!(store.enforce_retention(n + 3 * DAY).await.unwrap(), 2);
    assert_eq!(store.stats().blocks, 0);
    store.shutdown().await.unwrap();
}

/// Dependencies taken from the blocks' metas (windows that hold blocks whole) answer as
/// reading the blocks does, window by window: with spans sent twice, parents that start after
/// their children, parents lost, traces of over 64 spans (whose parents are found by an
/// index) and traces split across blocks. The same store is asked again with the metas'
/// calls removed, so every block is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_from_block_metas_match_reading_the_blocks() {
    random_seed();
    let dir = tempfile::tempdir().unwrap();
    let g = Gen::new();
    let minute = 60 * 1_000_000_000;
    let base = now() - 60 * minute;
    // Four blocks; block k holds traces starting 8k to 8k + 7 minutes after `base`, and
    // every fifth trace of it has its last spans in block k + 1.
    let mut blocks: Vec<Vec<Span>> = vec![Vec::new(); 4];
    for k in 0..4u64 {
        for i in 0..1500 {
            let mut t = g.trace(base + k * 8 * minute + fastrand::u64(..7 * minute), 30, false);
            match i % 6 {
                0 => t.push(t[1].clone()),
                1 => t[1].start_unix_nano = t[3].start_unix_nano + 1,
                2 => t[2].parent_span_id = rid(),
                3 if i % 12 == 3 => {
                    for n in 0..100u64 {
                        let mut s = t[2 + (n % 2) as usize].clone();
                        s.span_id = rid();
                        s.parent_span_id = t[(n % 4) as usize].span_id;
                        s.resource = t[(n % 3) as usize].resource.clone();
                        s.start_unix_nano += n;
                        t.push(s);
                    }
                }
                _ => {}
            }
            if i % 5 == 4 && k < 3 {
                blocks[k as usize + 1].extend(t.split_off(2));
            }
            blocks[k as usize].extend(t);
        }
    }
    let store = big_head_store(dir.path()).await;
    for spans in &blocks {
        store.append(spans.clone()).await.unwrap();
        store.flush().await.unwrap();
    }
    let snap = store.snapshot();
    assert_eq!(snap.blocks.len(), 4);
    assert!(snap.blocks.iter().any(|b| b.meta.row_groups.len() > 1));
    let unresolved: u64 = snap
        .blocks
        .iter()
        .map(|b| b.meta.calls.as_ref().expect("calls").unresolved)
        .sum();
    assert!(unresolved > 0);
    drop(snap);
    let windows = [
        (0, u64::MAX),
        (base + 7 * minute + minute / 2, u64::MAX),
        (base, base + 23 * minute + minute / 2),
        (base + 3 * minute, base + 20 * minute),
        (base + 12 * minute, base + 13 * minute),
    ];
    let ask = |q: QueryEngine| async move {
        let mut answers = Vec::new();
        for (lo, hi) in windows {
            answers.push(deps(q.dependencies(lo, hi).await.unwrap()));
        }
        answers
    };
    let from_metas = ask(QueryEngine::new(store.clone()).with_read_parallelism(2)).await;
    assert!(from_metas.iter().all(|a| !a.is_empty()));
    store.shutdown().await.unwrap();
    drop(store);

    for entry in std::fs::read_dir(dir.path().join("blocks")).unwrap() {
        let path = entry.unwrap().path().join(skein_store::block::META_FILE);
        let mut meta: skein_store::block::BlockMeta = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        meta.calls = None;
        std::fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();
    }
    let store = big_head_store(dir.path()).await;
    assert!(store.snapshot().blocks.iter().all(|b| b.meta.calls.is_none()));
    let read = ask(QueryEngine::new(store.clone()).with_read_parallelism(2)).await;
    for ((window, a), b) in windows.iter().zip(&from_metas).zip(&read) {
        assert_eq!(a, b, "window {window:?}: from the metas, then read");
    }
}

/// A block the window holds whole whose unresolved children cannot be read (it is damaged)
/// gives none of its calls, as a block whose scan fails: the first answer, which says the
/// block may be missing, and the next, which leaves the block out, agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_leave_out_all_of_a_damaged_block() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), cfg()).await.unwrap();
    let q = QueryEngine::new(store.clone());
    let g = Gen::new();
    let base = now() - 600 * 1_000_000_000;
    // Each trace: frontend → checkout → {payment, db-proxy}, three calls.
    let traces: Vec<Vec<Span>> = (0..60).map(|i| g.trace(base + i * 1_000_000, 30, false)).collect();
    let first: Vec<Span> = traces[..20]
        .iter()
        .flatten()
        .chain(traces[20..40].iter().flat_map(|t| &t[..2]))
        .cloned()
        .collect();
    let second: Vec<Span> = traces[20..40]
        .iter()
        .flat_map(|t| &t[2..])
        .chain(traces[40..].iter().flatten())
        .cloned()
        .collect();
    store.append(first).await.unwrap();
    store.flush().await.unwrap();
    let first_id = store.snapshot().blocks[0].meta.id.clone();
    store.append(second).await.unwrap();
    store.flush().await.unwrap();
    let snap = store.snapshot();
    let second = snap.blocks.iter().find(|b| b.meta.id != first_id).unwrap().clone();
    assert_eq!(second.meta.calls.as_ref().unwrap().unresolved, 40);
    assert_eq!(total_calls(q.dependencies(0, u64::MAX).await.unwrap()), 60 * 3);

    damage_pages(&dir.path().join("blocks").join(&second.meta.id).join("data.parquet"));
    drop((snap, second));
    // The first block's whole traces, and frontend → checkout of the split ones.
    assert_eq!(total_calls(q.dependencies(0, u64::MAX).await.unwrap()), 20 * 3 + 20);
    assert_eq!(q.damaged_blocks_for(Asked::Window(0, u64::MAX)).len(), 1);
    assert_eq!(total_calls(q.dependencies(0, u64::MAX).await.unwrap()), 20 * 3 + 20);
}
