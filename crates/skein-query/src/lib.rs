//! Queries over the store: trace by id, search, services/operations and dependencies.
//!
//! Every query looks at a snapshot: the in-memory heads first, then blocks, pruned by block
//! meta (time range, services, operations), row-group ranges and bloom filters.

pub mod autocomplete;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use arrow_array::builder::BooleanBufferBuilder;
use arrow_array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow_buffer::BooleanBuffer;
use futures::{StreamExt, TryStreamExt};
use skein_model::metrics;
use skein_model::otlp::{pb, proto};
use skein_model::*;
use skein_store::block::schema::{self, HotType, HOT};
use skein_store::block::write::SharedBytes;
use skein_store::block::{BlockHandle, TraceSummary};
use skein_store::{Store, StoreError};

pub use skein_store::block::TraceSummary as Summary;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A search. Span-level conditions must all hold for one span of a trace; the trace matches
/// when any of its spans does (Jaeger's semantics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceQuery {
    pub service: Option<String>,
    pub operation: Option<String>,
    pub span_kind: Option<SpanKind>,
    /// Exact matches on span or resource attributes, compared on the typed value's text
    /// (`200` matches an int 200, `true` a bool). `error=true` also matches error status.
    pub attributes: Vec<(String, String)>,
    pub error: Option<bool>,
    pub min_duration_nano: Option<u64>,
    pub max_duration_nano: Option<u64>,
    /// Span start time window, unix ns, inclusive.
    pub start_min: Option<u64>,
    pub start_max: Option<u64>,
    pub limit: usize,
}

impl TraceQuery {
    fn window(&self) -> (u64, u64) {
        (self.start_min.unwrap_or(0), self.start_max.unwrap_or(u64::MAX))
    }

    /// Whether one span satisfies every span-level condition.
    pub fn matches_span(&self, s: &Span) -> bool {
        let (lo, hi) = self.window();
        if s.start_unix_nano < lo || s.start_unix_nano > hi {
            return false;
        }
        if self.service.as_deref().is_some_and(|svc| s.service_name() != svc) {
            return false;
        }
        if self.operation.as_deref().is_some_and(|op| s.name != op) {
            return false;
        }
        if self.span_kind.is_some_and(|k| s.kind != k) {
            return false;
        }
        if self.error.is_some_and(|e| s.is_error() != e) {
            return false;
        }
        let d = s.duration_nano();
        if self.min_duration_nano.is_some_and(|m| d < m) || self.max_duration_nano.is_some_and(|m| d > m) {
            return false;
        }
        self.attributes.iter().all(|(k, v)| {
            (k == "error" && v == "true" && s.is_error())
                || attr_matches(&s.attributes, k, v)
                || attr_matches(&s.resource.attributes, k, v)
        })
    }
}

fn attr_matches(attrs: &[KeyValue], key: &str, want: &str) -> bool {
    attrs.iter().any(|kv| kv.key == key && value_matches(&kv.value, want))
}

fn value_matches(v: &AnyValue, want: &str) -> bool {
    match v {
        AnyValue::String(s) => s == want,
        AnyValue::Int(i) => want.parse::<i64>().is_ok_and(|w| w == *i),
        AnyValue::Double(d) => want.parse::<f64>().is_ok_and(|w| w == *d),
        AnyValue::Bool(b) => want.parse::<bool>().is_ok_and(|w| w == *b),
        other => other.to_display_string() == want,
    }
}

#[derive(Clone)]
pub struct QueryEngine {
    store: Store,
    /// Most traces one search may ask for (`query.max_traces`).
    max_traces: usize,
    /// How many reads of one search run at once, and into how many scans a block's row
    /// groups are split: one per core unless set (`with_read_parallelism`).
    parallelism: usize,
}

/// `query.max_traces` unless configured.
pub const DEFAULT_MAX_TRACES: usize = 1500;

/// An edge of the service dependency graph.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dependency {
    pub parent: String,
    pub child: String,
    #[serde(rename = "callCount")]
    pub call_count: u64,
}

impl QueryEngine {
    pub fn new(store: Store) -> Self {
        // Every kind from the start, so a dashboard's rate() reads 0 before the first query.
        for kind in ["trace_by_id", "search", "dependencies"] {
            query_duration(kind);
        }
        QueryEngine {
            store,
            max_traces: DEFAULT_MAX_TRACES,
            parallelism: read_parallelism(),
        }
    }

    /// Runs `n` reads of a search at once (at least 1) instead of one per core.
    pub fn with_read_parallelism(mut self, n: usize) -> Self {
        self.parallelism = n.max(1);
        self
    }

    /// Searches may ask for at most `max_traces` traces (at least 1).
    pub fn with_max_traces(mut self, max_traces: usize) -> Self {
        self.max_traces = max_traces.max(1);
        self
    }

    /// `query` if its limit is within `query.max_traces`, else an error naming the API's
    /// parameter `name`. Each trace found is held in memory until the answer is sent, so one
    /// search for every trace of a large store would take the server's memory with it.
    pub fn within_max_traces(&self, query: TraceQuery, name: &str) -> Result<TraceQuery, String> {
        if query.limit > self.max_traces {
            return Err(format!(
                "{name}={} asks for more traces than query.max_traces={}; ask for fewer, or raise query.max_traces",
                query.limit, self.max_traces
            ));
        }
        Ok(query)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// All spans of a trace, merged from head and blocks, deduped by span id, ordered by start.
    pub async fn trace(&self, id: &TraceId) -> Result<Vec<Span>, QueryError> {
        let t = std::time::Instant::now();
        let spans = self.read_trace(id, false).await?;
        observe("trace_by_id", t);
        Ok(spans)
    }

    /// Like `trace`, but spans read from blocks carry only what a trace summary needs (ids,
    /// parent, name, kind, times, status code, service; see `BlockHandle::trace_outline`).
    /// Spans still in memory come whole.
    pub async fn trace_outline(&self, id: &TraceId) -> Result<Vec<Span>, QueryError> {
        self.read_trace(id, true).await
    }

    /// A trace's spans (outlines when `outline`), unobserved: `trace` times lookups, a
    /// search times itself as a whole.
    async fn read_trace(&self, id: &TraceId, outline: bool) -> Result<Vec<Span>, QueryError> {
        // The blocks are held until the reads end: a merge that replaces them meanwhile
        // deletes their files only after (`Store::delete_retired`).
        let (mut spans, blocks) = self.store.trace_sources(id);
        // Blocks whose bloom admits the id (the one holding it, and rare false positives) are
        // read in parallel.
        let reads: Vec<_> = blocks
            .into_iter()
            .map(|b| {
                let id = *id;
                BlockRead::of_block(b.clone(), async move {
                    if outline {
                        b.trace_outline(&id).await
                    } else {
                        b.trace(&id).await
                    }
                })
            })
            .collect();
        for read in reads {
            spans.extend(read.join().await?);
        }
        let mut seen = HashSet::new();
        spans.sort_by_key(|s| (s.start_unix_nano, s.span_id));
        spans.retain(|s| seen.insert(s.span_id));
        Ok(spans)
    }

    /// Summaries of the matching traces, newest first (ties by trace id), at most `limit`.
    pub async fn search(&self, q: &TraceQuery) -> Result<Vec<TraceSummary>, QueryError> {
        let t = std::time::Instant::now();
        let found = self.find(q).await?;
        observe("search", t);
        Ok(found)
    }

    /// `search`, unobserved.
    async fn find(&self, q: &TraceQuery) -> Result<Vec<TraceSummary>, QueryError> {
        let snap = self.store.snapshot();
        let picked = self.pick(q, &snap).await?;
        let mut summaries = self.summaries_of(&picked, &snap).await?;
        summaries.sort_by(|a, b| b.start.cmp(&a.start).then(a.trace_id.cmp(&b.trace_id)));
        Ok(summaries)
    }

    /// The traces a search finds, in no order: with a limit, the `limit` with the newest
    /// matching spans.
    async fn pick(&self, q: &TraceQuery, snap: &skein_store::Snapshot) -> Result<HashSet<TraceId>, QueryError> {
        // trace → start of its newest matching span.
        let mut newest: HashMap<TraceId, u64> = HashMap::new();
        for h in &snap.heads {
            for s in h.spans() {
                if q.matches_span(s) {
                    let e = newest.entry(s.trace_id).or_insert(0);
                    *e = (*e).max(s.start_unix_nano);
                }
            }
        }
        // Newest blocks first; stop once `limit` hits are newer than anything older blocks hold.
        // (A trace's start can only be earlier than its matching span's, so ordering across the
        // cut-off is by the matching spans — exact for traces that live in one block.)
        // Each block's row groups are split into one scan per core (`split_scans`), so the
        // newest block, which often holds every hit a search needs, is read on all cores
        // instead of one core reading it while another reads the next block on speculation.
        // Scans run a few ahead of the one being merged; one that turns out not to be needed
        // is aborted.
        let mut blocks: Vec<Arc<BlockHandle>> = snap
            .blocks
            .iter()
            .filter(|b| block_may_match(&b.meta, q))
            .cloned()
            .collect();
        // Newest first by the latest start in the window each block may hold
        // (`BlockMeta::latest_start_until`); blocks reaching past the window by their latest
        // start of all, as before the cut.
        let (lo, hi) = q.window();
        blocks.sort_by_key(|b| std::cmp::Reverse((b.meta.latest_start_until(hi), b.meta.latest_start_until(u64::MAX))));
        let parallel = self.parallelism;
        let shared = Arc::new(q.clone());
        // Scans in order: (block's place, block, its row groups for this scan, the block's
        // trace rows shared by its scans, whether this is the block's last scan).
        let mut parts = blocks.iter().enumerate().flat_map(|(i, b)| {
            let chunks = split_scans(row_groups_in_window(b, lo, hi), parallel);
            let trace_rows: Arc<TraceRows> = Arc::default();
            let last = chunks.len() - 1;
            chunks
                .into_iter()
                .enumerate()
                .map(move |(k, groups)| (i, b.clone(), groups, trace_rows.clone(), k == last))
        });
        let mut scans = std::collections::VecDeque::new();
        let mut settled = ScansSettled::default();
        loop {
            while scans.len() < parallel {
                let Some((i, b, groups, trace_rows, last)) = parts.next() else {
                    break;
                };
                let q = shared.clone();
                let scanned = b.clone();
                let read = BlockRead::spawn(async move { search_block(&scanned, &q, groups, &trace_rows).await });
                scans.push_back((i, b, last, read));
            }
            let Some((i, b, last, scan)) = scans.pop_front() else {
                break;
            };
            let found = settled.scan(i, &b, scan.join().await)?.unwrap_or_default();
            for (t, start) in found {
                let e = newest.entry(t).or_insert(0);
                *e = (*e).max(start);
            }
            if last && q.limit > 0 && newest.len() >= q.limit {
                let mut starts: Vec<u64> = newest.values().copied().collect();
                starts.sort_unstable_by(|a, b| b.cmp(a));
                let kth = starts[q.limit - 1];
                if blocks
                    .get(i + 1)
                    .is_none_or(|next| next.meta.latest_start_until(hi) < kth)
                {
                    break;
                }
            }
        }
        drop(scans);
        // As Jaeger's span-index backends do: the `limit` traces with the newest matching
        // spans, then ordered by trace start. Summaries for every hit would cost far more
        // than the scan when an attribute is common.
        let mut chosen: Vec<(TraceId, u64)> = newest.into_iter().collect();
        keep_newest(&mut chosen, q.limit);
        Ok(chosen.into_iter().map(|(t, _)| t).collect())
    }

    /// Merged summaries of the given traces across heads and every block that may hold them.
    pub async fn summaries_of(
        &self,
        ids: &HashSet<TraceId>,
        snap: &skein_store::Snapshot,
    ) -> Result<Vec<TraceSummary>, QueryError> {
        let mut merged: HashMap<TraceId, TraceSummary> = HashMap::new();
        let mut head_spans: HashMap<TraceId, Vec<&Span>> = HashMap::new();
        for h in &snap.heads {
            for s in h.spans() {
                if ids.contains(&s.trace_id) {
                    head_spans.entry(s.trace_id).or_default().push(s);
                }
            }
        }
        for (id, spans) in head_spans {
            merged.insert(id, TraceSummary::from_spans(id, spans));
        }
        // Every block whose bloom admits one of the ids, read in parallel.
        let reads: Vec<BlockRead<Vec<TraceSummary>>> = snap
            .blocks
            .iter()
            .filter_map(|b| {
                let wanted: HashSet<TraceId> = ids.iter().filter(|id| b.may_contain(id)).copied().collect();
                let b = b.clone();
                (!wanted.is_empty()).then(|| BlockRead::of_block(b.clone(), async move { b.summaries(&wanted).await }))
            })
            .collect();
        for read in reads {
            for s in read.join().await? {
                match merged.get_mut(&s.trace_id) {
                    Some(m) => m.merge(&s),
                    None => {
                        merged.insert(s.trace_id, s);
                    }
                }
            }
        }
        Ok(merged.into_values().collect())
    }

    /// Full traces for a search, newest first.
    pub async fn find_traces(&self, q: &TraceQuery) -> Result<Vec<Vec<Span>>, QueryError> {
        self.fetch_found(q, false).await
    }

    /// Outlines (`trace_outline`) of the traces a search finds, newest first: enough for
    /// trace summaries with orphan and per-service counts, at a tenth of the columns read.
    pub async fn find_trace_outlines(&self, q: &TraceQuery) -> Result<Vec<Vec<Span>>, QueryError> {
        self.fetch_found(q, true).await
    }

    async fn fetch_found(&self, q: &TraceQuery, outline: bool) -> Result<Vec<Vec<Span>>, QueryError> {
        // Fetched a few at a time on all cores (each a trace-by-id lookup). Not all at once:
        // each lookup decodes a page of every column, and a hundred at once held half a
        // gigabyte. No summaries are read: the traces themselves give the order. Timed as
        // one search, lookups included.
        let t = std::time::Instant::now();
        let picked = self.pick(q, &self.store.snapshot()).await?;
        let mut traces: Vec<Vec<Span>> = futures::stream::iter(picked)
            .map(|id| {
                let engine = self.clone();
                BlockRead::spawn(async move { engine.read_trace(&id, outline).await.map_err(|QueryError::Store(e)| e) })
                    .join()
            })
            .buffered(self.parallelism)
            .try_collect()
            .await?;
        traces.retain(|spans| !spans.is_empty());
        // As summaries are ordered: by trace start, newest first, ties by trace id.
        traces.sort_by_cached_key(|spans| {
            let start = spans.iter().map(|s| s.start_unix_nano).min();
            (std::cmp::Reverse(start), spans[0].trace_id)
        });
        observe("search", t);
        Ok(traces)
    }

    /// Service names, sorted.
    pub fn services(&self) -> Vec<String> {
        let snap = self.store.snapshot();
        let mut out: BTreeSet<String> = BTreeSet::new();
        for h in &snap.heads {
            let mut last: Option<*const Resource> = None;
            for s in h.spans() {
                let p = Arc::as_ptr(&s.resource);
                if last != Some(p) {
                    last = Some(p);
                    if !out.contains(s.service_name()) {
                        out.insert(s.service_name().to_string());
                    }
                }
            }
        }
        for b in &snap.blocks {
            out.extend(b.meta.services.keys().cloned());
        }
        out.into_iter().collect()
    }

    /// (operation, kind) pairs of a service, sorted; `kind` filters when given.
    pub fn operations(&self, service: &str, kind: Option<SpanKind>) -> Vec<(String, SpanKind)> {
        let snap = self.store.snapshot();
        let mut out: BTreeSet<(String, SpanKind)> = BTreeSet::new();
        for h in &snap.heads {
            for s in h.spans() {
                if s.service_name() == service
                    && kind.is_none_or(|k| k == s.kind)
                    && !out.contains(&(s.name.clone(), s.kind))
                {
                    out.insert((s.name.clone(), s.kind));
                }
            }
        }
        for b in &snap.blocks {
            if let Some(ops) = b.meta.services.get(service) {
                for (name, k) in ops {
                    let k = SpanKind::from_i32(*k as i32).unwrap_or_default();
                    if kind.is_none_or(|want| want == k) {
                        out.insert((name.clone(), k));
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    /// Service → service call counts from parent/child spans that started in the window.
    pub async fn dependencies(&self, start: u64, end: u64) -> Result<Vec<Dependency>, QueryError> {
        let t = std::time::Instant::now();
        let snap = self.store.snapshot();
        let in_window = move |s: u64| s >= start && s <= end;
        let mut graph = CallGraph::default();
        // Memory: group by trace across all head chunks.
        let mut by_trace: HashMap<TraceId, Vec<(SpanId, u64, SpanId, &str)>> = HashMap::new();
        for s in snap.heads.iter().flat_map(|h| h.spans()) {
            if in_window(s.start_unix_nano) {
                by_trace.entry(s.trace_id).or_default().push((
                    s.span_id,
                    s.start_unix_nano,
                    s.parent_span_id,
                    s.service_name(),
                ));
            }
        }
        for (trace, mut spans) in by_trace {
            // A span sent twice (a retried request) is one call: keep the copy trace reads
            // show, the earliest.
            spans.sort_unstable_by_key(|&(id, start, _, _)| (id, start));
            spans.dedup_by_key(|&mut (id, _, _, _)| id);
            let spans: Vec<(SpanId, SpanId, &str)> = spans.into_iter().map(|(id, _, p, svc)| (id, p, svc)).collect();
            graph.add_trace(trace, &spans);
        }
        // A block the window holds whole gives the calls counted when it was built
        // (`BlockMeta::calls`); of its rows only the children whose parent is elsewhere are
        // read. Other blocks are read: sorted by trace id, each trace's spans are contiguous
        // within a block, and within a row group (in blocks with parent offsets; a trace that an
        // older block splits between two scans is joined by `resolve_elsewhere`). Each block's
        // row groups are read as a search reads them (`split_scans`), each scan into a graph of
        // its own; the graphs add up in any order.
        let blocks: Vec<&Arc<BlockHandle>> = snap.blocks.iter().filter(|b| b.meta.overlaps(start, end)).collect();
        let mut scans: Vec<(usize, Arc<BlockHandle>, CallsRead)> = Vec::new();
        let mut stored: Vec<(usize, &skein_store::block::BlockCalls)> = Vec::new();
        for (i, &b) in blocks.iter().enumerate() {
            match b.meta.calls.as_ref().filter(|_| b.meta.within(start, end)) {
                Some(calls) => {
                    stored.push((i, calls));
                    if calls.unresolved > 0 {
                        let all = (0..b.meta.row_groups.len()).collect();
                        scans.extend(
                            split_scans(all, self.parallelism)
                                .into_iter()
                                .map(|groups| (i, b.clone(), CallsRead::Unresolved(groups))),
                        );
                    }
                }
                None => scans.extend(
                    split_scans(row_groups_in_window(b, start, end), self.parallelism)
                        .into_iter()
                        .map(|groups| (i, b.clone(), CallsRead::Rows(groups))),
                ),
            }
        }
        let mut parts = futures::stream::iter(scans)
            .map(|(i, b, what)| {
                let scanned = b.clone();
                let read = BlockRead::spawn(async move {
                    let mut part = CallGraph::default();
                    match what {
                        CallsRead::Unresolved(groups) => {
                            for (trace, parent, child) in scanned.unresolved_children(groups).await? {
                                part.unresolved.entry((trace, parent)).or_default().push(child);
                            }
                        }
                        CallsRead::Rows(groups) => {
                            let read = match scanned.stream_parent_links(groups.clone()).await? {
                                Some(rows) => part.add_linked_rows(rows, in_window).await,
                                None => part.add_block_by_ids(&scanned, groups, in_window).await,
                            };
                            read.map_err(|QueryError::Store(e)| e)?;
                        }
                    }
                    Ok(part)
                });
                async move { (i, b, read.join().await) }
            })
            .buffer_unordered(self.parallelism);
        let mut settled = ScansSettled::default();
        while let Some((i, b, part)) = parts.next().await {
            if let Some(part) = settled.scan(i, &b, part)? {
                graph.absorb(part);
            }
        }
        // A block whose unresolved children could not be read gives none of its calls, as
        // when a scan of it fails: the answer says it may be incomplete, and the next query,
        // which leaves a damaged block out, answers the same.
        for (i, calls) in stored {
            if !settled.failed.contains(&i) {
                for (parent, child, n) in &calls.edges {
                    graph.calls(parent, child, *n);
                }
            }
        }
        // Parents in another block, or in memory while their children are in a block: a trace
        // whose services exported at different times is split until compaction merges its
        // blocks, or for good when they were cut far apart.
        graph.resolve_elsewhere(&snap, &blocks, (start, end)).await?;
        observe("dependencies", t);
        Ok(graph
            .edges
            .into_iter()
            .map(|((parent, child), call_count)| Dependency {
                parent,
                child,
                call_count,
            })
            .collect())
    }
}

/// What a dependencies query reads of a block: these row groups' rows, or only their
/// children whose parent is elsewhere (the block's meta has its other calls).
enum CallsRead {
    Rows(Vec<usize>),
    Unresolved(Vec<usize>),
}

/// Service → service call counts from spans and their parents.
#[derive(Default)]
struct CallGraph {
    edges: BTreeMap<(String, String), u64>,
    /// Children whose parent was not among the spans read with them: (trace, parent id) →
    /// the children's services.
    unresolved: HashMap<(TraceId, SpanId), Vec<String>>,
}

impl CallGraph {
    /// Adds the calls and unresolved children of `part`, a graph of other spans.
    fn absorb(&mut self, part: CallGraph) {
        for (edge, n) in part.edges {
            *self.edges.entry(edge).or_default() += n;
        }
        for (parent, children) in part.unresolved {
            self.unresolved.entry(parent).or_default().extend(children);
        }
    }

    /// The spans of one trace read from one place (memory, or a block): (id, parent, service).
    fn add_trace(&mut self, trace: TraceId, spans: &[(SpanId, SpanId, &str)]) {
        let services: HashMap<SpanId, &str> = spans.iter().map(|(id, _, svc)| (*id, *svc)).collect();
        for (_, parent, svc) in spans {
            if *parent == [0; 8] {
                continue;
            }
            match services.get(parent) {
                Some(p) => self.call(p, svc),
                None => self
                    .unresolved
                    .entry((trace, *parent))
                    .or_default()
                    .push(svc.to_string()),
            }
        }
    }

    /// A block's rows in order, parents as row offsets (`BlockHandle::stream_parent_links`):
    /// a parent in the same trace and block is found by position, with no id lookup and no
    /// string per row; only a parent stored elsewhere is left for `resolve`.
    async fn add_linked_rows(
        &mut self,
        rows: impl futures::Stream<Item = Result<RecordBatch, StoreError>>,
        in_window: impl Fn(u64) -> bool,
    ) -> Result<(), QueryError> {
        let mut services: Vec<String> = Vec::new();
        let mut service_ids: HashMap<String, u32> = HashMap::new();
        let mut calls: HashMap<(u32, u32), u64> = HashMap::new();
        // The current trace's rows so far: (service, started in the window).
        let mut trace: Option<TraceId> = None;
        let mut earlier: Vec<(u32, bool)> = Vec::new();
        let mut rows = std::pin::pin!(rows);
        while let Some(batch) = rows.next().await {
            let batch = batch?;
            let tid = fixed_col(&batch, schema::TRACE_ID)?;
            let stored_parent = fixed_col(&batch, schema::PARENT_SPAN_ID)?;
            let offsets = u32_col(&batch, schema::PARENT_OFFSET)?;
            let st = i64_col(&batch, schema::START)?;
            let (keys, names) = dictionary_col(&batch, schema::SERVICE)?;
            // This batch's dictionary, as ids shared by the whole block.
            let ids: Vec<u32> = names
                .iter()
                .map(|name| {
                    let name = name.unwrap_or_default();
                    *service_ids.entry(name.to_string()).or_insert_with(|| {
                        services.push(name.to_string());
                        services.len() as u32 - 1
                    })
                })
                .collect();
            for i in 0..batch.num_rows() {
                let t: TraceId = tid.value(i).try_into().unwrap_or([0; 16]);
                if trace != Some(t) {
                    trace = Some(t);
                    earlier.clear();
                }
                let service = ids[keys.value(i) as usize];
                let here = in_window(st.value(i) as u64);
                let offset = offsets.value(i) as usize;
                if here && offset > 0 {
                    let &(parent, parent_here) = earlier
                        .len()
                        .checked_sub(offset)
                        .and_then(|at| earlier.get(at))
                        .ok_or_else(|| StoreError::corrupt(format!("parent offset {offset} before its trace")))?;
                    if parent_here && parent != service {
                        *calls.entry((parent, service)).or_default() += 1;
                    }
                } else if here && !stored_parent.is_null(i) && stored_parent.value(i) != [0; 8] {
                    let parent: SpanId = stored_parent.value(i).try_into().unwrap_or([0; 8]);
                    self.unresolved
                        .entry((t, parent))
                        .or_default()
                        .push(services[service as usize].clone());
                }
                earlier.push((service, here));
            }
        }
        for ((parent, child), n) in calls {
            self.calls(&services[parent as usize], &services[child as usize], n);
        }
        Ok(())
    }

    /// Like `add_linked_rows`, for blocks without parent offsets (format 1): groups each
    /// trace's rows and looks parents up by id.
    async fn add_block_by_ids(
        &mut self,
        b: &BlockHandle,
        groups: Vec<usize>,
        in_window: impl Fn(u64) -> bool,
    ) -> Result<(), QueryError> {
        let cols = [
            schema::TRACE_ID,
            schema::SPAN_ID,
            schema::PARENT_SPAN_ID,
            schema::SERVICE,
            schema::START,
        ];
        let mut current: Option<TraceId> = None;
        let mut spans: Vec<(SpanId, SpanId, String)> = Vec::new();
        let mut add = |trace: Option<TraceId>, spans: &mut Vec<(SpanId, SpanId, String)>| {
            let refs: Vec<(SpanId, SpanId, &str)> = spans.iter().map(|(a, b, c)| (*a, *b, c.as_str())).collect();
            if let Some(trace) = trace {
                self.add_trace(trace, &refs);
            }
            spans.clear();
        };
        for batch in b.scan(&cols, Some(groups)).await? {
            let tid = fixed_col(&batch, schema::TRACE_ID)?;
            let sid = fixed_col(&batch, schema::SPAN_ID)?;
            let pid = fixed_col(&batch, schema::PARENT_SPAN_ID)?;
            let svc = string_col(&batch, schema::SERVICE)?;
            let st = i64_col(&batch, schema::START)?;
            for i in 0..batch.num_rows() {
                let t: TraceId = tid.value(i).try_into().unwrap_or([0; 16]);
                if current != Some(t) {
                    add(current, &mut spans);
                    current = Some(t);
                }
                if in_window(st.value(i) as u64) {
                    spans.push((
                        sid.value(i).try_into().unwrap_or([0; 8]),
                        pid.value(i).try_into().unwrap_or([0; 8]),
                        svc.value(i).to_string(),
                    ));
                }
            }
        }
        add(current, &mut spans);
        Ok(())
    }

    /// Finds the parents of the unresolved children by id: in memory, then in the blocks
    /// whose bloom admits one of their traces, only the row groups whose trace-id range holds
    /// one.
    async fn resolve_elsewhere(
        &mut self,
        snap: &skein_store::Snapshot,
        blocks: &[&Arc<BlockHandle>],
        (start, end): (u64, u64),
    ) -> Result<(), QueryError> {
        let in_window = |s: u64| s >= start && s <= end;
        if self.unresolved.is_empty() {
            return Ok(());
        }
        for s in snap.heads.iter().flat_map(|h| h.spans()) {
            if in_window(s.start_unix_nano) {
                self.resolve(s.trace_id, s.span_id, s.service_name());
            }
        }
        let mut wanted: Vec<TraceId> = self.unresolved.keys().map(|(t, _)| *t).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let cols = [schema::TRACE_ID, schema::SPAN_ID, schema::SERVICE, schema::START];
        for b in blocks {
            if self.unresolved.is_empty() {
                break;
            }
            if !wanted.iter().any(|t| b.bloom.may_contain(t)) {
                continue;
            }
            let groups: Vec<usize> = row_groups_in_window(b, start, end)
                .into_iter()
                .filter(|&g| {
                    let g = &b.meta.row_groups[g];
                    let i = wanted.partition_point(|t| *t < g.min_trace);
                    wanted.get(i).is_some_and(|t| *t <= g.max_trace)
                })
                .collect();
            let Some(batches) = b.settle(b.scan(&cols, Some(groups)).await)? else {
                continue;
            };
            for batch in batches {
                let tid = fixed_col(&batch, schema::TRACE_ID)?;
                let sid = fixed_col(&batch, schema::SPAN_ID)?;
                let svc = string_col(&batch, schema::SERVICE)?;
                let st = i64_col(&batch, schema::START)?;
                for i in 0..batch.num_rows() {
                    if in_window(st.value(i) as u64) {
                        self.resolve(
                            tid.value(i).try_into().unwrap_or([0; 16]),
                            sid.value(i).try_into().unwrap_or([0; 8]),
                            svc.value(i),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// A span read anywhere: the parent of the unresolved children that name it (once).
    fn resolve(&mut self, trace: TraceId, span: SpanId, service: &str) {
        if let Some(children) = self.unresolved.remove(&(trace, span)) {
            for child in children {
                self.call(service, &child);
            }
        }
    }

    fn call(&mut self, parent: &str, child: &str) {
        self.calls(parent, child, 1);
    }

    fn calls(&mut self, parent: &str, child: &str, n: u64) {
        if parent != child {
            *self.edges.entry((parent.to_string(), child.to_string())).or_default() += n;
        }
    }
}

fn observe(kind: &'static str, t: std::time::Instant) {
    query_duration(kind).observe(t.elapsed().as_secs_f64());
}

fn query_duration(kind: &'static str) -> metrics::Histogram {
    metrics::histogram(
        "skein_query_duration_seconds",
        "Query latency by kind",
        &[("kind", kind)],
    )
}

/// What a query asked for, to tell whether a damaged block may have held part of the answer.
#[derive(Debug, Clone, Copy)]
pub enum Asked<'a> {
    Trace(&'a TraceId),
    Search(&'a TraceQuery),
    /// Spans starting in this window (unix ns), as dependencies read them.
    Window(u64, u64),
}

impl QueryEngine {
    /// Ids of the blocks found damaged (skipped by every read since), or whose last read failed
    /// (`BlockHandle::settle`), that may hold spans of what was asked: the answer may lack those
    /// spans, and the response should say so. A block whose meta could not be read at start may
    /// hold anything.
    pub fn damaged_blocks_for(&self, asked: Asked<'_>) -> Vec<String> {
        let mut ids: Vec<String> = self
            .store
            .unreadable_blocks()
            .iter()
            .filter(|b| match asked {
                Asked::Trace(id) => b.may_contain(id),
                Asked::Search(q) => block_may_match(&b.meta, q),
                Asked::Window(start, end) => b.meta.overlaps(start, end),
            })
            .map(|b| b.meta.id.clone())
            .collect();
        ids.extend(self.store.unloadable_blocks().iter().cloned());
        ids
    }
}

fn block_may_match(meta: &skein_store::block::BlockMeta, q: &TraceQuery) -> bool {
    let (lo, hi) = q.window();
    if !meta.overlaps(lo, hi) {
        return false;
    }
    // A capped operation list (`BlockMeta::operations_capped`) cannot rule an operation out.
    if let Some(svc) = &q.service {
        match meta.services.get(svc) {
            // An unlisted service may be among those a capped list left out, with any operation.
            None if meta.services_capped => {}
            None => return false,
            Some(ops) => {
                if let Some(op) = &q.operation {
                    if !meta.operations_capped.contains(svc)
                        && !ops
                            .iter()
                            .any(|(n, k)| n == op && q.span_kind.is_none_or(|want| want as u8 == *k))
                    {
                        return false;
                    }
                }
            }
        }
    } else if let Some(op) = &q.operation {
        if meta.operations_capped.is_empty()
            && !meta.services_capped
            && !meta.services.values().any(|ops| ops.iter().any(|(n, _)| n == op))
        {
            return false;
        }
    }
    true
}

fn row_groups_in_window(b: &BlockHandle, lo: u64, hi: u64) -> Vec<usize> {
    b.meta
        .row_groups
        .iter()
        .enumerate()
        .filter(|(_, g)| b.meta.group_overlaps(g, lo, hi))
        .map(|(i, _)| i)
        .collect()
}

/// `groups` (a block's row groups) split into at most `n` scans of neighbouring groups, each
/// of at most ⌈len / n⌉ groups. Always one scan at least, empty when `groups` is: a search
/// checks its early stop after each block's last scan.
fn split_scans(groups: Vec<usize>, n: usize) -> Vec<Vec<usize>> {
    if groups.is_empty() {
        return vec![Vec::new()];
    }
    groups
        .chunks(groups.len().div_ceil(n.max(1)))
        .map(<[usize]>::to_vec)
        .collect()
}

fn fixed_col<'a>(b: &'a RecordBatch, n: &str) -> Result<&'a arrow_array::FixedSizeBinaryArray, StoreError> {
    downcast(b, n)
}
fn string_col<'a>(b: &'a RecordBatch, n: &str) -> Result<&'a StringArray, StoreError> {
    downcast(b, n)
}
fn u32_col<'a>(b: &'a RecordBatch, n: &str) -> Result<&'a arrow_array::UInt32Array, StoreError> {
    downcast(b, n)
}

/// A dictionary-encoded string column: each row's key, and the values.
fn dictionary_col<'a>(
    b: &'a RecordBatch,
    n: &str,
) -> Result<(&'a arrow_array::Int32Array, &'a StringArray), StoreError> {
    let dict: &arrow_array::DictionaryArray<arrow_array::types::Int32Type> = downcast(b, n)?;
    let values = dict
        .values()
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| StoreError::corrupt(format!("column {n} is not a dictionary of strings")))?;
    Ok((dict.keys(), values))
}

fn i64_col<'a>(b: &'a RecordBatch, n: &str) -> Result<&'a Int64Array, StoreError> {
    downcast(b, n)
}
fn downcast<'a, T: 'static>(b: &'a RecordBatch, n: &str) -> Result<&'a T, StoreError> {
    b.column_by_name(n)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| StoreError::corrupt(format!("column {n} missing or of the wrong type")))
}

/// How many block reads run at once: one per core.
fn read_parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// A read on its own task, so reads of several blocks use every core; cancelled when dropped
/// unjoined (a search that stops early).
struct BlockRead<T> {
    task: tokio::task::JoinHandle<Result<T, StoreError>>,
    /// The block read, when one that cannot be read should be skipped (`BlockHandle::settle`).
    block: Option<Arc<BlockHandle>>,
}

impl<T: Send + Default + 'static> BlockRead<T> {
    fn spawn(read: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static) -> BlockRead<T> {
        BlockRead {
            task: tokio::spawn(read),
            block: None,
        }
    }

    /// A read of `block` that yields nothing, not an error, if it finds the block damaged.
    fn of_block(
        block: Arc<BlockHandle>,
        read: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> BlockRead<T> {
        BlockRead {
            task: tokio::spawn(read),
            block: Some(block),
        }
    }

    async fn join(mut self) -> Result<T, StoreError> {
        let r = (&mut self.task)
            .await
            .map_err(|e| StoreError::Internal(format!("block read failed: {e}")))?;
        match &self.block {
            Some(b) => b.settle(r).map(Option::unwrap_or_default),
            None => r,
        }
    }
}

impl<T> Drop for BlockRead<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Scans row groups `groups` of one block for spans that match and returns their traces, each
/// with the start of its newest matching span: with a limit, only the `limit` newest (ties by
/// trace id). That keeps the search's overall `limit` newest exact: each of them is among the
/// newest of the scan holding its newest match, and a trace split between scans (blocks
/// without parent offsets) keeps the newest start any of them found. Only the columns the
/// conditions need are decoded for every row, starts just for the rows that match, and trace
/// ids just for the traces returned: rows are mapped to traces by the block's trace rows
/// (`BlockHandle::trace_rows`, read once per block into `trace_rows`), not by decoding every
/// matching row's trace id (which doubled the time of a search for a common value).
async fn search_block(
    b: &BlockHandle,
    q: &TraceQuery,
    groups: Vec<usize>,
    trace_rows: &TraceRows,
) -> Result<HashMap<TraceId, u64>, StoreError> {
    let (lo, hi) = q.window();
    // Row groups whose spans all start inside the window need no start-time test, so their
    // filter does not decode the start column for every row (a quarter of a scan's CPU).
    // Only groups at the window's edges do, and groups whose range was capped
    // (`BlockMeta::times_capped_at`): they may hold spans stamped past it (`ahead`).
    let capped = b.meta.times_capped_at();
    let (inside, edges): (Vec<usize>, Vec<usize>) = groups.into_iter().partition(|&g| {
        let g = &b.meta.row_groups[g];
        lo <= g.min_start && g.max_end <= hi && g.max_end < capped
    });
    if inside.is_empty() && edges.is_empty() {
        return Ok(HashMap::new());
    }
    let mut hits = if b.meta.summaries_by_row() {
        BlockHits::ByRow {
            firsts: Arc::new(Vec::new()),
            at: 0,
            found: Vec::new(),
        }
    } else {
        BlockHits::ById(HashMap::new())
    };
    for (groups, window) in [(inside, None), (edges, Some((lo, hi)))] {
        if groups.is_empty() {
            continue;
        }
        let mut matcher = RowMatcher::new(&b.meta, q, window);
        let filter = matcher.columns();
        let filter: Vec<&str> = filter.iter().map(String::as_str).collect();
        let mut stream = b
            .scan_where(&filter, move |batch| matcher.select(&batch), &hits.output(), groups)
            .await?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            // The trace list is read once a row matches: a block without any needs none.
            if let BlockHits::ByRow { firsts, .. } = &mut hits {
                if firsts.is_empty() && batch.num_rows() > 0 {
                    *firsts = trace_rows
                        .get_or_try_init(|| async { b.trace_rows().await.map(Arc::new) })
                        .await?
                        .clone();
                }
            }
            hits.add(&batch)?;
        }
    }
    hits.newest(b, q.limit).await
}

/// Settles the results of one query's block scans (`BlockHandle::settle`), blocks named by
/// their place in the query's list. Once a scan of a block failed in this query, a later one
/// that succeeds is taken as it is, without marking the block readable again: the answer
/// still lacks what the failed scan held, and must say it may be incomplete
/// (`QueryEngine::damaged_blocks_for`).
#[derive(Default)]
struct ScansSettled {
    failed: HashSet<usize>,
}

impl ScansSettled {
    fn scan<T>(&mut self, block: usize, b: &BlockHandle, r: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
        if r.is_ok() && self.failed.contains(&block) {
            return Ok(r.ok());
        }
        let settled = b.settle(r)?;
        if settled.is_none() {
            self.failed.insert(block);
        }
        Ok(settled)
    }
}

/// A block's `BlockHandle::trace_rows`, read once by whichever of its scans first needs it.
type TraceRows = tokio::sync::OnceCell<Arc<Vec<u64>>>;

/// The matching traces of one block, each with the start of its newest matching span.
enum BlockHits {
    /// By trace, in the block's order: `firsts` is where each trace's rows start, then the
    /// row count (`BlockHandle::trace_rows`; empty until a row matches); `at` the trace of the
    /// last row seen. Matching
    /// rows come in row order within each scan, so a trace's rows come one after another and
    /// `found` takes a trace when its first matching row comes.
    ByRow {
        firsts: Arc<Vec<u64>>,
        at: usize,
        found: Vec<(usize, u64)>,
    },
    /// By trace id, decoded for every matching row: blocks whose summaries keep trace ids
    /// (formats 1 to 3) give no trace rows.
    ById(HashMap<TraceId, u64>),
}

impl BlockHits {
    /// The columns `add` reads.
    fn output(&self) -> [&'static str; 2] {
        match self {
            BlockHits::ByRow { .. } => [schema::START, schema::ROW_NUMBER],
            BlockHits::ById(_) => [schema::START, schema::TRACE_ID],
        }
    }

    fn add(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        let starts = i64_col(batch, schema::START)?;
        match self {
            BlockHits::ByRow { firsts, at, found } => {
                let rows = i64_col(batch, schema::ROW_NUMBER)?;
                for (&row, &start) in rows.values().iter().zip(starts.values()) {
                    let (row, start) = (row as u64, start as u64);
                    // Forward to the row's trace: a binary search for a scan's first row
                    // (its groups may start anywhere in the block), then a walk.
                    if row < firsts[*at] || found.is_empty() {
                        *at = firsts.partition_point(|&first| first <= row).saturating_sub(1);
                    }
                    while firsts.get(*at + 1).is_some_and(|&next| next <= row) {
                        *at += 1;
                    }
                    // `trace_rows` checked the total against the file: this is the reader's.
                    if *at + 1 >= firsts.len() {
                        return Err(StoreError::Internal(format!(
                            "row {row} is past the block's {} traces",
                            firsts.len().saturating_sub(1)
                        )));
                    }
                    match found.last_mut() {
                        Some((trace, newest)) if *trace == *at => *newest = (*newest).max(start),
                        _ => found.push((*at, start)),
                    }
                }
            }
            BlockHits::ById(newest) => {
                let ids = fixed_col(batch, schema::TRACE_ID)?;
                for (i, &start) in starts.values().iter().enumerate() {
                    let id: TraceId = ids.value(i).try_into().unwrap_or([0; 16]);
                    let newest = newest.entry(id).or_insert(start as u64);
                    *newest = (*newest).max(start as u64);
                }
            }
        }
        Ok(())
    }

    /// The traces found, only the `limit` newest when `limit` is set, by trace id.
    async fn newest(self, b: &BlockHandle, limit: usize) -> Result<HashMap<TraceId, u64>, StoreError> {
        match self {
            BlockHits::ByRow { firsts, mut found, .. } => {
                // Row groups never split a trace, so each trace was taken once; made sure of.
                found.sort_unstable_by_key(|&(trace, _)| trace);
                found.dedup_by(|later, kept| {
                    if later.0 != kept.0 {
                        return false;
                    }
                    kept.1 = kept.1.max(later.1);
                    true
                });
                // Traces are in trace id order: ties by position are ties by id.
                keep_newest(&mut found, limit);
                found.sort_unstable_by_key(|&(trace, _)| trace);
                let rows: Vec<u64> = found.iter().map(|&(trace, _)| firsts[trace]).collect();
                let ids = b.trace_ids_at(&rows).await?;
                Ok(ids.into_iter().zip(found).map(|(id, (_, start))| (id, start)).collect())
            }
            BlockHits::ById(newest) => {
                let mut found: Vec<(TraceId, u64)> = newest.into_iter().collect();
                keep_newest(&mut found, limit);
                Ok(found.into_iter().collect())
            }
        }
    }
}

/// Keeps the `limit` newest of `found` (all when 0), ties by key, in no particular order.
fn keep_newest<K: Ord + Copy>(found: &mut Vec<(K, u64)>, limit: usize) {
    if limit > 0 && found.len() > limit {
        found.select_nth_unstable_by(limit - 1, |a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        found.truncate(limit);
    }
}

/// A search's span-level conditions, prepared for one block's columns.
struct RowMatcher {
    /// Span start bounds, or `None` where every row is known to start inside the window.
    window: Option<(u64, u64)>,
    min_duration: Option<u64>,
    max_duration: Option<u64>,
    service: Option<String>,
    operation: Option<String>,
    kind: Option<u8>,
    error: Option<bool>,
    attrs: Vec<AttrCondition>,
    /// Whether a queried key may be a resource attribute in this block.
    resource: bool,
    /// The resource dictionary of the last batch, and for each attribute condition whether
    /// each of its resources meets it, by dictionary key, filled as rows need it. The batches
    /// of one row group share their dictionary (the same `Arc`, which this holds on to), so
    /// each resource is decoded once per row group instead of once per batch.
    resource_dictionary: Option<ArrayRef>,
    resource_hits: Vec<Vec<Option<bool>>>,
}

/// `key = value` on a span: met by the key's typed column, the generic column or the resource.
struct AttrCondition {
    key: String,
    value: String,
    /// `error=true` is also met by error status.
    error_status: bool,
    /// The key's own column in this block (hot or dedicated), with the value parsed for it.
    typed: Option<(String, TypedValue)>,
    /// Whether the generic column may hold the key in this block.
    generic: bool,
}

/// A queried value parsed once for a typed column; `Unparsable` never matches the column.
enum TypedValue {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Unparsable,
}

impl TypedValue {
    fn parse(ty: HotType, want: &str) -> TypedValue {
        let parsed = match ty {
            HotType::Str => Some(TypedValue::Str(want.to_string())),
            HotType::Int => want.parse().ok().map(TypedValue::Int),
            HotType::Double => want.parse().ok().map(TypedValue::Double),
            HotType::Bool => want.parse().ok().map(TypedValue::Bool),
        };
        parsed.unwrap_or(TypedValue::Unparsable)
    }

    /// This value's test for one batch's column (never met by a column of another type).
    fn against<'a>(&'a self, col: &'a dyn Array) -> ColumnEq<'a> {
        let any = col.as_any();
        let found = match self {
            TypedValue::Str(w) => StrEq::new(col, w).map(ColumnEq::Str),
            TypedValue::Int(w) => any.downcast_ref::<Int64Array>().map(|a| ColumnEq::Int(a, *w)),
            TypedValue::Double(w) => any
                .downcast_ref::<arrow_array::Float64Array>()
                .map(|a| ColumnEq::Double(a, *w)),
            TypedValue::Bool(w) => any.downcast_ref::<BooleanArray>().map(|a| ColumnEq::Bool(a, *w)),
            TypedValue::Unparsable => None,
        };
        found.unwrap_or(ColumnEq::Never)
    }
}

/// A typed value's test against one batch's column, downcast once per batch.
enum ColumnEq<'a> {
    Str(StrEq<'a>),
    Int(&'a Int64Array, i64),
    Double(&'a arrow_array::Float64Array, f64),
    Bool(&'a BooleanArray, bool),
    Never,
}

impl ColumnEq<'_> {
    /// The rows of a batch of `n` holding the value (never nulls).
    fn bits(&self, n: usize) -> BooleanBuffer {
        let valid = |a: &dyn Array, bits| without_nulls(bits, a.nulls());
        match self {
            ColumnEq::Str(c) => c.bits(n),
            ColumnEq::Int(c, w) => valid(c, BooleanBuffer::collect_bool(n, |i| c.values()[i] == *w)),
            ColumnEq::Double(c, w) => valid(c, BooleanBuffer::collect_bool(n, |i| c.values()[i] == *w)),
            ColumnEq::Bool(c, w) => valid(c, if *w { c.values().clone() } else { !c.values() }),
            ColumnEq::Never => BooleanBuffer::new_unset(n),
        }
    }
}

/// `bits` with the rows `nulls` marks null cleared.
fn without_nulls(bits: BooleanBuffer, nulls: Option<&arrow_buffer::NullBuffer>) -> BooleanBuffer {
    match nulls {
        Some(nulls) => &bits & nulls.inner(),
        None => bits,
    }
}

/// Rows of a string column equal to a wanted value. Few-valued columns arrive as dictionary
/// arrays: the wanted value is looked up once among the batch's dictionary values, and each
/// row compares its index, instead of a string copied out of the dictionary.
enum StrEq<'a> {
    Dictionary {
        keys: &'a arrow_array::Int32Array,
        hit: Vec<bool>,
    },
    Plain {
        values: &'a StringArray,
        want: &'a str,
    },
}

impl<'a> StrEq<'a> {
    fn new(col: &'a dyn Array, want: &'a str) -> Option<StrEq<'a>> {
        let any = col.as_any();
        if let Some(d) = any.downcast_ref::<arrow_array::Int32DictionaryArray>() {
            let values = d.values().as_any().downcast_ref::<StringArray>()?;
            let hit = values.iter().map(|v| v == Some(want)).collect();
            return Some(StrEq::Dictionary { keys: d.keys(), hit });
        }
        any.downcast_ref::<StringArray>()
            .map(|values| StrEq::Plain { values, want })
    }

    /// The rows of a batch of `n` equal to the wanted value (never nulls).
    fn bits(&self, n: usize) -> BooleanBuffer {
        let (bits, nulls) = match self {
            StrEq::Dictionary { keys, hit } => {
                let k = keys.values();
                // A null row's key may be anything: `get` keeps it in bounds, `nulls` drops it.
                let bits = BooleanBuffer::collect_bool(n, |i| hit.get(k[i] as usize).copied().unwrap_or(false));
                (bits, keys.nulls())
            }
            StrEq::Plain { values, want } => (
                BooleanBuffer::collect_bool(n, |i| values.value(i) == *want),
                values.nulls(),
            ),
        };
        without_nulls(bits, nulls)
    }

    /// No row of the batch can match (a dictionary without the value).
    fn none(&self) -> bool {
        matches!(self, StrEq::Dictionary { hit, .. } if !hit.contains(&true))
    }
}

impl RowMatcher {
    fn new(meta: &skein_store::block::BlockMeta, q: &TraceQuery, window: Option<(u64, u64)>) -> RowMatcher {
        let attrs = q
            .attributes
            .iter()
            .map(|(k, v)| {
                let typed = schema::hot_index(k)
                    .map(|h| (HOT[h].0.to_string(), HOT[h].2))
                    .or_else(|| meta.dedicated.iter().find(|d| &d.key == k).map(|d| (d.column(), d.ty)))
                    .map(|(col, ty)| (col, TypedValue::parse(ty, v)));
                AttrCondition {
                    key: k.clone(),
                    value: v.clone(),
                    error_status: k == "error" && v == "true",
                    typed,
                    generic: meta.generic_may_contain(k),
                }
            })
            .collect();
        RowMatcher {
            window,
            min_duration: q.min_duration_nano,
            max_duration: q.max_duration_nano,
            service: q.service.clone(),
            operation: q.operation.clone(),
            kind: q.span_kind.map(|k| k as u8),
            error: q.error,
            attrs,
            resource: q.attributes.iter().any(|(k, _)| meta.resource_may_contain(k)),
            resource_dictionary: None,
            resource_hits: vec![Vec::new(); q.attributes.len()],
        }
    }

    /// The columns `select` reads.
    fn columns(&self) -> Vec<String> {
        let mut cols = Vec::new();
        let mut add = |c: &str| {
            if !cols.iter().any(|have| have == c) {
                cols.push(c.to_string());
            }
        };
        if self.window.is_some() {
            add(schema::START);
        }
        if self.min_duration.is_some() || self.max_duration.is_some() {
            add(schema::DURATION);
        }
        if self.service.is_some() {
            add(schema::SERVICE);
        }
        if self.operation.is_some() {
            add(schema::NAME);
        }
        if self.kind.is_some() {
            add(schema::KIND);
        }
        if self.error.is_some() || self.attrs.iter().any(|a| a.error_status) {
            add(schema::STATUS_CODE);
        }
        // The generic column is the widest: read it only for keys that can be in it.
        if self.attrs.iter().any(|a| a.generic) {
            add(schema::ATTRS);
        }
        // Resources are dictionary pages on disk but one value per row once decoded: read
        // them only when a queried key is a resource key in this block.
        if self.resource {
            add(schema::RESOURCE);
        }
        for a in &self.attrs {
            if let Some((col, _)) = &a.typed {
                add(col);
            }
        }
        // A row filter reads at least one column, even when it keeps every row.
        if cols.is_empty() {
            cols.push(schema::START.to_string());
        }
        cols
    }

    /// Which rows of a batch of `columns()` match every condition. Each condition is tested
    /// a column at a time into a bitmap, and the bitmaps are and-ed; only rows still in the
    /// running are tested against the generic column and resources, which need decoding.
    fn select(&mut self, batch: &RecordBatch) -> Result<BooleanArray, arrow_schema::ArrowError> {
        fn get<'a, T: 'static>(b: &'a RecordBatch, n: &str) -> Result<&'a T, arrow_schema::ArrowError> {
            downcast(b, n).map_err(|e| arrow_schema::ArrowError::SchemaError(e.to_string()))
        }
        let n = batch.num_rows();
        let none = || Ok(BooleanArray::new(BooleanBuffer::new_unset(n), None));
        let mut keep = BooleanBuffer::new_set(n);
        if let Some((lo, hi)) = self.window {
            let start = get::<Int64Array>(batch, schema::START)?.values();
            keep = &keep & &BooleanBuffer::collect_bool(n, |i| (lo..=hi).contains(&(start[i] as u64)));
        }
        if self.min_duration.is_some() || self.max_duration.is_some() {
            let (lo, hi) = (self.min_duration.unwrap_or(0), self.max_duration.unwrap_or(u64::MAX));
            let duration = get::<Int64Array>(batch, schema::DURATION)?.values();
            keep = &keep & &BooleanBuffer::collect_bool(n, |i| (lo..=hi).contains(&(duration[i] as u64)));
        }
        for (column, want) in [(schema::SERVICE, &self.service), (schema::NAME, &self.operation)] {
            let Some(want) = want else { continue };
            let col = batch
                .column_by_name(column)
                .ok_or_else(|| arrow_schema::ArrowError::SchemaError(format!("no column {column}")))?;
            let eq = StrEq::new(col.as_ref(), want)
                .ok_or_else(|| arrow_schema::ArrowError::SchemaError(format!("column {column} is not a string")))?;
            // A batch whose dictionary lacks the wanted service or name has no match.
            if eq.none() {
                return none();
            }
            keep = &keep & &eq.bits(n);
        }
        if let Some(want) = self.kind {
            let kind = get::<arrow_array::UInt8Array>(batch, schema::KIND)?.values();
            keep = &keep & &BooleanBuffer::collect_bool(n, |i| kind[i] == want);
        }
        let errors = batch
            .column_by_name(schema::STATUS_CODE)
            .and_then(|c| c.as_any().downcast_ref::<arrow_array::UInt8Array>())
            .map(|c| BooleanBuffer::collect_bool(n, |i| c.value(i) == StatusCode::Error as u8));
        match (self.error, &errors) {
            (Some(true), Some(e)) => keep = &keep & e,
            (Some(false), Some(e)) => keep = &keep & &!e,
            (Some(true), None) => return none(),
            _ => {}
        }
        let generic = batch
            .column_by_name(schema::ATTRS)
            .and_then(|c| c.as_any().downcast_ref::<arrow_array::BinaryArray>());
        let resource = SharedBytes::column(batch, schema::RESOURCE)
            .map_err(|e| arrow_schema::ArrowError::SchemaError(e.to_string()))?;
        let dictionary = resource.as_ref().map(SharedBytes::dictionary);
        let same = matches!((&self.resource_dictionary, dictionary), (Some(seen), Some(now)) if Arc::ptr_eq(seen, now));
        if !same {
            self.resource_dictionary = dictionary.cloned();
            for hits in &mut self.resource_hits {
                hits.clear();
                hits.resize(dictionary.map_or(0, |d| d.len()), None);
            }
        }
        // A row's generic attributes, decoded once for all the conditions that test them
        // (kept only when more than one may).
        let mut decoded: Vec<Option<Vec<KeyValue>>> = match self.attrs.iter().filter(|a| a.generic).count() {
            0 | 1 => Vec::new(),
            _ => vec![None; n],
        };
        for (a, hits) in self.attrs.iter().zip(&mut self.resource_hits) {
            if keep.count_set_bits() == 0 {
                break;
            }
            // The key's typed column, then error status for `error=true`; a key without a
            // typed column here never matches by it.
            let mut hit = a
                .typed
                .as_ref()
                .and_then(|(col, want)| batch.column_by_name(col).map(|c| want.against(c.as_ref()).bits(n)))
                .unwrap_or_else(|| BooleanBuffer::new_unset(n));
            if let (true, Some(e)) = (a.error_status, &errors) {
                hit = &hit | e;
            }
            // Each distinct resource (a dictionary key) is decoded and matched once per
            // dictionary. Where the dictionary is smaller than the rows left to test, all of
            // it is matched first: each row then looks its answer up, and none does when no
            // resource matches. A bigger one (a chunk that fell back to plain values brings
            // a dictionary per batch) is matched only for those rows.
            if let Some(r) = &resource {
                // A key past the dictionary (a damaged page; the reader does not check keys)
                // matches nothing.
                let mut holds = |k: usize| {
                    let Some(h) = hits.get_mut(k) else { return false };
                    *h.get_or_insert_with(|| {
                        let attrs = <pb::resource::v1::Resource as prost::Message>::decode(r.message(k))
                            .map(|r| proto::resource_from(r).attributes)
                            .unwrap_or_default();
                        attr_matches(&attrs, &a.key, &a.value)
                    })
                };
                let open = &keep & &!&hit;
                if r.distinct() <= open.count_set_bits() {
                    let answers: Vec<bool> = (0..r.distinct()).map(&mut holds).collect();
                    if answers.contains(&true) {
                        hit =
                            &hit | &BooleanBuffer::collect_bool(n, |i| answers.get(r.key(i)).copied().unwrap_or(false));
                    }
                } else {
                    let mut found = BooleanBufferBuilder::new(n);
                    found.append_n(n, false);
                    for i in open.set_indices() {
                        if holds(r.key(i)) {
                            found.set_bit(i, true);
                        }
                    }
                    hit = &hit | &found.finish();
                }
            }
            // A key whose value sits in its typed column is in the generic column only when a
            // value had another type: decode that only when the block lists the key.
            if a.generic {
                let mut found = BooleanBufferBuilder::new(n);
                found.append_n(n, false);
                for i in (&keep & &!&hit).set_indices() {
                    let decode = || {
                        generic
                            .and_then(|c| <pb::common::v1::KeyValueList as prost::Message>::decode(c.value(i)).ok())
                            .map(|l| proto::attrs_from(l.values))
                            .unwrap_or_default()
                    };
                    let matches = match decoded.get_mut(i) {
                        Some(row) => attr_matches(row.get_or_insert_with(decode), &a.key, &a.value),
                        None => attr_matches(&decode(), &a.key, &a.value),
                    };
                    if matches {
                        found.set_bit(i, true);
                    }
                }
                hit = &hit | &found.finish();
            }
            keep = &keep & &hit;
        }
        Ok(BooleanArray::new(keep, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One scan of a block that cannot be reached leaves the block failing for the rest of
    /// the query, whatever its other scans find; the next query's read clears it.
    #[tokio::test]
    async fn a_failed_scan_keeps_its_block_failing_for_the_query() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), skein_store::StoreConfig::default())
            .await
            .unwrap();
        let span = Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            name: "op".into(),
            start_unix_nano: 1,
            end_unix_nano: 2,
            ..Default::default()
        };
        store.append(vec![span]).await.unwrap();
        store.flush().await.unwrap();
        let block = store.snapshot().blocks[0].clone();
        let unreachable = || StoreError::Object("connection reset".into());

        let mut settled = ScansSettled::default();
        assert_eq!(settled.scan(0, &block, Ok(1)).unwrap(), Some(1));
        assert_eq!(settled.scan(0, &block, Err::<u8, _>(unreachable())).unwrap(), None);
        assert!(block.is_failing());
        assert_eq!(
            settled.scan(0, &block, Ok(3)).unwrap(),
            Some(3),
            "what it found is kept"
        );
        assert!(block.is_failing(), "the answer still lacks the failed scan's rows");
        assert!(settled
            .scan(0, &block, Err::<u8, _>(StoreError::Internal("bug".into())))
            .is_err());

        let mut next_query = ScansSettled::default();
        assert_eq!(next_query.scan(0, &block, Ok(5)).unwrap(), Some(5));
        assert!(!block.is_failing(), "read again");
        store.shutdown().await.unwrap();
    }
}
