//! The request handler: host parsing, and the verdict seam from request to click line.

use std::time::Duration;

use super::request::strip_port;
use super::*;
use crate::clicks::file::{FileSink, FileSinkConfig};
use crate::clicks::verdict::messages;
use crate::clicks::verdict::networks::{Catalogue, SharedCatalogue};
use crate::clicks::verdict::{Class, Revise, Rules, Timing, Verdict};
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

const DOMAIN: &str = "links.example.com";

/// An edge over one registered domain, logging to files under `dir` through a writer whose
/// clock is the returned manual one; and the key ring its links are sealed with.
fn edge_in(dir: &std::path::Path) -> (Edge, ClickWriter, KeyRing, ManualClock) {
    let file = FileSinkConfig {
        dir: dir.join("clicks"),
        ..FileSinkConfig::default()
    };
    let (edge, writer, ring, manual, _) = edge_with(dir, BatchConfig::default(), file);
    (edge, writer, ring, manual)
}

/// [`edge_in`] with the writer and its sink configured, and the edge's metrics.
fn edge_with(
    dir: &std::path::Path,
    batch: BatchConfig,
    file: FileSinkConfig,
) -> (Edge, ClickWriter, KeyRing, ManualClock, Metrics) {
    let metrics = Metrics::unregistered();
    let domain = Domain::parse(DOMAIN).unwrap();
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let policy = Arc::new(Policy::new([domain], None));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let manual = ManualClock::new(from_unix_secs(1_764_000_000));
    let clock = manual.clock();
    let certs = Arc::new(Certs::new(
        crate::certs::Settings {
            cache_capacity: 10,
            on_demand_timeout: Duration::from_secs(5),
        },
        store.clone(),
        Arc::new(LocalCa::load_or_create(dir, Zones::reserved(), clock.clone()).unwrap()),
        policy.clone(),
        provider.clone(),
        metrics.clone(),
        clock.clone(),
    ));
    let sink = FileSink::open(file, metrics.clone(), clock.clone()).unwrap();
    let (writer, clicks) = ClickWriter::start(sink, batch, metrics.clone(), clock.clone()).unwrap();
    let ring = KeyRing::new(vec![LinkKey::new(KeyId(1), [7; 32], from_unix_secs(0))]).unwrap();
    let edge = Edge::new(
        Arc::new(SharedKeyRing::new(ring.clone())),
        clicks,
        certs,
        policy.clone(),
        Arc::new(Challenges::new(store, policy, provider, clock)),
        4096,
        &metrics,
    );
    (edge, writer, ring, manual, metrics)
}

fn conn(peer: &str) -> ConnInfo {
    ConnInfo {
        peer: peer.parse().unwrap(),
        sni: Some(Domain::parse(DOMAIN).unwrap()),
        tls: Some("1.3"),
        tls_fp: None,
    }
}

fn get(path: &str, ua: &str) -> Request<String> {
    Request::get(path)
        .header(header::HOST, DOMAIN)
        .header(header::USER_AGENT, ua)
        .body(String::new())
        .unwrap()
}

/// Closes `writer` and reads every line it wrote under `dir`.
async fn lines(dir: &std::path::Path, writer: ClickWriter) -> Vec<serde_json::Value> {
    tokio::task::spawn_blocking(move || writer.close())
        .await
        .unwrap();
    let log = std::fs::read_dir(dir.join("clicks"))
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
    log.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn the_verdict_stage_judges_each_click_and_its_verdict_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (edge, writer, ring, _) = edge_in(dir.path());
    let edge = edge.with_verdict(UaJudge);
    let link = Link::new("https://example.com/", vec![], 1_764_000_000).unwrap();
    let path = format!("/c/{}", links::seal(&ring, DOMAIN, &link));
    for ua in ["scanner/1", "Firefox/140.0"] {
        let res = edge
            .handle(&conn("203.0.113.7:50000"), get(&path, ua))
            .await;
        assert_eq!(res.status(), StatusCode::FOUND);
    }
    let lines = lines(dir.path(), writer).await;
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

#[tokio::test]
async fn visitors_are_one_per_network_and_browser_a_day_and_addresses_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (edge, writer, ring, manual) = edge_in(dir.path());
    let visitors = Arc::new(crate::clicks::privacy::Visitors::default());
    let edge = edge.with_privacy(Privacy::new(
        crate::config::IpField::Truncated,
        Some(visitors),
    ));
    let link = Link::new("https://example.com/", vec![], 1_764_000_000).unwrap();
    let path = format!("/c/{}", links::seal(&ring, DOMAIN, &link));
    let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    let day = [
        ("203.0.113.7:50000", firefox),
        ("203.0.113.99:50000", firefox),
        ("[2001:db8:1:2::7]:50000", firefox),
        ("[2001:db8:1:ffff::9]:50000", firefox),
        ("203.0.113.7:50000", "Mozilla/5.0 (iPhone) Safari/604.1"),
    ];
    for (peer, ua) in day {
        edge.handle(&conn(peer), get(&path, ua)).await;
    }
    manual.advance(Duration::from_secs(86_400));
    edge.handle(&conn("203.0.113.7:50000"), get(&path, firefox))
        .await;
    let lines = lines(dir.path(), writer).await;
    let ips: Vec<&str> = lines.iter().map(|l| l["ip"].as_str().unwrap()).collect();
    assert_eq!(
        ips,
        [
            "203.0.113.0",
            "203.0.113.0",
            "2001:db8:1::",
            "2001:db8:1::",
            "203.0.113.0",
            "203.0.113.0"
        ]
    );
    let v: Vec<&str> = lines
        .iter()
        .map(|l| l["visitor"].as_str().unwrap())
        .collect();
    assert_eq!(v[0], v[1], "one /24, one browser, one day");
    assert_eq!(v[2], v[3], "one /48");
    assert_ne!(v[0], v[2]);
    assert_ne!(v[0], v[4], "another browser");
    assert_ne!(v[0], v[5], "the next day");
}

#[test]
fn host_parsing() {
    assert_eq!(strip_port("a.example.com:8443"), "a.example.com");
    assert_eq!(strip_port("a.example.com"), "a.example.com");
    assert!(same_name("A.Example.com.", "a.example.com"));
    assert!(!same_name("b.example.com", "a.example.com"));
}

/// An open whose line is dropped (here the writer has stopped) does not leave its message seen
/// opened: the next person's click on it then says `implied_open`, so the open is not lost. One
/// that is queued does.
#[tokio::test]
async fn a_dropped_open_leaves_its_message_unseen() {
    for writer_stopped in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (edge, writer, ring, _) = edge_in(dir.path());
        let writer = if writer_stopped {
            tokio::task::spawn_blocking(move || writer.close())
                .await
                .unwrap();
            None
        } else {
            Some(writer)
        };
        let context = links::MessageContext {
            message: "m-1".into(),
            ..Default::default()
        };
        let token = links::seal_pixel_with(&ring.keys()[0], DOMAIN, context, vec![], 1_764_000_000);
        let res = edge
            .handle(
                &conn("203.0.113.7:50000"),
                get(&format!("/o/{token}"), "Mozilla/5.0 Firefox/140.0"),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            edge.clicks.seen().click_implies_open(DOMAIN, "m-1"),
            writer_stopped,
            "writer stopped: {writer_stopped}"
        );
        if let Some(writer) = writer {
            assert_eq!(lines(dir.path(), writer).await.len(), 1);
        }
    }
}

/// The rule set as `serve` builds it, revising through `revise`.
fn rules(metrics: &Metrics, revise: Box<dyn Revise>) -> Rules {
    let catalogue = SharedCatalogue::new(Catalogue::defaults());
    let table = messages::Config {
        ttl: Duration::from_secs(600),
        max_bytes: 1 << 20,
        idle_expiry: true,
    };
    Rules::new(
        Arc::new(catalogue),
        table,
        Timing::default(),
        metrics,
        revise,
    )
}

/// The path of link `index` of a three-link message `message`, minted long before the clicks.
fn message_link(ring: &KeyRing, message: &str, index: u32) -> String {
    let mut link = Link::new(&format!("https://example.com/{index}"), vec![], 0).unwrap();
    link.context = Some(links::MessageContext {
        message: message.into(),
        index: Some(index),
        count: Some(3),
        ..Default::default()
    });
    format!("/c/{}", links::seal(ring, DOMAIN, &link))
}

/// Clicks by verdict, all verdicts together.
fn judged(metrics: &Metrics) -> u64 {
    ["human", "machine", "unknown"]
        .map(|v| metrics.clicks_by_verdict.with_label_values(&[v]).get())
        .iter()
        .sum()
}

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

/// A synced click refused with a 503 because its batch could not be written is not in the log,
/// so it leaves nothing a later judgement could revise (its revision line would name a
/// `click_id` the log does not hold), and only the client's retry that was logged is counted by
/// verdict: `clickedge_clicks_by_verdict_total` counts the click lines in the log.
#[tokio::test]
async fn a_refused_synced_click_is_neither_revised_nor_counted_by_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let clicks = dir.path().join("clicks");
    let batch = BatchConfig {
        durability: crate::config::Durability::Synced,
        flush_interval: Duration::from_millis(1),
        ..BatchConfig::default()
    };
    // Every write after the first opens a new file, so it fails while the directory is gone.
    let file = FileSinkConfig {
        dir: clicks.clone(),
        max_file_bytes: 1,
        ..FileSinkConfig::default()
    };
    let (edge, writer, ring, _, metrics) = edge_with(dir.path(), batch, file);
    let revise = Box::new(edge.clicks.clone());
    let edge = edge.with_verdict(rules(&metrics, revise));
    let peer = conn("203.0.113.7:50000");
    let click = |path: String| edge.handle(&peer, get(&path, FIREFOX));
    let first = click(message_link(&ring, "m-0", 0)).await;
    assert_eq!(first.status(), StatusCode::FOUND);
    // The directory lost the way a lost mount loses it (a file in its place, for root too).
    let away = dir.path().join("clicks.away");
    std::fs::rename(&clicks, &away).unwrap();
    std::fs::write(&clicks, b"").unwrap();
    let refused = click(message_link(&ring, "m-1", 0)).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    std::fs::remove_file(&clicks).unwrap();
    std::fs::rename(&away, &clicks).unwrap();
    // The client retries until the log takes the click (refused while the writer backs off).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while click(message_link(&ring, "m-1", 0)).await.status() != StatusCode::FOUND {
        assert!(
            std::time::Instant::now() < deadline,
            "the retry never logged"
        );
    }
    // The same client's next link of the message at once: a burst, which revises its earlier
    // clicks on the message.
    let burst = click(message_link(&ring, "m-1", 1)).await;
    assert_eq!(burst.status(), StatusCode::FOUND);
    let lines = lines(dir.path(), writer).await;
    let id = |l: &serde_json::Value| l["click_id"].as_str().unwrap().to_owned();
    let logged: Vec<String> = lines
        .iter()
        .filter(|l| l["kind"] == "click")
        .map(id)
        .collect();
    let revised: Vec<String> = lines
        .iter()
        .filter(|l| l["kind"] == "verdict")
        .map(id)
        .collect();
    assert_eq!(logged.len(), 3, "{lines:?}");
    assert!(
        revised.iter().all(|r| logged.contains(r)),
        "a revision names a click the log does not hold: {revised:?}, logged {logged:?}"
    );
    assert_eq!(revised.len(), 1, "the retry, revised once: {revised:?}");
    assert_eq!(judged(&metrics), 3, "the click lines in the log");
}

/// The same for a buffered click the queue drops (here the writer has stopped): no revision
/// names it, and it is not counted by verdict.
#[tokio::test]
async fn a_dropped_click_is_neither_revised_nor_counted_by_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let file = FileSinkConfig {
        dir: dir.path().join("clicks"),
        ..FileSinkConfig::default()
    };
    let (edge, writer, ring, _, metrics) = edge_with(dir.path(), BatchConfig::default(), file);
    let revisions = Revisions::default();
    let edge = edge.with_verdict(rules(&metrics, Box::new(revisions.clone())));
    tokio::task::spawn_blocking(move || writer.close())
        .await
        .unwrap();
    let peer = conn("203.0.113.7:50000");
    for index in [0, 1] {
        let res = edge
            .handle(&peer, get(&message_link(&ring, "m-1", index), FIREFOX))
            .await;
        assert_eq!(res.status(), StatusCode::FOUND);
    }
    assert_eq!(metrics.clicks_dropped.get(), 2);
    assert_eq!(
        *revisions.0.lock().unwrap(),
        Vec::<u64>::new(),
        "the dropped click revised"
    );
    assert_eq!(judged(&metrics), 0);
}

/// The handles of the revisions the rules send.
#[derive(Clone, Default)]
struct Revisions(Arc<std::sync::Mutex<Vec<u64>>>);

impl Revise for Revisions {
    fn revise(&self, revision: crate::clicks::verdict::Revision) {
        self.0.lock().unwrap().push(revision.handle);
    }
}

#[tokio::test]
async fn an_http_1_1_request_without_host_is_a_400_and_logs_no_click() {
    let dir = tempfile::tempdir().unwrap();
    let (edge, writer, ring, _) = edge_in(dir.path());
    let link = Link::new("https://example.com/", vec![], 1_764_000_000).unwrap();
    let path = format!("/c/{}", links::seal(&ring, DOMAIN, &link));
    let mut no_host = get(&path, "Firefox/140.0");
    no_host.headers_mut().remove(header::HOST);
    let res = edge.handle(&conn("203.0.113.7:50000"), no_host).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // The target in absolute form names the host, and still needs the header.
    let mut absolute = get(&format!("https://{DOMAIN}{path}"), "Firefox/140.0");
    absolute.headers_mut().remove(header::HOST);
    let res = edge.handle(&conn("203.0.113.7:50000"), absolute).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // HTTP/1.0 had no Host to require: served under the connection's name.
    let mut old = get(&path, "Firefox/140.0");
    old.headers_mut().remove(header::HOST);
    *old.version_mut() = http::Version::HTTP_10;
    let res = edge.handle(&conn("203.0.113.7:50000"), old).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    let lines = lines(dir.path(), writer).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["http"], "1.0");
}

#[tokio::test]
async fn validation_routes_take_get_and_head_only() {
    let dir = tempfile::tempdir().unwrap();
    let (edge, _writer, _, _) = edge_in(dir.path());
    let plain = ConnInfo {
        sni: None,
        tls: None,
        ..conn("203.0.113.7:50000")
    };
    for path in [
        "/.well-known/acme-challenge/abc",
        "/.well-known/clickedge-check/abc",
    ] {
        let req = Request::put(path)
            .header(header::HOST, DOMAIN)
            .body(String::new())
            .unwrap();
        let res = edge.handle(&plain, req).await;
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(res.headers()[header::ALLOW], "GET, HEAD", "{path}");
        // A GET is answered (nothing is published here: 404).
        let res = edge.handle(&plain, get(path, "curl/8")).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
}
