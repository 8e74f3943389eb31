//! What a recipient gets from a link that does not open (forged, cut, minted for another
//! domain, sealed by a removed key, of a domain no longer served): never anything taken from
//! the token. The domain's fallback URL when the operator chose one (a `302` to exactly that
//! fixed address), else a `404` saying the link is not valid or has expired, without saying
//! why: a small HTML page for browsers, a line of text for clients that do not ask for HTML.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::Body;
use super::page;
use crate::Domain;

/// Nothing loads from anywhere; the page's only style is inline; it cannot be framed.
const CSP: HeaderValue = HeaderValue::from_static(
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'",
);
const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// `302` to the operator's fallback `location` for the domain, never cached.
pub(super) fn fallback(location: HeaderValue) -> Response<Body> {
    let mut res = Response::new(Body::default());
    *res.status_mut() = StatusCode::FOUND;
    let h = res.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(header::CACHE_CONTROL, NO_STORE);
    res
}

/// `404` for a link that does not open on `domain` (none: the request named no domain the edge
/// serves), as HTML when `accept` asks for it, else as text.
pub(super) fn not_valid(domain: Option<&Domain>, accept: Option<&HeaderValue>) -> Response<Body> {
    let wants_html = accept
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.to_ascii_lowercase().contains("text/html"));
    if wants_html {
        return page::respond(StatusCode::NOT_FOUND, CSP, render(domain));
    }
    let mut res = Response::new(Body::new(Bytes::from_static(b"not found\n")));
    *res.status_mut() = StatusCode::NOT_FOUND;
    res.headers_mut().insert(header::CONTENT_TYPE, TEXT);
    res.headers_mut().insert(header::CACHE_CONTROL, NO_STORE);
    res
}

/// The page: what happened, on which domain (its Unicode form, escaped), what to do.
fn render(domain: Option<&Domain>) -> String {
    let on = match domain {
        Some(d) => format!(" on <strong>{}</strong>", page::domain_name(d)),
        None => String::new(),
    };
    page::document(
        "Link not valid",
        &format!(
            "<h1>This link is not valid</h1>\
             <p>The link you followed{on} is not valid or has expired.</p>\
             <p class=\"muted\">If it came in a message, ask the sender for a new one.</p>"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(res: Response<Body>) -> String {
        use http_body_util::BodyExt as _;
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn browsers_get_a_page_naming_the_domain_and_text_clients_a_line() {
        let d = Domain::parse("bücher.example").unwrap();
        let html = HeaderValue::from_static("text/html,application/xhtml+xml,*/*;q=0.8");
        let res = not_valid(Some(&d), Some(&html));
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
        assert!(
            res.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .starts_with("default-src 'none'")
        );
        assert!(res.headers().get(header::LOCATION).is_none());
        let page = body(res).await;
        assert!(page.contains("<strong>bücher.example</strong>"), "{page}");
        assert!(page.contains("not valid or has expired"), "{page}");

        for accept in [None, Some(HeaderValue::from_static("*/*"))] {
            let res = not_valid(Some(&d), accept.as_ref());
            assert_eq!(res.status(), StatusCode::NOT_FOUND);
            assert_eq!(res.headers()[header::CONTENT_TYPE], TEXT);
            assert_eq!(body(res).await, "not found\n");
        }
    }

    #[test]
    fn a_page_without_a_served_domain_names_none() {
        let page = render(None);
        assert!(
            page.contains("The link you followed is not valid"),
            "{page}"
        );
        assert!(!page.contains("<strong>"), "{page}");
    }
}
