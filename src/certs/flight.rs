//! Single flight: every load, issuance or renewal of a name runs once, as a background task that
//! any number of handshakes wait on. A failed issuance is recorded and backs the name off.
//!
//! Across nodes sharing a store, issuance runs under the name's lease ([`Claim`]): the node that
//! takes it orders, the others poll the store for the certificate it writes (fenced), and a
//! failure it records backs the name off on every node.

mod failure;

pub(super) use failure::serving;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::backoff::NotBefore;
use super::claim::Claim;
use super::error::LoadError;
use super::key::Entry;
use super::{CertError, Certs, lock, schedule};
use crate::Domain;
use crate::clock::rfc3339;
use crate::errors::chain as error_chain;
use crate::issuer::{IssueError, OrderClaim as _};
use crate::store::{FailureKind, IssueFailure, StoredCert};
use failure::unusable;

/// While another node holds a name's lease, its store is read this often for the certificate
/// (and the lease tried again, in case its holder died).
const CLAIM_POLL: Duration = Duration::from_millis(200);
/// First wait before writing an issued certificate again after the store did not answer.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(500);
/// Longest wait between two such writes.
const STORE_RETRY_MAX: Duration = Duration::from_secs(8);

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

/// A flight's end: what it found is cached and handed to its waiters, and the name leaves the
/// in-flight map. Dropped without landing (its task unwound: a panic in the issuer or the
/// store), it lands as failed, so the name's next handshake starts a new flight instead of
/// waiting on one that will never land.
struct Landing {
    certs: Arc<Certs>,
    name: Domain,
    kind: Flight,
    tx: Option<watch::Sender<Outcome>>,
}

impl Landing {
    fn land(mut self, result: Result<Entry, CertError>) {
        self.land_once(result);
    }

    fn land_once(&mut self, result: Result<Entry, CertError>) {
        let Some(tx) = self.tx.take() else {
            return;
        };
        let (certs, name) = (&self.certs, &self.name);
        // Cache first, then leave the in-flight map: a handshake arriving in between finds the
        // certificate and starts no second order. A renewal check only replaces what is cached:
        // it visits every stored certificate, and caching each would fill memory with names
        // nobody clicks (the next handshake loads from the store anyway). Both under the
        // in-flight lock, which a handshake holds to cache what it read during a renewal
        // (`Certs::renewing_cache`): it never puts the old certificate back after this one. A
        // name removed while the flight was in the air gets nothing cached, and its waiters are
        // refused as its later handshakes are (asked under the lock: see
        // `Certs::cache_registered`).
        let mut inflight = lock(&certs.inflight);
        let result = match result {
            Ok(_) if !certs.policy.is_registered(name.as_str()) => {
                Err(CertError::NotServed(name.clone()))
            }
            Ok(entry) => {
                // Never over a certificate issued later (another node's renewal, cached by
                // change propagation while this flight read the one it replaced).
                let cached = certs.cache.get(name);
                let later_cached = cached
                    .as_ref()
                    .is_some_and(|c| c.not_before > entry.not_before);
                if (self.kind == Flight::Obtain || cached.is_some()) && !later_cached {
                    certs.cache.insert(name.clone(), entry.clone());
                }
                Ok(entry)
            }
            failed => failed,
        };
        inflight.remove(name);
        drop(inflight);
        let _ = tx.send(Some(result));
    }
}

impl Landing {
    /// A handshake's flight that panicked counts as a failed order: the name backs off (in
    /// memory before the flight lands, then in the store), so a panic that comes back on every
    /// attempt does not become an order, and a panic, on every handshake.
    fn back_off_after_panic(&self) {
        let cause = IssueFailure {
            kind: FailureKind::Local,
            detail: "the edge failed while loading or ordering the certificate (see its log)"
                .into(),
        };
        let (certs, name) = (&self.certs, &self.name);
        let now = certs.clock.now();
        certs.backoff.panicked(name, cause.clone(), now);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (certs, name) = (certs.clone(), name.clone());
            runtime.spawn(async move {
                certs.backoff.failed(&name, cause, now, None, None).await;
            });
        }
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        if self.tx.is_some() {
            // A panic says so itself; at shutdown every flight in the air ends this way.
            tracing::warn!(domain = %self.name, "a certificate flight ended without landing (a panic, or the edge stopping); after a panic the name backs off as after a failed order");
            if std::thread::panicking() {
                match self.kind {
                    Flight::Obtain => self.back_off_after_panic(),
                    // The schedule let go of the name when the renewal started: without it,
                    // nothing would check the name again, and its certificate would expire.
                    Flight::Renew => self.certs.check_again(&self.name),
                }
            }
            self.land_once(Err(CertError::unavailable(
                &self.name,
                LoadError::Abandoned,
            )));
        }
    }
}

impl Certs {
    /// Joins the flight for `name`, starting one if none is in the air. A renewal that joins a
    /// running flight keeps the name scheduled: a handshake's flight checks no renewal, and may
    /// schedule none (its store read failed, the mirror answered); a renewal in the air may have
    /// scheduled its retry already, the very entry that started this one.
    pub(super) fn fly(self: &Arc<Self>, name: &Domain, kind: Flight) -> watch::Receiver<Outcome> {
        let mut inflight = lock(&self.inflight);
        if let Some((_, rx)) = inflight.get(name) {
            let rx = rx.clone();
            drop(inflight);
            if kind == Flight::Renew {
                self.check_again(name);
            }
            return rx;
        }
        let (tx, rx) = watch::channel(None);
        inflight.insert(name.clone(), (kind, rx.clone()));
        drop(inflight);
        let landing = Landing {
            certs: self.clone(),
            name: name.clone(),
            kind,
            tx: Some(tx),
        };
        tokio::spawn(async move {
            let result = match kind {
                Flight::Obtain => landing.certs.obtain(&landing.name).await,
                Flight::Renew => landing.certs.renewal_check(&landing.name).await,
            };
            landing.land(result);
        });
        rx
    }

    /// True while a renewal of `name` is in the air on this node.
    pub(super) fn renewing(&self, name: &Domain) -> bool {
        renewal_in(&lock(&self.inflight), name)
    }

    /// Caches `entry`, read from the store during a renewal of `name`, if that renewal is still
    /// in the air (once it has landed, it cached what it renewed).
    pub(super) fn renewing_cache(&self, name: &Domain, entry: &Entry) {
        let inflight = lock(&self.inflight);
        if renewal_in(&inflight, name) {
            self.cache_registered(&inflight, name, entry.clone());
        }
    }

    /// Caches `entry` as `name`'s certificate unless the policy no longer registers the name (it
    /// was removed while its certificate was read). Called with the in-flight lock held
    /// (`_inflight`), under which [`Certs::forget`] drops a cached certificate after the policy
    /// dropped its name: either this finds the name gone, or `forget` drops what this cached.
    pub(super) fn cache_registered(&self, _inflight: &InFlight, name: &Domain, entry: Entry) {
        if self.policy.is_registered(name.as_str()) {
            self.cache.insert(name.clone(), entry);
        }
    }

    /// A valid certificate of `name` in the store, as a cache entry (scheduling its renewal if
    /// nothing is scheduled yet); none when the store has none that is unexpired. When the store
    /// fails, the mirror's copy (see `mirror/fallback`).
    pub(super) async fn stored(&self, name: &Domain) -> Result<Option<Entry>, CertError> {
        self.stored_scheduling(name, true).await
    }

    /// [`Certs::stored`], scheduling the renewal only if `schedule` (a renewal in the air
    /// schedules what comes after it).
    pub(super) async fn stored_scheduling(
        &self,
        name: &Domain,
        schedule: bool,
    ) -> Result<Option<Entry>, CertError> {
        let stored = match self.certificate_for_client(name).await {
            Ok(stored) => {
                self.store_answered();
                stored
            }
            // The store failed (not "none"), or did not answer in time: the mirror's copy, if
            // this node keeps one.
            Err(e) => return self.mirrored(name, e).await,
        };
        let Some(cert) = stored.filter(|c| c.not_after > self.clock.now()) else {
            return Ok(None);
        };
        // One that does not load (a row written wrong, a backup restored half: its key not the
        // leaf's) is nothing usable: a new one is ordered, under the backoff, rather than every
        // handshake failing until it expires.
        let entry = match self.entry(&cert) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::error!(domain = %name, error = %error_chain(&e), "the stored certificate cannot be used: a new one is ordered");
                return Ok(None);
            }
        };
        if schedule {
            let at = schedule::default_renew_at(cert.not_before, cert.not_after, rand::random());
            self.schedule_unscheduled(name, at);
        }
        Ok(Some(entry))
    }

    /// A first certificate for `name`: the stored one, else one issued under the name's lease,
    /// else (another node holds the lease) the one that node stores, polled for at most
    /// `tls.on_demand_timeout`.
    async fn obtain(&self, name: &Domain) -> Result<Entry, CertError> {
        match self.stored(name).await {
            Ok(Some(entry)) => return Ok(entry),
            Ok(None) => {}
            // The store fails and the mirror, if any, holds no copy: this handshake fails (as
            // backing off, for a name that does). Not marked as having nothing stored: a
            // failed renewal's certificate may be there still, and a blip of the store must
            // not shut the name out until its next retry (a day, at most).
            Err(e) => {
                return Err(match self.backoff.pending(name, self.clock.now()) {
                    Some(pending) => backing_off(name, pending),
                    None => e,
                });
            }
        }
        // Nothing valid is stored: a name that backs off (a failure recorded here or by another
        // node) fails, and its next handshakes fail from memory. Asked before the gate, so a CA
        // failure keeps its retry time and its words while a check fails meanwhile (a hold
        // recorded over it would be released, backoff and all, by the next check that passes).
        if let Some(not_before) = self.backoff.recheck(name, self.clock.now()).await {
            self.backoff.nothing_stored(name);
            return Err(backing_off(name, not_before));
        }
        if let Some(hold) = self.gate.as_ref().and_then(|g| g.hold(name)) {
            // While the gate holds it, the name's next handshakes fail from memory.
            self.held_unstored.insert(name.clone(), self.clock.now());
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
        let deadline = tokio::time::Instant::now() + self.on_demand_timeout;
        loop {
            if let Some(claim) = self.claim(name).await? {
                // The previous holder may have stored one between our read and our claim. A
                // read that fails frees the claim at once: held to its TTL, it would keep
                // every node's order for the name waiting.
                match self.stored(name).await {
                    Ok(None) => {}
                    Ok(Some(entry)) => {
                        claim.release(false).await;
                        return Ok(entry);
                    }
                    Err(e) => {
                        claim.release(false).await;
                        return Err(e);
                    }
                }
                // Or its order failed: a holder records the failure before it frees the lease,
                // so asked under the claim this cannot miss it (asked before, it could).
                if let Some(not_before) = self.backoff.recheck(name, self.clock.now()).await {
                    claim.release(false).await;
                    self.backoff.nothing_stored(name);
                    return Err(backing_off(name, not_before));
                }
                match self.issue(name, None, claim).await {
                    Ok(entry) => return Ok(entry),
                    Err(IssueOutcome::Failed(not_before) | IssueOutcome::Waits(not_before)) => {
                        return Err(backing_off(name, not_before));
                    }
                    // Issued but not usable, or not stored: a failure of the edge's own, backed
                    // off like any other, or each next handshake would order (and get) another.
                    Err(IssueOutcome::Unusable(e)) => {
                        let now = self.clock.now();
                        let not_before = self
                            .backoff
                            .failed(name, unusable(&e), now, None, None)
                            .await;
                        tracing::warn!(domain = %name, error = %not_before.cause, failures = not_before.failures, retry_at = %rfc3339(not_before.until), "certificate issuance failed");
                        return Err(CertError::unavailable(name, e));
                    }
                    // Removed while its order ran: nothing was stored, nothing more to do.
                    Err(IssueOutcome::Superseded) if !self.policy.is_registered(name.as_str()) => {
                        return Err(CertError::NotServed(name.clone()));
                    }
                    // Another node took over: wait for its certificate like any other waiter.
                    Err(IssueOutcome::Superseded) => {}
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CertError::Timeout(name.clone()));
            }
            tokio::time::sleep(CLAIM_POLL).await;
            if let Some(entry) = self.stored(name).await? {
                return Ok(entry);
            }
            // A failure another node recorded backs the name off here too. Nothing valid was
            // stored a moment ago: the name's next handshakes fail from memory.
            if let Some(not_before) = self.backoff.recheck(name, self.clock.now()).await {
                self.backoff.nothing_stored(name);
                return Err(backing_off(name, not_before));
            }
        }
    }

    /// Writes the certificate the CA issued under `claim`'s fence. A store that does not answer
    /// (a restart, a lock held past `lock_timeout`, no free connection) is asked again, waits
    /// growing to [`STORE_RETRY_MAX`], for as long as the lease lasts without a heartbeat and
    /// while it is not found lost: the certificate is the CA's answer to an order, and ordering
    /// it again counts against the CA's duplicate certificate limit. The fence keeps a late write
    /// from replacing another holder's. `Ok(false)`: the fence refused it.
    async fn store_issued(
        &self,
        name: &Domain,
        cert: &StoredCert,
        claim: &Claim,
    ) -> Result<bool, crate::store::StoreError> {
        let give_up = tokio::time::Instant::now() + claim.ttl();
        let mut wait = STORE_RETRY_FIRST;
        loop {
            match self
                .store
                .put_certificate_fenced(name, cert, claim.fence())
                .await
            {
                Err(e)
                    if e.is_unavailable()
                        && !claim.is_lost()
                        && tokio::time::Instant::now() + wait < give_up =>
                {
                    tracing::warn!(domain = %name, error = %error_chain(&e), retry_in = ?wait, "storing the issued certificate failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(STORE_RETRY_MAX);
                }
                other => return other,
            }
        }
    }

    /// Takes the lease of `name` for this node; none while another node holds it.
    pub(super) async fn claim(&self, name: &Domain) -> Result<Option<Claim>, CertError> {
        Claim::take(
            &self.store,
            &self.policy,
            name,
            &self.claims,
            &self.clock,
            &self.budget_queued,
        )
        .await
        .map_err(|e| CertError::unavailable(name, e))
    }

    /// Issues under `claim`, stores with its fence and schedules a certificate, or records the
    /// failure and backs off. The claim is released either way; an order that did not finish
    /// stays kept with the lease for the next holder to resume.
    pub(super) async fn issue(
        &self,
        name: &Domain,
        replacing: Option<&StoredCert>,
        claim: Claim,
    ) -> Result<Entry, IssueOutcome> {
        let result = self.issue_claimed(name, replacing, &claim).await;
        claim.release(result.is_ok()).await;
        result
    }

    async fn issue_claimed(
        &self,
        name: &Domain,
        replacing: Option<&StoredCert>,
        claim: &Claim,
    ) -> Result<Entry, IssueOutcome> {
        let kind = self.issuer.kind();
        let started = Instant::now();
        let result = match self.issuer.issue(name, replacing, claim).await {
            Ok(cert) => self
                .entry(&cert)
                .map(|e| (cert, e))
                .map_err(|e| IssueOutcome::Unusable(e.into())),
            Err(IssueError::ClaimLost { .. }) => Err(IssueOutcome::Superseded),
            // A holder stopped past its TTL and resumed may see the order another node
            // finished since as failed: under a lost claim it records nothing, not even that.
            Err(_) if matches!(claim.confirm().await, Err(IssueError::ClaimLost { .. })) => {
                Err(IssueOutcome::Superseded)
            }
            Err(e) => Err(self.failed(name, &e, replacing.map(|c| c.not_after)).await),
        };
        let (cert, entry) = match result {
            Ok(ok) => ok,
            Err(IssueOutcome::Superseded) => return Err(self.superseded(name)),
            // Every name waits for the account: nothing of this one's failed.
            Err(outcome @ IssueOutcome::Waits(_)) => return Err(outcome),
            Err(outcome) => {
                self.metrics.certs_failed.with_label_values(&[kind]).inc();
                return Err(outcome);
            }
        };
        // Nothing is written under a lost claim. A store that did not answer says nothing of
        // the claim: the fenced write decides, and the certificate the CA issued is not thrown
        // away (ordering it again would count against the CA's duplicate certificate limit).
        match claim.confirm().await {
            Ok(()) => {}
            Err(IssueError::ClaimLost { .. }) => return Err(self.superseded(name)),
            Err(e) => {
                let cause = match &e {
                    IssueError::Claim { source, .. } => error_chain(source),
                    other => error_chain(other),
                };
                tracing::warn!(domain = %name, error = %cause, "the store did not confirm the lease; storing the certificate under its fence");
            }
        }
        match self.store_issued(name, &cert, claim).await {
            Ok(true) => {}
            Ok(false) => return Err(self.superseded(name)),
            Err(e) => {
                self.metrics.certs_failed.with_label_values(&[kind]).inc();
                return Err(IssueOutcome::Unusable(e.into()));
            }
        }
        self.metrics.certs_issued.with_label_values(&[kind]).inc();
        self.metrics
            .issuance_seconds
            .observe(started.elapsed().as_secs_f64());
        self.backoff.succeeded(name).await;
        self.schedule_polling(name, &cert);
        self.wake.notify_one();
        if let Err(e) = self.refresh_gauges().await {
            tracing::warn!(error = %error_chain(&e), "refreshing certificate gauges");
        }
        tracing::info!(domain = %name, issuer = kind, not_after = %rfc3339(cert.not_after), renewal = replacing.is_some(), "certificate issued");
        Ok(entry)
    }

    /// Another node took the name's work over (or stored a later certificate): this node
    /// writes nothing and records no failure.
    fn superseded(&self, name: &Domain) -> IssueOutcome {
        if self.policy.is_registered(name.as_str()) {
            tracing::info!(domain = %name, "certificate work taken over by another node: nothing written here");
        } else {
            tracing::info!(domain = %name, "domain removed while its certificate was ordered: nothing stored");
        }
        IssueOutcome::Superseded
    }
}

/// Why `Certs::issue` produced no certificate.
pub(super) enum IssueOutcome {
    /// The issuer failed; recorded, backing off.
    Failed(NotBefore),
    /// No order could be placed before `NotBefore::until` for any name (the account's order
    /// budget spent, or a rate limit of the whole account): recorded, not a failure of the name.
    Waits(NotBefore),
    /// The certificate could not be used or stored.
    Unusable(LoadError),
    /// The claim was lost to another node, which does the work, or the name was removed:
    /// nothing written or recorded.
    Superseded,
}

/// The flights in the air, by name (what `Certs::inflight` guards).
pub(super) type InFlight = HashMap<Domain, (Flight, watch::Receiver<Outcome>)>;

/// Whether `inflight` holds a renewal of `name`.
fn renewal_in(inflight: &InFlight, name: &Domain) -> bool {
    inflight
        .get(name)
        .is_some_and(|(kind, _)| *kind == Flight::Renew)
}

/// The error of a handshake waiting on a name that backs off.
pub(super) fn backing_off(name: &Domain, not_before: NotBefore) -> CertError {
    CertError::BackingOff {
        domain: name.clone(),
        retry_at: not_before.until,
        last_error: not_before.cause,
    }
}
