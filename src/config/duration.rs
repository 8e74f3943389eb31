//! Durations as people write them (`"30s"`, `"5m"`, `"1h 30m"`, `"7d"`: humantime), at most 100
//! years. Longer can only be a mistake, and the times computed from one (now plus a timeout,
//! twice an interval) would overflow the clock.
//!
//! Only parsing; what a duration may be (at least a second, …) is `validate`'s.

use std::time::Duration;

use serde::Deserializer;

/// The longest duration any key takes: 100 years as humantime counts them (365.25 days each), so
/// `"100y"` is accepted.
pub const LONGEST: Duration = Duration::from_secs(100 * 31_557_600);

/// A duration, at most [`LONGEST`] (`#[serde(with = "duration")]`).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v: Duration = humantime_serde::deserialize(d)?;
    at_most_longest(v)
}

/// An optional duration, at most [`LONGEST`] (`#[serde(with = "duration::optional")]`).
pub mod optional {
    use super::{Deserializer, Duration, at_most_longest};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v: Option<Duration> = humantime_serde::deserialize(d)?;
        v.map(at_most_longest).transpose()
    }
}

fn at_most_longest<E: serde::de::Error>(v: Duration) -> Result<Duration, E> {
    if v > LONGEST {
        return Err(E::custom(format!(
            "{} is longer than the 100 years a duration may be; write a duration such as \"30s\", \"5m\" or \"7d\"",
            humantime::format_duration(v)
        )));
    }
    Ok(v)
}
