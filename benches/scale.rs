//! Scale bench: memory and certificate cache hit rate of one clickedge holding many registered
//! domains with stored certificates, of which a few are clicked ("hot").
//!
//! ```text
//! cargo bench --bench scale                     # 100 000 domains, 10 000 hot, 20 s of clicks
//! cargo bench --bench scale -- --help           # domains, hot, duration, concurrency, ...
//! ```
//!
//! In order, against the release clickedge pinned to core 0 (this process, the client, pinned to
//! core 1):
//! 1. registers `--domains` names through the admin API, concurrently;
//! 2. gets each its certificate with one TLS handshake per name (the built-in CA issues at the
//!    first handshake; the request is `GET /`, answered 404) and mints one link per hot name;
//! 3. restarts clickedge on the same data dir, as after a deploy: the in-memory certificate
//!    cache is empty and every certificate is in the store; reads the RSS at rest;
//! 4. clicks every hot name once (each a cache miss: a store load), then clicks the hot names
//!    flat out for `--duration`, each click a new connection and a full TLS 1.3 handshake (no
//!    resumption), like an email click; reads the RSS and
//!    `clickedge_certificate_lookups_total{result}`;
//! 5. unless `--no-touch-all`, one handshake to every name, for the RSS with every certificate
//!    in memory (the default `tls.cert_cache_capacity` is 100 000).
//!
//! Every click must be a 302 and be in the click log; every other answer must be the expected
//! 404. Everything is on loopback, in a temp dir removed at the end; clickedge is stopped on
//! drop; every phase is bounded in time. Under `cargo test` (no `--bench` argument) it runs the
//! same phases with 50 domains, 10 hot and 1 s of clicks and checks the outcome, not the timing.

#[path = "support/client.rs"]
#[allow(dead_code)] // shared with the loadgen bench
mod client;
#[path = "scale/edge.rs"]
mod edge;
#[path = "support/hist.rs"]
#[allow(dead_code)] // shared with the loadgen bench
mod hist;
#[path = "support/loadgen.rs"]
#[allow(dead_code)] // shared with the loadgen bench
mod loadgen;
#[path = "support/peers.rs"]
#[allow(dead_code)] // shared with the e2e bench, which also starts nginx and Caddy
mod peers;
#[path = "support/procs.rs"]
#[allow(dead_code)] // shared with the e2e bench
mod procs;
#[path = "support/shares.rs"]
#[allow(dead_code)] // shared with the e2e bench, which uses other parts
mod shares;
#[path = "scale/table.rs"]
mod table;
#[path = "support/targets.rs"]
#[allow(dead_code)] // shared with the loadgen bench
mod targets;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser as _;

use edge::{Edge, timed};
use loadgen::{LoadArgs, Summary};
use peers::Server;
use table::print_table;
use targets::Admin;

/// The server's core and the client's (this process).
const SERVER_CORE: usize = 0;
const CLIENT_CORE: usize = 1;
/// Admin API calls in flight while registering. The admin listener shares clickedge's one core
/// and the store's one SQLite connection, so more would only queue there.
const ADMIN_CONCURRENCY: usize = 32;
/// How long the RSS is left to settle after a start or a run before it is read: past jemalloc's
/// dirty-page decay (10 s), after which its background threads have returned what was freed.
const SETTLE: Duration = Duration::from_secs(12);

/// Scale bench: RSS and certificate cache hit rate with many registered domains, a few hot.
#[derive(clap::Parser)]
#[command(name = "scale")]
struct Opts {
    /// Registered domains, each with a stored certificate (SNI names `links{0..N-1}.example.com`).
    #[arg(long, default_value_t = 100_000)]
    domains: usize,
    /// Hot domains (the first ones), clicked after the restart.
    #[arg(long, default_value_t = 10_000)]
    hot: usize,
    /// Length of the click run over the hot domains.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Requests (new connections) in flight, in every phase.
    #[arg(short = 'c', long, default_value_t = 64)]
    concurrency: usize,
    /// Skip the last phase (one handshake to every domain, for the RSS with all in memory).
    #[arg(long)]
    no_touch_all: bool,
    /// Keep the temp dir (config, logs, store, click log) and print where it is.
    #[arg(long)]
    keep: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The load generator's options, parsed from the arguments each phase builds.
#[derive(clap::Parser)]
#[command(name = "scale loadgen")]
struct LoadCli {
    #[command(flatten)]
    load: LoadArgs,
}

/// What one run of the phases is asked to do.
struct Params {
    domains: usize,
    hot: usize,
    duration: Duration,
    concurrency: usize,
    touch_all: bool,
    /// Pin clickedge to core 0 (this process is pinned by the caller).
    pin: bool,
    /// Progress lines from the load generator on stderr.
    progress: bool,
    /// How long to wait before each RSS reading ([`SETTLE`]; none in the smoke run).
    settle: Duration,
}

/// Server CPU and wall time of one phase.
#[derive(Debug, Default, Clone, Copy)]
struct Timed {
    wall_s: f64,
    server_cpu_s: f64,
    /// The client core's busy share over the phase.
    client_busy: f64,
}

/// `clickedge_certificate_lookups_total{result}`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Lookups {
    hit: u64,
    miss: u64,
}

impl Lookups {
    fn since(self, before: Lookups) -> Lookups {
        Lookups {
            hit: self.hit - before.hit,
            miss: self.miss - before.miss,
        }
    }

    fn rate(self) -> f64 {
        self.hit as f64 / (self.hit + self.miss).max(1) as f64
    }
}

/// Everything the table shows.
#[derive(Debug, Default)]
struct Report {
    register: Timed,
    mint: Timed,
    issue: Timed,
    issued: u64,
    rss_issued_kib: u64,
    store_bytes: u64,
    restart_s: f64,
    rss_rest_kib: u64,
    list: Timed,
    list_bytes: usize,
    first_pass: Timed,
    first_pass_lookups: Lookups,
    run: Timed,
    run_summary: Option<Summary>,
    run_lookups: Lookups,
    rss_hot_kib: u64,
    touch: Option<(Timed, Lookups, u64)>,
    failures: u64,
    clicks_sent: u64,
    clicks_logged: u64,
    dropped: String,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        smoke();
        return;
    }
    let opts = Opts::parse();
    if let Err(e) = bench(&opts) {
        eprintln!("scale: {e}");
        std::process::exit(1);
    }
}

fn bench(opts: &Opts) -> Result<(), String> {
    if opts.domains == 0 || opts.hot == 0 || opts.hot > opts.domains {
        return Err(format!(
            "--hot {} with --domains {}: the hot domains are some of the registered ones; give 1 ≤ --hot ≤ --domains",
            opts.hot, opts.domains
        ));
    }
    if opts.concurrency == 0 {
        return Err("--concurrency 0: give at least 1 request in flight".into());
    }
    let started = Instant::now();
    let pin = procs::installed("taskset").is_some() && pin_self(CLIENT_CORE);
    if !pin {
        eprintln!(
            "scale: taskset not found (package util-linux): server and client are NOT pinned; figures will be noisy"
        );
    }
    let tmp = tempfile::Builder::new()
        .prefix("clickedge-scale-")
        .tempdir()
        .map_err(|e| format!("creating a temp dir: {e}"))?;
    let params = Params {
        domains: opts.domains,
        hot: opts.hot,
        duration: opts.duration,
        concurrency: opts.concurrency,
        touch_all: !opts.no_touch_all,
        pin,
        progress: true,
        settle: SETTLE,
    };
    let report = run(&params, tmp.path())?;
    print_table(&params, &report);
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    if opts.keep {
        println!("kept {}", tmp.keep().display());
    }
    Ok(())
}

/// Pins this process (every thread: none but this one exists yet) to `core`.
fn pin_self(core: usize) -> bool {
    std::process::Command::new("taskset")
        .args([
            "-a",
            "-c",
            "-p",
            &core.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `jobs` admin calls, `ADMIN_CONCURRENCY` at a time, stopping at the first failure.
async fn in_parallel<F, Fut>(admin: &Admin, jobs: usize, f: F) -> Result<(), String>
where
    F: Fn(Admin, usize) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0;
    while next < jobs || !set.is_empty() {
        while next < jobs && set.len() < ADMIN_CONCURRENCY {
            set.spawn(f(admin.clone(), next));
            next += 1;
        }
        if let Some(done) = set.join_next().await {
            done.map_err(|e| format!("admin call panicked: {e}"))??;
        }
    }
    Ok(())
}

/// One load generator run of new connections (HTTP/1.1, X25519, TLS 1.3, no resumption) over
/// `pairs`, in this process.
fn load(
    rt: &tokio::runtime::Runtime,
    p: &Params,
    target: SocketAddr,
    ca: &Path,
    pairs: &[(String, String)],
    extra: &[&str],
) -> Result<Summary, String> {
    let mut argv: Vec<String> = [
        "loadgen",
        "--target",
        &target.to_string(),
        "--ca",
        &ca.display().to_string(),
        "--mode",
        "new-conn",
        "--http",
        "1.1",
        "--kx",
        "x25519",
        "--timeout",
        "30s",
        "-c",
        &p.concurrency.to_string(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    if !p.progress {
        argv.push("--no-progress".into());
    }
    argv.extend(extra.iter().map(|a| a.to_string()));
    let cli = LoadCli::try_parse_from(&argv).map_err(|e| format!("{argv:?}: {e}"))?;
    let plan = loadgen::Plan::with_pairs(cli.load, pairs)?;
    Ok(rt.block_on(plan.run()))
}

/// Fails unless every request got the expected status, with the tail of clickedge's log.
fn all_ok(edge: &Edge, what: &str, s: &Summary, expected: u64) -> Result<(), String> {
    if s.ok == s.requests && s.requests == expected {
        Ok(())
    } else {
        Err(format!(
            "{what}: {} of {expected} requests answered as expected:\n{}\nclickedge's log:\n{}",
            s.ok,
            s.text(),
            edge.server.proc.log_tail()
        ))
    }
}

/// The phases, in `dir`; clickedge is stopped when this returns.
fn run(p: &Params, dir: &Path) -> Result<Report, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let names: Vec<String> = (0..p.domains)
        .map(|i| format!("links{i}.example.com"))
        .collect();
    let edge_dir = dir.join("clickedge");
    let mut report = Report::default();
    let mut edge = Edge::start(&edge_dir, p.pin)?;
    let ca = edge.data.join("ca.pem");

    // 1. Register.
    eprintln!("scale: registering {} domains", p.domains);
    let ((), t) = timed(&edge, || {
        let names: std::sync::Arc<[String]> = names.clone().into();
        let bound = Duration::from_secs(60 + p.domains as u64 / 100);
        rt.block_on(async {
            tokio::time::timeout(
                bound,
                in_parallel(&edge.admin, names.len(), |admin, i| {
                    let names = names.clone();
                    async move { admin.add_domain(&names[i]).await }
                }),
            )
            .await
            .map_err(|_| format!("registering {} domains took over {bound:?}", p.domains))?
        })
    })?;
    report.register = t;
    eprintln!(
        "scale: registered {} domains in {:.1} s ({:.0}/s)",
        p.domains,
        t.wall_s,
        p.domains as f64 / t.wall_s
    );

    // 2. One handshake per name: the certificate is issued and stored.
    eprintln!(
        "scale: one TLS handshake to each of {} domains (certificates issued)",
        p.domains
    );
    let pairs: Vec<(String, String)> = names.iter().map(|n| (n.clone(), "/".into())).collect();
    let n = p.domains.to_string();
    let bound = format!("{}s", 120 + p.domains / 20);
    let (s, t) = timed(&edge, || {
        load(
            &rt,
            p,
            edge.https(),
            &ca,
            &pairs,
            &["-n", &n, "--expect-status", "404", "--duration", &bound],
        )
    })?;
    edge.check_alive()?;
    all_ok(&edge, "issuing", &s, p.domains as u64)?;
    report.failures += s.bad();
    report.issue = t;
    report.issued = s.ok;
    eprintln!(
        "scale: {} certificates in {:.1} s ({:.0}/s, {:.0} µs of server CPU each)",
        s.ok,
        t.wall_s,
        s.ok as f64 / t.wall_s,
        t.server_cpu_s * 1e6 / s.ok.max(1) as f64
    );
    report.rss_issued_kib = edge.rss_settled(p.settle);

    eprintln!("scale: minting one link for each of {} hot domains", p.hot);
    let hot = &names[..p.hot];
    let (links, t) = timed(&edge, || {
        rt.block_on(async {
            let bound = Duration::from_secs(60 + p.hot as u64 / 100);
            tokio::time::timeout(bound, edge.admin.mint_all(hot, 1, false))
                .await
                .map_err(|_| format!("minting {} links took over {bound:?}", p.hot))?
        })
    })?;
    report.mint = t;

    // 3. Restart: cold cache, everything in the store.
    eprintln!("scale: restarting clickedge on the same data dir");
    drop(edge);
    report.store_bytes = dir_bytes(&edge_dir.join("data"));
    let t0 = Instant::now();
    let mut edge = Edge::start(&edge_dir, p.pin)?;
    rt.block_on(async {
        let url = format!(
            "http://{}/healthz",
            edge.server.admin.unwrap_or(edge.https())
        );
        reqwest::get(&url)
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("GET {url} after the restart: {e}"))
    })?;
    report.restart_s = t0.elapsed().as_secs_f64();
    report.rss_rest_kib = edge.rss_settled(p.settle);
    let at_rest = rt.block_on(edge.lookups())?;
    if at_rest != Lookups::default() {
        return Err(format!(
            "certificate lookups before any handshake: {at_rest:?}"
        ));
    }

    // The operator's view of them all, every domain with its certificate's status.
    eprintln!("scale: listing every domain (GET /v1/domains)");
    let (listed, t) = timed(&edge, || {
        rt.block_on(async {
            let bound = Duration::from_secs(60 + p.domains as u64 / 1000);
            tokio::time::timeout(bound, edge.admin.get("/v1/domains"))
                .await
                .map_err(|_| format!("listing the domains took over {bound:?}"))?
        })
    })?;
    let listed = listed.as_array().cloned().unwrap_or_default();
    if listed.len() != p.domains {
        return Err(format!(
            "GET /v1/domains listed {} of {} domains",
            listed.len(),
            p.domains
        ));
    }
    report.list = t;
    report.list_bytes = serde_json::to_string(&listed).map_or(0, |s| s.len());

    // 4. The hot names: once each (cold), then flat out.
    eprintln!("scale: clicking each of {} hot domains once", p.hot);
    let h = p.hot.to_string();
    let (s, t) = timed(&edge, || {
        load(
            &rt,
            p,
            edge.https(),
            &ca,
            &links,
            &["-n", &h, "--duration", &bound, "--insecure-no-verify"],
        )
    })?;
    edge.check_alive()?;
    all_ok(&edge, "first pass over the hot domains", &s, p.hot as u64)?;
    report.first_pass = t;
    report.clicks_sent += s.ok;
    let after_first = rt.block_on(edge.lookups())?;
    report.first_pass_lookups = after_first;

    eprintln!(
        "scale: clicking the {} hot domains for {:?}",
        p.hot, p.duration
    );
    let d = format!("{}ms", p.duration.as_millis());
    let (s, t) = timed(&edge, || {
        load(
            &rt,
            p,
            edge.https(),
            &ca,
            &links,
            &["--duration", &d, "--insecure-no-verify"],
        )
    })?;
    edge.check_alive()?;
    report.failures += s.bad();
    report.clicks_sent += s.ok;
    report.run = t;
    report.run_lookups = rt.block_on(edge.lookups())?.since(after_first);
    report.rss_hot_kib = edge.rss_settled(p.settle);
    if s.requests == 0 || s.bad() > 0 {
        return Err(format!(
            "the click run had {} failures in {} requests:\n{}",
            s.bad(),
            s.requests,
            s.text()
        ));
    }
    report.run_summary = Some(s);

    // 5. Every name once: every certificate in memory.
    if p.touch_all {
        eprintln!("scale: one handshake to each of {} domains", p.domains);
        let before = rt.block_on(edge.lookups())?;
        let (s, t) = timed(&edge, || {
            load(
                &rt,
                p,
                edge.https(),
                &ca,
                &pairs,
                &[
                    "-n",
                    &n,
                    "--expect-status",
                    "404",
                    "--duration",
                    &bound,
                    "--insecure-no-verify",
                ],
            )
        })?;
        edge.check_alive()?;
        all_ok(&edge, "touching every domain", &s, p.domains as u64)?;
        let lookups = rt.block_on(edge.lookups())?.since(before);
        report.touch = Some((t, lookups, edge.rss_settled(p.settle)));
    }

    let (logged, dropped) = count_clicks(&rt, &edge, report.clicks_sent)?;
    report.clicks_logged = logged;
    report.dropped = dropped;
    edge.server.proc.stop(Duration::from_secs(10));
    Ok(report)
}

/// Polls the click log until it holds `sent` lines (or 20 s pass); returns the lines and
/// `clickedge_clicks_dropped_total`.
fn count_clicks(
    rt: &tokio::runtime::Runtime,
    edge: &Edge,
    sent: u64,
) -> Result<(u64, String), String> {
    let dir = edge.data.join("clicks");
    let lines = peers::wait_for_click_lines(&dir, sent);
    let metrics = rt.block_on(edge.metrics())?;
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("clickedge_clicks_dropped_total "))
        .map_or_else(|| "?".into(), |v| v.trim().to_owned());
    Ok((lines, dropped))
}

/// Bytes of the files under `dir` (the store and the click log).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// `cargo test`: the same phases with tiny numbers, not pinned; checks outcomes, not timing.
fn smoke() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let p = Params {
        domains: 50,
        hot: 10,
        duration: Duration::from_secs(1),
        concurrency: 8,
        touch_all: true,
        pin: false,
        progress: false,
        settle: Duration::ZERO,
    };
    let r = run(&p, tmp.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.issued, 50);
    assert_eq!(r.failures, 0, "{r:?}");
    assert_eq!(
        r.first_pass_lookups,
        Lookups { hit: 0, miss: 10 },
        "after a restart, each hot domain's first handshake loads its certificate"
    );
    assert!(r.run_lookups.hit > 0, "{r:?}");
    assert_eq!(
        r.run_lookups.miss, 0,
        "hot certificates stay in memory: {r:?}"
    );
    let (_, touched, _) = r.touch.expect("touch-all ran");
    assert_eq!(touched, Lookups { hit: 10, miss: 40 });
    assert!(r.clicks_sent > 10);
    assert_eq!(r.clicks_sent, r.clicks_logged, "every click logged: {r:?}");
    assert_eq!(r.dropped, "0");
    print_table(&p, &r);
    println!(
        "scale smoke: {} clicks answered and logged (figures are only measured by `cargo bench --bench scale`)",
        r.clicks_sent
    );
}
