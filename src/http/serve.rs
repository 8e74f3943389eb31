//! The listeners: accept loops for HTTPS, plain HTTP and the admin API, each behind its own
//! connection cap from `[limits]` (so a flood on one port leaves the others answering), with a
//! per-address cap on the edge listeners, and graceful draining on shutdown.
//!
//! No connection lives forever: the header read timeout bounds a half-sent request, the idle
//! timer asks a connection with no request in flight to close and drops it if it does not
//! ([`conn`]), a write that makes no progress fails ([`io`]), and h2 keep-alive PINGs drop a
//! client that stopped answering. Behind a load balancer, the client's address is read from a
//! PROXY protocol header first ([`proxy`]). Requests themselves are handled by [`super::Edge`]
//! and the admin router; this module only moves connections.

mod admin;
mod conn;
mod deadline;
mod h2;
mod io;
mod limits;
mod park;
mod proxy;
mod timed;

pub use admin::serve_admin;
pub use proxy::ProxyProtocol;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_LENGTH, HeaderValue};
use hyper::service::{Service as _, service_fn};
use hyper::{Method, Request, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::{ConnInfo, JudgingEdge};
use crate::config::Limits;
use crate::errors::chain as error_chain;
use crate::metrics::Metrics;
use crate::tls::{Accepted, Acceptor, HandshakeError};
use conn::{Activity, Timeouts, drive};
use io::WriteDeadline;
use limits::{ConnLimits, Gate, Place, Slot};
use timed::Timed;

/// The HTTP/1.1 builder, configured once from `[limits]`: the header timeout and size limit.
fn http1(limits: &Limits) -> hyper::server::conn::http1::Builder {
    let max_head = limits.max_header_bytes.get();
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(max_head)
        // hyper's read buffer must hold the largest head we accept (and is at least 8 KiB).
        .max_buf_size(max_head.max(8192) + 1024);
    h1
}

/// What the edge's accept loops share: the handler, the protocol builders, each listener's caps
/// and the connections' timeouts.
#[derive(Clone)]
pub struct Serving {
    edge: Arc<JudgingEdge>,
    redirect_seconds: prometheus::Histogram,
    /// HTTP/1.1, with idle connections parked (see [`park`]).
    h1: park::H1,
    /// h2, each connection running its own requests (see [`h2`]).
    h2: h2::H2,
    https: Arc<ConnLimits>,
    http: Arc<ConnLimits>,
    timeouts: Timeouts,
    /// `listen.proxy_protocol`: the client's address from a header its trusted proxy sends.
    proxy: Option<Arc<ProxyProtocol>>,
    /// `clickedge_proxy_protocol_refused_total`.
    proxy_refused: prometheus::IntCounterVec,
    tracker: TaskTracker,
    stop: watch::Receiver<bool>,
}

impl Serving {
    /// Serving `edge` within `limits`; connection tasks join `tracker` (so shutdown can wait for
    /// them), and everything stops accepting once `stop` turns true.
    pub fn new(
        edge: Arc<JudgingEdge>,
        limits: &Limits,
        metrics: &Metrics,
        tracker: TaskTracker,
        stop: watch::Receiver<bool>,
    ) -> Serving {
        let per_ip = limits.max_connections_per_ip;
        Serving {
            edge,
            redirect_seconds: metrics.redirect_seconds.clone(),
            h1: park::H1 {
                builder: http1(limits),
                timeouts: Timeouts::new(limits),
                head_timeout: limits.header_read_timeout,
                parked: metrics.connections_parked.clone(),
            },
            h2: h2::H2::new(limits),
            https: Arc::new(ConnLimits::edge(
                limits.max_connections,
                per_ip,
                metrics.clone(),
            )),
            http: Arc::new(ConnLimits::edge(
                limits.http_max_connections,
                per_ip,
                metrics.clone(),
            )),
            timeouts: Timeouts::new(limits),
            proxy: None,
            proxy_refused: metrics.proxy_refused.clone(),
            tracker,
            stop,
        }
    }

    /// Both edge listeners read a PROXY protocol header before anything else (see [`proxy`]).
    pub fn with_proxy_protocol(mut self, proxy: ProxyProtocol) -> Serving {
        self.proxy = Some(Arc::new(proxy));
        self
    }

    /// The connection's client (from its PROXY protocol header, when the listeners expect one),
    /// counted against that address; `None` when the connection is refused.
    async fn admit(
        &self,
        tcp: &mut TcpStream,
        peer: SocketAddr,
        place: Place,
    ) -> Option<(SocketAddr, Slot)> {
        let Some(proxy) = &self.proxy else {
            return Some((peer, place.admit(peer)?));
        };
        // A peer that is not a trusted proxy is served as itself, so it is counted against its
        // address before its first bytes are awaited, as without PROXY protocol: else one
        // address could hold every place with connections that send nothing.
        // Ok: counted already; Err: the place, for the client the header names.
        let counted = if proxy.trusts(peer) {
            Err(place)
        } else {
            Ok(place.admit(peer)?)
        };
        let client = match proxy.client(tcp, peer).await {
            Ok(client) => client,
            Err(e) => {
                self.proxy_refused.with_label_values(&[e.reason()]).inc();
                tracing::debug!(%peer, error = %error_chain(&e), "connection refused");
                return None;
            }
        };
        match counted {
            Ok(slot) => Some((client, slot)),
            Err(place) => Some((client, place.admit(client)?)),
        }
    }
}

/// A connection as its requests see it: where it comes from, and its activity for the idle timer.
struct Conn {
    info: ConnInfo,
    activity: Arc<Activity>,
    redirect_seconds: prometheus::Histogram,
}

/// Accepts HTTPS connections until shutdown.
pub async fn serve_https(listener: TcpListener, acceptor: Arc<Acceptor>, serving: Serving) {
    let mut gate = Gate::new(listener, serving.https.clone(), serving.stop.clone());
    while let Some((mut tcp, peer, place)) = gate.next().await {
        let (acceptor, s) = (acceptor.clone(), serving.clone());
        // The admission and the handshake in a box of their own, freed once the connection is
        // served: the task of a long-lived connection keeps room for neither (a task's size is
        // that of its largest state, for its whole life).
        let setup: SetupFuture = Box::pin(async move {
            let (peer, slot) = s.admit(&mut tcp, peer, place).await?;
            let accepted = match acceptor.accept(tcp).await {
                Ok(a) => a,
                Err(HandshakeError::ChallengeAnswered) => return None,
                Err(e) => {
                    tracing::debug!(%peer, error = %error_chain(&e), "handshake failed");
                    return None;
                }
            };
            Some((slot, serve_tls(accepted, peer, s)))
        });
        serving.tracker.spawn(async move {
            if let Some((_slot, conn)) = setup.await {
                conn.await;
            }
        });
    }
}

/// A connection's admission and handshake: its slot and how it is served, or `None` when it is
/// refused or its handshake fails.
type SetupFuture = Pin<Box<dyn Future<Output = Option<(Slot, BoxFuture<'static>)>> + Send>>;

/// Serves a connection after its handshake, boxed with exactly the state of the protocol it
/// speaks: an idle connection costs hyper's state for h2 or HTTP/1.1, not room for both. The
/// TLS stream (about 1.2 KiB, rustls's connection inline) is boxed too, so that the futures
/// that move it around keep a pointer rather than a copy each.
fn serve_tls(accepted: Accepted<TcpStream>, peer: SocketAddr, s: Serving) -> BoxFuture<'static> {
    let info = ConnInfo {
        peer,
        sni: Some(accepted.domain),
        tls: Some(accepted.tls_version),
        tls_fp: accepted.tls_fp,
    };
    let activity = Arc::new(Activity::new());
    let io = Box::new(WriteDeadline::new(accepted.stream, s.timeouts.write));
    let service = service(
        s.edge.clone(),
        info,
        activity.clone(),
        s.redirect_seconds.clone(),
    );
    if accepted.h2 {
        // Each request's future boxed: hyper's h2 server moves it into place several times
        // before its executor gets it, about 4 000 instructions of copies per h2 click unboxed.
        // (HTTP/1.1 polls it in place: no box there.)
        let service = service_fn(move |req| Box::pin(service.call(req)));
        let conn = s.h2.serve(TokioIo::new(io), service);
        Box::pin(drive(Box::pin(conn), peer, activity, s.timeouts, s.stop))
    } else {
        Box::pin(park::drive_h1(io, service, peer, activity, s.h1, s.stop))
    }
}

type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Accepts plain HTTP/1.1 connections (HTTP-01 challenges, upgrades to HTTPS) until shutdown.
pub async fn serve_http(listener: TcpListener, serving: Serving) {
    let mut gate = Gate::new(listener, serving.http.clone(), serving.stop.clone());
    while let Some((mut tcp, peer, place)) = gate.next().await {
        let s = serving.clone();
        serving.tracker.spawn(async move {
            let Some((peer, _slot)) = s.admit(&mut tcp, peer, place).await else {
                return;
            };
            let info = ConnInfo {
                peer,
                sni: None,
                tls: None,
                tls_fp: None,
            };
            let activity = Arc::new(Activity::new());
            let io = WriteDeadline::new(tcp, s.timeouts.write);
            let service = service(
                s.edge.clone(),
                info,
                activity.clone(),
                s.redirect_seconds.clone(),
            );
            park::drive_h1(io, service, peer, activity, s.h1, s.stop).await;
        });
    }
}

/// The edge's handler for one connection; each request is marked in flight for the idle timer.
/// A `302` is timed until written (`clickedge_redirect_duration_seconds`).
fn service(
    edge: Arc<JudgingEdge>,
    info: ConnInfo,
    activity: Arc<Activity>,
    redirect_seconds: prometheus::Histogram,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = hyper::Response<Timed>,
    Error = Infallible,
    Future = impl Future<Output = Result<hyper::Response<Timed>, Infallible>> + Send,
> + Clone {
    let conn = Arc::new(Conn {
        info,
        activity,
        redirect_seconds,
    });
    service_fn(move |req: Request<Incoming>| {
        let (edge, conn) = (edge.clone(), conn.clone());
        async move {
            let _busy = conn.activity.busy();
            let closes = closes_after(&req);
            let received = Instant::now();
            let head = req.method() == Method::HEAD;
            let mut res = edge.handle(&conn.info, req).await;
            // Marked once the answer is made, not before: hyper's `100 Continue`, written while
            // the handler reads the body, is no last answer to hold back.
            if closes {
                conn.activity.last_request();
            }
            if head {
                headers_only(&mut res);
            }
            let timed = (res.status() == StatusCode::FOUND)
                .then(|| (received, conn.redirect_seconds.clone()));
            Ok::<_, Infallible>(res.map(|body| Timed::new(body, timed)))
        }
    })
}

/// The answer to a HEAD request: its headers, its length as a GET would have it, no body.
/// hyper leaves the body out over HTTP/1.1 itself, but sends it over h2, where a client takes
/// DATA on a HEAD answer for a protocol error (a scanner's HEAD to a link that does not open
/// would see a reset stream instead of the 404).
fn headers_only(res: &mut hyper::Response<super::Body>) {
    use hyper::body::Body as _;
    if let Some(len) = res.body().size_hint().exact()
        && !res.headers().contains_key(CONTENT_LENGTH)
    {
        res.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    *res.body_mut() = super::Body::default();
}

/// Whether hyper closes an HTTP/1.x connection once `req` is answered, by hyper's own rule:
/// a `Connection` header with the `close` token, or HTTP/1.0 without `keep-alive`. (h2
/// requests carry no `Connection` header.)
fn closes_after<B>(req: &Request<B>) -> bool {
    let mut keep_alive = req.version() != Version::HTTP_10;
    let values = req.headers().get_all(CONNECTION);
    for token in values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let token = token.trim();
        if token.eq_ignore_ascii_case("close") {
            return true;
        }
        keep_alive |= token.eq_ignore_ascii_case("keep-alive");
    }
    !keep_alive
}

/// Resolves once the stop flag is true (at once if it already is).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens at shutdown.
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_closes_its_connection_by_hypers_rule() {
        let req = |version, connection: &[&str]| {
            let mut b = Request::builder().version(version);
            for c in connection {
                b = b.header(CONNECTION, *c);
            }
            b.body(()).unwrap()
        };
        assert!(!closes_after(&req(Version::HTTP_11, &[])));
        assert!(closes_after(&req(Version::HTTP_11, &["close"])));
        assert!(closes_after(&req(Version::HTTP_11, &["Upgrade, CLOSE "])));
        assert!(closes_after(&req(
            Version::HTTP_11,
            &["keep-alive", "close"]
        )));
        assert!(!closes_after(&req(
            Version::HTTP_11,
            &["keep-alive, closed"]
        )));
        assert!(closes_after(&req(Version::HTTP_10, &[])));
        assert!(!closes_after(&req(Version::HTTP_10, &["Keep-Alive"])));
        assert!(closes_after(&req(
            Version::HTTP_10,
            &["keep-alive", "close"]
        )));
        assert!(!closes_after(&req(Version::HTTP_2, &[])));
    }
}
