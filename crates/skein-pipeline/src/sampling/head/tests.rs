use std::sync::atomic::{AtomicU64, Ordering};

use skein_model::{AnyValue, KeyValue};

use super::tracestate::*;
use super::*;

/// A deterministic xorshift64* generator: the statistical tests see the same ids every run, and
/// their bounds (±6 sigma) would hold for any seed anyway.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn trace_id(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.next().to_be_bytes());
        id[8..].copy_from_slice(&self.next().to_be_bytes());
        id
    }
}

fn resource(service: &str) -> Arc<Resource> {
    Arc::new(Resource {
        attributes: vec![KeyValue::new("service.name", AnyValue::String(service.into()))],
        dropped_attributes_count: 0,
    })
}

fn span(trace_id: [u8; 16], resource: &Arc<Resource>) -> Span {
    Span {
        trace_id,
        span_id: [1; 8],
        resource: resource.clone(),
        ..Default::default()
    }
}

/// A trace id whose randomness (last 7 bytes) is `r`.
fn id_with_randomness(r: u64) -> [u8; 16] {
    let mut id = [0xab; 16];
    id[9..].copy_from_slice(&r.to_be_bytes()[1..]);
    id
}

fn sampler(cfg: HeadSamplingConfig) -> HeadSampler {
    HeadSampler::new(&cfg).unwrap()
}

fn with_probability(p: f64) -> HeadSamplingConfig {
    HeadSamplingConfig {
        probability: p,
        ..Default::default()
    }
}

fn kept_ids(s: &HeadSampler, ids: &[[u8; 16]]) -> Vec<[u8; 16]> {
    let r = resource("svc");
    let mut spans: Vec<Span> = ids.iter().map(|id| span(*id, &r)).collect();
    s.retain(&mut spans);
    spans.iter().map(|s| s.trace_id).collect()
}

// ---- tracestate ---------------------------------------------------------------------------

#[test]
fn parses_th_and_rv() {
    assert_eq!(
        parse("ot=th:c;rv:0123456789abcd"),
        OtSampling {
            threshold: Some(0xc0_0000_0000_0000),
            randomness: Some(0x01_2345_6789_abcd),
        }
    );
    // Trailing zeros are implied; 0 is 100%; 14 digits is full precision; upper case is hex too.
    assert_eq!(parse("ot=th:0").threshold, Some(0));
    assert_eq!(parse("ot=th:fd70a4").threshold, Some(0x00fd_70a4_0000_0000));
    assert_eq!(parse("ot=th:FFFFFFFFFFFFFF").threshold, Some(NEVER - 1));
    // Among other members and sub-keys, with optional whitespace around members.
    let ts = "vendor=abc, ot=foo:bar;th:8;rv:ffffffffffffff ,other=1";
    assert_eq!(
        parse(ts),
        OtSampling {
            threshold: Some(0x80_0000_0000_0000),
            randomness: Some(NEVER - 1),
        }
    );
    // First occurrence wins.
    assert_eq!(parse("ot=th:8;th:c").threshold, Some(0x80_0000_0000_0000));
}

#[test]
fn malformed_tracestate_is_ignored_not_an_error() {
    for ts in [
        "",
        "ot",
        "ot=",
        "ot=th",
        "ot=th:",
        "ot=th:xyz",
        "ot=th:123456789abcdef",   // 15 digits
        "ot=th:+1",                // from_str_radix would take the sign
        "ot=rv:123",               // rv must be exactly 14 digits
        "ot=rv:0123456789abcdef0", // too long
        "ot=rv:0123456789abcg",
        "ot=th:8é",
        ",,,=,ot==th:8",
        "xot=th:8",
        "ot =th:8", // keys carry no inner whitespace
        "ot=th:-8",
        "\u{0}ot=th:8",
    ] {
        assert_eq!(parse(ts), OtSampling::default(), "{ts:?}");
    }
    // A bad th does not hide a good rv.
    assert_eq!(parse("ot=th:zz;rv:00000000000001").randomness, Some(1));
}

#[test]
fn encodes_thresholds_like_the_spec_table() {
    // OpenTelemetry's table for 1-in-N sampling at 4 digits of precision.
    for (p, th) in [
        (1.0, "0"),
        (0.5, "8"),
        (1.0 / 3.0, "aaab"),
        (0.25, "c"),
        (0.1, "e666"),
        (1.0 / 16.0, "f"),
        (0.01, "fd70a"),
        (0.001, "ffbe77"),
        (0.0001, "fff9724"),
    ] {
        assert_eq!(encode_threshold(probability_to_threshold(p)), th, "p = {p}");
    }
    assert_eq!(probability_to_threshold(0.0), NEVER);
    assert_eq!(threshold_to_probability(0x80_0000_0000_0000), 0.5);
    // Leading zeros are digits too.
    assert_eq!(encode_threshold(0x00_0100_0000_0000), "0001");
}

#[test]
fn rewrites_th_and_keeps_the_rest() {
    assert_eq!(with_threshold("", Some(0xc0_0000_0000_0000)).unwrap(), "ot=th:c");
    assert_eq!(
        with_threshold("a=1,ot=rv:0123456789abcd;th:8,b=2", Some(0xc0_0000_0000_0000)).unwrap(),
        "ot=th:c;rv:0123456789abcd,a=1,b=2"
    );
    assert_eq!(with_threshold("a=1, ot=th:8", None).unwrap(), "a=1");
    let long = format!("ot=x:{}", "y".repeat(250));
    assert_eq!(with_threshold(&long, Some(1)), None);
}

#[test]
fn randomness_is_the_last_seven_bytes() {
    let id = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7,
    ];
    assert_eq!(trace_id_randomness(&id), 0x01_0203_0405_0607);
}

// ---- config -------------------------------------------------------------------------------

#[test]
fn shareable_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<HeadSampler>();
}

#[test]
fn off_by_default() {
    let s = sampler(HeadSamplingConfig::default());
    assert!(!s.enabled());
    let mut rng = Rng(7);
    let ids: Vec<_> = (0..100).map(|_| rng.trace_id()).collect();
    assert_eq!(kept_ids(&s, &ids).len(), 100);
}

#[test]
fn config_errors_name_the_key_and_value() {
    let err = |cfg: HeadSamplingConfig| HeadSampler::new(&cfg).err().expect("should be an error");
    assert_eq!(
        err(with_probability(1.5)),
        "sampling.head.probability = 1.5 must be in [0, 1] (1 keeps every trace)"
    );
    assert!(err(with_probability(-0.1)).starts_with("sampling.head.probability = -0.1 "));
    assert!(err(with_probability(f64::NAN)).starts_with("sampling.head.probability = NaN "));
    let mut cfg = HeadSamplingConfig::default();
    cfg.rate_limit.spans_per_second = -5.0;
    assert_eq!(
        err(cfg),
        "sampling.head.rate_limit.spans_per_second = -5 must be a number of spans per second, 0 (no limit) or more"
    );
    let mut cfg = HeadSamplingConfig::default();
    cfg.rate_limit.services.insert("checkout".into(), f64::INFINITY);
    assert!(err(cfg).starts_with("sampling.head.rate_limit.services.\"checkout\" = inf "));
    let mut cfg = HeadSamplingConfig::default();
    cfg.rate_limit.max_services = 0;
    assert!(err(cfg).starts_with("sampling.head.rate_limit.max_services = 0 "));
}

#[test]
fn config_reads_from_toml() {
    // The body of [sampling.head]; integers are accepted where numbers are expected.
    let cfg: HeadSamplingConfig = toml::from_str(
        "probability = 0.25\ndrop_unsampled = true\n\
         [rate_limit]\nspans_per_second = 100\n\
         [rate_limit.services]\ncheckout = 500\n\"frontend-web\" = 0.5\n",
    )
    .unwrap();
    assert_eq!(cfg.probability, 0.25);
    assert!(cfg.drop_unsampled && cfg.record_threshold);
    assert_eq!(cfg.rate_limit.services["checkout"], 500.0);
    assert_eq!(cfg.rate_limit.services["frontend-web"], 0.5);
    assert_eq!(cfg.rate_limit.spans_per_second, 100.0);
    assert_eq!(cfg.rate_limit.max_services, 1000);
    // `skein config` prints it back; it must read the same.
    let printed = toml::to_string(&cfg).unwrap();
    assert_eq!(
        toml::from_str::<HeadSamplingConfig>(&printed).unwrap(),
        cfg,
        "{printed}"
    );
    let typo = toml::from_str::<HeadSamplingConfig>("probabilty = 0.5").unwrap_err();
    assert!(typo.to_string().contains("unknown field `probabilty`"), "{typo}");
}

// ---- consistent probability ---------------------------------------------------------------

#[test]
fn decisions_are_consistent_and_nested() {
    let mut rng = Rng(42);
    let ids: Vec<_> = (0..5000).map(|_| rng.trace_id()).collect();
    // Two instances (two nodes, two runs) agree span for span.
    let a = kept_ids(&sampler(with_probability(0.1)), &ids);
    let b = kept_ids(&sampler(with_probability(0.1)), &ids);
    assert_eq!(a, b);
    assert!(!a.is_empty());
    // Everything kept at 0.1 is kept at 0.5 (and more besides).
    let half = kept_ids(&sampler(with_probability(0.5)), &ids);
    assert!(a.iter().all(|id| half.contains(id)));
    assert!(half.len() > a.len());
    // The decision is R >= T exactly.
    let t = probability_to_threshold(0.1);
    let s = sampler(with_probability(0.1));
    assert_eq!(kept_ids(&s, &[id_with_randomness(t)]).len(), 1);
    assert_eq!(kept_ids(&s, &[id_with_randomness(t - 1)]).len(), 0);
    // Probability 0 keeps nothing, not even the largest randomness.
    assert!(kept_ids(&sampler(with_probability(0.0)), &[id_with_randomness(NEVER - 1)]).is_empty());
}

#[test]
fn keeps_the_configured_share_within_six_sigma() {
    let mut rng = Rng(0x5eed);
    let ids: Vec<_> = (0..20_000).map(|_| rng.trace_id()).collect();
    for p in [0.01, 0.1, 0.25, 0.5, 0.9] {
        let kept = kept_ids(&sampler(with_probability(p)), &ids).len() as f64;
        let n = ids.len() as f64;
        let sigma = (n * p * (1.0 - p)).sqrt();
        assert!(
            (kept - n * p).abs() <= 6.0 * sigma,
            "p = {p}: kept {kept} of {n}, expected {} ± {}",
            n * p,
            6.0 * sigma
        );
    }
}

#[test]
fn explicit_randomness_wins_over_the_trace_id() {
    let s = sampler(with_probability(0.5));
    let r = resource("svc");
    // The trace id alone would be dropped (randomness 0); rv says keep.
    let mut keep = span(id_with_randomness(0), &r);
    keep.trace_state = "ot=rv:ffffffffffffff".into();
    // The trace id alone would be kept; rv says drop.
    let mut drop = span(id_with_randomness(NEVER - 1), &r);
    drop.trace_state = "ot=rv:00000000000000".into();
    // A malformed rv is ignored: the trace id decides (keep).
    let mut malformed = span(id_with_randomness(NEVER - 1), &r);
    malformed.trace_state = "ot=rv:00".into();
    let mut spans = vec![keep, drop, malformed];
    assert_eq!(s.retain(&mut spans), 1);
    assert_eq!(spans[0].trace_id, id_with_randomness(0));
    assert_eq!(spans[1].trace_id, id_with_randomness(NEVER - 1));
}

#[test]
fn random_flag_does_not_change_the_decision_only_the_count() {
    let s = sampler(with_probability(0.5));
    let r = resource("svc");
    let presumed = metrics::counter("skein_head_sampling_presumed_randomness_total", "", &[]);
    let mut rng = Rng(99);
    let ids: Vec<_> = (0..200).map(|_| rng.trace_id()).collect();
    let decide = |flags: u32| {
        let mut spans: Vec<Span> = ids.iter().map(|id| Span { flags, ..span(*id, &r) }).collect();
        s.retain(&mut spans);
        spans.iter().map(|s| s.trace_id).collect::<Vec<_>>()
    };
    let before = presumed.get();
    let flagged = decide(0x01 | RANDOM_FLAG);
    let unflagged = decide(0x01);
    assert_eq!(flagged, unflagged);
    // Only the unflagged batch counted as presumed randomness (other tests may add to the
    // shared counter at the same time, so at least 200).
    assert!(presumed.get() - before >= 200);
}

#[test]
fn stricter_upstream_threshold_is_respected_and_recorded_thresholds_rise() {
    let s = sampler(with_probability(0.5));
    let r = resource("svc");
    let t10 = probability_to_threshold(0.1);
    let t50 = probability_to_threshold(0.5);
    let with_state = |randomness: u64, ts: &str| Span {
        trace_state: ts.into(),
        ..span(id_with_randomness(randomness), &r)
    };
    let mut spans = vec![
        // Sampled upstream at 10% (R above its threshold): kept, its stricter th unchanged.
        with_state(t10 + 5, "ot=th:e666"),
        // Sampled upstream at 100%: kept by us at 50%, th raised to ours.
        with_state(t50 + 5, "ot=th:0;rv:xx,b=1"),
        // No upstream th: ours is recorded.
        with_state(t50, ""),
        // Upstream th inconsistent with the randomness (R below it): erased, ours recorded.
        with_state(t50 + 1, "ot=th:f"),
        // Dropped by us: nothing to record.
        with_state(t50 - 1, "ot=th:0"),
    ];
    let applied = s.apply(&mut spans);
    assert_eq!(
        applied,
        Applied {
            removed: 1,
            tracestate_updated: 3
        }
    );
    let states: Vec<&str> = spans.iter().map(|s| s.trace_state.as_str()).collect();
    assert_eq!(states, ["ot=th:e666", "ot=th:8;rv:xx,b=1", "ot=th:8", "ot=th:8"]);

    // With record_threshold off nothing is rewritten.
    let quiet = sampler(HeadSamplingConfig {
        probability: 0.5,
        record_threshold: false,
        ..Default::default()
    });
    let mut spans = vec![with_state(t50, "")];
    assert_eq!(
        quiet.apply(&mut spans),
        Applied {
            removed: 0,
            tracestate_updated: 0
        }
    );
    assert_eq!(spans[0].trace_state, "");
}

// ---- sampled flag -------------------------------------------------------------------------

#[test]
fn drop_unsampled_only_when_the_flags_are_known() {
    let s = sampler(HeadSamplingConfig {
        drop_unsampled: true,
        ..Default::default()
    });
    assert!(s.enabled());
    let r = resource("svc");
    let cases = [
        (0x000, true),  // unknown (old SDKs, Zipkin): kept
        (0x001, true),  // sampled
        (0x101, true),  // sampled, HAS_IS_REMOTE
        (0x301, true),  // sampled, remote parent
        (0x003, true),  // sampled + random
        (0x100, false), // known (HAS_IS_REMOTE), not sampled
        (0x002, false), // random flag only: known, not sampled
        (0x300, false),
        (0x400, true), // only a reserved bit: still unknown
    ];
    let mut spans: Vec<Span> = cases
        .iter()
        .enumerate()
        .map(|(i, (flags, _))| Span {
            flags: *flags,
            span_id: [i as u8 + 1; 8],
            ..span([9; 16], &r)
        })
        .collect();
    let removed = s.retain(&mut spans);
    let kept: Vec<u32> = spans.iter().map(|s| s.flags).collect();
    let expected: Vec<u32> = cases.iter().filter(|(_, keep)| *keep).map(|(f, _)| *f).collect();
    assert_eq!(kept, expected);
    assert_eq!(removed, cases.len() - expected.len());
    // Off: the flag is not looked at.
    let mut spans = vec![Span {
        flags: 0x100,
        ..span([9; 16], &r)
    }];
    assert_eq!(sampler(HeadSamplingConfig::default()).retain(&mut spans), 0);
}

// ---- rate limit ---------------------------------------------------------------------------

/// A clock the test moves by hand.
#[derive(Clone, Default)]
struct ManualClock(Arc<AtomicU64>);
impl ManualClock {
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
    fn clock(&self) -> Clock {
        let t = self.0.clone();
        Arc::new(move || Duration::from_nanos(t.load(Ordering::Relaxed)))
    }
}

fn rate_limited(spans_per_second: f64, services: &[(&str, f64)], clock: &ManualClock) -> HeadSampler {
    let mut cfg = HeadSamplingConfig::default();
    cfg.rate_limit.spans_per_second = spans_per_second;
    cfg.rate_limit.services = services.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    HeadSampler::with_clock(&cfg, clock.clock()).unwrap()
}

/// Sends `per_second` spans of `service` in ten batches per simulated second, `spans_per_trace`
/// consecutive spans sharing a trace id; returns the spans kept in each second.
#[allow(clippy::too_many_arguments)]
fn drive(
    s: &HeadSampler,
    clock: &ManualClock,
    rng: &mut Rng,
    r: &Arc<Resource>,
    seconds: usize,
    per_second: usize,
    spans_per_trace: usize,
    trace_state: &str,
) -> Vec<usize> {
    let mut kept = Vec::new();
    let mut trace = rng.trace_id();
    let mut n = 0;
    for _ in 0..seconds {
        let mut this_second = 0;
        for _ in 0..10 {
            let mut batch: Vec<Span> = (0..per_second / 10)
                .map(|_| {
                    if n % spans_per_trace == 0 {
                        trace = rng.trace_id();
                    }
                    n += 1;
                    Span {
                        trace_state: trace_state.into(),
                        ..span(trace, r)
                    }
                })
                .collect();
            s.retain(&mut batch);
            this_second += batch.len();
            clock.advance(Duration::from_millis(100));
        }
        kept.push(this_second);
    }
    kept
}

#[test]
fn rate_limit_converges_to_the_limit() {
    let clock = ManualClock::default();
    let s = rate_limited(1000.0, &[], &clock);
    assert!(s.enabled());
    let mut rng = Rng(1);
    let r = resource("rl-converge");
    // 10,000 spans/s offered, limit 1,000.
    let kept = drive(&s, &clock, &mut rng, &r, 12, 10_000, 1, "");
    // Each second after the first re-tune keeps about 1,000: binomial sigma ≈ 30, plus the
    // estimate's own error from the previous second (≈ 3%): ±6 sigma is well inside ±25%.
    for (second, k) in kept.iter().enumerate().skip(2) {
        assert!((750..=1250).contains(k), "second {second}: kept {k} ({kept:?})");
    }
    let p = s.service_probability("rl-converge");
    assert!((0.075..=0.125).contains(&p), "probability {p}");
    // The burst guard caps the first second too: far below the 10,000 offered.
    assert!(kept[0] < 4000, "{kept:?}");

    // Traffic falls below the limit: everything is kept again once a whole window (which need
    // not line up with these seconds) has seen only the low rate.
    let kept = drive(&s, &clock, &mut rng, &r, 4, 500, 1, "");
    assert_eq!(kept[2..], [500, 500], "{kept:?}");
    assert_eq!(s.service_probability("rl-converge"), 1.0);
}

#[test]
fn rate_limit_converges_when_upstream_already_sampled() {
    // Spans arrive sampled at 10% upstream: their randomness all lies above th:e666, so an
    // open-loop "limit / offered" threshold would land exactly on theirs and keep everything.
    let clock = ManualClock::default();
    let s = rate_limited(200.0, &[], &clock);
    let mut rng = Rng(2);
    let r = resource("rl-upstream");
    let t10 = probability_to_threshold(0.1);
    let clock2 = clock.clone();
    let mut kept = Vec::new();
    for _ in 0..15 {
        let mut this_second = 0;
        for _ in 0..10 {
            let mut batch: Vec<Span> = (0..200)
                .map(|_| {
                    // Randomness uniform in [t10, 2^56): what a 10% upstream sampler lets through.
                    let rv = t10 + rng.next() % (NEVER - t10);
                    Span {
                        trace_state: format!("ot=th:e666;rv:{rv:014x}"),
                        ..span(rng.trace_id(), &r)
                    }
                })
                .collect();
            s.retain(&mut batch);
            this_second += batch.len();
            clock2.advance(Duration::from_millis(100));
        }
        kept.push(this_second);
    }
    // 2,000/s offered, limit 200: sigma ≈ 13.4 per second.
    for (second, k) in kept.iter().enumerate().skip(6) {
        assert!((120..=280).contains(k), "second {second}: kept {k} ({kept:?})");
    }
}

#[test]
fn rate_limit_keeps_whole_traces_and_per_service_overrides() {
    let clock = ManualClock::default();
    let s = rate_limited(100.0, &[("rl-big", 1000.0), ("rl-free", 0.0)], &clock);
    let mut rng = Rng(3);
    let small = resource("rl-small");
    let big = resource("rl-big");
    let free = resource("rl-free");
    // Ten spans per trace.
    let kept_small = drive(&s, &clock, &mut rng, &small, 6, 2000, 10, "");
    let kept_big = drive(&s, &clock, &mut rng, &big, 6, 5000, 10, "");
    let kept_free = drive(&s, &clock, &mut rng, &free, 2, 5000, 10, "");
    assert!(kept_small[3..].iter().all(|k| (40..=200).contains(k)), "{kept_small:?}");
    assert!(kept_big[3..].iter().all(|k| (700..=1300).contains(k)), "{kept_big:?}");
    assert_eq!(kept_free, [5000, 5000]);

    // Whole traces: in a steady second, every trace is kept with all ten spans or not at all.
    let mut batch: Vec<Span> = (0..100)
        .flat_map(|_| {
            let id = rng.trace_id();
            (0..10).map(move |_| id)
        })
        .map(|id| span(id, &small))
        .collect();
    s.retain(&mut batch);
    let mut per_trace: HashMap<[u8; 16], usize> = HashMap::new();
    for sp in &batch {
        *per_trace.entry(sp.trace_id).or_default() += 1;
    }
    assert!(per_trace.values().all(|n| *n == 10), "{per_trace:?}");

    // Across services: the set kept by the stricter service is inside the looser one's.
    let ids: Vec<_> = (0..2000).map(|_| rng.trace_id()).collect();
    let keep = |r: &Arc<Resource>| {
        let mut spans: Vec<Span> = ids.iter().map(|id| span(*id, r)).collect();
        s.retain(&mut spans);
        spans.into_iter().map(|s| s.trace_id).collect::<Vec<_>>()
    };
    let (strict, loose) = (keep(&small), keep(&big));
    assert!(strict.len() < loose.len());
    assert!(strict.iter().all(|id| loose.contains(id)));
}

#[test]
fn rate_limit_state_is_bounded() {
    let clock = ManualClock::default();
    let mut cfg = HeadSamplingConfig::default();
    cfg.rate_limit.spans_per_second = 10.0;
    cfg.rate_limit.max_services = 3;
    cfg.rate_limit.services.insert("rl-bound-configured".into(), 5.0);
    let s = HeadSampler::with_clock(&cfg, clock.clock()).unwrap();
    let mut rng = Rng(4);
    for i in 0..10 {
        let r = resource(&format!("rl-bound-{i}"));
        let mut spans = vec![span(rng.trace_id(), &r)];
        s.retain(&mut spans);
    }
    // The configured service plus two others; the rest share the overflow limiter.
    assert_eq!(s.tracked_services(), 3);
    // After a minute of silence the idle ones make room; the configured one stays.
    clock.advance(Duration::from_secs(61));
    let r = resource("rl-bound-new");
    let mut spans = vec![span(rng.trace_id(), &r)];
    s.retain(&mut spans);
    assert_eq!(s.tracked_services(), 2);
    assert_eq!(s.service_probability("rl-bound-configured"), 1.0);
}

#[test]
fn next_probability_rules() {
    // Offered within the limit: keep all.
    assert_eq!(next_probability(0.01, 100.0, 90.0, 1.0), 1.0);
    // Proportional: 1000 kept at p = 0.5 with limit 100 → 0.05.
    assert!((next_probability(0.5, 100.0, 2000.0, 1000.0) - 0.05).abs() < 1e-12);
    // Growth is at most 2× per re-tune, and nothing kept doubles.
    assert_eq!(next_probability(0.1, 100.0, 5000.0, 1.0), 0.2);
    assert_eq!(next_probability(0.1, 100.0, 5000.0, 0.0), 0.2);
}

#[test]
fn concurrent_use_from_many_threads() {
    let clock = ManualClock::default();
    let s = Arc::new(rate_limited(1000.0, &[], &clock));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(100 + t);
                let r = resource(&format!("rl-thread-{}", t % 2));
                let mut kept = 0;
                for _ in 0..50 {
                    let mut spans: Vec<Span> = (0..100).map(|_| span(rng.trace_id(), &r)).collect();
                    s.retain(&mut spans);
                    kept += spans.len();
                }
                kept
            })
        })
        .collect();
    let kept: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    // 20,000 spans in one instant over two services with limit 1,000 each: the burst guard lets
    // through at most a few times the limit, never everything.
    assert!(kept > 0 && kept < 10_000, "kept {kept}");
}
