//! The request handler: host parsing, and the verdict seam from request to click line.

use std::time::Duration;

use super::request::strip_port;
use super::*;
use crate::clicks::file::{FileSink, FileSinkConfig};
use crate::clicks::verdict::{Class, Verdict};
use crate::clicks::{BatchConfig, ClickWriter};
use crate::clock::{ManualClock, from_unix_secs};
use crate::domain::Zones;
use crate::issuer::LocalCa;
use crate::links::{KeyId, KeyRing, Link, LinkKey};
use crate::store::SqliteStore;

/// Judges a click by its `User-Agent` header alone.
struct UaJudge;

impl VerdictStage for UaJudge {
    fn judge(&self, facts: &Facts<'_>) -> Option<Verdict> {
        let ua = facts.headers.get(header::USER_AGENT)?;
        (ua == "scanner/1").then(|| Verdict {
            class: Class::Machine,
            reasons: vec!["ua-scanner"],
            rules: "test-1",
            handle: None,
            sec_fetch: None,
        })
    }
}

#[tokio::test]
async fn the_verdict_stage_judges_each_click_and_its_verdict_is_logged() {
    const DOMAIN: &str = "links.example.com";
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::unregistered();
    let domain = Domain::parse(DOMAIN).unwrap();
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let policy = Arc::new(Policy::new([domain.clone()], None));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let clock = ManualClock::new(from_unix_secs(1_764_000_000)).clock();
    let certs = Arc::new(Certs::new(
        crate::certs::Settings {
            cache_capacity: 10,
            on_demand_timeout: Duration::from_secs(5),
        },
        store.clone(),
        Arc::new(LocalCa::load_or_create(dir.path(), Zones::reserved(), clock.clone()).unwrap()),
        policy.clone(),
        provider.clone(),
        metrics.clone(),
        clock.clone(),
    ));
    let sink = FileSink::open(
        FileSinkConfig {
            dir: dir.path().join("clicks"),
            ..FileSinkConfig::default()
        },
        metrics.clone(),
        clock.clone(),
    )
    .unwrap();
    let (writer, clicks) =
        ClickWriter::start(sink, BatchConfig::default(), metrics.clone(), clock.clone()).unwrap();
    let ring = KeyRing::new(vec![LinkKey::new(KeyId(1), [7; 32], from_unix_secs(0))]).unwrap();
    let link = Link::new("https://example.com/", vec![], 1_764_000_000).unwrap();
    let path = format!("/c/{}", links::seal(&ring, DOMAIN, &link));
    let edge = Edge::new(
        Arc::new(SharedKeyRing::new(ring)),
        clicks,
        certs,
        policy.clone(),
        Arc::new(Challenges::new(store, policy, provider, clock.clone())),
        4096,
        &metrics,
    )
    .with_verdict(UaJudge);
    let conn = ConnInfo {
        peer: "203.0.113.7:50000".parse().unwrap(),
        sni: Some(domain),
        tls: Some("1.3"),
        tls_fp: None,
    };
    for ua in ["scanner/1", "Firefox/140.0"] {
        let req = Request::get(&path)
            .header(header::HOST, DOMAIN)
            .header(header::USER_AGENT, ua)
            .body(String::new())
            .unwrap();
        assert_eq!(edge.handle(&conn, req).await.status(), StatusCode::FOUND);
    }
    tokio::task::spawn_blocking(move || writer.close())
        .await
        .unwrap();
    let log = std::fs::read_dir(dir.path().join("clicks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("clicks-")
        })
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<String>();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0]["ts"], "2025-11-24T16:00:00.000Z",
        "the queue's clock"
    );
    assert_eq!(lines[0]["verdict"], "machine");
    assert_eq!(lines[0]["reasons"], serde_json::json!(["ua-scanner"]));
    assert_eq!(lines[0]["rules"], "test-1");
    // Unjudged: no verdict fields at all.
    let unjudged = lines[1].as_object().unwrap();
    assert!(!unjudged.contains_key("verdict") && !unjudged.contains_key("reasons"));
}

#[test]
fn host_parsing() {
    assert_eq!(strip_port("a.example.com:8443"), "a.example.com");
    assert_eq!(strip_port("a.example.com"), "a.example.com");
    assert!(same_name("A.Example.com.", "a.example.com"));
    assert!(!same_name("b.example.com", "a.example.com"));
}
