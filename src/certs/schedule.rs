//! When to renew, and when to try again after a failure. Pure functions of times and a random
//! fraction, so they are tested without a clock. They work in whole seconds, as certificates
//! state their validity.
//!
//! - Without renewal information: renew when a third of the lifetime remains, minus a jitter of up
//!   to 1/30 of the lifetime so that certificates issued together don't renew together. This
//!   works the same for a 90-day and a 90-second certificate.
//! - With ACME Renewal Information (RFC 9773 §4.2): a uniformly random point of the suggested
//!   window, the certificate's own (the same at every check), or now once it has passed.
//! - After a failure: 1 min, 10 min, 100 min, then daily; never later than half-way to the expiry
//!   of the certificate still serving, so a failing renewal keeps retrying before it is too late.

use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

/// Delays after the 1st, 2nd and 3rd failure in a row; daily after that.
const BACKOFF: [u64; 3] = [60, 600, 6000];
const DAILY: u64 = 86_400;

/// Delay before the next attempt after `failures` failures in a row (`failures >= 1`).
pub fn backoff(failures: u32) -> Duration {
    let idx = failures.saturating_sub(1) as usize;
    Duration::from_secs(BACKOFF.get(idx).copied().unwrap_or(DAILY))
}

/// Renewal time without renewal information: one third of the lifetime before expiry, minus
/// `jitter` (in `[0, 1)`) times a thirtieth of the lifetime.
pub fn default_renew_at(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let lifetime = secs_between(not_before, not_after);
    let jitter = (lifetime as f64 / 30.0 * jitter.clamp(0.0, 1.0)) as u64;
    // Never before `not_before`: a third plus a thirtieth of the lifetime is less than all of it.
    not_after - Duration::from_secs(lifetime / 3 + jitter)
}

/// Renewal time from an ARI window: the point `frac` (in `[0, 1)`) of the way through it, to
/// renew at once that point has passed (at once for a window moved into the past). `frac` is
/// the certificate's own ([`cert_fraction`]), so every check of one window names the same point:
/// a point drawn afresh from what is left of the window at each check would slide to its end.
pub fn ari_renew_at(start: SystemTime, end: SystemTime, frac: f64) -> SystemTime {
    let len = secs_between(start, end) as f64;
    start + Duration::from_secs((len * frac.clamp(0.0, 1.0)) as u64)
}

/// A fraction in `[0, 1)` that is `chain_pem`'s own: uniform across certificates, the same at
/// every check and on every node.
pub fn cert_fraction(chain_pem: &str) -> f64 {
    let digest = Sha256::digest(chain_pem.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The top 53 bits: every such fraction is exact in an f64, and below 1.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// Next attempt after `failures` failures in a row at `now`, for a certificate valid until
/// `not_after` (or none). Bounded by expiry: at most half the time left, and at least 1 s away;
/// from the third failure in a row at least [`FAILING_FLOOR`] away, even past expiry, or a
/// renewal failing day after day would halve its waits down to seconds in its last hour.
pub fn retry_at(now: SystemTime, failures: u32, not_after: Option<SystemTime>) -> SystemTime {
    let wait = backoff(failures).as_secs();
    let wait = match not_after {
        Some(na) if na > now => wait.min(secs_between(now, na) / 2),
        _ => wait,
    };
    let floor = if failures >= 3 {
        FAILING_FLOOR.as_secs().min(backoff(failures).as_secs())
    } else {
        1
    };
    now + Duration::from_secs(wait.max(floor))
}

/// The shortest wait from a name's third failure in a row on: Let's Encrypt allows 5 failed
/// validations per name an hour, and a customer's fix in the last hour must find the name
/// allowed.
pub const FAILING_FLOOR: Duration = Duration::from_secs(12 * 60);

/// Whole seconds from `from` to `to` (0 if `to` is not later).
fn secs_between(from: SystemTime, to: SystemTime) -> u64 {
    to.duration_since(from).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_unix_secs as t;
    use instant_acme::RenewalInfo;
    use proptest::prelude::*;

    const DAY: u64 = 86_400;

    #[test]
    fn default_is_a_third_of_the_lifetime_before_expiry() {
        let nb = 1_000_000;
        assert_eq!(
            default_renew_at(t(nb), t(nb + 90 * DAY), 0.0),
            t(nb + 60 * DAY)
        );
        // A 90-second test certificate renews at 60 s, jittered down to 57 s at most.
        assert_eq!(default_renew_at(t(nb), t(nb + 90), 0.0), t(nb + 60));
        assert_eq!(default_renew_at(t(nb), t(nb + 90), 0.999), t(nb + 58));
        assert!(default_renew_at(t(nb), t(nb + 90 * DAY), 0.999) >= t(nb + 57 * DAY));
    }

    #[test]
    fn backoff_steps_then_daily() {
        assert_eq!(backoff(1), Duration::from_secs(60));
        assert_eq!(backoff(2), Duration::from_secs(600));
        assert_eq!(backoff(3), Duration::from_secs(6000));
        assert_eq!(backoff(4), Duration::from_secs(DAY));
        assert_eq!(backoff(40), Duration::from_secs(DAY));
    }

    #[test]
    fn retries_are_bounded_by_expiry() {
        let now = 1_000;
        assert_eq!(retry_at(t(now), 1, None), t(now + 60));
        assert_eq!(retry_at(t(now), 4, Some(t(now + 30 * DAY))), t(now + DAY));
        // 40 s of validity left: try again in 20 s, not in a minute.
        assert_eq!(retry_at(t(now), 1, Some(t(now + 40))), t(now + 20));
        assert_eq!(retry_at(t(now), 1, Some(t(now + 1))), t(now + 1));
        assert_eq!(retry_at(t(now), 1, Some(t(now - 5))), t(now + 60));
        // Failing day after day up to its last hour: at most 5 attempts in that hour, not 13.
        let expiry = now + 2 * DAY;
        let (mut at, mut failures, mut last_hour) = (now, 4, 0);
        while at < expiry {
            at = retry_at(t(at), failures, Some(t(expiry)))
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            failures += 1;
            last_hour += u32::from(at >= expiry - 3600 && at < expiry);
        }
        assert!(last_hour <= 5, "{last_hour} attempts in the last hour");
    }

    /// A renewalInfo response as Let's Encrypt serves it (RFC 9773 §4.2).
    const RECORDED: &str = r#"{
        "suggestedWindow": {
            "start": "2025-01-02T04:00:00Z",
            "end": "2025-01-03T04:00:00Z"
        },
        "explanationURL": "https://acme.example.com/docs/ari"
    }"#;

    fn unix(rfc3339: &str) -> SystemTime {
        t(
            time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
                .unwrap()
                .unix_timestamp() as u64,
        )
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn ari_window_from_a_recorded_response() {
        let info: RenewalInfo = serde_json::from_str(RECORDED).unwrap();
        let start = SystemTime::from(info.suggested_window.start);
        let end = SystemTime::from(info.suggested_window.end);
        assert_eq!(start, unix("2025-01-02T04:00:00Z"));
        assert_eq!(ari_renew_at(start, end, 0.0), start);
        assert_eq!(ari_renew_at(start, end, 0.5), start + 12 * HOUR);
        assert_eq!(
            ari_renew_at(start, end, 0.999_999),
            end - Duration::from_secs(1)
        );
    }

    #[test]
    fn ari_window_moved_into_the_past_means_renew_now() {
        // Recorded response of a CA asking for immediate renewal (window in the past).
        let info: RenewalInfo = serde_json::from_str(
            r#"{"suggestedWindow":{"start":"2021-01-03T00:00:00Z","end":"2021-01-04T00:00:00Z"}}"#,
        )
        .unwrap();
        let now = unix("2025-06-01T00:00:00Z");
        for frac in [0.0, 0.3, 0.999] {
            let at = ari_renew_at(
                info.suggested_window.start.into(),
                info.suggested_window.end.into(),
                frac,
            );
            assert!(at <= now, "{frac}");
        }
    }

    /// The point is the certificate's: checks of one window agree on it, and certificates
    /// spread over the window rather than meeting at its start or end.
    #[test]
    fn each_certificate_has_its_own_point_of_the_window() {
        let a = "-----BEGIN CERTIFICATE-----\nMIIB...a\n-----END CERTIFICATE-----\n";
        assert_eq!(cert_fraction(a), cert_fraction(a));
        let fractions: Vec<f64> = (0..1000)
            .map(|i| cert_fraction(&format!("{a}{i}")))
            .collect();
        assert!(fractions.iter().all(|f| (0.0..1.0).contains(f)));
        // A tenth of the window holds about a tenth of the certificates (100 ± 40 of 1000).
        for tenth in 0..10 {
            let low = f64::from(tenth) / 10.0;
            let n = fractions
                .iter()
                .filter(|f| (low..low + 0.1).contains(*f))
                .count();
            assert!((60..=140).contains(&n), "tenth {tenth}: {n}");
        }
    }

    proptest! {
        #[test]
        fn renewal_is_inside_the_lifetime(nb in 0u64..1 << 40, life in 1u64..400 * DAY, j in 0.0f64..1.0) {
            let at = default_renew_at(t(nb), t(nb + life), j);
            prop_assert!(at >= t(nb) && at <= t(nb + life));
        }

        #[test]
        fn ari_point_is_inside_the_window(s in 0u64..1 << 40, len in 0u64..DAY, f in 0.0f64..1.0) {
            let at = ari_renew_at(t(s), t(s + len), f);
            prop_assert!(at >= t(s) && at <= t(s + len));
        }
    }
}
