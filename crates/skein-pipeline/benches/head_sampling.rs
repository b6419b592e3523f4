//! Head sampling cost per span: the consistent probability test, with and without a tracestate
//! to parse, and the per-service rate limiter, on 1000-span batches from five services.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use skein_model::{AnyValue, KeyValue, Resource, Span};
use skein_pipeline::sampling::head::{HeadSampler, HeadSamplingConfig};

const SPANS: usize = 1000;

/// Five services, each sending runs of 200 spans (one export each), ten spans per trace.
fn batch(trace_state: &str) -> Vec<Span> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let resources: Vec<Arc<Resource>> = (0..5)
        .map(|i| {
            Arc::new(Resource {
                attributes: vec![KeyValue::new("service.name", AnyValue::String(format!("service-{i}")))],
                dropped_attributes_count: 0,
            })
        })
        .collect();
    let mut trace_id = [0u8; 16];
    (0..SPANS)
        .map(|i| {
            if i % 10 == 0 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                trace_id[8..].copy_from_slice(&x.to_be_bytes());
            }
            Span {
                trace_id,
                span_id: [1; 8],
                flags: 0x101,
                trace_state: trace_state.into(),
                resource: resources[i / 200].clone(),
                ..Default::default()
            }
        })
        .collect()
}

fn bench(c: &mut Criterion, name: &str, cfg: HeadSamplingConfig, trace_state: &str) {
    let sampler = HeadSampler::new(&cfg).unwrap();
    let spans = batch(trace_state);
    let mut g = c.benchmark_group("head sampling");
    g.throughput(Throughput::Elements(SPANS as u64));
    g.bench_function(name, |b| {
        b.iter_batched(
            || spans.clone(),
            |mut s| black_box(sampler.retain(&mut s)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn head_sampling(c: &mut Criterion) {
    let p = |probability| HeadSamplingConfig {
        probability,
        ..Default::default()
    };
    // The batch clone alone, as a baseline for the rows below.
    bench(c, "off (clone of the batch only)", HeadSamplingConfig::default(), "");
    bench(c, "probability 0.1, no tracestate", p(0.1), "");
    // rv = max: every span is kept. With th:0 each gets th:e666 written; with th:f (stricter
    // than ours) the tracestate is only parsed.
    bench(
        c,
        "probability 0.1, tracestate parsed, every span kept and th rewritten",
        p(0.1),
        "ot=th:0;rv:ffffffffffffff,vendor=x",
    );
    bench(
        c,
        "probability 0.1, tracestate parsed, kept, left as is",
        p(0.1),
        "ot=th:f;rv:ffffffffffffff,vendor=x",
    );
    let mut limited = HeadSamplingConfig::default();
    limited.rate_limit.spans_per_second = 1e12; // never throttles: the steady-state cost
    bench(c, "rate limit, 5 services", limited, "");
}

criterion_group!(benches, head_sampling);
criterion_main!(benches);
