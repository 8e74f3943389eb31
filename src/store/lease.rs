//! The record types of cluster-wide coordination of certificate work: a per-name lease with a
//! fencing token ([`Fence`], [`Lease`]), and the shared order budget ([`OrderRate`],
//! [`OrderTurn`]). The methods that use them are on [`super::Store`]; what they must do is
//! specified by `store/conformance/cluster`.
//!
//! Time: every method takes the caller's `now` (the node's [`crate::clock::Clock`]), never the
//! database's clock, so one conformance suite drives every store deterministically. Nodes are
//! assumed NTP-synchronised; a lease's TTL (tens of seconds) is far longer than their skew, and
//! correctness never rests on time anyway: the certificate write is guarded by the fence in the
//! same statement, and a lease only saves duplicate orders.

use std::time::{Duration, SystemTime};

/// A fencing token: every lease acquisition gets a larger one than any before it, across every
/// name and node (a sequence). A writer holding an older fence than the certificate's never
/// replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fence(pub u64);

/// A lease just acquired: the fence to act with, and the URL of the order the name's previous
/// holder placed and did not finish (to resume rather than place another).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// This holder's fencing token.
    pub fence: Fence,
    /// The order kept with the lease, if any.
    pub order_url: Option<String>,
}

/// The order budget as a GCRA bucket (the algorithm Let's Encrypt uses, as [`crate::rate::Gcra`]):
/// one order per `interval` at the steady rate, `burst` at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderRate {
    /// Time between two orders at the steady rate (`order_window / max_orders`).
    pub interval: Duration,
    /// Orders available at once (`max_orders`).
    pub burst: u32,
}

impl OrderRate {
    /// `orders` per `window`, all of them available at once after a quiet spell.
    pub fn per_window(orders: u32, window: Duration) -> OrderRate {
        let orders = orders.max(1);
        OrderRate {
            interval: window / orders,
            burst: orders,
        }
    }

    /// How far ahead of now the bucket's arrival time may run: `burst - 1` intervals.
    pub fn tolerance(&self) -> Duration {
        self.interval.saturating_mul(self.burst.saturating_sub(1))
    }
}

/// The answer of [`super::Store::take_order`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderTurn {
    /// A token was taken: place the order.
    Taken,
    /// No token now: none before this time (the next token, or the end of a CA's pause).
    Wait(SystemTime),
}
