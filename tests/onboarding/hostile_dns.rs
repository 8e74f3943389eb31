//! What a hostile DNS cannot do: make the reachability check connect anywhere but the edge's
//! own public addresses, learn what answered there, or put control characters on a terminal or
//! in the log.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::Command;

use super::common::dns::Dns;
use super::common::{Edge, bin};
use super::{TARGET, add, click, edge_with, failing, find};

/// Listeners that must never be connected to, on `ips` and one port free on all of them.
struct Tripwire(Vec<TcpListener>);

impl Tripwire {
    fn on(ips: &[&str]) -> Tripwire {
        let ips: Vec<IpAddr> = ips.iter().map(|ip| ip.parse().unwrap()).collect();
        for _ in 0..50 {
            let first = TcpListener::bind((ips[0], 0)).unwrap();
            let port = first.local_addr().unwrap().port();
            let rest: Result<Vec<TcpListener>, _> = ips[1..]
                .iter()
                .map(|ip| TcpListener::bind((*ip, port)))
                .collect();
            if let Ok(rest) = rest {
                return Tripwire::arm(std::iter::once(first).chain(rest).collect());
            }
        }
        panic!("no port free on all of {ips:?}");
    }

    fn at(addrs: &[SocketAddr]) -> Tripwire {
        Tripwire::arm(
            addrs
                .iter()
                .map(|a| TcpListener::bind(a).unwrap_or_else(|e| panic!("binding {a}: {e}")))
                .collect(),
        )
    }

    fn arm(listeners: Vec<TcpListener>) -> Tripwire {
        for l in &listeners {
            l.set_nonblocking(true).unwrap();
        }
        Tripwire(listeners)
    }

    fn port(&self) -> u16 {
        self.0[0].local_addr().unwrap().port()
    }

    /// The listeners something connected to. No waiting: a check run's answer comes after its
    /// fetches, and the kernel queues a connection for accept() as soon as it is made.
    fn tripped(&self) -> Vec<SocketAddr> {
        self.0
            .iter()
            .filter(|l| l.accept().is_ok())
            .map(|l| l.local_addr().unwrap())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reachability_never_connects_to_loopback_answers_without_the_test_setting() {
    let dns = Dns::start().await;
    // The edge's own name and the customers' names all lead to loopback, over IPv4 and IPv6.
    dns.add_a(TARGET, &["127.0.0.1"]).await;
    dns.add_aaaa(TARGET, &["::1"]).await;
    let by_cname = "cname.example.com";
    dns.set_cname(by_cname, TARGET).await;
    let by_address = "address.example.com";
    dns.add_a(by_address, &["127.0.0.1"]).await;
    dns.add_aaaa(by_address, &["::1"]).await;
    let wire = Tripwire::on(&["127.0.0.1", "::1"]);
    let edge = Edge::start_with(&format!(
        "[onboarding]\ncname_target = \"{TARGET}\"\naddresses = [\"127.0.0.1\"]\ndns_servers = [\"{}\"]\nhttp_port = {}\n",
        dns.addr,
        wire.port()
    ));
    let mut checked = Vec::new();
    for name in [by_cname, by_address] {
        checked.push(add(&edge, name).await);
    }
    assert_eq!(wire.tripped(), Vec::<SocketAddr>::new(), "nothing connects");
    for d in &checked {
        assert_eq!(find(d, "points-to-edge")["status"], "pass", "{d:#}");
        let c = find(d, "http-reachable");
        assert_eq!(c["status"], "warn", "{d:#}");
        let message = c["message"].as_str().unwrap();
        assert!(message.starts_with("not checked: "), "{message}");
        assert!(
            c["fix"]
                .as_str()
                .unwrap()
                .contains("danger_allow_private_addresses"),
            "{c:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reachability_connects_only_to_the_edges_own_addresses_whatever_dns_answers() {
    let dns = Dns::start().await;
    dns.add_a(TARGET, &["127.0.0.1"]).await;
    let edge = edge_with(&dns, "");
    // Where a hostile DNS would send the check: another loopback host and IPv6 loopback, on
    // the port the check uses. Only the edge's own 127.0.0.1 may be fetched through.
    let port = edge.http.port();
    let wire = Tripwire::at(&[
        SocketAddr::from(([127, 0, 0, 2], port)),
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
    ]);

    // The CNAME query leads to the edge's name, the A and AAAA queries to other hosts: the
    // server answers them for the hop, which claims to be a CNAME to the edge.
    let hostile = "hostile.example.com";
    let hop = "hop.customer.example";
    dns.set_cname(hostile, hop).await;
    dns.set_cname(hop, TARGET).await;
    dns.add_a(hop, &["127.0.0.2"]).await;
    dns.add_aaaa(hop, &["::1"]).await;
    // Addresses mode: the A record is the edge's, the AAAA record is not.
    let stray = "stray-aaaa.example.com";
    dns.add_a(stray, &["127.0.0.1"]).await;
    dns.add_aaaa(stray, &["::1"]).await;
    let (d, d_stray) = (add(&edge, hostile).await, add(&edge, stray).await);
    assert_eq!(wire.tripped(), Vec::<SocketAddr>::new(), "nothing connects");

    let points = find(&d, "points-to-edge")["message"].as_str().unwrap();
    assert!(
        points.contains(&format!("CNAME to {TARGET} (through {hop})")),
        "{d:#}"
    );
    let resolves = find(&d, "resolves")["message"].as_str().unwrap();
    assert!(resolves.contains("127.0.0.2"), "the answers: {resolves}");
    let reach = find(&d, "http-reachable");
    assert_eq!(reach["status"], "pass", "{d:#}");
    assert!(
        reach["message"]
            .as_str()
            .unwrap()
            .ends_with(" through 127.0.0.1"),
        "{reach:#}"
    );

    let d = d_stray;
    assert_eq!(failing(&d), vec!["no-stray-aaaa"], "{d:#}");
    assert!(
        find(&d, "http-reachable")["message"]
            .as_str()
            .unwrap()
            .ends_with(" through 127.0.0.1"),
        "{d:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_from_dns_reach_neither_the_terminal_nor_the_log() {
    // An ACME issuer, which honours CAA, so the failing check holds back the order (the
    // built-in CA is never held back by CAA); the order itself never starts.
    let dns = Dns::start().await;
    dns.add_a(TARGET, &["127.0.0.1"]).await;
    let edge = edge_with(
        &dns,
        "[tls]\nissuer = \"acme\"\n[acme]\ndirectory = \"https://127.0.0.1:1/directory\"\n",
    );
    let name = "links.controls.example.com";
    dns.set_cname(name, TARGET).await;
    // A CAA value that would retitle the terminal, clear it, forge a line and reverse the text.
    let hostile =
        "other-ca.example\u{1b}[2J\r\nforged\u{9b}31m\u{85}\u{2028}\u{202e}\u{1b}]0;pwned\u{7}";
    dns.add_caa_issue("controls.example.com", hostile).await;
    let unsafe_chars = |text: &str| -> Vec<char> {
        text.chars()
            .filter(|&c| {
                c != '\n'
                    && (c.is_control()
                        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}'))
            })
            .collect()
    };

    let d = add(&edge, name).await;
    assert_eq!(failing(&d), vec!["caa"], "{d:#}");
    let message = find(&d, "caa")["message"].as_str().unwrap();
    assert_eq!(unsafe_chars(message), Vec::<char>::new(), "{message:?}");
    assert!(message.contains("other-ca.example\\u{1b}"), "{message}");

    let admin = format!("http://{}", edge.admin);
    let out = Command::new(bin())
        .arg("--config")
        .arg(edge.config_path())
        .args(["domain", "check", name, "--admin", &admin])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(unsafe_chars(&stdout), Vec::<char>::new(), "{stdout:?}");
    assert!(
        stdout.contains("other-ca.example\\u{1b}[2J\\u{d}\\u{a}forged\\u{9b}31m"),
        "{stdout}"
    );

    // The held-back order is logged with the check's message.
    assert!(click(&edge, name).await.is_err());
    let log = edge.stderr();
    assert!(log.contains("certificate order held back"), "{log}");
    assert_eq!(unsafe_chars(&log), Vec::<char>::new(), "{log:?}");
}
