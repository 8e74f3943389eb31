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
//! Here: the cache and the resolver ([`Certs::resolve`]). By concept, in `certs/`: `key` (stored
//! PEM to a cached rustls key), `flight` (single flight, issuance), `claim` (a node's lease on a
//! name's certificate work, shared with other nodes through the store), `backoff` (the one
//! record of failures and retry times), `renewal` (the renewal queue and the maintenance loop),
//! [`schedule`] (when to renew and retry, pure), `status` (the admin API's view), `gauges`
//! (certificate metrics), `error`, `mirror` (a cluster node's sealed local copy of every stored
//! certificate, read when the store fails).
//!
//! Wall-clock time comes from the [`Clock`] handed to [`Certs::new`]; the on-demand timeout, the
//! bound on a store read a client waits on (`STORE_READ_BOUND`) and the maintenance loop's
//! sleeps are tokio's.

mod backoff;
mod claim;
mod error;
mod flight;
mod gauges;
mod key;
mod mirror;
mod renewal;
pub mod schedule;
mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use tokio::sync::Notify;

use crate::Domain;
use crate::clock::Clock;
use crate::issuer::Issuer;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::store::{
    CertLifetime, DomainRecord, FailureKind, IssueFailure, Store, StoreError, StoredCert,
};
use crate::sync::lock;
use backoff::Backoff;
pub use claim::ClaimSettings;
pub use error::{CertError, LoadError};
use flight::{Flight, InFlight};
use gauges::GaugeScans;
use key::Entry;
pub use key::{KeyError, certified_key};
pub use mirror::{CertMirror, MIRROR_FILE, MirrorError, MirrorMetrics};
use renewal::Schedule;
pub use status::CertStatus;

/// How many certificates are held in memory and how long a handshake waits for one (`[tls]`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Certificates held in memory (`tls.cert_cache_capacity`).
    pub cache_capacity: u64,
    /// How long a handshake waits for a load or an order (`tls.on_demand_timeout`).
    pub on_demand_timeout: Duration,
}

/// Holds back first orders for a name while something known to make them fail is unresolved
/// (onboarding checks). Consulted in the background flight, never in the rustls resolver; it
/// must answer from memory.
pub trait IssueGate: Send + Sync + 'static {
    /// Why no order may be attempted for `name` now; none to go ahead.
    fn hold(&self, name: &Domain) -> Option<Hold>;
}

/// Why an order is held back: the failing check, and words naming what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The id of the failing check (`caa`, `points-to-edge`, …).
    pub check: String,
    /// What fails and how to fix it, recorded as the domain's last error.
    pub message: String,
}

impl From<Hold> for IssueFailure {
    fn from(hold: Hold) -> IssueFailure {
        IssueFailure {
            kind: FailureKind::HeldBack { check: hold.check },
            detail: hold.message,
        }
    }
}

/// The certificate source used by the TLS acceptor.
pub struct Certs {
    cache: moka::sync::Cache<Domain, Entry>,
    inflight: Mutex<InFlight>,
    backoff: Backoff,
    schedule: Mutex<Schedule>,
    wake: Notify,
    store: Arc<dyn Store>,
    issuer: Arc<dyn Issuer>,
    policy: Arc<Policy>,
    provider: Arc<CryptoProvider>,
    metrics: Metrics,
    clock: Clock,
    on_demand_timeout: Duration,
    gate: Option<Arc<dyn IssueGate>>,
    claims: ClaimSettings,
    gauges: GaugeScans,
    mirror: Option<Arc<CertMirror>>,
    /// Names the store had no valid certificate for, and when that was read ([`Certs::has_valid`]
    /// asks per plain-HTTP request): the answer holds for [`NO_VALID_FOR`].
    no_valid: dashmap::DashMap<Domain, SystemTime>,
    /// Names whose flight found no valid certificate stored and the gate holding back their
    /// order, and when: while the gate still holds one, for at most [`HELD_UNSTORED_FOR`], its
    /// handshakes fail from memory instead of a store read each.
    held_unstored: dashmap::DashMap<Domain, SystemTime>,
    /// Names whose work waits for the account's order budget ([`OrderClaim::queued`]).
    ///
    /// [`OrderClaim::queued`]: crate::issuer::OrderClaim::queued
    budget_queued: Arc<dashmap::DashSet<Domain>>,
    /// Names whose last renewal attempt here failed (`clickedge_certificate_renewals_failing`):
    /// until a renewal succeeds, here or on another node, or the name is removed.
    renewals_failing: dashmap::DashSet<Domain>,
    /// Names whose renewal information could not be had at their last check here: warned of
    /// once, not at every check of hours apart until the lifetime rule renews them (a
    /// certificate the CA does not know, from the directory used before, fails every time).
    ari_failing: dashmap::DashSet<Domain>,
}

/// How long a held-back name found with nothing stored fails from memory before a handshake
/// looks in the store again (another node may have stored a certificate).
const HELD_UNSTORED_FOR: Duration = Duration::from_secs(60);

/// How long "no valid certificate stored" holds for [`Certs::has_valid`]: a name issued meanwhile
/// on another node is upgraded to HTTPS this much later, its plain-HTTP clicks served as before.
const NO_VALID_FOR: Duration = Duration::from_secs(10);

/// The longest a client waits on the store for one certificate read: a handshake whose
/// certificate is not in memory, a plain-HTTP request asking whether to upgrade. A database
/// that answers reads a row by its key in milliseconds; one that vanished (a black-holed route,
/// a failover) leaves the read waiting until the connection's `TCP_USER_TIMEOUT` ends it, a
/// minute later: far past `tls.on_demand_timeout` and `tls.handshake_timeout` (10 s each by
/// default), so the handshake would fail although the certificate mirror holds its
/// certificate. Past this bound the read counts as a store failure: the mirror answers (or a
/// handshake fails, a request stays on plain HTTP) with most of the default on-demand wait
/// left. It is also under the pool's 5 s wait for a free connection, so reads queued behind
/// hung ones end here too.
///
/// NOTE: a constant, not a setting: it only needs to sit well above a database's answer and
/// well below the handshake timeouts. Reads no client waits on (change propagation, renewal
/// checks) keep the connection's own bounds, as does the admin API's status, whose request
/// reads the domain's row from the store just before, unbounded.
const STORE_READ_BOUND: Duration = Duration::from_secs(3);

impl Certs {
    /// A certificate source over `store` and `issuer`, serving the names `policy` permits.
    pub fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        issuer: Arc<dyn Issuer>,
        policy: Arc<Policy>,
        provider: Arc<CryptoProvider>,
        metrics: Metrics,
        clock: Clock,
    ) -> Certs {
        Certs {
            cache: moka::sync::Cache::new(settings.cache_capacity),
            inflight: Mutex::new(HashMap::new()),
            backoff: Backoff::new(store.clone()),
            schedule: Mutex::new(Schedule::default()),
            wake: Notify::new(),
            store,
            issuer,
            policy,
            provider,
            metrics,
            clock,
            on_demand_timeout: settings.on_demand_timeout,
            gate: None,
            claims: ClaimSettings::default(),
            gauges: GaugeScans::default(),
            mirror: None,
            no_valid: dashmap::DashMap::new(),
            held_unstored: dashmap::DashMap::new(),
            budget_queued: Default::default(),
            renewals_failing: dashmap::DashSet::new(),
            ari_failing: dashmap::DashSet::new(),
        }
    }

    /// The certificate source of unit tests: 100 cached, 5 s for an order, aws-lc-rs, metrics
    /// of its own.
    #[cfg(test)]
    pub(crate) fn for_tests(
        store: Arc<dyn Store>,
        issuer: Arc<dyn Issuer>,
        policy: Arc<Policy>,
        clock: Clock,
    ) -> Certs {
        Certs::new(
            Settings {
                cache_capacity: 100,
                on_demand_timeout: Duration::from_secs(5),
            },
            store,
            issuer,
            policy,
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            Metrics::unregistered(),
            clock,
        )
    }

    /// Consults `gate` before every first order (not renewals: a serving certificate keeps
    /// being renewed).
    pub fn with_gate(mut self, gate: Arc<dyn IssueGate>) -> Certs {
        self.gate = Some(gate);
        self
    }

    /// Claims names for issuance as `claims` says (this node's id, the lease TTL) instead of
    /// the defaults (holder `node`, 60 s).
    pub fn with_claims(mut self, claims: ClaimSettings) -> Certs {
        self.claims = claims;
        self
    }

    /// Keeps `mirror` (a cluster node's local copy of every stored certificate) current, and
    /// serves from it when the store fails; none: no mirror (SQLite).
    pub fn with_mirror(mut self, mirror: Option<Arc<CertMirror>>) -> Certs {
        self.mirror = mirror;
        self
    }

    /// Restores backoff and the renewal schedule from the store (at start).
    pub fn restore(&self, domains: &[DomainRecord], lifetimes: &[CertLifetime]) {
        let now = self.clock.now();
        self.backoff.restore(domains, now);
        self.schedule_stored(lifetimes, now);
    }

    /// The certificate for `name`, loading or issuing it if needed (waiting at most
    /// `tls.on_demand_timeout`). Names the policy does not permit are refused without I/O.
    ///
    /// Counts one `clickedge_certificate_lookups_total` per handshake that gets as far as a
    /// lookup: `hit` when the certificate is in memory, `miss` when it looks in the store or
    /// joins a flight (whatever the outcome), so the hit rate says whether
    /// `tls.cert_cache_capacity` holds the hot names. Refused names, and backing-off or held-back
    /// names known to have nothing stored, count neither: no certificate was looked for.
    pub async fn resolve(self: &Arc<Self>, name: &Domain) -> Result<Arc<CertifiedKey>, CertError> {
        if let Some(key) = self.cached(name) {
            return Ok(key);
        }
        let now = self.clock.now();
        if !self.policy.allows(name).await {
            return Err(CertError::NotServed(name.clone()));
        }
        if let Some(entry) = self.cache.get(name)
            && entry.not_after > now
        {
            self.metrics.cert_lookup_hits.inc();
            return Ok(entry.key);
        }
        // A name backing off fails from memory once its flight found nothing stored; until
        // then it may be a failed renewal, whose certificate keeps serving.
        if let Some(pending) = self.backoff.pending(name, now)
            && pending.nothing_stored
        {
            return Err(flight::backing_off(name, pending));
        }
        if let Some(hold) = self.held_from_memory(name, now) {
            return Err(CertError::HeldBack {
                domain: name.clone(),
                hold,
            });
        }
        self.metrics.cert_lookup_misses.inc();
        // A renewal may take long (the CA's rate budget, an order): the certificate it replaces
        // serves meanwhile, read from the store rather than waited for. With nothing valid
        // stored, the renewal is waited for, as it may land within `tls.on_demand_timeout`,
        // unless it is queued for the account's order budget (for up to `acme.order_window`):
        // then a handshake fails at once rather than wait for nothing.
        if self.renewing(name) {
            match self.stored_scheduling(name, false).await {
                Ok(Some(entry)) => {
                    self.renewing_cache(name, &entry);
                    return Ok(entry.key);
                }
                Ok(None) if self.budget_queued.contains(name) => {
                    return Err(CertError::unavailable(name, LoadError::WaitsForBudget));
                }
                // Nothing valid stored, or the store failed: the flight's answer is waited for.
                Ok(None) | Err(_) => {}
            }
        }
        let mut rx = self.fly(name, Flight::Obtain);
        let outcome = tokio::time::timeout(self.on_demand_timeout, rx.wait_for(Option::is_some))
            .await
            .map_err(|_| CertError::Timeout(name.clone()))?
            .map_err(|_| CertError::Timeout(name.clone()))?
            .clone();
        match outcome {
            Some(Ok(entry)) if entry.not_after > self.clock.now() => Ok(entry.key),
            // A renewal that did not replace it hands back the certificate it keeps, which may
            // have expired: that is never served.
            Some(Ok(_)) => Err(match self.backoff.pending(name, self.clock.now()) {
                Some(p) => flight::backing_off(name, p),
                None => CertError::unavailable(name, LoadError::Expired),
            }),
            Some(Err(e)) => Err(e),
            None => Err(CertError::Timeout(name.clone())),
        }
    }

    /// Why `name`'s order is held back, from memory: its flight found nothing stored a moment
    /// ago and the gate still holds it (checks that pass let it go at once).
    fn held_from_memory(&self, name: &Domain, now: SystemTime) -> Option<Hold> {
        let gate = self.gate.as_ref()?;
        let recent = self
            .held_unstored
            .get(name)
            .is_some_and(|at| now < *at + HELD_UNSTORED_FOR);
        if !recent {
            return None;
        }
        gate.hold(name)
    }

    /// How long a first handshake waits for its certificate's order (`tls.on_demand_timeout`).
    pub fn on_demand_timeout(&self) -> Duration {
        self.on_demand_timeout
    }

    /// `name`'s certificate when memory has it, unexpired, for a name registered: what most
    /// handshakes get, without awaiting anything (counted as a hit).
    pub fn cached(&self, name: &Domain) -> Option<Arc<CertifiedKey>> {
        let entry = self.cache.get(name)?;
        if entry.not_after <= self.clock.now() || !self.policy.is_registered(name.as_str()) {
            return None;
        }
        self.metrics.cert_lookup_hits.inc();
        Some(entry.key)
    }

    /// True if `name` has an unexpired certificate in memory or in the store. Asked per
    /// plain-HTTP request: one found in the store is cached, and "none" is remembered for
    /// [`NO_VALID_FOR`], so a flood of requests for a name without one is not a store query each.
    pub async fn has_valid(&self, name: &Domain) -> bool {
        let now = self.clock.now();
        if let Some(entry) = self.cache.get(name) {
            return entry.not_after > now;
        }
        if self
            .no_valid
            .get(name)
            .is_some_and(|at| now < *at + NO_VALID_FOR)
        {
            return false;
        }
        // One that does not load serves no handshake: no redirect to HTTPS for it.
        let usable = match self.certificate_for_client(name).await {
            Ok(Some(c)) if c.not_after > now => self.entry(&c).ok().map(|entry| (c, entry)),
            _ => None,
        };
        match usable {
            Some((c, entry)) => {
                self.cache_registered(&lock(&self.inflight), name, entry);
                // Its handshakes now find it cached and never load it (which schedules):
                // scheduled here, or no node but the one that issued it would renew it.
                let at = schedule::default_renew_at(c.not_before, c.not_after, rand::random());
                self.schedule_unscheduled(name, at);
                true
            }
            None => {
                self.no_valid.insert(name.clone(), now);
                false
            }
        }
    }

    /// `name`'s stored certificate, read for a client waiting on it: a store that has not
    /// answered within [`STORE_READ_BOUND`] has failed (the read is dropped, and an answer that
    /// comes later with it).
    async fn certificate_for_client(
        &self,
        name: &Domain,
    ) -> Result<Option<StoredCert>, StoreError> {
        match tokio::time::timeout(STORE_READ_BOUND, self.store.certificate(name)).await {
            Ok(read) => read,
            Err(_) => Err(StoreError::Unavailable {
                op: "reading a certificate",
                source: format!("no answer within {} s", STORE_READ_BOUND.as_secs()).into(),
            }),
        }
    }

    /// Forgets everything about `name` in memory (after it was unregistered).
    pub fn forget(&self, name: &Domain) {
        // Under the in-flight lock, which whatever caches a certificate holds while it checks
        // that the name is still registered (`Certs::cache_registered`): a flight landing now
        // either cached before this drops it, or finds the name gone.
        {
            let _inflight = lock(&self.inflight);
            self.cache.invalidate(name);
        }
        self.no_valid.remove(name);
        self.held_unstored.remove(name);
        self.renewal_failing(name, false);
        self.ari_failing.remove(name);
        self.backoff.forget(name);
        // Likewise under the schedule's lock (`Certs::schedule_at`).
        lock(&self.schedule).remove(name);
        self.unmirror(name);
    }

    /// Forgets every certificate held in memory, so each name's next handshake loads it again
    /// from the store (a certificate replaced there by another process), and reschedules
    /// renewals from the stored lifetimes (SIGHUP). Returns how many certificates are stored.
    pub async fn reload(&self) -> Result<usize, StoreError> {
        let lifetimes = self.store.cert_lifetimes().await?;
        self.cache.invalidate_all();
        self.schedule_stored(&lifetimes, self.clock.now());
        self.wake.notify_one();
        self.refresh_gauges().await?;
        Ok(lifetimes.len())
    }

    /// Takes the issuance status another node recorded for a domain (change propagation): a
    /// name it backed off fails fast here too, one it cleared may order again.
    pub fn apply_status(&self, record: &DomainRecord) {
        self.backoff.apply(record, self.clock.now());
    }

    /// Takes the certificate of `name` as the store now holds it, after another node stored,
    /// renewed or removed it (change propagation): a cached one is replaced by the stored one
    /// when that differs (or dropped when there is none); one not cached is left to the next
    /// handshake to load, and put on the renewal schedule unless it is there already (as a
    /// start does for every stored certificate: the node that issued it may leave the cluster
    /// for good). The mirror, if any, copies it either way.
    pub async fn reload_name(&self, name: &Domain) -> Result<(), StoreError> {
        // What was found missing is looked for again.
        self.no_valid.remove(name);
        self.held_unstored.remove(name);
        let cached = self.cache.contains_key(name);
        if !cached && self.renewals_failing.contains(name) {
            // Its renewal failed here, and another node may have renewed it since: checked again
            // now (a check that finds nothing due no longer counts it failing).
            self.schedule_at(name, self.clock.now());
            self.wake.notify_one();
        }
        // A name no longer registered (removed while this read ran) keeps no copy: the mirror
        // is read only for registered names, and its copy would outlive the removal.
        let stored = self
            .store
            .certificate(name)
            .await?
            .filter(|_| self.policy.is_registered(name.as_str()));
        self.mirror_stored(name, stored.as_ref()).await;
        let now = self.clock.now();
        if !cached {
            if let Some(cert) = stored.filter(|c| c.not_after > now) {
                self.schedule_polling_unscheduled(name, &cert);
            }
            return Ok(());
        }
        // An expired certificate still stored is a renewal that keeps failing: it stays on the
        // schedule, to be tried again when its backoff says (not first at the next handshake).
        let expired_stored = stored.as_ref().is_some_and(|c| c.not_after <= now);
        match stored.filter(|c| c.not_after > now) {
            // The certificate cached already (this node's own write, come back): kept as it
            // is, and its next check too.
            Some(cert) if self.cache.get(name).is_some_and(|e| e.is_of(&cert)) => {}
            Some(cert) => match self.entry(&cert) {
                Ok(entry) => {
                    self.cache_registered(&lock(&self.inflight), name, entry);
                    self.schedule_polling(name, &cert);
                    // Renewed by another node, or issued anew.
                    self.renewal_failing(name, false);
                }
                Err(e) => {
                    tracing::warn!(domain = %name, error = %crate::errors::chain(&e), "a stored certificate is not usable; keeping the cached one");
                }
            },
            None => {
                self.cache.invalidate(name);
                if !expired_stored {
                    lock(&self.schedule).remove(name);
                }
            }
        }
        Ok(())
    }

    /// Takes every cached certificate as the store now holds it ([`Certs::reload_name`] for
    /// each): after deletes this node missed (their tombstones pruned), a name removed and
    /// added again keeps no certificate the store dropped with it. Returns how many were read.
    /// One read per cached name, in turn: this runs only after a node was away past the
    /// tombstones' keep.
    /// A name the store cannot be read for is logged and left as it is, not the end of the
    /// others.
    pub async fn reload_cached(&self) -> usize {
        let names: Vec<Domain> = self.cache.iter().map(|(name, _)| (*name).clone()).collect();
        for name in &names {
            if let Err(e) = self.reload_name(name).await {
                tracing::warn!(domain = %name, error = %crate::errors::chain(&e), "reading a cached certificate again");
            }
        }
        names.len()
    }

    /// Why the issuer will never vouch for `name`, when it knows that without asking anyone
    /// (the built-in CA and its `tls.local_ca_names`): what to change, in words.
    pub fn issuer_refuses(&self, name: &Domain) -> Option<String> {
        self.issuer.refuses(name).map(|e| e.to_string())
    }

    /// Clears the backoff of `name` so the next handshake may order again.
    pub async fn reset_backoff(&self, name: &Domain) -> Result<(), StoreError> {
        self.backoff.reset(name).await
    }

    /// Clears the recorded reason an order for `name` was held back, once the checks pass;
    /// keeps any backoff a CA error set.
    pub async fn release_hold(&self, name: &Domain) -> Result<(), StoreError> {
        self.backoff.release_hold(name).await
    }

    /// Whether a handshake here recorded a hold of `name`'s order that no release has cleared
    /// (from memory).
    pub fn held_here(&self, name: &Domain) -> bool {
        self.backoff.held_here(name)
    }
}

#[cfg(test)]
mod tests;
