//! The DNS layer against DNS servers on loopback: a tiny authoritative one for SOA answers,
//! and one that is not there.

use super::*;

fn d(s: &str) -> Domain {
    Domain::parse(s).unwrap()
}

#[test]
fn climb_stops_before_the_top_level_domain() {
    assert_eq!(
        climb(&d("a.links.example.com")),
        vec![
            d("a.links.example.com"),
            d("links.example.com"),
            d("example.com")
        ]
    );
    assert_eq!(climb(&d("example.com")), vec![d("example.com")]);
}

/// A tiny authoritative server on loopback UDP for what pebble-challtestsrv cannot serve
/// (SOA records): `customer.co.uk` and `eu.customer.com` are zones, `customer.com` too;
/// `links.customer.co.uk` and `links.eu.customer.com` are CNAMEs to names in other zones
/// (`provider.com`), whose SOA a query following them finds. Anything else is an empty
/// answer with its zone's SOA in the authority section.
async fn zones() -> SocketAddr {
    use hickory_resolver::proto::op::{Message, MessageType, OpCode};
    use hickory_resolver::proto::rr::rdata::{CNAME, SOA};
    use hickory_resolver::proto::rr::{Name, Record};
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }
    let soa = |zone: &str| {
        Record::from_rdata(
            name(zone),
            0,
            RData::SOA(SOA::new(
                name("ns.example."),
                name("h.example."),
                1,
                1,
                1,
                1,
                0,
            )),
        )
    };
    let zone_of = |q: &str| {
        [
            "customer.co.uk.",
            "eu.customer.com.",
            "customer.com.",
            "provider.com.",
        ]
        .into_iter()
        .find(|z| q == *z || q.ends_with(&format!(".{z}")))
        .unwrap_or(".")
    };
    let cname_of = |q: &str| match q {
        "links.customer.co.uk." | "links.eu.customer.com." => Some("old.provider.com."),
        "deep.eu.customer.com." => Some("edge.customer.com."),
        "loop.customer.com." => Some("back.customer.com."),
        "back.customer.com." => Some("loop.customer.com."),
        _ => None,
    };
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut answer = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
            answer.metadata.authoritative = true;
            answer.metadata.recursion_desired = query.metadata.recursion_desired;
            answer.metadata.recursion_available = true;
            for q in &query.queries {
                answer.add_query(q.clone());
                let asked = q.name().to_ascii().to_ascii_lowercase();
                if asked.starts_with("sf.") || asked.contains(".sf.") {
                    answer.metadata.response_code = ResponseCode::ServFail;
                    continue;
                }
                let mut at = q.name().to_ascii().to_ascii_lowercase();
                if let Some(target) = cname_of(&at) {
                    answer.add_answer(Record::from_rdata(
                        q.name().clone(),
                        0,
                        RData::CNAME(CNAME(name(target))),
                    ));
                    at = target.to_owned();
                }
                let zone = zone_of(&at);
                if q.query_type() == RecordType::SOA && at == zone {
                    answer.add_answer(soa(zone));
                } else {
                    answer.add_authority(soa(zone));
                }
            }
            let _ = sock.send_to(&answer.to_vec().unwrap(), from).await;
        }
    });
    addr
}

/// A name whose CNAME leads into another zone is in its parent's zone, not the target's
/// (even when the target's zone contains the name) and not a guess from its last two labels
/// (which would be `co.uk`). A failing server ends the search: nothing is said.
#[tokio::test]
async fn the_zone_of_a_cnamed_name_is_its_parents() {
    let server = zones().await;
    for (asked, zone) in [
        ("links.customer.co.uk", Some("customer.co.uk")),
        ("links.eu.customer.com", Some("eu.customer.com")),
        ("deep.eu.customer.com", Some("eu.customer.com")),
        ("www.customer.com", Some("customer.com")),
        ("customer.co.uk", Some("customer.co.uk")),
        ("a.sf.customer.com", None),
    ] {
        let view = gather(&d(asked), None, &[server]).await;
        assert_eq!(view.zone, zone.map(d), "{asked}");
    }
}

/// CNAMEs that lead back: the chain ends with the name it came back to, which the checks
/// name as a loop.
#[tokio::test]
async fn a_cname_chain_that_loops_ends_where_it_came_back() {
    let server = zones().await;
    let view = gather(&d("loop.customer.com"), None, &[server]).await;
    assert_eq!(
        view.cname,
        Ok(vec![d("back.customer.com"), d("loop.customer.com")])
    );
    assert!(cname_loop(&view.name, view.cname.as_ref().unwrap()));
    assert!(!cname_loop(
        &d("links.customer.co.uk"),
        &[d("old.provider.com")]
    ));
}

#[tokio::test]
async fn an_unreachable_server_is_a_timeout_not_an_empty_answer() {
    // A UDP port nobody listens on: every query times out (or is refused by ICMP).
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    drop(sock);
    let view = gather(
        &d("links.example.com"),
        Some(&d("edge.example.net")),
        &[addr],
    )
    .await;
    assert_eq!(view.servers, addr.to_string());
    assert!(view.a.is_err(), "{view:?}");
    assert!(view.edge.is_err(), "{view:?}");
    // The edge's own name is not the customer's DNS: no failure of theirs.
    assert_eq!(view.failures().len(), 4, "{view:?}");
}
