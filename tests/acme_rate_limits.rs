//! A CA's rate limit stops what it limits and nothing more: a limit of one name (Let's
//! Encrypt's duplicate certificate limit) pauses that name alone while another name gets its
//! certificate, and a limit of the whole account pauses every name until the CA's time. The CA
//! is a small one on loopback (`common::fake_acme`): Pebble cannot refuse one name this way.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::Edge;
use common::fake_acme::{FakeAcme, Refusal};
use reqwest::Method;
use serde_json::{Value, json};

/// The time the CA's `Retry-After` names, three days away: far enough to outlast any test, and
/// within the 7 days the edge takes at most. As the CA sends it, and as the edge writes it back.
fn retry_after() -> (String, String) {
    let at = clickedge::clock::Clock::system().now() + Duration::from_secs(3 * 24 * 3600);
    (httpdate::fmt_http_date(at), clickedge::clock::rfc3339(at))
}

/// A fake CA refusing new orders for `name` with `status` and `detail`, `Retry-After` the first
/// of `retry_after`, and an edge ordering from it.
async fn edge_refusing(
    name: &str,
    status: u16,
    detail: &str,
    retry_after: &(String, String),
) -> (Edge, FakeAcme) {
    let refusal = Refusal {
        status,
        detail: detail.into(),
        retry_after: retry_after.0.clone(),
    };
    let ca = FakeAcme::start(HashMap::from([(name.to_owned(), refusal)])).await;
    let edge = Edge::start_with(&format!(
        "[tls]\nissuer = \"acme\"\non_demand_timeout = \"30s\"\n{}",
        ca.acme_toml()
    ));
    (edge, ca)
}

/// Clicks a new link on `name`, trusting the fake CA's root: the status, or none without a
/// certificate.
async fn click(edge: &Edge, ca: &FakeAcme, name: &str) -> Option<u16> {
    let link = edge.mint(name, "https://example.com/", json!({})).await;
    let client = edge.client_trusting(&ca.root_pem, &[name]).build().unwrap();
    client
        .get(&link)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

async fn certificate(edge: &Edge, name: &str) -> Value {
    let (_, d) = edge
        .admin(Method::GET, &format!("/v1/domains/{name}"), None)
        .await;
    d["certificate"].clone()
}

async fn budget_paused_until(edge: &Edge) -> Value {
    let (_, cluster) = edge.admin(Method::GET, "/v1/cluster", None).await;
    cluster["budgets"][0]["paused_until"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_of_one_name_pauses_it_alone_while_other_names_get_certificates() {
    let (limited, other) = ("limited.example.com", "other.example.com");
    let later = retry_after();
    let (edge, ca) = edge_refusing(
        limited,
        429,
        &format!("too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after {}: see https://letsencrypt.org/docs/rate-limits/#new-certificates-per-exact-set-of-identifiers", later.0),
        &later,
    )
    .await;
    edge.add_domain(limited).await;
    edge.add_domain(other).await;

    assert_eq!(click(&edge, &ca, limited).await, None, "no certificate");
    assert_eq!(
        click(&edge, &ca, other).await,
        Some(302),
        "{}",
        edge.stderr()
    );
    assert_eq!(ca.new_orders(), [limited, other]);
    assert_eq!(certificate(&edge, other).await["status"], "valid");

    let cert = certificate(&edge, limited).await;
    assert_eq!(cert["status"], "failed", "{cert}");
    assert_eq!(cert["retry_at"], later.1, "{cert}");
    let said = cert["last_error"].as_str().unwrap();
    for words in [
        &format!(
            "\"New Certificates per Exact Set of Identifiers\" pauses orders for limited.example.com until {}; other names keep issuing",
            later.1
        ),
        "exact set of identifiers in the last 168h0m0s",
    ] {
        assert!(said.contains(words), "{said}");
    }
    assert_eq!(budget_paused_until(&edge).await, Value::Null);
    edge.wait_for_log("the CA rate-limits this name", 1);

    // The name stays paused without asking the CA again.
    assert_eq!(click(&edge, &ca, limited).await, None);
    assert_eq!(ca.new_orders().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_of_the_account_pauses_all_issuance_until_the_cas_time() {
    let (first, other) = ("first.example.com", "other.example.com");
    let later = retry_after();
    let (edge, ca) = edge_refusing(
        first,
        429,
        &format!("too many new orders (300) from this account in the last 3h0m0s, retry after {}: see https://letsencrypt.org/docs/rate-limits/#new-orders-per-account", later.0),
        &later,
    )
    .await;
    edge.add_domain(first).await;
    edge.add_domain(other).await;

    assert_eq!(click(&edge, &ca, first).await, None);
    assert_eq!(click(&edge, &ca, other).await, None, "paused too");
    assert_eq!(ca.new_orders(), [first], "no order for the other name");
    assert_eq!(budget_paused_until(&edge).await, later.1);

    let cert = certificate(&edge, first).await;
    assert_eq!(
        (cert["failures"].as_u64(), &cert["retry_at"]),
        (Some(0), &json!(later.1)),
        "{cert}"
    );
    let said = cert["last_error"].as_str().unwrap();
    assert!(
        said.contains(&format!(
            "\"New Orders per Account\" pauses all issuance until {}, for every name on every node",
            later.1
        )),
        "{said}"
    );
    let cert = certificate(&edge, other).await;
    assert_eq!(cert["retry_at"], later.1, "{cert}");
    edge.wait_for_log("all issuance is paused until then, on every node", 1);
}
