//! The framing over real loopback sockets: the header's bytes are taken and nothing after them,
//! also when the header arrives in pieces.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A connected pair: (the proxy's end, the edge's end and the peer it sees).
async fn pair() -> (TcpStream, TcpStream, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (edge, peer) = listener.accept().await.unwrap();
    proxy.set_nodelay(true).unwrap();
    (proxy, edge, peer)
}

fn trusting(net: &str) -> ProxyProtocol {
    ProxyProtocol::new(vec![net.parse().unwrap()], Duration::from_secs(5))
}

/// Sends `pieces` (pausing between them), then `rest`; the client read and what is left after.
async fn through(
    proxy: &ProxyProtocol,
    pieces: &[&[u8]],
) -> (Result<SocketAddr, ProxyError>, Vec<u8>, SocketAddr) {
    let (mut from, mut to, peer) = pair().await;
    let pieces: Vec<Vec<u8>> = pieces.iter().map(|p| p.to_vec()).collect();
    let writer = tokio::spawn(async move {
        for p in pieces {
            from.write_all(&p).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        from.write_all(b"REST").await.unwrap();
        from.shutdown().await.unwrap();
    });
    let client = proxy.client(&mut to, peer).await;
    let mut rest = Vec::new();
    if client.is_ok() {
        to.read_to_end(&mut rest).await.unwrap();
    }
    writer.await.unwrap();
    (client, rest, peer)
}

#[tokio::test]
async fn a_v1_header_in_pieces_is_read_to_its_end_and_no_further() {
    let (client, rest, _) = through(
        &trusting("127.0.0.0/8"),
        &[
            b"PROXY TCP4 203.0.1",
            b"13.9 192.0.2.1 4711 44",
            b"3\r",
            b"\n",
        ],
    )
    .await;
    assert_eq!(client.unwrap(), "203.0.113.9:4711".parse().unwrap());
    assert_eq!(rest, b"REST");
}

#[tokio::test]
async fn a_v2_header_with_a_tlv_is_read_exactly() {
    let mut header = V2_SIGNATURE.to_vec();
    // PROXY over TCP6: two addresses, two ports, and a 5-byte NOOP TLV.
    header.extend([0x21, 0x21, 0, 36 + 8]);
    header.extend(
        "2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    header.extend(
        "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    header.extend([0x12, 0x67, 0x01, 0xbb]);
    header.extend([0x04, 0, 5, 1, 2, 3, 4, 5]);
    let (head, tail) = header.split_at(14);
    let (client, rest, _) = through(&trusting("127.0.0.1/32"), &[head, tail]).await;
    assert_eq!(client.unwrap(), "[2001:db8::7]:4711".parse().unwrap());
    assert_eq!(rest, b"REST");
}

#[tokio::test]
async fn a_v1_line_past_107_bytes_is_oversized() {
    let long = format!("PROXY TCP4 {}\r\n", "1".repeat(100));
    let (client, _, _) = through(&trusting("127.0.0.0/8"), &[long.as_bytes()]).await;
    assert!(
        matches!(client, Err(ProxyError::Oversized { max: 107 })),
        "{client:?}"
    );
}

#[tokio::test]
async fn an_untrusted_peer_without_a_header_is_itself_and_keeps_its_bytes() {
    let (client, rest, peer) = through(&trusting("192.0.2.0/24"), &[b"GET / HTTP/1.1\r\n"]).await;
    assert_eq!(client.unwrap(), peer);
    assert_eq!(rest, b"GET / HTTP/1.1\r\nREST");
}

/// An untrusted peer sending a header in pieces of fewer than five bytes is refused as one
/// sending it at once is (it was served as itself, the header never parsed nor counted).
#[tokio::test]
async fn an_untrusted_peers_header_in_small_pieces_is_refused() {
    let (client, _, peer) = through(
        &trusting("192.0.2.0/24"),
        &[b"PRO", b"XY TCP4 203.0.113.9 192.0.2.1 4711 443\r\n"],
    )
    .await;
    assert!(
        matches!(client, Err(ProxyError::Untrusted { peer: p }) if p == peer),
        "{client:?}"
    );
}

/// A v2 `LOCAL` header (a proxy's health check) whose family says TCP4 but whose address block
/// is empty: its addresses are ignored, as the spec says, not refused.
#[tokio::test]
async fn a_v2_local_header_is_taken_whatever_its_address_block() {
    let mut header = V2_SIGNATURE.to_vec();
    header.extend([0x20, 0x11, 0, 0]);
    let (client, rest, peer) = through(&trusting("127.0.0.1/32"), &[&header]).await;
    assert_eq!(client.unwrap(), peer);
    assert_eq!(rest, b"REST");
}

/// A trusted network written IPv4-mapped is the IPv4 one: peers are compared as IPv4.
#[test]
fn an_ipv4_mapped_trusted_network_trusts_its_ipv4_peers() {
    let proxy = trusting("::ffff:10.0.0.0/104");
    assert!(proxy.trusts("10.1.2.3:4000".parse().unwrap()));
    assert!(!proxy.trusts("11.0.0.1:4000".parse().unwrap()));
    assert!(trusting("2001:db8::/32").trusts("[2001:db8::1]:4000".parse().unwrap()));
}

#[test]
fn only_header_starts_look_like_headers() {
    assert!(looks_like_header(b"PROXY TCP4"));
    assert!(looks_like_header(b"PROXY"));
    assert!(looks_like_header(&V2_SIGNATURE[..5]));
    assert!(!looks_like_header(b"POST / HTTP/1.1"));
    assert!(!looks_like_header(b"PRO"), "too short to tell");
    assert!(!looks_like_header(&[0x16, 0x03, 0x01, 0x02, 0x00]));
}

/// Every reason a refusal is counted under is one the metric shows at zero from the start.
#[test]
fn every_refusal_reason_is_a_precreated_series() {
    let peer: SocketAddr = "192.0.2.7:1234".parse().unwrap();
    for e in [
        ProxyError::Untrusted { peer },
        ProxyError::Missing { peer },
        ProxyError::Timeout,
        ProxyError::Truncated,
        ProxyError::Oversized { max: V1_MAX },
        ProxyError::Read(std::io::Error::other("reset")),
        // V1 and V2 (parser errors) take the "malformed" arm with Truncated and Oversized.
    ] {
        assert!(
            crate::metrics::PROXY_REFUSALS.contains(&e.reason()),
            "{e}: {}",
            e.reason()
        );
    }
    // Counted before any refusal: one series per reason, each at zero.
    let metrics = crate::metrics::Metrics::unregistered();
    let families = prometheus::core::Collector::collect(&metrics.proxy_refused);
    let series = families[0].get_metric();
    assert_eq!(series.len(), crate::metrics::PROXY_REFUSALS.len());
    assert!(series.iter().all(|m| m.get_counter().get_value() == 0.0));
}
