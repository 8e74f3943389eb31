//! The request path's end of the click pipeline: [`ClickQueue`], a non-blocking send into the
//! bounded queue the batcher thread drains, and the accounting of every click it cannot take
//! (dropped when buffered, rejected when synced) or is not to log (past the per-address rate,
//! [`ClickQueue::admit`]).
//!
//! The queue never waits for room and never does I/O. It wakes the batcher only when it must act
//! before its flush deadline: for a synced click, or once the queue is a quarter full.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::Thread;

use tokio::sync::oneshot;

use super::ClickEvent;
use super::rate::AddressRate;
use super::verdict::{Revise, Revision};
use crate::clock::Clock;
use crate::config::Durability;
use crate::metrics::Metrics;

/// Why a synced click was not acknowledged. Fieldless, so refusing costs no allocation on the
/// request path; the caller answers 503 for every variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClickRejected {
    /// The queue to the writer is full: the sink is not keeping up with the click rate.
    #[error("click queue full")]
    QueueFull,
    /// The sink cannot write (disk full, directory missing or unwritable); the writer logs why.
    #[error("click sink unavailable")]
    SinkUnavailable,
    /// The writer has stopped (shutdown).
    #[error("click writer stopped")]
    Stopped,
}

/// How the writer tells a synced click's waiter that the click is durable, or why not.
pub(super) type Ack = oneshot::Sender<Result<(), ClickRejected>>;

/// What the queue carries to the writer.
pub(super) enum Msg {
    /// A buffered click: written within the flush interval, nobody waits for it.
    Click(Box<ClickEvent>),
    /// A synced click: written and synced at once, then acknowledged (or refused) through the
    /// sender.
    Synced(Box<ClickEvent>, Ack),
    /// A later judgement of an earlier click, written as a buffered line after that click.
    Revision(Box<Revision>),
    /// Write everything queued so far, flush, and stop.
    Stop,
}

/// The request path's end of the click queue. Cheap to clone.
#[derive(Clone)]
pub struct ClickQueue {
    tx: SyncSender<Msg>,
    metrics: Metrics,
    durability: Durability,
    /// The writer thread. It sleeps while a batch waits for its flush deadline; a push wakes it
    /// only when it must act sooner (a synced click, or `wake_depth` clicks queued).
    writer: Thread,
    wake_depth: i64,
    /// The clock clicks are stamped with (see [`ClickQueue::clock`]) and the log lines below are
    /// rate-limited by.
    clock: Clock,
    /// The "queue full" log line.
    full_log: LogThrottle,
    /// The "writer stopped" log line (clicks answered after shutdown closed the queue).
    stopped_log: LogThrottle,
    /// The per-address rate bound, if any ([`ClickQueue::with_rate_per_address`]).
    rate: Option<Arc<AddressRate>>,
    /// The "over the per-address rate" log line.
    rate_log: LogThrottle,
}

/// At most one log line a second for an event, however often it happens (each occurrence is
/// counted in a metric): the Unix second of the last line.
#[derive(Clone, Default)]
struct LogThrottle(Arc<AtomicU64>);

impl LogThrottle {
    /// Whether a line may be logged now; if so, none more this second.
    fn ready(&self, clock: &Clock) -> bool {
        let now = clock.unix_secs();
        // A load first: under a flood, every caller but one a second only reads the line.
        self.0.load(Ordering::Relaxed) != now && self.0.swap(now, Ordering::Relaxed) != now
    }
}

impl ClickQueue {
    /// A queue of `capacity` into the writer thread `writer`.
    pub(super) fn new(
        tx: SyncSender<Msg>,
        metrics: Metrics,
        durability: Durability,
        writer: Thread,
        capacity: usize,
        clock: Clock,
    ) -> ClickQueue {
        ClickQueue {
            tx,
            metrics,
            durability,
            writer,
            // A quarter full: early enough that the queue never fills while the writer sleeps,
            // late enough that a busy edge wakes it a few times per flush interval, not per click.
            wake_depth: i64::try_from(capacity / 4).unwrap_or(i64::MAX).max(1),
            clock,
            full_log: LogThrottle::default(),
            stopped_log: LogThrottle::default(),
            rate: None,
            rate_log: LogThrottle::default(),
        }
    }

    /// Logs at most `per_sec` clicks a second from one client address (IPv6: one /64), in
    /// bursts of up to `per_sec`; see [`ClickQueue::admit`].
    pub fn with_rate_per_address(mut self, per_sec: NonZeroU32) -> ClickQueue {
        self.rate = Some(Arc::new(AddressRate::new(per_sec)));
        self
    }

    /// Whether a click from `ip` is to be logged: false past the per-address rate, if one is set.
    /// Such a click is still redirected, just not logged; it is counted in
    /// `clickedge_clicks_unlogged_total{reason="rate"}` (with a warning at most once a second),
    /// never silently. Ask before building the [`ClickEvent`], so a flood costs no allocation.
    pub fn admit(&self, ip: IpAddr) -> bool {
        let Some(rate) = &self.rate else {
            return true;
        };
        if rate.admit(ip) {
            return true;
        }
        self.metrics.clicks_unlogged_rate.inc();
        if self.rate_log.ready(&self.clock) {
            tracing::warn!(
                address = %ip,
                unlogged_total = self.metrics.clicks_unlogged_rate.get(),
                "clicks over clicks.max_clicks_per_ip_per_sec: redirected but not logged \
                 (counted in clickedge_clicks_unlogged_total{{reason=\"rate\"}})"
            );
        }
        false
    }

    fn log_full(&self) {
        if self.full_log.ready(&self.clock) {
            tracing::warn!(
                dropped_total = self.metrics.clicks_dropped.get(),
                "click queue full: clicks are being dropped (counted in clickedge_clicks_dropped_total)"
            );
        }
    }

    /// The durability the sink was configured with, which [`ClickQueue::record`] follows.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The clock of the click pipeline, the one the writer was started with: what the request
    /// path stamps a click's [`ClickEvent::ts`] with.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Logs a click the configured way: [`ClickQueue::push`] when buffered (`Ok`, saying
    /// whether it was queued or dropped), [`ClickQueue::push_synced`] when synced (`Ok(true)`
    /// once written). On `Err` the caller must not acknowledge the click (answer 503).
    pub async fn record(&self, event: ClickEvent) -> Result<bool, ClickRejected> {
        match self.durability {
            Durability::Buffered => Ok(self.push(event)),
            Durability::Synced => self.push_synced(event).await.map(|()| true),
        }
    }

    /// Queues a click without blocking and without waiting for it to be written; a full or closed
    /// queue counts a drop. True if it was queued: what the click said (an open seen, say) must
    /// not be remembered for a click that was dropped.
    pub fn push(&self, event: ClickEvent) -> bool {
        // Counted before the send so the writer's decrement can never run first and take the
        // gauge below zero.
        self.metrics.clicks_queued.inc();
        match self.tx.try_send(Msg::Click(Box::new(event))) {
            Ok(()) => {
                if self.metrics.clicks_queued.get() >= self.wake_depth {
                    self.writer.unpark();
                }
                true
            }
            Err(TrySendError::Full(_)) => {
                self.metrics.clicks_queued.dec();
                self.metrics.clicks_dropped.inc();
                self.log_full();
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.clicks_queued.dec();
                self.metrics.clicks_dropped.inc();
                if self.stopped_log.ready(&self.clock) {
                    tracing::error!(
                        dropped_total = self.metrics.clicks_dropped.get(),
                        "click writer stopped: clicks are being dropped (counted in clickedge_clicks_dropped_total)"
                    );
                }
                false
            }
        }
    }

    /// Queues a click without blocking, then waits until the batch holding it has been written
    /// and made durable. `Err` means the click is not known to be kept: answer 503, not 302.
    ///
    /// Cancel-safe in the sense that matters: if the caller gives up (the client hung up), a
    /// queued click is still written; only the acknowledgement goes nowhere.
    pub async fn push_synced(&self, event: ClickEvent) -> Result<(), ClickRejected> {
        let (ack, acked) = oneshot::channel();
        self.metrics.clicks_queued.inc();
        let refused = match self.tx.try_send(Msg::Synced(Box::new(event), ack)) {
            // The writer answers every synced click it takes and counts its own refusals.
            Ok(()) => {
                self.writer.unpark();
                match acked.await {
                    Ok(answer) => return answer,
                    // The writer dropped the sender unanswered: it died mid-batch.
                    Err(_) => ClickRejected::Stopped,
                }
            }
            Err(TrySendError::Full(_)) => {
                self.metrics.clicks_queued.dec();
                ClickRejected::QueueFull
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.clicks_queued.dec();
                ClickRejected::Stopped
            }
        };
        self.metrics.clicks_rejected.inc();
        Err(refused)
    }
}

/// Revisions go through the queue like buffered clicks, so the batcher writes them after the
/// click they name, through the same sink. One that cannot be queued (queue full, writer gone)
/// is counted in `clickedge_verdict_revisions_lost_total`, never silently.
impl Revise for ClickQueue {
    fn revise(&self, revision: Revision) {
        match self.tx.try_send(Msg::Revision(Box::new(revision))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.verdict_revisions_lost.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::sync_channel;

    use super::*;
    use crate::clicks::testing::{event, test_queue};

    #[test]
    fn clicks_past_the_address_rate_are_not_admitted_and_are_counted() {
        let metrics = Metrics::unregistered();
        let (tx, _rx) = sync_channel(10);
        let queue = test_queue(tx, &metrics, Durability::Buffered, 10);
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        // No bound: everything is admitted, nothing counted.
        assert!((0..100).all(|_| queue.admit(ip)));
        let queue = queue.with_rate_per_address(NonZeroU32::new(1).unwrap());
        // The first passes, then refusals, each counted (`rate.rs` tests the bucket's arithmetic
        // on explicit times; twenty calls here would need nineteen seconds to all pass).
        let admitted = (0..20).filter(|_| queue.admit(ip)).count();
        assert!((1..20).contains(&admitted), "{admitted}");
        assert_eq!(metrics.clicks_unlogged_rate.get(), 20 - admitted as u64);
        assert_eq!(metrics.clicks_queued.get(), 0);
    }

    #[test]
    fn full_queue_counts_drops() {
        let metrics = Metrics::unregistered();
        let (tx, rx) = sync_channel(2);
        let queue = test_queue(tx, &metrics, Durability::Buffered, 2);
        for i in 0..5 {
            queue.push(event(i));
        }
        assert_eq!(metrics.clicks_dropped.get(), 3);
        assert_eq!(metrics.clicks_queued.get(), 2);
        drop(rx);
    }

    #[tokio::test]
    async fn full_queue_refuses_synced_clicks_as_rejected_not_dropped() {
        let metrics = Metrics::unregistered();
        let (tx, rx) = sync_channel(1);
        let queue = test_queue(tx, &metrics, Durability::Synced, 1);
        queue.push(event(0));
        assert_eq!(
            queue.push_synced(event(1)).await,
            Err(ClickRejected::QueueFull)
        );
        assert_eq!(queue.record(event(2)).await, Err(ClickRejected::QueueFull));
        drop(rx);
        assert_eq!(
            queue.push_synced(event(3)).await,
            Err(ClickRejected::Stopped)
        );
        assert_eq!(metrics.clicks_rejected.get(), 3);
        assert_eq!(metrics.clicks_dropped.get(), 0);
        assert_eq!(metrics.clicks_queued.get(), 1);
    }
}
