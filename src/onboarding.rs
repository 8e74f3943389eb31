//! Self-service domain onboarding: checks that tell a customer whether their link domain works
//! and, if not, exactly what to change.
//!
//! A check run gathers what DNS says about the name ([`dns`]: a thin layer over hickory-resolver
//! that returns a [`DnsView`]), evaluates it with pure functions ([`checks`], [`caa`]), asks
//! whether the edge can reach itself through the name over HTTP ([`reach`]), and describes the
//! certificate ([`certificate`]). Every check has an id, a status, a message and, when it does
//! not pass, a fix a customer can paste: a DNS record in zone-file form, or the exact step.
//!
//! The latest report per domain is kept in memory and in the store. When the edge knows where
//! names must point (`[onboarding] cname_target` or `addresses`), reports also hold back
//! certificate orders while a blocking check fails (the [`IssueGate`] that `certs` consults,
//! without I/O), and domains without a valid certificate, or whose renewal failed on what the
//! checks see, are checked again periodically. With
//! neither set, checks run only on request and never hold anything back.
//!
//! This module does not serve HTTP (the edge's HTTP listener answers the reachability nonces
//! through [`reach::Nonces`]) and does not issue certificates.

pub mod caa;
pub mod certificate;
pub mod checks;
pub mod dns;
pub mod escape;
pub mod reach;
mod report;
pub mod zone;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Domain;
use crate::certs::{Certs, Hold, IssueGate};
use crate::clock::Clock;
use crate::config::{ChallengeKind, Config, IssuerKind};
use crate::errors::chain as error_chain;
use crate::store::{DomainPages, DomainRecord, IssueStatus, Store, StoreError};
use crate::sync::lock;
pub use dns::DnsView;
pub use report::{Check, CheckId, CheckStatus, Report};
pub use zone::FixRecord;

/// Domains checked at the same time by the periodic re-check.
const PERIODIC_CONCURRENCY: usize = 8;
/// Checks that pass after failing clear a name's backoff at most this often: a check that flaps
/// (a resolver timing out now and then, name servers mid-migration) under a status page that
/// checks every 10 s would otherwise let an order through every few seconds, each a failed
/// validation at the CA (Let's Encrypt allows 5 per name an hour).
pub const FIX_RESET_EVERY: Duration = Duration::from_secs(15 * 60);

/// Something done for a name at most once per period (clearing its backoff), remembered in
/// memory: per node, forgotten at a restart.
pub(crate) struct OncePer {
    every: Duration,
    last: DashMap<Domain, SystemTime>,
}

impl OncePer {
    /// At most once per `every`.
    pub(crate) fn new(every: Duration) -> OncePer {
        OncePer {
            every,
            last: DashMap::new(),
        }
    }

    /// Whether it may be done for `name` at `now` (noting it if so): not if it was less than the
    /// period ago.
    pub(crate) fn may(&self, name: &Domain, now: SystemTime) -> bool {
        self.try_at(name, now).is_ok()
    }

    /// Notes it done for `name` at `now`, unless it was less than the period ago: then the time
    /// left. Two callers at once for one name: one of them.
    pub(crate) fn try_at(&self, name: &Domain, now: SystemTime) -> Result<(), Duration> {
        // Entries past the period say nothing any more: dropped here, a name removed on another
        // node (which never passes through a removal on this one) is not kept for ever.
        self.last.retain(|_, last| now < *last + self.every);
        match self.last.entry(name.clone()) {
            dashmap::Entry::Occupied(mut last) => {
                let next = *last.get() + self.every;
                if now < next {
                    return Err(next.duration_since(now).unwrap_or_default());
                }
                last.insert(now);
            }
            dashmap::Entry::Vacant(none) => {
                none.insert(now);
            }
        }
        Ok(())
    }

    /// Forgets `name` (removed).
    pub(crate) fn forget(&self, name: &Domain) {
        self.last.remove(name);
    }

    /// The names it remembers (tests).
    #[cfg(test)]
    pub(crate) fn names(&self) -> Vec<Domain> {
        self.last.iter().map(|e| e.key().clone()).collect()
    }
}
/// How the words of a held-back order start (the kind, [`FailureKind::HeldBack`], is what a later
/// passing run looks for to clear exactly that reason and no CA error).
pub const HELD_BACK: &str = "no certificate order while the";

/// What the checks compare DNS against; from `[onboarding]` (and `[tls]`/`[acme]` for what
/// blocks).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The name customers CNAME to.
    pub cname_target: Option<Domain>,
    /// Addresses A/AAAA records may point to.
    pub addresses: Vec<IpAddr>,
    /// Resolvers (`ip:port`); empty: the system's.
    pub dns_servers: Vec<SocketAddr>,
    /// CAA identities of the CA, one of which must be allowed.
    pub caa_identities: Vec<String>,
    /// The challenges the edge answers, which a CAA `validationmethods` must allow one of.
    pub challenges: Vec<ChallengeKind>,
    /// Port of the HTTP reachability fetch.
    pub http_port: u16,
    /// Period of re-checks for domains without a valid certificate.
    pub recheck_interval: Duration,
    /// True if orders are validated over HTTP (ACME with `http-01` first in `acme.challenges`:
    /// an order answers the first configured challenge the CA offers, and CAs offer HTTP-01
    /// for every name): then an unreachable name holds back orders too.
    pub http_blocks: bool,
    /// True if the issuer honours CAA (ACME CAs must, RFC 8659): then a failing CAA check holds
    /// back orders. The built-in local CA does not read CAA, so it is never held back by one.
    pub caa_blocks: bool,
    /// True if the reachability check may connect to loopback, private and link-local
    /// addresses (tests and labs only).
    pub danger_allow_private_addresses: bool,
    /// `acme.directory` when the issuer is ACME: the CA whose account a CAA `accounturi` must
    /// name.
    pub acme_directory: Option<String>,
}

impl Settings {
    /// Settings from the whole config.
    pub fn from_config(config: &Config) -> Settings {
        let o = &config.onboarding;
        Settings {
            cname_target: o.cname_target.clone(),
            addresses: o.addresses.clone(),
            dns_servers: o.dns_servers.clone(),
            // As a CA compares them: without case, and a fully qualified form (a trailing dot)
            // is the same name; CAA values carry none.
            caa_identities: o
                .caa_identities
                .iter()
                .map(|i| i.strip_suffix('.').unwrap_or(i).to_ascii_lowercase())
                .collect(),
            challenges: config.acme.challenges.clone(),
            http_port: o.http_port.get(),
            recheck_interval: o.recheck_interval,
            http_blocks: config.tls.issuer == IssuerKind::Acme
                && config.acme.challenges.first() == Some(&ChallengeKind::Http01),
            caa_blocks: config.tls.issuer == IssuerKind::Acme,
            danger_allow_private_addresses: o.danger_allow_private_addresses,
            acme_directory: (config.tls.issuer == IssuerKind::Acme)
                .then(|| config.acme.directory.clone()),
        }
    }

    /// True if the edge knows where names must point: checks then gate orders and re-run.
    pub fn is_configured(&self) -> bool {
        self.cname_target.is_some() || !self.addresses.is_empty()
    }

    /// Settings of the unit tests: a CNAME to `edge.example.net`, or A records at
    /// 203.0.113.10; the local issuer.
    #[cfg(test)]
    pub(crate) fn example() -> Settings {
        let parse = |s: &str| Domain::parse(s).expect("a valid name");
        Settings {
            cname_target: Some(parse("edge.example.net")),
            addresses: vec![IpAddr::from([203, 0, 113, 10])],
            dns_servers: vec![SocketAddr::from(([127, 0, 0, 1], 53))],
            caa_identities: vec!["letsencrypt.org".into()],
            challenges: vec![ChallengeKind::Http01, ChallengeKind::TlsAlpn01],
            http_port: 80,
            recheck_interval: Duration::from_secs(300),
            http_blocks: false,
            caa_blocks: true,
            danger_allow_private_addresses: false,
            acme_directory: None,
        }
    }
}

/// Runs checks, keeps the latest report per domain, and holds back orders while one fails.
pub struct Onboarding {
    settings: Settings,
    store: Arc<dyn Store>,
    nonces: Arc<reach::Nonces>,
    latest: DashMap<Domain, Arc<Report>>,
    /// Names being checked right now (a periodic run skips them).
    running: Mutex<HashMap<Domain, usize>>,
    /// Checks that passed after failing clear a name's backoff at most once per
    /// [`FIX_RESET_EVERY`].
    fix_resets: OncePer,
    /// Held while a run compares its report with the latest, stores it and keeps it, so a run
    /// that started earlier cannot overwrite a newer report between the comparison and the
    /// write. One store write long.
    commit: tokio::sync::Mutex<()>,
    /// The URL of the edge's ACME account, once one exists (it never changes after).
    account: OnceLock<String>,
    clock: Clock,
}

impl Onboarding {
    /// Checks with `settings`, reports kept in `store`, stamped by `clock`.
    pub fn new(settings: Settings, store: Arc<dyn Store>, clock: Clock) -> Onboarding {
        Onboarding {
            settings,
            store,
            nonces: Arc::new(reach::Nonces::default()),
            latest: DashMap::new(),
            running: Mutex::new(HashMap::new()),
            commit: tokio::sync::Mutex::new(()),
            fix_resets: OncePer::new(FIX_RESET_EVERY),
            account: OnceLock::new(),
            clock,
        }
    }

    /// Reachability nonces sealed with the cluster's `key`: whichever node a check's fetch
    /// lands on answers it.
    pub fn with_sealed_nonces(mut self, key: Arc<crate::seal::SealKey>) -> Onboarding {
        self.nonces = Arc::new(reach::Nonces::sealed(key, self.clock.clone()));
        self
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The nonces the edge's HTTP listener answers for the reachability check.
    pub fn nonces(&self) -> Arc<reach::Nonces> {
        self.nonces.clone()
    }

    /// True if checks run on their own and gate orders.
    pub fn is_configured(&self) -> bool {
        self.settings.is_configured()
    }

    /// Loads the stored reports (at start).
    pub async fn restore(&self) -> Result<(), StoreError> {
        for (name, json) in self.store.domain_checks().await? {
            // An unreadable report is only stale diagnostics: the next run replaces it.
            if let Some(report) = parse_report(&name, &json) {
                self.latest.insert(name, Arc::new(report));
            }
        }
        Ok(())
    }

    /// Takes the report stored for `name` now, which another node's checks may have written
    /// (propagation of a change of its row): its orders are held back, or let go, as on that
    /// node. None stored: none kept. One this node cannot read (written by a newer version,
    /// say) must not leave an older one holding orders back: none is kept either.
    pub async fn reload(&self, name: &Domain) -> Result<(), StoreError> {
        let stored = self.store.domain_checks_of(name).await?;
        match stored.and_then(|json| parse_report(name, &json)) {
            Some(report) => {
                self.latest.insert(name.clone(), Arc::new(report));
            }
            None => {
                self.latest.remove(name);
            }
        }
        Ok(())
    }

    /// The latest report for `name`, if it was ever checked.
    pub fn latest(&self, name: &Domain) -> Option<Arc<Report>> {
        self.latest.get(name).map(|r| r.clone())
    }

    /// Forgets the report of a removed domain (the store drops it with the domain), and when a
    /// fix last cleared its backoff. After a run that was keeping its report, if one was: a
    /// run that ends later finds the domain gone from the store and keeps nothing, so a report
    /// of the removed registration never holds back the orders of the next.
    pub async fn forget(&self, name: &Domain) {
        let _commit = self.commit.lock().await;
        self.latest.remove(name);
        self.fix_resets.forget(name);
    }

    /// The URL of the edge's account with its ACME CA, once any node created it: read from the
    /// store until then, kept after.
    async fn edge_account(&self) -> Result<Option<&str>, StoreError> {
        if self.account.get().is_none()
            && let Some(directory) = &self.settings.acme_directory
            && let Some(url) = crate::acme::account_url(&*self.store, directory).await?
        {
            let _ = self.account.set(url);
        }
        Ok(self.account.get().map(String::as_str))
    }

    /// Runs every check for `record` now, stores and returns the report.
    pub async fn check(
        &self,
        record: &DomainRecord,
        certs: &Certs,
    ) -> Result<Arc<Report>, StoreError> {
        let name = &record.name;
        let failed_before = self.latest(name).is_some_and(|r| r.blocking().is_some());
        // A report is stamped with when its run started: what DNS said is that old.
        let started = self.clock.now();
        let running = Running::start(&self.running, name);
        let view = dns::gather(
            name,
            self.settings.cname_target.as_ref(),
            &self.settings.dns_servers,
        )
        .await;
        let account = self.edge_account().await?;
        let mut list = checks::evaluate(&view, &self.settings, account);
        if let Some(reach) = reach::check(&view, &list, &self.settings, &self.nonces).await {
            list.push(reach);
        }
        let cert = certs.status(record).await;
        drop(running);
        let held = self.is_configured()
            && list
                .iter()
                .any(|c| c.status == CheckStatus::Fail && c.blocking);
        let refused = certs.issuer_refuses(name);
        list.push(certificate::check(name, &cert?, held, refused.as_deref()));
        let report = Arc::new(Report {
            checked_at: started,
            checks: list,
        });
        let json = serde_json::to_string(report.as_ref())
            .map_err(|_| StoreError::Corrupt("domain checks (not serialisable)"))?;
        {
            let _commit = self.commit.lock().await;
            // Runs overlap (a request, the status page, the periodic run): one that started
            // later and ended first saw newer DNS, perhaps the customer's fix. Its report stands.
            // (Across nodes the store keeps the last written.)
            if let Some(newer) = self.latest(name).filter(|r| r.checked_at > started) {
                return Ok(newer);
            }
            if !self.store.put_domain_checks(name, &json).await? {
                // Removed while its checks ran: nothing to keep, and nothing more to do.
                return Ok(report);
            }
            self.latest.insert(name.clone(), report.clone());
        }
        // The gate's own reason is resolved; any backoff a CA error set stays. A hold recorded
        // by a handshake here while this ran counts too (not in `record`, read before). Only
        // then is the store's row locked and read again (a transaction under the writers'
        // lock on PostgreSQL), not at every run.
        if report.blocking().is_none()
            && (IssueStatus::of(record).held_back() || certs.held_here(name))
            && let Err(e) = certs.release_hold(name).await
        {
            tracing::warn!(domain = %name, error = %crate::errors::chain(&e), "releasing the hold of a domain whose checks pass; released at its next check");
        }
        // Checks that failed and pass now saw something fixed: a CA failure they can see the
        // cause of is tried again at once, whoever ran them (a request, the periodic run), at
        // most once per FIX_RESET_EVERY.
        let now = self.clock.now();
        if failed_before
            && report.blocking().is_none()
            && certificate::backing_off_for_what_checks_see(record, now)
            && self.fix_resets.may(name, now)
        {
            certs.reset_backoff(name).await?;
        }
        tracing::info!(
            domain = %name,
            failing = report.checks.iter().filter(|c| c.status == CheckStatus::Fail).count(),
            blocking = report.blocking().map(|c| c.id.as_str()),
            "domain checked"
        );
        Ok(report)
    }

    /// Checks again, every `recheck_interval`, the domains without a valid certificate whose
    /// last check is older than that, until `stop` turns true. Does nothing unless configured.
    pub async fn run_periodic(self: Arc<Self>, certs: Arc<Certs>, mut stop: watch::Receiver<bool>) {
        if !self.is_configured() {
            return;
        }
        // Waking twice per period re-checks a domain between one and one and a half periods
        // after its last check, however the periods line up.
        let tick = self.settings.recheck_interval / 2;
        loop {
            if let Err(e) = self.recheck_due(&certs).await {
                tracing::warn!(error = %error_chain(&e), "periodic domain checks");
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn recheck_due(self: &Arc<Self>, certs: &Arc<Certs>) -> Result<(), StoreError> {
        // Each page's due names are checked as it is read (at most `PERIODIC_CONCURRENCY` at
        // once), so a pass holds one page of records, and checks none long after reading it.
        let mut tasks = JoinSet::new();
        let read = self.spawn_due(certs, &mut tasks).await;
        // A failed read of the store ends the pass; the checks under way finish first.
        while tasks.join_next().await.is_some() {}
        read
    }

    /// Reads every domain, a page at a time, starting a check of each that is due in `tasks`.
    async fn spawn_due(
        self: &Arc<Self>,
        certs: &Arc<Certs>,
        tasks: &mut JoinSet<()>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let period = self.settings.recheck_interval;
        // Which names hold a certificate valid now: one read of every stored certificate's
        // lifetime per pass, made only if some name is due, instead of a certificate read (and
        // a cache insertion) per name. Names with a valid certificate are not re-checked (unless its
        // renewal failed on what the checks see), so
        // their reports never turn fresh: without it every pass read them all.
        let mut valid: Option<HashSet<Domain>> = None;
        let mut pages = DomainPages::new(&*self.store);
        while let Some(page) = pages.next().await? {
            for record in page {
                let fresh = self
                    .latest(&record.name)
                    .is_some_and(|r| r.checked_at + period > now);
                if fresh || lock(&self.running).contains_key(&record.name) {
                    continue;
                }
                // A renewal that failed on what the checks see (a CAA record changed since
                // issuance) is checked again like a name without a certificate, so what the
                // report shows is what the renewal met.
                let renewal_failing = record
                    .last_error
                    .as_ref()
                    .is_some_and(|f| certificate::checks_cover(&f.kind));
                if !renewal_failing {
                    if valid.is_none() {
                        let lifetimes = self.store.cert_lifetimes().await?;
                        valid = Some(
                            lifetimes
                                .into_iter()
                                .filter(|l| l.not_after > now)
                                .map(|l| l.domain)
                                .collect(),
                        );
                    }
                    if valid.as_ref().is_some_and(|v| v.contains(&record.name)) {
                        continue;
                    }
                }
                while tasks.len() >= PERIODIC_CONCURRENCY {
                    tasks.join_next().await;
                }
                let (this, certs) = (self.clone(), certs.clone());
                tasks.spawn(async move {
                    if let Err(e) = this.check(&record, &certs).await {
                        tracing::warn!(domain = %record.name, error = %error_chain(&e), "checking domain");
                    }
                });
            }
        }
        Ok(())
    }
}

/// The stored report `json` of `name`; none, with a warning, if it does not parse.
fn parse_report(name: &Domain, json: &str) -> Option<Report> {
    serde_json::from_str(json)
        .map_err(|e| {
            let error = e.to_string();
            tracing::warn!(domain = %name, error = %escape::escape(&error), "stored checks do not parse");
        })
        .ok()
}

impl IssueGate for Onboarding {
    fn hold(&self, name: &Domain) -> Option<Hold> {
        if !self.is_configured() {
            return None;
        }
        let report = self.latest.get(name)?;
        let check = report.blocking()?;
        // Escaped again: a report stored by an older edge may hold DNS text raw, and this
        // message reaches the log and `last_error`.
        Some(Hold {
            check: check.id.as_str().to_owned(),
            message: format!(
                "{HELD_BACK} `{}` check fails: {}; `clickedge domain check {name}` shows the fix",
                check.id,
                escape::escape(&check.message),
            ),
        })
    }
}

/// Marks a name as being checked until dropped (also when the run is cancelled midway, e.g. by
/// an admin client that hung up). Runs of one name overlapping are counted: the name is being
/// checked until the last ends.
struct Running<'a> {
    runs: &'a Mutex<HashMap<Domain, usize>>,
    name: Domain,
}

impl<'a> Running<'a> {
    fn start(runs: &'a Mutex<HashMap<Domain, usize>>, name: &Domain) -> Running<'a> {
        *lock(runs).entry(name.clone()).or_default() += 1;
        Running {
            runs,
            name: name.clone(),
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut runs = lock(self.runs);
        if let Some(n) = runs.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                runs.remove(&self.name);
            }
        }
    }
}
