//! The click log's promises, end to end: in synced mode a SIGKILL under load loses no
//! acknowledged click; a failing sink keeps buffered clicks in memory and writes them once it
//! recovers, while synced mode answers 503; a second signal stops a draining edge at once.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Edge;
use serde_json::json;
use tokio::io::AsyncWriteExt as _;

const DOMAIN: &str = "links.example.com";

/// Click lines, skipping a torn last line (a crash may leave one; recovery handles it at start).
fn lenient_clicks(dir: &Path) -> Vec<serde_json::Value> {
    common::read_click_files(dir)
        .iter()
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_in_synced_mode_loses_no_acknowledged_click() {
    // One client clicking flat out: no per-address bound, every click must be logged.
    let config = "[clicks]\ndurability = \"synced\"\nmax_clicks_per_ip_per_sec = 0\n";
    let mut edge = Edge::start_with(config);
    edge.add_domain(DOMAIN).await;
    // One link per click, so each acknowledged click can be found in the log.
    let mut links = Vec::new();
    for i in 0..400 {
        links.push(
            edge.mint(
                DOMAIN,
                "https://example.com/",
                json!({ "n": i.to_string() }),
            )
            .await,
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in links.chunks(50) {
        let client = edge.client(&[DOMAIN]);
        let chunk: Vec<(usize, String)> = chunk
            .iter()
            .map(|l| (links.iter().position(|x| x == l).unwrap(), l.clone()))
            .collect();
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for (n, link) in chunk {
                match client.get(&link).send().await {
                    Ok(r) if r.status() == 302 => acked.push(n),
                    _ => break,
                }
            }
            acked
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while edge
        .metric("clickedge_requests_total{outcome=\"redirect\"}")
        .await
        < 100.0
    {
        assert!(Instant::now() < deadline, "load did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    edge.signal("KILL");
    let status = edge.wait();
    assert!(!status.success());
    let mut acknowledged = HashSet::new();
    while let Some(acked) = tasks.join_next().await {
        acknowledged.extend(acked.unwrap());
    }
    assert!(acknowledged.len() >= 100);
    let logged: HashSet<usize> = lenient_clicks(&edge.data_dir().join("clicks"))
        .iter()
        .map(|c| c["meta"]["n"].as_str().unwrap().parse().unwrap())
        .collect();
    let lost: Vec<_> = acknowledged.difference(&logged).collect();
    assert!(lost.is_empty(), "acknowledged but not logged: {lost:?}");

    // The edge starts again on the same log and serves.
    let dir = edge.take_dir();
    let edge = Edge::start_in(dir, config);
    let path = &links[0][links[0].find("/c/").unwrap()..];
    let link = edge.on_port(&format!("https://{DOMAIN}{path}"));
    let res = edge.client(&[DOMAIN]).get(&link).send().await.unwrap();
    assert_eq!(res.status(), 302);
}

/// Makes the click directory unusable: moves it aside and puts a plain file in its place.
fn break_dir(dir: &Path) {
    std::fs::rename(dir, dir.with_extension("aside")).unwrap();
    std::fs::write(dir, b"not a directory").unwrap();
}

fn repair_dir(dir: &Path) {
    std::fs::remove_file(dir).unwrap();
    std::fs::rename(dir.with_extension("aside"), dir).unwrap();
}

/// An edge that logged one click, then `clicks` more after its click directory broke, once it
/// reports its sink failing; and that directory. Every flush needs a new file, so a broken
/// directory fails every write.
async fn clicks_held_by_a_failing_sink(clicks: usize) -> (Edge, std::path::PathBuf) {
    let edge = Edge::start_with(
        "[clicks]\nmax_file_bytes = 1\nflush_interval = \"20ms\"\nmax_clicks_per_ip_per_sec = 0\n",
    );
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    let client = edge.client(&[DOMAIN]);
    assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    edge.wait_for_clicks(1);
    let dir = edge.data_dir().join("clicks");
    break_dir(&dir);
    for _ in 0..clicks {
        assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while edge.metric("clickedge_click_sink_healthy").await != 0.0 {
        assert!(Instant::now() < deadline, "sink failure not reported");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (edge, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_clicks_survive_a_failing_sink_and_are_written_after() {
    // Twenty clicks at once from one client: no per-address bound, every click must be logged.
    let (edge, dir) = clicks_held_by_a_failing_sink(20).await;
    assert!(edge.metric("clickedge_click_sink_errors_total").await >= 1.0);
    repair_dir(&dir);
    let clicks = edge.wait_for_clicks(21);
    assert_eq!(clicks.len(), 21);
    assert_eq!(edge.metric("clickedge_click_sink_healthy").await, 1.0);
    assert_eq!(edge.metric("clickedge_clicks_dropped_total").await, 0.0);
}

/// Clicks the last write at a stop cannot keep are lost with nothing left running to count
/// them: the exit status says so, for the service manager.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_lost_at_a_stop_make_the_exit_status_a_failure() {
    let (mut edge, _) = clicks_held_by_a_failing_sink(3).await;
    let status = edge.terminate();
    assert_eq!(status.code(), Some(1), "{}", edge.stderr());
    assert!(
        edge.stderr()
            .contains("3 clicks could not be written while stopping"),
        "{}",
        edge.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synced_mode_answers_503_rather_than_acknowledge_an_unkept_click() {
    let edge = Edge::start_with("[clicks]\ndurability = \"synced\"\nmax_file_bytes = 1\n");
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    let client = edge.client(&[DOMAIN]);
    assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    let dir = edge.data_dir().join("clicks");
    break_dir(&dir);
    for _ in 0..5 {
        let res = client.get(&link).send().await.unwrap();
        assert_eq!(res.status(), 503);
        assert!(res.headers().get("location").is_none());
    }
    repair_dir(&dir);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = client.get(&link).send().await.unwrap().status();
        if status == 302 {
            break;
        }
        assert!(Instant::now() < deadline, "sink did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Exactly the acknowledged clicks are logged: the first and the last.
    assert_eq!(edge.clicks().len(), 2);
    assert!(edge.metric("clickedge_clicks_rejected_total").await >= 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_exits_at_once() {
    let mut edge = Edge::start_with("shutdown_grace = \"60s\"\n");
    edge.add_domain(DOMAIN).await;
    // An open connection with a request in flight keeps the drain waiting.
    let mut tcp = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    tcp.write_all(b"GET /c/x HTTP/1.1\r\nHost: links.example.com\r\n")
        .await
        .unwrap();
    // Signal only once the edge holds the connection: one still in the accept queue is never
    // served, and the drain would end without it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while edge.metric("clickedge_connections_open").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the connection was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    edge.signal("TERM");
    while !edge.stderr().contains("shutting down") {
        assert!(Instant::now() < deadline, "no shutdown log line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(edge.alive(), "the first signal should drain, not exit");
    edge.signal("TERM");
    let status = edge.wait();
    assert_eq!(status.code(), Some(130), "{}", edge.stderr());
}
