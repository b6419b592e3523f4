//! Head (ingest) sampling: decides, span by span as a request arrives and before the WAL,
//! which spans skein keeps. Three stages, each optional:
//!
//! 1. **Sampled flag** (`drop_unsampled`): spans whose W3C sampled flag is known to be 0 go.
//! 2. **Probability** (`probability`): OpenTelemetry consistent probability sampling — keep a
//!    span iff its trace's 56-bit randomness `R` is at least the rejection threshold `T` of the
//!    probability. `R` is the `ot=rv:` value of its tracestate when there is one, else the trace
//!    id's last 7 bytes. A pure function of the span: every node and every run agrees, and so do
//!    OpenTelemetry SDKs and collectors sampling at the same probability.
//! 3. **Rate limit** (`rate_limit`): per service, a threshold on the same `R`, re-tuned about
//!    once a second so the kept spans track the service's spans-per-second limit.
//!
//! Thresholds on one randomness nest: a span kept at probability 0.1 is kept at 0.5, and a trace
//! kept by the strictest stage or service it meets is kept whole. See docs/sampling.md.

mod rate_limit;
pub mod tracestate;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use skein_model::metrics::{self, Counter};
use skein_model::{Resource, Span};

use rate_limit::RateLimiter;
pub use rate_limit::{next_probability, ServiceLimiter, ADJUST_INTERVAL, OTHER_SERVICES};
use tracestate::{probability_to_threshold, RANDOM_FLAG};

/// `[sampling.head]`. The default keeps everything.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HeadSamplingConfig {
    /// Share of traces kept, in [0, 1], decided consistently on the trace's randomness. 1 keeps
    /// every trace; 0 keeps none.
    pub probability: f64,
    /// Drop spans whose W3C sampled flag is known to be off (flags bit 0 clear while some other
    /// bit of the low 9 is set; flags of exactly 0 mean "unknown" and the span is kept).
    pub drop_unsampled: bool,
    /// Write the threshold skein sampled at into each kept span's tracestate (`ot=th:`) when it is
    /// stricter than the one already there, so adjusted counts read from stored spans stay right.
    pub record_threshold: bool,
    pub rate_limit: RateLimitConfig,
}

impl Default for HeadSamplingConfig {
    fn default() -> Self {
        HeadSamplingConfig {
            probability: 1.0,
            drop_unsampled: false,
            record_threshold: true,
            rate_limit: RateLimitConfig::default(),
        }
    }
}

/// `[sampling.head.rate_limit]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Spans per second kept per service; 0 = no limit.
    pub spans_per_second: f64,
    /// Per-service limits replacing `spans_per_second` (0 = no limit for that service).
    pub services: BTreeMap<String, f64>,
    /// Services with their own limiter at most; later ones share one limiter (and gauge) until an
    /// idle service is forgotten.
    pub max_services: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            spans_per_second: 0.0,
            services: BTreeMap::new(),
            max_services: 1000,
        }
    }
}

impl HeadSamplingConfig {
    /// A clear error naming the bad key and value.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.probability) {
            return Err(format!(
                "sampling.head.probability = {} must be in [0, 1] (1 keeps every trace)",
                self.probability
            ));
        }
        let rate = |key: String, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "{key} = {v} must be a number of spans per second, 0 (no limit) or more"
                ))
            }
        };
        let rl = &self.rate_limit;
        rate("sampling.head.rate_limit.spans_per_second".into(), rl.spans_per_second)?;
        for (service, v) in &rl.services {
            rate(format!("sampling.head.rate_limit.services.{service:?}"), *v)?;
        }
        if rl.max_services == 0 {
            return Err("sampling.head.rate_limit.max_services = 0 must be at least 1".into());
        }
        Ok(())
    }
}

/// Monotonic time since an arbitrary origin. Injectable so tests can step time without sleeping.
pub type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// What [`HeadSampler::apply`] did to a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Spans sampled out (removed).
    pub removed: usize,
    /// Kept spans whose tracestate got a new `ot=th:`. When nonzero the spans differ from the
    /// request as received.
    pub tracestate_updated: usize,
}

struct HeadMetrics {
    dropped_probability: Counter,
    dropped_parent: Counter,
    dropped_rate_limit: Counter,
    kept: Counter,
    presumed_random: Counter,
}

impl HeadMetrics {
    fn new() -> HeadMetrics {
        let dropped = |reason| {
            metrics::counter(
                "skein_head_sampling_spans_dropped_total",
                "Spans head sampling left out (accepted, not stored), by reason",
                &[("reason", reason)],
            )
        };
        HeadMetrics {
            dropped_probability: dropped("probability"),
            dropped_parent: dropped("parent_not_sampled"),
            dropped_rate_limit: dropped("rate_limit"),
            kept: metrics::counter("skein_head_sampling_spans_kept_total", "Spans head sampling kept", &[]),
            presumed_random: metrics::counter(
                "skein_head_sampling_presumed_randomness_total",
                "Spans decided on trace id bits without the W3C random flag or an ot=rv value",
                &[],
            ),
        }
    }
}

pub struct HeadSampler {
    drop_unsampled: bool,
    record_threshold: bool,
    /// Rejection threshold of `probability`.
    threshold: u64,
    rate_limiter: Option<RateLimiter>,
    clock: Clock,
    metrics: HeadMetrics,
}

/// The bits that show a span's flags were set by someone: the W3C trace flags and OTLP's
/// HAS_IS_REMOTE. OTLP says a reader must treat flags of 0 as unknown (old SDKs never set them).
const KNOWN_FLAGS: u32 = 0x1ff;
const SAMPLED_FLAG: u32 = 0x01;

/// The per-service run being counted for the rate limiter: spans of a batch mostly share one
/// resource, so the limiter is looked up (and its counters touched) once per run, not per span.
struct Run {
    resource: *const Resource,
    limiter: Option<Arc<ServiceLimiter>>,
    threshold: u64,
    offered: u64,
    kept: u64,
}

impl HeadSampler {
    pub fn new(cfg: &HeadSamplingConfig) -> Result<HeadSampler, String> {
        let start = Instant::now();
        Self::with_clock(cfg, Arc::new(move || start.elapsed()))
    }

    /// Like [`HeadSampler::new`], reading time from `clock`.
    pub fn with_clock(cfg: &HeadSamplingConfig, clock: Clock) -> Result<HeadSampler, String> {
        cfg.validate()?;
        let rl = &cfg.rate_limit;
        let overrides: HashMap<String, f64> = rl.services.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let limited = rl.spans_per_second > 0.0 || overrides.values().any(|l| *l > 0.0);
        let rate_limiter = limited.then(|| RateLimiter::new(rl.spans_per_second, overrides, rl.max_services, clock()));
        Ok(HeadSampler {
            drop_unsampled: cfg.drop_unsampled,
            record_threshold: cfg.record_threshold,
            threshold: probability_to_threshold(cfg.probability),
            rate_limiter,
            clock,
            metrics: HeadMetrics::new(),
        })
    }

    /// Whether any stage can drop a span (off: the pipeline can skip the sampler).
    pub fn enabled(&self) -> bool {
        self.drop_unsampled || self.threshold > 0 || self.rate_limiter.is_some()
    }

    /// The rate limiter's current probability for `service` (1 when it is not limited).
    pub fn service_probability(&self, service: &str) -> f64 {
        match &self.rate_limiter {
            Some(rl) => rl.for_service(service, (self.clock)()).map_or(1.0, |s| s.probability()),
            None => 1.0,
        }
    }

    /// Services the rate limiter keeps state for.
    pub fn tracked_services(&self) -> usize {
        self.rate_limiter.as_ref().map_or(0, RateLimiter::tracked_services)
    }

    /// Removes the spans that are sampled out, in place; returns how many were removed.
    pub fn retain(&self, spans: &mut Vec<Span>) -> usize {
        self.apply(spans).removed
    }

    /// [`HeadSampler::retain`], also saying whether kept spans' tracestates were updated.
    pub fn apply(&self, spans: &mut Vec<Span>) -> Applied {
        if !self.enabled() || spans.is_empty() {
            return Applied::default();
        }
        let now = (self.clock)();
        let before = spans.len();
        let (mut parent, mut probability, mut rate_limit, mut presumed, mut updated) = (0, 0, 0, 0, 0);
        let mut run: Option<Run> = None;
        spans.retain_mut(|span| {
            if self.drop_unsampled && span.flags & KNOWN_FLAGS != 0 && span.flags & SAMPLED_FLAG == 0 {
                parent += 1;
                return false;
            }
            if self.threshold == 0 && self.rate_limiter.is_none() {
                return true;
            }
            let ot = if span.trace_state.is_empty() {
                tracestate::OtSampling::default()
            } else {
                tracestate::parse(&span.trace_state)
            };
            let randomness = match ot.randomness {
                Some(rv) => rv,
                None => {
                    if span.flags & RANDOM_FLAG == 0 {
                        presumed += 1;
                    }
                    tracestate::trace_id_randomness(&span.trace_id)
                }
            };
            let service_threshold = match &self.rate_limiter {
                Some(rl) => {
                    let run = self.run_for(rl, &mut run, span, now);
                    run.offered += 1;
                    run.threshold
                }
                None => 0,
            };
            if randomness < self.threshold {
                probability += 1;
                return false;
            }
            if randomness < service_threshold {
                rate_limit += 1;
                return false;
            }
            if let Some(run) = &mut run {
                run.kept += 1;
            }
            if self.record_threshold && self.record(span, ot, randomness, self.threshold.max(service_threshold)) {
                updated += 1;
            }
            true
        });
        if let Some(r) = run.take() {
            flush(r, now);
        }
        let removed = before - spans.len();
        let m = &self.metrics;
        m.dropped_parent.add(parent);
        m.dropped_probability.add(probability);
        m.dropped_rate_limit.add(rate_limit);
        m.kept.add(spans.len() as u64);
        m.presumed_random.add(presumed);
        Applied {
            removed,
            tracestate_updated: updated,
        }
    }

    /// The run `span` belongs to, starting a new one (and flushing the last) when its resource
    /// differs from the previous span's.
    fn run_for<'a>(&self, rl: &RateLimiter, run: &'a mut Option<Run>, span: &Span, now: Duration) -> &'a mut Run {
        let resource = Arc::as_ptr(&span.resource);
        if run.as_ref().is_some_and(|r| r.resource != resource) {
            flush(run.take().expect("checked"), now);
        }
        run.get_or_insert_with(|| {
            let limiter = rl.for_service(span.service_name(), now);
            Run {
                resource,
                threshold: limiter.as_ref().map_or(0, |l| l.threshold()),
                limiter,
                offered: 0,
                kept: 0,
            }
        })
    }

    /// Sets `ot=th:` to the threshold this span was kept at, when that is stricter than the
    /// recorded one. An upstream threshold the span's own randomness fails is inconsistent (the
    /// spec says to erase it) and is replaced. Returns whether the tracestate changed.
    fn record(&self, span: &mut Span, ot: tracestate::OtSampling, randomness: u64, ours: u64) -> bool {
        if ours == 0 {
            return false;
        }
        let new = match ot.threshold {
            Some(upstream) if randomness >= upstream => upstream.max(ours),
            _ => ours,
        };
        if ot.threshold == Some(new) {
            return false;
        }
        match tracestate::with_threshold(&span.trace_state, Some(new)) {
            Some(ts) => {
                span.trace_state = ts;
                true
            }
            None => false,
        }
    }
}

fn flush(run: Run, now: Duration) {
    if let Some(limiter) = run.limiter {
        limiter.record(run.offered, run.kept, now);
    }
}
