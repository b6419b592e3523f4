//! The accept loop of every HTTP port. It is axum's `serve` with one addition: clients that
//! send nothing while a request is awaited are dropped after `limits.read_timeout`, so idle or
//! half-sent connections (slowloris) cannot pile up until the process runs out of sockets.
//!
//! - A new connection must finish opening in time: its first byte, and on HTTP/2 the preface
//!   and the client's SETTINGS ([`OpeningBy`]; the gRPC ports use it too).
//! - On HTTP/1 the whole request head must arrive in time, and an idle keep-alive connection
//!   waiting for its next request gets the same time (hyper's `header_read_timeout`). The
//!   OpenTelemetry Collector closes idle connections after a minute too.
//! - An open HTTP/2 connection is pinged after each `limits.read_timeout` without traffic and
//!   closed if the ping is not answered ([`ping_timeout`]): a gRPC channel may rightly stay
//!   open and idle, a dead or hung peer may not.
//! - Request bodies are bounded by the receivers themselves (`skein_ingest::http::read_body`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::connections::{Connection, Pool};

/// Serves `app` on `listener` until `stop` turns true, then lets open requests finish.
/// A 405 gets a body in the port's error `shapes`.
pub fn spawn(
    listener: impl axum::serve::Listener<Addr = std::net::SocketAddr>,
    app: axum::Router,
    shapes: skein_api::ErrorShapes,
    read_timeout: Option<Duration>,
    stop: watch::Receiver<bool>,
    what: &'static str,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let app = skein_api::explain_wrong_methods(app, shapes);
    tokio::spawn(async move {
        serve_until(listener, app, read_timeout, stop, None, what).await;
        Ok(())
    })
}

/// The accept loop of [`spawn`]. Once `stop` turns true it stops accepting and waits for open
/// connections to finish — at most `linger`, if given — then gives the listener back.
pub async fn serve_until<L: axum::serve::Listener<Addr = std::net::SocketAddr>>(
    mut listener: L,
    app: axum::Router,
    read_timeout: Option<Duration>,
    mut stop: watch::Receiver<bool>,
    linger: Option<Duration>,
    what: &'static str,
) -> L {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(read_timeout);
    if let Some(t) = ping_timeout(read_timeout) {
        builder.http2().keep_alive_timeout(t);
    }
    let connections = GracefulShutdown::new();
    loop {
        let (io, client) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let io = TokioIo::new(OpeningBy::new(io, read_timeout));
        // Each request carries the client's address (the ingest ports log it with refusals).
        let app = app.clone();
        let service = tower::service_fn(move |mut req: axum::http::Request<_>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(client));
            tower::ServiceExt::oneshot(app.clone(), req)
        });
        let conn = builder.serve_connection(io, TowerToHyperService::new(service));
        let conn = connections.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(server = what, error = %e, "connection ended with an error");
            }
        });
    }
    // Idle connections close at once; the caller bounds how long busy ones may take.
    match linger {
        Some(limit) => {
            let _ = tokio::time::timeout(limit, connections.shutdown()).await;
        }
        None => connections.shutdown().await,
    }
    listener
}

/// How long an HTTP/2 keep-alive ping may go unanswered: hyper's and grpc-go's 20 s, or
/// `read_timeout` if shorter. Pings are sent after `read_timeout` without traffic.
pub fn ping_timeout(read_timeout: Option<Duration>) -> Option<Duration> {
    read_timeout.map(|t| t.min(Duration::from_secs(20)))
}

/// A port's listener that logs why an accept failed and retries after a second (axum's own
/// listener retries silently: its log needs a feature skein does not build).
pub struct Accepting {
    listener: tokio::net::TcpListener,
    server: &'static str,
    pool: Pool,
}

impl Accepting {
    pub fn new(listener: tokio::net::TcpListener, server: &'static str, pool: Pool) -> Accepting {
        Accepting { listener, server, pool }
    }

    pub fn into_inner(self) -> tokio::net::TcpListener {
        self.listener
    }
}

impl axum::serve::Listener for Accepting {
    type Io = Connection;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        accept(&self.listener, self.server, self.pool).await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// The next connection, with a slot of `pool` ([`crate::connections`]), however long accepting
/// and waiting for the slot take. Nagle is off: answers are written whole.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    server: &str,
    pool: Pool,
) -> (Connection, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let slot = crate::connections::slot(pool, server).await;
                return (Connection::new(stream, slot), peer);
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => pause_after_accept_error(server, &e).await,
        }
    }
}

/// Errors of one connection that died in the backlog: skip it and accept the next.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// After an accept error that is not about one connection — usually no file descriptor left
/// (`EMFILE`) — logs it and waits a second before the next accept: the refused connection is
/// still in the backlog, so accepting at once fails at once (tonic does that, spinning a core).
async fn pause_after_accept_error(server: &str, e: &io::Error) {
    tracing::error!(
        server,
        error = %e,
        "cannot accept a connection; retrying in 1s (out of file descriptors? see process_open_fds \
         and process_max_fds in /metrics)"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The HTTP/2 connection preface (RFC 9113 §3.4); the client's SETTINGS frame follows it.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A frame header: 3 bytes of length, type, flags, 4 bytes of stream id.
const FRAME_HEADER: usize = 9;

/// A connection that fails its reads with `TimedOut` if the client has not finished opening it
/// within the limit: for HTTP/1 the first byte (hyper's `header_read_timeout` bounds the rest of
/// the request head), for HTTP/2 the preface and the whole SETTINGS frame after it. hyper sets
/// no time limit on the HTTP/2 handshake, and its keep-alive pings start only after it, so a
/// client that sent the preface and stopped would hold its socket for good. After the opening
/// it is the plain connection.
pub struct OpeningBy<I> {
    io: I,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The connection's first bytes, as far as they tell where the opening ends.
    head: [u8; PREFACE.len() + FRAME_HEADER],
    seen: usize,
}

impl<I> OpeningBy<I> {
    pub fn new(io: I, limit: Option<Duration>) -> Self {
        OpeningBy {
            io,
            deadline: limit.map(|t| Box::pin(tokio::time::sleep(t))),
            head: [0; PREFACE.len() + FRAME_HEADER],
            seen: 0,
        }
    }

    /// Notes bytes read; true once the opening is complete.
    fn opened_after(&mut self, read: &[u8]) -> bool {
        let take = read.len().min(self.head.len().saturating_sub(self.seen));
        self.head[self.seen..self.seen + take].copy_from_slice(&read[..take]);
        self.seen += read.len();
        let known = self.seen.min(PREFACE.len());
        if self.head[..known] != PREFACE[..known] {
            return true; // not HTTP/2 with prior knowledge: the first byte was the opening
        }
        if self.seen < self.head.len() {
            return false;
        }
        let settings_len = u32::from_be_bytes([0, self.head[24], self.head[25], self.head[26]]) as usize;
        self.seen >= self.head.len() + settings_len
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for OpeningBy<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if this.deadline.is_some() && this.opened_after(&buf.filled()[before..]) {
                    this.deadline = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let expired = this.deadline.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client did not finish opening the connection within limits.read_timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for OpeningBy<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<I: tonic::transport::server::Connected> tonic::transport::server::Connected for OpeningBy<I> {
    type ConnectInfo = I::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Silence past the limit fails the first read; a first byte in time turns the limit off
    /// for good.
    #[tokio::test(start_paused = true)]
    async fn the_first_byte_must_arrive_within_the_limit() {
        let (client, server) = tokio::io::duplex(64);
        let mut silent = OpeningBy::new(server, Some(Duration::from_secs(60)));
        let started = tokio::time::Instant::now();
        let err = silent.read(&mut [0u8; 8]).await.expect_err("nothing was sent");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        drop(client);

        let (mut client, server) = tokio::io::duplex(64);
        let mut talking = OpeningBy::new(server, Some(Duration::from_secs(60)));
        tokio::time::sleep(Duration::from_secs(59)).await;
        client.write_all(b"G").await.unwrap();
        assert_eq!(talking.read(&mut [0u8; 8]).await.unwrap(), 1);
        let read = tokio::spawn(async move { talking.read(&mut [0u8; 8]).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_secs(600)).await;
        client.write_all(b"ET").await.unwrap();
        read.await.unwrap().expect("no limit after the first byte");
    }

    /// HTTP/2 with prior knowledge: the limit holds until the preface and the whole SETTINGS
    /// frame after it have arrived, however they are split; a preface alone times out.
    #[tokio::test(start_paused = true)]
    async fn an_http2_opening_must_include_the_settings_frame() {
        let settings = [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
        let (mut client, server) = tokio::io::duplex(256);
        let mut stalled = OpeningBy::new(server, Some(Duration::from_secs(60)));
        client.write_all(PREFACE).await.unwrap();
        client.write_all(&settings[..12]).await.unwrap();
        let mut buf = [0u8; 64];
        let mut got = 0;
        let err = loop {
            match stalled.read(&mut buf).await {
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert_eq!((got, err.kind()), (36, io::ErrorKind::TimedOut));

        let (mut client, server) = tokio::io::duplex(256);
        let mut opened = OpeningBy::new(server, Some(Duration::from_secs(60)));
        for piece in [&PREFACE[..5], &PREFACE[5..], &settings[..4], &settings[4..]] {
            client.write_all(piece).await.unwrap();
            assert_eq!(opened.read(&mut buf).await.unwrap(), piece.len());
        }
        assert!(opened.deadline.is_none(), "opened once SETTINGS was whole");
        let read = tokio::spawn(async move { opened.read(&mut buf).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_secs(600)).await;
        client.write_all(&[0; 9]).await.unwrap();
        read.await.unwrap().expect("no limit after the opening");

        // HTTP/1 starting with the preface's first letter: opened at the first byte that differs.
        let (mut client, server) = tokio::io::duplex(256);
        let mut post = OpeningBy::new(server, Some(Duration::from_secs(60)));
        client.write_all(b"PO").await.unwrap();
        assert_eq!(post.read(&mut buf).await.unwrap(), 2);
        assert!(post.deadline.is_none());
    }
}
