//! DNS records as customers paste them: zone-file lines (`name. TTL IN TYPE value`) for what to
//! add, the same without a TTL for what to delete, and small text helpers for messages.

use std::net::IpAddr;

use crate::Domain;

/// TTL of the records we suggest: short, so a mistake is quick to correct.
pub const SUGGESTED_TTL: u32 = 300;

/// One DNS record in zone-file form.
pub fn record(name: &Domain, rtype: &str, value: &str) -> String {
    format!("{name}. {SUGGESTED_TTL} IN {rtype} {value}")
}

/// The A or AAAA record for `ip` at `name`, to add.
pub fn address_record(name: &Domain, ip: &IpAddr) -> String {
    record(name, address_type(ip), &ip.to_string())
}

/// A record to delete, in zone-file form without a TTL (any TTL matches).
pub fn existing(name: &Domain, rtype: &str, value: &str) -> String {
    format!("{name}. IN {rtype} {value}")
}

/// `A` or `AAAA`.
pub fn address_type(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() { "A" } else { "AAAA" }
}

/// `a, b, c`.
pub fn list<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `one` if `n` is 1, else `many`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 { one.into() } else { many.into() }
}
