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

    /// Every registered domain, sorted by name.
    pub async fn list(&self) -> Result<Vec<DomainState>, DomainError> {
        let mut out = Vec::new();
        for record in self.store.domains().await? {
            out.push(self.state(record).await?);
        }
        Ok(out)
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
            return Err(DomainError::NotRegistered(name.clone()));
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
        let (checks, checked_at) = match self.onboarding.latest(&record.name) {
            Some(report) => (
                report.with_certificate(&record.name, &certificate),
                Some(report.checked_at),
            ),
            None => (Vec::new(), None),
        };
        Ok(DomainState {
            warning: self.certs.issuer_refuses(&record.name),
            record,
            certificate,
            checks,
            checked_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::{ManualClock, from_unix_secs};
    use crate::config::Config;
    use crate::domain::Zones;
    use crate::issuer::LocalCa;
    use crate::onboarding::Settings;
    use crate::store::{AcmeProblem, FailureKind, IssueFailure, IssueStatus, SqliteStore};

    /// The lifecycle over an empty in-memory store, the built-in CA and unconfigured checks,
    /// with a clock standing at 1 000 s.
    struct Fixture {
        domains: Domains,
        store: Arc<dyn Store>,
        clock: ManualClock,
        _ca_dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        fixture_over(Arc::new(SqliteStore::in_memory().unwrap()))
    }

    fn fixture_over(store: Arc<dyn Store>) -> Fixture {
        let ca_dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(from_unix_secs(1_000));
        let policy = Arc::new(Policy::default());
        let certs = Arc::new(Certs::for_tests(
            store.clone(),
            Arc::new(
                LocalCa::load_or_create(ca_dir.path(), Zones::reserved(), clock.clock()).unwrap(),
            ),
            policy.clone(),
            clock.clock(),
        ));
        let mut settings = Settings::from_config(&Config::default());
        // Nothing listens there: lookups fail at once, without the network.
        settings.dns_servers = vec!["127.0.0.1:9".parse().unwrap()];
        let onboarding = Arc::new(Onboarding::new(settings, store.clone(), clock.clock()));
        Fixture {
            domains: Domains::new(store.clone(), policy, certs, onboarding, clock.clock()),
            store,
            clock,
            _ca_dir: ca_dir,
        }
    }

    fn d(name: &str) -> Domain {
        Domain::parse(name).unwrap()
    }

    /// The CA refused for CAA `failures` times in a row; no order before `retry_at`.
    fn caa_refused(failures: u32, retry_at: SystemTime) -> IssueStatus {
        IssueStatus {
            last_error: Some(IssueFailure {
                kind: FailureKind::Problem(AcmeProblem::Caa),
                detail: "urn:ietf:params:acme:error:caa".into(),
            }),
            failures,
            retry_at: Some(retry_at),
        }
    }

    #[tokio::test]
    async fn adding_and_removing_keep_the_store_and_the_policy_in_step() {
        let f = fixture();
        let domains = &f.domains;
        let a = d("a.example.com");
        let added = domains.add(a.clone(), None).await.unwrap();
        assert!(added.created);
        assert_eq!(added.domain.record.created_at, from_unix_secs(1_000));
        assert_eq!(added.domain.certificate.status, "none");
        assert!(added.domain.checks.is_empty() && added.domain.checked_at.is_none());
        assert!(domains.policy.is_registered(a.as_str()));
        assert!(!domains.add(a.clone(), None).await.unwrap().created);
        assert_eq!(domains.list().await.unwrap().len(), 1);

        domains.remove(&a).await.unwrap();
        assert!(!domains.policy.is_registered(a.as_str()));
        assert!(matches!(
            domains.remove(&a).await,
            Err(DomainError::NotRegistered(_))
        ));
        assert!(matches!(
            domains.show(&a).await,
            Err(DomainError::NotRegistered(_))
        ));
        assert!(matches!(
            domains.check(&a).await,
            Err(DomainError::NotRegistered(_))
        ));
    }

    #[tokio::test]
    async fn a_removal_while_an_add_reads_its_row_back_leaves_the_policy_as_the_store_says() {
        let blips = crate::store::blips::Blips::over(Arc::new(SqliteStore::in_memory().unwrap()));
        let f = fixture_over(blips.clone());
        let a = d("a.example.com");
        blips.stall_domain.arm();
        let add = f.domains.add(a.clone(), None);
        let remove_meanwhile = async {
            // The add has written the row and read it back, and has not registered it yet.
            blips.stall_domain.held().await;
            let remove = f.domains.remove(&a);
            tokio::pin!(remove);
            // The removal runs to its end here unless something holds it back until the add
            // has registered what it read.
            let ran = tokio::time::timeout(Duration::from_millis(200), &mut remove).await;
            blips.stall_domain.release();
            match ran {
                Ok(removed) => removed,
                Err(_) => remove.await,
            }
        };
        let (added, removed) = tokio::join!(add, remove_meanwhile);
        added.unwrap();
        removed.unwrap();
        assert!(f.store.domain(&a).await.unwrap().is_none());
        assert!(
            !f.domains.policy.is_registered(a.as_str()),
            "served with no row in the store"
        );
    }

    #[tokio::test]
    async fn a_fallback_reaches_the_policy_after_the_store_and_a_bad_one_changes_nothing() {
        let f = fixture();
        let domains = &f.domains;
        let a = d("a.example.com");
        let url = "https://www.example.com/expired";
        let added = domains.add(a.clone(), Some(url)).await.unwrap();
        assert_eq!(added.domain.record.fallback_url.as_deref(), Some(url));
        assert_eq!(domains.policy.fallback(a.as_str()).unwrap(), url);

        for bad in ["ftp://x.example/", "https:///x", "mailto:a@example.com"] {
            let e = domains.set_fallback(&a, Some(bad)).await.unwrap_err();
            assert!(matches!(e, DomainError::BadFallback(_)), "{bad}: {e}");
            let b = d("b.example.com");
            assert!(domains.add(b.clone(), Some(bad)).await.is_err());
            assert!(!domains.policy.is_registered(b.as_str()), "{bad} added b");
        }
        assert_eq!(domains.policy.fallback(a.as_str()).unwrap(), url);
        // A link of the edge: its own (also while being added), or another domain's.
        for edge_link in [
            "https://a.example.com/c/x",
            "https://A.example.com./o/x",
            "http://a.example.com/c/",
        ] {
            let e = domains.set_fallback(&a, Some(edge_link)).await.unwrap_err();
            assert!(
                matches!(e, DomainError::FallbackIsEdgeLink(_)),
                "{edge_link}: {e}"
            );
            let c = d("c.example.com");
            let e = domains.add(c.clone(), Some(edge_link)).await.unwrap_err();
            assert!(
                matches!(e, DomainError::FallbackIsEdgeLink(_)),
                "{edge_link}: {e}"
            );
        }
        let e = domains
            .add(d("c.example.com"), Some("https://c.example.com/c/x"))
            .await
            .unwrap_err();
        assert!(matches!(e, DomainError::FallbackIsEdgeLink(_)), "{e}");
        // Another site's /c/ path is a page like any other.
        domains
            .set_fallback(&a, Some("https://www.example.com/c/x"))
            .await
            .unwrap();
        domains.set_fallback(&a, Some(url)).await.unwrap();
        assert_eq!(domains.policy.fallback(a.as_str()).unwrap(), url);
        // Adding again without a fallback keeps it.
        domains.add(a.clone(), None).await.unwrap();
        assert_eq!(domains.policy.fallback(a.as_str()).unwrap(), url);

        let cleared = domains.set_fallback(&a, None).await.unwrap();
        assert_eq!(cleared.record.fallback_url, None);
        assert_eq!(domains.policy.fallback(a.as_str()), None);
        assert!(matches!(
            domains.set_fallback(&d("c.example.com"), Some(url)).await,
            Err(DomainError::NotRegistered(_))
        ));
    }

    #[tokio::test]
    async fn adding_a_domain_again_clears_its_backoff() {
        let f = fixture();
        let (domains, store) = (&f.domains, &f.store);
        let a = d("a.example.com");
        domains.add(a.clone(), None).await.unwrap();
        let failed = caa_refused(3, from_unix_secs(5_000));
        store.set_status(&a, &failed).await.unwrap();
        let shown = domains.show(&a).await.unwrap();
        assert_eq!(shown.certificate.failures, 3);

        let again = domains.add(a.clone(), None).await.unwrap().domain;
        let cleared = IssueStatus::default();
        assert_eq!(again.record.failures, cleared.failures);
        assert_eq!(again.record.last_error, cleared.last_error);
        assert_eq!(again.record.retry_at, cleared.retry_at);
    }

    /// Checks that pass, having passed before, saw nothing fixed: they clear a backoff the CA
    /// caused at most once an hour, however often a status page left open checks.
    #[tokio::test]
    async fn checks_that_saw_nothing_fixed_clear_a_backoff_at_most_once_an_hour() {
        let f = fixture();
        let (domains, store, clock) = (&f.domains, &f.store, &f.clock);
        let a = d("a.example.com");
        domains.add(a.clone(), None).await.unwrap();
        let failed = || caa_refused(1, clock.clock().now() + Duration::from_secs(600));
        let checked = domains.check(&a).await.unwrap();
        assert!(
            checked
                .checks
                .iter()
                .all(|c| !c.blocking || c.status != crate::onboarding::CheckStatus::Fail),
            "{:?}",
            checked.checks
        );
        let retry_at = |s: DomainState| s.record.retry_at;
        store.set_status(&a, &failed()).await.unwrap();
        assert_eq!(
            retry_at(domains.check(&a).await.unwrap()),
            None,
            "the first clears it"
        );
        for _ in 0..3 {
            clock.advance(Duration::from_secs(10));
            store.set_status(&a, &failed()).await.unwrap();
            let kept = retry_at(domains.check(&a).await.unwrap());
            assert_eq!(kept, failed().retry_at, "then not for an hour");
        }
        clock.advance(Duration::from_secs(3600));
        store.set_status(&a, &failed()).await.unwrap();
        assert_eq!(retry_at(domains.check(&a).await.unwrap()), None);
    }

    /// Checks that failed and pass now saw something fixed: they clear a CA failure's backoff
    /// whoever runs them, the periodic run too (here `Onboarding::check`, as it calls it).
    #[tokio::test]
    async fn checks_that_pass_after_failing_clear_the_backoff_whoever_runs_them() {
        use crate::onboarding::{Check, CheckId, Report};
        let f = fixture();
        let a = d("a.example.com");
        f.domains.add(a.clone(), None).await.unwrap();
        let failing = Report {
            checked_at: f.clock.clock().now(),
            checks: vec![Check::fail(
                CheckId::PointsToEdge,
                "a.example.com has no CNAME",
                "add it".into(),
                true,
            )],
        };
        // The CA refused, then checks that failed pass: the backoff is cleared. Flapping checks
        // (fail, pass, fail, pass) clear it again only once FIX_RESET_EVERY has passed: not an
        // order every few seconds.
        let run = |at_secs: u64| {
            let (domains, store, clock) = (&f.domains, &f.store, &f.clock);
            let a = a.clone();
            let mut failing = failing.clone();
            async move {
                clock.advance(Duration::from_secs(at_secs));
                failing.checked_at = clock.clock().now();
                store
                    .put_domain_checks(&a, &serde_json::to_string(&failing).unwrap())
                    .await
                    .unwrap();
                domains.onboarding.reload(&a).await.unwrap();
                let failed = caa_refused(2, clock.clock().now() + Duration::from_secs(600));
                store.set_status(&a, &failed).await.unwrap();
                let record = store.domain(&a).await.unwrap().unwrap();
                let report = domains
                    .onboarding
                    .check(&record, &domains.certs)
                    .await
                    .unwrap();
                (report, store.domain(&a).await.unwrap().unwrap().retry_at)
            }
        };
        let flap = |at_secs: u64| async move { run(at_secs).await.1 };
        let (report, retry_at) = run(0).await;
        assert!(report.blocking().is_none(), "{report:?}");
        assert_eq!(retry_at, None);

        assert!(flap(20).await.is_some(), "20 s after the last: kept");
        let last = crate::onboarding::FIX_RESET_EVERY.as_secs();
        assert!(flap(last - 40).await.is_some(), "still within the period");
        assert_eq!(flap(20).await, None, "a period after the last: cleared");
    }

    #[tokio::test]
    async fn a_check_on_request_is_stamped_by_the_clock() {
        let f = fixture();
        let (domains, clock) = (&f.domains, &f.clock);
        let a = d("a.example.com");
        domains.add(a.clone(), None).await.unwrap();
        clock.advance(Duration::from_secs(30));
        let checked = domains.check(&a).await.unwrap();
        assert_eq!(checked.checked_at, Some(from_unix_secs(1_030)));
        assert!(!checked.checks.is_empty());
    }
}
