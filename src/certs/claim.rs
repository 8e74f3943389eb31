//! A node's claim on a name's certificate work: the name's lease in the store, held under a
//! fencing token and kept alive by a heartbeat while the node works.
//!
//! Exclusion here is for efficiency (one order per name across the cluster, not one per node);
//! correctness is the store's fenced certificate write. A claim is lost when its heartbeat finds
//! the lease expired or taken over; the issuer then stops before finalizing, and `certs` writes
//! nothing. The lease keeps the URL of the order being worked on, so that a node taking over a
//! dead holder's claim resumes the same order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;

use crate::Domain;
use crate::clock::Clock;
use crate::errors::chain as error_chain;
use crate::issuer::{IssueError, OrderClaim};
use crate::policy::Policy;
use crate::store::{Fence, LeaseRecord, Store, StoreError};

/// How a node claims names: who it is, and how long a claim lasts without a heartbeat.
#[derive(Debug, Clone)]
pub struct ClaimSettings {
    /// This node's name in the lease (`cluster.node_id`): who holds it, for operators.
    pub holder: String,
    /// How long a lease lasts without a heartbeat (`acme.lease_ttl`); heartbeats come every
    /// third of it.
    pub ttl: Duration,
}

impl Default for ClaimSettings {
    fn default() -> ClaimSettings {
        ClaimSettings {
            holder: "node".into(),
            ttl: Duration::from_secs(60),
        }
    }
}

/// Who holds a name's lease that this node could not take, as the store's lease records say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Holder {
    /// This node's own id: a lease an earlier attempt of this node took and did not free (it
    /// expires within its TTL), or another process running under the same `cluster.node_id`.
    ThisNode,
    /// Another node, by its id.
    Other(String),
    /// Not known: the leases could not be read, or this one expired or was freed since.
    Unknown,
}

impl Holder {
    /// Who holds `name`'s lease at `now` according to `leases`, for the node named `this`.
    pub(super) fn of(leases: &[LeaseRecord], name: &Domain, this: &str, now: SystemTime) -> Holder {
        match leases
            .iter()
            .find(|l| l.name == name.as_str() && l.expires_at > now)
        {
            Some(lease) if lease.holder == this => Holder::ThisNode,
            Some(lease) => Holder::Other(lease.holder.clone()),
            None => Holder::Unknown,
        }
    }

    /// Who holds the lease of `name` that [`Claim::take`] could not take: one read of the
    /// cluster's leases (a few rows: the names being worked on and the orders kept), made only
    /// when a claim is refused.
    pub(super) async fn read(
        store: &Arc<dyn Store>,
        name: &Domain,
        settings: &ClaimSettings,
        clock: &Clock,
    ) -> Holder {
        let now = clock.now();
        match store.leases(now).await {
            Ok(leases) => Holder::of(&leases, name, &settings.holder, now),
            Err(e) => {
                tracing::debug!(domain = %name, error = %error_chain(&e), "reading who holds a lease");
                Holder::Unknown
            }
        }
    }

    /// What a due renewal that waits for this holder's lease logs.
    pub(super) fn renewal_waits(&self) -> &'static str {
        match self {
            Holder::ThisNode => {
                "the lease is held under this node's id (an earlier attempt's, unexpired, or \
                 another process running with this cluster.node_id): checking again later"
            }
            Holder::Other(_) => "another node is renewing: checking again later",
            Holder::Unknown => {
                "the lease was not free, and who holds it could not be read (or it has expired \
                 or been freed since): checking again later"
            }
        }
    }
}

/// A lease this node holds on a name, with its heartbeat. [`Claim::release`] frees it; dropped
/// without that (its flight unwound or was cancelled), it is freed from a task of its own, or,
/// with no runtime left to run one, expires within its TTL.
pub(super) struct Claim {
    store: Arc<dyn Store>,
    /// Whether the name is still registered: a claim on a removed name no longer holds.
    policy: Arc<Policy>,
    name: Domain,
    fence: Fence,
    order_url: Option<String>,
    /// Whether an order may be kept with the lease in the store (one was when it was taken, or
    /// [`OrderClaim::keep`] kept one since): what [`Claim::forget_order`] has to clear.
    order_kept: AtomicBool,
    /// Where [`OrderClaim::queued`] says the name waits for the order budget (the certificate
    /// layer's set); cleared when the claim ends.
    budget_queued: Arc<dashmap::DashSet<Domain>>,
    clock: Clock,
    ttl: Duration,
    lost: Arc<AtomicBool>,
    heartbeat: JoinHandle<()>,
    released: bool,
}

impl Claim {
    /// Takes the lease of `name`, or none while another node holds it.
    pub(super) async fn take(
        store: &Arc<dyn Store>,
        policy: &Arc<Policy>,
        name: &Domain,
        settings: &ClaimSettings,
        clock: &Clock,
        budget_queued: &Arc<dashmap::DashSet<Domain>>,
    ) -> Result<Option<Claim>, StoreError> {
        let Some(lease) = store
            .acquire_lease(name, &settings.holder, clock.now(), settings.ttl)
            .await?
        else {
            return Ok(None);
        };
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(heartbeat(
            store.clone(),
            name.clone(),
            lease.fence,
            clock.clone(),
            settings.ttl,
            lost.clone(),
        ));
        Ok(Some(Claim {
            store: store.clone(),
            policy: policy.clone(),
            name: name.clone(),
            fence: lease.fence,
            order_kept: AtomicBool::new(lease.order_url.is_some()),
            budget_queued: budget_queued.clone(),
            order_url: lease.order_url,
            clock: clock.clone(),
            ttl: settings.ttl,
            lost,
            heartbeat,
            released: false,
        }))
    }

    /// The fence the certificate is written under.
    pub(super) fn fence(&self) -> Fence {
        self.fence
    }

    /// Whether the heartbeat (or a confirmation) found the lease lost.
    pub(super) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// How long the lease lasts without a heartbeat.
    pub(super) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Frees the lease for the next holder; `finished`: the order is done, and is forgotten
    /// rather than kept for the next holder to resume. Failures are logged (the lease then
    /// expires on its own).
    pub(super) async fn release(mut self, finished: bool) {
        self.released = true;
        self.heartbeat.abort();
        if finished {
            self.forget_order().await;
        }
        if let Err(e) = self.store.release_lease(&self.name, self.fence).await {
            tracing::warn!(domain = %self.name, error = %error_chain(&e), "releasing a lease");
        }
    }

    /// Forgets the order kept with the lease, if one is (none is kept from then on); a failure
    /// is logged. A lease expired meanwhile is not written: its next holder finds the order
    /// dead when it reads it.
    async fn forget_order(&self) {
        if !self.order_kept.swap(false, Ordering::Relaxed) {
            return;
        }
        if let Err(e) = self
            .store
            .set_lease_order(&self.name, self.fence, None, self.clock.now())
            .await
        {
            self.order_kept.store(true, Ordering::Relaxed);
            tracing::warn!(domain = %self.name, error = %error_chain(&e), "forgetting the order kept with the lease");
        }
    }

    fn lost(&self) -> IssueError {
        self.lost.store(true, Ordering::Relaxed);
        IssueError::ClaimLost {
            domain: self.name.clone(),
        }
    }

    fn store_failed(&self, source: StoreError) -> IssueError {
        IssueError::Claim {
            domain: self.name.clone(),
            source,
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.heartbeat.abort();
        self.budget_queued.remove(&self.name);
        // Freed all the same, so the name's next flight need not wait out the TTL; the order,
        // if any, stays for it to resume.
        if !self.released
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (store, name, fence) = (self.store.clone(), self.name.clone(), self.fence);
            runtime.spawn(async move {
                if let Err(e) = store.release_lease(&name, fence).await {
                    tracing::warn!(domain = %name, error = %error_chain(&e), "releasing a lease");
                }
            });
        }
    }
}

#[async_trait::async_trait]
impl OrderClaim for Claim {
    fn resume(&self) -> Option<&str> {
        self.order_url.as_deref()
    }

    async fn keep(&self, url: &str) -> Result<(), IssueError> {
        match self
            .store
            .set_lease_order(&self.name, self.fence, Some(url), self.clock.now())
            .await
        {
            Ok(true) => {
                self.order_kept.store(true, Ordering::Relaxed);
                Ok(())
            }
            Ok(false) => Err(self.lost()),
            Err(e) => Err(self.store_failed(e)),
        }
    }

    async fn forget(&self) {
        self.forget_order().await;
    }

    fn queued(&self, waiting: bool) {
        if waiting {
            self.budget_queued.insert(self.name.clone());
        } else {
            self.budget_queued.remove(&self.name);
        }
    }

    async fn confirm(&self) -> Result<(), IssueError> {
        // A name removed meanwhile (while a renewal waited hours for the order budget, say) is
        // not worth the CA's certificate: the store would refuse to keep it.
        if self.lost.load(Ordering::Relaxed) || !self.policy.is_registered(self.name.as_str()) {
            return Err(self.lost());
        }
        // Asked of the store, not of the heartbeat's last word: a node that was stopped past
        // its TTL and resumed must find out now, before its heartbeat runs again.
        match self
            .store
            .extend_lease(&self.name, self.fence, self.clock.now(), self.ttl)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.lost()),
            Err(e) => Err(self.store_failed(e)),
        }
    }
}

/// Extends the lease every third of its TTL until it is lost (or the claim is dropped). A store
/// error is logged and the next beat tried: the lease may still be unexpired by then.
async fn heartbeat(
    store: Arc<dyn Store>,
    name: Domain,
    fence: Fence,
    clock: Clock,
    ttl: Duration,
    lost: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        match store.extend_lease(&name, fence, clock.now(), ttl).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(domain = %name, "lease lost: another node took over the certificate work");
                lost.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                tracing::warn!(domain = %name, error = %error_chain(&e), "extending a lease");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_unix_secs;

    fn lease(name: &str, holder: &str, expires_at: u64) -> LeaseRecord {
        LeaseRecord {
            name: name.into(),
            holder: holder.into(),
            fence: Fence(1),
            expires_at: from_unix_secs(expires_at),
            order_url: None,
        }
    }

    #[test]
    fn a_lease_under_this_nodes_id_is_told_apart_from_another_nodes() {
        let name = Domain::parse("a.example.com").unwrap();
        let now = from_unix_secs(100);
        let leases = [
            lease("a.example.com", "edge-a", 160),
            lease("b.example.com", "edge-b", 160),
        ];
        let holder = Holder::of(&leases, &name, "edge-a", now);
        assert_eq!(holder, Holder::ThisNode);
        assert!(!holder.renewal_waits().contains("another node"));
        let holder = Holder::of(&leases, &name, "edge-b", now);
        assert_eq!(holder, Holder::Other("edge-a".into()));
        assert!(holder.renewal_waits().contains("another node"));
        // Expired (kept only for its order): nobody holds it now.
        let kept = [lease("a.example.com", "edge-a", 100)];
        assert_eq!(Holder::of(&kept, &name, "edge-b", now), Holder::Unknown);
        assert_eq!(Holder::of(&[], &name, "edge-b", now), Holder::Unknown);
    }
}
