//! DNS zones: a name and every name under it, as in a certificate's name constraints
//! (RFC 5280 §4.2.1.10: a DNS constraint `example.com` covers `example.com` and any name made by
//! adding labels on the left). Used for the subtrees the built-in CA may vouch for
//! (`tls.local_ca_names`).
//!
//! A zone follows the rules of [`Domain`] except that it may be one label (`test`, `localhost`).
//! This module does not decide which zones are allowed; the configuration does.

use std::fmt;
use std::sync::Arc;

use super::{Domain, DomainError};

/// A normalised DNS zone: lowercase ASCII, no trailing dot, LDH labels, a non-numeric last
/// label; one label is enough.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Zone(Arc<str>);

/// The names reserved for documentation and testing (RFC 2606 §2–3, RFC 6761 §6), which no
/// public CA may vouch for and no one can register.
const RESERVED: [&str; 7] = [
    "example",
    "example.com",
    "example.net",
    "example.org",
    "invalid",
    "localhost",
    "test",
];

impl Zone {
    /// Normalises `input` (ASCII lowercase, one trailing dot removed) and checks it is a valid
    /// zone. Total: any input gives `Ok` or `Err`, never a panic.
    pub fn parse(input: &str) -> Result<Zone, DomainError> {
        let name = input.strip_suffix('.').unwrap_or(input);
        if name.is_empty() {
            return Err(DomainError::Empty);
        }
        if name.ends_with('.') {
            return Err(DomainError::BadLabelLength);
        }
        // A zone is valid when a name directly under it is a valid host name, so one set of rules
        // (`Domain::parse`) decides both. The probe costs two of the 253 characters.
        let probe = Domain::parse(&format!("x.{name}")).map_err(|e| match e {
            DomainError::Wildcard => DomainError::WildcardZone,
            e => e,
        })?;
        // The probe starts with the two ASCII bytes "x.", so index 2 is a character boundary.
        Ok(Zone(probe.as_str()[2..].into()))
    }

    /// The zone as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True if `name` is the zone itself or a name under it (`a.example.com` is under
    /// `example.com`; `badexample.com` is not).
    pub fn contains(&self, name: &Domain) -> bool {
        name.as_str()
            .strip_suffix(&*self.0)
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl<'de> serde::Deserialize<'de> for Zone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Zone::parse(&s).map_err(|e| serde::de::Error::custom(format!("DNS zone {s:?}: {e}")))
    }
}

/// A non-empty set of zones, sorted and without repeats.
///
/// Never empty: an empty set of permitted subtrees would leave a name-constraints extension out
/// altogether, and with it every limit.
#[derive(Clone, PartialEq, Eq)]
pub struct Zones(Vec<Zone>);

impl Zones {
    /// The set of `zones`; `None` if there are none.
    pub fn new(zones: impl IntoIterator<Item = Zone>) -> Option<Zones> {
        let mut zones: Vec<Zone> = zones.into_iter().collect();
        zones.sort();
        zones.dedup();
        (!zones.is_empty()).then_some(Zones(zones))
    }

    /// The names reserved for documentation and testing: `example`, `example.com`,
    /// `example.net`, `example.org`, `invalid`, `localhost`, `test` (RFC 2606, RFC 6761).
    pub fn reserved() -> Zones {
        // Sorted, normalised literals (a test parses each back to itself).
        Zones(RESERVED.iter().map(|z| Zone(Arc::from(*z))).collect())
    }

    /// The zones, sorted.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Zone> {
        self.0.iter()
    }

    /// True if `name` is in one of the zones.
    pub fn covers(&self, name: &Domain) -> bool {
        self.0.iter().any(|z| z.contains(name))
    }
}

impl fmt::Display for Zones {
    /// The zones, sorted, separated by `, `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, zone) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(zone.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Zones {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.0).finish()
    }
}

impl<'de> serde::Deserialize<'de> for Zones {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let zones = Vec::<Zone>::deserialize(d)?;
        Zones::new(zones).ok_or_else(|| {
            serde::de::Error::custom(
                "list at least one DNS zone, e.g. [\"example.com\"] (an empty list would limit nothing)",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn zone(s: &str) -> Zone {
        Zone::parse(s).unwrap()
    }

    fn domain(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }

    #[test]
    fn normalises_like_a_domain_and_allows_one_label() {
        assert_eq!(zone("Example.COM.").as_str(), "example.com");
        assert_eq!(zone("localhost").as_str(), "localhost");
        assert_eq!(
            zone("xn--bcher-kva.example").as_str(),
            "xn--bcher-kva.example"
        );
        assert_eq!(Zone::parse(""), Err(DomainError::Empty));
        assert_eq!(Zone::parse("."), Err(DomainError::Empty));
        assert_eq!(Zone::parse("a.."), Err(DomainError::BadLabelLength));
        assert_eq!(
            Zone::parse(".example.com"),
            Err(DomainError::BadLabelLength)
        );
        assert_eq!(Zone::parse("*.example.com"), Err(DomainError::WildcardZone));
        assert_eq!(Zone::parse("-a.com"), Err(DomainError::BadHyphen));
        assert_eq!(Zone::parse("10.0.0.1"), Err(DomainError::NotQualified));
        assert_eq!(Zone::parse("a b"), Err(DomainError::BadChar(' ')));
    }

    #[test]
    fn a_zone_holds_itself_and_the_names_under_it() {
        let z = zone("example.com");
        assert!(z.contains(&domain("example.com")));
        assert!(z.contains(&domain("links.example.com")));
        assert!(z.contains(&domain("a.b.example.com")));
        assert!(!z.contains(&domain("badexample.com")));
        assert!(!z.contains(&domain("example.com.evil.net")));
        assert!(!z.contains(&domain("example.org")));
        assert!(zone("test").contains(&domain("links.test")));
        assert!(!zone("test").contains(&domain("links.contest")));
    }

    #[test]
    fn reserved_zones_are_normalised_sorted_and_cover_no_real_name() {
        let reserved = Zones::reserved();
        let reparsed = Zones::new(RESERVED.iter().map(|z| zone(z))).unwrap();
        assert_eq!(reserved, reparsed);
        assert!(reserved.iter().zip(RESERVED).all(|(z, s)| z.as_str() == s));
        assert_eq!(
            reserved.to_string(),
            "example, example.com, example.net, example.org, invalid, localhost, test"
        );
        assert!(reserved.covers(&domain("links.example.com")));
        assert!(reserved.covers(&domain("links.localhost")));
        for real in ["links.customer.com", "www.google.com", "example.co.uk"] {
            assert!(!reserved.covers(&domain(real)), "{real}");
        }
    }

    #[test]
    fn sets_are_sorted_without_repeats_and_never_empty() {
        let set = Zones::new([zone("b.example"), zone("a.example"), zone("B.example")]).unwrap();
        assert_eq!(set.to_string(), "a.example, b.example");
        assert!(Zones::new([]).is_none());
    }

    proptest! {
        #[test]
        fn parse_is_total_and_idempotent(s in any::<String>()) {
            if let Ok(z) = Zone::parse(&s) {
                prop_assert_eq!(Zone::parse(z.as_str()), Ok(z.clone()));
                prop_assert!(!z.as_str().bytes().any(|b| b.is_ascii_uppercase()));
            }
        }
    }
}
