//! Three nodes issuing from a real ACME CA (Pebble) through one PostgreSQL store: one order for
//! 50 first handshakes spread over the nodes, any node answering the challenges of an order
//! another placed (HTTP-01 and TLS-ALPN-01), a node SIGKILLed mid-order whose order another
//! node resumes, still one order at Pebble, and a node SIGSTOPped past its lease that writes
//! nothing once it runs again.

mod common;

use std::time::{Duration, Instant};

use common::Edge;
use common::cluster::{ADDRESSES, Cluster};
use common::pebble::{PebbleOptions, orders};
use reqwest::Method;
use serde_json::json;

const DOMAIN: &str = "links.example.com";

/// A link minted on `edge`, as minted (`https://<domain>/c/…`, no port).
async fn mint(edge: &Edge) -> String {
    let (status, body) = edge
        .admin(
            Method::POST,
            "/v1/links",
            Some(json!({ "domain": DOMAIN, "url": "https://example.com/", "meta": {} })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["link"].as_str().expect("link").to_owned()
}

/// A click on `link` at `edge` over TLS verified against `roots`.
async fn click(edge: &Edge, roots: &str, link: &str) -> Result<u16, String> {
    edge.client_trusting(roots, &[DOMAIN])
        .timeout(Duration::from_secs(90))
        .build()
        .expect("client")
        .get(edge.on_port(link))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

/// Orders the nodes started, together.
async fn started(c: &Cluster) -> f64 {
    let mut n = 0.0;
    for edge in &c.nodes {
        n += orders(edge, "started").await;
    }
    n
}

/// A domain added on node 0, pointed at node `answering` in Pebble's DNS, once every node has
/// it in memory (the challenge is answered by a node that serves the name).
async fn registered(c: &Cluster, answering: usize) -> String {
    c.node(0).add_domain(DOMAIN).await;
    c.pebble.point(DOMAIN, ADDRESSES[answering]).await;
    let link = mint(c.node(0)).await;
    c.until_every_node_serves(DOMAIN, &link).await;
    link
}

fn logs(c: &Cluster) -> String {
    let nodes: Vec<String> = c.nodes.iter().map(Edge::stderr).collect();
    format!(
        "{}\n--- pebble ---\n{}",
        nodes.join("\n---\n"),
        c.pebble.log()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_first_handshakes_over_three_nodes_make_one_order_and_all_get_the_certificate() {
    let c = Cluster::start(&["http-01"], &PebbleOptions::default(), "").await;
    let link = registered(&c, 1).await;
    let roots = c.pebble.issuing_roots().await;
    let mut clicks = tokio::task::JoinSet::new();
    let c = std::sync::Arc::new(c);
    for i in 0..50 {
        let (c, roots, link) = (c.clone(), roots.clone(), link.clone());
        clicks.spawn(async move { click(c.node(i % 3), &roots, &link).await });
    }
    let mut answers = Vec::new();
    while let Some(r) = clicks.join_next().await {
        answers.push(r.expect("click task"));
    }
    let failed: Vec<_> = answers.iter().filter(|a| **a != Ok(302)).collect();
    assert!(failed.is_empty(), "{failed:?}\n{}", logs(&c));
    assert_eq!(c.pebble.orders_placed(), 1, "orders at Pebble");
    assert_eq!(started(&c).await, 1.0, "orders the nodes started");
}

/// An order placed on node 0 (the only one handshaking), its `challenge` answered by node 1.
async fn an_order_of_one_node_validated_against_another(challenge: &str) {
    let c = Cluster::start(&[challenge], &PebbleOptions::default(), "").await;
    let link = registered(&c, 1).await;
    let roots = c.pebble.issuing_roots().await;
    let status = click(c.node(0), &roots, &link).await;
    assert_eq!(status, Ok(302), "{}", logs(&c));
    assert_eq!(orders(c.node(0), "started").await, 1.0);
    assert_eq!(orders(c.node(1), "started").await, 0.0);
    assert_eq!(c.pebble.orders_placed(), 1);
    if challenge == "http-01" {
        let answered = c
            .node(1)
            .metric("clickedge_requests_total{outcome=\"acme_challenge\"}")
            .await;
        assert!(answered >= 1.0, "node 1 answered no HTTP-01 challenge");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_of_an_order_placed_on_one_node_is_answered_by_another() {
    an_order_of_one_node_validated_against_another("http-01").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_of_an_order_placed_on_one_node_is_answered_by_another() {
    an_order_of_one_node_validated_against_another("tls-alpn-01").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_order_has_its_order_resumed_by_another() {
    // Pebble's validation waits up to 10 s: the holder is killed while its order is open.
    let options = PebbleOptions {
        va_sleep_secs: Some(10),
        ..PebbleOptions::default()
    };
    let mut c = Cluster::start(&["http-01"], &options, "").await;
    let link = registered(&c, 1).await;
    let roots = c.pebble.issuing_roots().await;
    // Killed once the order is placed, kept with the lease and its challenge made ready, while
    // Pebble's validation sleeps.
    order_in_flight_on_node_0(&c, &roots, &link).await;
    c.nodes[0].signal("KILL");
    let _ = c.nodes[0].wait();

    // Another node takes the name over once the lease (3 s) expires and finishes that order.
    node_2_finishes_the_same_order(&c, &roots, &link).await;
}

/// Node 2 clicks `link` and gets the certificate of node 0's order, resumed: still one order
/// at Pebble, none started by node 2.
async fn node_2_finishes_the_same_order(c: &Cluster, roots: &str, link: &str) {
    let status = click(c.node(2), roots, link).await;
    assert_eq!(status, Ok(302), "{}", logs(c));
    assert_eq!(
        c.pebble.orders_placed(),
        1,
        "orders at Pebble\n{}",
        c.pebble.log()
    );
    assert_eq!(
        orders(c.node(2), "started").await,
        0.0,
        "node 2 placed an order of its own"
    );
}

/// Starts a first handshake on node 0 and waits until its order's challenge is ready (Pebble's
/// validation then sleeps): the order is placed and kept with node 0's lease.
async fn order_in_flight_on_node_0(c: &Cluster, roots: &str, link: &str) {
    let client = c
        .node(0)
        .client_trusting(roots, &[DOMAIN])
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let url = c.node(0).on_port(link);
    tokio::spawn(async move { client.get(url).send().await.map(|_| ()) });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.pebble.log().contains("POST /chalZ/") {
        assert!(
            Instant::now() < deadline,
            "no challenge made ready\n{}",
            logs(c)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_past_its_lease_writes_nothing_after_another_finished_its_order() {
    let options = PebbleOptions {
        va_sleep_secs: Some(10),
        ..PebbleOptions::default()
    };
    let c = Cluster::start(&["http-01"], &options, "").await;
    let link = registered(&c, 1).await;
    let roots = c.pebble.issuing_roots().await;
    order_in_flight_on_node_0(&c, &roots, &link).await;
    c.node(0).signal("STOP");
    let lease = |c: &Cluster| {
        c.psql(&format!(
            "SELECT holder, fence FROM leases WHERE name = '{DOMAIN}'"
        ))
    };
    let held = lease(&c);
    assert!(held.starts_with("edge-0|"), "{held}");
    let stale_fence: i64 = held.trim().rsplit('|').next().unwrap().parse().unwrap();

    // Past the lease's TTL (3 s) node 2 takes over and finishes the same order.
    node_2_finishes_the_same_order(&c, &roots, &link).await;
    let rows = |c: &Cluster| {
        c.psql(&format!(
            "SELECT c.fence, c.not_after, c.version, d.failures, d.last_error IS NULL, d.version \
             FROM certificates c JOIN domains d ON d.name = c.domain WHERE c.domain = '{DOMAIN}'"
        ))
    };
    let written = rows(&c);
    let fence: i64 = written.split('|').next().unwrap().parse().unwrap();
    assert!(
        fence > stale_fence,
        "written under fence {fence}, stale {stale_fence}"
    );

    // Running again, node 0 finds its claim lost and writes nothing: not its certificate, not
    // a failure of the order it now sees finished by another.
    c.node(0).signal("CONT");
    let log = c.node(0).wait_for_log("nothing written here", 1);
    assert!(!log.contains("certificate issued"), "{log}");
    assert!(!log.contains("certificate issuance failed"), "{log}");
    assert_eq!(
        rows(&c),
        written,
        "rows changed after the stale holder resumed"
    );
    assert_eq!(c.pebble.orders_placed(), 1, "orders at Pebble");
}
