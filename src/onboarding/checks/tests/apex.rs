//! Names that cannot be a CNAME to `cname_target` (a zone's apex, a provider that flattens
//! CNAMEs): their addresses judged against what the target resolves to.

use super::*;

/// Settings with only a `cname_target`, and a view of `name` whose target resolves to
/// 203.0.113.20 and 2001:db8::20 (the zone is the name's last two labels).
fn target_only(name: &str, a: &[&str], aaaa: &[&str]) -> (DnsView, Settings) {
    let mut v = view(&[], a, aaaa);
    v.name = d(name);
    v.edge = Ok(vec![
        "203.0.113.20".parse().unwrap(),
        "2001:db8::20".parse().unwrap(),
    ]);
    let s = Settings {
        addresses: Vec::new(),
        ..settings()
    };
    (v, s)
}

#[test]
fn addresses_of_the_target_pass_where_a_provider_flattens_the_cname() {
    for name in ["customer.com", "links.customer.com"] {
        let (v, s) = target_only(name, &["203.0.113.20"], &["2001:db8::20"]);
        let checks = evaluate(&v, &s, None);
        assert_eq!(failing(&checks), vec![], "{name}: {checks:#?}");
        let m = &find(&checks, CheckId::PointsToEdge).message;
        assert!(
            m.ends_with(": 203.0.113.20, as edge.example.net does"),
            "{m}"
        );
    }
    // One address the target does not have is still stray, in either family.
    let (v, s) = target_only("customer.com", &["203.0.113.20"], &["2001:db8::99"]);
    let checks = evaluate(&v, &s, None);
    assert_eq!(failing(&checks), vec![CheckId::NoStrayAaaa], "{checks:#?}");
}

#[test]
fn an_apex_is_pointed_by_alias_or_the_targets_addresses_never_a_cname() {
    let (v, s) = target_only("customer.com", &["192.0.2.7"], &[]);
    let checks = evaluate(&v, &s, None);
    let c = find(&checks, CheckId::PointsToEdge);
    let fix = c.fix.as_deref().unwrap();
    assert!(
        fix.starts_with("Point customer.com at edge.example.net with your DNS provider's ALIAS"),
        "{fix}"
    );
    assert!(!fix.contains("CNAME edge.example.net"), "{fix}");
    let s_ = |x: &str| x.to_owned();
    let at = Some(s_("@"));
    assert_eq!(
        records(c),
        vec![
            (s_("delete"), s_("A"), at.clone(), s_("192.0.2.7"), None),
            (
                s_("add"),
                s_("A"),
                at.clone(),
                s_("203.0.113.20"),
                Some(300)
            ),
        ]
    );
    // No records at all: both of the target's addresses, after the ALIAS.
    let (v, s) = target_only("customer.com", &[], &[]);
    let c = find(&evaluate(&v, &s, None), CheckId::Resolves).clone();
    assert_eq!(
        records(&c),
        vec![
            (
                s_("add"),
                s_("A"),
                at.clone(),
                s_("203.0.113.20"),
                Some(300)
            ),
            (s_("add"), s_("AAAA"), at, s_("2001:db8::20"), Some(300)),
        ]
    );
    let fix = c.fix.as_deref().unwrap();
    assert!(
        fix.contains("ALIAS") && fix.contains("Otherwise add these records"),
        "{fix}"
    );
    // Below the apex a CNAME is still the fix.
    let (v, s) = target_only("links.customer.com", &[], &[]);
    let c = find(&evaluate(&v, &s, None), CheckId::Resolves).clone();
    assert_eq!(c.fix_records[0].rtype, "CNAME");
}

#[test]
fn addresses_from_both_settings_say_which_are_the_targets() {
    let (v, _) = target_only("customer.com", &["203.0.113.10", "203.0.113.20"], &[]);
    let checks = evaluate(&v, &settings(), None);
    let m = &find(&checks, CheckId::PointsToEdge).message;
    assert!(
        m.ends_with(": 203.0.113.10, 203.0.113.20 (203.0.113.20 as edge.example.net does)"),
        "{m}"
    );
}

/// The target's addresses not known (its lookup failed, or it has none): addresses outside
/// `addresses` may be the edge's, so nothing is to be deleted, and no order is held back.
#[test]
fn addresses_are_not_judged_while_the_targets_are_not_known() {
    let failure = DnsFailure {
        name: "edge.example.net".into(),
        record_type: "A",
        kind: FailureKind::Timeout,
    };
    for (edge, why) in [
        (Err(failure), "the resolver did not answer within 2s"),
        (Ok(Vec::new()), "it has no A or AAAA record"),
    ] {
        for name in ["customer.com", "links.customer.com"] {
            let (mut v, s) = target_only(name, &["203.0.113.20"], &["2001:db8::20"]);
            v.edge = edge.clone();
            let checks = evaluate(&v, &s, None);
            assert_eq!(failing(&checks), vec![], "{name}: {checks:#?}");
            for id in [CheckId::PointsToEdge, CheckId::NoStrayAaaa] {
                let c = find(&checks, id);
                assert_eq!(c.status, CheckStatus::Warn, "{c:#?}");
                assert!(c.fix_records.is_empty(), "{c:#?}");
                assert!(c.message.contains(why), "{}", c.message);
                assert!(c.waits_on_the_operator(), "{c:#?}");
            }
        }
    }
    // A CNAME elsewhere is no ALIAS, whatever the target resolves to: still the customer's.
    let (mut v, s) = target_only("links.customer.com", &["203.0.113.20"], &[]);
    v.cname = Ok(vec![d("old.provider.example")]);
    v.edge = Ok(Vec::new());
    let c = find(&evaluate(&v, &s, None), CheckId::PointsToEdge).clone();
    assert_eq!((c.status, c.blocking), (CheckStatus::Fail, true), "{c:#?}");
    // What `addresses` holds is still judged.
    let (mut v, _) = target_only("customer.com", &["203.0.113.10"], &[]);
    v.edge = Ok(Vec::new());
    let checks = evaluate(&v, &settings(), None);
    assert_eq!(
        find(&checks, CheckId::PointsToEdge).status,
        CheckStatus::Pass
    );
}

#[test]
fn an_apex_whose_target_does_not_resolve_is_told_to_ask_the_operator() {
    let (mut v, s) = target_only("customer.com", &[], &[]);
    v.edge = Ok(Vec::new());
    let c = find(&evaluate(&v, &s, None), CheckId::Resolves).clone();
    assert!(c.fix_records.is_empty(), "{c:#?}");
    let fix = c.fix.as_deref().unwrap();
    assert!(
        fix.contains("ALIAS") && fix.contains("ask the edge's operator"),
        "{fix}"
    );
}
