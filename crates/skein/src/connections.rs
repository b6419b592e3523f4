//! Connection slots: client connections may take only so many file descriptors, so the store
//! always has some left for its WAL segments, block files, merges and queries. Without a cap a
//! flood of connections (or a fleet of SDKs each holding a gRPC channel) takes every descriptor
//! up to the open-files limit, and the next head cut fails with "Too many open files".
//!
//! Every port accepts through [`crate::http_server::accept`], which gets a slot for each
//! connection it accepts. With every slot taken, each port's accept loop waits (holding at most
//! the one connection it accepted last) and new clients wait in the kernel's backlog: they are
//! served once a connection closes, as under any other backpressure. The query ports have
//! their own slots ([`Pool`]), so a fleet of senders cannot shut out liveness probes,
//! `/metrics` or the UI.
//!
//! The slot is taken after the accept, not before: a slot taken first would sit idle on a port
//! no client uses while another port's clients wait (with fewer slots than ports, a port was
//! never served at all). The price is one waiting connection per port, counted in the cap.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use skein_model::metrics::{self, Gauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept for the store at the least: WAL segments, a block being written, a merge of
/// up to 16 blocks, `query.max_concurrent` queries reading several blocks each, and the files
/// of sampling and scrubbing.
const STORE_RESERVE_MIN: u64 = 128;
/// ...and at most this many, however high the limit (a share of it below that).
const STORE_RESERVE_MAX: u64 = 1024;
/// Fewer slots than this are not worth serving with; the start warns instead.
const FEWEST_SLOTS: u64 = 16;

/// Which slots a port's connections take. The query ports have slots of their own, so that
/// liveness probes, `/metrics` and the UI still answer when senders hold all of theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// The ingest and sampling ports.
    Senders,
    /// The query ports (HTTP and gRPC).
    Queries,
}

/// The query ports' share of the slots: a quarter, at most this many.
const QUERY_SLOTS_MAX: usize = 256;

struct Slots {
    free: Arc<Semaphore>,
    total: usize,
    open: Gauge,
    pool: &'static str,
    /// When the last "every slot is taken" line was logged.
    last_warning: std::sync::Mutex<Option<Instant>>,
}

impl Slots {
    fn new(total: usize, pool: &'static str) -> Slots {
        metrics::gauge(
            "skein_connections_max",
            "Client connections served at once, by pool (query ports, senders' ports); more wait in the ports' backlog",
            &[("pool", pool)],
        )
        .set(total as i64);
        Slots {
            free: Arc::new(Semaphore::new(total)),
            total,
            open: metrics::gauge(
                "skein_connections_open",
                "Client connections open, by pool",
                &[("pool", pool)],
            ),
            pool,
            last_warning: std::sync::Mutex::new(None),
        }
    }
}

/// The senders' slots, then the query ports'.
static SLOTS: OnceLock<(Slots, Slots)> = OnceLock::new();

/// Caps client connections at `max` for the rest of the process (at its first call only): a
/// quarter of them, at most 256, for the query ports, the rest for the others. Without a call,
/// connections are not capped (in-process tests).
pub fn limit(max: usize) {
    let max = max.clamp(2, Semaphore::MAX_PERMITS);
    let queries = (max / 4).clamp(1, QUERY_SLOTS_MAX);
    let senders = max - queries;
    if SLOTS
        .set((Slots::new(senders, "senders"), Slots::new(queries, "queries")))
        .is_ok()
    {
        tracing::info!(
            max_connections = max,
            for_senders = senders,
            for_queries = queries,
            "client connections served at once (limits.max_connections)"
        );
    }
}

/// The connection cap for `limits.max_connections = 0`: the open-files limit, less what the
/// process holds already (its listeners, the runtime), less a reserve for the store (its WAL
/// included), less one per port (each accept loop may hold a connection while it waits for a
/// slot). None without an open-files limit.
pub fn automatic(ports: usize) -> Option<usize> {
    let slots = room(ports)?;
    if slots < FEWEST_SLOTS {
        tracing::warn!(
            "the open-files limit leaves room for only {slots} connections beside the store's \
             reserve; serving {FEWEST_SLOTS} — raise the limit"
        );
    }
    Some(slots.max(FEWEST_SLOTS).min(Semaphore::MAX_PERMITS as u64) as usize)
}

/// Warns when a cap set by hand leaves the store less than its reserve.
pub fn check(max: usize, ports: usize) {
    if let Some(room) = room(ports).filter(|&room| max as u64 > room) {
        tracing::warn!(
            max_connections = max,
            "limits.max_connections is more than the open-files limit leaves beside the store's \
             reserve ({room}): a flood of connections can leave the store without descriptors \
             (0 picks the cap from the limit)"
        );
    }
}

/// Connections the open-files limit leaves room for: the limit, less the descriptors open now,
/// a reserve for the store and one per port. None without a limit.
fn room(ports: usize) -> Option<u64> {
    let limit = crate::open_files::soft_limit()?;
    let open = skein_api::process_metrics::open_descriptors().unwrap_or(64);
    let reserve = (limit / 8).clamp(STORE_RESERVE_MIN, STORE_RESERVE_MAX);
    Some(limit.saturating_sub(open + reserve + ports as u64))
}

/// A slot for a connection just accepted on a port in `pool`, waiting while all are taken
/// (`server` names the port in the log). None when connections are not capped.
pub async fn slot(pool: Pool, server: &str) -> Option<Slot> {
    let (senders, queries) = SLOTS.get()?;
    let slots = match pool {
        Pool::Senders => senders,
        Pool::Queries => queries,
    };
    let permit = match slots.free.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            slots.warn_full(server);
            slots
                .free
                .clone()
                .acquire_owned()
                .await
                .expect("the slots are never closed")
        }
    };
    slots.open.add(1);
    Some(Slot {
        _permit: permit,
        open: slots.open.clone(),
    })
}

impl Slots {
    /// Logs at most every 10 s that connections wait for a slot.
    fn warn_full(&self, server: &str) {
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return;
        }
        *last = Some(Instant::now());
        tracing::warn!(
            server,
            pool = self.pool,
            slots = self.total,
            "every connection slot is taken (limits.max_connections); new connections wait until \
             one closes, keeping file descriptors for the store"
        );
    }
}

/// A connection's hold on its slot; the slot is free again when the connection is dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.add(-1);
    }
}

/// An accepted TCP connection holding its slot.
pub struct Connection {
    stream: TcpStream,
    /// None when connections are not capped.
    _slot: Option<Slot>,
}

impl Connection {
    pub fn new(stream: TcpStream, slot: Option<Slot>) -> Connection {
        Connection { stream, _slot: slot }
    }
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The gRPC servers read the client's address from here (the refusal log names it).
impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}
