//! Action links: a link whose role is `unsubscribe` or `confirm` does nothing on `GET` (mail
//! scanners fetch every link of a message, and a GET that unsubscribes lets them unsubscribe a
//! whole list). `GET` and `HEAD` answer `200` with a one-button confirm page that names the
//! link's domain and never its destination; the button POSTs back to the same URL, and that
//! `POST` answers `303` to the destination. An RFC 8058 one-click `POST`
//! (`List-Unsubscribe=One-Click`, which a mail provider sends when its reader presses the
//! provider's own unsubscribe button) is confirmed the same way but answered `200` by the edge
//! itself: RFC 8058 §3.1 forbids redirecting it (providers do not follow, or turn the POST into
//! a GET), so the unsubscribe reaches the sender as the click line.
//!
//! A POST's body is read within [`MAX_BODY_BYTES`] and [`BODY_TIMEOUT`], and only looked at for
//! the one-click field: the form's is empty, RFC 8058's comes form-encoded or as
//! `multipart/form-data`.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Body as HttpBody;

use super::{Body, page};
use crate::Domain;
use crate::links::{MessageContext, Role};

/// Largest POST body taken on an action link: a one-click body with a multipart boundary fits
/// many times over.
pub const MAX_BODY_BYTES: usize = 4096;
/// Longest wait for a POST body once its head has arrived.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Nothing loads from anywhere; the only style is inline; the form posts to the page's own
/// origin; it cannot be framed.
///
/// NOTE: Chromium and WebKit check `form-action` against every redirect that follows a form's
/// submission too (w3c/webappsec-csp#8, open since 2015), so `'self'` alone would stop the
/// `303` to the destination. The destination's scheme is allowed besides `'self'`: naming its
/// origin would put the destination in the answer to a GET, which scanners read.
fn csp(destination: &str) -> HeaderValue {
    if destination.starts_with("http:") {
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
             form-action 'self' http: https:; frame-ancestors 'none'",
        )
    } else {
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
             form-action 'self' https:; frame-ancestors 'none'",
        )
    }
}

/// The action role of a link with `context`, if it has one.
pub(super) fn role(context: Option<&MessageContext>) -> Option<Role> {
    context
        .and_then(|c| c.role)
        .filter(|r| matches!(r, Role::Unsubscribe | Role::Confirm))
}

/// The confirm page for a link of `domain` whose role is `role` (to `destination`, which the
/// page never shows). A HEAD gets its headers alone (`serve`'s `headers_only`).
pub(super) fn confirm_page(domain: &Domain, role: Role, destination: &str) -> Response<Body> {
    let (title, asks, button) = match role {
        Role::Unsubscribe => (
            "Unsubscribe",
            "Press the button to unsubscribe.",
            "Unsubscribe",
        ),
        _ => ("Confirm", "Press the button to confirm.", "Confirm"),
    };
    let main = format!(
        "<h1>{title}</h1><p>{asks}</p>\
         <form method=\"post\"><button type=\"submit\" id=\"confirm\">{button}</button></form>\
         <p class=\"muted\">This link belongs to <strong>{domain}</strong>. Nothing happens \
         until the button is pressed.</p>",
        domain = page::domain_name(domain),
    );
    page::respond(
        StatusCode::OK,
        csp(destination),
        page::document(title, &main),
    )
}

/// The confirmation's answer: `303 See Other` to the destination, never cached, no referrer.
pub(super) fn see_other(location: HeaderValue) -> Response<Body> {
    let mut res = Response::new(Body::default());
    *res.status_mut() = StatusCode::SEE_OTHER;
    let h = res.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// Whether `body` is an RFC 8058 one-click POST's: the field `List-Unsubscribe` with the value
/// `One-Click`, form-encoded (`List-Unsubscribe=One-Click`) or as `multipart/form-data` (the
/// field's name in its part's header, the value as its content). Letter case is not held to.
pub(super) fn is_one_click(body: &[u8]) -> bool {
    let body = body.to_ascii_lowercase();
    let has = |s: &str| memchr::memmem::find(&body, s.as_bytes()).is_some();
    has("list-unsubscribe") && has("one-click")
}

/// The answer to a one-click POST: `200`, no redirect (RFC 8058 §3.1), never cached.
pub(super) fn done(role: Role) -> Response<Body> {
    let said = match role {
        Role::Unsubscribe => "unsubscribed\n",
        _ => "confirmed\n",
    };
    plain(StatusCode::OK, Bytes::from_static(said.as_bytes()))
}

/// A `text/plain` answer, never cached.
fn plain(status: StatusCode, text: Bytes) -> Response<Body> {
    let mut res = Response::new(Body::new(text));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Why a POST's body was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum BodyError {
    /// Longer than [`MAX_BODY_BYTES`] (declared or sent).
    #[error("request body too large: at most {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// Not all there within [`BODY_TIMEOUT`].
    #[error("request body not received within {} s", BODY_TIMEOUT.as_secs())]
    TimedOut,
    /// The connection failed while sending it.
    #[error("request body broken off")]
    Broken,
}

impl BodyError {
    /// The answer to a request whose body was refused.
    pub(super) fn response(self) -> Response<Body> {
        let status = match self {
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TimedOut => StatusCode::REQUEST_TIMEOUT,
            BodyError::Broken => StatusCode::BAD_REQUEST,
        };
        plain(status, Bytes::from(format!("{self}\n")))
    }
}

/// Reads `req`'s body within the bounds: a declared length over the limit is refused before
/// reading anything.
pub(super) async fn take_body<B>(req: &mut Request<B>) -> Result<Bytes, BodyError>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(BodyError::TooLarge);
    }
    let read = Limited::new(req.body_mut(), MAX_BODY_BYTES).collect();
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Broken),
        Err(_) => Err(BodyError::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn text(res: Response<Body>) -> String {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_confirm_page_names_the_domain_posts_back_and_hides_the_destination() {
        let d = Domain::parse("bücher.example").unwrap();
        let dest = "https://shop.example.com/unsubscribe?u=42";
        for (role, button) in [
            (Role::Unsubscribe, "Unsubscribe"),
            (Role::Confirm, "Confirm"),
        ] {
            let res = confirm_page(&d, role, dest);
            assert_eq!(res.status(), StatusCode::OK);
            let h = res.headers();
            assert!(h.get(header::LOCATION).is_none());
            assert!(h.get(header::SET_COOKIE).is_none());
            assert_eq!(h[header::CACHE_CONTROL], "no-store");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
            let csp = h[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(csp.starts_with("default-src 'none';"), "{csp}");
            assert!(csp.contains("form-action 'self' https:;"), "{csp}");
            assert!(!csp.contains("shop.example.com"), "{csp}");
            let page = text(res).await;
            assert!(page.contains("<strong>bücher.example</strong>"), "{page}");
            assert!(page.contains("<form method=\"post\">"), "{page}");
            assert!(page.contains(&format!(">{button}</button>")), "{page}");
            assert!(page.contains("name=\"viewport\""), "{page}");
            assert!(!page.contains("shop.example.com"), "{page}");
            assert!(!page.contains("<script"), "{page}");
        }
        let plain = confirm_page(&d, Role::Confirm, "http://plain.example/");
        let csp = plain.headers()[header::CONTENT_SECURITY_POLICY].clone();
        assert!(
            csp.to_str()
                .unwrap()
                .contains("form-action 'self' http: https:;")
        );
    }

    #[test]
    fn only_unsubscribe_and_confirm_are_actions() {
        for r in Role::ALL {
            let c = MessageContext {
                message: "m".into(),
                role: Some(r),
                ..MessageContext::default()
            };
            let action = matches!(r, Role::Unsubscribe | Role::Confirm);
            assert_eq!(role(Some(&c)).is_some(), action, "{r:?}");
        }
        assert_eq!(role(None), None);
        assert_eq!(role(Some(&MessageContext::default())), None);
    }

    fn post(body: &'static str, length: Option<&str>) -> Request<http_body_util::Full<Bytes>> {
        let mut b = Request::post("/c/x");
        if let Some(l) = length {
            b = b.header(header::CONTENT_LENGTH, l);
        }
        b.body(http_body_util::Full::new(Bytes::from_static(
            body.as_bytes(),
        )))
        .unwrap()
    }

    #[tokio::test]
    async fn bodies_are_bounded() {
        assert_eq!(take_body(&mut post("", None)).await, Ok(Bytes::new()));
        let one_click = "List-Unsubscribe=One-Click";
        assert_eq!(
            take_body(&mut post(one_click, Some("26"))).await,
            Ok(Bytes::from_static(one_click.as_bytes()))
        );
        let big: &'static str = "x".repeat(MAX_BODY_BYTES + 1).leak();
        assert_eq!(
            take_body(&mut post(big, None)).await,
            Err(BodyError::TooLarge)
        );
        assert_eq!(
            take_body(&mut post("", Some("1000000"))).await,
            Err(BodyError::TooLarge)
        );
        let res = BodyError::TooLarge.response();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            text(res).await,
            format!("request body too large: at most {MAX_BODY_BYTES} bytes\n")
        );
    }

    #[test]
    fn a_one_click_body_is_told_from_the_buttons_in_either_encoding() {
        for body in [
            "List-Unsubscribe=One-Click",
            "list-unsubscribe=one-click",
            "--b1\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--b1--\r\n",
        ] {
            assert!(is_one_click(body.as_bytes()), "{body}");
        }
        // The confirm page's button posts an empty form.
        for body in ["", "List-Unsubscribe=", "One-Click", "confirm=1"] {
            assert!(!is_one_click(body.as_bytes()), "{body}");
        }
    }
}
