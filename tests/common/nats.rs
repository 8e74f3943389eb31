//! A real NATS server with JetStream (Debian package `nats-server`) as a child process on a
//! loopback port the test picks, with its store in a temporary directory; stopped and started
//! again on the same port and store to test reconnects. Killed on drop.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::pebble::free_tcp_port;

pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: tempfile::TempDir,
    /// More `nats-server` arguments (TLS, users).
    args: Vec<String>,
}

impl NatsServer {
    /// Starts `nats-server -js` on a free port.
    pub fn start() -> NatsServer {
        NatsServer::start_with(&[])
    }

    /// Starts `nats-server -js` on a free port with more arguments (`--tls`, `--user`...).
    pub fn start_with(args: &[&str]) -> NatsServer {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nats-server").is_file()));
        assert!(
            found,
            "nats-server is not installed: install the Debian package `nats-server` (scripts/test does)"
        );
        let mut server = NatsServer {
            child: None,
            port: free_tcp_port(),
            store: tempfile::tempdir().expect("tempdir"),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        server.restart();
        server
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and store, and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "nats-server already running");
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.store.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server with SIGTERM (it flushes its store) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::signal(&child, "TERM");
            let _ = child.wait();
        }
    }

    /// A JetStream context on a new connection.
    pub async fn jetstream(&self) -> jetstream::Context {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match async_nats::connect(self.url()).await {
                Ok(client) => return jetstream::new(client),
                Err(e) => assert!(Instant::now() < deadline, "connecting to NATS: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Every message of `stream` in order: its `Nats-Msg-Id` and its payload as JSON. Empty when the
/// stream does not exist.
pub async fn read_stream(
    js: &jetstream::Context,
    stream: &str,
) -> Vec<(String, serde_json::Value)> {
    let Ok(mut s) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let Ok(info) = s.info().await else {
        return Vec::new();
    };
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut out = Vec::new();
    for seq in first.max(1)..=last {
        let Ok(msg) = s.get_raw_message(seq).await else {
            continue;
        };
        let id = msg
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let value = serde_json::from_slice(&msg.payload).expect("message is a JSON click line");
        out.push((id, value));
    }
    out
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
