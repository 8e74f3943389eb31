//! Limits shared by three real nodes over one PostgreSQL store, counted at a real CA (Pebble):
//! the account's order budget is one for the cluster, not one per node, a first handshake the
//! budget refuses fails at once instead of waiting out `tls.on_demand_timeout`, and a name
//! backing off fails fast on every node without a new order.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Edge;
use common::cluster::{ADDRESSES, Cluster};
use common::pebble::{PebbleOptions, orders};
use reqwest::Method;
use serde_json::json;

/// New orders the cluster may place (`acme.max_orders`, over an hour).
const BUDGET: usize = 2;
/// Distinct new names clicked for the first time, more than the budget allows.
const NAMES: usize = 6;
/// `tls.on_demand_timeout` in the cluster's config: a handshake waiting for an order or a
/// token gives up after this long.
const ON_DEMAND_TIMEOUT: Duration = Duration::from_secs(60);

fn name(i: usize) -> String {
    format!("n{i}.example.com")
}

/// Prefixes the error of a click the client gave up on: the edge kept it waiting.
const GAVE_UP: &str = "the client gave up waiting: ";

/// A click on `link` at `edge`: its status, or the error. The client waits less than the
/// edge's on-demand timeout, so a handshake the edge keeps waiting for an order ends on the
/// client's side ([`GAVE_UP`]), and one the edge refuses at once with the edge's alert.
async fn click(edge: &Edge, roots: &str, name: &str, link: &str) -> Result<u16, String> {
    let client = edge
        .client_trusting(roots, &[name])
        .timeout(ON_DEMAND_TIMEOUT * 3 / 4)
        .build()
        .expect("client");
    client
        .get(link)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| match e.is_timeout() {
            true => format!("{GAVE_UP}{e:?}"),
            false => format!("{e:?}"),
        })
}

/// Orders the nodes started, together.
async fn started(c: &Cluster) -> f64 {
    let mut n = 0.0;
    for edge in &c.nodes {
        n += orders(edge, "started").await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_never_exceed_a_shared_order_budget_and_refused_names_fail_fast_everywhere() {
    let acme = format!("max_orders = {BUDGET}\norder_window = \"1h\"\n");
    let c = Cluster::start_with_acme(&["http-01"], &PebbleOptions::default(), &acme, "").await;
    let mut links = Vec::new();
    for i in 0..NAMES {
        c.node(0).add_domain(&name(i)).await;
        c.pebble.point(&name(i), ADDRESSES[i % 3]).await;
        links.push(
            c.node(0)
                .mint(&name(i), "https://example.com/", json!({}))
                .await,
        );
    }
    // Every node has every name in memory before the first handshakes.
    for (i, link) in links.iter().enumerate() {
        c.until_every_node_serves(&name(i), link).await;
    }
    let roots = c.pebble.issuing_roots().await;

    // First handshakes for every name at once, spread over the three nodes.
    let c = Arc::new(c);
    let mut clicks = tokio::task::JoinSet::new();
    for (i, link) in links.iter().enumerate() {
        let (c, roots, link) = (c.clone(), roots.clone(), link.clone());
        clicks.spawn(async move { (i, click(c.node(i % 3), &roots, &name(i), &link).await) });
    }
    let (mut served, mut refused) = (Vec::new(), Vec::new());
    while let Some(r) = clicks.join_next().await {
        let (i, result) = r.expect("click task");
        match result {
            Ok(302) => served.push(i),
            other => refused.push((i, other)),
        }
    }
    let logs = || {
        let nodes: Vec<String> = c.nodes.iter().map(Edge::stderr).collect();
        nodes.join("\n---\n")
    };
    assert_eq!(
        c.pebble.orders_placed(),
        BUDGET,
        "orders at Pebble\n{}",
        logs()
    );
    assert_eq!(started(&c).await, BUDGET as f64, "orders the nodes started");
    assert_eq!(
        served.len(),
        BUDGET,
        "served: {served:?}, refused: {refused:?}"
    );
    for (i, result) in &refused {
        // Refused by the edge, not kept waiting for a token until the client gave up.
        let err = result.as_ref().expect_err(&name(*i));
        assert!(!err.starts_with(GAVE_UP), "{}: {err}\n{}", name(*i), logs());
    }

    // Each refused name backs off on every node: its handshakes fail fast there too, and no
    // node places an order for it.
    for (i, _) in &refused {
        for (n, edge) in c.nodes.iter().enumerate() {
            let result = click(edge, &roots, &name(*i), &links[*i]).await;
            let err = result.expect_err(&format!("{} on node {n}", name(*i)));
            assert!(!err.starts_with(GAVE_UP), "{} on node {n}: {err}", name(*i));
            let (status, body) = edge
                .admin(Method::GET, &format!("/v1/domains/{}", name(*i)), None)
                .await;
            assert_eq!(status, 200, "{body}");
            let cert = &body["certificate"];
            assert_eq!(cert["status"], "failed", "{body}");
            assert!(cert["retry_at"].is_string(), "{body}");
            let error = cert["last_error"].as_str().unwrap_or_default();
            assert!(error.contains("order budget"), "{body}");
        }
    }
    assert_eq!(c.pebble.orders_placed(), BUDGET, "orders at Pebble");
    assert_eq!(started(&c).await, BUDGET as f64, "orders the nodes started");
}
