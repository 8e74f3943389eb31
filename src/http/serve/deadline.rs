//! A request body that must be all in by a deadline, for the admin listener: hyper's header
//! timeout bounds only a request's head, so without this a client sending a body a byte a minute
//! keeps its request in flight, and its connection out of the idle close, for as long as it
//! likes.
//!
//! The deadline is total, not per read: a trickle of bytes does not push it back. It grows with
//! the body's size ([`body_time`]), so a large valid body on a slow link is not refused, while a
//! trickling client still holds its place for a bounded time. Past it the body fails, and
//! [`Deadline::expired`] tells the listener to answer `408` and close. What a handler does with a
//! body it has read is not bounded here.
//!
//! The clock counts from the head, not from what has reached the socket: hyper reads a body's
//! bytes off the connection only when the body is polled, so bytes that arrived in time but are
//! first asked for after the deadline are refused all the same. The admin routes read their
//! bodies first thing (extractors, before any other work), so in practice the time is the
//! client's.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// The slowest upload the admin listener waits for: 16 KiB/s (128 kbit/s), below any link an
/// operator or a mail system would call the API over (a poor mobile uplink does several times
/// that), yet fast enough that the largest body an admin route takes (2 MiB, `/v1/rewrite`)
/// holds a connection's place for about two minutes past the header timeout, not indefinitely.
pub(super) const MIN_RATE: u64 = 16 * 1024;

/// The time a body has from its head: `head` (the header timeout) plus its size at
/// [`MIN_RATE`]. The size is the announced `Content-Length`, capped at `largest` (a larger body
/// is refused anyway), or `largest` when none is announced (chunked); `largest` is the largest
/// body the routes accept.
pub(super) fn body_time(head: Duration, length: Option<u64>, largest: u64) -> Duration {
    let bytes = length.map_or(largest, |length| length.min(largest));
    let secs = Duration::from_secs(bytes / MIN_RATE);
    // The remainder is below MIN_RATE, so this product cannot overflow.
    let rest = Duration::from_nanos((bytes % MIN_RATE) * 1_000_000_000 / MIN_RATE);
    head.saturating_add(secs).saturating_add(rest)
}

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
        // A frame hyper already holds is taken before the clock is looked at. That is not every
        // byte that has reached the socket: hyper reads the connection only while the body is
        // polled, so a first poll after the deadline finds nothing, and the body fails (see the
        // module's doc).
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

    #[test]
    fn the_time_for_a_body_grows_with_its_size_up_to_the_largest_taken() {
        let head = Duration::from_secs(10);
        let largest = 2 * 1024 * 1024;
        assert_eq!(body_time(head, Some(0), largest), head);
        assert_eq!(
            body_time(head, Some(MIN_RATE), largest),
            Duration::from_secs(11)
        );
        assert_eq!(
            body_time(head, Some(MIN_RATE / 2), largest),
            Duration::from_millis(10_500)
        );
        // 2 MiB at 16 KiB/s: 128 s.
        let most = Duration::from_secs(138);
        assert_eq!(body_time(head, Some(largest), largest), most);
        // An announced length past what is taken buys no more time; no length gets the most.
        assert_eq!(body_time(head, Some(u64::MAX), largest), most);
        assert_eq!(body_time(head, None, largest), most);
        // No overflow, whatever the caps.
        assert!(body_time(head, None, u64::MAX) > most);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_in_by_its_deadline_is_read_whole() {
        let body = Deadline::new(trickle(5, Duration::from_secs(1)), Duration::from_secs(10));
        let expired = body.expired();
        assert_eq!(body.collect().await.unwrap().to_bytes(), "xxxxx");
        assert!(!expired.load(Ordering::Relaxed));
    }
}
