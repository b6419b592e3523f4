//! Immutable blocks: a Parquet file of spans, a Parquet table of trace summaries, a bloom
//! filter over trace ids and a JSON meta, all under `blocks/<id>/` in the object store.

pub mod bloom;
pub mod footers;
pub(crate) mod fxhash;
pub(crate) mod prefetch;
pub mod read;
pub mod schema;
pub mod sums;
pub mod write;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use skein_model::otlp::pb;
use skein_model::TraceId;

pub use read::BlockHandle;
pub use schema::{Dedicated, Layout};
pub use write::{
    BlockBuilder, BuiltBlock, DataSink, TraceSummary, CLOCK_AHEAD_SLACK, MAX_OPERATIONS_PER_SERVICE,
    MAX_SERVICES_PER_BLOCK,
};

/// 2 added per-block dedicated attribute columns; 3 stores event times relative to their
/// span's start (see `StoredEvent`); 4 leaves the trace ids out of the summary table (see
/// `schema::SUMMARIES`); 5 may store a double column as decimals (`Dedicated::decimals`); 6
/// stores a span without events as a null in the events column, not an empty list; 7 leaves
/// the traces' starts out of the summary table (`schema::SUM_START`). 1 to 6 are still read.
pub const FORMAT_VERSION: u32 = 7;
pub const OLDEST_READABLE_FORMAT: u32 = 1;
/// Rows per row group (cut at a trace boundary past this). Large, because a footer holds a
/// record per column per row group (megabytes of memory per million spans at 16Ki rows), and a
/// trace lookup reads only the pages holding its rows whatever the row group size.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Rows per row group of a level-0 block (cut from the head). A merge reads a whole row group
/// of each input at once; small ones let one merge take 16 level-0 blocks within its memory
/// budget, so their spans are rewritten once, not twice. Level-0 blocks are short-lived, so
/// their larger footers do not matter.
pub const LEVEL0_ROW_GROUP_ROWS: usize = 16 * 1024;
/// Spans converted to one Arrow batch at a time while a block is written. The batch's builders
/// are sized for typical spans up front (dozens of columns), so at 16 Ki rows one batch held
/// ~40 MB; at 4 Ki it holds ~13 MB (heaptrack under full ingest), for the same build time in
/// `cargo bench --bench block -- "block write"` (147 ms either way).
pub const BUILD_BATCH_ROWS: usize = 4 * 1024;

pub const DATA_FILE: &str = "data.parquet";
pub const SUMMARY_FILE: &str = "traces.parquet";
pub const BLOOM_FILE: &str = "bloom";
pub const META_FILE: &str = "meta.json";
/// CRC-32Cs of the two Parquet files (`sums::BlockSums`), checked on every read.
pub const SUMS_FILE: &str = "sums";
/// Present while a block is being written, from before its first file until after its meta,
/// and while it is being deleted, from before its meta goes (`Backend::mark_incomplete`): a
/// block without a meta but with this is an interrupted write or delete.
pub const INCOMPLETE_FILE: &str = "incomplete";

#[derive(Clone, PartialEq, prost::Message)]
pub struct EventList {
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<StoredEvent>,
}

/// A span event in the `events` column: OTLP's `Event` fields plus, from format 3, the time
/// relative to the span's start (written by `wire::stored_event_list`). Blocks of formats 1
/// and 2, and their rows copied by compaction, carry the absolute time in field 1 instead.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredEvent {
    #[prost(fixed64, tag = "1")]
    pub time_unix_nano: u64,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<pb::common::v1::KeyValue>,
    #[prost(uint32, tag = "4")]
    pub dropped_attributes_count: u32,
    #[prost(sint64, optional, tag = "15")]
    pub since_span_start: Option<i64>,
}

impl StoredEvent {
    pub fn time(&self, span_start: u64) -> u64 {
        match self.since_span_start {
            Some(d) => span_start.wrapping_add(d as u64),
            None => self.time_unix_nano,
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinkList {
    #[prost(message, repeated, tag = "1")]
    pub links: Vec<pb::trace::v1::span::Link>,
}

mod hex_id {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(id: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&skein_model::hex::encode(id))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let s = String::deserialize(d)?;
        skein_model::hex::decode_id(&s).ok_or_else(|| serde::de::Error::custom("bad trace id"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowGroupMeta {
    #[serde(with = "hex_id")]
    pub min_trace: TraceId,
    #[serde(with = "hex_id")]
    pub max_trace: TraceId,
    pub min_start: u64,
    pub max_end: u64,
    pub rows: u64,
    /// Holds spans stamped past the block's `times_capped_at`; where they start is in
    /// `BlockMeta::ahead_starts`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ahead: bool,
}

/// What a block holds, read at start-up and kept in memory for pruning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockMeta {
    pub format: u32,
    pub id: String,
    /// 0 for blocks cut from the head; a compacted block is one more than its highest input.
    pub level: u32,
    pub min_start: u64,
    pub max_end: u64,
    /// Where the spans stamped past `times_capped_at` start, which the range above leaves
    /// out: at most `MAX_AHEAD_RANGES` sorted, disjoint ranges (inclusive) covering every such
    /// start, so a search of their own time still finds them. Starts past the block's expected
    /// life end in one open range (`BlockBuilder::keep_ahead_for`). `None` in blocks written
    /// before they were kept, which do not find those spans by their time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ahead_starts: Option<Vec<[u64; 2]>>,
    pub span_count: u64,
    pub trace_count: u64,
    pub data_bytes: u64,
    pub summary_bytes: u64,
    /// service → (operation, span kind) pairs present in the block: all of them, except for
    /// the services in `operations_capped`.
    pub services: BTreeMap<String, Vec<(String, u8)>>,
    /// Services with more distinct operations in this block than a meta lists
    /// (`MAX_OPERATIONS_PER_SERVICE`): their list above is incomplete, so a search by operation
    /// cannot rule the block out.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub operations_capped: BTreeSet<String>,
    /// The block holds spans of more services than `services` lists
    /// (`MAX_SERVICES_PER_BLOCK`): a search by service or by operation cannot rule it out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub services_capped: bool,
    pub row_groups: Vec<RowGroupMeta>,
    /// Span attribute keys with a column of their own in this block (after the fixed columns).
    #[serde(default)]
    pub dedicated: Vec<Dedicated>,
    /// Dedicated keys whose values repeat; their columns are stored uncompressed (format 3
    /// blocks written before this field have none: every column compressed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub low_cardinality: Vec<String>,
    /// Distinct keys in the generic attribute column; `None` when unknown or too many to list
    /// (then any key may be there). Search decodes the generic column only for listed keys.
    #[serde(default)]
    pub generic_keys: Option<Vec<String>>,
    /// Distinct resource attribute keys; `None` when unknown or too many to list. Search
    /// reads the resource column only for keys listed here.
    #[serde(default)]
    pub resource_keys: Option<Vec<String>>,
    /// WAL segments whose spans this block holds (replay skips them after a crash).
    #[serde(default)]
    pub wal_segments: Vec<u64>,
    /// Blocks this one was merged from, and theirs in turn: a merge commits by writing this
    /// meta and deletes its inputs afterwards, so after a crash in between the next start
    /// deletes them instead of serving their spans twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<String>,
    /// When this block was written: every span in it had been received by then (a merge
    /// comes after its inputs were written).
    pub created_unix_nano: u64,
    /// CRC-32C of the `bloom` file, checked when the block is opened: a damaged bloom would
    /// otherwise turn trace lookups away from a block that holds the trace. Blocks written
    /// before this have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bloom_crc32c: Option<u32>,
    /// CRC-32C of the `sums` file, which holds the checksums reads check the Parquet files
    /// against. Blocks written before it have none, and their reads are not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sums_crc32c: Option<u32>,
    /// The service-to-service calls among the block's spans, counted as the block was built:
    /// a dependencies query whose window holds the whole block takes them from here instead
    /// of reading the block. `None` in blocks written before it, and when there were more
    /// distinct pairs than `MAX_LISTED_CALLS` or more services than `MAX_SERVICES_PER_BLOCK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<BlockCalls>,
}

/// Most distinct (parent service, child service) pairs a block's meta lists in `calls`.
pub const MAX_LISTED_CALLS: usize = 1024;

/// What a block contributes to a dependencies query whose window holds all of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockCalls {
    /// (parent's service, child's service, calls): a child whose parent is in the same trace
    /// within this block and of another service, sorted by the names.
    pub edges: Vec<(String, String, u64)>,
    /// Children whose parent is not in this block before them (it is in another block, or
    /// lost): their rows keep the parent's id, and a query reads only those rows.
    pub unresolved: u64,
}

impl BlockMeta {
    pub fn new(id: String, level: u32) -> BlockMeta {
        BlockMeta {
            format: FORMAT_VERSION,
            id,
            level,
            min_start: u64::MAX,
            max_end: 0,
            ahead_starts: Some(Vec::new()),
            span_count: 0,
            trace_count: 0,
            data_bytes: 0,
            summary_bytes: 0,
            services: BTreeMap::new(),
            operations_capped: BTreeSet::new(),
            services_capped: false,
            bloom_crc32c: None,
            sums_crc32c: None,
            calls: None,
            row_groups: Vec::new(),
            dedicated: Vec::new(),
            low_cardinality: Vec::new(),
            generic_keys: Some(Vec::new()),
            resource_keys: Some(Vec::new()),
            wal_segments: Vec::new(),
            replaces: Vec::new(),
            created_unix_nano: crate::now_unix_nano(),
        }
    }

    pub fn layout(&self) -> Layout {
        Layout::new(self.dedicated.clone()).with_low_cardinality(self.low_cardinality.iter().map(String::as_str))
    }

    /// Whether the summary table is found by rows (`BlockHandle::trace_rows`): from format 4
    /// it keeps no trace ids.
    pub fn summaries_by_row(&self) -> bool {
        self.format >= 4
    }

    /// Whether the generic attribute column may hold `key`.
    pub fn generic_may_contain(&self, key: &str) -> bool {
        self.generic_keys
            .as_ref()
            .is_none_or(|keys| keys.binary_search_by(|k| k.as_str().cmp(key)).is_ok())
    }

    /// Whether some span's resource in this block may have attribute `key`.
    pub fn resource_may_contain(&self, key: &str) -> bool {
        self.resource_keys
            .as_ref()
            .is_none_or(|keys| keys.binary_search_by(|k| k.as_str().cmp(key)).is_ok())
    }

    pub fn total_bytes(&self) -> u64 {
        self.data_bytes + self.summary_bytes
    }

    /// The block's age for retention: when its newest span ended, or when the block was
    /// written if that is earlier. Spans stamped in the future (a client with its clock far
    /// ahead) would otherwise keep their block, and the disk it holds, for good.
    pub fn retention_time(&self) -> u64 {
        self.max_end.min(self.created_unix_nano)
    }

    /// Span times past this count as this in the block's and its row groups' time ranges
    /// (`CLOCK_AHEAD_SLACK`): a range that reaches it may hold spans stamped later, whose
    /// starts are in `ahead_starts` (blocks written before the cap have real ranges, and are
    /// only taken for capped when they reach it).
    pub fn times_capped_at(&self) -> u64 {
        self.created_unix_nano.saturating_add(write::CLOCK_AHEAD_SLACK)
    }

    /// The latest a span in the block that starts by `hi` may start: from `max_end` and the
    /// ranges of `ahead_starts`, each cut at `hi`; `hi` itself when the range was capped in a
    /// block written before those were kept (it bounds nothing there).
    pub fn latest_start_until(&self, hi: u64) -> u64 {
        let Some(ahead) = &self.ahead_starts else {
            return if self.max_end >= self.times_capped_at() {
                hi
            } else {
                self.max_end.min(hi)
            };
        };
        let in_range = if self.min_start <= hi { self.max_end.min(hi) } else { 0 };
        ahead
            .iter()
            .filter(|r| r[0] <= hi)
            .map(|r| r[1].min(hi))
            .fold(in_range, u64::max)
    }

    /// Whether spans starting in `[start, end]` may be in the block.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        (self.min_start <= end && self.max_end >= start) || self.ahead_overlaps(start, end)
    }

    /// Whether every span of the block starts and ends in `[start, end]`: none stamped past
    /// the cap (a row group holding such spans lists them in `ahead_starts`; blocks older than
    /// the list may hold them unlisted). Stricter than a dependencies query needs (starts
    /// only): a block with a span ending past the window is read instead.
    pub fn within(&self, start: u64, end: u64) -> bool {
        let none_ahead = self.ahead_starts.as_ref().is_some_and(Vec::is_empty);
        none_ahead && self.span_count > 0 && self.min_start >= start && self.max_end <= end
    }

    /// Whether row group `g` may hold spans starting in `[start, end]`.
    pub fn group_overlaps(&self, g: &RowGroupMeta, start: u64, end: u64) -> bool {
        (g.min_start <= end && g.max_end >= start) || (g.ahead && self.ahead_overlaps(start, end))
    }

    fn ahead_overlaps(&self, start: u64, end: u64) -> bool {
        self.ahead_starts
            .iter()
            .flatten()
            .any(|&[first, last]| first <= end && last >= start)
    }

    /// Counts starts `first..=last`, stamped past the cap, in `ahead_starts`.
    pub(crate) fn note_ahead(&mut self, mut first: u64, mut last: u64) {
        let ranges = self.ahead_starts.get_or_insert_with(Vec::new);
        let i = ranges.partition_point(|r| r[1] < first);
        if ranges.get(i).is_some_and(|r| r[0] <= first && last <= r[1]) {
            return;
        }
        // Ranges it touches become part of it.
        while ranges.get(i).is_some_and(|r| r[0] <= last) {
            first = first.min(ranges[i][0]);
            last = last.max(ranges[i][1]);
            ranges.remove(i);
        }
        ranges.insert(i, [first, last]);
        if ranges.len() > MAX_AHEAD_RANGES {
            // Close the smallest gap: the ranges widen where such spans are densest.
            let j = (0..ranges.len() - 1)
                .min_by_key(|&j| ranges[j + 1][0] - ranges[j][1])
                .expect("more than one range");
            ranges[j][1] = ranges[j + 1][1];
            ranges.remove(j + 1);
        }
    }
}

/// How many ranges a block's meta keeps of where its spans stamped past the cap start
/// (`BlockMeta::ahead_starts`): a client with a clock off by a few days adds one; a client
/// whose times scatter widens them instead of growing the meta.
pub const MAX_AHEAD_RANGES: usize = 16;

/// A new block id: time-ordered so listings sort oldest first.
pub fn new_block_id() -> String {
    format!("{:016x}-{:08x}", crate::now_unix_nano(), fastrand_u32())
}

fn fastrand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::now_unix_nano());
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However many starts past the cap a block holds, its meta keeps at most
    /// `MAX_AHEAD_RANGES` sorted, disjoint ranges, and every start lies in one.
    #[test]
    fn ahead_starts_stay_few_and_cover_every_start() {
        let seed = fastrand::u64(..);
        println!("seed {seed}");
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut meta = BlockMeta::new("b".into(), 0);
        let mut noted = Vec::new();
        for i in 0..2_000u64 {
            // Bursts around a few times, now and then one far off, and now and then a range.
            let (first, last) = match rng.u32(..20) {
                0 | 1 => {
                    let t = rng.u64(..u64::MAX / 2);
                    (t, t)
                }
                2 => {
                    let t = rng.u64(..u64::MAX / 2);
                    (t, t.saturating_add(rng.u64(..1 << 40)))
                }
                k => {
                    let t = k as u64 * 1_000_000_000_000 + rng.u64(..1_000_000) + i;
                    (t, t)
                }
            };
            meta.note_ahead(first, last);
            noted.push((first, last));
            let ranges = meta.ahead_starts.as_ref().unwrap();
            assert!(ranges.len() <= MAX_AHEAD_RANGES, "{ranges:?}");
            assert!(ranges.iter().all(|r| r[0] <= r[1]), "{ranges:?}");
            assert!(ranges.windows(2).all(|w| w[0][1] < w[1][0]), "{ranges:?}");
        }
        let ranges = meta.ahead_starts.as_ref().unwrap();
        for (first, last) in noted {
            assert!(
                ranges.iter().any(|r| r[0] <= first && last <= r[1]),
                "{first}..={last} not in {ranges:?}"
            );
            assert!(meta.overlaps(first, first) && meta.overlaps(last, last));
        }
    }

    /// A few distinct starts are kept exactly; a 17th closes the smallest gap; ranges merge
    /// with those they touch; the latest start a window can meet is cut at its end.
    #[test]
    fn ahead_starts_merge_and_bound_starts() {
        let mut meta = BlockMeta::new("b".into(), 0);
        meta.min_start = 1;
        meta.max_end = 5;
        for t in [50, 10, 30, 10, 30] {
            meta.note_ahead(t, t);
        }
        assert_eq!(meta.ahead_starts, Some(vec![[10, 10], [30, 30], [50, 50]]));
        assert!(!meta.overlaps(11, 29) && meta.overlaps(29, 30));
        assert_eq!(meta.latest_start_until(u64::MAX), 50);
        assert_eq!(meta.latest_start_until(40), 30);
        assert_eq!(meta.latest_start_until(20), 10);
        assert_eq!(meta.latest_start_until(7), 5);
        let group = |ahead| RowGroupMeta {
            min_trace: [0; 16],
            max_trace: [0; 16],
            min_start: 1,
            max_end: 5,
            rows: 1,
            ahead,
        };
        assert!(meta.group_overlaps(&group(true), 30, 30));
        assert!(!meta.group_overlaps(&group(false), 30, 30));

        // An open range swallows the ranges it reaches, and bounds nothing past them.
        meta.note_ahead(29, u64::MAX);
        assert_eq!(meta.ahead_starts, Some(vec![[10, 10], [29, u64::MAX]]));
        assert_eq!(meta.latest_start_until(1_000), 1_000);
        assert_eq!(meta.latest_start_until(20), 10);

        // Seventeen points 100 apart but one 1 from its neighbour: those two merge.
        let mut meta = BlockMeta::new("b".into(), 0);
        for k in 0..16u64 {
            meta.note_ahead(k * 100, k * 100);
        }
        meta.note_ahead(701, 701);
        let ranges = meta.ahead_starts.as_ref().unwrap();
        assert_eq!(ranges.len(), MAX_AHEAD_RANGES);
        assert!(ranges.contains(&[700, 701]), "{ranges:?}");

        // Blocks written before the list was kept: a capped range bounds nothing.
        let mut old = BlockMeta::new("old".into(), 0);
        old.ahead_starts = None;
        old.min_start = 1;
        old.max_end = old.times_capped_at();
        assert_eq!(old.latest_start_until(u64::MAX), u64::MAX);
        old.max_end = 5;
        assert_eq!(old.latest_start_until(u64::MAX), 5);
    }
}
