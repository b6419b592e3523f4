//! Tail-based sampling: spans wait (durably, in the store's pending area) until `decision_wait`
//! has passed since their trace's last span, then the policies decide the whole trace. The
//! buffer is bounded by `num_traces` and `max_buffer_bytes`: past either, the oldest traces are
//! decided early (and counted) instead of the buffer growing; past twice the byte bound, ingest
//! is refused with retry advice. Decisions are cached so late spans follow their trace.
//!
//! One thread decides: it takes due traces from the store, runs the policies (which keep state,
//! such as rate limits) and hands the decisions back to the store's WAL writer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use skein_model::metrics::{self, Counter};
use skein_model::units::{serde_bytes, serde_duration};
use skein_store::pending::{PendingBounds, PendingStats};
use skein_store::Store;

use super::policies::{Policies, PolicyConfig};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TailSamplingConfig {
    /// Time after a trace's last span before it is decided (the collector's `decision_wait`).
    #[serde(with = "serde_duration")]
    pub decision_wait: Duration,
    /// Traces buffered at most; beyond it the oldest are decided early.
    pub num_traces: usize,
    /// Estimated memory of buffered spans at most; beyond it the oldest traces are decided
    /// early, and beyond twice it ingest is refused with retry advice.
    #[serde(with = "serde_bytes")]
    pub max_buffer_bytes: u64,
    pub decision_cache: DecisionCacheConfig,
    /// Tail sampling is on when at least one policy is configured.
    pub policies: Vec<PolicyConfig>,
}

impl Default for TailSamplingConfig {
    fn default() -> Self {
        TailSamplingConfig {
            decision_wait: Duration::from_secs(30),
            num_traces: 50_000,
            max_buffer_bytes: 128 << 20,
            decision_cache: DecisionCacheConfig::default(),
            policies: Vec::new(),
        }
    }
}

impl TailSamplingConfig {
    pub fn enabled(&self) -> bool {
        !self.policies.is_empty()
    }

    fn bounds(&self) -> PendingBounds {
        PendingBounds {
            max_traces: self.num_traces,
            max_bytes: self.max_buffer_bytes as usize,
        }
    }

    /// Checks the configuration and builds its policies (`None` while tail sampling is off);
    /// the error names the key or the policy and field.
    pub fn policies(&self) -> Result<Option<Policies>, String> {
        if !self.enabled() {
            return Ok(None);
        }
        if self.num_traces == 0 {
            return Err("sampling.tail.num_traces must be at least 1".into());
        }
        if self.max_buffer_bytes == 0 {
            return Err("sampling.tail.max_buffer_bytes must be more than 0".into());
        }
        if self.decision_wait.is_zero() {
            return Err("sampling.tail.decision_wait must be more than 0s".into());
        }
        Policies::new(&self.policies).map(Some)
    }
}

/// How many decided traces are remembered so that their late spans follow the decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionCacheConfig {
    pub sampled_cache_size: usize,
    pub non_sampled_cache_size: usize,
}

impl Default for DecisionCacheConfig {
    fn default() -> Self {
        DecisionCacheConfig {
            sampled_cache_size: 100_000,
            non_sampled_cache_size: 100_000,
        }
    }
}

/// Traces decided per round; the store's writer applies each round as one WAL record.
const ROUND: usize = 10_000;

/// The running tail sampler. Stops its thread when stopped or dropped.
pub struct TailSampler {
    bounds: PendingBounds,
    wake: SyncSender<()>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    refused: Counter,
}

impl TailSampler {
    /// Turns the store's holding area on and starts deciding with `policies` (built from `cfg`
    /// by [`TailSamplingConfig::policies`]).
    pub fn start(store: Store, cfg: &TailSamplingConfig, mut policies: Policies) -> Result<TailSampler, String> {
        store.hold_for_decisions(Some((
            cfg.decision_cache.sampled_cache_size,
            cfg.decision_cache.non_sampled_cache_size,
        )));
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let bounds = cfg.bounds();
        let wait = cfg.decision_wait;
        let tick = (wait / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let early = metrics::counter(
            "skein_tail_sampling_early_decisions_total",
            "Traces decided before decision_wait because the buffer was over num_traces or max_buffer_bytes",
            &[],
        );
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("skein-tail-sampler".into())
            .spawn(move || loop {
                match woken.recv_timeout(tick) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                let now = Instant::now();
                loop {
                    let due = store.take_due(wait, bounds, ROUND);
                    let n = due.len();
                    if n == 0 {
                        break;
                    }
                    let decisions: Vec<_> = due
                        .iter()
                        .map(|d| {
                            if d.early {
                                early.inc();
                            }
                            // A policy bug must not wedge the buffer (and with it ingest):
                            // such a trace is kept, and the bug logged.
                            let keep = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                policies.decide(&d.trace_id, &d.spans, now)
                            }))
                            .unwrap_or_else(|_| {
                                tracing::error!("a tail-sampling policy panicked; the trace is kept");
                                true
                            });
                            (d.trace_id, keep)
                        })
                        .collect();
                    // Let go of the spans so the store can move them without copying.
                    drop(due);
                    match store.decide(decisions).map(|done| done.blocking_recv()) {
                        Ok(Ok(Ok(()))) => {}
                        Ok(Ok(Err(e))) => {
                            // The WAL refused the record; the traces wait and are retried later.
                            tracing::error!(error = %e, "recording tail-sampling decisions failed");
                            break;
                        }
                        // The store shut down; undecided traces stay in the WAL for the next start.
                        Ok(Err(_)) | Err(_) => return,
                    }
                    if n < ROUND {
                        break;
                    }
                }
            })
            .map_err(|e| format!("starting the tail sampler: {e}"))?;
        Ok(TailSampler {
            bounds,
            wake,
            stop,
            thread: Mutex::new(Some(thread)),
            refused: metrics::counter(
                "skein_tail_sampling_refused_requests_total",
                "Requests refused because the tail-sampling buffer was over twice max_buffer_bytes",
                &[],
            ),
        })
    }

    /// Refuses new spans while the buffer is far over its bound (the sampler is behind).
    pub fn admit(&self, stats: PendingStats) -> Result<(), &'static str> {
        if stats.bytes > self.bounds.max_bytes.saturating_mul(2) {
            self.refused.inc();
            return Err("the tail-sampling buffer is full");
        }
        Ok(())
    }

    /// Wakes the sampler at once when the buffer is over a bound, instead of at its next tick.
    pub fn after_append(&self, stats: PendingStats) {
        if stats.traces > self.bounds.max_traces || stats.bytes > self.bounds.max_bytes {
            let _ = self.wake.try_send(());
        }
    }

    /// Stops deciding (graceful shutdown). Undecided traces stay in the WAL and are decided
    /// after the next start.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.try_send(());
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for TailSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.try_send(());
    }
}
