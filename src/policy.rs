//! Which names the edge serves and may get certificates for: the registered domains, held in
//! memory so that a refusal costs one hash lookup and no I/O (a random-SNI flood touches neither
//! the store nor the issuer); and, if configured, names the `tls.ask` endpoint approves, which
//! are registered (origin `ask`) before they are served ([`ask`] says how it is protected).
//!
//! The set is loaded from the store at start; from then on it changes only after the store: by
//! [`crate::domains::Domains`], the domain lifecycle, and by an `ask` approval recorded here.
//! Policy decides; it never issues.
//!
//! Each registered domain's fallback URL (where a link that does not open sends the recipient)
//! is kept beside the set, so the request path answers such a link from memory too.

pub mod ask;
mod bucket;
#[doc(hidden)]
pub mod testing;

pub use ask::{Ask, AskError, AskSettings};

use dashmap::{DashMap, DashSet};
use http::HeaderValue;

use crate::Domain;
use crate::store::DomainRecord;

/// The registered domains, their fallback URLs, and the optional `ask` endpoint.
#[derive(Default)]
pub struct Policy {
    registered: DashSet<Domain>,
    /// The `Location` of each domain that has a fallback URL (none: the recipient page).
    fallbacks: DashMap<Domain, HeaderValue>,
    ask: Option<Ask>,
    /// Held by whoever writes a name's membership to the store and then to this set, so that a
    /// removal cannot fall between another writer's store write (or read) and its set change,
    /// leaving a name served that the store no longer holds (or the reverse).
    changing: tokio::sync::Mutex<()>,
}

impl Policy {
    /// A policy serving exactly `domains`, plus what `ask` approves.
    pub fn new(domains: impl IntoIterator<Item = Domain>, ask: Option<Ask>) -> Policy {
        Policy {
            registered: domains.into_iter().collect(),
            fallbacks: DashMap::new(),
            ask,
            changing: tokio::sync::Mutex::new(()),
        }
    }

    /// True if `name` (already normalised) is registered. No I/O.
    pub fn is_registered(&self, name: &str) -> bool {
        self.registered.contains(name)
    }

    /// The registered name equal to `name`, sharing its allocation, so a table that keys every
    /// stored certificate by name holds no second copy of each name. No I/O.
    pub fn registered_name(&self, name: &str) -> Option<Domain> {
        self.registered.get(name).map(|n| n.key().clone())
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
        let _changing = self.changing().await;
        if !ask.record(name).await {
            return false;
        }
        self.registered.insert(name.clone());
        true
    }

    /// The membership lock: held from a store write (or the read of what the store holds) of a
    /// name's registration until the set here follows it. Store writes and answers are not
    /// ordered with the set otherwise: an add that read its row back, then a whole removal, then
    /// the add registering the row it read, would serve a name the store no longer holds, until
    /// a restart. Never held on a request; on a handshake only to record an `ask` approval (once
    /// per name, or once per few seconds while the store fails).
    pub async fn changing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changing.lock().await
    }

    /// Starts serving `name` (the domain lifecycle's job, once the store has it).
    pub fn register(&self, name: Domain) {
        self.registered.insert(name);
    }

    /// Serves the domain of `record` as stored: registered, with its fallback URL (the domain
    /// lifecycle's and change propagation's job, once the store has it).
    pub fn register_record(&self, record: &DomainRecord) {
        self.set_fallback(&record.name, record.fallback_url.as_deref());
        self.register(record.name.clone());
    }

    /// Where a link of `name` that does not open sends the recipient, if the operator chose a
    /// fallback for it and it is registered. No I/O.
    pub fn fallback(&self, name: &str) -> Option<HeaderValue> {
        if !self.is_registered(name) {
            return None;
        }
        self.fallbacks.get(name).map(|v| v.value().clone())
    }

    /// Sets or clears the fallback URL of `name`. Checked when it was set, and again here as a
    /// link's destination is at every redirect: one a store holds that is not http(s), or not a
    /// valid header value (written by hand, or by another program), is cleared with a warning.
    fn set_fallback(&self, name: &Domain, url: Option<&str>) {
        let checked = url.map(|url| {
            HeaderValue::from_str(url)
                .ok()
                .filter(|_| crate::links::is_redirectable(url))
        });
        match checked {
            Some(Some(location)) => {
                self.fallbacks.insert(name.clone(), location);
            }
            Some(None) => {
                tracing::warn!(domain = %name, "stored fallback URL is not an http(s) URL fit for a Location; the recipient page is shown instead");
                self.fallbacks.remove(name.as_str());
            }
            None => {
                self.fallbacks.remove(name.as_str());
            }
        }
    }

    /// Stops serving `name` (the domain lifecycle's job), and forgets its fallback and what
    /// `ask` said about it.
    pub async fn unregister(&self, name: &str) {
        self.registered.remove(name);
        self.fallbacks.remove(name);
        if let Some(ask) = &self.ask {
            ask.forget(name).await;
        }
    }

    /// Every registered name (a copy: a full comparison with the store, rare).
    pub fn names(&self) -> Vec<Domain> {
        self.registered.iter().map(|n| n.key().clone()).collect()
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
