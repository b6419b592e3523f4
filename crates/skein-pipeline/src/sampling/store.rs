//! The strategies currently in force, and the task that reloads them when the file changes.
//! A file that fails to load at startup is an error; one that fails on reload is logged and
//! counted, and the previous strategies stay in force.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use skein_model::metrics::{self, Counter, Gauge};

use super::adaptive::{Adaptive, AdaptiveConfig, RootSpanCounter};
use super::strategies::{
    OperationSampling, PerOperationSampling, ProbabilisticSampling, Strategies, StrategyResponse,
    DEFAULT_OPERATION_SAMPLING_RATE,
};

pub struct StrategyStore {
    path: Option<PathBuf>,
    current: RwLock<Arc<Strategies>>,
    /// What the last look at the file saw (a content hash, or the read error), so an unchanged
    /// file is not re-parsed and an unchanged bad file is not logged again every interval.
    last_seen: Mutex<Option<Result<u64, String>>>,
    reload_success: Counter,
    reload_failure: Counter,
    services: Gauge,
    /// Set when adaptive sampling is on; its probabilities override the file's per operation.
    adaptive: std::sync::OnceLock<Arc<Adaptive>>,
}

fn hash_of(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

impl StrategyStore {
    /// Loads `path` (or the built-in default when `None`); a missing or invalid file is an error
    /// naming the file and what is wrong with it.
    pub fn open(path: Option<&Path>) -> Result<Arc<StrategyStore>, String> {
        let store = StrategyStore {
            path: path.map(Path::to_path_buf),
            current: RwLock::new(Arc::new(Strategies::default())),
            last_seen: Mutex::new(None),
            reload_success: metrics::counter(
                "skein_sampling_strategies_reloads_total",
                "Loads of the sampling strategies file, by outcome",
                &[("outcome", "success")],
            ),
            reload_failure: metrics::counter(
                "skein_sampling_strategies_reloads_total",
                "Loads of the sampling strategies file, by outcome",
                &[("outcome", "failure")],
            ),
            services: metrics::gauge(
                "skein_sampling_strategies_services",
                "Services with their own entry in the sampling strategies in force",
                &[],
            ),
            adaptive: std::sync::OnceLock::new(),
        };
        if let Some(p) = path {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("reading sampling strategies file {}: {e}", p.display()))?;
            let parsed =
                Strategies::parse(&text).map_err(|e| format!("sampling strategies file {}: {e}", p.display()))?;
            *store.last_seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(Ok(hash_of(&text)));
            store.install(parsed);
        }
        Ok(Arc::new(store))
    }

    /// The strategies in force.
    pub fn current(&self) -> Arc<Strategies> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The strategy `service` is answered with: the file's, with adaptive probabilities (when
    /// on and the service has had traffic) as its per-operation strategies.
    pub fn strategy_for(&self, service: &str) -> StrategyResponse {
        let mut resp = self.current().for_service(service).clone();
        let Some(computed) = self.adaptive.get().and_then(|a| a.for_service(service)) else {
            return resp;
        };
        let default_sampling_probability = resp
            .probabilistic_sampling
            .as_ref()
            .map_or(DEFAULT_OPERATION_SAMPLING_RATE, |p| p.sampling_rate);
        let per_op = resp.operation_sampling.get_or_insert_with(|| PerOperationSampling {
            default_sampling_probability,
            default_lower_bound_traces_per_second: 0.0,
            per_operation_strategies: Vec::new(),
            default_upper_bound_traces_per_second: 0.0,
        });
        let mut computed: Vec<(String, f64)> = computed.into_iter().collect();
        computed.sort_by(|a, b| a.0.cmp(&b.0));
        for (operation, rate) in computed {
            let probabilistic_sampling = ProbabilisticSampling { sampling_rate: rate };
            match per_op
                .per_operation_strategies
                .iter_mut()
                .find(|o| o.operation == operation)
            {
                Some(o) => o.probabilistic_sampling = probabilistic_sampling,
                None => per_op.per_operation_strategies.push(OperationSampling {
                    operation,
                    probabilistic_sampling,
                }),
            }
        }
        resp
    }

    /// The probability SDKs use for `operation` under the file's strategies alone.
    fn file_probability(&self, service: &str, operation: &str) -> f64 {
        let current = self.current();
        let s = current.for_service(service);
        if let Some(per_op) = &s.operation_sampling {
            return per_op
                .per_operation_strategies
                .iter()
                .find(|o| o.operation == operation)
                .map_or(per_op.default_sampling_probability, |o| {
                    o.probabilistic_sampling.sampling_rate
                });
        }
        // Rate-limited services sample up to their limit: every trace seen is one sent.
        s.probabilistic_sampling.as_ref().map_or(1.0, |p| p.sampling_rate)
    }

    /// Turns adaptive sampling on; returns the counter the pipeline feeds with root spans.
    pub fn enable_adaptive(&self, cfg: AdaptiveConfig) -> Arc<RootSpanCounter> {
        self.adaptive
            .get_or_init(|| Arc::new(Adaptive::new(cfg)))
            .counter
            .clone()
    }

    /// One adaptive recompute over the traffic of the last `elapsed` (the task below calls it).
    pub fn recompute_adaptive(&self, elapsed: Duration) {
        if let Some(a) = self.adaptive.get() {
            a.recompute(elapsed, |service, op| self.file_probability(service, op));
        }
    }

    /// Recomputes adaptive probabilities every `recompute_interval` until `shutdown` resolves.
    pub fn spawn_adaptive(
        self: &Arc<Self>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let interval = self.adaptive.get()?.config().recompute_interval;
        let store = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut last = tokio::time::Instant::now();
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    _ = &mut shutdown => return,
                    now = tick.tick() => {
                        store.recompute_adaptive(now - last);
                        last = now;
                    }
                }
            }
        }))
    }

    fn install(&self, strategies: Strategies) {
        self.services.set(strategies.services.len() as i64);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(strategies);
        self.reload_success.inc();
    }

    /// Re-reads the file; installs it when its content changed and is valid. Returns whether
    /// new strategies were installed. Never fails: problems are logged and counted.
    pub fn reload_if_changed(&self) -> bool {
        let Some(path) = &self.path else { return false };
        let seen = std::fs::read_to_string(path).map_err(|e| e.to_string());
        let stamp = seen.as_ref().map(|t| hash_of(t)).map_err(Clone::clone);
        {
            let mut last = self.last_seen.lock().unwrap_or_else(|e| e.into_inner());
            if last.as_ref() == Some(&stamp) {
                return false;
            }
            *last = Some(stamp);
        }
        let result = seen.and_then(|text| Strategies::parse(&text));
        match result {
            Ok(strategies) => {
                tracing::info!(file = %path.display(), services = strategies.services.len(), "sampling strategies reloaded");
                self.install(strategies);
                true
            }
            Err(e) => {
                self.reload_failure.inc();
                tracing::error!(
                    file = %path.display(),
                    error = %e,
                    "sampling strategies file not reloaded; the previous strategies stay in force"
                );
                false
            }
        }
    }

    /// Polls the file every `interval` until `shutdown` resolves (nothing to do without a file).
    pub fn spawn_reloader(
        self: &Arc<Self>,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            if store.path.is_none() || interval.is_zero() {
                return;
            }
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate; the file was just loaded
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tick.tick() => {
                        let s = store.clone();
                        // File reads are blocking; keep them off the async workers.
                        let _ = tokio::task::spawn_blocking(move || s.reload_if_changed()).await;
                    }
                }
            }
        })
    }
}
