//! Sealed links: what a link carries ([`Link`]), the token codec ([`token`]) and the key ring
//! ([`KeyRing`]).
//!
//! Pure: no I/O. The edge opens a token with nothing but the key ring and the domain the request
//! arrived on, so a redirect needs no database lookup.

pub mod context;
pub mod keyring;
pub mod share;
pub mod token;

pub use context::{ContextError, MessageContext, Role};
pub use keyring::{KeyId, KeyRing, LinkKey, SharedKeyRing};
pub use token::{TokenError, open, open_pixel, seal, seal_pixel_with, seal_with};

/// Longest destination URL accepted when minting, in bytes.
pub const MAX_URL_LEN: usize = 4096;
/// Most metadata pairs per link.
pub const MAX_META_PAIRS: usize = 32;
/// Longest metadata key, in bytes.
pub const MAX_META_KEY_LEN: usize = 64;
/// Longest metadata value, in bytes.
pub const MAX_META_VALUE_LEN: usize = 512;

/// What a sealed token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Destination, an absolute http(s) URL with a host.
    pub url: String,
    /// Metadata the sender attached (campaign, recipient id, …), in the order given.
    pub meta: Vec<(String, String)>,
    /// When the link was minted, Unix seconds.
    pub minted_at: u64,
    /// The message the link belongs to, if the sender said.
    pub context: Option<MessageContext>,
}

/// Why a link cannot be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The destination is not an absolute http(s) URL with a host.
    #[error("url {0:?} is not an absolute http:// or https:// URL with a host")]
    BadUrl(String),
    /// The destination has whitespace where a URL cannot (a host copied with a space in it).
    #[error("url {0:?} contains whitespace where a URL cannot: remove it")]
    Whitespace(String),
    /// A user name or password before the host: shown masked, the host after it.
    #[error(
        "url {0:?} has a user name or password before its host: a link does not carry \
         credentials (every click line would show them, and browsers warn before following \
         them); remove the part before the @"
    )]
    Credentials(String),
    /// The destination does not parse as a URL at all (a space in the host, a bad port, …).
    #[error("url {url:?} does not parse: {reason}")]
    Unparsable {
        /// The URL given.
        url: String,
        /// What the URL parser found wrong.
        reason: url::ParseError,
    },
    /// The destination is longer than [`MAX_URL_LEN`].
    #[error("url is {0} bytes; at most 4096 are accepted")]
    UrlTooLong(usize),
    /// Too many metadata pairs.
    #[error("{0} metadata pairs; at most 32 are accepted")]
    TooManyPairs(usize),
    /// A metadata key is empty.
    #[error("a metadata key is empty: give each pair as KEY=VALUE")]
    EmptyMetaKey,
    /// A metadata key is longer than [`MAX_META_KEY_LEN`].
    #[error("metadata key {key:?} is {len} bytes; keys are at most 64")]
    MetaKeyTooLong {
        /// The key.
        key: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A metadata value is longer than [`MAX_META_VALUE_LEN`].
    #[error("metadata {key:?}: its value is {len} bytes; values are at most 512")]
    MetaValueTooLong {
        /// The key of the value.
        key: String,
        /// The value's length in bytes.
        len: usize,
    },
    /// The message context is refused.
    #[error("message context")]
    Context(#[source] ContextError),
    /// The same metadata key twice: one of the values would be lost.
    #[error("metadata key {0:?} is given twice; give each key once")]
    DuplicateMeta(String),
}

impl Link {
    /// Checks a destination and metadata for minting and returns the link, with the URL in its
    /// normalised (serialised) form so it is valid as a `Location` header.
    pub fn new(url: &str, meta: Vec<(String, String)>, minted_at: u64) -> Result<Link, LinkError> {
        let url = destination(url)?;
        if meta.len() > MAX_META_PAIRS {
            return Err(LinkError::TooManyPairs(meta.len()));
        }
        for (key, value) in &meta {
            if key.is_empty() {
                return Err(LinkError::EmptyMetaKey);
            }
            if key.len() > MAX_META_KEY_LEN {
                let len = key.len();
                return Err(LinkError::MetaKeyTooLong {
                    key: key.chars().take(MAX_META_KEY_LEN).collect::<String>() + "…",
                    len,
                });
            }
            if value.len() > MAX_META_VALUE_LEN {
                let (key, len) = (key.clone(), value.len());
                return Err(LinkError::MetaValueTooLong { key, len });
            }
        }
        // At most 32 pairs: comparing each with the others is cheaper than a set.
        if let Some((_, (k, _))) = meta
            .iter()
            .enumerate()
            .find(|(i, (k, _))| meta[..*i].iter().any(|(seen, _)| seen == k))
        {
            return Err(LinkError::DuplicateMeta(k.clone()));
        }
        Ok(Link {
            url,
            meta,
            minted_at,
            context: None,
        })
    }

    /// The link carrying `context` (checked) in its token.
    pub fn with_context(mut self, context: MessageContext) -> Result<Link, LinkError> {
        context.validate().map_err(LinkError::Context)?;
        self.context = Some(context);
        Ok(self)
    }
}

/// Checks a destination as links and domain fallbacks take it: an absolute http(s) URL naming
/// its host, at most [`MAX_URL_LEN`] bytes; returns its normalised (serialised) form, valid as a
/// `Location` header.
pub fn destination(url: &str) -> Result<String, LinkError> {
    if url.len() > MAX_URL_LEN {
        return Err(LinkError::UrlTooLong(url.len()));
    }
    let parsed = url::Url::parse(url).map_err(|reason| match reason {
        // No scheme: not a URL of the kind wanted, rather than a broken one.
        url::ParseError::RelativeUrlWithoutBase => LinkError::BadUrl(url.into()),
        // The parser encodes a space in a path and drops tabs and line breaks, as browsers
        // do; whitespace it refuses (in the host) it names in words about domain names.
        url::ParseError::IdnaError | url::ParseError::InvalidDomainCharacter
            if url.contains(char::is_whitespace) =>
        {
            LinkError::Whitespace(url.into())
        }
        reason => LinkError::Unparsable {
            url: url.into(),
            reason,
        },
    })?;
    if !names_its_host(url)
        || !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none_or(str::is_empty)
    {
        return Err(LinkError::BadUrl(url.into()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let host = parsed.host_str().unwrap_or_default();
        return Err(LinkError::Credentials(format!(
            "{}://***@{host}/…",
            parsed.scheme()
        )));
    }
    let url = String::from(parsed);
    if url.len() > MAX_URL_LEN {
        return Err(LinkError::UrlTooLong(url.len()));
    }
    Ok(url)
}

/// True if `url` names its host where people read it: `scheme://host…`. The URL standard (and
/// the `url` crate) reads `https:///path`, `https:/path` and `https:path` as host `path`; a link
/// to a host nobody typed is refused like a URL without a host.
fn names_its_host(url: &str) -> bool {
    url.trim().split_once(':').is_some_and(|(_, rest)| {
        rest.strip_prefix("//").is_some_and(|authority| {
            !authority.is_empty() && !authority.starts_with(['/', '\\', '?', '#'])
        })
    })
}

/// True when `url` may be sent as a redirect: http or https, checked again on every open so that
/// even a validly sealed token never redirects anywhere else.
pub fn is_redirectable(url: &str) -> bool {
    let lower = |prefix: &str| {
        url.len() > prefix.len()
            && url.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    // A fold rather than `any`: no early exit, so the scan vectorises (it runs on every click).
    let control = url
        .bytes()
        .fold(false, |seen, b| seen | b.is_ascii_control());
    (lower("https://") || lower("http://")) && !control
}

/// The path of a link before its token, as the edge routes it (`http::router`).
pub const LINK_PATH: &str = "/c/";
/// The path of an open pixel before its token.
pub const PIXEL_PATH: &str = "/o/";

/// One of the edge's token routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeRoute {
    /// [`LINK_PATH`]: a link, which redirects and logs a click.
    Link,
    /// [`PIXEL_PATH`]: an open pixel.
    Pixel,
}

/// A URL on one of the edge's token routes, read apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeUrl {
    /// The host, as domains are registered (lowercase, A-labels, no final dot).
    pub host: String,
    /// Which route.
    pub route: EdgeRoute,
    /// The path after the route's prefix: the token, if the URL is the edge's.
    pub token: String,
}

/// `url` read apart when its path is one of the edge's token routes. On one of the edge's
/// domains such a URL is the edge's own link or pixel rather than a destination: a link to it
/// would redirect twice and log each click twice. `None` for any other path, and for a URL that
/// does not parse.
pub fn edge_route(url: &str) -> Option<EdgeUrl> {
    let parsed = url::Url::parse(url).ok()?;
    let path = parsed.path();
    let (route, token) = if let Some(token) = path.strip_prefix(LINK_PATH) {
        (EdgeRoute::Link, token)
    } else if let Some(token) = path.strip_prefix(PIXEL_PATH) {
        (EdgeRoute::Pixel, token)
    } else {
        return None;
    };
    let host = parsed
        .host_str()?
        .trim_end_matches('.')
        .to_ascii_lowercase();
    Some(EdgeUrl {
        host,
        route,
        token: token.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_and_https_with_host() {
        assert_eq!(
            Link::new("https://example.com/a?b=c", vec![], 1)
                .unwrap()
                .url,
            "https://example.com/a?b=c"
        );
        assert!(Link::new("HTTP://Example.com", vec![], 1).is_ok());
    }

    #[test]
    fn a_metadata_key_given_twice_is_refused_naming_it() {
        let meta = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        let err = Link::new(
            "https://example.com/",
            meta(&[("campaign", "a"), ("src", "x"), ("campaign", "b")]),
            1,
        )
        .unwrap_err();
        assert!(
            matches!(&err, LinkError::DuplicateMeta(k) if k == "campaign"),
            "{err}"
        );
        assert!(Link::new("https://example.com/", meta(&[("a", "1"), ("b", "1")]), 1).is_ok());
    }

    #[test]
    fn refuses_other_schemes_and_hostless_urls() {
        for bad in [
            "javascript:alert(1)",
            "ftp://example.com/",
            "data:text/html,hi",
            "/relative",
            "https://",
            "file:///etc/passwd",
            "not a url",
            "https:///path",
            "https:/path",
            "https:path",
            "https:\\\\example.com/",
            "https://?q",
        ] {
            assert!(Link::new(bad, vec![], 1).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_refused_url_or_metadata_pair_says_what_is_wrong_with_it() {
        let err = |url: &str, meta: Vec<(&str, String)>| {
            let meta = meta.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            Link::new(url, meta, 1).unwrap_err().to_string()
        };
        let ok = "https://example.com/";
        assert!(err("https://exa mple.com/", vec![]).contains("contains whitespace"));
        // A space in a path is encoded, as a browser does.
        let link = Link::new("https://example.com/a b", vec![], 1).unwrap();
        assert_eq!(link.url, "https://example.com/a%20b");
        assert!(err("https://example.com:99999/", vec![]).contains("invalid port number"));
        assert!(err("https://example.com:99999/a b", vec![]).contains("invalid port number"));
        // Credentials are refused, and not repeated in the refusal.
        for url in [
            "https://user:hunter2@example.com/",
            "https://good.example@evil.example/",
            "http://:hunter2@example.com/",
        ] {
            let e = err(url, vec![]);
            assert!(e.contains("user name or password"), "{e}");
            assert!(e.contains("://***@"), "{e}");
            assert!(!e.contains("hunter2") && !e.contains("good.example"), "{e}");
        }
        assert_eq!(
            err(ok, vec![("", "v".into())]),
            "a metadata key is empty: give each pair as KEY=VALUE"
        );
        let long_key = "k".repeat(65);
        assert!(
            err(ok, vec![(&long_key, "v".into())]).contains("is 65 bytes; keys are at most 64")
        );
        assert_eq!(
            err(ok, vec![("k", "v".repeat(513))]),
            "metadata \"k\": its value is 513 bytes; values are at most 512"
        );
    }

    #[test]
    fn redirectable_checks_scheme() {
        assert!(is_redirectable("https://example.com/"));
        assert!(is_redirectable("HTTP://example.com/"));
        assert!(!is_redirectable("javascript:alert(1)"));
        assert!(!is_redirectable("https://"));
        assert!(!is_redirectable("https://a\r\nSet-Cookie: x"));
    }

    #[test]
    fn edge_routes_are_links_and_pixels_whatever_the_host_is_written_as() {
        let route = |url: &str| edge_route(url);
        let edge = |route, token: &str| {
            Some(EdgeUrl {
                host: "links.example.com".to_owned(),
                route,
                token: token.to_owned(),
            })
        };
        assert_eq!(
            route("https://Links.Example.com./c/tok?x=1"),
            edge(EdgeRoute::Link, "tok")
        );
        assert_eq!(
            route("http://user@links.example.com:8443/o/px"),
            edge(EdgeRoute::Pixel, "px")
        );
        for other in [
            "https://links.example.com/",
            "https://links.example.com/s/tok",
            "https://links.example.com/c",
            "https://links.example.com/x/c/tok",
            "mailto:a@links.example.com",
            "not a url",
        ] {
            assert_eq!(route(other), None, "{other}");
        }
    }
}
