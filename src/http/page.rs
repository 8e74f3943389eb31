//! The small pages a recipient may see on a link's domain (a link that does not open, an action
//! link's confirm page): one inline style readable from 320 px wide up, nothing loaded from
//! anywhere, and the headers every such page carries (its CSP, `nosniff`, `no-referrer`,
//! `no-store`).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::Body;
use crate::Domain;
use crate::html::escape;

/// Inline so that the CSP can forbid every other source; readable from 320 px wide up.
const STYLE: &str = "body{margin:0;font:17px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,\
sans-serif;color:#1d2330;background:#f6f7f9}main{max-width:32rem;margin:12vh auto;padding:0 20px}\
h1{font-size:22px;margin:0 0 12px}p{margin:0 0 12px;overflow-wrap:anywhere}\
.muted{color:#5d6675;font-size:15px}\
button{font:inherit;font-weight:600;color:#fff;background:#1f5fd1;border:0;border-radius:8px;\
padding:12px 24px;margin:8px 0 16px;min-height:48px;max-width:100%;cursor:pointer}\
button:focus-visible{outline:3px solid #9cc0ff;outline-offset:2px}";

/// A whole page: `title`, then `main` (trusted markup: whatever came from outside is escaped
/// by the caller).
pub(super) fn document(title: &str, main: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title}</title>\
         <style>{STYLE}</style></head><body><main>{main}</main></body></html>"
    )
}

/// `domain` as a recipient reads it: its Unicode form, escaped.
pub(super) fn domain_name(domain: &Domain) -> String {
    escape(&domain.unicode().unwrap_or_else(|| domain.to_string()))
}

/// The response carrying `page` with `status` under `csp`. A HEAD gets its headers alone, its
/// `content-length` included (`serve`'s `headers_only`).
pub(super) fn respond(status: StatusCode, csp: HeaderValue, page: String) -> Response<Body> {
    let mut res = Response::new(Body::new(Bytes::from(page)));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
