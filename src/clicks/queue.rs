//! The request path's end of the click pipeline: [`ClickQueue`], a non-blocking send into the
//! bounded queue the batcher thread drains, and the accounting of every click it cannot take
//! (dropped when buffered, rejected when synced).
//!
//! The queue never waits for room and never does I/O. It wakes the batcher only when it must act
//! before its flush deadline: for a synced click, or once the queue is a quarter full.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::Thread;

use tokio::sync::oneshot;

use super::ClickEvent;
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
    /// The clock clicks are stamped with (see [`ClickQueue::clock`]) and the "queue full" log
    /// is rate-limited by.
    clock: Clock,
    /// Unix second of the last "queue full" log line: at most one a second, however many drops
    /// (each one is counted in the metric).
    last_full_log: Arc<AtomicU64>,
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
            last_full_log: Arc::new(AtomicU64::new(0)),
        }
    }

    fn log_full(&self) {
        let now = self.clock.unix_secs();
        if self.last_full_log.swap(now, Ordering::Relaxed) != now {
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

    /// Logs a click the configured way: [`ClickQueue::push`] when buffered (always `Ok`),
    /// [`ClickQueue::push_synced`] when synced. On `Err` the caller must not acknowledge the click
    /// (answer 503).
    pub async fn record(&self, event: ClickEvent) -> Result<(), ClickRejected> {
        match self.durability {
            Durability::Buffered => {
                self.push(event);
                Ok(())
            }
            Durability::Synced => self.push_synced(event).await,
        }
    }

    /// Queues a click without blocking and without waiting for it to be written; a full or closed
    /// queue counts a drop.
    pub fn push(&self, event: ClickEvent) {
        // Counted before the send so the writer's decrement can never run first and take the
        // gauge below zero.
        self.metrics.clicks_queued.inc();
        match self.tx.try_send(Msg::Click(Box::new(event))) {
            Ok(()) => {
                if self.metrics.clicks_queued.get() >= self.wake_depth {
                    self.writer.unpark();
                }
            }
            Err(TrySendError::Full(_)) => {
                self.metrics.clicks_queued.dec();
                self.metrics.clicks_dropped.inc();
                self.log_full();
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.clicks_queued.dec();
                self.metrics.clicks_dropped.inc();
                tracing::error!("click writer stopped: click dropped");
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc::sync_channel;

    use super::*;
    use crate::clicks::testing::{event, test_queue};

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
