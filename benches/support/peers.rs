//! The servers of the end-to-end bench, each started in its own temp dir, on loopback, pinned to
//! one core: clickedge (the release binary, resumption off), nginx and Caddy (the reference:
//! one worker, resumption off, TLS 1.3, a 302 to `https://example.com/`, access log on, and an
//! ECDSA P-256 certificate from a test CA, the kind clickedge issues).
//!
//! Readiness is polled (clickedge's first stdout line; a TCP connect for the peers), never slept
//! for. Missing peers are reported with the package that provides them.

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

use crate::procs::{self, Proc};

/// Debian packages of the reference servers.
pub const PEER_PACKAGES: &str = "nginx-light caddy";

/// A test CA and one leaf for `*.example.com`, both ECDSA P-256, as PEM files.
pub struct TestCert {
    /// The CA certificate (trust it).
    pub ca: PathBuf,
    /// The leaf certificate (alone: the chain clickedge sends is the leaf alone too).
    pub cert: PathBuf,
    /// The leaf's key.
    pub key: PathBuf,
}

impl TestCert {
    /// Generates the CA and the leaf into `dir`.
    pub fn generate(dir: &Path) -> Result<TestCert, String> {
        let e = |e: rcgen::Error| format!("generating the test certificate: {e}");
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(e)?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "clickedge bench CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(e)?;
        let mut leaf =
            CertificateParams::new(vec!["*.example.com".to_owned(), "example.com".to_owned()])
                .map_err(e)?;
        leaf.distinguished_name
            .push(DnType::CommonName, "*.example.com");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.use_authority_key_identifier_extension = true;
        let leaf_cert = leaf.signed_by(&key, &issuer).map_err(e)?;

        let out = TestCert {
            ca: dir.join("test-ca.pem"),
            cert: dir.join("test-cert.pem"),
            key: dir.join("test-key.pem"),
        };
        for (path, pem) in [
            (&out.ca, ca_cert.pem()),
            (&out.cert, leaf_cert.pem()),
            (&out.key, key.serialize_pem()),
        ] {
            std::fs::write(path, pem).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(out)
    }
}

/// A free loopback port (bound, then released: the peers need a port in their config file).
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// Polls until `addr` accepts a TCP connection, the process exits, or 15 s pass.
fn wait_listening(proc: &mut Proc, addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if !proc.alive() {
            return Err(format!(
                "{} exited at start:\n{}",
                proc.name,
                proc.log_tail()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} is not listening on {addr} after 15 s:\n{}",
                proc.name,
                proc.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running server under test.
pub struct Server {
    /// `clickedge`, `nginx` or `caddy`.
    pub name: &'static str,
    /// Its HTTPS address.
    pub https: SocketAddr,
    /// The process (for nginx, the master; its worker is a descendant).
    pub proc: Proc,
    /// clickedge only: admin API address.
    pub admin: Option<SocketAddr>,
    /// clickedge only: its data dir.
    pub data_dir: Option<PathBuf>,
}

/// Starts the release clickedge in `dir` with resumption off, every port 0 on loopback.
/// `CLICKEDGE_BENCH_DURABILITY=synced` measures the synced click log instead of the buffered one.
pub fn clickedge(bin: &str, dir: &Path, core: Option<usize>) -> Result<Server, String> {
    clickedge_with(bin, dir, core, "", "")
}

/// Starts a local `nats-server -js` (Debian package `nats-server`) on a free loopback port with
/// its store under `dir`, pinned to `core` if given; returns it and its URL.
pub fn nats_server(dir: &Path, core: Option<usize>) -> Result<(Proc, String), String> {
    let bin = procs::installed("nats-server")
        .ok_or("nats-server not found: apt-get install -y nats-server")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let port = free_port()?;
    let mut cmd = procs::pinned(core, bin);
    cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut proc = Proc::spawn("nats-server", cmd, &dir.join("stderr.log"))?;
    wait_listening(&mut proc, ([127, 0, 0, 1], port).into())?;
    Ok((proc, format!("nats://127.0.0.1:{port}")))
}

/// Starts clickedge with `clicks` appended to its `[clicks]` section (e.g. a stream).
pub fn clickedge_with(
    bin: &str,
    dir: &Path,
    core: Option<usize>,
    listen: &str,
    clicks: &str,
) -> Result<Server, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let data = dir.join("data");
    let config = dir.join("clickedge.toml");
    let durability =
        std::env::var("CLICKEDGE_BENCH_DURABILITY").unwrap_or_else(|_| "buffered".into());
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n\n[listen]\nhttps = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{listen}\n\
             [tls]\n# Every handshake a full one, like an email click's (and nginx's and Caddy's here).\nsession_resumption = false\n\n\
             [clicks]\ndurability = \"{durability}\"\n\
             # The load generator is one address clicking flat out, and every click must be logged.\n\
             max_clicks_per_ip_per_sec = 0\n{clicks}\n\
             [limits]\n# Every connection comes from the one load generator's address.\nmax_connections_per_ip = 0\n",
            data.display()
        ),
    )
    .map_err(|e| format!("{}: {e}", config.display()))?;
    let mut cmd = procs::pinned(core, bin);
    cmd.args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut proc = Proc::spawn("clickedge", cmd, &dir.join("stderr.log"))?;
    let stdout = proc.child().stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = match lines.next() {
        Some(Ok(line)) => line,
        _ => return Err(format!("clickedge did not start:\n{}", proc.log_tail())),
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let addr = |key: &str| -> Result<SocketAddr, String> {
        first
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("no {key}= in clickedge's first line {first:?}"))
    };
    Ok(Server {
        name: "clickedge",
        https: addr("https")?,
        admin: Some(addr("admin")?),
        data_dir: Some(data),
        proc,
    })
}

/// Starts nginx (one worker, master in the foreground) in `dir`.
pub fn nginx(
    cert: &TestCert,
    dir: &Path,
    core: Option<usize>,
    nofile: u64,
) -> Result<Server, String> {
    let bin = procs::installed("nginx")
        .or_else(|| procs::installed("/usr/sbin/nginx"))
        .ok_or_else(|| format!("nginx not found: apt-get install -y {PEER_PACKAGES}"))?;
    for sub in ["tmp", "logs"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let port = free_port()?;
    let d = dir.display();
    let conf = format!(
        r#"# The reference of PERFORMANCE.md: one worker, no resumption, TLS 1.3, access log buffered.
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
worker_rlimit_nofile {nofile};
events {{ worker_connections {conns}; }}
http {{
    access_log {d}/logs/access.log combined buffer=64k;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        # Without this, nginx 1.22 with OpenSSL 3 still sends two (unusable) TLS 1.3 tickets.
        ssl_conf_command NumTickets 0;
        return 302 https://example.com/;
    }}
}}
"#,
        conns = nofile.saturating_sub(100).max(1024),
        cert = cert.cert.display(),
        key = cert.key.display(),
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).map_err(|e| format!("{}: {e}", conf_path.display()))?;
    let mut cmd = procs::pinned(core, &bin);
    cmd.arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("logs/error.log"))
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut proc = Proc::spawn("nginx", cmd, &dir.join("stderr.log"))?;
    let https = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(&mut proc, https)?;
    Ok(Server {
        name: "nginx",
        https,
        proc,
        admin: None,
        data_dir: None,
    })
}

/// Starts Caddy from a JSON config in `dir`: admin off, automatic HTTPS off, session tickets
/// off, TLS 1.3, h1 and h2, a static 302, access log to a file.
pub fn caddy(cert: &TestCert, dir: &Path, core: Option<usize>) -> Result<Server, String> {
    let bin = procs::installed("caddy")
        .ok_or_else(|| format!("caddy not found: apt-get install -y {PEER_PACKAGES}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let port = free_port()?;
    let config = serde_json::json!({
        "admin": { "disabled": true, "config": { "persist": false } },
        "storage": { "module": "file_system", "root": dir.join("storage") },
        "logging": { "logs": {
            "default": { "level": "WARN", "exclude": ["http.log.access.access"] },
            "access": {
                "writer": { "output": "file", "filename": dir.join("access.log"), "roll": false },
                "encoder": { "format": "json" },
                "include": ["http.log.access.access"]
            }
        }},
        "apps": {
            "http": { "servers": { "bench": {
                "listen": [format!("127.0.0.1:{port}")],
                "protocols": ["h1", "h2"],
                "automatic_https": { "disable": true },
                "tls_connection_policies": [{ "protocol_min": "tls1.3" }],
                "logs": { "default_logger_name": "access" },
                "routes": [{ "handle": [{
                    "handler": "static_response",
                    "status_code": 302,
                    "headers": { "Location": ["https://example.com/"] }
                }]}]
            }}},
            "tls": {
                "certificates": { "load_files": [{
                    "certificate": cert.cert, "key": cert.key
                }]},
                "session_tickets": { "disabled": true }
            }
        }
    });
    let conf_path = dir.join("caddy.json");
    std::fs::write(&conf_path, config.to_string())
        .map_err(|e| format!("{}: {e}", conf_path.display()))?;
    let mut cmd = procs::pinned(core, &bin);
    cmd.args(["run", "--config"])
        .arg(&conf_path)
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut proc = Proc::spawn("caddy", cmd, &dir.join("stderr.log"))?;
    let https = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(&mut proc, https)?;
    Ok(Server {
        name: "caddy",
        https,
        proc,
        admin: None,
        data_dir: None,
    })
}

/// Polls a clickedge click log directory until its click files (`.jsonl`, and the one being
/// written, `.jsonl.open`) hold `sent` lines (or 20 s pass, the writer's flush interval many
/// times over); returns the lines found.
pub fn wait_for_click_lines(dir: &Path, sent: u64) -> u64 {
    let count = || -> u64 {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        let name = e.file_name();
                        let name = name.to_string_lossy();
                        name.ends_with(".jsonl") || name.ends_with(".jsonl.open")
                    })
                    .map(|e| {
                        std::fs::read(e.path())
                            .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count() as u64)
                    })
                    .sum()
            })
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = count();
    while lines < sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        lines = count();
    }
    lines
}
