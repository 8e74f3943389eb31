//! The request path's end of the click pipeline: [`ClickQueue`], a non-blocking send into the
//! bounded queue the batcher thread drains, and the accounting of every click it cannot take
//! (dropped when buffered, rejected when synced) or is not to log (past the per-address rate,
//! [`ClickQueue::admit`]).
//!
//! The queue never waits for room and never does I/O. It wakes the batcher only when it must act
//! before its flush deadline: for a synced click, or once the queue is a quarter full.
//!
//! A message the queue took and the writer never did (it closed the queue at shutdown, or died)
//! counts itself when the queue discards it: see [`Queued`].

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::Thread;

use prometheus::{IntCounter, IntGauge};
use tokio::sync::oneshot;

use super::ClickEvent;
use super::opens::SeenOpens;
use super::rate::{AddressRate, OneClicks};
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
    /// The sink did not make the click durable within [`SYNCED_WAIT`] (a disk or network volume
    /// that stopped answering). The click stays queued: written once the sink answers, or
    /// refused or dropped by the writer and counted there.
    #[error("click log stalled")]
    Stalled,
}

/// Longest a synced click's request waits for its line to be durable before it is answered 503:
/// a stalled disk otherwise holds every such request, and its connection's place, for ever.
pub const SYNCED_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

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

/// A [`Msg`] in the queue, which counts itself if the writer never takes it.
///
/// The writer closes the queue at shutdown by dropping its receiver after a last look that found
/// it empty; a push can land between the two, and the channel drops what it still holds with
/// the receiver. Shutting that window with a "closed" flag would cost every push a check and the
/// writer a wait for pushes under way. Instead every message accounts for itself, by ownership:
/// once sent it belongs to the channel until either the writer receives it ([`Queued::take`],
/// after which it counts nothing) or the channel drops it (its `Drop` counts it), whatever the
/// interleaving and whichever thread drops it; exactly one of the two happens. A message the
/// channel refuses comes back to the sender, who takes it and counts it as for any full or closed
/// queue. Dropped unread, a buffered click counts as dropped, a synced one as rejected (its
/// waiter, if still there, is answered [`ClickRejected::Stopped`]), each leaving
/// `clickedge_clicks_queued`; a revision counts as lost. The same holds for what a panicking
/// writer leaves in the queue.
pub(super) struct Queued {
    msg: Msg,
    /// Where it counts itself; `None` for the stop marker, which counts nothing.
    unread: Option<&'static Unread>,
}

impl Queued {
    /// The stop marker, sent by [`super::ClickWriter::close`].
    pub(super) fn stop() -> Queued {
        Queued {
            msg: Msg::Stop,
            unread: None,
        }
    }

    /// The message, received by the writer (or refused by the channel): it no longer counts
    /// itself.
    pub(super) fn take(mut self) -> Msg {
        // `Stop` counts nothing when `self` drops.
        std::mem::replace(&mut self.msg, Msg::Stop)
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        let Some(unread) = self.unread else {
            return;
        };
        // Counted out of the queue last, as the writer does: whoever sees the queue empty sees
        // every other counter settled, the waiter too.
        match std::mem::replace(&mut self.msg, Msg::Stop) {
            Msg::Click(_) => {
                unread.dropped.inc();
                unread.queued.dec();
            }
            Msg::Synced(_, ack) => {
                unread.rejected.inc();
                unread.queued.dec();
                // The waiter may have gone (client hung up); nothing to tell then.
                let _ = ack.send(Err(ClickRejected::Stopped));
            }
            Msg::Revision(_) => unread.revisions_lost.inc(),
            Msg::Stop => {}
        }
    }
}

/// The counters a message dropped unread counts itself in (see [`Queued`]), one set per queue.
///
/// NOTE: leaked, once per queue made (the app makes one per process), so that a message carries
/// a plain reference: an `Arc` would cost an atomic increment per push and a decrement per
/// receive on a cache line every request thread shares.
pub(super) struct Unread {
    dropped: IntCounter,
    rejected: IntCounter,
    queued: IntGauge,
    revisions_lost: IntCounter,
}

impl Unread {
    fn leak(metrics: &Metrics) -> &'static Unread {
        Box::leak(Box::new(Unread {
            dropped: metrics.clicks_dropped.clone(),
            rejected: metrics.clicks_rejected.clone(),
            queued: metrics.clicks_queued.clone(),
            revisions_lost: metrics.verdict_revisions_lost.clone(),
        }))
    }
}

/// The request path's end of the click queue. Cheap to clone.
#[derive(Clone)]
pub struct ClickQueue {
    tx: SyncSender<Queued>,
    /// What a message left unread counts itself in ([`Queued`]).
    unread: &'static Unread,
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
    /// The "click log stalled" log line.
    stalled_log: LogThrottle,
    /// The per-address rate bound, if any ([`ClickQueue::with_rate_per_address`]), and the
    /// one-click unsubscribes it let past as firsts of their link.
    rate: Option<Arc<(AddressRate, OneClicks)>>,
    /// The "over the per-address rate" log line.
    rate_log: LogThrottle,
    /// Messages seen opened on this node, shared with the writer ([`ClickQueue::seen`]).
    seen: Arc<SeenOpens>,
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
        tx: SyncSender<Queued>,
        metrics: Metrics,
        durability: Durability,
        writer: Thread,
        capacity: usize,
        clock: Clock,
        seen: Arc<SeenOpens>,
    ) -> ClickQueue {
        ClickQueue {
            tx,
            unread: Unread::leak(&metrics),
            metrics,
            durability,
            writer,
            // A quarter full: early enough that the queue never fills while the writer sleeps,
            // late enough that a busy edge wakes it a few times per flush interval, not per click.
            wake_depth: i64::try_from(capacity / 4).unwrap_or(i64::MAX).max(1),
            clock,
            full_log: LogThrottle::default(),
            stopped_log: LogThrottle::default(),
            stalled_log: LogThrottle::default(),
            rate: None,
            rate_log: LogThrottle::default(),
            seen,
        }
    }

    /// Messages seen opened on this node, for a click's `"implied_open"`. The writer unmarks
    /// the message of a line it drops ([`ClickEvent::marked_seen`]); one the queue refuses is
    /// unmarked by whoever pushed it.
    pub fn seen(&self) -> &SeenOpens {
        &self.seen
    }

    /// Logs at most `per_sec` clicks a second from one client address (IPv6: one /64), in
    /// bursts of up to `per_sec`; see [`ClickQueue::admit`].
    pub fn with_rate_per_address(mut self, per_sec: NonZeroU32) -> ClickQueue {
        self.rate = Some(Arc::new((AddressRate::new(per_sec), OneClicks::default())));
        self
    }

    /// Whether a click from `ip` is to be logged: false past the per-address rate, if one is set.
    /// Such a click is still redirected, just not logged; it is counted in
    /// `clickedge_clicks_unlogged_total{reason="rate"}` (with a warning at most once a second),
    /// never silently. Ask before building the [`ClickEvent`], so a flood costs no allocation.
    pub fn admit(&self, ip: IpAddr) -> bool {
        let Some((rate, _)) = self.rate.as_deref() else {
            return true;
        };
        if rate.admit(ip) {
            return true;
        }
        self.count_unlogged(ip);
        false
    }

    /// Whether an RFC 8058 one-click unsubscribe from `ip` of the link with `token` is to be
    /// logged: always the first of its link, which the sender must hear of however fast a
    /// provider sends them; a repeat of one already logged ([`ClickQueue::one_click_logged`])
    /// only within its address's rate, as [`ClickQueue::admit`], so one link posted in a loop
    /// cannot flood the log.
    pub fn admit_one_click(&self, ip: IpAddr, token: &str) -> bool {
        let Some((rate, one_clicks)) = self.rate.as_deref() else {
            return true;
        };
        if !one_clicks.logged(token) || rate.admit(ip) {
            return true;
        }
        self.count_unlogged(ip);
        false
    }

    /// A one-click of the link with `token`, synced ([`ClickQueue::push_synced`]): once its line
    /// is on disk the link's repeats are bound by the address rate. One answered `Stalled` is
    /// not marked, though still queued: the disk may fail it yet, and a repeat bound then would
    /// be answered `200` with no line of the unsubscribe anywhere (the provider's retry may log
    /// it twice instead, which an analyst counting unsubscribes by link does not see).
    pub async fn push_one_click(
        &self,
        event: ClickEvent,
        token: &str,
    ) -> Result<(), ClickRejected> {
        let recorded = self.push_synced(event).await;
        if recorded.is_ok()
            && let Some((_, one_clicks)) = self.rate.as_deref()
        {
            one_clicks.log(token);
        }
        recorded
    }

    /// Counts (and says, at most once a second) a click from `ip` not logged for its rate.
    fn count_unlogged(&self, ip: IpAddr) {
        self.metrics.clicks_unlogged_rate.inc();
        if self.rate_log.ready(&self.clock) {
            tracing::warn!(
                address = %ip,
                unlogged_total = self.metrics.clicks_unlogged_rate.get(),
                "clicks over clicks.max_clicks_per_ip_per_sec: redirected but not logged \
                 (counted in clickedge_clicks_unlogged_total{{reason=\"rate\"}})"
            );
        }
    }

    /// Sends `msg` without blocking; a message the channel refuses comes back to the caller, who
    /// counts it.
    fn send(&self, msg: Msg) -> Result<(), TrySendError<Msg>> {
        let queued = Queued {
            msg,
            unread: Some(self.unread),
        };
        self.tx.try_send(queued).map_err(|e| match e {
            TrySendError::Full(q) => TrySendError::Full(q.take()),
            TrySendError::Disconnected(q) => TrySendError::Disconnected(q.take()),
        })
    }

    /// Says (at most once per throttle period) that the queue is full; for dropped clicks and
    /// lost revisions alike, which have the one cause.
    fn log_full(&self) {
        if self.full_log.ready(&self.clock) {
            tracing::warn!(
                dropped_total = self.metrics.clicks_dropped.get(),
                revisions_lost_total = self.metrics.verdict_revisions_lost.get(),
                "click queue full: clicks are being dropped (counted in clickedge_clicks_dropped_total, verdict revisions in clickedge_verdict_revisions_lost_total); raise clicks.queue_capacity, or see why the click log writes slowly"
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
        match self.send(Msg::Click(Box::new(event))) {
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
        let refused = match self.send(Msg::Synced(Box::new(event), ack)) {
            // The writer answers every synced click it takes and counts its own refusals.
            Ok(()) => {
                self.writer.unpark();
                match tokio::time::timeout(SYNCED_WAIT, acked).await {
                    Ok(Ok(answer)) => return answer,
                    // The writer dropped the sender unanswered, which it never means to (a click
                    // it never took is answered by its `Queued`, one held when it died by its
                    // `Pending`, each counted there): counted here, as nobody else can.
                    Ok(Err(_)) => ClickRejected::Stopped,
                    // Not counted: the click is still the writer's to write or count.
                    Err(_) => {
                        if self.stalled_log.ready(&self.clock) {
                            tracing::warn!(
                                wait_secs = SYNCED_WAIT.as_secs(),
                                "click log stalled: a synced click was not durable in time and is answered 503 (it stays queued); see why the click log's disk does not answer"
                            );
                        }
                        return Err(ClickRejected::Stalled);
                    }
                }
            }
            Err(TrySendError::Full(_)) => {
                self.metrics.clicks_queued.dec();
                if self.full_log.ready(&self.clock) {
                    tracing::warn!(
                        rejected_total = self.metrics.clicks_rejected.get() + 1,
                        "click queue full: synced clicks are answered 503 (counted in clickedge_clicks_rejected_total); raise clicks.queue_capacity, or see why the click log writes slowly"
                    );
                }
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
/// click they name, through the same sink. One that cannot be queued (queue full, writer gone),
/// or that the writer never takes ([`Queued`]), is counted in
/// `clickedge_verdict_revisions_lost_total`, never silently.
impl Revise for ClickQueue {
    fn revise(&self, revision: Revision) {
        match self.send(Msg::Revision(Box::new(revision))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.metrics.verdict_revisions_lost.inc();
                self.log_full();
            }
            // The writer stopped: the stop is logged, and so are the clicks dropped after it.
            Err(TrySendError::Disconnected(_)) => self.metrics.verdict_revisions_lost.inc(),
        }
    }
}

#[cfg(test)]
mod tests;
