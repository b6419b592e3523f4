//! Built policies and how each one decides a trace. Everything a decision needs is prepared in
//! `build` (regexes compiled, salts hashed, budgets computed), so evaluating allocates nothing.

use std::sync::Arc;

use regex::RegexSet;
use skein_model::{find_attr, AnyValue, Resource, Span, StatusCode, TraceId};

use super::config::*;

/// A policy's vote, with the collector's (deprecated but still default) inverted decisions:
/// `invert_match` yields `InvertSampled` / `InvertNotSampled`, which combine differently at the
/// top level (see `Policies::decide`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Sampled,
    NotSampled,
    InvertSampled,
    InvertNotSampled,
    Dropped,
}

impl Decision {
    fn samples(self) -> bool {
        matches!(self, Decision::Sampled | Decision::InvertSampled)
    }
}

/// The trace being decided.
pub struct Trace<'a> {
    pub id: &'a TraceId,
    pub spans: &'a [Span],
    /// Whole seconds since the policies' first decision: the window rate limits count in.
    pub second: u64,
}

pub enum Evaluator {
    AlwaysSample,
    Latency { lower_ms: u64, upper_ms: u64 },
    StatusCode { codes: [bool; 3] },
    Attribute(AttributeFilter),
    Probabilistic { salted_hash: u64, threshold: u64 },
    RateLimiting(RateLimiter),
    SpanCount { min: u64, max: u64 },
    TraceState { key: String, values: Vec<String> },
    And(Vec<Evaluator>),
    Drop(Vec<Evaluator>),
    Composite(Composite),
}

impl Evaluator {
    pub fn evaluate(&mut self, trace: &Trace) -> Decision {
        match self {
            Evaluator::AlwaysSample => Decision::Sampled,
            Evaluator::Latency { lower_ms, upper_ms } => {
                let Some(ms) = duration_ms(trace.spans) else {
                    return Decision::NotSampled;
                };
                let hit = if *upper_ms == 0 {
                    ms >= *lower_ms
                } else {
                    *lower_ms < ms && ms <= *upper_ms
                };
                sampled_if(hit)
            }
            Evaluator::StatusCode { codes } => {
                sampled_if(trace.spans.iter().any(|s| codes[status_index(s.status.code)]))
            }
            Evaluator::Attribute(filter) => filter.evaluate(trace.spans),
            Evaluator::Probabilistic { salted_hash, threshold } => {
                sampled_if(fnv1a(*salted_hash, trace.id) <= *threshold)
            }
            Evaluator::RateLimiting(limiter) => sampled_if(limiter.take(trace.second, trace.spans.len() as u64)),
            Evaluator::SpanCount { min, max } => {
                let n = trace.spans.len() as u64;
                sampled_if(n >= *min && (*max == 0 || n <= *max))
            }
            Evaluator::TraceState { key, values } => sampled_if(
                trace
                    .spans
                    .iter()
                    .any(|s| trace_state_value(&s.trace_state, key).is_some_and(|v| values.iter().any(|w| w == v))),
            ),
            // Stops at the first sub-policy that does not sample, as the collector does (which
            // matters for stateful sub-policies such as rate limits).
            Evaluator::And(subs) => {
                if subs.iter_mut().all(|sub| sub.evaluate(trace).samples()) {
                    Decision::Sampled
                } else {
                    Decision::NotSampled
                }
            }
            Evaluator::Drop(subs) => {
                if subs.iter_mut().all(|sub| sub.evaluate(trace).samples()) {
                    Decision::Dropped
                } else {
                    Decision::NotSampled
                }
            }
            Evaluator::Composite(composite) => composite.evaluate(trace),
        }
    }
}

fn sampled_if(hit: bool) -> Decision {
    if hit {
        Decision::Sampled
    } else {
        Decision::NotSampled
    }
}

fn status_index(code: StatusCode) -> usize {
    match code {
        StatusCode::Unset => 0,
        StatusCode::Ok => 1,
        StatusCode::Error => 2,
    }
}

/// Latest end − earliest start, in whole milliseconds.
fn duration_ms(spans: &[Span]) -> Option<u64> {
    let start = spans.iter().map(|s| s.start_unix_nano).min()?;
    let end = spans.iter().map(|s| s.end_unix_nano).max()?;
    Some(end.saturating_sub(start) / 1_000_000)
}

/// The value of `key` in a W3C `tracestate` (`k1=v1,k2=v2`); members that do not parse are
/// skipped.
fn trace_state_value<'a>(trace_state: &'a str, key: &str) -> Option<&'a str> {
    trace_state.split(',').find_map(|member| {
        let (k, v) = member.trim_matches([' ', '\t']).split_once('=')?;
        (k == key).then_some(v)
    })
}

// ---- probabilistic: the collector's hash and threshold, bit for bit ----

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The collector's salt when `hash_salt` is empty.
pub const DEFAULT_HASH_SALT: &str = "default-hash-seed";

/// FNV-1a (64 bit) continued from `state` over `bytes`.
pub fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        state ^= *b as u64;
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

pub fn salted_hash(salt: &str) -> u64 {
    let salt = if salt.is_empty() { DEFAULT_HASH_SALT } else { salt };
    fnv1a(FNV_OFFSET, salt.as_bytes())
}

/// `ratio × (2^64 − 1)` as the collector computes it: an exact product rounded to 64
/// significant bits (Go's `big.Float` default, nearest-even), then truncated to an integer. A
/// trace is sampled when its hash is `<=` this.
pub fn threshold(ratio: f64) -> u64 {
    if ratio.is_nan() || ratio <= 0.0 {
        return 0;
    }
    if ratio >= 1.0 {
        return u64::MAX;
    }
    let bits = ratio.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    let (mantissa, exp2) = if exponent == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1 << 52), exponent - 1075)
    };
    let product = u64::MAX as u128 * mantissa as u128;
    let significant = 128 - product.leading_zeros();
    let rounded = if significant > 64 {
        let shift = significant - 64;
        let kept = product >> shift;
        let rest = product & ((1u128 << shift) - 1);
        let half = 1u128 << (shift - 1);
        let round_up = rest > half || (rest == half && kept & 1 == 1);
        (kept + round_up as u128) << shift
    } else {
        product
    };
    // ratio < 1, so exp2 < 0: the value is `rounded >> -exp2`, truncated.
    let shift = (-exp2) as u32;
    if shift >= 128 {
        0
    } else {
        (rounded >> shift) as u64
    }
}

// ---- rate limiting ----

/// Spans kept in the current one-second window (the collector's `rate_limiting`: a trace is
/// kept while the window's total stays strictly below the limit).
pub struct RateLimiter {
    spans_per_second: u64,
    second: u64,
    spent: u64,
}

impl RateLimiter {
    fn new(spans_per_second: u64) -> Self {
        RateLimiter {
            spans_per_second,
            second: 0,
            spent: 0,
        }
    }

    fn take(&mut self, second: u64, spans: u64) -> bool {
        if second != self.second {
            self.second = second;
            self.spent = 0;
        }
        let after = self.spent.saturating_add(spans);
        if after < self.spans_per_second {
            self.spent = after;
            true
        } else {
            false
        }
    }
}

// ---- composite ----

pub struct Composite {
    /// In evaluation order (`policy_order` first, then the rest as declared).
    subs: Vec<CompositeSub>,
    max_total: u64,
    second: u64,
    spent_total: u64,
}

struct CompositeSub {
    evaluator: Evaluator,
    /// Spans per second this sub-policy may keep.
    budget: u64,
    spent: u64,
}

impl Composite {
    fn evaluate(&mut self, trace: &Trace) -> Decision {
        if trace.second != self.second {
            self.second = trace.second;
            self.spent_total = 0;
            for sub in &mut self.subs {
                sub.spent = 0;
            }
        }
        let spans = trace.spans.len() as u64;
        for sub in &mut self.subs {
            if !sub.evaluator.evaluate(trace).samples() {
                continue;
            }
            // The first sub-policy that wants the trace decides: within its budget (and the
            // total) it is kept, otherwise it is not — later sub-policies are not asked, as in
            // the collector.
            let sub_after = sub.spent + spans;
            let total_after = self.spent_total + spans;
            if sub_after <= sub.budget && total_after <= self.max_total {
                sub.spent = sub_after;
                self.spent_total = total_after;
                return Decision::Sampled;
            }
            return Decision::NotSampled;
        }
        Decision::NotSampled
    }
}

// ---- attribute filters (string, numeric, boolean) ----

pub struct AttributeFilter {
    key: String,
    matcher: Matcher,
    invert: bool,
}

enum Matcher {
    Exact(Vec<String>),
    /// Unanchored, as the collector's `regexp.MatchString`.
    Regex(RegexSet),
    Numeric {
        min: i64,
        max: i64,
    },
    Bool(bool),
}

impl AttributeFilter {
    /// Any resource or span attribute `key` that matches → sampled (with `invert_match`: any
    /// match → `InvertNotSampled`, none → `InvertSampled`, including when the key is absent).
    fn evaluate(&mut self, spans: &[Span]) -> Decision {
        let hit = self.any_match(spans);
        match (self.invert, hit) {
            (false, true) => Decision::Sampled,
            (false, false) => Decision::NotSampled,
            (true, true) => Decision::InvertNotSampled,
            (true, false) => Decision::InvertSampled,
        }
    }

    fn any_match(&mut self, spans: &[Span]) -> bool {
        // Spans of one export share their resource: look at each one once.
        let mut last_resource: *const Resource = std::ptr::null();
        for span in spans {
            let resource = Arc::as_ptr(&span.resource);
            if resource != last_resource {
                last_resource = resource;
                if let Some(v) = find_attr(&span.resource.attributes, &self.key) {
                    if self.matcher.matches(v) {
                        return true;
                    }
                }
            }
            if let Some(v) = find_attr(&span.attributes, &self.key) {
                if self.matcher.matches(v) {
                    return true;
                }
            }
        }
        false
    }
}

impl Matcher {
    fn matches(&mut self, value: &AnyValue) -> bool {
        match (self, value) {
            // Empty strings never match (the collector skips empty span values).
            (Matcher::Exact(values), AnyValue::String(s)) => !s.is_empty() && values.iter().any(|v| v == s),
            (Matcher::Regex(set), AnyValue::String(s)) => !s.is_empty() && set.is_match(s),
            (Matcher::Numeric { min, max }, AnyValue::Int(i)) => *min <= *i && *i <= *max,
            (Matcher::Numeric { min, max }, AnyValue::Double(d)) => *min as f64 <= *d && *d <= *max as f64,
            (Matcher::Bool(want), AnyValue::Bool(b)) => want == b,
            _ => false,
        }
    }
}

// ---- building: validation with errors that name the policy and the field ----

/// Where a policy sits, which decides the types it may have (as in the collector: `and` and
/// `drop` take only plain policies; `composite` also takes `and`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Top,
    AndOrDrop,
    Composite,
}

/// Builds one policy. `at` describes it for errors, e.g. `policy "errors" (#1)`.
pub fn build(cfg: &PolicyConfig, at: &str, level: Level) -> Result<Evaluator, String> {
    let fail = |msg: String| Err(format!("{at}: {msg}"));
    if cfg.name.trim().is_empty() {
        return fail("name is required".into());
    }
    let kind = &cfg.kind;
    match kind {
        PolicyType::Missing => return fail(format!("type is required; one of {}", PolicyType::SUPPORTED.join(", "))),
        PolicyType::Unknown(t) => {
            return fail(format!(
                "unknown type {t:?}{}; supported: {}",
                if COLLECTOR_ONLY.contains(&t.as_str()) {
                    " (an OpenTelemetry Collector policy skein does not implement)"
                } else {
                    ""
                },
                PolicyType::SUPPORTED.join(", ")
            ))
        }
        PolicyType::And | PolicyType::Composite | PolicyType::Drop if level == Level::AndOrDrop => {
            return fail(format!("type \"{kind}\" cannot be nested inside `and` or `drop`"))
        }
        PolicyType::Composite | PolicyType::Drop if level == Level::Composite => {
            return fail(format!("type \"{kind}\" cannot be nested inside `composite`"))
        }
        _ => {}
    }
    check_sub_tables(cfg).map_err(|msg| format!("{at}: {msg}"))?;
    let kind = kind.as_str();
    let missing = || format!("{at}: type \"{kind}\" needs a `{kind}` table");
    let field = |field: &str, msg: &str| format!("{at}: {kind}.{field} {msg}");

    Ok(match &cfg.kind {
        PolicyType::AlwaysSample => Evaluator::AlwaysSample,
        PolicyType::Latency => {
            let c = cfg.latency.as_ref().ok_or_else(missing)?;
            let Some(lower) = c.threshold_ms else {
                return Err(field("threshold_ms", "is required"));
            };
            if lower < 0 {
                return Err(field("threshold_ms", &format!("must not be negative, got {lower}")));
            }
            if c.upper_threshold_ms < 0 || (c.upper_threshold_ms != 0 && c.upper_threshold_ms < lower) {
                return Err(field(
                    "upper_threshold_ms",
                    &format!(
                        "must be 0 (no upper bound) or at least threshold_ms ({lower}), got {}",
                        c.upper_threshold_ms
                    ),
                ));
            }
            Evaluator::Latency {
                lower_ms: lower as u64,
                upper_ms: c.upper_threshold_ms as u64,
            }
        }
        PolicyType::StatusCode => {
            let c = cfg.status_code.as_ref().ok_or_else(missing)?;
            if c.status_codes.is_empty() {
                return Err(field("status_codes", "must list at least one of OK, ERROR, UNSET"));
            }
            let mut codes = [false; 3];
            for code in &c.status_codes {
                let i = match code.as_str() {
                    "UNSET" => 0,
                    "OK" => 1,
                    "ERROR" => 2,
                    other => {
                        return Err(field(
                            "status_codes",
                            &format!("has unknown code {other:?}; use OK, ERROR or UNSET"),
                        ))
                    }
                };
                codes[i] = true;
            }
            Evaluator::StatusCode { codes }
        }
        PolicyType::StringAttribute => {
            let c = cfg.string_attribute.as_ref().ok_or_else(missing)?;
            require_key(&c.key).map_err(|m| field("key", m))?;
            let values: Vec<String> = c.values.iter().filter(|v| !v.is_empty()).cloned().collect();
            if values.is_empty() {
                return Err(field("values", "must list at least one non-empty value"));
            }
            let matcher = if c.enabled_regex_matching {
                // Index into the configured list, so the error points at the right entry.
                if let Some((i, e)) = c
                    .values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| !v.is_empty())
                    .find_map(|(i, v)| regex::Regex::new(v).err().map(|e| (i, e)))
                {
                    return Err(field(&format!("values[{i}]"), &format!("is not a valid regex: {e}")));
                }
                // No result cache (the collector's `cache_max_size`): a match is ~40-60 ns, while
                // a cache costs a hash per lookup and an allocation per new value, which made
                // high-cardinality values (URLs with ids) ~7x slower when measured.
                Matcher::Regex(RegexSet::new(&values).map_err(|e| format!("{at}: {kind}.values: {e}"))?)
            } else {
                Matcher::Exact(values)
            };
            Evaluator::Attribute(AttributeFilter {
                key: c.key.clone(),
                matcher,
                invert: c.invert_match,
            })
        }
        PolicyType::NumericAttribute => {
            let c = cfg.numeric_attribute.as_ref().ok_or_else(missing)?;
            require_key(&c.key).map_err(|m| field("key", m))?;
            if c.min_value.is_none() && c.max_value.is_none() {
                return Err(field("min_value", "or max_value is required"));
            }
            let (min, max) = (c.min_value.unwrap_or(i64::MIN), c.max_value.unwrap_or(i64::MAX));
            if min > max {
                return Err(field("max_value", &format!("({max}) is below min_value ({min})")));
            }
            Evaluator::Attribute(AttributeFilter {
                key: c.key.clone(),
                matcher: Matcher::Numeric { min, max },
                invert: c.invert_match,
            })
        }
        PolicyType::BooleanAttribute => {
            let c = cfg.boolean_attribute.as_ref().ok_or_else(missing)?;
            require_key(&c.key).map_err(|m| field("key", m))?;
            let Some(value) = c.value else {
                return Err(field("value", "is required (true or false)"));
            };
            Evaluator::Attribute(AttributeFilter {
                key: c.key.clone(),
                matcher: Matcher::Bool(value),
                invert: c.invert_match,
            })
        }
        PolicyType::Probabilistic => {
            let c = cfg.probabilistic.as_ref().ok_or_else(missing)?;
            let Some(pct) = c.sampling_percentage else {
                return Err(field("sampling_percentage", "is required"));
            };
            if !(0.0..=100.0).contains(&pct) {
                return Err(field(
                    "sampling_percentage",
                    &format!("must be between 0 and 100, got {pct}"),
                ));
            }
            Evaluator::Probabilistic {
                salted_hash: salted_hash(&c.hash_salt),
                threshold: threshold(pct / 100.0),
            }
        }
        PolicyType::RateLimiting => {
            let c = cfg.rate_limiting.as_ref().ok_or_else(missing)?;
            match c.spans_per_second {
                None => return Err(field("spans_per_second", "is required")),
                Some(n) if n <= 0 => return Err(field("spans_per_second", &format!("must be positive, got {n}"))),
                Some(n) => Evaluator::RateLimiting(RateLimiter::new(n as u64)),
            }
        }
        PolicyType::SpanCount => {
            let c = cfg.span_count.as_ref().ok_or_else(missing)?;
            if c.min_spans < 0 {
                return Err(field(
                    "min_spans",
                    &format!("must not be negative, got {}", c.min_spans),
                ));
            }
            if c.max_spans < 0 || (c.max_spans != 0 && c.max_spans < c.min_spans) {
                return Err(field(
                    "max_spans",
                    &format!(
                        "must be 0 (no upper bound) or at least min_spans ({}), got {}",
                        c.min_spans, c.max_spans
                    ),
                ));
            }
            if c.min_spans == 0 && c.max_spans == 0 {
                return Err(field(
                    "min_spans",
                    "or max_spans must be set (both 0 would keep every trace)",
                ));
            }
            Evaluator::SpanCount {
                min: c.min_spans as u64,
                max: c.max_spans as u64,
            }
        }
        PolicyType::TraceState => {
            let c = cfg.trace_state.as_ref().ok_or_else(missing)?;
            require_key(&c.key).map_err(|m| field("key", m))?;
            // A tracestate member (`key=value`) is at most 256 characters (as the collector).
            let values: Vec<String> = c
                .values
                .iter()
                .filter(|v| !v.is_empty() && c.key.len() + v.len() < 256)
                .cloned()
                .collect();
            if values.is_empty() {
                return Err(field(
                    "values",
                    "must list at least one non-empty value (key=value under 256 characters)",
                ));
            }
            Evaluator::TraceState {
                key: c.key.clone(),
                values,
            }
        }
        PolicyType::And => {
            let subs = &cfg.and.as_ref().ok_or_else(missing)?.and_sub_policy;
            Evaluator::And(build_subs(subs, at, "and_sub_policy", Level::AndOrDrop)?)
        }
        PolicyType::Drop => {
            let subs = &cfg.drop.as_ref().ok_or_else(missing)?.drop_sub_policy;
            Evaluator::Drop(build_subs(subs, at, "drop_sub_policy", Level::AndOrDrop)?)
        }
        PolicyType::Composite => {
            Evaluator::Composite(build_composite(cfg.composite.as_ref().ok_or_else(missing)?, at)?)
        }
        PolicyType::Unknown(_) | PolicyType::Missing => unreachable!("rejected above"),
    })
}

/// Collector policy types skein knows of but does not implement, for a clearer error.
const COLLECTOR_ONLY: &[&str] = &["ottl_condition", "bytes_limiting", "trace_flags", "not", "skip"];

fn require_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        Err("is required")
    } else {
        Ok(())
    }
}

/// A sub-table that does not belong to the type is almost always a typo'd `type`: say so.
fn check_sub_tables(cfg: &PolicyConfig) -> Result<(), String> {
    let tables = [
        ("latency", cfg.latency.is_some()),
        ("status_code", cfg.status_code.is_some()),
        ("string_attribute", cfg.string_attribute.is_some()),
        ("numeric_attribute", cfg.numeric_attribute.is_some()),
        ("boolean_attribute", cfg.boolean_attribute.is_some()),
        ("probabilistic", cfg.probabilistic.is_some()),
        ("rate_limiting", cfg.rate_limiting.is_some()),
        ("span_count", cfg.span_count.is_some()),
        ("trace_state", cfg.trace_state.is_some()),
        ("and", cfg.and.is_some()),
        ("composite", cfg.composite.is_some()),
        ("drop", cfg.drop.is_some()),
    ];
    match tables
        .iter()
        .find(|(table, present)| *present && *table != cfg.kind.as_str())
    {
        Some((table, _)) => Err(format!(
            "has a `{table}` table but its type is \"{}\" (type and table must match)",
            cfg.kind
        )),
        None => Ok(()),
    }
}

fn build_subs(subs: &[PolicyConfig], at: &str, list: &str, level: Level) -> Result<Vec<Evaluator>, String> {
    if subs.is_empty() {
        return Err(format!("{at}: {list} must list at least one policy"));
    }
    subs.iter()
        .enumerate()
        .map(|(i, sub)| build(sub, &format!("{at} > {list} {:?} (#{})", sub.name, i + 1), level))
        .collect()
}

fn build_composite(c: &CompositeConfig, at: &str) -> Result<Composite, String> {
    let field = |field: &str, msg: String| format!("{at}: composite.{field} {msg}");
    let max_total = match c.max_total_spans_per_second {
        None => return Err(field("max_total_spans_per_second", "is required".into())),
        Some(n) if n <= 0 => {
            return Err(field(
                "max_total_spans_per_second",
                format!("must be positive, got {n}"),
            ))
        }
        Some(n) => n as u64,
    };
    let subs = &c.composite_sub_policy;
    let evaluators = build_subs(subs, at, "composite_sub_policy", Level::Composite)?;
    let names: Vec<&str> = subs.iter().map(|s| s.name.as_str()).collect();
    if let Some((i, name)) = names.iter().enumerate().find(|(i, n)| names[..*i].contains(n)) {
        return Err(field(
            &format!("composite_sub_policy[{i}].name"),
            format!("{name:?} is used twice"),
        ));
    }
    let position = |name: &str| names.iter().position(|n| *n == name);

    // Budgets: a listed percent of the total (0 = an equal share, total / sub-policies, as the
    // collector); sub-policies without an allocation share what is left — the collector gives
    // them nothing, which silently disables e.g. a trailing `always_sample`.
    let mut budgets: Vec<Option<u64>> = vec![None; subs.len()];
    let mut percent_sum = 0;
    for (i, alloc) in c.rate_allocation.iter().enumerate() {
        let Some(p) = position(&alloc.policy) else {
            return Err(field(
                &format!("rate_allocation[{i}].policy"),
                format!(
                    "{:?} is not one of the composite_sub_policy names {names:?}",
                    alloc.policy
                ),
            ));
        };
        if budgets[p].is_some() {
            return Err(field(
                &format!("rate_allocation[{i}].policy"),
                format!("{:?} is allocated twice", alloc.policy),
            ));
        }
        if !(0..=100).contains(&alloc.percent) {
            return Err(field(
                &format!("rate_allocation[{i}].percent"),
                format!("must be 0..=100, got {}", alloc.percent),
            ));
        }
        let budget = if alloc.percent > 0 {
            percent_sum += alloc.percent;
            (alloc.percent as f64 / 100.0 * max_total as f64) as u64
        } else {
            max_total / subs.len() as u64
        };
        budgets[p] = Some(budget);
    }
    if percent_sum > 100 {
        return Err(field(
            "rate_allocation",
            format!("percents add up to {percent_sum}, more than 100"),
        ));
    }
    let allocated: u64 = budgets.iter().flatten().sum();
    let remainder = max_total.saturating_sub(allocated);

    // Order: `policy_order` first (the collector ignores it and uses declaration order; skein
    // honours it), then the sub-policies it does not name, as declared.
    let mut order: Vec<usize> = Vec::with_capacity(subs.len());
    for (i, name) in c.policy_order.iter().enumerate() {
        let Some(p) = position(name) else {
            return Err(field(
                &format!("policy_order[{i}]"),
                format!("{name:?} is not one of the composite_sub_policy names {names:?}"),
            ));
        };
        if order.contains(&p) {
            return Err(field(
                &format!("policy_order[{i}]"),
                format!("{name:?} is listed twice"),
            ));
        }
        order.push(p);
    }
    order.extend((0..subs.len()).filter(|i| !c.policy_order.iter().any(|n| n == names[*i])));

    let mut slots: Vec<Option<Evaluator>> = evaluators.into_iter().map(Some).collect();
    let subs = order
        .into_iter()
        .map(|i| CompositeSub {
            evaluator: slots[i].take().expect("each sub-policy is ordered once"),
            budget: budgets[i].unwrap_or(remainder),
            spent: 0,
        })
        .collect();
    Ok(Composite {
        subs,
        max_total,
        second: 0,
        spent_total: 0,
    })
}
