//! The link key lifecycle: the ring loaded from the store at start (the first key generated on a
//! fresh store), rotation, removal, the list; and minting links with the sealing key. The admin
//! API and (through it) the CLI come here.
//!
//! The store changes first, then the ring in use is reloaded from it, so what opens tokens is
//! always what is stored. The ring and the token codec themselves are [`crate::links`] (pure);
//! this module does the I/O and speaks no HTTP.

use std::sync::Arc;
use std::time::SystemTime;

use crate::Domain;
use crate::clock::Clock;
use crate::links::{self, KeyId, KeyRing, Link, LinkError, LinkKey, SharedKeyRing};
use crate::policy::Policy;
use crate::store::{Store, StoreError};

/// Why a key operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Removing the sealing key would leave new links without a key.
    #[error("key {0} is the sealing key; add a new key first (clickedge keys rotate)")]
    Sealing(u16),
    /// No key has that id.
    #[error("no link key {0}")]
    NoSuchKey(u16),
    /// The store failed.
    #[error("reading or writing link keys in the store")]
    Store(#[from] StoreError),
}

/// Why a link was not minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// Links are only minted for registered domains (no other name gets a certificate).
    #[error("domain {0} is not registered; add it first: clickedge domain add {0}")]
    NotRegistered(Domain),
    /// The destination or the metadata is refused.
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// One key as listed (no secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key id.
    pub id: KeyId,
    /// When it was added.
    pub created_at: SystemTime,
    /// True for the key that seals new links.
    pub active: bool,
}

/// Link keys over the store, and the ring in use.
pub struct LinkKeys {
    store: Arc<dyn Store>,
    ring: Arc<SharedKeyRing>,
    policy: Arc<Policy>,
    clock: Clock,
}

impl LinkKeys {
    /// Loads the ring from `store`, generating the first key if there is none; links are minted
    /// for the domains `policy` registers.
    pub async fn load(
        store: Arc<dyn Store>,
        policy: Arc<Policy>,
        clock: Clock,
    ) -> Result<LinkKeys, StoreError> {
        let ring = Arc::new(SharedKeyRing::new(load_ring(store.as_ref(), &clock).await?));
        Ok(LinkKeys {
            store,
            ring,
            policy,
            clock,
        })
    }

    /// The ring in use, shared with the edge that opens tokens.
    pub fn ring(&self) -> Arc<SharedKeyRing> {
        self.ring.clone()
    }

    /// Every key in use, newest first.
    pub fn list(&self) -> Vec<KeyInfo> {
        let ring = self.ring.current();
        let active = ring.active().id();
        ring.keys()
            .iter()
            .map(|k| KeyInfo {
                id: k.id(),
                created_at: k.created_at(),
                active: k.id() == active,
            })
            .collect()
    }

    /// Adds a key, which seals new links from now on; older keys keep opening theirs.
    pub async fn rotate(&self) -> Result<KeyInfo, KeyError> {
        let now = self.clock.now();
        let id = self.store.add_link_key(rand::random(), now).await?;
        self.reload().await?;
        tracing::info!(key = id, "link key added; it seals new links from now on");
        Ok(KeyInfo {
            id: KeyId(id),
            created_at: now,
            active: true,
        })
    }

    /// Removes a key: links it sealed stop opening at once. The sealing key cannot be removed.
    pub async fn remove(&self, id: u16) -> Result<(), KeyError> {
        if self.ring.current().active().id() == KeyId(id) {
            return Err(KeyError::Sealing(id));
        }
        if !self.store.remove_link_key(id).await? {
            return Err(KeyError::NoSuchKey(id));
        }
        self.reload().await?;
        tracing::warn!(key = id, "link key removed; links it sealed no longer open");
        Ok(())
    }

    /// Seals a link to `url` carrying `meta` for `domain`, minted now; returns its token.
    pub fn mint(
        &self,
        domain: &Domain,
        url: &str,
        meta: Vec<(String, String)>,
    ) -> Result<String, MintError> {
        if !self.policy.is_registered(domain.as_str()) {
            return Err(MintError::NotRegistered(domain.clone()));
        }
        let link = Link::new(url, meta, self.clock.unix_secs())?;
        Ok(links::seal(&self.ring.current(), domain.as_str(), &link))
    }

    async fn reload(&self) -> Result<(), StoreError> {
        self.ring
            .replace(load_ring(self.store.as_ref(), &self.clock).await?);
        Ok(())
    }
}

/// The ring as stored, generating the first key if there is none.
async fn load_ring(store: &dyn Store, clock: &Clock) -> Result<KeyRing, StoreError> {
    let mut stored = store.link_keys().await?;
    if stored.is_empty() {
        store.add_link_key(rand::random(), clock.now()).await?;
        stored = store.link_keys().await?;
    }
    let keys = stored
        .into_iter()
        .map(|k| LinkKey::new(KeyId(k.id), k.secret, k.created_at))
        .collect();
    KeyRing::new(keys).map_err(|_| StoreError::Corrupt("link_keys (empty after insert)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, from_unix_secs};
    use crate::store::SqliteStore;

    async fn keys(clock: &ManualClock) -> LinkKeys {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let policy = Arc::new(Policy::new([Domain::parse("a.example.com").unwrap()], None));
        LinkKeys::load(store, policy, clock.clock()).await.unwrap()
    }

    #[tokio::test]
    async fn a_fresh_store_gets_a_first_key_and_rotation_moves_the_seal() {
        let clock = ManualClock::new(from_unix_secs(1_000));
        let keys = keys(&clock).await;
        let first = keys.list();
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].id, first[0].active), (KeyId(1), true));
        assert_eq!(first[0].created_at, from_unix_secs(1_000));
        clock.advance(std::time::Duration::from_secs(60));
        let added = keys.rotate().await.unwrap();
        assert_eq!(added.id, KeyId(2));
        assert_eq!(added.created_at, from_unix_secs(1_060));
        let listed = keys.list();
        assert_eq!(listed[0], added);
        assert_eq!((listed[1].id, listed[1].active), (KeyId(1), false));
        assert_eq!(keys.ring().current().active().id(), KeyId(2));
    }

    #[tokio::test]
    async fn the_sealing_key_stays_and_removed_keys_stop_opening_their_links() {
        let clock = ManualClock::new(from_unix_secs(1_000));
        let keys = keys(&clock).await;
        let a = Domain::parse("a.example.com").unwrap();
        let token = keys.mint(&a, "https://example.com/", Vec::new()).unwrap();
        assert!(matches!(keys.remove(1).await, Err(KeyError::Sealing(1))));
        keys.rotate().await.unwrap();
        assert!(links::open(&keys.ring().current(), a.as_str(), &token).is_ok());
        keys.remove(1).await.unwrap();
        assert!(links::open(&keys.ring().current(), a.as_str(), &token).is_err());
        assert!(matches!(keys.remove(1).await, Err(KeyError::NoSuchKey(1))));
    }

    #[tokio::test]
    async fn links_are_minted_now_and_only_for_registered_domains() {
        let clock = ManualClock::new(from_unix_secs(1_000));
        let keys = keys(&clock).await;
        let a = Domain::parse("a.example.com").unwrap();
        let token = keys.mint(&a, "https://example.com/", Vec::new()).unwrap();
        let link = links::open(&keys.ring().current(), a.as_str(), &token).unwrap();
        assert_eq!(link.minted_at, 1_000);
        let b = Domain::parse("b.example.com").unwrap();
        assert!(matches!(
            keys.mint(&b, "https://example.com/", Vec::new()),
            Err(MintError::NotRegistered(_))
        ));
        assert!(matches!(
            keys.mint(&a, "javascript:alert(1)", Vec::new()),
            Err(MintError::Link(_))
        ));
    }
}
