//! `cluster status` (`GET /v1/cluster`): the nodes alive, the leases held, the orders in flight,
//! the shared order budget left and each node's propagation lag, read from the store by
//! whichever node is asked.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::Propagation;
use crate::clock::{Clock, rfc3339};
use crate::store::{BudgetRecord, OrderRate, Store, StoreError};

/// A node counts as alive while its last heartbeat is at most this many heartbeat intervals old.
const ALIVE_BEATS: u32 = 3;

/// The cluster as the store shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node_id: String,
    /// The latest change version in the store.
    pub version: u64,
    /// Every node that ever sent a heartbeat.
    pub nodes: Vec<NodeStatus>,
    /// Leases unexpired now or keeping an unfinished order.
    pub leases: Vec<LeaseStatus>,
    /// Orders placed and not finished (their URLs kept with the lease).
    pub orders_in_flight: usize,
    /// Each ACME account's order budget.
    pub budgets: Vec<BudgetStatus>,
}

/// One node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Its id.
    pub node_id: String,
    /// Heartbeat within three intervals.
    pub alive: bool,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Its last heartbeat (RFC 3339).
    pub heartbeat_at: String,
    /// The last version it applied.
    pub applied: u64,
    /// Changes it had not applied at its last heartbeat: the store's latest version minus
    /// `applied` (0: up to date).
    pub lag: u64,
}

/// One lease.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseStatus {
    /// The name.
    pub name: String,
    /// The node holding it (or that held it last).
    pub holder: String,
    /// Its fencing token.
    pub fence: u64,
    /// Unexpired now.
    pub held: bool,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// The unfinished order kept with it.
    pub order_url: Option<String>,
}

/// One order budget.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetStatus {
    /// The budget (`acme <directory>`).
    pub name: String,
    /// Orders that may be placed now.
    pub left: u32,
    /// Of how many (`acme.max_orders`).
    pub of: u32,
    /// The CA's pause, while one is on (RFC 3339).
    pub paused_until: Option<String>,
}

/// Reads the cluster's status for the admin API.
pub struct StatusReader {
    store: Arc<dyn Store>,
    propagation: Arc<Propagation>,
    rate: OrderRate,
    heartbeat_interval: Duration,
    clock: Clock,
}

impl StatusReader {
    /// Reads from `store`, as this node (`propagation`) sees it; budgets are shown against
    /// `rate` (`acme.max_orders` per `acme.order_window`).
    pub fn new(
        store: Arc<dyn Store>,
        propagation: Arc<Propagation>,
        rate: OrderRate,
        heartbeat_interval: Duration,
        clock: Clock,
    ) -> StatusReader {
        StatusReader {
            store,
            propagation,
            rate,
            heartbeat_interval,
            clock,
        }
    }

    /// The status now.
    pub async fn read(&self) -> Result<ClusterStatus, StoreError> {
        let now = self.clock.now();
        let version = self.store.latest_version().await?;
        let alive_for = self.heartbeat_interval.saturating_mul(ALIVE_BEATS);
        let nodes = self
            .store
            .nodes()
            .await?
            .into_iter()
            .map(|n| NodeStatus {
                alive: n.heartbeat_at + alive_for >= now,
                started_at: rfc3339(n.started_at),
                heartbeat_at: rfc3339(n.heartbeat_at),
                lag: version.saturating_sub(n.applied),
                applied: n.applied,
                node_id: n.node_id,
            })
            .collect();
        let leases: Vec<LeaseStatus> = self
            .store
            .leases(now)
            .await?
            .into_iter()
            .map(|l| LeaseStatus {
                held: l.expires_at > now,
                expires_at: rfc3339(l.expires_at),
                name: l.name,
                holder: l.holder,
                fence: l.fence.0,
                order_url: l.order_url,
            })
            .collect();
        let budgets = self
            .store
            .order_budgets()
            .await?
            .iter()
            .map(|b| budget(b, self.rate, now))
            .collect();
        Ok(ClusterStatus {
            node_id: self.propagation.node_id().to_owned(),
            version,
            orders_in_flight: leases.iter().filter(|l| l.order_url.is_some()).count(),
            nodes,
            leases,
            budgets,
        })
    }
}

/// What is left of a GCRA budget at `now`: every interval its arrival time runs ahead of now is
/// one order taken from the burst; nothing is left during a pause.
fn budget(b: &BudgetRecord, rate: OrderRate, now: SystemTime) -> BudgetStatus {
    let ahead = b.tat.duration_since(now).unwrap_or_default();
    let interval = rate.interval.max(Duration::from_millis(1));
    let taken = u32::try_from(ahead.as_nanos().div_ceil(interval.as_nanos())).unwrap_or(u32::MAX);
    let paused = b.paused_until > now;
    BudgetStatus {
        name: b.name.clone(),
        left: if paused {
            0
        } else {
            rate.burst.saturating_sub(taken)
        },
        of: rate.burst,
        paused_until: paused.then(|| rfc3339(b.paused_until)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_unix_secs;

    #[test]
    fn the_budget_left_counts_the_intervals_the_bucket_runs_ahead() {
        let rate = OrderRate::per_window(300, Duration::from_secs(3 * 3600));
        let now = from_unix_secs(100_000);
        let at = |tat: u64, paused: u64| BudgetRecord {
            name: "acme x".into(),
            tat: from_unix_secs(tat),
            paused_until: from_unix_secs(paused),
        };
        assert_eq!(budget(&at(0, 0), rate, now).left, 300, "never used: full");
        assert_eq!(budget(&at(100_036, 0), rate, now).left, 299, "one order");
        assert_eq!(budget(&at(100_037, 0), rate, now).left, 298);
        let paused = budget(&at(0, 100_010), rate, now);
        assert_eq!((paused.left, paused.of), (0, 300));
        assert!(paused.paused_until.is_some());
    }
}
