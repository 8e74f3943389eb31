//! Single flight: every load, issuance or renewal of a name runs once, as a background task that
//! any number of handshakes wait on. A failed issuance is recorded and backs the name off.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::error::LoadError;
use super::key::Entry;
use super::{CertError, Certs, lock, schedule};
use crate::Domain;
use crate::clock::{from_unix_secs, rfc3339, unix_now};
use crate::errors::chain as error_chain;
use crate::issuer::IssueError;
use crate::store::{IssueStatus, StoredCert};

/// What a flight's waiters get: none until it lands.
pub(super) type Outcome = Option<Result<Entry, CertError>>;

/// What a flight does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flight {
    /// A handshake needs a certificate: load it, or issue one.
    Obtain,
    /// The renewal schedule says it is time: check ARI, then renew.
    Renew,
}

impl Certs {
    /// Joins the flight for `name`, starting one if none is in the air.
    pub(super) fn fly(self: &Arc<Self>, name: &Domain, kind: Flight) -> watch::Receiver<Outcome> {
        let mut inflight = lock(&self.inflight);
        if let Some(rx) = inflight.get(name) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        inflight.insert(name.clone(), rx.clone());
        drop(inflight);
        let this = self.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let result = match kind {
                Flight::Obtain => this.obtain(&name).await,
                Flight::Renew => this.renew(&name).await,
            };
            // Cache first, then leave the in-flight map: a handshake arriving in between finds
            // the certificate and starts no second order. A renewal check only replaces what is
            // cached: it visits every stored certificate, and caching each would fill memory
            // with names nobody clicks (the next handshake loads from the store anyway).
            if let Ok(entry) = &result
                && (kind == Flight::Obtain || this.cache.contains_key(&name))
            {
                this.cache.insert(name.clone(), entry.clone());
            }
            lock(&this.inflight).remove(&name);
            let _ = tx.send(Some(result));
        });
        rx
    }

    async fn obtain(&self, name: &Domain) -> Result<Entry, CertError> {
        let unavailable = |e: LoadError| CertError::unavailable(name, e);
        let stored = self
            .store
            .certificate(name)
            .await
            .map_err(|e| unavailable(e.into()))?;
        if let Some(cert) = stored.as_ref().filter(|c| c.not_after > unix_now()) {
            let entry = self.entry(cert).map_err(|e| unavailable(e.into()))?;
            let mut schedule = lock(&self.schedule);
            if !schedule.by_name.contains_key(name) {
                schedule.set(
                    name,
                    schedule::default_renew_at(cert.not_before, cert.not_after, rand::random()),
                );
            }
            return Ok(entry);
        }
        if let Some(reason) = self.gate.as_ref().and_then(|g| g.hold(name)) {
            // Recorded as the domain's last error (without backoff: asking the gate is free).
            let record = self.store.domain(name).await.ok().flatten();
            let status = IssueStatus {
                last_error: Some(reason.clone()),
                failures: record.as_ref().map_or(0, |r| r.failures),
                retry_at: record.as_ref().map_or(0, |r| r.retry_at),
            };
            if let Err(e) = self.store.set_status(name, &status).await {
                tracing::warn!(domain = %name, error = %error_chain(&e), "recording certificate status");
            }
            tracing::info!(domain = %name, reason = %reason, "certificate order held back");
            return Err(CertError::HeldBack {
                domain: name.clone(),
                reason,
            });
        }
        self.issue(name, None).await.map_err(|e| match e {
            IssueOutcome::Failed(status) => CertError::BackingOff {
                domain: name.clone(),
                retry_at: status.retry_at,
                last_error: status.last_error.unwrap_or_default(),
            },
            IssueOutcome::Unusable(e) => unavailable(e),
        })
    }

    /// Issues, stores and schedules a certificate, or records the failure and backs off.
    pub(super) async fn issue(
        &self,
        name: &Domain,
        replacing: Option<&StoredCert>,
    ) -> Result<Entry, IssueOutcome> {
        let kind = self.issuer.kind();
        let started = Instant::now();
        let result = match self.issuer.issue(name, replacing).await {
            Ok(cert) => self
                .entry(&cert)
                .map(|e| (cert, e))
                .map_err(|e| IssueOutcome::Unusable(e.into())),
            Err(e) => Err(self.failed(name, &e, replacing.map(|c| c.not_after)).await),
        };
        let (cert, entry) = match result {
            Ok(ok) => ok,
            Err(outcome) => {
                self.metrics.certs_failed.with_label_values(&[kind]).inc();
                return Err(outcome);
            }
        };
        if let Err(e) = self.store.put_certificate(name, &cert).await {
            self.metrics.certs_failed.with_label_values(&[kind]).inc();
            return Err(IssueOutcome::Unusable(e.into()));
        }
        self.metrics.certs_issued.with_label_values(&[kind]).inc();
        self.metrics
            .issuance_seconds
            .observe(started.elapsed().as_secs_f64());
        self.backoff.remove(name);
        if let Err(e) = self.store.set_status(name, &IssueStatus::default()).await {
            tracing::warn!(domain = %name, error = %error_chain(&e), "recording certificate status");
        }
        lock(&self.schedule).set(
            name,
            schedule::default_renew_at(cert.not_before, cert.not_after, rand::random()),
        );
        self.wake.notify_one();
        if let Err(e) = self.refresh_gauges().await {
            tracing::warn!(error = %error_chain(&e), "refreshing certificate gauges");
        }
        tracing::info!(domain = %name, issuer = kind, not_after = %rfc3339(from_unix_secs(cert.not_after)), renewal = replacing.is_some(), "certificate issued");
        Ok(entry)
    }

    async fn failed(
        &self,
        name: &Domain,
        e: &IssueError,
        serving_until: Option<u64>,
    ) -> IssueOutcome {
        let now = unix_now();
        let failures = self
            .store
            .domain(name)
            .await
            .ok()
            .flatten()
            .map_or(0, |d| d.failures)
            .saturating_add(1);
        let retry_at = schedule::retry_at(now, failures, serving_until);
        let status = IssueStatus {
            last_error: Some(error_chain(e)),
            failures,
            retry_at,
        };
        tracing::warn!(domain = %name, error = %error_chain(e), failures, retry_at = %rfc3339(from_unix_secs(retry_at)), "certificate issuance failed");
        if let Err(se) = self.store.set_status(name, &status).await {
            tracing::warn!(domain = %name, error = %error_chain(&se), "recording certificate status");
        }
        self.backoff.insert(name.clone(), status.clone());
        if serving_until.is_some() {
            lock(&self.schedule).set(name, retry_at);
            self.wake.notify_one();
        }
        IssueOutcome::Failed(status)
    }
}

/// Why `Certs::issue` produced no certificate.
pub(super) enum IssueOutcome {
    /// The issuer failed; recorded, backing off.
    Failed(IssueStatus),
    /// The certificate could not be used or stored.
    Unusable(LoadError),
}
