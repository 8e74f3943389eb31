//! Cluster scale bench: a node's start-up time and memory with 1 000 000 registered domains and
//! 100 000 stored certificates in PostgreSQL, and the time one new domain takes to reach another
//! node.
//!
//! ```text
//! nice -n 10 cargo bench --bench cluster_scale    # 1 000 000 domains, 100 000 certificates
//! ```
//!
//! In order: a throwaway PostgreSQL (as the tests start it); one node applies the schema; the
//! domains are inserted with SQL (`generate_series`), the certificates through the store as the
//! edge writes them (one real leaf, its key sealed to each row); node A starts, timed from spawn
//! to its ready line (every domain and certificate lifetime loaded), its RSS read at rest, then
//! the time until its local certificate mirror is filled (in the background: every certificate
//! read, opened, sealed again and written under its data dir) and its RSS after; node B starts;
//! a domain is added through A's admin API, and the time until B completes a TLS handshake for
//! it is the propagation time (B's built-in CA issues at that first handshake, which is
//! included). Under `cargo test` (no `--bench` argument) it runs the same steps with 2 000
//! domains and 200 certificates and checks the outcome, not the timing.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use std::sync::Arc;

use clickedge::Domain;
use clickedge::clock::{Clock, unix_secs};
use clickedge::config::StoreUrl;
use clickedge::seal::SealKey;
use clickedge::store::{PgStore, Store, StoredCert};

use common::Edge;
use common::postgres::PgServer;

const NEW: &str = "new.scale.example";

/// The seal key of every node (and of the rows the bench writes).
fn seal_hex() -> String {
    "ab".repeat(32)
}

fn node(url: &str, id: &str) -> Edge {
    Edge::start_with_env(
        &[("CLICKEDGE_SEAL_KEY", &seal_hex())],
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
    let inserted = inserting.elapsed();
    let storing = Instant::now();
    let cert_pem = store_certificates(&url, certs).await;
    let stored = storing.elapsed();

    let starting = Instant::now();
    let a = node(&url, "edge-a");
    let start = starting.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = a.rss_kib();
    let peak = a.peak_rss_kib();
    // The domains were loaded to the end: a name late in name order (the store pages them by
    // name) answers a handshake with its stored certificate.
    let last = format!("d{}.scale.example", last_in_name_order(certs));
    let client = a
        .client_trusting(&cert_pem, &[&last])
        .build()
        .expect("client");
    let answer = client
        .get(format!("https://{last}:{}/", a.https.port()))
        .send()
        .await;
    assert!(answer.is_ok(), "no handshake for {last}: {answer:?}");
    let deadline = Instant::now() + Duration::from_secs(600);
    while a.metric("clickedge_certificate_mirror_filled").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the mirror was not filled in 600 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let filled = starting.elapsed();
    let mirrored = a.metric("clickedge_certificate_mirror_entries").await;
    let rss_filled = a.rss_kib();
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
    println!("  domains inserted (SQL)         {inserted:>10.1?}");
    println!("  certificates stored            {stored:>10.1?}");
    println!("  node start-up to ready         {start:>10.1?}");
    println!("  node RSS at rest               {:>7} MiB", rss / 1024);
    println!("  node peak RSS, start-up        {:>7} MiB", peak / 1024);
    println!("  start to mirror filled         {filled:>10.1?}  ({mirrored} certificates)");
    println!(
        "  node RSS, mirror filled        {:>7} MiB",
        rss_filled / 1024
    );
    println!("  admin add on A                 {added:>10.1?}");
    println!("  add on A to handshake on B     {propagated:>10.1?}");
    if !bench {
        let (_, listed) = b
            .admin(reqwest::Method::GET, &format!("/v1/domains/{NEW}"), None)
            .await;
        assert_eq!(listed["name"], NEW, "{listed}");
        assert_eq!(mirrored, certs as f64, "every certificate mirrored");
    }
}

/// Stores `count` certificates (`d1.scale.example` …) through the store, as the edge does: one
/// real leaf and key, the key sealed to each row. Returns the leaf's chain, as PEM.
async fn store_certificates(url: &str, count: u64) -> String {
    let url = StoreUrl::parse(url).expect("store URL");
    let seal = SealKey::from_hex(&seal_hex(), "bench").expect("seal key");
    let store = Arc::new(PgStore::connect(&url, None, seal).await.expect("store"));
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["*.scale.example".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("leaf");
    let now = Clock::system().now();
    let cert = Arc::new(StoredCert {
        issuer: "acme".to_owned(),
        chain_pem: leaf.pem(),
        key_pem: key.serialize_pem(),
        not_before: now,
        not_after: now + Duration::from_secs(90 * 86_400),
    });
    // Sixteen writers at once, each taking every sixteenth name.
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let (store, cert) = (store.clone(), cert.clone());
            tokio::spawn(async move {
                for g in (1 + w..=count).step_by(16) {
                    let name = Domain::parse(&format!("d{g}.scale.example")).expect("name");
                    store.put_certificate(&name, &cert).await.expect("storing");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    cert.chain_pem.clone()
}

/// Of the numbers 1..=n, the one whose decimal form sorts last as text: the longest run of
/// nines not above `n` (the names `d1` … `dN` sort as text in the store).
fn last_in_name_order(n: u64) -> u64 {
    let mut nines = 9;
    while nines * 10 + 9 <= n {
        nines = nines * 10 + 9;
    }
    if nines <= n { nines } else { n }
}
