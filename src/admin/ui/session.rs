//! The page's sessions: a random id in an HttpOnly, SameSite=Strict cookie (`Secure` when the
//! page is reached over HTTPS), valid while the edge's in-memory table holds it. Signing out
//! removes it from the table, so a copied cookie stops working too; a restart signs everyone
//! out. Also the check that a form was posted from the page itself (CSRF).
//!
//! The table keys sessions by the SHA-256 of their id, so a lookup compares digests, not
//! secrets, and the process never holds a usable id.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use aws_lc_rs::digest;
use axum::http::{HeaderMap, HeaderValue, header};

use crate::admin::Scope;

/// The session cookie's name.
const COOKIE: &str = "clickedge_ui";
/// How long a sign-in lasts.
const SESSION: Duration = Duration::from_secs(12 * 3600);
/// Most sessions held at once; past it the read-only session ending soonest is dropped, else,
/// for a sign-in with the admin token, the full one ending soonest. A read-only sign-in never
/// signs out a holder of the admin token: with only full sessions left, it is refused.
const MAX_SESSIONS: usize = 1024;

type Digest = [u8; 32];

/// The signed-in sessions of the page.
pub struct Sessions {
    /// Digest of each live session id: when it ends, and the scope of the token that started it.
    live: Mutex<HashMap<Digest, (SystemTime, Scope)>>,
    secure: bool,
}

impl Sessions {
    /// No session yet. `secure` marks the cookie `Secure`: browsers reach the page over HTTPS
    /// (`admin.secure_cookie`: through a proxy that terminates TLS).
    pub fn new(secure: bool) -> Sessions {
        Sessions {
            live: Mutex::new(HashMap::new()),
            secure,
        }
    }

    /// Starts a session at `now` with a token's `scope`; returns the `Set-Cookie` value carrying
    /// it, or `None` for a read-only sign-in when every session held is a full one (see
    /// [`MAX_SESSIONS`]).
    pub(super) fn start(&self, now: SystemTime, scope: Scope) -> Option<String> {
        let id: [u8; 32] = rand::random();
        let mut live = self.lock();
        live.retain(|_, (end, _)| *end > now);
        if live.len() >= MAX_SESSIONS {
            let soonest = live
                .iter()
                .filter(|(_, (_, s))| scope == Scope::Full || *s != Scope::Full)
                .min_by_key(|(_, (end, s))| (*s == Scope::Full, *end))
                .map(|(d, _)| *d)?;
            live.remove(&soonest);
        }
        live.insert(digest_of(&id), (now + SESSION, scope));
        drop(live);
        Some(self.cookie(&hex(&id), SESSION.as_secs()))
    }

    /// The scope of the session live at `now` the request carries, if any (the widest, should
    /// it carry several).
    pub(super) fn scope(&self, headers: &HeaderMap, now: SystemTime) -> Option<Scope> {
        let live = self.lock();
        presented(headers)
            .filter_map(|d| live.get(&d).filter(|(end, _)| *end > now).map(|(_, s)| *s))
            .min_by_key(|s| *s != Scope::Full)
    }

    /// True if the request carries a session that is live at `now`.
    #[cfg(test)]
    pub(super) fn is_live(&self, headers: &HeaderMap, now: SystemTime) -> bool {
        self.scope(headers, now).is_some()
    }

    /// Ends the sessions the request carries; returns the `Set-Cookie` value clearing the cookie.
    pub(super) fn end(&self, headers: &HeaderMap) -> String {
        let mut live = self.lock();
        for d in presented(headers) {
            live.remove(&d);
        }
        drop(live);
        self.cookie("", 0)
    }

    fn cookie(&self, value: &str, max_age: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Digest, (SystemTime, Scope)>> {
        // A panic while the lock was held leaves at worst a session too many or too few: the
        // table has no invariant to break, so a poisoned lock is used as it is.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Digests of the session ids in the request's cookies (well-formed ones only).
fn presented(headers: &HeaderMap) -> impl Iterator<Item = Digest> + '_ {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .filter_map(unhex)
        .filter(|id| id.len() == 32)
        .map(|id| digest_of(&id))
}

fn digest_of(id: &[u8]) -> Digest {
    let mut out = [0; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, id).as_ref());
    out
}

/// False for a request another site's page made (CSRF), as far as the browser says.
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
    let get = |h| headers.get(h).and_then(|v: &HeaderValue| v.to_str().ok());
    // Browsers that send Sec-Fetch-Site say it outright (and may send `Origin: null`).
    if let Some(site) = get("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    match (get("origin"), get("host")) {
        (Some(origin), Some(host)) => {
            origin == format!("http://{host}") || origin == format!("https://{host}")
        }
        (Some(_), None) => false,
        (None, _) => true,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests;
