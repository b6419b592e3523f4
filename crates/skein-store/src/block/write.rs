//! Building a block: spans (sorted by trace id, start) → Parquet data file, trace summary
//! table, bloom filter and meta.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, FixedSizeBinaryBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    UInt32Builder, UInt64Builder, UInt8Builder,
};
use arrow_array::types::Int32Type;
use arrow_array::{
    Array, ArrayRef, BinaryArray, DictionaryArray, FixedSizeBinaryArray, Float64Array, Int64Array, RecordBatch,
    StringArray, UInt8Array,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use skein_model::otlp::wire;
use skein_model::{AnyValue, Key, KeyValue, Span, SpanId, TraceId};

use super::bloom::Bloom;
use super::fxhash::{FxHashMap, FxHashSet};
use super::prefetch;
use super::schema::{self, Dedicated, HotType, Layout, HOT};
use super::{BlockCalls, BlockMeta, RowGroupMeta, LEVEL0_ROW_GROUP_ROWS, MAX_LISTED_CALLS, ROW_GROUP_ROWS};
use crate::backend::{Backend, StreamingPut};
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

/// Rows per row group by compaction level: level-0 blocks are merged soon, and a merge reads a
/// whole row group of each input at once (see `LEVEL0_ROW_GROUP_ROWS`).
fn row_group_rows(level: u32) -> usize {
    if level == 0 {
        LEVEL0_ROW_GROUP_ROWS
    } else {
        ROW_GROUP_ROWS
    }
}

/// Rows per data page of the trace id column, and of every other column. A trace lookup
/// decompresses the whole page holding its rows in each column, so bigger pages make lookups
/// slower, while zstd packs bigger pages tighter (fewer first occurrences of repeated values).
/// On the loader's spans 8 Ki-row pages in every block gave 42.5 bytes per span against 43.9
/// and lookups p50 2.3 against 2.0 ms, but raised the server's peak RSS under full ingest by
/// ~45 MiB, past the 512 MiB target (docs/benchmarks.md, "zstd contexts reused").
const TRACE_ID_PAGE_ROWS: usize = 1024;
const OTHER_PAGE_ROWS: usize = 4096;
/// Compacted blocks write their three high-entropy columns (`WIDE_PAGE_COLUMNS`) in pages
/// of this many rows, where zstd finds more repeats: 1.6 B/span less on the loader's spans
/// (events 5.4 → 4.3, durations 3.2 → 2.9, starts 3.9 → 3.7), for trace lookups p50 ~1.5 →
/// ~1.95 ms, which decompress these bigger pages (docs/benchmarks.md, "Compacted blocks pack
/// tighter"). Level-0 blocks keep small pages: merges read a page of every column of every
/// input at once.
const WIDE_PAGE_ROWS: usize = 16 * 1024;
pub(crate) const WIDE_PAGE_COLUMNS: [&str; 3] = [schema::EVENTS, schema::START, schema::DURATION];
/// Dictionary size past which a column chunk falls back to plain values (see `props`).
const DICTIONARY_LIMIT: usize = 16 * 1024;

/// Columns stored uncompressed: random ids (these) always, and in level-0 blocks the
/// few-valued columns (dictionary indexes or constants, `few_valued_columns`). Level-0 blocks
/// are written while ingest competes for the CPU and are rewritten by a merge soon; compacted
/// blocks compress the few-valued columns too, 15–30 % each and 0.8 B/span in all on the
/// loader's spans, for searches ~10 % slower (each page scanned is decompressed; the zstd
/// context pool in vendor/zstd-safe made that set-up cheap, docs/benchmarks.md, "Compacted
/// blocks pack tighter").
const UNCOMPRESSED_IDS: [&str; 2] = [schema::SPAN_ID, schema::PARENT_SPAN_ID];
/// Fixed columns with few distinct values per block (all dictionary-encoded).
const FEW_VALUED_FIXED: [&str; 7] = [
    schema::NAME,
    schema::KIND,
    schema::STATUS_CODE,
    schema::TRACE_STATE,
    schema::FLAGS,
    schema::SERVICE,
    schema::DROPPED,
];
/// Hot attribute columns holding free text (mostly distinct values): these stay compressed,
/// the other hot columns (methods, codes, routes, addresses, systems) are stored uncompressed.
const HOT_FREE_TEXT: [&str; 3] = ["attr_url_full", "attr_db_statement", "attr_db_query_text"];

fn props(level: u32, layout: &Layout) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(zstd_level(level)).expect("valid level"),
        ))
        // Row groups are cut by BlockBuilder at trace boundaries, never inside a trace.
        .set_max_row_group_row_count(None)
        .set_data_page_row_count_limit(OTHER_PAGE_ROWS)
        // Small trace-id pages let a trace lookup skip most of a row group's pages.
        .set_column_data_page_row_count_limit(ColumnPath::from(schema::TRACE_ID), TRACE_ID_PAGE_ROWS)
        // Min/max only where a reader uses them: trace-id pages narrow a trace lookup to the
        // pages holding it. Readers skip all other statistics (the block meta has what pruning
        // needs), and computing them compares every value: 2.6 % of the server's CPU under
        // full ingest went to chunk min/max nobody read (docs/benchmarks.md, "Resources as
        // dictionaries").
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from(schema::TRACE_ID), EnabledStatistics::Page)
        // A column whose dictionary outgrows this in a row group (ids, amounts, anything
        // nearly unique) falls back to plain values, which zstd packs tighter than dictionary
        // indexes plus the dictionary: 1.6 against 2.0 bytes per span for a random amount,
        // 1.5 against 1.75 for a session id. Low-cardinality columns stay dictionary-encoded.
        .set_dictionary_page_size_limit(DICTIONARY_LIMIT)
        // Resources and scopes are few but long: their dictionary may grow larger.
        .set_column_dictionary_page_size_limit(ColumnPath::from(schema::RESOURCE), 1 << 20)
        .set_column_dictionary_page_size_limit(ColumnPath::from(schema::SCOPE), 1 << 20);
    // Ids and per-span blobs are (nearly) unique: a dictionary is pure overhead.
    for c in [
        schema::TRACE_ID,
        schema::SPAN_ID,
        schema::PARENT_SPAN_ID,
        schema::EVENTS,
    ] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(c), false);
    }
    // Times and durations: byte-stream split puts the slowly varying high bytes of all values
    // side by side, where zstd finds them (3.9 bytes per span for start times against 5.4
    // with delta encoding, whose deltas jump between traces; 3.2 against 3.8 for durations).
    for c in [schema::START, schema::DURATION] {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(c), false)
            .set_column_encoding(ColumnPath::from(c), Encoding::BYTE_STREAM_SPLIT);
    }
    // Decimal columns of many values (amounts): byte-stream split, as for times (the loader's
    // amounts: 1.15 B/span, against 1.65 as doubles).
    for d in layout
        .dedicated
        .iter()
        .filter(|d| d.decimals.is_some() && !layout.low_cardinality.contains(&d.key))
    {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(d.column()), false)
            .set_column_encoding(ColumnPath::from(d.column()), Encoding::BYTE_STREAM_SPLIT);
    }
    if level > 0 {
        for c in WIDE_PAGE_COLUMNS {
            b = b.set_column_data_page_row_count_limit(ColumnPath::from(c), WIDE_PAGE_ROWS);
        }
    }
    for c in uncompressed_columns(level, layout) {
        b = b.set_column_compression(ColumnPath::from(c), Compression::UNCOMPRESSED);
    }
    b.build()
}

/// The columns of a block of this level and layout that are written without compression:
/// random ids, and at level 0 the few-valued columns.
fn uncompressed_columns(level: u32, layout: &Layout) -> Vec<String> {
    let ids = UNCOMPRESSED_IDS.iter().map(|c| c.to_string());
    let few = if level == 0 {
        few_valued_columns(layout)
    } else {
        Vec::new()
    };
    ids.chain(few).collect()
}

/// The columns of a block with this layout that hold few distinct values, dictionary-encoded:
/// the fixed ones above, hot columns other than free text, boolean and low-cardinality
/// dedicated ones.
pub(super) fn few_valued_columns(layout: &Layout) -> Vec<String> {
    let fixed = FEW_VALUED_FIXED.iter().map(|c| c.to_string());
    let hot = HOT
        .iter()
        .filter(|(c, _, _)| !HOT_FREE_TEXT.contains(c))
        .map(|(c, _, _)| c.to_string());
    let dedicated = layout
        .dedicated
        .iter()
        .filter(|d| d.ty == HotType::Bool || layout.low_cardinality.contains(&d.key))
        .map(Dedicated::column);
    fixed.chain(hot).chain(dedicated).collect()
}

/// Most per-block dedicated columns; more rarely pays (each column costs pages and CPU).
pub const MAX_DEDICATED: usize = 48;
/// A key gets a dedicated column when at least this share of a block's spans carry it...
const DEDICATED_MIN_SHARE: f64 = 0.005;
/// ...and at least this many.
const DEDICATED_MIN_SPANS: usize = 32;
/// Keys a block meta lists (generic-column keys, and resource keys, each list apart); beyond
/// this many the list is dropped (unknown: any key may be there).
const MAX_LISTED_KEYS: usize = 1024;
/// ...or beyond this many bytes of key text: metas stay in memory, and keys can be long.
const MAX_LISTED_KEY_BYTES: usize = 64 * 1024;
/// `choose_layout` counts keys over at most about this many spans, evenly spread over the
/// block: frequencies of 0.5% and up are estimated well from a few thousand spans, and
/// counting every attribute of a 250,000-span head cost an eighth of the block build. A key
/// the sample misses or misjudges only lands in the generic column, which is still searched.
const LAYOUT_SAMPLE_SPANS: usize = 8192;

/// Picks the span attribute keys that get a column of their own in a block of these spans:
/// the most frequent (key, type) pairs, except the fixed hot keys which always have theirs.
pub fn choose_layout(spans: &[&Span]) -> Layout {
    let (step, sample) = evenly_sampled(spans, LAYOUT_SAMPLE_SPANS);
    let mut counts: FxHashMap<(&str, HotType), usize> = FxHashMap::default();
    for s in prefetch::walk(&sample) {
        for kv in &s.attributes {
            if let Some(t) = HotType::of(&kv.value) {
                *counts.entry((kv.key.as_str(), t)).or_default() += step;
            }
        }
    }
    counts.retain(|(k, _), _| schema::hot_index(k).is_none());
    let min = DEDICATED_MIN_SPANS.max((spans.len() as f64 * DEDICATED_MIN_SHARE) as usize);
    let mut ranked: Vec<((&str, HotType), usize)> = counts.into_iter().filter(|(_, n)| *n >= min).collect();
    // Most frequent first; a key seen with two types keeps only its more frequent one.
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut seen = BTreeSet::new();
    let mut dedicated: Vec<Dedicated> = ranked
        .into_iter()
        .filter(|((k, _), _)| seen.insert(*k))
        .take(MAX_DEDICATED)
        .map(|((k, t), _)| Dedicated::new(k, t))
        .collect();
    choose_decimals(&sample, &mut dedicated);
    dedicated.sort();
    let low = low_cardinality_keys(spans, &dedicated);
    Layout::new(dedicated).with_low_cardinality(low.iter().map(String::as_str))
}

/// Makes each double column whose sampled values are all decimals of a few places a decimal
/// column (`Dedicated::decimals`, `schema::decimals_of`). A value outside the sample with more
/// places, or no short form at all, goes to the generic column, where search still finds it.
fn choose_decimals(sample: &[&Span], dedicated: &mut [Dedicated]) {
    for d in dedicated.iter_mut().filter(|d| d.ty == HotType::Double) {
        let values = sample
            .iter()
            .flat_map(|s| &s.attributes)
            .filter_map(|kv| match &kv.value {
                AnyValue::Double(x) if kv.key.as_str() == d.key => Some(*x),
                _ => None,
            });
        d.decimals = schema::decimals_of(values);
    }
}

/// About `at_most` of `spans`, evenly spread, and the step between them (each stands for that
/// many spans).
fn evenly_sampled<'a>(spans: &[&'a Span], at_most: usize) -> (usize, Vec<&'a Span>) {
    let step = spans.len().div_ceil(at_most).max(1);
    (step, spans.iter().step_by(step).copied().collect())
}

/// Spans sampled for distinct values per dedicated key: ~2,000 tell few-valued keys (a dozen
/// methods, a few hundred routes) from per-request values (ids, amounts) well enough.
const CARDINALITY_SAMPLE_SPANS: usize = 2048;

/// The dedicated keys with few distinct values: at most one per four sampled spans carrying
/// the key. Their columns stay dictionary-encoded, where zstd gains little over the packed
/// indexes (<15 % on the loader's data) but costs ~36 µs of set-up per column chunk read.
fn low_cardinality_keys(spans: &[&Span], dedicated: &[Dedicated]) -> Vec<String> {
    use std::hash::{Hash, Hasher};
    let index: FxHashMap<&str, usize> = dedicated.iter().enumerate().map(|(i, d)| (d.key.as_str(), i)).collect();
    // Per dedicated key: sampled spans carrying it, and hashes of its distinct values.
    let mut carriers = vec![0usize; dedicated.len()];
    let mut values: Vec<FxHashSet<u64>> = vec![FxHashSet::default(); dedicated.len()];
    let (_, sample) = evenly_sampled(spans, CARDINALITY_SAMPLE_SPANS);
    for s in prefetch::walk(&sample) {
        for kv in &s.attributes {
            let Some(&i) = index.get(kv.key.as_str()) else {
                continue;
            };
            let mut h = super::fxhash::FxHasher::default();
            match &kv.value {
                AnyValue::String(v) => v.hash(&mut h),
                AnyValue::Int(v) => v.hash(&mut h),
                AnyValue::Double(v) => v.to_bits().hash(&mut h),
                AnyValue::Bool(v) => v.hash(&mut h),
                _ => continue,
            }
            carriers[i] += 1;
            values[i].insert(h.finish());
        }
    }
    dedicated
        .iter()
        .enumerate()
        .filter(|&(i, _)| carriers[i] > 0 && values[i].len() * 4 <= carriers[i])
        .map(|(_, d)| d.key.clone())
        .collect()
}

/// The distinct keys written to a generic attribute column, or "unknown" past a bound.
#[derive(Debug, Clone)]
pub struct KeySet {
    keys: Option<BTreeSet<String>>,
    /// Bytes of key text in `keys`.
    bytes: usize,
}

impl Default for KeySet {
    fn default() -> Self {
        KeySet {
            keys: Some(BTreeSet::new()),
            bytes: 0,
        }
    }
}

impl KeySet {
    pub fn unknown() -> KeySet {
        KeySet { keys: None, bytes: 0 }
    }

    pub fn from_list(list: Option<&Vec<String>>) -> KeySet {
        let mut set = KeySet::default();
        match list {
            None => set.keys = None,
            Some(list) => list.iter().for_each(|k| set.add(k)),
        }
        set
    }

    pub fn add(&mut self, key: &str) {
        if let Some(set) = &mut self.keys {
            if !set.contains(key) {
                set.insert(key.to_string());
                self.bytes += key.len();
                if set.len() > MAX_LISTED_KEYS || self.bytes > MAX_LISTED_KEY_BYTES {
                    self.keys = None;
                }
            }
        }
    }

    pub fn union(&mut self, other: &KeySet) {
        match &other.keys {
            None => self.keys = None,
            Some(keys) => keys.iter().for_each(|k| self.add(k)),
        }
    }

    /// Sorted, for the block meta.
    pub fn into_list(self) -> Option<Vec<String>> {
        self.keys.map(|s| s.into_iter().collect())
    }
}

/// Builders for a block's dedicated attribute columns.
pub(crate) enum TypedBuilder {
    Str(StringBuilder),
    Int(Int64Builder),
    Double(Float64Builder),
    Bool(BooleanBuilder),
}

impl TypedBuilder {
    pub(crate) fn new(t: HotType) -> TypedBuilder {
        Self::with_capacity(t, 1024)
    }

    /// Sized for `rows` rows up front, so appending never regrows (and copies) the buffers.
    pub(crate) fn with_capacity(t: HotType, rows: usize) -> TypedBuilder {
        match t {
            HotType::Str => TypedBuilder::Str(StringBuilder::with_capacity(rows, rows * 16)),
            HotType::Int => TypedBuilder::Int(Int64Builder::with_capacity(rows)),
            HotType::Double => TypedBuilder::Double(Float64Builder::with_capacity(rows)),
            HotType::Bool => TypedBuilder::Bool(BooleanBuilder::with_capacity(rows)),
        }
    }

    /// Appends `v` (or null); the caller has checked the type.
    pub(crate) fn append(&mut self, v: Option<&AnyValue>) {
        match (self, v) {
            (TypedBuilder::Str(b), Some(AnyValue::String(x))) => b.append_value(x),
            (TypedBuilder::Int(b), Some(AnyValue::Int(x))) => b.append_value(*x),
            (TypedBuilder::Double(b), Some(AnyValue::Double(x))) => b.append_value(*x),
            (TypedBuilder::Bool(b), Some(AnyValue::Bool(x))) => b.append_value(*x),
            (TypedBuilder::Str(b), _) => b.append_null(),
            (TypedBuilder::Int(b), _) => b.append_null(),
            (TypedBuilder::Double(b), _) => b.append_null(),
            (TypedBuilder::Bool(b), _) => b.append_null(),
        }
    }

    pub(crate) fn finish(&mut self) -> ArrayRef {
        match self {
            TypedBuilder::Str(b) => Arc::new(b.finish()),
            TypedBuilder::Int(b) => Arc::new(b.finish()),
            TypedBuilder::Double(b) => Arc::new(b.finish()),
            TypedBuilder::Bool(b) => Arc::new(b.finish()),
        }
    }
}

/// A typed column as `AttrSplitter` sees it: its index, type, and decimal places when it is a
/// decimal column.
type SplitColumn = (usize, HotType, Option<u8>);

/// Splits one span's attributes between typed columns and the generic remainder: the first
/// value of a column's key and type goes to the column, everything else stays generic.
pub(crate) struct AttrSplitter<'l> {
    columns: FxHashMap<&'l str, SplitColumn>,
    /// The same columns by interned key address (see `Key::interned_addr`), when every column
    /// key could be interned: most attributes then find their column without hashing text.
    by_addr: Option<FxHashMap<u64, SplitColumn>>,
    width: usize,
}

/// A key address spread over all 64 bits (odd multiply and rotate: a bijection, so distinct
/// addresses stay distinct). Raw addresses share their low, alignment bits, which is where the
/// map picks its bucket.
fn addr_key(addr: usize) -> u64 {
    (addr as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(32)
}

impl<'l> AttrSplitter<'l> {
    /// Splits into the fixed hot columns (indices `0..HOT.len()`) and then `dedicated`.
    pub(crate) fn new(with_hot: bool, dedicated: &'l [Dedicated]) -> AttrSplitter<'l> {
        let mut columns = FxHashMap::default();
        if with_hot {
            for (i, (_, key, t)) in HOT.iter().enumerate() {
                columns.insert(*key, (i, *t, None));
            }
        }
        let base = if with_hot { HOT.len() } else { 0 };
        for (i, d) in dedicated.iter().enumerate() {
            columns.insert(d.key.as_str(), (base + i, d.ty, d.decimals));
        }
        let by_addr = columns
            .iter()
            .map(|(key, column)| Some((addr_key(Key::new(key).interned_addr()?), *column)))
            .collect();
        AttrSplitter {
            columns,
            by_addr,
            width: base + dedicated.len(),
        }
    }

    /// How many typed columns `split` fills.
    pub(crate) fn width(&self) -> usize {
        self.width
    }

    /// Fills `values` (one slot per typed column, borrowed — no value is copied) for one span,
    /// and `rest` with the attributes left for the generic column (both are overwritten, so
    /// callers reuse them from span to span without allocating).
    pub(crate) fn split<'a>(
        &self,
        attrs: impl IntoIterator<Item = &'a KeyValue>,
        values: &mut [Option<&'a AnyValue>],
        rest: &mut Vec<&'a KeyValue>,
    ) {
        values.iter_mut().for_each(|v| *v = None);
        rest.clear();
        for kv in attrs {
            let column = match (&self.by_addr, kv.key.interned_addr()) {
                (Some(by_addr), Some(addr)) => by_addr.get(&addr_key(addr)),
                _ => self.columns.get(kv.key.as_str()),
            };
            match column {
                Some(&(i, t, decimals)) if values[i].is_none() && schema::column_takes(t, decimals, &kv.value) => {
                    values[i] = Some(&kv.value)
                }
                _ => rest.push(kv),
            }
        }
    }
}

/// The attribute keys a block's meta lists, so search can skip columns that cannot match.
#[derive(Debug, Clone, Default)]
pub struct BlockKeys {
    /// Keys in the generic attribute column.
    pub generic: KeySet,
    /// Resource attribute keys.
    pub resource: KeySet,
}

impl BlockKeys {
    pub fn of(meta: &BlockMeta) -> BlockKeys {
        BlockKeys {
            generic: KeySet::from_list(meta.generic_keys.as_ref()),
            resource: KeySet::from_list(meta.resource_keys.as_ref()),
        }
    }

    pub fn union(&mut self, other: &BlockKeys) {
        self.generic.union(&other.generic);
        self.resource.union(&other.resource);
    }

    pub fn store_in(self, meta: &mut BlockMeta) {
        meta.generic_keys = self.generic.into_list();
        meta.resource_keys = self.resource.into_list();
    }
}

/// A decimal column's doubles as the integers the file stores (`schema::to_decimal`).
fn to_decimals(c: &dyn Array, decimals: u8, key: &str) -> Result<ArrayRef, StoreError> {
    let doubles = c
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| StoreError::Internal(format!("decimal column {key} is not of doubles")))?;
    let mut ints = Int64Builder::with_capacity(doubles.len());
    for v in doubles.iter() {
        match v {
            None => ints.append_null(),
            Some(v) => ints.append_value(schema::to_decimal(v, decimals).ok_or_else(|| {
                StoreError::Internal(format!(
                    "{v} in decimal column {key} has more than {decimals} decimal places"
                ))
            })?),
        }
    }
    Ok(Arc::new(ints.finish()))
}

/// The events column with spans that have no events as nulls: rows copied from blocks before
/// format 6 hold an empty list there. An empty value costs a 4-byte length among the blobs,
/// which zstd packs worse than the column's null bits (events 4.31 → 4.09 B/span on the
/// loader's spans, more than half of which have none).
fn empty_as_null(c: &ArrayRef) -> Result<ArrayRef, StoreError> {
    let blobs = c
        .as_any()
        .downcast_ref::<BinaryArray>()
        .ok_or_else(|| StoreError::Internal("the events column is not binary".into()))?;
    if !blobs.iter().any(|b| b.is_some_and(<[u8]>::is_empty)) {
        return Ok(c.clone());
    }
    let present = (0..blobs.len()).map(|i| blobs.is_valid(i) && !blobs.value(i).is_empty());
    let nulls = arrow_buffer::NullBuffer::new(arrow_buffer::BooleanBuffer::from_iter(present));
    Ok(Arc::new(BinaryArray::new(
        blobs.offsets().clone(),
        blobs.values().clone(),
        Some(nulls),
    )))
}

/// Turns spans into one record batch of `layout`, noting the keys it writes in `keys`.
pub fn spans_to_batch(spans: &[&Span], layout: &Layout, keys: &mut BlockKeys) -> Result<RecordBatch, StoreError> {
    let n = spans.len();
    let mut trace_id = FixedSizeBinaryBuilder::with_capacity(n, 16);
    let mut span_id = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut parent = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut name = StringBuilder::with_capacity(n, n * 16);
    let mut kind = UInt8Builder::with_capacity(n);
    let mut start = Int64Builder::with_capacity(n);
    let mut duration = Int64Builder::with_capacity(n);
    let mut status_code = UInt8Builder::with_capacity(n);
    let mut status_message = StringBuilder::with_capacity(n, 0);
    let mut trace_state = StringBuilder::with_capacity(n, 0);
    let mut flags = UInt32Builder::with_capacity(n);
    let mut service = StringBuilder::with_capacity(n, n * 8);
    let mut resource = SharedBytesBuilder::with_capacity(n);
    let mut scope = SharedBytesBuilder::with_capacity(n);
    let mut typed: Vec<TypedBuilder> = HOT
        .iter()
        .map(|(_, _, t)| *t)
        .chain(layout.dedicated.iter().map(|d| d.ty))
        .map(|t| TypedBuilder::with_capacity(t, n))
        .collect();
    let mut attrs = BinaryBuilder::with_capacity(n, n * 8);
    let mut events = BinaryBuilder::with_capacity(n, n * 128);
    let mut links = BinaryBuilder::with_capacity(n, 0);
    let mut dropped = UInt64Builder::with_capacity(n);

    // Resources and scopes are `Arc`s shared by the spans of one export request: encode each
    // once per batch. Sorting by trace id interleaves requests, so remember them all, not
    // just the previous span's.
    let mut resources: FxHashMap<*const skein_model::Resource, (i32, &str)> = FxHashMap::default();
    let mut scopes: FxHashMap<*const skein_model::Scope, i32> = FxHashMap::default();
    let mut buf = Vec::new();
    let splitter = AttrSplitter::new(true, &layout.dedicated);
    let mut values: Vec<Option<&AnyValue>> = vec![None; splitter.width()];
    let mut rest: Vec<&KeyValue> = Vec::new();

    for s in prefetch::walk(spans) {
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

        let (res_key, service_name) = *resources.entry(Arc::as_ptr(&s.resource)).or_insert_with(|| {
            for kv in &s.resource.attributes {
                keys.resource.add(&kv.key);
            }
            buf.clear();
            wire::resource(&s.resource, &mut buf);
            (resource.intern(&buf), s.resource.service_name())
        });
        service.append_value(service_name);
        resource.append_key(res_key);
        let scope_key = *scopes.entry(Arc::as_ptr(&s.scope)).or_insert_with(|| {
            buf.clear();
            wire::scope(&s.scope, &mut buf);
            scope.intern(&buf)
        });
        scope.append_key(scope_key);

        splitter.split(&s.attributes, &mut values, &mut rest);
        for (b, v) in typed.iter_mut().zip(&values) {
            b.append(*v);
        }
        for kv in &rest {
            keys.generic.add(&kv.key);
        }
        buf.clear();
        wire::key_value_list(rest.iter().copied(), &mut buf);
        attrs.append_value(&buf);

        if s.events.is_empty() {
            events.append_null();
        } else {
            buf.clear();
            wire::stored_event_list(&s.events, s.start_unix_nano, &mut buf);
            events.append_value(&buf);
        }
        buf.clear();
        wire::link_list(&s.links, &mut buf);
        links.append_value(&buf);
        dropped.append_value(pack_dropped(
            s.dropped_attributes_count,
            s.dropped_events_count,
            s.dropped_links_count,
        ));
    }

    let mut typed_arrays: Vec<ArrayRef> = typed.iter_mut().map(TypedBuilder::finish).collect();
    let dedicated_arrays = typed_arrays.split_off(HOT.len());
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
        resource.finish()?,
        scope.finish()?,
    ];
    columns.extend(typed_arrays);
    columns.push(Arc::new(attrs.finish()));
    columns.push(Arc::new(events.finish()));
    columns.push(Arc::new(links.finish()));
    columns.push(Arc::new(dropped.finish()));
    columns.extend(dedicated_arrays);
    RecordBatch::try_new(layout.schema.clone(), columns).map_err(StoreError::arrow)
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
    pub data: DataSink,
    pub summaries: Vec<u8>,
    pub bloom: Vec<u8>,
    pub meta: BlockMeta,
}

impl BuiltBlock {
    /// Abandons the block: a data file still being uploaded is aborted, and whatever of the
    /// block the backend holds is deleted.
    pub async fn abort(self, backend: &Backend) {
        self.data.abort().await;
        forget_block(backend, &self.meta.id).await;
    }
}

/// Deletes what the backend holds of an abandoned block (on the local backend, its directory
/// too); a failure is only logged: the next start removes incomplete blocks.
async fn forget_block(backend: &Backend, id: &str) {
    if let Err(e) = backend.delete_block(id).await {
        tracing::warn!(block = id, error = %e, "could not delete an abandoned block");
    }
}

/// Where a block's data file goes while it is built: memory (level-0 blocks, stored once
/// built), or the backend as it is written (merges, see `StreamingPut`).
pub enum DataSink {
    Memory(Vec<u8>),
    Streaming(StreamingPut),
}

impl DataSink {
    fn len(&self) -> u64 {
        match self {
            DataSink::Memory(v) => v.len() as u64,
            DataSink::Streaming(put) => put.bytes(),
        }
    }

    async fn abort(self) {
        if let DataSink::Streaming(put) = self {
            put.abort().await;
        }
    }
}

impl std::io::Write for DataSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            DataSink::Memory(v) => std::io::Write::write(v, buf),
            DataSink::Streaming(put) => std::io::Write::write(put, buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Streams sorted record batches into a block, computing summaries, bloom and meta on the way.
pub struct BlockBuilder {
    writer: ArrowWriter<DataSink>,
    layout: Layout,
    row_group_rows: usize,
    rows: u64,
    meta: BlockMeta,
    current: Option<TraceSummary>,
    /// Finished traces' summaries, already in columns: a `TraceSummary` per trace held until
    /// the end cost ~600 bytes each (a map and three strings), ~80 MB for a compacted block.
    summaries: SummaryColumns,
    operations: ServiceOperations,
    /// Rows in the open row group.
    group_rows: usize,
    /// Span ids of the current trace's rows so far, for parent offsets.
    trace_spans: TraceSpans,
    /// Start of the current trace's first row: the trace's start in its summary.
    trace_start: i64,
    /// Starts past this are not listed in `BlockMeta::ahead_starts` (`keep_ahead_for`).
    ahead_horizon: u64,
    calls: CallCounter,
}

/// The service-to-service calls among a block's rows, counted as they are pushed exactly as
/// a dependencies scan of the whole block counts them (`BlockMeta::calls`): a row whose parent
/// is an earlier row of its trace (it gets a parent offset) is a call when the two services
/// differ; a row whose parent is not there keeps the parent's id and counts as unresolved.
#[derive(Default)]
struct CallCounter {
    services: Vec<String>,
    ids: FxHashMap<String, u32>,
    /// The previous row's service: rows of one trace and service come in runs.
    last: Option<u32>,
    /// The service of each row of the current trace so far, as `TraceSpans` holds their ids.
    trace: Vec<u32>,
    edges: FxHashMap<(u32, u32), u64>,
    unresolved: u64,
    /// More services or pairs than a meta lists: the block keeps no calls.
    overflowed: bool,
}

impl CallCounter {
    fn new_trace(&mut self) {
        self.trace.clear();
    }

    /// One row: its service, and the row of its trace that holds its parent, if any.
    fn row(&mut self, service: &str, parent_row: Option<u32>, has_parent: bool) {
        let Some(id) = self.service_id(service) else {
            return;
        };
        match parent_row {
            Some(p) => {
                let parent = self.trace[p as usize];
                if parent != id {
                    *self.edges.entry((parent, id)).or_default() += 1;
                    if self.edges.len() > MAX_LISTED_CALLS {
                        self.overflow();
                    }
                }
            }
            None if has_parent => self.unresolved += 1,
            None => {}
        }
        self.trace.push(id);
    }

    /// `None` once counting stopped.
    fn service_id(&mut self, service: &str) -> Option<u32> {
        if self.overflowed {
            return None;
        }
        if let Some(last) = self.last.filter(|&l| self.services[l as usize] == service) {
            return Some(last);
        }
        let id = match self.ids.get(service) {
            Some(&id) => id,
            None => {
                let id = self.services.len() as u32;
                self.services.push(service.to_string());
                self.ids.insert(service.to_string(), id);
                if self.services.len() > MAX_SERVICES_PER_BLOCK {
                    self.overflow();
                    return None;
                }
                id
            }
        };
        self.last = Some(id);
        Some(id)
    }

    /// Stops counting for good, freeing what was counted.
    fn overflow(&mut self) {
        self.overflowed = true;
        self.edges = FxHashMap::default();
        self.ids = FxHashMap::default();
        self.services = Vec::new();
        self.trace = Vec::new();
    }

    fn into_meta(self) -> Option<BlockCalls> {
        if self.overflowed {
            return None;
        }
        let mut edges: Vec<(String, String, u64)> = self
            .edges
            .into_iter()
            .map(|((p, c), n)| (self.services[p as usize].clone(), self.services[c as usize].clone(), n))
            .collect();
        edges.sort_unstable();
        Some(BlockCalls {
            edges,
            unresolved: self.unresolved,
        })
    }
}

/// How far past its write a block's time range reaches. A span stamped later (a client whose
/// clock is ahead, often by years) would otherwise stretch its block's and row group's range
/// to its time, and every search until then would read them: one such client in each block
/// made every recent search read a row group of every block kept. A day covers clocks off by
/// a time zone. Such spans are stored whole and read with their traces; where they start is
/// kept apart, in a few ranges (`BlockMeta::ahead_starts`), so a search of their own time
/// still reads their block and row group. A range that reaches `BlockMeta::times_capped_at`
/// may hold later spans.
pub const CLOCK_AHEAD_SLACK: u64 = 86_400 * 1_000_000_000;

/// The span ids of one trace's rows, to find a parent's row. Most traces are small enough
/// that scanning back beats hashing (and clearing a map per trace); a big trace gets an index.
#[derive(Default)]
struct TraceSpans {
    ids: Vec<SpanId>,
    /// Span id → its latest row; built once the trace outgrows a scan.
    index: Option<FxHashMap<SpanId, u32>>,
}

impl TraceSpans {
    const SCAN_LIMIT: usize = 64;

    fn clear(&mut self) {
        self.ids.clear();
        self.index = None;
    }

    fn len(&self) -> u32 {
        self.ids.len() as u32
    }

    /// The latest row holding span `id` (a repeated id — Zipkin's shared spans — points
    /// children at its latest row: same id).
    fn position(&self, id: &SpanId) -> Option<u32> {
        match &self.index {
            Some(index) => index.get(id).copied(),
            None => self.ids.iter().rposition(|x| x == id).map(|p| p as u32),
        }
    }

    fn push(&mut self, id: SpanId) {
        let row = self.ids.len() as u32;
        self.ids.push(id);
        if let Some(index) = &mut self.index {
            index.insert(id, row);
        } else if self.ids.len() > Self::SCAN_LIMIT {
            self.index = Some(self.ids.iter().enumerate().map(|(i, x)| (*x, i as u32)).collect());
        }
    }
}

impl BlockBuilder {
    /// A block whose data file is built in memory.
    pub fn new(id: String, level: u32, layout: Layout) -> Result<BlockBuilder, StoreError> {
        Self::with_sink(id, level, layout, DataSink::Memory(Vec::with_capacity(8 << 20)))
    }

    /// A block whose data file is written to the backend as it is built. Push from inside a
    /// tokio runtime (part uploads are spawned on it), and `wait_for_upload` now and then.
    pub fn streaming(id: String, level: u32, layout: Layout, put: StreamingPut) -> Result<BlockBuilder, StoreError> {
        Self::with_sink(id, level, layout, DataSink::Streaming(put))
    }

    fn with_sink(id: String, level: u32, layout: Layout, sink: DataSink) -> Result<BlockBuilder, StoreError> {
        let writer = ArrowWriter::try_new(sink, layout.file_schema.clone(), Some(props(level, &layout)))
            .map_err(StoreError::parquet)?;
        let mut meta = BlockMeta::new(id, level);
        meta.dedicated = layout.dedicated.clone();
        meta.low_cardinality = layout.low_cardinality.iter().cloned().collect();
        Ok(BlockBuilder {
            writer,
            layout,
            row_group_rows: row_group_rows(level),
            rows: 0,
            meta,
            current: None,
            summaries: SummaryColumns::default(),
            operations: ServiceOperations::default(),
            group_rows: 0,
            trace_spans: TraceSpans::default(),
            trace_start: 0,
            ahead_horizon: u64::MAX,
            calls: CallCounter::default(),
        })
    }

    /// Lists starts past the cap in `BlockMeta::ahead_starts` one by one only up to when the
    /// block is due to expire, `retention` after its write (its retention time is never
    /// later); later ones share one open range from there. Searches of recent windows meet
    /// that range only if the block outlives its due time (retention raised since, or
    /// deletion late), and then read it, never miss it; a client sending random times (years
    /// off, mostly) so leaves the listed ranges narrow. Call before the first push.
    /// Without it, every start is listed.
    pub fn keep_ahead_for(&mut self, retention: std::time::Duration) {
        self.ahead_horizon = self
            .meta
            .created_unix_nano
            .saturating_add(crate::saturating_nanos(retention));
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Waits while the data file's parts are uploaded, when it is streamed: bounds the parts
    /// held in memory.
    pub async fn wait_for_upload(&mut self) -> Result<(), StoreError> {
        match self.writer.inner_mut() {
            DataSink::Streaming(put) => put.wait_for_capacity().await,
            DataSink::Memory(_) => Ok(()),
        }
    }

    /// Abandons the block: a data file being streamed is aborted, and whatever of the block
    /// the backend holds is deleted.
    pub async fn abort(mut self, backend: &Backend) {
        let sink = std::mem::replace(self.writer.inner_mut(), DataSink::Memory(Vec::new()));
        sink.abort().await;
        forget_block(backend, &self.meta.id).await;
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Appends rows; callers keep the whole block sorted by (trace id, start). Row groups are
    /// cut at trace boundaries once they hold `row_group_rows`, so a trace never spans two
    /// (readers resolve parent offsets within a trace and may skip whole row groups).
    pub fn push(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        let mut columns = batch.columns().to_vec();
        let events = schema::col(schema::EVENTS);
        columns[events] = empty_as_null(&columns[events])?;
        // Decimal columns before counting: a value they cannot hold fails the push before the
        // block's meta and summaries count the rows.
        let fixed = schema::SPANS.fields().len();
        for (d, c) in self.layout.dedicated.iter().zip(&mut columns[fixed..]) {
            if let Some(decimals) = d.decimals {
                *c = to_decimals(c.as_ref(), decimals, &d.key)?;
            }
        }
        let trace_ids = fsb(batch, schema::TRACE_ID)?;
        let span_ids = fsb(batch, schema::SPAN_ID)?;
        let parents = fsb(batch, schema::PARENT_SPAN_ID)?;
        // Span times past this count as this in the time ranges (`CLOCK_AHEAD_SLACK`).
        let latest = self.meta.times_capped_at();
        let names = strings(batch, schema::NAME)?;
        let services = strings(batch, schema::SERVICE)?;
        let kinds = u8s(batch, schema::KIND)?;
        let starts = i64s(batch, schema::START)?;
        let durations = i64s(batch, schema::DURATION)?;
        let status = u8s(batch, schema::STATUS_CODE)?;
        let mut parent_ids = FixedSizeBinaryBuilder::with_capacity(batch.num_rows(), 8);
        let mut parent_offsets = UInt32Builder::with_capacity(batch.num_rows());
        // Rows at which a new row group starts.
        let mut cuts = Vec::new();
        for i in 0..batch.num_rows() {
            let tid: TraceId = trace_ids
                .value(i)
                .try_into()
                .map_err(|_| StoreError::corrupt("trace id width"))?;
            let start = starts.value(i) as u64;
            let end = start + durations.value(i) as u64;
            // Where the row counts in the time ranges (the summary keeps its real times).
            let (range_start, range_end) = (start.min(latest), end.min(latest));
            let new_trace = self.current.as_ref().is_none_or(|c| c.trace_id != tid);
            if new_trace {
                if let Some(done) = self.current.take() {
                    self.summaries.append(&done, self.trace_start)?;
                }
                self.current = Some(TraceSummary::new(tid));
                self.trace_spans.clear();
                self.calls.new_trace();
                self.trace_start = starts.value(i);
                if self.group_rows >= self.row_group_rows {
                    cuts.push(i);
                    self.group_rows = 0;
                }
            }
            if self.group_rows == 0 {
                self.meta.row_groups.push(RowGroupMeta {
                    min_trace: tid,
                    max_trace: tid,
                    min_start: range_start,
                    max_end: range_end,
                    rows: 0,
                    ahead: false,
                });
            }
            let g = self.meta.row_groups.last_mut().expect("pushed above");
            g.max_trace = tid;
            g.min_start = g.min_start.min(range_start);
            g.max_end = g.max_end.max(range_end);
            g.rows += 1;
            if start > latest {
                g.ahead = true;
                if start <= self.ahead_horizon {
                    self.meta.note_ahead(start, start);
                } else {
                    self.meta.note_ahead(self.ahead_horizon + 1, u64::MAX);
                }
            }
            self.rows += 1;
            self.group_rows += 1;

            let parent: SpanId = parents
                .value(i)
                .try_into()
                .map_err(|_| StoreError::corrupt("parent id width"))?;
            let span_id: SpanId = span_ids
                .value(i)
                .try_into()
                .map_err(|_| StoreError::corrupt("span id width"))?;
            let position = self.trace_spans.len();
            let service = services.value(i);
            match self.trace_spans.position(&parent) {
                Some(p) if parent != [0; 8] => {
                    self.calls.row(service, Some(p), true);
                    parent_offsets.append_value(position - p);
                    parent_ids.append_null();
                }
                _ => {
                    self.calls.row(service, None, parent != [0; 8]);
                    parent_offsets.append_value(0);
                    if parent == [0; 8] {
                        parent_ids.append_null();
                    } else {
                        parent_ids.append_value(parent).map_err(StoreError::arrow)?;
                    }
                }
            }
            self.trace_spans.push(span_id);

            let name = names.value(i);
            let is_root = parent == [0u8; 8];
            self.current
                .as_mut()
                .expect("set above")
                .add(service, name, is_root, start, end, status.value(i) == 2);
            self.operations.note(service, name, kinds.value(i));
            self.meta.min_start = self.meta.min_start.min(range_start);
            self.meta.max_end = self.meta.max_end.max(range_end);
        }
        columns[schema::col(schema::PARENT_SPAN_ID)] = Arc::new(parent_ids.finish());
        columns.push(Arc::new(parent_offsets.finish()));
        let on_disk = RecordBatch::try_new(self.layout.file_schema.clone(), columns).map_err(StoreError::arrow)?;
        let mut from = 0;
        for cut in cuts {
            self.writer
                .write(&on_disk.slice(from, cut - from))
                .map_err(StoreError::parquet)?;
            self.writer.flush().map_err(StoreError::parquet)?;
            from = cut;
        }
        self.writer
            .write(&on_disk.slice(from, on_disk.num_rows() - from))
            .map_err(StoreError::parquet)
    }

    pub fn finish(mut self) -> Result<BuiltBlock, StoreError> {
        if let Some(done) = self.current.take() {
            self.summaries.append(&done, self.trace_start)?;
        }
        // Trace reads address row groups by index from the meta: they must match the file.
        let written = self.writer.flushed_row_groups().len() + usize::from(self.writer.in_progress_rows() > 0);
        if written != self.meta.row_groups.len() {
            return Err(StoreError::Internal(format!(
                "block {} has {written} row groups but its meta lists {}",
                self.meta.id,
                self.meta.row_groups.len()
            )));
        }
        let data = self.writer.into_inner().map_err(StoreError::parquet)?;
        let (summaries, bloom, traces) = self.summaries.finish()?;
        let mut meta = self.meta;
        meta.span_count = self.rows;
        meta.trace_count = traces;
        meta.data_bytes = data.len();
        meta.summary_bytes = summaries.len() as u64;
        self.operations.into_meta(&mut meta);
        meta.calls = self.calls.into_meta();
        let bloom = bloom.to_bytes();
        meta.bloom_crc32c = Some(crc32c::crc32c(&bloom));
        Ok(BuiltBlock {
            data,
            summaries,
            bloom,
            meta,
        })
    }
}

/// Most distinct operations (span names) of one service a block's meta lists.
pub const MAX_OPERATIONS_PER_SERVICE: usize = 1000;
/// Most services a block's meta lists; the rest are marked by `BlockMeta::services_capped`.
pub const MAX_SERVICES_PER_BLOCK: usize = 4096;
/// Most (service, operation) names a block's meta lists in all; past it every service's list
/// that would grow is capped, as past `MAX_OPERATIONS_PER_SERVICE`.
const MAX_LISTED_OPERATIONS: usize = 65_536;

/// Each service's operations in the block being built: span name → the kinds seen with it (a
/// bit per kind). A hash lookup per row, allocating only for a new name.
///
/// Span names with ids in them (`GET /users/8812`) make nearly every span's name new. A
/// service's list stops at `MAX_OPERATIONS_PER_SERVICE` names and is marked capped: every
/// block's meta stays in memory, so an uncapped list grew with the spans, and the linear
/// lookup it replaced made such a block's build quadratic (over five minutes of CPU, unfinished,
/// for 250,000 spans). The frequent, real names come early and are kept. Service names with
/// ids in them (a request id as `service.name`) are capped the same way, at
/// `MAX_SERVICES_PER_BLOCK`: 250,000 spans of unique services made a 9.8 MB meta before.
#[derive(Default)]
struct ServiceOperations {
    services: FxHashMap<String, Operations>,
    /// Operations listed over all services.
    listed: usize,
    /// A service was left out (`MAX_SERVICES_PER_BLOCK`).
    services_capped: bool,
}

#[derive(Default)]
struct Operations {
    kinds_by_name: FxHashMap<String, u8>,
    capped: bool,
}

impl Operations {
    fn note(&mut self, service: &str, name: &str, kind: u8, listed: &mut usize) {
        let bit = 1u8 << (kind & 7);
        if let Some(kinds) = self.kinds_by_name.get_mut(name) {
            *kinds |= bit;
        } else if self.kinds_by_name.len() < MAX_OPERATIONS_PER_SERVICE && *listed < MAX_LISTED_OPERATIONS {
            self.kinds_by_name.insert(name.to_string(), bit);
            *listed += 1;
        } else if !self.capped {
            self.capped = true;
            if *listed < MAX_LISTED_OPERATIONS {
                warn_operations_capped(service);
            } else {
                warn_listed_operations_capped();
            }
        }
    }
}

impl ServiceOperations {
    /// One lookup of the service per row; its name is copied only the first time.
    fn note(&mut self, service: &str, name: &str, kind: u8) {
        let room = self.services.len() < MAX_SERVICES_PER_BLOCK;
        match self.services.get_mut(service) {
            Some(ops) => ops.note(service, name, kind, &mut self.listed),
            None if room => {
                let mut ops = Operations::default();
                ops.note(service, name, kind, &mut self.listed);
                self.services.insert(service.to_string(), ops);
            }
            None => {
                if !self.services_capped {
                    self.services_capped = true;
                    warn_services_capped();
                }
            }
        }
    }

    fn into_meta(self, meta: &mut BlockMeta) {
        for (service, ops) in self.services {
            let mut list: Vec<(String, u8)> = Vec::new();
            for (name, kinds) in ops.kinds_by_name {
                list.extend((0..8u8).filter(|k| kinds & (1 << k) != 0).map(|k| (name.clone(), k)));
            }
            list.sort_unstable();
            if ops.capped {
                meta.operations_capped.insert(service.clone());
            }
            meta.services.insert(service, list);
        }
        meta.services_capped = self.services_capped;
    }
}

/// Says once per process why operation lists were cut by the block's budget for all services
/// (`warn_operations_capped` names each service, which would grow with ids in service names).
fn warn_listed_operations_capped() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            limit = MAX_LISTED_OPERATIONS,
            "a block has more distinct (service, span name) pairs than its meta lists; later \
             services' operation lists are cut there (searches by operation still find every span)"
        );
    });
}

/// Says once per process why blocks' service lists are incomplete.
fn warn_services_capped() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            limit = MAX_SERVICES_PER_BLOCK,
            "a block has more distinct service names than its meta lists; the list is cut there \
             (searches by service still find every span, /api/services lists the services kept). \
             A service.name with ids in it makes every name new: name the service, put ids in \
             other attributes"
        );
    });
}

/// Says once per service and process why its operation list is incomplete.
fn warn_operations_capped(service: &str) {
    static WARNED: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if warned.insert(service.to_string()) {
        tracing::warn!(
            service,
            limit = MAX_OPERATIONS_PER_SERVICE,
            "a service has more distinct span names in one block than its operation list keeps; \
             the list is cut there (searches by operation still find every span). Span names \
             with ids in them (GET /users/8812) make every name new: name spans by route"
        );
    }
}

/// The trace-summary table of a block being built, one row per finished trace. Its trace ids
/// go into the bloom filter only (`schema::SUMMARIES`).
struct SummaryColumns {
    trace_ids: Vec<TraceId>,
    root_service: StringBuilder,
    root_name: StringBuilder,
    duration: Int64Builder,
    spans: UInt32Builder,
    errors: UInt32Builder,
    services: StringBuilder,
}

impl Default for SummaryColumns {
    fn default() -> Self {
        SummaryColumns {
            trace_ids: Vec::new(),
            root_service: StringBuilder::new(),
            root_name: StringBuilder::new(),
            duration: Int64Builder::new(),
            spans: UInt32Builder::new(),
            errors: UInt32Builder::new(),
            services: StringBuilder::new(),
        }
    }
}

impl SummaryColumns {
    /// `first_start` is the start of the trace's first row, which readers take as the trace's
    /// start (`schema::SUM_START`); rows are sorted by start within a trace, so it is the
    /// earliest, and the duration is counted from it so that the end is exact either way.
    fn append(&mut self, s: &TraceSummary, first_start: i64) -> Result<(), StoreError> {
        self.trace_ids.push(s.trace_id);
        // A summary without a real root is marked so merging across blocks can prefer a root.
        if s.has_root {
            self.root_service.append_value(&s.root_service);
        } else {
            self.root_service.append_value(format!("\u{1}{}", s.root_service));
        }
        self.root_name.append_value(&s.root_name);
        self.duration
            .append_value(s.end.saturating_sub(first_start as u64) as i64);
        self.spans.append_value(s.span_count);
        self.errors.append_value(s.error_count);
        let mut joined = String::new();
        for (k, v) in &s.services {
            if !joined.is_empty() {
                joined.push('\n');
            }
            let _ = write!(joined, "{k}={v}");
        }
        self.services.append_value(joined);
        Ok(())
    }

    /// The table as Parquet, the bloom filter of its trace ids, and its row count.
    fn finish(mut self) -> Result<(Vec<u8>, Bloom, u64), StoreError> {
        let mut bloom = Bloom::with_capacity(self.trace_ids.len());
        for id in &self.trace_ids {
            bloom.insert(id);
        }
        let traces = self.trace_ids.len() as u64;
        let batch = RecordBatch::try_new(
            schema::SUMMARIES.clone(),
            vec![
                Arc::new(self.root_service.finish()),
                Arc::new(self.root_name.finish()),
                Arc::new(self.duration.finish()),
                Arc::new(self.spans.finish()),
                Arc::new(self.errors.finish()),
                Arc::new(self.services.finish()),
            ],
        )
        .map_err(StoreError::arrow)?;
        Ok((write_summaries(&batch)?, bloom, traces))
    }
}

fn write_summaries(batch: &RecordBatch) -> Result<Vec<u8>, StoreError> {
    // No reader uses statistics: summaries are found by row (`BlockHandle::summaries`).
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid level")))
        .set_statistics_enabled(EnabledStatistics::None);
    // As in the span table: one value per trace, so a dictionary only adds indexes.
    props = props
        .set_column_dictionary_enabled(ColumnPath::from(schema::SUM_DURATION), false)
        .set_column_encoding(ColumnPath::from(schema::SUM_DURATION), Encoding::BYTE_STREAM_SPLIT);
    // The few-valued columns hold a value per trace, too few bytes to matter (see
    // `UNCOMPRESSED_IDS`).
    for c in [schema::SUM_ROOT_SERVICE, schema::SUM_ROOT_NAME, schema::SUM_SPANS] {
        props = props.set_column_compression(ColumnPath::from(c), Compression::UNCOMPRESSED);
    }
    let props = props.build();
    let mut w =
        ArrowWriter::try_new(Vec::new(), schema::SUMMARIES.clone(), Some(props)).map_err(StoreError::parquet)?;
    w.write(batch).map_err(StoreError::parquet)?;
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

/// Builds a resource or scope column (`schema::shared_bytes`): each distinct message once,
/// and a key per row.
pub(crate) struct SharedBytesBuilder {
    keys: Int32Builder,
    values: BinaryBuilder,
    known: FxHashMap<Vec<u8>, i32>,
}

impl SharedBytesBuilder {
    pub(crate) fn with_capacity(rows: usize) -> SharedBytesBuilder {
        SharedBytesBuilder {
            keys: Int32Builder::with_capacity(rows),
            values: BinaryBuilder::new(),
            known: FxHashMap::default(),
        }
    }

    /// The key of this message, added if it is new.
    pub(crate) fn intern(&mut self, message: &[u8]) -> i32 {
        if let Some(k) = self.known.get(message) {
            return *k;
        }
        let k = self.known.len() as i32;
        self.values.append_value(message);
        self.known.insert(message.to_vec(), k);
        k
    }

    pub(crate) fn append_key(&mut self, key: i32) {
        self.keys.append_value(key);
    }

    pub(crate) fn finish(mut self) -> Result<ArrayRef, StoreError> {
        let dict = DictionaryArray::<Int32Type>::try_new(self.keys.finish(), Arc::new(self.values.finish()))
            .map_err(StoreError::arrow)?;
        Ok(Arc::new(dict))
    }
}

/// A resource or scope column as read: each row's key into the distinct encoded messages, so
/// a reader decodes or matches each message once. Every read of a data file gets these columns
/// as dictionaries, whatever the file's Arrow schema says (`read::with_shared_bytes`).
#[derive(Clone, Copy)]
pub struct SharedBytes<'a> {
    keys: &'a [i32],
    values: &'a BinaryArray,
    /// `values` as the batch holds it: batches of one column chunk share this `Arc`.
    dictionary: &'a ArrayRef,
}

impl<'a> SharedBytes<'a> {
    /// The column `name` of `b`, or `None` when the read left it out.
    pub fn column(b: &'a RecordBatch, name: &str) -> Result<Option<SharedBytes<'a>>, StoreError> {
        let Some(a) = b.column_by_name(name) else {
            return Ok(None);
        };
        let shared = a.as_any().downcast_ref::<DictionaryArray<Int32Type>>().and_then(|d| {
            let values = d.values().as_any().downcast_ref::<BinaryArray>()?;
            Some((d.keys().values(), values, d.values()))
        });
        match shared {
            Some((keys, values, dictionary)) => Ok(Some(SharedBytes {
                keys,
                values,
                dictionary,
            })),
            None => Err(StoreError::corrupt(format!("column {name} has type {}", a.data_type()))),
        }
    }

    /// How many distinct keys there may be (keys are below this).
    pub fn distinct(&self) -> usize {
        self.values.len()
    }

    /// The distinct messages as one shared array: the same `Arc` means the same keys.
    pub fn dictionary(&self) -> &'a ArrayRef {
        self.dictionary
    }

    pub fn key(&self, row: usize) -> usize {
        self.keys[row] as usize
    }

    pub fn message(&self, key: usize) -> &'a [u8] {
        self.values.value(key)
    }

    pub fn row(&self, row: usize) -> &'a [u8] {
        self.message(self.key(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan and the index (past `SCAN_LIMIT` rows) answer like a plain map of latest rows,
    /// repeated ids included.
    #[test]
    fn trace_spans_find_the_latest_row_of_an_id_small_and_big() {
        let mut spans = TraceSpans::default();
        let mut reference: std::collections::HashMap<SpanId, u32> = Default::default();
        let id = |i: u64| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1).to_be_bytes();
        for row in 0..300u64 {
            // Every 7th row repeats an earlier id (Zipkin's shared client/server spans).
            let sid = if row % 7 == 6 { id(row / 2) } else { id(row) };
            for probe in [id(row / 3), id(row / 2), id(row + 1000)] {
                assert_eq!(spans.position(&probe), reference.get(&probe).copied(), "row {row}");
            }
            assert_eq!(spans.len(), row as u32);
            spans.push(sid);
            reference.insert(sid, row as u32);
        }
        assert!(spans.index.is_some(), "a 300-span trace is indexed");
        spans.clear();
        assert_eq!(spans.len(), 0);
        assert_eq!(spans.position(&id(1)), None);
        assert!(spans.index.is_none());
    }

    /// A block counts the calls between its spans' services as a dependencies scan would: a
    /// child of another service under a parent before it in its trace; a child whose parent
    /// is not in the block is unresolved; a root or a call within a service is neither. Past
    /// `MAX_LISTED_CALLS` distinct pairs, or `MAX_SERVICES_PER_BLOCK` services, the block
    /// keeps none.
    #[test]
    fn blocks_count_their_calls_and_give_up_past_the_listed_pairs() {
        let span = |trace: u8, id: u8, parent: u8, service: &str| Span {
            trace_id: [trace; 16],
            span_id: [id; 8],
            parent_span_id: [parent; 8],
            start_unix_nano: 1_000 + id as u64,
            end_unix_nano: 2_000,
            resource: Arc::new(skein_model::Resource {
                attributes: vec![KeyValue::string("service.name", service)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let spans = [
            // Trace 1: a → b → {c, b}, and a child of a span in another block.
            span(1, 1, 0, "a"),
            span(1, 2, 1, "b"),
            span(1, 3, 2, "c"),
            span(1, 4, 2, "b"),
            span(1, 5, 9, "c"),
            // Trace 2: a → b twice.
            span(2, 1, 0, "a"),
            span(2, 2, 1, "b"),
            span(2, 3, 1, "b"),
        ];
        let refs: Vec<&Span> = spans.iter().collect();
        let built = crate::build_block(&refs, "calls".into(), 1, std::time::Duration::from_secs(3600)).expect("block");
        let calls = built.meta.calls.expect("calls");
        let edges = |v: &[(&str, &str, u64)]| -> Vec<(String, String, u64)> {
            v.iter().map(|(p, c, n)| (p.to_string(), c.to_string(), *n)).collect()
        };
        assert_eq!(calls.edges, edges(&[("a", "b", 3), ("b", "c", 1)]));
        assert_eq!(calls.unresolved, 1);

        // One trace whose root calls MAX_LISTED_CALLS + 1 distinct services.
        let mut wide = vec![span(3, 0, 0, "root")];
        wide[0].span_id = [0xff; 8];
        for i in 0..=MAX_LISTED_CALLS {
            let mut s = span(3, 1, 0, &format!("svc-{i}"));
            s.span_id = (i as u64 + 1).to_be_bytes();
            s.parent_span_id = [0xff; 8];
            s.start_unix_nano = 5_000;
            wide.push(s);
        }
        let refs: Vec<&Span> = wide.iter().collect();
        let built = crate::build_block(&refs, "wide".into(), 1, std::time::Duration::from_secs(3600)).expect("block");
        assert_eq!(built.meta.calls, None, "too many pairs to list");

        // Roots of MAX_SERVICES_PER_BLOCK + 1 services: no pair at all, but too many names.
        let roots: Vec<Span> = (0..=MAX_SERVICES_PER_BLOCK)
            .map(|i| {
                let mut s = span(4, 1, 0, &format!("svc-{i}"));
                s.trace_id = (i as u128 + 1).to_be_bytes();
                s
            })
            .collect();
        let refs: Vec<&Span> = roots.iter().collect();
        let built = crate::build_block(&refs, "many".into(), 1, std::time::Duration::from_secs(3600)).expect("block");
        assert_eq!(built.meta.calls, None, "too many services to list");
    }

    fn span_with(attrs: Vec<KeyValue>) -> Span {
        Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            attributes: attrs,
            ..Default::default()
        }
    }

    /// The operations a meta lists stop at `MAX_LISTED_OPERATIONS` in all, however many
    /// services share them, and services past `MAX_SERVICES_PER_BLOCK` are left out.
    #[test]
    fn meta_operation_and_service_lists_are_bounded_in_all() {
        let mut ops = ServiceOperations::default();
        for svc in 0..70 {
            for op in 0..MAX_OPERATIONS_PER_SERVICE {
                ops.note(&format!("s{svc}"), &format!("op{op}"), 1);
            }
        }
        for svc in 70..MAX_SERVICES_PER_BLOCK + 10 {
            ops.note(&format!("s{svc}"), "op", 1);
        }
        let mut meta = BlockMeta::new("m".into(), 0);
        ops.into_meta(&mut meta);
        assert_eq!(meta.services.len(), MAX_SERVICES_PER_BLOCK);
        assert!(meta.services_capped);
        let listed: usize = meta.services.values().map(Vec::len).sum();
        assert_eq!(listed, MAX_LISTED_OPERATIONS);
        // 65 whole lists, one partial, and every later service capped at none.
        assert_eq!(meta.operations_capped.len(), MAX_SERVICES_PER_BLOCK - 65);
        assert_eq!(meta.services["s0"].len(), MAX_OPERATIONS_PER_SERVICE);
        assert!(meta.services["s69"].is_empty());
    }

    /// A block's meta lists its generic-column and resource keys only while they stay under
    /// both bounds (count and bytes): metas stay in memory, and one client's long keys must
    /// not make every block's meta big. Past a bound the list is unknown, so a search of any
    /// key reads the column.
    #[test]
    fn meta_key_lists_stop_at_a_count_or_bytes_bound() {
        let keys = |n: usize, len: usize| (0..n).map(|i| format!("{i:0len$}")).collect::<Vec<String>>();
        let build = |keys: &[String]| {
            // Each key on one span of 2,000: too rare for a dedicated column.
            let spans: Vec<Span> = (0..2000u64)
                .map(|i| {
                    let attrs = keys
                        .get(i as usize)
                        .map(|k| KeyValue::string(k.as_str(), "v"))
                        .into_iter()
                        .collect();
                    Span {
                        span_id: (i + 1).to_be_bytes(),
                        resource: Arc::new(skein_model::Resource {
                            attributes: keys
                                .get(i as usize)
                                .map(|k| KeyValue::string(k.as_str(), "r"))
                                .into_iter()
                                .collect(),
                            dropped_attributes_count: 0,
                        }),
                        ..span_with(attrs)
                    }
                })
                .collect();
            let refs: Vec<&Span> = spans.iter().collect();
            crate::build_block(&refs, "01KEYS".into(), 0, std::time::Duration::MAX)
                .expect("build")
                .meta
        };
        let listed = keys(60, 1000); // 60,000 bytes
        let meta = build(&listed);
        assert_eq!(meta.generic_keys.as_ref(), Some(&listed));
        assert_eq!(meta.resource_keys.as_ref(), Some(&listed));
        assert!(!meta.generic_may_contain("other") && !meta.resource_may_contain("other"));
        let meta = build(&keys(70, 1000)); // 70,000 bytes
        assert_eq!((meta.generic_keys, meta.resource_keys), (None, None));
        let meta = build(&keys(MAX_LISTED_KEYS + 1, 4));
        assert_eq!((meta.generic_keys, meta.resource_keys), (None, None));
        // Merges keep the bound: two listed halves whose union is over it are unknown.
        let (a, b) = (build(&keys(40, 1000)), build(&keys(70, 1000)[30..]));
        assert!(a.generic_keys.is_some() && b.generic_keys.is_some());
        let mut union = BlockKeys::of(&a);
        union.union(&BlockKeys::of(&b));
        let mut merged = BlockMeta::new("m".into(), 1);
        union.store_in(&mut merged);
        assert_eq!(merged.generic_keys, None);
    }

    /// On a block far bigger than the sample, frequent keys still get columns and rare ones
    /// (under 0.5% of spans) do not; hot keys keep their fixed columns.
    #[test]
    fn sampled_layout_keeps_frequent_keys_and_drops_rare_ones() {
        let n = 100_000usize;
        let spans: Vec<Span> = (0..n)
            .map(|i| {
                let mut attrs = vec![
                    KeyValue::string("everywhere", "x"),
                    KeyValue::string("http.route", "/r"),
                ];
                if i % 50 == 0 {
                    attrs.push(KeyValue::new("two.percent", AnyValue::Int(i as i64)));
                }
                if i % 2000 == 0 {
                    attrs.push(KeyValue::new("rare", AnyValue::Bool(true)));
                }
                span_with(attrs)
            })
            .collect();
        let refs: Vec<&Span> = spans.iter().collect();
        let layout = choose_layout(&refs);
        let keys: Vec<(&str, HotType)> = layout.dedicated.iter().map(|d| (d.key.as_str(), d.ty)).collect();
        assert_eq!(keys, vec![("everywhere", HotType::Str), ("two.percent", HotType::Int)]);
        // One value everywhere repeats; a distinct value per span does not.
        assert_eq!(layout.low_cardinality, BTreeSet::from(["everywhere".to_string()]));
    }

    /// A decimal column takes only the values it gives back bit for bit; the others go to the
    /// generic column, every value reads back exact, and the block is written.
    #[test]
    fn decimal_columns_take_only_exact_decimals() {
        let layout = Layout::new(vec![Dedicated {
            decimals: Some(2),
            ..Dedicated::new("price", HotType::Double)
        }]);
        let prices = [12.34, 1.0 / 3.0, -0.0, 7.0, 1e300];
        let spans: Vec<Span> = prices
            .iter()
            .enumerate()
            .map(|(i, p)| Span {
                trace_id: [1; 16],
                span_id: [i as u8 + 1; 8],
                start_unix_nano: 1_000 + i as u64,
                end_unix_nano: 2_000 + i as u64,
                attributes: vec![KeyValue::new("price", AnyValue::Double(*p))],
                ..Default::default()
            })
            .collect();
        let refs: Vec<&Span> = spans.iter().collect();
        let mut keys = BlockKeys::default();
        let batch = spans_to_batch(&refs, &layout, &mut keys).expect("batch");
        let column = batch
            .column_by_name("attr.price")
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
            .expect("a double column");
        let kept: Vec<Option<f64>> = column.iter().collect();
        assert_eq!(kept, vec![Some(12.34), None, None, Some(7.0), None]);
        assert_eq!(keys.generic.into_list(), Some(vec!["price".to_string()]));
        let back = super::super::read::batch_to_spans(&batch).expect("spans");
        for (s, want) in back.iter().zip(prices) {
            assert!(
                matches!(s.attributes[..], [KeyValue { value: AnyValue::Double(x), .. }] if x.to_bits() == want.to_bits()),
                "{want}: {:?}",
                s.attributes
            );
        }
        let mut builder = BlockBuilder::new("decimals".into(), 0, layout).expect("builder");
        builder.push(&batch).expect("the column holds decimals only");
        builder.finish().expect("block");
    }

    /// Event times stored relative to the span's start come back exact wherever they fall:
    /// before the start, after the end, unset (0) or at the top of the range.
    #[test]
    fn event_times_round_trip_relative_to_the_span_start() {
        let start = 1_795_000_000_123_456_789u64;
        let times = [start, start + 1, start + 2_500_000, start - 7, 0, u64::MAX];
        let span = Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            start_unix_nano: start,
            end_unix_nano: start + 1_000_000,
            events: times
                .iter()
                .enumerate()
                .map(|(i, &t)| skein_model::Event {
                    time_unix_nano: t,
                    name: format!("e{i}"),
                    attributes: vec![KeyValue::new("i", AnyValue::Int(i as i64))],
                    dropped_attributes_count: i as u32,
                })
                .collect(),
            ..Default::default()
        };
        let batch = spans_to_batch(&[&span], &Layout::fixed(), &mut BlockKeys::default()).expect("batch");
        let back = super::super::read::batch_to_spans(&batch).expect("spans");
        assert_eq!(back[0].events, span.events);
    }

    /// A span without events is a null in the events column, also when its row comes from a
    /// block before format 6 with an empty list there, and reads back without events.
    #[test]
    fn spans_without_events_are_stored_as_nulls() {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let span = |i: u8, events: usize| Span {
            trace_id: [i; 16],
            span_id: [i; 8],
            start_unix_nano: 1_795_000_000_000_000_000,
            end_unix_nano: 1_795_000_000_001_000_000,
            events: (0..events)
                .map(|e| skein_model::Event {
                    time_unix_nano: 1_795_000_000_000_000_500,
                    name: format!("e{e}"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let spans = [span(1, 0), span(2, 2), span(3, 0), span(4, 1)];
        let refs: Vec<&Span> = spans.iter().collect();
        let batch = spans_to_batch(&refs, &Layout::fixed(), &mut BlockKeys::default()).expect("batch");
        let events = batch.column(schema::col(schema::EVENTS));
        assert_eq!(events.logical_nulls().expect("nulls").null_count(), 2);

        // As an older block reads back: empty lists, no nulls.
        let mut columns = batch.columns().to_vec();
        let blobs = binaries(&batch, schema::EVENTS).expect("events");
        columns[schema::col(schema::EVENTS)] = Arc::new(BinaryArray::from_iter_values(
            blobs.iter().map(|b| b.unwrap_or_default()),
        ));
        let old = RecordBatch::try_new(batch.schema(), columns).expect("old batch");
        assert_eq!(old.column(schema::col(schema::EVENTS)).null_count(), 0);

        for input in [batch, old] {
            let mut builder = BlockBuilder::new("events".into(), 0, Layout::fixed()).expect("builder");
            builder.push(&input).expect("push");
            let DataSink::Memory(file) = builder.finish().expect("block").data else {
                panic!("a memory sink")
            };
            let read = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(file))
                .expect("parquet")
                .build()
                .expect("reader")
                .collect::<Result<Vec<_>, _>>()
                .expect("batches");
            let stored = read[0].column_by_name(schema::EVENTS).expect("events column");
            assert_eq!(stored.null_count(), 2, "spans 1 and 3 have no events");
            let mut back = Vec::new();
            let mut parents = super::super::read::ParentResolver::default();
            for b in read {
                back.extend(super::super::read::batch_to_spans(&parents.resolve(b).expect("parents")).expect("spans"));
            }
            let counts: Vec<usize> = back.iter().map(|s| s.events.len()).collect();
            assert_eq!(counts, vec![0, 2, 0, 1]);
            assert_eq!(back[1].events, spans[1].events);
        }
    }

    /// Blocks of format 2 stored OTLP events with absolute times; they still read the same.
    #[test]
    fn absolute_event_times_of_older_blocks_still_read() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct OtlpEventList {
            #[prost(message, repeated, tag = "1")]
            events: Vec<skein_model::otlp::pb::trace::v1::span::Event>,
        }
        let old = OtlpEventList {
            events: vec![skein_model::otlp::pb::trace::v1::span::Event {
                time_unix_nano: 1_795_000_000_000_000_042,
                name: "log".into(),
                ..Default::default()
            }],
        };
        let list = <super::super::EventList as prost::Message>::decode(prost::Message::encode_to_vec(&old).as_slice())
            .expect("decodes");
        assert_eq!(list.events[0].name, "log");
        assert_eq!(
            list.events[0].time(5),
            1_795_000_000_000_000_042,
            "the span start is not added"
        );
    }

    /// Spans of several requests (distinct resource `Arc`s) interleaved by the sort keep their
    /// own resource and service.
    #[test]
    fn interleaved_resources_keep_their_own_service() {
        let res = |name: &str| {
            Arc::new(skein_model::Resource {
                attributes: vec![KeyValue::string("service.name", name)],
                dropped_attributes_count: 0,
            })
        };
        // `a2` is another request's copy of `a`: the column holds their message once.
        let (a, a2, b) = (res("a"), res("a"), res("b"));
        let spans: Vec<Span> = (0..10u8)
            .map(|i| Span {
                trace_id: [i + 1; 16],
                span_id: [i + 1; 8],
                resource: match i % 4 {
                    0 => a.clone(),
                    2 => a2.clone(),
                    _ => b.clone(),
                },
                ..Default::default()
            })
            .collect();
        let refs: Vec<&Span> = spans.iter().collect();
        let mut keys = BlockKeys::default();
        let batch = spans_to_batch(&refs, &Layout::fixed(), &mut keys).expect("batch");
        let services = strings(&batch, schema::SERVICE).expect("service column");
        let resources = SharedBytes::column(&batch, schema::RESOURCE)
            .expect("resource column type")
            .expect("resource column");
        for (i, span) in spans.iter().enumerate() {
            let want = if i % 2 == 0 { "a" } else { "b" };
            assert_eq!(services.value(i), want);
            let mut encoded = Vec::new();
            wire::resource(&span.resource, &mut encoded);
            assert_eq!(resources.row(i), encoded.as_slice());
        }
        assert_eq!(resources.distinct(), 2);
        assert_eq!(keys.resource.into_list(), Some(vec!["service.name".to_string()]));
    }
}
