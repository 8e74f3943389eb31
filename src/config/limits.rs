//! `[limits]`: what one client, or all of them, may cost — request sizes, connection caps and
//! timeouts.
//!
//! Plain values only; the listeners in [`crate::http::serve`] apply them.

use std::num::NonZeroUsize;
use std::time::Duration;

use serde::Deserialize;

/// `[limits]`: what one client, or all of them, may cost.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Time a client has to send a request's headers (slowloris guard; HTTP/1.1). Default `10s`.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; larger gets 431. Default
    /// `16384`.
    pub max_header_bytes: NonZeroUsize,
    /// Longest request URI, in bytes; longer gets 414 before any token is opened. Default `8192`.
    pub max_uri_bytes: NonZeroUsize,
    /// Open client connections on the HTTPS and HTTP listeners together; past it new
    /// connections wait in the kernel's backlog (accept backpressure). Default `10000`.
    pub max_connections: NonZeroUsize,
    /// Open connections per client address; `0` turns the limit off. Default `0`.
    pub max_connections_per_ip: usize,
    /// An idle keep-alive connection (HTTP/1.1 or h2) is closed after this long. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Concurrent streams per h2 connection. Default `100`.
    pub h2_max_concurrent_streams: u32,
    /// Largest admin API request body, in bytes; larger gets 413. Default `65536`.
    pub admin_max_body_bytes: NonZeroUsize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: NonZeroUsize::new(16 * 1024).expect("non-zero literal"),
            max_uri_bytes: NonZeroUsize::new(8 * 1024).expect("non-zero literal"),
            max_connections: NonZeroUsize::new(10_000).expect("non-zero literal"),
            max_connections_per_ip: 0,
            keepalive_timeout: Duration::from_secs(60),
            h2_max_concurrent_streams: 100,
            admin_max_body_bytes: NonZeroUsize::new(64 * 1024).expect("non-zero literal"),
        }
    }
}
