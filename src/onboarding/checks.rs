//! The DNS checks, as pure functions of a [`DnsView`] and the [`Settings`]: whether the DNS
//! server answered, whether the name resolves, whether it points at the edge (a CNAME to
//! `cname_target`, or A/AAAA records only at the edge's addresses: `addresses` and what
//! `cname_target` resolves to), whether an AAAA record points elsewhere, and whether CAA allows
//! the CA.
//!
//! A zone's apex can hold no CNAME: there the fix asks for the provider's ALIAS (ANAME, CNAME
//! flattening) to `cname_target`, or address records at the edge's addresses.
//!
//! Each failure names the records involved with their values and says what to change, as DNS
//! records in zone-file form (`name. TTL IN TYPE value`) a customer can paste at their DNS
//! provider. A check whose input could not be looked up is left out: the `dns-server` check
//! already says why.

use std::net::IpAddr;

use super::caa;
use super::dns::{DnsFailure, DnsView, FailureKind, QUERY_TIMEOUT, cname_loop};
use super::zone::{
    FixRecord, address_record, address_type, existing, guessed_zone, lines, list, plural, record,
};
use super::{Check, CheckId, CheckStatus, Settings};
use crate::Domain;

/// Evaluates every DNS check; `account` is the URL of the edge's ACME account, if it has one
/// (what a CAA `accounturi` must name).
pub fn evaluate(view: &DnsView, s: &Settings, account: Option<&str>) -> Vec<Check> {
    // Failures hold back orders only when the edge knows what the DNS should be.
    let gate = s.is_configured();
    let mut out = vec![dns_server(view, gate)];
    // A resolver may answer a CNAME loop's addresses with SERVFAIL: the loop is still what
    // `resolves` names.
    let looped = matches!(&view.cname, Ok(chain) if cname_loop(&view.name, chain));
    let addresses = match (&view.a, &view.aaaa) {
        (Ok(a), Ok(aaaa)) => Some((a.clone(), aaaa.clone())),
        _ if looped => Some((Vec::new(), Vec::new())),
        _ => None,
    };
    if let (Ok(chain), Some((a, aaaa))) = (&view.cname, addresses) {
        let found = Found {
            name: &view.name,
            chain,
            v4: a.into_iter().map(IpAddr::V4).collect(),
            v6: aaaa.into_iter().map(IpAddr::V6).collect(),
            edge: edge_addresses(view, s),
            target_unknown: target_unknown(view, s),
            apex: view.is_apex(),
        };
        let resolves = resolves(&found, s, gate);
        let resolved = resolves.status == CheckStatus::Pass;
        out.push(resolves);
        if resolved {
            out.push(points_to_edge(&found, s));
            if s.is_configured() {
                out.push(no_stray_aaaa(&found, s));
            }
        }
    }
    if let Ok(set) = &view.caa {
        let mut c = caa::check(&view.name, set.as_ref(), s, account, gate && s.caa_blocks);
        // The built-in CA reads no CAA: what an ACME CA would refuse is a warning for later.
        if !s.caa_blocks && c.status == CheckStatus::Fail {
            c.status = CheckStatus::Warn;
            c.message.push_str(
                " (the edge's built-in CA does not read CAA: this matters once it issues through ACME)",
            );
        }
        // CAA records the name's CNAME reaches through the edge's own name are in the
        // operator's zone (or its provider's): theirs to change, not the domain owner's.
        let through_edge = set.as_ref().is_some_and(|set| {
            set.alias.as_ref() == Some(&view.name)
                && s.cname_target.as_ref().is_some_and(|target| {
                    view.cname
                        .as_ref()
                        .is_ok_and(|chain| chain.contains(target))
                })
        });
        if through_edge {
            c.fix = c
                .fix
                .map(|f| format!("Tell the edge's operator: {}", lowercase_first(&f)));
        }
        out.push(c);
    }
    let zone = view
        .zone
        .clone()
        .unwrap_or_else(|| guessed_zone(&view.name));
    for r in out.iter_mut().flat_map(|c| c.fix_records.iter_mut()) {
        r.place(&zone);
    }
    out
}

/// The edge's addresses: `addresses`, then those `cname_target` resolves to (the ones a name
/// that cannot be a CNAME to it points at) that are not among them.
pub(super) fn edge_addresses(view: &DnsView, s: &Settings) -> Vec<IpAddr> {
    let mut out = s.addresses.clone();
    for ip in view.edge.as_deref().unwrap_or_default() {
        if !out.contains(ip) {
            out.push(*ip);
        }
    }
    out
}

/// Why the addresses of `cname_target` are not known, if it is set: its lookup failed, or it has
/// none. A name's own addresses outside `addresses` may then be the edge's (an ALIAS): not the
/// customer's to change.
fn target_unknown(view: &DnsView, s: &Settings) -> Option<String> {
    s.cname_target.as_ref()?;
    match &view.edge {
        Err(f) => Some(format!("the resolver {}", failure_words(&f.kind))),
        Ok(addrs) if addrs.is_empty() => Some("it has no A or AAAA record".into()),
        Ok(_) => None,
    }
}

/// What went wrong with a query, in words: "answered SERVFAIL".
fn failure_words(kind: &FailureKind) -> String {
    match kind {
        FailureKind::ServFail => "answered SERVFAIL".to_owned(),
        FailureKind::Refused => "refused to answer".to_owned(),
        FailureKind::Timeout => format!("did not answer within {}s", QUERY_TIMEOUT.as_secs()),
        FailureKind::Other(e) => format!("gave no usable answer ({e})"),
        FailureKind::Unasked(e) => format!("could not be asked ({e})"),
    }
}

/// The check `id` left to the operator: `addresses` of `name` may be the edge's, but what
/// `cname_target` resolves to is not known (`why`).
fn not_judged(id: CheckId, name: &Domain, addresses: &[&IpAddr], s: &Settings, why: &str) -> Check {
    let target = s.cname_target.as_ref().map_or("", Domain::as_str);
    Check::warn(
        id,
        format!(
            "not checked: {name} points at {}, and the addresses of {target}, the edge's own name, are not known ({why})",
            list(addresses)
        ),
        Some(format!(
            "Tell the edge's operator: {target} must resolve from the edge; then check again."
        )),
    )
}

/// The name's records as found.
struct Found<'a> {
    name: &'a Domain,
    chain: &'a [Domain],
    v4: Vec<IpAddr>,
    v6: Vec<IpAddr>,
    /// The edge's addresses ([`edge_addresses`]).
    edge: Vec<IpAddr>,
    /// Why what `cname_target` resolves to is not known ([`target_unknown`]).
    target_unknown: Option<String>,
    /// The name is its zone's apex: it can hold no CNAME.
    apex: bool,
}

impl Found<'_> {
    /// The name that holds the address records: the end of the CNAME chain.
    fn owner(&self) -> &Domain {
        self.chain.last().unwrap_or(self.name)
    }

    fn all(&self) -> impl Iterator<Item = &IpAddr> {
        self.v4.iter().chain(&self.v6)
    }

    /// True if the name must point at the edge with address records (or its provider's ALIAS):
    /// the edge has no `cname_target`, or the name is a zone's apex.
    fn by_address(&self, s: &Settings) -> bool {
        s.cname_target.is_none() || self.apex
    }
}

/// The records the name should have: a CNAME to the target, else one per edge address (none
/// when the edge knows no address: an apex whose target did not resolve).
fn wanted(f: &Found<'_>, s: &Settings) -> Vec<FixRecord> {
    match &s.cname_target {
        Some(target) if !f.apex => vec![record(f.name, "CNAME", target.as_str())],
        _ => f.edge.iter().map(|ip| address_record(f.name, ip)).collect(),
    }
}

/// The text of a fix that adds `records` (at an apex with a `cname_target`, the ALIAS first).
fn add_text(f: &Found<'_>, s: &Settings, records: &[FixRecord]) -> String {
    let what = plural(records.len(), "this record", "these records");
    let add = format!("Add {what} at your DNS provider:\n{}", lines(records));
    match apex_alias(f, s) {
        Some(alias) if records.is_empty() => alias,
        Some(alias) => format!("{alias} Otherwise {}", lowercase_first(&add)),
        None => add,
    }
}

/// At a zone's apex with a `cname_target`: what points it at the target without a CNAME.
fn apex_alias(f: &Found<'_>, s: &Settings) -> Option<String> {
    let target = s.cname_target.as_ref().filter(|_| f.apex)?;
    let name = f.name;
    let addresses = if f.edge.is_empty() {
        format!(
            " If it has none, ask the edge's operator for its addresses ({target} does not resolve now)."
        )
    } else {
        String::new()
    };
    Some(format!(
        "Point {name} at {target} with your DNS provider's ALIAS, ANAME or CNAME flattening, if it has one: {name} is its zone's apex, where DNS allows no CNAME.{addresses}"
    ))
}

/// Failed queries grouped by name: `[("a.example.com", ["A", "AAAA"])]`.
type QueriesByName<'a> = Vec<(String, Vec<&'a str>)>;

fn dns_server(view: &DnsView, gate: bool) -> Check {
    let failures = view.failures();
    let Some(first) = failures.first() else {
        return Check::pass(
            CheckId::DnsServer,
            format!("{} answered every query", view.servers),
        );
    };
    let what = |f: &DnsFailure| failure_words(&f.kind);
    // "answered SERVFAIL for a.example.com (A, AAAA), example.com (CAA)"
    let mut parts: Vec<(String, QueriesByName<'_>)> = Vec::new();
    for f in &failures {
        let w = what(f);
        let i = match parts.iter().position(|(x, _)| *x == w) {
            Some(i) => i,
            None => {
                parts.push((w, Vec::new()));
                parts.len() - 1
            }
        };
        let names = &mut parts[i].1;
        match names.iter_mut().find(|(n, _)| *n == f.name) {
            Some((_, types)) => types.push(f.record_type),
            None => names.push((f.name.clone(), vec![f.record_type])),
        }
    }
    let message = format!(
        "DNS server failure: {} {}",
        view.servers,
        parts
            .iter()
            .map(|(w, names)| {
                let names: Vec<String> = names
                    .iter()
                    .map(|(n, types)| format!("{n} ({})", types.join(", ")))
                    .collect();
                format!("{w} for {}", names.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
    let name = &view.name;
    let fix = match &first.kind {
        FailureKind::ServFail if matches!(&view.cname, Ok(c) if cname_loop(name, c)) => format!(
            "The CNAMEs of {name} loop, which resolvers answer with SERVFAIL: the resolves check says which CNAME to change."
        ),
        FailureKind::ServFail => format!(
            "SERVFAIL means the name servers of the zone holding {name} could not answer. Usually the delegation is broken (NS records at the registrar name servers that do not serve the zone) or DNSSEC does not match (a DS record at the registrar for a zone that is unsigned or signed with another key). Check the NS and DS records of your domain at your registrar and DNS provider, then check again. CAs refuse to issue while this lasts."
        ),
        FailureKind::Timeout => format!(
            "If this lasts, the name servers of the zone holding {name} are down or unreachable: check its NS records at your registrar. If only this edge sees it, its resolver ({}) is at fault: tell the edge's operator.",
            view.servers
        ),
        FailureKind::Refused => format!(
            "Edge operator: the edge's resolver refused to answer; it must answer recursive queries from the edge (onboarding.dns_servers, or let the edge's address query that resolver). If it only passes on a refusal from the zone's own name servers, the zone holding {name} is not served where its NS records point: its owner checks them at the registrar."
        ),
        FailureKind::Other(_) => format!(
            "If this lasts, the name servers of the zone holding {name} answer what no resolver can use: check its NS records at your registrar. If only this edge sees it, its resolver ({}) is at fault: tell the edge's operator.",
            view.servers
        ),
        FailureKind::Unasked(_) => {
            "Edge operator: the edge could not ask DNS at all (onboarding.dns_servers, /etc/resolv.conf). Nothing for the domain's owner to change.".to_owned()
        }
    };
    // The edge that could not ask DNS at all knows nothing of the name, and the CA asks its own
    // resolvers: nothing to hold its orders back for.
    let edge_side = failures
        .iter()
        .all(|f| matches!(f.kind, FailureKind::Unasked(_)));
    Check::fail(CheckId::DnsServer, message, fix, gate && !edge_side)
}

fn resolves(f: &Found<'_>, s: &Settings, gate: bool) -> Check {
    let name = f.name;
    let addrs: Vec<&IpAddr> = f.all().collect();
    if !addrs.is_empty() {
        let path = if f.chain.is_empty() {
            String::new()
        } else {
            format!(" through {}", list(f.chain))
        };
        return Check::pass(
            CheckId::Resolves,
            format!("{name} resolves{path} to {}", list(&addrs)),
        );
    }
    let Some(last) = f.chain.last() else {
        let message = format!("{name} does not resolve: it has no CNAME, A or AAAA record");
        if !s.is_configured() {
            let fix = "Add a CNAME (or A/AAAA records) for this name that points at the edge; ask the edge's operator for its name or addresses.";
            return Check::fail(CheckId::Resolves, message, fix.into(), gate);
        }
        let add = wanted(f, s);
        let fix = add_text(f, s, &add);
        return Check::fail(CheckId::Resolves, message, fix, gate).with_records(add);
    };
    let message = if cname_loop(name, f.chain) {
        format!(
            "{name}'s CNAMEs loop ({name} → {}), so it resolves to no address",
            f.chain
                .iter()
                .map(Domain::as_str)
                .collect::<Vec<_>>()
                .join(" → ")
        )
    } else {
        format!(
            "{name} is a CNAME to {}, but {last} has no A or AAAA record",
            list(f.chain)
        )
    };
    let fix = match &s.cname_target {
        Some(target) if f.chain.contains(target) => format!(
            "Tell the edge's operator: {target}, the edge's own name, does not resolve. Nothing to change on your side."
        ),
        _ if s.is_configured() => {
            let delete = existing(name, "CNAME", f.chain[0].as_str());
            let add = wanted(f, s);
            let fix = format!(
                "Delete the CNAME:\n{}\nthen {}",
                delete.line(),
                lowercase_first(&add_text(f, s, &add))
            );
            let records = std::iter::once(delete).chain(add).collect();
            return Check::fail(CheckId::Resolves, message, fix, gate).with_records(records);
        }
        _ => format!("Make {last} resolve, or point {name} straight at the edge."),
    };
    Check::fail(CheckId::Resolves, message, fix, gate)
}

fn points_to_edge(f: &Found<'_>, s: &Settings) -> Check {
    let name = f.name;
    if !s.is_configured() {
        return Check::warn(
            CheckId::PointsToEdge,
            format!(
                "not checked: the edge does not say where {name} must point (no onboarding.cname_target or onboarding.addresses)"
            ),
            Some(
                "Edge operator: set [onboarding] cname_target (or addresses) in the edge's config."
                    .into(),
            ),
        );
    }
    if let Some(target) = &s.cname_target
        && let Some(i) = f.chain.iter().position(|c| c == target)
    {
        let via = if i == 0 {
            String::new()
        } else {
            format!(" (through {})", list(&f.chain[..i]))
        };
        return Check::pass(
            CheckId::PointsToEdge,
            format!("{name} is a CNAME to {target}{via}"),
        );
    }
    // Judge IPv4 when there is any (the no-stray-aaaa check covers IPv6), else IPv6.
    let judged = if f.v4.is_empty() { &f.v6 } else { &f.v4 };
    let stray: Vec<&IpAddr> = judged.iter().filter(|ip| !f.edge.contains(ip)).collect();
    if stray.is_empty() && !f.edge.is_empty() {
        let at = if f.chain.is_empty() {
            String::new()
        } else {
            format!(" through the CNAME {}", list(f.chain))
        };
        // Addresses only the target resolves to: an ALIAS or a flattened CNAME, or copies.
        let from_target: Vec<&IpAddr> = judged
            .iter()
            .filter(|ip| !s.addresses.contains(ip))
            .collect();
        let of_target = match &s.cname_target {
            Some(target) if from_target.len() == judged.len() => {
                format!(", as {target} does")
            }
            Some(target) if !from_target.is_empty() => {
                format!(" ({} as {target} does)", list(&from_target))
            }
            _ => String::new(),
        };
        return Check::pass(
            CheckId::PointsToEdge,
            format!("{name} points at the edge{at}: {}{of_target}", list(judged)),
        );
    }
    // A name with address records of its own may be an ALIAS to the target; one that is a
    // CNAME elsewhere is not, whatever the target resolves to.
    if let Some(why) = &f.target_unknown
        && f.chain.is_empty()
    {
        return not_judged(CheckId::PointsToEdge, name, &stray, s, why);
    }
    let owner = f.owner();
    let message = if let Some(first) = f.chain.first() {
        match &s.cname_target {
            Some(target) => format!("{name} is a CNAME to {first}, not to {target}"),
            None => format!(
                "{name} is a CNAME to {first}, which points at {}, not at the edge ({})",
                list(&stray),
                list(&s.addresses)
            ),
        }
    } else {
        let kind = stray.first().map_or("A", |ip| address_type(ip));
        format!(
            "{name} has {} {} that {} not the edge's",
            plural(
                stray.len(),
                &format!("an {kind} record"),
                &format!("{kind} records")
            ),
            list(&stray),
            plural(stray.len(), "is", "are"),
        )
    };
    // A CNAME cannot share its name with other records: replacing with a CNAME deletes every
    // address record; pointing with addresses deletes the stray ones and any CNAME.
    let by_address = f.by_address(s);
    let mut delete: Vec<FixRecord> = Vec::new();
    if let Some(first) = f.chain.first() {
        delete.push(existing(name, "CNAME", first.as_str()));
    } else if !by_address {
        delete.extend(
            f.all()
                .map(|ip| existing(owner, address_type(ip), &ip.to_string())),
        );
    } else {
        delete.extend(
            stray
                .iter()
                .map(|ip| existing(owner, address_type(ip), &ip.to_string())),
        );
    }
    let same_family = |ip: &&IpAddr| judged.first().is_some_and(|j| ip.is_ipv4() == j.is_ipv4());
    let add: Vec<FixRecord> = match by_address {
        // The edge has addresses of the family judged: those it lacks. It has none (only IPv4
        // edge addresses for a name with only AAAA records): all of its own, or deleting the
        // stray ones would leave the name without any.
        true if f.chain.is_empty() && f.edge.iter().any(|ip| same_family(&ip)) => f
            .edge
            .iter()
            .filter(|ip| !judged.contains(ip) && same_family(ip))
            .map(|ip| address_record(name, ip))
            .collect(),
        _ => wanted(f, s),
    };
    let mut fix = delete_then_add(&delete, &add);
    if let Some(alias) = apex_alias(f, s) {
        fix = format!("{alias} Otherwise:\n{fix}");
    }
    let records = delete.into_iter().chain(add).collect();
    Check::fail(CheckId::PointsToEdge, message, fix, true).with_records(records)
}

fn no_stray_aaaa(f: &Found<'_>, s: &Settings) -> Check {
    let name = f.name;
    if let Some(target) = &s.cname_target
        && f.chain.contains(target)
    {
        return Check::pass(
            CheckId::NoStrayAaaa,
            format!("{name}'s IPv6 addresses come from {target}"),
        );
    }
    let stray: Vec<&IpAddr> = f.v6.iter().filter(|ip| !f.edge.contains(ip)).collect();
    if stray.is_empty() {
        let message = if f.v6.is_empty() {
            format!("{name} has no AAAA record")
        } else {
            format!("{name}'s AAAA records point at the edge: {}", list(&f.v6))
        };
        return Check::pass(CheckId::NoStrayAaaa, message);
    }
    if let Some(why) = &f.target_unknown
        && f.chain.is_empty()
    {
        return not_judged(CheckId::NoStrayAaaa, name, &stray, s, why);
    }
    let owner = f.owner();
    let a_right = !f.v4.is_empty() && f.v4.iter().all(|ip| f.edge.contains(ip));
    let message = format!(
        "{owner} has {} {} that {} not the edge's{}: IPv6 clients, and the CA (which tries IPv6 first), reach another server",
        plural(stray.len(), "an AAAA record", "AAAA records"),
        list(&stray),
        plural(stray.len(), "is", "are"),
        if a_right {
            ", while its A records are right"
        } else {
            ""
        },
    );
    let delete: Vec<FixRecord> = stray
        .iter()
        .map(|ip| existing(owner, "AAAA", &ip.to_string()))
        .collect();
    let add: Vec<FixRecord> = if f.by_address(s) {
        f.edge
            .iter()
            .filter(|ip| ip.is_ipv6() && !f.v6.contains(ip))
            .map(|ip| address_record(owner, ip))
            .collect()
    } else {
        Vec::new()
    };
    let fix = delete_then_add(&delete, &add);
    let records = delete.into_iter().chain(add).collect();
    Check::fail(CheckId::NoStrayAaaa, message, fix, true).with_records(records)
}

/// `Delete this record: … then add: …` (the second part only if `add` is not empty).
fn delete_then_add(delete: &[FixRecord], add: &[FixRecord]) -> String {
    let mut fix = format!(
        "Delete {}:\n{}",
        plural(delete.len(), "this record", "these records"),
        lines(delete)
    );
    if !add.is_empty() {
        fix.push_str(&format!("\nthen add:\n{}", lines(add)));
    }
    fix
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests;
