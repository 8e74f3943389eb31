//! The load generator: many SNI names, new connection per request (no resumption) or kept-alive
//! HTTP/1.1 or h2, post-quantum or classical key share, open-loop fixed rate or flat out, bounded
//! by a request count and/or a duration, progress once a second on stderr, and a summary
//! (requests, errors by kind, rate, latency quantiles).
//!
//! Coordinated omission: at a fixed rate, request `i` is due at `start + i / rate`, and its
//! latency is measured from that due time, not from when a worker got round to sending it; a
//! stalled server therefore shows in the latency instead of silently lowering the rate. The
//! "service time" (from the actual send) is reported beside it.
//!
//! Workers take request numbers from one shared counter, so a count bound is exact and every
//! name and link is used in turn. Nothing here starts or measures the server.

#[path = "loadgen/args.rs"]
mod args;
#[path = "loadgen/summary.rs"]
mod summary;

pub use args::{HttpVersion, LoadArgs, Mode};
pub use summary::Summary;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;

use crate::client::{self, Fail, Failure, H2, Tls, TlsOptions};
use crate::hist::Histogram;
use crate::targets::{self, Admin, Name};

/// Everything a run needs, resolved from [`LoadArgs`].
pub struct Plan {
    target: SocketAddr,
    names: Vec<Name>,
    /// New-connection order: `(name, path)` with names interleaved.
    order: Vec<(usize, usize)>,
    connector: TlsConnector,
    alpn: &'static [u8],
    args: LoadArgs,
}

impl Plan {
    /// Reads files, mints links if asked, builds the TLS configuration.
    pub async fn new(args: LoadArgs) -> Result<Plan, String> {
        let mut names = Vec::new();
        for p in &args.sni {
            names.extend(targets::expand(p)?);
        }
        if let Some(f) = &args.sni_file {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            names.extend(targets::names_from_text(&text)?);
        }
        let pairs: Vec<(String, String)> = if let Some(f) = &args.urls_file {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            targets::urls_from_text(&text)?
        } else if let Some(base) = &args.mint_admin {
            let token = match (&args.admin_token, &args.admin_token_file) {
                (Some(t), _) => t.clone(),
                (None, Some(f)) => {
                    std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?
                }
                (None, None) => {
                    return Err("--mint-admin needs --admin-token or --admin-token-file".into());
                }
            };
            if names.is_empty() {
                return Err("--mint-admin mints under the --sni names: give some".into());
            }
            eprintln!(
                "minting {} links under {} names",
                names.len() * args.mint_per_name,
                names.len()
            );
            Admin::new(base, &token)
                .mint_all(&names, args.mint_per_name.max(1), args.register)
                .await?
        } else {
            let paths = if args.paths.is_empty() {
                vec!["/".to_owned()]
            } else {
                args.paths.clone()
            };
            paths
                .iter()
                .flat_map(|p| {
                    names
                        .iter()
                        .map(move |n| (n.to_ascii_lowercase(), p.clone()))
                })
                .collect()
        };
        if let Some(f) = &args.write_urls {
            let text: String = pairs
                .iter()
                .map(|(h, p)| format!("https://{h}{p}\n"))
                .collect();
            std::fs::write(f, text).map_err(|e| format!("{}: {e}", f.display()))?;
        }
        Plan::with_pairs(args, &pairs)
    }

    /// A plan for the given `(host, path)` pairs (--sni, --path and the files are ignored).
    pub fn with_pairs(args: LoadArgs, pairs: &[(String, String)]) -> Result<Plan, String> {
        let names = targets::build(pairs)?;
        let longest = names.iter().map(|n| n.paths.len()).max().unwrap_or(0);
        let order = (0..longest)
            .flat_map(|k| (0..names.len()).map(move |n| (n, k)))
            .filter(|&(n, k)| k < names[n].paths.len())
            .collect();
        let alpn: &'static [u8] = match args.http {
            HttpVersion::H1 => b"http/1.1",
            HttpVersion::H2 => b"h2",
        };
        let config = client::client_config(&TlsOptions {
            ca: args.ca.clone(),
            insecure_no_verify: args.insecure_no_verify,
            kx: args.kx,
            reuse_key_shares: args.reuse_key_shares,
            suite: args.suite,
            alpn,
        })?;
        if args.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err("--rate must be a positive number of requests per second".into());
        }
        Ok(Plan {
            target: args.target,
            names,
            order,
            connector: TlsConnector::from(config),
            alpn,
            args,
        })
    }

    /// Runs the load and returns the summary. Stops by itself: at `--requests`, at
    /// `--duration` (default 10 s), or at Ctrl-C.
    pub async fn run(self) -> Summary {
        let args = &self.args;
        let duration = match (args.duration, args.requests) {
            (Some(d), _) => Some(d),
            (None, Some(_)) => None,
            (None, None) => Some(Duration::from_secs(10)),
        };
        let hold = args.mode == Mode::Hold;
        let h2_slots = match (args.mode, args.http) {
            (Mode::KeepAlive, HttpVersion::H2) => args
                .connections
                .unwrap_or(args.concurrency.div_ceil(8))
                .max(1),
            _ => 0,
        };
        let start = Instant::now();
        let shared = Arc::new(Shared {
            start,
            // Hold mode: the duration is the holding time, counted once all are open.
            deadline: if hold {
                None
            } else {
                duration.map(|d| start + d)
            },
            limit: if hold {
                Some(args.connections.unwrap_or(1000) as u64)
            } else {
                args.requests
            },
            h2_pool: (0..h2_slots).map(|_| Mutex::new(None)).collect(),
            held: std::sync::Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
            done: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            plan: self,
        });
        let progress =
            (!shared.plan.args.no_progress).then(|| tokio::spawn(progress(shared.clone())));
        let ctrl_c = tokio::spawn({
            let shared = shared.clone();
            async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("interrupted: stopping");
                    shared.stop.store(true, Ordering::Relaxed);
                }
            }
        });
        let mut workers = tokio::task::JoinSet::new();
        for w in 0..shared.plan.args.concurrency {
            workers.spawn(worker(w, shared.clone()));
        }
        let mut stats = Stats::default();
        while let Some(done) = workers.join_next().await {
            if let Ok(s) = done {
                stats.merge(s);
            }
        }
        let opened = start.elapsed();
        let mut elapsed = opened;
        let held = shared.held.lock().map(|h| h.len()).unwrap_or(0);
        if hold {
            // One line the e2e bench waits for (it then reads the server's memory).
            println!("holding {held} connections, {} ok", stats.ok);
            let until = Instant::now() + duration.unwrap_or(Duration::from_secs(10));
            while Instant::now() < until && !shared.stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100).min(until - Instant::now())).await;
            }
            elapsed = start.elapsed();
        }
        shared.stop.store(true, Ordering::Relaxed);
        if let Some(p) = progress {
            p.abort();
        }
        ctrl_c.abort();
        if let Ok(mut h) = shared.held.lock() {
            h.clear();
        }
        for slot in &shared.h2_pool {
            slot.lock().await.take();
        }
        Summary::new(&shared.plan.args, stats, elapsed, opened, held as u64)
    }
}

/// State shared by the workers.
struct Shared {
    plan: Plan,
    start: Instant,
    deadline: Option<Instant>,
    limit: Option<u64>,
    h2_pool: Vec<Mutex<Option<H2>>>,
    held: std::sync::Mutex<Vec<Held>>,
    next: AtomicU64,
    done: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
}

/// A connection kept open in hold mode.
enum Held {
    H1(#[allow(dead_code)] Box<Tls>),
    H2(#[allow(dead_code)] H2),
}

impl Shared {
    /// The next request number, or `None` once a bound is reached.
    fn ticket(&self) -> Option<u64> {
        if self.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let t = self.next.fetch_add(1, Ordering::Relaxed);
        if self.limit.is_some_and(|n| t >= n) {
            return None;
        }
        Some(t)
    }
}

/// What one worker counted.
#[derive(Default)]
struct Stats {
    latency: Histogram,
    service: Histogram,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<Fail, u64>,
    samples: BTreeMap<Fail, String>,
    handshakes: BTreeMap<&'static str, u64>,
    groups: BTreeMap<String, u64>,
    ok: u64,
}

impl Stats {
    fn fail(&mut self, (kind, message): Failure) {
        *self.errors.entry(kind).or_default() += 1;
        self.samples.entry(kind).or_insert(message);
    }

    fn handshake(&mut self, h: client::Handshake) {
        *self.handshakes.entry(h.kind).or_default() += 1;
        *self.groups.entry(h.group).or_default() += 1;
    }

    fn merge(&mut self, o: Stats) {
        self.latency.merge(&o.latency);
        self.service.merge(&o.service);
        for (k, v) in o.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in o.samples {
            self.samples.entry(k).or_insert(v);
        }
        for (k, v) in o.handshakes {
            *self.handshakes.entry(k).or_default() += v;
        }
        for (k, v) in o.groups {
            *self.groups.entry(k).or_default() += v;
        }
        self.ok += o.ok;
    }
}

/// Sleeps until `at`: the timer to within a millisecond, then yields until due, so a fixed rate
/// is kept to well under a millisecond (the timer alone would add up to one to every latency).
async fn sleep_until_precise(at: Instant) {
    let spin = Duration::from_micros(1200);
    if let Some(wait) = at.checked_duration_since(Instant::now())
        && wait > spin
    {
        tokio::time::sleep_until((at - spin).into()).await;
    }
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

/// A worker's connection in keep-alive HTTP/1.1 mode.
struct Worker {
    w: usize,
    h1: Option<Tls>,
    buf: Vec<u8>,
    sent_on_conn: usize,
    stats: Stats,
}

async fn worker(w: usize, sh: Arc<Shared>) -> Stats {
    let mut me = Worker {
        w,
        h1: None,
        buf: Vec::with_capacity(8192),
        sent_on_conn: 0,
        stats: Stats::default(),
    };
    let plan = &sh.plan;
    while let Some(t) = sh.ticket() {
        let due = match plan.args.rate {
            Some(rate) => {
                let due = sh.start + Duration::from_secs_f64(t as f64 / rate);
                if sh.deadline.is_some_and(|d| due >= d) {
                    break;
                }
                sleep_until_precise(due).await;
                due
            }
            None => Instant::now(),
        };
        let sent = Instant::now();
        let result = tokio::time::timeout(plan.args.timeout, me.one(&sh, t)).await;
        let end = Instant::now();
        match result {
            Ok(Ok(status)) => {
                me.stats.latency.record(end - due);
                me.stats.service.record(end - sent);
                *me.stats.statuses.entry(status).or_default() += 1;
                if status == plan.args.expect_status {
                    me.stats.ok += 1;
                    sh.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    sh.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Err(f)) => {
                me.stats.fail(f);
                me.h1 = None;
                sh.failed.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                me.stats.fail((
                    Fail::Timeout,
                    format!("no answer within {:?}", plan.args.timeout),
                ));
                me.h1 = None;
                sh.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        sh.done.fetch_add(1, Ordering::Relaxed);
        if plan.args.mode == Mode::NewConn
            && let Some(mut io) = me.h1.take()
        {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                client::drain_to_close(&mut io, &mut me.buf),
            )
            .await;
        }
    }
    me.stats
}

impl Worker {
    /// Request number `t`; returns the status.
    async fn one(&mut self, sh: &Shared, t: u64) -> Result<u16, Failure> {
        let plan = &sh.plan;
        match (plan.args.mode, plan.args.http) {
            (Mode::NewConn | Mode::Hold, HttpVersion::H1) => {
                let (n, p) = plan.order[(t % plan.order.len() as u64) as usize];
                let name = &plan.names[n];
                let (mut io, hs) =
                    client::open(&plan.connector, plan.target, &name.sni, plan.alpn).await?;
                self.stats.handshake(hs);
                if plan.args.mode == Mode::Hold {
                    let _ = io.get_ref().0.set_zero_linger();
                    let r =
                        client::h1_exchange(&mut io, &name.paths[p].h1_keep, &mut self.buf).await?;
                    if let Ok(mut held) = sh.held.lock() {
                        held.push(Held::H1(Box::new(io)));
                    }
                    return Ok(r.status);
                }
                let r =
                    client::h1_exchange(&mut io, &name.paths[p].h1_close, &mut self.buf).await?;
                self.h1 = Some(io);
                Ok(r.status)
            }
            (Mode::NewConn | Mode::Hold, HttpVersion::H2) => {
                let (n, p) = plan.order[(t % plan.order.len() as u64) as usize];
                let name = &plan.names[n];
                let (io, hs) =
                    client::open(&plan.connector, plan.target, &name.sni, plan.alpn).await?;
                self.stats.handshake(hs);
                if plan.args.mode == Mode::Hold {
                    let _ = io.get_ref().0.set_zero_linger();
                }
                let mut send = client::h2_handshake(io).await?;
                let status = client::h2_exchange(&mut send, &name.paths[p].uri).await?;
                if plan.args.mode == Mode::Hold
                    && let Ok(mut held) = sh.held.lock()
                {
                    held.push(Held::H2(send));
                }
                Ok(status)
            }
            (Mode::KeepAlive, HttpVersion::H1) => {
                let name = &plan.names[self.w % plan.names.len()];
                if self.h1.is_none() {
                    let (io, hs) =
                        client::open(&plan.connector, plan.target, &name.sni, plan.alpn).await?;
                    self.stats.handshake(hs);
                    self.h1 = Some(io);
                    self.sent_on_conn = 0;
                }
                let path = &name.paths[self.sent_on_conn % name.paths.len()];
                self.sent_on_conn += 1;
                let io = self.h1.as_mut().expect("opened above");
                let r = client::h1_exchange(io, &path.h1_keep, &mut self.buf).await?;
                if r.close {
                    self.h1 = None;
                }
                Ok(r.status)
            }
            (Mode::KeepAlive, HttpVersion::H2) => {
                let slot = self.w % sh.h2_pool.len();
                let name = &plan.names[slot % plan.names.len()];
                let mut send = {
                    let mut guard = sh.h2_pool[slot].lock().await;
                    match guard.as_ref() {
                        Some(s) if !s.is_closed() => s.clone(),
                        _ => {
                            let (io, hs) =
                                client::open(&plan.connector, plan.target, &name.sni, plan.alpn)
                                    .await?;
                            self.stats.handshake(hs);
                            let s = client::h2_handshake(io).await?;
                            *guard = Some(s.clone());
                            s
                        }
                    }
                };
                let path = &name.paths[self.sent_on_conn % name.paths.len()];
                self.sent_on_conn += 1;
                client::h2_exchange(&mut send, &path.uri).await
            }
        }
    }
}

/// Prints one line a second on stderr.
async fn progress(sh: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    loop {
        tick.tick().await;
        let done = sh.done.load(Ordering::Relaxed);
        let held = sh.held.lock().map(|h| h.len()).unwrap_or(0);
        let extra = if sh.plan.args.mode == Mode::Hold {
            format!(", {held} open")
        } else {
            String::new()
        };
        eprintln!(
            "[{:>5.1}s] {done} done, {} ok, {} failed, {}/s{extra}",
            sh.start.elapsed().as_secs_f64(),
            sh.ok.load(Ordering::Relaxed),
            sh.failed.load(Ordering::Relaxed),
            done - last,
        );
        last = done;
    }
}

/// utime + stime of this process so far, from `/proc/self/stat` (0 where there is none).
fn own_cpu_seconds() -> f64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(rest) = text.rfind(')').map(|i| &text[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // USER_HZ is 100 on every Linux architecture that matters here.
    ticks / 100.0
}

/// `clap::ValueEnum` names of the option values, for the summary.
mod erased {
    pub trait Named {
        fn name(&self) -> String;
    }

    impl<T: clap::ValueEnum> Named for T {
        fn name(&self) -> String {
            self.to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_owned())
        }
    }
}

/// Builds the runtime (`threads` 1: single-threaded) and runs `args` to the end.
pub fn run_blocking(args: LoadArgs) -> Result<Summary, String> {
    let threads = args.threads.max(1);
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async move { Ok(Plan::new(args).await?.run().await) })
}
