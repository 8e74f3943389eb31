//! Which names the edge serves and may get certificates for: the registered domains, held in
//! memory so that a refusal costs one hash lookup and no I/O (a random-SNI flood touches neither
//! the store nor the issuer).
//!
//! The set is loaded from the store at start and kept in step by the admin API. Policy decides;
//! it never issues.

use dashmap::DashSet;

use crate::Domain;

/// The registered domains.
#[derive(Debug, Default)]
pub struct Policy {
    registered: DashSet<Domain>,
}

impl Policy {
    /// A policy serving exactly `domains`.
    pub fn new(domains: impl IntoIterator<Item = Domain>) -> Policy {
        Policy {
            registered: domains.into_iter().collect(),
        }
    }

    /// True if `name` (already normalised) is registered.
    pub fn is_registered(&self, name: &str) -> bool {
        self.registered.contains(name)
    }

    /// Starts serving `name`.
    pub fn register(&self, name: Domain) {
        self.registered.insert(name);
    }

    /// Stops serving `name`.
    pub fn unregister(&self, name: &str) {
        self.registered.remove(name);
    }

    /// How many names are registered.
    pub fn len(&self) -> usize {
        self.registered.len()
    }

    /// True when no name is registered.
    pub fn is_empty(&self) -> bool {
        self.registered.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_unregisters() {
        let p = Policy::new([Domain::parse("a.example.com").unwrap()]);
        assert!(p.is_registered("a.example.com"));
        assert!(!p.is_registered("b.example.com"));
        p.register(Domain::parse("b.example.com").unwrap());
        p.unregister("a.example.com");
        assert!(!p.is_registered("a.example.com"));
        assert!(p.is_registered("b.example.com"));
        assert_eq!(p.len(), 1);
    }
}
