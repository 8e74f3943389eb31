//! `[limits]`: what one client, or all of them, may cost — request sizes, connection caps per
//! listener and per address, and the timeouts that make sure no connection lives forever.
//!
//! Plain values only; the listeners in [`crate::http::serve`] apply them.

use std::num::NonZeroUsize;
use std::time::Duration;

use serde::Deserialize;

/// `[limits]`: what one client, or all of them, may cost.
///
/// Each listener has its own connection cap, so a flood on one port (say HTTPS) leaves the others
/// (the HTTP port ACME validation needs, the admin API) answering. No connection lives forever:
/// an idle one is asked to close after `keepalive_timeout` and dropped `close_timeout` later if it
/// has not closed, a response nobody reads is dropped after `write_timeout`, and an h2 client
/// that stops answering PINGs is dropped after `h2_keepalive_timeout`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Time a client has to send a request's headers (slowloris guard; HTTP/1.1). Default `10s`.
    #[serde(with = "super::duration")]
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; larger gets 431. Default
    /// `16384`.
    #[serde(deserialize_with = "super::size::positive_usize")]
    pub max_header_bytes: NonZeroUsize,
    /// Longest request URI, in bytes; longer gets 414 before any token is opened. Default `8192`.
    #[serde(deserialize_with = "super::size::positive_usize")]
    pub max_uri_bytes: NonZeroUsize,
    /// Open client connections on the HTTPS listener; past it new connections wait in the
    /// kernel's backlog (accept backpressure). Default `10000`.
    ///
    /// NOTE: this used to count the HTTPS and HTTP listeners together; the HTTP listener now has
    /// its own cap, `http_max_connections`, so a flood on one cannot starve the other.
    pub max_connections: NonZeroUsize,
    /// Open client connections on the plain HTTP listener (ACME HTTP-01 validation, upgrades to
    /// HTTPS); past it new connections wait in the kernel's backlog. Default `1000`.
    pub http_max_connections: NonZeroUsize,
    /// Open connections per client address on each edge listener (HTTPS and HTTP counted
    /// apart); past it a new connection is closed at once. IPv6 addresses count by their /64,
    /// the prefix one site normally gets. `0` turns the limit off (needed behind a proxy that
    /// hides client addresses). Default `256`.
    ///
    /// Sized for an office behind one NAT address: a connection stays open for up to
    /// `keepalive_timeout` (a minute) after its click, and a browser holds one or two per link
    /// domain, so 256 lets well over a hundred people behind one address click within the same
    /// minute, while one address can hold at most 256 of the 10000 HTTPS places.
    pub max_connections_per_ip: usize,
    /// An idle keep-alive connection (HTTP/1.1 or h2: no request in flight) is asked to close
    /// after this long. Default `60s`.
    #[serde(with = "super::duration")]
    pub keepalive_timeout: Duration,
    /// How long a connection asked to close for being idle may take to do so (HTTP/1.1 writing
    /// its last response, h2 waiting for the answer to its GOAWAY's PING) before it is dropped.
    /// At shutdown `shutdown_grace` applies instead. Default `10s`.
    #[serde(with = "super::duration")]
    pub close_timeout: Duration,
    /// A connection whose writes make no progress for this long (a client that sends requests
    /// but does not read the responses) is dropped. Default `30s`.
    #[serde(with = "super::duration")]
    pub write_timeout: Duration,
    /// An h2 connection sends a keep-alive PING after this long without hearing from the client.
    /// Default `20s`.
    #[serde(with = "super::duration")]
    pub h2_keepalive_interval: Duration,
    /// An h2 connection whose keep-alive PING is not answered within this is dropped. Default
    /// `10s`.
    #[serde(with = "super::duration")]
    pub h2_keepalive_timeout: Duration,
    /// Concurrent streams per h2 connection. Default `100`.
    pub h2_max_concurrent_streams: u32,
    /// Largest admin API request body, in bytes; larger gets 413. Default `65536`.
    #[serde(deserialize_with = "super::size::positive_usize")]
    pub admin_max_body_bytes: NonZeroUsize,
    /// Open connections on the admin listener; past it a new connection is closed at once.
    /// Default `64`.
    pub admin_max_connections: NonZeroUsize,
    /// Time an admin API client has to send a request's headers; a half-sent head is closed
    /// after it. Its body then has this again, plus a second per 16 KiB of its `Content-Length`
    /// (of the largest body an admin route takes, 2 MiB or `admin_max_body_bytes`, when chunked),
    /// counted from the head as a total, not per read; a body not all read by then is answered
    /// `408` and its connection closed. Default `10s`.
    #[serde(with = "super::duration")]
    pub admin_header_read_timeout: Duration,
}

/// File descriptors the edge needs besides its client connections: listeners, the store, the
/// click log, the ACME and `ask` clients, DNS lookups, with room to spare.
const OPEN_FILES_RESERVE: u64 = 256;

impl Limits {
    /// File descriptors the edge may need with every listener at its cap: the three caps plus a
    /// reserve for the store, the click log and outgoing connections.
    pub fn open_files_needed(&self) -> u64 {
        let caps = [
            self.max_connections,
            self.http_max_connections,
            self.admin_max_connections,
        ];
        caps.iter().map(|cap| cap.get() as u64).sum::<u64>() + OPEN_FILES_RESERVE
    }

    /// What is wrong with these limits, if anything, naming the key and its value and saying
    /// how to fix it.
    pub(super) fn invalid(&self) -> Option<String> {
        // Zero is never "no timeout": hyper's header timer set to 0 fires at once, and an idle
        // connection is closed the shorter of keepalive_timeout and header_read_timeout after
        // its answer, so 0 in either would close every connection as soon as it has answered.
        let timeouts = [
            ("header_read_timeout", self.header_read_timeout, "10s"),
            ("keepalive_timeout", self.keepalive_timeout, "60s"),
            ("close_timeout", self.close_timeout, "10s"),
            ("write_timeout", self.write_timeout, "30s"),
            ("h2_keepalive_interval", self.h2_keepalive_interval, "20s"),
            ("h2_keepalive_timeout", self.h2_keepalive_timeout, "10s"),
            (
                "admin_header_read_timeout",
                self.admin_header_read_timeout,
                "10s",
            ),
        ];
        if let Some((key, value, example)) = timeouts.iter().find(|(_, d, _)| d.is_zero()) {
            return Some(format!(
                "limits.{key} = \"{}\" must be greater than zero (e.g. \"{example}\")",
                humantime::format_duration(*value)
            ));
        }
        let caps = [
            ("max_connections", self.max_connections),
            ("http_max_connections", self.http_max_connections),
            ("admin_max_connections", self.admin_max_connections),
        ];
        if let Some((key, value)) = caps.iter().find(|(_, cap)| cap.get() > MAX_CONNECTIONS) {
            return Some(format!(
                "limits.{key} = {value} is more connections than a process can hold open: \
                 expected at most {MAX_CONNECTIONS} (each is a file descriptor)"
            ));
        }
        if self.h2_max_concurrent_streams == 0 {
            return Some(
                "limits.h2_max_concurrent_streams = 0 would refuse every h2 request: expected a \
                 whole number above 0 (e.g. 100)"
                    .into(),
            );
        }
        self.uri_leaves_no_room().or_else(|| self.uri_too_short())
    }

    /// Refuses a `max_uri_bytes` under [`MIN_URI_BYTES`]: every status page address, and every
    /// link but those to the shortest URLs, would be answered 414.
    fn uri_too_short(&self) -> Option<String> {
        let uri = self.max_uri_bytes.get();
        (uri < MIN_URI_BYTES).then(|| {
            format!(
                "limits.max_uri_bytes = {uri} is shorter than the edge's own addresses (a status \
                 page's is about 100 bytes, a link's token alone about 70): expected at least \
                 {MIN_URI_BYTES} (default 8192)"
            )
        })
    }

    /// Refuses a `max_uri_bytes` that a request head of `max_header_bytes` cannot carry with
    /// a browser's headers: hyper counts the request line (and so the URI) in the head, so a
    /// link minted up to `max_uri_bytes` would otherwise be answered 431 on every click.
    fn uri_leaves_no_room(&self) -> Option<String> {
        let (uri, head) = (self.max_uri_bytes.get(), self.max_header_bytes.get());
        if uri.saturating_add(HEAD_ROOM) <= head {
            return None;
        }
        let lower = match head.checked_sub(HEAD_ROOM) {
            Some(at_most) if at_most > 0 => {
                format!("lower limits.max_uri_bytes to at most {at_most} or ")
            }
            _ => String::new(),
        };
        Some(format!(
            "limits.max_uri_bytes = {uri} leaves less than {HEAD_ROOM} bytes under \
             limits.max_header_bytes = {head} for the request line's rest and the headers: a \
             request head counts its URI, so clicks on the longest links would get 431; \
             {lower}raise limits.max_header_bytes to at least {}",
            uri.saturating_add(HEAD_ROOM)
        ))
    }
}

/// The shortest `max_uri_bytes` allowed: a status page address (`/s/` and a share token) is
/// about 100 bytes, a link's path about 70 plus its URL and metadata.
const MIN_URI_BYTES: usize = 256;

/// The most connections a listener's cap may allow: each is a file descriptor, and Linux's
/// `fs.nr_open` allows at most 1048576 per process by default (2^30 at most, ever).
const MAX_CONNECTIONS: usize = 1 << 30;

/// Bytes of a request head `max_header_bytes` keeps for what is not the URI: the method and
/// version, and a browser's headers on a link click (host, user agent, accept, client hints,
/// fetch metadata, a referer cut to its origin; no cookies on a link domain), which come to 1-2
/// KiB; 4 KiB leaves room for longer ones. The defaults (8 KiB URI, 16 KiB head) keep 8 KiB.
const HEAD_ROOM: usize = 4096;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: NonZeroUsize::new(16 * 1024).expect("non-zero literal"),
            max_uri_bytes: NonZeroUsize::new(8 * 1024).expect("non-zero literal"),
            max_connections: NonZeroUsize::new(10_000).expect("non-zero literal"),
            http_max_connections: NonZeroUsize::new(1_000).expect("non-zero literal"),
            max_connections_per_ip: 256,
            keepalive_timeout: Duration::from_secs(60),
            close_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            h2_keepalive_interval: Duration::from_secs(20),
            h2_keepalive_timeout: Duration::from_secs(10),
            h2_max_concurrent_streams: 100,
            admin_max_body_bytes: NonZeroUsize::new(64 * 1024).expect("non-zero literal"),
            admin_max_connections: NonZeroUsize::new(64).expect("non-zero literal"),
            admin_header_read_timeout: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn limits(text: &str) -> Result<Limits, String> {
        Config::parse(text, Path::new("edge.toml"))
            .map(|c| c.limits)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_bound_every_connection_and_cap_each_listener() {
        let l = limits("").unwrap();
        assert_eq!(l.max_connections.get(), 10_000);
        assert_eq!(l.http_max_connections.get(), 1_000);
        assert_eq!(l.admin_max_connections.get(), 64);
        assert_eq!(l.max_connections_per_ip, 256);
        assert_eq!(l.keepalive_timeout, Duration::from_secs(60));
        assert_eq!(l.close_timeout, Duration::from_secs(10));
        assert_eq!(l.write_timeout, Duration::from_secs(30));
        assert_eq!(l.h2_keepalive_interval, Duration::from_secs(20));
        assert_eq!(l.h2_keepalive_timeout, Duration::from_secs(10));
        assert_eq!(l.admin_header_read_timeout, Duration::from_secs(10));
        assert_eq!(
            l.open_files_needed(),
            10_000 + 1_000 + 64 + OPEN_FILES_RESERVE
        );
    }

    #[test]
    fn connection_keys_parse() {
        let l = limits(
            "[limits]\nmax_connections = 20\nhttp_max_connections = 5\nmax_connections_per_ip = 0\n\
             close_timeout = \"1s\"\nwrite_timeout = \"2s\"\nh2_keepalive_interval = \"3s\"\n\
             h2_keepalive_timeout = \"4s\"\nadmin_max_connections = 2\n\
             admin_header_read_timeout = \"500ms\"\n",
        )
        .unwrap();
        assert_eq!(l.max_connections.get(), 20);
        assert_eq!(l.http_max_connections.get(), 5);
        assert_eq!(l.max_connections_per_ip, 0);
        assert_eq!(l.close_timeout, Duration::from_secs(1));
        assert_eq!(l.write_timeout, Duration::from_secs(2));
        assert_eq!(l.h2_keepalive_interval, Duration::from_secs(3));
        assert_eq!(l.h2_keepalive_timeout, Duration::from_secs(4));
        assert_eq!(l.admin_max_connections.get(), 2);
        assert_eq!(l.admin_header_read_timeout, Duration::from_millis(500));
        assert_eq!(l.open_files_needed(), 27 + OPEN_FILES_RESERVE);
    }

    #[test]
    fn zero_timeouts_and_caps_are_refused_naming_the_key() {
        for key in [
            "header_read_timeout",
            "keepalive_timeout",
            "close_timeout",
            "write_timeout",
            "h2_keepalive_interval",
            "h2_keepalive_timeout",
            "admin_header_read_timeout",
        ] {
            let err = limits(&format!("[limits]\n{key} = \"0s\"\n")).unwrap_err();
            assert!(
                err.contains(&format!("limits.{key} = \"0s\" must be greater than zero")),
                "{err}"
            );
        }
        let err = limits("[limits]\nh2_max_concurrent_streams = 0\n").unwrap_err();
        assert!(
            err.contains("limits.h2_max_concurrent_streams = 0")
                && err.contains("expected a whole number above 0"),
            "{err}"
        );
        assert_eq!(
            limits("[limits]\nh2_max_concurrent_streams = 1\n")
                .unwrap()
                .h2_max_concurrent_streams,
            1
        );
        for key in ["http_max_connections", "admin_max_connections"] {
            let err = limits(&format!("[limits]\n{key} = 0\n")).unwrap_err();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn a_uri_limit_that_leaves_no_room_for_the_headers_is_refused_naming_both_keys() {
        // The defaults leave 8 KiB of a head for what is not the URI.
        let l = limits("").unwrap();
        assert_eq!(
            (l.max_uri_bytes.get(), l.max_header_bytes.get()),
            (8192, 16384)
        );
        // A head as large as the longest URI: every click on the longest links would get 431.
        let err = limits("[limits]\nmax_header_bytes = 8192\n").unwrap_err();
        assert!(
            err.contains(
                "limits.max_uri_bytes = 8192 leaves less than 4096 bytes under \
                 limits.max_header_bytes = 8192"
            ) && err.contains(
                "lower limits.max_uri_bytes to at most 4096 or raise limits.max_header_bytes to \
                 at least 12288"
            ),
            "{err}"
        );
        let err = limits("[limits]\nmax_header_bytes = 2048\nmax_uri_bytes = 100\n").unwrap_err();
        assert!(
            err.contains("; raise limits.max_header_bytes to at least 4196"),
            "{err}"
        );
        let l = limits("[limits]\nmax_header_bytes = 8192\nmax_uri_bytes = 4096\n").unwrap();
        assert_eq!(l.max_uri_bytes.get(), 4096);
        // Shorter than the edge's own addresses: every status page address would get 414.
        let err = limits("[limits]\nmax_uri_bytes = 100\n").unwrap_err();
        assert!(
            err.contains("limits.max_uri_bytes = 100 is shorter than")
                && err.contains("at least 256"),
            "{err}"
        );
        assert_eq!(
            limits("[limits]\nmax_uri_bytes = 256\n")
                .unwrap()
                .max_uri_bytes
                .get(),
            256
        );
    }
}
