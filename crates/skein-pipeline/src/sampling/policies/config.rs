//! The TOML shape of tail-sampling policies: the OpenTelemetry Collector `tail_sampling`
//! processor's YAML keys, one sub-table per policy type, so a collector config ports by
//! changing syntax only. Fields a policy cannot work without are `Option`s here and checked in
//! `Policies::new`, so the error can name the policy as well as the field.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One policy: a name (used in metrics and errors), a type, and the sub-table of that type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: PolicyType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<StatusCodeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_attribute: Option<StringAttributeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric_attribute: Option<NumericAttributeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boolean_attribute: Option<BooleanAttributeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probabilistic: Option<ProbabilisticConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiting: Option<RateLimitingConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_count: Option<SpanCountConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_state: Option<TraceStateConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub and: Option<AndConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composite: Option<CompositeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<DropConfig>,
}

/// The policy types skein implements, by their collector names. Anything else is kept as
/// `Unknown` so `Policies::new` can reject it with the policy's name in the message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PolicyType {
    AlwaysSample,
    Latency,
    StatusCode,
    StringAttribute,
    NumericAttribute,
    BooleanAttribute,
    Probabilistic,
    RateLimiting,
    SpanCount,
    TraceState,
    And,
    Composite,
    Drop,
    /// An unrecognised (or, when empty, missing) `type`.
    Unknown(String),
    #[default]
    Missing,
}

impl PolicyType {
    pub const SUPPORTED: &'static [&'static str] = &[
        "always_sample",
        "latency",
        "status_code",
        "string_attribute",
        "numeric_attribute",
        "boolean_attribute",
        "probabilistic",
        "rate_limiting",
        "span_count",
        "trace_state",
        "and",
        "composite",
        "drop",
    ];

    pub fn as_str(&self) -> &str {
        match self {
            PolicyType::AlwaysSample => "always_sample",
            PolicyType::Latency => "latency",
            PolicyType::StatusCode => "status_code",
            PolicyType::StringAttribute => "string_attribute",
            PolicyType::NumericAttribute => "numeric_attribute",
            PolicyType::BooleanAttribute => "boolean_attribute",
            PolicyType::Probabilistic => "probabilistic",
            PolicyType::RateLimiting => "rate_limiting",
            PolicyType::SpanCount => "span_count",
            PolicyType::TraceState => "trace_state",
            PolicyType::And => "and",
            PolicyType::Composite => "composite",
            PolicyType::Drop => "drop",
            PolicyType::Unknown(s) => s,
            PolicyType::Missing => "",
        }
    }

    pub fn parse(s: &str) -> PolicyType {
        match s {
            "always_sample" => PolicyType::AlwaysSample,
            "latency" => PolicyType::Latency,
            "status_code" => PolicyType::StatusCode,
            "string_attribute" => PolicyType::StringAttribute,
            "numeric_attribute" => PolicyType::NumericAttribute,
            "boolean_attribute" => PolicyType::BooleanAttribute,
            "probabilistic" => PolicyType::Probabilistic,
            "rate_limiting" => PolicyType::RateLimiting,
            "span_count" => PolicyType::SpanCount,
            "trace_state" => PolicyType::TraceState,
            "and" => PolicyType::And,
            "composite" => PolicyType::Composite,
            "drop" => PolicyType::Drop,
            "" => PolicyType::Missing,
            other => PolicyType::Unknown(other.to_string()),
        }
    }
}

impl fmt::Display for PolicyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for PolicyType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PolicyType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(PolicyType::parse(&s))
    }
}

/// Trace duration (latest end − earliest start) of at least `threshold_ms`; with an upper
/// bound, `threshold_ms < duration <= upper_threshold_ms`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_ms: Option<i64>,
    /// 0 = no upper bound.
    #[serde(default)]
    pub upper_threshold_ms: i64,
}

/// Any span with one of these status codes: `OK`, `ERROR`, `UNSET`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeConfig {
    #[serde(default)]
    pub status_codes: Vec<String>,
}

/// Any span or resource whose string attribute `key` equals one of `values` (or, with
/// `enabled_regex_matching`, matches one of them as an unanchored regex).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct StringAttributeConfig {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub enabled_regex_matching: bool,
    /// Accepted for collector compatibility; skein does not cache regex results (matching is
    /// cheaper than the cache, see evaluate.rs).
    #[serde(default)]
    pub cache_max_size: usize,
    #[serde(default)]
    pub invert_match: bool,
}

/// Any span or resource whose integer (or double) attribute `key` is in `[min_value, max_value]`;
/// a missing bound is open.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct NumericAttributeConfig {
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_value: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_value: Option<i64>,
    #[serde(default)]
    pub invert_match: bool,
}

/// Any span or resource whose boolean attribute `key` equals `value`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct BooleanAttributeConfig {
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<bool>,
    #[serde(default)]
    pub invert_match: bool,
}

/// `sampling_percentage` % of trace ids, decided by a salted FNV-1a hash of the trace id: the
/// same trace id gets the same answer everywhere (and the same as the collector's policy with
/// the same salt).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticConfig {
    /// Empty = the collector's default salt.
    #[serde(default)]
    pub hash_salt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_percentage: Option<f64>,
}

/// Whole traces while the spans kept in the current second stay below `spans_per_second`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RateLimitingConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spans_per_second: Option<i64>,
}

/// Traces with `min_spans <= spans <= max_spans` (max 0 = no upper bound).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct SpanCountConfig {
    #[serde(default)]
    pub min_spans: i64,
    #[serde(default)]
    pub max_spans: i64,
}

/// Any span whose W3C `tracestate` has `key` with one of `values`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TraceStateConfig {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
}

/// Sample when every sub-policy samples.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct AndConfig {
    #[serde(default)]
    pub and_sub_policy: Vec<PolicyConfig>,
}

/// Drop (a veto over every other policy) when every sub-policy samples.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct DropConfig {
    #[serde(default)]
    pub drop_sub_policy: Vec<PolicyConfig>,
}

/// The first sub-policy (in `policy_order`) that samples a trace decides, within its share
/// (`rate_allocation`) of `max_total_spans_per_second`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct CompositeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_spans_per_second: Option<i64>,
    #[serde(default)]
    pub policy_order: Vec<String>,
    #[serde(default)]
    pub composite_sub_policy: Vec<PolicyConfig>,
    #[serde(default)]
    pub rate_allocation: Vec<RateAllocation>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RateAllocation {
    #[serde(default)]
    pub policy: String,
    /// Percent of `max_total_spans_per_second`; 0 = an equal share (total / sub-policies).
    #[serde(default)]
    pub percent: i64,
}
