//! The `certificate` check: the certificate's state (none, pending, valid until, failed) and the
//! last issuance error explained by its recorded kind (an ACME problem type, RFC 8555 §6.7, a
//! held-back order, …) in plain words with the step that fixes it. Pure; it reads the kind, never
//! the words.

use std::time::SystemTime;

use super::{Check, CheckId};
use crate::Domain;
use crate::certs::CertStatus;
use crate::store::{AcmeProblem, DomainRecord, FailureKind, IssueFailure, RateLimitScope};

/// The certificate check for `name` in state `cert`; `held` if a failing check holds back its
/// order; `refused`, why the edge's issuer never issues for the name (the built-in CA outside
/// `tls.local_ca_names`), if it does not.
pub fn check(name: &Domain, cert: &CertStatus, held: bool, refused: Option<&str>) -> Check {
    if cert.status != "valid"
        && let Some(why) = refused
    {
        return Check::fail(
            CheckId::Certificate,
            format!("none will be issued: {why}"),
            "Edge operator: change the edge's config as the message says; nothing to change in the domain's DNS."
                .into(),
            false,
        );
    }
    let until = cert.not_after.as_deref().unwrap_or("?");
    let issuer = cert.issuer.as_deref().unwrap_or("?");
    match (cert.status, &cert.last_error) {
        ("valid", None) => Check::pass(
            CheckId::Certificate,
            format!("valid until {until} (issuer: {issuer})"),
        ),
        ("valid", Some(failure)) => {
            let (plain, fix) = explain(name, failure, cert.retry_at.as_deref());
            Check::warn(
                CheckId::Certificate,
                format!("valid until {until}, but renewing it failed: {plain}"),
                Some(fix),
            )
        }
        // A consequence, not a cause: the failing check is reported on its own.
        (
            _,
            Some(IssueFailure {
                kind: FailureKind::HeldBack { check },
                ..
            }),
        ) => Check::warn(
            CheckId::Certificate,
            format!("not ordered yet: the `{check}` check fails"),
            Some(
                "Apply the fix of that check; the certificate is ordered at the next HTTPS request after the checks pass."
                    .into(),
            ),
        ),
        ("pending", _) => Check::warn(CheckId::Certificate, "being issued now".to_owned(), None),
        (_, Some(failure)) => {
            let (plain, fix) = explain(name, failure, cert.retry_at.as_deref());
            Check::fail(CheckId::Certificate, plain, fix, false)
        }
        _ if held => Check::warn(
            CheckId::Certificate,
            format!(
                "none yet: it is ordered at the first HTTPS request for {name} after the failing checks are fixed"
            ),
            None,
        ),
        _ => Check::warn(
            CheckId::Certificate,
            format!("none yet: it is issued at the first HTTPS request for {name}"),
            None,
        ),
    }
}

/// True if `record` is backing off at `now` after a failure the checks can see the cause of:
/// checks that pass may then clear the backoff, so the next handshake orders at once.
pub fn backing_off_for_what_checks_see(record: &DomainRecord, now: SystemTime) -> bool {
    record.retry_at.is_some_and(|t| t > now)
        && record
            .last_error
            .as_ref()
            .is_some_and(|f| checks_cover(&f.kind))
}

/// True if a failure of this kind is one the DNS and reachability checks can see the cause of
/// (so checks that pass again are a good reason to retry at once).
pub fn checks_cover(kind: &FailureKind) -> bool {
    matches!(
        kind,
        FailureKind::HeldBack { .. }
            | FailureKind::Problem(
                AcmeProblem::Caa
                    | AcmeProblem::Dns
                    | AcmeProblem::Connection
                    | AcmeProblem::Unauthorized
                    | AcmeProblem::IncorrectResponse
                    | AcmeProblem::Tls
            )
    )
}

/// Whether a failure's detail is the CA's own words (a problem document), not what the edge met.
fn quotes_the_ca(kind: &FailureKind) -> bool {
    matches!(
        kind,
        FailureKind::Problem(_) | FailureKind::RateLimited(_) | FailureKind::Refused
    )
}

/// How [`explain`] quotes a failure the edge met (not the CA's words).
fn edge_detail(failure: &IssueFailure) -> String {
    format!(" ({})", failure.detail)
}

/// The certificate check `check` (made by [`check`] with `failure` its last error) as the
/// domain's customer sees it on the status page: the CA's words stay, but what the edge met (a
/// store, network or configuration error, naming its own paths, hosts or settings) is left to
/// the edge's operator, who sees it in the admin API and the log.
pub fn for_customer(mut check: Check, failure: &IssueFailure) -> Check {
    if check.id != CheckId::Certificate {
        return check;
    }
    if quotes_the_ca(&failure.kind) {
        // The CA's words may link a page meant for the account's holder (Let's Encrypt's
        // unpause page carries a token for the edge's ACME account in its address).
        check.message = without_links(&check.message);
        return check;
    }
    // A check's message is escaped when made (a database's error spans lines): the detail is
    // looked for as it was stored, escaped, or raw in a report an older edge stored.
    let raw = edge_detail(failure);
    let escaped = super::escape::escape(&raw);
    let plain = check
        .message
        .strip_suffix(escaped.as_ref())
        .or_else(|| check.message.strip_suffix(&raw));
    if let Some(plain) = plain {
        check.message = format!("{plain} (the edge's operator has the details)");
    }
    check
}

/// `text` with each `http://` or `https://` address replaced by a note that the edge's operator
/// has it.
fn without_links(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest
        .find("http://")
        .into_iter()
        .chain(rest.find("https://"))
        .min()
    {
        out.push_str(&rest[..at]);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ')')
            .map_or(rest.len(), |n| at + n);
        out.push_str("(a link the edge's operator has)");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The failure in plain words (quoting what was said), and what to do about it.
pub fn explain(name: &Domain, failure: &IssueFailure, retry_at: Option<&str>) -> (String, String) {
    let retry = match retry_at {
        Some(t) => format!(" The edge tries again after {t}."),
        None => String::new(),
    };
    let again = format!(
        "Then check again (\"Check again\" on the status page, or `clickedge domain check {name}`): once the checks pass, the next HTTPS request orders the certificate again."
    );
    // Only a problem document is the CA's own words; anything else is what the edge met.
    let said = if quotes_the_ca(&failure.kind) {
        format!(" (the CA said: {})", failure.detail)
    } else {
        edge_detail(failure)
    };
    let (plain, fix) = match &failure.kind {
        FailureKind::Problem(AcmeProblem::Caa) => (
            "the CA refused because a CAA record does not allow it".to_owned(),
            format!("Add the CAA record the `caa` check names.{retry} {again}"),
        ),
        FailureKind::Problem(AcmeProblem::Dns) => (
            format!("the CA could not look up {name} in DNS"),
            format!(
                "Publish the records the checks above name (saved and live at your DNS provider, not a draft), and make sure your name servers answer from everywhere.{retry} {again}"
            ),
        ),
        FailureKind::Problem(AcmeProblem::Connection) => (
            format!("the CA could not connect to the edge through {name}"),
            format!(
                "Point {name} at the edge (see `points-to-edge`) and open ports 80 and 443 to it from the internet (firewall, security group, load balancer).{retry} {again}"
            ),
        ),
        FailureKind::Problem(AcmeProblem::Unauthorized | AcmeProblem::IncorrectResponse) => (
            format!(
                "the CA reached a server that did not answer its challenge: {name} points somewhere else, or a proxy or CDN answers in front of the edge"
            ),
            format!(
                "Point {name} straight at the edge (see `points-to-edge`); if a proxy or CDN sits in front (for example Cloudflare's orange cloud), set it to DNS only.{retry} {again}"
            ),
        ),
        FailureKind::Problem(AcmeProblem::Tls) => (
            "the CA's TLS connection to the edge failed".to_owned(),
            format!(
                "Make port 443 of {name} reach the edge itself, not a proxy that ends TLS.{retry} {again}"
            ),
        ),
        FailureKind::Problem(AcmeProblem::RejectedIdentifier) => (
            format!("the CA will not issue for {name}: its policy forbids this name"),
            "Use another name for links: this CA refuses this one (for example a name on its blocklist).".to_owned(),
        ),
        FailureKind::Problem(AcmeProblem::RateLimited) => (
            "the CA's rate limit for this name or account was reached".to_owned(),
            format!("Nothing to change on the domain: wait.{retry}"),
        ),
        FailureKind::RateLimited(RateLimitScope::Name) => (
            format!(
                "the CA's rate limit for {name} was reached: orders for {name} are paused, other names keep getting certificates"
            ),
            format!(
                "Nothing to change on the domain: wait, the CA allows {name} again at the time it named.{retry} If earlier attempts failed validation, fix what the checks above name first. If the CA's words link a page to unpause the name, the edge's operator can unpause it there."
            ),
        ),
        FailureKind::RateLimited(RateLimitScope::Account) => (
            "the CA's rate limit for the edge's whole ACME account was reached: all certificate issuance is paused, not only this name's".to_owned(),
            format!("Nothing to change on the domain: wait.{retry}"),
        ),
        FailureKind::Problem(AcmeProblem::Other(_)) => (
            "the CA could not issue the certificate".to_owned(),
            format!(
                "If the CA's words name something in your DNS, fix it; otherwise tell the edge's operator.{retry} After a fix, the edge's operator can retry at once (`clickedge domain add {name}`)."
            ),
        ),
        FailureKind::Order => (
            "the edge could not reach the CA or complete the order with it".to_owned(),
            format!(
                "Nothing to change on the domain: the edge's operator should check that the edge reaches its CA.{retry}"
            ),
        ),
        FailureKind::HeldBack { .. }
        | FailureKind::Refused
        | FailureKind::Local
        | FailureKind::Unknown => (
            "issuing the certificate failed".to_owned(),
            format!("Tell the edge's operator.{retry}"),
        ),
    };
    (format!("{plain}{said}"), fix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuer::IssueError;
    use crate::onboarding::HELD_BACK;

    /// The failure recorded when the CA refuses with `urn:ietf:params:acme:error:<problem>`.
    fn refused(problem: &str, detail: &str) -> IssueFailure {
        IssueError::Refused {
            domain: name(),
            problem_type: Some(format!("urn:ietf:params:acme:error:{problem}")),
            detail: detail.into(),
        }
        .failure()
    }

    fn status(status: &'static str, last_error: Option<IssueFailure>) -> CertStatus {
        CertStatus {
            status,
            issuer: Some("acme".into()),
            not_before: None,
            not_after: Some("2027-01-01T00:00:00Z".into()),
            next_renewal: None,
            failures: u32::from(last_error.is_some()),
            retry_at: last_error.as_ref().map(|_| "2026-11-25T10:00:00Z".into()),
            last_error,
        }
    }

    fn check_now(cert: &CertStatus) -> Check {
        check(&name(), cert, false, None)
    }

    fn name() -> Domain {
        Domain::parse("links.example.com").unwrap()
    }

    #[test]
    fn states_map_to_statuses() {
        use crate::onboarding::CheckStatus::*;
        assert_eq!(check_now(&status("valid", None)).status, Pass);
        assert!(
            check_now(&status("valid", None))
                .message
                .contains("2027-01-01")
        );
        assert_eq!(check_now(&status("none", None)).status, Warn);
        assert_eq!(check_now(&status("pending", None)).status, Warn);
        let waiting = check(&name(), &status("none", None), true, None);
        assert!(
            waiting
                .message
                .contains("after the failing checks are fixed")
        );
        let failed = check_now(&status(
            "failed",
            Some(refused("unauthorized", "wrong answer")),
        ));
        assert_eq!(failed.status, Fail);
        assert!(!failed.blocking);
        assert!(
            failed
                .message
                .starts_with("the CA reached a server that did not answer"),
            "{}",
            failed.message
        );
        assert!(failed.message.contains("wrong answer"));
        let fix = failed.fix.unwrap();
        assert!(fix.contains("DNS only"), "{fix}");
        assert!(fix.contains("2026-11-25T10:00:00Z"), "{fix}");
        // A name the edge's issuer never vouches for: not "none yet", a failure for the
        // operator (a valid certificate issued before still stands).
        let why = "the built-in CA vouches only for names under tls.local_ca_names (example)";
        let never = check(&name(), &status("none", None), false, Some(why));
        assert_eq!((never.status, never.blocking), (Fail, false));
        assert!(never.message.ends_with(why), "{}", never.message);
        assert!(never.waits_on_the_operator(), "{never:?}");
        assert_eq!(
            check(&name(), &status("valid", None), false, Some(why)).status,
            Pass
        );
    }

    #[test]
    fn problem_types_are_translated() {
        let e = |t: &str| refused(t, "detail");
        assert!(explain(&name(), &e("caa"), None).0.contains("CAA record"));
        assert!(
            explain(&name(), &e("rejectedIdentifier"), None)
                .0
                .contains("policy forbids")
        );
        // A rate limit is nothing the domain's owner can change: the status page says so.
        assert!(
            explain(&name(), &e("rateLimited"), None)
                .1
                .starts_with("Nothing to change on the domain")
        );
        assert!(
            explain(&name(), &e("connection"), None)
                .1
                .contains("ports 80 and 443")
        );
        assert!(checks_cover(&e("dns").kind));
        assert!(!checks_cover(&e("rejectedIdentifier").kind));
        let held_back = |detail: String| IssueFailure {
            kind: FailureKind::HeldBack {
                check: "caa".into(),
            },
            detail,
        };
        assert!(checks_cover(
            &held_back(format!("{HELD_BACK} `caa` check fails: x")).kind
        ));
        let held = check_now(&status(
            "failed",
            Some(held_back(format!(
                "{HELD_BACK} `caa` check fails: CAA at x"
            ))),
        ));
        assert_eq!(held.status, crate::onboarding::CheckStatus::Warn);
        assert_eq!(held.message, "not ordered yet: the `caa` check fails");
    }

    /// A rate limit says whose orders it pauses: this name's only, or every name's.
    #[test]
    fn a_rate_limit_says_whether_it_pauses_this_name_or_all_issuance() {
        let limited = |limit, detail: &str| {
            IssueError::RateLimited {
                domain: name(),
                limit,
                until: Some(crate::clock::from_unix_secs(1_800_000_000)),
                problem_type: Some("urn:ietf:params:acme:error:rateLimited".into()),
                detail: detail.into(),
            }
            .failure()
        };
        let one = limited(
            crate::acme::RateLimit::ExactSet,
            "too many certificates (5) already issued for this exact set of identifiers",
        );
        let check = check_now(&status("failed", Some(one)));
        assert!(
            check
                .message
                .contains("orders for links.example.com are paused, other names keep"),
            "{}",
            check.message
        );
        assert!(
            check
                .message
                .contains("New Certificates per Exact Set of Identifiers"),
            "{}",
            check.message
        );
        assert!(
            check.message.contains("2027-01-15T08:00:00Z"),
            "{}",
            check.message
        );
        let all = limited(crate::acme::RateLimit::NewOrders, "too many new orders");
        let check = check_now(&status("failed", Some(all)));
        assert!(
            check.message.contains("all certificate issuance is paused"),
            "{}",
            check.message
        );
        assert!(
            check.message.contains("New Orders per Account"),
            "{}",
            check.message
        );
    }

    #[test]
    fn an_order_that_could_not_reach_the_ca_says_so_and_not_what_the_ca_said() {
        let failure = IssueFailure {
            kind: FailureKind::Order,
            detail: "could not reach the CA or understand its answer: connection refused".into(),
        };
        let (message, _) = explain(&name(), &failure, None);
        assert!(message.contains("could not reach the CA"), "{message}");
        assert!(!message.contains("the CA said"), "{message}");
        let (refusal, _) = explain(&name(), &refused("caa", "CAA forbids"), None);
        assert!(refusal.contains("(the CA said: "), "{refusal}");
    }

    #[test]
    fn the_customer_reads_the_cas_words_but_not_what_the_edge_met() {
        let edge_side = IssueFailure {
            kind: FailureKind::Order,
            detail:
                "claiming links.example.com: database error: connection to 10.0.0.5:5432 refused"
                    .into(),
        };
        let operator = check_now(&status("failed", Some(edge_side.clone())));
        assert!(
            operator.message.contains("10.0.0.5"),
            "{}",
            operator.message
        );
        let customer = for_customer(operator.clone(), &edge_side);
        assert!(
            !customer.message.contains("10.0.0.5"),
            "{}",
            customer.message
        );
        assert!(
            customer
                .message
                .ends_with("(the edge's operator has the details)"),
            "{}",
            customer.message
        );
        assert_eq!(
            (customer.status, customer.fix),
            (operator.status, operator.fix)
        );
        // A detail over several lines (a database's DETAIL and HINT) is escaped in the message,
        // and still left out.
        let multiline = IssueFailure {
            kind: FailureKind::Order,
            detail: "claiming links.example.com: db error: ERROR: deadlock\nDETAIL: process 7 on 10.0.0.5".into(),
        };
        let customer = for_customer(
            check_now(&status("failed", Some(multiline.clone()))),
            &multiline,
        );
        assert!(
            !customer.message.contains("10.0.0.5")
                && customer
                    .message
                    .ends_with("(the edge's operator has the details)"),
            "{}",
            customer.message
        );
        // A renewal that failed the same way, the certificate still valid.
        let renewing = check_now(&status("valid", Some(edge_side.clone())));
        let customer = for_customer(renewing, &edge_side);
        assert!(
            !customer.message.contains("10.0.0.5"),
            "{}",
            customer.message
        );
        // The CA's own words are the customer's to read.
        let ca = refused("caa", "CAA record for links.example.com prevents issuance");
        let shown = check_now(&status("failed", Some(ca.clone())));
        assert_eq!(for_customer(shown.clone(), &ca), shown);
        // But not a link they carry: Let's Encrypt's unpause page holds a token for the edge's
        // ACME account in its address.
        let paused = IssueFailure {
            kind: FailureKind::RateLimited(RateLimitScope::Name),
            detail: "Your account is temporarily prevented from requesting certificates for \
                     links.example.com and possibly others. Please visit: \
                     https://portal.letsencrypt.org/sfe/v1/unpause?jwt=x.y.z"
                .into(),
        };
        let operator = check_now(&status("failed", Some(paused.clone())));
        assert!(
            operator.message.contains("jwt=x.y.z"),
            "{}",
            operator.message
        );
        // A paused name is nothing the domain's owner can change.
        assert!(operator.waits_on_the_operator(), "{:?}", operator.fix);
        let customer = for_customer(operator, &paused);
        assert!(!customer.message.contains("jwt"), "{}", customer.message);
        assert!(
            customer
                .message
                .contains("Please visit: (a link the edge's operator has)"),
            "{}",
            customer.message
        );
    }
}
