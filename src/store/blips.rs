//! A store that fails chosen operations a given number of times (a pool's wait timing out, a
//! connection dropped), or holds their answers until the test lets them go (a database whose
//! answer is slow to arrive, or never does), and otherwise passes every call to the store it
//! wraps.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tokio::sync::{Notify, watch};

use super::*;

/// `inner`, with blips.
pub(crate) struct Blips {
    inner: Arc<dyn Store>,
    /// How many of the next [`Store::extend_lease`] calls fail.
    pub(crate) extend_lease: AtomicU32,
    /// How many of the next [`Store::certificate`] calls fail.
    pub(crate) certificate: AtomicU32,
    /// How many of the next [`Store::put_certificate_fenced`] calls fail.
    pub(crate) put_fenced: AtomicU32,
    /// How many of the next [`Store::add_approved_domain`] calls fail.
    pub(crate) add_approved: AtomicU32,
    /// How many [`Store::certificate`] calls pass before those failures begin.
    pub(crate) certificate_after: AtomicU32,
    /// Holds the answers of [`Store::certificate`] calls once armed.
    pub(crate) stall_certificate: Stall,
    /// Holds [`Store::acquire_lease`] calls once armed, before they reach the store.
    pub(crate) stall_acquire: Stall,
    /// Holds the answers of [`Store::domain`] calls once armed.
    pub(crate) stall_domain: Stall,
}

/// Holds calls once armed: each gets the wrapped store's answer, then waits with it until
/// [`Stall::release`] (never, if the test does not call it).
pub(crate) struct Stall {
    armed: AtomicBool,
    held: Notify,
    released: watch::Sender<bool>,
}

impl Stall {
    fn new() -> Stall {
        Stall {
            armed: AtomicBool::new(false),
            held: Notify::new(),
            released: watch::Sender::new(false),
        }
    }

    /// Holds every call from now on.
    pub(crate) fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Returns once a call is held.
    pub(crate) async fn held(&self) {
        self.held.notified().await;
    }

    /// Lets the held calls go, and holds no more.
    pub(crate) fn release(&self) {
        self.armed.store(false, Ordering::SeqCst);
        self.released.send_replace(true);
    }

    /// Waits here while armed, until released.
    async fn pass(&self) {
        if !self.armed.load(Ordering::SeqCst) {
            return;
        }
        let mut released = self.released.subscribe();
        self.held.notify_one();
        let _ = released.wait_for(|r| *r).await;
    }
}

impl Blips {
    pub(crate) fn over(inner: Arc<dyn Store>) -> Arc<Blips> {
        Arc::new(Blips {
            inner,
            extend_lease: AtomicU32::new(0),
            certificate: AtomicU32::new(0),
            put_fenced: AtomicU32::new(0),
            add_approved: AtomicU32::new(0),
            certificate_after: AtomicU32::new(0),
            stall_certificate: Stall::new(),
            stall_acquire: Stall::new(),
            stall_domain: Stall::new(),
        })
    }

    /// An error if `count` says this call fails (counting it down).
    fn blip(count: &AtomicU32) -> Result<(), StoreError> {
        match count.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
            Ok(_) => Err(StoreError::Unavailable {
                op: "waiting for a connection",
                source: "pool timed out".into(),
            }),
            Err(_) => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl Changes for Blips {
    async fn changes_since(&self, version: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        self.inner.changes_since(version, limit).await
    }
    async fn latest_version(&self) -> Result<u64, StoreError> {
        self.inner.latest_version().await
    }
    async fn prune_tombstones(
        &self,
        now: SystemTime,
        keep: Duration,
    ) -> Result<Option<u64>, StoreError> {
        self.inner.prune_tombstones(now, keep).await
    }
    async fn pruned_through(&self) -> Result<u64, StoreError> {
        self.inner.pruned_through().await
    }
    async fn listen(&self, hint: Arc<Notify>) -> Result<(), StoreError> {
        self.inner.listen(hint).await
    }
}

#[async_trait::async_trait]
impl ClusterView for Blips {
    async fn heartbeat(
        &self,
        node_id: &str,
        started_at: SystemTime,
        applied: u64,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.inner
            .heartbeat(node_id, started_at, applied, now)
            .await
    }
    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.inner.nodes().await
    }
    async fn forget_nodes(&self, before: SystemTime) -> Result<u64, StoreError> {
        self.inner.forget_nodes(before).await
    }
    async fn leases(&self, now: SystemTime) -> Result<Vec<LeaseRecord>, StoreError> {
        self.inner.leases(now).await
    }
    async fn order_budgets(&self) -> Result<Vec<BudgetRecord>, StoreError> {
        self.inner.order_budgets().await
    }
}

#[async_trait::async_trait]
impl Store for Blips {
    fn queries(&self) -> prometheus::IntCounter {
        self.inner.queries()
    }
    async fn domains(&self) -> Result<Vec<DomainRecord>, StoreError> {
        self.inner.domains().await
    }
    async fn domains_after(
        &self,
        after: Option<&Domain>,
        limit: u32,
    ) -> Result<Vec<DomainRecord>, StoreError> {
        self.inner.domains_after(after, limit).await
    }
    async fn listing_after(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<(DomainRecord, Option<CertInfo>)>, StoreError> {
        self.inner.listing_after(after, limit).await
    }
    async fn domain(&self, name: &Domain) -> Result<Option<DomainRecord>, StoreError> {
        let answer = self.inner.domain(name).await;
        self.stall_domain.pass().await;
        answer
    }
    async fn add_domain(&self, name: &Domain, created_at: SystemTime) -> Result<bool, StoreError> {
        self.inner.add_domain(name, created_at).await
    }
    async fn add_approved_domain(
        &self,
        name: &Domain,
        created_at: SystemTime,
    ) -> Result<bool, StoreError> {
        Blips::blip(&self.add_approved)?;
        self.inner.add_approved_domain(name, created_at).await
    }
    async fn set_fallback_url(&self, name: &Domain, url: Option<&str>) -> Result<bool, StoreError> {
        self.inner.set_fallback_url(name, url).await
    }
    async fn remove_domain(&self, name: &Domain) -> Result<bool, StoreError> {
        self.inner.remove_domain(name).await
    }
    async fn set_status(&self, name: &Domain, status: &IssueStatus) -> Result<(), StoreError> {
        self.inner.set_status(name, status).await
    }
    async fn update_status(
        &self,
        name: &Domain,
        change: StatusChange,
    ) -> Result<Option<IssueStatus>, StoreError> {
        self.inner.update_status(name, change).await
    }
    async fn certificate(&self, name: &Domain) -> Result<Option<StoredCert>, StoreError> {
        let passes = self
            .certificate_after
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if passes.is_err() {
            Blips::blip(&self.certificate)?;
        }
        let answer = self.inner.certificate(name).await;
        self.stall_certificate.pass().await;
        answer
    }
    async fn certificate_info(&self, name: &Domain) -> Result<Option<CertInfo>, StoreError> {
        self.inner.certificate_info(name).await
    }
    async fn put_certificate(&self, name: &Domain, cert: &StoredCert) -> Result<(), StoreError> {
        self.inner.put_certificate(name, cert).await
    }
    async fn put_certificate_fenced(
        &self,
        name: &Domain,
        cert: &StoredCert,
        fence: Fence,
    ) -> Result<bool, StoreError> {
        Blips::blip(&self.put_fenced)?;
        self.inner.put_certificate_fenced(name, cert, fence).await
    }
    async fn cert_summary(
        &self,
        now: SystemTime,
        expiring_before: SystemTime,
    ) -> Result<CertSummary, StoreError> {
        self.inner.cert_summary(now, expiring_before).await
    }
    async fn cert_lifetimes(&self) -> Result<Vec<CertLifetime>, StoreError> {
        self.inner.cert_lifetimes().await
    }
    async fn certificates_after(
        &self,
        after: Option<&Domain>,
        limit: u32,
    ) -> Result<CertPage, StoreError> {
        self.inner.certificates_after(after, limit).await
    }
    async fn kv(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.kv(key).await
    }
    async fn put_kv(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.inner.put_kv(key, value).await
    }
    async fn add_kv(&self, key: &str, value: &str) -> Result<String, StoreError> {
        self.inner.add_kv(key, value).await
    }
    async fn put_challenge(
        &self,
        kind: ChallengeKind,
        name: &str,
        value: &str,
        expires_at: SystemTime,
    ) -> Result<(), StoreError> {
        self.inner
            .put_challenge(kind, name, value, expires_at)
            .await
    }
    async fn challenge(
        &self,
        kind: ChallengeKind,
        name: &str,
        now: SystemTime,
    ) -> Result<Option<String>, StoreError> {
        self.inner.challenge(kind, name, now).await
    }
    async fn remove_challenge(
        &self,
        kind: ChallengeKind,
        name: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.inner.remove_challenge(kind, name, now).await
    }
    async fn acquire_lease(
        &self,
        name: &Domain,
        holder: &str,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        self.stall_acquire.pass().await;
        self.inner.acquire_lease(name, holder, now, ttl).await
    }
    async fn extend_lease(
        &self,
        name: &Domain,
        fence: Fence,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        Blips::blip(&self.extend_lease)?;
        self.inner.extend_lease(name, fence, now, ttl).await
    }
    async fn set_lease_order(
        &self,
        name: &Domain,
        fence: Fence,
        order_url: Option<&str>,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        self.inner
            .set_lease_order(name, fence, order_url, now)
            .await
    }
    async fn release_lease(&self, name: &Domain, fence: Fence) -> Result<bool, StoreError> {
        self.inner.release_lease(name, fence).await
    }
    async fn take_order(
        &self,
        budget: &str,
        rate: OrderRate,
        now: SystemTime,
    ) -> Result<OrderTurn, StoreError> {
        self.inner.take_order(budget, rate, now).await
    }
    async fn pause_orders(&self, budget: &str, until: SystemTime) -> Result<(), StoreError> {
        self.inner.pause_orders(budget, until).await
    }
    async fn link_keys(&self) -> Result<Vec<StoredLinkKey>, StoreError> {
        self.inner.link_keys().await
    }
    async fn add_link_key(
        &self,
        secret: [u8; 32],
        created_at: SystemTime,
    ) -> Result<u16, StoreError> {
        self.inner.add_link_key(secret, created_at).await
    }
    async fn remove_link_key(&self, id: u16) -> Result<KeyChange, StoreError> {
        self.inner.remove_link_key(id).await
    }
    async fn retire_link_key(&self, id: u16, at: SystemTime) -> Result<KeyChange, StoreError> {
        self.inner.retire_link_key(id, at).await
    }
    async fn domain_checks(&self) -> Result<Vec<(Domain, String)>, StoreError> {
        self.inner.domain_checks().await
    }
    async fn domain_checks_of(&self, name: &Domain) -> Result<Option<String>, StoreError> {
        self.inner.domain_checks_of(name).await
    }
    async fn put_domain_checks(&self, name: &Domain, json: &str) -> Result<bool, StoreError> {
        self.inner.put_domain_checks(name, json).await
    }
}
