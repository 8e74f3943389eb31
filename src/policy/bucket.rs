//! A token bucket: at most `burst` takes at once, refilled at `rate` per second. Pure: the caller
//! says what time it is, so tests need no clock and the bucket never reads one. The arithmetic is
//! [`crate::rate::Gcra`], the same as every other rate bound's.

use std::num::NonZeroU32;
use std::time::Instant;

use crate::rate::Gcra;

/// Tokens for one kind of request, shared by everyone who makes it.
#[derive(Debug)]
pub(super) struct TokenBucket {
    rate: Gcra,
    /// The bucket's arrival time, nanoseconds since `epoch` (see [`Gcra::step`]).
    tat: u64,
    epoch: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub(super) fn new(rate: NonZeroU32, burst: NonZeroU32, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: Gcra::new(rate, burst),
            tat: 0,
            epoch: now,
        }
    }

    /// Takes a token at `now`; false if none is left. A `now` earlier than the last one adds
    /// nothing.
    pub(super) fn take(&mut self, now: Instant) -> bool {
        let now = now.saturating_duration_since(self.epoch).as_nanos();
        let now = u64::try_from(now).unwrap_or(u64::MAX);
        match self.rate.step(self.tat, now) {
            Some(next) => {
                self.tat = next;
                true
            }
            None => false,
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
