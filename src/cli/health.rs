//! `clickedge health`: asks a running edge's `/readyz` and exits 0 when it is ready, 1 when not.
//! Made for container health checks and scripts on images without curl; it needs no token.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::out::say;
use crate::config::Config;

/// The admin listener as a client reaches it: an unspecified address (`0.0.0.0`, `[::]`) is
/// reached on loopback.
pub(super) fn reachable(admin: SocketAddr) -> SocketAddr {
    match admin.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, admin.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, admin.port()).into(),
        _ => admin,
    }
}

/// GET `/readyz` on `admin` (a base URL), else on `listen.admin`; `Ok` only for a 200.
pub(super) async fn run(config: &Config, admin: Option<&str>) -> anyhow::Result<()> {
    let base = super::client::admin_base(config, admin)?;
    let url = format!("{base}/readyz");
    let res = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .context("building HTTP client")?
        .get(&url)
        .send()
        .await
        .map_err(|e| super::client::unreachable(&base, &e))?;
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    if status != reqwest::StatusCode::OK {
        bail!("{url} answered {status}: {}", body.trim());
    }
    say!("{}", body.trim());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_admin_addresses_are_reached_on_loopback() {
        let r = |s: &str| reachable(s.parse().unwrap()).to_string();
        assert_eq!(r("0.0.0.0:9180"), "127.0.0.1:9180");
        assert_eq!(r("[::]:9180"), "[::1]:9180");
        assert_eq!(r("10.1.2.3:9180"), "10.1.2.3:9180");
    }
}
