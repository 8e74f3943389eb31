//! The batcher: one thread per sink that drains the [`ClickQueue`], encodes clicks into lines and
//! hands them to a [`ClickSink`] in batches. Everything about clicks in flight lives here, for any
//! sink; the sink only writes.
//!
//! Group commit: the batcher takes everything queued (up to [`BATCH_BYTES`]) and hands it over as
//! one [`Batch`]. Buffered clicks wait at most `flush_interval` for that; until then the thread
//! sleeps rather than waking per click, and the queue wakes it early when a quarter full. A batch
//! holding a synced click is written at once as a durable batch, and then every synced click in
//! it is acknowledged.
//!
//! Click lines are counted by verdict when written (`clickedge_clicks_by_verdict_total`), so the
//! counts are those of the log: a click refused or dropped is in none of them, its client's retry
//! once. A click that is not logged is marked as such in `handles`, so no revision names it.
//!
//! Failure (the sink returns an error): synced clicks of the batch are refused; buffered clicks
//! are held in memory, up to `max_buffered_bytes`, and the batch is retried with a backoff of at
//! most [`MAX_RETRY_BACKOFF`]. Past the bound new buffered clicks are dropped and counted. The
//! first successful write puts everything held in the sink, in arrival order. One log line starts
//! a failure episode and one ends it, whatever the number of retries.
//!
//! [`ClickWriter::close`] drains the queue, makes one last attempt, and closes the sink. Deadlines
//! here are monotonic ([`Instant`]); wall-clock time only reaches the clicks through the queue.

mod handles;
mod pending;

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::IntCounter;

use super::id::{ClickId, ClickIds};
use super::opens::SeenOpens;
use super::queue::{Ack, Msg, Queued};
use super::verdict::{Class, Revision};
use super::{ClickEvent, ClickQueue, ClickRejected, ClickSink};
use crate::clock::Clock;
use crate::config::{Durability, NodeId};
use crate::errors;
use crate::metrics::Metrics;
use handles::{Handles, Lost};
use pending::{Pending, Waiter, refuse};

/// Suggested [`BatchConfig::max_buffered_bytes`]: 64 MiB, some 150 000 clicks of 450 bytes.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 64 << 20;

/// A batch is written once it reaches this size, whatever the flush interval.
const BATCH_BYTES: usize = 1 << 20;

/// Longest wait between two write attempts while the sink is failing.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// Settings of the batcher, whatever the sink.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Longest time a buffered click waits before it is written.
    pub flush_interval: Duration,
    /// Queue capacity.
    pub queue_capacity: usize,
    /// What [`ClickQueue::record`] does: `Buffered` returns at once, `Synced` waits until the
    /// click is written and durable.
    pub durability: Durability,
    /// Encoded clicks held in memory while the sink is failing, in bytes; past it new buffered
    /// clicks are dropped (counted) and synced ones refused. See [`DEFAULT_MAX_BUFFERED_BYTES`].
    pub max_buffered_bytes: usize,
    /// The ids the clicks get, in the order they are encoded: the node's, going on from the
    /// sequence number after the newest line of the log (see [`ClickIds`]).
    pub ids: ClickIds,
}

impl Default for BatchConfig {
    /// The defaults of the `[clicks]` config section.
    fn default() -> Self {
        BatchConfig {
            flush_interval: Duration::from_millis(100),
            queue_capacity: 65_536,
            durability: Durability::Buffered,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            ids: ClickIds::new(NodeId::host(), 1),
        }
    }
}

/// The batcher thread could not be spawned.
#[derive(Debug, thiserror::Error)]
#[error("starting the click writer thread")]
pub struct StartError(#[source] std::io::Error);

/// The running batcher thread. [`ClickWriter::close`] writes everything queued and stops it.
pub struct ClickWriter {
    pub(super) tx: SyncSender<Queued>,
    pub(super) thread: JoinHandle<bool>,
}

impl ClickWriter {
    /// Starts the batcher thread over `sink`; returns it and the queue for the request path,
    /// which stamps clicks with `clock`.
    pub fn start<S: ClickSink>(
        sink: S,
        config: BatchConfig,
        metrics: Metrics,
        clock: Clock,
    ) -> Result<(ClickWriter, ClickQueue), StartError> {
        let (tx, rx) = sync_channel(config.queue_capacity);
        let (capacity, durability) = (config.queue_capacity, config.durability);
        let seen = Arc::new(SeenOpens::default());
        let thread = spawn(sink, config, metrics.clone(), rx, seen.clone())?;
        let writer = thread.thread().clone();
        let queue = ClickQueue::new(
            tx.clone(),
            metrics,
            durability,
            writer,
            capacity,
            clock,
            seen,
        );
        Ok((ClickWriter { tx, thread }, queue))
    }

    /// Writes every click queued so far, closes the sink, and stops the thread. Blocks; call from
    /// a blocking context. If the sink is failing, makes one last attempt; clicks it cannot write
    /// are counted as dropped. `false` if the sink could not make what it took durable as it
    /// closed (a file's fsync failed; logged): its clicks may not be on disk.
    pub fn close(self) -> bool {
        // A blocking send: if the queue is full this waits for the writer to make room, so the
        // stop marker lands after every click already queued. The writer may be asleep until
        // its flush deadline: wake it first to make that room, and again to see the marker.
        let writer = self.thread.thread();
        writer.unpark();
        let sent = self.tx.send(Queued::stop()).is_ok();
        writer.unpark();
        if !sent {
            return true;
        }
        self.thread.join().unwrap_or_else(|_| {
            tracing::error!("click writer panicked");
            true
        })
    }
}

/// Starts the batcher thread over `sink`, draining `rx`; it unmarks in `seen` the messages of
/// the lines it drops.
pub(super) fn spawn<S: ClickSink>(
    sink: S,
    config: BatchConfig,
    metrics: Metrics,
    rx: Receiver<Queued>,
    seen: Arc<SeenOpens>,
) -> Result<JoinHandle<bool>, StartError> {
    let batcher = Batcher::new(sink, config, metrics.clone(), seen);
    std::thread::Builder::new()
        .name("clickedge-clicks".into())
        .spawn(move || {
            // A panic (a bug) must not leave the edge reporting a healthy sink: the clicks from
            // now on are refused by the closed queue and counted as dropped (those it left in the
            // queue count themselves, see `Queued`), and this says why.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| batcher.run(rx)))
                .unwrap_or_else(|_| {
                    metrics.click_sink_healthy.set(0);
                    tracing::error!(
                        "the click writer panicked: the clicks it held are lost, and none is written from now on (each counted in clickedge_clicks_dropped_total); restart the edge"
                    );
                    true
                })
        })
        .map_err(StartError)
}

/// A failure episode: from the first failed write to the next successful one.
struct Failure {
    since: Instant,
    retry_at: Instant,
    backoff: Duration,
    /// Buffered clicks dropped past the memory bound during this episode.
    dropped: u64,
}

struct Batcher<S> {
    sink: S,
    config: BatchConfig,
    metrics: Metrics,
    /// The batch being built, or held while the sink fails.
    pending: Pending,
    failure: Option<Failure>,
    /// The click ids of judged clicks, for revisions to name them.
    handles: Handles,
    /// `clickedge_clicks_by_verdict_total`, in the order of [`Class::ALL`], resolved once.
    by_verdict: [IntCounter; 3],
    /// Messages seen opened ([`ClickQueue::seen`]).
    seen: Arc<SeenOpens>,
}

impl<S: ClickSink> Batcher<S> {
    fn new(sink: S, config: BatchConfig, metrics: Metrics, seen: Arc<SeenOpens>) -> Batcher<S> {
        metrics.click_sink_healthy.set(1);
        let by_verdict =
            Class::ALL.map(|c| metrics.clicks_by_verdict.with_label_values(&[c.as_str()]));
        Batcher {
            sink,
            config,
            pending: Pending::new(&metrics),
            metrics,
            failure: None,
            handles: Handles::new(),
            by_verdict,
            seen,
        }
    }

    /// Waits for work, batches it and writes it. With clicks in the batch the thread sleeps until
    /// the batch is due instead of watching the queue, so buffered clicks queue up without waking
    /// it one by one; [`ClickQueue`] wakes it early for a synced click, the stop marker, or a
    /// queue a quarter full.
    fn run(mut self, rx: Receiver<Queued>) -> bool {
        loop {
            let mut stop = match self.wake_at() {
                None => self.idle(&rx),
                Some(at) => {
                    std::thread::park_timeout(at.saturating_duration_since(Instant::now()));
                    false
                }
            };
            // Group commit: whatever is already queued joins this batch. While the sink fails the
            // batch is held, not written, so it keeps taking past BATCH_BYTES (`take` drops past
            // `max_buffered_bytes`), or the queue would fill and the stop marker never be seen;
            // at most a queue's worth per pass, so a flood cannot put off the retry.
            let mut taken = 0;
            while !stop
                && (self.pending.bytes() < BATCH_BYTES || self.failure.is_some())
                && taken < self.config.queue_capacity
            {
                match rx.try_recv() {
                    Ok(msg) => stop = self.accept(msg),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => stop = true,
                }
                taken += 1;
            }
            if stop {
                // Clones of the queue may have pushed after the stop marker; take those too.
                // Then close the queue before the last write: a click pushed from now on (a
                // connection still open after the shutdown grace) is refused and counted as
                // dropped, not left in a queue nobody reads. One that lands after the last
                // `try_recv` and before the receiver drops is dropped unread with it, and counts
                // itself (`Queued`): nothing queued is lost uncounted.
                while let Ok(msg) = rx.try_recv() {
                    self.accept(msg);
                }
                drop(rx);
                return self.finish();
            }
            self.step(Instant::now());
        }
    }

    /// With nothing to write: waits for a message, doing the sink's own timed work (closing a
    /// file at its age limit) when it comes due first. True for the stop marker or a queue gone.
    fn idle(&mut self, rx: &Receiver<Queued>) -> bool {
        loop {
            let received = match self.sink.due() {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            match received {
                Ok(msg) => return self.accept(msg),
                Err(RecvTimeoutError::Timeout) => self.sink.tick(),
                Err(RecvTimeoutError::Disconnected) => return true,
            }
        }
    }

    /// When the thread must act without a new message: the flush deadline, or the next retry.
    fn wake_at(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        match &self.failure {
            Some(f) => Some(f.retry_at),
            None => self.pending.due_at(),
        }
    }

    /// Adds a message to the batch; true for the stop marker.
    fn accept(&mut self, msg: Queued) -> bool {
        let (event, ack) = match msg.take() {
            Msg::Click(event) => (event, None),
            Msg::Synced(event, ack) => (event, Some(ack)),
            Msg::Revision(revision) => {
                match self.handles.resolve(*revision) {
                    Ok((seq, revision)) => self.revise(&revision, seq),
                    Err(Lost(true)) => self.metrics.verdict_revisions_lost.inc(),
                    Err(Lost(false)) => {}
                }
                return false;
            }
            Msg::Stop => return true,
        };
        self.take(&event, ack);
        // Counted out of the queue last, once the click is batched, dropped or refused: whoever
        // sees the queue empty sees every other counter settled.
        self.metrics.clicks_queued.dec();
        false
    }

    /// Encodes a click into the batch, or drops (refuses) it past the memory bound while failing.
    fn take(&mut self, event: &ClickEvent, ack: Option<Ack>) {
        let bound = self
            .failure
            .is_some()
            .then_some(self.config.max_buffered_bytes);
        let pushed = self.pending.push(
            event,
            self.config.ids.peek(),
            ack,
            bound,
            self.config.flush_interval,
        );
        let handle = event.verdict.as_ref().and_then(|v| v.handle);
        if pushed.is_ok() {
            let seq = self.config.ids.peek().seq();
            self.config.ids.advance();
            if let Some(handle) = handle {
                for revision in self.handles.encoded(handle, seq) {
                    self.revise(&revision, seq);
                }
            }
        } else if let Some(handle) = handle {
            self.unlogged(handle);
        }
        match pushed {
            Ok(()) if self.failure.is_some() => {
                self.metrics
                    .click_sink_held_bytes
                    .set(gauge(self.pending.bytes()));
            }
            Ok(()) => {}
            Err(Some(ack)) => {
                self.metrics.clicks_rejected.inc();
                // The waiter may have gone (client hung up); nothing to tell then.
                let _ = ack.send(Err(ClickRejected::SinkUnavailable));
            }
            Err(None) => {
                self.metrics.clicks_dropped.inc();
                // Not in the log: its open, seen or implied, is not either.
                if event.marked_seen
                    && let Some(m) = &event.message
                {
                    self.seen.forget(event.domain.as_str(), &m.message);
                }
                if let Some(failure) = &mut self.failure {
                    if failure.dropped == 0 {
                        tracing::error!(
                            max_buffered_bytes = self.config.max_buffered_bytes,
                            "click sink still failing and its memory bound is reached: dropping new clicks"
                        );
                    }
                    failure.dropped += 1;
                }
            }
        }
    }

    /// The click judged under `handle` is not logged: its revisions are lost (counted), the
    /// waiting ones now and any later one at once.
    fn unlogged(&mut self, handle: u64) {
        let lost = self.handles.unlogged(handle);
        self.metrics.verdict_revisions_lost.inc_by(lost);
    }

    /// Encodes a revision of click `seq` into the batch, after that click; past the memory bound
    /// while failing it is lost (counted).
    fn revise(&mut self, revision: &Revision, seq: u64) {
        let bound = self
            .failure
            .is_some()
            .then_some(self.config.max_buffered_bytes);
        let ids = &self.config.ids;
        let revises = ClickId::new(ids.node(), seq);
        if self.pending.push_revision(
            revision,
            revises,
            ids.peek(),
            bound,
            self.config.flush_interval,
        ) {
            self.config.ids.advance();
        } else {
            self.metrics.verdict_revisions_lost.inc();
        }
    }

    /// Writes the batch if it is due; while failing and no retry is due, refuses synced clicks at
    /// once rather than letting them wait for a sink that is not there.
    fn step(&mut self, now: Instant) {
        if self.pending.is_empty() {
            return;
        }
        let write_now = match &self.failure {
            None => {
                self.pending.has_synced()
                    || self.pending.bytes() >= BATCH_BYTES
                    || self.pending.due_at().is_some_and(|at| now >= at)
            }
            Some(f) => now >= f.retry_at,
        };
        if write_now {
            self.flush();
        } else if self.failure.is_some() {
            self.refuse_synced();
        }
    }

    /// Hands the batch to the sink.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        match self.sink.write(&self.pending.batch()) {
            Ok(()) => self.written(),
            Err(e) => self.failed(&e),
        }
    }

    /// The batch is in the sink (and durable, if it held synced clicks).
    fn written(&mut self) {
        // Every counter and gauge is settled before the first acknowledgement, so a waiter that
        // looks at the metrics sees the state that acknowledged it.
        if let Some(failure) = self.failure.take() {
            self.metrics.click_sink_healthy.set(1);
            self.metrics.click_sink_held_bytes.set(0);
            tracing::info!(
                sink = %self.sink.target(),
                failing_for = ?failure.since.elapsed(),
                written = self.pending.clicks(),
                dropped = failure.dropped,
                "click sink recovered: held clicks written"
            );
        }
        self.metrics.clicks_logged.inc_by(self.pending.clicks());
        for (counter, n) in self.by_verdict.iter().zip(self.pending.verdicts()) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
        self.metrics
            .verdict_revisions
            .inc_by(self.pending.revisions());
        self.pending.written();
    }

    /// The batch could not be written: refuse its synced clicks, hold the rest, schedule a retry.
    fn failed(&mut self, e: &S::Error) {
        self.metrics.click_sink_errors.inc();
        let refused = self.take_synced();
        let now = Instant::now();
        match &mut self.failure {
            None => {
                tracing::error!(
                    sink = %self.sink.target(),
                    error = %errors::chain(e),
                    held = self.pending.clicks(),
                    refused = refused.len(),
                    "writing clicks failed: holding buffered clicks in memory, refusing synced ones, retrying"
                );
                self.metrics.click_sink_healthy.set(0);
                let backoff = self.config.flush_interval.min(MAX_RETRY_BACKOFF);
                self.failure = Some(Failure {
                    since: now,
                    retry_at: now + backoff,
                    backoff,
                    dropped: 0,
                });
            }
            Some(failure) => {
                tracing::debug!(error = %errors::chain(e), "click sink still failing");
                failure.backoff = (failure.backoff * 2).min(MAX_RETRY_BACKOFF);
                failure.retry_at = now + failure.backoff;
            }
        }
        refuse(refused);
    }

    /// Refuses the synced clicks of the batch (no write is due while the sink is failing).
    fn refuse_synced(&mut self) {
        if self.pending.has_synced() {
            let refused = self.take_synced();
            refuse(refused);
        }
    }

    /// Takes the synced clicks out of the batch, counting them as rejected (and the revision
    /// lines naming them as lost: no revision of them is ever written) and updating the held
    /// bytes. The caller refuses them once every gauge is settled, so a waiter that looks at the
    /// metrics sees the state that refused it.
    fn take_synced(&mut self) -> Vec<Waiter> {
        let (refused, revisions) = self.pending.take_synced();
        self.metrics.clicks_rejected.inc_by(refused.len() as u64);
        self.metrics.verdict_revisions_lost.inc_by(revisions);
        for handle in refused.iter().filter_map(Waiter::handle) {
            self.unlogged(handle);
        }
        self.metrics
            .click_sink_held_bytes
            .set(gauge(self.pending.bytes()));
        refused
    }

    /// Shutdown: one last attempt, even inside a retry backoff, then close the sink; whether it
    /// closed durably.
    fn finish(mut self) -> bool {
        self.flush();
        let held = self.pending.clicks();
        // Revisions held with the batch, and those whose click never came.
        self.metrics
            .verdict_revisions_lost
            .inc_by(self.pending.revisions() + self.handles.waiting());
        if held > 0 {
            self.metrics.clicks_dropped.inc_by(held);
            tracing::error!(
                sink = %self.sink.target(),
                dropped = held,
                "click sink still failing at shutdown: held clicks dropped"
            );
        }
        // The sink logged what it could not finish.
        self.sink.close().is_ok()
    }
}

fn gauge(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
