//! Admission between ingest and the store: per-span limits (reported when hit), a memory
//! budget for requests in flight, and backpressure instead of unbounded queues.

use std::sync::Arc;

pub mod sampling;

use serde::{Deserialize, Serialize};
use skein_model::metrics::{self, Counter};
use skein_model::units::serde_bytes;
use skein_model::{AnyValue, Decoded, DecodedSizes, KeyValue, Rejected, Resource, Scope, Span, SpanError};
use skein_store::{Store, StoreError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Attributes kept per span, event, link, resource and scope; the rest are dropped and
    /// counted (a resource's `service.name` is always kept).
    pub max_attributes_per_span: usize,
    /// Strings a client controls are truncated to this many bytes: string or bytes attribute
    /// values (resource and scope ones too), span, event and scope names, status messages and
    /// trace states. Attribute keys are not: see `max_attribute_key_length`.
    pub max_attribute_value_length: usize,
    /// Attributes whose key is longer than this many bytes are dropped and counted (a cut key
    /// would be another key, and could collide with one). Keys are listed in block metas, which
    /// stay in memory, and name dedicated columns: unbounded, one client's 200 KB keys made a
    /// 64-span block's meta 800 KB. An attribute named `service.name` is always kept (in a
    /// resource it names the spans' service).
    pub max_attribute_key_length: usize,
    pub max_events_per_span: usize,
    pub max_links_per_span: usize,
    /// Spans of one trace held in the head; further spans of that trace are rejected.
    pub max_spans_per_trace: usize,
    /// Decoded requests in flight (between decode and the WAL's acknowledgement), reserved
    /// at four times a request's encoded size. Request bodies still arriving get a budget of
    /// the same size of their own.
    #[serde(with = "serde_bytes")]
    pub max_inflight_bytes: u64,
    /// How long a client may send nothing while the server waits for it: the next piece of a
    /// request body (HTTP and gRPC ingest), and on HTTP/1 the request's headers, which
    /// includes an idle keep-alive connection waiting for its next request. Past it the
    /// request or connection is dropped, so a client that stalls cannot hold a socket or a
    /// share of the receive budget for good. `0s`: no limit.
    #[serde(with = "skein_model::units::serde_duration")]
    pub read_timeout: std::time::Duration,
    /// Client connections served at once, on all ports together (a quarter, at most 256, kept
    /// for the query ports); more wait in the ports' backlog until one closes. Each takes a
    /// file descriptor, and this keeps some for the store. `0`: from the open-files limit, less
    /// a reserve for the store.
    pub max_connections: usize,
}

impl Limits {
    /// `read_timeout`, or `None` when it is `0s` (no limit).
    pub fn read_timeout(&self) -> Option<std::time::Duration> {
        Some(self.read_timeout).filter(|d| !d.is_zero())
    }

    /// Whether a request with these sizes is within every per-span limit (nothing to truncate
    /// or drop).
    pub fn admit(&self, sizes: DecodedSizes) -> bool {
        sizes.longest_string <= self.max_attribute_value_length
            && sizes.longest_key <= self.max_attribute_key_length
            && sizes.most_attributes <= self.max_attributes_per_span
            && sizes.most_events <= self.max_events_per_span
            && sizes.most_links <= self.max_links_per_span
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_attributes_per_span: 128,
            max_attribute_value_length: 16 * 1024,
            // Semantic-convention keys are under 64 bytes; Tempo cuts keys at 2 KiB, Google
            // Cloud Trace refuses them past 128 bytes.
            max_attribute_key_length: 1024,
            max_events_per_span: 128,
            max_links_per_span: 128,
            max_spans_per_trace: 100_000,
            // 32 MiB admits ~13 loader requests of 600 KB at once, more than one full-rate
            // sender keeps in flight; 64 MiB held ~80 MiB more under 3x overload for no
            // more throughput (docs/benchmarks.md, "Transparent huge pages off").
            max_inflight_bytes: 32 << 20,
            // The OpenTelemetry Collector's HTTP receivers wait as long for headers and idle
            // connections (`read_header_timeout`, `idle_timeout`).
            read_timeout: std::time::Duration::from_secs(60),
            max_connections: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Retry later (HTTP 429 / gRPC RESOURCE_EXHAUSTED).
    #[error("{0}")]
    Overloaded(String),
    /// Retry later, elsewhere (HTTP 503 / gRPC UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

/// What happened to a request's spans.
#[derive(Debug, Default)]
pub struct Outcome {
    pub accepted: usize,
    pub rejected: Vec<Rejected>,
}

impl Outcome {
    pub fn message(&self) -> Option<String> {
        skein_model::rejection_message(&self.rejected)
    }
}

/// Per-protocol self-metrics.
#[derive(Clone)]
pub struct ProtocolMetrics {
    protocol: &'static str,
    pub received: Counter,
    pub accepted: Counter,
    pub backpressure: Counter,
    pub truncated: Counter,
}

impl ProtocolMetrics {
    pub fn new(protocol: &'static str) -> Self {
        let l = [("protocol", protocol)];
        ProtocolMetrics {
            protocol,
            received: metrics::counter("skein_spans_received_total", "Spans received, by protocol", &l),
            accepted: metrics::counter("skein_spans_accepted_total", "Spans durably accepted, by protocol", &l),
            backpressure: metrics::counter(
                "skein_backpressure_events_total",
                "Requests refused with retry advice because skein was overloaded",
                &l,
            ),
            truncated: metrics::counter(
                "skein_limit_truncations_total",
                "Attributes, events, links or values dropped or truncated by limits",
                &l,
            ),
        }
    }

    pub fn rejected(&self, reason: &str, n: u64) {
        metrics::counter(
            "skein_spans_rejected_total",
            "Spans rejected, by protocol and reason",
            &[("protocol", self.protocol), ("reason", reason)],
        )
        .add(n);
    }

    pub fn request(&self, outcome: &str) {
        metrics::counter(
            "skein_requests_total",
            "Export requests, by protocol and outcome",
            &[("protocol", self.protocol), ("outcome", outcome)],
        )
        .inc();
    }
}

#[derive(Clone)]
pub struct Pipeline {
    limits: Arc<Limits>,
    store: Store,
    inflight: Arc<Semaphore>,
    inflight_units: u64,
    /// Bytes of request bodies still arriving (see `Receiving`).
    receiving: Arc<Semaphore>,
    /// Counts accepted root spans for adaptive remote sampling, when it is on.
    root_spans: Option<Arc<sampling::RootSpanCounter>>,
    /// Drops spans of traces sampled out at ingest, before the WAL.
    head_sampler: Option<Arc<sampling::head::HeadSampler>>,
    /// When set, spans wait in the store for a tail-sampling decision on their trace.
    tail_sampler: Option<Arc<sampling::tail::TailSampler>>,
}

/// Memory reserved for one request in flight: four times its encoded size when it arrives,
/// raised by `Pipeline::submit` to what its decoded spans take. Released when dropped.
pub struct Reservation {
    budget: Arc<Semaphore>,
    held: OwnedSemaphorePermit,
    /// The whole budget, in units: a request may take all of it (when nothing else holds
    /// any), never more.
    whole: u64,
}

impl Reservation {
    /// Raises the reservation to `bytes` of decoded spans, or refuses ("retry later") when
    /// the budget has not that much free. Long arrays of small values or many empty
    /// attributes decode to many times their encoded size: reserved by size alone, a full
    /// budget of such requests held several times `limits.max_inflight_bytes`.
    fn cover(&mut self, bytes: usize) -> Result<(), SubmitError> {
        let want = (bytes as u64).div_ceil(UNIT).min(self.whole) as usize;
        let have = self.held.num_permits();
        if want <= have {
            return Ok(());
        }
        let more = u32::try_from(want - have).unwrap_or(u32::MAX);
        let permit = self.budget.clone().try_acquire_many_owned(more).map_err(|_| {
            SubmitError::Overloaded(format!(
                "the request's spans take {bytes} bytes decoded, more than the ingest memory budget has free; retry later"
            ))
        })?;
        self.held.merge(permit);
        Ok(())
    }
}

/// The bytes of one request body received so far, reserved from the pipeline's receive budget
/// and released when dropped (once the body is complete and decoding takes over, or when it
/// is abandoned).
pub struct Receiving {
    budget: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
    bytes: u64,
}

impl Receiving {
    /// Counts `n` more bytes; refuses ("retry later") when the budget is spent.
    pub fn add(&mut self, n: usize) -> Result<(), SubmitError> {
        self.bytes += n as u64;
        let want = self.bytes.div_ceil(UNIT) as usize;
        let have = self.held.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
        if want <= have {
            return Ok(());
        }
        let more = u32::try_from(want - have).unwrap_or(u32::MAX);
        let permit = self
            .budget
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| SubmitError::Overloaded("too many request bodies arriving at once; retry later".into()))?;
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        Ok(())
    }
}

const UNIT: u64 = 1024;

impl Pipeline {
    pub fn new(limits: Limits, store: Store) -> Self {
        let inflight_units = (limits.max_inflight_bytes / UNIT).clamp(1, u32::MAX as u64 / 2);
        Pipeline {
            inflight: Arc::new(Semaphore::new(inflight_units as usize)),
            inflight_units,
            receiving: Arc::new(Semaphore::new(inflight_units as usize)),
            limits: Arc::new(limits),
            store,
            root_spans: None,
            head_sampler: None,
            tail_sampler: None,
        }
    }

    /// Samples at ingest (consistent probability, parent-based, per-service rate limits).
    pub fn with_head_sampler(mut self, sampler: Arc<sampling::head::HeadSampler>) -> Self {
        self.head_sampler = Some(sampler).filter(|s| s.enabled());
        self
    }

    /// Holds spans for tail-sampling decisions (the sampler must already be started on this
    /// pipeline's store).
    pub fn with_tail_sampler(mut self, sampler: Arc<sampling::tail::TailSampler>) -> Self {
        self.tail_sampler = Some(sampler);
        self
    }

    /// Feeds every accepted batch's root spans to `counter` (adaptive remote sampling).
    pub fn with_root_span_counter(mut self, counter: Arc<sampling::RootSpanCounter>) -> Self {
        self.root_spans = Some(counter);
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A budget for one request body while it arrives: a body whose bytes are buffered until it
    /// is complete holds memory the in-flight budget does not see yet, so 40 unfinished 16 MiB
    /// uploads on one HTTP/2 connection took the server from 72 to 676 MB.
    pub fn receiving(&self) -> Receiving {
        Receiving {
            budget: self.receiving.clone(),
            held: None,
            bytes: 0,
        }
    }

    /// Reserves memory for a request of `bytes` encoded bytes (decoded spans take a few times
    /// more). Refuses at once when the budget is spent: the caller answers "retry later".
    pub fn reserve(&self, bytes: usize) -> Result<Reservation, SubmitError> {
        let units = ((bytes as u64 * 4) / UNIT + 1).min(self.inflight_units) as u32;
        match self.inflight.clone().try_acquire_many_owned(units) {
            Ok(held) => Ok(Reservation {
                budget: self.inflight.clone(),
                held,
                whole: self.inflight_units,
            }),
            Err(_) => Err(SubmitError::Overloaded(
                "too many requests in flight; retry later".into(),
            )),
        }
    }

    /// Applies limits, writes the good spans to the WAL and waits until they are durable.
    /// `encoded` is the request as OTLP protobuf when the caller has it; it is used as the WAL
    /// record only if every span is stored unchanged. `reservation` (from `reserve`) is raised
    /// to the decoded spans' memory first, or the request is refused as overload.
    pub async fn submit(
        &self,
        reservation: &mut Reservation,
        mut decoded: Decoded,
        encoded: Option<bytes::Bytes>,
        m: &ProtocolMetrics,
    ) -> Result<Outcome, SubmitError> {
        let total = decoded.batch.spans.len() + decoded.rejected.len();
        m.received.add(total as u64);
        let mut outcome = Outcome {
            accepted: 0,
            rejected: std::mem::take(&mut decoded.rejected),
        };
        let mut spans = std::mem::take(&mut decoded.batch.spans);
        let mut truncated = 0u64;
        // A second pass over every attribute, skipped when the decoder saw nothing near a limit.
        if !decoded.sizes.is_some_and(|sizes| self.limits.admit(sizes)) {
            let mut shared = SharedCaps::default();
            for s in &mut spans {
                truncated += self.apply_limits(s);
                truncated += shared.apply(s, &self.limits);
            }
        }
        m.truncated.add(truncated);
        {
            // A span id sent twice in one request: reads show one copy of a span (the first), so
            // a second copy stored would be found by searches that the trace then contradicts.
            // (Hash maps keyed by client ids keep std's seeded hasher: no crafted collisions.)
            let mut seen: std::collections::HashSet<(skein_model::TraceId, skein_model::SpanId)> =
                std::collections::HashSet::with_capacity(spans.len());
            let mut counts: std::collections::HashMap<skein_model::TraceId, usize> = Default::default();
            let limit = self.limits.max_spans_per_trace;
            // `retain` moves no span when none is rejected; copying every span into a new vector
            // was 0.9 % of the server's CPU under full ingest (docs/benchmarks.md, session 32).
            let mut index = 0;
            spans.retain(|s| {
                let i = index;
                index += 1;
                // A span at 1970 would also widen its block's time range to every search window.
                let error = if s.start_unix_nano == 0 {
                    Some(SpanError::ZeroStartTime)
                } else if !seen.insert((s.trace_id, s.span_id)) {
                    Some(SpanError::DuplicateSpanId)
                } else if limit > 0 {
                    let n = counts
                        .entry(s.trace_id)
                        .or_insert_with(|| self.store.head_spans_in_trace(&s.trace_id));
                    *n += 1;
                    (*n > limit).then_some(SpanError::TooManySpansInTrace { limit })
                } else {
                    None
                };
                match error {
                    Some(error) => {
                        outcome.rejected.push(Rejected { index: i, error });
                        false
                    }
                    None => true,
                }
            });
        }
        for r in &outcome.rejected {
            m.rejected(r.error.reason(), 1);
        }
        if let Some(counter) = &self.root_spans {
            // What SDKs send, before skein's own sampling: adaptive remote sampling steers them.
            counter.observe(&spans);
        }
        let valid = spans.len();
        let sampled = match &self.head_sampler {
            Some(sampler) => sampler.apply(&mut spans),
            None => Default::default(),
        };
        // The client's bytes can be the WAL record only if the spans are exactly what it sent.
        let unchanged =
            truncated == 0 && outcome.rejected.is_empty() && sampled.removed == 0 && sampled.tracestate_updated == 0;
        let n = spans.len();
        let encoded = encoded.filter(|_| unchanged);
        // Measured once: the head counts the same bytes.
        let heap_bytes = skein_model::spans_heap_size(&spans);
        if let Err(e) = reservation.cover(heap_bytes) {
            m.backpressure.inc();
            m.request("throttled");
            return Err(e);
        }
        let stored = match &self.tail_sampler {
            None => self.store.append_measured(spans, encoded, heap_bytes).await,
            Some(tail) => match tail.admit(self.store.pending_stats()) {
                Err(why) => Err(StoreError::Overloaded(why)),
                Ok(()) => {
                    let r = self.store.append_pending_measured(spans, encoded, heap_bytes).await;
                    tail.after_append(self.store.pending_stats());
                    r
                }
            },
        };
        match stored {
            Ok(()) => {
                // Sampled-out spans are accepted (the client must not retry them), not stored.
                outcome.accepted = n;
                m.accepted.add(n as u64);
                m.request(match (outcome.rejected.is_empty(), valid) {
                    (true, _) => "ok",
                    // Nothing of it could be stored: not a partial success.
                    (false, 0) => "rejected",
                    (false, _) => "partial",
                });
                Ok(outcome)
            }
            Err(StoreError::Overloaded(why)) => {
                m.backpressure.inc();
                m.request("throttled");
                Err(SubmitError::Overloaded(format!(
                    "skein is overloaded ({why}); retry later"
                )))
            }
            Err(StoreError::WalUnwritable(why)) => {
                m.request("unavailable");
                Err(SubmitError::Unavailable(format!(
                    "skein cannot store spans right now ({why}); nothing was stored, retry later"
                )))
            }
            Err(StoreError::ShuttingDown) => {
                m.request("unavailable");
                Err(SubmitError::Unavailable(
                    "skein is shutting down; retry against another instance".into(),
                ))
            }
            Err(e) => {
                m.request("error");
                Err(SubmitError::Internal(format!("storing spans failed: {e}")))
            }
        }
    }

    /// Enforces per-span limits in place; returns how many things were dropped or truncated.
    /// The span's resource and scope are shared with other spans: `SharedCaps` does those.
    fn apply_limits(&self, s: &mut Span) -> u64 {
        let l = &self.limits;
        let max = l.max_attribute_value_length;
        let mut n = truncate_string(&mut s.name, max)
            + truncate_string(&mut s.status.message, max)
            + truncate_string(&mut s.trace_state, max);
        n += cap_attrs(&mut s.attributes, &mut s.dropped_attributes_count, l);
        if s.events.len() > l.max_events_per_span {
            let extra = s.events.len() - l.max_events_per_span;
            s.events.truncate(l.max_events_per_span);
            s.dropped_events_count = s.dropped_events_count.saturating_add(extra as u32);
            n += extra as u64;
        }
        for e in &mut s.events {
            n += truncate_string(&mut e.name, max);
            n += cap_attrs(&mut e.attributes, &mut e.dropped_attributes_count, l);
        }
        if s.links.len() > l.max_links_per_span {
            let extra = s.links.len() - l.max_links_per_span;
            s.links.truncate(l.max_links_per_span);
            s.dropped_links_count = s.dropped_links_count.saturating_add(extra as u32);
            n += extra as u64;
        }
        for k in &mut s.links {
            n += truncate_string(&mut k.trace_state, max);
            n += cap_attrs(&mut k.attributes, &mut k.dropped_attributes_count, l);
        }
        n
    }
}

fn cap_attrs(attrs: &mut Vec<KeyValue>, dropped: &mut u32, l: &Limits) -> u64 {
    let mut n = drop_long_keys(attrs, l.max_attribute_key_length);
    *dropped = dropped.saturating_add(n as u32);
    if attrs.len() > l.max_attributes_per_span {
        let extra = attrs.len() - l.max_attributes_per_span;
        attrs.truncate(l.max_attributes_per_span);
        *dropped = dropped.saturating_add(extra as u32);
        n += extra as u64;
    }
    n + cap_lengths(attrs, l)
}

/// Drops the attributes whose key is longer than `max` bytes (never `service.name`); returns
/// how many went.
fn drop_long_keys(attrs: &mut Vec<KeyValue>, max: usize) -> u64 {
    let before = attrs.len();
    attrs.retain(|kv| kv.key.len() <= max || kv.key == "service.name");
    (before - attrs.len()) as u64
}

/// Truncates the values of `attrs` to the length limit, and drops entries of nested key-value
/// lists whose key is too long; returns how many were cut or dropped. Keys are never cut: a
/// limit small enough to cut one (the tests use 8) would rename `service.name`.
fn cap_lengths(attrs: &mut [KeyValue], l: &Limits) -> u64 {
    attrs.iter_mut().map(|kv| truncate_value(&mut kv.value, l)).sum()
}

/// Truncates `s` to at most `max` bytes on a character boundary; 1 if it was cut.
fn truncate_string(s: &mut String, max: usize) -> u64 {
    if s.len() <= max {
        return 0;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    1
}

/// Length limits on the resources and scopes of a request's spans. Spans of one resource
/// share it (`Arc`), so each is capped once, and only copied when something in it is cut:
/// a service name of a megabyte would otherwise be listed, searched and sent to every UI.
#[derive(Default)]
struct SharedCaps {
    resource: Option<(Arc<Resource>, Arc<Resource>)>,
    scope: Option<(Arc<Scope>, Arc<Scope>)>,
}

impl SharedCaps {
    fn apply(&mut self, s: &mut Span, l: &Limits) -> u64 {
        let max = l.max_attribute_value_length;
        let mut n = 0;
        n += cap_shared(&mut self.resource, &mut s.resource, |r| {
            // `service.name` names the spans' service everywhere: it stays whatever its place.
            if let Some(i) = r.attributes.iter().position(|kv| kv.key == "service.name") {
                if i >= l.max_attributes_per_span && l.max_attributes_per_span > 0 {
                    r.attributes.swap(i, l.max_attributes_per_span - 1);
                }
            }
            cap_attrs(&mut r.attributes, &mut r.dropped_attributes_count, l)
        });
        n += cap_shared(&mut self.scope, &mut s.scope, |sc| {
            truncate_string(&mut sc.name, max)
                + truncate_string(&mut sc.version, max)
                + cap_attrs(&mut sc.attributes, &mut sc.dropped_attributes_count, l)
        });
        n
    }
}

/// Replaces `value` by a capped copy when capping cut something (else keeps the shared
/// original); `last` remembers the last one seen (spans of one resource come together), so
/// each is copied and counted once per request.
fn cap_shared<T: Clone>(last: &mut Option<(Arc<T>, Arc<T>)>, value: &mut Arc<T>, cap: impl Fn(&mut T) -> u64) -> u64 {
    if let Some((seen, capped)) = last {
        if Arc::ptr_eq(seen, value) {
            *value = capped.clone();
            return 0;
        }
    }
    let mut copy = T::clone(value);
    let n = cap(&mut copy);
    let capped = if n == 0 { value.clone() } else { Arc::new(copy) };
    *last = Some((std::mem::replace(value, capped.clone()), capped));
    n
}

fn truncate_value(v: &mut AnyValue, l: &Limits) -> u64 {
    let max = l.max_attribute_value_length;
    match v {
        AnyValue::String(s) => truncate_string(s, max),
        AnyValue::Bytes(b) if b.len() > max => {
            b.truncate(max);
            1
        }
        AnyValue::Array(a) => a.iter_mut().map(|x| truncate_value(x, l)).sum(),
        AnyValue::KvList(kv) => drop_long_keys(kv, l.max_attribute_key_length) + cap_lengths(kv, l),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundaries_and_counts() {
        let mut v = AnyValue::String("héllo".into());
        let two = Limits {
            max_attribute_value_length: 2,
            ..Limits::default()
        };
        assert_eq!(truncate_value(&mut v, &two), 1);
        assert_eq!(v, AnyValue::String("h".into()));
        let l = Limits {
            max_attributes_per_span: 1,
            ..Limits::default()
        };
        let mut attrs = vec![KeyValue::string("a", "1"), KeyValue::string("b", "2")];
        let mut dropped = 0;
        assert_eq!(cap_attrs(&mut attrs, &mut dropped, &l), 1);
        assert_eq!((attrs.len(), dropped), (1, 1));
    }

    /// A pipeline with `limits` over a store in a fresh directory (kept alive by the `TempDir`).
    async fn pipeline_with(limits: Limits) -> (tempfile::TempDir, skein_store::Store, Pipeline) {
        let dir = tempfile::tempdir().unwrap();
        let store = skein_store::Store::open(dir.path(), skein_store::StoreConfig::default())
            .await
            .unwrap();
        let pipeline = Pipeline::new(limits, store.clone());
        (dir, store, pipeline)
    }

    /// Bodies still arriving share a budget of `max_inflight_bytes`, apart from the decoded
    /// requests' own, and give it back when dropped.
    #[tokio::test]
    async fn bodies_arriving_share_a_budget_of_their_own() {
        let (_dir, _store, pipeline) = pipeline_with(Limits {
            max_inflight_bytes: 64 << 10,
            ..Limits::default()
        })
        .await;
        let mut first = pipeline.receiving();
        for _ in 0..40 {
            first.add(1000).unwrap(); // 40,000 bytes, a frame at a time
        }
        let mut second = pipeline.receiving();
        second.add(20_000).unwrap();
        let err = second.add(10_000).expect_err("over 64 KiB arriving at once");
        assert!(err.to_string().contains("retry later"), "{err}");
        // The decoded requests' budget is not touched by bodies arriving.
        let _decoding = pipeline.reserve(15 << 10).expect("own budget");
        drop(first);
        second.add(10_000).expect("the first body's bytes were given back");
    }

    /// A request is reserved at four times its encoded size. One whose spans take more decoded
    /// (a long array of small values) raises its reservation to what they take, and is refused
    /// as overload, storing nothing, while the budget has not that much free; once the budget
    /// is free it is stored. So the budget bounds decoded spans in flight, whatever their shape.
    #[tokio::test]
    async fn spans_bigger_decoded_than_reserved_take_what_they_need() {
        use skein_model::otlp::{wire, wire_decode};
        let (_dir, store, pipeline) = pipeline_with(Limits {
            max_inflight_bytes: 1 << 20,
            ..Limits::default()
        })
        .await;
        let metrics = ProtocolMetrics::new("test");
        let span = Span {
            trace_id: [7; 16],
            span_id: [8; 8],
            name: "batch".into(),
            start_unix_nano: 1_700_000_000_000_000_000,
            end_unix_nano: 1_700_000_001_000_000_000,
            attributes: vec![KeyValue::new("ids", AnyValue::Array(vec![AnyValue::Int(1); 20_000]))],
            ..Default::default()
        };
        let mut body = Vec::new();
        wire::export_request([&span], &mut body);
        let decoded = || wire_decode::decode_request(&body).unwrap();
        let heap = skein_model::spans_heap_size(&decoded().batch.spans);
        assert!(
            heap > 5 * body.len(),
            "{heap} bytes decoded from {} encoded",
            body.len()
        );
        assert!(heap < 1 << 20, "{heap}");

        // Half of the budget is held by other requests: enough for four times the encoded
        // size, not for the decoded spans.
        let others = pipeline.reserve((1 << 20) / 8).unwrap();
        let mut reservation = pipeline.reserve(body.len()).unwrap();
        let err = pipeline
            .submit(
                &mut reservation,
                decoded(),
                Some(bytes::Bytes::from(body.clone())),
                &metrics,
            )
            .await
            .expect_err("no room for the decoded spans");
        assert!(matches!(err, SubmitError::Overloaded(_)), "{err}");
        assert!(err.to_string().contains("retry later"), "{err}");
        assert!(store.trace_sources(&span.trace_id).0.is_empty());
        drop(reservation);

        drop(others);
        let mut reservation = pipeline.reserve(body.len()).unwrap();
        pipeline
            .submit(
                &mut reservation,
                decoded(),
                Some(bytes::Bytes::from(body.clone())),
                &metrics,
            )
            .await
            .unwrap();
        assert_eq!(store.trace_sources(&span.trace_id).0.len(), 1);
        // What it held is the decoded size, and it all comes back.
        assert!(pipeline.inflight.available_permits() as u64 <= pipeline.inflight_units - heap as u64 / UNIT);
        drop(reservation);
        assert_eq!(pipeline.inflight.available_permits() as u64, pipeline.inflight_units);
    }

    /// Requests read by the OTLP wire decoder skip the limits pass only when the decoder saw
    /// nothing that reaches a limit: each limit, exceeded alone, still caps what is stored.
    /// (A long key in a resource, scope or nested list also makes its encoded size pass the
    /// value length here; `wire_decode`'s tests check the key lengths the decoder notes.)
    #[tokio::test]
    async fn every_limit_applies_to_wire_decoded_requests() {
        use skein_model::otlp::{wire, wire_decode};
        use skein_model::{Event, Link};
        let limits = Limits {
            max_attributes_per_span: 3,
            max_attribute_value_length: 8,
            max_events_per_span: 2,
            max_links_per_span: 2,
            max_attribute_key_length: 6,
            ..Limits::default()
        };
        let (_dir, store, pipeline) = pipeline_with(limits.clone()).await;
        let metrics = ProtocolMetrics::new("test");
        let attrs = |n: usize| {
            (0..n)
                .map(|i| KeyValue::string(format!("k{i}"), "v"))
                .collect::<Vec<_>>()
        };
        let event = |n: usize| Event {
            time_unix_nano: 1,
            name: "e".into(),
            attributes: attrs(n),
            dropped_attributes_count: 0,
        };
        let link = |n: usize| Link {
            trace_id: [9; 16],
            span_id: [9; 8],
            attributes: attrs(n),
            ..Default::default()
        };
        let nested_long = KeyValue::new(
            "nested",
            AnyValue::KvList(vec![KeyValue::new(
                "list",
                AnyValue::Array(vec![AnyValue::String("0123456789".into())]),
            )]),
        );
        let mut cases: Vec<(&str, Span, Span)> = Vec::new();
        let mut case = |what: &'static str, change: &dyn Fn(&mut Span), capped: &dyn Fn(&mut Span)| {
            let mut sent = Span {
                trace_id: [cases.len() as u8 + 1; 16],
                span_id: [1; 8],
                name: "s".into(),
                start_unix_nano: 1,
                end_unix_nano: 2,
                attributes: attrs(3),
                events: vec![event(3), event(3)],
                links: vec![link(3), link(3)],
                ..Default::default()
            };
            change(&mut sent);
            let mut want = sent.clone();
            capped(&mut want);
            cases.push((what, sent, want));
        };
        case("at every limit", &|_| {}, &|_| {});
        case("a span attribute too many", &|s| s.attributes = attrs(4), &|s| {
            s.attributes.truncate(3);
            s.dropped_attributes_count = 1;
        });
        case(
            "a nested value too long",
            &|s| s.attributes[0] = nested_long.clone(),
            &|s| {
                let AnyValue::KvList(kvs) = &mut s.attributes[0].value else {
                    unreachable!()
                };
                kvs[0].value = AnyValue::Array(vec![AnyValue::String("01234567".into())]);
            },
        );
        case("an event too many", &|s| s.events.push(event(0)), &|s| {
            s.events.truncate(2);
            s.dropped_events_count = 1;
        });
        case("an event attribute too many", &|s| s.events[1] = event(4), &|s| {
            s.events[1].attributes.truncate(3);
            s.events[1].dropped_attributes_count = 1;
        });
        case("a link too many", &|s| s.links.push(link(0)), &|s| {
            s.links.truncate(2);
            s.dropped_links_count = 1;
        });
        case("a link attribute too many", &|s| s.links[0] = link(4), &|s| {
            s.links[0].attributes.truncate(3);
            s.links[0].dropped_attributes_count = 1;
        });
        case("a span name too long", &|s| s.name = "0123456789".into(), &|s| {
            s.name = "01234567".into()
        });
        case(
            "a status message too long",
            &|s| s.status.message = "é123456789".into(),
            &|s| s.status.message = "é123456".into(),
        );
        case(
            "a trace state too long",
            &|s| s.trace_state = "ot=th:8abc".into(),
            &|s| s.trace_state = "ot=th:8a".into(),
        );
        case(
            "an event name too long",
            &|s| s.events[1].name = "0123456789".into(),
            &|s| s.events[1].name = "01234567".into(),
        );
        let long_key = || KeyValue::string("longkey", "v");
        case(
            "a span attribute key too long",
            &|s| s.attributes[1] = long_key(),
            &|s| {
                s.attributes.remove(1);
                s.dropped_attributes_count = 1;
            },
        );
        case(
            "a nested key too long",
            &|s| {
                s.attributes[0] = KeyValue::new(
                    "nested",
                    AnyValue::KvList(vec![long_key(), KeyValue::new("k", AnyValue::Int(1))]),
                )
            },
            &|s| {
                s.attributes[0] = KeyValue::new("nested", AnyValue::KvList(vec![KeyValue::new("k", AnyValue::Int(1))]))
            },
        );
        case(
            "an event attribute key too long",
            &|s| s.events[0].attributes[2] = long_key(),
            &|s| {
                s.events[0].attributes.pop();
                s.events[0].dropped_attributes_count = 1;
            },
        );
        case(
            "a link attribute key too long",
            &|s| s.links[1].attributes[0] = long_key(),
            &|s| {
                s.links[1].attributes.remove(0);
                s.links[1].dropped_attributes_count = 1;
            },
        );
        case(
            "a resource attribute key too long",
            &|s| {
                s.resource = Arc::new(Resource {
                    attributes: vec![
                        KeyValue::string("service.name", "shop"),
                        KeyValue::string("host.name", "h"),
                    ],
                    dropped_attributes_count: 0,
                })
            },
            &|s| {
                // `service.name` is longer than the limit too, and stays.
                s.resource = Arc::new(Resource {
                    attributes: vec![KeyValue::string("service.name", "shop")],
                    dropped_attributes_count: 1,
                })
            },
        );
        case(
            "a scope attribute key too long",
            &|s| {
                s.scope = Arc::new(Scope {
                    name: "lib".into(),
                    attributes: vec![long_key()],
                    ..Default::default()
                })
            },
            &|s| {
                s.scope = Arc::new(Scope {
                    name: "lib".into(),
                    dropped_attributes_count: 1,
                    ..Default::default()
                })
            },
        );
        let resource = |key: &str, value: &str| {
            Arc::new(Resource {
                attributes: vec![KeyValue::string(key, value)],
                dropped_attributes_count: 0,
            })
        };
        case(
            "a service name too long",
            &|s| s.resource = resource("service.name", "checkout-api"),
            &|s| s.resource = resource("service.name", "checkout"),
        );
        // Resources and scopes are capped in count too; `service.name` stays wherever it was.
        let many = |n: usize| {
            let mut attributes = attrs(n);
            attributes.push(KeyValue::string("service.name", "shop"));
            attributes
        };
        case(
            "a resource attribute too many",
            &|s| {
                s.resource = Arc::new(Resource {
                    attributes: many(3),
                    dropped_attributes_count: 0,
                })
            },
            &|s| {
                let mut attributes = many(3);
                attributes.swap(2, 3);
                attributes.truncate(3);
                s.resource = Arc::new(Resource {
                    attributes,
                    dropped_attributes_count: 1,
                })
            },
        );
        case(
            "a scope attribute too many",
            &|s| {
                s.scope = Arc::new(Scope {
                    name: "lib".into(),
                    attributes: attrs(4),
                    ..Default::default()
                })
            },
            &|s| {
                s.scope = Arc::new(Scope {
                    name: "lib".into(),
                    attributes: attrs(3),
                    dropped_attributes_count: 1,
                    ..Default::default()
                })
            },
        );
        case(
            "a scope name too long",
            &|s| {
                s.scope = Arc::new(Scope {
                    name: "io.opentelemetry.http".into(),
                    ..Default::default()
                })
            },
            &|s| {
                s.scope = Arc::new(Scope {
                    name: "io.opent".into(),
                    ..Default::default()
                })
            },
        );
        for (what, sent, want) in cases {
            let mut body = Vec::new();
            wire::export_request([&sent], &mut body);
            let decoded = wire_decode::decode_request(&body).unwrap();
            let sizes = decoded.sizes.expect("the wire decoder notes sizes");
            assert_eq!(limits.admit(sizes), what == "at every limit", "{what}: {sizes:?}");
            let mut reservation = pipeline.reserve(body.len()).unwrap();
            pipeline
                .submit(&mut reservation, decoded, Some(bytes::Bytes::from(body)), &metrics)
                .await
                .unwrap();
            let (stored, _) = store.trace_sources(&sent.trace_id);
            assert_eq!(stored.len(), 1, "{what}");
            assert_eq!(stored[0].attributes, want.attributes, "{what}");
            assert_eq!(stored[0].name, want.name, "{what}");
            assert_eq!(stored[0].status, want.status, "{what}");
            assert_eq!(stored[0].trace_state, want.trace_state, "{what}");
            assert_eq!(stored[0].resource, want.resource, "{what}");
            assert_eq!(stored[0].scope, want.scope, "{what}");
            assert_eq!(
                stored[0].dropped_attributes_count, want.dropped_attributes_count,
                "{what}"
            );
            assert_eq!(stored[0].events, want.events, "{what}");
            assert_eq!(stored[0].dropped_events_count, want.dropped_events_count, "{what}");
            assert_eq!(stored[0].links, want.links, "{what}");
            assert_eq!(stored[0].dropped_links_count, want.dropped_links_count, "{what}");
        }
        store.shutdown().await.unwrap();
    }
}
