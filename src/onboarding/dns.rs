//! The thin DNS layer of the checks: asks a resolver (hickory-resolver; `onboarding.dns_servers`
//! over UDP and TCP, else the system's) what the checks need and returns it as a [`DnsView`].
//!
//! Every run builds a fresh resolver without a cache, so a customer who just changed a record
//! sees what their DNS serves now (up to the TTLs of the resolvers in between). Queries are
//! fully qualified (no search domains) and `/etc/hosts` is ignored: the point is what the world
//! sees. A SERVFAIL, a refusal or a timeout is kept as a [`DnsFailure`] naming the query, not
//! turned into "no records". Judging the answers is [`super::checks`]'s job.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};

use super::caa::{CaaRecord, CaaSet};
use super::zone::guessed_zone;
use crate::Domain;
use crate::errors::chain as error_chain;

/// How long one query waits for an answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest CNAME chain followed.
const MAX_CNAME_HOPS: usize = 8;

/// Why a query got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// The server answered SERVFAIL.
    ServFail,
    /// The server answered REFUSED.
    Refused,
    /// No answer within the timeout.
    Timeout,
    /// Anything else (I/O error, malformed answer, another response code).
    Other(String),
    /// The edge could not ask at all: its resolver could not be set up (`onboarding.dns_servers`,
    /// the system's resolver configuration), or not be reached (refused, no route, none left
    /// to ask).
    Unasked(String),
}

/// A query that failed at the DNS server, as opposed to one that found no records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsFailure {
    /// The name asked about.
    pub name: String,
    /// The record type asked for (`A`, `CAA`, …).
    pub record_type: &'static str,
    /// What happened.
    pub kind: FailureKind,
}

/// What DNS says about one name, as the checks need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsView {
    /// The name checked.
    pub name: Domain,
    /// The resolvers asked, for messages (`127.0.0.1:53`, or the system's).
    pub servers: String,
    /// The CNAME chain from the name: first hop first; empty if the name is no alias. A chain
    /// that loops ends with the name it comes back to.
    pub cname: Result<Vec<Domain>, DnsFailure>,
    /// IPv4 addresses of the name, after following CNAMEs.
    pub a: Result<Vec<Ipv4Addr>, DnsFailure>,
    /// IPv6 addresses of the name, after following CNAMEs.
    pub aaaa: Result<Vec<Ipv6Addr>, DnsFailure>,
    /// The relevant CAA RRset (RFC 8659 §3), if any name on the way up has one.
    pub caa: Result<Option<CaaSet>, DnsFailure>,
    /// The zone holding the name, from an SOA answer or authority record; None if DNS did not
    /// say (fix records then take the name's last two labels).
    pub zone: Option<Domain>,
    /// What `cname_target`, the edge's own name, resolves to (A then AAAA); empty when it is not
    /// set. The addresses a name that cannot be a CNAME to it (a zone's apex, a provider that
    /// flattens CNAMEs) may point at. Not among [`DnsView::failures`]: the edge's name is not
    /// the customer's to fix.
    pub edge: Result<Vec<IpAddr>, DnsFailure>,
}

impl DnsView {
    /// Every failed query, in a fixed order.
    pub fn failures(&self) -> Vec<&DnsFailure> {
        [
            self.cname.as_ref().err(),
            self.a.as_ref().err(),
            self.aaaa.as_ref().err(),
            self.caa.as_ref().err(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// A view of `links.customer.com` as the unit tests need it: this CNAME chain and these
    /// addresses, no CAA, the edge's name at 203.0.113.10 (as [`Settings::example`]'s
    /// `addresses`), every query answered by `127.0.0.1:53`.
    ///
    /// [`Settings::example`]: super::Settings::example
    #[cfg(test)]
    pub(crate) fn example(chain: &[&str], a: &[&str], aaaa: &[&str]) -> DnsView {
        let name = |s: &str| Domain::parse(s).expect("a valid name");
        DnsView {
            name: name("links.customer.com"),
            servers: "127.0.0.1:53".into(),
            cname: Ok(chain.iter().map(|c| name(c)).collect()),
            a: Ok(a
                .iter()
                .map(|s| s.parse().expect("an IPv4 address"))
                .collect()),
            aaaa: Ok(aaaa
                .iter()
                .map(|s| s.parse().expect("an IPv6 address"))
                .collect()),
            caa: Ok(None),
            zone: None,
            edge: Ok(vec![IpAddr::from([203, 0, 113, 10])]),
        }
    }

    /// True if the name is its zone's apex (as DNS says, else as guessed), where it can hold no
    /// CNAME.
    pub fn is_apex(&self) -> bool {
        self.zone
            .clone()
            .unwrap_or_else(|| guessed_zone(&self.name))
            == self.name
    }

    /// All addresses of the name (A then AAAA); empty if a lookup failed.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let v4 = self
            .a
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|a| IpAddr::V4(*a));
        let v6 = self
            .aaaa
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|a| IpAddr::V6(*a));
        v4.chain(v6).collect()
    }
}

/// Why no resolver could be set up for a run.
#[derive(Debug, thiserror::Error)]
enum ResolverError {
    /// `/etc/resolv.conf` could not be read or understood.
    #[error("reading the system resolver configuration")]
    SystemConf(#[source] NetError),
    /// The resolver refused its configuration.
    #[error("setting up the DNS resolver")]
    Build(#[source] NetError),
}

/// The resolver of one run and how messages name it.
struct Dns {
    resolver: TokioResolver,
}

impl Dns {
    fn new(servers: &[SocketAddr]) -> Result<(Dns, String), ResolverError> {
        let (config, mut opts) = if servers.is_empty() {
            hickory_resolver::system_conf::read_system_conf().map_err(ResolverError::SystemConf)?
        } else {
            let name_servers = servers
                .iter()
                .map(|s| {
                    let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
                    udp.port = s.port();
                    tcp.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                })
                .collect();
            (
                ResolverConfig::from_name_servers(name_servers),
                ResolverOpts::default(),
            )
        };
        let described = describe(servers, &config);
        opts.timeout = QUERY_TIMEOUT;
        // One retry: a lost UDP packet is not a broken DNS server.
        opts.attempts = 1;
        opts.cache_size = 0;
        opts.preserve_intermediates = true;
        opts.use_hosts_file = ResolveHosts::Never;
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        *builder.options_mut() = opts;
        let resolver = builder.build().map_err(ResolverError::Build)?;
        Ok((Dns { resolver }, described))
    }

    /// The records of `record_type` at `name` (CNAMEs followed, except when asking for CNAME).
    async fn records(&self, name: &str, record_type: RecordType) -> Result<Vec<RData>, DnsFailure> {
        let records = self.owned_records(name, record_type).await?;
        Ok(records.into_iter().map(|(_, data)| data).collect())
    }

    /// [`Dns::records`] with each record's owner: where a CNAME at `name` led, not `name`.
    async fn owned_records(
        &self,
        name: &str,
        record_type: RecordType,
    ) -> Result<Vec<(String, RData)>, DnsFailure> {
        let failure = |kind| DnsFailure {
            name: name.to_owned(),
            record_type: type_name(record_type),
            kind,
        };
        match self.resolver.lookup(format!("{name}."), record_type).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() == record_type)
                .map(|r| (r.name.to_ascii(), r.data.clone()))
                .collect()),
            Err(NetError::Dns(DnsError::NoRecordsFound(none))) => match none.response_code {
                ResponseCode::NoError | ResponseCode::NXDomain => Ok(Vec::new()),
                code => Err(failure(from_code(code))),
            },
            Err(NetError::Dns(DnsError::ResponseCode(code))) => Err(failure(from_code(code))),
            Err(NetError::Timeout) => Err(failure(FailureKind::Timeout)),
            // The edge's own side: its resolver not reached (refused, no route), none to ask.
            Err(e @ (NetError::Io(_) | NetError::NoConnections | NetError::Busy)) => {
                Err(failure(FailureKind::Unasked(e.to_string())))
            }
            Err(e) => Err(failure(FailureKind::Other(e.to_string()))),
        }
    }

    async fn a(&self, name: &Domain) -> Result<Vec<Ipv4Addr>, DnsFailure> {
        self.picked(name, RecordType::A, |r| match r {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .await
    }

    async fn aaaa(&self, name: &Domain) -> Result<Vec<Ipv6Addr>, DnsFailure> {
        self.picked(name, RecordType::AAAA, |r| match r {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
        .await
    }

    /// The addresses of `name`, A then AAAA, CNAMEs followed.
    async fn addresses(&self, name: &Domain) -> Result<Vec<IpAddr>, DnsFailure> {
        let (a, aaaa) = tokio::join!(self.a(name), self.aaaa(name));
        let v4 = a?.into_iter().map(IpAddr::V4);
        let v6 = aaaa?.into_iter().map(IpAddr::V6);
        Ok(v4.chain(v6).collect())
    }

    /// The records of `record_type` at `name` that `pick` takes.
    async fn picked<T>(
        &self,
        name: &Domain,
        record_type: RecordType,
        pick: fn(RData) -> Option<T>,
    ) -> Result<Vec<T>, DnsFailure> {
        let records = self.records(name.as_str(), record_type).await?;
        Ok(records.into_iter().filter_map(pick).collect())
    }

    /// The CNAME chain from `name`, at most [`MAX_CNAME_HOPS`] long; a chain that loops ends
    /// with the name it comes back to (see [`cname_loop`]).
    async fn cname_chain(&self, name: &Domain) -> Result<Vec<Domain>, DnsFailure> {
        let mut chain: Vec<Domain> = Vec::new();
        let mut at = name.clone();
        while chain.len() < MAX_CNAME_HOPS {
            let next = self
                .records(at.as_str(), RecordType::CNAME)
                .await?
                .into_iter()
                .find_map(|r| match r {
                    RData::CNAME(target) => Domain::parse(&target.0.to_ascii()).ok(),
                    _ => None,
                });
            let Some(target) = next else { break };
            let looped = target == *name || chain.contains(&target);
            chain.push(target.clone());
            if looped {
                break;
            }
            at = target;
        }
        Ok(chain)
    }

    /// The zone holding `name`: the owner of the SOA record in the answer (the name is a zone
    /// apex) or in the authority section of an empty answer. For an `alias` (a CNAME), whose own
    /// SOA query finds the target's zone, the parents are asked instead, closest first (a
    /// CNAME is never a zone's apex: its zone is a parent's). A parent whose answer names a zone
    /// that does not contain the name is passed over. None if DNS names no such zone, or a query
    /// fails (a timeout, SERVFAIL): what a parent says then may not be the name's zone, and
    /// asking on would cost a timeout per label.
    async fn zone(&self, name: &Domain, alias: bool) -> Option<Domain> {
        for at in climb(name).into_iter().skip(usize::from(alias)) {
            let zone = self.soa_owner(&at).await.ok()?;
            if let Some(zone) = zone
                && (name == &zone || name.as_str().ends_with(&format!(".{zone}")))
            {
                return Some(zone);
            }
        }
        None
    }

    /// The owner of the SOA DNS gives for `name`: in the answer, or in the authority section of
    /// an empty one; none if it gives none. `Err` if the query failed.
    async fn soa_owner(&self, name: &Domain) -> Result<Option<Domain>, ()> {
        let owner = match self
            .resolver
            .lookup(format!("{name}."), RecordType::SOA)
            .await
        {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .find(|r| r.record_type() == RecordType::SOA)
                .map(|r| r.name.to_ascii()),
            Err(NetError::Dns(DnsError::NoRecordsFound(none)))
                if matches!(
                    none.response_code,
                    ResponseCode::NoError | ResponseCode::NXDomain
                ) =>
            {
                none.soa.map(|soa| soa.name.to_ascii())
            }
            Err(_) => return Err(()),
        };
        Ok(owner.and_then(|o| Domain::parse(o.trim_end_matches('.')).ok()))
    }

    /// RFC 8659 §3: the CAA RRset of the name, else of its parent, and so on up to (not
    /// including, unlike a CA: no top-level domain holds CAA records) the top-level domain; the resolver follows CNAMEs at each name. The first
    /// non-empty RRset is the relevant one, kept with the name that holds it (a CNAME's target
    /// when one was followed: only there can it be changed).
    async fn relevant_caa(&self, name: &Domain) -> Result<Option<CaaSet>, DnsFailure> {
        for asked in climb(name) {
            let mut owner = None;
            let records: Vec<CaaRecord> = self
                .owned_records(asked.as_str(), RecordType::CAA)
                .await?
                .into_iter()
                .filter_map(|(at, r)| match r {
                    RData::CAA(caa) => {
                        owner.get_or_insert(at);
                        Some(CaaRecord {
                            flags: (u8::from(caa.issuer_critical) << 7) | caa.reserved_flags,
                            tag: caa.tag.clone(),
                            value: String::from_utf8_lossy(&caa.value).into_owned(),
                        })
                    }
                    _ => None,
                })
                .collect();
            if !records.is_empty() {
                let owner = owner
                    .and_then(|o| Domain::parse(o.trim_end_matches('.')).ok())
                    .unwrap_or_else(|| asked.clone());
                let alias = (owner != asked).then_some(asked);
                return Ok(Some(CaaSet {
                    owner,
                    alias,
                    records,
                }));
            }
        }
        Ok(None)
    }
}

/// Asks DNS everything the checks need about `name`, and what the edge's own name `target`
/// resolves to, using `servers` (empty: the system's). Never fails: a resolver that cannot even
/// be set up is reported as a failure of every query.
pub async fn gather(name: &Domain, target: Option<&Domain>, servers: &[SocketAddr]) -> DnsView {
    let (dns, described) = match Dns::new(servers) {
        Ok(ok) => ok,
        Err(e) => {
            let message = error_chain(&e);
            let failure = |t| DnsFailure {
                name: name.to_string(),
                record_type: t,
                kind: FailureKind::Unasked(message.clone()),
            };
            return DnsView {
                name: name.clone(),
                servers: describe(servers, &ResolverConfig::default()),
                cname: Err(failure("CNAME")),
                a: Err(failure("A")),
                aaaa: Err(failure("AAAA")),
                caa: Err(failure("CAA")),
                zone: None,
                edge: Err(failure("A")),
            };
        }
    };
    // The zone's lookup starts at the parent for a CNAME, so it waits for the chain.
    let cname_and_zone = async {
        let cname = dns.cname_chain(name).await;
        let alias = cname.as_ref().is_ok_and(|chain| !chain.is_empty());
        let zone = dns.zone(name, alias).await;
        (cname, zone)
    };
    let edge = async {
        match target {
            Some(target) => dns.addresses(target).await,
            None => Ok(Vec::new()),
        }
    };
    let ((cname, zone), a, aaaa, caa, edge) = tokio::join!(
        cname_and_zone,
        dns.a(name),
        dns.aaaa(name),
        dns.relevant_caa(name),
        edge,
    );
    DnsView {
        name: name.clone(),
        servers: described,
        cname,
        a,
        aaaa,
        caa,
        zone,
        edge,
    }
}

/// Whether the CNAME `chain` of `name` loops: it ends with a name it came through.
pub fn cname_loop(name: &Domain, chain: &[Domain]) -> bool {
    chain
        .split_last()
        .is_some_and(|(last, before)| last == name || before.contains(last))
}

/// The names whose CAA records may apply to `name`: itself, then each parent, down to two
/// labels (the top-level domain is left out).
pub fn climb(name: &Domain) -> Vec<Domain> {
    let s = name.as_str();
    let mut out = vec![name.clone()];
    let mut rest = s;
    while let Some((_, parent)) = rest.split_once('.') {
        if !parent.contains('.') {
            break;
        }
        if let Ok(d) = Domain::parse(parent) {
            out.push(d);
        }
        rest = parent;
    }
    out
}

fn describe(servers: &[SocketAddr], system: &ResolverConfig) -> String {
    if !servers.is_empty() {
        return servers
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
    }
    let ips: Vec<String> = system
        .name_servers()
        .iter()
        .map(|ns| ns.ip.to_string())
        .collect();
    if ips.is_empty() {
        "the system resolver".into()
    } else {
        format!("the system resolver ({})", ips.join(", "))
    }
}

fn from_code(code: ResponseCode) -> FailureKind {
    match code {
        ResponseCode::ServFail => FailureKind::ServFail,
        ResponseCode::Refused => FailureKind::Refused,
        other => FailureKind::Other(format!("response code {other}")),
    }
}

fn type_name(t: RecordType) -> &'static str {
    match t {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::CNAME => "CNAME",
        RecordType::CAA => "CAA",
        _ => "?",
    }
}

#[cfg(test)]
mod tests;
