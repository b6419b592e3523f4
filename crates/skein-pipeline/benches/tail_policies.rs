//! Tail-sampling policy evaluation: one `decide` per 10-span trace, for a typical policy set
//! (drop health checks, keep errors and slow traces, a probabilistic baseline, a rate limit)
//! and for single policies, reported as traces/s and spans/s.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use skein_model::{AnyValue, KeyValue, Resource, Span, Status, StatusCode};
use skein_pipeline::sampling::policies::{Policies, PolicyConfig};

const TRACES: usize = 1000;
const SPANS_PER_TRACE: usize = 10;

/// 1000 traces of 10 spans over 5 services; one trace in 50 has an error, one in 20 is slow,
/// one in 10 is a health check.
fn traces() -> Vec<([u8; 16], Vec<Span>)> {
    let resources: Vec<Arc<Resource>> = (0..5)
        .map(|i| {
            Arc::new(Resource {
                attributes: vec![
                    KeyValue::string("service.name", format!("service-{i}")),
                    KeyValue::string("deployment.environment", "prod"),
                ],
                dropped_attributes_count: 0,
            })
        })
        .collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..TRACES)
        .map(|t| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&state.to_le_bytes());
            id[8..].copy_from_slice(&(t as u64).to_le_bytes());
            let route = if t % 10 == 0 { "/healthz" } else { "/api/orders/{id}" };
            let slow = t % 20 == 0;
            let spans = (0..SPANS_PER_TRACE)
                .map(|s| Span {
                    trace_id: id,
                    name: format!("op-{s}"),
                    start_unix_nano: 1_000_000_000 + s as u64 * 1_000_000,
                    end_unix_nano: 1_000_000_000 + s as u64 * 1_000_000 + if slow { 900_000_000 } else { 5_000_000 },
                    attributes: vec![
                        KeyValue::string("http.route", route),
                        KeyValue::new("http.response.status_code", AnyValue::Int(200)),
                        KeyValue::string("http.request.method", "GET"),
                    ],
                    status: Status {
                        code: if t % 50 == 0 && s == 3 {
                            StatusCode::Error
                        } else {
                            StatusCode::Unset
                        },
                        message: String::new(),
                    },
                    resource: resources[t % 5].clone(),
                    ..Default::default()
                })
                .collect();
            (id, spans)
        })
        .collect()
}

fn policies(toml_text: &str) -> Policies {
    #[derive(serde::Deserialize)]
    struct File {
        policies: Vec<PolicyConfig>,
    }
    let file: File = toml::from_str(toml_text).expect("bench config parses");
    Policies::new(&file.policies).expect("bench config is valid")
}

const TYPICAL: &str = r#"
[[policies]]
name = "drop-health"
type = "drop"
drop = { drop_sub_policy = [{ name = "health", type = "string_attribute", string_attribute = { key = "http.route", values = ["^/(healthz|readyz)$"], enabled_regex_matching = true } }] }

[[policies]]
name = "errors"
type = "status_code"
status_code = { status_codes = ["ERROR"] }

[[policies]]
name = "slow"
type = "latency"
latency = { threshold_ms = 500 }

[[policies]]
name = "baseline"
type = "probabilistic"
probabilistic = { sampling_percentage = 10 }

[[policies]]
name = "cap"
type = "rate_limiting"
rate_limiting = { spans_per_second = 1000000000 }
"#;

const SINGLE: &[(&str, &str)] = &[
    ("status_code", r#"status_code = { status_codes = ["ERROR"] }"#),
    ("latency", "latency = { threshold_ms = 500 }"),
    ("probabilistic", "probabilistic = { sampling_percentage = 10 }"),
    (
        "string_attribute",
        r#"string_attribute = { key = "service.name", values = ["service-9"] }"#,
    ),
    (
        "string_attribute_regex",
        r#"string_attribute = { key = "http.route", values = ["^/admin/.*"], enabled_regex_matching = true }"#,
    ),
    (
        "numeric_attribute",
        r#"numeric_attribute = { key = "http.response.status_code", min_value = 500 }"#,
    ),
];

fn bench(c: &mut Criterion) {
    let traces = traces();
    let mut group = c.benchmark_group("tail_policies");
    group.throughput(Throughput::Elements((TRACES * SPANS_PER_TRACE) as u64));

    let mut run = |name: &str, mut policies: Policies| {
        let now = Instant::now();
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut kept = 0;
                for (id, spans) in &traces {
                    kept += policies.decide(id, spans, now) as usize;
                }
                black_box(kept)
            })
        });
    };
    run("typical_5_policies", policies(TYPICAL));
    for (kind, table) in SINGLE {
        let kind_name = kind.trim_end_matches("_regex");
        run(
            kind,
            policies(&format!(
                "[[policies]]\nname = \"bench-{kind}\"\ntype = \"{kind_name}\"\n{table}\n"
            )),
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
