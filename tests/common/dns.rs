//! A real DNS server for the onboarding tests: pebble-challtestsrv (Debian package `pebble`) as
//! a child process on free loopback ports, killed on drop, with its management API to set
//! per-name records (A, AAAA, CNAME, CAA, SERVFAIL). Readiness is polled, never slept for.
//!
//! It starts with no default addresses (`-defaultIPv4 ""`), so a name without records really
//! has none. Its answers have TTL 0, so a changed record is seen at once.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A running pebble-challtestsrv serving DNS only.
pub struct Dns {
    child: Child,
    /// The DNS server (UDP and TCP).
    pub addr: SocketAddr,
    management: SocketAddr,
    client: reqwest::Client,
}

impl Dns {
    /// Starts the server; fails naming the package if it is not installed.
    pub async fn start() -> Dns {
        let found = std::env::var_os("PATH").is_some_and(|p| {
            std::env::split_paths(&p).any(|d| d.join("pebble-challtestsrv").is_file())
        });
        assert!(
            found,
            "pebble-challtestsrv is not installed: install the Debian package `pebble` (scripts/test does)"
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], super::pebble::free_tcp_port()));
        let management = SocketAddr::from(([127, 0, 0, 1], super::pebble::free_tcp_port()));
        let child = Command::new("pebble-challtestsrv")
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-dns01", &addr.to_string()])
            .args(["-management", &management.to_string()])
            .args(["-defaultIPv4", "", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting pebble-challtestsrv");
        let dns = Dns {
            child,
            addr,
            management,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(management).is_err()
            || std::net::TcpStream::connect(addr).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "pebble-challtestsrv did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        dns
    }

    async fn call(&self, path: &str, body: Value) {
        let res = self
            .client
            .post(format!("http://{}{path}", self.management))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("challtestsrv {path}: {e}"));
        assert!(
            res.status().is_success(),
            "challtestsrv {path}: {}",
            res.status()
        );
    }

    /// `host A addresses…`
    pub async fn add_a(&self, host: &str, addresses: &[&str]) {
        self.call(
            "/add-a",
            json!({ "host": fqdn(host), "addresses": addresses }),
        )
        .await;
    }

    /// `host AAAA addresses…`
    pub async fn add_aaaa(&self, host: &str, addresses: &[&str]) {
        self.call(
            "/add-aaaa",
            json!({ "host": fqdn(host), "addresses": addresses }),
        )
        .await;
    }

    /// Removes the A records of `host`.
    pub async fn clear_a(&self, host: &str) {
        self.call("/clear-a", json!({ "host": fqdn(host) })).await;
    }

    /// `host CNAME target` (the server follows it for other query types).
    pub async fn set_cname(&self, host: &str, target: &str) {
        self.call(
            "/set-cname",
            json!({ "host": fqdn(host), "target": fqdn(target) }),
        )
        .await;
    }

    /// `host CAA 0 issue "<issuer>"`.
    pub async fn add_caa_issue(&self, host: &str, issuer: &str) {
        self.call(
            "/add-caa",
            json!({ "host": fqdn(host), "policies": [{ "tag": "issue", "value": issuer }] }),
        )
        .await;
    }

    /// Every query for `host` answers SERVFAIL.
    pub async fn set_servfail(&self, host: &str) {
        self.call("/set-servfail", json!({ "host": fqdn(host) }))
            .await;
    }
}

fn fqdn(host: &str) -> String {
    format!("{}.", host.trim_end_matches('.'))
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
