use super::*;

const FILE: &str = r#"{
  "service_strategies": [
    {"service": "checkout", "type": "probabilistic", "param": 0.8,
     "operation_strategies": [
       {"operation": "GET /health", "type": "probabilistic", "param": 0.0},
       {"operation": "POST /pay", "type": "probabilistic", "param": 1.0}
     ]},
    {"service": "search", "type": "ratelimiting", "param": 5},
    {"service": "ledger", "type": "probabilistic", "param": 0.3}
  ],
  "default_strategy": {"type": "probabilistic", "param": 0.25,
    "operation_strategies": [
      {"operation": "GET /health", "type": "probabilistic", "param": 0.5},
      {"operation": "GET /metrics", "type": "probabilistic", "param": 0.01}
    ]}
}"#;

fn ops(r: &StrategyResponse) -> Vec<(String, f64)> {
    r.operation_sampling
        .as_ref()
        .map(|o| {
            o.per_operation_strategies
                .iter()
                .map(|s| (s.operation.clone(), s.probabilistic_sampling.sampling_rate))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn lookup_falls_back_from_service_to_default() {
    let s = Strategies::parse(FILE).unwrap();
    let unknown = s.for_service("nobody");
    assert_eq!(unknown.strategy_type, StrategyType::Probabilistic);
    assert_eq!(unknown.probabilistic_sampling.as_ref().unwrap().sampling_rate, 0.25);
    assert_eq!(
        unknown
            .operation_sampling
            .as_ref()
            .unwrap()
            .default_sampling_probability,
        0.25
    );

    let search = s.for_service("search");
    assert_eq!(search.strategy_type, StrategyType::RateLimiting);
    assert_eq!(search.rate_limiting_sampling.as_ref().unwrap().max_traces_per_second, 5);
    assert!(search.probabilistic_sampling.is_none());
    // A rate-limited service has no probability to hand to the default's operations.
    assert!(search.operation_sampling.is_none());
}

#[test]
fn operation_strategies_merge_with_the_default_ones() {
    let s = Strategies::parse(FILE).unwrap();
    // The service's own entry wins; the default's other operations are added.
    let checkout = s.for_service("checkout");
    assert_eq!(
        ops(checkout),
        vec![
            ("GET /health".to_string(), 0.0),
            ("POST /pay".to_string(), 1.0),
            ("GET /metrics".to_string(), 0.01)
        ]
    );
    assert_eq!(
        checkout
            .operation_sampling
            .as_ref()
            .unwrap()
            .default_sampling_probability,
        0.8
    );
    // A probabilistic service without operations inherits the default's, with its own rate.
    let ledger = s.for_service("ledger");
    assert_eq!(ops(ledger).len(), 2);
    assert_eq!(
        ledger.operation_sampling.as_ref().unwrap().default_sampling_probability,
        0.3
    );
}

#[test]
fn defaults_without_a_file_or_a_default_strategy() {
    let none = Strategies::default();
    assert_eq!(
        *none.for_service("x"),
        StrategyResponse::probabilistic(DEFAULT_SAMPLING_RATE)
    );
    let only_services =
        Strategies::parse(r#"{"service_strategies":[{"service":"a","type":"ratelimiting","param":2}]}"#).unwrap();
    assert_eq!(
        *only_services.for_service("b"),
        StrategyResponse::probabilistic(DEFAULT_SAMPLING_RATE)
    );
    // A rate-limited service's unlisted operations get Jaeger's default probability.
    let rl = Strategies::parse(
        r#"{"service_strategies":[{"service":"a","type":"ratelimiting","param":2,
             "operation_strategies":[{"operation":"x","type":"probabilistic","param":0.5}]}]}"#,
    )
    .unwrap();
    let per_op = rl.for_service("a").operation_sampling.clone().unwrap();
    assert_eq!(per_op.default_sampling_probability, DEFAULT_OPERATION_SAMPLING_RATE);
}

#[test]
fn json_shapes_match_jaeger() {
    let s = Strategies::parse(FILE).unwrap();
    let v = s.for_service("checkout").to_json();
    assert_eq!(v["strategyType"], "PROBABILISTIC");
    assert_eq!(v["probabilisticSampling"]["samplingRate"], 0.8);
    assert_eq!(v["operationSampling"]["defaultSamplingProbability"], 0.8);
    assert_eq!(v["operationSampling"]["defaultLowerBoundTracesPerSecond"], 0.0);
    assert_eq!(v["operationSampling"]["defaultUpperBoundTracesPerSecond"], 0.0);
    assert_eq!(
        v["operationSampling"]["perOperationStrategies"][1]["operation"],
        "POST /pay"
    );
    assert_eq!(
        v["operationSampling"]["perOperationStrategies"][1]["probabilisticSampling"]["samplingRate"],
        1.0
    );
    let rl = s.for_service("search");
    assert_eq!(rl.to_json()["strategyType"], "RATE_LIMITING");
    assert_eq!(rl.to_json()["rateLimitingSampling"]["maxTracesPerSecond"], 5);
    assert!(rl.to_json().get("probabilisticSampling").is_none());
    assert_eq!(rl.to_legacy_json()["strategyType"], 1);
    assert_eq!(s.for_service("x").to_legacy_json()["strategyType"], 0);
}

fn err(json: &str) -> String {
    Strategies::parse(json).unwrap_err()
}

#[test]
fn validation_names_what_is_wrong() {
    let e = err(r#"{"service_strategies":[{"service":"pay","type":"probabilistic","param":1.5}]}"#);
    assert!(
        e.contains("\"pay\"") && e.contains("1.5") && e.contains("[0, 1]"),
        "{e}"
    );
    let e = err(r#"{"default_strategy":{"type":"ratelimiting","param":-3}}"#);
    assert!(e.contains("default_strategy") && e.contains("negative"), "{e}");
    let e = err(r#"{"default_strategy":{"type":"ratelimiting","param":2.5}}"#);
    assert!(e.contains("whole number"), "{e}");
    let e = err(r#"{"service_strategies":[{"service":"pay","type":"adaptive","param":1}]}"#);
    assert!(e.contains("unknown type \"adaptive\"") && e.contains("pay"), "{e}");
    let e = err(
        r#"{"service_strategies":[{"service":"pay","type":"probabilistic","param":1,
            "operation_strategies":[{"operation":"GET /x","type":"probabilistic","param":-0.1}]}]}"#,
    );
    assert!(e.contains("GET /x") && e.contains("pay") && e.contains("-0.1"), "{e}");
    let e = err(
        r#"{"service_strategies":[{"service":"pay","type":"probabilistic","param":1,
            "operation_strategies":[{"operation":"GET /x","type":"ratelimiting","param":3}]}]}"#,
    );
    assert!(e.contains("GET /x") && e.contains("only be \"probabilistic\""), "{e}");
    let e = err(r#"{"service_strategies":[{"type":"probabilistic","param":1}]}"#);
    assert!(e.contains("service_strategies[0]") && e.contains("\"service\""), "{e}");
    let e = err(
        r#"{"service_strategies":[{"service":"a","type":"probabilistic","param":1},
                                  {"service":"a","type":"probabilistic","param":0}]}"#,
    );
    assert!(e.contains("more than once"), "{e}");
    let e = err(r#"{"service_strategy":[]}"#);
    assert!(e.contains("service_strategy"), "{e}");
    let e = err(r#"{"default_strategy":{"type":"probabilistic"}}"#);
    assert!(e.contains("param"), "{e}");
    assert!(err("{not json").contains("not a valid strategies file"));
}

#[test]
fn reload_keeps_old_strategies_when_the_new_file_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strategies.json");
    std::fs::write(&path, r#"{"default_strategy":{"type":"probabilistic","param":0.5}}"#).unwrap();
    let store = StrategyStore::open(Some(&path)).unwrap();
    assert_eq!(store.strategy_for("a"), StrategyResponse::probabilistic(0.5));
    assert!(!store.reload_if_changed(), "unchanged file is not reloaded");

    std::fs::write(&path, r#"{"default_strategy":{"type":"probabilistic","param":0.1}}"#).unwrap();
    assert!(store.reload_if_changed());
    assert_eq!(store.strategy_for("a"), StrategyResponse::probabilistic(0.1));

    std::fs::write(&path, r#"{"default_strategy":{"type":"probabilistic","param":7}}"#).unwrap();
    assert!(!store.reload_if_changed());
    assert_eq!(store.strategy_for("a"), StrategyResponse::probabilistic(0.1));
    std::fs::remove_file(&path).unwrap();
    assert!(!store.reload_if_changed());
    assert_eq!(store.strategy_for("a"), StrategyResponse::probabilistic(0.1));

    std::fs::write(&path, r#"{"default_strategy":{"type":"ratelimiting","param":4}}"#).unwrap();
    assert!(store.reload_if_changed());
    assert_eq!(store.strategy_for("a"), StrategyResponse::rate_limiting(4));
}

#[test]
fn a_bad_file_at_startup_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let e = StrategyStore::open(Some(&path)).err().unwrap();
    assert!(e.contains("s.json"), "{e}");
    std::fs::write(&path, r#"{"default_strategy":{"type":"nope","param":1}}"#).unwrap();
    let e = StrategyStore::open(Some(&path)).err().unwrap();
    assert!(e.contains("s.json") && e.contains("nope"), "{e}");
    let store = StrategyStore::open(None).unwrap();
    assert_eq!(store.strategy_for("x"), StrategyResponse::probabilistic(1.0));
}

fn root(service: &str, name: &str) -> skein_model::Span {
    let resource = skein_model::Resource {
        attributes: vec![skein_model::KeyValue {
            key: "service.name".into(),
            value: skein_model::AnyValue::String(service.into()),
        }],
        dropped_attributes_count: 0,
    };
    skein_model::Span {
        name: name.into(),
        resource: std::sync::Arc::new(resource),
        ..Default::default()
    }
}

fn adaptive_rate(store: &StrategyStore, service: &str, op: &str) -> Option<f64> {
    store
        .strategy_for(service)
        .operation_sampling?
        .per_operation_strategies
        .iter()
        .find(|o| o.operation == op)
        .map(|o| o.probabilistic_sampling.sampling_rate)
}

#[test]
fn adaptive_probabilities_approach_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    std::fs::write(
        &path,
        r#"{"default_strategy":{"type":"probabilistic","param":1.0},
            "service_strategies":[{"service":"shop","type":"probabilistic","param":0.5}]}"#,
    )
    .unwrap();
    let store = StrategyStore::open(Some(&path)).unwrap();
    let counter = store.enable_adaptive(AdaptiveConfig {
        target_traces_per_second: 2.0,
        recompute_interval: std::time::Duration::from_secs(10),
        min_sampling_rate: 0.001,
    });
    // Before any traffic the file's strategy is served unchanged.
    assert_eq!(store.strategy_for("shop"), StrategyResponse::probabilistic(0.5));

    // 1000 sampled roots in 10s at the file's 0.5: ~200/s real traffic → 2/200 = 0.01.
    let hot: Vec<_> = (0..1000).map(|_| root("shop", "GET /hot")).collect();
    counter.observe(&hot);
    let mut child = root("shop", "child-only");
    child.parent_span_id = [1; 8];
    counter.observe(&[child, root("shop", "GET /cold")]);
    store.recompute_adaptive(std::time::Duration::from_secs(10));
    let hot_rate = adaptive_rate(&store, "shop", "GET /hot").unwrap();
    assert!((hot_rate - 0.01).abs() < 1e-9, "{hot_rate}");
    // 1 root in 10s at 0.5 = 0.2/s real, under the target: as much as allowed (≤ 2× per step).
    assert_eq!(adaptive_rate(&store, "shop", "GET /cold"), Some(1.0));
    assert_eq!(
        adaptive_rate(&store, "shop", "child-only"),
        None,
        "only root spans count"
    );
    let resp = store.strategy_for("shop");
    assert_eq!(
        resp.operation_sampling.as_ref().unwrap().default_sampling_probability,
        0.5
    );
    assert_eq!(resp.probabilistic_sampling.as_ref().unwrap().sampling_rate, 0.5);

    // Steady state: at 0.01 the SDK sends ~2/s = 20 per 10s → stays at 0.01.
    counter.observe(&hot[..20]);
    store.recompute_adaptive(std::time::Duration::from_secs(10));
    let steady = adaptive_rate(&store, "shop", "GET /hot").unwrap();
    assert!((steady - 0.01).abs() < 1e-9, "{steady}");
    // No traffic: the probability grows (at most doubling) instead of staying stuck.
    store.recompute_adaptive(std::time::Duration::from_secs(10));
    let grown = adaptive_rate(&store, "shop", "GET /hot").unwrap();
    assert!((grown - 0.02).abs() < 1e-9, "{grown}");
    // Services with no traffic keep the file's strategy.
    assert_eq!(store.strategy_for("quiet"), StrategyResponse::probabilistic(1.0));
}

#[test]
fn adaptive_config_validation_names_the_key() {
    let bad = AdaptiveConfig {
        target_traces_per_second: -1.0,
        ..Default::default()
    };
    assert!(bad.validate().unwrap_err().contains("target_traces_per_second"));
    let bad = AdaptiveConfig {
        min_sampling_rate: 0.0,
        ..Default::default()
    };
    assert!(bad.validate().unwrap_err().contains("min_sampling_rate"));
    assert!(AdaptiveConfig::default().validate().is_ok());
    assert!(!AdaptiveConfig::default().enabled());
}
