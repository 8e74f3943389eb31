//! Wall-clock time, handed down from `app` instead of read from the system in each module.
//!
//! Production uses [`Clock::system`]; tests build a [`ManualClock`] and move it forward, so
//! renewal schedules, backoff, the order budget and click timestamps can be tested without
//! waiting. Monotonic timers (`tokio::time`) stay tokio's: `tokio::time::pause` controls those.
//!
//! Also the few conversions every module needs: Unix seconds at the storage boundary and
//! RFC 3339 for people. This module deliberately knows nothing else.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Where "now" comes from. Cheap to clone; every clone of a manual clock shares its time.
#[derive(Debug, Clone, Default)]
pub struct Clock(Source);

#[derive(Debug, Clone, Default)]
enum Source {
    #[default]
    System,
    /// Nanoseconds since the Unix epoch, moved only by [`ManualClock`].
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// The operating system's clock.
    pub fn system() -> Clock {
        Clock(Source::System)
    }

    /// The current time.
    #[inline]
    pub fn now(&self) -> SystemTime {
        match &self.0 {
            // The one place the library reads the system's wall clock (see clippy.toml).
            #[allow(clippy::disallowed_methods)]
            Source::System => SystemTime::now(),
            Source::Manual(nanos) => {
                SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos.load(Ordering::Relaxed))
            }
        }
    }

    /// The current time in whole seconds since the Unix epoch.
    pub fn unix_secs(&self) -> u64 {
        unix_secs(self.now())
    }
}

/// A clock that stands still until moved: for tests.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: SystemTime) -> ManualClock {
        let nanos = start
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        ManualClock(Arc::new(AtomicU64::new(nanos)))
    }

    /// A clock showing the system's time now, then standing still.
    pub fn starting_now() -> ManualClock {
        ManualClock::new(Clock::system().now())
    }

    /// The [`Clock`] to hand to the code under test.
    pub fn clock(&self) -> Clock {
        Clock(Source::Manual(self.0.clone()))
    }

    /// Moves the time forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(by, Ordering::Relaxed);
    }
}

/// Whole seconds since the Unix epoch (0 for times before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The time `secs` seconds after the Unix epoch.
pub fn from_unix_secs(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// RFC 3339 in UTC, whole seconds (`2026-11-29T08:00:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = i64::try_from(unix_secs(t)).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The time an RFC 3339 text names (`2026-11-29T08:00:00Z`, offsets and fractions allowed), or
/// `None` when it is not one.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_it() {
        let manual = ManualClock::new(from_unix_secs(1_000));
        let a = manual.clock();
        let b = a.clone();
        assert_eq!(a.unix_secs(), 1_000);
        manual.advance(Duration::from_millis(2_500));
        assert_eq!(b.now(), from_unix_secs(1_002) + Duration::from_millis(500));
        assert_eq!(a.unix_secs(), 1_002);
    }

    #[test]
    fn rfc3339_is_utc_whole_seconds() {
        assert_eq!(
            rfc3339(from_unix_secs(1_795_939_200)),
            "2026-11-29T08:00:00Z"
        );
        assert_eq!(
            unix_secs(SystemTime::UNIX_EPOCH - Duration::from_secs(5)),
            0
        );
    }
}
