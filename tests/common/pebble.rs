//! Real ACME peers for tests: Pebble and pebble-challtestsrv (Debian package `pebble`) as child
//! processes on free loopback ports, killed on drop. Readiness is polled, never slept for.
//!
//! Pebble's own HTTPS certificate is a leaf signed by a test CA generated here (rustls refuses a
//! CA certificate as a server certificate); the edge trusts that CA through `acme.ca_root`.
//! Pebble validates HTTP-01 and TLS-ALPN-01 against the edge's own listeners (`httpPort`,
//! `tlsPort`), and resolves every name to 127.0.0.1 through pebble-challtestsrv's DNS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// ACME orders of an edge with `event` (`started`, `succeeded`, `failed`), every challenge type
/// together, from its metrics.
pub async fn orders(edge: &super::Edge, event: &str) -> f64 {
    let text = edge.metrics().await;
    text.lines()
        .filter(|l| {
            l.starts_with("clickedge_acme_orders_total{")
                && l.contains(&format!("event=\"{event}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A running Pebble with its DNS server.
pub struct Pebble {
    pebble: Child,
    challtestsrv: Child,
    pub dir: tempfile::TempDir,
    pub listen: SocketAddr,
    pub management: SocketAddr,
    pub dns: SocketAddr,
    pub dns_management: SocketAddr,
    /// PEM of the test CA that signed Pebble's HTTPS certificate.
    pub https_ca: PathBuf,
}

/// Options for a Pebble run.
#[derive(Default, Clone)]
pub struct PebbleOptions {
    /// `certificateValidityPeriod` in seconds (Pebble's default is about 5 years).
    pub validity_secs: Option<u64>,
    /// Names Pebble refuses (`domainBlocklist`).
    pub blocklist: Vec<String>,
    /// Keep Pebble's default 5% badNonce rejection (else 0%).
    pub bad_nonces: bool,
    /// Require external account binding with this key id and base64url HMAC key.
    pub eab: Option<(String, String)>,
    /// Seconds the validation authority waits before validating (`PEBBLE_VA_SLEEPTIME`; else
    /// none): a window between an order and its validation.
    pub va_sleep_secs: Option<u32>,
}

fn need(binary: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(binary).is_file()));
    assert!(
        found,
        "{binary} is not installed: install the Debian package `pebble` (scripts/test does)"
    );
}

/// A port free for TCP and UDP (a DNS server needs both) on 127.0.0.1, never handed out twice
/// in one test process.
pub fn free_tcp_port() -> u16 {
    use super::postgres::ports::PortRange;
    static PORTS: PortRange = PortRange::new(16_000, 32_768);
    PORTS.take()
}

/// Ports reserved for a Pebble that starts later (the edge's config needs its URL first).
pub struct PebblePorts {
    pub listen: SocketAddr,
    pub management: SocketAddr,
    pub dir: tempfile::TempDir,
    pub https_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl PebblePorts {
    pub fn reserve() -> PebblePorts {
        need("pebble");
        need("pebble-challtestsrv");
        let dir = tempfile::tempdir().unwrap();
        let certs = super::test_certs("pebble test CA", &["localhost", "127.0.0.1"]);
        let https_ca = dir.path().join("pebble-https-ca.pem");
        std::fs::write(&https_ca, &certs.ca).unwrap();
        let cert = dir.path().join("pebble-cert.pem");
        std::fs::write(&cert, &certs.cert).unwrap();
        let key_path = dir.path().join("pebble-key.pem");
        std::fs::write(&key_path, &certs.key).unwrap();
        PebblePorts {
            listen: SocketAddr::from(([127, 0, 0, 1], free_tcp_port())),
            management: SocketAddr::from(([127, 0, 0, 1], free_tcp_port())),
            dir,
            https_ca,
            cert,
            key: key_path,
        }
    }

    pub fn directory(&self) -> String {
        format!("https://{}/dir", self.listen)
    }

    /// The `[acme]` table an edge needs to use this Pebble.
    pub fn acme_toml(&self, challenges: &[&str]) -> String {
        let list = challenges
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "[acme]\ndirectory = \"{}\"\nca_root = \"{}\"\nchallenges = [{list}]\ncontact = [\"mailto:ops@example.com\"]\norder_timeout = \"60s\"\n",
            self.directory(),
            self.https_ca.display()
        )
    }

    /// Starts Pebble, validating against the edge's `http` and `https` ports.
    pub async fn start(self, http_port: u16, tls_port: u16, options: &PebbleOptions) -> Pebble {
        let dns_port = free_tcp_port();
        let dns = SocketAddr::from(([127, 0, 0, 1], dns_port));
        let dns_management = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let challtestsrv = Command::new("pebble-challtestsrv")
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-dns01", &dns.to_string()])
            .args(["-management", &dns_management.to_string()])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("challtestsrv.log")).unwrap())
            .spawn()
            .expect("starting pebble-challtestsrv");

        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": self.listen.to_string(),
                "managementListenAddress": self.management.to_string(),
                "certificate": self.cert,
                "privateKey": self.key,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "domainBlocklist": options.blocklist,
                "retryAfter": { "authz": 1, "order": 1 }
            }
        });
        if let Some(v) = options.validity_secs {
            config["pebble"]["certificateValidityPeriod"] = v.into();
        }
        if let Some((kid, key)) = &options.eab {
            config["pebble"]["externalAccountBindingRequired"] = true.into();
            config["pebble"]["externalAccountMACKeys"] = serde_json::json!({ kid: key });
        }
        let config_path = self.dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let mut cmd = Command::new("pebble");
        cmd.arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &dns.to_string()])
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(std::fs::File::create(self.dir.path().join("pebble.log")).unwrap())
            .stderr(Stdio::null());
        match options.va_sleep_secs {
            Some(secs) => cmd.env("PEBBLE_VA_SLEEPTIME", secs.to_string()),
            None => cmd.env("PEBBLE_VA_NOSLEEP", "1"),
        };
        if !options.bad_nonces {
            cmd.env("PEBBLE_WFE_NONCEREJECT", "0");
        }
        let pebble = cmd.spawn().expect("starting pebble");
        let p = Pebble {
            pebble,
            challtestsrv,
            listen: self.listen,
            management: self.management,
            dns,
            dns_management,
            https_ca: self.https_ca,
            dir: self.dir,
        };
        p.wait_ready().await;
        p
    }
}

impl Pebble {
    fn client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.https_ca).unwrap()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = self.client();
        loop {
            let dir_ok = client
                .get(format!("https://{}/dir", self.listen))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let dns_ok = std::net::TcpStream::connect(self.dns_management).is_ok();
            if dir_ok && dns_ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pebble did not become ready:\n{}",
                std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Pebble's current issuing root and intermediate (random per start), PEM.
    pub async fn issuing_roots(&self) -> String {
        let client = self.client();
        let mut out = String::new();
        for path in ["/roots/0", "/intermediates/0"] {
            let res = client
                .get(format!("https://{}{path}", self.management))
                .send()
                .await
                .unwrap();
            out.push_str(&res.text().await.unwrap());
        }
        out
    }

    /// Answers `host` with `ip` from Pebble's DNS (instead of 127.0.0.1): the node that must
    /// answer its challenges.
    pub async fn point(&self, host: &str, ip: &str) {
        let res = reqwest::Client::new()
            .post(format!("http://{}/add-a", self.dns_management))
            .json(&serde_json::json!({ "host": format!("{host}."), "addresses": [ip] }))
            .send()
            .await
            .expect("pebble-challtestsrv management");
        assert!(res.status().is_success(), "add-a {host}: {}", res.status());
    }

    /// Orders Pebble accepted, from its log.
    pub fn orders_placed(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("POST /order-plz"))
            .count()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.pebble.kill();
        let _ = self.pebble.wait();
        let _ = self.challtestsrv.kill();
        let _ = self.challtestsrv.wait();
    }
}
