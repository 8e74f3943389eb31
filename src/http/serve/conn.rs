//! One connection's life after its handshake: served until it ends, asked to close once idle or
//! at shutdown, and dropped when it does not close in time.
//!
//! Idle means no request in flight: bytes alone do not count, since an h2 connection's own
//! keep-alive PINGs move bytes every `h2_keepalive_interval`. What bounds a client that stops
//! reading is the write timeout in [`super::io`]; what bounds a client that never answers the
//! closing handshake (h2 GOAWAY and PING, or an HTTP/1.1 response it does not read) is
//! `close_timeout` here.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::watch;
use tokio::time::Instant;

use super::stopped;
use crate::config::Limits;

/// The timeouts every connection of a listener gets, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// No request in flight for this long: asked to close.
    pub(super) keepalive: Duration,
    /// Asked to close for being idle and still open after this long: dropped.
    pub(super) close: Duration,
    /// A write that makes no progress for this long fails the connection.
    pub(super) write: Duration,
}

impl Timeouts {
    pub(super) fn new(limits: &Limits) -> Timeouts {
        Timeouts {
            keepalive: limits.keepalive_timeout,
            close: limits.close_timeout,
            write: limits.write_timeout,
        }
    }
}

/// A connection's requests in flight and when the last one finished, shared between its
/// service (which marks requests, see [`Activity::busy`]) and [`drive`].
#[derive(Debug)]
pub(super) struct Activity {
    epoch: Instant,
    /// When the last request finished, in ms after `epoch` (0: none yet).
    last_ms: AtomicU64,
    in_flight: AtomicU32,
    /// A request said the connection closes after its answer (see [`Activity::last_request`]).
    closing: AtomicBool,
}

impl Activity {
    pub(super) fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            closing: AtomicBool::new(false),
        }
    }

    /// Marks the request being answered as the connection's last: the client asked to close
    /// (HTTP/1.x). Its answer can then go out with the TLS `close_notify` that follows it, in
    /// one write (see `park`).
    pub(super) fn last_request(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    /// Whether a request said the connection closes after its answer.
    pub(super) fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Marks a request in flight until the guard is dropped (also when the request is
    /// cancelled, e.g. by an h2 stream reset).
    pub(super) fn busy(&self) -> Busy<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self)
    }

    /// When the connection became idle, or `None` while a request is in flight.
    pub(super) fn idle_since(&self) -> Option<Instant> {
        // Acquire pairs with the Release in `Busy::drop`: seeing its decrement means seeing the
        // time it stored before.
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A request in flight on a connection (see [`Activity::busy`]).
pub(super) struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let a = self.0;
        let ms = u64::try_from(a.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.last_ms.store(ms, Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// A connection that can be asked to finish what it is doing and close: hyper's
/// ([`GracefulConnection`], sealed), or a stand-in in tests.
pub(super) trait Closable: Future<Output = Result<(), <Self as Closable>::Error>> {
    /// Why the connection ended badly.
    type Error: std::fmt::Display;
    /// Asks the connection to close once its request in flight is answered.
    fn close(self: Pin<&mut Self>);
}

impl<C> Closable for C
where
    C: GracefulConnection,
    <C as GracefulConnection>::Error: std::fmt::Display,
{
    type Error = <C as GracefulConnection>::Error;
    fn close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Why serving a connection stopped short of its end.
pub(super) enum Interrupted {
    /// No request in flight for `timeouts.keepalive`: asked to close.
    Idle,
    /// The edge is shutting down: asked to close.
    Shutdown,
    /// Quiet for the park delay given to [`serve_until`]: the caller may take the connection
    /// apart (see [`super::park`]).
    Parkable,
}

/// Serves `conn` until it ends (`None`), or until it is idle, the edge stops, or (with `park`
/// set: the delay and whether the connection is quiet) it may be parked.
pub(super) async fn serve_until<C: Closable>(
    mut conn: Pin<&mut C>,
    peer: SocketAddr,
    activity: &Activity,
    timeouts: Timeouts,
    stop: &mut watch::Receiver<bool>,
    park: Option<(Duration, &(dyn Fn() -> bool + Sync))>,
) -> Option<Interrupted> {
    // The first check comes at the park delay when there is one (shorter than any keep-alive
    // worth having), else at the idle deadline.
    let first = park.map_or(timeouts.keepalive, |(after, _)| {
        after.min(timeouts.keepalive)
    });
    let timer = tokio::time::sleep(first);
    let mut timer = std::pin::pin!(timer);
    loop {
        tokio::select! {
            // The connection first: a request already received when the edge stops is read and
            // started before the graceful close, which then lets it finish (hyper closes a
            // connection that has read nothing at once).
            biased;
            result = conn.as_mut() => {
                ended(peer, result);
                return None;
            }
            _ = stopped(stop) => return Some(Interrupted::Shutdown),
            _ = timer.as_mut() => {
                let now = Instant::now();
                let Some(since) = activity.idle_since() else {
                    timer.as_mut().reset(now + first);
                    continue;
                };
                let close_at = since + timeouts.keepalive;
                if close_at <= now {
                    return Some(Interrupted::Idle);
                }
                match park {
                    Some((after, quiet)) if since + after <= now => {
                        if quiet() {
                            return Some(Interrupted::Parkable);
                        }
                        // Not quiet yet (a response still being flushed): look again soon.
                        timer.as_mut().reset((now + after).min(close_at));
                    }
                    Some((after, _)) => timer.as_mut().reset((since + after).min(close_at)),
                    None => timer.as_mut().reset(close_at),
                }
            }
        }
    }
}

/// Asks `conn` to finish its request in flight and close (HTTP/1.1 stops keep-alive, h2 sends
/// GOAWAY), and waits for it: at shutdown as long as it takes (the edge's `shutdown_grace`
/// bounds it), when idle at most `timeouts.close`, then drops it.
pub(super) async fn close<C: Closable>(
    mut conn: Pin<&mut C>,
    why: Interrupted,
    peer: SocketAddr,
    timeouts: Timeouts,
) {
    conn.as_mut().close();
    if let Interrupted::Shutdown = why {
        return ended(peer, conn.await);
    }
    tracing::debug!(%peer, "closing idle connection");
    let close = tokio::time::timeout(timeouts.close, conn);
    match close.await {
        Ok(result) => ended(peer, result),
        Err(_) => tracing::debug!(
            %peer,
            "dropping a connection that did not close within limits.close_timeout"
        ),
    }
}

/// Serves `conn` until it ends (boxed: an async function's argument is kept twice in its future,
/// and hyper's h2 connection is 3 KiB). It is asked to finish the request in flight and close at
/// shutdown, or once it had no request in flight for `timeouts.keepalive` (see [`close`]).
pub(super) async fn drive<C: Closable>(
    mut conn: Pin<Box<C>>,
    peer: SocketAddr,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) {
    if let Some(why) = serve_until(conn.as_mut(), peer, &activity, timeouts, &mut stop, None).await
    {
        close(conn.as_mut(), why, peer, timeouts).await;
    }
}

fn ended<E: std::fmt::Display>(peer: SocketAddr, result: Result<(), E>) {
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::task::{Context, Poll};

    use super::*;

    /// A connection that never ends by itself, and records whether it was asked to close.
    /// `closes` says whether it then ends (a polite client) or hangs (one that never answers).
    struct Stubborn {
        asked: Arc<AtomicBool>,
        closes: bool,
    }

    impl Future for Stubborn {
        type Output = Result<(), std::io::Error>;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            if self.closes && self.asked.load(Ordering::Relaxed) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
    }

    impl Closable for Stubborn {
        type Error = std::io::Error;
        fn close(self: Pin<&mut Self>) {
            self.asked.store(true, Ordering::Relaxed);
        }
    }

    const TIMEOUTS: Timeouts = Timeouts {
        keepalive: Duration::from_secs(60),
        close: Duration::from_secs(10),
        write: Duration::from_secs(30),
    };

    fn peer() -> SocketAddr {
        "192.0.2.1:443".parse().unwrap()
    }

    /// Drives a connection; returns when it was asked to close and when `drive` returned.
    async fn lifetime(closes: bool, activity: Arc<Activity>) -> (Instant, Instant) {
        let asked = Arc::new(AtomicBool::new(false));
        let (_stop_tx, stop) = watch::channel(false);
        let conn = Stubborn {
            asked: asked.clone(),
            closes,
        };
        let driving = tokio::spawn(drive(Box::pin(conn), peer(), activity, TIMEOUTS, stop));
        while !asked.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let asked_at = Instant::now();
        driving.await.unwrap();
        (asked_at, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_that_never_closes_is_dropped_after_close_timeout() {
        let start = Instant::now();
        let (asked, ended) = lifetime(false, Arc::new(Activity::new())).await;
        assert!(asked - start >= TIMEOUTS.keepalive);
        assert!(asked - start < TIMEOUTS.keepalive + Duration::from_secs(1));
        assert!(ended - asked >= TIMEOUTS.close - Duration::from_millis(100));
        assert!(ended - asked < TIMEOUTS.close + Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_polite_connection_closes_when_asked() {
        let start = Instant::now();
        let (asked, ended) = lifetime(true, Arc::new(Activity::new())).await;
        assert!(asked - start < TIMEOUTS.keepalive + Duration::from_secs(1));
        assert!(ended - asked < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_keeps_the_connection_and_its_end_restarts_the_idle_clock() {
        let activity = Arc::new(Activity::new());
        let start = Instant::now();
        let asker = {
            let activity = activity.clone();
            tokio::spawn(async move {
                let busy = activity.busy();
                tokio::time::sleep(Duration::from_secs(150)).await;
                drop(busy);
            })
        };
        let (asked, _) = lifetime(true, activity).await;
        asker.await.unwrap();
        // Busy for 150 s, then idle for keepalive.
        assert!(asked - start >= Duration::from_secs(150) + TIMEOUTS.keepalive);
        assert!(asked - start < Duration::from_secs(151) + TIMEOUTS.keepalive);
    }

    /// A connection polled after it was asked to close is remembered as such.
    struct Eager {
        asked: Arc<AtomicBool>,
        /// Whether it had been asked to close when first polled.
        first_poll_asked: Arc<std::sync::OnceLock<bool>>,
    }

    impl Future for Eager {
        type Output = Result<(), std::io::Error>;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            let asked = self.asked.load(Ordering::Relaxed);
            self.first_poll_asked.get_or_init(|| asked);
            if asked {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
    }

    impl Closable for Eager {
        type Error = std::io::Error;
        fn close(self: Pin<&mut Self>) {
            self.asked.store(true, Ordering::Relaxed);
        }
    }

    /// A request already received when the edge stops: the connection is polled (its request
    /// read and started) before it is asked to close, every time; which came first was a coin
    /// toss, and hyper closes a connection that has read nothing at once, unanswered.
    #[tokio::test(start_paused = true)]
    async fn at_shutdown_a_connection_is_polled_before_it_is_asked_to_close() {
        for _ in 0..32 {
            let first_poll_asked = Arc::new(std::sync::OnceLock::new());
            let conn = Eager {
                asked: Arc::new(AtomicBool::new(false)),
                first_poll_asked: first_poll_asked.clone(),
            };
            let (_stop_tx, stop) = watch::channel(true);
            drive(
                Box::pin(conn),
                peer(),
                Arc::new(Activity::new()),
                TIMEOUTS,
                stop,
            )
            .await;
            assert_eq!(first_poll_asked.get(), Some(&false));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn at_shutdown_a_connection_is_asked_to_close_at_once() {
        let asked = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop) = watch::channel(false);
        let conn = Stubborn {
            asked: asked.clone(),
            closes: true,
        };
        let driving = tokio::spawn(drive(
            Box::pin(conn),
            peer(),
            Arc::new(Activity::new()),
            TIMEOUTS,
            stop,
        ));
        let start = Instant::now();
        stop_tx.send(true).unwrap();
        driving.await.unwrap();
        assert!(asked.load(Ordering::Relaxed));
        assert!(Instant::now() - start < Duration::from_secs(1));
    }
}
