//! Connection caps: one per listener, and one per client address on the edge listeners.
//!
//! A listener at its cap either stops accepting, so new connections wait in the kernel's backlog
//! (the edge listeners: a burst of clicks is slowed, not refused), or accepts and closes at once
//! (the admin listener: an operator sees the refusal). Nothing here reads or writes a byte.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::stopped;
use crate::client;
use crate::metrics::Metrics;

/// What a listener does with a connection past its cap.
#[derive(Debug, Clone, Copy)]
enum AtCap {
    /// Stop accepting until a place frees up.
    Wait,
    /// Accept and close at once.
    Refuse,
}

/// The caps of one listener.
pub(super) struct ConnLimits {
    places: Arc<Semaphore>,
    at_cap: AtCap,
    per_ip: usize,
    by_ip: DashMap<IpAddr, usize>,
    /// The edge listeners' gauges; the admin listener is not counted in them.
    metrics: Option<Metrics>,
}

impl ConnLimits {
    /// An edge listener: `cap` places, then backpressure; at most `per_ip` per client address
    /// (`0`: no such limit).
    pub(super) fn edge(cap: NonZeroUsize, per_ip: usize, metrics: Metrics) -> ConnLimits {
        ConnLimits {
            places: Arc::new(Semaphore::new(cap.get())),
            at_cap: AtCap::Wait,
            per_ip,
            by_ip: DashMap::new(),
            metrics: Some(metrics),
        }
    }

    /// The admin listener: `cap` places, then refusals.
    pub(super) fn admin(cap: NonZeroUsize) -> ConnLimits {
        ConnLimits {
            places: Arc::new(Semaphore::new(cap.get())),
            at_cap: AtCap::Refuse,
            per_ip: 0,
            by_ip: DashMap::new(),
            metrics: None,
        }
    }

    /// Counts a connection from `ip`, or refuses it when the address is at its limit.
    fn admit(self: &Arc<Self>, ip: IpAddr, permit: OwnedSemaphorePermit) -> Option<Slot> {
        let key = client::key(ip);
        if self.per_ip > 0 {
            let mut n = self.by_ip.entry(key).or_insert(0);
            if *n >= self.per_ip {
                if let Some(m) = &self.metrics {
                    m.connections_refused.inc();
                }
                return None;
            }
            *n += 1;
        }
        if let Some(m) = &self.metrics {
            m.connections_open.inc();
        }
        Some(Slot {
            limits: self.clone(),
            key,
            _permit: permit,
        })
    }
}

/// A connection's place under its listener's cap, before it is counted against its client's
/// address: that is known only once a PROXY protocol header is read.
pub(super) struct Place {
    limits: Arc<ConnLimits>,
    permit: OwnedSemaphorePermit,
}

impl Place {
    /// Counts the connection against its client, `peer` (canonical); `None` (and the place
    /// freed) when that address is at its limit.
    pub(super) fn admit(self, peer: SocketAddr) -> Option<Slot> {
        let slot = self.limits.admit(peer.ip(), self.permit);
        if slot.is_none() {
            tracing::debug!(%peer, "connection refused: too many from this address");
        }
        slot
    }
}

/// One admitted connection; dropping it frees its place.
pub(super) struct Slot {
    limits: Arc<ConnLimits>,
    key: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(m) = &self.limits.metrics {
            m.connections_open.dec();
        }
        if self.limits.per_ip > 0 {
            // Remove the entry at zero so the map only holds addresses with open connections.
            self.limits.by_ip.remove_if_mut(&self.key, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
    }
}

/// How long the accept loop waits after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A listener behind its caps: hands out the connections that fit, until shutdown.
pub(super) struct Gate {
    listener: TcpListener,
    limits: Arc<ConnLimits>,
    stop: watch::Receiver<bool>,
    /// Accept failures since the last connection accepted, and when the first of them came.
    failing: Option<(u64, Instant)>,
}

impl Gate {
    /// An accept failed: said once when failures begin (they come every [`ACCEPT_BACKOFF`]
    /// while they last), counted until one succeeds.
    fn failed(&mut self, e: &std::io::Error) {
        match &mut self.failing {
            Some((n, _)) => *n += 1,
            None => {
                tracing::warn!(error = %e, "accept failed; trying again every 50 ms, said again once it works");
                self.failing = Some((1, Instant::now()));
            }
        }
    }

    /// A connection was accepted: a run of failures, if any, is over.
    fn accepting(&mut self) {
        if let Some((failures, since)) = self.failing.take() {
            tracing::warn!(
                failures,
                for_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                "accept works again"
            );
        }
    }

    pub(super) fn new(
        listener: TcpListener,
        limits: Arc<ConnLimits>,
        stop: watch::Receiver<bool>,
    ) -> Gate {
        Gate {
            listener,
            limits,
            failing: None,
            stop,
        }
    }

    /// The next connection to serve and its peer (canonical), once there is room for it. `None`
    /// at shutdown.
    pub(super) async fn next(&mut self) -> Option<(TcpStream, SocketAddr, Place)> {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = stopped(&mut self.stop) => return None,
                accepted = self.listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        self.accepting();
                        (tcp, client::canonical(peer))
                    }
                    Err(e) => {
                        self.failed(&e);
                        // Transient (out of file descriptors, mostly): back off briefly.
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let permit = match (
                self.limits.places.clone().try_acquire_owned(),
                self.limits.at_cap,
            ) {
                (Ok(p), _) => p,
                (Err(_), AtCap::Refuse) => {
                    tracing::debug!(%peer, "connection refused: the listener is at its cap");
                    continue;
                }
                // Backpressure: at the cap this loop holds the connection it has and accepts no
                // more, so new connections wait in the kernel's backlog until one closes.
                (Err(_), AtCap::Wait) => tokio::select! {
                    _ = stopped(&mut self.stop) => return None,
                    p = self.limits.places.clone().acquire_owned() => p.ok()?,
                },
            };
            // TCP_NODELAY comes from the listener (`app::bind`).
            let place = Place {
                limits: self.limits.clone(),
                permit,
            };
            return Some((tcp, peer, place));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An edge listener's limits: `places` in all, `per_ip` per address.
    fn limits(places: usize, per_ip: usize) -> Arc<ConnLimits> {
        let places = NonZeroUsize::new(places).expect("places");
        Arc::new(ConnLimits::edge(places, per_ip, Metrics::unregistered()))
    }

    #[test]
    fn per_address_places_are_counted_and_freed() {
        let limits = limits(10, 2);
        let permit = || limits.places.clone().try_acquire_owned().unwrap();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        let first = limits.admit(a, permit()).unwrap();
        let _second = limits.admit(b, permit()).unwrap();
        assert!(
            limits.admit(a, permit()).is_none(),
            "same /64: third refused"
        );
        assert!(
            limits
                .admit("192.0.2.1".parse().unwrap(), permit())
                .is_some()
        );
        drop(first);
        assert!(
            limits.admit(a, permit()).is_some(),
            "a freed place is reused"
        );
    }

    /// A run of accept failures (out of file descriptors: one every 50 ms while it lasts) is
    /// said once as it begins and once as it ends, with its count; it was a warning each time.
    #[tokio::test]
    async fn a_run_of_accept_failures_is_said_when_it_begins_and_ends() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let limits = limits(1, 1);
        let (_stop_tx, stop) = watch::channel(false);
        let mut gate = Gate::new(listener, limits, stop);
        let emfile = || std::io::Error::from_raw_os_error(24);
        let ((), said) = crate::logged::logged(tracing::Level::WARN, || {
            for _ in 0..100 {
                gate.failed(&emfile());
            }
            gate.accepting();
            gate.accepting();
        });
        assert_eq!(said.matches("accept failed").count(), 1, "{said}");
        assert_eq!(said.matches("accept works again").count(), 1, "{said}");
        assert!(said.contains("failures=100"), "{said}");
    }
}
