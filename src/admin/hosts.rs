//! Which `Host` the admin listener answers to, against DNS rebinding: a page on a name its owner
//! re-points at the edge's address would otherwise read the API or `/metrics` through the
//! visitor's browser, under its own origin.
//!
//! IP addresses are always answered (a page whose origin is an address is that address: no name
//! was rebound), as are `localhost` when the listener is on loopback or every address, and the
//! names in `admin.hosts`. The port is not compared: a rebound name reaches the listener's own
//! port, so only the name tells the attack apart. A request without `Host` (no browser sends
//! one) is answered.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Shared;
use super::error::ApiError;
use crate::config::AdminHost;

/// The names the admin listener answers to.
#[derive(Debug, Clone)]
pub struct Hosts {
    names: Vec<AdminHost>,
    localhost: bool,
}

impl Hosts {
    /// The names of a listener on `listener`: `configured` (`admin.hosts`), and `localhost` when
    /// it listens on loopback or every address.
    pub fn new(configured: &[AdminHost], listener: SocketAddr) -> Hosts {
        let ip = listener.ip();
        Hosts {
            names: configured.to_vec(),
            localhost: ip.is_loopback() || ip.is_unspecified(),
        }
    }

    /// True if a request for `host` (a `Host` value or an authority, port optional) is answered.
    pub fn allows(&self, host: &str) -> bool {
        let name = name_of(host);
        let name = name.strip_suffix('.').unwrap_or(name);
        name.parse::<IpAddr>().is_ok()
            || (self.localhost && name.eq_ignore_ascii_case("localhost"))
            || self
                .names
                .iter()
                .any(|n| n.as_str().eq_ignore_ascii_case(name))
    }
}

/// The host part of `host[:port]` or `[v6][:port]`.
fn name_of(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(host, |(ip, _)| ip);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Refuses (421) a request whose `Host` or request-target authority the listener does not
/// answer to, naming the key that would allow it.
pub(super) async fn check(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let authority = req.uri().authority().map(|a| a.as_str());
    let host = req
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    if let Some(refused) = [authority, host]
        .into_iter()
        .flatten()
        .find(|h| !state.hosts.allows(h))
    {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this admin listener does not answer to the host {:?}; if that name is the \
                 edge's, add it to admin.hosts in the config (addresses need no entry)",
                name_of(refused)
            ),
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(listener: &str, names: &[&str]) -> Hosts {
        let names: Vec<AdminHost> = names.iter().map(|n| AdminHost::parse(n).unwrap()).collect();
        Hosts::new(&names, listener.parse().unwrap())
    }

    #[test]
    fn addresses_localhost_on_loopback_and_configured_names_are_answered() {
        let loopback = hosts("127.0.0.1:9180", &[]);
        for ok in [
            "127.0.0.1:9180",
            "127.0.0.1",
            "[::1]:9180",
            "10.0.0.5:9180",
            "localhost:9180",
            "LOCALHOST.",
        ] {
            assert!(loopback.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example:9180",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "[evil.example]",
            "",
        ] {
            assert!(!loopback.allows(refused), "{refused}");
        }
        assert!(hosts("0.0.0.0:9180", &[]).allows("localhost:9180"));
        let public = hosts("203.0.113.10:9180", &["admin.example.net"]);
        assert!(!public.allows("localhost:9180"));
        assert!(public.allows("Admin.Example.Net:443"));
        assert!(public.allows("203.0.113.10:9180"));
        assert!(!public.allows("other.example.net"));
    }
}
