//! Graceful shutdown: SIGTERM stops the edge with exit 0 and every click that got a 302 is in the
//! click log, even with a flush interval far longer than the test.

mod common;

use common::Edge;
use serde_json::json;

/// A flush interval longer than the test, and no per-address click bound: one client clicks
/// flat out here, and every click it gets a 302 for must be logged.
const FLOOD: &str = "[clicks]\nflush_interval = \"1h\"\nmax_clicks_per_ip_per_sec = 0\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_every_acknowledged_click() {
    // Only the shutdown flush can put these clicks on disk.
    let mut edge = Edge::start_with(FLOOD);
    edge.add_domain("links.example.com").await;
    let link = edge
        .mint("links.example.com", "https://example.com/", json!({}))
        .await;
    let client = edge.client(&["links.example.com"]);
    let mut acknowledged = 0;
    for _ in 0..50 {
        if client.get(&link).send().await.unwrap().status() == 302 {
            acknowledged += 1;
        }
    }
    assert_eq!(acknowledged, 50);
    assert!(edge.clicks().is_empty(), "nothing should be flushed yet");

    let status = edge.terminate();
    assert!(status.success(), "exit {status:?}\n{}", edge.stderr());
    assert_eq!(edge.clicks().len(), acknowledged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_concurrent_load_loses_no_acknowledged_click() {
    sigterm_under_load(Edge::start_with(FLOOD)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_with_https_threads_loses_no_acknowledged_click() {
    let listen = "[listen]\nhttps = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n\
                  admin = \"127.0.0.1:0\"\nhttps_threads = 2\n";
    sigterm_under_load(Edge::start_with(&format!("{listen}{FLOOD}"))).await;
}

/// Eight clients click flat out over HTTPS keep-alive; SIGTERM once 50 are answered: every
/// click answered 302 is in the log.
async fn sigterm_under_load(mut edge: Edge) {
    edge.add_domain("links.example.com").await;
    let link = edge
        .mint("links.example.com", "https://example.com/", json!({}))
        .await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let client = edge.client(&["links.example.com"]);
        let link = link.clone();
        tasks.spawn(async move {
            let mut ok = 0usize;
            // Bounded: at most 200 requests per task; stops at the first refused connection.
            for _ in 0..200 {
                match client.get(&link).send().await {
                    Ok(res) if res.status() == 302 => ok += 1,
                    Ok(_) | Err(_) => break,
                }
            }
            ok
        });
    }
    // Let some clicks through, then stop the edge while the load is running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while edge
        .metric("clickedge_requests_total{outcome=\"redirect\"}")
        .await
        < 50.0
        && std::time::Instant::now() < deadline
    {
        tokio::task::yield_now().await;
    }
    let status = edge.terminate();
    assert!(status.success(), "exit {status:?}\n{}", edge.stderr());
    let mut acknowledged = 0;
    while let Some(n) = tasks.join_next().await {
        acknowledged += n.unwrap();
    }
    assert!(acknowledged >= 50);
    assert_eq!(edge.clicks().len(), acknowledged);
}
