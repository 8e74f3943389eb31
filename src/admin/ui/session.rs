//! The page's session: an HttpOnly, SameSite=Strict cookie holding an expiry and an HMAC of it
//! keyed by the admin token (so the cookie is not the token, and changing the token ends every
//! session), and the check that a form was posted from the page itself (CSRF).

use std::time::{Duration, SystemTime};

use aws_lc_rs::hmac;
use axum::http::{HeaderMap, HeaderValue, header};

use crate::clock::unix_secs;

/// The session cookie's name.
const COOKIE: &str = "clickedge_ui";
/// How long a login lasts.
const SESSION: Duration = Duration::from_secs(12 * 3600);

/// A session value valid until `expires`: `<expires, Unix seconds>.<hex HMAC>`.
pub(super) fn session_value(token: &str, expires: SystemTime) -> String {
    let expires = unix_secs(expires);
    let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    let tag = hmac::sign(&key, format!("clickedge-ui {expires}").as_bytes());
    format!("{expires}.{}", hex(tag.as_ref()))
}

/// True if `value` is a session for `token` that has not expired at `now`.
pub(super) fn session_valid(token: &str, value: &str, now: SystemTime) -> bool {
    let now = unix_secs(now);
    let Some((expires, tag)) = value.split_once('.') else {
        return false;
    };
    let (Ok(expires), Some(tag)) = (expires.parse::<u64>(), unhex(tag)) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    // Constant-time comparison of the tag.
    expires > now && hmac::verify(&key, format!("clickedge-ui {expires}").as_bytes(), &tag).is_ok()
}

/// True if a request carries a session cookie for `token` valid at `now`.
pub(super) fn logged_in(token: &str, headers: &HeaderMap, now: SystemTime) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .any(|v| session_valid(token, v, now))
}

/// Constant-time comparison of a presented token with the admin token.
pub(super) fn token_matches(token: &str, presented: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(presented.trim().as_bytes(), token.as_bytes())
        .is_ok()
}

/// False for a request another site's page made (CSRF), as far as the browser says.
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
    let get = |h| headers.get(h).and_then(|v: &HeaderValue| v.to_str().ok());
    // Browsers that send Sec-Fetch-Site say it outright (and may send `Origin: null`).
    if let Some(site) = get("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    match (get("origin"), get("host")) {
        (Some(origin), Some(host)) => {
            origin == format!("http://{host}") || origin == format!("https://{host}")
        }
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// `Set-Cookie` value of a session for `token` starting at `now`.
pub(super) fn login_cookie(token: &str, now: SystemTime) -> String {
    format!(
        "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
        session_value(token, now + SESSION),
        SESSION.as_secs()
    )
}

/// `Set-Cookie` value that ends the session.
pub(super) fn logout_cookie() -> String {
    format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_unix_secs;

    #[test]
    fn sessions_are_bound_to_the_token_and_expire() {
        let at = from_unix_secs;
        let v = session_value("token-one-0123456789", at(1000));
        assert!(session_valid("token-one-0123456789", &v, at(999)));
        assert!(
            !session_valid("token-one-0123456789", &v, at(1000)),
            "expired"
        );
        assert!(
            !session_valid("token-two-0123456789", &v, at(999)),
            "other token"
        );
        let forged = v.replacen("1000", "9999", 1);
        assert!(
            !session_valid("token-one-0123456789", &forged, at(999)),
            "expiry is signed"
        );
        assert!(!session_valid("token-one-0123456789", "garbage", at(0)));
        assert!(!session_valid("token-one-0123456789", "5.zz", at(0)));
    }

    #[test]
    fn a_login_lasts_twelve_hours_by_the_clock_it_was_given() {
        let start = from_unix_secs(1_000_000);
        let cookie = login_cookie("token-one-0123456789", start);
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
        let token = "token-one-0123456789";
        assert!(logged_in(
            token,
            &h,
            start + SESSION - Duration::from_secs(1)
        ));
        assert!(!logged_in(token, &h, start + SESSION));
        assert!(cookie.contains("Max-Age=43200"), "{cookie}");
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let mut h = HeaderMap::new();
        assert!(
            same_origin(&h),
            "no browser hints: the cookie still has to be there"
        );
        h.insert("host", HeaderValue::from_static("127.0.0.1:9180"));
        h.insert("origin", HeaderValue::from_static("http://127.0.0.1:9180"));
        assert!(same_origin(&h));
        h.insert("origin", HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&h));
        h.remove("origin");
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        h.insert("origin", HeaderValue::from_static("null"));
        assert!(same_origin(&h));
    }
}
