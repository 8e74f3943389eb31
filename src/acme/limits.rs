//! Which rate limit a CA's answer reports, and whose orders it holds back: the order's name
//! only, or every name of the account.
//!
//! Let's Encrypt (Boulder) answers a rate limit with `429` and a `rateLimited` problem document
//! (RFC 8555 §6.7) whose `detail` names the limit and links its section of
//! <https://letsencrypt.org/docs/rate-limits/>, and with `Retry-After` in seconds; an
//! overloaded CA answers `503` ("Service busy; retry later.", also `rateLimited`) with
//! `Retry-After`. Most of its limits are per identifier, identifier set or registered domain,
//! and hold back that name alone; a few are per account. The words are matched on both the
//! phrase and the anchor of the documentation link, current and earlier spellings of each.
//!
//! NOTE: a rate limit whose words match none of the limits below (another CA, wording Boulder
//! has not used yet) holds back every name until its `Retry-After`. Taking it for one name's
//! would let every other name's order run into it too, each one a request the CA refused after
//! it asked to wait, and a CA that is ignored that way may block the account, which stops
//! every name with no end in sight; a pause of the whole account ends at the time the CA gave.
//! The pause is logged with the CA's words, so the limit can be added here.
//!
//! This module neither pauses nor backs off: the client pauses the account's order budget,
//! `certs` backs the name off.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::store::RateLimitScope;
use crate::sync::lock;

/// A CA's rate limit, as the edge tells them apart (Let's Encrypt's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// New Certificates per Exact Set of Identifiers (the duplicate certificate limit): the
    /// order's names were issued too often.
    ExactSet,
    /// Authorization Failures per Identifier per Account: the name failed validation too often.
    FailedAuthorizations,
    /// Consecutive Authorization Failures per Identifier per Account: the name is paused until
    /// someone unpauses it at the page the CA's words link.
    PausedIdentifier,
    /// New Certificates per Registered Domain: too many certificates under the name's registered
    /// domain.
    RegisteredDomain,
    /// New Orders per Account.
    NewOrders,
    /// New Registrations per IP Address (or per IPv6 range): no account can be made.
    NewRegistrations,
    /// Pending Authorizations per Account.
    PendingAuthorizations,
    /// The CA is overloaded (`503`, "Service busy").
    Overload,
    /// A rate limit none of the others matches.
    Unrecognised,
}

/// Lowercase fragments of a problem's `detail` naming each limit: its phrase and its
/// documentation anchor, current and earlier. Checked in this order: the exact-set phrases
/// also start like the registered-domain ones, and the consecutive failures' anchor contains
/// the failed authorizations' one.
const WORDS: &[(RateLimit, &[&str])] = &[
    (
        RateLimit::Overload,
        &["service busy", "service unavailable"],
    ),
    (
        RateLimit::PausedIdentifier,
        &[
            "temporarily prevented from requesting certificates",
            "#consecutive-authorization-failures-per-",
        ],
    ),
    (
        RateLimit::ExactSet,
        &[
            "exact set of identifiers",
            "exact set of domains",
            "exact set of hostnames",
            "#new-certificates-per-exact-set-of-",
        ],
    ),
    (
        RateLimit::FailedAuthorizations,
        &[
            "too many failed authorizations",
            "#authorization-failures-per-",
            "#failed-validations",
        ],
    ),
    (
        RateLimit::RegisteredDomain,
        &[
            "#new-certificates-per-registered-domain",
            "#certificates-per-registered-domain",
            "already issued for \"",
            "already issued for:",
        ],
    ),
    (
        RateLimit::NewOrders,
        &["too many new orders", "#new-orders-per-account"],
    ),
    (
        RateLimit::NewRegistrations,
        &[
            "too many new registrations",
            "too many registrations",
            "#new-registrations-per-",
            "#accounts-per-ip",
        ],
    ),
    (
        RateLimit::PendingAuthorizations,
        &[
            "too many currently pending authorizations",
            "#pending-authorizations",
        ],
    ),
];

/// The namespace suffix of the `rateLimited` problem type (RFC 8555 §6.7).
const RATE_LIMITED: &str = ":rateLimited";

impl RateLimit {
    /// The rate limit an answer reports: `status` (the HTTP status, or the problem's own
    /// `status` when only the problem document is at hand), the problem's type and its detail.
    /// None if it is not a rate limit.
    pub fn of(status: Option<u16>, problem_type: Option<&str>, detail: &str) -> Option<RateLimit> {
        if status == Some(503) {
            return Some(RateLimit::Overload);
        }
        let rate_limited = problem_type.is_some_and(|t| t.ends_with(RATE_LIMITED));
        if status != Some(429) && !rate_limited {
            return None;
        }
        let detail = detail.to_ascii_lowercase();
        let limit = WORDS
            .iter()
            .find(|(_, words)| words.iter().any(|w| detail.contains(w)))
            .map_or(RateLimit::Unrecognised, |(limit, _)| *limit);
        Some(limit)
    }

    /// Whose orders it holds back. The edge orders one name per certificate, so a limit per
    /// identifier or identifier set is the name's. A limit per registered domain is taken as
    /// the name's too: the other names under that domain each meet it once and then back off
    /// on their own, and names under other domains go on.
    pub fn scope(self) -> RateLimitScope {
        match self {
            RateLimit::ExactSet
            | RateLimit::FailedAuthorizations
            | RateLimit::PausedIdentifier
            | RateLimit::RegisteredDomain => RateLimitScope::Name,
            RateLimit::NewOrders
            | RateLimit::NewRegistrations
            | RateLimit::PendingAuthorizations
            | RateLimit::Overload
            | RateLimit::Unrecognised => RateLimitScope::Account,
        }
    }

    /// Its name, as Let's Encrypt's documentation calls it.
    pub fn name(self) -> &'static str {
        match self {
            RateLimit::ExactSet => "New Certificates per Exact Set of Identifiers",
            RateLimit::FailedAuthorizations => "Authorization Failures per Identifier per Account",
            RateLimit::PausedIdentifier => {
                "Consecutive Authorization Failures per Identifier per Account"
            }
            RateLimit::RegisteredDomain => "New Certificates per Registered Domain",
            RateLimit::NewOrders => "New Orders per Account",
            RateLimit::NewRegistrations => "New Registrations per IP Address",
            RateLimit::PendingAuthorizations => "Pending Authorizations per Account",
            RateLimit::Overload => "Service Busy (the CA is overloaded)",
            RateLimit::Unrecognised => "a rate limit the edge does not recognise",
        }
    }
}

/// The type and detail of a problem document in an answer's body; empty words if it is not one.
pub(super) fn problem_words(body: &[u8]) -> (Option<String>, String) {
    #[derive(serde::Deserialize)]
    struct Words {
        r#type: Option<String>,
        detail: Option<String>,
    }
    match serde_json::from_slice::<Words>(body) {
        Ok(w) => (w.r#type, w.detail.unwrap_or_default()),
        Err(_) => (None, String::new()),
    }
}

/// At most this many rate limits are kept for the orders that met them (one that nobody reads
/// goes first).
const KEPT: usize = 64;

/// The rate limits the client met with a `Retry-After`, each kept by its problem's detail until
/// the order that met it reads it: instant-acme hands the order the problem document, never the
/// answer's headers. Two answers with the same words name the same limit and, but for the CA's
/// jitter, the same time.
#[derive(Default)]
pub struct SeenLimits(Mutex<VecDeque<Seen>>);

struct Seen {
    detail: String,
    limit: RateLimit,
    until: SystemTime,
}

impl SeenLimits {
    /// Keeps `limit`, met with `detail`, which holds orders back until `until`.
    pub(super) fn note(&self, detail: String, limit: RateLimit, until: SystemTime) {
        let mut seen = lock(&self.0);
        if seen.len() == KEPT {
            seen.pop_front();
        }
        seen.push_back(Seen {
            detail,
            limit,
            until,
        });
    }

    /// The limit a problem with `detail` reported and until when, if the client met it (then
    /// forgotten: each answer is read once).
    pub(super) fn take(&self, detail: &str) -> Option<(RateLimit, SystemTime)> {
        let mut seen = lock(&self.0);
        let at = seen.iter().rposition(|s| s.detail == detail)?;
        seen.remove(at).map(|s| (s.limit, s.until))
    }
}

/// Whether an order refused with `e` while naming the certificate it `replaces` (RFC 9773 §5) is
/// placed again without: a renewal is still a renewal. The CA may offer no renewal information,
/// not know the certificate (another CA's or another account's, after `acme.directory`
/// changed: Let's Encrypt refuses such an order rather than ignoring the field), or find it
/// replaced already (`alreadyReplaced`: a node finalized an order naming it and stopped before
/// storing the certificate). A rate limit or an overloaded CA is not asked again at once.
pub(super) fn plain_order_after(e: &instant_acme::Error) -> bool {
    match e {
        instant_acme::Error::Unsupported(_) => true,
        instant_acme::Error::Api(p) => RateLimit::of(
            p.status,
            p.r#type.as_deref(),
            p.detail.as_deref().unwrap_or_default(),
        )
        .is_none(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_unix_secs;

    const RATE_LIMITED: Option<&str> = Some("urn:ietf:params:acme:error:rateLimited");

    /// `detail` as Let's Encrypt sends it with a `429`.
    fn limited(detail: &str) -> RateLimit {
        RateLimit::of(Some(429), RATE_LIMITED, detail).unwrap()
    }

    /// The details of Boulder's `ratelimits` package (`Decision.Result`, errors/errors.go) and of
    /// its new-order pause, as recorded in clients' logs, and the ones it sent before.
    #[test]
    fn lets_encrypt_limits_per_name_hold_back_the_name() {
        for (detail, limit) in [
            (
                "too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2025-09-18 09:13:16 UTC: see https://letsencrypt.org/docs/rate-limits/#new-certificates-per-exact-set-of-identifiers",
                RateLimit::ExactSet,
            ),
            (
                "Error creating new order :: too many certificates already issued for exact set of domains: links.example.com: see https://letsencrypt.org/docs/rate-limits/",
                RateLimit::ExactSet,
            ),
            (
                "too many failed authorizations (5) for \"links.example.com\" in the last 1h0m0s, retry after 2026-09-19 11:14:03 UTC: see https://letsencrypt.org/docs/rate-limits/#authorization-failures-per-identifier-per-account",
                RateLimit::FailedAuthorizations,
            ),
            (
                "Error creating new authz :: too many failed authorizations recently: see https://letsencrypt.org/docs/rate-limits/",
                RateLimit::FailedAuthorizations,
            ),
            (
                "Your account is temporarily prevented from requesting certificates for links.example.com and possibly others. Please visit: https://portal.letsencrypt.org/sfe/v1/unpause?jwt=x.y.z",
                RateLimit::PausedIdentifier,
            ),
            (
                "too many certificates (50) already issued for \"example.com\" in the last 168h0m0s, retry after 2025-06-02 10:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/#new-certificates-per-registered-domain",
                RateLimit::RegisteredDomain,
            ),
            (
                "Error creating new cert :: too many certificates already issued for: example.com",
                RateLimit::RegisteredDomain,
            ),
        ] {
            assert_eq!(limited(detail), limit, "{detail}");
            assert_eq!(limit.scope(), RateLimitScope::Name, "{detail}");
        }
    }

    #[test]
    fn account_limits_and_overload_hold_back_every_name() {
        for (status, detail, limit) in [
            (
                429,
                "too many new orders (300) from this account in the last 3h0m0s, retry after 2025-06-02 10:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/#new-orders-per-account",
                RateLimit::NewOrders,
            ),
            (
                429,
                "too many new registrations (10) from this IP address in the last 3h0m0s, retry after 2025-06-02 10:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/#new-registrations-per-ip-address",
                RateLimit::NewRegistrations,
            ),
            (
                429,
                "too many currently pending authorizations: see https://letsencrypt.org/docs/rate-limits/",
                RateLimit::PendingAuthorizations,
            ),
            (503, "Service busy; retry later.", RateLimit::Overload),
            // Before September 2022 the overload came as a 429.
            (429, "Service busy; retry later.", RateLimit::Overload),
            (429, "slow down", RateLimit::Unrecognised),
        ] {
            let got = RateLimit::of(Some(status), RATE_LIMITED, detail).unwrap();
            assert_eq!(got, limit, "{detail}");
            assert_eq!(got.scope(), RateLimitScope::Account, "{detail}");
        }
        // A 503 without a problem document (a load balancer's page) is an overload too.
        assert_eq!(
            RateLimit::of(Some(503), None, ""),
            Some(RateLimit::Overload)
        );
    }

    #[test]
    fn only_a_429_503_or_rate_limited_problem_is_a_rate_limit() {
        let unauthorized = Some("urn:ietf:params:acme:error:unauthorized");
        assert_eq!(
            RateLimit::of(Some(403), unauthorized, "too many failed authorizations"),
            None
        );
        assert_eq!(RateLimit::of(None, unauthorized, "wrong answer"), None);
        // The problem alone (no HTTP status at hand) still names it.
        assert_eq!(
            RateLimit::of(
                None,
                RATE_LIMITED,
                "too many certificates (5) already issued for this exact set of identifiers"
            ),
            Some(RateLimit::ExactSet)
        );
    }

    #[test]
    fn problem_words_are_read_leniently() {
        let body = br#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"slow down","status":429}"#;
        assert_eq!(
            problem_words(body),
            (
                Some("urn:ietf:params:acme:error:rateLimited".into()),
                "slow down".into()
            )
        );
        assert_eq!(problem_words(b"<html>busy</html>"), (None, String::new()));
    }

    #[test]
    fn a_seen_limit_is_read_once_and_the_oldest_unread_go_first() {
        let seen = SeenLimits::default();
        let t = from_unix_secs(1_800_000_000);
        seen.note("a".into(), RateLimit::ExactSet, t);
        assert_eq!(seen.take("b"), None);
        assert_eq!(seen.take("a"), Some((RateLimit::ExactSet, t)));
        assert_eq!(seen.take("a"), None);
        for i in 0..=KEPT {
            seen.note(i.to_string(), RateLimit::NewOrders, t);
        }
        assert_eq!(seen.take("0"), None, "the oldest went first");
        assert_eq!(
            seen.take(&KEPT.to_string()),
            Some((RateLimit::NewOrders, t))
        );
    }

    fn problem(status: u16, problem_type: &str, detail: &str) -> instant_acme::Error {
        let json = serde_json::json!({ "type": problem_type, "status": status, "detail": detail });
        instant_acme::Error::Api(serde_json::from_value(json).unwrap())
    }

    /// A renewal refused for naming the certificate it replaces is placed again without: Boulder
    /// refuses a `replaces` it cannot find, or of another account, rather than ignoring it (the
    /// certificates of the directory used before). Not so after a rate limit or an overload.
    #[test]
    fn a_renewal_refused_for_its_replaces_is_ordered_again_without() {
        for e in [
            instant_acme::Error::Unsupported("ACME renewal information (ARI)"),
            problem(
                409,
                "urn:ietf:params:acme:error:alreadyReplaced",
                "already replaced",
            ),
            problem(
                404,
                "urn:ietf:params:acme:error:malformed",
                "unable to find certificate being replaced",
            ),
            problem(
                403,
                "urn:ietf:params:acme:error:unauthorized",
                "requester account did not request the certificate being replaced by this order",
            ),
        ] {
            assert!(plain_order_after(&e), "{e}");
        }
        for e in [
            problem(
                429,
                "urn:ietf:params:acme:error:rateLimited",
                "too many new orders recently",
            ),
            problem(
                503,
                "urn:ietf:params:acme:error:rateLimited",
                "Service busy; retry later.",
            ),
            instant_acme::Error::Timeout(None),
        ] {
            assert!(!plain_order_after(&e), "{e}");
        }
    }
}
