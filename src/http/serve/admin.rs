//! The admin listener: the admin API's router served over HTTP/1.1 with its own connection cap
//! (refusing past it), its own header timeout (which, stretched with the body's size, bounds a
//! request's body too, see [`super::deadline`]), and the same idle, close and write timeouts as the edge listeners.
//!
//! What the API answers is [`crate::admin`]'s business; this file only moves connections.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use hyper::body::{Body as _, Incoming};
use hyper::service::{Service as _, service_fn};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::conn::{Activity, Timeouts, drive};
use super::deadline::{Deadline, body_time};
use super::io::WriteDeadline;
use super::limits::{ConnLimits, Gate};
use crate::config::Limits;

/// Serves `router` on `listener` until shutdown; the connections join `tracker`, so shutdown
/// waits for them within its grace period.
pub fn serve_admin(
    listener: TcpListener,
    router: axum::Router,
    limits: &Limits,
    tracker: TaskTracker,
    stop: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + 'static {
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(limits.admin_header_read_timeout);
    let timeouts = Timeouts::new(limits);
    let head_timeout = limits.admin_header_read_timeout;
    // The largest body any admin route takes: what a body with no `Content-Length` is given time
    // for, and the most an announced one is.
    let largest = u64::try_from(limits.admin_max_body_bytes.get())
        .unwrap_or(u64::MAX)
        // `POST /v1/rewrite` has its own cap, whatever `limits.admin_max_body_bytes` says.
        .max(u64::try_from(crate::admin::MAX_MESSAGE_BYTES).unwrap_or(u64::MAX));
    let places = Arc::new(ConnLimits::admin(limits.admin_max_connections));
    let mut gate = Gate::new(listener, places, stop.clone());
    let router = TowerToHyperService::new(router);
    async move {
        while let Some((tcp, peer, place)) = gate.next().await {
            let Some(slot) = place.admit(peer) else {
                continue;
            };
            let activity = Arc::new(Activity::new());
            let service = {
                let (router, activity) = (router.clone(), activity.clone());
                service_fn(move |req: Request<Incoming>| {
                    // The request is in flight while its body arrives, which keeps the connection
                    // from its idle close: the body gets the header timeout and time for its size
                    // (hyper's exact size hint is the `Content-Length`; chunked has none),
                    // counted from the head.
                    let (parts, body) = req.into_parts();
                    let body_within = body_time(head_timeout, body.size_hint().exact(), largest);
                    let body = Deadline::new(body, body_within);
                    let expired = body.expired();
                    let answer = router.call(Request::from_parts(parts, body));
                    let activity = activity.clone();
                    async move {
                        let _busy = activity.busy();
                        let res = answer.await;
                        if expired.load(Ordering::Relaxed) {
                            return Ok(body_timed_out(body_within));
                        }
                        res
                    }
                })
            };
            let io = TokioIo::new(WriteDeadline::new(tcp, timeouts.write));
            let served = drive(
                Box::pin(h1.serve_connection(io, service)),
                peer,
                activity,
                timeouts,
                stop.clone(),
            );
            tracker.spawn(async move {
                let _slot = slot;
                served.await;
            });
        }
    }
}

/// The answer to a request whose body was not all in within `within`, whatever the handler made
/// of the failed read: `408`, and the connection closes after it (the rest of the body may still
/// be on its way).
fn body_timed_out(within: Duration) -> Response<Body> {
    let message = format!(
        "request body not received within {} (limits.admin_header_read_timeout, plus a second \
         per {} KiB of body); send the whole request at once",
        humantime::format_duration(Duration::from_millis(
            u64::try_from(within.as_millis()).unwrap_or(u64::MAX)
        )),
        super::deadline::MIN_RATE / 1024
    );
    let mut res = crate::admin::error_response(StatusCode::REQUEST_TIMEOUT, message);
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}
