//! Idle HTTP/1.1 connections parked outside hyper, so that holding many costs little memory.
//!
//! hyper keeps an HTTP/1.1 connection's buffers for its whole life: 8 KiB reserved for the next
//! request head while it waits, and an 8 KiB write buffer, neither released nor configurable.
//! An email click's browser often keeps its connection open for a while after the redirect, so
//! an edge holds many idle connections. Once a connection has had no request in flight for
//! [`PARK_AFTER`] and hyper is quiet (waiting to read, everything written flushed), the
//! connection is taken apart ([`hyper::server::conn::http1::Connection::into_parts`]): the TLS
//! stream and the service are kept, hyper's state is dropped, and the task waits for the socket
//! to become readable. Then a new hyper connection serves it again, over any bytes the old one
//! had read but not parsed. A parked connection is closed (TLS `close_notify`, then FIN) at
//! shutdown, and when hyper would have closed it: `limits.header_read_timeout` after its last
//! answer (hyper times the wait for every request head, an idle connection's too), or
//! `limits.keepalive_timeout` if that is shorter. Bytes of a request head, even half of one, keep
//! a connection from being parked, so hyper's header timer bounds a slow client as before.

use std::io;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use super::conn::{Activity, Interrupted, Timeouts, close, serve_until};
use super::io::WriteDeadline;
use super::stopped;

/// How long an HTTP/1.1 connection has no request in flight before it is parked. Long enough
/// that a busy keep-alive connection never is (rebuilding hyper's state costs a few
/// allocations), short against `limits.keepalive_timeout`.
pub(super) const PARK_AFTER: Duration = Duration::from_secs(2);

/// What [`drive_h1`] needs of a transport besides reading and writing.
pub(super) trait Transport {
    /// Resolves once a read would not block (data, end of stream or an error).
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;

    /// Takes what it can of `bufs` to send with the next write out, without writing to the
    /// socket now: TLS encrypts them into rustls's buffer, so that a connection's last answer
    /// and the `close_notify` after it leave in one write. `None`: this transport writes at
    /// once (plain TCP).
    fn write_later(&mut self, bufs: &[io::IoSlice<'_>]) -> Option<io::Result<usize>>;

    /// Keeps what is written next from leaving in a segment shorter than a full one until the
    /// shutdown (`TCP_CORK`): the FIN then rides in the last answer's segment instead of one of
    /// its own, which both ends' kernels would have to send, deliver and acknowledge.
    fn cork(&self) -> io::Result<()>;
}

impl Transport for TcpStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        TcpStream::readable(self)
    }

    fn write_later(&mut self, _: &[io::IoSlice<'_>]) -> Option<io::Result<usize>> {
        None
    }

    fn cork(&self) -> io::Result<()> {
        socket2::SockRef::from(self).set_tcp_cork(true)
    }
}

impl<T: Transport> Transport for Box<T> {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        (**self).readable()
    }

    fn write_later(&mut self, bufs: &[io::IoSlice<'_>]) -> Option<io::Result<usize>> {
        (**self).write_later(bufs)
    }

    fn cork(&self) -> io::Result<()> {
        (**self).cork()
    }
}

impl<T: Transport> Transport for TlsStream<T> {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.get_ref().0.readable()
    }

    fn write_later(&mut self, bufs: &[io::IoSlice<'_>]) -> Option<io::Result<usize>> {
        Some(self.get_mut().1.writer().write_vectored(bufs))
    }

    fn cork(&self) -> io::Result<()> {
        self.get_ref().0.cork()
    }
}

impl<T: Transport> Transport for WriteDeadline<T> {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.get_ref().readable()
    }

    fn write_later(&mut self, bufs: &[io::IoSlice<'_>]) -> Option<io::Result<usize>> {
        let taken = self.get_mut().write_later(bufs);
        if matches!(taken, Some(Ok(n)) if n > 0) {
            self.progressed();
        }
        taken
    }

    fn cork(&self) -> io::Result<()> {
        self.get_ref().cork()
    }
}

/// What the driver knows of hyper's use of the transport.
#[derive(Debug, Default)]
struct Wire {
    /// hyper's last read found nothing to read.
    read_waiting: AtomicBool,
    /// Bytes came in after the last response began: a request head, perhaps half of one, that
    /// hyper's header timer is timing.
    unanswered: AtomicBool,
    /// Something was written and not yet flushed.
    unflushed: AtomicBool,
}

impl Wire {
    /// hyper is waiting for the client's next request, having answered every one it read.
    fn quiet(&self) -> bool {
        self.read_waiting.load(Ordering::Relaxed)
            && !self.unanswered.load(Ordering::Relaxed)
            && !self.unflushed.load(Ordering::Relaxed)
    }

    fn wrote(&self) {
        self.unanswered.store(false, Ordering::Relaxed);
        self.unflushed.store(true, Ordering::Relaxed);
    }
}

/// Counts a connection in `clickedge_connections_parked` while it lives.
struct Parked<'a>(&'a IntGauge);

impl<'a> Parked<'a> {
    fn new(gauge: &'a IntGauge) -> Parked<'a> {
        gauge.inc();
        Parked(gauge)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The transport as hyper sees it: `inner`, after any bytes a previous hyper connection read and
/// did not parse, with its reads and flushes watched.
struct Watched<T> {
    unread: Bytes,
    inner: T,
    wire: Arc<Wire>,
    /// Says when the answer being written is the connection's last.
    activity: Arc<Activity>,
    /// Bytes of the last answer that `inner` holds (see [`Transport::write_later`]); hyper's
    /// flush leaves them there, and its shutdown sends them with the `close_notify` (or its next
    /// read, should hyper read again after all, sends them first).
    held: bool,
}

impl<T: Transport + AsyncWrite + Unpin> Watched<T> {
    /// Hands bytes of the connection's last answer to `inner` to keep, if both can.
    fn hold(&mut self, bufs: &[io::IoSlice<'_>]) -> Option<Poll<io::Result<usize>>> {
        if !self.activity.closing() {
            return None;
        }
        match self.inner.write_later(bufs)? {
            // Nothing taken (its buffer is full): written out as usual, which makes room.
            Ok(0) => None,
            taken => {
                self.held |= taken.is_ok();
                Some(Poll::Ready(taken))
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.held {
            ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
            self.held = false;
        }
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..n]);
            self.unread = self.unread.slice(n..);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.wire
            .read_waiting
            .store(poll.is_pending(), Ordering::Relaxed);
        if buf.filled().len() > before {
            self.wire.unanswered.store(true, Ordering::Relaxed);
        }
        poll
    }
}

impl<T: Transport + AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.wire.wrote();
        if let Some(held) = self.hold(&[io::IoSlice::new(buf)]) {
            return held;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.wire.wrote();
        if let Some(held) = self.hold(bufs) {
            return held;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.held {
            // Kept for the shutdown (or the next read); `unflushed` stays set meanwhile.
            return Poll::Ready(Ok(()));
        }
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = poll {
            self.wire.unflushed.store(false, Ordering::Relaxed);
        }
        poll
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.held {
            // The held answer and the `close_notify` go out in the shutdown's write, the FIN
            // right after it: corked, the three leave in one segment. Should corking fail, the
            // FIN takes a segment of its own, as it would have. (A shutdown polled again, its
            // write blocked, corks again: harmless.)
            let _ = self.inner.cork();
        }
        ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
        self.held = false;
        Poll::Ready(Ok(()))
    }
}

/// How a listener serves HTTP/1.1: hyper's builder, the connections' timeouts, and the gauge of
/// parked connections (`clickedge_connections_parked`).
#[derive(Clone)]
pub(super) struct H1 {
    pub(super) builder: http1::Builder,
    pub(super) timeouts: Timeouts,
    /// `limits.header_read_timeout`: hyper closes a connection that has waited this long for a
    /// request head, idle ones included; a parked connection keeps that rule.
    pub(super) head_timeout: Duration,
    pub(super) parked: IntGauge,
}

/// Serves an HTTP/1.1 connection until it ends, parking it whenever it is idle (see the module
/// docs).
pub(super) async fn drive_h1<T, S>(
    io: T,
    mut service: S,
    peer: SocketAddr,
    activity: Arc<Activity>,
    h1: H1,
    mut stop: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Transport + Unpin + Send + 'static,
    S: HttpService<Incoming> + Unpin,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let wire = Arc::new(Wire::default());
    let mut io = Watched {
        unread: Bytes::new(),
        inner: io,
        wire: wire.clone(),
        activity: activity.clone(),
        held: false,
    };
    let mut may_park = true;
    // Woken from parked: the next request's head is due when the parked connection would have
    // been closed, not a whole header timeout after its first byte (hyper's new connection
    // starts its own timer).
    let mut head_due: Option<(Instant, Instant)> = None;
    loop {
        wire.read_waiting.store(false, Ordering::Relaxed);
        // Boxed: the task keeps no room for hyper's connection while parked.
        let mut conn = Box::new(h1.builder.serve_connection(TokioIo::new(io), service));
        let quiet = || wire.quiet();
        let park = may_park.then_some((PARK_AFTER, &quiet as &(dyn Fn() -> bool + Sync)));
        let serving = serve_until(
            Pin::new(&mut *conn),
            peer,
            &activity,
            h1.timeouts,
            &mut stop,
            park,
        );
        let why = match head_due.take() {
            None => serving.await,
            Some((since, due)) => tokio::select! {
                why = serving => why,
                () = head_overdue(&activity, since, due) => {
                    // Half a head at most, no request in flight: closed as a parked connection
                    // is, at once.
                    tracing::debug!(%peer, "closing idle connection (its next head came short)");
                    let io = unbox(conn).into_parts().io.into_inner();
                    return shut(io.inner, h1.timeouts).await;
                }
            },
        };
        match why {
            Some(Interrupted::Parkable) => {}
            ended => {
                if let Some(why) = ended {
                    close(Pin::new(&mut *conn), why, peer, h1.timeouts).await;
                }
                // hyper shuts the transport down as it ends, unless a request asked for an
                // upgrade (`Upgrade`, CONNECT), answered or not: then it hands the transport
                // back untouched, and a last answer held for the shutdown goes out here.
                let io = unbox(conn).into_parts().io.into_inner();
                if io.held {
                    shut(io, h1.timeouts).await;
                }
                return;
            }
        }
        // Taken out of its box, which is freed here rather than kept empty while parked.
        let http1::Parts {
            io: parts_io,
            read_buf,
            service: parts_service,
            ..
        } = unbox(conn).into_parts();
        (io, service) = (parts_io.into_inner(), parts_service);
        if !read_buf.is_empty() {
            // Half a pipelined request head, read with the request before it: served on at once,
            // its bytes first, and never parked again, so that the new connection's header timer
            // is restarted once at most.
            io.unread = read_buf;
            may_park = false;
            continue;
        }
        // Empty, but it still holds hyper's read buffer (8 KiB): not kept while parked.
        drop(read_buf);
        // Parked: only the TLS stream, the service and this task are left, until the client's
        // next bytes, the edge's shutdown, or the deadline hyper would have kept.
        let since = activity.idle_since().unwrap_or_else(Instant::now);
        let deadline = since + h1.timeouts.keepalive.min(h1.head_timeout);
        let parked = Parked::new(&h1.parked);
        let woken = tokio::select! {
            // Its next request first, should it come as the edge stops: served, then closed.
            biased;
            ready = io.inner.readable() => ready.is_ok(),
            _ = stopped(&mut stop) => false,
            _ = tokio::time::sleep_until(deadline) => {
                tracing::debug!(%peer, "closing idle connection");
                false
            }
        };
        drop(parked);
        if !woken {
            return shut(io.inner, h1.timeouts).await;
        }
        head_due = Some((since, deadline));
    }
}

/// Ends at `due` if no request has come since the connection went idle at `since`; never once
/// one has (from then on hyper's own timers bound the connection).
async fn head_overdue(activity: &Activity, since: Instant, due: Instant) {
    tokio::time::sleep_until(due).await;
    if activity.idle_since() != Some(since) {
        std::future::pending::<()>().await;
    }
}

/// The value out of its box, the box's memory freed now rather than at the end of the scope.
// The box taken by value is the point: it is freed when this returns.
#[allow(clippy::boxed_local)]
fn unbox<T>(b: Box<T>) -> T {
    *b
}

/// Closes a parked connection: TLS `close_notify` and FIN, bounded by `timeouts.close`.
async fn shut<T: AsyncWrite + Unpin>(mut io: T, timeouts: Timeouts) {
    let _ = tokio::time::timeout(timeouts.close, io.shutdown()).await;
}

#[cfg(test)]
mod tests;
