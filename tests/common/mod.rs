//! Test harness: starts the real `clickedge` binary on port 0 in a temporary data dir, and gives
//! tests clients that trust its `ca.pem`. The child is killed on drop; readiness is read from the
//! binary's first stdout line, never slept for.
#![allow(dead_code)]

/// Config holding clicks in the queue until the edge stops (a flush interval past any test, no
/// per-address rate): with [`Edge::clicks_at_stop`], a test counts every click the edge logged.
pub const HELD_CLICKS: &str = "[clicks]\nflush_interval = \"1h\"\nmax_clicks_per_ip_per_sec = 0\n";

pub mod browser;
pub mod certs;
pub mod cluster;
pub mod dns;
pub mod fake_acme;
pub mod files;
pub mod nats;
pub mod pebble;
pub mod postgres;
pub mod refused;

// Each test binary uses some of these, like the rest of the harness (`dead_code` above).
#[allow(unused_imports)]
pub use certs::{TestCerts, test_certs};
#[allow(unused_imports)]
pub use files::{poll_file, read_click_files, read_click_lines, read_clicks, replay, replayed};
#[allow(unused_imports)]
pub use refused::{refused_start, refused_start_as};

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running edge.
pub struct Edge {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// The first address of `listen.https` (and of `listen.http` below).
    pub https: SocketAddr,
    pub http: SocketAddr,
    /// Every address the edge said it listens on, as `(key, address)` (`https`, `http`, ...).
    pub listening: Vec<(String, SocketAddr)>,
    pub admin: SocketAddr,
    /// `listen.metrics`, when the test configured it.
    pub metrics: Option<SocketAddr>,
    pub token: String,
    pub ca_pem: String,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_clickedge")
}

impl Edge {
    /// Starts an edge with default settings (ports 0).
    pub fn start() -> Edge {
        Edge::start_with("")
    }

    /// Starts an edge; `extra` is appended to the generated config (top-level keys first, then
    /// tables, e.g. `"[clicks]\nflush_interval = \"10s\"\n"`).
    pub fn start_with(extra: &str) -> Edge {
        let dir = tempfile::tempdir().expect("tempdir");
        Edge::start_in(dir, extra)
    }

    /// Starts an edge in an existing data dir (restarts).
    pub fn start_in(dir: tempfile::TempDir, extra: &str) -> Edge {
        Edge::start_in_at(dir, extra, 0, 0)
    }

    /// Starts an edge with extra environment variables for the child.
    pub fn start_with_env(env: &[(&str, &str)], extra: &str) -> Edge {
        Edge::start_full(tempfile::tempdir().expect("tempdir"), extra, 0, 0, env)
    }

    /// Starts an edge in an existing data dir with fixed HTTPS and HTTP ports (0: any).
    pub fn start_in_at(dir: tempfile::TempDir, extra: &str, https: u16, http: u16) -> Edge {
        Edge::start_full(dir, extra, https, http, &[])
    }

    /// Starts an edge in an existing data dir with the process umask set to `umask` (by the
    /// shell that execs it).
    pub fn start_in_with_umask(dir: tempfile::TempDir, umask: u32, extra: &str) -> Edge {
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(format!("umask {umask:03o} && exec \"$0\" \"$@\""))
            .arg(bin());
        Edge::launch(shell, dir, "127.0.0.1", extra, (0, 0), &[])
    }

    /// Starts an edge whose open-files limits are `soft` and `hard` when it starts (set by the
    /// shell that execs it).
    pub fn start_with_open_files_limit(soft: u64, hard: u64, extra: &str) -> Edge {
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(format!(
                "ulimit -S -n {soft} && ulimit -H -n {hard} && exec \"$0\" \"$@\""
            ))
            .arg(bin());
        Edge::launch(
            shell,
            tempfile::tempdir().expect("tempdir"),
            "127.0.0.1",
            extra,
            (0, 0),
            &[],
        )
    }

    fn start_full(
        dir: tempfile::TempDir,
        extra: &str,
        https: u16,
        http: u16,
        env: &[(&str, &str)],
    ) -> Edge {
        Edge::launch(
            Command::new(bin()),
            dir,
            "127.0.0.1",
            extra,
            (https, http),
            env,
        )
    }

    /// Starts an edge whose HTTPS and HTTP listeners are on `ip` (a loopback address such as
    /// 127.0.0.2, so that several nodes share one pair of ports), with extra environment.
    pub fn start_on(ip: &str, https: u16, http: u16, env: &[(&str, &str)], extra: &str) -> Edge {
        let dir = tempfile::tempdir().expect("tempdir");
        Edge::launch(Command::new(bin()), dir, ip, extra, (https, http), env)
    }

    /// Runs `command serve --config <generated>` and waits for its first line.
    fn launch(
        mut command: Command,
        dir: tempfile::TempDir,
        ip: &str,
        extra: &str,
        (https, http): (u16, u16),
        env: &[(&str, &str)],
    ) -> Edge {
        let config = dir.path().join("clickedge.toml");
        // A test that brings its own `[listen]` table (a `[::]` listener) keeps it.
        let listen = if extra.contains("[listen]") {
            String::new()
        } else {
            format!(
                "[listen]\nhttps = \"{ip}:{https}\"\nhttp = \"{ip}:{http}\"\nadmin = \"127.0.0.1:0\"\n"
            )
        };
        let (top, tables) = match extra.find('[') {
            Some(i) => extra.split_at(i),
            None => (extra, ""),
        };
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n{top}\n{listen}\n{tables}",
                dir.path().join("data").display()
            ),
        )
        .expect("writing config");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr log");
        let mut child = command
            .args(["serve", "--config"])
            .arg(&config)
            .env("CLICKEDGE_LOG", "info,clickedge=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawning clickedge");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = match lines.next() {
            Some(Ok(line)) => line,
            _ => {
                let _ = child.wait();
                panic!(
                    "clickedge did not start:\n{}",
                    std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
                );
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let listening = listening_of(&first);
        let addr = |key: &str| -> SocketAddr {
            listening
                .iter()
                .find_map(|(k, a)| (k == key).then_some(*a))
                .unwrap_or_else(|| panic!("no {key} in {first:?}"))
        };
        let data = dir.path().join("data");
        // None when the config sets the token (a call with it then gets 401).
        let token = std::fs::read_to_string(data.join("admin-token"))
            .map(|t| t.trim().to_owned())
            .unwrap_or_default();
        // Only the local issuer writes ca.pem; ACME tests trust the CA's roots instead.
        let ca_pem = std::fs::read_to_string(data.join("ca.pem")).unwrap_or_default();
        Edge {
            https: addr("https"),
            http: addr("http"),
            admin: addr("admin"),
            metrics: listening
                .iter()
                .find_map(|(k, a)| (k == "metrics").then_some(*a)),
            listening,
            child: Some(child),
            dir,
            token,
            ca_pem,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("clickedge.toml")
    }

    /// Runs a client command (`clickedge ARGS --admin <this edge>` with its config), which must
    /// succeed; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_clickedge"))
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .args(["--admin", &format!("http://{}", self.admin)])
            .output()
            .expect("running clickedge");
        assert!(
            out.status.success(),
            "clickedge {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// An HTTPS client that trusts the edge's CA and resolves `domains` to the edge.
    pub fn client(&self, domains: &[&str]) -> reqwest::Client {
        self.client_builder(domains).build().expect("client")
    }

    pub fn client_builder(&self, domains: &[&str]) -> reqwest::ClientBuilder {
        self.client_trusting(&self.ca_pem, domains)
    }

    /// A client builder that trusts the certificates in `roots_pem` and resolves `domains` to
    /// the edge.
    pub fn client_trusting(&self, roots_pem: &str, domains: &[&str]) -> reqwest::ClientBuilder {
        let roots =
            reqwest::Certificate::from_pem_bundle(roots_pem.as_bytes()).expect("roots parse");
        let mut b = reqwest::Client::builder()
            .tls_certs_only(roots)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30));
        for d in domains {
            b = b.resolve(d, self.https);
        }
        b
    }

    /// A raw TLS connector that trusts the edge's CA and offers `alpn` (`b"h2"`, `b"http/1.1"`).
    pub fn tls_connector(&self, alpn: &[u8]) -> tokio_rustls::TlsConnector {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("CA certificate");
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
    }

    /// Clicks `link` (on `domain`, over verified TLS) and returns the status code.
    pub async fn click_status(&self, domain: &str, link: &str) -> u16 {
        let res = self
            .client(&[domain])
            .get(link)
            .send()
            .await
            .expect("click");
        res.status().as_u16()
    }

    /// Calls the admin API with the edge's token.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.admin_with_token(method, path, body, Some(&self.token))
            .await
    }

    pub async fn admin_with_token(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req =
            reqwest::Client::new().request(method, format!("http://{}{path}", self.admin));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("admin request");
        let status = res.status().as_u16();
        let text = res.text().await.expect("admin body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn add_domain(&self, name: &str) {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                "/v1/domains",
                Some(serde_json::json!({ "name": name })),
            )
            .await;
        assert!(
            status == 201 || status == 200,
            "adding {name}: {status} {body}"
        );
    }

    /// Mints a link and returns it with the edge's HTTPS port inserted.
    pub async fn mint(&self, domain: &str, url: &str, meta: Value) -> String {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                "/v1/links",
                Some(serde_json::json!({ "domain": domain, "url": url, "meta": meta })),
            )
            .await;
        assert_eq!(status, 201, "minting: {body}");
        let link = body["link"].as_str().expect("link").to_owned();
        self.on_port(&link)
    }

    /// Inserts the edge's HTTPS port after the host of `link`.
    pub fn on_port(&self, link: &str) -> String {
        let rest = link.strip_prefix("https://").expect("https link");
        let (host, path) = rest.split_once('/').expect("path");
        format!("https://{host}:{}/{path}", self.https.port())
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// The value of one metric line (`name` includes labels, e.g. `foo_total{outcome="ok"}`): 0
    /// for a series not exposed yet of a metric the edge declares; a metric it does not declare
    /// at all (renamed, dropped, misspelt) fails the test rather than reading as 0.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        let family = name.split('{').next().unwrap_or(name);
        let declared = |f: &str| text.contains(&format!("# TYPE {f} "));
        let histogram_part = ["_bucket", "_count", "_sum"]
            .iter()
            .filter_map(|suffix| family.strip_suffix(suffix))
            .any(declared);
        assert!(
            declared(family) || histogram_part,
            "the edge exposes no metric {family}"
        );
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().expect("metric value"))
    }

    /// Every click line written so far, files in name order.
    pub fn clicks(&self) -> Vec<Value> {
        read_clicks(&self.data_dir().join("clicks"))
    }

    /// Polls the click log until it holds `n` lines; fails the test if it does not within a
    /// minute (a hang guard: clicks are flushed every 100 ms by default).
    pub fn wait_for_clicks(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let clicks = self.clicks();
            if clicks.len() >= n {
                return clicks;
            }
            assert!(
                Instant::now() < deadline,
                "the click log holds {} lines, not {n}: {clicks:?}",
                clicks.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The edge's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `sig` (e.g. "TERM", "KILL") without waiting.
    pub fn signal(&self, sig: &str) {
        signal(self.child.as_ref().expect("running"), sig);
    }

    /// Waits for the process to exit (after a signal).
    pub fn wait(&mut self) -> ExitStatus {
        self.child.take().expect("running").wait().expect("wait")
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    /// Resident set size, KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The most resident memory the process has had since it started, KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// A `kB` line of the process's `/proc/PID/status`.
    fn status_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }

    /// Polls stderr until it contains `text` `times` times (or fails after 20 s).
    pub fn wait_for_log(&self, text: &str, times: usize) -> String {
        let path = self.dir.path().join("stderr.log");
        poll_file(&path, &format!("{text:?} logged {times} time(s)"), |log| {
            (log.matches(text).count() >= times).then(|| log.to_owned())
        })
    }

    /// Sends SIGTERM and waits for the exit.
    /// Stops the edge (SIGTERM: its shutdown writes every click still queued) and reads the
    /// whole click log: with a flush interval longer than the test ([`HELD_CLICKS`]), what a test
    /// counts then is everything the edge logged, not what a flush had written so far.
    pub fn clicks_at_stop(&mut self) -> Vec<Value> {
        let status = self.terminate();
        assert!(status.success(), "{status:?}\n{}", self.stderr());
        self.clicks()
    }

    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(&child, "TERM");
        child.wait().expect("wait")
    }

    /// Gives back the data dir of an edge that has exited (or is killed now), for a restart.
    pub fn take_dir(mut self) -> tempfile::TempDir {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    /// Sends SIGTERM, waits, and gives back the data dir for a restart.
    pub fn stop_keep_dir(mut self) -> tempfile::TempDir {
        let status = self.terminate();
        assert!(status.success(), "exit {status:?}\n{}", self.stderr());
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

/// RFC 3339 for an hour ago: a send long enough before the clicks that timing says nothing.
pub fn an_hour_ago() -> String {
    let now = clickedge::clock::Clock::system().now();
    (time::OffsetDateTime::from(now) - time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Polls `check` every 20 ms until it holds; how long that took, or none after `limit`.
pub async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() <= limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Fetches the open pixel at `url` with `method` (and `ua` as `User-Agent`), checks that it is
/// the pixel's answer (200, a GIF, never cached, no cookie) and returns its body.
pub async fn fetch_pixel(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    ua: Option<&str>,
) -> Vec<u8> {
    let mut req = client.request(method.clone(), url);
    if let Some(ua) = ua {
        req = req.header("user-agent", ua);
    }
    let res = req.send().await.expect("pixel request");
    assert_eq!(res.status(), 200, "{method} {url}");
    let h = res.headers();
    assert_eq!(h["content-type"], "image/gif");
    assert_eq!(
        h["cache-control"],
        "no-cache, no-store, must-revalidate, max-age=0"
    );
    assert!(h.get("set-cookie").is_none());
    // A HEAD's too: the length a GET's body has.
    assert_eq!(h["content-length"], "43", "{method} {url}");
    res.bytes().await.expect("pixel body").to_vec()
}

/// Each `key=address` of the banner's first line, in order; with JSON logs the banner is one
/// JSON object, its addresses under the same keys (a list for `https` and `http`).
fn listening_of(first: &str) -> Vec<(String, SocketAddr)> {
    if first.starts_with('{') {
        let v: Value = serde_json::from_str(first).expect("a JSON banner");
        return ["https", "http", "admin", "metrics"]
            .into_iter()
            .flat_map(|key| {
                let addrs = match &v[key] {
                    Value::Array(list) => list.clone(),
                    one => vec![one.clone()],
                };
                addrs
                    .into_iter()
                    .filter_map(|a| Some((key.to_owned(), a.as_str()?.parse().ok()?)))
                    .collect::<Vec<_>>()
            })
            .collect();
    }
    first
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, a)| Some((k.to_owned(), a.parse().ok()?)))
        .collect()
}
