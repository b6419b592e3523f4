//! Remote sampling costs: the adaptive root-span counter the pipeline runs on every batch, and
//! answering one strategy request (lookup + JSON), with and without adaptive probabilities.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use skein_model::{AnyValue, KeyValue, Resource, Span};
use skein_pipeline::sampling::{AdaptiveConfig, RootSpanCounter, StrategyStore};

const SPANS: usize = 1000;

/// A loader-like batch: 5 services, 20 operations each, one span in ten a root.
fn batch() -> Vec<Span> {
    let resources: Vec<Arc<Resource>> = (0..5)
        .map(|i| {
            Arc::new(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: AnyValue::String(format!("service-{i}")),
                }],
                dropped_attributes_count: 0,
            })
        })
        .collect();
    (0..SPANS)
        .map(|i| {
            // Spans come in runs of ten (a root, then nine children) so the 100 roots cover
            // every (service, operation) pair once.
            let j = i / 10;
            Span {
                name: format!("GET /api/v1/resource-{}", (j / 5) % 20),
                parent_span_id: if i % 10 == 0 { [0; 8] } else { [1; 8] },
                resource: resources[j % 5].clone(),
                ..Default::default()
            }
        })
        .collect()
}

fn root_span_counter(c: &mut Criterion) {
    let spans = batch();
    let counter = RootSpanCounter::default();
    let mut g = c.benchmark_group("adaptive root-span counter");
    g.throughput(Throughput::Elements(SPANS as u64));
    g.bench_function("observe 1000-span batch (100 roots)", |b| {
        b.iter(|| counter.observe(black_box(&spans)))
    });
    g.finish();
}

fn strategy_request(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("skein-sampling-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("strategies.json");
    let services: Vec<String> = (0..100)
        .map(|i| format!(r#"{{"service":"service-{i}","type":"probabilistic","param":0.5}}"#))
        .collect();
    std::fs::write(
        &path,
        format!(
            r#"{{"default_strategy":{{"type":"probabilistic","param":0.1}},"service_strategies":[{}]}}"#,
            services.join(",")
        ),
    )
    .unwrap();
    let store = StrategyStore::open(Some(&path)).unwrap();
    let mut g = c.benchmark_group("strategy request");
    g.bench_function("file strategy → api_v2 JSON", |b| {
        b.iter(|| black_box(store.strategy_for(black_box("service-42")).to_json().to_string()))
    });
    let counter = store.enable_adaptive(AdaptiveConfig {
        target_traces_per_second: 1.0,
        ..Default::default()
    });
    counter.observe(&batch());
    store.recompute_adaptive(std::time::Duration::from_secs(60));
    g.bench_function("file + 20 adaptive operations → api_v2 JSON", |b| {
        b.iter(|| black_box(store.strategy_for(black_box("service-2")).to_json().to_string()))
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, root_span_counter, strategy_request);
criterion_main!(benches);
