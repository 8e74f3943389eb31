//! The rate arithmetic shared by every rate bound (clicks per address, `tls.ask` requests): a
//! token bucket written as GCRA, one "theoretical arrival time" per bucket instead of a count and
//! a refill time. Pure: callers keep the state (an integer, so it also fits in an atomic) and say
//! what time it is, in nanoseconds since an epoch of their own.

use std::num::NonZeroU32;

/// A rate of `per_sec` a second with bursts of up to `burst` at once.
#[derive(Debug, Clone, Copy)]
pub struct Gcra {
    /// Nanoseconds between two requests at the steady rate.
    interval_ns: u64,
    /// How far ahead of now a bucket may run: `burst - 1` intervals.
    tolerance_ns: u64,
}

impl Gcra {
    /// `per_sec` a second, `burst` at once after a quiet spell.
    pub fn new(per_sec: NonZeroU32, burst: NonZeroU32) -> Gcra {
        let interval_ns = 1_000_000_000 / u64::from(per_sec.get());
        Gcra {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(burst.get() - 1)),
        }
    }

    /// A request at `now` against a bucket whose arrival time is `tat` (0 for a fresh, full
    /// bucket): the bucket's next `tat` if it conforms, `None` if the bucket is empty (and then
    /// nothing changes). A `now` earlier than a previous one adds nothing.
    pub fn step(&self, tat: u64, now: u64) -> Option<u64> {
        let start = tat.max(now);
        (start - now <= self.tolerance_ns).then(|| start.saturating_add(self.interval_ns))
    }
}
