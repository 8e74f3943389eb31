//! Which addresses the reachability check may connect to: public unicast addresses only, unless
//! `onboarding.danger_allow_private_addresses` also lets it use loopback, private and link-local
//! ones (tests and labs). Unspecified, multicast, broadcast, documentation and other reserved
//! addresses are never used. Pure.
//!
//! IPv4 carried inside IPv6 (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
//! `64:ff9b::/96` and 6to4 `2002::/16`) is judged by the IPv4 address it carries, since that is
//! where a connection to it ends up.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not a public unicast address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// `0.0.0.0/8`, `::`: on Linux a connection to it reaches the host itself.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918, RFC 6598 shared (carrier-grade NAT), unique local `fc00::/7`, site-local
    /// `fec0::/10` and local-use NAT64 `64:ff9b:1::/48`.
    Private,
    /// `169.254.0.0/16`, `fe80::/10` (cloud metadata services live here).
    LinkLocal,
    /// Multicast, broadcast, documentation, benchmarking and other reserved ranges.
    Reserved,
}

impl Range {
    /// The range as the operator log names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Range::Unspecified => "unspecified",
            Range::Loopback => "loopback",
            Range::Private => "private",
            Range::LinkLocal => "link-local",
            Range::Reserved => "reserved",
        }
    }

    /// True if `danger_allow_private_addresses` lets the check connect to this range.
    fn allowed_for_tests(self) -> bool {
        matches!(self, Range::Loopback | Range::Private | Range::LinkLocal)
    }
}

/// The range that makes `ip` not public, or none for a public unicast address.
pub fn non_public(ip: IpAddr) -> Option<Range> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

/// True if the check may connect to `ip`; `allow_private` is
/// `onboarding.danger_allow_private_addresses`.
pub fn may_connect(ip: IpAddr, allow_private: bool) -> bool {
    match non_public(ip) {
        None => true,
        Some(range) => allow_private && range.allowed_for_tests(),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<Range> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => Range::Unspecified,
        (127, _, _) => Range::Loopback,
        (10, _, _) | (192, 168, _) => Range::Private,
        (172, 16..=31, _) | (100, 64..=127, _) => Range::Private,
        (169, 254, _) => Range::LinkLocal,
        // IETF protocol assignments, documentation (TEST-NET-1..3), benchmarking.
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Range::Reserved,
        (198, 18..=19, _) => Range::Reserved,
        // Multicast, then reserved-for-future-use and broadcast.
        (224..=255, _, _) => Range::Reserved,
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<Range> {
    if ip.is_unspecified() {
        return Some(Range::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Range::Loopback);
    }
    if let Some(v4) = embedded_v4(ip) {
        return non_public_v4(v4);
    }
    let s = ip.segments();
    Some(match s[0] {
        0xfc00..=0xfdff | 0xfec0..=0xfeff => Range::Private,
        0xfe80..=0xfebf => Range::LinkLocal,
        0xff00..=0xffff => Range::Reserved,
        // Local-use NAT64 (RFC 8215) reaches whatever the local translator reaches.
        0x0064 if s[1] == 0xff9b && s[2] == 0x0001 => Range::Private,
        // Documentation (RFC 3849) and the discard prefix (RFC 6666).
        0x2001 if s[1] == 0x0db8 => Range::Reserved,
        0x0100 if s[1..4] == [0, 0, 0] => Range::Reserved,
        _ => return None,
    })
}

/// The IPv4 address a connection to `ip` would end up at, when `ip` carries one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    let v4 = |at: usize| Ipv4Addr::new(o[at], o[at + 1], o[at + 2], o[at + 3]);
    match ip.segments() {
        // IPv4-mapped and the deprecated IPv4-compatible form.
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(v4(12)),
        // NAT64 well-known prefix (RFC 6052).
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] => Some(v4(12)),
        // 6to4 (RFC 3056): the IPv4 address follows the prefix.
        [0x2002, ..] => Some(v4(2)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(ip: &str) -> Option<Range> {
        non_public(ip.parse().unwrap())
    }

    #[test]
    fn internal_ipv4_ranges_are_named() {
        for (ip, want) in [
            ("0.0.0.0", Range::Unspecified),
            ("0.1.2.3", Range::Unspecified),
            ("127.0.0.1", Range::Loopback),
            ("127.5.6.7", Range::Loopback),
            ("10.0.0.1", Range::Private),
            ("172.16.0.1", Range::Private),
            ("172.31.255.255", Range::Private),
            ("192.168.1.1", Range::Private),
            ("100.64.0.1", Range::Private),
            ("169.254.169.254", Range::LinkLocal),
            ("192.0.2.7", Range::Reserved),
            ("224.0.0.1", Range::Reserved),
            ("255.255.255.255", Range::Reserved),
        ] {
            assert_eq!(range(ip), Some(want), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "8.8.8.8",
            "192.0.1.1",
        ] {
            assert_eq!(range(ip), None, "{ip}");
        }
    }

    #[test]
    fn ipv6_ranges_and_ipv4_inside_ipv6_are_judged_by_where_they_lead() {
        for (ip, want) in [
            ("::", Range::Unspecified),
            ("::1", Range::Loopback),
            ("::ffff:10.0.0.1", Range::Private),
            ("::ffff:127.0.0.1", Range::Loopback),
            ("::ffff:169.254.169.254", Range::LinkLocal),
            ("::127.0.0.1", Range::Loopback),
            ("64:ff9b::a00:1", Range::Private),
            ("64:ff9b:1::1", Range::Private),
            ("2002:7f00:1::1", Range::Loopback),
            ("fd00::1", Range::Private),
            ("fe80::1", Range::LinkLocal),
            ("ff02::1", Range::Reserved),
            ("2001:db8::7", Range::Reserved),
        ] {
            assert_eq!(range(ip), Some(want), "{ip}");
        }
        for ip in [
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(range(ip), None, "{ip}");
        }
    }

    #[test]
    fn the_test_setting_allows_local_ranges_but_never_unspecified_or_reserved() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(may_connect(ip("203.0.114.1"), false));
        for s in ["127.0.0.1", "::1", "10.0.0.1", "::ffff:10.0.0.1", "fe80::1"] {
            assert!(!may_connect(ip(s), false), "{s}");
            assert!(may_connect(ip(s), true), "{s}");
        }
        for s in ["0.0.0.0", "::", "::ffff:0.0.0.0", "224.0.0.1", "ff02::1"] {
            assert!(!may_connect(ip(s), true), "{s}");
        }
    }
}
