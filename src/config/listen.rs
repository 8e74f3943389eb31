//! `[listen]`: where the edge listens, and whether its clients arrive through a load balancer
//! that speaks the PROXY protocol.
//!
//! `https` and `http` take one address or a list (`"[::]:443"`, or `["0.0.0.0:443", "[::]:443"]`);
//! `trusted_proxies` takes networks (`"10.0.0.0/8"`) or single addresses.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// `[listen]`: socket addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// HTTPS listener(s) for clicks. Default `127.0.0.1:8443`.
    pub https: Addresses,
    /// Plain HTTP listener(s) (HTTP-01 challenges, upgrade to HTTPS). Default `127.0.0.1:8080`.
    pub http: Addresses,
    /// Admin API, metrics and health. Default `127.0.0.1:9180`.
    #[serde(deserialize_with = "one_address")]
    pub admin: SocketAddr,
    /// A listener serving only `/metrics` (no token, no API), for a Prometheus that must not
    /// reach the admin API. Default none (metrics on `admin` only).
    #[serde(deserialize_with = "some_address")]
    pub metrics: Option<SocketAddr>,
    /// Connections to `https` and `http` from `trusted_proxies` start with a PROXY protocol
    /// header (v1 or v2) naming the client; a trusted proxy's connection without one is refused,
    /// and so is a header from any other peer. Default `false`.
    pub proxy_protocol: bool,
    /// The load balancers whose PROXY protocol headers are believed (networks or addresses).
    /// Required with `proxy_protocol`. Default none.
    #[serde(deserialize_with = "networks")]
    pub trusted_proxies: Vec<IpNet>,
    /// Threads that serve `https`, each with a single-threaded runtime and, from two on, its own
    /// socket per address (`SO_REUSEPORT`: the kernel spreads connections over them), so that a
    /// connection stays on one thread. Default 0: `https` is served by the process's shared
    /// runtime, like every other listener.
    pub https_threads: usize,
}

/// The most `listen.https_threads` takes: far more threads than cores only adds switching.
pub const MAX_HTTPS_THREADS: usize = 256;

impl Default for Listen {
    fn default() -> Self {
        Listen {
            https: Addresses(vec![SocketAddr::from(([127, 0, 0, 1], 8443))]),
            http: Addresses(vec![SocketAddr::from(([127, 0, 0, 1], 8080))]),
            admin: SocketAddr::from(([127, 0, 0, 1], 9180)),
            metrics: None,
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            https_threads: 0,
        }
    }
}

impl Listen {
    /// What makes this section unusable, as a message naming the keys.
    pub(super) fn invalid(&self) -> Option<String> {
        if self.proxy_protocol && self.trusted_proxies.is_empty() {
            return Some(
                "listen.proxy_protocol = true needs listen.trusted_proxies: list the load \
                 balancers' networks (e.g. [\"10.0.0.0/8\"]), since only they may name the client"
                    .into(),
            );
        }
        if self.https_threads > MAX_HTTPS_THREADS {
            return Some(format!(
                "listen.https_threads = {} is more than {MAX_HTTPS_THREADS}: use one per CPU core \
                 the edge may use, or 0 for the shared runtime",
                self.https_threads
            ));
        }
        if !self.proxy_protocol && !self.trusted_proxies.is_empty() {
            return Some(
                "listen.trusted_proxies is set but listen.proxy_protocol is not: set \
                 listen.proxy_protocol = true, or remove listen.trusted_proxies"
                    .into(),
            );
        }
        self.clash()
    }

    /// Two listeners on one port of one address (or one of them on every address), which the
    /// kernel would refuse as a port in use, or worse share: said with both keys. Port 0 (the
    /// kernel picks) never clashes.
    fn clash(&self) -> Option<String> {
        let mut all: Vec<(&str, SocketAddr)> = Vec::new();
        all.extend(self.https.all().iter().map(|a| ("listen.https", *a)));
        all.extend(self.http.all().iter().map(|a| ("listen.http", *a)));
        all.push(("listen.admin", self.admin));
        all.extend(self.metrics.map(|a| ("listen.metrics", a)));
        for (i, &a) in all.iter().enumerate() {
            for &b in &all[i + 1..] {
                if let Some(message) = clash(a, b) {
                    return Some(message);
                }
            }
        }
        None
    }
}

/// What is wrong with listening on `key = a` and `other = b` both, if anything.
fn clash((key, a): (&str, SocketAddr), (other, b): (&str, SocketAddr)) -> Option<String> {
    // An IPv4-mapped address (`[::ffff:127.0.0.1]`) is the IPv4 address the kernel takes it for.
    let (ip_a, ip_b) = (a.ip().to_canonical(), b.ip().to_canonical());
    // One listener's `[::]` beside its `0.0.0.0` is bound IPv6 only (`app::bind`).
    let split_wildcards = key == other
        && ip_a.is_unspecified()
        && ip_b.is_unspecified()
        && ip_a.is_ipv4() != ip_b.is_ipv4();
    if a.port() == 0 || a.port() != b.port() || split_wildcards {
        return None;
    }
    if ip_a == ip_b {
        return Some(format!(
            "{key} = \"{a}\" and {other} = \"{b}\" are the same address: give each listener a \
             port of its own"
        ));
    }
    let ((wide_key, wide), (narrow_key, narrow)) = if covers(ip_a, ip_b) {
        ((key, a), (other, b))
    } else if covers(ip_b, ip_a) {
        ((other, b), (key, a))
    } else {
        return None;
    };
    Some(format!(
        "{wide_key} = \"{wide}\" listens on port {port} of every address, so {narrow_key} = \
         \"{narrow}\" cannot have it: give {narrow_key} another port, or {wide_key} a single \
         address",
        port = a.port()
    ))
}

/// Whether a listener on `wide` takes `narrow`'s address too (same port): `0.0.0.0` takes every
/// IPv4 address, `[::]` every address (it is bound dual-stack).
fn covers(wide: IpAddr, narrow: IpAddr) -> bool {
    wide.is_unspecified() && (wide.is_ipv6() || narrow.is_ipv4())
}

/// One listener's addresses: one or more, each bound with its own accept loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses(Vec<SocketAddr>);

impl Addresses {
    /// The addresses, in the order written (never empty).
    pub fn all(&self) -> &[SocketAddr] {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Addresses {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(
            untagged,
            expecting = "an address (\"0.0.0.0:443\") or a list of addresses"
        )]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let all = match OneOrMany::deserialize(d)? {
            OneOrMany::One(a) => vec![a],
            OneOrMany::Many(all) => all,
        };
        if all.is_empty() {
            return Err(serde::de::Error::custom(
                "an empty list of addresses: give at least one",
            ));
        }
        all.iter()
            .map(|a| address(a).map_err(serde::de::Error::custom))
            .collect::<Result<_, _>>()
            .map(Addresses)
    }
}

fn one_address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    address(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn some_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    one_address(d).map(Some)
}

/// `text` as a socket address, else what is wrong with it in words: a host name where an IP
/// address is needed, a port missing or out of range, an IPv6 address without brackets.
fn address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let example = "e.g. \"127.0.0.1:443\", \"0.0.0.0:443\" or \"[::]:443\"";
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        let mut shown = match ip {
            IpAddr::V4(_) => format!("\"{ip}:443\""),
            IpAddr::V6(_) => format!("\"[{ip}]:443\""),
        };
        // `::1:9180` is an IPv6 address too; perhaps its last part was meant as the port.
        if let Some((head, tail)) = bare.rsplit_once(':')
            && ip.is_ipv6()
            && tail.parse::<u16>().is_ok()
            && head.parse::<IpAddr>().is_ok()
        {
            shown.push_str(&format!(", or \"[{head}]:{tail}\" if {tail} is the port"));
        }
        return Err(format!(
            "{text:?} has no port: give one, e.g. {shown} (IPv6 addresses in brackets)"
        ));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "{text:?} is not an address with a port ({example})"
        ));
    };
    if host.is_empty() {
        return Err(format!(
            "{text:?} has no address before the port: e.g. \"0.0.0.0{text}\" (every IPv4 address) or \"127.0.0.1{text}\""
        ));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<IpAddr>().is_err() {
        return Err(format!(
            "{text:?}: {host:?} is not an IP address; the edge binds addresses, not names ({example})"
        ));
    }
    match port.parse::<u32>() {
        Ok(p) if p > 65535 => Err(format!("{text:?}: port {p} is above 65535")),
        _ => Err(format!(
            "{text:?}: {port:?} is not a port from 0 to 65535 ({example})"
        )),
    }
}

/// `onboarding.dns_servers`: resolvers as `ip:port`, each that is not named with the fix.
pub(super) fn resolvers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            s.parse::<SocketAddr>().map_err(|_| {
                let fix = match s.trim_matches(['[', ']']).parse::<IpAddr>() {
                    Ok(ip) => format!("add the port: {:?}", SocketAddr::new(ip, 53).to_string()),
                    Err(_) => "write a resolver's IP address and port, e.g. \"127.0.0.1:53\" or \
                               \"[2001:db8::53]:53\" (a name cannot be resolved without one)"
                        .to_owned(),
                };
                serde::de::Error::custom(format!("{s:?} is not ip:port: {fix}"))
            })
        })
        .collect()
}

/// `onboarding.addresses`: IP addresses, each that is not named with the fix.
pub(super) fn ip_addresses<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            s.parse::<IpAddr>().map_err(|_| {
                serde::de::Error::custom(format!(
                    "{s:?} is not an IP address: write the edge's public addresses, e.g. \
                     \"203.0.113.10\" or \"2001:db8::10\" (the edge's name goes in cname_target)"
                ))
            })
        })
        .collect()
}

/// Networks (`10.0.0.0/8`) or single addresses (`192.0.2.7`, a /32 or /128).
fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "{s:?} is neither a network (\"10.0.0.0/8\") nor an address"
                    ))
                })
        })
        .collect()
}
