//! Clicks to NATS JetStream (issue 13), against a real `nats-server -js`: every click answered
//! with a 302 reaches the stream under its `click_id` (the message's `Nats-Msg-Id`), with no gap
//! in the node's sequence, whatever fails: NATS stopped under load and restarted, the edge
//! SIGKILLed mid-shipping and restarted, the stream deleted and recreated by an operator; and
//! over TLS, with a URL's password or token, or a credentials file (`stream/auth.rs`); and
//! `clickedge clicks follow` printing the stream (`stream/follow.rs`).

mod common;

#[path = "stream/auth.rs"]
mod auth;
#[path = "stream/follow.rs"]
mod follow;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use clickedge::clicks::ship::MAX_IN_FLIGHT;
use common::Edge;
use common::nats::{NatsServer, read_stream};
use serde_json::{Value, json};

const DOMAIN: &str = "links.example.com";
const NODE: &str = "edge-a";

fn config(nats: &NatsServer, durability: &str) -> String {
    format!(
        "[cluster]\nnode_id = \"{NODE}\"\n[clicks]\nstream = \"nats\"\nnats_url = \"{}\"\n\
         durability = \"{durability}\"\nflush_interval = \"20ms\"\nmax_clicks_per_ip_per_sec = 0\n",
        nats.url()
    )
}

/// Clients clicking `link` until `stop`, each pausing between clicks so the load stays bounded;
/// counts the 302s.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    fn start(edge: &Edge, link: &str, clients: usize) -> Load {
        let (stop, ok) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let (client, link) = (edge.client(&[DOMAIN]), link.to_owned());
            let (stop, ok) = (stop.clone(), ok.clone());
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.get(&link).send().await {
                        Ok(r) if r.status() == 302 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => return,
                    }
                    tokio::time::sleep(Duration::from_millis(4)).await;
                }
            });
        }
        Load { stop, ok, tasks }
    }

    fn answered(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients; the number of 302s.
    async fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        self.answered()
    }
}

/// Polls the stream until it holds `n` distinct click ids (or fails after 40 s); returns the
/// messages.
async fn wait_for_ids(js: &jetstream::Context, n: usize) -> Vec<(String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let msgs = read_stream(js, "CLICKS").await;
        let distinct: HashSet<&str> = msgs.iter().map(|(id, _)| id.as_str()).collect();
        if distinct.len() >= n {
            return msgs;
        }
        assert!(
            Instant::now() < deadline,
            "the stream holds {} distinct click ids, want {n}",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The sequence numbers of the messages' ids, after checking each message's `Nats-Msg-Id` is
/// the `click_id` of its line.
fn seqs(msgs: &[(String, Value)]) -> BTreeSet<u64> {
    msgs.iter()
        .map(|(id, line)| {
            assert_eq!(line["click_id"], id.as_str(), "Nats-Msg-Id is the click_id");
            let seq = id.strip_prefix(&format!("{NODE}-")).expect("node prefix");
            seq.parse().expect("sequence number")
        })
        .collect()
}

/// The sequence number of a click line's `click_id`.
fn click_seq(line: &Value) -> u64 {
    let id = line["click_id"].as_str().expect("click_id");
    id.rsplit_once('-')
        .expect("node-seq")
        .1
        .parse()
        .expect("sequence number")
}

fn gapless(seqs: &BTreeSet<u64>, n: u64) {
    assert_eq!(seqs.len() as u64, n, "distinct click ids");
    assert_eq!(seqs.first(), Some(&1));
    assert_eq!(seqs.last(), Some(&n), "a gap in the sequence");
}

async fn wait_for_metric(edge: &Edge, name: &str, done: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !done(edge.metric(name).await) {
        assert!(Instant::now() < deadline, "{name} never got there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn health(edge: &Edge) -> String {
    let url = format!("http://{}/healthz", edge.admin);
    let res = reqwest::get(url).await.unwrap();
    assert_eq!(res.status(), 200, "healthz stays healthy");
    res.text().await.unwrap()
}

/// Polls /healthz until it says `says` (or fails after 40 s).
async fn health_says(edge: &Edge, says: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !health(edge).await.contains(says) {
        assert!(Instant::now() < deadline, "/healthz never said {says:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stopped_under_load_for_ten_seconds_loses_and_doubles_no_click() {
    let mut nats = NatsServer::start();
    let edge = Edge::start_with(&config(&nats, "buffered"));
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    let load = Load::start(&edge, &link, 2);
    wait_for_metric(&edge, "clickedge_clicks_shipped_total", |v| v >= 50.0).await;

    nats.stop();
    let outage = Instant::now();
    let mut behind = false;
    while outage.elapsed() < Duration::from_secs(10) {
        behind |= health(&edge).await.contains("shipping: behind");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        behind,
        "/healthz never said shipping is behind while NATS was down"
    );
    assert!(edge.metric("clickedge_click_ship_errors_total").await >= 1.0);
    assert!(edge.metric("clickedge_click_unshipped_bytes").await > 0.0);
    nats.restart();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answered = load.stop().await;
    assert!(answered > 0, "no click answered");

    let js = nats.jetstream().await;
    let msgs = wait_for_ids(&js, answered as usize).await;
    gapless(&seqs(&msgs), answered);
    // The log holds the same clicks.
    let logged: BTreeSet<u64> = edge.clicks().iter().map(click_seq).collect();
    assert_eq!(logged, seqs(&msgs));
    // Whatever was published again (its acknowledgement lost in the outage) was acknowledged as
    // a duplicate, not stored twice; every line was acknowledged once at least.
    wait_for_metric(&edge, "clickedge_click_unshipped_bytes", |v| v == 0.0).await;
    assert_eq!(msgs.len() as u64, answered, "a click stored twice");
    assert!(edge.metric("clickedge_clicks_shipped_total").await >= answered as f64);
    assert!(health(&edge).await.contains("shipping: current"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_sigkilled_mid_shipping_ships_every_acknowledged_click_after_restart() {
    let nats = NatsServer::start();
    let config = config(&nats, "synced");
    let mut edge = Edge::start_with(&config);
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    let path = link[link.find("/c/").unwrap()..].to_owned();
    let clients = 3;
    let load = Load::start(&edge, &link, clients);
    wait_for_metric(&edge, "clickedge_clicks_shipped_total", |v| v >= 300.0).await;
    edge.signal("KILL");
    edge.wait();
    let answered = load.stop().await;
    // The file being written at the kill keeps its open name: a loader of `*.jsonl` skips it.
    let dir = edge.data_dir().join("clicks");
    let left_open: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".jsonl.open"))
        .collect();
    assert_eq!(left_open.len(), 1, "{left_open:?}");
    let open_text = std::fs::read_to_string(dir.join(&left_open[0])).unwrap();
    let whole = &open_text[..open_text.rfind('\n').map_or(0, |i| i + 1)];
    assert!(whole.lines().count() > 0);

    // Started again on the same log: it closes that file with its clicks, goes on shipping from
    // its checkpoint (which names the file by its closed name), and numbering from its log.
    let edge = Edge::start_in(edge.take_dir(), &config);
    let closed = dir.join(left_open[0].strip_suffix(".open").unwrap());
    assert_eq!(std::fs::read_to_string(&closed).unwrap(), whole);
    assert!(!dir.join(&left_open[0]).exists());
    let link = edge.on_port(&format!("https://{DOMAIN}{path}"));
    let client = edge.client(&[DOMAIN]);
    for _ in 0..10 {
        assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    }
    let js = nats.jetstream().await;
    wait_for_metric(&edge, "clickedge_click_unshipped_bytes", |v| v == 0.0).await;
    let logged = edge.clicks().len();
    let msgs = wait_for_ids(&js, logged).await;
    let seqs = seqs(&msgs);
    gapless(&seqs, logged as u64);
    // Every 302 is in the stream; at most the clicks in flight at the kill (written, their 302
    // lost with the process) are there besides.
    let total = answered + 10;
    assert!(
        (total..=total + clients as u64).contains(&(logged as u64)),
        "{logged} clicks shipped, {total} answered"
    );
    assert_eq!(msgs.len(), logged, "a click stored twice");
}

/// A clean stop ships what the click writer flushed at shutdown before the edge exits: the
/// shipper stops after the writer's last write and drains. Clicks wait in the writer's queue
/// (a flush interval of an hour) until the stop's final flush, so a shipper stopped before it
/// would ship none of them in this run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_flushed_at_shutdown_are_in_the_stream_when_the_edge_exits() {
    let nats = NatsServer::start();
    let config = config(&nats, "buffered").replace("\"20ms\"", "\"1h\"");
    let mut edge = Edge::start_with(&config);
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    let client = edge.client(&[DOMAIN]);
    for _ in 0..20 {
        assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    }
    assert!(edge.clicks().is_empty(), "written before the stop");
    let status = edge.terminate();
    assert!(status.success(), "exit {status:?}\n{}", edge.stderr());
    // Read once, after the exit: nothing ships them later.
    let msgs = read_stream(&nats.jetstream().await, "CLICKS").await;
    gapless(&seqs(&msgs), 20);
    assert_eq!(msgs.len(), 20, "a click stored twice");
    assert!(
        edge.stderr()
            .contains("click shipper stopped; every click is shipped"),
        "{}",
        edge.stderr()
    );
}

/// A node whose click directory was lost (a replaced volume, an operator) but that keeps its
/// id goes on after its newest id in the stream, instead of handing out ids the stream has seen:
/// JetStream would take them for re-publishes and drop them, and consumers deduplicating by
/// `click_id` would skip them. It goes on past the acknowledgements that may have been in flight
/// after the stream's last message: a line published again after a refusal comes last, behind
/// newer ones the stream kept already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_click_log_goes_on_after_its_newest_id_in_the_stream() {
    let nats = NatsServer::start();
    let config = config(&nats, "buffered");
    let edge = Edge::start_with(&config);
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    for _ in 0..3 {
        let res = edge.client(&[DOMAIN]).get(&link).send().await.unwrap();
        assert_eq!(res.status(), 302);
    }
    let js = nats.jetstream().await;
    wait_for_ids(&js, 3).await;
    let (https, http) = (edge.https.port(), edge.http.port());
    let dir = edge.stop_keep_dir();
    std::fs::remove_dir_all(dir.path().join("data").join("clicks")).unwrap();
    let edge = Edge::start_in_at(dir, &config, https, http);
    let res = edge.client(&[DOMAIN]).get(&link).send().await.unwrap();
    assert_eq!(res.status(), 302);
    let msgs = wait_for_ids(&js, 4).await;
    let seqs = seqs(&msgs);
    assert_eq!(seqs.iter().take(3).copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(seqs.last(), Some(&(3 + MAX_IN_FLIGHT as u64 + 1)));
    assert_eq!(edge.clicks().len(), 1);
    assert!(
        edge.stderr().contains("ids go on after the stream's"),
        "{}",
        edge.stderr()
    );
}

/// Shipping caught up at the end of a file, then the edge restarts while NATS is down: the new
/// clicks go to a new file, and the age of the oldest unshipped click (what the lag alert reads)
/// grows rather than reading 0. Stopping the edge then ends its final drain without NATS, and
/// says how much is left; the next start ships it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_with_nats_down_the_unshipped_age_shows_and_the_stop_says_what_is_left() {
    let mut nats = NatsServer::start();
    let config = config(&nats, "buffered");
    let mut edge = Edge::start_with(&config);
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    let path = link[link.find("/c/").unwrap()..].to_owned();
    let client = edge.client(&[DOMAIN]);
    for _ in 0..10 {
        assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    }
    wait_for_ids(&nats.jetstream().await, 10).await;
    wait_for_metric(&edge, "clickedge_click_unshipped_bytes", |v| v == 0.0).await;
    let status = edge.terminate();
    assert!(status.success(), "exit {status:?}\n{}", edge.stderr());

    nats.stop();
    let mut edge = Edge::start_in(edge.take_dir(), &config);
    let link = edge.on_port(&format!("https://{DOMAIN}{path}"));
    let client = edge.client(&[DOMAIN]);
    for _ in 0..5 {
        assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    }
    wait_for_metric(&edge, "clickedge_click_unshipped_bytes", |v| v > 0.0).await;
    wait_for_metric(&edge, "clickedge_click_unshipped_oldest_age_seconds", |v| {
        v >= 1.0
    })
    .await;
    let status = edge.terminate();
    assert!(status.success(), "exit {status:?}\n{}", edge.stderr());
    let log = edge.stderr();
    assert!(
        log.contains("click shipper stopped with clicks not shipped yet")
            && log.contains("unshipped_bytes="),
        "{log}"
    );
    // The start's wait for NATS says why it got no answer: nothing listens at its address.
    assert!(
        log.contains("did not say this node's newest click id")
            && log.contains("Connection refused"),
        "{log}"
    );

    nats.restart();
    let edge = Edge::start_in(edge.take_dir(), &config);
    let msgs = wait_for_ids(&nats.jetstream().await, 15).await;
    gapless(&seqs(&msgs), 15);
    wait_for_metric(&edge, "clickedge_click_unshipped_bytes", |v| v == 0.0).await;
    assert_eq!(msgs.len(), 15, "a click stored twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_and_recreated_stream_gets_shipping_from_the_checkpoint() {
    let nats = NatsServer::start();
    let edge = Edge::start_with(&config(&nats, "buffered"));
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    let client = edge.client(&[DOMAIN]);
    for _ in 0..50 {
        assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    }
    let js = nats.jetstream().await;
    gapless(&seqs(&wait_for_ids(&js, 50).await), 50);
    wait_for_metric(&edge, "clickedge_click_unshipped_bytes", |v| v == 0.0).await;

    // The operator deletes the stream and makes it again, as it was.
    js.delete_stream("CLICKS").await.unwrap();
    for _ in 0..50 {
        assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    }
    js.get_or_create_stream(jetstream::stream::Config {
        name: "CLICKS".into(),
        subjects: vec!["clicks.>".into()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
    let msgs = wait_for_ids(&js, 50).await;
    // The new stream has the clicks after the checkpoint, each once, and none from before.
    let after: BTreeSet<u64> = (51..=100).collect();
    assert_eq!(seqs(&msgs), after);
    assert_eq!(msgs.len(), 50);
    let log = edge.stderr();
    assert!(
        log.contains("stream was missing") || log.contains("stream was recreated"),
        "no log line about the stream: {log}"
    );
}

/// A click log the shipper cannot read is a failure like NATS being away: counted, shipping
/// behind in /healthz, retried; once readable again, every click is shipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_click_log_shows_shipping_behind_until_it_can_be_read_again() {
    let nats = NatsServer::start();
    let edge = Edge::start_with(&config(&nats, "buffered"));
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    let client = edge.client(&[DOMAIN]);
    assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    wait_for_metric(&edge, "clickedge_clicks_shipped_total", |v| v >= 1.0).await;
    // A plain file where the click directory was: neither the writer nor the shipper can use
    // it.
    let dir = edge.data_dir().join("clicks");
    std::fs::rename(&dir, dir.with_extension("aside")).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    wait_for_metric(&edge, "clickedge_click_ship_errors_total", |v| v >= 1.0).await;
    health_says(&edge, "shipping: behind").await;
    assert!(
        edge.stderr().contains("reading the click log at"),
        "{}",
        edge.stderr()
    );
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(dir.with_extension("aside"), &dir).unwrap();
    assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    let js = nats.jetstream().await;
    let msgs = wait_for_ids(&js, 2).await;
    assert_eq!(msgs.len(), 2);
    health_says(&edge, "shipping: current").await;
}

/// A quiet edge keeps its connection to NATS: it answers the server's pings while no click
/// comes (here one a second, the connection stale after one unanswered), so the first click
/// after the quiet ships without a failed publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_edge_answers_the_servers_pings_and_ships_the_next_click_at_once() {
    let conf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(conf.path(), "ping_interval: \"1s\"\nping_max: 1\n").unwrap();
    let nats = NatsServer::start_with(&["-c", conf.path().to_str().unwrap()]);
    let mut edge = Edge::start_with(&config(&nats, "buffered"));
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    let client = edge.client(&[DOMAIN]);
    assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    let js = nats.jetstream().await;
    wait_for_ids(&js, 1).await;
    // Quiet for four of the server's ping intervals.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    gapless(&seqs(&wait_for_ids(&js, 2).await), 2);
    assert_eq!(
        edge.metric("clickedge_click_ship_errors_total").await,
        0.0,
        "{}",
        edge.stderr()
    );
    edge.terminate();
}
