//! Hostile input never stops the edge: garbage, truncated or odd ClientHellos, plaintext on the
//! TLS port, TLS on the HTTP port, unknown methods, bogus versions, huge URIs and headers. The
//! edge answers or closes, never panics, keeps serving clicks, and a bounded soak of mixed
//! garbage leaves its memory where it was. Slow clients are closed by the timeouts and do not
//! block a normal click.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Edge;
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const DOMAIN: &str = "links.example.com";

/// A TLS 1.3 ClientHello with `sni` (any bytes), X25519 key share, one cipher suite.
fn client_hello(sni: &[u8]) -> Vec<u8> {
    let mut ext = Vec::new();
    let mut push_ext = |ty: u16, body: &[u8]| {
        ext.extend_from_slice(&ty.to_be_bytes());
        ext.extend_from_slice(&(body.len() as u16).to_be_bytes());
        ext.extend_from_slice(body);
    };
    let mut sni_body = Vec::new();
    sni_body.extend_from_slice(&((sni.len() + 3) as u16).to_be_bytes());
    sni_body.push(0);
    sni_body.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    sni_body.extend_from_slice(sni);
    push_ext(0x0000, &sni_body);
    push_ext(0x002b, &[0x02, 0x03, 0x04]);
    push_ext(0x000a, &[0x00, 0x02, 0x00, 0x1d]);
    push_ext(0x000d, &[0x00, 0x02, 0x04, 0x03]);
    let mut share = vec![0x00, 0x24, 0x00, 0x1d, 0x00, 0x20];
    share.extend_from_slice(&[9u8; 32]);
    push_ext(0x0033, &share);

    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]);
    body.extend_from_slice(&[0x01, 0x00]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);

    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

/// Sends `bytes`, then reads until the edge closes or `limit` passes. Returns what came back.
async fn poke(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let _ = tcp.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut out)).await;
    out
}

fn connector(edge: &Edge) -> TlsConnector {
    edge.tls_connector(b"http/1.1")
}

/// Sends raw bytes inside a verified TLS connection and returns the raw answer.
async fn over_tls(edge: &Edge, bytes: &[u8]) -> Vec<u8> {
    let tcp = TcpStream::connect(edge.https).await.unwrap();
    let mut tls = connector(edge)
        .connect(ServerName::try_from(DOMAIN).unwrap(), tcp)
        .await
        .expect("handshake");
    let _ = tls.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), tls.read_to_end(&mut out)).await;
    out
}

fn status_of(answer: &[u8]) -> String {
    String::from_utf8_lossy(answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

async fn still_serving(edge: &mut Edge, link: &str) {
    assert!(edge.alive(), "the edge died:\n{}", edge.stderr());
    let res = edge
        .client(&[DOMAIN])
        .get(link)
        .send()
        .await
        .expect("click");
    assert_eq!(res.status(), 302);
    assert!(!edge.stderr().contains("panicked"), "{}", edge.stderr());
}

async fn edge_with_link(extra: &str) -> (Edge, String) {
    let edge = Edge::start_with(extra);
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    (edge, link)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_odd_client_hellos_are_answered_or_closed() {
    let (mut edge, link) = edge_with_link("").await;
    let random: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
    let hello = client_hello(DOMAIN.as_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random),
        ("truncated ClientHello", hello[..hello.len() / 2].to_vec()),
        (
            "plaintext HTTP on the TLS port",
            b"GET /c/x HTTP/1.1\r\nHost: links.example.com\r\n\r\n".to_vec(),
        ),
        ("oversized SNI", client_hello(&vec![b'a'; 4000])),
        (
            "SNI with invalid characters",
            client_hello(b"links_ex ample.com"),
        ),
        ("SNI with a NUL", client_hello(b"links.example.com\0.evil")),
        ("empty SNI", client_hello(b"")),
        ("unregistered SNI", client_hello(b"other.example.com")),
    ];
    for (what, bytes) in &cases {
        let answer = poke(edge.https, bytes).await;
        // Either nothing (closed) or a TLS alert record; never a ServerHello.
        assert!(
            answer.is_empty() || answer[0] == 0x15,
            "{what}: unexpected answer {:?}",
            &answer[..answer.len().min(16)]
        );
        still_serving(&mut edge, &link).await;
    }
    // TLS on the plain HTTP port: an HTTP error or a close, nothing else.
    let answer = poke(edge.http, &client_hello(DOMAIN.as_bytes())).await;
    assert!(
        answer.is_empty() || status_of(&answer).starts_with("HTTP/1.1 4"),
        "{}",
        status_of(&answer)
    );
    still_serving(&mut edge, &link).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upper_case_and_trailing_dot_sni_are_served_as_the_registered_name() {
    let (mut edge, link) = edge_with_link("").await;
    for sni in [
        "LINKS.EXAMPLE.COM",
        "Links.Example.Com.",
        "links.example.com.",
    ] {
        let answer = poke(edge.https, &client_hello(sni.as_bytes())).await;
        // A handshake record (ServerHello), not an alert.
        assert_eq!(
            answer.first(),
            Some(&0x16),
            "{sni}: {:?}",
            &answer[..answer.len().min(8)]
        );
    }
    assert_eq!(
        edge.metric("clickedge_tls_handshakes_total{outcome=\"unrecognized_name\"}")
            .await,
        0.0
    );
    still_serving(&mut edge, &link).await;
}

/// A rustls client whose first key share is for pure ML-KEM-768, a group the edge does not
/// enable: the edge picks X25519, the client's next group, and asks for it with a
/// HelloRetryRequest (RFC 8446 §4.1.4).
fn hello_retry_connector(edge: &Edge) -> TlsConnector {
    use rustls::crypto::aws_lc_rs::{default_provider, kx_group};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(edge.ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let provider = rustls::crypto::CryptoProvider {
        kx_groups: vec![kx_group::MLKEM768, kx_group::X25519],
        ..default_provider()
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider.into())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(std::sync::Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_asked_to_retry_its_hello_completes_the_handshake_and_is_redirected() {
    let (mut edge, link) = edge_with_link("").await;
    let path = &link[link.find("/c/").unwrap()..];
    let tcp = TcpStream::connect(edge.https).await.unwrap();
    let mut tls = hello_retry_connector(&edge)
        .connect(ServerName::try_from(DOMAIN).unwrap(), tcp)
        .await
        .expect("handshake after a HelloRetryRequest");
    assert_eq!(
        tls.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::FullWithHelloRetryRequest),
        "the edge was expected to ask for another key share"
    );
    let request = format!("GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    assert!(
        status_of(&answer).starts_with("HTTP/1.1 302"),
        "{}",
        status_of(&answer)
    );
    still_serving(&mut edge, &link).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_is_answered_with_an_error_never_a_redirect() {
    let (mut edge, link) = edge_with_link(common::HELD_CLICKS).await;
    let path = &link[link.find("/c/").unwrap()..];
    let big_uri = format!(
        "GET /c/{} HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n",
        "A".repeat(100_000)
    );
    let big_headers = format!(
        "GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nX-Big: {}\r\n\r\n",
        "b".repeat(200_000)
    );
    let cases = [
        (
            "unknown method",
            format!("BREW {path} HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n"),
        ),
        (
            "bogus version",
            format!("GET {path} HTTP/9.9\r\nHost: {DOMAIN}\r\n\r\n"),
        ),
        (
            "garbage request line",
            "\u{1}\u{2}\u{3} nonsense\r\n\r\n".to_owned(),
        ),
        ("100 KB URI", big_uri),
        ("200 KB header", big_headers),
        (
            "URI just over the limit",
            format!(
                "GET /c/{} HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n",
                "A".repeat(9000)
            ),
        ),
    ];
    for (what, request) in &cases {
        let answer = over_tls(&edge, request.as_bytes()).await;
        let status = status_of(&answer);
        assert!(
            answer.is_empty()
                || status.starts_with("HTTP/1.1 4")
                || status.starts_with("HTTP/1.1 5"),
            "{what}: {status}"
        );
        assert!(
            !String::from_utf8_lossy(&answer)
                .to_lowercase()
                .contains("location:"),
            "{what}"
        );
        still_serving(&mut edge, &link).await;
    }
    let answer = over_tls(&edge, cases[5].1.as_bytes()).await;
    assert_eq!(status_of(&answer), "HTTP/1.1 414 URI Too Long");
    // One more good click, after every bad request: the log holds exactly the good ones (one
    // per case, and this), none of the bad requests.
    still_serving(&mut edge, &link).await;
    let clicks = edge.clicks_at_stop();
    assert_eq!(clicks.len(), cases.len() + 1, "{clicks:?}");
    assert!(
        clicks.iter().all(|c| c["url"] == "https://example.com/"),
        "{clicks:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_by_the_timeouts_and_do_not_block_a_click() {
    let (mut edge, link) = edge_with_link(
        "[tls]\nhandshake_timeout = \"2s\"\n[limits]\nheader_read_timeout = \"2s\"\n",
    )
    .await;
    let mut slow = Vec::new();
    for i in 0..300 {
        // Half on each listener: a partial request head on HTTP, nothing at all on HTTPS.
        let (addr, bytes): (SocketAddr, &[u8]) = if i % 2 == 0 {
            (edge.http, b"GET /c/x HTTP/1.1\r\nHost: links.exa")
        } else {
            (edge.https, b"")
        };
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(bytes).await.unwrap();
        slow.push(tcp);
    }
    // A normal click gets through while they hang.
    still_serving(&mut edge, &link).await;
    // Every slow client is closed by the edge (EOF or reset), well within the deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    for mut tcp in slow {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(left, tcp.read_to_end(&mut buf)).await;
        assert!(
            closed.is_ok(),
            "a slow client was not closed by the timeout"
        );
    }
    still_serving(&mut edge, &link).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_connection_limit_closes_the_extra_connection() {
    let (mut edge, link) = edge_with_link("[limits]\nmax_connections_per_ip = 3\n").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let tcp = TcpStream::connect(edge.http).await.unwrap();
        held.push(tcp);
    }
    // Let the edge accept and count them, then the fourth is closed at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while edge.metric("clickedge_connections_open").await < 3.0 {
        assert!(Instant::now() < deadline, "connections not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut extra = TcpStream::connect(edge.http).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), extra.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the extra connection was not closed");
    assert_eq!(
        edge.metric("clickedge_connections_refused_total").await,
        1.0
    );
    drop(held);
    // Closed connections free their places again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while edge.metric("clickedge_connections_open").await > 0.0 {
        assert!(Instant::now() < deadline, "connections not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    still_serving(&mut edge, &link).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_is_backpressure_not_a_crash() {
    let (mut edge, link) = edge_with_link("[limits]\nmax_connections = 4\n").await;
    // Held on the HTTPS listener, whose cap `max_connections` is (the HTTP one has its own).
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(edge.https).await.unwrap());
    }
    // The fifth connection waits in the backlog: a click on it completes once one closes.
    let client = edge.client(&[DOMAIN]);
    let waiting = tokio::spawn({
        let link = link.clone();
        async move { client.get(&link).send().await.map(|r| r.status().as_u16()) }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while edge.metric("clickedge_connections_open").await < 4.0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !waiting.is_finished(),
        "the capped connection was served early"
    );
    held.pop();
    assert_eq!(waiting.await.unwrap().unwrap(), 302);
    drop(held);
    still_serving(&mut edge, &link).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connections_are_closed() {
    let (mut edge, link) = edge_with_link("[limits]\nkeepalive_timeout = \"1s\"\n").await;
    let path = &link[link.find("/c/").unwrap()..];
    let tcp = TcpStream::connect(edge.https).await.unwrap();
    let mut tls = connector(&edge)
        .connect(ServerName::try_from(DOMAIN).unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "idle keep-alive connection left open");
    assert!(
        status_of(&buf).starts_with("HTTP/1.1 302"),
        "{}",
        status_of(&buf)
    );
    still_serving(&mut edge, &link).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_body_over_the_limit_is_413() {
    let edge = Edge::start_with("[limits]\nadmin_max_body_bytes = 1024\n");
    let res = reqwest::Client::new()
        .post(format!("http://{}/v1/domains", edge.admin))
        .bearer_auth(&edge.token)
        .header("content-type", "application/json")
        .body(format!("{{\"name\": \"{}\"}}", "a".repeat(4096)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
}

/// Bounded soak: 60 s of mixed garbage from 4 tasks; RSS ends within 10% of where it started
/// (measured after a warm-up round, so allocator arenas are already sized).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_of_mixed_garbage_leaves_memory_where_it_was() {
    let (mut edge, link) = edge_with_link("").await;
    let path = link[link.find("/c/").unwrap()..].to_owned();
    let https = edge.https;
    let http = edge.http;
    let connector = connector(&edge);
    let round = move |secs: u64| {
        let connector = connector.clone();
        let path = path.clone();
        async move {
            let until = Instant::now() + Duration::from_secs(secs);
            let mut tasks = tokio::task::JoinSet::new();
            for t in 0..4u8 {
                let connector = connector.clone();
                let path = path.clone();
                tasks.spawn(async move {
                    let mut n = 0u32;
                    // Bounded by time and by count.
                    while Instant::now() < until && n < 200_000 {
                        n += 1;
                        match (n + u32::from(t)) % 5 {
                            0 => {
                                let junk: Vec<u8> = (0..512).map(|_| rand::random::<u8>()).collect();
                                let _ = poke_quick(https, &junk).await;
                            }
                            1 => {
                                let _ = poke_quick(https, &client_hello(format!("r{n}.example.org").as_bytes())).await;
                            }
                            2 => {
                                let _ = poke_quick(http, b"\x16\x03\x01\x00\x05hello").await;
                            }
                            3 => {
                                let tcp = TcpStream::connect(https).await.unwrap();
                                if let Ok(mut tls) = connector
                                    .connect(ServerName::try_from(DOMAIN).unwrap(), tcp)
                                    .await
                                {
                                    let req = format!("GET {path}x HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n");
                                    let _ = tls.write_all(req.as_bytes()).await;
                                    let mut sink = Vec::new();
                                    let _ = tls.read_to_end(&mut sink).await;
                                }
                            }
                            _ => {
                                let _ = poke_quick(http, format!("GET /{} HTTP/1.1\r\n\r\n", "z".repeat(20_000)).as_bytes()).await;
                            }
                        }
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        }
    };
    round(10).await;
    let before = edge.rss_kib();
    round(60).await;
    let after = edge.rss_kib();
    eprintln!("RSS before {before} KiB, after {after} KiB");
    assert!(
        after * 10 <= before * 11,
        "RSS grew from {before} KiB to {after} KiB"
    );
    still_serving(&mut edge, &link).await;
}

async fn poke_quick(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<()> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(bytes).await?;
    let mut out = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut out)).await;
    Ok(())
}

/// What a client sends does not set what the edge logs: hellos rustls finds odd (an address as
/// the server name, a name that is no name) write nothing at the default levels. Each wrote a
/// warning, the client's name copied in whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_hellos_write_nothing_to_the_log() {
    let (mut edge, link) = edge_with_link("").await;
    for sni in [&b"1.2.3.4"[..], b"links_ex ample.com", &[1u8; 2000]] {
        for _ in 0..3 {
            poke(edge.https, &client_hello(sni)).await;
        }
    }
    still_serving(&mut edge, &link).await;
    let log = edge.stderr();
    assert!(!log.contains("rustls"), "{log}");
}
