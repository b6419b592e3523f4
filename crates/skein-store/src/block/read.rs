//! Reading blocks: trace by id through bloom + row-group ranges + the trace-id pages, then its
//! other columns on two tasks; column scans for search, summaries, and full scans for compaction.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use arrow_array::{
    Array, BooleanArray, FixedSizeBinaryArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array,
    UInt64Array,
};
use arrow_schema::{DataType, Field, FieldRef, Schema};
use futures::{Stream, StreamExt, TryStreamExt};
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, RowFilter, RowSelection, RowSelector,
};
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::{ColumnChunkMask, PageIndexPolicy, ParquetStatisticsPolicy};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use prost::Message;
use skein_model::otlp::{pb, proto};
use skein_model::*;

use super::bloom::Bloom;
use super::schema::{self, HOT};
use super::sums::BlockSums;
use super::write::{binaries, column, fsb, i64s, strings, u8s, unpack_dropped, SharedBytes, TraceSummary};
use super::{BlockMeta, EventList, LinkList, DATA_FILE, SUMMARY_FILE};
use crate::backend::{Backend, ObjectReader};
use crate::StoreError;

/// Counts the blocks `BlockHandle::note_read_error` found damaged.
pub(crate) fn unreadable_blocks() -> skein_model::metrics::Counter {
    skein_model::metrics::counter(
        "skein_unreadable_blocks_total",
        "Blocks found damaged by a read, and skipped since",
        &[],
    )
}

/// Leaf column index of the trace id in both the span and the summary file.
const TRACE_ID_LEAF: usize = 0;

pub struct BlockHandle {
    pub meta: BlockMeta,
    pub bloom: Bloom,
    /// Checksums of the Parquet files, which every read is checked against (none for blocks
    /// written before them, or whose `sums` file is damaged).
    sums: Option<Arc<BlockSums>>,
    backend: Backend,
    /// Why the block's files could not be read, once a read found them damaged.
    unreadable: std::sync::OnceLock<String>,
    /// Why the last read failed, when it failed for a reason that may pass (`StoreError::
    /// is_unavailable`); cleared by the next read that succeeds.
    failing: std::sync::Mutex<Option<String>>,
    failing_now: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for BlockHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockHandle").field("id", &self.meta.id).finish()
    }
}

impl Drop for BlockHandle {
    /// The block is gone from every snapshot (compacted away or expired): so are its footers.
    fn drop(&mut self) {
        self.backend.footers.remove_block(&self.meta.id);
    }
}

impl BlockHandle {
    pub fn new(meta: BlockMeta, bloom: Bloom, sums: Option<Arc<BlockSums>>, backend: Backend) -> BlockHandle {
        BlockHandle {
            meta,
            bloom,
            sums,
            backend,
            unreadable: std::sync::OnceLock::new(),
            failing: std::sync::Mutex::new(None),
            failing_now: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// What a query makes of one read of this block: the value; nothing when the read found
    /// the block damaged (`note_read_error`, for good) or could not reach its files this time
    /// (noted until a read succeeds, so queries meanwhile say they may be incomplete); or the
    /// error, for anything else.
    pub fn settle<T>(&self, r: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        match r {
            Ok(v) => {
                if self.failing_now.swap(false, Relaxed) {
                    self.failing.lock().unwrap_or_else(|e| e.into_inner()).take();
                    tracing::warn!(block = %self.meta.id, "block is readable again");
                }
                Ok(Some(v))
            }
            Err(e) if e.is_damage() => {
                self.note_read_error(e);
                Ok(None)
            }
            Err(e) if e.is_unavailable() => {
                let why = e.to_string();
                let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
                if failing.as_deref() != Some(why.as_str()) {
                    tracing::error!(
                        block = %self.meta.id,
                        error = %e,
                        "cannot read a block: queries skip it, saying they may be incomplete, and \
                         try it again each time"
                    );
                    *failing = Some(why);
                }
                self.failing_now.store(true, Relaxed);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the last read of this block failed for a reason that may pass (`settle`).
    pub fn is_failing(&self) -> bool {
        self.failing_now.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes note that a read of this block failed with `e`, when `e` says its files are
    /// damaged (`StoreError::is_damage`): from then on snapshots leave the block out, so
    /// queries answer from the other blocks and compaction stops trying to merge it. Its
    /// files stay where they are (retention still deletes them in time). Returns `e`.
    pub fn note_read_error(&self, e: StoreError) -> StoreError {
        if e.is_damage() && self.unreadable.set(e.to_string()).is_ok() {
            tracing::error!(
                block = %self.meta.id,
                spans = self.meta.span_count,
                error = %e,
                "block is unreadable: queries skip it and compaction leaves it alone until restart; \
                 its files stay under blocks/ (restore them from a backup, or delete the directory)"
            );
            unreadable_blocks().inc();
        }
        e
    }

    /// Whether a read found this block damaged (`note_read_error`).
    pub fn is_unreadable(&self) -> bool {
        self.unreadable.get().is_some()
    }

    /// Reads both Parquet files whole, checking every 4 KiB against the block's checksums
    /// (a scrub), and `pace` is awaited after each piece read with its length. A file whose
    /// size is not the one its meta gives is damage too. Returns the bytes read: 0 for a
    /// block without checksums, which there is nothing to check against.
    pub async fn verify<F, Fut>(&self, mut pace: F) -> Result<u64, StoreError>
    where
        F: FnMut(u64) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        use parquet::arrow::async_reader::AsyncFileReader;
        const PIECE: u64 = 1 << 20;
        if self.sums.is_none() {
            return Ok(0);
        }
        let mut read = 0;
        for (file, size) in [
            (DATA_FILE, self.meta.data_bytes),
            (SUMMARY_FILE, self.meta.summary_bytes),
        ] {
            let path = self.backend.block_path(&self.meta.id, file);
            let found = object_store::ObjectStoreExt::head(&self.backend.store, &path)
                .await
                .map_err(StoreError::object)?
                .size;
            if found != size {
                return Err(StoreError::corrupt(format!(
                    "{path} is {found} bytes, its block's meta says {size}"
                )));
            }
            let mut r = self.reader(file, size);
            let mut at = 0;
            while at < size {
                let end = (at + PIECE).min(size);
                r.get_bytes(at..end).await.map_err(StoreError::parquet)?;
                pace(end - at).await;
                read += end - at;
                at = end;
            }
        }
        Ok(read)
    }

    fn reader(&self, file: &str, size: u64) -> ObjectReader {
        let sums = self.sums.as_ref().map(|s| match file {
            SUMMARY_FILE => s.summaries.clone(),
            _ => s.data.clone(),
        });
        ObjectReader::new(
            self.backend.store.clone(),
            self.backend.block_path(&self.meta.id, file),
            size,
            sums,
        )
    }

    async fn data_metadata(&self) -> Result<ArrowReaderMetadata, StoreError> {
        self.file_metadata(DATA_FILE, self.meta.data_bytes).await
    }

    /// A file's Parquet footer, from the backend's footer cache or read and put there. No
    /// query reads Parquet's statistics (the block meta has what pruning needs) except the
    /// trace id pages' min/max, so only those are decoded: with all of them a footer took
    /// megabytes per block. Page locations are decoded for all columns, so a read skips the
    /// pages without selected rows.
    async fn file_metadata(&self, file: &'static str, size: u64) -> Result<ArrowReaderMetadata, StoreError> {
        let cache = &self.backend.footers;
        if let Some(md) = cache.get(&self.meta.id, file) {
            return Ok(md);
        }
        let mut r = self.reader(file, size);
        let opts = ArrowReaderOptions::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .with_column_index_mask(ColumnChunkMask::columns([TRACE_ID_LEAF]))
            .with_column_stats_policy(ParquetStatisticsPolicy::SkipAll)
            .with_encoding_stats_policy(ParquetStatisticsPolicy::SkipAll)
            .with_size_stats_policy(ParquetStatisticsPolicy::SkipAll);
        let mut md = ArrowReaderMetadata::load_async(&mut r, opts)
            .await
            .map_err(StoreError::parquet)?;
        if file == DATA_FILE {
            md = with_shared_bytes(md)?;
        }
        cache.insert(&self.meta.id, file, md.clone());
        Ok(md)
    }

    /// A row filter keeping the rows whose `column` (trace ids) is in `ids`.
    fn trace_id_filter(md: &ArrowReaderMetadata, column: &str, ids: HashSet<TraceId>) -> Result<RowFilter, StoreError> {
        let idx = md
            .schema()
            .index_of(column)
            .map_err(|_| StoreError::corrupt(format!("no column {column}")))?;
        let mask = ProjectionMask::roots(md.parquet_schema(), [idx]);
        let predicate = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
            let col = batch
                .column(0)
                .as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .ok_or_else(|| arrow_schema::ArrowError::SchemaError("trace id column type".into()))?;
            Ok(holding_ids(col, &ids))
        });
        Ok(RowFilter::new(vec![Box::new(predicate)]))
    }

    /// The rows of `groups` (numbered across them, as a `RowSelection` counts) on trace-id
    /// pages whose min..=max admits one of `ids`, from the page statistics, and the same rows
    /// numbered in the whole file; `None` where a block has none (a trace lookup then decodes
    /// the whole trace-id column of its row groups; format-4 blocks always have them). A
    /// lookup then decodes one 1,024-row trace-id page instead of the whole column chunk, and
    /// from every other column only the page holding those rows.
    fn trace_id_pages(
        md: &ArrowReaderMetadata,
        groups: &[usize],
        ids: &[TraceId],
    ) -> Option<(RowSelection, Vec<Range<u64>>)> {
        let group_starts: Vec<u64> = md
            .metadata()
            .row_groups()
            .iter()
            .scan(0u64, |at, g| {
                let start = *at;
                *at += g.num_rows() as u64;
                Some(start)
            })
            .collect();
        let mut selectors = Vec::new();
        let mut in_file = Vec::new();
        for &g in groups {
            let index = md.metadata().page_index_for_row_group(g);
            let Some(ColumnIndexMetaData::FIXED_LEN_BYTE_ARRAY(stats)) = index.column_index(TRACE_ID_LEAF) else {
                return None;
            };
            let pages = index.offset_index(TRACE_ID_LEAF)?.page_locations();
            let rows = md.metadata().row_group(g).num_rows() as usize;
            for (p, page) in pages.iter().enumerate() {
                let first = page.first_row_index as usize;
                let end = pages.get(p + 1).map_or(rows, |next| next.first_row_index as usize);
                let len = end.checked_sub(first)?;
                let admits = match (stats.min_value(p), stats.max_value(p)) {
                    (Some(min), Some(max)) => ids.iter().any(|id| min <= id.as_slice() && id.as_slice() <= max),
                    _ => false, // a page of nulls; trace ids are never null
                };
                if admits {
                    selectors.push(RowSelector::select(len));
                    let at = group_starts[g] + first as u64;
                    in_file.push(at..at + len as u64);
                } else {
                    selectors.push(RowSelector::skip(len));
                }
            }
        }
        Some((selectors.into(), in_file))
    }

    /// Row groups whose trace id range admits one of `ids`.
    fn row_groups_for(&self, ids: &[TraceId]) -> Vec<usize> {
        self.meta
            .row_groups
            .iter()
            .enumerate()
            .filter(|(_, g)| ids.iter().any(|id| g.min_trace <= *id && *id <= g.max_trace))
            .map(|(i, _)| i)
            .collect()
    }

    pub fn may_contain(&self, id: &TraceId) -> bool {
        self.bloom.may_contain(id) && !self.row_groups_for(&[*id]).is_empty()
    }

    /// Every span of trace `id` in this block.
    pub async fn trace(&self, id: &TraceId) -> Result<Vec<Span>, StoreError> {
        self.read_trace(id, false).await
    }

    /// The spans of trace `id` in this block with only what a trace summary needs: ids,
    /// parent, name, kind, times, status code, and a resource of just `service.name`. Reads
    /// a tenth of the columns `trace` reads.
    pub async fn trace_outline(&self, id: &TraceId) -> Result<Vec<Span>, StoreError> {
        self.read_trace(id, true).await
    }

    async fn read_trace(&self, id: &TraceId, outline: bool) -> Result<Vec<Span>, StoreError> {
        if !self.bloom.may_contain(id) {
            return Ok(Vec::new());
        }
        let groups = self.row_groups_for(&[*id]);
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let md = self.data_metadata().await?;
        let pages = Self::trace_id_pages(&md, &groups, &[*id]).map(|(selection, _)| selection);
        if !outline {
            return self.read_whole_trace(md, groups, pages, id).await;
        }
        let filter = Self::trace_id_filter(&md, schema::TRACE_ID, HashSet::from([*id]))?;
        let outline_mask = {
            let has = |c: &str| md.schema().index_of(c).is_ok();
            // Format 1 blocks have no parent offsets; a block without the service column
            // gives the service through its resources.
            let mut columns: Vec<&str> = OUTLINE_COLUMNS.iter().copied().filter(|c| has(c)).collect();
            if !has(schema::SERVICE) {
                columns.push(schema::RESOURCE);
            }
            self.projection(&md, &columns)?
        };
        let mut builder =
            ParquetRecordBatchStreamBuilder::new_with_metadata(self.reader(DATA_FILE, self.meta.data_bytes), md)
                .with_row_groups(groups)
                .with_row_filter(filter)
                .with_projection(outline_mask);
        if let Some(pages) = pages {
            builder = builder.with_row_selection(pages);
        }
        let stream = builder.build().map_err(StoreError::parquet)?;
        let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(StoreError::parquet)?;
        let mut parents = ParentResolver::default();
        let decimals = self.decimal_columns();
        let mut out = Vec::new();
        for b in batches {
            out.extend(batch_to_spans(&parents.resolve(doubles(b, &decimals)?)?)?);
        }
        Ok(out)
    }

    /// Every span of trace `id` in `groups`, whose trace-id pages `pages` picks. The rows are
    /// found first, from the trace-id column alone; then the columns in wide pages (events,
    /// starts, durations: most of the decompression) and the dedicated ones are read on a task
    /// each while this one reads the rest. So a lookup on an idle server uses both cores, and
    /// the blocking pool's reads of one part overlap the decoding of the others (three parts
    /// gave a median p99 ~19 % below two; docs/benchmarks.md, "Trace lookups on two cores" and
    /// session 36). (Letting each read find the rows with its own row filter instead was no
    /// faster.)
    async fn read_whole_trace(
        &self,
        md: ArrowReaderMetadata,
        groups: Vec<usize>,
        pages: Option<RowSelection>,
        id: &TraceId,
    ) -> Result<Vec<Span>, StoreError> {
        let Some(rows) = self.rows_of_trace(&md, &groups, pages, id).await? else {
            return Ok(Vec::new());
        };
        // The trace-id column is not read again: every row holds `id`.
        let columns = md.schema().fields().iter().map(|f| f.name().as_str());
        let (mut wide, mut dedicated, mut rest) = (Vec::new(), Vec::new(), Vec::new());
        for c in columns.filter(|c| *c != schema::TRACE_ID) {
            if super::write::WIDE_PAGE_COLUMNS.contains(&c) {
                wide.push(c);
            } else if c.starts_with(schema::DEDICATED_PREFIX) {
                dedicated.push(c);
            } else {
                rest.push(c);
            }
        }
        let read = |columns: &[&str]| {
            self.stored_rows(
                md.clone(),
                columns,
                Some(groups.clone()),
                Some(rows.clone()),
                BATCH_ROWS,
            )
        };
        // A block may have no dedicated columns: no task for nothing.
        let others = [wide, dedicated]
            .iter()
            .filter(|columns| !columns.is_empty())
            .map(|columns| {
                Ok(AbortOnDrop(tokio::spawn(
                    read(columns)?.try_collect::<Vec<RecordBatch>>(),
                )))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut parts: Vec<Vec<RecordBatch>> = vec![read(&rest)?.try_collect().await?];
        for other in others {
            parts.push(
                other
                    .join()
                    .await
                    .map_err(|e| StoreError::Internal(format!("reading a trace's columns failed: {e}")))??,
            );
        }
        let batch = side_by_side(&parts, id)?;
        batch_to_spans(&ParentResolver::default().resolve(batch)?)
    }

    /// The rows of trace `id` in `groups` (numbered across them, as a `RowSelection` counts),
    /// found by reading the trace-id pages `pages` picks (all, when `None`); `None` when none
    /// holds it.
    async fn rows_of_trace(
        &self,
        md: &ArrowReaderMetadata,
        groups: &[usize],
        pages: Option<RowSelection>,
        id: &TraceId,
    ) -> Result<Option<RowSelection>, StoreError> {
        let batches: Vec<RecordBatch> = self
            .stored_rows(
                md.clone(),
                &[schema::TRACE_ID],
                Some(groups.to_vec()),
                pages.clone(),
                BATCH_ROWS,
            )?
            .try_collect()
            .await?;
        let wanted = HashSet::from([*id]);
        let matches = batches
            .iter()
            .map(|b| Ok(holding_ids(fsb(b, schema::TRACE_ID)?, &wanted)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        if matches.iter().all(|m| m.true_count() == 0) {
            return Ok(None);
        }
        let found = RowSelection::from_filters(&matches);
        Ok(Some(match pages {
            Some(pages) => pages.and_then(&found),
            None => found,
        }))
    }

    /// The named columns of the block's last `rows` rows (its newest trace ids, not its newest
    /// spans). `columns` must not name `parent_span_id`: the first rows read may be a trace's
    /// middle, whose parent offsets point before them.
    pub async fn scan_last_rows(&self, columns: &[&str], rows: usize) -> Result<Vec<RecordBatch>, StoreError> {
        let Some(last) = self.meta.row_groups.len().checked_sub(1) else {
            return Ok(Vec::new());
        };
        let md = self.data_metadata().await?;
        let in_group = md.metadata().row_group(last).num_rows() as usize;
        let skip = in_group.saturating_sub(rows);
        let selection = RowSelection::from(vec![RowSelector::skip(skip), RowSelector::select(in_group - skip)]);
        let mask = self.projection(&md, columns)?;
        let batches: Vec<RecordBatch> =
            ParquetRecordBatchStreamBuilder::new_with_metadata(self.reader(DATA_FILE, self.meta.data_bytes), md)
                .with_projection(mask)
                .with_row_groups(vec![last])
                .with_row_selection(selection)
                .build()
                .map_err(StoreError::parquet)?
                .try_collect()
                .await
                .map_err(StoreError::parquet)?;
        let decimals = self.decimal_columns();
        batches.into_iter().map(|b| doubles(b, &decimals)).collect()
    }

    /// Reads the named columns of the chosen row groups (all when `None`).
    pub async fn scan(&self, columns: &[&str], row_groups: Option<Vec<usize>>) -> Result<Vec<RecordBatch>, StoreError> {
        self.stream(columns, row_groups).await?.try_collect().await
    }

    pub async fn stream(
        &self,
        columns: &[&str],
        row_groups: Option<Vec<usize>>,
    ) -> Result<impl Stream<Item = Result<RecordBatch, StoreError>> + Send + 'static, StoreError> {
        self.stream_batches(columns, row_groups, BATCH_ROWS).await
    }

    pub async fn stream_batches(
        &self,
        columns: &[&str],
        row_groups: Option<Vec<usize>>,
        batch_rows: usize,
    ) -> Result<impl Stream<Item = Result<RecordBatch, StoreError>> + Send + 'static, StoreError> {
        let md = self.data_metadata().await?;
        let mut wanted: Vec<&str> = columns.to_vec();
        // Parents are stored as offsets within the trace: resolving them needs the ids too.
        let offsets = columns.contains(&schema::PARENT_SPAN_ID) && md.schema().index_of(schema::PARENT_OFFSET).is_ok();
        if offsets {
            for c in [schema::TRACE_ID, schema::SPAN_ID, schema::PARENT_OFFSET] {
                if !wanted.contains(&c) {
                    wanted.push(c);
                }
            }
        }
        let mut parents = ParentResolver::default();
        Ok(self
            .stored_rows(md, &wanted, row_groups, None, batch_rows)?
            .map(move |r| r.and_then(|b| parents.resolve(b))))
    }

    /// The named columns of the chosen row groups (all when `None`), of the rows `selection`
    /// picks in them (all when `None`), as the file stores them (typed as `md` says; decimal
    /// columns as doubles).
    fn stored_rows(
        &self,
        md: ArrowReaderMetadata,
        columns: &[&str],
        row_groups: Option<Vec<usize>>,
        selection: Option<RowSelection>,
        batch_rows: usize,
    ) -> Result<impl Stream<Item = Result<RecordBatch, StoreError>> + Send + 'static, StoreError> {
        let mask = self.projection(&md, columns)?;
        let mut b =
            ParquetRecordBatchStreamBuilder::new_with_metadata(self.reader(DATA_FILE, self.meta.data_bytes), md)
                .with_projection(mask)
                .with_batch_size(batch_rows);
        if let Some(g) = row_groups {
            b = b.with_row_groups(g);
        }
        if let Some(selection) = selection {
            b = b.with_row_selection(selection);
        }
        let decimals = self.decimal_columns();
        Ok(b.build()
            .map_err(StoreError::parquet)?
            .map(move |r| r.map_err(StoreError::parquet).and_then(|b| doubles(b, &decimals))))
    }

    /// The block's decimal columns (`Dedicated::decimals`): name and decimal places.
    fn decimal_columns(&self) -> Vec<(String, u8)> {
        self.meta
            .dedicated
            .iter()
            .filter_map(|d| Some((d.column(), d.decimals?)))
            .collect()
    }

    /// Rows of the chosen row groups with their parents as stored, for following parent links
    /// without span ids: `trace_id`, `parent_offset` (rows back within the trace;
    /// 0 when the parent is not in this block, and then `parent_span_id` holds its id, or null
    /// for a root), `parent_span_id`, `start_unix_nano`, and `service_name` as a dictionary.
    /// Batches come in row order and every row group starts at a trace's first row, so an
    /// offset points at a row already seen. `None` for blocks without parent offsets.
    pub async fn stream_parent_links(
        &self,
        row_groups: Vec<usize>,
    ) -> Result<Option<impl Stream<Item = Result<RecordBatch, StoreError>> + Send + 'static>, StoreError> {
        let md = self.data_metadata().await?;
        let has = |c: &str| md.schema().index_of(c).is_ok();
        if !has(schema::PARENT_OFFSET) || !has(schema::SERVICE) {
            return Ok(None);
        }
        let md = self.with_dictionaries(md, &[schema::SERVICE])?;
        let columns = [
            schema::TRACE_ID,
            schema::PARENT_SPAN_ID,
            schema::PARENT_OFFSET,
            schema::START,
            schema::SERVICE,
        ];
        self.stored_rows(md, &columns, Some(row_groups), None, BATCH_ROWS)
            .map(Some)
    }

    /// The rows of `row_groups` whose parent is not an earlier row of their trace in this
    /// block, each as (trace, parent's id, service): the children `BlockCalls::unresolved`
    /// counts. Only those rows keep a parent id, so this reads that column, null elsewhere,
    /// and then the trace ids and services of those rows alone, in the same order.
    pub async fn unresolved_children(
        &self,
        row_groups: Vec<usize>,
    ) -> Result<Vec<(TraceId, SpanId, String)>, StoreError> {
        let md = self.data_metadata().await?;
        // Without parent offsets (format 1) every child keeps its parent's id: such a block
        // has no counted calls, and its rows must be read whole.
        if md.schema().index_of(schema::PARENT_OFFSET).is_err() {
            return Err(StoreError::corrupt(format!(
                "block {} lists calls but has no parent offsets",
                self.meta.id
            )));
        }
        let parents: Vec<RecordBatch> = self
            .stored_rows(
                md.clone(),
                &[schema::PARENT_SPAN_ID],
                Some(row_groups.clone()),
                None,
                BATCH_ROWS,
            )?
            .try_collect()
            .await?;
        let mut kept: Vec<BooleanArray> = Vec::with_capacity(parents.len());
        let mut parent_ids: Vec<SpanId> = Vec::new();
        for b in &parents {
            let column = fsb(b, schema::PARENT_SPAN_ID)?;
            kept.push(BooleanArray::from_iter(
                (0..b.num_rows()).map(|i| Some(column.is_valid(i))),
            ));
            for id in column.iter().flatten() {
                parent_ids.push(id.try_into().map_err(|_| StoreError::corrupt("parent id width"))?);
            }
        }
        if parent_ids.is_empty() {
            return Ok(Vec::new());
        }
        let selection = RowSelection::from_filters(&kept);
        let batches: Vec<RecordBatch> = self
            .stored_rows(
                md,
                &[schema::TRACE_ID, schema::SERVICE],
                Some(row_groups),
                Some(selection),
                BATCH_ROWS,
            )?
            .try_collect()
            .await?;
        let mut out = Vec::with_capacity(parent_ids.len());
        let mut parents = parent_ids.into_iter();
        for b in &batches {
            let (traces, services) = (fsb(b, schema::TRACE_ID)?, strings(b, schema::SERVICE)?);
            for i in 0..b.num_rows() {
                let trace = traces
                    .value(i)
                    .try_into()
                    .map_err(|_| StoreError::corrupt("trace id width"))?;
                let parent = parents
                    .next()
                    .ok_or_else(|| StoreError::corrupt("more unresolved rows than parent ids"))?;
                if parent != [0; 8] {
                    out.push((trace, parent, services.value(i).to_string()));
                }
            }
        }
        Ok(out)
    }

    /// The named columns, as a projection of this block's file.
    fn projection(&self, md: &ArrowReaderMetadata, columns: &[&str]) -> Result<ProjectionMask, StoreError> {
        let mut idx: Vec<usize> = columns
            .iter()
            .map(|c| {
                md.schema()
                    .index_of(c)
                    .map_err(|_| StoreError::corrupt(format!("block {} has no column {c}", self.meta.id)))
            })
            .collect::<Result<_, _>>()?;
        idx.sort_unstable();
        Ok(ProjectionMask::roots(md.parquet_schema(), idx))
    }

    /// Streams the `output` columns of the rows `keep` selects in the given row groups. `keep`
    /// sees batches of the `filter` columns only; the output columns are decoded just for the
    /// rows it keeps, and their pages without such rows are not read at all — most of a
    /// search's work when few spans match. Few-valued string columns reach `keep` as
    /// dictionary arrays. `output` must not name `parent_span_id`; it may name
    /// `schema::ROW_NUMBER`, each kept row's position in the span table (an `Int64` column
    /// the reader counts, nothing decoded; `keep`'s batches then carry it too, as Parquet
    /// adds virtual columns to every read).
    pub async fn scan_where<F>(
        &self,
        filter: &[&str],
        mut keep: F,
        output: &[&str],
        row_groups: Vec<usize>,
    ) -> Result<impl Stream<Item = Result<RecordBatch, StoreError>> + Send + 'static, StoreError>
    where
        F: FnMut(RecordBatch) -> Result<BooleanArray, arrow_schema::ArrowError> + Send + 'static,
    {
        let mut md = self.with_dictionaries(self.data_metadata().await?, filter)?;
        let stored: Vec<&str> = output.iter().copied().filter(|c| *c != schema::ROW_NUMBER).collect();
        if stored.len() < output.len() {
            md = with_row_numbers(md)?;
        }
        let decimals = self.decimal_columns();
        let filter_decimals = decimals.clone();
        let predicate = ArrowPredicateFn::new(self.projection(&md, filter)?, move |b| {
            keep(doubles(b, &filter_decimals).map_err(|e| arrow_schema::ArrowError::ExternalError(Box::new(e)))?)
        });
        let mask = self.projection(&md, &stored)?;
        let stream =
            ParquetRecordBatchStreamBuilder::new_with_metadata(self.reader(DATA_FILE, self.meta.data_bytes), md)
                .with_projection(mask)
                .with_row_groups(row_groups)
                .with_row_filter(RowFilter::new(vec![Box::new(predicate)]))
                .with_batch_size(8192)
                .build()
                .map_err(StoreError::parquet)?;
        Ok(stream.map(move |r| r.map_err(StoreError::parquet).and_then(|b| doubles(b, &decimals))))
    }

    /// The footer with the few-valued string columns among `columns` read as dictionaries
    /// (`Dictionary(Int32, Utf8)`): a row filter then compares each row's dictionary index
    /// instead of a string copied out of the dictionary for every row.
    fn with_dictionaries(&self, md: ArrowReaderMetadata, columns: &[&str]) -> Result<ArrowReaderMetadata, StoreError> {
        let few_valued = super::write::few_valued_columns(&self.meta.layout());
        retyped(md, |f| {
            let few = f.data_type() == &DataType::Utf8
                && columns.contains(&f.name().as_str())
                && few_valued.iter().any(|c| c == f.name());
            few.then(|| DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)))
        })
    }

    /// Summaries of those of `ids` this block holds.
    pub async fn summaries(&self, ids: &HashSet<TraceId>) -> Result<Vec<TraceSummary>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let md = self.file_metadata(SUMMARY_FILE, self.meta.summary_bytes).await?;
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(
            self.reader(SUMMARY_FILE, self.meta.summary_bytes),
            md.clone(),
        );
        // Formats 1 to 3 keep the trace ids in the table: compare them, and decode the other
        // columns for the rows kept only. From format 4 the rows are found from the span table.
        let stores_ids = md.schema().index_of(schema::SUM_TRACE_ID).is_ok();
        // Format 7 takes each trace's start from its first row in the span table.
        let stores_starts = md.schema().index_of(schema::SUM_START).is_ok();
        let mut found = BTreeMap::new();
        if stores_ids {
            builder = builder.with_row_filter(Self::trace_id_filter(&md, schema::SUM_TRACE_ID, ids.clone())?);
        } else {
            found = self.summary_rows(ids, !stores_starts).await?;
            if found.is_empty() {
                return Ok(Vec::new());
            }
            builder = builder.with_row_selection(just_rows(found.keys().map(|&t| t as u64)));
        }
        let batches: Vec<RecordBatch> = builder
            .build()
            .map_err(StoreError::parquet)?
            .try_collect()
            .await
            .map_err(StoreError::parquet)?;
        let mut found_ids = found.into_values();
        let mut out = Vec::new();
        for b in &batches {
            let tid = if stores_ids {
                Some(fsb(b, schema::SUM_TRACE_ID)?)
            } else {
                None
            };
            let rs = strings(b, schema::SUM_ROOT_SERVICE)?;
            let rn = strings(b, schema::SUM_ROOT_NAME)?;
            let st: Option<&Int64Array> = if stores_starts {
                Some(column(b, schema::SUM_START)?)
            } else {
                None
            };
            // Format 4 stores each trace's duration, older formats its end.
            let durations = b.column_by_name(schema::SUM_DURATION).is_some();
            let en: &Int64Array = column(
                b,
                if durations {
                    schema::SUM_DURATION
                } else {
                    schema::SUM_END
                },
            )?;
            let sc: &UInt32Array = column(b, schema::SUM_SPANS)?;
            let ec: &UInt32Array = column(b, schema::SUM_ERRORS)?;
            let sv = strings(b, schema::SUM_SERVICES)?;
            for i in 0..b.num_rows() {
                let (id, first_start): (TraceId, Option<i64>) = match tid {
                    Some(tid) => (
                        tid.value(i)
                            .try_into()
                            .map_err(|_| StoreError::corrupt("trace id width"))?,
                        None,
                    ),
                    None => found_ids
                        .next()
                        .ok_or_else(|| StoreError::corrupt("more summaries read than selected"))?,
                };
                let start = match (st, first_start) {
                    (Some(st), _) => st.value(i),
                    (None, Some(start)) => start,
                    (None, None) => return Err(StoreError::corrupt("a summary without its trace's start")),
                };
                if !ids.contains(&id) {
                    continue;
                }
                let root = rs.value(i);
                let (has_root, root_service) = match root.strip_prefix('\u{1}') {
                    Some(r) => (false, r.to_string()),
                    None => (true, root.to_string()),
                };
                out.push(TraceSummary {
                    trace_id: id,
                    root_service,
                    root_name: rn.value(i).to_string(),
                    has_root,
                    start: start as u64,
                    end: if durations {
                        (start as u64).saturating_add(en.value(i) as u64)
                    } else {
                        en.value(i) as u64
                    },
                    span_count: sc.value(i),
                    error_count: ec.value(i),
                    services: sv
                        .value(i)
                        .split('\n')
                        .filter_map(|p| p.rsplit_once('='))
                        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(0)))
                        .collect(),
                });
            }
        }
        Ok(out)
    }

    /// The summary-table rows of those of `ids` this block holds (format 4 on), with the
    /// start of the trace's first row when `starts` (format 7). The table has a row per trace
    /// in the span table's order, with the trace's row count: the running total of the counts
    /// is where each trace starts, which its first row must match.
    async fn summary_rows(
        &self,
        ids: &HashSet<TraceId>,
        starts: bool,
    ) -> Result<BTreeMap<usize, (TraceId, Option<i64>)>, StoreError> {
        let firsts = self.first_rows(ids, starts).await?;
        let mut rows = BTreeMap::new();
        if firsts.is_empty() {
            return Ok(rows);
        }
        let traces = self.trace_rows().await?;
        for (first, id) in firsts {
            match traces.binary_search(&first) {
                Ok(trace) if trace + 1 < traces.len() => rows.insert(trace, id),
                _ => return Err(self.summaries_disagree(first)),
            };
        }
        Ok(rows)
    }

    /// Where each trace's rows start in the span table, in the table's order, followed by the
    /// table's row count: the running total of the summary table's span counts. Only for
    /// blocks whose summaries are found by row (`BlockMeta::summaries_by_row`; the summary
    /// tables of formats 1 to 3 keep trace ids instead). A search maps the rows it matches to
    /// traces with these, without decoding their trace ids.
    pub async fn trace_rows(&self) -> Result<Vec<u64>, StoreError> {
        let md = self.file_metadata(SUMMARY_FILE, self.meta.summary_bytes).await?;
        if md.schema().index_of(schema::SUM_TRACE_ID).is_ok() {
            return Err(StoreError::corrupt(format!(
                "block {}: its summary table keeps trace ids, but its format finds summaries by row",
                self.meta.id
            )));
        }
        let counts = self.projection(&md, &[schema::SUM_SPANS])?;
        let traces = md.metadata().file_metadata().num_rows() as usize;
        let batches: Vec<RecordBatch> =
            ParquetRecordBatchStreamBuilder::new_with_metadata(self.reader(SUMMARY_FILE, self.meta.summary_bytes), md)
                .with_projection(counts)
                .build()
                .map_err(StoreError::parquet)?
                .try_collect()
                .await
                .map_err(StoreError::parquet)?;
        let mut firsts = Vec::with_capacity(traces + 1);
        let mut row = 0u64;
        firsts.push(row);
        for b in &batches {
            for &count in column::<UInt32Array>(b, schema::SUM_SPANS)?.values() {
                row += count as u64;
                firsts.push(row);
            }
        }
        let stored = self.data_metadata().await?.metadata().file_metadata().num_rows() as u64;
        if row != stored {
            return Err(StoreError::corrupt(format!(
                "block {}: its trace summaries count {row} spans, its span table holds {stored}",
                self.meta.id
            )));
        }
        Ok(firsts)
    }

    /// The trace ids of the given rows of the span table (ascending, no repeats), in order.
    pub async fn trace_ids_at(&self, rows: &[u64]) -> Result<Vec<TraceId>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let md = self.data_metadata().await?;
        let selection = just_rows(rows.iter().copied());
        let mut stream = self.stored_rows(md, &[schema::TRACE_ID], None, Some(selection), BATCH_ROWS)?;
        let mut ids = Vec::with_capacity(rows.len());
        while let Some(b) = stream.try_next().await? {
            let tid = fsb(&b, schema::TRACE_ID)?;
            for i in 0..b.num_rows() {
                ids.push(
                    tid.value(i)
                        .try_into()
                        .map_err(|_| StoreError::corrupt("trace id width"))?,
                );
            }
        }
        // The rows were checked against the file's row count: a shortfall is the reader's.
        if ids.len() != rows.len() {
            return Err(StoreError::Internal(format!(
                "block {}: {} of {} rows read",
                self.meta.id,
                ids.len(),
                rows.len()
            )));
        }
        Ok(ids)
    }

    fn summaries_disagree(&self, first: u64) -> StoreError {
        StoreError::corrupt(format!(
            "block {}: a trace starts at row {first} of the span table, where no summary's trace starts",
            self.meta.id
        ))
    }

    /// The first row in the span table of each of `ids` this block holds, read from the
    /// trace-id pages that may hold them, with that row's start when `starts`.
    async fn first_rows(
        &self,
        ids: &HashSet<TraceId>,
        starts: bool,
    ) -> Result<BTreeMap<u64, (TraceId, Option<i64>)>, StoreError> {
        let mut firsts = BTreeMap::new();
        let wanted: Vec<TraceId> = ids.iter().copied().collect();
        let groups = self.row_groups_for(&wanted);
        if groups.is_empty() {
            return Ok(firsts);
        }
        let md = self.data_metadata().await?;
        let Some((selection, in_file)) = Self::trace_id_pages(&md, &groups, &wanted) else {
            return Err(StoreError::corrupt(format!(
                "block {} has no trace-id page index",
                self.meta.id
            )));
        };
        let columns: &[&str] = if starts {
            &[schema::TRACE_ID, schema::START]
        } else {
            &[schema::TRACE_ID]
        };
        let trace_ids = self.projection(&md, columns)?;
        let mut stream =
            ParquetRecordBatchStreamBuilder::new_with_metadata(self.reader(DATA_FILE, self.meta.data_bytes), md)
                .with_projection(trace_ids)
                .with_row_groups(groups)
                .with_row_selection(selection)
                .build()
                .map_err(StoreError::parquet)?;
        // Selected rows come in file order: number them through `in_file`. Every page holding
        // a wanted trace is selected, so its rows come one after another, the first first.
        let mut rows = in_file.into_iter().flatten();
        let mut previous = None;
        while let Some(b) = stream.try_next().await.map_err(StoreError::parquet)? {
            let tid = fsb(&b, schema::TRACE_ID)?;
            let row_starts = if starts { Some(i64s(&b, schema::START)?) } else { None };
            for i in 0..b.num_rows() {
                let row = rows
                    .next()
                    .ok_or_else(|| StoreError::corrupt("more trace-id rows read than selected"))?;
                let id: TraceId = tid
                    .value(i)
                    .try_into()
                    .map_err(|_| StoreError::corrupt("trace id width"))?;
                if previous != Some(id) && ids.contains(&id) {
                    firsts.insert(row, (id, row_starts.map(|s| s.value(i))));
                }
                previous = Some(id);
            }
        }
        Ok(firsts)
    }
}

/// A data file's footer with the resource and scope columns read as dictionaries
/// (`schema::shared_bytes`) whatever the file says: blocks written before they were built as
/// dictionaries store a plain `Binary` Arrow type over the same Parquet column.
fn with_shared_bytes(md: ArrowReaderMetadata) -> Result<ArrowReaderMetadata, StoreError> {
    retyped(md, |f| {
        let shared = [schema::RESOURCE, schema::SCOPE].contains(&f.name().as_str());
        (shared && f.data_type() == &DataType::Binary).then(schema::shared_bytes)
    })
}

/// A selection of just the given rows (ascending, no repeats).
fn just_rows(rows: impl Iterator<Item = u64>) -> RowSelection {
    let mut selectors = Vec::new();
    let mut at = 0;
    for row in rows {
        selectors.push(RowSelector::skip((row - at) as usize));
        selectors.push(RowSelector::select(1));
        at = row + 1;
    }
    selectors.into()
}

/// `md` reading each row's position in the file alongside, as `schema::ROW_NUMBER`.
fn with_row_numbers(md: ArrowReaderMetadata) -> Result<ArrowReaderMetadata, StoreError> {
    let numbers = Field::new(schema::ROW_NUMBER, DataType::Int64, false).with_extension_type(parquet::arrow::RowNumber);
    // Not `StoreError::parquet`, which would take the block for damaged: the footer decoded.
    let failed = |e: parquet::errors::ParquetError| StoreError::Internal(format!("numbering rows: {e}"));
    let options = ArrowReaderOptions::new()
        .with_schema(md.schema().clone())
        .with_virtual_columns(vec![Arc::new(numbers)])
        .map_err(failed)?;
    ArrowReaderMetadata::try_new(md.metadata().clone(), options).map_err(failed)
}

/// `md` with the Arrow type of the columns `retype` gives a type for changed to it.
fn retyped(
    md: ArrowReaderMetadata,
    retype: impl Fn(&FieldRef) -> Option<DataType>,
) -> Result<ArrowReaderMetadata, StoreError> {
    let schema = md.schema();
    if !schema.fields().iter().any(|f| retype(f).is_some()) {
        return Ok(md);
    }
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| match retype(f) {
            Some(t) => Arc::new(f.as_ref().clone().with_data_type(t)),
            None => f.clone(),
        })
        .collect();
    let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    ArrowReaderMetadata::try_new(md.metadata().clone(), ArrowReaderOptions::new().with_schema(schema))
        .map_err(StoreError::parquet)
}

/// The columns of a trace outline (`BlockHandle::trace_outline`).
const OUTLINE_COLUMNS: &[&str] = &[
    schema::TRACE_ID,
    schema::SPAN_ID,
    schema::PARENT_SPAN_ID,
    schema::PARENT_OFFSET,
    schema::NAME,
    schema::KIND,
    schema::START,
    schema::DURATION,
    schema::STATUS_CODE,
    schema::SERVICE,
];

/// Turns on-disk parent offsets back into parent span ids. Batches must come in file order
/// and start at a trace's first row (row groups never split a trace; a lookup's selection of
/// a trace's rows, by row filter or by `rows_of_trace`, keeps whole traces). Batches without
/// offsets (format 1 blocks) pass through unchanged.
#[derive(Default)]
pub(crate) struct ParentResolver {
    trace: Option<TraceId>,
    /// Span ids of the current trace's rows so far, by position.
    ids: Vec<SpanId>,
}

impl ParentResolver {
    pub(crate) fn resolve(&mut self, b: RecordBatch) -> Result<RecordBatch, StoreError> {
        let Ok(offset_col) = b.schema().index_of(schema::PARENT_OFFSET) else {
            return Ok(b);
        };
        let offsets: &UInt32Array = column(&b, schema::PARENT_OFFSET)?;
        let tid = fsb(&b, schema::TRACE_ID)?;
        let sid = fsb(&b, schema::SPAN_ID)?;
        let stored = fsb(&b, schema::PARENT_SPAN_ID)?;
        let mut parents = arrow_array::builder::FixedSizeBinaryBuilder::with_capacity(b.num_rows(), 8);
        for i in 0..b.num_rows() {
            let t: TraceId = tid
                .value(i)
                .try_into()
                .map_err(|_| StoreError::corrupt("trace id width"))?;
            if self.trace != Some(t) {
                self.trace = Some(t);
                self.ids.clear();
            }
            let off = offsets.value(i) as usize;
            let parent: SpanId = if off > 0 {
                let at =
                    self.ids.len().checked_sub(off).ok_or_else(|| {
                        StoreError::corrupt(format!("parent offset {off} before the start of its trace"))
                    })?;
                self.ids[at]
            } else if stored.is_null(i) {
                [0; 8]
            } else {
                stored
                    .value(i)
                    .try_into()
                    .map_err(|_| StoreError::corrupt("parent id width"))?
            };
            parents.append_value(parent).map_err(StoreError::arrow)?;
            self.ids.push(
                sid.value(i)
                    .try_into()
                    .map_err(|_| StoreError::corrupt("span id width"))?,
            );
        }
        let mut fields: Vec<arrow_schema::FieldRef> = b.schema().fields().iter().cloned().collect();
        let mut columns = b.columns().to_vec();
        fields.remove(offset_col);
        columns.remove(offset_col);
        let p = b.schema().index_of(schema::PARENT_SPAN_ID).map_err(StoreError::arrow)?;
        fields[p] = Arc::new(arrow_schema::Field::new(
            schema::PARENT_SPAN_ID,
            arrow_schema::DataType::FixedSizeBinary(8),
            false,
        ));
        columns[p] = Arc::new(parents.finish());
        RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns).map_err(StoreError::arrow)
    }
}

/// Decodes record batches back into spans. Ids, name, kind, times and status code are
/// required; any other column may be left out of the read (an outline, a block's tail), and
/// its fields are then empty. Without the resource column, the resource holds only
/// `service.name`, from the service column.
pub fn batch_to_spans(b: &RecordBatch) -> Result<Vec<Span>, StoreError> {
    fn optional<'a, T>(
        b: &'a RecordBatch,
        name: &str,
        get: impl Fn(&'a RecordBatch, &str) -> Result<&'a T, StoreError>,
    ) -> Result<Option<&'a T>, StoreError> {
        b.column_by_name(name).map(|_| get(b, name)).transpose()
    }
    let tid = fsb(b, schema::TRACE_ID)?;
    let sid = fsb(b, schema::SPAN_ID)?;
    // Absent when the reader did not ask for parents (a block's tail read for autocomplete).
    let pid = optional(b, schema::PARENT_SPAN_ID, fsb)?;
    let name = strings(b, schema::NAME)?;
    let kind = u8s(b, schema::KIND)?;
    let start = i64s(b, schema::START)?;
    let dur = i64s(b, schema::DURATION)?;
    let scode = u8s(b, schema::STATUS_CODE)?;
    let smsg = optional(b, schema::STATUS_MESSAGE, strings)?;
    let tstate = optional(b, schema::TRACE_STATE, strings)?;
    let flags = optional(b, schema::FLAGS, column::<UInt32Array>)?;
    let res = SharedBytes::column(b, schema::RESOURCE)?;
    let service = optional(b, schema::SERVICE, strings)?;
    let scope = SharedBytes::column(b, schema::SCOPE)?;
    let attrs = optional(b, schema::ATTRS, binaries)?;
    let events = optional(b, schema::EVENTS, binaries)?;
    let links = optional(b, schema::LINKS, binaries)?;
    let dropped = optional(b, schema::DROPPED, column::<UInt64Array>)?;
    // Hot and dedicated columns read, by key.
    let hot: Vec<(&str, &dyn Array)> = HOT
        .iter()
        .filter_map(|(c, key, _)| Some((*key, b.column_by_name(c)?.as_ref())))
        .collect();

    let batch_schema = b.schema();
    let dedicated: Vec<(&str, &dyn Array)> = batch_schema
        .fields()
        .iter()
        .zip(b.columns())
        .filter_map(|(f, a)| Some((f.name().strip_prefix(schema::DEDICATED_PREFIX)?, a.as_ref())))
        .collect();
    // Decoded once per distinct message, by key.
    let mut resources: Vec<Option<Arc<Resource>>> = vec![None; res.map_or(0, |r| r.distinct())];
    let mut services: HashMap<&str, Arc<Resource>> = HashMap::new();
    let mut scopes: Vec<Option<Arc<Scope>>> = vec![None; scope.map_or(0, |s| s.distinct())];
    let no_scope = Arc::new(Scope::default());
    let no_resource = Arc::new(Resource::default());
    let mut out = Vec::with_capacity(b.num_rows());
    for i in 0..b.num_rows() {
        let r = match (res, service) {
            (Some(res), _) => {
                let k = res.key(i);
                match &resources[k] {
                    Some(r) => r.clone(),
                    None => {
                        let decoded = pb::resource::v1::Resource::decode(res.message(k)).map_err(StoreError::decode)?;
                        let r = Arc::new(proto::resource_from(decoded));
                        resources[k] = Some(r.clone());
                        r
                    }
                }
            }
            (None, Some(service)) => services
                .entry(service.value(i))
                .or_insert_with(|| {
                    Arc::new(Resource {
                        attributes: vec![KeyValue::string("service.name", service.value(i))],
                        dropped_attributes_count: 0,
                    })
                })
                .clone(),
            (None, None) => no_resource.clone(),
        };
        let sc = match scope {
            None => no_scope.clone(),
            Some(scope) => {
                let k = scope.key(i);
                match &scopes[k] {
                    Some(s) => s.clone(),
                    None => {
                        let decoded = pb::common::v1::InstrumentationScope::decode(scope.message(k))
                            .map_err(StoreError::decode)?;
                        let s = Arc::new(proto::scope_from(decoded));
                        scopes[k] = Some(s.clone());
                        s
                    }
                }
            }
        };
        let mut attributes = Vec::new();
        for (key, a) in &hot {
            if a.is_null(i) {
                continue;
            }
            if let Some(v) = typed_value(*a, i) {
                attributes.push(KeyValue::new(*key, v));
            }
        }
        for (key, a) in &dedicated {
            if !a.is_null(i) {
                if let Some(v) = typed_value(*a, i) {
                    attributes.push(KeyValue::new(*key, v));
                }
            }
        }
        if let Some(attrs) = attrs {
            let rest = pb::common::v1::KeyValueList::decode(attrs.value(i)).map_err(StoreError::decode)?;
            attributes.extend(proto::attrs_from(rest.values));
        }
        let (da, de, dl) = dropped.map_or((0, 0, 0), |d| unpack_dropped(d.value(i)));
        let start_ns = start.value(i) as u64;
        let mut span = Span {
            trace_id: tid
                .value(i)
                .try_into()
                .map_err(|_| StoreError::corrupt("trace id width"))?,
            span_id: sid
                .value(i)
                .try_into()
                .map_err(|_| StoreError::corrupt("span id width"))?,
            parent_span_id: match pid {
                Some(pid) => pid
                    .value(i)
                    .try_into()
                    .map_err(|_| StoreError::corrupt("parent id width"))?,
                None => [0; 8],
            },
            trace_state: tstate.map(|c| c.value(i).to_string()).unwrap_or_default(),
            flags: flags.map_or(0, |c| c.value(i)),
            name: name.value(i).to_string(),
            kind: SpanKind::from_i32(kind.value(i) as i32).unwrap_or_default(),
            start_unix_nano: start_ns,
            end_unix_nano: start_ns + dur.value(i) as u64,
            attributes,
            dropped_attributes_count: da,
            events: Vec::new(),
            dropped_events_count: de,
            links: Vec::new(),
            dropped_links_count: dl,
            status: Status {
                code: StatusCode::from_i32(scode.value(i) as i32).unwrap_or_default(),
                message: smsg.map(|c| c.value(i).to_string()).unwrap_or_default(),
            },
            resource: r,
            scope: sc,
        };
        if let Some(events) = events.filter(|c| c.is_valid(i) && !c.value(i).is_empty()) {
            let ev = EventList::decode(events.value(i)).map_err(StoreError::decode)?;
            span.events = ev
                .events
                .into_iter()
                .map(|e| Event {
                    time_unix_nano: e.time(start_ns),
                    name: e.name,
                    attributes: proto::attrs_from(e.attributes),
                    dropped_attributes_count: e.dropped_attributes_count,
                })
                .collect();
        }
        if let Some(links) = links.filter(|c| !c.value(i).is_empty()) {
            let ls = LinkList::decode(links.value(i)).map_err(StoreError::decode)?;
            span.links = ls
                .links
                .into_iter()
                .filter_map(|l| {
                    Some(Link {
                        trace_id: l.trace_id.as_slice().try_into().ok()?,
                        span_id: l.span_id.as_slice().try_into().ok()?,
                        trace_state: l.trace_state,
                        attributes: proto::attrs_from(l.attributes),
                        dropped_attributes_count: l.dropped_attributes_count,
                        flags: l.flags,
                    })
                })
                .collect();
        }
        out.push(span);
    }
    Ok(out)
}

/// `b` with the named decimal columns (integers of `10^-decimals`, `Dedicated::decimals`)
/// turned back into the doubles they stand for; unchanged when it holds none of them.
fn doubles(b: RecordBatch, decimals: &[(String, u8)]) -> Result<RecordBatch, StoreError> {
    let schema = b.schema();
    if !decimals.iter().any(|(name, _)| schema.index_of(name).is_ok()) {
        return Ok(b);
    }
    let mut fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
    let mut columns = b.columns().to_vec();
    for (name, places) in decimals {
        let Ok(i) = schema.index_of(name) else {
            continue;
        };
        let ints: &Int64Array = column(&b, name)?;
        let values: Float64Array = ints.unary(|n| schema::from_decimal(n, *places));
        fields[i] = Arc::new(fields[i].as_ref().clone().with_data_type(DataType::Float64));
        columns[i] = Arc::new(values);
    }
    RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
        columns,
    )
    .map_err(StoreError::arrow)
}

/// The value at row `i` of a typed attribute column (hot or dedicated).
pub fn typed_value(a: &dyn Array, i: usize) -> Option<AnyValue> {
    let any = a.as_any();
    if let Some(x) = any.downcast_ref::<StringArray>() {
        return Some(AnyValue::String(x.value(i).to_string()));
    }
    if let Some(x) = any.downcast_ref::<Int64Array>() {
        return Some(AnyValue::Int(x.value(i)));
    }
    if let Some(x) = any.downcast_ref::<Float64Array>() {
        return Some(AnyValue::Double(x.value(i)));
    }
    if let Some(x) = any.downcast_ref::<BooleanArray>() {
        return Some(AnyValue::Bool(x.value(i)));
    }
    None
}

/// Rows per batch of a block's reads that decode whole row groups or traces.
const BATCH_ROWS: usize = 8192;

/// Which rows of a trace-id column hold one of `ids` (one id, as a trace lookup asks, is
/// compared directly; a set is hashed).
fn holding_ids(col: &FixedSizeBinaryArray, ids: &HashSet<TraceId>) -> BooleanArray {
    let single = if ids.len() == 1 { ids.iter().next() } else { None };
    BooleanArray::from_iter((0..col.len()).map(|i| {
        let id: Option<TraceId> = col.value(i).try_into().ok();
        Some(match single {
            Some(want) => id.as_ref() == Some(want),
            None => id.is_some_and(|id| ids.contains(&id)),
        })
    }))
}

/// A task aborted when its handle is dropped (a lookup given up stops its other reads).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One batch of the columns of `parts`, reads of the same rows, plus the trace-id column,
/// which holds `id` in every row.
fn side_by_side(parts: &[Vec<RecordBatch>], id: &TraceId) -> Result<RecordBatch, StoreError> {
    let parts = parts.iter().map(|p| concat(p)).collect::<Result<Vec<_>, _>>()?;
    let rows = parts.iter().flatten().next().map_or(0, RecordBatch::num_rows);
    let mut fields: Vec<FieldRef> = vec![Arc::new(arrow_schema::Field::new(
        schema::TRACE_ID,
        DataType::FixedSizeBinary(16),
        false,
    ))];
    let ids =
        FixedSizeBinaryArray::try_from_iter(std::iter::repeat_n(id.as_slice(), rows)).map_err(StoreError::arrow)?;
    let mut columns: Vec<arrow_array::ArrayRef> = vec![Arc::new(ids)];
    let mut metadata = HashMap::new();
    for b in parts.iter().flatten() {
        if b.num_rows() != rows {
            return Err(StoreError::Internal(format!(
                "the reads of a trace's rows gave {rows} and {} rows",
                b.num_rows()
            )));
        }
        metadata.extend(b.schema().metadata().clone());
        fields.extend(b.schema().fields().iter().cloned());
        columns.extend(b.columns().iter().cloned());
    }
    RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, metadata)), columns).map_err(StoreError::arrow)
}

/// `batches` as one batch (`None` for none).
fn concat(batches: &[RecordBatch]) -> Result<Option<RecordBatch>, StoreError> {
    match batches {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        // Not `StoreError::arrow`: that marks the block damaged, and a failure here (offsets
        // of a huge trace past 2 GiB) says nothing about the file.
        many => arrow_select::concat::concat_batches(&many[0].schema(), many)
            .map(Some)
            .map_err(|e| StoreError::Internal(format!("joining a trace's batches: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build_block, upload_block};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;

    /// A lookup's other reads run on spawned tasks: when the lookup is dropped (its client went
    /// away, or its time limit passed), those tasks must stop too, not read on for nobody.
    #[tokio::test]
    async fn a_dropped_lookup_part_stops_its_task() {
        let (held, closed) = tokio::sync::oneshot::channel::<()>();
        let part = AbortOnDrop(tokio::spawn(async move {
            let _held = held;
            std::future::pending::<()>().await
        }));
        tokio::task::yield_now().await;
        drop(part);
        // The task is aborted, so the sender it held is dropped and the channel closes. A wait
        // this long only ends the test if that never happens; it is not a measure of speed.
        let woke = tokio::time::timeout(std::time::Duration::from_secs(30), closed).await;
        assert!(matches!(woke, Ok(Err(_))), "the part's task still runs: {woke:?}");
    }

    /// `traces` traces of 1 to 7 spans from three services, some with errors, some without
    /// their root.
    fn spans(traces: u64) -> Vec<Span> {
        let mut out = Vec::new();
        for t in 0..traces {
            let trace_id: TraceId = (t.wrapping_mul(0x9e37_79b9_7f4a_7c15) as u128 * 0x1_0000_0001).to_be_bytes();
            let start = 1_795_000_000_000_000_000 + t * 1_000_003;
            for s in 0..=(t % 7) {
                out.push(Span {
                    trace_id,
                    span_id: (t * 8 + s + 1).to_be_bytes(),
                    parent_span_id: if s == 0 && t % 5 != 0 {
                        [0; 8]
                    } else {
                        (t * 8 + 9).to_be_bytes()
                    },
                    name: format!("op-{}", (t + s) % 4),
                    start_unix_nano: start + s * 1_000,
                    end_unix_nano: start + s * 1_000 + 50_000 * (s + 1),
                    status: Status {
                        code: if (t + s) % 11 == 0 {
                            StatusCode::Error
                        } else {
                            StatusCode::Unset
                        },
                        message: String::new(),
                    },
                    resource: Arc::new(Resource {
                        attributes: vec![KeyValue::string("service.name", format!("svc-{}", (t + s) % 3))],
                        dropped_attributes_count: 0,
                    }),
                    ..Default::default()
                });
            }
        }
        out
    }

    /// An older summary table of the same rows: with each trace's start (`starts`) before its
    /// duration (formats 4 to 6), and with `ids` the trace ids first and each trace's end
    /// instead of its duration (format 3).
    fn older_table(summaries: &[u8], starts: &[i64], ids: Option<&[TraceId]>) -> Vec<u8> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(summaries))
            .expect("summary table")
            .build()
            .expect("reader");
        let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
        let table = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).expect("one batch");
        let int64 = |name: &str, values: Vec<i64>| -> (FieldRef, arrow_array::ArrayRef) {
            (
                Arc::new(arrow_schema::Field::new(name, DataType::Int64, false)),
                Arc::new(Int64Array::from(values)),
            )
        };
        let mut out: Vec<(FieldRef, arrow_array::ArrayRef)> = Vec::new();
        if let Some(ids) = ids {
            out.push((
                Arc::new(arrow_schema::Field::new(
                    schema::SUM_TRACE_ID,
                    DataType::FixedSizeBinary(16),
                    false,
                )),
                Arc::new(FixedSizeBinaryArray::try_from_iter(ids.iter()).expect("trace id column")),
            ));
        }
        for (f, c) in table.schema().fields().iter().zip(table.columns()) {
            if f.name() != schema::SUM_DURATION {
                out.push((f.clone(), c.clone()));
                continue;
            }
            out.push(int64(schema::SUM_START, starts.to_vec()));
            if ids.is_some() {
                let durations: &Int64Array = column(&table, schema::SUM_DURATION).expect("durations");
                let ends = starts.iter().zip(durations.values()).map(|(s, d)| s + d).collect();
                out.push(int64(schema::SUM_END, ends));
            } else {
                out.push((f.clone(), c.clone()));
            }
        }
        let (fields, columns): (Vec<FieldRef>, Vec<arrow_array::ArrayRef>) = out.into_iter().unzip();
        let old = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("older table");
        let mut w = ArrowWriter::try_new(Vec::new(), old.schema(), None).expect("writer");
        w.write(&old).expect("write");
        w.into_inner().expect("file")
    }

    /// Summaries are found through their traces' first rows in the span table (format 4),
    /// or by the trace ids of the summary table (formats 1 to 3), and all answer as the spans
    /// say (format 4's durations turned back into ends; format 7's starts taken from the
    /// traces' first rows, formats 4 to 6 keep them in the table): a few traces, every trace,
    /// the first and the last, and a trace not in the block.
    #[tokio::test]
    async fn summaries_are_found_by_first_row_and_in_older_blocks_by_id() {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = Backend::local(dir.path().to_path_buf(), 1 << 20).expect("backend");
        let spans = spans(9_000); // ~36,000 rows: three level-0 row groups, ~35 trace-id pages each
        let refs: Vec<&Span> = spans.iter().collect();
        let mut by_trace: BTreeMap<TraceId, Vec<&Span>> = BTreeMap::new();
        for s in &spans {
            by_trace.entry(s.trace_id).or_default().push(s);
        }
        let ids: Vec<TraceId> = by_trace.keys().copied().collect();

        let new = build_block(&refs, "01NEWFORMAT".into(), 0, std::time::Duration::MAX).expect("build");
        assert!(
            new.meta.row_groups.len() >= 3,
            "{} row groups",
            new.meta.row_groups.len()
        );
        let mut old = build_block(&refs, "01OLDFORMAT".into(), 0, std::time::Duration::MAX).expect("build");
        let starts: Vec<i64> = by_trace
            .values()
            .map(|spans| spans.iter().map(|s| s.start_unix_nano as i64).min().expect("a span"))
            .collect();
        old.summaries = older_table(&old.summaries, &starts, Some(&ids));
        old.meta.summary_bytes = old.summaries.len() as u64;
        old.meta.format = 3;
        let mut six = build_block(&refs, "01FORMATSIX".into(), 0, std::time::Duration::MAX).expect("build");
        assert!(
            ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(six.summaries.clone()))
                .expect("summary table")
                .schema()
                .index_of(schema::SUM_START)
                .is_err(),
            "format 7 keeps no starts in the summary table"
        );
        six.summaries = older_table(&six.summaries, &starts, None);
        six.meta.summary_bytes = six.summaries.len() as u64;
        six.meta.format = 6;
        let new = upload_block(&backend, new).await.expect("upload");
        let old = upload_block(&backend, old).await.expect("upload");
        let six = upload_block(&backend, six).await.expect("upload");
        // Row groups are cut between traces: each one's first trace differs from the last
        // trace of the group before it.
        let mut previous_last: Option<TraceId> = None;
        for g in 0..new.meta.row_groups.len() {
            let batches = new.scan(&[schema::TRACE_ID], Some(vec![g])).await.expect("row group");
            let tids: Vec<TraceId> = batches
                .iter()
                .flat_map(|b| {
                    let t = fsb(b, schema::TRACE_ID).expect("trace ids");
                    (0..b.num_rows())
                        .map(|i| t.value(i).try_into().expect("16 bytes"))
                        .collect::<Vec<_>>()
                })
                .collect();
            assert_ne!(
                previous_last,
                tids.first().copied(),
                "row group {g} begins inside a trace"
            );
            previous_last = tids.last().copied();
        }

        let missing: TraceId = [0xab; 16];
        let asks: Vec<HashSet<TraceId>> = vec![
            ids.iter().step_by(97).copied().collect(),
            ids.iter().copied().collect(),
            HashSet::from([ids[0]]),
            HashSet::from([ids[ids.len() - 1], missing]),
            HashSet::from([missing]),
        ];
        for block in [&new, &six, &old] {
            for ask in &asks {
                let mut got = block.summaries(ask).await.expect("summaries");
                got.sort_by_key(|s| s.trace_id);
                let want: Vec<TraceSummary> = by_trace
                    .iter()
                    .filter(|(id, _)| ask.contains(*id))
                    .map(|(id, spans)| TraceSummary::from_spans(*id, spans.iter().copied()))
                    .collect();
                assert_eq!(got.len(), want.len(), "block {} asked {} ids", block.meta.id, ask.len());
                assert!(got == want, "block {} asked {} ids", block.meta.id, ask.len());
            }
        }
        assert!(
            new.meta.summary_bytes + 16 * ids.len() as u64 <= old.meta.summary_bytes,
            "{} against {}",
            new.meta.summary_bytes,
            old.meta.summary_bytes
        );
    }
}
