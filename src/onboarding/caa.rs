//! CAA (RFC 8659) as a CA applies it, over records already fetched: may a CA with one of our
//! identities issue a (non-wildcard) certificate for the name? And the `caa` check that says so,
//! with the record to add when it may not. Pure; the lookup that climbs the tree is in
//! [`super::dns`].

use super::escape::escape;
use super::zone::{FixRecord, existing, list, record};
use super::{Check, CheckId, Settings};
use crate::Domain;

/// One CAA record: flags, tag and raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaaRecord {
    /// The flags octet as DNS serves it (RFC 8659 §4.1).
    pub flags: u8,
    /// The property tag (`issue`, `issuewild`, `iodef`, …).
    pub tag: String,
    /// The property value as text.
    pub value: String,
}

impl CaaRecord {
    /// Whether the record is marked critical: the issuer-critical bit (128), or the bit of
    /// value 1, which zone tools misreading the RFC set meaning it, and which Let's Encrypt
    /// reads as critical too.
    pub fn critical(&self) -> bool {
        self.flags & (128 | 1) != 0
    }

    /// The record in zone-file form, at `owner`; control characters of the tag and value (as
    /// the customer's DNS served them) escaped, so the line stays one line.
    pub fn zone_line(&self, owner: &Domain) -> String {
        self.to_delete(owner).line()
    }

    /// The record at `owner` as one to delete, escaped like [`CaaRecord::zone_line`].
    pub fn to_delete(&self, owner: &Domain) -> FixRecord {
        let value = format!(
            "{} {} \"{}\"",
            self.flags,
            escape(&self.tag),
            escape(&self.value)
        );
        existing(owner, "CAA", &value)
    }
}

/// The relevant CAA RRset (RFC 8659 §3): the first non-empty one climbing from the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaaSet {
    /// The name that holds it: the name itself or a parent, or where a CNAME at one of them
    /// leads.
    pub owner: Domain,
    /// The name (the checked one or a parent) whose CNAME led to `owner`; none without one.
    pub alias: Option<Domain>,
    /// Its records.
    pub records: Vec<CaaRecord>,
}

impl CaaSet {
    /// Where the set is, for messages: `CAA at owner`, saying whose CNAME led there.
    fn at(&self) -> String {
        match &self.alias {
            Some(alias) => format!("CAA at {} (where the CNAME of {alias} leads)", self.owner),
            None => format!("CAA at {}", self.owner),
        }
    }

    /// What a fix at `owner` needs said first: records outside the checked name's own zone
    /// (reached through a CNAME) are changed by whoever runs that zone, and a record cannot
    /// sit next to the CNAME.
    fn who(&self) -> String {
        match &self.alias {
            Some(alias) => format!(
                "These records are at {}, where the CNAME of {alias} leads (no CAA record can sit next to a CNAME): whoever runs the zone of {} changes them.\n",
                self.owner, self.owner
            ),
            None => String::new(),
        }
    }
}

/// What the relevant RRset means for our CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No CAA records anywhere up the tree: any CA may issue.
    NoRecords,
    /// The RRset has no `issue` property: any CA may issue non-wildcard certificates.
    NoIssueProperty,
    /// An `issue` property names one of our identities (the one named).
    Allowed(String),
    /// `issue` properties exist and none names our identities; the identities they do allow
    /// (empty: `issue ";"`, which allows no CA).
    NotAllowed(Vec<String>),
    /// An `issue` property names our identity but restricts validation methods to ones the
    /// edge does not use (RFC 8657 `validationmethods`).
    MethodsExcluded(String, String),
    /// An `issue` property names our identity (the first) for one ACME account only (RFC 8657
    /// `accounturi`, the second), and none without, and the edge has no account yet to compare
    /// it with: the CA refuses unless it is the one the edge creates.
    AccountBound(String, String),
    /// Every `issue` property naming our identity (the first) binds it to an ACME account
    /// (the second) other than the edge's (the third): the CA refuses.
    OtherAccount(String, String, String),
    /// A critical property the CA does not understand: no CA may issue (RFC 8659 §4.5).
    UnknownCritical(String),
    /// An `issue` property names our identity (the first) with a value (the second) a CA does
    /// not parse (why: the third), and no other allows: the CA ignores it, and refuses.
    Malformed(String, String, String),
}

/// Applies RFC 8659 §4 (and RFC 8657's parameters) to `set` for a CA known by any of
/// `identities` (lowercase), validating with `methods` (RFC 8657 method names: the configured
/// challenges), through the edge's ACME `account` (its URL; None before the first order
/// creates it).
pub fn verdict(
    set: Option<&CaaSet>,
    identities: &[String],
    methods: &[&str],
    account: Option<&str>,
) -> Verdict {
    let Some(set) = set else {
        return Verdict::NoRecords;
    };
    // As Let's Encrypt knows them: `issuemail` (RFC 9495, S/MIME) too, so a critical one does
    // not hold back a TLS certificate.
    let known = |tag: &str| ["issue", "issuewild", "iodef", "issuemail"].contains(&tag);
    if let Some(r) = set
        .records
        .iter()
        .find(|r| r.critical() && !known(&r.tag.to_ascii_lowercase()))
    {
        return Verdict::UnknownCritical(r.tag.clone());
    }
    let issue: Vec<(&str, IssueValue)> = set
        .records
        .iter()
        .filter(|r| r.tag.eq_ignore_ascii_case("issue"))
        .map(|r| (r.value.as_str(), parse_issue_value(&r.value)))
        .collect();
    if issue.is_empty() {
        return Verdict::NoIssueProperty;
    }
    let (mut excluded, mut bound, mut malformed) = (None, None, None);
    for (value, IssueValue { issuer, params }) in &issue {
        if !identities.iter().any(|i| i == issuer) {
            // The CA compares the name as written: `LetsEncrypt.org` or `letsencrypt.org.` is
            // another CA's to it.
            if let Some(id) = identities
                .iter()
                .find(|i| issuer.trim_end_matches('.').eq_ignore_ascii_case(i))
            {
                malformed = Some(Verdict::Malformed(
                    id.clone(),
                    (*value).to_owned(),
                    format!(
                        "the CA compares its name exactly as written, and {:?} is not {id:?}",
                        escape(issuer)
                    ),
                ));
            }
            continue;
        }
        let params = match params {
            Ok(params) => params,
            Err(why) => {
                malformed = Some(Verdict::Malformed(
                    issuer.clone(),
                    (*value).to_owned(),
                    why.clone(),
                ));
                continue;
            }
        };
        // RFC 8657 §3: a property with two `accounturi` can match no account; Let's Encrypt
        // refuses two `validationmethods` too.
        if let Some(twice) = ["accounturi", "validationmethods"]
            .into_iter()
            .find(|t| params.iter().filter(|(k, _)| k == t).count() > 1)
        {
            malformed = Some(Verdict::Malformed(
                issuer.clone(),
                (*value).to_owned(),
                format!("{twice} is given twice, which matches nothing"),
            ));
            continue;
        }
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        if let Some(allowed) = param("validationmethods") {
            // RFC 8657 §4: a method that is not one is a malformed record, not one left out.
            if let Some(bad) = allowed.split(',').find(|m| {
                m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }) {
                malformed = Some(Verdict::Malformed(
                    issuer.clone(),
                    (*value).to_owned(),
                    format!("validationmethods has {bad:?}, which is no method name"),
                ));
                continue;
            }
            if !allowed.split(',').any(|m| methods.contains(&m)) {
                excluded = Some(Verdict::MethodsExcluded(issuer.clone(), allowed.clone()));
                continue;
            }
        }
        bound = match (param("accounturi"), account) {
            (None, _) => return Verdict::Allowed(issuer.clone()),
            (Some(uri), Some(ours)) if same_account(uri, ours) => {
                return Verdict::Allowed(issuer.clone());
            }
            (Some(uri), Some(ours)) => Some(Verdict::OtherAccount(
                issuer.clone(),
                uri.clone(),
                ours.to_owned(),
            )),
            (Some(uri), None) => Some(Verdict::AccountBound(issuer.clone(), uri.clone())),
        };
    }
    if let Some(v) = bound.or(malformed).or(excluded) {
        return v;
    }
    let mut allowed: Vec<String> = issue
        .into_iter()
        .map(|(_, v)| v.issuer)
        .filter(|i| !i.is_empty())
        .collect();
    allowed.dedup();
    Verdict::NotAllowed(allowed)
}

/// Whether a CAA `accounturi` names the account at `ours`: the same URL, as a CA compares it
/// (RFC 8657 §3). Let's Encrypt also knows each account by its ACME v1 URL (`acme/reg/ID` on
/// the v1 host of the same environment), and takes that form too.
fn same_account(uri: &str, ours: &str) -> bool {
    uri == ours || lets_encrypt_v1_url(ours).is_some_and(|v1| uri == v1)
}

/// The ACME v1 URL Let's Encrypt also knows the account at `ours` by, for its production and
/// staging v2 URLs.
fn lets_encrypt_v1_url(ours: &str) -> Option<String> {
    const FORMS: [(&str, &str); 2] = [
        (
            "https://acme-v02.api.letsencrypt.org/acme/acct/",
            "https://acme-v01.api.letsencrypt.org/acme/reg/",
        ),
        (
            "https://acme-staging-v02.api.letsencrypt.org/acme/acct/",
            "https://acme-staging.api.letsencrypt.org/acme/reg/",
        ),
    ];
    FORMS.iter().find_map(|(v2, v1)| {
        let id = ours.strip_prefix(v2)?;
        Some(format!("{v1}{id}"))
    })
}

/// An `issue` value (RFC 8659 §4.2), split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueValue {
    /// The issuer domain as written (a CA compares it so); empty for `;`.
    pub issuer: String,
    /// Its `tag=value` parameters (tags lowercase), or why they do not parse as a CA parses
    /// them: the record then allows no CA.
    pub params: Result<Vec<(String, String)>, String>,
}

/// Splits an `issue` value as a CA does (RFC 8659 §4.2): spaces and tabs around the issuer,
/// the tags and the values are allowed, as is one `;` with nothing after it; a parameter without
/// `=`, an empty one (`;;`), a tag of other than letters and digits (RFC 8659 allows inner
/// hyphens, Let's Encrypt does not), or a value with a space, a control character or a
/// non-ASCII byte (`validationmethods=http-01, tls-alpn-01`) makes the record malformed.
pub fn parse_issue_value(value: &str) -> IssueValue {
    let wsp = |c: char| c == ' ' || c == '\t';
    let mut parts = value.split(';');
    let issuer = parts.next().unwrap_or("").trim_matches(wsp).to_owned();
    let rest: Vec<&str> = parts.collect();
    let params = match rest.as_slice() {
        [] => Ok(Vec::new()),
        [only] if only.trim_matches(wsp).is_empty() => Ok(Vec::new()),
        params => params.iter().map(|p| parse_parameter(p, wsp)).collect(),
    };
    IssueValue { issuer, params }
}

/// One `tag=value` parameter of an `issue` value.
fn parse_parameter(p: &str, wsp: impl Fn(char) -> bool + Copy) -> Result<(String, String), String> {
    let Some((tag, value)) = p.split_once('=') else {
        return Err(format!(
            "the parameter {:?} is not written tag=value",
            escape(p)
        ));
    };
    let (tag, value) = (tag.trim_matches(wsp), value.trim_matches(wsp));
    if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!(
            "the parameter tag {:?} is not letters and digits",
            escape(tag)
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|&c| !matches!(c, '\x21'..='\x3a' | '\x3c'..='\x7e'))
    {
        return Err(format!(
            "the value of {tag} has {:?}, which a parameter value cannot hold (no spaces)",
            escape(&bad.to_string())
        ));
    }
    Ok((tag.to_ascii_lowercase(), value.to_owned()))
}

/// The `caa` check over the relevant RRset `set` of `name`, for the edge's ACME `account` (see
/// [`verdict`]).
pub fn check(
    name: &Domain,
    set: Option<&CaaSet>,
    s: &Settings,
    account: Option<&str>,
    gate: bool,
) -> Check {
    let ours = s
        .caa_identities
        .first()
        .map_or("letsencrypt.org", String::as_str);
    let allow = |owner: &Domain| record(owner, "CAA", &format!("0 issue \"{ours}\""));
    // Orders answer the first configured challenge the CA offers, and an ACME CA offers them
    // all: that one is what `validationmethods` must allow.
    let used = s.challenges.first().map_or("http-01", |c| c.as_str());
    match (verdict(set, &s.caa_identities, &[used], account), set) {
        (Verdict::NoRecords, _) | (_, None) => Check::pass(
            CheckId::Caa,
            format!("no CAA record on {name} or its parents: every CA may issue"),
        ),
        (Verdict::NoIssueProperty, Some(set)) => Check::pass(
            CheckId::Caa,
            format!("{} has no issue property: every CA may issue", set.at()),
        ),
        (Verdict::Allowed(id), Some(set)) => {
            Check::pass(CheckId::Caa, format!("{} allows {id}", set.at()))
        }
        (Verdict::NotAllowed(others), Some(set)) if others.is_empty() => replace_issue(
            set,
            |r| parse_issue_value(&r.value).issuer.is_empty(),
            "0 issue \";\"",
            allow(&set.owner),
            format!(
                "{} forbids every CA (issue \";\"), so {ours} will refuse to issue for {name}",
                set.at()
            ),
            "",
            gate,
        ),
        (Verdict::NotAllowed(others), Some(set)) => Check::fail(
            CheckId::Caa,
            format!(
                "{} allows only {}, not {ours}, so {ours} will refuse to issue for {name}",
                set.at(),
                list(&others)
            ),
            format!(
                "{}Add this record next to the existing ones (they keep working for their CA):\n{}",
                set.who(),
                allow(&set.owner).line()
            ),
            gate,
        )
        .with_records(vec![allow(&set.owner)]),
        (Verdict::MethodsExcluded(id, methods), Some(set)) => Check::fail(
            CheckId::Caa,
            format!(
                "{} allows {id} only with validationmethods={methods}; the edge's orders validate with {used}",
                set.at(),
            ),
            format!(
                "{}Add this record next to the existing ones (or, edge operator: put a method it allows first in acme.challenges):\n{}",
                set.who(),
                allow(&set.owner).line()
            ),
            gate,
        )
        .with_records(vec![allow(&set.owner)]),
        (Verdict::AccountBound(id, uri), Some(set)) => Check::warn(
            CheckId::Caa,
            format!(
                "{} allows {id} only for the ACME account {}, and the edge has no account with {id} yet (its first order creates one): {id} will refuse to issue for {name} unless the record names that account",
                set.at(),
                escape(&uri)
            ),
            Some(format!(
                "Once the edge has ordered a certificate for any name, this check names its account for accounturi. Or add this record next to the existing ones:\n{}{}",
                set.who(),
                allow(&set.owner).line()
            )),
        ),
        (Verdict::OtherAccount(id, uri, ours_account), Some(set)) => {
            let add = record(
                &set.owner,
                "CAA",
                &format!("0 issue \"{id}; accounturi={ours_account}\""),
            );
            Check::fail(
                CheckId::Caa,
                format!(
                    "{} allows {id} only for the ACME account {}, not the edge's ({}), so {id} will refuse to issue for {name}",
                    set.at(),
                    escape(&uri),
                    escape(&ours_account)
                ),
                format!(
                    "{}Add this record next to the existing ones (they keep working for their account):\n{}",
                    set.who(),
                    add.line()
                ),
                gate,
            )
            .with_records(vec![add])
        }
        (Verdict::UnknownCritical(tag), Some(set)) => {
            let delete: Vec<FixRecord> = set
                .records
                .iter()
                .find(|r| r.critical() && r.tag == tag)
                .map(|r| r.to_delete(&set.owner))
                .into_iter()
                .collect();
            let line = delete.first().map(FixRecord::line).unwrap_or_default();
            Check::fail(
                CheckId::Caa,
                format!(
                    "{} has the critical property {tag:?}, which CAs do not understand: no CA may issue",
                    set.at()
                ),
                format!(
                    "{}Delete this record (or set its flags to 0):\n{line}",
                    set.who()
                ),
                gate,
            )
            .with_records(delete)
        }
        (Verdict::Malformed(id, value, why), Some(set)) => replace_issue(
            set,
            |r| r.value == value,
            &format!("0 issue \"{}\"", escape(&value)),
            allow(&set.owner),
            format!(
                "{} has issue \"{}\" for {id}, but CAs ignore that record: {why}; so {id} will refuse to issue for {name}",
                set.at(),
                escape(&value)
            ),
            "\n(a parameter it had goes back as tag=value, with no spaces in the value: validationmethods=http-01,tls-alpn-01)",
            gate,
        ),
    }
}

/// A failed `caa` check whose fix replaces the `issue` record of `set` that `matches` (as DNS
/// serves it, its flags and spacing, so deleting it matches; `written` when none is found) with
/// `add`, the fix's text ending with `after`.
fn replace_issue(
    set: &CaaSet,
    matches: impl Fn(&CaaRecord) -> bool,
    written: &str,
    add: FixRecord,
    message: String,
    after: &str,
    gate: bool,
) -> Check {
    let delete = set
        .records
        .iter()
        .find(|r| r.tag.eq_ignore_ascii_case("issue") && matches(r))
        .map_or_else(
            || existing(&set.owner, "CAA", written),
            |r| r.to_delete(&set.owner),
        );
    let fix = format!(
        "{}Replace the CAA record:\n{}\nwith:\n{}{after}",
        set.who(),
        delete.line(),
        add.line()
    );
    Check::fail(CheckId::Caa, message, fix, gate).with_records(vec![delete, add])
}

#[cfg(test)]
mod tests;
