//! Jaeger's sampling strategies file (`default_strategy`, `service_strategies`,
//! `operation_strategies`) parsed, validated, and turned into the api_v2 response each service
//! is answered with. The merging rules follow jaeger-collector's static strategy provider so a
//! file written for Jaeger behaves the same here.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// What every service gets when no strategies file is configured (and what a file without a
/// `default_strategy` falls back to). Jaeger uses 0.001; skein keeps everything by default
/// because head sampling in the SDK is an opt-in: dropping 99.9% of traces silently, before the
/// tail sampler can keep the errors and slow ones, surprises more than it helps.
pub const DEFAULT_SAMPLING_RATE: f64 = 1.0;

/// Jaeger's probability for operations a per-operation strategy does not list when the
/// service's own strategy is rate limiting (it has no probability to inherit).
pub const DEFAULT_OPERATION_SAMPLING_RATE: f64 = 0.001;

// ---- the file ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StrategiesFile {
    #[serde(default)]
    default_strategy: Option<FileStrategy>,
    #[serde(default)]
    service_strategies: Vec<FileStrategy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStrategy {
    /// Set for entries of `service_strategies`; ignored on `default_strategy` (as in Jaeger).
    #[serde(default)]
    service: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    param: f64,
    #[serde(default)]
    operation_strategies: Vec<FileOperationStrategy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOperationStrategy {
    operation: String,
    #[serde(rename = "type")]
    kind: String,
    param: f64,
}

// ---- the api_v2 response (JSON shape of `jaeger.api_v2.SamplingStrategyResponse`) ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StrategyType {
    #[serde(rename = "PROBABILISTIC")]
    Probabilistic,
    #[serde(rename = "RATE_LIMITING")]
    RateLimiting,
}

impl StrategyType {
    /// The enum's number in sampling.proto / sampling.thrift.
    pub fn number(self) -> i32 {
        match self {
            StrategyType::Probabilistic => 0,
            StrategyType::RateLimiting => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbabilisticSampling {
    pub sampling_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitingSampling {
    pub max_traces_per_second: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationSampling {
    pub operation: String,
    pub probabilistic_sampling: ProbabilisticSampling,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PerOperationSampling {
    pub default_sampling_probability: f64,
    pub default_lower_bound_traces_per_second: f64,
    pub per_operation_strategies: Vec<OperationSampling>,
    pub default_upper_bound_traces_per_second: f64,
}

/// One service's answer. `strategy_type` is always written (clients such as the OpenTelemetry
/// JS sampler read it even when it is the enum's zero value).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategyResponse {
    pub strategy_type: StrategyType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probabilistic_sampling: Option<ProbabilisticSampling>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limiting_sampling: Option<RateLimitingSampling>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_sampling: Option<PerOperationSampling>,
}

impl StrategyResponse {
    pub fn probabilistic(rate: f64) -> Self {
        StrategyResponse {
            strategy_type: StrategyType::Probabilistic,
            probabilistic_sampling: Some(ProbabilisticSampling { sampling_rate: rate }),
            rate_limiting_sampling: None,
            operation_sampling: None,
        }
    }

    pub fn rate_limiting(max_traces_per_second: i32) -> Self {
        StrategyResponse {
            strategy_type: StrategyType::RateLimiting,
            probabilistic_sampling: None,
            rate_limiting_sampling: Some(RateLimitingSampling { max_traces_per_second }),
            operation_sampling: None,
        }
    }

    /// The api_v2 JSON (`/sampling`, `/api/sampling`): enums as names.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The legacy JSON jaeger-agent serves on `/` (the thrift struct marshalled as JSON): the
    /// same field names, but `strategyType` is the enum's number.
    pub fn to_legacy_json(&self) -> serde_json::Value {
        let mut v = self.to_json();
        if let Some(obj) = v.as_object_mut() {
            obj.insert("strategyType".into(), self.strategy_type.number().into());
        }
        v
    }
}

/// A validated strategies file: the answer for each listed service and for everyone else.
#[derive(Debug, Clone, PartialEq)]
pub struct Strategies {
    pub default: StrategyResponse,
    pub services: HashMap<String, StrategyResponse>,
}

impl Default for Strategies {
    fn default() -> Self {
        Strategies {
            default: StrategyResponse::probabilistic(DEFAULT_SAMPLING_RATE),
            services: HashMap::new(),
        }
    }
}

impl Strategies {
    /// The strategy for `service`: its own entry, else the default.
    pub fn for_service(&self, service: &str) -> &StrategyResponse {
        self.services.get(service).unwrap_or(&self.default)
    }

    /// Parses and validates a strategies file; the error names the offending entry and field.
    pub fn parse(json: &str) -> Result<Strategies, String> {
        let file: StrategiesFile =
            serde_json::from_str(json).map_err(|e| format!("not a valid strategies file: {e}"))?;
        let default_had_ops;
        let default = match &file.default_strategy {
            Some(s) => {
                default_had_ops = !s.operation_strategies.is_empty();
                build(s, "default_strategy")?
            }
            None => {
                default_had_ops = false;
                StrategyResponse::probabilistic(DEFAULT_SAMPLING_RATE)
            }
        };
        let default_ops = default
            .operation_sampling
            .as_ref()
            .filter(|_| default_had_ops)
            .map(|o| o.per_operation_strategies.clone())
            .unwrap_or_default();

        let mut services = HashMap::new();
        for (i, s) in file.service_strategies.iter().enumerate() {
            let name = s.service.as_deref().unwrap_or("").trim();
            let ctx = format!("service_strategies[{i}] (service {name:?})");
            if name.is_empty() {
                return Err(format!("service_strategies[{i}]: \"service\" is missing or empty"));
            }
            let mut resp = build(s, &ctx)?;
            merge_default_operations(&mut resp, &default_ops);
            if services.insert(name.to_string(), resp).is_some() {
                return Err(format!("{ctx}: the service is listed more than once"));
            }
        }
        Ok(Strategies { default, services })
    }
}

/// Jaeger's rule: the default strategy's operation strategies also apply to every listed service
/// (the service's own operation entries win); a probabilistic service without any gets them with
/// its own rate as the default probability.
fn merge_default_operations(resp: &mut StrategyResponse, default_ops: &[OperationSampling]) {
    if default_ops.is_empty() {
        return;
    }
    match (&mut resp.operation_sampling, &resp.probabilistic_sampling) {
        (Some(own), _) => {
            for op in default_ops {
                if !own.per_operation_strategies.iter().any(|o| o.operation == op.operation) {
                    own.per_operation_strategies.push(op.clone());
                }
            }
        }
        (None, Some(p)) => {
            resp.operation_sampling = Some(PerOperationSampling {
                default_sampling_probability: p.sampling_rate,
                default_lower_bound_traces_per_second: 0.0,
                per_operation_strategies: default_ops.to_vec(),
                default_upper_bound_traces_per_second: 0.0,
            });
        }
        (None, None) => {}
    }
}

fn probability(param: f64, ctx: &str) -> Result<f64, String> {
    if !(0.0..=1.0).contains(&param) {
        return Err(format!(
            "{ctx}: param {param} is outside [0, 1] (a probabilistic strategy's param is a sampling rate)"
        ));
    }
    Ok(param)
}

fn rate_limit(param: f64, ctx: &str) -> Result<i32, String> {
    if param < 0.0 {
        return Err(format!(
            "{ctx}: param {param} is negative (a ratelimiting strategy's param is traces per second)"
        ));
    }
    if param.fract() != 0.0 || param > i32::MAX as f64 {
        return Err(format!(
            "{ctx}: param {param} must be a whole number of traces per second (at most {})",
            i32::MAX
        ));
    }
    Ok(param as i32)
}

fn build(s: &FileStrategy, ctx: &str) -> Result<StrategyResponse, String> {
    let mut resp = match s.kind.as_str() {
        "probabilistic" => StrategyResponse::probabilistic(probability(s.param, ctx)?),
        "ratelimiting" => StrategyResponse::rate_limiting(rate_limit(s.param, ctx)?),
        other => {
            return Err(format!(
                "{ctx}: unknown type {other:?} (expected \"probabilistic\" or \"ratelimiting\")"
            ))
        }
    };
    if s.operation_strategies.is_empty() {
        return Ok(resp);
    }
    let default_probability = resp
        .probabilistic_sampling
        .as_ref()
        .map_or(DEFAULT_OPERATION_SAMPLING_RATE, |p| p.sampling_rate);
    let mut ops: Vec<OperationSampling> = Vec::with_capacity(s.operation_strategies.len());
    for (j, op) in s.operation_strategies.iter().enumerate() {
        let op_ctx = format!("{ctx}.operation_strategies[{j}] (operation {:?})", op.operation);
        if op.operation.is_empty() {
            return Err(format!("{ctx}.operation_strategies[{j}]: \"operation\" is empty"));
        }
        if op.kind != "probabilistic" {
            return Err(format!(
                "{op_ctx}: type {:?} is not supported; operation strategies can only be \"probabilistic\" \
                 (the api_v2 response carries only a probability per operation)",
                op.kind
            ));
        }
        if ops.iter().any(|o| o.operation == op.operation) {
            return Err(format!("{op_ctx}: the operation is listed more than once"));
        }
        ops.push(OperationSampling {
            operation: op.operation.clone(),
            probabilistic_sampling: ProbabilisticSampling {
                sampling_rate: probability(op.param, &op_ctx)?,
            },
        });
    }
    resp.operation_sampling = Some(PerOperationSampling {
        default_sampling_probability: default_probability,
        default_lower_bound_traces_per_second: 0.0,
        per_operation_strategies: ops,
        default_upper_bound_traces_per_second: 0.0,
    });
    Ok(resp)
}
