//! The domain lifecycle: add, check again, show, list and remove a link domain. The admin API,
//! the onboarding page and (through the API) the CLI all come here, so each step happens the same
//! way whoever asks.
//!
//! This is the one writer of the registered-domain set but for `tls.ask` approvals (which the
//! policy records itself, in the store first, as domains of origin `ask`; from then on they are
//! shown, checked and removed here like any other): every change goes to the store first, then
//! to [`Policy`] (which answers handshakes from memory), [`Certs`] (backoff, cache) and
//! [`Onboarding`] (the latest checks). It speaks no HTTP; errors are [`DomainError`], which the
//! callers turn into a status or a page.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::Domain;
use crate::certs::{CertStatus, Certs};
use crate::clock::Clock;
use crate::errors::chain as error_chain;
use crate::links::{self, LinkError};
use crate::onboarding::{Check, Onboarding, OncePer, Settings, certificate};
use crate::policy::Policy;
use crate::store::{DomainRecord, Store, StoreError};

/// Why a domain operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The name is not registered.
    #[error("domain {0} is not registered; add it with: clickedge domain add {0}")]
    NotRegistered(Domain),
    /// The name asked to be removed is not registered (removed already, or never added).
    #[error(
        "domain {0} is not registered: there is nothing to remove (clickedge domain list shows \
         the names that are)"
    )]
    NothingToRemove(Domain),
    /// The name was removed while it was being added.
    #[error("domain {0} was removed concurrently")]
    RemovedConcurrently(Domain),
    /// The fallback URL is not a destination a link could have.
    #[error("fallback_url")]
    BadFallback(#[source] LinkError),
    /// The fallback URL is a link of the edge: a link that does not open would answer with one
    /// (a loop when it does not open either, a click on another link when it does).
    #[error(
        "fallback_url {0:?} is a link of this edge (its host is a domain of the edge and its path \
         one of the edge's routes, /c/ or /o/); give the page it should lead to instead"
    )]
    FallbackIsEdgeLink(String),
    /// The name is the status pages' own (`onboarding.public_url`), registered at every start.
    #[error(
        "domain {0} is where the status pages are served (onboarding.public_url): removed, every \
         customer's status link would stop loading; take onboarding.public_url out of the \
         config and restart first"
    )]
    StatusHost(Domain),
    /// The store failed.
    #[error("reading or writing domains in the store")]
    Store(#[from] StoreError),
}

/// A domain as it stands: its record, its certificate now, and its latest checks.
#[derive(Debug, Clone)]
pub struct DomainState {
    /// The stored record (name, when it was added, issuance status).
    pub record: DomainRecord,
    /// The certificate now.
    pub certificate: CertStatus,
    /// The latest checks, the certificate check describing the certificate now; empty if never
    /// checked.
    pub checks: Vec<Check>,
    /// When the checks ran; none if never.
    pub checked_at: Option<SystemTime>,
    /// Why the configured issuer will never give it a certificate, if it knows without asking
    /// (a name outside the built-in CA's `tls.local_ca_names`). The name stays registered, as
    /// the operator may be about to change the issuer.
    pub warning: Option<String>,
}

/// What [`Domains::add`] did.
#[derive(Debug, Clone)]
pub struct Added {
    /// True if the name was new; false if it was registered already (its backoff was reset).
    pub created: bool,
    /// The domain after adding (and checking) it; its `warning` says at once if the issuer
    /// will never vouch for it.
    pub domain: DomainState,
}

/// Domain lifecycle over the store, the policy, the certificates and the checks.
pub struct Domains {
    store: Arc<dyn Store>,
    policy: Arc<Policy>,
    certs: Arc<Certs>,
    onboarding: Arc<Onboarding>,
    clock: Clock,
    /// Checks that saw nothing fixed (their previous run passed too) clear a name's backoff at
    /// most once per [`RESET_WITHOUT_A_FIX_EVERY`].
    resets_without_a_fix: OncePer,
    /// The status pages' name (`onboarding.public_url`), which is not removed.
    status_host: Option<Domain>,
}

/// Domains a listing of them all reads per store query ([`Domains::list`]); also the most a
/// page of `GET /v1/domains` may ask for.
pub const LIST_PAGE: u32 = 1000;

/// Checks that pass, having passed before too, clear a name's backoff at most this often: the
/// cause may be one the CA sees and the checks do not (another vantage point, DNSSEC), and an
/// open status page checks every 10 s; each clearing lets an order through, and a CA counts
/// failed validations (Let's Encrypt: 5 per name per hour).
const RESET_WITHOUT_A_FIX_EVERY: Duration = Duration::from_secs(3600);

impl Domains {
    /// The lifecycle over these parts; `policy` must hold the domains of `store` (as built at
    /// start), and changes only through this service from then on.
    pub fn new(
        store: Arc<dyn Store>,
        policy: Arc<Policy>,
        certs: Arc<Certs>,
        onboarding: Arc<Onboarding>,
        clock: Clock,
    ) -> Domains {
        Domains {
            store,
            policy,
            certs,
            onboarding,
            clock,
            resets_without_a_fix: OncePer::new(RESET_WITHOUT_A_FIX_EVERY),
            status_host: None,
        }
    }

    /// These domains with the status pages served on `host`, which [`Domains::remove`]
    /// refuses.
    pub fn with_status_host(mut self, host: Option<Domain>) -> Domains {
        self.status_host = host;
        self
    }

    /// What the checks compare DNS against (the page shows customers where to point).
    pub fn check_settings(&self) -> &Settings {
        self.onboarding.settings()
    }

    /// Every registered domain whose name comes after `after` byte by byte (a name or any
    /// text; all with `""`), sorted so: a page of [`LIST_PAGE`] domains per store query
    /// ([`Store::listing_after`]), no certificate key opened.
    pub async fn list(&self, after: &str) -> Result<Vec<DomainState>, DomainError> {
        let mut out: Vec<DomainState> = Vec::new();
        loop {
            let from = out.last().map_or(after, |d| d.record.name.as_str());
            let page = self.page(from, LIST_PAGE).await?;
            let done = page.len() < LIST_PAGE as usize;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// At most `limit` registered domains, sorted by name byte by byte, those after `after`
    /// (from the first with `""`): the next page starts after the last name of this one, and a
    /// page shorter than `limit` is the last.
    pub async fn page(&self, after: &str, limit: u32) -> Result<Vec<DomainState>, DomainError> {
        let page = self.store.listing_after(after, limit).await?;
        Ok(page
            .into_iter()
            .map(|(record, cert)| {
                let certificate = self.certs.status_of(&record, cert.as_ref());
                self.state_with(record, certificate)
            })
            .collect())
    }

    /// The record of `name` as the store holds it, whether or not this node serves it yet;
    /// [`DomainError::NotRegistered`] if it holds none.
    pub async fn stored(&self, name: &Domain) -> Result<DomainRecord, DomainError> {
        self.registered(name).await
    }

    /// One registered domain.
    pub async fn show(&self, name: &Domain) -> Result<DomainState, DomainError> {
        let record = self.registered(name).await?;
        self.state(record).await
    }

    /// `url` as the fallback of `name`: as links take a destination (http or https, a host, at
    /// most 4096 bytes), normalised, and not a link of the edge (`name`'s own, or another
    /// domain's), as minting refuses one.
    fn checked_fallback(&self, name: &Domain, url: &str) -> Result<String, DomainError> {
        let url = links::destination(url.trim()).map_err(DomainError::BadFallback)?;
        let edge = links::edge_route(&url)
            .is_some_and(|e| e.host == name.as_str() || self.policy.is_registered(&e.host));
        match edge {
            true => Err(DomainError::FallbackIsEdgeLink(url)),
            false => Ok(url),
        }
    }

    /// Registers `name` (again; a name `tls.ask` approved becomes the operator's, origin
    /// `admin`), with `fallback` as its fallback URL when one is given (none keeps what it has),
    /// and, when the edge knows what DNS must look like, checks it
    /// before answering, so the first certificate order already knows whether DNS is right and
    /// the customer sees what to fix. A fallback that is not a link destination changes nothing.
    pub async fn add(&self, name: Domain, fallback: Option<&str>) -> Result<Added, DomainError> {
        let fallback = fallback
            .map(|url| self.checked_fallback(&name, url))
            .transpose()?;
        let changing = self.policy.changing().await;
        let created = self.store.add_domain(&name, self.clock.now()).await?;
        if let Some(url) = &fallback {
            self.store.set_fallback_url(&name, Some(url)).await?;
        }
        if created {
            tracing::info!(domain = %name, "domain added");
        } else {
            // Adding an existing domain again is how a customer says "I fixed it, try now": the
            // next handshake may order again instead of waiting out the backoff.
            self.certs.reset_backoff(&name).await?;
        }
        let mut record = self
            .store
            .domain(&name)
            .await?
            .ok_or_else(|| DomainError::RemovedConcurrently(name.clone()))?;
        self.policy.register_record(&record);
        drop(changing);
        if self.onboarding.is_configured() {
            self.onboarding.check(&record, &self.certs).await?;
            record = self.store.domain(&name).await?.unwrap_or(record);
        }
        Ok(Added {
            created,
            domain: self.state(record).await?,
        })
    }

    /// Whether `name` is registered in this node's memory (no store read).
    pub fn is_registered(&self, name: &Domain) -> bool {
        self.policy.is_registered(name.as_str())
    }

    /// Runs the checks of `name` now. Checks that pass again after a failure they can see the
    /// cause of are how a customer says "fixed": the backoff is reset (by the checks themselves,
    /// [`Onboarding::check`]), so the next handshake may order at once. Asked for when they
    /// passed the time before too, nothing was seen fixed, and the reset is made at most once
    /// per [`RESET_WITHOUT_A_FIX_EVERY`] (the CA may see what the checks do not; a status page
    /// left open checks every 10 s).
    pub async fn check(&self, name: &Domain) -> Result<DomainState, DomainError> {
        let record = self.registered(name).await?;
        let failed_before = self
            .onboarding
            .latest(name)
            .is_some_and(|r| r.blocking().is_some());
        let report = self.onboarding.check(&record, &self.certs).await?;
        let now = self.clock.now();
        if !failed_before
            && report.blocking().is_none()
            && certificate::backing_off_for_what_checks_see(&record, now)
            && self.resets_without_a_fix.may(name, now)
        {
            self.certs.reset_backoff(name).await?;
        }
        self.show(name).await
    }

    /// Sets the fallback URL of `name` (checked like a link destination), or clears it with
    /// none: from now on a link of `name` that does not open redirects there (or shows the
    /// recipient page), on this node at once and on the others once they apply the change.
    pub async fn set_fallback(
        &self,
        name: &Domain,
        fallback: Option<&str>,
    ) -> Result<DomainState, DomainError> {
        let fallback = fallback
            .map(|url| self.checked_fallback(name, url))
            .transpose()?;
        let changing = self.policy.changing().await;
        if !self
            .store
            .set_fallback_url(name, fallback.as_deref())
            .await?
        {
            return Err(DomainError::NotRegistered(name.clone()));
        }
        let record = self.registered(name).await?;
        self.policy.register_record(&record);
        drop(changing);
        match &record.fallback_url {
            Some(url) => tracing::info!(domain = %name, fallback_url = %url, "domain fallback set"),
            None => tracing::info!(domain = %name, "domain fallback cleared"),
        }
        self.state(record).await
    }

    /// Unregisters `name`: handshakes for it fail from now on, and its certificate and checks
    /// are deleted. A name `tls.ask` approved is asked about afresh at its next handshake.
    pub async fn remove(&self, name: &Domain) -> Result<(), DomainError> {
        if self.status_host.as_ref() == Some(name) {
            return Err(DomainError::StatusHost(name.clone()));
        }
        // The store first: a remove that fails (the database is unreachable) leaves the name
        // served here as on every other node. Not in the store (removed by another node whose
        // change has not arrived yet): forgotten here too.
        let changing = self.policy.changing().await;
        let removed = self.store.remove_domain(name).await?;
        self.policy.unregister(name.as_str()).await;
        self.certs.forget(name);
        drop(changing);
        self.onboarding.forget(name).await;
        self.resets_without_a_fix.forget(name);
        if !removed {
            return Err(DomainError::NothingToRemove(name.clone()));
        }
        if let Err(e) = self.certs.refresh_gauges().await {
            tracing::warn!(error = %error_chain(&e), "refreshing certificate gauges");
        }
        tracing::info!(domain = %name, "domain removed");
        Ok(())
    }

    async fn registered(&self, name: &Domain) -> Result<DomainRecord, DomainError> {
        self.store
            .domain(name)
            .await?
            .ok_or_else(|| DomainError::NotRegistered(name.clone()))
    }

    async fn state(&self, record: DomainRecord) -> Result<DomainState, DomainError> {
        let certificate = self.certs.status(&record).await?;
        Ok(self.state_with(record, certificate))
    }

    /// `record` as it stands with its certificate's status read already.
    fn state_with(&self, record: DomainRecord, certificate: CertStatus) -> DomainState {
        let warning = self.certs.issuer_refuses(&record.name);
        let (checks, checked_at) = match self.onboarding.latest(&record.name) {
            Some(report) => (
                report.with_certificate(&record.name, &certificate, warning.as_deref()),
                Some(report.checked_at),
            ),
            None => (Vec::new(), None),
        };
        DomainState {
            warning,
            record,
            certificate,
            checks,
            checked_at,
        }
    }
}

#[cfg(test)]
mod tests;
