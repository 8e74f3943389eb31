//! The listeners: accept loops for HTTPS and plain HTTP, with the connection limits of `[limits]`
//! (a global cap that pushes back on `accept`, an optional per-address cap, header read and
//! keep-alive idle timeouts) and graceful draining on shutdown.
//!
//! Requests themselves are handled by [`super::Edge`]; this file only moves connections.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use dashmap::DashMap;
use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::{ConnInfo, Edge};
use crate::config::Limits;
use crate::errors::chain as error_chain;
use crate::metrics::Metrics;
use crate::tls::{Accepted, Acceptor, HandshakeError};

/// Builders for the HTTP/1.1 and h2 connections, configured once from `[limits]`.
#[derive(Clone)]
pub struct Protocols {
    h1: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Protocols {
    /// HTTP/1.1 with the header timeout and size limit, h2 with the stream and header limits.
    pub fn new(limits: &Limits) -> Protocols {
        let max_head = limits.max_header_bytes.get();
        let mut h1 = hyper::server::conn::http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(max_head)
            // hyper's read buffer must hold the largest head we accept (and is at least 8 KiB).
            .max_buf_size(max_head.max(8192) + 1024);
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX));
        Protocols { h1, h2 }
    }
}

/// Connection counts: a total shared by both listeners, and per client address.
pub struct ConnLimits {
    total: Arc<Semaphore>,
    per_ip: usize,
    by_ip: DashMap<IpAddr, usize>,
    keepalive: Duration,
    metrics: Metrics,
}

impl ConnLimits {
    /// Limits from `[limits]`.
    pub fn new(limits: &Limits, metrics: Metrics) -> ConnLimits {
        ConnLimits {
            total: Arc::new(Semaphore::new(limits.max_connections.get())),
            per_ip: limits.max_connections_per_ip,
            by_ip: DashMap::new(),
            keepalive: limits.keepalive_timeout,
            metrics,
        }
    }

    /// Counts a connection from `ip`, or refuses it when the address is at its limit.
    fn admit(self: &Arc<Self>, ip: IpAddr, permit: OwnedSemaphorePermit) -> Option<Slot> {
        if self.per_ip > 0 {
            let mut n = self.by_ip.entry(ip).or_insert(0);
            if *n >= self.per_ip {
                self.metrics.connections_refused.inc();
                return None;
            }
            *n += 1;
        }
        self.metrics.connections_open.inc();
        Some(Slot {
            limits: self.clone(),
            ip,
            _permit: permit,
        })
    }
}

/// One admitted connection; dropping it frees its place.
struct Slot {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.metrics.connections_open.dec();
        if self.limits.per_ip > 0 {
            // Remove the entry at zero so the map only holds addresses with open connections.
            self.limits.by_ip.remove_if_mut(&self.ip, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
    }
}

/// What both accept loops share.
#[derive(Clone)]
pub struct Serving {
    /// The request handler.
    pub edge: Arc<Edge>,
    /// Connection builders.
    pub protocols: Protocols,
    /// Connection limits.
    pub limits: Arc<ConnLimits>,
    /// Connection tasks, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Turns true at shutdown.
    pub stop: watch::Receiver<bool>,
}

impl Serving {
    /// The next connection to serve, once there is room under the connection cap. `None` at
    /// shutdown.
    async fn next(&mut self, listener: &TcpListener) -> Option<(TcpStream, SocketAddr, Slot)> {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = stopped(&mut self.stop) => return None,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => { accept_error(e).await; continue; }
                },
            };
            // Backpressure: at the cap this loop holds the connection it has and accepts no
            // more, so new connections wait in the kernel's backlog until one closes.
            let permit = match self.limits.total.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => tokio::select! {
                    _ = stopped(&mut self.stop) => return None,
                    p = self.limits.total.clone().acquire_owned() => p.ok()?,
                },
            };
            let Some(slot) = self.limits.admit(peer.ip(), permit) else {
                tracing::debug!(%peer, "connection refused: too many from this address");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            return Some((tcp, peer, slot));
        }
    }
}

/// Accepts HTTPS connections until shutdown.
pub async fn serve_https(listener: TcpListener, acceptor: Arc<Acceptor>, mut serving: Serving) {
    while let Some((tcp, peer, slot)) = serving.next(&listener).await {
        let (acceptor, s) = (acceptor.clone(), serving.clone());
        serving.tracker.spawn(async move {
            let _slot = slot;
            // Boxed, like the connection below: the handshake's state is large and short-lived,
            // and the task of an idle connection should not keep room for it.
            let accepted = match Box::pin(acceptor.accept(tcp)).await {
                Ok(a) => a,
                Err(HandshakeError::ChallengeAnswered) => return,
                Err(e) => {
                    tracing::debug!(%peer, error = %error_chain(&e), "handshake failed");
                    return;
                }
            };
            serve_tls(accepted, peer, s).await;
        });
    }
}

/// Serves a connection after its handshake, boxed with exactly the state of the protocol it
/// speaks: an idle connection costs hyper's state for h2 or HTTP/1.1, not room for both.
fn serve_tls(accepted: Accepted<TcpStream>, peer: SocketAddr, s: Serving) -> BoxFuture<'static> {
    let info = ConnInfo {
        peer,
        sni: Some(accepted.domain),
        tls: Some(accepted.tls_version),
    };
    let (io, activity) = Activity::wrap(accepted.stream);
    let service = service(s.edge.clone(), info);
    let keepalive = s.limits.keepalive;
    if accepted.h2 {
        let conn = s.protocols.h2.serve_connection(io, service);
        Box::pin(drive(conn, peer, activity, keepalive, s.stop))
    } else {
        let conn = s.protocols.h1.serve_connection(io, service);
        Box::pin(drive(conn, peer, activity, keepalive, s.stop))
    }
}

type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Accepts plain HTTP/1.1 connections (HTTP-01 challenges, upgrades to HTTPS) until shutdown.
pub async fn serve_http(listener: TcpListener, mut serving: Serving) {
    while let Some((tcp, peer, slot)) = serving.next(&listener).await {
        let s = serving.clone();
        let info = ConnInfo {
            peer,
            sni: None,
            tls: None,
        };
        let (io, activity) = Activity::wrap(tcp);
        let conn = s
            .protocols
            .h1
            .serve_connection(io, service(s.edge.clone(), info));
        let served = drive(conn, peer, activity, s.limits.keepalive, s.stop);
        serving.tracker.spawn(async move {
            let _slot = slot;
            served.await;
        });
    }
}

fn service(
    edge: Arc<Edge>,
    info: ConnInfo,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = hyper::Response<super::Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<hyper::Response<super::Body>, Infallible>> + Send,
> + Clone {
    let info = Arc::new(info);
    service_fn(move |req: Request<Incoming>| {
        let (edge, info) = (edge.clone(), info.clone());
        async move { Ok::<_, Infallible>(edge.handle(&info, req).await) }
    })
}

/// Resolves once the stop flag is true (at once if it already is).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens at shutdown.
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves `conn` until it ends. It is asked to finish the request in flight and close (HTTP/1.1
/// stops keep-alive, h2 sends GOAWAY) at shutdown, or once no byte moved for `keepalive`.
async fn drive<C>(
    conn: C,
    peer: SocketAddr,
    activity: Activity,
    keepalive: Duration,
    mut stop: watch::Receiver<bool>,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let mut deadline = Instant::now() + keepalive;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            _ = stopped(&mut stop) => {}
            _ = tokio::time::sleep_until(deadline) => {
                let last = activity.last();
                if last + keepalive > Instant::now() {
                    deadline = last + keepalive;
                    continue;
                }
                tracing::debug!(%peer, "closing idle connection");
            }
        }
        conn.as_mut().graceful_shutdown();
        break conn.await;
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// When a connection last moved a byte, shared between its I/O wrapper and [`drive`].
#[derive(Clone)]
struct Activity {
    epoch: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn wrap<T>(io: T) -> (TokioIo<Tracked<T>>, Activity) {
        let activity = Activity {
            epoch: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        };
        let tracked = Tracked {
            inner: io,
            activity: activity.clone(),
        };
        (TokioIo::new(tracked), activity)
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// An I/O object that records when it last read or wrote a byte.
struct Tracked<T> {
    inner: T,
    activity: Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accept errors (out of file descriptors, mostly) are transient: log, back off briefly, go on.
async fn accept_error(e: io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
