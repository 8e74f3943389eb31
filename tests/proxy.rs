//! Behind a load balancer (`listen.proxy_protocol`): the client a trusted proxy names in its
//! PROXY v1 or v2 header is the one clicks are logged and limited as; a header from anyone else,
//! a trusted proxy without one, and truncated or oversized headers are refused. The headers are
//! built by hand here, byte by byte from the specification, not by the parser the edge uses.

mod common;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use common::Edge;
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

const DOMAIN: &str = "links.example.com";
/// The trusted proxy is 127.0.0.1; anyone else on loopback is not.
const LISTEN: &str = "[listen]\nhttps = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n\
    admin = \"127.0.0.1:0\"\nproxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\"]\n";
const STRANGER: &str = "127.0.0.2";
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header: `PROXY` (or `LOCAL`) over TCP from `source` to `dest`, same family.
fn v2(local: bool, source: SocketAddr, dest: SocketAddr) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(if local { 0x20 } else { 0x21 });
    let mut body = Vec::new();
    match (source.ip(), dest.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            h.push(0x11);
            body.extend(s.octets());
            body.extend(d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            h.push(0x21);
            body.extend(s.octets());
            body.extend(d.octets());
        }
        _ => panic!("one family for both addresses"),
    }
    body.extend(source.port().to_be_bytes());
    body.extend(dest.port().to_be_bytes());
    h.extend(u16::try_from(body.len()).unwrap().to_be_bytes());
    h.extend(body);
    h
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A connection to `to` from the loopback address `from`.
async fn connect(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends `header` on a connection from `from`, then clicks `path` over TLS: the status, or `None`
/// when the edge closed the connection instead.
async fn click(edge: &Edge, from: &str, header: &[u8], path: &str) -> Option<u16> {
    let mut tcp = connect(from, edge.https).await;
    tcp.write_all(header).await.unwrap();
    let name = ServerName::try_from(DOMAIN).unwrap();
    let mut tls = edge
        .tls_connector(b"http/1.1")
        .connect(name, tcp)
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// Sends `bytes` to `to` from `from` (then closes its side when `close`), and reads until the
/// edge closes: what it answered.
async fn poke(from: &str, to: SocketAddr, bytes: &[u8], close: bool) -> String {
    let mut tcp = connect(from, to).await;
    tcp.write_all(bytes).await.unwrap();
    if close {
        tcp.shutdown().await.unwrap();
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut answer))
        .await
        .expect("the edge closes the connection")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

async fn edge_with_link(extra: &str) -> (Edge, String) {
    let edge = Edge::start_with(&format!(
        "{LISTEN}[clicks]\nflush_interval = \"10ms\"\n{extra}"
    ));
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    let path = url::Url::parse(&link).expect("a link").path().to_owned();
    (edge, path)
}

#[tokio::test]
async fn the_client_a_trusted_proxy_names_is_logged_and_limited() {
    // One click per second per address: were the proxy's address counted, only one would log.
    let (edge, path) = edge_with_link("max_clicks_per_ip_per_sec = 1\n").await;
    let dest = addr("192.0.2.1:443");
    let mapped = SocketAddr::new(
        IpAddr::V6("::ffff:192.0.2.55".parse::<Ipv6Addr>().unwrap()),
        4000,
    );
    let headers: Vec<Vec<u8>> = vec![
        b"PROXY TCP4 203.0.113.9 192.0.2.1 4711 443\r\n".to_vec(),
        b"PROXY TCP6 2001:db8::7 2001:db8::1 4711 443\r\n".to_vec(),
        v2(false, addr("198.51.100.4:5000"), dest),
        v2(
            false,
            addr("[2001:db8:1::8]:5000"),
            addr("[2001:db8::1]:443"),
        ),
        v2(false, mapped, addr("[::ffff:192.0.2.1]:443")),
        // No client named: the proxy's own connection, seen as the proxy.
        b"PROXY UNKNOWN\r\n".to_vec(),
    ];
    for h in &headers {
        let status = click(&edge, "127.0.0.1", h, &path).await;
        assert_eq!(status, Some(302), "{}", String::from_utf8_lossy(h));
    }
    let ips: Vec<String> = edge
        .wait_for_clicks(headers.len())
        .iter()
        .map(|c| c["ip"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ips,
        [
            "203.0.113.9",
            "2001:db8::7",
            "198.51.100.4",
            "2001:db8:1::8",
            "192.0.2.55",
            "127.0.0.1"
        ]
    );
    assert_eq!(
        edge.metric("clickedge_clicks_unlogged_total{reason=\"rate\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn headers_from_strangers_missing_truncated_or_oversized_are_refused() {
    let (edge, path) = edge_with_link("").await;
    let v1 = b"PROXY TCP4 203.0.113.9 192.0.2.1 4711 443\r\n";
    let get = format!("GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n");

    // A stranger's header, on both listeners.
    for to in [edge.https, edge.http] {
        let header_then_get = [&v1[..], get.as_bytes()].concat();
        assert_eq!(poke(STRANGER, to, &header_then_get, false).await, "");
    }
    edge.wait_for_log("which is not in listen.trusted_proxies", 2);
    // The trusted proxy without a header, on both listeners.
    assert_eq!(click(&edge, "127.0.0.1", b"", &path).await, None);
    assert_eq!(
        poke("127.0.0.1", edge.http, get.as_bytes(), false).await,
        ""
    );
    edge.wait_for_log("without a proxy protocol header", 2);
    // Headers cut short (the proxy closes mid-header) and too long.
    let full_v2 = v2(false, addr("198.51.100.4:5000"), addr("192.0.2.1:443"));
    for cut in [&v1[..20], &full_v2[..14], &full_v2[..20]] {
        assert_eq!(poke("127.0.0.1", edge.https, cut, true).await, "");
    }
    edge.wait_for_log("proxy protocol header truncated", 3);
    let long_v1 = format!("PROXY TCP4 {} 192.0.2.1 4711 443\r\n", "0".repeat(100));
    assert_eq!(
        poke("127.0.0.1", edge.https, long_v1.as_bytes(), false).await,
        ""
    );
    edge.wait_for_log("proxy protocol header longer than 107 bytes", 1);
    let mut long_v2 = V2_SIGNATURE.to_vec();
    long_v2.extend([0x21, 0x11, 0xff, 0xff]);
    assert_eq!(poke("127.0.0.1", edge.https, &long_v2, false).await, "");
    edge.wait_for_log("proxy protocol header longer than", 2);
    assert_eq!(
        poke(
            "127.0.0.1",
            edge.https,
            b"PROXY TCP4 not-an-address\r\n",
            false
        )
        .await,
        ""
    );
    edge.wait_for_log("malformed proxy protocol v1 header", 1);
    for (reason, refused) in [("untrusted", 2.0), ("missing", 2.0), ("malformed", 6.0)] {
        let name = format!("clickedge_proxy_protocol_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(edge.metric(&name).await, refused, "{name}");
    }

    // What is served: a proxy's LOCAL connection (its health check) as the proxy, a stranger
    // without a header as itself, and the plain HTTP listener behind a header.
    let local = v2(true, addr("0.0.0.0:0"), addr("0.0.0.0:0"));
    assert_eq!(click(&edge, "127.0.0.1", &local, &path).await, Some(302));
    assert_eq!(click(&edge, STRANGER, b"", &path).await, Some(302));
    let plain = poke(
        "127.0.0.1",
        edge.http,
        &[&v1[..], get.as_bytes()].concat(),
        false,
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 "), "{plain}");
    let ips: Vec<String> = edge
        .wait_for_clicks(2)
        .iter()
        .map(|c| c["ip"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ips,
        ["127.0.0.1", STRANGER],
        "refused connections log no click"
    );
}

/// A peer that is not a trusted proxy is served as itself, and counted against its address at
/// once, before the edge waits for its first bytes: silent connections from one address take
/// `limits.max_connections_per_ip` places, no more. They used to be counted only once their
/// first bytes came (or the handshake timeout passed), so one address could hold every place.
#[tokio::test]
async fn a_strangers_silent_connections_are_counted_against_its_address_at_once() {
    let (edge, path) =
        edge_with_link("[limits]\nmax_connections_per_ip = 2\nmax_connections = 8\n").await;
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(connect(STRANGER, edge.https).await);
    }
    let refused = common::within(Duration::from_secs(20), || async {
        edge.metric("clickedge_connections_refused_total").await >= 6.0
    })
    .await;
    assert!(
        refused.is_some(),
        "refused: {}",
        edge.metric("clickedge_connections_refused_total").await
    );
    let v1 = b"PROXY TCP4 203.0.113.9 192.0.2.1 4711 443\r\n";
    assert_eq!(click(&edge, "127.0.0.1", v1, &path).await, Some(302));
    drop(silent);
}
