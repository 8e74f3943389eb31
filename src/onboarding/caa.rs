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
    /// The issuer-critical flag (RFC 8659 §4.1).
    pub critical: bool,
    /// The property tag (`issue`, `issuewild`, `iodef`, …).
    pub tag: String,
    /// The property value as text.
    pub value: String,
}

impl CaaRecord {
    /// The record in zone-file form, at `owner`; control characters of the tag and value (as
    /// the customer's DNS served them) escaped, so the line stays one line.
    pub fn zone_line(&self, owner: &Domain) -> String {
        self.to_delete(owner).line()
    }

    /// The record at `owner` as one to delete, escaped like [`CaaRecord::zone_line`].
    pub fn to_delete(&self, owner: &Domain) -> FixRecord {
        let value = format!(
            "{} {} \"{}\"",
            if self.critical { 128 } else { 0 },
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
    /// `accounturi`, the second), and none without: the CA refuses unless it is the edge's.
    AccountBound(String, String),
    /// A critical property the CA does not understand: no CA may issue (RFC 8659 §4.5).
    UnknownCritical(String),
}

/// Applies RFC 8659 §4 (and RFC 8657's parameters) to `set` for a CA known by any of
/// `identities` (lowercase), validating with `methods` (RFC 8657 method names: the configured
/// challenges).
pub fn verdict(set: Option<&CaaSet>, identities: &[String], methods: &[&str]) -> Verdict {
    let Some(set) = set else {
        return Verdict::NoRecords;
    };
    let known = |tag: &str| ["issue", "issuewild", "iodef"].contains(&tag);
    if let Some(r) = set
        .records
        .iter()
        .find(|r| r.critical && !known(&r.tag.to_ascii_lowercase()))
    {
        return Verdict::UnknownCritical(r.tag.clone());
    }
    let issue: Vec<(String, Vec<(String, String)>)> = set
        .records
        .iter()
        .filter(|r| r.tag.eq_ignore_ascii_case("issue"))
        .map(|r| parse_issue_value(&r.value))
        .collect();
    if issue.is_empty() {
        return Verdict::NoIssueProperty;
    }
    let (mut excluded, mut bound) = (None, None);
    for (issuer, params) in &issue {
        if !identities.iter().any(|i| i == issuer) {
            continue;
        }
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        if let Some(allowed) = param("validationmethods")
            && !allowed.split(',').any(|m| methods.contains(&m.trim()))
        {
            excluded = Some(Verdict::MethodsExcluded(issuer.clone(), allowed.clone()));
            continue;
        }
        match param("accounturi") {
            Some(uri) => bound = Some(Verdict::AccountBound(issuer.clone(), uri.clone())),
            None => return Verdict::Allowed(issuer.clone()),
        }
    }
    if let Some(v) = bound.or(excluded) {
        return v;
    }
    let mut allowed: Vec<String> = issue
        .into_iter()
        .map(|(issuer, _)| issuer)
        .filter(|i| !i.is_empty())
        .collect();
    allowed.dedup();
    Verdict::NotAllowed(allowed)
}

/// Splits an `issue` value (RFC 8659 §4.2) into the issuer domain (lowercase; empty for `;`)
/// and its `key=value` parameters. Lenient about spaces, as CAs are.
pub fn parse_issue_value(value: &str) -> (String, Vec<(String, String)>) {
    let mut parts = value.split(';');
    let issuer = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    (issuer, params)
}

/// The `caa` check over the relevant RRset `set` of `name`.
pub fn check(name: &Domain, set: Option<&CaaSet>, s: &Settings, gate: bool) -> Check {
    let ours = s
        .caa_identities
        .first()
        .map_or("letsencrypt.org", String::as_str);
    let allow = |owner: &Domain| record(owner, "CAA", &format!("0 issue \"{ours}\""));
    // Orders answer the first configured challenge the CA offers, and an ACME CA offers them
    // all: that one is what `validationmethods` must allow.
    let used = s.challenges.first().map_or("http-01", |c| c.as_str());
    match (verdict(set, &s.caa_identities, &[used]), set) {
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
        (Verdict::NotAllowed(others), Some(set)) if others.is_empty() => {
            // The record as DNS serves it (its flags and spacing), so deleting it matches.
            let delete = set
                .records
                .iter()
                .find(|r| {
                    r.tag.eq_ignore_ascii_case("issue") && parse_issue_value(&r.value).0.is_empty()
                })
                .map_or_else(
                    || existing(&set.owner, "CAA", "0 issue \";\""),
                    |r| r.to_delete(&set.owner),
                );
            let add = allow(&set.owner);
            Check::fail(
                CheckId::Caa,
                format!(
                    "{} forbids every CA (issue \";\"), so {ours} will refuse to issue for {name}",
                    set.at()
                ),
                format!(
                    "{}Replace the CAA record:\n{}\nwith:\n{}",
                    set.who(),
                    delete.line(),
                    add.line()
                ),
                gate,
            )
            .with_records(vec![delete, add])
        }
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
                "{} allows {id} only for the ACME account {}: {id} refuses to issue for {name} unless that is the edge's account",
                set.at(),
                escape(&uri)
            ),
            Some(format!(
                "If the edge's certificates for {name} fail with a CAA error, that account is not the edge's: ask the edge operator for the account URL to put in accounturi, or add this record next to the existing ones:\n{}{}",
                set.who(),
                allow(&set.owner).line()
            )),
        ),
        (Verdict::UnknownCritical(tag), Some(set)) => {
            let delete: Vec<FixRecord> = set
                .records
                .iter()
                .find(|r| r.critical && r.tag == tag)
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ChallengeKind;

    fn set(records: &[(bool, &str, &str)]) -> CaaSet {
        CaaSet {
            owner: Domain::parse("example.com").unwrap(),
            alias: None,
            records: records
                .iter()
                .map(|(critical, tag, value)| CaaRecord {
                    critical: *critical,
                    tag: (*tag).into(),
                    value: (*value).into(),
                })
                .collect(),
        }
    }

    fn le() -> Vec<String> {
        vec!["letsencrypt.org".into()]
    }

    const METHODS: &[&str] = &["http-01", "tls-alpn-01"];

    #[test]
    fn no_records_or_no_issue_property_allow_any_ca() {
        assert_eq!(verdict(None, &le(), METHODS), Verdict::NoRecords);
        let s = set(&[
            (false, "iodef", "mailto:sec@example.com"),
            (false, "issuewild", ";"),
        ]);
        assert_eq!(verdict(Some(&s), &le(), METHODS), Verdict::NoIssueProperty);
    }

    #[test]
    fn issue_for_our_identity_allows_with_or_without_parameters() {
        let s = set(&[
            (false, "issue", "other-ca.example"),
            (false, "issue", "LetsEncrypt.org; validationmethods=http-01"),
        ]);
        assert_eq!(
            verdict(Some(&s), &le(), METHODS),
            Verdict::Allowed("letsencrypt.org".into())
        );
    }

    /// RFC 8657's `accounturi`: the edge cannot tell from DNS whether the account is its own,
    /// so the check says what the CA will compare (a warning, holding nothing back); another
    /// record for the identity without it allows outright.
    #[test]
    fn issue_bound_to_an_account_is_named() {
        let s = set(&[(
            false,
            "issue",
            "letsencrypt.org; accounturi=https://acme.example/acct/999",
        )]);
        assert_eq!(
            verdict(Some(&s), &le(), METHODS),
            Verdict::AccountBound(
                "letsencrypt.org".into(),
                "https://acme.example/acct/999".into()
            )
        );
        let name = Domain::parse("links.example.com").unwrap();
        let c = check(&name, Some(&s), &Settings::example(), true);
        assert_eq!(c.status, crate::onboarding::CheckStatus::Warn);
        assert!(
            c.message.contains("https://acme.example/acct/999"),
            "{}",
            c.message
        );
        let s = set(&[
            (
                false,
                "issue",
                "letsencrypt.org; accounturi=https://acme.example/acct/999",
            ),
            (false, "issue", "letsencrypt.org"),
        ]);
        assert!(matches!(
            verdict(Some(&s), &le(), METHODS),
            Verdict::Allowed(_)
        ));
    }

    #[test]
    fn issue_for_another_ca_or_nobody_is_named() {
        let s = set(&[
            (false, "issue", "other-ca.example"),
            (false, "issue", "other-ca.example"),
        ]);
        assert_eq!(
            verdict(Some(&s), &le(), METHODS),
            Verdict::NotAllowed(vec!["other-ca.example".into()])
        );
        let s = set(&[(false, "issue", ";")]);
        assert_eq!(
            verdict(Some(&s), &le(), METHODS),
            Verdict::NotAllowed(vec![])
        );
    }

    #[test]
    fn unknown_critical_tag_forbids_issuance() {
        let s = set(&[(false, "issue", "letsencrypt.org"), (true, "tbs", "x")]);
        assert_eq!(
            verdict(Some(&s), &le(), METHODS),
            Verdict::UnknownCritical("tbs".into())
        );
        // Not critical: ignored.
        let s = set(&[(false, "issue", "letsencrypt.org"), (false, "tbs", "x")]);
        assert!(matches!(
            verdict(Some(&s), &le(), METHODS),
            Verdict::Allowed(_)
        ));
    }

    #[test]
    fn validation_methods_the_edge_does_not_use_are_reported() {
        let s = set(&[(false, "issue", "letsencrypt.org; validationmethods=dns-01")]);
        assert_eq!(
            verdict(Some(&s), &le(), METHODS),
            Verdict::MethodsExcluded("letsencrypt.org".into(), "dns-01".into())
        );
        let s = set(&[(
            false,
            "issue",
            "letsencrypt.org; validationmethods=dns-01,http-01",
        )]);
        assert!(matches!(
            verdict(Some(&s), &le(), METHODS),
            Verdict::Allowed(_)
        ));
        // The check asks for the challenge orders use: the first configured one (the CA offers
        // every one), whatever else is configured after it.
        let s = set(&[(
            false,
            "issue",
            "letsencrypt.org; validationmethods=tls-alpn-01",
        )]);
        assert_eq!(
            verdict(Some(&s), &le(), &["http-01"]),
            Verdict::MethodsExcluded("letsencrypt.org".into(), "tls-alpn-01".into())
        );
        let name = Domain::parse("links.example.com").unwrap();
        let c = check(&name, Some(&s), &Settings::example(), true);
        assert_eq!(c.status, crate::onboarding::CheckStatus::Fail);
        assert!(
            c.message
                .ends_with("the edge's orders validate with http-01"),
            "{}",
            c.message
        );
        let settings = Settings {
            challenges: vec![ChallengeKind::TlsAlpn01, ChallengeKind::Http01],
            ..Settings::example()
        };
        let c = check(&name, Some(&s), &settings, true);
        assert_eq!(c.status, crate::onboarding::CheckStatus::Pass);
    }

    #[test]
    fn configured_identities_compare_without_a_trailing_dot() {
        let mut config = crate::config::Config::default();
        config.onboarding.caa_identities = vec!["LetsEncrypt.org.".into()];
        let settings = Settings::from_config(&config);
        let s = set(&[(false, "issue", "letsencrypt.org")]);
        assert_eq!(
            verdict(Some(&s), &settings.caa_identities, METHODS),
            Verdict::Allowed("letsencrypt.org".into())
        );
    }

    #[test]
    fn values_with_control_characters_are_shown_escaped() {
        let settings = Settings::example();
        let name = Domain::parse("links.example.com").unwrap();
        let hostile = "ca.example\u{1b}[2J\u{7}\n\u{9b}31m\u{2028}\u{202e}";
        let s = set(&[(false, "issue", hostile)]);
        let c = check(&name, Some(&s), &settings, true);
        assert!(
            c.message
                .contains("ca.example\\u{1b}[2j\\u{7}\\u{a}\\u{9b}31m\\u{2028}\\u{202e}"),
            "{}",
            c.message
        );
        let s = set(&[(true, "tbs", hostile)]);
        let c = check(&name, Some(&s), &settings, true);
        let fix = c.fix.unwrap();
        assert_eq!(fix.lines().count(), 2, "{fix}");
        for text in [&c.message, &fix] {
            assert!(
                !text
                    .chars()
                    .any(|ch| ch != '\n' && crate::onboarding::escape::is_unsafe(ch)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn zone_line_quotes_the_value() {
        let r = CaaRecord {
            critical: false,
            tag: "issue".into(),
            value: "letsencrypt.org".into(),
        };
        assert_eq!(
            r.zone_line(&Domain::parse("example.com").unwrap()),
            "example.com. IN CAA 0 issue \"letsencrypt.org\""
        );
    }
}
