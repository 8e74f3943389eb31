//! Metrics an SLO can stand on: every series present from the start (zero, not absent), a
//! redirect latency histogram, process metrics and the build, no soonest-expiry series on an
//! edge without certificates, valid exposition (`promtool check metrics`), and a listener that
//! serves only `/metrics`.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use common::Edge;
use serde_json::json;

/// Series (name and labels, as exposed) that must exist before anything happened.
const FROM_START: &[&str] = &[
    "clickedge_build_info{version=\"",
    "clickedge_redirect_duration_seconds_bucket{le=\"0.0001\"} 0",
    "clickedge_redirect_duration_seconds_count 0",
    "clickedge_requests_total{outcome=\"redirect\"} 0",
    "clickedge_requests_total{outcome=\"unavailable\"} 0",
    "clickedge_requests_total{outcome=\"bad_token\"} 0",
    "clickedge_requests_total{outcome=\"pixel\"} 0",
    "clickedge_requests_total{outcome=\"confirm_page\"} 0",
    "clickedge_requests_total{outcome=\"confirmed\"} 0",
    "clickedge_tls_handshakes_total{outcome=\"ok\"} 0",
    "clickedge_tls_handshakes_total{outcome=\"unrecognized_name\"} 0",
    "clickedge_certificates_issued_total{issuer=\"local\"} 0",
    "clickedge_certificates_failed_total{issuer=\"acme\"} 0",
    "clickedge_certificate_renewals_total{outcome=\"failed\"} 0",
    "clickedge_certificate_renewals_failing 0",
    "clickedge_acme_orders_total{challenge=\"http-01\",event=\"started\"} 0",
    "clickedge_certificate_lookups_total{result=\"hit\"} 0",
    "clickedge_clicks_unlogged_total{reason=\"rate\"} 0",
    "clickedge_click_fields_truncated_total{field=\"ua\"} 0",
    "clickedge_ask_requests_total{result=\"limited\"} 0",
    "clickedge_clicks_dropped_total 0",
    "clickedge_certificates_held 0",
    "process_resident_memory_bytes ",
    "process_cpu_seconds_total ",
    "process_open_fds ",
    "process_max_fds ",
];

const SOONEST: &str = "clickedge_certificates_soonest_expiry_timestamp_seconds";

/// Runs `promtool check metrics` on `text`; fails naming the package when promtool is missing.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool not runnable ({e}): install the Debian package `prometheus`")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_fresh_edge_exports_every_series_at_zero_and_no_expiry_without_certificates() {
    let edge = Edge::start();
    let fresh = edge.metrics().await;
    for series in FROM_START {
        assert!(
            fresh.lines().any(|l| l.starts_with(series)),
            "missing {series:?} in:\n{fresh}"
        );
    }
    assert!(
        fresh.contains(&format!(
            "clickedge_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{fresh}"
    );
    assert!(
        !fresh.lines().any(|l| l.starts_with(SOONEST)),
        "an expiry series on an edge without certificates:\n{fresh}"
    );
    promtool_check(&fresh);

    // A click: its latency is observed, and the certificate it needed brings the expiry series.
    edge.add_domain("links.example.com").await;
    let link = edge
        .mint("links.example.com", "https://example.com/", json!({}))
        .await;
    assert_eq!(edge.click_status("links.example.com", &link).await, 302);
    assert_eq!(
        edge.metric("clickedge_redirect_duration_seconds_count")
            .await,
        1.0
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while edge.metric(SOONEST).await == 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no {SOONEST} with a certificate held:\n{}",
            edge.metrics().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(edge.metric(SOONEST).await > 1.7e9);
    promtool_check(&edge.metrics().await);
}

#[tokio::test]
async fn the_metrics_listener_serves_only_metrics() {
    let edge = Edge::start_with(
        "[listen]\nhttps = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         metrics = \"127.0.0.1:0\"\n",
    );
    let metrics = edge.metrics.expect("metrics= in the ready line");
    let get = |path: &str| {
        let url = format!("http://{metrics}{path}");
        async move {
            let res = reqwest::get(url).await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    let (status, text) = get("/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("clickedge_build_info"), "{text}");
    // Not the API, not the page, not even health; with the admin token neither.
    for path in ["/v1/domains", "/ui/", "/healthz"] {
        assert_eq!(get(path).await.0, 404, "{path}");
    }
    let with_token = reqwest::Client::new()
        .get(format!("http://{metrics}/v1/domains"))
        .bearer_auth(&edge.token)
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), 404);
}

/// Every metric a fresh edge exports is named in README's "Metrics" section and somewhere in
/// ARCHITECTURE.md (its metrics table lists them; without the `clickedge_` prefix), so an
/// operator reading either finds what a scrape shows.
#[tokio::test]
async fn every_exported_metric_is_documented() {
    let edge = Edge::start();
    let text = edge.metrics().await;
    let read = |file: &str| {
        std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
    };
    let readme = read("README.md");
    let readme = readme
        .split_once("\n## Metrics\n")
        .and_then(|(_, s)| s.split_once("\n## "))
        .expect("README has a \"## Metrics\" section")
        .0
        .to_owned();
    let architecture = read("docs/ARCHITECTURE.md");
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP clickedge_"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.len() > 30, "{text}");
    // The name whole: `name`, `name{labels}` or clickedge_name, not a longer name it begins.
    let named = |doc: &str, name: &str| {
        ["`", "clickedge_"].iter().any(|before| {
            doc.match_indices(&format!("{before}{name}"))
                .any(|(at, m)| {
                    doc[at + m.len()..]
                        .chars()
                        .next()
                        .is_some_and(|c| !c.is_ascii_alphanumeric() && c != '_')
                })
        })
    };
    let missing: Vec<_> = names.iter().filter(|n| !named(&readme, n)).collect();
    assert!(missing.is_empty(), "not in README's Metrics: {missing:?}");
    let missing: Vec<_> = names.iter().filter(|n| !named(&architecture, n)).collect();
    assert!(missing.is_empty(), "not in ARCHITECTURE.md: {missing:?}");
}
