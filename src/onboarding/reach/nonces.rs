//! The one-time nonces of the reachability check runs in progress, which the edge's plain HTTP
//! listener answers at `/.well-known/clickedge-check/<nonce>`. A nonce lives while its run lasts
//! (and [`NONCE_TTL`] at most); looking one up is one map lookup, without I/O.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A nonce stops being answered after this long even if its run never ended.
const NONCE_TTL: Duration = Duration::from_secs(60);

/// Nonces of the check runs in progress, answered by the edge's HTTP listener.
#[derive(Debug, Default)]
pub struct Nonces {
    live: Mutex<HashMap<String, Instant>>,
}

impl Nonces {
    /// A new nonce, answered until the guard is dropped (or [`NONCE_TTL`] passes).
    pub fn issue(&self) -> NonceGuard<'_> {
        let bytes: [u8; 16] = rand::random();
        let nonce: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut live = self.lock();
        live.retain(|_, expires| *expires > now);
        live.insert(nonce.clone(), now + NONCE_TTL);
        NonceGuard {
            nonces: self,
            nonce,
        }
    }

    /// True if `nonce` belongs to a run in progress. One map lookup; no I/O.
    pub fn answers(&self, nonce: &str) -> bool {
        self.lock()
            .get(nonce)
            .is_some_and(|expires| *expires > Instant::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // Held only for map updates, never across `.await`.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A live nonce; withdrawn on drop.
pub struct NonceGuard<'a> {
    nonces: &'a Nonces,
    nonce: String,
}

impl NonceGuard<'_> {
    /// The nonce.
    pub fn as_str(&self) -> &str {
        &self.nonce
    }
}

impl Drop for NonceGuard<'_> {
    fn drop(&mut self) {
        self.nonces.lock().remove(&self.nonce);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
