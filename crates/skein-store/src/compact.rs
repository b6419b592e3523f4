//! Compaction (merge small blocks into bigger ones, deduping spans) and retention (drop whole
//! blocks by age and by total size).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch};
use futures::StreamExt;
use prost::Message;
use skein_model::metrics;
use skein_model::otlp::{pb, proto, wire};
use skein_model::{KeyValue, SpanId, TraceId};

use crate::block::fxhash::FxHashSet;
use crate::block::read::typed_value;
use crate::block::schema;
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
        let cutoff = now_unix_nano.saturating_sub(cfg.retention.as_nanos() as u64);
        let mut blocks = self.snapshot().blocks;
        blocks.sort_by_key(|b| (b.meta.max_end, b.meta.min_start));
        let mut doomed: Vec<String> = blocks
            .iter()
            .filter(|b| b.meta.max_end < cutoff)
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
        for id in &doomed {
            self.backend().delete_block(id).await?;
        }
        metrics::counter(
            "skein_retention_deleted_blocks_total",
            "Blocks deleted by retention",
            &[],
        )
        .add(doomed.len() as u64);
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
        let group: Vec<Arc<BlockHandle>> = plan(&sizes, target, how)
            .into_iter()
            .map(|i| small[i].clone())
            .collect();
        if group.len() < 2 {
            return Ok(0);
        }
        let spans: u64 = group.iter().map(|b| b.meta.span_count).sum();
        let started = std::time::Instant::now();
        let merged = merge_blocks(&group).await?;
        let (in_spans, out_spans) = (spans, merged.meta.span_count);
        let handle = Arc::new(upload_block(self.backend(), merged).await?);
        let ids: Vec<String> = group.iter().map(|b| b.meta.id.clone()).collect();
        self.replace_blocks(vec![handle], &ids);
        for id in &ids {
            self.backend().delete_block(id).await?;
        }
        metrics::counter("skein_compactions_total", "Compactions completed", &[]).inc();
        metrics::counter(
            "skein_compaction_deduped_spans_total",
            "Duplicate spans removed by compaction",
            &[],
        )
        .add(in_spans - out_spans);
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

/// Chooses the inputs of one merge among small blocks given by span count, oldest first;
/// returns their indexes (fewer than two: nothing to do).
///
/// Merging the oldest small blocks whatever their sizes re-merged the previous output every
/// time while ingest ran: level-0 blocks of ~34,000 spans became 272,000, then 510,000, 748,000,
/// 986,000 — each span rewritten four or five times on its way to a full block. Tiered, a block
/// is merged only with blocks of its own size tier (sizes within `TIER_GROWTH`× of each other),
/// at least `TIER_GROWTH` of them, so the ~34,000-span blocks take two rewrites to 1 M.
fn plan(sizes: &[u64], target: u64, how: Plan) -> Vec<usize> {
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
        let mut spans = 0u64;
        for i in members {
            let n = sizes[i];
            // Bounded fan-in: each input holds one decoded batch in memory during the merge.
            if group.len() >= MAX_INPUTS || (spans + n > target && group.len() >= 2) {
                break;
            }
            if spans + n > target {
                group.clear();
                spans = 0;
            }
            spans += n;
            group.push(i);
        }
        if group.len() >= enough && best.first().is_none_or(|&b| group[0] < b) {
            best = group;
        }
    }
    best
}

/// Blocks merged by one compaction at most. (32 was tried: heads are cut at ~35,000 loader
/// spans, so 8 inputs make ~270,000-span blocks that are merged once more, and 32 would
/// skip that second merge — but the merge of 32 inputs raised the server's peak RSS from
/// 657 to 832 MB, with no measurable ingest gain; see docs/benchmarks.md.)
const MAX_INPUTS: usize = 8;
/// Rows per input batch while merging (memory per input ≈ this many decoded rows).
const MERGE_BATCH_ROWS: usize = 2048;

struct Cursor {
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = Result<RecordBatch, StoreError>> + Send>>,
    /// The current batch, already in the output layout.
    batch: Option<RecordBatch>,
    row: usize,
    normalizer: Normalizer,
}

impl Cursor {
    async fn advance_batch(&mut self, keys: &mut BlockKeys) -> Result<(), StoreError> {
        self.batch = None;
        self.row = 0;
        while let Some(b) = self.stream.next().await {
            let b = b?;
            if b.num_rows() > 0 {
                self.batch = Some(self.normalizer.apply(&b, keys)?);
                break;
            }
        }
        Ok(())
    }

    fn key(&self) -> Option<(TraceId, i64)> {
        let b = self.batch.as_ref()?;
        let tid = crate::block::write::fsb(b, schema::TRACE_ID).ok()?;
        let st = crate::block::write::i64s(b, schema::START).ok()?;
        Some((tid.value(self.row).try_into().ok()?, st.value(self.row)))
    }

    fn span_id(&self) -> Option<SpanId> {
        let b = self.batch.as_ref()?;
        crate::block::write::fsb(b, schema::SPAN_ID)
            .ok()?
            .value(self.row)
            .try_into()
            .ok()
    }
}

/// The dedicated columns of a compacted block: every input's, a key seen with two types
/// keeping the type that covers more spans.
fn merged_layout(inputs: &[Arc<BlockHandle>]) -> Layout {
    let mut weight: BTreeMap<&Dedicated, u64> = BTreeMap::new();
    for b in inputs {
        for d in &b.meta.dedicated {
            *weight.entry(d).or_default() += b.meta.span_count;
        }
    }
    let mut best: BTreeMap<&str, (&Dedicated, u64)> = BTreeMap::new();
    for (d, w) in weight {
        let e = best.entry(d.key.as_str()).or_insert((d, w));
        if w > e.1 {
            *e = (d, w);
        }
    }
    // A key stays low-cardinality when the inputs that sampled it so hold most of its spans.
    let mut low: BTreeMap<&str, i64> = BTreeMap::new();
    for b in inputs {
        for d in &b.meta.dedicated {
            let vote = if b.meta.low_cardinality.contains(&d.key) { 1 } else { -1 };
            *low.entry(d.key.as_str()).or_default() += vote * b.meta.span_count as i64;
        }
    }
    Layout::new(best.into_values().map(|(d, _)| d.clone()).collect())
        .with_low_cardinality(low.into_iter().filter(|(_, v)| *v > 0).map(|(k, _)| k))
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

pub async fn merge_blocks(inputs: &[Arc<BlockHandle>]) -> Result<crate::block::BuiltBlock, StoreError> {
    let layout = merged_layout(inputs);
    let mut keys = BlockKeys::default();
    for b in inputs {
        keys.union(&BlockKeys::of(&b.meta));
    }
    let mut cursors = Vec::new();
    for b in inputs {
        let columns = b.meta.layout().column_names();
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        let stream = b.stream_batches(&columns, None, MERGE_BATCH_ROWS).await?;
        let mut c = Cursor {
            stream: Box::pin(stream),
            batch: None,
            row: 0,
            normalizer: Normalizer::new(b, &layout),
        };
        c.advance_batch(&mut keys).await?;
        cursors.push(c);
    }
    let level = inputs.iter().map(|b| b.meta.level).max().unwrap_or(0) + 1;
    let mut builder = BlockBuilder::new(new_block_id(), level, layout)?;
    let mut wal_segments: Vec<u64> = inputs
        .iter()
        .flat_map(|b| b.meta.wal_segments.iter().copied())
        .collect();
    wal_segments.sort_unstable();
    wal_segments.dedup();

    let mut picks: Vec<(usize, usize)> = Vec::new();
    let mut current_trace: Option<TraceId> = None;
    let mut seen: FxHashSet<SpanId> = FxHashSet::default();
    loop {
        let mut best: Option<(usize, (TraceId, i64))> = None;
        for (i, c) in cursors.iter().enumerate() {
            if let Some(k) = c.key() {
                if best.as_ref().is_none_or(|(_, bk)| k < *bk) {
                    best = Some((i, k));
                }
            }
        }
        let Some((i, (tid, _))) = best else { break };
        if current_trace != Some(tid) {
            current_trace = Some(tid);
            seen.clear();
        }
        let sid = cursors[i].span_id().ok_or_else(|| StoreError::corrupt("span id"))?;
        if seen.insert(sid) {
            picks.push((i, cursors[i].row));
        }
        cursors[i].row += 1;
        let exhausted = cursors[i]
            .batch
            .as_ref()
            .is_some_and(|b| cursors[i].row >= b.num_rows());
        if exhausted || picks.len() >= 8192 {
            flush_picks(&cursors, &mut picks, &mut builder)?;
        }
        if exhausted {
            cursors[i].advance_batch(&mut keys).await?;
        }
    }
    flush_picks(&cursors, &mut picks, &mut builder)?;
    let mut built = builder.finish()?;
    built.meta.wal_segments = wal_segments;
    keys.store_in(&mut built.meta);
    Ok(built)
}

fn flush_picks(
    cursors: &[Cursor],
    picks: &mut Vec<(usize, usize)>,
    builder: &mut BlockBuilder,
) -> Result<(), StoreError> {
    if picks.is_empty() {
        return Ok(());
    }
    // Every pick refers to a cursor's current batch (we flush before any cursor moves on).
    let batches: Vec<&RecordBatch> = cursors
        .iter()
        .map(|c| c.batch.as_ref())
        .collect::<Option<Vec<_>>>()
        .unwrap_or_else(|| cursors.iter().filter_map(|c| c.batch.as_ref()).collect());
    let index_of: Vec<Option<usize>> = {
        let mut k = 0;
        cursors
            .iter()
            .map(|c| {
                c.batch.as_ref().map(|_| {
                    k += 1;
                    k - 1
                })
            })
            .collect()
    };
    let mapped: Vec<(usize, usize)> = picks
        .iter()
        .map(|(c, r)| {
            index_of[*c]
                .map(|b| (b, *r))
                .ok_or_else(|| StoreError::Internal("pick from an empty cursor".into()))
        })
        .collect::<Result<_, _>>()?;
    let out_schema = builder.layout().schema.clone();
    let mut columns = Vec::with_capacity(out_schema.fields().len());
    for col in 0..out_schema.fields().len() {
        let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(col).as_ref()).collect();
        columns.push(arrow_select::interleave::interleave(&arrays, &mapped).map_err(StoreError::arrow)?);
    }
    let out = RecordBatch::try_new(out_schema, columns).map_err(StoreError::arrow)?;
    builder.push(&out)?;
    picks.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates a store that level-0 blocks of `head` spans keep arriving in, merging after
    /// each arrival as the maintenance loop would; returns (spans written by merges, blocks left).
    fn simulate(how: Plan, head: u64, heads: usize, target: u64) -> (u64, usize) {
        let mut blocks: Vec<u64> = Vec::new(); // oldest first
        let mut rewritten = 0;
        for _ in 0..heads {
            blocks.push(head);
            loop {
                let small: Vec<usize> = (0..blocks.len()).filter(|&i| blocks[i] < target / 2).collect();
                let sizes: Vec<u64> = small.iter().map(|&i| blocks[i]).collect();
                let group: Vec<usize> = plan(&sizes, target, how).into_iter().map(|i| small[i]).collect();
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

    #[test]
    fn tiered_merges_rewrite_each_span_a_few_times_not_once_per_merge() {
        // ~34,000-span heads (the loader's, cut by head_max_bytes), 2 M target, 60 heads.
        let (any, any_blocks) = simulate(Plan::Any, 34_000, 60, 2_000_000);
        let (tiered, tiered_blocks) = simulate(Plan::Tiered, 34_000, 60, 2_000_000);
        let ingested = 34_000 * 60;
        assert!(tiered <= 2 * ingested, "tiered rewrote {tiered} for {ingested}");
        assert!(any >= 4 * ingested, "oldest-first rewrote {any} for {ingested}");
        // Both leave a handful of blocks behind, not a backlog.
        assert!(tiered_blocks <= 8 && any_blocks <= 8, "{tiered_blocks} / {any_blocks}");
    }

    #[test]
    fn tiered_plan_takes_one_tier_and_enough_of_it() {
        let target = 2_000_000;
        // A big block among small ones is left out; the small ones merge.
        assert_eq!(
            plan(&[300_000, 30_000, 30_000, 30_000, 30_000], target, Plan::Tiered),
            vec![1, 2, 3, 4]
        );
        // Three of a tier are not enough yet.
        assert!(plan(&[300_000, 30_000, 30_000, 30_000], target, Plan::Tiered).is_empty());
        // The tier holding the oldest block goes first, at most MAX_INPUTS of it, oldest first.
        let sizes = [20, 300_000, 300_000, 300_000, 300_000, 20, 20, 20, 20, 20, 20, 20, 20];
        assert_eq!(plan(&sizes, target, Plan::Tiered), vec![0, 5, 6, 7, 8, 9, 10, 11]);
        let sizes = [300_000, 300_000, 300_000, 300_000, 20, 20, 20, 20, 20, 20, 20, 20, 20];
        assert_eq!(plan(&sizes, target, Plan::Tiered), vec![0, 1, 2, 3]);
        // "Any" merges the oldest whatever their sizes.
        assert_eq!(plan(&[300_000, 30_000], target, Plan::Any), vec![0, 1]);
    }
}
