//! The shipper: a tokio task that streams the click log to NATS JetStream (`clicks.stream =
//! "nats"`), line by line, from a persisted checkpoint. The broker is never on the redirect path:
//! the batcher still writes only files, which stay the durable spool; this task reads them back.
//!
//! ```text
//! click files ──reader (whole, fdatasync'd lines)──▶ publish (Nats-Msg-Id = click_id)
//!      ▲                                                  │ ≤ MAX_IN_FLIGHT acks pending
//!      └──────── checkpoint (file, offset) ◀── acked in order
//! ```
//!
//! - Delivery: each line is published with its `click_id` as `Nats-Msg-Id`, at most
//!   [`MAX_IN_FLIGHT`] acknowledgements pending. The acknowledged position advances only past
//!   lines acknowledged in order, and is persisted (atomically, see [`checkpoint`]) at most every
//!   [`CHECKPOINT_EVERY`] and at shutdown. A failed or timed-out publish is not known to have
//!   failed: the shipper backs off (up to [`MAX_BACKOFF`]) and re-publishes from the acknowledged
//!   position with the same ids, as it does after a restart; the stream acknowledges those it
//!   already has as duplicates (counted). Consumers get every click at least once and dedupe by
//!   `click_id`.
//! - The stream is created when missing. If an operator deletes it, the shipper creates it again;
//!   if an operator recreates it, the shipper sees the stream's sequence go back. Either way it
//!   logs what happened and goes on from the checkpoint: clicks acknowledged by the old stream
//!   are not sent again.
//! - Lag is visible: [`ShipMetrics`] (shipped, duplicates, errors, unshipped bytes, age of the
//!   oldest unshipped click, found in a later file when the checkpoint is at the end of one:
//!   [`lag`]), and [`Progress::behind`] for the health endpoint. Retention asks
//!   [`Progress::fully_shipped`] before deleting a click file.
//! - Shutdown: the shipper is stopped after the click writer's last write, and drains for at
//!   most [`FINAL_DRAIN`]: it ships what is left and waits for the acknowledgements in flight, so
//!   the clicks of a clean stop are in the stream before the process exits; whatever the drain
//!   could not ship (NATS away) is logged and shipped at the next start.

mod checkpoint;
mod failure;
mod lag;
mod metrics;
mod nats;
mod progress;
mod reader;
mod wire;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub use checkpoint::{CHECKPOINT_FILE, Checkpoint, CheckpointError, Position};
pub use metrics::ShipMetrics;
pub use nats::{DUPLICATE_WINDOW, NatsError, NatsTarget, PublishError, UrlAuth, connect_options};
pub use progress::Progress;

use super::file::closed_name;
use super::line_click_id;
use crate::clock::Clock;
use crate::errors;
use lag::{at_end_if_finished, unshipped};
use nats::{Ack, Nats};
use reader::Reader;

/// Acknowledgements waited for at once.
pub const MAX_IN_FLIGHT: usize = 512;

/// Longest wait between attempts while NATS fails.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the unshipped bytes, the oldest unshipped click's age and whether shipping is
/// behind are read again.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// First wait after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// The checkpoint is written at most this often while shipping (and at shutdown).
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// How often the log is looked at for new lines when there were none.
const POLL: Duration = Duration::from_millis(20);

/// Bytes read from the log at a time.
const CHUNK: usize = 256 << 10;

/// Shipping is "behind" when its oldest unshipped click is this old (or publishing fails).
const BEHIND_AFTER: Duration = Duration::from_secs(10);

/// The longest the final drain at shutdown takes ([`Shipper::run`]): long enough for the last
/// clicks and the acknowledgements in flight, short enough that a NATS that is away delays the
/// exit only this much (it fits in the margin the deployment examples leave after
/// `shutdown_grace`).
pub const FINAL_DRAIN: Duration = Duration::from_secs(5);

/// How long the start waits to learn this node's newest click id in the stream.
pub const NEWEST_WAIT: Duration = Duration::from_secs(3);

/// The shipper could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// The checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The NATS client could not be set up.
    #[error(transparent)]
    Nats(#[from] NatsError),
}

/// The shipper task's state.
pub struct Shipper {
    dir: PathBuf,
    nats: Nats,
    checkpoint: Checkpoint,
    progress: Progress,
    metrics: ShipMetrics,
    clock: Clock,
    /// The position after the last line acknowledged in order.
    acked: Position,
    /// When `acked` was last persisted (or tried), if it moved since.
    dirty_since: Option<Instant>,
    /// Whether the last write of the checkpoint failed (said once until one succeeds).
    checkpoint_failing: bool,
    /// The stream's sequence number of the last new message acknowledged (0: none yet).
    last_seq: u64,
    /// Whether the stream is known to exist.
    stream_ready: bool,
    failure: Option<failure::Failure>,
}

impl Shipper {
    /// Reads the checkpoint of the click log in `dir` and sets up the NATS client (which
    /// connects in the background). Returns the shipper and its shared progress.
    pub async fn new(
        dir: PathBuf,
        target: NatsTarget,
        metrics: ShipMetrics,
        clock: Clock,
    ) -> Result<Shipper, ShipError> {
        let checkpoint = Checkpoint::in_dir(&dir);
        let mut acked = checkpoint.load()?;
        if !acked.file.is_empty() && closed_name(&acked.file) != Some(acked.file.as_str()) {
            // Left by a version that took a file named by hand for part of the log: where it
            // stands among the real files is unknown, so shipping starts over (the stream drops
            // what it still remembers as duplicates; consumers dedupe by click_id).
            tracing::warn!(
                checkpoint = %acked,
                "the shipping checkpoint names a file that is not a click file \
                 (clicks-<time>.jsonl): shipping starts over from the start of the click log"
            );
            acked = Position::default();
        }
        let nats = Nats::connect(target).await?;
        tracing::info!(
            url = %nats.target().shown(),
            stream = %nats.target().stream,
            subject = %nats.target().subject,
            from = %acked,
            "shipping clicks to NATS JetStream"
        );
        Ok(Shipper {
            dir,
            nats,
            checkpoint,
            progress: Progress::new(acked.clone()),
            metrics,
            clock,
            acked,
            dirty_since: None,
            checkpoint_failing: false,
            last_seq: 0,
            stream_ready: false,
            failure: None,
        })
    }

    /// The shared progress (for retention and health).
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// The sequence number of the newest click id this node published to the stream, asked once
    /// at start, within [`NEWEST_WAIT`]: a node whose click directory was lost (a replaced
    /// volume) but that keeps its id must go on after it, or JetStream would drop its new clicks
    /// as re-publishes and consumers deduplicating by `click_id` would skip them. None when the
    /// stream has none of this node's, or cannot be asked now (logged: the ids then go on from
    /// the local log alone).
    pub async fn newest_in_stream(&self) -> Option<u64> {
        match tokio::time::timeout(NEWEST_WAIT, self.nats.newest_seq()).await {
            Ok(Ok(seq)) => seq,
            Ok(Err(e)) => {
                tracing::warn!(error = %errors::chain(&e), "could not read this node's newest click id in the stream: click ids go on from the local log");
                None
            }
            Err(_) => {
                let target = self.nats.target();
                tracing::warn!(
                    wait = ?NEWEST_WAIT,
                    url = %target.shown(),
                    cause = %target.why_unanswered().await,
                    "NATS did not say this node's newest click id in the stream in time: click ids go on from the local log"
                );
                None
            }
        }
    }

    /// Ships until `stop` turns true, then drains: goes on until every line in the log is
    /// acknowledged, for at most [`FINAL_DRAIN`]; then persists the checkpoint and logs how much
    /// is left unshipped.
    ///
    /// Turn `stop` true only after the click writer has written its last click (`close`): the
    /// drain ships what the writer flushed at shutdown, and waits for the acknowledgements of
    /// lines already published, instead of leaving both to the next start (which would
    /// re-publish them, stored twice if that start comes after the stream's duplicate window).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut reader = Reader::new(&self.dir, self.acked.clone(), CHUNK)
            .written_up_to(self.progress.clone())
            .counting(self.metrics.clone());
        let mut stats_at = Instant::now();
        // When the final drain ends: set once `stop` is seen true.
        let mut until: Option<Instant> = None;
        let mut draining = false;
        loop {
            if until.is_none() && *stop.borrow() {
                until = Some(Instant::now() + FINAL_DRAIN);
            }
            if let Some(at) = until {
                if !draining {
                    draining = true;
                    // A retry scheduled up to MAX_BACKOFF away could fall after the drain:
                    // the last attempt is made now.
                    if let Some(f) = &mut self.failure {
                        f.retry_at = Instant::now();
                    }
                }
                if at <= Instant::now() {
                    break;
                }
            }
            if stats_at.elapsed() >= STATS_EVERY {
                self.update_stats().await;
                stats_at = Instant::now();
            }
            let wait = if let Some(at) = self.failure.as_ref().map(|f| f.retry_at)
                && at > Instant::now()
            {
                // Backing off: the retry time is kept, and the gauges (unshipped bytes, the
                // oldest click's age, /healthz) are brought up to date meanwhile.
                (at - Instant::now()).min(STATS_EVERY)
            } else if !self.stream_ready {
                let ensured = tokio::select! {
                    r = self.nats.ensure_stream() => Some(r),
                    () = drain_over(&mut stop, &mut until) => None,
                };
                match ensured {
                    Some(Ok(created)) => self.stream_ready(created),
                    Some(Err(e)) => self.failed(&e),
                    None => {}
                }
                continue;
            } else {
                let read = tokio::task::spawn_blocking(move || {
                    let next = reader.next_chunk();
                    (reader, next)
                })
                .await;
                let next;
                (reader, next) = match read {
                    Ok(done) => done,
                    Err(e) => {
                        // A bug: said as such, and shipping shows behind (in /healthz and the
                        // error count) rather than its last figures.
                        self.metrics.errors.inc();
                        self.progress.set_behind(true);
                        tracing::error!(
                            error = %e,
                            at = %self.acked,
                            "the click shipper's reader panicked (the clicks stay in the log)"
                        );
                        // What is acknowledged is kept; the panic goes on to the supervisor,
                        // which stops the edge for its service manager to start it again (ended
                        // here quietly, the edge served on shipping nothing, gauges frozen).
                        self.persist(true).await;
                        match e.try_into_panic() {
                            Ok(panic) => std::panic::resume_unwind(panic),
                            Err(_) => break,
                        }
                    }
                };
                match next {
                    Ok(Some(chunk)) => {
                        // Stopping lets a chunk under way finish, within the drain: cutting it
                        // short would leave its published lines unacknowledged.
                        let shipped = tokio::select! {
                            r = self.ship(chunk) => Some(r),
                            () = drain_over(&mut stop, &mut until) => None,
                        };
                        match shipped {
                            Some(Ok(())) => {
                                self.recovered();
                                self.persist(false).await;
                            }
                            Some(Err(e)) => {
                                self.publish_failed(&e);
                                reader.seek(self.acked.clone());
                                // Lines acknowledged before the failure are kept as usual.
                                self.persist(false).await;
                            }
                            // The drain's time is up; what is acknowledged so far is kept.
                            None => {}
                        }
                        continue;
                    }
                    // Draining, and every line written is acknowledged.
                    Ok(None) if until.is_some() => {
                        self.caught_up(&reader);
                        break;
                    }
                    Ok(None) => {
                        self.caught_up(&reader);
                        // Read to its end: a read that failed before works again (a failed
                        // publish ends only with one that succeeds).
                        if self.failure.as_ref().is_some_and(|f| !f.publishing) {
                            self.recovered();
                        }
                        self.persist(false).await;
                        POLL
                    }
                    // An episode like a failed publish: counted, behind, retried with backoff.
                    Err(source) => {
                        self.failed(&ReadError {
                            at: self.acked.clone(),
                            source,
                        });
                        continue;
                    }
                }
            };
            // Waiting for clicks (or for a retry) keeps the connection answering the server's
            // pings: a quiet night would otherwise end with the server dropping it as stale.
            tokio::select! {
                () = self.nats.idle(wait) => {}
                () = stopped_or_drain_over(&mut stop, &mut until) => {}
            }
        }
        self.persist(true).await;
        self.report_stop().await;
    }

    /// Logs where shipping stopped and how much of the log the stream does not have yet.
    async fn report_stop(&self) {
        let (dir, acked) = (self.dir.clone(), self.acked.clone());
        let left =
            tokio::task::spawn_blocking(move || Reader::new(&dir, acked, 0).unshipped_bytes())
                .await;
        match left {
            Ok(Ok(0)) => {
                tracing::info!(at = %self.acked, "click shipper stopped; every click is shipped")
            }
            Ok(Ok(bytes)) => tracing::warn!(
                at = %self.acked,
                unshipped_bytes = bytes,
                "click shipper stopped with clicks not shipped yet: they stay in the log and are \
                 shipped at the next start"
            ),
            Ok(Err(e)) => tracing::warn!(
                at = %self.acked,
                error = %e,
                "click shipper stopped; reading how much is left unshipped failed"
            ),
            Err(e) => tracing::error!(
                at = %self.acked,
                error = %e,
                "click shipper stopped; reading how much is left unshipped panicked"
            ),
        }
    }

    /// Publishes the lines of `chunk`, waiting for their acknowledgements in order. A line the
    /// server would not take ([`PublishError::TooLarge`]) ends it, after the acknowledgements
    /// of the lines before it: those are written, and were they dropped unacknowledged, every
    /// retry would publish them again.
    /// Caught up with the log: a file the reader moved past without a chunk (a finished file's
    /// partial last line skipped, or a file gone) is behind the checkpoint too, as at the first
    /// chunk of the next file ([`Shipper::ship`]). Left in the file before, the lag counted the
    /// skipped bytes (and the partial line's time as the oldest unshipped click) until the next
    /// click came, and retention kept the file.
    fn caught_up(&mut self, reader: &Reader) {
        let at = reader.position();
        if at.offset == 0 && at.file > self.acked.file {
            self.acked = at.clone();
            self.dirty_since.get_or_insert_with(Instant::now);
        }
    }

    async fn ship(&mut self, chunk: reader::Chunk) -> Result<(), PublishError> {
        if chunk.start.offset == 0 && chunk.start.file > self.acked.file {
            // The reader moves on to a file only past the end of the one before (or past what
            // is gone of it), and every chunk before this one is acknowledged: the checkpoint
            // moves to this file at once. Left at the end of the file before, it would name a
            // file retention may delete, shipped whole, which a restart would take for one
            // deleted before it was shipped.
            self.acked = chunk.start.clone();
            self.dirty_since.get_or_insert_with(Instant::now);
        }
        let file = chunk.start.file.clone();
        let mut offset = chunk.start.offset;
        let mut in_flight = VecDeque::with_capacity(MAX_IN_FLIGHT);
        let bytes = chunk.bytes;
        let mut from = 0;
        while from < bytes.len() {
            let len = memchr::memchr(b'\n', &bytes[from..]).map_or(bytes.len() - from, |i| i + 1);
            let line = &bytes[from..from + len];
            from += len;
            offset += len as u64;
            if in_flight.len() >= MAX_IN_FLIGHT
                && let Some((end, n)) = in_flight.pop_front()
            {
                let ack = self.nats.ack(n).await?;
                self.acked(ack, &file, end);
            }
            let id = line_click_id(line);
            let payload = line.strip_suffix(b"\n").unwrap_or(line);
            let n = match self.nats.publish(id, payload).await {
                Ok(n) => n,
                Err(e @ PublishError::TooLarge { .. }) => {
                    while let Some((end, n)) = in_flight.pop_front() {
                        let ack = self.nats.ack(n).await?;
                        self.acked(ack, &file, end);
                    }
                    // The next attempt connects again and reads the server's limit anew.
                    self.nats.disconnect();
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            in_flight.push_back((offset, n));
        }
        while let Some((end, n)) = in_flight.pop_front() {
            let ack = self.nats.ack(n).await?;
            self.acked(ack, &file, end);
        }
        Ok(())
    }

    /// The stream acknowledged the line ending at `end` of `file`.
    fn acked(&mut self, ack: Ack, file: &str, end: u64) {
        self.metrics.shipped.inc();
        if ack.duplicate {
            self.metrics.duplicates.inc();
        } else {
            if ack.seq <= self.last_seq {
                tracing::warn!(
                    stream = %self.nats.target().stream,
                    was = self.last_seq,
                    now = ack.seq,
                    resume = %self.acked,
                    "stream was recreated (its sequence went back): shipping resumes from the \
                     checkpoint; clicks acknowledged before are only in the old stream"
                );
            }
            self.last_seq = ack.seq;
        }
        if self.acked.file != file {
            self.acked.file = file.to_owned();
        }
        self.acked.offset = end;
        self.dirty_since.get_or_insert_with(Instant::now);
    }

    /// Persists the acknowledged position if it moved and the last write is old enough (or
    /// `now`).
    async fn persist(&mut self, now: bool) {
        let Some(since) = self.dirty_since else {
            return;
        };
        if !now && since.elapsed() < CHECKPOINT_EVERY {
            return;
        }
        let (cp, pos) = (self.checkpoint.clone(), self.acked.clone());
        let stored = tokio::task::spawn_blocking(move || cp.store(&pos)).await;
        let failed = match stored {
            Ok(Ok(())) => {
                self.dirty_since = None;
                self.progress.set_shipped(self.acked.clone());
                if std::mem::take(&mut self.checkpoint_failing) {
                    tracing::info!(at = %self.acked, "the shipping checkpoint is written again");
                }
                return;
            }
            Ok(Err(e)) => errors::chain(&e),
            Err(e) => format!("{e} (a panic)"),
        };
        // Tried again a CHECKPOINT_EVERY later, not at every poll; said once (until it is
        // written), not 50 times a second while the disk is full.
        self.dirty_since = Some(Instant::now());
        if std::mem::replace(&mut self.checkpoint_failing, true) {
            tracing::debug!(error = %failed, "writing the shipping checkpoint");
        } else {
            tracing::error!(
                error = %failed,
                "writing the shipping checkpoint: tried again every {CHECKPOINT_EVERY:?}, and until it is written, shipped files cannot be deleted and a restart re-publishes from the last one written (deduplicated by the stream within its window)"
            );
        }
    }

    /// Unshipped bytes, the age of the oldest unshipped click, and whether that is behind.
    ///
    /// Also marks the checkpoint at the end of its file ([`Position::END`], persisted at once)
    /// when that file is finished and acknowledged to its last byte: retention may then delete
    /// it, and a shipper that starts after it is gone knows it was shipped whole.
    async fn update_stats(&mut self) {
        let (dir, acked, now) = (self.dir.clone(), self.acked.clone(), self.clock.now());
        let stats = tokio::task::spawn_blocking(move || {
            let acked = at_end_if_finished(&dir, acked);
            unshipped(&dir, acked.clone(), now).map(|stats| (acked, stats))
        })
        .await;
        let Ok(Ok((acked, (bytes, age)))) = stats else {
            return;
        };
        if acked != self.acked {
            self.acked = acked;
            self.dirty_since.get_or_insert_with(Instant::now);
            self.persist(true).await;
        }
        self.metrics
            .unshipped_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.metrics
            .oldest_unshipped_seconds
            .set(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
        self.progress
            .set_behind(self.failure.is_some() || age >= BEHIND_AFTER);
    }
}

/// The click log could not be read to ship it.
#[derive(Debug, thiserror::Error)]
#[error(
    "reading the click log at {at} to ship it (the edge must be able to read its click \
     directory and every file in it: check their owner and mode)"
)]
struct ReadError {
    at: Position,
    #[source]
    source: std::io::Error,
}

/// Resolves when the final drain's time is up: [`FINAL_DRAIN`] after `stop` turned true, which
/// sets `until` if it is not set yet.
async fn drain_over(stop: &mut watch::Receiver<bool>, until: &mut Option<Instant>) {
    let at = stop_seen(stop, until).await;
    tokio::time::sleep_until(at.into()).await;
}

/// Resolves when `stop` turns true (setting `until`), or once draining, when its time is up.
async fn stopped_or_drain_over(stop: &mut watch::Receiver<bool>, until: &mut Option<Instant>) {
    match *until {
        None => _ = stop_seen(stop, until).await,
        Some(at) => tokio::time::sleep_until(at.into()).await,
    }
}

/// Waits for `stop` to be true; the end of the final drain, set in `until` when it is not yet.
async fn stop_seen(stop: &mut watch::Receiver<bool>, until: &mut Option<Instant>) -> Instant {
    if let Some(at) = *until {
        return at;
    }
    // An error: the sender is gone, which stops the shipper as well.
    let _ = stop.wait_for(|s| *s).await;
    *until.insert(Instant::now() + FINAL_DRAIN)
}

#[cfg(test)]
mod tests;
