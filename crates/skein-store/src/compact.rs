//! Compaction (merge small blocks into bigger ones, deduping spans) and retention (drop whole
//! blocks by age and by total size).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, FixedSizeBinaryArray, Int64Array, RecordBatch};
use futures::StreamExt;
use prost::Message;
use skein_model::metrics;
use skein_model::otlp::{pb, proto, wire};
use skein_model::{KeyValue, SpanId, TraceId};

use crate::block::fxhash::FxHashSet;
use crate::block::read::typed_value;
use crate::block::schema::{self, HotType};
use crate::block::write::{AttrSplitter, BlockKeys, TypedBuilder};
use crate::block::{new_block_id, BlockBuilder, BlockHandle, Dedicated, Layout};
use crate::{upload_block, Store, StoreError};

impl Store {
    /// Deletes blocks entirely older than the retention period, then the oldest blocks while
    /// the total size exceeds `retention_max_bytes` (when set). Returns how many were deleted.
    pub async fn enforce_retention(&self, now_unix_nano: u64) -> Result<usize, StoreError> {
        let _guard = self.compaction_lock().lock().await;
        if self.closing() {
            return Ok(0);
        }
        let cfg = self.config();
        let cutoff = now_unix_nano.saturating_sub(crate::saturating_nanos(cfg.retention));
        // Unreadable blocks too: they expire like the rest.
        let mut blocks = self.all_blocks();
        blocks.sort_by_key(|b| (b.meta.retention_time(), b.meta.min_start));
        let mut doomed: Vec<String> = blocks
            .iter()
            .filter(|b| b.meta.retention_time() < cutoff)
            .map(|b| b.meta.id.clone())
            .collect();
        if cfg.retention_max_bytes > 0 {
            let mut total: u64 = blocks
                .iter()
                .filter(|b| !doomed.contains(&b.meta.id))
                .map(|b| b.meta.total_bytes())
                .sum();
            for b in &blocks {
                if total <= cfg.retention_max_bytes {
                    break;
                }
                if !doomed.contains(&b.meta.id) {
                    total -= b.meta.total_bytes();
                    doomed.push(b.meta.id.clone());
                }
            }
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        self.replace_blocks(Vec::new(), &doomed);
        // Held here, a doomed block would not count as unused and would wait for the next wake.
        drop(blocks);
        self.delete_retired().await;
        retention_deleted_blocks().add(doomed.len() as u64);
        tracing::info!(blocks = doomed.len(), "retention deleted blocks");
        Ok(doomed.len())
    }

    /// Picks one group of small blocks, neighbours in time, and merges them. Returns the number
    /// of input blocks merged (0 when nothing was worth compacting).
    pub async fn compact_once(&self) -> Result<usize, StoreError> {
        self.compact(Plan::Any).await
    }

    /// Like `compact_once`, but merges only blocks of one size tier, at least `TIER_GROWTH` of
    /// them: every rewrite of a span then multiplies the size of its block by that much at
    /// least. For a store that blocks keep arriving in; see `plan`.
    pub async fn compact_tiered(&self) -> Result<usize, StoreError> {
        self.compact(Plan::Tiered).await
    }

    async fn compact(&self, how: Plan) -> Result<usize, StoreError> {
        let merged = self.compact_locked(how).await;
        // The lock is released: appends waiting for compaction look again.
        self.inner.room.notify_waiters();
        merged
    }

    async fn compact_locked(&self, how: Plan) -> Result<usize, StoreError> {
        let _guard = self.compaction_lock().lock().await;
        // After shutdown the data directory may belong to another store already.
        if self.closing() {
            return Ok(0);
        }
        let target = self.config().compaction_target_spans;
        let mut small: Vec<Arc<BlockHandle>> = self
            .snapshot()
            .blocks
            .into_iter()
            .filter(|b| b.meta.span_count < target / 2)
            .collect();
        small.sort_by_key(|b| (b.meta.min_start, b.meta.id.clone()));
        let sizes: Vec<u64> = small.iter().map(|b| b.meta.span_count).collect();
        let read_bytes: Vec<u64> = small.iter().map(|b| merge_read_bytes(&b.meta)).collect();
        let group: Vec<Arc<BlockHandle>> = plan(&sizes, &read_bytes, target, how)
            .into_iter()
            .map(|i| small[i].clone())
            .collect();
        if group.len() < 2 {
            return Ok(0);
        }
        let spans: u64 = group.iter().map(|b| b.meta.span_count).sum();
        let started = std::time::Instant::now();
        // The merge is seconds of CPU: run it on a blocking thread of its own, not on a
        // runtime worker the receivers need.
        let merged = {
            let (group, rt, store) = (group.clone(), tokio::runtime::Handle::current(), self.clone());
            let retention = store.config().retention;
            tokio::task::spawn_blocking(move || {
                rt.block_on(merge_blocks(&group, store.backend(), retention, || store.closing()))
            })
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))??
        };
        // Shutdown began during the merge: as above, write nothing more.
        if self.closing() {
            merged.abort(self.backend()).await;
            return Err(StoreError::ShuttingDown);
        }
        let (in_spans, out_spans) = (spans, merged.meta.span_count);
        let handle = Arc::new(upload_block(self.backend(), merged).await?);
        let ids: Vec<String> = group.iter().map(|b| b.meta.id.clone()).collect();
        self.replace_blocks(vec![handle], &ids);
        // The inputs are deleted now unless a query still reads them (not held here).
        drop((small, group));
        self.delete_retired().await;
        compactions().inc();
        compaction_deduped_spans().add(in_spans - out_spans);
        tracing::info!(inputs = ids.len(), spans_in = in_spans, spans_out = out_spans, elapsed = ?started.elapsed(), "compacted blocks");
        Ok(ids.len())
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Plan {
    /// The oldest small blocks, whatever their sizes (tidying a store that is not growing).
    Any,
    /// Only blocks of one size tier.
    Tiered,
}

/// Size ratio between tiers, and the fewest inputs of a tiered merge.
const TIER_GROWTH: u64 = 4;

/// Chooses the inputs of one merge among small blocks given by span count and by the bytes a
/// merge holds to read each (`merge_read_bytes`), oldest first; returns their indexes (fewer
/// than two: nothing to do).
///
/// Merging the oldest small blocks whatever their sizes re-merged the previous output every
/// time while ingest ran: level-0 blocks of ~34,000 spans became 272,000, then 510,000, 748,000,
/// 986,000 — each span rewritten four or five times on its way to a full block. Tiered, a block
/// is merged only with blocks of its own size tier (sizes within `TIER_GROWTH`× of each other),
/// at least `TIER_GROWTH` of them. Level-0 blocks are written with small row groups, so
/// `MAX_INPUTS` of them fit the read budget and a busy ingest's level-0 blocks reach a size
/// that is not merged again in one rewrite.
/// Blocks retention has deleted.
pub(crate) fn compactions() -> metrics::Counter {
    metrics::counter("skein_compactions_total", "Compactions completed", &[])
}

pub(crate) fn compaction_deduped_spans() -> metrics::Counter {
    metrics::counter(
        "skein_compaction_deduped_spans_total",
        "Duplicate spans removed by compaction",
        &[],
    )
}

pub(crate) fn retention_deleted_blocks() -> metrics::Counter {
    metrics::counter(
        "skein_retention_deleted_blocks_total",
        "Blocks deleted by retention",
        &[],
    )
}

fn plan(sizes: &[u64], read_bytes: &[u64], target: u64, how: Plan) -> Vec<usize> {
    let tier = |n: u64| n.max(1).ilog(TIER_GROWTH);
    let mut tiers: Vec<u32> = sizes.iter().map(|&n| tier(n)).collect();
    tiers.sort_unstable();
    tiers.dedup();
    let candidates: Vec<Vec<usize>> = match how {
        Plan::Any => vec![(0..sizes.len()).collect()],
        Plan::Tiered => tiers
            .iter()
            .map(|&t| (0..sizes.len()).filter(|&i| tier(sizes[i]) == t).collect())
            .collect(),
    };
    let enough = match how {
        Plan::Any => 2,
        Plan::Tiered => TIER_GROWTH as usize,
    };
    // Of the tiers with enough blocks, the one holding the oldest: taking the lowest tier first
    // starved the next one while level-0 blocks kept arriving.
    let mut best: Vec<usize> = Vec::new();
    for members in candidates {
        let mut group: Vec<usize> = Vec::new();
        let (mut spans, mut bytes) = (0u64, 0u64);
        for i in members {
            let (n, b) = (sizes[i], read_bytes[i]);
            // Bounded fan-in and memory: each input holds a row group and a decoded batch.
            let over_target = spans + n > target;
            let over_budget = bytes + b > MERGE_READ_BUDGET;
            if group.len() >= MAX_INPUTS || ((over_target || over_budget) && group.len() >= 2) {
                break;
            }
            if over_target {
                group.clear();
                (spans, bytes) = (0, 0);
            }
            spans += n;
            bytes += b;
            group.push(i);
        }
        if group.len() >= enough && best.first().is_none_or(|&b| group[0] < b) {
            best = group;
        }
    }
    best
}

/// Blocks merged by one compaction at most. Heads are cut at ~45,000 loader spans, so 16 of
/// them make a block of ~720,000, past half the default target (1 M): a busy ingest's spans
/// are rewritten once on their way to a full-size block. 32 inputs (1.44 M spans) raised the
/// peak RSS of a merge by another ~90 MB (docs/benchmarks.md, "One rewrite per span").
pub(crate) const MAX_INPUTS: usize = 16;
/// Memory a merge may hold for its inputs' row groups (a reader fetches a whole row group of
/// the columns it reads): 8 inputs of full-size row groups, all 16 of level 0.
const MERGE_READ_BUDGET: u64 = 48 << 20;
/// Rows per input batch while merging: memory per input ≈ this many decoded rows (resources
/// and scopes held once per batch, as dictionaries; attributes and events once per row).
const MERGE_BATCH_ROWS: usize = 512;
/// Rows per batch written to the merge's output.
const MERGE_FLUSH_ROWS: usize = 8192;

/// What a merge holds in memory to read a block: its largest row group, compressed.
fn merge_read_bytes(meta: &crate::block::BlockMeta) -> u64 {
    let largest = meta.row_groups.iter().map(|g| g.rows).max().unwrap_or(0);
    meta.data_bytes * largest / meta.span_count.max(1)
}

/// One input of a merge: its stream of batches, already in the output layout, and the row
/// it is at.
struct Cursor {
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = Result<RecordBatch, StoreError>> + Send>>,
    normalizer: Normalizer,
    /// The current batch's index in the merge's held batches; `None` once the input is done.
    slot: Option<usize>,
    row: usize,
    trace_ids: FixedSizeBinaryArray,
    starts: Int64Array,
    span_ids: FixedSizeBinaryArray,
}

impl Cursor {
    /// Moves to the next non-empty batch and appends it to `held`, where the rows picked from
    /// it wait for the next flush.
    async fn advance_batch(&mut self, keys: &mut BlockKeys, held: &mut Vec<RecordBatch>) -> Result<(), StoreError> {
        self.slot = None;
        self.row = 0;
        while let Some(b) = self.stream.next().await {
            let b = b?;
            if b.num_rows() > 0 {
                let b = self.normalizer.apply(&b, keys)?;
                self.trace_ids = crate::block::write::fsb(&b, schema::TRACE_ID)?.clone();
                self.starts = crate::block::write::i64s(&b, schema::START)?.clone();
                self.span_ids = crate::block::write::fsb(&b, schema::SPAN_ID)?.clone();
                self.slot = Some(held.len());
                held.push(b);
                break;
            }
        }
        Ok(())
    }

    /// The merge order of the current row: (trace id, start).
    fn key(&self) -> Result<Option<(TraceId, i64)>, StoreError> {
        if self.slot.is_none() {
            return Ok(None);
        }
        let tid = self
            .trace_ids
            .value(self.row)
            .try_into()
            .map_err(|_| StoreError::corrupt("trace id width"))?;
        Ok(Some((tid, self.starts.value(self.row))))
    }

    fn span_id(&self) -> Result<SpanId, StoreError> {
        self.span_ids
            .value(self.row)
            .try_into()
            .map_err(|_| StoreError::corrupt("span id width"))
    }
}

/// The dedicated columns of a compacted block: every input's, a key seen with two types
/// keeping the type that covers more spans. A double column stays a decimal column unless the
/// inputs without decimals cover more spans, and then takes the most places any input chose,
/// which hold the other inputs' values too (a value that needs fewer places fits more).
fn merged_layout(inputs: &[Arc<BlockHandle>]) -> Layout {
    let mut by_type: BTreeMap<(&str, HotType), u64> = BTreeMap::new();
    // Per key and type: spans of inputs without decimals, spans with, and the most places.
    let mut places: BTreeMap<(&str, HotType), (u64, u64, u8)> = BTreeMap::new();
    for b in inputs {
        for d in &b.meta.dedicated {
            let key = (d.key.as_str(), d.ty);
            *by_type.entry(key).or_default() += b.meta.span_count;
            let (without, with, most) = places.entry(key).or_default();
            match d.decimals {
                None => *without += b.meta.span_count,
                Some(p) => (*with, *most) = (*with + b.meta.span_count, (*most).max(p)),
            }
        }
    }
    let mut best: BTreeMap<&str, (HotType, u64)> = BTreeMap::new();
    for ((key, ty), w) in by_type {
        let e = best.entry(key).or_insert((ty, w));
        if w > e.1 {
            *e = (ty, w);
        }
    }
    let dedicated = best.into_iter().map(|(key, (ty, _))| {
        let (without, with, most) = places[&(key, ty)];
        Dedicated {
            decimals: (with > 0 && with >= without).then_some(most),
            ..Dedicated::new(key, ty)
        }
    });
    // A key stays low-cardinality when the inputs that sampled it so hold most of its spans.
    let mut low: BTreeMap<&str, i64> = BTreeMap::new();
    for b in inputs {
        for d in &b.meta.dedicated {
            let vote = if b.meta.low_cardinality.contains(&d.key) { 1 } else { -1 };
            *low.entry(d.key.as_str()).or_default() += vote * b.meta.span_count as i64;
        }
    }
    Layout::new(dedicated.collect()).with_low_cardinality(low.into_iter().filter(|(_, v)| *v > 0).map(|(k, _)| k))
}

/// Rewrites one input's batches into the output layout.
struct Normalizer {
    out: Layout,
    input: Vec<Dedicated>,
    /// Where each output dedicated column comes from, or `None` when rows must be re-split
    /// (the input holds an output key in its generic column or in a column of another type).
    direct: Option<Vec<Option<usize>>>,
}

impl Normalizer {
    fn new(input: &BlockHandle, out: &Layout) -> Normalizer {
        let fixed = schema::SPANS.fields().len();
        let in_layout = &input.meta.dedicated;
        let every_input_kept = in_layout.iter().all(|d| out.dedicated.contains(d));
        let direct = every_input_kept
            .then(|| {
                out.dedicated
                    .iter()
                    .map(|d| match in_layout.iter().position(|x| x == d) {
                        Some(i) => Some(Some(fixed + i)),
                        None if !input.meta.generic_may_contain(&d.key) => Some(None),
                        None => None,
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .flatten();
        Normalizer {
            out: out.clone(),
            input: in_layout.clone(),
            direct,
        }
    }

    fn apply(&self, b: &RecordBatch, keys: &mut BlockKeys) -> Result<RecordBatch, StoreError> {
        let fixed = schema::SPANS.fields().len();
        let mut columns: Vec<ArrayRef> = b.columns()[..fixed].to_vec();
        match &self.direct {
            Some(sources) => {
                for (d, src) in self.out.dedicated.iter().zip(sources) {
                    columns.push(match src {
                        Some(i) => b.column(*i).clone(),
                        None => arrow_array::new_null_array(&d.ty.data_type(), b.num_rows()),
                    });
                }
            }
            None => {
                let (attrs, dedicated) = self.resplit(b, keys)?;
                columns[schema::col(schema::ATTRS)] = attrs;
                columns.extend(dedicated);
            }
        }
        RecordBatch::try_new(self.out.schema.clone(), columns).map_err(StoreError::arrow)
    }

    /// The slow path: gathers each row's dedicated and generic attributes and splits them again.
    fn resplit(&self, b: &RecordBatch, keys: &mut BlockKeys) -> Result<(ArrayRef, Vec<ArrayRef>), StoreError> {
        let fixed = schema::SPANS.fields().len();
        let generic = crate::block::write::binaries(b, schema::ATTRS)?;
        let splitter = AttrSplitter::new(false, &self.out.dedicated);
        let mut typed: Vec<TypedBuilder> = self.out.dedicated.iter().map(|d| TypedBuilder::new(d.ty)).collect();
        let mut rest_col = arrow_array::builder::BinaryBuilder::new();
        let mut buf = Vec::new();
        for i in 0..b.num_rows() {
            let mut attrs: Vec<KeyValue> = Vec::new();
            for (j, d) in self.input.iter().enumerate() {
                let a = b.column(fixed + j);
                if !a.is_null(i) {
                    if let Some(v) = typed_value(a.as_ref(), i) {
                        attrs.push(KeyValue::new(d.key.clone(), v));
                    }
                }
            }
            let list = pb::common::v1::KeyValueList::decode(generic.value(i)).map_err(StoreError::decode)?;
            attrs.extend(proto::attrs_from(list.values));
            // The slow path (a layout change): fresh buffers per row borrow this row's attributes.
            let (mut values, mut rest) = (vec![None; splitter.width()], Vec::new());
            splitter.split(&attrs, &mut values, &mut rest);
            for (t, v) in typed.iter_mut().zip(&values) {
                t.append(*v);
            }
            for kv in &rest {
                keys.generic.add(&kv.key);
            }
            buf.clear();
            wire::key_value_list(rest.iter().copied(), &mut buf);
            rest_col.append_value(&buf);
        }
        Ok((
            Arc::new(rest_col.finish()),
            typed.iter_mut().map(TypedBuilder::finish).collect(),
        ))
    }
}

/// Merges `inputs` into one block, whose data file is written to `backend` while it is built
/// (`upload_block` stores the rest); gives up with `ShuttingDown` once `stop` says so.
pub async fn merge_blocks(
    inputs: &[Arc<BlockHandle>],
    backend: &crate::backend::Backend,
    retention: std::time::Duration,
    stop: impl Fn() -> bool,
) -> Result<crate::block::BuiltBlock, StoreError> {
    let layout = merged_layout(inputs);
    let mut keys = BlockKeys::default();
    for b in inputs {
        keys.union(&BlockKeys::of(&b.meta));
    }
    let level = inputs.iter().map(|b| b.meta.level).max().unwrap_or(0) + 1;
    let id = new_block_id();
    backend.mark_incomplete(&id).await?;
    let put = backend
        .put_streaming(&backend.block_path(&id, crate::block::DATA_FILE))
        .await?;
    let mut builder = BlockBuilder::streaming(id, level, layout, put)?;
    builder.keep_ahead_for(retention);
    if let Err(e) = merge_into(inputs, &mut keys, &mut builder, stop).await {
        builder.abort(backend).await;
        return Err(e);
    }
    let mut built = builder.finish()?;
    let mut wal_segments: Vec<u64> = inputs
        .iter()
        .flat_map(|b| b.meta.wal_segments.iter().copied())
        .collect();
    wal_segments.sort_unstable();
    wal_segments.dedup();
    built.meta.wal_segments = wal_segments;
    let mut replaces: Vec<String> = inputs
        .iter()
        .flat_map(|b| std::iter::once(&b.meta.id).chain(&b.meta.replaces).cloned())
        .collect();
    replaces.sort_unstable();
    replaces.dedup();
    built.meta.replaces = replaces;
    keys.store_in(&mut built.meta);
    Ok(built)
}

/// The merge itself: every input's rows in (trace id, start) order, duplicates dropped,
/// pushed to `builder`.
async fn merge_into(
    inputs: &[Arc<BlockHandle>],
    keys: &mut BlockKeys,
    builder: &mut BlockBuilder,
    stop: impl Fn() -> bool,
) -> Result<(), StoreError> {
    // Batches that picked rows still point into; replaced by the cursors' current ones at
    // every flush, so a flush writes MERGE_FLUSH_ROWS rows whatever the fan-in.
    let mut held: Vec<RecordBatch> = Vec::new();
    let mut cursors = Vec::new();
    // Smallest (trace id, start, input) first; the input breaks ties, so merges are repeatable.
    let mut order: BinaryHeap<Reverse<(TraceId, i64, usize)>> = BinaryHeap::new();
    for b in inputs {
        let columns = b.meta.layout().column_names();
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        // A damaged input fails this merge once; after that the planner no longer sees it.
        let stream = b
            .stream_batches(&columns, None, MERGE_BATCH_ROWS)
            .await
            .map_err(|e| b.note_read_error(e))?;
        let input = b.clone();
        let mut c = Cursor {
            stream: Box::pin(stream.map(move |r| r.map_err(|e| input.note_read_error(e)))),
            normalizer: Normalizer::new(b, builder.layout()),
            slot: None,
            row: 0,
            trace_ids: FixedSizeBinaryArray::new_null(16, 0),
            starts: Int64Array::new_null(0),
            span_ids: FixedSizeBinaryArray::new_null(8, 0),
        };
        c.advance_batch(keys, &mut held).await?;
        if let Some((tid, start)) = c.key()? {
            order.push(Reverse((tid, start, cursors.len())));
        }
        cursors.push(c);
    }

    // (held batch, row) of each span the output takes, in output order.
    let mut picks: Vec<(usize, usize)> = Vec::with_capacity(MERGE_FLUSH_ROWS);
    let mut current_trace: Option<TraceId> = None;
    let mut seen: FxHashSet<SpanId> = FxHashSet::default();
    while let Some(Reverse((tid, _, i))) = order.pop() {
        if current_trace != Some(tid) {
            current_trace = Some(tid);
            seen.clear();
        }
        let c = &mut cursors[i];
        let slot = c
            .slot
            .ok_or_else(|| StoreError::Internal("merge order names a finished input".into()))?;
        if seen.insert(c.span_id()?) {
            picks.push((slot, c.row));
        }
        c.row += 1;
        if c.row >= c.trace_ids.len() {
            c.advance_batch(keys, &mut held).await?;
        }
        if let Some((tid, start)) = c.key()? {
            order.push(Reverse((tid, start, i)));
        }
        // Spans that are all duplicates pick nothing but still retire batches: bound those too.
        if picks.len() >= MERGE_FLUSH_ROWS || held.len() > 2 * cursors.len() {
            if stop() {
                return Err(StoreError::ShuttingDown);
            }
            flush_picks(&mut held, &mut cursors, &mut picks, builder)?;
            builder.wait_for_upload().await?;
        }
    }
    flush_picks(&mut held, &mut cursors, &mut picks, builder)
}

/// Writes the picked rows to the output, then keeps only the cursors' current batches.
fn flush_picks(
    held: &mut Vec<RecordBatch>,
    cursors: &mut [Cursor],
    picks: &mut Vec<(usize, usize)>,
    builder: &mut BlockBuilder,
) -> Result<(), StoreError> {
    if !picks.is_empty() {
        let out_schema = builder.layout().schema.clone();
        let mut columns = Vec::with_capacity(out_schema.fields().len());
        for col in 0..out_schema.fields().len() {
            let arrays: Vec<&dyn Array> = held.iter().map(|b| b.column(col).as_ref()).collect();
            columns.push(arrow_select::interleave::interleave(&arrays, picks).map_err(StoreError::arrow)?);
        }
        let out = RecordBatch::try_new(out_schema, columns).map_err(StoreError::arrow)?;
        builder.push(&out)?;
        picks.clear();
    }
    let mut kept = Vec::with_capacity(cursors.len());
    for c in cursors.iter_mut() {
        if let Some(slot) = c.slot {
            c.slot = Some(kept.len());
            kept.push(held[slot].clone());
        }
    }
    *held = kept;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates a store that level-0 blocks of `head` spans keep arriving in, merging after
    /// every `every` arrivals as the maintenance loop would; returns (spans written by merges,
    /// blocks left).
    fn simulate(how: Plan, head: u64, heads: usize, every: usize, target: u64) -> (u64, usize) {
        let mut blocks: Vec<u64> = Vec::new(); // oldest first
        let mut rewritten = 0;
        for arrived in 1..=heads {
            blocks.push(head);
            if arrived % every != 0 && arrived != heads {
                continue;
            }
            loop {
                let small: Vec<usize> = (0..blocks.len()).filter(|&i| blocks[i] < target / 2).collect();
                let sizes: Vec<u64> = small.iter().map(|&i| blocks[i]).collect();
                let group: Vec<usize> = by_spans(&sizes, target, how).into_iter().map(|i| small[i]).collect();
                if group.len() < 2 {
                    break;
                }
                let merged: u64 = group.iter().map(|&i| blocks[i]).sum();
                rewritten += merged;
                let first = group[0];
                for &i in group.iter().rev() {
                    blocks.remove(i);
                }
                blocks.insert(first.min(blocks.len()), merged);
            }
        }
        (rewritten, blocks.len())
    }

    /// `plan` for blocks of level-0 shape: ~60 bytes per span, row groups of 16 Ki rows.
    fn by_spans(sizes: &[u64], target: u64, how: Plan) -> Vec<usize> {
        let read: Vec<u64> = sizes.iter().map(|&n| 60 * n.min(16 * 1024)).collect();
        plan(sizes, &read, target, how)
    }

    #[test]
    fn tiered_merges_rewrite_each_span_a_few_times_not_once_per_merge() {
        // ~34,000-span heads, 2 M target, 60 heads, merging after each one.
        let (any, any_blocks) = simulate(Plan::Any, 34_000, 60, 1, 2_000_000);
        let (tiered, tiered_blocks) = simulate(Plan::Tiered, 34_000, 60, 1, 2_000_000);
        let ingested = 34_000 * 60;
        assert!(tiered <= 2 * ingested, "tiered rewrote {tiered} for {ingested}");
        assert!(any >= 4 * ingested, "oldest-first rewrote {any} for {ingested}");
        // Both leave a handful of blocks behind, not a backlog.
        assert!(tiered_blocks <= 8 && any_blocks <= 8, "{tiered_blocks} / {any_blocks}");
    }

    #[test]
    fn a_busy_ingest_rewrites_each_span_once() {
        // ~45,000-span heads arriving faster than the maintenance interval (150 k spans/s and
        // a merge pass every 30 s see ~100 heads a pass; 40 is enough to show it).
        let ingested = 45_000 * 160;
        let (tiered, blocks) = simulate(Plan::Tiered, 45_000, 160, 40, 1_000_000);
        assert_eq!(tiered, ingested, "{blocks} blocks left");
    }

    #[test]
    fn tiered_plan_takes_one_tier_and_enough_of_it() {
        let target = 2_000_000;
        // A big block among small ones is left out; the small ones merge.
        assert_eq!(
            by_spans(&[300_000, 30_000, 30_000, 30_000, 30_000], target, Plan::Tiered),
            vec![1, 2, 3, 4]
        );
        // Three of a tier are not enough yet.
        assert!(by_spans(&[300_000, 30_000, 30_000, 30_000], target, Plan::Tiered).is_empty());
        // The tier holding the oldest block goes first, at most MAX_INPUTS of it, oldest first.
        let mut sizes = vec![20, 300_000, 300_000, 300_000, 300_000];
        sizes.extend([20; 40]);
        let oldest: Vec<usize> = [0].into_iter().chain(5..5 + MAX_INPUTS - 1).collect();
        assert_eq!(by_spans(&sizes, target, Plan::Tiered), oldest);
        let mut sizes = vec![300_000, 300_000, 300_000, 300_000];
        sizes.extend([20; 9]);
        assert_eq!(by_spans(&sizes, target, Plan::Tiered), vec![0, 1, 2, 3]);
        // "Any" merges the oldest whatever their sizes.
        assert_eq!(by_spans(&[300_000, 30_000], target, Plan::Any), vec![0, 1]);
    }

    #[test]
    fn a_merge_holds_at_most_its_read_budget() {
        // Blocks with 10 MiB row groups: four fit the budget, not eight.
        let sizes = [200_000; 8];
        let read = [10 << 20; 8];
        assert_eq!(plan(&sizes, &read, 2_000_000, Plan::Tiered), vec![0, 1, 2, 3]);
        // Two inputs are always allowed, even past the budget (or nothing would ever merge).
        let read = [40 << 20; 8];
        assert_eq!(plan(&sizes, &read, 2_000_000, Plan::Any), vec![0, 1]);
    }

    /// `n` one-span traces, trace ids counted from `first`.
    fn many_traces(first: u32, n: u32) -> Vec<skein_model::Span> {
        let start = crate::now_unix_nano() - 60_000_000_000;
        (first..first + n)
            .map(|i| {
                let mut trace_id = [7; 16];
                trace_id[..4].copy_from_slice(&i.to_be_bytes());
                skein_model::Span {
                    trace_id,
                    span_id: [1; 8],
                    start_unix_nano: start,
                    end_unix_nano: start + 1_000_000,
                    name: "work".into(),
                    ..Default::default()
                }
            })
            .collect()
    }

    /// Blocks written while resource and scope columns were plain `Binary` Arrow columns
    /// (before `schema::shared_bytes`) read back the same, and merge with newer blocks: the
    /// reader types those columns as dictionaries whatever the file says.
    #[tokio::test]
    async fn blocks_with_plain_resource_columns_read_and_merge_with_newer_ones() {
        use crate::block::write::SharedBytes;
        use arrow_array::BinaryArray;
        use skein_model::{Resource, Scope};
        let dir = tempfile::tempdir().unwrap();
        let backend = crate::backend::Backend::local(dir.path().to_path_buf(), 1 << 20).unwrap();
        let with_resource = |first: u32, service: &str| {
            let resource = Arc::new(Resource {
                attributes: vec![
                    KeyValue::string("service.name", service),
                    KeyValue::string("host.name", "h1"),
                ],
                dropped_attributes_count: 0,
            });
            let scope = Arc::new(Scope {
                name: format!("{service}-lib"),
                ..Default::default()
            });
            let mut spans = many_traces(first, 3);
            for s in &mut spans {
                s.resource = resource.clone();
                s.scope = scope.clone();
            }
            spans
        };

        // The old block: the same Parquet columns, written from `Binary` Arrow arrays.
        let old_spans = with_resource(1, "old");
        let plain = |f: &arrow_schema::FieldRef| match [schema::RESOURCE, schema::SCOPE].contains(&f.name().as_str()) {
            true => Arc::new(f.as_ref().clone().with_data_type(arrow_schema::DataType::Binary)),
            false => f.clone(),
        };
        let mut layout = crate::block::Layout::fixed();
        for s in [&mut layout.schema, &mut layout.file_schema] {
            *s = Arc::new(arrow_schema::Schema::new(
                s.fields().iter().map(plain).collect::<Vec<_>>(),
            ));
        }
        let refs: Vec<&skein_model::Span> = old_spans.iter().collect();
        let mut keys = BlockKeys::default();
        let batch = crate::block::write::spans_to_batch(&refs, &crate::block::Layout::fixed(), &mut keys).unwrap();
        let mut columns = batch.columns().to_vec();
        for c in [schema::RESOURCE, schema::SCOPE] {
            let shared = SharedBytes::column(&batch, c).unwrap().unwrap();
            let rows: BinaryArray = (0..batch.num_rows()).map(|i| Some(shared.row(i))).collect();
            columns[schema::col(c)] = Arc::new(rows) as ArrayRef;
        }
        let batch = RecordBatch::try_new(layout.schema.clone(), columns).unwrap();
        assert_eq!(
            batch.column(schema::col(schema::RESOURCE)).data_type(),
            &arrow_schema::DataType::Binary
        );
        let mut builder = crate::block::BlockBuilder::new("old-block".into(), 0, layout).unwrap();
        builder.push(&batch).unwrap();
        let old = Arc::new(crate::upload_block(&backend, builder.finish().unwrap()).await.unwrap());

        let new_spans = with_resource(100, "new");
        let refs: Vec<&skein_model::Span> = new_spans.iter().collect();
        let built = crate::build_block(&refs, "new-block".into(), 0, std::time::Duration::MAX).unwrap();
        let new = Arc::new(crate::upload_block(&backend, built).await.unwrap());

        let check = |read: Vec<skein_model::Span>, want: &skein_model::Span| {
            assert_eq!(read.len(), 1);
            assert_eq!(read[0].resource, want.resource);
            assert_eq!(read[0].scope, want.scope);
        };
        check(old.trace(&old_spans[0].trace_id).await.unwrap(), &old_spans[0]);
        let merged = merge_blocks(&[old.clone(), new.clone()], &backend, std::time::Duration::MAX, || {
            false
        })
        .await
        .unwrap();
        let merged = crate::upload_block(&backend, merged).await.unwrap();
        assert_eq!(merged.meta.span_count, 6);
        for s in old_spans.iter().chain(&new_spans) {
            check(merged.trace(&s.trace_id).await.unwrap(), s);
        }
    }

    /// The maintenance loop merges only like-sized blocks while heads are being cut, and tidies
    /// up oldest-first once none was cut for an interval: it asks when the last cut was.
    #[tokio::test]
    async fn the_last_head_cut_tells_a_growing_store_from_a_quiet_one() {
        let dir = tempfile::tempdir().unwrap();
        // No maintenance loop runs here: the test asks the store directly.
        let store = crate::Store::open(dir.path(), crate::StoreConfig::default())
            .await
            .unwrap();
        let hour = std::time::Duration::from_secs(3600);
        assert!(!store.head_cut_within(hour), "no head cut yet");
        store.append(many_traces(1, 10)).await.unwrap();
        assert!(!store.head_cut_within(hour), "appended, not cut");
        store.flush().await.unwrap();
        assert!(store.head_cut_within(hour));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!store.head_cut_within(std::time::Duration::from_millis(10)));
        store.shutdown().await.unwrap();
    }

    /// Three level-0 blocks, one per flushed trace.
    async fn three_level0_blocks(store: &crate::Store) {
        for t in 1..=3 {
            store.append(many_traces(t, 1)).await.unwrap();
            store.flush().await.unwrap();
        }
        assert_eq!(store.stats().level0_blocks, 3);
    }

    /// At `max_level0_blocks` with a merge in progress (one holds the compaction lock), an
    /// append waits for the merge: refused with "compaction is behind" once `admission_wait`
    /// runs out, let through as soon as a merge ends. With no merge running nothing is held
    /// back: compaction may be off, and waiting would be for nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_wait_for_compaction_when_level0_blocks_pile_up() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = |wait: u64| crate::StoreConfig {
            max_level0_blocks: 3,
            admission_wait: std::time::Duration::from_millis(wait),
            compaction_interval: std::time::Duration::from_secs(3600),
            ..Default::default()
        };
        let store = crate::Store::open(dir.path(), cfg(200)).await.unwrap();
        three_level0_blocks(&store).await;
        store
            .append(many_traces(4, 1))
            .await
            .expect("no merge running: not held back");

        let merging = store.compaction_lock().lock().await;
        match store.append(many_traces(5, 1)).await {
            Err(StoreError::Overloaded(why)) => assert_eq!(why, "compaction is behind"),
            other => panic!("expected backpressure while compaction is behind, got {other:?}"),
        }
        drop(merging);
        store.shutdown().await.unwrap();
        drop(store);

        // Reopened with a long wait: the append waits for the merge, then goes through.
        let store = crate::Store::open(dir.path(), cfg(60_000)).await.unwrap();
        store.flush().await.unwrap();
        assert!(store.stats().level0_blocks >= 3);
        let merging = store.compaction_lock().lock().await;
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { store.append(many_traces(6, 1)).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "the append waits while the merge runs");
        drop(merging);
        assert!(store.compact_once().await.unwrap() >= 3);
        waiting
            .await
            .unwrap()
            .expect("the append went through once the merge ended");
        assert_eq!(store.stats().level0_blocks, 0);
        store.shutdown().await.unwrap();
    }

    /// A merge streams its output to the backend while it runs. Given up (shutdown), it
    /// leaves nothing behind — no file, no staging file, no directory; finished, the stored
    /// file is whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_merge_given_up_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        // Two blocks of 6,000 spans: the merge flushes (and checks `stop`) at 8,192.
        let store = store_with_blocks(dir.path(), 2, 6000).await;
        let inputs = store.snapshot().blocks;
        assert_eq!(inputs.len(), 2);
        let mut input_ids: Vec<String> = inputs.iter().map(|b| b.meta.id.clone()).collect();
        input_ids.sort();
        let files = |id: &str| sorted_names(&dir.path().join("blocks").join(id));
        let before: Vec<Vec<String>> = input_ids.iter().map(|id| files(id)).collect();

        match merge_blocks(&inputs, store.backend(), std::time::Duration::MAX, || true).await {
            Err(StoreError::ShuttingDown) => {}
            Err(e) => panic!("expected ShuttingDown, got {e}"),
            Ok(_) => panic!("the merge was to stop at its first flush"),
        }
        assert_eq!(block_dirs(dir.path()), input_ids, "only the inputs are left");
        let after: Vec<Vec<String>> = input_ids.iter().map(|id| files(id)).collect();
        assert_eq!(after, before);

        let built = merge_blocks(&inputs, store.backend(), std::time::Duration::MAX, || false)
            .await
            .unwrap();
        let handle = crate::upload_block(store.backend(), built).await.unwrap();
        assert_eq!(handle.meta.span_count, 12_000);
        let data = dir
            .path()
            .join("blocks")
            .join(&handle.meta.id)
            .join(crate::block::DATA_FILE);
        assert_eq!(std::fs::metadata(data).unwrap().len(), handle.meta.data_bytes);
        assert!(
            !files(&handle.meta.id).iter().any(|f| f.contains('#')),
            "no staging file left"
        );
        store.shutdown().await.unwrap();
    }

    fn without_maintenance() -> crate::StoreConfig {
        crate::StoreConfig {
            compaction_interval: std::time::Duration::from_secs(3600),
            ..Default::default()
        }
    }

    /// A store holding `blocks` level-0 blocks of `traces` one-span traces each.
    async fn store_with_blocks(dir: &std::path::Path, blocks: u32, traces: u32) -> crate::Store {
        let store = crate::Store::open(dir, without_maintenance()).await.unwrap();
        for k in 0..blocks {
            store.append(many_traces(k * traces, traces)).await.unwrap();
            store.flush().await.unwrap();
        }
        store
    }

    /// The entries of `dir`, by name.
    fn sorted_names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The block directories under a data directory.
    fn block_dirs(root: &std::path::Path) -> Vec<String> {
        sorted_names(&root.join("blocks"))
    }

    /// A merge that replaces blocks a query is still reading leaves their files until the
    /// query lets go: the reader finishes on the old blocks (before, it could hit a deleted
    /// file and answer 500), and the files go at the next maintenance pass after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn merged_blocks_stay_readable_until_their_last_reader_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_blocks(dir.path(), 2, 100).await;
        let held = store.snapshot().blocks;
        let inputs: Vec<String> = held.iter().map(|b| b.meta.id.clone()).collect();
        assert_eq!(store.compact_once().await.unwrap(), 2);
        let live = store.snapshot().blocks;
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].meta.replaces, inputs, "the merged block names its inputs");
        let mut expected = inputs.clone();
        expected.push(live[0].meta.id.clone());
        expected.sort();
        assert_eq!(block_dirs(dir.path()), expected, "the inputs are still on disk");

        // The held (replaced) blocks still answer, from their own files.
        let mut id = [7; 16];
        id[..4].copy_from_slice(&150u32.to_be_bytes());
        let found: usize = {
            let mut n = 0;
            for b in &held {
                n += b.trace(&id).await.unwrap().len();
            }
            n
        };
        assert_eq!(found, 1);

        // Still held: another pass keeps them (and reports their bytes); let go: the next pass
        // deletes them.
        store.delete_retired().await;
        assert_eq!(block_dirs(dir.path()).len(), 3);
        let held_bytes: u64 = held.iter().map(|b| b.meta.total_bytes()).sum();
        assert_eq!(store.stats().retired_bytes, held_bytes);
        drop(held);
        store.delete_retired().await;
        assert_eq!(block_dirs(dir.path()), vec![live[0].meta.id.clone()]);
        assert_eq!(store.stats().retired_bytes, 0);
        store.shutdown().await.unwrap();
    }

    /// With no query reading them, a merge's inputs and expired blocks are deleted by the
    /// merge or the expiry itself, not a compaction interval later.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unread_inputs_and_expired_blocks_go_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_blocks(dir.path(), 2, 100).await;
        assert_eq!(store.compact_once().await.unwrap(), 2);
        let merged = store.snapshot().blocks[0].meta.id.clone();
        assert_eq!(block_dirs(dir.path()), vec![merged]);
        assert_eq!(store.enforce_retention(u64::MAX).await.unwrap(), 1);
        assert_eq!(block_dirs(dir.path()), Vec::<String>::new());
        assert_eq!(store.stats().retired_bytes, 0);
        store.shutdown().await.unwrap();
    }

    /// Shutdown during a merge waits for it to stop or commit before letting the directory
    /// go: never a merged block without its meta, nor a merge still writing afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_waits_for_a_merge_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_blocks(dir.path(), 4, 20_000).await;
        let merging = tokio::spawn({
            let store = store.clone();
            async move { store.compact_once().await }
        });
        // The merge holds the lock from its start to its end.
        while store.compaction_lock().try_lock().is_ok() {
            tokio::task::yield_now().await;
        }
        store.shutdown().await.unwrap();
        // The merge let go of the lock before shutdown returned (its task may still be on its
        // way out, so not `is_finished`).
        assert!(
            store.compaction_lock().try_lock().is_ok(),
            "shutdown returned while the merge was still running"
        );
        let merged = merging.await.unwrap();
        for id in block_dirs(dir.path()) {
            let files = sorted_names(&dir.path().join("blocks").join(&id));
            assert!(
                files.contains(&"meta.json".to_string()),
                "{id}: {files:?} (merge: {merged:?})"
            );
        }
        drop(store);
        let store = crate::Store::open(dir.path(), without_maintenance()).await.unwrap();
        let spans: u64 = store.snapshot().blocks.iter().map(|b| b.meta.span_count).sum();
        assert_eq!(spans, 80_000, "merge: {merged:?}");
        store.shutdown().await.unwrap();
    }

    /// A crash after a merge wrote its block but before its inputs were deleted leaves both on
    /// disk. The next start deletes the inputs (the merged block lists them), so no span is
    /// served twice; a merge of merged blocks lists their inputs too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_deletes_inputs_a_merge_had_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_blocks(dir.path(), 4, 100).await;
        let mut level0: Vec<Arc<BlockHandle>> = store.snapshot().blocks;
        level0.sort_by_key(|b| b.meta.id.clone());
        let (a, b) = level0.split_at(2);
        // Merged and written, never swapped in and their inputs never deleted: a crash right
        // after each commit.
        async fn write_merge(store: &crate::Store, inputs: &[Arc<BlockHandle>]) -> Arc<BlockHandle> {
            let built = merge_blocks(inputs, store.backend(), std::time::Duration::MAX, || false)
                .await
                .unwrap();
            Arc::new(crate::upload_block(store.backend(), built).await.unwrap())
        }
        let first = write_merge(&store, a).await;
        let second = write_merge(&store, b).await;
        let top = merge_blocks(
            &[first.clone(), second.clone()],
            store.backend(),
            std::time::Duration::MAX,
            || false,
        )
        .await
        .unwrap();
        let mut all_inputs: Vec<String> = level0.iter().map(|b| b.meta.id.clone()).collect();
        all_inputs.extend([first.meta.id.clone(), second.meta.id.clone()]);
        all_inputs.sort();
        assert_eq!(top.meta.replaces, all_inputs, "inputs and their inputs");
        let top = crate::upload_block(store.backend(), top).await.unwrap();
        assert_eq!(block_dirs(dir.path()).len(), 7);
        drop((level0, first, second));
        store.shutdown().await.unwrap();
        drop(store);

        let store = crate::Store::open(dir.path(), without_maintenance()).await.unwrap();
        let blocks = store.snapshot().blocks;
        assert_eq!(blocks.len(), 1, "only the top merge is left");
        assert_eq!(blocks[0].meta.id, top.meta.id);
        assert_eq!(store.stats().block_spans, 400);
        assert_eq!(block_dirs(dir.path()), vec![top.meta.id.clone()]);
        store.shutdown().await.unwrap();
    }
}
