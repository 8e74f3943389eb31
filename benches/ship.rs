//! The shipper alone: a click log of N lines already on disk, shipped to a local
//! `nats-server -js` (Debian package `nats-server`) from an empty checkpoint until every line is
//! acknowledged. No TLS, no HTTP: this is what streaming adds to the edge's CPU per click.
//!
//! ```text
//! cargo bench --bench ship                  # 3 runs of 200 000 clicks
//! cargo bench --bench ship -- --clicks 50000 --runs 5
//! ```
//!
//! Reports clicks per second of wall time and CPU µs per click of this process (the shipper and
//! the NATS client's connection task; the broker is another process, pinned to the other core
//! when there are two). Under `cargo test` it ships 2 000 clicks once and checks every one was
//! acknowledged; no timing is checked.

#[path = "support/peers.rs"]
#[allow(dead_code)] // shared with the e2e bench
mod peers;
#[path = "support/procs.rs"]
#[allow(dead_code)] // shared with the e2e bench
mod procs;
#[path = "support/runs.rs"]
mod runs;

use std::io::Write as _;
use std::time::{Duration, Instant};

use clickedge::clicks::ship::{NatsTarget, ShipMetrics, Shipper};
use clickedge::clock::Clock;
use clickedge::config::{Clicks, NodeId};

/// The binary's allocator, so allocation costs are the ones the edge pays.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A click line as the edge writes it (a browser's click with a verdict and a message), without
/// its `click_id`: 600 bytes or so, like the lines of the e2e bench.
const LINE: &str = r#"{"ts":"2026-11-29T10:24:30.123Z","kind":"click","domain":"links0.example.com","url":"https://shop.example.com/spring-sale/shoes?utm_source=email&utm_campaign=spring1","meta":{"c":"spring","r":"12345"},"ip":"203.0.113.7","ua":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36","referer":null,"method":"GET","tls":"1.3","http":"2","minted_at":"2026-11-24T16:00:00Z","verdict":"human","reasons":[],"rules":"r2+n1","sec_fetch":"document,navigate,none,?1","message":{"id":"m-2026-11-29-0001","index":3,"count":12},"tls_fp":"t13d1516h2_8daaf6152771_e5627efa2ab1""#;

struct Run {
    clicks_per_s: f64,
    cpu_us: f64,
}

fn run(clicks: u64) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("clicks");
    std::fs::create_dir_all(&log).expect("click dir");
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(log.join("clicks-20261129T102430.123Z.jsonl")).expect("click file"),
    );
    for i in 0..clicks {
        writeln!(
            file,
            "{},\"click_id\":\"bench-{i}\"}}",
            &LINE[..LINE.len() - 1]
        )
        .expect("writing");
    }
    file.into_inner()
        .expect("flushing")
        .sync_all()
        .expect("syncing");
    // The broker on the last core when there are two or more (this process keeps the others).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (_nats, url) =
        peers::nats_server(&dir.path().join("nats"), (cores > 1).then_some(cores - 1))
            .expect("nats-server");
    let url = url.parse().expect("url");
    let clicks_config = Clicks {
        nats_url: url,
        ..Clicks::default()
    };
    let node = NodeId::parse("bench").expect("node id");
    let target = NatsTarget::from_config(&clicks_config, &node);
    let metrics = ShipMetrics::unregistered();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let shipper = Shipper::new(log, target, metrics.clone(), Clock::system())
            .await
            .expect("shipper");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let cpu0 = runs::own_cpu_seconds();
        let start = Instant::now();
        let task = tokio::spawn(shipper.run(stopped));
        let deadline = start + Duration::from_secs(300);
        while metrics.shipped.get() < clicks {
            assert!(
                Instant::now() < deadline,
                "only {} of {clicks} shipped in 300 s",
                metrics.shipped.get()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = start.elapsed();
        let cpu = runs::own_cpu_seconds() - cpu0;
        let _ = stop.send(true);
        task.await.expect("shipper task");
        assert_eq!(
            metrics.shipped.get(),
            clicks,
            "every click acknowledged once"
        );
        assert_eq!(metrics.duplicates.get(), 0, "no duplicates");
        Run {
            clicks_per_s: clicks as f64 / elapsed.as_secs_f64(),
            cpu_us: cpu * 1e6 / clicks as f64,
        }
    })
}

fn main() {
    let (args, bench) = runs::args();
    if !bench {
        run(2_000);
        println!(
            "ship smoke: 2000 clicks acknowledged; timings only under `cargo bench --bench ship`"
        );
        return;
    }
    let value = |name, default| runs::value(&args, name, default);
    let (clicks, runs) = (value("--clicks", 200_000), value("--runs", 3));
    let mut results: Vec<Run> = (0..runs)
        .map(|i| {
            let r = run(clicks);
            eprintln!(
                "ship: run {}/{runs}: {clicks} clicks, {:.0} clicks/s, {:.2} µs CPU per click",
                i + 1,
                r.clicks_per_s,
                r.cpu_us
            );
            r
        })
        .collect();
    let (lo, med, hi) = runs::spread(&mut results, |r| r.cpu_us);
    println!(
        "shipping to JetStream: {:.2} µs CPU per click (min {:.2}, max {:.2}), {:.0} clicks/s, {clicks} clicks per run, {runs} runs",
        med.cpu_us, lo.cpu_us, hi.cpu_us, med.clicks_per_s
    );
}
