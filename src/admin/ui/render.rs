//! HTML for the onboarding page: the domain list with the add form, a page per domain with its
//! checks and fixes, sign-in and error pages, and the headers every answer carries. Every value
//! shown is escaped: DNS answers are customer-controlled.

use std::fmt::Write as _;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::super::error::ApiError;
use super::super::views::DomainView;
use crate::admin::Scope;
pub(super) use crate::html::escape as esc;
use crate::onboarding::{Check, CheckId, CheckStatus, Settings};

/// Everything the page loads comes from here; nothing may frame it.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The list of domains with the add form (not with a read-only `scope`); `error` and `typed`
/// redisplay a refused name.
pub(super) fn index(
    views: &[DomainView],
    page: &Page<'_>,
    s: &Settings,
    scope: Scope,
    status: StatusCode,
    error: Option<&str>,
    typed: &str,
) -> Response {
    let mut b = String::new();
    b.push_str("<section class=\"add\"><h2>Add a domain</h2>");
    if let Some(e) = error {
        let _ = write!(b, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    if scope == Scope::Read {
        b.push_str(
            "<p class=\"hint\">Signed in with a read-only token: domains can be looked at and \
             checked, not added or removed.</p>",
        );
    } else {
        add_form(&mut b, typed);
    }
    if let Some(target) = &s.cname_target {
        let _ = write!(
            b,
            "<p class=\"hint\">Customers point their link domain at the edge with a CNAME record: \
             <code>links.customer.com. 300 IN CNAME {}.</code></p>",
            esc(target.as_str())
        );
    } else if !s.addresses.is_empty() {
        let list: Vec<String> = s.addresses.iter().map(ToString::to_string).collect();
        let _ = write!(
            b,
            "<p class=\"hint\">Customers point their link domain at the edge's addresses: <code>{}</code></p>",
            esc(&list.join(", "))
        );
    }
    b.push_str("</section><section><h2>Domains</h2>");
    if !page.after.is_empty() {
        let _ = write!(
            b,
            "<p class=\"hint\">Domains after <code>{}</code> · <a href=\"/ui/\">from the first</a></p>",
            esc(page.after)
        );
    }
    if views.is_empty() && !page.after.is_empty() {
        b.push_str("<p class=\"empty\">No domains after this one.</p>");
    } else if views.is_empty() {
        b.push_str("<p class=\"empty\">No domains yet: add one above.</p>");
    } else {
        b.push_str(
            "<table class=\"domains\"><thead><tr><th>Domain</th><th>Checks</th>\
             <th>Certificate</th><th>Expires</th></tr></thead><tbody>",
        );
        for v in views {
            let (class, summary) = summary(&v.checks, v.checked_at.is_some());
            let cert = &v.certificate;
            let _ = write!(
                b,
                "<tr><td><a href=\"/ui/domains/{name}\">{name}</a>{also}</td>\
                 <td class=\"{class}\">{summary}</td>\
                 <td><span class=\"badge cert-{status}\">{status}</span></td>\
                 <td>{expires}</td></tr>",
                name = esc(v.name.as_str()),
                also = also_known(v),
                status = esc(cert.status),
                expires = esc(cert.not_after.as_deref().map_or("—", date)),
            );
        }
        b.push_str("</tbody></table>");
    }
    if let (true, Some(last)) = (page.more, views.last()) {
        let last = esc(last.name.as_str());
        let _ = write!(
            b,
            "<p class=\"more\"><a href=\"/ui/?after={last}\">Next: the domains after {last}</a></p>"
        );
    }
    b.push_str("</section>");
    html(status, "Domains", &b)
}

/// Which page of the domain list is shown: the one after `after` (`""`: the first), and
/// whether more may follow (it is full).
pub(super) struct Page<'a> {
    pub after: &'a str,
    pub more: bool,
}

/// What the list shows under a domain's name: its Unicode form when it has one, that the issuer
/// will never vouch for it when that is known, and where its links that do not open send
/// recipients.
fn also_known(v: &DomainView) -> String {
    let mut out = String::new();
    if v.unicode != v.name.as_str() {
        let _ = write!(
            out,
            "<span class=\"unicode\" lang=\"und\">{}</span>",
            esc(&v.unicode)
        );
    }
    if v.warning.is_some() {
        out.push_str("<span class=\"issuer-warning\">the issuer will not vouch for it</span>");
    }
    if let Some(url) = &v.fallback_url {
        let _ = write!(
            out,
            "<span class=\"fallback\">links that do not open → <code>{}</code></span>",
            esc(url)
        );
    }
    out
}

/// The form adding a domain, `typed` in its field.
fn add_form(b: &mut String, typed: &str) {
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/ui/domains\" class=\"busy-on-submit\">\
         <label for=\"name\">Link domain</label>\
         <input id=\"name\" name=\"name\" value=\"{}\" placeholder=\"links.customer.com\" \
         autocomplete=\"off\" spellcheck=\"false\" required>\
         <button type=\"submit\" data-busy=\"Checking…\">Add and check</button></form>",
        esc(typed)
    );
}

/// A one-line verdict over `checks`, and its CSS class.
fn summary(checks: &[Check], checked: bool) -> (&'static str, String) {
    if !checked {
        return ("muted", "not checked yet".into());
    }
    let count = |s| checks.iter().filter(|c| c.status == s).count();
    // A certificate that is simply not issued yet is what a ready domain looks like.
    let only_waiting_for_certificate = checks.iter().all(|c| {
        c.status == CheckStatus::Pass
            || (c.id == CheckId::Certificate && c.message.starts_with("none yet: it is issued"))
    });
    match (count(CheckStatus::Fail), count(CheckStatus::Warn)) {
        (0, 0) => ("pass", "✓ all checks pass".into()),
        (0, _) if only_waiting_for_certificate => ("pass", "✓ ready".into()),
        (0, 1) => ("warn", "! 1 warning".into()),
        (0, w) => ("warn", format!("! {w} warnings")),
        (1, _) => ("fail", "✗ 1 check fails".into()),
        (f, _) => ("fail", format!("✗ {f} checks fail")),
    }
}

/// The page of one domain; `can_share` offers "share with customer" (status pages on, full
/// scope), and `shared` shows an address just made for its customer.
pub(super) fn domain_body(
    v: &DomainView,
    can_share: bool,
    shared: Option<&super::super::share::SharedPage>,
) -> String {
    let name = esc(v.name.as_str());
    let mut b = String::new();
    let _ = write!(
        b,
        "<p class=\"back\"><a href=\"/ui/\">← All domains</a></p><h2 class=\"domain\">{name}</h2>"
    );
    if v.unicode != v.name.as_str() {
        let _ = write!(
            b,
            "<p class=\"unicode\">Shown to people as <strong>{}</strong></p>",
            esc(&v.unicode)
        );
    }
    let _ = write!(
        b,
        "<p class=\"fallback\">A link of this domain that does not open {}</p>",
        match &v.fallback_url {
            Some(url) => format!("redirects to <code>{}</code>.", esc(url)),
            None => "shows a page saying the link is not valid or has expired.".to_owned(),
        }
    );
    if let Some(warning) = &v.warning {
        let _ = write!(
            b,
            "<p class=\"issuer-warning\" role=\"note\"><strong>No certificate will be issued \
             for this name:</strong> {}</p>",
            esc(warning)
        );
    }
    let (class, line) = summary(&v.checks, v.checked_at.is_some());
    let advice = match class {
        "fail" => " — apply the fix under each failure, then check again.",
        "pass" => " — the certificate is issued at the first HTTPS request, if it is not already.",
        _ => "",
    };
    let _ = write!(
        b,
        "<div class=\"status-bar\"><p class=\"verdict {class}\">{line}{advice}</p>\
         <form method=\"post\" action=\"/ui/domains/{name}/check\" class=\"busy-on-submit\">\
         <button type=\"submit\" data-busy=\"Checking…\">Check again</button></form>{share}</div>",
        share = if can_share {
            format!(
                "<form method=\"post\" action=\"/ui/domains/{name}/share\">\
                 <button type=\"submit\">Share with customer</button></form>"
            )
        } else {
            String::new()
        }
    );
    if let Some(s) = shared {
        let _ = write!(
            b,
            "<div class=\"shared\" role=\"status\"><p>Send this address to the customer: their \
             status page, with what to fix, until {}.</p><span class=\"copyable\">\
             <input readonly id=\"share-url\" value=\"{url}\" aria-label=\"status page address\">\
             <button type=\"button\" class=\"copy\" data-copy=\"{url}\">Copy</button></span></div>",
            esc(&s.expires_at),
            url = esc(&s.url),
        );
    }
    if let Some(at) = &v.checked_at {
        let _ = write!(b, "<p class=\"muted\">Checked at {}.</p>", esc(at));
    }
    b.push_str("<ol class=\"checks\">");
    for c in &v.checks {
        let (class, icon) = match c.status {
            CheckStatus::Pass => ("pass", "✓"),
            CheckStatus::Warn => ("warn", "!"),
            CheckStatus::Fail => ("fail", "✗"),
        };
        let _ = write!(
            b,
            "<li class=\"check {class}\" id=\"check-{id}\" data-status=\"{class}\">\
             <span class=\"icon\" aria-hidden=\"true\">{icon}</span><div class=\"body\">\
             <h3>{title} <code>{id}</code>{blocking}</h3><p>{message}</p>",
            id = c.id.as_str(),
            title = esc(c.id.title()),
            blocking = if c.blocking && c.status == CheckStatus::Fail {
                " <span class=\"badge blocking\">holds back the certificate</span>"
            } else {
                ""
            },
            message = esc(&c.message),
        );
        if let Some(fix) = &c.fix {
            let _ = write!(
                b,
                "<div class=\"fix\"><h4>Fix</h4><pre>{}</pre>{}</div>",
                esc(fix),
                crate::html::records::table(&c.fix_records)
            );
        }
        b.push_str("</div></li>");
    }
    b.push_str("</ol>");
    let cert = &v.certificate;
    let row = |k: &str, val: Option<&str>| {
        val.map(|x| format!("<dt>{k}</dt><dd>{}</dd>", esc(x)))
            .unwrap_or_default()
    };
    let _ = write!(
        b,
        "<section class=\"cert\"><h2>Certificate</h2><dl>{}{}{}{}{}{}</dl></section>",
        row("Status", Some(cert.status)),
        row("Issuer", cert.issuer.as_deref()),
        row("Valid until", cert.not_after.as_deref()),
        row("Next renewal check", cert.next_renewal.as_deref()),
        row("Retry after", cert.retry_at.as_deref()),
        row(
            "Last error",
            cert.last_error.as_ref().map(|f| f.detail.as_str()),
        ),
    );
    b
}

pub(super) fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let mut b = String::from("<section class=\"login\"><h2>Sign in</h2>");
    if let Some(e) = error {
        let _ = write!(b, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    b.push_str(
        "<form method=\"post\" action=\"/ui/login\">\
         <label for=\"token\">Admin token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"hint\">The token is in <code>&lt;data_dir&gt;/admin-token</code> on the edge \
         (or <code>admin.token</code> in its config).</p></section>",
    );
    page(status, "Sign in", &b, false)
}

pub(super) fn error_page(e: ApiError) -> Response {
    let b = format!(
        "<p class=\"back\"><a href=\"/ui/\">← All domains</a></p><p class=\"error\" role=\"alert\">{}</p>",
        esc(&e.message)
    );
    let mut res = html(e.status, "Error", &b);
    e.add_retry_after(&mut res);
    res
}

pub(super) fn forbidden() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "<p class=\"error\">This form must be sent from the edge's own page.</p>",
        false,
    )
}

pub(super) fn html(status: StatusCode, title: &str, body: &str) -> Response {
    page(status, title, body, true)
}

pub(super) fn page(status: StatusCode, title: &str, body: &str, signed_in: bool) -> Response {
    let sign_out = if signed_in {
        "<form method=\"post\" action=\"/ui/logout\"><button class=\"link\">Sign out</button></form>"
    } else {
        ""
    };
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · clickedge</title><link rel=\"stylesheet\" href=\"/ui/style.css\">\
         <script src=\"/ui/app.js\" defer></script></head><body>\
         <header><h1><a href=\"/ui/\">clickedge</a></h1><span>link domains</span>{sign_out}\
         </header><main>{body}</main></body></html>",
        title = esc(title),
    );
    let mut res = (status, page).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    res
}

pub(super) fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

pub(super) fn secure_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

pub(super) fn see_other(location: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    secure_headers(res.headers_mut());
    res
}

pub(super) fn set_cookie(res: &mut Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The date part of an RFC 3339 time.
fn date(t: &str) -> &str {
    t.split_once('T').map_or(t, |(d, _)| d)
}
