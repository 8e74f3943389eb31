//! The DNS checks judged on hand-made DNS views: each failure names what DNS says and the fix.

use super::*;
use crate::onboarding::caa::{CaaRecord, CaaSet};

mod apex;

fn d(s: &str) -> Domain {
    Domain::parse(s).unwrap()
}

fn settings() -> Settings {
    Settings::example()
}

fn view(chain: &[&str], a: &[&str], aaaa: &[&str]) -> DnsView {
    DnsView::example(chain, a, aaaa)
}

fn find(checks: &[Check], id: CheckId) -> &Check {
    checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no {id} in {checks:#?}"))
}

fn failing(checks: &[Check]) -> Vec<CheckId> {
    checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .map(|c| c.id)
        .collect()
}

#[test]
fn cname_to_the_target_passes_everything() {
    let checks = evaluate(
        &view(&["edge.example.net"], &["203.0.113.10"], &["2001:db8::1"]),
        &settings(),
        None,
    );
    assert_eq!(failing(&checks), vec![], "{checks:#?}");
    assert!(
        find(&checks, CheckId::PointsToEdge)
            .message
            .contains("CNAME to edge.example.net")
    );
    // AAAA behind the edge's own name is the operator's business.
    assert_eq!(
        find(&checks, CheckId::NoStrayAaaa).status,
        CheckStatus::Pass
    );
}

#[test]
fn stray_a_record_is_named_and_the_cname_to_add_is_given() {
    let checks = evaluate(&view(&[], &["192.0.2.7"], &[]), &settings(), None);
    assert_eq!(failing(&checks), vec![CheckId::PointsToEdge]);
    let c = find(&checks, CheckId::PointsToEdge);
    assert!(c.blocking);
    assert!(c.message.contains("an A record 192.0.2.7"), "{}", c.message);
    let fix = c.fix.as_deref().unwrap();
    assert!(fix.contains("links.customer.com. IN A 192.0.2.7"), "{fix}");
    assert!(
        fix.contains("links.customer.com. 300 IN CNAME edge.example.net."),
        "{fix}"
    );
}

#[test]
fn a_records_at_edge_addresses_pass_without_a_cname() {
    let checks = evaluate(&view(&[], &["203.0.113.10"], &[]), &settings(), None);
    assert_eq!(failing(&checks), vec![]);
}

#[test]
fn aaaa_elsewhere_while_a_is_right_fails_on_its_own() {
    let checks = evaluate(
        &view(&[], &["203.0.113.10"], &["2001:db8::99"]),
        &settings(),
        None,
    );
    assert_eq!(failing(&checks), vec![CheckId::NoStrayAaaa]);
    let c = find(&checks, CheckId::NoStrayAaaa);
    assert!(c.message.contains("2001:db8::99"), "{}", c.message);
    assert!(
        c.message.contains("while its A records are right"),
        "{}",
        c.message
    );
    assert!(
        c.fix
            .as_deref()
            .unwrap()
            .contains("links.customer.com. IN AAAA 2001:db8::99")
    );
}

#[test]
fn cname_elsewhere_is_replaced() {
    let checks = evaluate(
        &view(&["old.provider.example"], &["198.51.100.1"], &[]),
        &settings(),
        None,
    );
    let c = find(&checks, CheckId::PointsToEdge);
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(
        c.message
            .contains("CNAME to old.provider.example, not to edge.example.net")
    );
    let fix = c.fix.as_deref().unwrap();
    assert!(
        fix.contains("links.customer.com. IN CNAME old.provider.example."),
        "{fix}"
    );
    assert!(fix.contains("CNAME edge.example.net."), "{fix}");
}

#[test]
fn addresses_only_edge_asks_for_the_missing_a_record() {
    let mut s = settings();
    s.cname_target = None;
    let checks = evaluate(&view(&[], &["192.0.2.7"], &[]), &s, None);
    let fix = find(&checks, CheckId::PointsToEdge).fix.clone().unwrap();
    assert!(fix.contains("IN A 192.0.2.7"), "{fix}");
    assert!(
        fix.contains("links.customer.com. 300 IN A 203.0.113.10"),
        "{fix}"
    );
}

/// Only AAAA records, none the edge's, and only IPv4 edge addresses: deleting them alone would
/// leave the name without any, so the fix adds the edge's A records too.
#[test]
fn aaaa_only_elsewhere_with_an_ipv4_edge_gets_the_a_records_to_add() {
    let mut s = settings();
    s.cname_target = None;
    let checks = evaluate(&view(&[], &[], &["2001:db8::5"]), &s, None);
    let fix = find(&checks, CheckId::PointsToEdge).fix.clone().unwrap();
    assert!(fix.contains("IN AAAA 2001:db8::5"), "{fix}");
    assert!(
        fix.contains("links.customer.com. 300 IN A 203.0.113.10"),
        "{fix}"
    );
}

#[test]
fn no_records_fails_with_the_record_to_add_and_skips_what_depends_on_it() {
    let checks = evaluate(&view(&[], &[], &[]), &settings(), None);
    assert_eq!(failing(&checks), vec![CheckId::Resolves]);
    let c = find(&checks, CheckId::Resolves);
    assert!(c.message.contains("no CNAME, A or AAAA record"));
    assert!(
        c.fix
            .as_deref()
            .unwrap()
            .ends_with("links.customer.com. 300 IN CNAME edge.example.net.")
    );
    assert!(!checks.iter().any(|c| c.id == CheckId::PointsToEdge));
}

/// CNAMEs that loop resolve to nothing: `resolves` names the loop and the CNAME to replace,
/// also when the resolver answers the loop's addresses with SERVFAIL (and then the DNS server
/// check does not send the customer to their registrar's NS and DS records).
#[test]
fn a_cname_loop_is_named_with_the_cname_to_replace() {
    for servfail in [false, true] {
        let mut v = view(&["a.customer.com", "links.customer.com"], &[], &[]);
        if servfail {
            v.a = Err(DnsFailure {
                name: "links.customer.com".into(),
                record_type: "A",
                kind: FailureKind::ServFail,
            });
        }
        let checks = evaluate(&v, &settings(), None);
        let c = find(&checks, CheckId::Resolves);
        assert_eq!(c.status, CheckStatus::Fail, "{servfail}");
        assert_eq!(
            c.message,
            "links.customer.com's CNAMEs loop (links.customer.com → a.customer.com → \
             links.customer.com), so it resolves to no address"
        );
        let fix = c.fix.as_deref().unwrap();
        assert!(
            fix.starts_with("Delete the CNAME:\nlinks.customer.com. IN CNAME a.customer.com."),
            "{fix}"
        );
        assert!(
            fix.ends_with("links.customer.com. 300 IN CNAME edge.example.net."),
            "{fix}"
        );
        if servfail {
            let d = find(&checks, CheckId::DnsServer);
            assert!(d.fix.as_deref().unwrap().contains("loop"), "{:?}", d.fix);
        }
    }
}

#[test]
fn servfail_is_a_dns_server_failure_naming_the_resolver() {
    let mut v = view(&[], &[], &[]);
    let failure = |t| DnsFailure {
        name: "links.customer.com".into(),
        record_type: t,
        kind: FailureKind::ServFail,
    };
    v.a = Err(failure("A"));
    v.caa = Err(failure("CAA"));
    let checks = evaluate(&v, &settings(), None);
    assert_eq!(failing(&checks), vec![CheckId::DnsServer]);
    let c = find(&checks, CheckId::DnsServer);
    assert!(c.blocking);
    assert_eq!(
        c.message,
        "DNS server failure: 127.0.0.1:53 answered SERVFAIL for links.customer.com (A, CAA)"
    );
    assert!(c.fix.as_deref().unwrap().contains("NS and DS records"));
}

/// An edge that could not ask DNS at all knows nothing of the name, and the CA asks its own
/// resolvers: the failure is the operator's to fix, and holds back no order.
#[test]
fn a_resolver_the_edge_could_not_set_up_holds_back_no_order() {
    let mut v = view(&[], &[], &[]);
    let failure = |t| DnsFailure {
        name: "links.customer.com".into(),
        record_type: t,
        kind: FailureKind::Unasked("no nameservers configured".into()),
    };
    v.a = Err(failure("A"));
    v.caa = Err(failure("CAA"));
    let checks = evaluate(&v, &settings(), None);
    let c = find(&checks, CheckId::DnsServer);
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(!c.blocking, "{c:?}");
    assert!(c.message.contains("could not be asked"), "{}", c.message);
    assert!(c.fix.as_deref().unwrap().starts_with("Edge operator"));
    // One query the edge could not make beside the zone's own SERVFAIL: that one holds back.
    v.caa = Err(DnsFailure {
        name: "links.customer.com".into(),
        record_type: "CAA",
        kind: FailureKind::ServFail,
    });
    let checks = evaluate(&v, &settings(), None);
    assert!(find(&checks, CheckId::DnsServer).blocking);
}

#[test]
fn caa_for_another_ca_names_the_identity_to_allow() {
    let mut v = view(&["edge.example.net"], &["203.0.113.10"], &[]);
    v.caa = Ok(Some(CaaSet {
        owner: d("customer.com"),
        alias: None,
        records: vec![CaaRecord {
            flags: 0,
            tag: "issue".into(),
            value: "other-ca.example".into(),
        }],
    }));
    let checks = evaluate(&v, &settings(), None);
    assert_eq!(failing(&checks), vec![CheckId::Caa]);
    let c = find(&checks, CheckId::Caa);
    assert!(
        c.message
            .contains("allows only other-ca.example, not letsencrypt.org")
    );
    assert!(
        c.fix
            .as_deref()
            .unwrap()
            .ends_with("customer.com. 300 IN CAA 0 issue \"letsencrypt.org\"")
    );
    // The built-in CA reads no CAA: the same, as a warning that holds nothing back.
    let local = Settings {
        caa_blocks: false,
        ..settings()
    };
    let checks = evaluate(&v, &local, None);
    let c = find(&checks, CheckId::Caa);
    assert_eq!((c.status, c.blocking), (CheckStatus::Warn, false));
    assert!(
        c.message.contains("built-in CA does not read CAA"),
        "{}",
        c.message
    );
}

/// CAA records reached through the edge's own name are the operator's to change: the status
/// page tells the domain's owner there is nothing for them to do.
#[test]
fn caa_at_the_edges_own_name_is_the_operators_to_fix() {
    let mut v = view(&["edge.example.net"], &["203.0.113.10"], &[]);
    let caa = CaaSet {
        owner: d("edge.example.net"),
        alias: Some(d("links.customer.com")),
        records: vec![CaaRecord {
            flags: 0,
            tag: "issue".into(),
            value: "other-ca.example".into(),
        }],
    };
    v.caa = Ok(Some(caa.clone()));
    let checks = evaluate(&v, &settings(), None);
    let c = find(&checks, CheckId::Caa);
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(c.waits_on_the_operator(), "{:?}", c.fix);
    // The same records at the customer's own CNAME target elsewhere are the customer's.
    let mut v = view(&["lb.customer-cdn.net"], &["203.0.113.10"], &[]);
    v.caa = Ok(Some(CaaSet {
        owner: d("lb.customer-cdn.net"),
        ..caa
    }));
    let c = find(&evaluate(&v, &settings(), None), CheckId::Caa).clone();
    assert!(!c.waits_on_the_operator(), "{:?}", c.fix);
}

/// When the edge's own name does not resolve, nothing on the domain can fix it.
#[test]
fn the_edges_own_name_not_resolving_is_the_operators_to_fix() {
    let checks = evaluate(&view(&["edge.example.net"], &[], &[]), &settings(), None);
    let c = find(&checks, CheckId::Resolves);
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(c.waits_on_the_operator(), "{:?}", c.fix);
}

#[test]
fn unconfigured_edge_warns_and_blocks_nothing() {
    let mut s = settings();
    s.cname_target = None;
    s.addresses.clear();
    let checks = evaluate(&view(&[], &[], &[]), &s, None);
    assert!(checks.iter().all(|c| !c.blocking), "{checks:#?}");
    let checks = evaluate(&view(&[], &["192.0.2.7"], &[]), &s, None);
    assert_eq!(
        find(&checks, CheckId::PointsToEdge).status,
        CheckStatus::Warn
    );
    assert!(!checks.iter().any(|c| c.id == CheckId::NoStrayAaaa));
}

/// `(action, type, host, value, ttl)` of a fix record.
type RecordFields = (String, String, Option<String>, String, Option<u32>);

/// The fields of each fix record of `c`.
fn records(c: &Check) -> Vec<RecordFields> {
    c.fix_records
        .iter()
        .map(|r| {
            let action = serde_json::to_value(r.action).unwrap();
            (
                action.as_str().unwrap().to_owned(),
                r.rtype.clone(),
                r.host.clone(),
                r.value.clone(),
                r.ttl,
            )
        })
        .collect()
}

#[test]
fn a_cname_elsewhere_is_fixed_by_records_relative_to_the_zone() {
    let mut v = view(&["old.provider.example"], &["198.51.100.1"], &[]);
    v.zone = Some(d("customer.com"));
    let checks = evaluate(&v, &settings(), None);
    let c = find(&checks, CheckId::PointsToEdge);
    let s = |x: &str| x.to_owned();
    assert_eq!(
        records(c),
        vec![
            (
                s("delete"),
                s("CNAME"),
                Some(s("links")),
                s("old.provider.example"),
                None
            ),
            (
                s("add"),
                s("CNAME"),
                Some(s("links")),
                s("edge.example.net"),
                Some(300)
            ),
        ]
    );
    assert!(c.fix_records.iter().all(|r| r.name == "links.customer.com"));
    // The text says the same records in zone-file form.
    for r in &c.fix_records {
        assert!(
            c.fix.as_deref().unwrap().contains(&r.line()),
            "{}",
            r.line()
        );
    }
    let json = serde_json::to_value(c).unwrap();
    assert_eq!(json["fix_records"][1]["type"], "CNAME");
    assert_eq!(json["fix_records"][1]["zone"], "customer.com");
}

#[test]
fn without_a_zone_from_dns_the_last_two_labels_are_taken() {
    let checks = evaluate(&view(&[], &[], &[]), &settings(), None);
    let c = find(&checks, CheckId::Resolves);
    let r = &c.fix_records[0];
    assert_eq!(
        (r.host.as_deref(), r.zone.as_deref()),
        (Some("links"), Some("customer.com"))
    );
}

#[test]
fn a_caa_forbidding_every_ca_is_replaced_at_the_zone_apex() {
    let mut v = view(&["edge.example.net"], &["203.0.113.10"], &[]);
    v.zone = Some(d("customer.com"));
    v.caa = Ok(Some(CaaSet {
        owner: d("customer.com"),
        alias: None,
        records: vec![CaaRecord {
            flags: 0,
            tag: "issue".into(),
            value: ";".into(),
        }],
    }));
    let checks = evaluate(&v, &settings(), None);
    let c = find(&checks, CheckId::Caa);
    let s = |x: &str| x.to_owned();
    assert_eq!(
        records(c),
        vec![
            (
                s("delete"),
                s("CAA"),
                Some(s("@")),
                s("0 issue \";\""),
                None
            ),
            (
                s("add"),
                s("CAA"),
                Some(s("@")),
                s("0 issue \"letsencrypt.org\""),
                Some(300)
            ),
        ]
    );
}

#[test]
fn passing_checks_and_text_only_fixes_have_no_records() {
    let mut v = view(&["edge.example.net"], &["203.0.113.10"], &[]);
    v.a = Err(DnsFailure {
        name: "links.customer.com".into(),
        record_type: "A",
        kind: FailureKind::ServFail,
    });
    let checks = evaluate(&v, &settings(), None);
    assert!(
        checks.iter().all(|c| c.fix_records.is_empty()),
        "{checks:#?}"
    );
}
