//! Building a block: spans (sorted by trace id, start) → Parquet data file, trace summary
//! table, bloom filter and meta.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, FixedSizeBinaryBuilder, Int64Builder, StringBuilder, UInt32Builder, UInt64Builder,
    UInt8Builder,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, FixedSizeBinaryArray, Int64Array, RecordBatch, StringArray, UInt8Array,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use skein_model::otlp::wire;
use skein_model::{AnyValue, Span, TraceId};

use super::bloom::Bloom;
use super::schema::{self, HotType, HOT};
use super::{BlockMeta, RowGroupMeta, ROW_GROUP_ROWS};
use crate::StoreError;

/// zstd level by compaction level: blocks cut from the head are written fast (level 1, they
/// compete with ingest for CPU); compaction rewrites them smaller (level 6).
fn zstd_level(level: u32) -> i32 {
    if level == 0 {
        1
    } else {
        6
    }
}

fn props(row_group_rows: usize, level: u32) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(zstd_level(level)).expect("valid level"),
        ))
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_data_page_row_count_limit(1024)
        .set_statistics_enabled(EnabledStatistics::Page);
    // Random ids and timestamps gain nothing from a dictionary; deltas shrink timestamps.
    for c in [schema::SPAN_ID, schema::PARENT_SPAN_ID] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(c), false);
    }
    for c in [schema::START, schema::DURATION] {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(c), false)
            .set_column_encoding(ColumnPath::from(c), Encoding::DELTA_BINARY_PACKED);
    }
    b.build()
}

/// Hot keys whose value went to the generic column in any of these spans.
pub fn generic_hot_keys(spans: &[&Span]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen = [false; HOT.len()];
    for s in spans {
        seen.iter_mut().for_each(|x| *x = false);
        for kv in &s.attributes {
            if let Some(i) = schema::hot_index(&kv.key) {
                let fits = matches!(
                    (HOT[i].2, &kv.value),
                    (HotType::Str, AnyValue::String(_))
                        | (HotType::Int, AnyValue::Int(_))
                        | (HotType::Bool, AnyValue::Bool(_))
                );
                if seen[i] || !fits {
                    out.insert(kv.key.clone());
                }
                seen[i] |= fits;
            }
        }
    }
    out
}

/// Turns spans into one record batch of the block schema.
pub fn spans_to_batch(spans: &[&Span]) -> Result<RecordBatch, StoreError> {
    let n = spans.len();
    let mut trace_id = FixedSizeBinaryBuilder::with_capacity(n, 16);
    let mut span_id = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut parent = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut name = StringBuilder::with_capacity(n, n * 16);
    let mut kind = UInt8Builder::with_capacity(n);
    let mut start = Int64Builder::with_capacity(n);
    let mut duration = Int64Builder::with_capacity(n);
    let mut status_code = UInt8Builder::with_capacity(n);
    let mut status_message = StringBuilder::new();
    let mut trace_state = StringBuilder::new();
    let mut flags = UInt32Builder::with_capacity(n);
    let mut service = StringBuilder::with_capacity(n, n * 8);
    let mut resource = BinaryBuilder::new();
    let mut scope = BinaryBuilder::new();
    let mut hot_str: Vec<StringBuilder> = HOT.iter().map(|_| StringBuilder::new()).collect();
    let mut hot_int: Vec<Int64Builder> = HOT.iter().map(|_| Int64Builder::new()).collect();
    let mut hot_bool: Vec<BooleanBuilder> = HOT.iter().map(|_| BooleanBuilder::new()).collect();
    let mut attrs = BinaryBuilder::new();
    let mut events = BinaryBuilder::new();
    let mut links = BinaryBuilder::new();
    let mut dropped = UInt64Builder::with_capacity(n);

    // Resources and scopes are shared `Arc`s: encode each once per batch.
    let mut last_res: Option<(*const skein_model::Resource, Vec<u8>)> = None;
    let mut last_scope: Option<(*const skein_model::Scope, Vec<u8>)> = None;
    let mut buf = Vec::new();
    let mut hot_vals: Vec<Option<&AnyValue>> = vec![None; HOT.len()];

    for s in spans {
        trace_id.append_value(s.trace_id).map_err(StoreError::arrow)?;
        span_id.append_value(s.span_id).map_err(StoreError::arrow)?;
        parent.append_value(s.parent_span_id).map_err(StoreError::arrow)?;
        name.append_value(&s.name);
        kind.append_value(s.kind as u8);
        start.append_value(s.start_unix_nano as i64);
        duration.append_value(s.duration_nano() as i64);
        status_code.append_value(s.status.code as u8);
        status_message.append_value(&s.status.message);
        trace_state.append_value(&s.trace_state);
        flags.append_value(s.flags);
        service.append_value(s.service_name());

        let rp = Arc::as_ptr(&s.resource);
        if last_res.as_ref().is_none_or(|(p, _)| *p != rp) {
            let mut b = Vec::new();
            wire::resource(&s.resource, &mut b);
            last_res = Some((rp, b));
        }
        resource.append_value(&last_res.as_ref().expect("set above").1);
        let sp = Arc::as_ptr(&s.scope);
        if last_scope.as_ref().is_none_or(|(p, _)| *p != sp) {
            let mut b = Vec::new();
            wire::scope(&s.scope, &mut b);
            last_scope = Some((sp, b));
        }
        scope.append_value(&last_scope.as_ref().expect("set above").1);

        // Split attributes into hot columns and the generic remainder.
        hot_vals.iter_mut().for_each(|v| *v = None);
        let mut rest = Vec::new();
        for kv in &s.attributes {
            let fits = schema::hot_index(&kv.key).filter(|&i| {
                hot_vals[i].is_none()
                    && matches!(
                        (HOT[i].2, &kv.value),
                        (HotType::Str, AnyValue::String(_))
                            | (HotType::Int, AnyValue::Int(_))
                            | (HotType::Bool, AnyValue::Bool(_))
                    )
            });
            match fits {
                Some(i) => hot_vals[i] = Some(&kv.value),
                None => rest.push(kv),
            }
        }
        for (i, (_, _, t)) in HOT.iter().enumerate() {
            match (t, hot_vals[i]) {
                (HotType::Str, Some(AnyValue::String(v))) => hot_str[i].append_value(v),
                (HotType::Str, _) => hot_str[i].append_null(),
                (HotType::Int, Some(AnyValue::Int(v))) => hot_int[i].append_value(*v),
                (HotType::Int, _) => hot_int[i].append_null(),
                (HotType::Bool, Some(AnyValue::Bool(v))) => hot_bool[i].append_value(*v),
                (HotType::Bool, _) => hot_bool[i].append_null(),
            }
        }
        buf.clear();
        wire::key_value_list(rest, &mut buf);
        attrs.append_value(&buf);

        buf.clear();
        wire::event_list(&s.events, &mut buf);
        events.append_value(&buf);
        buf.clear();
        wire::link_list(&s.links, &mut buf);
        links.append_value(&buf);
        dropped.append_value(pack_dropped(
            s.dropped_attributes_count,
            s.dropped_events_count,
            s.dropped_links_count,
        ));
    }

    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(trace_id.finish()),
        Arc::new(span_id.finish()),
        Arc::new(parent.finish()),
        Arc::new(name.finish()),
        Arc::new(kind.finish()),
        Arc::new(start.finish()),
        Arc::new(duration.finish()),
        Arc::new(status_code.finish()),
        Arc::new(status_message.finish()),
        Arc::new(trace_state.finish()),
        Arc::new(flags.finish()),
        Arc::new(service.finish()),
        Arc::new(resource.finish()),
        Arc::new(scope.finish()),
    ];
    for (i, (_, _, t)) in HOT.iter().enumerate() {
        columns.push(match t {
            HotType::Str => Arc::new(hot_str[i].finish()),
            HotType::Int => Arc::new(hot_int[i].finish()),
            HotType::Bool => Arc::new(hot_bool[i].finish()),
        });
    }
    columns.push(Arc::new(attrs.finish()));
    columns.push(Arc::new(events.finish()));
    columns.push(Arc::new(links.finish()));
    columns.push(Arc::new(dropped.finish()));
    RecordBatch::try_new(schema::SPANS.clone(), columns).map_err(StoreError::arrow)
}

const DROPPED_BITS: u32 = 21;
const DROPPED_MASK: u64 = (1 << DROPPED_BITS) - 1;

fn pack_dropped(a: u32, e: u32, l: u32) -> u64 {
    (a as u64).min(DROPPED_MASK)
        | (e as u64).min(DROPPED_MASK) << DROPPED_BITS
        | (l as u64).min(DROPPED_MASK) << (2 * DROPPED_BITS)
}

pub fn unpack_dropped(v: u64) -> (u32, u32, u32) {
    (
        (v & DROPPED_MASK) as u32,
        (v >> DROPPED_BITS & DROPPED_MASK) as u32,
        (v >> (2 * DROPPED_BITS) & DROPPED_MASK) as u32,
    )
}

/// The summary of one trace within one block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceSummary {
    pub trace_id: TraceId,
    pub root_service: String,
    pub root_name: String,
    pub has_root: bool,
    pub start: u64,
    pub end: u64,
    pub span_count: u32,
    pub error_count: u32,
    pub services: BTreeMap<String, u32>,
}

impl TraceSummary {
    fn new(trace_id: TraceId) -> Self {
        TraceSummary {
            trace_id,
            start: u64::MAX,
            ..Default::default()
        }
    }

    /// Folds in one span (root = the earliest span without a parent; else the earliest span).
    pub fn add(&mut self, service: &str, name: &str, is_root: bool, start: u64, end: u64, error: bool) {
        let earlier = start < self.start;
        if (is_root && (!self.has_root || earlier)) || (!self.has_root && earlier) {
            self.root_service = service.to_string();
            self.root_name = name.to_string();
            self.has_root = is_root;
        }
        self.start = self.start.min(start);
        self.end = self.end.max(end);
        self.span_count += 1;
        self.error_count += error as u32;
        match self.services.get_mut(service) {
            Some(n) => *n += 1,
            None => {
                self.services.insert(service.to_string(), 1);
            }
        }
    }

    /// Combines summaries of one trace from several blocks or the head.
    pub fn merge(&mut self, o: &TraceSummary) {
        if (o.has_root && (!self.has_root || o.start < self.start)) || (!self.has_root && o.start < self.start) {
            self.root_service = o.root_service.clone();
            self.root_name = o.root_name.clone();
            self.has_root = o.has_root;
        }
        self.start = self.start.min(o.start);
        self.end = self.end.max(o.end);
        self.span_count += o.span_count;
        self.error_count += o.error_count;
        for (k, v) in &o.services {
            *self.services.entry(k.clone()).or_default() += v;
        }
    }

    pub fn from_spans<'a>(trace_id: TraceId, spans: impl IntoIterator<Item = &'a Span>) -> TraceSummary {
        let mut s = TraceSummary::new(trace_id);
        for sp in spans {
            s.add(
                sp.service_name(),
                &sp.name,
                sp.is_root(),
                sp.start_unix_nano,
                sp.end_unix_nano,
                sp.is_error(),
            );
        }
        s
    }
}

/// A block ready to be uploaded.
pub struct BuiltBlock {
    pub data: Vec<u8>,
    pub summaries: Vec<u8>,
    pub bloom: Vec<u8>,
    pub meta: BlockMeta,
}

/// Streams sorted record batches into a block, computing summaries, bloom and meta on the way.
pub struct BlockBuilder {
    writer: ArrowWriter<Vec<u8>>,
    row_group_rows: usize,
    rows: u64,
    meta: BlockMeta,
    current: Option<TraceSummary>,
    summaries: Vec<TraceSummary>,
    services: BTreeMap<String, BTreeSet<(String, u8)>>,
}

impl BlockBuilder {
    pub fn new(id: String, level: u32) -> Result<BlockBuilder, StoreError> {
        Self::with_row_group_rows(id, level, ROW_GROUP_ROWS)
    }

    pub fn with_row_group_rows(id: String, level: u32, row_group_rows: usize) -> Result<BlockBuilder, StoreError> {
        let writer = ArrowWriter::try_new(
            Vec::with_capacity(8 << 20),
            schema::SPANS.clone(),
            Some(props(row_group_rows, level)),
        )
        .map_err(StoreError::parquet)?;
        Ok(BlockBuilder {
            writer,
            row_group_rows,
            rows: 0,
            meta: BlockMeta::new(id, level),
            current: None,
            summaries: Vec::new(),
            services: BTreeMap::new(),
        })
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends rows; callers keep the whole block sorted by (trace id, start).
    pub fn push(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        let trace_ids = fsb(batch, schema::TRACE_ID)?;
        let parents = fsb(batch, schema::PARENT_SPAN_ID)?;
        let names = strings(batch, schema::NAME)?;
        let services = strings(batch, schema::SERVICE)?;
        let kinds = u8s(batch, schema::KIND)?;
        let starts = i64s(batch, schema::START)?;
        let durations = i64s(batch, schema::DURATION)?;
        let status = u8s(batch, schema::STATUS_CODE)?;
        for i in 0..batch.num_rows() {
            let tid: TraceId = trace_ids
                .value(i)
                .try_into()
                .map_err(|_| StoreError::corrupt("trace id width"))?;
            let start = starts.value(i) as u64;
            let end = start + durations.value(i) as u64;
            let rg = (self.rows / self.row_group_rows as u64) as usize;
            if rg == self.meta.row_groups.len() {
                self.meta.row_groups.push(RowGroupMeta {
                    min_trace: tid,
                    max_trace: tid,
                    min_start: start,
                    max_end: end,
                    rows: 0,
                });
            }
            let g = &mut self.meta.row_groups[rg];
            g.max_trace = tid;
            g.min_start = g.min_start.min(start);
            g.max_end = g.max_end.max(end);
            g.rows += 1;
            self.rows += 1;

            if self.current.as_ref().is_none_or(|c| c.trace_id != tid) {
                if let Some(done) = self.current.take() {
                    self.summaries.push(done);
                }
                self.current = Some(TraceSummary::new(tid));
            }
            let service = services.value(i);
            let name = names.value(i);
            let is_root = parents.value(i) == [0u8; 8];
            self.current
                .as_mut()
                .expect("set above")
                .add(service, name, is_root, start, end, status.value(i) == 2);
            // Lookups by &str: this runs for every row, allocations only for new names.
            let kind = kinds.value(i);
            let known = self
                .services
                .get(service)
                .is_some_and(|ops| ops.iter().any(|(n, k)| *k == kind && n == name));
            if !known {
                self.services
                    .entry(service.to_string())
                    .or_default()
                    .insert((name.to_string(), kind));
            }
            self.meta.min_start = self.meta.min_start.min(start);
            self.meta.max_end = self.meta.max_end.max(end);
        }
        self.writer.write(batch).map_err(StoreError::parquet)
    }

    pub fn finish(mut self) -> Result<BuiltBlock, StoreError> {
        if let Some(done) = self.current.take() {
            self.summaries.push(done);
        }
        let data = self.writer.into_inner().map_err(StoreError::parquet)?;
        // Spans of one trace can arrive in two cuts of the same block input only if the caller
        // broke the sort; merge adjacent duplicates defensively.
        self.summaries.dedup_by(|b, a| {
            if a.trace_id == b.trace_id {
                a.merge(b);
                true
            } else {
                false
            }
        });
        let mut bloom = Bloom::with_capacity(self.summaries.len());
        for s in &self.summaries {
            bloom.insert(&s.trace_id);
        }
        let summaries = write_summaries(&self.summaries)?;
        let mut meta = self.meta;
        meta.span_count = self.rows;
        meta.trace_count = self.summaries.len() as u64;
        meta.data_bytes = data.len() as u64;
        meta.summary_bytes = summaries.len() as u64;
        meta.services = self
            .services
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect();
        Ok(BuiltBlock {
            data,
            summaries,
            bloom: bloom.to_bytes(),
            meta,
        })
    }
}

fn write_summaries(sums: &[TraceSummary]) -> Result<Vec<u8>, StoreError> {
    let mut tid = FixedSizeBinaryBuilder::with_capacity(sums.len(), 16);
    let mut root_service = StringBuilder::new();
    let mut root_name = StringBuilder::new();
    let mut start = Int64Builder::new();
    let mut end = Int64Builder::new();
    let mut spans = UInt32Builder::new();
    let mut errors = UInt32Builder::new();
    let mut services = StringBuilder::new();
    for s in sums {
        tid.append_value(s.trace_id).map_err(StoreError::arrow)?;
        // A summary without a real root is marked so merging across blocks can prefer a root.
        root_service.append_value(if s.has_root {
            s.root_service.clone()
        } else {
            format!("\u{1}{}", s.root_service)
        });
        root_name.append_value(&s.root_name);
        start.append_value(s.start as i64);
        end.append_value(s.end as i64);
        spans.append_value(s.span_count);
        errors.append_value(s.error_count);
        let joined: Vec<String> = s.services.iter().map(|(k, v)| format!("{k}={v}")).collect();
        services.append_value(joined.join("\n"));
    }
    let batch = RecordBatch::try_new(
        schema::SUMMARIES.clone(),
        vec![
            Arc::new(tid.finish()),
            Arc::new(root_service.finish()),
            Arc::new(root_name.finish()),
            Arc::new(start.finish()),
            Arc::new(end.finish()),
            Arc::new(spans.finish()),
            Arc::new(errors.finish()),
            Arc::new(services.finish()),
        ],
    )
    .map_err(StoreError::arrow)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid level")))
        .set_column_dictionary_enabled(ColumnPath::from(schema::SUM_TRACE_ID), false)
        .build();
    let mut w =
        ArrowWriter::try_new(Vec::new(), schema::SUMMARIES.clone(), Some(props)).map_err(StoreError::parquet)?;
    w.write(&batch).map_err(StoreError::parquet)?;
    w.into_inner().map_err(StoreError::parquet)
}

// ---- typed column access -----------------------------------------------------------------

pub(crate) fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, StoreError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| StoreError::corrupt(format!("column {name} missing or of the wrong type")))
}
pub(crate) fn fsb<'a>(b: &'a RecordBatch, n: &str) -> Result<&'a FixedSizeBinaryArray, StoreError> {
    column(b, n)
}
pub(crate) fn strings<'a>(b: &'a RecordBatch, n: &str) -> Result<&'a StringArray, StoreError> {
    column(b, n)
}
pub(crate) fn u8s<'a>(b: &'a RecordBatch, n: &str) -> Result<&'a UInt8Array, StoreError> {
    column(b, n)
}
pub(crate) fn i64s<'a>(b: &'a RecordBatch, n: &str) -> Result<&'a Int64Array, StoreError> {
    column(b, n)
}
pub(crate) fn binaries<'a>(b: &'a RecordBatch, n: &str) -> Result<&'a BinaryArray, StoreError> {
    column(b, n)
}
