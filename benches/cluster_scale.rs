//! Cluster scale bench: a node's start-up time and memory with 1 000 000 registered domains and
//! 100 000 stored certificates in PostgreSQL, and the time one new domain takes to reach another
//! node.
//!
//! ```text
//! nice -n 10 cargo bench --bench cluster_scale    # 1 000 000 domains, 100 000 certificates
//! ```
//!
//! In order: a throwaway PostgreSQL (as the tests start it); one node applies the schema; the
//! rows are inserted with SQL (`generate_series`; the certificates are placeholders: start-up
//! reads only their lifetimes); node A starts, timed from spawn to its ready line (every domain
//! and certificate lifetime loaded), and its RSS is read at rest; node B starts; a domain is
//! added through A's admin API, and the time until B completes a TLS handshake for it is the
//! propagation time (B's built-in CA issues at that first handshake, which is included). Under
//! `cargo test` (no `--bench` argument) it runs the same steps with 2 000 domains and 200
//! certificates and checks the outcome, not the timing.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use clickedge::clock::{Clock, unix_secs};

use common::Edge;
use common::postgres::PgServer;

const NEW: &str = "new.scale.example";

fn node(url: &str, id: &str) -> Edge {
    Edge::start_with_env(
        &[("CLICKEDGE_SEAL_KEY", &"ab".repeat(32))],
        &format!(
            "[store]\nurl = \"{url}\"\n[cluster]\nnode_id = \"{id}\"\n[tls]\ncert_cache_capacity = 1000\n"
        ),
    )
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (domains, certs) = if bench {
        (1_000_000, 100_000)
    } else {
        (2_000, 200)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(domains, certs, bench));
}

async fn run(domains: u64, certs: u64, bench: bool) {
    let server = PgServer::start();
    let url = server.fresh_database();
    let db = url.rsplit('/').next().expect("database").to_owned();
    drop(node(&url, "schema"));

    let now = unix_secs(Clock::system().now());
    let inserting = Instant::now();
    server.psql(
        &db,
        &format!(
            "INSERT INTO domains (name, origin, created_at) \
             SELECT 'd' || g || '.scale.example', 'admin', {now} FROM generate_series(1, {domains}) g"
        ),
    );
    server.psql(
        &db,
        &format!(
            "INSERT INTO certificates (domain, issuer, chain_pem, key_sealed, not_before, not_after) \
             SELECT 'd' || g || '.scale.example', 'acme', 'placeholder', '\\x00'::bytea, {now}, \
             {now} + 7776000 FROM generate_series(1, {certs}) g"
        ),
    );
    let inserted = inserting.elapsed();

    let starting = Instant::now();
    let a = node(&url, "edge-a");
    let start = starting.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = a.rss_kib();
    let b = node(&url, "edge-b");

    let adding = Instant::now();
    a.add_domain(NEW).await;
    let added = adding.elapsed();
    let client = b.client(&[NEW]);
    let url_b = format!("https://{NEW}:{}/", b.https.port());
    let deadline = Instant::now() + Duration::from_secs(60);
    let propagated = loop {
        if client.get(&url_b).send().await.is_ok() {
            break adding.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "b does not serve {NEW} 60 s after it was added on a:\n{}",
            b.stderr()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };

    println!("cluster scale: {domains} domains, {certs} certificates in PostgreSQL");
    println!("  rows inserted (SQL)            {inserted:>10.1?}");
    println!("  node start-up to ready         {start:>10.1?}");
    println!("  node RSS at rest               {:>7} MiB", rss / 1024);
    println!("  admin add on A                 {added:>10.1?}");
    println!("  add on A to handshake on B     {propagated:>10.1?}");
    if !bench {
        let (_, listed) = b
            .admin(reqwest::Method::GET, &format!("/v1/domains/{NEW}"), None)
            .await;
        assert_eq!(listed["name"], NEW, "{listed}");
    }
}
