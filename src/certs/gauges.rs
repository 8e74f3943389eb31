//! The certificate gauges (`clickedge_certificates_held`, `_expiring`, `_expired`,
//! `_soonest_expiry_…`),
//! refreshed from one store scan shared by concurrent callers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Certs;
use crate::clock::unix_secs;
use crate::store::StoreError;

/// Certificates expiring within this long are counted in `clickedge_certificates_expiring`.
const EXPIRING_SOON: Duration = Duration::from_secs(7 * 86_400);

/// Shares the certificate gauges' store scan between concurrent callers.
///
/// The scan reads the whole certificates table, so one scan per issuance made a burst of first
/// handshakes quadratic: measured, the built-in CA issued 354 certificates/s up to 10 000
/// stored and about 80/s at 22 000 (`cargo bench --bench scale`). Callers take a ticket, then
/// one at a time either find that a scan started after their ticket has already finished, or
/// run one that covers every ticket taken so far.
#[derive(Default)]
pub(super) struct GaugeScans {
    pub(super) asked: AtomicU64,
    pub(super) covered: AtomicU64,
    /// Held across the scan on purpose: it is what makes waiting callers share the next scan.
    scan: tokio::sync::Mutex<()>,
}

impl Certs {
    /// Refreshes the certificate gauges from the store. When it returns, the gauges come from
    /// a scan that started after the call, so they count every certificate stored before it;
    /// concurrent callers share that scan (see [`GaugeScans`]).
    pub async fn refresh_gauges(&self) -> Result<(), StoreError> {
        let ticket = self.gauges.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let _scan = self.gauges.scan.lock().await;
        if self.gauges.covered.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let covers = self.gauges.asked.load(Ordering::SeqCst);
        let now = self.clock.now();
        let summary = self.store.cert_summary(now, now + EXPIRING_SOON).await?;
        self.metrics.certs_held.set(summary.count as i64);
        self.metrics.certs_expiring.set(summary.expiring as i64);
        self.metrics.certs_expired.set(summary.expired as i64);
        self.metrics
            .certs_soonest_expiry
            .set(summary.soonest_expiry.map(|at| unix_secs(at) as f64));
        self.gauges.covered.store(covers, Ordering::SeqCst);
        Ok(())
    }
}
