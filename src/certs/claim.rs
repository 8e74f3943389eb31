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
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::Domain;
use crate::clock::Clock;
use crate::errors::chain as error_chain;
use crate::issuer::{IssueError, OrderClaim};
use crate::store::{Fence, Store, StoreError};

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

/// A lease this node holds on a name, with its heartbeat. Dropping it stops the heartbeat (the
/// lease then expires within its TTL); [`Claim::release`] frees it at once.
pub(super) struct Claim {
    store: Arc<dyn Store>,
    name: Domain,
    fence: Fence,
    order_url: Option<String>,
    clock: Clock,
    ttl: Duration,
    lost: Arc<AtomicBool>,
    heartbeat: JoinHandle<()>,
}

impl Claim {
    /// Takes the lease of `name`, or none while another node holds it.
    pub(super) async fn take(
        store: &Arc<dyn Store>,
        name: &Domain,
        settings: &ClaimSettings,
        clock: &Clock,
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
            name: name.clone(),
            fence: lease.fence,
            order_url: lease.order_url,
            clock: clock.clone(),
            ttl: settings.ttl,
            lost,
            heartbeat,
        }))
    }

    /// The fence the certificate is written under.
    pub(super) fn fence(&self) -> Fence {
        self.fence
    }

    /// Frees the lease for the next holder; `finished`: the order is done, and is forgotten
    /// rather than kept for the next holder to resume. Failures are logged (the lease then
    /// expires on its own).
    pub(super) async fn release(self, finished: bool) {
        self.heartbeat.abort();
        if finished
            && let Err(e) = self
                .store
                .set_lease_order(&self.name, self.fence, None, self.clock.now())
                .await
        {
            tracing::warn!(domain = %self.name, error = %error_chain(&e), "forgetting a finished order");
        }
        if let Err(e) = self.store.release_lease(&self.name, self.fence).await {
            tracing::warn!(domain = %self.name, error = %error_chain(&e), "releasing a lease");
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
            Ok(true) => Ok(()),
            Ok(false) => Err(self.lost()),
            Err(e) => Err(self.store_failed(e)),
        }
    }

    async fn confirm(&self) -> Result<(), IssueError> {
        if self.lost.load(Ordering::Relaxed) {
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
