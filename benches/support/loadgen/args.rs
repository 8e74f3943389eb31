//! The load generator's command line: what to click, how (connections, HTTP version, key
//! share), how fast and for how long.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::client::{self, Kx};

/// How connections are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Mode {
    /// One TCP connection and one full TLS handshake per request (an email click).
    #[value(name = "new-conn")]
    NewConn,
    /// Requests on warm connections; a connection is reopened only when it breaks.
    #[value(name = "keep-alive")]
    KeepAlive,
    /// Open `--connections` connections (one request each), then hold them idle for
    /// `--duration`; prints `holding N connections, K ok` on stdout once they are all open.
    #[value(name = "hold")]
    Hold,
}

/// HTTP version, chosen by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum HttpVersion {
    /// HTTP/1.1 (`Connection: close` in new-conn mode).
    #[value(name = "1.1")]
    H1,
    /// h2.
    #[value(name = "2")]
    H2,
}

/// Load generator options (the `loadgen` bench's command line).
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Address of the server under test; every connection goes there, whatever the SNI.
    #[arg(long, value_name = "IP:PORT")]
    pub target: SocketAddr,
    /// SNI name, or a pattern with ranges like `links{0..9999}.example.com` (repeatable).
    #[arg(long = "sni", value_name = "PATTERN")]
    pub sni: Vec<String>,
    /// File of SNI names or patterns, one a line.
    #[arg(long, value_name = "FILE")]
    pub sni_file: Option<PathBuf>,
    /// Path requested under every name (repeatable) [default: /].
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
    /// File of URLs `https://name[:port]/path`, one a line: the host is the SNI name. Used
    /// instead of --sni/--path.
    #[arg(long, value_name = "FILE")]
    pub urls_file: Option<PathBuf>,
    /// Mint sealed links under every --sni name through this clickedge admin API
    /// (e.g. `http://127.0.0.1:9180`) and request those.
    #[arg(long, value_name = "URL")]
    pub mint_admin: Option<String>,
    /// Admin token for --mint-admin.
    #[arg(long, env = "CLICKEDGE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File holding the admin token (e.g. `<data_dir>/admin-token`).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Links minted per name.
    #[arg(long, default_value_t = 1)]
    pub mint_per_name: usize,
    /// Register every name (`POST /v1/domains`) before minting.
    #[arg(long)]
    pub register: bool,
    /// Write the URLs requested (minted or given) to this file, one a line.
    #[arg(long, value_name = "FILE")]
    pub write_urls: Option<PathBuf>,
    /// CA certificate(s) to trust, PEM (repeatable), e.g. `<data_dir>/ca.pem`.
    #[arg(long, value_name = "FILE")]
    pub ca: Vec<PathBuf>,
    /// Accept any server certificate without checking it or the handshake signature (saves
    /// the client about two ECDSA verifications per handshake).
    #[arg(long)]
    pub insecure_no_verify: bool,
    /// Offer key shares generated at the start (256 sets, taken in turn) instead of fresh ones
    /// on every connection: saves the client its key generation, so that one client core can
    /// keep one server core busy with new-connection clicks; the server's work per handshake
    /// does not change. Load generation only: it gives up forward secrecy between the
    /// client's connections.
    #[arg(long)]
    pub reuse_key_shares: bool,
    /// Connection use.
    #[arg(long, value_enum, default_value = "new-conn")]
    pub mode: Mode,
    /// HTTP version (ALPN).
    #[arg(long, value_enum, default_value = "1.1")]
    pub http: HttpVersion,
    /// Key share offered.
    #[arg(long, value_enum, default_value = "x25519mlkem768")]
    pub kx: Kx,
    /// Preferred TLS 1.3 cipher suite (the browsers' choice by default).
    #[arg(long, value_enum, default_value = "aes128")]
    pub suite: client::Suite,
    /// Fixed rate, requests per second, open loop. Without it: flat out.
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,
    /// Concurrent workers (requests in flight at most).
    #[arg(short = 'c', long, default_value_t = 32)]
    pub concurrency: usize,
    /// h2 keep-alive: connections the workers share [default: concurrency / 8]. Hold mode:
    /// connections to open and hold [default: 1000].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Stop after this many requests.
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Stop issuing requests after this long (hold mode: hold this long once all are open)
    /// [default: 10s, or none with --requests].
    #[arg(short = 'd', long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Longest wait for one request, connection and handshake included.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The status counted as success.
    #[arg(long, default_value_t = 302)]
    pub expect_status: u16,
    /// No progress lines on stderr.
    #[arg(long)]
    pub no_progress: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Runtime threads (1: a single-threaded runtime; pin it with `taskset`).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}
