//! TLS fingerprint signals: what the connection's JA4 ([`crate::tls::ja4`]) says about the
//! software behind a click, whatever its `User-Agent` claims.
//!
//! Two reasons, each counting against a click and never deciding alone (a person behind a
//! TLS-inspecting corporate proxy reaches the edge with the proxy's TLS stack and their own
//! browser's headers):
//! - `tls:<library>`: the cipher and extension hashes of an HTTP library or tool in
//!   [`LIBRARIES`], whatever the ALPN and SNI of the hello;
//! - `tls:not-browser`: a browser user agent on a hello no current browser sends: no TLS 1.3
//!   offered, or no `h2` first in ALPN (Chrome, Edge, Firefox and Safari offer both).
//!
//! A lookup is a comparison against a short table; nothing allocates.

use crate::tls::Ja4;

/// Known non-browser clients by the hash parts of their JA4 (`_<ciphers>_<extensions>`), each
/// with its reason code. Measured from the ClientHellos these clients sent to the edge on
/// Debian 12 (the byte strings are the first vectors of `src/tls/ja4/vectors.txt`); a new
/// library version with other defaults needs an entry of its own.
pub const LIBRARIES: &[(&str, &str)] = &[
    // curl 7.88 over OpenSSL 3.0, with or without HTTP/2 (`t13d3112h2`, `t13d3112h1`).
    ("_e8f1e7e78f70_b26ce05bbdd6", "tls:curl"),
    // Python 3.11 http.client and urllib (`t13d1813h1`).
    ("_85036bcba153_d339722ba4af", "tls:python"),
    // python-requests 2 over urllib3 2 (`t13i1811h1` to an address, `t13d1812h1` to a name).
    ("_85036bcba153_b26ce05bbdd6", "tls:python"),
    // GNU Wget 1.21 (`t13i291200`).
    ("_723694b0fccc_899037bd0b8c", "tls:wget"),
    // Node.js 20 `https` (`t13d591000`).
    ("_a33745022dd6_1f22a2ca17c4", "tls:node"),
];

/// The reason the fingerprint `fp` counts against a click with user agent `ua`, if any.
pub fn judge(fp: &Ja4, ua: Option<&[u8]>) -> Option<&'static str> {
    let hashes = &fp.as_str()[10..];
    if let Some((_, reason)) = LIBRARIES.iter().find(|(h, _)| *h == hashes) {
        return Some(reason);
    }
    let browser_hello = fp.version() == "13" && fp.alpn() == "h2";
    (!browser_hello && ua.is_some_and(browser_ua)).then_some("tls:not-browser")
}

/// A user agent of a current browser: `Mozilla/5.0` and an engine's token.
fn browser_ua(ua: &[u8]) -> bool {
    let has = |token: &[u8]| {
        ua.windows(token.len())
            .any(|w| w.eq_ignore_ascii_case(token))
    };
    has(b"mozilla/5.0") && (has(b"chrome/") || has(b"firefox/") || has(b"safari/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_UA: &[u8] = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 \
                               (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

    fn fp(s: &str) -> Ja4 {
        Ja4::parse(s).unwrap()
    }

    #[test]
    fn measured_libraries_are_named_whatever_their_alpn() {
        for (s, reason) in [
            ("t13d3112h2_e8f1e7e78f70_b26ce05bbdd6", "tls:curl"),
            ("t13d3112h1_e8f1e7e78f70_b26ce05bbdd6", "tls:curl"),
            ("t13d1813h1_85036bcba153_d339722ba4af", "tls:python"),
            ("t13i1811h1_85036bcba153_b26ce05bbdd6", "tls:python"),
            ("t13i291200_723694b0fccc_899037bd0b8c", "tls:wget"),
            ("t13d591000_a33745022dd6_1f22a2ca17c4", "tls:node"),
        ] {
            assert_eq!(judge(&fp(s), Some(CHROME_UA)), Some(reason), "{s}");
            assert_eq!(judge(&fp(s), None), Some(reason), "{s}");
        }
    }

    #[test]
    fn a_browser_hello_is_no_reason_and_a_browser_ua_on_another_hello_is() {
        // FoxIO's published Chrome fingerprint.
        let chrome = fp("t13d1516h2_8daaf6152771_e5627efa2ab1");
        assert_eq!(judge(&chrome, Some(CHROME_UA)), None);
        for other in [
            "t12d1516h2_8daaf6152771_e5627efa2ab1",
            "t13d151600_8daaf6152771_e5627efa2ab1",
            "t13d1516h1_8daaf6152771_e5627efa2ab1",
        ] {
            assert_eq!(
                judge(&fp(other), Some(CHROME_UA)),
                Some("tls:not-browser"),
                "{other}"
            );
            // Without a browser's user agent there is nothing to contradict.
            assert_eq!(judge(&fp(other), Some(b"MailScanner/2.0")), None);
            assert_eq!(judge(&fp(other), None), None);
        }
    }
}
