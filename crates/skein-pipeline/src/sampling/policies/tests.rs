use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use skein_model::{AnyValue, KeyValue, Resource, Span, Status, StatusCode, TraceId};

use super::*;

// ---- helpers ----

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct File {
    policies: Vec<PolicyConfig>,
}

fn parse(toml_text: &str) -> Vec<PolicyConfig> {
    toml::from_str::<File>(toml_text)
        .unwrap_or_else(|e| panic!("test config parses: {e}"))
        .policies
}

fn build(toml_text: &str) -> Result<Policies, String> {
    Policies::new(&parse(toml_text))
}

fn policies(toml_text: &str) -> Policies {
    build(toml_text).unwrap_or_else(|e| panic!("test config is valid: {e}"))
}

/// One policy named `name` of type `kind` with the given sub-table line.
fn single(name: &str, kind: &str, table: &str) -> Policies {
    policies(&format!(
        "[[policies]]\nname = \"{name}\"\ntype = \"{kind}\"\n{table}\n"
    ))
}

fn id(n: u64) -> TraceId {
    let mut id = [0u8; 16];
    id[8..].copy_from_slice(&n.to_be_bytes());
    id[0] = 1;
    id
}

fn span() -> Span {
    Span {
        trace_id: id(1),
        span_id: [1; 8],
        start_unix_nano: 1_000_000_000,
        end_unix_nano: 1_001_000_000,
        ..Default::default()
    }
}

fn with_attr(key: &str, value: AnyValue) -> Span {
    Span {
        attributes: vec![KeyValue::new(key, value)],
        ..span()
    }
}

fn with_resource_attr(key: &str, value: AnyValue) -> Span {
    Span {
        resource: Arc::new(Resource {
            attributes: vec![KeyValue::new(key, value)],
            dropped_attributes_count: 0,
        }),
        ..span()
    }
}

fn timed(start_ms: u64, end_ms: u64) -> Span {
    Span {
        start_unix_nano: 1_700_000_000_000_000_000 + start_ms * 1_000_000,
        end_unix_nano: 1_700_000_000_000_000_000 + end_ms * 1_000_000,
        ..span()
    }
}

fn with_status(code: StatusCode) -> Span {
    Span {
        status: Status {
            code,
            message: String::new(),
        },
        ..span()
    }
}

fn spans(n: usize) -> Vec<Span> {
    vec![span(); n]
}

fn decide(p: &mut Policies, spans: &[Span]) -> bool {
    p.decide(&id(1), spans, Instant::now())
}

fn s(v: &str) -> AnyValue {
    AnyValue::String(v.into())
}

#[test]
fn policies_can_move_to_the_sampler_task() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Policies>();
}

// ---- always_sample ----

#[test]
fn always_sample_keeps_everything_even_an_empty_trace() {
    let mut p = policies("[[policies]]\nname = \"all\"\ntype = \"always_sample\"\n");
    assert!(decide(&mut p, &spans(3)));
    assert!(decide(&mut p, &[]));
}

// ---- latency ----

#[test]
fn latency_is_latest_end_minus_earliest_start_over_all_spans() {
    let mut p = single("slow", "latency", "latency = { threshold_ms = 500 }");
    // Two short spans far apart make a long trace.
    assert!(decide(&mut p, &[timed(0, 10), timed(590, 600)]));
    assert!(!decide(&mut p, &[timed(0, 10), timed(100, 499)]));
    // Without an upper bound the threshold itself is enough.
    assert!(decide(&mut p, &[timed(0, 500)]));
    assert!(!decide(&mut p, &[timed(0, 499)]));
    // Sub-millisecond remainders are truncated, as the collector's Milliseconds().
    let mut almost = timed(0, 499);
    almost.end_unix_nano += 999_999;
    assert!(!decide(&mut p, &[almost]));
    assert!(!decide(&mut p, &[]), "no spans, no duration");
}

#[test]
fn latency_with_an_upper_bound_is_exclusive_below_and_inclusive_above() {
    let mut p = single(
        "band",
        "latency",
        "latency = { threshold_ms = 100, upper_threshold_ms = 200 }",
    );
    assert!(
        !decide(&mut p, &[timed(0, 100)]),
        "the lower bound is exclusive with an upper bound"
    );
    assert!(decide(&mut p, &[timed(0, 101)]));
    assert!(decide(&mut p, &[timed(0, 200)]));
    assert!(!decide(&mut p, &[timed(0, 201)]));
}

// ---- status_code ----

#[test]
fn status_code_matches_any_span_with_a_listed_code() {
    let mut errors = single("errors", "status_code", r#"status_code = { status_codes = ["ERROR"] }"#);
    assert!(decide(
        &mut errors,
        &[with_status(StatusCode::Ok), with_status(StatusCode::Error)]
    ));
    assert!(!decide(
        &mut errors,
        &[with_status(StatusCode::Ok), with_status(StatusCode::Unset)]
    ));

    let mut ok_or_unset = single(
        "ok-unset",
        "status_code",
        r#"status_code = { status_codes = ["OK", "UNSET"] }"#,
    );
    assert!(decide(&mut ok_or_unset, &[with_status(StatusCode::Unset)]));
    assert!(decide(&mut ok_or_unset, &[with_status(StatusCode::Ok)]));
    assert!(!decide(&mut ok_or_unset, &[with_status(StatusCode::Error)]));
}

// ---- string_attribute ----

#[test]
fn string_attribute_matches_span_and_resource_attributes() {
    let mut p = single(
        "svc",
        "string_attribute",
        r#"string_attribute = { key = "service.name", values = ["checkout", "cart"] }"#,
    );
    assert!(decide(&mut p, &[span(), with_attr("service.name", s("cart"))]));
    assert!(decide(&mut p, &[with_resource_attr("service.name", s("checkout"))]));
    assert!(!decide(&mut p, &[with_attr("service.name", s("payments"))]));
    assert!(!decide(&mut p, &[with_attr("other.key", s("cart"))]), "another key");
    assert!(!decide(&mut p, &[span()]), "no attributes at all");
    assert!(
        !decide(&mut p, &[with_attr("service.name", AnyValue::Int(7))]),
        "only strings match"
    );
    assert!(
        !decide(&mut p, &[with_attr("service.name", s("check"))]),
        "exact values are not prefixes"
    );
}

#[test]
fn string_attribute_empty_values_never_match() {
    let mut p = single(
        "empty",
        "string_attribute",
        r#"string_attribute = { key = "k", values = ["", "x"] }"#,
    );
    assert!(!decide(&mut p, &[with_attr("k", s(""))]));
    assert!(decide(&mut p, &[with_attr("k", s("x"))]));
}

#[test]
fn string_attribute_regexes_are_unanchored_like_the_collectors() {
    let mut p = single(
        "routes",
        "string_attribute",
        r#"string_attribute = { key = "http.route", values = ["/v1/name/.+", "^/health$"], enabled_regex_matching = true }"#,
    );
    assert!(
        decide(&mut p, &[with_attr("http.route", s("/api/v1/name/42"))]),
        "unanchored: matches inside"
    );
    assert!(decide(&mut p, &[with_attr("http.route", s("/health"))]));
    assert!(
        !decide(&mut p, &[with_attr("http.route", s("/healthz"))]),
        "anchored with ^$"
    );
    assert!(!decide(&mut p, &[with_attr("http.route", s("/v1/name/"))]));
}

#[test]
fn string_attribute_regex_is_right_for_many_distinct_values() {
    let mut p = single(
        "cached",
        "string_attribute",
        r#"string_attribute = { key = "k", values = ["^even-"], enabled_regex_matching = true, cache_max_size = 2 }"#,
    );
    for round in 0..3 {
        for i in 0..10 {
            let value = if i % 2 == 0 {
                format!("even-{i}")
            } else {
                format!("odd-{i}")
            };
            assert_eq!(
                decide(&mut p, &[with_attr("k", s(&value))]),
                i % 2 == 0,
                "round {round}, value {value}"
            );
        }
    }
}

#[test]
fn string_attribute_invert_match_keeps_traces_without_a_match_and_vetoes_those_with_one() {
    let invert = r#"string_attribute = { key = "service.name", values = ["noisy"], invert_match = true }"#;
    let mut p = single("not-noisy", "string_attribute", invert);
    assert!(decide(&mut p, &[with_attr("service.name", s("quiet"))]));
    assert!(
        decide(&mut p, &[span()]),
        "an absent key counts as not matching, so it is sampled"
    );
    assert!(!decide(&mut p, &[with_attr("service.name", s("noisy"))]));
    assert!(!decide(
        &mut p,
        &[span(), with_resource_attr("service.name", s("noisy"))]
    ));
}

// ---- numeric_attribute ----

#[test]
fn numeric_attribute_range_is_inclusive_and_accepts_ints_and_doubles() {
    let mut p = single(
        "5xx",
        "numeric_attribute",
        r#"numeric_attribute = { key = "http.status_code", min_value = 500, max_value = 599 }"#,
    );
    let code = |v: AnyValue| vec![with_attr("http.status_code", v)];
    assert!(decide(&mut p, &code(AnyValue::Int(500))));
    assert!(decide(&mut p, &code(AnyValue::Int(599))));
    assert!(!decide(&mut p, &code(AnyValue::Int(499))));
    assert!(!decide(&mut p, &code(AnyValue::Int(600))));
    assert!(decide(&mut p, &code(AnyValue::Double(503.0))));
    assert!(!decide(&mut p, &code(AnyValue::Double(499.9))));
    assert!(!decide(&mut p, &code(AnyValue::Double(f64::NAN))));
    assert!(!decide(&mut p, &code(s("503"))), "strings are not numbers");
    assert!(decide(
        &mut p,
        &[with_resource_attr("http.status_code", AnyValue::Int(502))]
    ));
    assert!(!decide(&mut p, &[span()]));
}

#[test]
fn numeric_attribute_one_sided_bounds_and_invert() {
    let mut at_least = single(
        "min-only",
        "numeric_attribute",
        r#"numeric_attribute = { key = "n", min_value = 10 }"#,
    );
    assert!(decide(&mut at_least, &[with_attr("n", AnyValue::Int(i64::MAX))]));
    assert!(!decide(&mut at_least, &[with_attr("n", AnyValue::Int(9))]));

    let mut at_most = single(
        "max-only",
        "numeric_attribute",
        r#"numeric_attribute = { key = "n", max_value = 10 }"#,
    );
    assert!(decide(&mut at_most, &[with_attr("n", AnyValue::Int(-5))]));
    assert!(!decide(&mut at_most, &[with_attr("n", AnyValue::Int(11))]));

    let mut inverted = single(
        "not-small",
        "numeric_attribute",
        r#"numeric_attribute = { key = "n", min_value = 0, max_value = 10, invert_match = true }"#,
    );
    assert!(!decide(&mut inverted, &[with_attr("n", AnyValue::Int(5))]));
    assert!(decide(&mut inverted, &[with_attr("n", AnyValue::Int(50))]));
    assert!(decide(&mut inverted, &[span()]), "absent key: sampled under invert");
}

// ---- boolean_attribute ----

#[test]
fn boolean_attribute_matches_only_boolean_values() {
    let mut p = single(
        "forced",
        "boolean_attribute",
        r#"boolean_attribute = { key = "app.force_sample", value = true }"#,
    );
    assert!(decide(&mut p, &[with_attr("app.force_sample", AnyValue::Bool(true))]));
    assert!(decide(
        &mut p,
        &[with_resource_attr("app.force_sample", AnyValue::Bool(true))]
    ));
    assert!(!decide(&mut p, &[with_attr("app.force_sample", AnyValue::Bool(false))]));
    assert!(
        !decide(&mut p, &[with_attr("app.force_sample", s("true"))]),
        "the string \"true\" is not a bool"
    );

    let mut wants_false = single(
        "off",
        "boolean_attribute",
        r#"boolean_attribute = { key = "flag", value = false }"#,
    );
    assert!(decide(&mut wants_false, &[with_attr("flag", AnyValue::Bool(false))]));
    assert!(
        !decide(&mut wants_false, &[with_attr("flag", s("x"))]),
        "non-bool values are not false"
    );
    assert!(!decide(&mut wants_false, &[span()]));

    let mut inverted = single(
        "not-forced",
        "boolean_attribute",
        r#"boolean_attribute = { key = "flag", value = true, invert_match = true }"#,
    );
    assert!(!decide(&mut inverted, &[with_attr("flag", AnyValue::Bool(true))]));
    assert!(decide(&mut inverted, &[with_attr("flag", AnyValue::Bool(false))]));
}

// ---- probabilistic ----

#[test]
fn probabilistic_hash_and_threshold_match_the_collectors_formula() {
    // Computed independently (Python, exact rationals): FNV-1a 64 over salt ++ trace id, and
    // ratio × (2^64 − 1) rounded to 64 significant bits (nearest-even) then truncated.
    let ids: [TraceId; 2] = [
        core::array::from_fn(|i| i as u8),
        [
            0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
        ],
    ];
    assert_eq!(fnv1a(salted_hash(""), &ids[0]), 11989194628990176781);
    assert_eq!(fnv1a(salted_hash(DEFAULT_HASH_SALT), &ids[0]), 11989194628990176781);
    assert_eq!(fnv1a(salted_hash("my-salt"), &ids[0]), 5290122049387995398);
    assert_eq!(fnv1a(salted_hash(""), &ids[1]), 11908981664384643253);
    assert_eq!(fnv1a(salted_hash("my-salt"), &ids[1]), 15940483454982611258);

    assert_eq!(threshold(0.1), 1844674407370955263);
    assert_eq!(threshold(0.25), 4611686018427387903);
    assert_eq!(threshold(1.0 / 3.0), 6148914691236516863);
    assert_eq!(threshold(0.5), 9223372036854775807);
    assert_eq!(threshold(0.001), 18446744073709551);
    assert_eq!(threshold(0.999999), 18446725626965477375);
    assert_eq!(threshold(0.0), 0);
    assert_eq!(threshold(1.0), u64::MAX);
}

#[test]
fn probabilistic_is_consistent_across_instances_and_salted() {
    let table = "probabilistic = { sampling_percentage = 30 }";
    let mut a = single("p30-a", "probabilistic", table);
    let mut b = single("p30-b", "probabilistic", table);
    let mut salted = single(
        "p30-salted",
        "probabilistic",
        r#"probabilistic = { sampling_percentage = 30, hash_salt = "layer-2" }"#,
    );
    let mut differ = 0;
    for n in 0..2000u64 {
        let tid = id(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let later = Instant::now() + Duration::from_secs(n);
        let first = a.decide(&tid, &[span()], Instant::now());
        assert_eq!(
            first,
            b.decide(&tid, &spans(5), later),
            "trace {n}: same id, same answer"
        );
        assert_eq!(first, a.decide(&tid, &[], later), "trace {n}: the spans do not matter");
        differ += (first != salted.decide(&tid, &[span()], Instant::now())) as u32;
    }
    // Independent 30% decisions disagree 42% of the time; a salt that did nothing would give 0.
    assert!(
        differ > 500,
        "a different salt gives different decisions ({differ} of 2000 differ)"
    );
}

#[test]
fn probabilistic_rate_is_within_six_sigma_over_20000_random_ids() {
    const N: u64 = 20_000;
    let mut p = single("p25", "probabilistic", "probabilistic = { sampling_percentage = 25 }");
    // splitmix64: well-spread ids, fixed seed, so the test is deterministic as well as bounded.
    let mut state = 0x0123_4567_89ab_cdefu64;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let kept = (0..N)
        .filter(|_| {
            let mut tid = [0u8; 16];
            tid[..8].copy_from_slice(&next().to_le_bytes());
            tid[8..].copy_from_slice(&next().to_le_bytes());
            p.decide(&tid, &[span()], Instant::now())
        })
        .count() as f64;
    let mean = N as f64 * 0.25;
    let sigma = (N as f64 * 0.25 * 0.75).sqrt(); // ≈ 61
    assert!(
        (kept - mean).abs() <= 6.0 * sigma,
        "kept {kept}, expected {mean} ± {}",
        6.0 * sigma
    );
}

#[test]
fn probabilistic_zero_and_hundred_percent() {
    let mut none = single("p0", "probabilistic", "probabilistic = { sampling_percentage = 0 }");
    let mut all = single("p100", "probabilistic", "probabilistic = { sampling_percentage = 100 }");
    for n in 0..1000 {
        assert!(!none.decide(&id(n), &[span()], Instant::now()));
        assert!(all.decide(&id(n), &[span()], Instant::now()));
    }
}

// ---- rate_limiting ----

#[test]
fn rate_limiting_counts_spans_per_second_and_refills_each_second() {
    let mut p = single("cap", "rate_limiting", "rate_limiting = { spans_per_second = 10 }");
    let t0 = Instant::now();
    let three = spans(3);
    // Kept while the second's total stays strictly below the limit: 3, 6, 9 — then 12 is not.
    assert!(p.decide(&id(1), &three, t0));
    assert!(p.decide(&id(2), &three, t0 + Duration::from_millis(300)));
    assert!(p.decide(&id(3), &three, t0 + Duration::from_millis(600)));
    assert!(!p.decide(&id(4), &three, t0 + Duration::from_millis(900)));
    assert!(
        !p.decide(&id(5), &spans(1), t0 + Duration::from_millis(999)),
        "9 + 1 is not below 10"
    );
    // A new second starts from zero.
    assert!(p.decide(&id(6), &three, t0 + Duration::from_millis(1000)));
    assert!(p.decide(&id(7), &spans(6), t0 + Duration::from_millis(1500)));
    assert!(!p.decide(&id(8), &three, t0 + Duration::from_millis(1999)));
    assert!(p.decide(&id(9), &three, t0 + Duration::from_secs(5)));
    // A trace as large as the limit never fits.
    assert!(!p.decide(&id(10), &spans(10), t0 + Duration::from_secs(9)));
}

// ---- span_count ----

#[test]
fn span_count_bounds_are_inclusive_and_max_zero_is_unbounded() {
    let mut band = single("band", "span_count", "span_count = { min_spans = 2, max_spans = 4 }");
    assert!(!decide(&mut band, &spans(1)));
    assert!(decide(&mut band, &spans(2)));
    assert!(decide(&mut band, &spans(4)));
    assert!(!decide(&mut band, &spans(5)));

    let mut big = single("big", "span_count", "span_count = { min_spans = 3 }");
    assert!(decide(&mut big, &spans(1000)));
    assert!(!decide(&mut big, &spans(2)));
}

// ---- trace_state ----

#[test]
fn trace_state_matches_a_key_with_listed_values() {
    let mut p = single(
        "ts",
        "trace_state",
        r#"trace_state = { key = "vendor", values = ["gold", "silver"] }"#,
    );
    let ts = |t: &str| {
        vec![Span {
            trace_state: t.into(),
            ..span()
        }]
    };
    assert!(decide(&mut p, &ts("vendor=gold")));
    assert!(decide(&mut p, &ts("ot=th:8,vendor=silver")));
    assert!(
        decide(&mut p, &ts("ot=th:8 , vendor=gold")),
        "optional whitespace around members"
    );
    assert!(!decide(&mut p, &ts("vendor=bronze")));
    assert!(!decide(&mut p, &ts("other=gold")));
    assert!(!decide(&mut p, &ts("xvendor=gold")));
    assert!(!decide(&mut p, &ts("")));
    assert!(
        decide(&mut p, &ts("garbage,vendor=gold")),
        "unparseable members are skipped"
    );
    assert!(decide(&mut p, &[span(), ts("vendor=gold").remove(0)]), "any span");
}

// ---- and ----

#[test]
fn and_samples_only_when_every_sub_policy_samples() {
    let mut p = policies(
        r#"
[[policies]]
name = "slow-checkout"
type = "and"
[[policies.and.and_sub_policy]]
name = "checkout"
type = "string_attribute"
string_attribute = { key = "service.name", values = ["checkout"] }
[[policies.and.and_sub_policy]]
name = "slow"
type = "latency"
latency = { threshold_ms = 100 }
"#,
    );
    let slow_checkout = Span {
        attributes: vec![KeyValue::string("service.name", "checkout")],
        ..timed(0, 150)
    };
    let fast_checkout = Span {
        attributes: vec![KeyValue::string("service.name", "checkout")],
        ..timed(0, 50)
    };
    assert!(decide(&mut p, &[slow_checkout]));
    assert!(!decide(&mut p, &[fast_checkout]));
    assert!(!decide(&mut p, &[timed(0, 150)]));
}

#[test]
fn and_treats_inverted_sub_decisions_as_plain_ones() {
    // The collector README's "every route except /v1/name" pattern: an inverted sub-policy that
    // does not match lets the `and` sample, and the result is an ordinary Sampled (so another
    // top-level NotSampled does not cancel it).
    let mut p = policies(
        r#"
[[policies]]
name = "svc1-not-noisy"
type = "and"
[[policies.and.and_sub_policy]]
name = "svc1"
type = "string_attribute"
string_attribute = { key = "service.name", values = ["service-1"] }
[[policies.and.and_sub_policy]]
name = "not-noisy"
type = "string_attribute"
string_attribute = { key = "http.route", values = ["/v1/name/.+"], enabled_regex_matching = true, invert_match = true }

[[policies]]
name = "errors-for-and"
type = "status_code"
status_code = { status_codes = ["ERROR"] }
"#,
    );
    let req = |route: &str| Span {
        attributes: vec![
            KeyValue::string("service.name", "service-1"),
            KeyValue::string("http.route", route),
        ],
        ..span()
    };
    assert!(decide(&mut p, &[req("/v1/other")]));
    assert!(!decide(&mut p, &[req("/v1/name/7")]));
}

// ---- drop, and how decisions combine ----

#[test]
fn drop_wins_over_any_sample() {
    let mut p = policies(
        r#"
[[policies]]
name = "keep-all"
type = "always_sample"

[[policies]]
name = "errors-d"
type = "status_code"
status_code = { status_codes = ["ERROR"] }

[[policies]]
name = "no-health"
type = "drop"
[[policies.drop.drop_sub_policy]]
name = "health"
type = "string_attribute"
string_attribute = { key = "url.path", values = ["/health", "/metrics"] }
"#,
    );
    let health = Span {
        attributes: vec![KeyValue::string("url.path", "/health")],
        ..with_status(StatusCode::Error)
    };
    assert_eq!(
        p.decide_detailed(&id(1), &[health], Instant::now()),
        TraceDecision::Dropped
    );
    assert!(!decide(&mut p, &[with_attr("url.path", s("/metrics"))]));
    assert!(decide(&mut p, &[with_attr("url.path", s("/orders"))]));
}

#[test]
fn drop_needs_every_sub_policy_to_match() {
    let mut p = policies(
        r#"
[[policies]]
name = "keep-all-2"
type = "always_sample"

[[policies]]
name = "drop-fast-health"
type = "drop"
drop = { drop_sub_policy = [
  { name = "health", type = "string_attribute", string_attribute = { key = "url.path", values = ["/health"] } },
  { name = "fast", type = "latency", latency = { threshold_ms = 0, upper_threshold_ms = 100 } },
] }
"#,
    );
    let health = |ms| Span {
        attributes: vec![KeyValue::string("url.path", "/health")],
        ..timed(0, ms)
    };
    assert!(!decide(&mut p, &[health(50)]));
    assert!(decide(&mut p, &[health(500)]), "a slow health check is not fast: kept");
}

#[test]
fn drop_policies_are_evaluated_first_so_dropped_traces_use_no_rate_budget() {
    // The rate limit is listed first, but drop policies run first and stop evaluation: the
    // dropped 4-span trace must not use the 5 spans/s budget.
    let mut p = policies(
        r#"
[[policies]]
name = "cap-5"
type = "rate_limiting"
rate_limiting = { spans_per_second = 5 }

[[policies]]
name = "drop-marked"
type = "drop"
drop = { drop_sub_policy = [{ name = "marked", type = "boolean_attribute", boolean_attribute = { key = "drop.me", value = true } }] }
"#,
    );
    let t0 = Instant::now();
    let marked = vec![with_attr("drop.me", AnyValue::Bool(true)); 4];
    assert_eq!(p.decide_detailed(&id(1), &marked, t0), TraceDecision::Dropped);
    assert!(
        p.decide(&id(2), &spans(4), t0),
        "the budget is untouched by the dropped trace"
    );
    assert!(!p.decide(&id(3), &spans(4), t0), "and is used by the kept one");
}

#[test]
fn inverted_decisions_combine_as_in_the_collector() {
    let invert = r#"
[[policies]]
name = "not-noisy-top"
type = "string_attribute"
string_attribute = { key = "service.name", values = ["noisy"], invert_match = true }
"#;
    let noisy = || vec![with_attr("service.name", s("noisy"))];
    let quiet = || vec![with_attr("service.name", s("quiet"))];

    // InvertNotSampled beats Sampled.
    let mut with_always = policies(&format!(
        "{invert}\n[[policies]]\nname = \"all-inv\"\ntype = \"always_sample\"\n"
    ));
    assert!(!decide(&mut with_always, &noisy()));
    assert!(decide(&mut with_always, &quiet()));

    // InvertSampled keeps the trace only when no policy said NotSampled.
    let mut alone = policies(invert);
    assert!(decide(&mut alone, &quiet()));
    let mut with_errors = policies(&format!(
        "{invert}\n[[policies]]\nname = \"errors-inv\"\ntype = \"status_code\"\nstatus_code = {{ status_codes = [\"ERROR\"] }}\n"
    ));
    assert!(
        !decide(&mut with_errors, &quiet()),
        "InvertSampled + NotSampled = not sampled"
    );
    let mut quiet_error = quiet();
    quiet_error[0].status.code = StatusCode::Error;
    assert!(decide(&mut with_errors, &quiet_error), "a plain Sampled keeps it");
}

#[test]
fn any_sample_keeps_the_trace_when_nothing_vetoes() {
    let mut p = policies(
        r#"
[[policies]]
name = "errors-any"
type = "status_code"
status_code = { status_codes = ["ERROR"] }

[[policies]]
name = "slow-any"
type = "latency"
latency = { threshold_ms = 1000 }
"#,
    );
    assert!(decide(&mut p, &[with_status(StatusCode::Error)]));
    assert!(decide(&mut p, &[timed(0, 2000)]));
    assert!(!decide(&mut p, &[timed(0, 10)]));
}

// ---- composite ----

const COMPOSITE: &str = r#"
[[policies]]
name = "composite"
type = "composite"
[policies.composite]
max_total_spans_per_second = 100
policy_order = ["errors", "rest"]
rate_allocation = [{ policy = "errors", percent = 50 }]
[[policies.composite.composite_sub_policy]]
name = "rest"
type = "always_sample"
[[policies.composite.composite_sub_policy]]
name = "errors"
type = "status_code"
status_code = { status_codes = ["ERROR"] }
"#;

#[test]
fn composite_allocates_spans_per_second_in_policy_order_and_refills_each_second() {
    let mut p = policies(COMPOSITE);
    let t0 = Instant::now();
    let errors = vec![with_status(StatusCode::Error); 10];
    let normal = spans(10);
    for second in 0..3u64 {
        let at = |ms: u64| t0 + Duration::from_millis(second * 1000 + ms);
        // "errors" comes first (policy_order) with 50 of the 100 spans/s.
        for i in 0..5 {
            assert!(
                p.decide(&id(i), &errors, at(i * 10)),
                "second {second}: error trace {i} fits"
            );
        }
        assert!(
            !p.decide(&id(5), &errors, at(60)),
            "second {second}: the 6th error trace is over the errors share; the composite does not fall through"
        );
        // "rest" has no allocation: it gets what is left, 50.
        for i in 0..5 {
            assert!(
                p.decide(&id(10 + i), &normal, at(100 + i)),
                "second {second}: normal trace {i} fits"
            );
        }
        assert!(
            !p.decide(&id(20), &normal, at(200)),
            "second {second}: over the remainder"
        );
        assert!(
            !p.decide(&id(21), &spans(1), at(300)),
            "second {second}: and over the total"
        );
    }
}

#[test]
fn composite_policy_order_decides_which_sub_policy_is_asked_first() {
    // Same config, but "rest" (always_sample) first: it takes error traces too, within its 50.
    let mut p = policies(&COMPOSITE.replace(r#"policy_order = ["errors", "rest"]"#, r#"policy_order = ["rest"]"#));
    let t0 = Instant::now();
    let errors = vec![with_status(StatusCode::Error); 10];
    for i in 0..5 {
        assert!(p.decide(&id(i), &errors, t0));
    }
    assert!(
        !p.decide(&id(6), &errors, t0),
        "\"rest\" is exhausted and answers first"
    );
}

#[test]
fn composite_zero_percent_means_an_equal_share() {
    let mut p = policies(
        r#"
[[policies]]
name = "composite-eq"
type = "composite"
[policies.composite]
max_total_spans_per_second = 90
rate_allocation = [{ policy = "a", percent = 0 }]
composite_sub_policy = [
  { name = "a", type = "always_sample" },
  { name = "b", type = "status_code", status_code = { status_codes = ["ERROR"] } },
  { name = "c", type = "latency", latency = { threshold_ms = 1 } },
]
"#,
    );
    let t0 = Instant::now();
    // "a" gets 90 / 3 = 30 spans/s.
    assert!(p.decide(&id(1), &spans(30), t0));
    assert!(!p.decide(&id(2), &spans(1), t0));
}

#[test]
fn composite_accepts_and_sub_policies() {
    let mut p = policies(
        r#"
[[policies]]
name = "composite-and"
type = "composite"
[policies.composite]
max_total_spans_per_second = 1000
[[policies.composite.composite_sub_policy]]
name = "slow-errors"
type = "and"
and = { and_sub_policy = [
  { name = "err", type = "status_code", status_code = { status_codes = ["ERROR"] } },
  { name = "slow", type = "latency", latency = { threshold_ms = 100 } },
] }
"#,
    );
    let mut slow_error = timed(0, 200);
    slow_error.status.code = StatusCode::Error;
    assert!(decide(&mut p, &[slow_error]));
    assert!(!decide(&mut p, &[timed(0, 200)]));
}

// ---- metrics ----

#[test]
fn metrics_count_evaluations_votes_and_final_decisions() {
    let mut p = policies(
        r#"
[[policies]]
name = "metrics-errors"
type = "status_code"
status_code = { status_codes = ["ERROR"] }

[[policies]]
name = "metrics-drop"
type = "drop"
drop = { drop_sub_policy = [{ name = "x", type = "boolean_attribute", boolean_attribute = { key = "x", value = true } }] }
"#,
    );
    let traces_sampled = metrics::counter("skein_tail_sampling_traces_total", "", &[("decision", "sampled")]);
    let before = traces_sampled.get();
    assert!(decide(&mut p, &[with_status(StatusCode::Error)]));
    assert!(!decide(&mut p, &[span()]));
    assert!(!decide(&mut p, &[with_attr("x", AnyValue::Bool(true))]));

    let evaluations = |policy| {
        metrics::counter(
            "skein_tail_sampling_policy_evaluations_total",
            "",
            &[("policy", policy)],
        )
        .get()
    };
    let votes = |policy, decision| {
        metrics::counter(
            "skein_tail_sampling_policy_decisions_total",
            "",
            &[("policy", policy), ("decision", decision)],
        )
        .get()
    };
    assert_eq!(evaluations("metrics-drop"), 3);
    assert_eq!(evaluations("metrics-errors"), 2, "not evaluated after a drop");
    assert_eq!(votes("metrics-errors", "sampled"), 1);
    assert_eq!(votes("metrics-errors", "not_sampled"), 1);
    assert_eq!(votes("metrics-drop", "dropped"), 1);
    assert_eq!(votes("metrics-drop", "not_sampled"), 2);
    // Shared with other tests running in parallel, so only a lower bound.
    assert!(traces_sampled.get() > before);
    let text = metrics::render();
    assert!(text.contains(r#"skein_tail_sampling_policy_decisions_total{policy="metrics-drop",decision="dropped"} 1"#));
}

// ---- configuration errors ----

fn error_of(toml_text: &str) -> String {
    match build(toml_text) {
        Ok(_) => panic!("expected an error for:\n{toml_text}"),
        Err(e) => e,
    }
}

fn assert_error(toml_text: &str, expected: &[&str]) {
    let e = error_of(toml_text);
    for part in expected {
        assert!(e.contains(part), "error {e:?} should mention {part:?}");
    }
}

#[test]
fn no_policies_is_an_error() {
    assert_eq!(
        Policies::new(&[]).err().unwrap(),
        "tail sampling needs at least one policy"
    );
}

#[test]
fn errors_name_the_policy_and_the_field() {
    let cases: &[(&str, &[&str])] = &[
        ("[[policies]]\ntype = \"always_sample\"\n", &["policy \"\" (#1)", "name is required"]),
        (
            "[[policies]]\nname = \"a\"\ntype = \"always_sample\"\n[[policies]]\nname = \"a\"\ntype = \"always_sample\"\n",
            &["policy \"a\" (#2)", "already used by policy #1"],
        ),
        ("[[policies]]\nname = \"t\"\n", &["policy \"t\" (#1)", "type is required"]),
        ("[[policies]]\nname = \"u\"\ntype = \"sometimes\"\n", &["policy \"u\"", "unknown type \"sometimes\"", "latency"]),
        (
            "[[policies]]\nname = \"o\"\ntype = \"ottl_condition\"\n",
            &["policy \"o\"", "\"ottl_condition\"", "does not implement"],
        ),
        ("[[policies]]\nname = \"slow\"\ntype = \"latency\"\n", &["policy \"slow\"", "needs a `latency` table"]),
        (
            "[[policies]]\nname = \"mix\"\ntype = \"latency\"\nstatus_code = { status_codes = [\"ERROR\"] }\n",
            &["policy \"mix\"", "`status_code` table", "type is \"latency\""],
        ),
        (
            "[[policies]]\nname = \"slow\"\ntype = \"latency\"\nlatency = { upper_threshold_ms = 5 }\n",
            &["policy \"slow\"", "latency.threshold_ms is required"],
        ),
        (
            "[[policies]]\nname = \"band\"\ntype = \"latency\"\nlatency = { threshold_ms = 50, upper_threshold_ms = 10 }\n",
            &["policy \"band\"", "latency.upper_threshold_ms"],
        ),
        (
            "[[policies]]\nname = \"codes\"\ntype = \"status_code\"\nstatus_code = { status_codes = [\"error\"] }\n",
            &["policy \"codes\"", "status_code.status_codes", "\"error\""],
        ),
        (
            "[[policies]]\nname = \"codes\"\ntype = \"status_code\"\nstatus_code = {}\n",
            &["status_code.status_codes must list"],
        ),
        (
            "[[policies]]\nname = \"re\"\ntype = \"string_attribute\"\nstring_attribute = { key = \"k\", values = [\"ok\", \"(\"], enabled_regex_matching = true }\n",
            &["policy \"re\"", "string_attribute.values[1]", "not a valid regex"],
        ),
        (
            "[[policies]]\nname = \"nokey\"\ntype = \"string_attribute\"\nstring_attribute = { values = [\"x\"] }\n",
            &["policy \"nokey\"", "string_attribute.key is required"],
        ),
        (
            "[[policies]]\nname = \"novals\"\ntype = \"string_attribute\"\nstring_attribute = { key = \"k\" }\n",
            &["string_attribute.values"],
        ),
        (
            "[[policies]]\nname = \"num\"\ntype = \"numeric_attribute\"\nnumeric_attribute = { key = \"k\" }\n",
            &["policy \"num\"", "numeric_attribute.min_value or max_value is required"],
        ),
        (
            "[[policies]]\nname = \"num\"\ntype = \"numeric_attribute\"\nnumeric_attribute = { key = \"k\", min_value = 5, max_value = 1 }\n",
            &["numeric_attribute.max_value"],
        ),
        (
            "[[policies]]\nname = \"b\"\ntype = \"boolean_attribute\"\nboolean_attribute = { key = \"k\" }\n",
            &["policy \"b\"", "boolean_attribute.value is required"],
        ),
        (
            "[[policies]]\nname = \"p\"\ntype = \"probabilistic\"\nprobabilistic = { sampling_percentage = 150 }\n",
            &["policy \"p\"", "probabilistic.sampling_percentage must be between 0 and 100"],
        ),
        (
            "[[policies]]\nname = \"p\"\ntype = \"probabilistic\"\nprobabilistic = {}\n",
            &["probabilistic.sampling_percentage is required"],
        ),
        (
            "[[policies]]\nname = \"r\"\ntype = \"rate_limiting\"\nrate_limiting = { spans_per_second = 0 }\n",
            &["policy \"r\"", "rate_limiting.spans_per_second must be positive"],
        ),
        (
            "[[policies]]\nname = \"sc\"\ntype = \"span_count\"\nspan_count = { min_spans = 5, max_spans = 2 }\n",
            &["policy \"sc\"", "span_count.max_spans"],
        ),
        (
            "[[policies]]\nname = \"sc\"\ntype = \"span_count\"\nspan_count = {}\n",
            &["span_count.min_spans or max_spans must be set"],
        ),
        (
            "[[policies]]\nname = \"ts\"\ntype = \"trace_state\"\ntrace_state = { key = \"k\", values = [] }\n",
            &["policy \"ts\"", "trace_state.values"],
        ),
        ("[[policies]]\nname = \"e\"\ntype = \"and\"\nand = {}\n", &["policy \"e\"", "and_sub_policy must list"]),
    ];
    for (toml_text, expected) in cases {
        assert_error(toml_text, expected);
    }
}

#[test]
fn nested_errors_name_the_path_and_nesting_rules_hold() {
    assert_error(
        r#"
[[policies]]
name = "combo"
type = "and"
and = { and_sub_policy = [
  { name = "ok", type = "always_sample" },
  { name = "bad", type = "latency" },
] }
"#,
        &[
            "policy \"combo\" (#1) > and_sub_policy \"bad\" (#2)",
            "needs a `latency` table",
        ],
    );
    assert_error(
        r#"
[[policies]]
name = "nested"
type = "and"
and = { and_sub_policy = [{ name = "inner", type = "and", and = { and_sub_policy = [{ name = "x", type = "always_sample" }] } }] }
"#,
        &["and_sub_policy \"inner\"", "cannot be nested inside `and` or `drop`"],
    );
    assert_error(
        r#"
[[policies]]
name = "d"
type = "drop"
drop = { drop_sub_policy = [{ name = "inner", type = "drop", drop = { drop_sub_policy = [{ name = "x", type = "always_sample" }] } }] }
"#,
        &["drop_sub_policy \"inner\"", "cannot be nested"],
    );
    assert_error(
        r#"
[[policies]]
name = "c"
type = "composite"
composite = { max_total_spans_per_second = 10, composite_sub_policy = [{ name = "inner", type = "composite" }] }
"#,
        &["composite_sub_policy \"inner\"", "cannot be nested inside `composite`"],
    );
}

#[test]
fn composite_config_errors() {
    let composite =
        |body: &str| format!("[[policies]]\nname = \"comp\"\ntype = \"composite\"\n[policies.composite]\n{body}\n");
    let subs =
        r#"composite_sub_policy = [{ name = "a", type = "always_sample" }, { name = "b", type = "always_sample" }]"#;
    assert_error(
        &composite(subs),
        &["policy \"comp\"", "composite.max_total_spans_per_second is required"],
    );
    assert_error(
        &composite(&format!(
            "max_total_spans_per_second = 10\n{subs}\nrate_allocation = [{{ policy = \"zz\", percent = 10 }}]"
        )),
        &["composite.rate_allocation[0].policy", "\"zz\""],
    );
    assert_error(
        &composite(&format!(
            "max_total_spans_per_second = 10\n{subs}\nrate_allocation = [{{ policy = \"a\", percent = 60 }}, {{ policy = \"b\", percent = 60 }}]"
        )),
        &["composite.rate_allocation", "120"],
    );
    assert_error(
        &composite(&format!(
            "max_total_spans_per_second = 10\n{subs}\npolicy_order = [\"a\", \"nope\"]"
        )),
        &["composite.policy_order[1]", "\"nope\""],
    );
    assert_error(
        &composite("max_total_spans_per_second = 10\ncomposite_sub_policy = [{ name = \"a\", type = \"always_sample\" }, { name = \"a\", type = \"always_sample\" }]"),
        &["composite_sub_policy[1].name", "used twice"],
    );
    assert_error(
        &composite("max_total_spans_per_second = 10"),
        &["composite_sub_policy must list"],
    );
}

#[test]
fn unknown_keys_are_rejected_when_parsing() {
    for text in [
        "[[policies]]\nname = \"x\"\ntype = \"always_sample\"\nbogus = 1\n",
        "[[policies]]\nname = \"x\"\ntype = \"latency\"\nlatency = { threshold_ms = 1, bogus = 2 }\n",
        "[[policies]]\nname = \"x\"\ntype = \"composite\"\ncomposite = { max_total_spans_per_second = 1, rate_allocation = [{ policy = \"a\", bogus = 1 }] }\n",
    ] {
        let e = toml::from_str::<File>(text).expect_err("unknown key").to_string();
        assert!(e.contains("unknown field `bogus`"), "{e}");
    }
}

// ---- TOML round trip ----

const EVERY_TYPE: &str = r#"
[[policies]]
name = "all"
type = "always_sample"

[[policies]]
name = "slow"
type = "latency"
latency = { threshold_ms = 500, upper_threshold_ms = 0 }

[[policies]]
name = "errors"
type = "status_code"
status_code = { status_codes = ["ERROR", "UNSET"] }

[[policies]]
name = "routes"
type = "string_attribute"
string_attribute = { key = "http.route", values = ["/v1/.*"], enabled_regex_matching = true, cache_max_size = 10, invert_match = true }

[[policies]]
name = "5xx"
type = "numeric_attribute"
numeric_attribute = { key = "http.status_code", min_value = 500, max_value = 599, invert_match = false }

[[policies]]
name = "forced"
type = "boolean_attribute"
boolean_attribute = { key = "app.force_sample", value = true }

[[policies]]
name = "baseline"
type = "probabilistic"
probabilistic = { hash_salt = "edge", sampling_percentage = 12.5 }

[[policies]]
name = "cap"
type = "rate_limiting"
rate_limiting = { spans_per_second = 35 }

[[policies]]
name = "sizes"
type = "span_count"
span_count = { min_spans = 2, max_spans = 20 }

[[policies]]
name = "vendor"
type = "trace_state"
trace_state = { key = "key3", values = ["value1", "value2"] }

[[policies]]
name = "and-1"
type = "and"
and = { and_sub_policy = [
  { name = "a1", type = "numeric_attribute", numeric_attribute = { key = "key1", min_value = 50, max_value = 100 } },
  { name = "a2", type = "string_attribute", string_attribute = { key = "key2", values = ["value1", "value2"] } },
] }

[[policies]]
name = "drop-1"
type = "drop"
drop = { drop_sub_policy = [
  { name = "d1", type = "string_attribute", string_attribute = { key = "url.path", values = ["/health", "/metrics"], enabled_regex_matching = true } },
] }

[[policies]]
name = "composite-1"
type = "composite"
[policies.composite]
max_total_spans_per_second = 1000
policy_order = ["c1", "c2", "c3"]
rate_allocation = [{ policy = "c1", percent = 50 }, { policy = "c2", percent = 25 }]
composite_sub_policy = [
  { name = "c1", type = "numeric_attribute", numeric_attribute = { key = "key1", min_value = 50 } },
  { name = "c2", type = "string_attribute", string_attribute = { key = "key2", values = ["value1", "value2"] } },
  { name = "c3", type = "always_sample" },
]
"#;

#[test]
fn toml_round_trip_of_every_policy_type() {
    let parsed: File = toml::from_str(EVERY_TYPE).unwrap();
    assert_eq!(parsed.policies.len(), 13);
    assert_eq!(parsed.policies[1].kind, PolicyType::Latency);
    assert_eq!(
        parsed.policies[1].latency,
        Some(LatencyConfig {
            threshold_ms: Some(500),
            upper_threshold_ms: 0
        })
    );
    let written = toml::to_string(&parsed).unwrap();
    let reparsed: File = toml::from_str(&written).unwrap_or_else(|e| panic!("{e}\n{written}"));
    assert_eq!(parsed, reparsed, "written as:\n{written}");
    let mut p = Policies::new(&reparsed.policies).expect("every type builds");
    // The drop policy (url.path /health) still wins although always_sample is first.
    assert!(!decide(&mut p, &[with_attr("url.path", s("/health"))]));
    assert!(decide(&mut p, &[span()]));
}
