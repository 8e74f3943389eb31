//! The reachability check's pure parts: which addresses it may fetch through, and what the
//! customer is told (reached or not, never what answered or why).

use super::*;

fn d(s: &str) -> Domain {
    Domain::parse(s).unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|ip| ip.parse().unwrap()).collect()
}

fn view(chain: &[&str], a: &[&str], aaaa: &[&str]) -> DnsView {
    DnsView::example(chain, a, aaaa)
}

#[test]
fn a_cname_to_the_edge_is_fetched_through_the_edge_names_addresses_not_the_answers() {
    let s = Settings::example();
    // A hostile DNS server: the CNAME query says the edge's name, the A query an internal host.
    let v = view(&["edge.example.net"], &["10.0.0.1"], &["::1"]);
    assert_eq!(own(&v, &s), Own::Target(d("edge.example.net")));
    let v = view(
        &["hop.customer.com", "edge.example.net"],
        &["169.254.169.254"],
        &[],
    );
    assert_eq!(own(&v, &s), Own::Target(d("edge.example.net")));
}

#[test]
fn addresses_mode_fetches_only_through_configured_addresses_aaaa_included() {
    let s = Settings {
        cname_target: None,
        addresses: ips(&["203.0.113.10", "2001:db8::10"]),
        ..Settings::example()
    };
    let v = view(
        &[],
        &["203.0.113.10"],
        &[
            "::1",
            "::ffff:10.0.0.1",
            "::ffff:203.0.113.10",
            "2001:db8::10",
        ],
    );
    assert_eq!(
        own(&v, &s),
        Own::Configured(ips(&["203.0.113.10", "2001:db8::10"]))
    );
    // A name that is a CNAME elsewhere whose addresses happen to be the edge's.
    let v = view(&["other.example.org"], &["203.0.113.10", "10.0.0.1"], &[]);
    assert_eq!(own(&v, &s), Own::Configured(ips(&["203.0.113.10"])));
}

/// A name that cannot be a CNAME (an apex, a flattened one): only its addresses that the
/// target resolves to, never another of its answers; none while the target's are not known.
#[test]
fn a_name_at_the_targets_addresses_is_fetched_only_through_those() {
    let s = Settings {
        addresses: Vec::new(),
        ..Settings::example()
    };
    let mut v = view(&[], &["203.0.113.20", "10.0.0.1"], &["2001:db8::20", "::1"]);
    v.edge = Ok(ips(&["203.0.113.20", "2001:db8::20"]));
    assert_eq!(
        own(&v, &s),
        Own::Configured(ips(&["203.0.113.20", "2001:db8::20"]))
    );
    v.edge = Err(crate::onboarding::dns::DnsFailure {
        name: "edge.example.net".into(),
        record_type: "A",
        kind: crate::onboarding::dns::FailureKind::Timeout,
    });
    assert_eq!(own(&v, &s), Own::Configured(Vec::new()));
}

#[test]
fn only_public_addresses_are_dialled_unless_the_test_setting_allows_local_ones() {
    let own = ips(&[
        "127.0.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "10.1.2.3",
        "0.0.0.0",
        "198.51.99.1",
        "2606:4700::1111",
    ]);
    assert_eq!(
        dialable(&own, false),
        (ips(&["198.51.99.1", "2606:4700::1111"]), 0)
    );
    assert_eq!(
        dialable(&own, true),
        (
            ips(&["127.0.0.1", "::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1"]),
            3
        ),
        "at most {MAX_ADDRESSES}, the others counted, unspecified never"
    );
}

#[test]
fn a_miss_names_the_edge_address_and_says_what_to_open_but_not_what_answered() {
    let name = d("links.example.com");
    let ip: IpAddr = "203.0.113.10".parse().unwrap();
    for miss in [
        Miss::Refused,
        Miss::TimedOut,
        Miss::NoConnection,
        Miss::OtherAnswer,
    ] {
        let c = judge(&name, 80, &[(ip, Outcome::Missed(miss))], 0, true);
        assert_eq!(c.status, CheckStatus::Fail);
        // A timeout may be the edge's own path (no hairpinning): said, holding nothing back.
        let silent = miss == Miss::TimedOut;
        assert_eq!(c.blocking, !silent, "{miss:?}");
        assert_eq!(
            c.fix.as_deref().unwrap().contains("hairpinning"),
            silent,
            "{miss:?}"
        );
        assert_eq!(
            c.message,
            "http://links.example.com/ through 203.0.113.10:80 did not reach the edge"
        );
        assert!(
            c.fix
                .unwrap()
                .starts_with("Edge operator: port 80 of 203.0.113.10 must reach the edge")
        );
    }
    let c = judge(
        &name,
        8080,
        &[(ip, Outcome::Missed(Miss::OtherAnswer))],
        0,
        false,
    );
    assert!(!c.blocking);
    let c = judge(&name, 8080, &[(ip, Outcome::Reached)], 0, false);
    assert_eq!(c.status, CheckStatus::Pass);
    assert_eq!(
        c.message,
        "the edge reached itself at http://links.example.com:8080/ through 203.0.113.10"
    );
    // Addresses past the ones fetched through are said to be untried, not vouched for.
    let c = judge(&name, 8080, &[(ip, Outcome::Reached)], 2, false);
    assert_eq!(
        c.message,
        "the edge reached itself at http://links.example.com:8080/ through 203.0.113.10 (2 more of its addresses not tried: the check fetches through 4 at most)"
    );
}

/// An address the edge has no route to (a container without IPv6) is not the customer's to fix:
/// a warning for the operator, holding nothing back, naming no firewall; any other miss beside
/// it still fails.
#[test]
fn an_address_the_edge_cannot_route_to_is_a_warning_for_the_operator() {
    let name = d("links.example.com");
    let (v4, v6): (IpAddr, IpAddr) = (
        "203.0.113.10".parse().unwrap(),
        "2001:db8::10".parse().unwrap(),
    );
    for results in [
        vec![(v4, Outcome::Reached), (v6, Outcome::Missed(Miss::NoRoute))],
        vec![(v6, Outcome::Missed(Miss::NoRoute))],
    ] {
        let c = judge(&name, 80, &results, 0, true);
        assert_eq!(c.status, CheckStatus::Warn, "{c:?}");
        assert!(!c.blocking);
        assert_eq!(
            c.message,
            "http://links.example.com/ not checked through 2001:db8::10: the edge has no route to it from where it runs"
        );
        let fix = c.fix.unwrap();
        assert!(
            fix.starts_with("Edge operator: ") && !fix.contains("firewall"),
            "{fix}"
        );
    }
    let c = judge(
        &name,
        80,
        &[
            (v6, Outcome::Missed(Miss::NoRoute)),
            (v4, Outcome::Missed(Miss::Refused)),
        ],
        0,
        true,
    );
    assert_eq!((c.status, c.blocking), (CheckStatus::Fail, true));
    assert!(c.message.contains("203.0.113.10:80"), "{}", c.message);
}

#[test]
fn non_public_edge_addresses_are_a_warning_for_the_operator() {
    let c = not_public(&d("links.example.com"), &ips(&["127.0.0.1"]));
    assert_eq!(c.status, CheckStatus::Warn);
    assert!(c.message.starts_with("not checked: "), "{}", c.message);
    assert!(
        c.fix
            .unwrap()
            .contains("onboarding.danger_allow_private_addresses")
    );
}

/// Of several addresses, a refusal (what the CA would meet too) decides over a timeout (maybe
/// only the edge's own path): named, and holding back orders.
#[test]
fn a_refusal_through_one_address_holds_back_though_another_timed_out() {
    let name = d("links.example.com");
    let (a, b): (IpAddr, IpAddr) = (
        "203.0.113.10".parse().unwrap(),
        "203.0.113.11".parse().unwrap(),
    );
    let results = [
        (a, Outcome::Missed(Miss::TimedOut)),
        (b, Outcome::Missed(Miss::Refused)),
    ];
    let c = judge(&name, 80, &results, 0, true);
    assert!(c.blocking);
    assert!(c.message.contains("203.0.113.11:80"), "{}", c.message);
}
