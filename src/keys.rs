//! The link key lifecycle: the ring loaded from the store at start (the first key generated on a
//! fresh store), rotation, retirement, removal, the list; and minting links with the sealing key, never one
//! longer than the edge opens. The admin API and (through it) the CLI come here.
//!
//! The store changes first, then the ring in use is reloaded from it, so what opens tokens is
//! always what is stored; keys another node added or removed arrive by change propagation
//! ([`LinkKeys::reload`]). In a cluster a new key opens links at once on every node that has it,
//! but seals only once it is [`LinkKeys::with_seal_delay`] old, by when every node has it: a link
//! minted anywhere right after a rotation opens everywhere. The ring and the token codec themselves are [`crate::links`] (pure);
//! this module does the I/O and speaks no HTTP.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::Domain;
use crate::clock::Clock;
use crate::links::{self, KeyId, KeyRing, Link, LinkError, LinkKey, MessageContext, SharedKeyRing};
use crate::policy::Policy;
use crate::store::{Store, StoreError};

/// Why a key operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Removing the sealing key would leave new links without a key.
    #[error("key {0} is the sealing key; add a new key first (clickedge keys rotate)")]
    Sealing(u16),
    /// Retiring the only key that may seal would leave new links without a key.
    #[error(
        "key {0} is the only key that seals new links; add a new key first (clickedge keys rotate)"
    )]
    LastSealing(u16),
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
    /// The link's path would be longer than the edge accepts (it would answer 414).
    #[error(
        "the link's path would be {length} bytes, over limits.max_uri_bytes ({limit}), the longest \
         URI the edge opens; shorten the URL or the metadata (or raise limits.max_uri_bytes)"
    )]
    TooLong {
        /// Bytes of `/c/<token>`.
        length: usize,
        /// `limits.max_uri_bytes`.
        limit: usize,
    },
}

/// The path of a link before its token, as the edge routes it (`http::router`).
const LINK_PATH: &str = "/c/";
/// The path of an open pixel before its token.
const PIXEL_PATH: &str = "/o/";

/// One key as listed (no secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key id.
    pub id: KeyId,
    /// When it was added.
    pub created_at: SystemTime,
    /// True for the key that seals new links.
    pub active: bool,
    /// When it was retired (it seals no new link, keeps opening its own).
    pub retired_at: Option<SystemTime>,
}

/// Link keys over the store, and the ring in use.
pub struct LinkKeys {
    store: Arc<dyn Store>,
    ring: Arc<SharedKeyRing>,
    policy: Arc<Policy>,
    max_uri_bytes: usize,
    clock: Clock,
    seal_delay: Duration,
}

impl LinkKeys {
    /// Loads the ring from `store`, generating the first key if there is none; links are minted
    /// for the domains `policy` registers, with paths of at most `max_uri_bytes`
    /// (`limits.max_uri_bytes`, past which the edge answers 414).
    pub async fn load(
        store: Arc<dyn Store>,
        policy: Arc<Policy>,
        max_uri_bytes: usize,
        clock: Clock,
    ) -> Result<LinkKeys, StoreError> {
        let ring = Arc::new(SharedKeyRing::new(load_ring(store.as_ref(), &clock).await?));
        Ok(LinkKeys {
            store,
            ring,
            policy,
            max_uri_bytes,
            clock,
            seal_delay: Duration::ZERO,
        })
    }

    /// A new key seals links only once it is `delay` old (`cluster.key_seal_delay`); until then
    /// the newest older key does. Zero (the default, one node): at once.
    pub fn with_seal_delay(mut self, delay: Duration) -> LinkKeys {
        self.seal_delay = delay;
        self
    }

    /// The key that seals new links now.
    fn sealing(&self, ring: &KeyRing) -> KeyId {
        ring.sealing(self.clock.now(), self.seal_delay).id()
    }

    /// The ring in use, shared with the edge that opens tokens.
    pub fn ring(&self) -> Arc<SharedKeyRing> {
        self.ring.clone()
    }

    /// Every key in use, newest first.
    pub fn list(&self) -> Vec<KeyInfo> {
        let ring = self.ring.current();
        let active = self.sealing(&ring);
        ring.keys()
            .iter()
            .map(|k| KeyInfo {
                id: k.id(),
                created_at: k.created_at(),
                active: k.id() == active,
                retired_at: k.retired_at(),
            })
            .collect()
    }

    /// Adds a key, which seals new links from now on (in a cluster, once every node has it);
    /// older keys keep opening theirs.
    pub async fn rotate(&self) -> Result<KeyInfo, KeyError> {
        let now = self.clock.now();
        let id = self.store.add_link_key(rand::random(), now).await?;
        self.reload().await?;
        tracing::info!(key = id, "link key added; it seals new links from now on");
        Ok(KeyInfo {
            id: KeyId(id),
            created_at: now,
            active: self.sealing(&self.ring.current()) == KeyId(id),
            retired_at: None,
        })
    }

    /// Retires a key: it seals no new link from now on and keeps opening the links it sealed,
    /// until it is removed. Retiring the only key that may seal is refused (add one first with
    /// `keys rotate`); retiring a retired key changes nothing.
    pub async fn retire(&self, id: u16) -> Result<KeyInfo, KeyError> {
        let ring = self.ring.current();
        let Some(key) = ring.key(KeyId(id)) else {
            return Err(KeyError::NoSuchKey(id));
        };
        let another_seals = ring
            .keys()
            .iter()
            .any(|k| k.id() != KeyId(id) && !k.is_retired());
        if !key.is_retired() && !another_seals {
            return Err(KeyError::LastSealing(id));
        }
        if !self.store.retire_link_key(id, self.clock.now()).await? {
            return Err(KeyError::NoSuchKey(id));
        }
        self.reload().await?;
        let active = self.sealing(&self.ring.current());
        tracing::info!(
            key = id,
            sealing = active.0,
            "link key retired; it keeps opening its links"
        );
        self.list()
            .into_iter()
            .find(|k| k.id == KeyId(id))
            .ok_or(KeyError::NoSuchKey(id))
    }

    /// Removes a key: links it sealed stop opening at once. The sealing key cannot be removed.
    pub async fn remove(&self, id: u16) -> Result<(), KeyError> {
        if self.sealing(&self.ring.current()) == KeyId(id) {
            return Err(KeyError::Sealing(id));
        }
        if !self.store.remove_link_key(id).await? {
            return Err(KeyError::NoSuchKey(id));
        }
        self.reload().await?;
        tracing::warn!(key = id, "link key removed; links it sealed no longer open");
        Ok(())
    }

    /// Seals a link to `url` carrying `meta` for `domain`, minted now; returns the link,
    /// `https://<domain>/c/<token>`.
    pub fn mint(
        &self,
        domain: &Domain,
        url: &str,
        meta: Vec<(String, String)>,
    ) -> Result<String, MintError> {
        self.mint_in_message(domain, url, meta, None)
    }

    /// As [`LinkKeys::mint`], the token also carrying the message `context` when given.
    pub fn mint_in_message(
        &self,
        domain: &Domain,
        url: &str,
        meta: Vec<(String, String)>,
        context: Option<MessageContext>,
    ) -> Result<String, MintError> {
        self.registered(domain)?;
        let mut link = Link::new(url, meta, self.clock.unix_secs())?;
        if let Some(context) = context {
            link = link.with_context(context)?;
        }
        let ring = self.ring.current();
        let key = ring.sealing(self.clock.now(), self.seal_delay);
        self.located(
            domain,
            LINK_PATH,
            links::seal_with(key, domain.as_str(), &link),
        )
    }

    /// The open pixel of a message for `domain`, minted now: `https://<domain>/o/<token>`, the
    /// token carrying `context` (checked) and `meta` (checked as a link's).
    pub fn mint_pixel(
        &self,
        domain: &Domain,
        context: MessageContext,
        meta: Vec<(String, String)>,
    ) -> Result<String, MintError> {
        self.registered(domain)?;
        // The metadata is checked as a link's; the placeholder destination is not sealed.
        let meta = Link::new("https://pixel.invalid/", meta, 0)?.meta;
        context
            .validate()
            .map_err(|e| MintError::Link(LinkError::Context(e)))?;
        let ring = self.ring.current();
        let key = ring.sealing(self.clock.now(), self.seal_delay);
        let token =
            links::seal_pixel_with(key, domain.as_str(), context, meta, self.clock.unix_secs());
        self.located(domain, PIXEL_PATH, token)
    }

    fn registered(&self, domain: &Domain) -> Result<(), MintError> {
        if self.policy.is_registered(domain.as_str()) {
            Ok(())
        } else {
            Err(MintError::NotRegistered(domain.clone()))
        }
    }

    /// `https://<domain><path><token>`, unless longer than the edge opens.
    fn located(&self, domain: &Domain, path: &str, token: String) -> Result<String, MintError> {
        // The edge measures the path and query of the request; a link is only its path.
        let length = path.len() + token.len();
        if length > self.max_uri_bytes {
            return Err(MintError::TooLong {
                length,
                limit: self.max_uri_bytes,
            });
        }
        Ok(format!("https://{domain}{path}{token}"))
    }

    /// Seals a status page token for the registered `domain`, expiring at `expires_at` (Unix
    /// seconds), with the key that seals links now.
    pub fn seal_share(&self, domain: &Domain, expires_at: u64) -> Result<String, MintError> {
        if !self.policy.is_registered(domain.as_str()) {
            return Err(MintError::NotRegistered(domain.clone()));
        }
        let ring = self.ring.current();
        let key = ring.sealing(self.clock.now(), self.seal_delay);
        let share = links::share::Share {
            domain: domain.clone(),
            expires_at,
        };
        Ok(links::share::seal(key, &share))
    }

    /// Replaces the ring in use with the keys stored now (after a change here or on another
    /// node, or on SIGHUP); returns how many keys it holds.
    pub async fn reload(&self) -> Result<usize, StoreError> {
        let ring = load_ring(self.store.as_ref(), &self.clock).await?;
        let keys = ring.keys().len();
        self.ring.replace(ring);
        Ok(keys)
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
        .map(|k| {
            let key = LinkKey::new(KeyId(k.id), k.secret, k.created_at);
            match k.retired_at {
                Some(at) => key.retired(at),
                None => key,
            }
        })
        .collect();
    KeyRing::new(keys).map_err(|_| StoreError::Corrupt("link_keys (empty after insert)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, from_unix_secs};
    use crate::http::router::{Route, route};
    use crate::store::SqliteStore;

    async fn keys(clock: &ManualClock) -> LinkKeys {
        keys_with_limit(clock, 8192).await
    }

    async fn keys_with_limit(clock: &ManualClock, max_uri_bytes: usize) -> LinkKeys {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let policy = Arc::new(Policy::new([Domain::parse("a.example.com").unwrap()], None));
        LinkKeys::load(store, policy, max_uri_bytes, clock.clock())
            .await
            .unwrap()
    }

    /// The token of a minted link.
    fn token(link: &str) -> &str {
        link.rsplit_once('/').unwrap().1
    }

    #[tokio::test]
    async fn a_fresh_store_gets_a_first_key_and_rotation_moves_the_seal() {
        let clock = ManualClock::new(from_unix_secs(1_000));
        let keys = keys(&clock).await;
        let first = keys.list();
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].id, first[0].active), (KeyId(1), true));
        assert_eq!(first[0].created_at, from_unix_secs(1_000));
        clock.advance(Duration::from_secs(60));
        let added = keys.rotate().await.unwrap();
        assert_eq!(added.id, KeyId(2));
        assert_eq!(added.created_at, from_unix_secs(1_060));
        let listed = keys.list();
        assert_eq!(listed[0], added);
        assert_eq!((listed[1].id, listed[1].active), (KeyId(1), false));
        assert_eq!(keys.ring().current().active().id(), KeyId(2));
    }

    #[tokio::test]
    async fn with_a_seal_delay_a_new_key_opens_at_once_and_seals_once_it_is_old_enough() {
        let clock = ManualClock::new(from_unix_secs(1_000));
        let keys = keys(&clock).await.with_seal_delay(Duration::from_secs(65));
        let a = Domain::parse("a.example.com").unwrap();
        clock.advance(Duration::from_secs(100));
        let added = keys.rotate().await.unwrap();
        assert_eq!((added.id, added.active), (KeyId(2), false));
        // Minted now: sealed with key 1, which every node has.
        let link = keys.mint(&a, "https://example.com/", Vec::new()).unwrap();
        let opened_with = |ring: &KeyRing| links::open(ring, a.as_str(), token(&link)).is_ok();
        let only_first = KeyRing::new(vec![keys.ring().current().keys()[1].clone()]).unwrap();
        assert!(opened_with(&only_first), "a node without key 2 opens it");
        assert!(matches!(keys.remove(1).await, Err(KeyError::Sealing(1))));
        clock.advance(Duration::from_secs(65));
        let link = keys.mint(&a, "https://example.com/", Vec::new()).unwrap();
        assert!(links::open(&only_first, a.as_str(), token(&link)).is_err());
        assert!(links::open(&keys.ring().current(), a.as_str(), token(&link)).is_ok());
        assert_eq!(
            keys.list()[0],
            KeyInfo {
                id: KeyId(2),
                created_at: from_unix_secs(1_100),
                active: true,
                retired_at: None,
            }
        );
    }

    #[tokio::test]
    async fn the_sealing_key_stays_and_removed_keys_stop_opening_their_links() {
        let clock = ManualClock::new(from_unix_secs(1_000));
        let keys = keys(&clock).await;
        let a = Domain::parse("a.example.com").unwrap();
        let link = keys.mint(&a, "https://example.com/", Vec::new()).unwrap();
        assert!(matches!(keys.remove(1).await, Err(KeyError::Sealing(1))));
        keys.rotate().await.unwrap();
        assert!(links::open(&keys.ring().current(), a.as_str(), token(&link)).is_ok());
        keys.remove(1).await.unwrap();
        assert!(links::open(&keys.ring().current(), a.as_str(), token(&link)).is_err());
        assert!(matches!(keys.remove(1).await, Err(KeyError::NoSuchKey(1))));
    }

    #[tokio::test]
    async fn a_retired_key_stops_sealing_and_keeps_opening_but_the_last_sealing_one_stays() {
        let clock = ManualClock::new(from_unix_secs(1_000));
        let keys = keys(&clock).await;
        let a = Domain::parse("a.example.com").unwrap();
        assert!(matches!(
            keys.retire(1).await,
            Err(KeyError::LastSealing(1))
        ));
        assert!(matches!(keys.retire(9).await, Err(KeyError::NoSuchKey(9))));
        keys.rotate().await.unwrap();
        let by_2 = keys.mint(&a, "https://example.com/", Vec::new()).unwrap();
        clock.advance(Duration::from_secs(60));
        let retired = keys.retire(2).await.unwrap();
        assert_eq!(retired.retired_at, Some(from_unix_secs(1_060)));
        assert!(!retired.active);
        let ring = keys.ring().current();
        assert_eq!(
            ring.active().id(),
            KeyId(1),
            "the newest key not retired seals"
        );
        assert!(links::open(&ring, a.as_str(), token(&by_2)).is_ok());
        assert!(matches!(
            keys.retire(1).await,
            Err(KeyError::LastSealing(1))
        ));
        // Retiring again keeps the first time.
        clock.advance(Duration::from_secs(60));
        let again = keys.retire(2).await.unwrap();
        assert_eq!(again.retired_at, Some(from_unix_secs(1_060)));
    }

    #[tokio::test]
    async fn links_are_minted_now_and_only_for_registered_domains() {
        let clock = ManualClock::new(from_unix_secs(1_000));
        let keys = keys(&clock).await;
        let a = Domain::parse("a.example.com").unwrap();
        let minted = keys.mint(&a, "https://example.com/", Vec::new()).unwrap();
        let path = minted.strip_prefix("https://a.example.com").unwrap();
        assert_eq!(
            route(path),
            Route::Click(token(&minted)),
            "the edge routes it"
        );
        let link = links::open(&keys.ring().current(), a.as_str(), token(&minted)).unwrap();
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

    #[tokio::test]
    async fn a_pixel_is_minted_at_o_and_opens_only_as_a_pixel() {
        let clock = ManualClock::new(from_unix_secs(1_000));
        let keys = keys(&clock).await;
        let a = Domain::parse("a.example.com").unwrap();
        let context = MessageContext {
            message: "m-1".into(),
            sent_at: Some(900),
            ..MessageContext::default()
        };
        let meta = vec![("r".to_owned(), "7".to_owned())];
        let pixel = keys.mint_pixel(&a, context.clone(), meta.clone()).unwrap();
        let token = pixel.strip_prefix("https://a.example.com/o/").unwrap();
        let ring = keys.ring().current();
        let opened = links::open_pixel(&ring, a.as_str(), token).unwrap();
        assert_eq!(
            (opened.context, opened.meta, opened.minted_at),
            (Some(context.clone()), meta.clone(), 1_000)
        );
        assert!(links::open(&ring, a.as_str(), token).is_err());
        let b = Domain::parse("b.example.com").unwrap();
        assert!(matches!(
            keys.mint_pixel(&b, context, meta),
            Err(MintError::NotRegistered(_))
        ));
        assert!(matches!(
            keys.mint_pixel(&a, MessageContext::default(), Vec::new()),
            Err(MintError::Link(LinkError::Context(_)))
        ));
    }

    #[tokio::test]
    async fn no_link_is_minted_longer_than_the_edge_opens() {
        let clock = ManualClock::new(from_unix_secs(1_000));
        let a = Domain::parse("a.example.com").unwrap();
        let url = format!("https://example.com/{}", "x".repeat(300));
        let meta = vec![("campaign".to_owned(), "spring".to_owned())];
        let fits = keys(&clock).await.mint(&a, &url, meta.clone()).unwrap();
        // Tokens of one link all have one length: the path is exactly this long.
        let path = fits.len() - "https://a.example.com".len();

        let at_limit = keys_with_limit(&clock, path).await;
        assert!(at_limit.mint(&a, &url, meta.clone()).is_ok());
        let below = keys_with_limit(&clock, path - 1).await;
        let err = below.mint(&a, &url, meta).unwrap_err();
        assert!(
            matches!(err, MintError::TooLong { length, limit } if length == path && limit == path - 1),
            "{err:?}"
        );
        let message = err.to_string();
        for part in [
            &format!("{path} bytes"),
            &format!("limits.max_uri_bytes ({})", path - 1),
            "shorten the URL or the metadata",
        ] {
            assert!(message.contains(part), "{message}");
        }
    }
}
