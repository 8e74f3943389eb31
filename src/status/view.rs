//! What a status page shows of a domain, as JSON (`…/s/<token>.json`) and to the page: the
//! name, whether it is ready, its checks with their fixes, and its certificate. Nothing else of
//! the edge: the resolver the edge asks (its address is the operator's, not the customer's) is
//! named "the edge's DNS resolver" instead.

use serde::Serialize;

use crate::clock::rfc3339;
use crate::domains::DomainState;
use crate::onboarding::{Check, CheckStatus, Settings};

/// One domain as its status page shows it. Part of the public contract (`.json`).
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// The domain.
    pub name: String,
    /// Its Unicode form (the name itself when it has none).
    pub unicode: String,
    /// True when no check fails or warns and the certificate is valid.
    pub ready: bool,
    /// When the checks last ran (RFC 3339); null if never.
    pub checked_at: Option<String>,
    /// The checks, in their fixed order.
    pub checks: Vec<Check>,
    /// The certificate now.
    pub certificate: Certificate,
}

/// What a customer needs of the certificate.
#[derive(Debug, Serialize)]
pub struct Certificate {
    /// `none`, `pending`, `valid` or `failed`.
    pub status: &'static str,
    /// Who issued it.
    pub issuer: Option<String>,
    /// When it was issued (RFC 3339).
    pub issued_at: Option<String>,
    /// When it expires (RFC 3339).
    pub expires_at: Option<String>,
}

impl StatusView {
    /// The view of `state`, checked against `settings`.
    pub fn new(state: DomainState, settings: &Settings) -> StatusView {
        let checks: Vec<Check> = state
            .checks
            .into_iter()
            .map(|c| redact(c, settings))
            .collect();
        let cert = state.certificate;
        let ready = cert.status == "valid"
            && !checks.is_empty()
            && checks.iter().all(|c| {
                c.status == CheckStatus::Pass || c.id == crate::onboarding::CheckId::Certificate
            });
        StatusView {
            unicode: state
                .record
                .name
                .unicode()
                .unwrap_or_else(|| state.record.name.to_string()),
            name: state.record.name.to_string(),
            ready,
            checked_at: state.checked_at.map(rfc3339),
            checks,
            certificate: Certificate {
                status: cert.status,
                issuer: cert.issuer,
                issued_at: cert.not_before,
                expires_at: cert.not_after,
            },
        }
    }
}

/// `check` with the edge's resolver addresses replaced by words.
fn redact(mut check: Check, s: &Settings) -> Check {
    check.message = scrub(&check.message, s);
    check.fix = check.fix.map(|f| scrub(&f, s));
    check
}

/// `text` with every resolver of `s` (and the system resolver's addresses) named in words.
fn scrub(text: &str, s: &Settings) -> String {
    let words = "the edge's DNS resolver";
    let mut out = text.to_owned();
    for server in &s.dns_servers {
        out = out.replace(&server.to_string(), words);
    }
    // "the system resolver (192.0.2.53, …)": the addresses dropped.
    while let Some(start) = out.find("the system resolver (") {
        let open = start + "the system resolver ".len();
        let Some(len) = out[open..].find(')') else {
            break;
        };
        out.replace_range(start..=open + len, words);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::onboarding::CheckId;

    #[test]
    fn the_edges_resolver_is_not_named() {
        let mut s = Settings::example();
        s.dns_servers = vec![SocketAddr::from(([10, 1, 2, 3], 5353))];
        let c = Check::fail(
            CheckId::DnsServer,
            "DNS server failure: 10.1.2.3:5353 answered SERVFAIL for links.customer.com (A)",
            "If only this edge sees it, its resolver (10.1.2.3:5353) is at fault".into(),
            true,
        );
        let c = redact(c, &s);
        assert!(!c.message.contains("10.1.2.3"), "{}", c.message);
        assert!(c.message.contains("links.customer.com"), "{}", c.message);
        assert!(!c.fix.unwrap().contains("10.1.2.3"));
        let system = Check::pass(
            CheckId::DnsServer,
            "the system resolver (192.0.2.53, 192.0.2.54) answered every query",
        );
        let system = redact(system, &Settings::example());
        assert_eq!(
            system.message,
            "the edge's DNS resolver answered every query"
        );
    }
}
