use super::*;
use crate::config::ChallengeKind;

fn set(records: &[(bool, &str, &str)]) -> CaaSet {
    CaaSet {
        owner: Domain::parse("example.com").unwrap(),
        alias: None,
        records: records
            .iter()
            .map(|(critical, tag, value)| CaaRecord {
                flags: if *critical { 128 } else { 0 },
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
    assert_eq!(verdict(None, &le(), METHODS, None), Verdict::NoRecords);
    let s = set(&[
        (false, "iodef", "mailto:sec@example.com"),
        (false, "issuewild", ";"),
    ]);
    assert_eq!(
        verdict(Some(&s), &le(), METHODS, None),
        Verdict::NoIssueProperty
    );
}

#[test]
fn issue_for_our_identity_allows_with_or_without_parameters() {
    let s = set(&[
        (false, "issue", "other-ca.example"),
        (false, "issue", "letsencrypt.org; validationmethods=http-01"),
    ]);
    assert_eq!(
        verdict(Some(&s), &le(), METHODS, None),
        Verdict::Allowed("letsencrypt.org".into())
    );
}

/// Let's Encrypt compares the issuer name as written: in capitals or with a final dot it names
/// another CA, and the check says which spelling the CA reads.
#[test]
fn issue_for_our_identity_misspelled_allows_nothing_and_is_named() {
    let name = Domain::parse("links.example.com").unwrap();
    for value in [
        "LetsEncrypt.org",
        "letsencrypt.org.",
        "LETSENCRYPT.ORG; accounturi=x",
    ] {
        let s = set(&[(false, "issue", value)]);
        let v = verdict(Some(&s), &le(), METHODS, None);
        assert!(
            matches!(&v, Verdict::Malformed(id, v, why) if id == "letsencrypt.org" && v == value && why.contains("exactly as written")),
            "{value}: {v:?}"
        );
        let c = check(&name, Some(&s), &Settings::example(), None, true);
        assert_eq!(c.status, crate::onboarding::CheckStatus::Fail, "{value}");
        let fix: Vec<String> = c.fix_records.iter().map(|r| r.line()).collect();
        assert_eq!(
            fix,
            [
                format!("example.com. IN CAA 0 issue \"{value}\""),
                "example.com. 300 IN CAA 0 issue \"letsencrypt.org\"".into()
            ]
        );
    }
}

/// A critical `issuemail` (RFC 9495, S/MIME) is a property Let's Encrypt knows: it holds back
/// no TLS certificate.
#[test]
fn a_critical_issuemail_property_is_known() {
    let s = set(&[
        (false, "issue", "letsencrypt.org"),
        (true, "issuemail", "ca.example"),
    ]);
    assert_eq!(
        verdict(Some(&s), &le(), METHODS, None),
        Verdict::Allowed("letsencrypt.org".into())
    );
}

/// RFC 8657's `accounturi` before the edge has an account (its first order creates it): the
/// check names the account the CA will compare (a warning, holding nothing back, or the first
/// order could never be made); another record for the identity without it allows outright.
#[test]
fn issue_bound_to_an_account_is_named() {
    let s = set(&[(
        false,
        "issue",
        "letsencrypt.org; accounturi=https://acme.example/acct/999",
    )]);
    assert_eq!(
        verdict(Some(&s), &le(), METHODS, None),
        Verdict::AccountBound(
            "letsencrypt.org".into(),
            "https://acme.example/acct/999".into()
        )
    );
    let name = Domain::parse("links.example.com").unwrap();
    let c = check(&name, Some(&s), &Settings::example(), None, true);
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
        verdict(Some(&s), &le(), METHODS, None),
        Verdict::Allowed(_)
    ));
}

/// With the edge's account known, `accounturi` is compared as the CA compares it: the edge's
/// own URL allows, another fails (holding orders back) and says which record to add, any record
/// for the edge's account among others allows.
#[test]
fn issue_bound_to_an_account_is_compared_with_the_edges() {
    const OURS: &str = "https://acme.example/acct/7";
    let name = Domain::parse("links.example.com").unwrap();
    let ours = set(&[(
        false,
        "issue",
        &format!("letsencrypt.org; accounturi={OURS}"),
    )]);
    assert_eq!(
        verdict(Some(&ours), &le(), METHODS, Some(OURS)),
        Verdict::Allowed("letsencrypt.org".into())
    );
    let c = check(&name, Some(&ours), &Settings::example(), Some(OURS), true);
    assert_eq!(c.status, crate::onboarding::CheckStatus::Pass, "{c:?}");

    let other = set(&[(
        false,
        "issue",
        "letsencrypt.org; accounturi=https://acme.example/acct/999",
    )]);
    assert_eq!(
        verdict(Some(&other), &le(), METHODS, Some(OURS)),
        Verdict::OtherAccount(
            "letsencrypt.org".into(),
            "https://acme.example/acct/999".into(),
            OURS.into()
        )
    );
    let c = check(&name, Some(&other), &Settings::example(), Some(OURS), true);
    assert_eq!(c.status, crate::onboarding::CheckStatus::Fail, "{c:?}");
    assert!(c.blocking);
    assert!(
        c.message.contains("acct/999") && c.message.contains(OURS),
        "{}",
        c.message
    );
    let added: Vec<String> = c.fix_records.iter().map(|r| r.line()).collect();
    assert_eq!(
        added,
        vec![format!(
            "example.com. 300 IN CAA 0 issue \"letsencrypt.org; accounturi={OURS}\""
        )]
    );

    // Compared as the CA compares it: the same URL, or for Let's Encrypt the account's ACME v1
    // URL in the same environment; nothing else ending in the same id.
    let ours = "https://acme-v02.api.letsencrypt.org/acme/acct/7";
    for (theirs, same) in [
        ("https://acme-v02.api.letsencrypt.org/acme/acct/7", true),
        ("https://acme-v01.api.letsencrypt.org/acme/reg/7", true),
        ("https://acme-v02.api.letsencrypt.org/acme/acct/7/", false),
        ("https://acme-v02.api.letsencrypt.org/acme/acct/7?x", false),
        (
            "https://acme-staging-v02.api.letsencrypt.org/acme/acct/7",
            false,
        ),
        ("https://acme-staging.api.letsencrypt.org/acme/reg/7", false),
        ("https://acme-v02.api.letsencrypt.org/other/7", false),
        ("https://evil.example.net/acct/7", false),
        ("https://acme-v02.api.letsencrypt.org/acme/acct/70", false),
        ("http://acme-v02.api.letsencrypt.org/acme/acct/7", false),
    ] {
        let record = set(&[(
            false,
            "issue",
            &format!("letsencrypt.org; accounturi={theirs}"),
        )]);
        let v = verdict(Some(&record), &le(), METHODS, Some(ours));
        assert_eq!(
            v == Verdict::Allowed("letsencrypt.org".into()),
            same,
            "{theirs}: {v:?}"
        );
    }
    let elsewhere = set(&[(
        false,
        "issue",
        "letsencrypt.org; accounturi=https://evil.example/acct/7",
    )]);
    assert!(matches!(
        verdict(Some(&elsewhere), &le(), METHODS, Some(OURS)),
        Verdict::OtherAccount(..)
    ));

    let both = set(&[
        (
            false,
            "issue",
            "letsencrypt.org; accounturi=https://acme.example/acct/999",
        ),
        (
            false,
            "issue",
            &format!("letsencrypt.org; accounturi={OURS}"),
        ),
    ]);
    assert!(matches!(
        verdict(Some(&both), &le(), METHODS, Some(OURS)),
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
        verdict(Some(&s), &le(), METHODS, None),
        Verdict::NotAllowed(vec!["other-ca.example".into()])
    );
    let s = set(&[(false, "issue", ";")]);
    assert_eq!(
        verdict(Some(&s), &le(), METHODS, None),
        Verdict::NotAllowed(vec![])
    );
}

#[test]
fn unknown_critical_tag_forbids_issuance() {
    let s = set(&[(false, "issue", "letsencrypt.org"), (true, "tbs", "x")]);
    assert_eq!(
        verdict(Some(&s), &le(), METHODS, None),
        Verdict::UnknownCritical("tbs".into())
    );
    // Flags 1: the bit zone tools set meaning critical, which Let's Encrypt reads so too. The
    // record to delete is written with the flags DNS serves.
    let mut s = set(&[(false, "issue", "letsencrypt.org"), (false, "tbs", "x")]);
    s.records[1].flags = 1;
    assert_eq!(
        verdict(Some(&s), &le(), METHODS, None),
        Verdict::UnknownCritical("tbs".into())
    );
    let name = Domain::parse("links.example.com").unwrap();
    let c = check(&name, Some(&s), &Settings::example(), None, true);
    assert_eq!(c.status, crate::onboarding::CheckStatus::Fail);
    assert_eq!(
        c.fix_records.iter().map(|r| r.line()).collect::<Vec<_>>(),
        ["example.com. IN CAA 1 tbs \"x\""]
    );
    // Not critical: ignored.
    let s = set(&[(false, "issue", "letsencrypt.org"), (false, "tbs", "x")]);
    assert!(matches!(
        verdict(Some(&s), &le(), METHODS, None),
        Verdict::Allowed(_)
    ));
}

#[test]
fn validation_methods_the_edge_does_not_use_are_reported() {
    let s = set(&[(false, "issue", "letsencrypt.org; validationmethods=dns-01")]);
    assert_eq!(
        verdict(Some(&s), &le(), METHODS, None),
        Verdict::MethodsExcluded("letsencrypt.org".into(), "dns-01".into())
    );
    let s = set(&[(
        false,
        "issue",
        "letsencrypt.org; validationmethods=dns-01,http-01",
    )]);
    assert!(matches!(
        verdict(Some(&s), &le(), METHODS, None),
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
        verdict(Some(&s), &le(), &["http-01"], None),
        Verdict::MethodsExcluded("letsencrypt.org".into(), "tls-alpn-01".into())
    );
    let name = Domain::parse("links.example.com").unwrap();
    let c = check(&name, Some(&s), &Settings::example(), None, true);
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
    let c = check(&name, Some(&s), &settings, None, true);
    assert_eq!(c.status, crate::onboarding::CheckStatus::Pass);
}

#[test]
fn configured_identities_compare_without_a_trailing_dot() {
    let mut config = crate::config::Config::default();
    config.onboarding.caa_identities = vec!["LetsEncrypt.org.".into()];
    let settings = Settings::from_config(&config);
    let s = set(&[(false, "issue", "letsencrypt.org")]);
    assert_eq!(
        verdict(Some(&s), &settings.caa_identities, METHODS, None),
        Verdict::Allowed("letsencrypt.org".into())
    );
}

#[test]
fn values_with_control_characters_are_shown_escaped() {
    let settings = Settings::example();
    let name = Domain::parse("links.example.com").unwrap();
    let hostile = "ca.example\u{1b}[2J\u{7}\n\u{9b}31m\u{2028}\u{202e}";
    let s = set(&[(false, "issue", hostile)]);
    let c = check(&name, Some(&s), &settings, None, true);
    assert!(
        c.message
            .contains("ca.example\\u{1b}[2J\\u{7}\\u{a}\\u{9b}31m\\u{2028}\\u{202e}"),
        "{}",
        c.message
    );
    let s = set(&[(true, "tbs", hostile)]);
    let c = check(&name, Some(&s), &settings, None, true);
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
        flags: 0,
        tag: "issue".into(),
        value: "letsencrypt.org".into(),
    };
    assert_eq!(
        r.zone_line(&Domain::parse("example.com").unwrap()),
        "example.com. IN CAA 0 issue \"letsencrypt.org\""
    );
}

/// An `issue` record a CA does not parse (RFC 8659 §4.2) allows no CA, whatever it names: the
/// check says which record and why, rather than that it allows the edge's CA.
#[test]
fn a_malformed_issue_record_allows_no_ca_and_is_named() {
    let name = Domain::parse("links.example.com").unwrap();
    for (value, why) in [
        (
            "letsencrypt.org; validationmethods=http-01, tls-alpn-01",
            "no spaces",
        ),
        ("letsencrypt.org; accounturi", "not written tag=value"),
        (
            "letsencrypt.org;; validationmethods=http-01",
            "not written tag=value",
        ),
        (
            "letsencrypt.org; validationmethods=http-01,",
            "no method name",
        ),
        ("letsencrypt.org; bad_tag=x", "not letters and digits"),
        ("letsencrypt.org; x-note=a", "not letters and digits"),
        (
            "letsencrypt.org; accounturi=https://a.example/acct/1; accounturi=https://b.example/acct/2",
            "accounturi is given twice",
        ),
        (
            "letsencrypt.org; validationmethods=http-01; validationmethods=dns-01",
            "validationmethods is given twice",
        ),
    ] {
        let s = set(&[(false, "issue", value)]);
        let v = verdict(Some(&s), &le(), METHODS, None);
        assert!(
            matches!(&v, Verdict::Malformed(id, v, w) if id == "letsencrypt.org" && v == value && w.contains(why)),
            "{value}: {v:?}"
        );
        let c = check(&name, Some(&s), &Settings::example(), None, true);
        assert_eq!(c.status, crate::onboarding::CheckStatus::Fail, "{value}");
        assert!(
            c.message.contains("CAs ignore that record"),
            "{}",
            c.message
        );
        let fix: Vec<String> = c.fix_records.iter().map(|r| r.line()).collect();
        assert_eq!(
            fix[1],
            "example.com. 300 IN CAA 0 issue \"letsencrypt.org\""
        );
        // Another record for the identity that parses still allows.
        let s = set(&[(false, "issue", value), (false, "issue", "letsencrypt.org")]);
        assert!(matches!(
            verdict(Some(&s), &le(), METHODS, None),
            Verdict::Allowed(_)
        ));
    }
    // What RFC 8659 allows: spaces and tabs around the parts, one trailing `;`.
    for value in [
        " letsencrypt.org ;\tvalidationmethods = http-01,tls-alpn-01 ",
        "letsencrypt.org;",
        "letsencrypt.org ; ",
        "letsencrypt.org; validationmethods=http-01; accounturi=https://a.example/acct/1; xy=z",
    ] {
        let s = set(&[(false, "issue", value)]);
        let v = verdict(Some(&s), &le(), METHODS, Some("https://a.example/acct/1"));
        assert_eq!(v, Verdict::Allowed("letsencrypt.org".into()), "{value}");
    }
}
