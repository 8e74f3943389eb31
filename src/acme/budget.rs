//! The account-wide order budget: a token bucket that queues new orders rather than letting the
//! account run into the CA's rate limit (Let's Encrypt: 300 new orders per account per 3 hours),
//! and that stops all new orders until the time a CA's `Retry-After` names.
//!
//! The bucket runs on tokio's monotonic time (so `tokio::time::pause` drives it in tests); the
//! wall clock is only read to turn a `Retry-After` date into a delay.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::clock::Clock;

/// A token bucket of new orders.
#[derive(Debug)]
pub struct OrderBudget {
    capacity: f64,
    per_second: f64,
    state: Mutex<State>,
    clock: Clock,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    last: Instant,
    paused_until: Option<Instant>,
}

impl OrderBudget {
    /// `orders` new orders per `window`, all available at first; `Retry-After` dates are read
    /// against `clock`.
    pub fn new(orders: u32, window: Duration, clock: Clock) -> OrderBudget {
        let capacity = f64::from(orders.max(1));
        OrderBudget {
            capacity,
            per_second: capacity / window.as_secs_f64().max(1e-3),
            state: Mutex::new(State {
                tokens: capacity,
                last: Instant::now(),
                paused_until: None,
            }),
            clock,
        }
    }

    /// Waits until a new order may be placed, and takes it from the budget.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let elapsed = now.duration_since(s.last).as_secs_f64();
                s.tokens = (s.tokens + elapsed * self.per_second).min(self.capacity);
                s.last = now;
                match s.paused_until {
                    Some(until) if until > now => until - now,
                    _ if s.tokens >= 1.0 => {
                        s.tokens -= 1.0;
                        return;
                    }
                    _ => Duration::from_secs_f64((1.0 - s.tokens) / self.per_second),
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The CA said `Retry-After: until`: no new order before then.
    pub fn pause_until(&self, until: SystemTime) {
        let Ok(delay) = until.duration_since(self.clock.now()) else {
            return;
        };
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let until = Instant::now() + delay;
        if s.paused_until.is_none_or(|p| p < until) {
            tracing::warn!(
                seconds = delay.as_secs(),
                "the CA asked to retry later: new orders wait"
            );
            s.paused_until = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test(start_paused = true)]
    async fn queues_orders_beyond_the_budget() {
        let budget = OrderBudget::new(3, Duration::from_secs(30), Clock::system());
        let start = Instant::now();
        for _ in 0..3 {
            budget.acquire().await;
        }
        assert_eq!(Instant::now(), start, "the first three are immediate");
        budget.acquire().await;
        // One order refills every 10 s.
        assert!(Instant::now() - start >= Duration::from_secs(10));
        assert!(Instant::now() - start < Duration::from_secs(11));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_new_orders() {
        let wall = ManualClock::starting_now();
        let budget = OrderBudget::new(300, Duration::from_secs(3 * 3600), wall.clock());
        let start = Instant::now();
        budget.pause_until(wall.clock().now() + Duration::from_secs(120));
        budget.acquire().await;
        assert!(Instant::now() - start >= Duration::from_secs(119));
    }
}
