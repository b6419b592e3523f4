//! decode→batch: protobuf bytes of one loader-sized OTLP export request (1000 spans) to a
//! `SpanBatch`, the work every OTLP receiver does before admission.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use skein_model::jaeger::batch_to_model;
use skein_model::jaeger::proto as jaeger_proto;
use skein_model::jaeger::thrift::{self, Protocol};
use skein_model::otlp::pb::collector::trace::v1::ExportTraceServiceRequest;
use skein_model::otlp::{proto, wire_decode};
use skein_model::{AnyValue, Event, KeyValue, Resource, Scope, Span, SpanKind, Status, StatusCode};

const SPANS: usize = 1000;

fn decode_to_batch(c: &mut Criterion) {
    let mut spans = gen::spans(SPANS, 42);
    // A collector-style request groups spans by service, one resource block each.
    spans.sort_by(|a, b| a.service_name().cmp(b.service_name()));
    let bytes = proto::encode_request(spans.iter()).encode_to_vec();
    println!(
        "decode→batch: {SPANS} spans in {} bytes ({} bytes/span)",
        bytes.len(),
        bytes.len() / SPANS
    );

    let mut g = c.benchmark_group("decode→batch");
    g.throughput(Throughput::Elements(SPANS as u64));
    // What the receivers run: protobuf read straight into the model.
    g.bench_function("otlp proto", |b| {
        b.iter(|| {
            let decoded = wire_decode::decode_request(black_box(bytes.as_slice())).expect("bench request decodes");
            assert!(decoded.rejected.is_empty());
            black_box(decoded.batch)
        })
    });
    // The reference path: prost's generated structs, then converted.
    g.bench_function("otlp proto via prost structs", |b| {
        b.iter(|| {
            let req = ExportTraceServiceRequest::decode(black_box(bytes.as_slice())).expect("bench request decodes");
            let decoded = proto::decode_request(req);
            assert!(decoded.rejected.is_empty());
            black_box(decoded.batch)
        })
    });

    // The same spans as Jaeger clients would send them, decoded to the model by skein's Jaeger
    // codecs: a thrift Batch per service (binary: collector HTTP and agent 6832; compact: agent
    // 6831) and one api_v2 PostSpansRequest per service (gRPC 14250).
    let groups = skein_model::jaeger::convert::group_by_process(&spans);
    for protocol in [Protocol::Binary, Protocol::Compact] {
        let batches: Vec<Vec<u8>> = groups
            .iter()
            .map(|(process, spans)| thrift::encode_batch(protocol, process, spans, None, None))
            .collect();
        let bytes: usize = batches.iter().map(Vec::len).sum();
        println!("decode→batch: jaeger thrift {protocol:?}: {} bytes/span", bytes / SPANS);
        g.bench_function(format!("jaeger thrift {protocol:?}").to_lowercase(), |b| {
            b.iter(|| {
                for bytes in &batches {
                    let batch = thrift::decode_batch(protocol, black_box(bytes)).expect("bench batch decodes");
                    let decoded = batch_to_model(batch.process, batch.spans);
                    assert!(decoded.rejected.is_empty());
                    black_box(decoded.batch);
                }
            })
        });
    }
    let requests: Vec<Vec<u8>> = jaeger_proto::batches_from_model(&spans)
        .into_iter()
        .map(|batch| jaeger_proto::PostSpansRequest { batch: Some(batch) }.encode_to_vec())
        .collect();
    let bytes: usize = requests.iter().map(Vec::len).sum();
    println!("decode→batch: jaeger proto: {} bytes/span", bytes / SPANS);
    g.bench_function("jaeger proto", |b| {
        b.iter(|| {
            for bytes in &requests {
                let req = jaeger_proto::PostSpansRequest::decode(black_box(bytes.as_slice())).expect("decodes");
                let decoded = jaeger_proto::decode_post_spans(req);
                assert!(decoded.rejected.is_empty());
                black_box(decoded.batch);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, decode_to_batch);
criterion_main!(benches);

/// Spans shaped like `skein load`'s: traces of 5–15 spans over a few services, 10–20
/// semantic-convention attributes, 0–2 events, ~2% errors. Deterministic for a given seed so
/// runs compare like with like.
mod gen {
    use super::*;

    /// SplitMix64; this crate has no random-number dependency and needs none beyond this.
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
        let mut next_span = 1u64;
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
                out.push(Span {
                    trace_id,
                    span_id: next_span.to_be_bytes(),
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
                next_span += 1;
            }
        }
        out
    }
}
