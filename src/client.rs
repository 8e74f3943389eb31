//! Who a client is, for the per-client bounds (connections per address, clicks per address),
//! and the address it is logged as.
//!
//! Only the mapping from an address to the client it counts as; the bounds themselves live with
//! what they bound (`http::serve`, `clicks`).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The peer address as users know it: an IPv4 client that a dual-stack `[::]` listener shows
/// IPv4-mapped (`::ffff:203.0.113.9`) is `203.0.113.9`. Applied once, where a connection is
/// accepted, so the click log, the logs and every per-address bound see the same address.
pub fn canonical(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

/// The client an address counts as: IPv4 as it is (also when a dual-stack socket shows it
/// IPv4-mapped), IPv6 by its /64, the prefix one site or one subscriber normally gets, so an
/// attacker cannot take a fresh address for every connection or click.
pub fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    fn key(ip: &str) -> String {
        super::key(ip.parse().unwrap()).to_string()
    }

    #[test]
    fn ipv4_counts_as_itself_even_when_mapped() {
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
    }

    #[test]
    fn a_mapped_ipv4_peer_is_seen_as_ipv4() {
        let peer = |s: &str| super::canonical(s.parse().unwrap()).to_string();
        assert_eq!(peer("[::ffff:203.0.113.9]:4711"), "203.0.113.9:4711");
        assert_eq!(peer("[2001:db8::1]:4711"), "[2001:db8::1]:4711");
        assert_eq!(
            peer("[::1]:4711"),
            "[::1]:4711",
            "loopback ::1 is IPv6, not mapped"
        );
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
