//! The redirect latency (`clickedge_redirect_duration_seconds`): from the request handed to the
//! handler until hyper is done with its response, that is when it has written the head and the
//! (empty) body to the connection and drops the body.
//!
//! Only `302` answers are observed: the histogram is the click path's, the one an SLO is set on
//! (a fallback's `302` for a link that does not open is in it too; an action link's `303` is
//! not).
//! The cost per request is one `Instant`, an `Arc` clone and, at the end, one observe (atomics,
//! no allocation). Nothing here decides an answer.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use prometheus::Histogram;

use crate::http::Body;

/// A response body that observes the time since `started` into its histogram when hyper drops it.
pub(super) struct Timed {
    body: Body,
    started: Option<(Instant, Histogram)>,
}

impl Timed {
    /// `body`, observed when done if `started` is some.
    pub(super) fn new(body: Body, started: Option<(Instant, Histogram)>) -> Timed {
        Timed { body, started }
    }
}

impl hyper::body::Body for Timed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        if let Some((started, histogram)) = self.started.take() {
            histogram.observe(started.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use prometheus::HistogramOpts;

    #[tokio::test]
    async fn a_timed_body_is_observed_once_when_done_and_an_untimed_one_never() {
        let histogram = Histogram::with_opts(HistogramOpts::new("t", "t")).unwrap();
        let timed = Timed::new(
            Body::new(Bytes::from_static(b"x")),
            Some((Instant::now(), histogram.clone())),
        );
        assert_eq!(histogram.get_sample_count(), 0, "not before it is done");
        assert_eq!(timed.collect().await.unwrap().to_bytes(), "x");
        assert_eq!(histogram.get_sample_count(), 1);
        drop(Timed::new(Body::new(Bytes::new()), None));
        assert_eq!(histogram.get_sample_count(), 1);
    }
}
