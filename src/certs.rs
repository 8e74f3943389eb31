//! Certificates for the handshake: a bounded in-memory cache of `Arc<CertifiedKey>` in front of
//! the store, in front of the issuer; plus backoff after failures and the renewal schedule.
//!
//! A miss for a permitted name loads the stored certificate or, failing that, asks the issuer.
//! Every load, issuance or renewal of a name runs once, as a background task ("flight") that any
//! number of handshakes wait on, each for at most `tls.on_demand_timeout`: the order goes on if
//! they give up, and the next handshake finds its result. A failed issuance backs the name off
//! (see [`schedule`]) so later handshakes fail fast instead of each starting an order. Names the
//! policy does not permit are refused before any of that. This module does not speak HTTP.
//!
//! Here: the cache and the resolver ([`Certs::resolve`]). By concept: [`key`] (stored PEM to a
//! cached rustls key), [`flight`] (single flight, issuance and its failures), [`renewal`] (the
//! renewal queue and the maintenance loop), [`schedule`] (when to renew and retry, pure),
//! [`status`] (the admin API's view), [`gauges`] (certificate metrics), [`error`].

mod error;
mod flight;
mod gauges;
mod key;
mod renewal;
pub mod schedule;
mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use tokio::sync::{Notify, watch};

use crate::Domain;
use crate::clock::unix_now;
use crate::issuer::Issuer;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::store::{CertLifetime, DomainRecord, IssueStatus, Store, StoreError};
pub use error::{CertError, LoadError};
use flight::{Flight, Outcome};
use gauges::GaugeScans;
use key::Entry;
pub use key::{KeyError, certified_key};
use renewal::Schedule;
pub use status::CertStatus;

/// Stored certificates with an ARI-capable issuer are first checked within this spread after
/// start, so a restart does not ask the CA about every certificate at once.
const FIRST_CHECK_SPREAD: u64 = 6 * 3600;

/// Holds back first orders for a name while something known to make them fail is unresolved
/// (onboarding checks). Consulted in the background flight, never in the rustls resolver; it
/// must answer from memory.
pub trait IssueGate: Send + Sync + 'static {
    /// Why no order may be attempted for `name` now, naming what to fix; none to go ahead.
    fn hold(&self, name: &Domain) -> Option<String>;
}

/// The certificate source used by the TLS acceptor.
pub struct Certs {
    cache: moka::sync::Cache<Domain, Entry>,
    inflight: Mutex<HashMap<Domain, watch::Receiver<Outcome>>>,
    backoff: DashMap<Domain, IssueStatus>,
    schedule: Mutex<Schedule>,
    wake: Notify,
    store: Arc<dyn Store>,
    issuer: Arc<dyn Issuer>,
    policy: Arc<Policy>,
    provider: Arc<CryptoProvider>,
    metrics: Metrics,
    on_demand_timeout: Duration,
    gate: Option<Arc<dyn IssueGate>>,
    gauges: GaugeScans,
}

impl Certs {
    /// A certificate source holding at most `capacity` certificates in memory.
    pub fn new(
        capacity: u64,
        store: Arc<dyn Store>,
        issuer: Arc<dyn Issuer>,
        policy: Arc<Policy>,
        provider: Arc<CryptoProvider>,
        metrics: Metrics,
        on_demand_timeout: Duration,
    ) -> Certs {
        Certs {
            cache: moka::sync::Cache::new(capacity),
            inflight: Mutex::new(HashMap::new()),
            backoff: DashMap::new(),
            schedule: Mutex::new(Schedule::default()),
            wake: Notify::new(),
            store,
            issuer,
            policy,
            provider,
            metrics,
            on_demand_timeout,
            gate: None,
            gauges: GaugeScans::default(),
        }
    }

    /// Consults `gate` before every first order (not renewals: a serving certificate keeps
    /// being renewed).
    pub fn with_gate(mut self, gate: Arc<dyn IssueGate>) -> Certs {
        self.gate = Some(gate);
        self
    }

    /// Restores backoff and the renewal schedule from the store (at start).
    pub fn restore(&self, domains: &[DomainRecord], lifetimes: &[CertLifetime]) {
        let now = unix_now();
        for d in domains.iter().filter(|d| d.retry_at > now) {
            self.backoff.insert(
                d.name.clone(),
                IssueStatus {
                    last_error: d.last_error.clone(),
                    failures: d.failures,
                    retry_at: d.retry_at,
                },
            );
        }
        let mut schedule = lock(&self.schedule);
        for c in lifetimes {
            let due = schedule::default_renew_at(c.not_before, c.not_after, rand::random())
                .min(now + rand::random_range(0..FIRST_CHECK_SPREAD));
            schedule.set(&c.domain, due);
        }
    }

    /// The certificate for `name`, loading or issuing it if needed (waiting at most
    /// `tls.on_demand_timeout`). Names the policy does not permit are refused without I/O.
    ///
    /// Counts one `clickedge_certificate_lookups_total` per handshake that gets as far as a
    /// lookup: `hit` when the certificate is in memory, `miss` when it joins a flight (whatever
    /// the flight's outcome), so the hit rate says whether `tls.cert_cache_capacity` holds the
    /// hot names. Refused and backing-off names count neither: no certificate was looked for.
    pub async fn resolve(self: &Arc<Self>, name: &Domain) -> Result<Arc<CertifiedKey>, CertError> {
        let now = unix_now();
        if let Some(entry) = self.cache.get(name)
            && entry.not_after > now
            && self.policy.is_registered(name.as_str())
        {
            self.metrics.cert_lookup_hits.inc();
            return Ok(entry.key);
        }
        if !self.policy.allows(name).await {
            return Err(CertError::NotServed(name.clone()));
        }
        if let Some(entry) = self.cache.get(name)
            && entry.not_after > now
        {
            self.metrics.cert_lookup_hits.inc();
            return Ok(entry.key);
        }
        if let Some(status) = self.backoff.get(name)
            && status.retry_at > now
        {
            return Err(CertError::BackingOff {
                domain: name.clone(),
                retry_at: status.retry_at,
                last_error: status.last_error.clone().unwrap_or_default(),
            });
        }
        self.metrics.cert_lookup_misses.inc();
        let mut rx = self.fly(name, Flight::Obtain);
        let outcome = tokio::time::timeout(self.on_demand_timeout, rx.wait_for(Option::is_some))
            .await
            .map_err(|_| CertError::Timeout(name.clone()))?
            .map_err(|_| CertError::Timeout(name.clone()))?
            .clone();
        match outcome {
            Some(Ok(entry)) => Ok(entry.key),
            Some(Err(e)) => Err(e),
            None => Err(CertError::Timeout(name.clone())),
        }
    }

    /// True if `name` has an unexpired certificate in memory or in the store.
    pub async fn has_valid(&self, name: &Domain) -> bool {
        let now = unix_now();
        if let Some(entry) = self.cache.get(name) {
            return entry.not_after > now;
        }
        matches!(self.store.certificate(name).await, Ok(Some(c)) if c.not_after > now)
    }

    /// Forgets everything about `name` in memory (after it was unregistered).
    pub fn forget(&self, name: &Domain) {
        self.cache.invalidate(name);
        self.backoff.remove(name);
        lock(&self.schedule).remove(name);
    }

    /// Clears the backoff of `name` so the next handshake may order again.
    pub async fn reset_backoff(&self, name: &Domain) -> Result<(), StoreError> {
        self.backoff.remove(name);
        self.store.set_status(name, &IssueStatus::default()).await
    }
}

/// Locks a mutex that is only ever held for map updates without `.await` or panics inside, so a
/// poisoned lock still guards consistent data.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
