//! The certificate mirror's metrics, registered only when the node keeps a mirror (a
//! PostgreSQL store): an edge on SQLite exports no mirror series.

use prometheus::{IntCounter, IntGauge, Registry};

/// What the mirror exports.
#[derive(Clone)]
pub struct MirrorMetrics {
    /// Handshake certificates read from the mirror because the store failed.
    pub served: IntCounter,
    /// Certificates in the mirror.
    pub entries: IntGauge,
    /// 1 once this start's copy of the whole store is done, 0 before.
    pub filled: IntGauge,
}

impl MirrorMetrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<MirrorMetrics> {
        let m = MirrorMetrics::unregistered();
        registry.register(Box::new(m.served.clone()))?;
        registry.register(Box::new(m.entries.clone()))?;
        registry.register(Box::new(m.filled.clone()))?;
        Ok(m)
    }

    /// The metrics, in no registry (tests).
    pub fn unregistered() -> MirrorMetrics {
        // Invariant: the names and help texts are valid literals.
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        MirrorMetrics {
            served: counter(
                "clickedge_certificates_mirror_served_total",
                "Handshake certificates read from the local mirror because the store failed",
            ),
            entries: gauge(
                "clickedge_certificate_mirror_entries",
                "Certificates in the local mirror",
            ),
            filled: gauge(
                "clickedge_certificate_mirror_filled",
                "1 once this start's copy of every stored certificate is done",
            ),
        }
    }
}
