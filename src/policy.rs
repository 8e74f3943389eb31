//! Which names the edge serves and may get certificates for: the registered domains, held in
//! memory so that a refusal costs one hash lookup and no I/O (a random-SNI flood touches neither
//! the store nor the issuer); and, if configured, names the `tls.ask` endpoint approves, which
//! are registered (origin `ask`) before they are served ([`ask`] says how it is protected).
//!
//! The set is loaded from the store at start; from then on it changes only after the store: by
//! [`crate::domains::Domains`], the domain lifecycle, and by an `ask` approval recorded here.
//! Policy decides; it never issues.

pub mod ask;
mod bucket;
#[doc(hidden)]
pub mod testing;

pub use ask::{Ask, AskError, AskSettings};

use dashmap::DashSet;

use crate::Domain;

/// The registered domains, and the optional `ask` endpoint.
#[derive(Default)]
pub struct Policy {
    registered: DashSet<Domain>,
    ask: Option<Ask>,
}

impl Policy {
    /// A policy serving exactly `domains`, plus what `ask` approves.
    pub fn new(domains: impl IntoIterator<Item = Domain>, ask: Option<Ask>) -> Policy {
        Policy {
            registered: domains.into_iter().collect(),
            ask,
        }
    }

    /// True if `name` (already normalised) is registered. No I/O.
    pub fn is_registered(&self, name: &str) -> bool {
        self.registered.contains(name)
    }

    /// True if `name` may have a certificate: registered, or approved by `ask` now, which
    /// registers it (in the store first). Only the certificate resolver asks this: challenge
    /// answers and the plain HTTP listener take registered names only, so no `Host` they see
    /// costs an `ask` request.
    pub async fn allows(&self, name: &Domain) -> bool {
        if self.is_registered(name.as_str()) {
            return true;
        }
        let Some(ask) = &self.ask else {
            return false;
        };
        if !ask.approves(name).await {
            return false;
        }
        self.registered.insert(name.clone());
        true
    }

    /// Starts serving `name` (the domain lifecycle's job, once the store has it).
    pub fn register(&self, name: Domain) {
        self.registered.insert(name);
    }

    /// Stops serving `name` (the domain lifecycle's job), and forgets what `ask` said about it.
    pub async fn unregister(&self, name: &str) {
        self.registered.remove(name);
        if let Some(ask) = &self.ask {
            ask.forget(name).await;
        }
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
mod tests;
