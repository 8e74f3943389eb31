//! The admin listener: the admin API's router served over HTTP/1.1 with its own connection cap
//! (refusing past it), its own header timeout, and the same idle, close and write timeouts as the
//! edge listeners.
//!
//! What the API answers is [`crate::admin`]'s business; this file only moves connections.

use std::future::Future;
use std::sync::Arc;

use hyper::Request;
use hyper::body::Incoming;
use hyper::service::{Service as _, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::conn::{Activity, Timeouts, drive};
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
                    let (answer, activity) = (router.call(req), activity.clone());
                    async move {
                        let _busy = activity.busy();
                        answer.await
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
