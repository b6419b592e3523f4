//! A request body while it arrives, for every ingest receiver (HTTP and gRPC): its bytes are
//! counted against the pipeline's receive budget (`Pipeline::receiving`), and it fails if
//! nothing of it arrives for `limits.read_timeout`. Each protocol turns the failure into its own
//! answer (`Interrupted`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use skein_pipeline::{Pipeline, Receiving, SubmitError};

/// Why a body stopped before its end.
#[derive(Debug)]
pub enum Interrupted<E> {
    /// Nothing arrived for this long (`limits.read_timeout`).
    Stalled(Duration),
    /// The receive budget is spent: retry later.
    Busy(SubmitError),
    /// The connection or the body's own framing failed.
    Body(E),
}

/// The message for a body that stalled, naming the limit; each protocol puts it in its answer.
pub fn stalled_message(after: Duration) -> String {
    format!(
        "the request body stalled: nothing of it arrived for {} (limits.read_timeout)",
        skein_model::units::format_duration(after)
    )
}

/// A body counted against the receive budget and timed between frames; its errors go through
/// `map` into the protocol's own error type.
pub struct Arriving<B: Body, F> {
    inner: B,
    budget: Receiving,
    stall: Option<Stall>,
    map: F,
}

/// The time a body may send nothing; reset by each frame.
struct Stall {
    after: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<B, E, F> Arriving<B, F>
where
    B: Body<Data = Bytes> + Unpin,
    F: FnMut(Interrupted<B::Error>) -> E + Unpin,
{
    pub fn new(inner: B, pipeline: &Pipeline, map: F) -> Self {
        Arriving {
            inner,
            budget: pipeline.receiving(),
            stall: pipeline.limits().read_timeout().map(|after| Stall {
                after,
                timer: Box::pin(tokio::time::sleep(after)),
            }),
            map,
        }
    }

    /// The next frame, as a future.
    pub async fn next_frame(&mut self) -> Option<Result<Frame<Bytes>, E>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx)).await
    }
}

impl<B, E, F> Body for Arriving<B, F>
where
    B: Body<Data = Bytes> + Unpin,
    F: FnMut(Interrupted<B::Error>) -> E + Unpin,
{
    type Data = Bytes;
    type Error = E;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, E>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err((this.map)(Interrupted::Body(e))))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {
                if let Some(stall) = &mut this.stall {
                    if stall.timer.as_mut().poll(cx).is_ready() {
                        let after = stall.after;
                        this.stall = None;
                        return Poll::Ready(Some(Err((this.map)(Interrupted::Stalled(after)))));
                    }
                }
                return Poll::Pending;
            }
        };
        if let Some(stall) = &mut this.stall {
            let next = tokio::time::Instant::now() + stall.after;
            stall.timer.as_mut().reset(next);
        }
        if let Some(data) = frame.data_ref() {
            if let Err(e) = this.budget.add(data.len()) {
                return Poll::Ready(Some(Err((this.map)(Interrupted::Busy(e)))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
