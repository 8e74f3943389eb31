//! Failure episodes of the shipper: from the first failed attempt (connecting, finding the
//! stream, publishing) to the next that succeeds, with the backoff between attempts and one
//! warning per episode and reason.

use std::time::{Duration, Instant};

use super::nats::PublishError;
use super::{MAX_BACKOFF, MIN_BACKOFF, Shipper};
use crate::errors;

/// A failure episode: from the first failed attempt to the next that succeeds.
pub(super) struct Failure {
    since: Instant,
    pub(super) backoff: Duration,
    /// When the next attempt is due.
    pub(super) retry_at: Instant,
    /// A publish failed in it: only a publish that succeeds ends it then. A stream found by name
    /// after "no responders" need not take the subject, and ending the episode there would reset
    /// the backoff before every publish that fails the same way.
    pub(super) publishing: bool,
    /// The last error, as logged: one that says something else is logged as a warning too
    /// (the stream found missing first, then found not to take the subject, which names the
    /// fix), the same one again only at debug level.
    error: String,
}

impl Shipper {
    pub(super) fn stream_ready(&mut self, created: bool) {
        self.stream_ready = true;
        if created {
            // A new stream numbers from 1 again; not a sign of another recreation.
            self.last_seq = 0;
            tracing::warn!(
                stream = %self.nats.target().stream,
                subjects = %self.nats.target().stream_subject,
                resume = %self.acked,
                "stream was missing (new, or deleted by an operator): created it; shipping \
                 resumes from the checkpoint"
            );
        }
        // The stream is there. After a failed publish, that publishing works only a publish
        // shows: the episode (and its backoff) goes on until one succeeds.
        if !self.failure.as_ref().is_some_and(|f| f.publishing) {
            self.recovered();
        }
    }

    pub(super) fn publish_failed(&mut self, e: &PublishError) {
        if e.stream_missing() {
            self.stream_ready = false;
        }
        self.failed(e);
        if let Some(f) = &mut self.failure {
            f.publishing = true;
        }
    }

    /// Counts a failure and schedules the next attempt; the first of an episode is logged, and
    /// shipping is behind.
    pub(super) fn failed(&mut self, e: &(dyn std::error::Error + 'static)) {
        self.metrics.errors.inc();
        self.progress.set_behind(true);
        let now = Instant::now();
        let error = errors::chain(e);
        match &mut self.failure {
            None => {
                tracing::warn!(
                    error = %error,
                    at = %self.acked,
                    "shipping clicks to NATS failed: clicks stay in the log, retrying with backoff"
                );
                self.failure = Some(Failure {
                    since: now,
                    backoff: MIN_BACKOFF,
                    retry_at: now + MIN_BACKOFF,
                    publishing: false,
                    error,
                });
            }
            Some(f) => {
                if f.error == error {
                    tracing::debug!(error = %error, "shipping still failing");
                } else {
                    tracing::warn!(
                        error = %error,
                        at = %self.acked,
                        "shipping clicks to NATS still failing, now for another reason"
                    );
                    f.error = error;
                }
                f.backoff = (f.backoff * 2).min(MAX_BACKOFF);
                f.retry_at = now + f.backoff;
            }
        }
    }

    /// Something succeeded: ends a failure episode.
    pub(super) fn recovered(&mut self) {
        if let Some(f) = self.failure.take() {
            tracing::info!(
                failing_for = ?f.since.elapsed(),
                at = %self.acked,
                "shipping clicks to NATS recovered"
            );
        }
    }
}
