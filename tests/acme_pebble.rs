//! On-demand certificates from a real ACME CA (Pebble): HTTP-01 and TLS-ALPN-01 issuance with the
//! chain verified against Pebble's root, one order for many concurrent first handshakes, none for
//! random names, none after a restart, renewal of short-lived certificates while clicks go on,
//! and a refused name that backs off with a clear error.

mod common;

use std::time::{Duration, Instant};

use common::Edge;
use common::pebble::{Pebble, PebbleOptions, PebblePorts, orders};
use reqwest::Method;
use serde_json::json;

const DOMAIN: &str = "links.example.com";

/// Starts an edge with `tls.issuer = "acme"` against a fresh Pebble.
async fn edge_with_pebble(challenges: &[&str], options: PebbleOptions) -> (Edge, Pebble) {
    let ports = PebblePorts::reserve();
    let config = format!(
        "[tls]\nissuer = \"acme\"\non_demand_timeout = \"60s\"\n{}",
        ports.acme_toml(challenges)
    );
    let edge = Edge::start_with(&config);
    let pebble = ports
        .start(edge.http.port(), edge.https.port(), &options)
        .await;
    (edge, pebble)
}

/// An edge against a Pebble that refuses `blocked` (`rejectedIdentifier` at new-order), with
/// `blocked` registered.
async fn edge_refusing(blocked: &str) -> (Edge, Pebble) {
    let (edge, pebble) = edge_with_pebble(
        &["http-01"],
        PebbleOptions {
            blocklist: vec![blocked.into()],
            ..Default::default()
        },
    )
    .await;
    edge.add_domain(blocked).await;
    (edge, pebble)
}

async fn click(edge: &Edge, roots: &str, link: &str) -> reqwest::Result<reqwest::Response> {
    edge.client_trusting(roots, &[DOMAIN])
        .build()
        .unwrap()
        .get(link)
        .send()
        .await
}

async fn issue_and_click(challenge: &str, options: PebbleOptions) {
    let (edge, pebble) = edge_with_pebble(&[challenge], options).await;
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    let roots = pebble.issuing_roots().await;
    let res = click(&edge, &roots, &link)
        .await
        .unwrap_or_else(|e| panic!("click failed: {e:?}\n{}\n{}", edge.stderr(), pebble.log()));
    assert_eq!(res.status(), 302);
    let (_, d) = edge
        .admin(Method::GET, &format!("/v1/domains/{DOMAIN}"), None)
        .await;
    assert_eq!(d["certificate"]["status"], "valid", "{d}");
    assert_eq!(d["certificate"]["issuer"], "acme");
    assert!(d["certificate"]["next_renewal"].is_string(), "{d}");
    assert_eq!(
        edge.metric(&format!(
            "clickedge_acme_orders_total{{challenge=\"{challenge}\",event=\"succeeded\"}}"
        ))
        .await,
        1.0
    );
    assert_eq!(orders(&edge, "started").await, 1.0);
    assert_eq!(
        edge.metric("clickedge_acme_order_budget_taken_total").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_issuance_verifies_against_pebble_root_despite_bad_nonces() {
    // Pebble's default: 5% of nonces rejected with badNonce.
    issue_and_click(
        "http-01",
        PebbleOptions {
            bad_nonces: true,
            ..Default::default()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_issuance_verifies_against_pebble_root() {
    issue_and_click("tls-alpn-01", PebbleOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_account_binding_is_sent_when_the_ca_requires_it() {
    let kid = "kid-1";
    let key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let ports = PebblePorts::reserve();
    let config = format!(
        "[tls]\nissuer = \"acme\"\non_demand_timeout = \"60s\"\n{}eab_kid = \"{kid}\"\neab_hmac_key = \"{key}\"\n",
        ports.acme_toml(&["http-01"])
    );
    let edge = Edge::start_with(&config);
    let options = PebbleOptions {
        eab: Some((kid.into(), key.into())),
        ..Default::default()
    };
    let pebble = ports
        .start(edge.http.port(), edge.https.port(), &options)
        .await;
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    let roots = pebble.issuing_roots().await;
    let res = click(&edge, &roots, &link)
        .await
        .unwrap_or_else(|e| panic!("click failed: {e:?}\n{}", edge.stderr()));
    assert_eq!(res.status(), 302);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_first_handshakes_make_one_order() {
    let (edge, pebble) = edge_with_pebble(&["http-01"], PebbleOptions::default()).await;
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    let roots = pebble.issuing_roots().await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let client = edge.client_trusting(&roots, &[DOMAIN]).build().unwrap();
        let link = link.clone();
        tasks.spawn(async move { client.get(&link).send().await.map(|r| r.status().as_u16()) });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap().expect("click"), 302);
    }
    assert_eq!(orders(&edge, "started").await, 1.0);
    assert_eq!(edge.metric("clickedge_certificates_held").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sni_makes_no_order_and_restart_makes_none_either() {
    let (edge, pebble) = edge_with_pebble(&["http-01"], PebbleOptions::default()).await;
    edge.add_domain(DOMAIN).await;
    let roots = pebble.issuing_roots().await;
    for i in 0..40 {
        let name = format!("random-{i}-{}.example.org", rand::random::<u32>());
        let client = edge.client_trusting(&roots, &[&name]).build().unwrap();
        let url = format!("https://{name}:{}/c/x", edge.https.port());
        assert!(
            client.get(url).send().await.is_err(),
            "{name} must be refused"
        );
    }
    assert_eq!(orders(&edge, "started").await, 0.0);
    assert_eq!(
        edge.metric("clickedge_tls_handshakes_total{outcome=\"unrecognized_name\"}")
            .await,
        40.0
    );

    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    assert_eq!(click(&edge, &roots, &link).await.unwrap().status(), 302);
    assert_eq!(orders(&edge, "started").await, 1.0);
    let first_run_log = edge.stderr();
    assert_eq!(first_run_log.matches("ACME account created").count(), 1);

    // Restart on the same data dir and ports: the stored certificate serves without an order,
    // and the stored account (not a new one) orders for the next domain.
    let edge = restarted(edge);
    assert_eq!(click(&edge, &roots, &link).await.unwrap().status(), 302);
    assert_eq!(orders(&edge, "started").await, 0.0);

    let second = "second.example.com";
    edge.add_domain(second).await;
    let link = edge.mint(second, "https://example.com/", json!({})).await;
    let client = edge.client_trusting(&roots, &[second]).build().unwrap();
    assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    assert_eq!(orders(&edge, "succeeded").await, 1.0);
    assert!(
        !edge.stderr().contains("ACME account created"),
        "{}",
        edge.stderr()
    );
    drop(pebble);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_name_records_the_problem_and_backs_off() {
    let blocked = "blocked.example.com";
    let (edge, pebble) = edge_refusing(blocked).await;
    let link = edge.mint(blocked, "https://example.com/", json!({})).await;
    let roots = pebble.issuing_roots().await;
    for _ in 0..3 {
        let client = edge.client_trusting(&roots, &[blocked]).build().unwrap();
        assert!(
            client.get(&link).send().await.is_err(),
            "no certificate, no click"
        );
    }
    let (_, d) = edge
        .admin(Method::GET, &format!("/v1/domains/{blocked}"), None)
        .await;
    let cert = &d["certificate"];
    assert_eq!(cert["status"], "failed", "{d}");
    let err = cert["last_error"].as_str().unwrap();
    assert!(
        err.contains("urn:ietf:params:acme:error:rejectedIdentifier"),
        "{err}"
    );
    assert!(err.contains(blocked), "{err}");
    assert_eq!(cert["failures"], 1);
    assert!(cert["retry_at"].is_string(), "{d}");
    // Three handshakes, one order attempt (refused at new-order): the others hit the backoff.
    assert_eq!(orders(&edge, "failed").await, 1.0);
    // Never started, yet taken from the account's order budget all the same.
    assert_eq!(orders(&edge, "started").await, 0.0);
    assert_eq!(
        edge.metric("clickedge_acme_order_budget_taken_total").await,
        1.0
    );
    assert_eq!(
        edge.metric("clickedge_tls_handshakes_total{outcome=\"no_certificate\"}")
            .await,
        3.0
    );

    // A restart keeps the backoff (read back from the store): still no order.
    let edge = restarted(edge);
    let client = edge.client_trusting(&roots, &[blocked]).build().unwrap();
    assert!(client.get(&link).send().await.is_err());
    assert_eq!(orders(&edge, "failed").await, 0.0);
    assert_eq!(
        edge.metric("clickedge_tls_handshakes_total{outcome=\"no_certificate\"}")
            .await,
        1.0
    );

    // Adding the domain again clears the backoff: the next handshake orders again.
    edge.add_domain(blocked).await;
    let client = edge.client_trusting(&roots, &[blocked]).build().unwrap();
    assert!(client.get(&link).send().await.is_err());
    assert_eq!(orders(&edge, "failed").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_the_ca_made_invalid_is_not_kept_in_flight() {
    let (edge, pebble) = edge_with_pebble(&["http-01"], PebbleOptions::default()).await;
    edge.add_domain(DOMAIN).await;
    // Nothing answers there: the HTTP-01 validation fails and the order turns invalid.
    pebble.point(DOMAIN, "127.0.0.9").await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    let roots = pebble.issuing_roots().await;
    assert!(click(&edge, &roots, &link).await.is_err(), "no certificate");
    let (_, d) = edge
        .admin(Method::GET, &format!("/v1/domains/{DOMAIN}"), None)
        .await;
    assert_eq!(d["certificate"]["status"], "failed", "{d}");
    assert_eq!(orders(&edge, "started").await, 1.0, "{}", pebble.log());
    // Dead at the CA: not shown in flight, and the next order is a new one, not a read of it.
    let (_, cluster) = edge.admin(Method::GET, "/v1/cluster", None).await;
    assert_eq!(cluster["orders_in_flight"], 0, "{cluster}");
    let kept = cluster["leases"].as_array().unwrap();
    assert!(kept.iter().all(|l| l["order_url"].is_null()), "{cluster}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_order_that_cannot_be_read_is_forgotten_though_no_new_order_is_placed() {
    let blocked = "blocked.example.com";
    let (edge, pebble) = edge_refusing(blocked).await;
    // An order another node placed and kept with the name's lease (expired since), which the CA
    // no longer knows (Pebble answers an empty 404).
    let config = std::fs::read_to_string(edge.config_path()).unwrap();
    let directory = config
        .lines()
        .find_map(|l| l.strip_prefix("directory = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap();
    let gone = directory.replace("/dir", "/my-order/gone");
    rusqlite::Connection::open(edge.data_dir().join("clickedge.db"))
        .unwrap()
        .execute(
            "INSERT INTO leases (name, holder, fence, expires_at, order_url) \
             VALUES (?1, 'another node', 1, 0, ?2)",
            rusqlite::params![blocked, gone],
        )
        .unwrap();
    let (_, cluster) = edge.admin(Method::GET, "/v1/cluster", None).await;
    assert_eq!(cluster["orders_in_flight"], 1, "{cluster}");

    // The next try reads it, finds it gone, and places a new order, which the CA refuses.
    let link = edge.mint(blocked, "https://example.com/", json!({})).await;
    let roots = pebble.issuing_roots().await;
    let client = edge.client_trusting(&roots, &[blocked]).build().unwrap();
    assert!(client.get(&link).send().await.is_err(), "no certificate");
    let (_, d) = edge
        .admin(Method::GET, &format!("/v1/domains/{blocked}"), None)
        .await;
    let err = d["certificate"]["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("rejectedIdentifier"), "{d}");
    let (_, cluster) = edge.admin(Method::GET, "/v1/cluster", None).await;
    assert_eq!(cluster["orders_in_flight"], 0, "{cluster}");
}

/// `edge` stopped and started again on its data dir, its `[tls]` settings and its ports.
fn restarted(edge: Edge) -> Edge {
    let config = std::fs::read_to_string(edge.config_path()).unwrap();
    let tables = config[config.find("[tls]").unwrap()..]
        .split("[listen]")
        .next()
        .unwrap()
        .to_owned();
    let (https, http) = (edge.https.port(), edge.http.port());
    let dir = edge.stop_keep_dir();
    Edge::start_in_at(dir, &tables, https, http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_certificate_renews_while_clicks_continue() {
    let (edge, pebble) = edge_with_pebble(
        &["http-01"],
        PebbleOptions {
            validity_secs: Some(90),
            ..Default::default()
        },
    )
    .await;
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    let roots = pebble.issuing_roots().await;
    assert_eq!(click(&edge, &roots, &link).await.unwrap().status(), 302);
    let (_, d) = edge
        .admin(Method::GET, &format!("/v1/domains/{DOMAIN}"), None)
        .await;
    let first_not_after = d["certificate"]["not_after"].as_str().unwrap().to_owned();
    assert_eq!(edge.metric("clickedge_certificates_expiring").await, 1.0);

    // New-connection clicks, bounded in count and time, until the renewed certificate serves.
    let deadline = Instant::now() + Duration::from_secs(150);
    let (mut ok, mut failed) = (0u32, 0u32);
    loop {
        match click(&edge, &roots, &link).await {
            Ok(r) if r.status() == 302 => ok += 1,
            other => {
                failed += 1;
                eprintln!("failed click: {other:?}");
            }
        }
        let (_, d) = edge
            .admin(Method::GET, &format!("/v1/domains/{DOMAIN}"), None)
            .await;
        if d["certificate"]["not_after"].as_str() != Some(first_not_after.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no renewal within 150 s:\n{}",
            edge.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A few more clicks on the renewed certificate.
    for _ in 0..5 {
        match click(&edge, &roots, &link).await {
            Ok(r) if r.status() == 302 => ok += 1,
            _ => failed += 1,
        }
    }
    assert_eq!(failed, 0, "{ok} clicks ok");
    assert_eq!(
        edge.metric("clickedge_certificate_renewals_total{outcome=\"ok\"}")
            .await,
        1.0
    );
    assert_eq!(orders(&edge, "started").await, 2.0);
}

/// Not a pass/fail timing: prints the time from registering a domain to its first successful
/// click, for BENCHMARKS.md and the issue note (run with `--nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_time_from_add_to_first_click() {
    let (edge, pebble) = edge_with_pebble(&["http-01"], PebbleOptions::default()).await;
    let roots = pebble.issuing_roots().await;
    let mut times = Vec::new();
    for i in 0..5 {
        let name = format!("links{i}.example.com");
        let started = Instant::now();
        edge.add_domain(&name).await;
        let link = edge.mint(&name, "https://example.com/", json!({})).await;
        let res = edge
            .client_trusting(&roots, &[&name])
            .build()
            .unwrap()
            .get(&link)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 302);
        times.push(started.elapsed());
    }
    times.sort();
    eprintln!(
        "add domain -> first successful click (Pebble, PEBBLE_VA_NOSLEEP=1): median {:?}, min {:?}, max {:?}",
        times[2], times[0], times[4]
    );
}
