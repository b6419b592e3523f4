//! Block kernels: building a Parquet block from spans in memory ("block write"), and reading
//! one back from a store on local disk ("block scan": a column scan as search does it, and a
//! trace by id through bloom filter, row-group ranges and row filter).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use skein_model::{AnyValue, Event, KeyValue, Resource, Scope, Span, SpanKind, Status, StatusCode, TraceId};
use skein_store::block::new_block_id;
use skein_store::block::write::{choose_layout, spans_to_batch, BlockKeys};
use skein_store::{build_block, Store, StoreConfig, StoreError};

const SPANS: usize = 50_000;
/// The stages of `build_block` are measured on a head-sized input.
const STAGE_SPANS: usize = 100_000;
/// The columns a search reads first.
const SCAN_COLUMNS: &[&str] = &[
    "trace_id",
    "service_name",
    "name",
    "start_unix_nano",
    "duration_nano",
    "status_code",
];

fn block_write(c: &mut Criterion) {
    let spans = gen::spans(SPANS, 1);
    let refs: Vec<&Span> = spans.iter().collect();
    let built = build_block(&refs, new_block_id(), 0, std::time::Duration::MAX).expect("bench block builds");
    println!(
        "block write: {} spans in {} bytes of parquet ({:.1} bytes/span)",
        built.meta.span_count,
        built.meta.data_bytes,
        built.meta.data_bytes as f64 / built.meta.span_count.max(1) as f64
    );

    let mut g = c.benchmark_group("block write");
    g.throughput(Throughput::Elements(SPANS as u64));
    // One build takes a good fraction of a second; criterion's minimum sample count is plenty.
    g.sample_size(10);
    g.bench_function("build_block", |b| {
        b.iter(|| {
            build_block(black_box(&refs), new_block_id(), 0, std::time::Duration::MAX).expect("bench block builds")
        })
    });
    g.finish();
}

fn block_scan(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let spans = gen::spans(SPANS, 2);
    // Every 50th span's trace: a spread of ids across the block's row groups.
    let ids: Vec<TraceId> = spans.iter().step_by(50).map(|s| s.trace_id).collect();
    let store = rt
        .block_on(async {
            let store = Store::open(dir.path(), StoreConfig::default()).await?;
            store.append(spans).await?;
            // Cuts the head into a block and waits until it is on disk.
            store.flush().await?;
            Ok::<_, StoreError>(store)
        })
        .expect("store with one block");
    let block = store.snapshot().blocks.first().cloned().expect("flush wrote a block");

    let mut g = c.benchmark_group("block scan");
    g.throughput(Throughput::Elements(block.meta.span_count));
    g.bench_function("columns", |b| {
        b.iter(|| {
            let batches = rt.block_on(block.scan(black_box(SCAN_COLUMNS), None)).expect("scan");
            batches.iter().map(|b| b.num_rows()).sum::<usize>()
        })
    });
    g.throughput(Throughput::Elements(1));
    let mut next = 0usize;
    g.bench_function("trace by id", |b| {
        b.iter(|| {
            next = (next + 1) % ids.len();
            let spans = rt.block_on(block.trace(black_box(&ids[next]))).expect("trace by id");
            assert!(!spans.is_empty());
            spans
        })
    });
    g.finish();

    drop(block);
    if let Err(e) = rt.block_on(store.shutdown()) {
        eprintln!("store shutdown: {e}");
    }
}

/// The stages of a level-0 block build, one at a time: picking the layout and turning spans into
/// Arrow columns (the rest of `build_block` is Parquet encoding, summaries and bloom).
fn block_stages(c: &mut Criterion) {
    let spans = gen::spans(STAGE_SPANS, 3);
    let mut refs: Vec<&Span> = spans.iter().collect();
    refs.sort_unstable_by_key(|s| (s.trace_id, s.start_unix_nano));
    let layout = choose_layout(&refs);
    println!(
        "block stages: {} spans, {} dedicated columns",
        refs.len(),
        layout.dedicated.len()
    );

    let mut g = c.benchmark_group("block stages");
    g.throughput(Throughput::Elements(STAGE_SPANS as u64));
    g.sample_size(10);
    g.bench_function("choose_layout", |b| b.iter(|| choose_layout(black_box(&refs))));
    g.bench_function("spans_to_batch", |b| {
        b.iter(|| {
            let mut keys = BlockKeys::default();
            refs.chunks(skein_store::block::BUILD_BATCH_ROWS)
                .map(|chunk| spans_to_batch(black_box(chunk), &layout, &mut keys).expect("batch"))
                .count()
        })
    });
    // The same spans in the order they were made, which is the order they lie in memory: with
    // the prefetching in `spans_to_batch`, the sorted walk above should take as long.
    let arrival: Vec<&Span> = spans.iter().collect();
    g.bench_function("spans_to_batch arrival order", |b| {
        b.iter(|| {
            let mut keys = BlockKeys::default();
            arrival
                .chunks(skein_store::block::BUILD_BATCH_ROWS)
                .map(|chunk| spans_to_batch(black_box(chunk), &layout, &mut keys).expect("batch"))
                .count()
        })
    });
    g.finish();
}

criterion_group!(benches, block_write, block_stages, block_scan);
criterion_main!(benches);

/// Spans shaped like `skein load`'s: traces of 5–15 spans over a few services, 10–20
/// semantic-convention attributes, 0–2 events, ~2% errors. Deterministic for a given seed so
/// runs compare like with like.
mod gen {
    use super::*;

    /// SplitMix64: deterministic, so every run builds and reads the same block.
    pub struct Rng(u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
            lo + self.below(hi - lo + 1)
        }
        pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[self.below(xs.len() as u64) as usize]
        }
    }

    const SERVICES: &[&str] = &[
        "frontend",
        "checkout",
        "cart",
        "payment",
        "product-catalog",
        "shipping",
        "currency",
        "recommendation",
    ];
    const ROUTES: &[&str] = &[
        "/api/products/{productId}",
        "/api/cart",
        "/api/checkout",
        "/api/recommendations",
    ];
    const METHODS: &[&str] = &["GetCart", "AddItem", "PlaceOrder", "Charge", "GetProduct", "Convert"];
    const STATEMENTS: &[&str] = &[
        "SELECT id, status, total FROM orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT 20",
        "INSERT INTO orders (id, user_id, total, currency) VALUES ($1, $2, $3, $4)",
        "HGET cart:user items",
    ];
    const REGIONS: &[&str] = &["eu-west-1", "us-east-1", "us-west-2", "ap-southeast-1"];

    fn s(key: &str, v: String) -> KeyValue {
        KeyValue::new(key, AnyValue::String(v))
    }

    /// One extra attribute, by index into a fixed list of semantic-convention-style keys.
    fn extra(i: u64, r: &mut Rng) -> KeyValue {
        match i {
            0 => s("enduser.id", format!("user-{}", r.below(5000))),
            1 => s("session.id", format!("sess-{}", r.below(20000))),
            2 => s("app.tenant.id", format!("tenant-{}", r.below(40))),
            3 => s("app.region", r.pick(REGIONS).to_string()),
            4 => KeyValue::new("app.items.count", AnyValue::Int(r.below(25) as i64)),
            5 => KeyValue::new("app.order.amount", AnyValue::Double(r.below(90_000) as f64 / 100.0)),
            6 => KeyValue::new("app.cache.hit", AnyValue::Bool(r.below(10) < 7)),
            7 => s("thread.name", format!("worker-{}", r.below(8))),
            8 => KeyValue::new("code.lineno", AnyValue::Int(r.range(10, 900) as i64)),
            9 => s(
                "network.peer.address",
                format!("10.42.{}.{}", r.below(8), r.range(2, 250)),
            ),
            10 => s(
                "app.feature_flag.variant",
                r.pick(&["control", "treatment-a", "treatment-b"]).to_string(),
            ),
            11 => s("app.user.tier", r.pick(&["free", "pro", "enterprise"]).to_string()),
            12 => KeyValue::new("app.retry.count", AnyValue::Int(r.below(3) as i64)),
            13 => s(
                "code.function",
                r.pick(&["handle", "process", "validate", "load"]).to_string(),
            ),
            _ => s("app.request.priority", r.pick(&["low", "normal", "high"]).to_string()),
        }
    }
    const EXTRAS: u64 = 15;

    pub fn spans(n: usize, seed: u64) -> Vec<Span> {
        let mut r = Rng(seed);
        let resources: Vec<Arc<Resource>> = SERVICES
            .iter()
            .map(|name| {
                Arc::new(Resource {
                    attributes: vec![
                        s("service.name", name.to_string()),
                        s("service.version", format!("1.{}.0", r.below(20))),
                        s("host.name", format!("{name}-6b7f9c-{:05x}", r.below(1 << 20))),
                        s("deployment.environment", "production".to_string()),
                        s("telemetry.sdk.language", "go".to_string()),
                    ],
                    dropped_attributes_count: 0,
                })
            })
            .collect();
        let scope = Arc::new(Scope {
            name: "bench".into(),
            version: "1.0".into(),
            ..Default::default()
        });
        let base = 1_750_000_000_000_000_000u64;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let size = (r.range(5, 15) as usize).min(n - out.len());
            let trace_id = (((r.next() as u128) << 64) | r.next() as u128 | 1).to_be_bytes();
            let start = base + r.below(60_000_000_000);
            let first = out.len();
            for k in 0..size {
                let svc = if k == 0 {
                    0
                } else {
                    r.below(SERVICES.len() as u64) as usize
                };
                let (parent, st, dur) = if k == 0 {
                    ([0; 8], start, r.range(2_000_000, 800_000_000))
                } else {
                    // A child starts in the first half of its parent and ends before it does.
                    let p: &Span = &out[first + r.below(k as u64) as usize];
                    let pd = p.duration_nano();
                    (
                        p.span_id,
                        p.start_unix_nano + r.below(pd / 2 + 1),
                        (pd / 2).max(1000) * r.range(1, 9) / 10,
                    )
                };
                let kind = match (k, r.below(3)) {
                    (0, _) | (_, 0) => SpanKind::Server,
                    (_, 1) => SpanKind::Client,
                    _ => SpanKind::Internal,
                };
                let (method, route, op) = (r.pick(&["GET", "POST"]), r.pick(ROUTES), r.pick(METHODS));
                let name = match kind {
                    SpanKind::Server => format!("{method} {route}"),
                    _ => format!("{}/{op}", SERVICES[svc]),
                };
                let mut attributes = match kind {
                    SpanKind::Server => vec![
                        s("http.request.method", method.to_string()),
                        s("http.route", route.to_string()),
                        KeyValue::new("http.response.status_code", AnyValue::Int(200)),
                        s("url.scheme", "https".to_string()),
                        s("server.address", SERVICES[svc].to_string()),
                    ],
                    SpanKind::Client if r.below(2) == 0 => vec![
                        s("db.system", r.pick(&["postgresql", "redis"]).to_string()),
                        s("db.statement", r.pick(STATEMENTS).to_string()),
                        s("server.address", "db.shop.svc.cluster.local".to_string()),
                    ],
                    SpanKind::Client => vec![
                        s("rpc.system", "grpc".to_string()),
                        s("rpc.service", "oteldemo.CartService".to_string()),
                        s("rpc.method", op.to_string()),
                        KeyValue::new("rpc.grpc.status_code", AnyValue::Int(0)),
                    ],
                    _ => vec![s("code.namespace", "shop.orders".to_string())],
                };
                let want = r.range(10, 20) as usize;
                let offset = r.below(EXTRAS);
                for j in 0..EXTRAS {
                    if attributes.len() >= want {
                        break;
                    }
                    attributes.push(extra((offset + j) % EXTRAS, &mut r));
                }
                let mut events: Vec<Event> = (0..r.below(3))
                    .map(|_| Event {
                        time_unix_nano: st + r.below(dur + 1),
                        name: "log".into(),
                        attributes: vec![
                            s("log.severity", "INFO".into()),
                            s("log.message", "cache miss, loading from backend".into()),
                        ],
                        dropped_attributes_count: 0,
                    })
                    .collect();
                let mut status = Status::default();
                if r.below(50) == 0 {
                    status = Status {
                        code: StatusCode::Error,
                        message: "context deadline exceeded".into(),
                    };
                    events.push(Event {
                        time_unix_nano: st + dur,
                        name: "exception".into(),
                        attributes: vec![
                            s("exception.type", "context.DeadlineExceeded".into()),
                            s("exception.message", "context deadline exceeded".into()),
                        ],
                        dropped_attributes_count: 0,
                    });
                }
                // Random like a real SDK's (and the loader's): ids do not compress.
                let span_id = (r.next() | 1).to_be_bytes();
                out.push(Span {
                    trace_id,
                    span_id,
                    parent_span_id: parent,
                    flags: 1,
                    name,
                    kind,
                    start_unix_nano: st,
                    end_unix_nano: st + dur,
                    attributes,
                    events,
                    status,
                    resource: resources[svc].clone(),
                    scope: scope.clone(),
                    ..Default::default()
                });
            }
        }
        out
    }
}
