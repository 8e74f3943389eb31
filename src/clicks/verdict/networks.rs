//! The network catalogue: address ranges of mail scanners and proxies, each with a name, a scope
//! (clicks, opens, all) and a certainty (certain, probable). Compiled-in defaults
//! ([`DEFAULTS`], from the vendors' published ranges) are extended, or replaced, by the file
//! `clicks.networks_file`, which [`SharedCatalogue::watch`] reloads when it changes.
//!
//! Lookups walk a prefix trie per address family (the `prefix-trie` crate): the most specific
//! range holding the address among those judging the request's kind (a narrower `opens` range
//! inside a wider `clicks` one leaves clicks to the wider range), O(address bits), no
//! allocation. The address is the client's as the edge sees it (the
//! TCP peer, or the PROXY protocol's source once a load balancer sits in front): whoever builds
//! the click's address decides, this module only looks it up.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;

/// What a range is known to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Link clicks.
    Clicks,
    /// Image loads (opens).
    Opens,
    /// Both.
    All,
}

/// How sure the catalogue is that a request from the range is a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Certainty {
    /// Only machines (no person browses from there).
    Certain,
    /// Mostly machines, but a person may come through (browser isolation, a VPN).
    Probable,
}

/// A range's entry, as a lookup returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// The reason code, `net:<name>`.
    pub reason: &'static str,
    /// What it fetches.
    pub scope: Scope,
    /// How sure.
    pub certainty: Certainty,
}

impl Scope {
    /// Whether a range of this scope judges `what` ([`Scope::Clicks`] or [`Scope::Opens`]; only
    /// ranges of [`Scope::All`] judge `All`).
    pub fn judges(self, what: Scope) -> bool {
        self == Scope::All || self == what
    }
}

/// The compiled-in catalogue, in the file's format (see [`Catalogue::parse`]). Sources: Microsoft
/// 365 / Exchange Online Protection's published outbound ranges (Safe Links fetches from them;
/// a person's click never does, so they are certain); Proofpoint, Mimecast and Barracuda
/// published egress ranges of their gateways (probable: browser isolation can carry a person);
/// Apple's iCloud Private Relay egress, which Mail Privacy Protection's image loads come from
/// (a few rows of Apple's published list, `https://mask-api.icloud.com/egress-ip-ranges.csv`;
/// opens only, probable: people browse through the same relays, so only the prefetch's bare
/// user agent makes an open `apple_mpp`, see [`crate::clicks::opens`]).
/// Vendors' lists change: operators keep theirs current through `clicks.networks_file`.
pub const DEFAULTS: &str = "\
# Microsoft 365 / Exchange Online Protection (Safe Links)
40.92.0.0/15        microsoft-eop   clicks  certain
40.107.0.0/16       microsoft-eop   clicks  certain
52.100.0.0/14       microsoft-eop   clicks  certain
104.47.0.0/17       microsoft-eop   clicks  certain
2a01:111:f400::/48  microsoft-eop   clicks  certain
2a01:111:f403::/48  microsoft-eop   clicks  certain
# Proofpoint (AS22843, AS26211, AS52129)
67.231.144.0/20     proofpoint      all     probable
148.163.128.0/19    proofpoint      all     probable
205.220.160.0/19    proofpoint      all     probable
# Mimecast (AS30031, AS39588, AS42427, AS60492)
205.139.110.0/24    mimecast        all     probable
207.211.30.0/24     mimecast        all     probable
216.205.24.0/24     mimecast        all     probable
91.220.42.0/24      mimecast        all     probable
146.101.78.0/24     mimecast        all     probable
195.130.217.0/24    mimecast        all     probable
# Barracuda Email Security Service
64.235.144.0/20     barracuda       all     probable
209.222.80.0/21     barracuda       all     probable
# Apple iCloud Private Relay egress (Mail Privacy Protection), from mask-api.icloud.com/egress-ip-ranges.csv
172.224.224.0/27    apple-mpp       opens   probable
172.224.224.32/28   apple-mpp       opens   probable
";

/// The version of [`DEFAULTS`], part of the click line's `"rules"`.
pub const DEFAULTS_VERSION: &str = "n2";

/// Why a catalogue file is refused. The catalogue in use stays.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The file cannot be read.
    #[error("reading network catalogue {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `CIDR NAME SCOPE CERTAINTY`.
    #[error(
        "network catalogue line {line}: {text:?} is not `CIDR NAME SCOPE CERTAINTY` \
         (scope clicks|opens|all, certainty certain|probable)"
    )]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
}

/// A catalogue: one trie of entries per address family.
#[derive(Debug, Default)]
pub struct Catalogue {
    v4: PrefixMap<Ipv4Net, Network>,
    v6: PrefixMap<Ipv6Net, Network>,
    len: usize,
    /// Whether it was built from the file alone (`replace-defaults`).
    replaced: bool,
}

impl Catalogue {
    /// The compiled-in defaults.
    pub fn defaults() -> Catalogue {
        let mut c = Catalogue::default();
        // Invariant: DEFAULTS is parsed by a test, so a bad line fails the build's tests.
        let _ = c.add(DEFAULTS);
        c
    }

    /// The defaults extended by `text` (a file's content); `text` replaces them instead when it
    /// has a line `replace-defaults`. Each other line is `CIDR NAME SCOPE CERTAINTY`; `#` starts
    /// a comment; a later line for the same range wins.
    pub fn parse(text: &str) -> Result<Catalogue, CatalogueError> {
        let replace = text
            .lines()
            .any(|l| l.split('#').next().unwrap_or_default().trim() == "replace-defaults");
        let mut c = if replace {
            Catalogue::default()
        } else {
            Catalogue::defaults()
        };
        c.replaced = replace;
        c.add(text)?;
        Ok(c)
    }

    fn add(&mut self, text: &str) -> Result<(), CatalogueError> {
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() || line == "replace-defaults" {
                continue;
            }
            let bad = || CatalogueError::BadLine {
                line: i + 1,
                text: raw.chars().take(200).collect(),
            };
            let mut parts = line.split_whitespace();
            let (Some(net), Some(name), Some(scope), Some(certainty), None) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) else {
                return Err(bad());
            };
            let net = canonical(net.parse().map_err(|_| bad())?);
            let valid_name = name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if !valid_name {
                return Err(bad());
            }
            let scope = match scope {
                "clicks" => Scope::Clicks,
                "opens" => Scope::Opens,
                "all" => Scope::All,
                _ => return Err(bad()),
            };
            let certainty = match certainty {
                "certain" => Certainty::Certain,
                "probable" => Certainty::Probable,
                _ => return Err(bad()),
            };
            let entry = Network {
                reason: intern(name),
                scope,
                certainty,
            };
            let fresh = match net.trunc() {
                IpNet::V4(n) => self.v4.insert(n, entry).is_none(),
                IpNet::V6(n) => self.v6.insert(n, entry).is_none(),
            };
            self.len += usize::from(fresh);
        }
        Ok(())
    }

    /// The most specific entry holding `ip` that judges `what` (an IPv4-mapped IPv6 address as
    /// IPv4, as [`canonical`] files a mapped range). Ranges of another scope are passed over, so
    /// an `opens` range never hides the wider `clicks` range around it from a click.
    pub fn lookup(&self, ip: IpAddr, what: Scope) -> Option<Network> {
        let judging = |n: &&Network| n.scope.judges(what);
        // Covering ranges come shortest prefix first.
        match ip.to_canonical() {
            IpAddr::V4(a) => self
                .v4
                .cover_values(&Ipv4Net::from(a))
                .filter(judging)
                .last(),
            IpAddr::V6(a) => self
                .v6
                .cover_values(&Ipv6Net::from(a))
                .filter(judging)
                .last(),
        }
        .copied()
    }

    /// How many ranges it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The reason code `net:<name>`, allocated once per distinct name for the process's life: a
/// verdict's reasons are `&'static str`, and reloads bring back the same few names.
fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let reason = format!("net:{name}");
    // A panic cannot happen while the lock is held, so a poisoned set is still whole.
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    let names = names.get_or_insert_with(HashSet::new);
    if let Some(known) = names.get(reason.as_str()) {
        return known;
    }
    let leaked: &'static str = Box::leak(reason.into_boxed_str());
    names.insert(leaked);
    leaked
}

/// The catalogue in use, swapped whole when its file changes.
pub struct SharedCatalogue(RwLock<Arc<Catalogue>>);

impl SharedCatalogue {
    /// Starts with `catalogue`.
    pub fn new(catalogue: Catalogue) -> SharedCatalogue {
        SharedCatalogue(RwLock::new(Arc::new(catalogue)))
    }

    /// The defaults, extended or replaced by the file at `path` if given.
    pub fn load(path: Option<&Path>) -> Result<SharedCatalogue, CatalogueError> {
        let catalogue = match path {
            Some(p) => Catalogue::parse(&read(p)?)?,
            None => Catalogue::defaults(),
        };
        Ok(SharedCatalogue::new(catalogue))
    }

    /// Looks `ip` up in the catalogue in use among the ranges judging `what` (a read lock held
    /// for the lookup only).
    pub fn lookup(&self, ip: IpAddr, what: Scope) -> Option<Network> {
        // A panic cannot happen while the lock is held (a lookup or a swap), so a poisoned lock
        // still holds a whole catalogue.
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .lookup(ip, what)
    }

    /// Replaces the catalogue.
    pub fn replace(&self, catalogue: Catalogue) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(catalogue);
    }

    /// Re-reads `path` every `every` while its modification time or length changes, until
    /// `stop` turns true; a file that does not parse leaves the catalogue in use, with a warning.
    pub async fn watch(
        self: Arc<Self>,
        path: PathBuf,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let stamp = |p: &Path| -> Option<(SystemTime, u64)> {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        };
        // Read again at the first tick: the file may have changed since it was loaded.
        let mut seen = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let now = Some(stamp(&path));
            if now == seen {
                continue;
            }
            seen = now;
            match read(&path).and_then(|t| Catalogue::parse(&t)) {
                Ok(c) => {
                    tracing::info!(path = %path.display(), ranges = c.len(), replaced_defaults = c.replaced, "network catalogue reloaded");
                    self.replace(c);
                }
                Err(e) => tracing::warn!(
                    error = %crate::errors::chain(&e),
                    "network catalogue not reloaded; the previous one stays in use"
                ),
            }
        }
    }
}

fn read(path: &Path) -> Result<String, CatalogueError> {
    std::fs::read_to_string(path).map_err(|source| CatalogueError::Read {
        path: path.to_owned(),
        source,
    })
}

/// `net` as lookups read addresses: an IPv4-mapped IPv6 range (`::ffff:192.0.2.0/120`) as the
/// IPv4 range it maps (`192.0.2.0/24`), else as written.
fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, n.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_parse_and_find_microsoft_eop_as_certain() {
        let mut c = Catalogue::default();
        c.add(DEFAULTS).unwrap();
        assert_eq!(c.len(), Catalogue::defaults().len());
        let eop = c.lookup(ip("40.93.1.2"), Scope::Clicks).unwrap();
        assert_eq!(
            (eop.reason, eop.certainty),
            ("net:microsoft-eop", Certainty::Certain)
        );
        assert_eq!(c.lookup(ip("40.93.1.2"), Scope::Opens), None, "clicks only");
        assert!(
            c.lookup(ip("2a01:111:f403:c000::1"), Scope::Clicks)
                .is_some()
        );
        assert!(
            c.lookup(ip("::ffff:40.107.9.9"), Scope::Clicks).is_some(),
            "mapped IPv4"
        );
        assert_eq!(
            c.lookup(ip("40.94.0.1"), Scope::Clicks),
            None,
            "just past 40.92.0.0/15"
        );
        assert_eq!(
            c.lookup(ip("148.163.130.5"), Scope::Clicks)
                .map(|n| n.certainty),
            Some(Certainty::Probable)
        );
        assert_eq!(c.lookup(ip("203.0.113.7"), Scope::Clicks), None);
    }

    #[test]
    fn a_file_extends_or_replaces_and_the_most_specific_range_wins() {
        let c = Catalogue::parse(
            "198.51.100.0/24 lab-scanner clicks certain\n\
             198.51.100.128/25 lab-vpn all probable # people too\n",
        )
        .unwrap();
        assert_eq!(
            c.lookup(ip("198.51.100.1"), Scope::Clicks).unwrap().reason,
            "net:lab-scanner"
        );
        let vpn = c.lookup(ip("198.51.100.200"), Scope::Clicks).unwrap();
        assert_eq!(
            (vpn.reason, vpn.certainty),
            ("net:lab-vpn", Certainty::Probable)
        );
        assert!(
            c.lookup(ip("40.92.0.1"), Scope::Clicks).is_some(),
            "defaults kept"
        );
        let only = Catalogue::parse("replace-defaults\n198.51.100.0/24 x opens certain\n").unwrap();
        // With a comment after it, as any line may have.
        let commented =
            Catalogue::parse("replace-defaults   # ours only\n198.51.100.0/24 x opens certain\n")
                .unwrap();
        assert!(commented.replaced);
        assert_eq!(commented.len(), 1);
        assert_eq!(only.len(), 1);
        assert!(only.lookup(ip("40.92.0.1"), Scope::Clicks).is_none());
        assert!(only.lookup(ip("198.51.100.9"), Scope::Clicks).is_none());
        assert!(only.lookup(ip("198.51.100.9"), Scope::Opens).is_some());
    }

    #[test]
    fn a_narrower_range_of_another_scope_leaves_the_wider_one_in_force() {
        let c = Catalogue::parse(
            "replace-defaults
\
             198.51.100.0/24 gateway clicks certain
\
             198.51.100.0/28 image-proxy opens probable
",
        )
        .unwrap();
        let reason = |what| c.lookup(ip("198.51.100.3"), what).map(|n| n.reason);
        assert_eq!(reason(Scope::Clicks), Some("net:gateway"));
        assert_eq!(reason(Scope::Opens), Some("net:image-proxy"));
        assert_eq!(reason(Scope::All), None, "no range judges both");
        assert_eq!(
            c.lookup(ip("198.51.100.99"), Scope::Opens),
            None,
            "outside the narrower range"
        );
    }

    #[test]
    fn a_range_written_ipv4_mapped_holds_the_ipv4_addresses() {
        let c = Catalogue::parse("replace-defaults\n::ffff:198.51.100.0/120 lab clicks certain\n")
            .unwrap();
        for a in ["198.51.100.7", "::ffff:198.51.100.7"] {
            assert_eq!(
                c.lookup(ip(a), Scope::Clicks).map(|n| n.reason),
                Some("net:lab"),
                "{a}"
            );
        }
        assert!(c.lookup(ip("198.51.101.7"), Scope::Clicks).is_none());
    }

    #[test]
    fn bad_lines_are_named() {
        for bad in [
            "10.0.0.0/8 x clicks",
            "10.0.0.0/33 x clicks certain",
            "10.0.0.0/8 x everything certain",
            "10.0.0.0/8 x clicks sure",
            "10.0.0.0/8 x\u{7f} clicks certain",
        ] {
            let e = Catalogue::parse(&format!("# ok\n{bad}\n")).unwrap_err();
            assert!(
                matches!(e, CatalogueError::BadLine { line: 2, .. }),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("networks.txt");
        std::fs::write(&path, "198.51.100.0/24 first clicks certain\n").unwrap();
        let shared = Arc::new(SharedCatalogue::load(Some(&path)).unwrap());
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(shared.clone().watch(
            path.clone(),
            Duration::from_millis(20),
            stop_rx,
        ));
        let reason = |s: &SharedCatalogue| {
            s.lookup(ip("198.51.100.1"), Scope::Clicks)
                .map(|n| n.reason)
        };
        assert_eq!(reason(&shared), Some("net:first"));
        std::fs::write(&path, "198.51.100.0/24 second-name clicks certain\n").unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while reason(&shared) != Some("net:second-name") {
            assert!(tokio::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        std::fs::write(&path, "not a catalogue line at all, longer\n").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(reason(&shared), Some("net:second-name"));
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
