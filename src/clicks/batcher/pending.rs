//! The batch being built: encoded lines in arrival order, how many (click lines also by
//! verdict), which of them are synced clicks and who waits for each, the revision lines naming
//! those, and when the oldest is due. What the batcher holds while the sink fails is this, so its
//! size in bytes is the memory bound.
//!
//! Bookkeeping only: when to write, and every counter, are the batcher's.

use std::ops::Range;
use std::time::{Duration, Instant};

use prometheus::IntCounter;

use crate::clicks::id::ClickId;
use crate::clicks::queue::Ack;
use crate::clicks::verdict::{Class, Revision};
use crate::clicks::{Batch, ClickEvent, ClickRejected};
use crate::metrics::Metrics;

/// A synced click in the batch: its bytes in [`Pending::buf`] and who waits for it.
pub(super) struct Waiter {
    lines: Range<usize>,
    ack: Ack,
    /// Its sequence number, for the revision lines that name it.
    seq: u64,
    /// Its verdict handle, if a revision may name it.
    handle: Option<u64>,
    /// What it counts in [`Pending::verdicts`].
    verdict: Option<Class>,
}

impl Waiter {
    /// The click's verdict handle, if a revision may name it.
    pub(super) fn handle(&self) -> Option<u64> {
        self.handle
    }
}

pub(super) struct Pending {
    /// `clicks_dropped`, `verdict_revisions_lost` and `clicks_rejected`, for what a panic loses
    /// (see the `Drop`).
    lost: (IntCounter, IntCounter, IntCounter),
    /// Encoded lines not yet written, in arrival order.
    buf: Vec<u8>,
    /// Clicks in `buf`.
    clicks: u64,
    /// Revision lines in `buf`.
    revisions: u64,
    /// Click lines in `buf` by verdict, in the order of [`Class::ALL`] (open lines and clicks
    /// not judged in none).
    verdicts: [u64; 3],
    /// Synced clicks in `buf`, in order (so by sequence number).
    waiters: Vec<Waiter>,
    /// Revision lines in `buf` naming one of `waiters`: taken out with them.
    synced_revisions: Vec<Range<usize>>,
    /// When the oldest click in `buf` is due to be written.
    due_at: Option<Instant>,
}

impl Pending {
    pub(super) fn new(metrics: &Metrics) -> Pending {
        Pending {
            lost: (
                metrics.clicks_dropped.clone(),
                metrics.verdict_revisions_lost.clone(),
                metrics.clicks_rejected.clone(),
            ),
            buf: Vec::with_capacity(64 << 10),
            clicks: 0,
            revisions: 0,
            verdicts: [0; 3],
            waiters: Vec::new(),
            synced_revisions: Vec::new(),
            due_at: None,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Size of the encoded lines.
    pub(super) fn bytes(&self) -> usize {
        self.buf.len()
    }

    pub(super) fn clicks(&self) -> u64 {
        self.clicks
    }

    pub(super) fn revisions(&self) -> u64 {
        self.revisions
    }

    /// Click lines by verdict, in the order of [`Class::ALL`].
    pub(super) fn verdicts(&self) -> [u64; 3] {
        self.verdicts
    }

    /// Whether a synced click waits in the batch.
    pub(super) fn has_synced(&self) -> bool {
        !self.waiters.is_empty()
    }

    /// When the oldest click is due to be written (none while the batch is empty).
    pub(super) fn due_at(&self) -> Option<Instant> {
        self.due_at
    }

    /// The batch for the sink: durable if a synced click is in it.
    pub(super) fn batch(&self) -> Batch<'_> {
        Batch::new(&self.buf, self.clicks + self.revisions, self.has_synced())
    }

    /// Encodes `event` as click `id` onto the end of the batch, due `flush_interval` from now if it is the
    /// first. With a `bound`, a click whose line would take the batch past it is not kept (a tail
    /// drop: what is held stays a gapless run of the oldest clicks) and its `ack` is handed back.
    pub(super) fn push(
        &mut self,
        event: &ClickEvent,
        id: ClickId<'_>,
        ack: Option<Ack>,
        bound: Option<usize>,
        flush_interval: Duration,
    ) -> Result<(), Option<Ack>> {
        let start = self.buf.len();
        event.write_json(id, &mut self.buf);
        if bound.is_some_and(|bound| self.buf.len() > bound) {
            self.buf.truncate(start);
            return Err(ack);
        }
        self.clicks += 1;
        // A click line (not an open's) counts by the verdict it carries.
        let verdict = match (&event.open, &event.verdict) {
            (None, Some(v)) => Some(v.class),
            _ => None,
        };
        if let Some(class) = verdict {
            self.verdicts[class as usize] += 1;
        }
        if let Some(ack) = ack {
            self.waiters.push(Waiter {
                lines: start..self.buf.len(),
                ack,
                seq: id.seq(),
                handle: event.verdict.as_ref().and_then(|v| v.handle),
                verdict,
            });
        }
        self.due_at
            .get_or_insert_with(|| Instant::now() + flush_interval);
        Ok(())
    }

    /// Encodes `revision` of click `revises` as line `id`, like a buffered click (see
    /// [`Pending::push`]); `false` when it would take the batch past `bound`.
    pub(super) fn push_revision(
        &mut self,
        revision: &Revision,
        revises: ClickId<'_>,
        id: ClickId<'_>,
        bound: Option<usize>,
        flush_interval: Duration,
    ) -> bool {
        let start = self.buf.len();
        revision.write_json(revises, id, &mut self.buf);
        if bound.is_some_and(|bound| self.buf.len() > bound) {
            self.buf.truncate(start);
            return false;
        }
        self.revisions += 1;
        // It goes with its click should that be refused.
        if self
            .waiters
            .binary_search_by_key(&revises.seq(), |w| w.seq)
            .is_ok()
        {
            self.synced_revisions.push(start..self.buf.len());
        }
        self.due_at
            .get_or_insert_with(|| Instant::now() + flush_interval);
        true
    }

    /// The batch is kept: acknowledges its synced clicks and empties it.
    pub(super) fn written(&mut self) {
        for waiter in self.waiters.drain(..) {
            // The waiter may have gone (client hung up); the click is kept all the same.
            let _ = waiter.ack.send(Ok(()));
        }
        self.buf.clear();
        // Give back what a long failure episode made the buffer grow to.
        self.buf.shrink_to(2 * super::BATCH_BYTES);
        self.clicks = 0;
        self.revisions = 0;
        self.verdicts = [0; 3];
        self.synced_revisions.clear();
        self.due_at = None;
    }

    /// Takes the synced clicks out of the batch, lines and all, with the revision lines naming
    /// them (a revision of a click the log does not hold would name nothing); the buffered
    /// clicks around them stay, in order. Returns them and how many revision lines went with
    /// them; the caller counts both and then [`refuse`]s the clicks.
    pub(super) fn take_synced(&mut self) -> (Vec<Waiter>, u64) {
        if self.waiters.is_empty() {
            return (Vec::new(), 0);
        }
        let revisions = std::mem::take(&mut self.synced_revisions);
        let mut cut: Vec<Range<usize>> = self.waiters.iter().map(|w| w.lines.clone()).collect();
        cut.extend(revisions.iter().cloned());
        cut.sort_unstable_by_key(|r| r.start);
        let mut kept = Vec::with_capacity(self.buf.len());
        let mut from = 0;
        for lines in cut {
            kept.extend_from_slice(&self.buf[from..lines.start]);
            from = lines.end;
        }
        kept.extend_from_slice(&self.buf[from..]);
        self.buf = kept;
        let taken = std::mem::take(&mut self.waiters);
        self.clicks -= taken.len() as u64;
        self.revisions -= revisions.len() as u64;
        for class in taken.iter().filter_map(|w| w.verdict) {
            self.verdicts[class as usize] -= 1;
        }
        if self.buf.is_empty() {
            self.due_at = None;
        }
        (taken, revisions.len() as u64)
    }
}

impl Drop for Pending {
    /// A panic unwinding through the writer: the buffered clicks and the revision lines held are
    /// lost, and counted so; each synced click is counted as rejected here and its waiter told,
    /// as the waiter may be gone (its client hung up, or it was answered 503 when the log
    /// stalled) and could not count it.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let (dropped, revisions_lost, rejected) = &self.lost;
            dropped.inc_by(self.clicks - self.waiters.len() as u64);
            revisions_lost.inc_by(self.revisions);
            for waiter in self.waiters.drain(..) {
                rejected.inc();
                let _ = waiter.ack.send(Err(ClickRejected::Stopped));
            }
        }
    }
}

/// Tells waiters their clicks were not written.
pub(super) fn refuse(waiters: Vec<Waiter>) {
    for waiter in waiters {
        // The waiter may have gone (client hung up); nothing to tell then.
        let _ = waiter.ack.send(Err(ClickRejected::SinkUnavailable));
    }
}
