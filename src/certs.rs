//! Certificates for the handshake: a bounded in-memory cache of `Arc<CertifiedKey>` in front of
//! the store, in front of the issuer; plus backoff after failures and the renewal schedule.
//!
//! A miss for a permitted name loads the stored certificate or, failing that, asks the issuer.
//! Every load, issuance or renewal of a name runs once, as a background task ("flight") that any
//! number of handshakes wait on, each for at most `tls.on_demand_timeout`: the order goes on if
//! they give up, and the next handshake finds its result. A failed issuance backs the name off
//! (see [`schedule`]) so later handshakes fail fast instead of each starting an order. Names the
//! policy does not permit are refused before any of that. This module does not speak HTTP.

pub mod schedule;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{Notify, watch};

use crate::Domain;
use crate::clock::{from_unix_secs, rfc3339, unix_now};
use crate::errors::chain as error_chain;
use crate::issuer::{IssueError, Issuer};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::store::{CertLifetime, DomainRecord, IssueStatus, Store, StoreError, StoredCert};

/// Certificates expiring within this long are counted in `clickedge_certificates_expiring`.
const EXPIRING_SOON: u64 = 7 * 86_400;
/// The maintenance loop wakes at least this often (gauges, and newly due renewals).
const MAINTENANCE_TICK: Duration = Duration::from_secs(60);
/// Stored certificates with an ARI-capable issuer are first checked within this spread after
/// start, so a restart does not ask the CA about every certificate at once.
const FIRST_CHECK_SPREAD: u64 = 6 * 3600;

/// Why no certificate is available for a name.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CertError {
    /// The name is not permitted: refused without I/O.
    #[error("{0} is not a registered domain")]
    NotServed(Domain),
    /// Issuance or loading failed; the message is recorded as the domain's last error.
    #[error("no certificate for {domain}: {message}")]
    Unavailable {
        /// The name.
        domain: Domain,
        /// What went wrong, in words.
        message: String,
    },
    /// A recent attempt failed; no new order before `retry_at`.
    #[error("no certificate for {domain}: backing off until {} after: {last_error}", rfc3339(from_unix_secs(*retry_at)))]
    BackingOff {
        /// The name.
        domain: Domain,
        /// Unix seconds.
        retry_at: u64,
        /// The failure that caused it.
        last_error: String,
    },
    /// The certificate did not arrive within `tls.on_demand_timeout` (the order goes on).
    #[error("no certificate for {0} within the on-demand timeout; the order goes on")]
    Timeout(Domain),
}

/// A cached certificate and when it stops being valid.
#[derive(Debug, Clone)]
struct Entry {
    key: Arc<CertifiedKey>,
    not_after: u64,
}

type Outcome = Option<Result<Entry, CertError>>;

/// What a flight does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flight {
    /// A handshake needs a certificate: load it, or issue one.
    Obtain,
    /// The renewal schedule says it is time: check ARI, then renew.
    Renew,
}

/// Renewal times by name, and names by time.
#[derive(Debug, Default)]
struct Schedule {
    by_time: BTreeSet<(u64, Domain)>,
    by_name: HashMap<Domain, u64>,
}

impl Schedule {
    fn set(&mut self, name: &Domain, at: u64) {
        if let Some(old) = self.by_name.insert(name.clone(), at) {
            self.by_time.remove(&(old, name.clone()));
        }
        self.by_time.insert((at, name.clone()));
    }

    fn remove(&mut self, name: &Domain) {
        if let Some(old) = self.by_name.remove(name) {
            self.by_time.remove(&(old, name.clone()));
        }
    }

    fn pop_due(&mut self, now: u64) -> Vec<Domain> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.by_time.first() {
            if *at > now {
                break;
            }
            if let Some((_, name)) = self.by_time.pop_first() {
                self.by_name.remove(&name);
                due.push(name);
            }
        }
        due
    }

    fn next(&self) -> Option<u64> {
        self.by_time.first().map(|(at, _)| *at)
    }
}

/// Status of a domain's certificate, for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertStatus {
    /// `none`, `pending`, `valid` or `failed`.
    pub status: &'static str,
    /// Issuer of the current certificate.
    pub issuer: Option<String>,
    /// Validity start (RFC 3339).
    pub not_before: Option<String>,
    /// Validity end (RFC 3339).
    pub not_after: Option<String>,
    /// When the certificate is next renewed (or renewal information checked), RFC 3339.
    pub next_renewal: Option<String>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// No new order before this time (RFC 3339), after a failure.
    pub retry_at: Option<String>,
    /// Last issuance error, with the CA's problem type and detail.
    pub last_error: Option<String>,
}

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

/// Shares the certificate gauges' store scan between concurrent callers.
///
/// The scan reads the whole certificates table, so one scan per issuance made a burst of first
/// handshakes quadratic: measured, the built-in CA issued 354 certificates/s up to 10 000
/// stored and about 80/s at 22 000 (`cargo bench --bench scale`). Callers take a ticket, then
/// one at a time either find that a scan started after their ticket has already finished, or
/// run one that covers every ticket taken so far.
#[derive(Default)]
struct GaugeScans {
    asked: AtomicU64,
    covered: AtomicU64,
    /// Held across the scan on purpose: it is what makes waiting callers share the next scan.
    scan: tokio::sync::Mutex<()>,
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

    /// Certificate status of `name` for the admin API.
    pub async fn status(&self, record: &DomainRecord) -> Result<CertStatus, StoreError> {
        let name = &record.name;
        let stored = self.store.certificate(name).await?;
        let now = unix_now();
        let pending = lock(&self.inflight).contains_key(name);
        let status = match &stored {
            _ if pending => "pending",
            Some(c) if c.not_after > now => "valid",
            _ if record.last_error.is_some() => "failed",
            _ => "none",
        };
        let next_renewal = lock(&self.schedule).by_name.get(name).copied();
        Ok(CertStatus {
            status,
            issuer: stored.as_ref().map(|c| c.issuer.clone()),
            not_before: stored
                .as_ref()
                .map(|c| rfc3339(from_unix_secs(c.not_before))),
            not_after: stored
                .as_ref()
                .map(|c| rfc3339(from_unix_secs(c.not_after))),
            next_renewal: stored
                .as_ref()
                .and(next_renewal)
                .map(|t| rfc3339(from_unix_secs(t))),
            failures: record.failures,
            retry_at: (record.retry_at > now).then(|| rfc3339(from_unix_secs(record.retry_at))),
            last_error: record.last_error.clone(),
        })
    }

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
        let summary = self.store.cert_summary(unix_now() + EXPIRING_SOON).await?;
        self.metrics.certs_held.set(summary.count as i64);
        self.metrics.certs_expiring.set(summary.expiring as i64);
        self.metrics
            .certs_soonest_expiry
            .set(summary.soonest_expiry.unwrap_or(0) as f64);
        self.gauges.covered.store(covers, Ordering::SeqCst);
        Ok(())
    }

    /// Renews certificates when the schedule says so, until `stop` turns true.
    pub async fn run_maintenance(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let now = unix_now();
            let due = lock(&self.schedule).pop_due(now);
            for name in due {
                // The flight runs on its own; nobody waits for it here.
                drop(self.fly(&name, Flight::Renew));
            }
            if let Err(e) = self.refresh_gauges().await {
                tracing::warn!(error = %error_chain(&e), "refreshing certificate gauges");
            }
            let next = lock(&self.schedule).next();
            let sleep = next.map_or(MAINTENANCE_TICK, |at| {
                Duration::from_secs(at.saturating_sub(unix_now())).min(MAINTENANCE_TICK)
            });
            tokio::select! {
                _ = tokio::time::sleep(sleep.max(Duration::from_millis(200))) => {}
                _ = self.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Joins the flight for `name`, starting one if none is in the air.
    fn fly(self: &Arc<Self>, name: &Domain, kind: Flight) -> watch::Receiver<Outcome> {
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
        let unavailable = |message: String| CertError::Unavailable {
            domain: name.clone(),
            message,
        };
        let stored = self
            .store
            .certificate(name)
            .await
            .map_err(|e| unavailable(error_chain(&e)))?;
        if let Some(cert) = stored.as_ref().filter(|c| c.not_after > unix_now()) {
            let entry = self.entry(cert).map_err(unavailable)?;
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
            return Err(unavailable(reason));
        }
        self.issue(name, None).await.map_err(|e| match e {
            IssueOutcome::Failed(status) => CertError::BackingOff {
                domain: name.clone(),
                retry_at: status.retry_at,
                last_error: status.last_error.unwrap_or_default(),
            },
            IssueOutcome::Unusable(message) => unavailable(message),
        })
    }

    async fn renew(&self, name: &Domain) -> Result<Entry, CertError> {
        let unavailable = |message: String| CertError::Unavailable {
            domain: name.clone(),
            message,
        };
        if !self.policy.is_registered(name.as_str()) {
            return Err(CertError::NotServed(name.clone()));
        }
        let current = self
            .store
            .certificate(name)
            .await
            .map_err(|e| unavailable(error_chain(&e)))?
            .ok_or_else(|| unavailable("no certificate to renew".into()))?;
        let now = unix_now();
        match self.issuer.renewal_window(&current).await {
            Ok(Some(w)) => {
                let at = schedule::ari_renew_at(w.start, w.end, now, rand::random());
                if at > now {
                    let check = now + w.check_after.as_secs().max(60);
                    lock(&self.schedule).set(name, at.min(check));
                    return self.entry(&current).map_err(unavailable);
                }
                tracing::info!(domain = %name, window_start = %rfc3339(from_unix_secs(w.start)), "renewal window open: renewing");
            }
            // Without renewal information (the CA offers none, or could not be asked), the
            // lifetime rule decides: this check may come early (every certificate gets one within
            // hours of a start), and renewing on it would reissue every certificate after every
            // restart.
            info => {
                if let Err(e) = info {
                    tracing::warn!(domain = %name, error = %e, "renewal information unavailable");
                }
                // Renew once the earliest point the rule can pick has passed; a fresh random
                // point here could defer a check that came on time.
                let (nb, na) = (current.not_before, current.not_after);
                if now < schedule::default_renew_at(nb, na, 1.0) {
                    let at = schedule::default_renew_at(nb, na, rand::random());
                    lock(&self.schedule).set(name, at);
                    return self.entry(&current).map_err(unavailable);
                }
            }
        }
        match self.issue(name, Some(&current)).await {
            Ok(entry) => {
                self.metrics.renewals.with_label_values(&["ok"]).inc();
                Ok(entry)
            }
            Err(e) => {
                self.metrics.renewals.with_label_values(&["failed"]).inc();
                // The current certificate keeps serving; the schedule was set by `issue`.
                let message = match e {
                    IssueOutcome::Failed(s) => s.last_error.unwrap_or_default(),
                    IssueOutcome::Unusable(m) => m,
                };
                tracing::warn!(domain = %name, error = %message, "renewal failed; the current certificate keeps serving");
                self.entry(&current).map_err(unavailable)
            }
        }
    }

    /// Issues, stores and schedules a certificate, or records the failure and backs off.
    async fn issue(
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
                .map_err(IssueOutcome::Unusable),
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
            return Err(IssueOutcome::Unusable(error_chain(&e)));
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
            last_error: Some(e.to_string()),
            failures,
            retry_at,
        };
        tracing::warn!(domain = %name, error = %e, failures, retry_at = %rfc3339(from_unix_secs(retry_at)), "certificate issuance failed");
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

    fn entry(&self, cert: &StoredCert) -> Result<Entry, String> {
        let key = certified_key(&self.provider, cert)?;
        Ok(Entry {
            key: Arc::new(key),
            not_after: cert.not_after,
        })
    }
}

/// Why `Certs::issue` produced no certificate.
enum IssueOutcome {
    /// The issuer failed; recorded, backing off.
    Failed(IssueStatus),
    /// The certificate could not be used or stored.
    Unusable(String),
}

/// Locks a mutex that is only ever held for map updates without `.await` or panics inside, so a
/// poisoned lock still guards consistent data.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Builds a rustls `CertifiedKey` from a stored PEM chain and key.
pub fn certified_key(provider: &CryptoProvider, cert: &StoredCert) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("stored certificate chain does not parse: {e}"))?;
    if chain.is_empty() {
        return Err("stored certificate chain is empty".into());
    }
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        // NOTE: the error is not formatted with the key material, only its kind.
        .map_err(|_| "stored private key does not parse".to_string())?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("stored private key is not usable: {e}"))?;
    Ok(CertifiedKey::new(chain, signing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuer::LocalCa;
    use crate::store::SqliteStore;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts issuances; fails while `fail` is set.
    struct Counting {
        ca: LocalCa,
        calls: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl Issuer for Counting {
        fn kind(&self) -> &'static str {
            "local"
        }
        async fn issue(
            &self,
            d: &Domain,
            r: Option<&StoredCert>,
        ) -> Result<StoredCert, IssueError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(IssueError::Refused {
                    domain: d.clone(),
                    problem_type: Some("urn:ietf:params:acme:error:rejectedIdentifier".into()),
                    detail: "policy forbids issuing for name".into(),
                });
            }
            self.ca.issue(d, r).await
        }
    }

    fn setup(dir: &std::path::Path) -> (Arc<Counting>, Arc<dyn Store>, Arc<Certs>) {
        let issuer = Arc::new(Counting {
            ca: LocalCa::load_or_create(dir).unwrap(),
            calls: AtomicUsize::new(0),
            fail: false.into(),
        });
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let certs = certs_over(
            &store,
            issuer.clone(),
            [Domain::parse("a.example.com").unwrap()],
        );
        (issuer, store, Arc::new(certs))
    }

    /// A certificate layer over `store` and `issuer` serving `names`, as a (re)start makes it.
    fn certs_over(
        store: &Arc<dyn Store>,
        issuer: Arc<dyn Issuer>,
        names: impl IntoIterator<Item = Domain>,
    ) -> Certs {
        Certs::new(
            100,
            store.clone(),
            issuer,
            Arc::new(Policy::new(names, None)),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            Metrics::unregistered(),
            Duration::from_secs(5),
        )
    }

    /// [`setup`] with `a.example.com` registered in the store (the policy already serves it).
    async fn registered(
        dir: &std::path::Path,
    ) -> (Arc<Counting>, Arc<dyn Store>, Arc<Certs>, Domain) {
        let (issuer, store, certs) = setup(dir);
        let name = Domain::parse("a.example.com").unwrap();
        store.add_domain(&name, 0).await.unwrap();
        (issuer, store, certs, name)
    }

    async fn record(store: &Arc<dyn Store>, name: &Domain) -> DomainRecord {
        store.domain(name).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_issuance() {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, store, certs, name) = registered(dir.path()).await;
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let certs = certs.clone();
                let name = name.clone();
                tokio::spawn(async move { certs.resolve(&name).await.map(|_| ()) })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);
        assert!(store.certificate(&name).await.unwrap().is_some());
        let status = certs.status(&record(&store, &name).await).await.unwrap();
        assert_eq!(status.status, "valid");
        assert!(status.next_renewal.is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_issuances_each_return_with_gauges_counting_their_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<Domain> = (0..24)
            .map(|i| Domain::parse(&format!("n{i}.example.com")).unwrap())
            .collect();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        for name in &names {
            store.add_domain(name, 0).await.unwrap();
        }
        let ca = Arc::new(LocalCa::load_or_create(dir.path()).unwrap());
        let certs = Arc::new(certs_over(&store, ca, names.clone()));
        let mut tasks = tokio::task::JoinSet::new();
        for name in names.clone() {
            let certs = certs.clone();
            tasks.spawn(async move { certs.resolve(&name).await.map(drop) });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
        // Each issuance returned only after a scan that saw its certificate.
        assert_eq!(certs.metrics.certs_held.get(), 24);
        assert_eq!(certs.gauges.asked.load(Ordering::SeqCst), 24);
        assert_eq!(certs.gauges.covered.load(Ordering::SeqCst), 24);
    }

    /// `(hit, miss)` of `clickedge_certificate_lookups_total`.
    fn lookups(certs: &Certs) -> (u64, u64) {
        (
            certs.metrics.cert_lookup_hits.get(),
            certs.metrics.cert_lookup_misses.get(),
        )
    }

    #[tokio::test]
    async fn lookups_count_a_miss_per_flight_and_a_hit_per_cached_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, store, certs, name) = registered(dir.path()).await;
        certs.resolve(&name).await.unwrap();
        assert_eq!(lookups(&certs), (0, 1), "issued: a miss");
        certs.resolve(&name).await.unwrap();
        certs.resolve(&name).await.unwrap();
        assert_eq!(lookups(&certs), (2, 1), "then served from memory");

        // A restart (cold cache) loads the stored certificate: a miss, no issuance.
        let cold = Arc::new(certs_over(&store, issuer.clone(), [name.clone()]));
        cold.resolve(&name).await.unwrap();
        cold.resolve(&name).await.unwrap();
        assert_eq!(lookups(&cold), (1, 1));
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);

        // A refused name looks nothing up.
        let other = Domain::parse("b.example.com").unwrap();
        assert!(cold.resolve(&other).await.is_err());
        assert_eq!(lookups(&cold), (1, 1));
    }

    #[tokio::test]
    async fn unregistered_names_are_refused_without_issuing() {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, _store, certs) = setup(dir.path());
        let other = Domain::parse("b.example.com").unwrap();
        assert!(matches!(
            certs.resolve(&other).await,
            Err(CertError::NotServed(_))
        ));
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_failure_backs_off_instead_of_ordering_again() {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, store, certs, name) = registered(dir.path()).await;
        issuer.fail.store(true, Ordering::SeqCst);
        for _ in 0..5 {
            let err = certs.resolve(&name).await.unwrap_err();
            assert!(matches!(err, CertError::BackingOff { .. }), "{err}");
            assert!(err.to_string().contains("rejectedIdentifier"), "{err}");
        }
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);
        let rec = record(&store, &name).await;
        assert_eq!(rec.failures, 1);
        assert!(rec.retry_at >= unix_now() + 59);
        let status = certs.status(&rec).await.unwrap();
        assert_eq!(status.status, "failed");
        assert!(status.last_error.unwrap().contains("policy forbids"));

        // Backoff survives a restart of the certificate layer.
        let (_, _, fresh) = {
            let issuer2 = issuer.clone();
            let c = certs_over(&store, issuer2.clone(), [name.clone()]);
            c.restore(&store.domains().await.unwrap(), &[]);
            (issuer2, store.clone(), Arc::new(c))
        };
        assert!(fresh.resolve(&name).await.is_err());
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);

        // Clearing the backoff lets the next handshake order again.
        issuer.fail.store(false, Ordering::SeqCst);
        certs.reset_backoff(&name).await.unwrap();
        certs.resolve(&name).await.unwrap();
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            record(&store, &name).await,
            DomainRecord {
                name: name.clone(),
                created_at: 0,
                last_error: None,
                failures: 0,
                retry_at: 0,
            }
        );
    }

    #[tokio::test]
    async fn a_check_without_renewal_information_renews_only_when_the_lifetime_rule_says() {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, store, certs, name) = registered(dir.path()).await;
        certs.resolve(&name).await.unwrap();
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);
        // The early check every stored certificate gets after a start: the issuer offers no
        // renewal window and the certificate is young, so nothing is ordered, and the next
        // check is set by the lifetime rule.
        certs.renew(&name).await.unwrap();
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);
        let cert = store.certificate(&name).await.unwrap().unwrap();
        let due = lock(&certs.schedule).by_name.get(&name).copied().unwrap();
        let lifetime = cert.not_after - cert.not_before;
        assert!(
            due > unix_now() && due >= cert.not_before + lifetime / 2,
            "next check {due} for a certificate valid {}..{}",
            cert.not_before,
            cert.not_after
        );
    }

    #[tokio::test]
    async fn a_renewal_check_does_not_cache_a_name_nobody_clicked() {
        let dir = tempfile::tempdir().unwrap();
        let (_issuer, _store, certs, name) = registered(dir.path()).await;
        certs.resolve(&name).await.unwrap();
        // As after a restart: stored, not in memory.
        certs.cache.invalidate(&name);
        let mut done = certs.fly(&name, Flight::Renew);
        done.wait_for(Option::is_some).await.unwrap();
        assert!(!certs.cache.contains_key(&name));
        // A handshake's flight does cache it.
        let mut done = certs.fly(&name, Flight::Obtain);
        done.wait_for(Option::is_some).await.unwrap();
        assert!(certs.cache.contains_key(&name));
    }

    /// Holds back every name while `reason` is set.
    struct Gate(Mutex<Option<String>>);

    impl IssueGate for Gate {
        fn hold(&self, _name: &Domain) -> Option<String> {
            lock(&self.0).clone()
        }
    }

    #[tokio::test]
    async fn a_held_back_name_orders_nothing_and_records_why() {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, store, _, name) = registered(dir.path()).await;
        let gate = Arc::new(Gate(Mutex::new(Some("the `caa` check fails".into()))));
        let certs =
            Arc::new(certs_over(&store, issuer.clone(), [name.clone()]).with_gate(gate.clone()));
        let err = certs.resolve(&name).await.unwrap_err();
        assert!(err.to_string().contains("`caa` check fails"), "{err}");
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 0);
        let rec = record(&store, &name).await;
        assert_eq!(rec.last_error.as_deref(), Some("the `caa` check fails"));
        assert_eq!((rec.failures, rec.retry_at), (0, 0), "no backoff");
        // Once the gate opens, the next handshake orders.
        *lock(&gate.0) = None;
        certs.resolve(&name).await.unwrap();
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);
        assert_eq!(record(&store, &name).await.last_error, None);
    }

    #[test]
    fn schedule_pops_in_time_order() {
        let mut s = Schedule::default();
        let a = Domain::parse("a.example.com").unwrap();
        let b = Domain::parse("b.example.com").unwrap();
        s.set(&a, 10);
        s.set(&b, 5);
        s.set(&a, 20);
        assert_eq!(s.next(), Some(5));
        assert_eq!(s.pop_due(10), vec![b.clone()]);
        assert_eq!(s.pop_due(19), Vec::<Domain>::new());
        assert_eq!(s.pop_due(20), vec![a.clone()]);
        assert_eq!(s.next(), None);
        s.set(&a, 1);
        s.remove(&a);
        assert_eq!(s.pop_due(100), Vec::<Domain>::new());
    }
}
