//! HTTP reachability: can the CA (and a browser) reach this edge through the name?
//!
//! A check run makes a random nonce, which the edge's plain HTTP listener serves at
//! `/.well-known/clickedge-check/<nonce>` while the run lasts ([`Nonces`]), and fetches
//! `http://<name>:<http_port>/.well-known/clickedge-check/<nonce>` through the edge's own
//! addresses that the name leads to. Getting the nonce back means the edge reached itself.
//!
//! NOTE: security. The edge connects only to its own addresses, so a customer's DNS cannot
//! point it anywhere else (no SSRF, no port scan repeated by the periodic re-check):
//! - the check runs only once `points-to-edge` passes;
//! - a name that is a CNAME to `cname_target` is fetched through the addresses `cname_target`
//!   itself resolves to, never through the name's own A/AAAA answers (a hostile DNS server can
//!   answer the CNAME query with the edge's name and the A query with an internal address);
//! - any other name only through its A and AAAA records that are in `addresses` or among what
//!   `cname_target` resolves to (a flattened CNAME, an apex's records; a stray AAAA record is
//!   reported by `no-stray-aaaa`, never fetched);
//! - of those, only public unicast addresses (`ranges`), unless
//!   `onboarding.danger_allow_private_addresses` (tests and labs) allows local ones.
//!
//! The customer sees only whether the edge was reached through an address, never what answered
//! there or why a connection failed; the operator log keeps a short classified reason (`Miss`).

mod nonces;
mod ranges;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::checks::edge_addresses;
use super::dns::DnsView;
use super::zone::list;
use super::{Check, CheckId, CheckStatus, Settings};
use crate::Domain;
pub use nonces::{NonceGuard, Nonces};
use ranges::{Range, may_connect, non_public};

/// URL path prefix the edge answers nonces under.
pub const PATH_PREFIX: &str = "/.well-known/clickedge-check/";
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// Addresses fetched through, at most.
const MAX_ADDRESSES: usize = 4;
/// Bytes of a response read, at most (a nonce is 32).
const MAX_BODY_BYTES: usize = 256;

/// What one fetch found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The edge answered with the nonce.
    Reached,
    /// Anything else; why is for the operator log only.
    Missed(Miss),
}

/// Why a fetch did not reach the edge: a classification, never the remote's own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Miss {
    /// The connection was refused.
    Refused,
    /// No answer within [`FETCH_TIMEOUT`].
    TimedOut,
    /// This host has no route to the address (no IPv6 in a container, no address of that
    /// family to send from): the edge cannot dial it, whatever the customer's DNS says.
    NoRoute,
    /// No connection for another reason (a host that does not answer, a local error).
    NoConnection,
    /// Something answered, but not with the nonce (another server, or a broken exchange).
    OtherAnswer,
}

impl Miss {
    fn as_str(self) -> &'static str {
        match self {
            Miss::Refused => "connection refused",
            Miss::TimedOut => "timed out",
            Miss::NoRoute => "no route from the edge",
            Miss::NoConnection => "no connection",
            Miss::OtherAnswer => "answered, but not as this edge",
        }
    }
}

/// Where the edge's own addresses for a name come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Own {
    /// The name is a CNAME to `cname_target`: what that name itself resolves to.
    Target(Domain),
    /// The name's A and AAAA records that are the edge's: among `addresses` or what
    /// `cname_target` resolves to.
    Configured(Vec<IpAddr>),
}

/// The reachability check, or none when it must not run: the edge does not know its own
/// addresses (not configured), or the name does not point at the edge yet (the DNS checks
/// already say what to fix).
pub async fn check(view: &DnsView, done: &[Check], s: &Settings, nonces: &Nonces) -> Option<Check> {
    let points = done.iter().find(|c| c.id == CheckId::PointsToEdge)?;
    if !s.is_configured() || points.status != CheckStatus::Pass {
        return None;
    }
    let name = &view.name;
    let own = match own(view, s) {
        Own::Target(target) => match &view.edge {
            Ok(addrs) if !addrs.is_empty() => addrs.clone(),
            _ => return Some(target_unresolved(&target)),
        },
        Own::Configured(addrs) => addrs,
    };
    let (addrs, untried) = dialable(&own, s.danger_allow_private_addresses);
    if addrs.is_empty() {
        if own.is_empty() {
            return None;
        }
        let ranges: Vec<String> = own
            .iter()
            .map(|ip| format!("{ip} ({})", non_public(*ip).map_or("public", Range::as_str)))
            .collect();
        tracing::info!(domain = %name, addresses = %list(&ranges), "reachability not checked: the edge's addresses are not public");
        return Some(not_public(name, &own));
    }
    let nonce = nonces.issue();
    // All addresses at once: a run takes one fetch timeout at most.
    let mut fetches = tokio::task::JoinSet::new();
    for (i, ip) in addrs.iter().copied().enumerate() {
        let (name, port, nonce) = (name.clone(), s.http_port, nonce.as_str().to_owned());
        fetches.spawn(async move { (i, ip, fetch(&name, ip, port, &nonce).await) });
    }
    let mut results = Vec::new();
    while let Some(done) = fetches.join_next().await {
        if let Ok(r) = done {
            results.push(r);
        }
    }
    drop(nonce);
    // In the order of the edge's addresses, so the failure named is the same every run.
    results.sort_by_key(|(i, _, _)| *i);
    let results: Vec<(IpAddr, Outcome)> = results.into_iter().map(|(_, ip, o)| (ip, o)).collect();
    for (ip, outcome) in &results {
        if let Outcome::Missed(miss) = outcome {
            let address = SocketAddr::new(*ip, s.http_port);
            tracing::info!(domain = %name, %address, reason = miss.as_str(), "reachability check did not reach the edge");
        }
    }
    Some(judge(name, s.http_port, &results, untried, s.http_blocks))
}

/// Whose addresses the fetch may go through (see the module docs): decided from the settings
/// and the CNAME chain, never from the name's address answers alone.
fn own(view: &DnsView, s: &Settings) -> Own {
    if let (Some(target), Ok(chain)) = (&s.cname_target, &view.cname)
        && chain.contains(target)
    {
        return Own::Target(target.clone());
    }
    let edge = edge_addresses(view, s);
    Own::Configured(
        view.addresses()
            .into_iter()
            .filter(|ip| edge.contains(ip))
            .collect(),
    )
}

/// The addresses of `own` the check may connect to, at most [`MAX_ADDRESSES`], and how many more
/// it may connect to but leaves untried.
fn dialable(own: &[IpAddr], allow_private: bool) -> (Vec<IpAddr>, usize) {
    let mut addrs: Vec<IpAddr> = own
        .iter()
        .copied()
        .filter(|ip| may_connect(*ip, allow_private))
        .collect();
    let untried = addrs.len().saturating_sub(MAX_ADDRESSES);
    addrs.truncate(MAX_ADDRESSES);
    (addrs, untried)
}

fn judge(
    name: &Domain,
    port: u16,
    results: &[(IpAddr, Outcome)],
    untried: usize,
    blocking: bool,
) -> Check {
    let url = base_url(name, port);
    let no_route = |o: &Outcome| *o == Outcome::Missed(Miss::NoRoute);
    let missed = |o: &Outcome| *o != Outcome::Reached && !no_route(o);
    let Some(first_miss) = results.iter().find(|(_, o)| missed(o)) else {
        let unroutable: Vec<IpAddr> = results
            .iter()
            .filter(|(_, o)| no_route(o))
            .map(|(ip, _)| *ip)
            .collect();
        if !unroutable.is_empty() {
            return cannot_dial(&url, &unroutable);
        }
        let rest = match untried {
            0 => String::new(),
            n => format!(
                " ({n} more of its addresses not tried: the check fetches through {MAX_ADDRESSES} at most)"
            ),
        };
        return Check::pass(
            CheckId::HttpReachable,
            format!(
                "the edge reached itself at {url} through {}{rest}",
                list(&results.iter().map(|(ip, _)| *ip).collect::<Vec<_>>())
            ),
        );
    };
    // No answer at all may be the edge's own path, not the CA's: a load balancer or NAT that
    // does not send a backend's requests to its own public address back to it (hairpinning)
    // drops them. Said, but holding back no order; a refusal or another server's answer is
    // what the CA would meet too, and is the one named when there is one.
    let timed_out = |o: &Outcome| *o == Outcome::Missed(Miss::TimedOut);
    let &(ip, ref outcome) = results
        .iter()
        .find(|(_, o)| missed(o) && !timed_out(o))
        .unwrap_or(first_miss);
    let at = SocketAddr::new(ip, port);
    let silent = timed_out(outcome);
    let also = if silent {
        " If the CA does reach the edge there and only the edge's requests to its own address time out (a load balancer or NAT without hairpinning), this check cannot vouch for it: orders are not held back for a timeout."
    } else {
        ""
    };
    Check::fail(
        CheckId::HttpReachable,
        format!("{url} through {at} did not reach the edge"),
        format!(
            "Edge operator: port {port} of {ip} must reach the edge's HTTP listener: open it in the firewall, security group or load balancer in front of the edge, and make sure no other server answers there. The CA validates HTTP-01 certificates on port 80. Nothing for the domain's owner to change: the name points at the edge.{also}"
        ),
        blocking && !silent,
    )
}

/// The edge has no route to some of its own addresses (every other one reached it): nothing the
/// customer can change, and nothing the check can vouch for.
fn cannot_dial(url: &str, unroutable: &[IpAddr]) -> Check {
    Check::warn(
        CheckId::HttpReachable,
        format!(
            "{url} not checked through {}: the edge has no route to it from where it runs",
            list(unroutable)
        ),
        Some(
            "Edge operator: give the edge a route to its own public addresses (a container without IPv6, a load balancer that does not send a backend's own requests back to it), or the check cannot tell whether the CA reaches the edge there. Nothing for the domain's owner to change."
                .into(),
        ),
    )
}

fn not_public(name: &Domain, own: &[IpAddr]) -> Check {
    Check::warn(
        CheckId::HttpReachable,
        format!(
            "not checked: the edge's addresses for {name} ({}) are not public, and the edge fetches only through public addresses",
            list(own)
        ),
        Some(
            "Edge operator: the CA reaches the edge only through public addresses (onboarding.addresses, or what onboarding.cname_target resolves to). onboarding.danger_allow_private_addresses lets this check use private ones, in tests and labs only."
                .into(),
        ),
    )
}

fn target_unresolved(target: &Domain) -> Check {
    Check::warn(
        CheckId::HttpReachable,
        format!("not checked: {target}, the edge's own name, did not resolve"),
        Some(format!(
            "Edge operator: {target} must have A or AAAA records at the edge's addresses."
        )),
    )
}

fn base_url(name: &Domain, port: u16) -> String {
    if port == 80 {
        format!("http://{name}/")
    } else {
        format!("http://{name}:{port}/")
    }
}

async fn fetch(name: &Domain, ip: IpAddr, port: u16, nonce: &str) -> Outcome {
    let Ok(client) = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(FETCH_TIMEOUT)
        .resolve(name.as_str(), SocketAddr::new(ip, port))
        .build()
    else {
        return Outcome::Missed(Miss::NoConnection);
    };
    let url = format!("http://{name}:{port}{PATH_PREFIX}{nonce}");
    let mut res = match client.get(&url).send().await {
        Ok(res) => res,
        Err(e) => return Outcome::Missed(classify(&e)),
    };
    let status = res.status();
    let mut body = Vec::new();
    while body.len() < MAX_BODY_BYTES {
        match res.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) if e.is_timeout() => return Outcome::Missed(Miss::TimedOut),
            Err(_) => return Outcome::Missed(Miss::OtherAnswer),
        }
    }
    if status.is_success() && body == nonce.as_bytes() {
        Outcome::Reached
    } else {
        Outcome::Missed(Miss::OtherAnswer)
    }
}

/// What kind of failure a request error is, from its kind and the I/O error under it.
fn classify(e: &reqwest::Error) -> Miss {
    if e.is_timeout() {
        return Miss::TimedOut;
    }
    if !e.is_connect() {
        return Miss::OtherAnswer;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => Miss::Refused,
                std::io::ErrorKind::TimedOut => Miss::TimedOut,
                // Raised by this host itself: no route of that family, no address to send from.
                // (A host unreachable may be a firewall's reject in front of the edge: the
                // customer's path to fix, a miss like any other.)
                std::io::ErrorKind::NetworkUnreachable | std::io::ErrorKind::AddrNotAvailable => {
                    Miss::NoRoute
                }
                _ => Miss::NoConnection,
            };
        }
        cause = err.source();
    }
    Miss::NoConnection
}

#[cfg(test)]
mod tests;
