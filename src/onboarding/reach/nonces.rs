//! The one-time nonces of the reachability check runs in progress, which the edge's plain HTTP
//! listener answers at `/.well-known/clickedge-check/<nonce>`. Looking one up is one map lookup
//! or one AEAD open, without I/O.
//!
//! A single node keeps its nonces in memory while their run lasts ([`NONCE_TTL`] at most). In a
//! cluster the fetch may land on any node behind the name's addresses, so nonces are sealed
//! with the cluster's seal key instead: any node opens one and answers it until it expires,
//! and only an edge holding that key can (a stranger's server answering there still fails).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::clock::Clock;
use crate::seal::SealKey;

/// A nonce stops being answered after this long even if its run never ended.
const NONCE_TTL: Duration = Duration::from_secs(60);
/// How far another node's clock may run ahead of the issuing node's for a sealed nonce.
const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// What a sealed nonce is bound to: nothing else the seal key seals opens as one.
const BINDING: &str = "check-nonce";

/// Nonces of the check runs in progress, answered by the edge's HTTP listener.
#[derive(Debug, Default)]
pub struct Nonces {
    live: Mutex<HashMap<String, Instant>>,
    /// The cluster's seal key, and the clock their expiry is read on: nonces any node answers.
    sealed: Option<(Arc<SealKey>, Clock)>,
}

impl Nonces {
    /// Nonces sealed with the cluster's `key`, answered by every node holding it until they
    /// expire by `clock`.
    pub fn sealed(key: Arc<SealKey>, clock: Clock) -> Nonces {
        Nonces {
            live: Mutex::default(),
            sealed: Some((key, clock)),
        }
    }

    /// A new nonce, answered until the guard is dropped (or [`NONCE_TTL`] passes); sealed, until
    /// [`NONCE_TTL`] passes.
    pub fn issue(&self) -> NonceGuard<'_> {
        if let Some((key, clock)) = &self.sealed {
            let expires = unix_secs(clock.now() + NONCE_TTL);
            // Sealing fails only if the AEAD refuses its input, which 8 bytes never make it do;
            // a nonce no node answers then fails the check rather than the run.
            let nonce = key
                .seal(BINDING, &expires.to_be_bytes())
                .map(|sealed| URL_SAFE_NO_PAD.encode(sealed))
                .unwrap_or_default();
            return NonceGuard {
                nonces: self,
                nonce,
                kept: false,
            };
        }
        let bytes: [u8; 16] = rand::random();
        let nonce: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut live = self.lock();
        live.retain(|_, expires| *expires > now);
        live.insert(nonce.clone(), now + NONCE_TTL);
        NonceGuard {
            nonces: self,
            nonce,
            kept: true,
        }
    }

    /// True if `nonce` belongs to a run in progress (sealed: of any node, and unexpired). One map
    /// lookup or one AEAD open; no I/O.
    pub fn answers(&self, nonce: &str) -> bool {
        match &self.sealed {
            Some((key, clock)) => opens(key, nonce, clock.now()),
            None => self
                .lock()
                .get(nonce)
                .is_some_and(|expires| *expires > Instant::now()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // Held only for map updates, never across `.await`.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether `nonce` is one `key` sealed that has not expired at `now` (give or take
/// [`CLOCK_SKEW`]).
fn opens(key: &SealKey, nonce: &str, now: SystemTime) -> bool {
    // A sealed nonce is 37 bytes (format, 12-byte nonce, 8 bytes, tag): 50 characters.
    if nonce.len() > 64 {
        return false;
    }
    let Ok(sealed) = URL_SAFE_NO_PAD.decode(nonce) else {
        return false;
    };
    let Ok(plain) = key.open(BINDING, &sealed) else {
        return false;
    };
    let Ok(expires) = <[u8; 8]>::try_from(plain.as_slice()) else {
        return false;
    };
    unix_secs(now) < u64::from_be_bytes(expires).saturating_add(CLOCK_SKEW.as_secs())
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A live nonce; withdrawn on drop (a sealed one lives on until it expires).
pub struct NonceGuard<'a> {
    nonces: &'a Nonces,
    nonce: String,
    kept: bool,
}

impl NonceGuard<'_> {
    /// The nonce.
    pub fn as_str(&self) -> &str {
        &self.nonce
    }
}

impl Drop for NonceGuard<'_> {
    fn drop(&mut self) {
        if self.kept {
            self.nonces.lock().remove(&self.nonce);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn nonces_are_answered_only_while_their_run_lasts() {
        let nonces = Nonces::default();
        let guard = nonces.issue();
        let n = guard.as_str().to_owned();
        assert_eq!(n.len(), 32);
        assert!(nonces.answers(&n));
        assert!(!nonces.answers("0123"));
        drop(guard);
        assert!(!nonces.answers(&n));
    }

    #[test]
    fn a_sealed_nonce_is_answered_by_every_node_holding_the_key_until_it_expires() {
        // Two nodes load the same key; a third cluster has its own.
        let text = "5e".repeat(32);
        let key = SealKey::generate();
        let clock = ManualClock::starting_now();
        let sealed = |key| Nonces::sealed(Arc::new(key), clock.clock());
        let (a, b) = (
            sealed(SealKey::from_hex(&text, "a").unwrap()),
            sealed(SealKey::from_hex(&text, "b").unwrap()),
        );
        let guard = a.issue();
        let n = guard.as_str().to_owned();
        assert!(b.answers(&n), "another node with the key");
        assert!(a.answers(&n));
        drop(guard);
        assert!(b.answers(&n), "a sealed nonce outlives its run");
        assert!(!sealed(key).answers(&n), "another cluster's key");
        assert!(!Nonces::default().answers(&n), "a node without the key");
        let mut tampered = n.clone().into_bytes();
        tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
        assert!(!b.answers(std::str::from_utf8(&tampered).unwrap()));
        assert!(!b.answers("0123456789abcdef0123456789abcdef"));

        clock.advance(NONCE_TTL + CLOCK_SKEW - Duration::from_secs(1));
        assert!(b.answers(&n), "within the clock skew allowed");
        clock.advance(Duration::from_secs(1));
        assert!(!b.answers(&n), "expired");
        // Sealed for another purpose under the same key: not a nonce.
        let key = SealKey::from_hex(&text, "c").unwrap();
        let other = URL_SAFE_NO_PAD.encode(key.seal("kv:x", &u64::MAX.to_be_bytes()).unwrap());
        assert!(!opens(&key, &other, clock.clock().now()));
    }
}
