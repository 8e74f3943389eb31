//! File-sink throughput alone: clicks pushed into the queue of a `clickedge::clicks::ClickWriter`
//! over a `clickedge::clicks::file::FileSink` as fast as the writer takes them (never dropping one), then `close()`, which writes everything.
//! No network and no TLS: this is the ceiling the click log puts on the edge.
//!
//! ```text
//! cargo bench --bench sink                 # 3 runs of 1 000 000 clicks, buffered durability
//! cargo bench --bench sink -- --clicks 200000 --runs 5
//! ```
//!
//! Reports clicks per second of wall time, CPU µs per click for the whole process (producer and
//! writer thread), and bytes per click. Under `cargo test` it writes 10 000 clicks once and checks
//! every one is on disk; no timing is checked.

#[path = "support/runs.rs"]
mod runs;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use clickedge::Domain;
use clickedge::clicks::file::{FileSink, FileSinkConfig};
use clickedge::clicks::{BatchConfig, ClickEvent, ClickWriter, Truncated};
use clickedge::clock::{Clock, from_unix_secs};
use clickedge::metrics::Metrics;

/// An 80-byte destination, the "typical link" of the hotpath bench.
const URL: &str =
    "https://shop.example.com/spring-sale/shoes?utm_source=email&utm_campaign=spring1";
const UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

fn event(clock: &Clock, domain: &Domain, ip: IpAddr, i: u64) -> ClickEvent {
    ClickEvent {
        ts: clock.now(),
        domain: domain.clone(),
        url: URL.to_owned(),
        meta: vec![("c".into(), "spring".into()), ("r".into(), i.to_string())],
        minted_at: from_unix_secs(1_764_000_000),
        ip,
        ua: Some(UA.to_owned()),
        referer: None,
        method: "GET",
        tls: Some("1.3"),
        http: "2",
        tls_fp: None,
        verdict: None,
        message: None,
        truncated: Truncated::default(),
        open: None,
        implied_open: false,
        marked_seen: false,
        visitor: None,
    }
}

struct Run {
    clicks_per_s: f64,
    cpu_us: f64,
    bytes_per_click: f64,
}

fn run(clicks: u64) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).expect("metrics");
    let capacity = 65_536;
    let clock = Clock::system();
    let sink = FileSink::open(
        FileSinkConfig {
            dir: dir.path().to_path_buf(),
            ..FileSinkConfig::default()
        },
        metrics.clone(),
        clock.clone(),
    )
    .expect("opening the sink");
    let (writer, queue) = ClickWriter::start(
        sink,
        BatchConfig {
            queue_capacity: capacity,
            ..BatchConfig::default()
        },
        metrics.clone(),
        clock.clone(),
    )
    .expect("starting the writer");
    let domain = Domain::parse("links0.example.com").expect("domain");
    let ip: IpAddr = "203.0.113.7".parse().expect("ip");
    let cpu0 = runs::own_cpu_seconds();
    let start = Instant::now();
    for i in 0..clicks {
        // Stay under the queue bound so nothing is dropped: this measures the writer.
        while metrics.clicks_queued.get() >= (capacity as i64 - 1024) {
            std::thread::yield_now();
        }
        queue.push(event(&clock, &domain, ip, i));
    }
    drop(queue);
    writer.close();
    let elapsed = start.elapsed();
    let cpu = runs::own_cpu_seconds() - cpu0;
    assert_eq!(metrics.clicks_dropped.get(), 0, "clicks dropped");
    let (lines, bytes) = std::fs::read_dir(dir.path())
        .expect("click dir")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .map(|e| {
            let b = std::fs::read(e.path()).expect("click file");
            (
                b.iter().filter(|&&c| c == b'\n').count() as u64,
                b.len() as u64,
            )
        })
        .fold((0, 0), |(l, b), (l2, b2)| (l + l2, b + b2));
    assert_eq!(lines, clicks, "every click is written");
    Run {
        clicks_per_s: clicks as f64 / elapsed.max(Duration::from_nanos(1)).as_secs_f64(),
        cpu_us: cpu * 1e6 / clicks as f64,
        bytes_per_click: bytes as f64 / clicks as f64,
    }
}

fn main() {
    let (args, bench) = runs::args();
    if !bench {
        let r = run(10_000);
        println!(
            "sink smoke: 10000 clicks written ({:.0} bytes each); timings only under `cargo bench --bench sink`",
            r.bytes_per_click
        );
        return;
    }
    let value = |name, default| runs::value(&args, name, default);
    let (clicks, runs) = (value("--clicks", 1_000_000), value("--runs", 3));
    let mut results: Vec<Run> = (0..runs)
        .map(|i| {
            let r = run(clicks);
            eprintln!(
                "sink: run {}/{runs}: {clicks} clicks, {:.0} clicks/s, {:.2} µs CPU per click (producer + writer), {:.0} bytes per click",
                i + 1,
                r.clicks_per_s,
                r.cpu_us,
                r.bytes_per_click
            );
            r
        })
        .collect();
    let (lo, med, hi) = runs::spread(&mut results, |r| r.clicks_per_s);
    println!(
        "file sink, buffered: {:.0} clicks/s (min {:.0}, max {:.0}), {:.2} µs CPU per click, {:.0} bytes per click, {} clicks per run, {runs} runs",
        med.clicks_per_s, lo.clicks_per_s, hi.clicks_per_s, med.cpu_us, med.bytes_per_click, clicks
    );
}
