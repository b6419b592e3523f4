//! Connections whose client stops reading are closed. An HTTP query answer is built whole and
//! handed to hyper as one buffer (a big trace is tens of MB of JSON), and hyper keeps that
//! buffer for as long as the connection stays open, so a client that stops reading without
//! closing would pin it for good. Web servers close such connections after a while (nginx's
//! `send_timeout`); here a write that makes no progress for `query.timeout` fails, and hyper
//! drops the connection with its buffer.
//!
//! gRPC streams are held by HTTP/2 flow control instead: a stalled stream stops being polled,
//! `FindTraces` reads its traces lazily, and its slot ends at the query's time limit
//! (`admission`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use skein_model::metrics::{self, Counter};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Sleep;

/// A listener for `axum::serve` whose connections fail a write stalled for `limit`.
pub struct CutStalledReaders<L = TcpListener> {
    listener: L,
    limit: Option<Duration>,
    cut: Counter,
}

impl<L> CutStalledReaders<L> {
    /// `limit` zero: never cut.
    pub fn new(listener: L, limit: Duration) -> CutStalledReaders<L> {
        CutStalledReaders {
            listener,
            limit: (!limit.is_zero()).then_some(limit),
            cut: metrics::counter(
                "skein_stalled_readers_cut_total",
                "Query connections closed because the client read nothing of its answer for query.timeout",
                &[],
            ),
        }
    }
}

impl<L: axum::serve::Listener<Addr = SocketAddr>> axum::serve::Listener for CutStalledReaders<L> {
    type Io = StallLimited<L::Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, peer) = axum::serve::Listener::accept(&mut self.listener).await;
        let limit = self.limit.map(|limit| (limit, self.cut.clone()));
        (StallLimited::new(io, peer.to_string(), limit), peer)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection whose writes fail once one has waited `limit` for the peer to read.
pub struct StallLimited<T> {
    inner: T,
    peer: String,
    limit: Option<(Duration, Counter)>,
    /// Started when a write first had to wait; reset by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> StallLimited<T> {
    pub fn new(inner: T, peer: String, limit: Option<(Duration, Counter)>) -> StallLimited<T> {
        StallLimited {
            inner,
            peer,
            limit,
            stalled: None,
        }
    }

    /// Passes a write's outcome on, unless it has waited too long.
    fn watch<R>(&mut self, cx: &mut Context<'_>, outcome: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if outcome.is_ready() {
            self.stalled = None;
            return outcome;
        }
        let Some((limit, cut)) = &self.limit else {
            return Poll::Pending;
        };
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(*limit)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        cut.inc();
        tracing::warn!(peer = %self.peer, "closing a query connection: the client read nothing of its answer for {limit:?} (query.timeout)");
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {limit:?}"),
        )))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallLimited<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallLimited<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limited(io: tokio::io::DuplexStream) -> StallLimited<tokio::io::DuplexStream> {
        let cut = Counter::default();
        StallLimited::new(io, "test".into(), Some((Duration::from_secs(10), cut)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_client_never_reads_fails_after_the_limit() {
        let (server, _client) = tokio::io::duplex(64);
        let mut server = limited(server);
        let start = tokio::time::Instant::now();
        let err = server.write_all(&[7; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_slowly_is_not_cut_off() {
        let (server, mut client) = tokio::io::duplex(64);
        let mut server = limited(server);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0; 64];
            loop {
                // A little every 9 s: each wait of the writer is shorter than its limit.
                tokio::time::sleep(Duration::from_secs(9)).await;
                match client.read(&mut buf).await.unwrap() {
                    0 => return got,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        server.write_all(&[7; 1024]).await.unwrap();
        server.shutdown().await.unwrap();
        drop(server);
        assert_eq!(reader.await.unwrap().len(), 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_no_cut() {
        let (server, _client) = tokio::io::duplex(64);
        let mut server = StallLimited::new(server, "test".into(), None);
        let write = tokio::time::timeout(Duration::from_secs(24 * 3600), server.write_all(&[7; 1024])).await;
        assert!(write.is_err(), "still waiting after a day");
    }
}
