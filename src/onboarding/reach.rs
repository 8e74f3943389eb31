//! HTTP reachability: can the CA (and a browser) reach this edge through the name?
//!
//! A check run makes a random nonce, which the edge's plain HTTP listener serves at
//! `/.well-known/clickedge-check/<nonce>` while the run lasts ([`Nonces`]), and fetches
//! `http://<name>:<http_port>/.well-known/clickedge-check/<nonce>` through each address the
//! name resolved to (from the run's own [`DnsView`], not the system resolver). Getting the nonce
//! back means the edge reached itself; anything else names the address that went elsewhere.
//!
//! NOTE: the fetch only runs once the name points at the edge (`points-to-edge` passes), so
//! the edge never connects to an address a customer's DNS chose freely (no SSRF through a
//! domain's records).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::dns::DnsView;
use super::{Check, CheckId, CheckStatus, Settings};
use crate::Domain;

/// URL path prefix the edge answers nonces under.
pub const PATH_PREFIX: &str = "/.well-known/clickedge-check/";
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// A nonce stops being answered after this long even if its run never ended.
const NONCE_TTL: Duration = Duration::from_secs(60);
/// Addresses fetched through, at most.
const MAX_ADDRESSES: usize = 4;
/// Bytes of a response read, at most (a nonce is 32).
const MAX_BODY_BYTES: usize = 256;

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

/// What one fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The edge answered with the nonce.
    Reached,
    /// Something answered, but not this edge.
    Elsewhere(String),
    /// Nothing answered.
    Unreachable(String),
}

/// The reachability check, or none when it must not run: the edge does not know its own
/// addresses (not configured), or the name does not point at the edge yet (the DNS checks
/// already say what to fix).
pub async fn check(view: &DnsView, done: &[Check], s: &Settings, nonces: &Nonces) -> Option<Check> {
    let points = done.iter().find(|c| c.id == CheckId::PointsToEdge)?;
    if !s.is_configured() || points.status != CheckStatus::Pass {
        return None;
    }
    let addrs: Vec<IpAddr> = view.addresses().into_iter().take(MAX_ADDRESSES).collect();
    if addrs.is_empty() {
        return None;
    }
    let nonce = nonces.issue();
    // All addresses at once: a run takes one fetch timeout at most.
    let mut fetches = tokio::task::JoinSet::new();
    for (i, ip) in addrs.iter().copied().enumerate() {
        let (name, port, nonce) = (view.name.clone(), s.http_port, nonce.as_str().to_owned());
        fetches.spawn(async move { (i, ip, fetch(&name, ip, port, &nonce).await) });
    }
    let mut results = Vec::new();
    while let Some(done) = fetches.join_next().await {
        if let Ok(r) = done {
            results.push(r);
        }
    }
    drop(nonce);
    // In the order DNS gave the addresses, so the failure named is the same every run.
    results.sort_by_key(|(i, _, _)| *i);
    let results: Vec<(IpAddr, Outcome)> = results.into_iter().map(|(_, ip, o)| (ip, o)).collect();
    Some(judge(&view.name, s.http_port, &results, s.http_blocks))
}

fn judge(name: &Domain, port: u16, results: &[(IpAddr, Outcome)], blocking: bool) -> Check {
    let url = base_url(name, port);
    let reached: Vec<String> = results
        .iter()
        .filter(|(_, o)| *o == Outcome::Reached)
        .map(|(ip, _)| ip.to_string())
        .collect();
    let failure = results.iter().find_map(|(ip, o)| match o {
        Outcome::Reached => None,
        Outcome::Elsewhere(what) => Some((*ip, true, what)),
        Outcome::Unreachable(why) => Some((*ip, false, why)),
    });
    let Some((ip, answered, detail)) = failure else {
        return Check::pass(
            CheckId::HttpReachable,
            format!(
                "the edge reached itself at {url} through {}",
                reached.join(", ")
            ),
        );
    };
    let at = SocketAddr::new(ip, port);
    let (message, fix) = if answered {
        (
            format!(
                "{url} through {at} answered {detail}, but not as this edge: another server answers there"
            ),
            format!(
                "Send port {port} of {ip} to the edge's HTTP listener. If a proxy or CDN sits in front of {name} (for example Cloudflare's orange cloud), set it to DNS only until the certificate is issued."
            ),
        )
    } else {
        (
            format!("{url} through {at}: {detail}"),
            format!(
                "Port {port} of {ip} must reach the edge: open it in the firewall, security group or load balancer in front of the edge. The CA validates HTTP-01 certificates on port 80."
            ),
        )
    };
    Check::fail(CheckId::HttpReachable, message, fix, blocking)
}

fn base_url(name: &Domain, port: u16) -> String {
    if port == 80 {
        format!("http://{name}/")
    } else {
        format!("http://{name}:{port}/")
    }
}

async fn fetch(name: &Domain, ip: IpAddr, port: u16, nonce: &str) -> Outcome {
    let client = match reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(FETCH_TIMEOUT)
        .resolve(name.as_str(), SocketAddr::new(ip, port))
        .build()
    {
        Ok(c) => c,
        Err(e) => return Outcome::Unreachable(format!("building the HTTP client: {e}")),
    };
    let url = format!("http://{name}:{port}{PATH_PREFIX}{nonce}");
    let mut res = match client.get(&url).send().await {
        Ok(res) => res,
        Err(e) if e.is_timeout() => {
            return Outcome::Unreachable(format!("no answer within {}s", FETCH_TIMEOUT.as_secs()));
        }
        Err(e) => return Outcome::Unreachable(innermost(&e)),
    };
    let status = res.status();
    let mut body = Vec::new();
    while body.len() < MAX_BODY_BYTES {
        match res.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => return Outcome::Unreachable(innermost(&e)),
        }
    }
    if status.is_success() && body == nonce.as_bytes() {
        Outcome::Reached
    } else {
        Outcome::Elsewhere(format!("HTTP {}", status.as_u16()))
    }
}

/// The most specific cause of a client error ("Connection refused (os error 111)").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
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

    #[test]
    fn a_failure_names_the_address_and_says_what_to_open() {
        let name = Domain::parse("links.example.com").unwrap();
        let ip: IpAddr = "203.0.113.10".parse().unwrap();
        let c = judge(
            &name,
            80,
            &[(
                ip,
                Outcome::Unreachable("Connection refused (os error 111)".into()),
            )],
            true,
        );
        assert_eq!(c.status, CheckStatus::Fail);
        assert!(c.blocking);
        assert_eq!(
            c.message,
            "http://links.example.com/ through 203.0.113.10:80: Connection refused (os error 111)"
        );
        assert!(c.fix.unwrap().contains("Port 80 of 203.0.113.10"));
        let c = judge(
            &name,
            8080,
            &[(ip, Outcome::Elsewhere("HTTP 404".into()))],
            false,
        );
        assert!(
            c.message
                .contains("answered HTTP 404, but not as this edge"),
            "{}",
            c.message
        );
        assert!(!c.blocking);
        let c = judge(&name, 8080, &[(ip, Outcome::Reached)], false);
        assert_eq!(c.status, CheckStatus::Pass);
        assert!(
            c.message.contains("http://links.example.com:8080/"),
            "{}",
            c.message
        );
    }
}
