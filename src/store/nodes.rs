//! What the cluster looks like, as the store records it: the nodes (each one's start, last
//! heartbeat and last version applied), the issuance leases and the order budgets. Read by
//! `cluster status`; nothing decides anything from it.

use std::time::SystemTime;

use super::{Fence, StoreError};

/// A node, as its last heartbeat recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// `cluster.node_id`.
    pub node_id: String,
    /// When the node started.
    pub started_at: SystemTime,
    /// Its last heartbeat.
    pub heartbeat_at: SystemTime,
    /// The last change version it applied.
    pub applied: u64,
}

/// An issuance lease, held or kept for its unfinished order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The name.
    pub name: String,
    /// The node holding it (or that held it last).
    pub holder: String,
    /// Its fencing token.
    pub fence: Fence,
    /// When it expires (expired: free to take).
    pub expires_at: SystemTime,
    /// The order placed under it and not finished, if any.
    pub order_url: Option<String>,
}

/// An order budget's bucket: its theoretical arrival time and the CA's pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetRecord {
    /// The budget's name (one per ACME account).
    pub name: String,
    /// The GCRA theoretical arrival time.
    pub tat: SystemTime,
    /// No order before this time.
    pub paused_until: SystemTime,
}

/// The records `cluster status` shows.
#[async_trait::async_trait]
pub trait ClusterView: Send + Sync + 'static {
    /// Records that `node_id`, started at `started_at`, is alive at `now` and has applied every
    /// change up to `applied`.
    async fn heartbeat(
        &self,
        node_id: &str,
        started_at: SystemTime,
        applied: u64,
        now: SystemTime,
    ) -> Result<(), StoreError>;
    /// Every node that sent a heartbeat and was not forgotten since, by id.
    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError>;
    /// Forgets the nodes whose last heartbeat is older than `before` (scaled away, or replaced
    /// under another id by a deploy); how many. Nothing else refers to a node's row.
    async fn forget_nodes(&self, before: SystemTime) -> Result<u64, StoreError>;
    /// The leases unexpired at `now` or keeping an unfinished order of a registered name, by
    /// name.
    async fn leases(&self, now: SystemTime) -> Result<Vec<LeaseRecord>, StoreError>;
    /// Every order budget, by name.
    async fn order_budgets(&self) -> Result<Vec<BudgetRecord>, StoreError>;
}
