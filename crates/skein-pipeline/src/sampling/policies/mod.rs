//! Tail-sampling policies with the OpenTelemetry Collector `tail_sampling` processor's
//! semantics and config keys: each policy votes on a whole trace (the spans buffered for it),
//! and the votes combine as in the collector's `processor.go`:
//!
//! 1. `drop` policies are evaluated first; the first `Dropped` vote ends evaluation and the
//!    trace is dropped, whatever any other policy would say.
//! 2. Otherwise every policy votes (so rate limits count every trace they would keep), and the
//!    trace is **not** kept if any `invert_match` policy matched (`InvertNotSampled`);
//! 3. else it is kept if any policy sampled it;
//! 4. else it is kept if an `invert_match` policy did not match (`InvertSampled`) and no policy
//!    said `NotSampled`;
//! 5. else it is not kept.
//!
//! Inside `and`, `drop` and `composite`, inverted votes are plain sampled / not sampled.
//! The per-trace buffer that feeds `decide` lives elsewhere (see docs/sampling.md).

mod config;
mod evaluate;

#[cfg(test)]
mod tests;

use std::time::Instant;

use skein_model::metrics::{self, Counter};
use skein_model::{Span, TraceId};

pub use config::*;
use evaluate::{build, Decision, Evaluator, Level, Trace};
pub use evaluate::{fnv1a, salted_hash, threshold, DEFAULT_HASH_SALT};

/// The combined outcome for one trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceDecision {
    Sampled,
    NotSampled,
    /// A `drop` policy vetoed the trace.
    Dropped,
}

impl TraceDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            TraceDecision::Sampled => "sampled",
            TraceDecision::NotSampled => "not_sampled",
            TraceDecision::Dropped => "dropped",
        }
    }
}

struct Policy {
    evaluator: Evaluator,
    evaluations: Counter,
    sampled: Counter,
    not_sampled: Counter,
    dropped: Counter,
}

/// The configured policies, built once and asked for every trace. `decide` takes `&mut self`
/// because rate limits and composites count what they keep: one sampler task owns it.
pub struct Policies {
    /// `drop` policies first, then the rest, each group in configuration order.
    policies: Vec<Policy>,
    /// The instant of the first decision; rate limits count in whole seconds since.
    epoch: Option<Instant>,
    traces: [Counter; 3],
}

impl Policies {
    /// Validates and builds; the error names the policy (by name and position) and the field
    /// that is wrong.
    pub fn new(configs: &[PolicyConfig]) -> Result<Policies, String> {
        if configs.is_empty() {
            return Err("tail sampling needs at least one policy".into());
        }
        let mut drops = Vec::new();
        let mut others = Vec::new();
        for (i, cfg) in configs.iter().enumerate() {
            let at = format!("tail sampling policy {:?} (#{})", cfg.name, i + 1);
            let evaluator = build(cfg, &at, Level::Top)?;
            if let Some(first) = configs[..i].iter().position(|c| c.name == cfg.name) {
                return Err(format!("{at}: name is already used by policy #{}", first + 1));
            }
            let policy = Policy {
                evaluator,
                evaluations: metrics::counter(
                    "skein_tail_sampling_policy_evaluations_total",
                    "Traces a tail-sampling policy was evaluated on",
                    &[("policy", &cfg.name)],
                ),
                sampled: decision_counter(&cfg.name, "sampled"),
                not_sampled: decision_counter(&cfg.name, "not_sampled"),
                dropped: decision_counter(&cfg.name, "dropped"),
            };
            if cfg.kind == PolicyType::Drop {
                drops.push(policy);
            } else {
                others.push(policy);
            }
        }
        drops.extend(others);
        let traces = [
            TraceDecision::Sampled,
            TraceDecision::NotSampled,
            TraceDecision::Dropped,
        ]
        .map(|d| {
            metrics::counter(
                "skein_tail_sampling_traces_total",
                "Traces decided by tail sampling, by final decision",
                &[("decision", d.as_str())],
            )
        });
        Ok(Policies {
            policies: drops,
            epoch: None,
            traces,
        })
    }

    /// Decides one trace from the spans buffered so far. `now` drives rate limiting
    /// (injectable for tests). Updates per-policy metrics. true = keep (sample) the trace.
    pub fn decide(&mut self, trace_id: &TraceId, spans: &[Span], now: Instant) -> bool {
        self.decide_detailed(trace_id, spans, now) == TraceDecision::Sampled
    }

    /// `decide`, telling a drop veto apart from a plain "not sampled".
    pub fn decide_detailed(&mut self, trace_id: &TraceId, spans: &[Span], now: Instant) -> TraceDecision {
        let epoch = *self.epoch.get_or_insert(now);
        let trace = Trace {
            id: trace_id,
            spans,
            second: now.saturating_duration_since(epoch).as_secs(),
        };
        let (mut sampled, mut not_sampled, mut invert_sampled, mut invert_not_sampled) = (false, false, false, false);
        let mut dropped = false;
        for policy in &mut self.policies {
            policy.evaluations.inc();
            match policy.evaluator.evaluate(&trace) {
                Decision::Sampled => {
                    policy.sampled.inc();
                    sampled = true;
                }
                Decision::InvertSampled => {
                    policy.sampled.inc();
                    invert_sampled = true;
                }
                Decision::NotSampled => {
                    policy.not_sampled.inc();
                    not_sampled = true;
                }
                Decision::InvertNotSampled => {
                    policy.not_sampled.inc();
                    invert_not_sampled = true;
                }
                Decision::Dropped => {
                    policy.dropped.inc();
                    dropped = true;
                    break;
                }
            }
        }
        let decision = if dropped {
            TraceDecision::Dropped
        } else if invert_not_sampled {
            TraceDecision::NotSampled
        } else if sampled || (invert_sampled && !not_sampled) {
            TraceDecision::Sampled
        } else {
            TraceDecision::NotSampled
        };
        self.traces[decision as usize].inc();
        decision
    }
}

fn decision_counter(policy: &str, decision: &str) -> Counter {
    metrics::counter(
        "skein_tail_sampling_policy_decisions_total",
        "Votes of a tail-sampling policy, by decision",
        &[("policy", policy), ("decision", decision)],
    )
}
