//! Clicks over HTTPS: a verified 302 with `Location` and `Cache-Control: no-store`, HEAD, HTTP/1.1
//! keep-alive and h2, TLS 1.2 and 1.3, and the click line each redirect writes. Anything that
//! does not open is a 404 with no `Location` and no click, and so is a link of a domain removed
//! while its connection stays open.

mod common;

use common::Edge;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const DOMAIN: &str = "links.example.com";
const DEST: &str = "https://shop.example.com/sale?utm_source=email";

#[tokio::test]
async fn verified_redirect_logs_one_click_with_contract_fields() {
    let edge = Edge::start();
    edge.add_domain(DOMAIN).await;
    let link = edge
        .mint(DOMAIN, DEST, json!({ "campaign": "spring", "r": "42" }))
        .await;
    let res = edge
        .client(&[DOMAIN])
        .get(&link)
        .header("user-agent", "test-agent/1")
        .header("referer", "https://mail.example.net/")
        .send()
        .await
        .expect("click over verified TLS");
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], DEST);
    assert_eq!(res.headers()["cache-control"], "no-store");

    let clicks = edge.wait_for_clicks(1);
    assert_eq!(clicks.len(), 1, "{clicks:?}");
    let c = &clicks[0];
    assert_eq!(c["kind"], "click");
    assert_eq!(c["domain"], DOMAIN);
    assert_eq!(c["url"], DEST);
    assert_eq!(c["meta"], json!({ "campaign": "spring", "r": "42" }));
    assert_eq!(c["ip"], "127.0.0.1");
    assert_eq!(c["ua"], "test-agent/1");
    assert_eq!(c["referer"], "https://mail.example.net/");
    assert_eq!(c["method"], "GET");
    assert_eq!(c["tls"], "1.3");
    let ts = c["ts"].as_str().expect("ts");
    assert_eq!(ts.len(), "2026-01-01T00:00:00.000Z".len(), "{ts}");
    assert!(ts.ends_with('Z'));
}

#[tokio::test]
async fn head_h1_keepalive_h2_and_tls12_all_redirect_and_log() {
    every_protocol_redirects_and_logs(&Edge::start()).await;
}

#[tokio::test]
async fn https_served_by_threads_of_its_own_redirects_and_logs_the_same() {
    let edge = Edge::start_with(
        "[listen]\nhttps = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         https_threads = 2\n",
    );
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", edge.pid()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name.starts_with("https-"))
        .collect();
    assert_eq!(threads.len(), 2, "{threads:?}");
    every_protocol_redirects_and_logs(&edge).await;
}

/// HEAD, HTTP/1.1 keep-alive, h2 and TLS 1.2 each get the 302 and a click line.
async fn every_protocol_redirects_and_logs(edge: &Edge) {
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, DEST, json!({})).await;

    let head = edge.client(&[DOMAIN]).head(&link).send().await.unwrap();
    assert_eq!(head.status(), 302);
    assert_eq!(head.headers()["location"], DEST);

    let h1 = edge.client_builder(&[DOMAIN]).http1_only().build().unwrap();
    for _ in 0..3 {
        let res = h1.get(&link).send().await.unwrap();
        assert_eq!(res.status(), 302);
        assert_eq!(res.version(), reqwest::Version::HTTP_11);
    }

    let h2 = edge.client(&[DOMAIN]);
    let res = h2.get(&link).send().await.unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(res.version(), reqwest::Version::HTTP_2);

    let tls12 = edge
        .client_builder(&[DOMAIN])
        .tls_version_max(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert_eq!(tls12.get(&link).send().await.unwrap().status(), 302);

    let clicks = edge.wait_for_clicks(6);
    assert_eq!(clicks.len(), 6);
    let field = |k: &str| {
        clicks
            .iter()
            .map(|c| c[k].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(field("method"), ["HEAD", "GET", "GET", "GET", "GET", "GET"]);
    assert_eq!(field("http"), ["2", "1.1", "1.1", "1.1", "2", "2"]);
    assert_eq!(field("tls"), ["1.3", "1.3", "1.3", "1.3", "1.3", "1.2"]);
}

#[tokio::test]
async fn a_click_that_asks_to_close_gets_its_whole_answer_then_close_notify() {
    let edge = Edge::start();
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, DEST, json!({})).await;
    let url = reqwest::Url::parse(&link).unwrap();
    let path = url.path();
    // The answer and the close_notify after it leave in one write (BENCHMARKS.md): both arrive.
    // hyper hands back the transport of a request that asked for an upgrade, answered or not,
    // without shutting it down: the held answer must still go out.
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade, close\r\n";
    for (version, connection) in [
        ("HTTP/1.1", "Connection: close\r\n"),
        ("HTTP/1.0", ""),
        ("HTTP/1.1", upgrade),
    ] {
        let request = format!("GET {path} {version}\r\nHost: {DOMAIN}\r\n{connection}\r\n");
        let (answer, read) = over_tls(&edge, request.as_bytes()).await;
        // rustls reports an end without close_notify as an error (UnexpectedEof).
        read.unwrap_or_else(|e| panic!("{version}: the answer, then close_notify: {e}"));
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.contains(" 302 Found\r\n"), "{version}: {answer}");
        assert!(
            answer.contains(&format!("\r\nlocation: {DEST}\r\n")),
            "{version}: {answer}"
        );
        if connection == "Connection: close\r\n" {
            assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
        }
    }
    assert_eq!(edge.wait_for_clicks(3).len(), 3);
}

/// A click or pixel request whose body is left unread (a GET with one, half sent) is answered
/// with `Connection: close`: hyper closes such a connection after the answer, and a client not
/// told so sends its next request into the closing socket.
#[tokio::test]
async fn an_answer_leaving_a_body_unread_says_the_connection_closes() {
    let edge = Edge::start();
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, DEST, json!({})).await;
    let path = reqwest::Url::parse(&link).unwrap().path().to_owned();
    let pixel = "/o/anything";
    for (path, status) in [(path.as_str(), " 302 Found\r\n"), (pixel, " 200 OK\r\n")] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nContent-Length: 5000\r\n\r\npart of it"
        );
        let (answer, _) = over_tls(&edge, request.as_bytes()).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.contains(status), "{path}: {answer}");
        assert!(
            answer.contains("\r\nconnection: close\r\n"),
            "{path}: {answer}"
        );
    }
    // On the plain HTTP listener too: a CA's challenge fetch and the edge's own check.
    for path in [
        "/.well-known/acme-challenge/none",
        "/.well-known/clickedge-check/none",
    ] {
        let mut tcp = tokio::net::TcpStream::connect(edge.http).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nContent-Length: 5000\r\n\r\npart of it"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.contains(" 404 Not Found\r\n"), "{path}: {answer}");
        assert!(
            answer.contains("\r\nconnection: close\r\n"),
            "{path}: {answer}"
        );
    }
}

#[tokio::test]
async fn tampered_truncated_and_garbage_tokens_never_redirect() {
    let mut edge = Edge::start_with(common::HELD_CLICKS);
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, DEST, json!({ "c": "x" })).await;
    let (prefix, token) = link.rsplit_once('/').unwrap();
    let client = edge.client(&[DOMAIN]);

    let mut bad = Vec::new();
    for i in [0, 3, 10, token.len() / 2, token.len() - 1] {
        let mut t = token.as_bytes().to_vec();
        t[i] = if t[i] == b'A' { b'B' } else { b'A' };
        bad.push(String::from_utf8(t).unwrap());
    }
    bad.push(token[..token.len() - 1].to_owned());
    bad.push(token[..20].to_owned());
    bad.push(format!("{token}A"));
    bad.push("garbage".to_owned());
    bad.push("%00%ff".to_owned());
    for t in &bad {
        let res = client.get(format!("{prefix}/{t}")).send().await.unwrap();
        assert_eq!(res.status(), 404, "token {t:.40}");
        assert!(res.headers().get("location").is_none());
    }
    // Longer than any token we mint: refused (by the token codec or the HTTP layer's limits).
    let res = client
        .get(format!("{prefix}/{}", "A".repeat(40_000)))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error(), "{}", res.status());
    assert!(res.headers().get("location").is_none());
    for path in ["/", "/c/", "/c", "/other", &format!("/c/{token}/x")] {
        let url = format!("https://{DOMAIN}:{}{path}", edge.https.port());
        let res = client.get(url).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
        assert!(res.headers().get("location").is_none());
    }
    let post = client.post(&link).send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert!(post.headers().get("location").is_none());

    // One good click after the bad ones is the only line in the log.
    assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    assert_eq!(
        edge.metric("clickedge_requests_total{outcome=\"bad_token\"}")
            .await,
        bad.len() as f64
    );
    let clicks = edge.clicks_at_stop();
    assert_eq!(clicks.len(), 1, "{clicks:?}");
}

#[tokio::test]
async fn token_minted_for_one_domain_is_404_on_another() {
    let mut edge = Edge::start_with(common::HELD_CLICKS);
    edge.add_domain("a.example.com").await;
    edge.add_domain("b.example.com").await;
    let link = edge.mint("a.example.com", DEST, json!({})).await;
    let moved = link.replace("a.example.com", "b.example.com");
    let client = edge.client(&["a.example.com", "b.example.com"]);
    let res = client.get(&moved).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.headers().get("location").is_none());
    // And a Host that differs from SNI is refused rather than answered for the other name.
    let h1 = edge
        .client_builder(&["a.example.com", "b.example.com"])
        .http1_only()
        .build()
        .unwrap();
    let res = h1
        .get(&link)
        .header("host", "b.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 421);
    // The good click after them is the log's only line: nothing refused above was logged.
    assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    let clicks = edge.clicks_at_stop();
    assert_eq!(clicks.len(), 1, "{clicks:?}");
}

/// An edge serving `DOMAIN`, whose first HTTPS click issued its certificate, and the path of
/// that click's link.
async fn issued() -> (Edge, String) {
    let edge = Edge::start();
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, DEST, json!({})).await;
    assert_eq!(edge.click_status(DOMAIN, &link).await, 302);
    let path = link
        .split_once(&format!(":{}", edge.https.port()))
        .unwrap()
        .1
        .to_owned();
    (edge, path)
}

#[tokio::test]
async fn plain_http_click_is_upgraded_once_a_certificate_exists() {
    let (edge, path) = issued().await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = plain
        .get(format!("http://{}{path}", edge.http))
        .header("host", DOMAIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 308);
    assert_eq!(res.headers()["location"], format!("https://{DOMAIN}{path}"));

    let res = plain
        .get(format!("http://{}{path}", edge.http))
        .header("host", "unknown.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

/// A request that names its host ambiguously (two `Host` headers, or one that is not ASCII
/// text) is answered as misdirected, never as the connection's own name.
#[tokio::test]
async fn an_ambiguous_host_is_misdirected_not_taken_for_the_sni_name() {
    let (edge, path) = issued().await;
    let hosts: [Vec<u8>; 3] = [
        format!("Host: {DOMAIN}\r\nHost: other.example.com\r\n").into_bytes(),
        b"Host: other.example.com\x80\r\n".to_vec(),
        format!("Host: {DOMAIN}\r\n").into_bytes(),
    ];
    let mut answers = Vec::new();
    for host in hosts {
        let mut request = format!("GET {path} HTTP/1.1\r\n").into_bytes();
        request.extend_from_slice(&host);
        request.extend_from_slice(b"Connection: close\r\n\r\n");
        let (answer, _) = over_tls(&edge, &request).await;
        answers.push(String::from_utf8_lossy(&answer).into_owned());
    }
    assert!(
        answers[0].starts_with("HTTP/1.1 421 "),
        "two Host headers: {}",
        answers[0]
    );
    assert!(
        answers[1].starts_with("HTTP/1.1 421 "),
        "not ASCII: {}",
        answers[1]
    );
    assert!(
        answers[2].starts_with("HTTP/1.1 302 "),
        "the name itself: {}",
        answers[2]
    );
}

/// TLS handshakes the edge has done, whatever their outcome.
async fn handshakes(edge: &Edge) -> f64 {
    edge.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("clickedge_tls_handshakes_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn removing_a_domain_stops_its_links_on_connections_already_open() {
    let edge = Edge::start();
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, DEST, json!({})).await;
    // One HTTP/1.1 keep-alive connection carries both clicks.
    let client = edge.client_builder(&[DOMAIN]).http1_only().build().unwrap();
    let res = client.get(&link).send().await.unwrap();
    assert_eq!(res.status(), 302);
    res.bytes().await.unwrap();
    let before = handshakes(&edge).await;

    let (status, _) = edge
        .admin(
            reqwest::Method::DELETE,
            &format!("/v1/domains/{DOMAIN}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let res = client.get(&link).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.headers().get("location").is_none());
    assert_eq!(
        handshakes(&edge).await,
        before,
        "the second click came on the connection the first one opened"
    );
    assert_eq!(
        edge.metric("clickedge_requests_total{outcome=\"redirect\"}")
            .await,
        1.0
    );
    assert_eq!(edge.wait_for_clicks(1).len(), 1);
}

/// Sends `request` as raw bytes over a verified TLS connection to the edge for `DOMAIN` and reads
/// until it ends: what came, and how the read ended (an end without close_notify is an error).
async fn over_tls(edge: &Edge, request: &[u8]) -> (Vec<u8>, std::io::Result<usize>) {
    let tcp = tokio::net::TcpStream::connect(edge.https).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(DOMAIN).unwrap();
    let mut tls = edge
        .tls_connector(b"http/1.1")
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = tls.read_to_end(&mut answer).await;
    (answer, read)
}
