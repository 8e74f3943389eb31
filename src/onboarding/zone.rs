//! DNS records as customers enter them: [`FixRecord`]s (what to add, what to delete), each also
//! written as a zone-file line (`name. TTL IN TYPE value`; a record to delete has no TTL), the
//! zone a name belongs to, and small text helpers for messages.
//!
//! A record names its owner twice: fully qualified (`name`) and relative to the zone (`host`,
//! `@` at the zone's apex), the form most DNS providers' forms ask for. The zone comes from DNS
//! (the SOA answer or authority record of the checked name) or, when DNS does not say, is taken
//! to be the name's last two labels.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::escape::escape_owned;
use crate::Domain;

/// TTL of the records we suggest: short, so a mistake is quick to correct.
pub const SUGGESTED_TTL: u32 = 300;

/// Whether a fix record is to be created or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Create this record.
    Add,
    /// Remove this record (any TTL).
    Delete,
}

/// One DNS record of a fix, in the fields a DNS provider's form asks for. Part of the API
/// (`fix_records`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixRecord {
    /// Add or delete.
    pub action: Action,
    /// `A`, `AAAA`, `CNAME`, `CAA`.
    #[serde(rename = "type")]
    pub rtype: String,
    /// The owner, fully qualified, without the final dot.
    pub name: String,
    /// The owner relative to `zone` (`@` at its apex); null when the owner is outside it.
    pub host: Option<String>,
    /// The zone `host` is relative to: the checked name's zone.
    pub zone: Option<String>,
    /// The record's data as a provider's form takes it (names without the final dot).
    pub value: String,
    /// The TTL to set; null for a record to delete.
    pub ttl: Option<u32>,
}

impl FixRecord {
    /// The record in zone-file form.
    pub fn line(&self) -> String {
        let value = if self.rtype == "CNAME" {
            format!("{}.", self.value)
        } else {
            self.value.clone()
        };
        match self.ttl {
            Some(ttl) => format!("{}. {ttl} IN {} {value}", self.name, self.rtype),
            None => format!("{}. IN {} {value}", self.name, self.rtype),
        }
    }

    /// Sets `host` and `zone` for the checked name's `zone`.
    pub fn place(&mut self, zone: &Domain) {
        let z = zone.as_str();
        self.host = if self.name == z {
            Some("@".into())
        } else {
            self.name
                .strip_suffix(z)
                .and_then(|h| h.strip_suffix('.'))
                .map(str::to_owned)
        };
        self.zone = self.host.as_ref().map(|_| z.to_owned());
    }

    /// The record with control characters of its value escaped (values may come from DNS).
    pub(super) fn escaped(mut self) -> FixRecord {
        self.value = escape_owned(self.value);
        self
    }
}

/// A record to add at `name`, with the suggested TTL. A CNAME's `value` has no final dot.
pub fn record(name: &Domain, rtype: &str, value: &str) -> FixRecord {
    FixRecord {
        action: Action::Add,
        rtype: rtype.into(),
        name: name.to_string(),
        host: None,
        zone: None,
        value: value.into(),
        ttl: Some(SUGGESTED_TTL),
    }
}

/// The A or AAAA record for `ip` at `name`, to add.
pub fn address_record(name: &Domain, ip: &IpAddr) -> FixRecord {
    record(name, address_type(ip), &ip.to_string())
}

/// A record to delete (any TTL matches).
pub fn existing(name: &Domain, rtype: &str, value: &str) -> FixRecord {
    FixRecord {
        action: Action::Delete,
        ttl: None,
        ..record(name, rtype, value)
    }
}

/// The zone-file lines of `records`, one a line.
pub fn lines(records: &[FixRecord]) -> String {
    records
        .iter()
        .map(FixRecord::line)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The zone `name` is in when DNS did not say: its last two labels (the name itself if it has
/// no more).
pub fn guessed_zone(name: &Domain) -> Domain {
    let s = name.as_str();
    let cut = s.rmatch_indices('.').nth(1).map_or(0, |(i, _)| i + 1);
    Domain::parse(&s[cut..]).unwrap_or_else(|_| name.clone())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }

    #[test]
    fn records_read_as_zone_file_lines_and_relative_to_the_zone() {
        let mut r = record(&name("links.customer.com"), "CNAME", "edge.example.net");
        assert_eq!(
            r.line(),
            "links.customer.com. 300 IN CNAME edge.example.net."
        );
        r.place(&name("customer.com"));
        assert_eq!(r.host.as_deref(), Some("links"));
        assert_eq!(r.zone.as_deref(), Some("customer.com"));
        let mut apex = existing(&name("customer.com"), "CAA", "0 issue \";\"");
        assert_eq!(apex.line(), "customer.com. IN CAA 0 issue \";\"");
        apex.place(&name("customer.com"));
        assert_eq!(apex.host.as_deref(), Some("@"));
        let mut outside = existing(&name("x.othercustomer.com"), "AAAA", "2001:db8::1");
        outside.place(&name("customer.com"));
        assert_eq!((outside.host, outside.zone), (None, None));
    }

    #[test]
    fn the_guessed_zone_is_the_last_two_labels() {
        assert_eq!(
            guessed_zone(&name("a.b.customer.com")),
            name("customer.com")
        );
        assert_eq!(guessed_zone(&name("customer.com")), name("customer.com"));
    }
}
