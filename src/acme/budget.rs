//! The account-wide order budget, shared by every node over the store: a GCRA bucket (the
//! algorithm Let's Encrypt uses: 300 new orders per account per 3 hours is one order per 36 s
//! with a burst of 300) that queues new orders rather than letting the account run into the CA's
//! rate limit, and a pause until the time a CA's `Retry-After` names for a rate limit of the
//! whole account (see `acme/limits`), which stops new orders on every node. A rate limit of one
//! name does not pause it: that name backs off alone (`certs/backoff`).
//!
//! Each order takes its token from the store in one atomic step ([`Store::take_order`]), so N
//! nodes together never place more than the budget; the wall clock is the injected [`Clock`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::limits::RateLimit;
use crate::clock::{Clock, rfc3339};
use crate::errors::chain as error_chain;
use crate::store::{OrderRate, OrderTurn, Store, StoreError};

/// A queued order asks the store again at least this often, so a clock step or a pause lifted
/// early is noticed.
const MAX_WAIT_STEP: Duration = Duration::from_secs(60);
/// ... and no more often than this.
const MIN_WAIT_STEP: Duration = Duration::from_millis(10);

/// The order budget of one ACME account, kept in the store.
pub struct OrderBudget {
    store: Arc<dyn Store>,
    /// The budget's row: one per account (directory).
    name: String,
    rate: OrderRate,
    clock: Clock,
}

impl OrderBudget {
    /// `orders` new orders per `window` for the account at `directory`, all available at first
    /// (shared by every node using the same store and directory); times are read from `clock`.
    pub fn new(
        store: Arc<dyn Store>,
        directory: &str,
        orders: u32,
        window: Duration,
        clock: Clock,
    ) -> OrderBudget {
        OrderBudget {
            store,
            name: format!("acme {directory}"),
            rate: OrderRate::per_window(orders, window),
            clock,
        }
    }

    /// Takes an order from the budget if one is available now; else when to ask again.
    pub async fn try_acquire(&self) -> Result<OrderTurn, StoreError> {
        self.store
            .take_order(&self.name, self.rate, self.clock.now())
            .await
    }

    /// Waits until a new order may be placed, and takes it from the budget; gives up once the
    /// next turn is later than `within` from now, saying when it is (a renewal then waits
    /// without counting a failure, instead of holding its lease for hours).
    pub async fn acquire_within(&self, within: Duration) -> Result<OrderTurn, StoreError> {
        let deadline = self.clock.now() + within;
        loop {
            let until = match self.try_acquire().await? {
                OrderTurn::Taken => return Ok(OrderTurn::Taken),
                OrderTurn::Wait(until) if until > deadline => return Ok(OrderTurn::Wait(until)),
                OrderTurn::Wait(until) => until,
            };
            let wait = until
                .duration_since(self.clock.now())
                .unwrap_or_default()
                .clamp(MIN_WAIT_STEP, MAX_WAIT_STEP);
            tokio::time::sleep(wait).await;
        }
    }

    /// The CA answered `limit`, a rate limit of the whole account, in `detail`, with
    /// `Retry-After: until`: no new order for any name before then, on any node. A failure to
    /// record it is logged (the CA will say it again).
    pub async fn pause_until(&self, until: SystemTime, limit: RateLimit, detail: &str) {
        let Ok(delay) = until.duration_since(self.clock.now()) else {
            return;
        };
        match self.store.pause_orders(&self.name, until).await {
            Ok(()) => tracing::warn!(
                limit = limit.name(),
                until = %rfc3339(until),
                seconds = delay.as_secs(),
                ca_said = detail,
                "the CA rate-limits the whole account: all issuance is paused until then, on every node"
            ),
            Err(e) => tracing::warn!(error = %error_chain(&e), "recording the CA's Retry-After"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, from_unix_secs};
    use crate::store::SqliteStore;

    fn store() -> Arc<dyn Store> {
        Arc::new(SqliteStore::in_memory().expect("in-memory store"))
    }

    #[tokio::test]
    async fn two_nodes_share_one_budget() {
        let (store, wall) = (store(), ManualClock::new(from_unix_secs(1_800_000_000)));
        let window = Duration::from_secs(30);
        let a = OrderBudget::new(store.clone(), "https://ca/dir", 2, window, wall.clock());
        let b = OrderBudget::new(store.clone(), "https://ca/dir", 2, window, wall.clock());
        assert_eq!(a.try_acquire().await.unwrap(), OrderTurn::Taken);
        assert_eq!(b.try_acquire().await.unwrap(), OrderTurn::Taken);
        let next = wall.clock().now() + Duration::from_secs(15);
        assert_eq!(a.try_acquire().await.unwrap(), OrderTurn::Wait(next));
        assert_eq!(b.try_acquire().await.unwrap(), OrderTurn::Wait(next));
        let other = OrderBudget::new(store, "https://other/dir", 2, window, wall.clock());
        assert_eq!(other.try_acquire().await.unwrap(), OrderTurn::Taken);
    }

    #[tokio::test]
    async fn a_retry_after_seen_by_one_node_pauses_every_node() {
        let (store, wall) = (store(), ManualClock::new(from_unix_secs(1_800_000_000)));
        let window = Duration::from_secs(3 * 3600);
        let a = OrderBudget::new(store.clone(), "https://ca/dir", 300, window, wall.clock());
        let b = OrderBudget::new(store, "https://ca/dir", 300, window, wall.clock());
        let until = wall.clock().now() + Duration::from_secs(120);
        a.pause_until(until, RateLimit::NewOrders, "too many new orders")
            .await;
        assert_eq!(b.try_acquire().await.unwrap(), OrderTurn::Wait(until));
        wall.advance(Duration::from_secs(120));
        assert_eq!(b.try_acquire().await.unwrap(), OrderTurn::Taken);
    }

    #[tokio::test]
    async fn acquire_waits_for_the_next_token_instead_of_failing() {
        // One order per 50 ms of the real clock: the second acquire must wait, then succeed.
        let budget = OrderBudget::new(
            store(),
            "https://ca/dir",
            1,
            Duration::from_millis(50),
            Clock::system(),
        );
        let within = Duration::from_secs(1);
        assert_eq!(
            budget.acquire_within(within).await.unwrap(),
            OrderTurn::Taken
        );
        assert!(matches!(
            budget.try_acquire().await.unwrap(),
            OrderTurn::Wait(_)
        ));
        let turn = tokio::time::timeout(Duration::from_secs(10), budget.acquire_within(within))
            .await
            .expect("the next token comes within its interval");
        assert_eq!(turn.unwrap(), OrderTurn::Taken);
    }

    /// A turn further away than the caller would wait is said at once, not waited for: the
    /// renewal is rescheduled for it, without counting a failure or holding its lease meanwhile.
    #[tokio::test]
    async fn a_turn_further_than_the_wait_is_said_not_waited_for() {
        let (store, wall) = (store(), ManualClock::new(from_unix_secs(1_800_000_000)));
        let window = Duration::from_secs(3 * 3600);
        let budget = OrderBudget::new(store, "https://ca/dir", 1, window, wall.clock());
        assert_eq!(budget.try_acquire().await.unwrap(), OrderTurn::Taken);
        let next = wall.clock().now() + window;
        let turn = tokio::time::timeout(
            Duration::from_secs(10),
            budget.acquire_within(Duration::from_secs(60)),
        )
        .await
        .expect("said at once");
        assert_eq!(turn.unwrap(), OrderTurn::Wait(next));
    }
}
