//! `tls.ask` cannot be used to amplify a flood or to get certificates outside the books: answers
//! are remembered (denials too), requests are rate limited and counted, only a direct 200
//! approves, challenge paths and plain HTTP never ask, and an approved name is a domain like any
//! other: listed, removable, and backing off after failed orders instead of ordering every
//! minute (against a real Pebble that refuses it).

mod common;

use std::time::{Duration, Instant, SystemTime};

use clickedge::Domain;
use clickedge::clock::Clock;
use clickedge::policy::testing::AskServer;
use clickedge::store::{IssueStatus, SqliteStore, Store};
use common::Edge;
use common::pebble::{PebbleOptions, PebblePorts, orders};
use reqwest::Method;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// An edge (built-in CA) asking `server`, with `extra` lines in `[tls]`.
fn edge_asking(server: &AskServer, extra: &str) -> Edge {
    Edge::start_with(&format!("[tls]\nask = \"{}\"\n{extra}", server.url))
}

/// A TLS handshake for `name` (offering `alpn`), trusting the edge's CA.
async fn handshake(edge: &Edge, name: &str, alpn: &[u8]) -> std::io::Result<()> {
    let tcp = TcpStream::connect(edge.https).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    edge.tls_connector(alpn).connect(name, tcp).await.map(drop)
}

/// A plain HTTP `GET path` with `Host: host`; the status line.
async fn plain_get(edge: &Edge, host: &str, path: &str) -> String {
    let mut tcp = TcpStream::connect(edge.http).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

async fn domains(edge: &Edge) -> Vec<Value> {
    let (status, list) = edge.admin(Method::GET, "/v1/domains", None).await;
    assert_eq!(status, 200, "{list}");
    list.as_array().unwrap().clone()
}

async fn ask_requests(edge: &Edge, result: &str) -> f64 {
    edge.metric(&format!(
        "clickedge_ask_requests_total{{result=\"{result}\"}}"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_ask_approves_is_listed_served_and_removable_like_a_registered_one() {
    let server = AskServer::start().await;
    let edge = edge_asking(&server, "");
    let name = "ok-links.example.com";
    handshake(&edge, name, b"http/1.1")
        .await
        .expect("approved: served");
    let list = domains(&edge).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], name);
    assert_eq!(list[0]["origin"], "ask");
    assert_eq!(list[0]["certificate"]["status"], "valid", "{list:?}");
    assert_eq!(ask_requests(&edge, "allowed").await, 1.0);

    // From now on it is a registered name: links, clicks, no more questions.
    let link = edge.mint(name, "https://example.com/", json!({})).await;
    assert_eq!(edge.click_status(name, &link).await, 302);
    assert_eq!(server.hits(), 1, "a registered name is not asked about");

    // Removed, it is refused, until the endpoint is asked afresh at the next handshake.
    let (status, _) = edge
        .admin(Method::DELETE, &format!("/v1/domains/{name}"), None)
        .await;
    assert_eq!(status, 204);
    assert!(domains(&edge).await.is_empty());
    handshake(&edge, name, b"http/1.1")
        .await
        .expect("approved again");
    assert_eq!(server.hits(), 2, "the removal forgot the answer");

    // An operator adding it takes it over.
    edge.add_domain(name).await;
    assert_eq!(domains(&edge).await[0]["origin"], "admin");
}

/// The endpoint is asked directly: a proxy in the edge's environment (set for the CA, say) would
/// answer for a loopback endpoint with its own host's, here with nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_is_asked_past_a_proxy_in_the_environment() {
    let server = AskServer::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let edge = Edge::start_with_env(
        &[
            ("HTTP_PROXY", proxy.as_str()),
            ("ALL_PROXY", proxy.as_str()),
        ],
        &format!("[tls]\nask = \"{}\"\n", server.url),
    );
    handshake(&edge, "ok-links.example.com", b"http/1.1")
        .await
        .expect("approved by the endpoint itself");
    assert_eq!(server.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_or_any_answer_but_200_approves_nothing() {
    let server = AskServer::start().await;
    let edge = edge_asking(&server, "");
    for name in [
        "redirect.example.com",
        "empty.example.com",
        "no.example.com",
    ] {
        let err = handshake(&edge, name, b"http/1.1").await.expect_err(name);
        assert!(format!("{err:?}").contains("UnrecognisedName"), "{err:?}");
    }
    assert_eq!(server.followed(), 0, "the redirect is not followed");
    assert_eq!(server.hits(), 3);
    assert_eq!(ask_requests(&edge, "denied").await, 3.0);
    assert!(domains(&edge).await.is_empty());
    assert_eq!(edge.metric("clickedge_certificates_held").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_and_failed_names_are_asked_about_once() {
    let server = AskServer::start().await;
    let edge = edge_asking(&server, "");
    for _ in 0..10 {
        assert!(
            handshake(&edge, "no.example.com", b"http/1.1")
                .await
                .is_err()
        );
        assert!(
            handshake(&edge, "fail.example.com", b"http/1.1")
                .await
                .is_err()
        );
    }
    assert_eq!(server.hits(), 2);
    assert_eq!(ask_requests(&edge, "denied").await, 1.0);
    assert_eq!(ask_requests(&edge, "error").await, 1.0);
    assert_eq!(edge.metric("clickedge_ask_cache_hits_total").await, 18.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_random_names_costs_at_most_the_ask_rate() {
    let server = AskServer::start().await;
    let (rate, burst) = (1, 5);
    let edge = edge_asking(
        &server,
        &format!("ask_rate = {rate}\nask_burst = {burst}\n"),
    );
    let flood = 100;
    let started = Instant::now();
    for i in 0..flood {
        let name = format!("random-{i}-{}.example.org", rand::random::<u32>());
        assert!(handshake(&edge, &name, b"http/1.1").await.is_err());
    }
    // Whatever this machine's speed: at most the burst plus what the time taken refilled.
    let refilled = started.elapsed().as_secs() as usize * rate + 1;
    let made = server.hits();
    assert!(
        (burst..=burst + refilled).contains(&made),
        "{made} requests"
    );
    assert_eq!(ask_requests(&edge, "limited").await, (flood - made) as f64);
    assert_eq!(
        edge.metric("clickedge_tls_handshakes_total{outcome=\"unrecognized_name\"}")
            .await,
        flood as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenge_answers_and_plain_http_never_ask() {
    let server = AskServer::start().await;
    let edge = edge_asking(&server, "");
    for i in 0..20 {
        // Names the endpoint would approve: only a handshake may ask about them.
        let host = format!("ok-{i}.example.com");
        // A token of a CA's shape, so the answer is the lookup's, not the shape check's.
        let path = "/.well-known/acme-challenge/evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
        let status = plain_get(&edge, &host, path).await;
        assert!(status.contains("404"), "{status}");
        let status = plain_get(&edge, &host, "/c/token").await;
        assert!(status.contains("404"), "{status}");
        assert!(handshake(&edge, &host, b"acme-tls/1").await.is_err());
    }
    assert_eq!(server.hits(), 0);
    assert!(domains(&edge).await.is_empty());
}

/// A name approved by ask and refused by Pebble: handshakes make one
/// order, the failure is on the domain's record, and the backoff grows past a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_ask_approves_whose_orders_fail_backs_off_like_a_registered_one() {
    let name = "ok-refused.example.com";
    let server = AskServer::start().await;
    let ports = PebblePorts::reserve();
    let tables = format!(
        "[tls]\nissuer = \"acme\"\non_demand_timeout = \"60s\"\nask = \"{}\"\n{}",
        server.url,
        ports.acme_toml(&["http-01"])
    );
    let edge = Edge::start_with(&tables);
    let options = PebbleOptions {
        blocklist: vec![name.into()],
        ..Default::default()
    };
    let pebble = ports
        .start(edge.http.port(), edge.https.port(), &options)
        .await;
    let roots = pebble.issuing_roots().await;
    let d = three_refused_handshakes(&edge, &roots, name).await;
    assert_eq!(d["origin"], "ask", "{d}");
    assert_eq!(d["certificate"]["status"], "failed", "{d}");
    assert_eq!(d["certificate"]["failures"], 1, "{d}");
    let last_error = d["certificate"]["last_error"].as_str().unwrap();
    assert!(last_error.contains("rejectedIdentifier"), "{last_error}");
    assert!(retry_in(&d) <= Duration::from_secs(60), "{d}");

    // A minute passes (the retry time is moved to the past while the edge is stopped); the
    // restarted edge serves the name from the store, without asking, and orders once more.
    let (https, http) = (edge.https.port(), edge.http.port());
    let dir = edge.stop_keep_dir();
    let store = SqliteStore::open(&dir.path().join("data").join("clickedge.db")).unwrap();
    let domain = Domain::parse(name).unwrap();
    let record = store.domain(&domain).await.unwrap().expect("recorded");
    let status = IssueStatus {
        retry_at: Some(Clock::system().now() - Duration::from_secs(1)),
        ..IssueStatus::of(&record)
    };
    store.set_status(&domain, &status).await.unwrap();
    drop(store);
    let edge = Edge::start_in_at(dir, &tables, https, http);
    let d = three_refused_handshakes(&edge, &roots, name).await;
    assert_eq!(d["certificate"]["failures"], 2, "{d}");
    assert!(
        retry_in(&d) > Duration::from_secs(9 * 60),
        "ten minutes after the second failure: {d}"
    );
    assert_eq!(server.hits(), 1, "asked once, before the first order");
    drop(pebble);
}

/// Three handshakes for `name`, refused for want of a certificate, making one order between
/// them (which fails); the domain as the API shows it after.
async fn three_refused_handshakes(edge: &Edge, roots: &str, name: &str) -> Value {
    let url = format!("https://{name}:{}/c/x", edge.https.port());
    for _ in 0..3 {
        let client = edge.client_trusting(roots, &[name]).build().unwrap();
        assert!(client.get(&url).send().await.is_err(), "no certificate");
    }
    assert_eq!(orders(edge, "failed").await, 1.0, "{}", edge.stderr());
    let (_, d) = edge
        .admin(Method::GET, &format!("/v1/domains/{name}"), None)
        .await;
    d
}

/// How long from now until the domain's `retry_at`.
fn retry_in(domain: &Value) -> Duration {
    let at = domain["certificate"]["retry_at"]
        .as_str()
        .unwrap_or_else(|| panic!("no retry_at in {domain}"));
    let at =
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap();
    let at = SystemTime::from(at);
    at.duration_since(Clock::system().now()).unwrap_or_default()
}
