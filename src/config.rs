//! Configuration: TOML (every key optional) plus the `CLICKEDGE_CONFIG` environment variable,
//! parsed into typed values (`SocketAddr`, `Duration`, `NonZero*`).
//!
//! Unknown keys are an error that names the key and the file. This module reads one file and
//! nothing else: it binds no socket and reads no certificate.

mod admin;
mod clicks;
mod cluster;
mod duration;
mod limits;
mod listen;
mod secret_url;
pub mod size;
mod store;
mod validate;

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use admin::{Admin, AdminHost, AdminHostError, NOT_TOKEN_TEXT, is_token_text};
pub use clicks::{Clicks, Durability, IpField, SinkKind, StreamKind, nats_url_shown};
pub use cluster::{Cluster, NodeId, NodeIdError};
pub use limits::Limits;
pub use listen::{Addresses, Listen};
pub use store::{Store, StoreKind, StoreUrl};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with `message`), `target`.
    Json,
}

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "CLICKEDGE_CONFIG";
/// File under the data dir holding the SQLite store unless `store.path` says otherwise.
pub const STORE_FILE: &str = "clickedge.db";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema; the message names the key.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key and position.
        message: String,
    },
    /// A value is well-formed but not usable.
    #[error("config file {path}: {message}")]
    Invalid {
        /// The file, or `<defaults>`.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// The whole configuration. Every field has a default, so an empty file (or none) is valid.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the store, the local CA, the admin token and clicks live (the store and clicks
    /// by default). Default `./clickedge-data`.
    pub data_dir: PathBuf,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT/SIGQUIT before connections
    /// are closed. Default `10s`.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// How long `/readyz` answers 503 after SIGTERM/SIGINT while the edge still serves, before
    /// the listeners close: time for load balancers to stop sending. Default `0s`.
    #[serde(with = "duration")]
    pub shutdown_delay: Duration,
    /// Log lines: `text` (human-readable) or `json` (one object per line). `--log-format` and
    /// `CLICKEDGE_LOG_FORMAT` win over it. Default `text`.
    pub log_format: LogFormat,
    /// Listening addresses.
    pub listen: Listen,
    /// Durable state (domains, certificates, link keys).
    pub store: Store,
    /// TLS termination and certificates.
    pub tls: Tls,
    /// ACME issuer settings (used when `tls.issuer = "acme"`).
    pub acme: Acme,
    /// Click log.
    pub clicks: Clicks,
    /// What a customer's DNS must look like (domain checks).
    pub onboarding: Onboarding,
    /// Admin API.
    pub admin: Admin,
    /// Protection against slow, large or numerous requests.
    pub limits: Limits,
    /// This node among several (node id, seal key).
    pub cluster: Cluster,
    /// The log filter (`info`, `warn`, `info,clickedge=debug`, …) when `CLICKEDGE_LOG` is not
    /// set; applied again when SIGHUP re-reads the file. Default `info`.
    pub log: Option<String>,
}

/// Which certificate issuer the edge uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IssuerKind {
    /// Built-in CA under the data dir; its root is `<data_dir>/ca.pem`.
    Local,
    /// An ACME directory (Let's Encrypt in production).
    Acme,
}

/// `[tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// `local` (default) or `acme`.
    pub issuer: IssuerKind,
    /// How long a first handshake waits for its certificate. Default `10s`.
    #[serde(with = "duration")]
    pub on_demand_timeout: Duration,
    /// Session tickets and a session cache. Default `true`; `false` forces full handshakes.
    pub session_resumption: bool,
    /// How long a client may take to send its ClientHello and finish the handshake
    /// (not counting on-demand issuance). Default `10s`.
    #[serde(with = "duration")]
    pub handshake_timeout: Duration,
    /// Certificates kept in memory (least recently used are evicted and reloaded from the
    /// store). Default `100000`.
    pub cert_cache_capacity: NonZeroU64,
    /// Optional permission URL for names that are not registered: `GET <ask>?domain=NAME`; only
    /// a direct `200` approves (redirects are not followed), and an approved name is registered
    /// with origin `ask` (compatible with Caddy's on-demand `ask`). Default none.
    #[serde(with = "secret_url::optional")]
    pub ask: Option<url::Url>,
    /// How long an `ask` answer (approval or denial) is remembered; a failed ask (no answer, or
    /// a 5xx) is remembered for at most 10 s. Default `5m`.
    #[serde(with = "duration")]
    pub ask_cache_ttl: Duration,
    /// `ask` requests per second, sustained, for all names together; a name that would exceed
    /// it is refused without a request (and asked again at a later handshake). Default `10`.
    pub ask_rate: NonZeroU32,
    /// `ask` requests allowed at once above `ask_rate` after a quiet spell. Default `20`.
    pub ask_burst: NonZeroU32,
    /// The DNS zones the built-in CA may vouch for (`tls.issuer = "local"`): its root carries
    /// them as name constraints, so a client that trusts `ca.pem` accepts its certificates only
    /// for names under them, and it refuses to issue for other names. Default the names
    /// reserved for documentation and testing: `["example", "example.com", "example.net",
    /// "example.org", "invalid", "localhost", "test"]`.
    pub local_ca_names: crate::domain::Zones,
}

/// An ACME challenge type the edge can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum ChallengeKind {
    /// RFC 8555 §8.3, answered by the HTTP listener.
    #[serde(rename = "http-01")]
    Http01,
    /// RFC 8737, answered by the HTTPS listener for ALPN `acme-tls/1`.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl ChallengeKind {
    /// The ACME name of the challenge type.
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// `[acme]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Acme {
    /// ACME directory URL. Default Let's Encrypt production.
    pub directory: String,
    /// Account contact URLs (`mailto:`). Default none.
    pub contact: Vec<String>,
    /// Challenge types to use, in order of preference. Default `["http-01", "tls-alpn-01"]`.
    pub challenges: Vec<ChallengeKind>,
    /// Root certificate (PEM) that is the only root trusted for the ACME server's HTTPS (private
    /// CAs, tests); the platform's roots are then not trusted. Default none: the platform's.
    pub ca_root: Option<PathBuf>,
    /// External account binding key id. Default none.
    pub eab_kid: Option<String>,
    /// External account binding HMAC key (base64url). Default none.
    pub eab_hmac_key: Option<String>,
    /// Account-wide order budget: at most this many new orders per `order_window` (Let's
    /// Encrypt allows 300 per 3 hours); further renewals wait, further first certificates fail
    /// at once (their handshakes cannot wait) and back off. Default `300`.
    pub max_orders: NonZeroU32,
    /// The window of `max_orders`. Default `3h`.
    #[serde(with = "duration")]
    pub order_window: Duration,
    /// Longest time one order may take, from creation to the certificate. Default `90s`.
    #[serde(with = "duration")]
    pub order_timeout: Duration,
    /// How long a node's claim on a name's certificate work (its lease in the store) lasts
    /// without a heartbeat; the holder renews it every third of this. A node that dies holding
    /// one delays that name's order on the others by at most this long. At least `3s`.
    /// Default `60s`.
    #[serde(with = "duration")]
    pub lease_ttl: Duration,
}

/// `[onboarding]`: what a customer's DNS must look like, checked by `clickedge domain check`.
///
/// With neither `cname_target` nor `addresses` set the edge cannot tell where a name should
/// point: checks then run only on request, and never hold back a certificate order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Onboarding {
    /// The name customers CNAME their link domain to; A/AAAA records at the addresses it resolves
    /// to point at the edge too (a zone's apex, a flattened CNAME). Default none.
    pub cname_target: Option<crate::Domain>,
    /// Edge addresses that A/AAAA records may point to. Default none.
    #[serde(deserialize_with = "listen::ip_addresses")]
    pub addresses: Vec<std::net::IpAddr>,
    /// Resolvers to ask (`ip:port`, UDP and TCP). Default: the system's (`/etc/resolv.conf`).
    #[serde(deserialize_with = "listen::resolvers")]
    pub dns_servers: Vec<SocketAddr>,
    /// CAA issuer identities, one of which CAA records must allow. Default
    /// `["letsencrypt.org"]`.
    pub caa_identities: Vec<String>,
    /// Port the HTTP reachability check connects to on the name's addresses. Default `80`.
    pub http_port: std::num::NonZeroU16,
    /// How often domains without a valid certificate are checked again. Default `5m`.
    #[serde(with = "duration")]
    pub recheck_interval: Duration,
    /// Lets the HTTP reachability check connect to loopback, private (RFC 1918, RFC 6598,
    /// unique local) and link-local addresses of the edge. For tests and labs only: in
    /// production the edge's addresses are public, and refusing the others keeps a customer's
    /// DNS from pointing the check at internal services. Default `false`.
    pub danger_allow_private_addresses: bool,
    /// Where customers' status pages are served: an `https://` URL with a host and no path,
    /// served on the HTTPS listener like any registered domain (registered at start).
    /// `<public_url>/s/<token>` is a domain's page. Default none: no status pages.
    pub public_url: Option<PublicUrl>,
}

/// `onboarding.public_url`: `https://<name>` (a trailing `/` allowed), nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// The host, the name the status pages are served on.
    pub host: crate::Domain,
}

impl PublicUrl {
    /// The URL without a trailing `/`.
    pub fn base(&self) -> String {
        format!("https://{}", self.host)
    }
}

impl<'de> Deserialize<'de> for PublicUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PublicUrl, D::Error> {
        let s = String::deserialize(d)?;
        let bad = || {
            serde::de::Error::custom(format!(
                "onboarding.public_url {s:?} must be https://NAME, without port or path"
            ))
        };
        let rest = s.strip_prefix("https://").ok_or_else(bad)?;
        let host = rest.strip_suffix('/').unwrap_or(rest);
        let host = crate::Domain::parse(host).map_err(|_| bad())?;
        Ok(PublicUrl { host })
    }
}

impl Onboarding {
    /// True if the edge knows where customers' names must point (`cname_target` or
    /// `addresses`): checks then run on their own and gate certificate orders.
    pub fn is_configured(&self) -> bool {
        self.cname_target.is_some() || !self.addresses.is_empty()
    }
}

impl Default for Onboarding {
    fn default() -> Self {
        Onboarding {
            cname_target: None,
            addresses: Vec::new(),
            dns_servers: Vec::new(),
            caa_identities: vec!["letsencrypt.org".into()],
            http_port: std::num::NonZeroU16::new(80).expect("non-zero literal"),
            recheck_interval: Duration::from_secs(300),
            danger_allow_private_addresses: false,
            public_url: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./clickedge-data"),
            shutdown_grace: Duration::from_secs(10),
            shutdown_delay: Duration::ZERO,
            log_format: LogFormat::Text,
            listen: Listen::default(),
            store: Store::default(),
            tls: Tls::default(),
            acme: Acme::default(),
            clicks: Clicks::default(),
            onboarding: Onboarding::default(),
            admin: Admin::default(),
            limits: Limits::default(),
            cluster: Cluster::default(),
            log: None,
        }
    }
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            issuer: IssuerKind::Local,
            on_demand_timeout: Duration::from_secs(10),
            session_resumption: true,
            handshake_timeout: Duration::from_secs(10),
            cert_cache_capacity: NonZeroU64::new(100_000).expect("non-zero literal"),
            ask: None,
            ask_cache_ttl: Duration::from_secs(300),
            ask_rate: NonZeroU32::new(10).expect("non-zero literal"),
            ask_burst: NonZeroU32::new(20).expect("non-zero literal"),
            local_ca_names: crate::domain::Zones::reserved(),
        }
    }
}

impl Default for Acme {
    fn default() -> Self {
        Acme {
            directory: "https://acme-v02.api.letsencrypt.org/directory".into(),
            contact: Vec::new(),
            challenges: vec![ChallengeKind::Http01, ChallengeKind::TlsAlpn01],
            ca_root: None,
            eab_kid: None,
            eab_hmac_key: None,
            max_orders: NonZeroU32::new(300).expect("non-zero literal"),
            order_window: Duration::from_secs(3 * 3600),
            order_timeout: Duration::from_secs(90),
            lease_ttl: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// Loads `path` if given, else the file named by `CLICKEDGE_CONFIG`, else the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        // Empty is unset, as for every CLICKEDGE_ variable (a compose file's `CLICKEDGE_CONFIG=`).
        let from_env = std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        match path.map(Path::to_path_buf).or(from_env) {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Config::parse(&text, &path)
            }
            None => Config::default().validated(Path::new("<defaults>")),
        }
    }

    /// Parses TOML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        // The parser's message keeps its lines: the snippet of the file with a caret under the
        // bad value is what shows the user where to look; but not a line that may hold a secret.
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: in_words(&without_secrets(text, &e)),
        })?;
        config.validated(path)
    }

    /// The SQLite database file: `store.path`, or `<data_dir>/clickedge.db`.
    pub fn store_path(&self) -> PathBuf {
        self.store
            .path
            .clone()
            .unwrap_or_else(|| self.data_dir.join(STORE_FILE))
    }

    /// The click log directory: `clicks.dir`, or `<data_dir>/clicks`.
    pub fn clicks_dir(&self) -> PathBuf {
        self.clicks
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("clicks"))
    }
}

/// The parser's message with Rust's type names (`a nonzero u32`, `u16`) in words, and a
/// duration it expected shown by example.
/// Keys whose values may be secrets (a password in a URL, a token, a key): a parse error on
/// their line shows where it is, not the line.
const SECRET_KEY_PARTS: [&str; 5] = ["url", "token", "key", "password", "secret"];

/// Keys whose values may be secrets though their names do not say so: `tls.ask`, a URL that may
/// carry a password or a token in its query.
const SECRET_KEYS: [&str; 1] = ["ask"];

/// Keys whose names say `url` but whose values hold no secret: `onboarding.public_url` is
/// `https://NAME` only (its own error quotes it).
const PUBLIC_KEYS: [&str; 1] = ["public_url"];

/// The parser's message for `e` in `text`, with the file's line left out when its key (the one
/// the bad value belongs to, for a value inside a multi-line array too) may name a secret, or is
/// not a key at all: a misspelt `url` or `token` holds the secret all the same, and the message
/// names the key it did not know.
fn without_secrets(text: &str, e: &toml::de::Error) -> String {
    let full = e.to_string().trim_end().to_owned();
    let Some(span) = e.span() else {
        return full;
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    // The key of the value: on the error's line, else on the nearest line above with one. A
    // key is bare (as every key here is), so an '=' inside a quoted value, such as a token in
    // a multi-line array, is not taken for one.
    let lines: Vec<&str> = text.lines().take(line).collect();
    let key = lines.iter().rev().find_map(|l| {
        l.split_once('=').map(|(k, _)| k.trim()).filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        })
    });
    let secret = key.is_some_and(|k| {
        let k = k.to_ascii_lowercase();
        let last = k.rsplit('.').next().unwrap_or(&k);
        (SECRET_KEY_PARTS.iter().any(|part| k.contains(part)) && !PUBLIC_KEYS.contains(&last))
            || SECRET_KEYS.contains(&last)
    }) || e.message().starts_with("unknown field");
    if !secret {
        return full;
    }
    format!(
        "TOML parse error at line {line}, column {column} (the line is not shown: it may hold a \
         secret)\n{}",
        e.message().trim_end()
    )
}

fn in_words(message: &str) -> String {
    const WORDS: [(&str, &str); 9] = [
        (
            "expected a duration",
            "expected a duration such as \"100ms\", \"10s\", \"5m\" or \"1h\"",
        ),
        ("expected a nonzero u64", "expected a whole number above 0"),
        ("expected a nonzero u32", "expected a whole number above 0"),
        (
            "expected a nonzero u16",
            "expected a whole number from 1 to 65535",
        ),
        (
            "expected a nonzero usize",
            "expected a whole number above 0",
        ),
        ("expected u64", "expected a whole number, 0 or more"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected usize", "expected a whole number, 0 or more"),
    ];
    WORDS.iter().fold(message.to_owned(), |m, (rust, words)| {
        m.replace(rust, words)
    })
}

#[cfg(test)]
mod tests;
