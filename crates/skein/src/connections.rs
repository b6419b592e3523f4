//! Connection slots: client connections may take only so many file descriptors, so the store
//! always has some left for its WAL segments, block files, merges and queries. Without a cap a
//! flood of connections (or a fleet of SDKs each holding a gRPC channel) takes every descriptor
//! up to the open-files limit, and the next head cut fails with "Too many open files".
//!
//! Every port accepts through [`crate::http_server::accept`], which takes a slot for each
//! connection it accepts. With every slot taken, each port's accept loop waits (holding at most
//! the one connection it accepted last) and new clients wait in the kernel's backlog: they are
//! served once a connection closes, as under any other backpressure.

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

struct Slots {
    free: Arc<Semaphore>,
    total: usize,
    open: Gauge,
    /// When the last "every slot is taken" line was logged.
    last_warning: std::sync::Mutex<Option<Instant>>,
}

static SLOTS: OnceLock<Slots> = OnceLock::new();

/// Caps client connections at `max` for the rest of the process (at its first call only).
/// Without a call, connections are not capped (in-process tests).
pub fn limit(max: usize) {
    let max = max.clamp(1, Semaphore::MAX_PERMITS);
    metrics::gauge(
        "skein_connections_max",
        "Client connections served at once (limits.max_connections); more wait in the ports' backlog",
        &[],
    )
    .set(max as i64);
    let _ = SLOTS.set(Slots {
        free: Arc::new(Semaphore::new(max)),
        total: max,
        open: metrics::gauge("skein_connections_open", "Client connections open, on every port", &[]),
        last_warning: std::sync::Mutex::new(None),
    });
}

/// The connection cap for `limits.max_connections = 0`: the open-files limit, less what the
/// process holds already (its listeners, the WAL, the runtime), less a reserve for the store,
/// less one per port (each accept loop may hold one connection while it waits for a slot).
pub fn automatic(ports: usize) -> usize {
    let Some(limit) = open_files_limit() else {
        return Semaphore::MAX_PERMITS;
    };
    let open = open_descriptors().unwrap_or(64);
    let reserve = (limit / 8).clamp(STORE_RESERVE_MIN, STORE_RESERVE_MAX);
    let slots = limit.saturating_sub(open + reserve + ports as u64);
    if slots < FEWEST_SLOTS {
        tracing::warn!(
            open_files_limit = limit,
            "the open-files limit leaves room for only {slots} connections beside the store's \
             {reserve} descriptors; serving {FEWEST_SLOTS} — raise the limit"
        );
    }
    slots.max(FEWEST_SLOTS).min(Semaphore::MAX_PERMITS as u64) as usize
}

/// The soft `RLIMIT_NOFILE`, if there is one.
fn open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct passed by pointer.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
            return None;
        }
        Some(lim.rlim_cur)
    }
    #[cfg(not(unix))]
    None
}

/// Descriptors this process holds now.
fn open_descriptors() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// Waits for a free slot for a connection just accepted; `server` names the port in the log.
pub async fn admit(stream: TcpStream, server: &str) -> Connection {
    let Some(slots) = SLOTS.get() else {
        return Connection { stream, _slot: None };
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
    Connection {
        stream,
        _slot: Some(Slot {
            _permit: permit,
            open: slots.open.clone(),
        }),
    }
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
            slots = self.total,
            "every connection slot is taken (limits.max_connections); new connections wait until \
             one closes, keeping file descriptors for the store"
        );
    }
}

/// A connection's hold on its slot; the slot is free again when the connection is dropped.
struct Slot {
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
