//! What the handler reads from a request besides its path: the host it names, a header as
//! click text within bounds, its HTTP version.

use http::Request;
use http::header;

use crate::clicks::bounded_text;

/// Request header `name` as click text within `max` bytes (see [`bounded_text`]), and whether it
/// was cut; `None` when the request has no such header.
pub(super) fn header_text<B>(
    req: &Request<B>,
    name: header::HeaderName,
    max: usize,
) -> (Option<String>, bool) {
    match req.headers().get(name) {
        Some(value) => {
            let (text, cut) = bounded_text(value.as_bytes(), max);
            (Some(text), cut)
        }
        None => (None, false),
    }
}

/// The host a request names: `:authority` (h2, or an absolute request target) or `Host`,
/// without the port; none when it names none. A request that names one ambiguously (two `Host`
/// headers, one that is not ASCII text, or over h2 one that differs from `:authority`) names
/// `""`, which matches no name: it is answered as misdirected, never as the connection's own
/// name. (An HTTP/1.1 absolute request target wins over `Host`, which is then ignored, as RFC
/// 9112 §3.2.2 says.)
pub(super) fn request_host<B>(req: &Request<B>) -> Option<&str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Some("");
    }
    let host = match host.map(|h| h.to_str()) {
        Some(Ok(h)) => Some(h),
        Some(Err(_)) => return Some(""),
        None => None,
    };
    let raw = match (req.uri().authority(), host) {
        (Some(a), Some(h))
            if req.version() == http::Version::HTTP_2
                && !same_name(
                    strip_port(h),
                    a.host().strip_suffix('.').unwrap_or(a.host()),
                ) =>
        {
            return Some("");
        }
        (Some(a), _) => a.host(),
        (None, Some(h)) => h,
        (None, None) => return None,
    };
    Some(strip_port(raw))
}

pub(super) fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Case-insensitive comparison ignoring one trailing dot on `host`.
pub(super) fn same_name(host: &str, name: &str) -> bool {
    host.strip_suffix('.')
        .unwrap_or(host)
        .eq_ignore_ascii_case(name)
}

pub(super) fn http_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(version: http::Version, uri: &str, hosts: &[&[u8]]) -> Option<String> {
        let mut req = Request::builder().version(version).uri(uri);
        for h in hosts {
            req = req.header(header::HOST, http::HeaderValue::from_bytes(h).unwrap());
        }
        request_host(&req.body(()).unwrap()).map(str::to_owned)
    }

    #[test]
    fn a_host_named_ambiguously_matches_no_name() {
        const HTTP_11: http::Version = http::Version::HTTP_11;
        const HTTP_2: http::Version = http::Version::HTTP_2;
        let name = |v, uri, hosts: &[&[u8]]| host_of(v, uri, hosts);
        assert_eq!(
            name(HTTP_11, "/c/x", &[b"a.example.com:443"]).as_deref(),
            Some("a.example.com")
        );
        assert_eq!(name(HTTP_11, "/c/x", &[]), None);
        assert_eq!(
            name(HTTP_11, "/c/x", &[b"a.example.com", b"b.example.com"]).as_deref(),
            Some(""),
            "two Host headers"
        );
        assert_eq!(
            name(HTTP_11, "/c/x", &[b"b.example.com\x80"]).as_deref(),
            Some(""),
            "not ASCII text"
        );
        assert_eq!(
            name(HTTP_2, "https://a.example.com/c/x", &[b"b.example.com"]).as_deref(),
            Some(""),
            "h2: host differs from :authority"
        );
        assert_eq!(
            name(HTTP_2, "https://a.example.com/c/x", &[b"A.example.com:443"]).as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            name(HTTP_2, "https://a.example.com/c/x", &[b"a.example.com."]).as_deref(),
            Some("a.example.com"),
            "a trailing dot is the same name"
        );
        assert_eq!(
            name(HTTP_11, "https://a.example.com/c/x", &[b"b.example.com"]).as_deref(),
            Some("a.example.com"),
            "an HTTP/1.1 absolute target wins over Host"
        );
    }
}
