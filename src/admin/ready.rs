//! Readiness for load balancers and orchestrators: `/readyz` answers 200 once the edge serves
//! (store loaded, every listener bound) and 503 from the moment it starts draining, while it
//! still serves, so traffic moves away before connections close. `/healthz` (alive) is separate:
//! a draining edge is alive. The state is also the `clickedge_ready` gauge. This module does not
//! decide when to drain; `app` does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use prometheus::{IntGauge, Registry};

/// Whether the edge wants traffic.
#[derive(Debug)]
pub struct Readiness {
    ready: AtomicBool,
    gauge: IntGauge,
}

impl Readiness {
    /// Not ready; registers `clickedge_ready` into `registry`.
    pub fn new(registry: &Registry) -> Result<Arc<Readiness>, prometheus::Error> {
        let gauge = IntGauge::new(
            "clickedge_ready",
            "1 while /readyz answers 200 (serving), 0 while starting or draining",
        )?;
        registry.register(Box::new(gauge.clone()))?;
        Ok(Arc::new(Readiness {
            ready: AtomicBool::new(false),
            gauge,
        }))
    }

    /// Marks the edge ready (`true`) or draining (`false`).
    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
        self.gauge.set(i64::from(ready));
    }

    /// Whether the edge wants traffic.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The `/readyz` answer.
    pub fn answer(&self) -> (StatusCode, &'static str) {
        if self.is_ready() {
            (StatusCode::OK, "ready\n")
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: starting or draining\n",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_between_start_and_drain_and_the_gauge_follows() {
        let registry = Registry::new();
        let r = Readiness::new(&registry).unwrap();
        assert_eq!(r.answer().0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.gauge.get(), 0);
        r.set(true);
        assert_eq!(r.answer(), (StatusCode::OK, "ready\n"));
        assert_eq!(r.gauge.get(), 1);
        r.set(false);
        assert_eq!(r.answer().0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.gauge.get(), 0);
    }
}
