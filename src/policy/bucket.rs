//! A token bucket: at most `burst` takes at once, refilled at `rate` per second. Pure: the caller
//! says what time it is, so tests need no clock and the bucket never reads one.

use std::num::NonZeroU32;
use std::time::Instant;

/// One token, in the bucket's units: a token per second of `rate` adds one unit per nanosecond,
/// so refills are exact integers.
const TOKEN: u128 = 1_000_000_000;

/// Tokens for one kind of request, shared by everyone who makes it.
#[derive(Debug)]
pub(super) struct TokenBucket {
    /// Units added per nanosecond (tokens per second).
    rate: u128,
    /// Most units held.
    full: u128,
    /// Units held at `at`.
    held: u128,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub(super) fn new(rate: NonZeroU32, burst: NonZeroU32, now: Instant) -> TokenBucket {
        let full = u128::from(burst.get()) * TOKEN;
        TokenBucket {
            rate: u128::from(rate.get()),
            full,
            held: full,
            at: now,
        }
    }

    /// Takes a token at `now`; false if none is left. A `now` earlier than the last one adds
    /// nothing.
    pub(super) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_nanos();
        self.held = self
            .held
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(self.full);
        self.at = self.at.max(now);
        if self.held >= TOKEN {
            self.held -= TOKEN;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    #[test]
    fn a_full_bucket_gives_its_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(n(2), n(3), t0);
        assert!((0..3).all(|_| b.take(t0)));
        assert!(!b.take(t0), "burst spent");
        assert!(!b.take(t0 + Duration::from_millis(400)));
        assert!(
            b.take(t0 + Duration::from_millis(500)),
            "one token per 1/rate"
        );
        assert!(!b.take(t0 + Duration::from_millis(500)));
    }

    #[test]
    fn a_quiet_spell_refills_up_to_the_burst_only() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(n(10), n(3), t0);
        assert!((0..3).all(|_| b.take(t0)));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| b.take(later)).count(), 3);
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(n(1), n(1), t0);
        assert!(b.take(t0));
        assert!(!b.take(t0 - Duration::from_secs(5)));
        assert!(!b.take(t0 + Duration::from_millis(900)));
        assert!(b.take(t0 + Duration::from_secs(1)));
    }
}
