//! A request body that must be all in by a deadline, for the admin listener: hyper's header
//! timeout bounds only a request's head, so without this a client sending a body a byte a minute
//! keeps its request in flight, and its connection out of the idle close, for as long as it
//! likes.
//!
//! The deadline is total, not per read: a trickle of bytes does not push it back. Past it the
//! body fails, and [`Deadline::expired`] tells the listener to answer `408` and close. What a
//! handler does with a body it has read is not bounded here.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// Why a body stopped short: not all there by its deadline.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?}")]
pub(super) struct BodyTimedOut(Duration);

/// `body`, failing with [`BodyTimedOut`] once `within` has passed since it was wrapped.
pub(super) struct Deadline<B> {
    body: B,
    within: Duration,
    // Boxed so the wrapper is `Unpin` (one allocation per admin request, off the click path).
    sleep: Pin<Box<Sleep>>,
    expired: Arc<AtomicBool>,
}

impl<B> Deadline<B> {
    /// Wraps `body`; its deadline starts now (when the request's head is in).
    pub(super) fn new(body: B, within: Duration) -> Deadline<B> {
        Deadline {
            body,
            within,
            sleep: Box::pin(tokio::time::sleep(within)),
            expired: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set once the body has failed for its deadline; shared, since the body itself is handed
    /// to the router.
    pub(super) fn expired(&self) -> Arc<AtomicBool> {
        self.expired.clone()
    }
}

impl<B> Body for Deadline<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        // What has arrived is taken first, so a body that is all there by the deadline is
        // never refused for being read late.
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.expired.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(BodyTimedOut(this.within).into())))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt as _;

    use super::*;

    /// A body of `left` bytes, one every `every`.
    struct Trickle {
        every: Duration,
        left: usize,
        sleep: Pin<Box<Sleep>>,
    }

    fn trickle(left: usize, every: Duration) -> Trickle {
        let sleep = Box::pin(tokio::time::sleep(every));
        Trickle { every, left, sleep }
    }

    impl Body for Trickle {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.left -= 1;
            let next = tokio::time::Instant::now() + self.every;
            self.sleep.as_mut().reset(next);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_trickling_past_its_deadline_fails_and_says_so() {
        // A byte a second: each read makes progress, the whole never arrives in time.
        let body = Deadline::new(
            trickle(1000, Duration::from_secs(1)),
            Duration::from_secs(10),
        );
        let expired = body.expired();
        let error = body.collect().await.expect_err("timed out");
        assert!(error.is::<BodyTimedOut>(), "{error}");
        assert!(expired.load(Ordering::Relaxed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_in_by_its_deadline_is_read_whole() {
        let body = Deadline::new(trickle(5, Duration::from_secs(1)), Duration::from_secs(10));
        let expired = body.expired();
        assert_eq!(body.collect().await.unwrap().to_bytes(), "xxxxx");
        assert!(!expired.load(Ordering::Relaxed));
    }
}
