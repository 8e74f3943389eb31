//! Addresses as users know them: behind a dual-stack `[::]` listener an IPv4 client is logged
//! and bounded as its IPv4 address, not as `::ffff:a.b.c.d`; and a listener on several
//! addresses answers on each.

mod common;

use std::net::SocketAddr;

use common::Edge;
use serde_json::json;

#[tokio::test]
async fn an_ipv4_client_of_a_dual_stack_listener_is_logged_and_limited_as_ipv4() {
    // Bound on every address for the dual stack (IPv4 clients arrive IPv4-mapped): in a network
    // namespace holding only loopback. One click per second per address makes the bound visible.
    if !clickedge::netns::entered(
        "an_ipv4_client_of_a_dual_stack_listener_is_logged_and_limited_as_ipv4",
    ) {
        return;
    }
    let edge = Edge::start_with(
        "[listen]\nhttps = \"[::]:0\"\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         [clicks]\nflush_interval = \"10ms\"\nmax_clicks_per_ip_per_sec = 1\n",
    );
    assert!(edge.https.is_ipv6(), "{}", edge.https);
    edge.add_domain("links.example.com").await;
    let link = edge
        .mint("links.example.com", "https://example.com/", json!({}))
        .await;
    let over = |ip: &str| {
        let addr = SocketAddr::new(ip.parse().unwrap(), edge.https.port());
        edge.client_builder(&[])
            .resolve("links.example.com", addr)
            .build()
            .unwrap()
    };
    let v4 = over("127.0.0.1");
    for _ in 0..2 {
        assert_eq!(v4.get(&link).send().await.unwrap().status(), 302);
    }
    let clicks = edge.wait_for_clicks(1);
    assert_eq!(clicks.len(), 1, "{clicks:?}");
    assert_eq!(clicks[0]["ip"], "127.0.0.1");
    assert_eq!(
        edge.metric("clickedge_clicks_unlogged_total{reason=\"rate\"}")
            .await,
        1.0,
        "the second click of the same IPv4 address is past its bound"
    );

    // An IPv6 client stays IPv6.
    let v6 = over("::1");
    assert_eq!(v6.get(&link).send().await.unwrap().status(), 302);
    let clicks = edge.wait_for_clicks(2);
    assert_eq!(clicks[1]["ip"], "::1");
    assert!(!edge.stderr().contains("::ffff:"), "{}", edge.stderr());
}

#[tokio::test]
async fn a_listener_on_several_addresses_answers_on_each() {
    let edge = Edge::start_with(
        "[listen]\nhttps = [\"127.0.0.1:0\", \"[::1]:0\"]\n\
         http = [\"127.0.0.1:0\", \"127.0.0.2:0\"]\nadmin = \"127.0.0.1:0\"\n\
         [clicks]\nflush_interval = \"10ms\"\n",
    );
    let bound = |key: &str| -> Vec<SocketAddr> {
        edge.listening
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, a)| *a)
            .collect()
    };
    let (https, http) = (bound("https"), bound("http"));
    assert_eq!(https.len(), 2, "{:?}", edge.listening);
    assert!(https[0].is_ipv4() && https[1].is_ipv6(), "{https:?}");
    assert_eq!(http.len(), 2, "{:?}", edge.listening);
    edge.add_domain("links.example.com").await;
    let link = edge
        .mint("links.example.com", "https://example.com/", json!({}))
        .await;
    for addr in &https {
        let mut link = url::Url::parse(&link).unwrap();
        link.set_port(Some(addr.port())).unwrap();
        let client = edge
            .client_builder(&[])
            .resolve("links.example.com", *addr)
            .build()
            .unwrap();
        assert_eq!(
            client.get(link).send().await.unwrap().status(),
            302,
            "{addr}"
        );
    }
    let ips: Vec<_> = edge
        .wait_for_clicks(2)
        .iter()
        .map(|c| c["ip"].clone())
        .collect();
    assert_eq!(ips, [json!("127.0.0.1"), json!("::1")]);
    for addr in &http {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: links.example.com\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 "), "{addr}: {answer}");
    }
}
