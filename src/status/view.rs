//! What a status page shows of a domain, as JSON (`…/s/<token>.json`) and to the page: the
//! name, whether it is ready, its checks with their fixes, and its certificate. Nothing else of
//! the edge: the resolver the edge asks (its address is the operator's, not the customer's) is
//! named "the edge's DNS resolver" instead.

use serde::Serialize;

use crate::clock::rfc3339;
use crate::domains::DomainState;
use crate::onboarding::{Check, CheckId, CheckStatus, Settings, certificate};

/// One domain as its status page shows it. Part of the public contract (`.json`).
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// The domain.
    pub name: String,
    /// Its Unicode form (the name itself when it has none).
    pub unicode: String,
    /// True when the certificate is valid and no check fails ([`is_ready`]).
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
        let cert = state.certificate;
        let checks: Vec<Check> = state
            .checks
            .into_iter()
            .map(|c| match &cert.last_error {
                Some(failure) => certificate::for_customer(c, failure),
                None => c,
            })
            .map(|c| redact(c, settings))
            .collect();
        let ready = is_ready(cert.status, &checks);
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

/// Whether a domain whose certificate has `cert_status` and whose checks are `checks` is ready:
/// checked, its certificate valid, and no check failing. A warning is advice, shown but not
/// waited for: most say what the edge's operator has not set up or could not check, nothing the
/// customer can change, and the valid certificate shows the CA reached the edge.
fn is_ready(cert_status: &str, checks: &[Check]) -> bool {
    cert_status == "valid"
        && !checks.is_empty()
        && checks
            .iter()
            .all(|c| c.status != CheckStatus::Fail || c.id == CheckId::Certificate)
}

/// `check` with the edge's resolver addresses replaced by words: those configured now, and in
/// the DNS server check, whose every address is a resolver's, any (a report written before the
/// resolvers changed, or by another node with resolvers of its own).
fn redact(mut check: Check, s: &Settings) -> Check {
    // Whether the edge reaches itself is the operator's to set up, and what it says names the
    // edge's own addresses (private ones among them, behind a split-horizon resolver).
    if check.id == CheckId::HttpReachable
        && check.status == CheckStatus::Warn
        && check.waits_on_the_operator()
    {
        check.message = "not checked from where the edge runs".to_owned();
        check.fix = Some(
            "Edge operator: the edge's log and admin API say why. Nothing for you to change."
                .to_owned(),
        );
        return check;
    }
    // The edge's issuer never vouching for the name: the message is the edge's configuration
    // (the zones of tls.local_ca_names, other customers' among them).
    if check.id == CheckId::Certificate
        && check.status == CheckStatus::Fail
        && check.waits_on_the_operator()
    {
        check.message = "none will be issued as the edge is set up now".to_owned();
        check.fix = Some(
            "Edge operator: the edge's admin API says why. Nothing for you to change.".to_owned(),
        );
        return check;
    }
    let every_address = check.id == CheckId::DnsServer;
    check.message = scrubbed(&check.message, s, every_address);
    check.fix = check.fix.map(|f| scrubbed(&f, s, every_address));
    check
}

/// [`scrub`], and with `every_address` [`without_addresses`] too.
fn scrubbed(text: &str, s: &Settings, every_address: bool) -> String {
    let text = scrub(text, s);
    if every_address {
        without_addresses(&text)
    } else {
        text
    }
}

/// `text` with every IP address in it, with or without a port, named in words.
fn without_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let bare = word.trim_matches(|c: char| matches!(c, '(' | ')' | ',' | ';' | ':'));
        let is_address = !bare.is_empty()
            && (bare.parse::<std::net::IpAddr>().is_ok()
                || bare.parse::<std::net::SocketAddr>().is_ok());
        if is_address {
            out.push_str(&word.replacen(bare, "the edge's DNS resolver", 1));
        } else {
            out.push_str(word);
        }
    }
    out
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

    #[test]
    fn ready_is_a_valid_certificate_with_no_check_failing_warnings_aside() {
        let pass = Check::pass(CheckId::Resolves, "resolves");
        let warn = Check::warn(
            CheckId::HttpReachable,
            "not checked: the edge has no route to it from where it runs",
            None,
        );
        let fail = Check::fail(CheckId::Caa, "refused", String::new(), true);
        assert!(is_ready("valid", &[pass.clone(), warn.clone()]));
        assert!(!is_ready("valid", &[pass.clone(), fail]));
        assert!(!is_ready("pending", &[pass.clone(), warn]));
        assert!(!is_ready("valid", &[]), "never checked");
        // The certificate check describes the certificate, which is judged by its status.
        let stale = Check::fail(CheckId::Certificate, "failed", String::new(), false);
        assert!(is_ready("valid", &[pass, stale]));
    }

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
        // A resolver no longer configured (the report kept from before a change, or written by
        // another node), over IPv4 or IPv6.
        for old in ["10.9.9.9:53", "[2001:db8::53]:53", "2001:db8::53"] {
            let c = Check::fail(
                CheckId::DnsServer,
                format!("DNS server failure: {old} answered SERVFAIL for links.customer.com (A)"),
                format!("If only this edge sees it, its resolver ({old}) is at fault"),
                true,
            );
            let c = redact(c, &s);
            assert_eq!(
                c.message,
                "DNS server failure: the edge's DNS resolver answered SERVFAIL for links.customer.com (A)"
            );
            assert_eq!(
                c.fix.as_deref(),
                Some(
                    "If only this edge sees it, its resolver (the edge's DNS resolver) is at fault"
                )
            );
        }
        // Another check's addresses are the customer's records: kept.
        let c = redact(
            Check::fail(
                CheckId::PointsToEdge,
                "links.customer.com has A 198.51.100.7",
                String::new(),
                true,
            ),
            &s,
        );
        assert!(c.message.contains("198.51.100.7"), "{}", c.message);
    }

    /// What the reachability check could not check names the edge's own addresses (private
    /// ones behind a split-horizon resolver): the page says only that it was not checked.
    #[test]
    fn the_edges_own_addresses_are_not_shown_when_its_reach_was_not_checked() {
        let settings = Settings::example();
        let warn = Check::warn(
            CheckId::HttpReachable,
            "not checked: the edge's addresses for links.customer.com (10.20.0.15) are not public",
            Some("Edge operator: the CA reaches the edge only through public addresses".into()),
        );
        assert!(warn.waits_on_the_operator());
        let shown = redact(warn, &settings);
        assert_eq!(shown.message, "not checked from where the edge runs");
        assert!(
            shown
                .fix
                .as_deref()
                .is_some_and(|f| f.contains("Nothing for you to change")),
            "{shown:?}"
        );
    }

    /// A name the edge's issuer never vouches for: the reason is the edge's configuration
    /// (other customers' zones in tls.local_ca_names), not shown on a customer's page.
    #[test]
    fn the_edges_issuer_settings_are_not_shown() {
        let why = "the built-in CA vouches only for names under tls.local_ca_names (othershop.com)";
        let cert = crate::certs::CertStatus {
            status: "none",
            issuer: None,
            not_before: None,
            not_after: None,
            next_renewal: None,
            failures: 0,
            retry_at: None,
            last_error: None,
        };
        let check = certificate::check(
            &"links.customer.com".parse().unwrap(),
            &cert,
            false,
            Some(why),
        );
        let shown = redact(check, &Settings::example());
        assert!(!shown.message.contains("othershop"), "{shown:?}");
        assert_eq!(shown.status, CheckStatus::Fail);
    }
}
