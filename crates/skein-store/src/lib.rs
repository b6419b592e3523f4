//! The embedded trace store: WAL → head → Parquet blocks, with compaction and retention.
//!
//! One writer thread owns the WAL: it group-commits whatever requests are queued (one fsync
//! for all of them), inserts their spans into the head, acknowledges, and cuts the head into a
//! block when it is big or old enough. Blocks are built and uploaded on the tokio runtime; a
//! block's WAL segments are deleted once the block is durable.

pub mod backend;
pub mod block;
pub mod compact;
pub mod head;
pub mod pending;
pub mod wal;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use skein_model::metrics::{self, Counter, Gauge, Histogram};
use skein_model::units::{serde_bytes, serde_duration};
use skein_model::{Span, SpanId, TraceId};
use tokio::sync::oneshot;

use backend::Backend;
use block::{BlockBuilder, BlockHandle, BlockMeta};
use head::{Head, HeadView};
use pending::{DueTrace, Pending, PendingBounds, PendingStats};

/// Bytes scrubs read and checked (`Store::start_scrub`).
fn scrubbed_bytes() -> Counter {
    metrics::counter(
        "skein_scrubbed_bytes_total",
        "Block bytes read whole by scrubs and checked against their checksums",
        &[],
    )
}

pub fn now_unix_nano() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A duration in nanoseconds, at most `u64::MAX` (a retention of centuries would wrap).
pub(crate) fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("object store: {0}")]
    Object(String),
    #[error("parquet: {0}")]
    Parquet(String),
    #[error("arrow: {0}")]
    Arrow(String),
    #[error("decoding stored data: {0}")]
    Decode(String),
    #[error("corrupt block: {0}")]
    Corrupt(String),
    #[error("the store is overloaded ({0}); retry later")]
    Overloaded(&'static str),
    #[error("the store is shutting down")]
    ShuttingDown,
    /// The WAL could not be written (a full disk, an I/O error): nothing of the request was
    /// stored, and a retry may succeed once the cause is gone.
    #[error("the write-ahead log cannot be written: {0}")]
    WalUnwritable(String),
    #[error("data directory {0} is in use by another skein process{1}; stop it or choose another --data-dir")]
    InUse(PathBuf, String),
    #[error("internal: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
    pub fn object(e: object_store::Error) -> Self {
        StoreError::Object(e.to_string())
    }
    /// A Parquet read's error; one that only passes on the backend's (a missing file, no file
    /// descriptor left) stays an object-store error, which a retry may cure.
    pub fn parquet(e: parquet::errors::ParquetError) -> Self {
        match &e {
            parquet::errors::ParquetError::External(inner)
                if inner.is::<object_store::Error>() || inner.is::<std::io::Error>() =>
            {
                StoreError::Object(e.to_string())
            }
            _ => StoreError::Parquet(e.to_string()),
        }
    }
    pub fn arrow(e: arrow_schema::ArrowError) -> Self {
        StoreError::Arrow(e.to_string())
    }
    pub fn decode(e: prost::DecodeError) -> Self {
        StoreError::Decode(e.to_string())
    }
    pub fn corrupt(msg: impl Into<String>) -> Self {
        StoreError::Corrupt(msg.into())
    }

    /// Whether the error says stored data is damaged (it decodes wrong), as against the
    /// storage being unreachable or the store busy: a retry cannot help.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            StoreError::Parquet(_) | StoreError::Arrow(_) | StoreError::Decode(_) | StoreError::Corrupt(_)
        )
    }

    /// Whether the error says stored data could not be reached this time (a file missing or
    /// unreadable, no file descriptor left): a later read may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Object(_) | StoreError::Io { .. })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Spans in the head before it is cut into a block.
    pub head_max_spans: usize,
    /// Estimated memory of the head before it is cut.
    #[serde(with = "serde_bytes")]
    pub head_max_bytes: u64,
    /// Age of the head before it is cut (even when small), bounding WAL replay time.
    #[serde(with = "serde_duration")]
    pub head_max_age: Duration,
    /// Requests waiting for the WAL before new ones are refused with backpressure.
    pub wal_queue_depth: usize,
    /// Heads waiting to become blocks before ingest is refused with backpressure.
    pub max_pending_blocks: usize,
    /// How long a request may wait for a block being written when `max_pending_blocks` heads
    /// are already waiting, before it is refused with backpressure. Waiting smooths the
    /// block-writer cadence that would otherwise idle every client for its whole retry delay.
    #[serde(with = "serde_duration")]
    pub admission_wait: Duration,
    /// Level-0 blocks (cut from the head, not yet compacted) past which a request waits up to
    /// `admission_wait` for the merge in progress, then is refused with backpressure: ingest
    /// slows to what compaction clears instead of leaving ever more small blocks. 0: no limit.
    pub max_level0_blocks: usize,
    /// Blocks whose newest span is older than this are deleted.
    #[serde(with = "serde_duration")]
    pub retention: Duration,
    /// When set, the oldest blocks are deleted while the total exceeds this many bytes.
    #[serde(with = "serde_bytes")]
    pub retention_max_bytes: u64,
    #[serde(with = "serde_duration")]
    pub compaction_interval: Duration,
    /// Compaction merges small blocks into blocks of up to this many spans.
    pub compaction_target_spans: u64,
    /// Memory for the Parquet footers of recently read blocks (a few MB per million spans);
    /// a lookup in a block whose footer is not kept reads and parses it first.
    #[serde(with = "serde_bytes")]
    pub footer_cache_bytes: u64,
    /// How often every block is read whole and checked against its checksums, so damage is
    /// found (and reported) before a query or a merge needs the bytes; the first pass starts
    /// `min(scrub_interval, 5m)` after start. 0 turns it off.
    #[serde(with = "serde_duration")]
    pub scrub_interval: Duration,
    /// Bytes per second a scrub reads at most, to leave the disk to ingest and queries.
    #[serde(with = "serde_bytes")]
    pub scrub_rate: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            head_max_spans: 250_000,
            head_max_bytes: 64 << 20,
            head_max_age: Duration::from_secs(60),
            wal_queue_depth: 512,
            max_pending_blocks: 2,
            admission_wait: Duration::from_secs(1),
            max_level0_blocks: 64,
            retention: Duration::from_secs(7 * 86400),
            retention_max_bytes: 0,
            compaction_interval: Duration::from_secs(30),
            compaction_target_spans: 1_000_000,
            footer_cache_bytes: 256 << 20,
            scrub_interval: Duration::from_secs(86400),
            scrub_rate: 32 << 20,
        }
    }
}

struct Frozen {
    head: Head,
}

#[derive(Default)]
struct State {
    head: Head,
    frozen: Vec<Arc<Frozen>>,
    blocks: Vec<Arc<BlockHandle>>,
    /// Blocks taken out of `blocks` (merged or expired) whose files are still there: a query
    /// that took its snapshot before may still read them. See `Store::delete_retired`.
    retired: Vec<Arc<BlockHandle>>,
    /// Spans waiting for a tail-sampling decision (durable, not yet queryable).
    pending: Pending,
    /// Tail sampling is on: pending spans are carried across head cuts.
    holding: bool,
}

impl State {
    /// The blocks queries and compaction may read: all but those a read found damaged
    /// (`BlockHandle::note_read_error`).
    fn readable_blocks(&self) -> impl Iterator<Item = &Arc<BlockHandle>> {
        self.blocks.iter().filter(|b| !b.is_unreadable())
    }
}

struct Metrics {
    wal_bytes: Counter,
    wal_records: Counter,
    fsync: Histogram,
    wal_failures: Counter,
    head_spans: Gauge,
    head_bytes: Gauge,
    head_traces: Gauge,
    blocks: Gauge,
    level0_blocks: Gauge,
    block_bytes: Gauge,
    block_spans: Gauge,
    retired_bytes: Gauge,
    pending_blocks: Gauge,
    queue_depth: Gauge,
    cuts: Counter,
    replay_truncated: Counter,
    replay_damaged: Counter,
    pending_traces: Gauge,
    pending_spans: Gauge,
    pending_bytes: Gauge,
    late_kept: Counter,
    late_dropped: Counter,
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            wal_bytes: metrics::counter("skein_wal_bytes_total", "Bytes appended to the write-ahead log", &[]),
            wal_records: metrics::counter(
                "skein_wal_records_total",
                "Records appended to the write-ahead log",
                &[],
            ),
            fsync: metrics::histogram("skein_wal_fsync_seconds", "Latency of WAL group-commit fsyncs", &[]),
            wal_failures: metrics::counter(
                "skein_wal_write_failures_total",
                "WAL group commits that failed (full disk, I/O error); their requests were refused",
                &[],
            ),
            head_spans: metrics::gauge("skein_head_spans", "Spans in the in-memory head", &[]),
            head_bytes: metrics::gauge("skein_head_bytes", "Estimated bytes held by the in-memory head", &[]),
            head_traces: metrics::gauge("skein_head_traces", "Traces in the in-memory head", &[]),
            blocks: metrics::gauge("skein_blocks", "Blocks in the store", &[]),
            level0_blocks: metrics::gauge(
                "skein_level0_blocks",
                "Blocks cut from the head and not yet compacted",
                &[],
            ),
            block_bytes: metrics::gauge(
                "skein_block_bytes",
                "Bytes of the blocks' Parquet files (data and trace summaries; their meta, bloom and checksums are not counted)",
                &[],
            ),
            block_spans: metrics::gauge("skein_block_spans", "Spans in all blocks", &[]),
            retired_bytes: metrics::gauge(
                "skein_retired_block_bytes",
                "Bytes of blocks merged away or expired, kept on disk until the queries reading them end",
                &[],
            ),
            pending_blocks: metrics::gauge("skein_pending_blocks", "Cut heads waiting to be written as blocks", &[]),
            queue_depth: metrics::gauge("skein_ingest_queue_depth", "Requests waiting for the WAL writer", &[]),
            cuts: metrics::counter("skein_head_cuts_total", "Heads cut into blocks", &[]),
            replay_truncated: metrics::counter(
                "skein_wal_truncated_bytes_total",
                "Bytes of torn or corrupt WAL tails truncated during replay",
                &[],
            ),
            replay_damaged: metrics::counter(
                "skein_wal_damaged_bytes_total",
                "Bytes of damaged WAL records skipped during replay, intact records after them kept",
                &[],
            ),
            pending_traces: metrics::gauge(
                "skein_tail_sampling_buffered_traces",
                "Traces buffered while they wait for a tail-sampling decision",
                &[],
            ),
            pending_spans: metrics::gauge(
                "skein_tail_sampling_buffered_spans",
                "Spans buffered while their trace waits for a tail-sampling decision",
                &[],
            ),
            pending_bytes: metrics::gauge(
                "skein_tail_sampling_buffered_bytes",
                "Estimated bytes of spans waiting for a tail-sampling decision",
                &[],
            ),
            late_kept: metrics::counter(
                "skein_tail_sampling_late_spans_total",
                "Spans that arrived after their trace was decided and followed the decision",
                &[("decision", "sampled")],
            ),
            late_dropped: metrics::counter(
                "skein_tail_sampling_late_spans_total",
                "Spans that arrived after their trace was decided and followed the decision",
                &[("decision", "dropped")],
            ),
        }
    }
}

enum WalMsg {
    Append {
        payload: bytes::Bytes,
        spans: Vec<Span>,
        /// The spans' memory (`spans_heap_size`), measured by the sender: its thread just
        /// decoded them and has them in cache, and the WAL writer measures under the state lock.
        heap_bytes: usize,
        /// The spans wait for a tail-sampling decision instead of entering the head.
        pending: bool,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Tail-sampling decisions: written to the WAL, then applied.
    Decide {
        decisions: Vec<(TraceId, bool)>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    Cut(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

struct Inner {
    cfg: StoreConfig,
    backend: Backend,
    wal_dir: PathBuf,
    tx: SyncSender<WalMsg>,
    state: RwLock<State>,
    metrics: Metrics,
    runtime: tokio::runtime::Handle,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    compaction: tokio::sync::Mutex<()>,
    /// Woken whenever a frozen head has become a block or a merge has ended: room, maybe, for
    /// appends waiting in `wait_for_room`.
    room: tokio::sync::Notify,
    /// Woken when a merge's worth of level-0 blocks is waiting: the maintenance loop starts
    /// one then instead of at its next interval.
    compaction_wanted: Arc<tokio::sync::Notify>,
    /// Blocks of level 0 in `State::blocks`, kept by `update_gauges`.
    level0_blocks: std::sync::atomic::AtomicUsize,
    /// When a head was last cut into a block (`None`: not since the store opened).
    last_cut: Mutex<Option<Instant>>,
    /// The data directory's lock, held until `shutdown` finishes (or the store is dropped).
    lock: Mutex<Option<std::fs::File>>,
    /// Set once `shutdown` has begun: no block is written after it.
    closing: std::sync::atomic::AtomicBool,
    /// Blocks found at start whose meta could not be read: nothing says what they hold.
    unloadable: Vec<String>,
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// A point-in-time view for queries: heads (active and being cut) and blocks.
#[derive(Clone)]
pub struct Snapshot {
    pub heads: Vec<HeadView>,
    pub blocks: Vec<Arc<BlockHandle>>,
}

/// Store-wide figures, for `/metrics`, `/ready` and the load report.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStats {
    pub head_spans: usize,
    pub pending_blocks: usize,
    pub blocks: usize,
    /// Blocks cut from the head and not yet compacted.
    pub level0_blocks: usize,
    pub block_spans: u64,
    pub block_bytes: u64,
    /// Bytes of retired blocks not yet deleted (queries still read them).
    pub retired_bytes: u64,
}

impl Store {
    /// Opens (or creates) the store under `data_dir`, replaying the WAL. Must be called inside a
    /// tokio runtime.
    pub async fn open(data_dir: &Path, cfg: StoreConfig) -> Result<Store, StoreError> {
        let wal_dir = data_dir.join("wal");
        std::fs::create_dir_all(&wal_dir).map_err(|e| StoreError::io("creating WAL directory", &wal_dir, e))?;
        let lock = lock_data_dir(data_dir).await?;
        let backend = Backend::local(data_dir.to_path_buf(), cfg.footer_cache_bytes as usize)?;
        let metrics = Metrics::new();
        // At 0 from the start, so a dashboard sees them before the first damaged block or
        // expiry (an `increase()` over a series that does not exist yet is empty, not 0).
        block::read::unreadable_blocks();
        compact::retention_deleted_blocks();
        compact::compactions();
        compact::compaction_deduped_spans();

        // Blocks first: their metas say which WAL segments are already in a block. A block
        // without a meta, marked incomplete, is what an interrupted write or delete left; with
        // the directory locked, nothing else can be writing it.
        let found = backend.list_blocks().await?;
        for (id, bytes) in &found.incomplete {
            match backend.delete_block(id).await {
                Ok(()) => {
                    tracing::warn!(block = %id, bytes, "removed an incomplete block left by an interrupted write or delete")
                }
                Err(e) => {
                    tracing::error!(block = %id, error = %e, "cannot remove an incomplete block left by an interrupted write or delete; delete blocks/<id> yourself")
                }
            }
        }
        let mut blocks = Vec::new();
        // Kept, not deleted: the files may be the only copy of their spans.
        let mut unloadable = found.without_meta.clone();
        for id in &found.without_meta {
            tracing::error!(
                block = %id,
                "skipping a block with every data file but no meta.json, and not marked incomplete: its meta.json was \
                 lost (restore it; the files may be the only copy of their spans), or a skein older than the mark \
                 crashed while writing or deleting the block (its spans are then in the WAL or in other blocks, and the \
                 directory can be deleted). Queries say results may be incomplete while it is there"
            );
            block::read::unreadable_blocks().inc();
        }
        for id in found.complete {
            match load_block(&backend, &id).await {
                Ok(h) => blocks.push(Arc::new(h)),
                Err(e) => {
                    tracing::error!(block = %id, error = %e, "skipping a block whose meta cannot be read; queries say results may be incomplete while it is there");
                    block::read::unreadable_blocks().inc();
                    unloadable.push(id);
                }
            }
        }
        // A merge commits by writing its block's meta and deletes its inputs after that; a
        // crash in between leaves both, and the merged block names what it replaces.
        let replaced: std::collections::HashSet<String> =
            blocks.iter().flat_map(|b| b.meta.replaces.iter().cloned()).collect();
        let (superseded, blocks): (Vec<Arc<BlockHandle>>, Vec<Arc<BlockHandle>>) =
            blocks.into_iter().partition(|b| replaced.contains(&b.meta.id));
        for b in superseded {
            let id = b.meta.id.clone();
            drop(b);
            match backend.delete_block(&id).await {
                Ok(()) => tracing::info!(block = %id, "removed a block that a merge had replaced before a restart"),
                Err(e) => {
                    tracing::error!(block = %id, error = %e, "cannot remove a block that a merge replaced; delete blocks/<id> yourself")
                }
            }
        }
        let covered: std::collections::HashSet<u64> = blocks
            .iter()
            .flat_map(|b| b.meta.wal_segments.iter().copied())
            .collect();

        let mut head = Head::default();
        let mut pending = Pending::default();
        let segments = wal::list_segments(&wal_dir)?;
        if !segments.is_empty() {
            // Replay can take a while (the ports open after it): say so before, not only after.
            let bytes: u64 = segments
                .iter()
                .filter_map(|&seq| std::fs::metadata(wal::segment_path(&wal_dir, seq)).ok())
                .map(|m| m.len())
                .sum();
            tracing::info!(segments = segments.len(), bytes, "replaying WAL");
        }
        let started = Instant::now();
        let mut replayed = 0usize;
        for &seq in &segments {
            if covered.contains(&seq) {
                // The crash came after the block was written but before the segment was deleted.
                let _ = wal::remove_segment(&wal_dir, seq);
                continue;
            }
            let path = wal::segment_path(&wal_dir, seq);
            let r = match wal::replay_segment_at(&path, Some(&seq) == segments.last()) {
                Ok(r) => r,
                Err(e) => {
                    // Not replayed, and so never deleted: a restart once it can be read
                    // replays it.
                    tracing::error!(
                        segment = %path.display(), error = %e,
                        "cannot read a WAL segment; its spans are not served until it can be read and skein restarts (the segment is kept)"
                    );
                    continue;
                }
            };
            if r.truncated_bytes > 0 {
                tracing::warn!(segment = %path.display(), bytes = r.truncated_bytes, "truncated a torn WAL tail");
                metrics.replay_truncated.add(r.truncated_bytes);
            }
            let mut damage: Vec<String> = r
                .damaged
                .iter()
                .map(|(offset, bytes)| format!("{bytes} bytes at offset {offset}"))
                .collect();
            let mut skipped: u64 = r.damaged.iter().map(|d| d.1).sum();
            let now = Instant::now();
            for (i, rec) in r.records.iter().enumerate() {
                match replay_record(rec, &mut head, &mut pending, now) {
                    Ok(n) => replayed += n,
                    Err(e) => {
                        damage.push(format!("record {i} ({} bytes) does not decode: {e}", rec.len()));
                        skipped += rec.len() as u64;
                    }
                }
            }
            if !damage.is_empty() {
                metrics.replay_damaged.add(skipped);
                let copy = wal::keep_damaged_copy(&path)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|e| format!("none, copying failed: {e}"));
                tracing::error!(
                    segment = %path.display(), damage = %damage.join("; "), copy,
                    "skipped damaged WAL records; the intact records around them were replayed"
                );
            }
            head.wal_segments.push(seq);
        }
        if !segments.is_empty() {
            tracing::info!(segments = segments.len(), spans = replayed, elapsed = ?started.elapsed(), "replayed WAL");
        }
        let next_seq = segments.last().map_or(1, |s| s + 1);
        let segment = wal::Segment::create(&wal_dir, next_seq)?;
        head.wal_segments.push(next_seq);

        let (tx, rx) = mpsc::sync_channel(cfg.wal_queue_depth.max(1));
        let inner = Arc::new(Inner {
            cfg,
            backend,
            wal_dir,
            tx,
            state: RwLock::new(State {
                head,
                frozen: Vec::new(),
                blocks,
                retired: Vec::new(),
                pending,
                holding: false,
            }),
            metrics,
            runtime: tokio::runtime::Handle::current(),
            writer: Mutex::new(None),
            compaction: tokio::sync::Mutex::new(()),
            room: tokio::sync::Notify::new(),
            compaction_wanted: Arc::new(tokio::sync::Notify::new()),
            level0_blocks: std::sync::atomic::AtomicUsize::new(0),
            last_cut: Mutex::new(None),
            lock: Mutex::new(Some(lock)),
            closing: std::sync::atomic::AtomicBool::new(false),
            unloadable,
        });
        inner.update_gauges();
        let weak = Arc::downgrade(&inner);
        let handle = std::thread::Builder::new()
            .name("skein-wal".into())
            .spawn(move || writer_loop(weak, rx, segment))
            .map_err(|e| StoreError::Internal(format!("spawning WAL writer: {e}")))?;
        *inner.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(Store { inner })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    /// Queues spans for the WAL. The returned receiver resolves once they are durable and
    /// queryable. Fails at once with `Overloaded` when the WAL queue or block backlog is full.
    ///
    /// `encoded` may carry the spans already as an OTLP `ExportTraceServiceRequest` (the bytes
    /// a client sent, when nothing was rejected or truncated); it becomes the WAL record as is.
    pub fn try_append(
        &self,
        spans: Vec<Span>,
        encoded: Option<bytes::Bytes>,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        self.queue_append(spans, encoded, None, false)
    }

    /// Like `try_append`, but the spans wait (durably, not yet queryable) for a tail-sampling
    /// decision on their trace — unless their trace was already decided, then they follow it.
    pub fn try_append_pending(
        &self,
        spans: Vec<Span>,
        encoded: Option<bytes::Bytes>,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        self.queue_append(spans, encoded, None, true)
    }

    /// `heap_bytes` is `spans_heap_size(&spans)` when the caller has measured it already.
    fn queue_append(
        &self,
        spans: Vec<Span>,
        encoded: Option<bytes::Bytes>,
        heap_bytes: Option<usize>,
        pending: bool,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (done, rx) = oneshot::channel();
        if spans.is_empty() {
            let _ = done.send(Ok(()));
            return Ok(rx);
        }
        {
            let st = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
            if st.frozen.len() >= self.inner.cfg.max_pending_blocks {
                return Err(StoreError::Overloaded("block writer is behind"));
            }
        }
        let payload = encoded.unwrap_or_else(|| {
            let mut buf = Vec::with_capacity(spans.len() * 512);
            skein_model::otlp::wire::export_request(spans.iter(), &mut buf);
            buf.into()
        });
        let heap_bytes = heap_bytes.unwrap_or_else(|| skein_model::spans_heap_size(&spans));
        // Counted before sending: the writer may take the message (and subtract) at once.
        self.inner.metrics.queue_depth.add(1);
        let sent = self.inner.tx.try_send(WalMsg::Append {
            payload,
            spans,
            heap_bytes,
            pending,
            done,
        });
        if sent.is_err() {
            self.inner.metrics.queue_depth.add(-1);
        }
        match sent {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(StoreError::Overloaded("WAL queue is full")),
            Err(TrySendError::Disconnected(_)) => Err(StoreError::ShuttingDown),
        }
    }

    /// Appends and waits until durable.
    pub async fn append(&self, spans: Vec<Span>) -> Result<(), StoreError> {
        let heap_bytes = skein_model::spans_heap_size(&spans);
        self.append_measured(spans, None, heap_bytes).await
    }

    /// Appends spans that wait for a tail-sampling decision, and waits until durable.
    pub async fn append_pending(&self, spans: Vec<Span>, encoded: Option<bytes::Bytes>) -> Result<(), StoreError> {
        let heap_bytes = skein_model::spans_heap_size(&spans);
        self.append_pending_measured(spans, encoded, heap_bytes).await
    }

    /// `append_pending` for spans whose memory the caller measured (`spans_heap_size`).
    pub async fn append_pending_measured(
        &self,
        spans: Vec<Span>,
        encoded: Option<bytes::Bytes>,
        heap_bytes: usize,
    ) -> Result<(), StoreError> {
        self.append_when_room(spans, encoded, heap_bytes, true).await
    }

    /// Like `append`, with the spans' OTLP encoding at hand (see `try_append`) and their memory
    /// measured (`spans_heap_size`).
    pub async fn append_measured(
        &self,
        spans: Vec<Span>,
        encoded: Option<bytes::Bytes>,
        heap_bytes: usize,
    ) -> Result<(), StoreError> {
        self.append_when_room(spans, encoded, heap_bytes, false).await
    }

    /// Waits for room (`wait_for_room`), queues the spans and waits until they are durable.
    async fn append_when_room(
        &self,
        spans: Vec<Span>,
        encoded: Option<bytes::Bytes>,
        heap_bytes: usize,
        pending: bool,
    ) -> Result<(), StoreError> {
        self.wait_for_room().await?;
        self.queue_append(spans, encoded, Some(heap_bytes), pending)?
            .await
            .map_err(|_| StoreError::ShuttingDown)?
    }

    /// Turns tail sampling's holding area on (spans appended as pending are carried across head
    /// cuts until decided) with decision caches of the given sizes — or off, which moves every
    /// span still pending (for example replayed from the WAL) into the head: nothing is lost.
    pub fn hold_for_decisions(&self, caches: Option<(usize, usize)>) {
        let mut st = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
        match caches {
            Some((kept, dropped)) => {
                st.pending.set_cache_sizes(kept, dropped);
                st.holding = true;
            }
            None => {
                st.holding = false;
                let spans = st.pending.drain_all();
                st.head.insert(spans);
            }
        }
        drop(st);
        self.inner.update_gauges();
    }

    /// Hands out traces ready for a decision: no new span for `quiet_for`, or the oldest while
    /// the buffer is over `bounds`. They stay durable until `decide` is applied.
    pub fn take_due(&self, quiet_for: Duration, bounds: PendingBounds, max: usize) -> Vec<DueTrace> {
        let mut st = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
        st.pending.take_due(Instant::now(), quiet_for, bounds, max)
    }

    /// Records tail-sampling decisions in the WAL and applies them: kept traces enter the head,
    /// dropped ones are discarded. Waits for room in the WAL queue (never refused for load:
    /// a decision only ever shrinks memory), blocking the calling thread — call it from a
    /// thread of its own, not from the async runtime. Resolves once applied.
    pub fn decide(
        &self,
        decisions: Vec<(TraceId, bool)>,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (done, rx) = oneshot::channel();
        if decisions.is_empty() {
            let _ = done.send(Ok(()));
            return Ok(rx);
        }
        self.inner.metrics.queue_depth.add(1);
        if self.inner.tx.send(WalMsg::Decide { decisions, done }).is_err() {
            self.inner.metrics.queue_depth.add(-1);
            return Err(StoreError::ShuttingDown);
        }
        Ok(rx)
    }

    pub fn pending_stats(&self) -> PendingStats {
        self.inner
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .stats()
    }

    /// Returns once the block backlog has room and compaction is not behind, waiting up to
    /// `admission_wait` for the block being written or the merge in progress; refuses with
    /// `Overloaded` when nothing in progress would make room or the wait runs out. The
    /// caller's request stays in its memory reservation meanwhile.
    async fn wait_for_room(&self) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + self.inner.cfg.admission_wait;
        loop {
            // Registered before the checks, so a block or merge finishing in between still
            // wakes us.
            let room = self.inner.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let why = {
                let st = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
                if st.frozen.len() >= self.inner.cfg.max_pending_blocks {
                    if st.frozen.is_empty() {
                        return Err(StoreError::Overloaded("block writer is behind"));
                    }
                    "block writer is behind"
                } else if self.compaction_is_behind() {
                    "compaction is behind"
                } else {
                    return Ok(());
                }
            };
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(StoreError::Overloaded(why));
            }
        }
    }

    /// Level-0 blocks are at `max_level0_blocks` while a merge runs. With no merge running
    /// (compaction not started, or nothing it can merge) ingest is not held back: waiting
    /// would be for nothing.
    fn compaction_is_behind(&self) -> bool {
        let limit = self.inner.cfg.max_level0_blocks;
        limit > 0
            && self.inner.level0_blocks.load(std::sync::atomic::Ordering::Relaxed) >= limit
            && self.compaction_lock().try_lock().is_err()
    }

    /// How many spans of `trace_id` the head holds (for the per-trace span limit).
    pub fn head_spans_in_trace(&self, trace_id: &TraceId) -> usize {
        let st = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
        st.head.spans_in_trace(trace_id)
            + st.frozen.iter().map(|f| f.head.spans_in_trace(trace_id)).sum::<usize>()
            + st.pending.spans_in_trace(trace_id)
    }

    pub fn snapshot(&self) -> Snapshot {
        let st = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
        let mut heads = vec![HeadView::of(&st.head)];
        heads.extend(st.frozen.iter().map(|f| HeadView::of(&f.head)));
        Snapshot {
            heads,
            blocks: st.readable_blocks().cloned().collect(),
        }
    }

    /// Blocks found at start whose meta could not be read (skipped; they may hold anything).
    pub fn unloadable_blocks(&self) -> &[String] {
        &self.inner.unloadable
    }

    /// The blocks a read found damaged, which snapshots leave out, and those whose last read
    /// failed for a reason that may pass (usually none).
    pub fn unreadable_blocks(&self) -> Vec<Arc<BlockHandle>> {
        let st = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
        st.blocks
            .iter()
            .filter(|b| b.is_unreadable() || b.is_failing())
            .cloned()
            .collect()
    }

    /// Every block, those found unreadable too (which snapshots leave out).
    pub(crate) fn all_blocks(&self) -> Vec<Arc<BlockHandle>> {
        self.inner
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .blocks
            .clone()
    }

    /// Spans of one trace held in memory, plus the blocks that may hold more.
    pub fn trace_sources(&self, id: &TraceId) -> (Vec<Span>, Vec<Arc<BlockHandle>>) {
        let st = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
        let mut spans = st.head.trace(id);
        for f in &st.frozen {
            spans.extend(f.head.trace(id));
        }
        let blocks = st.readable_blocks().filter(|b| b.may_contain(id)).cloned().collect();
        (spans, blocks)
    }

    pub fn stats(&self) -> StoreStats {
        let st = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
        StoreStats {
            head_spans: st.head.spans + st.frozen.iter().map(|f| f.head.spans).sum::<usize>(),
            pending_blocks: st.frozen.len(),
            blocks: st.blocks.len(),
            level0_blocks: st.blocks.iter().filter(|b| b.meta.level == 0).count(),
            block_spans: st.blocks.iter().map(|b| b.meta.span_count).sum(),
            block_bytes: st.blocks.iter().map(|b| b.meta.total_bytes()).sum(),
            retired_bytes: st.retired.iter().map(|b| b.meta.total_bytes()).sum(),
        }
    }

    /// Cuts the head into a block now and waits until every pending block is written.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(WalMsg::Cut(tx))
            .map_err(|_| StoreError::ShuttingDown)?;
        let _ = rx.await;
        self.wait_pending_blocks(Duration::from_secs(120)).await
    }

    async fn wait_pending_blocks(&self, timeout: Duration) -> Result<(), StoreError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .inner
                .state
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .frozen
                .is_empty()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StoreError::Internal(
                    "timed out waiting for blocks to be written".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops accepting writes, cuts the head into a block and waits for it (graceful shutdown).
    /// Everything acknowledged is already durable in the WAL; this only shortens the next start.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        self.inner.closing.store(true, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(WalMsg::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        self.wait_pending_blocks(Duration::from_secs(60)).await?;
        // A merge or expiry in progress either stops at its next check of `closing` (removing
        // its unfinished output) or commits: both before the directory is let go. Cancelling it
        // instead (aborting its task) could leave a merged block without its meta.
        let _maintenance = self.compaction_lock().lock().await;
        // What a query still holds stays: the next start deletes merged inputs by the merged
        // block's `replaces`, and retention expires the rest again.
        self.delete_retired().await;
        let handle = self.inner.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        // Written out and closed: the directory is free for the next store.
        self.inner.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(())
    }

    /// True once `shutdown` has begun.
    pub(crate) fn closing(&self) -> bool {
        self.inner.closing.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes spans straight into one new block, past the WAL and the head: for bulk loads
    /// (`skein generate`). The block is durable and queryable when this returns; the spans are
    /// not deduplicated against blocks already stored. Returns the block's bytes.
    pub async fn import(&self, spans: Vec<Span>) -> Result<u64, StoreError> {
        if self.closing() {
            return Err(StoreError::ShuttingDown);
        }
        let retention = self.config().retention;
        let built = tokio::task::spawn_blocking(move || {
            let refs: Vec<&Span> = spans.iter().collect();
            build_block(&refs, block::new_block_id(), 1, retention)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("block build panicked: {e}")))??;
        let handle = upload_block(self.backend(), built).await?;
        let bytes = handle.meta.total_bytes();
        self.replace_blocks(vec![Arc::new(handle)], &[]);
        Ok(bytes)
    }

    /// Runs compaction and retention every `compaction_interval`, and whenever a merge's worth
    /// of level-0 blocks is waiting, until the store is dropped.
    pub fn start_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let every = self.inner.cfg.compaction_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            // Ticks missed during a long merge are not made up in a burst.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                // Only a weak reference is held while waiting, so dropping the store ends this.
                let Some(wanted) = weak.upgrade().map(|inner| inner.compaction_wanted.clone()) else {
                    return;
                };
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = wanted.notified() => {}
                }
                let Some(inner) = weak.upgrade() else { return };
                let store = Store { inner };
                // Blocks queries held at the last merge or expiry may be free now.
                store.delete_retired().await;
                if let Err(e) = store.enforce_retention(now_unix_nano()).await {
                    tracing::error!(error = %e, "retention failed");
                }
                // Keep merging while there is work: a backlog of small blocks costs query time
                // and disk, and one merge per interval cannot keep up with a busy ingest.
                loop {
                    // While heads keep being cut, merge only blocks of like size (each span is
                    // rewritten a few times, not once per merge); once no head was cut for an
                    // interval, tidy up whatever small blocks are left. Asked before every
                    // merge, by the time of the last cut: counting cuts between two wakes took
                    // a wake right after another for a pause, and merged oldest-first while
                    // ingest ran (re-merging each new level-0 block into the same output).
                    let merged = if store.head_cut_within(every) {
                        store.compact_tiered().await
                    } else {
                        store.compact_once().await
                    };
                    match merged {
                        Ok(0) => break,
                        Ok(_) => tokio::task::yield_now().await,
                        // Shutdown cancels the store's I/O under a merge in progress; its inputs
                        // stay, and the next start removes the unfinished output.
                        Err(e) if store.closing() => {
                            tracing::info!(error = %e, "compaction stopped by shutdown");
                            break;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "compaction failed");
                            break;
                        }
                    }
                }
            }
        })
    }

    /// Starts scrubbing (`store.scrub_interval`): every block with checksums is read whole at
    /// up to `store.scrub_rate` and checked. A damaged block is reported as a query would
    /// find it (ERROR, `skein_unreadable_blocks_total`) and left out of answers and merges
    /// from then on. `None` when scrubbing is off.
    pub fn start_scrub(&self) -> Option<tokio::task::JoinHandle<()>> {
        let (every, rate) = (self.inner.cfg.scrub_interval, self.inner.cfg.scrub_rate.max(1));
        if every.is_zero() {
            return None;
        }
        let weak = Arc::downgrade(&self.inner);
        Some(tokio::spawn(async move {
            let mut next = tokio::time::Instant::now() + every.min(Duration::from_secs(300));
            loop {
                tokio::time::sleep_until(next).await;
                next += every;
                let Some(inner) = weak.upgrade() else { return };
                // Not held for the whole pass: a block merged away or expired meanwhile must
                // not stay on disk until the pass ends.
                let blocks: Vec<std::sync::Weak<BlockHandle>> = inner
                    .state
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .readable_blocks()
                    .map(Arc::downgrade)
                    .collect();
                drop(inner);
                let started = tokio::time::Instant::now();
                let (mut read, mut verified, mut damaged) = (0u64, 0usize, 0usize);
                for block in blocks {
                    let Some(block) = block.upgrade() else { continue };
                    // Merged away or expired since: not worth reading.
                    let Some(inner) = weak.upgrade() else { return };
                    let current = inner
                        .state
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .blocks
                        .iter()
                        .any(|b| Arc::ptr_eq(b, &block));
                    drop(inner);
                    if !current {
                        continue;
                    }
                    let pace = |bytes: u64| {
                        read += bytes;
                        scrubbed_bytes().add(bytes);
                        // Never ahead of `rate` since the pass began.
                        tokio::time::sleep_until(started + Duration::from_secs_f64(read as f64 / rate as f64))
                    };
                    match block.settle(block.verify(pace).await) {
                        Ok(Some(_)) => verified += 1,
                        Ok(None) if block.is_unreadable() => damaged += 1,
                        Ok(None) => {}
                        Err(e) => tracing::error!(block = %block.meta.id, error = %e, "scrubbing a block failed"),
                    }
                }
                tracing::info!(
                    blocks = verified,
                    damaged,
                    bytes = read,
                    elapsed = ?started.elapsed(),
                    "scrubbed the blocks: read whole and checked against their checksums"
                );
            }
        }))
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    /// Whether a head was cut into a block in the last `period`.
    pub(crate) fn head_cut_within(&self, period: Duration) -> bool {
        let last = *self.inner.last_cut.lock().unwrap_or_else(|e| e.into_inner());
        last.is_some_and(|t| t.elapsed() < period)
    }

    /// Swaps blocks in the live list: adds `added`, removes `removed` ids, in one step.
    /// The removed blocks are retired, not deleted: `delete_retired` deletes them once no
    /// snapshot holds them.
    pub(crate) fn replace_blocks(&self, added: Vec<Arc<BlockHandle>>, removed: &[String]) {
        let mut st = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut st.blocks)
            .into_iter()
            .partition(|b| removed.contains(&b.meta.id));
        st.blocks = kept;
        st.retired.extend(gone);
        st.blocks.extend(added);
        st.blocks.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
        drop(st);
        self.inner.update_gauges();
    }

    /// Deletes the files of retired blocks that nothing but the retired list holds. A query
    /// holds the blocks of its snapshot until it ends, so a merge or retention never deletes a
    /// file under a reader; new snapshots cannot reach retired blocks. A failed delete is
    /// logged and tried again next time.
    pub(crate) async fn delete_retired(&self) {
        let unused: Vec<Arc<BlockHandle>> = {
            let mut st = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
            let (unused, held) = std::mem::take(&mut st.retired)
                .into_iter()
                .partition(|b| Arc::strong_count(b) == 1);
            st.retired = held;
            unused
        };
        if unused.is_empty() {
            return;
        }
        for b in unused {
            if let Err(e) = self.backend().delete_block(&b.meta.id).await {
                tracing::warn!(block = %b.meta.id, error = %e, "deleting a retired block failed; will retry");
                self.inner
                    .state
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .retired
                    .push(b);
            }
        }
        self.inner.update_gauges();
    }

    pub(crate) fn compaction_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.compaction
    }
}

impl Inner {
    fn update_gauges(&self) {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        self.metrics.head_spans.set(st.head.spans as i64);
        self.metrics.head_bytes.set(st.head.bytes as i64);
        self.metrics.head_traces.set(st.head.trace_count() as i64);
        self.metrics.blocks.set(st.blocks.len() as i64);
        let level0 = st.blocks.iter().filter(|b| b.meta.level == 0).count();
        self.level0_blocks.store(level0, std::sync::atomic::Ordering::Relaxed);
        self.metrics.level0_blocks.set(level0 as i64);
        self.metrics
            .block_bytes
            .set(st.blocks.iter().map(|b| b.meta.total_bytes()).sum::<u64>() as i64);
        self.metrics
            .block_spans
            .set(st.blocks.iter().map(|b| b.meta.span_count).sum::<u64>() as i64);
        self.metrics
            .retired_bytes
            .set(st.retired.iter().map(|b| b.meta.total_bytes()).sum::<u64>() as i64);
        self.metrics.pending_blocks.set(st.frozen.len() as i64);
        let p = st.pending.stats();
        self.metrics.pending_traces.set(p.traces as i64);
        self.metrics.pending_spans.set(p.spans as i64);
        self.metrics.pending_bytes.set(p.bytes as i64);
    }

    fn head_due(&self, segment: &wal::Segment) -> bool {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        let h = &st.head;
        if h.is_empty() {
            // Tail sampling may drop everything for a while: the WAL still has to rotate, or
            // it would grow without bound with spans nobody keeps.
            return st.holding && segment.len > segment.base_len && h.created.elapsed() >= self.cfg.head_max_age;
        }
        h.spans >= self.cfg.head_max_spans
            || h.bytes as u64 >= self.cfg.head_max_bytes
            || h.created.elapsed() >= self.cfg.head_max_age
    }
}

pub(crate) async fn load_block(backend: &Backend, id: &str) -> Result<BlockHandle, StoreError> {
    let meta_bytes = backend.get(&backend.block_path(id, block::META_FILE)).await?;
    let meta: BlockMeta =
        serde_json::from_slice(&meta_bytes).map_err(|e| StoreError::corrupt(format!("meta of {id}: {e}")))?;
    if !(block::OLDEST_READABLE_FORMAT..=block::FORMAT_VERSION).contains(&meta.format) {
        return Err(StoreError::corrupt(format!(
            "block {id} has format {} (this build reads {} to {})",
            meta.format,
            block::OLDEST_READABLE_FORMAT,
            block::FORMAT_VERSION
        )));
    }
    if let Some(d) = meta.dedicated.iter().find(|d| {
        d.decimals
            .is_some_and(|p| p > block::schema::MAX_DECIMALS || d.ty != block::schema::HotType::Double)
    }) {
        return Err(StoreError::corrupt(format!(
            "block {id}: its column for {} ({:?}) has {:?} decimal places (at most {}, and only for doubles)",
            d.key,
            d.ty,
            d.decimals,
            block::schema::MAX_DECIMALS
        )));
    }
    // A bloom that is missing or damaged costs lookups their shortcut, not the block.
    let bloom = side_file(backend, id, block::BLOOM_FILE, meta.bloom_crc32c)
        .await
        .and_then(|bytes| block::bloom::Bloom::from_bytes(&bytes).ok_or_else(|| format!("{} bytes", bytes.len())))
        .unwrap_or_else(|problem| {
            tracing::warn!(block = %id, problem, "the block's bloom filter is damaged; trace lookups read the block's trace-id index instead");
            block::bloom::Bloom::admit_all()
        });
    // Damaged checksums cost reads their check, not the block: the Parquet files may be fine.
    let sums = match meta.sums_crc32c {
        None => None,
        Some(crc) => side_file(backend, id, block::SUMS_FILE, Some(crc))
            .await
            .and_then(|bytes| {
                block::sums::BlockSums::from_bytes(&bytes)
                    .filter(|s| s.data.len == meta.data_bytes && s.summaries.len == meta.summary_bytes)
                    .ok_or_else(|| format!("{} bytes that do not describe the block's files", bytes.len()))
            })
            .map(Arc::new)
            .map_err(|problem| {
                tracing::error!(block = %id, problem, "the block's checksums are damaged; its reads are not checked");
            })
            .ok(),
    };
    Ok(BlockHandle::new(meta, bloom, sums, backend.clone()))
}

/// One of a block's small files beside its Parquet files (bloom, checksums), checked against
/// the CRC its meta gives when it gives one; what is wrong with it, in words, otherwise.
async fn side_file(backend: &Backend, id: &str, file: &str, crc: Option<u32>) -> Result<bytes::Bytes, String> {
    let bytes = backend
        .get(&backend.block_path(id, file))
        .await
        .map_err(|e| e.to_string())?;
    if crc.is_some_and(|crc| crc != crc32c::crc32c(&bytes)) {
        return Err("its CRC does not match the meta's".to_string());
    }
    Ok(bytes)
}

/// How long `Store::open` waits for the data directory's lock: a store of this process that is
/// still shutting down lets go within moments; another process holding it is an error.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Takes `data_dir/LOCK`, an advisory lock the OS drops when the process exits (crash included),
/// so two processes never write one WAL and block set. The file names the holder's pid.
async fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, StoreError> {
    use std::io::{Read, Seek, Write};
    let path = data_dir.join("LOCK");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::io("opening lock file", &path, e))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => String::new(),
                    pid => format!(" (pid {pid})"),
                };
                return Err(StoreError::InUse(data_dir.to_path_buf(), holder));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(StoreError::io("locking", &path, e)),
        }
    }
    let pid = std::process::id().to_string();
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(pid.as_bytes()))
        .map_err(|e| StoreError::io("writing lock file", &path, e))?;
    Ok(file)
}

fn decode_spans(otlp: &[u8]) -> Result<Vec<Span>, StoreError> {
    let decoded =
        skein_model::otlp::wire_decode::decode_request(otlp).map_err(|e| StoreError::Decode(e.to_string()))?;
    Ok(decoded.batch.spans)
}

/// Replays one WAL record into the head and the pending buffer; returns the spans it held.
fn replay_record(rec: &[u8], head: &mut Head, pending: &mut Pending, now: Instant) -> Result<usize, StoreError> {
    if rec.first() != Some(&pending::RECORD_MARK) {
        let spans = decode_spans(rec)?;
        let n = spans.len();
        head.insert(spans);
        return Ok(n);
    }
    let body = rec.get(2..).unwrap_or_default();
    match rec.get(1) {
        Some(&pending::PENDING) => {
            let spans = decode_spans(body)?;
            let n = spans.len();
            head.insert(pending.admit(spans, now));
            Ok(n)
        }
        Some(&pending::DECISIONS) => {
            head.insert(pending.apply(&pending::parse_decisions(body)?));
            Ok(0)
        }
        Some(&pending::SNAPSHOT) => {
            let (decisions, otlp) = pending::parse_snapshot(body)?;
            let spans = decode_spans(otlp)?;
            pending.restore_snapshot(&decisions, spans, now);
            Ok(0)
        }
        other => Err(StoreError::corrupt(format!("unknown WAL record kind {other:?}"))),
    }
}

/// Builds a block from spans in memory (sorting them by trace id, start).
pub fn build_block(
    spans: &[&Span],
    id: String,
    level: u32,
    retention: Duration,
) -> Result<block::BuiltBlock, StoreError> {
    // Sort copies of the keys, read in the order the spans lie in memory: a comparison that
    // followed two span pointers missed the cache on most of them.
    let mut keyed: Vec<(TraceId, u64, SpanId, &Span)> = spans
        .iter()
        .map(|s| (s.trace_id, s.start_unix_nano, s.span_id, *s))
        .collect();
    keyed.sort_unstable_by_key(|k| (k.0, k.1, k.2));
    // The same span can arrive twice (client retries); keep one.
    keyed.dedup_by(|a, b| (a.0, a.1, a.2) == (b.0, b.1, b.2));
    let sorted: Vec<&Span> = keyed.into_iter().map(|k| k.3).collect();
    let layout = block::write::choose_layout(&sorted);
    let mut builder = BlockBuilder::new(id, level, layout)?;
    builder.keep_ahead_for(retention);
    let mut keys = block::write::BlockKeys::default();
    for chunk in sorted.chunks(block::BUILD_BATCH_ROWS) {
        let batch = block::write::spans_to_batch(chunk, builder.layout(), &mut keys)?;
        builder.push(&batch)?;
    }
    let mut built = builder.finish()?;
    keys.store_in(&mut built.meta);
    Ok(built)
}

/// Uploads a built block: data, summaries and bloom first, meta last (the commit point), the
/// block marked incomplete until then (`Backend::mark_incomplete`).
pub(crate) async fn upload_block(backend: &Backend, built: block::BuiltBlock) -> Result<BlockHandle, StoreError> {
    let id = built.meta.id.clone();
    let mut meta = built.meta;
    let data = match built.data {
        block::DataSink::Memory(data) => {
            backend.mark_incomplete(&id).await?;
            let sums = block::sums::FileSums::of(&data);
            backend
                .put_durable(&backend.block_path(&id, block::DATA_FILE), data)
                .await?;
            sums
        }
        // Its block was marked before the merge began streaming it.
        block::DataSink::Streaming(put) => put.finish(backend).await?,
    };
    let sums = block::sums::BlockSums {
        data: Arc::new(data),
        summaries: Arc::new(block::sums::FileSums::of(&built.summaries)),
    };
    backend
        .put_durable(&backend.block_path(&id, block::SUMMARY_FILE), built.summaries)
        .await?;
    backend
        .put_durable(&backend.block_path(&id, block::BLOOM_FILE), built.bloom.clone())
        .await?;
    let sums_bytes = sums.to_bytes();
    meta.sums_crc32c = Some(crc32c::crc32c(&sums_bytes));
    backend
        .put_durable(&backend.block_path(&id, block::SUMS_FILE), sums_bytes)
        .await?;
    let meta_json = serde_json::to_vec_pretty(&meta).map_err(|e| StoreError::Internal(e.to_string()))?;
    backend
        .put_durable(&backend.block_path(&id, block::META_FILE), meta_json)
        .await?;
    backend.clear_incomplete(&id).await;
    let bloom = block::bloom::Bloom::from_bytes(&built.bloom).ok_or_else(|| StoreError::corrupt("bloom"))?;
    Ok(BlockHandle::new(meta, bloom, Some(Arc::new(sums)), backend.clone()))
}

// ---- the WAL writer thread ---------------------------------------------------------------

const MAX_GROUP_BYTES: usize = 32 << 20;

/// What marks an OTLP record as waiting for a sampling decision.
const PENDING_PREFIX: [u8; 2] = [pending::RECORD_MARK, pending::PENDING];

/// A WAL record of one queued message.
enum Record {
    /// An OTLP request, marked as waiting for a decision when `pending`.
    Otlp { payload: bytes::Bytes, pending: bool },
    /// A record already in its final form (decisions).
    Raw(Vec<u8>),
}

/// What a queued message does once its record is durable.
enum Work {
    /// Spans for the head, and their `heap_size`.
    Head(Vec<Span>, usize),
    Pending(Vec<Span>),
    Decide(Vec<(TraceId, bool)>),
}

fn writer_loop(inner: std::sync::Weak<Inner>, rx: Receiver<WalMsg>, mut segment: wal::Segment) {
    let mut shutdown: Option<oneshot::Sender<()>> = None;
    let mut failing = FailureLog::default();
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let Some(inner) = inner.upgrade() else { return };
        let mut appends = Vec::new();
        let mut force_cut = Vec::new();
        let mut bytes = 0usize;
        let mut next = first;
        while let Some(msg) = next.take() {
            match msg {
                WalMsg::Append {
                    payload,
                    spans,
                    heap_bytes,
                    pending,
                    done,
                } => {
                    bytes += payload.len();
                    let work = if pending {
                        Work::Pending(spans)
                    } else {
                        Work::Head(spans, heap_bytes)
                    };
                    appends.push((Record::Otlp { payload, pending }, work, done));
                }
                WalMsg::Decide { decisions, done } => {
                    let payload = pending::decisions_record(&decisions);
                    bytes += payload.len();
                    appends.push((Record::Raw(payload), Work::Decide(decisions), done));
                }
                WalMsg::Cut(tx) => force_cut.push(tx),
                WalMsg::Shutdown(tx) => shutdown = Some(tx),
            }
            if bytes < MAX_GROUP_BYTES && shutdown.is_none() {
                next = rx.try_recv().ok();
            }
        }
        inner.metrics.queue_depth.add(-(appends.len() as i64));

        if !appends.is_empty() {
            // Each record's frame, then its payload as the client sent it: written with
            // vectored writes, not copied into one buffer first (that copy was 1.5 % of the
            // server's CPU at full ingest).
            let parts: Vec<[&[u8]; 2]> = appends
                .iter()
                .map(|(record, _, _)| match record {
                    Record::Otlp {
                        payload,
                        pending: false,
                    } => [&[][..], &payload[..]],
                    Record::Otlp { payload, pending: true } => [&PENDING_PREFIX[..], &payload[..]],
                    Record::Raw(payload) => [&[][..], &payload[..]],
                })
                .collect();
            let headers: Vec<[u8; wal::HEADER_LEN]> = parts.iter().map(|p| wal::record_header(p)).collect();
            let mut slices: Vec<std::io::IoSlice<'_>> = Vec::with_capacity(parts.len() * 3);
            for (header, parts) in headers.iter().zip(&parts) {
                slices.push(std::io::IoSlice::new(header));
                slices.extend(parts.iter().filter(|p| !p.is_empty()).map(|p| std::io::IoSlice::new(p)));
            }
            let t = Instant::now();
            let res = segment.append_durable_vectored(&mut slices);
            inner.metrics.fsync.observe(t.elapsed().as_secs_f64());
            match res {
                Ok(written) => {
                    failing.recovered();
                    inner.metrics.wal_bytes.add(written);
                    inner.metrics.wal_records.add(appends.len() as u64);
                    let mut acks = Vec::with_capacity(appends.len());
                    let now = Instant::now();
                    {
                        let mut st = inner.state.write().unwrap_or_else(|e| e.into_inner());
                        let st = &mut *st;
                        for (_, work, done) in appends {
                            match work {
                                Work::Head(spans, heap_bytes) => st.head.insert_measured(spans, heap_bytes),
                                Work::Pending(spans) => st.head.insert(st.pending.admit(spans, now)),
                                Work::Decide(decisions) => st.head.insert(st.pending.apply(&decisions)),
                            }
                            acks.push(done);
                        }
                        let (kept, dropped) = std::mem::take(&mut st.pending.late);
                        inner.metrics.late_kept.add(kept);
                        inner.metrics.late_dropped.add(dropped);
                    }
                    for done in acks {
                        let _ = done.send(Ok(()));
                    }
                }
                Err(e) => {
                    inner.metrics.wal_failures.inc();
                    failing.failed(&e, appends.len());
                    let mut st = inner.state.write().unwrap_or_else(|e| e.into_inner());
                    for (_, work, done) in appends {
                        if let Work::Decide(decisions) = work {
                            // Not recorded, so not applied: the traces wait to be decided again.
                            st.pending.untake(&decisions);
                        }
                        let _ = done.send(Err(StoreError::WalUnwritable(e.to_string())));
                    }
                }
            }
        }

        let cut = !force_cut.is_empty() || shutdown.is_some() || inner.head_due(&segment);
        if cut {
            match cut_head(&inner, &mut segment) {
                Ok(()) => {}
                Err(e) => tracing::error!(error = %e, "cutting the head failed"),
            }
        }
        inner.update_gauges();
        for tx in force_cut {
            let _ = tx.send(());
        }
        if let Some(tx) = shutdown.take() {
            let _ = tx.send(());
            return;
        }
    }
}

/// Logs WAL failures without flooding: a full disk fails every group commit, hundreds a
/// second. The first failure is logged at once, then one line per `EVERY` with the requests
/// refused meanwhile, and one when writes work again.
#[derive(Default)]
struct FailureLog {
    /// Requests refused since the first failure of this run of failures.
    refused: u64,
    /// Requests refused since the last line logged.
    unlogged: u64,
    last_logged: Option<Instant>,
}

impl FailureLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn failed(&mut self, e: &StoreError, requests: usize) {
        self.refused += requests as u64;
        self.unlogged += requests as u64;
        if self.last_logged.is_none_or(|t| t.elapsed() >= Self::EVERY) {
            tracing::error!(
                error = %e,
                refused = self.unlogged,
                "WAL append failed; requests are refused (clients are told to retry), nothing of them is acknowledged"
            );
            self.unlogged = 0;
            self.last_logged = Some(Instant::now());
        }
    }

    fn recovered(&mut self) {
        if self.last_logged.is_some() {
            tracing::warn!(refused = self.refused, "WAL appends work again");
            *self = FailureLog::default();
        }
    }
}

/// Rotates the WAL and freezes the head; a task turns the frozen head into a block.
fn cut_head(inner: &Arc<Inner>, segment: &mut wal::Segment) -> Result<(), StoreError> {
    {
        let st = inner.state.read().unwrap_or_else(|e| e.into_inner());
        if st.head.is_empty() && !(st.holding && segment.len > segment.base_len) {
            return Ok(());
        }
    }
    let mut new_segment = wal::Segment::create(&inner.wal_dir, segment.seq + 1)?;
    {
        // Spans still waiting for a decision live only in the segments this cut retires: copy
        // them (and the decision cache) into the new segment before anything can delete those.
        let st = inner.state.read().unwrap_or_else(|e| e.into_inner());
        if st.holding {
            let record = st.pending.snapshot_record();
            drop(st);
            let mut framed = Vec::with_capacity(record.len() + wal::HEADER_LEN);
            wal::encode_record(&record, &mut framed);
            if let Err(e) = new_segment.append_durable(&framed) {
                // Leave no half-written snapshot behind for the next attempt to append after.
                let _ = wal::remove_segment(&inner.wal_dir, new_segment.seq);
                return Err(e);
            }
            new_segment.base_len = new_segment.len;
            inner.metrics.wal_bytes.add(framed.len() as u64);
            inner.metrics.wal_records.inc();
        }
    }
    let old = std::mem::replace(segment, new_segment);
    let frozen = {
        let mut st = inner.state.write().unwrap_or_else(|e| e.into_inner());
        let mut fresh = Head::default();
        fresh.wal_segments.push(segment.seq);
        let head = std::mem::replace(&mut st.head, fresh);
        if head.is_empty() {
            Err(head.wal_segments)
        } else {
            let f = Arc::new(Frozen { head });
            st.frozen.push(f.clone());
            Ok(f)
        }
    };
    drop(old);
    let frozen = match frozen {
        Ok(f) => f,
        Err(retired) => {
            // Nothing to write as a block: the spans the old segments held were dropped by tail
            // sampling or are still pending, and so in the new segment's snapshot.
            for seq in retired {
                if let Err(e) = wal::remove_segment(&inner.wal_dir, seq) {
                    tracing::warn!(segment = seq, error = %e, "could not delete a retired WAL segment");
                }
            }
            return Ok(());
        }
    };
    inner.metrics.cuts.inc();
    *inner.last_cut.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    let inner = inner.clone();
    let rt = inner.runtime.clone();
    rt.spawn(async move {
        let mut delay = Duration::from_millis(500);
        loop {
            match write_frozen(&inner, &frozen).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?delay, "writing block failed; the head stays in memory and in the WAL");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    });
    Ok(())
}

async fn write_frozen(inner: &Arc<Inner>, frozen: &Arc<Frozen>) -> Result<(), StoreError> {
    let f = frozen.clone();
    let retention = inner.cfg.retention;
    let built = tokio::task::spawn_blocking(move || {
        let spans: Vec<&Span> = f.head.all_spans().collect();
        let mut built = build_block(&spans, block::new_block_id(), 0, retention)?;
        built.meta.wal_segments = f.head.wal_segments.clone();
        Ok::<_, StoreError>(built)
    })
    .await
    .map_err(|e| StoreError::Internal(e.to_string()))??;
    let handle = Arc::new(upload_block(&inner.backend, built).await?);
    {
        let mut st = inner.state.write().unwrap_or_else(|e| e.into_inner());
        st.blocks.push(handle);
        st.frozen.retain(|x| !Arc::ptr_eq(x, frozen));
    }
    inner.room.notify_waiters();
    inner.update_gauges();
    if inner.level0_blocks.load(std::sync::atomic::Ordering::Relaxed) >= compact::MAX_INPUTS {
        inner.compaction_wanted.notify_one();
    }
    for seq in &frozen.head.wal_segments {
        if let Err(e) = wal::remove_segment(&inner.wal_dir, *seq) {
            tracing::warn!(segment = seq, error = %e, "could not delete a WAL segment already in a block");
        }
    }
    Ok(())
}
