//! The per-service rate limiter: each service has a probability (a rejection threshold on trace
//! randomness, like the probabilistic sampler's), re-tuned about once a second so the spans it
//! keeps track the service's spans-per-second limit.
//!
//! Deciding by threshold instead of counting tokens keeps whole traces: every span of a trace
//! has the same randomness, so within a second a service keeps all of a trace's spans or none,
//! and across services the sets are nested (a trace kept by the strictest service on it is kept
//! by all of them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use skein_model::metrics::{self, Gauge};

use super::tracestate::{probability_to_threshold, threshold_to_probability};

/// How often each service's probability is re-tuned from its traffic.
pub const ADJUST_INTERVAL: Duration = Duration::from_secs(1);

/// A service that kept more than this many intervals' worth of its limit is re-tuned at once,
/// without waiting for its interval to end (a burst after a quiet spell).
const BURST_INTERVALS: f64 = 2.0;

/// Shortest window a rate is computed over (an early re-tune can come right after the last one).
const MIN_WINDOW: Duration = Duration::from_millis(50);

/// A probability may at most double per re-tune, so a few lucky intervals do not swing it back up.
const MAX_GROWTH: f64 = 2.0;

/// The smallest probability the limiter hands out (about one trace in a billion).
const MIN_PROBABILITY: f64 = 1e-9;

/// An untracked service not seen for this long may be forgotten to make room for a new one.
const IDLE_EVICTION: Duration = Duration::from_secs(60);

/// The gauge label for services beyond `max_services`, which share one limiter.
pub const OTHER_SERVICES: &str = "(other)";

/// One service's limiter. Everything is atomic: deciding reads one threshold; counting adds to
/// two counters once per run of spans; re-tuning is done by the one caller that wins a CAS.
pub struct ServiceLimiter {
    /// Spans per second.
    limit: f64,
    /// Whether the service has its own limit in the configuration (never evicted).
    configured: bool,
    /// The rejection threshold in force, and the probability it came from (`f64` bits).
    threshold: AtomicU64,
    probability: AtomicU64,
    window_start: AtomicU64,
    /// Spans that reached the limiter, and those it (and every other stage) kept, this window.
    offered: AtomicU64,
    kept: AtomicU64,
    last_seen: AtomicU64,
    gauge: Option<Gauge>,
}

impl ServiceLimiter {
    fn new(limit: f64, configured: bool, now: Duration, gauge: Option<Gauge>) -> ServiceLimiter {
        let limiter = ServiceLimiter {
            limit,
            configured,
            threshold: AtomicU64::new(0),
            probability: AtomicU64::new(1f64.to_bits()),
            window_start: AtomicU64::new(nanos(now)),
            offered: AtomicU64::new(0),
            kept: AtomicU64::new(0),
            last_seen: AtomicU64::new(nanos(now)),
            gauge,
        };
        limiter.set_probability(1.0);
        limiter
    }

    pub fn threshold(&self) -> u64 {
        self.threshold.load(Ordering::Relaxed)
    }

    pub fn probability(&self) -> f64 {
        f64::from_bits(self.probability.load(Ordering::Relaxed))
    }

    fn set_probability(&self, p: f64) {
        let threshold = probability_to_threshold(p);
        self.threshold.store(threshold, Ordering::Relaxed);
        // What the threshold really keeps (after rounding), so the next re-tune starts from truth.
        let p = threshold_to_probability(threshold);
        self.probability.store(p.to_bits(), Ordering::Relaxed);
        if let Some(g) = &self.gauge {
            g.set((p * 1e6).round() as i64);
        }
    }

    /// Counts a run of spans (`offered` reached the limiter, `kept` survived every stage) and
    /// re-tunes when the window is over or the service is bursting.
    pub fn record(&self, offered: u64, kept: u64, now: Duration) {
        let now = nanos(now);
        self.last_seen.store(now, Ordering::Relaxed);
        self.offered.fetch_add(offered, Ordering::Relaxed);
        let kept_so_far = self.kept.fetch_add(kept, Ordering::Relaxed) + kept;
        let start = self.window_start.load(Ordering::Relaxed);
        let elapsed = now.saturating_sub(start);
        let bursting = kept_so_far as f64 > BURST_INTERVALS * self.limit * ADJUST_INTERVAL.as_secs_f64();
        if elapsed < nanos(ADJUST_INTERVAL) && !bursting {
            return;
        }
        // One caller re-tunes; the others carry on with the threshold in force.
        if self
            .window_start
            .compare_exchange(start, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let offered = self.offered.swap(0, Ordering::Relaxed);
        let kept = self.kept.swap(0, Ordering::Relaxed);
        let secs = Duration::from_nanos(elapsed).max(MIN_WINDOW).as_secs_f64();
        self.set_probability(next_probability(
            self.probability(),
            self.limit,
            offered as f64 / secs,
            kept as f64 / secs,
        ));
    }
}

/// The probability for the next window, from the last window's rates at probability `current`.
///
/// Kept spans are proportional to the probability when spans arrive with full randomness; when
/// an upstream sampler already thinned them (their randomness all lies above its threshold),
/// lowering our probability changes nothing until it passes theirs. Scaling the current
/// probability by `limit / kept` handles both: it lands on the limit in one step in the first
/// case and walks down to it in the second.
pub fn next_probability(current: f64, limit: f64, offered_per_sec: f64, kept_per_sec: f64) -> f64 {
    if offered_per_sec <= limit {
        // Everything offered fits: keep it all.
        return 1.0;
    }
    let wanted = if kept_per_sec > 0.0 {
        current * limit / kept_per_sec
    } else {
        current * MAX_GROWTH
    };
    wanted.min(current * MAX_GROWTH).clamp(MIN_PROBABILITY, 1.0)
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// All services' limiters, bounded by `max_services`.
pub struct RateLimiter {
    default_limit: f64,
    overrides: HashMap<String, f64>,
    max_services: usize,
    services: RwLock<HashMap<String, Arc<ServiceLimiter>>>,
    /// Shared by services that arrive when `max_services` are tracked.
    other: Arc<ServiceLimiter>,
    gauges_left: AtomicUsize,
    last_eviction: AtomicU64,
    tracked: Gauge,
}

fn probability_gauge(service: &str) -> Gauge {
    metrics::gauge(
        "skein_head_sampling_service_probability_ppm",
        "The head rate limiter's current probability per service, in millionths (1000000 = keep all)",
        &[("service", service)],
    )
}

impl RateLimiter {
    /// `overrides` maps services to their own limit (0 = no limit for that service).
    pub fn new(default_limit: f64, overrides: HashMap<String, f64>, max_services: usize, now: Duration) -> Self {
        let mut services = HashMap::new();
        for (name, limit) in &overrides {
            if *limit > 0.0 {
                let gauge = Some(probability_gauge(name));
                services.insert(name.clone(), Arc::new(ServiceLimiter::new(*limit, true, now, gauge)));
            }
        }
        let tracked = metrics::gauge(
            "skein_head_sampling_tracked_services",
            "Services the head rate limiter keeps state for",
            &[],
        );
        tracked.set(services.len() as i64);
        RateLimiter {
            default_limit,
            max_services,
            gauges_left: AtomicUsize::new(max_services.saturating_sub(services.len())),
            services: RwLock::new(services),
            overrides,
            other: Arc::new(ServiceLimiter::new(
                default_limit.max(f64::MIN_POSITIVE),
                true,
                now,
                (default_limit > 0.0).then(|| probability_gauge(OTHER_SERVICES)),
            )),
            last_eviction: AtomicU64::new(0),
            tracked,
        }
    }

    /// The limiter for `service`, or `None` when the service has no limit.
    pub fn for_service(&self, service: &str, now: Duration) -> Option<Arc<ServiceLimiter>> {
        let limit = self.overrides.get(service).copied().unwrap_or(self.default_limit);
        if limit <= 0.0 {
            return None;
        }
        // At most one eviction scan a second, however many new names keep arriving.
        let last = self.last_eviction.load(Ordering::Relaxed);
        let eviction_due = last == 0 || nanos(now).saturating_sub(last) >= nanos(ADJUST_INTERVAL);
        {
            let services = self.services.read().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = services.get(service) {
                return Some(s.clone());
            }
            // Full, and no scan due: share the overflow limiter without taking the write lock.
            if services.len() >= self.max_services && !eviction_due {
                return Some(self.other.clone());
            }
        }
        let mut services = self.services.write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = services.get(service) {
            return Some(s.clone());
        }
        if services.len() >= self.max_services && eviction_due {
            self.last_eviction.store(nanos(now).max(1), Ordering::Relaxed);
            self.evict_idle(&mut services, now);
        }
        if services.len() >= self.max_services {
            return Some(self.other.clone());
        }
        // Gauges cannot be unregistered: only the first `max_services` names get one, so an
        // endless stream of new service names cannot grow /metrics.
        let gauge = self
            .gauges_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .ok()
            .map(|_| probability_gauge(service));
        let limiter = Arc::new(ServiceLimiter::new(limit, false, now, gauge));
        services.insert(service.to_string(), limiter.clone());
        self.tracked.set(services.len() as i64);
        Some(limiter)
    }

    fn evict_idle(&self, services: &mut HashMap<String, Arc<ServiceLimiter>>, now: Duration) {
        let cutoff = nanos(now).saturating_sub(nanos(IDLE_EVICTION));
        services.retain(|_, s| {
            let keep = s.configured || s.last_seen.load(Ordering::Relaxed) > cutoff;
            if !keep {
                // Idle means unthrottled; leave the gauge saying so rather than a stale value.
                if let Some(g) = &s.gauge {
                    g.set(1_000_000);
                }
            }
            keep
        });
        self.tracked.set(services.len() as i64);
    }

    /// Services tracked now (not counting the shared overflow limiter).
    pub fn tracked_services(&self) -> usize {
        self.services.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}
