//! Micro-benchmarks for the edge's per-request and per-handshake hot paths: sealing and opening
//! link tokens (including the cost of rejecting forged and garbage tokens), SNI/domain
//! normalisation, the certificate cache hit taken on every TLS handshake, the JA4 fingerprint of
//! a ClientHello (recorded, parsed, hashed), path routing, the verdict's request-shape reading,
//! click-log JSON encoding, and the in-process request handler (a whole click, from the parsed
//! request to the 302 with the click queued, and a click past its address's rate, redirected
//! without being logged), and preparing a whole message (`rewrite`, off the click path: the
//! admin API's).
//!
//! Run with:
//!
//! ```text
//! cargo bench --bench hotpath
//! ```
//!
//! Criterion arguments go after `--`, e.g.
//! `cargo bench --bench hotpath -- --warm-up-time 1 --measurement-time 2 links/`.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};

use clickedge::Domain;
use clickedge::acme::challenges::Challenges;
use clickedge::certs::{self, Certs};
use clickedge::clicks::file::{FileSink, FileSinkConfig};
use clickedge::clicks::verdict::networks::{Catalogue, SharedCatalogue};
use clickedge::clicks::verdict::shape::shape;
use clickedge::clicks::verdict::{Class, Revise, Revision, Rules, Timing, Verdict, messages};
use clickedge::clicks::{BatchConfig, ClickEvent, ClickId, ClickWriter, Truncated};
use clickedge::clock::{Clock, from_unix_secs};
use clickedge::domain::Zones;
use clickedge::http::router::{Route, route};
use clickedge::http::{ConnInfo, Edge};
use clickedge::issuer::LocalCa;
use clickedge::links::{self, KeyId, KeyRing, Link, LinkKey, SharedKeyRing, TokenError};
use clickedge::metrics::Metrics;
use clickedge::policy::Policy;
use clickedge::store::{SqliteStore, Store as _};

#[path = "hotpath/floor.rs"]
mod floor;
#[path = "hotpath/rewrite.rs"]
mod rewrite_bench;

use floor::bench_floor;
use rewrite_bench::bench_rewrite;

/// The binary's allocator, so allocation costs are the ones the edge pays.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The link domain every bench uses.
const DOMAIN: &str = "links.example.com";
/// The certificate layer of every bench: a thousand certificates in memory, as in production
/// for a small edge, and the default on-demand timeout.
const CERTS: certs::Settings = certs::Settings {
    cache_capacity: 1_000,
    on_demand_timeout: Duration::from_secs(5),
};
/// An 80-byte destination, the "typical link" of `links::token`'s docs.
const URL: &str =
    "https://shop.example.com/spring-sale/shoes?utm_source=email&utm_campaign=spring1";

fn ring() -> KeyRing {
    KeyRing::new(vec![LinkKey::new(
        KeyId(1),
        [7; 32],
        SystemTime::UNIX_EPOCH,
    )])
    .expect("one key")
}

fn typical_link() -> Link {
    let link = Link::new(
        URL,
        vec![("c".into(), "spring".into()), ("r".into(), "4711".into())],
        1_764_000_000,
    )
    .expect("valid link");
    assert_eq!(link.url.len(), 80);
    link
}

/// The same token with one ciphertext byte flipped: decodes fine, fails authentication.
fn forge(token: &str) -> String {
    let mut raw = URL_SAFE_NO_PAD.decode(token).expect("token is base64url");
    raw[40] ^= 0x01;
    URL_SAFE_NO_PAD.encode(&raw)
}

/// Token sealing and opening.
fn bench_links(c: &mut Criterion) {
    let ring = ring();
    let link = typical_link();
    let token = links::seal(&ring, DOMAIN, &link);
    assert_eq!(links::open(&ring, DOMAIN, &token).as_ref(), Ok(&link));

    let forged = forge(&token);
    assert_eq!(links::open(&ring, DOMAIN, &forged), Err(TokenError::Forged));

    // Same length as a real token but not base64url: rejected while decoding.
    let garbage = "!".repeat(token.len());
    assert_eq!(
        links::open(&ring, DOMAIN, &garbage),
        Err(TokenError::Malformed)
    );

    let mut g = c.benchmark_group("links");
    // Minting: payload encoding, a random nonce, XChaCha20-Poly1305 sealing and base64url.
    g.bench_function("seal", |b| {
        b.iter(|| links::seal(black_box(&ring), black_box(DOMAIN), black_box(&link)))
    });
    // A click's token check: base64url decode, authenticated decryption, payload decode.
    g.bench_function("open", |b| {
        b.iter(|| links::open(black_box(&ring), black_box(DOMAIN), black_box(&token)))
    });
    // Rejecting a tampered token: full decode and decryption, then the tag mismatch.
    g.bench_function("open_forged", |b| {
        b.iter(|| links::open(black_box(&ring), black_box(DOMAIN), black_box(&forged)))
    });
    // Rejecting non-base64 input of token length: fails in base64 decoding, no cryptography.
    g.bench_function("open_garbage", |b| {
        b.iter(|| links::open(black_box(&ring), black_box(DOMAIN), black_box(&garbage)))
    });
    g.finish();
}

/// Domain name parsing and normalisation.
fn bench_domain(c: &mut Criterion) {
    let mut g = c.benchmark_group("domain");
    // An already-normalised name: validation plus one `Arc<str>` allocation.
    g.bench_function("parse_normalised", |b| {
        b.iter(|| Domain::parse(black_box("links.example.com")))
    });
    // An SNI-style name with upper case and a trailing dot: validation plus lowercasing.
    g.bench_function("parse_sni_mixed_case", |b| {
        b.iter(|| Domain::parse(black_box("Links.Example.COM.")))
    });
    // An internationalised name's SNI (A-labels): validation plus the A-label's decoding check.
    g.bench_function("parse_a_labels", |b| {
        b.iter(|| Domain::parse(black_box("links.xn--bcher-kva.example")))
    });
    g.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Times `iters` runs of `f` inside one `block_on`, so the runtime's entry cost is not counted
/// against each lookup (criterion's async support is not enabled).
fn iter_on<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(f().await);
        }
        start.elapsed()
    })
}

/// A certificate layer with [`DOMAIN`] registered and its certificate issued by a local CA
/// (ECDSA P-256, as the edge's are) and cached; and that CA's root, PEM.
fn warm_certs(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> (Arc<Certs>, Domain, String) {
    let domain = Domain::parse(DOMAIN).expect("valid domain");
    let store = Arc::new(SqliteStore::in_memory().expect("in-memory store"));
    rt.block_on(store.add_domain(&domain, SystemTime::UNIX_EPOCH))
        .expect("registering the domain");
    let ca = LocalCa::load_or_create(dir, Zones::reserved(), Clock::system()).expect("local CA");
    let root = ca.root_pem().to_owned();
    let certs = Arc::new(Certs::new(
        CERTS,
        store,
        Arc::new(ca),
        Arc::new(Policy::new([domain.clone()], None)),
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        Metrics::unregistered(),
        Clock::system(),
    ));
    // Warm-up: the first call issues, stores and caches the certificate; later calls must hit.
    let first = rt.block_on(certs.resolve(&domain)).expect("first resolve");
    let again = rt.block_on(certs.resolve(&domain)).expect("cached resolve");
    assert!(Arc::ptr_eq(&first, &again), "second resolve is a cache hit");
    (certs, domain, root)
}

/// Certificate lookup for a handshake on a warm cache.
fn bench_certs(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (certs, domain, _) = warm_certs(&rt, dir.path());

    let mut g = c.benchmark_group("certs");
    // Cache hit: policy check, clock read, moka lookup and an `Arc` clone.
    g.bench_function("resolve_hit", |b| {
        b.iter_custom(|iters| iter_on(&rt, iters, || certs.resolve(black_box(&domain))))
    });
    // What the acceptor does per ClientHello: normalise the SNI name, then the cache hit.
    g.bench_function("handshake_lookup", |b| {
        b.iter_custom(|iters| {
            iter_on(&rt, iters, || async {
                let name = Domain::parse(black_box("Links.Example.COM.")).expect("valid SNI");
                certs.resolve(&name).await
            })
        })
    });
    g.finish();
}

/// Request path routing.
fn bench_router(c: &mut Criterion) {
    let token = links::seal(&ring(), DOMAIN, &typical_link());
    let click = format!("/c/{token}");
    assert_eq!(route(&click), Route::Click(&token));
    assert_eq!(route("/favicon.ico"), Route::NotFound);

    let mut g = c.benchmark_group("router");
    // `/c/<195-char token>`: prefix match plus a scan of the token for '/'.
    g.bench_function("click", |b| b.iter(|| route(black_box(&click))));
    // A path matching neither prefix.
    g.bench_function("not_found", |b| b.iter(|| route(black_box("/favicon.ico"))));
    g.finish();
}

/// Click log encoding.
fn bench_clicks(c: &mut Criterion) {
    let link = typical_link();
    let event = ClickEvent {
        ts: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_123_456),
        domain: Domain::parse(DOMAIN).expect("valid domain"),
        url: link.url,
        meta: link.meta,
        minted_at: from_unix_secs(link.minted_at),
        ip: "203.0.113.7".parse().expect("valid IP"),
        ua: Some(
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 \
             (KHTML, like Gecko) Version/17.4 Safari/605.1.15"
                .into(),
        ),
        referer: Some("https://mail.example.net/".into()),
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
    };
    let judged = ClickEvent {
        verdict: Some(Verdict {
            class: Class::Machine,
            reasons: vec!["ua-bot", "prefetch"],
            rules: "2026-01",
            handle: None,
            sec_fetch: None,
        }),
        ..event.clone()
    };
    let mut out = Vec::with_capacity(1024);
    let node = clickedge::config::NodeId::parse("edge-a").expect("node id");

    let mut g = c.benchmark_group("clicks");
    // One JSON line (two timestamps formatted, meta map built, serde_json) into a reused buffer.
    g.bench_function("write_json", |b| {
        b.iter(|| {
            out.clear();
            black_box(&event).write_json(ClickId::new(&node, 1_000_000), &mut out);
            black_box(out.len())
        })
    });
    // The same line with a verdict's three fields appended.
    g.bench_function("write_json_verdict", |b| {
        b.iter(|| {
            out.clear();
            black_box(&judged).write_json(ClickId::new(&node, 1_000_000), &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

/// The verdict's request-shape signals alone: method and headers of a browser navigation, and
/// a scanner's, read by `verdict::shape` (user-agent markers, prefetch headers, `Sec-Fetch-*`).
fn bench_verdict(c: &mut Criterion) {
    let browser = headers(&[
        (
            "user-agent",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/131.0.0.0 Safari/537.36",
        ),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-user", "?1"),
        ("referer", "https://mail.example.net/"),
    ]);
    let scanner = headers(&[(
        "user-agent",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
         Chrome/41.0.2228.0 Safari/537.36",
    )]);
    let mut g = c.benchmark_group("verdict");
    g.bench_function("shape_browser", |b| {
        b.iter(|| shape(black_box("GET"), black_box(&browser)))
    });
    g.bench_function("shape_scanner", |b| {
        b.iter(|| shape(black_box("GET"), black_box(&scanner)))
    });
    // The message table, for a link with its message's context: a recipient's one click (a
    // new entry each time, every recipient clicking from an address of their own; past the
    // memory cap the least recently used go), and one source clicking link after link of a
    // 1000-link message 30 s apart (coverage from the 800th, every earlier click revised).
    let table = || {
        messages::MessageTable::new(
            messages::Config {
                ttl: Duration::from_secs(600),
                max_bytes: 64 << 20,
                idle_expiry: true,
            },
            messages::Gauges {
                entries: prometheus::IntGauge::new("entries", "entries").expect("gauge"),
                evictions: prometheus::IntCounter::new("evictions", "evictions").expect("counter"),
            },
        )
    };
    let click = |n: u32, ip: u32, count: u32| messages::Click {
        domain: DOMAIN,
        message: "msg-2025-11-24-0001",
        ip: std::net::IpAddr::from(ip.to_be_bytes()),
        link: messages::Link::Index(n % count),
        count: Some(count),
        role: Some(links::Role::Content),
        at_ms: 1_764_000_000_000 + u64::from(n) * 30_000,
        handle: u64::from(n),
    };
    let (first, mut n) = (table(), 0u32);
    g.bench_function("message_first_click", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            first.observe(black_box(&click(0, n, 12)))
        })
    });
    let (same, mut n) = (table(), 0u32);
    g.bench_function("message_same_source", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            same.observe(black_box(&click(n, 7, 1000)))
        })
    });
    g.finish();
}

fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, http::HeaderValue::from_static(v));
    }
    h
}

/// The request handler: what a click costs between hyper's parsed request and its response.
fn bench_handler(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let domain = Domain::parse(DOMAIN).expect("valid domain");
    let store = Arc::new(SqliteStore::in_memory().expect("in-memory store"));
    let policy = Arc::new(Policy::new([domain.clone()], None));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let metrics = Metrics::unregistered();
    let certs = Arc::new(Certs::new(
        CERTS,
        store.clone(),
        Arc::new(
            LocalCa::load_or_create(dir.path(), Zones::reserved(), Clock::system())
                .expect("local CA"),
        ),
        policy.clone(),
        provider.clone(),
        metrics.clone(),
        Clock::system(),
    ));
    // The real writer thread, writing into the temp dir: the handler only queues, but the
    // queue must drain for every click to take the path a served click takes.
    let sink = FileSink::open(
        FileSinkConfig {
            dir: dir.path().join("clicks"),
            ..FileSinkConfig::default()
        },
        metrics.clone(),
        Clock::system(),
    )
    .expect("click sink");
    let (writer, clicks) = ClickWriter::start(
        sink,
        BatchConfig::default(),
        metrics.clone(),
        Clock::system(),
    )
    .expect("click writer");
    let challenges = Arc::new(Challenges::new(
        store,
        policy.clone(),
        provider,
        Clock::system(),
    ));
    let edge_with = |clicks| {
        Edge::new(
            Arc::new(SharedKeyRing::new(ring())),
            clicks,
            certs.clone(),
            policy.clone(),
            challenges.clone(),
            4096,
            &metrics,
        )
    };
    // As a default edge serves: the per-address click rate is looked up for every click (here
    // at a rate every click passes, so each is logged).
    let edge = edge_with(clicks.clone().with_rate_per_address(NonZeroU32::MAX));
    // The same edge judging every click with the default rule set and catalogue (the edge as
    // `serve` runs it): `handle_click_verdict` against `handle_click` is the verdict's cost.
    let judging =
        edge_with(clicks.clone().with_rate_per_address(NonZeroU32::MAX)).with_verdict(Rules::new(
            Arc::new(SharedCatalogue::new(Catalogue::defaults())),
            messages::Config {
                ttl: Duration::from_secs(600),
                max_bytes: 64 << 20,
                idle_expiry: true,
            },
            Timing::default(),
            &metrics,
            Box::new(NoRevisions),
        ));
    // A client past its rate: redirected, not logged.
    let flooded = edge_with(clicks.with_rate_per_address(NonZeroU32::MIN));
    let conn = ConnInfo {
        peer: "203.0.113.7:50000".parse().expect("valid address"),
        sni: Some(domain),
        tls: Some("1.3"),
        tls_fp: None,
    };
    let token = links::seal(&ring(), DOMAIN, &typical_link());
    let click = format!("/c/{token}");
    let forged = format!("/c/{}", forge(&token));
    let request = |path: &str| {
        http::Request::get(path)
            .header(http::header::HOST, DOMAIN)
            .header(
                http::header::USER_AGENT,
                "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
            )
            .header(http::header::REFERER, "https://mail.example.net/")
            .body(String::new())
            .expect("valid request")
    };
    let status = |path: &str| rt.block_on(edge.handle(&conn, request(path))).status();
    assert_eq!(status(&click), http::StatusCode::FOUND);
    assert_eq!(status(&forged), http::StatusCode::NOT_FOUND);

    let mut g = c.benchmark_group("http");
    // Every click is a line on disk: bound the run so the temp dir stays some hundreds of MB.
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    // A valid link: route, Host check, token open, click queued, 302 built. The request is
    // built inside the loop, as hyper hands the handler a new one for every click.
    g.bench_function("handle_click", |b| {
        b.iter_custom(|iters| iter_on(&rt, iters, || edge.handle(&conn, request(&click))))
    });
    g.bench_function("handle_click_verdict", |b| {
        b.iter_custom(|iters| iter_on(&rt, iters, || judging.handle(&conn, request(&click))))
    });
    // A click past its address's rate: the same up to the rate lookup, then 302 with nothing
    // logged (no event built, nothing queued).
    g.bench_function("handle_click_unlogged", |b| {
        b.iter_custom(|iters| iter_on(&rt, iters, || flooded.handle(&conn, request(&click))))
    });
    // A forged token: the same up to the AEAD tag check, then 404 with nothing logged.
    g.bench_function("handle_forged", |b| {
        b.iter_custom(|iters| iter_on(&rt, iters, || edge.handle(&conn, request(&forged))))
    });
    g.finish();
    writer.close();
    // A click dropped at a full queue would have taken a shorter path than a served one.
    println!(
        "http: {} clicks logged, {} dropped, {} unlogged past the rate",
        metrics.clicks_logged.get(),
        metrics.clicks_dropped.get(),
        metrics.clicks_unlogged_rate.get()
    );
}

/// Revisions go nowhere in the benchmark (plain links carry no message).
struct NoRevisions;

impl Revise for NoRevisions {
    fn revise(&self, _: Revision) {}
}

/// A ClientHello as the acceptor reads it: Chromium 148's (1823 bytes, with its post-quantum key
/// share), the sixth real hello in the JA4 test vectors.
fn chromium_hello() -> Vec<u8> {
    let line = include_str!("../src/tls/ja4/vectors.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .nth(5)
        .unwrap();
    let hex = line.split_once(' ').unwrap().0;
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// The fingerprint's cost per handshake: the hello read through the recorder (rustls reads in
/// chunks of up to 4 KiB), then parsed and hashed (`tls/ja4`); and the parse and hash alone.
fn bench_ja4(c: &mut Criterion) {
    use clickedge::tls::{ja4, recorder::Recorder};
    use tokio::io::AsyncReadExt as _;
    let hello = chromium_hello();
    assert!(ja4::fingerprint(&hello).is_some());
    let rt = runtime();
    let mut g = c.benchmark_group("tls");
    g.bench_function("ja4", |b| {
        b.iter_custom(|iters| {
            iter_on(&rt, iters, || async {
                let mut r = Recorder::new(black_box(&hello[..]));
                let mut buf = [0u8; 4096];
                while r.read(&mut buf).await.unwrap() > 0 {}
                let (_, seen) = r.into_parts();
                black_box(seen.as_deref().and_then(ja4::fingerprint));
            })
        })
    });
    g.bench_function("ja4_parse_hash", |b| {
        b.iter(|| ja4::fingerprint(black_box(&hello)))
    });
    g.finish();
}

/// The groups, in a private module: `criterion_group!` defines a `pub fn` it cannot document.
mod groups {
    use super::*;

    criterion_group!(
        benches,
        bench_links,
        bench_domain,
        bench_certs,
        bench_router,
        bench_clicks,
        bench_verdict,
        bench_handler,
        bench_ja4,
        bench_rewrite,
        bench_floor
    );
}
criterion_main!(groups::benches);
