//! End-to-end bench: server CPU per click of clickedge against nginx and Caddy, side by side in
//! one run, with the method of PERFORMANCE.md.
//!
//! ```text
//! cargo bench --bench e2e                       # 3 rounds of 5 s runs, a few minutes
//! cargo bench --bench e2e -- --help             # rounds, duration, rate, servers, ...
//! ```
//!
//! Each server is pinned to core 0 and driven from core 1 by this bench's own load generator
//! (the `loadgen` bench's code, run as a child process `e2e loadgen ...`). Server CPU is the
//! utime + stime of its whole process tree from `/proc`, before and after each run, divided by
//! the 302s received. Resumption is off on every side: clickedge `tls.session_resumption =
//! false`, nginx `ssl_session_cache off; ssl_session_tickets off`, Caddy's session tickets
//! disabled, and the client's rustls `Resumption::disabled()`; the client counts resumed
//! handshakes, and there must be none.
//!
//! In the flat-out new-connection runs the client offers key shares it generated at the start
//! (256 sets taken in turn, `--reuse-key-shares`) and skips certificate checks: a handshake
//! then costs the client about what it costs clickedge, and one client core keeps one server
//! core busy, so that a fast server is measured saturated, as a slow one is, rather than paying
//! for sleeping and being woken between clicks. The server's work per handshake does not change
//! (it generates its own share and computes the whole key exchange every time). The run at a
//! fixed rate (`--rate`, 500/s by default) is a browser's handshake: fresh shares, certificates
//! checked.
//!
//! After the rounds, latency near saturation: each server gets new-connection clicks at 80%
//! (`--near-saturation`) of its own median flat-out X25519 rate, certificates not verified and
//! key shares reused so that the load generator's core is not the one saturated; its busy share
//! is in the table.
//!
//! Everything is on loopback, in temp dirs removed at the end; every child is stopped on drop;
//! every run is bounded in time. Under `cargo test` (no `--bench` argument) it only runs a quick
//! functional pass against clickedge: every request answered 302 and logged; no timing is
//! checked.

#[path = "e2e/checks.rs"]
mod checks;
#[path = "support/client.rs"]
#[allow(dead_code)] // shared with the loadgen bench
mod client;
#[path = "support/hist.rs"]
#[allow(dead_code)] // shared with the loadgen bench
mod hist;
#[path = "e2e/install.rs"]
mod install;
#[path = "support/loadgen.rs"]
#[allow(dead_code)] // shared with the loadgen bench
mod loadgen;
#[path = "support/measure.rs"]
mod measure;
#[path = "support/peers.rs"]
mod peers;
#[path = "support/procs.rs"]
mod procs;
#[path = "support/report.rs"]
mod report;
#[path = "support/shares.rs"]
mod shares;
#[path = "support/targets.rs"]
#[allow(dead_code)] // shared with the loadgen bench
mod targets;
#[path = "e2e/workloads.rs"]
mod workloads;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser as _;

use checks::{check_clicks, clickedge_only, hold_idle};
use install::ensure_peers;
use loadgen::LoadArgs;
use measure::{Target, run_load, run_workload};
use peers::Server;
use report::{Once, Sample};
use workloads::{NEAR_SATURATION, WORKLOADS, Workload};

/// The server's core and the load generator's.
const SERVER_CORE: usize = 0;
const CLIENT_CORE: usize = 1;

/// End-to-end bench: clickedge, nginx and Caddy under the same load, one table.
#[derive(clap::Parser)]
#[command(name = "e2e")]
struct Opts {
    /// Rounds; the table shows the median and min–max of the rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Length of each load run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The fixed rate of the latency run (new connections), requests per second.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// After the rounds, one more new-connection run per round and server at this fraction of
    /// that server's median flat-out X25519 rate, certificates not verified (the load
    /// generator then needs less CPU per click than the server): latency near saturation.
    /// 0 skips it.
    #[arg(long, default_value_t = 0.8)]
    near_saturation: f64,
    /// Link domains registered on clickedge (SNI names `links{0..N-1}.example.com`).
    #[arg(long, default_value_t = 100)]
    domains: usize,
    /// Links minted per domain.
    #[arg(long, default_value_t = 5)]
    links_per_domain: usize,
    /// Idle TLS connections opened for the memory figure (0: skip it).
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Servers to run, in column order.
    #[arg(long, value_delimiter = ',', default_value = "clickedge,nginx,caddy")]
    servers: Vec<String>,
    /// Do not install missing peers even when running as root (skip their columns instead).
    #[arg(long)]
    no_install: bool,
    /// Also write every sample as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Stream clickedge's clicks to a local `nats-server -js` (`clicks.stream = "nats"`, the
    /// broker pinned beside the load generator); after the runs, wait for the shipper to drain
    /// and report it.
    #[arg(long)]
    nats: bool,
    /// Keep the temp dir (configs, logs, click files) and print where it is.
    #[arg(long)]
    keep: bool,
    /// Give the server and the load generator both cores (nothing pinned; the load generator
    /// runs two threads): how a server scales past one core. The busy columns then read core 0
    /// for both.
    #[arg(long)]
    both_cores: bool,
    /// clickedge's `listen.https_threads` (0, its default: HTTPS on the shared runtime; N: N
    /// threads of its own, one socket each). With `--both-cores`, 2 is one per core.
    #[arg(long, value_name = "N", default_value_t = 0)]
    https_threads: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// `e2e loadgen ...`: the load generator, as the child process of a run.
#[derive(clap::Parser)]
#[command(name = "e2e loadgen")]
struct LoadCli {
    #[command(flatten)]
    load: LoadArgs,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("loadgen") {
        let cli = LoadCli::parse_from(&args[1..]);
        match loadgen::run_blocking(cli.load) {
            Ok(summary) => println!(
                "{}",
                serde_json::to_string(&summary).expect("summary serialises")
            ),
            Err(e) => {
                eprintln!("loadgen: {e}");
                std::process::exit(2);
            }
        }
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        smoke();
        return;
    }
    let opts = Opts::parse();
    if let Err(e) = bench(&opts) {
        eprintln!("e2e: {e}");
        std::process::exit(1);
    }
}

fn bench(opts: &Opts) -> Result<(), String> {
    let started = Instant::now();
    let pin = !opts.both_cores && procs::installed("taskset").is_some();
    if !pin && !opts.both_cores {
        eprintln!(
            "e2e: taskset not found (package util-linux): server and client are NOT pinned; figures will be noisy"
        );
    }
    let servers = ensure_peers(opts);
    let nofile = procs::raise_nofile(opts.idle as u64 * 2 + 2048);
    let idle = if opts.idle > 0 && nofile < opts.idle as u64 + 1024 {
        let n = nofile.saturating_sub(1024) as usize;
        eprintln!(
            "e2e: open-files limit {nofile}: holding {n} idle connections instead of {} (raise `ulimit -n`)",
            opts.idle
        );
        n
    } else {
        opts.idle
    };
    let tmp = tempfile::Builder::new()
        .prefix("clickedge-e2e-")
        .tempdir()
        .map_err(|e| format!("creating a temp dir: {e}"))?;
    let dir = tmp.path().to_path_buf();
    let cert = peers::TestCert::generate(&dir)?;
    let names: Vec<String> = (0..opts.domains)
        .map(|i| format!("links{i}.example.com"))
        .collect();
    let nats = match opts.nats {
        // The broker stands for another machine: off the server's core, beside the load
        // generator, so the server's core does only the edge's work.
        true => Some(peers::nats_server(
            &dir.join("nats"),
            pin.then_some(CLIENT_CORE),
        )?),
        false => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let run = Run {
        opts,
        exe: std::env::current_exe().map_err(|e| e.to_string())?,
        pin,
        nofile,
        urls: dir.join("urls.txt"),
        roots: dir.join("roots.pem"),
    };
    let stream = nats.as_ref().map(|(_, url)| url.as_str());
    let mut running = run.start(&servers, &dir, &cert, &names, stream, &rt)?;

    let mut clicks_sent: u64 = 0;
    let mut samples: Vec<Sample> = Vec::new();
    for s in &mut running {
        clicks_sent += run.prewarm(s, names.len())?;
    }
    clicks_sent += run.rounds(&mut running, &mut samples)?;
    if opts.near_saturation > 0.0 {
        clicks_sent += run.near_saturation(&mut running, &mut samples)?;
    }
    let mut once: BTreeMap<&'static str, Once> = BTreeMap::new();
    for s in &running {
        once.entry(s.name).or_default().rss_after_kib = s.proc.rss_kib();
    }
    if idle > 0 {
        for s in &mut running {
            match hold_idle(&run.exe, s, &run.urls, &run.roots, idle, pin) {
                Ok((per_10k, held, ok)) => {
                    let o = once.entry(s.name).or_default();
                    o.idle_rss_per_10k_kib = Some(per_10k);
                    o.idle_held = held;
                    if s.name == "clickedge" {
                        clicks_sent += ok;
                    }
                }
                Err(e) => eprintln!("e2e: {}: idle connections: {e}", s.name),
            }
        }
    }
    let click_check = match running.iter().find(|s| s.name == "clickedge") {
        Some(s) => Some(check_clicks(&rt, s, clicks_sent, nats.is_some())?),
        None => None,
    };

    println!();
    println!(
        "clickedge e2e: {} round(s) of {:.0} s runs, {}{}, {} names, {} links; {}",
        opts.rounds,
        opts.duration.as_secs_f64(),
        match (pin, opts.both_cores) {
            (true, _) =>
                format!("server on core {SERVER_CORE}, load generator on core {CLIENT_CORE}"),
            (false, true) => "server and load generator sharing both cores (--both-cores)".into(),
            (false, false) => "NOT pinned: taskset missing".into(),
        },
        match opts.https_threads {
            0 => String::new(),
            n => format!(", clickedge with listen.https_threads = {n}"),
        },
        names.len(),
        names.len() * opts.links_per_domain,
        procs::cpu_model(),
    );
    println!(
        "cells: median (min–max) of the rounds; ratios: clickedge's median over the peer's (CPU and latency: lower is better for clickedge below ×1)"
    );
    println!();
    let rows = report::rows(opts.rate, opts.near_saturation);
    print!("{}", report::table(&servers, &rows, &samples, &once));
    println!();
    let flat_out = |key: &str| WORKLOADS.iter().any(|w| w.key == key && !w.fixed_rate);
    for note in report::notes(&servers, &samples, &once, idle as u64, flat_out) {
        println!("{note}");
    }
    if let Some(c) = click_check {
        println!("{c}");
    }
    if let Some(path) = &opts.json {
        let all = serde_json::json!({ "samples": samples, "once": once });
        std::fs::write(
            path,
            serde_json::to_string_pretty(&all).expect("serialises"),
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    drop(running);
    if opts.keep {
        let kept = tmp.keep();
        println!("kept {}", kept.display());
    }
    Ok(())
}

/// What every part of a bench run shares: the options, the load generator (this executable),
/// whether it is pinned, the open-files limit, and the URLs and trusted roots every server is clicked with.
struct Run<'a> {
    opts: &'a Opts,
    exe: PathBuf,
    pin: bool,
    /// The open-files limit, raised for the idle connections.
    nofile: u64,
    urls: PathBuf,
    roots: PathBuf,
}

impl Run<'_> {
    fn target<'s>(&'s self, server: &'s mut Server) -> Target<'s> {
        Target {
            server,
            urls: &self.urls,
            roots: &self.roots,
        }
    }

    /// Starts `servers` under `dir`, pinned to the server core; clickedge (its clicks streamed to
    /// the NATS server at `stream`, if any) gets `names` registered and links minted, written
    /// to the URL file. Without clickedge, the peers are clicked on plain paths under `names`.
    fn start(
        &self,
        servers: &[&'static str],
        dir: &Path,
        cert: &peers::TestCert,
        names: &[String],
        stream: Option<&str>,
        rt: &tokio::runtime::Runtime,
    ) -> Result<Vec<Server>, String> {
        let core = self.pin.then_some(SERVER_CORE);
        let stream_config = stream.map_or_else(String::new, |url| {
            format!("stream = \"nats\"\nnats_url = \"{url}\"\n")
        });
        let mut running = Vec::new();
        for name in servers {
            running.push(match *name {
                "clickedge" => {
                    let s = peers::clickedge_with(
                        env!("CARGO_BIN_EXE_clickedge"),
                        &dir.join("clickedge"),
                        core,
                        &format!("https_threads = {}\n", self.opts.https_threads),
                        &stream_config,
                    )?;
                    self.mint(&s, cert, names, rt)?;
                    s
                }
                "nginx" => peers::nginx(cert, &dir.join("nginx"), core, self.nofile)?,
                _ => peers::caddy(cert, &dir.join("caddy"), core)?,
            });
        }
        if !servers.contains(&"clickedge") {
            // The peers answer any path: request plain paths under the same names.
            let text: String = names
                .iter()
                .map(|h| format!("https://{h}/c/bench\n"))
                .collect();
            std::fs::write(&self.urls, text).map_err(|e| e.to_string())?;
            std::fs::copy(&cert.ca, &self.roots).map_err(|e| e.to_string())?;
        }
        Ok(running)
    }

    /// Registers `names` on clickedge `s` and mints its links into the URL file; the roots
    /// trusted are its own CA's and the peers' test CA.
    fn mint(
        &self,
        s: &Server,
        cert: &peers::TestCert,
        names: &[String],
        rt: &tokio::runtime::Runtime,
    ) -> Result<(), String> {
        let data = s.data_dir.clone().expect("clickedge has a data dir");
        let token = std::fs::read_to_string(data.join("admin-token"))
            .map_err(|e| format!("reading clickedge's admin token: {e}"))?;
        let admin = targets::Admin::new(&format!("http://{}", s.admin.expect("admin")), &token);
        let per_domain = self.opts.links_per_domain;
        eprintln!(
            "e2e: registering {} domains, minting {} links",
            names.len(),
            names.len() * per_domain
        );
        let pairs = rt.block_on(admin.mint_all(names, per_domain, true))?;
        let text: String = pairs
            .iter()
            .map(|(h, p)| format!("https://{h}{p}\n"))
            .collect();
        std::fs::write(&self.urls, text).map_err(|e| e.to_string())?;
        let mut pem = std::fs::read_to_string(data.join("ca.pem")).map_err(|e| e.to_string())?;
        pem.push_str(&std::fs::read_to_string(&cert.ca).map_err(|e| e.to_string())?);
        std::fs::write(&self.roots, pem).map_err(|e| e.to_string())
    }

    /// Warm-up and check: each of the `names` names once, certificates verified (clickedge
    /// issues them here); every click must answer 302. Returns clickedge's clicks.
    fn prewarm(&self, s: &mut Server, names: usize) -> Result<u64, String> {
        eprintln!(
            "e2e: {}: pre-warming {names} names (certificates verified)",
            s.name
        );
        let extra: Vec<String> = "--mode new-conn --kx x25519 -c 8 --timeout 30s"
            .split_whitespace()
            .map(String::from)
            .chain(["-n".into(), names.to_string()])
            .collect();
        let mut t = self.target(s);
        let (summary, ..) = run_load(
            &self.exe,
            &mut t,
            &extra,
            Duration::from_secs(120),
            self.pin,
        )?;
        if summary.ok != names as u64 {
            return Err(format!(
                "{}: pre-warm answered {} of {names} with 302:\n{}",
                s.name,
                summary.ok,
                summary.text()
            ));
        }
        Ok(clickedge_only(s, summary.ok))
    }

    /// Every workload against every server, `opts.rounds` times, the servers' order rotated
    /// each round so that a slow drift of the machine favours none. Returns clickedge's clicks.
    fn rounds(&self, running: &mut [Server], samples: &mut Vec<Sample>) -> Result<u64, String> {
        let mut clicks = 0;
        for round in 0..self.opts.rounds {
            let n = running.len();
            for k in 0..n {
                let s = &mut running[(k + round) % n];
                for w in WORKLOADS {
                    let rate = w.fixed_rate.then_some(self.opts.rate);
                    let (smp, ok) = self.workload(s, w, rate, round)?;
                    clicks += clickedge_only(s, ok);
                    samples.push(smp);
                }
            }
        }
        Ok(clicks)
    }

    /// Latency near saturation: each server at `opts.near_saturation` of its own median
    /// flat-out X25519 rate in `samples`, as many rounds. Returns clickedge's clicks.
    fn near_saturation(
        &self,
        running: &mut [Server],
        samples: &mut Vec<Sample>,
    ) -> Result<u64, String> {
        let flat_out: BTreeMap<&str, f64> = running
            .iter()
            .map(|s| {
                let rates: Vec<f64> = samples
                    .iter()
                    .filter(|x| x.server == s.name && x.workload == "new-x25519")
                    .map(|x| x.rate)
                    .collect();
                (s.name, report::median(rates).unwrap_or(0.0))
            })
            .collect();
        let mut clicks = 0;
        for round in 0..self.opts.rounds {
            let n = running.len();
            for k in 0..n {
                let s = &mut running[(k + round) % n];
                let rate = (flat_out[s.name] * self.opts.near_saturation).round();
                if rate < 1.0 {
                    eprintln!(
                        "e2e: {}: no flat-out X25519 rate measured, no run near saturation",
                        s.name
                    );
                    continue;
                }
                let (smp, ok) = self.workload(s, &NEAR_SATURATION, Some(rate), round)?;
                clicks += clickedge_only(s, ok);
                samples.push(smp);
            }
        }
        Ok(clicks)
    }

    fn workload(
        &self,
        s: &mut Server,
        w: &Workload,
        rate: Option<f64>,
        round: usize,
    ) -> Result<(Sample, u64), String> {
        let mut t = self.target(s);
        run_workload(&self.exe, &mut t, w, rate, round, self.opts, self.pin)
    }
}

/// `cargo test`: a quick functional pass against clickedge only (no peers, no pinning, no timing).
fn smoke() {
    shares::check().unwrap_or_else(|e| panic!("reused key shares: {e}"));
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut edge = peers::clickedge(
        env!("CARGO_BIN_EXE_clickedge"),
        &tmp.path().join("clickedge"),
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let data = edge.data_dir.clone().expect("data dir");
    let token = std::fs::read_to_string(data.join("admin-token")).expect("admin token");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let admin = targets::Admin::new(&format!("http://{}", edge.admin.expect("admin")), &token);
    let names = vec![
        "links0.example.com".to_owned(),
        "links1.example.com".to_owned(),
    ];
    let pairs = rt
        .block_on(admin.mint_all(&names, 2, true))
        .unwrap_or_else(|e| panic!("{e}"));
    let ca = data.join("ca.pem");
    // Each run: load generator arguments, split at spaces.
    let runs = [
        "--mode new-conn --http 1.1 -n 8",
        "--mode new-conn --http 1.1 --kx x25519 -n 4 --rate 200",
        "--mode new-conn --http 2 -n 4",
        // Key shares generated once and offered again, as in the flat-out runs.
        "--mode new-conn --http 1.1 -n 8 --reuse-key-shares",
        "--mode new-conn --http 1.1 --kx x25519 -n 4 --reuse-key-shares",
        "--mode keep-alive --http 1.1 -n 8 -c 2",
        "--mode keep-alive --http 2 -n 8 -c 4 --connections 2",
        "--mode hold --http 2 --connections 3 --duration 0s",
    ];
    let mut sent = 0;
    for extra in runs {
        let mut argv = vec![
            "loadgen".to_owned(),
            "--target".into(),
            edge.https.to_string(),
        ];
        argv.extend([
            "--ca".into(),
            ca.display().to_string(),
            "--no-progress".into(),
        ]);
        argv.extend(extra.split_whitespace().map(String::from));
        let cli = LoadCli::parse_from(&argv);
        let summary = rt.block_on(async {
            loadgen::Plan::with_pairs(cli.load, &pairs)
                .unwrap_or_else(|e| panic!("{e}"))
                .run()
                .await
        });
        assert!(
            summary.ok == summary.requests
                && summary.ok > 0
                && !summary.handshakes.contains_key("resumed"),
            "{extra:?}:\n{}\n{}",
            summary.text(),
            edge.proc.log_tail()
        );
        // Each run's key share is the one it offered first, reused or not.
        let kx = if extra.split_whitespace().any(|a| a == "x25519") {
            "X25519 "
        } else {
            "X25519MLKEM768 "
        };
        assert!(
            !summary.kx_groups.is_empty() && summary.kx_groups.keys().all(|g| g.starts_with(kx)),
            "{extra:?}: negotiated {:?}",
            summary.kx_groups
        );
        sent += summary.ok;
    }
    let check = check_clicks(&rt, &edge, sent, false).unwrap_or_else(|e| panic!("{e}"));
    assert!(check.contains("every click logged"), "{check}");
    edge.proc.stop(Duration::from_secs(10));
    println!(
        "e2e smoke: {sent} clicks answered and logged (timings are only measured by `cargo bench --bench e2e`)"
    );
}
