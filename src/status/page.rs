//! The status page's HTML, style and script: the domain's verdict, each check with its fix (the
//! text, the records as a table with copy buttons, and hints for DNS providers where they save a
//! ticket), and the certificate. While the domain is not ready, the script asks for the checks
//! again every [`POLL_SECONDS`] and replaces the page's content with the new results, without a
//! reload; without the script, "Check again" does the same.

use std::fmt::Write as _;

use super::view::StatusView;
use crate::html::escape as esc;
use crate::html::records;
use crate::onboarding::{Check, CheckId, CheckStatus};

/// Everything the page loads comes from its own origin; nothing may frame it.
pub(super) const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
                              connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                              base-uri 'none'";
/// Seconds between two automatic re-checks while the domain is not ready.
pub const POLL_SECONDS: u32 = 10;

/// The page's stylesheet: its own, then the records table's.
pub(super) const STYLE: &str = concat!(
    include_str!("page.css"),
    include_str!("../html/records.css")
);
/// The page's script: polling, then the copy buttons.
pub(super) const SCRIPT: &str = concat!(include_str!("page.js"), include_str!("../html/copy.js"));

/// The page of `v`, reached at `/s/<token>`; `notice` says what a "Check again" did.
pub(super) fn render(
    v: &StatusView,
    token: &str,
    notice: Option<&str>,
    test_link: Option<&str>,
) -> String {
    let mut b = String::new();
    let name = esc(&v.unicode);
    let failing = |operators: bool| {
        v.checks
            .iter()
            .filter(|c| c.status == CheckStatus::Fail && c.waits_on_the_operator() == operators)
            .count()
    };
    let (yours, operators) = (failing(false), failing(true));
    let (class, verdict) = if v.ready {
        ("pass", format!("{name} is ready"))
    } else if v.checks.is_empty() {
        ("warn", format!("{name} has not been checked yet"))
    } else if yours > 0 {
        (
            "fail",
            format!(
                "{name}: {yours} {} to fix at your DNS provider",
                if yours == 1 { "thing" } else { "things" }
            ),
        )
    } else if operators > 0 {
        (
            "fail",
            format!("{name}: waiting on the edge's operator; nothing for you to change"),
        )
    } else {
        ("warn", format!("{name}: almost there"))
    };
    let _ = write!(
        b,
        "<main data-ready=\"{ready}\" data-poll=\"{POLL_SECONDS}\">\
         <h1>Link domain status</h1><p class=\"verdict {class}\" id=\"verdict\">{verdict}</p>",
        ready = v.ready,
    );
    if let Some(n) = notice {
        let _ = write!(b, "<p class=\"notice\" role=\"status\">{}</p>", esc(n));
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/s/{token}\"><button type=\"submit\">Check again</button>\
         </form>",
        token = esc(token)
    );
    if let Some(at) = &v.checked_at {
        let _ = write!(b, "<p class=\"muted\">Last checked {}.", esc(at));
        if !v.ready {
            b.push_str(" This page checks again by itself while something is left to do.");
        }
        b.push_str("</p>");
    }
    certificate(&mut b, v);
    if let Some(link) = test_link {
        let _ = write!(
            b,
            "<p class=\"test\">Try it: <a id=\"test-link\" href=\"{l}\">a test link</a> goes \
             through {name} to a page saying it worked (your browser's Back button returns \
             here).</p>",
            l = esc(link)
        );
    }
    b.push_str("<ol class=\"checks\">");
    for c in &v.checks {
        let (class, icon, word) = match c.status {
            CheckStatus::Pass => ("pass", "✓", "OK"),
            CheckStatus::Warn => ("warn", "!", "Note"),
            CheckStatus::Fail => ("fail", "✗", "To fix"),
        };
        let _ = write!(
            b,
            "<li class=\"check {class}\" id=\"check-{id}\" data-status=\"{class}\">\
             <h2><span aria-hidden=\"true\">{icon}</span> {title} <small>{word}</small></h2>\
             <p>{message}</p>",
            id = c.id.as_str(),
            title = esc(c.id.title()),
            message = esc(&c.message),
        );
        if let Some(fix) = &c.fix {
            let _ = write!(
                b,
                "<div class=\"fix\"><h3>What to change</h3>{}<pre>{}</pre>{}</div>",
                records::table(&c.fix_records),
                esc(fix),
                hint(c),
            );
        }
        b.push_str("</li>");
    }
    b.push_str("</ol></main>");
    page(&name, &b, true)
}

/// The certificate: when it was issued, by whom, until when.
fn certificate(b: &mut String, v: &StatusView) {
    let c = &v.certificate;
    let row = |k: &str, val: &Option<String>| {
        val.as_ref()
            .map(|x| format!("<dt>{k}</dt><dd>{}</dd>", esc(x)))
            .unwrap_or_default()
    };
    let _ = write!(
        b,
        "<section class=\"cert\" id=\"certificate\" data-status=\"{status}\"><h2>Certificate</h2>\
         <dl><dt>Status</dt><dd>{status}</dd>{}{}{}</dl></section>",
        row("Valid from", &c.issued_at),
        row("Issuer", &c.issuer),
        row("Expires", &c.expires_at),
        status = esc(c.status),
    );
}

/// Advice for DNS providers where the usual mistake is theirs to explain; none for what the
/// edge's operator must fix.
fn hint(c: &Check) -> &'static str {
    if c.waits_on_the_operator() {
        return "";
    }
    match (c.id, c.status) {
        (CheckId::PointsToEdge | CheckId::Resolves, CheckStatus::Fail) => {
            "<p class=\"hint\">Cloudflare: set the record to <strong>DNS only</strong> (grey \
             cloud), not Proxied, at least until the certificate is issued; a proxied record \
             points elsewhere. Changes can take a few minutes to show (up to the old record's \
             TTL).</p>"
        }
        (CheckId::Caa, CheckStatus::Fail) => {
            "<p class=\"hint\">CAA records are often set at the zone's top (<code>@</code>); \
             many providers take the flags, tag and value in separate fields: \
             <code>0</code>, <code>issue</code>, and the CA's name without quotes (quotes \
             belong only in a record written on one line).</p>"
        }
        _ => "",
    }
}

/// Where the test link leads (`/s/works`): nothing of any domain or token, since a link's
/// destination is written into every click line of it. No script: nothing to check again.
pub(super) fn works() -> String {
    page(
        "It works",
        "<main><h1>It works</h1><p class=\"verdict pass\">This page was reached through a \
         link of your domain: its links redirect, over HTTPS with its own certificate.</p>\
         <p class=\"muted\">Your browser's Back button returns to the status page.</p></main>",
        false,
    )
}

/// The page's shell; with `script`, the one that checks again until the domain is ready.
fn page(title: &str, body: &str, script: bool) -> String {
    let script = if script {
        "<script src=\"/s/page.js\" defer></script>"
    } else {
        ""
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{title} · status</title><link rel=\"stylesheet\" href=\"/s/style.css\">\
         {script}</head><body>{body}</body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::view::Certificate;

    fn view(checks: Vec<Check>) -> StatusView {
        StatusView {
            name: "links.customer.com".into(),
            unicode: "links.customer.com".into(),
            ready: false,
            checked_at: None,
            checks,
            certificate: Certificate {
                status: "pending",
                issuer: None,
                issued_at: None,
                expires_at: None,
            },
        }
    }

    /// The status page checks again by itself; the page the test link leads to has nothing to
    /// check.
    #[test]
    fn only_the_status_page_runs_the_script() {
        assert!(render(&view(Vec::new()), "t", None, None).contains("/s/page.js"));
        assert!(!works().contains("<script"));
    }

    /// A failure the edge's operator must fix is not counted as the customer's, and gets no
    /// advice about DNS providers.
    #[test]
    fn the_verdict_counts_only_what_the_customer_can_fix() {
        let theirs = Check::fail(
            CheckId::PointsToEdge,
            "links.customer.com has A 198.51.100.7",
            "Add a CNAME".into(),
            true,
        );
        let operators = Check::fail(
            CheckId::HttpReachable,
            "http://links.customer.com/ through 203.0.113.9:80 did not reach the edge",
            "Edge operator: port 80 of 203.0.113.9 must reach the edge's HTTP listener".into(),
            true,
        );
        let page = render(&view(vec![theirs, operators.clone()]), "t", None, None);
        assert!(
            page.contains("links.customer.com: 1 thing to fix at your DNS provider"),
            "{page}"
        );
        assert_eq!(page.matches("Cloudflare").count(), 1, "{page}");
        let page = render(&view(vec![operators]), "t", None, None);
        assert!(
            page.contains("waiting on the edge's operator; nothing for you to change"),
            "{page}"
        );
        assert!(!page.contains("Cloudflare"), "{page}");
    }
}
