//! Spans waiting for a tail-sampling decision.
//!
//! They are durable (in the WAL, acknowledged like any span) but not yet in the head, so not
//! queryable. A decision moves a trace's spans into the head (keep) or discards them (drop), and
//! is remembered in a bounded cache so late spans follow it.
//!
//! Durability rests on one invariant: every pending span has a WAL record in a segment that
//! belongs to the current head. Spans arrive in the current segment; when the head is cut, the
//! writer appends a snapshot of everything pending (and the decision cache) to the new segment
//! before the old one can be deleted. A trace that is being decided stays in the snapshot until
//! its decision is applied, and the decision is written to the WAL by the same thread, in order.
//!
//! WAL records besides plain OTLP requests start with a zero byte (protobuf has no field 0, so
//! no OTLP request does) and a kind byte:
//! - `PENDING`: an OTLP request whose spans wait for a decision;
//! - `DECISIONS`: `n × (trace id: 16 bytes, keep: 1 byte)`;
//! - `SNAPSHOT`: `decisions: u32 LE, n × (16 + 1), then an OTLP request` — replaces everything
//!   pending and the cache, on replay.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skein_model::{Span, TraceId};

use crate::StoreError;

pub const RECORD_MARK: u8 = 0;
/// Tail-sampling decisions: trace id, keep.
pub type Decisions = Vec<(TraceId, bool)>;
pub const PENDING: u8 = 1;
pub const DECISIONS: u8 = 2;
pub const SNAPSHOT: u8 = 3;

/// A trace taken out for a decision.
pub struct DueTrace {
    pub trace_id: TraceId,
    pub spans: Arc<Vec<Span>>,
    /// Taken before `decision_wait` passed because the buffer was over its bounds.
    pub early: bool,
}

/// Bounds on what is pending, enforced by deciding the oldest traces early.
#[derive(Debug, Clone, Copy)]
pub struct PendingBounds {
    pub max_traces: usize,
    pub max_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PendingStats {
    pub traces: usize,
    pub spans: usize,
    pub bytes: usize,
}

struct PendingTrace {
    /// Spans not handed to the sampler yet (late spans, while a decision is being made).
    spans: Vec<Span>,
    /// Spans the sampler is deciding on.
    taken: Option<Arc<Vec<Span>>>,
    bytes: usize,
    first_seen: Instant,
    last_seen: Instant,
}

/// A bounded set that forgets the oldest entries first.
#[derive(Default)]
struct FifoSet {
    set: HashSet<TraceId>,
    order: VecDeque<TraceId>,
    cap: usize,
}

impl FifoSet {
    fn insert(&mut self, id: TraceId) {
        if self.cap == 0 || !self.set.insert(id) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
    fn remove(&mut self, id: &TraceId) {
        // The id stays in `order` until it ages out; re-inserting it later is harmless.
        self.set.remove(id);
    }
    fn contains(&self, id: &TraceId) -> bool {
        self.set.contains(id)
    }
    fn clear(&mut self) {
        self.set.clear();
        self.order.clear();
    }
}

/// What happens to an arriving span.
enum Route {
    Head,
    Drop,
    Wait,
}

pub struct Pending {
    traces: HashMap<TraceId, PendingTrace>,
    spans: usize,
    bytes: usize,
    kept: FifoSet,
    dropped: FifoSet,
    /// Late spans that followed a cached decision: (kept, dropped).
    pub late: (u64, u64),
}

impl Default for Pending {
    fn default() -> Self {
        Pending::new(100_000, 100_000)
    }
}

impl Pending {
    pub fn new(kept_cache: usize, dropped_cache: usize) -> Pending {
        Pending {
            traces: HashMap::new(),
            spans: 0,
            bytes: 0,
            kept: FifoSet {
                cap: kept_cache,
                ..Default::default()
            },
            dropped: FifoSet {
                cap: dropped_cache,
                ..Default::default()
            },
            late: (0, 0),
        }
    }

    pub fn set_cache_sizes(&mut self, kept: usize, dropped: usize) {
        self.kept.cap = kept;
        self.dropped.cap = dropped;
    }

    pub fn stats(&self) -> PendingStats {
        PendingStats {
            traces: self.traces.len(),
            spans: self.spans,
            bytes: self.bytes,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.traces.is_empty()
    }

    pub fn spans_in_trace(&self, id: &TraceId) -> usize {
        self.traces
            .get(id)
            .map_or(0, |t| t.spans.len() + t.taken.as_ref().map_or(0, |s| s.len()))
    }

    /// The cached decision for a trace, if any: `Some(true)` keep, `Some(false)` drop.
    pub fn decision(&self, id: &TraceId) -> Option<bool> {
        if self.kept.contains(id) {
            Some(true)
        } else if self.dropped.contains(id) {
            Some(false)
        } else {
            None
        }
    }

    fn route(&self, id: &TraceId) -> Route {
        match self.decision(id) {
            Some(true) => Route::Head,
            Some(false) => Route::Drop,
            None => Route::Wait,
        }
    }

    /// Holds spans until their trace is decided; spans of already-decided traces follow the
    /// decision. Returns the spans that go to the head now.
    pub fn admit(&mut self, spans: Vec<Span>, now: Instant) -> Vec<Span> {
        let mut to_head = Vec::new();
        let mut sizer = skein_model::HeapSizer::default();
        for s in spans {
            match self.route(&s.trace_id) {
                Route::Head => {
                    self.late.0 += 1;
                    to_head.push(s);
                }
                Route::Drop => self.late.1 += 1,
                Route::Wait => {
                    let size = sizer.size(&s);
                    let t = self.traces.entry(s.trace_id).or_insert_with(|| PendingTrace {
                        spans: Vec::new(),
                        taken: None,
                        bytes: 0,
                        first_seen: now,
                        last_seen: now,
                    });
                    t.last_seen = now;
                    t.bytes += size;
                    t.spans.push(s);
                    self.spans += 1;
                    self.bytes += size;
                }
            }
        }
        to_head
    }

    /// Hands out the traces whose last span arrived at least `quiet_for` before `now`, plus the
    /// oldest others while the buffer is over `bounds` (decided early). At most `max` traces.
    pub fn take_due(&mut self, now: Instant, quiet_for: Duration, bounds: PendingBounds, max: usize) -> Vec<DueTrace> {
        let mut due: Vec<(TraceId, bool)> = self
            .traces
            .iter()
            .filter(|(_, t)| t.taken.is_none() && now.saturating_duration_since(t.last_seen) >= quiet_for)
            .map(|(id, _)| (*id, false))
            .take(max)
            .collect();
        // Over a bound: decide the oldest remaining traces now rather than grow.
        let taken_bytes: usize = due.iter().map(|(id, _)| self.traces[id].bytes).sum();
        let mut traces_left = self.traces.len().saturating_sub(due.len());
        let mut bytes_left = self.bytes.saturating_sub(taken_bytes);
        if (traces_left > bounds.max_traces || bytes_left > bounds.max_bytes) && due.len() < max {
            // Down to 90% of the bounds, so a buffer at its limit is not sorted on every request.
            let (max_traces, max_bytes) = (
                bounds.max_traces - bounds.max_traces / 10,
                bounds.max_bytes - bounds.max_bytes / 10,
            );
            let chosen: HashSet<TraceId> = due.iter().map(|(id, _)| *id).collect();
            let mut rest: Vec<(Instant, TraceId, usize)> = self
                .traces
                .iter()
                .filter(|(id, t)| t.taken.is_none() && !chosen.contains(*id))
                .map(|(id, t)| (t.first_seen, *id, t.bytes))
                .collect();
            rest.sort_unstable_by_key(|(seen, _, _)| *seen);
            for (_, id, bytes) in rest {
                if (traces_left <= max_traces && bytes_left <= max_bytes) || due.len() >= max {
                    break;
                }
                due.push((id, true));
                traces_left -= 1;
                bytes_left = bytes_left.saturating_sub(bytes);
            }
        }
        due.into_iter()
            .map(|(trace_id, early)| {
                let t = self.traces.get_mut(&trace_id).expect("chosen from the map");
                let spans = Arc::new(std::mem::take(&mut t.spans));
                t.taken = Some(spans.clone());
                DueTrace { trace_id, spans, early }
            })
            .collect()
    }

    /// Applies decisions: remembers them for late spans and returns the spans to keep.
    /// A decision for a trace that is not pending (replayed twice, or already applied) is
    /// only remembered.
    pub fn apply(&mut self, decisions: &[(TraceId, bool)]) -> Vec<Span> {
        let mut keep = Vec::new();
        for (id, keep_it) in decisions {
            if *keep_it {
                self.dropped.remove(id);
                self.kept.insert(*id);
            } else {
                self.kept.remove(id);
                self.dropped.insert(*id);
            }
            let Some(t) = self.traces.remove(id) else { continue };
            self.spans -= t.spans.len() + t.taken.as_ref().map_or(0, |s| s.len());
            self.bytes -= t.bytes;
            if *keep_it {
                if let Some(taken) = t.taken {
                    keep.extend(Arc::try_unwrap(taken).unwrap_or_else(|shared| (*shared).clone()));
                }
                keep.extend(t.spans);
            }
        }
        keep
    }

    /// Puts traces handed out by `take_due` back to waiting (their decision could not be
    /// recorded); they are handed out again later.
    pub fn untake(&mut self, decisions: &[(TraceId, bool)]) {
        for (id, _) in decisions {
            if let Some(t) = self.traces.get_mut(id) {
                if let Some(taken) = t.taken.take() {
                    let late = std::mem::take(&mut t.spans);
                    t.spans = Arc::try_unwrap(taken).unwrap_or_else(|shared| (*shared).clone());
                    t.spans.extend(late);
                }
            }
        }
    }

    /// Every pending span, for the snapshot written when the head is cut, or to keep them all.
    pub fn all_spans(&self) -> impl Iterator<Item = &Span> {
        self.traces
            .values()
            .flat_map(|t| t.taken.iter().flat_map(|s| s.iter()).chain(t.spans.iter()))
    }

    /// Empties the buffer, returning every pending span (tail sampling turned off: keep all).
    pub fn drain_all(&mut self) -> Vec<Span> {
        let out: Vec<Span> = self.all_spans().cloned().collect();
        self.traces.clear();
        self.spans = 0;
        self.bytes = 0;
        out
    }

    /// A `SNAPSHOT` record: the decision cache and every pending span.
    pub fn snapshot_record(&self) -> Vec<u8> {
        let decisions: Vec<(TraceId, bool)> = self
            .kept
            .set
            .iter()
            .map(|id| (*id, true))
            .chain(self.dropped.set.iter().map(|id| (*id, false)))
            .collect();
        let mut out = Vec::with_capacity(6 + decisions.len() * 17 + self.bytes / 2);
        out.extend_from_slice(&[RECORD_MARK, SNAPSHOT]);
        out.extend_from_slice(&(decisions.len() as u32).to_le_bytes());
        put_decisions(&decisions, &mut out);
        skein_model::otlp::wire::export_request(self.all_spans(), &mut out);
        out
    }

    /// Replay of a `SNAPSHOT` record: it replaces everything pending and the cache. Returns
    /// nothing for the head: the snapshot holds only undecided spans.
    pub fn restore_snapshot(&mut self, decisions: &[(TraceId, bool)], spans: Vec<Span>, now: Instant) {
        self.traces.clear();
        self.spans = 0;
        self.bytes = 0;
        self.kept.clear();
        self.dropped.clear();
        // Replay order: oldest decisions first is unknown here; the cache is a set either way.
        for (id, keep) in decisions {
            if *keep {
                self.kept.insert(*id);
            } else {
                self.dropped.insert(*id);
            }
        }
        let to_head = self.admit(spans, now);
        debug_assert!(to_head.is_empty(), "a snapshot holds only undecided traces");
    }
}

/// `DECISIONS` record payload.
pub fn decisions_record(decisions: &[(TraceId, bool)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + decisions.len() * 17);
    out.extend_from_slice(&[RECORD_MARK, DECISIONS]);
    put_decisions(decisions, &mut out);
    out
}

fn put_decisions(decisions: &[(TraceId, bool)], out: &mut Vec<u8>) {
    for (id, keep) in decisions {
        out.extend_from_slice(id);
        out.push(*keep as u8);
    }
}

pub fn parse_decisions(mut data: &[u8]) -> Result<Decisions, StoreError> {
    if !data.len().is_multiple_of(17) {
        return Err(StoreError::corrupt(format!(
            "WAL decisions record of {} bytes is not a multiple of 17",
            data.len()
        )));
    }
    let mut out = Vec::with_capacity(data.len() / 17);
    while !data.is_empty() {
        let id: TraceId = data[..16].try_into().expect("16 bytes");
        out.push((id, data[16] != 0));
        data = &data[17..];
    }
    Ok(out)
}

/// Splits a `SNAPSHOT` record body (after the two-byte header) into decisions and OTLP bytes.
pub fn parse_snapshot(data: &[u8]) -> Result<(Decisions, &[u8]), StoreError> {
    let bad = || StoreError::corrupt("WAL snapshot record is truncated");
    let n = u32::from_le_bytes(data.get(..4).ok_or_else(bad)?.try_into().expect("4 bytes")) as usize;
    let end = 4 + n.checked_mul(17).ok_or_else(bad)?;
    let decisions = parse_decisions(data.get(4..end).ok_or_else(bad)?)?;
    Ok((decisions, &data[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: u8, id: u8) -> Span {
        Span {
            trace_id: [trace; 16],
            span_id: [id; 8],
            start_unix_nano: 1,
            end_unix_nano: 2,
            name: format!("s{id}"),
            ..Default::default()
        }
    }

    const WIDE: PendingBounds = PendingBounds {
        max_traces: usize::MAX,
        max_bytes: usize::MAX,
    };

    /// A resource is counted once per run of spans sharing it: spans with resources of their
    /// own fill the buffer's byte budget with them.
    #[test]
    fn resources_count_once_per_run_of_spans_sharing_them() {
        let big = |n: u8| {
            Arc::new(skein_model::Resource {
                attributes: vec![skein_model::KeyValue::string(
                    "k8s.pod.labels",
                    "x".repeat(4096 + n as usize),
                )],
                dropped_attributes_count: 0,
            })
        };
        let t0 = Instant::now();
        let shared = big(0);
        let mut one = Pending::new(10, 10);
        one.admit(
            (0..10)
                .map(|i| Span {
                    resource: shared.clone(),
                    ..span(i, i)
                })
                .collect(),
            t0,
        );
        let mut own = Pending::new(10, 10);
        own.admit(
            (0..10)
                .map(|i| Span {
                    resource: big(i),
                    ..span(i, i)
                })
                .collect(),
            t0,
        );
        let (one, own) = (one.stats().bytes, own.stats().bytes);
        assert!((4096..2 * 4096).contains(&one), "{one}");
        assert!(own >= 10 * 4096, "{own}");
    }

    #[test]
    fn waits_then_decides_and_late_spans_follow() {
        let t0 = Instant::now();
        let mut p = Pending::new(10, 10);
        assert!(p.admit(vec![span(1, 1), span(2, 1)], t0).is_empty());
        let t1 = t0 + Duration::from_secs(5);
        assert!(p.admit(vec![span(1, 2)], t1).is_empty());
        // Only trace 2 has been quiet since t0.
        let due = p.take_due(t1, Duration::from_secs(5), WIDE, 100);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].trace_id, [2; 16]);
        // A span arriving while trace 2 is being decided still follows the decision.
        p.admit(vec![span(2, 2)], t1);
        let due1 = p.take_due(t1, Duration::ZERO, WIDE, 100);
        assert_eq!(due1.len(), 1, "trace 2 is not handed out twice");
        assert_eq!(due1[0].trace_id, [1; 16]);
        drop((due, due1));
        // A decision that could not be recorded puts the trace back, to be handed out again.
        p.untake(&[([2; 16], true), ([1; 16], false)]);
        assert_eq!(p.stats().spans, 4);
        let again = p.take_due(t1, Duration::ZERO, WIDE, 100);
        assert_eq!(again.len(), 2);
        assert_eq!(again.iter().map(|d| d.spans.len()).sum::<usize>(), 4);
        drop(again);
        let kept = p.apply(&[([2; 16], true), ([1; 16], false)]);
        assert_eq!(kept.len(), 2);
        assert!(p.is_empty());
        assert_eq!(p.stats(), PendingStats::default());
        assert_eq!(p.admit(vec![span(2, 3), span(1, 3)], t1).len(), 1);
        assert_eq!(p.late, (1, 1));
    }

    #[test]
    fn over_bounds_decides_the_oldest_early() {
        let t0 = Instant::now();
        let mut p = Pending::new(10, 10);
        for i in 0..20u8 {
            p.admit(vec![span(i, 1)], t0 + Duration::from_millis(i as u64));
        }
        let bounds = PendingBounds {
            max_traces: 20,
            max_bytes: usize::MAX,
        };
        assert!(
            p.take_due(t0, Duration::from_secs(1), bounds, 100).is_empty(),
            "within bounds"
        );
        p.admit(vec![span(30, 1)], t0 + Duration::from_millis(30));
        // Over by one: down to 90% of the bound (18), oldest first.
        let due = p.take_due(t0, Duration::from_secs(1), bounds, 100);
        let ids: Vec<u8> = due.iter().map(|d| d.trace_id[0]).collect();
        assert_eq!(ids, vec![0, 1, 2]);
        assert!(due.iter().all(|d| d.early));
    }

    #[test]
    fn snapshot_round_trips_pending_and_cache() {
        let t0 = Instant::now();
        let mut p = Pending::new(10, 10);
        p.admit(vec![span(1, 1), span(3, 1)], t0);
        let due = p.take_due(t0, Duration::ZERO, WIDE, 1);
        assert_eq!(due.len(), 1);
        p.apply(&[([9; 16], true), ([8; 16], false)]);
        let rec = p.snapshot_record();
        assert_eq!(&rec[..2], &[RECORD_MARK, SNAPSHOT]);
        let (decisions, otlp) = parse_snapshot(&rec[2..]).unwrap();
        assert_eq!(decisions.len(), 2);
        let req =
            <skein_model::otlp::pb::collector::trace::v1::ExportTraceServiceRequest as prost::Message>::decode(otlp)
                .unwrap();
        let spans = skein_model::otlp::proto::decode_request(req).batch.spans;
        assert_eq!(
            spans.len(),
            2,
            "both the taken and the waiting trace are in the snapshot"
        );
        let mut q = Pending::new(10, 10);
        q.restore_snapshot(&decisions, spans, t0);
        assert_eq!(q.stats().traces, 2);
        assert_eq!(q.decision(&[9; 16]), Some(true));
        assert_eq!(q.decision(&[8; 16]), Some(false));
    }

    #[test]
    fn decision_cache_is_bounded() {
        let mut p = Pending::new(2, 0);
        p.apply(&[([1; 16], true), ([2; 16], true), ([3; 16], true), ([4; 16], false)]);
        assert_eq!(p.decision(&[1; 16]), None);
        assert_eq!(p.decision(&[3; 16]), Some(true));
        assert_eq!(p.decision(&[4; 16]), None, "a zero-size cache remembers nothing");
    }
}
