//! Adaptive sampling: per service and operation, a probability recomputed every interval from
//! the root spans the pipeline received, so each operation's sampled traces approach
//! `target_traces_per_second`.
//!
//! The pipeline only sees traces the SDKs already sampled, at the probability skein last told
//! them; so the operation's real rate is estimated as `observed / probability`, and the new
//! probability is `target / estimated`, clamped to [`min_sampling_rate`, 1] and allowed to at
//! most double per interval (so a quiet interval or a stale SDK does not swing it to 1 at once).

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skein_model::Span;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveConfig {
    /// Sampled root traces per second wanted per service and operation; 0 turns adaptive off
    /// (strategies then come only from the file).
    pub target_traces_per_second: f64,
    /// How often probabilities are recomputed from the traffic of the last interval.
    #[serde(with = "skein_model::units::serde_duration")]
    pub recompute_interval: Duration,
    /// The lowest probability adaptive sampling hands out (keeps a trickle of every operation).
    pub min_sampling_rate: f64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            target_traces_per_second: 0.0,
            recompute_interval: Duration::from_secs(60),
            min_sampling_rate: 0.001,
        }
    }
}

impl AdaptiveConfig {
    pub fn enabled(&self) -> bool {
        self.target_traces_per_second > 0.0
    }

    /// A clear error naming the bad key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.target_traces_per_second.is_finite() || self.target_traces_per_second < 0.0 {
            return Err(format!(
                "sampling.adaptive.target_traces_per_second = {} must be 0 (off) or positive",
                self.target_traces_per_second
            ));
        }
        if !(self.min_sampling_rate > 0.0 && self.min_sampling_rate <= 1.0) {
            return Err(format!(
                "sampling.adaptive.min_sampling_rate = {} must be in (0, 1]",
                self.min_sampling_rate
            ));
        }
        if self.enabled() && self.recompute_interval.is_zero() {
            return Err("sampling.adaptive.recompute_interval must be more than 0s".into());
        }
        Ok(())
    }
}

/// (service, operation) pairs tracked at most, so span names with ids in them cannot grow the
/// maps without bound; pairs beyond it keep the file's strategy.
pub const MAX_TRACKED_OPERATIONS: usize = 10_000;

/// Root spans received per (service, operation) since the last recompute. The pipeline calls
/// [`RootSpanCounter::observe`] once per accepted batch.
#[derive(Default)]
pub struct RootSpanCounter {
    counts: Mutex<HashMap<(String, String), u64>>,
}

impl RootSpanCounter {
    pub fn observe(&self, spans: &[Span]) {
        let mut roots = spans.iter().filter(|s| s.is_root()).peekable();
        if roots.peek().is_none() {
            return;
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for s in roots {
            let key = (s.service_name().to_string(), s.name.clone());
            if let Some(n) = counts.get_mut(&key) {
                *n += 1;
            } else if counts.len() < MAX_TRACKED_OPERATIONS {
                counts.insert(key, 1);
            }
        }
    }

    fn take(&self) -> HashMap<(String, String), u64> {
        std::mem::take(&mut *self.counts.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The adaptive probabilities, by service then operation.
pub struct Adaptive {
    cfg: AdaptiveConfig,
    pub counter: std::sync::Arc<RootSpanCounter>,
    probabilities: RwLock<HashMap<String, HashMap<String, f64>>>,
}

impl Adaptive {
    pub fn new(cfg: AdaptiveConfig) -> Adaptive {
        Adaptive {
            cfg,
            counter: Default::default(),
            probabilities: Default::default(),
        }
    }

    pub fn config(&self) -> &AdaptiveConfig {
        &self.cfg
    }

    /// The probabilities computed for `service`'s operations, if it has had traffic.
    pub fn for_service(&self, service: &str) -> Option<HashMap<String, f64>> {
        self.probabilities
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .cloned()
    }

    /// Recomputes from the root spans counted over the last `elapsed`. `initial(service, op)` is
    /// the probability SDKs used before adaptive had an opinion (the file's strategy).
    pub fn recompute(&self, elapsed: Duration, initial: impl Fn(&str, &str) -> f64) {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let observed = self.counter.take();
        let (min, target) = (self.cfg.min_sampling_rate, self.cfg.target_traces_per_second);
        let mut all = self.probabilities.write().unwrap_or_else(|e| e.into_inner());
        // Operations with no sampled traffic this interval: let more through next time.
        for (service, ops) in all.iter_mut() {
            for (op, p) in ops.iter_mut() {
                if !observed.contains_key(&(service.clone(), op.clone())) {
                    *p = (*p * 2.0).min(1.0);
                }
            }
        }
        let mut tracked: usize = all.values().map(HashMap::len).sum();
        for ((service, op), count) in observed {
            let known = all.get(&service).is_some_and(|ops| ops.contains_key(&op));
            if !known {
                if tracked >= MAX_TRACKED_OPERATIONS {
                    continue;
                }
                tracked += 1;
            }
            let ops = all.entry(service.clone()).or_default();
            let current = *ops.entry(op.clone()).or_insert_with(|| initial(&service, &op));
            let estimated_total = count as f64 / secs / current.max(min);
            let wanted = (target / estimated_total).clamp(min, 1.0);
            ops.insert(op, wanted.min(current.max(min) * 2.0));
        }
    }
}
