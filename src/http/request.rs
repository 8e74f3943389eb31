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

/// The host a request names: `:authority` (h2) or `Host`, without the port.
pub(super) fn request_host<B>(req: &Request<B>) -> Option<&str> {
    let raw = match req.uri().authority() {
        Some(a) => a.host(),
        None => req.headers().get(header::HOST)?.to_str().ok()?,
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
