//! The accept loop of every HTTP port. It is axum's `serve` with one addition: clients that
//! send nothing while a request is awaited are dropped after `limits.read_timeout`, so idle or
//! half-sent connections (slowloris) cannot pile up until the process runs out of sockets.
//!
//! - A new connection must send its first byte in time (before that hyper cannot even tell
//!   HTTP/1 from HTTP/2): [`FirstByteBy`].
//! - On HTTP/1 the whole request head must arrive in time, and an idle keep-alive connection
//!   waiting for its next request gets the same time (hyper's `header_read_timeout`). The
//!   OpenTelemetry Collector closes idle connections after a minute too.
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

/// Serves `app` on `listener` until `stop` turns true, then lets open requests finish.
pub fn spawn(
    listener: impl axum::serve::Listener,
    app: axum::Router,
    read_timeout: Option<Duration>,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        let mut listener = listener;
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(read_timeout);
        let connections = GracefulShutdown::new();
        loop {
            let (io, _) = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.wait_for(|s| *s) => break,
            };
            let io = TokioIo::new(FirstByteBy::new(io, read_timeout));
            let conn = builder.serve_connection(io, TowerToHyperService::new(app.clone()));
            let conn = connections.watch(conn.into_owned());
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(server = what, error = %e, "connection ended with an error");
                }
            });
        }
        // Idle connections close at once; the caller bounds how long busy ones may take.
        connections.shutdown().await;
        Ok(())
    })
}

/// Errors of one connection that died in the backlog: skip it and accept the next.
pub fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// After an accept error that is not about one connection — usually no file descriptor left
/// (`EMFILE`) — logs it and waits a second before the next accept, as axum does on the HTTP
/// ports: the refused connection is still in the backlog, so accepting at once fails at once.
pub async fn pause_after_accept_error(server: &str, e: &io::Error) {
    tracing::error!(
        server,
        error = %e,
        "cannot accept a connection; retrying in 1s (out of file descriptors? see process_open_fds \
         and process_max_fds in /metrics)"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A connection that fails its reads with `TimedOut` if no byte arrives within the limit of
/// its opening; after the first byte it is the plain connection.
pub struct FirstByteBy<I> {
    io: I,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> FirstByteBy<I> {
    pub fn new(io: I, limit: Option<Duration>) -> Self {
        FirstByteBy {
            io,
            deadline: limit.map(|t| Box::pin(tokio::time::sleep(t))),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstByteBy<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let expired = this.deadline.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing within limits.read_timeout of connecting",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstByteBy<I> {
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

impl<I: tonic::transport::server::Connected> tonic::transport::server::Connected for FirstByteBy<I> {
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
        let mut silent = FirstByteBy::new(server, Some(Duration::from_secs(60)));
        let started = tokio::time::Instant::now();
        let err = silent.read(&mut [0u8; 8]).await.expect_err("nothing was sent");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        drop(client);

        let (mut client, server) = tokio::io::duplex(64);
        let mut talking = FirstByteBy::new(server, Some(Duration::from_secs(60)));
        tokio::time::sleep(Duration::from_secs(59)).await;
        client.write_all(b"G").await.unwrap();
        assert_eq!(talking.read(&mut [0u8; 8]).await.unwrap(), 1);
        let read = tokio::spawn(async move { talking.read(&mut [0u8; 8]).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_secs(600)).await;
        client.write_all(b"ET").await.unwrap();
        read.await.unwrap().expect("no limit after the first byte");
    }
}
