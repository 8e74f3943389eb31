//! Single flight: every load, issuance or renewal of a name runs once, as a background task that
//! any number of handshakes wait on. A failed issuance is recorded and backs the name off.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::watch;

use super::backoff::NotBefore;
use super::error::LoadError;
use super::key::Entry;
use super::{CertError, Certs, lock, schedule};
use crate::Domain;
use crate::clock::rfc3339;
use crate::errors::chain as error_chain;
use crate::issuer::IssueError;
use crate::store::StoredCert;

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
        let stored = self
            .store
            .certificate(name)
            .await
            .map_err(|e| CertError::unavailable(name, e))?;
        if let Some(cert) = stored.as_ref().filter(|c| c.not_after > self.clock.now()) {
            let entry = self
                .entry(cert)
                .map_err(|e| CertError::unavailable(name, e))?;
            let mut schedule = lock(&self.schedule);
            if !schedule.by_name.contains_key(name) {
                schedule.set(
                    name,
                    schedule::default_renew_at(cert.not_before, cert.not_after, rand::random()),
                );
            }
            return Ok(entry);
        }
        if let Some(hold) = self.gate.as_ref().and_then(|g| g.hold(name)) {
            // Recorded as the domain's last error (without backoff: asking the gate is free).
            if self
                .backoff
                .held_back(name, hold.clone().into(), self.clock.now())
                .await
            {
                tracing::info!(domain = %name, reason = %hold.message, "certificate order held back");
            }
            return Err(CertError::HeldBack {
                domain: name.clone(),
                hold,
            });
        }
        self.issue(name, None).await.map_err(|e| match e {
            IssueOutcome::Failed(not_before) => CertError::BackingOff {
                domain: name.clone(),
                retry_at: not_before.until,
                last_error: not_before.cause,
            },
            IssueOutcome::Unusable(e) => CertError::unavailable(name, e),
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
        self.backoff.succeeded(name).await;
        lock(&self.schedule).set(
            name,
            schedule::default_renew_at(cert.not_before, cert.not_after, rand::random()),
        );
        self.wake.notify_one();
        if let Err(e) = self.refresh_gauges().await {
            tracing::warn!(error = %error_chain(&e), "refreshing certificate gauges");
        }
        tracing::info!(domain = %name, issuer = kind, not_after = %rfc3339(cert.not_after), renewal = replacing.is_some(), "certificate issued");
        Ok(entry)
    }

    /// Records a failed order and backs off; a failing renewal is tried again at the retry time.
    async fn failed(
        &self,
        name: &Domain,
        e: &IssueError,
        serving_until: Option<SystemTime>,
    ) -> IssueOutcome {
        let failure = e.failure();
        let not_before = self
            .backoff
            .failed(name, failure, self.clock.now(), serving_until)
            .await;
        tracing::warn!(domain = %name, error = %not_before.cause, failures = not_before.failures, retry_at = %rfc3339(not_before.until), "certificate issuance failed");
        if serving_until.is_some() {
            lock(&self.schedule).set(name, not_before.until);
            self.wake.notify_one();
        }
        IssueOutcome::Failed(not_before)
    }
}

/// Why `Certs::issue` produced no certificate.
pub(super) enum IssueOutcome {
    /// The issuer failed; recorded, backing off.
    Failed(NotBefore),
    /// The certificate could not be used or stored.
    Unusable(LoadError),
}
