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
use crate::links::{
    self, KeyId, KeyRing, LINK_PATH, Link, LinkError, LinkKey, MessageContext, PIXEL_PATH,
    SharedKeyRing,
};
use crate::policy::Policy;
use crate::store::{KeyChange, Store, StoreError};

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
    /// Retiring or removing the key that seals now would hand sealing to a key made too
    /// recently for every node to have it (2 × `cluster.scan_interval` + 5 s): links minted meanwhile
    /// would not open everywhere. The key seals until then, and can go after that.
    #[error(
        "key {id} seals new links until key {next} is {} old ({}), by when every node has key \
         {next}; {then} key {id} after that",
        humantime::format_duration(*delay),
        crate::clock::rfc3339(*ready_at)
    )]
    NextNotReady {
        /// The key to retire or remove.
        id: u16,
        /// What was asked, said as what to do then: `retire` or `remove`.
        then: &'static str,
        /// The key that would seal instead.
        next: u16,
        /// 2 × `cluster.scan_interval` + 5 s.
        delay: Duration,
        /// When `next` is that old.
        ready_at: SystemTime,
    },
    /// Removing a key retired too recently for every node to have seen it retired
    /// (2 × `cluster.scan_interval` + 5 s): a node that has not may still seal new links with it, which
    /// would then open nowhere. It can go after that.
    #[error(
        "key {id} was retired at {}: a node that has not seen that yet may still seal new links \
         with it; remove key {id} after {} (2 × cluster.scan_interval + 5 s: {})",
        crate::clock::rfc3339(*retired_at),
        crate::clock::rfc3339(*removable_at),
        humantime::format_duration(*delay)
    )]
    RecentlyRetired {
        /// The key to remove.
        id: u16,
        /// When it was retired.
        retired_at: SystemTime,
        /// 2 × `cluster.scan_interval` + 5 s.
        delay: Duration,
        /// When every node has seen the retirement.
        removable_at: SystemTime,
    },
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
    /// The destination is a link or pixel of this edge: a link to it would redirect twice and
    /// log each click twice.
    #[error(
        "url {0:?} is already a link of this edge (its host is a domain of the edge and its path \
         one of the edge's routes, /c/ or /o/); mint a link to the destination it leads to"
    )]
    EdgeLink(String),
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
    /// When a key that does not seal yet starts to: in a cluster a new key seals only once it is
    /// the seal delay old. None for the key that seals, a retired key, and one old enough.
    pub seals_from: Option<SystemTime>,
}

/// Link keys over the store, and the ring in use.
pub struct LinkKeys {
    store: Arc<dyn Store>,
    ring: Arc<SharedKeyRing>,
    policy: Arc<Policy>,
    max_uri_bytes: usize,
    clock: Clock,
    seal_delay: Duration,
    /// Held by a rotation, retirement or removal from its checks to its reload: two at once
    /// would each check against a ring without the other's change (and could retire every key).
    changing: tokio::sync::Mutex<()>,
    /// Held by a reload from its read of the store to the ring's replacement, so that reloads
    /// install rings in the order they read them (an older read never replaces a newer one).
    reloading: tokio::sync::Mutex<()>,
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
            changing: tokio::sync::Mutex::new(()),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// A new key seals links only once it is `delay` old (2 × `cluster.scan_interval` + 5 s); until then
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
        let now = self.clock.now();
        ring.keys()
            .iter()
            .map(|k| {
                let ready_at = k.created_at() + self.seal_delay;
                let waits = k.id() != active && !k.is_retired() && ready_at > now;
                KeyInfo {
                    id: k.id(),
                    created_at: k.created_at(),
                    active: k.id() == active,
                    retired_at: k.retired_at(),
                    seals_from: waits.then_some(ready_at),
                }
            })
            .collect()
    }

    /// Adds a key, which seals new links from now on (in a cluster, once every node has it:
    /// `seals_from` says when); older keys keep opening theirs.
    pub async fn rotate(&self) -> Result<KeyInfo, KeyError> {
        let _changing = self.changing.lock().await;
        let now = self.clock.now();
        let id = self.store.add_link_key(rand::random(), now).await?;
        self.reload().await?;
        let active = self.sealing(&self.ring.current()) == KeyId(id);
        let seals_from = (!active).then_some(now + self.seal_delay);
        match seals_from {
            None => tracing::info!(key = id, "link key added; it seals new links from now on"),
            Some(at) => tracing::info!(
                key = id,
                seals_from = %crate::clock::rfc3339(at),
                "link key added; it opens links now and seals new links once every node has it"
            ),
        }
        Ok(KeyInfo {
            id: KeyId(id),
            created_at: now,
            active,
            retired_at: None,
            seals_from,
        })
    }

    /// Retires a key: it seals no new link from now on and keeps opening the links it sealed,
    /// until it is removed. Retiring the only key that may seal is refused (add one first with
    /// `keys rotate`), and so is retiring the key that seals while the next is younger than
    /// the seal delay (it would seal before every node has it); retiring a retired key changes
    /// nothing.
    pub async fn retire(&self, id: u16) -> Result<KeyInfo, KeyError> {
        let (_changing, ring) = self.changing_ring().await?;
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
        let now = self.clock.now();
        if !key.is_retired()
            && self.sealing(&ring) == KeyId(id)
            && let Some(next) = ring
                .keys()
                .iter()
                .filter(|k| k.id() != KeyId(id) && !k.is_retired())
                .min_by_key(|k| k.created_at())
            && next.created_at() + self.seal_delay > now
        {
            return Err(KeyError::NextNotReady {
                id,
                then: "retire",
                next: next.id().0,
                delay: self.seal_delay,
                ready_at: next.created_at() + self.seal_delay,
            });
        }
        match self.store.retire_link_key(id, self.clock.now()).await? {
            KeyChange::Done => {}
            KeyChange::NoSuchKey => return Err(KeyError::NoSuchKey(id)),
            // Another node retired or removed the other keys meanwhile.
            KeyChange::LastNotRetired => return Err(KeyError::LastSealing(id)),
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

    /// Removes a key: links it sealed stop opening at once. The sealing key cannot be removed;
    /// when a newer key is only waiting out the seal delay, the refusal says when it takes over
    /// (adding yet another key, as [`KeyError::Sealing`] asks, would not help). Nor can a key
    /// retired less than the seal delay ago: a node that has not seen it retired may still seal
    /// with it.
    pub async fn remove(&self, id: u16) -> Result<(), KeyError> {
        let (_changing, ring) = self.changing_ring().await?;
        if let Some(retired_at) = ring.key(KeyId(id)).and_then(|k| k.retired_at())
            && retired_at + self.seal_delay > self.clock.now()
        {
            return Err(KeyError::RecentlyRetired {
                id,
                retired_at,
                delay: self.seal_delay,
                removable_at: retired_at + self.seal_delay,
            });
        }
        if self.sealing(&ring) == KeyId(id) {
            let now = self.clock.now();
            let waiting = ring
                .keys()
                .iter()
                .filter(|k| k.id() != KeyId(id) && !k.is_retired())
                .filter(|k| k.created_at() + self.seal_delay > now)
                .min_by_key(|k| k.created_at());
            return Err(match waiting {
                Some(next) => KeyError::NextNotReady {
                    id,
                    then: "remove",
                    next: next.id().0,
                    delay: self.seal_delay,
                    ready_at: next.created_at() + self.seal_delay,
                },
                None => KeyError::Sealing(id),
            });
        }
        match self.store.remove_link_key(id).await? {
            KeyChange::Done => {}
            KeyChange::NoSuchKey => return Err(KeyError::NoSuchKey(id)),
            KeyChange::LastNotRetired => return Err(KeyError::Sealing(id)),
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
        if links::edge_route(&link.url).is_some_and(|edge| self.is_edge_domain(&edge.host)) {
            return Err(MintError::EdgeLink(link.url));
        }
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

    /// The link or pixel `url` is, opened as the edge opens it on `domain`: `None` when its host
    /// is not `domain`, its path is not one of the edge's token routes, or its token does not
    /// open there (another domain's, a removed key's, not a token).
    pub fn open_own(&self, domain: &Domain, url: &str) -> Option<(links::EdgeRoute, Link)> {
        let edge = links::edge_route(url)?;
        if edge.host != domain.as_str() {
            return None;
        }
        let ring = self.ring.current();
        let opened = match edge.route {
            links::EdgeRoute::Link => links::open(&ring, domain.as_str(), &edge.token),
            links::EdgeRoute::Pixel => links::open_pixel(&ring, domain.as_str(), &edge.token),
        };
        opened.ok().map(|link| (edge.route, link))
    }

    /// True when `host` is one of the edge's domains (registered): its `/c/` and `/o/` URLs are
    /// the edge's own links and pixels.
    pub fn is_edge_domain(&self, host: &str) -> bool {
        self.policy.is_registered(host)
    }

    /// `MintError::NotRegistered` unless `domain` is registered: what minting for it would say.
    pub fn registered(&self, domain: &Domain) -> Result<(), MintError> {
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

    /// Seals a status page token for `domain` as the store holds it (registered at
    /// `registered_at`, Unix seconds), expiring at `expires_at` (Unix seconds), with the key that
    /// seals links now. Not checked against the names served here: in a cluster, a domain
    /// another node registered a moment ago is in the store before it is served here.
    pub fn seal_share(&self, domain: &Domain, registered_at: u64, expires_at: u64) -> String {
        let ring = self.ring.current();
        let key = ring.sealing(self.clock.now(), self.seal_delay);
        let share = links::share::Share {
            domain: domain.clone(),
            expires_at,
            registered_at: Some(registered_at),
        };
        links::share::seal(key, &share)
    }

    /// Takes the right to change the keys, and the ring as stored now (another node's change
    /// included) to check the change against.
    async fn changing_ring(
        &self,
    ) -> Result<(tokio::sync::MutexGuard<'_, ()>, Arc<KeyRing>), StoreError> {
        let changing = self.changing.lock().await;
        self.reload().await?;
        Ok((changing, self.ring.current()))
    }

    /// Replaces the ring in use with the keys stored now (after a change here or on another
    /// node, or on SIGHUP); returns how many keys it holds.
    pub async fn reload(&self) -> Result<usize, StoreError> {
        let _reloading = self.reloading.lock().await;
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
mod tests;
