//! Domain names as the edge uses them: normalised DNS host names (A-labels).
//!
//! Every name that reaches the edge — SNI, `Host`, admin input — goes through [`Domain::parse`],
//! so the rest of the code compares plain, lowercase, dot-less strings. It does not resolve names
//! or decide who may get a certificate (that is `policy`). [`Zone`] is a name with everything
//! under it, for the subtrees a certificate authority may vouch for.

mod zone;

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

pub use zone::{Zone, Zones};

/// Longest DNS name in presentation form without the trailing dot (RFC 1035 §2.3.4).
pub const MAX_NAME_LEN: usize = 253;
/// Longest DNS label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// A normalised host name: lowercase ASCII, no trailing dot, LDH labels, at least two labels.
///
/// Cheap to clone (`Arc<str>`), hashes and compares as its string, and borrows as `&str` so maps
/// keyed by `Domain` can be queried with a plain `&str`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(Arc<str>);

/// Why a string is not a host name the edge can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The name is empty (or only a dot).
    #[error("name is empty")]
    Empty,
    /// The name is longer than 253 characters.
    #[error("name is longer than 253 characters")]
    TooLong,
    /// A label is empty (`a..b`) or longer than 63 characters.
    #[error("a label is empty or longer than 63 characters")]
    BadLabelLength,
    /// A character other than a-z, 0-9, `-` and `.`.
    #[error("invalid character {0:?} (use letters, digits, '-' and '.')")]
    BadChar(char),
    /// A non-ASCII name that IDNA (UTS #46) does not map to A-labels, or an `xn--` label that is
    /// not the A-label of one.
    #[error("not a valid internationalised domain name")]
    BadIdn,
    /// A URL where a host name was wanted (`https://links.example.com/`).
    #[error("a URL, not a host name: give the host alone (e.g. links.example.com)")]
    Url,
    /// A wildcard (`*.example.com`): certificates are issued per name, on demand.
    #[error(
        "wildcards are not served: give each name (each gets its certificate at its first click)"
    )]
    Wildcard,
    /// A zone written as a wildcard (`*.example.com`): a zone already has every name under it.
    #[error("a zone covers every name under it already: drop the '*.' (e.g. example.com)")]
    WildcardZone,
    /// A label starts or ends with `-`.
    #[error("a label starts or ends with '-'")]
    BadHyphen,
    /// A single label, or a name whose last label is numeric (an IP address is not a domain).
    #[error(
        "not a fully qualified host name (need at least two labels and a non-numeric top level)"
    )]
    NotQualified,
}

impl Domain {
    /// Normalises `input` (ASCII lowercase, one trailing dot removed) and checks it is a valid
    /// host name. Total: any input gives `Ok` or `Err`, never a panic.
    ///
    /// An internationalised name (`bücher.example`) is accepted and kept as its A-labels
    /// (`xn--bcher-kva.example`), the form DNS, certificates and SNI use; [`Domain::unicode`]
    /// gives it back for people.
    pub fn parse(input: &str) -> Result<Domain, DomainError> {
        if !input.is_ascii() {
            // UTS #46 mapping, as browsers do.
            return match idna::domain_to_ascii(input) {
                Ok(ascii) if ascii.is_ascii() => Domain::parse(&ascii),
                _ => Err(DomainError::BadIdn),
            };
        }
        let name = input.strip_suffix('.').unwrap_or(input);
        if name.is_empty() {
            return Err(DomainError::Empty);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(DomainError::TooLong);
        }
        let mut labels = 0usize;
        let mut last_numeric = false;
        for label in name.split('.') {
            let bytes = label.as_bytes();
            if bytes.is_empty() || bytes.len() > MAX_LABEL_LEN {
                return Err(DomainError::BadLabelLength);
            }
            if let Some(bad) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
            {
                return Err(match bad {
                    ':' | '/' if input.contains("://") => DomainError::Url,
                    '*' if label == "*" => DomainError::Wildcard,
                    _ => DomainError::BadChar(bad),
                });
            }
            if bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
                return Err(DomainError::BadHyphen);
            }
            labels += 1;
            last_numeric = bytes.iter().all(u8::is_ascii_digit);
        }
        if labels < 2 || last_numeric {
            return Err(DomainError::NotQualified);
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Ok(Domain(name.to_ascii_lowercase().into()))
        } else {
            Ok(Domain(name.into()))
        }
    }

    /// [`Domain::parse`] for a name entering the edge (an operator adding it): also refuses an
    /// `xn--` label that is not the A-label of a name (RFC 5891 §5.4), which no CA certifies.
    /// Names read back from the store, SNI and `Host` go through `parse` alone, so a row an
    /// older version wrote still loads and no handshake pays for the decoding.
    pub fn parse_new(input: &str) -> Result<Domain, DomainError> {
        let domain = Domain::parse(input)?;
        if domain.0.split('.').any(|l| l.starts_with("xn--"))
            && idna::domain_to_ascii_cow(domain.0.as_bytes(), idna::AsciiDenyList::EMPTY).is_err()
        {
            return Err(DomainError::BadIdn);
        }
        Ok(domain)
    }

    /// The name as a string slice (A-labels).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as people read it: A-labels (`xn--…`) shown as Unicode, `None` when it has none
    /// (the name reads the same either way).
    pub fn unicode(&self) -> Option<String> {
        if !self.0.split('.').any(|l| l.starts_with("xn--")) {
            return None;
        }
        let (unicode, result) = idna::domain_to_unicode(&self.0);
        result.ok().map(|()| unicode).filter(|u| u != self.as_str())
    }
}

impl Borrow<str> for Domain {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Domain {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::str::FromStr for Domain {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Domain::parse(s)
    }
}

impl serde::Serialize for Domain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Domain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Domain::parse(&s).map_err(|e| serde::de::Error::custom(format!("domain {s:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises_case_and_trailing_dot() {
        assert_eq!(
            Domain::parse("Links.Example.COM.").unwrap().as_str(),
            "links.example.com"
        );
        assert_eq!(
            Domain::parse("xn--bcher-kva.example").unwrap().as_str(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn a_new_name_needs_valid_a_labels_and_a_stored_one_still_loads() {
        for bad in ["xn--zz.example", "XN--ZZ.example", "links.xn--zz.example"] {
            assert_eq!(Domain::parse_new(bad), Err(DomainError::BadIdn), "{bad}");
            assert!(Domain::parse(bad).is_ok(), "{bad}: read back as stored");
        }
        assert_eq!(
            Domain::parse_new("xn--bcher-kva.example").unwrap().as_str(),
            "xn--bcher-kva.example"
        );
        assert!(Domain::parse_new("bücher.example").is_ok());
    }

    #[test]
    fn a_url_or_a_wildcard_is_named_as_such() {
        for url in ["https://links.example.com", "http://links.example.com/c/x"] {
            assert_eq!(Domain::parse(url), Err(DomainError::Url), "{url}");
        }
        assert_eq!(Domain::parse("*.example.com"), Err(DomainError::Wildcard));
        assert_eq!(
            Domain::parse("a*.example.com"),
            Err(DomainError::BadChar('*'))
        );
        assert_eq!(
            Domain::parse("links.example.com:443"),
            Err(DomainError::BadChar(':'))
        );
    }

    #[test]
    fn refuses_invalid_names() {
        assert_eq!(Domain::parse(""), Err(DomainError::Empty));
        assert_eq!(Domain::parse("."), Err(DomainError::Empty));
        assert_eq!(Domain::parse("localhost"), Err(DomainError::NotQualified));
        assert_eq!(Domain::parse("127.0.0.1"), Err(DomainError::NotQualified));
        assert_eq!(Domain::parse("a..b"), Err(DomainError::BadLabelLength));
        assert_eq!(Domain::parse("a.b.."), Err(DomainError::BadLabelLength));
        assert_eq!(Domain::parse("-a.com"), Err(DomainError::BadHyphen));
        assert_eq!(Domain::parse("a_b.com"), Err(DomainError::BadChar('_')));
        assert_eq!(Domain::parse("a b.com"), Err(DomainError::BadChar(' ')));

        let long_label = format!("{}.com", "a".repeat(64));
        assert_eq!(Domain::parse(&long_label), Err(DomainError::BadLabelLength));
        let long_name = format!("{}com", "abcdefghi.".repeat(26));
        assert_eq!(Domain::parse(&long_name), Err(DomainError::TooLong));
    }

    proptest! {
        #[test]
        fn parse_is_total(s in any::<String>()) {
            let _ = Domain::parse(&s);
        }

        #[test]
        fn parse_is_idempotent_and_lowercase(s in "[a-zA-Z0-9-]{1,20}(\\.[a-zA-Z0-9-]{1,20}){1,4}\\.?") {
            if let Ok(d) = Domain::parse(&s) {
                prop_assert!(!d.as_str().ends_with('.'));
                prop_assert!(!d.as_str().bytes().any(|b| b.is_ascii_uppercase()));
                prop_assert_eq!(Domain::parse(d.as_str()), Ok(d.clone()));
            }
        }
    }

    #[test]
    fn an_internationalised_name_is_kept_as_a_labels_and_shown_in_unicode() {
        let d = Domain::parse("Bücher.example").unwrap();
        assert_eq!(d.as_str(), "xn--bcher-kva.example");
        assert_eq!(d.unicode().as_deref(), Some("bücher.example"));
        assert_eq!(Domain::parse("xn--bcher-kva.example").unwrap(), d);
        assert_eq!(Domain::parse("links.example.com").unwrap().unicode(), None);
        assert!(matches!(
            Domain::parse("b\u{fffd}cher.example"),
            Err(DomainError::BadIdn)
        ));
    }
}
