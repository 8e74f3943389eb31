//! The link key ring: every key that may open tokens, and the one that seals new ones.
//!
//! Rotation adds a key with a higher id, which becomes the sealing key; older keys keep opening
//! the links they sealed until they are removed from the ring, which stops those links at once.
//! A retired key stops sealing and keeps opening: the newest key not retired seals.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Identifies a key inside a token (2 bytes on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct KeyId(pub u16);

/// One key: its id, its secret, when it was created and whether it is retired.
#[derive(Clone)]
pub struct LinkKey {
    id: KeyId,
    secret: [u8; 32],
    created_at: SystemTime,
    retired_at: Option<SystemTime>,
}

impl LinkKey {
    /// A key from its 32 secret bytes.
    pub fn new(id: KeyId, secret: [u8; 32], created_at: SystemTime) -> LinkKey {
        LinkKey {
            id,
            secret,
            created_at,
            retired_at: None,
        }
    }

    /// The same key, retired at `at`: it opens its links and seals no new one.
    pub fn retired(self, at: SystemTime) -> LinkKey {
        LinkKey {
            retired_at: Some(at),
            ..self
        }
    }

    /// When the key was retired, if it was.
    pub fn retired_at(&self) -> Option<SystemTime> {
        self.retired_at
    }

    /// Whether the key is retired.
    pub fn is_retired(&self) -> bool {
        self.retired_at.is_some()
    }

    /// The key id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// When the key was created.
    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }

    pub(super) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
}

impl fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // NOTE: the secret is deliberately not printed.
        f.debug_struct("LinkKey")
            .field("id", &self.id)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// All keys that open tokens; the one with the highest id that is not retired seals.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: Vec<LinkKey>,
    /// Index in `keys` of the sealing key.
    sealing: usize,
}

/// A key ring needs at least one key.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the link key ring is empty")]
pub struct EmptyKeyRing;

impl KeyRing {
    /// A ring of `keys`; the highest id not retired becomes the sealing key. Should every key be
    /// retired (the service refuses to retire the last sealing one, but another node's store may
    /// say so), the highest id seals: links keep being minted rather than none.
    pub fn new(mut keys: Vec<LinkKey>) -> Result<KeyRing, EmptyKeyRing> {
        if keys.is_empty() {
            return Err(EmptyKeyRing);
        }
        keys.sort_by_key(|k| std::cmp::Reverse(k.id));
        keys.dedup_by_key(|k| k.id);
        let sealing = keys.iter().position(|k| !k.is_retired()).unwrap_or(0);
        Ok(KeyRing { keys, sealing })
    }

    /// The sealing key.
    pub fn active(&self) -> &LinkKey {
        // `new` refuses an empty ring and `sealing` is an index into it.
        &self.keys[self.sealing]
    }

    /// The key that seals at `now` when a new key must first be `delay` old (in a cluster, the
    /// time every node takes to open it): the newest key not retired that is that old, else the
    /// oldest key not retired (the one most likely to have reached every node), else
    /// [`KeyRing::active`]. With no delay, [`KeyRing::active`].
    pub fn sealing(&self, now: SystemTime, delay: Duration) -> &LinkKey {
        let mut unretired = self.keys.iter().filter(|k| !k.is_retired());
        unretired
            .clone()
            .find(|k| k.created_at + delay <= now)
            .or_else(|| unretired.next_back())
            .unwrap_or_else(|| self.active())
    }

    /// The key with `id`, if it is in the ring. A ring holds a handful of keys; a scan is faster
    /// than a map.
    pub fn key(&self, id: KeyId) -> Option<&LinkKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// All keys, newest first.
    pub fn keys(&self) -> &[LinkKey] {
        &self.keys
    }
}

/// The key ring in use, swapped whole when keys are added or removed. Readers take a cheap
/// `Arc` clone; a lock is held only for that clone, never across an `.await`.
#[derive(Debug)]
pub struct SharedKeyRing(RwLock<Arc<KeyRing>>);

impl SharedKeyRing {
    /// Starts with `ring`.
    pub fn new(ring: KeyRing) -> SharedKeyRing {
        SharedKeyRing(RwLock::new(Arc::new(ring)))
    }

    /// The ring in use now.
    pub fn current(&self) -> Arc<KeyRing> {
        // A panic cannot happen while the lock is held (only an Arc clone or swap), so a
        // poisoned lock still holds a consistent ring.
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the ring; tokens are opened with the new one from the next request on.
    pub fn replace(&self, ring: KeyRing) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::{Link, open, seal};

    #[test]
    fn rotation_keeps_old_links_and_removal_stops_them() {
        let k1 = LinkKey::new(KeyId(1), [1; 32], SystemTime::UNIX_EPOCH);
        let k2 = LinkKey::new(KeyId(2), [2; 32], SystemTime::UNIX_EPOCH);
        let link = Link::new("https://example.com/", vec![], 5).unwrap();
        let old = KeyRing::new(vec![k1.clone()]).unwrap();
        let token = seal(&old, "a.example.com", &link);

        let rotated = KeyRing::new(vec![k1, k2.clone()]).unwrap();
        assert_eq!(rotated.active().id(), KeyId(2));
        assert_eq!(open(&rotated, "a.example.com", &token), Ok(link.clone()));
        let fresh = seal(&rotated, "a.example.com", &link);
        assert_eq!(open(&rotated, "a.example.com", &fresh), Ok(link.clone()));

        let removed = KeyRing::new(vec![k2]).unwrap();
        assert!(open(&removed, "a.example.com", &token).is_err());
        assert_eq!(open(&removed, "a.example.com", &fresh), Ok(link));
    }

    #[test]
    fn a_retired_key_keeps_opening_and_the_newest_unretired_key_seals() {
        let k1 = LinkKey::new(KeyId(1), [1; 32], SystemTime::UNIX_EPOCH);
        let k2 = LinkKey::new(KeyId(2), [2; 32], SystemTime::UNIX_EPOCH);
        let link = Link::new("https://example.com/", vec![], 5).unwrap();
        let by_2 = seal(
            &KeyRing::new(vec![k2.clone()]).unwrap(),
            "a.example.com",
            &link,
        );

        let ring =
            KeyRing::new(vec![k1.clone(), k2.clone().retired(SystemTime::UNIX_EPOCH)]).unwrap();
        assert_eq!(ring.active().id(), KeyId(1));
        assert_eq!(open(&ring, "a.example.com", &by_2), Ok(link.clone()));
        let fresh = seal(&ring, "a.example.com", &link);
        let only_1 = KeyRing::new(vec![k1.clone()]).unwrap();
        assert_eq!(open(&only_1, "a.example.com", &fresh), Ok(link));

        let all_retired = KeyRing::new(vec![
            k1.retired(SystemTime::UNIX_EPOCH),
            k2.retired(SystemTime::UNIX_EPOCH),
        ])
        .unwrap();
        assert_eq!(all_retired.active().id(), KeyId(2));
    }

    #[test]
    fn debug_hides_the_secret() {
        let k = LinkKey::new(KeyId(3), [0xAB; 32], SystemTime::UNIX_EPOCH);
        assert!(!format!("{k:?}").to_lowercase().contains("ab, "));
    }
}
