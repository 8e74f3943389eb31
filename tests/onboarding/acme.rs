//! Onboarding against a real ACME CA (Pebble): its refusal explained in plain words, and CAA
//! bound to an ACME account compared with the edge's own.

use std::net::SocketAddr;

use super::common::Edge;
use super::common::dns::Dns;
use super::common::pebble::{Pebble, PebbleOptions, PebblePorts, free_tcp_port};
use serde_json::json;

use super::{add, check, failing, find};

/// An edge ordering from Pebble (HTTP-01, answered on the edge's HTTP port) with checks asking
/// `dns`, names pointing at 127.0.0.1; Pebble, started with `options`, and its ACME address.
async fn with_pebble(dns: &Dns, options: &PebbleOptions) -> (Edge, Pebble, SocketAddr) {
    let ports = PebblePorts::reserve();
    let (https, http) = (free_tcp_port(), free_tcp_port());
    let config = format!(
        "[tls]\nissuer = \"acme\"\non_demand_timeout = \"60s\"\n{}[onboarding]\naddresses = [\"127.0.0.1\"]\ndns_servers = [\"{}\"]\nhttp_port = {http}\ndanger_allow_private_addresses = true\n",
        ports.acme_toml(&["http-01"]),
        dns.addr
    );
    let edge = Edge::start_in_at(tempfile::tempdir().unwrap(), &config, https, http);
    let ca = ports.listen;
    let pebble = ports.start(http, https, options).await;
    (edge, pebble, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_by_a_real_acme_ca_is_explained_in_plain_words() {
    let dns = Dns::start().await;
    let blocked = "blocked.example.com";
    dns.add_a(blocked, &["127.0.0.1"]).await;
    let options = PebbleOptions {
        blocklist: vec![blocked.into()],
        ..Default::default()
    };
    let (edge, pebble, _) = with_pebble(&dns, &options).await;
    let d = add(&edge, blocked).await;
    assert_eq!(failing(&d), Vec::<String>::new(), "{d:#}");
    // With HTTP-01 as the only challenge, reachability would hold back the order.
    assert_eq!(find(&d, "http-reachable")["status"], "pass");

    let link = edge.mint(blocked, "https://example.com/", json!({})).await;
    let roots = pebble.issuing_roots().await;
    let client = edge.client_trusting(&roots, &[blocked]).build().unwrap();
    assert!(
        client.get(&link).send().await.is_err(),
        "refused: no certificate"
    );
    let d = check(&edge, blocked).await;
    let c = find(&d, "certificate");
    assert_eq!(c["status"], "fail", "{d:#}");
    let message = c["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "the CA will not issue for blocked.example.com: its policy forbids this name"
        ),
        "{message}"
    );
    assert!(
        message.contains("rejectedIdentifier"),
        "the CA's words stay: {message}"
    );
    assert!(
        c["fix"].as_str().unwrap().starts_with("Use another name"),
        "{c:#}"
    );
}

/// A CAA `issue` bound to an ACME account (RFC 8657 `accounturi`): before the edge has an
/// account the check can only name the one required (a warning); once the first order created
/// the edge's account with the real CA, another account fails, naming the edge's and the record
/// to add, and adding that record passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caa_bound_to_an_acme_account_is_compared_with_the_edges_account() {
    let dns = Dns::start().await;
    let (first, bound) = ("first.example.com", "bound.example.com");
    dns.add_a(first, &["127.0.0.1"]).await;
    dns.add_a(bound, &["127.0.0.1"]).await;
    dns.add_caa_issue(
        bound,
        "letsencrypt.org; accounturi=https://ca.example/acct/999",
    )
    .await;
    let (edge, pebble, ca) = with_pebble(&dns, &PebbleOptions::default()).await;

    let d = add(&edge, bound).await;
    let c = find(&d, "caa");
    assert_eq!(c["status"], "warn", "no account yet: {d:#}");
    assert!(
        c["message"].as_str().unwrap().contains("no account"),
        "{c:#}"
    );

    // The first certificate creates the edge's account.
    assert_eq!(failing(&add(&edge, first).await), Vec::<String>::new());
    let link = edge.mint(first, "https://example.com/", json!({})).await;
    let roots = pebble.issuing_roots().await;
    let client = edge.client_trusting(&roots, &[first]).build().unwrap();
    assert_eq!(client.get(&link).send().await.unwrap().status(), 302);

    let d = check(&edge, bound).await;
    assert_eq!(failing(&d), vec!["caa"], "{d:#}");
    let c = find(&d, "caa");
    let message = c["message"].as_str().unwrap();
    assert!(message.contains("https://ca.example/acct/999"), "{message}");
    let records = c["fix_records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{c:#}");
    let value = records[0]["value"].as_str().unwrap();
    let account = value
        .strip_prefix("0 issue \"letsencrypt.org; accounturi=")
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("a record naming the edge's account: {value}"));
    assert!(
        account.starts_with(&format!("https://{ca}/")),
        "the account is the one the CA gave the edge: {account}"
    );
    assert!(message.contains(account), "{message}");

    dns.add_caa_issue(bound, &format!("letsencrypt.org; accounturi={account}"))
        .await;
    let d = check(&edge, bound).await;
    assert_eq!(find(&d, "caa")["status"], "pass", "{d:#}");
}
